package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/snapshot"
)

const fakeSig = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261208%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261208T000000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host&X-Amz-Security-Token=SESSIONTOKENSECRET&X-Amz-Signature=deadbeefcafe0123456789"

// TestBreakSizeIgnoresRange: a pre-signed source learns a segment's size
// with GET Range: bytes=0-0. A server that ignores Range answers 200 with
// the whole object: how much of it is read?
func TestBreakSizeIgnoresRange(t *testing.T) {
	var sent atomic.Int64
	big := bytes.Repeat([]byte("x"), 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(256<<20))
		w.WriteHeader(200)
		for range 256 {
			n, err := w.Write(big)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	loc := "s3://lab/room/pc1"
	o := snapshot.S3Options{Endpoint: srv.URL, Presigned: map[string]string{loc + "/data.000": srv.URL + "/lab/room/pc1/data.000?" + fakeSig}}
	if err := snapshot.CheckPresigned(o.Presigned, o); err != nil {
		t.Fatal(err)
	}
	h, err := snapshot.NewS3Source(loc, o, nil, time.Second, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.Size(context.Background(), "data.000")
	time.Sleep(300 * time.Millisecond)
	t.Logf("size %d err %v; the server wrote %d MiB", n, err, sent.Load()>>20)
	if sent.Load() > 64<<20 {
		t.Errorf("the size GET read %d MiB of a 256 MiB object that ignored Range", sent.Load()>>20)
	}
	if err != nil && strings.Contains(err.Error(), "X-Amz-Signature") {
		t.Errorf("error shows the signature: %v", err)
	}
}

// TestBreakPresignedErrorsRedacted: transport failures of pre-signed
// requests (refused connection, unknown CA, malformed answer, a reset
// mid-body) must not show the URL's query (signature, session token),
// in errors or in the retry log.
func TestBreakPresignedErrorsRedacted(t *testing.T) {
	loc := "s3://lab/room/pc1"
	var logged strings.Builder
	logf := func(msg string, args ...any) { fmt.Fprintln(&logged, msg, args) }
	try := func(name, base string, client *http.Client) {
		t.Helper()
		logged.Reset()
		o := snapshot.S3Options{Endpoint: base, Presigned: map[string]string{
			loc + "/manifest.json": base + "/lab/room/pc1/manifest.json?" + fakeSig,
			loc + "/data.000":      base + "/lab/room/pc1/data.000?" + fakeSig,
		}}
		h, err := snapshot.NewS3Source(loc, o, client, 1500*time.Millisecond, logf)
		if err != nil {
			t.Fatal(err)
		}
		_, err1 := h.ReadFile(context.Background(), "manifest.json")
		_, err2 := h.Size(context.Background(), "data.000")
		err3 := h.ReadAt(context.Background(), "data.000", make([]byte, 100), 0)
		all := fmt.Sprint(err1, err2, err3, logged.String())
		for _, secret := range []string{"deadbeefcafe", "SESSIONTOKENSECRET", "X-Amz-Credential"} {
			if strings.Contains(all, secret) {
				t.Errorf("%s: %q shown: %s", name, secret, all)
			}
		}
		t.Logf("%s: %v | %v | %v", name, err1, err2, err3)
	}
	// refused connection
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	try("refused", "http://"+addr, nil)
	// unknown CA
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsSrv.Close()
	try("unknown CA", tlsSrv.URL, nil)
	// garbage answer
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	defer gl.Close()
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HELLO NOT HTTP\r\n\r\n"))
			c.Close()
		}
	}()
	try("garbage", "http://"+gl.Addr().String(), nil)
	// reset mid-body
	mid := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Header().Set("Content-Range", "bytes 0-999/1000")
		w.WriteHeader(206)
		w.Write([]byte("abc"))
		hj, ok := w.(http.Hijacker)
		if ok {
			c, _, _ := hj.Hijack()
			c.Close()
		}
	}))
	defer mid.Close()
	try("reset", mid.URL, nil)
	// an https URL to a server speaking http
	try("no TLS", strings.Replace(mid.URL, "http://", "https://", 1), nil)
	// a 3xx answer (redirects are not followed; Location holds a signature)
	red := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://other.example/x?"+fakeSig)
		w.WriteHeader(307)
		fmt.Fprintf(w, "<Error><Code>TemporaryRedirect</Code><Message>go to %s</Message></Error>", r.URL.String())
	}))
	defer red.Close()
	try("redirect echo", red.URL, nil)
}

