package diskrestore

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// Test4KnRoundTrip recreates layouts of a 4Kn disk (a loop device with
// 4096-byte logical sectors) on another 4Kn disk and compares what sgdisk
// and sfdisk say about both, and refuses to cross sector sizes.
func Test4KnRoundTrip(t *testing.T) {
	needRoot(t)
	needTools(t, "losetup", "sgdisk", "sfdisk")
	tests := []struct {
		name  string
		build func(t *testing.T, dev string)
		table string
		parts []int
	}{
		{
			name: "gpt", table: "gpt", parts: []int{1, 2},
			build: func(t *testing.T, dev string) {
				run(t, "", "sgdisk", "-o", "-U", "44444444-2222-3333-4444-555555555555",
					"-n", "1:256:+8M", "-t", "1:ef00", "-c", "1:ESP", "-u", "1:BBBBBBBB-0000-4000-8000-000000000001", "-A", "1:set:0",
					"-n", "2:0:0", "-t", "2:8304", "-c", "2:root", "-u", "2:BBBBBBBB-0000-4000-8000-000000000002", "-A", "2:set:59",
					dev)
				scribble(t, dev, 0, 440, 21)         // boot code
				scribble(t, dev, 7*4096, 5000, 22)   // after the entry array (LBA 2-5)
				scribble(t, dev, 256*4096, 4096, 23) // partition 1
			},
		},
		{
			name: "mbr", table: "mbr",
			build: func(t *testing.T, dev string) {
				run(t, "label: dos\nlabel-id: 0x4b4b4b4b\nstart=256,size=2048,type=83,bootable\nstart=2304,size=8192,type=5\nstart=2560,size=2048,type=83\nstart=4864,size=1024,type=83\n", "sfdisk", "-q", "--no-reread", dev)
				scribble(t, dev, 0, 440, 24)
				scribble(t, dev, 4096, 8000, 25) // the gap after the MBR
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const size = 64 * MiB
			src := testdisk.Loop(t, newImage(t, "src.img", size), 4096)
			tc.build(t, src)
			l, extents := readLayoutOf(t, src, 0)
			if l.LogicalSectorSize != 4096 || l.Table != tc.table {
				t.Fatalf("%s: table %q with %d-byte sectors, want %q with 4096", src, l.Table, l.LogicalSectorSize, tc.table)
			}
			if tc.table == "gpt" && l.FirstUsableLBA != 6 {
				t.Errorf("%s: first usable LBA %d, want 6 (4 sectors of entries)", src, l.FirstUsableLBA)
			}
			checkExtents(t, l, extents)

			dst := testdisk.Loop(t, newImage(t, "dst.img", size), 4096)
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{}); err != nil {
				t.Fatalf("WriteLayout(%s): %v", dst, err)
			}
			if got, want := sfdiskDump(t, dst), sfdiskDump(t, src); got != want {
				t.Errorf("sfdisk --dump of 4Kn target differs from the source:\n%s", diffLines(got, want))
			}
			if tc.table == "gpt" {
				if got, want := sgdiskPrint(t, dst, tc.parts), sgdiskPrint(t, src, tc.parts); got != want {
					t.Errorf("sgdisk -p/-i of 4Kn target differs from the source:\n%s", diffLines(got, want))
				}
				sgdiskVerify(t, dst)
			}
			if got, want := sumRange(t, dst, 0, size), sumRange(t, src, 0, size); got != want {
				t.Errorf("whole 4Kn target sha256 %s, want the source's %s", got, want)
			}

			// Crossing sector sizes is refused before anything is written.
			img512 := newImage(t, "512.img", size)
			dev512 := testdisk.Loop(t, img512, 512)
			if err := restoreOnto(t, src, dev512, l, extents, WriteOptions{}); err == nil || !strings.Contains(err.Error(), "4096-byte logical sectors but the target has 512-byte") {
				t.Errorf("4Kn layout onto 512-byte %s: error %v, want a sector size refusal", dev512, err)
			}
			l512 := *l
			l512.LogicalSectorSize = 512
			if err := restoreOnto(t, img512, dst, &l512, nil, WriteOptions{}); err == nil || !strings.Contains(err.Error(), "512-byte logical sectors but the target has 4096-byte") {
				t.Errorf("512-byte layout onto 4Kn %s: error %v, want a sector size refusal", dst, err)
			}
			if got, want := sumRange(t, dev512, 0, size), sumRange(t, newImage(t, "zero.img", size), 0, size); got != want {
				t.Errorf("%s was written to although its sector size does not match", dev512)
			}
		})
	}
}

// TestWriteLayoutTellsKernel checks that after WriteLayout on a block
// device the kernel knows the new partitions (BLKRRPART, or BLKPG on a
// loop device without partition scanning), or WriteLayout said it could
// not.
func TestWriteLayoutTellsKernel(t *testing.T) {
	needRoot(t)
	needTools(t, "sgdisk")
	src := newImage(t, "src.img", 16*MiB)
	run(t, "", "sgdisk", "-o", "-n", "1:2048:+4M", "-n", "2:0:+2M", src)
	l, _ := readLayoutOf(t, src, 0)
	dev := testdisk.Loop(t, newImage(t, "dst.img", 16*MiB), 512)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var logged []string
	err = WriteLayout(f, l, WriteOptions{Logf: func(format string, args ...any) {
		logged = append(logged, fmt.Sprintf(format, args...))
	}})
	if err != nil {
		t.Fatalf("WriteLayout(%s): %v", dev, err)
	}
	name := filepath.Base(dev)
	for _, p := range l.Partitions {
		dir := fmt.Sprintf("/sys/block/%s/%sp%d", name, name, p.Number)
		start, err1 := os.ReadFile(dir + "/start")
		size, err2 := os.ReadFile(dir + "/size")
		if err1 != nil || err2 != nil {
			if len(logged) == 0 {
				t.Errorf("%s: kernel has no partition %d and WriteLayout said nothing", dev, p.Number)
			}
			continue
		}
		got := strings.TrimSpace(string(start)) + "+" + strings.TrimSpace(string(size))
		if want := fmt.Sprintf("%d+%d", p.Start, p.Size); got != want {
			t.Errorf("%s: kernel's partition %d is %s (start+size), want %s", dev, p.Number, got, want)
		}
	}
}

