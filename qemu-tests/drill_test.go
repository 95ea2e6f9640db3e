package qemutests

import (
	"context"
	"os"
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
