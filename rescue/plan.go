// Package rescue is the boot-time flow of Rewind's rescue environment:
// drivers, plan, countdown, network, target disk, restore, report, and the
// final reboot, power-off or shell. cmd/rewind-init is its thin main.
package rescue

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/netcfg"
	"github.com/rewind-bmr/rewind/snapshot"
)

// Actions at the end of the countdown and after a restore.
const (
	DefaultRestore = "restore" // the countdown's default: go ahead (restore or capture)
	DefaultAbort   = "abort"

	AfterReboot   = "reboot"
	AfterPoweroff = "poweroff"
	AfterShell    = "shell"
)

// DefaultCountdown is the countdown length when the plan gives none.
const DefaultCountdown = 30

// MaxCountdown is the longest countdown a plan or the kernel command line
// may ask for: one day. The countdown also bounds install prompts, and a
// longer wait is a typo, not a plan.
const MaxCountdown = 24 * 60 * 60

// Plan is the rescue environment's instructions: which snapshot goes onto
// which disk of which machine, how long to wait for a human, where to
// report, and what to do afterwards. docs/plan.md documents it.
type Plan struct {
	Countdown Countdown `toml:"countdown"`
	Report    ReportTo  `toml:"report"`
	// Upload holds what a capture needs to upload snapshots to the lab
	// server (rewind serve --upload-token).
	Upload UploadTo `toml:"upload"`
	// S3 says how to reach s3:// snapshots: the store and the name of
	// the credential to sign with (docs/s3.md).
	S3       S3To      `toml:"s3"`
	Machines []Machine `toml:"machine"`
	// Network configures NICs by MAC (netcfg/, docs/network.md). Without
	// it, the rescue environment asks DHCP on its first NIC when a
	// snapshot or report URL is http(s).
	Network *netcfg.Config `toml:"network"`
	// Trust lists public key files (paths in the rescue environment or on
	// the rescue media as media:/path) that a snapshot must be signed by,
	// in addition to the keys under /etc/rewind/trust.
	Trust []string `toml:"trust"`
	// CA holds PEM certificates (the lab's own certificate authority)
	// trusted for https:// snapshots, plans, install files and reports,
	// besides the CA bundle of the rescue image. Inline, so that the plan
	// carries it wherever it is read from (docs/plan.md).
	CA string `toml:"ca"`

	// outside is set by the rescue flow for a plan from outside a rescue
	// image that has trusted keys (checkOutsideUpload).
	outside bool
}

// Countdown configures the prompt before a restore.
type Countdown struct {
	Seconds *int   `toml:"seconds"` // nil: DefaultCountdown; 0: no prompt
	Default string `toml:"default"` // "restore" (default) or "abort"
}

// ReportTo says where reports go besides the console and the rescue media.
type ReportTo struct {
	URL string `toml:"url"` // the JSON report is POSTed here
	// Token is the lab's report token, sent as a bearer token with every
	// POST; rewind serve --report-token holds the same.
	Token string `toml:"token"`
}

// UploadTo is the plan's [upload] table.
type UploadTo struct {
	// Token is the lab's upload token, sent as a bearer token with every
	// upload to an http(s) snapshot location; rewind serve --upload-token
	// holds the same. It is not the report token: a stick that only
	// reports cannot publish snapshots.
	Token string `toml:"token"`
}

// S3To is the plan's [s3] table. The secret is not in the plan (plans
// are served and shown): Credential names a profile of a credentials
// file in the rescue image, put there by rewind media build
// --s3-credentials, or of CredentialsFile.
type S3To struct {
	Endpoint  string `toml:"endpoint"`   // http(s)://HOST[:PORT]; "" means AWS
	Region    string `toml:"region"`     // "" means us-east-1
	PathStyle string `toml:"path_style"` // auto (default), on or off
	// Credential is the profile to sign with; "" means anonymous
	// requests (a public-read bucket).
	Credential string `toml:"credential"`
	// CredentialsFile holds the profiles (AWS shared credentials
	// format): media:/path or an absolute path; "" means
	// DefaultS3Credentials.
	CredentialsFile string `toml:"credentials_file"`
	// Presigned holds pre-signed GET URLs by object (s3://BUCKET/KEY/FILE),
	// as rewind s3 presign prints them: snapshots they cover are read
	// with no credential at all.
	Presigned map[string]string `toml:"presigned"`
}

// DefaultS3Credentials is where rewind media build --s3-credentials puts
// the credentials file in the rescue image.
const DefaultS3Credentials = "/etc/rewind/s3-credentials"

var credentialName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// options are the store's options the table gives, without the
// credential (read from its file by Rescue.s3Options).
func (t S3To) options() snapshot.S3Options {
	o := snapshot.S3Options{Endpoint: t.Endpoint, Region: t.Region, Presigned: t.Presigned}
	if t.PathStyle == "on" || t.PathStyle == "off" {
		v := t.PathStyle == "on"
		o.PathStyle = &v
	}
	return o
}

// validate checks the [s3] table.
func (t S3To) validate() error {
	o := t.options()
	if _, err := o.ObjectURL(snapshot.S3Location{Bucket: "bucket", Key: "key"}, ""); err != nil {
		return fmt.Errorf("plan [s3] endpoint: %w", err)
	}
	switch t.PathStyle {
	case "", "auto", "on", "off":
	default:
		return fmt.Errorf("plan [s3] path_style is %q; use auto, on or off", t.PathStyle)
	}
	if t.Region != "" && !credentialName.MatchString(t.Region) {
		return fmt.Errorf("plan [s3] region %q is not a region name", t.Region)
	}
	if t.Credential != "" && !credentialName.MatchString(t.Credential) {
		return fmt.Errorf("plan [s3] credential %q: a profile name is letters, digits and ._- (at most 64)", t.Credential)
	}
	if err := snapshot.CheckPresigned(t.Presigned, o); err != nil {
		return fmt.Errorf("plan [s3.presigned]: %w", err)
	}
	if t.CredentialsFile != "" {
		if t.Credential == "" {
			return errors.New("plan [s3] credentials_file is set but credential is not; name the profile to use: credential = \"NAME\"")
		}
		if !strings.HasPrefix(t.CredentialsFile, "media:/") && !strings.HasPrefix(t.CredentialsFile, "/") {
			return fmt.Errorf("plan [s3] credentials_file %q: use media:/path or an absolute path in the rescue environment", t.CredentialsFile)
		}
	}
	return nil
}

