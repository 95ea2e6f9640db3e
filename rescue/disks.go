package rescue

import (
	"fmt"
	"strings"

	"github.com/rewind-bmr/rewind/diskrestore"
)

// Disk is a disk as diskrestore lists it; the host CLI and the rescue
// environment choose targets by the same rules.
type Disk = diskrestore.Disk

// MaxDisks is the most [[machine.disk]] entries a machine may have.
const MaxDisks = 16

// selectDisks lists this machine's disks and picks one for every entry,
// in the entries' order; the second result is every disk listed (for the
// log). exclude holds the rescue medium's device, which is never picked.
// capture says what the disks are for: a disk to restore onto must be
// writable and unused (diskrestore.Refusal); a disk to capture may be
// read-only. The set is taken as a whole: when any entry matches no disk,
// several, or the same disk as another entry, nothing is picked and the
// error lists every entry's outcome.
func selectDisks(entries []DiskEntry, exclude []string, capture bool) ([]Disk, []Disk, error) {
	disks, err := diskrestore.ListDisks(diskrestore.ListOptions{Exclude: exclude})
	if err != nil {
		return nil, nil, err
	}
	picked, err := matchDisks(disks, entries, exclude, capture)
	return picked, disks, err
}

// selectTarget lists the disks and picks the one spec names: the
// single-disk form of selectDisks, for a restore.
func selectTarget(spec string, exclude []string) (Disk, []Disk, error) {
	picked, disks, err := selectDisks([]DiskEntry{{Target: spec}}, exclude, false)
	if err != nil {
		return Disk{}, disks, err
	}
	return picked[0], disks, nil
}

// matchDisks is selectDisks on a list of disks. One entry keeps the
// single-disk rules and words: an empty spec picks the only disk that
// may be used and refuses to guess among several. With several entries,
// every entry needs a spec.
func matchDisks(disks []Disk, entries []DiskEntry, exclude []string, capture bool) ([]Disk, error) {
	what := "overwrite"
	if capture {
		what = "capture"
	}
	switch {
	case len(entries) == 0:
		return nil, fmt.Errorf("the plan names no disk; add a target spec or [[machine.disk]] entries")
	case len(entries) > MaxDisks:
		return nil, fmt.Errorf("the plan names %d disks, more than %d; split the machine into several entries", len(entries), MaxDisks)
	}
	refusal := func(d Disk) string {
		if capture {
			return captureRefusal(d, exclude)
		}
		return diskrestore.Refusal(d, exclude)
	}
	if len(entries) == 1 {
		var spec diskrestore.Spec
		if entries[0].Target != "" {
			var err error
			if spec, err = diskrestore.ParseSpec(entries[0].Target); err != nil {
				return nil, err
			}
		}
		o := pickDisk(disks, spec, refusal, what)
		if o.none {
			o.err += "; the disks here are:\n  " + strings.Join(describeAll(disks), "\n  ")
		}
		if o.err != "" {
			return nil, fmt.Errorf("target spec %q %s", entries[0].Target, o.err)
		}
		return []Disk{o.disk}, nil
	}

	picked := make([]Disk, len(entries))
	lines := make([]string, len(entries))
	failed, unmatched := false, false
	owner := map[string]int{} // disk path -> entry index
	for i, e := range entries {
		head := fmt.Sprintf("disk %d (snapshot %s, target %q): ", i+1, e.Snapshot, e.Target)
		if strings.TrimSpace(e.Target) == "" {
			lines[i] = head + "no target spec; with several disks each needs one (serial=, wwn=, size= or path=)"
			failed = true
			continue
		}
		spec, err := diskrestore.ParseSpec(e.Target)
		if err != nil {
			lines[i] = head + err.Error()
			failed = true
			continue
		}
		o := pickDisk(disks, spec, refusal, what)
		if o.err != "" {
			lines[i] = head + strings.ReplaceAll(o.err, "\n", "\n    ")
			failed = true
			unmatched = unmatched || o.none
			continue
		}
		if j, dup := owner[o.disk.Path]; dup {
			lines[i] = head + fmt.Sprintf("%s, which disk %d matches too; each entry needs a disk of its own", describeTarget(o.disk), j+1)
			failed = true
			continue
		}
		owner[o.disk.Path] = i
		picked[i] = o.disk
		lines[i] = head + describeTarget(o.disk)
	}
	if !failed {
		return picked, nil
	}
	msg := fmt.Sprintf("the plan's %d disks do not match this machine's disks as a whole, so no disk is used:\n  %s",
		len(entries), strings.Join(lines, "\n  "))
	if unmatched {
		msg += "\nthe disks here are:\n  " + strings.Join(describeAll(disks), "\n  ")
	}
	return nil, fmt.Errorf("%s\nmake every target spec match exactly one disk it may %s (serial= or wwn= are precise)", msg, what)
}

// captureRefusal returns why d must never be captured by the rescue
// flow, or "": the rescue medium, a disk holding the running system, and
// a disk that device mapper or RAID holds (what stacks on it, an md
// resync or a dm writer, can change it while it is read, unseen by the
// file-system map check). A read-only disk may be captured; what is
// mounted read-write is refused when the capture opens it
// (diskrestore.CheckCaptureSource).
func captureRefusal(d Disk, exclude []string) string {
	switch {
	case diskrestore.Excluded(d, exclude):
		return "it is the rescue medium"
	case d.System:
		return "it holds the running system"
	case len(d.Holders) > 0:
		return "it is held by " + strings.Join(d.Holders, ", ") + ", which can write to it while it is read; stop them first (vgchange -an, dmsetup remove, mdadm --stop)"
	}
	return ""
}

// diskOutcome is what one spec found among the disks.
type diskOutcome struct {
	disk Disk
	err  string // "" when disk was picked; else it completes `target spec "X" ...`
	none bool   // no disk matched at all
}

// pickDisk picks the one disk spec matches that refusal allows; what is
// "overwrite" or "capture", for the messages.
func pickDisk(disks []Disk, spec diskrestore.Spec, refusal func(Disk) string, what string) diskOutcome {
	var pick []Disk
	var usable, refused []string
	for _, d := range disks {
		if !spec.Matches(d) {
			continue
		}
		if why := refusal(d); why != "" {
			refused = append(refused, describeTarget(d)+": "+why)
			continue
		}
		pick = append(pick, d)
		usable = append(usable, describeTarget(d))
	}
	switch {
	case len(pick) == 1:
		return diskOutcome{disk: pick[0]}
	case len(pick) > 1:
		return diskOutcome{err: fmt.Sprintf("matches %d disks, and Rewind will not guess which to %s:\n  %s\nmake the spec precise with path=, serial= or wwn=",
			len(pick), what, strings.Join(usable, "\n  "))}
	case len(refused) > 0:
		done := "overwritten"
		if what == "capture" {
			done = "captured"
		}
		return diskOutcome{err: "matches no disk that may be " + done + ":\n  " + strings.Join(refused, "\n  ")}
	}
	return diskOutcome{none: true, err: "matches no disk"}
}

func describeAll(disks []Disk) []string {
	var all []string
	for _, d := range disks {
		all = append(all, describeTarget(d))
	}
	if len(all) == 0 {
		all = []string{"(no disks found: is the disk's driver loaded?)"}
	}
	return all
}
