package diskrestore

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sort"

	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/snapshot"
)

// WriteOptions controls WriteLayout.
type WriteOptions struct {
	// GrowLast extends the last partition to the end of a larger target.
	// The file system inside it is not grown.
	GrowLast bool
	// Logf receives notes meant for the operator: a moved backup GPT, a
	// grown partition, a kernel that did not take the new table. Nil
	// discards them; TargetLayout returns the same notes before anything
	// is written.
	Logf func(format string, args ...any)
	// TableOnly writes only the table proper of each table sector (the
	// MBR's signature, entries and 0x55AA, GPT headers and entry arrays,
	// EBR entries) and no stale-header zeroing: the caller cleared the
	// table areas (ClearTable) and wrote the boot areas already, and the
	// table goes on last.
	TableOnly bool
}

func (o WriteOptions) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// WriteLayout writes l's partition table onto target, a block device or an
// image file. It checks that l fits the target (size and logical sector
// size) before writing anything.
//
// It writes only table sectors (LBA 0, GPT headers and entry arrays, EBRs)
// and zeroes stale GPT headers, so it must run before the snapshot's
// extents are written: boot-area extents then restore the boot code in
// front of the MBR's table and whatever else a boot loader hid.
func WriteLayout(target *os.File, l *snapshot.Layout, opts WriteOptions) error {
	g, err := GeometryOf(target)
	if err != nil {
		return err
	}
	t, notes, err := TargetLayout(l, g.Size, g.LogicalSectorSize, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", target.Name(), err)
	}
	writes, err := encodeLayout(t)
	if err != nil {
		return fmt.Errorf("%s: %w", target.Name(), err)
	}
	// Stale GPT headers of the target's previous life, at both ends and
	// for both sector sizes, so that no tool finds an old GPT beside a new
	// MBR, or an old backup GPT before the end of a larger disk. The new
	// table's own sectors are written after.
	ss := int64(t.LogicalSectorSize)
	stale := []int64{ss, g.Size - ss}
	if ss == 512 {
		stale = append(stale, 4096, g.Size-4096)
	}
	if opts.TableOnly {
		stale = nil
	}
	zero := make([]byte, ss)
	for _, off := range stale {
		if off < ss || off+ss > g.Size {
			continue
		}
		if _, err := target.WriteAt(zero, off); err != nil {
			return fmt.Errorf("%s: clear old GPT header at byte %d: %w", target.Name(), off, err)
		}
	}
	for _, w := range writes {
		if opts.TableOnly {
			w.Data, w.Off = w.Data[w.Table.Off-w.Off:w.Table.End-w.Off], w.Table.Off
		}
		if _, err := target.WriteAt(w.Data, w.Off); err != nil {
			return fmt.Errorf("%s: write %s at byte %d: %w", target.Name(), w.What, w.Off, err)
		}
	}
	if err := target.Sync(); err != nil {
		return fmt.Errorf("%s: flush partition table: %w", target.Name(), err)
	}
	for _, n := range notes {
		opts.logf("%s: %s", target.Name(), n)
	}
	if g.BlockDevice && t.Table != "none" {
		var parts []PartitionRange
		for _, p := range t.Partitions {
			n := int64(p.Size) * ss
			if p.Extended {
				n = ss // the kernel maps only the EBR of an extended container
			}
			parts = append(parts, PartitionRange{Number: p.Number, Start: int64(p.Start) * ss, Length: n})
		}
		if err := RereadPartitions(target, parts); err != nil {
			opts.logf("warning: %v", err)
		}
	}
	return nil
}

