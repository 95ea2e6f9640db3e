package rescue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
)

// uploadSink is a snapshot upload to the lab server as the capture uses
// it: a snapshot.Sink whose session is opened before the disk is read (a
// wrong token or an existing name fails before any work), and which names
// the published generation once committed. upload.Client is one.
type uploadSink interface {
	snapshot.Sink
	Open(ctx context.Context) error
	Published() string
}

// uploadOptions are what the capture tells an upload besides its URL.
type uploadOptions struct {
	Token      string // the plan's [upload] token
	Overwrite  bool   // add a generation to an existing name
	Generation string // the run's generation name (upload.GenerationLayout)
}

// captureEnv holds what a capture reaches outside the rescue flow, so a
// test can swap a part that cannot run on the host. captureMachine uses
// the real ones.
type captureEnv struct {
	// newUpload returns the upload of one disk to snapshot URL loc.
	newUpload func(loc string, o uploadOptions) (uploadSink, error)
	// sources picks the disk of every entry, as a whole (selectDisks).
	sources func(entries []DiskEntry, exclude []string) ([]Disk, []Disk, error)
	// exchange swaps two directories in one step (renameExchange).
	exchange func(a, b string) error
	// now is the clock the generation name (upload.GenerationLayout) is
	// read from: the capture's start, shared by every disk of the run.
	now func() time.Time
}

// captureMachine reads every disk of the machine into its snapshot:
// after the plan, its settings and the network, it checks every
// destination, picks every source disk (the set as a whole), shows them in
// the countdown, then captures the disks one after the other. A disk that
// fails stops the run; its destination holds no snapshot under its name
// (an old one stays as it was), and the report says which disk failed.
// What it needs of the plan is in r.settings (token, disks, overwrite).
func (r *Rescue) captureMachine(ctx context.Context, _ *Plan) (string, error) {
	return r.capture(ctx, captureEnv{
		newUpload: r.newUploadClient,
		sources:   captureSources,
		exchange:  renameExchange,
		now:       time.Now,
	})
}

// captureJob is one disk of a capture.
type captureJob struct {
	entry DiskEntry
	disk  Disk
	dest  captureDest
}

// captureDest is where one disk's snapshot goes.
type captureDest interface {
	// check refuses the destination before anything is read: an
	// existing snapshot without overwrite, a medium that cannot take it,
	// a lab server that refuses the token or the name.
	check(ctx context.Context) error
	// open returns the sink the capture writes into.
	open(ctx context.Context) (snapshot.Sink, error)
	// publish makes the completed capture the snapshot under its name and
	// returns the location restores read it from.
	publish() (string, error)
	// discard removes what a failed capture left.
	discard()
	// explain words an error of the capture for this destination.
	explain(err error) error
}

