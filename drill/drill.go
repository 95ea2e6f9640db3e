// Package drill runs the recovery of a machine's snapshots end to end in
// QEMU: it builds a rescue medium (a FAT stick holding the snapshots and
// an unattended plan, and the rescue initramfs) or takes a built one,
// boots the real rescue flow against one blank disk per snapshot, and
// checks the result: every file system on the restored disks checks
// clean with its own fsck (--check fs), and/or the restored machine boots
// until its console shows a text or a TCP port of it accepts (--expect).
//
// The phases, in order (Phase.Name):
//
//	accel        which accelerator the VMs use (a bounded KVM probe for auto)
//	media        the stick and the initramfs, or a copy of --medium
//	rescue boot  QEMU boots the rescue kernel until the restore starts
//	restore      the rescue flow restores every disk and prints its report
//	check fs     fsck of every file system (--check fs)
//	reboot       the firmware boots the restored disk until it prints on
//	             the serial console (or, for a TCP port, until QEMU runs it)
//	expect       the console matches, or the guest accepts on the port
package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/vm"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

// Options describe one drill.
type Options struct {
	// Snapshots are the machine's snapshot directories on this host, one
	// per disk, in the order of the machine's disks.
	Snapshots []string
	Kernel    string // the rescue kernel
	Base      []byte // the base rescue initramfs (initramfs.Base)
	Modules   *initramfs.ModuleSet
	Check     string        // "fs": fsck every file system of the restored disks
	Timeout   time.Duration // each VM's
	// BootTimeout, when set, replaces Timeout for the restored machine's
	// VM (the reboot and expect phases).
	BootTimeout time.Duration
	// Keep is the directory kept with the console logs and the disk
	// images; "" = a temporary directory, removed when the drill passes
	// and kept (Result.Dir) when it fails.
	Keep string
	// Expect, when set, boots the restored disks (OVMF when the first
	// disk's layout has an EFI system partition, else SeaBIOS) and waits
	// until the serial console matches, within Timeout.
	Expect *regexp.Regexp
	// ExpectTCP, when set, boots the restored disks as Expect does, with
	// a NIC on QEMU's user network (restrict=on, the guest reaches
	// nothing) forwarding a loopback port to this guest port, and waits
	// until the guest accepts a connection on it.
	ExpectTCP int
	// Accel is "auto" (also ""), "kvm" or "tcg"; see ChooseAccel.
	Accel string
	// Plan, when set, is the plan put on the stick instead of the
	// generated one. It must pass the rescue's own validation, restore,
	// and name only the snapshots the drill stages (StickSnapshot).
	Plan []byte
	// Medium, when set, is a built rescue USB image ('rewind media build
	// --format usb') booted by the firmware instead of the stick and
	// initramfs the drill builds; it holds its own plan and snapshots.
	// Snapshots still give the disks' sizes and the checks.
	Medium string
}

