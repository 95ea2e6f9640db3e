package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ZeroMethod names how a range of the target was made to read as zeros.
type ZeroMethod string

// Zeroing methods, cheapest first.
const (
	// ZeroSparse: a newly created sparse image file reads zeros already.
	ZeroSparse ZeroMethod = "sparse image (already zeros)"
	// ZeroHole: a hole punched in an image file.
	ZeroHole ZeroMethod = "punched holes"
	// ZeroUnmap: fallocate(PUNCH_HOLE) on a block device, which the
	// kernel turns into a write-zeroes command that may unmap (thin
	// provisioning, SSD deallocate) and never falls back to writing.
	ZeroUnmap ZeroMethod = "write-zeroes offload (unmap)"
	// ZeroOffload: fallocate(ZERO_RANGE) on a block device whose queue
	// offers write-zeroes (write_zeroes_max_bytes > 0): the device zeroes.
	ZeroOffload ZeroMethod = "write-zeroes offload"
	// ZeroWritten: zeros written by the kernel (BLKZEROOUT) or by Rewind.
	ZeroWritten ZeroMethod = "written zeros"
)

// zeroPiece bounds one zeroing call, so a cancelled restore stops soon.
const zeroPiece = 1 << 30

// Zeroer makes ranges of a target read as zeros the cheapest way the
// target offers and records which way each byte went. It is safe for
// concurrent use.
type Zeroer struct {
	f       *os.File
	fresh   bool
	block   bool
	sector  int64
	offload bool // the queue documents write-zeroes (write_zeroes_max_bytes > 0)

	mu      sync.Mutex
	noPunch bool // fallocate(PUNCH_HOLE) was refused: do not ask again
	noRange bool // fallocate(ZERO_RANGE) was refused
	noIoctl bool // BLKZEROOUT was refused
	bytes   map[ZeroMethod]int64
	calls   int // zeroing operations (fallocate, ioctl or a run of written zeros)
	elapsed time.Duration
}

// NewZeroer returns a Zeroer for f; fresh says f is a newly created sparse
// image file that reads zeros everywhere already.
func NewZeroer(f *os.File, fresh bool) *Zeroer {
	z := &Zeroer{f: f, fresh: fresh, sector: 512, bytes: make(map[ZeroMethod]int64)}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return z
	}
	z.block, z.fresh = true, false
	if ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ss > 0 {
		z.sector = int64(ss)
	}
	z.offload = writeZeroesMaxBytes(fi) > 0
	return z
}

// writeZeroesMaxBytes reads the block device's queue limit for
// write-zeroes commands from sysfs (0: not offered, or unknown).
func writeZeroesMaxBytes(fi os.FileInfo) int64 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	dev := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	for _, p := range []string{filepath.Join(dev, "queue"), filepath.Join(dev, "..", "queue")} {
		b, err := os.ReadFile(filepath.Join(p, "write_zeroes_max_bytes"))
		if err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	return 0
}

// Offloads reports whether zeroing costs the target no data writes: an
// image file (holes) or a block device that documents write-zeroes.
func (z *Zeroer) Offloads() bool { return !z.block || z.offload }

// Zero makes [off, off+n) read as zeros.
func (z *Zeroer) Zero(off, n int64) error {
	start := time.Now()
	defer func() {
		z.mu.Lock()
		z.elapsed += time.Since(start)
		z.mu.Unlock()
	}()
	if n <= 0 {
		return nil
	}
	if z.fresh {
		z.count(ZeroSparse, n)
		return nil
	}
	// fallocate and BLKZEROOUT take whole sectors: the ragged edges of an
	// unaligned range are written.
	lo := min((off+z.sector-1)/z.sector*z.sector, off+n)
	hi := max((off+n)/z.sector*z.sector, lo)
	if err := z.write(off, lo-off); err != nil {
		return err
	}
	for p := lo; p < hi; p += zeroPiece {
		if err := z.zeroAligned(p, min(zeroPiece, hi-p)); err != nil {
			return err
		}
	}
	return z.write(hi, off+n-hi)
}

