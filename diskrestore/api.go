// Package diskrestore reads a disk's partition layout, recreates it on
// another disk (GPT/MBR, disk GUID, MBR signature, boot areas), and picks
// and guards the target disk of a restore.
//
// The order of a restore is: CheckNotMounted (or SelectTarget), then
// WriteLayout, which writes only table sectors, then the snapshot's
// extents (FitExtents says which), which bring back partitions and boot
// areas. docs/disk-layouts.md describes the choices made.
package diskrestore

import "errors"

// ErrNotImplemented marks API that is still being built.
var ErrNotImplemented = errors.New("diskrestore: not implemented yet")

// CheckNotMounted refuses a block device that is mounted or has mounted
// partitions or holders. Regular files pass.
func CheckNotMounted(path string) error {
	return ErrNotImplemented
}