// Phase is one step of the drill and how long it took.
type Phase struct {
	Name    string  `json:"name"`
	OK      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// Result is the drill's JSON result.
type Result struct {
	Snapshots []string `json:"snapshots"`
	OK        bool     `json:"ok"`
	Failed    string   `json:"failed_phase,omitempty"`
	Error     string   `json:"error,omitempty"`
	// Accel is the accelerator the VMs ran with; AccelNote says why.
	Accel     string  `json:"accel,omitempty"`
	AccelNote string  `json:"accel_note,omitempty"`
	Phases    []Phase `json:"phases"`
	// Dir holds the kept files: --keep, or on a failure the temporary
	// directory, which is then not removed.
	Dir         string   `json:"kept_dir,omitempty"`
	Console     string   `json:"console_log,omitempty"`
	BootConsole string   `json:"boot_console_log,omitempty"`
	Disks       []string `json:"disk_images,omitempty"`
}

// KVMProbeTimeout bounds the KVM probe of --accel auto and kvm.
const KVMProbeTimeout = 5 * time.Second

// ChooseAccel decides the accelerator the drill's VMs use. "tcg" is taken
// as it is; "kvm" and "auto" (or "") run probe first: for kvm a failed
// probe is an error, for auto it falls back to TCG, and the note says so.
func ChooseAccel(ctx context.Context, want string, probe func(context.Context) error) (accel, note string, err error) {
	switch want {
	case "tcg":
		return "tcg", "TCG, as --accel tcg asks", nil
	case "kvm", "auto", "":
	default:
		return "", "", fmt.Errorf("--accel %q: use auto, kvm or tcg", want)
	}
	if perr := probe(ctx); perr != nil {
		if want == "kvm" {
			return "", "", fmt.Errorf("--accel kvm: KVM is not usable: %v; use --accel tcg (or auto, which falls back to TCG)", perr)
		}
		return "tcg", fmt.Sprintf("KVM is not usable: %v; using TCG", perr), nil
	}
	return "kvm", "KVM ran the probe guest", nil
}

// StickSnapshot is where the drill's stick holds a snapshot directory:
// media:/snapshots/ and the directory's base name.
func StickSnapshot(dir string) string {
	return "media:/snapshots/" + filepath.Base(filepath.Clean(dir))
}

// DiskSerial is the serial number of the drill's disk i (from 0), for a
// plan's target = "serial=...".
func DiskSerial(i int) string { return fmt.Sprintf("drill%d", i+1) }

// generatedPlan restores every snapshot onto the disk of its serial.
func generatedPlan(snaps []string) []byte {
	var b strings.Builder
	b.WriteString("[countdown]\nseconds = 0\n[[machine]]\nname = \"drill\"\nafter = \"poweroff\"\n")
	for i, s := range snaps {
		fmt.Fprintf(&b, "[[machine.disk]]\nsnapshot = %q\ntarget = \"serial=%s\"\n", StickSnapshot(s), DiskSerial(i))
	}
	return []byte(b.String())
}

// checkPlan validates a user's plan as the rescue will, and checks that it
// restores, from the snapshots the drill puts on the stick only.
func checkPlan(data []byte, snaps []string) error {
	p, err := rescue.ParsePlan(data)
	if err != nil {
		return fmt.Errorf("--plan: %w", err)
	}
	staged := map[string]int{}
	var names []string
	for i, s := range snaps {
		staged[strings.ToLower(StickSnapshot(s))] = i
		names = append(names, StickSnapshot(s))
	}
	for _, m := range p.Machines {
		if m.Action == rescue.ActionCapture {
			return fmt.Errorf("--plan: machine %s captures; a drill restores", m.Name)
		}
		type ref struct{ snap, target string }
		refs := []ref{{m.Snapshot, m.Target}}
		for _, d := range m.Disks {
			refs = append(refs, ref{d.Snapshot, d.Target})
		}
		for _, r := range refs {
			if r.snap == "" {
				continue
			}
			j, ok := staged[strings.ToLower(strings.TrimSuffix(r.snap, "/"))]
			if !ok {
				return fmt.Errorf("--plan: machine %s restores %s, which the drill does not put on the stick (it holds %s)", m.Name, r.snap, strings.Join(names, ", "))
			}
			// The checks read disk N as snapshot N: with several disks
			// the plan must put it there (with one, the only blank disk
			// is the target whatever the plan says; the stick never is).
			want := "serial=" + DiskSerial(j)
			if len(snaps) > 1 && !slices.Contains(strings.Split(strings.ReplaceAll(r.target, " ", ""), ","), want) {
				return fmt.Errorf("--plan: machine %s puts %s on target %q; the drill's disk for it (snapshot %d) is %s: give target = %q", m.Name, r.snap, r.target, j+1, want, want)
			}
		}
	}
	return nil
}

// Run performs the drill. The returned Result says which phase failed and
// why; err is set only when the drill itself could not be run.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Check != "fs" && o.Check != "" {
		return nil, fmt.Errorf("drill: --check %q is not supported: only \"fs\" is implemented", o.Check)
	}
	if o.Check == "" && o.Expect == nil && o.ExpectTCP == 0 {
		return nil, fmt.Errorf("drill: nothing to check: give --check fs or --expect REGEX|tcp:PORT")
	}
	if o.Expect != nil && o.ExpectTCP != 0 {
		return nil, fmt.Errorf("drill: give one --expect: a console text or tcp:PORT")
	}
	if o.ExpectTCP < 0 || o.ExpectTCP > 65535 {
		return nil, fmt.Errorf("drill: --expect tcp:%d is not a TCP port", o.ExpectTCP)
	}
	if o.Timeout <= 0 {
		return nil, fmt.Errorf("drill: timeout %s: give a positive --timeout", o.Timeout)
	}
	if o.BootTimeout < 0 {
		return nil, fmt.Errorf("drill: boot timeout %s: give a positive --boot-timeout", o.BootTimeout)
	}
	if o.Expect != nil && o.Expect.MatchString("") {
		return nil, fmt.Errorf("drill: --expect %q matches an empty console: it would pass before the restored machine printed anything", o.Expect.String())
	}
	if len(o.Snapshots) == 0 {
		return nil, fmt.Errorf("drill: no snapshot")
	}
	if o.Keep != "" {
		if ents, err := os.ReadDir(o.Keep); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("drill: --keep %s: give a new or empty directory (the drill writes disk images and logs there and never overwrites files)", o.Keep)
		}
	}
	if len(o.Snapshots) > rescue.MaxDisks {
		return nil, fmt.Errorf("drill: %d snapshots, more than a machine's %d disks", len(o.Snapshots), rescue.MaxDisks)
	}
	var ms []*snapshot.Manifest
	seen := map[string]string{}
	for _, s := range o.Snapshots {
		if fi, err := os.Stat(s); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("drill: snapshot %s is not a snapshot directory on this host (a URL is not supported yet): copy it here first", s)
		}
		name := strings.ToLower(StickSnapshot(s))
		if other, ok := seen[name]; ok {
			return nil, fmt.Errorf("drill: snapshots %s and %s would both be %s on the stick (FAT ignores case): rename one directory", other, s, StickSnapshot(s))
		}
		seen[name] = s
		snap, err := snapshot.Open(ctx, s, snapshot.OpenOptions{})
		if err != nil {
			return nil, fmt.Errorf("drill: snapshot %s: %w", s, err)
		}
		ms = append(ms, snap.Manifest)
		snap.Close()
	}
	plan := o.Plan
	if plan == nil {
		plan = generatedPlan(o.Snapshots)
	} else if err := checkPlan(plan, o.Snapshots); err != nil {
		return nil, fmt.Errorf("drill: %w", err)
	}
	if o.Medium != "" && o.Plan != nil {
		return nil, fmt.Errorf("drill: --plan and --medium exclude each other: a built medium carries its own plan")
	}
	if o.Medium != "" {
		if _, err := os.Stat(o.Medium); err != nil {
			return nil, fmt.Errorf("drill: --medium: %w", err)
		}
	}
	dir := o.Keep
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "rewind-drill-"); err != nil {
			return nil, err
		}
	} else {
		// The disk images hold the machine's data: the directory is
		// the user's alone.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("drill: --keep %s: %w", dir, err)
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
			return nil, fmt.Errorf("drill: --keep %s: give a new or empty directory (the drill writes disk images and logs there and never overwrites files)", dir)
		}
	}
	d := &run{o: o, ms: ms, dir: dir, plan: plan, res: &Result{Snapshots: o.Snapshots}}
	d.do(ctx)
	if ctx.Err() != nil && !d.res.OK {
		d.res.Error = fmt.Sprintf("interrupted in phase %s: %s", d.res.Failed, d.res.Error)
	}
	if o.Keep == "" && (d.res.OK || ctx.Err() != nil) {
		os.RemoveAll(dir)
	} else {
		d.res.Dir = dir
		d.res.Console = filepath.Join(dir, "console.log")
		for i := range ms {
			d.res.Disks = append(d.res.Disks, d.disk(i))
		}
		if o.Expect != nil || o.ExpectTCP != 0 {
			d.res.BootConsole = filepath.Join(dir, "boot-console.log")
		}
	}
	return d.res, nil
}

