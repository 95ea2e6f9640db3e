package fsmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// FAT12/16/32, after Microsoft's "FAT: General Overview of On-Disk Format"
// (the BPB, the cluster-count rule for the FAT type, the entry values) and
// what Linux and dosfstools read (the boot sector's state byte, a FAT32
// recognised by its zero 16-bit FAT size).

const (
	fatMaxFAT12Clusters = 4084  // a volume with more clusters is FAT16 ...
	fatMaxFAT16Clusters = 65524 // ... and with more than this, FAT32
	fatReadChunk        = 4 << 20
)

// fatVolume is what the boot sector says, checked against the partition.
type fatVolume struct {
	bits         int   // 12, 16 or 32
	sectorSize   int64 // bytes per sector
	clusterSize  int64 // bytes per cluster
	fatStart     int64 // byte offset of the first FAT
	fatBytes     int64 // bytes of one FAT copy
	fats         int   // number of FAT copies
	dataStart    int64 // byte offset of cluster 2
	clusters     int64 // data clusters, numbered 2..clusters+1
	rootCluster  int64 // FAT32 only
	stateOffset  int   // offset of the boot sector's state byte
	volumeBytes  int64 // total sectors times sector size
	mirrorActive int   // FAT32 with mirroring off: the active FAT; else -1
}

// readFAT reads the FAT of a FAT12, FAT16 or FAT32 file system. Free
// clusters are those whose FAT entry is 0; everything before the data area
// (boot sectors, FSInfo, the FATs, the FAT12/16 root directory), every bad
// or allocated cluster and everything past the last cluster is in use.
func readFAT(r io.ReaderAt, size int64) (*Map, error) {
	if size < 512 {
		return nil, ErrUnknown
	}
	boot := make([]byte, 512)
	if _, err := r.ReadAt(boot, 0); err != nil {
		return nil, fmt.Errorf("vfat: read the boot sector: %w", err)
	}
	if string(boot[3:11]) == "EXFAT   " {
		return readExFAT(r, size, boot)
	}
	v, err := parseFATBoot(boot, size)
	if err != nil {
		return nil, err
	}
	if sig, err := foreignSignature(r, size); err != nil || sig != "" {
		if err != nil {
			return nil, fmt.Errorf("vfat: %w", err)
		}
		return nil, fmt.Errorf("vfat: %w: a FAT boot sector, but also a %s signature", ErrUnknown, sig)
	}
	if boot[v.stateOffset]&0x01 != 0 {
		return nil, fmt.Errorf("vfat: %w: the boot sector's dirty flag (byte 0x%x) is set, it was not cleanly unmounted; run fsck.vfat or mount and unmount it, or capture with --raw", ErrNotClean, v.stateOffset)
	}
	m := &Map{FS: "vfat", BlockSize: v.clusterSize, Size: size}
	if err := v.scan(r, m); err != nil {
		return nil, err
	}
	return m, nil
}

