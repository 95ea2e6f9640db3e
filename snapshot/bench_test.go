package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCapture captures the image named by REWIND_BENCH_IMAGE (for
// example the corpus 'go run ./bench -keep' leaves in out/bench).
func BenchmarkCapture(b *testing.B) {
	img := os.Getenv("REWIND_BENCH_IMAGE")
	if img == "" {
		b.Skip("set REWIND_BENCH_IMAGE to a disk image")
	}
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b.SetBytes(fi.Size())
	for i := 0; b.Loop(); i++ {
		dir := filepath.Join(b.TempDir(), "snap")
		if _, err := Capture(context.Background(), f, dir, CaptureOptions{DiskSize: fi.Size()}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeDecodeFrame(b *testing.B) {
	for name, raw := range frameInputs() {
		if len(raw) < 4<<20 {
			continue
		}
		raw = raw[:4<<20]
		var enc Encoder
		frame, _ := enc.EncodeFrame(nil, raw)
		b.Run("encode "+name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			buf := make([]byte, 0, FrameBound(len(raw)))
			for b.Loop() {
				enc.EncodeFrame(buf[:0], raw)
			}
		})
		b.Run("decode "+name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			dst := make([]byte, len(raw))
			for b.Loop() {
				if err := DecodeFrame(dst, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
