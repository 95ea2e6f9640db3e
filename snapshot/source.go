package snapshot

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Source gives random access to the files of one snapshot, wherever they
// are: a directory, boot media, or an HTTP(S) server with Range support.
type Source interface {
	// ReadFile reads a small file whole; fs.ErrNotExist when it is absent.
	ReadFile(ctx context.Context, name string) ([]byte, error)
	// Size returns a file's size; fs.ErrNotExist when it is absent.
	Size(ctx context.Context, name string) (int64, error)
	// ReadAt fills p from file name at off, or fails.
	ReadAt(ctx context.Context, name string, p []byte, off int64) error
	Close() error
	String() string
}

// DirSource reads a snapshot from a local directory.
type DirSource struct {
	dir   string
	mu    sync.Mutex
	files map[string]*os.File
}

// NewDirSource returns a Source for the snapshot directory dir.
func NewDirSource(dir string) *DirSource {
	return &DirSource{dir: dir, files: make(map[string]*os.File)}
}

func (d *DirSource) String() string { return d.dir }

// ReadFile implements Source. A file larger than MaxFileSize(name), or
// not a regular file (a FIFO planted on a stick would block for ever), is
// refused, naming it.
func (d *DirSource) ReadFile(_ context.Context, name string) ([]byte, error) {
	f, err := openRegular(filepath.Join(d.dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	limit := MaxFileSize(name)
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: this is not a Rewind snapshot's %s", filepath.Join(d.dir, name), limit, name)
	}
	return data, nil
}

// openRegular opens a regular file for reading; anything else (a FIFO, a
// device) is an error naming it, and a FIFO is never waited on.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is a %s, not a regular file", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Size implements Source.
func (d *DirSource) Size(_ context.Context, name string) (int64, error) {
	fi, err := os.Stat(filepath.Join(d.dir, name))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// ReadAt implements Source.
func (d *DirSource) ReadAt(_ context.Context, name string, p []byte, off int64) error {
	f, err := d.open(name)
	if err != nil {
		return err
	}
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF {
		return fmt.Errorf("%s ends at offset %d, before the %d bytes at %d: the segment is truncated", name, off+int64(n), len(p), off)
	}
	return fmt.Errorf("read %s at offset %d: %w", name, off, err)
}

func (d *DirSource) open(name string) (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.files[name]; ok {
		return f, nil
	}
	f, err := openRegular(filepath.Join(d.dir, name))
	if err != nil {
		return nil, err
	}
	d.files[name] = f
	return f, nil
}

// Close implements Source.
func (d *DirSource) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, f := range d.files {
		f.Close()
		delete(d.files, name)
	}
	return nil
}

// HTTPSource reads a snapshot from an HTTP(S) server with Range requests.
// A read that fails, is cut off or stalls is retried with backoff from the
// first byte not yet received, for as long as RetryFor allows. Every
// request has a deadline: a server that accepts and never answers, or
// sends headers and then stalls, is retried after the stall timeout. A
// certificate the client does not trust fails at once: retrying cannot fix
// it. The validator (ETag, else Last-Modified) and size of every file are
// remembered from its first response and sent as If-Range with later
// ranged reads, so that a segment replaced on the server during a restore
// is reported as such instead of as damaged chunks.
type HTTPSource struct {
	base     *url.URL
	raw      string
	client   *http.Client
	retryFor time.Duration
	stall    time.Duration
	log      func(msg string, args ...any)

	s3 *s3Signer // signs every request of an s3:// source; nil for http(s)

	mu    sync.Mutex
	files map[string]validator // by file name, from its first response
}

// Timeouts of HTTP sources.
const (
	// DefaultRetryFor is how long a failing read keeps retrying: long
	// enough to ride out a server restart or a switch reboot.
	DefaultRetryFor = 10 * time.Minute
	// StallTimeout ends a request that gets no response, or a response
	// that delivers no byte, for this long, so that a stalled connection
	// becomes a retry instead of a hang.
	StallTimeout = 60 * time.Second
)

// NewHTTPSource returns a Source for the snapshot at base, a URL of its
// directory. retryFor bounds how long one read retries (0: DefaultRetryFor).
// client nil means NewHTTPClient(nil).
func NewHTTPSource(base string, client *http.Client, retryFor time.Duration, log func(string, ...any)) *HTTPSource {
	if client == nil {
		client = NewHTTPClient(nil)
	}
	if retryFor <= 0 {
		retryFor = DefaultRetryFor
	}
	if log == nil {
		log = func(string, ...any) {}
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/")
	if err != nil {
		u = &url.URL{Scheme: "invalid", Opaque: base}
	}
	return &HTTPSource{base: u, raw: base, client: client, retryFor: retryFor, stall: StallTimeout, log: log, files: make(map[string]validator)}
}

// NewHTTPClient returns the HTTP client snapshot sources use: bounded
// connect, TLS handshake and response-header times, no transparent
// compression (ranges are of the stored bytes). roots, when not nil,
// replaces the system's certificate authorities (see LoadCertPool).
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: StallTimeout,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
	}
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return &http.Client{Transport: t, CheckRedirect: CheckRedirect}
}

