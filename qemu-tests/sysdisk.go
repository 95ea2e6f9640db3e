package qemutests

// The system disk of the used-block tests: a disk that has been used. It
// is built in named steps, top to bottom (BuildSysDisk):
//
//	fillRandom    the whole image holds random bytes first (old use)
//	partition     an MBR: a bootable Linux root partition from 1 MiB, then a
//	              32 MiB swap partition to the end
//	rootTree      the files of the root file system: the host's Debian kernel
//	              and initramfs-tools initrd, GRUB's grub.cfg, a static busybox
//	              as /bin/busybox, /sbin/init (a busybox script that checks its
//	              own files against /etc/rewind-sysdisk.sha256, prints
//	              SysDiskMarker on the serial console and powers off), data
//	mkfsExt4      mkfs.ext4 -E nodiscard -d over the random bytes, so that the
//	              free blocks keep the old data
//	deleteFiles   files written by mkfs and deleted with debugfs: their blocks
//	              are free but still hold their data
//	mkswap        the swap partition: old random bytes (swapped-out pages of
//	              the old use) under a swap header
//	installGRUB   GRUB for BIOS: boot.img in the MBR, core.img (with the
//	              ext2 and part_msdos modules built in) in the gap after it
//
// The image is cached in ROOT/.cache/sysdisk keyed by a hash of its inputs
// (this file, the kernel, the initrd, busybox), with a JSON description
// of what the tests check (SysDisk).

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// SysDiskMarker is what the system disk's init prints on the serial
// console once it has checked its files; a boot that found a file
// differing prints SysDiskBad instead.
const (
	SysDiskMarker = "rewind-sysdisk: booted, files ok, login:"
	SysDiskBad    = "rewind-sysdisk: booted, FILES DIFFER"
)

// sysDiskVersion is part of the cache key; bump it when the disk's layout
// changes in a way the hashed inputs do not show.
const sysDiskVersion = 2

// SysDisk describes a built system disk.
type SysDisk struct {
	Path string `json:"path"` // the raw image
	Size int64  `json:"size"`
	// PartOffset and PartSize are the ext4 root partition's byte range.
	PartOffset int64  `json:"part_offset"`
	PartSize   int64  `json:"part_size"`
	UUID       string `json:"uuid"` // the ext4 file system's UUID
	// SwapOffset and SwapSize are the swap partition's byte range.
	SwapOffset int64  `json:"swap_offset"`
	SwapSize   int64  `json:"swap_size"`
	SwapUUID   string `json:"swap_uuid"`
	BlockSize  int64  `json:"block_size"`
	// Files maps every live regular file (its path in the file system)
	// to its sha256.
	Files map[string]string `json:"files"`
	// Deleted maps each file deleted with debugfs to the file system
	// blocks it held, as debugfs 'blocks' listed them before the rm, in
	// runs of [first, last] blocks.
	Deleted map[string][][2]int64 `json:"deleted"`
}

const (
	sysDiskSize  = 256 << 20
	sysPartStart = 1 << 20
	sysSwapSize  = 32 << 20
	sysFSUUID    = "5e5d15c0-0015-4015-8015-000000000015"
	sysSwapUUID  = "5e5d15c0-0015-4015-8015-00000000005a"
	sysMBRID     = "0x5e5d1515"
)

// sysDeleted are written into the file system, then deleted: sizes in
// bytes. The small one leaves a free gap shorter than 64 KiB, which a
// used-block capture stores as zeros rather than listing it as unused.
var sysDeleted = []struct {
	path string
	size int
}{
	{"/var/tmp/old-backup.tar", 12 << 20},
	{"/var/tmp/old-cache.bin", 6 << 20},
	{"/home/user/draft.txt", 20 << 10},
}

