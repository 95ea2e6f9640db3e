package snapshot

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// OpenOptions controls Open.
type OpenOptions struct {
	// Trust lists the public keys a signed manifest must verify against.
	// When set, unsigned or wrongly signed snapshots are refused before
	// the manifest is even parsed.
	Trust []ed25519.PublicKey
	// HTTPClient is used for http(s) locations; nil means a default client.
	HTTPClient *http.Client
	// RetryFor is how long an HTTP read keeps retrying after failures
	// (dropped connections, a server restarting, a switch rebooting)
	// before it gives up; 0 means DefaultRetryFor.
	RetryFor time.Duration
	// S3 says how to reach s3:// locations (endpoint, region,
	// credential); nil means AWS with no credential.
	S3 *S3Options
	// Log receives retry notices from HTTP sources; may be nil.
	Log func(msg string, args ...any)
}

// Snapshot is an opened snapshot: its manifest and a way to read its frames.
type Snapshot struct {
	Location string
	Manifest *Manifest
	ID       string // SHA-256 of manifest.json's bytes
	Signed   bool   // a manifest.json.sig is present
	Verified bool   // the signature verified against a trusted key
	KeyID    string // fingerprint of the key that verified it
	src      Source
}

// Open opens the snapshot at location: a directory, an http(s) URL or an
// s3://BUCKET/PREFIX/NAME location (any
// other scheme is refused, see CheckLocation). It
// reads and validates the manifest, checks the signature when opts.Trust is
// set, and checks that every segment is present with the recorded size, so
// that a damaged snapshot is refused before anything is written.
func Open(ctx context.Context, location string, opts OpenOptions) (*Snapshot, error) {
	if err := CheckLocation(location); err != nil {
		return nil, err
	}
	var src Source
	if IsS3(location) {
		var o S3Options
		if opts.S3 != nil {
			o = *opts.S3
		}
		s3, err := NewS3Source(location, o, opts.HTTPClient, opts.RetryFor, opts.Log)
		if err != nil {
			return nil, err
		}
		src = s3
	} else if strings.HasPrefix(location, "http://") || strings.HasPrefix(location, "https://") {
		src = NewHTTPSource(location, opts.HTTPClient, opts.RetryFor, opts.Log)
	} else {
		if filepath.Base(location) == ManifestName {
			location = filepath.Dir(location)
		}
		src = NewDirSource(location)
	}
	s, err := OpenSource(ctx, src, opts)
	if err != nil {
		src.Close()
		return nil, err
	}
	return s, nil
}

// OpenSource is Open for an already constructed Source.
func OpenSource(ctx context.Context, src Source, opts OpenOptions) (*Snapshot, error) {
	data, err := src.ReadFile(ctx, ManifestName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no %s in %s: not a Rewind snapshot, or its capture did not finish", ManifestName, src)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", ManifestName, src, err)
	}
	s := &Snapshot{Location: src.String(), src: src}
	sig, err := src.ReadFile(ctx, SignatureName)
	switch {
	case err == nil:
		s.Signed = true
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read %s from %s: %w", SignatureName, src, err)
	}
	if len(opts.Trust) > 0 {
		if !s.Signed {
			return nil, fmt.Errorf("%w: %s is not signed (no %s) but trusted keys were given: refusing it", ErrSignature, src, SignatureName)
		}
		k, err := VerifySignature(data, sig, opts.Trust)
		if err != nil {
			return nil, err
		}
		s.Verified, s.KeyID = true, KeyID(opts.Trust[k])
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	s.Manifest, s.ID = m, ID(data)
	for _, seg := range m.Segments {
		size, err := src.Size(ctx, seg.Name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, missingSegment(src, seg.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("segment %s of %s: %w", seg.Name, src, err)
		}
		if size != seg.Size {
			return nil, fmt.Errorf("segment %s of %s is %d bytes, the manifest says %d: the snapshot is truncated or damaged", seg.Name, src, size, seg.Size)
		}
	}
	return s, nil
}

// missingSegment explains a segment the manifest lists but src lacks. Over
// HTTP it names the URL asked, which is the generation's when the manifest
// came through NAME/latest.
func missingSegment(src Source, name string) error {
	if h, ok := src.(*HTTPSource); ok {
		return fmt.Errorf("segment %s is missing from %s (%s answers 404): the snapshot on the server is incomplete, or that generation was removed since its manifest was read (a newer upload pruned it: rewind serve --keep); restore again, or copy the whole snapshot directory to the server", name, src, h.url(name))
	}
	return fmt.Errorf("segment %s is missing from %s: copy the whole snapshot directory", name, src)
}

// Close releases the snapshot's source.
func (s *Snapshot) Close() error { return s.src.Close() }

// OwnFile returns the name of the snapshot's file (manifest, signature or
// segment) that path is, the same file by device and inode (a hard link
// too), or "" when it is none of them or the snapshot is not a directory.
// A restore refuses such a target: writing it would destroy the snapshot.
func (s *Snapshot) OwnFile(path string) string {
	d, ok := s.src.(*DirSource)
	if !ok {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	names := []string{ManifestName, SignatureName}
	for _, seg := range s.Manifest.Segments {
		names = append(names, seg.Name)
	}
	for _, n := range names {
		if own, err := os.Stat(filepath.Join(d.dir, n)); err == nil && os.SameFile(fi, own) {
			return n
		}
	}
	return ""
}

// ReadFrame reads chunk i's stored frame into buf (grown when too small)
// and returns it. It does not verify it: see CheckFrame.
func (s *Snapshot) ReadFrame(ctx context.Context, i int, buf []byte) ([]byte, error) {
	c := s.Manifest.Chunks[i]
	if int64(cap(buf)) < c.FrameLength {
		buf = make([]byte, c.FrameLength)
	}
	buf = buf[:c.FrameLength]
	if err := s.src.ReadAt(ctx, s.Manifest.Segments[c.Segment].Name, buf, c.FrameOffset); err != nil {
		return nil, s.ChunkError(i, err)
	}
	return buf, nil
}

// CheckFrame verifies frame against chunk i's recorded SHA-256.
func (s *Snapshot) CheckFrame(i int, frame []byte) error {
	sum := sha256.Sum256(frame)
	if hex.EncodeToString(sum[:]) != s.Manifest.Chunks[i].SHA256 {
		return s.ChunkError(i, ErrHashMismatch)
	}
	return nil
}

// ErrHashMismatch is wrapped by CheckFrame's errors.
var ErrHashMismatch = errors.New("stored bytes do not match the chunk's sha256")

// ChunkError wraps err with everything a user needs to find chunk i: its
// index, disk offset, segment and offset in the segment.
func (s *Snapshot) ChunkError(i int, err error) error {
	c := s.Manifest.Chunks[i]
	return &ChunkError{Index: i, Offset: c.Offset, Segment: s.Manifest.Segments[c.Segment].Name, FrameOffset: c.FrameOffset, Err: err}
}

// ChunkError names a failed chunk.
type ChunkError struct {
	Index       int
	Offset      int64
	Segment     string
	FrameOffset int64
	Err         error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("chunk %d (disk offset %d, %s at offset %d): %v", e.Index, e.Offset, e.Segment, e.FrameOffset, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }
