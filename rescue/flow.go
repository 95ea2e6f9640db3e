package rescue

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/netcfg"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"golang.org/x/sys/unix"
)

// Paths inside the rescue initramfs (written by initramfs.Overlay).
const (
	OverlayPlan    = "/etc/rewind/plan.toml"
	OverlayTrust   = "/etc/rewind/trust"
	OverlayDrivers = "/etc/rewind/drivers"
	OverlayMediaID = "/etc/rewind/media-id"
	MediaPlan      = "rewind/plan.toml"
	MediaReports   = "rewind/reports"
)

// Report markers around the JSON report on the console, for machines that
// read the console log (the QEMU tests, a serial console server).
const (
	ReportBegin  = "----- BEGIN REWIND REPORT -----"
	ReportEnd    = "----- END REWIND REPORT -----"
	ResultPrefix = "REWIND-RESULT: "
)

// Rescue is one boot of the rescue environment.
type Rescue struct {
	log      *Logger
	ttys     []*TTY
	drivers  *Drivers
	media    *Media
	over     Overrides
	report   *Report
	settings *Settings
	netUp    bool
	// builtin is the plan built into the rescue image, kept when
	// rewind.plan= loads another: its trust list stays required.
	builtin *Plan
	// trustDir holds the keys built into the image (media build
	// --trust); "" is OverlayTrust.
	trustDir string
	// s3Credentials is the credentials file built into the image (media
	// build --s3-credentials); "" is DefaultS3Credentials.
	s3Credentials string
	// mediaIDFile records the rescue medium's identity; "" is OverlayMediaID.
	mediaIDFile string
	mediaID     MediaID
	mediaErr    error // why no medium was used, when candidates were refused
	// roots are the certificate authorities trusted for https: the
	// rescue image's CA bundle plus the plan's ca; nil until a plan adds one.
	roots *x509.CertPool
	// client is httpClient(roots): plans, install files and reports.
	client *http.Client
	// leases keeps the DHCP NICs configured; nil until network() ran.
	leases *netcfg.Leases
}

// Main runs the rescue flow as PID 1 and never returns: it ends by
// rebooting, powering off, or running the rescue shell forever.
func Main() {
	MountBasics()
	cmdline := KernelCmdline()
	r := &Rescue{ttys: OpenConsoles(ConsolePaths(cmdline)), report: NewReport(time.Now())}
	var ws []io.Writer
	for _, t := range r.ttys {
		ws = append(ws, t)
	}
	r.log = NewLogger(ws)
	r.log.Printf("Rewind rescue environment starting")
	r.report.Machine.Kernel = kernelRelease()

	after := AfterReboot
	status, err := r.run(context.Background(), cmdline)
	if r.settings != nil {
		after = r.settings.After
	} else if r.over.After != "" {
		after = r.over.After
	} else if err != nil {
		after = AfterShell // nothing planned: leave a person a shell
	}
	r.finish(status, err)
	r.end(after, status)
}

// secureBoot reads the firmware's Secure Boot and the kernel's lockdown
// for the console, the report and the drivers' refusals.
func (r *Rescue) secureBoot() {
	r.drivers.Load("efivarfs")
	MountSecurityFS()
	sb := ReadSecureBoot("/")
	r.drivers.secureBoot = sb
	r.report.Machine.SecureBoot = &sb
	r.log.Printf("secure boot: %s", sb)
}