// TargetLayout returns the layout WriteLayout writes onto a target of size
// bytes with sectorSize-byte logical sectors (0: the layout's own, as for
// an image file), and notes for the operator. It refuses a sector size
// mismatch and a target too small for any partition.
func TargetLayout(l *snapshot.Layout, size int64, sectorSize int, opts WriteOptions) (*snapshot.Layout, []string, error) {
	if l == nil {
		return nil, nil, errors.New("no layout to write")
	}
	ss := l.LogicalSectorSize
	if ss <= 0 {
		return nil, nil, fmt.Errorf("layout has no logical sector size")
	}
	if sectorSize != 0 && sectorSize != ss {
		return nil, nil, fmt.Errorf("the snapshot's disk has %d-byte logical sectors but the target has %d-byte sectors: "+
			"its partition table and file systems cannot be restored there; pick a disk with %d-byte sectors", ss, sectorSize, ss)
	}
	if size <= 0 || size%int64(ss) != 0 {
		return nil, nil, fmt.Errorf("target size %d bytes is not a multiple of %d-byte sectors", size, ss)
	}
	t := *l
	t.DiskSize = size
	t.Partitions = append([]snapshot.Partition(nil), l.Partitions...)
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Number < t.Partitions[j].Number })
	var notes []string
	sectors := uint64(size) / uint64(ss)

	var first, last uint64 // usable sectors
	var need func(end uint64) int64
	switch l.Table {
	case "none":
		if size < l.DiskSize {
			return nil, nil, fmt.Errorf("the target (%s, %d bytes) is smaller than the captured disk (%s, %d bytes), which has no partition table: pick a disk of at least %d bytes",
				units.Bytes(size), size, units.Bytes(l.DiskSize), l.DiskSize, l.DiskSize)
		}
		if size > l.DiskSize {
			notes = append(notes, fmt.Sprintf("the target is %s larger than the captured disk; the space after byte %d is left as it is", units.Bytes(size-l.DiskSize), l.DiskSize))
		}
		return &t, notes, nil
	case "gpt":
		if t.PartitionEntries == 0 {
			t.PartitionEntries = gptDefaultCount
		}
		if t.PartitionEntriesLBA == 0 {
			t.PartitionEntriesLBA = 2
		}
		esec := gptEntrySectors(t.PartitionEntries, ss)
		if t.FirstUsableLBA == 0 {
			t.FirstUsableLBA = t.PartitionEntriesLBA + esec
		}
		if sectors < t.FirstUsableLBA+esec+2 {
			return nil, nil, fmt.Errorf("the target (%d bytes) is too small for a GPT", size)
		}
		maxLast := sectors - 1 - esec - 1
		if size != l.DiskSize || t.LastUsableLBA == 0 || t.LastUsableLBA > maxLast {
			t.LastUsableLBA = maxLast
		}
		if size > l.DiskSize {
			notes = append(notes, fmt.Sprintf("the target is %s larger than the captured disk: the backup GPT goes to its end, last usable sector %d", units.Bytes(size-l.DiskSize), t.LastUsableLBA))
		}
		first, last = t.FirstUsableLBA, t.LastUsableLBA
		need = func(end uint64) int64 { return int64(end+1+esec+1) * int64(ss) }
	case "mbr":
		first, last = 1, min(sectors, 1<<32)-1
		need = func(end uint64) int64 { return int64(end+1) * int64(ss) }
		if size > l.DiskSize {
			notes = append(notes, fmt.Sprintf("the target is %s larger than the captured disk", units.Bytes(size-l.DiskSize)))
		}
	default:
		return nil, nil, fmt.Errorf("layout table %q is not gpt, mbr or none", l.Table)
	}

	// Sector numbers from a table or a manifest are bounded before any sum.
	for _, p := range t.Partitions {
		if p.Size == 0 || p.Start > 1<<62 || p.Size > 1<<62 {
			return nil, nil, fmt.Errorf("partition %d (start sector %d, %d sectors) is empty or out of any disk's range", p.Number, p.Start, p.Size)
		}
	}
	var maxEnd uint64
	for _, p := range t.Partitions {
		maxEnd = max(maxEnd, p.Start+p.Size-1)
	}
	for _, p := range t.Partitions {
		end := p.Start + p.Size - 1
		if p.Start < first {
			return nil, nil, fmt.Errorf("partition %d starts at sector %d, before the first usable sector %d", p.Number, p.Start, first)
		}
		if end > last {
			return nil, nil, fmt.Errorf("partition %d (sectors %d-%d, %s) does not fit on the target of %s (%d bytes), whose last usable sector is %d: pick a disk of at least %s (%d bytes)",
				p.Number, p.Start, end, units.Bytes(int64(p.Size)*int64(ss)), units.Bytes(size), size, last, units.Bytes(need(maxEnd)), need(maxEnd))
		}
	}
	if size < l.DiskSize {
		notes = append(notes, fmt.Sprintf("the target is %s smaller than the captured disk; every partition fits", units.Bytes(l.DiskSize-size)))
	}
	if opts.GrowLast {
		notes = append(notes, growLast(&t, last, ss))
	}
	if len(l.MBRTables) > 0 {
		// The recorded tables must say what the partitions say; the
		// patched ones, what the target's partitions say.
		if err := checkMBRTables(l); err != nil {
			return nil, nil, err
		}
		tables, err := patchMBRTables(l, &t)
		if err != nil {
			return nil, nil, err
		}
		t.MBRTables = tables
		if err := hybridFits(&t, sectors); err != nil {
			return nil, nil, err
		}
		if err := checkMBRTables(&t); err != nil {
			return nil, nil, fmt.Errorf("internal error: the MBR tables adapted to the target are inconsistent: %w", err)
		}
	}
	return &t, notes, nil
}