func (z *Zeroer) zeroAligned(off, n int64) error {
	fd := int(z.f.Fd())
	z.mu.Lock()
	noPunch, noRange, noIoctl := z.noPunch, z.noRange, z.noIoctl
	z.mu.Unlock()
	if !noPunch {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			z.count(map[bool]ZeroMethod{true: ZeroUnmap, false: ZeroHole}[z.block], n)
			return nil
		}
		if !refused(err) {
			return fmt.Errorf("zero %s at byte %d (%d bytes, fallocate punch-hole): %w", z.f.Name(), off, n, err)
		}
		z.refuse(&z.noPunch)
	}
	if z.block && z.offload && !noRange {
		err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, off, n)
		if err == nil {
			z.count(ZeroOffload, n)
			return nil
		}
		if !refused(err) {
			return fmt.Errorf("zero %s at byte %d (%d bytes, fallocate zero-range): %w", z.f.Name(), off, n, err)
		}
		z.refuse(&z.noRange)
	}
	if z.block && !noIoctl {
		r := [2]uint64{uint64(off), uint64(n)}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r)))
		if errno == 0 {
			z.count(ZeroWritten, n)
			return nil
		}
		if !refused(errno) {
			return fmt.Errorf("zero %s at byte %d (%d bytes, BLKZEROOUT): %w", z.f.Name(), off, n, errno)
		}
		z.refuse(&z.noIoctl)
	}
	return z.write(off, n)
}

// refused reports whether err means "this way is not offered here", as
// opposed to an I/O error.
func refused(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENODEV)
}

func (z *Zeroer) refuse(flag *bool) {
	z.mu.Lock()
	*flag = true
	z.mu.Unlock()
}

// write writes n zero bytes at off.
func (z *Zeroer) write(off, n int64) error {
	if n <= 0 {
		return nil
	}
	zeros := make([]byte, min(n, 1<<20))
	for done := int64(0); done < n; {
		k := min(int64(len(zeros)), n-done)
		if _, err := z.f.WriteAt(zeros[:k], off+done); err != nil {
			return fmt.Errorf("write zeros to %s at byte %d: %w", z.f.Name(), off+done, err)
		}
		done += k
	}
	z.count(ZeroWritten, n)
	return nil
}

func (z *Zeroer) count(m ZeroMethod, n int64) {
	z.mu.Lock()
	z.bytes[m] += n
	z.calls++
	z.mu.Unlock()
}

// Calls is the number of zeroing operations so far: fallocate or
// BLKZEROOUT calls and runs of written zeros (a sparse image's ranges
// count too, at no cost). Many small ranges cost a call each.
func (z *Zeroer) Calls() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.calls
}

// ZeroUse is how many bytes one method zeroed.
type ZeroUse struct {
	Method ZeroMethod
	Bytes  int64
}

// Used lists the methods used so far, most bytes first, and the time
// spent zeroing.
func (z *Zeroer) Used() ([]ZeroUse, time.Duration) {
	z.mu.Lock()
	defer z.mu.Unlock()
	var u []ZeroUse
	for m, n := range z.bytes {
		u = append(u, ZeroUse{m, n})
	}
	sort.Slice(u, func(i, j int) bool {
		return u[i].Bytes > u[j].Bytes || u[i].Bytes == u[j].Bytes && u[i].Method < u[j].Method
	})
	return u, z.elapsed
}

// Describe words the methods used, e.g. "write-zeroes offload (unmap)"
// or "punched holes (12.0 MiB), written zeros (3.5 KiB)"; "" when nothing
// was zeroed.
func Describe(u []ZeroUse) string {
	switch len(u) {
	case 0:
		return ""
	case 1:
		return string(u[0].Method)
	}
	var parts []string
	for _, x := range u {
		parts = append(parts, fmt.Sprintf("%s (%d bytes)", x.Method, x.Bytes))
	}
	return strings.Join(parts, ", ")
}