// run does everything up to the report; it returns the outcome.
func (r *Rescue) run(ctx context.Context, cmdline string) (string, error) {
	var err error
	start := time.Now()
	if r.over, err = ParseCmdline(cmdline); err != nil {
		r.report.AddStep("plan", StepFailed, start, err.Error())
		return StatusFailed, err
	}

	// Drivers: coldplug, the initramfs' extra drivers, then again after USB settles.
	r.drivers = NewDrivers(r.log.Printf)
	r.secureBoot()
	r.drivers.Coldplug()
	if n, err := r.drivers.LoadDir(OverlayDrivers); n > 0 || err != nil {
		r.log.Printf("drivers: %d extra modules from the rescue image (%v)", n, err)
	}
	r.drivers.Settle(1500*time.Millisecond, 10*time.Second)
	r.report.DriversRefused = r.drivers.Refused()
	r.report.AddStep("drivers", StepOK, start, strings.Join(r.drivers.Loaded(), " "))
	r.log.Printf("drivers: %d modules loaded in %.1fs", len(r.drivers.Loaded()), time.Since(start).Seconds())

	// Plan.
	start = time.Now()
	plan, source, err := r.loadPlan(ctx)
	if err != nil {
		r.report.AddStep("plan", StepFailed, start, err.Error())
		return StatusFailed, err
	}
	r.report.Plan.Source = source
	id := ReadIdentity()
	r.report.Machine.Identity = id
	r.settings, err = plan.Resolve(id, r.over)
	if errors.Is(err, ErrNoMachine) && plan.Attended(r.over) && len(r.ttys) > 0 {
		r.log.Printf("plan: %v", err)
		r.settings, err = r.pickMachine(ctx, plan, id)
	}
	if err == nil {
		err = r.settings.Check()
	}
	if err != nil {
		r.report.AddStep("plan", StepFailed, start, err.Error())
		return StatusFailed, err
	}
	if r.roots, err = planRoots(r.builtin, plan); err != nil {
		r.report.AddStep("plan", StepFailed, start, err.Error())
		return StatusFailed, err
	}
	r.client = httpClient(r.roots)
	s := r.settings
	r.report.Action = s.Action
	r.report.Machine.Name, r.report.Machine.Selection = s.Machine.Name, s.Why
	r.report.Plan.Target, r.report.Plan.After = s.Disks[0].Target, s.After
	r.report.Disks = newDiskReports(s.Disks)
	r.report.AddStep("plan", StepOK, start, fmt.Sprintf("%s: machine %q (%s), %s", source, s.Machine.Name, s.Why, planDisks(s)))
	r.log.Printf("plan: %s, machine %q chosen by %s; %s; after %s", source, s.Machine.Name, s.Why, planDisks(s), s.After)

	// Network, when the plan configures it or something is behind HTTP.
	anyHTTP := false
	for _, d := range s.Disks {
		anyHTTP = anyHTTP || overNetwork(d.Snapshot)
	}
	if s.Network != nil || anyHTTP || isHTTP(s.ReportURL) {
		if err := r.network(ctx); err != nil {
			return StatusFailed, err
		}
	}
	r.setPhase(PhaseNetwork)
	if anyHTTP {
		// As long as the snapshot's server would be retried: a switch
		// port that comes up late or a slow DHCP server is waited for.
		if err := r.waitAddress(ctx, snapshot.DefaultRetryFor); err != nil {
			return StatusFailed, err
		}
	}

	if s.Action == ActionCapture {
		return r.captureMachine(ctx, plan)
	}
	return r.restoreMachine(ctx, plan)
}

// planDisks words the settings' action and disks for the log and report.
func planDisks(s *Settings) string {
	arrow := "<-"
	if s.Action == ActionCapture {
		arrow = "->"
	}
	var parts []string
	for _, d := range s.Disks {
		parts = append(parts, fmt.Sprintf("target %q %s snapshot %s", d.Target, arrow, d.Snapshot))
	}
	n := "1 disk"
	if len(s.Disks) > 1 {
		n = fmt.Sprintf("%d disks", len(s.Disks))
	}
	return fmt.Sprintf("%s %s: %s", s.Action, n, strings.Join(parts, "; "))
}

// restoreMachine restores every disk of the machine: it opens and checks
// every snapshot and matches every disk before the countdown, so that a
// missing snapshot or disk stops the run before anything is written;
// then restores the disks one after the other. A failure stops the run:
// the report says which disks were restored and which were not. The
// plan's install_file entries go into the first disk.
func (r *Rescue) restoreMachine(ctx context.Context, plan *Plan) (string, error) {
	s := r.settings
	several := len(s.Disks) > 1

	// Snapshots: signed as the image requires and, when the entry pins
	// them, the ones it expects.
	start := time.Now()
	var snaps []*snapshot.Snapshot
	defer func() {
		for _, sn := range snaps {
			sn.Close()
		}
	}()
	var details []string
	for i, d := range s.Disks {
		dr := &r.report.Disks[i]
		snap, err := r.snapshotFor(ctx, plan, s.Machine.Name, d)
		if err != nil {
			err = diskError(i, several, err)
			dr.Status, dr.Error = DiskFailed, err.Error()
			r.report.AddStep("snapshot", StepFailed, start, err.Error())
			return StatusFailed, err
		}
		snaps = append(snaps, snap)
		m := snap.Manifest
		dr.ID, dr.Signed, dr.DiskSize, dr.DataBytes = snap.ID, snap.Verified, m.DiskSize, m.DataBytes()
		details = append(details, fmt.Sprintf("id %.16s, %s of data", snap.ID, units.Bytes(m.DataBytes())))
	}
	r.report.AddStep("snapshot", StepOK, start, strings.Join(details, "; "))

	// Targets: the set as a whole, each large enough for its snapshot.
	start = time.Now()
	disks, err := r.selectTargets(s.Disks, snaps)
	if err != nil {
		r.report.AddStep("target", StepFailed, start, err.Error())
		return StatusFailed, err
	}
	var targets []string
	for i, d := range disks {
		r.report.Disks[i].setTarget(d)
		targets = append(targets, describeTarget(d))
		if several {
			r.log.Printf("target: disk %d: %s <- %s", i+1, describeTarget(d), s.Disks[i].Snapshot)
		}
	}
	r.report.AddStep("target", StepOK, start, strings.Join(targets, "; "))

	// Countdown: every disk is shown before anything is written.
	p := Prompt{Action: ActionRestore, Seconds: s.Countdown, Default: s.Default}
	for i, snap := range snaps {
		m := snap.Manifest
		pd := PromptDisk{Snapshot: describeSnapshot(s.Disks[i].Snapshot, m.DiskSize, m.DataBytes(), snap.Verified), Disk: describeTarget(disks[i])}
		p.Disks = append(p.Disks, pd)
	}
	if !several {
		p.Snapshot, p.Target, p.Disks = p.Disks[0].Snapshot, p.Disks[0].Disk, nil
	}
	if status, ok := r.decide(ctx, p); !ok {
		return status, nil
	}

	// Layout and data of each disk, then the files the plan installs
	// into the restored system.
	r.setPhase(PhaseRestoring)
	for i := range disks {
		if several {
			r.log.Printf("restore: disk %d of %d: %s <- %s", i+1, len(disks), disks[i].Path, s.Disks[i].Snapshot)
		}
		entry := 0
		if several {
			entry = i + 1
		}
		status, err := r.restore(ctx, snaps[i], disks[i], entry, &r.report.Disks[i])
		if err != nil || status != StatusSuccess {
			return status, diskError(i, several, err)
		}
	}
	return r.install(ctx, snaps[0], disks[0])
}

