package rescue

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// StatusRunning marks a report POSTed while the restore is still going:
// a progress update, replaced by the final report.
const StatusRunning = "running"

// ReportServer receives the reports rescue environments POST (the plan's
// report.url) and shows the latest one of each machine on a web page, so a
// lab operator re-imaging many machines sees each one's progress. Final
// reports are kept as files in dir; progress updates only in memory.
type ReportServer struct {
	dir    string
	mu     sync.Mutex
	latest map[string]*Report // by machine key
}

// NewReportServer serves the reports in dir, loading the ones already there.
func NewReportServer(dir string) (*ReportServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report directory: %w", err)
	}
	s := &ReportServer{dir: dir, latest: make(map[string]*Report)}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	sort.Strings(files) // file names start with the time: later ones win
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r Report
		if json.Unmarshal(b, &r) == nil && r.Version == ReportVersion {
			s.keep(&r)
		}
	}
	return s, nil
}

// machineKey names a machine in the table: its plan entry, else its MACs.
func machineKey(r *Report) string {
	if r.Machine.Name != "" {
		return r.Machine.Name
	}
	if len(r.Machine.MACs) > 0 {
		return strings.Join(r.Machine.MACs, ",")
	}
	return r.Machine.DMIUUID
}

func (s *ReportServer) keep(r *Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := machineKey(r)
	if old, ok := s.latest[k]; ok && old.Started.After(r.Started) {
		return // an update of an older boot arriving late
	}
	s.latest[k] = r
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
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, pageData(s.Reports(), time.Now())); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	default:
		http.Error(w, "use GET to read the reports or POST to send one", http.StatusMethodNotAllowed)
	}
}

func (s *ReportServer) receive(w http.ResponseWriter, req *http.Request) {
	b, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		http.Error(w, "read report: "+err.Error(), http.StatusBadRequest)
		return
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		http.Error(w, "report is not JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	if r.Version != ReportVersion {
		http.Error(w, fmt.Sprintf("report version %d, this server reads version %d", r.Version, ReportVersion), http.StatusBadRequest)
		return
	}
	if machineKey(&r) == "" {
		http.Error(w, "report names no machine (no name, MAC or DMI UUID)", http.StatusBadRequest)
		return
	}
	if r.Status != StatusRunning {
		if err := os.WriteFile(filepath.Join(s.dir, r.FileName()), b, 0o644); err != nil {
			http.Error(w, "store report: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	s.keep(&r)
	w.WriteHeader(http.StatusCreated)
}

// Reports returns the latest report of every machine, by machine.
func (s *ReportServer) Reports() []*Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Report, 0, len(s.latest))
	for _, r := range s.latest {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return machineKey(out[i]) < machineKey(out[j]) })
	return out
}

// pageRow is one machine's line on the status page.
type pageRow struct {
	Machine, Status, Target, Snapshot, Error string
	Percent                                  float64
	Started, Took                            string
}

func pageData(reports []*Report, now time.Time) []pageRow {
	var rows []pageRow
	for _, r := range reports {
		row := pageRow{
			Machine:  machineKey(r),
			Status:   r.Status,
			Target:   r.Target.Description,
			Snapshot: r.Snapshot.Location,
			Error:    r.Error,
			Started:  r.Started.Local().Format("2006-01-02 15:04:05"),
		}
		if total := r.Snapshot.DataBytes; total > 0 {
			row.Percent = 100 * float64(r.BytesWritten+r.BytesZeroed+r.BytesSkipped) / float64(total)
		}
		end := r.Finished
		if r.Status == StatusRunning || end.IsZero() {
			end = now
		}
		row.Took = end.Sub(r.Started).Round(time.Second).String()
		rows = append(rows, row)
	}
	return rows
}

// statusPage is the operator's view; it reloads itself every 5 seconds.
var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Rewind: machines</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }
.success { color: #176117; } .failed { color: #a01010; font-weight: bold; } .aborted { color: #8a6100; }
progress { width: 12em; }
</style></head><body>
<h1>Rewind: machines</h1>
{{if not .}}<p>No rescue environment has reported yet. Plans send reports here with <code>[report] url = "http://THIS-SERVER/reports/"</code>.</p>{{else}}
<table><tr><th>machine</th><th>status</th><th>progress</th><th>target</th><th>snapshot</th><th>started</th><th>time</th><th>error</th></tr>
{{range .}}<tr><td>{{.Machine}}</td><td class="{{.Status}}">{{.Status}}</td>
<td><progress max="100" value="{{printf "%.0f" .Percent}}"></progress> {{printf "%.0f" .Percent}}%</td>
<td>{{.Target}}</td><td>{{.Snapshot}}</td><td>{{.Started}}</td><td>{{.Took}}</td><td>{{.Error}}</td></tr>
{{end}}</table>{{end}}
</body></html>
`))