// hybridFits refuses a hybrid MBR entry of t's protective MBR that ends
// past the target's last sector (an entry the source's disk held but that
// no GPT partition's growth or shrinking moves): a choice of disk, named
// as such, not a table Rewind got wrong.
func hybridFits(t *snapshot.Layout, sectors uint64) error {
	if t.Table != "gpt" || len(t.MBRTables) == 0 || t.MBRTables[0].Sector != 0 {
		return nil
	}
	e, err := hex.DecodeString(t.MBRTables[0].Entries)
	if err != nil || len(e) != 4*mbrEntrySize {
		return nil // checkMBRTables names it
	}
	b := make([]byte, mbrTableOffset+len(e)+2)
	copy(b[mbrTableOffset:], e)
	for i, m := range rawMBREntries(b) {
		if end := uint64(m.Start) + uint64(m.Size); m.Type != mbrTypeProtected && m.Size != 0 && end > sectors {
			need := int64(end) * int64(t.LogicalSectorSize)
			return fmt.Errorf("the snapshot's protective MBR holds a hybrid MBR entry %d (sectors %d-%d) that does not fit on the target of %s (%d bytes, %d sectors): pick a disk of at least %s (%d bytes)",
				i+1, m.Start, end-1, units.Bytes(t.DiskSize), t.DiskSize, sectors, units.Bytes(need), need)
		}
	}
	return nil
}

// memDisk is a sparse in-memory disk of whole sectors, for decoding
// recorded tables with the same code that reads them from a disk.
type memDisk map[int64][]byte

func (d memDisk) ReadAt(b []byte, off int64) (int, error) {
	clear(b)
	for pos := 0; pos < len(b); {
		if s, ok := d[off+int64(pos)]; ok {
			pos += copy(b[pos:], s)
			continue
		}
		pos++
	}
	return len(b), nil
}

// mbrTableSectors renders recorded MBR tables as the sectors they are on
// disk: the entries and the 0x55AA mark.
func mbrTableSectors(l *snapshot.Layout) (memDisk, error) {
	ss := int64(l.LogicalSectorSize)
	d := memDisk{}
	for i, tb := range l.MBRTables {
		e, err := hex.DecodeString(tb.Entries)
		if err != nil || len(e) != 4*mbrEntrySize {
			return nil, fmt.Errorf("layout.mbr_tables[%d] is not 64 bytes of hex", i)
		}
		b := make([]byte, ss)
		copy(b[mbrTableOffset:], e)
		b[510], b[511] = 0x55, 0xaa
		d[int64(tb.Sector)*ss] = b
	}
	if d[0] == nil {
		return nil, errors.New("layout.mbr_tables has no table for LBA 0")
	}
	return d, nil
}

