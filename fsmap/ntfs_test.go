package fsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// ftNTFSImage makes an NTFS volume with mkntfs over random data (so the
// free clusters hold old data), copies files in with ntfscp, and returns
// the image and the sha256 of every file by its NTFS path.
func ftNTFSImage(t *testing.T, size int64, seed uint64, mkfs ...string) (string, map[string]string) {
	t.Helper()
	img := ftImage(t, size, seed)
	ftCmd(t, "mkntfs", append([]string{"-F", "-Q"}, append(mkfs, img)...)...)
	src := t.TempDir()
	files := map[string]string{}
	for i := range 10 {
		// Small files stay resident in their MFT record; large ones get runs.
		n := int64(i) * 300
		if i%2 == 1 {
			n = int64((seed*31+uint64(i)*7919)%uint64(size/20)) + 1
		}
		path, sum := ftFile(t, src, fmt.Sprintf("s%02d", i), n, seed*100+uint64(i))
		name := fmt.Sprintf("/f%02d.bin", i)
		ftCmd(t, "ntfscp", "-q", img, path, name)
		files[name] = sum
	}
	return img, files
}

// ftNTFSFree is the free cluster count ntfsinfo -m reports.
func ftNTFSFree(t *testing.T, img string) int64 {
	t.Helper()
	out := ftCmd(t, "ntfsinfo", "-m", img)
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "Free Clusters:"); ok {
			f := strings.Fields(s)
			if len(f) > 0 {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return n
				}
			}
			t.Fatalf("ntfsinfo -m %s: free clusters in %q", img, line)
		}
	}
	t.Fatalf("ntfsinfo -m %s: no \"Free Clusters\" line in\n%s", img, out)
	return 0
}

// TestNTFSReadsRealFileSystems maps NTFS volumes made by mkntfs over random
// data with files from ntfscp, zeroes every free range in a copy, and
// checks what a user would: ntfsfix -n finds nothing wrong, every file
// reads back identical with ntfscat and the free bytes are what ntfsinfo
// reports.
func TestNTFSReadsRealFileSystems(t *testing.T) {
	ftNeed(t, "mkntfs", "ntfscp", "ntfscat", "ntfsfix", "ntfsinfo")
	tests := []struct {
		name  string
		size  int64
		mkfs  []string
		block int64
	}{
		{"512B clusters", 48 << 20, []string{"-c", "512"}, 512},
		{"4K clusters", 64 << 20, []string{"-c", "4096"}, 4096},
		{"16K clusters", 64 << 20, []string{"-c", "16384"}, 16 << 10},
		{"64K clusters", 96 << 20, []string{"-c", "65536"}, 64 << 10},
		{"4K sectors", 64 << 20, []string{"-s", "4096", "-c", "4096"}, 4096},
		{"odd size with backup boot sector", 50<<20 + 3*512, []string{"-c", "4096"}, 4096},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, files := ftNTFSImage(t, tt.size, uint64(i+1), tt.mkfs...)
			m, err := ftReadMap(t, img)
			if err != nil {
				t.Fatalf("Read(%s): %v", tt.name, err)
			}
			if m.FS != "ntfs" || m.BlockSize != tt.block || m.Size != tt.size {
				t.Errorf("Read(%s): got fs %q block %d size %d, want ntfs %d %d", tt.name, m.FS, m.BlockSize, m.Size, tt.block, tt.size)
			}
			if got, want := m.FreeBytes(), ftNTFSFree(t, img)*tt.block; got != want {
				t.Errorf("%s: got %d free bytes, ntfsinfo -m reports %d", tt.name, got, want)
			}
			if m.FreeBytes() == 0 {
				t.Fatalf("%s: no free bytes: the test would prove nothing", tt.name)
			}
			if last := m.Free[len(m.Free)-1]; last.Offset+last.Length > tt.size-512 {
				t.Errorf("%s: free range %+v reaches the backup boot sector in the last 512 bytes of %d", tt.name, last, tt.size)
			}
			zeroed := ftZeroFree(t, img, m)
			if out := ftCmd(t, "ntfsfix", "-n", zeroed); !strings.Contains(out, "processed successfully") {
				t.Errorf("%s: ntfsfix -n after zeroing the free ranges:\n%s", tt.name, out)
			}
			if got, want := ftNTFSFree(t, zeroed), m.FreeBytes()/tt.block; got != want {
				t.Errorf("%s: ntfsinfo -m after zeroing: got %d free clusters, want %d", tt.name, got, want)
			}
			for name, want := range files {
				if got := ftSum([]byte(ftCmd(t, "ntfscat", zeroed, name))); got != want {
					t.Errorf("%s: file %s after zeroing the free ranges: got sha256 %s, want %s", tt.name, name, got, want)
				}
			}
		})
	}
}

