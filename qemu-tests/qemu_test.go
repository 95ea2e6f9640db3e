package qemutests

// These tests boot the real Debian kernel and the real rescue initramfs in
// QEMU under TCG, against virtual disks described in each test:
//
//	source disk  64 MiB GPT image: ext4 "root" with files, a random-data
//	             partition, bytes in the gap after the GPT (SampleDisk)
//	target       blank 64 MiB raw image on virtio-blk, NVMe or AHCI
//	USB stick    FAT32 labelled REWIND on qemu-xhci + usb-storage, holding
//	             snapshots/pc1 and rewind/plan.toml
//	network      QEMU user network with restrict=on: the guest reaches only
//	             10.0.2.100:80, forwarded to an HTTP server on 127.0.0.1
//
// Results are read from the host: the target's extents and sfdisk --dump
// must equal the source's, and the JSON report from the console and the
// stick must say what happened.
//
// 'go test' runs a representative subset (USB unattended, HTTP, Esc, and
// of capture_test.go the two-disk capture uploaded and restored);
// REWIND_QEMU_ALL=1 ('make qemu-test') runs all of them. -short skips them.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

const diskSize = 64 << 20

var shared struct {
	once    sync.Once
	err     error
	dir     string
	base    string
	kernel  string
	modules *initramfs.ModuleSet
	source  string
	snap    string
	m       *snapshot.Manifest
}

func TestMain(m *testing.M) {
	RelayMain()
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// setup builds (or finds cached) the base initramfs, selects the kernel
// modules, and makes and captures the sample disk, once per test binary.
func setup(t *testing.T, all bool) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU tests are skipped with -short")
	}
	if all && os.Getenv("REWIND_QEMU_ALL") == "" {
		t.Skip("set REWIND_QEMU_ALL=1 (make qemu-test) to run every QEMU test")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (scripts/setup.sh)")
	}
	shared.once.Do(func() {
		shared.err = func() error {
			shared.kernel = Kernel()
			if shared.kernel == "" {
				return fmt.Errorf("no kernel in /boot; set REWIND_KERNEL")
			}
			root, err := RepoRoot()
			if err != nil {
				return err
			}
			ctx := context.Background()
			if shared.base, err = BaseInitramfs(ctx, root, t.Logf); err != nil {
				return err
			}
			if shared.modules, err = RescueModules(shared.kernel); err != nil {
				return err
			}
			if shared.dir, err = os.MkdirTemp("", "rewind-qemu-"); err != nil {
				return err
			}
			shared.source = filepath.Join(shared.dir, "source.img")
			if err := SampleDisk(shared.source, diskSize, 1); err != nil {
				return err
			}
			shared.snap = filepath.Join(shared.dir, "pc1")
			shared.m, err = Capture(ctx, shared.source, shared.snap)
			return err
		}()
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

// boot composes the initrd with plan (nil: none in the initramfs), runs
// the VM, and returns the console log and the report printed on it.
func boot(t *testing.T, vm *VM, plan string) (string, *rescue.Report) {
	t.Helper()
	dir := t.TempDir()
	vm.Kernel = shared.kernel
	if vm.Initrd == "" {
		vm.Initrd = rescueInitrd(t, plan)
	}
	vm.LogPath = filepath.Join(dir, "console.log")
	if !strings.Contains(vm.Cmdline, "rewind.after=") {
		// A failure before the plan is read would open the shell.
		vm.Cmdline += " rewind.after=poweroff"
	}
	out := runLogged(t, vm, "")
	return out, consoleReport(t, out)
}

// runLogged runs vm, logs how long QEMU ran (what names the stages), and
// prints the console if the test fails.
func runLogged(t *testing.T, vm *VM, what string) string {
	t.Helper()
	start := time.Now()
	out, err := vm.Run(context.Background())
	t.Logf("QEMU ran for %.1fs%s", time.Since(start).Seconds(), what)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console (%s):\n%s", vm.LogPath, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rescueInitrd builds the rescue initramfs with plan in its overlay.
func rescueInitrd(t *testing.T, plan string) string {
	t.Helper()
	o := &initramfs.Overlay{Modules: shared.modules}
	if plan != "" {
		o.Plan = []byte(plan)
	}
	path := filepath.Join(t.TempDir(), "initrd")
	if err := Initrd(shared.base, path, o); err != nil {
		t.Fatal(err)
	}
	return path
}

func consoleReport(t *testing.T, out string) *rescue.Report {
	t.Helper()
	_, rest, ok := strings.Cut(out, rescue.ReportBegin)
	if !ok {
		t.Fatalf("no report on the console")
	}
	js, _, ok := strings.Cut(rest, rescue.ReportEnd)
	if !ok {
		t.Fatalf("report on the console is not terminated")
	}
	var r rescue.Report
	if err := json.Unmarshal([]byte(strings.ReplaceAll(js, "\r", "")), &r); err != nil {
		t.Fatalf("report on the console: %v", err)
	}
	return &r
}

func stickWithSnapshot(t *testing.T, size int64, plan string) string {
	t.Helper()
	dir := t.TempDir()
	planFile := filepath.Join(dir, "plan.toml")
	os.WriteFile(planFile, []byte(plan), 0o644)
	stick := filepath.Join(dir, "stick.img")
	if err := USBStick(stick, size, map[string]string{"/snapshots/pc1": shared.snap, "/rewind/plan.toml": planFile}); err != nil {
		t.Fatal(err)
	}
	return stick
}

func blank(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.img")
	if err := BlankDisk(p, diskSize); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantRestored(t *testing.T, target string, r *rescue.Report) {
	t.Helper()
	if r.Status != rescue.StatusSuccess {
		t.Fatalf("report status %q, error %q; want success", r.Status, r.Error)
	}
	if err := SameExtents(shared.source, target, shared.m); err != nil {
		t.Fatalf("target %s: %v", target, err)
	}
	t.Logf("restored %d bytes in %.1fs (%.1f MB/s); whole boot %.1fs", r.BytesWritten+r.BytesZeroed, r.RestoreSeconds, r.BytesPerSecond/1e6, r.Seconds)
}

func wantUntouched(t *testing.T, target string, r *rescue.Report, status string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("report status %q, error %q; want %s", r.Status, r.Error, status)
	}
	if zero, err := AllZero(target); err != nil || !zero {
		t.Fatalf("target %s was written (all zero: %v, %v); want it untouched", target, zero, err)
	}
}

const unattended = `
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
after = "poweroff"
`

// Test 1: the snapshot and the plan on a USB stick, restored onto a blank
// virtio disk without a prompt; the report is left on the stick.
func TestUSBStickUnattended(t *testing.T) {
	setup(t, false)
	stick := stickWithSnapshot(t, 96<<20, unattended)
	target := blank(t)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}}, "")
	wantRestored(t, target, r)
	if r.Target.Path != "/dev/vda" {
		t.Errorf("target %s, want /dev/vda", r.Target.Path)
	}
	b, err := StickFile(stick, "/rewind/reports/last.json")
	if err != nil {
		t.Fatalf("no report on the stick: %v", err)
	}
	var saved rescue.Report
	if err := json.Unmarshal(b, &saved); err != nil || saved.Status != rescue.StatusSuccess {
		t.Errorf("report on the stick: status %q, err %v; want success", saved.Status, err)
	}
}

