package upload

import (
	"bytes"
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

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// hookSink runs a function before the commit is sent.
type hookSink struct {
	*Client
	beforeCommit func()
}

func (h *hookSink) Commit(ctx context.Context, m *snapshot.Manifest, data, sig []byte) error {
	h.beforeCommit()
	return h.Client.Commit(ctx, m, data, sig)
}

// The idle reaper picks a session, then a commit of that session arrives
// and publishes it before the reaper takes the session's lock. The reaper
// used to end the published session anyway, replacing its record with
// "expired, nothing was published": a client whose commit answer was lost
// then asked again and was told its published snapshot failed.
func TestBreakReaperAfterCommit(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{now: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	r, url := serve(t, dir, ReceiverConfig{IdleTimeout: time.Hour, Now: clk.Now})
	c, err := NewClient(url+"/pc1", ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := c.session
	var picked []*session
	sink := &hookSink{Client: c, beforeCommit: func() {
		clk.advance(2 * time.Hour)
		picked = r.idleSessions() // the reaper's first step
	}}
	data := testdisk.RandomBytes(5, 256<<10)
	if _, err := snapshot.CaptureTo(context.Background(), bytes.NewReader(data), sink, snapshot.CaptureOptions{DiskSize: int64(len(data)), ChunkSize: 64 << 10}); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if len(picked) != 1 {
		t.Fatalf("the reaper picked %d sessions, want the idle one", len(picked))
	}
	for _, s := range picked {
		r.expireSession(s) // the reaper's second step, after the commit
	}
	// The client asks again, as after a lost commit answer.
	req, _ := http.NewRequest(http.MethodGet, url+Prefix+"/pc1?session="+id, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st statusResponse
	json.Unmarshal(body, &st)
	if resp.StatusCode != http.StatusOK || st.Published != "pc1/"+c.gen {
		t.Errorf("status of the published session after the reaper ran: %d %s, want 200 naming pc1/%s", resp.StatusCode, body, c.gen)
	}
	if _, err := os.Stat(filepath.Join(dir, "pc1", c.gen, snapshot.ManifestName)); err != nil {
		t.Errorf("the published generation: %v", err)
	}
}

// A server that acknowledges every frame and the commit but does not
// serve what it acknowledged: the client used to report the upload
// published. It now reads the published manifest back (without the
// token) and checks every segment's size there, as a restore would find
// them.
func TestBreakLyingServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request, manifest []byte)
		want  string
	}{
		{"nothing published", func(w http.ResponseWriter, r *http.Request, _ []byte) { http.NotFound(w, r) }, "404"},
		{"another manifest", func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Write([]byte(`{"format":"rewind-snapshot"}`))
		}, "differs"},
		{"the manifest, segments short", func(w http.ResponseWriter, r *http.Request, m []byte) {
			if filepath.Base(r.URL.Path) == snapshot.ManifestName {
				w.Write(m)
				return
			}
			w.Write([]byte("short"))
		}, "data.000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var manifest []byte
			var tokenLeaked bool
			srv := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, Prefix+"/") {
					tokenLeaked = tokenLeaked || r.Header.Get("Authorization") != ""
					tc.serve(w, r, manifest)
					return
				}
				q := r.URL.Query()
				switch {
				case r.Method == http.MethodPost:
					w.WriteHeader(http.StatusCreated)
					w.Write([]byte(`{"session":"s1","generation":"2026-11-23T10:00:00Z"}`))
				case q.Has("commit"):
					manifest, _ = io.ReadAll(r.Body)
					w.Write([]byte(`{"published":"pc1/2026-11-23T10:00:00Z","signed":false}`))
				default: // a frame: "stored"
					io.Copy(io.Discard, r.Body)
				}
			}))
			c, err := NewClient(srv+"/pc1", ClientOptions{Token: testToken, RetryFor: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Open(context.Background()); err != nil {
				t.Fatal(err)
			}
			data := testdisk.RandomBytes(6, 256<<10)
			_, err = snapshot.CaptureTo(context.Background(), bytes.NewReader(data), c, snapshot.CaptureOptions{DiskSize: int64(len(data)), ChunkSize: 64 << 10})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("upload to a server that %s: %v, want an error naming %q", tc.name, err, tc.want)
			}
			if c.Published() != "" {
				t.Errorf("Published() = %s after the server did not serve it", c.Published())
			}
			if tokenLeaked {
				t.Errorf("the upload token was sent with a read of the published snapshot")
			}
		})
	}
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// A server that redirects uploads (to another host, or with 307 that
// would resend the body) never gets the token to the place it points at,
// and a commit answer naming a publication on another host is refused
// (this held).
func TestBreakRedirectAndForeignPublication(t *testing.T) {
	var seen []string // Authorization headers the other host got
	other := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"session":"s1","generation":"2026-11-23T10:00:00Z"}`))
	}))
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		front := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other+r.URL.Path, code)
		}))
		c, err := NewClient(front+"/pc1", ClientOptions{Token: testToken, RetryFor: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "redirects") {
			t.Errorf("Open through a %d redirect: %v, want an error saying the server redirects", code, err)
		}
	}
	if len(seen) != 0 {
		t.Errorf("the host redirected to got %d requests (Authorization %q): the token left", len(seen), seen)
	}
	foreign := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"session":"s1","generation":"2026-11-23T10:00:00Z"}`))
		case r.URL.Query().Has("commit"):
			w.Write([]byte(`{"published":"http://evil.example/pc1/2026-11-23T10:00:00Z"}`))
		default:
			io.Copy(io.Discard, r.Body)
		}
	}))
	c, err := NewClient(foreign+"/pc1", ClientOptions{Token: testToken, RetryFor: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	data := testdisk.RandomBytes(7, 128<<10)
	_, err = snapshot.CaptureTo(context.Background(), bytes.NewReader(data), c, snapshot.CaptureOptions{DiskSize: int64(len(data)), ChunkSize: 64 << 10})
	if err == nil || c.Published() != "" {
		t.Errorf("a commit answer naming another host: %v, Published() %q; want an error and nothing published", err, c.Published())
	}
}
