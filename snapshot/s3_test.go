package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// usedDisk returns a disk image that looks used: random (incompressible)
// runs, zeros, and repeated text.
func usedDisk(size int, seed uint64) []byte {
	d := testdisk.RandomBytes(seed, size)
	copy(d[size/4:size/4+size/8], make([]byte, size/8))
	copy(d[size/2:], bytes.Repeat([]byte("log line: restore finished\n"), size/8/27))
	return d
}

func s3Opts(s *s3test.Server, secret string) snapshot.S3Options {
	return snapshot.S3Options{Endpoint: s.Endpoint, Credential: &snapshot.S3Credential{AccessKeyID: s.Access, SecretAccessKey: secret, Source: "the test"}}
}

// capture writes disk to loc through an S3Sink and returns the sink.
func captureS3(t *testing.T, disk io.ReaderAt, size int64, loc string, o snapshot.S3Options) (*snapshot.S3Sink, *snapshot.Manifest, error) {
	t.Helper()
	sink, err := snapshot.NewS3Sink(context.Background(), loc, o, snapshot.S3SinkOptions{SegmentSize: 40 << 20, RetryFor: 20 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	m, err := snapshot.CaptureTo(context.Background(), disk, sink, snapshot.CaptureOptions{DiskSize: size, ChunkSize: 1 << 20, SegmentSize: 40 << 20, Jobs: 2})
	return sink, m, err
}

// readBack opens loc and returns the disk it holds, every frame checked
// against its hash.
func readBack(t *testing.T, loc string, o snapshot.S3Options) []byte {
	t.Helper()
	s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 20 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", loc, err)
	}
	defer s.Close()
	m := s.Manifest
	out := make([]byte, m.DiskSize)
	var buf []byte
	for i, c := range m.Chunks {
		if c.Zero {
			continue
		}
		frame, err := s.ReadFrame(context.Background(), i, buf)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if err := s.CheckFrame(i, frame); err != nil {
			t.Fatal(err)
		}
		if err := snapshot.DecodeFrame(out[c.Offset:c.Offset+c.Length], frame); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		buf = frame
	}
	return out
}

func keys(t *testing.T, s *s3test.Server, bucket, prefix string) []string {
	t.Helper()
	var k []string
	for o := range s.Client(t).ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		k = append(k, o.Key)
	}
	return k
}

// TestS3CaptureRestore: a capture to versitygw (which checks every
// signature) reads back byte for byte, in two segments of several parts,
// and a second capture to the same name is refused.
func TestS3CaptureRestore(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(56<<20, 1)
	loc := "s3://lab/rooms/a/pc1"
	_, m, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), loc, s3Opts(srv, srv.Secret))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Segments) < 2 {
		t.Fatalf("%d segments, want at least 2", len(m.Segments))
	}
	got := strings.Join(keys(t, srv, "lab", "rooms/a/pc1/"), " ")
	if !strings.Contains(got, "rooms/a/pc1/manifest.json") || !strings.Contains(got, "rooms/a/pc1/data.000") || !strings.Contains(got, "rooms/a/pc1/data.001") {
		t.Fatalf("objects %s", got)
	}
	if back := readBack(t, loc, s3Opts(srv, srv.Secret)); sha256.Sum256(back) != sha256.Sum256(disk) {
		t.Fatal("the disk read back from S3 differs from the one captured")
	}
	// Plain objects, as any HTTP client (a cache, curl) reads them.
	for _, name := range []string{"manifest.json", "data.000"} {
		info, err := srv.Client(t).StatObject(context.Background(), "lab", "rooms/a/pc1/"+name, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if enc := info.Metadata.Get("Content-Encoding"); enc != "" {
			t.Errorf("%s is stored with Content-Encoding %q, want none", name, enc)
		}
	}
	if _, _, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), loc, s3Opts(srv, srv.Secret)); !errors.Is(err, snapshot.ErrS3Exists) {
		t.Fatalf("second capture to %s: %v, want ErrS3Exists", loc, err)
	}
}

// failingDisk fails every read at or after off.
type failingDisk struct {
	r   io.ReaderAt
	off int64
}

func (f failingDisk) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.off {
		return 0, errors.New("medium error (simulated)")
	}
	return f.r.ReadAt(p, off)
}

// TestS3HalfFinishedCaptureIsNoSnapshot: a capture cut off after most of
// its parts were sent leaves no object under the name (Open says the
// capture did not finish); the same capture run again resumes the parts
// already stored and the result reads back byte for byte.
func TestS3HalfFinishedCaptureIsNoSnapshot(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(56<<20, 2)
	loc := "s3://lab/pc2"
	o := s3Opts(srv, srv.Secret)
	_, _, err := captureS3(t, failingDisk{bytes.NewReader(disk), 50 << 20}, int64(len(disk)), loc, o)
	if err == nil || !strings.Contains(err.Error(), "medium error") {
		t.Fatalf("capture of a failing disk: %v", err)
	}
	if k := keys(t, srv, "lab", "pc2/"); len(k) != 0 {
		t.Fatalf("a failed capture left objects %v", k)
	}
	_, err = snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o})
	if err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("open of the half-finished capture: %v, want 'did not finish'", err)
	}
	sink, _, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), loc, o)
	if err != nil {
		t.Fatal(err)
	}
	if sink.Resumed < 32<<20 {
		t.Errorf("the second capture resumed %d bytes, want at least the 32 MiB of full parts sent before the failure", sink.Resumed)
	}
	if back := readBack(t, loc, o); sha256.Sum256(back) != sha256.Sum256(disk) {
		t.Fatal("the resumed capture reads back differently")
	}
}