// capture is captureMachine with env's parts.
func (r *Rescue) capture(ctx context.Context, env captureEnv) (string, error) {
	s := r.settings
	r.report.Action = ActionCapture
	if len(r.report.Disks) != len(s.Disks) {
		r.report.Disks = newDiskReports(s.Disks)
	}
	start := time.Now()
	fail := func(step string, err error) (string, error) {
		r.report.AddStep(step, StepFailed, start, err.Error())
		return StatusFailed, err
	}

	// Destinations, checked before any disk is looked at.
	if err := checkCapture(&s.Machine, s.Disks, s.UploadToken != "", s.S3, "machine "+orNone(s.Machine.Name)); err != nil {
		return fail("plan", err)
	}
	segment, err := s.Machine.segmentBytes()
	if err != nil {
		return fail("plan", fmt.Errorf("machine %s: %w", orNone(s.Machine.Name), err))
	}
	gen := env.now().UTC().Format(upload.GenerationLayout)
	jobs := make([]captureJob, len(s.Disks))
	anyHTTP := false
	for i, e := range s.Disks {
		d, err := r.captureDestination(e.Snapshot, gen, segment, env)
		if err != nil {
			return fail("plan", fmt.Errorf("disk %d: %w", i+1, err))
		}
		jobs[i] = captureJob{entry: e, dest: d}
		anyHTTP = anyHTTP || overNetwork(e.Snapshot)
	}
	if anyHTTP {
		if err := r.network(ctx); err != nil {
			return StatusFailed, err
		}
		if err := r.waitAddress(ctx, snapshot.DefaultRetryFor); err != nil {
			return StatusFailed, err
		}
	}

	// Sources: every entry's disk, the set as a whole, never the medium.
	start = time.Now()
	var exclude []string
	if r.media != nil && r.media.Device != "" {
		exclude = append(exclude, r.media.Device)
	}
	disks, all, err := env.sources(s.Disks, exclude)
	for _, d := range all {
		r.log.Printf("disk: %s", describeTarget(d))
	}
	if err != nil {
		return fail("source", err)
	}
	var lines []string
	for i := range jobs {
		d := disks[i]
		if r.media != nil && r.media.Device != "" && (d.Name == r.media.Disk || d.Path == r.media.Device) {
			return fail("source", fmt.Errorf("disk %d (%s) holds the rescue medium %s: a capture never reads the stick it writes to; make the target spec name another disk", i+1, d.Path, r.media.Device))
		}
		if err := diskrestore.CheckCaptureSource(d.Path); err != nil {
			return fail("source", fmt.Errorf("disk %d: %w", i+1, err))
		}
		jobs[i].disk = d
		r.report.Disks[i].setTarget(d)
		lines = append(lines, fmt.Sprintf("%s -> %s", describeTarget(d), jobs[i].entry.Snapshot))
		r.log.Printf("capture: disk %d: %s -> %s", i+1, describeTarget(d), jobs[i].entry.Snapshot)
	}
	// Every destination, before any disk is read: disk 2's name existing
	// on the server must not leave disk 1 captured alone.
	for i, j := range jobs {
		if err := j.dest.check(ctx); err != nil {
			return fail("source", fmt.Errorf("disk %d (%s): %w", i+1, j.disk.Path, err))
		}
	}
	r.report.AddStep("source", StepOK, start, strings.Join(lines, "; "))

	// Countdown: every disk and where it goes.
	p := Prompt{Action: ActionCapture, Snapshot: jobs[0].entry.Snapshot, Target: describeTarget(jobs[0].disk), Seconds: s.Countdown, Default: s.Default}
	if len(jobs) > 1 {
		for _, j := range jobs {
			p.Disks = append(p.Disks, PromptDisk{Snapshot: j.entry.Snapshot, Disk: describeTarget(j.disk)})
		}
	}
	if status, ok := r.decide(ctx, p); !ok {
		return status, nil
	}

	// Every disk opened and its file systems' maps read before any is
	// stored: one that cannot be captured (not clean, gone, changed)
	// refuses the set, so no machine is left half captured.
	start = time.Now()
	preps := make([]*preparedDisk, len(jobs))
	defer func() {
		for _, p := range preps {
			if p != nil {
				p.f.Close()
			}
		}
	}()
	for i, j := range jobs {
		p, err := prepareDisk(j.disk, r.settings.Machine.Raw)
		if err != nil {
			err = fmt.Errorf("disk %d (%s) cannot be captured, so no disk is; nothing was stored: %w", i+1, j.disk.Path, err)
			r.report.Disks[i].Status, r.report.Disks[i].Error = DiskFailed, err.Error()
			return fail("prepare", err)
		}
		preps[i] = p
	}
	r.report.AddStep("prepare", StepOK, start, fmt.Sprintf("%d disks: layouts and file-system maps read", len(jobs)))

	// The disks, one after the other.
	r.setPhase(PhaseCapturing)
	r.log.Printf("capture: generation %s, %d disks", gen, len(jobs))
	for i, j := range jobs {
		if err := r.captureDisk(ctx, i, j, preps[i], segment); err != nil {
			for k := i + 1; k < len(jobs); k++ {
				r.log.Printf("capture: disk %d (%s) not started", k+1, jobs[k].disk.Path)
			}
			return StatusFailed, err
		}
	}
	return StatusSuccess, nil
}

