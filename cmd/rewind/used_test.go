package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

const mib = 1 << 20

// usedSource is a GPT disk that has been used: every byte random (old
// data), then an ext4, a FAT and an NTFS file system holding files, each
// over the old data, ext4 and FAT with a deleted file, a swap area and a
// partition of random bytes (no file system).
type usedSource struct {
	path    string
	size    int64
	offsets []int64
	parts   []*testdisk.FSImage
}

func makeUsedSource(t *testing.T, dir string) *usedSource {
	t.Helper()
	testdisk.NeedFS(t, "ext4", "vfat", "ntfs", "swap")
	s := &usedSource{path: filepath.Join(dir, "used.img"), size: 96 * mib}
	s.parts = []*testdisk.FSImage{
		testdisk.MakeFS(t, filepath.Join(dir, "p1.img"), "ext4", 24*mib, 6*mib, 41),
		testdisk.MakeFS(t, filepath.Join(dir, "p2.img"), "vfat", 40*mib, 6*mib, 42),
		testdisk.MakeFS(t, filepath.Join(dir, "p3.img"), "ntfs", 16*mib, 3*mib, 43),
		testdisk.MakeFS(t, filepath.Join(dir, "p4.img"), "swap", 4*mib, 0, 44),
		testdisk.MakeFS(t, filepath.Join(dir, "p5.img"), "", 2*mib, 0, 45),
	}
	s.offsets = testdisk.GPTDisk(t, s.path, s.size, 40, s.parts...)
	return s
}

// inspectJSON is the part of `rewind inspect --json` these tests read.
type inspectJSON struct {
	Extents []struct {
		Kind         string `json:"kind"`
		Partition    int    `json:"partition"`
		FS           string `json:"fs"`
		Capture      string `json:"capture"`
		Why          string `json:"why"`
		Length       int64  `json:"length"`
		StoredBytes  int64  `json:"stored_bytes"`
		SkippedBytes int64  `json:"skipped_bytes"`
	} `json:"extents"`
}

func inspect(t *testing.T, snap string) inspectJSON {
	t.Helper()
	code, out := rewind(t, "inspect", "--json", snap)
	if code != 0 {
		t.Fatalf("inspect --json: %s", out)
	}
	var got inspectJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	return got
}

