package netcfg

// These tests build a small lab of network namespaces: "cli" plays the
// machine being rescued, "srv" the network around it (a dnsmasq DHCP server,
// peers, a VLAN). The veth pairs between them carry the MAC addresses the
// plans name. Apply runs in a child process started inside "cli", so that
// nothing it does reaches the host's own network.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const childEnv = "REWIND_NETCFG_CHILD"

// childRequest is what the child in the cli namespace does: Apply, then
// optionally renew leases for RenewFor, or wait up to WaitFor for an
// address with KeepLeases asking on NICs without a lease.
type childRequest struct {
	Config     Config
	ResolvConf string
	RenewFor   time.Duration
	WaitFor    time.Duration
}

// TestMain runs Apply when started as the child inside the cli namespace.
func TestMain(m *testing.M) {
	if cfgJSON := os.Getenv(childEnv); cfgJSON != "" {
		var req childRequest
		if err := json.Unmarshal([]byte(cfgJSON), &req); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
		rep, err := Apply(context.Background(), &req.Config, Options{ResolvConf: req.ResolvConf, Log: logf})
		if err != nil {
			fmt.Fprintln(os.Stderr, "apply:", err)
			os.Exit(4)
		}
		if req.RenewFor > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), req.RenewFor)
			KeepLeases(ctx, rep, RenewOptions{Every: time.Second, ResolvConf: req.ResolvConf, Log: logf})
			<-ctx.Done()
			cancel()
		}
		if req.WaitFor > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), req.WaitFor)
			k := KeepLeases(ctx, rep, RenewOptions{ResolvConf: req.ResolvConf, Log: logf})
			if err := k.Wait(ctx); err != nil {
				logf("wait: %v", err)
			}
			rep = k.Report()
			cancel()
		}
		json.NewEncoder(os.Stdout).Encode(rep)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type lab struct {
	t        *testing.T
	srv, cli string
	dir      string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	id := rand.IntN(1 << 20)
	l := &lab{t: t, srv: fmt.Sprintf("rwsrv%d", id), cli: fmt.Sprintf("rwcli%d", id), dir: t.TempDir()}
	for _, ns := range []string{l.srv, l.cli} {
		l.run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		l.run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	return l
}

func (l *lab) run(name string, args ...string) string {
	l.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// veth links cliName (with mac) in cli to srvName in srv; srvAddr may be "".
func (l *lab) veth(cliName, mac, srvName, srvAddr string) {
	l.t.Helper()
	tmp := fmt.Sprintf("rwt%d", rand.IntN(1<<20))
	l.run("ip", "link", "add", tmp, "address", mac, "type", "veth", "peer", "name", tmp+"p")
	l.run("ip", "link", "set", tmp, "netns", l.cli, "name", cliName)
	l.run("ip", "link", "set", tmp+"p", "netns", l.srv, "name", srvName)
	l.run("ip", "-n", l.srv, "link", "set", srvName, "up")
	if srvAddr != "" {
		l.run("ip", "-n", l.srv, "addr", "add", srvAddr, "dev", srvName)
	}
}

// dnsmasq serves DHCP on iface in srv until the test ends.
func (l *lab) dnsmasq(iface, from, to string, options ...string) func() string {
	l.t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		l.t.Skip("dnsmasq not installed (scripts/setup.sh installs dnsmasq-base)")
	}
	args := []string{"netns", "exec", l.srv, bin, "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--bind-interfaces", "--interface=" + iface, "--except-interface=lo",
		"--dhcp-range=" + from + "," + to + ",255.255.255.0,5m",
		"--dhcp-leasefile=" + filepath.Join(l.dir, iface+".leases"),
		"--pid-file=" + filepath.Join(l.dir, iface+".pid"), "--log-dhcp"}
	for _, o := range options {
		args = append(args, "--dhcp-option="+o)
	}
	cmd := exec.Command("ip", args...)
	// dnsmasq writes its log from the goroutine exec starts to copy its
	// output while the test reads it: the buffer is shared under a lock.
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if l.t.Failed() {
			l.t.Logf("dnsmasq on %s:\n%s", iface, log.String())
		}
	})
	time.Sleep(200 * time.Millisecond)
	return func() string {
		cmd.Process.Signal(os.Interrupt)
		time.Sleep(100 * time.Millisecond)
		return log.String()
	}
}

