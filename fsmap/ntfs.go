package fsmap

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// NTFS: the boot sector locates the MFT; MFT record 0 ($MFT) maps the MFT
// itself, record 3 ($Volume) holds the dirty flag and record 6 ($Bitmap)
// holds one bit per cluster, 1 for in use. Records are protected by update
// sequence fixups, checked here before anything in them is believed.

const (
	ntfsRecordMFT     = 0
	ntfsRecordLogFile = 2
	ntfsRecordVolume  = 3
	ntfsRecordBitmap  = 6

	ntfsAttrList       = 0x20
	ntfsAttrVolumeInfo = 0x70
	ntfsAttrData       = 0x80
	ntfsAttrEnd        = 0xFFFFFFFF

	ntfsVolumeDirty = 0x0001
	ntfsReadChunk   = 4 << 20
)

// ntfsRecordNames names the system records in errors.
var ntfsRecordNames = map[int64]string{ntfsRecordMFT: "$MFT", ntfsRecordLogFile: "$LogFile", ntfsRecordVolume: "$Volume", ntfsRecordBitmap: "$Bitmap"}

// ntfsVolume is what the boot sector says, checked against the partition.
type ntfsVolume struct {
	r           io.ReaderAt
	clusterSize int64
	clusters    int64 // clusters the volume numbers: 0..clusters-1
	mftLCN      int64
	recordSize  int64
	mftRuns     []ntfsRun // the MFT's own data runs, once record 0 is read
}

// ntfsRun is one run of a non-resident attribute: length clusters from
// lcn (the first cluster on the volume), for the attribute's clusters from
// vcn on.
type ntfsRun struct {
	vcn, lcn, length int64
}

// ntfsAttr is one attribute of an MFT record.
type ntfsAttr struct {
	nonResident bool
	flags       uint16
	value       []byte // resident value
	runs        []ntfsRun
	lowVCN      int64
	highVCN     int64
	dataSize    int64
	initSize    int64
	partial     bool // the runs map only the first part; the rest is in other records
}