// ftNTFSLayout reads where the test damages things: the volume, the byte
// offset of MFT records by number, and the $Bitmap's first cluster.
func ftNTFSLayout(t testing.TB, img string, size int64) (v *ntfsVolume, recordAt func(n int64) int64, bitmapLCN, logLCN int64) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	v, err = parseNTFSBoot(ftReadAt(t, img, 0, 512), size)
	if err != nil {
		t.Fatal(err)
	}
	v.r = f
	rec, err := v.record(0, v.mftLCN*v.clusterSize)
	if err != nil {
		t.Fatal(err)
	}
	data, err := v.attr(0, rec, ntfsAttrData)
	if err != nil {
		t.Fatal(err)
	}
	v.mftRuns = data.runs
	recordAt = func(n int64) int64 {
		run := v.mftRuns[0]
		if (n+1)*v.recordSize > run.length*v.clusterSize {
			t.Fatalf("record %d is not in the MFT's first run", n)
		}
		return run.lcn*v.clusterSize + n*v.recordSize
	}
	brec, err := v.readRecord(ntfsRecordBitmap)
	if err != nil {
		t.Fatal(err)
	}
	bitmap, err := v.attr(ntfsRecordBitmap, brec, ntfsAttrData)
	if err != nil {
		t.Fatal(err)
	}
	lrec, err := v.readRecord(ntfsRecordLogFile)
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := v.attr(ntfsRecordLogFile, lrec, ntfsAttrData)
	if err != nil {
		t.Fatal(err)
	}
	return v, recordAt, bitmap.runs[0].lcn, logFile.runs[0].lcn
}

// ftRestartPage builds a $LogFile restart page of 4096 bytes, with its
// update sequence applied, whose restart area has the given current LSN,
// client-in-use list and flags (the fields ntfs-3g's clean test reads),
// and one client record; the other fields are consistent enough for
// ntfs-3g to read it, for a $LogFile of 4 MiB.
func ftRestartPage(lsn uint64, inUse, flags uint16) []byte {
	p := make([]byte, 4096)
	le := binary.LittleEndian
	copy(p, "RSTR")
	le.PutUint16(p[4:], 0x1E) // update sequence array offset
	le.PutUint16(p[6:], 9)    // 1 + 4096/512 entries
	le.PutUint32(p[0x10:], 4096)
	le.PutUint32(p[0x14:], 4096)
	le.PutUint16(p[0x18:], 0x30) // restart area offset
	le.PutUint16(p[0x1A:], 1)
	le.PutUint16(p[0x1C:], 1)
	le.PutUint64(p[0x30:], lsn)
	le.PutUint16(p[0x38:], 1)      // log clients
	le.PutUint16(p[0x3A:], 0xFFFF) // client free list
	le.PutUint16(p[0x3C:], inUse)
	le.PutUint16(p[0x3E:], flags)
	le.PutUint32(p[0x40:], 67-23) // sequence number bits: 67 - bits of the file size
	le.PutUint16(p[0x44:], 0xD0)  // restart area length: header and one client
	le.PutUint16(p[0x46:], 0x30)  // client array offset
	le.PutUint64(p[0x48:], 4<<20) // file size
	le.PutUint16(p[0x54:], 0x30)  // log record header length
	le.PutUint16(p[0x56:], 0x40)  // log page data offset
	le.PutUint16(p[0x60+0x10:], 0xFFFF)
	le.PutUint16(p[0x60+0x12:], 0xFFFF)
	le.PutUint32(p[0x60+0x1C:], 8)
	copy(p[0x60+0x20:], "N\x00T\x00F\x00S\x00")
	usn := []byte{0x07, 0x00}
	copy(p[0x1E:], usn)
	for i := 1; i <= 8; i++ {
		end := i*512 - 2
		copy(p[0x1E+2*i:], p[end:end+2])
		copy(p[end:], usn)
	}
	return p
}

