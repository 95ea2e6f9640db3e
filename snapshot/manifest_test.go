package snapshot

import (
	"strings"
	"testing"
)

const (
	sha1s = "1111111111111111111111111111111111111111111111111111111111111111"
	sha2s = "2222222222222222222222222222222222222222222222222222222222222222"
)

// gptManifest is a version 2 manifest of a 4 MiB disk with a GPT: one
// partition (sectors 2048-4095) and the boot code in front of the
// protective MBR's table.
const gptManifest = `{
 "format": "rewind-snapshot", "version": 2, "created": "2026-11-22T03:00:00Z",
 "source": {"path": "/dev/sda", "hostname": "pc1"}, "disk_size": 4194304, "chunk_size": 1048576,
 "segment_size": 1073741824, "compression": "lz4-frame", "hash": "sha256",
 "layout": {"table": "gpt", "logical_sector_size": 512, "physical_sector_size": 4096, "disk_size": 4194304,
  "disk_guid": "11111111-2222-3333-4444-555555555555", "first_usable_lba": 34, "last_usable_lba": 8158,
  "partition_entries": 128, "partition_entries_lba": 2,
  "partitions": [{"number": 1, "start": 2048, "size": 2048, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
   "guid": "AAAAAAAA-0000-4000-8000-000000000001", "name": "root"}],
  "mbr_tables": [{"sector": 0, "entries": "000200eeffffff01000000ff1f000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}]},
 "extents": [{"kind": "boot-area", "offset": 0, "length": 440}, {"kind": "partition", "offset": 1048576, "length": 1048576, "partition": 1}],
 "segments": [{"name": "data.000", "size": 2000}],
 "chunks": [
  {"offset": 0, "length": 440, "segment": 0, "frame_offset": 0, "frame_length": 500, "raw_sha256": "` + sha2s + `", "sha256": "` + sha1s + `"},
  {"offset": 1048576, "length": 1048576, "segment": 0, "frame_offset": 500, "frame_length": 1000, "zero": true, "sha256": "` + sha1s + `"}]
}`

// mbrManifest is a version 2 manifest of a 4 MiB MBR disk: primary 1
// (sectors 64-1087), extended 2 (2048-8191) with logical 5 (EBR 2048,
// sectors 2049-4095).
const mbrManifest = `{
 "format": "rewind-snapshot", "version": 2, "created": "2026-11-22T03:00:00Z",
 "source": {"path": "disk.img"}, "disk_size": 4194304, "chunk_size": 1048576,
 "segment_size": 1073741824, "compression": "lz4-frame", "hash": "sha256",
 "layout": {"table": "mbr", "logical_sector_size": 512, "physical_sector_size": 512, "disk_size": 4194304,
  "mbr_signature": "0xdeadbeef", "mbr_reserved": "5a5a",
  "partitions": [{"number": 1, "start": 64, "size": 1024, "type": "0x83", "bootable": true},
   {"number": 2, "start": 2048, "size": 6144, "type": "0x05", "extended": true},
   {"number": 5, "start": 2049, "size": 2047, "type": "0x83", "logical": true, "ebr": 2048}],
  "mbr_tables": [{"sector": 0, "entries": "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"},
   {"sector": 2048, "entries": "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}],
  "notes": ["nothing odd"]},
 "extents": [{"kind": "partition", "offset": 32768, "length": 524288, "partition": 1},
  {"kind": "partition", "offset": 1049088, "length": 1048064, "partition": 5}],
 "segments": [{"name": "data.000", "size": 2000}],
 "chunks": [
  {"offset": 32768, "length": 524288, "segment": 0, "frame_offset": 0, "frame_length": 500, "zero": true, "sha256": "` + sha1s + `"},
  {"offset": 1049088, "length": 1048064, "segment": 0, "frame_offset": 500, "frame_length": 1000, "zero": true, "sha256": "` + sha1s + `"}]
}`