// lockedBuffer is a bytes.Buffer that a writing goroutine and a reading
// test can share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// apply runs Apply(cfg) inside cli and returns its report and resolv.conf.
func (l *lab) apply(cfg Config) (*Report, string) {
	rep, resolv, _ := l.applyRenewing(cfg, 0)
	return rep, resolv
}

// applyRenewing is apply, then KeepLeases renewing every second for d; it
// also returns the child's log.
func (l *lab) applyRenewing(cfg Config, d time.Duration) (*Report, string, string) {
	l.t.Helper()
	return l.start(childRequest{Config: cfg, RenewFor: d}, nil)()
}

// start starts the child with req (its ResolvConf set here) and returns a
// function that waits for it and returns its report, resolv.conf and log.
// The child's log is also written to log when it is not nil.
func (l *lab) start(req childRequest, log *lockedBuffer) func() (*Report, string, string) {
	l.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	resolv := filepath.Join(l.dir, "resolv.conf")
	req.ResolvConf = resolv
	js, _ := json.Marshal(req)
	cmd := exec.Command("ip", "netns", "exec", l.cli, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	if log == nil {
		log = &lockedBuffer{}
	}
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, log
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	return func() (*Report, string, string) {
		l.t.Helper()
		if err := cmd.Wait(); err != nil {
			l.t.Fatalf("apply in %s: %v\n%s", l.cli, err, log.String())
		}
		l.t.Logf("apply log:\n%s", log.String())
		var rep Report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			l.t.Fatalf("report: %v: %s", err, stdout.String())
		}
		rc, _ := os.ReadFile(resolv)
		return &rep, string(rc), log.String()
	}
}

func (r *Report) nic(t *testing.T, mac string) NIC {
	t.Helper()
	for _, n := range r.NICs {
		if n.MAC == mac {
			return n
		}
	}
	t.Fatalf("report has no NIC %s: %+v", mac, r.NICs)
	return NIC{}
}

func TestStaticAndDHCPByMAC(t *testing.T) {
	l := newLab(t)
	// Kernel names are deliberately misleading: only MACs count.
	l.veth("eth0", "52:54:00:aa:00:02", "s-dhcp", "192.168.77.1/24")
	l.veth("eth1", "52:54:00:aa:00:01", "s-static", "192.168.78.1/24")
	l.dnsmasq("s-dhcp", "192.168.77.100", "192.168.77.150", "3", "6,192.168.77.53", "15,dhcp.example")
	rep, resolv := l.apply(Config{Interfaces: []Interface{
		{MAC: "52:54:00:aa:00:02", DHCP: true},
		{MAC: "52:54:00:AA:00:01", Address: []string{"192.168.78.10/24", "fd00:78::10/64"}, Gateway: "192.168.78.1",
			DNS: []string{"192.168.78.53"}, Search: []string{"lab.example"}},
	}})
	if len(rep.Problems) > 0 {
		t.Errorf("problems: %q", rep.Problems)
	}
	d := rep.nic(t, "52:54:00:aa:00:02")
	if d.Name != "eth0" || d.Mode != "dhcp" || d.Link != "up" || d.Lease == nil || !strings.HasPrefix(d.Lease.Address, "192.168.77.1") || d.Lease.Server != "192.168.77.1" {
		t.Errorf("dhcp NIC: %+v lease %+v", d, d.Lease)
	}
	s := rep.nic(t, "52:54:00:aa:00:01")
	if s.Name != "eth1" || s.Mode != "static" || len(s.Addresses) != 2 || s.Gateway != "192.168.78.1" {
		t.Errorf("static NIC: %+v", s)
	}
	addrs := l.run("ip", "-n", l.cli, "addr")
	for _, want := range []string{"192.168.78.10/24", "fd00:78::10/64", d.Lease.Address} {
		if !strings.Contains(addrs, want) {
			t.Errorf("ip addr in %s lacks %s:\n%s", l.cli, want, addrs)
		}
	}
	if routes := l.run("ip", "-n", l.cli, "route", "show", "default"); !strings.Contains(routes, "via 192.168.78.1 dev eth1") {
		t.Errorf("default route: %q, want via 192.168.78.1 dev eth1", routes)
	}
	for _, want := range []string{"nameserver 192.168.77.53", "nameserver 192.168.78.53", "search", "lab.example", "dhcp.example"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, resolv)
		}
	}
	l.run("ip", "netns", "exec", l.srv, "ping", "-c", "1", "-W", "2", "192.168.78.10")
	l.run("ip", "netns", "exec", l.srv, "ping", "-c", "1", "-W", "2", strings.Split(d.Lease.Address, "/")[0])
}

