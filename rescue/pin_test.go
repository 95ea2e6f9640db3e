package rescue

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// captureFor captures a 2 MiB disk of random bytes into dir/name as if on
// host, signed with key when it is set.
func captureFor(t *testing.T, dir, name, host string, seed uint64, key ed25519.PrivateKey) string {
	t.Helper()
	data := testdisk.RandomBytes(seed, 2<<20)
	out := filepath.Join(dir, name)
	_, err := snapshot.Capture(context.Background(), bytes.NewReader(data), out, snapshot.CaptureOptions{
		DiskSize: int64(len(data)), Extents: []snapshot.Extent{{Kind: "disk", Offset: 0, Length: int64(len(data))}},
		ChunkSize: 1 << 20, Origin: snapshot.Origin{Path: "/dev/sda", Hostname: host}, SignKey: key,
	})
	if err != nil {
		t.Fatalf("capturing %s: %v", name, err)
	}
	return out
}

// newKey makes a key pair, puts the public key into dir and returns the
// private key and the public key's path.
func newKey(t *testing.T, dir, name string) (ed25519.PrivateKey, string) {
	t.Helper()
	priv, pub, err := snapshot.GenerateKey(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	pub = filepath.Join(dir, name+".pub")
	if err := os.WriteFile(pub, b, 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := snapshot.LoadPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

// testRescue is a rescue flow with image keys from trustDir and a log
// kept in memory (no consoles, no /dev/kmsg).
func testRescue(trustDir string) (*Rescue, *bytes.Buffer) {
	var log bytes.Buffer
	return &Rescue{log: &Logger{consoles: []io.Writer{&log}}, trustDir: trustDir}, &log
}

// A signed snapshot of another machine, or an older one of the same,
// served at pc1's URL on a real HTTP server, is refused by the entry's
// [machine.expect] before the flow goes on to the target, naming what
// differed; the right one is accepted.
func TestExpectRefusesOtherSnapshots(t *testing.T) {
	dir := t.TempDir()
	trust := filepath.Join(dir, "trust")
	os.Mkdir(trust, 0o755)
	key, _ := newKey(t, trust, "lab")
	old := captureFor(t, dir, "pc1-old", "pc1", 1, key)
	pc1 := captureFor(t, dir, "pc1", "pc1", 2, key)
	pc2 := captureFor(t, dir, "pc2", "pc2", 3, key)

	served := map[string]string{} // URL path prefix -> snapshot directory
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		for prefix, d := range served {
			if rest, ok := strings.CutPrefix(req.URL.Path, prefix); ok {
				http.ServeFile(w, req, filepath.Join(d, rest))
				return
			}
		}
		http.NotFound(w, req)
	}))
	defer srv.Close()

	open := func(dir string) *snapshot.Snapshot {
		s, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s
	}
	good, older := open(pc1), open(old)
	created := good.Manifest.Created
	for _, tc := range []struct {
		name   string
		serve  string // snapshot directory served at /snapshots/pc1/
		expect Expect
		want   string // "" = accepted
	}{
		{"id, right snapshot", pc1, Expect{ID: good.ID}, ""},
		{"id prefix, right snapshot", pc1, Expect{ID: strings.ToUpper(good.ID[:16])}, ""},
		{"id, another machine's snapshot", pc2, Expect{ID: good.ID[:16]}, "id is "},
		{"id, older snapshot", old, Expect{ID: good.ID}, "want " + good.ID},
		{"hostname, right machine", pc1, Expect{Hostname: "pc1"}, ""},
		{"hostname, another machine's snapshot", pc2, Expect{Hostname: "pc1"}, `hostname is "pc2", want "pc1"`},
		{"min_created, older snapshot", old, Expect{Hostname: "pc1", MinCreated: older.Manifest.Created.Add(time.Second)}, "before min_created"},
		{"min_created, right snapshot", pc1, Expect{Hostname: "pc1", MinCreated: created.Add(-time.Hour)}, ""},
		{"max_age, fresh", pc1, Expect{MaxAge: "30d"}, ""},
		{"max_age, too old", pc1, Expect{MaxAge: "1h"}, "older than max_age 1h"},
	} {
		served = map[string]string{"/snapshots/pc1/": tc.serve}
		m := &Machine{Name: "pc1", Snapshot: srv.URL + "/snapshots/pc1", Expect: tc.expect}
		r, _ := testRescue(trust)
		// Check's clock: "too old" runs two hours after the capture.
		now := created.Add(time.Minute)
		if tc.name == "max_age, too old" {
			now = created.Add(2 * time.Hour)
		}
		snap, err := r.openSnapshot(context.Background(), &Plan{}, m.Snapshot)
		if err != nil {
			t.Fatalf("%s: opening %s: %v", tc.name, m.Snapshot, err)
		}
		err = m.Expect.Check(snap, now)
		snap.Close()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the snapshot accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was written")):
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}

	// Through snapshotFor, as the flow calls it: refused, naming the machine.
	served = map[string]string{"/snapshots/pc1/": pc2}
	r, _ := testRescue(trust)
	_, err := r.snapshotFor(context.Background(), &Plan{}, "pc1", DiskEntry{Snapshot: srv.URL + "/snapshots/pc1", Expect: Expect{Hostname: "pc1"}})
	if err == nil || !strings.Contains(err.Error(), "machine pc1: snapshot") || !strings.Contains(err.Error(), `hostname is "pc2"`) {
		t.Errorf("pc2's snapshot at pc1's URL: got %v, want a refusal naming machine pc1 and the hostname", err)
	}
}

