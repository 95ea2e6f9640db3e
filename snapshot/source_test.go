package snapshot

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testca"
)

// testSnapshot captures 1 MiB of random data in 64 KiB chunks into a new
// directory and returns it.
func testSnapshot(t *testing.T) string {
	t.Helper()
	data := make([]byte, 1<<20)
	rng := mrand.New(mrand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if _, err := Capture(context.Background(), bytes.NewReader(data), dir, CaptureOptions{DiskSize: int64(len(data)), ChunkSize: MinChunkSize}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// guard bounds a test that must not hang: a read that ends by this context
// failed to enforce its own deadline.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Every read has a deadline: a server that accepts and never answers, or
// sends headers and stalls the body, is retried and then given up on,
// with the stall named, instead of hanging the restore.
func TestHTTPSourceStalledServer(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go func() { <-release; c.Close() }() // reads nothing, answers nothing
		}
	}()
	stallBody := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"format":`))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(stallBody.CloseClientConnections)
	t.Cleanup(stallBody.Close)

	for _, tc := range []struct {
		name, url string
		read      func(ctx context.Context, h *HTTPSource) error
		want      string
	}{
		{"manifest from a server that never answers", "http://" + silent.Addr().String() + "/snap",
			func(ctx context.Context, h *HTTPSource) error { _, err := h.ReadFile(ctx, ManifestName); return err }, "no response for 200ms"},
		{"segment size from a server that never answers", "http://" + silent.Addr().String() + "/snap",
			func(ctx context.Context, h *HTTPSource) error { _, err := h.Size(ctx, "data.000"); return err }, "no response for 200ms"},
		{"manifest whose body stalls", stallBody.URL + "/snap",
			func(ctx context.Context, h *HTTPSource) error { _, err := h.ReadFile(ctx, ManifestName); return err }, "less than 64 KiB arrived in 200ms"},
		{"signature whose body stalls", stallBody.URL + "/snap",
			func(ctx context.Context, h *HTTPSource) error { _, err := h.ReadFile(ctx, SignatureName); return err }, "less than 64 KiB arrived in 200ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := guard(t)
			h := NewHTTPSource(tc.url, nil, 500*time.Millisecond, nil)
			h.SetStallTimeout(200 * time.Millisecond)
			defer h.Close()
			err := tc.read(ctx, h)
			if ctx.Err() != nil {
				t.Fatalf("%s: the read was still waiting when the test's guard ended: no deadline (err %v)", tc.url, err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "gave up") {
				t.Fatalf("%s: got error %v, want one that gives up and says %q", tc.url, err, tc.want)
			}
		})
	}
}

// tlsServer serves dir over https on 127.0.0.1 with cert.
func tlsServer(t *testing.T, dir string, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(NewHandler(dir, nil))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// A certificate the client does not trust fails at once, naming the
// problem and --ca, instead of being retried for ten minutes; with the
// lab's CA given, the same server is read.
func TestHTTPSourceCertificates(t *testing.T) {
	dir := testSnapshot(t)
	parent := filepath.Dir(dir)
	ca := testca.New(t)
	caFile := filepath.Join(t.TempDir(), "lab-ca.PEM")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	lab, err := LoadCertPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	localhost := net.IPv4(127, 0, 0, 1)
	good := ca.Issue(t, localhost, nil, now.Add(-time.Hour), now.Add(time.Hour))
	expired := ca.Issue(t, localhost, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	wrongName := ca.Issue(t, net.IPv4(127, 0, 0, 2), []string{"other.example"}, now.Add(-time.Hour), now.Add(time.Hour))

	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		roots *x509.CertPool
		want  string // "" means the snapshot opens
	}{
		{"lab CA not given", good, nil, "unknown authority"},
		{"expired certificate", expired, lab, "expired"},
		{"certificate for another name", wrongName, lab, "valid for 127.0.0.2, not 127.0.0.1"},
		{"lab CA given with --ca", good, lab, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tlsServer(t, parent, tc.cert)
			ctx := guard(t)
			// The default retry time (10 minutes) is kept: a certificate
			// error must not wait for it.
			s, err := Open(ctx, srv.URL+"/snap", OpenOptions{HTTPClient: NewHTTPClient(tc.roots)})
			if ctx.Err() != nil {
				t.Fatalf("%s: still retrying when the test's guard ended (err %v)", srv.URL, err)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("open %s with the lab CA: %v", srv.URL, err)
				}
				defer s.Close()
				frame, err := s.ReadFrame(ctx, 0, nil)
				if err == nil {
					err = s.CheckFrame(0, frame)
				}
				if err != nil {
					t.Fatalf("chunk 0 over https with the lab CA: %v", err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("open %s: got success, want a certificate error saying %q", srv.URL, tc.want)
			}
			if !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--ca FILE") {
				t.Fatalf("open %s: got %v, want ErrCertificate saying %q and naming --ca FILE", srv.URL, err, tc.want)
			}
		})
	}
}

// A CA file that holds no certificate is refused with its name.
func TestLoadCertPoolRefusesNonCertificates(t *testing.T) {
	f := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(f, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	if _, err := LoadCertPool(f); err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("LoadCertPool(%s): got %v, want an error naming the file and saying it holds no certificate", f, err)
	}
}

// versioned serves dir's files with ETag "a", and after swap() the
// replaced data.000 with ETag "b", through http.ServeContent (which
// honours If-Range) or, with ignoreIfRange, through a server that ignores
// If-Range.
type versioned struct {
	dir           string
	ignoreIfRange bool
	mu            sync.Mutex
	etag          string
}

func (v *versioned) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	etag := v.etag
	v.mu.Unlock()
	f, err := os.Open(filepath.Join(v.dir, filepath.Base(r.URL.Path)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	if v.ignoreIfRange {
		r.Header.Del("If-Range")
	}
	w.Header().Set("ETag", `"`+etag+`"`)
	http.ServeContent(w, r, "", time.Time{}, f)
}

// replace writes new bytes of the same size over data.000 and moves its
// modification time, as a server's operator copying a new snapshot in
// place would.
func replaceSegment(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "data.000")
	old, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	repl := bytes.Repeat([]byte{0x5a}, len(old))
	if err := os.WriteFile(p, repl, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
}

// A segment replaced on the server between two reads of one restore is
// reported as changed, naming the segment and both validators, not as a
// damaged chunk.
func TestHTTPSourceSegmentReplaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		// serve returns a handler for dir and a function that makes its
		// validator change with the file.
		serve func(dir string) (http.Handler, func())
		want  string
	}{
		{"ETag with If-Range (http.ServeContent)", func(dir string) (http.Handler, func()) {
			v := &versioned{dir: dir, etag: "a"}
			return v, func() { v.mu.Lock(); v.etag = "b"; v.mu.Unlock() }
		}, `segment data.000 changed on the server during the restore (ETag "a" then "b"): restore again`},
		{"ETag from a server that ignores If-Range", func(dir string) (http.Handler, func()) {
			v := &versioned{dir: dir, etag: "a", ignoreIfRange: true}
			return v, func() { v.mu.Lock(); v.etag = "b"; v.mu.Unlock() }
		}, `segment data.000 changed on the server during the restore (ETag "a" then "b"): restore again`},
		{"rewind serve", func(dir string) (http.Handler, func()) {
			return NewHandler(filepath.Dir(dir), nil), func() {}
		}, `segment data.000 changed on the server during the restore (ETag "`},
		{"Last-Modified with If-Range (http.FileServer)", func(dir string) (http.Handler, func()) {
			return http.FileServer(http.Dir(filepath.Dir(dir))), func() {}
		}, `segment data.000 changed on the server during the restore (Last-Modified `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testSnapshot(t)
			h, swap := tc.serve(dir)
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				h.ServeHTTP(w, r)
			}))
			defer srv.Close()
			ctx := guard(t)
			s, err := Open(ctx, srv.URL+"/snap", OpenOptions{RetryFor: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			frame, err := s.ReadFrame(ctx, 0, nil)
			if err != nil {
				t.Fatalf("chunk 0 before the swap: %v", err)
			}
			if err := s.CheckFrame(0, frame); err != nil {
				t.Fatalf("chunk 0 before the swap: %v", err)
			}
			replaceSegment(t, dir)
			swap()
			frame, err = s.ReadFrame(ctx, 1, nil)
			if err == nil {
				t.Fatalf("chunk 1 after data.000 was replaced: got no read error (hash check: %v), want %q", s.CheckFrame(1, frame), tc.want)
			}
			if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("chunk 1 after data.000 was replaced: got %v, want %q", err, tc.want)
			}
		})
	}
}