// CheckRedirect is the redirect policy of Rewind's HTTP clients: at most
// 10 redirects, only to http(s), and never from https to plain http, where
// anyone on the network could change what is read (and see a report's
// token).
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("stopped after 10 redirects (last to %s)", req.URL.Redacted())
	}
	prev := via[len(via)-1]
	if prev.URL.Scheme == "https" && req.URL.Scheme != "https" || req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: %s redirected from %s to %s (%s); fix the server or use the URL it redirects to", ErrInsecureRedirect, prev.URL.Redacted(), prev.URL.Scheme, req.URL.Scheme, req.URL.Redacted())
	}
	return nil
}

// ErrContentEncoding is wrapped by the errors of responses that are
// compressed on the way (Content-Encoding): their bytes are not the
// snapshot's. They are never retried.
var ErrContentEncoding = errors.New("the server encodes what it sends")

// ErrInsecureRedirect is wrapped by the errors of requests that a server
// redirected from https to plain http, or to a scheme other than http(s).
// They are never retried.
var ErrInsecureRedirect = errors.New("refused an insecure redirect")

// LoadCertPool returns the system's certificate authorities plus those in
// the PEM files named (a lab's own CA). A file without a certificate is an
// error that names it.
func LoadCertPool(files ...string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		if err := AddCerts(pool, "CA file "+f, data); err != nil {
			return nil, err
		}
	}
	return pool, nil
}

// AddCerts adds the PEM certificates in data (read from where) to pool.
func AddCerts(pool *x509.CertPool, where string, data []byte) error {
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("%s: certificate %d: %w", where, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA's certificate, not its key", where)
	}
	return nil
}

func (h *HTTPSource) String() string { return h.raw }

func (h *HTTPSource) url(name string) string {
	h.mu.Lock()
	u := *h.base
	h.mu.Unlock()
	u.Path = path.Join(u.Path, name)
	return u.String()
}

// rebase makes the directory of final, the URL a redirect led the
// manifest's request to, the base of every later request, when it is on
// the same scheme and host: a snapshot at NAME/latest, which the server
// redirects to NAME/<generation>, is then read from that one generation
// even if latest moves on during the restore.
func (h *HTTPSource) rebase(final *url.URL) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if final == nil || final.Scheme != h.base.Scheme || final.Host != h.base.Host || path.Base(final.Path) != ManifestName {
		return
	}
	dir := strings.TrimSuffix(final.Path, ManifestName)
	if dir == h.base.Path {
		return
	}
	nb := *h.base
	nb.Path, nb.RawPath, nb.RawQuery = dir, "", final.RawQuery
	h.log("following the redirect of the manifest", "from", h.base.Redacted(), "to", nb.Redacted())
	h.base = &nb
}

// httpStatusError is a response status that retrying will not change.
type httpStatusError struct {
	url    string
	status string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.url, e.status) }

// ErrCertificate is wrapped by the errors of requests to a server whose
// TLS certificate is not trusted.
var ErrCertificate = errors.New("the server's TLS certificate is not trusted")

// CertError returns a clear error, wrapping ErrCertificate, when err is
// a TLS certificate problem (unknown authority, expired, wrong name; or a
// server that does not speak TLS at all), and
// nil otherwise: such errors are reported at once, never retried.
func CertError(err error) error {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		header   tls.RecordHeaderError
	)
	var why string
	switch {
	case errors.As(err, &unknown):
		why = "signed by an unknown authority (" + unknown.Error() + ")"
	case errors.As(err, &invalid):
		why = invalid.Error()
	case errors.As(err, &hostname):
		why = hostname.Error()
	case errors.As(err, &verify):
		why = verify.Error()
	case errors.As(err, &header):
		return fmt.Errorf("the server does not speak TLS (%v): use http:// for it, or check the port", err)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s; if the server uses the lab's own CA, pass its certificate with --ca FILE (or the plan's ca key), else fix the server's certificate", ErrCertificate, why)
}

