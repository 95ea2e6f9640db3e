package fsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The swap reader. A Linux swap area (mkswap, version 1) is one header
// page (boot bits, version, size, bad pages, UUID, label) ending in the
// "SWAPSPACE2" signature, then pages of swapped-out memory that mean
// nothing once the machine is off. Only the header page is kept; the rest
// of the partition is free. The signature sits 10 bytes before the end of
// the page, and the page size is that of the machine that ran mkswap.

// swapPageSizes are the page sizes tried, smallest first (x86 and most
// arm64 use 4 KiB; arm64 and ppc64 also use 16 and 64 KiB).
var swapPageSizes = []int64{4096, 8192, 16384, 65536}

// swapSignatures are what may sit where the swap signature goes. Only
// SWAPSPACE2 is a swap area this reader maps; the hibernation ones mean
// the area holds a suspended system's memory image, which a restore
// without it would lose (the kernel writes the signature over SWAPSPACE2
// while the image is valid).
var swapSignatures = []struct {
	sig   string
	hiber bool
}{
	{"SWAPSPACE2", false},
	{"S1SUSPEND", true},
	{"S2SUSPEND", true},
	{"ULSUSPEND", true},
	{"LINHIB0001", true},
	{"\xed\xc3\x02\xe9\x98\x56\xe5\x0c", true}, // TuxOnIce
}

const (
	swapVersionOff  = 1024 // after the boot bits
	swapLastPageOff = 1028
)

// readSwap reads a swap area's map: the header page is used, the rest
// free. A swap area holding a hibernation image gives ErrNotClean; the old
// version 0 format ("SWAP-SPACE") gives ErrUnknown and is stored whole.
func readSwap(r io.ReaderAt, size int64) (*Map, error) {
	for _, page := range swapPageSizes {
		if size < page {
			break
		}
		sig := make([]byte, 10)
		if err := extReadAt(r, sig, page-10); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return nil, fmt.Errorf("swap: read the signature at byte %d: %w", page-10, err)
		}
		for _, s := range swapSignatures {
			if !bytes.HasPrefix(sig, []byte(s.sig)) {
				continue
			}
			if s.hiber {
				return nil, fmt.Errorf("swap: %w: it holds a hibernation image (signature %q at byte %d); resume the system from it or discard it (mkswap), or capture with --raw", ErrNotClean, s.sig, page-10)
			}
			return swapMap(r, size, page)
		}
	}
	return nil, ErrUnknown
}

// swapMap checks the version 1 header of a swap area with the given page
// size and returns its map.
func swapMap(r io.ReaderAt, size, page int64) (*Map, error) {
	var h [8]byte
	if err := extReadAt(r, h[:], swapVersionOff); err != nil {
		return nil, fmt.Errorf("swap: read the header at byte %d: %w", swapVersionOff, err)
	}
	// The header is in the byte order of the machine that wrote it.
	order := binary.ByteOrder(binary.LittleEndian)
	if binary.LittleEndian.Uint32(h[:]) != 1 {
		order = binary.BigEndian
	}
	if v := order.Uint32(h[:]); v != 1 {
		return nil, fmt.Errorf("swap: %w: header version %#x is not 1", ErrDamaged, binary.LittleEndian.Uint32(h[:]))
	}
	// last_page is the last usable page: the area spans last_page+1 pages.
	lastPage := int64(order.Uint32(h[4:]))
	if lastPage < 1 || lastPage >= size/page {
		return nil, fmt.Errorf("swap: %w: the header says the area ends at page %d, the partition holds %d pages of %d bytes", ErrDamaged, lastPage, size/page, page)
	}
	m := &Map{FS: "swap", BlockSize: page, Size: size}
	if end := size &^ 511; end > page {
		m.Free = []Range{{Offset: page, Length: end - page}}
	}
	return m, nil
}