// diskError names disk i+1 in err when the machine has several disks.
func diskError(i int, several bool, err error) error {
	if err == nil || !several {
		return err
	}
	return fmt.Errorf("disk %d: %w", i+1, err)
}

// decide runs the countdown for p (or decides without one, as the plan
// says) and records how it ended. ok is true when the run goes on; else
// status is how it ends.
func (r *Rescue) decide(ctx context.Context, p Prompt) (status string, ok bool) {
	s := r.settings
	d, why := DecideRestore, whyNoPrompt
	if s.Countdown > 0 {
		d, why = r.countdown(ctx, p)
	} else if s.Default == DefaultAbort {
		d, why = DecideAbort, "no prompt and the default is abort"
	}
	r.report.Countdown = d.String() + ": " + why
	switch d {
	case DecideAbort:
		return StatusAborted, false
	case DecideShell:
		s.After = AfterShell
		return StatusAborted, false
	}
	return "", true
}

func (r *Rescue) network(ctx context.Context) error {
	if r.netUp {
		return nil
	}
	start := time.Now()
	cfg := &netcfg.Config{Default: netcfg.DefaultDHCP} // nothing planned: DHCP on every NIC
	if r.settings != nil && r.settings.Network != nil {
		cfg = r.settings.Network
	}
	for _, in := range cfg.Interfaces {
		if in.VLAN > 0 && r.drivers != nil {
			r.drivers.Load("8021q") // VLAN devices need it; coldplug has no device to find it by
			break
		}
	}
	log.SetOutput(io.Discard) // u-root's DHCP client logs every packet through the standard logger
	rep, err := netcfg.Apply(ctx, cfg, netcfg.Options{Log: r.log.Printf})
	if err != nil {
		r.report.AddStep("network", StepFailed, start, err.Error())
		return err
	}
	r.netUp = true
	r.report.Network = rep
	// Leases are renewed for as long as the rescue environment runs (a
	// restore may outlast them), and NICs without one keep asking.
	r.leases = netcfg.KeepLeases(context.Background(), rep, netcfg.RenewOptions{Log: r.log.Printf})
	var nics []string
	configured := 0
	for _, n := range rep.NICs {
		nics = append(nics, fmt.Sprintf("%s %s %s %s", n.Name, n.MAC, n.Mode, strings.Join(n.Addresses, " ")))
		if n.OK() {
			configured++
		}
	}
	// Problems are reported; the restore goes on while the snapshot is
	// reachable, and fails later, naming the source, when it is not.
	status := StepOK
	if len(rep.Problems) > 0 || configured == 0 {
		status = StepFailed
		for _, p := range rep.Problems {
			r.log.Printf("network: %s", p)
		}
		if configured == 0 {
			r.log.Printf("network: no NIC is configured yet; DHCP keeps asking on %d NICs", r.leases.Pending())
		}
	}
	r.report.AddStep("network", status, start, strings.Join(append(nics, rep.Problems...), "; "))
	return nil
}

