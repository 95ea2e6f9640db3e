package rescue

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable server clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// viewLab is a report server over dir with the clock c, on an httptest
// server.
func viewLab(t *testing.T, dir string, c *clock) (*ReportServer, string) {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewReportServer(root, ReportServerConfig{Token: testToken, Now: c.now})
	if err != nil {
		t.Fatalf("NewReportServer: %v", err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	return s, hs.URL + "/"
}

func view(t *testing.T, url string) pageView {
	t.Helper()
	resp, err := http.Get(url + "?format=view")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET ?format=view: %s, Cache-Control %q", resp.Status, resp.Header.Get("Cache-Control"))
	}
	var v pageView
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("view JSON: %v", err)
	}
	return v
}

func rowOf(t *testing.T, v pageView, machine string) pageRow {
	t.Helper()
	for _, r := range v.Rows {
		if strings.HasPrefix(r.Machine, machine+" ") || r.Machine == machine {
			return r
		}
	}
	t.Fatalf("no row for %s in %+v", machine, v.Rows)
	return pageRow{}
}

func send(t *testing.T, url string, r *Report) {
	t.Helper()
	if err := PostReport(context.Background(), nil, url, testToken, r); err != nil {
		t.Fatalf("post %s %s: %v", r.Machine.Name, r.Status, err)
	}
}

// restoring is a running report of a one-disk restore at done of total.
func restoring(name, mac string, started time.Time, done, total int64) *Report {
	r := testReport(name, mac, StatusRunning, started)
	r.Action, r.Phase = ActionRestore, PhaseRestoring
	r.Snapshot.DataBytes, r.BytesWritten = total, done
	return r
}

// The lab view: each machine's phase, progress, the rate and ETA measured
// on the server's clock, failures first, and earlier runs.
func TestLabViewRows(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	_, url := viewLab(t, t.TempDir(), c)
	start := c.now()

	ok := testReport("pc-ok", "52:54:00:00:01:01", StatusSuccess, start)
	ok.BytesPerSecond = 100 << 20
	ok.Finish(StatusSuccess, nil, start.Add(90*time.Second))
	send(t, url, ok)
	net := testReport("pc-net", "52:54:00:00:01:02", StatusRunning, start)
	net.Phase = PhaseNetwork
	send(t, url, net)
	send(t, url, restoring("pc-run", "52:54:00:00:01:03", start, 100<<20, 1000<<20))
	c.add(10 * time.Second)
	send(t, url, restoring("pc-run", "52:54:00:00:01:03", start, 300<<20, 1000<<20)) // 20 MiB/s
	fail := restoring("pc-bad", "52:54:00:00:01:04", start, 10, 100)
	fail.Finish(StatusFailed, errString("chunk 7 (disk offset 29360128): stored bytes do not match"), start.Add(time.Minute))
	send(t, url, fail)

	v := view(t, url)
	var order []string
	for _, r := range v.Rows {
		order = append(order, r.Phase)
	}
	if got, want := strings.Join(order, " "), "failed network restoring done"; got != want {
		t.Errorf("row phases in page order: %q, want %q (failures first, then machines at work by name, then done)", got, want)
	}
	run := rowOf(t, v, "pc-run")
	if run.Rate != "20.0 MiB/s" || run.ETA != "35s" || run.Percent != 30 {
		t.Errorf("pc-run: rate %q ETA %q percent %v, want 20.0 MiB/s, 35s (700 MiB at 20 MiB/s), 30", run.Rate, run.ETA, run.Percent)
	}
	if bad := rowOf(t, v, "pc-bad"); !strings.Contains(bad.Error, "chunk 7") || bad.Status != StatusFailed {
		t.Errorf("pc-bad: status %q error %q, want failed naming chunk 7", bad.Status, bad.Error)
	}
	if done := rowOf(t, v, "pc-ok"); done.Percent != 100 || done.Rate != "100.0 MiB/s" || done.ETA != "" {
		t.Errorf("pc-ok: percent %v rate %q ETA %q, want 100, the report's rate, no ETA", done.Percent, done.Rate, done.ETA)
	}
	if v.Counts["failed"] != 1 || v.Counts["restoring"] != 1 || v.Counts["done"] != 1 || v.Counts["network"] != 1 {
		t.Errorf("counts: %v", v.Counts)
	}

	// A machine that stops reporting is marked as such.
	c.add(2 * time.Minute)
	if run := rowOf(t, view(t, url), "pc-run"); !strings.HasPrefix(run.Stale, "no update for 2m") {
		t.Errorf("pc-run silent for 2 min: stale %q", run.Stale)
	}

	// pc-bad boots again and succeeds: its row is done, the failed run is
	// its history.
	again := testReport("pc-bad", "52:54:00:00:01:04", StatusSuccess, start.Add(time.Hour))
	again.Finish(StatusSuccess, nil, start.Add(time.Hour+time.Minute))
	send(t, url, again)
	send(t, url, again) // sent twice: one run
	v = view(t, url)
	bad := rowOf(t, v, "pc-bad")
	if bad.Phase != "done" || len(bad.History) != 1 || bad.History[0].Status != StatusFailed || !strings.Contains(bad.History[0].Error, "chunk 7") {
		t.Errorf("pc-bad after a second run: phase %q history %+v, want done with the failed run in its history", bad.Phase, bad.History)
	}
	if v.Rows[0].Phase == "failed" {
		t.Errorf("a machine that recovered still sorts first: %+v", v.Rows[0])
	}
}

