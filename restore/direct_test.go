package restore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// isBlockDevice reports whether path is a block device.
func isBlockDevice(t *testing.T, path string) bool {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// mbrDisk writes a size-byte disk of random bytes (seed) with an MBR
// that sfdisk makes from script, and returns its path, bytes and extents.
func mbrDisk(t *testing.T, size int, seed uint64, script string) (string, []byte, *snapshot.Layout, []snapshot.Extent) {
	t.Helper()
	path := writeTemp(t, testdisk.RandomBytes(seed, size))
	cmd := exec.Command("sfdisk", "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("sfdisk: %v %s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	layout, extents, err := diskrestore.ReadLayout(f, int64(size), 0)
	if err != nil {
		t.Fatal(err)
	}
	return path, data, layout, extents
}

// On a block device, chunks that start and end on a page boundary are
// written with direct I/O, past the page cache; the others (a partition
// at sector 63, as on an old disk, the boot area before it, a partition
// that ends between pages) go through the page cache, and the two kinds
// meet within one page without losing a byte. An image file takes every
// chunk through the page cache. Targets: a fresh image file, an image
// file full of old bytes, and a loop device full of old bytes.
func TestDirectWritesAndPageCacheWritesMeet(t *testing.T) {
	const size = 14 * mib
	// Partition 1 at sector 63 ends on a page boundary, where partition
	// 2 starts; partition 2 ends 2 KiB past one; partition 3 is aligned.
	srcPath, src, layout, extents := mbrDisk(t, size, 21, "label: dos\n"+
		"start=63, size=4161, type=83\nstart=4224, size=4100, type=83\nstart=16384, size=8192, type=83\n")
	snapDir, m := capture(t, srcPath, snapshot.CaptureOptions{ChunkSize: mib, Layout: layout, Extents: extents})
	var aligned int64 // bytes of chunks that start and end on a page boundary
	for _, c := range m.Chunks {
		if !c.Zero && c.Offset%4096 == 0 && c.Length%4096 == 0 {
			aligned += c.Length
		}
	}
	if unaligned := m.DataBytes() - aligned; aligned < 6*mib || unaligned < 2*mib {
		t.Fatalf("the snapshot has %d bytes of page-aligned chunks and %d of others, want at least 6 MiB and 2 MiB: the test's layout is not what it meant", aligned, unaligned)
	}
	old := bytes.Repeat([]byte{0xA5}, size)
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
	}{
		{"fresh image file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "new.img") }},
		{"image file with old bytes", func(t *testing.T) string { return writeTemp(t, old) }},
		{"loop device with old bytes", func(t *testing.T) string { return testdisk.Loop(t, writeTemp(t, old), 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target(t)
			res, err := restoreTo(t, snapDir, target, restore.Options{Jobs: 2})
			if err != nil {
				t.Fatalf("restore onto %s: %v", target, err)
			}
			got, err := os.ReadFile(target)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range extents {
				if !bytes.Equal(got[e.Offset:e.Offset+e.Length], src[e.Offset:e.Offset+e.Length]) {
					t.Errorf("%s: extent at %d (%d bytes) differs from the source", target, e.Offset, e.Length)
				}
			}
			want := int64(0)
			if isBlockDevice(t, target) {
				want = aligned // the page-aligned chunks
			}
			if res.BytesDirect != want {
				t.Errorf("%s: got %d bytes written with direct I/O, want %d", target, res.BytesDirect, want)
			}
			if res.BytesDirect > res.BytesWritten {
				t.Errorf("%s: %d bytes direct of %d written", target, res.BytesDirect, res.BytesWritten)
			}
		})
	}
}

// A device that fails a write (a loop device whose backing tmpfs is
// full) fails the restore at the chunk that was lost, naming the chunk,
// its disk offset and the device, not only at the final flush.
func TestWriteErrorNamesTheChunk(t *testing.T) {
	const size = 48 << 20
	src := testdisk.RandomBytes(12, size)
	dir, _ := capture(t, writeTemp(t, src), snapshot.CaptureOptions{ChunkSize: 1 << 20})
	backing := filepath.Join(smallTmpfs(t, 16<<20), "disk.img")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	dev := testdisk.Loop(t, backing, 0)
	snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := restore.Run(context.Background(), snap, f, restore.Options{Jobs: 2})
	if err == nil {
		t.Fatalf("restore onto %s (%d MiB backed by a 16 MiB tmpfs) reported success: %d bytes written", dev, size>>20, res.BytesWritten)
	}
	msg := err.Error()
	if !errors.Is(err, restore.ErrWrite) || !strings.Contains(msg, "chunk ") || !strings.Contains(msg, "disk offset") || !strings.Contains(msg, dev) {
		t.Errorf("error %q: want a write error naming the chunk, its disk offset and %s", msg, dev)
	}
}
