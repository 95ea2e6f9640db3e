package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// These tests attack the whole upload path with the real binary: rewind
// serve in its own process, rewind capture -o http://..., rewind restore
// and verify from .../latest, with TCP and HTTP proxies on 127.0.0.1 in
// between that cut, hold or count the traffic.

// e2eLab is one rewind serve process over dir, restartable on its port.
type e2eLab struct {
	t         *testing.T
	dir, addr string
	token     string // the upload token file
	args      []string
	cmd       *exec.Cmd
	out       bytes.Buffer
}

func startE2ELab(t *testing.T, args ...string) *e2eLab {
	t.Helper()
	base := t.TempDir()
	l := &e2eLab{t: t, dir: filepath.Join(base, "srv"), addr: "127.0.0.1:" + freePort(t), args: args}
	if err := os.Mkdir(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l.token = writeToken(t, filepath.Join(base, "upload-token"), "e2e-0123456789abcdef0123456789abcdef")
	l.start()
	t.Cleanup(l.kill)
	return l
}

func (l *e2eLab) start() {
	l.t.Helper()
	args := append([]string{"serve", l.dir, "--listen", l.addr, "--upload-token", l.token}, l.args...)
	l.cmd = exec.Command(rewindBin, args...)
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.out
	if err := l.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	waitListening(l.t, l.addr)
}

// kill stops the server as a power cut or kill -9 would.
func (l *e2eLab) kill() {
	if l.cmd != nil {
		l.cmd.Process.Kill()
		l.cmd.Wait()
		l.cmd = nil
	}
}

// capture runs rewind capture SRC -o URL with the lab's token.
func (l *e2eLab) capture(src, url string, extra ...string) (int, string) {
	l.t.Helper()
	args := append([]string{"capture", src, "-o", url, "--upload-token", l.token, "--progress", "none"}, extra...)
	return rewind(l.t, args...)
}

// staging lists what the server holds in DIR/.upload.
func (l *e2eLab) staging() []string {
	entries, _ := os.ReadDir(filepath.Join(l.dir, ".upload"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// tcpProxy forwards 127.0.0.1 connections to backend. hook sees every
// block the client sends, with the count the connection sent before it,
// and may hold it (block) or cut the connection (return false).
type tcpProxy struct {
	ln      net.Listener
	backend string
	hook    func(sent int64, n int) bool
	wg      sync.WaitGroup
}

func startTCPProxy(t *testing.T, backend string, hook func(sent int64, n int) bool) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, backend: backend, hook: hook}
	p.wg.Go(p.accept)
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.pipe(c) })
	}
}

func (p *tcpProxy) pipe(c net.Conn) {
	defer c.Close()
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer b.Close()
	go func() { io.Copy(c, b); c.Close() }()
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if !p.hook(sent, n) {
				return
			}
			if _, werr := b.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil {
			return
		}
	}
}

func (p *tcpProxy) url(path string) string { return "http://" + p.ln.Addr().String() + path }

