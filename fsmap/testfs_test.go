package fsmap

// Shared helpers for the file system tests: images over random data made
// with the real tools, files of random content, and reading an image's map.

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// tfsNeed skips the test when one of the tools is not installed.
func tfsNeed(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
}

// tfsRun runs a command and returns its combined output; it fails the test
// when the command fails.
func tfsRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// tfsRandom fills w with n pseudo-random bytes for seed.
func tfsRandom(w io.Writer, seed uint64, n int64) error {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 0xfe})
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		_, _ = rng.Read(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// tfsImage creates a file of size random bytes (the old data of a used
// disk) and returns its path.
func tfsImage(t testing.TB, dir string, size int64, seed uint64) string {
	t.Helper()
	path := filepath.Join(dir, "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tfsRandom(f, seed, size); err != nil {
		t.Fatalf("fill %s: %v", path, err)
	}
	return path
}

// tfsFile writes a file of n random bytes and returns its sha256.
func tfsFile(t testing.TB, path string, n int64, seed uint64) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if err := tfsRandom(io.MultiWriter(f, h), seed, n); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tfsSum is the sha256 of a file.
func tfsSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tfsRead runs Read on the first size bytes of the image (all of it when
// size is 0).
func tfsRead(t testing.TB, path string, size int64) (*Map, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if size == 0 {
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		size = st.Size()
	}
	return Read(io.NewSectionReader(f, 0, size), size)
}

// tfsZero writes zeros over the ranges of the image, as a restore does
// where nothing was stored.
func tfsZero(t testing.TB, path string, ranges []Range) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zero := make([]byte, 1<<20)
	for _, r := range ranges {
		for off := r.Offset; off < r.Offset+r.Length; {
			n := min(int64(len(zero)), r.Offset+r.Length-off)
			if _, err := f.WriteAt(zero[:n], off); err != nil {
				t.Fatalf("zero %s at %d: %v", path, off, err)
			}
			off += n
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// tfsPatch writes b into the image at off.
func tfsPatch(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("patch %s at %d: %v", path, off, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// tfsReadAt reads n bytes of the image at off.
func tfsReadAt(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s at %d: %v", path, off, err)
	}
	return b
}

// itoa formats n for a command line.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }
