package rescue

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
)

// This file holds every sentence the rescue console shows a person:
// the countdown, the step lines and the report summary. Keep the wording
// here so it can be read and improved as a whole.

// Prompt is what the countdown names before anything is written.
type Prompt struct {
	// Action is ActionRestore ("" too) or ActionCapture.
	Action string
	// Snapshot and Target are the single disk's; Disks, when set,
	// replaces them with every disk of the machine.
	Snapshot string // where the snapshot comes from (or goes, capturing), with its size
	Target   string // the disk that will be overwritten (or read): path, model, serial, size
	Disks    []PromptDisk
	Seconds  int
	Default  string // restore or abort
}

// PromptDisk is one disk's line pair in the countdown banner.
type PromptDisk struct {
	Snapshot string
	Disk     string
}

func countdownBanner(p Prompt) string {
	var b strings.Builder
	b.WriteString("\r\n")
	b.WriteString("================================ Rewind ================================\r\n")
	capture := p.Action == ActionCapture
	switch {
	case len(p.Disks) == 0 && !capture:
		fmt.Fprintf(&b, "  Snapshot: %s\r\n", p.Snapshot)
		fmt.Fprintf(&b, "  Target:   %s\r\n", p.Target)
	case len(p.Disks) == 0:
		fmt.Fprintf(&b, "  Capture:  %s\r\n", p.Target)
		fmt.Fprintf(&b, "  Into:     %s\r\n", p.Snapshot)
	default:
		if capture {
			fmt.Fprintf(&b, "  Capture %d disks, each into its snapshot:\r\n", len(p.Disks))
		} else {
			fmt.Fprintf(&b, "  Restore %d disks, each from its snapshot:\r\n", len(p.Disks))
		}
		for i, d := range p.Disks {
			fmt.Fprintf(&b, "  %2d. %s\r\n", i+1, d.Disk)
			if capture {
				fmt.Fprintf(&b, "      -> %s\r\n", d.Snapshot)
			} else {
				fmt.Fprintf(&b, "      <- %s\r\n", d.Snapshot)
			}
		}
	}
	b.WriteString("\r\n")
	switch {
	case capture:
		b.WriteString("  The disks are only read; nothing on them is changed.\r\n")
	case len(p.Disks) > 0:
		fmt.Fprintf(&b, "  WARNING: ALL DATA ON THESE %d DISKS WILL BE LOST.\r\n", len(p.Disks))
	default:
		b.WriteString("  WARNING: ALL DATA ON THE TARGET DISK WILL BE LOST.\r\n")
	}
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "  Press any key to %s now, Esc to abort, s for a rescue shell.\r\n", actionWord(p.Action))
	b.WriteString("========================================================================\r\n")
	return b.String()
}

// actionWord is the verb for action: "restore" or "capture".
func actionWord(action string) string {
	if action == ActionCapture {
		return ActionCapture
	}
	return ActionRestore
}

func countdownTick(left int, p Prompt) string {
	what := "Restoring"
	if p.Action == ActionCapture {
		what = "Capturing"
	}
	if p.Default == DefaultAbort {
		what = "Aborting (no disk touched)"
	}
	return fmt.Sprintf("\r  %s in %2d s ... ", what, left)
}

func countdownOutcome(d Decision, why string, p Prompt) string {
	switch d {
	case DecideRestore:
		what := "Restore"
		if p.Action == ActionCapture {
			what = "Capture"
		}
		return fmt.Sprintf("\r\n  %s starts (%s).\r\n", what, why)
	case DecideShell:
		return fmt.Sprintf("\r\n  Opening the rescue shell (%s); no disk was touched.\r\n", why)
	default:
		return fmt.Sprintf("\r\n  Aborted (%s); no disk was touched.\r\n", why)
	}
}

// Reasons a countdown ended, as the console and the report word them.
const (
	whyKey       = "a key was pressed"
	whyEsc       = "Esc was pressed"
	whyShellKey  = "s was pressed"
	whyTimeout   = "the countdown ended"
	whyNoPrompt  = "no prompt: unattended plan"
	whyCancelled = "cancelled"
)

