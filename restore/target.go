package restore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/snapshot"
)

// Target is an opened restore target.
type Target struct {
	File  *os.File
	Path  string
	Size  int64
	Block bool // a block device rather than an image file
	Fresh bool // a newly created (or emptied) sparse image file
}

// OpenTarget opens path for a restore that needs at least minSize bytes.
// A regular file (existing or not) is created anew at createSize bytes,
// sparse, unless keep is set: then an existing file keeps its contents (a
// delta restore) and only grows to createSize. A block device is opened
// exclusively, so the kernel refuses it while it or a partition of it is
// mounted, and must hold minSize bytes.
func OpenTarget(path string, minSize, createSize int64, keep bool) (*Target, error) {
	return OpenTargetChecked(path, createSize, keep, func(size int64, _ int) error {
		if size < minSize {
			return fmt.Errorf("it holds %s (%d bytes) but the snapshot needs %s (%d bytes): choose a larger disk",
				units.Bytes(size), size, units.Bytes(minSize), minSize)
		}
		return nil
	})
}

// OpenTargetChecked is OpenTarget with check deciding whether the target
// fits: it gets the size the target has (or, for an image file, will
// have) and its logical sector size (0 for an image file), and runs before
// anything on the target changes, so a refused snapshot leaves an
// existing image file as it was.
func OpenTargetChecked(path string, createSize int64, keep bool, check func(size int64, sectorSize int) error) (*Target, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist) || err == nil && fi.Mode().IsRegular():
		fresh := !keep || fi == nil
		size := createSize
		if !fresh {
			size = max(fi.Size(), createSize)
		}
		if err := check(size, 0); err != nil {
			return nil, fmt.Errorf("target %s: %w", path, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open target %s: %w", path, err)
		}
		if fresh {
			err = f.Truncate(0)
		}
		if err == nil {
			err = f.Truncate(size)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("size target image %s to %d bytes: %w", path, size, err)
		}
		return &Target{File: f, Path: path, Size: size, Fresh: fresh}, nil
	case err != nil:
		return nil, fmt.Errorf("target %s: %w", path, err)
	case fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0:
		return nil, fmt.Errorf("target %s is neither a block device nor a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("target %s is in use (mounted, or a partition of it is mounted or held by another device): unmount it first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open target %s: %w", path, err)
	}
	size, err := DeviceSize(f)
	if err == nil {
		ss, serr := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
		if serr != nil {
			err = fmt.Errorf("sector size of %s: %w", path, serr)
		} else if cerr := check(size, ss); cerr != nil {
			err = fmt.Errorf("target %s: %w", path, cerr)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Target{File: f, Path: path, Size: size, Block: true}, nil
}

// DeviceSize returns the size of a block device in bytes.
func DeviceSize(f *os.File) (int64, error) {
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, fmt.Errorf("size of %s: %w", f.Name(), errno)
	}
	return int64(size), nil
}

// writer writes chunks to a target; zero chunks go through a Zeroer.
//
// On a block device, a chunk whose offset, length and buffer suit the
// device's direct-I/O alignment is written through a second descriptor
// opened with O_DIRECT: it goes from the chunk buffer to the device
// without a copy into the page cache (which in a rescue environment is
// the machine's only RAM), the device writes while the next chunks are
// fetched and decompressed instead of all at once in the final flush, and
// a write error names its chunk at once. A direct chunk covers whole
// pages, so no page is ever shared between a direct and a buffered write.
// Every other chunk, and every chunk of an image file (direct writes
// into a fresh sparse image on ext4 measured slower than the page cache:
// docs/performance.md), goes through the page cache, and its writeback is started at
// once (sync_file_range), so that the final flush waits for the last
// chunks only. flush (fsync on the inode) makes both kinds durable and
// reports any write error.
type writer struct {
	f      *os.File
	z      *Zeroer
	direct *os.File // f opened again with O_DIRECT; nil for an image file or a device without direct I/O
	align  int64    // offset and length multiple for direct writes (at least a page)
	memAl  uintptr  // buffer address multiple for direct writes

	noDirect    atomic.Bool // a direct write was refused (EINVAL): use the page cache
	directBytes atomic.Int64
}

func newWriter(f *os.File, z *Zeroer) *writer {
	w := &writer{f: f, z: z}
	w.direct, w.align, w.memAl = openDirect(f)
	return w
}

// openDirect opens the block device f again with O_DIRECT and returns it
// with the offset and memory alignment its direct writes need, or nil for
// an image file or a device that does not say which alignment it needs.
func openDirect(f *os.File) (*os.File, int64, uintptr) {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN|unix.STATX_TYPE, &st); err != nil ||
		st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, 0, 0
	}
	offAlign, memAlign := int64(st.Dio_offset_align), uintptr(st.Dio_mem_align)
	if st.Mask&unix.STATX_DIOALIGN == 0 {
		// Kernels before 6.11 do not report it for block devices: any
		// block device takes direct I/O in logical sectors.
		if ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ss > 0 {
			offAlign, memAlign = int64(ss), uintptr(ss)
		}
	}
	if offAlign <= 0 || memAlign <= 0 || memAlign > pageSize {
		return nil, 0, 0
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, 0
	}
	// Named as the target, so that an error names the device or image.
	return os.NewFile(uintptr(fd), f.Name()), max(offAlign, pageSize), memAlign
}

