package rescue

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Live rows: a machine's latest progress update is kept in
// reports/live/ as well as in memory, so a restarted server still shows
// the machines at work (each as last heard from) until they report again.
// Final reports are the files in reports/ itself; a machine's live file
// goes when its final report comes.

// liveDir is the directory of live rows inside the reports directory.
const liveDir = "live"

// liveEvery is how often a running machine's live file is rewritten
// (more often when its phase changes).
const liveEvery = 10 * time.Second

// maxLiveFile bounds a live file (1000 machines: 64 MiB at most).
const maxLiveFile = 64 << 10

// liveRow is a live file's content.
type liveRow struct {
	Received  time.Time       `json:"received"`
	FirstSeen time.Time       `json:"first_seen"`
	Rate      float64         `json:"rate"`
	Report    json.RawMessage `json:"report"`
}

// liveName is the file of machine id's live row: a hash of its identity,
// so no report text becomes a file name.
func liveName(id machineID) string {
	sum := sha256.Sum256([]byte(id.key()))
	return liveDir + "/" + hex.EncodeToString(sum[:16]) + ".json"
}

// openLiveDir makes reports/live if needed: a real directory.
func (s *ReportServer) openLiveDir() error {
	fi, err := s.root.Lstat(liveDir)
	if errors.Is(err, fs.ErrNotExist) {
		if err = s.root.Mkdir(liveDir, 0o755); err == nil {
			fi, err = s.root.Lstat(liveDir)
		}
	}
	if err != nil {
		return fmt.Errorf("report directory %s: %w", s.root.Name(), err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("report directory %s: %s is not a directory (a symbolic link or a file); move it away", s.root.Name(), liveDir)
	}
	return nil
}

// saveLive writes row as its machine's live file, at most every liveEvery
// unless its phase changed. A failure is logged: the row stays in memory.
// The caller holds s.mu.
func (s *ReportServer) saveLive(row *reportRow, now time.Time) {
	if row == nil || (now.Sub(row.liveSaved) < liveEvery && row.livePhase == row.report.Phase) {
		return
	}
	row.liveSaved, row.livePhase = now, row.report.Phase
	b, err := json.Marshal(liveRow{Received: row.received, FirstSeen: row.firstSeen, Rate: row.rate, Report: row.report.JSON()})
	if err == nil && len(b) > maxLiveFile {
		// A real progress update is a few KiB; a larger one stays in
		// memory only, so live files cannot fill the server's disk.
		err = fmt.Errorf("the update is %d bytes, more than the %d a live file holds", len(b), maxLiveFile)
	}
	if err == nil {
		name := liveName(row.id)
		tmp := name + ".tmp"
		if err = s.root.WriteFile(tmp, b, 0o644); err == nil {
			err = s.root.Rename(tmp, name)
		}
		if err != nil {
			s.root.Remove(tmp)
		}
	}
	if err != nil {
		s.log.Warn("live row not saved", "machine", row.id.label(), "err", err)
	}
}

// removeLive removes machine id's live file, if any.
func (s *ReportServer) removeLive(id machineID) {
	if err := s.root.Remove(liveName(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("live row not removed", "machine", id.label(), "err", err)
	}
}

// loadLive reads the live rows a previous server left, after the final
// reports: a live row shows only when its machine has no newer report.
// Live files are checked as POSTed reports are; a bad one is skipped and
// removed.
func (s *ReportServer) loadLive() error {
	if err := s.openLiveDir(); err != nil {
		return err
	}
	d, err := s.root.Open(liveDir)
	if err != nil {
		return fmt.Errorf("report directory %s: %w", s.root.Name(), err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("report directory %s: %w", s.root.Name(), err)
	}
	n := 0
	for _, e := range entries {
		name := liveDir + "/" + e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".json") {
			if strings.HasSuffix(name, ".tmp") {
				s.root.Remove(name) // a write cut by a crash
			}
			continue
		}
		if n++; n > s.cfg.MaxMachines {
			break
		}
		lr, r, id, err := s.readLive(name)
		if err == nil && name != liveName(id) {
			err = errors.New("its name is not its machine's")
		}
		if err != nil {
			s.log.Warn("live row skipped and removed", "dir", s.root.Name(), "file", name, "err", err)
			s.root.Remove(name)
			continue
		}
		if old := s.rows[id.key()]; old != nil && !old.received.Before(lr.Received) {
			s.root.Remove(name) // a final report came after it
			continue
		}
		if s.keep(id, r, lr.Received) {
			if row := s.rows[id.key()]; row != nil {
				if !lr.FirstSeen.IsZero() && lr.FirstSeen.Before(lr.Received) {
					row.firstSeen = lr.FirstSeen
				}
				if lr.Rate > 0 && lr.Rate < 1e12 {
					row.rate = lr.Rate
				}
				row.liveSaved, row.livePhase = lr.Received, r.Phase
			}
		}
	}
	return nil
}

// readLive reads and checks one live file.
func (s *ReportServer) readLive(name string) (*liveRow, *Report, machineID, error) {
	f, err := s.root.Open(name)
	if err != nil {
		return nil, nil, machineID{}, err
	}
	defer f.Close()
	limit := int64(maxLiveFile)
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, nil, machineID{}, err
	}
	if int64(len(b)) > limit {
		return nil, nil, machineID{}, fmt.Errorf("larger than %d bytes", limit)
	}
	var lr liveRow
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lr); err != nil {
		return nil, nil, machineID{}, err
	}
	r, id, err := decodeReport(bytes.NewReader(lr.Report))
	if err != nil {
		return nil, nil, machineID{}, err
	}
	if r.Status != StatusRunning {
		return nil, nil, machineID{}, fmt.Errorf("status %q, not a running machine", r.Status)
	}
	if lr.Received.IsZero() {
		return nil, nil, machineID{}, errors.New("no receive time")
	}
	return &lr, r, id, nil
}

// nextRate is a running machine's rate once update r arrives at
// received: the bytes done since its previous update over the server's
// time between them, smoothed. Updates that go back (they race) keep the
// old rate.
func nextRate(old *reportRow, r *Report, received time.Time) float64 {
	od, _ := progressOf(old.report)
	nd, _ := progressOf(r)
	dt := received.Sub(old.received).Seconds()
	if dt < 0.5 || nd < od {
		return old.rate
	}
	inst := float64(nd-od) / dt
	if old.rate == 0 {
		return inst
	}
	return 0.5*old.rate + 0.5*inst
}
