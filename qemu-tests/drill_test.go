package qemutests

import (
	"context"
	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/snapshot"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/drill"
)

// The drill of the sample disk with --check fs: the rescue flow restores
// it in QEMU, then every file system of the restored image checks clean.
func TestDrillCheckFS(t *testing.T) {
	setup(t, false)
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	keep := t.TempDir()
	res, err := drill.Run(context.Background(), drill.Options{Snapshots: []string{shared.snap}, Accel: "tcg", Kernel: shared.kernel,
		Base: base, Modules: shared.modules, Check: "fs", Timeout: 3 * time.Minute, Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Phases {
		t.Logf("phase %s ok=%v %.1fs %s", p.Name, p.OK, p.Seconds, p.Detail)
	}
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	wantPhases(t, res, "accel", "media", "rescue boot", "restore", "check fs")
	if err := SameExtents(shared.source, res.Disks[0], shared.m); err != nil {
		t.Fatalf("restored disk %s: %v", res.Disks[0], err)
	}
}

// The sample disk has no boot loader: its drill restores and checks clean
// but fails in the reboot phase, named, with the boot console kept.
func TestDrillNoBootLoaderFailsInBoot(t *testing.T) {
	setup(t, false)
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	keep := t.TempDir()
	res, err := drill.Run(context.Background(), drill.Options{Snapshots: []string{shared.snap}, Accel: "tcg", Kernel: shared.kernel,
		Base: base, Modules: shared.modules, Check: "fs", Timeout: 40 * time.Second, Keep: keep,
		Expect: regexp.MustCompile(`login: `)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Phases {
		t.Logf("phase %s ok=%v %.1fs %s", p.Name, p.OK, p.Seconds, p.Detail)
	}
	if res.OK || res.Failed != "reboot" {
		t.Fatalf("drill ok=%v failed phase %q (%s); want a failure in the reboot phase", res.OK, res.Failed, res.Error)
	}
	if !strings.Contains(res.Error, "SeaBIOS") || !strings.Contains(res.Error, "nothing was printed on the serial console") {
		t.Errorf("error %q; want the firmware named and that nothing was printed", res.Error)
	}
	if _, err := os.Stat(filepath.Join(keep, "boot-console.log")); err != nil {
		t.Errorf("boot console not kept: %v", err)
	}
}

// The busybox BIOS system disk (sysdisk.go): captured, restored by the
// rescue flow, fscked, then booted with SeaBIOS until its login line.
func TestDrillSysDiskBootsQEMU(t *testing.T) {
	setup(t, true)
	d := sysDisk(t)
	snap := filepath.Join(t.TempDir(), "sys")
	if _, err := Capture(context.Background(), d.Path, snap); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	res, err := drill.Run(context.Background(), drill.Options{Snapshots: []string{snap}, Accel: "tcg", Kernel: shared.kernel,
		Base: base, Modules: shared.modules, Check: "fs", Timeout: 5 * time.Minute, Keep: t.TempDir(),
		Expect: regexp.MustCompile(regexp.QuoteMeta(SysDiskMarker))})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Phases {
		t.Logf("phase %s ok=%v %.1fs %s", p.Name, p.OK, p.Seconds, p.Detail)
	}
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	wantPhases(t, res, "accel", "media", "rescue boot", "restore", "check fs", "reboot", "expect")
	if reboot := res.Phases[5]; !strings.Contains(reboot.Detail, "SeaBIOS") {
		t.Fatalf("reboot phase %+v; want SeaBIOS named", reboot)
	}
}

// wantPhases fails the test unless the drill's phases are names, in
// order, each with a time.
func wantPhases(t *testing.T, res *drill.Result, names ...string) {
	t.Helper()
	var got []string
	for _, p := range res.Phases {
		got = append(got, p.Name)
		if p.Seconds < 0 {
			t.Errorf("phase %s: %.1fs", p.Name, p.Seconds)
		}
	}
	if strings.Join(got, ", ") != strings.Join(names, ", ") {
		t.Fatalf("phases %s; want %s", strings.Join(got, ", "), strings.Join(names, ", "))
	}
}

// drillOpts are the options every QEMU drill test starts from: TCG (the
// accel probe is tested on its own), this binary's rescue initramfs.
func drillOpts(t *testing.T, snaps ...string) drill.Options {
	t.Helper()
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	return drill.Options{Snapshots: snaps, Kernel: shared.kernel, Base: base, Modules: shared.modules,
		Accel: "tcg", Timeout: 4 * time.Minute, Keep: t.TempDir()}
}

func runDrill(t *testing.T, o drill.Options) *drill.Result {
	t.Helper()
	start := time.Now()
	res, err := drill.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Phases {
		t.Logf("phase %s ok=%v %.1fs %s", p.Name, p.OK, p.Seconds, p.Detail)
	}
	t.Logf("drill took %.1fs; failed phase %q: %s", time.Since(start).Seconds(), res.Failed, res.Error)
	return res
}

// listenSnapshot builds the listening disk (drilldisks.go), lets wipe
// change it, and captures it.
func listenSnapshot(t *testing.T, wipe func(path string)) string {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "sfdisk", "grub-mkimage"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh)", tool)
		}
	}
	initrd := sysInitrd(shared.kernel)
	if _, err := os.Stat(initrd); err != nil {
		t.Skipf("no initrd for %s (%v)", shared.kernel, err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "listen.img")
	if err := BuildListenDisk(context.Background(), img, shared.kernel, initrd); err != nil {
		t.Fatal(err)
	}
	if wipe != nil {
		wipe(img)
	}
	snap := filepath.Join(dir, "web1")
	if _, err := Capture(context.Background(), img, snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

// --expect tcp:PORT: the listening disk, restored, boots with a NIC on
// QEMU's user network (restrict=on) and its httpd accepts on port 8080
// through the loopback forward. The phase passes only on a connection
// the guest accepted (QEMU's info usernet), so a port nobody listens on
// fails it: that is the second drill, of the same snapshot.
func TestDrillExpectTCP(t *testing.T) {
	setup(t, true)
	snap := listenSnapshot(t, nil)
	o := drillOpts(t, snap)
	o.ExpectTCP = ListenPort
	res := runDrill(t, o)
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	wantPhases(t, res, "accel", "media", "rescue boot", "restore", "reboot", "expect")
	if e := res.Phases[5]; !strings.Contains(e.Detail, "accepted on TCP port 8080") {
		t.Errorf("expect phase %+v; want the port named", e)
	}
	boot, _ := os.ReadFile(res.BootConsole)
	if !strings.Contains(string(boot), ListenMarker) {
		t.Errorf("boot console %s does not show %q: the port was seen open before httpd ran", res.BootConsole, ListenMarker)
	}

	o = drillOpts(t, snap)
	o.ExpectTCP = ListenPort + 1
	o.BootTimeout = 75 * time.Second
	res = runDrill(t, o)
	if res.OK || res.Failed != "expect" || !strings.Contains(res.Error, "TCP port 8081") {
		t.Fatalf("drill expecting tcp:8081 (nothing listens): ok=%v failed %q: %s; want the expect phase to fail naming the port", res.OK, res.Failed, res.Error)
	}
}

// A machine with two disks: the sample disk and a second, smaller one of
// other data, drilled as one machine: a blank disk of each size, both
// restored by one rescue flow from [[machine.disk]] entries, every extent
// equal to its source, every file system clean.
func TestDrillTwoDisks(t *testing.T) {
	setup(t, true)
	dir := t.TempDir()
	src2 := filepath.Join(dir, "data.img")
	if err := SampleDisk(src2, 48<<20, 7); err != nil {
		t.Fatal(err)
	}
	snap2 := filepath.Join(dir, "pc1-data")
	m2, err := Capture(context.Background(), src2, snap2)
	if err != nil {
		t.Fatal(err)
	}
	o := drillOpts(t, shared.snap, snap2)
	o.Check = "fs"
	res := runDrill(t, o)
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	wantPhases(t, res, "accel", "media", "rescue boot", "restore", "check fs")
	if d := res.Phases[3].Detail; !strings.HasPrefix(d, "2 disks") {
		t.Errorf("restore phase detail %q; want 2 disks", d)
	}
	if c := res.Phases[4].Detail; !strings.Contains(c, "disk 1 clean") || !strings.Contains(c, "disk 2 clean") {
		t.Errorf("check fs detail %q; want both disks clean", c)
	}
	for i, w := range []struct {
		src  string
		m    *snapshot.Manifest
		size int64
	}{{shared.source, shared.m, diskSize}, {src2, m2, 48 << 20}} {
		fi, err := os.Stat(res.Disks[i])
		if err != nil || fi.Size() != w.size {
			t.Errorf("disk %d %s: %v, size %d; want %d", i+1, res.Disks[i], err, fi.Size(), w.size)
		}
		if err := SameExtents(w.src, res.Disks[i], w.m); err != nil {
			t.Errorf("restored disk %d %s: %v", i+1, res.Disks[i], err)
		}
	}
}

// --plan: the user's plan (a 1 s countdown, the single-disk form, the
// disk found by its size) is the one the rescue flow runs; a plan naming
// a snapshot the drill does not stage is refused before anything boots.
func TestDrillUserPlan(t *testing.T) {
	setup(t, true)
	o := drillOpts(t, shared.snap)
	o.Check = "fs"
	o.Plan = []byte(`
[countdown]
seconds = 1
[[machine]]
name = "user-plan-pc1"
snapshot = "media:/snapshots/pc1"
target = "size=64MiB"
after = "poweroff"
`)
	res := runDrill(t, o)
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	console, _ := os.ReadFile(res.Console)
	if !strings.Contains(string(console), `machine "user-plan-pc1"`) {
		t.Errorf("console %s does not show the user's machine chosen", res.Console)
	}
	if err := SameExtents(shared.source, res.Disks[0], shared.m); err != nil {
		t.Errorf("restored disk %s: %v", res.Disks[0], err)
	}
	o.Keep = t.TempDir() // the first drill's files are in the other one
	o.Plan = []byte("[[machine]]\nname = \"x\"\nsnapshot = \"media:/snapshots/other\"\n")
	if _, err := drill.Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "media:/snapshots/other, which the drill does not put on the stick") {
		t.Errorf("plan with another snapshot: %v; want it refused", err)
	}
}

// --medium: a USB image built as 'rewind media build' does (its plan in
// the initramfs, the snapshot on the image) is booted by SeaBIOS and
// GRUB instead of the drill's stick.
func TestDrillMedium(t *testing.T) {
	setup(t, true)
	_, img := buildMedium(t, initramfs.FormatUSB, `
[countdown]
seconds = 0
[[machine]]
name = "medium-pc1"
snapshot = "media:/snapshots/pc1"
target = "serial=drill1"
after = "poweroff"
`, true)
	o := drillOpts(t, shared.snap)
	o.Check, o.Medium = "fs", img
	res := runDrill(t, o)
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	if d := res.Phases[1].Detail; !strings.Contains(d, img) {
		t.Errorf("media phase %q; want the medium named", d)
	}
	console, _ := os.ReadFile(res.Console)
	if !strings.Contains(string(console), `machine "medium-pc1"`) {
		t.Errorf("console %s does not show the medium's plan", res.Console)
	}
	if err := SameExtents(shared.source, res.Disks[0], shared.m); err != nil {
		t.Errorf("restored disk %s: %v", res.Disks[0], err)
	}
}

// A system disk whose boot loader was wiped before the capture (the MBR's
// boot code and GRUB's core.img in the gap after it zeroed; the table
// kept): the drill restores it and fsck passes, but it fails in the
// reboot phase, named, with SeaBIOS's view of it.
func TestDrillWipedBootLoaderFailsInReboot(t *testing.T) {
	setup(t, true)
	snap := listenSnapshot(t, func(img string) {
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(make([]byte, 440), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, sysPartStart-512), 512); err != nil {
			t.Fatal(err)
		}
	})
	o := drillOpts(t, snap)
	o.Check, o.Expect, o.BootTimeout = "fs", regexp.MustCompile(regexp.QuoteMeta(ListenMarker)), 60*time.Second
	res := runDrill(t, o)
	if res.OK || res.Failed != "reboot" {
		t.Fatalf("drill ok=%v failed phase %q (%s); want a failure in the reboot phase", res.OK, res.Failed, res.Error)
	}
	if !strings.Contains(res.Error, "SeaBIOS") || !strings.Contains(res.Error, "nothing was printed") {
		t.Errorf("error %q; want SeaBIOS named and that nothing was printed", res.Error)
	}
	for _, f := range []string{res.BootConsole, res.Disks[0], filepath.Join(res.Dir, "firmware.log")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("not kept: %v", err)
		}
	}
}

// A real Debian 12 system (debootstrap, debiandisk.go) captured with the
// rewind CLI, drilled, and booted by SeaBIOS and GRUB until systemd's
// serial getty prints its login prompt.
func TestDrillDebianBootsToLogin(t *testing.T) {
	if os.Getenv("REWIND_QEMU_ALL") == "" || testing.Short() {
		setup(t, true) // skips
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap is not installed (scripts/setup.sh)")
	}
	// Built (once) before setup: the two do not share anything.
	img, err := CachedDebianDisk(context.Background(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	setup(t, true)
	snap := filepath.Join(t.TempDir(), "debian12")
	start := time.Now()
	if out, err := exec.Command(rewindBin(t), "capture", img, "-o", snap, "--progress", "none").CombinedOutput(); err != nil {
		t.Fatalf("rewind capture %s: %v\n%s", img, err, out)
	}
	t.Logf("rewind capture took %.1fs", time.Since(start).Seconds())
	o := drillOpts(t, snap)
	o.Check, o.Expect, o.Timeout = "fs", regexp.MustCompile(regexp.QuoteMeta(DebianHostname)+` login: `), 20*time.Minute
	res := runDrill(t, o)
	if !res.OK {
		t.Fatalf("drill failed in phase %s: %s", res.Failed, res.Error)
	}
	wantPhases(t, res, "accel", "media", "rescue boot", "restore", "check fs", "reboot", "expect")
}

// TestDrillExpectIgnoresFirmware (found by attacking the drill): the
// sample disk has no boot loader, and an --expect of SeaBIOS's own line
// "Booting from Hard Disk" must not pass: only the restored system's
// lines count.
func TestDrillExpectIgnoresFirmware(t *testing.T) {
	setup(t, true)
	o := drillOpts(t, shared.snap)
	o.Expect = regexp.MustCompile(`Booting from Hard Disk`)
	o.BootTimeout = 30 * time.Second
	res := runDrill(t, o)
	if res.OK || res.Failed != "reboot" {
		t.Fatalf("drill ok=%v failed %q (%s); want a failure in reboot: the firmware's text is not the restored system's", res.OK, res.Failed, res.Error)
	}
}
