package initramfs

// The rescue USB writer: list the sticks a user may write Rewind's image
// onto, refuse anything else, write, flush and read back.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"golang.org/x/sys/unix"
)

// USBDevice is a block device the USB writer offers: removable or
// attached over USB.
type USBDevice struct {
	Number int    // 1, 2, ... in name order: what --device takes
	Vendor string // from sysfs device/vendor, or ""
	DevNum string // the device number, major:minor, from sysfs dev
	diskrestore.Disk
}

// Description is "Vendor Model", or what is known.
func (d USBDevice) Description() string {
	s := strings.TrimSpace(d.Vendor + " " + d.Model)
	if s == "" {
		return "(no model)"
	}
	return s
}

// ListUSBDevices lists the removable and USB-attached whole disks under
// root ("" or "/" for the running system; tests pass a sysfs fixture).
func ListUSBDevices(root string) ([]USBDevice, error) {
	disks, err := diskrestore.ListDisks(diskrestore.ListOptions{Root: root})
	if err != nil {
		return nil, err
	}
	if root == "" {
		root = "/"
	}
	var out []USBDevice
	for _, d := range disks {
		if !isUSB(d) {
			continue
		}
		out = append(out, USBDevice{Number: len(out) + 1, Vendor: sysValue(root, d.Name, "device/vendor"), DevNum: sysValue(root, d.Name, "dev"), Disk: d})
	}
	return out, nil
}

