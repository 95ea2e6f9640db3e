package fsmap

import (
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadStaleSignatures: a partition reformatted without erasing the old
// file system keeps its old superblock; Read must not return the stale
// file system's map (which calls the new one's data free) but ErrUnknown
// naming both, as blkid -p calls it ambivalent.
func TestReadStaleSignatures(t *testing.T) {
	tfsNeed(t, "mkfs.ext4", "mformat", "mcopy", "blkid")
	// The real case: mtools' mformat makes FAT32 over an ext4 and leaves
	// its superblock, descriptors and bitmaps (past the FATs) intact. The
	// FAT's next-free hint puts the new file where the stale ext4 says free.
	mformatOverExt4 := func(t *testing.T, img string) {
		tfsRun(t, "truncate", "-s", "4G", img)
		tfsRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", img)
		tfsRun(t, "mformat", "-i", img, "-F", "-T", itoa(4<<30/512), "-h", "64", "-s", "32", "-c", "64", "::")
		hint := make([]byte, 4)
		binary.LittleEndian.PutUint32(hint, 2000) // FSInfo next free cluster: 64 MiB in
		tfsPatch(t, img, 512+0x1EC, hint)
		src := filepath.Join(t.TempDir(), "file")
		tfsFile(t, src, 5<<20, 1)
		tfsRun(t, "mcopy", "-i", img, src, "::file")
		out, _ := exec.Command("blkid", "-p", img).CombinedOutput()
		if !strings.Contains(string(out), "ambivalent") {
			t.Fatalf("blkid -p %s: got %q, want an ambivalent result (the test no longer makes two signatures)", img, out)
		}
	}
	// A small ext4 with something else's signature written over it.
	ext4With := func(off int64, sig []byte, atEnd bool) func(*testing.T, string) {
		return func(t *testing.T, img string) {
			tfsRun(t, "truncate", "-s", "64M", img)
			tfsRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", img)
			if atEnd {
				off += 64 << 20
			}
			tfsPatch(t, img, off, sig)
		}
	}
	// A file system made over a swap area of 64 KiB pages (mkswap -p
	// 65536) keeps the swap signature at byte 65526 but not its header:
	// blkid -p sees only the new file system, and so must Read.
	overSwap64K := func(mkfs ...string) func(*testing.T, string) {
		return func(t *testing.T, img string) {
			tfsImage(t, filepath.Dir(img), 64<<20, 7)
			tfsRun(t, "mkswap", "-p", "65536", img)
			tfsRun(t, mkfs[0], append(mkfs[1:], img)...)
			if got := string(tfsReadAt(t, img, 65536-10, 10)); got != "SWAPSPACE2" {
				t.Fatalf("%s over a swap area: the swap signature is gone (%q): the test no longer tests this", mkfs[0], got)
			}
		}
	}
	// A FAT32 boot sector as BitLocker To Go writes it (the discovery
	// volume): the OEM name MSWIN4.1 and the To Go GUID. No tool here
	// makes one; the fields are libblkid's.
	bitlockerToGo := func(t *testing.T, img string) {
		tfsRun(t, "truncate", "-s", "64M", img)
		tfsRun(t, "mkfs.vfat", "-F", "32", img)
		tfsPatch(t, img, 0, []byte("\xeb\x58\x90MSWIN4.1"))
		tfsPatch(t, img, 424, []byte(bitlockerToGoGUID))
	}
	md := binary.LittleEndian.AppendUint32(nil, mdMagic)
	for _, tt := range []struct {
		name string
		make func(*testing.T, string)
		want []string
		fs   string // the map Read must return; "" for ErrUnknown
	}{
		{"ext4 over a swap area of 64 KiB pages", overSwap64K("mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-O", "^resize_inode"), nil, "ext4"},
		{"NTFS over a swap area of 64 KiB pages", overSwap64K("mkntfs", "-Q", "-F", "-q"), nil, "ntfs"},
		{"mformat FAT32 over ext4", mformatOverExt4, []string{"ext", "vfat"}, ""},
		{"BitLocker To Go", bitlockerToGo, []string{"BitLocker"}, ""},
		{"md RAID 1.0 superblock after ext4", ext4With(-8192, md, true), []string{"ext", "linux_raid_member"}, ""},
		{"md RAID 0.90 superblock after ext4", ext4With(-65536, md, true), []string{"ext", "linux_raid_member"}, ""},
		{"LUKS header over ext4", ext4With(0, []byte("LUKS\xba\xbe"), false), []string{"ext", "crypto_LUKS"}, ""},
		{"bcache over ext4", ext4With(4096+24, []byte("\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"), false), []string{"ext", "bcache"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			tt.make(t, img)
			m, err := tfsRead(t, img, 0)
			if tt.fs != "" {
				if err != nil {
					t.Fatalf("Read %s (%s): got %v, want a %s map", img, tt.name, err, tt.fs)
				}
				if m.FS != tt.fs {
					t.Fatalf("Read %s (%s): got a %s map, want %s", img, tt.name, m.FS, tt.fs)
				}
				return
			}
			if err == nil {
				t.Fatalf("Read %s (%s): got a %s map with %d free bytes, want ErrUnknown (two signatures)", img, tt.name, m.FS, m.FreeBytes())
			}
			if !errors.Is(err, ErrUnknown) {
				t.Fatalf("Read %s (%s): got %v, want ErrUnknown", img, tt.name, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Read %s (%s): error %q does not name %s", img, tt.name, err, w)
				}
			}
		})
	}
}
