package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// usedManifest is gptManifest in version 3 with the partition captured
// used-blocks: its first and last 64 KiB are stored, the 896 KiB between
// them are unused.
var usedManifest = strings.NewReplacer(
	`"version": 2`, `"version": 3`,
	`{"kind": "partition", "offset": 1048576, "length": 1048576, "partition": 1}`,
	`{"kind": "partition", "offset": 1048576, "length": 1048576, "partition": 1, "fs": "ext4", "capture": "used",
	  "unused": [{"offset": 1114112, "length": 917504}]}`,
	`{"offset": 1048576, "length": 1048576, "segment": 0, "frame_offset": 500, "frame_length": 1000, "zero": true, "sha256": "`+sha1s+`"}`,
	`{"offset": 1048576, "length": 65536, "segment": 0, "frame_offset": 500, "frame_length": 700, "zero": true, "sha256": "`+sha1s+`"},
	 {"offset": 2031616, "length": 65536, "segment": 0, "frame_offset": 1200, "frame_length": 700, "raw_sha256": "`+sha2s+`", "sha256": "`+sha1s+`"}`,
).Replace(gptManifest)

// TestParseManifestUnused feeds hostile variants of a version 3 manifest
// with unused ranges: each must be refused naming the extent or chunk.
func TestParseManifestUnused(t *testing.T) {
	m, err := ParseManifest([]byte(usedManifest))
	if err != nil {
		t.Fatalf("valid version 3 manifest refused: %v", err)
	}
	if got, want := m.UnusedBytes(), int64(917504); got != want {
		t.Errorf("UnusedBytes = %d, want %d", got, want)
	}
	if got, want := m.DataBytes(), int64(440+2*65536); got != want {
		t.Errorf("DataBytes = %d, want %d", got, want)
	}
	const unused = `"unused": [{"offset": 1114112, "length": 917504}]`
	tests := []struct{ name, from, to, wantErr string }{
		{"unused in version 2", `"version": 3`, `"version": 2`, "which format version 2 does not have"},
		{"fs in version 2", `"version": 3`, `"version": 2`, "extents[1] has fs, capture, note or unused"},
		{"unused without capture used", `"capture": "used",`, ``, `has unused ranges but is not captured "used"`},
		{"unknown capture mode", `"capture": "used"`, `"capture": "sparse"`, `capture "sparse"`},
		{"not 512-byte units", unused, `"unused": [{"offset": 1114113, "length": 917504}]`, "not a positive multiple of 512"},
		{"empty range", unused, `"unused": [{"offset": 1114112, "length": 0}]`, "not a positive multiple of 512"},
		{"negative length", unused, `"unused": [{"offset": 1114112, "length": -512}]`, "not a positive multiple of 512"},
		{"before the extent", unused, `"unused": [{"offset": 1047552, "length": 1024}]`, "leaves the extent"},
		{"past the extent", unused, `"unused": [{"offset": 1114112, "length": 1048576}]`, "leaves the extent"},
		{"overflowing length", unused, `"unused": [{"offset": 1114112, "length": 9223372036854775296}]`, "leaves the extent"},
		{"out of order", unused, `"unused": [{"offset": 1900544, "length": 512}, {"offset": 1114112, "length": 512}]`, "extents[1].unused[1]"},
		{"overlapping", unused, `"unused": [{"offset": 1114112, "length": 4096}, {"offset": 1115136, "length": 512}]`, "extents[1].unused[1]"},
		{"adjacent", unused, `"unused": [{"offset": 1114112, "length": 4096}, {"offset": 1118208, "length": 512}]`, "touches the range before it"},
		{"all unused", unused, `"unused": [{"offset": 1048576, "length": 1048576}]`, "unused from end to end"},
		{"boot area captured used", `{"kind": "boot-area", "offset": 0, "length": 440}`, `{"kind": "boot-area", "offset": 0, "length": 440, "capture": "used", "unused": [{"offset": 0, "length": 512}]}`, "boot-area extent captured"},
		{"chunk over unused bytes", `{"offset": 1048576, "length": 65536,`, `{"offset": 1048576, "length": 131072,`, "does not continue the chunks"},
		{"stored range not covered", `"unused": [{"offset": 1114112, "length": 917504}]`, `"unused": [{"offset": 1114112, "length": 851968}]`, "does not continue the chunks"},
		{"control bytes in note", `"fs": "ext4",`, `"fs": "ext4", "note": "a\u001b[2Jb",`, "not printable"},
		{"unknown key in range", `{"offset": 1114112, "length": 917504}`, `{"offset": 1114112, "length": 917504, "zero": true}`, `unknown field "zero"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.Replace(usedManifest, tt.from, tt.to, 1)
			if bad == usedManifest {
				t.Fatalf("replacement %q not found", tt.from)
			}
			_, err := ParseManifest([]byte(bad))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestCaptureUnusedRanges captures a disk whose partition has unused
// ranges: the snapshot stores only the stored runs, the manifest parses,
// and stock lz4 yields exactly the stored runs back to back.
func TestCaptureUnusedRanges(t *testing.T) {
	const size = 8 << 20
	disk := make([]byte, size)
	if _, err := rand.Read(disk); err != nil {
		t.Fatal(err)
	}
	ext := Extent{Kind: ExtentDisk, Offset: 0, Length: size, FS: "ext4", Capture: CaptureUsed,
		Unused: []Range{{Offset: 512, Length: 1 << 20}, {Offset: 3 << 20, Length: 3<<20 + 4096}, {Offset: size - 8192, Length: 8192}}}
	dir := filepath.Join(t.TempDir(), "snap")
	m, err := Capture(context.Background(), bytes.NewReader(disk), dir, CaptureOptions{
		DiskSize: size, ChunkSize: 1 << 20, Extents: []Extent{ext}, Layout: &Layout{Table: "none", LogicalSectorSize: 512, PhysicalSectorSize: 512, DiskSize: size},
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, r := range ext.StoredRuns() {
		want = append(want, disk[r.Offset:r.End()]...)
	}
	if got := m.DataBytes(); got != int64(len(want)) {
		t.Errorf("DataBytes = %d, want %d (the stored runs)", got, len(want))
	}
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseManifest(data); err != nil {
		t.Fatalf("captured manifest refused: %v", err)
	}
	if _, err := exec.LookPath("lz4"); err != nil {
		t.Skip("lz4 not installed")
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "data.*"))
	cmd := exec.Command("sh", "-c", "cat "+strings.Join(segs, " ")+" | lz4 -dc")
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("lz4 -dc: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("lz4 -dc of the segments gives %d bytes, want the %d bytes of the stored runs", len(got), len(want))
	}
}

// TestNoteText checks the cleaning of text for Extent.Note: control
// characters replaced, cut at a rune boundary to MaxNoteLength bytes.
func TestNoteText(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"},
		{"esc\x1b[2J", "esc?[2J"},
		{strings.Repeat("é", 600), strings.Repeat("é", 512)},
	} {
		if got := NoteText(tt.in); got != tt.want {
			t.Errorf("NoteText(%.20q) = %.20q (%d bytes), want %.20q (%d bytes)", tt.in, got, len(got), tt.want, len(tt.want))
		}
	}
}
