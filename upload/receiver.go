package upload

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
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
	"runtime"
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
	// DefaultMinFree is the space a new session needs on the server's disk.
	DefaultMinFree = 64 << 20
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
	// MinFree is the free space a new session needs on the server's
	// disk (507 below it); 0: DefaultMinFree.
	MinFree int64
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

	creating sync.Mutex      // one session created at a time (freeGeneration)
	publish  sync.Mutex      // one publication at a time
	decoding chan *decodeBuf // a slot per frame being decoded, with its buffers

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

// record is where one chunk's frame is stored and what it holds.
type record struct {
	place
	raw rawInfo
}

// place is where a frame is stored and its hash: what a frame request
// says.
type place struct {
	seg         int
	off, length int64
	sum         [sha256.Size]byte
}

// rawInfo is what the server decoded from a frame: the manifest's chunk
// must say the same.
type rawInfo struct {
	length int64
	sum    [sha256.Size]byte // of the raw bytes
	zero   bool              // every raw byte is zero
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
	if cfg.MinFree <= 0 {
		cfg.MinFree = DefaultMinFree
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{root: root, cfg: cfg, token: sha256.Sum256([]byte(cfg.Token)), log: log,
		sessions: make(map[string]*session), done: make(map[string]tombstone), stop: make(chan struct{}),
		decoding: make(chan *decodeBuf, max(2, runtime.GOMAXPROCS(0)))}
	for range cap(r.decoding) {
		r.decoding <- new(decodeBuf)
	}
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
	for _, s := range r.idleSessions() {
		r.expireSession(s)
	}
}

// idleSessions lists the sessions idle for longer than IdleTimeout.
func (r *Receiver) idleSessions() []*session {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var idle []*session
	for _, s := range r.sessions {
		if now.Sub(s.last) > r.cfg.IdleTimeout {
			idle = append(idle, s)
		}
	}
	return idle
}

// expireSession ends s unless a request is being served, or s ended or
// heard a request since idleSessions picked it (a commit that published
// it must not be turned into "expired").
func (r *Receiver) expireSession(s *session) {
	select {
	case s.lock <- struct{}{}:
	default: // a request is being served: not idle
		return
	}
	defer func() { <-s.lock }()
	r.mu.Lock()
	live := r.sessions[s.id] == s && r.cfg.Now().Sub(s.last) > r.cfg.IdleTimeout
	r.mu.Unlock()
	if live {
		r.fail(s, fmt.Sprintf("no request for %s: the session expired", r.cfg.IdleTimeout))
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
	// One create at a time: a generation the server's clock picks is
	// reserved (by the session registered below) before another create
	// looks for a free one.
	r.creating.Lock()
	defer r.creating.Unlock()
	if cr.Generation == "" {
		cr.Generation = r.freeGeneration(name, r.cfg.Now())
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
	err = r.stagingDir()
	if err == nil {
		err = r.root.Mkdir(s.dir, 0o755)
	}
	if err != nil {
		r.fail(s, "staging: "+err.Error())
		code := storageCode(err)
		if errors.Is(err, errStagingNotDir) {
			code = http.StatusForbidden // not transient: a client must not retry it
		}
		r.refuse(w, req, code, fmt.Sprintf("create the staging directory %s: %v", s.dir, err))
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

var errStagingNotDir = errors.New("the server's staging is not a directory")

// stagingDir makes .upload/ if absent and checks that it is a real
// directory: a symbolic link planted there would take every session's
// half-written files to where it leads (a served name).
func (r *Receiver) stagingDir() error {
	fi, err := r.root.Lstat(staging)
	if errors.Is(err, fs.ErrNotExist) {
		if err = r.root.Mkdir(staging, 0o755); err == nil || errors.Is(err, fs.ErrExist) {
			fi, err = r.root.Lstat(staging)
		}
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is a symbolic link or a file: uploads are staged only in a real directory there; move it away", errStagingNotDir, path.Join(r.root.Name(), staging))
	}
	return nil
}

// checkFree refuses a session when the disk has less than cfg.MinFree.
func (r *Receiver) checkFree() error {
	var st unix.Statfs_t
	if err := unix.Statfs(r.root.Name(), &st); err != nil {
		return nil // unknown: writing will tell
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < r.cfg.MinFree {
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

// maxGenerationAdvance bounds how far past its clock the server names a
// generation when the current second is taken.
const maxGenerationAdvance = 60

// freeGeneration names the generation of an upload that brought none
// (rewind capture -o URL): now, or the first later second that neither a
// published generation of name nor a session in progress for it holds, so
// that uploads of one name within one second (one after the other, or at
// once with overwrite) each get their own generation instead of a 409
// after the whole upload. It gives up after maxGenerationAdvance seconds
// (checkTarget then refuses the name, saying why). The caller holds
// r.creating.
func (r *Receiver) freeGeneration(name string, now time.Time) string {
	first := now.UTC().Format(GenerationLayout)
	for k := range maxGenerationAdvance {
		gen := now.UTC().Add(time.Duration(k) * time.Second).Format(GenerationLayout)
		if !r.generationTaken(name, gen) {
			return gen
		}
	}
	return first
}

// generationTaken says whether name/gen is published (or anything else is
// there) or reserved by a session in progress.
func (r *Receiver) generationTaken(name, gen string) bool {
	r.mu.Lock()
	for _, s := range r.sessions {
		if s.name == name && s.gen == gen {
			r.mu.Unlock()
			return true
		}
	}
	r.mu.Unlock()
	_, err := r.root.Lstat(name + "/" + gen)
	return err == nil
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

// end records how s ended, once: a session that already ended keeps its
// first record.
func (r *Receiver) end(s *session, t tombstone) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.id] != s {
		return
	}
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
	rec := place{seg: seg, off: off, length: n, sum: [sha256.Size]byte(sum)}
	where := fmt.Sprintf("chunk %d (%s at offset %d, %d bytes)", chunk, segName, off, n)
	if chunk < len(s.chunks) {
		if s.chunks[chunk].place == rec && s.segs[seg].name == segName {
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
		// 408: the client sends it again (a cut connection).
		r.refuse(w, req, http.StatusRequestTimeout, fmt.Sprintf("%s: received %d bytes of %d: %v", where, got, n, err))
		return
	}
	if !bytes.Equal(h.Sum(nil), sum) {
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s: the bytes received do not match the frame's SHA-256 %x: refused, nothing is published", where, sum))
		return
	}
	raw, err := r.decode(s.f, off, n)
	if err != nil {
		r.failRefuse(w, req, s, http.StatusBadRequest, fmt.Sprintf("%s: %v: refused, nothing is published", where, err))
		return
	}
	s.chunks = append(s.chunks, record{place: rec, raw: raw})
	s.segs[seg].size += n
	w.WriteHeader(http.StatusOK)
}

// decode reads the frame just stored at off in f and decodes it as a
// restore will (snapshot.DecodeFrame), so that the manifest's raw length,
// zero flag and raw SHA-256 of the chunk can be checked at commit: a
// restore writes a chunk marked zero without reading its frame. The frame
// must carry its content size (Rewind's frames do), at most
// snapshot.MaxChunkSize. At most cap(r.decoding) frames are decoded at
// once, bounding the memory.
func (r *Receiver) decode(f *os.File, off, n int64) (rawInfo, error) {
	b := <-r.decoding
	defer func() { r.decoding <- b }()
	frame := b.frame.sized(int(n))
	if _, err := f.ReadAt(frame, off); err != nil {
		return rawInfo{}, fmt.Errorf("read the frame back: %w", err)
	}
	const sizeFlag = 1 << 3
	if len(frame) < 14 || frame[4]&sizeFlag == 0 {
		return rawInfo{}, fmt.Errorf("%w: no content size in the frame header (Rewind's frames carry it)", snapshot.ErrBadFrame)
	}
	size := binary.LittleEndian.Uint64(frame[6:])
	if size == 0 || size > snapshot.MaxChunkSize {
		return rawInfo{}, fmt.Errorf("%w: content size %d; a chunk is 1 to %d bytes", snapshot.ErrBadFrame, size, snapshot.MaxChunkSize)
	}
	raw := b.raw.sized(int(size))
	if err := snapshot.DecodeFrame(raw, frame); err != nil {
		return rawInfo{}, err
	}
	return rawInfo{length: int64(size), sum: sha256.Sum256(raw), zero: snapshot.IsZero(raw)}, nil
}

// decodeBuf holds the buffers of one decoding slot, kept from frame to
// frame: allocating (and zeroing) a fresh frame and chunk buffer for every
// frame cost the server about a third of its CPU in an upload (page faults,
// clearing, garbage collection). DecodeFrame fills the whole chunk buffer or
// fails, so no byte of an earlier frame is read. The buffers grow to the
// largest frame and chunk seen: at most cap(decoding) x (FrameBound(max
// chunk) + max chunk), the bound the decoding slots already set.
type decodeBuf struct{ frame, raw reusable }

// reusable is a buffer that grows to the largest size asked and is reused.
type reusable struct{ b []byte }

// sized returns the buffer's first n bytes (of undefined content), growing
// it first when it is shorter.
func (u *reusable) sized(n int) []byte {
	if cap(u.b) < n {
		u.b = make([]byte, n)
	}
	return u.b[:n]
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
		r.deadlines(rc)
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

// deadlines moves the connection's deadlines on before the next MiB of a
// body: a large body arrives at any sane speed, a stalled one is cut off,
// and the answer can still be written after it.
func (r *Receiver) deadlines(rc *http.ResponseController) {
	now := time.Now()
	rc.SetReadDeadline(now.Add(r.cfg.ReadIdle))
	rc.SetWriteDeadline(now.Add(r.cfg.ReadIdle + time.Minute))
}
