package upload_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
)

const (
	uploadToken = "upload-0123456789abcdef0123456789abcdef"
	reportToken = "report-0123456789abcdef0123456789abcdef"
)

// lab is a real 'rewind serve' (rescue.NewLabServer) on 127.0.0.1:
//
//	base/srv/            DIR, served
//	base/upload-token    the upload token (outside DIR)
//	base/report-token    the report token
//	base/sign.key        a signing key (base/sign.pub)
type lab struct {
	url, base, dir string
	pub            string // public key file
}

func startLab(t *testing.T, cfg rescue.LabServerConfig) *lab {
	t.Helper()
	base := t.TempDir()
	l := &lab{base: base, dir: filepath.Join(base, "srv")}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"upload-token": uploadToken + "\n", "report-token": reportToken + "\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	priv, pub, err := snapshot.GenerateKey(filepath.Join(base, "sign"))
	if err != nil {
		t.Fatal(err)
	}
	l.pub = pub
	switch cfg.UploadTokenFile {
	case "token":
		cfg.UploadTokenFile = filepath.Join(base, "upload-token")
	}
	if cfg.SignKeyFile == "key" {
		cfg.SignKeyFile = priv
	}
	cfg.TokenFile = filepath.Join(base, "report-token")
	l.url = serveLab(t, l.dir, cfg)
	return l
}

func serveLab(t *testing.T, dir string, cfg rescue.LabServerConfig) string {
	t.Helper()
	srv, err := rescue.NewLabServer(dir, cfg)
	if err != nil {
		t.Fatalf("NewLabServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// disk is a small disk image: random bytes, zeros, and random bytes
// again, captured in 64 KiB chunks into 1 MiB segments (so one upload
// fills several segments).
type disk struct {
	path string
	sum  string // SHA-256 of the image
	size int64
}

func makeDisk(t *testing.T, seed uint64) *disk {
	t.Helper()
	const mib = 1 << 20
	b := make([]byte, 6*mib)
	copy(b, testdisk.RandomBytes(seed, 3*mib))
	copy(b[4*mib:], testdisk.RandomBytes(seed+1, mib+12345))
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return &disk{path: p, sum: hex.EncodeToString(sum[:]), size: int64(len(b))}
}

func captureOptions(d *disk) snapshot.CaptureOptions {
	return snapshot.CaptureOptions{DiskSize: d.size, ChunkSize: 64 << 10, SegmentSize: 1 << 20, Jobs: 2, Origin: snapshot.Origin{Path: d.path}}
}

// capture captures d into sink.
func capture(t *testing.T, d *disk, sink snapshot.Sink) (*snapshot.Manifest, error) {
	t.Helper()
	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return snapshot.CaptureTo(context.Background(), f, sink, captureOptions(d))
}

func newClient(t *testing.T, url string, opt upload.ClientOptions) *upload.Client {
	t.Helper()
	if opt.Token == "" {
		opt.Token = uploadToken
	}
	c, err := upload.NewClient(url, opt)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", url, err)
	}
	return c
}

// uploadDisk opens a client for url and captures d into it.
func uploadDisk(t *testing.T, d *disk, url string, opt upload.ClientOptions) (*upload.Client, error) {
	t.Helper()
	c := newClient(t, url, opt)
	if err := c.Open(context.Background()); err != nil {
		return c, err
	}
	_, err := capture(t, d, c)
	return c, err
}

// restored restores the snapshot at location into a file and returns its
// SHA-256: what a user compares with the source.
func restored(t *testing.T, location string, trust ...string) string {
	t.Helper()
	opts := snapshot.OpenOptions{}
	for _, k := range trust {
		pub, err := snapshot.LoadPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		opts.Trust = append(opts.Trust, pub)
	}
	snap, err := snapshot.Open(context.Background(), location, opts)
	if err != nil {
		t.Fatalf("open %s: %v", location, err)
	}
	defer snap.Close()
	if len(trust) > 0 && !snap.Verified {
		t.Errorf("%s: signature not verified", location)
	}
	target := filepath.Join(t.TempDir(), "restored.img")
	f, err := os.Create(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(snap.Manifest.DiskSize); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Run(context.Background(), snap, f, restore.Options{FreshTarget: true}); err != nil {
		t.Fatalf("restore %s: %v", location, err)
	}
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// listing lists every path under dir (directories and links too), with
// the target of links: what an operator sees with ls -R.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			rel += " -> " + target
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// published lists the generations of name and where latest points.
func generations(t *testing.T, l *lab, name string) (gens []string, latest string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == upload.Latest {
			latest, _ = os.Readlink(filepath.Join(l.dir, name, e.Name()))
			continue
		}
		gens = append(gens, e.Name())
	}
	return gens, latest
}

// noStaging fails when a session's staging is left in DIR/.upload.
func noStaging(t *testing.T, l *lab) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.dir, ".upload"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("staging %s is left in DIR/.upload", e.Name())
	}
}

func TestUploadThenRestore(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	d := makeDisk(t, 1)
	const gen = "2026-11-23T10:15:00Z"
	c, err := uploadDisk(t, d, l.url+"/snapshots/pc1", upload.ClientOptions{Generation: gen})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got, want := c.Published(), l.url+"/snapshots/pc1/"+gen; got != want {
		t.Errorf("Published() = %s, want %s", got, want)
	}
	gens, latest := generations(t, l, "snapshots/pc1")
	if len(gens) != 1 || gens[0] != gen || latest != gen {
		t.Errorf("DIR/snapshots/pc1 holds %v, latest -> %q; want [%s], latest -> %s", gens, latest, gen, gen)
	}
	for _, loc := range []string{c.Published(), l.url + "/snapshots/pc1/latest", filepath.Join(l.dir, "snapshots/pc1", gen)} {
		if got := restored(t, loc); got != d.sum {
			t.Errorf("restore from %s: image sha256 %s, want the source's %s", loc, got, d.sum)
		}
	}
	noStaging(t, l)
	// The staging directory is never served.
	resp, err := http.Get(l.url + "/.upload/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /.upload/: %s, want 404", resp.Status)
	}
}

