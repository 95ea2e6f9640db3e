package rescue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// twoDiskMachine is a machine with two disks of different sizes on the
// host: each a sample GPT disk captured into a snapshot directory, and a
// blank loop device to restore it onto.
type twoDiskMachine struct {
	dir     string
	sources []string // the captured images
	snaps   []string // snapshot directories
	targets []string // loop devices, blank
}

func newTwoDiskMachine(t *testing.T, targetSizes ...int64) *twoDiskMachine {
	t.Helper()
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	m := &twoDiskMachine{dir: t.TempDir()}
	samples := []testdisk.Sample{
		{Size: 48 << 20, ESPSize: 33 << 20, ExtSize: 8 << 20, RandomSize: 4 << 20, FilesFrom: "/usr/share/doc", FilesLimit: 2 << 20, Seed: 21},
		{Size: 44 << 20, ESPSize: 33 << 20, ExtSize: 6 << 20, RandomSize: 2 << 20, FilesFrom: "/usr/share/doc", FilesLimit: 1 << 20, Seed: 22},
	}
	for i, s := range samples {
		src := filepath.Join(m.dir, fmt.Sprintf("src%d.img", i+1))
		if _, err := s.Build(src); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		layout, extents, err := diskrestore.ReadLayout(f, s.Size, 0)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(m.dir, fmt.Sprintf("snap%d", i+1))
		_, err = snapshot.Capture(context.Background(), f, dir, snapshot.CaptureOptions{
			DiskSize: s.Size, Layout: layout, Extents: extents, ChunkSize: 1 << 20})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		size := s.Size
		if i < len(targetSizes) {
			size = targetSizes[i]
		}
		backing := filepath.Join(m.dir, fmt.Sprintf("disk%d.img", i+1))
		if err := os.WriteFile(backing, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(backing, size); err != nil {
			t.Fatal(err)
		}
		m.sources = append(m.sources, src)
		m.snaps = append(m.snaps, dir)
		m.targets = append(m.targets, testdisk.Loop(t, backing, 0))
	}
	return m
}

// rescue returns a rescue flow for machine srv1 with these disks, no
// countdown, no medium (no journal), and the console in out.
func (m *twoDiskMachine) rescue(t *testing.T, disks []DiskEntry, out io.Writer) *Rescue {
	t.Helper()
	p := &Plan{Machines: []Machine{{Name: "srv1", Disks: disks}}}
	zero := 0
	p.Countdown.Seconds = &zero
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	s := p.SettingsFor(&p.Machines[0], "test", Overrides{})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	r := &Rescue{
		log:      &Logger{consoles: []io.Writer{out}},
		report:   NewReport(time.Now()),
		settings: s,
		trustDir: t.TempDir(), // no trusted keys: the host's /etc/rewind/trust is not read
	}
	r.report.Action = s.Action
	r.report.Disks = newDiskReports(s.Disks)
	return r
}

func fileHash(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, n)); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func isBlank(t *testing.T, dev string) bool {
	t.Helper()
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	return !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 })
}

