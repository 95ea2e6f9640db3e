package upload

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-bmr/rewind/snapshot"
)

// Defaults of ReceiverConfig.
const (
	DefaultKeep        = 3
	DefaultMaxSessions = 32
	// DefaultIdleTimeout ends a session that hears nothing for this long:
	// twice as long as a client retries (snapshot.DefaultRetryFor).
	DefaultIdleTimeout = 2 * snapshot.DefaultRetryFor
	// DefaultReadIdle is how long a request body may take for each MiB.
	DefaultReadIdle = 30 * time.Second
	// MinFree is the space a new session needs on the server's disk.
	MinFree = 64 << 20
	// maxChunks bounds the frames of one session (4 Mi chunks of 4 MiB:
	// a 16 TiB disk).
	maxChunks = 4 << 20
	// maxTombstones bounds the finished sessions remembered, so that a
	// client whose commit answer was lost learns it was published.
	maxTombstones = 1024
)

// staging is the directory, inside the served one, where sessions are
// written; a dot name is never served.
const staging = ".upload"

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Token is the lab's upload token (rewind serve --upload-token).
	// Empty: every upload is refused (403).
	Token string
	// SignKey signs every accepted manifest (rewind serve --sign); nil:
	// the manifest keeps the client's signature, if it sent one.
	SignKey ed25519.PrivateKey
	// Keep is the number of generations kept per name; 0: DefaultKeep.
	// The one NAME/latest names is never removed.
	Keep int
	// MaxSessions bounds the uploads at once; 0: DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout ends a session that hears nothing for this long and
	// removes its staging; 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// ReadIdle is how long a request body may take per MiB; 0:
	// DefaultReadIdle.
	ReadIdle time.Duration
	// Now is the server's clock; nil: time.Now.
	Now func() time.Time
	// Log gets a line per session event; nil: none.
	Log *slog.Logger
}

// Receiver is the server end of uploads: an http.Handler for the paths
// under Prefix (with Prefix stripped). Every file it writes stays inside
// root: sessions under .upload/, published snapshots at NAME/<generation>.
type Receiver struct {
	root  *os.Root
	cfg   ReceiverConfig
	token [sha256.Size]byte
	log   *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
	done     map[string]tombstone // finished sessions, by id
	doneFIFO []string

	publish sync.Mutex // one publication at a time

	stop chan struct{}
	wg   sync.WaitGroup
}

// tombstone is how a session ended.
type tombstone struct {
	published string // NAME/<generation>, or "" when it failed
	why       string // why it failed or expired
}

// session is one upload in progress. Its fields after lock are guarded by
// holding lock (a one-slot semaphore, so that a waiting request can give
// up).
type session struct {
	id, name, gen string
	overwrite     bool
	remote        string
	dir           string // .upload/<id>
	lock          chan struct{}
	last          time.Time // guarded by Receiver.mu

	segs   []segState
	chunks []record
	f      *os.File // the open last segment
}

type segState struct {
	name string
	size int64
}

// record is where one chunk's frame is stored.
type record struct {
	seg         int
	off, length int64
	sum         [sha256.Size]byte
}

// NewReceiver serves uploads into root. It removes what an earlier run
// left in root's .upload/ (sessions do not survive a restart) and starts
// the expiry of idle sessions; Close stops it.
func NewReceiver(root *os.Root, cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Token != "" {
		if err := CheckToken(cfg.Token); err != nil {
			return nil, fmt.Errorf("upload receiver: %w", err)
		}
	}
	if cfg.Keep < 0 {
		return nil, fmt.Errorf("upload receiver: keep %d: keep at least one generation", cfg.Keep)
	}
	if cfg.Keep == 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.ReadIdle <= 0 {
		cfg.ReadIdle = DefaultReadIdle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{root: root, cfg: cfg, token: sha256.Sum256([]byte(cfg.Token)), log: log,
		sessions: make(map[string]*session), done: make(map[string]tombstone), stop: make(chan struct{})}
	if fi, err := root.Lstat(staging); err == nil {
		log.Info("upload: removing the staging of an earlier run", "dir", path.Join(root.Name(), staging), "symlink", fi.Mode()&fs.ModeSymlink != 0)
		if err := root.RemoveAll(staging); err != nil {
			return nil, fmt.Errorf("upload receiver: remove stale staging %s: %w", path.Join(root.Name(), staging), err)
		}
	}
	if cfg.Token != "" {
		r.wg.Go(r.expireLoop)
	}
	return r, nil
}

// Close stops the expiry of idle sessions. Sessions in progress stay on
// disk until the next NewReceiver removes them.
func (r *Receiver) Close() error {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
	return nil
}

func (r *Receiver) expireLoop() {
	every := min(r.cfg.IdleTimeout/4, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.expire()
		}
	}
}

