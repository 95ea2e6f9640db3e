package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompareDisk: the bench's restore check passes only when the target
// holds the source's bytes and zeros in the snapshot's unused ranges, and
// its error says where and what differs.
func TestCompareDisk(t *testing.T) {
	const size = 3 << 20
	m := &benchManifest{Version: 3, Extents: []benchExtent{{Kind: "partition", Partition: 1, Offset: 1 << 20, Length: 2 << 20, FS: "ext4", Capture: "used"}}}
	m.Extents[0].Unused = append(m.Extents[0].Unused, struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
	}{Offset: 2 << 20, Length: 64 << 10})
	source := make([]byte, size)
	for i := range source {
		source[i] = byte(i%251 + 1)
	}
	restored := func() []byte {
		b := append([]byte(nil), source...)
		clear(b[2<<20 : 2<<20+64<<10])
		clear(b[2<<20+128<<10 : 2<<20+132<<10]) // a short free gap, stored as zeros
		clear(b[34*512 : 1<<20])                // outside every extent and table area: not stored
		return b
	}
	tests := []struct {
		name    string
		target  func() []byte
		wantErr string
	}{
		{"unused zeroed", restored, ""},
		{"old data left in an unused range", func() []byte { b := restored(); b[2<<20+100] = 7; return b }, "target byte 2097252 (in partition 1 (ext4, capture \"used\")) keeps old data in an unused range"},
		{"short free gap not zero", func() []byte { b := restored(); b[2<<20+130<<10] = 1; return b }, "target byte 2230272 (in partition 1 (ext4, capture \"used\")) is a free block of the file system but not zero"},
		{"used byte differs", func() []byte { b := restored(); b[1<<20+5] ^= 0xff; return b }, "target byte 1048581 (in partition 1 (ext4, capture \"used\")) differs from the source"},
		{"old bytes outside every partition", func() []byte { b := restored(); b[20000] = 9; return b }, "target byte 20000 (outside every extent) keeps old data"},
		{"table area differs", func() []byte { b := restored(); b[512] ^= 1; return b }, "target byte 512 (outside every extent) differs"},
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "source.img")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := filepath.Join(t.TempDir(), "target.img")
			if err := os.WriteFile(tgt, tt.target(), 0o644); err != nil {
				t.Fatal(err)
			}
			err := compareDisk(src, tgt, size, m, [][2]int64{{2<<20 + 128<<10, 2<<20 + 132<<10}})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("compareDisk(%s): got %v, want no error", tgt, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("compareDisk(%s): got %v, want an error containing %q", tgt, err, tt.wantErr)
			}
		})
	}
}
