package qemutests

import (
	"context"
	"os"
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
