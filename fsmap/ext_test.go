package fsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
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
		grow   bool     // made with blocks, then grown to the image by resize2fs
	}{
		{"ext4 1k 64bit flex_bg metadata_csum", 200*mib + 3*mib, []string{"-t", "ext4", "-b", "1024"}, "", "ext4", true, false},
		{"ext4 4k small groups csum_seed", 200*mib + 5*mib, []string{"-t", "ext4", "-b", "4096", "-g", "4096", "-O", "metadata_csum_seed"}, "", "ext4", true, false},
		{"ext4 4k default groups", 300 * mib, []string{"-t", "ext4", "-b", "4096"}, "", "ext4", false, false},
		{"ext4 no 64bit, gdt_csum", 150*mib + 1*mib, []string{"-t", "ext4", "-b", "1024", "-O", "^64bit,^metadata_csum,uninit_bg"}, "", "ext4", true, false},
		{"ext4 no flex_bg", 150*mib + 2*mib, []string{"-t", "ext4", "-b", "1024", "-O", "^flex_bg"}, "", "ext4", true, false},
		{"ext4 meta_bg", 150*mib + 2*mib, []string{"-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"}, "", "ext4", true, false},
		{"ext4 sparse_super2", 150*mib + 2*mib, []string{"-t", "ext4", "-b", "1024", "-O", "sparse_super2"}, "", "ext4", true, false},
		{"ext4 no sparse_super", 100*mib + 2*mib, []string{"-t", "ext4", "-b", "2048", "-O", "^sparse_super,^resize_inode"}, "", "ext4", true, false},
		{"ext4 64k blocks", 300 * mib, []string{"-t", "ext4", "-b", "65536", "-g", "1024"}, "", "ext4", true, false},
		{"ext4 smaller than its partition", 120 * mib, []string{"-t", "ext4", "-b", "4096", "-g", "2048"}, "27000", "ext4", true, false},
		{"ext4 grown by resize2fs", 200*mib + 3*mib, []string{"-t", "ext4", "-b", "1024"}, "30000", "ext4", true, true},
		{"ext4 4k grown by resize2fs", 300 * mib, []string{"-t", "ext4", "-b", "4096", "-g", "2048", "-O", "^resize_inode"}, "6000", "ext4", true, true},
		{"ext3", 150*mib + 2*mib, []string{"-t", "ext3", "-b", "1024"}, "", "ext3", false, false},
		{"ext2", 100*mib + 2*mib, []string{"-t", "ext2", "-b", "4096", "-g", "2048"}, "", "ext2", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			used := tt.size / 5
			if tt.grow {
				used = 8 << 20
			}
			img, files := makeExt(t, dir, tt.size, used, tt.mkfs, tt.blocks)
			if tt.grow {
				tfsRun(t, "resize2fs", img)
			}
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

// TestReadExtRefuses damages, dirties or extends real file systems and
// checks Read says which and where, so capture falls back to a whole copy
// (ErrDamaged, ErrUnsupported) or refuses (ErrNotClean).
func TestReadExtRefuses(t *testing.T) {
	tfsNeed(t, extTools...)
	const size = 64 << 20
	csum := []string{"-t", "ext4", "-b", "1024"}
	gdtCsum := []string{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum,uninit_bg"}
	noCsum := []string{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum,^uninit_bg,^flex_bg"}
	// firstFree picks an initialised group past group 0 with free blocks.
	firstFree := func(t *testing.T, info *extInfo) int {
		for i, g := range info.groups {
			if i > 0 && !g.uninit && len(g.free) > 0 {
				return i
			}
		}
		t.Fatal("no initialised group with free blocks")
		return 0
	}
	// flip inverts the bitmap bit of block b in group g.
	flip := func(t *testing.T, img string, info *extInfo, g int, b int64) {
		gr := info.groups[g]
		off := gr.blockBitmap*info.blockSize + (b-gr.start)/8
		byt := tfsReadAt(t, img, off, 1)
		byt[0] ^= 1 << ((b - gr.start) % 8)
		tfsPatch(t, img, off, byt)
	}
	// desc returns the offset of group g's descriptor (1 KiB blocks: the
	// table starts at block 2).
	desc := func(info *extInfo, g int) int64 { return 2*info.blockSize + int64(g)*info.descSize }
	debugfs := func(cmd string) func(*testing.T, string, *extInfo) int {
		return func(t *testing.T, img string, _ *extInfo) int {
			tfsRun(t, "debugfs", "-w", "-R", cmd, img)
			return 0
		}
	}
	tests := []struct {
		name   string
		mkfs   []string
		damage func(t *testing.T, img string, info *extInfo) int // returns the group named in the error
		short  int64                                             // Read this many bytes fewer than the image
		want   error
		text   []string // in the error; "%d" is the group damage returned
	}{
		{"bitmap bit flipped, metadata_csum", csum, func(t *testing.T, img string, info *extInfo) int {
			g := firstFree(t, info)
			flip(t, img, info, g, info.groups[g].free[0][0])
			return g
		}, 0, ErrDamaged, []string{"block bitmap of group %d has checksum"}},
		{"bitmap bit flipped, no checksums", noCsum, func(t *testing.T, img string, info *extInfo) int {
			g := firstFree(t, info)
			flip(t, img, info, g, info.groups[g].free[0][0])
			return g
		}, 0, ErrDamaged, []string{"block bitmap of group %d marks", "free, its descriptor says"}},
		{"inode table marked free, counts agree", noCsum, func(t *testing.T, img string, info *extInfo) int {
			g := firstFree(t, info)
			flip(t, img, info, g, info.groups[g].inodeTable)
			flip(t, img, info, g, info.groups[g].free[0][0])
			return g
		}, 0, ErrDamaged, []string{"block bitmap of group %d marks block", "holds file system metadata"}},
		{"descriptor points outside", noCsum, func(t *testing.T, img string, info *extInfo) int {
			tfsPatch(t, img, desc(info, 2), binary.LittleEndian.AppendUint32(nil, 0xFFFFFF00))
			return 2
		}, 0, ErrDamaged, []string{"descriptor of group %d puts its block bitmap at block 4294967040, outside"}},
		{"descriptor changed, metadata_csum", csum, func(t *testing.T, img string, info *extInfo) int {
			tfsPatch(t, img, desc(info, 2)+gdFreeBlocksLo, []byte{1, 0})
			return 2
		}, 0, ErrDamaged, []string{"descriptor of group %d has checksum"}},
		{"descriptor changed, gdt_csum", gdtCsum, func(t *testing.T, img string, info *extInfo) int {
			tfsPatch(t, img, desc(info, 3)+gdFreeBlocksLo, []byte{1, 0})
			return 3
		}, 0, ErrDamaged, []string{"descriptor of group %d has checksum"}},
		{"superblock changed, metadata_csum", csum, func(t *testing.T, img string, info *extInfo) int {
			tfsPatch(t, img, extSBOffset+0x34, []byte{0x55})
			return 0
		}, 0, ErrDamaged, []string{"superblock checksum"}},
		{"partition shorter than the file system", csum, nil, 1 << 20, ErrDamaged, []string{"larger than its partition (66060288 bytes)"}},
		{"needs_recovery", csum, debugfs("feature needs_recovery"), 0, ErrNotClean, []string{"needs_recovery", "e2fsck", "--raw"}},
		{"state has errors", csum, debugfs("ssv state 3"), 0, ErrNotClean, []string{"ERROR_FS", "e2fsck -f", "--raw"}},
		{"state not valid", noCsum, debugfs("ssv state 0"), 0, ErrNotClean, []string{"VALID_FS", "unmount", "--raw"}},
		{"in use by another machine (mmp)", []string{"-t", "ext4", "-b", "1024", "-O", "mmp"}, func(t *testing.T, img string, info *extInfo) int {
			blk := mmpBlock(t, img)
			tfsPatch(t, img, blk*info.blockSize+4, binary.LittleEndian.AppendUint32(nil, 0x12345))
			return 0
		}, 0, ErrNotClean, []string{"multiple-mount protection sequence 0x12345", "unmount it everywhere", "--raw"}},
		{"bigalloc", []string{"-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384"}, nil, 0, ErrUnsupported, []string{"bigalloc"}},
		{"external journal device", []string{"-b", "1024", "-O", "journal_dev"}, nil, 0, ErrUnsupported, []string{"jbd: ", "journal_dev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			img, _ := makeExt(t, dir, size, size/8, tt.mkfs, "")
			g := 0
			if tt.damage != nil {
				g = tt.damage(t, img, dumpe2fs(t, img))
			}
			m, err := tfsRead(t, img, size-tt.short)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Read %s (%s): got map %v, error %v; want %v", img, tt.name, m, err, tt.want)
			}
			t.Logf("%s: %v", tt.name, err)
			for _, s := range tt.text {
				if s = strings.ReplaceAll(s, "%d", strconv.Itoa(g)); !strings.Contains(err.Error(), s) {
					t.Errorf("Read %s (%s): got error %q, want it to say %q", img, tt.name, err, s)
				}
			}
		})
	}
}

// TestReadExtKernelWritten lets the kernel allocate and free blocks (a
// loop device mounted as ext4): while it is mounted the journal needs
// recovery and Read refuses; once unmounted, Read agrees with dumpe2fs and
// the zeroed copy keeps every file.
func TestReadExtKernelWritten(t *testing.T) {
	tfsNeed(t, append(extTools, "losetup", "mount", "umount")...)
	const size = 96 << 20
	dir := t.TempDir()
	img, _ := makeExt(t, dir, size, size/10, []string{"-t", "ext4", "-b", "1024"}, "")
	dev := testdisk.Loop(t, img, 0)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "ext4", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount %s: %v: %s", dev, err, out)
	}
	mounted := true
	unmount := func() {
		if mounted {
			tfsRun(t, "umount", mnt)
			mounted = false
		}
	}
	t.Cleanup(unmount)

	// The kernel writes files across groups (initialising BLOCK_UNINIT
	// ones) and frees some.
	sums := map[string]string{}
	for i := range 24 {
		name := fmt.Sprintf("k%02d", i)
		sums[name] = tfsFile(t, filepath.Join(mnt, name), int64(i)*150_000+123, uint64(1000+i))
	}
	for i := 0; i < 24; i += 4 {
		name := fmt.Sprintf("k%02d", i)
		if err := os.Remove(filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
		delete(sums, name)
	}
	tfsRun(t, "sync")
	if m, err := tfsRead(t, dev, size); !errors.Is(err, ErrNotClean) || !strings.Contains(err.Error(), "needs_recovery") {
		t.Fatalf("Read %s while mounted: got map %v, error %v; want %v naming needs_recovery", dev, m, err, ErrNotClean)
	}
	unmount()

	info := dumpe2fs(t, img)
	m, err := tfsRead(t, dev, size)
	if err != nil {
		t.Fatalf("Read %s after unmount: %v", dev, err)
	}
	if want := info.free(); !slices.Equal(m.Free, want) {
		t.Fatalf("Read %s: free ranges differ from dumpe2fs's\n%s", dev, diffRanges(m.Free, want))
	}
	tfsZero(t, img, m.Free)
	tfsRun(t, "e2fsck", "-fn", img)
	for name, sum := range sums {
		out := filepath.Join(dir, "out-"+name)
		tfsRun(t, "debugfs", "-R", "dump /"+name+" "+out, img)
		if got := tfsSum(t, out); got != sum {
			t.Errorf("%s: /%s read back with sha256 %s, want %s", img, name, got, sum)
		}
	}
}

// fuzzHead is how much of a seed image the fuzzer mutates: the superblock,
// the descriptors and the bitmaps of the small seed file systems all lie
// in it; the rest of the partition reads as zeros.
const fuzzHead = 64 << 10

// zeroTail is a partition whose first bytes are head and the rest zeros.
type zeroTail struct {
	head []byte
	size int64
}

func (z zeroTail) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= z.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > z.size-off {
		n = int(z.size - off)
	}
	clear(p[:n])
	if off < int64(len(z.head)) {
		copy(p[:n], z.head[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// FuzzRead feeds mutated ext and swap headers to the readers: they must
// never panic, every error must say which kind it is, and every map they
// return must keep Map's invariants. go test runs the seeds; fuzz it with
// go test ./fsmap -run '^$' -fuzz FuzzRead -fuzztime 60s.
func FuzzRead(f *testing.F) {
	if _, err := exec.LookPath("mke2fs"); err == nil {
		dir := f.TempDir()
		for i, opts := range [][]string{
			{"-t", "ext4", "-b", "1024", "-g", "256", "-N", "64", "-O", "^has_journal,^resize_inode"},
			{"-t", "ext4", "-b", "1024", "-g", "256", "-N", "64", "-O", "^has_journal,^resize_inode,^metadata_csum,^uninit_bg,^flex_bg"},
			{"-t", "ext4", "-b", "1024", "-g", "256", "-N", "64", "-O", "^has_journal,^resize_inode,^metadata_csum,meta_bg,^64bit"},
			{"-t", "ext4", "-b", "4096", "-g", "256", "-N", "64", "-O", "^has_journal,^resize_inode,^metadata_csum,uninit_bg,sparse_super2"},
			{"-t", "ext2", "-b", "2048", "-g", "256", "-N", "64", "-O", "^resize_inode"},
		} {
			img := filepath.Join(dir, fmt.Sprintf("seed%d.img", i))
			size := int64(768 << 10)
			if opts[3] != "1024" {
				size = 3 << 20
			}
			if err := os.WriteFile(img, make([]byte, size), 0o644); err != nil {
				f.Fatal(err)
			}
			if out, err := exec.Command("mke2fs", append(append([]string{"-q", "-F", "-E", "nodiscard"}, opts...), img)...).CombinedOutput(); err != nil {
				f.Fatalf("mke2fs %q: %v: %s", opts, err, out)
			}
			b, err := os.ReadFile(img)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b[:fuzzHead], uint32(size-fuzzHead))
			if i == 0 {
				// Two signatures: the ext4 under a FAT32 boot sector (as
				// mformat leaves it) and under an md RAID 1.2 superblock.
				if vfat, err := exec.LookPath("mkfs.vfat"); err == nil {
					fat := filepath.Join(dir, "fat.img")
					if err := os.WriteFile(fat, make([]byte, 40<<20), 0o644); err != nil {
						f.Fatal(err)
					}
					if out, err := exec.Command(vfat, "-F", "32", fat).CombinedOutput(); err != nil {
						f.Fatalf("mkfs.vfat: %v: %s", err, out)
					}
					boot, err := os.ReadFile(fat)
					if err != nil {
						f.Fatal(err)
					}
					mixed := slices.Clone(b[:fuzzHead])
					copy(mixed, boot[:512])
					f.Add(mixed, uint32(size-fuzzHead))
				}
				mixed := slices.Clone(b[:fuzzHead])
				binary.LittleEndian.PutUint32(mixed[4096:], mdMagic)
				f.Add(mixed, uint32(size-fuzzHead))
			}
		}
	}
	swap := make([]byte, 4096)
	swap[swapVersionOff] = 1
	binary.LittleEndian.PutUint32(swap[swapLastPageOff:], 255)
	copy(swap[4096-10:], "SWAPSPACE2")
	f.Add(swap, uint32(1<<20-4096))

	f.Fuzz(func(t *testing.T, head []byte, extra uint32) {
		if len(head) > fuzzHead {
			head = head[:fuzzHead]
		}
		size := int64(len(head)) + int64(extra)
		r := zeroTail{head, size}
		for name, read := range map[string]func(io.ReaderAt, int64) (*Map, error){"Read": Read, "readExt": readExt, "readSwap": readSwap} {
			m, err := read(r, size)
			if err != nil {
				if !errors.Is(err, ErrUnknown) && !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrNotClean) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s (%d bytes): error %v wraps none of the fsmap errors", name, size, err)
				}
				continue
			}
			if m.Size != size {
				t.Fatalf("%s: got map of size %d, want %d", name, m.Size, size)
			}
			if err := m.check(); err != nil {
				t.Fatalf("%s (%s, %d bytes): map breaks its invariants: %v", name, m.FS, size, err)
			}
		}
	})
}

// countingReader counts the reads Read makes.
type countingReader struct {
	r     io.ReaderAt
	reads int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.r.ReadAt(p, off)
}

// TestReadExtLarge reads a 1 TiB ext4 (a sparse image; 8192 groups, every
// bitmap initialised): the map matches dumpe2fs's, and the bitmaps of each
// flex group come in one read, not one read per group.
func TestReadExtLarge(t *testing.T) {
	tfsNeed(t, extTools...)
	const size = 1 << 40
	img := filepath.Join(t.TempDir(), "big.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Skipf("no 1 TiB sparse file here: %v", err)
	}
	tfsRun(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-G", "16", "-O", "^metadata_csum,^uninit_bg", "-N", "131072", "-E", "nodiscard,lazy_journal_init=1", img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &countingReader{r: f}
	m, err := Read(c, size)
	if err != nil {
		t.Fatalf("Read %s: %v", img, err)
	}
	info := dumpe2fs(t, img)
	if want := info.free(); !slices.Equal(m.Free, want) {
		t.Fatalf("Read %s: free ranges differ from dumpe2fs's\n%s", img, diffRanges(m.Free, want))
	}
	// The signature probe (head and tail), the superblock, the descriptor
	// table, and one read per flex group.
	if groups := len(info.groups); c.reads > 4+groups/16 {
		t.Errorf("Read %s: got %d reads for %d groups, want at most %d", img, c.reads, groups, 4+groups/16)
	}
}

// mmpBlock is the multiple-mount protection block dumpe2fs names.
func mmpBlock(t *testing.T, img string) int64 {
	t.Helper()
	for _, line := range strings.Split(tfsRun(t, "dumpe2fs", "-h", img), "\n") {
		if v, ok := strings.CutPrefix(line, "MMP block number:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("dumpe2fs -h %s: %q: %v", img, line, err)
			}
			return n
		}
	}
	t.Fatalf("dumpe2fs -h %s names no MMP block", img)
	return 0
}
