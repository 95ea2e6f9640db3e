// Package restore streams a snapshot onto a disk. The pipeline has four
// stages connected by bounded channels:
//
//	fetch (read a chunk's frame from the source and verify its SHA-256)
//	  -> decompress (LZ4, on several workers)
//	  -> write (pwrite at the chunk's disk offset, out of order)
//	  -> account (progress, the first error, the resume watermark)
//
// Memory is bounded by a fixed pool of chunk buffers, whatever the size of
// the snapshot. The target is flushed before Run reports success.
package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
)

// Options controls Run and Verify.
type Options struct {
	Jobs     int            // decompress workers; 0 means one per CPU
	Progress func(Progress) // called from one goroutine as chunks complete; may be nil
	// FreshTarget says the target is a newly created sparse file: zero
	// chunks are left as holes instead of being written.
	FreshTarget bool
	// Skip lists chunks already on the target (a resumed restore): they
	// count as done for Checkpoint.
	Skip func(index int) bool
	// Exclude lists chunks not to restore at all (extents that do not fit
	// a smaller target): they are neither written nor counted as done.
	Exclude func(index int) bool
	// Delta reads each chunk's range on the target first and writes only
	// the chunks whose bytes differ (Result.BytesSkipped counts the rest).
	Delta bool
	// Log receives notices such as a re-fetched chunk; may be nil.
	Log func(msg string, args ...any)
	// Checkpoint, when set, is called from the account stage about every
	// CheckpointInterval (default 2 s) with the chunks known to be on the
	// target: done[i] is true for chunks written (or skipped) before the
	// target was flushed, never for one whose write may still be in a
	// cache. A resume journal records it. An error recording it is logged,
	// not fatal; an error flushing the target fails the restore.
	Checkpoint         func(done []bool) error
	CheckpointInterval time.Duration
}

// ErrWrite is wrapped by errors writing to the target (as opposed to
// reading the snapshot): after one, the target holds a partial restore.
var ErrWrite = errors.New("write to the target failed")

// Progress is the state of a running restore or verify.
type Progress struct {
	Done    int64 // raw bytes written (or verified) so far
	Total   int64 // raw bytes in all
	Elapsed time.Duration
	Final   bool // the last call, after the flush
}

// Result summarises a finished restore or verify.
type Result struct {
	Chunks       int    // chunks handled
	ZeroChunks   int    // of which all-zero
	BytesWritten int64  // raw bytes of non-zero chunks written
	BytesDirect  int64  // of BytesWritten, written with direct I/O, past the page cache
	BytesZeroed  int64  // raw bytes of zero chunks (holes, discards or zeros)
	BytesSkipped int64  // with Delta: raw bytes already on the target, not written
	Refetched    int    // chunks whose first read failed verification
	ZeroMethod   string // how zero chunks were zeroed (Describe); "" when none were
	Duration     time.Duration
}

// done is the raw bytes handled so far.
func (r *Result) done() int64 { return r.BytesWritten + r.BytesZeroed + r.BytesSkipped }

// Run restores snap onto target and flushes it before returning success.
// On error nothing may be assumed about the target beyond the chunks the
// error does not name; the caller decides whether to clear it.
func Run(ctx context.Context, snap *snapshot.Snapshot, target *os.File, opts Options) (*Result, error) {
	if target == nil {
		return nil, errors.New("restore: no target")
	}
	w := newWriter(target, NewZeroer(target, opts.FreshTarget))
	defer w.close()
	return run(ctx, snap, w, opts)
}

// Verify reads every chunk of snap, checks its hash and decompresses it,
// and checks that zero chunks hold zeros. It writes nothing.
func Verify(ctx context.Context, snap *snapshot.Snapshot, opts Options) (*Result, error) {
	return run(ctx, snap, nil, opts)
}

// item is one chunk travelling through the pipeline.
type item struct {
	index int
	zero  bool
	same  bool     // with Delta: the target already holds these bytes
	bufs  *buffers // nil for a zero chunk that is not read
	raw   []byte
}

// buffers is one slot of the bounded pool: a frame and its raw bytes.
type buffers struct {
	frame []byte
	raw   []byte
	old   []byte // with Delta: the target's current bytes
}

type pipeline struct {
	snap     *snapshot.Snapshot
	m        *snapshot.Manifest
	w        *writer // nil when verifying
	opts     Options
	pool     chan *buffers
	cancel   context.CancelCauseFunc
	mu       sync.Mutex
	refetch  int
	firstErr error
}

