package machine

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
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
