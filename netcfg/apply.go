package netcfg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// Options controls Apply.
type Options struct {
	// ResolvConf is where DNS settings go (default /etc/resolv.conf).
	ResolvConf string
	// Log receives one line per step; may be nil.
	Log func(format string, args ...any)
	// SkipConflictCheck turns off the ARP probe for static IPv4 addresses.
	SkipConflictCheck bool
}

// Report says what Apply found and did, NIC by NIC.
type Report struct {
	NICs     []NIC    `json:"nics"`
	DNS      []string `json:"dns,omitempty"`
	Search   []string `json:"search,omitempty"`
	Problems []string `json:"problems,omitempty"` // plan entries for absent NICs, and every NIC's problems
}

// NIC is one network interface in the report.
type NIC struct {
	MAC       string   `json:"mac"`
	Name      string   `json:"name"`
	Driver    string   `json:"driver,omitempty"`
	Link      string   `json:"link"` // "up", "no carrier", "down"
	Mode      string   `json:"mode"` // "static", "dhcp" or "none"
	Planned   bool     `json:"planned"`
	VLAN      int      `json:"vlan,omitempty"`
	Device    string   `json:"device,omitempty"` // the VLAN device configured on top of Name
	MTU       int      `json:"mtu,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Gateway   string   `json:"gateway,omitempty"`
	Gateway6  string   `json:"gateway6,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	Lease     *Lease   `json:"lease,omitempty"`
	Problems  []string `json:"problems,omitempty"`
}

