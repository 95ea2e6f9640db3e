package snapshot

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestHoleFinder(t *testing.T) {
	const mib = 1 << 20
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(8 * mib)
	f.WriteAt([]byte("data"), 3*mib+100)
	h := newHoleFinder(f)
	if h == nil {
		t.Fatal("no hole finder for a regular file")
	}
	probe := h.covers(0, mib)
	if !probe {
		t.Skip("this file system reports no holes (SEEK_DATA finds data everywhere)")
	}
	for _, tc := range []struct {
		off, n int64
		want   bool
	}{
		{0, mib, true}, {mib, mib, true}, {2 * mib, mib, true},
		{3 * mib, mib, false}, // holds the data
		{2 * mib, 2 * mib, false},
		{4 * mib, mib, true}, {7 * mib, mib, true}, // after the data, to the end
		{0, mib, true}, // asking again from the start re-queries
	} {
		if got := h.covers(tc.off, tc.n); got != tc.want {
			t.Errorf("covers(%d MiB, %d MiB) = %v, want %v", tc.off/mib, tc.n/mib, got, tc.want)
		}
	}
	if newHoleFinder(strings.NewReader("not a file")) != nil {
		t.Error("hole finder for a non-file source")
	}
}

func TestSegmentNamesSortInOrder(t *testing.T) {
	for _, tc := range []struct {
		chunks      int
		segmentSize int64
		want        int
	}{
		{10, DefaultSegmentSize, 3},
		{999, int64(FrameBound(MinChunkSize)), 3},
		{5000, int64(FrameBound(MinChunkSize)), 4},
	} {
		m := &Manifest{ChunkSize: MinChunkSize, SegmentSize: tc.segmentSize}
		for range tc.chunks {
			m.Chunks = append(m.Chunks, Chunk{Length: MinChunkSize})
		}
		if got := segmentDigits(m); got != tc.want {
			t.Errorf("%d chunks in segments of %d: %d digits, want %d", tc.chunks, tc.segmentSize, got, tc.want)
		}
	}
	if a, b := segmentName(999, 4), segmentName(1000, 4); a >= b {
		t.Errorf("%s sorts after %s", a, b)
	}
}

// TestCaptureSyncsDirectory runs a capture under strace and checks that
// the snapshot directory is flushed (fsync on the directory) after
// manifest.json is renamed into place: otherwise a power cut can lose the
// manifest of a capture that reported success.
func TestCaptureSyncsDirectory(t *testing.T) {
	if dir := os.Getenv("REWIND_TEST_CAPTURE_DIR"); dir != "" {
		key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
		src := bytes.NewReader(bytes.Repeat([]byte("rewind"), 100000))
		if _, err := Capture(context.Background(), src, dir, CaptureOptions{DiskSize: src.Size(), ChunkSize: MinChunkSize, SignKey: key}); err != nil {
			t.Fatal(err)
		}
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "snap")
	cmd := exec.Command(strace, "-f", "-y", "-e", "trace=fsync,rename,renameat,renameat2", os.Args[0], "-test.run=^TestCaptureSyncsDirectory$")
	cmd.Env = append(os.Environ(), "REWIND_TEST_CAPTURE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("strace cannot trace here: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	renamed := -1
	for i, l := range lines {
		if strings.Contains(l, "rename") && strings.Contains(l, ManifestName+".tmp") {
			renamed = i
		}
	}
	if renamed < 0 {
		t.Fatalf("no rename of %s.tmp in the trace:\n%s", ManifestName, out)
	}
	// strace -f splits a call another thread interrupts into
	// "[pid N] fsync(5<dir> <unfinished ...>" and "[pid N] <... fsync
	// resumed>) = 0".
	unfinished := map[string]bool{}
	for _, l := range lines[renamed+1:] {
		pid, _, _ := strings.Cut(l, "]")
		switch {
		case strings.Contains(l, "fsync(") && strings.Contains(l, "<"+dir+">") && strings.Contains(l, "= 0"):
			return
		case strings.Contains(l, "fsync(") && strings.Contains(l, "<"+dir+">") && strings.Contains(l, "<unfinished"):
			unfinished[pid] = true
		case strings.Contains(l, "<... fsync resumed>") && unfinished[pid] && strings.Contains(l, "= 0"):
			return
		}
	}
	t.Errorf("capture did not fsync %s after renaming %s into it; trace after the rename:\n%s", dir, ManifestName, strings.Join(lines[renamed:], "\n"))
}

// TestCaptureRefusesBadLayoutFirst: a layout that restore would refuse
// is refused before the snapshot directory is even created.
func TestCaptureRefusesBadLayoutFirst(t *testing.T) {
	const size = 4 << 20
	tests := []struct {
		name    string
		layout  *Layout
		extents []Extent
		wantErr string
	}{
		{"partition without extent", &Layout{Table: "gpt", LogicalSectorSize: 512, PhysicalSectorSize: 512, DiskSize: size,
			Partitions: []Partition{{Number: 1, Start: 2048, Size: 2048, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}}},
			[]Extent{{Kind: ExtentBootArea, Offset: 0, Length: 440}}, "partition 1 has no extent"},
		{"partition at 2^55", &Layout{Table: "gpt", LogicalSectorSize: 512, PhysicalSectorSize: 512, DiskSize: size,
			Partitions: []Partition{{Number: 1, Start: 1 << 55, Size: 8, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}}},
			[]Extent{{Kind: ExtentPartition, Offset: 0, Length: 4096, Partition: 1}}, "does not lie inside the disk"},
		{"boot area on the GPT header", &Layout{Table: "gpt", LogicalSectorSize: 512, PhysicalSectorSize: 512, DiskSize: size},
			[]Extent{{Kind: ExtentBootArea, Offset: 0, Length: 1024}}, "lies on table sectors"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "snap")
			_, err := Capture(context.Background(), bytes.NewReader(make([]byte, size)), dir, CaptureOptions{DiskSize: size, ChunkSize: MinChunkSize, Layout: tc.layout, Extents: tc.extents})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("capture: got %v, want an error containing %q", err, tc.wantErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s exists after a refused capture (%v): nothing may be written", dir, err)
			}
		})
	}
}