// cutProxy forwards TCP connections to target and cuts each of the first
// len(cuts) connections after cuts[i] bytes from the client.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cuts   []int64
	conns  int
	cutAt  []int64 // bytes forwarded when each cut happened
}

func newCutProxy(t *testing.T, target string, cuts ...int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: strings.TrimPrefix(target, "http://"), cuts: cuts}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		limit := int64(-1)
		if p.conns < len(p.cuts) {
			limit = p.cuts[p.conns]
		}
		p.conns++
		p.mu.Unlock()
		go p.forward(c, limit)
	}
}

func (p *cutProxy) forward(c net.Conn, limit int64) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	go io.Copy(c, up)
	if limit < 0 {
		io.Copy(up, c)
		return
	}
	n, _ := io.Copy(up, io.LimitReader(c, limit))
	if n == limit {
		p.mu.Lock()
		p.cutAt = append(p.cutAt, n)
		p.mu.Unlock()
	}
	// Closing both ends here cuts the connection in the middle of
	// whatever request was on its way.
}

func TestUploadResumesAfterCut(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	d := makeDisk(t, 2)
	// Each cut falls inside a frame body: frames are ~64 KiB of random
	// data, so 200000 bytes into a connection is the middle of one.
	proxy := newCutProxy(t, l.url, 200_000, 1_000_000, 1_500_000)
	var logMu sync.Mutex
	var log []string
	c, err := uploadDisk(t, d, proxy.url()+"/pc2", upload.ClientOptions{Log: func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		log = append(log, fmt.Sprintf(format, args...))
	}})
	if err != nil {
		t.Fatalf("upload through a connection cut 3 times: %v", err)
	}
	proxy.mu.Lock()
	cuts := len(proxy.cutAt)
	proxy.mu.Unlock()
	if cuts != 3 {
		t.Fatalf("the proxy cut %d connections, want 3 (the test did not test a cut)", cuts)
	}
	text := strings.Join(log, "\n")
	if !strings.Contains(text, "resuming at chunk") {
		t.Errorf("the client never resumed after a cut mid-frame; its log:\n%s", text)
	}
	if got := restored(t, l.url+"/pc2/latest"); got != d.sum {
		t.Errorf("restore after an upload with cuts: image sha256 %s, want %s", got, d.sum)
	}
	if !strings.HasPrefix(c.Published(), proxy.url()+"/pc2/") {
		t.Errorf("Published() = %s, want a generation of %s/pc2", c.Published(), proxy.url())
	}
	noStaging(t, l)
}

