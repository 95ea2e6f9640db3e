package machine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// A restore that failed and cleared the table is resumed from a journal
// that says every chunk is on the disk: the table is written again and the
// chunks on the cleared sectors (here the MBR boot code) are restored again.
func TestApplyResumeAfterClearedTable(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	if _, err := (testdisk.Sample{Size: 64 << 20, ESPSize: 33 << 20, ExtSize: 16 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 2 << 20, Seed: 3}).Build(src); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	f.WriteAt(testdisk.RandomBytes(4, 440), 0) // boot code in the protective MBR
	fi, _ := f.Stat()
	layout, extents, err := diskrestore.ReadLayout(f, fi.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "snap")
	if _, err := snapshot.Capture(context.Background(), f, snapDir, snapshot.CaptureOptions{
		DiskSize: fi.Size(), Layout: layout, Extents: extents, ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	snap, err := snapshot.Open(context.Background(), snapDir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()

	tg, err := restore.OpenTarget(filepath.Join(dir, "target.img"), 0, fi.Size(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.File.Close()
	if _, err := Apply(context.Background(), snap, tg.File, ApplyOptions{FreshTarget: true}); err != nil {
		t.Fatal(err)
	}
	// The failed run's way out: the table (and the boot code) cleared.
	if err := diskrestore.ClearTable(tg.File); err != nil {
		t.Fatal(err)
	}
	a, err := Apply(context.Background(), snap, tg.File, ApplyOptions{
		Resume: true,
		Skip:   func(int) bool { return true }, // the journal: everything was written
	})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	redone := a.Restore.Chunks
	if !a.LayoutWritten || redone == 0 || redone == len(snap.Manifest.Chunks) {
		t.Errorf("resume wrote the layout %v and %d of %d chunks; want the layout and only the chunks on the cleared sectors",
			a.LayoutWritten, redone, len(snap.Manifest.Chunks))
	}
	want, _ := os.ReadFile(src)
	got, _ := os.ReadFile(tg.Path)
	if !bytes.Equal(got, want) {
		t.Fatal("the resumed disk differs from the source")
	}
}
