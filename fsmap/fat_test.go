package fsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// ftFATImage makes a FAT file system with mkfs.vfat over random data, adds
// files and a directory with mtools, deletes some and adds more (so the
// free space is fragmented and holds deleted data), and returns the image
// and the sha256 of every file left, by its mtools path.
func ftFATImage(t *testing.T, size int64, seed uint64, withFiles bool, mkfs ...string) (string, map[string]string) {
	t.Helper()
	img := ftImage(t, size, seed)
	ftCmd(t, "mkfs.vfat", append(mkfs, img)...)
	if !withFiles {
		return img, nil
	}
	src := t.TempDir()
	files := map[string]string{}
	ftCmd(t, "mmd", "-i", img, "::/dir")
	var names []string
	for i := range 14 {
		name := fmt.Sprintf("::/f%02d.bin", i)
		if i%2 == 1 {
			name = fmt.Sprintf("::/dir/g%02d.bin", i)
		}
		// Sizes from 0 to about 1/40 of the volume each.
		n := int64((seed*31+uint64(i)*7919)%uint64(size/40+1)) + int64(i%3)
		if i == 0 {
			n = 0
		}
		path, sum := ftFile(t, src, fmt.Sprintf("s%02d", i), n, seed*100+uint64(i))
		ftCmd(t, "mcopy", "-i", img, "-o", path, name)
		files[name] = sum
		names = append(names, name)
	}
	for i, name := range names {
		if i%3 == 1 {
			ftCmd(t, "mdel", "-i", img, name)
			delete(files, name)
		}
	}
	for i := range 4 {
		name := fmt.Sprintf("::/late%d.bin", i)
		path, sum := ftFile(t, src, fmt.Sprintf("late%d", i), size/30+int64(i)*1000, seed*1000+uint64(i))
		ftCmd(t, "mcopy", "-i", img, "-o", path, name)
		files[name] = sum
	}
	return img, files
}

// ftMdirFree is the "bytes free" mdir reports for the image.
func ftMdirFree(t *testing.T, img string) int64 {
	t.Helper()
	out := ftCmd(t, "mdir", "-i", img, "::/")
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutSuffix(strings.TrimSpace(line), "bytes free"); ok {
			n, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(s), " ", ""), 10, 64)
			if err != nil {
				t.Fatalf("mdir %s: free bytes in %q: %v", img, line, err)
			}
			return n
		}
	}
	t.Fatalf("mdir %s: no \"bytes free\" line in\n%s", img, out)
	return 0
}

// ftFsckUsed is the number of clusters fsck.vfat -n finds in use, and the
// number it counts in all.
func ftFsckUsed(t *testing.T, img string) (used, total int64) {
	t.Helper()
	out := ftCmd(t, "fsck.vfat", "-n", img)
	i := strings.LastIndex(out, "files, ")
	if i < 0 {
		t.Fatalf("fsck.vfat -n %s: no cluster count in\n%s", img, out)
	}
	if _, err := fmt.Sscanf(out[i:], "files, %d/%d clusters", &used, &total); err != nil {
		t.Fatalf("fsck.vfat -n %s: cluster count in %q: %v", img, out[i:], err)
	}
	return used, total
}