// What a machine entry does with its disks (Machine.Action,
// rewind.action=).
const (
	ActionRestore = "restore" // write each disk's snapshot onto it (default)
	ActionCapture = "capture" // read each disk into its snapshot
)

// Machine is one machine a plan knows.
type Machine struct {
	Name string `toml:"name"`
	// Action is ActionRestore ("" too) or ActionCapture.
	Action string `toml:"action"`
	// Snapshot and Target are the single-disk form: one disk, its
	// snapshot. A machine with several disks lists them as Disks
	// ([[machine.disk]]) instead; the two forms exclude each other.
	Snapshot string `toml:"snapshot"` // media:/path, a directory, or an http(s) URL
	Target   string `toml:"target"`   // size=8GiB, serial=..., wwn=..., path=/dev/vda
	// Disks are the machine's disks, each with its snapshot and the spec
	// that finds it. Restore and capture take the set as a whole: one
	// disk missing or ambiguous refuses every disk.
	Disks []DiskEntry `toml:"disk"`
	// Overwrite lets a capture replace an existing snapshot on the rescue
	// medium, or add a generation to an existing snapshot name on the lab
	// server. Without it an existing snapshot is never touched.
	Overwrite bool `toml:"overwrite"`
	// SegmentSize is a capture's largest data file ("1GiB", the default,
	// fits FAT32 media).
	SegmentSize string `toml:"segment_size"`
	// Raw captures every byte of every partition, reading no file
	// system's allocation map (as rewind capture --raw).
	Raw   bool   `toml:"raw"`
	After string `toml:"after"` // reboot (default), poweroff, shell
	Match Match  `toml:"match"`
	// Network replaces the plan's [network] for this machine.
	Network *netcfg.Config `toml:"network"`
	// Delta reads the target first and writes only the chunks that differ.
	Delta bool `toml:"delta"`
	// Wipe says what becomes of the target's bytes the snapshot does not
	// cover: "auto" (default), "full" or "signatures" (machine.ParseWipe).
	Wipe string `toml:"wipe"`
	// InstallFiles are copied into the restored file systems afterwards.
	InstallFiles []InstallFile `toml:"install_file"`
	// Expect pins the snapshot this entry restores; see Expect.
	Expect Expect `toml:"expect"`
}

// Expect is a machine entry's [machine.expect]: what the snapshot it
// restores must be. A snapshot that differs (another machine's, an older
// one, one replaced on the server) is refused before anything is written.
// Hostname and the creation time are read from the manifest, so they bind
// only as far as the manifest is trusted: sign snapshots, or pin ID.
type Expect struct {
	// ID is the snapshot's ID (the SHA-256 of manifest.json, as 'rewind
	// inspect' shows it) or a prefix of it of at least MinIDPrefix hex digits.
	ID string `toml:"id"`
	// Hostname is the host name the snapshot was captured on.
	Hostname string `toml:"hostname"`
	// MinCreated refuses snapshots captured before this time.
	MinCreated time.Time `toml:"min_created"`
	// MaxAge refuses snapshots older than this, measured with the rescue
	// environment's clock: "36h", "30d".
	MaxAge string `toml:"max_age"`
}

// DiskEntry is one [[machine.disk]]: a disk of the machine and its
// snapshot.
type DiskEntry struct {
	Snapshot string `toml:"snapshot"` // as Machine.Snapshot
	Target   string `toml:"target"`   // as Machine.Target: which disk of this machine
	// Expect pins this disk's snapshot, as Machine.Expect does.
	Expect Expect `toml:"expect"`
}

// MinIDPrefix is the shortest snapshot ID prefix [machine.expect] id takes:
// 64 bits, too many to forge a manifest for.
const MinIDPrefix = 16

// IsZero reports whether e pins nothing.
func (e Expect) IsZero() bool {
	return e.ID == "" && e.Hostname == "" && e.MinCreated.IsZero() && e.MaxAge == ""
}

var hexID = regexp.MustCompile(`^[0-9a-fA-F]+$`)

// validate checks the values of an [machine.expect] table.
func (e Expect) validate() error {
	if e.ID != "" && (len(e.ID) < MinIDPrefix || len(e.ID) > 64 || !hexID.MatchString(e.ID)) {
		return fmt.Errorf("expect.id %q is not a snapshot ID: give its first %d to 64 hex digits, as 'rewind inspect' shows it", e.ID, MinIDPrefix)
	}
	if e.MaxAge != "" {
		if _, err := parseAge(e.MaxAge); err != nil {
			return fmt.Errorf("expect.max_age: %w", err)
		}
	}
	return nil
}

// parseAge reads a duration: Go's ("36h", "90m") or whole days ("30d").
func parseAge(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		if n > 100*365 {
			err = errors.New("too long")
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive age such as \"36h\" or \"30d\"", s)
	}
	return d, nil
}

