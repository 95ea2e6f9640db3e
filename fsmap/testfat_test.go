package fsmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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
func ftPatch(t *testing.T, path string, off int64, b []byte) {
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
func ftReadAt(t *testing.T, path string, off, n int64) []byte {
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