// TestFATReadsRealFileSystems maps FAT12/16/32 volumes made by mkfs.vfat
// over random data, zeroes every free range in a copy, and checks what a
// user would: fsck.vfat finds nothing wrong, every file reads back
// identical and the free bytes are what mdir reports.
func TestFATReadsRealFileSystems(t *testing.T) {
	ftNeed(t, "mkfs.vfat", "fsck.vfat", "mcopy", "mdel", "mmd", "mdir")
	tests := []struct {
		name  string
		size  int64
		mkfs  []string
		bits  int
		block int64
		files bool // false: mtools cannot write it (a FAT32 of few clusters)
	}{
		{"fat12 512B clusters", 2 << 20, []string{"-F", "12", "-s", "1"}, 12, 512, true},
		{"fat12 4K clusters no alignment", 12 << 20, []string{"-F", "12", "-s", "8", "-a"}, 12, 4096, true},
		{"fat16 512B clusters", 24 << 20, []string{"-F", "16", "-s", "1"}, 16, 512, true},
		{"fat16 32K clusters", 160 << 20, []string{"-F", "16", "-s", "64"}, 16, 32 << 10, true},
		{"fat16 one FAT", 20 << 20, []string{"-F", "16", "-s", "2", "-f", "1"}, 16, 1024, true},
		{"fat16 4K sectors no alignment", 64 << 20, []string{"-F", "16", "-S", "4096", "-s", "1", "-a"}, 16, 4096, true},
		{"fat32 512B clusters", 48 << 20, []string{"-F", "32", "-s", "1"}, 32, 512, true},
		{"fat32 4K sectors no alignment", 264 << 20, []string{"-F", "32", "-S", "4096", "-s", "1", "-a"}, 32, 4096, true},
		{"fat32 small, with a 16-bit sector count", 4 << 20, []string{"-F", "32", "-s", "1"}, 32, 512, false},
		{"fat32 with fewer than 65525 clusters", 64 << 20, []string{"-F", "32", "-s", "64"}, 32, 32 << 10, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, files := ftFATImage(t, tt.size, uint64(i+1), tt.files, tt.mkfs...)
			m, err := ftReadMap(t, img)
			if err != nil {
				t.Fatalf("Read(%s): %v", tt.name, err)
			}
			if m.FS != "vfat" || m.BlockSize != tt.block || m.Size != tt.size {
				t.Errorf("Read(%s): got fs %q block %d size %d, want vfat %d %d", tt.name, m.FS, m.BlockSize, m.Size, tt.block, tt.size)
			}
			v, err := parseFATBoot(ftReadAt(t, img, 0, 512), tt.size)
			if err != nil || v.bits != tt.bits {
				t.Fatalf("%s: got FAT%d (%v), want FAT%d", tt.name, v.bits, err, tt.bits)
			}
			if tt.files {
				if got, want := m.FreeBytes(), ftMdirFree(t, img); got != want {
					t.Errorf("%s: got %d free bytes, mdir reports %d", tt.name, got, want)
				}
			}
			used, total := ftFsckUsed(t, img)
			if got, want := m.FreeBytes(), (total-used)*tt.block; got != want {
				t.Errorf("%s: got %d free bytes, fsck.vfat counts %d of %d clusters used: %d free", tt.name, got, used, total, want)
			}
			if m.FreeBytes() == 0 {
				t.Fatalf("%s: no free bytes: the test would prove nothing", tt.name)
			}
			zeroed := ftZeroFree(t, img, m)
			if u, _ := ftFsckUsed(t, zeroed); u != used {
				t.Errorf("%s: fsck.vfat counts %d clusters used after zeroing the free ranges, %d before", tt.name, u, used)
			}
			out := t.TempDir()
			for name, want := range files {
				dst := filepath.Join(out, "x")
				ftCmd(t, "mcopy", "-i", zeroed, "-o", "-n", name, dst)
				data, err := os.ReadFile(dst)
				if err != nil {
					t.Fatal(err)
				}
				if got := ftSum(data); got != want {
					t.Errorf("%s: file %s after zeroing the free ranges: got sha256 %s, want %s", tt.name, name, got, want)
				}
			}
		})
	}
}