// readNTFS reads the $Bitmap of an NTFS volume. Free clusters are those
// whose bit is 0; everything past the last cluster (the backup boot sector)
// is in use.
func readNTFS(r io.ReaderAt, size int64) (*Map, error) {
	if size < 512 {
		return nil, ErrUnknown
	}
	boot := make([]byte, 512)
	if _, err := r.ReadAt(boot, 0); err != nil {
		return nil, fmt.Errorf("ntfs: read the boot sector: %w", err)
	}
	v, err := parseNTFSBoot(boot, size)
	if err != nil {
		return nil, err
	}
	v.r = r
	if sig, err := foreignSignature(r, size); err != nil || sig != "" {
		if err != nil {
			return nil, fmt.Errorf("ntfs: %w", err)
		}
		return nil, fmt.Errorf("ntfs: %w: an NTFS boot sector, but also a %s signature", ErrUnknown, sig)
	}

	// Record 0 first, read where the boot sector says the MFT starts: its
	// $DATA maps the rest of the MFT.
	mft, err := v.record(ntfsRecordMFT, v.mftLCN*v.clusterSize)
	if err != nil {
		return nil, err
	}
	mftData, err := v.attr(ntfsRecordMFT, mft, ntfsAttrData)
	if err != nil {
		return nil, err
	}
	if !mftData.nonResident || len(mftData.runs) == 0 || mftData.runs[0].lcn != v.mftLCN {
		return nil, fmt.Errorf("ntfs: %w: MFT record 0 ($MFT): its $DATA does not start at cluster %d, where the boot sector puts the MFT", ErrDamaged, v.mftLCN)
	}
	v.mftRuns = mftData.runs

	volume, err := v.readRecord(ntfsRecordVolume)
	if err != nil {
		return nil, err
	}
	info, err := v.attr(ntfsRecordVolume, volume, ntfsAttrVolumeInfo)
	if err != nil {
		return nil, err
	}
	if info.nonResident || len(info.value) < 12 {
		return nil, fmt.Errorf("ntfs: %w: MFT record 3 ($Volume): $VOLUME_INFORMATION is not a resident value of 12 bytes", ErrDamaged)
	}
	if flags := binary.LittleEndian.Uint16(info.value[10:]); flags&ntfsVolumeDirty != 0 {
		return nil, fmt.Errorf("ntfs: %w: the NTFS volume is marked dirty (flags %#04x); run chkdsk in Windows or ntfsfix -d, or capture with --raw", ErrNotClean, flags)
	}

	if err := v.checkLogFile(); err != nil {
		return nil, err
	}

	bitmapRec, err := v.readRecord(ntfsRecordBitmap)
	if err != nil {
		return nil, err
	}
	bitmap, err := v.attr(ntfsRecordBitmap, bitmapRec, ntfsAttrData)
	if err != nil {
		return nil, err
	}
	if bitmap.partial {
		return nil, fmt.Errorf("ntfs: %w: MFT record 6 ($Bitmap): its $DATA continues in other records, through an attribute list", ErrUnsupported)
	}
	m := &Map{FS: "ntfs", BlockSize: v.clusterSize, Size: size}
	if m.Free, err = v.scanBitmap(bitmap); err != nil {
		return nil, err
	}

	// What the bitmap must mark in use: cluster 0 (the boot sector), the
	// MFT and the bitmap itself.
	must := []struct {
		what string
		runs []ntfsRun
	}{
		{"cluster 0 (the boot sector)", []ntfsRun{{lcn: 0, length: 1}}},
		{"the $MFT's own clusters", v.mftRuns},
		{"the $Bitmap's own clusters", bitmap.runs},
	}
	for _, x := range must {
		for _, run := range x.runs {
			if c, ok := freeWithin(m.Free, run.lcn*v.clusterSize, run.length*v.clusterSize); ok {
				return nil, fmt.Errorf("ntfs: %w: $Bitmap marks cluster %d free, one of %s", ErrDamaged, c/v.clusterSize, x.what)
			}
		}
	}
	return m, nil
}

// checkLogFile refuses a volume whose $LogFile holds changes not yet
// applied to the disk (Windows hibernated by Fast Startup, or stopped
// without shutting down): its $Bitmap may not be the one Windows will
// use. The rule is ntfs-3g's: the newer of the two restart pages must have
// no client in use or the volume-is-clean flag. A $LogFile without restart
// pages (all 0xFF: emptied by mkntfs, ntfs-3g or ntfsfix) is clean.
func (v *ntfsVolume) checkLogFile() error {
	rec, err := v.readRecord(ntfsRecordLogFile)
	if err != nil {
		return err
	}
	data, err := v.attr(ntfsRecordLogFile, rec, ntfsAttrData)
	if err != nil {
		return err
	}
	if !data.nonResident || len(data.runs) == 0 {
		return fmt.Errorf("ntfs: %w: MFT record 2 ($LogFile): its $DATA is not on the volume", ErrDamaged)
	}
	const page = 4096 // the restart pages are the first two of this size
	head := make([]byte, min(2*page, data.dataSize))
	if int64(len(head)) > data.runs[0].length*v.clusterSize {
		return fmt.Errorf("ntfs: %w: $LogFile's restart pages span two runs", ErrUnsupported)
	}
	if _, err := v.r.ReadAt(head, data.runs[0].lcn*v.clusterSize); err != nil {
		return fmt.Errorf("ntfs: read $LogFile at cluster %d: %w", data.runs[0].lcn, err)
	}
	le := binary.LittleEndian
	var newest uint64
	found, clean := false, true
	for off := 0; off+page <= len(head); off += page {
		p := head[off : off+page]
		switch string(p[:4]) {
		case "\xff\xff\xff\xff":
			continue
		case "CHKD":
			return fmt.Errorf("ntfs: %w: $LogFile was left by chkdsk outside Windows; run chkdsk in Windows, or capture with --raw", ErrNotClean)
		case "RSTR":
		default:
			return fmt.Errorf("ntfs: %w: $LogFile restart page %d has signature %q", ErrDamaged, off/page, p[:4])
		}
		if err := ntfsFixup(p, page); err != nil {
			return fmt.Errorf("ntfs: %w: $LogFile restart page %d: %v", ErrDamaged, off/page, err)
		}
		ra := int(le.Uint16(p[0x18:]))
		if ra < 0x1E || ra+0x10 > page {
			return fmt.Errorf("ntfs: %w: $LogFile restart page %d: restart area at offset %d", ErrDamaged, off/page, ra)
		}
		lsn := le.Uint64(p[ra:])
		inUse, flags := le.Uint16(p[ra+0x0C:]), le.Uint16(p[ra+0x0E:])
		if !found || lsn > newest {
			newest, found = lsn, true
			clean = inUse == 0xFFFF || flags&0x0002 != 0
		}
	}
	if !clean {
		return fmt.Errorf("ntfs: %w: $LogFile holds changes not yet written to the volume (Windows was hibernated by Fast Startup or not shut down); boot Windows and shut it down fully (shutdown /s /t 0, or turn Fast Startup off), or capture with --raw", ErrNotClean)
	}
	return nil
}

