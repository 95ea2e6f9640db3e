package diskrestore

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TablePartitions lists an old table's partitions from its sectors alone:
// on a 64 GiB disk with mostly free space it reads a few KiB, GPT or MBR.
func TestTablePartitionsReadsOnlyTheTable(t *testing.T) {
	for _, tc := range []struct {
		name, script, want string
	}{
		{"gpt", "label: gpt\nstart=2048, size=32768\nstart=1048576, size=8192\n", "[{1 1048576 16777216} {2 536870912 4194304}]"},
		{"mbr", "label: dos\nstart=2048, size=32768\nstart=40960, size=1048576, type=5\nstart=43008, size=8192\n",
			"[{1 1048576 16777216} {5 22020096 4194304}]"},
		{"none", "", "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			const size = 64 << 30
			os.Truncate(path, size)
			if tc.script != "" {
				cmd := exec.Command("sfdisk", "-q", path)
				cmd.Stdin = strings.NewReader(tc.script)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Skipf("sfdisk: %v %s", err, out)
				}
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cr := &countingReader{r: f}
			parts := TablePartitions(cr, size, 512)
			if got := fmt.Sprint(parts); got != tc.want && !(tc.want == "[]" && parts == nil) {
				t.Errorf("%s table partitions: got %s, want %s", tc.name, got, tc.want)
			}
			if n := cr.n.Load(); n > 64<<10 {
				t.Errorf("%s: read %d bytes of a 64 GiB disk; want only its table sectors", tc.name, n)
			}
		})
	}
}