// TestFATRefusesDamageAndDirt breaks one structure at a time in a real
// FAT16 and FAT32 volume and checks the error names the problem.
func TestFATRefusesDamageAndDirt(t *testing.T) {
	ftNeed(t, "mkfs.vfat", "fsck.vfat", "mcopy", "mdel", "mmd")
	for _, bits := range []int{16, 32} {
		spc := map[int]string{16: "2", 32: "1"}[bits] // FAT32 of 65525 clusters or more, for mtools
		img, _ := ftFATImage(t, 40<<20, uint64(bits), true, "-F", strconv.Itoa(bits), "-s", spc)
		v, err := parseFATBoot(ftReadAt(t, img, 0, 512), 40<<20)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ftReadMap(t, img)
		if err != nil {
			t.Fatalf("FAT%d: Read before damage: %v", bits, err)
		}
		freeCluster := (m.Free[0].Offset-v.dataStart)/v.clusterSize + 2
		entryOff := func(copy int, c int64) int64 {
			return v.fatStart + int64(copy)*v.fatBytes + c*int64(bits/8)
		}
		// setEntry writes entry c in every FAT copy (or only copy k >= 0).
		setEntry := func(path string, k int, c int64, val uint32) {
			for i := range v.fats {
				if k >= 0 && i != k {
					continue
				}
				b := make([]byte, bits/8)
				if bits == 16 {
					binary.LittleEndian.PutUint16(b, uint16(val))
				} else {
					old := binary.LittleEndian.Uint32(ftReadAt(t, path, entryOff(i, c), 4))
					binary.LittleEndian.PutUint32(b, old&0xF0000000|val)
				}
				ftPatch(t, path, entryOff(i, c), b)
			}
		}
		entry1 := func(path string) uint32 {
			b := ftReadAt(t, path, entryOff(0, 1), 4)
			if bits == 16 {
				return uint32(binary.LittleEndian.Uint16(b))
			}
			return binary.LittleEndian.Uint32(b) & 0x0FFFFFFF
		}
		state := int64(0x25)
		if bits == 32 {
			state = 0x41
		}
		tests := []struct {
			name   string
			damage func(path string)
			size   int64 // partition size; 0: the image's
			want   error
			text   string
		}{
			{"copies disagree", func(p string) { setEntry(p, 1, freeCluster, 0x0FFF) }, 0, ErrDamaged, fmt.Sprintf("FAT copy 2 differs from copy 1 at entry %d", freeCluster)},
			{"entry outside the volume", func(p string) { setEntry(p, -1, freeCluster, uint32(v.clusters+2)) }, 0, ErrDamaged, fmt.Sprintf("cluster %d points to cluster %d", freeCluster, v.clusters+2)},
			{"entry 1 points to reserved 1", func(p string) { setEntry(p, -1, freeCluster, 1) }, 0, ErrDamaged, "points to cluster 1,"},
			{"boot sector dirty flag", func(p string) { ftPatch(t, p, state, []byte{ftReadAt(t, p, state, 1)[0] | 1}) }, 0, ErrNotClean, "dirty flag"},
			{"FAT entry 1 clean bit clear", func(p string) {
				clean := uint32(0x8000)
				if bits == 32 {
					clean = 0x08000000
				}
				setEntry(p, -1, 1, entry1(p)&^clean)
			}, 0, ErrNotClean, "clean-shutdown bit"},
			{"volume larger than the partition", func(string) {}, 40<<20 - 4096, ErrDamaged, "do not fit the partition"},
			// Windows clears the bit in use; a crash may leave the copies apart.
			{"FAT entry 1 clean bit clear in the first copy only", func(p string) {
				clean := uint32(0x8000)
				if bits == 32 {
					clean = 0x08000000
				}
				setEntry(p, 0, 1, entry1(p)&^clean)
			}, 0, ErrNotClean, "clean-shutdown bit"},
			// The remedy the message gives works: fsck.vfat -a clears both flags.
			{"boot sector dirty flag then fsck.vfat -a", func(p string) {
				ftPatch(t, p, state, []byte{ftReadAt(t, p, state, 1)[0] | 1})
				ftFsckFix(t, p)
			}, 0, nil, ""},
			{"FAT entry 1 clean bit clear then fsck.vfat -a", func(p string) {
				clean := uint32(0x8000)
				if bits == 32 {
					clean = 0x08000000
				}
				setEntry(p, -1, 1, entry1(p)&^clean)
				ftFsckFix(t, p)
			}, 0, nil, ""},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("FAT%d %s", bits, tt.name), func(t *testing.T) {
				p := ftCopy(t, img)
				tt.damage(p)
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				size := int64(40 << 20)
				if tt.size != 0 {
					size = tt.size
				}
				_, err = Read(f, size)
				if tt.want == nil && err != nil || !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.text) {
					t.Errorf("FAT%d %s: got error %v, want %v naming %q", bits, tt.name, err, tt.want, tt.text)
				}
			})
		}
		t.Run(fmt.Sprintf("FAT%d bad cluster is used", bits), func(t *testing.T) {
			p := ftCopy(t, img)
			bad := uint32(0xFFF7)
			if bits == 32 {
				bad = 0x0FFFFFF7
			}
			setEntry(p, -1, freeCluster, bad)
			got, err := ftReadMap(t, p)
			if err != nil {
				t.Fatalf("FAT%d with a bad cluster: %v", bits, err)
			}
			if got.FreeBytes() != m.FreeBytes()-v.clusterSize {
				t.Errorf("FAT%d with bad cluster %d: got %d free bytes, want %d", bits, freeCluster, got.FreeBytes(), m.FreeBytes()-v.clusterSize)
			}
		})
	}
}

