package diskrestore

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
)

// detectFS recognises the common file systems by their superblock magic
// and returns their type (blkid's names) and label. Unknown: "", "".
func detectFS(r io.ReaderAt) (fsType, label string) {
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
		return t, str(1024+0x78, 16)
	case at(3, "NTFS    "):
		return "ntfs", "" // the label lives in the MFT, not the boot sector
	case at(3, "EXFAT   "):
		return "exfat", ""
	case at(0x52, "FAT32   "):
		return "vfat", fatLabel(str(0x47, 11))
	case at(0x36, "FAT12   "), at(0x36, "FAT16   "), at(0x36, "FAT     "):
		return "vfat", fatLabel(str(0x2b, 11))
	case at(0, "XFSB"):
		return "xfs", str(0x6c, 12)
	case at(0x10040, "_BHRfS_M"):
		return "btrfs", str(0x1012b, 256)
	case at(4096-10, "SWAPSPACE2"), at(4096-10, "SWAP-SPACE"):
		return "swap", str(1024+0x1c, 16)
	}
	return "", ""
}

func fatLabel(s string) string {
	if s == "NO NAME" {
		return ""
	}
	return s
}
