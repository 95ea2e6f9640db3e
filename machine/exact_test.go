package machine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

const mib = 1 << 20

// needTools skips the test when a command it uses is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not installed")
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// gptSource builds a GPT disk as sgdisk, mkfs.vfat and mkfs.ext4 make it.
func gptSource(t *testing.T, path string) {
	t.Helper()
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	if _, err := (testdisk.Sample{Size: 64 * mib, ESPSize: 33 * mib, ExtSize: 16 * mib, RandomSize: 4 * mib,
		FilesFrom: "/usr/share/doc", FilesLimit: 2 * mib, Seed: 3}).Build(path); err != nil {
		t.Fatal(err)
	}
}

// mbrSource builds an MBR disk as sfdisk makes it, with boot code, a GRUB
// core image in the gap after the MBR and an extended partition.
func mbrSource(t *testing.T, path string) {
	t.Helper()
	needTools(t, "sfdisk")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(path, 64*mib)
	cmd := exec.Command("sfdisk", "-q", path)
	cmd.Stdin = strings.NewReader("label: dos\nlabel-id: 0x5eed1234\n" +
		"start=2048, size=20480, type=83, bootable\n" +
		"start=22528, size=71680, type=5\n" +
		"start=24576, size=40960, type=83\n" +
		"start=67584, size=26624, type=b\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, out)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(testdisk.RandomBytes(1, 440), 0)               // boot code
	f.WriteAt(testdisk.RandomBytes(2, 300<<10), 512)         // GRUB core image in the gap
	f.WriteAt(testdisk.RandomBytes(3, 4*mib), 2048*512)      // partition 1
	f.WriteAt(testdisk.RandomBytes(4, 2*mib), 24576*512+1e6) // logical partition 5
}

// planted is an old signature on a used disk: what blkid -p finds at an offset.
type planted struct {
	what   string
	offset int64 // where blkid -p --offset probes for it
}

// usedDisk writes a disk of size bytes that a previous user left behind:
// random bytes everywhere, an iso9660 image at its start, an old GPT whose
// partition 2 (8 MiB from the end) holds an ext4 file system, and an md
// 0.90 RAID superblock 64 KiB before the end. It checks with blkid that
// each is there and returns them.
func usedDisk(t *testing.T, path string, size int64) []planted {
	t.Helper()
	needTools(t, "xorriso", "sgdisk", "mkfs.ext4", "blkid", "wipefs")
	dir := t.TempDir()
	if err := os.WriteFile(path, testdisk.RandomBytes(99, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "iso"), 0o755)
	os.WriteFile(filepath.Join(dir, "iso", "README"), []byte("the previous user's CD\n"), 0o644)
	iso := filepath.Join(dir, "old.iso")
	run(t, "xorriso", "-as", "mkisofs", "-quiet", "-V", "OLDISO", "-o", iso, filepath.Join(dir, "iso"))
	ext := filepath.Join(dir, "old.ext4")
	os.WriteFile(ext, nil, 0o644)
	os.Truncate(ext, 4*mib)
	run(t, "mkfs.ext4", "-q", "-F", "-L", "OLDEXT", ext)
	p2 := size - 8*mib
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []struct {
		path string
		off  int64
	}{{iso, 0}, {ext, p2}} {
		b, err := os.ReadFile(img.path)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(b, img.off)
	}
	// md 0.90: the superblock in the last 64 KiB-aligned 64 KiB of the device.
	md := size&^(64<<10-1) - 64<<10
	sb := make([]byte, 4096)
	binary.LittleEndian.PutUint32(sb[0:], 0xa92b4efc) // magic
	binary.LittleEndian.PutUint32(sb[8:], 90)         // minor version
	copy(sb[20:24], testdisk.RandomBytes(5, 4))       // set uuid
	binary.LittleEndian.PutUint32(sb[28:], 1)         // creation time
	binary.LittleEndian.PutUint32(sb[36:], 1)         // raid level
	binary.LittleEndian.PutUint32(sb[40:], 8)         // size
	binary.LittleEndian.PutUint32(sb[44:], 2)         // disks
	copy(sb[52:64], testdisk.RandomBytes(6, 12))      // set uuid 1-3
	f.WriteAt(sb, md)
	f.Close()
	run(t, "sgdisk", "-n", "1:2048:+16M", "-n", fmt.Sprintf("2:%d:+4M", p2/512), path)

	sigs := []planted{{"iso9660", 0}, {"ext4", p2}, {"linux_raid_member", 0}}
	for _, s := range sigs {
		if got := probe(t, path, s.what, s.offset); !strings.Contains(got, s.what) {
			t.Fatalf("used disk: blkid -p --offset %d finds %q; want %s (the test's old signatures are not there)", s.offset, got, s.what)
		}
	}
	listed := strings.Join(signatures(t, path), " ")
	for _, what := range []string{"iso9660@0x8001", "linux_raid_member@", "gpt@0x200"} {
		if !strings.Contains(listed, what) {
			t.Fatalf("used disk: wipefs -n lists %s; want %s among them", listed, what)
		}
	}
	return sigs
}

// probe returns what blkid -p finds of type what at offset ("" for nothing).
func probe(t *testing.T, dev, what string, offset int64) string {
	t.Helper()
	out, _ := exec.Command("blkid", "-p", "-o", "export", "-n", what, "--offset", strconv.FormatInt(offset, 10), dev).CombinedOutput()
	var types []string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "TYPE="); ok {
			types = append(types, v)
		}
		if strings.Contains(l, "ambivalent") {
			types = append(types, l)
		}
	}
	return strings.Join(types, " ")
}

// signatures lists what wipefs -n finds on dev: "TYPE@OFFSET" lines, sorted.
func signatures(t *testing.T, dev string) []string {
	t.Helper()
	out := run(t, "wipefs", "-n", "--noheadings", "--output", "TYPE,OFFSET", dev)
	var s []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			s = append(s, f[0]+"@"+f[1])
		}
	}
	sort.Strings(s)
	return s
}

// captureDisk captures the image at src with its layout.
func captureDisk(t *testing.T, src string) *snapshot.Snapshot {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	layout, extents, err := diskrestore.ReadLayout(f, fi.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if _, err := snapshot.Capture(context.Background(), f, dir, snapshot.CaptureOptions{
		DiskSize: fi.Size(), Layout: layout, Extents: extents, ChunkSize: mib}); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snap.Close() })
	return snap
}

func sha(t *testing.T, path string, size int64) [32]byte {
	t.Helper()
	b := make([]byte, size)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// applyTo restores snap onto dev as the CLI does; an image file keeps its
// bytes (as with --delta), so it is a used target too.
func applyTo(t *testing.T, snap *snapshot.Snapshot, dev string, opts ApplyOptions) *Applied {
	t.Helper()
	tg, err := restore.OpenTargetChecked(dev, snap.Manifest.DiskSize, true, func(size int64, ss int) error {
		return Check(snap.Manifest, size, ss, opts.GrowLast)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.File.Close()
	opts.Jobs, opts.FreshTarget = 2, tg.Fresh
	a, err := Apply(context.Background(), snap, tg.File, opts)
	if err != nil {
		t.Fatalf("restore onto %s: %v", dev, err)
	}
	return a
}

// A used disk (random bytes, an old GPT, iso9660, ext4 and md signatures)
// restored from a snapshot of a same-size GPT or MBR disk reads back equal
// to the source, byte for byte, and wipefs finds only what the source has;
// on a loop device and on a kept image file (a delta restore's target).
func TestUsedDiskBecomesTheSource(t *testing.T) {
	for _, tc := range []struct {
		name   string
		source func(*testing.T, string)
		image  bool
	}{
		{"gpt onto a loop device", gptSource, false},
		{"mbr onto a loop device", mbrSource, false},
		{"gpt onto a kept image file", gptSource, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src.img")
			tc.source(t, src)
			snap := captureDisk(t, src)
			size := snap.Manifest.DiskSize
			used := filepath.Join(dir, "used.img")
			sigs := usedDisk(t, used, size)
			dev := used
			if !tc.image {
				dev = testdisk.Loop(t, used, 0)
			}

			a := applyTo(t, snap, dev, ApplyOptions{})
			if got, want := sha(t, dev, size), sha(t, src, size); got != want {
				t.Errorf("%s after the restore: sha256 %x, source %x; want the whole device equal to the source", dev, got, want)
			}
			if out, err := exec.Command("cmp", src, dev).CombinedOutput(); err != nil {
				t.Errorf("cmp %s %s: %s", src, dev, out)
			}
			if got, want := signatures(t, dev), signatures(t, src); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("wipefs -n %s lists %v; want the source's %v", dev, got, want)
			}
			for _, s := range sigs {
				if got := probe(t, dev, s.what, s.offset); strings.Contains(got, s.what) {
					t.Errorf("blkid -p --offset %d %s still finds the old %s", s.offset, dev, s.what)
				}
			}
			if w := a.Wipe; w == nil || w.Mode != WipeFull || w.Bytes != w.Uncovered || w.Uncovered == 0 || w.Method == "" || w.OldRemains {
				t.Errorf("Applied.Wipe %+v; want full mode, every uncovered byte zeroed, a method named", w)
			}
			t.Logf("%s: %+v", dev, *a.Wipe)
		})
	}
}

// A larger used disk: the restored partitions equal the source's, every
// other byte outside the table areas reads zeros (the old tail too), and
// sgdisk -v finds nothing wrong.
func TestLargerUsedDiskTailReadsZeros(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptSource(t, src)
	snap := captureDisk(t, src)
	const size = 96 * mib
	used := filepath.Join(dir, "used.img")
	sigs := usedDisk(t, used, size)
	dev := testdisk.Loop(t, used, 0)
	applyTo(t, snap, dev, ApplyOptions{Wipe: WipeFull})

	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	var parts []span
	for _, e := range snap.Manifest.Extents {
		if !bytes.Equal(got[e.Offset:e.Offset+e.Length], want[e.Offset:e.Offset+e.Length]) {
			t.Errorf("%s: %s extent at byte %d differs from the source", dev, e.Kind, e.Offset)
		}
		parts = append(parts, span{Off: e.Offset, End: e.Offset + e.Length})
	}
	head, tail := diskrestore.ClearedSpans(size, 512)
	for _, r := range diskrestore.Complement(size, append(parts, span{Off: 0, End: head}, span{Off: tail, End: size})) {
		if !snapshot.IsZero(got[r.Off:r.End]) {
			t.Errorf("%s: bytes %d-%d outside the snapshot do not read as zeros", dev, r.Off, r.End)
		}
	}
	if v := run(t, "sgdisk", "-v", dev); !strings.Contains(v, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", dev, v)
	}
	for _, s := range sigs {
		if p := probe(t, dev, s.what, s.offset); strings.Contains(p, s.what) {
			t.Errorf("blkid -p --offset %d %s still finds the old %s", s.offset, dev, s.what)
		}
	}
}

// Signatures mode zeroes only the ends of the uncovered ranges and of the
// old partitions: no old signature remains, wipefs finds only the source's,
// the partitions equal the source's, and the summary says old bytes remain.
func TestWipeSignaturesLeavesNoOldSignature(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptSource(t, src)
	snap := captureDisk(t, src)
	size := snap.Manifest.DiskSize
	used := filepath.Join(dir, "used.img")
	sigs := usedDisk(t, used, size)
	dev := testdisk.Loop(t, used, 0)
	a := applyTo(t, snap, dev, ApplyOptions{Wipe: WipeSignatures})

	for _, s := range sigs {
		if got := probe(t, dev, s.what, s.offset); strings.Contains(got, s.what) {
			t.Errorf("blkid -p --offset %d %s still finds the old %s", s.offset, dev, s.what)
		}
	}
	if got, want := signatures(t, dev), signatures(t, src); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("wipefs -n %s lists %v; want the source's %v", dev, got, want)
	}
	got, _ := os.ReadFile(dev)
	want, _ := os.ReadFile(src)
	for _, e := range snap.Manifest.Extents {
		if !bytes.Equal(got[e.Offset:e.Offset+e.Length], want[e.Offset:e.Offset+e.Length]) {
			t.Errorf("%s: %s extent at byte %d differs from the source", dev, e.Kind, e.Offset)
		}
	}
	w := a.Wipe
	if w == nil || w.Mode != WipeSignatures || !w.OldRemains || w.Bytes == 0 || w.Bytes >= w.Uncovered {
		t.Fatalf("Applied.Wipe %+v; want signatures mode, part of the uncovered bytes zeroed, old bytes said to remain", w)
	}
	// Between the old ext4 partition's end and the last MiB of the disk
	// the old random bytes are still there: signatures mode did not zero
	// everything.
	old := testdisk.RandomBytes(99, int(size))
	mid := size - 3*mib
	if !bytes.Equal(got[mid:mid+4096], old[mid:mid+4096]) {
		t.Errorf("%s at byte %d: want the old disk's bytes left in signatures mode", dev, mid)
	}
}

