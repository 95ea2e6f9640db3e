package testdisk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsedDiskBuild builds a small used disk and checks what the benchmark
// and the restore tests rely on: the GPT lists the three partitions, each
// file system checks clean, its kept files read back identical with its own
// tools, about the asked share is live, and the data of deleted files is
// still in the partition's free blocks (so a capture that copies free blocks
// would carry it).
func TestUsedDiskBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("building a used disk needs root (loop devices)")
	}
	if tool := MissingUsedTool(); tool != "" {
		t.Skipf("%s is not installed", tool)
	}
	img := filepath.Join(t.TempDir(), "used.img")
	const size = 256 << 20
	parts, err := UsedDisk{Size: size, Seed: 15}.Build(img)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sgdisk", "-p", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -p %s: %v: %s", img, err, out)
	}
	if got := strings.Count(string(out), "\n   "); got != 3 {
		t.Errorf("sgdisk -p %s lists %d partitions, want 3:\n%s", img, got, out)
	}
	disk, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	wantFS := []string{"ext4", "vfat", "ntfs"}
	for i, p := range parts {
		if p.FS != wantFS[i] {
			t.Errorf("partition %d: got file system %s, want %s", p.Number, p.FS, wantFS[i])
		}
		n := p.End - p.Start
		if p.Live < n*15/100 || p.Live > n*30/100 {
			t.Errorf("partition %d (%s): got %d live bytes, want 15-30%% of %d", p.Number, p.FS, p.Live, n)
		}
		if p.Deleted < n*15/100 {
			t.Errorf("partition %d (%s): got %d deleted bytes, want at least 15%% of %d", p.Number, p.FS, p.Deleted, n)
		}
		if len(p.Files) < 2 || len(p.Gone) == 0 {
			t.Fatalf("partition %d (%s): got %d files to read back and %d deleted ones, want at least 2 and 1", p.Number, p.FS, len(p.Files), len(p.Gone))
		}
		dev, err := LoopRange(img, p.Start, n, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Verify(dev); err != nil {
			t.Error(err)
		}
		if err := Detach(dev); err != nil {
			t.Error(err)
		}
		for _, g := range p.Gone {
			if !bytes.Contains(disk[p.Start:p.End], g.Head) {
				t.Errorf("partition %d (%s): the data of deleted file %s is not in the partition, want it left in a free block", p.Number, p.FS, g.Path)
			}
		}
	}
}

// TestUsedPartitionVerifyFindsDamage: Verify fails, naming the file, when a
// kept file's bytes changed on the disk, so a restore that loses data
// cannot pass the benchmark's check.
func TestUsedPartitionVerifyFindsDamage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("building a used disk needs root (loop devices)")
	}
	if tool := MissingUsedTool(); tool != "" {
		t.Skipf("%s is not installed", tool)
	}
	img := filepath.Join(t.TempDir(), "used.img")
	parts, err := UsedDisk{Size: 256 << 20, Seed: 16}.Build(img)
	if err != nil {
		t.Fatal(err)
	}
	p := parts[1] // FAT: a file's clusters can be found with its content
	f := p.Files[0]
	disk, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := LoopRange(img, p.Start, p.End-p.Start, false)
	if err != nil {
		t.Fatal(err)
	}
	content, err := p.ReadFile(dev, f.Path)
	Detach(dev)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(disk[p.Start:p.End], content[:512])
	if at < 0 {
		t.Fatalf("partition %d: the first sector of %s is not on the disk", p.Number, f.Path)
	}
	w, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 512), p.Start+int64(at)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	dev, err = LoopRange(img, p.Start, p.End-p.Start, false)
	if err != nil {
		t.Fatal(err)
	}
	defer Detach(dev)
	err = p.Verify(dev)
	if err == nil || !strings.Contains(err.Error(), f.Path) {
		t.Errorf("Verify after zeroing a sector of %s: got %v, want an error naming the file", f.Path, err)
	}
}
