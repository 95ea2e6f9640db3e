package netcfg

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// RenewOptions controls KeepLeases.
type RenewOptions struct {
	// Every overrides the renewal interval (default: half of each lease).
	Every time.Duration
	// ResolvConf is where DNS settings from late leases go (default
	// /etc/resolv.conf).
	ResolvConf string
	// Log receives a line per renewal, per late lease and per failure; may
	// be nil.
	Log func(format string, args ...any)
}

// Leases keeps the DHCP NICs of a report configured; see KeepLeases.
type Leases struct {
	opts    RenewOptions
	logf    func(string, ...any)
	mu      sync.Mutex
	rep     *Report       // updated as late leases arrive
	up      chan struct{} // closed when some NIC has an address
	upOnce  sync.Once
	pending int // DHCP NICs still without a lease
}

// KeepLeases keeps the DHCP NICs of rep configured until ctx ends:
//
//   - a NIC that got no lease from Apply (no DHCP server yet, a switch port
//     that came up late, no carrier) keeps asking, waiting 1 s, then 2 s,
//     4 s, ... up to 30 s between attempts; a late lease is configured
//     with its routes and DNS servers;
//   - every lease is renewed at half its lifetime, asking for the same
//     address, so that a restore that runs for hours does not lose its
//     address to another machine. A renewal that fails is retried at the
//     next interval; a server that hands out another address gets it
//     configured (the restore's HTTP reads retry through the change).
//
// It returns at once; Wait tells when the machine has an address.
func KeepLeases(ctx context.Context, rep *Report, opts RenewOptions) *Leases {
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	k := &Leases{opts: opts, logf: opts.Log, rep: rep.clone(), up: make(chan struct{})}
	if k.logf == nil {
		k.logf = func(string, ...any) {}
	}
	for i, n := range k.rep.NICs {
		if len(n.Addresses) > 0 && n.Link == "up" {
			k.upOnce.Do(func() { close(k.up) })
		}
		if n.Mode != "dhcp" {
			continue
		}
		if n.Lease == nil {
			k.pending++
		}
		go k.keep(ctx, i, n)
	}
	return k
}

// Wait returns nil as soon as some NIC has an address (at once when Apply
// configured one), or an error naming every NIC's problem when ctx ends
// first.
func (k *Leases) Wait(ctx context.Context) error {
	select {
	case <-k.up:
		return nil
	case <-ctx.Done():
	}
	rep := k.Report()
	var nics []string
	for _, n := range rep.NICs {
		nics = append(nics, fmt.Sprintf("%s (%s) link %s, mode %s", n.Name, n.MAC, n.Link, n.Mode))
	}
	if len(nics) == 0 {
		nics = []string{"this machine has no Ethernet NIC with a driver loaded"}
	}
	return fmt.Errorf("no NIC has an address (%s; problems: %s): check the cable, the switch port and the DHCP server, or give a static address in the plan's [network]",
		strings.Join(nics, "; "), strings.Join(rep.Problems, "; "))
}

// Up reports whether some NIC has an address.
func (k *Leases) Up() bool {
	select {
	case <-k.up:
		return true
	default:
		return false
	}
}

// Pending is the number of DHCP NICs still asking for their first lease.
func (k *Leases) Pending() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pending
}

// Report returns the report as it is now, late leases included.
func (k *Leases) Report() *Report {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rep.clone()
}

func (r *Report) clone() *Report {
	c := *r
	c.NICs = slices.Clone(r.NICs)
	for i := range c.NICs {
		if l := c.NICs[i].Lease; l != nil {
			l2 := *l
			c.NICs[i].Lease = &l2
		}
		c.NICs[i].Addresses = slices.Clone(c.NICs[i].Addresses)
		c.NICs[i].Problems = slices.Clone(c.NICs[i].Problems)
	}
	c.DNS, c.Search, c.Problems = slices.Clone(r.DNS), slices.Clone(r.Search), slices.Clone(r.Problems)
	return &c
}

