package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/fsmap"
	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// partcloneTool names the partclone program for a file system.
var partcloneTool = map[string]string{"ext4": "partclone.ext4", "vfat": "partclone.vfat", "ntfs": "partclone.ntfs"}

// usedCorpus is the used disk and the loop devices the bench reads and
// writes through: the source disk read-only (whole and per partition, as a
// user's /dev/sda and /dev/sda1...), and a target disk of the same size.
type usedCorpus struct {
	dir, rewind string
	size        int64
	img         string
	parts       []testdisk.UsedPartition
	src         string   // whole source disk
	srcParts    []string // source partitions
	target      string   // target image file
	tgt         string   // whole target disk
	loops       []string // every loop device attached, for cleanup
}

// runUsed measures the used corpus: Rewind's used-block and whole (--raw)
// capture and restore against partclone + lz4 -1, per partition, one after
// the other, as a user would script it. Every restore goes onto a target
// full of other old data; Rewind's restores are checked byte for byte and
// with each file system's checker.
func runUsed(size int64, runs int, dir, rewind string) error {
	if tool := testdisk.MissingUsedTool(); tool != "" {
		return fmt.Errorf("%s is not installed (make setup)", tool)
	}
	for _, tool := range []string{"partclone.ext4", "partclone.vfat", "partclone.ntfs", "lz4", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (make setup)", tool)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c := &usedCorpus{dir: dir, rewind: rewind, size: size, img: filepath.Join(dir, "used.img"), target: filepath.Join(dir, "target.img")}
	defer c.detachAll()
	fmt.Fprintf(os.Stderr, "bench: building a %d MiB used disk in %s\n", size/mib, c.img)
	start := time.Now()
	parts, err := testdisk.UsedDisk{Size: size, Seed: 2026}.Build(c.img)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: used disk built in %.0fs\n", time.Since(start).Seconds())
	c.parts = parts
	if c.src, err = c.loop(c.img, 0, size, false); err != nil {
		return err
	}
	for _, p := range parts {
		dev, err := c.loop(c.img, p.Start, p.End-p.Start, false)
		if err != nil {
			return err
		}
		c.srcParts = append(c.srcParts, dev)
	}
	if err := os.WriteFile(c.target, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(c.target, size); err != nil {
		return err
	}
	if c.tgt, err = c.loop(c.target, 0, size, true); err != nil {
		return err
	}
	help, _ := exec.Command(rewind, "capture", "--help").CombinedOutput()
	haveRaw := bytes.Contains(help, []byte("--raw"))

	q := shellQuote
	snapUsed := filepath.Join(dir, "snap-used")
	snapRaw := filepath.Join(dir, "snap-raw")
	pcDir := filepath.Join(dir, "partclone")
	diskLZ4 := filepath.Join(dir, "disk.lz4")
	var pcCapture, pcFiles []string
	for i, p := range parts {
		out := filepath.Join(pcDir, fmt.Sprintf("%d-%s.pc.lz4", p.Number, p.FS))
		pcFiles = append(pcFiles, out)
		pcCapture = append(pcCapture, fmt.Sprintf("%s -c -s %s -o - -L %s | lz4 -1 -q > %s", partcloneTool[p.FS], c.srcParts[i], q(out+".log"), q(out)))
	}

	// Capture: each run makes its artifact anew from a cold cache.
	caps := []struct {
		r   *result
		cmd string
		out []string // artifact paths whose sizes add up
		pre func() error
	}{
		{&result{name: "rewind capture"}, fmt.Sprintf("%s capture %s -o %s --progress none", q(rewind), c.src, q(snapUsed)), []string{snapUsed}, nil},
		{&result{name: "rewind capture --raw"}, fmt.Sprintf("%s capture %s -o %s --progress none --raw", q(rewind), c.src, q(snapRaw)), []string{snapRaw}, nil},
		{&result{name: "partclone -c \\| lz4 -1", peer: true, note: "3 partitions, one after another"},
			strings.Join(pcCapture, " && ") + " && sync " + strings.Join(quoteAll(pcFiles), " "), pcFiles,
			func() error { return os.MkdirAll(pcDir, 0o755) }},
		{&result{name: "lz4 -1 (whole disk)", note: "for scale"}, fmt.Sprintf("lz4 -1 -q -f %s %s && sync %s", c.src, q(diskLZ4), q(diskLZ4)), []string{diskLZ4}, nil},
	}
	if !haveRaw {
		caps[1].r.err = fmt.Errorf("not in this build (rewind capture --help has no --raw)")
	}
	for _, cp := range caps {
		if cp.r.err != nil {
			continue
		}
		cp.r.measure(cp.cmd, runs, func() {
			for _, o := range cp.out {
				os.RemoveAll(o)
			}
			if cp.pre != nil {
				cp.pre()
			}
			dropCaches()
		})
		cp.r.size = 0
		for _, o := range cp.out {
			cp.r.size += treeSize(o)
		}
	}

	usedM := &benchManifest{}
	if caps[0].r.err == nil {
		if usedM, err = readManifest(snapUsed); err != nil {
			return err
		}
	}
	switch {
	case caps[0].r.err != nil:
	case usedM.usedExtents() == 0:
		caps[0].r.name = "rewind capture (no used-block capture in this build: whole partitions)"
	default:
		caps[0].r.name = "rewind capture (used blocks)"
	}

	// Restore: every run onto the target full of other old data.
	sfdiskDump := filepath.Join(dir, "table.sfdisk")
	if out, err := exec.Command("sfdisk", "-d", c.img).Output(); err != nil {
		return fmt.Errorf("sfdisk -d %s: %v", c.img, err)
	} else if err := os.WriteFile(sfdiskDump, out, 0o644); err != nil {
		return err
	}
	var tgtParts []string
	for _, p := range parts {
		// Attached for the partclone restore only; no loop device but
		// the whole disk's may be open while Rewind restores.
		tgtParts = append(tgtParts, fmt.Sprintf("${P%d}", p.Number))
	}
	var pcRestore []string
	for i, p := range parts {
		pcRestore = append(pcRestore, fmt.Sprintf("lz4 -dc %s | %s -r -s - -o %s -L %s", q(pcFiles[i]), partcloneTool[p.FS], tgtParts[i], q(pcFiles[i]+".restore.log")))
	}
	restores := []struct {
		r     *result
		cmd   string
		check func() string
	}{
		{&result{name: "rewind restore (used-block snapshot)"}, fmt.Sprintf("%s restore %s %s --yes --progress none", q(rewind), q(snapUsed), c.tgt),
			func() string { return c.checkRewind(usedM) }},
		{&result{name: "rewind restore (--raw snapshot)"}, fmt.Sprintf("%s restore %s %s --yes --progress none", q(rewind), q(snapRaw), c.tgt),
			func() string {
				m, err := readManifest(snapRaw)
				if err != nil {
					return "FAILED: " + err.Error()
				}
				return c.checkRewind(m)
			}},
		{&result{name: "partclone -r (sfdisk + 3 partitions)", peer: true},
			fmt.Sprintf("sfdisk -q --no-reread --no-tell-kernel %s < %s && %s && sync", c.tgt, q(sfdiskDump), strings.Join(pcRestore, " && ")),
			nil},
	}
	if caps[0].r.err != nil {
		restores[0].r.err = fmt.Errorf("no snapshot: %v", caps[0].r.err)
	}
	if caps[1].r.err != nil {
		restores[1].r.err = caps[1].r.err
	}
	if caps[2].r.err != nil {
		restores[2].r.err = fmt.Errorf("no partclone images: %v", caps[2].r.err)
	}
	for _, rs := range restores[:2] {
		if rs.r.err != nil {
			continue
		}
		rs.r.measure(rs.cmd, runs, func() { c.fillOld(); dropCaches() })
		if rs.r.err == nil {
			rs.r.note = rs.check()
		}
	}
	// Uploads to a local rewind serve, and the restore of one, onto the
	// same target: before the partclone restore attaches its partitions.
	uploads, err := c.runUploads(runs, c.srcParts)
	if err != nil {
		return fmt.Errorf("uploads: %w", err)
	}
	if pc := restores[2]; pc.r.err == nil {
		var env []string
		var devs []string
		for _, p := range parts {
			dev, err := c.loop(c.target, p.Start, p.End-p.Start, true)
			if err != nil {
				return err
			}
			devs = append(devs, dev)
			env = append(env, fmt.Sprintf("P%d=%s", p.Number, dev))
		}
		pc.r.env = env
		pc.r.measure(pc.cmd, runs, func() { c.fillOld(); dropCaches() })
		if pc.r.err == nil {
			pc.r.note = peerCheck(parts, devs, c.img, c.target)
		}
		for _, d := range devs {
			c.detach(d)
		}
	}

	c.report(caps[0].r, caps[1].r, caps[2].r, caps[3].r, restores[0].r, restores[1].r, restores[2].r, usedM)
	uploads.report(restores[0].r)
	return nil
}

// peerCheck checks the partclone restore as checkRewind does Rewind's, but
// reports rather than fails: fsck and read-back per partition, and whether
// the NTFS backup boot sector (the partition's last sector, outside the
// volume's clusters) came back.
func peerCheck(parts []testdisk.UsedPartition, devs []string, source, target string) string {
	var notes []string
	for i, p := range parts {
		if err := p.ReadBack(devs[i]); err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", p.FS, err))
			continue
		}
		err := p.Check(devs[i])
		if err == nil {
			notes = append(notes, p.FS+": fsck clean, files identical")
			continue
		}
		msg := fmt.Sprintf("%s: files identical, but %v", p.FS, err)
		if p.FS == "ntfs" {
			if same, err := sameBytes(source, target, p.End-512, 512); err == nil && !same {
				msg = "ntfs: files identical, but ntfsfix -n finds the alternate boot sector BAD: the partition's last sector (the backup boot sector, outside the volume's clusters) is not restored"
			}
		}
		notes = append(notes, msg)
	}
	return strings.Join(notes, "; ") + "; free blocks keep the target's old data"
}

// sameBytes reports whether two files hold the same n bytes at off.
func sameBytes(a, b string, off, n int64) (bool, error) {
	var got [2][]byte
	for i, path := range []string{a, b} {
		f, err := os.Open(path)
		if err != nil {
			return false, err
		}
		got[i] = make([]byte, n)
		_, err = f.ReadAt(got[i], off)
		f.Close()
		if err != nil {
			return false, err
		}
	}
	return bytes.Equal(got[0], got[1]), nil
}

// report prints the used corpus's tables.
func (c *usedCorpus) report(capUsed, capRaw, capPC, capLZ4, resUsed, resRaw, resPC *result, m *benchManifest) {
	var live, deleted int64
	var desc []string
	for _, p := range c.parts {
		live += p.Live
		deleted += p.Deleted
		desc = append(desc, fmt.Sprintf("%s %d MiB (%d MiB live)", p.FS, (p.End-p.Start)/mib, p.Live/mib))
	}
	fmt.Printf("Used corpus: %d MiB GPT disk that was full of random data (old use): %s; %d MiB live in all, %d MiB of files deleted (their blocks keep their data). Sources and targets are loop devices; every restore goes onto a target full of other old data.\n\n",
		c.size/mib, strings.Join(desc, ", "), live/mib, deleted/mib)

	fmt.Println("Capture (disk to snapshot or image files, flushed):")
	fmt.Println()
	fmt.Println("| tool | median s | stored MiB | size / partclone + lz4 | time / partclone + lz4 | peak RSS MiB | note |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---|")
	for _, r := range []*result{capUsed, capRaw, capPC, capLZ4} {
		if r.err != nil {
			fmt.Printf("| %s | failed: %s | | | | | %s |\n", r.name, cell(r.err.Error()), r.note)
			continue
		}
		fmt.Printf("| %s | %.2f | %.1f | %s | %s | %d | %s |\n", r.name, r.median(), float64(r.size)/mib,
			ratio(float64(r.size), float64(capPC.size), capPC.err), ratioT(r, capPC), r.rssKiB/1024, cell(r.note))
	}
	fmt.Println()
	fmt.Println("Per partition, from the used-block snapshot's manifest:")
	fmt.Println()
	fmt.Println("| extent | fs | capture | stored MiB (raw) | skipped MiB | note |")
	fmt.Println("|---|---|---|---:|---:|---|")
	for _, e := range m.Extents {
		name := e.Kind
		if e.Partition != 0 {
			name = fmt.Sprintf("partition %d", e.Partition)
		}
		capture := e.Capture
		if capture == "" {
			capture = "whole"
		}
		fmt.Printf("| %s | %s | %s | %.1f | %.1f | %s |\n", name, e.FS, capture, float64(e.Length-e.unusedBytes())/mib, float64(e.unusedBytes())/mib, cell(e.Note))
	}
	fmt.Println()
	fmt.Println("Restore (snapshot or images onto the used target, flushed):")
	fmt.Println()
	fmt.Println("| tool | median s | time / partclone restore | time / rewind --raw restore | peak RSS MiB | check |")
	fmt.Println("|---|---:|---:|---:|---:|---|")
	for _, r := range []*result{resUsed, resRaw, resPC} {
		if r.err != nil {
			fmt.Printf("| %s | failed: %s | | | | %s |\n", r.name, cell(r.err.Error()), cell(r.note))
			continue
		}
		fmt.Printf("| %s | %.2f | %s | %s | %d | %s |\n", r.name, r.median(), ratioT(r, resPC), ratioT(r, resRaw), r.rssKiB/1024, cell(r.note))
	}
	fmt.Println()
	fmt.Println("Against the targets of issue 15 (Rewind's default capture and its restore, against the peer):")
	fmt.Println()
	target := func(what string, got string, ok bool, limit string) {
		verdict := "met"
		if !ok {
			verdict = "NOT met"
		}
		if got == "–" {
			verdict = "not measured"
		}
		fmt.Printf("- %s: %s (target %s): %s\n", what, got, limit, verdict)
	}
	sz := ratio(float64(capUsed.size), float64(capPC.size), firstErr(capUsed.err, capPC.err))
	target("snapshot size / partclone + lz4 -1", sz, sz != "–" && float64(capUsed.size) <= 1.05*float64(capPC.size), "≤ 1.05")
	ct := ratioT(capUsed, capPC)
	target("capture time / partclone + lz4 -1", ct, ct != "–" && capUsed.median() <= 0.5*capPC.median(), "≤ 0.5")
	rt := ratioT(resUsed, resPC)
	target("restore time / partclone restore", rt, rt != "–" && resUsed.median() <= 0.5*resPC.median(), "≤ 0.5")
	rr := ratioT(resUsed, resRaw)
	target("restore time / rewind restore of the whole-partition (--raw) snapshot", rr, rr != "–" && resUsed.median() <= resRaw.median(), "≤ 1")
	if capRaw.err == nil && capUsed.err == nil {
		fmt.Printf("- used blocks against --raw: snapshot %s × the size, capture %s × the time, restore %s × the time\n",
			ratio(float64(capUsed.size), float64(capRaw.size), nil), ratioT(capUsed, capRaw), ratioT(resUsed, resRaw))
	}
	for _, r := range []*result{resUsed, resRaw} {
		if strings.HasPrefix(r.note, "FAILED") {
			fmt.Printf("- **%s: RESTORE CHECK FAILED**: %s\n", r.name, strings.TrimPrefix(r.note, "FAILED: "))
		}
	}
	if capUsed.err == nil && m.usedExtents() == 0 {
		fmt.Println("- this build stores whole partitions: the first row is Rewind's capture of today, not the used-block capture")
	}
}

// checkRewind checks a Rewind restore on the target: every byte equals the
// source, except the snapshot's unused ranges, which must read as zeros;
// each file system checks clean and its kept files read back identical.
// It returns what the table says: "ok ..." or "FAILED: ...".
func (c *usedCorpus) checkRewind(m *benchManifest) string {
	failed := func(err error) string {
		fmt.Fprintln(os.Stderr, "bench: RESTORE CHECK FAILED:", err)
		return "FAILED: " + err.Error()
	}
	free, err := fsFree(c.img, m)
	if err != nil {
		return failed(err)
	}
	if err := compareDisk(c.img, c.target, c.size, m, free); err != nil {
		return failed(err)
	}
	for _, p := range c.parts {
		dev, err := c.loop(c.target, p.Start, p.End-p.Start, false)
		if err != nil {
			return failed(err)
		}
		err = p.Verify(dev)
		c.detach(dev)
		if err != nil {
			return failed(err)
		}
	}
	if m.usedExtents() > 0 {
		return "ok: every used byte as the source, every free block zeros (no deleted or old data), fsck clean, files identical"
	}
	return "ok: every byte as the source (deleted files' data included), fsck clean, files identical"
}

// fsFree reads the allocation map of every extent the manifest says was
// captured used-blocks, from source, and returns its free ranges as disk
// byte ranges [start, end). Capture stores the free gaps too short to list
// as unused as zeros, so on the target every free byte reads as zero.
func fsFree(source string, m *benchManifest) ([][2]int64, error) {
	f, err := os.Open(source)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var free [][2]int64
	for _, e := range m.Extents {
		if e.Capture != "used" {
			continue
		}
		fm, err := fsmap.Read(io.NewSectionReader(f, e.Offset, e.Length), e.Length)
		if err != nil {
			return nil, fmt.Errorf("the bench cannot read the allocation map of %s %d (%s) that capture read: %w", e.Kind, e.Partition, e.FS, err)
		}
		for _, r := range fm.Free {
			free = append(free, [2]int64{e.Offset + r.Offset, e.Offset + r.Offset + r.Length})
		}
	}
	return free, nil
}

// compareDisk compares target with source over size bytes, where the
// manifest's unused ranges and the free ranges must be zeros on target.
func compareDisk(source, target string, size int64, m *benchManifest, free [][2]int64) error {
	src, err := os.Open(source)
	if err != nil {
		return err
	}
	defer src.Close()
	tgt, err := os.Open(target)
	if err != nil {
		return err
	}
	defer tgt.Close()
	unused := append(m.unused(), m.outside(size)...)
	const block = 8 << 20
	a, b := make([]byte, block), make([]byte, block)
	for off := int64(0); off < size; off += block {
		n := min(block, size-off)
		if _, err := src.ReadAt(a[:n], off); err != nil && err != io.EOF {
			return err
		}
		if _, err := tgt.ReadAt(b[:n], off); err != nil && err != io.EOF {
			return err
		}
		for _, u := range slices.Concat(unused, free) {
			s, e := max(u[0], off), min(u[1], off+n)
			if s < e {
				clear(a[s-off : e-off])
			}
		}
		if !bytes.Equal(a[:n], b[:n]) {
			i := int64(0)
			for a[i] == b[i] {
				i++
			}
			at := off + i
			where := "outside every extent"
			for _, e := range m.Extents {
				if at >= e.Offset && at < e.Offset+e.Length {
					where = fmt.Sprintf("in %s %d (%s, capture %q)", e.Kind, e.Partition, e.FS, e.Capture)
				}
			}
			inUnused := false
			for _, u := range unused {
				inUnused = inUnused || at >= u[0] && at < u[1]
			}
			if inUnused {
				return fmt.Errorf("target byte %d (%s) keeps old data in an unused range, want zeros", at, where)
			}
			for _, u := range free {
				if at >= u[0] && at < u[1] {
					return fmt.Errorf("target byte %d (%s) is a free block of the file system but not zero", at, where)
				}
			}
			return fmt.Errorf("target byte %d (%s) differs from the source", at, where)
		}
	}
	return nil
}

// fillOld fills the whole target with old data that is not the source's,
// through its loop device, so a restore that leaves a byte alone shows.
func (c *usedCorpus) fillOld() {
	f, err := os.OpenFile(c.tgt, os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: fill target:", err)
		return
	}
	defer f.Close()
	buf := make([]byte, 16<<20)
	rng := rand.New(rand.NewPCG(99, 99))
	for i := range buf {
		buf[i] = byte(rng.Uint32() | 1)
	}
	for off := int64(0); off < c.size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), c.size-off)], off); err != nil {
			fmt.Fprintln(os.Stderr, "bench: fill target:", err)
			return
		}
	}
	if err := f.Sync(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: fill target:", err)
	}
}