// run is one drill in progress.
type run struct {
	o     Options
	ms    []*snapshot.Manifest
	dir   string
	plan  []byte
	res   *Result
	accel string
}

func (d *run) disk(i int) string {
	if i == 0 {
		return filepath.Join(d.dir, "disk.img")
	}
	return filepath.Join(d.dir, fmt.Sprintf("disk%d.img", i+1))
}

// phase runs f as the phase name, timed, and records it.
func (d *run) phase(name string, f func() (string, error)) bool {
	start := time.Now()
	detail, err := f()
	return d.record(name, time.Since(start), detail, err)
}

func (d *run) record(name string, took time.Duration, detail string, err error) bool {
	d.res.Phases = append(d.res.Phases, Phase{Name: name, OK: err == nil, Seconds: took.Seconds(), Detail: detail})
	if err != nil {
		d.res.Failed, d.res.Error = name, err.Error()
		return false
	}
	return true
}

func (d *run) do(ctx context.Context) {
	ok := d.phase("accel", func() (string, error) {
		accel, note, err := ChooseAccel(ctx, d.o.Accel, func(ctx context.Context) error {
			return vm.ProbeKVM(ctx, d.dir, KVMProbeTimeout)
		})
		d.accel, d.res.Accel, d.res.AccelNote = accel, accel, note
		return note, err
	})
	stick := filepath.Join(d.dir, "stick.img")
	initrd := filepath.Join(d.dir, "initrd")
	ok = ok && d.phase("media", func() (string, error) {
		if d.o.Medium != "" {
			if err := copyFile(stick, d.o.Medium); err != nil {
				return "", fmt.Errorf("--medium %s: %w", d.o.Medium, err)
			}
			return "a copy of " + d.o.Medium, nil
		}
		return "", d.buildMedia(stick, initrd)
	})
	ok = ok && d.rescue(ctx, stick, initrd)
	if d.o.Check == "fs" {
		ok = ok && d.phase("check fs", func() (string, error) {
			var details []string
			for i, m := range d.ms {
				detail, err := CheckFS(d.disk(i), m)
				if err != nil {
					return "", fmt.Errorf("disk %d (%s): %w", i+1, d.o.Snapshots[i], err)
				}
				details = append(details, fmt.Sprintf("disk %d %s", i+1, detail))
			}
			return strings.Join(details, "; "), nil
		})
	}
	if ok && (d.o.Expect != nil || d.o.ExpectTCP != 0) {
		ok = d.boot(ctx)
	}
	d.res.OK = ok
}