// TestNTFSRefusesDamageAndDirt breaks one structure at a time in a real
// NTFS volume and checks the error names the problem.
func TestNTFSRefusesDamageAndDirt(t *testing.T) {
	ftNeed(t, "mkntfs", "ntfscp", "ntfsfix")
	const size = 32 << 20
	img, _ := ftNTFSImage(t, size, 9, "-c", "4096")
	v, recordAt, bitmapLCN, logLCN := ftNTFSLayout(t, img, size)
	logAt := logLCN * v.clusterSize

	// volumeFlags is the byte offset of $Volume's flags in the image.
	volumeFlags := func() int64 {
		rec := ftReadAt(t, img, recordAt(3), v.recordSize)
		off := int64(binary.LittleEndian.Uint16(rec[0x14:]))
		for binary.LittleEndian.Uint32(rec[off:]) != ntfsAttrVolumeInfo {
			off += int64(binary.LittleEndian.Uint32(rec[off+4:]))
		}
		return recordAt(3) + off + int64(binary.LittleEndian.Uint16(rec[off+0x14:])) + 10
	}()
	if volumeFlags%512 >= 510 {
		t.Fatalf("$Volume's flags lie under a fixup at byte %d", volumeFlags)
	}
	// runOffset is where the first run of record n's unnamed $DATA lies in
	// the image (its header byte), and the bytes of its length and LCN.
	runOffset := func(n int64) (at int64, length, lcn int) {
		rec := ftReadAt(t, img, recordAt(n), v.recordSize)
		off := int64(binary.LittleEndian.Uint16(rec[0x14:]))
		for binary.LittleEndian.Uint32(rec[off:]) != ntfsAttrData || rec[off+9] != 0 {
			off += int64(binary.LittleEndian.Uint32(rec[off+4:]))
		}
		run := off + int64(binary.LittleEndian.Uint16(rec[off+0x20:]))
		if run%512 >= 500 {
			t.Fatalf("record %d: the runlist lies under a fixup", n)
		}
		h := rec[run]
		return recordAt(n) + run, int(h & 0x0F), int(h >> 4)
	}
	tests := []struct {
		name   string
		damage func(path string)
		size   int64 // partition size; 0: the image's
		want   error
		text   string
	}{
		{"$Bitmap's run outside the volume", func(p string) {
			at, length, lcn := runOffset(6)
			if lcn < 2 {
				t.Fatalf("$Bitmap's first run has a %d-byte LCN", lcn)
			}
			ftPatch(t, p, at+1+int64(length), bytes.Repeat([]byte{0x7F}, lcn))
		}, 0, ErrDamaged, "MFT record 6 ($Bitmap): attribute of type 0x80: run 0"},
		{"$MFT's runlist longer than its header says", func(p string) {
			at, length, _ := runOffset(0)
			ftPatch(t, p, at+1, bytes.Repeat([]byte{0x7F}, length))
		}, 0, ErrDamaged, "MFT record 0 ($MFT): attribute of type 0x80: runs map 127 clusters"},
		{"$Bitmap bit of the $MFT cleared", func(p string) {
			at := bitmapLCN*v.clusterSize + v.mftLCN/8
			ftPatch(t, p, at, []byte{ftReadAt(t, p, at, 1)[0] &^ (1 << (v.mftLCN % 8))})
		}, 0, ErrDamaged, fmt.Sprintf("$Bitmap marks cluster %d free, one of the $MFT's own clusters", v.mftLCN)},
		{"$Bitmap bit of cluster 0 cleared", func(p string) {
			at := bitmapLCN * v.clusterSize
			ftPatch(t, p, at, []byte{ftReadAt(t, p, at, 1)[0] &^ 1})
		}, 0, ErrDamaged, "$Bitmap marks cluster 0 free"},
		{"broken fixup of $Bitmap", func(p string) {
			ftPatch(t, p, recordAt(6)+510, []byte{0x12, 0x34})
		}, 0, ErrDamaged, "MFT record 6 ($Bitmap): update sequence number of its sector 0 does not match"},
		{"broken fixup of $MFT", func(p string) {
			ftPatch(t, p, recordAt(0)+1022, []byte{0x12, 0x34})
		}, 0, ErrDamaged, "MFT record 0 ($MFT): update sequence number of its sector 1"},
		{"$Volume record not FILE", func(p string) { ftPatch(t, p, recordAt(3), []byte("BAAD")) }, 0, ErrDamaged, "MFT record 3 ($Volume): signature \"BAAD\""},
		{"dirty flag", func(p string) {
			ftPatch(t, p, volumeFlags, []byte{ftReadAt(t, p, volumeFlags, 1)[0] | 1})
		}, 0, ErrNotClean, "marked dirty"},
		{"$LogFile with a client in use", func(p string) {
			ftPatch(t, p, logAt, ftRestartPage(100, 0, 0))
			ftPatch(t, p, logAt+4096, ftRestartPage(90, 0xFFFF, 0))
		}, 0, ErrNotClean, "$LogFile holds changes not yet written"},
		{"$LogFile clean in the newer restart page", func(p string) {
			ftPatch(t, p, logAt, ftRestartPage(100, 0, 0))
			ftPatch(t, p, logAt+4096, ftRestartPage(110, 0xFFFF, 0))
		}, 0, nil, ""},
		{"$LogFile with the volume-is-clean flag", func(p string) {
			ftPatch(t, p, logAt, ftRestartPage(100, 0, 2))
			ftPatch(t, p, logAt+4096, ftRestartPage(100, 0, 2))
		}, 0, nil, ""},
		{"$LogFile restart page torn", func(p string) {
			ftPatch(t, p, logAt, ftRestartPage(100, 0xFFFF, 0))
			ftPatch(t, p, logAt+1022, []byte{0x12, 0x34})
		}, 0, ErrDamaged, "$LogFile restart page 0: update sequence number of its sector 1"},
		// ntfsfix empties the $LogFile but marks the volume dirty, for chkdsk.
		{"$LogFile with a client in use then ntfsfix", func(p string) {
			ftPatch(t, p, logAt, ftRestartPage(100, 0, 0))
			ftPatch(t, p, logAt+4096, ftRestartPage(100, 0, 0))
			ftCmd(t, "ntfsfix", p)
		}, 0, ErrNotClean, "marked dirty"},
		{"dirty flag then ntfsfix -d", func(p string) {
			ftPatch(t, p, volumeFlags, []byte{ftReadAt(t, p, volumeFlags, 1)[0] | 1})
			ftCmd(t, "ntfsfix", "-d", p)
		}, 0, nil, ""},
		{"$Bitmap shorter than the volume", func(p string) {
			// Claim twice the clusters in a partition twice as large.
			if err := os.Truncate(p, 2*size); err != nil {
				t.Fatal(err)
			}
			b := ftReadAt(t, p, 0x28, 8)
			binary.LittleEndian.PutUint64(b, 2*binary.LittleEndian.Uint64(b))
			ftPatch(t, p, 0x28, b)
		}, 2 * size, ErrDamaged, "$Bitmap holds"},
		{"volume larger than the partition", func(string) {}, size - 4096, ErrDamaged, "do not fit the partition"},
		{"$MFT outside the volume", func(p string) {
			b := make([]byte, 8)
			binary.LittleEndian.PutUint64(b, 1<<40)
			ftPatch(t, p, 0x30, b)
		}, 0, ErrDamaged, "$MFT at cluster 1099511627776"},
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
				t.Errorf("NTFS %s: got error %v, want %v naming %q", tt.name, err, tt.want, tt.text)
			}
		})
	}
}

