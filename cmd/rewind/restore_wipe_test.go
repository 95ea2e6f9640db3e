package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// gptImage writes a 32 MiB GPT image (sgdisk) with one partition of
// random bytes.
func gptImage(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(path, 32<<20)
	if out, err := exec.Command("sgdisk", "-n", "1:2048:+10M", "-t", "1:8300", path).CombinedOutput(); err != nil {
		t.Skipf("sgdisk: %v %s", err, out)
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt(testdisk.RandomBytes(8, 10<<20), 1<<20)
	f.Close()
}

// A snapshot whose layout the target refuses leaves an existing image
// file as it was: everything is checked before the file is opened.
func TestCLIRefusedLayoutLeavesImageUntouched(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptImage(t, src)
	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("capture: %s", out)
	}
	// An unsigned manifest whose partition type is not a GUID: the table
	// cannot be encoded.
	mf := filepath.Join(snap, "manifest.json")
	b, _ := os.ReadFile(mf)
	b2 := strings.Replace(string(b), "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "NOT-A-GUID-AT-ALL-0000-000000000000", 1)
	if b2 == string(b) {
		t.Fatalf("manifest has no partition type to damage:\n%s", b)
	}
	os.WriteFile(mf, []byte(b2), 0o644)

	target := filepath.Join(dir, "old.img")
	old := testdisk.RandomBytes(9, 8<<20)
	os.WriteFile(target, old, 0o644)
	code, out := rewind(t, "restore", snap, target, "--yes", "--progress", "none")
	if code == 0 {
		t.Fatalf("restore of a manifest with a damaged partition type succeeded:\n%s", out)
	}
	if !strings.Contains(out, "partition 1") {
		t.Errorf("restore error does not name the partition:\n%s", out)
	}
	if got, _ := os.ReadFile(target); string(got) != string(old) {
		t.Errorf("%s was changed (%d bytes now, %d before) by a restore that was refused", target, len(got), len(old))
	}
}

// The summary says what became of the bytes the snapshot does not cover;
// in signatures mode it says the rest was not zeroed and names --wipe full.
// With --wipe full a loop device filled with random bytes ends up byte
// for byte the source disk.
func TestCLIRestoreSummaryNamesTheWipe(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptImage(t, src)
	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("capture: %s", out)
	}
	for _, tc := range []struct {
		wipe string
		want []string
	}{
		{"full", []string{"wipe      full:", "write-zeroes offload"}},
		{"signatures", []string{"wipe      signatures:", "--wipe full zeroes them all"}},
	} {
		used := filepath.Join(dir, "used-"+tc.wipe+".img")
		os.WriteFile(used, testdisk.RandomBytes(10, 32<<20), 0o644)
		dev := testdisk.Loop(t, used, 0)
		code, out := rewind(t, "restore", snap, dev, "--yes", "--progress", "none", "--wipe", tc.wipe)
		if code != 0 {
			t.Fatalf("restore --wipe %s onto %s: %s", tc.wipe, dev, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("restore --wipe %s summary lacks %q:\n%s", tc.wipe, w, out)
			}
		}
		// Full: the device filled with random bytes now equals the source.
		if tc.wipe == "full" {
			if out, err := exec.Command("cmp", src, dev).CombinedOutput(); err != nil {
				t.Errorf("after rewind restore --wipe full, cmp %s %s: %s", src, dev, out)
			}
		}
	}
	if code, out := rewind(t, "restore", snap, filepath.Join(dir, "x.img"), "--wipe", "most"); code != 2 || !strings.Contains(out, `wipe "most"`) {
		t.Errorf("restore --wipe most: exit %d, %q; want a usage error naming the value", code, out)
	}
}
