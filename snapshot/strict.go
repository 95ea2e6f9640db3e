package snapshot

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"unicode/utf16"
)

// decodeStrict decodes the JSON object in data into v (a pointer to a
// struct), refusing what encoding/json lets through: a key that is not one
// of the struct's field names exactly (an unknown field, or a known one in
// another case, which the standard decoder would take, so that "DISK_SIZE"
// could override "disk_size"), a key given twice in one object, and any
// bytes after the object. Nested objects are checked against their own
// field types. Errors name the field by its path, e.g. chunks[3].sha256.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := checkKeys(dec, reflect.TypeOf(v).Elem(), "manifest"); err != nil {
		return err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("%w after the manifest's object: %v", errNotJSON, err)
		}
		return fmt.Errorf("the manifest has data after its JSON object (%v): a manifest is exactly one object", tok)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errNotJSON, err)
	}
	return nil
}

var errNotJSON = errors.New("not valid JSON")

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkKeys reads one JSON value from dec and checks the keys of every
// object in it against t (nil: any keys, still no duplicates).
func checkKeys(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshalerType) {
		t = nil // decodes itself (time.Time): only duplicates are checked
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w at %s: %v", errNotJSON, path, err)
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		}
		seen := map[string]string{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%w at %s: %v", errNotJSON, path, err)
			}
			key, _ := kt.(string)
			if prev, dup := seen[strings.ToLower(key)]; dup {
				if prev == key {
					return fmt.Errorf("%s: key %q appears twice: refusing an ambiguous manifest", path, key)
				}
				return fmt.Errorf("%s: keys %q and %q differ only in case: refusing an ambiguous manifest", path, prev, key)
			}
			seen[strings.ToLower(key)] = key
			var ft reflect.Type
			if fields != nil {
				var ok bool
				if ft, ok = fields[key]; !ok {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return fmt.Errorf("%s: key %q is not %q: manifest keys are case-sensitive", path, key, name)
						}
					}
					return fmt.Errorf("%s: unknown field %q: this manifest was not written by a Rewind that this one can read", path, key)
				}
			}
			if err := checkKeys(dec, ft, path+"."+key); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // '}'
			return fmt.Errorf("%w at %s: %v", errNotJSON, path, err)
		}
		return nil
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkKeys(dec, et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // ']'
			return fmt.Errorf("%w at %s: %v", errNotJSON, path, err)
		}
		return nil
	}
	return nil
}

// jsonFields maps the JSON names of t's exported fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}

// validateLayout checks the layout against the disk (sector sizes, every
// partition inside the disk and its usable area, no overlaps, MBR logical
// partitions inside their container) and the extents against the layout:
// one partition extent per partition with exactly its bytes, boot areas
// and partitions off the table sectors, a whole-disk extent only for a
// disk without a table.
func (m *Manifest) validateLayout() error {
	l := m.Layout
	if l == nil || l.Table == "none" {
		if l != nil {
			if err := l.checkGeometry(m.DiskSize); err != nil {
				return err
			}
			if len(l.Partitions) > 0 || len(l.MBRTables) > 0 {
				return fmt.Errorf("layout: table none has %d partitions and %d MBR tables, want none", len(l.Partitions), len(l.MBRTables))
			}
		}
		if len(m.Extents) != 1 || m.Extents[0] != (Extent{Kind: ExtentDisk, Offset: 0, Length: m.DiskSize}) {
			return fmt.Errorf("extents: a disk without a partition table is captured as one extent of kind %q over all %d bytes, not %d extents starting with %+v",
				ExtentDisk, m.DiskSize, len(m.Extents), firstExtent(m.Extents))
		}
		return nil
	}
	if l.Table != "gpt" && l.Table != "mbr" {
		return fmt.Errorf("layout.table %q is not gpt, mbr or none", l.Table)
	}
	if err := l.checkGeometry(m.DiskSize); err != nil {
		return err
	}
	tables, err := l.checkPartitions()
	if err != nil {
		return err
	}
	parts := map[int]Partition{}
	for _, p := range l.Partitions {
		parts[p.Number] = p
	}
	ss := int64(l.LogicalSectorSize)
	captured := map[int]bool{}
	for i, e := range m.Extents {
		switch e.Kind {
		case ExtentPartition:
			p, ok := parts[e.Partition]
			switch {
			case !ok || p.Extended:
				return fmt.Errorf("extents[%d] is of partition %d, which the layout does not have (or is the extended container)", i, e.Partition)
			case captured[p.Number]:
				return fmt.Errorf("extents[%d]: partition %d has two extents", i, p.Number)
			case e.Offset != int64(p.Start)*ss || e.Length != int64(p.Size)*ss:
				return fmt.Errorf("extents[%d] (offset %d, length %d) does not match partition %d (bytes %d, length %d)",
					i, e.Offset, e.Length, p.Number, int64(p.Start)*ss, int64(p.Size)*ss)
			}
			captured[p.Number] = true
		case ExtentBootArea:
		default:
			return fmt.Errorf("extents[%d] has kind %q, which a disk with a %s table does not have (want %s or %s)", i, e.Kind, l.Table, ExtentPartition, ExtentBootArea)
		}
		if t, clash := tables.overlap(e.Offset, e.Offset+e.Length); clash {
			return fmt.Errorf("extents[%d] (%s, offset %d, length %d) lies on table sectors (bytes %d-%d), which restore recreates from the layout",
				i, e.Kind, e.Offset, e.Length, t.off, t.end-1)
		}
	}
	for _, p := range l.Partitions {
		if !p.Extended && !captured[p.Number] {
			return fmt.Errorf("extents: partition %d has no extent: its data would not be restored", p.Number)
		}
	}
	return nil
}

