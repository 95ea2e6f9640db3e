package rescue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/fsmap"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/snapshot"
	"golang.org/x/sys/unix"
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

// testEnv is captureMachine's environment for r with a fixed clock.
func testEnv(r *Rescue) captureEnv {
	return captureEnv{newUpload: r.newUploadClient, sources: captureSources, exchange: renameExchange, now: func() time.Time { return time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC) }}
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

	status, err := r.capture(context.Background(), testEnv(r))
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
	if r.report.Action != ActionCapture || len(r.report.Disks) != 2 {
		t.Fatalf("report action %q with %d disks; want capture with 2", r.report.Action, len(r.report.Disks))
	}
	for i, want := range []struct{ loc, dev, dir string }{
		{"media:/snapshots/srv1-sys", sys.dev, "srv1-sys"}, {"media:/snapshots/srv1-data", data.dev, "srv1-data"},
	} {
		d := r.report.Disks[i]
		t.Logf("disk %d (%s): %d bytes read, %d stored in %.2fs (%.1f MB/s)", i+1, want.dev, d.BytesRead, d.BytesStored, d.Seconds, d.BytesPerSecond/1e6)
		id := fmt.Sprintf("%x", manifestSum(filepath.Join(media, "snapshots", want.dir)))
		if d.Status != DiskOK || d.Published != want.loc || d.Target.Path != want.dev || d.ID != id || d.BytesStored == 0 {
			t.Errorf("report disk %d: status %q, published %q, target %q, id %.16s, %d bytes stored; want ok, %s, %s, id %.16s (the manifest's SHA-256), bytes stored",
				i+1, d.Status, d.Published, d.Target.Path, d.ID, d.BytesStored, want.loc, want.dev, id)
		}
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
// without overwrite before the disk is read; with overwrite it is replaced
// by the new capture once that is complete, by RENAME_EXCHANGE or, where
// the file system has none, by two renames, and what earlier cut-off
// captures left (.NAME.partial-*, .NAME.old-*) is removed: no old or
// partial directory stays.
func TestCaptureExistingName(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	src := newCaptureSource(t, "sys", 32*mib, 11, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 4*mib, 12))
	for _, tc := range []struct {
		name       string
		overwrite  bool
		noExchange bool   // the medium's file system has no RENAME_EXCHANGE
		wantErr    string // "" : success
	}{
		{"no overwrite", false, false, "already exists on the rescue medium; nothing was read or written: set overwrite = true"},
		{"overwrite", true, false, ""},
		{"overwrite without RENAME_EXCHANGE", true, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			media := t.TempDir()
			old := existingSnapshot(t, media, "srv1")
			snaps := filepath.Join(media, "snapshots")
			if tc.overwrite {
				for _, leftover := range []string{".srv1.partial-20200101T000000Z", ".srv1.old-20200101T000000Z"} {
					os.MkdirAll(filepath.Join(snaps, leftover), 0o755)
					os.WriteFile(filepath.Join(snaps, leftover, "data.000"), []byte("left by a power cut"), 0o644)
				}
			}
			r, console := captureRescue(media, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + src.dev}}, "", tc.overwrite)
			env := testEnv(r)
			exchanged := false
			env.exchange = func(a, b string) error {
				if tc.noExchange {
					return syscall.EINVAL
				}
				exchanged = true
				return renameExchange(a, b)
			}
			status, err := r.capture(context.Background(), env)
			snapDir := filepath.Join(snaps, "srv1")
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
				if exchanged == tc.noExchange {
					t.Errorf("RENAME_EXCHANGE used: %v; want %v", exchanged, !tc.noExchange)
				}
				if s := manifestSum(snapDir); s == old || s == [32]byte{} {
					t.Errorf("%s after the capture with overwrite: still the old snapshot, or none", snapDir)
				}
				restoreCheck(t, snapDir, src.want(t), nil)
			}
			if left := dotEntries(snaps); len(left) > 0 {
				t.Errorf("media:/snapshots holds %v after the capture; want no partial or old directories", left)
			}
		})
	}
}

