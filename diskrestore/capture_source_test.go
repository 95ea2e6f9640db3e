package diskrestore

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// A loop device with ext4 mounted read-write is refused as a capture
// source; the error names the device and the mount and says what to do:
// remount read-only, boot the rescue medium ("Capture this machine",
// rewind.action=capture), or capture a snapshot of the volume.
func TestCheckCaptureSourceExplains(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mount", "umount")
	img := newImage(t, "disk.img", 32*MiB)
	run(t, "", "mkfs.ext4", "-q", "-F", img)
	if err := CheckCaptureSource(img); err != nil {
		t.Errorf("CheckCaptureSource(regular file %s): %v", img, err)
	}
	dev := testdisk.Loop(t, img, 512)
	if err := CheckCaptureSource(dev); err != nil {
		t.Errorf("CheckCaptureSource(%s), not mounted: %v", dev, err)
	}
	mnt := mountAt(t, dev)
	err := CheckCaptureSource(dev)
	if err == nil {
		t.Fatalf("CheckCaptureSource(%s) mounted read-write on %s: got nil, want a refusal", dev, mnt)
	}
	for _, want := range []string{dev + " on " + mnt, "read-write", "mount -o remount,ro " + mnt, `"Capture this machine"`, "rewind.action=capture", "LVM or file-system snapshot"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckCaptureSource(%s) mounted on %s: got %q, want it to say %q", dev, mnt, err, want)
		}
	}
	run(t, "", "mount", "-o", "remount,ro", mnt)
	if err := CheckCaptureSource(dev); err != nil {
		t.Errorf("CheckCaptureSource(%s) mounted read-only: %v", dev, err)
	}
}

// An open refused with EPERM, EACCES or EBUSY is explained: the device,
// its mount, the cause and what to do, still wrapping the errno. The
// errors are made here: EACCES comes for real in the CLI test (a user
// other than root); EPERM needs a device cgroup or a security module and
// EBUSY another program holding the disk with O_EXCL, which this test
// does not set up (the text names the same device and mount).
func TestExplainOpenError(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mount", "umount")
	img := newImage(t, "disk.img", 32*MiB)
	run(t, "", "mkfs.ext4", "-q", "-F", img)
	dev := testdisk.Loop(t, img, 512)
	mnt := mountAt(t, dev)
	advice := []string{`"Capture this machine"`, "rewind.action=capture", "LVM or file-system snapshot"}
	for _, tc := range []struct {
		path  string
		errno syscall.Errno
		want  []string // nil: returned unchanged
	}{
		{dev, syscall.EPERM, append([]string{"cannot read " + dev, dev + " on " + mnt, "operation not permitted", "while it is in use"}, advice...)},
		{dev, syscall.EACCES, append([]string{"cannot read " + dev, dev + " on " + mnt, "permission denied", "as root"}, advice...)},
		{dev, syscall.EBUSY, append([]string{"cannot read " + dev, dev + " on " + mnt, "busy", "exclusively"}, advice...)},
		{dev, syscall.EIO, nil},
		{img, syscall.EPERM, nil},
	} {
		open := &fs.PathError{Op: "open", Path: tc.path, Err: tc.errno}
		got := ExplainOpenError(tc.path, open)
		if !errors.Is(got, tc.errno) {
			t.Errorf("ExplainOpenError(%s, %v): got %v, which no longer wraps %v", tc.path, tc.errno, got, tc.errno)
		}
		if tc.want == nil {
			if got != error(open) {
				t.Errorf("ExplainOpenError(%s, %v): got %q, want the error unchanged", tc.path, tc.errno, got)
			}
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got.Error(), w) {
				t.Errorf("ExplainOpenError(%s, %v): got %q, want it to say %q", tc.path, tc.errno, got, w)
			}
		}
	}
}