func (c *usedCorpus) loop(path string, off, size int64, rw bool) (string, error) {
	dev, err := testdisk.LoopRange(path, off, size, rw)
	if err == nil {
		c.loops = append(c.loops, dev)
	}
	return dev, err
}

func (c *usedCorpus) detach(dev string) {
	for i, d := range c.loops {
		if d == dev {
			c.loops = append(c.loops[:i], c.loops[i+1:]...)
			break
		}
	}
	if err := testdisk.Detach(dev); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
}

func (c *usedCorpus) detachAll() {
	for len(c.loops) > 0 {
		c.detach(c.loops[len(c.loops)-1])
	}
}

// benchManifest is the part of a snapshot manifest the bench reads. It is
// parsed loosely on purpose, so that the bench reads version 2 and version
// 3 manifests alike; the snapshot package parses them strictly.
type benchManifest struct {
	Version int           `json:"version"`
	Extents []benchExtent `json:"extents"`
}

type benchExtent struct {
	Kind      string `json:"kind"`
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
	Partition int    `json:"partition"`
	FS        string `json:"fs"`
	Capture   string `json:"capture"`
	Note      string `json:"note"`
	Unused    []struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
	} `json:"unused"`
}

func readManifest(dir string) (*benchManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m benchManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "manifest.json"), err)
	}
	return &m, nil
}

