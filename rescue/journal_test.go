package rescue

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// VerifyJournal reads back the last chunks a journal names and finds a
// chunk that is not what the snapshot holds.
func TestVerifyJournal(t *testing.T) {
	dir := t.TempDir()
	const chunk = 64 << 10
	src := make([]byte, 8*chunk)
	for i := range src {
		src[i] = byte(i / 1000)
	}
	copy(src[3*chunk:4*chunk], make([]byte, chunk)) // a zero chunk
	m, err := snapshot.Capture(context.Background(), bytes.NewReader(src), filepath.Join(dir, "snap"),
		snapshot.CaptureOptions{DiskSize: int64(len(src)), ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Open(context.Background(), filepath.Join(dir, "snap"), snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	j := &Journal{Chunks: len(m.Chunks)}
	done := make([]bool, len(m.Chunks))
	for i := 0; i < 5; i++ {
		done[i] = true
	}
	j.SetDone(done)
	target := append([]byte(nil), src[:5*chunk]...)
	target = append(target, make([]byte, 3*chunk)...) // chunks 5.. never written
	n, err := VerifyJournal(context.Background(), snap, bytes.NewReader(target), j, 4)
	if err != nil || n != 4 {
		t.Fatalf("intact target: verified %d, %v; want 4, nil", n, err)
	}
	target[4*chunk+10] ^= 1
	if _, err := VerifyJournal(context.Background(), snap, bytes.NewReader(target), j, 4); err == nil || !strings.Contains(err.Error(), "chunk 4") {
		t.Errorf("chunk 4 differs on the target: got %v, want an error naming chunk 4", err)
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
