package rescue

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const fullPlan = `
trust = ["media:/keys/lab.pub"]
[countdown]
seconds = 10
default = "abort"
[report]
url = "http://10.0.2.100/report"

[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
target = "size=8GiB"
after = "poweroff"
[machine.match]
mac = ["52:54:00:12:34:56"]

[[machine]]
name = "lab"
snapshot = "http://10.0.2.100/snapshots/lab"
[machine.match]
dmi_uuid = "0E3A1C66-7B2D-4C3E-9A51-1D2E3F405060"

[[machine]]
name = "any"
snapshot = "media:/snapshots/generic"
`

func TestParsePlan(t *testing.T) {
	p, err := ParsePlan([]byte(fullPlan))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *p.Countdown.Seconds, 10; got != want {
		t.Errorf("countdown.seconds: got %d, want %d", got, want)
	}
	if got, want := p.Countdown.Default, DefaultAbort; got != want {
		t.Errorf("countdown.default: got %q, want %q", got, want)
	}
	if got, want := len(p.Machines), 3; got != want {
		t.Fatalf("machines: got %d, want %d", got, want)
	}
	if got, want := p.Machines[0].Match.MAC[0], "52:54:00:12:34:56"; got != want {
		t.Errorf("machine pc1 match.mac: got %q, want %q", got, want)
	}
	if got, want := p.Trust, []string{"media:/keys/lab.pub"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("trust: got %q, want %q", got, want)
	}
}

