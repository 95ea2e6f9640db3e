package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/snapshot"
)

// TestCLIInspectEscapesControls: a snapshot whose manifest carries
// terminal controls in its free text (an origin hostname and path with
// ESC sequences, an extent note with a C1 CSI, a file system name with a
// BEL, a right-to-left override that reorders what follows) is shown by
// inspect with those characters escaped, so a hostile snapshot cannot
// clear the operator's screen, retitle the terminal or disguise the text
// inspect prints after it.
func TestCLIInspectEscapesControls(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, []byte(strings.Repeat("data", 64<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap := filepath.Join(dir, "snap")
	_, err = snapshot.Capture(context.Background(), f, snap, snapshot.CaptureOptions{
		DiskSize:  256 << 10,
		ChunkSize: snapshot.MinChunkSize,
		Origin:    snapshot.Origin{Path: "/dev/sda\x1b[2J", Hostname: "pc1\x1b]0;owned\x07"},
		Extents: []snapshot.Extent{{Kind: snapshot.ExtentDisk, Length: 256 << 10,
			FS: "ext4\u202etxt.exe", Note: "bitmap \u009b2J damaged"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"inspect", snap}} {
		code, out := rewind(t, args...)
		if code != 0 {
			t.Fatalf("rewind %v: exit %d: %s", args, code, out)
		}
		for _, bad := range []string{"\x1b", "\x07", "\u009b", "\u202e"} {
			if strings.Contains(out, bad) {
				t.Errorf("rewind %v: output holds the control %q:\n%q", args, bad, out)
			}
		}
		for _, want := range []string{`pc1\x1b]0;owned\x07`, `/dev/sda\x1b[2J`, `bitmap \u009b2J damaged`, `ext4\u202etxt.exe`} {
			if !strings.Contains(out, want) {
				t.Errorf("rewind %v: output does not show %s escaped:\n%s", args, want, out)
			}
		}
	}
}
