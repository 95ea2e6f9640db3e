package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// putSinkEnv, when set to "DIR ADDR", makes the bench binary a minimal HTTP
// PUT receiver instead (see servePutSink): the stand-in for the WebDAV or
// nginx PUT endpoint a lab would point `curl -T` at. None is installed on
// the bench machine (no nginx, lighttpd, apache, rsync daemon or netcat), so
// the peer's server is this: it writes the body to DIR/NAME and flushes it,
// and checks nothing. It runs as its own process so its peak RSS is its own.
const putSinkEnv = "REWIND_BENCH_PUT_SINK"

// putSink is the peer's upload server: PUT /NAME stores the body in
// dir/NAME (a plain name, no directories) and answers 201 once the file is
// flushed; anything else is refused.
type putSink struct{ dir string }

func (p putSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if r.Method != http.MethodPut {
		http.Error(w, "only PUT", http.StatusMethodNotAllowed)
		return
	}
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		http.Error(w, fmt.Sprintf("PUT %q: want a plain file name", r.URL.Path), http.StatusBadRequest)
		return
	}
	err := p.store(name, r.Body)
	if err != nil {
		http.Error(w, fmt.Sprintf("PUT %s: %v", name, err), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// store writes body into dir/name through a temporary file, flushed and
// renamed into place, so a cut upload leaves nothing under name.
func (p putSink) store(name string, body io.Reader) error {
	f, err := os.CreateTemp(p.dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(p.dir, name))
}

// servePutSink runs the peer's PUT receiver as this process's only job
// (REWIND_BENCH_PUT_SINK="DIR ADDR").
func servePutSink(spec string) error {
	dir, addr, ok := strings.Cut(spec, " ")
	if !ok {
		return fmt.Errorf("%s=%q: want \"DIR ADDR\"", putSinkEnv, spec)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return http.Serve(ln, putSink{dir: dir})
}

// server is a server process the bench started, for its peak RSS.
type server struct {
	cmd  *exec.Cmd
	addr string
}

// startServer starts name args... with env and waits until addr accepts
// connections (at most 10 s).
func startServer(addr string, env []string, name string, args ...string) (*server, error) {
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), env...)
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: c, addr: addr}
	for range 200 {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("%s %s: not listening on %s after 10 s: %s", name, strings.Join(args, " "), addr, lastLines(out.String()))
}

// peakKiB is the server's peak RSS since it started or since the last
// resetPeak (VmHWM).
func (s *server) peakKiB() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// resetPeak starts the server's peak RSS afresh (clear_refs 5, Linux 4.0+).
func (s *server) resetPeak() {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.cmd.Process.Pid), []byte("5"), 0)
}

func (s *server) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// uploadRows are the used corpus's upload measurements.
type uploadRows struct {
	local, up, upSigned, peer, restore *result
	// serverKiB is the peak RSS of each row's server process, in KiB.
	serverKiB map[*result]int64
}

// upRow is one capture row of the upload table: its command, what to
// clear before each run, the server it sends to, and where its result
// lands (for the stored size).
type upRow struct {
	r     *result
	cmd   string
	clear func()
	srv   *server
	out   func() (string, error)
}

