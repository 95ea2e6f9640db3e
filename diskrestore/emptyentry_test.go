package diskrestore

import (
	"encoding/binary"
	"os"
	"testing"
)

// MBR entries with a type but no sectors (left by old partitioners when a
// partition was deleted) are no partition for the kernel or sfdisk: the
// disk's MBR is read as a table with its real partitions (it used to be
// taken for "no partition table", captured whole), and the empty entries
// come back byte for byte.
func TestMBREmptyEntriesIgnored(t *testing.T) {
	needTools(t, "sfdisk")
	for _, tc := range []struct {
		name    string
		entries map[int][16]byte // slot -> raw entry
	}{
		{"type with size 0", map[int][16]byte{2: entry(0, 0x83, 100000, 0)}},
		{"type and start 0, size 0", map[int][16]byte{2: entry(0, 0x07, 0, 0)}},
		{"bootable, size 0", map[int][16]byte{3: entry(0x80, 0x0c, 5000, 0)}},
		{"extended with size 0", map[int][16]byte{2: entry(0, 0x05, 90000, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newImage(t, "src.img", 64*MiB)
			run(t, "label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=20480, type=83\n", "sfdisk", "-q", src)
			f, err := os.OpenFile(src, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for slot, e := range tc.entries {
				f.WriteAt(e[:], int64(446+16*slot))
			}
			f.WriteAt([]byte("partition one data"), 2048*512+4096)
			f.Close()
			l, extents := readLayoutOf(t, src, 0)
			if l.Table != "mbr" || len(l.Partitions) != 2 {
				t.Fatalf("%s: table %q with %d partitions (notes %q); want mbr with partitions 1 and 2 as the kernel reads it", src, l.Table, len(l.Partitions), l.Notes)
			}
			dst := newImage(t, "dst.img", 64*MiB)
			if err := restoreOnto(t, src, dst, l, extents, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if got, want := sumRange(t, dst, 0, 64*MiB), sumRange(t, src, 0, 64*MiB); got != want {
				t.Errorf("%s: sha256 %s, want the source's %s", dst, got, want)
			}
		})
	}
}

func entry(status, typ byte, start, size uint32) [16]byte {
	var e [16]byte
	e[0], e[4] = status, typ
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], size)
	return e
}