// A hostile or broken server cannot make a small file large or a read
// endless: the signature (one line) and the manifest have size limits
// checked before and while reading, and a body that trickles in below the
// minimum rate is a stall, not progress.
func TestHTTPSourceHugeOrTricklingFiles(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/endless/" + SignatureName: // no length, bytes for ever
			buf := bytes.Repeat([]byte("A"), 32<<10)
			for r.Context().Err() == nil {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		case "/declared/" + ManifestName: // claims 4 GiB, sends 1 KiB, waits
			w.Header().Set("Content-Length", "4294967296")
			w.Write(bytes.Repeat([]byte(" "), 1024))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/trickle/" + ManifestName: // one byte every 10 ms
			w.Header().Set("Content-Length", "100000")
			for i := 0; i < 100000; i++ {
				if _, err := w.Write([]byte(" ")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-time.After(10 * time.Millisecond):
				case <-release:
					return
				case <-r.Context().Done():
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.CloseClientConnections)
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		dir, file string
		want      string
	}{
		{"endless", SignatureName, "manifest.json.sig is larger than 65536 bytes"},
		{"declared", ManifestName, "manifest.json is 4294967296 bytes on the server; at most 1073741824"},
		{"trickle", ManifestName, "less than 64 KiB arrived in 300ms"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			ctx := guard(t)
			h := NewHTTPSource(srv.URL+"/"+tc.dir, nil, 500*time.Millisecond, nil)
			h.SetStallTimeout(300 * time.Millisecond)
			defer h.Close()
			_, err := h.ReadFile(ctx, tc.file)
			if ctx.Err() != nil {
				t.Fatalf("GET %s/%s: the read was still going when the test's guard ended (err %v)", tc.dir, tc.file, err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GET %s/%s: got error %v, want one saying %q", tc.dir, tc.file, err, tc.want)
			}
		})
	}
}

// An https snapshot is not read over plain http when its server redirects
// there, and no snapshot is read from a redirect to another scheme
// (file://): the request fails at once (no retries), naming the redirect.
func TestHTTPSourceRefusesDowngrade(t *testing.T) {
	dir := testSnapshot(t)
	plain := httptest.NewServer(http.StripPrefix("/snap/", http.FileServer(http.Dir(dir))))
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(secure.Close)
	toFile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "file://"+dir+"/"+path.Base(r.URL.Path), http.StatusFound)
	}))
	t.Cleanup(toFile.Close)
	roots := x509.NewCertPool()
	roots.AddCert(secure.Certificate())
	for _, tc := range []struct{ url, want string }{
		{secure.URL + "/snap", "redirected from https to http"},
		{toFile.URL + "/snap", "redirected from http to file"},
	} {
		ctx := guard(t)
		snap, err := Open(ctx, tc.url, OpenOptions{HTTPClient: NewHTTPClient(roots), RetryFor: 20 * time.Second})
		if err == nil {
			snap.Close()
			t.Fatalf("open %s: got a snapshot, want the redirect refused", tc.url)
		}
		if ctx.Err() != nil || !errors.Is(err, ErrInsecureRedirect) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "gave up") {
			t.Fatalf("open %s: got %v, want an immediate error saying %q", tc.url, err, tc.want)
		}
	}
}