func run(ctx context.Context, snap *snapshot.Snapshot, w *writer, opts Options) (*Result, error) {
	start := time.Now()
	m := snap.Manifest
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &pipeline{snap: snap, m: m, w: w, opts: opts, cancel: cancel}
	perSlot := int64(snapshot.FrameBound(int(m.ChunkSize))) + m.ChunkSize
	if opts.Delta {
		perSlot += m.ChunkSize
	}
	slots := snapshot.BufferSlots(opts.Jobs, perSlot)
	p.pool = make(chan *buffers, slots)
	for range slots {
		b := &buffers{
			frame: make([]byte, 0, snapshot.FrameBound(int(m.ChunkSize))),
			raw:   alignedBytes(int(m.ChunkSize)),
		}
		if opts.Delta {
			b.old = make([]byte, m.ChunkSize)
		}
		p.pool <- b
	}

	todo := make(chan int, slots)
	fetched := make(chan item, slots)
	decoded := make(chan item, slots)
	written := make(chan item, slots)
	go p.feed(ctx, todo)
	stage(max(2, opts.Jobs), func() { p.fetch(ctx, todo, fetched) }, func() { close(fetched) })
	stage(opts.Jobs, func() { p.decompress(ctx, fetched, decoded) }, func() { close(decoded) })
	stage(max(2, opts.Jobs), func() { p.write(ctx, decoded, written) }, func() { close(written) })
	res := p.account(ctx, written, start)
	if w != nil {
		res.BytesDirect = w.directBytes.Load()
	}

	// On failure the partial counts come back with the error: they say
	// whether anything reached the target.
	if err := p.err(); err != nil {
		return res, err
	}
	if err := context.Cause(ctx); err != nil {
		return res, err
	}
	if w != nil {
		if err := w.flush(); err != nil {
			return res, err
		}
	}
	res.Refetched = p.refetch
	if w != nil && res.ZeroChunks > 0 {
		u, _ := w.z.Used()
		res.ZeroMethod = Describe(u)
	}
	res.Duration = time.Since(start)
	if opts.Progress != nil {
		opts.Progress(Progress{Done: res.done(), Total: p.total(), Elapsed: res.Duration, Final: true})
	}
	return res, nil
}

// stage runs n copies of fn and calls done after the last one returns.
func stage(n int, fn func(), done func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(fn)
	}
	go func() { wg.Wait(); done() }()
}

// fail records the first error and stops the pipeline.
func (p *pipeline) fail(err error) {
	p.mu.Lock()
	if p.firstErr == nil {
		p.firstErr = err
	}
	p.mu.Unlock()
	p.cancel(err)
}

func (p *pipeline) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstErr
}

func (p *pipeline) total() int64 {
	var n int64
	for i, c := range p.m.Chunks {
		if !p.skipped(i) {
			n += c.Length
		}
	}
	return n
}

// skipped reports whether chunk i is left out of this run.
func (p *pipeline) skipped(i int) bool {
	return p.opts.Skip != nil && p.opts.Skip(i) || p.opts.Exclude != nil && p.opts.Exclude(i)
}

// feed lists the chunks to restore in disk order.
func (p *pipeline) feed(ctx context.Context, todo chan<- int) {
	defer close(todo)
	for i := range p.m.Chunks {
		if p.skipped(i) {
			continue
		}
		select {
		case todo <- i:
		case <-ctx.Done():
			return
		}
	}
}

// fetch reads each chunk's frame and verifies its hash; a chunk that fails
// verification is read once more before the restore stops. Zero chunks are
// not read when restoring: the signed index already says what they hold.
func (p *pipeline) fetch(ctx context.Context, todo <-chan int, out chan<- item) {
	for i := range todo {
		it := item{index: i, zero: p.m.Chunks[i].Zero}
		if !it.zero || p.w == nil || p.opts.Delta {
			select {
			case it.bufs = <-p.pool:
			case <-ctx.Done():
				return
			}
			if !it.zero || p.w == nil {
				frame, err := p.readVerified(ctx, i, it.bufs.frame)
				if err != nil {
					p.fail(err)
					return
				}
				it.bufs.frame = frame
			}
		}
		select {
		case out <- it:
		case <-ctx.Done():
			return
		}
	}
}

