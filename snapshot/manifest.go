// Package snapshot defines Rewind's snapshot format: the manifest with its
// disk layout and chunk index, the LZ4 data segments, signing, and readers
// for snapshots in a directory or behind an HTTP(S) server.
//
// The format is a contract between releases; docs/snapshot-format.md is its
// specification. A change that older readers cannot follow must raise
// FormatVersion.
package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Names and identifiers of the format.
const (
	// FormatName is the value of the manifest's "format" field.
	FormatName = "rewind-snapshot"
	// FormatVersion is the manifest version this package writes. Version 2
	// adds each non-zero chunk's raw_sha256; version 3 adds the unused
	// ranges of extents captured used-blocks only. Versions 1 and 2 still
	// read.
	FormatVersion = 3
	// MinFormatVersion is the oldest manifest version this package reads.
	MinFormatVersion = 1
	// ManifestName is the manifest's file name inside a snapshot.
	ManifestName = "manifest.json"
	// SignatureName is the detached ed25519 signature of the manifest's bytes.
	SignatureName = "manifest.json.sig"

	// DefaultChunkSize is the size of the pieces a disk is cut into.
	DefaultChunkSize = 4 << 20
	// DefaultSegmentSize keeps every segment below FAT32's 4 GiB file limit.
	DefaultSegmentSize = 1 << 30
	// MaxChunkSize bounds the memory a reader must be ready to spend per chunk.
	MaxChunkSize = 64 << 20
	// MinChunkSize keeps the index small and chunks a multiple of 4Kn sectors.
	MinChunkSize = 64 << 10
)

// Extent kinds.
const (
	ExtentDisk      = "disk"      // a whole device without a partition table
	ExtentPartition = "partition" // the bytes of one partition
	ExtentBootArea  = "boot-area" // non-zero bytes outside partitions and table sectors
)

// Manifest describes one snapshot: where it came from, the disk layout to
// recreate, the extents captured and the chunk index that locates every
// chunk's LZ4 frame in the segments.
type Manifest struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	Created     time.Time `json:"created"`
	Origin      Origin    `json:"source"`
	DiskSize    int64     `json:"disk_size"`
	ChunkSize   int64     `json:"chunk_size"`
	SegmentSize int64     `json:"segment_size"`
	Compression string    `json:"compression"` // always "lz4-frame"
	Hash        string    `json:"hash"`        // always "sha256"
	Layout      *Layout   `json:"layout,omitempty"`
	Extents     []Extent  `json:"extents"`
	Segments    []Segment `json:"segments"`
	Chunks      []Chunk   `json:"chunks"`
}

// Origin records what was captured.
type Origin struct {
	Path     string `json:"path"`
	Hostname string `json:"hostname,omitempty"`
	Model    string `json:"model,omitempty"`
	Serial   string `json:"serial,omitempty"`
}

// Layout is a disk's partition table as it must be recreated.
// Table is "gpt", "mbr" or "none"; sector numbers are in logical sectors.
type Layout struct {
	Table               string      `json:"table"`
	LogicalSectorSize   int         `json:"logical_sector_size"`
	PhysicalSectorSize  int         `json:"physical_sector_size"`
	DiskSize            int64       `json:"disk_size"`
	DiskGUID            string      `json:"disk_guid,omitempty"`             // GPT
	FirstUsableLBA      uint64      `json:"first_usable_lba,omitempty"`      // GPT
	LastUsableLBA       uint64      `json:"last_usable_lba,omitempty"`       // GPT
	PartitionEntries    int         `json:"partition_entries,omitempty"`     // GPT entry count, usually 128
	PartitionEntriesLBA uint64      `json:"partition_entries_lba,omitempty"` // GPT: first sector of the primary entry array, usually 2
	MBRSignature        string      `json:"mbr_signature,omitempty"`         // MBR, "0x" + 8 hex digits
	Partitions          []Partition `json:"partitions"`
	// MBRTables holds the 64-byte partition entry table (bytes 446..509)
	// of LBA 0 and, on an MBR disk, of every extended boot record in chain
	// order, as the source had them: restore writes them back byte for
	// byte (hybrid MBR entries, boot flags, CHS fields, link slots and
	// types). Optional, version 2; without it the tables are rebuilt from
	// Partitions.
	MBRTables []MBRTable `json:"mbr_tables,omitempty"`
	// MBRReserved is bytes 444..445 of LBA 0 as 4 hex digits, in disk
	// order, when they are not zero. Optional, version 2.
	MBRReserved string `json:"mbr_reserved,omitempty"`
	// Notes says what capture repaired or normalised while reading the
	// table (a damaged primary GPT read from its backup, a disk without a
	// recognised table captured whole). Optional, version 2.
	Notes []string `json:"notes,omitempty"`
}

