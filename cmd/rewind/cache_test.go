package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// nginxCache is a caching nginx reverse proxy in front of backend, as
// docs/scale.md lays out for a room of machines: segments cached in
// slices (Range requests go to the server as slice ranges), every
// response marked X-Cache-Status, and an access log of what the cache did.
type nginxCache struct {
	addr, log string
}

func startNginxCache(t *testing.T, backend string) *nginxCache {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatalf("nginx is not installed (scripts/setup.sh installs it): %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"cache", "logs", "tmp"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	n := &nginxCache{addr: "127.0.0.1:" + freePort(t), log: filepath.Join(dir, "logs", "access.log")}
	conf := fmt.Sprintf(`user root;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 256; }
http {
	log_format cache '$upstream_cache_status $status $request_uri $http_range';
	access_log %[1]s/logs/access.log cache;
	client_body_temp_path %[1]s/tmp/body;
	proxy_temp_path %[1]s/tmp/proxy;
	fastcgi_temp_path %[1]s/tmp/fastcgi;
	uwsgi_temp_path %[1]s/tmp/uwsgi;
	scgi_temp_path %[1]s/tmp/scgi;
	proxy_cache_path %[1]s/cache levels=1:2 keys_zone=rewind:10m max_size=1g inactive=1h use_temp_path=off;
	server {
		listen %[2]s;
		location / {
			proxy_pass http://%[3]s;
			proxy_http_version 1.1;
			proxy_cache rewind;
			slice 1m;
			proxy_cache_key $uri$is_args$args$slice_range;
			proxy_set_header Range $slice_range;
			proxy_cache_valid 200 206 1h;
			proxy_cache_revalidate on;
			proxy_cache_lock on;
			add_header X-Cache-Status $upstream_cache_status always;
		}
	}
}
`, dir, n.addr, backend)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-g", "daemon off;")
	var errs strings.Builder
	cmd.Stderr = &errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM makes the master stop its workers too (a SIGKILL would
	// leave them running).
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for range 100 {
		if resp, err := http.Get("http://" + n.addr + "/"); err == nil {
			resp.Body.Close()
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nginx did not start on %s: %s", n.addr, errs.String())
	return nil
}

// requests reads the access log from line from on: cache status and URI
// of each request.
func (n *nginxCache) requests(t *testing.T, from int) (lines [][2]string, total int) {
	t.Helper()
	f, err := os.Open(n.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		total++
		if total <= from {
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 {
			lines = append(lines, [2]string{fields[0], fields[2]})
		}
	}
	return lines, total
}

// Two restores through a caching proxy: the second is served from the
// cache (its segments HIT), both are identical to the source, and no
// manifest outside a generation is ever answered from the cache.
func TestHTTPCacheInFront(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Fatalf("%s not installed (scripts/setup.sh installs it)", tool)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if _, err := (testdisk.Sample{Size: 64 << 20, ESPSize: 33 << 20, ExtSize: 16 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 6 << 20, Seed: 21}).Build(src); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "srv")
	const gen = "2026-12-07T10:00:00Z"
	for _, snap := range []string{filepath.Join(root, "pc1", gen), filepath.Join(root, "plain")} {
		if code, out := rewind(t, "capture", src, "-o", snap, "--segment-size", "8MiB", "--progress", "none"); code != 0 {
			t.Fatalf("capture: %d %s", code, out)
		}
	}
	if err := os.Symlink(gen, filepath.Join(root, "pc1", "latest")); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	srv := exec.Command(rewindBin, "serve", root, "--listen", "127.0.0.1:"+port)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitListening(t, "127.0.0.1:"+port)

	// The server's own headers.
	for _, tc := range []struct{ path, want string }{
		{"/pc1/" + gen + "/data.000", "public, max-age=31536000, immutable"},
		{"/pc1/" + gen + "/manifest.json", "public, max-age=31536000, immutable"},
		{"/plain/manifest.json", "no-cache"},
		{"/plain/data.000", "public, max-age=60"},
	} {
		resp, err := http.Head("http://127.0.0.1:" + port + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Cache-Control"); got != tc.want || resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
			t.Errorf("%s: Cache-Control %q ETag %q Last-Modified %q; want %q and both validators", tc.path, got, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), tc.want)
		}
	}
	// A 404 is never cached (a generation still being uploaded would stay
	// "not found"), and a 304 keeps the file's caching.
	if resp, err := http.Get("http://127.0.0.1:" + port + "/pc1/2026-12-07T11:00:00Z/manifest.json"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("a missing generation: %s Cache-Control %q, want 404 no-store", resp.Status, resp.Header.Get("Cache-Control"))
	}
	head, err := http.Head("http://127.0.0.1:" + port + "/plain/data.000")
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+port+"/plain/data.000", nil)
	req.Header.Set("If-None-Match", head.Header.Get("ETag"))
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotModified || resp.Header.Get("Cache-Control") != "public, max-age=60" {
		t.Errorf("revalidation of data.000: %s Cache-Control %q, want 304 with public, max-age=60", resp.Status, resp.Header.Get("Cache-Control"))
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noRedirect.Get("http://127.0.0.1:" + port + "/pc1/latest/manifest.json"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusFound || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("latest: %s Cache-Control %q, want 302 no-store", resp.Status, resp.Header.Get("Cache-Control"))
	}

	cache := startNginxCache(t, "127.0.0.1:"+port)
	want := sha(t, src)
	seen := 0
	for _, name := range []string{"pc1/latest", "plain"} {
		var runs [2][][2]string
		for i := range runs {
			target := filepath.Join(dir, fmt.Sprintf("%s-%d.img", strings.ReplaceAll(name, "/", "-"), i))
			if code, out := rewind(t, "restore", "http://"+cache.addr+"/"+name, target, "--progress", "none"); code != 0 {
				t.Fatalf("restore %s through the cache (run %d): %d %s", name, i+1, code, out)
			}
			if sha(t, target) != want {
				t.Fatalf("restore %s through the cache (run %d) differs from the source", name, i+1)
			}
			runs[i], seen = cache.requests(t, seen)
		}
		for i, run := range runs {
			counts := map[string]int{}
			for _, r := range run {
				counts[r[0]]++
			}
			t.Logf("%s, restore %d through the cache: %d requests by cache status %v", name, i+1, len(run), counts)
		}
		segments := 0
		for _, r := range runs[1] {
			status, uri := r[0], r[1]
			switch {
			case strings.Contains(uri, "/data."):
				segments++
				if status != "HIT" {
					t.Errorf("%s, second restore: %s was %s, want HIT (served from the cache)", name, uri, status)
				}
			case name == "plain" && strings.HasSuffix(uri, "/manifest.json") && status == "HIT":
				t.Errorf("%s: the manifest outside a generation was answered from the cache", name)
			case strings.Contains(uri, "/latest/") && status == "HIT":
				t.Errorf("%s: the latest redirect was answered from the cache", name)
			}
		}
		if segments == 0 {
			t.Errorf("%s, second restore: no segment requests in the cache's log: %v", name, runs[1])
		}
		misses := 0
		for _, r := range runs[0] {
			if strings.Contains(r[1], "/data.") && r[0] == "MISS" {
				misses++
			}
		}
		if misses == 0 {
			t.Errorf("%s, first restore: no segment came from the server (MISS): %v", name, runs[0])
		}
	}
	// The status header a user would check.
	for i, want := range []string{"", "HIT"} {
		resp, err := http.Get("http://" + cache.addr + "/pc1/" + gen + "/data.001")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Cache-Status"); want != "" && got != want {
			t.Errorf("GET data.001 through the cache, request %d: X-Cache-Status %q, want %q", i+1, got, want)
		}
	}
}
