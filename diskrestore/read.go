package diskrestore

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/rewind-bmr/rewind/snapshot"
)

// Span is a half-open byte range [Off, End) of a disk.
type Span struct{ Off, End int64 }

// span is the package's short name for Span.
type span = Span

// bootAreaMergeGap joins two non-zero runs of one free region into one
// boot-area extent when fewer zero bytes than this separate them: fewer,
// larger extents cost less in the manifest than a few zero sectors in it.
const bootAreaMergeGap = 64 << 10

// ReadLayout reads the partition table of a disk or image of size bytes and
// returns the layout to record plus the extents to capture: every partition
// and every non-zero boot area outside partitions and table sectors. A disk
// without a partition table yields Layout.Table "none" and one disk extent.
//
// logicalSectorSize 0 means: ask the kernel when r is a block device, else
// look for a GPT header at 512 and 4096 bytes, else 512.
func ReadLayout(r io.ReaderAt, size int64, logicalSectorSize int) (*snapshot.Layout, []snapshot.Extent, error) {
	ss, pss := logicalSectorSize, 0
	device := false
	if f, ok := r.(*os.File); ok {
		if g, err := GeometryOf(f); err == nil && g.BlockDevice {
			if ss == 0 {
				ss = g.LogicalSectorSize
			}
			pss, device = g.PhysicalSectorSize, true
		}
	}
	guessed := ss == 0
	var guessNote string
	if ss == 0 {
		ss, guessNote = guessSectorSize(r, size)
	} else if ss == 512 && !device {
		// An image read with 512-byte sectors on request: refuse what
		// only fits 4096-byte sectors rather than capture it wrong (what
		// fits both is read as asked).
		if why := only4096(r, size); why != "" {
			return nil, nil, fmt.Errorf("512-byte sectors were asked for, but %s: give --sector-size 4096", why)
		}
		if _, note := guessSectorSize(r, size); note != "" {
			guessNote = "512-byte sectors were asked for, but the image's MBR looks like one of a disk with 4096-byte sectors (EBRs and file systems are where 4096-byte sectors put them): if so, capture it again with --sector-size 4096 (every non-zero byte is captured either way)"
		}
	}
	switch ss {
	case 512, 1024, 2048, 4096:
	default:
		return nil, nil, fmt.Errorf("logical sector size %d is not supported (512, 1024, 2048 or 4096)", ss)
	}
	if pss == 0 {
		pss = ss
	}
	if size < int64(ss)*2 || size%int64(ss) != 0 {
		if size < int64(ss)*2 {
			return nil, nil, fmt.Errorf("disk size %d bytes is too small: a disk holds at least two %d-byte sectors", size, ss)
		}
		whole := (size + int64(ss) - 1) / int64(ss) * int64(ss)
		return nil, nil, fmt.Errorf("disk size %d bytes is not a multiple of its %d-byte sectors: a disk image is whole sectors; "+
			"if bytes were appended to one, cut it to %d bytes (truncate -s %d), else pad it with zeros to %d bytes (truncate -s %d) to capture it whole",
			size, ss, size-size%int64(ss), size-size%int64(ss), whole, whole)
	}
	l := &snapshot.Layout{Table: "none", LogicalSectorSize: ss, PhysicalSectorSize: pss, DiskSize: size, Partitions: []snapshot.Partition{}}
	if guessNote != "" {
		l.Notes = append(l.Notes, guessNote)
	}

	lba0 := make([]byte, ss)
	lba1 := make([]byte, ss)
	if err := readFull(r, lba0, 0); err != nil {
		return nil, nil, err
	}
	if err := readFull(r, lba1, int64(ss)); err != nil {
		return nil, nil, err
	}

	var tables []span
	var err error
	switch detectTable(lba0, lba1) {
	case "gpt":
		tables, err = readGPT(r, l, lba0)
	case "mbr":
		tables, err = readMBR(r, l, lba0)
	default:
		l.Notes = append(l.Notes, "no partition table was recognised (no MBR or GPT): the whole disk is captured as one extent and restored as it is")
		return l, []snapshot.Extent{{Kind: snapshot.ExtentDisk, Offset: 0, Length: size}}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if b := lba0[444:446]; b[0] != 0 || b[1] != 0 {
		l.MBRReserved = hex.EncodeToString(b)
	}
	sort.Slice(l.Partitions, func(i, j int) bool { return l.Partitions[i].Number < l.Partitions[j].Number })

	var extents []snapshot.Extent
	used := append([]span(nil), tables...)
	sectors := uint64(size) / uint64(ss)
	for i := range l.Partitions {
		p := &l.Partitions[i]
		// Bound the sector numbers before multiplying: a table entry
		// starting at sector 2^55 would otherwise wrap to byte 0.
		if p.Start == 0 || p.Size == 0 || p.Start >= sectors || p.Size > sectors-p.Start {
			hint := "the table is damaged; fix it with fdisk or sgdisk first"
			if guessed && ss == 512 {
				hint += ", or, if this is an image of a disk with 4096-byte sectors, give --sector-size 4096"
			}
			return nil, nil, fmt.Errorf("partition %d (start sector %d, %d sectors) lies outside the disk of %d sectors (%d bytes): %s",
				p.Number, p.Start, p.Size, sectors, size, hint)
		}
		off, n := int64(p.Start)*int64(ss), int64(p.Size)*int64(ss)
		if p.Extended {
			continue // its logical partitions and EBRs are captured, not the container
		}
		fs := ProbeFS(io.NewSectionReader(r, off, n))
		p.FSType, p.FSLabel = fs.Type, fs.Label
		extents = append(extents, snapshot.Extent{Kind: snapshot.ExtentPartition, Offset: off, Length: n, Partition: p.Number})
		used = append(used, span{off, off + n})
	}
	for _, free := range Complement(size, used) {
		runs, err := nonZeroRuns(r, free, int64(ss))
		if err != nil {
			return nil, nil, err
		}
		for _, s := range runs {
			extents = append(extents, snapshot.Extent{Kind: snapshot.ExtentBootArea, Offset: s.Off, Length: s.End - s.Off})
		}
	}
	sort.Slice(extents, func(i, j int) bool { return extents[i].Offset < extents[j].Offset })
	for _, e := range extents {
		for _, t := range tables {
			if e.Offset < t.End && t.Off < e.Offset+e.Length {
				return nil, nil, fmt.Errorf("%s (bytes %d-%d) lies on the partition table's own sectors (bytes %d-%d): Rewind cannot capture an inconsistent table; fix it with sgdisk -v / fdisk first",
					describeExtent(e), e.Offset, e.Offset+e.Length-1, t.Off, t.End-1)
			}
		}
	}
	for i := 1; i < len(extents); i++ {
		a, b := extents[i-1], extents[i]
		if b.Offset < a.Offset+a.Length {
			return nil, nil, fmt.Errorf("partitions overlap: %s at byte %d (%d bytes) and %s at byte %d: Rewind cannot capture an inconsistent table; fix it with sgdisk -v / fdisk first",
				describeExtent(a), a.Offset, a.Length, describeExtent(b), b.Offset)
		}
	}
	if err := CheckRestorable(l, extents); err != nil {
		return nil, nil, fmt.Errorf("%w; fix the table (sgdisk -v, fdisk) or capture the disk as a raw image", err)
	}
	if note := normalisedTable(r, l); note != "" {
		l.Notes = append(l.Notes, note)
	}
	return l, extents, nil
}

// normalisedTable compares the table sectors restore writes for l onto a
// disk of its own size with the bytes r holds there, and says where they
// differ: a table that records what Rewind does not (a GPT header larger
// than 92 bytes, data in its reserved bytes or in unused entries, another
// revision) is restored as a standard one, and the user is told so.
func normalisedTable(r io.ReaderAt, l *snapshot.Layout) string {
	t, _, err := TargetLayout(l, l.DiskSize, 0, WriteOptions{})
	if err != nil {
		return ""
	}
	writes, err := encodeLayout(t)
	if err != nil {
		return ""
	}
	var where []string
	for _, w := range writes {
		// Only the table's bytes: the rest of its sectors (boot code) is
		// captured as data, as a restore writes it (TableOnly).
		w.Data, w.Off = w.Data[w.Table.Off-w.Off:w.Table.End-w.Off], w.Table.Off
		got := make([]byte, len(w.Data))
		if readFull(r, got, w.Off) != nil {
			continue
		}
		if i := firstDiff(got, w.Data); i >= 0 {
			where = append(where, fmt.Sprintf("%s (first at byte %d)", w.What, w.Off+int64(i)))
		}
	}
	if len(where) == 0 {
		return ""
	}
	return fmt.Sprintf("the %s partition table holds bytes Rewind does not record, in %s: the partitions are captured, but restore writes a standard table there",
		l.Table, strings.Join(where, ", "))
}

// firstDiff is the index of the first byte where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// CheckRestorable runs what a restore checks before it writes, as a dry
// run onto a disk of the layout's own size: TargetLayout, the table
// encoder and FitExtents, which must keep every extent. Capture calls it
// (through ReadLayout) so that it never writes a snapshot that restore
// refuses or restores only in part.
func CheckRestorable(l *snapshot.Layout, extents []snapshot.Extent) error {
	if l == nil || l.Table == "none" {
		return nil
	}
	t, _, err := TargetLayout(l, l.DiskSize, 0, WriteOptions{})
	if err == nil {
		var keep []snapshot.Extent
		var dropped []string
		keep, dropped, err = FitExtents(t, extents)
		if err == nil && len(keep) != len(extents) {
			err = fmt.Errorf("%d extents would be left out: %s", len(extents)-len(keep), strings.Join(dropped, "; "))
		}
	}
	if err != nil {
		return fmt.Errorf("the %s layout could not be restored even onto a disk of its own size: %w", l.Table, err)
	}
	return nil
}

func describeExtent(e snapshot.Extent) string {
	if e.Kind == snapshot.ExtentPartition {
		return fmt.Sprintf("partition %d", e.Partition)
	}
	return e.Kind
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(b), off, err)
}

