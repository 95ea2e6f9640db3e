package rescue

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rewind-bmr/rewind/internal/labtoken"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
)

// StatusRunning marks a report POSTed while the restore is still going:
// a progress update, replaced by the final report.
const StatusRunning = "running"

// Limits of the report server; ReportServerConfig's zero values mean these.
const (
	DefaultMaxMachines   = 1000      // rows on the page; the least recently heard from is dropped
	DefaultMaxReportSize = 256 << 10 // bytes of one POSTed report
	DefaultMaxFiles      = 10000     // final reports kept as files
	DefaultMaxStoreBytes = 256 << 20 // bytes of all report files together
)

// Timeouts of 'rewind serve'; LabServerConfig's zero values mean these.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second // a whole request, body included
	DefaultWriteTimeout      = time.Minute      // a response; a file body: each MiB of it
	DefaultIdleTimeout       = 2 * time.Minute  // a kept-alive connection between requests
)

// ReportServerConfig configures a ReportServer.
type ReportServerConfig struct {
	// Token is the lab's report token: a POST must carry it as
	// "Authorization: Bearer TOKEN" (the plan's [report] token). Empty:
	// every POST is refused, unless Insecure.
	Token string
	// Insecure accepts reports without a token (rewind serve
	// --insecure-reports). Only allowed when Token is empty.
	Insecure bool
	// Limits; zero means the Default* constants.
	MaxMachines   int
	MaxReportSize int64
	MaxFiles      int
	MaxStoreBytes int64
	// Now is the server's clock; nil means time.Now.
	Now func() time.Time
	// Log gets a line for every report received or refused; nil: none.
	Log *slog.Logger
}

// ReportServer receives the reports rescue environments POST (the plan's
// report.url) and shows the latest one of each machine on a web page, so a
// lab operator re-imaging many machines sees each one's progress. Final
// reports are kept as files in its directory; progress updates only in
// memory.
//
// Reports are untrusted input: a POST needs the lab's token; the status
// must be one the rescue flow sends; the machine's name, MACs and DMI UUID
// must be well-formed, and only they name the row and the file. Rows are
// ordered by the server's clock, never the machine's: a report claiming
// to start in the future cannot hide later ones.
type ReportServer struct {
	root  *os.Root // the reports directory
	cfg   ReportServerConfig
	token [sha256.Size]byte // of cfg.Token
	log   *slog.Logger

	mu        sync.Mutex
	rows      map[string]*reportRow // by machineID.key
	seq       uint64                // arrival order
	files     int                   // report files in the directory
	bytes     int64                 // and their size
	notStored int                   // final reports refused: the directory was full
	dropped   int                   // rows dropped: more machines than MaxMachines
}

// reportRow is one machine's latest report and when the server got it.
type reportRow struct {
	id        machineID
	report    *Report
	seq       uint64
	received  time.Time // server clock: the latest report
	firstSeen time.Time // server clock: the first report of this boot
	rate      float64   // bytes a second, from this boot's progress updates (server clock)
	history   []pastRun // the machine's finished runs, oldest first, at most maxHistory
	liveSaved time.Time // when the row was last saved as a live file
	livePhase string    // the phase it had then
}

