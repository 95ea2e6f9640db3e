package rescue

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/rewind-bmr/rewind/internal/units"
)

// The lab view: 'rewind serve's page at /reports/, one row per machine
// with its phase, progress, rate, ETA, last error and earlier runs,
// failures first. The page renders on the server (it works without
// JavaScript, reloading itself) and then updates itself every few
// seconds from ?format=view, without reloading.

// staleAfter is how long a running machine may stay silent (it reports
// every progressEvery) before the page says when it was last heard from.
const staleAfter = time.Minute

// maxHistory bounds the earlier runs kept per machine.
const maxHistory = 10

// maxHistoryError bounds the error text kept per earlier run: a machine's
// history must not hold ten times a report's size.
const maxHistoryError = 512

// maxETA is the longest ETA the page words as a time; a rate that would
// take longer (a stall, a forged update) reads "over 720h0m0s".
const maxETA = 30 * 24 * time.Hour

// shortError cuts an earlier run's error to maxHistoryError bytes, on a
// character boundary.
func shortError(e string) string {
	if len(e) <= maxHistoryError {
		return e
	}
	cut := maxHistoryError
	for cut > 0 && !utf8.RuneStart(e[cut]) {
		cut--
	}
	return e[:cut] + "…"
}

// pastRun is one finished run of a machine, for the page's history.
type pastRun struct {
	Status   string    `json:"status"`
	Received time.Time `json:"received"` // server clock
	Seconds  float64   `json:"seconds"`
	Error    string    `json:"error,omitempty"`
}

// pageRow is one machine's line on the status page.
type pageRow struct {
	Key      string     `json:"key"` // stable, opaque: the row's identity in the page
	Machine  string     `json:"machine"`
	Status   string     `json:"status"`
	Phase    string     `json:"phase"` // booting … installing while running; done, failed, aborted at the end
	Target   string     `json:"target"`
	Snapshot string     `json:"snapshot"`
	Error    string     `json:"error,omitempty"`
	Capture  bool       `json:"capture,omitempty"` // the machine captures its disks
	Disks    []pageDisk `json:"disks,omitempty"`   // several disks: each one, replacing Target and Snapshot
	Percent  float64    `json:"percent"`
	Done     int64      `json:"done"`  // bytes
	Total    int64      `json:"total"` // bytes
	Rate     string     `json:"rate,omitempty"`
	ETA      string     `json:"eta,omitempty"`
	Stale    string     `json:"stale,omitempty"` // a running machine not heard from for a while
	Started  string     `json:"started"`
	Took     string     `json:"took"`
	Clock    string     `json:"clock,omitempty"`
	History  []pageRun  `json:"history,omitempty"` // earlier runs, newest first
}

// pageRun is an earlier run on the page.
type pageRun struct {
	Status, When, Took, Error string
}

// pageDisk is one disk of a machine with several on the status page.
type pageDisk struct {
	Target   string `json:"target"`
	Snapshot string `json:"snapshot"`
	Status   string `json:"status"`
}

// pageView is the status page's data, also served as JSON (?format=view).
type pageView struct {
	Rows        []pageRow      `json:"rows"`
	Counts      map[string]int `json:"counts"` // machines by phase
	NotStored   int            `json:"not_stored"`
	Dropped     int            `json:"dropped"`
	MaxMachines int            `json:"max_machines"`
	StoreFiles  int            `json:"store_files"`
	MaxFiles    int            `json:"max_files"`
	Now         string         `json:"now"`
}

// diskDone is the bytes of disk d done: written, zeroed or skipped by a
// restore; read by a capture, which records them as read once the disk is
// captured (and as written in its progress updates).
func diskDone(d DiskReport, capture bool) int64 {
	if capture && d.Status == DiskOK {
		return d.BytesRead
	}
	return d.BytesWritten + d.BytesZeroed + d.BytesSkipped
}

// progressOf is a report's bytes done and to do, over all its disks.
func progressOf(r *Report) (done, total int64) {
	capture := r.Action == ActionCapture
	done, total = r.BytesWritten+r.BytesZeroed+r.BytesSkipped, r.Snapshot.DataBytes
	if len(r.Disks) > 1 || capture && len(r.Disks) == 1 {
		done, total = 0, 0
		for _, d := range r.Disks {
			done += diskDone(d, capture)
			total += d.DataBytes
		}
	}
	return max(done, 0), max(total, 0)
}