// guessSectorSize decides the logical sector size of an image file, which
// does not say: a valid GPT header at byte 512 or 4096, else an MBR whose
// partitions and EBRs only make sense (or make more sense: file systems
// and EBRs where its entries point) in 4096-byte sectors, else 512. note
// says when 4096 was chosen, and why.
func guessSectorSize(r io.ReaderAt, size int64) (ss int, note string) {
	switch {
	case gptAt(r, 512):
		return 512, ""
	case gptAt(r, 4096):
		return 4096, "the image has a GPT for 4096-byte sectors: it is read as a disk with 4096-byte logical sectors"
	}
	lba0 := make([]byte, mbrSize)
	if readFull(r, lba0, 0) != nil {
		return 512, ""
	}
	ok512, ev512 := mbrPlausible(r, size, lba0, 512)
	ok4k, ev4k := mbrPlausible(r, size, lba0, 4096)
	if ok4k && (!ok512 || ev4k > ev512) {
		return 4096, "the image's MBR only makes sense with 4096-byte sectors (its partitions, EBRs and file systems are where 4096-byte sectors put them): it is read as a disk with 4096-byte logical sectors; give --sector-size 512 to override"
	}
	return 512, ""
}

// only4096 says why an image's table fits 4096-byte sectors and not 512,
// or "".
func only4096(r io.ReaderAt, size int64) string {
	if gptAt(r, 4096) && !gptAt(r, 512) {
		return "the image has a GPT for 4096-byte sectors"
	}
	lba0 := make([]byte, mbrSize)
	if readFull(r, lba0, 0) != nil {
		return ""
	}
	ok512, _ := mbrPlausible(r, size, lba0, 512)
	ok4k, _ := mbrPlausible(r, size, lba0, 4096)
	if ok4k && !ok512 {
		return "the image's MBR has partitions that only fit 4096-byte sectors"
	}
	return ""
}

