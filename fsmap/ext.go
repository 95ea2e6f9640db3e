package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"slices"
)

// The ext2/3/4 reader. It reads the superblock at byte 1024, the group
// descriptor table (also in meta_bg layout) and every initialised group's
// block bitmap, and lists the blocks the bitmaps mark free. A group marked
// BLOCK_UNINIT has no bitmap on disk: its free blocks are computed the way
// the kernel does (ext4_init_block_bitmap), everything but the superblock
// and descriptor backups and the bitmaps and inode tables lying in it.
//
// Layout references: the kernel's Documentation/filesystems/ext4 and
// fs/ext4/ext4.h, e2fsprogs' lib/ext2fs (super_and_bgd_loc2,
// ext2fs_bg_has_super, descriptor_block_loc2).

// Superblock field offsets (relative to the superblock, which starts at
// byte 1024 of the partition).
const (
	extSBOffset = 1024
	extSBSize   = 1024

	sbInodesCount     = 0x00
	sbBlocksCountLo   = 0x04
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbLogClusterSize  = 0x1C
	sbBlocksPerGroup  = 0x20
	sbClustersPerGrp  = 0x24
	sbInodesPerGroup  = 0x28
	sbMagic           = 0x38
	sbState           = 0x3A
	sbRevLevel        = 0x4C
	sbInodeSize       = 0x58
	sbFeatureCompat   = 0x5C
	sbFeatureIncompat = 0x60
	sbFeatureRoCompat = 0x64
	sbUUID            = 0x68
	sbReservedGDT     = 0xCE
	sbDescSize        = 0xFE
	sbFirstMetaBg     = 0x104
	sbBlocksCountHi   = 0x150
	sbMMPBlock        = 0x168
	sbChecksumType    = 0x175
	sbBackupBgs       = 0x24C
	sbChecksumSeed    = 0x270
	sbChecksum        = 0x3FC

	extMagic = 0xEF53

	stateValid  = 0x1 // EXT2_VALID_FS: cleanly unmounted
	stateErrors = 0x2 // EXT2_ERROR_FS: errors detected

	compatHasJournal   = 0x4
	compatSparseSuper2 = 0x200

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBg      = 0x10
	incompatExtents     = 0x40
	incompat64Bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBg      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	roCompatSparseSuper  = 0x1
	roCompatLargeFile    = 0x2
	roCompatBtreeDir     = 0x4
	roCompatHugeFile     = 0x8
	roCompatGdtCsum      = 0x10
	roCompatDirNlink     = 0x20
	roCompatExtraIsize   = 0x40
	roCompatHasSnapshot  = 0x80
	roCompatQuota        = 0x100
	roCompatBigalloc     = 0x200
	roCompatMetadataCsum = 0x400
	roCompatReplica      = 0x800
	roCompatReadonly     = 0x1000
	roCompatProject      = 0x2000
	roCompatSharedBlocks = 0x4000
	roCompatVerity       = 0x8000
	roCompatOrphanPresnt = 0x10000

	// incompatKnown and roCompatKnown are the features whose meaning for
	// the block bitmaps is understood: none of them puts data in blocks
	// the bitmaps call free. Any other bit makes the reader refuse
	// (ErrUnsupported), as e2fsprogs refuses to open such a file system.
	incompatKnown = incompatFiletype | incompatRecover | incompatMetaBg | incompatExtents |
		incompat64Bit | incompatMMP | incompatFlexBg | incompatEAInode | incompatDirData |
		incompatCsumSeed | incompatLargeDir | incompatInlineData | incompatEncrypt | incompatCasefold
	roCompatKnown = roCompatSparseSuper | roCompatLargeFile | roCompatBtreeDir | roCompatHugeFile |
		roCompatGdtCsum | roCompatDirNlink | roCompatExtraIsize | roCompatQuota |
		roCompatMetadataCsum | roCompatReadonly | roCompatProject | roCompatSharedBlocks |
		roCompatVerity | roCompatOrphanPresnt

	// Group descriptor fields.
	gdBlockBitmapLo  = 0x00
	gdInodeBitmapLo  = 0x04
	gdInodeTableLo   = 0x08
	gdFreeBlocksLo   = 0x0C
	gdFlags          = 0x12
	gdBlockBitmapCsL = 0x18
	gdChecksum       = 0x1E
	gdBlockBitmapHi  = 0x20
	gdInodeBitmapHi  = 0x24
	gdInodeTableHi   = 0x28
	gdFreeBlocksHi   = 0x2C
	gdBlockBitmapCsH = 0x38
	gdCsumHiEnd      = 0x3A // descriptors at least this long carry the high half of the bitmap checksum

	bgBlockUninit = 0x2

	// The multiple-mount protection block (struct mmp_struct).
	mmpMagic    = 0x004D4D50
	mmpSeqClean = 0xFF4D4D50
	mmpSeqFsck  = 0xE24D4D50

	// extMaxGroups and extMaxDescBytes bound the memory the reader uses:
	// the descriptor table it holds (at most 64 MiB) and the metadata runs
	// it lists (four of 16 bytes per group, at most 64 MiB). 2^20 groups
	// of 64-byte descriptors are 128 TiB at 4 KiB blocks; larger (or
	// crafted) file systems are captured whole.
	extMaxGroups    = 1 << 20
	extMaxDescBytes = 64 << 20

	// extBitmapBatch is the most a single read of block bitmaps spans:
	// with flex_bg the bitmaps of a flex group lie side by side, so one
	// read fetches many groups' bitmaps.
	extBitmapBatch = 1 << 20
	// extBitmapGap is the most blocks a batch skips between two bitmaps
	// (the bitmaps of BLOCK_UNINIT groups, which are not read).
	extBitmapGap = 64
)

var extCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32cRaw is the kernel's crc32c(seed, p): no inversion on entry or exit.
func crc32cRaw(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, extCastagnoli, p)
}

// extFS is a parsed ext superblock and descriptor table.
type extFS struct {
	name           string // ext2, ext3 or ext4
	bs             int64  // block size in bytes
	blocks         uint64 // blocks_count
	firstDataBlock uint64
	perGroup       uint64 // blocks per group
	groups         uint64
	inodesPerGroup uint64
	inodeSize      uint64
	incompat       uint32
	roCompat       uint32
	compat         uint32
	reservedGDT    uint64
	descSize       int
	descPerBlock   uint64
	descBlocks     uint64 // blocks holding the descriptor table
	firstMetaBg    uint64
	backupBgs      [2]uint64
	csumSeed       uint32
	uuid           []byte
	gdt            []byte // groups*descSize bytes
}

func (x *extFS) is64() bool          { return x.descSize >= 64 }
func (x *extFS) metadataCsum() bool  { return x.roCompat&roCompatMetadataCsum != 0 }
func (x *extFS) groupDescCsum() bool { return x.roCompat&(roCompatMetadataCsum|roCompatGdtCsum) != 0 }
func (x *extFS) desc(g uint64) []byte {
	return x.gdt[g*uint64(x.descSize) : (g+1)*uint64(x.descSize)]
}

// groupStart is the first block of group g.
func (x *extFS) groupStart(g uint64) uint64 { return x.firstDataBlock + g*x.perGroup }

// groupEnd is one past the last block of group g (the last group may be short).
func (x *extFS) groupEnd(g uint64) uint64 { return min(x.groupStart(g)+x.perGroup, x.blocks) }

func (x *extFS) blockBitmap(g uint64) uint64 {
	return x.descField32(g, gdBlockBitmapLo, gdBlockBitmapHi)
}
func (x *extFS) inodeBitmap(g uint64) uint64 {
	return x.descField32(g, gdInodeBitmapLo, gdInodeBitmapHi)
}
func (x *extFS) inodeTable(g uint64) uint64 { return x.descField32(g, gdInodeTableLo, gdInodeTableHi) }

func (x *extFS) descField32(g uint64, lo, hi int) uint64 {
	d := x.desc(g)
	v := uint64(binary.LittleEndian.Uint32(d[lo:]))
	if x.is64() {
		v |= uint64(binary.LittleEndian.Uint32(d[hi:])) << 32
	}
	return v
}

func (x *extFS) freeCount(g uint64) uint64 {
	d := x.desc(g)
	v := uint64(binary.LittleEndian.Uint16(d[gdFreeBlocksLo:]))
	if x.is64() {
		v |= uint64(binary.LittleEndian.Uint16(d[gdFreeBlocksHi:])) << 16
	}
	return v
}