// TestS3Refusals: a wrong secret, an unknown key, no bucket and an
// anonymous read each fail at once with the store's reason, and no message
// holds the secret.
func TestS3Refusals(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(4<<20, 3)
	if _, _, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), "s3://lab/pc3", s3Opts(srv, srv.Secret)); err != nil {
		t.Fatal(err)
	}
	wrong := "wrong-secret-9876543210"
	unknown := s3Opts(srv, srv.Secret)
	unknown.Credential.AccessKeyID = "nosuchkey"
	tests := []struct {
		name, loc string
		o         snapshot.S3Options
		want      []string
	}{
		{"wrong secret", "s3://lab/pc3", s3Opts(srv, wrong), []string{"403", "SignatureDoesNotMatch", "access key rewindtest from the test", "fix the secret"}},
		{"unknown key", "s3://lab/pc3", unknown, []string{"nosuchkey", "does not know"}},
		{"no bucket", "s3://nolab/pc3", s3Opts(srv, srv.Secret), []string{"404", "NoSuchBucket", "no bucket nolab"}},
		{"anonymous", "s3://lab/pc3", snapshot.S3Options{Endpoint: srv.Endpoint}, []string{"403", "anonymous"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := snapshot.Open(context.Background(), tt.loc, snapshot.OpenOptions{S3: &tt.o})
			var se *snapshot.S3Error
			if !errors.As(err, &se) {
				t.Fatalf("open: %v, want an S3Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), srv.Secret) {
				t.Errorf("error %q holds the secret", err)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("the refusal took %s: it was retried", time.Since(start))
			}
		})
	}
	_, err := snapshot.NewS3Sink(context.Background(), "s3://lab/pc4", s3Opts(srv, wrong), snapshot.S3SinkOptions{})
	if err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") || strings.Contains(err.Error(), wrong) {
		t.Fatalf("capture with a wrong secret: %v, want SignatureDoesNotMatch without the secret", err)
	}
}

// cutProxy relays TCP to target and cuts the first cuts responses after
// about 300 KiB.
type cutProxy struct {
	ln     net.Listener
	target string
	cuts   int32
	// requests: cut what the client sends (uploads), not the responses.
	requests bool
	cut      atomic.Int32
	wg       sync.WaitGroup
}

func startCutProxy(t *testing.T, target string, cuts int32, requests bool) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cuts: cuts, requests: requests}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			defer u.Close()
			if p.requests {
				go io.Copy(c, u)
				if p.cut.Load() < p.cuts {
					n, _ := io.CopyN(u, c, 3<<20)
					if n == 3<<20 && p.cut.Add(1) <= p.cuts {
						return // cut mid-request
					}
				}
				io.Copy(u, c)
				return
			}
			go io.Copy(u, c)
			if p.cut.Load() < p.cuts {
				n, _ := io.CopyN(c, u, 300<<10)
				if n == 300<<10 && p.cut.Add(1) <= p.cuts {
					return // cut mid-response
				}
			}
			io.Copy(c, u)
		}()
	}
}

// TestS3ReadResumesCutConnections: connections cut in the middle of
// ranged GETs are resumed (re-signed) and the disk reads back byte for
// byte.
func TestS3ReadResumesCutConnections(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(24<<20, 4)
	o := s3Opts(srv, srv.Secret)
	if _, _, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), "s3://lab/pc5", o); err != nil {
		t.Fatal(err)
	}
	p := startCutProxy(t, srv.Addr, 3, false)
	o.Endpoint = "http://" + p.ln.Addr().String()
	if back := readBack(t, "s3://lab/pc5", o); sha256.Sum256(back) != sha256.Sum256(disk) {
		t.Fatal("read back through a cutting proxy differs")
	}
	if p.cut.Load() < 3 {
		t.Fatalf("the proxy cut %d connections, want 3: the test did not cut anything", p.cut.Load())
	}
}

// TestS3CaptureRetriesCutUploads: connections cut in the middle of
// sending parts are retried; the capture completes and reads back byte
// for byte.
func TestS3CaptureRetriesCutUploads(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(40<<20, 5)
	p := startCutProxy(t, srv.Addr, 2, true)
	o := s3Opts(srv, srv.Secret)
	o.Endpoint = "http://" + p.ln.Addr().String()
	if _, _, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), "s3://lab/pc6", o); err != nil {
		t.Fatalf("capture through a proxy that cuts uploads: %v", err)
	}
	if p.cut.Load() < 2 {
		t.Fatalf("the proxy cut %d uploads, want 2: the test did not cut anything", p.cut.Load())
	}
	if back := readBack(t, "s3://lab/pc6", s3Opts(srv, srv.Secret)); sha256.Sum256(back) != sha256.Sum256(disk) {
		t.Fatal("the capture sent through cut connections reads back differently")
	}
}
