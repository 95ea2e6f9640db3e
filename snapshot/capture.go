package snapshot

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// CaptureOptions controls Capture.
type CaptureOptions struct {
	DiskSize    int64    // size of the source disk in bytes (required)
	Layout      *Layout  // partition layout to record; nil for a raw disk
	Extents     []Extent // byte ranges to capture; nil means the whole disk
	ChunkSize   int64    // 0 means DefaultChunkSize
	SegmentSize int64    // 0 means DefaultSegmentSize
	Jobs        int      // compression workers; 0 means one per CPU
	Origin      Origin
	SignKey     ed25519.PrivateKey // signs manifest.json when set
	// Progress is called from one goroutine after each chunk is stored,
	// with the raw bytes done and the raw bytes in all (the stored runs:
	// unused ranges are not counted).
	Progress func(done, total int64)
	// Free lists, per extent (same index as Extents, or nil for none),
	// the absolute byte ranges of the disk that the extent's file system
	// does not use: sorted, not overlapping or touching, inside the
	// extent, in 512-byte units, never the whole extent. An extent with
	// free ranges must be captured used (Extent.Capture CaptureUsed) and
	// carry no Unused ranges of its own: Capture derives them (the free
	// ranges at least the minimum unused run long, trimmed to the logical
	// sector size) and stores every other free byte as zero, so deleted
	// data never leaves the source. A list that breaks these rules is a
	// bug of its producer: Capture refuses it and writes nothing.
	Free [][]Range
	// Recheck, when set, runs after every chunk is stored and before the
	// manifest is written; an error fails the capture (no manifest, so
	// no snapshot). The caller reads the file systems' maps again: one
	// written to while it was captured may now use blocks stored as free.
	Recheck func() error
}

// MinUnusedRun is the shortest free range a capture records as unused;
// shorter free gaps are stored as zeros. Capture doubles it for an extent
// while the extent would have more than max(length/chunk_size, 1024)
// stored runs, which bounds the manifest.
const MinUnusedRun = 64 << 10

// captureJob carries one chunk through the capture pipeline.
type captureJob struct {
	index int
	raw   []byte // pooled, ChunkSize long
	frame []byte // pooled encoded frame, or the shared zero frame
	zero  bool
	sum   [sha256.Size]byte // of frame
	raw32 [sha256.Size]byte // of raw, for non-zero chunks
	err   error
}

// Capture reads the extents of src in order, compresses every chunk on
// opts.Jobs workers, and writes a snapshot into dir, which must be empty or
// absent. Zero chunks are detected without compressing them. The manifest is
// written last, after the segments are flushed, so a snapshot directory
// without manifest.json is an unfinished capture.
func Capture(ctx context.Context, src io.ReaderAt, dir string, opts CaptureOptions) (*Manifest, error) {
	sink, err := NewDirSink(dir)
	if err != nil {
		return nil, err
	}
	m, err := CaptureTo(ctx, src, sink, opts)
	if err != nil && !errors.Is(err, errNothingWritten) {
		return nil, fmt.Errorf("%w; %s has no manifest.json and is not a snapshot: delete it and capture again", err, dir)
	}
	return m, err
}

// errNothingWritten marks capture errors raised before the sink got anything.
var errNothingWritten = errors.New("nothing was written")

