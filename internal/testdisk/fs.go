package testdisk

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// FSImage is a file system made with the real tools over old random
// data, as a disk that has been used holds one.
type FSImage struct {
	Path string // the image file
	Type string // "ext4", "vfat", "ntfs", "swap", or "" for random bytes
	Size int64
	// Files maps each file's name (from the root) to the SHA-256 of its
	// bytes.
	Files map[string]string
	// Deleted is the content of a file written and then deleted
	// (debugfs rm, mdel): its blocks are free but still hold it. Nil for
	// ntfs, swap and random bytes.
	Deleted []byte
}

// fsTools lists the commands MakeFS and the checks on each type need.
var fsTools = map[string][]string{
	"ext4": {"mkfs.ext4", "debugfs", "dumpe2fs", "e2fsck"},
	"vfat": {"mkfs.vfat", "mcopy", "mdel", "fsck.vfat"},
	"ntfs": {"mkntfs", "ntfscp", "ntfscat", "ntfsfix"},
	"swap": {"mkswap", "blkid"},
	"":     nil,
}

// NeedFS skips the test when a tool for one of the file system types is
// not installed.
func NeedFS(t testing.TB, types ...string) {
	t.Helper()
	for _, typ := range types {
		for _, tool := range fsTools[typ] {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s is not installed", tool)
			}
		}
	}
}

// SwapLabel and SwapUUID are what MakeFS gives a swap area.
const (
	SwapLabel = "oldswap"
	SwapUUID  = "3b2f6a0e-5c1d-4e8f-9a7b-6c5d4e3f2a1b"
)

// MakeFS writes size random bytes (seed) to path and makes a file system
// of type typ over them, holding files of random content that fill about
// used bytes, plus one file of 256 KiB that is then deleted. Type "" leaves
// the random bytes.
func MakeFS(t testing.TB, path, typ string, size, used int64, seed uint64) *FSImage {
	t.Helper()
	NeedFS(t, typ)
	if err := os.WriteFile(path, RandomBytes(seed, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	img := &FSImage{Path: path, Type: typ, Size: size, Files: map[string]string{}}
	if typ == "" {
		return img
	}
	dir := t.TempDir()
	var names []string
	sizes := []int64{1, 1000, 4096, 5000, 65536, 200_000, 1 << 20, 3<<20 + 17}
	var total int64
	for i := 0; total < used; i++ {
		n := sizes[i%len(sizes)]
		name := fmt.Sprintf("f%03d.bin", i)
		b := RandomBytes(seed*1000+uint64(i)+1, int(n))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		img.Files[name] = hex.EncodeToString(sum[:])
		names = append(names, name)
		total += n
	}
	deleted := RandomBytes(seed*1000+999, 256<<10)
	mustRun := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
	}
	switch typ {
	case "ext4":
		if err := os.WriteFile(filepath.Join(dir, "deleted.bin"), deleted, 0o644); err != nil {
			t.Fatal(err)
		}
		mustRun("mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-L", "data", "-d", dir, path)
		mustRun("debugfs", "-w", "-R", "rm /deleted.bin", path)
		img.Deleted = deleted
	case "vfat":
		args := []string{"-n", "DATA", path}
		if size >= 64<<20 {
			args = append([]string{"-F", "32"}, args...)
		}
		mustRun("mkfs.vfat", args...)
		if err := os.WriteFile(filepath.Join(dir, "deleted.bin"), deleted, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, name := range append(names, "deleted.bin") {
			mustRun("mcopy", "-i", path, filepath.Join(dir, name), "::/"+name)
		}
		mustRun("mdel", "-i", path, "::/deleted.bin")
		img.Deleted = deleted
	case "ntfs":
		mustRun("mkntfs", "-F", "-Q", "-q", "-L", "DATA", path)
		for _, name := range names {
			mustRun("ntfscp", "-q", path, filepath.Join(dir, name), name)
		}
	case "swap":
		mustRun("mkswap", "-L", SwapLabel, "-U", SwapUUID, path)
	default:
		t.Fatalf("MakeFS: unknown file system type %q", typ)
	}
	return img
}

// GPTDisk writes a GPT disk image of size bytes to path, filled with
// random bytes (seed) and holding one partition per image, in order from
// 1 MiB on, each 1 MiB aligned, with the image's bytes in it. It returns
// each partition's byte offset.
func GPTDisk(t testing.TB, path string, size int64, seed uint64, parts ...*FSImage) []int64 {
	t.Helper()
	if err := os.WriteFile(path, RandomBytes(seed, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	types := map[string]string{"ext4": "8300", "vfat": "0700", "ntfs": "0700", "swap": "8200", "": "8300"}
	args := []string{"-o"}
	var offsets []int64
	at := int64(1 << 20)
	for i, p := range parts {
		n := strconv.Itoa(i + 1)
		args = append(args, "-n", n+":"+strconv.FormatInt(at/512, 10)+":"+strconv.FormatInt((at+p.Size)/512-1, 10), "-t", n+":"+types[p.Type])
		offsets = append(offsets, at)
		at += (p.Size + 1<<20 - 1) &^ (1<<20 - 1)
	}
	if at+1<<20 > size {
		t.Fatalf("GPTDisk: the partitions need %d bytes, the disk has %d", at+1<<20, size)
	}
	if out, err := exec.Command("sgdisk", append(args, path)...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk %q: %v\n%s", args, err, out)
	}
	disk, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	for i, p := range parts {
		if err := copyInto(disk, p.Path, offsets[i]); err != nil {
			t.Fatal(err)
		}
	}
	return offsets
}
