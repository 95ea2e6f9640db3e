package qemutests

// Network by MAC in the rescue environment. Each VM has NICs with chosen
// MACs on QEMU user networks with restrict=on; the only host a guest can
// reach is the .100 address of a network, relayed to an HTTP server on the
// host's loopback. QEMU's own DHCP server answers on each user network.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

// snapshotServer serves the directories in snaps (name -> snapshot dir)
// under /snapshots/NAME on the loopback and returns its port.
func snapshotServer(t *testing.T, snaps map[string]string) int {
	t.Helper()
	mux := http.NewServeMux()
	for name, dir := range snaps {
		prefix := "/snapshots/" + name + "/"
		mux.Handle(prefix, http.StripPrefix(prefix, snapshot.NewHandler(dir, nil)))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func findNIC(t *testing.T, r *rescue.Report, mac string) *struct {
	Mode, Link  string
	Addresses   []string
	Lease       string
	Problems    []string
	Planned, OK bool
} {
	t.Helper()
	if r.Network == nil {
		t.Fatalf("the report has no network section")
	}
	for _, n := range r.Network.NICs {
		if n.MAC == mac {
			lease := ""
			if n.Lease != nil {
				lease = n.Lease.Address
			}
			return &struct {
				Mode, Link  string
				Addresses   []string
				Lease       string
				Problems    []string
				Planned, OK bool
			}{n.Mode, n.Link, n.Addresses, lease, n.Problems, n.Planned, n.OK()}
		}
	}
	t.Fatalf("the report lists no NIC %s: %+v", mac, r.Network.NICs)
	return nil
}

// Three NICs with chosen MACs: one static (on the network the snapshot is
// served from), one DHCP, one with a tagged VLAN (the Debian kernel's
// 8021q, which the host kernel lacks); the snapshot comes over HTTP and the
// report shows every NIC configured.
func TestTwoNICsStaticAndDHCP(t *testing.T) {
	setup(t, false)
	port := snapshotServer(t, map[string]string{"pc1": shared.snap})
	plan := fmt.Sprintf(`
[countdown]
seconds = 0
[network]
default = "none"
dhcp_timeout = "20s"
[[network.interface]]
mac = "52:54:00:00:aa:01"
address = ["10.0.2.20/24"]
gateway = "10.0.2.2"
dns = ["10.0.2.3"]
[[network.interface]]
mac = "52:54:00:00:aa:02"
dhcp = true
[[network.interface]]
mac = "52:54:00:00:aa:03"
vlan = 42
mtu = 1400
address = ["192.168.42.10/24"]
[[machine]]
name = "pc1"
snapshot = "%s/snapshots/pc1"
target = "serial=target1"
after = "poweroff"
`, GuestServer)
	target := blank(t)
	_, r := boot(t, &VM{
		HTTPPort: port, MAC: "52:54:00:00:aa:01",
		NICs:   []NIC{{MAC: "52:54:00:00:aa:02", Net: "10.0.3.0/24"}, {MAC: "52:54:00:00:aa:03", Net: "10.0.4.0/24"}},
		Drives: []Drive{{Path: target, Serial: "target1"}},
	}, plan)
	wantRestored(t, target, r)
	static := findNIC(t, r, "52:54:00:00:aa:01")
	if !static.OK || static.Mode != "static" || strings.Join(static.Addresses, ",") != "10.0.2.20/24" || !static.Planned {
		t.Errorf("static NIC: %+v", static)
	}
	dhcp := findNIC(t, r, "52:54:00:00:aa:02")
	if !dhcp.OK || dhcp.Mode != "dhcp" || !strings.HasPrefix(dhcp.Lease, "10.0.3.") {
		t.Errorf("DHCP NIC: %+v", dhcp)
	}
	for _, n := range r.Network.NICs {
		if n.MAC == "52:54:00:00:aa:03" && (!strings.HasSuffix(n.Device, ".42") || strings.Join(n.Addresses, ",") != "192.168.42.10/24" || !n.OK()) {
			t.Errorf("VLAN NIC: %+v", n)
		}
	}
	if len(r.Network.Problems) > 0 {
		t.Errorf("network problems: %q", r.Network.Problems)
	}
}

// One universal plan, one initramfs, three machines: the first is named
// by its MAC, the second by its DMI UUID, and each restores its own
// snapshot onto its own disk; the third matches no entry and, with no
// default entry and nobody at the console, stops and touches no disk.
func TestUniversalPlan(t *testing.T) {
	setup(t, true)
	dir := t.TempDir()
	source2 := filepath.Join(dir, "pc2.img")
	if err := SampleDisk(source2, diskSize, 2); err != nil {
		t.Fatal(err)
	}
	snap2 := filepath.Join(dir, "pc2")
	m2, err := Capture(context.Background(), source2, snap2)
	if err != nil {
		t.Fatal(err)
	}
	port := snapshotServer(t, map[string]string{"pc1": shared.snap, "pc2": snap2})
	const uuid2 = "8c1f6a2e-3b4d-4e5f-9a0b-1c2d3e4f5a6b"
	plan := fmt.Sprintf(`
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "%[1]s/snapshots/pc1"
after = "poweroff"
[machine.match]
mac = ["52:54:00:00:bb:01"]
[[machine]]
name = "pc2"
snapshot = "%[1]s/snapshots/pc2"
after = "poweroff"
[machine.match]
dmi_uuid = "%[2]s"
`, GuestServer, strings.ToUpper(uuid2))
	initrd := rescueInitrd(t, plan)

	type machine struct {
		name, mac, uuid string
		source          string
		m               *snapshot.Manifest
		target          string
		report          *rescue.Report
	}
	ms := []*machine{
		{name: "pc1", mac: "52:54:00:00:bb:01", source: shared.source, m: shared.m},
		{name: "pc2", mac: "52:54:00:00:bb:02", uuid: uuid2, source: source2, m: m2},
		{name: "stranger", mac: "52:54:00:00:bb:03"},
	}
	for _, mc := range ms {
		mc.target = blank(t)
		_, mc.report = boot(t, &VM{Initrd: initrd, HTTPPort: port, MAC: mc.mac, UUID: mc.uuid,
			Drives: []Drive{{Path: mc.target}}}, "")
	}
	for _, mc := range ms[:2] {
		r := mc.report
		if r.Status != rescue.StatusSuccess || r.Machine.Name != mc.name {
			t.Errorf("%s: status %q machine %q error %q", mc.name, r.Status, r.Machine.Name, r.Error)
			continue
		}
		if err := SameExtents(mc.source, mc.target, mc.m); err != nil {
			t.Errorf("%s restored the wrong bytes: %v", mc.name, err)
		}
		t.Logf("%s chosen by %s", mc.name, r.Machine.Selection)
	}
	if s := ms[0].report.Machine.Selection; !strings.Contains(s, "MAC 52:54:00:00:bb:01") {
		t.Errorf("pc1 selection %q, want the MAC named", s)
	}
	if s := ms[1].report.Machine.Selection; !strings.Contains(strings.ToLower(s), "dmi uuid "+uuid2) {
		t.Errorf("pc2 selection %q, want the DMI UUID named", s)
	}
	stranger := ms[2]
	wantUntouched(t, stranger.target, stranger.report, rescue.StatusFailed)
	if !strings.Contains(stranger.report.Error, "no plan entry matches this machine") || !strings.Contains(stranger.report.Error, "52:54:00:00:bb:03") {
		t.Errorf("stranger: error %q, want one naming its MAC and the missing entry", stranger.report.Error)
	}
}

// A guest without an RNG device and with QEMU's default CPU (no RDRAND)
// boots with an empty random pool: DHCP must not wait for it (its
// transaction IDs need no cryptographic randomness). The guest gets its
// lease and restores over HTTP.
func TestDHCPWithoutRandomPool(t *testing.T) {
	setup(t, false)
	port := snapshotServer(t, map[string]string{"pc1": shared.snap})
	plan := fmt.Sprintf(`
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "%s/snapshots/pc1"
target = "serial=target1"
after = "poweroff"
`, GuestServer)
	target := blank(t)
	console, r := boot(t, &VM{
		HTTPPort: port, MAC: "52:54:00:00:cc:01", DefaultCPU: true,
		Drives: []Drive{{Path: target, Serial: "target1"}},
	}, plan)
	wantRestored(t, target, r)
	n := findNIC(t, r, "52:54:00:00:cc:01")
	if n.Mode != "dhcp" || !strings.HasPrefix(n.Lease, "10.0.2.") || len(n.Problems) > 0 {
		t.Errorf("NIC 52:54:00:00:cc:01: %+v; want a DHCP lease from QEMU's 10.0.2.0/24 and no problems", n)
	}
	if strings.Contains(console, "random number") {
		t.Errorf("the console mentions waiting for random numbers:\n%s", console)
	}
	for _, s := range r.Steps {
		if s.Name == "drivers" && strings.Contains(s.Detail, "virtio_rng") {
			t.Errorf("virtio_rng was loaded (%s): the VM has an RNG device, so this test proves nothing", s.Detail)
		}
	}
}

// A switch port that comes up late: the NIC has no carrier when the rescue
// environment configures the network, and gets one 20 s after it said no
// NIC is configured. The flow waits for an address instead of retrying the
// snapshot's server with none, DHCP asks again once the link is up, and
// the restore goes on. (QEMU's monitor, multiplexed on the serial console,
// takes the link down before the kernel boots and up again.)
func TestLinkComesUpLate(t *testing.T) {
	setup(t, false)
	port := snapshotServer(t, map[string]string{"pc1": shared.snap})
	plan := fmt.Sprintf(`
[countdown]
seconds = 0
[network]
default = "dhcp"
carrier_timeout = "3s"
[[machine]]
name = "pc1"
snapshot = "%s/snapshots/pc1"
target = "serial=target1"
after = "poweroff"
`, GuestServer)
	target := blank(t)
	console, r := boot(t, &VM{
		HTTPPort: port, MAC: "52:54:00:00:dd:01", Timeout: 4 * time.Minute,
		Drives: []Drive{{Path: target, Serial: "target1"}},
		Keys: []Key{
			{When: "SeaBIOS", Send: "\x01cset_link n0 off\n\x01c"},
			{When: "no NIC is configured yet", Delay: 20 * time.Second, Send: "\x01cset_link n0 on\n\x01c"},
		},
	}, plan)
	wantRestored(t, target, r)
	for _, want := range []string{"no link (carrier) after 3s", "no NIC is configured yet", "no address yet; DHCP keeps asking", "network: address after"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	n := findNIC(t, r, "52:54:00:00:dd:01")
	if !strings.HasPrefix(n.Lease, "10.0.2.") || n.Link != "up" || len(n.Problems) > 0 {
		t.Errorf("NIC 52:54:00:00:dd:01 in the report: %+v; want link up, a lease from 10.0.2.0/24 and no problems", n)
	}
}