// Test4KnImage captures image files of 4Kn disks, which carry no sector
// size: the tables are made on a 4Kn loop device, then the image file
// behind it is read. Rewind must read it as the kernel reads the device
// (4096-byte sectors), say so in a note, refuse 512-byte sectors for a GPT
// with an error that names --sector-size 4096 (and name it in a note for
// an MBR), and restore it byte for byte (read with 512-byte sectors, a 4Kn
// MBR image lost its logical partitions and restore wrote an EBR's 0x55AA
// into partition 1's data).
func Test4KnImage(t *testing.T) {
	needRoot(t)
	needTools(t, "losetup", "sgdisk", "sfdisk", "mkfs.vfat")
	tests := []struct {
		name  string
		build func(t *testing.T, dev string)
	}{
		{"gpt", func(t *testing.T, dev string) {
			run(t, "", "sgdisk", "-o", "-n", "1:256:+8M", "-t", "1:ef00", "-n", "2:0:+16M", dev)
			scribble(t, dev, 256*4096, 8192, 31)
		}},
		{"mbr", func(t *testing.T, dev string) {
			run(t, "label: dos\nlabel-id: 0x4b4b4b4b\nstart=256,size=2048,type=c\nstart=2304,size=8192,type=5\nstart=2560,size=2048,type=83\nstart=4864,size=1024,type=83\n", "sfdisk", "-q", "--no-reread", dev)
			fs := newImage(t, "fs.img", 2048*4096)
			run(t, "", "mkfs.vfat", "-S", "4096", "-n", "FOURK", fs)
			b, err := os.ReadFile(fs)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(b, 256*4096); err != nil {
				t.Fatal(err)
			}
			scribble(t, dev, 2560*4096, 8192, 32) // logical 5
			scribble(t, dev, 4864*4096, 8192, 33) // logical 6
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const size = 64 * MiB
			img := newImage(t, "4kn.img", size)
			dev := testdisk.Loop(t, img, 4096)
			tc.build(t, dev)
			want, _ := readLayoutOf(t, dev, 0)
			got, extents := readLayoutOf(t, img, 0)
			if got.LogicalSectorSize != 4096 || got.Table != want.Table || len(got.Partitions) != len(want.Partitions) {
				t.Fatalf("%s: table %s with %d-byte sectors and %d partitions, want %s with 4096 and %d as the kernel reads %s",
					img, got.Table, got.LogicalSectorSize, len(got.Partitions), want.Table, len(want.Partitions), dev)
			}
			for i, p := range got.Partitions {
				if w := want.Partitions[i]; p.Number != w.Number || p.Start != w.Start || p.Size != w.Size || p.Type != w.Type {
					t.Errorf("%s: partition %d: start %d size %d type %s, want %d %d %s", img, p.Number, p.Start, p.Size, p.Type, w.Start, w.Size, w.Type)
				}
			}
			if !strings.Contains(strings.Join(got.Notes, "\n"), "4096-byte") {
				t.Errorf("%s: notes %q do not say the image was read with 4096-byte sectors", img, got.Notes)
			}
			// Asked for 512-byte sectors: a GPT that only fits 4096 is
			// refused; an MBR, whose sector numbers fit both, is read as
			// asked with a note, and still restored byte for byte.
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			l512, ext512, err := ReadLayout(f, size, 512)
			f.Close()
			switch {
			case tc.name == "gpt" && (err == nil || !strings.Contains(err.Error(), "--sector-size 4096")):
				t.Errorf("ReadLayout(%s) with 512-byte sectors: error %v, want one naming --sector-size 4096", img, err)
			case tc.name == "mbr" && err != nil:
				t.Errorf("ReadLayout(%s) with 512-byte sectors: %v", img, err)
			case tc.name == "mbr":
				if !strings.Contains(strings.Join(l512.Notes, "\n"), "--sector-size 4096") {
					t.Errorf("ReadLayout(%s) with 512-byte sectors: notes %q, want one naming --sector-size 4096", img, l512.Notes)
				}
				dst := newImage(t, "dst512.img", size)
				if err := restoreOnto(t, img, dst, l512, ext512, WriteOptions{}); err != nil {
					t.Fatal(err)
				}
				if g, w := sumRange(t, dst, 0, size), sumRange(t, img, 0, size); g != w {
					t.Errorf("image read with 512-byte sectors and restored: sha256 %s, want the source's %s", g, w)
				}
			}
			dst := newImage(t, "dst.img", size)
			if err := restoreOnto(t, img, dst, got, extents, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if g, w := sumRange(t, dst, 0, size), sumRange(t, img, 0, size); g != w {
				t.Errorf("restored image sha256 %s, want the source's %s", g, w)
			}
		})
	}
}