// TestCaptureMediumFull: a machine with three disks captured onto a
// medium (a 12 MiB tmpfs) that holds an old snapshot under disk 2's name:
// disk 1 (2 MiB of files) fits, disk 2 (20 MiB) does not. The capture of
// disk 2 fails saying the medium is full and what to do, its partial
// directory is removed, its old snapshot is untouched; disk 1 stays
// captured, disk 3 is not started, and the report and the summary say so.
func TestCaptureMediumFull(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	small := newCaptureSource(t, "small", 16*mib, 23, testdisk.MakeFS(t, filepath.Join(dir, "small.img"), "ext4", 8*mib, 2*mib, 24))
	big := newCaptureSource(t, "big", 48*mib, 21, testdisk.MakeFS(t, filepath.Join(dir, "big.img"), "ext4", 40*mib, 20*mib, 22))
	third := newCaptureSource(t, "third", 16*mib, 25, testdisk.MakeFS(t, filepath.Join(dir, "third.img"), "ext4", 8*mib, 2*mib, 26))
	media := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", media).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", media).Run() })
	old := existingSnapshot(t, media, "srv1")

	r, console := captureRescue(media, []DiskEntry{
		{Snapshot: "media:/snapshots/srv1-small", Target: "path=" + small.dev},
		{Snapshot: "media:/snapshots/srv1", Target: "path=" + big.dev},
		{Snapshot: "media:/snapshots/srv1-third", Target: "path=" + third.dev},
	}, "", true)
	status, err := r.capture(context.Background(), testEnv(r))
	for _, want := range []string{"the rescue medium is full", "MiB free", "use a larger stick or upload to the lab server", "disk 2 (" + big.dev + ")", "untouched"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("capture of %s (20 MiB of files) onto a 12 MiB medium: %s, %v; want an error saying %q\n%s", big.dev, status, err, want, console)
		}
	}
	if status != StatusFailed {
		t.Errorf("status %s, want %s", status, StatusFailed)
	}
	snaps := filepath.Join(media, "snapshots")
	if manifestSum(filepath.Join(snaps, "srv1")) != old {
		t.Errorf("the old media:/snapshots/srv1 changed after the failed capture")
	}
	if _, err := snapshot.Open(context.Background(), filepath.Join(snaps, "srv1"), snapshot.OpenOptions{}); err != nil {
		t.Errorf("the old media:/snapshots/srv1 no longer opens: %v", err)
	}
	if left := dotEntries(snaps); len(left) > 0 {
		t.Errorf("media:/snapshots holds %v after the failed capture; want the partial directory removed", left)
	}
	if _, err := os.Stat(filepath.Join(snaps, "srv1-third")); err == nil {
		t.Errorf("media:/snapshots/srv1-third exists although disk 3 was never started")
	}
	restoreCheck(t, filepath.Join(snaps, "srv1-small"), small.want(t), nil)

	for i, want := range []string{DiskOK, DiskFailed, DiskNotStarted} {
		if got := r.report.Disks[i].Status; got != want {
			t.Errorf("report disk %d (%s): status %q, want %q", i+1, r.report.Disks[i].Target.Path, got, want)
		}
	}
	if e := r.report.Disks[1].Error; !strings.Contains(e, "full") {
		t.Errorf("report disk 2: error %q; want it to say the medium is full", e)
	}
	r.report.Finish(status, err, time.Now())
	if sum := Summary(r.report); !strings.Contains(sum, "Captured: disk 1. Not captured: disk 2, 3.") {
		t.Errorf("summary does not say which disks were captured:\n%s", sum)
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
		{"plain path", "/snapshots/srv1", "", false, "gone after the reboot"},
		{"medium root", "media:/", "", false, "the medium's root"},
		{"read-only medium", "media:/snapshots/srv1", "", true, "mounted read-only"},
		{"segment above FAT32", "media:/snapshots/srv1", "4GiB", false, "FAT32 holds no file of 4 GiB or more"},
		{"segment below a frame", "media:/snapshots/srv1", "1MiB", false, "smaller than one stored chunk"},
		{"segment not a size", "media:/snapshots/srv1", "big", false, "segment_size"},
		{"upload without token", "http://10.0.2.100/snapshots/srv1", "", false, "no [upload] token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			media := t.TempDir()
			r, _ := captureRescue(media, []DiskEntry{{Snapshot: tc.loc, Target: "path=/dev/nonexistent"}}, tc.segment, false)
			r.media.RW = !tc.ro
			env := testEnv(r)
			env.sources = func([]DiskEntry, []string) ([]Disk, []Disk, error) {
				t.Fatalf("%s: the disks were looked at before the destination was refused", tc.loc)
				return nil, nil, nil
			}
			status, err := r.capture(context.Background(), env)
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
	status, err := r.capture(context.Background(), testEnv(r))
	if err == nil || status != StatusFailed || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), "rescue medi") {
		t.Errorf("capture of the rescue medium %s: %s, %v; want an error naming it as the rescue medium", dev, status, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "snapshots")); err == nil {
		t.Errorf("the refused capture wrote snapshots/ onto the medium")
	}
}

