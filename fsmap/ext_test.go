package fsmap

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// extTools are what the ext tests run: mke2fs to make the file systems,
// debugfs to remove and read back files, dumpe2fs as the oracle of free
// blocks, e2fsck to check what a restore would leave.
var extTools = []string{"mke2fs", "debugfs", "dumpe2fs", "e2fsck"}

// extGroup is one group as dumpe2fs describes it.
type extGroup struct {
	start, end  int64 // blocks [start, end]
	blockBitmap int64
	inodeTable  int64
	uninit      bool // BLOCK_UNINIT
	free        [][2]int64
}

// extInfo is what dumpe2fs says of an image.
type extInfo struct {
	blockSize int64
	descSize  int64
	groups    []extGroup
}

// free is the oracle: every group's free blocks as merged byte ranges.
func (e *extInfo) free() []Range {
	var out []Range
	for _, g := range e.groups {
		for _, f := range g.free {
			off, n := f[0]*e.blockSize, (f[1]-f[0]+1)*e.blockSize
			if k := len(out); k > 0 && out[k-1].Offset+out[k-1].Length == off {
				out[k-1].Length += n
				continue
			}
			out = append(out, Range{off, n})
		}
	}
	return out
}

var (
	reGroup    = regexp.MustCompile(`^Group (\d+): \(Blocks (\d+)-(\d+)\)(.*)$`)
	reBBitmap  = regexp.MustCompile(`^\s+Block bitmap at (\d+)`)
	reITable   = regexp.MustCompile(`^\s+Inode table at (\d+)-`)
	reFreeList = regexp.MustCompile(`^\s+Free blocks: ?(.*)$`)
)

// dumpe2fs parses `dumpe2fs` of the image.
func dumpe2fs(t *testing.T, img string) *extInfo {
	t.Helper()
	out := tfsRun(t, "dumpe2fs", img)
	e := &extInfo{descSize: 32}
	num := func(s string) int64 {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			t.Fatalf("dumpe2fs %s: %q: %v", img, s, err)
		}
		return n
	}
	var g *extGroup
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Block size:"); ok {
			e.blockSize = num(v)
		}
		if v, ok := strings.CutPrefix(line, "Group descriptor size:"); ok {
			e.descSize = num(v)
		}
		if m := reGroup.FindStringSubmatch(line); m != nil {
			e.groups = append(e.groups, extGroup{start: num(m[2]), end: num(m[3]), uninit: strings.Contains(m[4], "BLOCK_UNINIT")})
			g = &e.groups[len(e.groups)-1]
			continue
		}
		if g == nil {
			continue
		}
		if m := reBBitmap.FindStringSubmatch(line); m != nil {
			g.blockBitmap = num(m[1])
		}
		if m := reITable.FindStringSubmatch(line); m != nil {
			g.inodeTable = num(m[1])
		}
		if m := reFreeList.FindStringSubmatch(line); m != nil && strings.TrimSpace(m[1]) != "" {
			for _, f := range strings.Split(m[1], ",") {
				a, b, ok := strings.Cut(strings.TrimSpace(f), "-")
				if !ok {
					b = a
				}
				g.free = append(g.free, [2]int64{num(a), num(b)})
			}
		}
	}
	if e.blockSize == 0 || len(e.groups) == 0 {
		t.Fatalf("dumpe2fs %s: no block size or groups in:\n%s", img, out)
	}
	return e
}

// extFile is a file put into a test file system.
type extFile struct {
	name    string
	size    int64
	sum     string
	removed bool
}

