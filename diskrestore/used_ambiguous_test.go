package diskrestore

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/snapshot"
)

// TestUsedExtentsAmbiguousNoted checks that a partition with two file
// system signatures (one left over from an earlier format) is stored
// whole with a note that says so and names the way out, not silently.
func TestUsedExtentsAmbiguousNoted(t *testing.T) {
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		t.Skip("mkfs.vfat not installed")
	}
	const size = 40 << 20
	img := filepath.Join(t.TempDir(), "fat.img")
	if err := os.WriteFile(img, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.vfat", "-F", "32", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v\n%s", err, out)
	}
	disk, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// What is left of an ext4 that was there before: its superblock at
	// byte 1024, in the FAT32's reserved sectors.
	binary.LittleEndian.PutUint16(disk[1024+0x38:], 0xEF53) // magic
	binary.LittleEndian.PutUint32(disk[1024+0x20:], 32768)  // blocks per group
	binary.LittleEndian.PutUint32(disk[1024+0x4C:], 1)      // revision
	ext := []snapshot.Extent{{Kind: snapshot.ExtentDisk, Offset: 0, Length: size}}
	out, free, err := UsedExtents(bytes.NewReader(disk), ext, false)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Capture != "" || free[0] != nil {
		t.Fatalf("got capture %q with %d free ranges, want the extent stored whole", out[0].Capture, len(free[0]))
	}
	for _, w := range []string{"signatures", "wipefs"} {
		if !strings.Contains(out[0].Note, w) {
			t.Errorf("note %q does not mention %q", out[0].Note, w)
		}
	}
}
