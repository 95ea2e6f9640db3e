package diskrestore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"

	"github.com/rewind-bmr/rewind/snapshot"
)

// span is a half-open byte range [Off, End) of a disk.
type span struct{ Off, End int64 }

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
	if f, ok := r.(*os.File); ok {
		if g, err := GeometryOf(f); err == nil && g.BlockDevice {
			if ss == 0 {
				ss = g.LogicalSectorSize
			}
			pss = g.PhysicalSectorSize
		}
	}
	if ss == 0 {
		ss = guessSectorSize(r)
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
		return nil, nil, fmt.Errorf("disk size %d bytes is not a multiple of its %d-byte sectors, or too small", size, ss)
	}
	l := &snapshot.Layout{Table: "none", LogicalSectorSize: ss, PhysicalSectorSize: pss, DiskSize: size, Partitions: []snapshot.Partition{}}

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
		return l, []snapshot.Extent{{Kind: snapshot.ExtentDisk, Offset: 0, Length: size}}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(l.Partitions, func(i, j int) bool { return l.Partitions[i].Number < l.Partitions[j].Number })

	var extents []snapshot.Extent
	used := append([]span(nil), tables...)
	for i := range l.Partitions {
		p := &l.Partitions[i]
		off, n := int64(p.Start)*int64(ss), int64(p.Size)*int64(ss)
		if p.Start == 0 || off+n > size {
			return nil, nil, fmt.Errorf("partition %d (start sector %d, %d sectors) lies outside the disk of %d bytes", p.Number, p.Start, p.Size, size)
		}
		if p.Extended {
			continue // its logical partitions and EBRs are captured, not the container
		}
		fs := ProbeFS(io.NewSectionReader(r, off, n))
		p.FSType, p.FSLabel = fs.Type, fs.Label
		extents = append(extents, snapshot.Extent{Kind: snapshot.ExtentPartition, Offset: off, Length: n, Partition: p.Number})
		used = append(used, span{off, off + n})
	}
	for _, free := range complement(used, size) {
		runs, err := nonZeroRuns(r, free, int64(ss))
		if err != nil {
			return nil, nil, err
		}
		for _, s := range runs {
			extents = append(extents, snapshot.Extent{Kind: snapshot.ExtentBootArea, Offset: s.Off, Length: s.End - s.Off})
		}
	}
	sort.Slice(extents, func(i, j int) bool { return extents[i].Offset < extents[j].Offset })
	for i := 1; i < len(extents); i++ {
		a, b := extents[i-1], extents[i]
		if b.Offset < a.Offset+a.Length {
			return nil, nil, fmt.Errorf("partitions overlap: %s at byte %d (%d bytes) and %s at byte %d: Rewind cannot capture an inconsistent table; fix it with sgdisk -v / fdisk first",
				describeExtent(a), a.Offset, a.Length, describeExtent(b), b.Offset)
		}
	}
	return l, extents, nil
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

// guessSectorSize finds a GPT header at 512 or 4096 bytes.
func guessSectorSize(r io.ReaderAt) int {
	b := make([]byte, 8)
	for _, ss := range []int{512, 4096} {
		if readFull(r, b, int64(ss)) == nil && string(b) == gptSignature {
			return ss
		}
	}
	return 512
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
	hdr, entries, primErr := readGPTAt(r, 1, ss)
	primaryEntriesLBA := hdr.EntriesLBA
	backupLBA := hdr.AltLBA
	if primErr != nil {
		var backErr error
		hdr, entries, backErr = readGPTAt(r, lastLBA, ss)
		if backErr != nil {
			return nil, fmt.Errorf("GPT: primary header: %v; backup header at sector %d: %v", primErr, lastLBA, backErr)
		}
		primaryEntriesLBA = 2
		backupLBA = lastLBA
	}
	if backupLBA == 0 || backupLBA > lastLBA {
		backupLBA = lastLBA
	}
	n := int(hdr.NumEntries)
	esec := gptEntrySectors(n, int(ss))
	backupEntriesLBA := backupLBA - esec
	if bh, _, err := readGPTAt(r, backupLBA, ss); err == nil {
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
	return []span{
		{mbrSignatureOffset, mbrSize},
		{ss, 2 * ss},
		{int64(primaryEntriesLBA) * ss, int64(primaryEntriesLBA+esec) * ss},
		{int64(backupEntriesLBA) * ss, int64(backupEntriesLBA+esec) * ss},
		{int64(backupLBA) * ss, int64(backupLBA+1) * ss},
	}, nil
}

// readGPTAt reads and checks the GPT header at lba and its entry array.
func readGPTAt(r io.ReaderAt, lba uint64, ss int64) (gptHeader, []gptEntry, error) {
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

// readMBR fills l from the MBR and the EBR chains of extended partitions,
// and returns the table spans: LBA 0's signature and table, and the table
// part of every EBR.
func readMBR(r io.ReaderAt, l *snapshot.Layout, lba0 []byte) ([]span, error) {
	ss := int64(l.LogicalSectorSize)
	entries, _ := parseMBREntries(lba0)
	l.Table = "mbr"
	l.MBRSignature = mbrSignature(lba0)
	tables := []span{{mbrSignatureOffset, mbrSize}}
	next := 5
	for i, e := range entries {
		if !e.used() {
			continue
		}
		ext := isExtendedType(e.Type)
		l.Partitions = append(l.Partitions, mbrPartition(i+1, e, uint64(e.Start), ext))
		if !ext {
			continue
		}
		seen := map[uint64]bool{}
		ebr := uint64(e.Start)
		buf := make([]byte, ss)
		for {
			if seen[ebr] || len(seen) >= 256 {
				return nil, fmt.Errorf("MBR: the chain of extended boot records loops at sector %d", ebr)
			}
			seen[ebr] = true
			if int64(ebr+1)*ss > l.DiskSize {
				return nil, fmt.Errorf("MBR: extended boot record at sector %d lies beyond the disk", ebr)
			}
			if err := readFull(r, buf, int64(ebr)*ss); err != nil {
				return nil, err
			}
			tables = append(tables, span{int64(ebr)*ss + mbrTableOffset, int64(ebr)*ss + mbrSize})
			ents, ok := parseMBREntries(buf)
			if !ok && ebr == uint64(e.Start) && snapshot.IsZero(buf) {
				break // an extended partition without any logical one
			}
			if !ok {
				return nil, fmt.Errorf("MBR: extended boot record at sector %d (in partition %d) is damaged", ebr, i+1)
			}
			if ents[0].used() {
				p := mbrPartition(next, ents[0], ebr+uint64(ents[0].Start), false)
				p.Logical, p.EBR = true, ebr
				l.Partitions = append(l.Partitions, p)
				next++
			}
			if !ents[1].used() || !isExtendedType(ents[1].Type) {
				break
			}
			ebr = uint64(e.Start) + uint64(ents[1].Start)
		}
	}
	return tables, nil
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

// complement returns the parts of [0, size) that no span covers.
func complement(used []span, size int64) []span {
	s := append([]span(nil), used...)
	sort.Slice(s, func(i, j int) bool { return s[i].Off < s[j].Off })
	var out []span
	pos := int64(0)
	for _, u := range s {
		if u.Off > pos {
			out = append(out, span{pos, min(u.Off, size)})
		}
		pos = max(pos, u.End)
	}
	if pos < size {
		out = append(out, span{pos, size})
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
