package diskrestore

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

const MiB = 1 << 20

// putFS makes a file system with mkfs in a temporary file of size bytes
// and copies it into img at off.
func putFS(t *testing.T, img string, off, size int64, mkfs string, args ...string) {
	t.Helper()
	needTools(t, mkfs)
	fs := newImage(t, "fs.img", size)
	run(t, "", mkfs, append(args, fs)...)
	b, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// gptSource is a GPT with chosen GUIDs, names (one not ASCII), attribute
// bits, a gap between partitions, boot code in LBA 0 and data hidden in
// the gap after the entry array and between partitions.
func gptSource(t *testing.T, img string) {
	needTools(t, "sgdisk")
	run(t, "", "sgdisk", "-o", "-U", "11111111-2222-3333-4444-555555555555",
		"-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:EFI System", "-u", "1:AAAAAAAA-0000-4000-8000-000000000001", "-A", "1:set:0",
		"-n", "2:20480:+24M", "-t", "2:8300", "-c", "2:root fs", "-u", "2:AAAAAAAA-0000-4000-8000-000000000002", "-A", "2:set:2", "-A", "2:set:60",
		"-n", "3:0:0", "-t", "3:0700", "-c", "3:Données", "-u", "3:AAAAAAAA-0000-4000-8000-000000000003", "-A", "3:set:63",
		img)
	scribble(t, img, 0, 440, 1)          // boot code in the protective MBR
	scribble(t, img, 40*512, 3000, 2)    // after the entry array
	scribble(t, img, 18432*512, 4096, 3) // between partitions 1 and 2
	scribble(t, img, 2048*512, 64<<10, 4)
	putFS(t, img, 20480*512, 24*MiB, "mkfs.ext4", "-q", "-F", "-L", "rootlabel")
}

// mbrSource is an MBR with a chosen signature, a bootable primary, an
// extended partition with three logical partitions, boot code and a
// GRUB-style core image in the gap after the MBR.
func mbrSource(t *testing.T, img string) {
	needTools(t, "sfdisk")
	run(t, `label: dos
label-id: 0xdeadbeef
start=2048, size=69632, type=c, bootable
start=71680, size=8192, type=83
start=81920, size=40000, type=5
start=83968, size=10000, type=83
start=96256, size=20000, type=82
start=118784, size=2000, type=7
`, "sfdisk", "-q", img)
	putFS(t, img, 2048*512, 69632*512, "mkfs.vfat", "-F", "32", "-s", "1", "-n", "BOOTFAT")
	scribble(t, img, 0, 440, 5)          // boot code
	scribble(t, img, 512, 30000, 6)      // GRUB core.img in the MBR gap
	scribble(t, img, 1500*512, 700, 7)   // more, far enough to be its own extent
	scribble(t, img, 81921*512, 512, 8)  // inside the extended container, after its first EBR
	scribble(t, img, 83968*512, 8192, 9) // logical partition 5
}

func TestRoundTripSameSize(t *testing.T) {
	tests := []struct {
		name      string
		size      int64
		build     func(*testing.T, string)
		table     string
		parts     []int // partition numbers sgdisk -i compares (GPT)
		bootAreas []snapshot.Extent
		fs        map[int][2]string // partition: type, label
	}{
		{
			name: "gpt", size: 64 * MiB, build: gptSource, table: "gpt", parts: []int{1, 2, 3},
			bootAreas: []snapshot.Extent{{Kind: "boot-area", Offset: 0, Length: 440}, {Kind: "boot-area", Offset: 40 * 512, Length: 3072}, {Kind: "boot-area", Offset: 18432 * 512, Length: 4096}},
			fs:        map[int][2]string{2: {"ext4", "rootlabel"}},
		},
		{
			name: "gpt-56-entries-moved-array", size: 32 * MiB, table: "gpt", parts: []int{1, 2},
			build: func(t *testing.T, img string) {
				needTools(t, "sgdisk")
				run(t, "", "sgdisk", "-o", "-S", "56", "-j", "4", "-n", "1:2048:+4M", "-n", "2:0:+4M", "-t", "2:8200", img)
			},
		},
		{
			name: "mbr-logical", size: 64 * MiB, build: mbrSource, table: "mbr",
			bootAreas: []snapshot.Extent{{Kind: "boot-area", Offset: 0, Length: 440}, {Kind: "boot-area", Offset: 512, Length: 59 * 512}, {Kind: "boot-area", Offset: 1500 * 512, Length: 1024}, {Kind: "boot-area", Offset: 81921 * 512, Length: 512}},
			fs:        map[int][2]string{1: {"vfat", "BOOTFAT"}},
		},
		{
			name: "mbr-empty-extended", size: 16 * MiB, table: "mbr",
			build: func(t *testing.T, img string) {
				needTools(t, "sfdisk")
				run(t, "label: dos\nlabel-id: 0x00c0ffee\nstart=2048,size=4096,type=83\nstart=8192,size=8192,type=f\n", "sfdisk", "-q", img)
			},
		},
		{
			name: "no-table", size: 8 * MiB, table: "none",
			build: func(t *testing.T, img string) { scribble(t, img, 0, 8192, 10) },
		},
		{
			name: "superfloppy-fat", size: 16 * MiB, table: "none",
			build: func(t *testing.T, img string) {
				needTools(t, "mkfs.vfat")
				run(t, "", "mkfs.vfat", "-n", "STICK", img)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newImage(t, "src.img", tc.size)
			tc.build(t, src)
			l, extents := readLayoutOf(t, src, 0)
			if l.Table != tc.table {
				t.Fatalf("%s: table %q, want %q", src, l.Table, tc.table)
			}
			checkExtents(t, l, extents)
			for _, want := range tc.bootAreas {
				if !hasExtent(extents, want) {
					t.Errorf("%s: no boot-area extent at byte %d of %d bytes; extents: %+v", tc.name, want.Offset, want.Length, extents)
				}
			}
			for n, want := range tc.fs {
				p := partition(l, n)
				if p == nil || p.FSType != want[0] || p.FSLabel != want[1] {
					t.Errorf("partition %d: fs %+v, want type %q label %q", n, p, want[0], want[1])
				}
			}

			dst := newImage(t, "dst.img", tc.size)
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{}); err != nil {
				t.Fatalf("WriteLayout(%s): %v", dst, err)
			}
			if tc.table != "none" {
				needTools(t, "sfdisk", "sgdisk")
				if got, want := sfdiskDump(t, dst), sfdiskDump(t, src); got != want {
					t.Errorf("sfdisk --dump of the target differs from the source:\n%s", diffLines(got, want))
				}
			}
			if tc.table == "gpt" {
				if got, want := sgdiskPrint(t, dst, tc.parts), sgdiskPrint(t, src, tc.parts); got != want {
					t.Errorf("sgdisk -p/-i of the target differs from the source:\n%s", diffLines(got, want))
				}
				sgdiskVerify(t, dst)
			}
			for _, e := range extents {
				if got, want := sumRange(t, dst, e.Offset, e.Length), sumRange(t, src, e.Offset, e.Length); got != want {
					t.Errorf("%s extent at byte %d (%d bytes): target sha256 %s, want %s", e.Kind, e.Offset, e.Length, got, want)
				}
			}
			// Tables recreated plus extents copied must give the source
			// back byte for byte: nothing non-zero was left out.
			if got, want := sumRange(t, dst, 0, tc.size), sumRange(t, src, 0, tc.size); got != want {
				t.Errorf("whole target image sha256 %s, want the source's %s", got, want)
			}
		})
	}
}