// waitAddress returns once some NIC has an address, waiting up to d while
// DHCP keeps asking on the NICs without a lease: the network is not given
// up on while something waits for a server.
func (r *Rescue) waitAddress(ctx context.Context, d time.Duration) error {
	if r.leases == nil || r.leases.Up() {
		return nil
	}
	start := time.Now()
	if r.leases.Pending() > 0 {
		r.log.Printf("network: no address yet; DHCP keeps asking on %d NICs (1 s, then doubling to 30 s between attempts); waiting up to %s", r.leases.Pending(), d)
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		ctx = wctx
	} else {
		c, cancel := context.WithCancel(ctx)
		cancel() // no NIC is asking: nothing to wait for
		ctx = c
	}
	err := r.leases.Wait(ctx)
	r.report.Network = r.leases.Report()
	if err != nil {
		err = fmt.Errorf("network: %w", err)
		r.report.AddStep("network", StepFailed, start, err.Error())
		return err
	}
	var addrs []string
	for _, n := range r.report.Network.NICs {
		if len(n.Addresses) > 0 {
			addrs = append(addrs, fmt.Sprintf("%s %s %s", n.Name, n.MAC, strings.Join(n.Addresses, " ")))
		}
	}
	r.log.Printf("network: address after %s: %s", time.Since(start).Round(time.Second), strings.Join(addrs, "; "))
	r.report.AddStep("network", StepOK, start, "after waiting: "+strings.Join(addrs, "; "))
	return nil
}

// loadPlan finds the plan: rewind.plan= on the command line, the
// initramfs overlay, or rewind/plan.toml on the rescue media. The media is
// looked for in every case: snapshots, drivers and reports live there.
func (r *Rescue) loadPlan(ctx context.Context) (*Plan, string, error) {
	_, statErr := os.Stat(OverlayPlan)
	havePlan := r.over.Plan != "" || statErr == nil
	wait := 15 * time.Second
	if havePlan {
		wait = 3 * time.Second
	}
	idFile := r.mediaIDFile
	if idFile == "" {
		idFile = OverlayMediaID
	}
	id, err := ReadMediaID(idFile)
	if err != nil {
		return nil, "", err
	}
	r.mediaID = id
	var lastErr error
	if id.None {
		r.log.Printf("media: none (the rescue image was built for network boot)")
	} else {
		waitFor(wait, func() bool {
			m, err := FindMedia(r.drivers, id)
			if err == nil {
				r.media = m
				return true
			}
			lastErr = err
			if !errors.Is(err, errNoMedia) {
				r.log.Printf("media: %v", err)
				r.mediaErr = err
				return true
			}
			r.drivers.Coldplug()
			return false
		})
		if r.media == nil && lastErr != nil && errors.Is(lastErr, errNoMedia) && id.Type != "" {
			r.log.Printf("media: %v", lastErr)
		}
	}
	if r.media != nil {
		r.log.Printf("media: %s (%s) mounted on %s%s", r.media.Device, r.media.FSType, r.media.Dir, map[bool]string{false: " read-only", true: ""}[r.media.RW])
		for _, dir := range []string{"drivers", "rewind/drivers"} {
			if n, err := r.drivers.LoadDir(r.media.Path(dir)); n > 0 || err != nil {
				r.log.Printf("drivers: %d modules from the media's %s/ (%v)", n, dir, err)
				r.drivers.Coldplug()
			}
		}
		r.report.DriversRefused = r.drivers.Refused()
	}

	var data []byte
	var source string
	switch {
	case r.over.Plan != "":
		source = r.over.Plan
		data, err = r.readLocation(ctx, r.over.Plan)
	case statErr == nil:
		source = "rescue image " + OverlayPlan
		data, err = os.ReadFile(OverlayPlan)
	case r.media != nil:
		source = "media:/" + MediaPlan
		data, err = os.ReadFile(r.media.Path(MediaPlan))
	default:
		return nil, "", fmt.Errorf("no plan: none built into the rescue image, no rescue medium with %s attached, and no rewind.plan= on the kernel command line", MediaPlan)
	}
	if err != nil {
		return nil, source, fmt.Errorf("reading plan %s: %w", source, err)
	}
	plan, err := ParsePlan(data)
	if err != nil {
		return nil, source, fmt.Errorf("plan %s: %w", source, err)
	}
	if statErr == nil {
		if r.over.Plan == "" {
			r.builtin = plan
		} else if r.builtin, err = readPlanFile(OverlayPlan); err != nil {
			return nil, source, err
		}
	}
	imageKeys, _ := filepath.Glob(filepath.Join(r.trustDirectory(), "*"))
	if r.builtin != nil {
		imageKeys = append(imageKeys, r.builtin.Trust...)
	}
	if err := plan.ValidateFor(len(imageKeys)); err != nil {
		return nil, source, fmt.Errorf("plan %s: %w", source, err)
	}
	if len(imageKeys) > 0 && plan != r.builtin {
		if err := plan.checkOutsideInstallFiles(); err != nil {
			return nil, source, fmt.Errorf("plan %s: %w", source, err)
		}
		if err := plan.checkOutsideUpload(); err != nil {
			return nil, source, fmt.Errorf("plan %s: %w", source, err)
		}
		plan.outside = true
	}
	return plan, source, nil
}