// checkMBRTables decodes l's recorded MBR tables by the rules ReadLayout
// follows and checks them against l: on an MBR disk they must describe
// exactly l's partitions; on a GPT disk the protective MBR must have its
// 0xEE entry and every other (hybrid) entry must lie on the disk.
func checkMBRTables(l *snapshot.Layout) error {
	d, err := mbrTableSectors(l)
	if err != nil {
		return err
	}
	sectors := uint64(l.DiskSize) / uint64(l.LogicalSectorSize)
	if l.Table == "gpt" {
		protective := false
		for i, e := range rawMBREntries(d[0]) {
			switch {
			case e.Type == mbrTypeProtected:
				protective = true
			case e.Size != 0 && uint64(e.Start)+uint64(e.Size) > sectors:
				return fmt.Errorf("hybrid MBR entry %d (sectors %d-%d) lies past the end of the disk (%d sectors)", i+1, e.Start, uint64(e.Start)+uint64(e.Size)-1, sectors)
			}
		}
		if !protective {
			return errors.New("layout.mbr_tables: the protective MBR has no 0xEE entry")
		}
		return nil
	}
	dec := &snapshot.Layout{LogicalSectorSize: l.LogicalSectorSize, DiskSize: l.DiskSize}
	if _, err := readMBR(d, dec, d[0]); err != nil {
		return fmt.Errorf("layout.mbr_tables: %w", err)
	}
	if len(dec.MBRTables) != len(l.MBRTables) {
		return fmt.Errorf("layout.mbr_tables: the chain of EBRs has %d tables, the layout records %d", len(dec.MBRTables), len(l.MBRTables))
	}
	for i := range dec.MBRTables {
		if dec.MBRTables[i].Sector != l.MBRTables[i].Sector {
			return fmt.Errorf("layout.mbr_tables[%d]: the chain of EBRs reaches sector %d, the layout records sector %d", i, dec.MBRTables[i].Sector, l.MBRTables[i].Sector)
		}
	}
	want := map[int]snapshot.Partition{}
	for _, p := range l.Partitions {
		want[p.Number] = p
	}
	if len(dec.Partitions) != len(want) {
		return fmt.Errorf("layout.mbr_tables describe %d partitions, layout.partitions has %d", len(dec.Partitions), len(want))
	}
	for _, got := range dec.Partitions {
		w, ok := want[got.Number]
		typ, err := parseMBRType(w.Type)
		if !ok || err != nil || got.Start != w.Start || got.Size != w.Size || got.Type != fmt.Sprintf("0x%02x", typ) ||
			got.Bootable != w.Bootable || got.Extended != w.Extended || got.Logical != w.Logical || got.EBR != w.EBR {
			return fmt.Errorf("layout.mbr_tables describe partition %d as %+v, layout.partitions as %+v", got.Number, summary(got), summary(w))
		}
	}
	return nil
}

func summary(p snapshot.Partition) string {
	return fmt.Sprintf("start %d size %d type %s bootable %v extended %v logical %v ebr %d", p.Start, p.Size, p.Type, p.Bootable, p.Extended, p.Logical, p.EBR)
}

