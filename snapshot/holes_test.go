package snapshot

import (
	"os"
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