// Lease is what a DHCP server handed out.
type Lease struct {
	Address string   `json:"address"`
	Router  string   `json:"router,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	Domain  string   `json:"domain,omitempty"`
	Server  string   `json:"server,omitempty"`
	Seconds int      `json:"lease_seconds,omitempty"`
}

// OK reports whether the NIC got the settings it was meant to get.
func (n *NIC) OK() bool { return len(n.Problems) == 0 && n.Mode != "none" }

// Apply configures every Ethernet NIC of this machine from cfg, matched by
// MAC address. A NIC the plan names but the machine lacks, a link without
// carrier, a DHCP timeout or an address another host already uses is a
// problem in the report, not an error: the caller goes on when the
// snapshot is still reachable. Errors are for an invalid cfg or a failing
// netlink socket.
func Apply(ctx context.Context, cfg *Config, opts Options) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo) // local services (and Go's resolver) expect it
	}
	links, err := ethernetLinks()
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	present := make(map[string]bool)
	for _, l := range links {
		present[l.Attrs().HardwareAddr.String()] = true
	}
	for _, in := range cfg.Interfaces {
		mac, _ := net.ParseMAC(in.MAC)
		if !present[mac.String()] {
			rep.Problems = append(rep.Problems, fmt.Sprintf("the plan configures NIC %s but this machine has no NIC with that MAC (it has: %s)", mac, describeLinks(links)))
		}
	}

	type job struct {
		link netlink.Link
		in   Interface
		nic  *NIC
	}
	var jobs []job
	for _, l := range links {
		mac := l.Attrs().HardwareAddr
		ins := cfg.lookup(mac)
		planned := len(ins) > 0
		if !planned {
			if cfg.Default != DefaultDHCP {
				rep.NICs = append(rep.NICs, NIC{MAC: mac.String(), Name: l.Attrs().Name, Driver: driver(l), Link: linkState(l), Mode: "none"})
				continue
			}
			ins = []Interface{{MAC: mac.String(), DHCP: true}}
		}
		for _, in := range ins {
			nic := &NIC{MAC: mac.String(), Name: l.Attrs().Name, Driver: driver(l), Planned: planned, VLAN: in.VLAN, MTU: in.MTU, Mode: "static"}
			if in.DHCP {
				nic.Mode = "dhcp"
			}
			jobs = append(jobs, job{l, in, nic})
		}
	}
	// NICs are configured in parallel, so DHCP timeouts do not add up.
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			c := configurer{cfg: cfg, opts: opts, logf: logf, nic: j.nic}
			c.configure(ctx, j.link, j.in)
		})
	}
	wg.Wait()
	for _, j := range jobs {
		rep.NICs = append(rep.NICs, *j.nic)
	}
	sort.SliceStable(rep.NICs, func(a, b int) bool { return rep.NICs[a].Name < rep.NICs[b].Name })

	for _, n := range rep.NICs {
		for _, p := range n.Problems {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s (%s): %s", n.Name, n.MAC, p))
		}
		if n.Link != "up" || len(n.Addresses) == 0 {
			continue
		}
		dns := n.DNS
		if n.Lease != nil {
			dns = n.Lease.DNS
			if n.Lease.Domain != "" && !slices.Contains(rep.Search, n.Lease.Domain) {
				rep.Search = append(rep.Search, n.Lease.Domain)
			}
		}
		for _, d := range dns {
			if !slices.Contains(rep.DNS, d) {
				rep.DNS = append(rep.DNS, d)
			}
		}
	}
	for _, in := range cfg.Interfaces {
		for _, s := range in.Search {
			if !slices.Contains(rep.Search, s) {
				rep.Search = append(rep.Search, s)
			}
		}
	}
	if len(rep.DNS) > 0 {
		if err := writeResolvConf(opts.ResolvConf, rep.DNS, rep.Search); err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		} else {
			logf("dns: wrote %s (nameservers %s)", opts.ResolvConf, strings.Join(rep.DNS, ", "))
		}
	}
	return rep, nil
}

// configurer applies one Interface to one link and fills in its NIC.
type configurer struct {
	cfg  *Config
	opts Options
	logf func(string, ...any)
	nic  *NIC
}

func (c *configurer) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.nic.Problems = append(c.nic.Problems, msg)
	c.logf("network: %s (%s): %s", c.nic.Name, c.nic.MAC, msg)
}

func (c *configurer) configure(ctx context.Context, l netlink.Link, in Interface) {
	if in.MTU > 0 && l.Attrs().MTU != in.MTU {
		if err := netlink.LinkSetMTU(l, in.MTU); err != nil {
			c.problem("set MTU %d: %v", in.MTU, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		c.nic.Link = "down"
		c.problem("bring the link up: %v", err)
		return
	}
	dev := l
	if in.VLAN > 0 {
		v, err := vlanDevice(l, in.VLAN, in.MTU)
		if err != nil {
			c.problem("create VLAN %d: %v", in.VLAN, err)
			return
		}
		dev = v
		c.nic.Device = v.Attrs().Name
	}
	if err := waitCarrier(ctx, dev, c.cfg.carrierTimeout()); err != nil {
		c.nic.Link = "no carrier"
		c.problem("%v: check the cable and the switch port", err)
		return
	}
	c.nic.Link = "up"
	if in.DHCP {
		c.dhcp(ctx, dev)
		return
	}
	c.static(ctx, dev, in)
}

func (c *configurer) static(ctx context.Context, dev netlink.Link, in Interface) {
	for _, a := range in.Address {
		p := netip.MustParsePrefix(a)
		if p.Addr().Is4() && !c.opts.SkipConflictCheck {
			if owner, err := arpProbe(ctx, dev, p.Addr()); err != nil {
				c.logf("network: %s: ARP probe for %s: %v", c.nic.Name, p.Addr(), err)
			} else if owner != nil {
				c.problem("address %s is already in use on the network by %s: not configured; fix the plan or the other host", p.Addr(), owner)
				continue
			}
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := netlink.AddrAdd(dev, addr); err != nil && !errors.Is(err, os.ErrExist) {
			c.problem("add address %s: %v", a, err)
			continue
		}
		if p.Addr().Is6() {
			if err := waitDAD(ctx, dev, p.Addr()); err != nil {
				c.problem("%v", err)
				netlink.AddrDel(dev, addr)
				continue
			}
		}
		c.nic.Addresses = append(c.nic.Addresses, a)
		c.logf("network: %s (%s): address %s", c.nic.Name, c.nic.MAC, a)
	}
	for _, gw := range []string{in.Gateway, in.Gateway6} {
		if gw == "" {
			continue
		}
		ip := net.ParseIP(gw)
		r := &netlink.Route{LinkIndex: dev.Attrs().Index, Gw: ip}
		if err := netlink.RouteReplace(r); err != nil {
			c.problem("add default route via %s: %v", gw, err)
			continue
		}
		if ip.To4() != nil {
			c.nic.Gateway = gw
		} else {
			c.nic.Gateway6 = gw
		}
	}
	c.nic.DNS = in.DNS
}

func (c *configurer) dhcp(ctx context.Context, dev netlink.Link) {
	timeout := c.cfg.dhcpTimeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := acquire(ctx, dev, newXIDSource(dev.Attrs().HardwareAddr), firstRetry, c.logf)
	if err != nil {
		why := "no answer"
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nclient4.ErrNoResponse) {
			why = err.Error()
		}
		c.problem("no DHCP lease within %s (%s): is a DHCP server on this network? DHCP keeps asking in the background", timeout, why)
		return
	}
	for _, msg := range configureLease(dev, p, c.nic) {
		c.problem("%s", msg)
	}
	l := c.nic.Lease
	c.logf("network: %s (%s): DHCP lease %s from %s, router %s", c.nic.Name, c.nic.MAC, l.Address, l.Server, l.Router)
}

// configureLease configures the address, routes and DNS servers of lease
// p on dev and records them in nic; it returns the problems.
func configureLease(dev netlink.Link, p *dhclient.Packet4, nic *NIC) []string {
	var problems []string
	l := &Lease{Address: p.Lease().String()}
	msg := p.P
	if err := netlink.AddrReplace(dev, &netlink.Addr{IPNet: p.Lease()}); err != nil {
		return []string{fmt.Sprintf("add leased address %s: %v", l.Address, err)}
	}
	if routes := msg.ClasslessStaticRoute(); routes != nil {
		for _, rt := range routes {
			r := &netlink.Route{LinkIndex: dev.Attrs().Index, Dst: rt.Dest, Gw: rt.Router}
			if r.Gw == nil || r.Gw.Equal(net.IPv4zero) {
				r.Scope = netlink.SCOPE_LINK
			}
			if err := netlink.RouteReplace(r); err != nil {
				problems = append(problems, fmt.Sprintf("add route %s from the lease: %v", rt.Dest, err))
			}
		}
	} else if gw := msg.Router(); len(gw) > 0 {
		l.Router = gw[0].String()
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: dev.Attrs().Index, Gw: gw[0]}); err != nil {
			problems = append(problems, fmt.Sprintf("add default route via %s from the lease: %v", gw[0], err))
		}
		nic.Gateway = l.Router
	}
	ns, _, domain := p.GatherDNSSettings()
	for _, n := range ns {
		l.DNS = append(l.DNS, n.String())
	}
	l.Domain = domain
	if id := msg.ServerIdentifier(); id != nil {
		l.Server = id.String()
	}
	l.Seconds = int(msg.IPAddressLeaseTime(0).Seconds())
	nic.Lease = l
	nic.Addresses = []string{l.Address}
	return problems
}

// ethernetLinks lists the machine's Ethernet NICs (not loopback, not VLANs
// or bridges), sorted by name.
func ethernetLinks() ([]netlink.Link, error) {
	var links []netlink.Link
	var err error
	for range 5 {
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list network links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.EncapType != "ether" || len(a.HardwareAddr) != 6 || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		switch l.Type() {
		case "device", "veth":
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attrs().Name < out[j].Attrs().Name })
	return out, nil
}

func describeLinks(links []netlink.Link) string {
	if len(links) == 0 {
		return "no Ethernet NIC"
	}
	var s []string
	for _, l := range links {
		s = append(s, l.Attrs().Name+" "+l.Attrs().HardwareAddr.String())
	}
	return strings.Join(s, ", ")
}

func driver(l netlink.Link) string {
	if p, err := os.Readlink(filepath.Join("/sys/class/net", l.Attrs().Name, "device/driver")); err == nil {
		return filepath.Base(p)
	}
	return l.Type()
}

func linkState(l netlink.Link) string {
	switch l.Attrs().OperState {
	case netlink.OperUp:
		return "up"
	case netlink.OperDown, netlink.OperLowerLayerDown:
		if l.Attrs().Flags&net.FlagUp != 0 {
			return "no carrier"
		}
	}
	return "down"
}

// vlanDevice returns the VLAN device for id on top of parent, creating it.
func vlanDevice(parent netlink.Link, id, mtu int) (netlink.Link, error) {
	name := fmt.Sprintf("%s.%d", parent.Attrs().Name, id)
	if len(name) > 15 {
		name = fmt.Sprintf("vlan%d.%d", parent.Attrs().Index, id)
	}
	if l, err := netlink.LinkByName(name); err == nil {
		return l, netlink.LinkSetUp(l)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.ParentIndex = parent.Attrs().Index
	if mtu > 0 {
		attrs.MTU = mtu
	}
	if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: id}); err != nil {
		return nil, err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	return l, netlink.LinkSetUp(l)
}

// waitCarrier waits until l is operationally up.
func waitCarrier(ctx context.Context, l netlink.Link, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cur, err := netlink.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return fmt.Errorf("link vanished: %w", err)
		}
		if s := cur.Attrs().OperState; s == netlink.OperUp || s == netlink.OperUnknown && cur.Attrs().RawFlags&0x10000 != 0 {
			return nil // IFF_LOWER_UP
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no link (carrier) after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitDAD waits for IPv6 duplicate address detection on ip to finish.
func waitDAD(ctx context.Context, l netlink.Link, ip netip.Addr) error {
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return nil
		}
		for _, a := range addrs {
			if !a.IP.Equal(net.IP(ip.AsSlice())) {
				continue
			}
			const ifaDADFailed, ifaTentative = 0x08, 0x40
			if a.Flags&ifaDADFailed != 0 {
				return fmt.Errorf("address %s is already in use on the network (IPv6 duplicate address detection failed): not configured", ip)
			}
			if a.Flags&ifaTentative == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func writeResolvConf(path string, dns, search []string) error {
	var b strings.Builder
	b.WriteString("# written by rewind-init\n")
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write DNS settings to %s: %w", path, err)
	}
	return nil
}