// TestNTFSBootEncodings checks the boot sector's negative encodings: sectors
// per cluster as a shift (clusters over 64 KiB) and the MFT record size as a
// shift, next to the positive ones.
func TestNTFSBootEncodings(t *testing.T) {
	tests := []struct {
		name            string
		bps             uint16
		spc, perRecord  byte
		cluster, record int64
		wantErr         error
	}{
		{"512B clusters, 2 clusters per record", 512, 1, 2, 512, 1024, nil},
		{"4K clusters, record 2^10", 512, 8, 0xF6, 4096, 1024, nil},
		{"128K clusters as shift -8", 512, 0xF8, 0xF6, 128 << 10, 1024, nil},
		{"2M clusters as shift -12", 512, 0xF4, 0xF6, 2 << 20, 1024, nil},
		{"4K sectors, record 2^12", 4096, 1, 0xF4, 4096, 4096, nil},
		{"sectors per cluster not a power of two", 512, 3, 0xF6, 0, 0, ErrDamaged},
		{"record of 2^8 bytes", 512, 8, 0xF8, 0, 0, ErrDamaged},
		{"record size byte zero", 512, 8, 0, 0, 0, ErrDamaged},
		{"256-byte sectors", 256, 8, 0xF6, 0, 0, ErrDamaged},
	}
	for _, tt := range tests {
		b := make([]byte, 512)
		copy(b[3:], "NTFS    ")
		b[510], b[511] = 0x55, 0xAA
		binary.LittleEndian.PutUint16(b[0x0B:], tt.bps)
		b[0x0D] = tt.spc
		binary.LittleEndian.PutUint64(b[0x28:], 1<<20)
		binary.LittleEndian.PutUint64(b[0x30:], 4)
		b[0x40] = tt.perRecord
		v, err := parseNTFSBoot(b, 1<<40)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: got error %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && (v.clusterSize != tt.cluster || v.recordSize != tt.record) {
			t.Errorf("%s: got cluster %d record %d, want %d %d", tt.name, v.clusterSize, v.recordSize, tt.cluster, tt.record)
		}
	}
	if _, err := readNTFS(bytes.NewReader(ftRandom(5, 1<<20)), 1<<20); !errors.Is(err, ErrUnknown) {
		t.Errorf("readNTFS(random bytes): got %v, want ErrUnknown", err)
	}
}