// ntfsFixup checks and applies the update sequence fixups of a
// multi-sector structure of size bytes (an MFT record, a $LogFile page):
// the last two bytes of every 512-byte stride must hold the update sequence
// number, and get back the bytes saved in the array.
func ntfsFixup(b []byte, size int64) error {
	le := binary.LittleEndian
	usaOff := int64(le.Uint16(b[4:]))
	usaCount := int64(le.Uint16(b[6:]))
	if usaCount != size/512+1 || usaOff < 8 || usaOff%2 != 0 || usaOff+2*usaCount > 512-2 {
		return fmt.Errorf("update sequence array of %d entries at offset %d", usaCount, usaOff)
	}
	usn := b[usaOff : usaOff+2]
	for i := int64(1); i < usaCount; i++ {
		end := i*512 - 2
		if b[end] != usn[0] || b[end+1] != usn[1] {
			return fmt.Errorf("update sequence number of its sector %d does not match (a torn or damaged write)", i-1)
		}
		copy(b[end:end+2], b[usaOff+2*i:usaOff+2*i+2])
	}
	return nil
}

// parseNTFSBoot recognises an NTFS boot sector and checks its geometry.
func parseNTFSBoot(b []byte, size int64) (*ntfsVolume, error) {
	if string(b[3:11]) != "NTFS    " || b[510] != 0x55 || b[511] != 0xAA {
		return nil, ErrUnknown
	}
	le := binary.LittleEndian
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("ntfs: %w: boot sector: %s", ErrDamaged, fmt.Sprintf(format, a...))
	}
	bps := int64(le.Uint16(b[0x0B:]))
	if bps < 512 || bps > 4096 || bits.OnesCount64(uint64(bps)) != 1 {
		return nil, damaged("%d bytes per sector", bps)
	}
	spc := int64(b[0x0D])
	if spc > 128 {
		// Large clusters: the byte is a negative shift (0xF4 = -12 = 4096 sectors).
		shift := 256 - spc
		if shift > 20 {
			return nil, damaged("sectors per cluster byte %#x", b[0x0D])
		}
		spc = 1 << shift
	}
	if spc == 0 || bits.OnesCount64(uint64(spc)) != 1 {
		return nil, damaged("%d sectors per cluster", spc)
	}
	v := &ntfsVolume{clusterSize: bps * spc}
	if v.clusterSize > 2<<20 {
		return nil, damaged("clusters of %d bytes", v.clusterSize)
	}
	sectors := le.Uint64(b[0x28:])
	if sectors == 0 || sectors > uint64(size/bps) {
		return nil, damaged("%d sectors of %d bytes do not fit the partition of %d bytes", sectors, bps, size)
	}
	v.clusters = int64(sectors) / spc
	mftLCN := le.Uint64(b[0x30:])
	if mftLCN == 0 || mftLCN >= uint64(v.clusters) {
		return nil, damaged("$MFT at cluster %d, outside clusters 1..%d", mftLCN, v.clusters-1)
	}
	v.mftLCN = int64(mftLCN)
	if c := int8(b[0x40]); c > 0 {
		v.recordSize = int64(c) * v.clusterSize
	} else if c > -31 && c < 0 {
		v.recordSize = 1 << -c
	} else {
		return nil, damaged("clusters per MFT record byte %#x", b[0x40])
	}
	if v.recordSize < 512 || v.recordSize > 64<<10 || bits.OnesCount64(uint64(v.recordSize)) != 1 {
		return nil, damaged("MFT records of %d bytes", v.recordSize)
	}
	return v, nil
}

