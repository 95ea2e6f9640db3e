package diskrestore

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestPrepareCapture: a GPT disk over old random data with an ext4
// partition and 7 MiB of stray bytes after it. PrepareCapture, the one
// sequence the host CLI and the rescue capture share, must record the
// ext4 used-blocks with dumpe2fs's free blocks, drop the stray bytes with a
// note, and arm a Recheck that fails once the file system is written;
// with raw it reads no map, keeps the stray bytes and notes --raw.
func TestPrepareCapture(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	img := testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 41)
	disk := filepath.Join(dir, "disk.img")
	off := testdisk.GPTDisk(t, disk, 32*mib, 40, img)[0]

	for _, tc := range []struct {
		name        string
		raw         bool
		wantCapture string // of partition 1
		wantNote    string // of partition 1
		wantStray   bool   // a boot area after the partition is kept
		wantLayout  string // in the layout's notes ("" none)
	}{
		{"used blocks", false, snapshot.CaptureUsed, "", false, "not stored: 7.0 MiB"},
		{"raw", true, "", NoteRaw, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			copyFile(t, disk, path)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			opts, err := PrepareCapture(f, 32*mib, 0, tc.raw)
			if err != nil {
				t.Fatalf("PrepareCapture(%s, raw %v): %v", path, tc.raw, err)
			}
			if opts.DiskSize != 32*mib || opts.Layout == nil || opts.Layout.Table != "gpt" {
				t.Fatalf("PrepareCapture(%s): disk size %d, layout %+v; want 32 MiB and the GPT", path, opts.DiskSize, opts.Layout)
			}
			stray := false
			for i, e := range opts.Extents {
				switch {
				case e.Kind == snapshot.ExtentBootArea && e.Offset > off:
					stray = true
				case e.Partition == 1:
					if e.Capture != tc.wantCapture || e.Note != tc.wantNote || e.FS != "ext4" {
						t.Errorf("partition 1 of %s: fs %q capture %q note %q; want ext4, capture %q, note %q", path, e.FS, e.Capture, e.Note, tc.wantCapture, tc.wantNote)
					}
					var want []snapshot.Range
					if !tc.raw {
						want = extFree(t, img.Path, off)
					}
					if !rangesEqual(opts.Free[i], want) {
						t.Errorf("partition 1 of %s: %d free ranges, want %d (dumpe2fs's)", path, len(opts.Free[i]), len(want))
					}
				}
			}
			if stray != tc.wantStray {
				t.Errorf("%s: stray boot area after partition 1 kept: %v, want %v", path, stray, tc.wantStray)
			}
			notes := strings.Join(opts.Layout.Notes, "\n")
			if tc.wantLayout != "" && !strings.Contains(notes, tc.wantLayout) || tc.wantLayout == "" && strings.Contains(notes, "not stored") {
				t.Errorf("%s: layout notes %q; want %q", path, notes, tc.wantLayout)
			}
			if opts.Recheck == nil {
				t.Fatalf("%s: no Recheck", path)
			}
			if err := opts.Recheck(); err != nil {
				t.Errorf("Recheck of %s, not written since: %v", path, err)
			}
			if tc.raw {
				return
			}
			// Another process writes a file into the ext4 (at its byte
			// offset in the disk image, through a copy of the partition).
			part := filepath.Join(t.TempDir(), "part.img")
			b, _ := os.ReadFile(path)
			os.WriteFile(part, b[off:off+24*mib], 0o644)
			data := filepath.Join(t.TempDir(), "new.bin")
			os.WriteFile(data, testdisk.RandomBytes(42, 2*mib), 0o644)
			if out, err := exec.Command("debugfs", "-w", "-R", "write "+data+" new.bin", part).CombinedOutput(); err != nil {
				t.Fatalf("debugfs write: %v\n%s", err, out)
			}
			p, _ := os.ReadFile(part)
			w, _ := os.OpenFile(path, os.O_WRONLY, 0)
			w.WriteAt(p, off)
			w.Close()
			err = opts.Recheck()
			for _, want := range []string{"in use now", "capture from a disk nothing writes to"} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Recheck of %s after a 2 MiB file was written into its ext4: %v; want an error saying %q", path, err, want)
				}
			}
		})
	}
}

// TestPrepareCaptureRefusal: an ext4 that needs recovery is refused with
// an error naming the source, the partition, and that nothing was written.
func TestPrepareCaptureRefusal(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	img := testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 43)
	if out, err := exec.Command("debugfs", "-w", "-R", "feature needs_recovery", img.Path).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	disk := filepath.Join(dir, "disk.img")
	testdisk.GPTDisk(t, disk, 32*mib, 44, img)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = PrepareCapture(f, 32*mib, 0, false)
	for _, want := range []string{disk, "nothing was written", "partition 1", "needs_recovery"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("PrepareCapture of %s with an ext4 needing recovery: %v; want an error naming %q", disk, err, want)
		}
	}
	if _, err := PrepareCapture(f, 32*mib, 0, true); err != nil {
		t.Errorf("PrepareCapture of %s with raw: %v; want it accepted", disk, err)
	}
}