// ftFsckFix runs fsck.vfat -a, which exits 1 when it changed something.
func ftFsckFix(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("fsck.vfat", "-a", img).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Filesystem was changed") {
		t.Fatalf("fsck.vfat -a %s: %v\n%s", img, err, out)
	}
}

// TestFATUnknown checks what is not FAT is left to other readers.
func TestFATUnknown(t *testing.T) {
	exfat := make([]byte, 4096)
	copy(exfat, "\xEB\x76\x90EXFAT   ")
	exfat[510], exfat[511] = 0x55, 0xAA
	tests := []struct {
		name string
		data []byte
	}{
		{"random bytes", ftRandom(3, 1<<20)},
		{"zeros", make([]byte, 1<<20)},
		{"shorter than a sector", []byte{0xEB}},
	}
	for _, tt := range tests {
		_, err := readFAT(bytes.NewReader(tt.data), int64(len(tt.data)))
		if !errors.Is(err, ErrUnknown) {
			t.Errorf("readFAT(%s): got %v, want ErrUnknown", tt.name, err)
		}
	}
}

// TestFATLeftOvers checks that a FAT boot sector that is no longer the
// partition's file system is not believed: after wipefs, or under a swap
// area or an LVM label made without erasing it. Believing it would skip
// live data.
func TestFATLeftOvers(t *testing.T) {
	ftNeed(t, "mkfs.vfat", "wipefs")
	for _, bits := range []string{"16", "32"} {
		img, _ := ftFATImage(t, 40<<20, 5, false, "-F", bits, "-s", map[string]string{"16": "2", "32": "1"}[bits])
		if _, err := ftReadMap(t, img); err != nil {
			t.Fatalf("FAT%s before: %v", bits, err)
		}
		tests := []struct {
			name   string
			damage func(p string)
		}{
			{"wipefs -a", func(p string) { ftCmd(t, "wipefs", "-a", p) }},
			// mkswap writes its header (version 1 at byte 1024) with the
			// signature; a signature whose header was overwritten is what a
			// file system made over a swap area leaves (TestReadStaleSignatures).
			{"swap signature", func(p string) {
				ftPatch(t, p, 1024, []byte{1, 0, 0, 0})
				ftPatch(t, p, 4096-10, []byte("SWAPSPACE2"))
			}},
			{"LVM label", func(p string) { ftPatch(t, p, 512, []byte("LABELONE")) }},
		}
		for _, tt := range tests {
			p := ftCopy(t, img)
			tt.damage(p)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = readFAT(f, 40<<20)
			f.Close()
			if !errors.Is(err, ErrUnknown) {
				t.Errorf("FAT%s after %s: got %v, want ErrUnknown", bits, tt.name, err)
			}
		}
	}
}