// Check refuses snap when it is not what e pins, naming every field that
// differs. now is the rescue environment's clock, used by max_age; a clock
// that was never set (before 2020) cannot check an age and refuses.
func (e Expect) Check(snap *snapshot.Snapshot, now time.Time) error {
	m := snap.Manifest
	var diffs []string
	if e.ID != "" && !strings.HasPrefix(strings.ToLower(snap.ID), strings.ToLower(e.ID)) {
		diffs = append(diffs, fmt.Sprintf("id is %s, want %s", snap.ID, strings.ToLower(e.ID)))
	}
	if e.Hostname != "" && m.Origin.Hostname != e.Hostname {
		diffs = append(diffs, fmt.Sprintf("hostname is %q, want %q", m.Origin.Hostname, e.Hostname))
	}
	if !e.MinCreated.IsZero() && m.Created.Before(e.MinCreated) {
		diffs = append(diffs, fmt.Sprintf("created %s, before min_created %s", m.Created.UTC().Format(time.RFC3339), e.MinCreated.UTC().Format(time.RFC3339)))
	}
	if e.MaxAge != "" {
		age, err := parseAge(e.MaxAge)
		switch {
		case err != nil:
			diffs = append(diffs, "max_age: "+err.Error())
		case now.Year() < 2020:
			diffs = append(diffs, fmt.Sprintf("max_age %s cannot be checked: this machine's clock says %s; set the clock or pin min_created or id instead",
				e.MaxAge, now.UTC().Format(time.RFC3339)))
		case now.Sub(m.Created) > age:
			diffs = append(diffs, fmt.Sprintf("created %s, %s ago, older than max_age %s", m.Created.UTC().Format(time.RFC3339),
				now.Sub(m.Created).Round(time.Minute), e.MaxAge))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("snapshot %s is not the one [machine.expect] pins: %s; nothing was written: serve the right snapshot or update the plan",
			snap.Location, strings.Join(diffs, "; "))
	}
	return nil
}

// Match selects a machine entry by hardware identity. An empty Match
// matches every machine.
type Match struct {
	MAC     []string `toml:"mac"`
	DMIUUID string   `toml:"dmi_uuid"`
}

// ParsePlan decodes and checks a plan. Unknown keys are errors, so that a
// typo never silently changes what a restore does.
func ParsePlan(data []byte) (*Plan, error) {
	var p Plan
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&p)
	if err != nil {
		return nil, fmt.Errorf("plan is not valid TOML: %w", err)
	}
	// The decoder matches keys to fields ignoring case, so TARGET after
	// target would silently win over it; every plan key is lower case.
	for _, k := range md.Keys() {
		if len(k) == 3 && k[0] == "s3" && k[1] == "presigned" {
			k = k[:2] // an object's location, kept exactly (a map: no field matched by case)
		}
		if s := k.String(); s != strings.ToLower(s) {
			return nil, fmt.Errorf("plan key %s has upper-case letters; plan keys are lower case (a second key differing only in case would silently replace the first)", s)
		}
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("plan has unknown keys %s; see docs/plan.md", strings.Join(keys, ", "))
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the plan's values: everything that can be checked
// without the machine, so that 'rewind media build' refuses a plan that
// would fail at boot. Errors name the field and the machine entry.
func (p *Plan) Validate() error { return p.ValidateFor(0) }

// ValidateFor is Validate for a rescue image that carries imageKeys
// trusted keys ('rewind media build --trust'): with any trusted key, in
// the image or in the plan's trust list, every http(s) install_file
// source must carry its sha256.
func (p *Plan) ValidateFor(imageKeys int) error {
	if s := p.Countdown.Seconds; s != nil && *s < 0 {
		return fmt.Errorf("plan countdown.seconds is %d; use 0 for no prompt or a positive number", *s)
	}
	if s := p.Countdown.Seconds; s != nil && *s > MaxCountdown {
		return fmt.Errorf("plan countdown.seconds is %d, more than a day (%d); use a shorter countdown", *s, MaxCountdown)
	}
	switch p.Countdown.Default {
	case "", DefaultRestore, DefaultAbort:
	default:
		return fmt.Errorf("plan countdown.default is %q; use %q or %q", p.Countdown.Default, DefaultRestore, DefaultAbort)
	}
	if u := p.Report.URL; u != "" && !isHTTP(u) {
		return fmt.Errorf("plan report.url %q is not an http(s) URL", u)
	}
	for _, k := range p.Trust {
		if err := checkKeyLocation(k); err != nil {
			return fmt.Errorf("plan trust: %w", err)
		}
	}
	if t := p.Report.Token; t != "" {
		if p.Report.URL == "" {
			return fmt.Errorf("plan report.token is set but report.url is not; add the report server's url or drop the token")
		}
		if err := CheckReportToken(t); err != nil {
			return fmt.Errorf("plan report.token: %w", err)
		}
	}
	if t := p.Upload.Token; t != "" {
		if err := checkUploadToken(t); err != nil {
			return fmt.Errorf("plan upload.token: %w", err)
		}
	}
	if err := p.S3.validate(); err != nil {
		return err
	}
	if p.Network != nil {
		if err := p.Network.Validate(); err != nil {
			return fmt.Errorf("plan [network]: %w", err)
		}
	}
	if p.CA != "" {
		if err := snapshot.AddCerts(x509.NewCertPool(), "the plan's ca key", []byte(p.CA)); err != nil {
			return err
		}
	}
	if len(p.Machines) == 0 {
		return fmt.Errorf("plan has no [[machine]] entry; add one with a snapshot and a target")
	}
	signed := imageKeys > 0 || len(p.Trust) > 0
	names := map[string]int{}
	macs := map[string]string{}
	uuids := map[string]string{}
	for i, m := range p.Machines {
		name := m.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		} else if j, dup := names[m.Name]; dup {
			return fmt.Errorf("plan machines #%d and #%d are both named %q; rewind.machine= and reports need unique names", j+1, i+1, m.Name)
		} else if err := checkMachineName(m.Name); err != nil {
			return fmt.Errorf("plan machine #%d: %w", i+1, err)
		}
		names[m.Name] = i
		if err := m.validateDisks(name); err != nil {
			return err
		}
		if err := m.validateAction(name, p.Upload.Token != "", s3Capture{S3To: p.S3}); err != nil {
			return err
		}
		if err := checkAfter(m.After); err != nil {
			return fmt.Errorf("plan machine %s: %w", name, err)
		}
		if _, err := machine.ParseWipe(m.Wipe); err != nil {
			return fmt.Errorf("plan machine %s: %w", name, err)
		}
		for _, mac := range m.Match.MAC {
			hw, err := net.ParseMAC(mac)
			if err != nil {
				return fmt.Errorf("plan machine %s match.mac %q is not a MAC address such as 52:54:00:12:34:56", name, mac)
			}
			if isPlaceholderMAC(hw) {
				return fmt.Errorf("plan machine %s match.mac %q is not a NIC's address (all zeros or broadcast); use the MAC 'ip link' shows on the machine", name, mac)
			}
			if other, dup := macs[hw.String()]; dup && other != name {
				return fmt.Errorf("plan machines %s and %s both match MAC %s; a machine must match one entry", other, name, hw)
			}
			macs[hw.String()] = name
		}
		if u := m.Match.DMIUUID; u != "" {
			if !dmiUUID.MatchString(u) {
				return fmt.Errorf("plan machine %s match.dmi_uuid %q is not a UUID such as 0E3A1C66-7B2D-4C3E-9A51-1D2E3F405060 (see /sys/class/dmi/id/product_uuid)", name, u)
			}
			if isPlaceholderUUID(u) {
				return fmt.Errorf("plan machine %s match.dmi_uuid %q is a placeholder that firmware puts on many boards, not this machine's identity: match it by mac instead", name, u)
			}
			if other, dup := uuids[strings.ToLower(u)]; dup {
				return fmt.Errorf("plan machines %s and %s both match DMI UUID %s; a machine must match one entry", other, name, u)
			}
			uuids[strings.ToLower(u)] = name
		}
		if m.Network != nil {
			if err := m.Network.Validate(); err != nil {
				return fmt.Errorf("plan machine %s [machine.network]: %w", name, err)
			}
		}
		if err := m.Expect.validate(); err != nil {
			return fmt.Errorf("plan machine %s: %w", name, err)
		}
		for _, f := range m.InstallFiles {
			if _, err := f.Validate(); err != nil {
				return fmt.Errorf("plan machine %s: %w", name, err)
			}
			if signed && isHTTP(f.Source) && f.SHA256 == "" {
				return fmt.Errorf("plan machine %s: install_file %s is fetched over the network without a sha256, but snapshots must be signed (trusted keys are set); add sha256 = \"...\" (sha256sum FILE)", name, f.Source)
			}
		}
	}
	return nil
}

// validateDisks checks machine m's disks (named name in errors): the
// single-disk form or [[machine.disk]] entries, not both; every snapshot
// location and target spec; at most MaxDisks disks, each with its own
// snapshot and, with several, its own target spec.
func (m *Machine) validateDisks(name string) error {
	if len(m.Disks) == 0 {
		if m.Snapshot == "" {
			return fmt.Errorf("plan machine %s has no snapshot; set snapshot = \"media:/snapshots/NAME\" or an http(s) URL, or list the disks as [[machine.disk]] entries", name)
		}
		if err := checkSnapshotLocation(m.Snapshot); err != nil {
			return fmt.Errorf("plan machine %s: %w", name, err)
		}
		if m.Target != "" {
			if _, err := diskrestore.ParseSpec(m.Target); err != nil {
				return fmt.Errorf("plan machine %s target: %w", name, err)
			}
		}
		return nil
	}
	var single []string
	if m.Snapshot != "" {
		single = append(single, "snapshot")
	}
	if m.Target != "" {
		single = append(single, "target")
	}
	if !m.Expect.IsZero() {
		single = append(single, "[machine.expect]")
	}
	if len(single) > 0 {
		return fmt.Errorf("plan machine %s has both %s and [[machine.disk]] entries; use one form: move them into the [[machine.disk]] entries ([machine.disk.expect] for expect)",
			name, strings.Join(single, ", "))
	}
	if len(m.Disks) > MaxDisks {
		return fmt.Errorf("plan machine %s has %d [[machine.disk]] entries, more than %d", name, len(m.Disks), MaxDisks)
	}
	snaps := map[string]int{}
	targets := map[string]int{}
	keys := make([]string, len(m.Disks))
	for i, d := range m.Disks {
		where := fmt.Sprintf("plan machine %s disk %d", name, i+1)
		if d.Snapshot == "" {
			return fmt.Errorf("%s has no snapshot; set snapshot = \"media:/snapshots/NAME\" or an http(s) URL", where)
		}
		if err := checkSnapshotLocation(d.Snapshot); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		// The same place written differently (case on a FAT stick, a
		// trailing or doubled slash, ./) is the same snapshot.
		keys[i] = snapshotKey(d.Snapshot)
		if j, dup := snaps[keys[i]]; dup {
			return fmt.Errorf("plan machine %s disks %d and %d both name snapshot %s (as %s and %s; the rescue stick's FAT ignores case); each disk needs its own",
				name, j+1, i+1, keys[i], m.Disks[j].Snapshot, d.Snapshot)
		}
		snaps[keys[i]] = i
		switch {
		case d.Target == "" && len(m.Disks) > 1:
			return fmt.Errorf("%s (snapshot %s) has no target; with several disks each needs one: serial=, wwn=, size= or path=", where, d.Snapshot)
		case d.Target != "":
			if _, err := diskrestore.ParseSpec(d.Target); err != nil {
				return fmt.Errorf("%s target: %w", where, err)
			}
			if j, dup := targets[d.Target]; dup {
				return fmt.Errorf("plan machine %s disks %d and %d both have target %q, which can only match one disk; give each its own", name, j+1, i+1, d.Target)
			}
			targets[d.Target] = i
		}
		if err := d.Expect.validate(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

// validateAction checks machine m's action and capture settings (named
// name in errors). The capture keys are allowed on any entry (the boot
// menu's rewind.action=capture turns a restore entry into a capture) and
// checked always; the destinations only when the entry itself captures:
// Settings.Check checks them again at boot.
func (m *Machine) validateAction(name string, uploadToken bool, s3 s3Capture) error {
	switch m.Action {
	case "", ActionRestore, ActionCapture:
	default:
		return fmt.Errorf("plan machine %s action is %q; use %q or %q", name, m.Action, ActionRestore, ActionCapture)
	}
	if _, err := m.segmentBytes(); err != nil {
		return fmt.Errorf("plan machine %s: %w", name, err)
	}
	if m.Action != ActionCapture {
		return nil
	}
	var restoreKeys []string
	if m.Delta {
		restoreKeys = append(restoreKeys, "delta")
	}
	if m.Wipe != "" {
		restoreKeys = append(restoreKeys, "wipe")
	}
	if len(m.InstallFiles) > 0 {
		restoreKeys = append(restoreKeys, "[[machine.install_file]]")
	}
	if len(restoreKeys) > 0 {
		return fmt.Errorf("plan machine %s captures, but has %s, which only a restore uses (a capture writes nothing onto the machine's disks); remove them, or set action = \"restore\"", name, strings.Join(restoreKeys, ", "))
	}
	for i, d := range diskEntries(m) {
		if !d.Expect.IsZero() {
			what := "[machine.expect]"
			if len(m.Disks) > 0 {
				what = fmt.Sprintf("disk %d's [machine.disk.expect]", i+1)
			}
			return fmt.Errorf("plan machine %s captures, but %s pins the snapshot a restore reads, and a capture writes a new one; remove the expect table, or move it to the entry that restores", name, what)
		}
	}
	return checkCapture(m, diskEntries(m), uploadToken, s3, "plan machine "+name)
}

// snapshotKey is the one way of writing snapshot location loc that two
// disk entries are compared by: media: paths cleaned and in lower case
// (FAT, the rescue stick's file system, ignores case), http(s) URLs with
// the scheme and host in lower case and the path cleaned, plain paths
// cleaned.
func snapshotKey(loc string) string {
	switch {
	case strings.HasPrefix(loc, "media:"):
		return "media:" + strings.ToLower(path.Clean("/"+strings.TrimPrefix(loc, "media:")))
	case isHTTP(loc):
		u, err := url.Parse(loc)
		if err != nil {
			return loc
		}
		p := path.Clean("/" + u.Path)
		return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + p + map[bool]string{true: "?" + u.RawQuery}[u.RawQuery != ""]
	case snapshot.IsS3(loc):
		return strings.TrimSuffix(loc, "/") // parsed strictly: no . or .. or //
	}
	return path.Clean(loc)
}

// mediaReserved are the rescue medium's own top-level directories (boot
// loader, kernel, plan, reports, journals, drivers): a capture never
// writes a snapshot among them, nor replaces one of them with overwrite.
var mediaReserved = []string{"efi", "boot", "rewind", "drivers", "syslinux", "isolinux"}

// maxMediaElement is the longest path element of a capture's media:
// name: FAT takes 255 characters, and the capture works in
// .NAME.partial-GENERATION next to it.
const maxMediaElement = 200

// checkMediaName checks the name of a capture's destination on the rescue
// medium (media:/snapshots/NAME): path elements of letters, digits, '.',
// '_' and '-' that FAT stores as written (no trailing dot, no dot-leading
// element, no "..", no empty element), not too long, not the medium's
// root and not among the medium's own directories.
func checkMediaName(loc string) error {
	rest := strings.TrimPrefix(loc, "media:")
	if strings.Trim(rest, "/") == "" {
		return fmt.Errorf("%s, the medium's root; name a directory such as media:/snapshots/NAME", loc)
	}
	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	for _, p := range parts {
		bad := ""
		switch {
		case p == "":
			bad = "an empty path element (a doubled or trailing '/')"
		case p == "." || p == "..":
			bad = fmt.Sprintf("the path element %q", p)
		case p[0] == '.':
			bad = fmt.Sprintf("the path element %q that starts with a dot (the capture's own unfinished directories do)", p)
		case strings.HasSuffix(p, "."):
			bad = fmt.Sprintf("the path element %q that ends with a dot (FAT drops it, so it would name another directory)", p)
		case len(p) > maxMediaElement:
			bad = fmt.Sprintf("a path element of %d bytes (at most %d on FAT, with room for the capture's work directory)", len(p), maxMediaElement)
		case strings.IndexFunc(p, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
		}) >= 0:
			bad = fmt.Sprintf("the path element %q with a character other than letters, digits, '.', '_' and '-' (FAT refuses some, and changes others)", p)
		}
		if bad != "" {
			return fmt.Errorf("%s, which has %s; name the snapshot like media:/snapshots/srv1-sys", loc, bad)
		}
	}
	if slices.Contains(mediaReserved, strings.ToLower(parts[0])) {
		return fmt.Errorf("%s, under the rescue medium's own %s/ directory; capture under media:/snapshots/ instead", loc, parts[0])
	}
	return nil
}

// diskEntries is the machine's disks: its [[machine.disk]] entries, or
// the single-disk form as one entry.
func diskEntries(m *Machine) []DiskEntry {
	if len(m.Disks) > 0 {
		return slices.Clone(m.Disks)
	}
	return []DiskEntry{{Snapshot: m.Snapshot, Target: m.Target, Expect: m.Expect}}
}

// MaxMediaSegment is the largest segment a capture writes onto the rescue
// medium: FAT32 holds no file of 4 GiB or more.
const MaxMediaSegment = 4<<30 - 1

// segmentBytes is m.SegmentSize in bytes; 0 when it is not set (the
// capture's default, snapshot.DefaultSegmentSize).
func (m *Machine) segmentBytes() (int64, error) {
	if m.SegmentSize == "" {
		return 0, nil
	}
	n, err := units.ParseSize(m.SegmentSize)
	if err != nil {
		return 0, fmt.Errorf("segment_size %q: %w", m.SegmentSize, err)
	}
	if lo := int64(snapshot.FrameBound(snapshot.DefaultChunkSize)); n < lo {
		return 0, fmt.Errorf("segment_size %q is smaller than one stored chunk (%s); use at least %s, or leave it out for 1 GiB",
			m.SegmentSize, units.Bytes(lo), units.Bytes(lo))
	}
	if n > snapshot.MaxSegmentSize {
		return 0, fmt.Errorf("segment_size %q is larger than %s", m.SegmentSize, units.Bytes(snapshot.MaxSegmentSize))
	}
	return n, nil
}

// checkCapture refuses capture destinations the rescue flow cannot keep:
// a path in the rescue environment (it vanishes at reboot), an upload
// without the lab's upload token, and segments too large for FAT32 on the
// rescue medium. where names the machine in errors.
func checkCapture(m *Machine, disks []DiskEntry, uploadToken bool, s3 s3Capture, where string) error {
	seg, _ := m.segmentBytes()
	// One snapshot inside another's directory is removed or changed when
	// that one is replaced (overwrite), or makes it exist before its
	// capture.
	for i := range disks {
		for j := range i {
			a, b := j, i
			ka, kb := snapshotKey(disks[a].Snapshot), snapshotKey(disks[b].Snapshot)
			if len(ka) > len(kb) {
				a, b, ka, kb = b, a, kb, ka
			}
			if strings.HasPrefix(kb, strings.TrimSuffix(ka, "/")+"/") {
				return fmt.Errorf("%s disk %d's snapshot %s lies inside disk %d's %s: replacing one would remove or change the other; give each disk its own directory, side by side",
					where, b+1, disks[b].Snapshot, a+1, disks[a].Snapshot)
			}
		}
	}
	for i, d := range disks {
		what := where
		if len(m.Disks) > 0 {
			what = fmt.Sprintf("%s disk %d", where, i+1)
		}
		switch {
		case strings.HasPrefix(d.Snapshot, "media:/"):
			if err := checkMediaName(d.Snapshot); err != nil {
				return fmt.Errorf("%s captures into %w", what, err)
			}
			if seg > MaxMediaSegment {
				return fmt.Errorf("%s captures onto the rescue medium (%s) with segment_size %q, but FAT32 holds no file of 4 GiB or more; use segment_size = \"1GiB\" or leave it out",
					what, d.Snapshot, m.SegmentSize)
			}
		case isHTTP(d.Snapshot):
			if !uploadToken {
				return fmt.Errorf("%s captures to %s, but the plan has no [upload] token; add [upload] token = the lab's upload token (rewind serve --upload-token FILE)", what, d.Snapshot)
			}
		case snapshot.IsS3(d.Snapshot):
			switch {
			case s3.outside:
				return fmt.Errorf("%s captures to %s, but the plan comes from outside the rescue image, which has trusted keys: that plan is not verified and could send this machine's disks to any store it names; put the capture entry in the plan built into the image (rewind media build --plan)", what, d.Snapshot)
			case s3.Credential == "":
				return fmt.Errorf("%s captures to %s, but the plan's [s3] names no credential; add [s3] credential = \"PROFILE\" (a key allowed to write there, in the file given to rewind media build --s3-credentials)", what, d.Snapshot)
			case m.Overwrite:
				return fmt.Errorf("%s captures to %s with overwrite = true, which s3:// does not do (a capture never replaces a snapshot in the store); capture under a new name, or delete the old snapshot in the store first", what, d.Snapshot)
			}
		default:
			return fmt.Errorf("%s captures into %s, a path in the rescue environment that is gone after the reboot; capture to media:/snapshots/NAME on the rescue medium or to an http(s) URL on the lab server", what, d.Snapshot)
		}
	}
	return nil
}

// s3Capture is what checkCapture needs of the plan's [s3] table.
type s3Capture struct {
	S3To
	// outside: the plan is from outside a rescue image with trusted
	// keys, and may not capture to s3:// (see checkOutsideUpload).
	outside bool
}

// checkUploadToken checks the plan's upload token by the rules of the
// report token (CheckReportToken).
func checkUploadToken(tok string) error {
	if err := CheckReportToken(tok); err != nil {
		return errors.New(strings.Replace(err.Error(), "report token", "upload token", 1))
	}
	return nil
}

// isPlaceholderUUID reports whether u is a DMI system UUID that firmware
// sets on many boards alike: all zeros, all ones, or the AMI default
// 03000200-0400-0500-0006-000700080009.
func isPlaceholderUUID(u string) bool {
	u = strings.ToLower(u)
	hex := strings.ReplaceAll(u, "-", "")
	return strings.Trim(hex, "0") == "" || strings.Trim(hex, "f") == "" || u == "03000200-0400-0500-0006-000700080009"
}

// isPlaceholderMAC reports whether hw is no NIC's own address: all zeros
// or broadcast.
func isPlaceholderMAC(hw net.HardwareAddr) bool {
	return bytes.Count(hw, []byte{0}) == len(hw) || bytes.Count(hw, []byte{0xff}) == len(hw)
}

// checkOutsideInstallFiles refuses, in a plan from outside a rescue image
// that has trusted keys (rewind.plan=, the medium's plan.toml), install
// files fetched over the network: their sha256 comes from that same
// unverified plan, so a hostile plan server could put any file into the
// signed system it restores. The image's own plan and media: sources may.
func (p *Plan) checkOutsideInstallFiles() error {
	for i, m := range p.Machines {
		name := m.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		for _, f := range m.InstallFiles {
			if isHTTP(f.Source) {
				return fmt.Errorf("machine %s: install_file %s comes from a plan outside the rescue image, which has trusted keys: the plan, and so its sha256, is not verified; put the entry in the plan built into the image (rewind media build --plan) or copy the file onto the medium (media:/...)", name, f.Source)
			}
		}
	}
	return nil
}

// checkOutsideUpload refuses an [upload] token in a plan from outside a
// rescue image that has trusted keys (rewind.plan=, the medium's
// plan.toml): that plan is not verified, and with the token it could
// capture the machine's disks (its own capture entry, or any entry with
// rewind.action=capture) and upload them to any server it names, taking
// their contents off the machine. Captures onto the rescue medium stay.
func (p *Plan) checkOutsideUpload() error {
	for i := range p.Machines {
		m := &p.Machines[i]
		if m.Action != ActionCapture {
			continue // rewind.action=capture is refused by Settings.Check
		}
		for _, d := range diskEntries(m) {
			if snapshot.IsS3(d.Snapshot) {
				return fmt.Errorf("machine %s captures to %s, but the plan comes from outside the rescue image, which has trusted keys: that plan is not verified and could send this machine's disks to any store it names; put the capture entry in the plan built into the image (rewind media build --plan)", orNone(m.Name), d.Snapshot)
			}
		}
	}
	if p.Upload.Token == "" {
		return nil
	}
	return errors.New("[upload] token in a plan from outside the rescue image, which has trusted keys: that plan is not verified, and with the token it could send this machine's disks to any server it names; put the capture entry and its [upload] token in the plan built into the image (rewind media build --plan), or capture onto the rescue medium (media:/snapshots/NAME)")
}

var dmiUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// checkSnapshotLocation accepts what the rescue flow can open: media:/path
// on the rescue medium, an http(s) URL with a host, or an absolute path in
// the rescue environment.
func checkSnapshotLocation(loc string) error {
	switch {
	case strings.HasPrefix(loc, "media:"):
		if !strings.HasPrefix(loc, "media:/") {
			return fmt.Errorf("snapshot %q: write media:/path, with the slash", loc)
		}
	case isHTTP(loc):
		u, err := url.Parse(loc)
		if err != nil || u.Host == "" {
			return fmt.Errorf("snapshot %q is not a valid http(s) URL with a host", loc)
		}
	case snapshot.IsS3(loc):
		if _, err := snapshot.ParseS3Location(loc); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
	case strings.HasPrefix(loc, "/"):
	default:
		return fmt.Errorf("snapshot %q: use media:/path, an http(s):// URL, s3://BUCKET/PREFIX/NAME or an absolute path", loc)
	}
	return nil
}

// checkKeyLocation accepts a trusted key's location: media:/path or an
// absolute path in the rescue environment.
func checkKeyLocation(loc string) error {
	if strings.HasPrefix(loc, "media:/") || strings.HasPrefix(loc, "/") {
		return nil
	}
	return fmt.Errorf("key %q: use media:/path or an absolute path in the rescue environment", loc)
}

func checkAfter(a string) error {
	switch a {
	case "", AfterReboot, AfterPoweroff, AfterShell:
		return nil
	}
	return fmt.Errorf("after is %q; use %s, %s or %s", a, AfterReboot, AfterPoweroff, AfterShell)
}

func isHTTP(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// overNetwork reports whether location loc is read or written over the
// network (http(s):// or s3://).
func overNetwork(loc string) bool { return isHTTP(loc) || snapshot.IsS3(loc) }

// Identity is what the rescue environment knows about the machine it runs on.
type Identity struct {
	MACs    []string `json:"macs,omitempty"`
	DMIUUID string   `json:"dmi_uuid,omitempty"`
	Vendor  string   `json:"vendor,omitempty"`
	Product string   `json:"product,omitempty"`
	Serial  string   `json:"serial,omitempty"`
}

// ErrNoMachine is wrapped by SelectMachine when no entry matches this
// machine and the plan has no default entry: on a console the rescue
// environment then offers a menu of the plan's machines.
var ErrNoMachine = errors.New("no plan entry matches this machine")

// SelectMachine returns the plan's entry for this machine and why it was
// chosen. An entry matches when its [machine.match] names one of this
// machine's MACs or its DMI system UUID. One match: that entry. Two or
// more: refused, naming them, because restoring the wrong snapshot onto a
// machine is worse than stopping. None: the plan's default entry, the one
// without a [machine.match] (two defaults are ambiguous too); without a
// default, ErrNoMachine.
func (p *Plan) SelectMachine(id Identity) (*Machine, string, error) {
	var matches []*Machine
	var whys []string
	for i := range p.Machines {
		if why := p.Machines[i].Match.matches(id); why != "" {
			matches = append(matches, &p.Machines[i])
			whys = append(whys, why)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], whys[0], nil
	case 0:
	default:
		var names []string
		for i, m := range matches {
			names = append(names, fmt.Sprintf("%s (%s)", machineName(p, m), whys[i]))
		}
		return nil, "", fmt.Errorf("this machine matches %d plan entries: %s; make the [machine.match] tables unique", len(matches), strings.Join(names, " and "))
	}
	var defaults []*Machine
	for i := range p.Machines {
		if m := &p.Machines[i]; len(m.Match.MAC) == 0 && m.Match.DMIUUID == "" {
			defaults = append(defaults, m)
		}
	}
	switch len(defaults) {
	case 1:
		return defaults[0], "the plan's default entry: no entry names this machine", nil
	case 0:
		return nil, "", fmt.Errorf("%w (MACs %s, DMI UUID %s): add a [[machine]] whose [machine.match] names it, or a default entry without a match",
			ErrNoMachine, strings.Join(id.MACs, ", "), orNone(id.DMIUUID))
	default:
		return nil, "", fmt.Errorf("no entry names this machine and the plan has %d default entries (%s, %s): keep one [[machine]] without a [machine.match]",
			len(defaults), machineName(p, defaults[0]), machineName(p, defaults[1]))
	}
}

// matches says why m names the machine id, or "" when it does not.
func (m Match) matches(id Identity) string {
	if m.DMIUUID != "" && strings.EqualFold(m.DMIUUID, id.DMIUUID) {
		return "DMI UUID " + id.DMIUUID
	}
	for _, want := range m.MAC {
		for _, have := range id.MACs {
			if normMAC(want) == normMAC(have) {
				return "MAC " + normMAC(have)
			}
		}
	}
	return ""
}

func machineName(p *Plan, m *Machine) string {
	if m.Name != "" {
		return m.Name
	}
	for i := range p.Machines {
		if &p.Machines[i] == m {
			return fmt.Sprintf("#%d", i+1)
		}
	}
	return "?"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// normMAC writes a MAC address the one way net.HardwareAddr does, so that
// 52-54-00-12-34-56, 5254.0012.3456 and 52:54:00:12:34:56 compare equal.
func normMAC(s string) string {
	if hw, err := net.ParseMAC(s); err == nil {
		return hw.String()
	}
	return strings.ReplaceAll(strings.ToLower(s), "-", ":")
}

// Overrides are the rewind.* keys of the kernel command line. They win over
// the plan, so that one plan serves a whole lab while a boot menu entry
// changes one detail.
type Overrides struct {
	Auto      bool   // rewind.auto: restore at once, no prompt
	Countdown *int   // rewind.countdown=N
	Default   string // rewind.default=restore|abort
	Target    string // rewind.target=SPEC
	After     string // rewind.after=reboot|poweroff|shell
	Plan      string // rewind.plan=URL or path
	Snapshot  string // rewind.snapshot=LOCATION
	Machine   string // rewind.machine=NAME: pick the plan entry by name
	Action    string // rewind.action=restore|capture
	Debug     bool   // rewind.debug: more log lines
}

// CmdlineKeys are the rewind.* keys ParseCmdline knows.
var CmdlineKeys = []string{"rewind.auto", "rewind.countdown", "rewind.default", "rewind.target", "rewind.after",
	"rewind.plan", "rewind.snapshot", "rewind.machine", "rewind.action", "rewind.debug"}

// ParseCmdline reads the rewind.* keys from a kernel command line.
// Values may be double-quoted. An unknown rewind.* key is an error that
// lists the known ones: a misspelt rewind.taget= must not restore onto
// the plan's default disk.
func ParseCmdline(cmdline string) (Overrides, error) {
	var o Overrides
	if tail, ok := unclosedQuote(cmdline); ok && strings.Contains(strings.ToLower(tail), "rewind.") {
		return o, fmt.Errorf("kernel command line: the double quote in %s is never closed, so it swallows the rest of the line; close it", tail)
	}
	seen := make(map[string]bool)
	for _, f := range splitCmdline(cmdline) {
		key, val, hasVal := strings.Cut(f, "=")
		// Rewind.target= or REWIND.PLAN= is a misspelt key, not another
		// program's: it falls through to the unknown-key error.
		if !strings.HasPrefix(strings.ToLower(key), "rewind.") {
			continue
		}
		if seen[key] {
			return o, fmt.Errorf("kernel command line: %s is given twice; give it once (check the boot menu entry and what was typed at the boot prompt)", key)
		}
		seen[key] = true
		if key != "rewind.auto" && key != "rewind.debug" && slices.Contains(CmdlineKeys, key) && val == "" {
			return o, fmt.Errorf("kernel command line: %s= has no value; give one or drop the key", key)
		}
		switch key {
		case "rewind.auto":
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return o, fmt.Errorf("kernel command line %s: want rewind.auto, rewind.auto=1 or rewind.auto=0", f)
				}
			}
			o.Auto = b
		case "rewind.debug":
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return o, fmt.Errorf("kernel command line %s: want rewind.debug, rewind.debug=1 or rewind.debug=0", f)
				}
			}
			o.Debug = b
		case "rewind.countdown":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > MaxCountdown {
				return o, fmt.Errorf("kernel command line %s: want a number of seconds from 0 to %d", f, MaxCountdown)
			}
			o.Countdown = &n
		case "rewind.default":
			if val != DefaultRestore && val != DefaultAbort {
				return o, fmt.Errorf("kernel command line %s: want %s or %s", f, DefaultRestore, DefaultAbort)
			}
			o.Default = val
		case "rewind.target":
			if _, err := diskrestore.ParseSpec(val); err != nil {
				return o, fmt.Errorf("kernel command line %s: %w", f, err)
			}
			o.Target = val
		case "rewind.after":
			if err := checkAfter(val); err != nil || val == "" {
				return o, fmt.Errorf("kernel command line %s: want %s, %s or %s", f, AfterReboot, AfterPoweroff, AfterShell)
			}
			o.After = val
		case "rewind.plan":
			o.Plan = val
		case "rewind.snapshot":
			if err := checkSnapshotLocation(val); err != nil {
				return o, fmt.Errorf("kernel command line %s: %w", f, err)
			}
			o.Snapshot = val
		case "rewind.machine":
			o.Machine = val
		case "rewind.action":
			if val != ActionRestore && val != ActionCapture {
				return o, fmt.Errorf("kernel command line %s: want %s or %s", f, ActionRestore, ActionCapture)
			}
			o.Action = val
		default:
			return o, fmt.Errorf("kernel command line has the unknown key %s; the known keys are %s (see docs/plan.md)", key, strings.Join(CmdlineKeys, ", "))
		}
	}
	return o, nil
}

// unclosedQuote returns the text from a double quote that is never
// closed to the end of the command line, and whether there is one.
func unclosedQuote(s string) (string, bool) {
	open := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			if open < 0 {
				open = i
			} else {
				open = -1
			}
		}
	}
	if open < 0 {
		return "", false
	}
	start := strings.LastIndexAny(s[:open], " \t\n") + 1
	return s[start:], true
}

