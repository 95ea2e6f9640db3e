package rescue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/snapshot"
)

func TestJournalRuns(t *testing.T) {
	for _, tc := range []struct {
		done  string
		runs  [][2]int
		first int
	}{
		{"", nil, 0},
		{"xxx", [][2]int{{0, 2}}, 3},
		{"xx..x.", [][2]int{{0, 1}, {4, 4}}, 2},
		{".xx", [][2]int{{1, 2}}, 0},
	} {
		done := make([]bool, len(tc.done))
		for i, c := range tc.done {
			done[i] = c == 'x'
		}
		var j Journal
		j.SetDone(done)
		if len(j.Done) != len(tc.runs) || len(tc.runs) > 0 && !equalRuns(j.Done, tc.runs) {
			t.Errorf("SetDone(%q): runs %v, want %v", tc.done, j.Done, tc.runs)
		}
		if got := j.DoneSet(); !equalBools(got, done) {
			t.Errorf("SetDone(%q) then DoneSet: %v", tc.done, got)
		}
		if got := j.FirstMissing(); got != tc.first {
			t.Errorf("SetDone(%q): FirstMissing %d, want %d", tc.done, got, tc.first)
		}
	}
}

func equalRuns(a, b [][2]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestJournalSaveLoadMismatch(t *testing.T) {
	disk := Disk{Serial: "WD 1234/5", Size: 8 << 30}
	dir := t.TempDir()
	p := JournalPath(dir, "0123456789abcdef0123", IdentityOf(disk))
	if base := filepath.Base(p); base != "0123456789abcdef-WD_1234_5-8589934592.json" {
		t.Errorf("journal file %s: want the snapshot id, the serial and the size in its name", base)
	}
	j := &Journal{Version: JournalVersion, Snapshot: "s1", Plan: PlanHash(Machine{Name: "pc1"}), Target: IdentityOf(disk), Chunks: 5}
	j.SetDone([]bool{true, true, false, true, false})
	if err := SaveJournal(p, j); err != nil {
		t.Fatal(err)
	}
	got, err := LoadJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	if why := got.Mismatch(j); why != "" || got.Count() != 3 {
		t.Errorf("loaded journal: mismatch %q, %d chunks; want a match with 3", why, got.Count())
	}
	for name, change := range map[string]func(w *Journal){
		"snapshot": func(w *Journal) { w.Snapshot = "s2" },
		"disk":     func(w *Journal) { w.Target.Serial = "other" },
		"size":     func(w *Journal) { w.Target.Size++ },
		"plan":     func(w *Journal) { w.Plan = PlanHash(Machine{Name: "pc1", Delta: true}) },
		"chunks":   func(w *Journal) { w.Chunks = 6 },
	} {
		w := *j
		change(&w)
		if why := got.Mismatch(&w); why == "" {
			t.Errorf("journal resumed although the %s changed", name)
		}
	}
}

// VerifyJournal reads back every chunk a journal names, whatever the
// snapshot's format version: with the raw hash (version 2) or by fetching
// the chunk (version 1). It finds a changed chunk in the middle and the
// chunks a forged journal claims that were never written.
func TestVerifyJournal(t *testing.T) {
	dir := t.TempDir()
	const chunk = 64 << 10
	src := make([]byte, 8*chunk)
	for i := range src {
		src[i] = byte(i / 1000)
	}
	copy(src[3*chunk:4*chunk], make([]byte, chunk)) // a zero chunk
	m, err := snapshot.Capture(context.Background(), bytes.NewReader(src), filepath.Join(dir, "v2"),
		snapshot.CaptureOptions{DiskSize: int64(len(src)), ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	// The same snapshot as format version 1: no raw hashes.
	v1 := filepath.Join(dir, "v1")
	if err := os.CopyFS(v1, os.DirFS(filepath.Join(dir, "v2"))); err != nil {
		t.Fatal(err)
	}
	m1 := *m
	m1.Version = 1
	m1.Chunks = append([]snapshot.Chunk(nil), m.Chunks...)
	for i := range m1.Chunks {
		m1.Chunks[i].RawSHA256 = ""
	}
	b, _ := m1.Marshal()
	os.WriteFile(filepath.Join(v1, snapshot.ManifestName), b, 0o644)

	// The target holds chunks 0-4, then chunk 2 is changed; the journal
	// claims all 8.
	target := append([]byte(nil), src[:5*chunk]...)
	target = append(target, make([]byte, 3*chunk)...)
	target[2*chunk+10] ^= 1
	j := &Journal{Chunks: len(m.Chunks)}
	done := make([]bool, len(m.Chunks))
	for i := range done {
		done[i] = true
	}
	j.SetDone(done)
	for _, version := range []string{"v2", "v1"} {
		snap, err := snapshot.Open(context.Background(), filepath.Join(dir, version), snapshot.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := VerifyJournal(context.Background(), snap, bytes.NewReader(target), j, 3)
		snap.Close()
		if err != nil {
			t.Fatalf("%s: %v", version, err)
		}
		if got.Checked != 8 || fmt.Sprint(got.Differ) != "[2 5 6 7]" {
			t.Errorf("%s snapshot: checked %d, differ %v; want 8 checked and chunks [2 5 6 7] to write again", version, got.Checked, got.Differ)
		}
	}
}

// A forged journal (or a stale one) claims every chunk is on the disk,
// but three chunks in the middle are not: the resumed restore reads every
// claimed chunk back, writes those three again, says so in the report,
// and the disk equals the source.
func TestForgedJournalIsCheckedAndRewritten(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	if _, err := (testdisk.Sample{Size: 48 << 20, ESPSize: 33 << 20, ExtSize: 8 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 2 << 20, Seed: 12}).Build(src); err != nil {
		t.Fatal(err)
	}
	sf, _ := os.Open(src)
	fi, _ := sf.Stat()
	layout, extents, err := diskrestore.ReadLayout(sf, fi.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "snap")
	m, err := snapshot.Capture(context.Background(), sf, snapDir, snapshot.CaptureOptions{
		DiskSize: fi.Size(), Layout: layout, Extents: extents, ChunkSize: 1 << 20})
	sf.Close()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(context.Background(), snapDir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()

	// A restore that got everywhere, then three chunks damaged behind it.
	backing := filepath.Join(dir, "disk.img")
	os.WriteFile(backing, nil, 0o644)
	os.Truncate(backing, fi.Size())
	dev := testdisk.Loop(t, backing, 0)
	tf, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := machine.Apply(context.Background(), snap, tf, machine.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var damaged []int
	for i, c := range m.Chunks {
		if !c.Zero && len(damaged) < 3 && i > 5 && i%3 == 0 {
			tf.WriteAt(testdisk.RandomBytes(uint64(i), 4096), c.Offset+8192)
			damaged = append(damaged, i)
		}
	}
	tf.Sync()
	tf.Close()

	disk := Disk{Path: dev, Size: fi.Size(), Serial: "forged1"}
	var console bytes.Buffer
	r := &Rescue{
		log:      &Logger{consoles: []io.Writer{&console}},
		media:    &Media{Dir: filepath.Join(dir, "media"), RW: true},
		report:   NewReport(time.Now()),
		settings: &Settings{Machine: Machine{Name: "pc1", Snapshot: snapDir}},
	}
	all := make([]bool, len(m.Chunks))
	for i := range all {
		all[i] = true
	}
	j := &Journal{Version: JournalVersion, Snapshot: snap.ID, Plan: PlanHash(r.settings.Machine), Target: IdentityOf(disk)}
	j.SetDone(all)
	if err := SaveJournal(JournalPath(r.media.Path(MediaJournals), snap.ID, j.Target), j); err != nil {
		t.Fatal(err)
	}

	status, err := r.restore(context.Background(), snap, disk, 0, &DiskReport{})
	if err != nil || status != StatusSuccess {
		t.Fatalf("resumed restore onto %s: %s, %v\n%s", dev, status, err, console.String())
	}
	rs := r.report.Resume
	if rs == nil || rs.Verified != len(m.Chunks) || rs.Rewritten != len(damaged) {
		t.Errorf("report resume %+v; want all %d claimed chunks verified and the %d damaged ones (%v) rewritten", rs, len(m.Chunks), len(damaged), damaged)
	}
	if !strings.Contains(console.String(), fmt.Sprintf("%d of the %d chunks", len(damaged), len(m.Chunks))) {
		t.Errorf("the console does not say how many chunks were written again:\n%s", console.String())
	}
	want, _ := os.ReadFile(src)
	got, _ := os.ReadFile(dev)
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("%s after the resumed restore differs from the source (damaged chunks %v)", dev, damaged)
	}
}

func TestAskYesNo(t *testing.T) {
	for _, tc := range []struct {
		keys          string
		timeout       time.Duration
		yes, answered bool
	}{
		{"y", 5 * time.Second, true, true},
		{"n", 5 * time.Second, false, true},
		{"\x1b", 5 * time.Second, false, true},
		{"", 300 * time.Millisecond, false, false},
		{"y", 0, false, false}, // unattended: nobody is asked
	} {
		c, w := newPipeConsole(t)
		if tc.keys != "" {
			go func() { time.Sleep(50 * time.Millisecond); w.Write([]byte(tc.keys)) }()
		}
		yes, answered := AskYesNo(context.Background(), []Console{c}, "Copy it?", tc.timeout)
		if yes != tc.yes || answered != tc.answered {
			t.Errorf("keys %q, timeout %s: yes %v answered %v; want %v %v", tc.keys, tc.timeout, yes, answered, tc.yes, tc.answered)
		}
	}
}

// A checkpoint cut short leaves the other slot: the journal loads the last
// intact record.
func TestJournalTornWriteKeepsTheOtherSlot(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.json")
	j := &Journal{Version: JournalVersion, Snapshot: "s1"}
	j.SetDone([]bool{true, false, false})
	if err := SaveJournal(p, j); err != nil {
		t.Fatal(err)
	}
	j.SetDone([]bool{true, true, false})
	if err := SaveJournal(p, j); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadJournal(p); err != nil || got.Count() != 2 {
		t.Fatalf("after two checkpoints: %v, %v; want 2 chunks", got, err)
	}
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt([]byte("torn"), 0*journalSlot+journalHeader+3) // the second write went to slot 0
	f.Close()
	if got, err := LoadJournal(p); err != nil || got.Count() != 1 {
		t.Fatalf("newest slot torn: %v, %v; want the older record with 1 chunk", got, err)
	}
}

// A symbolic link, FIFO or device planted where the journal goes on an ext4
// medium is refused: never written through (a link to the disk being
// restored would put the journal over it), never blocking the rescue.
func TestJournalPlantedFile(t *testing.T) {
	j := &Journal{Version: JournalVersion, Snapshot: "s1", Chunks: 2}
	j.SetDone([]bool{true, false})
	for _, tc := range []struct {
		name  string
		plant func(path, victim string) error
		want  string
	}{
		{"symlink", func(p, victim string) error { return os.Symlink(victim, p) }, "symbolic link"},
		{"fifo", func(p, _ string) error { return syscall.Mkfifo(p, 0o644) }, "not a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("the restored disk"), 0o644); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "journal", "j.json")
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := tc.plant(p, victim); err != nil {
				t.Fatal(err)
			}
			err := SaveJournal(p, j)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SaveJournal onto a planted %s: got %v, want an error saying %q", tc.name, err, tc.want)
			}
			if _, err := LoadJournal(p); err == nil {
				t.Errorf("LoadJournal of a planted %s: got no error", tc.name)
			}
			if b, _ := os.ReadFile(victim); string(b) != "the restored disk" {
				t.Errorf("the link's target was written: now %q", b)
			}
		})
	}
}