// FuzzNTFS patches real NTFS images (boot sector, MFT records, $Bitmap) and
// checks readNTFS never panics and every map it returns is well formed.
func FuzzNTFS(f *testing.F) {
	bases := [][]byte{
		ftBase(f, 2<<20, "mkntfs", "-F", "-Q", "-c", "512"),
		ftBase(f, 2<<20, "mkntfs", "-F", "-Q", "-c", "4096"),
	}
	for i, base := range bases {
		if _, err := readNTFS(bytes.NewReader(base), int64(len(base))); err != nil {
			f.Fatalf("readNTFS base %d: %v", i, err)
		}
	}
	f.Add([]byte{})
	for i, base := range bases {
		f.Add([]byte{byte(i), 0})
		f.Add([]byte{byte(i), 1})
		f.Add(append([]byte{byte(i), 0}, ftPatch32(0x0D, 0xF4)...))
		f.Add(append([]byte{byte(i), 0}, ftPatch32(0x40, 0x01)...))
		// The MFT records read and the $Bitmap, where the image holds them.
		v, err := parseNTFSBoot(base, int64(len(base)))
		if err != nil {
			f.Fatal(err)
		}
		mft := uint32(v.mftLCN * v.clusterSize)
		// A $LogFile restart page, clean and not.
		path := filepath.Join(f.TempDir(), "base.img")
		if err := os.WriteFile(path, base, 0o600); err != nil {
			f.Fatal(err)
		}
		_, _, _, logLCN := ftNTFSLayout(f, path, int64(len(base)))
		f.Add(append([]byte{byte(i), 0}, ftPatch32(uint32(logLCN*v.clusterSize), ftRestartPage(5, 0, 0)[:255]...)...))
		f.Add(append([]byte{byte(i), 0}, ftPatch32(uint32(logLCN*v.clusterSize), ftRestartPage(5, 0xFFFF, 2)[:255]...)...))
		for _, rec := range []uint32{0, 2, 3, 6} {
			at := mft + rec*uint32(v.recordSize)
			f.Add(append([]byte{byte(i), 0}, ftPatch32(at+0x14, 0x30)...))
			f.Add(append([]byte{byte(i), 0}, ftPatch32(at+0x50, 0x00, 0x00, 0xFF, 0xFF)...))
			f.Add(append([]byte{byte(i), 0}, ftPatch32(at+0x1FE, 0x00, 0x01)...))
			f.Add(append([]byte{byte(i), 0}, ftPatch32(at+0x100, 0x31, 0x7F, 0xFF, 0xFF, 0x7F)...))
		}
	}
	f.Fuzz(func(t *testing.T, patches []byte) {
		img, size := ftPatched(bases, patches)
		m, err := readNTFS(img, size)
		ftFuzzCheck(t, "ntfs", m, err, size)
		m, err = Read(img, size)
		ftFuzzCheck(t, "ntfs", m, err, size, "vfat", "exfat", "ext2", "ext3", "ext4", "swap")
	})
}

// BenchmarkNTFSRead maps a 32 GiB NTFS volume of 4 KiB clusters (a $Bitmap
// of 1 MiB).
func BenchmarkNTFSRead(b *testing.B) {
	ftBenchRead(b, 32<<30, "mkntfs", "-F", "-Q", "-c", "4096")
}