// CachedSysDisk returns the system disk built for kernel and initrd,
// building it on the first call for these inputs (root is the module's
// root; the cache is ROOT/.cache/sysdisk).
func CachedSysDisk(ctx context.Context, root, kernel, initrd string, logf func(string, ...any)) (*SysDisk, error) {
	key, err := sysDiskKey(root, kernel, initrd)
	if err != nil {
		return nil, err
	}
	cache := filepath.Join(root, ".cache", "sysdisk")
	dir := filepath.Join(cache, "disk-"+key[:16])
	if d, err := readSysDisk(dir); err == nil {
		return d, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	logf("building the system disk (cached in %s)", dir)
	if _, err := BuildSysDisk(ctx, filepath.Join(tmp, "sysdisk.img"), kernel, initrd); err != nil {
		return nil, err
	}
	old, _ := filepath.Glob(filepath.Join(cache, "disk-*"))
	for _, o := range old {
		os.RemoveAll(o)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return readSysDisk(dir)
}

func readSysDisk(dir string) (*SysDisk, error) {
	b, err := os.ReadFile(filepath.Join(dir, "sysdisk.json"))
	if err != nil {
		return nil, err
	}
	var d SysDisk
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s/sysdisk.json: %w", dir, err)
	}
	d.Path = filepath.Join(dir, "sysdisk.img")
	if _, err := os.Stat(d.Path); err != nil {
		return nil, err
	}
	return &d, nil
}

// sysDiskKey hashes what the disk is built from.
func sysDiskKey(root, kernel, initrd string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "version %d\n", sysDiskVersion)
	for _, p := range []string{filepath.Join(root, "qemu-tests", "sysdisk.go"), kernel, initrd, busyboxPath} {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\n", p)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// busyboxPath is the static busybox (Debian package busybox-static).
const busyboxPath = "/bin/busybox"

// BuildSysDisk writes the system disk to path (a new file) and its
// description next to it as sysdisk.json.
func BuildSysDisk(ctx context.Context, path, kernel, initrd string) (*SysDisk, error) {
	if err := checkStaticBusybox(); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), "sysdisk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	d := &SysDisk{Path: path, Size: sysDiskSize, PartOffset: sysPartStart, PartSize: sysDiskSize - sysPartStart - sysSwapSize, UUID: sysFSUUID, BlockSize: 4096,
		SwapOffset: sysDiskSize - sysSwapSize, SwapSize: sysSwapSize, SwapUUID: sysSwapUUID}
	swap := filepath.Join(tmp, "part.swap")
	tree := filepath.Join(tmp, "root")
	part := filepath.Join(tmp, "part.ext4")
	steps := []struct {
		name string
		run  func() error
	}{
		{"fill the disk with random bytes", func() error { return fillRandom(path, d.Size, 1515) }},
		{"partition", func() error { return partitionMBR(path, d) }},
		{"fill the partition with other random bytes", func() error { return fillRandom(part, d.PartSize, 1516) }},
		{"write the root tree", func() error { return rootTree(tree, d, kernel, initrd) }},
		{"mkfs.ext4", func() error { return mkfsExt4(ctx, part, tree, d) }},
		{"delete files with debugfs", func() error { return deleteFiles(ctx, part, d) }},
		{"check the file system", func() error { return fsckClean(ctx, part) }},
		{"copy the partition into the disk", func() error { return copyAt(path, part, d.PartOffset) }},
		{"fill the swap partition with other random bytes", func() error { return fillRandom(swap, d.SwapSize, 1518) }},
		{"mkswap", func() error { return runCtx(ctx, "mkswap", "-U", d.SwapUUID, "-L", "swap", swap) }},
		{"copy the swap partition into the disk", func() error { return copyAt(path, swap, d.SwapOffset) }},
		{"install GRUB", func() error { return installGRUB(ctx, path, tmp) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return nil, fmt.Errorf("system disk %s: %s: %w", path, s.name, err)
		}
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return d, os.WriteFile(filepath.Join(filepath.Dir(path), "sysdisk.json"), b, 0o644)
}

func checkStaticBusybox() error {
	out, err := exec.Command("file", "-L", busyboxPath).CombinedOutput()
	if err != nil {
		// No file(1): trust the package; the boot shows it otherwise.
		if _, err := os.Stat(busyboxPath); err != nil {
			return fmt.Errorf("%s is missing (Debian package busybox-static; scripts/setup.sh installs it)", busyboxPath)
		}
		return nil
	}
	if !strings.Contains(string(out), "statically linked") {
		return fmt.Errorf("%s is not statically linked (%s): install busybox-static (scripts/setup.sh)", busyboxPath, strings.TrimSpace(string(out)))
	}
	return nil
}

// fillRandom writes size pseudo-random bytes (ChaCha8 seeded by seed) to
// a new file at path.
func fillRandom(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.NewChaCha8(key)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		rng.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return err
		}
	}
	return f.Close()
}

func partitionMBR(path string, d *SysDisk) error {
	cmd := exec.Command("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nlabel-id: %s\nstart=%d, size=%d, type=83, bootable\nstart=%d, size=%d, type=82\n",
		sysMBRID, d.PartOffset/512, d.PartSize/512, d.SwapOffset/512, d.SwapSize/512))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %v\n%s", err, out)
	}
	return nil
}