// validator identifies one version of a file on the server.
type validator struct {
	etag, lastModified string
	size               int64 // total size; -1 unknown
}

func validatorOf(resp *http.Response) validator {
	v := validator{etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified"), size: -1}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if _, total, ok := strings.Cut(resp.Header.Get("Content-Range"), "/"); ok {
			if n, err := strconv.ParseInt(total, 10, 64); err == nil {
				v.size = n
			}
		}
	case http.StatusOK:
		v.size = resp.ContentLength
	}
	return v
}

// ifRange is the If-Range value for v: a strong ETag, else Last-Modified
// (weak ETags cannot be used with If-Range).
func (v validator) ifRange() string {
	if v.etag != "" && !strings.HasPrefix(v.etag, "W/") {
		return v.etag
	}
	return v.lastModified
}

// differs says how now differs from v, the first version seen, or "".
func (v validator) differs(now validator) string {
	switch {
	case v.etag != "" && now.etag != "" && v.etag != now.etag:
		return fmt.Sprintf("ETag %s then %s", v.etag, now.etag)
	case v.etag == "" && v.lastModified != "" && now.lastModified != "" && v.lastModified != now.lastModified:
		return fmt.Sprintf("Last-Modified %s then %s", v.lastModified, now.lastModified)
	case v.size >= 0 && now.size >= 0 && v.size != now.size:
		return fmt.Sprintf("%d bytes then %d", v.size, now.size)
	}
	return ""
}

// ErrChanged is wrapped by the errors of reads from a file that was
// replaced on the server after it was first read.
var ErrChanged = errors.New("changed on the server")

func changedError(name, how string) error {
	return fmt.Errorf("segment %s %w during the restore (%s): restore again", name, ErrChanged, how)
}

// remember records the validator of name's first response and returns
// the one recorded first.
func (h *HTTPSource) remember(name string, v validator) validator {
	h.mu.Lock()
	defer h.mu.Unlock()
	first, ok := h.files[name]
	if !ok {
		h.files[name] = v
		return v
	}
	return first
}

func (h *HTTPSource) known(name string) (validator, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.files[name]
	return v, ok
}

// do sends a method request for file name with header, under a watchdog
// that cancels it when no response, and then no byte of the body, arrives
// for the stall timeout. The caller reads the body through the returned
// reader, then calls done.
func (h *HTTPSource) do(ctx context.Context, method, name string, header http.Header) (resp *http.Response, body io.Reader, done func(), err error) {
	rctx, cancel := context.WithCancel(ctx)
	watchdog := time.AfterFunc(h.stall, cancel)
	done = func() {
		watchdog.Stop()
		cancel()
		if resp != nil {
			resp.Body.Close()
		}
	}
	req, err := http.NewRequestWithContext(rctx, method, h.url(name), nil)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if h.s3 != nil {
		if req, err = h.s3.sign(req, name); err != nil {
			done()
			return nil, nil, nil, err
		}
	}
	resp, err = h.client.Do(req)
	if err != nil {
		stalled := ctx.Err() == nil && rctx.Err() != nil // before done cancels rctx
		done()
		// A pre-signed URL's query is a bearer token: messages show
		// the object's plain URL.
		var ue *url.Error
		if errors.As(err, &ue) && req.URL.RawQuery != "" && h.s3 != nil {
			ue.URL = h.url(name)
		}
		if stalled {
			err = fmt.Errorf("no response for %s: %w", h.stall, err)
		}
		return nil, nil, nil, err
	}
	// aws-chunked describes how an object was uploaded, not what is sent
	// (AWS drops it; some stores keep it): the bytes are the object's.
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") && !(h.s3 != nil && strings.EqualFold(enc, "aws-chunked")) {
		done()
		return nil, nil, nil, fmt.Errorf("%w: the server sent %s with Content-Encoding %s, not the stored bytes; turn off compression for the snapshot files on the server", ErrContentEncoding, name, enc)
	}
	if h.s3 != nil && resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotModified {
		if err := h.s3.explain(method, name, resp); err != nil {
			done()
			return nil, nil, nil, err
		}
	}
	watchdog.Reset(h.stall)
	return resp, &stallReader{r: resp.Body, watchdog: watchdog, after: h.stall}, done, nil
}

