package testdisk

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Loop attaches path to a loop device with sectorSize-byte logical sectors
// (0: the default, 512) and detaches it when the test ends, first removing
// any partitions the kernel added (BLKPG), which would outlive the device.
// It skips the test without root or loop devices.
func Loop(t testing.TB, path string, sectorSize int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	args := []string{"-f", "--show", path}
	if sectorSize != 0 {
		args = append([]string{"--sector-size", strconv.Itoa(sectorSize)}, args...)
	}
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup %s failed (no loop devices here?): %v: %s", strings.Join(args, " "), err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		exec.Command("partx", "-d", dev).Run()
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