// expire ends the sessions idle for longer than IdleTimeout and not busy.
func (r *Receiver) expire() {
	now := r.cfg.Now()
	r.mu.Lock()
	var idle []*session
	for _, s := range r.sessions {
		if now.Sub(s.last) > r.cfg.IdleTimeout {
			idle = append(idle, s)
		}
	}
	r.mu.Unlock()
	for _, s := range idle {
		select {
		case s.lock <- struct{}{}:
			r.fail(s, fmt.Sprintf("no request for %s: the session expired", r.cfg.IdleTimeout))
			<-s.lock
		default: // a request is being served: not idle
		}
	}
}

// ServeHTTP handles one request of the protocol (see the package doc).
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if code, msg := r.authorize(req); code != 0 {
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rewind uploads"`)
		}
		r.refuse(w, req, code, msg)
		return
	}
	name := strings.TrimPrefix(req.URL.Path, "/")
	if err := CheckName(name); err != nil {
		r.refuse(w, req, http.StatusBadRequest, err.Error())
		return
	}
	q, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		r.refuse(w, req, http.StatusBadRequest, "malformed query: "+err.Error())
		return
	}
	for k, v := range q {
		if len(v) != 1 {
			r.refuse(w, req, http.StatusBadRequest, fmt.Sprintf("query key %q given %d times", k, len(v)))
			return
		}
	}
	if req.Method == http.MethodPost && len(q) == 0 {
		r.create(w, req, name)
		return
	}
	s, code, msg := r.session(q.Get("session"), name)
	if s == nil {
		if code == http.StatusOK { // a finished session's commit or status, asked again
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(statusResponse{Published: msg})
			return
		}
		r.refuse(w, req, code, msg)
		return
	}
	if !r.acquire(req, s) {
		r.refuse(w, req, http.StatusServiceUnavailable, "the session is busy with another request; retry")
		return
	}
	defer r.release(s)
	switch {
	case req.Method == http.MethodGet && len(q) == 1:
		r.status(w, s)
	case req.Method == http.MethodPut && q.Has("commit") && len(q) == 2:
		r.commit(w, req, s)
	case req.Method == http.MethodPut && len(q) == 5:
		r.frame(w, req, s, q)
	case req.Method == http.MethodDelete && len(q) == 1:
		r.fail(s, "the client aborted it")
		w.WriteHeader(http.StatusNoContent)
	default:
		r.refuse(w, req, http.StatusBadRequest, "not a request of the upload protocol (see docs/upload.md)")
	}
}

// refuse answers an error and logs it.
func (r *Receiver) refuse(w http.ResponseWriter, req *http.Request, code int, msg string) {
	r.log.Warn("upload refused", "remote", req.RemoteAddr, "method", req.Method, "path", req.URL.Path, "status", code, "reason", msg)
	http.Error(w, msg, code)
}

// authorize checks the request's token; code 0 means go on.
func (r *Receiver) authorize(req *http.Request) (code int, msg string) {
	if r.cfg.Token == "" {
		return http.StatusForbidden, "uploads are off: start rewind serve with --upload-token FILE and put the same token in the plan's [upload] section"
	}
	scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return http.StatusUnauthorized, "upload has no token: set token in the plan's [upload] section to the token of rewind serve --upload-token"
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], r.token[:]) != 1 {
		return http.StatusUnauthorized, "upload token is wrong: the plan's [upload] token differs from the token of rewind serve --upload-token"
	}
	return 0, ""
}

// session finds the session id of name. A session that ended answers
// 200 with where it was published, or 410 with why it failed.
func (r *Receiver) session(id, name string) (*session, int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sessions[id]; s != nil {
		if s.name != name {
			return nil, http.StatusBadRequest, fmt.Sprintf("upload session %s is for %s, not %s", id, s.name, name)
		}
		s.last = r.cfg.Now()
		return s, 0, ""
	}
	if t, ok := r.done[id]; ok {
		if t.published != "" {
			return nil, http.StatusOK, t.published
		}
		return nil, http.StatusGone, fmt.Sprintf("upload session %s of %s ended: %s; nothing was published: capture again", id, name, t.why)
	}
	return nil, http.StatusNotFound, fmt.Sprintf("no upload session %q for %s (the server restarted, or it never existed): capture again", id, name)
}