func describeTarget(d Disk) string { return diskrestore.DescribeDisk(d) }

func describeSnapshot(location string, diskSize, data int64, signed bool) string {
	s := fmt.Sprintf("%s (disk %s, %s of data", location, units.Bytes(diskSize), units.Bytes(data))
	if signed {
		s += ", signature verified"
	}
	return s + ")"
}

// Summary words a report for the console.
func Summary(r *Report) string {
	var b strings.Builder
	line := strings.Repeat("=", 72)
	fmt.Fprintf(&b, "%s\n", line)
	what := strings.ToUpper(actionWord(r.Action))
	switch r.Status {
	case StatusSuccess:
		fmt.Fprintf(&b, "  %s SUCCEEDED\n", what)
	case StatusAborted:
		fmt.Fprintf(&b, "  %s ABORTED: no disk was changed\n", what)
	default:
		fmt.Fprintf(&b, "  %s FAILED\n", what)
	}
	if r.Machine.Name != "" {
		fmt.Fprintf(&b, "  Machine:   %s\n", r.Machine.Name)
	}
	if len(r.Disks) > 1 {
		for i, d := range r.Disks {
			fmt.Fprintf(&b, "  Disk %d:    %s\n", i+1, diskLine(r.Action, d))
		}
	}
	// One disk: its details. Several: the disk lines above and the steps.
	if len(r.Disks) <= 1 {
		if r.Snapshot.Location != "" {
			fmt.Fprintf(&b, "  Snapshot:  %s\n", r.Snapshot.Location)
		}
		if r.Snapshot.ID != "" {
			fmt.Fprintf(&b, "  ID:        %s\n", r.Snapshot.ID)
		}
		if r.Target.Path != "" {
			fmt.Fprintf(&b, "  Target:    %s\n", r.Target.Description)
		}
		if r.LayoutWritten {
			fmt.Fprintf(&b, "  Layout:    %s partition table written\n", strings.ToUpper(r.Layout))
		}
		if r.BytesWritten+r.BytesZeroed > 0 {
			fmt.Fprintf(&b, "  Data:      %s written, %s zero\n", units.Bytes(r.BytesWritten), units.Bytes(r.BytesZeroed))
		}
		if r.Delta {
			fmt.Fprintf(&b, "  Delta:     %s already on the disk, not written\n", units.Bytes(r.BytesSkipped))
		}
		if r.Resume != nil {
			fmt.Fprintf(&b, "  Resumed:   from chunk %d; %d of %d chunks were on the disk (%s); %d read back and checked, %d written again\n",
				r.Resume.FromChunk, r.Resume.ChunksDone, r.Resume.Chunks, r.Resume.Journal, r.Resume.Verified, r.Resume.Rewritten)
		}
		if w := r.Wipe; w != nil && w.Uncovered > 0 {
			fmt.Fprintf(&b, "  Wipe:      %s: %s of %s not in the snapshot zeroed by %s in %.1fs\n",
				w.Mode, units.Bytes(w.Bytes), units.Bytes(w.Uncovered), w.Method, w.Seconds)
			if w.Unused > 0 {
				left := "all zeroed"
				if w.UnusedZeroed < w.Unused {
					left = fmt.Sprintf("%s zeroed, %s left with the old disk's bytes", units.Bytes(w.UnusedZeroed), units.Bytes(w.Unused-w.UnusedZeroed))
				}
				fmt.Fprintf(&b, "  Unused:    %s of file-system free space not stored in the snapshot (of the above): %s\n", units.Bytes(w.Unused), left)
			}
			if w.OldRemains {
				fmt.Fprintf(&b, "             the other %s of free space still holds the old disk's bytes; wipe = \"full\" in the plan zeroes them\n",
					units.Bytes(w.Uncovered-w.Bytes))
			}
		}
	}
	if r.RestoreSeconds > 0 && len(r.Disks) <= 1 {
		fmt.Fprintf(&b, "  Time:      %s %sing (%.1f MB/s), %s in all\n",
			time.Duration(r.RestoreSeconds*float64(time.Second)).Round(100*time.Millisecond), strings.TrimSuffix(actionWord(r.Action), "e"),
			r.BytesPerSecond/1e6, time.Duration(r.Seconds*float64(time.Second)).Round(100*time.Millisecond))
	}
	if sb := r.Machine.SecureBoot; sb != nil && sb.Firmware != "bios" {
		fmt.Fprintf(&b, "  Secure Boot: %s\n", sb)
	}
	for _, d := range r.DriversRefused {
		why := ""
		if d.Why != "" {
			why = ": " + d.Why
		}
		fmt.Fprintf(&b, "  Refused:   driver %s: %s%s\n", consoleSafe(d.Path), consoleSafe(d.Error), consoleSafe(why))
	}
	for _, s := range r.Steps {
		mark := "ok  "
		switch s.Status {
		case StepFailed:
			mark = "FAIL"
		case StepSkipped:
			mark = "skip"
		}
		fmt.Fprintf(&b, "  [%s] %-10s %s\n", mark, s.Name, s.Detail)
	}
	for _, o := range r.InstallFiles {
		fmt.Fprintf(&b, "  File:      %s\n", installLine(o))
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  Error:     %s\n", r.Error)
	}
	if r.TableCleared {
		b.WriteString("  The target's partition table was cleared so that the half-restored disk cannot boot.\n")
	}
	done, notDone := r.disksDone()
	switch {
	case r.Status != StatusFailed:
	case r.Action == ActionCapture:
		if len(done) > 0 {
			fmt.Fprintf(&b, "  Captured: disk %s. Not captured: disk %s. Fix the cause above and boot the rescue media again.\n",
				strings.Join(done, ", "), strings.Join(notDone, ", "))
		} else {
			b.WriteString("  Nothing was captured. Fix the cause above and boot the rescue media again.\n")
		}
	case len(r.Disks) > 1 && len(notDone) > 0 && len(done) > 0:
		fmt.Fprintf(&b, "  Restored: disk %s. Not restored: disk %s. Fix the cause above and boot the rescue media again.\n",
			strings.Join(done, ", "), strings.Join(notDone, ", "))
	case r.restored():
		b.WriteString("  The disk was restored and its partition table kept, but a required file was not installed.\n")
	default:
		b.WriteString("  Nothing was restored successfully. Fix the cause above and boot the rescue media again.\n")
	}
	fmt.Fprintf(&b, "%s\n", line)
	return b.String()
}