// sysValue reads /sys/block/NAME/file under root, or "".
func sysValue(root, name, file string) string {
	if root == "" {
		root = "/"
	}
	b, err := os.ReadFile(filepath.Join(root, "sys/block", name, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// DescribeDevice lists what a USBDevice is identified by with the
// Disk as ListDisks found it under root ("" for the running system).
func DescribeDevice(root string, d diskrestore.Disk) USBDevice {
	return USBDevice{Vendor: sysValue(root, d.Name, "device/vendor"), DevNum: sysValue(root, d.Name, "dev"), Disk: d}
}

// CheckSameDevice refuses when the block device named like listed (under
// root, "" for the running system) is not the device that was listed: a
// different stick plugged in at the same /dev/sdX, gone, or changed. It
// compares the device number (major:minor), serial, WWN, vendor, model and
// size; a stick without serial and WWN is known by the rest.
func CheckSameDevice(root string, listed USBDevice) error {
	disks, err := diskrestore.ListDisks(diskrestore.ListOptions{Root: root})
	if err != nil {
		return err
	}
	var now *diskrestore.Disk
	for i := range disks {
		if disks[i].Name == listed.Name {
			now = &disks[i]
		}
	}
	if now == nil {
		return fmt.Errorf("%s (%s) is gone since it was listed; plug it in again and list the devices again ('rewind usb --list-devices')", listed.Path, listed.Description())
	}
	cur := DescribeDevice(root, *now)
	var diffs []string
	for _, f := range []struct{ field, was, is string }{
		{"device number", listed.DevNum, cur.DevNum},
		{"serial", listed.Serial, cur.Serial},
		{"WWN", listed.WWN, cur.WWN},
		{"vendor", listed.Vendor, cur.Vendor},
		{"model", listed.Model, cur.Model},
		{"size", fmt.Sprint(listed.Size), fmt.Sprint(cur.Size)},
	} {
		if f.was != f.is {
			diffs = append(diffs, fmt.Sprintf("%s now %q, was %q", f.field, f.is, f.was))
		}
	}
	if listed.DevNum == "" {
		diffs = append(diffs, "its device number was not known when it was listed")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s is no longer the device that was listed (%s): another stick may be plugged in; nothing was written: list the devices again ('rewind usb --list-devices')",
			listed.Path, strings.Join(diffs, ", "))
	}
	return nil
}

func isUSB(d diskrestore.Disk) bool {
	return d.Removable || d.Transport == "usb"
}

// CheckUSBTarget refuses a device the writer must not write imageSize
// bytes onto: one that is neither removable nor USB-attached (unless
// allowFixed), read-only, holding the running system, in use, or too small.
func CheckUSBTarget(d diskrestore.Disk, imageSize int64, allowFixed bool) error {
	switch {
	case !allowFixed && !isUSB(d):
		return fmt.Errorf("%s (%s) is neither removable nor attached over USB; the USB writer only writes to USB sticks and removable disks (use 'rewind usb --list-devices')",
			d.Path, orNone(d.Transport))
	case d.System:
		return fmt.Errorf("%s holds the running system (%s); choose another device", d.Path, strings.Join(d.Mounts, ", "))
	case d.Mounted:
		var points []string
		for _, m := range d.Mounts {
			_, p, _ := strings.Cut(m, " on ")
			points = append(points, p)
		}
		return fmt.Errorf("%s has mounted partitions (%s); unmount them first (umount %s)", d.Path, strings.Join(d.Mounts, ", "), strings.Join(points, " "))
	case len(d.Holders) > 0:
		return fmt.Errorf("%s is in use by %s (device mapper, LVM or RAID); stop it first", d.Path, strings.Join(d.Holders, ", "))
	case d.ReadOnly:
		return fmt.Errorf("%s is read-only; check the stick's write-protect switch", d.Path)
	case imageSize > d.Size:
		return fmt.Errorf("the image (%d bytes) is larger than %s (%d bytes); use a bigger stick", imageSize, d.Path, d.Size)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "transport unknown"
	}
	return s
}

// WriteProgress is reported while an image is written and read back.
type WriteProgress struct {
	Stage   string // "write" or "verify"
	Done    int64
	Total   int64
	Elapsed time.Duration
	Final   bool
}

// WriteOptions describes one write of an image onto a device.
type WriteOptions struct {
	Image string
	// Device is the device as ListUSBDevices (or DescribeDevice) found it:
	// the device written must still be that one (CheckSameDevice).
	Device USBDevice
	// Root is the sysfs root Device was listed under; "" for the running system.
	Root string
	// AllowFixed lets tests write to a loop device; the CLI never sets it.
	AllowFixed bool
	Progress   func(WriteProgress) // may be nil
}

// WriteImage checks the device, writes the image onto it, flushes the
// device, drops its cached pages and reads the image back to compare.
func WriteImage(ctx context.Context, opts WriteOptions) error {
	img, err := os.Open(opts.Image)
	if err != nil {
		return err
	}
	defer img.Close()
	st, err := img.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if err := CheckUSBTarget(opts.Device.Disk, size, opts.AllowFixed); err != nil {
		return err
	}
	path := opts.Device.Path
	// O_EXCL on a block device fails while the kernel has it in use (a
	// mount that appeared since the listing).
	dev, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("opening %s for writing: %w", path, err)
	}
	defer dev.Close()
	// The device may have changed since the listing (a stick swapped while
	// the prompt waited): what was opened must still be the one that was
	// checked. The open file's device number is the listed one, and the
	// device with that name and number has the listed serial, WWN and
	// size; a stick pulled after this check fails the writes instead.
	var fst unix.Stat_t
	if err := unix.Fstat(int(dev.Fd()), &fst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if got := fmt.Sprintf("%d:%d", unix.Major(fst.Rdev), unix.Minor(fst.Rdev)); got != opts.Device.DevNum {
		return fmt.Errorf("%s is no longer the device that was listed (device number now %s, was %q): another stick may be plugged in; nothing was written: list the devices again", path, got, opts.Device.DevNum)
	}
	if err := CheckSameDevice(opts.Root, opts.Device); err != nil {
		return err
	}
	if g, err := diskrestore.GeometryOf(dev); err != nil || g.Size != opts.Device.Size {
		return fmt.Errorf("%s is no longer the %s device that was listed (size now %d bytes, was %d): list the devices again", path, units.Bytes(opts.Device.Size), g.Size, opts.Device.Size)
	}
	report := func(p WriteProgress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	const block = 4 << 20
	buf := make([]byte, block)
	start := time.Now()
	want := sha256.New()
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("writing %s stopped at byte %d: %w; the stick is not bootable, write it again", path, done, err)
		}
		n, err := io.ReadFull(img, buf[:min(block, size-done)])
		if err != nil {
			return fmt.Errorf("reading %s at byte %d: %w", opts.Image, done, err)
		}
		want.Write(buf[:n])
		if _, err := dev.WriteAt(buf[:n], done); err != nil {
			return fmt.Errorf("writing %s at byte %d: %w; the stick may be failing or was removed", path, done, err)
		}
		done += int64(n)
		report(WriteProgress{Stage: "write", Done: done, Total: size, Elapsed: time.Since(start)})
	}
	// A GPT the stick had before keeps its backup header at the end, where
	// firmware and tools would find a table that contradicts the image.
	if tail := opts.Device.Size - size; tail > 0 {
		n := min(tail, 1<<20)
		if _, err := dev.WriteAt(make([]byte, n), opts.Device.Size-n); err != nil {
			return fmt.Errorf("clearing the old backup partition table at the end of %s: %w", path, err)
		}
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("flushing %s: %w", path, err)
	}
	report(WriteProgress{Stage: "write", Done: done, Total: size, Elapsed: time.Since(start), Final: true})

	// Read back what the device holds, not what the page cache kept.
	if err := dropCache(dev); err != nil {
		return fmt.Errorf("%s: cannot drop its cached pages to read the image back (%v): the write is flushed but unverified", path, err)
	}
	start = time.Now()
	got := sha256.New()
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("verifying %s stopped at byte %d: %w", path, off, err)
		}
		n, err := dev.ReadAt(buf[:min(block, size-off)], off)
		if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return fmt.Errorf("reading back %s at byte %d: %w", path, off, err)
		}
		got.Write(buf[:n])
		off += int64(n)
		report(WriteProgress{Stage: "verify", Done: off, Total: size, Elapsed: time.Since(start), Final: off == size})
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		return fmt.Errorf("%s does not read back what was written (sha256 differs); the stick may be fake or failing: try another one", path)
	}
	// Let the kernel see the new partitions; a loop device without
	// partition scanning refuses, which does not matter.
	unix.IoctlSetInt(int(dev.Fd()), unix.BLKRRPART, 0)
	return nil
}

// dropCache flushes the device's buffers and drops its cached pages, so
// that a read goes to the device.
func dropCache(f *os.File) error {
	fd := int(f.Fd())
	if err := unix.IoctlSetInt(fd, unix.BLKFLSBUF, 0); err != nil {
		return err
	}
	return unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
}