func (r *Receiver) acquire(req *http.Request, s *session) bool {
	select {
	case s.lock <- struct{}{}:
	case <-req.Context().Done():
		return false
	}
	r.mu.Lock()
	_, alive := r.sessions[s.id]
	r.mu.Unlock()
	if !alive { // it ended while this request waited
		<-s.lock
		return false
	}
	return true
}

func (r *Receiver) release(s *session) {
	r.mu.Lock()
	s.last = r.cfg.Now()
	r.mu.Unlock()
	<-s.lock
}

// create opens a session for name, refusing early what publishing would
// refuse: an existing name without overwrite, a full disk.
func (r *Receiver) create(w http.ResponseWriter, req *http.Request, name string) {
	var cr createRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxCreateBody))
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&cr)
		if err == nil && dec.More() {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		r.refuse(w, req, http.StatusBadRequest, "session request: "+err.Error())
		return
	}
	if cr.Generation == "" {
		cr.Generation = r.cfg.Now().UTC().Format(GenerationLayout)
	} else if err := CheckGeneration(cr.Generation); err != nil {
		r.refuse(w, req, http.StatusBadRequest, err.Error())
		return
	}
	if code, err := r.checkTarget(name, cr.Generation, cr.Overwrite); err != nil {
		r.refuse(w, req, code, err.Error())
		return
	}
	if err := r.checkFree(); err != nil {
		r.refuse(w, req, http.StatusInsufficientStorage, err.Error())
		return
	}
	var b [16]byte
	rand.Read(b[:])
	s := &session{id: hex.EncodeToString(b[:]), name: name, gen: cr.Generation, overwrite: cr.Overwrite,
		remote: req.RemoteAddr, lock: make(chan struct{}, 1), last: r.cfg.Now()}
	s.dir = path.Join(staging, s.id)
	r.mu.Lock()
	n := len(r.sessions)
	var others []string
	for _, o := range r.sessions {
		if o.name == name {
			others = append(others, o.remote)
		}
	}
	if n < r.cfg.MaxSessions {
		r.sessions[s.id] = s
	}
	r.mu.Unlock()
	if n >= r.cfg.MaxSessions {
		w.Header().Set("Retry-After", "30")
		r.refuse(w, req, http.StatusServiceUnavailable, fmt.Sprintf("%d uploads are in progress, this server's limit: retry later", n))
		return
	}
	err = r.root.MkdirAll(staging, 0o755)
	if err == nil {
		err = r.root.Mkdir(s.dir, 0o755)
	}
	if err != nil {
		r.fail(s, "staging: "+err.Error())
		r.refuse(w, req, storageCode(err), fmt.Sprintf("create the staging directory %s: %v", s.dir, err))
		return
	}
	if len(others) > 0 {
		r.log.Warn("upload: another session uploads the same name; the first to commit wins unless overwrite adds a generation", "name", name, "remote", req.RemoteAddr, "others", others)
	}
	r.log.Info("upload session", "session", s.id, "name", name, "generation", s.gen, "overwrite", s.overwrite, "remote", req.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(createResponse{Session: s.id, Generation: s.gen})
}

