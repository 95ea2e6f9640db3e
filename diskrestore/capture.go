package diskrestore

import (
	"fmt"
	"os"

	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/snapshot"
)

// PrepareCapture reads what a capture of the disk f needs to know before
// reading its data, the one sequence 'rewind capture' and the rescue
// environment's capture share: the partition layout (ReadLayout; sector 0
// lets it find an image file's sector size), then, unless raw, drops the
// stray areas after the first partition (StrayAreas, with a layout note
// saying how much), reads every file system's allocation map
// (UsedExtents), and sets Recheck to read the maps again once the data is
// stored (FreeChanged), so a file system written during the capture fails
// it instead of restoring with new blocks zeroed.
//
// It returns CaptureOptions with DiskSize, Layout, Extents, Free and
// Recheck filled in; the caller adds chunk and segment sizes, jobs,
// origin, signing key and progress. Its errors name f and say that
// nothing was written.
func PrepareCapture(f *os.File, size int64, sector int, raw bool) (snapshot.CaptureOptions, error) {
	opts := snapshot.CaptureOptions{DiskSize: size}
	var err error
	opts.Layout, opts.Extents, err = ReadLayout(f, size, sector)
	if err != nil {
		return snapshot.CaptureOptions{}, fmt.Errorf("read partition layout of %s: %w", f.Name(), err)
	}
	if !raw {
		var stray int64
		if opts.Extents, stray = StrayAreas(opts.Extents); stray > 0 && opts.Layout != nil {
			opts.Layout.Notes = append(opts.Layout.Notes, fmt.Sprintf(
				"not stored: %s of non-zero bytes outside every partition, after the first one begins (left by earlier use of the disk); restore zeroes them, capture --raw keeps them", units.Bytes(stray)))
		}
	}
	opts.Extents, opts.Free, err = UsedExtents(f, opts.Extents, raw)
	if err != nil {
		return snapshot.CaptureOptions{}, fmt.Errorf("capture %s refused, nothing was written: %w", f.Name(), err)
	}
	extents, free := opts.Extents, opts.Free
	opts.Recheck = func() error {
		if err := FreeChanged(f, extents, free); err != nil {
			return fmt.Errorf("%w: capture from a disk nothing writes to (unmounted everywhere, or a snapshot of the volume)", err)
		}
		return nil
	}
	return opts, nil
}