// preparedDisk is a source disk opened for its capture, with what
// PrepareCapture read of it.
type preparedDisk struct {
	f    *os.File
	size int64
	opts snapshot.CaptureOptions
}

// prepareDisk opens disk d read-only and reads what its capture needs
// before its data (diskrestore.PrepareCapture): a disk that is gone, no
// longer the size it was listed with, or whose file systems cannot be
// captured (not clean) fails here.
func prepareDisk(d Disk, raw bool) (*preparedDisk, error) {
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.Path, err)
	}
	g, err := diskrestore.GeometryOf(f)
	if err == nil && d.Size > 0 && g.Size != d.Size {
		err = fmt.Errorf("%s holds %s, but %s when the disks were matched: it changed or was replaced; check the disks and start again", d.Path, units.Bytes(g.Size), units.Bytes(d.Size))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	// Capture reads front to back: ask the kernel for deep readahead.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	opts, err := diskrestore.PrepareCapture(f, g.Size, g.LogicalSectorSize, raw)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &preparedDisk{f: f, size: g.Size, opts: opts}, nil
}

// captureDisk captures disk i of the machine, prepared as p, into its
// destination.
//
// Its entry in the report is marked DiskOK only once the snapshot is
// complete and published under its name.
func (r *Rescue) captureDisk(ctx context.Context, i int, j captureJob, p *preparedDisk, segment int64) error {
	start := time.Now()
	dr := &r.report.Disks[i]
	dr.Status = DiskRunning
	fail := func(err error) error {
		err = fmt.Errorf("capture of disk %d (%s) into %s failed: %w", i+1, j.disk.Path, j.entry.Snapshot, err)
		r.report.AddStep("capture", StepFailed, start, err.Error())
		dr.Status, dr.Error = DiskFailed, err.Error()
		return err
	}
	// Checked again: the countdown may have lasted long.
	if err := j.dest.check(ctx); err != nil {
		return fail(err)
	}
	f, opts := p.f, p.opts
	opts.SegmentSize = segment
	opts.Origin = snapshot.Origin{Path: j.disk.Path, Hostname: r.settings.Machine.Name, Model: j.disk.Model, Serial: j.disk.Serial}

	sink, err := j.dest.open(ctx)
	if err != nil {
		return fail(err)
	}
	pp, _ := restore.NewProgressPrinter(r.log, restore.ProgressLive, true, "capture")
	show := r.progress(pp.Update)
	began := time.Now()
	opts.Progress = func(done, total int64) {
		show(restore.Progress{Done: done, Total: total, Elapsed: time.Since(began), Final: done == total})
	}
	r.log.Printf("capture: disk %d: reading %s (%s) into %s", i+1, j.disk.Path, units.Bytes(p.size), sink)
	m, err := snapshot.CaptureTo(ctx, f, sink, opts)
	if err != nil {
		j.dest.discard()
		return fail(j.dest.explain(err))
	}
	published, err := j.dest.publish()
	if err != nil {
		j.dest.discard()
		return fail(err)
	}
	id, _ := manifestID(m)
	dr.Status, dr.Published, dr.ID = DiskOK, published, id
	dr.DiskSize, dr.DataBytes = m.DiskSize, m.DataBytes()
	dr.BytesRead, dr.BytesStored = m.DataBytes(), m.StoredBytes()
	dr.Seconds = time.Since(began).Seconds()
	if dr.Seconds > 0 {
		dr.BytesPerSecond = float64(dr.BytesRead) / dr.Seconds
	}
	detail := fmt.Sprintf("disk %d: %s -> %s: %s of data stored in %s (%d segments), id %.16s",
		i+1, j.disk.Path, published, units.Bytes(m.DataBytes()), units.Bytes(m.StoredBytes()), len(m.Segments), id)
	if u := m.UnusedBytes(); u > 0 {
		detail += fmt.Sprintf("; %s of free file-system blocks not stored", units.Bytes(u))
	}
	r.report.AddStep("capture", StepOK, start, detail)
	r.log.Printf("capture: %s", detail)
	if m.Layout != nil {
		for _, n := range m.Layout.Notes {
			r.log.Printf("capture: disk %d: note: %s", i+1, n)
		}
	}
	return nil
}