// checkFree refuses a session when the disk has less than MinFree.
func (r *Receiver) checkFree() error {
	var st unix.Statfs_t
	if err := unix.Statfs(r.root.Name(), &st); err != nil {
		return nil // unknown: writing will tell
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < MinFree {
		return fmt.Errorf("the lab server's disk is full: %s has %d MiB free; free space there (or lower --keep) and capture again", r.root.Name(), free>>20)
	}
	return nil
}

// storageCode is 507 for a full disk, else 500.
func storageCode(err error) int {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// checkTarget refuses a name the upload could not be published under:
// inside a snapshot or a generations directory, through a symbolic link,
// a plain snapshot directory or something else that is not generations,
// or existing generations without overwrite, or the same generation.
func (r *Receiver) checkTarget(name, gen string, overwrite bool) (int, error) {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		dir := strings.Join(parts[:i], "/")
		fi, err := r.root.Lstat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return http.StatusInternalServerError, fmt.Errorf("%s: %w", dir, err)
		}
		if !fi.IsDir() {
			return http.StatusConflict, fmt.Errorf("%w: %s on the server is not a directory (a file or a symbolic link): %s cannot be uploaded below it; choose another name", ErrExists, dir, name)
		}
		for _, inner := range []string{snapshot.ManifestName, Latest} {
			if _, err := r.root.Lstat(dir + "/" + inner); err == nil {
				return http.StatusConflict, fmt.Errorf("%w: %s on the server is a snapshot (it holds %s): %s cannot be uploaded inside it; choose another name", ErrExists, dir, inner, name)
			}
		}
	}
	fi, err := r.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return http.StatusInternalServerError, fmt.Errorf("%s: %w", name, err)
	}
	if !fi.IsDir() {
		return http.StatusConflict, fmt.Errorf("%w: %s on the server is not a directory (a file or a symbolic link): choose another name or move it away", ErrExists, name)
	}
	entries, err := r.readDir(name)
	if err != nil {
		return http.StatusInternalServerError, err
	}
	if slices.ContainsFunc(entries, func(e fs.DirEntry) bool { return e.Name() == snapshot.ManifestName }) {
		return http.StatusConflict, fmt.Errorf("%w: %s on the server is a snapshot directory, not generations: it is never replaced by an upload; choose another name, or move it away", ErrExists, name)
	}
	var gens []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.IsDir() && isGeneration(n):
			gens = append(gens, n)
		case n == Latest && e.Type()&fs.ModeSymlink != 0, strings.HasPrefix(n, "."):
		default:
			return http.StatusConflict, fmt.Errorf("%w: %s on the server holds %s, which is not a generation: uploads publish only into a directory of generations; choose another name", ErrExists, name, n)
		}
	}
	if slices.Contains(gens, gen) {
		return http.StatusConflict, fmt.Errorf("%w: %s/%s already exists on the server: another capture of the same second; capture again", ErrExists, name, gen)
	}
	if len(gens) > 0 && !overwrite {
		return http.StatusConflict, fmt.Errorf("%w: %s exists on the server (%d generations, the newest %s): set overwrite = true in the plan's machine entry to add a generation (the last %d are kept)", ErrExists, name, len(gens), slices.Max(gens), r.cfg.Keep)
	}
	return 0, nil
}

func (r *Receiver) readDir(name string) ([]fs.DirEntry, error) {
	d, err := r.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir(-1)
}

// fail ends s, removes its staging and remembers why. The caller holds
// s.lock.
func (r *Receiver) fail(s *session, why string) {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	r.end(s, tombstone{why: why})
	if err := r.root.RemoveAll(s.dir); err != nil {
		r.log.Warn("upload: remove staging", "session", s.id, "dir", s.dir, "err", err)
	}
	r.log.Warn("upload session failed", "session", s.id, "name", s.name, "remote", s.remote, "reason", why)
}

func (r *Receiver) end(s *session, t tombstone) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sessions, s.id)
	r.done[s.id] = t
	r.doneFIFO = append(r.doneFIFO, s.id)
	if len(r.doneFIFO) > maxTombstones {
		delete(r.done, r.doneFIFO[0])
		r.doneFIFO = r.doneFIFO[1:]
	}
}

// status answers what the session holds.
func (r *Receiver) status(w http.ResponseWriter, s *session) {
	st := statusResponse{Chunks: len(s.chunks), Segments: []segmentStatus{}}
	for _, g := range s.segs {
		st.Segments = append(st.Segments, segmentStatus{Name: g.name, Size: g.size})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st)
}

