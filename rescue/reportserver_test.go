package rescue

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/restore"
)

func TestReportServer(t *testing.T) {
	dir := t.TempDir()
	s, err := NewReportServer(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()

	start := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	running := NewReport(start)
	running.Status = StatusRunning
	running.Machine.Name = "pc1"
	running.Snapshot.DataBytes = 1000
	running.BytesWritten = 400
	// PostReport is what the rescue environment uses.
	if err := PostReport(context.Background(), srv.URL+"/reports/", running); err != nil {
		t.Fatalf("post progress: %v", err)
	}
	page := get(t, srv.URL+"/reports/")
	if !strings.Contains(page, "pc1") || !strings.Contains(page, "running") || !strings.Contains(page, `value="40"`) {
		t.Errorf("status page does not show pc1 running at 40%%:\n%s", page)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(files) != 0 {
		t.Errorf("a progress update was stored as a file: %v", files)
	}

	final := *running
	final.BytesWritten = 1000
	final.Finish(StatusFailed, errString("chunk 7 (disk offset 29360128): stored bytes do not match"), start.Add(time.Minute))
	if err := PostReport(context.Background(), srv.URL+"/reports/", &final); err != nil {
		t.Fatalf("post final: %v", err)
	}
	var got []*Report
	if err := json.Unmarshal([]byte(get(t, srv.URL+"/reports/?format=json")), &got); err != nil || len(got) != 1 || got[0].Status != StatusFailed {
		t.Fatalf("reports as JSON: %v %+v", err, got)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 1 || !strings.Contains(files[0], "pc1-failed") {
		t.Fatalf("stored reports: %v", files)
	}

	// A restarted server shows what was stored.
	s2, _ := NewReportServer(dir)
	if r := s2.Reports(); len(r) != 1 || !strings.Contains(r[0].Error, "chunk 7") {
		t.Errorf("after restart: %+v", r)
	}

	for _, bad := range []string{"not json", `{"version": 99, "machine": {"name": "x"}}`, `{"version": 1}`} {
		resp, err := http.Post(srv.URL+"/reports/", "application/json", strings.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %q: %s, want 400", bad, resp.Status)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A restore in progress reaches the report server as a running report.
func TestProgressReachesReportServer(t *testing.T) {
	s, _ := NewReportServer(t.TempDir())
	srv := httptest.NewServer(s)
	defer srv.Close()
	r := &Rescue{report: NewReport(time.Now()), settings: &Settings{ReportURL: srv.URL + "/"}}
	r.report.Machine.Name = "pc7"
	r.report.Snapshot.DataBytes = 1 << 30
	shown := 0
	update := r.progress(func(restore.Progress) { shown++ })
	update(restore.Progress{Done: 100 << 20, Total: 1 << 30}) // at the start: console only
	time.Sleep(progressEvery)
	update(restore.Progress{Done: 256 << 20, Total: 1 << 30})
	update(restore.Progress{Done: 300 << 20, Total: 1 << 30}) // within 5 s: console only
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Reports()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := s.Reports()
	if len(got) != 1 || got[0].Status != StatusRunning || got[0].BytesWritten != 256<<20 || got[0].Machine.Name != "pc7" {
		t.Fatalf("server has %+v, want pc7 running at 256 MiB", got)
	}
	if shown != 3 {
		t.Errorf("console shown %d updates, want 3", shown)
	}
}