// buildMedia writes the stick (the snapshots and the plan) and the rescue
// initramfs.
func (d *run) buildMedia(stick, initrd string) error {
	planFile := filepath.Join(d.dir, "plan.toml")
	if err := os.WriteFile(planFile, d.plan, 0o644); err != nil {
		return err
	}
	files := map[string]string{"/rewind/plan.toml": planFile}
	size := int64(64 << 20)
	for i, s := range d.o.Snapshots {
		staged, n, err := snapshotFiles(s, d.ms[i])
		if err != nil {
			return err
		}
		for _, name := range staged {
			files[strings.TrimPrefix(StickSnapshot(s), "media:")+"/"+name] = filepath.Join(s, name)
		}
		size += n + n/8
	}
	if err := vm.USBStick(stick, size, files); err != nil {
		return fmt.Errorf("rescue stick: %w", err)
	}
	var buf bytes.Buffer
	if err := initramfs.Compose(&buf, d.o.Base, &initramfs.Overlay{Modules: d.o.Modules}); err != nil {
		return fmt.Errorf("rescue initramfs: %w", err)
	}
	return os.WriteFile(initrd, buf.Bytes(), 0o644)
}

// restoreMark starts the rescue flow's first restore progress line,
// printed when it writes the first disk's first chunk: the end of the
// rescue boot phase.
const restoreMark = "restore ["

// rescue boots the rescue flow on the blank disks: the rescue boot and
// restore phases, timed from one VM.
func (d *run) rescue(ctx context.Context, stick, initrd string) bool {
	var drives []vm.Drive
	if d.o.Medium != "" {
		drives = append(drives, vm.Drive{Path: stick, Bus: "usb", Boot: true})
	} else {
		drives = append(drives, vm.Drive{Path: stick, Bus: "usb"})
	}
	for i, m := range d.ms {
		if err := vm.BlankDisk(d.disk(i), m.DiskSize); err != nil {
			return d.record("rescue boot", 0, "", err)
		}
		drives = append(drives, vm.Drive{Path: d.disk(i), Serial: DiskSerial(i)})
	}
	w := newWatch(restoreMark)
	v := &vm.VM{Drives: drives, Accel: d.accel, Timeout: d.o.Timeout, LogPath: filepath.Join(d.dir, "console.log"), Echo: w}
	if d.o.Medium == "" {
		v.Kernel, v.Initrd, v.Cmdline = d.o.Kernel, initrd, "rewind.after=poweroff"
	} else {
		v.FirmwareLog = filepath.Join(d.dir, "rescue-firmware.log")
		v.Until = func(string) bool { return firmwareGaveUp(v.FirmwareLog) }
	}
	start := time.Now()
	out, err := v.Run(ctx)
	end := time.Since(start)
	started, at := w.seen(restoreMark)
	if !started {
		// The restore never started: the rescue boot failed.
		return d.record("rescue boot", end, "", rescueBootError(out, err, v.LogPath, v.FirmwareLog))
	}
	d.record("rescue boot", at, "the rescue flow started the restore", nil)
	detail, rerr := restoreResult(out, err, v.LogPath, len(d.ms))
	return d.record("restore", end-at, detail, rerr)
}

