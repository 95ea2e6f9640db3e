// Package testdisk builds realistic disk images for tests, benchmarks and
// the demo with the same tools a user has: sgdisk for the GPT, mkfs.vfat and
// mtools for an EFI system partition, mkfs.ext4 -d for a file system filled
// from real files. Nothing is mounted, so it runs wherever those tools do.
package testdisk

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Sample describes a GPT disk: an ESP, an ext4 file system filled from real
// files, a partition of random bytes, and unallocated zeros at the end.
type Sample struct {
	Size       int64  // whole disk, bytes
	ESPSize    int64  // EFI system partition, bytes
	ExtSize    int64  // ext4 partition, bytes
	RandomSize int64  // random-data partition, bytes
	FilesFrom  string // directory copied into the ext4 file system
	FilesLimit int64  // stop copying files after this many bytes (0: 60% of ExtSize)
	Seed       uint64 // for the random partition: same seed, same bytes
}

// Tools lists the commands Build needs; tests skip when one is missing.
var Tools = []string{"sgdisk", "mkfs.vfat", "mcopy", "mkfs.ext4"}

// Missing returns the first tool in Tools that is not installed, or "".
func Missing() string {
	for _, t := range Tools {
		if _, err := exec.LookPath(t); err != nil {
			return t
		}
	}
	return ""
}

// Build writes the sample disk to path and returns the partitions' byte
// ranges as [start, end) pairs, in table order.
func (s Sample) Build(path string) ([][2]int64, error) {
	const mib = 1 << 20
	if s.ESPSize+s.ExtSize+s.RandomSize+2*mib > s.Size {
		return nil, fmt.Errorf("testdisk: partitions do not fit a %d-byte disk", s.Size)
	}
	work, err := os.MkdirTemp(filepath.Dir(path), ".testdisk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := truncate(path, s.Size); err != nil {
		return nil, err
	}
	sectors := func(n int64) string { return strconv.FormatInt(n/512, 10) }
	start := int64(mib)
	parts := [][2]int64{
		{start, start + s.ESPSize},
		{start + s.ESPSize, start + s.ESPSize + s.ExtSize},
		{start + s.ESPSize + s.ExtSize, start + s.ESPSize + s.ExtSize + s.RandomSize},
	}
	args := []string{"-o",
		"-n", "1:" + sectors(parts[0][0]) + ":" + sectors(parts[0][1]-1), "-t", "1:ef00", "-c", "1:EFI system",
		"-n", "2:" + sectors(parts[1][0]) + ":" + sectors(parts[1][1]-1), "-t", "2:8300", "-c", "2:root",
		"-n", "3:" + sectors(parts[2][0]) + ":" + sectors(parts[2][1]-1), "-t", "3:8300", "-c", "3:data",
		path}
	if err := run("sgdisk", args...); err != nil {
		return nil, err
	}

	esp := filepath.Join(work, "esp.img")
	if err := truncate(esp, s.ESPSize); err != nil {
		return nil, err
	}
	if err := run("mkfs.vfat", "-F", "32", "-n", "EFI", esp); err != nil {
		return nil, err
	}
	boot := filepath.Join(work, "BOOTX64.EFI")
	if err := os.WriteFile(boot, RandomBytes(s.Seed+1, 300<<10), 0o644); err != nil {
		return nil, err
	}
	if err := run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"); err != nil {
		return nil, err
	}
	if err := run("mcopy", "-i", esp, boot, "::/EFI/BOOT/BOOTX64.EFI"); err != nil {
		return nil, err
	}

	root := filepath.Join(work, "root")
	limit := s.FilesLimit
	if limit == 0 {
		limit = s.ExtSize * 6 / 10
	}
	if err := copyTree(s.FilesFrom, root, limit); err != nil {
		return nil, err
	}
	ext := filepath.Join(work, "ext.img")
	if err := truncate(ext, s.ExtSize); err != nil {
		return nil, err
	}
	if err := run("mkfs.ext4", "-q", "-F", "-L", "root", "-U", "6f0b1d4e-2b1c-4f7a-9d6e-0a1b2c3d4e5f", "-E", "hash_seed=5b8e1c6a-0f3d-4b2e-8a9c-1d2e3f4a5b6c", "-d", root, ext); err != nil {
		return nil, err
	}

	disk, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer disk.Close()
	for i, img := range []string{esp, ext} {
		if err := copyInto(disk, img, parts[i][0]); err != nil {
			return nil, err
		}
	}
	if _, err := disk.WriteAt(RandomBytes(s.Seed, int(s.RandomSize)), parts[2][0]); err != nil {
		return nil, err
	}
	return parts, disk.Sync()
}

// RandomBytes returns n deterministic pseudo-random bytes for seed.
func RandomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// copyTree copies regular files from src into dst until limit bytes,
// skipping what cannot be read. The walk order is lexical, so the result is
// the same on the same machine.
func copyTree(src, dst string, limit int64) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	var total int64
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || total >= limit {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil || total+info.Size() > limit {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		n, err := io.Copy(out, in)
		out.Close()
		total += n
		return err
	})
}

func copyInto(disk *os.File, img string, off int64) error {
	in, err := os.Open(img)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(io.NewOffsetWriter(disk, off), in)
	return err
}

func truncate(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
