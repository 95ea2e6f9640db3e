package fsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Signatures. A partition reformatted without erasing the old file
// system's superblock carries two signatures: mtools' mformat, for one,
// writes a FAT32 boot sector and FATs but leaves an ext4 superblock at byte
// 1024 and its bitmaps past the FATs untouched. Reading the stale one's map
// would call the live one's data free, so Read first lists every signature
// it knows (its own file systems and the common ones it does not read, as
// blkid -p does) and reads a map only when exactly one is found. With two
// or more, blkid -p says "ambivalent result" and so does Read: ErrUnknown,
// the partition is stored whole.

// signature is one thing that may be found on a partition.
type signature struct {
	name  string // blkid's TYPE
	found func(p *probeData) bool
}

// probeData holds the bytes the signatures are looked for in: the first
// 68 KiB of the partition and the last 128 KiB (where md RAID 0.90 and 1.0
// keep their superblocks).
type probeData struct {
	size int64
	head []byte
	tail []byte // the last len(tail) bytes of the partition
}

// at returns n bytes of the head at off, or nil when they lie past it.
func (p *probeData) at(off, n int) []byte {
	if off < 0 || off+n > len(p.head) {
		return nil
	}
	return p.head[off : off+n]
}

// atEnd returns n bytes at off (from the partition start) from the tail,
// or nil when they are not in it.
func (p *probeData) atEnd(off int64, n int) []byte {
	start := p.size - int64(len(p.tail))
	if off < start || off+int64(n) > p.size {
		return nil
	}
	return p.tail[off-start : off-start+int64(n)]
}

const (
	probeHead = 68 << 10
	probeTail = 128 << 10
	mdMagic   = 0xa92b4efc

	// bitlockerToGoGUID is 4967d63b-2e29-4ad8-8399-f6a339e3d001 as
	// stored at byte 424 of a BitLocker To Go boot sector.
	bitlockerToGoGUID = "\x3b\xd6\x67\x49\x29\x2e\xd8\x4a\x83\x99\xf6\xa3\x39\xe3\xd0\x01"
)

var signatures = []signature{
	{"ext", func(p *probeData) bool {
		sb := p.at(extSBOffset, extSBSize)
		if sb == nil || binary.LittleEndian.Uint16(sb[sbMagic:]) != extMagic {
			return false
		}
		// As libblkid: the magic alone is two bytes that a FAT may hold.
		le := binary.LittleEndian
		return le.Uint32(sb[sbLogBlockSize:]) <= 6 && le.Uint32(sb[sbBlocksPerGroup:]) != 0 &&
			le.Uint32(sb[sbRevLevel:]) <= 1
	}},
	{"vfat", func(p *probeData) bool {
		b := p.at(0, 512)
		if b == nil || string(b[3:11]) == "EXFAT   " {
			return false
		}
		_, err := parseFATBoot(b, p.size)
		return !errors.Is(err, ErrUnknown)
	}},
	{"exfat", func(p *probeData) bool {
		b := p.at(0, 512)
		return b != nil && string(b[3:11]) == "EXFAT   " && b[510] == 0x55 && b[511] == 0xAA
	}},
	{"ntfs", func(p *probeData) bool {
		b := p.at(0, 512)
		return b != nil && string(b[3:11]) == "NTFS    " && b[510] == 0x55 && b[511] == 0xAA
	}},
	{"BitLocker", func(p *probeData) bool {
		b := p.at(0, 512)
		if b == nil {
			return false
		}
		if string(b[3:11]) == "-FVE-FS-" {
			return true // Vista, 7 and later on NTFS
		}
		// BitLocker To Go: a FAT32 "discovery volume" whose boot sector
		// names the To Go GUID and the offset of the FVE metadata; the
		// encrypted volume is not the FAT's to describe.
		if string(b[:11]) != "\xeb\x58\x90MSWIN4.1" {
			return false
		}
		if string(b[424:440]) == bitlockerToGoGUID {
			return true
		}
		fve := binary.LittleEndian.Uint64(b[440:])
		return fve < probeHead-8 && string(p.at(int(fve), 8)) == "-FVE-FS-"
	}},
	{"swap", func(p *probeData) bool { return swapSignature(p.head, true) }},
	{"LVM2_member", func(p *probeData) bool {
		for sector := range 4 {
			if b := p.at(sector*512, 8); b != nil && string(b) == "LABELONE" {
				return true
			}
		}
		return false
	}},
	{"crypto_LUKS", func(p *probeData) bool {
		b := p.at(0, 6)
		return b != nil && string(b) == "LUKS\xba\xbe"
	}},
	{"xfs", func(p *probeData) bool {
		b := p.at(0, 4)
		return b != nil && string(b) == "XFSB"
	}},
	{"btrfs", func(p *probeData) bool {
		b := p.at(65536+64, 8)
		return b != nil && string(b) == "_BHRfS_M"
	}},
	{"iso9660", func(p *probeData) bool {
		b := p.at(32769, 5)
		return b != nil && string(b) == "CD001"
	}},
	{"bcache", func(p *probeData) bool {
		b := p.at(4096+24, 16)
		return b != nil && string(b) == "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"
	}},
	{"linux_raid_member", func(p *probeData) bool {
		// Metadata 1.1 at byte 0, 1.2 at 4096; 1.0 8 KiB before the end
		// (4 KiB aligned); 0.90 in the last 64 KiB-aligned 64 KiB.
		for _, b := range [][]byte{
			p.at(0, 4),
			p.at(4096, 4),
			p.atEnd((p.size-8192)&^4095, 4),
			p.atEnd((p.size&^65535)-65536, 4),
		} {
			if b != nil && binary.LittleEndian.Uint32(b) == mdMagic {
				return true
			}
		}
		return false
	}},
}