func (p *pipeline) readVerified(ctx context.Context, i int, buf []byte) ([]byte, error) {
	frame, err := p.snap.ReadFrame(ctx, i, buf)
	if err != nil {
		return nil, err
	}
	if err = p.snap.CheckFrame(i, frame); err == nil {
		return frame, nil
	}
	p.mu.Lock()
	p.refetch++
	p.mu.Unlock()
	p.opts.Log("chunk failed verification, reading it again", "chunk", i, "offset", p.m.Chunks[i].Offset)
	if frame, err = p.snap.ReadFrame(ctx, i, frame); err != nil {
		return nil, err
	}
	if err = p.snap.CheckFrame(i, frame); err != nil {
		return nil, fmt.Errorf("%w (read twice): the snapshot is damaged; run 'rewind verify' on it and restore from an intact copy", err)
	}
	return frame, nil
}

// decompress turns verified frames into raw chunk bytes.
func (p *pipeline) decompress(ctx context.Context, in <-chan item, out chan<- item) {
	for it := range in {
		if it.bufs != nil && len(it.bufs.frame) > 0 {
			c := p.m.Chunks[it.index]
			it.raw = it.bufs.raw[:c.Length]
			if err := snapshot.DecodeFrame(it.raw, it.bufs.frame); err != nil {
				p.fail(p.snap.ChunkError(it.index, err))
				return
			}
			if it.zero && !snapshot.IsZero(it.raw) {
				p.fail(p.snap.ChunkError(it.index, errors.New("chunk is marked all-zero but its frame holds data")))
				return
			}
		}
		select {
		case out <- it:
		case <-ctx.Done():
			return
		}
	}
}

// write puts each chunk at its disk offset; zero chunks become holes,
// discards or explicit zeros depending on the target.
func (p *pipeline) write(ctx context.Context, in <-chan item, out chan<- item) {
	for it := range in {
		if p.w != nil && ctx.Err() == nil {
			c := p.m.Chunks[it.index]
			var err error
			if p.opts.Delta {
				it.same, err = p.w.holds(it.bufs.old[:c.Length], it.raw, c.Offset)
			}
			switch {
			case err != nil:
			case it.same:
			case it.zero:
				err = p.w.zero(c.Offset, c.Length)
			default:
				err = p.w.writeAt(it.raw, c.Offset)
			}
			if err != nil {
				p.fail(fmt.Errorf("%w: chunk %d at disk offset %d: %w", ErrWrite, it.index, c.Offset, err))
				return
			}
		}
		if it.bufs != nil {
			it.bufs.frame = it.bufs.frame[:0]
			p.pool <- it.bufs
			it.bufs = nil
		}
		select {
		case out <- it:
		case <-ctx.Done():
			return
		}
	}
}

// account counts finished chunks, reports progress and, with a
// Checkpoint, flushes the target now and then and reports what is on it.
func (p *pipeline) account(ctx context.Context, in <-chan item, start time.Time) *Result {
	res := &Result{}
	total := p.total()
	var done []bool
	var last time.Time
	if p.opts.Checkpoint != nil && p.w != nil {
		done = make([]bool, len(p.m.Chunks))
		for i := range done {
			done[i] = p.opts.Skip != nil && p.opts.Skip(i)
		}
		last = time.Now()
	}
	interval := p.opts.CheckpointInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	for it := range in {
		c := p.m.Chunks[it.index]
		if done != nil {
			done[it.index] = true
			if time.Since(last) >= interval && ctx.Err() == nil {
				if err := p.checkpoint(done); err != nil {
					p.fail(err)
				}
				last = time.Now()
			}
		}
		res.Chunks++
		if it.zero {
			res.ZeroChunks++
		}
		switch {
		case it.same:
			res.BytesSkipped += c.Length
		case it.zero:
			res.BytesZeroed += c.Length
		default:
			res.BytesWritten += c.Length
		}
		if p.opts.Progress != nil {
			p.opts.Progress(Progress{Done: res.done(), Total: total, Elapsed: time.Since(start)})
		}
	}
	return res
}

// checkpoint flushes the target and hands a copy of done, taken before
// the flush, to opts.Checkpoint: every chunk in it was written before the
// flush began, so the flush made it durable. A failed flush is returned:
// Linux reports a lost write once, to the first flush after it, so a
// later flush may succeed with the chunk still missing.
func (p *pipeline) checkpoint(done []bool) error {
	snap := append([]bool(nil), done...)
	if err := p.w.flush(); err != nil {
		return err
	}
	if err := p.opts.Checkpoint(snap); err != nil {
		p.opts.Log("checkpoint not recorded", "error", err)
	}
	return nil
}