// blockUninit reports whether group g has no block bitmap on disk. The
// flag counts only with group descriptor checksums, as in the kernel.
func (x *extFS) blockUninit(g uint64) bool {
	return x.groupDescCsum() && binary.LittleEndian.Uint16(x.desc(g)[gdFlags:])&bgBlockUninit != 0
}

// inodeTableBlocks is the length of every group's inode table.
func (x *extFS) inodeTableBlocks() uint64 {
	return (x.inodesPerGroup*x.inodeSize + uint64(x.bs) - 1) / uint64(x.bs)
}

// hasSuper reports whether group g holds a superblock backup
// (ext4_bg_has_super).
func (x *extFS) hasSuper(g uint64) bool {
	if g == 0 {
		return true
	}
	if x.compat&compatSparseSuper2 != 0 {
		return g == x.backupBgs[0] || g == x.backupBgs[1]
	}
	if g <= 1 || x.roCompat&roCompatSparseSuper == 0 {
		return true
	}
	if g&1 == 0 {
		return false
	}
	return extIsPower(g, 3) || extIsPower(g, 5) || extIsPower(g, 7)
}

// extIsPower reports whether n is a power of base (1 included).
func extIsPower(n, base uint64) bool {
	p := uint64(1)
	for p < n {
		p *= base
	}
	return p == n
}

// baseMeta returns how many blocks at the start of group g hold a
// superblock copy, descriptor blocks (the table, or with meta_bg the one
// descriptor block of its meta group) and reserved descriptor blocks
// (ext4_num_base_meta_blocks).
func (x *extFS) baseMeta(g uint64) (n uint64) {
	super := x.hasSuper(g)
	if x.incompat&incompatMetaBg == 0 || g < x.firstMetaBg*x.descPerBlock {
		if !super {
			return 0
		}
		gdb := x.descBlocks
		if x.incompat&incompatMetaBg != 0 {
			gdb = x.firstMetaBg
		}
		return 1 + gdb + x.reservedGDT
	}
	if super {
		n = 1
	}
	first := g / x.descPerBlock * x.descPerBlock
	if g == first || g == first+1 || g == first+x.descPerBlock-1 {
		n++
	}
	return n
}

// descBlockLoc is the block holding descriptor block i
// (descriptor_block_loc2 for the primary copy).
func (x *extFS) descBlockLoc(i uint64) uint64 {
	if x.incompat&incompatMetaBg == 0 || i < x.firstMetaBg {
		return x.firstDataBlock + 1 + i
	}
	g := x.descPerBlock * i
	loc := x.groupStart(g)
	if x.hasSuper(g) {
		loc++
	}
	return loc
}

// readExt reads an ext2/3/4 allocation map.
func readExt(r io.ReaderAt, size int64) (*Map, error) {
	if size < extSBOffset+extSBSize {
		return nil, ErrUnknown
	}
	sb := make([]byte, extSBSize)
	if err := extReadAt(r, sb, extSBOffset); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrUnknown
		}
		return nil, fmt.Errorf("ext: read the superblock at byte %d: %w", extSBOffset, err)
	}
	if binary.LittleEndian.Uint16(sb[sbMagic:]) != extMagic {
		return nil, ErrUnknown
	}
	x, err := parseExtSuper(sb, size)
	if err != nil {
		return nil, err
	}
	if err := x.checkMMP(r, sb); err != nil {
		return nil, err
	}
	if err := x.readDescriptors(r); err != nil {
		return nil, err
	}
	meta, err := x.metadata()
	if err != nil {
		return nil, err
	}
	free, err := x.freeRanges(r, meta)
	if err != nil {
		return nil, err
	}
	return &Map{FS: x.name, BlockSize: x.bs, Size: size, Free: free}, nil
}

// extName is blkid's name for the file system: jbd for an external
// journal, ext4 when it uses a feature ext3 lacks, else ext3 when it has a
// journal, else ext2.
func extName(compat, incompat, roCompat uint32) string {
	const ext3Incompat = incompatFiletype | incompatRecover | incompatMetaBg
	const ext3RoCompat = roCompatSparseSuper | roCompatLargeFile | roCompatBtreeDir
	switch {
	case incompat&incompatJournalDev != 0:
		return "jbd" // an external journal, not a file system
	case incompat&^ext3Incompat != 0 || roCompat&^ext3RoCompat != 0:
		return "ext4"
	case compat&compatHasJournal != 0:
		return "ext3"
	default:
		return "ext2"
	}
}

