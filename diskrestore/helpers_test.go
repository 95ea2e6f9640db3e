package diskrestore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/snapshot"
)

// needTools skips the test when a command it drives is not installed.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs it): %v", tool, err)
		}
	}
}

// needRoot skips the test when it cannot set up loop devices or mounts.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop device support: %v", err)
	}
}

// run runs a command and returns its standard output; it fails the test
// when the command fails.
func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// newImage creates a sparse image file of size bytes.
func newImage(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// scribble writes n pseudo-random bytes at off, the way a boot loader or
// a file system would leave data behind.
func scribble(t *testing.T, path string, off int64, n int, seed uint64) {
	t.Helper()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := range b {
		b[i] = byte(r.Uint32() | 1) // never zero: the whole run is data
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// readLayoutOf opens path and reads its layout.
func readLayoutOf(t *testing.T, path string, sectorSize int) (*snapshot.Layout, []snapshot.Extent) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := GeometryOf(f)
	if err != nil {
		t.Fatal(err)
	}
	l, ext, err := ReadLayout(f, g.Size, sectorSize)
	if err != nil {
		t.Fatalf("ReadLayout(%s): %v", path, err)
	}
	// What capture records, restore must accept.
	if _, err := snapshot.ParseManifest(manifestFor(t, l, ext)); err != nil {
		t.Fatalf("ReadLayout(%s) gives a layout that a manifest may not hold: %v", path, err)
	}
	return l, ext
}

// manifestFor returns the manifest a capture of l and extents would
// write, with an index of all-zero chunks of 1 MiB.
func manifestFor(t testing.TB, l *snapshot.Layout, extents []snapshot.Extent) []byte {
	t.Helper()
	const chunk = 1 << 20
	m := &snapshot.Manifest{Format: snapshot.FormatName, Version: snapshot.FormatVersion, DiskSize: l.DiskSize, ChunkSize: chunk,
		SegmentSize: snapshot.DefaultSegmentSize, Compression: "lz4-frame", Hash: "sha256", Layout: l, Extents: extents}
	for _, e := range extents {
		for off := int64(0); off < e.Length; off += chunk {
			m.Chunks = append(m.Chunks, snapshot.Chunk{Offset: e.Offset + off, Length: min(chunk, e.Length-off),
				FrameOffset: int64(len(m.Chunks)), FrameLength: 1, Zero: true, SHA256: strings.Repeat("0", 64)})
		}
	}
	if len(m.Chunks) > 0 {
		m.Segments = []snapshot.Segment{{Name: "data.000", Size: int64(len(m.Chunks))}}
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// restoreOnto writes l onto dst and copies the extents that fit from src,
// as the restore pipeline does.
func restoreOnto(t *testing.T, src, dst string, l *snapshot.Layout, extents []snapshot.Extent, opts WriteOptions) error {
	t.Helper()
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var notes []string
	opts.Logf = func(format string, args ...any) {
		notes = append(notes, fmt.Sprintf(format, args...))
		t.Logf(format, args...)
	}
	if err := WriteLayout(out, l, opts); err != nil {
		return err
	}
	g, err := GeometryOf(out)
	if err != nil {
		t.Fatal(err)
	}
	tl, _, err := TargetLayout(l, g.Size, g.LogicalSectorSize, opts)
	if err != nil {
		t.Fatal(err)
	}
	keep, skipped, err := FitExtents(tl, extents)
	if err != nil {
		t.Fatalf("FitExtents: %v", err)
	}
	for _, n := range skipped {
		t.Logf("%s", n)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for _, e := range keep {
		if _, err := io.Copy(io.NewOffsetWriter(out, e.Offset), io.NewSectionReader(in, e.Offset, e.Length)); err != nil {
			t.Fatalf("copy extent at %d: %v", e.Offset, err)
		}
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
	return nil
}

// sumRange returns the SHA-256 of length bytes of path at off.
func sumRange(t *testing.T, path string, off, length int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, length)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sfdiskDump is `sfdisk --dump` with the device name replaced by DEV.
func sfdiskDump(t *testing.T, dev string) string {
	t.Helper()
	return strings.ReplaceAll(run(t, "", "sfdisk", "--dump", dev), dev, "DEV")
}

// sgdiskPrint is `sgdisk -p` plus `sgdisk -i N` for every partition, with
// the device name replaced by DEV.
func sgdiskPrint(t *testing.T, dev string, parts []int) string {
	t.Helper()
	s := run(t, "", "sgdisk", "-p", dev)
	for _, n := range parts {
		s += run(t, "", "sgdisk", "-i", strconv.Itoa(n), dev)
	}
	return strings.ReplaceAll(s, dev, "DEV")
}

// sgdiskVerify fails the test unless `sgdisk -v` finds no problem.
func sgdiskVerify(t *testing.T, dev string) {
	t.Helper()
	out := run(t, "", "sgdisk", "-v", dev)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s reports problems:\n%s", dev, out)
	}
}

// diffLines returns the lines of got and want that differ, for messages.
func diffLines(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	for i := 0; i < max(len(g), len(w)); i++ {
		var a, c string
		if i < len(g) {
			a = g[i]
		}
		if i < len(w) {
			c = w[i]
		}
		if a != c {
			b.WriteString("  got:  " + a + "\n  want: " + c + "\n")
		}
	}
	return b.String()
}