// While the data is written the target holds no partition table: at every
// checkpoint (after a flush, what a power cut would leave) neither blkid
// nor Rewind's own reader finds one.
func TestNoPartitionTableWhileDataIsWritten(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptSource(t, src)
	snap := captureDisk(t, src)
	size := snap.Manifest.DiskSize
	used := filepath.Join(dir, "used.img")
	usedDisk(t, used, size)
	dev := testdisk.Loop(t, used, 0)
	checks := 0
	check := func(done []bool) error {
		checks++
		out, _ := exec.Command("blkid", "-p", "-o", "export", dev).CombinedOutput()
		if strings.Contains(string(out), "PTTYPE=") {
			t.Errorf("checkpoint %d: blkid -p %s finds a partition table while data is written:\n%s", checks, dev, out)
		}
		f, err := os.Open(dev)
		if err != nil {
			return err
		}
		defer f.Close()
		if l, _, err := diskrestore.ReadLayout(f, size, 512); err == nil && l.Table != "none" {
			t.Errorf("checkpoint %d: %s holds a %s table while data is written", checks, dev, l.Table)
		}
		return nil
	}
	a := applyTo(t, snap, dev, ApplyOptions{Checkpoint: check, CheckpointInterval: 1})
	if checks < 3 {
		t.Fatalf("%d checkpoints during the restore; want several", checks)
	}
	if !a.LayoutWritten || a.TableCleared {
		t.Errorf("after the restore: layout written %v, table cleared %v; want written, not cleared", a.LayoutWritten, a.TableCleared)
	}
	if out := run(t, "blkid", "-p", "-o", "export", dev); !strings.Contains(out, "PTTYPE=gpt") {
		t.Errorf("after the restore blkid -p %s finds no GPT:\n%s", dev, out)
	}
}
