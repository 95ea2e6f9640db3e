package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// fleetMachines is how many machines restore at once in the fleet corpus.
const fleetMachines = 8

// runFleet measures one 'rewind serve' restoring fleetMachines machines at
// once (host processes, image-file targets): the aggregate throughput,
// the server's CPU and peak memory, against one machine alone and against
// the same number of curl | lz4 -dc pipes reading an lz4 image from the
// same server. Every target is checked against the source by SHA-256.
func runFleet(size int64, runs int, dir, rewind string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	img := filepath.Join(dir, "corpus.img")
	fmt.Fprintf(os.Stderr, "bench: building a %d MiB fleet corpus in %s\n", size/mib, img)
	if _, err := (testdisk.Sample{
		Size: size, ESPSize: size / 8, ExtSize: size / 2, RandomSize: size / 8,
		FilesFrom: "/usr", FilesLimit: size * 3 / 10, Seed: 2027,
	}).Build(img); err != nil {
		return err
	}
	srvDir := filepath.Join(dir, "srv")
	snap := filepath.Join(srvDir, "snap")
	if err := sh(rewind, "capture", img, "-o", snap, "--progress", "none"); err != nil {
		return err
	}
	if err := sh("lz4", "-1", "-q", "-f", img, filepath.Join(srvDir, "corpus.img.lz4")); err != nil {
		return err
	}
	w, err := exec.Command("sha256sum", img).Output()
	if err != nil {
		return err
	}
	want := bytes.Fields(w)[0]

	port := freePort()
	srv, err := startServer("127.0.0.1:"+port, nil, rewind, "serve", srvDir, "--listen", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	defer srv.stop()

	q := shellQuote
	target := func(i int) string { return filepath.Join(dir, fmt.Sprintf("target%d.img", i)) }
	rows := []struct {
		name, note string
		n          int
		peer       bool
		cmd        func(i int) string
	}{
		{"rewind restore (http), 1 machine", "the same server, alone", 1, false, func(i int) string {
			return fmt.Sprintf("%s restore http://127.0.0.1:%s/snap %s --progress none", q(rewind), port, q(target(i)))
		}},
		{fmt.Sprintf("rewind restore (http), %d machines", fleetMachines), "at once, one server", fleetMachines, false, func(i int) string {
			return fmt.Sprintf("%s restore http://127.0.0.1:%s/snap %s --progress none", q(rewind), port, q(target(i)))
		}},
		{fmt.Sprintf("curl | lz4 -dc --sparse, %d machines", fleetMachines), "at once, the same server", fleetMachines, true, func(i int) string {
			return fmt.Sprintf("curl -sf http://127.0.0.1:%s/corpus.img.lz4 | lz4 -dc --sparse > %s && sync %s", port, q(target(i)), q(target(i)))
		}},
	}
	fmt.Printf("Fleet: %d MiB GPT disk (as the full corpus), restored over HTTP from one `rewind serve` on loopback by %d host processes at once, each to its own image file (all on one disk, 2 cores shared by server and clients).\n\n", size/mib, fleetMachines)
	fmt.Println("| restore | machines | median s (all done) | aggregate MB/s | aggregate / peer | server CPU s | server CPU % of wall | server peak RSS MiB | note |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---|")
	type out struct {
		wall, cpu float64
		rss       int64
		err       error
	}
	results := make([]out, len(rows))
	for k, r := range rows {
		var walls, cpus []float64
		var rss int64
		for run := range runs {
			for i := range r.n {
				os.Remove(target(i))
			}
			dropCaches()
			cpu0 := procCPU(srv.cmd.Process.Pid)
			start := time.Now()
			errs := make([]error, r.n)
			var wg sync.WaitGroup
			for i := range r.n {
				wg.Go(func() {
					if out, err := exec.Command("bash", "-o", "pipefail", "-c", r.cmd(i)).CombinedOutput(); err != nil {
						errs[i] = fmt.Errorf("machine %d: %v: %s", i+1, err, lastLines(string(out)))
					}
				})
			}
			wg.Wait()
			wall := time.Since(start).Seconds()
			cpu := procCPU(srv.cmd.Process.Pid) - cpu0
			for i := range r.n {
				if errs[i] == nil {
					sum, err := exec.Command("sha256sum", target(i)).Output()
					if err != nil || !bytes.Equal(bytes.Fields(sum)[0], want) {
						errs[i] = fmt.Errorf("machine %d: the restored image differs from the source", i+1)
					}
				}
			}
			for _, err := range errs {
				if err != nil && results[k].err == nil {
					results[k].err = err
				}
			}
			walls, cpus = append(walls, wall), append(cpus, cpu)
			rss = max(rss, srv.peakKiB())
			fmt.Fprintf(os.Stderr, "bench: %-40s run %d: %.2fs, server CPU %.2fs\n", r.name, run+1, wall, cpu)
		}
		results[k].wall, results[k].cpu, results[k].rss = medianOf(walls), medianOf(cpus), rss
	}
	var peer float64 // aggregate bytes a second of the peer, at fleetMachines
	for k, r := range rows {
		if r.peer && results[k].err == nil {
			peer = float64(r.n) * float64(size) / results[k].wall
		}
	}
	cell := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	for k, r := range rows {
		res := results[k]
		if res.err != nil {
			fmt.Printf("| %s | %d | failed: %s | | | | | | %s |\n", cell(r.name), r.n, cell(res.err.Error()), r.note)
			continue
		}
		agg := float64(r.n) * float64(size) / res.wall
		ratio := "–"
		if peer > 0 && r.n == fleetMachines {
			ratio = fmt.Sprintf("%.2f", agg/peer)
		}
		fmt.Printf("| %s | %d | %.2f | %.0f | %s | %.2f | %.0f | %d | %s |\n", cell(r.name), r.n, res.wall, agg/1e6, ratio, res.cpu, 100*res.cpu/res.wall, res.rss/1024, r.note)
	}
	fmt.Println()
	fmt.Println("Every target of every run was compared with the source by SHA-256. The server's peak RSS is its VmHWM since it started (it serves all the rows).")
	return nil
}

func medianOf(v []float64) float64 {
	r := &result{seconds: v}
	return r.median()
}

// procCPU is a process's user + system CPU seconds (/proc/PID/stat).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ
}
