package snapshot

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// A latest link is redirected only when it names a generation
// (2006-01-02T15:04:05Z, what the upload receiver makes). A link to itself
// answered a redirect to the same URL, forever; a link to another name was
// redirected as if it were a generation. Both are now served as plain
// paths (os.Root follows the link inside the directory, or fails: 404).
// The rest held: an encoded name, a Range request followed through the
// redirect.
func TestBreakLatestRedirect(t *testing.T) {
	dir := t.TempDir()
	pc1 := filepath.Join(dir, "pc1")
	generation(t, pc1, "2026-11-23T10:00:00Z", 1)
	pointLatest(t, pc1, "2026-11-23T10:00:00Z")
	generation(t, filepath.Join(dir, "plain"), "snap", 2)
	for name, target := range map[string]string{"loop/latest": "latest", "plain/latest": "snap"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	srv := serveRoot(t, dir)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, rng string
		follow    bool
		code      int
		location  string
		length    int64
	}{
		{path: "/loop/latest/manifest.json", code: http.StatusNotFound},
		{path: "/plain/latest/manifest.json", code: http.StatusOK, length: -1},
		{path: "/pc1/lat%65st/manifest.json", code: http.StatusFound, location: "/pc1/2026-11-23T10:00:00Z/manifest.json"},
		{path: "/pc1/latest/data.000", rng: "bytes=4-13", follow: true, code: http.StatusPartialContent, length: 10},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
		if tc.rng != "" {
			req.Header.Set("Range", tc.rng)
		}
		c := noFollow
		if tc.follow {
			c = http.DefaultClient
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("GET %s: %v", tc.path, err)
			continue
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location || tc.length > 0 && n != tc.length {
			t.Errorf("GET %s (Range %q): %s, Location %q, %d bytes; want %d, Location %q, %d bytes", tc.path, tc.rng, resp.Status, resp.Header.Get("Location"), n, tc.code, tc.location, tc.length)
		}
	}
}
