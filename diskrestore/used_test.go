package diskrestore

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

const mib = 1 << 20

// usedDisk builds a GPT image over random data with an ext4, a FAT32, an
// NTFS file system, a swap area and a partition of random bytes, and
// returns its path, layout extents and the images.
func usedDisk(t *testing.T) (string, []snapshot.Extent, []*testdisk.FSImage) {
	t.Helper()
	testdisk.NeedFS(t, "ext4", "vfat", "ntfs", "swap")
	dir := t.TempDir()
	parts := []*testdisk.FSImage{
		testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 6*mib, 21),
		testdisk.MakeFS(t, filepath.Join(dir, "vfat.img"), "vfat", 64*mib, 6*mib, 22),
		testdisk.MakeFS(t, filepath.Join(dir, "ntfs.img"), "ntfs", 16*mib, 3*mib, 23),
		testdisk.MakeFS(t, filepath.Join(dir, "swap.img"), "swap", 4*mib, 0, 24),
		testdisk.MakeFS(t, filepath.Join(dir, "random.img"), "", 2*mib, 0, 25),
	}
	disk := filepath.Join(dir, "disk.img")
	testdisk.GPTDisk(t, disk, 116*mib, 20, parts...)
	return disk, readExtents(t, disk), parts
}

func readExtents(t *testing.T, disk string) []snapshot.Extent {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	_, extents, err := ReadLayout(f, st.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return extents
}

func usedExtents(t *testing.T, disk string, extents []snapshot.Extent, raw bool) ([]snapshot.Extent, [][]snapshot.Range, error) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return UsedExtents(f, extents, raw)
}

// extFree is dumpe2fs's list of free blocks of an ext image, as absolute
// byte ranges of a disk where the image starts at base.
func extFree(t *testing.T, img string, base int64) []snapshot.Range {
	t.Helper()
	out, err := exec.Command("dumpe2fs", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v\n%s", img, err, out)
	}
	bs, _ := strconv.ParseInt(regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindStringSubmatch(string(out))[1], 10, 64)
	var free []snapshot.Range
	for _, m := range regexp.MustCompile(`(?m)^\s+Free blocks: (.*)$`).FindAllStringSubmatch(string(out), -1) {
		for _, r := range strings.Split(m[1], ", ") {
			if r == "" {
				continue
			}
			a, b, ok := strings.Cut(r, "-")
			if !ok {
				b = a
			}
			x, _ := strconv.ParseInt(a, 10, 64)
			y, _ := strconv.ParseInt(b, 10, 64)
			if n := len(free); n > 0 && free[n-1].End() == base+x*bs {
				free[n-1].Length += (y - x + 1) * bs
				continue
			}
			free = append(free, snapshot.Range{Offset: base + x*bs, Length: (y - x + 1) * bs})
		}
	}
	return free
}

// TestUsedExtents reads the file systems of a used disk: each that
// Rewind reads is captured used with its free ranges (ext4: exactly
// dumpe2fs's, at their disk offsets), the swap area keeps only its header
// page, random bytes and boot areas are stored whole without a word.
func TestUsedExtents(t *testing.T) {
	disk, extents, parts := usedDisk(t)
	got, free, err := usedExtents(t, disk, extents, false)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]struct{ fs, capture string }{1: {"ext4", "used"}, 2: {"vfat", "used"}, 3: {"ntfs", "used"}, 4: {"swap", "used"}, 5: {"", ""}}
	for i, e := range got {
		if e.Kind != snapshot.ExtentPartition {
			if e.FS != "" || e.Capture != "" || e.Note != "" || free[i] != nil {
				t.Errorf("%s extent at %d: fs %q capture %q note %q, %d free ranges; want it stored whole", e.Kind, e.Offset, e.FS, e.Capture, e.Note, len(free[i]))
			}
			continue
		}
		w := want[e.Partition]
		if e.FS != w.fs || e.Capture != w.capture || e.Note != "" {
			t.Errorf("partition %d: fs %q capture %q note %q, want fs %q capture %q and no note", e.Partition, e.FS, e.Capture, e.Note, w.fs, w.capture)
		}
		for _, r := range free[i] {
			if r.Offset < e.Offset || r.End() > e.Offset+e.Length {
				t.Errorf("partition %d: free range %v leaves the partition (%d..%d)", e.Partition, r, e.Offset, e.Offset+e.Length)
			}
		}
		part := parts[e.Partition-1]
		switch part.Type {
		case "ext4":
			if w := extFree(t, part.Path, e.Offset); !rangesEqual(free[i], w) {
				t.Errorf("partition 1 (ext4): %d free ranges, want dumpe2fs's %d at the partition's offset", len(free[i]), len(w))
			}
		case "swap":
			w := []snapshot.Range{{Offset: e.Offset + 4096, Length: e.Length - 4096}}
			if !rangesEqual(free[i], w) {
				t.Errorf("partition 4 (swap): free %v, want everything after the header page %v", free[i], w)
			}
		case "vfat", "ntfs":
			var n int64
			for _, r := range free[i] {
				n += r.Length
			}
			if n < e.Length/2 {
				t.Errorf("partition %d (%s): %d bytes free of %d, want more than half (a few MiB of files)", e.Partition, part.Type, n, e.Length)
			}
		case "":
			if free[i] != nil {
				t.Errorf("partition 5 (random bytes): %d free ranges, want none", len(free[i]))
			}
		}
	}
}

