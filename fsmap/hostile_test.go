package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
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