// FuzzFAT patches real FAT12/16/32 images (boot sector, FATs) and checks
// readFAT never panics and every map it returns is well formed.
func FuzzFAT(f *testing.F) {
	bases := [][]byte{
		ftBase(f, 256<<10, "mkfs.vfat", "-F", "12", "-s", "1"),
		ftBase(f, 4<<20, "mkfs.vfat", "-F", "16", "-s", "1"),
		ftBase(f, 4<<20, "mkfs.vfat", "-F", "32", "-s", "1"),
	}
	if _, err := exec.LookPath("mkfs.exfat"); err == nil {
		bases = append(bases, ftBase(f, 4<<20, "mkfs.exfat", "-c", "4K"))
	}
	for i, base := range bases {
		if _, err := readFAT(bytes.NewReader(base), int64(len(base))); err != nil {
			f.Fatalf("readFAT base %d: %v", i, err)
		}
	}
	f.Add([]byte{})
	for i := range bases {
		f.Add([]byte{byte(i), 0})
		f.Add([]byte{byte(i), 1})
		f.Add(append([]byte{byte(i), 0}, ftPatch32(13, 0x80)...))                // sectors per cluster
		f.Add(append([]byte{byte(i), 0}, ftPatch32(17, 0xFF, 0xFF)...))          // root entries
		f.Add(append([]byte{byte(i), 0}, ftPatch32(32, 0xFF, 0xFF, 0xFF, 0)...)) // total sectors
	}
	if len(bases) > 3 { // exFAT: its flags, FAT and root directory
		f.Add(append([]byte{3, 0}, ftPatch32(106, 0x01)...))
		f.Add(append([]byte{3, 0}, ftPatch32(24*512+8, 0x05, 0x00, 0x00, 0x00)...))
	}
	// FAT entries of the first clusters, in the first FAT.
	f.Add(append([]byte{0, 0}, ftPatch32(512+3, 0x34, 0x12, 0x00, 0x00)...))
	f.Add(append([]byte{1, 0}, ftPatch32(4*512+8, 0xF7, 0xFF, 0x05, 0x00)...))
	f.Add(append([]byte{2, 0}, ftPatch32(32*512+12, 0xFF, 0xFF, 0xFF, 0x0F, 0x00, 0x00, 0x00, 0x00)...))
	f.Fuzz(func(t *testing.T, patches []byte) {
		img, size := ftPatched(bases, patches)
		m, err := readFAT(img, size)
		ftFuzzCheck(t, "vfat", m, err, size, "exfat")
		// Through Read too: the signature probe sees every patch.
		m, err = Read(img, size)
		ftFuzzCheck(t, "vfat", m, err, size, "exfat", "ext2", "ext3", "ext4", "ntfs", "swap")
	})
}

// BenchmarkFATRead maps a 32 GiB FAT32 volume of 4 KiB clusters (two FATs
// of 32 MiB each, read and compared).
func BenchmarkFATRead(b *testing.B) {
	ftBenchRead(b, 32<<30, "mkfs.vfat", "-F", "32", "-s", "8")
}

// TestFAT32MirroringOff checks a FAT32 with mirroring turned off is read
// from its active FAT, whatever the other copy holds.
func TestFAT32MirroringOff(t *testing.T) {
	ftNeed(t, "mkfs.vfat", "mcopy", "mdel", "mmd")
	const size = 40 << 20
	img, _ := ftFATImage(t, size, 11, true, "-F", "32", "-s", "1")
	v, err := parseFATBoot(ftReadAt(t, img, 0, 512), size)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ftReadMap(t, img)
	if err != nil {
		t.Fatal(err)
	}
	// FAT 2 active, FAT 1 overwritten with garbage entries.
	ftPatch(t, img, 40, []byte{0x81, 0x00})
	ftPatch(t, img, v.fatStart+64, ftRandom(12, 4096))
	got, err := ftReadMap(t, img)
	if err != nil {
		t.Fatalf("FAT32 with FAT 2 active: %v", err)
	}
	if got.FreeBytes() != want.FreeBytes() || len(got.Free) != len(want.Free) {
		t.Errorf("FAT32 with FAT 2 active: got %d free bytes in %d ranges, want %d in %d", got.FreeBytes(), len(got.Free), want.FreeBytes(), len(want.Free))
	}
	// Mirroring on again: the garbage in FAT 1 is damage.
	ftPatch(t, img, 40, []byte{0x00, 0x00})
	if _, err := ftReadMap(t, img); !errors.Is(err, ErrDamaged) {
		t.Errorf("FAT32 with mirroring on and FAT 1 overwritten: got %v, want ErrDamaged", err)
	}
}

