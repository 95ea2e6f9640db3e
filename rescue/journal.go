package rescue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// MediaJournals is where resume journals live on the rescue media.
const MediaJournals = "rewind/journal"

// JournalVersion is the version of the journal's schema.
const JournalVersion = 1

// Journal records which chunks of a restore are on the target, so that a
// restore cut short by a power failure continues where it stopped instead
// of starting over. It is written to the rescue media only after the
// target was flushed (restore.Options.Checkpoint), so it never claims a
// chunk that is not on the disk.
type Journal struct {
	Version  int          `json:"version"`
	Snapshot string       `json:"snapshot"` // the snapshot's ID
	Plan     string       `json:"plan"`     // PlanHash of the machine entry
	Target   DiskIdentity `json:"target"`
	Chunks   int          `json:"chunks"`  // chunks in the snapshot
	Done     [][2]int     `json:"done"`    // runs [first, last] of chunks on the target
	Updated  time.Time    `json:"updated"` // when the target was last flushed
}

// DiskIdentity tells one disk from another across boots: its kernel name
// may change, its serial, WWN and size do not.
type DiskIdentity struct {
	Serial string `json:"serial,omitempty"`
	WWN    string `json:"wwn,omitempty"`
	Model  string `json:"model,omitempty"`
	Size   int64  `json:"size"`
	// Entry is the plan's [[machine.disk]] entry (from 1) the disk was
	// restored for, when the machine has several: two alike disks without
	// serials, restored from one snapshot, keep journals of their own.
	Entry int `json:"entry,omitempty"`
}

// IdentityOf returns d's identity.
func IdentityOf(d Disk) DiskIdentity {
	return DiskIdentity{Serial: d.Serial, WWN: d.WWN, Model: d.Model, Size: d.Size}
}

// key is the identity as part of a file name.
func (id DiskIdentity) key() string {
	s := id.Serial
	if s == "" {
		s = id.WWN
	}
	if s == "" {
		s = "noserial"
	}
	s = strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '_'
	}, s)
	if id.Entry > 0 {
		return fmt.Sprintf("%s-%d-disk%d", s, id.Size, id.Entry)
	}
	return fmt.Sprintf("%s-%d", s, id.Size)
}

// PlanHash identifies a machine entry of a plan: a journal written under
// another entry (other snapshot, target, delta or install settings) is not
// resumed.
func PlanHash(m Machine) string {
	b, _ := json.Marshal(m)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// JournalPath is the journal's file for snapshot id and disk under dir.
func JournalPath(dir, snapshotID string, disk DiskIdentity) string {
	id := snapshotID
	if len(id) > 16 {
		id = id[:16]
	}
	return filepath.Join(dir, id+"-"+disk.key()+".json")
}

// SetDone records the chunks marked in done.
func (j *Journal) SetDone(done []bool) {
	j.Chunks = len(done)
	j.Done = j.Done[:0]
	for i := 0; i < len(done); i++ {
		if !done[i] {
			continue
		}
		k := i
		for k+1 < len(done) && done[k+1] {
			k++
		}
		j.Done = append(j.Done, [2]int{i, k})
		i = k
	}
}

// DoneSet returns the chunks on the target, one flag per chunk.
func (j *Journal) DoneSet() []bool {
	done := make([]bool, j.Chunks)
	for _, r := range j.Done {
		for i := max(r[0], 0); i <= r[1] && i < j.Chunks; i++ {
			done[i] = true
		}
	}
	return done
}

// Count is the number of chunks on the target.
func (j *Journal) Count() int {
	n := 0
	for _, d := range j.DoneSet() {
		if d {
			n++
		}
	}
	return n
}

// FirstMissing is the first chunk not on the target: where a resume starts.
func (j *Journal) FirstMissing() int {
	for i, d := range j.DoneSet() {
		if !d {
			return i
		}
	}
	return j.Chunks
}

// Mismatch says why j cannot continue the restore that want describes, or
// "" when it can.
func (j *Journal) Mismatch(want *Journal) string {
	switch {
	case j.Version != JournalVersion:
		return fmt.Sprintf("journal version %d, this rescue environment writes %d", j.Version, JournalVersion)
	case j.Snapshot != want.Snapshot:
		return "it is for another snapshot"
	case j.Target != want.Target:
		return "it is for another disk"
	case j.Plan != want.Plan:
		return "the plan's entry for this machine changed"
	case j.Chunks != want.Chunks:
		return fmt.Sprintf("it counts %d chunks, the snapshot %d", j.Chunks, want.Chunks)
	}
	return ""
}

// A journal file holds two slots of journalSlot bytes, written in turn
// in place: after the file is created, a checkpoint changes no directory
// entry and no allocation, so a power cut in the middle of one cannot
// damage the media's file system, and leaves the other slot intact. Each
// slot starts with a header "RWJ1 SEQ LEN SHA256\n" over the JSON after it.
const (
	journalSlot   = 32 << 10
	journalHeader = 4 + 1 + 16 + 1 + 8 + 1 + 64 + 1
)

// journalFile is an open journal file.
type journalFile struct {
	f   *os.File
	seq uint64
}

// openJournalRegular opens the journal file itself, never what a symbolic
// link, device node or FIFO planted in its place on an ext4 medium leads to
// (a link to the disk being restored would have the journal written over
// it; a FIFO would block the rescue).
func openJournalRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("journal %s is a symbolic link, not a file: remove it", path)
	}
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("journal %s is a %s, not a file: remove it", path, fi.Mode().Type())
		}
		return nil, err
	}
	return f, nil
}

