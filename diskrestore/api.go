// Package diskrestore reads a disk's partition layout, recreates it on
// another disk (GPT/MBR, disk GUID, MBR signature, boot areas), and picks
// and guards the target disk of a restore.
package diskrestore

import (
	"errors"
	"io"
	"os"

	"github.com/rewind-bmr/rewind/snapshot"
)

// ErrNotImplemented marks API that is still being built.
var ErrNotImplemented = errors.New("diskrestore: not implemented yet")

// ReadLayout reads the partition table of a disk or image of size bytes and
// returns the layout to record plus the extents to capture: every partition
// and every non-zero boot area outside partitions and table sectors. A disk
// without a partition table yields Layout.Table "none" and one disk extent.
func ReadLayout(r io.ReaderAt, size int64, logicalSectorSize int) (*snapshot.Layout, []snapshot.Extent, error) {
	return nil, nil, ErrNotImplemented
}

// WriteOptions controls WriteLayout.
type WriteOptions struct {
	// GrowLast extends the last partition to the end of a larger target.
	GrowLast bool
}

// WriteLayout writes l's partition table onto target, a block device or an
// image file. It checks that l fits the target (size and logical sector
// size) before writing anything.
func WriteLayout(target *os.File, l *snapshot.Layout, opts WriteOptions) error {
	return ErrNotImplemented
}

// ClearTable destroys the partition table on target (both GPT headers and the
// MBR's table) so that a half-restored disk cannot boot.
func ClearTable(target *os.File) error {
	return ErrNotImplemented
}

// CheckNotMounted refuses a block device that is mounted or has mounted
// partitions or holders. Regular files pass.
func CheckNotMounted(path string) error {
	return ErrNotImplemented
}