// parseFATBoot recognises a FAT boot sector and checks its BPB. It returns
// ErrUnknown for anything that is not a FAT boot sector (including exFAT
// and NTFS) and ErrDamaged for a FAT boot sector whose values do not fit
// together or into the partition.
func parseFATBoot(b []byte, size int64) (*fatVolume, error) {
	if b[0] != 0xEB && b[0] != 0xE9 {
		return nil, ErrUnknown
	}
	if b[510] != 0x55 || b[511] != 0xAA {
		return nil, ErrUnknown
	}
	if string(b[3:11]) == "NTFS    " {
		return nil, ErrUnknown
	}
	// The file system type string, which libblkid also wants and wipefs
	// erases (not used for the FAT type: the cluster count decides).
	if !fatTypeString(b) {
		return nil, ErrUnknown
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(b[11:]))
	spc := int64(b[13])
	reserved := int64(le.Uint16(b[14:]))
	fats := int(b[16])
	rootEntries := int64(le.Uint16(b[17:]))
	total16 := int64(le.Uint16(b[19:]))
	media := b[21]
	fat16Size := int64(le.Uint16(b[22:]))
	total32 := int64(le.Uint32(b[32:]))
	// The fields every FAT boot sector has; anything else is not FAT.
	if bps < 512 || bps > 4096 || bits.OnesCount64(uint64(bps)) != 1 ||
		spc == 0 || bits.OnesCount64(uint64(spc)) != 1 ||
		reserved == 0 || fats == 0 || (media != 0xF0 && media < 0xF8) {
		return nil, ErrUnknown
	}
	v := &fatVolume{sectorSize: bps, clusterSize: bps * spc, fats: fats, mirrorActive: -1}
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("vfat: %w: boot sector: %s", ErrDamaged, fmt.Sprintf(format, a...))
	}
	fatSize := fat16Size
	if fat16Size == 0 {
		// FAT32 by its BPB, as Linux and dosfstools read it (mkfs.vfat
		// -F 32 makes FAT32 volumes with fewer than 65525 clusters).
		v.bits = 32
		fatSize = int64(le.Uint32(b[36:]))
		extFlags := le.Uint16(b[40:])
		if le.Uint16(b[42:]) != 0 {
			return nil, fmt.Errorf("vfat: %w: FAT32 version %#x", ErrUnsupported, le.Uint16(b[42:]))
		}
		v.rootCluster = int64(le.Uint32(b[44:]))
		v.stateOffset = 0x41
		// Microsoft wants a zero 16-bit sector count on FAT32; mkfs.vfat
		// fills it in on small volumes, and Linux reads it like FAT16's.
		if rootEntries != 0 || fatSize == 0 {
			return nil, damaged("FAT32 with %d root entries and a FAT of %d sectors", rootEntries, fatSize)
		}
		if extFlags&0x80 != 0 {
			v.mirrorActive = int(extFlags & 0x0F)
			if v.mirrorActive >= fats {
				return nil, damaged("active FAT %d of %d", v.mirrorActive, fats)
			}
		}
	} else {
		v.stateOffset = 0x25
	}
	total := total16
	if total == 0 {
		total = total32
	}
	rootSectors := (rootEntries*32 + bps - 1) / bps
	meta := reserved + int64(fats)*fatSize + rootSectors
	if total == 0 || meta >= total {
		return nil, damaged("%d sectors in all, %d before the data area", total, meta)
	}
	v.volumeBytes = total * bps
	if v.volumeBytes > size {
		return nil, damaged("%d sectors of %d bytes (%d bytes) do not fit the partition of %d bytes", total, bps, v.volumeBytes, size)
	}
	v.clusters = (total - meta) / spc
	if v.clusters == 0 {
		return nil, damaged("no data cluster")
	}
	if v.bits != 32 {
		switch {
		case v.clusters <= fatMaxFAT12Clusters:
			v.bits = 12
		case v.clusters <= fatMaxFAT16Clusters:
			v.bits = 16
		default:
			return nil, fmt.Errorf("vfat: %w: a FAT12/16 boot sector with %d clusters, too many for a 16-bit FAT", ErrUnsupported, v.clusters)
		}
	}
	if v.bits == 32 && v.clusters > 0x0FFFFFF5 {
		return nil, damaged("%d clusters, more than FAT32 can number", v.clusters)
	}
	v.fatStart = reserved * bps
	v.fatBytes = fatSize * bps
	v.dataStart = meta * bps
	if need := v.entryBytes(v.clusters + 2); need > v.fatBytes {
		return nil, damaged("a FAT of %d bytes cannot hold the %d entries of %d clusters", v.fatBytes, v.clusters+2, v.clusters)
	}
	if v.bits == 32 && (v.rootCluster < 2 || v.rootCluster > v.clusters+1) {
		return nil, damaged("root directory cluster %d outside clusters 2..%d", v.rootCluster, v.clusters+1)
	}
	return v, nil
}