// manifestID is the snapshot ID of m: the SHA-256 of its manifest bytes.
func manifestID(m *snapshot.Manifest) (string, error) {
	data, err := m.Marshal()
	if err != nil {
		return "", err
	}
	return snapshot.ID(data), nil
}

// captureDestination checks one disk's snapshot location for a capture
// and returns its destination: media:/... on the mounted rescue medium or
// an http(s) URL on the lab server. A plain path is refused: in the
// rescue environment it is in memory and vanishes at the reboot.
func (r *Rescue) captureDestination(loc, gen string, segment int64, env captureEnv) (captureDest, error) {
	switch {
	case isHTTP(loc):
		return &uploadDest{loc: loc, opt: uploadOptions{Token: r.settings.UploadToken, Overwrite: r.settings.Machine.Overwrite, Generation: gen}, env: env}, nil
	case snapshot.IsS3(loc):
		return &s3Dest{loc: loc, r: r, segment: segment}, nil
	case strings.HasPrefix(loc, "media:/"):
		p, err := r.localPath(loc)
		if err != nil {
			return nil, err
		}
		if !r.media.RW {
			return nil, fmt.Errorf("snapshot %s: the rescue medium %s is mounted read-only, so nothing can be captured onto it; write-protected stick or disc? use a writable stick or capture to the lab server (http(s)://...)", loc, r.media.Device)
		}
		return &mediaDest{loc: loc, dir: p, stamp: strings.NewReplacer("-", "", ":", "").Replace(gen), overwrite: r.settings.Machine.Overwrite, log: r.log, exchange: env.exchange, root: r.media.Dir}, nil
	}
	return nil, fmt.Errorf("snapshot %s is not a place a capture can write to: use media:/snapshots/NAME (on the rescue stick) or the lab server's http(s)://host/snapshots/NAME; a plain path is in the rescue environment's memory and would vanish at the reboot", loc)
}

// mediaDest captures onto the rescue medium: into a dot-named directory
// next to the snapshot's (.NAME.partial-GEN), renamed to NAME only once
// complete. An existing NAME is replaced only with overwrite, and only
// after the new snapshot is complete: the two swapped in one step
// (RENAME_EXCHANGE), or where the file system cannot, the old one renamed
// aside (.NAME.old-GEN) and the new one in; then the old one removed.
type mediaDest struct {
	loc       string // media:/snapshots/NAME
	dir       string // its path under the mount point
	root      string // the mount point
	stamp     string // the generation, without the characters FAT refuses
	overwrite bool
	log       *Logger
	// exchange swaps two directories in one step (renameExchange).
	exchange func(a, b string) error
	partial  string // set by open
	free     int64  // bytes free on the medium when open ran; -1 unknown
}

func (m *mediaDest) partialDir() string {
	return filepath.Join(filepath.Dir(m.dir), "."+filepath.Base(m.dir)+".partial-"+m.stamp)
}