// CaptureTo is Capture into any Sink (a directory, an upload to the lab
// server): the frames go to sink in chunk order, and sink.Commit gets the
// manifest only after every frame was stored and opts.Recheck passed. On
// any failure sink.Abort is called and no snapshot appears.
func CaptureTo(ctx context.Context, src io.ReaderAt, sink Sink, opts CaptureOptions) (m *Manifest, err error) {
	defer func() {
		if err != nil {
			sink.Abort()
		}
	}()
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errNothingWritten)
	}
	extents, free, err := applyFree(&opts)
	if err != nil {
		return nil, fmt.Errorf("capture: %w: %w", err, errNothingWritten)
	}
	m = &Manifest{
		Format:      FormatName,
		Version:     FormatVersion,
		Created:     time.Now().UTC().Truncate(time.Second),
		Origin:      opts.Origin,
		DiskSize:    opts.DiskSize,
		ChunkSize:   opts.ChunkSize,
		SegmentSize: opts.SegmentSize,
		Compression: "lz4-frame",
		Hash:        "sha256",
		Layout:      opts.Layout,
		Extents:     extents,
	}
	m.Chunks = cutChunks(m.Extents, m.ChunkSize)
	// A snapshot that restore would refuse is not written: the checks
	// ParseManifest makes on the layout and extents run before anything.
	if err := m.validateShape(); err != nil {
		return nil, fmt.Errorf("capture: %w: %w", err, errNothingWritten)
	}
	if err := m.checkManifestBound(); err != nil {
		return nil, fmt.Errorf("capture: %w: %w", err, errNothingWritten)
	}
	total := m.DataBytes()

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inflight := BufferSlots(opts.Jobs, m.ChunkSize+int64(FrameBound(int(m.ChunkSize))))
	rawPool := make(chan []byte, inflight)
	framePool := make(chan []byte, inflight)
	for range inflight {
		rawPool <- make([]byte, m.ChunkSize)
		framePool <- make([]byte, 0, FrameBound(int(m.ChunkSize)))
	}
	zeroFrames := newZeroFrames()

	jobs := make(chan *captureJob, inflight)
	results := make(chan *captureJob, inflight)
	go readChunks(ctx, src, m.Chunks, free, rawPool, jobs)
	var wg sync.WaitGroup
	for range opts.Jobs {
		wg.Go(func() { compressChunks(ctx, m.Chunks, jobs, results, framePool, zeroFrames) })
	}
	go func() { wg.Wait(); close(results) }()

	w := &segmentPlacer{limit: m.SegmentSize, digits: segmentDigits(m)}
	err = storeChunks(ctx, m, results, w, sink, rawPool, framePool, opts.Progress, total)
	cancel()
	for range results { // let the workers finish before returning buffers to GC
	}
	if parent.Err() != nil && err != nil {
		err = fmt.Errorf("interrupted: %w", parent.Err())
	}
	if err == nil && opts.Recheck != nil {
		err = opts.Recheck()
	}
	if err != nil {
		return nil, err
	}
	m.Segments = w.segments
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if _, err := ParseManifest(data); err != nil {
		return nil, fmt.Errorf("internal error: the manifest just written does not validate: %w", err)
	}
	if int64(len(data)) > MaxManifestSize {
		return nil, fmt.Errorf("the manifest takes %d bytes, more than the %d a restore reads: capture again with a larger chunk size",
			len(data), int64(MaxManifestSize))
	}
	var sig []byte
	if opts.SignKey != nil {
		sig = EncodeSignature(ed25519.Sign(opts.SignKey, data))
	}
	if err := sink.Commit(parent, m, data, sig); err != nil {
		return nil, err
	}
	return m, nil
}

