package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// rewind drill --accel auto: the KVM probe's outcome is printed as the
// accel phase's note (on a host where KVM hangs: KVM is not usable, using
// TCG) before anything else runs. The medium here is not bootable, so the
// drill then fails in the rescue boot phase, naming SeaBIOS, and keeps
// its files in the directory it names.
func TestCLIDrillAccelNoteAndKeptOnFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped with -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (scripts/setup.sh)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "pc1")
	if code, out := rewind(t, "capture", img, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("rewind capture: exit %d\n%s", code, out)
	}
	medium := filepath.Join(dir, "not-a-medium.img")
	if err := os.WriteFile(medium, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := rewind(t, "drill", snap, "--check", "fs", "--medium", medium, "--timeout", "15s")
	t.Logf("rewind drill:\n%s", out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	accel := regexp.MustCompile(`(?m)^accel +ok +[0-9.]+s (KVM ran the probe guest|KVM is not usable: .*; using TCG)$`).FindStringSubmatch(out)
	if accel == nil {
		t.Fatalf("no accel line with the probe's outcome in:\n%s", out)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && !strings.Contains(accel[1], "no /dev/kvm") {
		t.Errorf("no /dev/kvm here, but the note is %q", accel[1])
	}
	if !strings.Contains(out, "failed in phase rescue boot: SeaBIOS found no bootable rescue medium") {
		t.Errorf("want the rescue boot phase and SeaBIOS's verdict named in:\n%s", out)
	}
	m := regexp.MustCompile(`\(kept in (/[^)]+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the failure names no kept directory:\n%s", out)
	}
	defer os.RemoveAll(m[1])
	for _, f := range []string{"console.log", "disk.img", "rescue-firmware.log"} {
		if _, err := os.Stat(filepath.Join(m[1], f)); err != nil {
			t.Errorf("kept directory: %v", err)
		}
	}
}
