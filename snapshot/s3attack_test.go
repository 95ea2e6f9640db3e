package snapshot_test

// Regression tests of the attacks on s3:// captures and restores (a
// breaker session's reproductions, made strict): overlapping captures to
// one name, a failed or vanished commit, a segment replaced during a
// restore, keys with punctuation, AWS's 403 for missing objects, lost
// answers, and a resumed upload from another capture.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

func capS3(t *testing.T, sink *snapshot.S3Sink, disk []byte) (*snapshot.Manifest, error) {
	return snapshot.CaptureTo(context.Background(), bytes.NewReader(disk), sink, snapshot.CaptureOptions{DiskSize: int64(len(disk)), ChunkSize: 1 << 20, SegmentSize: 40 << 20, Jobs: 2})
}

func sinkS3(t *testing.T, loc string, o snapshot.S3Options) *snapshot.S3Sink {
	sink, err := snapshot.NewS3Sink(context.Background(), loc, o, snapshot.S3SinkOptions{SegmentSize: 40 << 20, RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return sink
}

// Two captures to one name that overlap in time: the existence check is
// only at NewS3Sink, so the later Commit silently replaces a published
// snapshot.
func TestS3OverlappingCapturesRefused(t *testing.T) {
	srv := s3test.Start(t, "lab")
	loc := "s3://lab/rooms/a/pc1"
	o := s3Opts(srv, srv.Secret)
	diskA, diskB := usedDisk(56<<20, 11), usedDisk(56<<20, 12)
	sinkA := sinkS3(t, loc, o) // capture A starts (checks: no snapshot yet)
	sinkB := sinkS3(t, loc, o) // capture B starts too
	if _, err := capS3(t, sinkB, diskB); err != nil {
		t.Fatal(err)
	}
	if back := readBack(t, loc, o); sha256.Sum256(back) != sha256.Sum256(diskB) {
		t.Fatal("B does not read back")
	}
	_, err := capS3(t, sinkA, diskA) // A finishes later
	if !errors.Is(err, snapshot.ErrS3Exists) {
		t.Fatalf("capture A over the published snapshot B: %v; want ErrS3Exists", err)
	}
	if back := readBack(t, loc, o); sha256.Sum256(back) != sha256.Sum256(diskB) {
		t.Fatal("after A's refused commit the location no longer reads as B")
	}
}

// Same, but A's Commit fails after completing data.000: B's published
// manifest now points at A's data.000 -- the published snapshot is broken.
func TestS3FailedCommitKeepsPublishedSnapshot(t *testing.T) {
	srv := s3test.Start(t, "lab")
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/data.001") && r.URL.Query().Has("uploadId") {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>quota</Message></Error>`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	loc := "s3://lab/rooms/a/pc1"
	o := s3Opts(srv, srv.Secret)
	oA := o
	oA.Endpoint = proxy.URL
	diskA, diskB := usedDisk(56<<20, 21), usedDisk(56<<20, 22)
	sinkA := sinkS3(t, loc, oA)
	sinkB := sinkS3(t, loc, o)
	if _, err := capS3(t, sinkB, diskB); err != nil {
		t.Fatal(err)
	}
	_, err := capS3(t, sinkA, diskA)
	if !errors.Is(err, snapshot.ErrS3Exists) {
		t.Fatalf("capture A after B was published: %v; want ErrS3Exists before any segment is completed", err)
	}
	s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatalf("BROKEN: the published snapshot B no longer opens after A's failed capture: %v", err)
	}
	defer s.Close()
	for i, c := range s.Manifest.Chunks {
		if c.Zero {
			continue
		}
		frame, err := s.ReadFrame(context.Background(), i, nil)
		if err == nil {
			err = s.CheckFrame(i, frame)
		}
		if err != nil {
			t.Fatalf("BROKEN: the published snapshot B is damaged after A's failed capture: chunk %d: %v", i, err)
		}
	}
}

// Commit treats NoSuchUpload on CompleteMultipartUpload as "completed,
// the answer was lost" and checks only the object's size. When the upload
// was in fact aborted (a lifecycle AbortIncompleteMultipartUpload rule,
// which docs/s3.md recommends, or an admin) and an older object of the
// same size sits under the key (an earlier capture that died in Commit;
// every segment of an incompressible disk has the same size), the capture
// publishes a manifest over someone else's segment and exits 0.
func TestS3VanishedUploadIsNotPublished(t *testing.T) {
	srv := s3test.Start(t, "lab")
	loc := "s3://lab/pc9"
	o := s3Opts(srv, srv.Secret)
	diskX, diskY := testdisk.RandomBytes(31, 56<<20), testdisk.RandomBytes(32, 56<<20)
	if _, err := capS3(t, sinkS3(t, loc, o), diskX); err != nil {
		t.Fatal(err)
	}
	// What an earlier capture that died in Commit leaves: data.000 only.
	cl := srv.Client(t)
	for _, k := range []string{"pc9/manifest.json", "pc9/data.001"} {
		if err := cl.RemoveObject(context.Background(), "lab", k, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	core := &minio.Core{Client: cl}
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.URL.Query().Get("uploadId"); r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/pc9/data.000") && id != "" {
			// the lifecycle rule fires just before the Complete
			if err := core.AbortMultipartUpload(context.Background(), "lab", "pc9/data.000", id); err != nil {
				t.Errorf("abort: %v", err)
			}
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	oY := o
	oY.Endpoint = proxy.URL
	_, err := capS3(t, sinkS3(t, loc, oY), diskY)
	if err == nil || !strings.Contains(err.Error(), "its upload vanished") {
		t.Fatalf("capture Y whose data.000 upload was aborted, over an older data.000 of the same size: %v; want a refusal naming the vanished upload", err)
	}
	if _, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 5 * time.Second}); err == nil {
		t.Fatal("a manifest was published")
	}
}

// A segment replaced (same size) after the restore opened the snapshot.
func TestS3SegmentReplacedDuringRestore(t *testing.T) {
	srv := s3test.Start(t, "lab")
	loc := "s3://lab/pc5"
	o := s3Opts(srv, srv.Secret)
	disk := testdisk.RandomBytes(41, 20<<20)
	if _, err := capS3(t, sinkS3(t, loc, o), disk); err != nil {
		t.Fatal(err)
	}
	s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seg := s.Manifest.Segments[0]
	other := testdisk.RandomBytes(42, int(seg.Size))
	if _, err := srv.Client(t).PutObject(context.Background(), "lab", "pc5/"+seg.Name, bytes.NewReader(other), int64(len(other)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadFrame(context.Background(), 0, nil)
	if !errors.Is(err, snapshot.ErrChanged) || !strings.Contains(err.Error(), "restore again") {
		t.Errorf("a swapped segment was read without ErrChanged: %v", err)
	}
}

// Keys with + = @ (allowed by ParseS3Location): minio-go writes them
// %-encoded, HTTPSource reads them raw. Do reads find the same objects?
func TestS3KeyPunctuation(t *testing.T) {
	srv := s3test.Start(t, "lab")
	o := s3Opts(srv, srv.Secret)
	for _, loc := range []string{"s3://lab/a+b/pc", "s3://lab/a=b@c/pc", "s3://lab/x/y+z=1@2/pc"} {
		disk := testdisk.RandomBytes(51, 4<<20)
		if _, err := capS3(t, sinkS3(t, loc, o), disk); err != nil {
			t.Errorf("capture %s: %v", loc, err)
			continue
		}
		s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 3 * time.Second})
		if err != nil {
			t.Errorf("open %s: %v", loc, err)
			continue
		}
		s.Close()
		if back := readBack(t, loc, o); sha256.Sum256(back) != sha256.Sum256(disk) {
			t.Errorf("%s reads back differently", loc)
		}
	}
}

// AWS answers 403 AccessDenied, not 404 NoSuchKey, to a GET of a missing
// key when the caller lacks s3:ListBucket -- the rights docs/s3.md tells
// labs to give (s3:GetObject for restores; GetObject, PutObject,
// ListBucketMultipartUploads, ListMultipartUploadParts for captures). This
// proxy makes versitygw answer as AWS does for such a key.
func awsNoListProxy(t *testing.T, endpoint string) string {
	target, _ := url.Parse(endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.StatusCode == http.StatusNotFound && resp.Request.URL.Query().Get("uploadId") == "" {
			resp.StatusCode = http.StatusForbidden
			resp.Status = "403 Forbidden"
			body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`
			resp.Body = io.NopCloser(strings.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
		}
		return nil
	}
	p := httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p.URL
}

func TestS3WithoutListBucket(t *testing.T) {
	srv := s3test.Start(t, "lab")
	o := s3Opts(srv, srv.Secret)
	disk := testdisk.RandomBytes(61, 4<<20)
	if _, err := capS3(t, sinkS3(t, "s3://lab/pc7", o), disk); err != nil {
		t.Fatal(err)
	}
	aws := o
	aws.Endpoint = awsNoListProxy(t, srv.Endpoint)
	s, err := snapshot.Open(context.Background(), "s3://lab/pc7", snapshot.OpenOptions{S3: &aws, RetryFor: 3 * time.Second})
	if err != nil {
		t.Fatalf("restore of an unsigned snapshot with s3:GetObject only (AWS semantics): %v", err)
	}
	if s.Signed {
		t.Error("a signature the store refused counts as present")
	}
	s.Close()
	// Trusted keys still refuse it: a 403 is never a signature.
	pub, _, _ := ed25519.GenerateKey(nil)
	if _, err := snapshot.Open(context.Background(), "s3://lab/pc7", snapshot.OpenOptions{S3: &aws, Trust: []ed25519.PublicKey{pub}, RetryFor: 3 * time.Second}); !errors.Is(err, snapshot.ErrSignature) {
		t.Errorf("with trusted keys: %v; want ErrSignature", err)
	}
	// A capture cannot tell "no snapshot" from "no right": the advice names s3:ListBucket.
	_, err = snapshot.NewS3Sink(context.Background(), "s3://lab/pc8", aws, snapshot.S3SinkOptions{})
	if err == nil || !strings.Contains(err.Error(), "s3:ListBucket") {
		t.Errorf("capture with a key that may not list (AWS semantics): %v; want advice naming s3:ListBucket", err)
	}
}

// The answer to every segment's CompleteMultipartUpload (and to the
// manifest PUT) is lost once: the store did it, the client saw a cut.
func TestS3CompleteAnswerLost(t *testing.T) {
	srv := s3test.Start(t, "lab")
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	cut := map[string]bool{}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isComplete := r.Method == http.MethodPost && r.URL.Query().Get("uploadId") != ""
		isManifest := r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifest.json")
		mu.Lock()
		doCut := (isComplete || isManifest) && !cut[r.Method+r.URL.Path]
		if doCut {
			cut[r.Method+r.URL.Path] = true
		}
		mu.Unlock()
		if !doCut {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r) // the store does it
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close() // the answer is lost
	}))
	defer proxy.Close()
	o := s3Opts(srv, srv.Secret)
	oc := o
	oc.Endpoint = proxy.URL
	disk := usedDisk(56<<20, 71)
	if _, err := capS3(t, sinkS3(t, "s3://lab/pc6", oc), disk); err != nil {
		t.Fatalf("capture with lost answers: %v", err)
	}
	if back := readBack(t, "s3://lab/pc6", o); sha256.Sum256(back) != sha256.Sum256(disk) {
		t.Fatal("reads back differently")
	}
}

// A capture of disk A dies with parts stored; a capture of another disk B
// (sharing A's first 20 MiB) to the same name resumes those uploads.
func TestS3ResumeFromOtherCapture(t *testing.T) {
	srv := s3test.Start(t, "lab")
	loc := "s3://lab/pcr"
	o := s3Opts(srv, srv.Secret)
	diskA := usedDisk(56<<20, 81)
	diskB := append([]byte(nil), diskA...)
	copy(diskB[20<<20:], testdisk.RandomBytes(82, 36<<20))
	sinkA := sinkS3(t, loc, o)
	_, err := snapshot.CaptureTo(context.Background(), failingDisk{bytes.NewReader(diskA), 54 << 20}, sinkA, snapshot.CaptureOptions{DiskSize: int64(len(diskA)), ChunkSize: 1 << 20, SegmentSize: 40 << 20, Jobs: 2})
	if err == nil {
		t.Fatal("A did not fail")
	}
	sinkB := sinkS3(t, loc, o)
	if _, err := capS3(t, sinkB, diskB); err != nil {
		t.Fatal(err)
	}
	if back := readBack(t, loc, o); sha256.Sum256(back) != sha256.Sum256(diskB) {
		t.Fatal("MIXED: B reads back differently")
	}
}
