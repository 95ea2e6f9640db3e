package rescue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/netcfg"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Report statuses.
const (
	StatusSuccess = "success"
	StatusFailed  = "failed"
	StatusAborted = "aborted"
)

// validReportStatus reports whether s is a status the rescue flow sends:
// a final one, or StatusRunning for a progress update.
func validReportStatus(s string) bool {
	switch s {
	case StatusSuccess, StatusFailed, StatusAborted, StatusRunning:
		return true
	}
	return false
}

// Phases of a running rescue, in the order they come (Report.Phase). A
// final report's phase is where the run ended; the lab page shows done,
// failed or aborted for it.
const (
	PhaseBooting    = "booting"    // drivers and plan; before the network
	PhaseNetwork    = "network"    // on the network: opening snapshots, matching disks, countdown
	PhaseRestoring  = "restoring"  // writing the disks
	PhaseCapturing  = "capturing"  // reading the disks into snapshots
	PhaseInstalling = "installing" // copying the plan's files into the restored system
)

// validPhase reports whether p is a phase the rescue flow sends.
func validPhase(p string) bool {
	switch p {
	case "", PhaseBooting, PhaseNetwork, PhaseRestoring, PhaseCapturing, PhaseInstalling:
		return true
	}
	return false
}

// Step statuses.
const (
	StepOK      = "ok"
	StepFailed  = "failed"
	StepSkipped = "skipped"
)

// ReportVersion is the version of the JSON report's schema.
const ReportVersion = 1

// Report is the record of one rescue boot: what was planned, what ran,
// and how it ended. It is written as JSON to the rescue media, POSTed to
// the plan's report URL, and summarised on the console.
type Report struct {
	Version int    `json:"version"`
	Status  string `json:"status"`
	// Action is ActionRestore or ActionCapture; "" before the plan was read.
	Action string `json:"action,omitempty"`
	// Phase is what a running rescue is doing (Phase* constants), sent
	// with its progress updates for the lab page; "" in older reports.
	Phase    string    `json:"phase,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"seconds"`

	Machine struct {
		Name      string `json:"name,omitempty"`      // the plan's entry
		Selection string `json:"selection,omitempty"` // why that entry was chosen
		Identity
		Kernel string `json:"kernel,omitempty"`
		// SecureBoot is the firmware's Secure Boot and the kernel's
		// lockdown; nil in older reports.
		SecureBoot *SecureBootState `json:"secure_boot,omitempty"`
	} `json:"machine"`
	// DriversRefused lists the modules of drivers/ folders the kernel
	// did not load, with its error and, for a signature check, why.
	DriversRefused []DriverRefusal `json:"drivers_refused,omitempty"`
	Plan           struct {
		Source string `json:"source,omitempty"`
		Target string `json:"target,omitempty"`
		After  string `json:"after,omitempty"`
	} `json:"plan"`
	// Disks is every disk of the machine, in the plan's order, with what
	// became of it. The single-disk fields (Snapshot, Target, Layout,
	// BytesWritten, ...) repeat the first disk's, for the lab page and
	// older readers.
	Disks    []DiskReport `json:"disks,omitempty"`
	Snapshot struct {
		Location  string `json:"location,omitempty"`
		ID        string `json:"id,omitempty"`
		Signed    bool   `json:"signed"`
		DiskSize  int64  `json:"disk_size,omitempty"`
		DataBytes int64  `json:"data_bytes,omitempty"`
	} `json:"snapshot"`
	Target struct {
		Path        string `json:"path,omitempty"`
		Model       string `json:"model,omitempty"`
		Serial      string `json:"serial,omitempty"`
		Size        int64  `json:"size,omitempty"`
		Description string `json:"description,omitempty"`
	} `json:"target"`
	Network        *netcfg.Report   `json:"network,omitempty"`   // every NIC: MAC, name, driver, link, settings, lease
	Countdown      string           `json:"countdown,omitempty"` // how the countdown ended
	Layout         string           `json:"layout,omitempty"`    // gpt, mbr or none
	LayoutWritten  bool             `json:"layout_written"`
	TableCleared   bool             `json:"table_cleared"`
	BytesWritten   int64            `json:"bytes_written"`
	BytesZeroed    int64            `json:"bytes_zeroed"`
	BytesSkipped   int64            `json:"bytes_skipped,omitempty"` // delta: chunks already on the target, not written
	Delta          bool             `json:"delta,omitempty"`         // only chunks that differ were written
	Resume         *Resume          `json:"resume,omitempty"`        // an interrupted restore was continued
	Wipe           *machine.Wipe    `json:"wipe,omitempty"`          // the bytes the snapshot does not cover: mode, method, time
	RestoreSeconds float64          `json:"restore_seconds,omitempty"`
	BytesPerSecond float64          `json:"bytes_per_second,omitempty"`
	InstallFiles   []InstallOutcome `json:"install_files,omitempty"` // each file's outcome
	Steps          []Step           `json:"steps"`
	Error          string           `json:"error,omitempty"`
}