func rangesEqual(a, b []snapshot.Range) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestUsedExtentsRaw: with raw no map is read; extents with a file system
// ProbeFS knows say "--raw".
func TestUsedExtentsRaw(t *testing.T) {
	disk, extents, _ := usedDisk(t)
	got, free, err := usedExtents(t, disk, extents, true)
	if err != nil {
		t.Fatal(err)
	}
	wantFS := map[int]string{1: "ext4", 2: "vfat", 3: "ntfs", 4: "swap", 5: ""}
	for i, e := range got {
		if free[i] != nil || e.Capture != "" {
			t.Errorf("%s %d: capture %q with %d free ranges, want it stored whole", e.Kind, e.Partition, e.Capture, len(free[i]))
		}
		if e.Kind != snapshot.ExtentPartition {
			continue
		}
		wantNote := NoteRaw
		if wantFS[e.Partition] == "" {
			wantNote = ""
		}
		if e.FS != wantFS[e.Partition] || e.Note != wantNote {
			t.Errorf("partition %d: fs %q note %q, want fs %q note %q", e.Partition, e.FS, e.Note, wantFS[e.Partition], wantNote)
		}
	}
}

// TestUsedExtentsRefusesOrFallsBack damages one file system of a used
// disk at a time: a bitmap that disagrees is stored whole with a note
// naming it, a journal that needs recovery refuses the capture naming the
// partition, its offset, the flag and the ways out.
func TestUsedExtentsRefusesOrFallsBack(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	img := testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 31)
	disk := filepath.Join(dir, "disk.img")
	off := testdisk.GPTDisk(t, disk, 32*mib, 30, img)[0]

	t.Run("damaged bitmap", func(t *testing.T) {
		damaged := filepath.Join(t.TempDir(), "damaged.img")
		copyFile(t, disk, damaged)
		out, _ := exec.Command("dumpe2fs", img.Path).CombinedOutput()
		m := regexp.MustCompile(`Block bitmap at (\d+)`).FindStringSubmatch(string(out))
		bs, _ := strconv.ParseInt(regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindStringSubmatch(string(out))[1], 10, 64)
		blk, _ := strconv.ParseInt(m[1], 10, 64)
		f, _ := os.OpenFile(damaged, os.O_RDWR, 0)
		f.WriteAt([]byte{0x00, 0x00, 0x00, 0x00}, off+blk*bs) // the group's first blocks (superblock, descriptors) marked free
		f.Close()
		got, free, err := usedExtents(t, damaged, readExtents(t, damaged), false)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range got {
			if e.Partition != 1 {
				continue
			}
			if e.FS != "ext4" || e.Capture != "" || free[i] != nil || !strings.Contains(e.Note, "bitmap") {
				t.Errorf("partition 1 with a damaged bitmap: fs %q capture %q note %q, %d free ranges; want ext4 stored whole with a note naming the bitmap", e.FS, e.Capture, e.Note, len(free[i]))
			}
		}
	})
	t.Run("needs recovery", func(t *testing.T) {
		dirty := filepath.Join(t.TempDir(), "dirty.img")
		copyFile(t, img.Path, dirty)
		if out, err := exec.Command("debugfs", "-w", "-R", "feature needs_recovery", dirty).CombinedOutput(); err != nil {
			t.Fatalf("debugfs: %v\n%s", err, out)
		}
		disk := filepath.Join(t.TempDir(), "disk.img")
		img2 := *img
		img2.Path = dirty
		testdisk.GPTDisk(t, disk, 32*mib, 30, &img2)
		_, _, err := usedExtents(t, disk, readExtents(t, disk), false)
		for _, want := range []string{"partition 1", "at byte 1048576", "ext4", "needs_recovery", "e2fsck", "shut it down properly", "--raw"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("capture of an ext4 that needs recovery: got %v, want an error naming %q", err, want)
			}
		}
		if _, _, err := usedExtents(t, disk, readExtents(t, disk), true); err != nil {
			t.Errorf("with raw: %v, want it accepted", err)
		}
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
