package fsmap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadSwap makes swap areas with mkswap over random data, for every
// page size: only the header page is used. Zeroing the rest keeps what
// blkid reads (the signature, UUID and label).
func TestReadSwap(t *testing.T) {
	tfsNeed(t, "mkswap", "blkid")
	tests := []struct {
		name string
		page int64
		size int64
	}{
		{"4 KiB pages", 4096, 32 << 20},
		{"8 KiB pages", 8192, 16 << 20},
		{"16 KiB pages", 16384, 16 << 20},
		{"64 KiB pages, size not a multiple of 512", 65536, 16<<20 + 700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tfsImage(t, t.TempDir(), tt.size, uint64(tt.size))
			tfsRun(t, "mkswap", "-p", itoa(tt.page), "-L", "rewind-swap", "-U", "0b8f2c4e-9a41-4c1b-9d55-6a2f0e7b3c11", img)
			m, err := tfsRead(t, img, 0)
			if err != nil {
				t.Fatalf("Read %s: %v", img, err)
			}
			want := []Range{{Offset: tt.page, Length: tt.size&^511 - tt.page}}
			if m.FS != "swap" || m.BlockSize != tt.page || len(m.Free) != 1 || m.Free[0] != want[0] {
				t.Fatalf("Read %s: got FS %q, block size %d, free %v; want swap, %d, %v", img, m.FS, m.BlockSize, m.Free, tt.page, want)
			}
			before := tfsRun(t, "blkid", "-p", "-o", "export", img)
			tfsZero(t, img, m.Free)
			if after := tfsRun(t, "blkid", "-p", "-o", "export", img); after != before || !strings.Contains(after, "UUID=0b8f2c4e-9a41-4c1b-9d55-6a2f0e7b3c11") {
				t.Errorf("blkid %s after zeroing the free range:\n%s\nwant, as before:\n%s", img, after, before)
			}
		})
	}
}

// TestReadSwapRefuses checks a swap area holding a hibernation image is
// refused (capturing only its header would lose the image) and that other
// signatures are not taken for a swap area.
func TestReadSwapRefuses(t *testing.T) {
	tfsNeed(t, "mkswap")
	tests := []struct {
		name string
		page int64
		sig  string // written at page-10 after mkswap ("" : no mkswap, random data)
		want error
		text string
	}{
		{"S1SUSPEND", 4096, "S1SUSPEND", ErrNotClean, "hibernation image"},
		{"S2SUSPEND", 4096, "S2SUSPEND", ErrNotClean, "hibernation image"},
		{"ULSUSPEND", 16384, "ULSUSPEND", ErrNotClean, "hibernation image"},
		{"LINHIB0001", 65536, "LINHIB0001", ErrNotClean, "--raw"},
		{"TuxOnIce", 4096, "\xed\xc3\x02\xe9\x98\x56\xe5\x0c", ErrNotClean, "resume"},
		{"version 0", 4096, "SWAP-SPACE", ErrUnknown, ""},
		{"random data", 4096, "", ErrUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tfsImage(t, t.TempDir(), 8<<20, 7)
			if tt.sig != "" {
				tfsRun(t, "mkswap", "-p", itoa(tt.page), img)
				tfsPatch(t, img, tt.page-10, []byte(tt.sig))
			}
			m, err := tfsRead(t, img, 0)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Read %s with %q at byte %d: got map %v, error %v; want %v saying %q", img, tt.sig, tt.page-10, m, err, tt.want, tt.text)
			}
		})
	}
}

// TestReadSwapHeader checks a damaged swap header is reported, not mapped.
func TestReadSwapHeader(t *testing.T) {
	tfsNeed(t, "mkswap")
	tests := []struct {
		name  string
		patch []byte // at byte 1024: version, last_page
		text  string
	}{
		{"version 2", []byte{2, 0, 0, 0}, "header version 0x2"},
		{"last page past the partition", []byte{1, 0, 0, 0, 0, 0, 1, 0}, "ends at page 65536, the partition holds 2048 pages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "swap.img")
			if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			tfsRun(t, "mkswap", img)
			tfsPatch(t, img, swapVersionOff, tt.patch)
			m, err := tfsRead(t, img, 0)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Read %s: got map %v, error %v; want %v saying %q", img, m, err, ErrDamaged, tt.text)
			}
		})
	}
}