// MBRTable is the entry table of one MBR-style sector: LBA 0 or an EBR.
type MBRTable struct {
	Sector  uint64 `json:"sector"`  // logical sector
	Entries string `json:"entries"` // bytes 446..509 as 128 hex digits
}

// Partition is one entry of a Layout.
type Partition struct {
	Number     int    `json:"number"`
	Start      uint64 `json:"start"` // first logical sector
	Size       uint64 `json:"size"`  // in logical sectors
	Type       string `json:"type"`  // GPT type GUID, or MBR type as "0x83"
	GUID       string `json:"guid,omitempty"`
	Name       string `json:"name,omitempty"`
	Attributes uint64 `json:"attributes,omitempty"`
	Bootable   bool   `json:"bootable,omitempty"`
	Extended   bool   `json:"extended,omitempty"` // MBR extended container
	Logical    bool   `json:"logical,omitempty"`  // MBR logical partition
	EBR        uint64 `json:"ebr,omitempty"`      // MBR logical: sector of the extended boot record that describes it
	FSType     string `json:"fs_type,omitempty"`
	FSLabel    string `json:"fs_label,omitempty"`
}

// CaptureUsed is Extent.Capture for an extent of which only the blocks its
// file system uses are stored.
const CaptureUsed = "used"

// Extent is a byte range of the disk that the chunks cover, except for
// its Unused ranges.
type Extent struct {
	Kind      string `json:"kind"`
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
	Partition int    `json:"partition,omitempty"`
	// FS is the file system whose allocation map capture read ("ext4",
	// "vfat", "ntfs", "swap"), or that capture recognised but could not
	// read (then Note says why). Version 3.
	FS string `json:"fs,omitempty"`
	// Capture is CaptureUsed when only the blocks the file system uses
	// are stored (of a swap area, only its header); empty when the
	// extent is stored whole. Version 3.
	Capture string `json:"capture,omitempty"`
	// Note says why an extent with a recognised file system was stored
	// whole (a damaged bitmap, an unsupported feature, --raw). Version 3.
	Note string `json:"note,omitempty"`
	// Unused lists the ranges of the extent (absolute disk offsets) that
	// are not stored and restore as zeros: sorted, inside the extent, not
	// overlapping or adjacent, in 512-byte units. Only with Capture
	// CaptureUsed. Version 3.
	Unused []Range `json:"unused,omitempty"`
}

// Range is a byte range of the disk.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Offset + r.Length }

// StoredRuns returns the ranges of the extent that chunks cover: the
// extent minus its unused ranges, in disk order. An extent stored whole
// is one run. The extent must be valid (Manifest.Validate).
func (e Extent) StoredRuns() []Range {
	if len(e.Unused) == 0 {
		return []Range{{Offset: e.Offset, Length: e.Length}}
	}
	runs := make([]Range, 0, len(e.Unused)+1)
	at := e.Offset
	for _, u := range e.Unused {
		if u.Offset > at {
			runs = append(runs, Range{Offset: at, Length: u.Offset - at})
		}
		at = u.End()
	}
	if end := e.Offset + e.Length; end > at {
		runs = append(runs, Range{Offset: at, Length: end - at})
	}
	return runs
}

