// Package fsmap reads the allocation maps of file systems: which byte
// ranges of a partition hold data and which are free. Capture stores only
// the allocated ranges of a file system it can read (ext2/3/4, FAT12/16/32,
// exFAT, NTFS) and only the header of a swap area.
//
// The caller stores a partition whole on ErrUnknown, ErrDamaged and
// ErrUnsupported (saying why for the last two) and refuses on ErrNotClean.
//
// Everything here reads untrusted bytes: a map is returned only when the
// file system's own structures agree with each other (free counts,
// checksums, the metadata the bitmaps must mark in use); otherwise Read
// returns ErrDamaged and the caller captures the partition whole. A file
// system that is not clean (an ext4 journal that needs recovery, an NTFS
// volume marked dirty) gives ErrNotClean: its bitmaps may not describe
// what is on the disk.
//
// The package imports no other Rewind package.
package fsmap

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Errors Read wraps; test them with errors.Is.
var (
	// ErrUnknown: no file system this package reads was recognised.
	ErrUnknown = errors.New("no file system with a readable allocation map")
	// ErrNotClean: the file system was not cleanly unmounted.
	ErrNotClean = errors.New("file system is not clean")
	// ErrDamaged: the allocation map contradicts the file system's other
	// structures, or lies outside the partition.
	ErrDamaged = errors.New("allocation map is damaged")
	// ErrUnsupported: the file system was recognised but uses a feature
	// this package does not read (ext4 bigalloc, say).
	ErrUnsupported = errors.New("file system feature not supported")
)

// Range is a byte range relative to the start of the partition.
type Range struct {
	Offset int64
	Length int64
}

// Map is the allocation of one file system.
type Map struct {
	// FS is the file system: "ext2", "ext3", "ext4", "vfat", "exfat",
	// "ntfs" or "swap" (blkid's names).
	FS string
	// BlockSize is the allocation unit in bytes: the ext block, the FAT
	// or NTFS cluster, the swap page.
	BlockSize int64
	// Size is the partition size the map was read for.
	Size int64
	// Free lists the ranges that hold no data, sorted, not overlapping,
	// not adjacent, each inside [0, Size) and a multiple of 512 bytes in
	// offset and length. Everything else is in use, including all file
	// system metadata, any bytes past the last block the file system
	// covers (an NTFS backup boot sector) and reserved areas.
	Free []Range
}

// FreeBytes is the sum of the free ranges.
func (m *Map) FreeBytes() int64 {
	var n int64
	for _, r := range m.Free {
		n += r.Length
	}
	return n
}

// Read recognises the file system on r, a partition of size bytes, and
// returns its allocation map. The error wraps ErrUnknown, ErrNotClean,
// ErrDamaged or ErrUnsupported, with the detail (which group, which count) in its text.
//
// A map is read only when the partition carries exactly one known
// signature: with two (a new file system made over an old one that was not
// erased) one of them is stale, and Read returns ErrUnknown naming both.
func Read(r io.ReaderAt, size int64) (*Map, error) {
	found, err := probe(r, size)
	if err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, ErrUnknown
	case 1:
	default:
		return nil, fmt.Errorf("%w: the partition carries %s signatures (blkid -p calls this ambivalent): one is left over from an earlier format; stored whole, to capture only used blocks erase the stale one with wipefs -t", ErrUnknown, strings.Join(found, " and "))
	}
	readers := map[string]func(io.ReaderAt, int64) (*Map, error){
		"ext": readExt, "vfat": readFAT, "exfat": readFAT, "ntfs": readNTFS, "swap": readSwap,
	}
	read := readers[found[0]]
	if read == nil {
		return nil, fmt.Errorf("%w: a %s signature", ErrUnknown, found[0])
	}
	m, err := read(r, size)
	if err != nil {
		return nil, err
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", m.FS, ErrDamaged, err)
	}
	return m, nil
}

// check enforces the invariants documented on Map.Free.
func (m *Map) check() error {
	var end int64
	for i, r := range m.Free {
		if r.Offset < 0 || r.Length <= 0 || r.Length > m.Size-r.Offset {
			return fmt.Errorf("free range %d (offset %d, length %d) leaves the partition of %d bytes", i, r.Offset, r.Length, m.Size)
		}
		if r.Offset%512 != 0 || r.Length%512 != 0 {
			return fmt.Errorf("free range %d (offset %d, length %d) is not in 512-byte units", i, r.Offset, r.Length)
		}
		if i > 0 && r.Offset <= end {
			return fmt.Errorf("free range %d (offset %d) overlaps or touches the one before it", i, r.Offset)
		}
		end = r.Offset + r.Length
	}
	return nil
}

// maxFreeRanges bounds the free list a reader builds (16 MiB of ranges).
// A file system fragmented past it (or crafted, with every other block
// free) has its shortest free ranges left out, which is always safe: what
// is not listed free is stored. Capture keeps far fewer runs anyway (it
// stores short free gaps as zeros to bound the manifest).
const maxFreeRanges = 1 << 20

// freeList collects free byte ranges added in ascending order, merging
// adjacent ones, and keeps at most maxFreeRanges of them: when it is full
// it drops every range shorter than a length it doubles until the list is
// half full, and from then on drops new ranges shorter than that length.
type freeList struct {
	ranges []Range
	minLen int64 // ranges shorter than this are dropped once complete
}

// add appends [off, off+length), merging it with the last range if they
// touch. Ranges must come in ascending order.
func (l *freeList) add(off, length int64) {
	n := len(l.ranges)
	if n > 0 && l.ranges[n-1].Offset+l.ranges[n-1].Length == off {
		l.ranges[n-1].Length += length
		return
	}
	// The last range is complete: keep it only if long enough.
	if n > 0 && l.ranges[n-1].Length < l.minLen {
		l.ranges = l.ranges[:n-1]
	}
	if len(l.ranges) >= maxFreeRanges {
		l.coarsen()
	}
	l.ranges = append(l.ranges, Range{Offset: off, Length: length})
}

// coarsen raises minLen until at most half the list remains.
func (l *freeList) coarsen() {
	for len(l.ranges) > maxFreeRanges/2 {
		l.minLen = max(2*l.minLen, 1024)
		l.ranges = slices.DeleteFunc(l.ranges, func(r Range) bool { return r.Length < l.minLen })
	}
}

// done returns the list, dropping the last range if it is too short.
func (l *freeList) done() []Range {
	if n := len(l.ranges); n > 0 && l.ranges[n-1].Length < l.minLen {
		l.ranges = l.ranges[:n-1]
	}
	return l.ranges
}