func firstExtent(e []Extent) any {
	if len(e) == 0 {
		return "none"
	}
	return e[0]
}

// checkGeometry checks the sector sizes and the disk size.
func (l *Layout) checkGeometry(diskSize int64) error {
	switch l.LogicalSectorSize {
	case 512, 1024, 2048, 4096:
	default:
		return fmt.Errorf("layout.logical_sector_size %d is not 512, 1024, 2048 or 4096", l.LogicalSectorSize)
	}
	pss := l.PhysicalSectorSize
	if pss < l.LogicalSectorSize || pss > 1<<20 || pss&(pss-1) != 0 {
		return fmt.Errorf("layout.physical_sector_size %d is not a power of two from the logical sector size %d to 1 MiB", pss, l.LogicalSectorSize)
	}
	if l.DiskSize != diskSize || diskSize%int64(l.LogicalSectorSize) != 0 || diskSize < 2*int64(l.LogicalSectorSize) {
		return fmt.Errorf("layout.disk_size %d differs from the manifest's disk_size %d or is not a whole number (at least 2) of %d-byte sectors",
			l.DiskSize, diskSize, l.LogicalSectorSize)
	}
	if l.MBRSignature != "" && !isHex(strings.TrimPrefix(l.MBRSignature, "0x"), 8) {
		return fmt.Errorf("layout.mbr_signature %q is not 0x and 8 hex digits", l.MBRSignature)
	}
	if l.MBRReserved != "" && !isHex(l.MBRReserved, 4) {
		return fmt.Errorf("layout.mbr_reserved %q is not 4 hex digits", l.MBRReserved)
	}
	if len(l.Notes) > 64 {
		return fmt.Errorf("layout.notes has %d notes, at most 64", len(l.Notes))
	}
	return nil
}

func isHex(s string, n int) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b)*2 == n
}

// span is a half-open byte range.
type span struct{ off, end int64 }

// spans is a sorted list of disjoint byte ranges.
type spans []span

func (s spans) normalize() spans {
	sort.Slice(s, func(i, j int) bool { return s[i].off < s[j].off })
	var out spans
	for _, x := range s {
		if k := len(out) - 1; k >= 0 && x.off <= out[k].end {
			out[k].end = max(out[k].end, x.end)
			continue
		}
		out = append(out, x)
	}
	return out
}

// overlap returns a span of s that [off, end) overlaps.
func (s spans) overlap(off, end int64) (span, bool) {
	i := sort.Search(len(s), func(i int) bool { return s[i].end > off })
	if i < len(s) && s[i].off < end {
		return s[i], true
	}
	return span{}, false
}

// TableSpans returns the byte ranges of a disk of the layout's size that
// hold the partition table and that restore recreates from the layout:
// LBA 0's signature, reserved bytes and entries (440..511); for GPT both
// headers and both entry arrays (the backup ones where a standard GPT
// puts them, before the last sector); for MBR bytes 446..511 of every
// extended boot record. Nothing of a snapshot's extents may lie on them.
func (l *Layout) TableSpans() []Extent {
	t := l.tableSpans()
	out := make([]Extent, len(t))
	for i, s := range t {
		out[i] = Extent{Offset: s.off, Length: s.end - s.off}
	}
	return out
}

func (l *Layout) tableSpans() spans {
	ss := int64(l.LogicalSectorSize)
	t := spans{{440, 512}}
	switch l.Table {
	case "gpt":
		n, elba := int64(l.PartitionEntries), int64(l.PartitionEntriesLBA)
		if n == 0 {
			n = 128
		}
		if elba == 0 {
			elba = 2
		}
		esec := (n*128 + ss - 1) / ss
		last := l.DiskSize/ss - 1
		t = append(t, span{ss, 2 * ss}, span{elba * ss, (elba + esec) * ss},
			span{(last - esec) * ss, last * ss}, span{last * ss, (last + 1) * ss})
	case "mbr":
		for _, s := range l.ebrSectors() {
			t = append(t, span{int64(s)*ss + 446, int64(s)*ss + 512})
		}
	}
	return t.normalize()
}