func (m *mediaDest) check(context.Context) error {
	// Every directory on the way is a directory of the medium: a symlink
	// (an ext4 stick) would take the capture, or the replace, elsewhere.
	if rel, err := filepath.Rel(m.root, filepath.Dir(m.dir)); err == nil && rel != "." {
		at := m.root
		for _, p := range strings.Split(rel, string(filepath.Separator)) {
			at = filepath.Join(at, p)
			fi, err := os.Lstat(at)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", m.loc, err)
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s: %s on the rescue medium is not a directory (a file or a symlink, which would lead the capture elsewhere); nothing was read or written: remove it or choose another name", m.loc, at)
			}
		}
	}
	fi, err := os.Lstat(m.dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("snapshot %s: %w", m.loc, err)
	case !fi.IsDir():
		return fmt.Errorf("%s exists on the rescue medium and is not a snapshot directory (a file or a symlink); nothing was read or written: remove it or choose another name", m.loc)
	case !m.overwrite:
		return fmt.Errorf("%s already exists on the rescue medium; nothing was read or written: set overwrite = true on the machine to replace it (after the new capture is complete), or choose another name", m.loc)
	}
	// Overwrite replaces a snapshot, never a directory of other things
	// (media:/snapshots itself, say, with every other machine's).
	if _, err := os.Lstat(filepath.Join(m.dir, snapshot.ManifestName)); err != nil {
		return fmt.Errorf("%s exists on the rescue medium but is not a snapshot (no %s): overwrite would replace it with everything in it; nothing was read or written: choose another name", m.loc, snapshot.ManifestName)
	}
	return nil
}

func (m *mediaDest) open(context.Context) (snapshot.Sink, error) {
	parent := filepath.Dir(m.dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, m.explain(fmt.Errorf("create %s on the rescue medium: %w", parent, err))
	}
	// What an earlier capture of this name left when it was cut off
	// (power, reset) takes room on the stick and is nobody's snapshot.
	// So does a replaced snapshot left next to NAME; while NAME is
	// missing, an old one may be all there is, and it stays.
	stale, _ := filepath.Glob(filepath.Join(parent, "."+filepath.Base(m.dir)+".partial-*"))
	if _, err := os.Lstat(m.dir); err == nil {
		old, _ := filepath.Glob(filepath.Join(parent, "."+filepath.Base(m.dir)+".old-*"))
		stale = append(stale, old...)
	}
	for _, p := range stale {
		m.log.Printf("capture: removing %s, left by an unfinished capture", p)
		os.RemoveAll(p)
	}
	m.free = freeBytes(parent)
	m.partial = m.partialDir()
	return snapshot.NewDirSink(m.partial)
}

func (m *mediaDest) publish() (string, error) {
	parent := filepath.Dir(m.dir)
	replace := false
	if _, err := os.Lstat(m.dir); err == nil {
		if !m.overwrite { // appeared during the capture
			return "", fmt.Errorf("%s appeared on the rescue medium during the capture; it was left as it is and the new capture removed", m.loc)
		}
		replace = true
	}
	old := ""
	switch {
	case !replace:
		if err := os.Rename(m.partial, m.dir); err != nil {
			return "", fmt.Errorf("publish %s: %w", m.loc, err)
		}
	case m.exchange(m.partial, m.dir) == nil:
		// In one step: NAME is the new snapshot, the partial name the old.
		old = m.partial
	default:
		// A file system without RENAME_EXCHANGE (vfat before Linux 6.0):
		// the old one aside, then the new one in; the old one is put back
		// when the second rename fails.
		old = filepath.Join(parent, "."+filepath.Base(m.dir)+".old-"+m.stamp)
		if err := os.Rename(m.dir, old); err != nil {
			return "", fmt.Errorf("move the old %s aside: %w", m.loc, err)
		}
		if err := os.Rename(m.partial, m.dir); err != nil {
			if err2 := os.Rename(old, m.dir); err2 != nil {
				return "", fmt.Errorf("publish %s: %w; the old snapshot is kept as %s: rename it back (%v)", m.loc, err, old, err2)
			}
			return "", fmt.Errorf("publish %s: %w", m.loc, err)
		}
	}
	m.partial = ""
	if err := flushDir(parent); err != nil {
		return "", fmt.Errorf("flush %s on the rescue medium: %w", parent, err)
	}
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			m.log.Printf("capture: the replaced snapshot %s could not be removed: %v", old, err)
		}
		flushDir(parent)
	}
	return m.loc, nil
}