// fatTypeString says whether the boot sector carries one of the type
// strings that FAT formatters write: at 0x36 for FAT12/16, at 0x52 for
// FAT32 (the same list as libblkid's).
func fatTypeString(b []byte) bool {
	for _, s := range []string{"FAT12   ", "FAT16   ", "FAT     ", "MSDOS"} {
		if bytes.HasPrefix(b[0x36:], []byte(s)) {
			return true
		}
	}
	return bytes.HasPrefix(b[0x52:], []byte("FAT32   ")) || bytes.HasPrefix(b[0x52:], []byte("MSWIN"))
}

// foreignSignature looks for the signatures of what may have been made
// over an old FAT or NTFS volume without erasing its boot sector: a swap
// area (its signature at the end of the first page, for pages of 4 to 64
// KiB) and an LVM physical volume (its label in one of the first four
// sectors). It returns the name of the one found, or "".
func foreignSignature(r io.ReaderAt, size int64) (string, error) {
	head := make([]byte, min(size, 64<<10))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return "", fmt.Errorf("read the first %d bytes: %w", len(head), err)
	}
	if swapSignature(head, true) {
		return "swap", nil
	}
	for sector := 0; sector < 4 && (sector+1)*512 <= len(head); sector++ {
		if string(head[sector*512:sector*512+8]) == "LABELONE" {
			return "LVM", nil
		}
	}
	return "", nil
}

// entryBytes is the number of FAT bytes that hold n entries.
func (v *fatVolume) entryBytes(n int64) int64 {
	return (n*int64(v.bits) + 7) / 8
}

// entry decodes entry i of a FAT whose bytes from entry 0 are in fat.
func (v *fatVolume) entry(fat []byte, i int64) uint32 {
	switch v.bits {
	case 12:
		x := uint32(binary.LittleEndian.Uint16(fat[i*3/2:]))
		if i%2 == 1 {
			return x >> 4
		}
		return x & 0x0FFF
	case 16:
		return uint32(binary.LittleEndian.Uint16(fat[i*2:]))
	default:
		return binary.LittleEndian.Uint32(fat[i*4:]) & 0x0FFFFFFF
	}
}

// scan reads the FAT copies in large pieces, checks they agree, checks
// every entry and the clean-shutdown bit, and adds the free clusters to m.
func (v *fatVolume) scan(r io.ReaderAt, m *Map) error {
	n := v.clusters + 2
	need := v.entryBytes(n)
	if v.bits == 12 {
		need = v.entryBytes(n) + 1 // entry reads take two bytes
		if need > v.fatBytes {
			need = v.fatBytes
		}
	}
	bad := uint32(0xFF7) // the bad-cluster mark; above it, end of chain
	switch v.bits {
	case 16:
		bad = 0xFFF7
	case 32:
		bad = 0x0FFFFFF7
	}
	var runs freeList
	primary := make([]byte, min(need, fatReadChunk))
	other := make([]byte, len(primary))
	per := int64(len(primary)) * 8 / int64(v.bits) // whole entries per piece
	if v.bits == 12 {
		per = n // a FAT12 FAT is at most 6 KiB: one piece
	}
	first := 0
	if v.mirrorActive >= 0 {
		first = v.mirrorActive
	}
	// Entry 1's top bits say the volume was cleanly unmounted (FAT16 bit
	// 15, FAT32 bit 27; FAT12 has none). Checked before the copies are
	// compared: a volume in use may well have copies that differ.
	if v.bits != 12 {
		head := make([]byte, 8)
		if _, err := r.ReadAt(head, v.fatStart+int64(first)*v.fatBytes); err != nil {
			return fmt.Errorf("vfat: read FAT %d: %w", first+1, err)
		}
		if e := v.entry(head, 1); v.bits == 16 && e&0x8000 == 0 || v.bits == 32 && e&0x08000000 == 0 {
			return fmt.Errorf("vfat: %w: the clean-shutdown bit of FAT entry 1 is clear, it was not cleanly unmounted; run fsck.vfat or mount and unmount it, or capture with --raw", ErrNotClean)
		}
	}
	for start := int64(0); start < n; start += per {
		count := min(per, n-start)
		off := v.entryBytes(start)
		length := min(v.entryBytes(count)+boolInt64(v.bits == 12), need-off)
		buf := primary[:length]
		if _, err := r.ReadAt(buf, v.fatStart+int64(first)*v.fatBytes+off); err != nil {
			return fmt.Errorf("vfat: read FAT %d at byte %d: %w", first+1, v.fatStart+int64(first)*v.fatBytes+off, err)
		}
		for k := 0; k < v.fats && v.mirrorActive < 0; k++ {
			if k == first {
				continue
			}
			cmp := other[:length]
			pos := v.fatStart + int64(k)*v.fatBytes + off
			if _, err := r.ReadAt(cmp, pos); err != nil {
				return fmt.Errorf("vfat: read FAT %d at byte %d: %w", k+1, pos, err)
			}
			if i := firstDiff(buf, cmp, v.entryBytes(count)); i >= 0 {
				entry := start + int64(i)*8/int64(v.bits)
				return fmt.Errorf("vfat: %w: FAT copy %d differs from copy %d at entry %d (byte %d of the FAT)", ErrDamaged, k+1, first+1, entry, off+int64(i))
			}
		}
		for i := int64(0); i < count; i++ {
			c := start + i
			var e uint32
			if v.bits == 12 {
				e = v.entry(buf, c)
			} else {
				e = v.entry(buf, i)
			}
			switch {
			case c == 0, c == 1:
				continue // entry 0 holds the media byte; entry 1 was checked first
			case e == 0 && c == v.rootCluster:
				return fmt.Errorf("vfat: %w: the root directory's cluster %d is marked free in the FAT", ErrDamaged, c)
			case e == 0:
				runs.add(v.dataStart+(c-2)*v.clusterSize, v.clusterSize)
			case e >= bad:
				// bad cluster or end of chain: in use
			case e < 2 || int64(e) > v.clusters+1:
				return fmt.Errorf("vfat: %w: FAT entry of cluster %d points to cluster %d, outside 2..%d", ErrDamaged, c, e, v.clusters+1)
			}
		}
	}
	m.Free = runs.done()
	return nil
}