// checkExtents checks the invariants of ReadLayout's extents: sorted,
// disjoint, inside the disk, and no boot area on table bytes.
func checkExtents(t *testing.T, l *snapshot.Layout, extents []snapshot.Extent) {
	t.Helper()
	tl, _, err := TargetLayout(l, l.DiskSize, 0, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writes, err := encodeLayout(tl)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range extents {
		if e.Length <= 0 || e.Offset < 0 || e.Offset+e.Length > l.DiskSize {
			t.Errorf("extent %d %+v lies outside the disk of %d bytes", i, e, l.DiskSize)
		}
		if i > 0 && e.Offset < extents[i-1].Offset+extents[i-1].Length {
			t.Errorf("extent %d %+v overlaps or precedes extent %d %+v", i, e, i-1, extents[i-1])
		}
		for _, w := range writes {
			if e.Offset < w.Table.End && w.Table.Off < e.Offset+e.Length {
				t.Errorf("extent %d %+v overlaps the %s (bytes %d-%d)", i, e, w.What, w.Table.Off, w.Table.End)
			}
		}
	}
}

func hasExtent(extents []snapshot.Extent, want snapshot.Extent) bool {
	for _, e := range extents {
		if e.Kind == want.Kind && e.Offset == want.Offset && e.Length == want.Length {
			return true
		}
	}
	return false
}

func partition(l *snapshot.Layout, n int) *snapshot.Partition {
	for i := range l.Partitions {
		if l.Partitions[i].Number == n {
			return &l.Partitions[i]
		}
	}
	return nil
}

func TestLargerTarget(t *testing.T) {
	needTools(t, "sgdisk", "sfdisk")
	tests := []struct {
		name     string
		build    func(*testing.T, string)
		grow     bool
		lastPart int
	}{
		{"gpt", gptSource, false, 3},
		{"gpt-grow-last", gptSource, true, 3},
		{"mbr", mbrSource, false, 7},
		{"mbr-grow-last", mbrSource, true, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newImage(t, "src.img", 64*MiB)
			tc.build(t, src)
			l, extents := readLayoutOf(t, src, 0)
			const size = 96 * MiB
			dst := newImage(t, "dst.img", size)
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{GrowLast: tc.grow}); err != nil {
				t.Fatalf("WriteLayout(%s): %v", dst, err)
			}
			srcParts := parseDump(t, sfdiskDump(t, src))
			dstParts := parseDump(t, sfdiskDump(t, dst))
			for name, want := range srcParts {
				got := dstParts[name]
				if name == "last-lba" || (tc.grow && (name == "DEV"+strconv.Itoa(tc.lastPart) || (l.Table == "mbr" && name == "DEV3"))) {
					continue
				}
				if got != want {
					t.Errorf("%s %s: got %q, want the source's %q", dst, name, got, want)
				}
			}
			if l.Table == "gpt" {
				sgdiskVerify(t, dst)
				p := run(t, "", "sgdisk", "-p", dst)
				wantLast := size/512 - 34
				if !strings.Contains(p, "last usable sector is "+strconv.Itoa(int(wantLast))) {
					t.Errorf("sgdisk -p %s: want last usable sector %d (backup GPT at the new end):\n%s", dst, wantLast, p)
				}
			}
			last := dstParts["DEV"+strconv.Itoa(tc.lastPart)]
			wantEnd := int64(size/512 - 1)
			if l.Table == "gpt" {
				wantEnd = size/512 - 34
			}
			gotEnd := dumpEnd(last)
			if tc.grow && gotEnd != wantEnd {
				t.Errorf("%s: partition %d ends at sector %d after --grow-last, want %d (%s)", dst, tc.lastPart, gotEnd, wantEnd, last)
			}
			if !tc.grow && gotEnd == wantEnd {
				t.Errorf("%s: partition %d grew without --grow-last", dst, tc.lastPart)
			}
			for _, e := range extents {
				if got, want := sumRange(t, dst, e.Offset, e.Length), sumRange(t, src, e.Offset, e.Length); got != want {
					t.Errorf("%s extent at byte %d: target sha256 %s, want %s", e.Kind, e.Offset, got, want)
				}
			}
		})
	}
}