// A phase the rescue flow does not send is refused.
func TestLabViewPhaseRefused(t *testing.T) {
	c := &clock{t: time.Now()}
	_, url := viewLab(t, t.TempDir(), c)
	r := restoring("pc1", "52:54:00:00:01:01", c.now(), 1, 2)
	r.Phase = "<script>"
	code, body := post(t, url, "Bearer "+testToken, string(r.JSON()))
	if code != http.StatusBadRequest || !strings.Contains(body, "phase") {
		t.Errorf("report with phase %q: %d %q, want 400 naming the phase", r.Phase, code, body)
	}
	if n := len(view(t, url).Rows); n != 0 {
		t.Errorf("refused report made %d rows", n)
	}
}

// Machines at work survive a restart of the server, with their phase,
// progress and history; their live file goes with their final report, and
// a hostile live file is skipped.
func TestLabViewSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	start := c.now()
	_, url := viewLab(t, dir, c)
	first := testReport("pc1", "52:54:00:00:02:01", StatusSuccess, start.Add(-time.Hour))
	first.Finish(StatusFailed, errString("network: no lease"), start.Add(-50*time.Minute))
	send(t, url, first)
	send(t, url, restoring("pc1", "52:54:00:00:02:01", start, 100<<20, 400<<20))
	c.add(15 * time.Second)
	send(t, url, restoring("pc1", "52:54:00:00:02:01", start, 250<<20, 400<<20))
	done := testReport("pc2", "52:54:00:00:02:02", StatusSuccess, start)
	done.Finish(StatusSuccess, nil, start.Add(time.Minute))
	send(t, url, done)
	before := rowOf(t, view(t, url), "pc1")

	// Hostile leftovers in reports/live: not JSON, a final report, a
	// file named for another machine, a half-written temporary file.
	live := filepath.Join(dir, liveDir)
	files, _ := filepath.Glob(filepath.Join(live, "*.json"))
	if len(files) != 1 {
		t.Fatalf("live files: %v, want pc1's only (pc2 is done)", files)
	}
	b, _ := os.ReadFile(files[0])
	os.WriteFile(filepath.Join(live, "aa.json"), []byte("{not json"), 0o644)
	os.WriteFile(filepath.Join(live, "bb.json"), b, 0o644) // pc1's row under another name
	final := restoring("pc3", "52:54:00:00:02:03", start, 1, 2)
	final.Finish(StatusFailed, nil, start)
	fb, _ := json.Marshal(liveRow{Received: start, Report: final.JSON()})
	os.WriteFile(filepath.Join(dir, liveName(machineID{name: "pc3", macs: []string{"52:54:00:00:02:03"}})), fb, 0o644)
	os.WriteFile(filepath.Join(live, "cc.json.tmp"), b[:10], 0o644)

	c.add(5 * time.Second)
	_, url2 := viewLab(t, dir, c)
	v := view(t, url2)
	if len(v.Rows) != 2 {
		t.Fatalf("after restart: %d rows %+v, want pc1 and pc2", len(v.Rows), v.Rows)
	}
	after := rowOf(t, v, "pc1")
	if after.Phase != PhaseRestoring || after.Percent != before.Percent || after.Rate != before.Rate || after.Started != before.Started {
		t.Errorf("pc1 after restart: phase %q %v%% rate %q started %q; before: %q %v%% %q %q", after.Phase, after.Percent, after.Rate, after.Started, before.Phase, before.Percent, before.Rate, before.Started)
	}
	if len(after.History) != 1 || after.History[0].Status != StatusFailed {
		t.Errorf("pc1's earlier run after restart: %+v", after.History)
	}
	if got := rowOf(t, v, "pc2"); got.Phase != "done" {
		t.Errorf("pc2 after restart: %q", got.Phase)
	}
	left, _ := filepath.Glob(filepath.Join(live, "*"))
	if len(left) != 1 || left[0] != files[0] {
		t.Errorf("live files after restart: %v, want only %s (the hostile ones removed)", left, files[0])
	}

	// pc1 finishes: its live file goes, and a restart shows it done.
	end := restoring("pc1", "52:54:00:00:02:01", start, 400<<20, 400<<20)
	end.Finish(StatusSuccess, nil, start.Add(2*time.Minute))
	send(t, url2, end)
	if left, _ := filepath.Glob(filepath.Join(live, "*")); len(left) != 0 {
		t.Errorf("live files after pc1's final report: %v", left)
	}
	_, url3 := viewLab(t, dir, c)
	if got := rowOf(t, view(t, url3), "pc1"); got.Phase != "done" || len(got.History) != 1 {
		t.Errorf("pc1 after its final report and a restart: %q, history %+v", got.Phase, got.History)
	}
}

