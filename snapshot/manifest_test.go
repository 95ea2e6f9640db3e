package snapshot

import (
	"strings"
	"testing"
)

const validManifest = `{
 "format": "rewind-snapshot", "version": 1, "created": "2026-11-22T03:00:00Z",
 "source": {"path": "/dev/sda"}, "disk_size": 2097152, "chunk_size": 1048576,
 "segment_size": 1073741824, "compression": "lz4-frame", "hash": "sha256",
 "extents": [{"kind": "disk", "offset": 0, "length": 2097152}],
 "segments": [{"name": "data.000", "size": 2000}],
 "chunks": [
  {"offset": 0, "length": 1048576, "segment": 0, "frame_offset": 0, "frame_length": 1000, "zero": true,
   "sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
  {"offset": 1048576, "length": 1048576, "segment": 0, "frame_offset": 1000, "frame_length": 1000,
   "sha256": "1111111111111111111111111111111111111111111111111111111111111111"}]
}`

func TestParseManifest(t *testing.T) {
	if _, err := ParseManifest([]byte(validManifest)); err != nil {
		t.Fatalf("valid manifest refused: %v", err)
	}
	v2 := strings.Replace(strings.Replace(validManifest, `"version": 1`, `"version": 2`, 1), `"frame_length": 1000,
   "sha256": "1111`, `"frame_length": 1000, "raw_sha256": "2222222222222222222222222222222222222222222222222222222222222222",
   "sha256": "1111`, 1)
	if _, err := ParseManifest([]byte(v2)); err != nil {
		t.Fatalf("valid version 2 manifest refused: %v", err)
	}
	zeroRaw := strings.Replace(v2, `"zero": true,`, `"zero": true, "raw_sha256": "2222222222222222222222222222222222222222222222222222222222222222",`, 1)
	if _, err := ParseManifest([]byte(zeroRaw)); err == nil || !strings.Contains(err.Error(), "all-zero but has a raw_sha256") {
		t.Errorf("zero chunk with raw_sha256: got %v", err)
	}
	tests := []struct {
		name, from, to, wantErr string
	}{
		{"other format", `"rewind-snapshot"`, `"tarball"`, "not a Rewind snapshot"},
		{"newer version", `"version": 1`, `"version": 3`, "version 3"},
		{"v2 without raw hash", `"version": 1`, `"version": 2`, "malformed raw_sha256"},
		{"v1 with raw hash", `"frame_length": 1000,
   "sha256": "1111`, `"frame_length": 1000, "raw_sha256": "2222222222222222222222222222222222222222222222222222222222222222",
   "sha256": "1111`, "which format version 1 does not have"},
		{"zstd", `"lz4-frame"`, `"zstd"`, "compression"},
		{"chunk outside segment", `"frame_offset": 1000, "frame_length": 1000`, `"frame_offset": 1500, "frame_length": 1000`, "outside segment"},
		{"chunk past its extent", `"length": 2097152}]`, `"length": 1048577}]`, "does not continue"},
		{"overlapping chunks", `{"offset": 1048576, "length": 1048576, "segment": 0, "frame_offset": 1000`, `{"offset": 0, "length": 1048576, "segment": 0, "frame_offset": 1000`, "an overlap"},
		{"extent past the disk", `"disk_size": 2097152`, `"disk_size": 1048576`, "outside the disk"},
		{"bad hash", `"1111111111111111111111111111111111111111111111111111111111111111"`, `"11"`, "malformed sha256"},
		{"segment path escape", `"name": "data.000"`, `"name": "../etc/passwd"`, "invalid name"},
		{"unknown segment", `"segment": 0, "frame_offset": 1000`, `"segment": 3, "frame_offset": 1000`, "names segment 3"},
		{"tiny chunk size", `"chunk_size": 1048576`, `"chunk_size": 512`, "chunk_size"},
		{"not json", `{`, `[`, "not valid JSON"},
	}
	uncovered := strings.Replace(strings.Replace(validManifest, `"disk_size": 2097152`, `"disk_size": 4194304`, 1),
		`"length": 2097152}]`, `"length": 2097152}, {"kind": "boot-area", "offset": 3000000, "length": 10}]`, 1)
	if _, err := ParseManifest([]byte(uncovered)); err == nil || !strings.Contains(err.Error(), "uncovered") {
		t.Errorf("extent without chunks: got %v, want an error saying extents are uncovered", err)
	}
	for _, tt := range tests {
		bad := strings.Replace(validManifest, tt.from, tt.to, 1)
		if bad == validManifest {
			t.Fatalf("%s: replacement %q not found", tt.name, tt.from)
		}
		_, err := ParseManifest([]byte(bad))
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

// FuzzParseManifest checks that no input crashes the parser and that any
// manifest it accepts is self-consistent enough for a restore to index it.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(validManifest))
	f.Add([]byte(strings.Replace(validManifest, `"zero": true,`, ``, 1)))
	f.Add([]byte(`{"format":"rewind-snapshot","version":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		for i, c := range m.Chunks {
			seg := m.Segments[c.Segment]
			if c.FrameOffset+c.FrameLength > seg.Size || c.Length > m.ChunkSize || c.Offset+c.Length > m.DiskSize {
				t.Fatalf("accepted manifest has chunk %d out of bounds: %+v", i, c)
			}
		}
	})
}