// tamper is a Client with a hostile twist: it changes or drops frames,
// or changes the manifest before committing it.
type tamper struct {
	*upload.Client
	frame    func(f *snapshot.Frame) bool // false: the frame is not sent
	manifest func(m *snapshot.Manifest)
}

func (s *tamper) Put(ctx context.Context, f snapshot.Frame) error {
	if s.frame != nil {
		f.Data = bytes.Clone(f.Data)
		if !s.frame(&f) {
			return nil
		}
	}
	return s.Client.Put(ctx, f)
}

func (s *tamper) Commit(ctx context.Context, m *snapshot.Manifest, data, sig []byte) error {
	if s.manifest != nil {
		s.manifest(m)
		var err error
		if data, err = m.Marshal(); err != nil {
			return err
		}
	}
	return s.Client.Commit(ctx, m, data, sig)
}

func TestUploadHostileFramesAndManifests(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	d := makeDisk(t, 3)
	for _, tc := range []struct {
		name     string
		frame    func(f *snapshot.Frame) bool
		manifest func(m *snapshot.Manifest)
		want     string
	}{
		{"a frame whose bytes do not match its hash",
			func(f *snapshot.Frame) bool {
				if f.Index == 3 {
					f.Data[10] ^= 0xff
				}
				return true
			}, nil, "chunk 3 (data.000 at offset"},
		{"a frame that leaves a gap in its segment",
			func(f *snapshot.Frame) bool {
				if f.Index == 5 {
					f.Offset += 100
				}
				return true
			}, nil, "does not continue its segment"},
		{"a frame that overlaps the one before",
			func(f *snapshot.Frame) bool {
				if f.Index == 5 {
					f.Offset -= 100
				}
				return true
			}, nil, "does not continue its segment"},
		{"a chunk skipped",
			func(f *snapshot.Frame) bool { return f.Index != 4 }, nil, "after chunk 3: frames must come in chunk order"},
		{"a segment named to escape",
			func(f *snapshot.Frame) bool {
				if f.Index == 0 {
					f.Name = "../../evil"
				}
				return true
			}, nil, "segment name"},
		{"a segment named like a dot file",
			func(f *snapshot.Frame) bool {
				if f.Index == 0 {
					f.Name = ".hidden"
				}
				return true
			}, nil, "starts with a dot"},
		{"the manifest names a chunk never sent",
			func(f *snapshot.Frame) bool { return f.Segment == 0 }, nil, "segments, the server holds"},
		{"the manifest's segment size lies",
			nil, func(m *snapshot.Manifest) { m.Segments[0].Size += 1 }, "the server holds data.000 of"},
		{"the manifest's chunk hash differs from the frame sent",
			nil, func(m *snapshot.Manifest) {
				m.Chunks[2].SHA256 = strings.Repeat("0", 64)
			}, "chunk 2: the manifest says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "hostile-" + strings.NewReplacer(" ", "-", "'", "").Replace(tc.name)
			c := newClient(t, l.url+"/"+name, upload.ClientOptions{})
			if err := c.Open(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, err := capture(t, d, &tamper{Client: c, frame: tc.frame, manifest: tc.manifest})
			if err == nil || !errors.Is(err, upload.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: capture error %v, want ErrRefused naming %q", tc.name, err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(l.dir, name)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: DIR/%s exists after a refused upload (%v): something was published", tc.name, name, err)
			}
			if c.Published() != "" {
				t.Errorf("%s: Published() = %s after a refused upload", tc.name, c.Published())
			}
			noStaging(t, l)
		})
	}
}

