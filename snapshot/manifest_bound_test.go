package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCaptureRefusesManifestRestoreCannotRead: a capture whose manifest
// would be larger than the MaxManifestSize a restore reads (a 256 GiB
// disk in 64 KiB chunks: 4 million chunks of about 300 bytes of JSON
// each; a 16 TB disk in the default 4 MiB chunks is as many) is refused
// before it reads a byte, with an error that names the chunk size to use.
// It used to run to the end and report success for a snapshot whose
// manifest restore refuses to read.
func TestCaptureRefusesManifestRestoreCannotRead(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.img")
	const size = 256 << 30
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Skipf("no sparse 256 GiB file here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := false
	_, err = Capture(ctx, f, filepath.Join(dir, "snap"), CaptureOptions{
		DiskSize: size, ChunkSize: MinChunkSize, Jobs: 2,
		Progress: func(done, total int64) {
			started = true
			cancel() // the test need not wait for 4 million chunks
		},
	})
	if started || err == nil {
		t.Fatalf("capture of %s (%d chunks of %d bytes): started %v, error %v; want it refused before reading, naming a larger chunk size",
			src, size/MinChunkSize, MinChunkSize, started, err)
	}
	for _, want := range []string{"larger chunk size", "nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("capture of %s: error %q does not say %q", src, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "snap")); !os.IsNotExist(err) {
		t.Errorf("refused capture left %s/snap (stat: %v); want nothing written", dir, err)
	}
}

// TestManifestBoundHolds: the bound capture checks before reading is at
// least the size of the manifest it writes, for a used-block capture
// with many unused ranges and small segments.
func TestManifestBoundHolds(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var free []Range
	for off := int64(128 << 10); off+64<<10 < size; off += 192 << 10 {
		free = append(free, Range{Offset: off, Length: 64 << 10})
	}
	opts := CaptureOptions{DiskSize: size, ChunkSize: MinChunkSize, SegmentSize: 256 << 10, Jobs: 2,
		Extents: []Extent{{Kind: ExtentDisk, Length: size, FS: "test", Capture: CaptureUsed}}, Free: [][]Range{free}}
	if err := opts.defaults(); err != nil {
		t.Fatal(err)
	}
	extents, _, err := applyFree(&opts)
	if err != nil {
		t.Fatal(err)
	}
	probe := &Manifest{Format: FormatName, Version: FormatVersion, DiskSize: size, ChunkSize: opts.ChunkSize, SegmentSize: opts.SegmentSize,
		Compression: "lz4-frame", Hash: "sha256", Extents: extents, Origin: Origin{Path: src}}
	probe.Chunks = cutChunks(extents, opts.ChunkSize)
	bound, err := probe.manifestBound()
	if err != nil {
		t.Fatal(err)
	}
	opts.Origin = Origin{Path: src}
	if _, err := Capture(context.Background(), f, filepath.Join(dir, "snap"), opts); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(filepath.Join(dir, "snap", ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(written)) > bound {
		t.Errorf("manifest of %s: %d bytes written, bound %d; want the bound at least the size", src, len(written), bound)
	}
	t.Logf("%d chunks, %d unused ranges: manifest %d bytes, bound %d", len(probe.Chunks), probe.unusedCount(), len(written), bound)
}

// TestCaptureRecheckFailsWithoutManifest: when the recheck after the
// data says the source changed (a file system written while captured),
// the capture fails and writes no manifest: no snapshot claims data that
// was stored as free.
func TestCaptureRecheckFailsWithoutManifest(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, []byte(strings.Repeat("x", 1<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap := filepath.Join(dir, "snap")
	_, err = Capture(context.Background(), f, snap, CaptureOptions{DiskSize: 1 << 20, ChunkSize: MinChunkSize,
		Recheck: func() error { return errors.New("partition 1 changed while it was captured") }})
	if err == nil || !strings.Contains(err.Error(), "changed while it was captured") {
		t.Errorf("capture of %s with a failing recheck: %v; want the recheck's error", src, err)
	}
	if _, serr := os.Stat(filepath.Join(snap, ManifestName)); !os.IsNotExist(serr) {
		t.Errorf("capture of %s with a failing recheck wrote %s (stat: %v); want no manifest", src, ManifestName, serr)
	}
}