// phaseOf is the phase the page shows for a report.
func phaseOf(r *Report) string {
	switch r.Status {
	case StatusSuccess:
		return "done"
	case StatusFailed:
		return "failed"
	case StatusAborted:
		return "aborted"
	}
	if r.Phase == "" {
		return PhaseBooting
	}
	return r.Phase
}

// phaseOrder sorts the page: failures first, then machines at work, then
// the rest; by machine within each.
func phaseOrder(phase string) int {
	switch phase {
	case "failed":
		return 0
	case "done":
		return 3
	case "aborted":
		return 2
	}
	return 1
}

// rowKey is a row's identity on the page: a hash of the machine's ID, so
// no report text becomes an element ID.
func rowKey(id machineID) string {
	sum := sha256.Sum256([]byte(id.key()))
	return hex.EncodeToString(sum[:12])
}

// page builds the status page. Times are the server's: the machine's
// clock (often wrong in a rescue environment, or forged) is only shown
// when it is far off.
func (s *ReportServer) page(now time.Time) pageView {
	rows := s.sortedRows()
	s.mu.Lock()
	v := pageView{NotStored: s.notStored, Dropped: s.dropped, MaxMachines: s.cfg.MaxMachines, StoreFiles: s.files, MaxFiles: s.cfg.MaxFiles}
	s.mu.Unlock()
	v.Counts = map[string]int{}
	v.Now = now.Local().Format("2006-01-02 15:04:05")
	for _, row := range rows {
		r := row.report
		pr := pageRow{
			Key:      rowKey(row.id),
			Machine:  row.id.label(),
			Status:   r.Status,
			Phase:    phaseOf(r),
			Target:   r.Target.Description,
			Snapshot: r.Snapshot.Location,
			Error:    r.Error,
			Started:  row.firstSeen.Local().Format("2006-01-02 15:04:05"),
			Capture:  r.Action == ActionCapture,
		}
		v.Counts[pr.Phase]++
		if len(r.Disks) > 1 {
			for i, d := range r.Disks {
				if i >= MaxDisks {
					break
				}
				target := d.Target.Description
				if target == "" {
					target = "target " + d.Spec
				}
				pr.Disks = append(pr.Disks, pageDisk{Target: target, Snapshot: d.Snapshot, Status: d.Status})
			}
		}
		pr.Done, pr.Total = progressOf(r)
		if pr.Total > 0 {
			pr.Percent = min(max(100*float64(pr.Done)/float64(pr.Total), 0), 100)
		}
		if r.Status == StatusSuccess {
			pr.Percent = 100
		}
		rate := row.rate
		if r.Status != StatusRunning {
			rate = r.BytesPerSecond
		}
		if rate > 0 && rate < 1e12 {
			pr.Rate = units.Bytes(int64(rate)) + "/s"
			if r.Status == StatusRunning && pr.Total > pr.Done {
				if left := float64(pr.Total-pr.Done) / rate; left < maxETA.Seconds() {
					pr.ETA = time.Duration(left * float64(time.Second)).Round(time.Second).String()
				} else {
					pr.ETA = "over " + maxETA.String()
				}
			}
		}
		switch {
		case r.Status == StatusRunning:
			pr.Took = now.Sub(row.firstSeen).Round(time.Second).String()
			if quiet := now.Sub(row.received); quiet > staleAfter {
				pr.Stale = "no update for " + quiet.Round(time.Second).String()
			}
		case r.Seconds >= 0 && r.Seconds < 30*24*3600:
			pr.Took = time.Duration(r.Seconds * float64(time.Second)).Round(time.Second).String()
		default:
			pr.Took = "?"
		}
		if d := r.Started.Sub(row.firstSeen); !r.Started.IsZero() && (d > 10*time.Minute || d < -24*time.Hour) {
			pr.Clock = "machine clock: " + r.Started.UTC().Format(time.RFC3339)
		}
		for i := len(row.history) - 1; i >= 0; i-- {
			h := row.history[i]
			if i == len(row.history)-1 && r.Status != StatusRunning {
				continue // the row itself
			}
			took := "?"
			if h.Seconds >= 0 && h.Seconds < 30*24*3600 {
				took = time.Duration(h.Seconds * float64(time.Second)).Round(time.Second).String()
			}
			pr.History = append(pr.History, pageRun{Status: h.Status, When: h.Received.Local().Format("2006-01-02 15:04"), Took: took, Error: h.Error})
		}
		v.Rows = append(v.Rows, pr)
	}
	sort.SliceStable(v.Rows, func(i, j int) bool {
		a, b := phaseOrder(v.Rows[i].Phase), phaseOrder(v.Rows[j].Phase)
		if a != b {
			return a < b
		}
		return v.Rows[i].Machine < v.Rows[j].Machine
	})
	return v
}