// NewReportServer serves the reports in dir (an os.Root: every file it
// reads or writes stays inside), loading the final reports already there.
func NewReportServer(dir *os.Root, cfg ReportServerConfig) (*ReportServer, error) {
	if cfg.Token != "" && cfg.Insecure {
		return nil, errors.New("report server: a report token and insecure reports exclude each other; drop --insecure-reports")
	}
	if cfg.Token != "" {
		if err := CheckReportToken(cfg.Token); err != nil {
			return nil, fmt.Errorf("report server: %w", err)
		}
	}
	if cfg.MaxMachines <= 0 {
		cfg.MaxMachines = DefaultMaxMachines
	}
	if cfg.MaxReportSize <= 0 {
		cfg.MaxReportSize = DefaultMaxReportSize
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = DefaultMaxFiles
	}
	if cfg.MaxStoreBytes <= 0 {
		cfg.MaxStoreBytes = DefaultMaxStoreBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &ReportServer{root: dir, cfg: cfg, token: sha256.Sum256([]byte(cfg.Token)), log: log, rows: make(map[string]*reportRow)}
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.loadLive(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the reports directory.
func (s *ReportServer) Close() error { return s.root.Close() }

// reportFileTime starts a stored report's name: the server's receive time,
// so that names sort in the order the reports arrived.
const reportFileTime = "20060102T150405.000Z"

// load reads the final reports in the directory, oldest first, so that
// each machine's row ends with its latest one.
func (s *ReportServer) load() error {
	d, err := s.root.Open(".")
	if err != nil {
		return fmt.Errorf("report directory %s: %w", s.root.Name(), err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("report directory %s: %w", s.root.Name(), err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		s.files++
		s.bytes += info.Size()
		r, id, err := s.readStored(name)
		if err != nil {
			s.log.Warn("report file skipped", "dir", s.root.Name(), "file", name, "err", err)
			continue
		}
		received := info.ModTime()
		stamp, _, _ := strings.Cut(name, "-")
		for _, layout := range []string{reportFileTime, "20060102T150405Z"} {
			if t, err := time.Parse(layout, stamp); err == nil {
				received = t
				break
			}
		}
		s.keep(id, r, received)
	}
	return nil
}

func (s *ReportServer) readStored(name string) (*Report, machineID, error) {
	f, err := s.root.Open(name)
	if err != nil {
		return nil, machineID{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, s.cfg.MaxReportSize+1))
	if err != nil {
		return nil, machineID{}, err
	}
	if int64(len(b)) > s.cfg.MaxReportSize {
		return nil, machineID{}, fmt.Errorf("larger than %d bytes", s.cfg.MaxReportSize)
	}
	return decodeReport(bytes.NewReader(b))
}

// ServeHTTP takes POSTed reports and shows the table on GET (HTML, or
// JSON with ?format=json).
func (s *ReportServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.Method {
	case http.MethodPost:
		s.receive(w, req)
	case http.MethodGet, http.MethodHead:
		if req.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(s.Reports())
			return
		}
		s.servePage(w, req)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "use GET to read the reports or POST to send one", http.StatusMethodNotAllowed)
	}
}

// refuse answers an error and logs it; nothing was stored.
func (s *ReportServer) refuse(w http.ResponseWriter, req *http.Request, code int, msg string) {
	s.log.Warn("report refused", "remote", req.RemoteAddr, "status", code, "reason", msg)
	http.Error(w, msg, code)
}

func (s *ReportServer) receive(w http.ResponseWriter, req *http.Request) {
	if code, msg := s.authorize(req); code != 0 {
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rewind reports"`)
		}
		s.refuse(w, req, code, msg)
		return
	}
	body := http.MaxBytesReader(w, req.Body, s.cfg.MaxReportSize)
	r, id, err := decodeReport(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		var timeout net.Error
		switch {
		case errors.As(err, &tooBig):
			s.refuse(w, req, http.StatusRequestEntityTooLarge, fmt.Sprintf("report is larger than this server's limit of %d bytes", s.cfg.MaxReportSize))
		case errors.As(err, &timeout) && timeout.Timeout():
			s.refuse(w, req, http.StatusRequestTimeout, "report body not received in time")
		default:
			s.refuse(w, req, http.StatusBadRequest, err.Error())
		}
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Status != StatusRunning {
		name, err := s.store(id, r, now)
		if err != nil {
			if errors.Is(err, errStoreFull) {
				s.notStored++
				s.refuse(w, req, http.StatusInsufficientStorage, err.Error())
				return
			}
			s.refuse(w, req, http.StatusInternalServerError, "store report: "+err.Error())
			return
		}
		s.log.Info("report stored", "machine", id.label(), "status", r.Status, "file", name, "remote", req.RemoteAddr)
	}
	if !s.keep(id, r, now) {
		// A progress update of a boot whose final report is already
		// here (the POSTs race): it changes nothing.
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if r.Status == StatusRunning {
		s.saveLive(s.rows[id.key()], now)
	} else {
		s.removeLive(id)
	}
	w.WriteHeader(http.StatusCreated)
}

// authorize checks the request's token; code 0 means go on.
func (s *ReportServer) authorize(req *http.Request) (code int, msg string) {
	if s.cfg.Token == "" {
		if s.cfg.Insecure {
			return 0, ""
		}
		return http.StatusForbidden, "this server takes no reports: start rewind serve with --report-token FILE and put the same token in the plan's [report] section"
	}
	scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return http.StatusUnauthorized, "report has no token: set token in the plan's [report] section to the token of rewind serve --report-token"
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], s.token[:]) != 1 {
		return http.StatusUnauthorized, "report token is wrong: the plan's [report] token differs from the token of rewind serve --report-token"
	}
	return 0, ""
}

var errStoreFull = errors.New("report directory is full")

// store writes a final report as a new file named by the server's receive
// time, the machine and the status (all validated); it never replaces a
// file. The caller holds s.mu.
func (s *ReportServer) store(id machineID, r *Report, now time.Time) (string, error) {
	b := r.JSON()
	if s.files >= s.cfg.MaxFiles || s.bytes+int64(len(b)) > s.cfg.MaxStoreBytes {
		return "", fmt.Errorf("%w: %s holds %d reports, %d bytes (limits: %d reports, %d bytes); move old reports out of it", errStoreFull, s.root.Name(), s.files, s.bytes, s.cfg.MaxFiles, s.cfg.MaxStoreBytes)
	}
	base := fmt.Sprintf("%s-%s-%s", now.UTC().Format(reportFileTime), id.fileLabel(), r.Status)
	for n := 1; n <= 100; n++ {
		name := base + ".json"
		if n > 1 {
			name = fmt.Sprintf("%s-%d.json", base, n)
		}
		f, err := s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			s.root.Remove(name)
			return "", fmt.Errorf("write %s: %w", name, err)
		}
		s.files++
		s.bytes += int64(len(b))
		return name, nil
	}
	return "", fmt.Errorf("%s-*.json: 100 reports with that name already", base)
}

// keep makes r the machine's row unless it is a late progress update of
// a boot whose final report is already there; it reports whether the row
// changed. Order is the server's: the report that arrives last wins,
// whatever times the machine claims. The caller holds s.mu, or is load.
func (s *ReportServer) keep(id machineID, r *Report, received time.Time) bool {
	k := id.key()
	old := s.rows[k]
	sameBoot := old != nil && old.report.Started.Equal(r.Started)
	if sameBoot && old.report.Status != StatusRunning && r.Status == StatusRunning {
		return false
	}
	row := &reportRow{id: id, report: r, received: received, firstSeen: received}
	if old != nil {
		row.history, row.liveSaved, row.livePhase = old.history, old.liveSaved, old.livePhase
	}
	if sameBoot {
		row.firstSeen = old.firstSeen
		if old.report.Status == StatusRunning && r.Status == StatusRunning {
			row.rate = nextRate(old, r, received)
		}
	}
	if r.Status != StatusRunning {
		run := pastRun{Status: r.Status, Received: received, Seconds: r.Seconds, Error: shortError(r.Error)}
		h := slices.Clone(row.history)
		if sameBoot && old.report.Status != StatusRunning && len(h) > 0 {
			h[len(h)-1] = run // the same final report again
		} else {
			h = append(h, run)
		}
		if len(h) > maxHistory {
			h = h[len(h)-maxHistory:]
		}
		row.history = h
	}
	s.seq++
	row.seq = s.seq
	s.rows[k] = row
	if old == nil && len(s.rows) > s.cfg.MaxMachines {
		var oldest *reportRow
		for _, row := range s.rows {
			if oldest == nil || row.seq < oldest.seq {
				oldest = row
			}
		}
		delete(s.rows, oldest.id.key())
		s.removeLive(oldest.id)
		s.dropped++
		s.log.Warn("report row dropped", "machine", oldest.id.label(), "reason", fmt.Sprintf("more than %d machines; it was heard from least recently", s.cfg.MaxMachines))
	}
	return true
}

// Reports returns the latest report of every machine, by machine.
func (s *ReportServer) Reports() []*Report {
	rows := s.sortedRows()
	out := make([]*Report, len(rows))
	for i, row := range rows {
		out[i] = row.report
	}
	return out
}

func (s *ReportServer) sortedRows() []*reportRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*reportRow, 0, len(s.rows))
	for _, row := range s.rows {
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id.key() < out[j].id.key() })
	return out
}

