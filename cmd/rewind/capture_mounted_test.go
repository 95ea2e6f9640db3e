package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// A source disk whose file system is mounted read-write is refused before
// anything is read or written, naming the mount and what to do (it was
// captured silently, inconsistent); mounted read-only it is captured.
func TestCLICaptureRefusesReadWriteMountedSource(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 32<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	dev := testdisk.Loop(t, img, 0)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount %s: %v %s", dev, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	for _, tc := range []struct {
		name  string
		mount []string // mount arguments before the capture
		ok    bool
	}{
		{"read-write", nil, false},
		{"read-only", []string{"-o", "remount,ro", mnt}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.mount != nil {
				if out, err := exec.Command("mount", tc.mount...).CombinedOutput(); err != nil {
					t.Fatalf("mount %v: %v %s", tc.mount, err, out)
				}
			}
			snap := filepath.Join(dir, "snap-"+tc.name)
			code, out := rewind(t, "capture", dev, "-o", snap, "--progress", "none")
			if tc.ok {
				if code != 0 {
					t.Fatalf("capture of %s mounted read-only failed:\n%s", dev, out)
				}
				return
			}
			if code == 0 {
				t.Fatalf("capture of %s mounted read-write at %s succeeded:\n%s", dev, mnt, out)
			}
			for _, want := range []string{dev, mnt, "read-write", "remount,ro"} {
				if !strings.Contains(out, want) {
					t.Errorf("error does not say %q:\n%s", want, out)
				}
			}
			if _, err := os.Stat(snap); err == nil {
				t.Errorf("%s was created by a refused capture", snap)
			}
		})
	}
}