// Test 2: the snapshot over HTTP. The guest's only way out is the
// guestfwd to the server on the host's loopback: 'rewind serve' itself
// (rescue.NewLabServer) over a directory holding snapshots/pc1, with a
// report token; the report is POSTed back with the plan's token.
func TestHTTPSnapshot(t *testing.T) {
	setup(t, false)
	dir := t.TempDir()
	if err := linkTree(shared.snap, filepath.Join(dir, "snapshots", "pc1")); err != nil {
		t.Fatal(err)
	}
	const token = "qemu-test-report-token-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "report-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lab, err := rescue.NewLabServer(dir, rescue.LabServerConfig{TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go lab.Serve(ln)
	plan := fmt.Sprintf(`
[countdown]
seconds = 0
[report]
url = "%[1]s/reports/"
token = "%[2]s"
[[machine]]
name = "pc1"
snapshot = "%[1]s/snapshots/pc1"
target = "serial=target1"
after = "poweroff"
`, GuestServer, token)
	target := blank(t)
	_, r := boot(t, &VM{HTTPPort: ln.Addr().(*net.TCPAddr).Port, Drives: []Drive{{Path: target, Serial: "target1"}}}, plan)
	wantRestored(t, target, r)
	got := lab.Reports.Reports()
	if len(got) != 1 || got[0].Status != rescue.StatusSuccess || got[0].Machine.Name != "pc1" {
		t.Errorf("report server has %+v; want pc1's final report, status success", got)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "reports", "*-pc1-success.json")); len(files) != 1 {
		t.Errorf("report files in DIR/reports: %v; want pc1's final report", files)
	}
}

// linkTree hard-links (or copies, across file systems) the files of the
// directory from into a new directory to.
func linkTree(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		src, dst := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		if os.Link(src, dst) == nil {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func countdownPlan(seconds int, def string) string {
	return fmt.Sprintf(`
[countdown]
seconds = %d
default = "%s"
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
target = "serial=target1"
after = "poweroff"
`, seconds, def)
}

// Test 3: the countdown. Esc aborts and leaves the target all zeros.
func TestCountdownEscAborts(t *testing.T) {
	setup(t, false)
	stick := stickWithSnapshot(t, 96<<20, countdownPlan(30, "restore"))
	target := blank(t)
	out, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}},
		Keys: []Key{{When: "Press any key", Send: "\x1b", Delay: 500 * time.Millisecond}}}, "")
	wantUntouched(t, target, r, rescue.StatusAborted)
	if !strings.Contains(out, "ALL DATA ON THE TARGET DISK WILL BE LOST") || !strings.Contains(out, "serial target1") {
		t.Errorf("the countdown did not name the target and warn")
	}
}