// renameExchange swaps the directories a and b in one step.
func renameExchange(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

func (m *mediaDest) discard() {
	if m.partial == "" {
		return
	}
	if err := os.RemoveAll(m.partial); err != nil {
		m.log.Printf("capture: cannot remove the unfinished %s: %v", m.partial, err)
	}
	flushDir(filepath.Dir(m.partial))
}

func (m *mediaDest) explain(err error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	free := "too little"
	if m.free >= 0 {
		free = units.Bytes(m.free)
	}
	return fmt.Errorf("the rescue medium is full: %s free when the capture began, the snapshot needs more; use a larger stick or upload to the lab server (snapshot = \"http(s)://...\"); the unfinished capture was removed and any old snapshot under %s is untouched: %w", free, m.loc, err)
}

// freeBytes is the space free to a user on the file system of dir, or -1.
func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// flushDir flushes a directory, making the renames in it durable.
func flushDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// uploadDest uploads to the lab server ('rewind serve --upload-token').
type uploadDest struct {
	loc    string
	opt    uploadOptions
	env    captureEnv
	client uploadSink
	probed bool // check found the server willing
}

// check asks the server, once, whether it takes this upload: it opens a
// session and drops it again, so that a wrong token, uploads that are
// off, an existing name without overwrite or a full disk on the server
// refuse the whole capture before any disk is read. The session the
// capture writes into is opened later, by open (an idle one would expire
// while the disks before it are read).
func (u *uploadDest) check(ctx context.Context) error {
	if u.probed {
		return nil
	}
	c, err := u.env.newUpload(u.loc, u.opt)
	if err != nil {
		return err
	}
	if err := c.Open(ctx); err != nil {
		return err
	}
	c.Abort()
	u.probed = true
	return nil
}

func (u *uploadDest) open(ctx context.Context) (snapshot.Sink, error) {
	c, err := u.env.newUpload(u.loc, u.opt)
	if err != nil {
		return nil, err
	}
	if err := c.Open(ctx); err != nil {
		return nil, err
	}
	u.client = c
	return c, nil
}

func (u *uploadDest) publish() (string, error) { return u.client.Published(), nil }

// discard has nothing to do: the capture aborted the session.
func (u *uploadDest) discard() {}

func (u *uploadDest) explain(err error) error { return err }

// s3Dest captures to an object store: an S3Sink, whose snapshot becomes
// visible only when its manifest is written, last.
type s3Dest struct {
	loc     string
	r       *Rescue
	segment int64
	sink    *snapshot.S3Sink
}

// check opens the sink (checking the credential and that no snapshot is
// there) before any disk is read; open uses it.
func (d *s3Dest) check(ctx context.Context) error {
	if d.sink != nil {
		return nil
	}
	o, err := d.r.s3Options(d.r.settings.S3.S3To)
	if err != nil {
		return err
	}
	sink, err := snapshot.NewS3Sink(ctx, d.loc, o, snapshot.S3SinkOptions{Transport: d.r.client.Transport, SegmentSize: d.segment, Log: d.r.log.Event})
	if err != nil {
		return err
	}
	d.sink = sink
	return nil
}

func (d *s3Dest) open(ctx context.Context) (snapshot.Sink, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	return d.sink, nil
}

func (d *s3Dest) publish() (string, error) { return d.loc, nil }

// discard has nothing to do: no object is visible until Commit, and the
// open uploads are kept for a resume.
func (d *s3Dest) discard() {}

func (d *s3Dest) explain(err error) error { return err }

// newUploadClient returns the upload of one disk to the lab server
// through the rescue flow's HTTP client (the plan's ca).
func (r *Rescue) newUploadClient(loc string, o uploadOptions) (uploadSink, error) {
	return upload.NewClient(loc, upload.ClientOptions{
		HTTP: r.client, Token: o.Token, Overwrite: o.Overwrite, Generation: o.Generation, Log: r.log.Printf,
	})
}

// captureSources picks the disk of every entry for a capture, the set as
// a whole (selectDisks).
func captureSources(entries []DiskEntry, exclude []string) ([]Disk, []Disk, error) {
	return selectDisks(entries, exclude, true)
}
