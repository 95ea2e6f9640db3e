package rescue

import (
	"context"
	"fmt"
	"log"
	"sort"
	"time"

	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// NetworkUp brings up the loopback and asks DHCP for an IPv4 address on
// the first Ethernet interface. It is deliberately minimal: choosing NICs
// by MAC and static settings belong to netcfg/.
func NetworkUp(ctx context.Context, logf func(string, ...any)) (string, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return "", fmt.Errorf("listing network interfaces: %w", err)
	}
	var eth []netlink.Link
	for _, l := range links {
		if l.Type() == "device" && l.Attrs().Name != "lo" && len(l.Attrs().HardwareAddr) == 6 {
			eth = append(eth, l)
		}
	}
	if len(eth) == 0 {
		return "", fmt.Errorf("no network interface found: is the NIC's driver in the rescue media (--drivers)?")
	}
	sort.Slice(eth, func(i, j int) bool { return eth[i].Attrs().Name < eth[j].Attrs().Name })
	nic := eth[0]
	name := fmt.Sprintf("%s (%s)", nic.Attrs().Name, nic.Attrs().HardwareAddr)
	// dhclient logs through the standard logger; keep it off the console.
	log.SetOutput(discard{})
	cfg := dhclient.Config{Timeout: 5 * time.Second, Retries: 3}
	for r := range dhclient.SendRequests(ctx, []netlink.Link{nic}, true, false, cfg, 10*time.Second) {
		if r.Err != nil {
			return name, fmt.Errorf("DHCP on %s: %w", name, r.Err)
		}
		if err := r.Lease.Configure(); err != nil {
			return name, fmt.Errorf("configuring %s with %s: %w", name, r.Lease, err)
		}
		logf("network: %s: %s", name, r.Lease)
		return name, nil
	}
	return name, fmt.Errorf("DHCP on %s: no answer; check the cable and the DHCP server", name)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
