package drill

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/snapshot"
)

// ext4Image makes a 40 MiB image with an ext4 file system at 1 MiB
// (sectors 2048..), and the manifest layout naming it.
func ext4Image(t *testing.T) (string, *snapshot.Manifest) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(40 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "offset=1048576", img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	m := &snapshot.Manifest{DiskSize: 40 << 20, Layout: &snapshot.Layout{Table: "gpt", LogicalSectorSize: 512,
		Partitions: []snapshot.Partition{{Number: 1, Start: 2048, Size: 65536, FSType: "ext4"}}}}
	return img, m
}

func TestCheckFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	t.Run("clean", func(t *testing.T) {
		img, m := ext4Image(t)
		detail, err := CheckFS(img, m)
		if err != nil || detail != "clean: 1:ext4" {
			t.Fatalf("CheckFS = %q, %v; want clean: 1:ext4", detail, err)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		img, m := ext4Image(t)
		f, _ := os.OpenFile(img, os.O_RDWR, 0)
		// The root directory's inode table region and the block group
		// descriptors: zero 1 MiB after the superblock.
		f.WriteAt(make([]byte, 1<<20), 1<<20+4096)
		f.Close()
		_, err := CheckFS(img, m)
		if err == nil || !strings.Contains(err.Error(), "partition 1 (ext4) does not check clean") {
			t.Fatalf("CheckFS on a damaged ext4 = %v; want partition 1 named as not clean", err)
		}
	})
	t.Run("no file system", func(t *testing.T) {
		img, m := ext4Image(t)
		m.Layout.Partitions[0].FSType = ""
		if _, err := CheckFS(img, m); err == nil || !strings.Contains(err.Error(), "no ext2/3/4 or FAT file system") {
			t.Fatalf("CheckFS with no file system = %v; want it refused", err)
		}
	})
}