// machineID is the validated identity a report claims: its plan entry's
// name and the machine's MACs and DMI UUID, in canonical form. A row is
// one machineID, so machines of one universal plan entry get a row each.
type machineID struct {
	name string
	macs []string // sorted
	uuid string
}

func (id machineID) key() string {
	return id.name + "|" + strings.Join(id.macs, ",") + "|" + id.uuid
}

// label names the machine on the page.
func (id machineID) label() string {
	var parts []string
	if id.name != "" {
		parts = append(parts, id.name)
	}
	if len(id.macs) > 0 {
		parts = append(parts, id.macs[0])
	} else if id.uuid != "" {
		parts = append(parts, id.uuid)
	}
	return strings.Join(parts, " ")
}

// fileLabel names the machine in a file name: characters [A-Za-z0-9._-].
func (id machineID) fileLabel() string {
	switch {
	case id.name != "":
		return id.name
	case len(id.macs) > 0:
		return strings.ReplaceAll(id.macs[0], ":", "")
	default:
		return id.uuid
	}
}

// Bounds on a report's identity fields.
const (
	maxMachineName = 64
	maxReportMACs  = 64
)

// maxReportObjects bounds the JSON objects in one report (a real one has
// a few dozen: steps, NICs, install files). Each becomes a struct of up
// to a few hundred bytes, so 256 KiB of "{}," would otherwise hold some
// 20 MB per row, and as much again on disk once re-encoded.
const maxReportObjects = 2048