// parseDump maps the lines of an sfdisk dump to their values: "label-id"
// -> "0x...", "DEV1" -> "start=..., size=..., type=...".
func parseDump(t *testing.T, dump string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(dump, "\n") {
		if k, v, ok := strings.Cut(line, " : "); ok {
			m[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), " ")
		} else if k, v, ok := strings.Cut(line, ": "); ok {
			m[k] = v
		}
	}
	return m
}

// dumpEnd returns the last sector of a partition line of an sfdisk dump.
func dumpEnd(line string) int64 {
	var start, size int64
	for _, f := range strings.Split(line, ",") {
		f = strings.TrimSpace(f)
		if v, ok := strings.CutPrefix(f, "start= "); ok {
			start = atoi64(v)
		} else if v, ok := strings.CutPrefix(f, "start="); ok {
			start = atoi64(v)
		}
		if v, ok := strings.CutPrefix(f, "size= "); ok {
			size = atoi64(v)
		} else if v, ok := strings.CutPrefix(f, "size="); ok {
			size = atoi64(v)
		}
	}
	return start + size - 1
}

func atoi64(s string) int64 {
	var n int64
	for _, c := range strings.TrimSpace(s) {
		n = n*10 + int64(c-'0')
	}
	return n
}

func TestSmallerTarget(t *testing.T) {
	needTools(t, "sgdisk", "sfdisk")
	tests := []struct {
		name    string
		size    int64
		wantErr string // "" means the restore must succeed
	}{
		{"fits", 48 * MiB, ""},
		{"too-small", 24 * MiB, "partition 2 (sectors 20480-69631"},
		{"fits-exactly", 34*MiB + 33*512, ""},
		{"too-small-by-one-sector", 34*MiB + 32*512, "partition 2 (sectors 20480-69631, 24.0 MiB) does not fit"},
	}
	src := newImage(t, "src.img", 64*MiB)
	run(t, "", "sgdisk", "-o", "-n", "1:2048:+8M", "-n", "2:20480:+24M", "-c", "2:data", src)
	scribble(t, src, 60*MiB, 4096, 11)      // a boot area past a smaller disk's end
	scribble(t, src, 48*MiB-8192, 4096, 13) // a boot area where a 48 MiB disk's backup GPT goes
	scribble(t, src, 20480*512, 4096, 12)
	l, extents := readLayoutOf(t, src, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := newImage(t, "dst.img", tc.size)
			err := restoreOnto(t, src, dst, l, extents, WriteOptions{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("WriteLayout onto %d bytes: error %v, want one naming %q", tc.size, err, tc.wantErr)
				}
				t.Logf("refused as it should: %v", err)
				if got := sumRange(t, dst, 0, tc.size); got != sumRange(t, newImage(t, "zero.img", tc.size), 0, tc.size) {
					t.Errorf("%s was written to although the layout does not fit", dst)
				}
				return
			}
			if err != nil {
				t.Fatalf("WriteLayout onto %d bytes: %v", tc.size, err)
			}
			sgdiskVerify(t, dst)
			for _, n := range []string{"1", "2"} {
				got, want := run(t, "", "sgdisk", "-i", n, dst), run(t, "", "sgdisk", "-i", n, src)
				if got != want {
					t.Errorf("sgdisk -i %s differs:\n%s", n, diffLines(got, want))
				}
			}
		})
	}
}

func TestSectorSizeMismatch(t *testing.T) {
	tests := []struct {
		layoutSS, diskSS int
	}{{512, 4096}, {4096, 512}}
	for _, tc := range tests {
		l := &snapshot.Layout{Table: "gpt", LogicalSectorSize: tc.layoutSS, DiskSize: 64 * MiB, Partitions: []snapshot.Partition{{Number: 1, Start: 256, Size: 1024, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}}}
		_, _, err := TargetLayout(l, 64*MiB, tc.diskSS, WriteOptions{})
		if err == nil || !strings.Contains(err.Error(), "sectors") {
			t.Errorf("layout with %d-byte sectors onto a %d-byte-sector disk: error %v, want a refusal", tc.layoutSS, tc.diskSS, err)
		}
	}
}

func TestClearTable(t *testing.T) {
	needTools(t, "sgdisk", "sfdisk")
	for _, name := range []string{"gpt", "mbr"} {
		t.Run(name, func(t *testing.T) {
			img := newImage(t, name+".img", 64*MiB)
			if name == "gpt" {
				gptSource(t, img)
			} else {
				mbrSource(t, img)
			}
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := ClearTable(f); err != nil {
				t.Fatal(err)
			}
			l, _, err := ReadLayout(f, 64*MiB, 512)
			if err != nil || l.Table != "none" {
				t.Errorf("after ClearTable, ReadLayout(%s) = %+v, %v; want table none", img, l, err)
			}
			out, _ := runAllowFail("sfdisk", "--dump", img)
			if strings.Contains(out, "label:") {
				t.Errorf("after ClearTable, sfdisk still finds a table on %s:\n%s", img, out)
			}
		})
	}
}

