package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"
)

// HandlerOptions configures a file handler made by NewRootHandler.
type HandlerOptions struct {
	// List shows directory listings (rewind serve --list). Without it a
	// directory answers 403.
	List bool
	// WriteIdle is how long a client may take to receive each MiB of a
	// file; every MiB sent moves the connection's write deadline on, so a
	// large file downloads at any sane speed while a client that stops
	// reading is cut off. 0 means one minute.
	WriteIdle time.Duration
	// Log gets one debug line per request; nil logs nothing.
	Log *slog.Logger
}

// writePiece is how much of a file body is sent under one write deadline.
const writePiece = 1 << 20

// NewHandler serves the files under dir (snapshots, rescue media) with
// Range support, logging one line per request. It is NewRootHandler on dir
// without directory listings; if dir cannot be opened, every request
// answers 500 naming it.
func NewHandler(dir string, log *slog.Logger) http.Handler {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, fmt.Sprintf("serve %s: %v", dir, err), http.StatusInternalServerError)
		})
	}
	return NewRootHandler(root, HandlerOptions{Log: log})
}

// NewRootHandler serves the files under root with Range, If-Range and
// ETag support. Every access stays inside root (os.Root): a symbolic link
// that leads out of it is not followed. Names starting with a dot (at any
// level), *.key files and files holding a private key (Rewind's signing
// key, or a PEM/OpenSSH "PRIVATE KEY") are never served: they answer 404
// as if absent. Only GET and HEAD are allowed.
func NewRootHandler(root *os.Root, opt HandlerOptions) http.Handler {
	if opt.WriteIdle <= 0 {
		opt.WriteIdle = time.Minute
	}
	return &fileHandler{root: root, opt: opt}
}

type fileHandler struct {
	root *os.Root
	opt  HandlerOptions
}

func (h *fileHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK, rc: http.NewResponseController(w), idle: h.opt.WriteIdle}
	h.serve(rec, r)
	if h.opt.Log != nil {
		h.opt.Log.Debug("http", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
			"range", r.Header.Get("Range"), "status", rec.status, "took", time.Since(start))
	}
}

func (h *fileHandler) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "this server only serves files: use GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	// What is not a file (a 404, a listing, a redirect) is never kept by
	// a cache: a "not found" for a generation still being uploaded would
	// outlive its upload. Files set their own below.
	w.Header().Set("Cache-Control", "no-store")
	name, ok := servedName(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if to, ok := h.latest(name); ok {
		// A restore reads one generation even when latest moves on
		// while it runs: it follows this redirect once, for the
		// manifest, and reads the rest from where it led (HTTPSource).
		w.Header().Set("Cache-Control", "no-store")
		u := url.URL{Path: "/" + to, RawQuery: r.URL.RawQuery}
		if strings.HasSuffix(r.URL.Path, "/") {
			u.Path += "/"
		}
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer, holding a thread per request; it has no effect on the
	// regular files and directories served.
	f, err := h.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		// Absent, outside the directory (a symbolic link leading out),
		// or unreadable: all look the same to the client.
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if fi.IsDir() {
		h.directory(w, r, f, name)
		return
	}
	if !fi.Mode().IsRegular() || isPrivateKey(f) {
		http.NotFound(w, r) // devices, FIFOs and keys are never served
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		http.Error(w, "read "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("ETag", etag(fi))
	w.Header().Set("Cache-Control", cacheControl(name))
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}

// Cache-Control values, so that an HTTP cache between the server and the
// machines (nginx, varnish, a CDN; docs/scale.md) keeps what cannot
// change and never serves a manifest that may have.
const (
	// CacheImmutable: a file inside an uploaded generation
	// (NAME/<generation>/...), which is never changed once published.
	CacheImmutable = "public, max-age=31536000, immutable"
	// CacheRevalidate: a manifest outside a generation, which a new
	// capture may replace: caches must ask the server (ETag,
	// Last-Modified) every time.
	CacheRevalidate = "no-cache"
	// CacheShort: any other file, segments of plain snapshot directories
	// among them: fresh for a minute, then revalidated by its validators.
	// A segment a cache kept too long cannot pass as the new one: every
	// chunk's hash is in the manifest, and the restore refuses it.
	CacheShort = "public, max-age=60"
)

// cacheControl is the Cache-Control of the file name (a served name).
func cacheControl(name string) string {
	dir, base := path.Split(name)
	if IsGeneration(path.Base(path.Clean("/" + dir))) {
		return CacheImmutable
	}
	if base == ManifestName || base == SignatureName {
		return CacheRevalidate
	}
	return CacheShort
}

// LatestName is the symbolic link that names the newest generation of an
// uploaded snapshot: NAME/latest -> 2026-11-23T10:15:00Z.
const LatestName = "latest"

// GenerationLayout is the form of a generation's name: the capture's
// start time, UTC, to the second.
const GenerationLayout = "2006-01-02T15:04:05Z"

// IsGeneration reports whether name is a generation's name: a time in
// GenerationLayout exactly.
func IsGeneration(name string) bool {
	t, err := time.Parse(GenerationLayout, name)
	return err == nil && t.Format(GenerationLayout) == name
}

// latest rewrites name when one of its elements is a LatestName symbolic
// link to a generation (a sibling named as GenerationLayout): the name
// through the generation it points at now. Any other link (to itself, to
// another name) is not redirected.
func (h *fileHandler) latest(name string) (string, bool) {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if p != LatestName {
			continue
		}
		link := strings.Join(parts[:i+1], "/")
		fi, err := h.root.Lstat(link)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		to, err := h.root.Readlink(link)
		if err != nil || !IsGeneration(to) {
			continue // served as a plain path: os.Root follows it inside the directory, or fails
		}
		parts[i] = to
		return strings.Join(parts, "/"), true
	}
	return "", false
}

// servedName turns a URL path into a name inside the root, or reports that
// it names something never served (a dot name at any level, a *.key file).
func servedName(p string) (string, bool) {
	if strings.ContainsRune(p, 0) || strings.ContainsRune(p, '\\') {
		return "", false
	}
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if name == "" {
		return ".", true
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") {
			return "", false
		}
	}
	if strings.HasSuffix(strings.ToLower(name), ".key") {
		return "", false
	}
	return name, true
}

// keyScan is how much of a file isPrivateKey reads: enough for a
// certificate chain before the key in a combined PEM file.
const keyScan = 16 << 10

// isPrivateKey reports whether f holds a private key in its first keyScan
// bytes: Rewind's own (rewind key generate, sign.go; its loader skips
// white space), a PEM block "-----BEGIN ... PRIVATE KEY-----" on any line
// (after openssl's "Bag Attributes", after a certificate in a combined
// file), an OpenSSH or a PuTTY key.
func isPrivateKey(f *os.File) bool {
	head := make([]byte, keyScan)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	if bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte(privateKeyHeader)) {
		return true
	}
	if len(head) >= 4 && binary.LittleEndian.Uint32(head) == lz4Magic {
		return false // a segment: its frames may hold a captured key's text as literals
	}
	if !bytes.Contains(head, []byte("PRIVATE KEY-----")) && !bytes.Contains(head, []byte("PuTTY-User-Key-File-")) {
		return false // the common case: a manifest, a boot file
	}
	for line := range bytes.Lines(head) {
		line = bytes.TrimSpace(line)
		if bytes.HasPrefix(line, []byte("PuTTY-User-Key-File-")) ||
			bytes.HasPrefix(line, []byte("-----BEGIN ")) && bytes.Contains(line, []byte("PRIVATE KEY-----")) {
			return true
		}
	}
	return false
}