// readRecord reads MFT record n through the MFT's runs.
func (v *ntfsVolume) readRecord(n int64) ([]byte, error) {
	off := n * v.recordSize
	for _, run := range v.mftRuns {
		start, end := run.vcn*v.clusterSize, (run.vcn+run.length)*v.clusterSize
		if off >= start && off < end {
			if off+v.recordSize > end {
				return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s) spans two runs of the MFT", ErrUnsupported, n, ntfsRecordNames[n])
			}
			return v.record(n, run.lcn*v.clusterSize+off-start)
		}
	}
	return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s) lies past the MFT's $DATA runs", ErrDamaged, n, ntfsRecordNames[n])
}

// record reads MFT record n at byte pos and applies its update sequence
// fixups, checking each one.
func (v *ntfsVolume) record(n, pos int64) ([]byte, error) {
	rec := make([]byte, v.recordSize)
	if pos < 0 || pos > v.clusters*v.clusterSize-v.recordSize {
		return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s) at byte %d lies outside the volume", ErrDamaged, n, ntfsRecordNames[n], pos)
	}
	if _, err := v.r.ReadAt(rec, pos); err != nil {
		return nil, fmt.Errorf("ntfs: read MFT record %d (%s) at byte %d: %w", n, ntfsRecordNames[n], pos, err)
	}
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("ntfs: %w: MFT record %d (%s): %s", ErrDamaged, n, ntfsRecordNames[n], fmt.Sprintf(format, a...))
	}
	if string(rec[:4]) != "FILE" {
		return nil, damaged("signature %q, want \"FILE\"", rec[:4])
	}
	if usaOff := binary.LittleEndian.Uint16(rec[4:]); usaOff < 0x28 {
		return nil, damaged("update sequence array at offset %d, inside the record header", usaOff)
	}
	if err := ntfsFixup(rec, v.recordSize); err != nil {
		return nil, damaged("%v", err)
	}
	le := binary.LittleEndian
	if le.Uint16(rec[0x16:])&0x0001 == 0 {
		return nil, damaged("the record is not in use")
	}
	return rec, nil
}