// firstDiff returns the first index below limit where a and b differ, or -1.
func firstDiff(a, b []byte, limit int64) int {
	limit = min(limit, int64(len(a)))
	if bytes.Equal(a[:limit], b[:limit]) {
		return -1
	}
	for i := range limit {
		if a[i] != b[i] {
			return int(i)
		}
	}
	return -1
}

func boolInt64(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// exFAT, after Microsoft's "exFAT file system specification": the boot
// sector locates the FAT and the cluster heap; the allocation bitmap (a
// file named by an entry of type 0x81 in the root directory) has one bit
// per cluster, 1 for in use. The FAT only chains clusters (files marked
// NoFatChain have none), so the bitmap alone says what is free.

const (
	exfatEntryBitmap = 0x81
	exfatEOC         = 0xFFFFFFFF
	exfatBad         = 0xFFFFFFF7
)

// exfatVolume is what the exFAT boot sector says, checked against the
// partition.
type exfatVolume struct {
	r           io.ReaderAt
	sectorSize  int64
	clusterSize int64
	fatStart    int64 // byte offset of the active FAT
	heapStart   int64 // byte offset of cluster 2
	clusters    int64 // clusters 2..clusters+1
	rootCluster int64
}

// readExFAT reads the allocation bitmap of an exFAT volume.
func readExFAT(r io.ReaderAt, size int64, b []byte) (*Map, error) {
	le := binary.LittleEndian
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("exfat: %w: %s", ErrDamaged, fmt.Sprintf(format, a...))
	}
	if b[510] != 0x55 || b[511] != 0xAA {
		return nil, ErrUnknown
	}
	for _, x := range b[11:64] { // MustBeZero: where a FAT BPB would be
		if x != 0 {
			return nil, ErrUnknown
		}
	}
	bpsShift, spcShift := int(b[108]), int(b[109])
	if bpsShift < 9 || bpsShift > 12 || spcShift > 25-bpsShift {
		return nil, damaged("boot sector: sector shift %d, cluster shift %d", bpsShift, spcShift)
	}
	v := &exfatVolume{r: r, sectorSize: 1 << bpsShift}
	v.clusterSize = v.sectorSize << spcShift
	volumeSectors := le.Uint64(b[72:])
	fatOffset, fatLength := int64(le.Uint32(b[80:])), int64(le.Uint32(b[84:]))
	heapOffset := int64(le.Uint32(b[88:]))
	v.clusters = int64(le.Uint32(b[92:]))
	v.rootCluster = int64(le.Uint32(b[96:]))
	flags := le.Uint16(b[106:])
	fats := int64(b[110])
	if volumeSectors == 0 || volumeSectors > uint64(size>>bpsShift) {
		return nil, damaged("boot sector: %d sectors of %d bytes do not fit the partition of %d bytes", volumeSectors, v.sectorSize, size)
	}
	if fats != 1 && fats != 2 || fatOffset < 24 || fatLength == 0 || heapOffset < fatOffset+fats*fatLength ||
		v.clusters == 0 || v.clusters > 0xFFFFFFF5 ||
		(v.clusters+2)*4 > fatLength*v.sectorSize ||
		uint64(heapOffset)+uint64(v.clusters)<<spcShift > volumeSectors ||
		v.rootCluster < 2 || v.rootCluster > v.clusters+1 {
		return nil, damaged("boot sector: FAT at sector %d (%d sectors, %d FATs), cluster heap at sector %d with %d clusters, root at cluster %d, in %d sectors",
			fatOffset, fatLength, fats, heapOffset, v.clusters, v.rootCluster, volumeSectors)
	}
	if sig, err := foreignSignature(r, size); err != nil || sig != "" {
		if err != nil {
			return nil, fmt.Errorf("exfat: %w", err)
		}
		return nil, fmt.Errorf("exfat: %w: an exFAT boot sector, but also a %s signature", ErrUnknown, sig)
	}
	if err := exfatChecksum(r, v.sectorSize); err != nil {
		return nil, err
	}
	if flags&0x0002 != 0 {
		return nil, fmt.Errorf("exfat: %w: the volume's dirty flag is set, it was not cleanly unmounted; run fsck.exfat or mount and unmount it, or capture with --raw", ErrNotClean)
	}
	active := int64(0)
	if flags&0x0001 != 0 && fats == 2 {
		active = 1
	}
	v.fatStart = (fatOffset + active*fatLength) * v.sectorSize
	v.heapStart = heapOffset * v.sectorSize

	// The root directory, then its allocation bitmap entry.
	// (Its first clusters: the bitmap entry comes first in practice.)
	root, err := v.chain(v.rootCluster, "the root directory", 256)
	if err != nil {
		return nil, err
	}
	bitmapCluster, bitmapLength, err := v.findBitmap(root)
	if err != nil {
		return nil, err
	}
	need := (v.clusters + 7) / 8
	if bitmapLength < need {
		return nil, damaged("the allocation bitmap holds %d bytes, the volume's %d clusters need %d", bitmapLength, v.clusters, need)
	}
	bitmap, err := v.chain(bitmapCluster, "the allocation bitmap", (need+v.clusterSize-1)/v.clusterSize)
	if err != nil {
		return nil, err
	}
	if int64(len(bitmap))*v.clusterSize < need {
		return nil, damaged("the allocation bitmap's %d clusters hold fewer than the %d bytes it needs", len(bitmap), need)
	}
	var runs freeList
	buf := make([]byte, min(v.clusterSize, need))
	var done int64
	for _, c := range bitmap {
		n := min(int64(len(buf)), need-done)
		if n <= 0 {
			break
		}
		if _, err := r.ReadAt(buf[:n], v.clusterOffset(c)); err != nil {
			return nil, fmt.Errorf("exfat: read the allocation bitmap at cluster %d: %w", c, err)
		}
		for i, x := range buf[:n] {
			if x == 0xFF {
				continue
			}
			for bit := range int64(8) {
				k := (done+int64(i))*8 + bit // bit k is cluster k+2
				if k < v.clusters && x&(1<<bit) == 0 {
					runs.add(v.heapStart+k*v.clusterSize, v.clusterSize)
				}
			}
		}
		done += n
	}
	free := runs.done()
	// What the bitmap must mark in use: the root directory and the bitmap.
	for what, chain := range map[string][]int64{"the root directory": root, "the allocation bitmap": bitmap} {
		for _, c := range chain {
			if _, free := freeWithin(free, v.clusterOffset(c), v.clusterSize); free {
				return nil, damaged("the allocation bitmap marks cluster %d free, one of %s", c, what)
			}
		}
	}
	return &Map{FS: "exfat", BlockSize: v.clusterSize, Size: size, Free: free}, nil
}