// diskLine words one disk of the report: the disk, its snapshot, and
// what became of it.
func diskLine(action string, d DiskReport) string {
	disk := d.Target.Description
	if disk == "" {
		disk = fmt.Sprintf("target %q", d.Spec)
	}
	arrow := "<-"
	if action == ActionCapture {
		arrow = "->"
	}
	s := fmt.Sprintf("%s %s %s: %s", disk, arrow, d.Snapshot, d.Status)
	switch {
	case d.Status == DiskOK && action == ActionCapture:
		s += fmt.Sprintf(", %s stored", units.Bytes(d.BytesStored))
		if d.Published != "" && d.Published != d.Snapshot {
			s += ", published as " + d.Published
		}
	case d.Status == DiskOK:
		s += fmt.Sprintf(", %s written, %s zero", units.Bytes(d.BytesWritten), units.Bytes(d.BytesZeroed))
	case d.Status == DiskFailed && d.TableCleared:
		s += " (its partition table was cleared)"
	}
	return s
}

func afterMessage(after string, d time.Duration) string {
	switch after {
	case AfterShell:
		return "Starting the rescue shell; type 'exit' to reboot."
	case AfterPoweroff:
		return fmt.Sprintf("Powering off in %s.", d)
	default:
		return fmt.Sprintf("Rebooting in %s.", d)
	}
}