// Two disks of different sizes are restored one after the other from
// their snapshots; both equal their originals, and the report lists both.
func TestRestoreTwoDisks(t *testing.T) {
	m := newTwoDiskMachine(t)
	var console bytes.Buffer
	r := m.rescue(t, []DiskEntry{
		{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]},
		{Snapshot: m.snaps[1], Target: "path=" + m.targets[1]},
	}, &console)
	status, err := r.restoreMachine(context.Background(), &Plan{})
	if err != nil || status != StatusSuccess {
		t.Fatalf("restore of two disks: %s, %v\n%s", status, err, console.String())
	}
	for i, dev := range m.targets {
		fi, _ := os.Stat(m.sources[i])
		if got, want := fileHash(t, dev, fi.Size()), fileHash(t, m.sources[i], fi.Size()); got != want {
			t.Errorf("disk %d: %s differs from the captured %s", i+1, dev, m.sources[i])
		}
	}
	r.report.Finish(status, err, time.Now())
	var back Report
	if err := json.Unmarshal(r.report.JSON(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Disks) != 2 {
		t.Fatalf("report disks: got %d, want 2:\n%s", len(back.Disks), r.report.JSON())
	}
	for i, d := range back.Disks {
		if d.Status != DiskOK || d.Target.Path != m.targets[i] || d.Snapshot != m.snaps[i] || d.ID == "" || d.BytesWritten == 0 || !d.LayoutWritten {
			t.Errorf("report disk %d: got status %q target %q snapshot %q id %q written %d layout %v; want ok, %s, %s, an id, bytes and the table",
				i+1, d.Status, d.Target.Path, d.Snapshot, d.ID, d.BytesWritten, d.LayoutWritten, m.targets[i], m.snaps[i])
		}
	}
	// The single-disk fields are the first disk's.
	if back.Target.Path != m.targets[0] || back.Snapshot.Location != m.snaps[0] || back.BytesWritten != back.Disks[0].BytesWritten {
		t.Errorf("report single-disk fields: got target %q snapshot %q written %d, want disk 1's (%s, %s, %d)",
			back.Target.Path, back.Snapshot.Location, back.BytesWritten, m.targets[0], m.snaps[0], back.Disks[0].BytesWritten)
	}
	sum := Summary(r.report)
	for _, want := range []string{"RESTORE SUCCEEDED", "Disk 1:    " + m.targets[0], "Disk 2:    " + m.targets[1], "<- " + m.snaps[1] + ": ok"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
}

// The set is refused as a whole before anything is written: a disk too
// small for its snapshot, or a disk that is not there, leaves every disk
// untouched, and the error names each disk's problem.
func TestRestoreTwoDisksRefusedAsAWhole(t *testing.T) {
	m := newTwoDiskMachine(t, 48<<20, 24<<20) // the second target is too small
	for _, tc := range []struct {
		name   string
		disks  []DiskEntry
		errHas []string
	}{
		{"second disk too small", []DiskEntry{
			{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]},
			{Snapshot: m.snaps[1], Target: "path=" + m.targets[1]}},
			[]string{"cannot all be restored, so none is written", "disk 2: target " + m.targets[1], "holds 24.0 MiB but the snapshot " + m.snaps[1] + " needs", "choose a larger disk"}},
		{"second disk missing", []DiskEntry{
			{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]},
			{Snapshot: m.snaps[1], Target: "serial=NO-SUCH-DISK-11"}},
			[]string{"do not match this machine's disks as a whole, so no disk is used",
				`disk 1 (snapshot ` + m.snaps[0] + `, target "path=` + m.targets[0] + `"): ` + m.targets[0],
				`disk 2 (snapshot ` + m.snaps[1] + `, target "serial=NO-SUCH-DISK-11"): matches no disk`}},
		{"second snapshot missing", []DiskEntry{
			{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]},
			{Snapshot: filepath.Join(m.dir, "gone"), Target: "path=" + m.targets[1]}},
			[]string{"disk 2: snapshot " + filepath.Join(m.dir, "gone")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var console bytes.Buffer
			r := m.rescue(t, tc.disks, &console)
			status, err := r.restoreMachine(context.Background(), &Plan{})
			if err == nil || status != StatusFailed {
				t.Fatalf("got %s, %v; want the set refused\n%s", status, err, console.String())
			}
			for _, want := range tc.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\ndoes not contain %q", err, want)
				}
			}
			for i, dev := range m.targets {
				if !isBlank(t, dev) {
					t.Errorf("disk %d: %s was written although the set was refused", i+1, dev)
				}
				if st := r.report.Disks[i].Status; st == DiskOK || st == DiskRunning {
					t.Errorf("report disk %d: status %q, want it not restored", i+1, st)
				}
			}
		})
	}
}

// A failure on the second disk stops the run; the report says the first
// disk was restored and the second was not.
func TestRestoreTwoDisksSecondFails(t *testing.T) {
	m := newTwoDiskMachine(t)
	// Damage a stored chunk of the second snapshot: its hash no longer
	// matches, which the restore finds only when it reads it.
	seg := filepath.Join(m.snaps[1], "data.000")
	if _, err := os.Stat(seg); err != nil {
		segs, _ := filepath.Glob(filepath.Join(m.snaps[1], "data.*"))
		if len(segs) == 0 {
			t.Fatalf("no segment in %s", m.snaps[1])
		}
		seg = segs[0]
	}
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 4096), fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var console bytes.Buffer
	r := m.rescue(t, []DiskEntry{
		{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]},
		{Snapshot: m.snaps[1], Target: "path=" + m.targets[1]},
	}, &console)
	status, err := r.restoreMachine(context.Background(), &Plan{})
	if err == nil || status != StatusFailed {
		t.Fatalf("got %s, %v; want the second disk to fail\n%s", status, err, console.String())
	}
	if !strings.HasPrefix(err.Error(), "disk 2: restoring onto "+m.targets[1]) {
		t.Errorf("error %q does not name disk 2 and %s", err, m.targets[1])
	}
	src, _ := os.Stat(m.sources[0])
	if fileHash(t, m.targets[0], src.Size()) != fileHash(t, m.sources[0], src.Size()) {
		t.Errorf("disk 1: %s differs from %s although it was restored first", m.targets[0], m.sources[0])
	}
	r.report.Finish(status, err, time.Now())
	if got := []string{r.report.Disks[0].Status, r.report.Disks[1].Status}; got[0] != DiskOK || got[1] != DiskFailed {
		t.Errorf("report disk statuses: got %q, want [ok failed]", got)
	}
	if !strings.Contains(r.report.Disks[1].Error, m.targets[1]) {
		t.Errorf("report disk 2 error %q does not name %s", r.report.Disks[1].Error, m.targets[1])
	}
	if sum := Summary(r.report); !strings.Contains(sum, "Restored: disk 1. Not restored: disk 2.") {
		t.Errorf("summary does not say which disks were restored:\n%s", sum)
	}
}