// etag names one version of a file: its inode, size and modification
// time. A file replaced on the server (a new snapshot's segment) gets a
// new one, so a client resuming with If-Range gets the whole new file, not
// a range of it spliced onto the old one.
func etag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf(`"%x-%x-%x"`, ino, fi.Size(), fi.ModTime().UnixNano())
}

func (h *fileHandler) directory(w http.ResponseWriter, r *http.Request, f *os.File, name string) {
	if !h.opt.List {
		http.Error(w, "directory listings are off (start rewind serve with --list to show them); machines' reports are at /reports/", http.StatusForbidden)
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/") {
		http.Redirect(w, r, path.Base(r.URL.Path)+"/", http.StatusMovedPermanently)
		return
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		http.Error(w, "list "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	type item struct{ Name, Href string }
	var items []item
	for _, e := range entries {
		n := e.Name()
		if _, ok := servedName(n); !ok {
			continue
		}
		if e.IsDir() {
			n += "/"
		}
		items = append(items, item{Name: n, Href: (&url.URL{Path: n}).String()})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := listing.Execute(w, struct {
		Dir   string
		Items []item
	}{"/" + strings.TrimPrefix(name, "."), items}); err != nil && h.opt.Log != nil {
		h.opt.Log.Debug("http listing", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
	}
}

var listing = template.Must(template.New("list").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Dir}}</title></head><body><pre>
{{range .Items}}<a href="{{.Href}}">{{.Name}}</a>
{{end}}</pre></body></html>
`))

type statusRecorder struct {
	http.ResponseWriter
	status int
	rc     *http.ResponseController
	idle   time.Duration
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ReadFrom keeps the server's zero-copy path (sendfile) for file bodies,
// one MiB at a time, moving the write deadline on before each.
func (s *statusRecorder) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := s.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(s.ResponseWriter, r)
	}
	lr, ok := r.(*io.LimitedReader)
	if !ok || s.rc == nil {
		return rf.ReadFrom(r)
	}
	var total int64
	for lr.N > 0 {
		if err := s.rc.SetWriteDeadline(time.Now().Add(s.idle)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return total, err
		}
		// One level of LimitedReader over the *os.File, as sendfile wants.
		piece := &io.LimitedReader{R: lr.R, N: min(lr.N, writePiece)}
		n, err := rf.ReadFrom(piece)
		total += n
		lr.N -= n
		if err != nil {
			return total, err
		}
		if n == 0 {
			break // end of file
		}
	}
	return total, nil
}