// readPlanFile reads and checks the plan at path.
func readPlanFile(path string) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading plan %s: %w", path, err)
	}
	p, err := ParsePlan(data)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

func (r *Rescue) trustDirectory() string {
	if r.trustDir != "" {
		return r.trustDir
	}
	return OverlayTrust
}

// maxLocationFile bounds what readLocation reads: a plan.
const maxLocationFile = 1 << 20

// readLocation reads a small file from media:/path, a local path or
// http(s). A file larger than maxLocationFile is refused, not truncated:
// a plan cut at a line's end can be another valid plan.
func (r *Rescue) readLocation(ctx context.Context, loc string) ([]byte, error) {
	rc, err := r.openLocation(ctx, loc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxLocationFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", loc, err)
	}
	if len(data) > maxLocationFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: too large for a plan; check the URL or split the plan", loc, maxLocationFile)
	}
	return data, nil
}

// openLocation opens media:/path on the rescue media, a local path, or an
// http(s) URL (bringing the network up first).
func (r *Rescue) openLocation(ctx context.Context, loc string) (io.ReadCloser, error) {
	if !isHTTP(loc) {
		p, err := r.localPath(loc)
		if err != nil {
			return nil, err
		}
		// O_NONBLOCK: a FIFO planted on the medium fails instead of
		// blocking the rescue; it has no effect on a regular file.
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, err
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			if err == nil {
				err = fmt.Errorf("%s is not a regular file", p)
			}
			return nil, err
		}
		return f, nil
	}
	if err := r.network(ctx); err != nil {
		return nil, err
	}
	if err := r.waitAddress(ctx, snapshot.DefaultRetryFor); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return nil, err
	}
	client := r.client
	if client == nil {
		// Before the plan is known (rewind.plan= over https), the plan
		// built into the image lends its ca.
		client = httpClient(imageRoots())
	}
	resp, err := client.Do(req)
	if ce := snapshot.CertError(err); ce != nil {
		return nil, fmt.Errorf("GET %s: %w", loc, ce)
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered %s", loc, resp.Status)
	}
	return resp.Body, nil
}

// httpClient fetches plans and install files and sends reports: a stalled
// server gives up instead of holding the machine forever. roots, when not
// nil, are the certificate authorities it trusts (planRoots); nil means the
// rescue image's CA bundle (/etc/ssl/certs/ca-certificates.crt).
func httpClient(roots *x509.CertPool) *http.Client {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: time.Minute,
	}
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return &http.Client{Timeout: 5 * time.Minute, Transport: t, CheckRedirect: snapshot.CheckRedirect}
}

// planRoots returns the rescue image's CA bundle plus the ca certificates
// of the plans (nil ones skipped), or nil when they add none.
func planRoots(plans ...*Plan) (*x509.CertPool, error) {
	var pool *x509.CertPool
	for _, p := range plans {
		if p == nil || p.CA == "" {
			continue
		}
		if pool == nil {
			var err error
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
		}
		if err := snapshot.AddCerts(pool, "the plan's ca key", []byte(p.CA)); err != nil {
			return nil, err
		}
	}
	return pool, nil
}

// imageRoots is planRoots of the plan built into the rescue image, or nil.
func imageRoots() *x509.CertPool {
	data, err := os.ReadFile(OverlayPlan)
	if err != nil {
		return nil
	}
	p, err := ParsePlan(data)
	if err != nil {
		return nil
	}
	roots, _ := planRoots(p)
	return roots
}

// localPath resolves media:/path against the mounted rescue media.
func (r *Rescue) localPath(loc string) (string, error) {
	rest, ok := strings.CutPrefix(loc, "media:")
	if !ok {
		return loc, nil
	}
	if r.media == nil {
		if r.mediaErr != nil {
			return "", fmt.Errorf("%s is on the rescue media, but none was used: %w", loc, r.mediaErr)
		}
		if r.mediaID.None {
			return "", fmt.Errorf("%s is on the rescue media, but this rescue image was built for network boot and has none; use an http(s) location", loc)
		}
		if r.mediaID.Type != "" {
			return "", fmt.Errorf("%s is on the rescue media, but no file system with this image's identity (%s) was found; attach the stick or disc this image was built with", loc, r.mediaID)
		}
		return "", fmt.Errorf("%s is on the rescue media, but no file system labelled %s was found; attach the media or check its label", loc, MediaLabel)
	}
	return r.media.Path(rest), nil
}