func TestVLANAndMTU(t *testing.T) {
	l := newLab(t)
	l.veth("eth0", "52:54:00:aa:00:03", "s-trunk", "")
	if out, err := exec.Command("ip", "-n", l.srv, "link", "add", "link", "s-trunk", "name", "s-trunk.42", "type", "vlan", "id", "42").CombinedOutput(); err != nil {
		t.Skipf("this kernel cannot make VLAN devices (8021q missing?): %s", out)
	}
	l.run("ip", "-n", l.srv, "link", "set", "s-trunk.42", "up")
	l.run("ip", "-n", l.srv, "addr", "add", "192.168.42.1/24", "dev", "s-trunk.42")
	rep, _ := l.apply(Config{Interfaces: []Interface{
		{MAC: "52:54:00:aa:00:03", VLAN: 42, MTU: 1400, Address: []string{"192.168.42.10/24"}},
	}})
	n := rep.nic(t, "52:54:00:aa:00:03")
	if n.Device != "eth0.42" || n.VLAN != 42 || len(n.Problems) > 0 {
		t.Errorf("VLAN NIC: %+v", n)
	}
	if link := l.run("ip", "-n", l.cli, "link", "show", "eth0"); !strings.Contains(link, "mtu 1400") {
		t.Errorf("eth0 MTU: %s", link)
	}
	if a := l.run("ip", "-n", l.cli, "addr", "show", "eth0.42"); !strings.Contains(a, "192.168.42.10/24") {
		t.Errorf("eth0.42: %s", a)
	}
	l.run("ip", "netns", "exec", l.srv, "ping", "-c", "1", "-W", "2", "192.168.42.10")
}

