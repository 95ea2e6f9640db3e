package rescue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/fsmap"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/snapshot"
)

const mib = 1 << 20

// captureSource is a source disk of a capture test: a GPT disk image over
// old random data with real file systems (each holding a deleted file),
// attached to a loop device.
type captureSource struct {
	img   string // the image file
	dev   string // its loop device
	size  int64
	parts []*testdisk.FSImage
}

// newCaptureSource builds a source disk of size bytes with parts.
func newCaptureSource(t *testing.T, name string, size int64, seed uint64, parts ...*testdisk.FSImage) *captureSource {
	t.Helper()
	img := filepath.Join(t.TempDir(), name+".img")
	testdisk.GPTDisk(t, img, size, seed, parts...)
	return &captureSource{img: img, dev: testdisk.Loop(t, img, 0), size: size, parts: parts}
}

// want is what a restore of s must produce: its bytes with every block
// its file systems do not use zeroed (fsmap, read here on its own), and
// the bytes outside every partition after the first one zeroed (stray
// areas) up to the backup GPT.
func (s *captureSource) want(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(s.img)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(s.img)
	defer f.Close()
	l, _, err := diskrestore.ReadLayout(f, s.size, 512)
	if err != nil {
		t.Fatal(err)
	}
	covered := make([]bool, len(b)/512)
	first := int64(len(b))
	for _, p := range l.Partitions {
		off, n := int64(p.Start)*512, int64(p.Size)*512
		first = min(first, off)
		for k := off / 512; k < (off+n)/512; k++ {
			covered[k] = true
		}
		m, err := fsmap.Read(bytes.NewReader(b[off:off+n]), n)
		if err != nil {
			t.Fatalf("%s partition %d: %v", s.img, p.Number, err)
		}
		for _, r := range m.Free {
			clear(b[off+r.Offset : off+r.Offset+r.Length])
		}
	}
	for k := first / 512; k < int64(len(b))/512-33; k++ {
		if !covered[k] {
			clear(b[k*512 : (k+1)*512])
		}
	}
	return b
}

// captureRescue is a rescue flow for machine "srv1" with the given disk
// entries, no countdown, and a rescue medium that is the directory media.
func captureRescue(media string, entries []DiskEntry, segment string, overwrite bool) (*Rescue, *bytes.Buffer) {
	var console bytes.Buffer
	m := Machine{Name: "srv1", Action: ActionCapture, Disks: entries, SegmentSize: segment, Overwrite: overwrite}
	r := &Rescue{
		log:      &Logger{consoles: []io.Writer{&console}},
		media:    &Media{Dir: media, RW: true, FSType: "ext4"},
		report:   NewReport(time.Now()),
		settings: &Settings{Machine: m, Action: ActionCapture, Disks: entries, Countdown: 0, Default: DefaultRestore, After: AfterReboot},
		netUp:    true,
	}
	return r, &console
}

// testEnv is captureMachine's environment with a fixed clock.
func testEnv() captureEnv {
	return captureEnv{newUpload: newUploadClient, sources: pickSources, now: func() time.Time { return time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC) }}
}

// restoreCheck restores the snapshot at dir onto a disk of old random
// bytes and compares it with want, by hash; it also looks for each
// deleted file's content, which must not come back.
func restoreCheck(t *testing.T, dir string, want []byte, deleted [][]byte) *snapshot.Manifest {
	t.Helper()
	snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatalf("open the captured snapshot %s: %v", dir, err)
	}
	defer snap.Close()
	img := filepath.Join(t.TempDir(), "target.img")
	if err := os.WriteFile(img, testdisk.RandomBytes(99, len(want)), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := testdisk.Loop(t, img, 0)
	tf, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := machine.Apply(context.Background(), snap, tf, machine.ApplyOptions{}); err != nil {
		t.Fatalf("restore %s onto %s: %v", dir, dev, err)
	}
	tf.Close()
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		at := 0
		for at < len(got) && got[at] == want[at] {
			at++
		}
		t.Errorf("%s restored from %s differs from the source with its free blocks zeroed, first at byte %d", dev, dir, at)
	}
	for _, d := range deleted {
		if d != nil && bytes.Contains(got, d[:4096]) {
			t.Errorf("%s restored from %s holds a deleted file's content", dev, dir)
		}
	}
	return snap.Manifest
}

