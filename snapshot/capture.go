package snapshot

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"path/filepath"
	"runtime"
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
	// with the raw bytes done and the raw bytes in all.
	Progress func(done, total int64)
}

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
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	m := &Manifest{
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
		Extents:     opts.Extents,
	}
	m.Chunks = cutChunks(m.Extents, m.ChunkSize)
	// A snapshot that restore would refuse is not written: the checks
	// ParseManifest makes on the layout and extents run before anything.
	if err := m.validateShape(); err != nil {
		return nil, fmt.Errorf("capture: %w: nothing was written", err)
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
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
	go readChunks(ctx, src, m.Chunks, rawPool, jobs)
	var wg sync.WaitGroup
	for range opts.Jobs {
		wg.Go(func() { compressChunks(ctx, m.Chunks, jobs, results, framePool, zeroFrames) })
	}
	go func() { wg.Wait(); close(results) }()

	w := &segmentWriter{dir: dir, limit: m.SegmentSize, digits: segmentDigits(m)}
	err := storeChunks(m, results, w, rawPool, framePool, opts.Progress, total)
	cancel()
	for range results { // let the workers finish before returning buffers to GC
	}
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if parent.Err() != nil && err != nil {
		err = fmt.Errorf("interrupted: %w", parent.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("%w; %s has no manifest.json and is not a snapshot: delete it and capture again", err, dir)
	}
	m.Segments = w.segments
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if _, err := ParseManifest(data); err != nil {
		return nil, fmt.Errorf("internal error: the manifest just written does not validate: %w", err)
	}
	if opts.SignKey != nil {
		if err := writeFileSync(filepath.Join(dir, SignatureName), EncodeSignature(ed25519.Sign(opts.SignKey, data))); err != nil {
			return nil, err
		}
	}
	if err := writeFileSync(filepath.Join(dir, ManifestName), data); err != nil {
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

// prepareDir creates dir, or accepts it when it is empty.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create snapshot directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
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

// readChunks is the read stage: it reads the chunks sequentially from src.
func readChunks(ctx context.Context, src io.ReaderAt, chunks []Chunk, pool chan []byte, out chan<- *captureJob) {
	defer close(out)
	holes := newHoleFinder(src)
	for i, c := range chunks {
		var raw []byte
		select {
		case raw = <-pool:
		case <-ctx.Done():
			return
		}
		j := &captureJob{index: i, raw: raw[:c.Length]}
		if holes.covers(c.Offset, c.Length) {
			j.zero = true // a hole of a sparse image reads as zeros: skip the read
		} else if _, err := src.ReadAt(j.raw, c.Offset); err != nil {
			j.err = fmt.Errorf("read source at offset %d (chunk %d): %w", c.Offset, i, err)
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
func storeChunks(m *Manifest, in <-chan *captureJob, w *segmentWriter, rawPool, framePool chan []byte, progress func(int64, int64), total int64) error {
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
			seg, off, err := w.write(j.frame)
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

// segmentWriter appends frames to data.NNN files, starting a new segment
// when the next frame would pass the limit. A frame never spans segments.
type segmentWriter struct {
	dir      string
	limit    int64
	digits   int // of segment names
	f        *os.File
	size     int64
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

func (w *segmentWriter) write(frame []byte) (seg int, off int64, err error) {
	if w.f == nil || w.size+int64(len(frame)) > w.limit {
		if err := w.finish(); err != nil {
			return 0, 0, err
		}
		name := segmentName(len(w.segments), w.digits)
		w.f, err = os.OpenFile(filepath.Join(w.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return 0, 0, fmt.Errorf("create segment: %w", err)
		}
		w.size = 0
		w.segments = append(w.segments, Segment{Name: name})
	}
	if _, err := w.f.Write(frame); err != nil {
		return 0, 0, fmt.Errorf("write segment %s: %w", w.f.Name(), err)
	}
	seg, off = len(w.segments)-1, w.size
	w.size += int64(len(frame))
	w.segments[seg].Size = w.size
	return seg, off, nil
}

// finish flushes and closes the current segment.
func (w *segmentWriter) finish() error {
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("flush segment %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close segment %s: %w", f.Name(), err)
	}
	return nil
}

func (w *segmentWriter) close() error { return w.finish() }

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