// parseExtSuper checks the superblock: its checksum, that the file system
// is clean, that its features are ones the reader knows, and that its
// geometry is sane and fits the partition.
func parseExtSuper(sb []byte, size int64) (*extFS, error) {
	le := binary.LittleEndian
	x := &extFS{
		compat:   le.Uint32(sb[sbFeatureCompat:]),
		incompat: le.Uint32(sb[sbFeatureIncompat:]),
		roCompat: le.Uint32(sb[sbFeatureRoCompat:]),
		uuid:     sb[sbUUID : sbUUID+16],
	}
	x.name = extName(x.compat, x.incompat, x.roCompat)
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w: "+format, append([]any{x.name, ErrDamaged}, a...)...)
	}
	if x.metadataCsum() {
		if t := sb[sbChecksumType]; t != 1 {
			return nil, damaged("superblock checksum type %d is not crc32c (1)", t)
		}
		if got, want := crc32cRaw(^uint32(0), sb[:sbChecksum]), le.Uint32(sb[sbChecksum:]); got != want {
			return nil, damaged("superblock checksum is %#08x, the superblock says %#08x", got, want)
		}
	}

	// Clean first: the user should hear that the file system needs a
	// check whatever else is true of it.
	if x.incompat&incompatRecover != 0 {
		return nil, fmt.Errorf("%s: %w: its journal needs recovery (needs_recovery is set: it is mounted or was not unmounted cleanly); run e2fsck, or mount and unmount it cleanly, or capture with --raw", x.name, ErrNotClean)
	}
	state := le.Uint16(sb[sbState:])
	if state&stateErrors != 0 {
		return nil, fmt.Errorf("%s: %w: it is marked as having errors (state ERROR_FS); run e2fsck -f, or capture with --raw", x.name, ErrNotClean)
	}
	if state&stateValid == 0 {
		return nil, fmt.Errorf("%s: %w: it was not cleanly unmounted (state lacks VALID_FS); run e2fsck, or mount and unmount it cleanly, or capture with --raw", x.name, ErrNotClean)
	}

	unsupported := func(what string) error {
		return fmt.Errorf("%s: %w: %s", x.name, ErrUnsupported, what)
	}
	switch {
	case x.incompat&incompatJournalDev != 0:
		return nil, unsupported("an external journal device (journal_dev) has no block bitmaps")
	case x.roCompat&roCompatBigalloc != 0:
		return nil, unsupported("bigalloc (bitmaps of clusters, not blocks)")
	case x.roCompat&roCompatHasSnapshot != 0:
		return nil, unsupported("snapshots (has_snapshot)")
	case x.incompat&incompatCompression != 0:
		return nil, unsupported("compression")
	case x.incompat&^incompatKnown != 0:
		return nil, unsupported(fmt.Sprintf("unknown incompatible features %#x", x.incompat&^incompatKnown))
	case x.roCompat&^roCompatKnown != 0:
		return nil, unsupported(fmt.Sprintf("unknown read-only-compatible features %#x", x.roCompat&^roCompatKnown))
	}

	logBS := le.Uint32(sb[sbLogBlockSize:])
	if logBS > 6 {
		return nil, damaged("block size 2^(10+%d) is larger than 64 KiB", logBS)
	}
	x.bs = 1024 << logBS
	if c := le.Uint32(sb[sbLogClusterSize:]); c != logBS {
		return nil, damaged("cluster size 2^(10+%d) differs from the block size %d without bigalloc", c, x.bs)
	}
	x.blocks = uint64(le.Uint32(sb[sbBlocksCountLo:]))
	if x.incompat&incompat64Bit != 0 {
		x.blocks |= uint64(le.Uint32(sb[sbBlocksCountHi:])) << 32
	}
	x.firstDataBlock = uint64(le.Uint32(sb[sbFirstDataBlock:]))
	want := uint64(0) // the superblock is in block 0 ...
	if x.bs == 1024 {
		want = 1 // ... or, with 1 KiB blocks, is block 1
	}
	if x.firstDataBlock != want {
		return nil, damaged("first data block %d does not match the block size %d", x.firstDataBlock, x.bs)
	}
	if x.blocks <= x.firstDataBlock+1 {
		return nil, damaged("block count %d leaves no room for a group", x.blocks)
	}
	if fsBytes := x.blocks * uint64(x.bs); x.blocks > uint64(size)/uint64(x.bs) {
		return nil, damaged("the file system (%d blocks of %d bytes, %d bytes) is larger than its partition (%d bytes)", x.blocks, x.bs, fsBytes, size)
	}
	x.perGroup = uint64(le.Uint32(sb[sbBlocksPerGroup:]))
	if x.perGroup < 8 || x.perGroup > 8*uint64(x.bs) || x.perGroup%8 != 0 {
		return nil, damaged("%d blocks per group (want a multiple of 8 up to %d)", x.perGroup, 8*x.bs)
	}
	if c := uint64(le.Uint32(sb[sbClustersPerGrp:])); c != x.perGroup {
		return nil, damaged("%d clusters per group differs from %d blocks per group without bigalloc", c, x.perGroup)
	}
	x.groups = (x.blocks - x.firstDataBlock + x.perGroup - 1) / x.perGroup
	if x.groups > extMaxGroups {
		return nil, unsupported(fmt.Sprintf("%d block groups (the reader takes up to %d)", x.groups, extMaxGroups))
	}
	x.inodesPerGroup = uint64(le.Uint32(sb[sbInodesPerGroup:]))
	if x.inodesPerGroup == 0 || x.inodesPerGroup > 8*uint64(x.bs) {
		return nil, damaged("%d inodes per group (want 1 to %d)", x.inodesPerGroup, 8*x.bs)
	}
	if n := uint64(le.Uint32(sb[sbInodesCount:])); n != x.inodesPerGroup*x.groups {
		return nil, damaged("inode count %d is not %d groups of %d inodes", n, x.groups, x.inodesPerGroup)
	}
	x.inodeSize = 128
	if le.Uint32(sb[sbRevLevel:]) >= 1 {
		x.inodeSize = uint64(le.Uint16(sb[sbInodeSize:]))
		if x.inodeSize < 128 || x.inodeSize > uint64(x.bs) || x.inodeSize&(x.inodeSize-1) != 0 {
			return nil, damaged("inode size %d (want a power of 2 from 128 to the block size %d)", x.inodeSize, x.bs)
		}
	}
	x.descSize = 32
	if x.incompat&incompat64Bit != 0 {
		x.descSize = int(le.Uint16(sb[sbDescSize:]))
		if x.descSize < 64 || x.descSize > 1024 || x.descSize&(x.descSize-1) != 0 || int64(x.descSize) > x.bs {
			return nil, damaged("group descriptor size %d (want a power of 2 from 64 to 1024)", x.descSize)
		}
	}
	if n := x.groups * uint64(x.descSize); n > extMaxDescBytes {
		return nil, unsupported(fmt.Sprintf("a group descriptor table of %d bytes (%d groups of %d bytes; the reader takes up to %d bytes)", n, x.groups, x.descSize, extMaxDescBytes))
	}
	x.descPerBlock = uint64(x.bs) / uint64(x.descSize)
	x.descBlocks = (x.groups + x.descPerBlock - 1) / x.descPerBlock
	x.reservedGDT = uint64(le.Uint16(sb[sbReservedGDT:]))
	if x.reservedGDT > uint64(x.bs)/4 {
		return nil, damaged("%d reserved descriptor blocks (at most %d)", x.reservedGDT, x.bs/4)
	}
	if x.incompat&incompatMetaBg != 0 {
		x.firstMetaBg = uint64(le.Uint32(sb[sbFirstMetaBg:]))
		if x.firstMetaBg > x.descBlocks {
			return nil, damaged("first meta block group %d is past the %d descriptor blocks", x.firstMetaBg, x.descBlocks)
		}
	}
	x.backupBgs = [2]uint64{uint64(le.Uint32(sb[sbBackupBgs:])), uint64(le.Uint32(sb[sbBackupBgs+4:]))}
	if x.metadataCsum() {
		if x.incompat&incompatCsumSeed != 0 {
			x.csumSeed = le.Uint32(sb[sbChecksumSeed:])
		} else {
			x.csumSeed = crc32cRaw(^uint32(0), x.uuid)
		}
	}
	return x, nil
}