// stalled rewrites a read error caused by the watchdog.
func (h *HTTPSource) stalled(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("stalled: less than %d KiB arrived in %s", minProgress>>10, h.stall)
	}
	return err
}

// ReadFile implements Source.
func (h *HTTPSource) ReadFile(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := h.retry(ctx, "GET "+name, func() (bool, error) {
		resp, body, done, err := h.do(ctx, http.MethodGet, name, nil)
		if err != nil {
			return true, err
		}
		defer done()
		if resp.StatusCode == http.StatusNotFound {
			return false, fs.ErrNotExist
		}
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests, &httpStatusError{h.url(name), resp.Status}
		}
		if name == ManifestName && h.s3 == nil {
			h.rebase(resp.Request.URL)
		}
		limit := MaxFileSize(name)
		if resp.ContentLength > limit {
			return false, fmt.Errorf("%s is %d bytes on the server; at most %d: this is not a Rewind snapshot's %s", name, resp.ContentLength, limit, name)
		}
		data, err = io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			return true, h.stalled(ctx, err)
		}
		if int64(len(data)) > limit {
			data = nil
			return false, fmt.Errorf("%s is larger than %d bytes: this is not a Rewind snapshot's %s", name, limit, name)
		}
		return false, nil
	})
	return data, err
}

// Size limits of the small files a Source reads whole.
const (
	// MaxManifestSize bounds manifest.json: millions of chunks.
	MaxManifestSize = 1 << 30
	// MaxSignatureSize bounds manifest.json.sig, one line of ~110 bytes.
	MaxSignatureSize = 64 << 10
)

// MaxFileSize is the most ReadFile reads of a snapshot file: the signature
// is one short line, anything else at most MaxManifestSize. A larger file
// (a hostile server's endless body) is refused, never truncated.
func MaxFileSize(name string) int64 {
	if name == SignatureName {
		return MaxSignatureSize
	}
	return MaxManifestSize
}

// Size implements Source. It also remembers the file's validator, so that
// every later ranged read of it is checked against this version.
func (h *HTTPSource) Size(ctx context.Context, name string) (int64, error) {
	var size int64
	// A pre-signed URL is for GET only: its size comes from the
	// Content-Range of its first byte.
	what, method, header, want := "HEAD "+name, http.MethodHead, http.Header(nil), http.StatusOK
	if h.s3 != nil {
		if _, ok := h.s3.presignedURL(name); ok {
			what, method, header, want = "GET "+name+" (its size)", http.MethodGet, http.Header{"Range": {"bytes=0-0"}}, http.StatusPartialContent
		}
	}
	err := h.retry(ctx, what, func() (bool, error) {
		resp, _, done, err := h.do(ctx, method, name, header)
		if err != nil {
			return true, err
		}
		defer done()
		if resp.StatusCode == http.StatusNotFound {
			return false, fs.ErrNotExist
		}
		size = resp.ContentLength
		if want == http.StatusPartialContent {
			size = validatorOf(resp).size
		}
		if resp.StatusCode != want || size < 0 {
			return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests, &httpStatusError{h.url(name), resp.Status + " (no length)"}
		}
		if first := h.remember(name, validatorOf(resp)); first.differs(validatorOf(resp)) != "" {
			return false, changedError(name, first.differs(validatorOf(resp)))
		}
		return false, nil
	})
	return size, err
}