// gptAt reports a valid GPT header (signature and CRC) at byte off.
func gptAt(r io.ReaderAt, off int64) bool {
	b := make([]byte, 512)
	if readFull(r, b, off) != nil {
		return false
	}
	_, err := parseGPTHeader(b)
	return err == nil
}

// mbrPlausible reports whether the MBR in lba0 fits a disk of size bytes
// with ss-byte sectors, and how much evidence backs that: an EBR with its
// 0x55AA mark where an extended partition starts, a file system where a
// partition starts.
func mbrPlausible(r io.ReaderAt, size int64, lba0 []byte, ss int64) (ok bool, evidence int) {
	entries, valid := parseMBREntries(lba0)
	if !valid || size%ss != 0 {
		return false, 0
	}
	buf := make([]byte, ss)
	for _, e := range entries {
		if !e.used() || e.Type == mbrTypeProtected {
			continue
		}
		start, end := int64(e.Start)*ss, (int64(e.Start)+int64(e.Size))*ss
		if end > size {
			return false, 0
		}
		if isExtendedType(e.Type) {
			if readFull(r, buf, start) != nil {
				return false, 0
			}
			switch {
			case buf[510] == 0x55 && buf[511] == 0xaa:
				evidence += 2
			case !snapshot.IsZero(buf):
				evidence--
			}
			continue
		}
		if ProbeFS(io.NewSectionReader(r, start, end-start)).Type != "" {
			evidence++
		}
	}
	return true, evidence
}