// makeExt makes an ext file system over random data: files of random
// content from a directory (mke2fs -d), then every third one removed with
// debugfs, so the free blocks hold deleted data and old random bytes.
// blocks, if not empty, is the file system size in blocks (smaller than
// the image).
func makeExt(t *testing.T, dir string, size int64, used int64, mkfs []string, blocks string) (string, []extFile) {
	t.Helper()
	img := tfsImage(t, dir, size, uint64(size))
	src := filepath.Join(dir, "src")
	var files []extFile
	sizes := []int64{0, 1, 1000, 4096, 5000, 65536, 200_000, 1 << 20, 3<<20 + 17, 8 << 20}
	var total int64
	for i := 0; total < used; i++ {
		n := sizes[i%len(sizes)]
		name := fmt.Sprintf("d%d/f%03d", i%4, i)
		files = append(files, extFile{name: name, size: n, sum: tfsFile(t, filepath.Join(src, name), n, uint64(i))})
		total += n
	}
	args := append([]string{"-q", "-F", "-E", "nodiscard", "-d", src}, mkfs...)
	args = append(args, img)
	if blocks != "" {
		args = append(args, blocks)
	}
	tfsRun(t, "mke2fs", args...)
	var cmds strings.Builder
	for i := range files {
		if i%3 == 1 {
			files[i].removed = true
			fmt.Fprintf(&cmds, "rm /%s\n", files[i].name)
		}
	}
	script := filepath.Join(dir, "rm.debugfs")
	if err := os.WriteFile(script, []byte(cmds.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tfsRun(t, "debugfs", "-w", "-f", script, img)
	return img, files
}

// TestReadExt compares the free blocks Read finds with dumpe2fs's lists on
// file systems of every layout, then zeroes them, as a restore does, and
// checks the file system is clean and every file reads back identical.
func TestReadExt(t *testing.T) {
	tfsNeed(t, extTools...)
	const mib = 1 << 20
	tests := []struct {
		name   string
		size   int64    // image bytes
		mkfs   []string // mke2fs options
		blocks string   // file system blocks, when smaller than the image
		fs     string   // want Map.FS
		uninit bool     // want BLOCK_UNINIT groups
	}{
		{"ext4 1k 64bit flex_bg metadata_csum", 200*mib + 3*mib, []string{"-t", "ext4", "-b", "1024"}, "", "ext4", true},
		{"ext4 4k small groups csum_seed", 200*mib + 5*mib, []string{"-t", "ext4", "-b", "4096", "-g", "4096", "-O", "metadata_csum_seed"}, "", "ext4", true},
		{"ext4 4k default groups", 300 * mib, []string{"-t", "ext4", "-b", "4096"}, "", "ext4", false},
		{"ext4 no 64bit, gdt_csum", 150*mib + 1*mib, []string{"-t", "ext4", "-b", "1024", "-O", "^64bit,^metadata_csum,uninit_bg"}, "", "ext4", true},
		{"ext4 no flex_bg", 150*mib + 2*mib, []string{"-t", "ext4", "-b", "1024", "-O", "^flex_bg"}, "", "ext4", true},
		{"ext4 meta_bg", 150*mib + 2*mib, []string{"-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"}, "", "ext4", true},
		{"ext4 sparse_super2", 150*mib + 2*mib, []string{"-t", "ext4", "-b", "1024", "-O", "sparse_super2"}, "", "ext4", true},
		{"ext4 no sparse_super", 100*mib + 2*mib, []string{"-t", "ext4", "-b", "2048", "-O", "^sparse_super,^resize_inode"}, "", "ext4", true},
		{"ext4 64k blocks", 300 * mib, []string{"-t", "ext4", "-b", "65536", "-g", "1024"}, "", "ext4", true},
		{"ext4 smaller than its partition", 120 * mib, []string{"-t", "ext4", "-b", "4096", "-g", "2048"}, "27000", "ext4", true},
		{"ext3", 150*mib + 2*mib, []string{"-t", "ext3", "-b", "1024"}, "", "ext3", false},
		{"ext2", 100*mib + 2*mib, []string{"-t", "ext2", "-b", "4096", "-g", "2048"}, "", "ext2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			img, files := makeExt(t, dir, tt.size, tt.size/5, tt.mkfs, tt.blocks)
			info := dumpe2fs(t, img)
			m, err := tfsRead(t, img, 0)
			if err != nil {
				t.Fatalf("Read %s: %v", img, err)
			}
			if m.FS != tt.fs || m.BlockSize != info.blockSize || m.Size != tt.size {
				t.Errorf("Read %s: got FS %q, block size %d, size %d; want %q, %d, %d", img, m.FS, m.BlockSize, m.Size, tt.fs, info.blockSize, tt.size)
			}
			// The layouts the case is for are there.
			var uninit int
			for _, g := range info.groups {
				if g.uninit {
					uninit++
				}
			}
			last := info.groups[len(info.groups)-1]
			if first := info.groups[0]; last.end-last.start >= first.end-first.start && len(info.groups) > 1 {
				t.Errorf("%s: the last group is whole (blocks %d-%d); the case wants a partial one", img, last.start, last.end)
			}
			if (uninit > 0) != tt.uninit {
				t.Errorf("%s: %d of %d groups are BLOCK_UNINIT; the case wants some: %v", img, uninit, len(info.groups), tt.uninit)
			}
			want := info.free()
			if !slices.Equal(m.Free, want) {
				t.Fatalf("Read %s: free ranges differ from dumpe2fs's\n%s", img, diffRanges(m.Free, want))
			}
			if m.FreeBytes() < tt.size/2 {
				t.Errorf("Read %s: got %d free bytes of %d, want over half", img, m.FreeBytes(), tt.size)
			}

			// What a restore leaves: zeros where nothing was stored.
			tfsZero(t, img, m.Free)
			tfsRun(t, "e2fsck", "-fn", img)
			var cmds strings.Builder
			for i, f := range files {
				if !f.removed {
					fmt.Fprintf(&cmds, "dump /%s %s\n", f.name, filepath.Join(dir, fmt.Sprintf("out%03d", i)))
				}
			}
			script := filepath.Join(dir, "dump.debugfs")
			if err := os.WriteFile(script, []byte(cmds.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			tfsRun(t, "debugfs", "-f", script, img)
			for i, f := range files {
				if f.removed {
					continue
				}
				if got := tfsSum(t, filepath.Join(dir, fmt.Sprintf("out%03d", i))); got != f.sum {
					t.Errorf("%s: /%s (%d bytes) read back with sha256 %s, want %s", img, f.name, f.size, got, f.sum)
				}
			}
		})
	}
}

// diffRanges describes where two range lists first differ.
func diffRanges(got, want []Range) string {
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = fmt.Sprintf("%+v", got[i])
		}
		if i < len(want) {
			w = fmt.Sprintf("%+v", want[i])
		}
		if g != w {
			return fmt.Sprintf("range %d: got %s, want %s (got %d ranges, want %d)", i, g, w, len(got), len(want))
		}
	}
	return "equal"
}