// frame stores one frame, if it continues its segment and its bytes match
// its hash. A retransmission of the last frame stored is accepted without
// its body.
func (r *Receiver) frame(w http.ResponseWriter, req *http.Request, s *session, q url.Values) {
	chunk, err1 := strconv.Atoi(q.Get("chunk"))
	seg, err2 := strconv.Atoi(q.Get("segment"))
	off, err3 := strconv.ParseInt(q.Get("offset"), 10, 64)
	segName := q.Get("name")
	sum, err4 := hex.DecodeString(req.Header.Get(headerSHA256))
	if err := errors.Join(err1, err2, err3); err != nil || chunk < 0 || seg < 0 || off < 0 {
		r.failRefuse(w, req, s, http.StatusBadRequest, "frame: chunk, segment and offset must be numbers >= 0")
		return
	}
	if err4 != nil || len(sum) != sha256.Size {
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("frame of chunk %d: header %s must be the frame's SHA-256 in hex", chunk, headerSHA256))
		return
	}
	if err := checkSegmentName(segName); err != nil {
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("frame of chunk %d: %v", chunk, err))
		return
	}
	n := req.ContentLength
	switch {
	case n > MaxFrame:
		r.failRefuse(w, req, s, http.StatusRequestEntityTooLarge, fmt.Sprintf("frame of chunk %d is %d bytes; a frame is at most %d", chunk, n, MaxFrame))
		return
	case n <= 0:
		r.refuse(w, req, http.StatusLengthRequired, fmt.Sprintf("frame of chunk %d has no Content-Length (or is empty)", chunk))
		return
	}
	rec := record{seg: seg, off: off, length: n, sum: [sha256.Size]byte(sum)}
	where := fmt.Sprintf("chunk %d (%s at offset %d, %d bytes)", chunk, segName, off, n)
	if chunk < len(s.chunks) {
		if s.chunks[chunk] == rec && s.segs[seg].name == segName {
			w.WriteHeader(http.StatusOK) // already stored: the answer was lost
			return
		}
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s was already stored with another place or hash: nothing is published", where))
		return
	}
	if chunk != len(s.chunks) {
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s arrives after chunk %d: frames must come in chunk order, without gaps", where, len(s.chunks)-1))
		return
	}
	if chunk >= maxChunks {
		r.failRefuse(w, req, s, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s: more than %d chunks in one snapshot", where, maxChunks))
		return
	}
	last := len(s.segs) - 1
	switch {
	case seg == last && s.segs[last].name == segName && off == s.segs[last].size:
	case seg == last+1 && off == 0:
		for _, g := range s.segs {
			if g.name == segName {
				r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s starts a segment named like segment %s before it", where, g.name))
				return
			}
		}
		if err := r.startSegment(s, segName); err != nil {
			r.failRefuse(w, req, s, storageCode(err), fmt.Sprintf("%s: %v", where, err))
			return
		}
	default:
		held := int64(0)
		if seg <= last && seg >= 0 {
			held = s.segs[seg].size
		}
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s does not continue its segment: the server holds %d segments, %d bytes of segment %d; frames must fill each segment front to back without gaps", where, len(s.segs), held, seg))
		return
	}
	h := sha256.New()
	got, err := r.receive(w, req, s.f, off, n, h)
	if err != nil || got != n {
		// Nothing of a partial frame stays: the client resends it.
		if terr := s.f.Truncate(off); terr != nil {
			r.failRefuse(w, req, s, http.StatusInternalServerError, fmt.Sprintf("%s: cut back after a failed write: %v", where, terr))
			return
		}
		if code := storageCode(err); code == http.StatusInsufficientStorage {
			r.failRefuse(w, req, s, code, fmt.Sprintf("%s: the lab server's disk is full (%v): free space on it and capture again", where, err))
			return
		}
		r.refuse(w, req, http.StatusBadRequest, fmt.Sprintf("%s: received %d bytes of %d: %v", where, got, n, err))
		return
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s: the bytes received do not match the frame's SHA-256 %x: refused, nothing is published", where, sum))
		return
	}
	s.chunks = append(s.chunks, rec)
	s.segs[seg].size += n
	w.WriteHeader(http.StatusOK)
}

// failRefuse ends the session and answers the error.
func (r *Receiver) failRefuse(w http.ResponseWriter, req *http.Request, s *session, code int, msg string) {
	r.fail(s, msg)
	r.refuse(w, req, code, msg)
}

// startSegment flushes and closes the open segment and creates the next.
func (r *Receiver) startSegment(s *session, name string) error {
	if err := r.closeSegment(s); err != nil {
		return err
	}
	f, err := r.root.OpenFile(s.dir+"/"+name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	s.f = f
	s.segs = append(s.segs, segState{name: name})
	return nil
}

func (r *Receiver) closeSegment(s *session) error {
	if s.f == nil {
		return nil
	}
	f := s.f
	s.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("flush segment %s: %w", f.Name(), err)
	}
	return f.Close()
}

