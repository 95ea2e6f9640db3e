package restore_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// smallTmpfs mounts a tmpfs of size bytes in a temporary directory for the
// test, so that a loop device's sparse backing file on it runs out of
// space: writes to the loop device then fail in the kernel's writeback,
// reported once, by the next flush.
func smallTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "rewind-test", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// A loop device over a sparse file on a tmpfs that fills up halfway
// through: the kernel reports the lost writes once, at the first flush
// after them. Whichever flush sees the error (a checkpoint's or the final
// one), the restore fails and names the device; it never reports success
// with chunks missing.
func TestFlushErrorFailsTheRestore(t *testing.T) {
	const size = 48 << 20
	src := testdisk.RandomBytes(11, size)
	dir, _ := capture(t, writeTemp(t, src), snapshot.CaptureOptions{ChunkSize: 1 << 20})
	backing := filepath.Join(smallTmpfs(t, 16<<20), "disk.img")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	dev := testdisk.Loop(t, backing, 0)
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"checkpoint after every chunk", time.Nanosecond},
		{"no checkpoint", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			opts := restore.Options{Jobs: 2}
			checkpoints := 0
			if tc.interval > 0 {
				opts.Checkpoint = func([]bool) error { checkpoints++; return nil }
				opts.CheckpointInterval = tc.interval
			}
			res, err := restore.Run(context.Background(), snap, f, opts)
			if err == nil {
				t.Fatalf("restore onto %s (%d MiB backed by a 16 MiB tmpfs) reported success: %d chunks, %d bytes written, %d checkpoints recorded",
					dev, size>>20, res.Chunks, res.BytesWritten, checkpoints)
			}
			if !strings.Contains(err.Error(), dev) {
				t.Errorf("error %q does not name the device %s", err, dev)
			}
		})
	}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src.img")
	writeFile(t, p, data)
	return p
}
