// Package machine applies a snapshot to a machine's disk: the one sequence
// the host CLI (rewind restore) and the rescue boot flow share. Check the
// layout fits, clear the old table and signatures, stream the data, zero
// what the snapshot does not cover, and write the partition table last.
package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// ApplyOptions controls Apply.
type ApplyOptions struct {
	GrowLast    bool // on a larger disk, extend the last partition
	FreshTarget bool // the target is a new sparse image file
	Delta       bool // write only the chunks whose bytes differ on the target
	Jobs        int
	Progress    func(restore.Progress)
	Log         func(msg string, args ...any) // notes and retries; may be nil
	// Resume continues an interrupted restore: Skip names the chunks a
	// journal says are on the target already. The partition table is
	// written again (the interrupted run may have cleared it on its way
	// out), and the chunks on the sectors that clearing and rewriting a
	// table touch are restored again whatever Skip says.
	Resume bool
	Skip   func(index int) bool
	// Checkpoint and CheckpointInterval are passed to restore.Options: the
	// chunks on the target after a flush, for a resume journal.
	Checkpoint         func(done []bool) error
	CheckpointInterval time.Duration
}

// Applied says what Apply did, for summaries and reports.
type Applied struct {
	Table         string   // "gpt", "mbr" or "none"
	Partitions    int      // partitions written
	LayoutWritten bool     // the partition table was written
	TableCleared  bool     // after a failure, the table was cleared again
	Notes         []string // for the operator: moved backup GPT, grown or skipped areas
	Restore       *restore.Result
}

// Apply restores snap onto target, the one sequence the host CLI and the
// rescue environment share: check that the layout fits the target (before
// anything is written), write the partition table (which tells the
// kernel), then stream the extents that fit; restore.Run flushes. A
// failure after something was written clears the table again, so a
// half-restored disk cannot boot; a resume journal stays valid, because a
// resumed run writes the table and those sectors again.
func Apply(ctx context.Context, snap *snapshot.Snapshot, target *os.File, opts ApplyOptions) (*Applied, error) {
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			opts.Log(fmt.Sprintf(format, args...))
		}
	}
	m := snap.Manifest
	g, err := diskrestore.GeometryOf(target)
	if err != nil {
		return nil, err
	}
	a := &Applied{Table: "none"}
	var exclude func(int) bool
	if l := m.Layout; l != nil && l.Table != "none" {
		a.Table, a.Partitions = l.Table, len(l.Partitions)
		wo := diskrestore.WriteOptions{GrowLast: opts.GrowLast}
		tl, notes, err := diskrestore.TargetLayout(l, g.Size, g.LogicalSectorSize, wo)
		if err != nil {
			return a, fmt.Errorf("%s: %w", target.Name(), err)
		}
		keep, dropped, err := diskrestore.FitExtents(tl, m.Extents)
		if err != nil {
			return a, fmt.Errorf("%s: %w", target.Name(), err)
		}
		a.Notes = append(notes, dropped...)
		exclude = skipOutside(m, keep)
		wo.Logf = func(string, ...any) {} // the notes are in a.Notes already
		if err := diskrestore.WriteLayout(target, l, wo); err != nil {
			return a, fmt.Errorf("write the %s partition table: %w", l.Table, err)
		}
		a.LayoutWritten = true
		for _, n := range a.Notes {
			logf("layout: %s", n)
		}
	} else if need := m.RequiredSize(); g.Size < need {
		return a, fmt.Errorf("target %s holds %s but the snapshot needs %s: choose a larger disk",
			target.Name(), units.Bytes(g.Size), units.Bytes(need))
	}

	skip := opts.Skip
	if opts.Resume && skip != nil {
		redo := tableAreaChunks(m, g.Size, sectorSize(m, g))
		skip = func(i int) bool { return opts.Skip(i) && !redo[i] }
	}
	a.Restore, err = restore.Run(ctx, snap, target, restore.Options{
		Jobs: opts.Jobs, FreshTarget: opts.FreshTarget, Delta: opts.Delta, Progress: opts.Progress, Log: opts.Log,
		Skip: skip, Exclude: exclude,
		Checkpoint: opts.Checkpoint, CheckpointInterval: opts.CheckpointInterval,
	})
	if err != nil {
		wrote := a.LayoutWritten || opts.Resume || errors.Is(err, restore.ErrWrite) ||
			a.Restore != nil && a.Restore.BytesWritten+a.Restore.BytesZeroed > 0
		if wrote && (g.BlockDevice || a.LayoutWritten) {
			if cerr := diskrestore.ClearTable(target); cerr != nil {
				err = fmt.Errorf("%w; clearing the partition table of %s also failed (%v): do not boot from this disk", err, target.Name(), cerr)
			} else {
				target.Sync()
				a.TableCleared = true
				err = fmt.Errorf("%w; the partition table of %s was cleared so the half-restored disk cannot boot", err, target.Name())
			}
		}
		return a, err
	}
	return a, nil
}

// sectorSize is the logical sector size that table areas are counted in.
func sectorSize(m *snapshot.Manifest, g diskrestore.Geometry) int64 {
	switch {
	case g.LogicalSectorSize > 0:
		return int64(g.LogicalSectorSize)
	case m.Layout != nil && m.Layout.LogicalSectorSize > 0:
		return int64(m.Layout.LogicalSectorSize)
	}
	return 512
}

// tableAreaChunks marks the chunks that touch the sectors ClearTable zeroes
// (the first 34 and the last 33 logical sectors), which also hold every
// stale header WriteLayout zeroes: a resumed restore writes them again.
func tableAreaChunks(m *snapshot.Manifest, size, ss int64) map[int]bool {
	head, tail := diskrestore.ClearedSpans(size, ss)
	redo := make(map[int]bool)
	for i, c := range m.Chunks {
		end := c.Offset + c.Length
		if c.Offset < head || end > tail {
			redo[i] = true
		}
	}
	return redo
}

// skipOutside returns a Skip function for the chunks that lie in none of
// the extents kept; nil when every extent is kept.
func skipOutside(m *snapshot.Manifest, keep []snapshot.Extent) func(int) bool {
	if len(keep) == len(m.Extents) {
		return nil
	}
	skipped := make(map[int]bool)
	for i, c := range m.Chunks {
		in := false
		for _, e := range keep {
			if c.Offset >= e.Offset && c.Offset+c.Length <= e.Offset+e.Length {
				in = true
				break
			}
		}
		if !in {
			skipped[i] = true
		}
	}
	return func(i int) bool { return skipped[i] }
}
