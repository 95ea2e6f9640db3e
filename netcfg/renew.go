package netcfg

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// RenewOptions controls KeepLeases.
type RenewOptions struct {
	// Every overrides the renewal interval (default: half of each lease).
	Every time.Duration
	// Log receives a line per renewal and per failure; may be nil.
	Log func(format string, args ...any)
}

// KeepLeases renews every DHCP lease in rep at half its lifetime until
// ctx ends, asking for the same address, so that a restore that runs for
// hours does not lose its address to another machine. A renewal that
// fails is retried at the next interval; a server that hands out another
// address gets it configured (the restore's HTTP reads retry through the
// change).
func KeepLeases(ctx context.Context, rep *Report, opts RenewOptions) {
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for _, n := range rep.NICs {
		if n.Lease == nil {
			continue
		}
		dev := n.Name
		if n.Device != "" {
			dev = n.Device
		}
		every := opts.Every
		if every <= 0 {
			every = max(time.Duration(n.Lease.Seconds)*time.Second/2, 30*time.Second)
		}
		go keepLease(ctx, dev, n.MAC, n.Lease.Address, every, logf)
	}
}

func keepLease(ctx context.Context, dev, mac, address string, every time.Duration, logf func(string, ...any)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		got, err := renew(ctx, dev, address, every)
		switch {
		case err != nil:
			logf("network: %s (%s): renewing the DHCP lease of %s failed: %v; trying again in %s", dev, mac, address, err, every)
		case got != address:
			logf("network: %s (%s): the DHCP server replaced lease %s with %s", dev, mac, address, got)
			address = got
		default:
			logf("network: %s (%s): DHCP lease %s renewed", dev, mac, address)
		}
	}
}

// renew asks the DHCP server on dev for address again and configures the
// address it grants.
func renew(ctx context.Context, dev, address string, timeout time.Duration) (string, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return "", err
	}
	ip, _, err := net.ParseCIDR(address)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, time.Minute))
	defer cancel()
	conf := dhclient.Config{Timeout: 3 * time.Second, Retries: 3,
		Modifiers4: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))}}
	for r := range dhclient.SendRequests(ctx, []netlink.Link{l}, true, false, conf, 5*time.Second) {
		if r.Err != nil {
			err = r.Err
			continue
		}
		p, ok := r.Lease.(*dhclient.Packet4)
		if !ok || p.Lease() == nil {
			return "", fmt.Errorf("the DHCP answer holds no IPv4 address")
		}
		if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: p.Lease()}); err != nil {
			return "", err
		}
		return p.Lease().String(), nil
	}
	if err == nil {
		err = fmt.Errorf("no answer")
	}
	return "", err
}