// sysInit is the root file system's /sbin/init.
const sysInit = `#!/bin/busybox sh
# Rewind's test system disk: check this disk's files, say so, power off.
export PATH=/bin
/bin/busybox mount -t proc proc /proc
cd /
# The root is mounted read-only: the check's output stays in a variable.
if check=$(/bin/busybox sha256sum -c /etc/rewind-sysdisk.sha256 2>&1); then
	echo "` + SysDiskMarker + `" > /dev/console
else
	echo "$check" > /dev/console
	echo "` + SysDiskBad + `" > /dev/console
fi
/bin/busybox sync
/bin/busybox poweroff -f
`

// rootTree writes the root file system's files into dir and records
// their hashes in d.Files and in /etc/rewind-sysdisk.sha256 (which init
// checks at boot).
func rootTree(dir string, d *SysDisk, kernel, initrd string) error {
	for _, sub := range []string{"boot/grub", "bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "var/tmp", "home/user", "usr/share/rewind"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	grubCfg := fmt.Sprintf(`serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set default=0
set timeout=0
menuentry 'Debian GNU/Linux (Rewind test system disk)' {
	linux /boot/vmlinuz root=UUID=%s ro console=ttyS0,115200n8 noresume panic=-1
	initrd /boot/initrd.img
}
`, d.UUID)
	files := []struct {
		path string
		src  string // copied from the host
		data []byte // or these bytes
		mode os.FileMode
	}{
		{path: "/boot/vmlinuz", src: kernel, mode: 0o644},
		{path: "/boot/initrd.img", src: initrd, mode: 0o644},
		{path: "/boot/grub/grub.cfg", data: []byte(grubCfg), mode: 0o644},
		{path: "/bin/busybox", src: busyboxPath, mode: 0o755},
		{path: "/sbin/init", data: []byte(sysInit), mode: 0o755},
		{path: "/etc/hostname", data: []byte("sysdisk\n"), mode: 0o644},
		{path: "/etc/motd", data: []byte("Restored by Rewind from a used-block snapshot.\n"), mode: 0o644},
		{path: "/usr/share/rewind/data.bin", data: randomData(5<<20, 17), mode: 0o644},
		{path: "/home/user/notes.txt", data: []byte(strings.Repeat("live data, keep me\n", 3000)), mode: 0o644},
	}
	d.Files = make(map[string]string)
	var sums strings.Builder
	for _, f := range files {
		data := f.data
		if f.src != "" {
			var err error
			if data, err = os.ReadFile(f.src); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f.path), data, f.mode); err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		d.Files[f.path] = hex.EncodeToString(sum[:])
		fmt.Fprintf(&sums, "%x  %s\n", sum, f.path)
	}
	// The files to delete are written too, so that mkfs allocates them
	// among the live ones.
	for i, f := range sysDeleted {
		if err := os.WriteFile(filepath.Join(dir, f.path), randomData(f.size, byte(100+i)), 0o644); err != nil {
			return err
		}
	}
	sumsData := []byte(sums.String())
	sum := sha256.Sum256(sumsData)
	d.Files["/etc/rewind-sysdisk.sha256"] = hex.EncodeToString(sum[:])
	return os.WriteFile(filepath.Join(dir, "etc", "rewind-sysdisk.sha256"), sumsData, 0o644)
}

func randomData(n int, seed byte) []byte {
	var key [32]byte
	key[0], key[1] = seed, 0xda
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func mkfsExt4(ctx context.Context, part, tree string, d *SysDisk) error {
	return runCtx(ctx, "mkfs.ext4", "-q", "-F", "-b", strconv.FormatInt(d.BlockSize, 10), "-L", "root", "-U", d.UUID,
		"-E", "nodiscard,root_owner=0:0", "-d", tree, part)
}

// deleteFiles records the blocks of each file of sysDeleted, then deletes
// it with debugfs: the blocks become free and keep their data.
func deleteFiles(ctx context.Context, part string, d *SysDisk) error {
	d.Deleted = make(map[string][][2]int64)
	for _, f := range sysDeleted {
		p := f.path
		out, err := exec.CommandContext(ctx, "debugfs", "-R", "blocks "+p, part).Output()
		if err != nil {
			return fmt.Errorf("debugfs blocks %s: %v", p, err)
		}
		var n int64
		for _, w := range strings.Fields(string(out)) {
			b, err := strconv.ParseInt(w, 10, 64)
			if err != nil {
				return fmt.Errorf("debugfs blocks %s: %q is not a block number", p, w)
			}
			runs := d.Deleted[p]
			if k := len(runs) - 1; k >= 0 && runs[k][1]+1 == b {
				runs[k][1] = b
			} else {
				d.Deleted[p] = append(runs, [2]int64{b, b})
			}
			n++
		}
		if n*d.BlockSize < int64(f.size) {
			return fmt.Errorf("debugfs lists %d blocks for %s of %d bytes", n, p, f.size)
		}
		if err := runCtx(ctx, "debugfs", "-w", "-R", "rm "+p, part); err != nil {
			return err
		}
	}
	return nil
}

// fsckClean runs e2fsck -fn on an ext4 image and fails unless it is clean.
func fsckClean(ctx context.Context, part string) error {
	out, err := exec.CommandContext(ctx, "e2fsck", "-fn", part).CombinedOutput()
	if err != nil {
		return fmt.Errorf("e2fsck -fn %s: %v (want clean)\n%s", part, err, out)
	}
	return nil
}

// copyAt copies the file src into the file dst at offset off.
func copyAt(dst, src string, off int64) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(io.NewOffsetWriter(f, off), s); err != nil {
		return err
	}
	return f.Close()
}

// sysGRUBModules are built into core.img: the disk needs no GRUB module
// directory, only /boot/grub/grub.cfg.
var sysGRUBModules = []string{"biosdisk", "part_msdos", "ext2", "normal", "linux", "configfile", "serial", "terminal", "echo", "test"}

// installGRUB does what grub-install --target=i386-pc does for an MBR
// disk: boot.img's code (not the partition table) in sector 0, core.img
// from sector 1 in the gap before the first partition. boot.img's default
// sector for core.img is 1 and grub-mkimage fills in core.img's own
// length, so neither needs patching.
func installGRUB(ctx context.Context, path, tmp string) error {
	core := filepath.Join(tmp, "core.img")
	args := append([]string{"-d", "/usr/lib/grub/i386-pc", "-O", "i386-pc", "-o", core, "-p", "(hd0,msdos1)/boot/grub"}, sysGRUBModules...)
	if err := runCtx(ctx, "grub-mkimage", args...); err != nil {
		return err
	}
	coreImg, err := os.ReadFile(core)
	if err != nil {
		return err
	}
	if len(coreImg) > sysPartStart-512 {
		return fmt.Errorf("core.img is %d bytes; the gap before the partition holds %d", len(coreImg), sysPartStart-512)
	}
	bootImg, err := os.ReadFile("/usr/lib/grub/i386-pc/boot.img")
	if err != nil {
		return fmt.Errorf("GRUB for BIOS is not installed (Debian package grub-pc-bin): %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(bootImg[:440], 0); err != nil {
		return err
	}
	if _, err := f.WriteAt(coreImg, 512); err != nil {
		return err
	}
	return f.Close()
}

func runCtx(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// FreeRanges returns the free blocks of the ext file system in the image
// file part, as dumpe2fs lists them: [first, last] block pairs.
func FreeRanges(ctx context.Context, part string) ([][2]int64, error) {
	out, err := exec.CommandContext(ctx, "dumpe2fs", part).Output()
	if err != nil {
		return nil, fmt.Errorf("dumpe2fs %s: %v", part, err)
	}
	var free [][2]int64
	for _, line := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Free blocks: ")
		if !ok {
			continue
		}
		for _, r := range strings.Split(rest, ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				continue
			}
			a, b, isRange := strings.Cut(r, "-")
			first, err1 := strconv.ParseInt(a, 10, 64)
			last := first
			var err2 error
			if isRange {
				last, err2 = strconv.ParseInt(b, 10, 64)
			}
			if err1 != nil || err2 != nil || last < first {
				return nil, fmt.Errorf("dumpe2fs %s: cannot read the free range %q", part, r)
			}
			free = append(free, [2]int64{first, last})
		}
	}
	if len(free) == 0 {
		return nil, fmt.Errorf("dumpe2fs %s lists no free blocks", part)
	}
	return free, nil
}

// DumpFiles reads every file of paths from the ext file system in part
// with debugfs's dump command and returns their sha256s.
func DumpFiles(ctx context.Context, part string, paths []string) (map[string]string, error) {
	dir, err := os.MkdirTemp("", "rewind-dump-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sort.Strings(paths)
	var cmds strings.Builder
	for i, p := range paths {
		fmt.Fprintf(&cmds, "dump %s %s\n", p, filepath.Join(dir, strconv.Itoa(i)))
	}
	cmdFile := filepath.Join(dir, "cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		return nil, err
	}
	if err := runCtx(ctx, "debugfs", "-f", cmdFile, part); err != nil {
		return nil, err
	}
	sums := make(map[string]string)
	for i, p := range paths {
		b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			return nil, fmt.Errorf("debugfs did not dump %s: %w", p, err)
		}
		sum := sha256.Sum256(b)
		sums[p] = hex.EncodeToString(sum[:])
	}
	return sums, nil
}
