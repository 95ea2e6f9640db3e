package snapshot

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3PartSize is the size of the parts a segment is uploaded in (the last
// part of a segment is shorter). Larger segments get larger parts, so that
// a segment never needs more than the 10,000 parts S3 allows.
const S3PartSize = 16 << 20

// ErrS3Exists is wrapped by the error of a capture to an s3:// location
// that already holds a snapshot.
var ErrS3Exists = errors.New("a snapshot exists there")

// S3Sink writes a capture to s3://BUCKET/PREFIX/NAME. Every segment is a
// multipart upload, sent part by part while the disk is read, and left
// open (no object is visible) until Commit completes every segment and
// then writes the signature and, last, manifest.json: a capture cut off
// at any point leaves no snapshot. Its open uploads stay, so that running
// the same capture again resumes: a part the store already holds with
// the same number, size and MD5 is not sent again. (A bucket lifecycle
// rule, AbortIncompleteMultipartUpload, removes open uploads nobody
// resumes.)
type S3Sink struct {
	t        *s3Signer
	core     *minio.Core
	partSize int64
	retryFor time.Duration
	log      func(msg string, args ...any)

	open        map[string]openUpload // key -> the newest open upload found at the start
	lockID      string                // the commit lock's capture ID while held
	lockETag    string                // its ETag as last written
	conditional bool                  // the store honours If-None-Match
	lockStale   time.Duration
	client      *http.Client // for the store's clock
	segs        []*s3Segment
	cur         *s3Segment
	buf         []byte

	// Resumed and Sent count the bytes of parts found already stored and
	// of parts sent.
	Resumed, Sent int64
}

type openUpload struct {
	id        string
	initiated time.Time
}

type s3Segment struct {
	key, uploadID string
	etag          string                   // the completed object's ETag
	stored        map[int]minio.ObjectPart // parts the store already holds (a resumed upload)
	parts         []minio.CompletePart
	size          int64
}

// S3SinkOptions tunes an S3Sink.
type S3SinkOptions struct {
	// Transport carries the requests (a lab CA's pool, say); nil: the
	// transport of NewHTTPClient(nil).
	Transport http.RoundTripper
	// SegmentSize is the capture's segment size, which sets the part
	// size (0: DefaultSegmentSize).
	SegmentSize int64
	// RetryFor bounds how long a part keeps being retried after failures
	// (0: DefaultRetryFor).
	RetryFor time.Duration
	// Log receives resume and retry notices; may be nil.
	Log func(msg string, args ...any)
	// LockStale overrides S3LockStale (tests).
	LockStale time.Duration
}

// NewS3Sink checks the destination before the disk is read: the location
// parses, the credential is accepted, and no snapshot is there yet
// (ErrS3Exists). It finds the open uploads of an earlier capture to the
// same location, to resume them.
func NewS3Sink(ctx context.Context, loc string, o S3Options, so S3SinkOptions) (*S3Sink, error) {
	l, err := ParseS3Location(loc)
	if err != nil {
		return nil, err
	}
	ep, pathStyle, err := o.endpoint()
	if err != nil {
		return nil, err
	}
	tr := so.Transport
	if tr == nil {
		tr = NewHTTPClient(nil).Transport
	}
	mo := &minio.Options{Secure: ep.Scheme == "https", Transport: tr, Region: o.region(), BucketLookup: minio.BucketLookupDNS}
	if pathStyle {
		mo.BucketLookup = minio.BucketLookupPath
	}
	if c := o.Credential; c != nil {
		mo.Creds = credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	} else {
		mo.Creds = credentials.NewStatic("", "", "", credentials.SignatureAnonymous)
	}
	core, err := minio.NewCore(ep.Host, mo)
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %s: %w", ep.Host, err)
	}
	seg := so.SegmentSize
	if seg <= 0 {
		seg = DefaultSegmentSize
	}
	part := int64(S3PartSize)
	if need := (seg + 9999) / 10000; need > part {
		part = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	s := &S3Sink{t: &s3Signer{loc: l, opts: o}, core: core, partSize: part, retryFor: so.RetryFor, log: so.Log, open: map[string]openUpload{},
		conditional: true, lockStale: cmp.Or(so.LockStale, S3LockStale), client: &http.Client{Transport: tr, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if s.retryFor <= 0 {
		s.retryFor = DefaultRetryFor
	}
	if s.log == nil {
		s.log = func(string, ...any) {}
	}
	if err := s.checkAbsent(ctx); err != nil {
		return nil, err
	}
	if err := s.findOpen(ctx); err != nil {
		s.log("cannot list open uploads: the capture starts afresh", "location", l.String(), "err", err)
	}
	return s, nil
}

// checkAbsent refuses a location that holds a snapshot (ErrS3Exists).
// A GET, not a HEAD: a refusal then comes with the store's reason.
func (s *S3Sink) checkAbsent(ctx context.Context) error {
	l := s.t.loc
	body, _, _, err := s.core.GetObject(ctx, l.Bucket, l.Key+"/"+ManifestName, minio.GetObjectOptions{})
	if err == nil {
		body.Close()
		return fmt.Errorf("%s: %w (it has a %s); capture under another name, or delete that snapshot first", l, ErrS3Exists, ManifestName)
	}
	if r := minio.ToErrorResponse(err); r.Code != "NoSuchKey" {
		return s.refused(http.MethodGet, ManifestName, err)
	}
	return nil
}

// String names the destination.
func (s *S3Sink) String() string { return s.t.loc.String() }

// refused turns a minio error into the S3Error of s3Signer.refusal (or
// wraps a transport error).
func (s *S3Sink) refused(method, name string, err error) error {
	r := minio.ToErrorResponse(err)
	if r.StatusCode == 0 {
		return fmt.Errorf("%s %s/%s: %w", method, s.t.loc, name, err)
	}
	return s.t.refusal(method, name, r.StatusCode, r.Code, r.Message, "")
}

// findOpen lists the open multipart uploads under the snapshot's prefix.
func (s *S3Sink) findOpen(ctx context.Context) error {
	prefix := s.t.loc.Key + "/"
	keyMarker, idMarker := "", ""
	for range 1000 {
		res, err := s.core.ListMultipartUploads(ctx, s.t.loc.Bucket, prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return err
		}
		for _, u := range res.Uploads {
			if cur, ok := s.open[u.Key]; !ok || u.Initiated.After(cur.initiated) {
				s.open[u.Key] = openUpload{id: u.UploadID, initiated: u.Initiated}
			}
		}
		if !res.IsTruncated {
			return nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
	return errors.New("more than a million open uploads")
}

// Put implements Sink: it appends f to its segment's current part and
// sends every part that is full.
func (s *S3Sink) Put(ctx context.Context, f Frame) error {
	if s.cur == nil || f.Segment != len(s.segs)-1 {
		if f.Segment != len(s.segs) || f.Offset != 0 {
			return fmt.Errorf("internal error: frame of chunk %d goes to segment %d at %d after segment %d", f.Index, f.Segment, f.Offset, len(s.segs)-1)
		}
		if err := s.flush(ctx, true); err != nil {
			return err
		}
		if err := s.startSegment(ctx, f.Name); err != nil {
			return err
		}
	}
	if f.Offset != s.cur.size+int64(len(s.buf)) {
		return fmt.Errorf("internal error: frame of chunk %d at offset %d of %s, which holds %d bytes", f.Index, f.Offset, f.Name, s.cur.size+int64(len(s.buf)))
	}
	s.buf = append(s.buf, f.Data...)
	return s.flush(ctx, false)
}

// startSegment opens (or resumes) the multipart upload of segment name.
func (s *S3Sink) startSegment(ctx context.Context, name string) error {
	seg := &s3Segment{key: s.t.loc.Key + "/" + name, stored: map[int]minio.ObjectPart{}}
	if u, ok := s.open[seg.key]; ok {
		if err := s.listParts(ctx, seg, u.id); err != nil {
			s.log("cannot list the parts of an open upload: starting it afresh", "object", seg.key, "err", err)
		} else {
			seg.uploadID = u.id
			s.log("resuming an open upload", "object", seg.key, "parts stored", len(seg.stored))
		}
	}
	if seg.uploadID == "" {
		err := s.retry(ctx, "start the upload of "+name, func() error {
			id, err := s.core.NewMultipartUpload(ctx, s.t.loc.Bucket, seg.key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
			seg.uploadID = id
			return err
		})
		if err != nil {
			return s.refused(http.MethodPost, name, err)
		}
	}
	s.segs = append(s.segs, seg)
	s.cur = seg
	return nil
}

func (s *S3Sink) listParts(ctx context.Context, seg *s3Segment, id string) error {
	marker := 0
	for range 100 {
		res, err := s.core.ListObjectParts(ctx, s.t.loc.Bucket, seg.key, id, marker, 1000)
		if err != nil {
			return err
		}
		for _, p := range res.ObjectParts {
			seg.stored[p.PartNumber] = p
		}
		if !res.IsTruncated {
			return nil
		}
		marker = res.NextPartNumberMarker
	}
	return errors.New("more than 100,000 parts")
}

// flush sends the buffered bytes of the current segment as parts: every
// full part, and with last also the rest.
func (s *S3Sink) flush(ctx context.Context, last bool) error {
	if s.cur == nil {
		return nil
	}
	for int64(len(s.buf)) >= s.partSize || last && len(s.buf) > 0 {
		n := min(int64(len(s.buf)), s.partSize)
		if err := s.sendPart(ctx, s.buf[:n]); err != nil {
			return err
		}
		s.cur.size += n
		s.buf = append(s.buf[:0], s.buf[n:]...)
	}
	return nil
}

// sendPart stores data as the current segment's next part, unless the
// store holds that part already (same size and MD5: a resumed upload).
func (s *S3Sink) sendPart(ctx context.Context, data []byte) error {
	seg := s.cur
	num := len(seg.parts) + 1
	if num > 10000 {
		return fmt.Errorf("internal error: %s needs more than 10,000 parts of %d bytes", seg.key, s.partSize)
	}
	sum := md5.Sum(data)
	etag := hex.EncodeToString(sum[:])
	if p, ok := seg.stored[num]; ok && p.Size == int64(len(data)) && strings.Trim(p.ETag, `"`) == etag {
		seg.parts = append(seg.parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
		s.Resumed += int64(len(data))
		return nil
	}
	// With the payload's SHA-256 the request is signed whole, not
	// streamed as aws-chunked (which some stores keep as the object's
	// Content-Encoding).
	sha := sha256Hex(data)
	var got minio.ObjectPart
	err := s.retry(ctx, fmt.Sprintf("send part %d of %s", num, seg.key), func() error {
		var err error
		got, err = s.core.PutObjectPart(ctx, s.t.loc.Bucket, seg.key, seg.uploadID, num, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(sum[:]), Sha256Hex: sha, DisableContentSha256: true})
		return err
	})
	if err != nil {
		return s.refused(http.MethodPut, seg.key[len(s.t.loc.Key)+1:], err)
	}
	// The store checked the part against its Content-MD5. Its ETag is
	// that MD5 on most stores, but not under SSE-KMS or SSE-C: then a
	// resume sends the part again, and the chunk hashes of the manifest
	// stay the end-to-end check.
	seg.parts = append(seg.parts, minio.CompletePart{PartNumber: num, ETag: got.ETag})
	s.Sent += int64(len(data))
	return nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// retry runs op until it succeeds, fails for good (the store refused
// it), the context ends, or retryFor has passed since the first failure.
func (s *S3Sink) retry(ctx context.Context, what string, op func() error) error {
	wait := 500 * time.Millisecond
	var failing time.Time
	for i := 1; ; i++ {
		err := op()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if r := minio.ToErrorResponse(err); r.StatusCode != 0 && r.StatusCode < 500 && r.StatusCode != http.StatusTooManyRequests && r.Code != "ConditionalRequestConflict" {
			return err
		}
		if CertError(err) != nil {
			return err
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		if time.Since(failing) >= s.retryFor {
			return fmt.Errorf("gave up after %d attempts in %s: %w; check that the store is up and reachable, then capture again (the parts stored so far are kept and resumed)", i, time.Since(failing).Round(time.Second), err)
		}
		s.log("retrying", "request", what, "attempt", i, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 15*time.Second)
	}
}

// S3CommitLock is the object a capture holds while it publishes a
// snapshot (KEY/.rewind-commit): two captures to one name never complete
// segments at the same time, so neither can mix its segments into the
// other's snapshot.
const S3CommitLock = ".rewind-commit"

// S3LockStale is the age, on the store's clock (the lock object's
// Last-Modified), after which a commit lock is taken to be left by a
// capture that died while publishing. The holder refreshes its lock after
// every segment it completes.
const S3LockStale = 15 * time.Minute

type commitLock struct {
	Capture string    `json:"capture"`
	Host    string    `json:"host"`
	Since   time.Time `json:"since"` // the holder's clock: for messages only
}

func (s *S3Sink) lockKey() string { return s.t.loc.Key + "/" + S3CommitLock }

// putLock writes the lock object with the conditions of opts and returns
// its ETag.
func (s *S3Sink) putLock(ctx context.Context, opts minio.PutObjectOptions) (string, error) {
	host, _ := os.Hostname()
	body, _ := json.Marshal(commitLock{Capture: s.lockID, Host: host, Since: time.Now().UTC()})
	sum := md5.Sum(body)
	opts.ContentType, opts.DisableContentSha256, opts.CacheControl = "application/json", true, "no-store"
	var etag string
	err := s.retry(ctx, "write the commit lock", func() error {
		info, err := s.core.PutObject(ctx, s.t.loc.Bucket, s.lockKey(), bytes.NewReader(body), int64(len(body)),
			base64.StdEncoding.EncodeToString(sum[:]), sha256Hex(body), opts)
		etag = strings.Trim(info.ETag, `"`)
		return err
	})
	return etag, err
}

// readLock returns the lock object's holder (zero when its body does not
// decode), its ETag and its Last-Modified on the store's clock.
func (s *S3Sink) readLock(ctx context.Context) (commitLock, string, time.Time, error) {
	var held commitLock
	obj, info, _, err := s.core.GetObject(ctx, s.t.loc.Bucket, s.lockKey(), minio.GetObjectOptions{})
	if err != nil {
		return held, "", time.Time{}, err
	}
	defer obj.Close()
	_ = json.NewDecoder(io.LimitReader(obj, 4096)).Decode(&held)
	return held, strings.Trim(info.ETag, `"`), info.LastModified, nil
}

func isPrecondition(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// lock takes the commit lock with a conditional PUT (If-None-Match: *).
// A lock held by another capture refuses the commit, unless the store
// last saw it written more than S3LockStale ago (its owner refreshes it
// after every segment), when it is taken over with If-Match on its ETag,
// so that two captures cannot both take it. It then checks that the store
// honours If-None-Match at all.
func (s *S3Sink) lock(ctx context.Context) (err error) {
	id := make([]byte, 8)
	rand.Read(id)
	s.lockID = hex.EncodeToString(id)
	defer func() {
		if err != nil {
			s.unlock()
		}
	}()
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	etag, err := s.putLock(ctx, opts)
	if err != nil && !isPrecondition(err) {
		return s.refused(http.MethodPut, S3CommitLock, err)
	}
	if err != nil {
		held, heldETag, modified, rerr := s.readLock(ctx)
		if rerr != nil {
			return s.refused(http.MethodGet, S3CommitLock, rerr)
		}
		if held.Capture == s.lockID {
			etag = heldETag // a retry after the store took it and the answer was lost
		} else {
			age, _ := s.storeAge(ctx, modified)
			if age < s.lockStale {
				return fmt.Errorf("%s: another capture (on %s, since %s) is publishing a snapshot under this name: wait for it (a capture to a name that then holds a snapshot is refused), or, if no capture runs, delete %s/%s", s.t.loc,
					orUnknown(held.Host), modified.UTC().Format(time.RFC3339), s.t.loc, S3CommitLock)
			}
			s.log("taking over a commit lock left by a capture that died while publishing", "location", s.t.loc.String(), "host", held.Host, "last written", modified)
			opts = minio.PutObjectOptions{}
			opts.SetMatchETag(heldETag)
			if etag, err = s.putLock(ctx, opts); err != nil {
				return fmt.Errorf("%s: the stale commit lock was taken by another capture first: %w", s.t.loc, s.refused(http.MethodPut, S3CommitLock, err))
			}
		}
	}
	s.lockETag = etag
	// A store that ignores If-None-Match would let two captures both hold
	// the lock: the second PUT must be refused.
	opts = minio.PutObjectOptions{}
	opts.SetMatchETagExcept("*")
	if _, err := s.putLock(ctx, opts); err == nil {
		s.lockETag = ""
		if _, etag, _, rerr := s.readLock(ctx); rerr == nil {
			s.lockETag = etag
		}
		s.conditional = false
		s.log("the store does not honour If-None-Match: two captures to one name at the same moment are not kept apart (each still checks its segments before publishing)", "location", s.t.loc.String())
	} else if !isPrecondition(err) {
		return s.refused(http.MethodPut, S3CommitLock, err)
	}
	return nil
}

// storeAge is how long ago, on the store's clock, t was: the store's Date
// header of a fresh answer minus t (this machine's clock may be off by
// the 15 minutes a signature allows).
func (s *S3Sink) storeAge(ctx context.Context, t time.Time) (time.Duration, error) {
	u, err := s.t.opts.ObjectURL(s.t.loc, S3CommitLock)
	if err != nil {
		return time.Since(t), err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return time.Since(t), err
	}
	req, err = s.t.sign(req, S3CommitLock)
	if err != nil {
		return time.Since(t), err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return time.Since(t), err
	}
	resp.Body.Close()
	now, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Since(t), err
	}
	return now.Sub(t), nil
}

// refresh rewrites the lock (If-Match on the ETag last written), so that
// it is not taken for stale while this capture publishes, and fails when
// the lock is no longer this capture's.
func (s *S3Sink) refresh(ctx context.Context) error {
	if !s.conditional {
		return s.stillOurs(ctx)
	}
	var opts minio.PutObjectOptions
	opts.SetMatchETag(s.lockETag)
	etag, err := s.putLock(ctx, opts)
	if isPrecondition(err) {
		if err := s.stillOurs(ctx); err != nil {
			return err
		}
		if _, etag, _, err = s.readLock(ctx); err != nil {
			return s.refused(http.MethodGet, S3CommitLock, err)
		}
	} else if err != nil {
		return s.refused(http.MethodPut, S3CommitLock, err)
	}
	s.lockETag = etag
	return nil
}

// stillOurs fails when another capture holds the lock now.
func (s *S3Sink) stillOurs(ctx context.Context) error {
	held, _, _, err := s.readLock(ctx)
	if err != nil {
		return s.refused(http.MethodGet, S3CommitLock, err)
	}
	if held.Capture != s.lockID {
		return fmt.Errorf("%s: another capture (on %s) took the commit lock while this one was publishing: the capture is not published; verify the snapshot there", s.t.loc, orUnknown(held.Host))
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown host"
	}
	return s
}

// unlock removes the commit lock if it is still this capture's (best
// effort: a lock left behind goes stale).
func (s *S3Sink) unlock() {
	if s.lockID == "" {
		return
	}
	defer func() { s.lockID, s.lockETag = "", "" }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held, _, _, err := s.readLock(ctx)
	if err != nil || held.Capture != s.lockID {
		return
	}
	if err := s.core.RemoveObject(ctx, s.t.loc.Bucket, s.lockKey(), minio.RemoveObjectOptions{}); err != nil {
		s.log("cannot remove the commit lock; it goes stale in "+S3LockStale.String(), "location", s.t.loc.String(), "err", err)
	}
}

// holds reports whether the store's object name is exactly b.
func (s *S3Sink) holds(ctx context.Context, name string, b []byte) bool {
	obj, _, _, err := s.core.GetObject(ctx, s.t.loc.Bucket, s.t.loc.Key+"/"+name, minio.GetObjectOptions{})
	if err != nil {
		return false
	}
	defer obj.Close()
	got, err := io.ReadAll(io.LimitReader(obj, int64(len(b))+1))
	return err == nil && bytes.Equal(got, b)
}

// multipartETag is the ETag S3 gives an object completed from parts:
// the MD5 of the parts' MD5s, a dash and the number of parts.
func multipartETag(parts []minio.CompletePart) string {
	h := md5.New()
	for _, p := range parts {
		b, _ := hex.DecodeString(strings.Trim(p.ETag, `"`))
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}

// Commit implements Sink. Under the commit lock, it checks again that no
// snapshot is there (one may have been published since the capture
// started), completes every segment's upload and checks each object
// (size, and that it is the object just completed), then writes the
// signature and, last, manifest.json (If-None-Match: *).
func (s *S3Sink) Commit(ctx context.Context, m *Manifest, data, signature []byte) error {
	if err := s.flush(ctx, true); err != nil {
		return err
	}
	if len(s.segs) != len(m.Segments) {
		return fmt.Errorf("internal error: %d segments sent, the manifest lists %d", len(s.segs), len(m.Segments))
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	if err := s.checkAbsent(ctx); err != nil {
		return err
	}
	for i, seg := range s.segs {
		name := m.Segments[i].Name
		if seg.size != m.Segments[i].Size {
			return fmt.Errorf("internal error: %s holds %d bytes, the manifest says %d", name, seg.size, m.Segments[i].Size)
		}
		sort.Slice(seg.parts, func(a, b int) bool { return seg.parts[a].PartNumber < seg.parts[b].PartNumber })
		var done string // the completed object's ETag; "" when the answer was lost
		err := s.retry(ctx, "complete "+name, func() error {
			res, err := s.core.CompleteMultipartUpload(ctx, s.t.loc.Bucket, seg.key, seg.uploadID, seg.parts, minio.PutObjectOptions{})
			if r := minio.ToErrorResponse(err); r.Code == "NoSuchUpload" {
				// A retry after the store completed it but the answer
				// was lost, or an upload aborted (a lifecycle rule):
				// only the object's ETag can tell, below.
				return nil
			}
			done = strings.Trim(res.ETag, `"`)
			return err
		})
		if err != nil {
			return s.refused(http.MethodPost, name, err)
		}
		info, err := s.core.StatObject(ctx, s.t.loc.Bucket, seg.key, minio.StatObjectOptions{})
		if err != nil {
			return s.refused(http.MethodHead, name, err)
		}
		etag := strings.Trim(info.ETag, `"`)
		switch {
		case info.Size != seg.size:
			return fmt.Errorf("%s/%s is %d bytes in the store after its upload, %d were sent: the capture is not published", s.t.loc, name, info.Size, seg.size)
		case done != "" && etag != done:
			return fmt.Errorf("%s/%s changed right after its upload was completed (ETag %s, then %s): something else writes there; the capture is not published", s.t.loc, name, done, etag)
		case done == "" && etag != multipartETag(seg.parts):
			return fmt.Errorf("%s/%s: its upload vanished (aborted, by a lifecycle rule or by hand?) and the object there (ETag %s) is not the parts this capture sent: capture again; the capture is not published", s.t.loc, name, etag)
		}
		seg.etag = etag
		if err := s.refresh(ctx); err != nil {
			return err
		}
	}
	// Right before the manifest: every segment is still the object this
	// capture completed, and the lock still this capture's.
	for i, seg := range s.segs {
		info, err := s.core.StatObject(ctx, s.t.loc.Bucket, seg.key, minio.StatObjectOptions{})
		if err != nil {
			return s.refused(http.MethodHead, m.Segments[i].Name, err)
		}
		if strings.Trim(info.ETag, `"`) != seg.etag {
			return fmt.Errorf("%s/%s was replaced while this capture was publishing (ETag %s, then %s): another capture writes there; the capture is not published", s.t.loc, m.Segments[i].Name, seg.etag, info.ETag)
		}
	}
	// The manifest and signature say no-cache: an HTTP cache in front of
	// the store (docs/scale.md) asks every time, so a snapshot deleted
	// and captured again under its name is never read with an old
	// manifest. Segments keep the store's default: a stale one fails
	// its chunks' hashes, naming them.
	put := func(name string, b []byte, ctype string) error {
		sum := md5.Sum(b)
		opts := minio.PutObjectOptions{ContentType: ctype, CacheControl: "no-cache", DisableContentSha256: true}
		if name == ManifestName {
			opts.SetMatchETagExcept("*") // never over a manifest
		}
		err := s.retry(ctx, "write "+name, func() error {
			_, err := s.core.PutObject(ctx, s.t.loc.Bucket, s.t.loc.Key+"/"+name, bytes.NewReader(b), int64(len(b)),
				base64.StdEncoding.EncodeToString(sum[:]), sha256Hex(b), opts)
			return err
		})
		if r := minio.ToErrorResponse(err); name == ManifestName && r.StatusCode == http.StatusPreconditionFailed {
			if s.holds(ctx, name, b) {
				return nil // a retry after the store wrote it and the answer was lost
			}
			return fmt.Errorf("%s: %w (one was published while this capture was publishing, against the commit lock): this capture's segments may have replaced that snapshot's; verify it", s.t.loc, ErrS3Exists)
		}
		if err != nil {
			return s.refused(http.MethodPut, name, err)
		}
		return nil
	}
	if signature != nil {
		if err := put(SignatureName, signature, "text/plain"); err != nil {
			return err
		}
	} else if _, err := s.core.StatObject(ctx, s.t.loc.Bucket, s.t.loc.Key+"/"+SignatureName, minio.StatObjectOptions{}); err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" && minio.ToErrorResponse(err).StatusCode != http.StatusNotFound {
		// Cannot tell whether an old signature is there: fail closed.
		return s.refused(http.MethodHead, SignatureName, err)
	} else if err == nil {
		// A signature left by an earlier capture that did not finish
		// would not match this manifest.
		if err := s.core.RemoveObject(ctx, s.t.loc.Bucket, s.t.loc.Key+"/"+SignatureName, minio.RemoveObjectOptions{}); err != nil {
			return s.refused(http.MethodDelete, SignatureName, err)
		}
	}
	if err := s.refresh(ctx); err != nil {
		return err
	}
	if err := put(ManifestName, data, "application/json"); err != nil {
		return err
	}
	return s.checkPublished(ctx, m, data)
}

// checkPublished reads back what a reader will find: this manifest over
// the segments this capture completed. On a store that honours
// conditional writes nothing else can be there; on one that does not, a
// second capture of the same name at the same moment is caught here (and
// this capture fails, never reports success over a mixed snapshot).
func (s *S3Sink) checkPublished(ctx context.Context, m *Manifest, data []byte) error {
	mixed := func(what string) error {
		return fmt.Errorf("%s: %s right after this capture published it: another capture wrote under this name at the same moment (the store does not keep writes apart: it ignores If-None-Match); the snapshot there may mix the two: verify it, or delete it and capture again", s.t.loc, what)
	}
	if !s.holds(ctx, ManifestName, data) {
		return mixed("the manifest is not this capture's")
	}
	for i, seg := range s.segs {
		info, err := s.core.StatObject(ctx, s.t.loc.Bucket, seg.key, minio.StatObjectOptions{})
		if err != nil {
			return s.refused(http.MethodHead, m.Segments[i].Name, err)
		}
		if strings.Trim(info.ETag, `"`) != seg.etag {
			return mixed(m.Segments[i].Name + " was replaced")
		}
	}
	return nil
}

// Abort implements Sink. No object of the snapshot is visible (segments
// are completed only in Commit); the open uploads are kept for a resume.
func (s *S3Sink) Abort() {
	if len(s.segs) > 0 {
		s.log("the capture did not finish: no snapshot was written; its uploaded parts are kept, and the same capture run again resumes them", "location", s.t.loc.String(), "bytes", s.Sent+s.Resumed)
	}
}