// rescueBootError says why the rescue flow never started the restore.
func rescueBootError(out string, err error, log, fwLog string) error {
	if fw, _ := os.ReadFile(fwLog); fwLog != "" && strings.Contains(string(fw), "No bootable device") {
		return fmt.Errorf("SeaBIOS found no bootable rescue medium in --medium (console: %s)", log)
	}
	if r, rerr := consoleReport(out); rerr == nil {
		return fmt.Errorf("the rescue flow reported %s before restoring anything: %s (console: %s)", r.Status, r.Error, log)
	}
	if err != nil {
		return fmt.Errorf("rescue VM: %w before the restore started; last console lines: %s (console: %s)", err, vm.LastLines(out, 5), log)
	}
	return fmt.Errorf("the rescue VM stopped before the restore started; last console lines: %s (console: %s)", vm.LastLines(out, 5), log)
}

func restoreResult(out string, err error, log string, disks int) (string, error) {
	if err != nil {
		return "", fmt.Errorf("rescue VM: %w; last console lines: %s (console: %s)", err, vm.LastLines(out, 5), log)
	}
	r, err := consoleReport(out)
	if err != nil {
		return "", fmt.Errorf("%w; last console lines: %s (console: %s)", err, vm.LastLines(out, 5), log)
	}
	if r.Status != rescue.StatusSuccess {
		return "", fmt.Errorf("the rescue flow reported %s: %s (console: %s)", r.Status, r.Error, log)
	}
	if n := max(len(r.Disks), 1); n != disks {
		return "", fmt.Errorf("the rescue flow restored %d disks, the machine has %d (console: %s)", n, disks, log)
	}
	n := r.BytesWritten + r.BytesZeroed
	if len(r.Disks) > 1 {
		n = 0
		for _, d := range r.Disks {
			n += d.BytesWritten + d.BytesZeroed
		}
	}
	return fmt.Sprintf("%d disks, %d bytes restored", disks, n), nil
}

// boot boots the restored disks: the reboot and expect phases.
func (d *run) boot(ctx context.Context) bool {
	var drives []vm.Drive
	for i := range d.ms {
		drives = append(drives, vm.Drive{Path: d.disk(i), Boot: i == 0, Serial: DiskSerial(i)})
	}
	w := newWatch()
	timeout := d.o.Timeout
	if d.o.BootTimeout > 0 {
		timeout = d.o.BootTimeout
	}
	v := &vm.VM{Drives: drives, Accel: d.accel, Timeout: timeout, Echo: w,
		LogPath: filepath.Join(d.dir, "boot-console.log"), FirmwareLog: filepath.Join(d.dir, "firmware.log")}
	fw := "SeaBIOS"
	if hasESP(d.ms[0]) {
		vars, err := vm.OVMFVars(d.dir)
		if err != nil {
			return d.record("reboot", 0, "", err)
		}
		v.UEFIVars, v.FirmwareLog, fw = vars, "", "OVMF"
	}
	want := ""
	var accepted time.Duration
	if d.o.Expect != nil {
		// Only the restored system's lines count: not QEMU's, nor the
		// firmware's (see guestLine).
		want = fmt.Sprintf("the restored system's console to match %q", d.o.Expect.String())
		v.Until = func(string) bool { return w.guestMatch(d.o.Expect) }
	} else {
		want = fmt.Sprintf("the guest to accept on TCP port %d", d.o.ExpectTCP)
		host, err := freePort()
		if err != nil {
			return d.record("reboot", 0, "", err)
		}
		v.TCPForwards = []vm.TCPForward{{Host: host, Guest: d.o.ExpectTCP}}
		v.Monitor = filepath.Join(d.dir, "monitor.sock")
		v.Until = tcpWaiter(fmt.Sprintf("127.0.0.1:%d", host), v.Monitor, d.o.ExpectTCP, &accepted)
	}
	if v.FirmwareLog != "" {
		until := v.Until
		v.Until = func(console string) bool {
			return firmwareGaveUp(v.FirmwareLog) || until != nil && until(console)
		}
	}
	start := time.Now()
	out, err := v.Run(ctx)
	end := time.Since(start)
	printed, first := w.first()
	matched := d.o.Expect != nil && w.guestMatch(d.o.Expect) || d.o.ExpectTCP != 0 && accepted > 0
	if !printed && !matched {
		msg := silentBoot(v.FirmwareLog, err)
		if !strings.HasPrefix(msg, fw) {
			msg = fw + ": " + msg
		}
		return d.record("reboot", end, "", fmt.Errorf("%s (console: %s)", msg, v.LogPath))
	}
	if !printed {
		first = 0
	}
	d.record("reboot", first, fw+": the restored disk's boot loader or kernel printed on the serial console", nil)
	switch {
	case matched && d.o.Expect != nil:
		return d.record("expect", end-first, fmt.Sprintf("console matched %q", d.o.Expect.String()), nil)
	case matched:
		return d.record("expect", max(accepted-first, 0), fmt.Sprintf("the guest accepted on TCP port %d (through 127.0.0.1:%d)", d.o.ExpectTCP, v.TCPForwards[0].Host), nil)
	case err != nil:
		return d.record("expect", end-first, "", fmt.Errorf("%s booted the restored disk, but waiting for %s: %w; last console lines: %s (console: %s)", fw, want, err, vm.LastLines(out, 5), v.LogPath))
	default:
		return d.record("expect", end-first, "", fmt.Errorf("the restored machine (%s) stopped before %s; last console lines: %s (console: %s)", fw, want, vm.LastLines(out, 5), v.LogPath))
	}
}

// firmwareGaveUp reports whether SeaBIOS's debug console says it found
// nothing to boot (it would retry every 60 seconds).
func firmwareGaveUp(fwLog string) bool {
	b, _ := os.ReadFile(fwLog)
	return bytes.Contains(b, []byte("No bootable device"))
}

// silentBoot says why a restored machine printed nothing, from SeaBIOS's
// debug console when there is one.
func silentBoot(fwLog string, err error) string {
	fwb, _ := os.ReadFile(fwLog)
	fwText := string(fwb)
	stopped := "the machine stopped"
	var te *vm.TimeoutError
	if errors.As(err, &te) {
		stopped = fmt.Sprintf("nothing within %s", te.Timeout)
	} else if err != nil {
		stopped = err.Error()
	}
	switch {
	case strings.Contains(fwText, "No bootable device"):
		why := "SeaBIOS found no bootable disk"
		if i := strings.LastIndex(fwText, "Boot failed: "); i >= 0 {
			line, _, _ := strings.Cut(fwText[i:], "\n")
			why += " (" + strings.TrimSpace(line) + ")"
		}
		return why
	case strings.Contains(fwText, "Booting from Hard Disk"):
		return fmt.Sprintf("SeaBIOS ran the restored disk's boot sector, but nothing was printed on the serial console (%s): a wiped or broken boot loader, or a system without a serial console", stopped)
	case fwLog == "":
		return fmt.Sprintf("nothing was printed on the serial console (%s): a missing or broken boot loader, or a system without a serial console", stopped)
	default:
		return fmt.Sprintf("the firmware did not boot the restored disk and nothing was printed on the serial console (%s)", stopped)
	}
}