// A clock that was never set cannot check max_age: refused, not passed.
func TestExpectMaxAgeUnsetClock(t *testing.T) {
	dir := t.TempDir()
	snap, err := snapshot.Open(context.Background(), captureFor(t, dir, "pc1", "pc1", 1, nil), snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	err = Expect{MaxAge: "30d"}.Check(snap, time.Date(1970, 1, 1, 0, 0, 5, 0, time.UTC))
	if err == nil || !strings.Contains(err.Error(), "clock says 1970-01-01") {
		t.Errorf("max_age with the clock at 1970: got %v, want a refusal naming the clock", err)
	}
}

// The keys built into the rescue image are always required: a plan loaded
// later (rewind.plan=, the medium) can neither drop them nor add the key
// its own snapshot is signed with; with no image keys, its keys make
// signing required.
func TestTrustImageKeysAlwaysRequired(t *testing.T) {
	dir := t.TempDir()
	imageDir := filepath.Join(dir, "image-trust")
	os.Mkdir(imageDir, 0o755)
	labKey, _ := newKey(t, imageDir, "lab")
	evilKey, evilPub := newKey(t, dir, "evil")
	labSigned := captureFor(t, dir, "lab-signed", "pc1", 1, labKey)
	evilSigned := captureFor(t, dir, "evil-signed", "pc1", 2, evilKey)
	unsigned := captureFor(t, dir, "unsigned", "pc1", 3, nil)
	noKeys := filepath.Join(dir, "no-keys")
	os.Mkdir(noKeys, 0o755)

	later := &Plan{Trust: []string{evilPub}} // a plan from rewind.plan=URL
	for _, tc := range []struct {
		name     string
		trustDir string
		builtin  *Plan
		plan     *Plan
		snap     string
		want     string // "" = accepted
	}{
		{"image key, lab-signed", imageDir, nil, &Plan{}, labSigned, ""},
		{"image key, unsigned, later plan without trust", imageDir, nil, &Plan{}, unsigned, "is not signed"},
		{"image key, later plan adds the attacker's key", imageDir, nil, later, evilSigned, "does not match manifest.json under any trusted key"},
		{"built-in plan's key stays when rewind.plan= replaces the plan", noKeys, &Plan{Trust: []string{filepath.Join(imageDir, "lab.pub")}}, &Plan{}, unsigned, "is not signed"},
		{"no image keys, later plan's key required", noKeys, nil, later, unsigned, "is not signed"},
		{"no image keys, later plan's key accepted", noKeys, nil, later, evilSigned, ""},
		{"no keys anywhere, unsigned", noKeys, nil, &Plan{}, unsigned, ""},
	} {
		r, log := testRescue(tc.trustDir)
		r.builtin = tc.builtin
		snap, err := r.openSnapshot(context.Background(), tc.plan, tc.snap)
		if err == nil {
			snap.Close()
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the snapshot accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
		if tc.plan == later && tc.trustDir == imageDir && !strings.Contains(log.String(), "are not added") {
			t.Errorf("%s: the log does not say the plan's keys were set aside:\n%s", tc.name, log.String())
		}
	}
}

// With trusted keys in the rescue image, a plan from outside it (here
// rewind.plan=URL on a server an attacker controls) cannot install files
// fetched over the network: their sha256 comes from the same unverified
// plan, so it would let that server put any file, say an SSH key, into
// the signed system it restores. The plan is refused before anything is
// written; media: sources and plans without image keys are unaffected.
func TestOutsidePlanCannotInstallFromNetwork(t *testing.T) {
	dir := t.TempDir()
	imageDir := filepath.Join(dir, "image-trust")
	os.Mkdir(imageDir, 0o755)
	newKey(t, imageDir, "lab")
	noKeys := filepath.Join(dir, "no-keys")
	os.Mkdir(noKeys, 0o755)
	idFile := filepath.Join(dir, "media-id")
	os.WriteFile(idFile, []byte("none\n"), 0o644) // a PXE image: no medium to look for

	const pc1 = "[[machine]]\nname = \"pc1\"\nsnapshot = \"http://10.0.0.1/snapshots/pc1\"\n"
	sum := strings.Repeat("ab", 32)
	plans := map[string]string{
		"/web.toml":   pc1 + "[[machine.install_file]]\nsource = \"http://10.0.0.66/authorized_keys\"\ndest = \"part:1:/root/.ssh/authorized_keys\"\nsha256 = \"" + sum + "\"\n",
		"/media.toml": pc1 + "[[machine.install_file]]\nsource = \"media:/drivers/x.conf\"\ndest = \"part:1:/etc/x.conf\"\n",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, plans[req.URL.Path])
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, trustDir, plan, want string // want "" = loaded
	}{
		{"image keys, network install file", imageDir, "/web.toml", "install_file http://10.0.0.66/authorized_keys comes from a plan outside the rescue image"},
		{"image keys, media install file", imageDir, "/media.toml", ""},
		{"no image keys, network install file", noKeys, "/web.toml", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := testRescue(tc.trustDir)
			r.mediaIDFile = idFile
			r.netUp = true
			r.client = httpClient(nil)
			r.over.Plan = srv.URL + tc.plan
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _, err := r.loadPlan(ctx)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("plan %s: got %v, want it loaded", tc.plan, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("plan %s: got error %v, want one containing %q", tc.plan, err, tc.want)
			}
		})
	}
}