// attr finds the unnamed attribute of type typ in record n.
func (v *ntfsVolume) attr(n int64, rec []byte, typ uint32) (*ntfsAttr, error) {
	le := binary.LittleEndian
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("ntfs: %w: MFT record %d (%s): %s", ErrDamaged, n, ntfsRecordNames[n], fmt.Sprintf(format, a...))
	}
	used := int64(le.Uint32(rec[0x18:]))
	if used > int64(len(rec)) || used < 0x30 {
		return nil, damaged("%d bytes in use in a record of %d", used, len(rec))
	}
	hasList := false
	off := int64(le.Uint16(rec[0x14:]))
	for {
		if off < 0x28 || off+8 > used {
			return nil, damaged("attribute at offset %d runs past the %d bytes in use", off, used)
		}
		t := le.Uint32(rec[off:])
		if t == ntfsAttrEnd {
			break
		}
		length := int64(le.Uint32(rec[off+4:]))
		if length < 0x18 || length%8 != 0 || off+length > used {
			return nil, damaged("attribute of type %#x at offset %d has length %d", t, off, length)
		}
		a := rec[off : off+length]
		if t == ntfsAttrList {
			hasList = true
		}
		if t != typ || a[9] != 0 { // another type, or a named attribute
			off += length
			continue
		}
		attr := &ntfsAttr{nonResident: a[8] != 0, flags: le.Uint16(a[0x0C:])}
		if !attr.nonResident {
			vlen, voff := int64(le.Uint32(a[0x10:])), int64(le.Uint16(a[0x14:]))
			if voff+vlen > length {
				return nil, damaged("resident attribute of type %#x: value of %d bytes at %d past its length %d", t, vlen, voff, length)
			}
			attr.value = a[voff : voff+vlen]
			return attr, nil
		}
		if length < 0x40 {
			return nil, damaged("non-resident attribute of type %#x has length %d", t, length)
		}
		if attr.flags&0xC0FF != 0 {
			return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s): attribute of type %#x is compressed, encrypted or sparse (flags %#04x)", ErrUnsupported, n, ntfsRecordNames[n], t, attr.flags)
		}
		attr.lowVCN = int64(le.Uint64(a[0x10:]))
		attr.highVCN = int64(le.Uint64(a[0x18:]))
		attr.dataSize = int64(le.Uint64(a[0x30:]))
		attr.initSize = int64(le.Uint64(a[0x38:]))
		runOff := int64(le.Uint16(a[0x20:]))
		if runOff < 0x40 || runOff >= length {
			return nil, damaged("attribute of type %#x: runlist at offset %d of %d", t, runOff, length)
		}
		if attr.lowVCN != 0 {
			return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s): attribute of type %#x starts at VCN %d (continued through an attribute list)", ErrUnsupported, n, ntfsRecordNames[n], t, attr.lowVCN)
		}
		runs, err := v.decodeRuns(a[runOff:])
		if err != nil {
			return nil, damaged("attribute of type %#x: %v", t, err)
		}
		var end int64
		if len(runs) > 0 {
			last := runs[len(runs)-1]
			end = last.vcn + last.length
		}
		if end != attr.highVCN+1 {
			if hasList || attr.highVCN+1 > end {
				return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s): attribute of type %#x maps clusters 0..%d of 0..%d (the rest through an attribute list)", ErrUnsupported, n, ntfsRecordNames[n], t, end-1, attr.highVCN)
			}
			return nil, damaged("attribute of type %#x: runs map %d clusters, its header %d", t, end, attr.highVCN+1)
		}
		if attr.dataSize < 0 || attr.initSize < 0 || attr.initSize > attr.dataSize {
			return nil, damaged("attribute of type %#x: %d bytes of data, %d initialised", t, attr.dataSize, attr.initSize)
		}
		if attr.dataSize > end*v.clusterSize {
			if !hasList {
				return nil, damaged("attribute of type %#x: %d bytes of data in %d clusters", t, attr.dataSize, end)
			}
			// The rest is mapped by extension records (a fragmented
			// $MFT): the first segment is all that is read here.
			attr.partial = true
		}
		attr.runs = runs
		return attr, nil
	}
	if hasList {
		return nil, fmt.Errorf("ntfs: %w: MFT record %d (%s): no attribute of type %#x in the base record (it is in another record, through an attribute list)", ErrUnsupported, n, ntfsRecordNames[n], typ)
	}
	return nil, damaged("no unnamed attribute of type %#x", typ)
}