// Disk statuses (DiskReport.Status).
const (
	DiskOK         = "ok"
	DiskFailed     = "failed"
	DiskNotStarted = "not started"
	DiskRunning    = "running" // in progress updates only
)

// DiskReport is one disk of a machine in the report: its snapshot, the
// disk it was matched to, and what became of it.
type DiskReport struct {
	// Snapshot is the snapshot's location as the plan names it.
	Snapshot string `json:"snapshot"`
	// Published is where a capture's snapshot can be restored from: the
	// generation's URL of an upload, the media: location of a capture
	// onto the rescue medium.
	Published string `json:"published,omitempty"`
	ID        string `json:"id,omitempty"` // the snapshot's ID
	Signed    bool   `json:"signed,omitempty"`
	DiskSize  int64  `json:"disk_size,omitempty"`  // the snapshot's disk size
	DataBytes int64  `json:"data_bytes,omitempty"` // bytes of data it covers
	Spec      string `json:"spec,omitempty"`       // the plan's target spec
	Target    struct {
		Path        string `json:"path,omitempty"`
		Model       string `json:"model,omitempty"`
		Serial      string `json:"serial,omitempty"`
		Size        int64  `json:"size,omitempty"`
		Description string `json:"description,omitempty"`
	} `json:"target"`
	// Status is DiskOK, DiskFailed, DiskNotStarted (an earlier disk
	// failed, or the run ended before it), or DiskRunning.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`

	// A restore's outcome.
	Layout         string        `json:"layout,omitempty"`
	LayoutWritten  bool          `json:"layout_written,omitempty"`
	TableCleared   bool          `json:"table_cleared,omitempty"`
	BytesWritten   int64         `json:"bytes_written,omitempty"`
	BytesZeroed    int64         `json:"bytes_zeroed,omitempty"`
	BytesSkipped   int64         `json:"bytes_skipped,omitempty"`
	Resume         *Resume       `json:"resume,omitempty"`
	Wipe           *machine.Wipe `json:"wipe,omitempty"`
	Seconds        float64       `json:"seconds,omitempty"` // restoring or capturing this disk
	BytesPerSecond float64       `json:"bytes_per_second,omitempty"`

	// A capture's outcome: the bytes read from the disk and stored.
	BytesRead   int64 `json:"bytes_read,omitempty"`
	BytesStored int64 `json:"bytes_stored,omitempty"`
}

// newDiskReports starts the report's Disks: every disk not started.
func newDiskReports(disks []DiskEntry) []DiskReport {
	out := make([]DiskReport, len(disks))
	for i, d := range disks {
		out[i] = DiskReport{Snapshot: d.Snapshot, Spec: d.Target, Status: DiskNotStarted}
	}
	return out
}

// setTarget records disk d as this entry's disk.
func (d *DiskReport) setTarget(disk Disk) {
	d.Target.Path, d.Target.Model, d.Target.Serial, d.Target.Size = disk.Path, disk.Model, disk.Serial, disk.Size
	d.Target.Description = describeTarget(disk)
}

// fillFromFirstDisk sets the single-disk fields from Disks[0], for the
// lab page and readers that predate Disks.
func (r *Report) fillFromFirstDisk() {
	if len(r.Disks) == 0 {
		return
	}
	d := &r.Disks[0]
	r.Snapshot.Location, r.Snapshot.ID, r.Snapshot.Signed = d.Snapshot, d.ID, d.Signed
	r.Snapshot.DiskSize, r.Snapshot.DataBytes = d.DiskSize, d.DataBytes
	if d.Target.Path != "" {
		r.Target.Path, r.Target.Model, r.Target.Serial, r.Target.Size = d.Target.Path, d.Target.Model, d.Target.Serial, d.Target.Size
		r.Target.Description = d.Target.Description
	}
	if d.Layout != "" {
		r.Layout = d.Layout
	}
	r.LayoutWritten, r.TableCleared = d.LayoutWritten, d.TableCleared
	r.BytesWritten, r.BytesZeroed, r.BytesSkipped = d.BytesWritten, d.BytesZeroed, d.BytesSkipped
	r.Resume, r.Wipe = d.Resume, d.Wipe
	r.RestoreSeconds, r.BytesPerSecond = d.Seconds, d.BytesPerSecond
}

// progressCopy is a copy of r for a progress update while a disk runs:
// status running, the single-disk fields from the first disk, and done
// bytes of the running disk (DiskRunning) written (read, for a capture)
// of total; total stands in for the disk's data bytes while a capture,
// which learns them only at its end, runs. Disks is copied too, so the
// update can be sent while the flow goes on filling in r.
func (r *Report) progressCopy(done, total int64) *Report {
	u := *r
	u.Disks = slices.Clone(r.Disks)
	u.Status = StatusRunning
	for i := range u.Disks {
		if d := &u.Disks[i]; d.Status == DiskRunning {
			d.BytesWritten, d.BytesZeroed, d.BytesSkipped = done, 0, 0
			if d.DataBytes == 0 && total > 0 {
				d.DataBytes = total
			}
		}
	}
	u.fillFromFirstDisk()
	if len(u.Disks) <= 1 {
		u.BytesWritten, u.BytesZeroed, u.BytesSkipped = done, 0, 0
	}
	return &u
}

