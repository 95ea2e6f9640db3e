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

// ErrNotImplemented marked API that was still being built. Nothing in this
// package returns it any more; it stays so that callers written against
// the outline keep compiling.
var ErrNotImplemented = errors.New("diskrestore: not implemented yet")