// receive copies n body bytes into f at off through h, moving the
// connection's read deadline on with every MiB.
func (r *Receiver) receive(w http.ResponseWriter, req *http.Request, f *os.File, off, n int64, h hash.Hash) (int64, error) {
	rc := http.NewResponseController(w)
	body := io.LimitReader(req.Body, n)
	buf := make([]byte, 1<<20)
	var got int64
	for got < n {
		rc.SetReadDeadline(time.Now().Add(r.cfg.ReadIdle))
		k, err := io.ReadFull(body, buf[:min(int64(len(buf)), n-got)])
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := f.WriteAt(buf[:k], off+got); werr != nil {
				return got, werr
			}
			got += int64(k)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("no byte for %s: %w", r.cfg.ReadIdle, err)
			}
			return got, err
		}
	}
	return got, nil
}

// commit checks the manifest against every frame recorded, writes the
// signature and the manifest, and publishes the snapshot.
func (r *Receiver) commit(w http.ResponseWriter, req *http.Request, s *session) {
	if req.ContentLength > snapshot.MaxManifestSize {
		r.failRefuse(w, req, s, http.StatusRequestEntityTooLarge, fmt.Sprintf("manifest of %d bytes; at most %d", req.ContentLength, int64(snapshot.MaxManifestSize)))
		return
	}
	var sig []byte
	if v := req.Header.Get(headerSignature); v != "" {
		b, err := base64.StdEncoding.DecodeString(v)
		if err == nil {
			err = checkSignatureFile(b)
		}
		if err != nil {
			r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("header %s: %v", headerSignature, err))
			return
		}
		sig = b
	}
	data, err := r.readManifest(w, req)
	if err != nil {
		r.refuse(w, req, http.StatusBadRequest, "manifest body: "+err.Error()) // a cut connection: the client retries
		return
	}
	m, err := snapshot.ParseManifest(data)
	if err != nil {
		r.failRefuse(w, req, s, http.StatusBadRequest, "manifest: "+err.Error()+": nothing is published")
		return
	}
	if err := s.matches(m); err != nil {
		r.failRefuse(w, req, s, http.StatusBadRequest, err.Error()+": nothing is published")
		return
	}
	if r.cfg.SignKey != nil {
		if sig != nil {
			r.log.Info("upload: the client's signature is replaced by the server's", "session", s.id, "name", s.name)
		}
		sig = snapshot.EncodeSignature(ed25519.Sign(r.cfg.SignKey, data))
	}
	if err := r.finish(s, data, sig); err != nil {
		r.failRefuse(w, req, s, storageCode(err), fmt.Sprintf("store %s: %v; nothing is published", s.name, err))
		return
	}
	published, code, err := r.publishSession(s)
	if err != nil {
		r.failRefuse(w, req, s, code, err.Error())
		return
	}
	r.end(s, tombstone{published: published})
	r.log.Info("upload published", "session", s.id, "name", s.name, "published", published, "chunks", len(m.Chunks),
		"segments", len(m.Segments), "signed", sig != nil, "remote", s.remote)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(commitResponse{Published: published, Signed: r.cfg.SignKey != nil})
}