// ReadAt implements Source. Bytes already received survive a dropped
// connection: the next attempt asks only for the rest.
func (h *HTTPSource) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	got := 0
	return h.retry(ctx, fmt.Sprintf("GET %s bytes %d-%d", name, off, off+int64(len(p))-1), func() (bool, error) {
		start := off + int64(got)
		end := off + int64(len(p)) - 1
		header := http.Header{"Range": {"bytes=" + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10)}}
		first, known := h.known(name)
		switch {
		case known && h.s3 != nil && first.etag != "":
			// Object stores answer If-Match (412 when the object was
			// replaced); not all of them know If-Range.
			header.Set("If-Match", first.etag)
		case known && first.ifRange() != "":
			header.Set("If-Range", first.ifRange())
		}
		resp, body, done, err := h.do(ctx, http.MethodGet, name, header)
		if err != nil {
			return true, err
		}
		defer done()
		switch resp.StatusCode {
		case http.StatusPartialContent:
		case http.StatusNotFound:
			// Open found every segment: it was removed since.
			return false, fmt.Errorf("GET %s: 404 Not Found: the segment was there when the snapshot was opened and was removed or replaced on the server since (a newer upload pruned this generation: rewind serve --keep); restore again (%w)", h.url(name), fs.ErrNotExist)
		case http.StatusRequestedRangeNotSatisfiable:
			return false, fmt.Errorf("%s has no bytes %d-%d on the server: the segment is truncated", name, start, end)
		case http.StatusOK:
			// The whole file: either If-Range did not match (a new file
			// with another validator or size) or ranges are not served.
			if how := first.differs(validatorOf(resp)); known && how != "" {
				return false, changedError(name, how)
			}
			return false, fmt.Errorf("server for %s ignores Range requests (answered 200, want 206): serve the snapshot with a server that supports ranges, such as 'rewind serve'", h.url(name))
		case http.StatusPreconditionFailed:
			if h.s3 != nil {
				return false, changedError(name, "the store answered 412 Precondition Failed to If-Match "+first.etag)
			}
			return false, changedError(name, "the server answered 412 Precondition Failed to If-Range "+first.ifRange())
		default:
			return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests, &httpStatusError{h.url(name), resp.Status}
		}
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(start, 10)+"-") {
			return false, fmt.Errorf("server answered Content-Range %q for bytes %d-%d of %s", cr, start, end, name)
		}
		now := validatorOf(resp)
		if how := h.remember(name, now).differs(now); how != "" {
			return false, changedError(name, how)
		}
		n, err := io.ReadFull(body, p[got:])
		got += n
		if err != nil {
			return true, fmt.Errorf("connection dropped after %d of %d bytes: %w", got, len(p), h.stalled(ctx, err))
		}
		return false, nil
	})
}

// retry runs attempt until it succeeds, fails for good (retry false), the
// context ends, or h.retryFor has passed since the first failure; waits
// double from 250 ms to 15 s. Certificate errors are never retried.
func (h *HTTPSource) retry(ctx context.Context, what string, attempt func() (retry bool, err error)) error {
	wait := 250 * time.Millisecond
	var err error
	var failing time.Time
	for i := 1; ; i++ {
		var again bool
		again, err = attempt()
		if ce := CertError(err); ce != nil {
			return fmt.Errorf("%s from %s: %w", what, h.raw, ce)
		}
		var refused *S3Error
		if errors.As(err, &refused) {
			return err // names the request and the location already
		}
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if errors.Is(err, ErrInsecureRedirect) || errors.Is(err, ErrContentEncoding) {
			return fmt.Errorf("%s from %s: %w", what, h.raw, err)
		}
		if err == nil || !again || ctx.Err() != nil {
			break
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		if time.Since(failing) >= h.retryFor {
			return fmt.Errorf("%s from %s: gave up after %d attempts in %s: %w; check that the server is up and reachable, then run the restore again (a rescue boot resumes from its journal)",
				what, h.raw, i, time.Since(failing).Round(time.Second), err)
		}
		h.log("retrying", "request", what, "attempt", i, "wait", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 15*time.Second)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s from %s: %w", what, h.raw, err)
	}
	return err
}

// minProgress is how many bytes a response body must deliver within each
// stall timeout: a server that trickles a byte now and then (about 1 KiB/s
// and less with the default 60 s) is stalled, not slow.
const minProgress = 64 << 10

// stallReader re-arms the watchdog each time minProgress more bytes have
// arrived.
type stallReader struct {
	r        io.Reader
	watchdog *time.Timer
	after    time.Duration
	got      int // bytes since the watchdog was last armed
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.got += n
	if s.got >= minProgress {
		s.watchdog.Reset(s.after)
		s.got = 0
	}
	return n, err
}

// SetStallTimeout changes how long a request may get no response, or a
// response deliver nothing, before it is retried (StallTimeout by default).
func (h *HTTPSource) SetStallTimeout(d time.Duration) { h.stall = d }

// Close implements Source.
func (h *HTTPSource) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