// trustedKeys returns the keys a snapshot must be signed with, and a note
// for the log when a plan's keys were set aside. The rescue image's keys
// (media build --trust, and the trust list of the plan built into the
// image) are always required. A plan loaded later (rewind.plan=, the
// medium's rewind/plan.toml) comes from outside the image: its keys make
// signing required when the image has none, and are set aside when it
// has some, so that a plan fetched from a hostile server cannot add the
// key its own snapshots are signed with.
func (r *Rescue) trustedKeys(plan *Plan) ([]ed25519.PublicKey, string, error) {
	files, _ := filepath.Glob(filepath.Join(r.trustDirectory(), "*"))
	var locs []string
	if r.builtin != nil {
		locs = r.builtin.Trust
	}
	note := ""
	if plan != r.builtin && len(plan.Trust) > 0 {
		if len(files)+len(locs) == 0 {
			locs = plan.Trust
		} else {
			note = fmt.Sprintf("the plan's trust keys (%s) are not added: the rescue image has its own, and a plan from outside the image cannot widen them",
				strings.Join(plan.Trust, ", "))
		}
	}
	for _, k := range locs {
		p, err := r.localPath(k)
		if err != nil {
			return nil, "", err
		}
		files = append(files, p)
	}
	var keys []ed25519.PublicKey
	for _, f := range files {
		k, err := snapshot.LoadPublicKey(f)
		if err != nil {
			return nil, "", fmt.Errorf("trusted key %s: %w", f, err)
		}
		keys = append(keys, k)
	}
	return keys, note, nil
}

// s3Options resolves a plan's [s3] table: the store, and the named
// credential read from its credentials file (DefaultS3Credentials, or
// media:/path on the rescue medium).
func (r *Rescue) s3Options(t S3To) (snapshot.S3Options, error) {
	o := t.options()
	if t.Credential == "" {
		return o, nil
	}
	file := t.CredentialsFile
	if file == "" {
		file = cmp.Or(r.s3Credentials, DefaultS3Credentials)
	} else {
		p, err := r.localPath(file)
		if err != nil {
			return o, err
		}
		file = p
	}
	c, err := snapshot.LoadS3Credential(file, t.Credential)
	if err != nil {
		return o, fmt.Errorf("%w; the plan's [s3] credential %q must be a profile of the file given to rewind media build --s3-credentials", err, t.Credential)
	}
	o.Credential = c
	if w := o.PlainHTTPWarning(); w != "" {
		r.log.Printf("warning: %s", w)
	}
	return o, nil
}

// snapshotFor opens disk d's snapshot of machine name, signed as
// trustedKeys requires, and refuses it when it is not the one d's expect
// table ([machine.expect] or [machine.disk.expect]) pins.
func (r *Rescue) snapshotFor(ctx context.Context, plan *Plan, name string, d DiskEntry) (*snapshot.Snapshot, error) {
	snap, err := r.openSnapshot(ctx, plan, d.Snapshot)
	if err != nil {
		return nil, err
	}
	if err := d.Expect.Check(snap, time.Now()); err != nil {
		snap.Close()
		return nil, fmt.Errorf("machine %s: %w", orNone(name), err)
	}
	if !d.Expect.IsZero() {
		r.log.Printf("snapshot: %s is the one the plan's expect table pins", d.Snapshot)
	}
	return snap, nil
}

func (r *Rescue) openSnapshot(ctx context.Context, plan *Plan, loc string) (*snapshot.Snapshot, error) {
	trust, note, err := r.trustedKeys(plan)
	if err != nil {
		return nil, err
	}
	if note != "" {
		r.log.Printf("trust: %s", note)
	}
	where := loc
	opts := snapshot.OpenOptions{Trust: trust, Log: r.log.Event, HTTPClient: snapshot.NewHTTPClient(r.roots)}
	switch {
	case snapshot.IsS3(loc):
		o, err := r.s3Options(plan.S3)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", loc, err)
		}
		opts.S3 = &o
	case !isHTTP(loc):
		p, err := r.localPath(loc)
		if err != nil {
			return nil, err
		}
		where = p
	}
	snap, err := snapshot.Open(ctx, where, opts)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", loc, err)
	}
	r.log.Printf("snapshot: %s: %s disk, %s of data, id %.16s, %d trusted keys", loc,
		units.Bytes(snap.Manifest.DiskSize), units.Bytes(snap.Manifest.DataBytes()), snap.ID, len(trust))
	return snap, nil
}