// pageSize is the alignment of chunk buffers and the least alignment of
// a direct write; see alignedBytes.
const pageSize = 4096

// alignedBytes returns n bytes starting at a multiple of pageSize, so a
// chunk buffer suits direct I/O.
func alignedBytes(n int) []byte {
	b := make([]byte, n+pageSize)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (pageSize - 1))
	return b[skip : skip+n : skip+n]
}

// writeAt writes p at off, directly when the target, p and off suit
// direct I/O.
func (w *writer) writeAt(p []byte, off int64) error {
	if w.direct != nil && !w.noDirect.Load() && len(p) > 0 && off%w.align == 0 && int64(len(p))%w.align == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%w.memAl == 0 {
		_, err := w.direct.WriteAt(p, off)
		if err == nil {
			w.directBytes.Add(int64(len(p)))
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		// Refused after all (a file system that reports an alignment
		// it does not take): this and every later chunk go through the
		// page cache; rewriting the same bytes is harmless.
		w.noDirect.Store(true)
	}
	if _, err := w.f.WriteAt(p, off); err != nil {
		return err
	}
	// Start the writeback now rather than at the final flush; errors
	// are the flush's to report.
	_ = unix.SyncFileRange(int(w.f.Fd()), off, int64(len(p)), unix.SYNC_FILE_RANGE_WRITE)
	return nil
}

// close releases the direct descriptor.
func (w *writer) close() {
	if w.direct != nil {
		w.direct.Close()
	}
}

// holds reads the target's bytes at off into old and reports whether they
// equal want; a nil want means zeros.
func (w *writer) holds(old, want []byte, off int64) (bool, error) {
	n, err := w.f.ReadAt(old, off)
	if n < len(old) {
		if err == io.EOF {
			return false, nil // past the end of a shorter image: write
		}
		return false, fmt.Errorf("read target at offset %d: %w", off, err)
	}
	if want == nil {
		return snapshot.IsZero(old), nil
	}
	return bytes.Equal(old, want), nil
}

// zero makes [off, off+n) read as zeros the cheapest way the target offers.
func (w *writer) zero(off, n int64) error { return w.z.Zero(off, n) }

// flush makes every write durable.
func (w *writer) flush() error {
	return Flush(w.f)
}

// Flush makes every write to f durable. Its error wraps ErrWrite and says
// what it means: the kernel reports a lost write once, so data written
// before this flush may be missing from the target.
func Flush(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%w: flush %s: %w: data written before this flush may not be on the device; check the device (dmesg, SMART, free space under an image file) and restore again",
			ErrWrite, f.Name(), err)
	}
	return nil
}
