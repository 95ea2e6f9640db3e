package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// inUseDisk is a 32 MiB ext4 image on a loop device.
func inUseDisk(t *testing.T) (dir, dev string) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
	dir = t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	return dir, testdisk.Loop(t, img, 0)
}

// Capturing a disk in use says what to do instead of a bare "operation
// not permitted": boot the rescue medium and pick "Capture this machine"
// (rewind.action=capture), or capture an LVM / file-system snapshot. The
// disk holding the running system (mounted on /boot, in a private mount
// namespace) is named as such; a mounted disk that the user may not read
// (EACCES, as nobody) names the mount and says to run as root. Nothing is
// written either way.
func TestCLICaptureInUseExplains(t *testing.T) {
	dir, dev := inUseDisk(t)
	advice := []string{`"Capture this machine"`, "rewind.action=capture", "LVM or file-system snapshot"}

	t.Run("running system", func(t *testing.T) {
		snap := filepath.Join(dir, "snap-system")
		// The mount lives only in the private namespace of unshare.
		script := `mount --make-rprivate / && mount "$1" /boot && exec "$2" capture "$1" -o "$3" --progress none`
		cmd := exec.Command("unshare", "-m", "sh", "-c", script, "sh", dev, rewindBin, snap)
		code, out := runCmd(t, cmd)
		if code != 1 {
			t.Fatalf("capture of %s mounted read-write on /boot: got exit %d, want 1:\n%s", dev, code, out)
		}
		for _, want := range append([]string{dev + " holds the running system", dev + " on /boot", "read-write"}, advice...) {
			if !strings.Contains(out, want) {
				t.Errorf("capture of %s mounted on /boot: output does not say %q:\n%s", dev, want, out)
			}
		}
		if strings.Contains(out, "unmount it") {
			t.Errorf("capture of the running system's disk %s advises to unmount it:\n%s", dev, out)
		}
		if _, err := os.Stat(snap); err == nil {
			t.Errorf("%s was created by a refused capture", snap)
		}
	})

	t.Run("permission denied", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the CLI as nobody")
		}
		mnt := filepath.Join(dir, "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
			t.Skipf("mount %s: %v %s", dev, err, out)
		}
		t.Cleanup(func() { exec.Command("umount", mnt).Run() })
		// nobody needs a copy of the CLI it may execute and a place it may write.
		pub, err := os.MkdirTemp("", "rewind-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(pub) })
		if err := os.Chmod(pub, 0o777); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(pub, "rewind")
		copyFile(t, rewindBin, bin, 0o755)
		snap := filepath.Join(pub, "snap")
		cmd := exec.Command(bin, "capture", dev, "-o", snap, "--progress", "none")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		code, out := runCmd(t, cmd)
		if code != 1 {
			t.Fatalf("capture of %s as nobody: got exit %d, want 1:\n%s", dev, code, out)
		}
		for _, want := range append([]string{"cannot read " + dev, dev + " on " + mnt, "permission denied", "as root"}, advice...) {
			if !strings.Contains(out, want) {
				t.Errorf("capture of %s as nobody: output does not say %q:\n%s", dev, want, out)
			}
		}
		if _, err := os.Stat(snap); err == nil {
			t.Errorf("%s was created by a refused capture", snap)
		}
	})
}

// runCmd runs cmd and returns its exit status and combined output.
func runCmd(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return 0, out.String()
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
