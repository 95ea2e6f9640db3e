package diskrestore

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"strings"
	"testing"
)

// A GPT whose headers or entry array hold bytes Rewind does not record (a
// 96-byte header with data under its CRC, another revision, a name in an
// unused entry) is captured by its partitions and restored as a standard
// table: capture says so in a note, naming where. A table sgdisk made
// gets no note.
func TestNormalisedGPTIsNoted(t *testing.T) {
	needTools(t, "sgdisk")
	const size = 64 * MiB
	last := int64(size/512 - 1)
	// patch rewrites both headers with f applied and their CRC recomputed;
	// entries, when set, changes the primary and backup entry arrays first.
	patch := func(t *testing.T, img string, f func(h []byte), entry func(arr []byte)) {
		t.Helper()
		d, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for _, lba := range []int64{1, last} {
			h := make([]byte, 512)
			d.ReadAt(h, lba*512)
			if entry != nil {
				at := int64(binary.LittleEndian.Uint64(h[72:80])) * 512
				arr := make([]byte, 128*128)
				d.ReadAt(arr, at)
				entry(arr)
				d.WriteAt(arr, at)
				binary.LittleEndian.PutUint32(h[88:92], crc32.ChecksumIEEE(arr))
			}
			if f != nil {
				f(h)
			}
			n := binary.LittleEndian.Uint32(h[12:16])
			clear(h[16:20])
			binary.LittleEndian.PutUint32(h[16:20], crc32.ChecksumIEEE(h[:n]))
			d.WriteAt(h, lba*512)
		}
	}
	for _, tc := range []struct {
		name  string
		build func(t *testing.T, img string)
		want  string // in the note; "" for no note
	}{
		{"sgdisk", func(t *testing.T, img string) {}, ""},
		{"96-byte header", func(t *testing.T, img string) {
			patch(t, img, func(h []byte) {
				binary.LittleEndian.PutUint32(h[12:16], 96)
				copy(h[92:96], "\xde\xad\xbe\xef")
			}, nil)
		}, "primary GPT header (first at byte 524)"},
		{"revision 1.1", func(t *testing.T, img string) {
			patch(t, img, func(h []byte) { h[8] = 1 }, nil)
		}, "primary GPT header (first at byte 520)"},
		{"name in an unused entry", func(t *testing.T, img string) {
			patch(t, img, nil, func(arr []byte) { copy(arr[100*128+56:], "o\x00l\x00d\x00") })
		}, "GPT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := newImage(t, "src.img", size)
			run(t, "", "sgdisk", "-n", "1:2048:+20M", "-n", "2:0:+10M", img)
			tc.build(t, img)
			if out, err := runAllowFail("sgdisk", "-v", img); err != nil || !strings.Contains(out, "No problems found") {
				t.Fatalf("sgdisk -v %s does not accept the test's table: %v\n%s", img, err, out)
			}
			l, _ := readLayoutOf(t, img, 0)
			var note string
			for _, n := range l.Notes {
				if strings.Contains(n, "does not record") {
					note = n
				}
			}
			switch {
			case tc.want == "" && note != "":
				t.Errorf("%s: note %q for a table restore writes as it is", img, note)
			case tc.want != "" && !strings.Contains(note, tc.want):
				t.Errorf("%s: notes %q; want one that the table is restored as a standard one, naming %q", img, l.Notes, tc.want)
			}
		})
	}
}
