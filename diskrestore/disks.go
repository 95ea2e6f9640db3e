package diskrestore

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Disk is a block device as `rewind disks` shows it and SelectTarget
// weighs it.
type Disk struct {
	Name               string   `json:"name"` // kernel name: sda, nvme0n1, vda
	Path               string   `json:"path"` // /dev/sda
	Size               int64    `json:"size"` // bytes
	LogicalSectorSize  int      `json:"logical_sector_size"`
	PhysicalSectorSize int      `json:"physical_sector_size"`
	Model              string   `json:"model,omitempty"`
	Serial             string   `json:"serial,omitempty"`
	WWN                string   `json:"wwn,omitempty"`
	Transport          string   `json:"transport,omitempty"` // usb, nvme, sata, scsi, virtio, mmc, loop, dm, md
	Removable          bool     `json:"removable"`
	ReadOnly           bool     `json:"read_only"`
	Partitions         []string `json:"partitions,omitempty"` // /dev/sda1, ...
	Mounted            bool     `json:"mounted"`
	Mounts             []string `json:"mounts,omitempty"`  // "/dev/sda1 on /boot"
	Holders            []string `json:"holders,omitempty"` // dm-0 (vg-root), md0: what stacks on it
	System             bool     `json:"system"`            // holds the running system's / , /usr or /boot
	Rescue             bool     `json:"rescue"`            // excluded: the rescue media or the snapshot's source
}

// ListOptions controls ListDisks.
type ListOptions struct {
	// Root is the directory holding sys/ and proc/ ("" or "/" for the
	// running system); tests point it at a fixture tree.
	Root string
	// Exclude names devices that must never be a restore target: the
	// rescue media, the device holding the snapshot. A partition's path
	// excludes its whole disk.
	Exclude []string
}

// systemMounts are the mount points whose disk "holds the running system".
var systemMounts = map[string]bool{"/": true, "/usr": true, "/boot": true, "/boot/efi": true}

// ListDisks lists the whole-disk block devices of /sys/block with what is
// known about each, in name order. RAM disks, zram and unattached loop
// devices are left out.
func ListDisks(opts ListOptions) ([]Disk, error) {
	v, err := newSysView(opts.Root)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(v.path("sys/block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var disks []Disk
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		dir := v.path("sys/block", name)
		d := Disk{Name: name, Path: "/dev/" + name}
		d.Size = readInt(dir, "size") * 512
		if d.Size == 0 {
			continue // no medium, or a loop device with nothing attached
		}
		d.LogicalSectorSize = int(readInt(dir, "queue/logical_block_size"))
		d.PhysicalSectorSize = int(readInt(dir, "queue/physical_block_size"))
		d.Removable = readInt(dir, "removable") == 1
		d.ReadOnly = readInt(dir, "ro") == 1
		d.Model = readStr(dir, "device/model")
		d.Serial = v.serial(dir)
		d.WWN = firstStr(dir, "wwid", "device/wwid")
		d.Transport = transport(name, dir)
		u := v.usage(dir)
		d.Partitions, d.Mounts, d.Holders, d.System = u.partitions, u.mounts, u.holders, u.system
		d.Mounted = len(d.Mounts) > 0
		for _, x := range opts.Exclude {
			if v.sameDevice(x, d.Path) || v.within(x, u) {
				d.Rescue = true
			}
		}
		disks = append(disks, d)
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Name < disks[j].Name })
	return disks, nil
}

// CheckNotMounted refuses a block device that is mounted, has mounted
// partitions, is active swap, or has holders (device mapper, RAID).
// Regular files pass.
func CheckNotMounted(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().IsRegular() {
		return nil
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("%s is neither a block device nor a regular file", path)
	}
	u, err := deviceUsage(path, st)
	if err != nil {
		return err
	}
	return refuseInUse(path, u)
}

// CaptureAdvice says how to capture a disk that cannot be read
// consistently where it is: from the rescue medium, where nothing on it
// runs, or from a snapshot of the volume.
const CaptureAdvice = `boot the rescue medium on this machine and pick "Capture this machine" in its boot menu ` +
	`(or boot it with rewind.action=capture), or capture an LVM or file-system snapshot of the volume instead ` +
	`(lvcreate --snapshot, then rewind capture /dev/VG/SNAPSHOT)`