func TestParsePlanErrors(t *testing.T) {
	for _, tc := range []struct{ name, plan, want string }{
		{"unknown key", "[[machine]]\nsnapshot=\"x\"\ntraget=\"size=1G\"\n", "unknown keys machine.traget"},
		{"no machine", "[countdown]\nseconds=3\n", "no [[machine]]"},
		{"no snapshot", "[[machine]]\nname=\"a\"\n", "machine a has no snapshot"},
		{"bad default", "[countdown]\ndefault=\"maybe\"\n[[machine]]\nsnapshot=\"x\"\n", "countdown.default"},
		{"negative", "[countdown]\nseconds=-1\n[[machine]]\nsnapshot=\"x\"\n", "countdown.seconds"},
		{"bad after", "[[machine]]\nsnapshot=\"/x\"\nafter=\"halt\"\n", "after is \"halt\""},
		{"bad report url", "[report]\nurl=\"ftp://x\"\n[[machine]]\nsnapshot=\"x\"\n", "report.url"},
		{"not toml", "[[machine]\n", "not valid TOML"},
	} {
		_, err := ParsePlan([]byte(tc.plan))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestSelectMachine(t *testing.T) {
	p, err := ParsePlan([]byte(fullPlan))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id      Identity
		want    string
		wantWhy string
	}{
		{Identity{MACs: []string{"aa:bb:cc:dd:ee:ff", "52:54:00:12:34:56"}}, "pc1", "MAC 52:54:00:12:34:56"},
		{Identity{MACs: []string{"52-54-00-12-34-56"}}, "pc1", "MAC 52:54:00:12:34:56"},
		{Identity{DMIUUID: "0e3a1c66-7b2d-4c3e-9a51-1d2e3f405060"}, "lab", "DMI UUID"},
		{Identity{MACs: []string{"aa:bb:cc:dd:ee:ff"}}, "any", "default entry"},
	} {
		m, why, err := p.SelectMachine(tc.id)
		if err != nil || m.Name != tc.want || !strings.Contains(why, tc.wantWhy) {
			t.Errorf("identity %+v: got %v, %q (%v), want %s because of %q", tc.id, m, why, err, tc.want, tc.wantWhy)
		}
	}

	// Two entries name the machine: refused, naming both.
	_, _, err = p.SelectMachine(Identity{MACs: []string{"52:54:00:12:34:56"}, DMIUUID: "0E3A1C66-7B2D-4C3E-9A51-1D2E3F405060"})
	if err == nil || !strings.Contains(err.Error(), "pc1 (MAC 52:54:00:12:34:56) and lab (DMI UUID") {
		t.Errorf("two matches: got %v, want a refusal naming pc1 and lab", err)
	}

	// No match and no default: ErrNoMachine, so the console can offer a menu.
	p.Machines = p.Machines[:2]
	_, _, err = p.SelectMachine(Identity{MACs: []string{"aa:bb:cc:dd:ee:ff"}})
	if !errors.Is(err, ErrNoMachine) || !strings.Contains(err.Error(), "aa:bb:cc:dd:ee:ff") {
		t.Errorf("no match, no default: got %v, want ErrNoMachine naming the MAC", err)
	}

	// Two defaults are ambiguous.
	p.Machines = append(p.Machines, Machine{Name: "d1", Snapshot: "x"}, Machine{Name: "d2", Snapshot: "y"})
	if _, _, err = p.SelectMachine(Identity{}); err == nil || !strings.Contains(err.Error(), "d1, d2") {
		t.Errorf("two defaults: got %v, want a refusal naming d1 and d2", err)
	}
}

func TestParseCmdline(t *testing.T) {
	o, err := ParseCmdline(`BOOT_IMAGE=/vmlinuz console=ttyS0 rewind.auto rewind.countdown=5 rewind.target="serial=ABC 123" rewind.after=shell rewind.plan=http://10.0.2.100/plan.toml quiet`)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Auto || o.Countdown == nil || *o.Countdown != 5 || o.Target != "serial=ABC 123" || o.After != AfterShell ||
		o.Plan != "http://10.0.2.100/plan.toml" {
		t.Errorf("got %+v", o)
	}
	if o, err := ParseCmdline(`rewind.debug=0 quiet="a b"`); err != nil || o.Debug {
		t.Errorf("rewind.debug=0: got %+v, %v; want debug off", o, err)
	}
	for _, tc := range []struct{ cmdline, want string }{
		{"rewind.countdown=x", "rewind.countdown=x: want a number of seconds"},
		{"rewind.countdown=99999999999", "from 0 to 86400"},
		{"rewind.after=halt", "rewind.after=halt"},
		{"rewind.auto=maybe", "rewind.auto=maybe"},
		{"rewind.default=later", "rewind.default=later"},
		{"rewind.target=colour=blue", "unknown term"},
		{"rewind.snapshot=ftp://x/pc1", "rewind.snapshot=ftp://x/pc1"},
		// A misspelt key must not restore onto the plan's default target.
		{"quiet rewind.taget=/dev/sdb", "unknown key rewind.taget; the known keys are rewind.auto, rewind.countdown"},
		{"rewind.bogus=1", "unknown key rewind.bogus"},
		// A key given twice (a boot menu's entry plus one typed at the
		// prompt) must not let the last one win silently.
		{"rewind.plan=http://10.0.2.100/plan.toml rewind.plan=http://10.0.2.66/plan.toml", "rewind.plan is given twice"},
		{"rewind.target=path=/dev/sda rewind.target=path=/dev/sdb", "rewind.target is given twice"},
		{"rewind.snapshot=http://a/pc1 rewind.snapshot=http://a/pc1", "rewind.snapshot is given twice"},
		// A key in the wrong case is a misspelt key, not some other
		// program's parameter.
		{"Rewind.target=/dev/sdb", "unknown key Rewind.target"},
		{"REWIND.PLAN=http://x/plan.toml", "unknown key REWIND.PLAN"},
		{"rewind.Target=path=/dev/sdb", "unknown key rewind.Target"},
		// An empty value would silently mean "not given".
		{"rewind.plan=", "rewind.plan= has no value"},
		{"rewind.machine=", "rewind.machine= has no value"},
		// An unclosed quote swallows what follows: here rewind.after=shell.
		{`rewind.target="path=/dev/sda rewind.after=shell`, `the double quote in rewind.target="path=/dev/sda rewind.after=shell is never closed`},
		{`foo="bar rewind.target=path=/dev/sdb`, "is never closed"},
		{"rewind.debug=maybe", "rewind.debug=maybe"},
	} {
		if _, err := ParseCmdline(tc.cmdline); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kernel command line %q: got error %v, want one containing %q", tc.cmdline, err, tc.want)
		}
	}
}

func TestResolveOverrides(t *testing.T) {
	p, err := ParsePlan([]byte(fullPlan))
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{MACs: []string{"52:54:00:12:34:56"}}
	five := 5
	for _, tc := range []struct {
		name string
		o    Overrides
		want Settings
	}{
		{"plan only", Overrides{}, Settings{Countdown: 10, Default: DefaultAbort, After: AfterPoweroff}},
		{"auto", Overrides{Auto: true}, Settings{Countdown: 0, Default: DefaultRestore, After: AfterPoweroff}},
		{"countdown and after", Overrides{Countdown: &five, After: AfterShell}, Settings{Countdown: 5, Default: DefaultAbort, After: AfterShell}},
		{"auto but default abort", Overrides{Auto: true, Default: DefaultAbort}, Settings{Countdown: 0, Default: DefaultAbort, After: AfterPoweroff}},
	} {
		s, err := p.Resolve(id, tc.o)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.Countdown != tc.want.Countdown || s.Default != tc.want.Default || s.After != tc.want.After {
			t.Errorf("%s: got countdown %d default %s after %s, want %d %s %s", tc.name, s.Countdown, s.Default, s.After,
				tc.want.Countdown, tc.want.Default, tc.want.After)
		}
	}
	s, err := p.Resolve(id, Overrides{Target: "path=/dev/nvme0n1", Machine: "any"})
	if err != nil || s.Machine.Name != "any" || s.Machine.Target != "path=/dev/nvme0n1" || s.After != AfterReboot || s.ReportURL == "" {
		t.Errorf("machine and target override: got %+v, %v", s, err)
	}
	if _, err := p.Resolve(id, Overrides{Machine: "nope"}); err == nil {
		t.Errorf("unknown rewind.machine: got no error")
	}
}

