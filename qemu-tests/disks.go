package qemutests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/snapshot"
)

// RepoRoot returns the directory holding go.mod, from the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// BaseInitramfs returns the base archive built by u-root from the module at
// root. It is cached in root/.cache/rescue keyed by a hash of every Go
// source and go.mod/go.sum, so that runs without code changes don't pay
// for the build. REWIND_BASE overrides it with a prebuilt archive.
func BaseInitramfs(ctx context.Context, root string, logf func(string, ...any)) (string, error) {
	if p := os.Getenv("REWIND_BASE"); p != "" {
		return p, nil
	}
	key, err := sourceHash(root)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "rescue")
	out := filepath.Join(dir, "base-"+key[:16]+".cpio.gz")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	logf("building the base initramfs with u-root (cached as %s)", out)
	if err := initramfs.BuildBase(ctx, root, out+".tmp"); err != nil {
		return "", err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "base-*.cpio.gz"))
	for _, o := range old {
		os.Remove(o)
	}
	return out, os.Rename(out+".tmp", out)
}

func sourceHash(root string) (string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && (strings.HasPrefix(name, ".") && p != root || name == "qemu-tests" || name == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go") || p == filepath.Join(root, "go.mod") || p == filepath.Join(root, "go.sum")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Initrd writes base followed by the overlay (plan, modules) as an
// uncompressed cpio: the kernel unpacks concatenated archives in order.
// An uncompressed archive must start at a multiple of 4 bytes, so the
// compressed base is padded with zeros, which the kernel skips.
func Initrd(base, out string, o *initramfs.Overlay) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.Write(b)
	for buf.Len()%4 != 0 {
		buf.WriteByte(0)
	}
	if err := o.Write(&buf); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// RescueModules selects initramfs.DefaultModules for kernel.
func RescueModules(kernel string) (*initramfs.ModuleSet, error) {
	bz, err := os.ReadFile(kernel)
	if err != nil {
		return nil, err
	}
	rel := initramfs.KernelRelease(bz)
	if rel == "" {
		return nil, fmt.Errorf("cannot read the release of %s", kernel)
	}
	return initramfs.SelectModules(filepath.Join("/lib/modules", rel), initramfs.DefaultModules)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// SampleDisk writes a disk image of size bytes with a GPT holding an ext4
// file system with files and a partition of random data, plus a few
// bytes in the gap before the first partition (a boot area).
func SampleDisk(path string, size int64, seed int64) error {
	tmp, err := os.MkdirTemp("", "rewind-sample-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rnd := rand.New(rand.NewSource(seed))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	const mib = 1 << 20
	p1Size := size / 2
	table := fmt.Sprintf("label: gpt\nlabel-id: 1B3E5C7A-0000-4000-8000-%012X\nfirst-lba: 2048\n"+
		"start=2048, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"\n"+
		"start=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"data\"\n",
		seed, p1Size/512, 2048+p1Size/512, 8*mib/512)
	cmd := exec.Command("sfdisk", "--quiet", path)
	cmd.Stdin = strings.NewReader(table)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %v\n%s", err, out)
	}
	// Files for the ext4 root.
	files := filepath.Join(tmp, "root")
	os.MkdirAll(filepath.Join(files, "etc"), 0o755)
	os.WriteFile(filepath.Join(files, "etc", "hostname"), []byte("pc1\n"), 0o644)
	blob := make([]byte, 3*mib)
	rnd.Read(blob)
	os.WriteFile(filepath.Join(files, "random.bin"), blob, 0o644)
	os.WriteFile(filepath.Join(files, "text.txt"), bytes.Repeat([]byte("Rewind brings a dead machine back. "), 40000), 0o644)
	fs := filepath.Join(tmp, "p1.ext4")
	if err := run("mkfs.ext4", "-q", "-F", "-L", "root", "-U", "5a3c0e8e-1111-4222-8333-0123456789ab", "-E", "root_owner=0:0",
		"-d", files, fs, fmt.Sprint(p1Size/1024)+"k"); err != nil {
		return err
	}
	p1, err := os.ReadFile(fs)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(p1, 2048*512); err != nil {
		return err
	}
	data := make([]byte, 5*mib)
	rnd.Read(data)
	if _, err := f.WriteAt(data, 2048*512+p1Size); err != nil {
		return err
	}
	// A boot area: bytes in the gap after the GPT, where boot loaders hide.
	gap := make([]byte, 4096)
	rnd.Read(gap)
	if _, err := f.WriteAt(gap, 100*512); err != nil {
		return err
	}
	return f.Sync()
}

// Capture captures the image at src into dir as 'rewind capture' does.
func Capture(ctx context.Context, src, dir string) (*snapshot.Manifest, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	opts := snapshot.CaptureOptions{DiskSize: st.Size(), Origin: snapshot.Origin{Path: src}}
	layout, extents, err := diskrestore.ReadLayout(f, st.Size(), 512)
	if err != nil {
		return nil, fmt.Errorf("reading the layout of %s: %w", src, err)
	}
	opts.Layout, opts.Extents = layout, extents
	return snapshot.Capture(ctx, f, dir, opts)
}

// BlankDisk creates an all-zero (sparse) image.
func BlankDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// USBStick makes a FAT32 file system labelled REWIND of size bytes
// holding the given files: destination path on the stick -> host path (a
// file or a directory copied recursively).
func USBStick(path string, size int64, files map[string]string) error {
	if err := BlankDisk(path, size); err != nil {
		return err
	}
	if err := run("mkfs.vfat", "-F", "32", "-n", "REWIND", path); err != nil {
		return err
	}
	dsts := make([]string, 0, len(files))
	for d := range files {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	made := map[string]bool{}
	for _, dst := range dsts {
		dir := ""
		for _, part := range strings.Split(strings.Trim(filepath.Dir(dst), "/"), "/") {
			if part == "" || part == "." {
				continue
			}
			dir += "/" + part
			if !made[dir] {
				made[dir] = true
				if err := run("mmd", "-i", path, "::"+dir); err != nil {
					return err
				}
			}
		}
		if err := run("mcopy", "-s", "-i", path, files[dst], "::"+dst); err != nil {
			return err
		}
		made[dst] = true
	}
	return nil
}

// StickFiles lists the files under dir on a FAT stick.
func StickFiles(stick, dir string) ([]string, error) {
	out, err := exec.Command("mdir", "-b", "-i", stick, "::"+dir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mdir %s: %v\n%s", dir, err, out)
	}
	return strings.Fields(string(out)), nil
}

// StickFile reads one file from a FAT stick.
func StickFile(stick, path string) ([]byte, error) {
	out, err := exec.Command("mtype", "-i", stick, "::"+path).Output()
	if err != nil {
		return nil, fmt.Errorf("mtype %s: %v", path, err)
	}
	return out, nil
}

// SameExtents checks that target holds the same bytes as source in every
// extent of m, and the same partition table as sfdisk --dump shows it.
func SameExtents(source, target string, m *snapshot.Manifest) error {
	s, err := os.Open(source)
	if err != nil {
		return err
	}
	defer s.Close()
	t, err := os.Open(target)
	if err != nil {
		return err
	}
	defer t.Close()
	for i, e := range m.Extents {
		hs, err := hashRange(s, e.Offset, e.Length)
		if err != nil {
			return err
		}
		ht, err := hashRange(t, e.Offset, e.Length)
		if err != nil {
			return err
		}
		if hs != ht {
			return fmt.Errorf("extent %d (%s, offset %d, length %d): target sha256 %s, source %s", i, e.Kind, e.Offset, e.Length, ht, hs)
		}
	}
	ds, err := SfdiskDump(source)
	if err != nil {
		return err
	}
	dt, err := SfdiskDump(target)
	if err != nil {
		return fmt.Errorf("target has no readable partition table: %w", err)
	}
	if ds != dt {
		return fmt.Errorf("sfdisk --dump differs:\n--- source\n%s--- target\n%s", ds, dt)
	}
	return nil
}

func hashRange(f *os.File, off, n int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SfdiskDump returns sfdisk --dump of an image with its file name taken out.
func SfdiskDump(path string) (string, error) {
	out, err := exec.Command("sfdisk", "--dump", path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sfdisk --dump %s: %v\n%s", path, err, out)
	}
	s := strings.ReplaceAll(string(out), path, "DISK")
	return s, nil
}

// AllZero reports whether the image holds only zero bytes.
func AllZero(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}