// raw sends one request of the protocol by hand.
func raw(t *testing.T, method, url, token string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUploadHostileRequests(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	session := func(name string) string {
		code, body := raw(t, http.MethodPost, l.url+"/upload/"+name, uploadToken, nil, `{"overwrite":false}`)
		if code != http.StatusCreated {
			t.Fatalf("create session for %s: %d %s", name, code, body)
		}
		_, id, _ := strings.Cut(body, `"session":"`)
		id, _, _ = strings.Cut(id, `"`)
		return id
	}
	sum := sha256.Sum256([]byte("frame"))
	hash := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		body               string
		code               int
		want               string
		alive              bool
	}{
		{"traversal in the name", http.MethodPost, "/upload/a/%2e%2e/%2e%2e/etc", nil, `{}`, 400, "starts with a dot", false},
		{"a dot name", http.MethodPost, "/upload/.upload/x", nil, `{}`, 400, "starts with a dot", false},
		{"under reports", http.MethodPost, "/upload/reports/x", nil, `{}`, 400, "keeps for itself", false},
		{"too deep", http.MethodPost, "/upload/a/b/c/d/e/f/g/h/i", nil, `{}`, 400, "at most 8", false},
		{"a bad character", http.MethodPost, "/upload/pc%20one", nil, `{}`, 400, "character", false},
		{"unknown JSON field", http.MethodPost, "/upload/pc1", nil, `{"overwrite":false,"path":"/etc"}`, 400, "unknown field", false},
		{"bad generation", http.MethodPost, "/upload/pc1", nil, `{"generation":"../x"}`, 400, "not a UTC time", false},
		{"huge frame", http.MethodPut, "/upload/pcX?session=SID&chunk=0&segment=0&name=data.000&offset=0",
			map[string]string{"X-Rewind-SHA256": hash, "Content-Length": "999999999999"}, "", 413, "a frame is at most", false},
		{"frame at a bad offset", http.MethodPut, "/upload/pcX?session=SID&chunk=0&segment=0&name=data.000&offset=4096",
			map[string]string{"X-Rewind-SHA256": hash}, "frame", 400, "does not continue its segment", false},
		{"frame of a later segment first", http.MethodPut, "/upload/pcX?session=SID&chunk=0&segment=3&name=data.003&offset=0",
			map[string]string{"X-Rewind-SHA256": hash}, "frame", 400, "does not continue its segment", false},
		{"frame without hash", http.MethodPut, "/upload/pcX?session=SID&chunk=0&segment=0&name=data.000&offset=0",
			nil, "frame", 400, "X-Rewind-SHA256", false},
		{"frame with a negative chunk", http.MethodPut, "/upload/pcX?session=SID&chunk=-1&segment=0&name=data.000&offset=0",
			map[string]string{"X-Rewind-SHA256": hash}, "frame", 400, ">= 0", false},
		{"session of another name", http.MethodPut, "/upload/other?session=SID&chunk=0&segment=0&name=data.000&offset=0",
			map[string]string{"X-Rewind-SHA256": hash}, "frame", 400, "is for pcX", true},
		{"huge manifest", http.MethodPut, "/upload/pcX?session=SID&commit=1",
			map[string]string{"Content-Length": "999999999999"}, "", 413, "manifest of 999999999999 bytes", false},
		{"unknown session", http.MethodGet, "/upload/pcX?session=nope", nil, "", 404, "no upload session", false},
		{"commit without frames", http.MethodPut, "/upload/pcX?session=SID&commit=1", nil, `{"format":"rewind-snapshot"}`, 400, "manifest", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, l.dir)
			p, sid := tc.path, ""
			if strings.Contains(p, "SID") {
				sid = session("pcX")
				p = strings.Replace(p, "SID", sid, 1)
			}
			// By hand, over TCP: a Go client would not send a
			// Content-Length its body does not have.
			conn, err := net.Dial("tcp", strings.TrimPrefix(l.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n", tc.method, p, uploadToken)
			length := fmt.Sprint(len(tc.body))
			for k, v := range tc.hdr {
				if k == "Content-Length" {
					length = v // the server must refuse before reading
					continue
				}
				fmt.Fprintf(conn, "%s: %s\r\n", k, v)
			}
			fmt.Fprintf(conn, "Content-Length: %s\r\n\r\n%s", length, tc.body)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			var code int
			var msg string
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code, msg = resp.StatusCode, string(b)
			}
			if err != nil || code != tc.code || !strings.Contains(msg, tc.want) {
				t.Errorf("%s %s: %d %q (%v), want %d naming %q", tc.method, tc.path, code, msg, err, tc.code, tc.want)
			}
			if tc.alive { // refused, but the session is the right one's
				if code, msg := raw(t, http.MethodDelete, l.url+"/upload/pcX?session="+sid, uploadToken, nil, ""); code != http.StatusNoContent {
					t.Errorf("DELETE the session: %d %s", code, msg)
				}
			}
			noStaging(t, l)
			if after := listing(t, l.dir); strings.Join(after, "\n") != strings.Join(before, "\n") && !(len(after) == 1+len(before) && slicesHas(after, ".upload")) {
				t.Errorf("DIR changed: before %v, after %v", before, after)
			}
		})
	}
}

func slicesHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestUploadToken(t *testing.T) {
	d := makeDisk(t, 4)
	for _, tc := range []struct {
		name   string
		cfg    rescue.LabServerConfig
		token  string
		code   int
		target error
	}{
		{"missing token", rescue.LabServerConfig{UploadTokenFile: "token"}, "", http.StatusUnauthorized, upload.ErrUnauthorized},
		{"wrong token", rescue.LabServerConfig{UploadTokenFile: "token"}, "wrong-0123456789abcdef0123456789", http.StatusUnauthorized, upload.ErrUnauthorized},
		{"the report token", rescue.LabServerConfig{UploadTokenFile: "token"}, reportToken, http.StatusUnauthorized, upload.ErrUnauthorized},
		{"uploads off", rescue.LabServerConfig{}, uploadToken, http.StatusForbidden, upload.ErrUploadsOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLab(t, tc.cfg)
			before := listing(t, l.dir)
			for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodGet, http.MethodDelete} {
				code, msg := raw(t, method, l.url+"/upload/pc1?session=x", tc.token, nil, "{}")
				if method == http.MethodPost {
					code, msg = raw(t, method, l.url+"/upload/pc1", tc.token, nil, "{}")
				}
				if code != tc.code || !strings.Contains(msg, "upload") {
					t.Errorf("%s /upload/pc1 with %s: %d %q, want %d explaining it", method, tc.name, code, msg, tc.code)
				}
			}
			if tc.token != "" {
				c := newClient(t, l.url+"/pc1", upload.ClientOptions{Token: tc.token})
				err := c.Open(context.Background())
				if !errors.Is(err, tc.target) {
					t.Errorf("Open with %s: %v, want %v", tc.name, err, tc.target)
				}
				if err == nil {
					capture(t, d, c)
				}
			}
			if after := listing(t, l.dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("DIR changed after refused uploads: before %v, after %v", before, after)
			}
		})
	}
}