// startUploadLab runs a real 'rewind serve' (NewLabServer) on 127.0.0.1 over
// a temporary directory, taking uploads with token; it returns its URL
// and directory.
func startUploadLab(t *testing.T, token string) (string, string) {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "srv")
	os.MkdirAll(dir, 0o755)
	tokenFile := filepath.Join(base, "upload-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := NewLabServer(dir, LabServerConfig{UploadTokenFile: tokenFile, InsecureReports: true})
	if err != nil {
		t.Fatalf("NewLabServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), dir
}

// TestCaptureUploadToLabServer: a machine's two disks captured at boot
// and uploaded to a real lab server. The upload session is opened before
// a disk is read: a wrong token fails the capture with the server's 401,
// naming the disk, without reading it and with nothing on the server; the
// right token publishes both disks as generation 2026-11-23T10:15:00Z,
// each restoring (from the generation and from latest) to its source with
// the free blocks zeroed; a second run without overwrite is refused (409)
// before any disk is read.
func TestCaptureUploadToLabServer(t *testing.T) {
	testdisk.NeedFS(t, "ext4", "vfat")
	const token = "upload-0123456789abcdef0123456789abcdef"
	dir := t.TempDir()
	sys := newCaptureSource(t, "sys", 32*mib, 51, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 24*mib, 6*mib, 52))
	data := newCaptureSource(t, "data", 24*mib, 53, testdisk.MakeFS(t, filepath.Join(dir, "vfat.img"), "vfat", 16*mib, 4*mib, 54))
	url, srvDir := startUploadLab(t, token)
	entries := []DiskEntry{
		{Snapshot: url + "/snapshots/srv1-sys", Target: "path=" + sys.dev},
		{Snapshot: url + "/snapshots/srv1-data", Target: "path=" + data.dev},
	}
	run := func(token string) (*Rescue, *bytes.Buffer, string, error) {
		r, console := captureRescue(t.TempDir(), entries, "5MiB", false)
		r.settings.UploadToken = token
		r.client = httpClient(nil)
		status, err := r.capture(context.Background(), testEnv(r))
		return r, console, status, err
	}

	_, console, status, err := run("wrong-0123456789abcdef0123456789abcd")
	if err == nil || status != StatusFailed || !strings.Contains(err.Error(), "disk 1 ("+sys.dev+")") || !strings.Contains(err.Error(), "token") {
		t.Errorf("capture with a wrong upload token: %s, %v; want an error naming disk 1 and the token", status, err)
	}
	if strings.Contains(console.String(), "reading ") {
		t.Errorf("a disk was read although the server refused the token:\n%s", console)
	}
	if _, err := os.Stat(filepath.Join(srvDir, "snapshots")); err == nil {
		t.Errorf("the server holds snapshots/ after uploads with a wrong token")
	}

	r, console, status, err := run(token)
	if err != nil || status != StatusSuccess {
		t.Fatalf("capture of %s and %s to %s: %s, %v\n%s", sys.dev, data.dev, url, status, err, console)
	}
	for i, name := range []string{"srv1-sys", "srv1-data"} {
		want := url + "/snapshots/" + name + "/2026-11-23T10:15:00Z"
		if d := r.report.Disks[i]; d.Status != DiskOK || d.Published != want {
			t.Errorf("report disk %d: status %q, published %q; want ok, %s", i+1, d.Status, d.Published, want)
		}
	}
	for _, tc := range []struct {
		name string
		src  *captureSource
	}{{"srv1-sys", sys}, {"srv1-data", data}} {
		want := tc.src.want(t)
		for _, loc := range []string{url + "/snapshots/" + tc.name + "/2026-11-23T10:15:00Z", url + "/snapshots/" + tc.name + "/latest"} {
			m := restoreCheck(t, loc, want, nil)
			if len(m.Segments) < 2 || m.Origin.Hostname != "srv1" || m.Origin.Path != tc.src.dev {
				t.Errorf("%s: %d segments, origin %+v; want several segments, hostname srv1, path %s", loc, len(m.Segments), m.Origin, tc.src.dev)
			}
		}
	}
	if !strings.Contains(console.String(), "/snapshots/srv1-sys/2026-11-23T10:15:00Z") {
		t.Errorf("the console does not name the published generation:\n%s", console)
	}

	_, console, status, err = run(token)
	if err == nil || status != StatusFailed || !strings.Contains(err.Error(), "exists") || !strings.Contains(err.Error(), sys.dev) {
		t.Errorf("a second capture without overwrite: %s, %v; want the server's refusal (exists) naming disk 1", status, err)
	}
	if strings.Contains(console.String(), "reading ") {
		t.Errorf("a disk was read although the server refused the existing name:\n%s", console)
	}
}

// TestCaptureRaw: raw = true on the machine captures every byte, reading
// no allocation map: the snapshot restores to the source byte for byte,
// deleted files and stray bytes included.
func TestCaptureRaw(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	src := newCaptureSource(t, "sys", 32*mib, 61, testdisk.MakeFS(t, filepath.Join(t.TempDir(), "ext4.img"), "ext4", 24*mib, 4*mib, 62))
	media := t.TempDir()
	r, console := captureRescue(media, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + src.dev}}, "", false)
	r.settings.Machine.Raw = true
	if status, err := r.capture(context.Background(), testEnv(r)); err != nil || status != StatusSuccess {
		t.Fatalf("raw capture of %s: %s, %v\n%s", src.dev, status, err, console)
	}
	want, err := os.ReadFile(src.img)
	if err != nil {
		t.Fatal(err)
	}
	if m := restoreCheck(t, filepath.Join(media, "snapshots", "srv1"), want, nil); m.UnusedBytes() != 0 {
		t.Errorf("raw capture of %s: %d unused bytes; want none", src.dev, m.UnusedBytes())
	}
}