// maxReportTokens bounds the JSON values, keys and delimiters of one
// report: 256 KiB of `"",` in a string list would be 87000 strings.
const maxReportTokens = 32768

// decodeReport parses one report and validates what names it.
func decodeReport(rd io.Reader) (*Report, machineID, error) {
	b, err := io.ReadAll(rd)
	if err != nil {
		return nil, machineID{}, err // too big, or a timeout: the caller tells them apart
	}
	if objects, tokens := countJSON(b); objects > maxReportObjects || tokens > maxReportTokens {
		return nil, machineID{}, fmt.Errorf("report has more than %d JSON objects or %d values; a report has a few dozen objects (steps, NICs, install files)", maxReportObjects, maxReportTokens)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var r Report
	if err := dec.Decode(&r); err != nil {
		return nil, machineID{}, fmt.Errorf("report is not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, machineID{}, errors.New("report has data after its JSON object")
	}
	id, err := validateReport(&r)
	if err != nil {
		return nil, machineID{}, err
	}
	return &r, id, nil
}

// countJSON counts the JSON objects and tokens in b, stopping past the
// limits or at the first syntax error (which decoding reports). It holds
// no more than one token at a time.
func countJSON(b []byte) (objects, tokens int) {
	dec := json.NewDecoder(bytes.NewReader(b))
	for objects <= maxReportObjects && tokens <= maxReportTokens {
		t, err := dec.Token()
		if err != nil {
			break
		}
		tokens++
		if t == json.Delim('{') {
			objects++
		}
	}
	return objects, tokens
}

// validateReport checks the fields that name a report: version, status,
// machine name, MACs and DMI UUID.
func validateReport(r *Report) (machineID, error) {
	var id machineID
	if r.Version != ReportVersion {
		return id, fmt.Errorf("report version %d, this server reads version %d", r.Version, ReportVersion)
	}
	if !validReportStatus(r.Status) {
		return id, fmt.Errorf("report status %q is not one of %s, %s, %s, %s", r.Status, StatusRunning, StatusSuccess, StatusFailed, StatusAborted)
	}
	if !validPhase(r.Phase) {
		return id, fmt.Errorf("report phase %q is not one of %s, %s, %s, %s, %s", r.Phase, PhaseBooting, PhaseNetwork, PhaseRestoring, PhaseCapturing, PhaseInstalling)
	}
	if err := checkMachineName(r.Machine.Name); err != nil {
		return id, fmt.Errorf("report machine.name: %w", err)
	}
	id.name = r.Machine.Name
	if len(r.Machine.MACs) > maxReportMACs {
		return id, fmt.Errorf("report lists %d MACs; at most %d", len(r.Machine.MACs), maxReportMACs)
	}
	for _, m := range r.Machine.MACs {
		hw, err := net.ParseMAC(m)
		if err != nil {
			return id, fmt.Errorf("report machine.macs: %q is not a MAC address", m)
		}
		id.macs = append(id.macs, hw.String())
	}
	slices.Sort(id.macs)
	id.macs = slices.Compact(id.macs)
	if u := r.Machine.DMIUUID; u != "" {
		if !isUUID(u) {
			return id, fmt.Errorf("report machine.dmi_uuid %q is not a UUID", u)
		}
		id.uuid = strings.ToLower(u)
	}
	if id.name == "" && len(id.macs) == 0 && id.uuid == "" {
		return id, errors.New("report names no machine (no name, MAC or DMI UUID)")
	}
	return id, nil
}

// checkMachineName accepts a plan entry's name as reports carry it: up to
// 64 letters, digits, '.', '_' and '-', starting with a letter or digit
// (empty: no name).
func checkMachineName(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > maxMachineName {
		return fmt.Errorf("machine name is %d bytes long; at most %d", len(name), maxMachineName)
	}
	for i, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
		if !ok {
			return fmt.Errorf("machine name %q: use letters, digits, '.', '_' and '-' (starting with a letter or digit)", name)
		}
	}
	return nil
}

// isUUID reports whether s is a UUID in its 8-4-4-4-12 hex form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// CheckReportToken checks a lab report token: 16 to 1024 characters of
// the bearer token alphabet (letters, digits and -._~+/=), so that
// 'openssl rand -hex 32' or '-base64 32' makes one. The error never
// contains the token.
func CheckReportToken(tok string) error { return labtoken.Check("report token", tok) }

// ReadReportToken reads a lab report token from a file: the token, with
// surrounding white space ignored.
func ReadReportToken(path string) (string, error) { return labtoken.Read("report token", path) }

// LabServerConfig configures the server 'rewind serve' runs.
type LabServerConfig struct {
	// TokenFile holds the report token (--report-token). It must lie
	// outside the served directory.
	TokenFile string
	// InsecureReports accepts reports without a token.
	InsecureReports bool
	// MaxMachines bounds the rows of the reports page; 0: DefaultMaxMachines.
	MaxMachines int
	// List shows directory listings.
	List bool
	// UploadTokenFile holds the upload token (--upload-token), outside
	// the served directory and different from the report token. Empty:
	// uploads are refused.
	UploadTokenFile string
	// SignKeyFile is a private key (--sign), outside the served
	// directory, that signs every snapshot accepted by upload.
	SignKeyFile string
	// Keep is the number of generations kept per uploaded name (--keep);
	// 0: upload.DefaultKeep.
	Keep int
	// Timeouts; zero means the Default* constants.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// Log gets the server's log lines; nil: none.
	Log *slog.Logger
}

// LabServer is 'rewind serve': the files under a directory (snapshots,
// boot files) with Range requests, and the report server at /reports/,
// which keeps final reports in the directory's reports/.
type LabServer struct {
	HTTP    *http.Server
	Reports *ReportServer
	Uploads *upload.Receiver
	root    *os.Root
}

// NewLabServer prepares the lab server for dir.
func NewLabServer(dir string, cfg LabServerConfig) (*LabServer, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rcfg := ReportServerConfig{Insecure: cfg.InsecureReports, MaxMachines: cfg.MaxMachines, Log: log}
	if cfg.TokenFile != "" {
		if cfg.InsecureReports {
			return nil, errors.New("serve: --report-token and --insecure-reports exclude each other; drop --insecure-reports")
		}
		if err := outside("report token file", cfg.TokenFile, dir); err != nil {
			return nil, err
		}
		tok, err := ReadReportToken(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
		if fi, err := os.Stat(cfg.TokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the report token file can be read by other users; chmod 600 it", "file", cfg.TokenFile, "mode", fi.Mode().Perm())
		}
		rcfg.Token = tok
	}
	ucfg, err := uploadConfig(dir, cfg, rcfg.Token, log)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	reports, err := openReports(root, rcfg)
	if err != nil {
		root.Close()
		return nil, err
	}
	uploads, err := upload.NewReceiver(root, ucfg)
	if err != nil {
		reports.Close()
		root.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	write := or(cfg.WriteTimeout, DefaultWriteTimeout)
	mux := http.NewServeMux()
	mux.Handle("/reports/", http.StripPrefix("/reports", reports))
	mux.Handle(upload.Prefix+"/", http.StripPrefix(upload.Prefix, uploads))
	mux.Handle("/", snapshot.NewRootHandler(root, snapshot.HandlerOptions{List: cfg.List, WriteIdle: write, Log: log}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: or(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       or(cfg.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      write,
		IdleTimeout:       or(cfg.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return &LabServer{HTTP: srv, Reports: reports, Uploads: uploads, root: root}, nil
}

// uploadConfig reads the upload token and the signing key, both refused
// inside dir, and the upload token also when it is the report token: a
// stick that may only report must not be able to publish snapshots.
func uploadConfig(dir string, cfg LabServerConfig, reportToken string, log *slog.Logger) (upload.ReceiverConfig, error) {
	ucfg := upload.ReceiverConfig{Keep: cfg.Keep, Log: log}
	if cfg.Keep < 0 {
		return ucfg, fmt.Errorf("serve: --keep %d: keep at least one generation", cfg.Keep)
	}
	if cfg.UploadTokenFile != "" {
		if err := outside("upload token file", cfg.UploadTokenFile, dir); err != nil {
			return ucfg, err
		}
		tok, err := upload.ReadToken(cfg.UploadTokenFile)
		if err != nil {
			return ucfg, fmt.Errorf("serve: %w", err)
		}
		if tok == reportToken {
			return ucfg, fmt.Errorf("serve: the upload token in %s is the report token: a stick that only sends reports could publish snapshots; make a separate one with: openssl rand -hex 32 > %s", cfg.UploadTokenFile, cfg.UploadTokenFile)
		}
		if err := privateFile("upload token file", cfg.UploadTokenFile); err != nil {
			return ucfg, err
		}
		ucfg.Token = tok
	}
	if cfg.SignKeyFile != "" {
		if cfg.UploadTokenFile == "" {
			return ucfg, errors.New("serve: --sign signs uploaded snapshots, but uploads are off: add --upload-token FILE")
		}
		if err := outside("signing key", cfg.SignKeyFile, dir); err != nil {
			return ucfg, err
		}
		key, err := snapshot.LoadPrivateKey(cfg.SignKeyFile)
		if err != nil {
			return ucfg, fmt.Errorf("serve: --sign: %w", err)
		}
		if err := privateFile("signing key", cfg.SignKeyFile); err != nil {
			return ucfg, err
		}
		ucfg.SignKey = key
	}
	return ucfg, nil
}

// privateFile refuses a secret that other users may read: the upload
// token publishes snapshots, and the signing key makes any snapshot
// trusted.
func privateFile(what, file string) error {
	fi, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("serve: the %s: %w", what, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("serve: the %s %s can be read by other users (mode %04o); make it private: chmod 600 %s", what, file, perm, file)
	}
	return nil
}

// openReports opens (making it if needed) the reports directory inside
// root: a real directory, not a symbolic link, so reports never land
// among snapshot files.
func openReports(root *os.Root, cfg ReportServerConfig) (*ReportServer, error) {
	const name = "reports"
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		err = root.Mkdir(name, 0o755)
		if err == nil {
			fi, err = root.Lstat(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("serve: report directory %s: %w", filepath.Join(root.Name(), name), err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("serve: %s is not a directory (a symbolic link or a file); reports are kept only in a real directory there: move it away", filepath.Join(root.Name(), name))
	}
	dir, err := root.OpenRoot(name)
	if err != nil {
		return nil, fmt.Errorf("serve: report directory: %w", err)
	}
	s, err := NewReportServer(dir, cfg)
	if err != nil {
		dir.Close()
		return nil, err
	}
	return s, nil
}

// outside refuses a secret file inside the served directory, where anyone
// could fetch it.
func outside(what, file, dir string) error {
	f, err1 := filepath.Abs(file)
	d, err2 := filepath.Abs(dir)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if r, err := filepath.EvalSymlinks(f); err == nil {
		f = r
	}
	if r, err := filepath.EvalSymlinks(d); err == nil {
		d = r
	}
	if rel, err := filepath.Rel(d, f); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("serve: the %s %s is inside %s, which is served to anyone: move it out", what, file, dir)
	}
	// A second hard link may be a name inside dir, which the path check
	// cannot see.
	if fi, err := os.Stat(f); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			return fmt.Errorf("serve: the %s %s has %d hard links, and another name of it may be inside %s, which is served to anyone: keep one copy (cp it to a new file and remove the links)", what, file, st.Nlink, dir)
		}
	}
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Serve accepts connections on ln until Close.
func (s *LabServer) Serve(ln net.Listener) error {
	if err := s.HTTP.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server and releases its directories.
func (s *LabServer) Close() error {
	return errors.Join(s.HTTP.Close(), s.Uploads.Close(), s.Reports.Close(), s.root.Close())
}
