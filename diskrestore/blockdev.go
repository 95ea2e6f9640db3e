package diskrestore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Geometry is what the kernel says about a disk, or what a regular image
// file allows us to know about one.
type Geometry struct {
	Size               int64 // bytes
	LogicalSectorSize  int   // 0 for a regular file: the layout decides
	PhysicalSectorSize int   // 0 for a regular file
	BlockDevice        bool
}

// GeometryOf returns f's size and, for a block device, its logical
// (BLKSSZGET) and physical (BLKPBSZGET) sector sizes.
func GeometryOf(f *os.File) (Geometry, error) {
	st, err := f.Stat()
	if err != nil {
		return Geometry{}, err
	}
	if st.Mode().IsRegular() {
		return Geometry{Size: st.Size()}, nil
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return Geometry{}, fmt.Errorf("%s is neither a block device nor a regular file", f.Name())
	}
	fd := int(f.Fd())
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return Geometry{}, fmt.Errorf("%s: BLKGETSIZE64: %w", f.Name(), errno)
	}
	lss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil {
		return Geometry{}, fmt.Errorf("%s: BLKSSZGET: %w", f.Name(), err)
	}
	pss, err := unix.IoctlGetInt(fd, unix.BLKPBSZGET)
	if err != nil {
		pss = lss
	}
	return Geometry{Size: int64(size), LogicalSectorSize: lss, PhysicalSectorSize: pss, BlockDevice: true}, nil
}

// RereadPartitions tells the kernel about the partition table just written
// on the block device f: BLKRRPART first, and when the device is busy or
// refuses, BLKPG to delete the kernel's old partitions and add the new
// ones one by one. Regular files need nothing and return nil.
func RereadPartitions(f *os.File, parts []PartitionRange) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode().IsRegular() {
		return nil
	}
	fd := int(f.Fd())
	rrErr := unix.IoctlSetInt(fd, unix.BLKRRPART, 0)
	if rrErr == nil {
		return nil
	}
	var errs []error
	for _, pno := range kernelPartitions(st) {
		if err := blkpg(fd, unix.BLKPG_DEL_PARTITION, PartitionRange{Number: pno}); err != nil {
			errs = append(errs, fmt.Errorf("delete partition %d: %w", pno, err))
		}
	}
	for _, p := range parts {
		if err := blkpg(fd, unix.BLKPG_ADD_PARTITION, p); err != nil {
			errs = append(errs, fmt.Errorf("add partition %d: %w", p.Number, err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("the kernel did not take the new partition table of %s (BLKRRPART: %v; BLKPG: %w); "+
		"partition device nodes may be missing or stale until the next boot or `partprobe %s`",
		f.Name(), rrErr, errors.Join(errs...), f.Name())
}

// PartitionRange is a partition as the kernel knows it: number and byte range.
type PartitionRange struct {
	Number int
	Start  int64 // bytes
	Length int64 // bytes
}

func blkpg(fd int, op int32, p PartitionRange) error {
	part := unix.BlkpgPartition{Start: p.Start, Length: p.Length, Pno: int32(p.Number)}
	arg := unix.BlkpgIoctlArg{Op: op, Datalen: int32(unsafe.Sizeof(part)), Data: (*byte)(unsafe.Pointer(&part))}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return errno
	}
	return nil
}

// kernelPartitions lists the partition numbers the kernel has for the
// block device st, from /sys/dev/block/MAJ:MIN/*/partition.
func kernelPartitions(st os.FileInfo) []int {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)))
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "partition"))
	var out []int
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// seekData returns the first offset at or after off that holds data in the
// regular file f (SEEK_DATA), so that scans skip the holes of sparse
// images. It returns off itself when it cannot tell, and the file's size
// when nothing follows. f's file offset is left where it was.
func seekData(f *os.File, off int64) (int64, error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return off, err
	}
	fd := int(f.Fd())
	cur, err := unix.Seek(fd, 0, io.SeekCurrent)
	if err != nil {
		return off, err
	}
	defer unix.Seek(fd, cur, io.SeekStart)
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return st.Size(), nil
	}
	if err != nil {
		return off, err
	}
	return data, nil
}