// detectTable decides between "gpt", "mbr" and "none" from LBA 0 and 1.
func detectTable(lba0, lba1 []byte) string {
	entries, mbrOK := parseMBREntries(lba0)
	if mbrOK && looksLikeBootSector(lba0) {
		mbrOK = false // a file system on the whole disk ("superfloppy")
	}
	anyUsed := false
	for _, e := range entries {
		if mbrOK && e.Type == mbrTypeProtected {
			return "gpt"
		}
		anyUsed = anyUsed || e.used()
	}
	if _, err := parseGPTHeader(lba1); err == nil && (!mbrOK || !anyUsed) {
		return "gpt"
	}
	if mbrOK {
		return "mbr"
	}
	return "none"
}

// looksLikeBootSector reports a FAT, exFAT or NTFS boot sector in LBA 0.
func looksLikeBootSector(b []byte) bool {
	if b[0] != 0xeb && b[0] != 0xe9 {
		return false
	}
	return string(b[3:11]) == "NTFS    " || string(b[3:11]) == "EXFAT   " ||
		string(b[0x36:0x39]) == "FAT" || string(b[0x52:0x55]) == "FAT"
}

// readGPT fills l from the primary GPT, or from the backup when the primary
// is damaged, and returns the table spans: LBA 0's signature and table,
// both headers and both entry arrays.
func readGPT(r io.ReaderAt, l *snapshot.Layout, lba0 []byte) ([]span, error) {
	ss := int64(l.LogicalSectorSize)
	lastLBA := uint64(l.DiskSize/ss) - 1
	hdr, entries, primErr := readGPTAt(r, 1, ss, lastLBA+1)
	primaryEntriesLBA := hdr.EntriesLBA
	backupLBA := hdr.AltLBA
	if primErr != nil {
		var backErr error
		hdr, entries, backErr = readGPTAt(r, lastLBA, ss, lastLBA+1)
		if backErr != nil {
			return nil, fmt.Errorf("GPT: primary header: %v; backup header at sector %d: %v", primErr, lastLBA, backErr)
		}
		primaryEntriesLBA = 2
		backupLBA = lastLBA
		l.Notes = append(l.Notes, fmt.Sprintf("the primary GPT is damaged (%v): the table was read from the backup GPT at sector %d, and restore writes both", primErr, lastLBA))
	}
	if backupLBA == 0 || backupLBA > lastLBA {
		backupLBA = lastLBA
	}
	n := int(hdr.NumEntries)
	esec := gptEntrySectors(n, int(ss))
	backupEntriesLBA := backupLBA - esec
	if bh, _, err := readGPTAt(r, backupLBA, ss, lastLBA+1); err == nil {
		backupEntriesLBA = bh.EntriesLBA
	}

	l.Table = "gpt"
	l.DiskGUID = guidString(hdr.DiskGUID)
	l.FirstUsableLBA = hdr.FirstUsable
	l.LastUsableLBA = hdr.LastUsable
	l.PartitionEntries = n
	l.PartitionEntriesLBA = primaryEntriesLBA
	if sig := binary.LittleEndian.Uint32(lba0[mbrSignatureOffset:]); sig != 0 {
		l.MBRSignature = mbrSignature(lba0)
	}
	// The protective MBR's entries come back as they are: its boot flag
	// (some BIOSes need it), the 0xEE entry's CHS fields, hybrid entries.
	if ents, ok := parseMBREntries(lba0); ok && slices.ContainsFunc(ents[:], func(e mbrEntry) bool { return e.Type == mbrTypeProtected }) {
		recordMBRTable(l, 0, lba0)
	} else {
		l.Notes = append(l.Notes, "the disk has a GPT but no valid protective MBR (no 0xEE entry): restore writes a standard one")
	}
	for i, e := range entries {
		if !e.used() {
			continue
		}
		if e.Last < e.First {
			return nil, fmt.Errorf("GPT entry %d ends (sector %d) before it starts (sector %d)", i+1, e.Last, e.First)
		}
		l.Partitions = append(l.Partitions, snapshot.Partition{
			Number:     i + 1,
			Start:      e.First,
			Size:       e.Last - e.First + 1,
			Type:       guidString(e.Type),
			GUID:       guidString(e.GUID),
			Name:       e.Name,
			Attributes: e.Attributes,
		})
	}
	if backupLBA != lastLBA {
		l.Notes = append(l.Notes, fmt.Sprintf("the backup GPT header was at sector %d, not at the disk's last sector %d: restore writes it at the end", backupLBA, lastLBA))
	}
	return []span{
		{mbrSignatureOffset, mbrSize},
		{ss, 2 * ss},
		{int64(primaryEntriesLBA) * ss, int64(primaryEntriesLBA+esec) * ss},
		{int64(backupEntriesLBA) * ss, int64(backupEntriesLBA+esec) * ss},
		{int64(backupLBA) * ss, int64(backupLBA+1) * ss},
		// Where restore writes the backup GPT, whatever the source had.
		{int64(lastLBA-esec) * ss, int64(lastLBA+1) * ss},
	}, nil
}

