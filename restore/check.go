package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"

	"github.com/rewind-bmr/rewind/snapshot"
)

// ErrSource is wrapped by CheckChunks when the snapshot itself could not
// be read to compare a chunk with (a version-1 snapshot has no raw hash):
// the target is not to blame.
var ErrSource = errors.New("the snapshot could not be read")

// Checked says what CheckChunks found.
type Checked struct {
	Checked int   // chunks read back from the target
	Differ  []int // of them, the chunks whose bytes are not the snapshot's, in order
}

// CheckChunks reads back from target every chunk that claimed names (a
// resume journal's chunks) and compares it with the snapshot: a chunk
// with a raw SHA-256 (format version 2) with that hash, a zero chunk with
// zeros, any other chunk with its fetched, verified and decompressed
// bytes. A chunk that cannot be read back counts as differing: writing it
// again is the cure. Reading is cheaper than writing, so nothing claimed
// is trusted unread. Up to jobs readers run at once (0: one per CPU), each
// with one chunk's buffers, fewer when memory is short (BufferSlots).
func CheckChunks(ctx context.Context, snap *snapshot.Snapshot, target io.ReaderAt, claimed func(int) bool, jobs int) (*Checked, error) {
	m := snap.Manifest
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	// One chunk buffer per reader (two for a version-1 chunk that is
	// fetched), within the memory a restore itself may use.
	perReader := m.ChunkSize
	if m.Version < 2 {
		perReader += int64(snapshot.FrameBound(int(m.ChunkSize))) + m.ChunkSize
	}
	jobs = max(1, min(jobs, snapshot.BufferSlots(jobs, perReader)/2))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	todo := make(chan int)
	go func() {
		defer close(todo)
		for i := range m.Chunks {
			if !claimed(i) {
				continue
			}
			select {
			case todo <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		mu  sync.Mutex
		res Checked
		wg  sync.WaitGroup
	)
	for range jobs {
		wg.Go(func() {
			got := make([]byte, m.ChunkSize)
			var want, frame []byte
			for i := range todo {
				c := m.Chunks[i]
				same, err := holdsChunk(ctx, snap, target, i, got[:c.Length], &want, &frame)
				if err != nil {
					cancel(err)
					return
				}
				mu.Lock()
				res.Checked++
				if !same {
					res.Differ = append(res.Differ, i)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	sort.Ints(res.Differ)
	return &res, nil
}

// holdsChunk reads chunk i back from target into got and reports whether
// it holds the snapshot's bytes. want and frame are the worker's buffers
// for a chunk that must be fetched.
func holdsChunk(ctx context.Context, snap *snapshot.Snapshot, target io.ReaderAt, i int, got []byte, want, frame *[]byte) (bool, error) {
	m := snap.Manifest
	c := m.Chunks[i]
	if n, _ := target.ReadAt(got, c.Offset); n < len(got) {
		return false, nil
	}
	switch {
	case c.Zero:
		return snapshot.IsZero(got), nil
	case c.RawSHA256 != "":
		sum := sha256.Sum256(got)
		return hex.EncodeToString(sum[:]) == c.RawSHA256, nil
	}
	if *want == nil {
		*want = make([]byte, m.ChunkSize)
		*frame = make([]byte, 0, snapshot.FrameBound(int(m.ChunkSize)))
	}
	f, err := snap.ReadFrame(ctx, i, *frame)
	if err == nil {
		err = snap.CheckFrame(i, f)
	}
	if err == nil {
		err = snapshot.DecodeFrame((*want)[:c.Length], f)
	}
	if err != nil {
		return false, fmt.Errorf("%w: chunk %d: %w", ErrSource, i, err)
	}
	return bytes.Equal(got, (*want)[:c.Length]), nil
}