// ftLoop attaches part of path (offset, size bytes) to a loop device and
// detaches it when the test ends. It skips without root or loop devices.
// (internal/testdisk.Loop attaches whole files; fsmap imports no Rewind
// package, not even in tests.)
func ftLoop(t *testing.T, path string, offset, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	out, err := exec.Command("losetup", "-f", "--show", "-r", "-o", strconv.FormatInt(offset, 10), "--sizelimit", strconv.FormatInt(size, 10), path).CombinedOutput()
	if err != nil {
		t.Skipf("losetup failed (no loop devices here?): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestReadsPartitionsOnLoopDevices reads a FAT32 and an NTFS volume at
// their offsets in a disk image through loop devices, as capture reads a
// partition, and gets the same maps as from the image files.
func TestReadsPartitionsOnLoopDevices(t *testing.T) {
	ftNeed(t, "mkfs.vfat", "mcopy", "mdel", "mmd", "mkntfs", "ntfscp", "losetup")
	fat, _ := ftFATImage(t, 40<<20, 21, true, "-F", "32", "-s", "1")
	ntfs, _ := ftNTFSImage(t, 32<<20+512, 22, "-c", "4096")
	disk := ftImage(t, 1<<20+40<<20+32<<20+512+1<<20, 23)
	parts := []struct {
		img    string
		offset int64
	}{{fat, 1 << 20}, {ntfs, 1<<20 + 40<<20}}
	for _, p := range parts {
		data, err := os.ReadFile(p.img)
		if err != nil {
			t.Fatal(err)
		}
		ftPatch(t, disk, p.offset, data)
	}
	for _, p := range parts {
		want, err := ftReadMap(t, p.img)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p.img)
		if err != nil {
			t.Fatal(err)
		}
		dev := ftLoop(t, disk, p.offset, st.Size())
		f, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil || size != st.Size() {
			t.Fatalf("%s: got size %d (%v), want %d", dev, size, err, st.Size())
		}
		got, err := Read(f, size)
		f.Close()
		if err != nil {
			t.Fatalf("Read(%s at %d): %v", dev, p.offset, err)
		}
		if got.FS != want.FS || !slices.Equal(got.Free, want.Free) {
			t.Errorf("Read(%s at %d): got %s with %d free bytes in %d ranges, want %s with %d in %d", dev, p.offset, got.FS, got.FreeBytes(), len(got.Free), want.FS, want.FreeBytes(), len(want.Free))
		}
	}
}

// TestNTFSLogFileAgreesWithNTFS3G checks the $LogFile verdict against
// ntfs-3g's own: ntfscp refuses to write to a volume whose journal holds
// changes ("unclean file system") exactly when Read gives ErrNotClean.
func TestNTFSLogFileAgreesWithNTFS3G(t *testing.T) {
	ftNeed(t, "mkntfs", "ntfscp")
	const size = 32 << 20
	img, _ := ftNTFSImage(t, size, 13, "-c", "4096")
	v, _, _, logLCN := ftNTFSLayout(t, img, size)
	tests := []struct {
		name         string
		page0, page1 []byte
		unclean      bool
	}{
		{"empty (mkntfs)", nil, nil, false},
		{"client in use in both pages", ftRestartPage(100, 0, 0), ftRestartPage(100, 0, 0), true},
		{"client in use in the newer page", ftRestartPage(100, 0xFFFF, 0), ftRestartPage(110, 0, 0), true},
		{"no client in use in the newer page", ftRestartPage(110, 0xFFFF, 0), ftRestartPage(100, 0, 0), false},
		{"volume-is-clean flag", ftRestartPage(100, 0, 2), ftRestartPage(100, 0, 2), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ftCopy(t, img)
			if tt.page0 != nil {
				ftPatch(t, p, logLCN*v.clusterSize, tt.page0)
				ftPatch(t, p, logLCN*v.clusterSize+4096, tt.page1)
			}
			_, err := ftReadMap(t, p)
			if got := errors.Is(err, ErrNotClean); got != tt.unclean || !got && err != nil {
				t.Errorf("$LogFile %s: got %v, want not clean %v", tt.name, err, tt.unclean)
			}
			src := filepath.Join(t.TempDir(), "x")
			if err := os.WriteFile(src, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("ntfscp", p, src, "/x").CombinedOutput()
			if ntfs3g := err != nil && strings.Contains(string(out), "unclean file system"); ntfs3g != tt.unclean || !tt.unclean && err != nil {
				t.Errorf("$LogFile %s: ntfscp says unclean %v, want %v: %v\n%s", tt.name, ntfs3g, tt.unclean, err, out)
			}
		})
	}
}