// TestCaptureTwoDisksToMedia: a machine with two disks (64 MiB with ext4,
// 48 MiB with FAT), captured at boot onto the rescue medium with 5 MiB
// segments: both snapshots appear under their names, each in several
// segments and named after the machine and the disk, each restores to its
// source's bytes with the free blocks zeroed, and the medium holds nothing
// else (no partial or old directories).
func TestCaptureTwoDisksToMedia(t *testing.T) {
	testdisk.NeedFS(t, "ext4", "vfat")
	dir := t.TempDir()
	sys := newCaptureSource(t, "sys", 64*mib, 1, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 40*mib, 12*mib, 2))
	data := newCaptureSource(t, "data", 48*mib, 3, testdisk.MakeFS(t, filepath.Join(dir, "vfat.img"), "vfat", 32*mib, 8*mib, 4))
	media := t.TempDir()
	r, console := captureRescue(media, []DiskEntry{
		{Snapshot: "media:/snapshots/srv1-sys", Target: "path=" + sys.dev},
		{Snapshot: "media:/snapshots/srv1-data", Target: "path=" + data.dev},
	}, "5MiB", false)

	status, err := r.capture(context.Background(), &Plan{}, testEnv())
	if err != nil || status != StatusSuccess {
		t.Fatalf("capture of %s and %s: %s, %v\n%s", sys.dev, data.dev, status, err, console)
	}
	for _, tc := range []struct {
		name string
		src  *captureSource
	}{{"srv1-sys", sys}, {"srv1-data", data}} {
		snapDir := filepath.Join(media, "snapshots", tc.name)
		var deleted [][]byte
		for _, p := range tc.src.parts {
			deleted = append(deleted, p.Deleted)
		}
		m := restoreCheck(t, snapDir, tc.src.want(t), deleted)
		if len(m.Segments) < 2 {
			t.Errorf("%s: %d segments, want more than one with segment_size 5MiB", snapDir, len(m.Segments))
		}
		for _, s := range m.Segments {
			if s.Size > 5*mib {
				t.Errorf("%s: segment %s holds %d bytes, more than segment_size 5MiB", snapDir, s.Name, s.Size)
			}
		}
		if m.Origin.Hostname != "srv1" || m.Origin.Path != tc.src.dev {
			t.Errorf("%s: origin %+v; want hostname srv1 and path %s", snapDir, m.Origin, tc.src.dev)
		}
		if m.UnusedBytes() == 0 {
			t.Errorf("%s: no unused bytes: the capture did not read the file systems' maps", snapDir)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(media, "snapshots"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "srv1-data srv1-sys" {
		t.Errorf("media:/snapshots holds %v; want only srv1-data and srv1-sys", names)
	}
	var captured int
	for _, s := range r.report.Steps {
		if s.Name == "capture" && s.Status == StepOK {
			captured++
		}
	}
	if captured != 2 {
		t.Errorf("report steps %+v; want two capture steps ok", r.report.Steps)
	}
}

// existingSnapshot captures a small disk into media:/snapshots/NAME as
// an earlier run would have, and returns the SHA-256 of its manifest.
func existingSnapshot(t *testing.T, media, name string) [32]byte {
	t.Helper()
	img := filepath.Join(t.TempDir(), "old.img")
	os.WriteFile(img, testdisk.RandomBytes(7, 2*mib), 0o644)
	f, _ := os.Open(img)
	defer f.Close()
	dir := filepath.Join(media, "snapshots", name)
	if _, err := snapshot.Capture(context.Background(), f, dir, snapshot.CaptureOptions{DiskSize: 2 * mib}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, snapshot.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// manifestSum is the SHA-256 of the manifest under dir, or zero.
func manifestSum(dir string) [32]byte {
	b, err := os.ReadFile(filepath.Join(dir, snapshot.ManifestName))
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

// dotEntries lists the dot-named entries of dir: what a capture left.
func dotEntries(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestCaptureExistingName: a snapshot already under the name is refused
// without overwrite before the disk is read (the source's loop device is
// detached afterwards: nothing held it), and with overwrite replaced by
// the new capture, leaving no old or partial directory.
func TestCaptureExistingName(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	src := newCaptureSource(t, "sys", 32*mib, 11, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 12))
	for _, tc := range []struct {
		name      string
		overwrite bool
		wantErr   string // "" : success
	}{
		{"no overwrite", false, "already exists on the rescue medium; nothing was read or written: set overwrite = true"},
		{"overwrite", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			media := t.TempDir()
			old := existingSnapshot(t, media, "srv1")
			r, console := captureRescue(media, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + src.dev}}, "", tc.overwrite)
			status, err := r.capture(context.Background(), &Plan{}, testEnv())
			snapDir := filepath.Join(media, "snapshots", "srv1")
			if tc.wantErr != "" {
				if err == nil || status != StatusFailed || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "media:/snapshots/srv1") {
					t.Fatalf("capture onto the existing media:/snapshots/srv1 without overwrite: %s, %v; want an error saying %q", status, err, tc.wantErr)
				}
				if manifestSum(snapDir) != old {
					t.Errorf("%s changed although the capture was refused", snapDir)
				}
				if strings.Contains(console.String(), "reading "+src.dev) {
					t.Errorf("the refused capture read %s:\n%s", src.dev, console)
				}
			} else {
				if err != nil || status != StatusSuccess {
					t.Fatalf("capture with overwrite: %s, %v\n%s", status, err, console)
				}
				if s := manifestSum(snapDir); s == old || s == [32]byte{} {
					t.Errorf("%s after the capture with overwrite: still the old snapshot, or none", snapDir)
				}
				restoreCheck(t, snapDir, src.want(t), nil)
			}
			if left := dotEntries(filepath.Join(media, "snapshots")); len(left) > 0 {
				t.Errorf("media:/snapshots holds %v after the capture; want no partial or old directories", left)
			}
		})
	}
}

// TestCaptureMediumFull: the medium (a 12 MiB tmpfs) holds an old
// snapshot of the name and has too little room for the new one: with
// overwrite the capture fails saying the medium is full and what to do,
// the partial directory is removed, the old snapshot is untouched, and the
// report names the failed disk.
func TestCaptureMediumFull(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	src := newCaptureSource(t, "sys", 48*mib, 21, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 40*mib, 20*mib, 22))
	media := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", media).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", media).Run() })
	old := existingSnapshot(t, media, "srv1")

	r, console := captureRescue(media, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + src.dev}}, "", true)
	status, err := r.capture(context.Background(), &Plan{}, testEnv())
	for _, want := range []string{"the rescue medium is full", "MiB free", "use a larger stick or upload to the lab server", "disk 1 (" + src.dev + ")", "untouched"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("capture of %s (20 MiB of files) onto a 12 MiB medium: %s, %v; want an error saying %q\n%s", src.dev, status, err, want, console)
		}
	}
	if status != StatusFailed {
		t.Errorf("status %s, want %s", status, StatusFailed)
	}
	if manifestSum(filepath.Join(media, "snapshots", "srv1")) != old {
		t.Errorf("the old media:/snapshots/srv1 changed after the failed capture")
	}
	if _, err := snapshot.Open(context.Background(), filepath.Join(media, "snapshots", "srv1"), snapshot.OpenOptions{}); err != nil {
		t.Errorf("the old media:/snapshots/srv1 no longer opens: %v", err)
	}
	if left := dotEntries(filepath.Join(media, "snapshots")); len(left) > 0 {
		t.Errorf("media:/snapshots holds %v after the failed capture; want the partial directory removed", left)
	}
	failed := false
	for _, s := range r.report.Steps {
		failed = failed || s.Name == "capture" && s.Status == StepFailed && strings.Contains(s.Detail, src.dev)
	}
	if !failed {
		t.Errorf("report steps %+v; want a failed capture step naming %s", r.report.Steps, src.dev)
	}
}