// patchMBRTables adapts l's recorded MBR tables to the target layout t:
// an entry that ended where a grown partition ended (the partition's own
// entry, an EBR link that covered it, a hybrid entry) now ends where that
// partition ends; the protective MBR's 0xEE entry follows the target's
// size unless it was 0xFFFFFFFF. An end CHS that the source computed as
// Rewind does is recomputed; any other bytes stay as the source had them.
func patchMBRTables(l, t *snapshot.Layout) ([]snapshot.MBRTable, error) {
	ss := uint64(l.LogicalSectorSize)
	moved := map[uint64]uint64{} // old last sector -> new last sector
	var extStart uint64
	old := map[int]snapshot.Partition{}
	for _, p := range l.Partitions {
		old[p.Number] = p
	}
	for _, p := range t.Partitions {
		if o := old[p.Number]; o.Size != p.Size {
			moved[o.Start+o.Size-1] = p.Start + p.Size - 1
		}
		if p.Extended {
			extStart = p.Start
		}
	}
	oldLast, newLast := uint64(l.DiskSize)/ss-1, uint64(t.DiskSize)/ss-1
	out := make([]snapshot.MBRTable, len(l.MBRTables))
	for i, tb := range l.MBRTables {
		sec, err := hex.DecodeString(tb.Entries)
		if err != nil || len(sec) != 4*mbrEntrySize {
			return nil, fmt.Errorf("layout.mbr_tables[%d] is not 64 bytes of hex", i)
		}
		for slot := range 4 {
			b := sec[slot*mbrEntrySize:]
			typ, start32, size32 := b[4], binary.LittleEndian.Uint32(b[8:12]), binary.LittleEndian.Uint32(b[12:16])
			if size32 == 0 {
				continue
			}
			base := tb.Sector
			if tb.Sector == 0 {
				base = 0
			} else if isExtendedType(typ) {
				base = extStart
			}
			start := base + uint64(start32)
			end := start + uint64(size32) - 1
			newEnd, ok := moved[end]
			if l.Table == "gpt" && typ == mbrTypeProtected && size32 != 0xffffffff && end == min(oldLast, 0xffffffff) {
				newEnd, ok = min(newLast, 0xffffffff), true
			}
			if !ok || newEnd == end {
				continue
			}
			if newEnd < start {
				return nil, fmt.Errorf("MBR entry %d of the table at sector %d starts at sector %d, past the target's last sector %d", slot+1, tb.Sector, start, newLast)
			}
			binary.LittleEndian.PutUint32(b[12:16], uint32(newEnd-start+1))
			if bytes.Equal(b[5:8], chs(end)) {
				copy(b[5:8], chs(newEnd))
			}
		}
		out[i] = snapshot.MBRTable{Sector: tb.Sector, Entries: hex.EncodeToString(sec)}
	}
	return out, nil
}

// growLast extends the partition that ends last (and, for an MBR logical
// partition, its extended container) to sector last.
func growLast(t *snapshot.Layout, last uint64, ss int) string {
	pick := -1
	for i, p := range t.Partitions {
		if !p.Extended && (pick < 0 || p.Start+p.Size > t.Partitions[pick].Start+t.Partitions[pick].Size) {
			pick = i
		}
	}
	if pick < 0 {
		return "--grow-last: the layout has no partition to grow"
	}
	p := &t.Partitions[pick]
	end := p.Start + p.Size - 1
	for _, q := range t.Partitions {
		if q.Extended && !p.Logical && q.Start+q.Size-1 > end {
			return fmt.Sprintf("--grow-last: partition %d is followed by extended partition %d and cannot grow", p.Number, q.Number)
		}
	}
	if end >= last {
		return fmt.Sprintf("--grow-last: partition %d already ends at the last usable sector %d", p.Number, last)
	}
	old := p.Size
	p.Size = last - p.Start + 1
	if p.Logical {
		for i := range t.Partitions {
			if q := &t.Partitions[i]; q.Extended && q.Start <= p.Start && p.Start < q.Start+q.Size {
				q.Size = last - q.Start + 1
			}
		}
	}
	return fmt.Sprintf("--grow-last: partition %d grows from %d to %d sectors (%s to %s); the file system inside is NOT grown: grow it after the restore (resize2fs, xfs_growfs, ntfsresize, ...)",
		p.Number, old, p.Size, units.Bytes(int64(old)*int64(ss)), units.Bytes(int64(p.Size)*int64(ss)))
}

// tableWrite is one sector run WriteLayout writes. Table is the part of it
// that holds the table proper: the rest (boot code, padding) may be
// overwritten by boot-area extents afterwards.
type tableWrite struct {
	What  string
	Off   int64
	Data  []byte
	Table span
}

// encodeLayout renders t's table sectors in memory.
func encodeLayout(t *snapshot.Layout) ([]tableWrite, error) {
	switch t.Table {
	case "gpt":
		return encodeGPT(t)
	case "mbr":
		return encodeMBR(t)
	}
	return nil, nil
}