// TestParseManifestStrict feeds hostile variants of valid manifests: each
// must be refused with an error that names the field or rule.
func TestParseManifestStrict(t *testing.T) {
	for name, base := range map[string]string{"gpt": gptManifest, "mbr": mbrManifest} {
		if _, err := ParseManifest([]byte(base)); err != nil {
			t.Fatalf("valid %s manifest refused: %v", name, err)
		}
	}
	tests := []struct {
		name, base, from, to, wantErr string
	}{
		{"unknown field", gptManifest, `"hash": "sha256",`, `"hash": "sha256", "extra": 1,`, `manifest: unknown field "extra"`},
		{"unknown nested field", gptManifest, `"zero": true,`, `"zero": true, "evil": 1,`, `chunks[1]: unknown field "evil"`},
		{"unknown partition field", gptManifest, `"name": "root"`, `"name": "root", "hidden": true`, `layout.partitions[0]: unknown field "hidden"`},
		{"unknown source field", gptManifest, `"hostname": "pc1"`, `"hostname": "pc1", "x": {"y": 1}`, `manifest.source: unknown field "x"`},
		{"case variant overrides", gptManifest, `"disk_size": 4194304, "chunk_size"`, `"disk_size": 4194304, "DISK_SIZE": 8388608, "chunk_size"`, `keys "disk_size" and "DISK_SIZE" differ only in case`},
		{"case variant alone", gptManifest, `"disk_size": 4194304, "chunk_size"`, `"Disk_Size": 4194304, "chunk_size"`, `key "Disk_Size" is not "disk_size"`},
		{"nested case variant", gptManifest, `"frame_offset": 500,`, `"frame_offset": 500, "Frame_Offset": 0,`, `chunks[1]: keys "frame_offset" and "Frame_Offset" differ only in case`},
		{"duplicate key", gptManifest, `"chunk_size": 1048576,`, `"chunk_size": 1048576, "chunk_size": 65536,`, `key "chunk_size" appears twice`},
		{"trailing object", gptManifest, "\n}", "\n}{}", "data after its JSON object"},
		{"trailing garbage", gptManifest, "\n}", "\n} x", "data after its JSON object"},
		{"frame offset overflow", gptManifest, `"frame_offset": 500, "frame_length": 1000`, `"frame_offset": 9223372036854775000, "frame_length": 1000`, "chunks[1] frame"},
		{"extent overflow", gptManifest, `{"kind": "boot-area", "offset": 0, "length": 440}`, `{"kind": "boot-area", "offset": 9223372036854775000, "length": 9223372036854775000}`, "extents[0]"},
		{"partition at 2^55", gptManifest, `"start": 2048, "size": 2048`, `"start": 36028797018963968, "size": 2048`, "partition 1 (start sector 36028797018963968"},
		{"partition that wraps", gptManifest, `"start": 2048, "size": 2048`, `"start": 2048, "size": 18446744073709551615`, "does not lie inside the disk"},
		{"partition leaves the disk", gptManifest, `"start": 2048, "size": 2048`, `"start": 2048, "size": 8000`, "does not lie inside the disk"},
		{"partition outside usable", gptManifest, `"start": 2048, "size": 2048`, `"start": 8150, "size": 20`, "outside the usable sectors 34-8158"},
		{"partition on the entries", gptManifest, `"partition_entries_lba": 2`, `"partition_entries_lba": 2048`, "partition 1 (sectors 2048-4095) lies on table sectors"},
		{"overlapping partitions", gptManifest, `"name": "root"}]`, `"name": "root"}, {"number": 2, "start": 4000, "size": 100, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}]`, "partitions 1 and 2 overlap"},
		{"extent not the partition", gptManifest, `"offset": 1048576, "length": 1048576, "partition": 1`, `"offset": 1048576, "length": 1048064, "partition": 1`, "does not match partition 1"},
		{"extent of no partition", gptManifest, `"length": 1048576, "partition": 1}`, `"length": 1048576, "partition": 3}`, "partition 3, which the layout does not have"},
		{"partition without extent", gptManifest, `{"kind": "partition", "offset": 1048576, "length": 1048576, "partition": 1}`, `{"kind": "boot-area", "offset": 1048576, "length": 1048576}`, "partition 1 has no extent"},
		{"boot area on the table", gptManifest, `"offset": 0, "length": 440}`, `"offset": 0, "length": 1000}`, "lies on table sectors (bytes 440-"},
		{"boot area naming a partition", gptManifest, `"offset": 0, "length": 440}`, `"offset": 0, "length": 440, "partition": 1}`, "is a boot area but names partition 1"},
		{"disk extent with a table", gptManifest, `{"kind": "boot-area"`, `{"kind": "disk"`, `kind "disk", which a disk with a gpt table does not have`},
		{"absurd disk size", gptManifest, `"disk_size": 4194304, "chunk_size"`, `"disk_size": 1152921504606846976, "chunk_size"`, "disk_size 1152921504606846976 is outside"},
		{"layout disk size differs", gptManifest, `"physical_sector_size": 4096, "disk_size": 4194304`, `"physical_sector_size": 4096, "disk_size": 8388608`, "layout.disk_size 8388608 differs"},
		{"odd sector size", gptManifest, `"logical_sector_size": 512`, `"logical_sector_size": 520`, "layout.logical_sector_size 520"},
		{"chunk size not 4K", gptManifest, `"chunk_size": 1048576`, `"chunk_size": 1048577`, "chunk_size 1048577 is not a multiple of 4096"},
		{"short chunk mid-extent", validManifest, `"chunk_size": 1048576`, `"chunk_size": 2097152`, "chunks[0] (offset 0) is 1048576 bytes but not the last chunk"},
		{"segment over segment_size", gptManifest, `"segment_size": 1073741824`, `"segment_size": 1000`, "segments[0]"},
		{"bad type guid", gptManifest, `"type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"`, `"type": "linux"`, `partition 1: type "linux"`},
		{"table none with extents", validManifest, `"kind": "disk", "offset": 0, "length": 2097152`, `"kind": "boot-area", "offset": 0, "length": 2097152`, `one extent of kind "disk"`},
		{"unknown table", gptManifest, `"table": "gpt"`, `"table": "apm"`, `layout.table "apm"`},
		{"gpt with mbr fields", gptManifest, `"name": "root"`, `"name": "root", "bootable": true`, "has MBR fields"},
		{"mbr table bad hex", mbrManifest, `{"sector": 2048, "entries": "00`, `{"sector": 2048, "entries": "zz`, "layout.mbr_tables[1].entries"},
		{"mbr table outside extended", mbrManifest, `{"sector": 2048, "entries"`, `{"sector": 9000, "entries"`, "layout.mbr_tables[1]: sector 9000"},
		{"logical outside extended", mbrManifest, `"start": 2049, "size": 2047`, `"start": 1100, "size": 900`, "logical partition 5 (sectors 1100-1999, EBR at 2048) is not inside"},
		{"logical ebr not recorded", mbrManifest, `"logical": true, "ebr": 2048`, `"logical": true, "ebr": 2049`, "not inside extended partition 2"},
		{"primaries overlap", mbrManifest, `"start": 64, "size": 1024`, `"start": 64, "size": 3000`, "partitions 1 (sectors 64-3063) and 2 (sectors 2048-8191) overlap"},
		{"two extended", mbrManifest, `"number": 1, "start": 64, "size": 1024, "type": "0x83", "bootable": true`, `"number": 1, "start": 64, "size": 1024, "type": "0x0f", "extended": true`, "both extended"},
		{"mbr type", mbrManifest, `"type": "0x83", "bootable"`, `"type": "0x183", "bootable"`, `MBR type "0x183"`},
		{"mbr reserved", mbrManifest, `"mbr_reserved": "5a5a"`, `"mbr_reserved": "5a5a5a"`, "layout.mbr_reserved"},
		{"EBR inside a partition", mbrManifest, `{"sector": 2048, "entries"`, `{"sector": 3000, "entries": "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}, {"sector": 2048, "entries"`, "partition 5 (sectors 2049-4095) lies on table sectors"},
		{"v1 with mbr tables", mbrManifest, `"version": 2`, `"version": 1`, "which format version 1 does not have"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.Replace(tt.base, tt.from, tt.to, 1)
			if bad == tt.base && tt.wantErr != "" {
				t.Fatalf("replacement %q not found", tt.from)
			}
			_, err := ParseManifest([]byte(bad))
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("got %v, want the manifest accepted", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

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
		{"newer version", `"version": 1`, `"version": 4`, "version 4"},
		{"v2 without raw hash", `"version": 1`, `"version": 2`, "malformed raw_sha256"},
		{"v1 with raw hash", `"frame_length": 1000,
   "sha256": "1111`, `"frame_length": 1000, "raw_sha256": "2222222222222222222222222222222222222222222222222222222222222222",
   "sha256": "1111`, "which format version 1 does not have"},
		{"zstd", `"lz4-frame"`, `"zstd"`, "compression"},
		{"chunk outside segment", `"frame_offset": 1000, "frame_length": 1000`, `"frame_offset": 1500, "frame_length": 1000`, "outside segment"},

		{"overlapping chunks", `{"offset": 1048576, "length": 1048576, "segment": 0, "frame_offset": 1000`, `{"offset": 0, "length": 1048576, "segment": 0, "frame_offset": 1000`, "an overlap"},
		{"extent past the disk", `"disk_size": 2097152`, `"disk_size": 1048576`, "outside the disk"},
		{"segment path escape", `"name": "data.000"`, `"name": "..\u002fetc"`, "invalid name"},
		{"bad hash", `"1111111111111111111111111111111111111111111111111111111111111111"`, `"11"`, "malformed sha256"},
		{"segment path escape", `"name": "data.000"`, `"name": "../etc/passwd"`, "invalid name"},
		{"unknown segment", `"segment": 0, "frame_offset": 1000`, `"segment": 3, "frame_offset": 1000`, "names segment 3"},
		{"tiny chunk size", `"chunk_size": 1048576`, `"chunk_size": 512`, "chunk_size"},
		{"not json", `{`, `[`, "not valid JSON"},
		{"extent overflow", `"offset": 0, "length": 2097152}]`, `"offset": 9223372036854775000, "length": 9223372036854775000}]`, "extents[0]"},
	}
	uncovered := strings.Replace(gptManifest, `"partition": 1}]`, `"partition": 1}, {"kind": "boot-area", "offset": 3000000, "length": 10}]`, 1)
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
// manifest it accepts is safe to restore: every sum of an offset and a
// length stays in bounds without overflow, chunks lie in their segments
// and extents, partitions lie inside the disk, and no extent lies on the
// table sectors restore recreates.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(validManifest))
	f.Add([]byte(gptManifest))
	f.Add([]byte(mbrManifest))
	f.Add([]byte(usedManifest))
	f.Add([]byte(strings.Replace(validManifest, `"zero": true,`, ``, 1)))
	f.Add([]byte(`{"format":"rewind-snapshot","version":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		const maxInt64 = 1<<63 - 1
		if m.DiskSize <= 0 || m.DiskSize > MaxDiskSize {
			t.Fatalf("accepted disk_size %d", m.DiskSize)
		}
		for i, c := range m.Chunks {
			seg := m.Segments[c.Segment]
			if c.FrameOffset < 0 || c.FrameLength <= 0 || c.FrameOffset > maxInt64-c.FrameLength || c.FrameOffset+c.FrameLength > seg.Size ||
				c.Length <= 0 || c.Length > m.ChunkSize || c.Offset < 0 || c.Offset+c.Length > m.DiskSize {
				t.Fatalf("accepted manifest has chunk %d out of bounds: %+v", i, c)
			}
		}
		for i, e := range m.Extents {
			if e.Offset < 0 || e.Length <= 0 || e.Offset > maxInt64-e.Length || e.Offset+e.Length > m.DiskSize {
				t.Fatalf("accepted manifest has extent %d out of bounds: %+v", i, e)
			}
			for _, u := range e.Unused {
				if u.Offset < e.Offset || u.Length <= 0 || u.Offset > e.Offset+e.Length-u.Length {
					t.Fatalf("accepted manifest has an unused range %+v outside extent %d", u, i)
				}
				if j := m.ChunkAt(u.Offset); j >= 0 || m.ChunkAt(u.End()-1) >= 0 {
					t.Fatalf("accepted manifest has a chunk over unused range %+v", u)
				}
			}
		}
		l := m.Layout
		if l == nil || l.Table == "none" {
			return
		}
		ss := uint64(l.LogicalSectorSize)
		sectors := uint64(m.DiskSize) / ss
		for _, p := range l.Partitions {
			if p.Start == 0 || p.Size == 0 || p.Start >= sectors || p.Size > sectors-p.Start {
				t.Fatalf("accepted partition %d outside the disk of %d sectors: %+v", p.Number, sectors, p)
			}
		}
		for _, e := range m.Extents {
			for _, s := range l.TableSpans() {
				if e.Offset < s.Offset+s.Length && s.Offset < e.Offset+e.Length {
					t.Fatalf("accepted extent %+v lies on table bytes %+v", e, s)
				}
			}
		}
	})
}
