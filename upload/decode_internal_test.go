package upload

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/rewind-bmr/rewind/snapshot"
)

// The server decodes every frame it receives. It used to allocate a fresh
// frame and chunk buffer for each (2 x 4 MiB zeroed per frame: a third of
// its CPU in an upload, by perf); the buffers are now kept per decoding
// slot. A reused buffer must never leak an earlier frame's bytes into the
// raw length, zero flag or raw SHA-256 the commit checks, and decoding the
// same chunk again must not allocate it anew.
func TestDecodeReusesBuffers(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r, err := NewReceiver(root, ReceiverConfig{Token: "decode-test-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	rng := rand.New(rand.NewPCG(11, 11))
	random := make([]byte, 4<<20)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("rewind upload frame "), 3000)
	chunks := []struct {
		name string
		raw  []byte
		zero bool
	}{
		{"4 MiB random", random, false},
		{"1 MiB zeros after random data", make([]byte, 1<<20), true},
		{"60000 bytes of text", text, false},
		{"4 MiB random again", random, false},
		{"one zero byte", []byte{0}, true},
	}
	f, err := os.Create(filepath.Join(dir, "data.000"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var enc snapshot.Encoder
	off := int64(0)
	var frame4 struct{ off, n int64 }
	for _, c := range chunks {
		frame, err := enc.EncodeFrame(nil, c.raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(frame, off); err != nil {
			t.Fatal(err)
		}
		got, err := r.decode(f, off, int64(len(frame)))
		if err != nil {
			t.Fatalf("decode %s at offset %d: %v", c.name, off, err)
		}
		want := rawInfo{length: int64(len(c.raw)), sum: sha256.Sum256(c.raw), zero: c.zero}
		if got != want {
			t.Errorf("decode %s: got length %d zero %v sum %x, want length %d zero %v sum %x", c.name, got.length, got.zero, got.sum, want.length, want.zero, want.sum)
		}
		if len(c.raw) == len(random) {
			frame4.off, frame4.n = off, int64(len(frame))
		}
		off += int64(len(frame))
	}

	// Every slot has seen a 4 MiB chunk at most once here; fill them all,
	// then decoding 4 MiB chunks again must not allocate chunk buffers.
	for range cap(r.decoding) {
		if _, err := r.decode(f, frame4.off, frame4.n); err != nil {
			t.Fatal(err)
		}
	}
	const decodes = 8
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range decodes {
		if _, err := r.decode(f, frame4.off, frame4.n); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got >= 4<<20 {
		t.Errorf("%d decodes of a 4 MiB chunk allocated %d bytes, want less than one chunk (4194304): the buffers are not reused", decodes, got)
	}
}
