package diskrestore

// GPT structures, read and written by hand. go-diskfs v1.9.4 keeps the
// entry count, the first usable LBA and the entry array's location in
// unexported fields that it recomputes on Write, so it cannot reproduce a
// table such as one with 56 entries or a first usable LBA of 2048. The
// format is small (UEFI spec 2.10, section 5.3): a 92-byte header with two
// CRC32s, and an array of 128-byte entries.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf16"
)

const (
	gptSignature     = "EFI PART"
	gptRevision      = 0x00010000
	gptHeaderSize    = 92
	gptEntrySize     = 128
	gptNameUnits     = 36 // UTF-16 code units in an entry's name
	gptDefaultCount  = 128
	mbrTypeProtected = 0xee
)

// gptHeader is the on-disk GPT header, primary or backup.
type gptHeader struct {
	MyLBA       uint64
	AltLBA      uint64
	FirstUsable uint64
	LastUsable  uint64
	DiskGUID    [16]byte
	EntriesLBA  uint64
	NumEntries  uint32
	EntrySize   uint32
	EntriesCRC  uint32
}

// parseGPTHeader decodes and checks one header sector: signature, size and
// header CRC. The caller checks the entries' CRC.
func parseGPTHeader(b []byte) (gptHeader, error) {
	var h gptHeader
	if len(b) < gptHeaderSize || string(b[0:8]) != gptSignature {
		return h, fmt.Errorf("no GPT signature")
	}
	size := binary.LittleEndian.Uint32(b[12:16])
	if size < gptHeaderSize || int(size) > len(b) {
		return h, fmt.Errorf("GPT header size %d is invalid", size)
	}
	hdr := bytes.Clone(b[:size])
	want := binary.LittleEndian.Uint32(hdr[16:20])
	clear(hdr[16:20])
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return h, fmt.Errorf("GPT header CRC is 0x%08x, computed 0x%08x", want, got)
	}
	h.MyLBA = binary.LittleEndian.Uint64(b[24:32])
	h.AltLBA = binary.LittleEndian.Uint64(b[32:40])
	h.FirstUsable = binary.LittleEndian.Uint64(b[40:48])
	h.LastUsable = binary.LittleEndian.Uint64(b[48:56])
	copy(h.DiskGUID[:], b[56:72])
	h.EntriesLBA = binary.LittleEndian.Uint64(b[72:80])
	h.NumEntries = binary.LittleEndian.Uint32(b[80:84])
	h.EntrySize = binary.LittleEndian.Uint32(b[84:88])
	h.EntriesCRC = binary.LittleEndian.Uint32(b[88:92])
	if h.EntrySize != gptEntrySize {
		return h, fmt.Errorf("GPT entry size %d is not supported (only %d)", h.EntrySize, gptEntrySize)
	}
	if h.NumEntries == 0 || h.NumEntries > 4096 {
		return h, fmt.Errorf("GPT entry count %d is out of range", h.NumEntries)
	}
	return h, nil
}

// marshal returns the header as one logical sector, CRC filled in.
func (h gptHeader) marshal(sectorSize int) []byte {
	b := make([]byte, sectorSize)
	copy(b[0:8], gptSignature)
	binary.LittleEndian.PutUint32(b[8:12], gptRevision)
	binary.LittleEndian.PutUint32(b[12:16], gptHeaderSize)
	binary.LittleEndian.PutUint64(b[24:32], h.MyLBA)
	binary.LittleEndian.PutUint64(b[32:40], h.AltLBA)
	binary.LittleEndian.PutUint64(b[40:48], h.FirstUsable)
	binary.LittleEndian.PutUint64(b[48:56], h.LastUsable)
	copy(b[56:72], h.DiskGUID[:])
	binary.LittleEndian.PutUint64(b[72:80], h.EntriesLBA)
	binary.LittleEndian.PutUint32(b[80:84], h.NumEntries)
	binary.LittleEndian.PutUint32(b[84:88], gptEntrySize)
	binary.LittleEndian.PutUint32(b[88:92], h.EntriesCRC)
	binary.LittleEndian.PutUint32(b[16:20], crc32.ChecksumIEEE(b[:gptHeaderSize]))
	return b
}

// gptEntrySectors is the number of logical sectors an array of n entries fills.
func gptEntrySectors(n, sectorSize int) uint64 {
	return uint64((n*gptEntrySize + sectorSize - 1) / sectorSize)
}

// gptEntry is one decoded partition entry.
type gptEntry struct {
	Type, GUID  [16]byte
	First, Last uint64
	Attributes  uint64
	Name        string
}

func (e gptEntry) used() bool { return e.Type != [16]byte{} }

func parseGPTEntry(b []byte) gptEntry {
	var e gptEntry
	copy(e.Type[:], b[0:16])
	copy(e.GUID[:], b[16:32])
	e.First = binary.LittleEndian.Uint64(b[32:40])
	e.Last = binary.LittleEndian.Uint64(b[40:48])
	e.Attributes = binary.LittleEndian.Uint64(b[48:56])
	units := make([]uint16, 0, gptNameUnits)
	for i := 0; i < gptNameUnits; i++ {
		u := binary.LittleEndian.Uint16(b[56+2*i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	e.Name = string(utf16.Decode(units))
	return e
}

func (e gptEntry) marshal(b []byte) error {
	units := utf16.Encode([]rune(e.Name))
	if len(units) > gptNameUnits {
		return fmt.Errorf("partition name %q is longer than %d UTF-16 code units", e.Name, gptNameUnits)
	}
	copy(b[0:16], e.Type[:])
	copy(b[16:32], e.GUID[:])
	binary.LittleEndian.PutUint64(b[32:40], e.First)
	binary.LittleEndian.PutUint64(b[40:48], e.Last)
	binary.LittleEndian.PutUint64(b[48:56], e.Attributes)
	for i, u := range units {
		binary.LittleEndian.PutUint16(b[56+2*i:], u)
	}
	return nil
}

// guidString formats a GUID stored in GPT's mixed-endian form the way
// sgdisk and sfdisk print it: upper case, 8-4-4-4-12.
func guidString(b [16]byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:4]),
		binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]),
		b[8:10], b[10:16])
}

// parseGUID parses a textual GUID (either case) into GPT's on-disk form.
func parseGUID(s string) ([16]byte, error) {
	var g [16]byte
	hexs := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || len(hexs) != 32 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("%q is not a GUID (want 8-4-4-4-12 hex digits)", s)
	}
	raw, err := hex.DecodeString(hexs)
	if err != nil {
		return g, fmt.Errorf("%q is not a GUID: %v", s, err)
	}
	// The first three fields are little-endian on disk.
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, nil
}