// selectTargets matches every disk entry to a disk of this machine
// (selectDisks) and checks that each is large enough for its snapshot and
// not in use. The set is refused as a whole: nothing is written unless
// every disk fits.
func (r *Rescue) selectTargets(entries []DiskEntry, snaps []*snapshot.Snapshot) ([]Disk, error) {
	var exclude []string
	if r.media != nil {
		exclude = append(exclude, r.media.Device)
	}
	picked, disks, err := selectDisks(entries, exclude, false)
	for _, d := range disks {
		r.log.Printf("disk: %s", describeTarget(d))
	}
	if err != nil {
		return nil, err
	}
	var problems []string
	for i, disk := range picked {
		what := "target"
		if len(picked) > 1 {
			what = fmt.Sprintf("disk %d: target", i+1)
		}
		if need := snaps[i].Manifest.RequiredSize(); disk.Size < need {
			problems = append(problems, fmt.Sprintf("%s %s holds %s but the snapshot %s needs %s; choose a larger disk",
				what, describeTarget(disk), units.Bytes(disk.Size), entries[i].Snapshot, units.Bytes(need)))
			continue
		}
		if err := diskrestore.CheckNotMounted(disk.Path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", what, err))
		}
	}
	switch {
	case len(problems) == 1 && len(picked) == 1:
		return nil, errors.New(problems[0])
	case len(problems) > 0:
		return nil, fmt.Errorf("the machine's disks cannot all be restored, so none is written:\n  %s", strings.Join(problems, "\n  "))
	}
	return picked, nil
}

func (r *Rescue) countdown(ctx context.Context, p Prompt) (Decision, string) {
	cs := r.keyConsoles()
	defer r.lineConsoles()
	return RunCountdown(ctx, cs, p)
}

// pickMachine lets the person at the console choose the plan entry when
// none names this machine; the countdown has not started yet.
func (r *Rescue) pickMachine(ctx context.Context, plan *Plan, id Identity) (*Settings, error) {
	cs := r.keyConsoles()
	defer r.lineConsoles()
	i, err := RunMenu(ctx, cs, machineMenu(plan, id), min(len(plan.Machines), 9), 5*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("%w; %v", ErrNoMachine, err)
	}
	return plan.SettingsFor(&plan.Machines[i], whyPicked(id), r.over), nil
}

// keyConsoles puts every console into single-key mode.
func (r *Rescue) keyConsoles() []Console {
	var cs []Console
	for _, t := range r.ttys {
		t.KeyMode()
		cs = append(cs, t)
	}
	return cs
}

// lineConsoles gives every console back its line mode.
func (r *Rescue) lineConsoles() {
	for _, t := range r.ttys {
		t.Restore()
	}
}

// restore writes the layout and streams the data (Apply): after the table
// was written, any failure clears it again. With a writable rescue media
// it keeps a resume journal there, and continues an interrupted restore of
// the same snapshot onto the same disk from it.
//
// dr is the disk's entry in the report; it is marked DiskOK only when the
// disk was written, flushed and its table written.
func (r *Rescue) restore(ctx context.Context, snap *snapshot.Snapshot, disk Disk, entry int, dr *DiskReport) (status string, err error) {
	dr.Status = DiskRunning
	defer func() {
		dr.Status = DiskOK
		if err != nil || status != StatusSuccess {
			dr.Status = DiskFailed
		}
		if err != nil {
			dr.Error = err.Error()
		}
	}()
	m := snap.Manifest
	f, err := os.OpenFile(disk.Path, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		return StatusFailed, fmt.Errorf("opening target %s: %w (is it in use?)", disk.Path, err)
	}
	defer f.Close()

	table := "none"
	if m.Layout != nil {
		table = m.Layout.Table
	}
	dr.Layout = table
	r.report.Delta = r.settings.Machine.Delta
	r.report.Resume = nil // openJournal's, for this disk
	jr := r.openJournal(ctx, snap, disk, entry, f)
	dr.Resume = r.report.Resume
	opts := machine.ApplyOptions{Delta: r.settings.Machine.Delta, Wipe: r.settings.Machine.Wipe, Log: r.log.Event}
	if jr != nil {
		opts.Checkpoint = jr.checkpoint
		if jr.resume != nil {
			opts.Resume, opts.Skip = true, func(i int) bool { return jr.resume[i] }
		}
	}
	pp, _ := restore.NewProgressPrinter(r.log, restore.ProgressLive, true, "restore")
	opts.Progress = r.progress(pp.Update)

	start := time.Now()
	a, err := machine.Apply(ctx, snap, f, opts)
	if a == nil {
		r.report.AddStep("layout", StepFailed, start, disk.Path+": "+err.Error())
		return StatusFailed, fmt.Errorf("restoring onto %s: %w", disk.Path, err)
	}
	dr.LayoutWritten, dr.TableCleared = a.LayoutWritten, a.TableCleared
	dr.Wipe = a.Wipe
	if res := a.Restore; res != nil {
		dr.BytesWritten, dr.BytesZeroed, dr.BytesSkipped = res.BytesWritten, res.BytesZeroed, res.BytesSkipped
	}
	// The table is written last, after the data: a failure anywhere leaves
	// the disk without one.
	if err != nil {
		step := "restore"
		if a.Restore == nil && a.Wipe == nil {
			step = "layout"
		}
		r.report.AddStep(step, StepFailed, start, disk.Path+": "+err.Error())
		// The journal stays: a resumed restore writes the table again.
		if a.TableCleared {
			r.log.Printf("%s holds no partition table, so the half-restored disk cannot boot", disk.Path)
		}
		return StatusFailed, fmt.Errorf("restoring onto %s: %w", disk.Path, err)
	}
	switch {
	case table == "none":
		r.report.AddStep("layout", StepSkipped, start, disk.Path+": the snapshot has no partition table")
	default:
		detail := fmt.Sprintf("%s: %s, %d partitions, written after the data", disk.Path, table, a.Partitions)
		if opts.Resume {
			detail += "; written again for the resumed restore"
		}
		r.report.AddStep("layout", StepOK, start, detail)
		r.log.Printf("layout: %s partition table with %d partitions written to %s", table, a.Partitions, disk.Path)
	}
	res := a.Restore
	dr.Seconds = res.Duration.Seconds()
	if res.Duration > 0 {
		dr.BytesPerSecond = float64(res.BytesWritten+res.BytesZeroed+res.BytesSkipped) / res.Duration.Seconds()
	}
	detail := fmt.Sprintf("%s: %d chunks, %s", disk.Path, res.Chunks, units.Bytes(res.BytesWritten+res.BytesZeroed))
	if r.report.Delta {
		detail += fmt.Sprintf("; delta: %s already on the disk, not written", units.Bytes(res.BytesSkipped))
	}
	if rs := dr.Resume; rs != nil {
		detail += fmt.Sprintf("; resumed from chunk %d (%d of %d chunks were on the disk)", rs.FromChunk, rs.ChunksDone, rs.Chunks)
	}
	r.report.AddStep("restore", StepOK, start, detail)
	for _, n := range a.Notes {
		r.log.Printf("layout: %s", n)
	}
	if jr != nil {
		jr.remove()
	}
	return StatusSuccess, nil
}