// TestCaptureRefusedDestinations: destinations a capture cannot write to
// are refused before any disk is looked at, each naming the location and
// the way out.
func TestCaptureRefusedDestinations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		loc     string
		segment string
		ro      bool
		want    string
	}{
		{"plain path", "/snapshots/srv1", "", false, "would vanish at the reboot"},
		{"medium root", "media:/", "", false, "names the medium's root"},
		{"read-only medium", "media:/snapshots/srv1", "", true, "mounted read-only"},
		{"segment above FAT32", "media:/snapshots/srv1", "4GiB", false, "FAT32 holds no file of 4 GiB or more"},
		{"segment below a frame", "media:/snapshots/srv1", "1MiB", false, "smaller than one stored chunk"},
		{"segment not a size", "media:/snapshots/srv1", "big", false, "segment_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			media := t.TempDir()
			r, _ := captureRescue(media, []DiskEntry{{Snapshot: tc.loc, Target: "path=/dev/nonexistent"}}, tc.segment, false)
			r.media.RW = !tc.ro
			env := testEnv()
			env.sources = func([]DiskEntry, []string) ([]Disk, []Disk, error) {
				t.Fatalf("%s: the disks were looked at before the destination was refused", tc.loc)
				return nil, nil, nil
			}
			status, err := r.capture(context.Background(), &Plan{}, env)
			if err == nil || status != StatusFailed || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("capture into %s (segment_size %q): %s, %v; want an error saying %q", tc.loc, tc.segment, status, err, tc.want)
			}
			if entries, _ := os.ReadDir(media); len(entries) > 0 {
				t.Errorf("the medium holds %d entries after the refused capture; want none", len(entries))
			}
		})
	}
}