func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, any := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, any = !quoted, true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

// Settings are the effective instructions for this boot: the selected
// machine entry with the command line applied.
type Settings struct {
	Machine Machine
	// Action is ActionRestore or ActionCapture: the entry's, or
	// rewind.action= from the kernel command line.
	Action string
	// Disks are the machine's disks, at least one: Machine.Disks, or the
	// single-disk form (Machine.Snapshot and Machine.Target, after
	// rewind.snapshot= and rewind.target=) as one entry.
	Disks     []DiskEntry
	Countdown int    // seconds; 0 means no prompt: Default is done at once
	Default   string // restore or abort
	After     string
	ReportURL string
	Network   *netcfg.Config // nil: DHCP on every NIC when needed
	Why       string         // why this machine entry was chosen

	// ReportToken goes with every POST to ReportURL.
	ReportToken string
	// UploadToken goes with every upload of a capture to an http(s)
	// snapshot location: the plan's [upload] token.
	UploadToken string
	// S3 is the plan's [s3] table, and whether the plan may capture to
	// s3:// (not when it came from outside an image with trusted keys).
	S3 s3Capture

	// conflict is why the kernel command line does not fit the entry
	// (rewind.snapshot= or rewind.target= with several disks); Check
	// returns it.
	conflict error
}