// ebrSectors returns the sectors of an MBR layout's extended boot records:
// the container's first sector, every logical partition's EBR and every
// recorded table sector after LBA 0.
func (l *Layout) ebrSectors() []uint64 {
	var out []uint64
	for _, p := range l.Partitions {
		if p.Extended {
			out = append(out, p.Start)
		}
		if p.Logical && p.EBR != 0 {
			out = append(out, p.EBR)
		}
	}
	for _, t := range l.MBRTables {
		if t.Sector != 0 {
			out = append(out, t.Sector)
		}
	}
	return out
}

// checkPartitions checks every partition against the disk, the table's
// rules and each other, and returns the table spans.
func (l *Layout) checkPartitions() (spans, error) {
	ss := uint64(l.LogicalSectorSize)
	sectors := uint64(l.DiskSize) / ss
	if len(l.Partitions) > MaxPartitions || len(l.MBRTables) > MaxPartitions+1 {
		return nil, fmt.Errorf("layout has %d partitions and %d MBR tables: at most %d", len(l.Partitions), len(l.MBRTables), MaxPartitions)
	}
	seen := map[int]bool{}
	for i, p := range l.Partitions {
		if p.Number < 1 || seen[p.Number] {
			return nil, fmt.Errorf("layout.partitions[%d] has number %d, which is not positive or not unique", i, p.Number)
		}
		seen[p.Number] = true
		// Written this way, the sums cannot overflow.
		if p.Start == 0 || p.Size == 0 || p.Start >= sectors || p.Size > sectors-p.Start {
			return nil, fmt.Errorf("partition %d (start sector %d, %d sectors) does not lie inside the disk of %d sectors (sector 0 holds the table)",
				p.Number, p.Start, p.Size, sectors)
		}
	}
	var err error
	if l.Table == "gpt" {
		err = l.checkGPT(sectors)
	} else {
		err = l.checkMBR(sectors)
	}
	if err != nil {
		return nil, err
	}
	for i, t := range l.MBRTables {
		if !isHex(t.Entries, 128) {
			return nil, fmt.Errorf("layout.mbr_tables[%d].entries is not 128 hex digits (64 bytes)", i)
		}
		if (i == 0) != (t.Sector == 0) {
			return nil, fmt.Errorf("layout.mbr_tables[%d] is sector %d: the first table is LBA 0's and only the first", i, t.Sector)
		}
	}
	tables := l.tableSpans()
	bss := int64(ss)
	for _, p := range l.Partitions {
		if p.Extended {
			continue
		}
		if t, clash := tables.overlap(int64(p.Start)*bss, int64(p.Start+p.Size)*bss); clash {
			return nil, fmt.Errorf("partition %d (sectors %d-%d) lies on table sectors (bytes %d-%d)", p.Number, p.Start, p.Start+p.Size-1, t.off, t.end-1)
		}
	}
	return tables, nil
}

func (l *Layout) checkGPT(sectors uint64) error {
	n, elba := uint64(l.PartitionEntries), l.PartitionEntriesLBA
	if n == 0 {
		n = 128
	}
	if elba == 0 {
		elba = 2
	}
	esec := (n*128 + uint64(l.LogicalSectorSize) - 1) / uint64(l.LogicalSectorSize)
	if n > MaxPartitions || elba < 2 || elba >= sectors || elba+2*esec+1 > sectors {
		return fmt.Errorf("layout: a GPT of %d entries at sector %d does not fit the disk of %d sectors", n, elba, sectors)
	}
	first, last := l.FirstUsableLBA, l.LastUsableLBA
	if first == 0 {
		first = elba + esec
	}
	if last == 0 {
		last = sectors - esec - 2
	}
	if first > last || last >= sectors-1 {
		return fmt.Errorf("layout: usable sectors %d-%d do not lie inside the disk of %d sectors", first, last, sectors)
	}
	if l.DiskGUID != "" && !isGUID(l.DiskGUID) {
		return fmt.Errorf("layout.disk_guid %q is not a GUID", l.DiskGUID)
	}
	if len(l.MBRTables) > 1 {
		return fmt.Errorf("layout: a GPT disk has one MBR table (the protective MBR's), not %d", len(l.MBRTables))
	}
	parts := append([]Partition(nil), l.Partitions...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Start < parts[j].Start })
	for i, p := range parts {
		switch {
		case uint64(p.Number) > n:
			return fmt.Errorf("partition %d does not fit a GPT of %d entries", p.Number, n)
		case p.Start < first || p.Start+p.Size-1 > last:
			return fmt.Errorf("partition %d (sectors %d-%d) lies outside the usable sectors %d-%d", p.Number, p.Start, p.Start+p.Size-1, first, last)
		case !isGUID(p.Type) || p.GUID != "" && !isGUID(p.GUID):
			return fmt.Errorf("partition %d: type %q or guid %q is not a GUID", p.Number, p.Type, p.GUID)
		case len(utf16.Encode([]rune(p.Name))) > 36:
			return fmt.Errorf("partition %d: name %q is longer than 36 UTF-16 code units", p.Number, p.Name)
		case p.Bootable || p.Extended || p.Logical || p.EBR != 0:
			return fmt.Errorf("partition %d of a GPT has MBR fields (bootable, extended, logical, ebr)", p.Number)
		case i > 0 && p.Start <= parts[i-1].Start+parts[i-1].Size-1:
			return fmt.Errorf("partitions %d and %d overlap", parts[i-1].Number, p.Number)
		}
	}
	return nil
}