func TestUploadExistingName(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	d := makeDisk(t, 5)
	if _, err := uploadDisk(t, d, l.url+"/pc1", upload.ClientOptions{Generation: "2026-11-23T10:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	// A plain snapshot directory (as rewind capture -o makes) in DIR.
	if _, err := snapshot.Capture(context.Background(), mustOpen(t, d.path), filepath.Join(l.dir, "plain"), captureOptions(d)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, "afile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url string
		overwrite bool
		gen, want string
	}{
		{"generations without overwrite", "/pc1", false, "", "set overwrite = true"},
		{"the same generation with overwrite", "/pc1", true, "2026-11-23T10:00:00Z", "already exists"},
		{"a plain snapshot directory, overwrite", "/plain", true, "", "snapshot directory, not generations"},
		{"inside a plain snapshot", "/plain/x", true, "", "is a snapshot"},
		{"inside a generations directory", "/pc1/x", true, "", "is a snapshot"},
		{"a file", "/afile", true, "", "not a directory"},
		{"below a file", "/afile/x", true, "", "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, l.dir)
			c := newClient(t, l.url+tc.url, upload.ClientOptions{Overwrite: tc.overwrite, Generation: tc.gen})
			err := c.Open(context.Background())
			if !errors.Is(err, upload.ErrExists) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open %s: %v, want ErrExists naming %q", tc.url, err, tc.want)
			}
			if after := listing(t, l.dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("DIR changed after a refused Open: before %v, after %v", before, after)
			}
		})
	}
	// With overwrite, a new generation is added and latest names it.
	c, err := uploadDisk(t, d, l.url+"/pc1", upload.ClientOptions{Overwrite: true, Generation: "2026-11-23T11:00:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	gens, latest := generations(t, l, "pc1")
	if want := []string{"2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z"}; strings.Join(gens, " ") != strings.Join(want, " ") || latest != want[1] {
		t.Errorf("pc1 holds %v, latest -> %s; want %v, latest -> %s", gens, latest, want, want[1])
	}
	if got := restored(t, c.Published()); got != d.sum {
		t.Errorf("restore of the new generation: %s, want %s", got, d.sum)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestUploadKeep(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token", Keep: 2})
	d := makeDisk(t, 6)
	for i, tc := range []struct {
		gen    string
		kept   []string
		latest string
	}{
		{"2026-01-01T00:00:00Z", []string{"2026-01-01T00:00:00Z"}, "2026-01-01T00:00:00Z"},
		{"2026-01-02T00:00:00Z", []string{"2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"}, "2026-01-02T00:00:00Z"},
		{"2026-01-03T00:00:00Z", []string{"2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"}, "2026-01-03T00:00:00Z"},
		// A machine whose clock is behind: its generation sorts first,
		// but latest names it, so it stays with the 2 newest.
		{"2020-01-01T00:00:00Z", []string{"2020-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"}, "2020-01-01T00:00:00Z"},
		{"2026-01-04T00:00:00Z", []string{"2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"}, "2026-01-04T00:00:00Z"},
	} {
		if _, err := uploadDisk(t, d, l.url+"/lab/pc1", upload.ClientOptions{Overwrite: true, Generation: tc.gen}); err != nil {
			t.Fatalf("upload %d (%s): %v", i, tc.gen, err)
		}
		gens, latest := generations(t, l, "lab/pc1")
		if strings.Join(gens, " ") != strings.Join(tc.kept, " ") || latest != tc.latest {
			t.Errorf("after upload %d (%s), keep 2: lab/pc1 holds %v, latest -> %s; want %v, latest -> %s", i, tc.gen, gens, latest, tc.kept, tc.latest)
		}
	}
	if got := restored(t, l.url+"/lab/pc1/latest"); got != d.sum {
		t.Errorf("restore of lab/pc1/latest: %s, want %s", got, d.sum)
	}
}

func TestUploadSigned(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token", SignKeyFile: "key"})
	d := makeDisk(t, 7)
	// The client signs with a key of its own: the server's replaces it.
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, l.url+"/pc1", upload.ClientOptions{})
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	opts := captureOptions(d)
	opts.SignKey = other
	if _, err := snapshot.CaptureTo(context.Background(), mustOpen(t, d.path), c, opts); err != nil {
		t.Fatal(err)
	}
	if got := restored(t, c.Published(), l.pub); got != d.sum {
		t.Errorf("restore of the signed upload: %s, want %s", got, d.sum)
	}
	// The signature covers the manifest's bytes as published.
	gen := filepath.Base(c.Published())
	m, err := os.ReadFile(filepath.Join(l.dir, "pc1", gen, snapshot.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(filepath.Join(l.dir, "pc1", gen, snapshot.SignatureName))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := snapshot.LoadPublicKey(l.pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.VerifySignature(m, sig, []ed25519.PublicKey{pub}); err != nil {
		t.Errorf("the published signature does not verify with the server's public key: %v", err)
	}
}

func TestUploadConcurrent(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	disks := []*disk{makeDisk(t, 8), makeDisk(t, 9)}
	run := func(urls []string, opts []upload.ClientOptions) ([]*upload.Client, []error) {
		clients := make([]*upload.Client, len(urls))
		errs := make([]error, len(urls))
		var wg sync.WaitGroup
		for i := range urls {
			clients[i] = newClient(t, urls[i], opts[i])
			wg.Go(func() {
				if errs[i] = clients[i].Open(context.Background()); errs[i] == nil {
					_, errs[i] = capture(t, disks[i], clients[i])
				}
			})
		}
		wg.Wait()
		return clients, errs
	}

	t.Run("different names", func(t *testing.T) {
		clients, errs := run([]string{l.url + "/a/pc1", l.url + "/a/pc2"}, []upload.ClientOptions{{}, {}})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("upload %d: %v", i, err)
			}
			if got := restored(t, clients[i].Published()); got != disks[i].sum {
				t.Errorf("restore of %s: %s, want %s", clients[i].Published(), got, disks[i].sum)
			}
		}
	})
	t.Run("the same name", func(t *testing.T) {
		clients, errs := run([]string{l.url + "/b/pc", l.url + "/b/pc"}, []upload.ClientOptions{
			{Generation: "2026-11-23T10:00:00Z"}, {Generation: "2026-11-23T10:00:01Z"}})
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won < 0:
				won = i
			case err == nil:
				t.Errorf("both uploads of b/pc were published without overwrite")
			case !errors.Is(err, upload.ErrExists):
				t.Errorf("upload %d: %v, want ErrExists for the one that lost", i, err)
			}
		}
		if won < 0 {
			t.Fatal("neither upload of b/pc was published")
		}
		gens, latest := generations(t, l, "b/pc")
		if len(gens) != 1 || latest != gens[0] || clients[won].Published() != l.url+"/b/pc/"+latest {
			t.Errorf("b/pc holds %v, latest -> %s; want one generation, the winner's %s", gens, latest, clients[won].Published())
		}
		if got := restored(t, l.url+"/b/pc/latest"); got != disks[won].sum {
			t.Errorf("restore of b/pc/latest: %s, want upload %d's %s", got, won, disks[won].sum)
		}
	})
	t.Run("the same name with overwrite", func(t *testing.T) {
		clients, errs := run([]string{l.url + "/c/pc", l.url + "/c/pc"}, []upload.ClientOptions{
			{Overwrite: true, Generation: "2026-11-23T10:00:00Z"}, {Overwrite: true, Generation: "2026-11-23T10:00:01Z"}})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("upload %d: %v", i, err)
			}
			if got := restored(t, clients[i].Published()); got != disks[i].sum {
				t.Errorf("restore of %s: %s, want %s", clients[i].Published(), got, disks[i].sum)
			}
		}
		if gens, _ := generations(t, l, "c/pc"); len(gens) != 2 {
			t.Errorf("c/pc holds %v, want both generations", gens)
		}
	})
	noStaging(t, l)
}

