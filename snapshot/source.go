package snapshot

import (
	"context"
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

// ReadFile implements Source.
func (d *DirSource) ReadFile(_ context.Context, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(d.dir, name))
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
	f, err := os.Open(filepath.Join(d.dir, name))
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
// first byte not yet received, for as long as RetryFor allows.
type HTTPSource struct {
	base     *url.URL
	raw      string
	client   *http.Client
	retryFor time.Duration
	stall    time.Duration
	log      func(msg string, args ...any)
}

// Timeouts of HTTP sources.
const (
	// DefaultRetryFor is how long a failing read keeps retrying: long
	// enough to ride out a server restart or a switch reboot.
	DefaultRetryFor = 10 * time.Minute
	// StallTimeout ends a response that delivers no byte for this long,
	// so that a stalled connection becomes a retry instead of a hang.
	StallTimeout = 60 * time.Second
)

// NewHTTPSource returns a Source for the snapshot at base, a URL of its
// directory. retryFor bounds how long one read retries (0: DefaultRetryFor).
func NewHTTPSource(base string, client *http.Client, retryFor time.Duration, log func(string, ...any)) *HTTPSource {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: StallTimeout,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true,
		}}
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
	return &HTTPSource{base: u, raw: base, client: client, retryFor: retryFor, stall: StallTimeout, log: log}
}

func (h *HTTPSource) String() string { return h.raw }

func (h *HTTPSource) url(name string) string {
	u := *h.base
	u.Path = path.Join(u.Path, name)
	return u.String()
}

// httpStatusError is a response status that retrying will not change.
type httpStatusError struct {
	url    string
	status string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.url, e.status) }

// ReadFile implements Source.
func (h *HTTPSource) ReadFile(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := h.retry(ctx, "GET "+name, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url(name), nil)
		if err != nil {
			return false, err
		}
		resp, err := h.client.Do(req)
		if err != nil {
			return true, err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return false, fs.ErrNotExist
		}
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode >= 500, &httpStatusError{h.url(name), resp.Status}
		}
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<30))
		return true, err
	})
	return data, err
}

// Size implements Source.
func (h *HTTPSource) Size(ctx context.Context, name string) (int64, error) {
	var size int64
	err := h.retry(ctx, "HEAD "+name, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, h.url(name), nil)
		if err != nil {
			return false, err
		}
		resp, err := h.client.Do(req)
		if err != nil {
			return true, err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return false, fs.ErrNotExist
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
			return resp.StatusCode >= 500, &httpStatusError{h.url(name), resp.Status + " (no length)"}
		}
		size = resp.ContentLength
		return false, nil
	})
	return size, err
}

// ReadAt implements Source. Bytes already received survive a dropped
// connection: the next attempt asks only for the rest.
func (h *HTTPSource) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	got := 0
	return h.retry(ctx, fmt.Sprintf("GET %s bytes %d-%d", name, off, off+int64(len(p))-1), func() (bool, error) {
		// A watchdog cancels the request when no byte arrives for
		// StallTimeout; the retry then asks for the rest.
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		watchdog := time.AfterFunc(h.stall, cancel)
		defer watchdog.Stop()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, h.url(name), nil)
		if err != nil {
			return false, err
		}
		start := off + int64(got)
		end := off + int64(len(p)) - 1
		req.Header.Set("Range", "bytes="+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end, 10))
		resp, err := h.client.Do(req)
		if err != nil {
			return true, err
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusPartialContent:
		case http.StatusNotFound:
			return false, fs.ErrNotExist
		case http.StatusRequestedRangeNotSatisfiable:
			return false, fmt.Errorf("%s has no bytes %d-%d on the server: the segment is truncated", name, start, end)
		case http.StatusOK:
			return false, fmt.Errorf("server for %s ignores Range requests (answered 200, want 206): serve the snapshot with a server that supports ranges, such as 'rewind serve'", h.url(name))
		default:
			return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests, &httpStatusError{h.url(name), resp.Status}
		}
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(start, 10)+"-") {
			return false, fmt.Errorf("server answered Content-Range %q for bytes %d-%d of %s", cr, start, end, name)
		}
		n, err := io.ReadFull(&stallReader{r: resp.Body, watchdog: watchdog, after: h.stall}, p[got:])
		got += n
		if err != nil {
			if ctx.Err() == nil && rctx.Err() != nil {
				err = fmt.Errorf("no data for %s", h.stall)
			}
			return true, fmt.Errorf("connection dropped after %d of %d bytes: %w", got, len(p), err)
		}
		return false, nil
	})
}

// retry runs attempt until it succeeds, fails for good (retry false), the
// context ends, or h.retryFor has passed since the first failure; waits
// double from 250 ms to 15 s.
func (h *HTTPSource) retry(ctx context.Context, what string, attempt func() (retry bool, err error)) error {
	wait := 250 * time.Millisecond
	var err error
	var failing time.Time
	for i := 1; ; i++ {
		var again bool
		again, err = attempt()
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

// stallReader re-arms the watchdog whenever bytes arrive.
type stallReader struct {
	r        io.Reader
	watchdog *time.Timer
	after    time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.watchdog.Reset(s.after)
	}
	return n, err
}

// SetStallTimeout changes how long a response may deliver nothing before
// it is retried (StallTimeout by default).
func (h *HTTPSource) SetStallTimeout(d time.Duration) { h.stall = d }

// Close implements Source.
func (h *HTTPSource) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