// A server that compresses what it sends (Content-Encoding: gzip, as a web
// server's on-the-fly compression does) is named as such, not reported as
// a manifest that is not JSON or a damaged chunk.
func TestHTTPSourceContentEncoding(t *testing.T) {
	dir := testSnapshot(t)
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/snap")
		w.Header().Set("Content-Encoding", "gzip") // a lie or not: either way not the stored bytes
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h := NewHTTPSource(srv.URL+"/snap", nil, time.Second, nil)
	defer h.Close()
	ctx := guard(t)
	_, err := h.ReadFile(ctx, ManifestName)
	if err == nil || !strings.Contains(err.Error(), "Content-Encoding gzip") {
		t.Errorf("GET %s: got %v, want an error naming Content-Encoding gzip", ManifestName, err)
	}
	err = h.ReadAt(ctx, "data.000", make([]byte, 100), 0)
	if err == nil || !strings.Contains(err.Error(), "Content-Encoding gzip") {
		t.Errorf("GET data.000 bytes 0-99: got %v, want an error naming Content-Encoding gzip", err)
	}
}

// A snapshot directory (a stick, a share) holding a FIFO or an oversized
// file in place of the manifest's signature neither hangs nor fills
// memory: each is refused, naming the file.
func TestDirSourceOddFiles(t *testing.T) {
	for _, tc := range []struct {
		what  string
		plant func(p string) error
		want  string
	}{
		{"a FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }, "not a regular file"},
		{"a 1 MiB signature", func(p string) error { return os.WriteFile(p, make([]byte, 1<<20), 0o644) }, "larger than 65536 bytes"},
	} {
		dir := testSnapshot(t)
		if err := tc.plant(filepath.Join(dir, SignatureName)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := NewDirSource(dir).ReadFile(context.Background(), SignatureName); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), SignatureName) {
				t.Errorf("%s as %s: got %v, want an error naming it and saying %q", tc.what, SignatureName, err, tc.want)
			}
		case <-time.After(time.Minute): // only turns a hang into a failure
			t.Fatalf("%s as %s: ReadFile still waiting after a minute", tc.what, SignatureName)
		}
	}
}
