package machine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestUsedBlocksRestoreTargets restores the used-block snapshot onto used
// targets of other kinds than a loop device over a disk file: an image
// file kept (not recreated, as a delta restore keeps it) on the disk and
// on tmpfs (no O_DIRECT, holes punched in 4 KiB pages for 512-byte
// aligned ranges), and a loop device over a tmpfs file. Every chunk must
// equal the source and every unused range read as zeros, in each wipe
// mode but signatures.
func TestUsedBlocksRestoreTargets(t *testing.T) {
	snap, want := usedSnapshot(t)
	m := snap.Manifest
	shm := "/dev/shm"
	if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm tmpfs here")
	}
	for _, tc := range []struct {
		name  string
		dir   func(t *testing.T) string
		loop  bool
		delta bool
	}{
		{"kept image on disk", func(t *testing.T) string { return t.TempDir() }, false, false},
		{"kept image on disk, delta", func(t *testing.T) string { return t.TempDir() }, false, true},
		{"kept image on tmpfs", func(t *testing.T) string { return shmDir(t, shm) }, false, false},
		{"kept image on tmpfs, delta", func(t *testing.T) string { return shmDir(t, shm) }, false, true},
		{"loop over tmpfs", func(t *testing.T) string { return shmDir(t, shm) }, true, false},
		{"loop over tmpfs, delta", func(t *testing.T) string { return shmDir(t, shm) }, true, true},
	} {
		for _, wipe := range []string{WipeAuto, WipeFull} {
			t.Run(tc.name+"/"+wipe, func(t *testing.T) {
				target := filepath.Join(tc.dir(t), "used.img")
				usedDisk(t, target, m.DiskSize)
				if tc.loop {
					target = testdisk.Loop(t, target, 0)
				}
				a := applyTo(t, snap, target, ApplyOptions{Wipe: wipe, Delta: tc.delta})
				checkDisk(t, target, m, want, false)
				if a.Wipe.UnusedZeroed != a.Wipe.Unused || a.Wipe.OldRemains {
					t.Errorf("%s: wipe says %d of %d unused bytes zeroed, old remains %v; want all zeroed", target, a.Wipe.UnusedZeroed, a.Wipe.Unused, a.Wipe.OldRemains)
				}
			})
		}
	}
}

func shmDir(t *testing.T, shm string) string {
	t.Helper()
	d, err := os.MkdirTemp(shm, "rewind-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// TestUsedBlocksFreshImageSaysNoOldBytes: restored into a new image file
// (created sparse: nothing old in it), --wipe signatures zeroes nothing
// and need not; the wipe report must not claim that free space "still
// holds the old disk's bytes" when every byte reads as zeros. It used to.
func TestUsedBlocksFreshImageSaysNoOldBytes(t *testing.T) {
	snap, want := usedSnapshot(t)
	m := snap.Manifest
	for _, wipe := range []string{WipeSignatures, WipeAuto, WipeFull} {
		t.Run(wipe, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "new.img")
			a := applyTo(t, snap, target, ApplyOptions{Wipe: wipe})
			checkDisk(t, target, m, want, false)
			w := a.Wipe
			if w.OldRemains || w.UnusedZeroed != w.Unused || w.Bytes != w.Uncovered {
				t.Errorf("%s --wipe %s: report says %d of %d uncovered bytes zeroed (%d of %d unused), old remains %v; want all reading zeros, none old",
					target, wipe, w.Bytes, w.Uncovered, w.UnusedZeroed, w.Unused, w.OldRemains)
			}
		})
	}
}

// TestUsedSuperfloppyLeavesNoOldGPT: a disk without a partition table
// that holds one FAT32 file system (a "superfloppy", as USB sticks and
// some appliances have), captured used-blocks, restored with --wipe
// signatures onto a used disk that had a GPT. The free space at the
// disk's end is an unused range, so nothing used to write over the old
// backup GPT in the last sectors: wipefs still found "gpt" there and
// sgdisk offered to load the old partition table from it. The table
// areas the snapshot does not write are zeroed as on a disk with a table.
func TestUsedSuperfloppyLeavesNoOldGPT(t *testing.T) {
	needTools(t, "mkfs.vfat", "mcopy", "sgdisk", "wipefs")
	dir := t.TempDir()
	src := filepath.Join(dir, "fat.img")
	run(t, "mkfs.vfat", "-C", "-F", "32", src, "65536")
	run(t, "mcopy", "-i", src, "/etc/os-release", "::/os-release")
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	layout, extents, err := diskrestore.ReadLayout(f, 64*mib, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := snapshot.CaptureOptions{DiskSize: 64 * mib, Layout: layout, ChunkSize: mib}
	if opts.Extents, opts.Free, err = diskrestore.UsedExtents(f, extents, false); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "snap")
	if _, err := snapshot.Capture(context.Background(), f, snapDir, opts); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(context.Background(), snapDir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if snap.Manifest.UnusedBytes() == 0 || snap.Manifest.RequiredSize() != 64*mib {
		t.Fatalf("snapshot of %s: %d unused bytes over %d: not the used-block superfloppy the test needs", src, snap.Manifest.UnusedBytes(), snap.Manifest.RequiredSize())
	}
	for _, wipe := range []string{WipeSignatures, WipeAuto} {
		t.Run(wipe, func(t *testing.T) {
			used := filepath.Join(t.TempDir(), "used.img")
			if err := os.WriteFile(used, testdisk.RandomBytes(7, 64*mib), 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "sgdisk", "-n", "1:2048:+10M", "-n", "2:0:0", used)
			dev := testdisk.Loop(t, used, 0)
			applyTo(t, snap, dev, ApplyOptions{Wipe: wipe})
			for _, s := range signatures(t, dev) {
				if !strings.HasPrefix(s, "vfat@") {
					t.Errorf("%s after a restore with --wipe %s: wipefs finds %s; want only the restored vfat", dev, wipe, s)
				}
			}
		})
	}
}