func (o *CaptureOptions) defaults() error {
	if o.DiskSize <= 0 {
		return fmt.Errorf("capture: disk size %d is not positive", o.DiskSize)
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < MinChunkSize || o.ChunkSize > MaxChunkSize || o.ChunkSize%4096 != 0 {
		return fmt.Errorf("capture: chunk size %d must be a multiple of 4096 between %d and %d", o.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < int64(FrameBound(int(o.ChunkSize))) {
		return fmt.Errorf("capture: segment size %d cannot hold one frame of a %d-byte chunk (need at least %d)", o.SegmentSize, o.ChunkSize, FrameBound(int(o.ChunkSize)))
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.NumCPU()
	}
	if o.Extents == nil {
		o.Extents = []Extent{{Kind: ExtentDisk, Offset: 0, Length: o.DiskSize}}
	}
	return nil
}

// checkManifestBound refuses, before anything is read, a capture whose
// manifest could grow past MaxManifestSize once its chunk index is filled
// in: restore would refuse to read it, so the snapshot would be lost.
// Many chunks (a large disk in small chunks) and many unused ranges make
// a large manifest; a larger chunk size makes fewer of both.
func (m *Manifest) checkManifestBound() error {
	n, err := m.manifestBound()
	if err != nil {
		return err
	}
	if n <= MaxManifestSize {
		return nil
	}
	suggest := m.ChunkSize
	for suggest < MaxChunkSize && n/(suggest/m.ChunkSize) > MaxManifestSize {
		suggest *= 2
	}
	return fmt.Errorf("the manifest of %d chunks and %d unused ranges could take %d bytes, more than the %d bytes a restore reads: capture with a larger chunk size (%d bytes or more)",
		len(m.Chunks), m.unusedCount(), n, int64(MaxManifestSize), suggest)
}

// manifestBound is an upper bound of the size of m's manifest once the
// chunk index and the segments are filled in: the manifest as it is now,
// plus every chunk and segment entry at its longest.
func (m *Manifest) manifestBound() (int64, error) {
	base := *m
	base.Chunks, base.Segments = nil, nil
	b, err := base.Marshal()
	if err != nil {
		return 0, err
	}
	frameMax := int64(FrameBound(int(m.ChunkSize)))
	hash := strings.Repeat("f", 2*sha256.Size)
	c, err := json.MarshalIndent(Chunk{Offset: m.DiskSize, Length: m.ChunkSize, Segment: len(m.Chunks), FrameOffset: m.SegmentSize,
		FrameLength: frameMax, SHA256: hash, RawSHA256: hash}, "  ", " ")
	if err != nil {
		return 0, err
	}
	// Every segment but the last holds more than SegmentSize-frameMax bytes.
	segs := int64(len(m.Chunks))
	if room := m.SegmentSize - frameMax; room > 0 {
		segs = min(segs, int64(len(m.Chunks))*frameMax/room+1)
	}
	sg, err := json.MarshalIndent(Segment{Name: segmentName(int(segs), segmentDigits(m)), Size: m.SegmentSize}, "  ", " ")
	if err != nil {
		return 0, err
	}
	const sep = 2 // ",\n" between entries
	return int64(len(b)) + int64(len(m.Chunks))*int64(len(c)+sep) + segs*int64(len(sg)+sep), nil
}

func (m *Manifest) unusedCount() int {
	n := 0
	for _, e := range m.Extents {
		n += len(e.Unused)
	}
	return n
}

// checkEmptyDir accepts dir when it is absent or empty.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read snapshot directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("snapshot directory %s is not empty: choose a new directory so no snapshot is overwritten", dir)
	}
	return nil
}

// cutChunks cuts the stored runs of every extent into chunks of at most
// size bytes.
func cutChunks(extents []Extent, size int64) []Chunk {
	var chunks []Chunk
	for _, e := range extents {
		for _, r := range e.StoredRuns() {
			for off := int64(0); off < r.Length; off += size {
				chunks = append(chunks, Chunk{Offset: r.Offset + off, Length: min(size, r.Length-off)})
			}
		}
	}
	return chunks
}

// readChunks is the read stage: it reads the chunks sequentially from src,
// each in one read, and zeroes the free bytes (free: every extent's free
// ranges, in disk order) inside them. Of a chunk with free bytes at its
// ends only the bytes from its first to its last used one are read; a
// chunk that is free throughout is not read at all.
func readChunks(ctx context.Context, src io.ReaderAt, chunks []Chunk, free []Range, pool chan []byte, out chan<- *captureJob) {
	defer close(out)
	holes := newHoleFinder(src)
	gaps := freeCursor{free: free}
	for i, c := range chunks {
		var raw []byte
		select {
		case raw = <-pool:
		case <-ctx.Done():
			return
		}
		j := &captureJob{index: i, raw: raw[:c.Length]}
		in := gaps.within(c.Offset, c.Length)
		lo, hi := usedSpan(in, c.Length)
		switch {
		case lo == hi:
			j.zero = true // free throughout: nothing to read
		case holes.covers(c.Offset+lo, hi-lo):
			j.zero = true // a hole of a sparse image reads as zeros: skip the read
		default:
			if _, err := src.ReadAt(j.raw[lo:hi], c.Offset+lo); err != nil {
				j.err = fmt.Errorf("read source at offset %d (chunk %d): %w", c.Offset+lo, i, err)
			}
			for _, g := range in {
				clear(j.raw[g.Offset:g.End()]) // deleted data stays on the source
			}
		}
		failed := j.err != nil // read before the job is handed to a worker, which may set j.err
		select {
		case out <- j:
		case <-ctx.Done():
			return
		}
		if failed {
			return
		}
	}
}

// freeCursor walks a sorted list of free ranges alongside chunks that come
// in disk order.
type freeCursor struct {
	free []Range // sorted, not overlapping
	next int     // the first range that may end after the last chunk asked for
	in   []Range // reused result
}

// within returns the free parts of [off, off+n), relative to off, in order.
// Successive calls must ask for ranges in increasing disk order.
func (f *freeCursor) within(off, n int64) []Range {
	f.in = f.in[:0]
	for f.next < len(f.free) && f.free[f.next].End() <= off {
		f.next++
	}
	for k := f.next; k < len(f.free) && f.free[k].Offset < off+n; k++ {
		r := f.free[k]
		start, end := max(r.Offset, off), min(r.End(), off+n)
		f.in = append(f.in, Range{Offset: start - off, Length: end - start})
	}
	return f.in
}

// usedSpan returns the span [lo, hi) of a chunk of n bytes from its first
// to its last byte outside the free parts in (relative, in order); lo ==
// hi when the chunk is free throughout.
func usedSpan(in []Range, n int64) (lo, hi int64) {
	lo, hi = 0, n
	for _, g := range in {
		if g.Offset > lo {
			break
		}
		lo = g.End()
	}
	for k := len(in) - 1; k >= 0 && hi > lo; k-- {
		if in[k].End() < hi {
			break
		}
		hi = in[k].Offset
	}
	return lo, max(hi, lo)
}

// applyFree checks opts.Free and derives the unused ranges of the extents
// it covers. It returns a copy of the extents with Unused set, and every
// free range of every extent in disk order, for the read stage to zero.
func applyFree(opts *CaptureOptions) ([]Extent, []Range, error) {
	extents := slices.Clone(opts.Extents)
	if opts.Free == nil {
		return extents, nil, nil
	}
	if len(opts.Free) != len(extents) {
		return nil, nil, fmt.Errorf("%d free lists for %d extents: want one per extent", len(opts.Free), len(extents))
	}
	align := int64(512)
	if opts.Layout != nil && opts.Layout.LogicalSectorSize > 512 {
		align = int64(opts.Layout.LogicalSectorSize)
	}
	var all []Range
	for i, free := range opts.Free {
		if len(free) == 0 {
			continue
		}
		e := &extents[i]
		if err := checkFree(*e, free); err != nil {
			return nil, nil, fmt.Errorf("extents[%d] (%s): %w", i, e.describe(), err)
		}
		e.Unused, _ = unusedFromFree(*e, free, align, opts.ChunkSize)
		all = append(all, free...)
	}
	return extents, all, nil
}

// describe names the extent in errors: "partition 2", "disk", "boot-area".
func (e Extent) describe() string {
	if e.Kind == ExtentPartition {
		return fmt.Sprintf("partition %d", e.Partition)
	}
	return e.Kind
}

// checkFree enforces the rules CaptureOptions.Free documents for one
// extent's list.
func checkFree(e Extent, free []Range) error {
	switch {
	case e.Kind != ExtentPartition && e.Kind != ExtentDisk:
		return errors.New("has free ranges, but only partitions and whole disks hold a file system")
	case e.Capture != CaptureUsed:
		return fmt.Errorf("has free ranges but is not captured %q", CaptureUsed)
	case e.Unused != nil:
		return errors.New("already has unused ranges: give free ranges or unused ranges, not both")
	}
	sum, err := e.checkRanges(free, func(k int) string { return fmt.Sprintf("free range %d", k) })
	if err != nil {
		return err
	}
	if sum == e.Length {
		return errors.New("the whole extent is free, but a file system always uses some blocks")
	}
	return nil
}

// unusedFromFree derives an extent's unused ranges from its free ranges:
// each trimmed inward to align-byte boundaries, and kept when it is at
// least the minimum run long. The minimum starts at MinUnusedRun and
// doubles while the extent would have more than max(length/chunkSize,
// 1024) stored runs. It returns the ranges and the minimum used.
func unusedFromFree(e Extent, free []Range, align, chunkSize int64) ([]Range, int64) {
	trimmed := make([]Range, 0, len(free))
	for _, r := range free {
		start := (r.Offset + align - 1) / align * align
		end := r.End() / align * align
		if end-start >= MinUnusedRun {
			trimmed = append(trimmed, Range{Offset: start, Length: end - start})
		}
	}
	limit := max(e.Length/chunkSize, 1024)
	for minRun := int64(MinUnusedRun); ; minRun *= 2 {
		var unused []Range
		for _, r := range trimmed {
			if r.Length >= minRun {
				unused = append(unused, r)
			}
		}
		runs := int64(len(unused)) + 1
		if len(unused) > 0 && unused[0].Offset == e.Offset {
			runs--
		}
		if len(unused) > 0 && unused[len(unused)-1].End() == e.Offset+e.Length {
			runs--
		}
		if runs <= limit {
			return unused, minRun
		}
	}
}

// holeFinder finds the holes of a sparse regular file with SEEK_DATA, as
// bmaptool does, so that capture need not read what the file system knows
// to be zeros. For other sources it finds nothing.
type holeFinder struct {
	fd       int
	nextData int64 // the first data offset at or after the last query, or -1 past the end
	queried  int64 // the offset nextData was found for
}

func newHoleFinder(src io.ReaderAt) *holeFinder {
	f, ok := src.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	return &holeFinder{fd: int(f.Fd()), queried: -1}
}

// covers reports whether [off, off+n) lies entirely in a hole.
func (h *holeFinder) covers(off, n int64) bool {
	if h == nil {
		return false
	}
	if h.queried < 0 || off < h.queried || h.nextData >= 0 && off > h.nextData {
		d, err := unix.Seek(h.fd, off, unix.SEEK_DATA)
		switch {
		case err == unix.ENXIO:
			d = -1 // no data after off: the rest of the file is a hole
		case err != nil:
			return false // SEEK_DATA unsupported: read everything
		}
		h.nextData, h.queried = d, off
	}
	return h.nextData < 0 || h.nextData >= off+n
}

// compressChunks is the compress stage, run on several workers.
func compressChunks(ctx context.Context, chunks []Chunk, in <-chan *captureJob, out chan<- *captureJob, framePool chan []byte, zeros *zeroFrames) {
	var enc Encoder
	for j := range in {
		if j.err == nil {
			if j.zero || IsZero(j.raw) {
				j.zero = true
				j.frame, j.sum, j.err = zeros.get(len(j.raw))
			} else {
				var buf []byte
				select {
				case buf = <-framePool:
				case <-ctx.Done():
					j.err = ctx.Err()
					out <- j
					continue
				}
				j.frame, j.err = enc.EncodeFrame(buf[:0], j.raw)
				if j.err != nil {
					j.err = fmt.Errorf("compress chunk %d at offset %d: %w", j.index, chunks[j.index].Offset, j.err)
				}
				j.sum = sha256.Sum256(j.frame)
				j.raw32 = sha256.Sum256(j.raw)
			}
		}
		out <- j
	}
}

// storeChunks is the store stage: it puts frames into segments in chunk
// order and fills in the index.
func storeChunks(ctx context.Context, m *Manifest, in <-chan *captureJob, w *segmentPlacer, sink Sink, rawPool, framePool chan []byte, progress func(int64, int64), total int64) error {
	pending := make(map[int]*captureJob)
	next := 0
	var done int64
	for j := range in {
		pending[j.index] = j
		for {
			j, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			if j.err != nil {
				return j.err
			}
			c := &m.Chunks[next]
			seg, off := w.place(int64(len(j.frame)))
			err := sink.Put(ctx, Frame{Index: next, Segment: seg, Name: w.segments[seg].Name, Offset: off, Data: j.frame, SHA256: j.sum})
			if err != nil {
				return fmt.Errorf("store chunk %d at offset %d: %w", next, c.Offset, err)
			}
			c.Segment, c.FrameOffset, c.FrameLength = seg, off, int64(len(j.frame))
			c.Zero = j.zero
			c.SHA256 = hex.EncodeToString(j.sum[:])
			if !j.zero {
				c.RawSHA256 = hex.EncodeToString(j.raw32[:])
			}
			rawPool <- j.raw[:cap(j.raw)]
			if !j.zero {
				framePool <- j.frame[:0]
			}
			done += c.Length
			if progress != nil {
				progress(done, total)
			}
			next++
		}
	}
	if next != len(m.Chunks) {
		return errors.New("capture stopped before every chunk was stored")
	}
	return nil
}

// IsZero reports whether b holds only zero bytes.
func IsZero(b []byte) bool {
	for len(b) >= 64 && string(b[:64]) == zero64 {
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var zero64 = string(make([]byte, 64))

// zeroFrames caches the frame of an all-zero chunk per length: every zero
// chunk is stored as the same tiny frame.
type zeroFrames struct {
	mu     sync.Mutex
	frames map[int]zeroFrame
}

type zeroFrame struct {
	frame []byte
	sum   [sha256.Size]byte
}

func newZeroFrames() *zeroFrames { return &zeroFrames{frames: make(map[int]zeroFrame)} }

func (z *zeroFrames) get(n int) ([]byte, [sha256.Size]byte, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if f, ok := z.frames[n]; ok {
		return f.frame, f.sum, nil
	}
	var enc Encoder
	frame, err := enc.EncodeFrame(nil, make([]byte, n))
	if err != nil {
		return nil, [sha256.Size]byte{}, err
	}
	f := zeroFrame{frame: frame, sum: sha256.Sum256(frame)}
	z.frames[n] = f
	return f.frame, f.sum, nil
}

// segmentPlacer decides where each frame goes: appended to the current
// data.NNN segment, or at the start of a new one when it would pass the
// limit. A frame never spans segments.
type segmentPlacer struct {
	limit    int64
	digits   int // of segment names
	segments []Segment
}

// segmentName returns the file name of segment i: data.000, data.001, ...
// with at least width digits, so that names sort in segment order and
// "cat data.*" concatenates them in order however many there are.
func segmentName(i, width int) string { return fmt.Sprintf("data.%0*d", width, i) }

// segmentDigits is the name width for the most segments m's chunks can
// need (each segment holds at least SegmentSize/FrameBound(ChunkSize)
// frames): 3 digits up to 1000 segments, more beyond.
func segmentDigits(m *Manifest) int {
	perSegment := max(1, m.SegmentSize/int64(FrameBound(int(m.ChunkSize))))
	most := (int64(len(m.Chunks)) + perSegment - 1) / perSegment
	return max(3, len(fmt.Sprint(most-1)))
}

// place returns the segment and offset of the next frame, n bytes long.
func (w *segmentPlacer) place(n int64) (seg int, off int64) {
	last := len(w.segments) - 1
	if last < 0 || w.segments[last].Size+n > w.limit {
		w.segments = append(w.segments, Segment{Name: segmentName(len(w.segments), w.digits)})
		last++
	}
	off = w.segments[last].Size
	w.segments[last].Size += n
	return last, off
}

// writeFileSync writes a file through a temporary name, flushes and renames it.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("flush %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is durable only once the directory is flushed: without
	// this, a power cut can leave a snapshot without its manifest (or
	// with a signature but no manifest) although capture reported success.
	return syncDir(filepath.Dir(path))
}

// syncDir flushes a directory's entries to stable storage.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("flush directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flush directory %s: %w", dir, err)
	}
	return nil
}