// UnusedBytes is the sum of the extent's unused ranges.
func (e Extent) UnusedBytes() int64 {
	var n int64
	for _, u := range e.Unused {
		n += u.Length
	}
	return n
}

// spans reports whether e is of the kind, range and partition given.
func (e Extent) spans(kind string, off, n int64, partition int) bool {
	return e.Kind == kind && e.Offset == off && e.Length == n && e.Partition == partition
}

// Segment is one data file of the snapshot.
type Segment struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Chunk locates one chunk's LZ4 frame and says where its bytes go.
type Chunk struct {
	Offset      int64  `json:"offset"`       // disk offset of the raw bytes
	Length      int64  `json:"length"`       // raw (decompressed) length
	Segment     int    `json:"segment"`      // index into Segments
	FrameOffset int64  `json:"frame_offset"` // offset of the frame in the segment
	FrameLength int64  `json:"frame_length"` // stored length of the frame
	Zero        bool   `json:"zero,omitempty"`
	SHA256      string `json:"sha256"` // of the stored frame bytes
	// RawSHA256 is the SHA-256 of the raw (decompressed) bytes of a
	// non-zero chunk (format version 2 on): a resume or a delta restore
	// checks what a target holds without fetching the chunk again.
	RawSHA256 string `json:"raw_sha256,omitempty"`
}

// ErrUnsupportedVersion is returned for a manifest written by a newer Rewind.
var ErrUnsupportedVersion = errors.New("unsupported snapshot format version")

// Bounds of what a manifest may describe. They keep every size and offset
// arithmetic far from int64 overflow (a sector number times a sector size,
// an offset plus a length) and a hostile manifest from asking for absurd
// memory.
const (
	// MaxDiskSize is the largest disk a manifest may describe: 8 PiB.
	MaxDiskSize = 1 << 53
	// MaxSegmentSize is the largest segment_size: 1 PiB.
	MaxSegmentSize = 1 << 50
	// MaxExtents bounds the extents of one manifest.
	MaxExtents = 1 << 20
	// MaxChunks bounds the chunk index: 256 TiB in 4 MiB chunks.
	MaxChunks = 1 << 26
	// MaxPartitions bounds a layout's partitions and MBR table sectors.
	MaxPartitions = 4096
	// MaxUnused bounds the unused ranges of all extents together.
	MaxUnused = 1 << 26
)

