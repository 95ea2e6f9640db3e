package rescue

import (
	"context"
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
	// journal says are on the target already, and the partition table,
	// written by the interrupted run, is checked but not written again.
	// A failure still clears it.
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
// anything is written), write the partition table, stream the extents
// that fit, flush, and tell the kernel. A failure after the table was
// written clears the table again, so a half-restored disk cannot boot.
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
	var skip func(int) bool
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
		skip = skipOutside(m, keep)
		wo.Logf = func(string, ...any) {} // the notes are in a.Notes already
		if !opts.Resume {
			if err := diskrestore.WriteLayout(target, l, wo); err != nil {
				return a, fmt.Errorf("write the %s partition table: %w", l.Table, err)
			}
			a.LayoutWritten = true
		}
		for _, n := range a.Notes {
			logf("layout: %s", n)
		}
	} else if need := m.RequiredSize(); g.Size < need {
		return a, fmt.Errorf("target %s holds %s but the snapshot needs %s: choose a larger disk",
			target.Name(), units.Bytes(g.Size), units.Bytes(need))
	}

	if opts.Skip != nil {
		outside := skip
		skip = func(i int) bool { return opts.Skip(i) || outside != nil && outside(i) }
	}
	a.Restore, err = restore.Run(ctx, snap, target, restore.Options{
		Jobs: opts.Jobs, FreshTarget: opts.FreshTarget, Delta: opts.Delta, Progress: opts.Progress, Log: opts.Log, Skip: skip,
		Checkpoint: opts.Checkpoint, CheckpointInterval: opts.CheckpointInterval,
	})
	if err != nil {
		if g.BlockDevice || a.LayoutWritten || opts.Resume {
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
