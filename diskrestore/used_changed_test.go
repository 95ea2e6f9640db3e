package diskrestore

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// TestFreeChangedWhileCaptured: an ext4 file system (a whole disk) whose
// map was read for a capture, then written by another process (debugfs
// adds a 2 MiB file in its free blocks): FreeChanged names the disk and
// the bytes now in use; without the write it finds nothing.
func TestFreeChangedWhileCaptured(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs not installed")
	}
	dir := t.TempDir()
	img := testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 31).Path
	extents := readExtents(t, img)
	out, free, err := usedExtents(t, img, extents, false)
	if err != nil || len(free) != 1 || len(free[0]) == 0 {
		t.Fatalf("UsedExtents of %s: %d free lists, %v; want the ext4 map", img, len(free), err)
	}
	check := func() error {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return FreeChanged(f, out, free)
	}
	if err := check(); err != nil {
		t.Fatalf("FreeChanged of %s, not written since: %v; want nil", img, err)
	}
	data := filepath.Join(dir, "new.bin")
	if err := os.WriteFile(data, testdisk.RandomBytes(32, 2*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("debugfs", "-w", "-R", "write "+data+" new.bin", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs write: %v\n%s", err, b)
	}
	err = check()
	if err == nil || !strings.Contains(err.Error(), "changed while it was captured") || !strings.Contains(err.Error(), "in use now") {
		t.Errorf("FreeChanged of %s after a 2 MiB file was written into it: %v; want an error naming the bytes now in use", img, err)
	}
}

// TestFreeChangedThroughLoopDevice: the map is read through a loop
// device and the file system then written through its backing file (as a
// virtual machine writes its disk image): the loop device's page cache
// still holds the old bitmaps, and FreeChanged must read past it.
func TestFreeChangedThroughLoopDevice(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs not installed")
	}
	dir := t.TempDir()
	img := testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 33).Path
	dev := testdisk.Loop(t, img, 0)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, extents, err := ReadLayout(f, 24*mib, 512)
	if err != nil {
		t.Fatal(err)
	}
	out, free, err := UsedExtents(f, extents, false)
	if err != nil || len(free) != 1 || len(free[0]) == 0 {
		t.Fatalf("UsedExtents of %s: %d free lists, %v; want the ext4 map", dev, len(free), err)
	}
	data := filepath.Join(dir, "new.bin")
	if err := os.WriteFile(data, testdisk.RandomBytes(34, 2*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("debugfs", "-w", "-R", "write "+data+" new.bin", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs write: %v\n%s", err, b)
	}
	if err := FreeChanged(f, out, free); err == nil || !strings.Contains(err.Error(), "in use now") {
		t.Errorf("FreeChanged of %s after its backing file %s got a 2 MiB file: %v; want an error naming the bytes now in use", dev, img, err)
	}
}