// tcpWaiter returns a VM.Until that connects to addr (QEMU's hostfwd to
// the guest's port) about once a second and asks QEMU's monitor whether
// the guest accepted; it records when it did in *accepted.
func tcpWaiter(addr, monitor string, port int, accepted *time.Duration) func(string) bool {
	start := time.Now()
	var last time.Time
	return func(string) bool {
		if time.Since(last) < time.Second {
			return false
		}
		last = time.Now()
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		time.Sleep(300 * time.Millisecond)
		out, err := vm.MonitorCommand(monitor, "info usernet")
		if err != nil || !vm.GuestAccepted(out, port) {
			return false
		}
		*accepted = time.Since(start)
		return true
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// watch is a VM.Echo that records when the console first shows a line
// from the guest (not from QEMU or the firmware: see guestLine), and when
// each of its marks first appears.
type watch struct {
	mu      sync.Mutex
	start   time.Time
	printed time.Duration
	buf     strings.Builder
	guest   strings.Builder // the guest's lines (guestLine), for --expect
	line    []byte          // the console's current, unfinished line
	marks   map[string]time.Duration
}

func newWatch(marks ...string) *watch {
	w := &watch{start: time.Now(), printed: -1, marks: map[string]time.Duration{}}
	for _, m := range marks {
		w.marks[m] = -1
	}
	return w
}

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Since(w.start)
	w.buf.Write(p)
	for m, at := range w.marks {
		if at < 0 && strings.Contains(w.buf.String(), m) {
			w.marks[m] = now
		}
	}
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexAny(w.line, "\r\n")
		if i < 0 {
			break
		}
		if l := string(w.line[:i]); guestLine(l) {
			if w.printed < 0 {
				w.printed = now
			}
			if w.guest.Len() < maxGuestText {
				w.guest.WriteString(l + "\n")
			}
		}
		w.line = w.line[i+1:]
	}
	// An unfinished line longer than any firmware line's start is
	// classified now: a boot loader's menu need not end its lines.
	if w.printed < 0 && len(w.line) >= 32 && guestLine(string(w.line)) {
		w.printed = now
	}
	return len(p), nil
}

// maxGuestText bounds the restored system's console text kept for
// --expect.
const maxGuestText = 4 << 20

// guestMatch reports whether the restored system's console lines (and
// its current unfinished line, such as "login: ") match re.
func (w *watch) guestMatch(re *regexp.Regexp) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	text := w.guest.String()
	if l := string(w.line); guestLine(l) {
		text += l
	}
	return text != "" && re.MatchString(text)
}

// firmwareLines start the console lines of QEMU, SeaBIOS and OVMF, which
// do not show that the restored disk's boot loader ran.
var firmwareLines = []string{"qemu-system-", "SeaBIOS (version", "Booting from ", "Boot failed", "No bootable device", "Retrying in",
	"BdsDxe:", "iPXE", "Press ESC", "Select boot device", "Machine UUID", "Booting from Hard Disk", "Press Ctrl-B",
	">>Start PXE", ">>Start HTTP", "Station IP address", "PXE-E", "Server IP address", "NBP file", "Downloading NBP"}

