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
	res, err := drill.Run(context.Background(), drill.Options{Snapshot: shared.snap, Kernel: shared.kernel,
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
	if len(res.Phases) != 3 || res.Phases[2].Name != "check fs" {
		t.Fatalf("phases %+v, want media, restore, check fs", res.Phases)
	}
	if err := SameExtents(shared.source, res.Disk, shared.m); err != nil {
		t.Fatalf("restored disk %s: %v", res.Disk, err)
	}
}

// The sample disk has no boot loader: its drill restores and checks clean
// but fails in the boot phase, named, with the boot console kept.
func TestDrillNoBootLoaderFailsInBoot(t *testing.T) {
	setup(t, false)
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	keep := t.TempDir()
	res, err := drill.Run(context.Background(), drill.Options{Snapshot: shared.snap, Kernel: shared.kernel,
		Base: base, Modules: shared.modules, Check: "fs", Timeout: 40 * time.Second, Keep: keep,
		Expect: regexp.MustCompile(`login: `)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Phases {
		t.Logf("phase %s ok=%v %.1fs %s", p.Name, p.OK, p.Seconds, p.Detail)
	}
	if res.OK || res.Failed != "boot" {
		t.Fatalf("drill ok=%v failed phase %q (%s); want a failure in the boot phase", res.OK, res.Failed, res.Error)
	}
	if !strings.Contains(res.Error, "SeaBIOS") || !strings.Contains(res.Error, "login: ") {
		t.Errorf("error %q; want the firmware and the expected text named", res.Error)
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
	res, err := drill.Run(context.Background(), drill.Options{Snapshot: snap, Kernel: shared.kernel,
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
	if last := res.Phases[len(res.Phases)-1]; last.Name != "boot" || !strings.Contains(last.Detail, "SeaBIOS") {
		t.Fatalf("last phase %+v; want boot with SeaBIOS", last)
	}
}