// runUploads measures, on the used corpus, Rewind's capture uploaded to a
// local `rewind serve` (without and with --sign), the peer a lab would use
// instead (partclone + lz4 piped to curl -T, into putSink), and Rewind's
// capture to a local directory, in rounds: each round runs every row once,
// so that the ratios compare runs made under the same load on a shared
// machine. Then it restores the signed upload from NAME/latest onto the
// used target, checked as the other restores.
func (c *usedCorpus) runUploads(runs int, pcParts []string) (*uploadRows, error) {
	q := shellQuote
	u := &uploadRows{
		local:     &result{name: "rewind capture -o DIR (local)"},
		up:        &result{name: "rewind capture -o http:// (upload)"},
		upSigned:  &result{name: "rewind capture -o http:// (serve --sign)"},
		peer:      &result{name: "partclone -c \\| lz4 -1 \\| curl -T", peer: true, note: "3 partitions, one after another, each PUT to a minimal receiver that writes and flushes it"},
		restore:   &result{name: "rewind restore http://…/latest (signed upload)"},
		serverKiB: map[*result]int64{},
	}
	keys := filepath.Join(c.dir, "keys") // outside every served directory
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return nil, err
	}
	token := filepath.Join(keys, "upload-token")
	if err := os.WriteFile(token, []byte("bench-upload-token-0123456789abcdef\n"), 0o600); err != nil {
		return nil, err
	}
	if err := sh(c.rewind, "key", "generate", filepath.Join(keys, "lab")); err != nil {
		return nil, err
	}
	const name = "snapshots/used"
	local := filepath.Join(c.dir, "snap-local")
	rows := []*upRow{{r: u.local, cmd: fmt.Sprintf("%s capture %s -o %s --progress none", q(c.rewind), c.src, q(local)),
		clear: func() { os.RemoveAll(local) }, out: func() (string, error) { return local, nil }}}
	defer func() {
		for _, row := range rows {
			if row.srv != nil {
				row.srv.stop()
			}
		}
	}()
	urls := map[*result]string{}
	for _, r := range []*result{u.up, u.upSigned} {
		srv := filepath.Join(c.dir, "serve-"+strconv.Itoa(len(rows)))
		if err := os.MkdirAll(srv, 0o755); err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + freePort()
		args := []string{"serve", srv, "--listen", addr, "--upload-token", token}
		if r == u.upSigned {
			args = append(args, "--sign", filepath.Join(keys, "lab.key"))
		}
		row := &upRow{r: r, clear: func() { os.RemoveAll(filepath.Join(srv, name)) },
			out: func() (string, error) { return filepath.EvalSymlinks(filepath.Join(srv, name, "latest")) }}
		rows = append(rows, row)
		var err error
		if row.srv, err = startServer(addr, nil, c.rewind, args...); err != nil {
			r.err = err
			continue
		}
		urls[r] = "http://" + addr + "/" + name
		row.cmd = fmt.Sprintf("%s capture %s -o %s --upload-token %s --progress none", q(c.rewind), c.src, urls[r], q(token))
	}
	if _, err := exec.LookPath("curl"); err != nil {
		u.peer.err = errors.New("curl is not installed")
	} else {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		sink := filepath.Join(c.dir, "put")
		addr := "127.0.0.1:" + freePort()
		row := &upRow{r: u.peer, clear: func() { os.RemoveAll(sink); os.MkdirAll(sink, 0o755) }, out: func() (string, error) { return sink, nil }}
		rows = append(rows, row)
		if err := os.MkdirAll(sink, 0o755); err != nil {
			return nil, err
		}
		if row.srv, err = startServer(addr, []string{putSinkEnv + "=" + sink + " " + addr}, self); err != nil {
			u.peer.err = err
		}
		var cmds []string
		for i, p := range c.parts {
			file := fmt.Sprintf("%d-%s.pc.lz4", p.Number, p.FS)
			cmds = append(cmds, fmt.Sprintf("%s -c -s %s -o - -L %s | lz4 -1 -q | curl -sS --fail -T - http://%s/%s", partcloneTool[p.FS], pcParts[i], q(filepath.Join(c.dir, file+".curl.log")), addr, file))
		}
		row.cmd = strings.Join(cmds, " && ")
	}

	for i := range runs {
		for _, row := range rows {
			if row.r.err != nil {
				continue
			}
			row.clear()
			dropCaches()
			secs, rss, err := timed(row.cmd, nil)
			if err != nil {
				row.r.err = err
				continue
			}
			row.r.seconds = append(row.r.seconds, secs)
			row.r.rssKiB = max(row.r.rssKiB, rss)
			fmt.Fprintf(os.Stderr, "bench: %-22s round %d: %.2fs (load %s)\n", row.r.name, i+1, secs, loadAvg())
		}
	}
	for _, row := range rows {
		if row.srv != nil {
			u.serverKiB[row.r] = row.srv.peakKiB()
		}
		if row.r.err != nil {
			continue
		}
		out, err := row.out()
		if err != nil {
			row.r.err = fmt.Errorf("nothing published: %w", err)
			continue
		}
		row.r.size = treeSize(out)
	}

	// The restore reads the signed upload through its server.
	signed := rows[2]
	if u.upSigned.err != nil {
		u.restore.err = fmt.Errorf("no signed upload: %v", u.upSigned.err)
		return u, nil
	}
	gen, _ := signed.out()
	m, err := readManifest(gen)
	if err != nil {
		u.restore.err = err
		return u, nil
	}
	signed.srv.resetPeak()
	u.restore.measure(fmt.Sprintf("%s restore %s/latest %s --trust %s --yes --progress none", q(c.rewind), urls[u.upSigned], c.tgt, q(filepath.Join(keys, "lab.pub"))), runs, func() { c.fillOld(); dropCaches() })
	u.serverKiB[u.restore] = signed.srv.peakKiB()
	if u.restore.err == nil {
		u.restore.note = c.checkRewind(m)
	}
	return u, nil
}

// report prints the upload tables: the capture rows against the local
// capture and the peer measured in the same rounds, the restore against
// the local restore of the used-block snapshot.
func (u *uploadRows) report(resLocal *result) {
	fmt.Println()
	fmt.Println("Upload to the lab server (`rewind serve` on 127.0.0.1, the same disk; the server flushes what it accepts; the rows run in rounds, one run of each per round):")
	fmt.Println()
	fmt.Println("| tool | median s | stored MiB | time / local capture | time / partclone + lz4 \\| curl -T | client peak RSS MiB | server peak RSS MiB | note |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range []*result{u.local, u.up, u.upSigned, u.peer} {
		if r.err != nil {
			fmt.Printf("| %s | failed: %s | | | | | | %s |\n", r.name, cell(r.err.Error()), cell(r.note))
			continue
		}
		srv := "–"
		if k, ok := u.serverKiB[r]; ok {
			srv = strconv.FormatInt(k/1024, 10)
		}
		fmt.Printf("| %s | %.2f | %.1f | %s | %s | %d | %s | %s |\n", r.name, r.median(), float64(r.size)/mib,
			ratioT(r, u.local), ratioT(r, u.peer), r.rssKiB/1024, srv, cell(r.note))
	}
	fmt.Println()
	fmt.Println("Restore of the upload (over HTTP from the server's NAME/latest onto the used target, flushed):")
	fmt.Println()
	fmt.Println("| tool | median s | time / local restore | client peak RSS MiB | server peak RSS MiB | check |")
	fmt.Println("|---|---:|---:|---:|---:|---|")
	for _, r := range []*result{resLocal, u.restore} {
		if r.err != nil {
			fmt.Printf("| %s | failed: %s | | | | %s |\n", r.name, cell(r.err.Error()), cell(r.note))
			continue
		}
		srv := "–"
		if k, ok := u.serverKiB[r]; ok {
			srv = strconv.FormatInt(k/1024, 10)
		}
		fmt.Printf("| %s | %.2f | %s | %d | %s | %s |\n", r.name, r.median(), ratioT(r, resLocal), r.rssKiB/1024, srv, cell(r.note))
	}
	if strings.HasPrefix(u.restore.note, "FAILED") {
		fmt.Printf("\n- **%s: RESTORE CHECK FAILED**: %s\n", u.restore.name, strings.TrimPrefix(u.restore.note, "FAILED: "))
	}
	fmt.Println()
}
