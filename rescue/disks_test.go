package rescue

import (
	"strings"
	"testing"
)

func TestSelectTarget(t *testing.T) {
	disks := []Disk{
		{Name: "sda", Path: "/dev/sda", Size: 64 << 20, Model: "QEMU HARDDISK", USB: true},
		{Name: "vda", Path: "/dev/vda", Size: 64 << 20, Serial: "target1"},
		{Name: "vdb", Path: "/dev/vdb", Size: 8 << 30, Serial: "big"},
		{Name: "vdc", Path: "/dev/vdc", Size: 8 << 30, Serial: "ro", ReadOnly: true},
	}
	media := map[string]string{"sda": "the rescue media"}
	for _, tc := range []struct {
		spec, want, err string
	}{
		{"size=64MiB", "vda", ""},
		{"serial=target1", "vda", ""},
		{"path=/dev/vdb", "vdb", ""},
		{"size=8GiB", "vdb", ""},
		{"size=8GiB,serial=ro", "", "read-only"},
		{"path=/dev/sda", "", "rescue media"},
		{"", "", "ambiguous"},
		{"serial=nope", "", "no disk matches"},
		{"colour=red", "", "unknown key"},
	} {
		d, err := SelectTarget(disks, tc.spec, media)
		switch {
		case tc.err == "" && (err != nil || d.Name != tc.want):
			t.Errorf("target %q: got %s, %v; want %s", tc.spec, d.Name, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("target %q: got %s, %v; want an error about %q", tc.spec, d.Name, err, tc.err)
		}
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{"8GiB": 8 << 30, "512MiB": 512 << 20, "1000": 1000, "8G": 8 << 30, "2TB": 2e12} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q): got %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-1G", "8XB", "GiB"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q): got no error", s)
		}
	}
}
