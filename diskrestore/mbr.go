package diskrestore

// MBR structures, read and written by hand: go-diskfs v1.9.4 neither reads
// nor writes the disk signature at offset 440 nor extended partitions, and
// the whole format is four 16-byte entries.

import (
	"encoding/binary"
	"fmt"
)

const (
	mbrSignatureOffset = 440 // 4-byte disk signature ("label-id")
	mbrTableOffset     = 446
	mbrEntrySize       = 16
	mbrBootSize        = 440 // boot code in front of the signature
	mbrSize            = 512
)

// mbrEntry is one 16-byte MBR or EBR partition entry.
type mbrEntry struct {
	Status byte // 0x80 bootable
	Type   byte
	Start  uint32 // LBA, relative for EBR entries
	Size   uint32
}

func (e mbrEntry) used() bool { return e.Type != 0 }

func isExtendedType(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// parseMBREntries reads the four entries of an MBR or EBR sector. ok is
// false if the sector has no 0x55AA mark or an entry has an invalid status
// byte, the sign that this is not a partition table.
func parseMBREntries(b []byte) (entries [4]mbrEntry, ok bool) {
	if len(b) < mbrSize || b[510] != 0x55 || b[511] != 0xaa {
		return entries, false
	}
	for i := range entries {
		p := b[mbrTableOffset+i*mbrEntrySize:]
		e := mbrEntry{
			Status: p[0],
			Type:   p[4],
			Start:  binary.LittleEndian.Uint32(p[8:12]),
			Size:   binary.LittleEndian.Uint32(p[12:16]),
		}
		if e.Status != 0 && e.Status != 0x80 {
			return entries, false
		}
		if e.Size == 0 && e.Type != mbrTypeProtected {
			// No sectors: no partition, whatever its type says, as for the
			// kernel and libblkid (a deleted entry some tools leave). The
			// sector's bytes are recorded and restored as they are.
			e.Type = 0
		}
		if e.used() && (e.Start == 0 || e.Size == 0) {
			return entries, false
		}
		entries[i] = e
	}
	return entries, true
}

// rawMBREntries decodes the four entries of an MBR-style sector as they
// are, without judging them.
func rawMBREntries(b []byte) (entries [4]mbrEntry) {
	for i := range entries {
		p := b[mbrTableOffset+i*mbrEntrySize:]
		entries[i] = mbrEntry{
			Status: p[0],
			Type:   p[4],
			Start:  binary.LittleEndian.Uint32(p[8:12]),
			Size:   binary.LittleEndian.Uint32(p[12:16]),
		}
	}
	return entries
}

// putMBREntry writes entry i of an MBR/EBR sector b. absStart is the
// entry's absolute first sector, used for its CHS fields, which are
// computed as util-linux and sgdisk do (255 heads, 63 sectors per track).
func putMBREntry(b []byte, i int, e mbrEntry, absStart uint64) {
	p := b[mbrTableOffset+i*mbrEntrySize:]
	p[0] = e.Status
	copy(p[1:4], chs(absStart))
	p[4] = e.Type
	copy(p[5:8], chs(absStart+uint64(e.Size)-1))
	binary.LittleEndian.PutUint32(p[8:12], e.Start)
	binary.LittleEndian.PutUint32(p[12:16], e.Size)
}

// chs encodes an LBA as the 3 CHS bytes of an MBR entry, saturating at
// cylinder 1023, head 254, sector 63.
func chs(lba uint64) []byte {
	const heads, sectors = 255, 63
	c := lba / (heads * sectors)
	h := (lba / sectors) % heads
	s := lba%sectors + 1
	if c > 1023 {
		c, h, s = 1023, heads-1, sectors
	}
	return []byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}

// mbrSignature formats the 4 signature bytes as "0x%08x".
func mbrSignature(b []byte) string {
	return fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(b[mbrSignatureOffset:]))
}

// parseMBRSignature parses "0x1234abcd" (the "0x" is optional).
func parseMBRSignature(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	var v uint32
	t := s
	if len(t) > 2 && (t[:2] == "0x" || t[:2] == "0X") {
		t = t[2:]
	}
	if _, err := fmt.Sscanf(t, "%x", &v); err != nil || len(t) > 8 {
		return 0, fmt.Errorf("MBR signature %q is not 8 hex digits", s)
	}
	return v, nil
}

// parseMBRType parses a layout's MBR type "0x83" (or "83").
func parseMBRType(s string) (byte, error) {
	v, err := parseMBRSignature(s)
	if err != nil || v == 0 || v > 0xff {
		return 0, fmt.Errorf("MBR partition type %q is not a byte like 0x83", s)
	}
	return byte(v), nil
}