// TestCaptureAbortedByDefault: with no countdown and the plan's default
// abort, the capture stops after matching the disks: status aborted, no
// error, nothing read or written, every disk "not started".
func TestCaptureAbortedByDefault(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	src := newCaptureSource(t, "sys", 32*mib, 71, testdisk.MakeFS(t, filepath.Join(t.TempDir(), "ext4.img"), "ext4", 24*mib, 4*mib, 72))
	media := t.TempDir()
	r, console := captureRescue(media, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + src.dev}}, "", false)
	r.settings.Default = DefaultAbort
	status, err := r.capture(context.Background(), testEnv(r))
	if err != nil || status != StatusAborted {
		t.Errorf("capture with default abort and no countdown: %s, %v; want %s and no error", status, err, StatusAborted)
	}
	if strings.Contains(console.String(), "reading ") {
		t.Errorf("the aborted capture read a disk:\n%s", console)
	}
	if entries, _ := os.ReadDir(media); len(entries) > 0 {
		t.Errorf("the medium holds %d entries after the aborted capture; want none", len(entries))
	}
	if d := r.report.Disks[0]; d.Status != DiskNotStarted || d.Target.Path != src.dev {
		t.Errorf("report disk 1: status %q, target %q; want %q, %s", d.Status, d.Target.Path, DiskNotStarted, src.dev)
	}
}

// openPTY opens a pseudo-terminal pair: the rescue's console is the
// slave, the test types and reads on the master.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// TestCaptureCountdownShowsEveryDisk: on a console (a pseudo-terminal),
// the countdown of a two-disk capture names the action and every disk
// with where it goes before anything is read. Esc aborts with nothing read
// or written; another key starts the capture of both disks.
func TestCaptureCountdownShowsEveryDisk(t *testing.T) {
	for _, tc := range []struct {
		name, key  string
		wantStatus string
	}{
		{"Esc aborts", "\x1b", StatusAborted},
		{"a key starts", "x", StatusSuccess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var devs []string
			for i := range 2 {
				img := filepath.Join(t.TempDir(), "disk.img")
				os.WriteFile(img, testdisk.RandomBytes(uint64(80+i), 2*mib), 0o644)
				devs = append(devs, testdisk.Loop(t, img, 0))
			}
			media := t.TempDir()
			r, _ := captureRescue(media, []DiskEntry{
				{Snapshot: "media:/snapshots/srv1-a", Target: "path=" + devs[0]},
				{Snapshot: "media:/snapshots/srv1-b", Target: "path=" + devs[1]},
			}, "", false)
			master, slave := openPTY(t)
			r.ttys = []*TTY{{File: slave}}
			r.settings.Countdown = 600

			// The person at the console reads the banner, then presses the key.
			seen := make(chan string, 1)
			go func() {
				var out []byte
				buf := make([]byte, 4096)
				for {
					n, err := master.Read(buf)
					out = append(out, buf[:n]...)
					if strings.Contains(string(out), "Esc to abort") {
						master.Write([]byte(tc.key))
						seen <- string(out)
						return
					}
					if err != nil {
						seen <- string(out)
						return
					}
				}
			}()
			status, err := r.capture(context.Background(), testEnv(r))
			slave.Close() // the reader stops here when no banner came
			banner := <-seen
			for _, want := range append([]string{"Capture 2 disks", "-> media:/snapshots/srv1-a", "-> media:/snapshots/srv1-b", "only read"}, devs...) {
				if !strings.Contains(banner, want) {
					t.Errorf("countdown banner does not say %q:\n%s", want, banner)
				}
			}
			if err != nil || status != tc.wantStatus {
				t.Fatalf("capture after the key %q: %s, %v; want %s", tc.key, status, err, tc.wantStatus)
			}
			for _, name := range []string{"srv1-a", "srv1-b"} {
				_, err := os.Stat(filepath.Join(media, "snapshots", name, snapshot.ManifestName))
				if got, want := err == nil, tc.wantStatus == StatusSuccess; got != want {
					t.Errorf("media:/snapshots/%s has a manifest: %v, want %v", name, got, want)
				}
			}
		})
	}
}