func runAllowFail(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestDirtyTarget restores onto disks that held another table before: no
// trace of the old one may confuse the tools afterwards.
func TestDirtyTarget(t *testing.T) {
	needTools(t, "sgdisk", "sfdisk", "blkid")
	tests := []struct {
		name   string
		build  func(*testing.T, string)
		dirty  func(*testing.T, string)
		pttype string
	}{
		{"mbr-over-gpt", mbrSource, func(t *testing.T, img string) {
			run(t, "", "sgdisk", "-o", "-n", "1:2048:+40M", img)
		}, "dos"},
		{"plain-mbr-over-gpt", func(t *testing.T, img string) {
			run(t, "label: dos\nlabel-id: 0x01020304\nstart=2048,size=4096,type=83\n", "sfdisk", "-q", img)
		}, func(t *testing.T, img string) {
			run(t, "", "sgdisk", "-o", "-n", "1:2048:+40M", img)
		}, "dos"},
		{"gpt-over-mbr", gptSource, func(t *testing.T, img string) {
			run(t, "label: dos\nstart=63,size=100000,type=7,bootable\n", "sfdisk", "-q", img)
		}, "gpt"},
		{"gpt-over-larger-gpt", gptSource, func(t *testing.T, img string) {
			run(t, "", "sgdisk", "-o", "-n", "1:34:+90M", "-u", "1:CCCCCCCC-0000-4000-8000-000000000001", img)
		}, "gpt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newImage(t, "src.img", 64*MiB)
			tc.build(t, src)
			l, extents := readLayoutOf(t, src, 0)
			size := int64(64 * MiB)
			if tc.name == "gpt-over-larger-gpt" {
				size = 128 * MiB
			}
			dst := newImage(t, "dst.img", size)
			tc.dirty(t, dst)
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{}); err != nil {
				t.Fatalf("WriteLayout(%s): %v", dst, err)
			}
			if got := strings.TrimSpace(run(t, "", "blkid", "-p", "-o", "value", "-s", "PTTYPE", dst)); got != tc.pttype {
				t.Errorf("blkid -p %s: PTTYPE %q, want %q", dst, got, tc.pttype)
			}
			src1, dst1 := parseDump(t, sfdiskDump(t, src)), parseDump(t, sfdiskDump(t, dst))
			for k, want := range src1 {
				if k != "last-lba" && dst1[k] != want {
					t.Errorf("%s: sfdisk --dump %s = %q, want %q", dst, k, dst1[k], want)
				}
			}
			if tc.pttype == "gpt" {
				sgdiskVerify(t, dst)
			} else if out, _ := runAllowFail("sgdisk", "-p", dst); strings.Contains(out, "Invalid partition data") || strings.Contains(out, "GPT: present") {
				t.Errorf("sgdisk -p %s still finds the old GPT beside the new MBR:\n%s", dst, out)
			}
		})
	}
}

// ProbeFS against file systems made by the real tools.
func TestProbeFS(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		mkfs  []string
		want  FS
		mount string
	}{
		{"vfat", []string{"mkfs.vfat", "-F", "32", "-n", "REWIND", "-i", "1234ABCD"}, FS{Type: "vfat", Label: "REWIND", UUID: "1234-ABCD"}, "vfat"},
		{"ext4", []string{"mkfs.ext4", "-q", "-L", "root", "-U", "6f0b1d4e-2b1c-4f7a-9d6e-0a1b2c3d4e5f"}, FS{Type: "ext4", Label: "root", UUID: "6f0b1d4e-2b1c-4f7a-9d6e-0a1b2c3d4e5f"}, "ext4"},
		{"ext2", []string{"mkfs.ext2", "-q", "-L", "old"}, FS{Type: "ext2", Label: "old"}, "ext4"},
	} {
		img := filepath.Join(dir, tc.name+".img")
		os.WriteFile(img, nil, 0o644)
		os.Truncate(img, 64<<20)
		if out, err := exec.Command(tc.mkfs[0], append(tc.mkfs[1:], img)...).CombinedOutput(); err != nil {
			t.Skipf("%s: %v %s", tc.mkfs[0], err, out)
		}
		f, _ := os.Open(img)
		got := ProbeFS(f)
		f.Close()
		if got.Type != tc.want.Type || got.Label != tc.want.Label || tc.want.UUID != "" && got.UUID != tc.want.UUID || got.MountType() != tc.mount {
			t.Errorf("%s: got %+v (mount %q), want %+v (mount %q)", tc.name, got, got.MountType(), tc.want, tc.mount)
		}
	}
	if got := ProbeFS(bytes.NewReader(make([]byte, 64<<10))); got != (FS{}) {
		t.Errorf("zeros: got %+v", got)
	}
}

// ebrEntry is one entry of a hand-made MBR or EBR, start relative as the
// format wants it.
type ebrEntry struct {
	slot        int
	status, typ byte
	start, size uint32
	chs         []byte // start and end CHS (6 bytes); nil: 0xfe 0xff 0xff twice
}

// putSector writes an MBR-style sector at sector lba of img: the entries
// and the 0x55AA mark.
func putSector(t *testing.T, img string, lba int64, ents ...ebrEntry) {
	t.Helper()
	b := make([]byte, 512)
	for _, e := range ents {
		p := b[446+16*e.slot:]
		p[0], p[4] = e.status, e.typ
		chs := e.chs
		if chs == nil {
			chs = []byte{0xfe, 0xff, 0xff, 0xfe, 0xff, 0xff}
		}
		copy(p[1:4], chs[:3])
		copy(p[5:8], chs[3:])
		binary.LittleEndian.PutUint32(p[8:], e.start)
		binary.LittleEndian.PutUint32(p[12:], e.size)
	}
	b[510], b[511] = 0x55, 0xaa
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b[:446], lba*512); err != nil { // keep what is in front of the table
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, lba*512); err != nil {
		t.Fatal(err)
	}
}

// partxList is `partx -g -o NR,START,SECTORS` of an image: libblkid's
// reading of the table, which follows the kernel's rules for EBR chains.
func partxList(t *testing.T, img string) string {
	t.Helper()
	return strings.Join(strings.Fields(run(t, "", "partx", "-g", "-o", "NR,START,SECTORS", img)), " ")
}