// Resume says how an interrupted restore was continued from its journal.
type Resume struct {
	Journal    string `json:"journal"`     // on the rescue media
	FromChunk  int    `json:"from_chunk"`  // the first chunk not on the disk
	ChunksDone int    `json:"chunks_done"` // chunks the journal had, not written again
	Chunks     int    `json:"chunks"`
	Verified   int    `json:"verified"`  // of them, read back and compared before resuming: all of them
	Rewritten  int    `json:"rewritten"` // of those, found different and written again
}

// Step is one stage of the rescue flow.
type Step struct {
	Name    string  `json:"name"`
	Status  string  `json:"status"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// NewReport starts a report.
func NewReport(now time.Time) *Report {
	return &Report{Version: ReportVersion, Status: StatusFailed, Phase: PhaseBooting, Started: now}
}

// AddStep records a finished step.
func (r *Report) AddStep(name, status string, start time.Time, detail string) {
	r.Steps = append(r.Steps, Step{Name: name, Status: status, Seconds: time.Since(start).Seconds(), Detail: detail})
}

// disksDone returns the numbers of the disks that ended DiskOK and of
// those that did not.
func (r *Report) disksDone() (done, notDone []string) {
	for i, d := range r.Disks {
		if d.Status == DiskOK {
			done = append(done, strconv.Itoa(i+1))
		} else {
			notDone = append(notDone, strconv.Itoa(i+1))
		}
	}
	return done, notDone
}

// restored reports whether the restore step succeeded.
func (r *Report) restored() bool {
	for _, s := range r.Steps {
		if s.Name == "restore" && s.Status == StepOK {
			return true
		}
	}
	return false
}

// Finish sets the final status and times, and the single-disk fields from
// the first disk.
func (r *Report) Finish(status string, err error, now time.Time) {
	r.fillFromFirstDisk()
	r.Status = status
	if err != nil {
		r.Error = err.Error()
	}
	r.Finished = now
	r.Seconds = now.Sub(r.Started).Seconds()
}

// JSON encodes the report. The password of any URL in it (the plan's
// http://user:password@host/...) is replaced by xxxxx, as url.Redacted
// does: reports go to the lab's public page and onto the medium.
func (r *Report) JSON() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	b = urlPassword.ReplaceAll(b, []byte("${1}:xxxxx@"))
	return append(b, '\n')
}

// urlPassword matches the user and password of an http(s) URL.
var urlPassword = regexp.MustCompile(`(?i)(https?://[^/@"\s:]*):[^/@"\s]*@`)

// FileName is the report's file name under rewind/reports/.
func (r *Report) FileName() string {
	name := r.Machine.Name
	if name == "" {
		name = "machine"
	}
	status := r.Status
	if !validReportStatus(status) {
		status = "unknown"
	}
	name = strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '_'
	}, name)
	return fmt.Sprintf("%s-%s-%s.json", r.Started.UTC().Format("20060102T150405Z"), name, status)
}

// SaveReport writes the report as JSON into dir (rewind/reports on the
// rescue media), plus a copy named last.json.
// Only regular files are written: a symbolic link, device node or FIFO
// planted on an ext4 medium (last.json -> /dev/sda, the disk just
// restored) is refused, not written through.
func SaveReport(r *Report, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	for _, name := range []string{r.FileName(), "last.json"} {
		// O_NONBLOCK: a FIFO there fails instead of waiting for a reader.
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
		if err != nil {
			return "", fmt.Errorf("report %s: %w (a symbolic link or FIFO there is not written through: remove it)", filepath.Join(dir, name), err)
		}
		fi, err := f.Stat()
		if err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("it is a %s, not a file: remove it", fi.Mode().Type())
		}
		if err == nil {
			err = f.Truncate(0)
		}
		if err == nil {
			_, err = f.Write(r.JSON())
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("report %s: %w", filepath.Join(dir, name), err)
		}
	}
	return filepath.Join(dir, r.FileName()), nil
}

// PostReport sends the JSON report to url, with the lab's report token
// (the plan's [report] token) as a bearer token when it is set, through
// client (nil: httpClient(nil), the rescue image's CA bundle).
func PostReport(ctx context.Context, client *http.Client, url, token string, r *Report) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(r.JSON()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if client == nil {
		client = httpClient(nil)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	// The server's reason, on one line and bounded: it is untrusted text.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	why := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("report server %s refused the report (%s): %s; check the plan's [report] token against rewind serve --report-token", url, resp.Status, why)
	}
	return fmt.Errorf("report server %s answered %s: %s", url, resp.Status, why)
}