// checkMMP refuses a file system with multiple-mount protection whose MMP
// block says it is in use (mounted, perhaps by another machine sharing the
// disk, or being checked).
func (x *extFS) checkMMP(r io.ReaderAt, sb []byte) error {
	if x.incompat&incompatMMP == 0 {
		return nil
	}
	blk := binary.LittleEndian.Uint64(sb[sbMMPBlock:])
	if blk < x.firstDataBlock || blk >= x.blocks {
		return fmt.Errorf("%s: %w: the multiple-mount protection block %d lies outside the file system of %d blocks", x.name, ErrDamaged, blk, x.blocks)
	}
	var mmp [8]byte
	if err := extReadAt(r, mmp[:], int64(blk)*x.bs); err != nil {
		return fmt.Errorf("%s: read the multiple-mount protection block at byte %d: %w", x.name, int64(blk)*x.bs, err)
	}
	if magic := binary.LittleEndian.Uint32(mmp[:]); magic != mmpMagic {
		return fmt.Errorf("%s: %w: the multiple-mount protection block %d has magic %#x, not %#x", x.name, ErrDamaged, blk, magic, mmpMagic)
	}
	switch seq := binary.LittleEndian.Uint32(mmp[4:]); seq {
	case mmpSeqClean:
		return nil
	case mmpSeqFsck:
		return fmt.Errorf("%s: %w: e2fsck is checking it (multiple-mount protection says so); wait for it to finish, or capture with --raw", x.name, ErrNotClean)
	default:
		return fmt.Errorf("%s: %w: it is in use (multiple-mount protection sequence %#x: mounted here or on another machine, or not unmounted cleanly); unmount it everywhere, or run e2fsck, or capture with --raw", x.name, ErrNotClean, seq)
	}
}

