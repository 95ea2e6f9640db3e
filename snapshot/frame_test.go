package snapshot

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func frameInputs() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 5<<20+123)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("Rewind restores machines. "), 200000)
	return map[string][]byte{
		"zeros 4MiB":        make([]byte, 4<<20),
		"random 5MiB+123":   random,
		"text 5.2MB":        text,
		"one byte":          {42},
		"mixed 8MiB blocks": append(append([]byte{}, text[:4<<20]...), random[:4<<20]...),
	}
}

// The frames Rewind writes must be readable by the reference lz4 tool.
func TestEncodeFrameReadByLZ4Tool(t *testing.T) {
	lz4Tool, err := exec.LookPath("lz4")
	if err != nil {
		t.Skip("lz4 command not installed (scripts/setup.sh installs it)")
	}
	var enc Encoder
	for name, raw := range frameInputs() {
		frame, err := enc.EncodeFrame(nil, raw)
		if err != nil {
			t.Fatalf("%s: encode: %v", name, err)
		}
		if int64(len(frame)) > lz4FrameBound(int64(len(raw))) || len(frame) > FrameBound(len(raw)) {
			t.Errorf("%s: frame of %d bytes exceeds bound", name, len(frame))
		}
		cmd := exec.Command(lz4Tool, "-dc")
		cmd.Stdin = bytes.NewReader(frame)
		got, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: lz4 -dc: %v", name, err)
		}
		if !bytes.Equal(got, raw) {
			t.Errorf("%s: lz4 -dc gave %d bytes, want the %d raw bytes", name, len(got), len(raw))
		}
		back := make([]byte, len(raw))
		if err := DecodeFrame(back, frame); err != nil {
			t.Fatalf("%s: DecodeFrame: %v", name, err)
		}
		if !bytes.Equal(back, raw) {
			t.Errorf("%s: DecodeFrame did not give back the raw bytes", name)
		}
	}
}

// Frames written by the reference tool (with checksums, several block sizes)
// must decode too, so snapshots repacked with stock tools stay readable.
func TestDecodeFrameFromLZ4Tool(t *testing.T) {
	lz4Tool, err := exec.LookPath("lz4")
	if err != nil {
		t.Skip("lz4 command not installed (scripts/setup.sh installs it)")
	}
	dir := t.TempDir()
	for name, raw := range frameInputs() {
		for _, flags := range [][]string{{"-1", "-B7", "--content-size"}, {"-9", "-B4", "-BX", "-BD"}, {"-1", "-B5", "--no-frame-crc"}} {
			in := filepath.Join(dir, "in")
			if err := os.WriteFile(in, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			frame, err := exec.Command(lz4Tool, append(append([]string{"-c", "-q"}, flags...), in)...).Output()
			if err != nil {
				t.Fatalf("%s %v: lz4: %v", name, flags, err)
			}
			back := make([]byte, len(raw))
			err = DecodeFrame(back, frame)
			if flags[len(flags)-1] == "-BD" {
				// Multi-block frames with linked blocks are refused; a
				// one-block frame has no dependency and may decode.
				if err == nil && len(raw) > 64<<10 {
					t.Errorf("%s %v: dependent blocks decoded without error", name, flags)
				}
				if err != nil {
					continue
				}
			}
			if err != nil {
				t.Fatalf("%s %v: DecodeFrame: %v", name, flags, err)
			}
			if !bytes.Equal(back, raw) {
				t.Errorf("%s %v: wrong bytes", name, flags)
			}
		}
	}
}

func TestDecodeFrameRejectsDamage(t *testing.T) {
	var enc Encoder
	raw := bytes.Repeat([]byte("abcdefgh"), 1<<16)
	frame, err := enc.EncodeFrame(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		frame []byte
		size  int
	}{
		{"truncated", frame[:len(frame)/2], len(raw)},
		{"no end mark", frame[:len(frame)-4], len(raw)},
		{"trailing bytes", append(append([]byte{}, frame...), 1, 2, 3), len(raw)},
		{"wrong size", frame, len(raw) - 1},
		{"bad magic", append([]byte{0, 0, 0, 0}, frame[4:]...), len(raw)},
		{"empty", nil, len(raw)},
	}
	for _, tt := range tests {
		if err := DecodeFrame(make([]byte, tt.size), tt.frame); err == nil {
			t.Errorf("%s: DecodeFrame accepted a damaged frame", tt.name)
		}
	}
}