// ftMountExFAT attaches img to a loop device and mounts it with exfat-fuse
// (the kernel here has no exfat driver); the returned function unmounts
// and detaches. It skips the test without root, loop devices or FUSE.
func ftMountExFAT(t *testing.T, img string, readOnly bool) (string, func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices and mounts need root")
	}
	args := []string{"-f", "--show", img}
	if readOnly {
		args = append([]string{"-r"}, args...)
	}
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup failed (no loop devices here?): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	dir := t.TempDir()
	opts := []string{dev, dir}
	if readOnly {
		opts = append([]string{"-o", "ro"}, opts...)
	}
	if out, err := exec.Command("mount.exfat-fuse", opts...).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		t.Skipf("mount.exfat-fuse failed (no FUSE here?): %v: %s", err, out)
	}
	done := false
	unmount := func() {
		if done {
			return
		}
		done = true
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	}
	t.Cleanup(unmount)
	return dir, unmount
}

// TestExFATReadsRealFileSystems maps exFAT volumes made by mkfs.exfat over
// random data with files written and deleted through exfat-fuse, zeroes
// every free range in a copy, and checks fsck.exfat finds nothing wrong,
// every file reads back identical and the free bytes are what statfs says.
func TestExFATReadsRealFileSystems(t *testing.T) {
	ftNeed(t, "mkfs.exfat", "fsck.exfat", "mount.exfat-fuse", "losetup")
	tests := []struct {
		name  string
		size  int64
		mkfs  []string
		block int64
	}{
		{"4K clusters", 48 << 20, []string{"-c", "4K"}, 4096},
		{"512B clusters", 24 << 20, []string{"-c", "512"}, 512},
		{"128K clusters", 96 << 20, []string{"-c", "128K"}, 128 << 10},
		{"32K clusters, bitmap packed in the FAT area", 64 << 20, []string{"--pack-bitmap", "-c", "32K"}, 32 << 10},
		{"1M boundary alignment", 64 << 20, []string{"-b", "1M", "-c", "4K"}, 4096},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := ftImage(t, tt.size, uint64(40+i))
			ftCmd(t, "mkfs.exfat", append(tt.mkfs, img)...)
			dir, unmount := ftMountExFAT(t, img, false)
			files := map[string]string{}
			if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			for k := range 12 {
				name := fmt.Sprintf("f%02d", k)
				if k%2 == 1 {
					name = "d/" + name
				}
				_, sum := ftFile(t, dir, name, int64(k)*tt.size/200+int64(k), uint64(i*100+k))
				files[name] = sum
			}
			for k := range 12 {
				if name := fmt.Sprintf("f%02d", k); k%4 == 2 {
					if err := os.Remove(filepath.Join(dir, name)); err != nil {
						t.Fatal(err)
					}
					delete(files, name)
				}
			}
			var st syscall.Statfs_t
			if err := syscall.Statfs(dir, &st); err != nil {
				t.Fatal(err)
			}
			statFree := int64(st.Bfree) * st.Bsize
			// Mounted, the volume is marked dirty: capture refuses it.
			syscall.Sync()
			if _, err := ftReadMap(t, img); !errors.Is(err, ErrNotClean) {
				t.Errorf("%s while mounted: got %v, want ErrNotClean", tt.name, err)
			}
			unmount()

			m, err := ftReadMap(t, img)
			if err != nil {
				t.Fatalf("Read(%s): %v", tt.name, err)
			}
			if m.FS != "exfat" || m.BlockSize != tt.block || m.Size != tt.size {
				t.Errorf("Read(%s): got fs %q block %d size %d, want exfat %d %d", tt.name, m.FS, m.BlockSize, m.Size, tt.block, tt.size)
			}
			if m.FreeBytes() != statFree {
				t.Errorf("%s: got %d free bytes, statfs through exfat-fuse said %d", tt.name, m.FreeBytes(), statFree)
			}
			if m.FreeBytes() == 0 {
				t.Fatalf("%s: no free bytes: the test would prove nothing", tt.name)
			}
			zeroed := ftZeroFree(t, img, m)
			ftCmd(t, "fsck.exfat", "-n", zeroed)
			dir, _ = ftMountExFAT(t, zeroed, true)
			for name, want := range files {
				data, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if got := ftSum(data); got != want {
					t.Errorf("%s: file %s after zeroing the free ranges: got sha256 %s, want %s", tt.name, name, got, want)
				}
			}
		})
	}
}