var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|[a-z])`)

// guestLine reports whether a console line comes from the guest: not
// blank once terminal escapes are removed, and not a firmware line.
func guestLine(line string) bool {
	line = strings.TrimSpace(ansiEscape.ReplaceAllString(line, ""))
	if line == "" {
		return false
	}
	for _, f := range firmwareLines {
		if strings.HasPrefix(line, f) {
			return false
		}
	}
	return true
}

func (w *watch) first() (bool, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.printed >= 0, w.printed
}

func (w *watch) seen(m string) (bool, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at := w.marks[m]
	return at >= 0, at
}

func copyFile(dst, src string) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// hasESP reports whether the layout has an EFI system partition.
func hasESP(m *snapshot.Manifest) bool {
	if m.Layout == nil {
		return false
	}
	for _, p := range m.Layout.Partitions {
		if strings.EqualFold(p.Type, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") || p.Type == "0xef" {
			return true
		}
	}
	return false
}

// snapshotFiles lists the files of snapshot dir the stick needs (its
// manifest, signature and the segments m names, nothing else of the
// directory), each a regular file (never a symbolic link) of the size m
// gives, and their total size.
func snapshotFiles(dir string, m *snapshot.Manifest) ([]string, int64, error) {
	want := map[string]int64{snapshot.ManifestName: -1} // -1: any size
	names := []string{snapshot.ManifestName}
	if _, err := os.Lstat(filepath.Join(dir, snapshot.SignatureName)); err == nil {
		want[snapshot.SignatureName] = -1
		names = append(names, snapshot.SignatureName)
	}
	for _, sg := range m.Segments {
		want[sg.Name] = sg.Size
		names = append(names, sg.Name)
	}
	var total int64
	for _, n := range names {
		fi, err := os.Lstat(filepath.Join(dir, n))
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot %s: %w", dir, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, 0, fmt.Errorf("snapshot %s: %s is a %s, not a regular file: the drill copies only a snapshot's own files", dir, n, fi.Mode().Type())
		}
		if size := want[n]; size >= 0 && fi.Size() != size {
			return nil, 0, fmt.Errorf("snapshot %s: %s is %d bytes, the manifest says %d", dir, n, fi.Size(), size)
		}
		total += fi.Size()
	}
	return names, total, nil
}

func consoleReport(out string) (*rescue.Report, error) {
	_, rest, ok := strings.Cut(out, rescue.ReportBegin)
	if !ok {
		return nil, fmt.Errorf("the rescue flow printed no report on the console")
	}
	js, _, ok := strings.Cut(rest, rescue.ReportEnd)
	if !ok {
		return nil, fmt.Errorf("the rescue report on the console is cut off")
	}
	var r rescue.Report
	if err := json.Unmarshal([]byte(strings.ReplaceAll(js, "\r", "")), &r); err != nil {
		return nil, fmt.Errorf("the rescue report on the console: %w", err)
	}
	return &r, nil
}

// CheckFS runs each file system's own fsck, read-only, on the partitions
// of the restored image that the snapshot's layout names a file system
// for. It fails when a partition does not check clean, or when there is
// no file system to check.
func CheckFS(img string, m *snapshot.Manifest) (string, error) {
	if m.Layout == nil {
		return "", fmt.Errorf("snapshot has no partition layout: no file system to check")
	}
	ss := uint64(m.Layout.LogicalSectorSize)
	var checked, skipped []string
	for _, p := range m.Layout.Partitions {
		var tool []string
		switch p.FSType {
		case "ext2", "ext3", "ext4":
			tool = []string{"e2fsck", "-f", "-n"}
		case "vfat", "fat", "fat16", "fat32":
			tool = []string{"fsck.vfat", "-n"}
		case "ntfs":
			tool = []string{"ntfsfix", "-n"}
		default:
			what := p.FSType
			if what == "" {
				what = "no file system Rewind recognises"
			}
			skipped = append(skipped, fmt.Sprintf("%d:%s", p.Number, what))
			continue
		}
		lo, err := exec.Command("losetup", "--find", "--show", "--read-only", "-o", fmt.Sprint(p.Start*ss), "--sizelimit", fmt.Sprint(p.Size*ss), img).Output()
		if err != nil {
			return "", fmt.Errorf("partition %d: losetup: %w", p.Number, err)
		}
		dev := strings.TrimSpace(string(lo))
		out, err := exec.Command(tool[0], append(tool[1:], dev)...).CombinedOutput()
		exec.Command("losetup", "-d", dev).Run()
		if err != nil {
			return "", fmt.Errorf("partition %d (%s) does not check clean: %s: %v\n%s", p.Number, p.FSType, tool[0], err, out)
		}
		checked = append(checked, fmt.Sprintf("%d:%s", p.Number, p.FSType))
	}
	if len(checked) == 0 {
		return "", fmt.Errorf("no ext2/3/4, FAT or NTFS file system in the snapshot's layout to check (not checked: %s)", strings.Join(skipped, " "))
	}
	detail := "clean: " + strings.Join(checked, " ")
	if len(skipped) > 0 {
		detail += "; NOT checked (no checker here): " + strings.Join(skipped, " ")
	}
	return detail, nil
}

// Modules selects the rescue's default kernel modules for kernel from
// /lib/modules/RELEASE.
func Modules(kernel string) (*initramfs.ModuleSet, error) {
	bz, err := os.ReadFile(kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	rel := initramfs.KernelRelease(bz)
	if rel == "" {
		return nil, fmt.Errorf("kernel %s: cannot read its release", kernel)
	}
	return initramfs.SelectModules(filepath.Join("/lib/modules", rel), initramfs.DefaultModules)
}