// readGPTAt reads and checks the GPT header at lba and its entry array.
func readGPTAt(r io.ReaderAt, lba uint64, ss int64, sectors uint64) (gptHeader, []gptEntry, error) {
	b := make([]byte, ss)
	if err := readFull(r, b, int64(lba)*ss); err != nil {
		return gptHeader{}, nil, err
	}
	h, err := parseGPTHeader(b)
	if err != nil {
		return h, nil, err
	}
	if h.MyLBA != lba {
		return h, nil, fmt.Errorf("GPT header at sector %d says it is at sector %d", lba, h.MyLBA)
	}
	// Bound the header's sector numbers before any arithmetic on them.
	esec := gptEntrySectors(int(h.NumEntries), int(ss))
	if h.EntriesLBA < 2 || h.EntriesLBA >= sectors || esec > sectors-h.EntriesLBA ||
		h.FirstUsable > h.LastUsable || h.LastUsable >= sectors || h.AltLBA >= sectors {
		return h, nil, fmt.Errorf("GPT header at sector %d points outside the disk of %d sectors (entries at %d, usable %d-%d, other header at %d)",
			lba, sectors, h.EntriesLBA, h.FirstUsable, h.LastUsable, h.AltLBA)
	}
	arr := make([]byte, int(h.NumEntries)*gptEntrySize)
	if err := readFull(r, arr, int64(h.EntriesLBA)*ss); err != nil {
		return h, nil, err
	}
	if got := crc32.ChecksumIEEE(arr); got != h.EntriesCRC {
		return h, nil, fmt.Errorf("GPT entries at sector %d: CRC 0x%08x, header says 0x%08x", h.EntriesLBA, got, h.EntriesCRC)
	}
	entries := make([]gptEntry, h.NumEntries)
	for i := range entries {
		entries[i] = parseGPTEntry(arr[i*gptEntrySize:])
	}
	return h, entries, nil
}

// maxEBRs bounds the extended boot records of one chain: far more than
// any tool makes (the kernel itself shows at most a few hundred partitions)
// and small enough to bound the layout.
const maxEBRs = snapshot.MaxPartitions