func TestNetworkProblemsAreReported(t *testing.T) {
	l := newLab(t)
	l.veth("eth0", "52:54:00:aa:00:04", "s-quiet", "")                // no DHCP server
	l.veth("eth1", "52:54:00:aa:00:05", "s-taken", "192.168.79.1/24") // someone owns .1
	l.veth("eth2", "52:54:00:aa:00:06", "s-other", "")                // not in the plan
	rep, _ := l.apply(Config{
		Default:     DefaultNone,
		DHCPTimeout: Duration{3 * time.Second},
		Interfaces: []Interface{
			{MAC: "52:54:00:aa:00:04", DHCP: true},
			{MAC: "52:54:00:aa:00:05", Address: []string{"192.168.79.1/24", "192.168.79.20/24"}},
			{MAC: "52:54:00:ff:ff:ff", DHCP: true},
		},
	})
	all := strings.Join(rep.Problems, "\n")
	srvMAC := strings.Fields(l.run("ip", "-n", l.srv, "-br", "link", "show", "s-taken"))[2]
	for _, want := range []string{
		"52:54:00:ff:ff:ff but this machine has no NIC with that MAC",
		"eth0 (52:54:00:aa:00:04): no DHCP lease within 3s",
		"eth1 (52:54:00:aa:00:05): address 192.168.79.1 is already in use on the network by " + srvMAC,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	if n := rep.nic(t, "52:54:00:aa:00:05"); len(n.Addresses) != 1 || n.Addresses[0] != "192.168.79.20/24" {
		t.Errorf("eth1 addresses %v, want only the free 192.168.79.20/24", n.Addresses)
	}
	if n := rep.nic(t, "52:54:00:aa:00:06"); n.Mode != "none" || n.Planned {
		t.Errorf("unplanned NIC with default none: %+v", n)
	}
}

// A lease is renewed for the same address while a long restore runs.
func TestDHCPLeaseIsRenewed(t *testing.T) {
	l := newLab(t)
	l.veth("eth0", "52:54:00:aa:00:07", "s-dhcp", "192.168.80.1/24")
	serverLog := l.dnsmasq("s-dhcp", "192.168.80.100", "192.168.80.150")
	rep, _, childLog := l.applyRenewing(Config{Interfaces: []Interface{{MAC: "52:54:00:aa:00:07", DHCP: true}}}, 3500*time.Millisecond)
	n := rep.nic(t, "52:54:00:aa:00:07")
	if n.Lease == nil {
		t.Fatalf("no lease: %+v", n)
	}
	if got := strings.Count(childLog, "DHCP lease "+n.Lease.Address+" renewed"); got < 2 {
		t.Errorf("renewed %d times in 3.5 s at 1 s intervals, want at least 2; log:\n%s", got, childLog)
	}
	acks := strings.Count(serverLog(), "DHCPACK(s-dhcp) "+strings.Split(n.Lease.Address, "/")[0]+" 52:54:00:aa:00:07")
	if acks < 3 {
		t.Errorf("dnsmasq acknowledged the address %d times, want the first lease and at least 2 renewals", acks)
	}
}

// A DHCP server that starts late (20 s after the NIC's first attempts
// gave up) still gives the NIC a lease: KeepLeases keeps asking with
// backoff, and Wait returns once the address is configured.
func TestDHCPServerStartsLate(t *testing.T) {
	l := newLab(t)
	l.veth("eth0", "52:54:00:aa:00:08", "s-late", "192.168.81.1/24")
	log := &lockedBuffer{}
	wait := l.start(childRequest{
		Config:  Config{DHCPTimeout: Duration{3 * time.Second}, Interfaces: []Interface{{MAC: "52:54:00:aa:00:08", DHCP: true}}},
		WaitFor: 3 * time.Minute,
	}, log)
	for start := time.Now(); !strings.Contains(log.String(), "no DHCP lease within 3s"); time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("Apply did not report its DHCP timeout; log:\n%s", log.String())
		}
	}
	time.Sleep(20 * time.Second)
	l.dnsmasq("s-late", "192.168.81.100", "192.168.81.150", "6,192.168.81.53")
	rep, resolv, childLog := wait()
	n := rep.nic(t, "52:54:00:aa:00:08")
	if n.Lease == nil || !strings.HasPrefix(n.Lease.Address, "192.168.81.1") {
		t.Fatalf("eth0 (52:54:00:aa:00:08): got lease %+v, want one from the late server 192.168.81.1; log:\n%s", n.Lease, childLog)
	}
	if len(n.Problems) > 0 || len(rep.Problems) > 0 {
		t.Errorf("eth0: problems %q, report problems %q after the late lease, want none", n.Problems, rep.Problems)
	}
	if !strings.Contains(childLog, "asking again in") {
		t.Errorf("child log lacks the retries (\"asking again in\"):\n%s", childLog)
	}
	if !strings.Contains(resolv, "nameserver 192.168.81.53") {
		t.Errorf("resolv.conf lacks the late lease's DNS server 192.168.81.53:\n%s", resolv)
	}
	l.run("ip", "netns", "exec", l.srv, "ping", "-c", "1", "-W", "2", strings.Split(n.Lease.Address, "/")[0])
}