func (r *Receiver) readManifest(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	body := http.MaxBytesReader(w, req.Body, snapshot.MaxManifestSize)
	var out bytes.Buffer
	buf := make([]byte, 1<<20)
	for {
		rc.SetReadDeadline(time.Now().Add(r.cfg.ReadIdle))
		k, err := body.Read(buf)
		out.Write(buf[:k])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// checkSignatureFile accepts what EncodeSignature makes: one line, the
// signature header and 64 base64 bytes.
func checkSignatureFile(b []byte) error {
	head, _, _ := strings.Cut(string(snapshot.EncodeSignature(nil)), " ")
	h, b64, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if len(b) > snapshot.MaxSignatureSize || !ok || h != head {
		return fmt.Errorf("not a %s file", head)
	}
	if sig, err := base64.StdEncoding.DecodeString(b64); err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("malformed %s: want %d base64 bytes", head, ed25519.SignatureSize)
	}
	return nil
}

// matches checks m's segments and chunk index against what s recorded:
// every chunk's segment, offset, length and hash, every segment's name
// and size.
func (s *session) matches(m *snapshot.Manifest) error {
	if len(m.Segments) != len(s.segs) {
		return fmt.Errorf("the manifest names %d segments, the server holds %d", len(m.Segments), len(s.segs))
	}
	for i, g := range m.Segments {
		if g.Name != s.segs[i].name || g.Size != s.segs[i].size {
			return fmt.Errorf("the manifest's segment %d is %s of %d bytes, the server holds %s of %d bytes", i, g.Name, g.Size, s.segs[i].name, s.segs[i].size)
		}
	}
	if len(m.Chunks) != len(s.chunks) {
		return fmt.Errorf("the manifest names %d chunks, the server received %d", len(m.Chunks), len(s.chunks))
	}
	for i, c := range m.Chunks {
		rec := s.chunks[i]
		sum := hex.EncodeToString(rec.sum[:])
		if c.Segment != rec.seg || c.FrameOffset != rec.off || c.FrameLength != rec.length || c.SHA256 != sum {
			return fmt.Errorf("chunk %d: the manifest says %s at offset %d, %d bytes, sha256 %s; the server received %s at offset %d, %d bytes, sha256 %s",
				i, m.Segments[c.Segment].Name, c.FrameOffset, c.FrameLength, c.SHA256, s.segs[rec.seg].name, rec.off, rec.length, sum)
		}
	}
	return nil
}

// finish makes the staging a complete snapshot on disk: the last segment
// flushed, the signature, then the manifest, then the directory flushed.
func (r *Receiver) finish(s *session, data, sig []byte) error {
	if err := r.closeSegment(s); err != nil {
		return err
	}
	if sig != nil {
		if err := r.writeFile(s.dir, snapshot.SignatureName, sig); err != nil {
			return err
		}
	}
	if err := r.writeFile(s.dir, snapshot.ManifestName, data); err != nil {
		return err
	}
	return r.syncDir(s.dir)
}

// writeFile writes dir/name through a temporary name, flushed.
func (r *Receiver) writeFile(dir, name string, data []byte) error {
	tmp := dir + "/." + name + ".tmp"
	f, err := r.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.root.Rename(tmp, dir+"/"+name)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (r *Receiver) syncDir(dir string) error {
	d, err := r.root.Open(dir)
	if err != nil {
		return fmt.Errorf("flush directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("flush directory %s: %w", dir, err)
	}
	return nil
}

// publishSession moves the finished staging to NAME/<generation>, points
// NAME/latest at it and prunes old generations, one publication at a time.
func (r *Receiver) publishSession(s *session) (string, int, error) {
	r.publish.Lock()
	defer r.publish.Unlock()
	if code, err := r.checkTarget(s.name, s.gen, s.overwrite); err != nil {
		return "", code, fmt.Errorf("%w; nothing is published", err)
	}
	if err := r.root.MkdirAll(s.name, 0o755); err != nil {
		return "", storageCode(err), fmt.Errorf("create %s: %w", s.name, err)
	}
	final := s.name + "/" + s.gen
	if err := r.root.Rename(s.dir, final); err != nil {
		return "", storageCode(err), fmt.Errorf("publish %s: %w", final, err)
	}
	// From here the snapshot is complete under its generation's name; a
	// failure leaves it there, reachable by that name.
	tmp := s.name + "/.latest-" + s.id
	err := r.root.Symlink(s.gen, tmp)
	if err == nil {
		err = r.root.Rename(tmp, s.name+"/"+Latest)
	}
	if err == nil {
		err = errors.Join(r.syncDir(s.name), r.syncDir(staging), r.syncDir(path.Dir(s.name)))
	}
	if err != nil {
		r.root.Remove(tmp)
		return "", storageCode(err), fmt.Errorf("%s was published but %s/%s could not be set to it: %w", final, s.name, Latest, err)
	}
	r.prune(s.name)
	return final, 0, nil
}

// prune removes the generations of name beyond the Keep newest, never the
// one latest names.
func (r *Receiver) prune(name string) {
	entries, err := r.readDir(name)
	if err != nil {
		r.log.Warn("upload: prune", "name", name, "err", err)
		return
	}
	latest, _ := r.root.Readlink(name + "/" + Latest)
	var gens []string
	for _, e := range entries {
		if e.IsDir() && isGeneration(e.Name()) {
			gens = append(gens, e.Name())
		}
	}
	slices.Sort(gens)
	slices.Reverse(gens)
	for i, g := range gens {
		if i < r.cfg.Keep || g == latest {
			continue
		}
		if err := r.root.RemoveAll(name + "/" + g); err != nil {
			r.log.Warn("upload: prune", "name", name, "generation", g, "err", err)
			continue
		}
		r.log.Info("upload: old generation removed", "name", name, "generation", g, "keep", r.cfg.Keep)
	}
}
