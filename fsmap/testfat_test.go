package fsmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Helpers for the FAT and NTFS tests: images of real file systems made by
// mkfs.vfat/mtools and mkntfs/ntfs-3g over random bytes, and the oracle
// that zeroes the free ranges a Map reports.

// ftNeed skips the test when a tool it runs is not installed (the project's
// setup installs dosfstools, mtools and ntfs-3g).
func ftNeed(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
}

// ftCmd runs a tool and returns its standard output; it fails the test
// with the tool's output if the tool fails.
func ftCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// ftRandom returns n bytes from a seeded generator.
func ftRandom(seed uint64, n int64) []byte {
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7}))
	b := make([]byte, n)
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// ftImage writes an image of size bytes of random data (the "old data" a
// used disk holds) and returns its path.
func ftImage(t *testing.T, size int64, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, ftRandom(seed, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ftFile writes a file of random content and returns its path and sha256.
func ftFile(t *testing.T, dir, name string, size int64, seed uint64) (string, string) {
	t.Helper()
	path := filepath.Join(dir, name)
	data := ftRandom(seed, size)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ftSum(data)
}

func ftSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ftReadMap runs Read on the image file.
func ftReadMap(t *testing.T, path string) (*Map, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Read(f, st.Size())
}

// ftZeroFree copies the image and zeroes every free range of m in the copy:
// what a restore of the used blocks leaves. It returns the copy's path.
func ftZeroFree(t *testing.T, path string, m *Map) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Free {
		clear(data[r.Offset : r.Offset+r.Length])
	}
	out := filepath.Join(t.TempDir(), "zeroed.img")
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// ftPatch overwrites bytes of the image at off.
func ftPatch(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// ftReadAt reads n bytes of the image at off.
func ftReadAt(t testing.TB, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// ftCopy copies a file into a new temporary directory.
func ftCopy(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// ftBase makes a small file system image from zeros with the given mkfs
// command for a fuzz target's base, and returns its bytes.
func ftBase(f *testing.F, size int64, mkfs string, args ...string) []byte {
	f.Helper()
	if _, err := exec.LookPath(mkfs); err != nil {
		f.Skipf("%s is not installed: %v", mkfs, err)
	}
	path := filepath.Join(f.TempDir(), "base.img")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		f.Fatal(err)
	}
	if out, err := exec.Command(mkfs, append(args, path)...).CombinedOutput(); err != nil {
		f.Fatalf("%s %v: %v\n%s", mkfs, args, err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return data
}

// ftPatched presents one of the bases with patches applied, without
// copying it: the first byte of patches picks the base; then each patch is
// a 4-byte little-endian offset (modulo the base's size), a length byte and
// that many bytes. It also returns the partition size to present, which
// the second byte can shrink by whole sectors.
func ftPatched(bases [][]byte, patches []byte) (io.ReaderAt, int64) {
	if len(patches) < 2 {
		return &ftOverlay{base: bases[0]}, int64(len(bases[0]))
	}
	o := &ftOverlay{base: bases[int(patches[0])%len(bases)]}
	size := int64(len(o.base)) - int64(patches[1]%4)*512
	for p := patches[2:]; len(p) >= 5; {
		off := int64(uint32(p[0])|uint32(p[1])<<8|uint32(p[2])<<16|uint32(p[3])<<24) % int64(len(o.base))
		n := min(int(p[4]), len(p)-5)
		o.patches = append(o.patches, ftOverlayPatch{off, p[5 : 5+n]})
		p = p[5+n:]
	}
	return o, size
}

// ftOverlay reads a base image with patches laid over it, later ones on top.
type ftOverlay struct {
	base    []byte
	patches []ftOverlayPatch
}

type ftOverlayPatch struct {
	off  int64
	data []byte
}

func (o *ftOverlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(o.base)) {
		return 0, io.EOF
	}
	n := copy(p, o.base[off:])
	for _, x := range o.patches {
		lo, hi := max(off, x.off), min(off+int64(n), x.off+int64(len(x.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], x.data[lo-x.off:hi-x.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ftPatch32 encodes one patch for ftPatched.
func ftPatch32(off uint32, b ...byte) []byte {
	return append([]byte{byte(off), byte(off >> 8), byte(off >> 16), byte(off >> 24), byte(len(b))}, b...)
}

// ftFuzzCheck fails the fuzz test when a successful read breaks the Map
// invariants.
func ftFuzzCheck(t *testing.T, fs string, m *Map, err error, size int64, also ...string) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrUnknown) && !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrNotClean) && !errors.Is(err, ErrUnsupported) {
			// I/O errors from reads past the end are fine too, but must say so.
			if !strings.Contains(err.Error(), "EOF") {
				t.Fatalf("%s: error wraps none of the package's errors: %v", fs, err)
			}
		}
		return
	}
	if m.FS != fs && !slices.Contains(also, m.FS) || m.Size != size {
		t.Fatalf("got fs %q size %d, want %s %d", m.FS, m.Size, fs, size)
	}
	if err := m.check(); err != nil {
		t.Fatalf("%s: map breaks its invariants: %v", fs, err)
	}
}

// ftBenchRead times Read on a sparse image of size bytes made by mkfs.
func ftBenchRead(b *testing.B, size int64, mkfs string, args ...string) {
	if _, err := exec.LookPath(mkfs); err != nil {
		b.Skipf("%s is not installed: %v", mkfs, err)
	}
	path := filepath.Join(b.TempDir(), "bench.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(mkfs, append(args, path)...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", mkfs, args, err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Read(f, size); err != nil {
			b.Fatal(err)
		}
	}
}