// TestMBRChainShapes captures EBR chains of the shapes the kernel accepts,
// made by hand, by sfdisk and by fdisk, restores them onto a blank disk and
// compares LBA 0 and every EBR byte for byte, the whole image by hash, and
// what sfdisk and partx (libblkid, the kernel's rules) read from both.
func TestMBRChainShapes(t *testing.T) {
	needTools(t, "sfdisk", "partx")
	const size = 64 * MiB
	// A 0x0f extended partition at 2048 of 100000 sectors.
	ext := ebrEntry{slot: 1, typ: 0x0f, start: 2048, size: 100000}
	tests := []struct {
		name  string
		build func(t *testing.T, img string)
		want  string // partition: start+size, as ReadLayout numbers them
	}{
		{"sfdisk", mbrSource, "1:2048+69632 2:71680+8192 3:81920+40000 5:83968+10000 6:96256+20000 7:118784+2000"},
		{"fdisk", func(t *testing.T, img string) {
			needTools(t, "fdisk")
			run(t, "o\nn\np\n1\n2048\n+10M\nn\ne\n2\n\n\nn\nl\n\n+5M\nn\nl\n\n+5M\nt\n5\n7\nw\n", "fdisk", img)
		}, "1:2048+20480 2:22528+108544 5:24576+10240 6:36864+10240"},
		{"extended-without-EBR", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x83, start: 64, size: 1000}, ext)
			scribble(t, img, 2048*512, 512, 7) // no 0x55AA: no logical partitions, kept as it is
		}, "1:64+1000 2:2048+100000"},
		{"empty-first-EBR-links-on", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x83, start: 64, size: 1000}, ext)
			putSector(t, img, 2048, ebrEntry{slot: 1, typ: 0x05, start: 2048, size: 4096})
			putSector(t, img, 4096, ebrEntry{slot: 0, typ: 0x83, start: 1, size: 2047}, ebrEntry{slot: 1, typ: 0x05, start: 6144, size: 2048})
			putSector(t, img, 8192, ebrEntry{slot: 0, typ: 0x07, start: 2048, size: 1000})
		}, "1:64+1000 2:2048+100000 5:4097+2047 6:10240+1000"},
		{"logical-in-slot-2-link-in-slot-1", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x83, start: 64, size: 1000}, ext)
			putSector(t, img, 2048, ebrEntry{slot: 0, typ: 0x85, start: 4096, size: 8192}, ebrEntry{slot: 1, typ: 0x83, start: 64, size: 2000})
			putSector(t, img, 6144, ebrEntry{slot: 0, typ: 0x05, start: 10240, size: 3000}, ebrEntry{slot: 1, typ: 0x82, start: 100, size: 4000, status: 0x80})
			putSector(t, img, 12288, ebrEntry{slot: 1, typ: 0x83, start: 8, size: 800})
		}, "1:64+1000 2:2048+100000 5:2112+2000 6:6244+4000 7:12296+800"},
		{"linux-extended-0x85-two-data-entries", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 2, typ: 0x85, start: 2048, size: 100000}, ebrEntry{slot: 3, typ: 0x0c, start: 120000, size: 1000, status: 0x80})
			// OS/2 style: data in slots 1 and 3, the link in slot 2.
			putSector(t, img, 2048, ebrEntry{slot: 0, typ: 0x83, start: 16, size: 1000}, ebrEntry{slot: 1, typ: 0x0f, start: 20000, size: 5000}, ebrEntry{slot: 2, typ: 0x83, start: 2000, size: 1000})
			putSector(t, img, 22048, ebrEntry{slot: 0, typ: 0x83, start: 32, size: 4000})
		}, "3:2048+100000 4:120000+1000 5:2064+1000 6:4048+1000 7:22080+4000"},
	}
	// 300 logical partitions, each of 64 sectors behind its EBR: a long
	// chain, not a loop.
	var long []string
	long = append(long, "1:2048+100000")
	for i := range 300 {
		long = append(long, fmt.Sprintf("%d:%d+64", 5+i, 2048+i*128+64))
	}
	tests = append(tests, struct {
		name  string
		build func(t *testing.T, img string)
		want  string
	}{"300-logicals", func(t *testing.T, img string) {
		putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x05, start: 2048, size: 100000})
		for i := range 300 {
			e := []ebrEntry{{slot: 0, typ: 0x83, start: 64, size: 64}}
			if i < 299 {
				e = append(e, ebrEntry{slot: 1, typ: 0x05, start: uint32(i+1) * 128, size: 128})
			}
			putSector(t, img, 2048+int64(i)*128, e...)
		}
	}, strings.Join(long, " ")})

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newImage(t, "src.img", size)
			tc.build(t, src)
			l, extents := readLayoutOf(t, src, 0)
			var got []string
			for _, p := range l.Partitions {
				got = append(got, fmt.Sprintf("%d:%d+%d", p.Number, p.Start, p.Size))
				if !p.Extended {
					scribble(t, src, int64(p.Start)*512, 512, uint64(p.Number))
				}
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Fatalf("%s: partitions %s, want %s", src, g, tc.want)
			}
			l, extents = readLayoutOf(t, src, 0) // again, with the data
			if len(tc.want) < 400 {
				// libblkid follows the kernel's rules (sfdisk does not
				// show a second data entry of one EBR).
				var want []string
				for _, p := range l.Partitions {
					want = append(want, fmt.Sprintf("%d %d %d", p.Number, p.Start, p.Size))
				}
				if g := partxList(t, src); g != strings.Join(want, " ") {
					t.Errorf("partx -g %s: %s, want Rewind's reading %s", src, g, strings.Join(want, " "))
				}
			}
			dst := newImage(t, "dst.img", size)
			if os.Geteuid() == 0 {
				dst = testdisk.Loop(t, dst, 512) // a block device, as restore meets it
			}
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{}); err != nil {
				t.Fatalf("restore onto %s: %v", dst, err)
			}
			sectors := []int64{0}
			for _, tb := range l.MBRTables {
				if tb.Sector != 0 {
					sectors = append(sectors, int64(tb.Sector))
				}
			}
			if len(sectors) < 2 && strings.Contains(tc.want, " 5:") {
				t.Fatalf("%s: no EBR recorded: %+v", src, l.MBRTables)
			}
			for _, s := range sectors {
				if got, want := sumRange(t, dst, s*512, 512), sumRange(t, src, s*512, 512); got != want {
					t.Errorf("%s: sector %d (MBR/EBR) differs from the source's", dst, s)
				}
			}
			if got, want := strings.ReplaceAll(sfdiskDump(t, dst), "DEVp", "DEV"), sfdiskDump(t, src); got != want {
				t.Errorf("sfdisk --dump of the target differs from the source:\n%s", diffLines(got, want))
			}
			if got, want := partxList(t, dst), partxList(t, src); got != want {
				t.Errorf("partx -g %s: %s, want the source's %s", dst, got, want)
			}
			if got, want := sumRange(t, dst, 0, size), sumRange(t, src, 0, size); got != want {
				t.Errorf("target image sha256 %s, want the source's %s", got, want)
			}
		})
	}
}