// Check refuses settings that the plan's validation could not see: the
// kernel command line's rewind.snapshot= or rewind.target= for a machine
// with several disks, and, for a capture (perhaps made one by
// rewind.action=capture), a destination it cannot keep or reach.
func (s *Settings) Check() error {
	name := orNone(s.Machine.Name)
	if s.conflict != nil {
		return s.conflict
	}
	if s.Action == ActionCapture {
		return checkCapture(&s.Machine, s.Disks, s.UploadToken != "", s.S3, "machine "+name)
	}
	return nil
}

// Resolve applies the overrides to the plan's entry for this machine.
func (p *Plan) Resolve(id Identity, o Overrides) (*Settings, error) {
	if o.Machine != "" {
		for i := range p.Machines {
			if p.Machines[i].Name == o.Machine {
				s := p.SettingsFor(&p.Machines[i], "named by rewind.machine on the kernel command line", o)
				return s, s.Check()
			}
		}
		return nil, fmt.Errorf("kernel command line names machine %q but the plan has no such [[machine]]", o.Machine)
	}
	m, why, err := p.SelectMachine(id)
	if err != nil {
		return nil, err
	}
	s := p.SettingsFor(m, why, o)
	return s, s.Check()
}

// Attended reports whether a person is expected at the console: the
// countdown runs (it is not 0 and rewind.auto is not set).
func (p *Plan) Attended(o Overrides) bool {
	s := p.SettingsFor(&Machine{}, "", o)
	return s.Countdown > 0
}