// readDescriptors reads the group descriptor table and checks every
// descriptor's checksum.
func (x *extFS) readDescriptors(r io.ReaderAt) error {
	x.gdt = make([]byte, x.descBlocks*uint64(x.bs))
	bs := uint64(x.bs)
	for i := uint64(0); i < x.descBlocks; {
		// Descriptor blocks before the first meta_bg lie side by side:
		// read them at once.
		n := uint64(1)
		if x.incompat&incompatMetaBg == 0 {
			n = x.descBlocks
		} else if i < x.firstMetaBg {
			n = x.firstMetaBg - i
		}
		loc := x.descBlockLoc(i)
		if loc+n > x.blocks {
			return fmt.Errorf("%s: %w: group descriptor block %d lies at block %d, outside the file system of %d blocks", x.name, ErrDamaged, i, loc, x.blocks)
		}
		if err := extReadAt(r, x.gdt[i*bs:(i+n)*bs], int64(loc*bs)); err != nil {
			return fmt.Errorf("%s: read the group descriptors at byte %d: %w", x.name, loc*bs, err)
		}
		i += n
	}
	x.gdt = x.gdt[:x.groups*uint64(x.descSize)]
	if !x.groupDescCsum() {
		return nil
	}
	for g := range x.groups {
		d := x.desc(g)
		want := binary.LittleEndian.Uint16(d[gdChecksum:])
		if got := x.descChecksum(g, d); got != want {
			return fmt.Errorf("%s: %w: the descriptor of group %d has checksum %#04x, it says %#04x", x.name, ErrDamaged, g, got, want)
		}
	}
	return nil
}

// descChecksum is ext4_group_desc_csum: crc32c with metadata_csum, else
// crc16 with gdt_csum, over the group number and the descriptor without
// its checksum field.
func (x *extFS) descChecksum(g uint64, d []byte) uint16 {
	var le32 [4]byte
	binary.LittleEndian.PutUint32(le32[:], uint32(g))
	if x.metadataCsum() {
		c := crc32cRaw(x.csumSeed, le32[:])
		c = crc32cRaw(c, d[:gdChecksum])
		c = crc32cRaw(c, []byte{0, 0})
		c = crc32cRaw(c, d[gdChecksum+2:])
		return uint16(c)
	}
	c := extCRC16(0xFFFF, x.uuid)
	c = extCRC16(c, le32[:])
	c = extCRC16(c, d[:gdChecksum])
	if x.incompat&incompat64Bit != 0 && len(d) > gdChecksum+2 {
		c = extCRC16(c, d[gdChecksum+2:])
	}
	return c
}