// CheckCaptureSource refuses a block device to capture from while a file
// system on it (a partition, an LVM volume on it) is mounted read-write or
// it holds active swap: what changes while it is read is captured
// inconsistent, and a snapshot written onto the same disk captures itself
// half-written. The error names the mounts and what to do instead (see
// CaptureAdvice). Read-only mounts are allowed; a regular file is not
// checked.
func CheckCaptureSource(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil
	}
	u, err := deviceUsage(path, st)
	if err != nil {
		return err
	}
	if len(u.writable) == 0 {
		return nil
	}
	var points []string
	for _, m := range u.writable {
		if _, p, _ := strings.Cut(m, " on "); p != "[swap]" {
			points = append(points, p)
		}
	}
	remount := ""
	if len(points) > 0 {
		remount = " (mount -o remount,ro " + strings.Join(points, " ") + ")"
	}
	if u.system {
		return fmt.Errorf("%s holds the running system and is in use read-write: %s; a file system that changes while it is read is captured inconsistent: "+
			"to capture it, %s", path, strings.Join(u.writable, ", "), CaptureAdvice)
	}
	return fmt.Errorf("%s is in use read-write: %s; a file system that changes while it is read is captured inconsistent: "+
		"unmount it, remount it read-only%s, or %s", path, strings.Join(u.writable, ", "), remount, CaptureAdvice)
}

// ExplainOpenError explains why the capture source at path could not be
// opened, when err says it is forbidden or busy (EPERM, EACCES, EBUSY):
// what uses the device, if anything, and what to do instead of the bare
// "operation not permitted". Other errors, and a regular file's, are
// returned unchanged. The result wraps err.
func ExplainOpenError(path string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) || (errno != syscall.EPERM && errno != syscall.EACCES && errno != syscall.EBUSY) {
		return err
	}
	st, serr := os.Stat(path)
	if serr != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return err
	}
	inUse := ""
	if u, uerr := deviceUsage(path, st); uerr == nil {
		var what []string
		if u.system {
			what = append(what, "it holds the running system")
		}
		if len(u.mounts) > 0 {
			what = append(what, "mounted: "+strings.Join(u.mounts, ", "))
		}
		if len(u.holders) > 0 {
			what = append(what, "held by "+strings.Join(u.holders, ", "))
		}
		if len(what) > 0 {
			inUse = " (" + strings.Join(what, "; ") + ")"
		}
	}
	why := "this system does not let Rewind read the disk while it is in use (a container's device rules, a security module, or another program holding it exclusively)"
	if errno == syscall.EACCES {
		why = "reading a disk needs root: run rewind capture as root (sudo); if it still fails, this system does not let Rewind read the disk while it is in use"
	}
	if errno == syscall.EBUSY {
		why = "another program holds the disk exclusively"
	}
	return fmt.Errorf("cannot read %s%s: %w; %s: %s", path, inUse, err, why, CaptureAdvice)
}

