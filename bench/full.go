package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// runFull measures capture and restore of the full corpus: a 2 GiB disk
// whose ext4 is filled from /usr, against lz4, zstd, bmaptool and cp.
func runFull(size int64, runs int, dir, rewind string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
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

	fmt.Printf("Full corpus: %d MiB GPT disk (ESP %d MiB FAT32, ext4 %d MiB filled from /usr, %d MiB random, rest zeros).\n\n",
		size/mib, size/8/mib, size/2/mib, size/8/mib)
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
