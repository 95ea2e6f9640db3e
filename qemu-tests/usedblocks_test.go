package qemutests

// Issue 15: a Debian system disk whose ext4 holds deleted data is captured
// used-blocks, restored onto a used disk, and boots. The disks:
//
//	system disk  256 MiB MBR image (sysdisk.go): GRUB for BIOS in the MBR
//	             and the gap after it, an ext4 root partition holding the
//	             host's Debian kernel and initramfs-tools initrd, a static
//	             busybox whose /sbin/init checks the disk's files and prints
//	             SysDiskMarker; its free blocks hold old random data and the
//	             blocks of three files deleted with debugfs; a 32 MiB swap
//	             partition whose pages hold old random data
//	target       256 MiB filled with other random bytes (a used disk): a
//	             loop device on the host, a virtio disk in QEMU
//	USB stick    FAT32 labelled REWIND holding snapshots/pc1 (the system
//	             disk captured on the host by 'rewind capture') and the
//	             unattended plan
//
// Checked from the host: the manifest stores the ext4 partition used-blocks
// with most of it unused and the swap partition as its header only; on the
// target, e2fsck -fn is clean, every live file dumped with debugfs has the
// source's sha256, every free block (as dumpe2fs lists them), every block
// of the deleted files and every swap page after the header reads as
// zeros, the boot code, the swap header and the partition table are the
// source's. In QEMU (SeaBIOS,
// TCG), the source disk boots first (the fixture works) and the restored
// disk boots after.
//
// TestSysDiskUsedBlocksHost (no QEMU, about 10 s) runs in 'make test';
// TestSysDiskUsedBlocksQEMU (three boots, about 90 s) with REWIND_QEMU_ALL=1.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/rescue"
)

// sysManifest is what these tests read of manifest.json: read as plain
// JSON, not with the snapshot package, so that the test checks the file
// the format documents.
type sysManifest struct {
	Version  int         `json:"version"`
	DiskSize int64       `json:"disk_size"`
	Extents  []sysExtent `json:"extents"`
}

type sysExtent struct {
	Kind    string `json:"kind"`
	Offset  int64  `json:"offset"`
	Length  int64  `json:"length"`
	FS      string `json:"fs"`
	Capture string `json:"capture"`
	Note    string `json:"note"`
	Unused  []struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
	} `json:"unused"`
}

func (e sysExtent) unusedBytes() int64 {
	var n int64
	for _, u := range e.Unused {
		n += u.Length
	}
	return n
}

// unusedBytes is the sum of the unused ranges of every extent.
func (m *sysManifest) unusedBytes() int64 {
	var n int64
	for _, e := range m.Extents {
		n += e.unusedBytes()
	}
	return n
}

// sysDisk builds (or finds cached) the system disk; it skips the test
// without the tools the build needs.
func sysDisk(t *testing.T) *SysDisk {
	t.Helper()
	if testing.Short() {
		t.Skip("the system disk tests are skipped with -short")
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "dumpe2fs", "e2fsck", "sfdisk", "grub-mkimage"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh)", tool)
		}
	}
	kernel := Kernel()
	if kernel == "" {
		t.Skip("no kernel in /boot; set REWIND_KERNEL")
	}
	initrd := sysInitrd(kernel)
	if _, err := os.Stat(initrd); err != nil {
		t.Skipf("no initrd for %s (%v); set REWIND_SYSDISK_INITRD", kernel, err)
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	d, err := CachedSysDisk(context.Background(), root, kernel, initrd, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// sysInitrd is the initramfs-tools initrd that goes with kernel
// (/boot/vmlinuz-R -> /boot/initrd.img-R).
func sysInitrd(kernel string) string {
	if p := os.Getenv("REWIND_SYSDISK_INITRD"); p != "" {
		return p
	}
	return filepath.Join(filepath.Dir(kernel), strings.Replace(filepath.Base(kernel), "vmlinuz", "initrd.img", 1))
}

// rewindBin builds the rewind command into the test's temporary directory.
func rewindBin(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "rewind")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/rewind")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/rewind: %v\n%s", err, out)
	}
	return bin
}