// deviceUsage finds the block device st (of path) in /sys/dev/block and
// says what uses it and its partitions and holders.
func deviceUsage(path string, st os.FileInfo) (usage, error) {
	rdev := uint64(st.Sys().(*syscall.Stat_t).Rdev)
	v, err := newSysView("/")
	if err != nil {
		return usage{}, err
	}
	dir, err := filepath.EvalSymlinks(v.path(fmt.Sprintf("sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev))))
	if err != nil {
		return usage{}, fmt.Errorf("%s: not found in /sys/dev/block: %w", path, err)
	}
	return v.usage(dir), nil
}

func refuseInUse(path string, u usage) error {
	if len(u.mounts) > 0 {
		var points []string
		for _, m := range u.mounts {
			_, p, _ := strings.Cut(m, " on ")
			points = append(points, p)
		}
		return fmt.Errorf("%s is in use: %s; unmount it first (umount %s)", path, strings.Join(u.mounts, ", "), strings.Join(points, " "))
	}
	if len(u.holders) > 0 {
		return fmt.Errorf("%s is in use by %s (device mapper, LVM or RAID); stop it first (dmsetup remove, vgchange -an, mdadm --stop)", path, strings.Join(u.holders, ", "))
	}
	return nil
}

// sysView reads sysfs and the mount table under a root directory.
type sysView struct {
	root   string
	mounts []mountEntry
}

type mountEntry struct {
	majMin, point, source string
	writable              bool // mounted read-write (the super block's options), or swap
}

func newSysView(root string) (*sysView, error) {
	if root == "" {
		root = "/"
	}
	v := &sysView{root: root}
	f, err := os.Open(v.path("proc/self/mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f1, f2 := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f1) < 5 || len(f2) < 2 {
			continue
		}
		rw := len(f2) < 3 || slices.Contains(strings.Split(f2[2], ","), "rw")
		v.mounts = append(v.mounts, mountEntry{majMin: f1[2], point: unescapeMount(f1[4]), source: unescapeMount(f2[1]), writable: rw})
	}
	if b, err := os.ReadFile(v.path("proc/swaps")); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 0 {
				v.mounts = append(v.mounts, mountEntry{point: "[swap]", source: unescapeMount(f[0]), writable: true})
			}
		}
	}
	return v, sc.Err()
}

func (v *sysView) path(elem ...string) string {
	return filepath.Join(append([]string{v.root}, elem...)...)
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// usage is what uses a block device, its partitions and its holders.
type usage struct {
	names      map[string]bool // kernel names, and mapper/NAME of dm devices
	devs       map[string]bool // MAJ:MIN
	partitions []string
	mounts     []string
	writable   []string // of mounts, those mounted read-write (and swap)
	holders    []string
	system     bool
}

// usage collects the block device at sysfs dir, its partitions (for a
// whole disk) and everything stacked on them, then finds their mounts.
func (v *sysView) usage(dir string) usage {
	u := usage{names: map[string]bool{}, devs: map[string]bool{}}
	v.collect(dir, &u, 0, true)
	for _, m := range v.mounts {
		src := m.source
		if r, err := filepath.EvalSymlinks(v.path(src)); err == nil && strings.HasPrefix(src, "/dev/") {
			if rel, err := filepath.Rel(v.path("dev"), r); err == nil && !strings.HasPrefix(rel, "..") {
				src = "/dev/" + rel
			}
		}
		if u.devs[m.majMin] || (strings.HasPrefix(src, "/dev/") && u.names[strings.TrimPrefix(src, "/dev/")]) {
			if s := m.source + " on " + m.point; !slices.Contains(u.mounts, s) {
				u.mounts = append(u.mounts, s)
				if m.writable {
					u.writable = append(u.writable, s)
				}
			}
			u.system = u.system || systemMounts[m.point]
		}
	}
	return u
}

func (v *sysView) collect(dir string, u *usage, depth int, top bool) {
	name := filepath.Base(dir)
	if depth > 8 || u.names[name] {
		return
	}
	u.names[name] = true
	if dev := readStr(dir, "dev"); dev != "" {
		u.devs[dev] = true
	}
	if dm := readStr(dir, "dm/name"); dm != "" {
		u.names["mapper/"+dm] = true
	}
	if top {
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if _, err := os.Stat(filepath.Join(dir, s.Name(), "partition")); err == nil {
				u.partitions = append(u.partitions, "/dev/"+s.Name())
				v.collect(filepath.Join(dir, s.Name()), u, depth+1, false)
			}
		}
	}
	holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
	for _, h := range holders {
		hd := v.path("sys/class/block", h.Name())
		if _, err := os.Stat(hd); err != nil {
			hd = v.path("sys/block", h.Name())
		}
		desc := h.Name()
		if dm := readStr(hd, "dm/name"); dm != "" {
			desc += " (" + dm + ")"
		}
		u.holders = append(u.holders, desc)
		v.collect(hd, u, depth+1, false)
	}
}

// sameDevice reports whether the path a names the device b.
func (v *sysView) sameDevice(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(v.path(a))
	rb, err2 := filepath.EvalSymlinks(v.path(b))
	return err1 == nil && err2 == nil && ra == rb
}

// within reports whether path names one of u's partitions or holders.
func (v *sysView) within(path string, u usage) bool {
	p := path
	if r, err := filepath.EvalSymlinks(v.path(path)); err == nil {
		if rel, err := filepath.Rel(v.path("dev"), r); err == nil && !strings.HasPrefix(rel, "..") {
			p = "/dev/" + rel
		}
	}
	return strings.HasPrefix(p, "/dev/") && u.names[strings.TrimPrefix(p, "/dev/")]
}

// serial finds a disk's serial number: the block device's or its
// device's serial attribute (virtio, NVMe), SCSI VPD page 0x80, or the
// USB device's serial.
func (v *sysView) serial(dir string) string {
	if s := firstStr(dir, "serial", "device/serial"); s != "" {
		return s
	}
	if b, err := os.ReadFile(filepath.Join(dir, "device/vpd_pg80")); err == nil && len(b) > 4 {
		return strings.TrimSpace(strings.Trim(string(b[4:]), "\x00"))
	}
	real, err := filepath.EvalSymlinks(filepath.Join(dir, "device"))
	for err == nil && len(real) > len(v.root)+1 {
		if _, e := os.Stat(filepath.Join(real, "idVendor")); e == nil {
			return readStr(real, "serial")
		}
		real = filepath.Dir(real)
	}
	return ""
}

// transport names how a disk is attached, from its name and sysfs path.
func transport(name, dir string) string {
	real, _ := filepath.EvalSymlinks(dir)
	switch {
	case strings.HasPrefix(name, "loop"):
		return "loop"
	case strings.HasPrefix(name, "dm-"):
		return "dm"
	case strings.HasPrefix(name, "md"):
		return "md"
	case strings.HasPrefix(name, "nvme"):
		return "nvme"
	case strings.HasPrefix(name, "mmcblk"):
		return "mmc"
	case strings.Contains(real, "/usb"):
		return "usb"
	case strings.Contains(real, "/virtio"):
		return "virtio"
	case strings.Contains(real, "/ata"):
		return "sata"
	case strings.Contains(real, "/host"):
		return "scsi"
	}
	return ""
}

func readStr(dir, file string) string {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstStr(dir string, files ...string) string {
	for _, f := range files {
		if s := readStr(dir, f); s != "" {
			return s
		}
	}
	return ""
}

func readInt(dir, file string) int64 {
	n, _ := strconv.ParseInt(readStr(dir, file), 10, 64)
	return n
}