// TestBreakLockUnreadableTakenOver: a lock whose body does not decode
// (empty, truncated by a cut connection, written by another tool) is
// taken over at once, however fresh.
func TestBreakLockUnreadableTakenOver(t *testing.T) {
	srv := s3test.Start(t, "lab")
	cl := srv.Client(t)
	o := s3Opts(srv, srv.Secret)
	b := []byte(`{"capture":"other","host":"pc-other","since":"` + time.Now().UTC().Format(time.RFC3339)) // truncated JSON
	if _, err := cl.PutObject(context.Background(), "lab", "fresh/"+snapshot.S3CommitLock, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := capS3(t, sinkS3(t, "s3://lab/fresh", o), usedDisk(6<<20, 5)); err == nil {
		t.Errorf("a capture took over a commit lock written a moment ago whose body did not decode")
	}
}

// TestBreakPresignedSignatureEchoed: with pre-signed URLs and no
// credential, clean() masks nothing: a store error message that echoes
// the request (some stores and proxies do) shows the URL's signature and
// session token in the error.
func TestBreakPresignedSignatureEchoed(t *testing.T) {
	loc := "s3://lab/room/pc1"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(403)
		q := strings.ReplaceAll(r.URL.RawQuery, "&", "&amp;")
		fmt.Fprintf(w, "<Error><Code>AccessDenied</Code><Message>denied %s?%s</Message></Error>", r.URL.Path, q)
	}))
	defer srv.Close()
	o := snapshot.S3Options{Endpoint: srv.URL, Presigned: map[string]string{loc + "/manifest.json": srv.URL + "/lab/room/pc1/manifest.json?" + fakeSig}}
	h, _ := snapshot.NewS3Source(loc, o, nil, time.Second, func(string, ...any) {})
	_, err := h.ReadFile(context.Background(), "manifest.json")
	t.Logf("%v", err)
	if err != nil && (strings.Contains(err.Error(), "deadbeefcafe") || strings.Contains(err.Error(), "SESSIONTOKENSECRET")) {
		t.Errorf("the error shows the pre-signed URL's signature or token: %v", err)
	}
}

// TestBreakExpiredSignatureURLReadsUnsigned: the 403-means-missing rule
// for manifest.json.sig comes before the pre-signed advice: an expired
// (or altered, or foreign) pre-signed URL of the signature makes a
// signed snapshot read as unsigned, and the refusal by trusted keys then
// blames the snapshot, not the URL.
func TestBreakExpiredSignatureURLReadsUnsigned(t *testing.T) {
	srv := s3test.Start(t, "lab")
	cl := srv.Client(t)
	loc := "s3://lab/room/pc1"
	sig := []byte("untrusted comment: x\nRWQ...\n")
	if _, err := cl.PutObject(context.Background(), "lab", "room/pc1/"+snapshot.SignatureName, bytes.NewReader(sig), int64(len(sig)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	urls, err := snapshot.PresignS3(loc, s3Opts(srv, srv.Secret), []string{snapshot.SignatureName}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h, err := snapshot.NewS3Source(loc, snapshot.S3Options{Endpoint: srv.Endpoint, Presigned: urls, PresignedMinLeft: -1}, nil, time.Second, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	_, err = h.ReadFile(context.Background(), snapshot.SignatureName)
	if err == nil || strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("an expired pre-signed URL of the signature: %v; want the expiry named, not a missing signature", err)
	}
}