// TestProtectiveMBRKept restores GPT disks whose LBA 0 is not the plain
// protective MBR sgdisk writes: a hybrid MBR (sgdisk -h), and a protective
// MBR with the boot flag set, bytes 444-445 used and an end CHS of
// 0xfeffff. On a disk of the same size LBA 0 comes back byte for byte; on
// a larger one only the 0xEE entry's size (and its computed CHS) follows
// the new size.
func TestProtectiveMBRKept(t *testing.T) {
	needTools(t, "sgdisk", "sfdisk")
	tests := []struct {
		name  string
		build func(t *testing.T, img string)
	}{
		{"hybrid", func(t *testing.T, img string) {
			gptSource(t, img)
			run(t, "", "sgdisk", "-h", "1:2", img)
		}},
		{"boot-flag-reserved-odd-chs", func(t *testing.T, img string) {
			gptSource(t, img)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteAt([]byte{0x5a, 0xa5, 0x80}, 444) // bytes 444-445, then the 0xEE entry's status
			f.WriteAt([]byte{0xfe, 0xff, 0xff}, 446+5)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newImage(t, "src.img", 64*MiB)
			tc.build(t, src)
			srcLBA0 := readSector(t, src, 0)
			l, extents := readLayoutOf(t, src, 0)
			if l.Table != "gpt" || len(l.MBRTables) != 1 {
				t.Fatalf("%s: table %q with MBR tables %+v, want gpt with the protective MBR recorded", src, l.Table, l.MBRTables)
			}
			dst := newImage(t, "dst.img", 64*MiB)
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if got := readSector(t, dst, 0); !bytes.Equal(got, srcLBA0) {
				t.Errorf("%s: LBA 0 differs from the source's:\n got  %x\n want %x", dst, got[440:], srcLBA0[440:])
			}
			if got, want := sumRange(t, dst, 0, 64*MiB), sumRange(t, src, 0, 64*MiB); got != want {
				t.Errorf("whole target image sha256 %s, want the source's %s", got, want)
			}
			if got, want := sgdiskPrint(t, dst, []int{1, 2, 3}), sgdiskPrint(t, src, []int{1, 2, 3}); got != want {
				t.Errorf("sgdisk -p/-i of the target differs from the source:\n%s", diffLines(got, want))
			}

			big := newImage(t, "big.img", 96*MiB)
			if err := restoreOnto(t, src, big, l, extents, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			got, want := readSector(t, big, 0), bytes.Clone(srcLBA0)
			for i, e := range rawMBREntries(want) {
				if e.Type == mbrTypeProtected && e.Start+e.Size-1 == 64*MiB/512-1 { // a hybrid's 0xEE entry covers the GPT only
					p := want[446+16*i:]
					binary.LittleEndian.PutUint32(p[12:], 96*MiB/512-1)
					if bytes.Equal(p[5:8], chs(64*MiB/512-1)) {
						copy(p[5:8], chs(96*MiB/512-1))
					}
				}
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s (larger): LBA 0 from byte 440:\n got  %x\n want %x", big, got[440:], want[440:])
			}
			sgdiskVerify(t, big)
		})
	}
}

func readSector(t *testing.T, img string, lba int64) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, lba*512); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeLayoutBytes renders l's table sectors with the encoder, without
// TargetLayout's checks, into img: a way to make tables no tool would.
func writeLayoutBytes(t *testing.T, img string, l *snapshot.Layout) {
	t.Helper()
	writes, err := encodeLayout(l)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range writes {
		if _, err := f.WriteAt(w.Data, w.Off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHostileTables reads tables that are damaged or made to mislead:
// each is refused with an error that names the problem, or read with a
// note that says what was repaired.
func TestHostileTables(t *testing.T) {
	const size = 16 * MiB
	linux := "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	gpt := func(parts ...snapshot.Partition) *snapshot.Layout {
		return &snapshot.Layout{Table: "gpt", LogicalSectorSize: 512, DiskSize: size, PartitionEntries: 128, PartitionEntriesLBA: 2,
			FirstUsableLBA: 34, LastUsableLBA: size/512 - 34, DiskGUID: "11111111-2222-3333-4444-555555555555", Partitions: parts}
	}
	tests := []struct {
		name              string
		build             func(t *testing.T, img string)
		wantErr, wantNote string
	}{
		{"gpt-partition-at-2^55", func(t *testing.T, img string) {
			writeLayoutBytes(t, img, gpt(snapshot.Partition{Number: 1, Start: 1 << 55, Size: 8, Type: linux}))
		}, "partition 1 (start sector 36028797018963968, 8 sectors) lies outside the disk", ""},
		{"gpt-partition-wraps", func(t *testing.T, img string) {
			writeLayoutBytes(t, img, gpt(snapshot.Partition{Number: 1, Start: 2048, Size: 1<<64 - 2040, Type: linux}))
		}, "ends (sector 7) before it starts (sector 2048)", ""},
		{"gpt-partition-on-entries", func(t *testing.T, img string) {
			writeLayoutBytes(t, img, gpt(snapshot.Partition{Number: 1, Start: 20, Size: 2000, Type: linux}))
		}, "lies on the partition table's own sectors", ""},
		{"gpt-partition-before-first-usable", func(t *testing.T, img string) {
			l := gpt(snapshot.Partition{Number: 1, Start: 40, Size: 2000, Type: linux})
			l.FirstUsableLBA = 2048 // restore refuses this; so must capture
			writeLayoutBytes(t, img, l)
		}, "could not be restored even onto a disk of its own size: partition 1 starts at sector 40, before the first usable sector 2048", ""},
		{"gpt-primary-entries-far-away", func(t *testing.T, img string) {
			l := gpt(snapshot.Partition{Number: 1, Start: 2048, Size: 2048, Type: linux})
			writeLayoutBytes(t, img, l)
			l.PartitionEntriesLBA = 1 << 60 // the primary header points far away; the backup is good
			w, _ := encodeLayout(l)
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			f.WriteAt(w[2].Data, w[2].Off) // primary header only
			f.Close()
		}, "", "the primary GPT is damaged"},
		{"mbr-ebr-loop", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x05, start: 2048, size: 20000})
			putSector(t, img, 2048, ebrEntry{slot: 0, typ: 0x83, start: 64, size: 100}, ebrEntry{slot: 1, typ: 0x05, start: 4096, size: 1000})
			putSector(t, img, 6144, ebrEntry{slot: 0, typ: 0x83, start: 64, size: 100}, ebrEntry{slot: 1, typ: 0x05, start: 0, size: 1000})
		}, "the EBR at sector 6144 links back to sector 2048", ""},
		{"mbr-ebr-outside-container", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x05, start: 2048, size: 4096})
			putSector(t, img, 2048, ebrEntry{slot: 0, typ: 0x83, start: 64, size: 100}, ebrEntry{slot: 1, typ: 0x05, start: 10000, size: 1000})
		}, "EBR at sector 12048 (linked from sector 2048) lies outside extended partition 1", ""},
		{"mbr-logical-past-disk", func(t *testing.T, img string) {
			putSector(t, img, 0, ebrEntry{slot: 0, typ: 0x05, start: 2048, size: 4096})
			putSector(t, img, 2048, ebrEntry{slot: 0, typ: 0x83, start: 0xfff00000, size: 100})
		}, "partition 5 (start sector 4293920768, 100 sectors) lies outside the disk", ""},
		{"no-table", func(t *testing.T, img string) { scribble(t, img, 4096, 100, 3) }, "", "no partition table was recognised"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := newImage(t, "hostile.img", size)
			tc.build(t, img)
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			l, _, err := ReadLayout(f, size, 512)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ReadLayout(%s): error %v, want one containing %q", img, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadLayout(%s): %v", img, err)
			}
			if !strings.Contains(strings.Join(l.Notes, "\n"), tc.wantNote) {
				t.Errorf("ReadLayout(%s): notes %q, want one containing %q", img, l.Notes, tc.wantNote)
			}
		})
	}
}

