package upload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

const testToken = "0123456789abcdef0123456789abcdef"

// clock is a settable server clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// serve runs a Receiver over dir, and the file handler, on a real HTTP
// server on 127.0.0.1 and returns it and the server's URL.
func serve(t *testing.T, dir string, cfg ReceiverConfig) (*Receiver, string) {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	r, err := NewReceiver(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix+"/", http.StripPrefix(Prefix, r))
	mux.Handle("/", snapshot.NewRootHandler(root, snapshot.HandlerOptions{})) // as the lab server: clients read back what they published
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); r.Close(); root.Close() })
	return r, srv.URL
}

func frameOf(t *testing.T, i, seg int, name string, off int64, raw []byte) snapshot.Frame {
	t.Helper()
	var enc snapshot.Encoder
	data, err := enc.EncodeFrame(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.Frame{Index: i, Segment: seg, Name: name, Offset: off, Data: data, SHA256: sha256.Sum256(data)}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// A session that hears nothing for IdleTimeout ends: its staging is
// removed and the client's next request is told why.
func TestIdleSessionExpires(t *testing.T) {
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
	f := frameOf(t, 0, 0, "data.000", 0, testdisk.RandomBytes(1, 4096))
	if err := c.Put(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	clk.advance(59 * time.Minute)
	r.expire()
	if got := entries(t, filepath.Join(dir, staging)); len(got) != 1 {
		t.Fatalf("after 59 minutes idle (timeout 1h): staging holds %v, want the session", got)
	}
	clk.advance(2 * time.Minute)
	r.expire()
	if got := entries(t, filepath.Join(dir, staging)); len(got) != 0 {
		t.Errorf("after 61 minutes idle (timeout 1h): staging holds %v, want nothing", got)
	}
	f2 := frameOf(t, 1, 0, "data.000", int64(len(f.Data)), testdisk.RandomBytes(2, 4096))
	err = c.Put(context.Background(), f2)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Put after the session expired: %v, want ErrRefused saying it expired", err)
	}
}

// What an earlier run left in .upload/ is removed at start.
func TestStaleStagingRemoved(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, staging, "0123", "data.000")
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("half a frame"), 0o644); err != nil {
		t.Fatal(err)
	}
	serve(t, dir, ReceiverConfig{})
	if _, err := os.Lstat(filepath.Join(dir, staging)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the staging of an earlier run is still there: %v", err)
	}
}

// A full disk on the server answers 507 and the client says so: at Open
// when less than MinFree is free, during the upload when a write fails;
// the failed session's staging is removed.
func TestUploadDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })

	_, url := serve(t, dir, ReceiverConfig{MinFree: 64 << 20})
	c, err := NewClient(url+"/pc1", ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "MiB free") {
		t.Errorf("Open on a 3 MiB disk with MinFree 64 MiB: %v, want ErrNoSpace naming the free space", err)
	}

	_, url = serve(t, dir, ReceiverConfig{MinFree: 1 << 20})
	data := testdisk.RandomBytes(3, 6<<20) // does not compress: more than the disk holds
	c, err = NewClient(url+"/pc1", ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = snapshot.CaptureTo(context.Background(), bytes.NewReader(data), c, snapshot.CaptureOptions{DiskSize: int64(len(data)), ChunkSize: 64 << 10})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "disk is full") {
		t.Errorf("upload of 6 MiB onto a 3 MiB disk: %v, want ErrNoSpace saying the disk is full", err)
	}
	if got := entries(t, filepath.Join(dir, staging)); len(got) != 0 {
		t.Errorf("staging holds %v after the failed upload, want nothing", got)
	}
	if got := entries(t, filepath.Join(dir, "pc1")); len(got) != 0 {
		t.Errorf("pc1 holds %v after the failed upload, want nothing", got)
	}
}

// A frame sent again after its answer was lost is acknowledged and
// stored once; the same chunk with other bytes fails the session.
func TestFrameSentTwice(t *testing.T) {
	dir := t.TempDir()
	_, url := serve(t, dir, ReceiverConfig{})
	c, err := NewClient(url+"/pc1", ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := frameOf(t, 0, 0, "data.000", 0, testdisk.RandomBytes(1, 4096))
	for i := range 2 {
		if err := c.Put(context.Background(), f); err != nil {
			t.Fatalf("Put of chunk 0, time %d: %v", i+1, err)
		}
	}
	seg := filepath.Join(dir, staging, c.session, "data.000")
	if fi, err := os.Stat(seg); err != nil || fi.Size() != int64(len(f.Data)) {
		t.Fatalf("%s after the same frame twice: %v, want %d bytes", seg, err, len(f.Data))
	}
	other := frameOf(t, 0, 0, "data.000", 0, testdisk.RandomBytes(2, 4096))
	err = c.Put(context.Background(), other)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "chunk 0") {
		t.Errorf("Put of chunk 0 with other bytes: %v, want ErrRefused naming chunk 0", err)
	}
	if got := entries(t, filepath.Join(dir, staging)); len(got) != 0 {
		t.Errorf("staging holds %v after the session failed, want nothing", got)
	}
}

// Beyond MaxSessions a new session is told to retry later (503), and the
// client retries it; once a session ends, the next one opens.
func TestMaxSessions(t *testing.T) {
	dir := t.TempDir()
	_, url := serve(t, dir, ReceiverConfig{MaxSessions: 1})
	first, err := NewClient(url+"/pc1", ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	// RetryFor of 1ns: the first refusal is the last attempt.
	second, err := NewClient(url+"/pc2", ClientOptions{Token: testToken, RetryFor: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Open(context.Background())
	if err == nil || !strings.Contains(err.Error(), "1 uploads are in progress") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Open beyond MaxSessions 1: %v, want a 503 naming the limit", err)
	}
	first.Abort()
	if err := second.Open(context.Background()); err != nil {
		t.Errorf("Open after the other session ended: %v", err)
	}
}
