// Command bench measures Rewind's capture and restore against the tools a
// user would pick instead, on one deterministic corpus, in one run, and
// prints Markdown tables of median times, throughput, ratios and peak RSS.
//
//	go run ./bench [-size 2GiB] [-runs 3] [-dir DIR] [-keep]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

const mib = 1 << 20

type result struct {
	name    string
	note    string
	bytes   int64 // disk bytes the run produces
	seconds []float64
	rssKiB  int64
	err     error
	peer    bool // a peer tool (for "ratio to best peer")
	limit   bool // the write limit
}

// measure runs cmd runs times, calling before ahead of each run, and
// records the times and the peak RSS; the first failure ends it.
func (r *result) measure(cmd string, runs int, before func()) {
	for i := range runs {
		before()
		secs, rss, err := timed(cmd)
		if err != nil {
			r.err = err
			return
		}
		r.seconds = append(r.seconds, secs)
		r.rssKiB = max(r.rssKiB, rss)
		fmt.Fprintf(os.Stderr, "bench: %-22s run %d: %.2fs\n", r.name, i+1, secs)
	}
}

func (r *result) median() float64 {
	s := slices.Clone(r.seconds)
	slices.Sort(s)
	return s[len(s)/2]
}

func main() {
	size := flag.Int64("size-mib", 2048, "corpus disk size in MiB")
	runs := flag.Int("runs", 3, "runs per tool; the median is reported")
	dir := flag.String("dir", "out/bench", "work directory (needs about 4x the corpus size free)")
	keep := flag.Bool("keep", false, "keep the corpus and artifacts")
	flag.Parse()
	if err := run(*size*mib, *runs, *dir, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(size int64, runs int, dir string, keep bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	rewind := filepath.Join(dir, "rewind")
	if err := sh("go", "build", "-o", rewind, "./cmd/rewind"); err != nil {
		return err
	}
	img := filepath.Join(dir, "corpus.img")
	fmt.Fprintf(os.Stderr, "bench: building a %d MiB corpus in %s\n", size/mib, img)
	parts, err := testdisk.Sample{
		Size: size, ESPSize: size / 8, ExtSize: size / 2, RandomSize: size / 8,
		FilesFrom: "/usr", FilesLimit: size * 3 / 10, Seed: 2026,
	}.Build(img)
	if err != nil {
		return err
	}
	ext := parts[1]
	extImg := filepath.Join(dir, "ext4.img")
	if err := sh("dd", "if="+img, "of="+extImg, "bs=1M", "iflag=skip_bytes,count_bytes",
		"skip="+strconv.FormatInt(ext[0], 10), "count="+strconv.FormatInt(ext[1]-ext[0], 10), "status=none"); err != nil {
		return err
	}

	snap := filepath.Join(dir, "srv", "snap")
	target := filepath.Join(dir, "target.img")
	q := shellQuote
	fresh := func() { os.Remove(target); dropCaches() }

	// Capture: each produces its artifact once more per run.
	caps := []struct {
		r   *result
		cmd string
		out string
	}{
		{&result{name: "rewind capture", bytes: size}, fmt.Sprintf("%s capture %s -o %s --progress none", q(rewind), q(img), q(snap)), snap},
		{&result{name: "lz4 -1", bytes: size, peer: true}, fmt.Sprintf("lz4 -1 -q -f %s %s.lz4 && sync %s.lz4", q(img), q(img), q(img)), img + ".lz4"},
		{&result{name: "zstd -1 -T0", bytes: size, peer: true}, fmt.Sprintf("zstd -1 -T0 -q -f %s -o %s.zst && sync %s.zst", q(img), q(img), q(img)), img + ".zst"},
	}
	for _, c := range caps {
		c.r.measure(c.cmd, runs, func() { os.RemoveAll(c.out); dropCaches() })
		if fi, err := os.Stat(c.out); err == nil && !fi.IsDir() {
			c.r.note = fmt.Sprintf("%d MiB out", fi.Size()/mib)
		} else if out, err := exec.Command("du", "-sm", c.out).Output(); err == nil {
			c.r.note = strings.Fields(string(out))[0] + " MiB out"
		}
	}

	if err := sh("bmaptool", "-q", "create", "-o", img+".bmap", img); err != nil {
		return err
	}
	partclone := filepath.Join(dir, "ext4.pc")
	havePartclone := sh("partclone.ext4", "-q", "-c", "-s", extImg, "-O", partclone) == nil

	port := freePort()
	srv := exec.Command(rewind, "serve", filepath.Dir(snap), "--listen", "127.0.0.1:"+port)
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)

	restores := []struct {
		r   *result
		cmd string
	}{
		{&result{name: "rewind restore (dir)", bytes: size}, fmt.Sprintf("%s restore %s %s --progress none", q(rewind), q(snap), q(target))},
		{&result{name: "rewind restore (http)", bytes: size, note: "loopback"}, fmt.Sprintf("%s restore http://127.0.0.1:%s/snap %s --progress none", q(rewind), port, q(target))},
		{&result{name: "lz4 -dc --sparse", bytes: size, peer: true}, fmt.Sprintf("lz4 -dc --sparse %s.lz4 > %s && sync %s", q(img), q(target), q(target))},
		{&result{name: "zstd -dc -T0 | dd", bytes: size, peer: true}, fmt.Sprintf("zstd -dc -T0 %s.zst | dd of=%s bs=4M iflag=fullblock conv=sparse,fsync status=none", q(img), q(target))},
		{&result{name: "bmaptool copy", bytes: size, peer: true, note: "raw image + bmap"}, fmt.Sprintf("truncate -s %d %s && bmaptool -q copy --bmap %s.bmap %s %s", size, q(target), q(img), q(img), q(target))},
		{&result{name: "cp --sparse=always", bytes: size, limit: true, note: "raw image: write limit"}, fmt.Sprintf("cp --sparse=always %s %s && sync %s", q(img), q(target), q(target))},
	}
	if havePartclone {
		restores = append(restores, struct {
			r   *result
			cmd string
		}{&result{name: "partclone.ext4 -r", bytes: ext[1] - ext[0], note: "ext4 partition only"}, fmt.Sprintf("truncate -s %d %s && partclone.ext4 -q -r -s %s -O %s && sync %s", ext[1]-ext[0], q(target), q(partclone), q(target), q(target))})
	}
	var want []byte
	for _, c := range restores {
		c.r.measure(c.cmd, runs, fresh)
		if c.r.err == nil && c.r.bytes == size {
			sum, err := exec.Command("sha256sum", target).Output()
			if err == nil {
				s := bytes.Fields(sum)[0]
				if want == nil {
					w, _ := exec.Command("sha256sum", img).Output()
					want = bytes.Fields(w)[0]
				}
				if !bytes.Equal(s, want) {
					c.r.err = fmt.Errorf("restored image differs from the corpus")
				}
			}
		}
	}

	fmt.Printf("Corpus: %d MiB GPT disk (ESP %d MiB FAT32, ext4 %d MiB filled from /usr, %d MiB random, rest zeros); %d runs each, median; %s, %d CPUs, Go %s.\n\n",
		size/mib, size/8/mib, size/2/mib, size/8/mib, runs, hostInfo(), runtime.NumCPU(), runtime.Version())
	var cr []*result
	for _, c := range caps {
		cr = append(cr, c.r)
	}
	fmt.Println("Capture (raw image to compressed artifact, flushed):")
	fmt.Println()
	table(cr, "higher is better: rewind / peer speed")
	var rr []*result
	for _, c := range restores {
		rr = append(rr, c.r)
	}
	fmt.Println()
	fmt.Println("Restore (artifact to a fresh image file on the same disk, flushed):")
	fmt.Println()
	table(rr, "")
	return nil
}

func table(rs []*result, _ string) {
	best, limit := 0.0, 0.0
	for _, r := range rs {
		if r.err != nil || len(r.seconds) == 0 {
			continue
		}
		if r.peer && (best == 0 || r.median() < best) {
			best = r.median()
		}
		if r.limit {
			limit = r.median()
		}
	}
	fmt.Println("| tool | median s | MB/s | time / best peer | time / write limit | peak RSS MiB | note |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---|")
	for _, r := range rs {
		if r.err != nil {
			fmt.Printf("| %s | failed: %v | | | | | %s |\n", strings.ReplaceAll(r.name, "|", "\\|"), r.err, r.note)
			continue
		}
		m := r.median()
		ratio := func(d float64) string {
			if d == 0 || r.bytes != rs[0].bytes {
				return "–"
			}
			return fmt.Sprintf("%.2f", m/d)
		}
		name := strings.ReplaceAll(r.name, "|", "\\|")
		fmt.Printf("| %s | %.2f | %.0f | %s | %s | %d | %s |\n", name, m, float64(r.bytes)/m/1e6, ratio(best), ratio(limit), r.rssKiB/1024, r.note)
	}
}

// timed runs a shell command under /usr/bin/time and returns wall seconds
// and the peak RSS of the command's processes.
func timed(cmd string) (float64, int64, error) {
	var stderr bytes.Buffer
	c := exec.Command("/usr/bin/time", "-f", "TIME %e %M", "sh", "-c", cmd)
	c.Stderr = &stderr
	start := time.Now()
	if err := c.Run(); err != nil {
		return 0, 0, fmt.Errorf("%s: %v: %s", cmd, err, lastLines(stderr.String()))
	}
	wall := time.Since(start).Seconds()
	var rss int64
	for _, line := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "TIME" {
			rss, _ = strconv.ParseInt(f[2], 10, 64)
		}
	}
	return wall, rss, nil
}

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], " / ")
}

// dropCaches empties the page cache so every run starts alike (root only).
func dropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

func sh(name string, args ...string) error {
	out, err := exec.CommandContext(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "18080"
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func hostInfo() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			return strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
		}
	}
	return runtime.GOARCH
}
