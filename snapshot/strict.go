package snapshot

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	s := &keyScanner{b: data, fields: map[reflect.Type]map[string]reflect.Type{}}
	if err := s.value(reflect.TypeOf(v).Elem()); err != nil {
		return err
	}
	if s.ws(); s.i != len(s.b) {
		return fmt.Errorf("the manifest has data after its JSON object (at byte %d): a manifest is exactly one object", s.i)
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

// keyScanner walks a JSON text once to check object keys; encoding/json
// checks everything else afterwards. (json.Decoder.Token would do, at a
// fifth of the speed: a manifest of a large disk has millions of tokens.)
type keyScanner struct {
	b      []byte
	i      int
	path   []pathElem // where the scanner is, for errors
	fields map[reflect.Type]map[string]reflect.Type
}

// pathElem is one step of a path: an object key or an array index.
type pathElem struct {
	key   string
	index int
}

// where formats the current path: manifest.chunks[3].sha256.
func (s *keyScanner) where() string {
	var b strings.Builder
	b.WriteString("manifest")
	for _, e := range s.path {
		if e.key != "" {
			b.WriteString("." + e.key)
		} else {
			fmt.Fprintf(&b, "[%d]", e.index)
		}
	}
	return b.String()
}

func (s *keyScanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *keyScanner) errorf(what string) error {
	return fmt.Errorf("%w at %s (byte %d): %s", errNotJSON, s.where(), s.i, what)
}

// str skips a string that starts at s.i and returns its raw contents.
func (s *keyScanner) str() ([]byte, error) {
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch s.b[i] {
		case '\\':
			i++
		case '"':
			s.i = i + 1
			return s.b[start:i], nil
		}
	}
	return nil, s.errorf("unterminated string")
}

// value reads one JSON value and checks the keys of every object in it
// against t (nil: any keys, still no duplicates).
func (s *keyScanner) value(t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshalerType) {
		t = nil // decodes itself (time.Time): only duplicates are checked
	}
	s.ws()
	if s.i >= len(s.b) {
		return s.errorf("unexpected end")
	}
	switch s.b[s.i] {
	case '{':
		return s.object(t)
	case '[':
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		s.i++
		if s.ws(); s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return nil
		}
		s.path = append(s.path, pathElem{})
		defer func() { s.path = s.path[:len(s.path)-1] }()
		for n := 0; ; n++ {
			s.path[len(s.path)-1].index = n
			if err := s.value(et); err != nil {
				return err
			}
			if s.ws(); s.i >= len(s.b) {
				return s.errorf("unterminated array")
			}
			if s.b[s.i] == ']' {
				s.i++
				return nil
			}
			if s.b[s.i] != ',' {
				return s.errorf("want , or ] in an array")
			}
			s.i++
		}
	case '"':
		_, err := s.str()
		return err
	}
	// A number or literal: encoding/json checks its syntax.
	start := s.i
	for s.i < len(s.b) && !strings.ContainsRune(",]} \t\r\n", rune(s.b[s.i])) {
		s.i++
	}
	if s.i == start {
		return s.errorf("want a value")
	}
	return nil
}

func (s *keyScanner) object(t reflect.Type) error {
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		if fields = s.fields[t]; fields == nil {
			fields = jsonFields(t)
			s.fields[t] = fields
		}
	}
	var seen []string // lower-case keys, few per object
	s.i++
	if s.ws(); s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		if s.ws(); s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.errorf("want a key")
		}
		raw, err := s.str()
		if err != nil {
			return err
		}
		key := string(raw)
		if bytes.IndexByte(raw, '\\') >= 0 {
			if err := json.Unmarshal(s.b[s.i-len(raw)-2:s.i], &key); err != nil {
				return s.errorf("malformed key")
			}
		}
		for _, prev := range seen {
			if prev == key {
				return fmt.Errorf("%s: key %q appears twice: refusing an ambiguous manifest", s.where(), key)
			}
			if strings.EqualFold(prev, key) {
				return fmt.Errorf("%s: keys %q and %q differ only in case: refusing an ambiguous manifest", s.where(), prev, key)
			}
		}
		seen = append(seen, key)
		var ft reflect.Type
		if fields != nil {
			var ok bool
			if ft, ok = fields[key]; !ok {
				for name := range fields {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("%s: key %q is not %q: manifest keys are case-sensitive", s.where(), key, name)
					}
				}
				return fmt.Errorf("%s: unknown field %q: this manifest was not written by a Rewind that this one can read", s.where(), key)
			}
		}
		if s.ws(); s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.errorf("want : after a key")
		}
		s.i++
		s.path = append(s.path, pathElem{key: key})
		err = s.value(ft)
		s.path = s.path[:len(s.path)-1]
		if err != nil {
			return err
		}
		if s.ws(); s.i >= len(s.b) {
			return s.errorf("unterminated object")
		}
		if s.b[s.i] == '}' {
			s.i++
			return nil
		}
		if s.b[s.i] != ',' {
			return s.errorf("want , or } in an object")
		}
		s.i++
	}
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
		if len(m.Extents) != 1 || !m.Extents[0].spans(ExtentDisk, 0, m.DiskSize, 0) {
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
			if e.Partition != 0 {
				return fmt.Errorf("extents[%d] is a boot area but names partition %d", i, e.Partition)
			}
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
// every logical partition's EBR and every recorded table sector after LBA
// 0, and, when no tables are recorded, the container's first sector (where
// restore then writes an empty EBR).
func (l *Layout) ebrSectors() []uint64 {
	var out []uint64
	for _, p := range l.Partitions {
		if p.Extended && len(l.MBRTables) == 0 {
			out = append(out, p.Start) // where restore writes an empty EBR
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