func (l *Layout) checkMBR(sectors uint64) error {
	var ext *Partition
	var primaries, logicals []Partition
	for i, p := range l.Partitions {
		if t := strings.TrimPrefix(p.Type, "0x"); len(t) != 2 || !isHex(t, 2) || t == "00" {
			return fmt.Errorf("partition %d: MBR type %q is not 0x and 2 hex digits (not 0x00)", p.Number, p.Type)
		}
		if p.GUID != "" || p.Name != "" || p.Attributes != 0 {
			return fmt.Errorf("partition %d of an MBR has GPT fields (guid, name, attributes)", p.Number)
		}
		if p.Start+p.Size > 1<<32 {
			return fmt.Errorf("partition %d (sectors %d-%d) ends beyond the 2^32 sectors an MBR can address", p.Number, p.Start, p.Start+p.Size-1)
		}
		switch {
		case p.Logical && p.Extended:
			return fmt.Errorf("partition %d is both logical and extended", p.Number)
		case p.Logical:
			if p.Number < 5 {
				return fmt.Errorf("logical partition %d: logical partitions are numbered from 5", p.Number)
			}
			logicals = append(logicals, p)
		default:
			if p.Number > 4 || p.EBR != 0 {
				return fmt.Errorf("primary partition %d: primaries are numbered 1 to 4 and have no ebr", p.Number)
			}
			if p.Extended {
				if ext != nil {
					return fmt.Errorf("partitions %d and %d are both extended: only one extended partition is supported", ext.Number, p.Number)
				}
				ext = &l.Partitions[i]
			}
			primaries = append(primaries, p)
		}
	}
	if err := disjoint(primaries); err != nil {
		return err
	}
	if err := disjoint(logicals); err != nil {
		return err
	}
	ebrs := map[uint64]bool{}
	for i, t := range l.MBRTables {
		if i > 0 && (ext == nil || t.Sector < ext.Start || t.Sector > ext.Start+ext.Size-1 || ebrs[t.Sector]) {
			return fmt.Errorf("layout.mbr_tables[%d]: sector %d is not a distinct sector of the extended partition", i, t.Sector)
		}
		ebrs[t.Sector] = true
	}
	if ext != nil && len(l.MBRTables) > 0 && !ebrs[ext.Start] {
		return fmt.Errorf("layout.mbr_tables has no table at sector %d, where the extended partition starts", ext.Start)
	}
	for _, p := range logicals {
		if ext == nil {
			return fmt.Errorf("logical partition %d has no extended partition to live in", p.Number)
		}
		if p.Start <= ext.Start || p.Start+p.Size > ext.Start+ext.Size || p.EBR != 0 && (p.EBR < ext.Start || p.EBR >= p.Start) ||
			len(l.MBRTables) > 0 && (p.EBR == 0 || !ebrs[p.EBR]) {
			return fmt.Errorf("logical partition %d (sectors %d-%d, EBR at %d) is not inside extended partition %d (sectors %d-%d) after its EBR",
				p.Number, p.Start, p.Start+p.Size-1, p.EBR, ext.Number, ext.Start, ext.Start+ext.Size-1)
		}
	}
	return nil
}

// disjoint checks that no two of parts share a sector.
func disjoint(parts []Partition) error {
	parts = append([]Partition(nil), parts...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Start < parts[j].Start })
	for i := 1; i < len(parts); i++ {
		if a, b := parts[i-1], parts[i]; b.Start <= a.Start+a.Size-1 {
			return fmt.Errorf("partitions %d (sectors %d-%d) and %d (sectors %d-%d) overlap", a.Number, a.Start, a.Start+a.Size-1, b.Number, b.Start, b.Start+b.Size-1)
		}
	}
	return nil
}

// isGUID reports whether s is a textual GUID, 8-4-4-4-12 hex digits.
func isGUID(s string) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	return isHex(strings.ReplaceAll(s, "-", ""), 32)
}