func TestConsolePaths(t *testing.T) {
	got := strings.Join(ConsolePaths("quiet console=tty0 console=ttyS0,115200n8 console=ttyS0"), " ")
	if want := "/dev/tty0 /dev/ttyS0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := ConsolePaths("quiet"); len(got) != 1 || got[0] != "/dev/console" {
		t.Errorf("no console=: got %q, want /dev/console", got)
	}
}

func TestPlanNetwork(t *testing.T) {
	p, err := ParsePlan([]byte(`
[network]
default = "dhcp"
[[machine]]
name = "pc1"
snapshot = "http://10.0.2.100/pc1"
[machine.network]
[[machine.network.interface]]
mac = "52:54:00:12:34:56"
address = ["192.168.77.10/24"]
[[machine]]
name = "pc2"
snapshot = "http://10.0.2.100/pc2"
`))
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := p.Resolve(Identity{}, Overrides{Machine: "pc1"})
	s2, _ := p.Resolve(Identity{}, Overrides{Machine: "pc2"})
	if s1.Network == nil || len(s1.Network.Interfaces) != 1 || s2.Network == nil || s2.Network.Default != "dhcp" {
		t.Errorf("network: pc1 %+v, pc2 %+v; want pc1's own, pc2 the plan's", s1.Network, s2.Network)
	}
}