// pageScript updates the page from ?format=view every few seconds, with
// no reload. Every text from a report goes in as textContent, never as
// markup: reports are untrusted.
const pageScript = `
(function () {
  "use strict";
  var every = 2000;
  var body = document.getElementById("rows");
  var note = document.getElementById("live");
  var counts = document.getElementById("counts");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function td(tr, text, cls) { var c = el("td", cls, text); tr.appendChild(c); return c; }
  function lines(cell, items) {
    items.forEach(function (t, i) {
      if (i > 0) cell.appendChild(el("br"));
      cell.appendChild(document.createTextNode(t));
    });
  }
  function row(r) {
    var tr = el("tr", "row-" + r.phase);
    tr.dataset.key = r.key;
    tr.dataset.phase = r.phase;
    td(tr, r.machine, "machine");
    var ph = td(tr, r.phase, "phase " + r.phase);
    if (r.capture) { ph.appendChild(document.createTextNode(" ")); ph.appendChild(el("small", "", "capture")); }
    if (r.stale) { ph.appendChild(el("br")); ph.appendChild(el("small", "warn stale", r.stale)); }
    var pc = td(tr, "", "progress");
    var bar = el("progress");
    bar.max = 100; bar.value = Math.round(r.percent);
    pc.appendChild(bar);
    pc.appendChild(el("span", "percent", " " + Math.round(r.percent) + "%"));
    td(tr, r.rate || "", "rate");
    td(tr, r.eta || "", "eta");
    if (r.disks && r.disks.length) {
      lines(td(tr, "", "target"), r.disks.map(function (d) { return d.target + " (" + d.status + ")"; }));
      lines(td(tr, "", "snapshot"), r.disks.map(function (d) { return d.snapshot; }));
    } else {
      td(tr, r.target, "target");
      td(tr, r.snapshot, "snapshot");
    }
    var st = td(tr, r.started, "started");
    if (r.clock) { st.appendChild(el("br")); st.appendChild(el("small", "", r.clock)); }
    td(tr, r.took, "took");
    td(tr, r.error || "", "error");
    var hist = td(tr, "", "history");
    (r.history || []).forEach(function (h, i) {
      if (i > 0) hist.appendChild(el("br"));
      var s = el("small", h.Status, h.When + " " + h.Status + " (" + h.Took + ")");
      if (h.Error) s.title = h.Error;
      hist.appendChild(s);
    });
    return tr;
  }
  function render(v) {
    var frag = document.createDocumentFragment();
    (v.rows || []).forEach(function (r) { frag.appendChild(row(r)); });
    body.replaceChildren(frag);
    var parts = [];
    Object.keys(v.counts || {}).sort().forEach(function (k) { parts.push(v.counts[k] + " " + k); });
    counts.textContent = (v.rows || []).length + " machines" + (parts.length ? ": " + parts.join(", ") : "");
    document.getElementById("table").hidden = !(v.rows || []).length;
    document.getElementById("empty").hidden = !!(v.rows || []).length;
  }
  function refresh() {
    fetch("?format=view", {cache: "no-store"}).then(function (resp) {
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.json();
    }).then(function (v) {
      render(v);
      note.textContent = "live: updated " + v.now;
      note.className = "";
    }).catch(function (e) {
      note.textContent = "cannot reach the server (" + e.message + "); trying again";
      note.className = "warn";
    }).finally(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
`

