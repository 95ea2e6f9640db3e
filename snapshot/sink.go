package snapshot

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
)

// Frame is one stored chunk on its way to a Sink: the chunk's index in
// the manifest, where its frame goes (segment and offset), the frame's
// bytes and their SHA-256 (the manifest's sha256).
type Frame struct {
	Index   int    // chunk index
	Segment int    // segment index: manifest Segments[Segment]
	Name    string // that segment's file name, data.000 ...
	Offset  int64  // of the frame inside the segment
	Data    []byte // the LZ4 frame; valid only during Put
	SHA256  [sha256.Size]byte
}

// Sink receives a capture: Capture decides where every frame goes and
// hands the frames over in chunk order, so each segment is filled front to
// back without gaps, one segment after the other. Then, only when every
// frame was accepted and the capture's checks passed, Commit makes the
// snapshot visible with its manifest (and signature) written last; on any
// failure Capture calls Abort instead, and no snapshot may appear. A Sink
// is used by one goroutine.
type Sink interface {
	// Put stores one frame. An error ends the capture.
	Put(ctx context.Context, f Frame) error
	// Commit makes the snapshot complete and visible: every segment
	// durable, then signature (nil: none), then the manifest, atomically.
	// m is the manifest that data holds, already validated.
	Commit(ctx context.Context, m *Manifest, data, signature []byte) error
	// Abort discards an unfinished capture; nothing under the snapshot's
	// name may look like a snapshot afterwards.
	Abort()
	// String names the destination in messages.
	String() string
}

// DirSink writes a snapshot into a local directory, which must be new or
// empty: data.NNN segments, each flushed when the next one starts, then
// manifest.json.sig and manifest.json through temporary names, each flushed
// with its directory.
type DirSink struct {
	dir string
	f   *os.File
	seg int
}

// NewDirSink accepts dir for a capture when it is absent or empty; it is
// created when the first frame arrives, so a capture refused before that
// leaves nothing behind.
func NewDirSink(dir string) (*DirSink, error) {
	if err := checkEmptyDir(dir); err != nil {
		return nil, err
	}
	return &DirSink{dir: dir, seg: -1}, nil
}

// String returns the directory.
func (d *DirSink) String() string { return d.dir }

// Put appends f to its segment file, starting a new one when f begins the
// next segment.
func (d *DirSink) Put(_ context.Context, f Frame) error {
	if f.Segment != d.seg {
		if f.Segment != d.seg+1 || f.Offset != 0 {
			return fmt.Errorf("internal error: frame of chunk %d goes to segment %d at %d after segment %d", f.Index, f.Segment, f.Offset, d.seg)
		}
		if err := d.finish(); err != nil {
			return err
		}
		if f.Segment == 0 {
			if err := os.MkdirAll(d.dir, 0o755); err != nil {
				return fmt.Errorf("create snapshot directory: %w", err)
			}
			if err := checkEmptyDir(d.dir); err != nil {
				return err
			}
		}
		var err error
		d.f, err = os.OpenFile(filepath.Join(d.dir, f.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("create segment: %w", err)
		}
		d.seg = f.Segment
	}
	if _, err := d.f.Write(f.Data); err != nil {
		return fmt.Errorf("write segment %s: %w", d.f.Name(), err)
	}
	return nil
}

// finish flushes and closes the current segment.
func (d *DirSink) finish() error {
	if d.f == nil {
		return nil
	}
	f := d.f
	d.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("flush segment %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close segment %s: %w", f.Name(), err)
	}
	return nil
}

// Commit flushes the last segment and writes the signature, then the
// manifest.
func (d *DirSink) Commit(_ context.Context, _ *Manifest, data, signature []byte) error {
	if err := d.finish(); err != nil {
		return err
	}
	if d.seg < 0 { // no chunk at all: the directory is still to be made
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			return fmt.Errorf("create snapshot directory: %w", err)
		}
	}
	if signature != nil {
		if err := writeFileSync(filepath.Join(d.dir, SignatureName), signature); err != nil {
			return err
		}
	}
	return writeFileSync(filepath.Join(d.dir, ManifestName), data)
}

// Abort closes the open segment. The directory stays, without
// manifest.json, so it is not a snapshot; the error Capture returns says
// to delete it.
func (d *DirSink) Abort() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}
