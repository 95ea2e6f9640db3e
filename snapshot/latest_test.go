package snapshot

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"testing"
)

// generation captures 1 MiB of random data (seed) into dir/name.
func generation(t *testing.T, dir, name string, seed uint64) []byte {
	t.Helper()
	data := make([]byte, 1<<20)
	rng := mrand.New(mrand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := Capture(context.Background(), bytes.NewReader(data), filepath.Join(dir, name), CaptureOptions{DiskSize: int64(len(data)), ChunkSize: MinChunkSize, SegmentSize: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	return data
}

// pointLatest makes dir/latest name gen, replacing it atomically as the
// upload receiver does.
func pointLatest(t *testing.T, dir, gen string) {
	t.Helper()
	tmp := filepath.Join(dir, ".latest-tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, LatestName)); err != nil {
		t.Fatal(err)
	}
}

func serveRoot(t *testing.T, dir string) *httptest.Server {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewRootHandler(root, HandlerOptions{}))
	t.Cleanup(func() { srv.Close(); root.Close() })
	return srv
}

// A restore from NAME/latest reads manifest and segments of one
// generation even when latest moves on to another during the restore.
func TestLatestMovesDuringRestore(t *testing.T) {
	dir := t.TempDir()
	pc1 := filepath.Join(dir, "pc1")
	// Same size, same chunking, random data: the generations' segments
	// have the same names and sizes, only their bytes differ.
	first := generation(t, pc1, "2026-11-23T10:00:00Z", 1)
	generation(t, pc1, "2026-11-23T11:00:00Z", 2)
	pointLatest(t, pc1, "2026-11-23T10:00:00Z")
	srv := serveRoot(t, dir)

	snap, err := Open(guard(t), srv.URL+"/pc1/latest", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	pointLatest(t, pc1, "2026-11-23T11:00:00Z") // a new upload is published
	got := make([]byte, snap.Manifest.DiskSize)
	for i, c := range snap.Manifest.Chunks {
		frame, err := snap.ReadFrame(guard(t), i, nil)
		if err == nil {
			err = snap.CheckFrame(i, frame)
		}
		if err == nil {
			err = DecodeFrame(got[c.Offset:c.Offset+c.Length], frame)
		}
		if err != nil {
			t.Fatalf("chunk %d after latest moved: %v", i, err)
		}
	}
	if !bytes.Equal(got, first) {
		t.Errorf("the restore from pc1/latest did not read the generation latest named when it opened it")
	}
}

func TestLatestRedirect(t *testing.T) {
	dir := t.TempDir()
	pc1 := filepath.Join(dir, "pc1")
	generation(t, pc1, "2026-11-23T10:00:00Z", 1)
	pointLatest(t, pc1, "2026-11-23T10:00:00Z")
	for name, target := range map[string]string{"abs/latest": "/etc", "dot/latest": "..", "hidden/latest": ".x"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	srv := serveRoot(t, dir)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		method, path string
		code         int
		location     string
	}{
		{http.MethodGet, "/pc1/latest/manifest.json", http.StatusFound, "/pc1/2026-11-23T10:00:00Z/manifest.json"},
		{http.MethodHead, "/pc1/latest/data.000", http.StatusFound, "/pc1/2026-11-23T10:00:00Z/data.000"},
		{http.MethodGet, "/pc1/2026-11-23T10:00:00Z/manifest.json", http.StatusOK, ""},
		// Links that lead elsewhere than a sibling are not redirected
		// (and not followed out of the served directory).
		{http.MethodGet, "/abs/latest/passwd", http.StatusNotFound, ""},
		{http.MethodGet, "/dot/latest/pc1/2026-11-23T10:00:00Z/manifest.json", http.StatusOK, ""},
		{http.MethodGet, "/hidden/latest/x", http.StatusNotFound, ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location {
			t.Errorf("%s %s: %s, Location %q; want %d, Location %q", tc.method, tc.path, resp.Status, resp.Header.Get("Location"), tc.code, tc.location)
		}
		if tc.location != "" && resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s %s: the redirect may be cached (Cache-Control %q): latest moves", tc.method, tc.path, resp.Header.Get("Cache-Control"))
		}
	}
}

// A redirect of the manifest to another host is followed, but the source
// keeps its own base: only a server's own redirect (same scheme and host)
// moves where every other file is read.
func TestRebaseOnlyOnTheSameHost(t *testing.T) {
	dir := t.TempDir()
	pc1 := filepath.Join(dir, "pc1")
	generation(t, pc1, "2026-11-23T10:00:00Z", 1)
	pointLatest(t, pc1, "2026-11-23T10:00:00Z")
	other := serveRoot(t, dir)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/pc1/2026-11-23T10:00:00Z/"+path.Base(r.URL.Path), http.StatusFound)
	}))
	t.Cleanup(front.Close)
	for _, tc := range []struct{ url, base string }{
		{front.URL + "/pc1/latest", front.URL + "/pc1/latest/"},
		{other.URL + "/pc1/latest", other.URL + "/pc1/2026-11-23T10:00:00Z/"},
	} {
		snap, err := Open(guard(t), tc.url, OpenOptions{})
		if err != nil {
			t.Fatalf("open %s: %v", tc.url, err)
		}
		if got := snap.src.(*HTTPSource).url("data.000"); got != tc.base+"data.000" {
			t.Errorf("open %s: files are read from %s, want %s", tc.url, got, tc.base)
		}
		snap.Close()
	}
}