// openJournalFile opens the journal at path, creating it at its full size.
func openJournalFile(path string) (*journalFile, error) {
	f, err := openJournalRegular(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if f, err = openJournalRegular(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); err != nil {
			return nil, err
		}
		// Allocate both slots now: writes later only overwrite them.
		if _, err = f.WriteAt(make([]byte, 2*journalSlot), 0); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("journal %s: %w", path, err)
		}
		syncDir(filepath.Dir(path))
	}
	if err != nil {
		return nil, err
	}
	jf := &journalFile{f: f}
	for i := range 2 {
		if seq, _, ok := readSlot(f, i); ok && seq > jf.seq {
			jf.seq = seq
		}
	}
	return jf, nil
}

// write puts j in the older slot and flushes it.
func (jf *journalFile) write(j *Journal) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if journalHeader+len(b) > journalSlot {
		// Scattered holes: keep only the contiguous prefix, always small.
		k := *j
		k.Done = nil
		if first := j.FirstMissing(); first > 0 {
			k.Done = [][2]int{{0, first - 1}}
		}
		if b, err = json.Marshal(&k); err != nil {
			return err
		}
	}
	jf.seq++
	sum := sha256.Sum256(b)
	slot := make([]byte, journalSlot)
	n := copy(slot, fmt.Sprintf("RWJ1 %016x %08x %x\n", jf.seq, len(b), sum))
	copy(slot[n:], b)
	if _, err := jf.f.WriteAt(slot, int64(jf.seq%2)*journalSlot); err != nil {
		return fmt.Errorf("journal %s: %w", jf.f.Name(), err)
	}
	if err := jf.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: %w", jf.f.Name(), err)
	}
	return nil
}

// readSlot returns the sequence number and JSON of slot i when intact.
func readSlot(r io.ReaderAt, i int) (uint64, []byte, bool) {
	slot := make([]byte, journalSlot)
	if n, _ := r.ReadAt(slot, int64(i)*journalSlot); n != journalSlot {
		return 0, nil, false
	}
	var seq uint64
	var n int
	var sum string
	if _, err := fmt.Sscanf(string(slot[:journalHeader]), "RWJ1 %x %x %s\n", &seq, &n, &sum); err != nil || n < 0 || journalHeader+n > journalSlot {
		return 0, nil, false
	}
	b := slot[journalHeader : journalHeader+n]
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
		return 0, nil, false
	}
	return seq, b, true
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// SaveJournal writes j to the journal file at path, creating it.
func SaveJournal(path string, j *Journal) error {
	jf, err := openJournalFile(path)
	if err != nil {
		return err
	}
	defer jf.f.Close()
	return jf.write(j)
}

// LoadJournal reads the newest intact slot of the journal at path; a
// missing file is fs.ErrNotExist.
func LoadJournal(path string) (*Journal, error) {
	f, err := openJournalRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var best []byte
	var bestSeq uint64
	for i := range 2 {
		if seq, b, ok := readSlot(f, i); ok && seq > bestSeq {
			best, bestSeq = b, seq
		}
	}
	if best == nil {
		return nil, fmt.Errorf("journal %s holds no intact record", path)
	}
	var j Journal
	if err := json.Unmarshal(best, &j); err != nil {
		return nil, fmt.Errorf("journal %s is damaged: %w", path, err)
	}
	return &j, nil
}