// finish completes the report and delivers it everywhere it goes.
func (r *Rescue) finish(status string, err error) {
	r.report.Finish(status, err, time.Now())
	if err != nil {
		r.log.Printf("error: %v", err)
	}
	r.log.Write([]byte("\n" + ReportBegin + "\n"))
	r.log.Write(r.report.JSON())
	r.log.Write([]byte(ReportEnd + "\n"))
	r.log.Write([]byte(Summary(r.report)))
	if r.media != nil && r.media.RW {
		if p, err := SaveReport(r.report, r.media.Path(MediaReports)); err != nil {
			r.log.Printf("report: cannot write to the rescue media: %v", err)
		} else {
			r.log.Printf("report: saved as %s", p)
		}
		unix.Sync()
	}
	if r.settings != nil && r.settings.ReportURL != "" {
		if err := r.network(context.Background()); err == nil && r.waitAddress(context.Background(), time.Minute) == nil {
			if err := PostReport(context.Background(), r.client, r.settings.ReportURL, r.settings.ReportToken, r.report); err != nil {
				r.log.Printf("report: %v", err)
			} else {
				r.log.Printf("report: sent to %s", r.settings.ReportURL)
			}
		}
	}
	r.log.Printf("%s%s", ResultPrefix, status)
}

// end does the plan's final action and never returns.
func (r *Rescue) end(after, status string) {
	if r.media != nil {
		unix.Unmount(r.media.Dir, 0)
	}
	pause := time.Duration(0)
	if r.settings != nil && r.settings.Countdown > 0 {
		pause = 10 * time.Second // someone may be watching: let them read
	}
	for {
		r.log.Printf("%s", afterMessage(after, pause))
		if after == AfterShell {
			// A shell on every console: a serial-only server and a PC
			// with a screen both get one. Leaving any of them reboots.
			ttys := []string{"/dev/console"}
			if len(r.ttys) > 0 {
				ttys = ttys[:0]
				for _, t := range r.ttys {
					ttys = append(ttys, t.Name())
				}
			}
			exited := make(chan error, len(ttys))
			for _, tty := range ttys {
				go func() { exited <- Shell(tty) }()
			}
			// The first shell a person leaves ends the wait; a console
			// that cannot run one does not.
			for range ttys {
				err := <-exited
				if err != nil {
					r.log.Printf("shell: %v", err)
				}
				var notStarted *fs.PathError
				if !errors.As(err, &notStarted) {
					break
				}
			}
			after, pause = AfterReboot, 0
			continue
		}
		time.Sleep(pause)
		if err := Halt(after); err != nil {
			r.log.Printf("%s failed: %v", after, err)
		}
		time.Sleep(5 * time.Second)
	}
}

func kernelRelease() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}
