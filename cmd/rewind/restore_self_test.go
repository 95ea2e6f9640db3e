package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A careless target: a file of the snapshot being restored (its segment,
// its manifest, a hard link to its segment elsewhere), with and without
// --delta. The restore is refused before the file is opened, naming it as
// part of the snapshot; the snapshot stays whole (it used to be emptied
// and then blamed: "the snapshot is damaged").
func TestCLIRestoreOntoItsOwnSnapshotRefused(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptImage(t, src)
	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("capture: %s", out)
	}
	link := filepath.Join(dir, "disk.img")
	if err := os.Link(filepath.Join(snap, "data.000"), link); err != nil {
		t.Fatal(err)
	}
	sums := func() map[string][32]byte {
		m := map[string][32]byte{}
		ents, _ := os.ReadDir(snap)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(snap, e.Name()))
			m[e.Name()] = sha256.Sum256(b)
		}
		return m
	}
	before := sums()
	for _, tc := range []struct {
		name, target, names string
		args                []string
	}{
		{"segment", filepath.Join(snap, "data.000"), "data.000", nil},
		{"segment with --delta", filepath.Join(snap, "data.000"), "data.000", []string{"--delta"}},
		{"manifest", filepath.Join(snap, "manifest.json"), "manifest.json", nil},
		{"hard link to a segment", link, "data.000", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"restore", snap, tc.target, "--yes", "--progress", "none"}, tc.args...)
			code, out := rewind(t, args...)
			if code == 0 {
				t.Fatalf("restore of %s onto its own %s succeeded:\n%s", snap, tc.names, out)
			}
			if !strings.Contains(out, tc.names) || !strings.Contains(out, "is part of the snapshot") {
				t.Errorf("error does not say that %s is the snapshot's %s:\n%s", tc.target, tc.names, out)
			}
			after := sums()
			for name, sum := range before {
				if after[name] != sum {
					t.Errorf("%s/%s changed: the refused restore damaged the snapshot", snap, name)
				}
			}
		})
	}
}