// VerifyJournal reads back every chunk the journal says is on the target
// and compares it with the snapshot (restore.CheckChunks): a stale or
// forged journal cannot make a resumed restore skip a chunk that is not
// there. It returns what it checked and the chunks to write again; an
// error wrapping restore.ErrSource means the snapshot could not be read,
// not that the target differs.
func VerifyJournal(ctx context.Context, snap *snapshot.Snapshot, target io.ReaderAt, j *Journal, jobs int) (*restore.Checked, error) {
	done := j.DoneSet()
	return restore.CheckChunks(ctx, snap, target, func(i int) bool { return i < len(done) && done[i] }, jobs)
}

// journalRun is the journal of the restore under way.
type journalRun struct {
	path   string
	j      *Journal
	file   *journalFile // opened at the first checkpoint
	resume []bool       // chunks already on the disk; nil for a restore from the start
}

// checkpoint records done; restore calls it after a flush of the target.
func (jr *journalRun) checkpoint(done []bool) error {
	if jr.file == nil {
		jf, err := openJournalFile(jr.path)
		if err != nil {
			return err
		}
		jr.file = jf
	}
	jr.j.SetDone(done)
	jr.j.Updated = time.Now().UTC()
	return jr.file.write(jr.j)
}

// firstFalse is the index of the first false in b, or len(b).
func firstFalse(b []bool) int {
	for i, v := range b {
		if !v {
			return i
		}
	}
	return len(b)
}

func (jr *journalRun) remove() {
	if jr.file != nil {
		jr.file.f.Close()
		jr.file = nil
	}
	os.Remove(jr.path)
	syncDir(filepath.Dir(jr.path))
}

// openJournal prepares the resume journal on a writable rescue media and
// looks for one an interrupted restore of the same snapshot onto the same
// disk under the same plan entry left. When one is found, the person at
// the console may start over instead (unattended, it is resumed), and
// every chunk it names is read back from the target and compared with the
// snapshot: those that differ are written again. It returns nil when there
// is no writable media.
// entry is the disk's [[machine.disk]] entry (from 1) when the machine has
// several disks, else 0.
func (r *Rescue) openJournal(ctx context.Context, snap *snapshot.Snapshot, disk Disk, entry int, target io.ReaderAt) *journalRun {
	if r.media == nil || !r.media.RW {
		r.log.Printf("journal: no writable rescue media; an interrupted restore would start over")
		return nil
	}
	want := &Journal{Version: JournalVersion, Snapshot: snap.ID, Plan: PlanHash(r.settings.Machine),
		Target: IdentityOf(disk), Chunks: len(snap.Manifest.Chunks)}
	want.Target.Entry = entry
	jr := &journalRun{path: JournalPath(r.media.Path(MediaJournals), snap.ID, want.Target), j: want}
	rel := "media:/" + MediaJournals + "/" + filepath.Base(jr.path)
	old, err := LoadJournal(jr.path)
	if errors.Is(err, fs.ErrNotExist) {
		return jr
	}
	startOver := func(why string) *journalRun {
		r.log.Printf("journal: %s: %s; the restore starts from the beginning", rel, why)
		jr.remove()
		return jr
	}
	if err != nil {
		return startOver(err.Error())
	}
	if why := old.Mismatch(want); why != "" {
		return startOver(why)
	}
	n := old.Count()
	if n == 0 {
		return startOver("no chunk was recorded")
	}
	if r.settings.Countdown > 0 && len(r.ttys) > 0 {
		q := resumeQuestion(n, old.Chunks, old.Updated)
		if yes, answered := r.asker().Ask(q, time.Duration(r.settings.Countdown)*time.Second); answered && !yes {
			return startOver("starting over was chosen at the console")
		}
	}
	checked, err := VerifyJournal(ctx, snap, target, old, 0)
	if errors.Is(err, restore.ErrSource) {
		// Keep the journal for a later boot; this run goes without one.
		r.log.Printf("journal: %s kept, not used: %v", rel, err)
		return nil
	}
	if err != nil {
		return startOver(err.Error())
	}
	jr.resume = old.DoneSet()
	for _, i := range checked.Differ {
		jr.resume[i] = false
	}
	if len(checked.Differ) == n {
		return startOver(fmt.Sprintf("none of the %d chunks it names is on the disk", n))
	}
	if len(checked.Differ) > 0 {
		r.log.Printf("journal: %d of the %d chunks it names are not on the disk as the snapshot has them (first: chunk %d); they are written again",
			len(checked.Differ), n, checked.Differ[0])
	}
	r.report.Resume = &Resume{Journal: rel, FromChunk: firstFalse(jr.resume), ChunksDone: n - len(checked.Differ), Chunks: old.Chunks,
		Verified: checked.Checked, Rewritten: len(checked.Differ)}
	r.log.Printf("%s", resumeMessage(r.report.Resume))
	return jr
}