// readMBR fills l from the MBR and the EBR chain of the extended
// partition, records the entry table of LBA 0 and of every EBR as the
// source has them (so restore writes them back byte for byte), and
// returns the table spans: LBA 0's signature and table, and the table
// part of every EBR.
func readMBR(r io.ReaderAt, l *snapshot.Layout, lba0 []byte) ([]span, error) {
	entries, _ := parseMBREntries(lba0)
	l.Table = "mbr"
	l.MBRSignature = mbrSignature(lba0)
	recordMBRTable(l, 0, lba0)
	tables := []span{{mbrSignatureOffset, mbrSize}}
	next := 5
	extended := 0
	for i, e := range entries {
		if !e.used() {
			continue
		}
		ext := isExtendedType(e.Type)
		l.Partitions = append(l.Partitions, mbrPartition(i+1, e, uint64(e.Start), ext))
		if !ext {
			continue
		}
		if extended != 0 {
			return nil, fmt.Errorf("MBR: partitions %d and %d are both extended partitions: Rewind recreates one extended partition only", extended, i+1)
		}
		extended = i + 1
		t, err := readEBRChain(r, l, i+1, e, &next)
		if err != nil {
			return nil, err
		}
		tables = append(tables, t...)
	}
	return tables, nil
}

// readEBRChain follows the chain of extended boot records of extended
// partition number (entry e of the MBR) by the rules the Linux kernel
// applies (block/partitions/msdos.c): each EBR's data entries are
// logical partitions, relative to the EBR, in slot order (an entry in
// slot 3 or 4 only when it lies inside the container); its first entry
// of an extended type (0x05, 0x0f, 0x85) links to the next EBR, relative
// to the container's start, in whatever slot it is; an EBR without data
// entries (an empty first EBR that only links on) is followed; a sector
// without the 0x55AA mark ends the chain. A chain that comes back to an
// EBR it visited is refused; chains of thousands of logical partitions are
// not loops.
func readEBRChain(r io.ReaderAt, l *snapshot.Layout, number int, e mbrEntry, next *int) ([]span, error) {
	ss := int64(l.LogicalSectorSize)
	first, firstSize := uint64(e.Start), uint64(e.Size)
	this, thisSize := first, firstSize
	seen := map[uint64]uint64{} // EBR sector -> the EBR that linked to it
	var tables []span
	prev := uint64(0)
	empty := 0
	buf := make([]byte, ss)
	for {
		if from, ok := seen[this]; ok {
			return nil, fmt.Errorf("MBR: the chain of extended boot records in partition %d loops: the EBR at sector %d links back to sector %d, visited before (linked from %d): fix the table with fdisk",
				number, prev, this, from)
		}
		if len(seen) >= maxEBRs {
			return nil, fmt.Errorf("MBR: the chain of extended boot records in partition %d is longer than %d EBRs", number, maxEBRs)
		}
		seen[this] = prev
		if this < first || this-first >= firstSize {
			return nil, fmt.Errorf("MBR: the EBR at sector %d (linked from sector %d) lies outside extended partition %d (sectors %d-%d): fix the table with fdisk",
				this, prev, number, first, first+firstSize-1)
		}
		if int64(this+1)*ss > l.DiskSize {
			return nil, fmt.Errorf("MBR: extended boot record at sector %d lies beyond the disk", this)
		}
		if err := readFull(r, buf, int64(this)*ss); err != nil {
			return nil, err
		}
		if buf[510] != 0x55 || buf[511] != 0xaa {
			if this == first {
				// No chain at all: the kernel sees no logical partition.
				// The sector is not a table: whatever it holds is
				// captured and restored as it is.
				return tables, nil
			}
			l.Notes = append(l.Notes, fmt.Sprintf("extended partition %d: the EBR chain ends at sector %d (linked from sector %d), which has no 0x55AA mark, as the kernel ends it", number, this, prev))
			return tables, nil
		}
		recordMBRTable(l, this, buf)
		tables = append(tables, span{int64(this)*ss + mbrTableOffset, int64(this)*ss + mbrSize})
		ents := rawMBREntries(buf)
		found := false
		for slot, x := range ents {
			if x.Size == 0 || x.Type == 0 || isExtendedType(x.Type) {
				continue
			}
			abs := this + uint64(x.Start)
			if slot >= 2 && (uint64(x.Start)+uint64(x.Size) > thisSize || abs < first || abs+uint64(x.Size) > first+firstSize) {
				continue // the kernel ignores such an entry in slots 3 and 4
			}
			if x.Start == 0 {
				return nil, fmt.Errorf("MBR: logical partition in slot %d of the EBR at sector %d starts on that EBR: fix the table with fdisk", slot+1, this)
			}
			p := mbrPartition(*next, x, abs, false)
			p.Logical, p.EBR = true, this
			l.Partitions = append(l.Partitions, p)
			*next++
			found = true
		}
		if found {
			empty = 0
		} else if empty++; empty > 100 {
			// The kernel gives up after 100 EBRs in a row without a
			// logical partition; so does Rewind, and says so.
			l.Notes = append(l.Notes, fmt.Sprintf("extended partition %d: 100 EBRs in a row up to sector %d hold no logical partition; the chain is not followed further, as the kernel does not", number, this))
			return tables, nil
		}
		link := -1
		for slot, x := range ents {
			if x.Size != 0 && isExtendedType(x.Type) {
				link = slot
				break
			}
		}
		if link < 0 {
			return tables, nil
		}
		prev = this
		this, thisSize = first+uint64(ents[link].Start), uint64(ents[link].Size)
	}
}