// TestCaptureRefusesTheMedium: a target spec that names the rescue
// medium's own disk (an ext4 stick on a loop device here) is refused and
// nothing is written onto the medium.
func TestCaptureRefusesTheMedium(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	stick := testdisk.MakeFS(t, filepath.Join(t.TempDir(), "stick.img"), "ext4", 16*mib, 0, 31)
	dev := testdisk.Loop(t, stick.Path, 0)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount %s: %v: %s", dev, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	r, _ := captureRescue(mnt, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + dev}}, "", false)
	r.media.Device, r.media.Disk = dev, filepath.Base(dev)
	status, err := r.capture(context.Background(), &Plan{}, testEnv())
	if err == nil || status != StatusFailed || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), "rescue medi") {
		t.Errorf("capture of the rescue medium %s: %s, %v; want an error naming it as the rescue medium", dev, status, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "snapshots")); err == nil {
		t.Errorf("the refused capture wrote snapshots/ onto the medium")
	}
}

// dirUpload stands in for the lab server's upload client until the
// upload package is part of this tree: a snapshot.DirSink under root,
// whose Open refuses as the server would (token, existing name).
type dirUpload struct {
	*snapshot.DirSink
	dir, openErr string
	opened       *bool
}

func (d dirUpload) Open(context.Context) error {
	*d.opened = true
	if d.openErr != "" {
		return fmt.Errorf("%s", d.openErr)
	}
	return nil
}
func (d dirUpload) Published() string { return d.dir }

// TestCaptureUploadOpensFirst: an http(s) destination goes through the
// upload client, whose session is opened before the disk is read: a
// refused session fails the capture with the server's reason and without
// reading the disk; an accepted one receives the snapshot, which restores
// to the source.
func TestCaptureUploadOpensFirst(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	src := newCaptureSource(t, "sys", 32*mib, 41, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 42))
	for _, tc := range []struct {
		name, openErr string
	}{
		{"refused", "http://10.0.2.100/upload/snapshots/srv1 answered 401 Unauthorized: wrong upload token"},
		{"accepted", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "srv1")
			opened := false
			var got uploadOptions
			env := testEnv()
			env.newUpload = func(loc string, o uploadOptions) (uploadSink, error) {
				got = o
				s, err := snapshot.NewDirSink(out)
				return dirUpload{DirSink: s, dir: out, openErr: tc.openErr, opened: &opened}, err
			}
			r, console := captureRescue(t.TempDir(), []DiskEntry{{Snapshot: "http://10.0.2.100/snapshots/srv1", Target: "path=" + src.dev}}, "", true)
			status, err := r.capture(context.Background(), &Plan{}, env)
			if !opened {
				t.Fatalf("the upload session was never opened")
			}
			if got.Generation != "2026-11-23T10:15:00Z" || !got.Overwrite {
				t.Errorf("upload options %+v; want generation 2026-11-23T10:15:00Z and overwrite", got)
			}
			if tc.openErr != "" {
				if err == nil || status != StatusFailed || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), src.dev) {
					t.Errorf("capture with a refused upload session: %s, %v; want an error naming the disk and the server's 401", status, err)
				}
				if strings.Contains(console.String(), "reading "+src.dev) {
					t.Errorf("the disk was read although the upload session was refused:\n%s", console)
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("%s exists although the session was refused", out)
				}
				return
			}
			if err != nil || status != StatusSuccess {
				t.Fatalf("capture with an upload: %s, %v\n%s", status, err, console)
			}
			restoreCheck(t, out, src.want(t), nil)
		})
	}
}
