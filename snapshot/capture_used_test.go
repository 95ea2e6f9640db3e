package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// rebuild puts every chunk of the snapshot in dir at its offset on a disk
// of zeros, checking each frame's hash: what a restore writes.
func rebuild(t *testing.T, dir string) ([]byte, *Manifest) {
	t.Helper()
	s, err := Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer s.Close()
	m := s.Manifest
	disk := make([]byte, m.DiskSize)
	for i, c := range m.Chunks {
		frame, err := s.ReadFrame(context.Background(), i, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CheckFrame(i, frame); err != nil {
			t.Fatal(err)
		}
		if err := DecodeFrame(disk[c.Offset:c.Offset+c.Length], frame); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	return disk, m
}

// storedFrames is every stored frame of the snapshot in dir, decompressed
// and concatenated: what `cat data.* | lz4 -dc` gives.
func storedFrames(t *testing.T, dir string) []byte {
	t.Helper()
	disk, m := rebuild(t, dir)
	var all []byte
	for _, c := range m.Chunks {
		all = append(all, disk[c.Offset:c.Offset+c.Length]...)
	}
	return all
}

// recordingReader is a real in-memory disk that records every read.
type recordingReader struct {
	r     *bytes.Reader
	mu    sync.Mutex
	reads []Range
}

func (r *recordingReader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	r.reads = append(r.reads, Range{Offset: off, Length: int64(len(p))})
	r.mu.Unlock()
	return r.r.ReadAt(p, off)
}

// TestCaptureFree captures a disk of random bytes whose "file system"
// leaves free ranges of every kind: long ones become unused ranges that
// are neither read nor stored, short ones are stored as zeros, ranges not
// aligned to 4096-byte sectors are trimmed to them. The deleted data (the
// random bytes in the free ranges) appears nowhere in the stored frames,
// and each chunk is read at most once.
func TestCaptureFree(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	const size = 8 * mib
	disk := make([]byte, size)
	if _, err := rand.Read(disk); err != nil {
		t.Fatal(err)
	}
	free := []Range{
		{Offset: 4 * kib, Length: 4 * kib},               // short gap: stored as zeros
		{Offset: 64 * kib, Length: 64 * kib},             // exactly the minimum: unused
		{Offset: 1*mib + 512, Length: 200 * kib},         // unaligned: trimmed to 1 MiB+4 KiB .. 1 MiB+200 KiB
		{Offset: 2 * mib, Length: 3 * mib},               // spans chunks: the middle chunk is never read
		{Offset: 5*mib + 4*kib, Length: 60 * kib},        // short
		{Offset: 6*mib - 512, Length: 1024},              // across a chunk boundary, short
		{Offset: size - 256*kib, Length: 256*kib - 4096}, // near the end
	}
	wantUnused := []Range{
		{Offset: 64 * kib, Length: 64 * kib},
		{Offset: 1*mib + 4*kib, Length: 196 * kib},
		{Offset: 2 * mib, Length: 3 * mib},
		{Offset: size - 256*kib, Length: 256*kib - 4096},
	}
	want := slices.Clone(disk)
	for _, r := range free {
		clear(want[r.Offset:r.End()])
	}
	for _, sector := range []int{512, 4096} {
		t.Run(fmt.Sprintf("%d-byte sectors", sector), func(t *testing.T) {
			src := &recordingReader{r: bytes.NewReader(disk)}
			dir := filepath.Join(t.TempDir(), "snap")
			var progressTotal int64
			ext := Extent{Kind: ExtentDisk, Offset: 0, Length: size, FS: "ext4", Capture: CaptureUsed}
			m, err := Capture(context.Background(), src, dir, CaptureOptions{
				DiskSize: size, ChunkSize: 1 * mib, Extents: []Extent{ext}, Free: [][]Range{free},
				Layout:   &Layout{Table: "none", LogicalSectorSize: sector, PhysicalSectorSize: sector, DiskSize: size},
				Progress: func(_, total int64) { progressTotal = total },
			})
			if err != nil {
				t.Fatal(err)
			}
			wantU := wantUnused
			if sector == 512 {
				wantU = slices.Clone(wantUnused)
				wantU[1] = Range{Offset: 1*mib + 512, Length: 200 * kib}
			}
			if got := m.Extents[0].Unused; !slices.Equal(got, wantU) {
				t.Errorf("extents[0].unused = %v, want %v", got, wantU)
			}
			stored := size - m.UnusedBytes()
			if got := m.DataBytes(); got != stored {
				t.Errorf("DataBytes = %d, want %d (the extent minus its unused ranges)", got, stored)
			}
			if progressTotal != stored {
				t.Errorf("progress total = %d, want the %d stored bytes", progressTotal, stored)
			}

			got, _ := rebuild(t, dir)
			if !bytes.Equal(got, want) {
				i := firstDifference(got, want)
				t.Errorf("restored disk differs from the source with its free ranges zeroed, first at byte %d", i)
			}
			frames := storedFrames(t, dir)
			for _, r := range free {
				pattern := disk[r.Offset : r.Offset+min(r.Length, 512)]
				if bytes.Contains(frames, pattern) {
					t.Errorf("the deleted bytes of free range at %d appear in the stored frames", r.Offset)
				}
			}

			// No read touches an unused range; a chunk is at most one read.
			perChunk := map[int]int{}
			for _, r := range src.reads {
				for _, u := range m.Extents[0].Unused {
					if r.Offset < u.End() && u.Offset < r.End() {
						t.Errorf("read of %d bytes at %d touches the unused range %v", r.Length, r.Offset, u)
					}
				}
				if i := m.ChunkAt(r.Offset); i >= 0 {
					perChunk[i]++
				}
			}
			for i, n := range perChunk {
				if n > 1 {
					t.Errorf("chunk %d (offset %d) was read %d times, want one read", i, m.Chunks[i].Offset, n)
				}
			}
		})
	}
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCaptureFreeChunkNotRead checks that a chunk lying in a free gap
// shorter than the minimum unused run (here the short last chunk of the
// extent) is stored as zeros without being read, and that of a chunk
// whose free bytes are at one end only the used bytes are read.
func TestCaptureFreeChunkNotRead(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	ext := Extent{Kind: ExtentDisk, Offset: 0, Length: mib + 8*kib, Capture: CaptureUsed}
	gap := Range{Offset: mib - 4*kib, Length: 12 * kib}
	disk := make([]byte, ext.Length)
	rand.Read(disk)
	src := &recordingReader{r: bytes.NewReader(disk)}
	dir := filepath.Join(t.TempDir(), "s")
	m, err := Capture(context.Background(), src, dir, CaptureOptions{
		DiskSize: ext.Length, ChunkSize: 64 * kib, Extents: []Extent{ext}, Free: [][]Range{{gap}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Extents[0].Unused; got != nil {
		t.Errorf("unused = %v, want none (the free gap is shorter than 64 KiB)", got)
	}
	last := m.Chunks[len(m.Chunks)-1]
	if last.Offset != mib || !last.Zero {
		t.Errorf("last chunk at %d zero=%v, want the chunk at %d stored as zeros", last.Offset, last.Zero, mib)
	}
	for _, r := range src.reads {
		if r.Offset < gap.End() && gap.Offset < r.End() {
			t.Errorf("read of %d bytes at %d touches the free gap %v", r.Length, r.Offset, gap)
		}
	}
	got, _ := rebuild(t, dir)
	want := slices.Clone(disk)
	clear(want[gap.Offset:gap.End()])
	if !bytes.Equal(got, want) {
		t.Errorf("rebuilt disk differs from the source with the gap zeroed, first at byte %d", firstDifference(got, want))
	}
}

// TestUnusedFromFree checks the minimum unused run: 64 KiB, doubled while
// the extent would have more than max(length/chunk_size, 1024) stored runs.
func TestUnusedFromFree(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	// n free ranges of length each, one every stride bytes from 1 MiB on.
	ranges := func(n int, length, stride int64) []Range {
		var r []Range
		for i := range int64(n) {
			r = append(r, Range{Offset: mib + i*stride, Length: length})
		}
		return r
	}
	tests := []struct {
		name        string
		ext         Extent
		free        []Range
		chunk       int64
		wantMinRun  int64
		wantUnused  int
		wantMaxRuns int
	}{
		{"few long ranges", Extent{Offset: 0, Length: 64 * mib}, ranges(10, 128*kib, mib), 4 * mib, 64 * kib, 10, 11},
		{"short gaps are not unused", Extent{Offset: 0, Length: 64 * mib}, ranges(100, 60*kib, 128*kib), 4 * mib, 64 * kib, 0, 1},
		{"1024 runs allowed", Extent{Offset: 0, Length: 256 * mib}, ranges(1023, 64*kib, 128*kib), 4 * mib, 64 * kib, 1023, 1024},
		{"1025 runs: doubled", Extent{Offset: 0, Length: 256 * mib}, ranges(1024, 64*kib, 192*kib), 4 * mib, 128 * kib, 0, 1},
		{"doubled until under the bound", Extent{Offset: 0, Length: 1024 * mib},
			append(ranges(2000, 64*kib, 256*kib), Range{Offset: 600 * mib, Length: 200 * kib}), 4 * mib, 128 * kib, 1, 2},
		{"length/chunk bound above 1024", Extent{Offset: 0, Length: 2048 * mib}, ranges(2000, 64*kib, 256*kib), 64 * kib, 64 * kib, 2000, 2001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ext.Kind, tt.ext.Capture = ExtentDisk, CaptureUsed
			unused, minRun := unusedFromFree(tt.ext, tt.free, 512, tt.chunk)
			if minRun != tt.wantMinRun || len(unused) != tt.wantUnused {
				t.Errorf("minimum run %d KiB with %d unused ranges, want %d KiB with %d", minRun/kib, len(unused), tt.wantMinRun/kib, tt.wantUnused)
			}
			tt.ext.Unused = unused
			if runs := len(tt.ext.StoredRuns()); runs > tt.wantMaxRuns || runs > max(int(tt.ext.Length/tt.chunk), 1024) {
				t.Errorf("%d stored runs, want at most %d", runs, tt.wantMaxRuns)
			}
		})
	}
}

// TestCaptureFreeRefused feeds Capture free lists that no file system
// reader returns: each is refused naming the extent and the range, and
// nothing is written.
func TestCaptureFreeRefused(t *testing.T) {
	const mib = 1 << 20
	used := Extent{Kind: ExtentPartition, Offset: mib, Length: 2 * mib, Partition: 1, FS: "ext4", Capture: CaptureUsed}
	layout := &Layout{Table: "gpt", LogicalSectorSize: 512, PhysicalSectorSize: 512, DiskSize: 4 * mib,
		FirstUsableLBA: 34, LastUsableLBA: 8158, PartitionEntries: 128, PartitionEntriesLBA: 2,
		DiskGUID:   "5E3C9D4A-1B2C-4D5E-8F90-A1B2C3D4E5F6",
		Partitions: []Partition{{Number: 1, Start: 2048, Size: 4096, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", GUID: "1A2B3C4D-5E6F-4A1B-8C2D-3E4F5A6B7C8D"}}}
	boot := Extent{Kind: ExtentBootArea, Offset: 0, Length: 440}
	whole := used
	whole.Capture = ""
	preset := used
	preset.Unused = []Range{{Offset: mib, Length: 512}}
	r := func(off, n int64) Range { return Range{Offset: off, Length: n} }
	tests := []struct {
		name    string
		extents []Extent
		free    [][]Range
		wantErr string
	}{
		{"one list too few", []Extent{boot, used}, [][]Range{nil}, "1 free lists for 2 extents"},
		{"not 512-byte units", []Extent{used}, [][]Range{{r(mib+100, 512)}}, "extents[0] (partition 1): free range 0 (offset 1048676, length 512)"},
		{"empty range", []Extent{used}, [][]Range{{r(mib, 0)}}, "free range 0 (offset 1048576, length 0)"},
		{"before the extent", []Extent{used}, [][]Range{{r(mib-512, 1024)}}, "leaves the extent"},
		{"past the extent", []Extent{used}, [][]Range{{r(2*mib, 2*mib)}}, "leaves the extent"},
		{"overflowing", []Extent{used}, [][]Range{{r(2*mib, 1<<62)}}, "leaves the extent"},
		{"out of order", []Extent{used}, [][]Range{{r(2*mib, 512), r(mib, 512)}}, "free range 1 (offset 1048576, length 512) is out of order"},
		{"adjacent", []Extent{used}, [][]Range{{r(mib, 512), r(mib+512, 512)}}, "touches"},
		{"all free", []Extent{used}, [][]Range{{r(mib, 2*mib)}}, "the whole extent is free"},
		{"boot area", []Extent{boot, used}, [][]Range{{r(0, 512)}, nil}, "extents[0] (boot-area): has free ranges"},
		{"extent stored whole", []Extent{whole}, [][]Range{{r(mib, 512)}}, `not captured "used"`},
		{"unused given too", []Extent{preset}, [][]Range{{r(2*mib, 512)}}, "already has unused ranges"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "snap")
			_, err := Capture(context.Background(), bytes.NewReader(make([]byte, 4*mib)), dir, CaptureOptions{
				DiskSize: 4 * mib, Layout: layout, Extents: tt.extents, Free: tt.free})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "nothing was written") {
				t.Errorf("got %v, want an error containing %q and saying nothing was written", err, tt.wantErr)
			}
			if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
				t.Errorf("%s exists after a refused capture (stat: %v)", dir, serr)
			}
		})
	}
}
