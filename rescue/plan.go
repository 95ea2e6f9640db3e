// Package rescue is the boot-time flow of Rewind's rescue environment:
// drivers, plan, countdown, network, target disk, restore, report, and the
// final reboot, power-off or shell. cmd/rewind-init is its thin main.
package rescue

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/netcfg"
)

// Actions at the end of the countdown and after a restore.
const (
	DefaultRestore = "restore"
	DefaultAbort   = "abort"

	AfterReboot   = "reboot"
	AfterPoweroff = "poweroff"
	AfterShell    = "shell"
)

// DefaultCountdown is the countdown length when the plan gives none.
const DefaultCountdown = 30

// Plan is the rescue environment's instructions: which snapshot goes onto
// which disk of which machine, how long to wait for a human, where to
// report, and what to do afterwards. docs/plan.md documents it.
type Plan struct {
	Countdown Countdown `toml:"countdown"`
	Report    ReportTo  `toml:"report"`
	Machines  []Machine `toml:"machine"`
	// Network configures NICs by MAC (netcfg/, docs/network.md). Without
	// it, the rescue environment asks DHCP on its first NIC when a
	// snapshot or report URL is http(s).
	Network *netcfg.Config `toml:"network"`
	// Trust lists public key files (paths in the rescue environment or on
	// the rescue media as media:/path) that a snapshot must be signed by,
	// in addition to the keys under /etc/rewind/trust.
	Trust []string `toml:"trust"`
}

// Countdown configures the prompt before a restore.
type Countdown struct {
	Seconds *int   `toml:"seconds"` // nil: DefaultCountdown; 0: no prompt
	Default string `toml:"default"` // "restore" (default) or "abort"
}

// ReportTo says where reports go besides the console and the rescue media.
type ReportTo struct {
	URL string `toml:"url"` // the JSON report is POSTed here
}

// Machine is one machine a plan knows.
type Machine struct {
	Name     string `toml:"name"`
	Snapshot string `toml:"snapshot"` // media:/path, a directory, or an http(s) URL
	Target   string `toml:"target"`   // size=8GiB, serial=..., wwn=..., path=/dev/vda
	After    string `toml:"after"`    // reboot (default), poweroff, shell
	Match    Match  `toml:"match"`
	// Network replaces the plan's [network] for this machine.
	Network *netcfg.Config `toml:"network"`
	// Delta reads the target first and writes only the chunks that differ.
	Delta bool `toml:"delta"`
	// Wipe says what becomes of the target's bytes the snapshot does not
	// cover: "auto" (default), "full" or "signatures" (machine.ParseWipe).
	Wipe string `toml:"wipe"`
	// InstallFiles are copied into the restored file systems afterwards.
	InstallFiles []InstallFile `toml:"install_file"`
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

// Validate checks the plan's values.
func (p *Plan) Validate() error {
	if s := p.Countdown.Seconds; s != nil && *s < 0 {
		return fmt.Errorf("plan countdown.seconds is %d; use 0 for no prompt or a positive number", *s)
	}
	switch p.Countdown.Default {
	case "", DefaultRestore, DefaultAbort:
	default:
		return fmt.Errorf("plan countdown.default is %q; use %q or %q", p.Countdown.Default, DefaultRestore, DefaultAbort)
	}
	if u := p.Report.URL; u != "" && !isHTTP(u) {
		return fmt.Errorf("plan report.url %q is not an http(s) URL", u)
	}
	if p.Network != nil {
		if err := p.Network.Validate(); err != nil {
			return fmt.Errorf("plan [network]: %w", err)
		}
	}
	if len(p.Machines) == 0 {
		return fmt.Errorf("plan has no [[machine]] entry; add one with a snapshot and a target")
	}
	for i, m := range p.Machines {
		name := m.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		if m.Snapshot == "" {
			return fmt.Errorf("plan machine %s has no snapshot; set snapshot = \"media:/snapshots/NAME\" or an http(s) URL", name)
		}
		if err := checkAfter(m.After); err != nil {
			return fmt.Errorf("plan machine %s: %w", name, err)
		}
		if _, err := machine.ParseWipe(m.Wipe); err != nil {
			return fmt.Errorf("plan machine %s: %w", name, err)
		}
		if m.Network != nil {
			if err := m.Network.Validate(); err != nil {
				return fmt.Errorf("plan machine %s [machine.network]: %w", name, err)
			}
		}
		for _, f := range m.InstallFiles {
			if _, err := f.Validate(); err != nil {
				return fmt.Errorf("plan machine %s: %w", name, err)
			}
		}
	}
	return nil
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

func normMAC(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", ":") }

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
	Debug     bool   // rewind.debug: more log lines
	Unknown   []string
}

// ParseCmdline reads the rewind.* keys from a kernel command line.
// Values may be double-quoted.
func ParseCmdline(cmdline string) (Overrides, error) {
	var o Overrides
	for _, f := range splitCmdline(cmdline) {
		key, val, hasVal := strings.Cut(f, "=")
		if !strings.HasPrefix(key, "rewind.") {
			continue
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
			o.Debug = true
		case "rewind.countdown":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return o, fmt.Errorf("kernel command line %s: want a number of seconds", f)
			}
			o.Countdown = &n
		case "rewind.default":
			if val != DefaultRestore && val != DefaultAbort {
				return o, fmt.Errorf("kernel command line %s: want %s or %s", f, DefaultRestore, DefaultAbort)
			}
			o.Default = val
		case "rewind.target":
			o.Target = val
		case "rewind.after":
			if err := checkAfter(val); err != nil || val == "" {
				return o, fmt.Errorf("kernel command line %s: want %s, %s or %s", f, AfterReboot, AfterPoweroff, AfterShell)
			}
			o.After = val
		case "rewind.plan":
			o.Plan = val
		case "rewind.snapshot":
			o.Snapshot = val
		case "rewind.machine":
			o.Machine = val
		default:
			o.Unknown = append(o.Unknown, key)
		}
	}
	return o, nil
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
	Machine   Machine
	Countdown int    // seconds; 0 means no prompt: Default is done at once
	Default   string // restore or abort
	After     string
	ReportURL string
	Network   *netcfg.Config // nil: DHCP on every NIC when needed
	Why       string         // why this machine entry was chosen
}

// Resolve applies the overrides to the plan's entry for this machine.
func (p *Plan) Resolve(id Identity, o Overrides) (*Settings, error) {
	if o.Machine != "" {
		for i := range p.Machines {
			if p.Machines[i].Name == o.Machine {
				return p.SettingsFor(&p.Machines[i], "named by rewind.machine on the kernel command line", o), nil
			}
		}
		return nil, fmt.Errorf("kernel command line names machine %q but the plan has no such [[machine]]", o.Machine)
	}
	m, why, err := p.SelectMachine(id)
	if err != nil {
		return nil, err
	}
	return p.SettingsFor(m, why, o), nil
}

// Attended reports whether a person is expected at the console: the
// countdown runs (it is not 0 and rewind.auto is not set).
func (p *Plan) Attended(o Overrides) bool {
	s := p.SettingsFor(&Machine{}, "", o)
	return s.Countdown > 0
}

// SettingsFor applies the plan's defaults and the overrides to entry m,
// chosen for the reason why.
func (p *Plan) SettingsFor(m *Machine, why string, o Overrides) *Settings {
	s := &Settings{Machine: *m, Why: why, Countdown: DefaultCountdown, Default: p.Countdown.Default, After: m.After, ReportURL: p.Report.URL, Network: p.Network}
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
	return s
}
