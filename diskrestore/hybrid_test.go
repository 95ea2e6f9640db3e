package diskrestore

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// A hybrid MBR whose non-0xEE entry runs to the end of the source disk
// (sgdisk -h, then widened as Boot Camp-era tools leave it) restored onto
// a smaller disk on which every GPT partition fits: the entry cannot be
// kept, and the error says so as a choice of disk, not as an internal
// error of Rewind's.
func TestHybridEntryPastSmallerTarget(t *testing.T) {
	needTools(t, "sgdisk")
	src := newImage(t, "src.img", 64*MiB)
	run(t, "", "sgdisk", "-n", "1:2048:+20M", "-n", "2:0:+10M", src)
	run(t, "", "sgdisk", "-h", "2", src)
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	lba0 := make([]byte, 512)
	f.ReadAt(lba0, 0)
	widened := 0
	for i, e := range rawMBREntries(lba0) {
		if e.Size != 0 && e.Type != mbrTypeProtected {
			binary.LittleEndian.PutUint32(lba0[446+16*i+12:], uint32(64*MiB/512)-e.Start)
			widened = i + 1
		}
	}
	f.WriteAt(lba0, 0)
	f.Close()
	if widened == 0 {
		t.Fatalf("%s: sgdisk -h 2 made no hybrid entry", src)
	}
	l, _ := readLayoutOf(t, src, 0)
	for _, tc := range []struct {
		name string
		size int64
		want []string // in the error; none: fits
	}{
		{"same size", 64 * MiB, nil},
		{"larger", 96 * MiB, nil},
		{"smaller, partitions fit", 40 * MiB, []string{"hybrid MBR entry", "pick a disk of at least 64.0 MiB (67108864 bytes)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := TargetLayout(l, tc.size, 512, WriteOptions{})
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("TargetLayout onto %d bytes: %v; want it to fit", tc.size, err)
			case tc.want == nil:
				return
			case err == nil:
				t.Fatalf("TargetLayout onto %d bytes: no error; want the hybrid entry %d past the end refused", tc.size, widened)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "internal error") {
				t.Errorf("error %q blames Rewind for a disk that is too small", err)
			}
		})
	}
}