// TestExFATRefusesDamageAndDirt breaks one structure at a time in a real
// exFAT volume and checks the error names the problem.
func TestExFATRefusesDamageAndDirt(t *testing.T) {
	ftNeed(t, "mkfs.exfat", "fsck.exfat")
	const size = 32 << 20
	img := ftImage(t, size, 77)
	ftCmd(t, "mkfs.exfat", "-c", "4K", img)
	if _, err := ftReadMap(t, img); err != nil {
		t.Fatalf("exFAT before damage: %v", err)
	}
	le := binary.LittleEndian
	boot := ftReadAt(t, img, 0, 512)
	clusterSize := int64(512) << boot[109]
	heap := int64(le.Uint32(boot[88:])) * 512
	at := func(c int64) int64 { return heap + (c-2)*clusterSize }
	root := int64(le.Uint32(boot[96:]))
	dir := ftReadAt(t, img, at(root), clusterSize)
	entry := int64(-1)
	for off := int64(0); off < clusterSize; off += 32 {
		if dir[off] == 0x81 {
			entry = at(root) + off
			break
		}
	}
	if entry < 0 {
		t.Fatal("no allocation bitmap entry in the root directory")
	}
	bitmap := at(int64(le.Uint32(ftReadAt(t, img, entry+20, 4))))
	rootBit := bitmap + (root-2)/8
	tests := []struct {
		name   string
		damage func(path string)
		size   int64
		want   error
		text   string
	}{
		{"dirty flag", func(p string) { ftPatch(t, p, 106, []byte{ftReadAt(t, p, 106, 1)[0] | 2}) }, 0, ErrNotClean, "dirty flag"},
		{"dirty flag then fsck.exfat -y", func(p string) {
			ftPatch(t, p, 106, []byte{ftReadAt(t, p, 106, 1)[0] | 2})
			ftCmd(t, "fsck.exfat", "-y", p)
		}, 0, nil, ""},
		{"boot region checksum", func(p string) { ftPatch(t, p, 100, []byte{0x5A}) }, 0, ErrDamaged, "checksum"},
		{"root directory marked free", func(p string) {
			ftPatch(t, p, rootBit, []byte{ftReadAt(t, p, rootBit, 1)[0] &^ (1 << ((root - 2) % 8))})
		}, 0, ErrDamaged, fmt.Sprintf("marks cluster %d free, one of the root directory", root)},
		{"bitmap shorter than the clusters", func(p string) { ftPatch(t, p, entry+24, make([]byte, 8)) }, 0, ErrDamaged, "the allocation bitmap holds 0 bytes"},
		{"volume larger than the partition", func(string) {}, size - 4096, ErrDamaged, "do not fit the partition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ftCopy(t, img)
			tt.damage(p)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			n := int64(size)
			if tt.size != 0 {
				n = tt.size
			}
			_, err = Read(f, n)
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.text) {
				t.Errorf("exFAT %s: got error %v, want %v naming %q", tt.name, err, tt.want, tt.text)
			}
		})
	}
}