// TestCLICaptureUsedBlocks captures a used disk and restores it onto an
// image and a loop device that hold other random data. Each restored file
// system checks clean, every file reads back identical, every free ext4
// block reads as zeros, the swap area keeps its header (label, UUID), the
// partition without a file system comes back byte for byte, and the
// deleted files are neither in the snapshot nor on the restored disk.
func TestCLICaptureUsedBlocks(t *testing.T) {
	dir := t.TempDir()
	src := makeUsedSource(t, dir)
	snap := filepath.Join(dir, "snap")
	code, out := rewind(t, "capture", src.path, "-o", snap, "--progress", "none")
	if code != 0 {
		t.Fatalf("capture: %s", out)
	}
	t.Logf("capture summary:\n%s", out)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s+1\s+ext4\s+24\.0 MiB\s.*used blocks$`),
		regexp.MustCompile(`(?m)^\s+2\s+vfat\s+40\.0 MiB\s.*used blocks$`),
		regexp.MustCompile(`(?m)^\s+3\s+ntfs\s+16\.0 MiB\s.*used blocks$`),
		regexp.MustCompile(`(?m)^\s+4\s+swap\s+4\.0 MiB\s+4\.0 KiB\s.*header only$`),
		regexp.MustCompile(`(?m)^\s+5\s+-\s+2\.0 MiB\s+2\.0 MiB\s+0 B\s.*whole$`),
		regexp.MustCompile(`(?m)^\s+skipped\s+\d+\.\d MiB of free file-system blocks`),
	} {
		if !want.MatchString(out) {
			t.Errorf("capture summary has no line matching %s:\n%s", want, out)
		}
	}
	code, text := rewind(t, "inspect", snap)
	if code != 0 || !strings.Contains(text, "used blocks") {
		t.Errorf("inspect shows no used-blocks extents: %s", text)
	}
	info := inspect(t, snap)
	var stored int64
	for _, e := range info.Extents {
		stored += e.StoredBytes
		if e.Kind != "partition" {
			continue
		}
		wantCapture := map[int]string{1: "used", 2: "used", 3: "used", 4: "used", 5: "whole"}[e.Partition]
		if e.Capture != wantCapture || e.Why != "" {
			t.Errorf("inspect --json: partition %d capture %q why %q, want %q", e.Partition, e.Capture, e.Why, wantCapture)
		}
		if e.Capture == "used" && (e.SkippedBytes <= 0 || e.StoredBytes+e.SkippedBytes != e.Length) {
			t.Errorf("inspect --json: partition %d stores %d and skips %d bytes of %d", e.Partition, e.StoredBytes, e.SkippedBytes, e.Length)
		}
	}
	if stored > 40*mib {
		t.Errorf("the snapshot holds %d raw bytes; want at most 40 MiB of the 86 MiB of partitions (about 15 MiB of files)", stored)
	}

	// The deleted files' data is not in the snapshot.
	if _, err := exec.LookPath("lz4"); err == nil {
		data, err := exec.Command("sh", "-c", "cat "+filepath.Join(snap, "data.*")+" | lz4 -dc").Output()
		if err != nil {
			t.Fatalf("lz4 -dc: %v", err)
		}
		checkNoDeleted(t, "the snapshot's decompressed frames", data, src.parts)
	}

	// Restore onto an image and a loop device full of other random data.
	img := filepath.Join(dir, "target.img")
	if err := os.WriteFile(img, testdisk.RandomBytes(77, int(src.size)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := rewind(t, "restore", snap, img, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore onto %s: %s", img, out)
	}
	checkRestored(t, "image", img, src)

	back := filepath.Join(dir, "loop.img")
	if err := os.WriteFile(back, testdisk.RandomBytes(78, int(src.size)), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := testdisk.Loop(t, back, 0)
	if code, out := rewind(t, "restore", snap, dev, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore onto %s: %s", dev, out)
	}
	copied := filepath.Join(dir, "loop-copy.img")
	copyDevice(t, dev, copied)
	checkRestored(t, dev, copied, src)
}

// checkNoDeleted fails when any 4 KiB block of a deleted file appears in b.
func checkNoDeleted(t *testing.T, where string, b []byte, parts []*testdisk.FSImage) {
	t.Helper()
	for _, p := range parts {
		for off := 0; off+4096 <= len(p.Deleted); off += 64 << 10 {
			if bytes.Contains(b, p.Deleted[off:off+4096]) {
				t.Errorf("%s hold the data of the file deleted from the %s file system (its bytes at %d)", where, p.Type, off)
				break
			}
		}
	}
}

func copyDevice(t *testing.T, dev, to string) {
	t.Helper()
	in, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatalf("copy %s: %v", dev, err)
	}
}

// checkRestored checks a restored disk image partition by partition, as a
// user would.
func checkRestored(t *testing.T, name, disk string, src *usedSource) {
	t.Helper()
	whole, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	checkNoDeleted(t, name, whole, src.parts)
	work := t.TempDir()
	for i, p := range src.parts {
		off := src.offsets[i]
		got := whole[off : off+p.Size]
		part := filepath.Join(work, "part"+strconv.Itoa(i+1))
		if err := os.WriteFile(part, got, 0o644); err != nil {
			t.Fatal(err)
		}
		orig, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		what := name + " partition " + strconv.Itoa(i+1) + " (" + p.Type + ")"
		switch p.Type {
		case "ext4":
			runClean(t, what, "e2fsck", "-fn", part)
			// Every byte is the source's, but zeros in dumpe2fs's free blocks.
			want := append([]byte(nil), orig...)
			for _, r := range ext4Free(t, p.Path) {
				clear(want[r[0]:r[1]])
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the source with its free blocks zeroed", what)
			}
			for f, sum := range p.Files {
				out := filepath.Join(work, "dump")
				runClean(t, what, "debugfs", "-R", "dump /"+f+" "+out, part)
				checkSum(t, what, f, out, sum)
			}
		case "vfat":
			runClean(t, what, "fsck.vfat", "-n", part)
			for f, sum := range p.Files {
				out := filepath.Join(work, f)
				runClean(t, what, "mcopy", "-n", "-i", part, "::/"+f, out)
				checkSum(t, what, f, out, sum)
			}
		case "ntfs":
			runClean(t, what, "ntfsfix", "-n", part)
			for f, sum := range p.Files {
				b, err := exec.Command("ntfscat", part, f).Output()
				if err != nil {
					t.Errorf("%s: ntfscat %s: %v", what, f, err)
					continue
				}
				if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != sum {
					t.Errorf("%s: file %s differs from the source's", what, f)
				}
			}
		case "swap":
			if !bytes.Equal(got[:4096], orig[:4096]) || !allZero(got[4096:]) {
				t.Errorf("%s: want the source's header page and zeros after it", what)
			}
			out, _ := exec.Command("blkid", "-p", "-o", "export", part).Output()
			for _, w := range []string{"TYPE=swap", "LABEL=" + testdisk.SwapLabel, "UUID=" + testdisk.SwapUUID} {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s: blkid says %q, want %s", what, out, w)
				}
			}
		case "":
			if !bytes.Equal(got, orig) {
				t.Errorf("%s: the partition without a file system differs from the source", what)
			}
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func runClean(t *testing.T, what, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Errorf("%s: %s %s: %v\n%s", what, name, strings.Join(args, " "), err, out)
	}
}

func checkSum(t *testing.T, what, name, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: file %s: %v", what, name, err)
		return
	}
	if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != want {
		t.Errorf("%s: file %s differs from the source's", what, name)
	}
}

// ext4Free is dumpe2fs's free blocks of an ext image as [start, end) byte
// offsets.
func ext4Free(t *testing.T, img string) [][2]int64 {
	t.Helper()
	out := output(t, "dumpe2fs", img)
	bs, _ := strconv.ParseInt(regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindStringSubmatch(out)[1], 10, 64)
	var free [][2]int64
	for _, m := range regexp.MustCompile(`(?m)^\s+Free blocks: (.+)$`).FindAllStringSubmatch(out, -1) {
		for _, r := range strings.Split(m[1], ", ") {
			a, b, ok := strings.Cut(r, "-")
			if !ok {
				b = a
			}
			x, _ := strconv.ParseInt(a, 10, 64)
			y, _ := strconv.ParseInt(b, 10, 64)
			free = append(free, [2]int64{x * bs, (y + 1) * bs})
		}
	}
	return free
}

// TestCLICaptureWholeWhenUnreadable: an ext4 whose block bitmap is
// damaged is stored whole and the summary and inspect say why; a
// partition of random bytes is stored whole without a word.
func TestCLICaptureWholeWhenUnreadable(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	ext := testdisk.MakeFS(t, filepath.Join(dir, "p1.img"), "ext4", 16*mib, 2*mib, 51)
	out := output(t, "dumpe2fs", ext.Path)
	blk, _ := strconv.ParseInt(regexp.MustCompile(`Block bitmap at (\d+)`).FindStringSubmatch(out)[1], 10, 64)
	bs, _ := strconv.ParseInt(regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindStringSubmatch(out)[1], 10, 64)
	f, err := os.OpenFile(ext.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 8), blk*bs) // the first blocks of group 0 (its superblock) marked free
	f.Close()
	rnd := testdisk.MakeFS(t, filepath.Join(dir, "p2.img"), "", 4*mib, 0, 52)
	disk := filepath.Join(dir, "disk.img")
	testdisk.GPTDisk(t, disk, 24*mib, 50, ext, rnd)

	snap := filepath.Join(dir, "snap")
	code, sum := rewind(t, "capture", disk, "-o", snap, "--progress", "none")
	if code != 0 {
		t.Fatalf("capture: %s", sum)
	}
	code, text := rewind(t, "inspect", snap)
	if code != 0 {
		t.Fatalf("inspect: %s", text)
	}
	damaged := regexp.MustCompile(`(?m)^\s+1\s+ext4\s+16\.0 MiB\s+16\.0 MiB\s+0 B\s.*whole \(ext4: allocation map is damaged: .*bitmap.*\)$`)
	random := regexp.MustCompile(`(?m)^\s+2\s+-\s+4\.0 MiB\s+4\.0 MiB\s+0 B\s+\S+ \S+\s+whole$`)
	for what, s := range map[string]string{"capture summary": sum, "inspect": text} {
		if !damaged.MatchString(s) {
			t.Errorf("%s does not say partition 1 (ext4) was stored whole because of its damaged bitmap:\n%s", what, s)
		}
		if !random.MatchString(s) {
			t.Errorf("%s does not show partition 2 (random bytes) stored whole without a reason:\n%s", what, s)
		}
	}
	info := inspect(t, snap)
	for _, e := range info.Extents {
		if e.Partition == 1 && (e.FS != "ext4" || e.Capture != "whole" || !strings.Contains(e.Why, "bitmap")) {
			t.Errorf("inspect --json: partition 1 fs %q capture %q why %q, want ext4 stored whole naming the bitmap", e.FS, e.Capture, e.Why)
		}
	}
}

// TestCLICaptureRefusesNotClean: an ext4 whose journal needs recovery is
// refused with the partition, the flag and the ways out, and nothing is
// written; --raw captures it whole and says so.
func TestCLICaptureRefusesNotClean(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	ext := testdisk.MakeFS(t, filepath.Join(dir, "p1.img"), "ext4", 16*mib, 2*mib, 61)
	output(t, "debugfs", "-w", "-R", "feature needs_recovery", ext.Path)
	disk := filepath.Join(dir, "disk.img")
	testdisk.GPTDisk(t, disk, 24*mib, 60, ext)

	snap := filepath.Join(dir, "snap")
	code, out := rewind(t, "capture", disk, "-o", snap, "--progress", "none")
	if code != 1 {
		t.Errorf("capture of an ext4 that needs recovery: exit %d, want 1", code)
	}
	for _, want := range []string{"partition 1", "at byte 1048576", "ext4", "needs_recovery", "nothing was written", "e2fsck", "mount and unmount it cleanly", "shut it down properly", "--raw"} {
		if !strings.Contains(out, want) {
			t.Errorf("capture refusal does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(snap); !os.IsNotExist(err) {
		t.Errorf("%s exists after a refused capture (stat: %v)", snap, err)
	}

	code, out = rewind(t, "capture", disk, "-o", snap, "--progress", "none", "--raw")
	if code != 0 {
		t.Fatalf("capture --raw: %s", out)
	}
	if !regexp.MustCompile(`(?m)^\s+1\s+ext4\s+16\.0 MiB\s+16\.0 MiB\s+0 B\s.*whole \(--raw\)$`).MatchString(out) {
		t.Errorf("capture --raw summary does not say partition 1 was stored whole because of --raw:\n%s", out)
	}
	restored := filepath.Join(dir, "restored.img")
	if code, out := rewind(t, "restore", snap, restored, "--progress", "none"); code != 0 {
		t.Fatalf("restore: %s", out)
	}
	if sha(t, restored) != sha(t, disk) {
		t.Error("the disk captured with --raw does not restore byte for byte")
	}
}

func TestCLICaptureHelp(t *testing.T) {
	code, out := rewind(t, "capture", "--help")
	for _, want := range []string{"--raw", "Used blocks", "allocation map", "swap area only its header", "refused", "shut it down properly"} {
		if code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("capture --help (exit %d) does not explain %q", code, want)
		}
	}
}

// TestCLICaptureUsedBlocksNoTable: a disk without a partition table that
// holds one file system (an ext4 image) is captured used-blocks as one
// disk extent and restores clean, with every file identical.
func TestCLICaptureUsedBlocksNoTable(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	ext := testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 32*mib, 4*mib, 71)
	snap := filepath.Join(dir, "snap")
	code, out := rewind(t, "capture", ext.Path, "-o", snap, "--progress", "none")
	if code != 0 {
		t.Fatalf("capture: %s", out)
	}
	if !regexp.MustCompile(`(?m)^\s+disk\s+ext4\s+32\.0 MiB\s.*used blocks$`).MatchString(out) {
		t.Errorf("capture summary does not show the disk's ext4 captured used-blocks:\n%s", out)
	}
	restored := filepath.Join(dir, "restored.img")
	if code, out := rewind(t, "restore", snap, restored, "--progress", "none"); code != 0 {
		t.Fatalf("restore: %s", out)
	}
	src := &usedSource{path: ext.Path, size: ext.Size, offsets: []int64{0}, parts: []*testdisk.FSImage{ext}}
	checkRestored(t, "restored image", restored, src)
}
