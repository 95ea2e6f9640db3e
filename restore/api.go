// Package restore streams a snapshot onto a disk: fetch chunks from a
// random-access source, verify each chunk's hash, decompress on several
// workers and write each chunk at its offset, with bounded memory.
package restore

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
)

// Options controls Run.
type Options struct {
	Jobs     int            // decompress workers; 0 means one per CPU
	Progress func(Progress) // called periodically and once at the end; may be nil
	// FreshTarget says the target is a newly created sparse file: zero
	// chunks are left as holes instead of being written.
	FreshTarget bool
}

// Progress is a snapshot of a running restore.
type Progress struct {
	Done    int64 // raw bytes written and verified
	Total   int64 // raw bytes to restore
	Elapsed time.Duration
}

// Result summarises a finished restore.
type Result struct {
	Chunks       int
	ZeroChunks   int
	BytesWritten int64 // raw bytes written (non-zero chunks)
	BytesZeroed  int64 // raw bytes of zero chunks
	Duration     time.Duration
}

// Run restores snap onto target and flushes it before returning success.
func Run(ctx context.Context, snap *snapshot.Snapshot, target *os.File, opts Options) (*Result, error) {
	return nil, errors.New("restore: not implemented yet")
}