// recordMBRTable appends sector's entry table (bytes 446..509 of b) to
// l.MBRTables.
func recordMBRTable(l *snapshot.Layout, sector uint64, b []byte) {
	l.MBRTables = append(l.MBRTables, snapshot.MBRTable{Sector: sector, Entries: hex.EncodeToString(b[mbrTableOffset:510])})
}

func mbrPartition(number int, e mbrEntry, start uint64, extended bool) snapshot.Partition {
	return snapshot.Partition{
		Number:   number,
		Start:    start,
		Size:     uint64(e.Size),
		Type:     fmt.Sprintf("0x%02x", e.Type),
		Bootable: e.Status == 0x80,
		Extended: extended,
	}
}

// Complement returns the parts of [0, size) that no span in covered
// touches, in order; spans may overlap, come in any order or reach past
// size.
func Complement(size int64, covered []Span) []Span {
	s := append([]Span(nil), covered...)
	sort.Slice(s, func(i, j int) bool { return s[i].Off < s[j].Off })
	var out []Span
	pos := int64(0)
	for _, u := range s {
		if u.Off > pos {
			out = append(out, Span{pos, min(u.Off, size)})
		}
		pos = max(pos, u.End)
		if pos >= size {
			break
		}
	}
	if pos < size {
		out = append(out, Span{pos, size})
	}
	return out
}

// nonZeroRuns scans free for non-zero bytes, one logical sector (or the
// part of one inside free) at a time, and returns the non-zero runs,
// joined across zero gaps shorter than bootAreaMergeGap.
func nonZeroRuns(r io.ReaderAt, free span, ss int64) ([]span, error) {
	const bufSize = 1 << 20
	buf := make([]byte, bufSize)
	var runs []span
	for pos := free.Off; pos < free.End; {
		if f, ok := r.(*os.File); ok {
			if data, err := seekData(f, pos); err == nil && data > pos {
				pos = min(data/ss*ss, free.End) // skip a hole of a sparse image
				pos = max(pos, free.Off)
				if pos >= free.End {
					break
				}
			}
		}
		n := min(int64(bufSize), free.End-pos)
		if err := readFull(r, buf[:n], pos); err != nil {
			return nil, err
		}
		for i := int64(0); i < n; {
			// Window: up to the next sector boundary, inside free.
			end := min((pos+i)/ss*ss+ss-pos, n)
			if !snapshot.IsZero(buf[i:end]) {
				a, b := pos+i, pos+end
				if k := len(runs) - 1; k >= 0 && a-runs[k].End < bootAreaMergeGap {
					runs[k].End = b
				} else {
					runs = append(runs, span{a, b})
				}
			}
			i = end
		}
		pos += n
	}
	return runs, nil
}