func (e benchExtent) unusedBytes() int64 {
	var n int64
	for _, u := range e.Unused {
		n += u.Length
	}
	return n
}

// unused returns every unused range as [start, end).
func (m *benchManifest) unused() [][2]int64 {
	var r [][2]int64
	for _, e := range m.Extents {
		for _, u := range e.Unused {
			r = append(r, [2]int64{u.Offset, u.Offset + u.Length})
		}
	}
	return r
}

// outside returns the ranges of a disk of size bytes that no extent and
// no table area (the first 34 and the last 33 sectors) covers: bytes left
// by earlier use of the disk outside every partition, which a used-block
// capture does not store and restore zeroes (a whole capture stores every
// non-zero one as a boot area, so they are zeros there too).
func (m *benchManifest) outside(size int64) [][2]int64 {
	var r [][2]int64
	at := int64(34 * 512)
	for _, e := range m.Extents {
		if e.Offset > at {
			r = append(r, [2]int64{at, e.Offset})
		}
		at = max(at, e.Offset+e.Length)
	}
	if end := size - 33*512; end > at {
		r = append(r, [2]int64{at, end})
	}
	return r
}

func (m *benchManifest) usedExtents() int {
	n := 0
	for _, e := range m.Extents {
		if e.Capture == "used" {
			n++
		}
	}
	return n
}

// treeSize is the sum of the sizes of the regular files at path (a file or
// a directory tree).
func treeSize(path string) int64 {
	var n int64
	filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && !strings.HasSuffix(info.Name(), ".log") {
			n += info.Size()
		}
		return nil
	})
	return n
}

func ratio(a, b float64, err error) string {
	if err != nil || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func ratioT(r, base *result) string {
	if r.err != nil || base.err != nil || len(r.seconds) == 0 || len(base.seconds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", r.median()/base.median())
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func quoteAll(s []string) []string {
	var q []string
	for _, x := range s {
		q = append(q, shellQuote(x))
	}
	return q
}

// cell makes text safe for a Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ")
}