func encodeGPT(t *snapshot.Layout) ([]tableWrite, error) {
	ss := t.LogicalSectorSize
	n := t.PartitionEntries
	esec := gptEntrySectors(n, ss)
	lastLBA := uint64(t.DiskSize)/uint64(ss) - 1
	diskGUID, err := guidOrNew(t.DiskGUID)
	if err != nil {
		return nil, fmt.Errorf("disk GUID: %w", err)
	}
	arr := make([]byte, int(esec)*ss)
	for _, p := range t.Partitions {
		if p.Number < 1 || p.Number > n {
			return nil, fmt.Errorf("partition %d does not fit a GPT of %d entries", p.Number, n)
		}
		typ, err := parseGUID(p.Type)
		if err != nil {
			return nil, fmt.Errorf("partition %d type: %w", p.Number, err)
		}
		id, err := guidOrNew(p.GUID)
		if err != nil {
			return nil, fmt.Errorf("partition %d GUID: %w", p.Number, err)
		}
		e := gptEntry{Type: typ, GUID: id, First: p.Start, Last: p.Start + p.Size - 1, Attributes: p.Attributes, Name: p.Name}
		if err := e.marshal(arr[(p.Number-1)*gptEntrySize:]); err != nil {
			return nil, fmt.Errorf("partition %d: %w", p.Number, err)
		}
	}
	h := gptHeader{
		MyLBA: 1, AltLBA: lastLBA,
		FirstUsable: t.FirstUsableLBA, LastUsable: t.LastUsableLBA,
		DiskGUID: diskGUID, EntriesLBA: t.PartitionEntriesLBA,
		NumEntries: uint32(n), EntrySize: gptEntrySize,
		EntriesCRC: crc32.ChecksumIEEE(arr[:n*gptEntrySize]),
	}
	b := h
	b.MyLBA, b.AltLBA, b.EntriesLBA = lastLBA, 1, lastLBA-esec

	// Protective MBR as sgdisk writes it: one 0xEE entry from sector 1 to
	// the end of the disk (or 2^32-1 sectors).
	pmbr := make([]byte, ss)
	sig, err := parseMBRSignature(t.MBRSignature)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint32(pmbr[mbrSignatureOffset:], sig)
	if err := putReserved(pmbr, t.MBRReserved); err != nil {
		return nil, err
	}
	if len(t.MBRTables) > 0 {
		// The source's own protective MBR entries (boot flag, CHS,
		// hybrid entries), adapted to the target by TargetLayout.
		d, err := mbrTableSectors(t)
		if err != nil {
			return nil, err
		}
		copy(pmbr[mbrTableOffset:mbrSize], d[0][mbrTableOffset:mbrSize])
	} else {
		putMBREntry(pmbr, 0, mbrEntry{Type: mbrTypeProtected, Start: 1, Size: uint32(min(lastLBA, 0xffffffff))}, 1)
	}
	pmbr[510], pmbr[511] = 0x55, 0xaa

	sector := func(lba uint64) int64 { return int64(lba) * int64(ss) }
	whole := func(off int64, n int) span { return span{off, off + int64(n)} }
	return []tableWrite{
		{"protective MBR", 0, pmbr, span{mbrSignatureOffset, mbrSize}},
		{"primary GPT entries", sector(h.EntriesLBA), arr, whole(sector(h.EntriesLBA), len(arr))},
		{"primary GPT header", sector(1), h.marshal(ss), whole(sector(1), ss)},
		{"backup GPT entries", sector(b.EntriesLBA), arr, whole(sector(b.EntriesLBA), len(arr))},
		{"backup GPT header", sector(lastLBA), b.marshal(ss), whole(sector(lastLBA), ss)},
	}, nil
}

