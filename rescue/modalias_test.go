package rescue

import (
	"os"
	"strings"
	"testing"
)

func TestAliasMatch(t *testing.T) {
	f, err := os.Open("testdata/modules.alias")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := ParseAliases(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ modalias, want string }{
		{"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00", "virtio_blk virtio_pci"},
		{"virtio:d00000002v00001AF4", "virtio_blk"},
		{"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", "nvme"},
		{"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", "ahci"},
		{"usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00", "usb_storage"},
		{"pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", "xhci_pci"},
		{"scsi:t-0x00", "sd_mod"},
		{"scsi:t-0x07", "sd_mod"},
		{"scsi:t-0x05", ""},
		{"acpi:PNP0501:", "serial_thing"},
		{"acpi:PNP0A01:", ""},
		{"fs-vfat", "vfat"},
		{"usb-storage-alias", "usb_storage"},
		{"pci:v00008086d00001234sv0sd0bc02sc00i00", ""},
	} {
		if got := strings.Join(tab.Match(tc.modalias), " "); got != tc.want {
			t.Errorf("modalias %s: got modules %q, want %q", tc.modalias, got, tc.want)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"a*b", "aXYZb", true},
		{"a*b", "aXYZ", false},
		{"*", "", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[a-c]x", "bx", true},
		{"[!a-c]x", "bx", false},
		{"[^a-c]x", "dx", true},
		{"a*b*c", "a/b/c", true},
		{"[]]", "]", true},
		{"a[", "a[", true},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q): got %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, os.ErrClosed
	}
	return copy(p, b[off:]), nil
}
