package diskrestore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// FS is what ProbeFS recognises of a file system.
type FS struct {
	Type  string // blkid's names: ext2, ext3, ext4, vfat, ntfs, exfat, xfs, btrfs, swap, iso9660
	Label string
	UUID  string // ext2/3/4 UUID, or a FAT volume serial as XXXX-XXXX, as blkid shows them
}

// MountType is the type to mount the file system with, or "" when the
// rescue environment cannot mount it: ext2/3 mount with the ext4 driver,
// NTFS with ntfs3.
func (f FS) MountType() string {
	switch f.Type {
	case "ext2", "ext3", "ext4":
		return "ext4"
	case "vfat", "iso9660":
		return f.Type
	case "ntfs":
		return "ntfs3"
	}
	return ""
}

// ProbeFS recognises the common file systems on r by their superblock
// magic. An unknown file system gives the zero FS.
func ProbeFS(r io.ReaderAt) FS {
	b := make([]byte, 64<<10+4096)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	at := func(off int, s string) bool { return len(b) >= off+len(s) && string(b[off:off+len(s)]) == s }
	str := func(off, n int) string {
		if len(b) < off+n {
			return ""
		}
		s := b[off : off+n]
		if i := bytes.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		return strings.TrimRight(string(s), " ")
	}
	fatSerial := func(off int) string {
		id := binary.LittleEndian.Uint32(b[off:])
		return fmt.Sprintf("%04X-%04X", id>>16, id&0xffff)
	}
	switch {
	case len(b) >= 1024+0x7a && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xef53:
		// ext2/3/4: has_journal (compat 0x4), extents or 64bit (incompat 0x40, 0x80).
		t := "ext2"
		compat := binary.LittleEndian.Uint32(b[1024+0x5c:])
		incompat := binary.LittleEndian.Uint32(b[1024+0x60:])
		if compat&0x4 != 0 {
			t = "ext3"
		}
		if incompat&(0x40|0x80) != 0 {
			t = "ext4"
		}
		u := b[1024+0x68 : 1024+0x78]
		return FS{Type: t, Label: str(1024+0x78, 16), UUID: fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])}
	case at(3, "NTFS    "):
		return FS{Type: "ntfs"} // the label lives in the MFT, not the boot sector
	case at(3, "EXFAT   "):
		return FS{Type: "exfat"}
	case at(0x52, "FAT32   "):
		return FS{Type: "vfat", Label: fatLabel(str(0x47, 11)), UUID: fatSerial(0x43)}
	case at(0x36, "FAT12   "), at(0x36, "FAT16   "), at(0x36, "FAT     "):
		return FS{Type: "vfat", Label: fatLabel(str(0x2b, 11)), UUID: fatSerial(0x27)}
	case at(0, "XFSB"):
		return FS{Type: "xfs", Label: str(0x6c, 12)}
	case at(0x10040, "_BHRfS_M"):
		return FS{Type: "btrfs", Label: str(0x1012b, 256)}
	case at(4096-10, "SWAPSPACE2"), at(4096-10, "SWAP-SPACE"):
		return FS{Type: "swap", Label: str(1024+0x1c, 16)}
	}
	iso := make([]byte, 2048)
	if n, _ := r.ReadAt(iso, 0x8000); n == len(iso) && string(iso[1:6]) == "CD001" {
		return FS{Type: "iso9660", Label: strings.TrimSpace(string(iso[40:72]))}
	}
	return FS{}
}

func fatLabel(s string) string {
	if s == "NO NAME" {
		return ""
	}
	return s
}
