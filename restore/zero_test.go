package restore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
)

// Zero makes a range read as zeros, leaves its neighbours alone, and
// names the method it used: holes in an image file, write-zeroes on a
// loop device (whose queue documents it), written zeros for the ragged
// edges of an unaligned range.
func TestZeroerMethods(t *testing.T) {
	const size = 8 << 20
	garbage := bytes.Repeat([]byte{0xA5}, size)
	for _, tc := range []struct {
		name      string
		block     bool
		fresh     bool
		off, n    int64
		want      []restore.ZeroMethod
		wantBytes []int64
	}{
		{"image file, aligned", false, false, 1 << 20, 3 << 20, []restore.ZeroMethod{restore.ZeroHole}, []int64{3 << 20}},
		{"image file, ragged edges", false, false, 1<<20 - 100, 2<<20 + 300, []restore.ZeroMethod{restore.ZeroHole, restore.ZeroWritten}, []int64{2 << 20, 300}},
		{"fresh sparse image", false, true, 0, 1 << 20, []restore.ZeroMethod{restore.ZeroSparse}, []int64{1 << 20}},
		{"loop device, aligned", true, false, 1 << 20, 3 << 20, []restore.ZeroMethod{restore.ZeroUnmap}, []int64{3 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			data := garbage
			if tc.fresh {
				data = make([]byte, size)
			}
			writeFile(t, path, data)
			if tc.block {
				path = testdisk.Loop(t, path, 0)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			z := restore.NewZeroer(f, tc.fresh)
			if err := z.Zero(tc.off, tc.n); err != nil {
				t.Fatalf("zero %s [%d, +%d): %v", path, tc.off, tc.n, err)
			}
			if err := restore.Flush(f); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := f.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), data...)
			clear(want[tc.off : tc.off+tc.n])
			if !bytes.Equal(got, want) {
				t.Errorf("%s after zeroing [%d, +%d): bytes differ from the expected zeros and untouched neighbours", path, tc.off, tc.n)
			}
			used, _ := z.Used()
			if len(used) != len(tc.want) {
				t.Fatalf("%s: methods used %v; want %v", path, used, tc.want)
			}
			for i, u := range used {
				if u.Method != tc.want[i] || u.Bytes != tc.wantBytes[i] {
					t.Errorf("%s: method %d: got %q for %d bytes, want %q for %d bytes", path, i, u.Method, u.Bytes, tc.want[i], tc.wantBytes[i])
				}
			}
			if !z.Offloads() {
				t.Errorf("%s: Offloads() = false; want true (holes, or a queue with write_zeroes_max_bytes > 0)", path)
			}
		})
	}
}