// decodeRuns decodes a runlist: each run is a header byte (low nibble:
// bytes of length; high nibble: bytes of the signed LCN delta), then the
// two numbers, little-endian. Sparse runs and runs outside the volume are
// refused: the attributes read here are never sparse.
func (v *ntfsVolume) decodeRuns(b []byte) ([]ntfsRun, error) {
	var runs []ntfsRun
	var vcn, lcn int64
	for i := 0; ; {
		if i >= len(b) {
			return nil, fmt.Errorf("runlist has no end")
		}
		h := b[i]
		if h == 0 {
			return runs, nil
		}
		nl, no := int(h&0x0F), int(h>>4)
		if nl == 0 || nl > 8 || no > 8 || i+1+nl+no > len(b) {
			return nil, fmt.Errorf("run %d: header byte %#x", len(runs), h)
		}
		if no == 0 {
			return nil, fmt.Errorf("run %d is sparse", len(runs))
		}
		length := int64(leUint(b[i+1 : i+1+nl]))
		delta := leInt(b[i+1+nl : i+1+nl+no])
		i += 1 + nl + no
		lcn += delta
		if length <= 0 || lcn < 0 || length > v.clusters || lcn > v.clusters-length {
			return nil, fmt.Errorf("run %d (clusters %d..%d) lies outside the volume's %d clusters", len(runs), lcn, lcn+length-1, v.clusters)
		}
		runs = append(runs, ntfsRun{vcn: vcn, lcn: lcn, length: length})
		vcn += length
	}
}

// leUint reads an unsigned little-endian number of up to 8 bytes.
func leUint(b []byte) uint64 {
	var x uint64
	for i := len(b) - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	return x
}

// leInt reads a signed little-endian number of up to 8 bytes.
func leInt(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	x := leUint(b)
	if shift := uint(64 - 8*len(b)); shift > 0 {
		return int64(x<<shift) >> shift
	}
	return int64(x)
}

// scanBitmap reads the $Bitmap's data in large reads and returns the free
// clusters as byte ranges.
func (v *ntfsVolume) scanBitmap(a *ntfsAttr) ([]Range, error) {
	need := (v.clusters + 7) / 8
	if a.nonResident && a.initSize < need || !a.nonResident && int64(len(a.value)) < need {
		size := a.initSize
		if !a.nonResident {
			size = int64(len(a.value))
		}
		return nil, fmt.Errorf("ntfs: %w: $Bitmap holds %d bytes, the volume's %d clusters need %d", ErrDamaged, size, v.clusters, need)
	}
	var runs freeList
	add := func(data []byte, firstCluster int64) {
		for i, x := range data {
			if x == 0xFF {
				continue
			}
			base := firstCluster + int64(i)*8
			if x == 0 && base+8 <= v.clusters {
				runs.add(base*v.clusterSize, 8*v.clusterSize)
				continue
			}
			for bit := range int64(8) {
				c := base + bit
				if c >= v.clusters {
					return
				}
				if x&(1<<bit) == 0 {
					runs.add(c*v.clusterSize, v.clusterSize)
				}
			}
		}
	}
	if !a.nonResident {
		add(a.value[:need], 0)
		return runs.done(), nil
	}
	buf := make([]byte, min(need, ntfsReadChunk))
	var done int64 // bitmap bytes read
	for _, run := range a.runs {
		pos, left := run.lcn*v.clusterSize, min(run.length*v.clusterSize, need-done)
		for left > 0 {
			n := min(left, int64(len(buf)))
			if _, err := v.r.ReadAt(buf[:n], pos); err != nil {
				return nil, fmt.Errorf("ntfs: read $Bitmap at byte %d: %w", pos, err)
			}
			add(buf[:n], done*8)
			done, pos, left = done+n, pos+n, left-n
		}
		if done == need {
			break
		}
	}
	if done < need {
		return nil, fmt.Errorf("ntfs: %w: $Bitmap's runs hold %d bytes, the volume's %d clusters need %d", ErrDamaged, done, v.clusters, need)
	}
	return runs.done(), nil
}

// freeWithin returns the first byte of [off, off+length) inside a free
// range, if any. free is sorted.
func freeWithin(free []Range, off, length int64) (int64, bool) {
	i, _ := slices.BinarySearchFunc(free, off, func(r Range, x int64) int {
		switch {
		case r.Offset+r.Length <= x:
			return -1
		case r.Offset > x:
			return 1
		}
		return 0
	})
	if i < len(free) && free[i].Offset < off+length {
		return max(free[i].Offset, off), true
	}
	return 0, false
}