// machineMenu is shown when no plan entry names this machine and the plan
// has no default entry; the countdown waits until a machine is picked.
func machineMenu(p *Plan, id Identity) string {
	var b strings.Builder
	b.WriteString("\r\n")
	b.WriteString("================================ Rewind ================================\r\n")
	fmt.Fprintf(&b, "  No plan entry names this machine (MACs %s, DMI UUID %s).\r\n", strings.Join(id.MACs, ", "), orNone(id.DMIUUID))
	b.WriteString("  Pick the machine:\r\n\r\n")
	for i, m := range p.Machines {
		if i == 9 {
			fmt.Fprintf(&b, "  (%d more entries: boot with rewind.machine=NAME to pick one of them)\r\n", len(p.Machines)-9)
			break
		}
		fmt.Fprintf(&b, "  %d) %-16s %s\r\n", i+1, machineName(p, &p.Machines[i]), menuSnapshots(&m))
	}
	b.WriteString("\r\n  Press its number, or Esc to abort (no disk is touched).\r\n")
	b.WriteString("========================================================================\r\n")
	return b.String()
}

// menuSnapshots words an entry's snapshots for the machine menu.
func menuSnapshots(m *Machine) string {
	s := m.Snapshot
	if len(m.Disks) > 0 {
		s = m.Disks[0].Snapshot
		if len(m.Disks) > 1 {
			s += fmt.Sprintf(" and %d more disks", len(m.Disks)-1)
		}
	}
	if m.Action == ActionCapture {
		s = "capture to " + s
	}
	return s
}

// whyPicked is the report's reason for a machine picked from the menu.
func whyPicked(id Identity) string {
	return fmt.Sprintf("picked at the console: no entry names MACs %s, DMI UUID %s", strings.Join(id.MACs, ", "), orNone(id.DMIUUID))
}

// Questions (AskYesNo) and the resume and install lines.

func askPrompt(question string, timeout time.Duration) string {
	return fmt.Sprintf("\r\n  %s\r\n  Press y for yes, n for no (no answer in %s: no). ", question, timeout)
}

const (
	askYes        = "yes\r\n"
	askNo         = "no\r\n"
	askNoAnswer   = "no answer\r\n"
	askUnattended = "no answer: nobody is asked on an unattended run"
)

func resumeQuestion(done, chunks int, when time.Time) string {
	return fmt.Sprintf("An interrupted restore of this snapshot onto this disk was found (%d of %d chunks on the disk, %s). Resume it? n starts over.",
		done, chunks, when.Format("2006-01-02 15:04 UTC"))
}

func resumeMessage(r *Resume) string {
	return fmt.Sprintf("restore: resumed from chunk %d: %d of %d chunks are on the disk (journal %s; all %d it names read back and checked, %d written again)",
		r.FromChunk, r.ChunksDone, r.Chunks, r.Journal, r.Verified, r.Rewritten)
}

func installLine(o InstallOutcome) string {
	s := fmt.Sprintf("%s -> %s: %s", o.Source, o.Dest, o.Result)
	if o.Why != "" {
		s += " (" + o.Why + ")"
	}
	if o.Required {
		s += " [required]"
	}
	return s
}

func installFailure(failed []InstallOutcome) string {
	s := "required file"
	if len(failed) > 1 {
		s += "s"
	}
	for i, o := range failed {
		if i > 0 {
			s += ";"
		}
		s += fmt.Sprintf(" %s -> %s: %s", o.Source, o.Dest, o.Why)
	}
	return s + ". The disk itself was restored and its partition table kept; install the file by hand or fix the plan and boot again"
}

// consoleSafe quotes text from files (a module's name, an error holding
// it) that has characters a console would act on (escapes, line ends),
// so that it cannot forge or erase the summary's lines.
func consoleSafe(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			q := strconv.QuoteToGraphic(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}