func encodeMBR(t *snapshot.Layout) ([]tableWrite, error) {
	ss := int64(t.LogicalSectorSize)
	lba0 := make([]byte, ss)
	sig, err := parseMBRSignature(t.MBRSignature)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint32(lba0[mbrSignatureOffset:], sig)
	if err := putReserved(lba0, t.MBRReserved); err != nil {
		return nil, err
	}
	lba0[510], lba0[511] = 0x55, 0xaa
	writes := []tableWrite{{"MBR", 0, lba0, span{mbrSignatureOffset, mbrSize}}}
	if len(t.MBRTables) > 0 {
		// The source's own tables, byte for byte (adapted to the target
		// by TargetLayout): LBA 0 and every EBR at its sector, whatever
		// the chain's shape.
		d, err := mbrTableSectors(t)
		if err != nil {
			return nil, err
		}
		for _, tb := range t.MBRTables {
			off := int64(tb.Sector) * ss
			if tb.Sector == 0 {
				copy(lba0[mbrTableOffset:], d[0][mbrTableOffset:])
				continue
			}
			writes = append(writes, tableWrite{fmt.Sprintf("EBR at sector %d", tb.Sector), off, d[off], span{off + mbrTableOffset, off + mbrSize}})
		}
		return writes, nil
	}

	entry := func(p snapshot.Partition, relTo uint64) (mbrEntry, error) {
		typ, err := parseMBRType(p.Type)
		if err != nil {
			return mbrEntry{}, fmt.Errorf("partition %d: %w", p.Number, err)
		}
		if p.Start+p.Size > 1<<32 {
			return mbrEntry{}, fmt.Errorf("partition %d ends beyond the 2 TiB an MBR can address (with 512-byte sectors)", p.Number)
		}
		e := mbrEntry{Type: typ, Start: uint32(p.Start - relTo), Size: uint32(p.Size)}
		if p.Bootable {
			e.Status = 0x80
		}
		return e, nil
	}
	var logicals []snapshot.Partition
	var ext *snapshot.Partition
	for i, p := range t.Partitions {
		switch {
		case p.Logical:
			logicals = append(logicals, p)
			continue
		case p.Number < 1 || p.Number > 4:
			return nil, fmt.Errorf("primary partition %d: MBR primaries are numbered 1 to 4", p.Number)
		case p.Extended:
			if ext != nil {
				return nil, fmt.Errorf("partitions %d and %d are both extended: only one is supported", ext.Number, p.Number)
			}
			ext = &t.Partitions[i]
		}
		e, err := entry(p, 0)
		if err != nil {
			return nil, err
		}
		putMBREntry(lba0, p.Number-1, e, p.Start)
	}
	if ext == nil {
		if len(logicals) > 0 {
			return nil, fmt.Errorf("logical partition %d has no extended partition to live in", logicals[0].Number)
		}
		return writes, nil
	}
	// The chain of EBRs: each describes one logical partition (relative
	// to the EBR) and links to the next EBR (relative to the container),
	// the link covering the next EBR through the end of its partition, as
	// util-linux writes it.
	ebrs := make([]uint64, len(logicals))
	for i, p := range logicals {
		ebr := p.EBR
		if ebr == 0 {
			ebr = ext.Start
			if i > 0 {
				ebr = logicals[i-1].Start + logicals[i-1].Size
			}
		}
		if ebr < ext.Start || ebr >= p.Start || p.Start+p.Size > ext.Start+ext.Size {
			return nil, fmt.Errorf("logical partition %d (sectors %d-%d, EBR at %d) is not inside extended partition %d (sectors %d-%d)",
				p.Number, p.Start, p.Start+p.Size-1, ebr, ext.Number, ext.Start, ext.Start+ext.Size-1)
		}
		ebrs[i] = ebr
	}
	if len(logicals) == 0 {
		// No logical partition: an empty EBR, as util-linux writes it, so
		// no stale chain is found.
		b := make([]byte, ss)
		b[510], b[511] = 0x55, 0xaa
		writes = append(writes, tableWrite{"empty EBR", int64(ext.Start) * ss, b, span{int64(ext.Start)*ss + mbrTableOffset, int64(ext.Start)*ss + mbrSize}})
	}
	for i, p := range logicals {
		b := make([]byte, ss)
		e, err := entry(p, ebrs[i])
		if err != nil {
			return nil, err
		}
		putMBREntry(b, 0, e, p.Start)
		if i+1 < len(logicals) {
			nx := logicals[i+1]
			link := mbrEntry{Type: 0x05, Start: uint32(ebrs[i+1] - ext.Start), Size: uint32(nx.Start + nx.Size - ebrs[i+1])}
			putMBREntry(b, 1, link, ebrs[i+1])
		}
		b[510], b[511] = 0x55, 0xaa
		off := int64(ebrs[i]) * ss
		writes = append(writes, tableWrite{fmt.Sprintf("EBR of partition %d", p.Number), off, b, span{off + mbrTableOffset, off + mbrSize}})
	}
	return writes, nil
}