// SettingsFor applies the plan's defaults and the overrides to entry m,
// chosen for the reason why. Check says whether the result can run.
func (p *Plan) SettingsFor(m *Machine, why string, o Overrides) *Settings {
	s := &Settings{Machine: *m, Why: why, Countdown: DefaultCountdown, Default: p.Countdown.Default, After: m.After, ReportURL: p.Report.URL, Network: p.Network}
	s.ReportToken, s.UploadToken = p.Report.Token, p.Upload.Token
	s.S3 = s3Capture{S3To: p.S3, outside: p.outside}
	if m.Network != nil {
		s.Network = m.Network
	}
	if p.Countdown.Seconds != nil {
		s.Countdown = *p.Countdown.Seconds
	}
	if o.Countdown != nil {
		s.Countdown = *o.Countdown
	}
	if o.Auto {
		s.Countdown, s.Default = 0, DefaultRestore
	}
	if o.Default != "" {
		s.Default = o.Default
	}
	if s.Default == "" {
		s.Default = DefaultRestore
	}
	if o.Target != "" {
		s.Machine.Target = o.Target
	}
	if o.Snapshot != "" {
		s.Machine.Snapshot = o.Snapshot
	}
	if o.After != "" {
		s.After = o.After
	}
	if s.After == "" {
		s.After = AfterReboot
	}
	s.Action = m.Action
	if o.Action != "" {
		s.Action = o.Action
	}
	if s.Action == "" {
		s.Action = ActionRestore
	}
	s.Disks = diskEntries(&s.Machine)
	if n := len(m.Disks); n > 0 && (o.Target != "" || o.Snapshot != "") {
		var keys []string
		if o.Snapshot != "" {
			keys = append(keys, "rewind.snapshot="+o.Snapshot)
		}
		if o.Target != "" {
			keys = append(keys, "rewind.target="+o.Target)
		}
		s.conflict = fmt.Errorf("kernel command line %s names one disk, but machine %s has %d [[machine.disk]] entries, each with its snapshot and target; drop it from the boot entry, or change the entries in the plan",
			strings.Join(keys, " "), orNone(m.Name), n)
	}
	return s
}