// TestE2EBreakServerKilledMidUpload: rewind serve killed (kill -9) in the
// middle of an upload and started again on the same DIR and port. The
// capture fails saying the server lost the upload and to capture again,
// and that nothing was published; after the restart the server holds no
// staging and nothing under the name; a new capture then succeeds and
// restores (from .../latest) byte for byte.
func TestE2EBreakServerKilledMidUpload(t *testing.T) {
	l := startE2ELab(t)
	src := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(src, testdisk.RandomBytes(31, 48<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The proxy holds the upload once 16 MiB went through, until the
	// server was killed and restarted.
	var total atomic.Int64
	reached := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	p := startTCPProxy(t, l.addr, func(_ int64, n int) bool {
		if total.Add(int64(n)) > 16<<20 {
			once.Do(func() { close(reached) })
			<-release
		}
		return true
	})
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		code, out := l.capture(src, p.url("/snapshots/pc1"), "--chunk-size", "1MiB", "--segment-size", "8MiB")
		done <- result{code, out}
	}()
	<-reached
	if len(l.staging()) != 1 {
		t.Errorf("mid-upload the server holds staging %v, want one session", l.staging())
	}
	l.kill()
	l.start()
	close(release)
	r := <-done
	if r.code == 0 {
		t.Fatalf("capture through a server killed mid-upload: exit 0, want a failure:\n%s", r.out)
	}
	for _, want := range []string{"restarted", "capture again", "nothing was published"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("capture's error does not say %q:\n%s", want, r.out)
		}
	}
	if got := l.staging(); len(got) != 0 {
		t.Errorf("after the restart DIR/.upload holds %v, want nothing", got)
	}
	if got := stored(t, l.dir, "snapshots/pc1"); len(got) != 0 {
		t.Errorf("after the failed upload the server holds %v under snapshots/pc1, want nothing", got)
	}
	if code, out := l.capture(src, "http://"+l.addr+"/snapshots/pc1"); code != 0 {
		t.Fatalf("capture again after the restart: exit %d:\n%s\nserver:\n%s", code, out, l.out.String())
	}
	img := filepath.Join(t.TempDir(), "restored.img")
	if code, out := rewind(t, "restore", "http://"+l.addr+"/snapshots/pc1/latest", img, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore from latest: exit %d:\n%s", code, out)
	}
	if sha(t, img) != sha(t, src) {
		t.Errorf("%s restored from snapshots/pc1/latest differs from %s", img, src)
	}
}