// probe returns the names of the signatures found on the partition.
func probe(r io.ReaderAt, size int64) ([]string, error) {
	p := &probeData{size: size}
	p.head = make([]byte, min(size, probeHead))
	if err := extReadAt(r, p.head, 0); err != nil {
		return nil, fmt.Errorf("read the first %d bytes to look for file system signatures: %w", len(p.head), err)
	}
	if size > probeHead {
		p.tail = make([]byte, min(size-probeHead, probeTail))
		off := size - int64(len(p.tail))
		if err := extReadAt(r, p.tail, off); err != nil {
			return nil, fmt.Errorf("read the last %d bytes (at byte %d) to look for RAID signatures: %w", len(p.tail), off, err)
		}
	}
	var found []string
	for _, s := range signatures {
		if s.found(p) {
			found = append(found, s.name)
		}
	}
	if len(found) == 0 && swapSignature(p.head, false) {
		found = []string{"swap"}
	}
	return found, nil
}

// swapSignature reports whether head, the first bytes of a partition,
// holds a swap area: a signature at the end of a page of 4 to 64 KiB and,
// for version 1 (and the hibernation signatures written over it), the
// header's version field still 1, as libblkid wants. A file system made
// over a swap area of 64 KiB pages may leave the signature at byte 65526;
// its own structures overwrite the version field.
//
// Without strict, a version 1 signature over any header counts: Read
// hands such a partition to the swap reader when no other signature is
// found, and the swap reader says what is wrong with the header.
func swapSignature(head []byte, strict bool) bool {
	for page := 4096; page <= len(head) && page <= 65536; page *= 2 {
		sig := head[page-10 : page]
		if string(sig) == "SWAP-SPACE" {
			return true // version 0: no header
		}
		for _, s := range swapSignatures {
			if bytes.HasPrefix(sig, []byte(s.sig)) {
				v := head[swapVersionOff : swapVersionOff+4]
				if !strict || binary.LittleEndian.Uint32(v) == 1 || binary.BigEndian.Uint32(v) == 1 {
					return true
				}
			}
		}
	}
	return false
}