func (v *exfatVolume) clusterOffset(c int64) int64 {
	return v.heapStart + (c-2)*v.clusterSize
}

// chain follows a cluster chain through the FAT, for its first limit
// clusters at most.
func (v *exfatVolume) chain(first int64, what string, limit int64) ([]int64, error) {
	var out []int64
	entry := make([]byte, 4)
	for c := first; int64(len(out)) < limit; {
		if c < 2 || c > v.clusters+1 {
			return nil, fmt.Errorf("exfat: %w: %s: cluster %d outside 2..%d", ErrDamaged, what, c, v.clusters+1)
		}
		out = append(out, c)
		if _, err := v.r.ReadAt(entry, v.fatStart+c*4); err != nil {
			return nil, fmt.Errorf("exfat: read FAT entry %d: %w", c, err)
		}
		next := int64(binary.LittleEndian.Uint32(entry))
		if next == exfatEOC {
			return out, nil
		}
		if next == exfatBad || next == 0 {
			return nil, fmt.Errorf("exfat: %w: %s: FAT entry of cluster %d is %#x", ErrDamaged, what, c, next)
		}
		c = next
	}
	return out, nil
}

// findBitmap finds the first allocation bitmap entry in the root directory.
func (v *exfatVolume) findBitmap(root []int64) (cluster, length int64, err error) {
	buf := make([]byte, v.clusterSize)
	for _, c := range root {
		if _, err := v.r.ReadAt(buf, v.clusterOffset(c)); err != nil {
			return 0, 0, fmt.Errorf("exfat: read the root directory at cluster %d: %w", c, err)
		}
		for off := 0; off+32 <= len(buf); off += 32 {
			e := buf[off : off+32]
			switch e[0] {
			case 0x00: // end of directory
				return 0, 0, fmt.Errorf("exfat: %w: no allocation bitmap entry in the root directory", ErrDamaged)
			case exfatEntryBitmap:
				if e[1]&0x01 != 0 {
					// The second bitmap of a TexFAT volume.
					return 0, 0, fmt.Errorf("exfat: %w: TexFAT (two allocation bitmaps)", ErrUnsupported)
				}
				return int64(binary.LittleEndian.Uint32(e[20:])), int64(binary.LittleEndian.Uint64(e[24:])), nil
			}
		}
	}
	return 0, 0, fmt.Errorf("exfat: %w: no allocation bitmap entry in the root directory", ErrDamaged)
}

// exfatChecksum checks the main boot region's checksum: sector 11 repeats
// the checksum of sectors 0 to 10 (less the volume flags and percent-in-use
// bytes, which change in use).
func exfatChecksum(r io.ReaderAt, sectorSize int64) error {
	region := make([]byte, 12*sectorSize)
	if _, err := r.ReadAt(region, 0); err != nil {
		return fmt.Errorf("exfat: read the boot region: %w", err)
	}
	var sum uint32
	for i, x := range region[:11*sectorSize] {
		if i == 106 || i == 107 || i == 112 {
			continue
		}
		sum = (sum&1)<<31 | sum>>1 + uint32(x)
	}
	for off := 11 * sectorSize; off < 12*sectorSize; off += 4 {
		if got := binary.LittleEndian.Uint32(region[off:]); got != sum {
			return fmt.Errorf("exfat: %w: the boot region checksum is %#08x, sector 11 says %#08x", ErrDamaged, sum, got)
		}
	}
	return nil
}