// A GPT disk with an ESP, ext4 and random data (testdisk.Sample), captured
// as rewind capture does (layout, used blocks only, recheck), uploaded:
// the published snapshot is the one a local capture makes (same layout,
// same chunks by hash), and it verifies end to end over HTTP.
func TestUploadGPTDiskEqualsLocalCapture(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	src := filepath.Join(t.TempDir(), "src.img")
	if _, err := (testdisk.Sample{Size: 48 << 20, ESPSize: 33 << 20, ExtSize: 8 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 2 << 20, Seed: 12}).Build(src); err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, src)
	options := func() snapshot.CaptureOptions {
		t.Helper()
		opts := snapshot.CaptureOptions{DiskSize: 48 << 20, ChunkSize: 1 << 20, SegmentSize: 4 << 20, Origin: snapshot.Origin{Path: src}}
		var err error
		if opts.Layout, opts.Extents, err = diskrestore.ReadLayout(f, opts.DiskSize, 0); err != nil {
			t.Fatal(err)
		}
		opts.Extents, _ = diskrestore.StrayAreas(opts.Extents)
		if opts.Extents, opts.Free, err = diskrestore.UsedExtents(f, opts.Extents, false); err != nil {
			t.Fatal(err)
		}
		opts.Recheck = func() error { return diskrestore.FreeChanged(f, opts.Extents, opts.Free) }
		return opts
	}
	local, err := snapshot.Capture(context.Background(), f, filepath.Join(t.TempDir(), "local"), options())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, l.url+"/lab/pc1", upload.ClientOptions{})
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.CaptureTo(context.Background(), f, c, options()); err != nil {
		t.Fatalf("upload: %v", err)
	}
	snap, err := snapshot.Open(context.Background(), l.url+"/lab/pc1/latest", snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	up := snap.Manifest
	if len(up.Segments) < 2 {
		t.Errorf("the upload has %d segments; the test wants several", len(up.Segments))
	}
	if fmt.Sprint(up.Layout) != fmt.Sprint(local.Layout) || len(up.Chunks) != len(local.Chunks) {
		t.Fatalf("uploaded layout/chunks differ from a local capture's: %d chunks, want %d", len(up.Chunks), len(local.Chunks))
	}
	for i := range up.Chunks {
		if up.Chunks[i] != local.Chunks[i] {
			t.Errorf("chunk %d: uploaded %+v, local capture %+v", i, up.Chunks[i], local.Chunks[i])
		}
	}
	if _, err := restore.Verify(context.Background(), snap, restore.Options{}); err != nil {
		t.Errorf("verify the uploaded snapshot over HTTP: %v", err)
	}
}

// A capture that fails on the machine's side after sending every frame
// (its recheck finds the file system changed) aborts: the server drops
// the session at once, and nothing is published.
func TestUploadAbortDropsSession(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	d := makeDisk(t, 10)
	c := newClient(t, l.url+"/pc1", upload.ClientOptions{})
	if err := c.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	opts := captureOptions(d)
	sent := false
	opts.Recheck = func() error {
		entries, _ := os.ReadDir(filepath.Join(l.dir, ".upload"))
		sent = len(entries) == 1
		return errors.New("a file system was written to during the capture")
	}
	if _, err := snapshot.CaptureTo(context.Background(), mustOpen(t, d.path), c, opts); err == nil {
		t.Fatal("capture succeeded although its recheck failed")
	}
	if !sent {
		t.Fatal("no session staging on the server before the recheck: the test did not test an abort")
	}
	noStaging(t, l)
	if gens, _ := generations(t, l, "pc1"); len(gens) != 0 {
		t.Errorf("pc1 holds %v after an aborted capture", gens)
	}
}
