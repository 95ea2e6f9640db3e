package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIRefusesUnknownSchemes: every command that takes a snapshot
// location refuses a scheme Rewind does not handle, exits non-zero, names
// the scheme, and leaves no directory named after it (capture -o
// s3:lab/pc1 once wrote ./s3:lab).
func TestCLIRefusesUnknownSchemes(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte{7}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := [][]string{
		{"capture", img, "-o", "s3:lab/pc1", "--progress", "none"},
		{"capture", img, "-o", "S3://lab/pc1", "--progress", "none"},
		{"capture", img, "-o", "ftp://lab/pc1", "--progress", "none"},
		{"restore", "gs://lab/pc1", filepath.Join(dir, "out.img")},
		{"verify", "s3:lab/pc1"},
		{"inspect", "s3:/lab/pc1"},
	}
	for _, args := range tests {
		cmd := exec.Command(rewindBin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("rewind %s: exit 0, want a refusal\n%s", strings.Join(args, " "), out)
			continue
		}
		if !strings.Contains(string(out), "is not a scheme Rewind handles") && !strings.Contains(string(out), "not a valid s3:// location") {
			t.Errorf("rewind %s: %s\nwant it to say the scheme is not handled", strings.Join(args, " "), out)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "disk.img" {
			t.Errorf("%s was left in the working directory, want nothing but disk.img", e.Name())
		}
	}
}
