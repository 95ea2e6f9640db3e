package diskrestore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An image whose size is not whole sectors (a raw file, a disk image with
// bytes appended) is refused with what to do about it: the sizes to cut
// it or pad it to.
func TestOddSizeImageSaysWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		want []string
	}{
		{"raw file", 10000001, []string{"10000001 bytes", "truncate -s 9999872", "truncate -s 10000384"}},
		{"three bytes appended", 64*MiB + 3, []string{"truncate -s 67108864", "truncate -s 67109376"}},
		{"one sector", 512, []string{"too small"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "odd.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, tc.size); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, _, err = ReadLayout(f, tc.size, 0)
			if err == nil {
				t.Fatalf("ReadLayout of a %d-byte image: no error", tc.size)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
