package rescue

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// fatImage makes an 8 MiB FAT file system labelled label with volume ID
// id (8 hex digits), as mkfs.vfat makes a user's stick or internal disk.
func fatImage(t *testing.T, dir, name, label, id string) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		t.Skip("mkfs.vfat not installed")
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.vfat", "-C", "-n", label, "-i", id, p+".tmp", "8192").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v: %s", err, out)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// blkidUUID is what blkid says the file system's UUID is.
func blkidUUID(t *testing.T, dev string) string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-s", "UUID", "-o", "value", dev).Output()
	if err != nil {
		t.Fatalf("blkid %s: %v", dev, err)
	}
	return strings.TrimSpace(string(out))
}

// The rescue medium is the file system whose identity the image records,
// not the first one labelled REWIND: an internal disk labelled REWIND
// (here a loop device with a FAT file system made by mkfs.vfat -n REWIND)
// is not taken for it. Without a recorded identity the label decides, and
// two disks with it are refused, naming both.
func TestChooseMediaLoopDevices(t *testing.T) {
	dir := t.TempDir()
	stick := testdisk.Loop(t, fatImage(t, dir, "stick.img", "REWIND", "1A2B3C4D"), 0)
	copyOf := testdisk.Loop(t, fatImage(t, dir, "copy.img", "REWIND", "1A2B3C4D"), 0)
	internal := testdisk.Loop(t, fatImage(t, dir, "internal.img", "REWIND", "0BADF00D"), 0)
	other := testdisk.Loop(t, fatImage(t, dir, "other.img", "DATA", "12345678"), 0)
	if got := blkidUUID(t, stick); got != "1A2B-3C4D" {
		t.Fatalf("blkid %s: UUID %q, want 1A2B-3C4D", stick, got)
	}
	stickID := MediaID{Type: "vfat", UUID: "1A2B-3C4D"}
	devs := func(paths ...string) map[string]string {
		m := map[string]string{}
		for _, p := range paths {
			n := filepath.Base(p)
			m[n] = n
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		devs    map[string]string
		id      MediaID
		want    string // the device chosen, or "" for an error
		wantErr string
		noMedia bool // the error wraps errNoMedia: keep waiting for the stick
	}{
		{"identity: the stick, not the internal disk", devs(internal, stick, other), stickID, stick, "", false},
		{"identity: only the internal disk", devs(internal, other), stickID, "", "no file system has this rescue image's identity vfat 1A2B-3C4D; not the medium: " + internal + " (vfat 0BAD-F00D", true},
		{"identity: two copies of the stick", devs(stick, copyOf), stickID, "", "is on 2 disks: " + stick, false},
		{"identity: case of the UUID", devs(stick), MediaID{Type: "vfat", UUID: "1a2b-3c4d"}, stick, "", false},
		{"no identity: one labelled", devs(stick, other), MediaID{}, stick, "", false},
		{"no identity: two labelled", devs(internal, stick), MediaID{}, "", "file systems labelled REWIND are on 2 disks", false},
		{"no identity: none labelled", devs(other), MediaID{}, "", "no file system labelled REWIND", true},
	} {
		c, err := chooseMedia(probeMedia(tc.devs, tc.id), tc.id)
		switch {
		case tc.want != "" && (err != nil || c.Device != tc.want):
			t.Errorf("%s: got %s, %v; want %s", tc.name, c.Device, err, tc.want)
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: got %s, %v; want an error containing %q", tc.name, c.Device, err, tc.wantErr)
		case tc.want == "" && errors.Is(err, errNoMedia) != tc.noMedia:
			t.Errorf("%s: error %v wraps errNoMedia: %v, want %v", tc.name, err, !tc.noMedia, tc.noMedia)
		}
		if tc.name == "no identity: two labelled" && err != nil && !strings.Contains(err.Error(), internal) {
			t.Errorf("%s: the refusal %q does not name %s", tc.name, err, internal)
		}
	}
}

// An ISO 9660 medium is known by the UUID blkid shows for it, the volume's
// modification date, which 'rewind media build --format iso' sets.
func TestChooseMediaISO(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "rewind"), 0o755)
	os.WriteFile(filepath.Join(tree, "rewind", "plan.toml"), []byte("x"), 0o644)
	iso := filepath.Join(dir, "rescue.iso")
	if out, err := exec.Command("xorriso", "-as", "mkisofs", "-V", "REWIND", "--modification-date=2026112311271042", "-o", iso, tree).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v: %s", err, out)
	}
	dev := testdisk.Loop(t, iso, 0)
	want := blkidUUID(t, dev)
	if want != "2026-11-23-11-27-10-42" {
		t.Fatalf("blkid %s: UUID %q, want 2026-11-23-11-27-10-42", dev, want)
	}
	id := MediaID{Type: "iso9660", UUID: want}
	n := filepath.Base(dev)
	c, err := chooseMedia(probeMedia(map[string]string{n: n}, id), id)
	if err != nil || c.Device != dev || c.UUID != want {
		t.Errorf("ISO on %s: got %s (UUID %q), %v; want %s with UUID %s", dev, c.Device, c.UUID, err, dev, want)
	}
}

func TestReadMediaID(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string // "-" = no file
		want    MediaID
		wantErr string
	}{
		{"-", MediaID{}, ""},
		{"vfat 1A2B-3C4D\n", MediaID{Type: "vfat", UUID: "1A2B-3C4D"}, ""},
		{"iso9660 2026-11-23-11-27-10-42\n", MediaID{Type: "iso9660", UUID: "2026-11-23-11-27-10-42"}, ""},
		{"none\n", MediaID{None: true}, ""},
		{"REWIND\n", MediaID{}, `holds "REWIND", not a medium identity`},
		{"ntfs 1234\n", MediaID{}, "not a medium identity"},
	} {
		p := filepath.Join(dir, "media-id")
		os.Remove(p)
		if tc.content != "-" {
			os.WriteFile(p, []byte(tc.content), 0o644)
		}
		got, err := ReadMediaID(p)
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("media-id %q: got %+v, %v; want %+v", tc.content, got, err, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("media-id %q: got %v, want an error containing %q", tc.content, err, tc.wantErr)
		}
	}
}
