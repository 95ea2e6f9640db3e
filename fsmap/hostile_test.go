package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
)

// bigReadRefuser is a partition of zeros (after head) that refuses any
// single read larger than limit, so a reader that asks for gigabytes fails
// without the test touching that memory.
type bigReadRefuser struct {
	zeroTail
	limit   int
	biggest int
}

func (b *bigReadRefuser) ReadAt(p []byte, off int64) (int, error) {
	b.biggest = max(b.biggest, len(p))
	if len(p) > b.limit {
		return 0, fmt.Errorf("read of %d bytes at %d refused by the test", len(p), off)
	}
	return b.zeroTail.ReadAt(p, off)
}

// extHostileSuper is a clean ext superblock (no checksums) with the
// given geometry, for crafted partitions.
func extHostileSuper(logBS uint32, blocks uint64, perGroup, inodesPerGroup uint32, descSize uint16) []byte {
	le := binary.LittleEndian
	head := make([]byte, 4096)
	sb := head[extSBOffset:]
	bs := uint64(1024) << logBS
	first := uint32(0)
	if bs == 1024 {
		first = 1
	}
	groups := (blocks - uint64(first) + uint64(perGroup) - 1) / uint64(perGroup)
	le.PutUint32(sb[sbInodesCount:], uint32(groups)*inodesPerGroup)
	le.PutUint32(sb[sbBlocksCountLo:], uint32(blocks))
	le.PutUint32(sb[sbBlocksCountHi:], uint32(blocks>>32))
	le.PutUint32(sb[sbFirstDataBlock:], first)
	le.PutUint32(sb[sbLogBlockSize:], logBS)
	le.PutUint32(sb[sbLogClusterSize:], logBS)
	le.PutUint32(sb[sbBlocksPerGroup:], perGroup)
	le.PutUint32(sb[sbClustersPerGrp:], perGroup)
	le.PutUint32(sb[sbInodesPerGroup:], inodesPerGroup)
	le.PutUint16(sb[sbMagic:], extMagic)
	le.PutUint16(sb[sbState:], stateValid)
	le.PutUint32(sb[sbRevLevel:], 1)
	le.PutUint16(sb[sbInodeSize:], 128)
	incompat := uint32(incompatFiletype | incompatExtents)
	if descSize >= 64 {
		incompat |= incompat64Bit
		le.PutUint16(sb[sbDescSize:], descSize)
	}
	le.PutUint32(sb[sbFeatureIncompat:], incompat)
	return head
}

// TestReadHostileBounded: crafted superblocks whose geometry asks for huge
// tables get an error without the reader allocating more than a bounded
// amount of memory.
func TestReadHostileBounded(t *testing.T) {
	const budget = 200 << 20 // bytes Read may allocate for any of these
	for _, tt := range []struct {
		name string
		head []byte
		size int64
	}{
		// 2^22 groups of 8 one-KiB blocks with 1024-byte descriptors: a
		// descriptor table of 4 GiB on a 32 GiB partition.
		{"ext 4 GiB descriptor table", extHostileSuper(0, 1+8<<22, 8, 1, 1024), (1 + 8<<22) << 10},
		// The same with 64-byte descriptors: 256 MiB.
		{"ext 256 MiB descriptor table", extHostileSuper(0, 1+8<<22, 8, 1, 64), (1 + 8<<22) << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &bigReadRefuser{zeroTail: zeroTail{tt.head, tt.size}, limit: budget}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			m, err := Read(r, tt.size)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("Read (%s): got a %s map, want an error", tt.name, m.FS)
			}
			if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrDamaged) {
				t.Errorf("Read (%s): got %v, want ErrUnsupported or ErrDamaged", tt.name, err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > budget {
				t.Errorf("Read (%s): allocated %d MiB (largest read %d MiB), want at most %d MiB; error %v", tt.name, got>>20, r.biggest>>20, budget>>20, err)
			}
		})
	}
}

// TestFreeListBounded: a free list fed more ranges than maxFreeRanges
// keeps at most that many, keeps the long ones, and lists nothing that was
// not added (dropping a free range only stores more).
func TestFreeListBounded(t *testing.T) {
	for _, tt := range []struct {
		name  string
		n     int64 // ranges added
		every int64 // every this many a long range
	}{
		{"few ranges are kept as they are", 1000, 0},
		{"every other block free", 3 * maxFreeRanges, 0},
		{"every other block free, some long gaps", 3 * maxFreeRanges, 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var l freeList
			var added, long []Range
			off := int64(0)
			for i := range tt.n {
				r := Range{Offset: off, Length: 512}
				if tt.every > 0 && i%tt.every == 0 {
					r.Length = 1 << 20
					long = append(long, r)
				}
				l.add(r.Offset, r.Length)
				if tt.n <= 1000 {
					added = append(added, r)
				}
				off += r.Length + 512
			}
			got := l.done()
			if len(got) > maxFreeRanges {
				t.Fatalf("%d ranges added: got %d ranges, want at most %d", tt.n, len(got), maxFreeRanges)
			}
			if added != nil && len(got) != len(added) {
				t.Errorf("%d ranges added: got %d back, want all of them", tt.n, len(got))
			}
			m := &Map{Size: off, Free: got}
			if err := m.check(); err != nil {
				t.Errorf("%d ranges added: the list breaks Map's invariants: %v", tt.n, err)
			}
			// Every long range is kept.
			j := 0
			for _, r := range got {
				for j < len(long) && long[j].Offset < r.Offset {
					t.Fatalf("long free range at %d (%d bytes) was dropped", long[j].Offset, long[j].Length)
				}
				if j < len(long) && long[j] == r {
					j++
				}
			}
			if j != len(long) {
				t.Errorf("%d of %d long free ranges kept, want all", j, len(long))
			}
		})
	}
}

// TestReadFragmentedFATBounded: a FAT32 volume with every other cluster in
// use (4 million clusters of 512 bytes) gives a bounded free list whose
// ranges are all free clusters.
func TestReadFragmentedFATBounded(t *testing.T) {
	tfsNeed(t, "mkfs.vfat")
	img := filepath.Join(t.TempDir(), "frag.img")
	tfsRun(t, "truncate", "-s", "2G", img)
	tfsRun(t, "mkfs.vfat", "-F", "32", "-s", "1", img)
	v, err := parseFATBoot(tfsReadAt(t, img, 0, 512), 2<<30)
	if err != nil {
		t.Fatal(err)
	}
	fat := tfsReadAt(t, img, v.fatStart, int(v.entryBytes(v.clusters+2)))
	for c := int64(3); c < v.clusters+2; c += 2 {
		binary.LittleEndian.PutUint32(fat[4*c:], 0x0FFFFFFF)
	}
	for k := range int64(v.fats) {
		tfsPatch(t, img, v.fatStart+k*v.fatBytes, fat)
	}
	m, err := tfsRead(t, img, 0)
	if err != nil {
		t.Fatalf("Read %s: %v", img, err)
	}
	if len(m.Free) > maxFreeRanges {
		t.Errorf("Read %s (%d clusters, every other one used): got %d free ranges, want at most %d", img, v.clusters, len(m.Free), maxFreeRanges)
	}
	for _, r := range m.Free {
		for off := r.Offset; off < r.Offset+r.Length; off += v.clusterSize {
			c := (off-v.dataStart)/v.clusterSize + 2
			if e := binary.LittleEndian.Uint32(fat[4*c:]); e != 0 {
				t.Fatalf("Read %s: byte %d (cluster %d, FAT entry %#x) listed free", img, off, c, e)
			}
		}
	}
}