// Each refusal names the field and the machine, at plan validation, so
// that 'rewind media build' fails before it writes media.
func TestPlanValidateRefusals(t *testing.T) {
	const pc1 = "[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n"
	const pc2 = "[[machine]]\nname = \"pc2\"\nsnapshot = \"media:/snapshots/pc2\"\n"
	const web = "[[machine.install_file]]\nsource = \"http://10.0.0.1/x.conf\"\ndest = \"part:1:/etc/x.conf\"\n"
	for _, tc := range []struct {
		name, plan string
		imageKeys  int
		want       string // "" = accepted
	}{
		{"bad MAC", pc1 + "[machine.match]\nmac = [\"52:54:00:12:34\"]\n", 0, `machine pc1 match.mac "52:54:00:12:34" is not a MAC address`},
		{"MAC with dots", pc1 + "[machine.match]\nmac = [\"5254.0012.3456\"]\n", 0, ""},
		{"bad DMI UUID", pc1 + "[machine.match]\ndmi_uuid = \"0E3A1C66-7B2D\"\n", 0, `machine pc1 match.dmi_uuid "0E3A1C66-7B2D" is not a UUID`},
		{"bad target", pc1 + "target = \"colour=blue\"\n", 0, "machine pc1 target: target spec \"colour=blue\": unknown term"},
		{"bad size", pc1 + "target = \"size=lots\"\n", 0, "machine pc1 target"},
		{"ftp snapshot", "[[machine]]\nname = \"pc1\"\nsnapshot = \"ftp://10.0.0.1/pc1\"\n", 0, `machine pc1: snapshot "ftp://10.0.0.1/pc1": use media:/path`},
		{"relative snapshot", "[[machine]]\nname = \"pc1\"\nsnapshot = \"snapshots/pc1\"\n", 0, `machine pc1: snapshot "snapshots/pc1"`},
		{"media without slash", "[[machine]]\nname = \"pc1\"\nsnapshot = \"media:pc1\"\n", 0, "write media:/path, with the slash"},
		{"http without host", "[[machine]]\nname = \"pc1\"\nsnapshot = \"http:///pc1\"\n", 0, "not a valid http(s) URL with a host"},
		{"absolute path", "[[machine]]\nname = \"pc1\"\nsnapshot = \"/srv/pc1\"\n", 0, ""},
		{"setuid", pc1 + "[[machine.install_file]]\nsource = \"media:/x\"\ndest = \"part:1:/usr/bin/x\"\nmode = \"4755\"\n", 0, "mode 4755 sets the setuid, setgid or sticky bit"},
		{"setgid", pc1 + "[[machine.install_file]]\nsource = \"media:/x\"\ndest = \"part:1:/usr/bin/x\"\nmode = \"2755\"\n", 0, "mode 2755 sets the setuid"},
		{"duplicate name", pc1 + pc1, 0, `plan machines #1 and #2 are both named "pc1"`},
		{"name with a space", "[[machine]]\nname = \"pc 1\"\nsnapshot = \"media:/snapshots/pc1\"\n", 0, `machine name "pc 1": use letters, digits`},
		{"name with a slash", "[[machine]]\nname = \"../pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n", 0, `machine name "../pc1"`},
		{"duplicate MAC", pc1 + "[machine.match]\nmac = [\"52:54:00:12:34:56\"]\n" + pc2 + "[machine.match]\nmac = [\"52-54-00-12-34-56\"]\n", 0,
			"plan machines pc1 and pc2 both match MAC 52:54:00:12:34:56"},
		{"duplicate DMI UUID", pc1 + "[machine.match]\ndmi_uuid = \"0E3A1C66-7B2D-4C3E-9A51-1D2E3F405060\"\n" + pc2 + "[machine.match]\ndmi_uuid = \"0e3a1c66-7b2d-4c3e-9a51-1d2e3f405060\"\n", 0,
			"plan machines pc1 and pc2 both match DMI UUID"},
		// Firmware placeholders many boards share: matching one restores
		// this entry's snapshot onto every such board.
		{"placeholder DMI UUID", pc1 + "[machine.match]\ndmi_uuid = \"03000200-0400-0500-0006-000700080009\"\n", 0, `machine pc1 match.dmi_uuid "03000200-0400-0500-0006-000700080009" is a placeholder`},
		{"zero DMI UUID", pc1 + "[machine.match]\ndmi_uuid = \"00000000-0000-0000-0000-000000000000\"\n", 0, "is a placeholder"},
		{"all-F DMI UUID", pc1 + "[machine.match]\ndmi_uuid = \"ffffffff-ffff-ffff-ffff-ffffffffffff\"\n", 0, "is a placeholder"},
		{"zero MAC", pc1 + "[machine.match]\nmac = [\"00:00:00:00:00:00\"]\n", 0, `machine pc1 match.mac "00:00:00:00:00:00" is not a NIC's address`},
		{"broadcast MAC", pc1 + "[machine.match]\nmac = [\"ff-ff-ff-ff-ff-ff\"]\n", 0, "is not a NIC's address"},
		// A key differing only in case decoded into the same field: the
		// reviewer reads target = sdb, the restore used TARGET = sda.
		{"key in another case", pc1 + "target = \"path=/dev/sdb\"\nTARGET = \"path=/dev/sda\"\n", 0, "plan key machine.TARGET has upper-case letters"},
		{"table in another case", "[Countdown]\nseconds = 0\n" + pc1, 0, "plan key Countdown has upper-case letters"},
		{"huge countdown", "[countdown]\nseconds = 9223372036\n" + pc1, 0, "countdown.seconds is 9223372036, more than a day (86400)"},
		{"day countdown", "[countdown]\nseconds = 86400\n" + pc1, 0, ""},
		{"short expect.id", pc1 + "[machine.expect]\nid = \"3f2a\"\n", 0, `machine pc1: expect.id "3f2a" is not a snapshot ID`},
		{"bad expect.max_age", pc1 + "[machine.expect]\nmax_age = \"a month\"\n", 0, "machine pc1: expect.max_age: \"a month\""},
		{"bad sha256", pc1 + "[[machine.install_file]]\nsource = \"media:/x\"\ndest = \"part:1:/x\"\nsha256 = \"abc\"\n", 0, "sha256 \"abc\" is not 64 hex digits"},
		{"http install, no keys", pc1 + web, 0, ""},
		{"http install, image keys", pc1 + web, 1, "machine pc1: install_file http://10.0.0.1/x.conf is fetched over the network without a sha256"},
		{"http install, plan keys", "trust = [\"/etc/lab.pub\"]\n" + pc1 + web, 0, "without a sha256"},
		{"http install with sha256, image keys", pc1 + web + "sha256 = \"" + strings.Repeat("ab", 32) + "\"\n", 1, ""},
		{"relative key", "trust = [\"lab.pub\"]\n" + pc1, 0, `plan trust: key "lab.pub"`},
	} {
		p, err := ParsePlan([]byte(tc.plan))
		if err == nil {
			err = p.ValidateFor(tc.imageKeys)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the plan accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// A MAC written with dashes or dots matches the machine's.
func TestSelectMachineMACForms(t *testing.T) {
	p, err := ParsePlan([]byte("[[machine]]\nname = \"pc1\"\nsnapshot = \"/s\"\n[machine.match]\nmac = [\"5254.0012.3456\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m, _, err := p.SelectMachine(Identity{MACs: []string{"52:54:00:12:34:56"}}); err != nil || m.Name != "pc1" {
		t.Errorf("MAC 52:54:00:12:34:56 against match.mac 5254.0012.3456: got %v, %v; want pc1", m, err)
	}
}

func TestParsePlanExpect(t *testing.T) {
	p, err := ParsePlan([]byte(`
[[machine]]
name = "pc1"
snapshot = "http://10.0.0.1/snapshots/pc1"
[machine.expect]
id = "3F2A9C0B51E4D7A8"
hostname = "pc1"
min_created = 2026-11-01T00:00:00Z
max_age = "30d"
`))
	if err != nil {
		t.Fatal(err)
	}
	e := p.Machines[0].Expect
	want := Expect{ID: "3F2A9C0B51E4D7A8", Hostname: "pc1", MinCreated: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), MaxAge: "30d"}
	if e.ID != want.ID || e.Hostname != want.Hostname || !e.MinCreated.Equal(want.MinCreated) || e.MaxAge != want.MaxAge {
		t.Errorf("machine pc1 [machine.expect]: got %+v, want %+v", e, want)
	}
	if _, err := ParsePlan([]byte("[[machine]]\nsnapshot = \"/s\"\n[machine.expect]\nhost = \"pc1\"\n")); err == nil || !strings.Contains(err.Error(), "machine.expect.host") {
		t.Errorf("misspelt expect key: got %v, want an unknown-key error naming machine.expect.host", err)
	}
}

// testUploadToken is a well-formed [upload] token.
const testUploadToken = "0123456789abcdef0123456789abcdef"

// The plan of design11.md: a server with two disks, captured to the lab
// server.
const srv1Plan = `
[upload]
token = "` + testUploadToken + `"

[[machine]]
name = "srv1"
action = "capture"
overwrite = false
segment_size = "1GiB"
raw = false
[[machine.disk]]
snapshot = "http://10.0.2.100/snapshots/srv1-sys"
target = "serial=nvme1"
[[machine.disk]]
snapshot = "http://10.0.2.100/snapshots/srv1-data"
target = "size=48MiB"
`

func TestParsePlanDisks(t *testing.T) {
	p, err := ParsePlan([]byte(srv1Plan))
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Resolve(Identity{}, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Action != ActionCapture {
		t.Errorf("machine srv1 action: got %q, want %q", s.Action, ActionCapture)
	}
	if s.UploadToken != testUploadToken {
		t.Errorf("machine srv1 upload token: got %q, want the plan's [upload] token", s.UploadToken)
	}
	want := []DiskEntry{{Snapshot: "http://10.0.2.100/snapshots/srv1-sys", Target: "serial=nvme1"},
		{Snapshot: "http://10.0.2.100/snapshots/srv1-data", Target: "size=48MiB"}}
	if len(s.Disks) != len(want) {
		t.Fatalf("machine srv1 disks: got %d, want %d", len(s.Disks), len(want))
	}
	for i := range want {
		if s.Disks[i].Snapshot != want[i].Snapshot || s.Disks[i].Target != want[i].Target {
			t.Errorf("machine srv1 disk %d: got %+v, want %+v", i+1, s.Disks[i], want[i])
		}
	}
	if n, err := s.Machine.segmentBytes(); err != nil || n != 1<<30 {
		t.Errorf("machine srv1 segment_size: got %d, %v; want %d", n, err, 1<<30)
	}

	// The single-disk form is one disk, restored; the boot menu's
	// rewind.action=capture makes it a capture.
	p, err = ParsePlan([]byte("[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\ntarget = \"serial=A1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o          Overrides
		action     string
		snap, spec string
	}{
		{Overrides{}, ActionRestore, "media:/snapshots/pc1", "serial=A1"},
		{Overrides{Action: ActionCapture}, ActionCapture, "media:/snapshots/pc1", "serial=A1"},
		{Overrides{Action: ActionCapture, Snapshot: "media:/snapshots/pc1-new", Target: "serial=B2"}, ActionCapture, "media:/snapshots/pc1-new", "serial=B2"},
	} {
		s, err := p.Resolve(Identity{}, tc.o)
		if err != nil {
			t.Fatalf("overrides %+v: %v", tc.o, err)
		}
		if s.Action != tc.action || len(s.Disks) != 1 || s.Disks[0].Snapshot != tc.snap || s.Disks[0].Target != tc.spec {
			t.Errorf("overrides %+v: got action %q disks %+v, want %q [{%s %s}]", tc.o, s.Action, s.Disks, tc.action, tc.snap, tc.spec)
		}
	}
}

func TestPlanDiskRefusals(t *testing.T) {
	const up = "[upload]\ntoken = \"" + testUploadToken + "\"\n"
	const s3 = "[s3]\nendpoint = \"http://10.0.2.100:7070\"\ncredential = \"lab-rw\"\n"
	const srv = "[[machine]]\nname = \"srv1\"\n"
	disk := func(snap, target string) string {
		return "[[machine.disk]]\nsnapshot = \"" + snap + "\"\ntarget = \"" + target + "\"\n"
	}
	two := disk("media:/snapshots/sys", "serial=nvme1") + disk("media:/snapshots/data", "serial=DATA-2")
	for _, tc := range []struct {
		name, plan string
		want       string // "" = accepted
	}{
		{"two disks", srv + two, ""},
		{"one disk entry without target", srv + "[[machine.disk]]\nsnapshot = \"media:/snapshots/sys\"\n", ""},
		{"both forms", srv + "snapshot = \"media:/snapshots/srv1\"\n" + two, "plan machine srv1 has both snapshot and [[machine.disk]] entries; use one form"},
		{"target and disks", srv + "target = \"serial=X\"\n" + two, "plan machine srv1 has both target and [[machine.disk]]"},
		{"expect and disks", srv + two + "[machine.expect]\nhostname = \"srv1\"\n", "plan machine srv1 has both [machine.expect] and [[machine.disk]]"},
		{"no snapshot at all", srv, "plan machine srv1 has no snapshot"},
		{"disk without snapshot", srv + two + "[[machine.disk]]\ntarget = \"serial=C\"\n", "plan machine srv1 disk 3 has no snapshot"},
		{"disk with bad snapshot", srv + disk("ftp://x/sys", "serial=A"), `plan machine srv1 disk 1: snapshot "ftp://x/sys"`},
		{"disk with bad target", srv + two + disk("media:/snapshots/c", "colour=blue"), `plan machine srv1 disk 3 target: target spec "colour=blue": unknown term`},
		{"several disks, one without target", srv + two + "[[machine.disk]]\nsnapshot = \"media:/snapshots/c\"\n", "plan machine srv1 disk 3 (snapshot media:/snapshots/c) has no target; with several disks each needs one"},
		{"same snapshot twice", srv + disk("media:/snapshots/sys", "serial=A") + disk("media:/snapshots/sys", "serial=B"), "plan machine srv1 disks 1 and 2 both name snapshot media:/snapshots/sys"},
		{"same target twice", srv + disk("media:/snapshots/a", "serial=A") + disk("media:/snapshots/b", "serial=A"), `plan machine srv1 disks 1 and 2 both have target "serial=A"`},
		{"too many disks", srv + strings.Repeat("[[machine.disk]]\nsnapshot = \"media:/x\"\n", MaxDisks+1), "plan machine srv1 has 17 [[machine.disk]] entries, more than 16"},
		{"disk expect", srv + two + "[machine.disk.expect]\nid = \"3f2a\"\n", `plan machine srv1 disk 2: expect.id "3f2a" is not a snapshot ID`},
		{"bad action", srv + "action = \"backup\"\n" + two, `plan machine srv1 action is "backup"; use "restore" or "capture"`},
		{"capture to media", srv + "action = \"capture\"\n" + two, ""},
		{"capture to a rescue path", srv + "action = \"capture\"\n" + disk("/tmp/sys", "serial=A"), "plan machine srv1 disk 1 captures into /tmp/sys, a path in the rescue environment that is gone after the reboot"},
		{"capture single form to a rescue path", srv + "action = \"capture\"\nsnapshot = \"/srv/pc1\"\n", "plan machine srv1 captures into /srv/pc1"},
		{"capture to the medium's root", srv + "action = \"capture\"\nsnapshot = \"media:/\"\n", "plan machine srv1 captures into media:/, the medium's root"},
		{"upload without token", srv + "action = \"capture\"\n" + disk("http://10.0.2.100/snapshots/srv1", "serial=A"), "plan machine srv1 disk 1 captures to http://10.0.2.100/snapshots/srv1, but the plan has no [upload] token"},
		{"upload with token", up + srv + "action = \"capture\"\n" + disk("http://10.0.2.100/snapshots/srv1", "serial=A"), ""},
		{"report token is not an upload token", "[report]\nurl = \"http://10.0.2.100/report\"\ntoken = \"" + testUploadToken + "\"\n" + srv + "action = \"capture\"\nsnapshot = \"https://lab/snapshots/srv1\"\n", "no [upload] token"},
		{"short upload token", "[upload]\ntoken = \"abc\"\n" + srv + two, "plan upload.token: upload token is 3 characters"},
		{"upload token with a space", "[upload]\ntoken = \"0123456789 abcdef0123\"\n" + srv + two, "plan upload.token: upload token has a character other than"},
		{"unknown upload key", "[upload]\ntokn = \"x\"\n" + srv + two, "unknown keys upload.tokn"},
		{"segment size unit", srv + "segment_size = \"lots\"\n" + two, `plan machine srv1: segment_size "lots"`},
		{"segment size below a frame", srv + "segment_size = \"1MiB\"\n" + two, `plan machine srv1: segment_size "1MiB" is smaller than one stored chunk`},
		{"segment size 4GiB on media", srv + "action = \"capture\"\nsegment_size = \"4GiB\"\n" + two, `plan machine srv1 disk 1 captures onto the rescue medium (media:/snapshots/sys) with segment_size "4GiB", but FAT32`},
		{"segment size 4GiB, restore entry", srv + "segment_size = \"4GiB\"\n" + two, ""},
		{"segment size 4GiB, upload", up + srv + "action = \"capture\"\nsegment_size = \"4GiB\"\n" + disk("http://lab/snapshots/srv1", "serial=A"), ""},
		{"capture keys on a restore entry", srv + "overwrite = true\nraw = true\nsegment_size = \"2GiB\"\n" + two, ""},
		{"s3 restore, anonymous", srv + disk("s3://lab/rooms/a/srv1", "serial=A"), ""},
		{"s3 restore, named credential", s3 + srv + disk("s3://lab/srv1", "serial=A"), ""},
		{"s3 capture, named credential", s3 + srv + "action = \"capture\"\n" + disk("s3://lab/srv1", "serial=A"), ""},
		{"s3 capture without credential", srv + "action = \"capture\"\n" + disk("s3://lab/srv1", "serial=A"), "plan machine srv1 disk 1 captures to s3://lab/srv1, but the plan's [s3] names no credential"},
		{"s3 capture with overwrite", s3 + srv + "action = \"capture\"\noverwrite = true\n" + disk("s3://lab/srv1", "serial=A"), "with overwrite = true, which s3:// does not do"},
		{"s3 bad location", srv + disk("s3://lab/../srv1", "serial=A"), "not a valid s3:// location"},
		{"s3 bucket only", srv + disk("s3://lab", "serial=A"), "names a bucket but no snapshot"},
		{"s3 bad endpoint", "[s3]\nendpoint = \"ftp://store\"\n" + srv + two, "plan [s3] endpoint"},
		{"s3 endpoint with a path", "[s3]\nendpoint = \"http://store/x\"\n" + srv + two, "plan [s3] endpoint"},
		{"s3 bad path_style", "[s3]\npath_style = \"yes\"\n" + srv + two, `plan [s3] path_style is "yes"`},
		{"s3 credentials_file without credential", "[s3]\ncredentials_file = \"media:/rewind/s3\"\n" + srv + two, "credentials_file is set but credential is not"},
		{"s3 credentials_file relative", "[s3]\ncredential = \"ro\"\ncredentials_file = \"s3creds\"\n" + srv + two, "use media:/path or an absolute path"},
		{"s3 credential name", "[s3]\ncredential = \"../x\"\n" + srv + two, `plan [s3] credential "../x"`},
		{"s3 inline secret", "[s3]\nsecret_access_key = \"x\"\n" + srv + two, "unknown keys s3.secret_access_key"},
		{"s3 presigned not presigned", "[s3]\n[s3.presigned]\n\"s3://lab/srv1/manifest.json\" = \"http://store/lab/srv1/manifest.json\"\n" + srv + two, "plan [s3.presigned]: pre-signed URL for s3://lab/srv1/manifest.json: not a Signature V4 pre-signed URL"},
		{"s3 presigned other object", "[s3]\n[s3.presigned]\n\"s3://lab/srv1/manifest.json\" = \"http://store/lab/srv2/manifest.json?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261207T000000Z&X-Amz-Expires=60&X-Amz-Signature=ab\"\n" + srv + two, "is for another object"},
		{"s3 presigned bad key", "[s3]\n[s3.presigned]\n\"s3://lab/srv1/../etc/passwd\" = \"http://store/x\"\n" + srv + two, `pre-signed URL key "s3://lab/srv1/../etc/passwd"`},
	} {
		_, err := ParsePlan([]byte(tc.plan))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the plan accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// The kernel command line turns an entry into a capture, and is refused
// where the plan cannot follow it.
func TestResolveActionOverrides(t *testing.T) {
	const plan = `
[[machine]]
name = "pc1"
snapshot = "/srv/pc1"
[machine.match]
mac = ["52:54:00:12:34:56"]

[[machine]]
name = "srv1"
[[machine.disk]]
snapshot = "media:/snapshots/srv1-sys"
target = "serial=nvme1"
[[machine.disk]]
snapshot = "http://10.0.2.100/snapshots/srv1-data"
target = "size=48MiB"
`
	p, err := ParsePlan([]byte(plan))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    Overrides
		want string // "" = accepted
	}{
		{"several disks restore", Overrides{Machine: "srv1"}, ""},
		{"several disks, rewind.target", Overrides{Machine: "srv1", Target: "serial=X"},
			"kernel command line rewind.target=serial=X names one disk, but machine srv1 has 2 [[machine.disk]] entries"},
		{"several disks, rewind.snapshot", Overrides{Machine: "srv1", Snapshot: "media:/snapshots/x", Action: ActionCapture},
			"kernel command line rewind.snapshot=media:/snapshots/x names one disk, but machine srv1 has 2"},
		{"several disks capture without upload token", Overrides{Machine: "srv1", Action: ActionCapture},
			"machine srv1 disk 2 captures to http://10.0.2.100/snapshots/srv1-data, but the plan has no [upload] token"},
		{"restore from a rescue path", Overrides{}, ""},
		{"capture into a rescue path", Overrides{Action: ActionCapture}, "machine pc1 captures into /srv/pc1, a path in the rescue environment"},
		{"capture with rewind.snapshot onto the medium", Overrides{Action: ActionCapture, Snapshot: "media:/snapshots/pc1"}, ""},
	} {
		_, err := p.Resolve(Identity{MACs: []string{"52:54:00:12:34:56"}}, tc.o)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the settings accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestParseCmdlineAction(t *testing.T) {
	for _, tc := range []struct{ cmdline, want, err string }{
		{"rewind.action=capture", ActionCapture, ""},
		{"quiet rewind.action=restore", ActionRestore, ""},
		{"console=ttyS0", "", ""},
		{"rewind.action=backup", "", "kernel command line rewind.action=backup: want restore or capture"},
		{"rewind.action=", "", "rewind.action= has no value"},
		{"rewind.action=capture rewind.action=restore", "", "rewind.action is given twice"},
	} {
		o, err := ParseCmdline(tc.cmdline)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("kernel command line %q: got %v, want %q", tc.cmdline, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("kernel command line %q: got error %v, want one containing %q", tc.cmdline, err, tc.err)
		case err == nil && o.Action != tc.want:
			t.Errorf("kernel command line %q: got action %q, want %q", tc.cmdline, o.Action, tc.want)
		}
	}
}

// TestOutsidePlanCannotCaptureToS3: a plan from outside a rescue image
// with trusted keys may restore from s3:// but not capture to it, not even
// when rewind.action=capture turns its restore entry into a capture.
func TestOutsidePlanCannotCaptureToS3(t *testing.T) {
	p, err := ParsePlan([]byte("[s3]\ncredential = \"lab-rw\"\n[[machine]]\nname = \"pc1\"\nsnapshot = \"s3://lab/pc1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	p.outside = true
	if err := p.SettingsFor(&p.Machines[0], "", Overrides{}).Check(); err != nil {
		t.Fatalf("restore from s3:// with an outside plan: %v, want it allowed", err)
	}
	err = p.SettingsFor(&p.Machines[0], "", Overrides{Action: ActionCapture}).Check()
	if err == nil || !strings.Contains(err.Error(), "from outside the rescue image") {
		t.Fatalf("rewind.action=capture to s3:// with an outside plan: %v, want a refusal", err)
	}
	p.outside = false
	if err := p.SettingsFor(&p.Machines[0], "", Overrides{Action: ActionCapture}).Check(); err != nil {
		t.Fatalf("the image's own plan capturing to s3://: %v, want it allowed", err)
	}
}