// extRun is a run of blocks [start, end).
type extRun struct{ start, end uint64 }

// metadata lists the blocks every group's metadata occupies (superblock
// and descriptor copies, reserved descriptor blocks, bitmaps, inode
// tables), sorted and merged, after checking each lies inside the file
// system.
func (x *extFS) metadata() ([]extRun, error) {
	runs := make([]extRun, 0, 4*x.groups)
	itb := x.inodeTableBlocks()
	for g := range x.groups {
		if n := x.baseMeta(g); n > 0 {
			s := x.groupStart(g)
			if s+n > x.groupEnd(g) {
				return nil, fmt.Errorf("%s: %w: the superblock and descriptor copies of group %d (%d blocks) do not fit the group", x.name, ErrDamaged, g, n)
			}
			runs = append(runs, extRun{s, s + n})
		}
		for _, m := range []struct {
			what  string
			start uint64
			n     uint64
		}{
			{"block bitmap", x.blockBitmap(g), 1},
			{"inode bitmap", x.inodeBitmap(g), 1},
			{"inode table", x.inodeTable(g), itb},
		} {
			if m.start < x.firstDataBlock || m.start >= x.blocks || m.n > x.blocks-m.start {
				return nil, fmt.Errorf("%s: %w: the descriptor of group %d puts its %s at block %d, outside the file system of %d blocks", x.name, ErrDamaged, g, m.what, m.start, x.blocks)
			}
			runs = append(runs, extRun{m.start, m.start + m.n})
		}
	}
	slices.SortFunc(runs, func(a, b extRun) int {
		if a.start < b.start {
			return -1
		}
		if a.start > b.start {
			return 1
		}
		return 0
	})
	merged := runs[:0]
	for _, r := range runs {
		if n := len(merged); n > 0 && r.start <= merged[n-1].end {
			merged[n-1].end = max(merged[n-1].end, r.end)
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

// freeRanges walks the groups in order and returns their free blocks as
// merged byte ranges.
func (x *extFS) freeRanges(r io.ReaderAt, meta []extRun) ([]Range, error) {
	var free freeList
	bs := x.bs
	add := func(start, end uint64) { free.add(int64(start)*bs, int64(end-start)*bs) }
	br := extBitmapReader{x: x, r: r}
	for g := range x.groups {
		gs, ge := x.groupStart(g), x.groupEnd(g)
		// The metadata runs overlapping this group.
		i, _ := slices.BinarySearchFunc(meta, gs, func(m extRun, b uint64) int {
			if m.end <= b {
				return -1
			}
			return 1
		})
		var inGroup []extRun
		for ; i < len(meta) && meta[i].start < ge; i++ {
			inGroup = append(inGroup, extRun{max(meta[i].start, gs), min(meta[i].end, ge)})
		}
		if x.blockUninit(g) {
			// ext4_init_block_bitmap: everything but the metadata is free.
			next := gs
			for _, m := range inGroup {
				if m.start > next {
					add(next, m.start)
				}
				next = m.end
			}
			if next < ge {
				add(next, ge)
			}
			continue
		}
		bm, err := br.bitmap(g)
		if err != nil {
			return nil, err
		}
		if x.metadataCsum() {
			if err := x.checkBitmapCsum(g, bm); err != nil {
				return nil, err
			}
		}
		n := ge - gs
		for _, m := range inGroup {
			if c := extNextClear(bm, m.start-gs, m.end-gs); c < m.end-gs {
				return nil, fmt.Errorf("%s: %w: the block bitmap of group %d marks block %d free, but it holds file system metadata", x.name, ErrDamaged, g, gs+c)
			}
		}
		var count uint64
		for s := extNextClear(bm, 0, n); s < n; s = extNextClear(bm, s, n) {
			e := extNextSet(bm, s, n)
			add(gs+s, gs+e)
			count += e - s
			s = e
		}
		if want := x.freeCount(g); count != want {
			return nil, fmt.Errorf("%s: %w: the block bitmap of group %d marks %d blocks free, its descriptor says %d", x.name, ErrDamaged, g, count, want)
		}
	}
	return free.done(), nil
}

// checkBitmapCsum checks group g's block bitmap against the crc32c in its
// descriptor (ext4_block_bitmap_csum_verify).
func (x *extFS) checkBitmapCsum(g uint64, bm []byte) error {
	d := x.desc(g)
	got := crc32cRaw(x.csumSeed, bm[:x.perGroup/8])
	want := uint32(binary.LittleEndian.Uint16(d[gdBlockBitmapCsL:]))
	if x.descSize >= gdCsumHiEnd {
		want |= uint32(binary.LittleEndian.Uint16(d[gdBlockBitmapCsH:])) << 16
	} else {
		got &= 0xFFFF
	}
	if got != want {
		return fmt.Errorf("%s: %w: the block bitmap of group %d has checksum %#08x, its descriptor says %#08x", x.name, ErrDamaged, g, got, want)
	}
	return nil
}

// extBitmapReader reads block bitmaps in batches: on a miss it reads one span
// covering this group's bitmap and those of the following initialised
// groups that lie after it within extBitmapBatch bytes (with flex_bg they
// sit side by side), so a large file system costs a few large reads.
type extBitmapReader struct {
	x     *extFS
	r     io.ReaderAt
	start uint64 // first block in buf
	buf   []byte
}

func (b *extBitmapReader) bitmap(g uint64) ([]byte, error) {
	x, bs := b.x, uint64(b.x.bs)
	blk := x.blockBitmap(g)
	if blk >= b.start && (blk-b.start+1)*bs <= uint64(len(b.buf)) {
		o := (blk - b.start) * bs
		return b.buf[o : o+bs], nil
	}
	limit := blk + max(extBitmapBatch/bs, 1)
	end := blk + 1
	for h := g + 1; h < x.groups; h++ {
		if x.blockUninit(h) {
			continue
		}
		c := x.blockBitmap(h)
		if c < end || c >= limit || c-end > extBitmapGap {
			break
		}
		end = c + 1
	}
	n := (end - blk) * bs
	if uint64(cap(b.buf)) < n {
		b.buf = make([]byte, n)
	}
	b.buf = b.buf[:n]
	b.start = blk
	if err := extReadAt(b.r, b.buf, int64(blk*bs)); err != nil {
		b.buf = b.buf[:0]
		return nil, fmt.Errorf("%s: read the block bitmap of group %d at byte %d: %w", x.name, g, blk*bs, err)
	}
	return b.buf[:bs], nil
}

// extNextClear returns the index of the first clear bit of bm in [i, n), or
// n. Bits are numbered little-endian within bytes, as ext bitmaps are.
func extNextClear(bm []byte, i, n uint64) uint64 {
	for i < n {
		if i%64 == 0 && i+64 <= n {
			w := binary.LittleEndian.Uint64(bm[i/8:])
			if w == ^uint64(0) {
				i += 64
				continue
			}
			return min(i+uint64(bits.TrailingZeros64(^w)), n)
		}
		if bm[i/8]&(1<<(i%8)) == 0 {
			return i
		}
		i++
	}
	return n
}

// extNextSet returns the index of the first set bit of bm in [i, n), or n.
func extNextSet(bm []byte, i, n uint64) uint64 {
	for i < n {
		if i%64 == 0 && i+64 <= n {
			w := binary.LittleEndian.Uint64(bm[i/8:])
			if w == 0 {
				i += 64
				continue
			}
			return min(i+uint64(bits.TrailingZeros64(w)), n)
		}
		if bm[i/8]&(1<<(i%8)) != 0 {
			return i
		}
		i++
	}
	return n
}

// extCRC16Table is the reflected CRC-16 of polynomial 0x8005 (the kernel's
// lib/crc16), which gdt_csum descriptors use.
var extCRC16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

func extCRC16(c uint16, p []byte) uint16 {
	for _, b := range p {
		c = c>>8 ^ extCRC16Table[byte(c)^b]
	}
	return c
}

// extReadAt fills p from r at off; a short read is an error.
func extReadAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