// FuzzReadLayout reads tables made of fuzzed bytes at the start of a 1 MiB
// disk: ReadLayout must not panic, and whatever it accepts, a manifest
// may hold and restore can write (capture never writes a snapshot that
// restore refuses).
func FuzzReadLayout(f *testing.F) {
	const size = 1 * MiB
	seed := func(l *snapshot.Layout) {
		w, err := encodeLayout(l)
		if err != nil {
			f.Fatal(err)
		}
		b := make([]byte, 64<<10)
		for _, x := range w {
			if x.Off+int64(len(x.Data)) <= int64(len(b)) {
				copy(b[x.Off:], x.Data)
			}
		}
		f.Add(b)
	}
	seed(&snapshot.Layout{Table: "mbr", LogicalSectorSize: 512, DiskSize: size, MBRSignature: "0x01020304", Partitions: []snapshot.Partition{
		{Number: 1, Start: 8, Size: 100, Type: "0x83", Bootable: true}, {Number: 2, Start: 200, Size: 1000, Type: "0x05", Extended: true},
		{Number: 5, Start: 210, Size: 20, Type: "0x83", Logical: true, EBR: 200}, {Number: 6, Start: 300, Size: 20, Type: "0x07", Logical: true, EBR: 290}}})
	seed(&snapshot.Layout{Table: "gpt", LogicalSectorSize: 512, DiskSize: size, PartitionEntries: 128, PartitionEntriesLBA: 2, FirstUsableLBA: 34, LastUsableLBA: size/512 - 34,
		Partitions: []snapshot.Partition{{Number: 1, Start: 40, Size: 60, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}}})
	f.Fuzz(func(t *testing.T, head []byte) { checkReadLayoutSafe(t, head, size) })
}

// checkReadLayoutSafe reads the table in head at the start of a disk of
// size bytes: whatever ReadLayout accepts, a manifest may hold, and
// TargetLayout and the encoder take.
func checkReadLayoutSafe(t *testing.T, head []byte, size int64) {
	t.Helper()
	{
		disk := make([]byte, size)
		copy(disk, head)
		l, extents, err := ReadLayout(bytes.NewReader(disk), size, 0)
		if err != nil {
			return
		}
		if _, err := snapshot.ParseManifest(manifestFor(t, l, extents)); err != nil {
			t.Fatalf("ReadLayout accepted a layout that a manifest may not hold: %v\nlayout %+v", err, l)
		}
		tl, _, err := TargetLayout(l, size, 0, WriteOptions{})
		if err != nil {
			t.Fatalf("ReadLayout accepted a layout that TargetLayout refuses: %v", err)
		}
		if _, err := encodeLayout(tl); err != nil {
			t.Fatalf("ReadLayout accepted a layout that cannot be encoded: %v", err)
		}
	}
}

