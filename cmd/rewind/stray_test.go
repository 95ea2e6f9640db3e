package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// TestCLICaptureStrayAreas captures a used disk whose space outside the
// partitions holds old random bytes: the gap before the first partition
// (where boot loaders live) comes back byte for byte, the bytes after the
// last partition are not stored and read as zeros on a used target, and
// the summary says so; with --raw they come back too.
func TestCLICaptureStrayAreas(t *testing.T) {
	dir := t.TempDir()
	src := makeUsedSource(t, dir)
	orig, err := os.ReadFile(src.path)
	if err != nil {
		t.Fatal(err)
	}
	last := src.offsets[len(src.offsets)-1] + src.parts[len(src.parts)-1].Size
	tail := src.size - 33*512 // the backup GPT
	if bytes.Count(orig[last:tail], []byte{0}) == int(tail-last) {
		t.Fatal("fixture: the space after the last partition holds no old bytes")
	}
	for _, tt := range []struct {
		name      string
		flags     []string
		wantTail  []byte
		wantNote  bool
		wantStore bool
	}{
		{"default", nil, make([]byte, tail-last), true, false},
		{"raw", []string{"--raw"}, orig[last:tail], false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := filepath.Join(dir, "snap-"+tt.name)
			code, out := rewind(t, append([]string{"capture", src.path, "-o", snap, "--progress", "none"}, tt.flags...)...)
			if code != 0 {
				t.Fatalf("capture: %s", out)
			}
			if got := strings.Contains(out, "outside every partition"); got != tt.wantNote {
				t.Errorf("capture summary mentions the bytes outside the partitions: %v, want %v:\n%s", got, tt.wantNote, out)
			}
			img := filepath.Join(dir, "target-"+tt.name+".img")
			if err := os.WriteFile(img, testdisk.RandomBytes(99, int(src.size)), 0o644); err != nil {
				t.Fatal(err)
			}
			if code, out := rewind(t, "restore", snap, img, "--yes", "--progress", "none"); code != 0 {
				t.Fatalf("restore: %s", out)
			}
			got, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if first := src.offsets[0]; !bytes.Equal(got[34*512:first], orig[34*512:first]) {
				t.Errorf("the gap before the first partition (bytes %d..%d) differs from the source's", 34*512, first)
			}
			if !bytes.Equal(got[last:tail], tt.wantTail) {
				t.Errorf("bytes %d..%d after the last partition: stored %v, want the %s", last, tail, tt.wantStore,
					map[bool]string{true: "source's bytes", false: "zeros"}[tt.wantStore])
			}
		})
	}
}