// captureSysDisk runs 'rewind capture' on the system disk, checks what
// the manifest says about the ext4 partition, and returns the snapshot
// directory and the manifest.
func captureSysDisk(t *testing.T, rewind string, d *SysDisk) (string, *sysManifest) {
	t.Helper()
	snap := filepath.Join(t.TempDir(), "pc1")
	start := time.Now()
	out, err := exec.Command(rewind, "capture", d.Path, "-o", snap, "--progress", "none").CombinedOutput()
	if err != nil {
		t.Fatalf("rewind capture %s: %v\n%s", d.Path, err, out)
	}
	t.Logf("rewind capture took %.1fs:\n%s", time.Since(start).Seconds(), out)
	b, err := os.ReadFile(filepath.Join(snap, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m sysManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s/manifest.json: %v", snap, err)
	}
	checkUsedManifest(t, d, &m, snapshotBytes(t, snap))
	return snap, &m
}

// checkUsedManifest checks that the ext4 partition was captured
// used-blocks with more than half of it unused, the swap partition as its
// header only, and that the snapshot holds no more than the used bytes.
func checkUsedManifest(t *testing.T, d *SysDisk, m *sysManifest, stored int64) {
	t.Helper()
	parts := []struct {
		name         string
		offset, size int64
		fs           string
		minUnused    int64
	}{
		// The free blocks: more than half of the partition.
		{"ext4 root", d.PartOffset, d.PartSize, "ext4", d.PartSize / 2},
		// Everything after the header page, up to one minimum run.
		{"swap", d.SwapOffset, d.SwapSize, "swap", d.SwapSize - 64<<10},
	}
	for _, p := range parts {
		k := slices.IndexFunc(m.Extents, func(e sysExtent) bool { return e.Offset == p.offset })
		if k < 0 {
			t.Fatalf("the manifest has no extent for the %s partition at offset %d", p.name, p.offset)
		}
		e := m.Extents[k]
		if e.Length != p.size {
			t.Errorf("%s extent at %d: length %d, want the partition's %d", p.name, e.Offset, e.Length, p.size)
		}
		if e.FS != p.fs || e.Capture != "used" {
			t.Fatalf("%s extent at %d: fs %q, capture %q (note %q); want fs %q, capture \"used\"", p.name, e.Offset, e.FS, e.Capture, e.Note, p.fs)
		}
		if u := e.unusedBytes(); u < p.minUnused {
			t.Errorf("%s extent at %d: %d unused bytes of %d; want at least %d", p.name, e.Offset, u, e.Length, p.minUnused)
		}
		t.Logf("%s partition: %d of %d bytes unused (%.0f%%) in %d ranges", p.name, e.unusedBytes(), e.Length, 100*float64(e.unusedBytes())/float64(e.Length), len(e.Unused))
	}
	// Stored: the used bytes, compressed; the free blocks and the swap
	// pages hold random bytes, which would not compress.
	if used := m.DiskSize - m.unusedBytes(); stored > used+(4<<20) {
		t.Errorf("snapshot holds %d bytes; want at most the %d used bytes (+4 MiB): unused ranges were stored", stored, used)
	}
	t.Logf("snapshot: %d bytes stored for a %d-byte disk", stored, m.DiskSize)
}

// snapshotBytes is the size of the snapshot's files.
func snapshotBytes(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// dirtyTarget makes a disk image of the system disk's size holding other
// random bytes than the source: a used disk.
func dirtyTarget(t *testing.T, d *SysDisk) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.img")
	if err := fillRandom(p, d.Size, 0xd1e7); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkRestoredSysDisk checks the target image against the system disk
// from the host: boot code and table, e2fsck, live files, and zeros in
// every free and every deleted block and every swap page.
func checkRestoredSysDisk(t *testing.T, d *SysDisk, target string) {
	t.Helper()
	ctx := context.Background()
	src, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tgt, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()

	// GRUB's boot.img in the MBR, core.img in the gap, the table.
	if hs, ht := rangeHash(t, src, 0, d.PartOffset), rangeHash(t, tgt, 0, d.PartOffset); hs != ht {
		t.Errorf("target %s: the first %d bytes (MBR, GRUB core.img) have sha256 %s, want the source's %s", target, d.PartOffset, ht, hs)
	}
	ds, err := SfdiskDump(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if dt, err := SfdiskDump(target); err != nil || dt != ds {
		t.Errorf("target %s: sfdisk --dump\n%s(%v)\nwant\n%s", target, dt, err, ds)
	}

	checkRestoredSwap(t, d, src, tgt)

	part := filepath.Join(t.TempDir(), "part.ext4")
	if err := copyOut(tgt, d.PartOffset, d.PartSize, part); err != nil {
		t.Fatal(err)
	}
	if err := fsckClean(ctx, part); err != nil {
		t.Errorf("target %s partition 1: %v", target, err)
	}
	paths := make([]string, 0, len(d.Files))
	for p := range d.Files {
		paths = append(paths, p)
	}
	got, err := DumpFiles(ctx, part, paths)
	if err != nil {
		t.Fatalf("target %s partition 1: %v", target, err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if got[p] != d.Files[p] {
			t.Errorf("target %s: %s has sha256 %s, want %s", target, p, got[p], d.Files[p])
		}
	}

	free, err := FreeRanges(ctx, part)
	if err != nil {
		t.Fatal(err)
	}
	srcFree, err := sourceFreeRanges(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(free) != fmt.Sprint(srcFree) {
		t.Errorf("target %s: dumpe2fs lists other free blocks than the source's", target)
	}
	var freeBlocks int64
	for _, r := range free {
		freeBlocks += r[1] - r[0] + 1
		if b, ok := firstNonZeroBlock(t, tgt, d, r); !ok {
			t.Errorf("target %s: free block %d (of free blocks %d-%d) is not zeros: the old data is still there", target, b, r[0], r[1])
		}
	}
	deleted := make([]string, 0, len(d.Deleted))
	for p := range d.Deleted {
		deleted = append(deleted, p)
	}
	sort.Strings(deleted)
	for _, p := range deleted {
		for _, r := range d.Deleted[p] {
			// The source still holds the deleted data there: that is
			// what the check below must not find on the target.
			if _, zero := firstNonZeroBlock(t, src, d, r); zero {
				t.Fatalf("source %s: the blocks %d-%d of deleted %s are zeros; the fixture lost its old data", d.Path, r[0], r[1], p)
			}
			if b, ok := firstNonZeroBlock(t, tgt, d, r); !ok {
				t.Errorf("target %s: block %d of deleted %s is not zeros: the deleted data came back", target, b, p)
			}
		}
	}
	if !t.Failed() {
		t.Logf("target %s: %d live files identical, %d free blocks (%d MiB) zeros, %d deleted files gone", target, len(paths), freeBlocks, freeBlocks*d.BlockSize>>20, len(deleted))
	}
}

// checkRestoredSwap checks the swap partition: its header page (the
// signature, UUID and label) is the source's; after it, the target reads
// zeros where the source holds old pages.
func checkRestoredSwap(t *testing.T, d *SysDisk, src, tgt *os.File) {
	t.Helper()
	const page = 4096
	if hs, ht := rangeHash(t, src, d.SwapOffset, page), rangeHash(t, tgt, d.SwapOffset, page); hs != ht {
		t.Errorf("target %s: the swap header (partition 2, first %d bytes) has sha256 %s, want the source's %s", tgt.Name(), page, ht, hs)
	}
	rest, n := d.SwapOffset+page, d.SwapSize-page
	if _, zero := firstNonZero(t, src, rest, n); zero {
		t.Fatalf("source %s: the swap pages are zeros; the fixture lost its old data", src.Name())
	}
	if off, zero := firstNonZero(t, tgt, rest, n); !zero {
		t.Errorf("target %s: swap byte %d (partition 2 + %d) is not zero: old swapped-out pages came back", tgt.Name(), off, off-d.SwapOffset)
	}
}

// sourceFreeRanges lists the source partition's free blocks.
func sourceFreeRanges(ctx context.Context, d *SysDisk) ([][2]int64, error) {
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tmp, err := os.CreateTemp("", "rewind-sysdisk-part-")
	if err != nil {
		return nil, err
	}
	tmp.Close()
	part := tmp.Name()
	defer os.Remove(part)
	if err := copyOut(f, d.PartOffset, d.PartSize, part); err != nil {
		return nil, err
	}
	return FreeRanges(ctx, part)
}

// firstNonZeroBlock returns the first block of the run r (file system
// blocks of the partition) that is not all zeros on the disk f, or ok.
func firstNonZeroBlock(t *testing.T, f *os.File, d *SysDisk, r [2]int64) (block int64, ok bool) {
	t.Helper()
	off, ok := firstNonZero(t, f, d.PartOffset+r[0]*d.BlockSize, (r[1]-r[0]+1)*d.BlockSize)
	return (off - d.PartOffset) / d.BlockSize, ok
}

// firstNonZero returns the offset of the first byte in [off, off+n) of f
// that is not zero, or ok when there is none.
func firstNonZero(t *testing.T, f *os.File, off, n int64) (at int64, ok bool) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for done := int64(0); done < n; {
		b := buf[:min(int64(len(buf)), n-done)]
		if _, err := f.ReadAt(b, off+done); err != nil {
			t.Fatalf("%s: bytes %d-%d: %v", f.Name(), off+done, off+done+int64(len(b))-1, err)
		}
		if i := slices.IndexFunc(b, func(c byte) bool { return c != 0 }); i >= 0 {
			return off + done + int64(i), false
		}
		done += int64(len(b))
	}
	return 0, true
}

func rangeHash(t *testing.T, f *os.File, off, n int64) string {
	t.Helper()
	h, err := hashRange(f, off, n)
	if err != nil {
		t.Fatalf("%s: %v", f.Name(), err)
	}
	return h
}

// copyOut copies n bytes at off of f into a new file at path.
func copyOut(f *os.File, off, n int64, path string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(f, off, n)); err != nil {
		return err
	}
	return out.Close()
}

// bootSysDisk boots a disk through SeaBIOS and GRUB and checks that its
// init found its files intact.
func bootSysDisk(t *testing.T, disk, what string) {
	t.Helper()
	vm := &VM{Drives: []Drive{{Path: disk, Boot: true}}, Timeout: 300 * time.Second,
		LogPath: filepath.Join(t.TempDir(), "console.log")}
	out := runLogged(t, vm, " (booting "+what+")")
	if strings.Contains(out, SysDiskBad) {
		t.Fatalf("%s booted, but its init found files that differ (console above)", what)
	}
	if !strings.Contains(out, SysDiskMarker) {
		t.Fatalf("%s did not boot to %q", what, SysDiskMarker)
	}
}

// The system disk captured used-blocks and restored on the host, with
// 'rewind restore', onto a loop device over a used disk.
func TestSysDiskUsedBlocksHost(t *testing.T) {
	d := sysDisk(t)
	rewind := rewindBin(t)
	snap, _ := captureSysDisk(t, rewind, d)
	target := dirtyTarget(t, d)
	dev := testdisk.Loop(t, target, 0)
	start := time.Now()
	out, err := exec.Command(rewind, "restore", snap, dev, "--yes", "--progress", "none").CombinedOutput()
	if err != nil {
		t.Fatalf("rewind restore %s %s: %v\n%s", snap, dev, err, out)
	}
	t.Logf("rewind restore onto %s took %.1fs:\n%s", dev, time.Since(start).Seconds(), out)
	// The summary tells the user whether old bytes remain: none do (the
	// swap partition's unused range runs into the last 33 sectors, which
	// the restore clears with the old table).
	if strings.Contains(string(out), "left with the old disk's bytes") {
		t.Errorf("rewind restore says old bytes were left on %s; want all the unused ranges zeroed", dev)
	}
	checkRestoredSysDisk(t, d, target)
}

// The whole story in QEMU: the system disk boots; captured on the host,
// it is restored by the rescue stick onto a used virtio disk, which then
// boots.
func TestSysDiskUsedBlocksQEMU(t *testing.T) {
	setup(t, true)
	d := sysDisk(t)

	// 1. The fixture boots (a copy: booting must not change the source).
	source := filepath.Join(t.TempDir(), "source.img")
	if err := run("cp", "--sparse=always", d.Path, source); err != nil {
		t.Fatal(err)
	}
	bootSysDisk(t, source, "the system disk")
	os.Remove(source)

	// 2. Captured on the host.
	snap, m := captureSysDisk(t, rewindBin(t), d)

	// 3. Restored through the rescue stick onto a used disk.
	dir := t.TempDir()
	planFile := filepath.Join(dir, "plan.toml")
	if err := os.WriteFile(planFile, []byte(unattended), 0o644); err != nil {
		t.Fatal(err)
	}
	stick := filepath.Join(dir, "stick.img")
	stickSize := (snapshotBytes(t, snap)*11/10 + 64<<20) &^ (1<<20 - 1)
	if err := USBStick(stick, stickSize, map[string]string{"/snapshots/pc1": snap, "/rewind/plan.toml": planFile}); err != nil {
		t.Fatal(err)
	}
	target := dirtyTarget(t, d)
	vm := &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}, Timeout: 400 * time.Second}
	_, r := boot(t, vm, "")
	if r.Status != rescue.StatusSuccess {
		t.Fatalf("report status %q, error %q; want success", r.Status, r.Error)
	}
	t.Logf("restored: %d bytes written, %d zeroed in %.1fs", r.BytesWritten, r.BytesZeroed, r.RestoreSeconds)
	// The report accounts for the unused ranges: all of them zeroed.
	if w := r.Wipe; w == nil || w.Unused != m.unusedBytes() || w.UnusedZeroed != w.Unused {
		t.Errorf("report wipe %+v; want unused_bytes %d, all zeroed", w, m.unusedBytes())
	} else {
		t.Logf("report wipe: %s, %d unused bytes zeroed in %.1fs", w.Method, w.UnusedZeroed, w.Seconds)
	}
	// Restore writes the used blocks only: the unused ranges are zeroed
	// (counted apart), never written as data.
	if stored := m.DiskSize - m.unusedBytes(); r.BytesWritten > stored {
		t.Errorf("report: %d bytes written; want at most the %d bytes the snapshot stores (disk minus unused)", r.BytesWritten, stored)
	}

	// 4. Checked on the host.
	checkRestoredSysDisk(t, d, target)
	if t.Failed() {
		return
	}

	// 5. The restored disk boots.
	bootSysDisk(t, target, "the restored disk")
}