// keep gets NIC i a lease when it has none, then renews it.
func (k *Leases) keep(ctx context.Context, i int, n NIC) {
	dev := n.Name
	if n.Device != "" {
		dev = n.Device
	}
	l, err := netlink.LinkByName(dev)
	if err != nil {
		k.logf("network: %s (%s): %v: cannot keep its DHCP lease", dev, n.MAC, err)
		return
	}
	xids := newXIDSource(l.Attrs().HardwareAddr)
	if n.Lease == nil {
		if !k.first(ctx, i, l, xids) {
			return
		}
	}
	k.mu.Lock()
	address, seconds := k.rep.NICs[i].Lease.Address, k.rep.NICs[i].Lease.Seconds
	k.mu.Unlock()
	every := k.opts.Every
	if every <= 0 {
		every = max(time.Duration(seconds)*time.Second/2, 30*time.Second)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		got, err := renew(ctx, l, xids, address, every)
		switch {
		case err != nil:
			k.logf("network: %s (%s): renewing the DHCP lease of %s failed: %v; trying again in %s", dev, n.MAC, address, err, every)
		case got != address:
			k.logf("network: %s (%s): the DHCP server replaced lease %s with %s", dev, n.MAC, address, got)
			address = got
		default:
			k.logf("network: %s (%s): DHCP lease %s renewed", dev, n.MAC, address)
		}
	}
}

// first asks for NIC i's first lease until it gets one (true) or ctx ends.
func (k *Leases) first(ctx context.Context, i int, l netlink.Link, xids *xidSource) bool {
	name, mac := l.Attrs().Name, l.Attrs().HardwareAddr
	netlink.LinkSetUp(l)
	// No carrier yet (a switch port that comes up late): wait for it.
	for wait := firstRetry; ; wait = min(2*wait, maxRetry) {
		if err := waitCarrier(ctx, l, wait); err == nil {
			break
		} else if ctx.Err() != nil {
			return false
		}
	}
	p, err := acquire(ctx, l, xids, firstRetry, k.logf)
	if err != nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	nic := &k.rep.NICs[i]
	nic.Link, nic.Problems = "up", nil
	problems := configureLease(l, p, nic)
	for _, msg := range problems {
		k.logf("network: %s (%s): %s", name, mac, msg)
	}
	nic.Problems = problems
	// The NIC's earlier problems (no lease, no carrier) are over.
	prefix := fmt.Sprintf("%s (%s): ", nic.Name, nic.MAC)
	k.rep.Problems = slices.DeleteFunc(k.rep.Problems, func(s string) bool { return strings.HasPrefix(s, prefix) })
	for _, msg := range problems {
		k.rep.Problems = append(k.rep.Problems, prefix+msg)
	}
	k.pending--
	le := nic.Lease
	k.logf("network: %s (%s): DHCP lease %s from %s, router %s (after the first attempts failed)", name, mac, le.Address, le.Server, le.Router)
	for _, d := range le.DNS {
		if !slices.Contains(k.rep.DNS, d) {
			k.rep.DNS = append(k.rep.DNS, d)
		}
	}
	if le.Domain != "" && !slices.Contains(k.rep.Search, le.Domain) {
		k.rep.Search = append(k.rep.Search, le.Domain)
	}
	if len(k.rep.DNS) > 0 {
		if err := writeResolvConf(k.opts.ResolvConf, k.rep.DNS, k.rep.Search); err != nil {
			k.logf("network: %v", err)
		}
	}
	k.upOnce.Do(func() { close(k.up) })
	return true
}

// renew asks the DHCP server on l for address again and configures the
// address it grants.
func renew(ctx context.Context, l netlink.Link, xids *xidSource, address string, timeout time.Duration) (string, error) {
	ip, _, err := net.ParseCIDR(address)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, time.Minute))
	defer cancel()
	p, err := exchange(ctx, l, xids, ip)
	if err != nil {
		return "", err
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: p.Lease()}); err != nil {
		return "", err
	}
	return p.Lease().String(), nil
}