// putReserved writes bytes 444..445 of LBA 0 from their hex form.
func putReserved(lba0 []byte, h string) error {
	if h == "" {
		return nil
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 2 {
		return fmt.Errorf("layout.mbr_reserved %q is not 4 hex digits", h)
	}
	copy(lba0[444:446], b)
	return nil
}

// guidOrNew parses s, or makes a random (version 4) GUID when s is empty.
func guidOrNew(s string) ([16]byte, error) {
	if s != "" {
		return parseGUID(s)
	}
	var raw [16]byte
	rand.Read(raw[:])
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	return parseGUID(fmt.Sprintf("%x-%x-%x-%x-%x", raw[0:4], raw[4:6], raw[6:8], raw[8:10], raw[10:16]))
}

// FitExtents returns the extents of a snapshot to write onto a disk laid
// out as target (from TargetLayout), with notes for those left out. A
// boot-area extent that lies past the target's end or overlaps its
// recreated table sectors (the backup GPT of a smaller disk) is left out;
// a partition or disk extent that does not fit is an error.
func FitExtents(target *snapshot.Layout, extents []snapshot.Extent) ([]snapshot.Extent, []string, error) {
	writes, err := encodeLayout(target)
	if err != nil {
		return nil, nil, err
	}
	var keep []snapshot.Extent
	var notes []string
	for _, e := range extents {
		end := e.Offset + e.Length
		clash := ""
		if end > target.DiskSize {
			clash = fmt.Sprintf("lies past the target's end (%d bytes)", target.DiskSize)
		}
		for _, w := range writes {
			if e.Offset < w.Table.End && w.Table.Off < end {
				clash = "lies on the target's " + w.What
			}
		}
		switch {
		case clash == "":
			keep = append(keep, e)
		case e.Kind == snapshot.ExtentBootArea:
			notes = append(notes, fmt.Sprintf("boot area at byte %d (%d bytes) %s: not restored", e.Offset, e.Length, clash))
		default:
			return nil, nil, fmt.Errorf("%s at byte %d (%d bytes) %s", describeExtent(e), e.Offset, e.Length, clash)
		}
	}
	return keep, notes, nil
}

// ClearedSpans returns the byte ranges ClearTable zeroes on a disk of size
// bytes with ss-byte sectors: [0, head) — the MBR, the primary GPT and the
// gap where stale headers of either sector size lie — and [tail, size),
// the backup GPT.
func ClearedSpans(size, ss int64) (head, tail int64) {
	head = min(34*ss, size)
	tail = max(size-33*ss, head)
	return head, tail
}

// ClearTable destroys the partition table on target (both GPT headers and the
// MBR's table) so that a half-restored disk cannot boot. It zeroes the first
// 34 and the last 33 logical sectors (512 bytes for an image file, which
// covers a 4Kn image's headers too).
func ClearTable(target *os.File) error {
	g, err := GeometryOf(target)
	if err != nil {
		return err
	}
	head, tail := ClearedSpans(g.Size, int64(max(g.LogicalSectorSize, 512)))
	for _, s := range []span{{0, head}, {tail, g.Size}} {
		if _, err := target.WriteAt(make([]byte, s.End-s.Off), s.Off); err != nil {
			return fmt.Errorf("%s: clear partition table at byte %d: %w", target.Name(), s.Off, err)
		}
	}
	if err := target.Sync(); err != nil {
		return fmt.Errorf("%s: flush: %w", target.Name(), err)
	}
	return nil
}