// reports/live as a symbolic link is refused: rows are kept only in a
// real directory.
func TestLabViewLiveDirLink(t *testing.T) {
	dir := t.TempDir()
	os.Symlink(t.TempDir(), filepath.Join(dir, liveDir))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	_, err = NewReportServer(root, ReportServerConfig{Token: testToken})
	if err == nil || !strings.Contains(err.Error(), "live is not a directory") {
		t.Errorf("reports/live a symlink: %v, want an error naming it", err)
	}
}

// Each phase of the rescue flow reaches the report server as soon as the
// network is up: the lab page shows a machine that is not yet restoring.
func TestPhaseReachesReportServer(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	s := l.srv.Reports
	r := &Rescue{report: NewReport(time.Now()), client: http.DefaultClient, settings: &Settings{ReportURL: l.url + "/reports/", ReportToken: testToken}}
	r.report.Machine.Name = "pc8"
	r.setPhase(PhaseNetwork) // the network is not up: nothing is sent
	time.Sleep(200 * time.Millisecond)
	if got := s.Reports(); len(got) != 0 {
		t.Fatalf("a phase was sent before the network was up: %+v", got)
	}
	r.netUp = true
	for _, phase := range []string{PhaseNetwork, PhaseRestoring, PhaseInstalling} {
		r.setPhase(phase)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if got := s.Reports(); len(got) == 1 && got[0].Phase == phase {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := s.Reports(); len(got) != 1 || got[0].Phase != phase || got[0].Status != StatusRunning {
			t.Fatalf("after setPhase(%s) the server has %+v, want pc8 running in that phase", phase, got)
		}
	}
	if r.report.Status != StatusFailed {
		t.Errorf("setPhase changed the flow's own report status to %s", r.report.Status)
	}
}

// Hostile reports cannot make the page lie or the server hoard: an ETA
// beyond a month is worded as such, an earlier run's error is cut, and a
// huge progress update stays out of reports/live.
func TestLabViewBounds(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	_, url := viewLab(t, dir, c)
	start := c.now()
	send(t, url, restoring("slow", "52:54:00:00:05:01", start, 0, 1<<60))
	c.add(10 * time.Second)
	send(t, url, restoring("slow", "52:54:00:00:05:01", start, 10, 1<<60)) // 1 byte a second
	if got := rowOf(t, view(t, url), "slow"); got.ETA != "over 720h0m0s" {
		t.Errorf("ETA of 2^60 bytes at 1 B/s: %q, want \"over 720h0m0s\"", got.ETA)
	}

	long := strings.Repeat("é", 100<<10) // 200 KiB of error text
	bad := testReport("pc-long", "52:54:00:00:05:02", StatusFailed, start)
	bad.Finish(StatusFailed, errString(long), start.Add(time.Minute))
	send(t, url, bad)
	again := testReport("pc-long", "52:54:00:00:05:02", StatusSuccess, start.Add(time.Hour))
	again.Finish(StatusSuccess, nil, start.Add(time.Hour+time.Minute))
	send(t, url, again)
	h := rowOf(t, view(t, url), "pc-long").History
	if len(h) != 1 || len(h[0].Error) > maxHistoryError+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(h[0].Error, "…")) {
		t.Errorf("earlier run's error: %d bytes (want at most %d, a prefix of the error)", len(h[0].Error), maxHistoryError+len("…"))
	}

	huge := restoring("pc-huge", "52:54:00:00:05:03", start, 1, 2)
	huge.Error = strings.Repeat("x", 100<<10)
	send(t, url, huge)
	if got := rowOf(t, view(t, url), "pc-huge"); got.Phase != PhaseRestoring {
		t.Errorf("pc-huge not shown: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, liveName(machineID{name: "pc-huge", macs: []string{"52:54:00:00:05:03"}}))); err == nil {
		t.Errorf("a 100 KiB progress update was kept in reports/live (at most %d bytes a file)", maxLiveFile)
	}
}
