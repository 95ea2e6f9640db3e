package machine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
)

// The target turns read-only (blockdev --setro: the kernel then fails
// every write with EPERM, a stand-in for a disk that dies; dm-error is
// not in this kernel) once every data chunk is on it, so the writes of
// the table areas and of the partition table fail: the restore fails
// naming the device and saying not to boot it, reports no table written,
// and the target holds no partition table that could boot the
// half-restored disk.
func TestWriteErrorAtTheTableWrite(t *testing.T) {
	needTools(t, "blockdev", "blkid")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptSource(t, src)
	snap := captureDisk(t, src)
	m := snap.Manifest
	used := filepath.Join(dir, "used.img")
	usedDisk(t, used, m.DiskSize)
	dev := testdisk.Loop(t, used, 0)
	t.Cleanup(func() { exec.Command("blockdev", "--setrw", dev).Run() })

	head, tail := diskrestore.ClearedSpans(m.DiskSize, 512)
	data := 0 // chunks written before the table areas
	for _, c := range m.Chunks {
		if c.Offset >= head && c.Offset+c.Length <= tail {
			data++
		}
	}
	tg, err := restore.OpenTargetChecked(dev, m.DiskSize, true, func(size int64, ss int) error { return Check(m, size, ss, false) })
	if err != nil {
		t.Fatal(err)
	}
	defer tg.File.Close()
	readOnly := false
	a, err := Apply(context.Background(), snap, tg.File, ApplyOptions{Jobs: 2, CheckpointInterval: 1,
		Checkpoint: func(done []bool) error {
			n := 0
			for _, d := range done {
				if d {
					n++
				}
			}
			if n == data && !readOnly {
				if out, err := exec.Command("blockdev", "--setro", dev).CombinedOutput(); err != nil {
					t.Fatalf("blockdev --setro %s: %v %s", dev, err, out)
				}
				readOnly = true
			}
			return nil
		}})
	if !readOnly {
		t.Fatalf("no checkpoint saw all %d data chunks on %s; the fault was never injected", data, dev)
	}
	if err == nil {
		t.Fatalf("restore onto %s succeeded although it was read-only before its partition table was written: %+v", dev, a)
	}
	t.Logf("restore error: %v", err)
	if msg := err.Error(); !strings.Contains(msg, dev) || !strings.Contains(msg, "no partition table") && !strings.Contains(msg, "do not boot from this disk") {
		t.Errorf("error %q does not name %s or say that it must not be booted", err, dev)
	}
	if a.LayoutWritten {
		t.Errorf("after the failure: layout written %v; want false", a.LayoutWritten)
	}
	if out, _ := exec.Command("blkid", "-p", "-o", "export", dev).CombinedOutput(); strings.Contains(string(out), "PTTYPE=") {
		t.Errorf("after the failed restore blkid -p %s finds a partition table:\n%s", dev, out)
	}
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if l, _, err := diskrestore.ReadLayout(f, m.DiskSize, 512); err == nil && l.Table != "none" {
		t.Errorf("after the failed restore %s holds a %s table", dev, l.Table)
	}
}