// TestReadLayoutRandomTables mutates valid MBR and GPT sectors at random
// (the fuzzer's job, done here with a fixed seed so that every run of
// make test covers it) and checks each with checkReadLayoutSafe.
func TestReadLayoutRandomTables(t *testing.T) {
	const size = 1 * MiB
	base := map[string][]byte{}
	for name, l := range map[string]*snapshot.Layout{
		"mbr": {Table: "mbr", LogicalSectorSize: 512, DiskSize: size, MBRSignature: "0x01020304", Partitions: []snapshot.Partition{
			{Number: 1, Start: 8, Size: 100, Type: "0x83"}, {Number: 2, Start: 200, Size: 1000, Type: "0x05", Extended: true},
			{Number: 5, Start: 210, Size: 20, Type: "0x83", Logical: true, EBR: 200}, {Number: 6, Start: 300, Size: 20, Type: "0x07", Logical: true, EBR: 290}}},
		"gpt": {Table: "gpt", LogicalSectorSize: 512, DiskSize: size, PartitionEntries: 128, PartitionEntriesLBA: 2, FirstUsableLBA: 34, LastUsableLBA: size/512 - 34,
			Partitions: []snapshot.Partition{{Number: 1, Start: 40, Size: 60, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}}},
	} {
		w, err := encodeLayout(l)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 160<<10)
		for _, x := range w {
			if x.Off+int64(len(x.Data)) <= int64(len(b)) {
				copy(b[x.Off:], x.Data)
			}
		}
		base[name] = b
	}
	r := rand.New(rand.NewPCG(10, 10))
	for i := range 500 {
		name := "mbr"
		if i%2 == 1 {
			name = "gpt"
		}
		b := bytes.Clone(base[name])
		for range 1 + r.IntN(4) {
			// Mostly the entry fields: table bytes of LBA 0 and the EBRs,
			// the GPT header and the first entries.
			offs := []int{446 + r.IntN(64), 512 + r.IntN(92), 1024 + r.IntN(256), 200*512 + 446 + r.IntN(64), 290*512 + 446 + r.IntN(64)}
			b[offs[r.IntN(len(offs))]] = byte(r.Uint32())
		}
		if name == "gpt" && i%4 == 1 {
			// Keep the CRCs right half of the time, so that the mutated
			// header and entries are read, not refused for their CRC.
			arr := b[1024 : 1024+128*128]
			binary.LittleEndian.PutUint32(b[512+88:], crc32.ChecksumIEEE(arr))
			clear(b[512+16 : 512+20])
			binary.LittleEndian.PutUint32(b[512+16:], crc32.ChecksumIEEE(b[512:512+92]))
		}
		t.Run(fmt.Sprintf("%s-%d", name, i), func(t *testing.T) { checkReadLayoutSafe(t, b, size) })
	}
}

// TestAcceptedManifestsAreSafe mutates the manifests of real captures (the
// recorded MBR tables byte by byte, partitions moved with their extents)
// and checks that whatever snapshot.ParseManifest accepts, the restore side
// handles without a panic onto disks of the same, a larger and a smaller
// size, and that any layout TargetLayout accepts encodes to tables that
// decode to its partitions (TargetLayout checks that itself).
func TestAcceptedManifestsAreSafe(t *testing.T) {
	needTools(t, "sgdisk", "sfdisk")
	hybrid := func(t *testing.T, img string) {
		gptSource(t, img)
		run(t, "", "sgdisk", "-h", "1:2", img)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for name, build := range map[string]func(*testing.T, string){"gpt-hybrid": hybrid, "mbr": mbrSource} {
		src := newImage(t, name+".img", 64*MiB)
		build(t, src)
		l, extents := readLayoutOf(t, src, 0)
		base, err := snapshot.ParseManifest(manifestFor(t, l, extents))
		if err != nil {
			t.Fatal(err)
		}
		accepted, restorable := 0, 0
		for i := range 400 {
			data, _ := base.Marshal()
			m, _ := snapshot.ParseManifest(data) // a deep copy
			ml := m.Layout
			switch k := r.IntN(3); {
			case k == 0 && len(ml.MBRTables) > 0:
				tb := &ml.MBRTables[r.IntN(len(ml.MBRTables))]
				b, _ := hex.DecodeString(tb.Entries)
				b[r.IntN(len(b))] = byte(r.Uint32())
				tb.Entries = hex.EncodeToString(b)
			case k == 1:
				p := &ml.Partitions[r.IntN(len(ml.Partitions))]
				p.Size = uint64(int64(p.Size) + int64(r.IntN(4096)) - 2048)
				for j := range m.Extents {
					if m.Extents[j].Partition == p.Number && m.Extents[j].Kind == snapshot.ExtentPartition {
						m.Extents[j].Length = int64(p.Size) * 512
					}
				}
			default:
				ml.MBRReserved = fmt.Sprintf("%04x", r.IntN(1<<16))
			}
			m.Chunks, m.Segments = nil, nil
			data = manifestFor(t, ml, m.Extents)
			pm, err := snapshot.ParseManifest(data)
			if err != nil {
				continue
			}
			accepted++
			for _, size := range []int64{64 * MiB, 96 * MiB, 40 * MiB} {
				for _, grow := range []bool{false, true} {
					tl, _, err := TargetLayout(pm.Layout, size, 0, WriteOptions{GrowLast: grow})
					if err != nil {
						continue
					}
					if size == 64*MiB && !grow {
						restorable++
					}
					if _, err := encodeLayout(tl); err != nil {
						t.Errorf("%s mutant %d onto %d bytes: TargetLayout accepted a layout the encoder refuses: %v", name, i, size, err)
					}
					FitExtents(tl, pm.Extents)
				}
			}
		}
		t.Logf("%s: %d of 400 mutants accepted by ParseManifest, %d restorable onto the same size", name, accepted, restorable)
		if accepted == 0 {
			t.Errorf("%s: no mutant was accepted: the test checks nothing", name)
		}
	}
}
