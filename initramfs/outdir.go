package initramfs

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CheckOutDir makes sure media of about need bytes can be written to
// dir before any work is done: it creates dir if needed, writes and
// removes a small file, and compares need with the free space. Each
// failure names the directory and the cause.
func CheckOutDir(dir string, need int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("output directory %s cannot be created: %w", dir, err)
	}
	probe := filepath.Join(dir, ".rewind-write-test")
	if err := os.WriteFile(probe, []byte("rewind\n"), 0o644); err != nil {
		return fmt.Errorf("output directory %s is not writable: %w; choose another directory or fix its permissions", dir, err)
	}
	if err := os.Remove(probe); err != nil {
		return fmt.Errorf("output directory %s: a test file could be written but not removed: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("output directory %s: cannot read its free space: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return fmt.Errorf("output directory %s has %d MiB free but the media need about %d MiB; free some space or choose another directory",
			dir, free>>20, (need+1<<20-1)>>20)
	}
	return nil
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}