// TestE2EBreakProxyCutsEveryFewKiB: a TCP proxy in front of the server
// cuts every connection after 1.5 MiB from the client (frames of up to
// 1 MiB, so every few frames the connection drops mid-frame). The
// capture resumes each time and succeeds; the published snapshot verifies
// and restores equal to the source.
func TestE2EBreakProxyCutsEveryFewKiB(t *testing.T) {
	l := startE2ELab(t)
	src := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(src, testdisk.RandomBytes(32, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const cut = 1536 << 10
	var cuts atomic.Int64
	p := startTCPProxy(t, l.addr, func(sent int64, n int) bool {
		if sent+int64(n) > cut {
			cuts.Add(1)
			return false
		}
		return true
	})
	code, out := l.capture(src, p.url("/snapshots/pc1"), "--chunk-size", "1MiB", "--segment-size", "4MiB")
	if code != 0 {
		t.Fatalf("capture through a proxy cutting every %d KiB: exit %d:\n%s", cut>>10, code, out)
	}
	if cuts.Load() < 5 {
		t.Fatalf("the proxy cut %d connections, want several (the test would prove nothing)", cuts.Load())
	}
	latest := "http://" + l.addr + "/snapshots/pc1/latest"
	if code, out := rewind(t, "verify", latest, "--progress", "none"); code != 0 {
		t.Errorf("verify %s: exit %d:\n%s", latest, code, out)
	}
	img := filepath.Join(t.TempDir(), "restored.img")
	if code, out := rewind(t, "restore", latest, img, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore from latest: exit %d:\n%s", code, out)
	}
	if sha(t, img) != sha(t, src) {
		t.Errorf("%s restored from %s differs from %s", img, latest, src)
	}
	t.Logf("%d connections cut", cuts.Load())
}

// TestE2EBreakRestoreWhileCaptureKeep1: rewind serve --keep 1; a restore
// of snapshots/pc1/latest has read the manifest when a new capture of pc1
// (--overwrite) is published and the generation being restored is
// pruned, at the restore's first look at the segments (HEAD, while it
// opens the snapshot) or its first read of one (GET). The restore must not
// report success with wrong bytes: it fails naming the missing segment,
// the generation and what to do, or finishes equal to the first capture.
func TestE2EBreakRestoreWhileCaptureKeep1(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string // the first segment request of this method is held
	}{
		{"pruned while the restore opens the snapshot", http.MethodHead},
		{"pruned while the restore reads segments", http.MethodGet},
	} {
		t.Run(tc.name, func(t *testing.T) { restoreWhileCapture(t, tc.method) })
	}
}

func restoreWhileCapture(t *testing.T, method string) {
	l := startE2ELab(t, "--keep", "1")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if err := os.WriteFile(a, testdisk.RandomBytes(41, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, testdisk.RandomBytes(42, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := l.capture(a, "http://"+l.addr+"/snapshots/pc1", "--chunk-size", "1MiB", "--segment-size", "2MiB"); code != 0 {
		t.Fatalf("capture a: exit %d:\n%s", code, out)
	}
	// The restore reads through a proxy that holds its first segment
	// request until the second capture is published.
	backend, _ := url.Parse("http://" + l.addr)
	rp := httputil.NewSingleHostReverseProxy(backend)
	hold := make(chan struct{})
	held := make(chan struct{})
	var once sync.Once
	front := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/data.") && r.Method == method {
			once.Do(func() { close(held) })
			<-hold
		}
		rp.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go front.Serve(ln)
	t.Cleanup(func() { front.Close() })

	img := filepath.Join(dir, "restored.img")
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		code, out := rewind(t, "restore", "http://"+ln.Addr().String()+"/snapshots/pc1/latest", img, "--yes", "--progress", "none")
		done <- result{code, out}
	}()
	<-held
	code, out := l.capture(b, "http://"+l.addr+"/snapshots/pc1", "--chunk-size", "1MiB", "--segment-size", "2MiB", "--overwrite")
	if code != 0 {
		t.Fatalf("capture b with --overwrite while a restore reads a: exit %d:\n%s", code, out)
	}
	close(hold)
	r := <-done
	switch {
	case r.code == 0 && sha(t, img) != sha(t, a):
		t.Fatalf("restore of latest reported success, but %s is not the generation it started on (a):\n%s", img, r.out)
	case r.code == 0:
		t.Logf("restore finished equal to a")
	default:
		// It names the segment, the generation it was read from (not
		// only .../latest), and what to do.
		for _, want := range []string{"data.0", "/snapshots/pc1/20", "removed", "restore again"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("the failed restore's message does not name %q:\n%s", want, r.out)
			}
		}
		if strings.Contains(r.out, "restored ") {
			t.Errorf("the failed restore says it restored:\n%s", r.out)
		}
	}
	t.Logf("restore: exit %d\n%s", r.code, r.out)
}

// TestE2EBreakExistingNameHint: a capture refused because its name exists
// on the server is told what to do, and never to pass --overwrite when it
// did: a NAME that is a plain snapshot directory (made by rewind capture
// -o DIR) is refused even with --overwrite.
func TestE2EBreakExistingNameHint(t *testing.T) {
	l := startE2ELab(t)
	src := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(src, testdisk.RandomBytes(51, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := rewind(t, "capture", src, "-o", filepath.Join(l.dir, "snapshots", "plain"), "--progress", "none"); code != 0 {
		t.Fatalf("local capture: exit %d:\n%s", code, out)
	}
	if code, out := l.capture(src, "http://"+l.addr+"/snapshots/gens"); code != 0 {
		t.Fatalf("first upload: exit %d:\n%s", code, out)
	}
	for _, tc := range []struct {
		name, extra  string
		want, reject string
	}{
		{"generations without --overwrite", "", "pass --overwrite", ""},
		{"plain directory with --overwrite", "--overwrite", "snapshot directory, not generations", "pass --overwrite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "http://" + l.addr + "/snapshots/gens"
			args := []string{}
			if tc.extra != "" {
				target = "http://" + l.addr + "/snapshots/plain"
				args = append(args, tc.extra)
			}
			code, out := l.capture(src, target, args...)
			if code == 0 {
				t.Fatalf("capture to %s: exit 0, want a refusal:\n%s", target, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("capture to %s %s: the error does not say %q:\n%s", target, tc.extra, tc.want, out)
			}
			if tc.reject != "" && strings.Contains(out, tc.reject) {
				t.Errorf("capture to %s %s: the error says %q, which it did:\n%s", target, tc.extra, tc.reject, out)
			}
		})
	}
}

// TestE2EBreakUploadHTTPSWithLabCA: rewind serve behind a TLS front with a
// certificate of the lab's own CA. Without --ca the capture fails at once
// (no retries for ten minutes), names the certificate problem and --ca,
// and publishes nothing; with --ca it uploads, and a restore over https
// from .../latest writes the source's bytes.
func TestE2EBreakUploadHTTPSWithLabCA(t *testing.T) {
	l := startE2ELab(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, testdisk.RandomBytes(61, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, caPEM := labTLS(t)
	caFile := filepath.Join(dir, "lab-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	backend, _ := url.Parse("http://" + l.addr)
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(backend))
	front.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	front.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	front.StartTLS()
	defer front.Close()
	snap := front.URL + "/snapshots/pc1"

	code, out := rewindWithin(t, "capture", src, "-o", snap, "--upload-token", l.token, "--progress", "none")
	if code == 0 {
		t.Fatalf("capture to %s without --ca: exit 0, want a certificate error:\n%s", snap, out)
	}
	for _, want := range []string{"not trusted", "--ca"} {
		if !strings.Contains(out, want) {
			t.Errorf("capture to %s without --ca: the error does not say %q:\n%s", snap, want, out)
		}
	}
	if got := stored(t, l.dir, "snapshots/pc1"); len(got) != 0 {
		t.Errorf("after the refused upload the server holds %v, want nothing", got)
	}
	code, out = rewindWithin(t, "capture", src, "-o", snap, "--upload-token", l.token, "--progress", "none", "--ca", caFile)
	if code != 0 {
		t.Fatalf("capture to %s with --ca: exit %d:\n%s", snap, code, out)
	}
	if dest := capturedInto(t, out); !strings.HasPrefix(dest, front.URL+"/snapshots/pc1/20") {
		t.Errorf("capture says it published %s, want a generation under %s", dest, snap)
	}
	img := filepath.Join(dir, "restored.img")
	if code, out := rewindWithin(t, "restore", snap+"/latest", img, "--ca", caFile, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore %s/latest over https: exit %d:\n%s", snap, code, out)
	}
	if sha(t, img) != sha(t, src) {
		t.Errorf("%s restored over https from %s/latest differs from %s", img, snap, src)
	}
}

// TestE2EBreakUsedTargetFromLatest: a used disk (ext4, FAT, NTFS with
// deleted files, swap, raw bytes) captured used-blocks and uploaded, then
// restored from .../latest onto a loop device full of old random data:
// every file system checks clean and reads back its files, free blocks
// read as zeros, and neither the deleted files nor the target's old data
// survive.
func TestE2EBreakUsedTargetFromLatest(t *testing.T) {
	l := startE2ELab(t)
	dir := t.TempDir()
	src := makeUsedSource(t, dir)
	if code, out := l.capture(src.path, "http://"+l.addr+"/snapshots/used"); code != 0 {
		t.Fatalf("capture %s: exit %d:\n%s", src.path, code, out)
	}
	back := filepath.Join(dir, "old.img")
	if err := os.WriteFile(back, testdisk.RandomBytes(79, int(src.size)), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := testdisk.Loop(t, back, 0)
	latest := "http://" + l.addr + "/snapshots/used/latest"
	if code, out := rewind(t, "restore", latest, dev, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore %s onto %s: exit %d:\n%s", latest, dev, code, out)
	}
	copied := filepath.Join(dir, "restored.img")
	copyDevice(t, dev, copied)
	checkRestored(t, dev, copied, src)
	if whole, err := os.ReadFile(copied); err == nil {
		old := testdisk.RandomBytes(79, int(src.size))
		for off := 0; off+4096 <= len(old); off += 1 << 20 {
			if bytes.Contains(whole, old[off:off+4096]) {
				t.Errorf("%s restored from %s still holds the target's old data (its bytes at %d)", dev, latest, off)
				break
			}
		}
	}
}

// TestE2EBreakServerDiskFills: the server's DIR (a 100 MiB tmpfs) fills
// in the middle of an upload that adds a generation (--overwrite). The
// capture fails saying the lab server's disk is full and that nothing was
// published; the server keeps no staging, latest still names the old
// generation, which restores byte for byte; once space is freed the same
// capture succeeds.
func TestE2EBreakServerDiskFills(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	l := startE2ELab(t)
	l.kill()
	l.dir = filepath.Join(mnt, "srv")
	if err := os.Mkdir(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l.start()
	dir := t.TempDir()
	old, big := filepath.Join(dir, "old.img"), filepath.Join(dir, "big.img")
	if err := os.WriteFile(old, testdisk.RandomBytes(71, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, testdisk.RandomBytes(72, 48<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := "http://" + l.addr + "/snapshots/pc1"
	if code, out := l.capture(old, snap, "--chunk-size", "1MiB"); code != 0 {
		t.Fatalf("first capture: exit %d:\n%s", code, out)
	}
	// About 66 MiB stay free: a new session is accepted (it needs 64 MiB),
	// then another writer fills the disk under the upload.
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 29<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	var total atomic.Int64
	var once sync.Once
	p := startTCPProxy(t, l.addr, func(_ int64, n int) bool {
		// Once 8 MiB of the upload went through, another writer takes
		// the rest of the disk.
		if total.Add(int64(n)) > 8<<20 {
			once.Do(func() { exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M").Run() })
		}
		return true
	})
	code, out := l.capture(big, p.url("/snapshots/pc1"), "--chunk-size", "1MiB", "--overwrite")
	if code == 0 {
		t.Fatalf("capture onto a full server: exit 0:\n%s", out)
	}
	for _, want := range []string{"disk is full", "nothing was published"} {
		if !strings.Contains(out, want) {
			t.Errorf("capture onto a full server: the error does not say %q:\n%s", want, out)
		}
	}
	if got := l.staging(); len(got) != 0 {
		t.Errorf("after the failed upload DIR/.upload holds %v, want nothing", got)
	}
	img := filepath.Join(dir, "restored.img")
	if code, out := rewind(t, "restore", snap+"/latest", img, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore of latest after the failed upload: exit %d:\n%s", code, out)
	}
	if sha(t, img) != sha(t, old) {
		t.Errorf("latest after the failed upload does not restore the first capture")
	}
	os.Remove(filler)
	os.Remove(ballast)
	if code, out := l.capture(big, snap, "--chunk-size", "1MiB", "--overwrite"); code != 0 {
		t.Fatalf("capture again once space is free: exit %d:\n%s", code, out)
	}
	if code, out := rewind(t, "restore", snap+"/latest", img, "--yes", "--progress", "none"); code != 0 || sha(t, img) != sha(t, big) {
		t.Errorf("restore of latest after the second capture: exit %d, equal to the source: %v\n%s", code, sha(t, img) == sha(t, big), out)
	}
}

// TestE2EBreakServerDownAtFirst: the lab server is not up when rewind
// capture -o URL starts (its port closes every connection), and comes up
// after the first attempt: the capture says on the terminal, without -v,
// that it retries (a frozen progress bar for up to ten minutes tells the
// user nothing), then publishes.
func TestE2EBreakServerDownAtFirst(t *testing.T) {
	l := startE2ELab(t)
	l.kill()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		ln.Close()
		close(first)
	}()
	src := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(src, testdisk.RandomBytes(81, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		code, out := l.capture(src, "http://"+l.addr+"/snapshots/pc1")
		done <- result{code, out}
	}()
	<-first
	l.start()
	r := <-done
	if r.code != 0 {
		t.Fatalf("capture with the server up after its first attempt: exit %d:\n%s", r.code, r.out)
	}
	if !strings.Contains(r.out, "retrying") {
		t.Errorf("capture's output (without -v) does not say that it retries while the server is down:\n%s", r.out)
	}
}
