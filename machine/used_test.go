package machine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/fsmap"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// usedSnapshot captures the GPT sample disk in format version 3 with two
// partitions captured used-blocks, their free space given by hand (the
// fsmap readers have their own tests): in partition 1, 2000 unused ranges
// of 7 KiB with 4 KiB used between them (a fragmented file system); in
// partition 3, two ranges of a MiB. It returns the snapshot and the disk
// a restore must produce: the source with the unused ranges zeroed.
func usedSnapshot(t *testing.T) (*snapshot.Snapshot, []byte) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptSource(t, src)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	layout, extents, err := diskrestore.ReadLayout(f, fi.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range extents {
		var unused []snapshot.Range
		switch e.Partition {
		case 1:
			for k := range int64(2000) {
				unused = append(unused, snapshot.Range{Offset: e.Offset + mib + k*(7<<10+4<<10), Length: 7 << 10})
			}
		case 3:
			unused = []snapshot.Range{{Offset: e.Offset + 512<<10, Length: mib}, {Offset: e.Offset + 2*mib, Length: mib}}
		default:
			continue
		}
		extents[i].FS, extents[i].Capture, extents[i].Unused = "test", snapshot.CaptureUsed, unused
		for _, u := range unused {
			clear(want[u.Offset:u.End()])
		}
	}
	snapDir := filepath.Join(dir, "snap")
	if _, err := snapshot.Capture(context.Background(), f, snapDir, snapshot.CaptureOptions{
		DiskSize: fi.Size(), Layout: layout, Extents: extents, ChunkSize: mib}); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(context.Background(), snapDir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snap.Close() })
	if snap.Manifest.Version != 3 || snap.Manifest.UnusedBytes() != 2000*7<<10+2*mib {
		t.Fatalf("snapshot version %d with %d unused bytes: not the version 3 snapshot the test needs", snap.Manifest.Version, snap.Manifest.UnusedBytes())
	}
	return snap, want
}