// Test 3: a key starts at once (the countdown of 60 s would time out).
func TestCountdownKeyStarts(t *testing.T) {
	setup(t, true)
	stick := stickWithSnapshot(t, 96<<20, countdownPlan(60, "abort"))
	target := blank(t)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}},
		Keys: []Key{{When: "Press any key", Send: "x", Delay: 500 * time.Millisecond}}}, "")
	wantRestored(t, target, r)
}

// Test 3: no key, default abort: untouched.
func TestCountdownDefaultAbort(t *testing.T) {
	setup(t, true)
	stick := stickWithSnapshot(t, 96<<20, countdownPlan(2, "abort"))
	target := blank(t)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}}, "")
	wantUntouched(t, target, r, rescue.StatusAborted)
}

// Test 3: no key, default restore: restored.
func TestCountdownDefaultRestore(t *testing.T) {
	setup(t, true)
	stick := stickWithSnapshot(t, 96<<20, countdownPlan(2, "restore"))
	target := blank(t)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}}, "")
	wantRestored(t, target, r)
}

// Test 4: the stick has exactly the target's size and the plan selects by
// size: the stick is never the target.
func TestStickNeverTarget(t *testing.T) {
	setup(t, true)
	plan := strings.Replace(unattended, `after = "poweroff"`, "target = \"size=64MiB\"\nafter = \"poweroff\"", 1)
	stick := stickWithSnapshot(t, diskSize, plan)
	target := blank(t)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target}}}, "")
	wantRestored(t, target, r)
}

// Test 5: NVMe and AHCI targets; their drivers come from coldplug.
func TestNVMeAndAHCITargets(t *testing.T) {
	setup(t, true)
	for _, bus := range []string{"nvme", "ahci"} {
		t.Run(bus, func(t *testing.T) {
			stick := stickWithSnapshot(t, 96<<20, unattended)
			target := blank(t)
			_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Bus: bus, Serial: "target1"}}}, "")
			wantRestored(t, target, r)
		})
	}
}

// Test 6: a damaged chunk. The report names it, the target has no
// partition table, and the result is a failure.
func TestCorruptSnapshot(t *testing.T) {
	setup(t, true)
	bad := filepath.Join(t.TempDir(), "pc1")
	if err := exec.Command("cp", "-r", shared.snap, bad).Run(); err != nil {
		t.Fatal(err)
	}
	k := -1
	for i, c := range shared.m.Chunks {
		if !c.Zero {
			k = i
		}
	}
	c := shared.m.Chunks[k]
	seg := filepath.Join(bad, shared.m.Segments[c.Segment].Name)
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("damaged!"), c.FrameOffset+c.FrameLength/2)
	f.Close()

	dir := t.TempDir()
	planFile := filepath.Join(dir, "plan.toml")
	os.WriteFile(planFile, []byte(unattended), 0o644)
	stick := filepath.Join(dir, "stick.img")
	if err := USBStick(stick, 96<<20, map[string]string{"/snapshots/pc1": bad, "/rewind/plan.toml": planFile}); err != nil {
		t.Fatal(err)
	}
	target := blank(t)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target}}}, "")
	if r.Status != rescue.StatusFailed {
		t.Fatalf("report status %q; want failed", r.Status)
	}
	if !strings.Contains(r.Error, fmt.Sprintf("chunk %d", k)) {
		t.Errorf("report error %q does not name chunk %d", r.Error, k)
	}
	// The table goes on last, after the data: the failed restore never
	// wrote one, and the old one was cleared before the data.
	if r.LayoutWritten || !r.TableCleared {
		t.Errorf("report: layout written %v, table cleared %v; want no layout written and the table cleared", r.LayoutWritten, r.TableCleared)
	}
	if dump, err := SfdiskDump(target); err == nil {
		t.Errorf("target still has a partition table:\n%s", dump)
	}
}

// The media 'rewind media build' writes (kernel + base archive + appended
// overlay in one gzip stream) boots and restores: the plan comes from the
// initramfs, the snapshot from a stick without a plan.
func TestMediaBuild(t *testing.T) {
	setup(t, true)
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "media")
	res, err := initramfs.BuildMedia(initramfs.MediaOptions{Base: base, Kernel: shared.kernel, Plan: []byte(unattended), OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	stick := filepath.Join(t.TempDir(), "stick.img")
	if err := USBStick(stick, 96<<20, map[string]string{"/snapshots/pc1": shared.snap}); err != nil {
		t.Fatal(err)
	}
	target := blank(t)
	vm := &VM{Kernel: res.Kernel, Initrd: res.Initramfs, Cmdline: "rewind.after=poweroff",
		Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target}}, LogPath: filepath.Join(t.TempDir(), "console.log")}
	console, err := vm.Run(context.Background())
	if err != nil {
		t.Fatalf("%v\n%s", err, console)
	}
	r := consoleReport(t, console)
	if r.Plan.Source != "rescue image "+rescue.OverlayPlan {
		t.Errorf("plan source %q, want the rescue image", r.Plan.Source)
	}
	wantRestored(t, target, r)
}