// pageCSP lets the page run only its own script and fetch only from its
// server, so that report text could not run even if it slipped past the
// escaping.
var pageCSP = func() string {
	sum := sha256.Sum256([]byte(pageScript))
	return "default-src 'none'; style-src 'unsafe-inline'; connect-src 'self'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// servePage answers GET /reports/: the HTML page, or its data as JSON
// (?format=view).
func (s *ReportServer) servePage(w http.ResponseWriter, req *http.Request) {
	v := s.page(s.cfg.Now())
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if req.URL.Query().Get("format") == "view" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", pageCSP)
	if err := statusPage.Execute(w, struct {
		pageView
		Script template.JS
	}{v, template.JS(pageScript)}); err != nil {
		s.log.Warn("reports page", "remote", req.RemoteAddr, "err", err)
	}
}

// statusPage is the operator's view. It is whole when served; its script
// then keeps it current (without script, it reloads every 5 seconds).
var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><noscript><meta http-equiv="refresh" content="5"></noscript>
<title>Rewind: machines</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
.done, .success { color: #176117; } .failed { color: #a01010; font-weight: bold; } .aborted { color: #8a6100; }
tr.row-failed td { background: #fff0f0; }
td.machine, td.started, td.rate, td.eta, td.took { white-space: nowrap; }
.warn { color: #a01010; } small { color: #666; }
progress { width: 12em; }
</style></head><body>
<h1>Rewind: machines</h1>
<p><span id="counts">{{len .Rows}} machines</span> · <small id="live">as of {{.Now}}</small></p>
{{if .NotStored}}<p class="warn">{{.NotStored}} final reports were not stored: the report directory holds {{.StoreFiles}} reports (limit {{.MaxFiles}}) or is full. Move old reports out of it.</p>{{end}}
{{if .Dropped}}<p class="warn">{{.Dropped}} machines were dropped from this page: it shows at most {{.MaxMachines}} (rewind serve --max-machines); their final reports are still in the report directory.</p>{{end}}
<p id="empty"{{if .Rows}} hidden{{end}}>No rescue environment has reported yet. Plans send reports here with <code>[report] url = "http://THIS-SERVER/reports/"</code> and the server's token.</p>
<table id="table"{{if not .Rows}} hidden{{end}}><thead><tr><th>machine</th><th>phase</th><th>progress</th><th>rate</th><th>ETA</th><th>target</th><th>snapshot</th><th>started</th><th>time</th><th>last error</th><th>earlier runs</th></tr></thead>
<tbody id="rows">{{range .Rows}}<tr class="row-{{.Phase}}" data-key="{{.Key}}" data-phase="{{.Phase}}"><td class="machine">{{.Machine}}</td><td class="phase {{.Phase}}">{{.Phase}}{{if .Capture}} <small>capture</small>{{end}}{{if .Stale}}<br><small class="warn stale">{{.Stale}}</small>{{end}}</td>
<td class="progress"><progress max="100" value="{{printf "%.0f" .Percent}}"></progress><span class="percent"> {{printf "%.0f" .Percent}}%</span></td><td class="rate">{{.Rate}}</td><td class="eta">{{.ETA}}</td>
{{if .Disks}}<td class="target">{{range $i, $d := .Disks}}{{if $i}}<br>{{end}}{{$d.Target}} ({{$d.Status}}){{end}}</td><td class="snapshot">{{range $i, $d := .Disks}}{{if $i}}<br>{{end}}{{$d.Snapshot}}{{end}}</td>
{{else}}<td class="target">{{.Target}}</td><td class="snapshot">{{.Snapshot}}</td>{{end}}<td class="started">{{.Started}}{{if .Clock}}<br><small>{{.Clock}}</small>{{end}}</td><td class="took">{{.Took}}</td><td class="error">{{.Error}}</td>
<td class="history">{{range $i, $h := .History}}{{if $i}}<br>{{end}}<small class="{{$h.Status}}" title="{{$h.Error}}">{{$h.When}} {{$h.Status}} ({{$h.Took}})</small>{{end}}</td></tr>
{{end}}</tbody></table>
<script>{{.Script}}</script>
</body></html>
`))