// checkDisk compares dev with want: every chunk, and every unused range
// (zeros, unless oldUnused: then they must still hold something else).
func checkDisk(t *testing.T, dev string, m *snapshot.Manifest, want []byte, oldUnused bool) {
	t.Helper()
	got := make([]byte, len(want))
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, c := range m.Chunks {
		if !bytes.Equal(got[c.Offset:c.Offset+c.Length], want[c.Offset:c.Offset+c.Length]) {
			if bad++; bad <= 3 {
				t.Errorf("%s: chunk %d (offset %d, %d bytes) differs from the snapshot", dev, i, c.Offset, c.Length)
			}
		}
	}
	zeroRanges, ranges := 0, 0
	for _, e := range m.Extents {
		for _, u := range e.Unused {
			ranges++
			if isZero(got[u.Offset:u.End()]) {
				zeroRanges++
			} else if !oldUnused && zeroRanges+3 >= ranges {
				t.Errorf("%s: unused range at %d (%d bytes) of partition %d does not read as zeros", dev, u.Offset, u.Length, e.Partition)
			}
		}
	}
	switch {
	case !oldUnused && zeroRanges != ranges:
		t.Errorf("%s: %d of %d unused ranges read as zeros, want all", dev, zeroRanges, ranges)
	case !oldUnused && !bytes.Equal(got, want):
		t.Errorf("%s differs from the source with its unused ranges zeroed", dev)
	case oldUnused && zeroRanges == ranges:
		t.Errorf("%s: with --wipe signatures every unused range reads as zeros; want the old bytes left", dev)
	}
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// A version 3 snapshot restored onto a used disk (random bytes and old
// signatures) on a loop device: every chunk holds the snapshot's bytes and
// every unused range reads as zeros (wipe auto and full), or keeps the old
// bytes and the summary says so (wipe signatures). The result counts the
// stored bytes written and the unused bytes zeroed apart, and the 2000
// small unused ranges do not cost a zeroing call each.
func TestUsedBlocksRestore(t *testing.T) {
	snap, want := usedSnapshot(t)
	m := snap.Manifest
	ranges := 0
	for _, e := range m.Extents {
		ranges += len(e.Unused)
	}
	for _, tc := range []struct {
		wipe      string
		oldUnused bool
	}{
		{WipeAuto, false},
		{WipeFull, false},
		{WipeSignatures, true},
	} {
		t.Run(tc.wipe, func(t *testing.T) {
			used := filepath.Join(t.TempDir(), "used.img")
			usedDisk(t, used, m.DiskSize)
			dev := testdisk.Loop(t, used, 0)
			a := applyTo(t, snap, dev, ApplyOptions{Wipe: tc.wipe})
			checkDisk(t, dev, m, want, tc.oldUnused)
			w, r := a.Wipe, a.Restore
			if got := r.BytesWritten + r.BytesZeroed; got != m.DataBytes() {
				t.Errorf("%s: restore wrote %d + zeroed %d bytes of chunks, want the %d stored bytes", dev, r.BytesWritten, r.BytesZeroed, m.DataBytes())
			}
			if w.Unused != m.UnusedBytes() {
				t.Errorf("%s: wipe reports %d unused bytes, want %d", dev, w.Unused, m.UnusedBytes())
			}
			if tc.oldUnused {
				if w.UnusedZeroed >= w.Unused || !w.OldRemains {
					t.Errorf("%s --wipe signatures: got %d of %d unused bytes zeroed, old remains %v; want some left and said so", dev, w.UnusedZeroed, w.Unused, w.OldRemains)
				}
				return
			}
			if w.UnusedZeroed != w.Unused {
				t.Errorf("%s --wipe %s: got %d of %d unused bytes zeroed, want all", dev, tc.wipe, w.UnusedZeroed, w.Unused)
			}
			t.Logf("%s: %d unused ranges zeroed in %d calls, %.3fs (%s)", dev, ranges, w.Calls, w.Seconds, w.Method)
			if w.Calls > ranges/10 {
				t.Errorf("%s: %d zeroing calls for %d unused ranges; want the short used runs between them bridged (at most %d calls)", dev, w.Calls, ranges, ranges/10)
			}
		})
	}
}

// A delta restore onto a disk that holds the restored snapshot but with a
// changed chunk and old bytes in an unused range compares the chunks only:
// it rewrites the changed chunk, skips the others, and the unused range
// reads as zeros again.
func TestUsedBlocksDeltaRestore(t *testing.T) {
	snap, want := usedSnapshot(t)
	m := snap.Manifest
	used := filepath.Join(t.TempDir(), "used.img")
	usedDisk(t, used, m.DiskSize)
	dev := testdisk.Loop(t, used, 0)
	applyTo(t, snap, dev, ApplyOptions{})
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var changed snapshot.Chunk
	for _, c := range m.Chunks {
		if !c.Zero && c.Length == mib {
			changed = c
		}
	}
	var unused snapshot.Range
	for _, e := range m.Extents {
		if len(e.Unused) > 0 {
			unused = e.Unused[len(e.Unused)-1]
		}
	}
	f.WriteAt(testdisk.RandomBytes(5, int(changed.Length)), changed.Offset)
	f.WriteAt(testdisk.RandomBytes(6, int(unused.Length)), unused.Offset)
	f.Close()

	a := applyTo(t, snap, dev, ApplyOptions{Delta: true})
	checkDisk(t, dev, m, want, false)
	r := a.Restore
	if r.BytesWritten != changed.Length || r.BytesSkipped+r.BytesWritten+r.BytesZeroed != m.DataBytes() {
		t.Errorf("%s delta: got %d bytes written, %d skipped, %d zeroed; want the changed chunk's %d written and the rest of the %d stored bytes skipped",
			dev, r.BytesWritten, r.BytesSkipped, r.BytesZeroed, changed.Length, m.DataBytes())
	}
}

// A restore cut after a few checkpoints, then old bytes put back into the
// unused ranges, then resumed from the journal's chunks: the disk ends
// with every chunk and zeros in every unused range.
func TestUsedBlocksResumeAfterCut(t *testing.T) {
	snap, want := usedSnapshot(t)
	m := snap.Manifest
	used := filepath.Join(t.TempDir(), "used.img")
	usedDisk(t, used, m.DiskSize)
	dev := testdisk.Loop(t, used, 0)
	tg, err := restore.OpenTargetChecked(dev, m.DiskSize, true, func(size int64, ss int) error { return Check(m, size, ss, false) })
	if err != nil {
		t.Fatal(err)
	}
	defer tg.File.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	cut := errors.New("power cut")
	var journal []bool
	checkpoints := 0
	_, err = Apply(ctx, snap, tg.File, ApplyOptions{Jobs: 2, CheckpointInterval: 1,
		Checkpoint: func(done []bool) error {
			journal = done
			if checkpoints++; checkpoints == 5 {
				cancel(cut)
			}
			return nil
		}})
	if !errors.Is(err, cut) {
		t.Fatalf("the cut restore onto %s returned %v; want the cut", dev, err)
	}
	n := 0
	for _, d := range journal {
		if d {
			n++
		}
	}
	if n == 0 || n == len(m.Chunks) {
		t.Fatalf("the journal holds %d of %d chunks: the cut came at the wrong time", n, len(m.Chunks))
	}
	for _, e := range m.Extents {
		for k, u := range e.Unused {
			tg.File.WriteAt(testdisk.RandomBytes(uint64(k), int(u.Length)), u.Offset)
		}
	}
	a, err := Apply(context.Background(), snap, tg.File, ApplyOptions{Jobs: 2, Resume: true,
		Skip: func(i int) bool { return journal[i] }})
	if err != nil {
		t.Fatalf("resume onto %s: %v", dev, err)
	}
	if got := a.Restore.BytesWritten + a.Restore.BytesZeroed; got >= m.DataBytes() {
		t.Errorf("the resume restored %d bytes of chunks; want fewer than all %d (the journal's chunks skipped)", got, m.DataBytes())
	}
	checkDisk(t, dev, m, want, false)
}

// Real file systems: the sample disk's FAT32 ESP and ext4 (files from
// /usr/share/doc) get random bytes in every free block (the deleted data
// of earlier use), are captured in format version 3 with their free
// ranges from fsmap as unused, and restored onto a used disk on a loop
// device. Each partition then equals the source with its free blocks
// zeroed (so every file reads back identical), and e2fsck -fn and
// fsck.vfat -n find them clean.
func TestUsedBlocksRealFileSystems(t *testing.T) {
	needTools(t, "e2fsck", "fsck.vfat", "losetup")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	gptSource(t, src)
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	layout, extents, err := diskrestore.ReadLayout(f, fi.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	fsOf := map[int]string{}
	for i, e := range extents {
		if e.Kind != snapshot.ExtentPartition {
			continue
		}
		fm, err := fsmap.Read(io.NewSectionReader(f, e.Offset, e.Length), e.Length)
		if err != nil {
			t.Logf("partition %d: %v: stored whole", e.Partition, err)
			continue // the random partition
		}
		fsOf[e.Partition] = fm.FS
		extents[i].FS, extents[i].Capture = fm.FS, snapshot.CaptureUsed
		for k, r := range fm.Free {
			extents[i].Unused = append(extents[i].Unused, snapshot.Range{Offset: e.Offset + r.Offset, Length: r.Length})
			f.WriteAt(testdisk.RandomBytes(uint64(k), int(r.Length)), e.Offset+r.Offset) // deleted data
		}
	}
	if fsOf[1] != "vfat" || fsOf[2] != "ext4" {
		t.Fatalf("fsmap found %v on the sample disk's partitions; want vfat on 1 and ext4 on 2", fsOf)
	}
	want := make([]byte, fi.Size())
	if _, err := f.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	for _, e := range extents {
		for _, u := range e.Unused {
			clear(want[u.Offset:u.End()])
		}
	}
	snapDir := filepath.Join(dir, "snap")
	if _, err := snapshot.Capture(context.Background(), f, snapDir, snapshot.CaptureOptions{
		DiskSize: fi.Size(), Layout: layout, Extents: extents, ChunkSize: mib}); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(context.Background(), snapDir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	m := snap.Manifest
	if m.UnusedBytes() == 0 || m.DataBytes()+m.UnusedBytes() > fi.Size() {
		t.Fatalf("snapshot stores %d bytes with %d unused: not a used-blocks snapshot", m.DataBytes(), m.UnusedBytes())
	}
	used := filepath.Join(dir, "used.img")
	usedDisk(t, used, m.DiskSize)
	dev := testdisk.Loop(t, used, 0)
	applyTo(t, snap, dev, ApplyOptions{})
	checkDisk(t, dev, m, want, false)
	for _, e := range extents {
		fsck := map[string][]string{"ext4": {"e2fsck", "-fn"}, "vfat": {"fsck.vfat", "-n"}}[e.FS]
		if fsck == nil {
			continue
		}
		part := partLoop(t, used, e.Offset, e.Length)
		if out, err := exec.Command(fsck[0], append(fsck[1:], part)...).CombinedOutput(); err != nil {
			t.Errorf("%s of partition %d (%s) of %s after the restore: %v\n%s", strings.Join(fsck, " "), e.Partition, e.FS, dev, err, out)
		}
	}
}

// partLoop attaches bytes [off, off+n) of path read-only to a loop device
// (losetup -P makes no partition nodes on this machine) until the test ends.
func partLoop(t *testing.T, path string, off, n int64) string {
	t.Helper()
	out, err := exec.Command("losetup", "-r", "-f", "--show", "-o", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(n, 10), path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -o %d --sizelimit %d %s: %v: %s", off, n, path, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
