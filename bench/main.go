// Command bench measures Rewind's capture and restore against the tools a
// user would pick instead, on deterministic corpora, in one run, and prints
// Markdown tables of median times, throughput, sizes, ratios and peak RSS.
//
// The full corpus is a 2 GiB disk (an ESP, an ext4 filled from /usr, random
// data), measured against lz4, zstd, bmaptool and cp. The used corpus is a
// 1 GiB disk that has been in use (ext4, FAT32 and NTFS over old random
// data, about 20% live, deleted files), measured against partclone + lz4 and
// against Rewind's own whole-partition capture (--raw); on it, the bench
// also uploads the capture to a local `rewind serve` (with and without
// --sign) against a local capture and partclone + lz4 | curl -T, in rounds,
// and restores the upload from NAME/latest. The fleet corpus (512 MiB, as
// the full one) is restored by 8 host processes at once from one `rewind
// serve`: aggregate throughput, the server's CPU and peak RSS, against 8
// curl | lz4 -dc pipes from the same server.
//
//	go run ./bench [-corpus all|full|used|fleet] [-size-mib 2048] [-used-size-mib 1024] [-fleet-size-mib 512] [-runs 3] [-dir DIR] [-keep] [-rewind BIN]
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
)

const mib = 1 << 20

type result struct {
	name    string
	note    string
	bytes   int64    // disk bytes the run produces
	size    int64    // bytes of the artifact a capture stores
	env     []string // extra environment for the command
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
		secs, rss, err := timed(cmd, r.env)
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
	if spec := os.Getenv(putSinkEnv); spec != "" {
		fmt.Fprintln(os.Stderr, "bench: put sink:", servePutSink(spec))
		os.Exit(1)
	}
	corpus := flag.String("corpus", "all", "corpora to measure: full (the 2 GiB disk), used (a used disk with ext4, FAT32 and NTFS, against partclone), fleet (8 machines restoring from one server at once) or all")
	fleetSize := flag.Int64("fleet-size-mib", 512, "fleet corpus: disk size in MiB")
	size := flag.Int64("size-mib", 2048, "full corpus: disk size in MiB")
	usedSize := flag.Int64("used-size-mib", 1024, "used corpus: disk size in MiB")
	runs := flag.Int("runs", 3, "runs per tool; the median is reported")
	dir := flag.String("dir", "out/bench", "work directory (needs about 4x the full corpus size free)")
	keep := flag.Bool("keep", false, "keep the corpora and artifacts")
	bin := flag.String("rewind", "", "measure this rewind binary instead of building ./cmd/rewind")
	flag.Parse()
	if *corpus != "all" && *corpus != "full" && *corpus != "used" && *corpus != "fleet" {
		fmt.Fprintf(os.Stderr, "bench: -corpus %q: want full, used, fleet or all\n", *corpus)
		os.Exit(2)
	}
	if err := run(*corpus, *bin, *size*mib, *usedSize*mib, *fleetSize*mib, *runs, *dir, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(corpus, bin string, size, usedSize, fleetSize int64, runs int, dir string, keep bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	rewind, err := filepath.Abs(filepath.Join(dir, "rewind"))
	if err != nil {
		return err
	}
	if bin != "" {
		rewind = bin
	} else if err := sh("go", "build", "-o", rewind, "./cmd/rewind"); err != nil {
		return err
	}
	fmt.Printf("Host: %s, %d CPUs, Go %s; %d runs of each tool, median; load average at the start %s.\n\n", hostInfo(), runtime.NumCPU(), runtime.Version(), runs, loadAvg())
	if corpus == "full" || corpus == "all" {
		if err := runFull(size, runs, filepath.Join(dir, "full"), rewind); err != nil {
			return fmt.Errorf("full corpus: %w", err)
		}
	}
	if corpus == "used" || corpus == "all" {
		if corpus == "all" {
			fmt.Println()
		}
		if err := runUsed(usedSize, runs, filepath.Join(dir, "used"), rewind); err != nil {
			return fmt.Errorf("used corpus: %w", err)
		}
	}
	if corpus == "fleet" || corpus == "all" {
		if corpus == "all" {
			fmt.Println()
		}
		if err := runFleet(fleetSize, runs, filepath.Join(dir, "fleet"), rewind); err != nil {
			return fmt.Errorf("fleet corpus: %w", err)
		}
	}
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

// timed runs a bash command (with pipefail, so a failing stage of a pipe
// fails the run) under /usr/bin/time and returns wall seconds
// and the peak RSS of the command's processes.
func timed(cmd string, env []string) (float64, int64, error) {
	var stderr bytes.Buffer
	c := exec.Command("/usr/bin/time", "-f", "TIME %e %M", "bash", "-o", "pipefail", "-c", cmd)
	c.Stderr = &stderr
	c.Env = append(os.Environ(), env...)
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

// loadAvg is the 1-minute load average, since the machine may be shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(b))[0]
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
