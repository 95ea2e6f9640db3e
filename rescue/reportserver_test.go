package rescue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-bmr/rewind/restore"
)

const testToken = "0123456789abcdef0123456789abcdef"

// lab is a real 'rewind serve' (NewLabServer) on 127.0.0.1 over a
// directory laid out like a lab's:
//
//	base/srv/            DIR
//	base/srv/pc1/        a snapshot: manifest.json, data.000
//	base/out/secret      a file outside DIR
//	base/token           the report token
type lab struct {
	url, base, dir string
	srv            *LabServer
}

func startLab(t *testing.T, cfg LabServerConfig) *lab {
	t.Helper()
	base := t.TempDir()
	l := &lab{base: base, dir: filepath.Join(base, "srv")}
	for name, data := range map[string]string{
		"srv/pc1/manifest.json": `{"version": 2}`,
		"srv/pc1/data.000":      strings.Repeat("chunk data ", 1000),
		"out/secret":            "the secret outside DIR",
		"token":                 testToken + "\n",
	} {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.TokenFile == "token" {
		cfg.TokenFile = filepath.Join(base, "token")
	}
	srv, err := NewLabServer(l.dir, cfg)
	if err != nil {
		t.Fatalf("NewLabServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	l.url, l.srv = "http://"+ln.Addr().String(), srv
	return l
}

// tree hashes every file under dir by its path, following no links.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, dir)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, h := range after {
		if before[p] == "" {
			t.Errorf("%s: file %s was written", what, p)
		} else if before[p] != h {
			t.Errorf("%s: file %s was changed", what, p)
		}
	}
	for p := range before {
		if after[p] == "" {
			t.Errorf("%s: file %s was removed", what, p)
		}
	}
}

func post(t *testing.T, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	// The timeout only turns a server that hangs into a failure.
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func testReport(name, mac, status string, started time.Time) *Report {
	r := NewReport(started)
	r.Status = status
	r.Machine.Name = name
	if mac != "" {
		r.Machine.MACs = []string{mac}
	}
	return r
}

func TestReportServer(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	url := l.url + "/reports/"
	reportDir := filepath.Join(l.dir, "reports")

	start := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	running := testReport("pc1", "52:54:00:00:00:01", StatusRunning, start)
	running.Snapshot.DataBytes = 1000
	running.BytesWritten = 400
	running.Phase = PhaseRestoring
	// PostReport is what the rescue environment uses.
	if err := PostReport(context.Background(), nil, url, testToken, running); err != nil {
		t.Fatalf("post progress: %v", err)
	}
	page := get(t, url)
	if !strings.Contains(page, "pc1") || !strings.Contains(page, "restoring") || !strings.Contains(page, `value="40"`) {
		t.Errorf("status page does not show pc1 running at 40%%:\n%s", page)
	}
	if files, _ := filepath.Glob(filepath.Join(reportDir, "*.json")); len(files) != 0 {
		t.Errorf("a progress update was stored as a file: %v", files)
	}

	final := *running
	final.BytesWritten = 1000
	final.Finish(StatusFailed, errString("chunk 7 (disk offset 29360128): stored bytes do not match"), start.Add(time.Minute))
	if err := PostReport(context.Background(), nil, url, testToken, &final); err != nil {
		t.Fatalf("post final: %v", err)
	}
	var got []*Report
	if err := json.Unmarshal([]byte(get(t, url+"?format=json")), &got); err != nil || len(got) != 1 || got[0].Status != StatusFailed {
		t.Fatalf("reports as JSON: %v %+v", err, got)
	}
	files, _ := filepath.Glob(filepath.Join(reportDir, "*.json"))
	if len(files) != 1 || !strings.HasSuffix(files[0], "-pc1-failed.json") {
		t.Fatalf("stored reports: %v, want one *-pc1-failed.json", files)
	}

	// A restarted server shows what was stored.
	l.srv.Close()
	l2 := startLabOver(t, l.dir, LabServerConfig{InsecureReports: true})
	if r := l2.Reports.Reports(); len(r) != 1 || !strings.Contains(r[0].Error, "chunk 7") {
		t.Errorf("after restart: %+v", r)
	}
}

// startLabOver runs a lab server over an existing DIR.
func startLabOver(t *testing.T, dir string, cfg LabServerConfig) *LabServer {
	t.Helper()
	srv, err := NewLabServer(dir, cfg)
	if err != nil {
		t.Fatalf("NewLabServer: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

type errString string

func (e errString) Error() string { return string(e) }

func get(t *testing.T, url string) string {
	t.Helper()
	_, body := getStatus(t, url)
	return body
}

// Forged POSTs: whatever a field holds, nothing is written outside the
// reports directory, nothing is overwritten, and the POST is refused
// with the reason.
func TestReportPOSTRefused(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	url := l.url + "/reports/"
	bearer := "Bearer " + testToken
	valid := func(edit func(m map[string]any)) string {
		m := map[string]any{"version": ReportVersion, "status": "success",
			"machine": map[string]any{"name": "pc1", "macs": []string{"52:54:00:00:00:01"}}}
		edit(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	machine := func(key string, v any) func(m map[string]any) {
		return func(m map[string]any) { m["machine"].(map[string]any)[key] = v }
	}
	status := func(s string) func(m map[string]any) { return func(m map[string]any) { m["status"] = s } }
	big := valid(func(m map[string]any) { m["error"] = strings.Repeat("x", DefaultMaxReportSize) })
	// 240 KiB of empty objects decode to some 20 MB of structs per report
	// (a NIC is ~250 bytes in memory, 3 in JSON): a thousand such rows
	// would hold tens of GB.
	empties := func(n int) []map[string]any { return make([]map[string]any, n) }
	manyNICs := valid(func(m map[string]any) {
		nics := empties(80000)
		for i := range nics {
			nics[i] = map[string]any{}
		}
		m["network"] = map[string]any{"nics": nics}
	})
	manySteps := valid(func(m map[string]any) {
		steps := empties(80000)
		for i := range steps {
			steps[i] = map[string]any{}
		}
		m["steps"] = steps
	})
	for _, tc := range []struct {
		name, auth, body string
		code             int
		why              string // in the answer
	}{
		{"no token", "", valid(func(map[string]any) {}), http.StatusUnauthorized, "no token"},
		{"wrong token", "Bearer " + strings.Repeat("f", 32), valid(func(map[string]any) {}), http.StatusUnauthorized, "token is wrong"},
		{"token prefix", "Bearer " + testToken[:16], valid(func(map[string]any) {}), http.StatusUnauthorized, "token is wrong"},
		{"basic auth", "Basic " + testToken, valid(func(map[string]any) {}), http.StatusUnauthorized, "no token"},
		{"status into a snapshot", bearer, valid(status("../../snapshots/pc1/manifest")), http.StatusBadRequest, "status"},
		{"status out of DIR", bearer, valid(status("/../../pc1/manifest")), http.StatusBadRequest, "status"},
		{"status with slash", bearer, valid(status("success/../../../out/x")), http.StatusBadRequest, "status"},
		{"status empty", bearer, valid(status("")), http.StatusBadRequest, "status"},
		{"name traversal", bearer, valid(machine("name", "../../pc1/manifest")), http.StatusBadRequest, "machine.name"},
		{"name dotdot", bearer, valid(machine("name", "..")), http.StatusBadRequest, "machine.name"},
		{"name dotfile", bearer, valid(machine("name", ".hidden")), http.StatusBadRequest, "machine.name"},
		{"name slash", bearer, valid(machine("name", "pc1/x")), http.StatusBadRequest, "machine.name"},
		{"name NUL", bearer, valid(machine("name", "pc1\x00x")), http.StatusBadRequest, "machine.name"},
		{"name space", bearer, valid(machine("name", "pc 1")), http.StatusBadRequest, "machine.name"},
		{"name too long", bearer, valid(machine("name", strings.Repeat("a", 65))), http.StatusBadRequest, "machine.name"},
		{"mac traversal", bearer, valid(machine("macs", []string{"../../pc1/manifest"})), http.StatusBadRequest, "machine.macs"},
		{"too many macs", bearer, valid(machine("macs", make([]string, 65))), http.StatusBadRequest, "MACs"},
		{"uuid traversal", bearer, valid(machine("dmi_uuid", "../../../../out/secret-000000000000")), http.StatusBadRequest, "dmi_uuid"},
		{"no identity", bearer, `{"version": 1, "status": "success"}`, http.StatusBadRequest, "names no machine"},
		{"version", bearer, valid(func(m map[string]any) { m["version"] = 99 }), http.StatusBadRequest, "version 99"},
		{"not JSON", bearer, "not json", http.StatusBadRequest, "not JSON"},
		{"trailing data", bearer, valid(func(map[string]any) {}) + `{"status": "../x"}`, http.StatusBadRequest, "after its JSON"},
		{"oversize", bearer, big, http.StatusRequestEntityTooLarge, "larger than"},
		{"80000 NICs", bearer, manyNICs, http.StatusBadRequest, "JSON objects"},
		{"80000 steps", bearer, manySteps, http.StatusBadRequest, "JSON objects"},
		{"80000 DNS servers", bearer, valid(func(m map[string]any) { m["network"] = map[string]any{"dns": make([]string, 80000)} }), http.StatusBadRequest, "values"},
	} {
		before := tree(t, l.base)
		code, answer := post(t, url, tc.auth, tc.body)
		if code != tc.code || !strings.Contains(answer, tc.why) {
			t.Errorf("%s: POST answered %d %q, want %d naming %q", tc.name, code, strings.TrimSpace(answer), tc.code, tc.why)
		}
		sameTree(t, tc.name, before, tree(t, l.base))
		if r := l.srv.Reports.Reports(); len(r) != 0 {
			t.Errorf("%s: the server shows %d reports, want none", tc.name, len(r))
		}
	}
	// The same body with the token is taken, into the reports directory.
	if code, answer := post(t, url, bearer, valid(func(map[string]any) {})); code != http.StatusCreated {
		t.Fatalf("valid POST: %d %s", code, answer)
	}
	if files, _ := filepath.Glob(filepath.Join(l.dir, "reports", "*-pc1-success.json")); len(files) != 1 {
		t.Errorf("valid POST stored %v; want one *-pc1-success.json in DIR/reports", files)
	}
}

// PostReport's error names the token when the server refuses it.
func TestPostReportWrongToken(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	r := testReport("pc1", "52:54:00:00:00:01", StatusSuccess, time.Now())
	for _, tok := range []string{"", strings.Repeat("a", 32)} {
		err := PostReport(context.Background(), nil, l.url+"/reports/", tok, r)
		if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "[report] token") {
			t.Errorf("PostReport with token %q: error %v; want 401 and a hint at the plan's [report] token", tok, err)
		}
	}
}

// Without a token the server refuses reports unless told otherwise.
func TestReportServerTokenModes(t *testing.T) {
	body, _ := json.Marshal(testReport("pc1", "52:54:00:00:00:01", StatusSuccess, time.Now()))
	for _, tc := range []struct {
		name string
		cfg  LabServerConfig
		auth string
		code int
	}{
		{"no token configured", LabServerConfig{}, "", http.StatusForbidden},
		{"no token configured, client sends one", LabServerConfig{}, "Bearer " + testToken, http.StatusForbidden},
		{"insecure reports", LabServerConfig{InsecureReports: true}, "", http.StatusCreated},
		{"token", LabServerConfig{TokenFile: "token"}, "bearer " + testToken, http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLab(t, tc.cfg)
			before := tree(t, l.base)
			code, answer := post(t, l.url+"/reports/", tc.auth, string(body))
			if code != tc.code {
				t.Fatalf("POST: %d %q, want %d", code, answer, tc.code)
			}
			if code == http.StatusForbidden {
				if !strings.Contains(answer, "--report-token") {
					t.Errorf("refusal %q does not say how to configure a token", answer)
				}
				sameTree(t, tc.name, before, tree(t, l.base))
			}
		})
	}
}

func TestLabServerConfigErrors(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "srv")
	os.MkdirAll(dir, 0o755)
	write := func(name, data string) string {
		p := filepath.Join(base, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("token", testToken)
	inside := write("srv/lab-token", testToken)
	short := write("short", "secret\n")
	spaces := write("spaces", "0123456789 abcdef 0123456789\n")
	linkDir := filepath.Join(base, "linked")
	os.MkdirAll(linkDir, 0o755)
	linkedDIR := filepath.Join(base, "srv2")
	os.MkdirAll(linkedDIR, 0o755)
	os.Symlink(linkDir, filepath.Join(linkedDIR, "reports"))
	for _, tc := range []struct {
		name string
		dir  string
		cfg  LabServerConfig
		want string
	}{
		{"token and insecure", dir, LabServerConfig{TokenFile: good, InsecureReports: true}, "exclude each other"},
		{"token file inside DIR", dir, LabServerConfig{TokenFile: inside}, "inside"},
		{"missing token file", dir, LabServerConfig{TokenFile: filepath.Join(base, "nope")}, "openssl rand"},
		{"short token", dir, LabServerConfig{TokenFile: short}, "6 characters"},
		{"token with spaces", dir, LabServerConfig{TokenFile: spaces}, "position 11"},
		{"reports is a symlink", linkedDIR, LabServerConfig{}, "not a directory"},
	} {
		srv, err := NewLabServer(tc.dir, tc.cfg)
		if err == nil {
			srv.Close()
			t.Errorf("%s: NewLabServer succeeded, want an error naming %q", tc.name, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "0123456789") {
			t.Errorf("%s: error %q, want one naming %q and not showing the token", tc.name, err, tc.want)
		}
	}
}

func TestPlanReportToken(t *testing.T) {
	for _, tc := range []struct {
		report, want string
	}{
		{`url = "http://10.0.0.1/reports/"` + "\n" + `token = "` + testToken + `"`, ""},
		{`token = "` + testToken + `"`, "report.url is not"},
		{`url = "http://10.0.0.1/reports/"` + "\n" + `token = "short"`, "report.token"},
		{`url = "http://10.0.0.1/reports/"` + "\n" + `token = "0123456789abcdef 0123"`, "report.token"},
	} {
		plan := "[report]\n" + tc.report + "\n[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n"
		p, err := ParsePlan([]byte(plan))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("plan [report] %q: %v", tc.report, err)
		case tc.want == "" && p.SettingsFor(&p.Machines[0], "", Overrides{}).ReportToken != testToken:
			t.Errorf("plan [report] %q: settings carry no token", tc.report)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("plan [report] %q: error %v, want one naming %q", tc.report, err, tc.want)
		}
	}
}

// Rows are keyed by the validated identity and ordered by the server's
// clock: a forged future start hides nothing, machines of one universal
// plan entry keep a row each, and a late progress update does not
// replace a final report.
func TestReportRows(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	url := l.url + "/reports/"
	send := func(r *Report) {
		t.Helper()
		if err := PostReport(context.Background(), nil, url, testToken, r); err != nil {
			t.Fatalf("post %s %s: %v", r.Machine.Name, r.Status, err)
		}
	}
	row := func(name, mac string) *Report {
		t.Helper()
		for _, r := range l.srv.Reports.Reports() {
			if r.Machine.Name == name && len(r.Machine.MACs) > 0 && r.Machine.MACs[0] == mac {
				return r
			}
		}
		t.Fatalf("no row for %s %s", name, mac)
		return nil
	}
	now := time.Now()
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)

	// A report claiming to start in 2099, then the machine's real boot.
	send(testReport("pc1", "52:54:00:00:00:01", StatusFailed, future))
	send(testReport("pc1", "52:54:00:00:00:01", StatusRunning, now))
	if got := row("pc1", "52:54:00:00:00:01"); got.Status != StatusRunning || !got.Started.Equal(now) {
		t.Errorf("pc1 after a forged 2099 report and a real boot: status %s started %s, want running started %s", got.Status, got.Started, now)
	}
	if page := get(t, url); !strings.Contains(page, "machine clock: 2099") && strings.Contains(page, "2099") {
		t.Errorf("the page shows the forged time as the start:\n%s", page)
	}

	// Two machines of one universal entry ("lab"): a row each.
	send(testReport("lab", "52:54:00:00:00:0a", StatusSuccess, now))
	send(testReport("lab", "52:54:00:00:00:0b", StatusFailed, now))
	if a, b := row("lab", "52:54:00:00:00:0a"), row("lab", "52:54:00:00:00:0b"); a.Status != StatusSuccess || b.Status != StatusFailed {
		t.Errorf("lab machines: %s and %s, want success and failed", a.Status, b.Status)
	}

	// pc1 finishes; a progress update of the same boot arrives late.
	send(testReport("pc1", "52:54:00:00:00:01", StatusSuccess, now))
	late := testReport("pc1", "52:54:00:00:00:01", StatusRunning, now)
	if code, _ := post(t, url, "Bearer "+testToken, string(late.JSON())); code != http.StatusAccepted {
		t.Errorf("late progress update: %d, want 202", code)
	}
	if got := row("pc1", "52:54:00:00:00:01"); got.Status != StatusSuccess {
		t.Errorf("pc1 after a late progress update: %s, want success", got.Status)
	}
	if n := len(l.srv.Reports.Reports()); n != 3 {
		t.Errorf("%d rows, want 3 (pc1, two lab machines)", n)
	}
}

// 200 machines report; the page lists every one. A cap on tracked
// machines drops the one heard from least recently.
func TestReportServerManyMachines(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token", MaxMachines: 200})
	url := l.url + "/reports/"
	mac := func(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256) }
	now := time.Now()
	for i := range 201 {
		r := testReport(fmt.Sprintf("pc%d", i), mac(i), StatusRunning, now)
		r.Snapshot.DataBytes, r.BytesWritten = 100, int64(i%101)
		if err := PostReport(context.Background(), nil, url, testToken, r); err != nil {
			t.Fatalf("post pc%d: %v", i, err)
		}
	}
	code, page := getStatus(t, url)
	if code != http.StatusOK || !strings.HasSuffix(strings.TrimSpace(page), "</html>") {
		t.Fatalf("page: %d, complete %v", code, strings.HasSuffix(strings.TrimSpace(page), "</html>"))
	}
	for i := 1; i <= 200; i++ {
		if !strings.Contains(page, fmt.Sprintf("pc%d %s", i, mac(i))) {
			t.Errorf("page lacks pc%d", i)
		}
	}
	if strings.Contains(page, "pc0 "+mac(0)) || !strings.Contains(page, "1 machines were dropped") {
		t.Errorf("page: pc0 (heard from least recently) still shown or the drop not said")
	}
	if n := len(l.srv.Reports.Reports()); n != 200 {
		t.Errorf("%d rows, want 200", n)
	}
}

// Final reports are files; their count is bounded, and a full directory
// refuses the report (507) without changing the row.
func TestReportServerFileCap(t *testing.T) {
	dir, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewReportServer(dir, ReportServerConfig{Token: testToken, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := &http.Server{Handler: s}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"
	now := time.Now()
	for i, want := range []int{http.StatusCreated, http.StatusCreated, http.StatusInsufficientStorage} {
		r := testReport("pc1", "52:54:00:00:00:01", StatusSuccess, now.Add(time.Duration(i)*time.Hour))
		if code, answer := post(t, url, "Bearer "+testToken, string(r.JSON())); code != want {
			t.Errorf("final report %d: %d %q, want %d", i+1, code, answer, want)
		} else if code == http.StatusInsufficientStorage && !strings.Contains(answer, "move old reports") {
			t.Errorf("final report %d refused with %q; want the way out named", i+1, answer)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(dir.Name(), "*.json")); len(files) != 2 {
		t.Errorf("%d report files, want 2", len(files))
	}
	if got := s.Reports(); len(got) != 1 || !got[0].Started.Equal(now.Add(time.Hour)) {
		t.Errorf("row after a refused report: %+v; want the second report", got)
	}
	if page := get(t, url); !strings.Contains(page, "1 final reports were not stored") {
		t.Errorf("page does not say a report was not stored")
	}
}

// A POST whose body trickles in is cut by the server's read timeout (set
// short here); nothing is stored.
func TestSlowReportBody(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token", ReadTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", strings.TrimPrefix(l.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /reports/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"version\": 1,", testToken)
	// A hang guard, not a speed check: the server has far longer than
	// its timeout to give up on the body.
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Errorf("slow POST answered %s", resp.Status)
		}
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still holds a POST whose body stalled: %v", err)
	}
	if r := l.srv.Reports.Reports(); len(r) != 0 {
		t.Errorf("a stalled POST left %d reports", len(r))
	}
}

// File serving stays inside DIR and never serves keys or dotfiles.
func TestLabServerFiles(t *testing.T) {
	for _, list := range []bool{false, true} {
		l := startLab(t, LabServerConfig{List: list})
		for name, data := range map[string]string{
			".env":           "hidden",
			"pc1/.git/HEAD":  "hidden",
			"lab.key":        "rewind-ed25519-private AAAA\n",
			"pc1/LAB.KEY":    "rewind-ed25519-private AAAA\n",
			"signing":        "rewind-ed25519-private AAAA\n",
			"id_ed25519":     "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n",
			"lab.pub":        "rewind-ed25519-public BBBB\n",
			"tls/server.pem": "-----BEGIN CERTIFICATE-----\nCCCC\n",
			// Keys that do not start on the first byte: openssl pkcs12
			// output, a blank line first, a combined certificate and key
			// (haproxy), Rewind's key after white space (it still loads),
			// a PuTTY key.
			"tls/p12.pem":      "Bag Attributes\n    localKeyID: 01\nKey Attributes: <No Attributes>\n-----BEGIN PRIVATE KEY-----\nAAAA\n",
			"tls/blank.pem":    "\n-----BEGIN RSA PRIVATE KEY-----\nAAAA\n",
			"tls/combined.pem": "-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nAAAA\n",
			"signing2":         "\n  rewind-ed25519-private AAAA\n",
			"lab.ppk":          "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nAAAA\n",
		} {
			p := filepath.Join(l.dir, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for link, to := range map[string]string{
			"link":     filepath.Join(l.base, "out"),
			"pc1/evil": "../../out/secret",
			"inner":    "pc1/manifest.json",
		} {
			if err := os.Symlink(to, filepath.Join(l.dir, link)); err != nil {
				t.Fatal(err)
			}
		}
		if err := syscall.Mkfifo(filepath.Join(l.dir, "pipe"), 0o644); err != nil {
			t.Fatal(err)
		}
		dirCode := http.StatusForbidden
		if list {
			dirCode = http.StatusOK
		}
		for _, tc := range []struct {
			path string
			code int
			body string // in the answer; "" for any
		}{
			{"/pc1/manifest.json", http.StatusOK, `{"version": 2}`},
			{"/inner", http.StatusOK, `{"version": 2}`}, // a link inside DIR
			{"/lab.pub", http.StatusOK, "rewind-ed25519-public"},
			{"/tls/server.pem", http.StatusOK, "CERTIFICATE"},
			{"/link/secret", http.StatusNotFound, ""},
			{"/pc1/evil", http.StatusNotFound, ""},
			{"/.env", http.StatusNotFound, ""},
			{"/pc1/.git/HEAD", http.StatusNotFound, ""},
			{"/lab.key", http.StatusNotFound, ""},
			{"/pc1/LAB.KEY", http.StatusNotFound, ""},
			{"/signing", http.StatusNotFound, ""},
			{"/id_ed25519", http.StatusNotFound, ""},
			{"/%2e%2e/out/secret", http.StatusNotFound, ""},
			{"/tls/p12.pem", http.StatusNotFound, ""},
			{"/tls/blank.pem", http.StatusNotFound, ""},
			{"/tls/combined.pem", http.StatusNotFound, ""},
			{"/signing2", http.StatusNotFound, ""},
			{"/lab.ppk", http.StatusNotFound, ""},
			// A FIFO (or a device) is never opened for reading: opening a
			// FIFO blocks until someone writes to it, a thread per GET.
			{"/pipe", http.StatusNotFound, ""},
			{"/", dirCode, ""},
			{"/pc1/", dirCode, ""},
		} {
			code, body := getStatus(t, l.url+tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("list=%v GET %s: %d, want %d with %q", list, tc.path, code, tc.code, tc.body)
			}
			for _, secret := range []string{"the secret outside DIR", "hidden", "PRIVATE", "AAAA"} {
				if strings.Contains(body, secret) {
					t.Errorf("list=%v GET %s served %q", list, tc.path, secret)
				}
			}
		}
		if list {
			page := get(t, l.url+"/")
			for _, want := range []string{"pc1/", "lab.pub", "inner"} {
				if !strings.Contains(page, want) {
					t.Errorf("listing of / lacks %s:\n%s", want, page)
				}
			}
			for _, never := range []string{".env", "lab.key"} {
				if strings.Contains(page, never) {
					t.Errorf("listing of / shows %s:\n%s", never, page)
				}
			}
		}
	}
}

// Range requests work, and a file replaced on the server gets a new ETag,
// so If-Range answers the whole new file instead of a spliced range.
func TestLabServerRange(t *testing.T) {
	l := startLab(t, LabServerConfig{})
	seg := filepath.Join(l.dir, "pc1", "data.000")
	want, _ := os.ReadFile(seg)
	req, _ := http.NewRequest(http.MethodGet, l.url+"/pc1/data.000", nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusPartialContent || string(b) != string(want[100:200]) || tag == "" {
		t.Fatalf("range 100-199: %s, %d bytes, ETag %q; want 206 with bytes 100-199 and an ETag", resp.Status, len(b), tag)
	}
	os.Remove(seg)
	os.WriteFile(seg, []byte(strings.Repeat("new data ", 2000)), 0o644)
	req.Header.Set("If-Range", tag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == tag {
		t.Errorf("If-Range with the old ETag after replacing the file: %s, ETag %q; want 200 and a new ETag", resp.Status, resp.Header.Get("ETag"))
	}
}

// The rescue media's file name never takes an unknown status.
func TestReportFileName(t *testing.T) {
	r := testReport("pc1", "", "../../x", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if got, want := r.FileName(), "20260102T030405Z-pc1-unknown.json"; got != want {
		t.Errorf("FileName: got %q, want %q", got, want)
	}
}

// A restore in progress reaches the report server as a running report.
func TestProgressReachesReportServer(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	s := l.srv.Reports
	r := &Rescue{report: NewReport(time.Now()), settings: &Settings{ReportURL: l.url + "/reports/", ReportToken: testToken}}
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

// A large file downloads at any steady speed even when that takes longer
// than the write timeout (each MiB moves the deadline on); a client that
// stops reading is cut off. The timeout is set short here.
func TestLabServerWriteTimeout(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	f, err := os.Create(filepath.Join(dir, "big.img"))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.WriteAt([]byte("end"), size-3)
	f.Close()
	srv, err := NewLabServer(dir, LabServerConfig{WriteTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	closed := make(chan struct{}, 16)
	srv.HTTP.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String() + "/big.img"

	// Steady: 1 MiB every 100 ms, 64 MiB in all: twice the timeout, with a
	// wide margin per MiB for a loaded machine.
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	buf := make([]byte, 1<<20)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got += int64(n)
		if err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp.Body.Close()
	if got != size {
		t.Errorf("steady download of big.img: got %d bytes, want %d", got, size)
	}

	// Stalled: read 1 MiB, stop. The server closes the connection.
	for len(closed) > 0 {
		<-closed
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /big.img HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(2 * time.Minute): // a hang guard, not a speed check
		t.Fatal("the server still holds a connection whose client stopped reading")
	}
}

// The report saved on the rescue medium never follows a symbolic link
// planted there (an ext4 medium): last.json -> /dev/sda would write the
// JSON over the start of the disk just restored.
func TestSaveReportPlantedSymlink(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "rewind", "reports")
	os.MkdirAll(dir, 0o755)
	victim := filepath.Join(base, "restored-disk")
	if err := os.WriteFile(victim, []byte("boot sector"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := testReport("pc1", "52:54:00:00:00:01", StatusSuccess, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	// /dev/null's numbers: a write through it is lost, and was reported saved.
	null := func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))) }
	for _, tc := range []struct {
		what  string
		plant func(p string) error
	}{
		{"a link to the restored disk", func(p string) error { return os.Symlink(victim, p) }},
		{"a FIFO", func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"a device node", null},
	} {
		for _, name := range []string{"last.json", r.FileName()} {
			os.Remove(filepath.Join(dir, "last.json"))
			os.Remove(filepath.Join(dir, r.FileName()))
			if err := tc.plant(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := SaveReport(r, dir); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(time.Minute): // only turns a hang into a failure
				t.Fatalf("%s %s: SaveReport still waiting after a minute", name, tc.what)
			}
			if b, _ := os.ReadFile(victim); string(b) != "boot sector" {
				t.Fatalf("%s %s: SaveReport wrote through it (now %.40q)", name, tc.what, b)
			}
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s %s: SaveReport returned %v, want an error naming it", name, tc.what, err)
			}
		}
	}
	os.Remove(filepath.Join(dir, "last.json"))
	os.Remove(filepath.Join(dir, r.FileName()))
	if _, err := SaveReport(r, dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "last.json")); err != nil || !bytes.Equal(b, r.JSON()) {
		t.Errorf("last.json: got %d bytes, %v; want the report", len(b), err)
	}
}

// A password in a URL of the plan (http://user:password@host/...) never
// reaches the report: it is shown on the lab's public reports page, kept
// in DIR/reports and on the medium.
func TestReportRedactsURLPasswords(t *testing.T) {
	r := testReport("pc1", "52:54:00:00:00:01", StatusFailed, time.Now())
	r.Plan.Source = "https://lab:s3cret-plan@10.0.0.1/plan.toml"
	r.Snapshot.Location = "http://lab:s3cret-snap@10.0.0.1/pc1"
	r.Error = `GET manifest.json from http://lab:s3cret-err@10.0.0.1/pc1: 503`
	r.InstallFiles = []InstallOutcome{{Source: "https://u:s3cret-inst@10.0.0.1/x", Dest: "part:1:/x", Result: InstallFailed}}
	out := string(r.JSON())
	if strings.Contains(out, "s3cret") {
		t.Errorf("report JSON holds a URL's password:\n%s", out)
	}
	for _, want := range []string{"http://lab:xxxxx@10.0.0.1/pc1", "https://lab:xxxxx@10.0.0.1/plan.toml"} {
		if !strings.Contains(out, want) {
			t.Errorf("report JSON lacks %s:\n%s", want, out)
		}
	}
}

// A snapshot segment (LZ4 frames) whose first bytes hold the text of a
// captured PEM key, stored as LZ4 literals, is still served: the private
// key check must not make a restore fail with a missing segment.
func TestLabServerServesSegmentsWithKeyText(t *testing.T) {
	l := startLab(t, LabServerConfig{})
	seg := "\x04\x22\x4d\x18\x64\x40\xa7" + "\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n" + strings.Repeat("z", 1000)
	if err := os.WriteFile(filepath.Join(l.dir, "pc1", "data.001"), []byte(seg), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := getStatus(t, l.url+"/pc1/data.001"); code != http.StatusOK || body != seg {
		t.Errorf("GET /pc1/data.001 (an LZ4 segment): %d with %d bytes, want 200 with the %d bytes", code, len(body), len(seg))
	}
}