// ParseManifest decodes and validates a manifest. It refuses unknown format
// versions, unknown or duplicate keys (also keys that differ only in
// case), bytes after the JSON object, and any manifest whose sizes,
// offsets, layout and index are inconsistent, out of bounds or would
// overflow: what it accepts is safe to restore.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := decodeStrict(data, &m); err != nil {
		return nil, fmt.Errorf("manifest refused: %w", err)
	}
	if m.Format != FormatName {
		return nil, fmt.Errorf("manifest format is %q, want %q: this is not a Rewind snapshot", m.Format, FormatName)
	}
	if m.Version < MinFormatVersion || m.Version > FormatVersion {
		return nil, fmt.Errorf("%w %d (this Rewind reads versions %d to %d): upgrade Rewind to restore it", ErrUnsupportedVersion, m.Version, MinFormatVersion, FormatVersion)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks that the manifest's fields agree with each other and
// stay in bounds: chunk sizes, segment bounds, the layout (partitions
// inside the disk, not overlapping), extents that match the layout, and
// chunks that tile the extents.
func (m *Manifest) Validate() error {
	if err := m.validateShape(); err != nil {
		return err
	}
	return m.validateIndex()
}

// validateShape checks what a capture knows before it reads a byte: the
// sizes, the extents, the layout and the chunk count.
func (m *Manifest) validateShape() error {
	if m.Compression != "lz4-frame" {
		return fmt.Errorf("manifest compression %q is not supported (want lz4-frame)", m.Compression)
	}
	if m.Hash != "sha256" {
		return fmt.Errorf("manifest hash %q is not supported (want sha256)", m.Hash)
	}
	if m.DiskSize <= 0 || m.DiskSize > MaxDiskSize {
		return fmt.Errorf("manifest disk_size %d is outside 1..%d (8 PiB)", m.DiskSize, int64(MaxDiskSize))
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize%4096 != 0 {
		return fmt.Errorf("manifest chunk_size %d is not a multiple of 4096 in %d..%d", m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if m.SegmentSize <= 0 || m.SegmentSize > MaxSegmentSize {
		return fmt.Errorf("manifest segment_size %d is outside 1..%d", m.SegmentSize, int64(MaxSegmentSize))
	}
	if len(m.Extents) > MaxExtents || len(m.Chunks) > MaxChunks {
		return fmt.Errorf("manifest has %d extents and %d chunks: at most %d extents and %d chunks (a larger chunk_size makes fewer)",
			len(m.Extents), len(m.Chunks), MaxExtents, MaxChunks)
	}
	unused := 0
	for i, e := range m.Extents {
		if e.Offset < 0 || e.Length <= 0 || e.Length > m.DiskSize-e.Offset {
			return fmt.Errorf("extents[%d] (offset %d, length %d) lies outside the disk of %d bytes", i, e.Offset, e.Length, m.DiskSize)
		}
		if i > 0 {
			p := m.Extents[i-1]
			if e.Offset < p.Offset+p.Length {
				return fmt.Errorf("extents[%d] (offset %d) overlaps or precedes extents[%d]", i, e.Offset, i-1)
			}
		}
		if unused += len(e.Unused); unused > MaxUnused {
			return fmt.Errorf("manifest has more than %d unused ranges", MaxUnused)
		}
		if err := m.checkUsed(i, e); err != nil {
			return err
		}
	}
	if l := m.Layout; m.Version < 2 && l != nil && (len(l.MBRTables) > 0 || l.MBRReserved != "" || len(l.Notes) > 0) {
		return fmt.Errorf("layout has mbr_tables, mbr_reserved or notes, which format version %d does not have", m.Version)
	}
	return m.validateLayout()
}

// checkUsed checks extent i's version 3 fields: only in version 3, a known
// capture mode, and unused ranges that are sorted, inside the extent, not
// overlapping or adjacent, in 512-byte units, and that leave something of
// the extent stored.
func (m *Manifest) checkUsed(i int, e Extent) error {
	if e.FS == "" && e.Capture == "" && e.Note == "" && e.Unused == nil {
		return nil
	}
	if m.Version < 3 {
		return fmt.Errorf("extents[%d] has fs, capture, note or unused, which format version %d does not have", i, m.Version)
	}
	if len(e.FS) > 32 || len(e.Note) > MaxNoteLength || !printable(e.FS) || !printable(e.Note) {
		return fmt.Errorf("extents[%d] has an fs or note that is too long or not printable text", i)
	}
	switch e.Capture {
	case "":
		if e.Unused != nil {
			return fmt.Errorf("extents[%d] has unused ranges but is not captured %q", i, CaptureUsed)
		}
		return nil
	case CaptureUsed:
	default:
		return fmt.Errorf("extents[%d] has capture %q (want %q or none)", i, e.Capture, CaptureUsed)
	}
	if e.Kind != ExtentPartition && e.Kind != ExtentDisk {
		return fmt.Errorf("extents[%d] is a %s extent captured %q: only partitions and whole disks hold a file system", i, e.Kind, CaptureUsed)
	}
	sum, err := e.checkRanges(e.Unused, func(j int) string { return fmt.Sprintf("extents[%d].unused[%d]", i, j) })
	if err != nil {
		return err
	}
	if sum == e.Length {
		return fmt.Errorf("extents[%d] is unused from end to end: a file system always has a used block", i)
	}
	return nil
}

// checkRanges checks ranges of e (its unused ranges, or the free ranges
// capture is given) against the rules both share: positive multiples of
// 512 bytes, inside the extent, sorted, not overlapping or touching.
// name(k) names range k in an error. It returns the sum of their lengths.
func (e Extent) checkRanges(ranges []Range, name func(k int) string) (int64, error) {
	where := func(k int) string {
		return fmt.Sprintf("%s (offset %d, length %d)", name(k), ranges[k].Offset, ranges[k].Length)
	}
	at, end := e.Offset, e.Offset+e.Length
	var sum int64
	for k, r := range ranges {
		if r.Offset%512 != 0 || r.Length%512 != 0 || r.Length <= 0 {
			return 0, fmt.Errorf("%s is not a positive multiple of 512 bytes", where(k))
		}
		if r.Offset < e.Offset || r.Offset >= end || r.Length > end-r.Offset {
			return 0, fmt.Errorf("%s leaves the extent (%d..%d)", where(k), e.Offset, end)
		}
		if k > 0 && r.Offset <= at {
			return 0, fmt.Errorf("%s is out of order, overlaps or touches the range before it", where(k))
		}
		at = r.End()
		sum += r.Length
	}
	return sum, nil
}

// MaxNoteLength bounds Extent.Note, in bytes.
const MaxNoteLength = 1024

// printable reports whether s holds no control character and no invalid
// UTF-8: what Extent.FS and Extent.Note may hold.
func printable(s string) bool {
	return strings.IndexFunc(s, notPrintable) < 0
}

func notPrintable(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }

// NoteText makes s fit Extent.Note: every character that printable
// refuses replaced by '?', cut at a rune boundary to at most MaxNoteLength bytes.
func NoteText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if notPrintable(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > MaxNoteLength {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// validateIndex checks the segments and the chunk index: every frame
// inside its segment, chunks that tile the extents.
func (m *Manifest) validateIndex() error {
	if len(m.Segments) > max(len(m.Chunks), 1) {
		return fmt.Errorf("manifest has %d segments for %d chunks: at most one segment per chunk", len(m.Segments), len(m.Chunks))
	}
	for i, s := range m.Segments {
		if s.Name == "" || s.Size <= 0 || s.Size > m.SegmentSize || !validSegmentName(s.Name) {
			return fmt.Errorf("segments[%d] has an invalid name %q or a size %d outside 1..segment_size %d", i, s.Name, s.Size, m.SegmentSize)
		}
	}
	// Chunks tile the stored runs: each starts where the previous one
	// ended, or at the start of the next run; only the last chunk of a
	// run is shorter than chunk_size.
	runs := m.storedRuns()
	run := 0
	var next int64
	if len(runs) > 0 {
		next = runs[0].Offset
	}
	for i, c := range m.Chunks {
		if c.Length <= 0 || c.Length > m.ChunkSize {
			return fmt.Errorf("chunks[%d] has length %d (chunk size %d)", i, c.Length, m.ChunkSize)
		}
		if c.Segment < 0 || c.Segment >= len(m.Segments) {
			return fmt.Errorf("chunks[%d] names segment %d of %d", i, c.Segment, len(m.Segments))
		}
		if seg := m.Segments[c.Segment]; c.FrameOffset < 0 || c.FrameLength <= 0 || c.FrameLength > seg.Size || c.FrameOffset > seg.Size-c.FrameLength {
			return fmt.Errorf("chunks[%d] frame (frame_offset %d, frame_length %d) lies outside segment %s of %d bytes",
				i, c.FrameOffset, c.FrameLength, seg.Name, seg.Size)
		}
		if c.FrameLength > lz4FrameBound(c.Length) {
			return fmt.Errorf("chunks[%d] frame_length %d is larger than any LZ4 frame of %d bytes", i, c.FrameLength, c.Length)
		}
		if b, err := hex.DecodeString(c.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("chunks[%d] has a malformed sha256 %q", i, c.SHA256)
		}
		if err := m.checkRawHash(i, c); err != nil {
			return err
		}
		if run < len(runs) && next == runs[run].End() {
			run++
			if run < len(runs) {
				next = runs[run].Offset
			}
		}
		if run == len(runs) || c.Offset != next || c.Length > runs[run].End()-c.Offset {
			return fmt.Errorf("chunks[%d] (offset %d, length %d) does not continue the chunks before it at offset %d inside a stored range of an extent: the index has a gap, an overlap or a stray chunk", i, c.Offset, c.Length, next)
		}
		if c.Length < m.ChunkSize && c.Offset+c.Length != runs[run].End() {
			return fmt.Errorf("chunks[%d] (offset %d) is %d bytes but not the last chunk of its stored range: every other chunk is chunk_size (%d) bytes", i, c.Offset, c.Length, m.ChunkSize)
		}
		next += c.Length
	}
	if len(runs) > 0 && (run < len(runs)-1 || next != runs[len(runs)-1].End()) {
		return fmt.Errorf("the chunks end at offset %d and leave extents uncovered", next)
	}
	return nil
}

// checkRawHash checks chunk i's raw_sha256 against the format version: a
// version 2 manifest has one on every non-zero chunk and none on zero
// chunks; a version 1 manifest has none.
func (m *Manifest) checkRawHash(i int, c Chunk) error {
	switch {
	case m.Version < 2 && c.RawSHA256 != "":
		return fmt.Errorf("chunks[%d] has a raw_sha256, which format version %d does not have", i, m.Version)
	case m.Version < 2:
		return nil
	case c.Zero && c.RawSHA256 != "":
		return fmt.Errorf("chunks[%d] is marked all-zero but has a raw_sha256", i)
	case c.Zero:
		return nil
	}
	if b, err := hex.DecodeString(c.RawSHA256); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("chunks[%d] has a malformed raw_sha256 %q", i, c.RawSHA256)
	}
	return nil
}

func validSegmentName(name string) bool {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return name != "." && name != ".."
}

// storedRuns is every extent's stored runs, in disk order.
func (m *Manifest) storedRuns() []Range {
	var runs []Range
	for _, e := range m.Extents {
		runs = append(runs, e.StoredRuns()...)
	}
	return runs
}

// UnusedBytes is the sum of every extent's unused ranges: bytes a restore
// zeroes without reading them from the snapshot.
func (m *Manifest) UnusedBytes() int64 {
	var n int64
	for _, e := range m.Extents {
		n += e.UnusedBytes()
	}
	return n
}

// Marshal encodes the manifest as indented JSON with a final newline.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ID returns the snapshot's identity: the SHA-256 of the manifest's bytes.
func ID(manifest []byte) string {
	sum := sha256.Sum256(manifest)
	return hex.EncodeToString(sum[:])
}

// DataBytes is the number of raw bytes the chunks restore.
func (m *Manifest) DataBytes() int64 {
	var n int64
	for _, c := range m.Chunks {
		n += c.Length
	}
	return n
}

// StoredBytes is the total size of the segments.
func (m *Manifest) StoredBytes() int64 {
	var n int64
	for _, s := range m.Segments {
		n += s.Size
	}
	return n
}

// RequiredSize is the smallest target size that holds every extent.
func (m *Manifest) RequiredSize() int64 {
	var end int64
	for _, e := range m.Extents {
		end = max(end, e.Offset+e.Length)
	}
	return end
}

// ChunkAt returns the index of the chunk holding disk offset off, or -1.
func (m *Manifest) ChunkAt(off int64) int {
	i := sort.Search(len(m.Chunks), func(i int) bool { return m.Chunks[i].Offset+m.Chunks[i].Length > off })
	if i < len(m.Chunks) && m.Chunks[i].Offset <= off {
		return i
	}
	return -1
}
