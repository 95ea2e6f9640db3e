// Package netcfg configures the rescue environment's network from a plan
// that names interfaces by MAC address, never by kernel name: static IPv4
// and IPv6 addresses, gateways, DNS, MTU and VLANs, or DHCPv4, plus a
// default for the NICs the plan does not name. It applies the settings with
// netlink and reports, per NIC, what it did and what went wrong.
package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Defaults for NICs the plan does not name.
const (
	DefaultDHCP = "dhcp"
	DefaultNone = "none"
)

// Config is the [network] table of a plan.
type Config struct {
	// Default is what NICs that no Interface names get: "dhcp" or "none"
	// ("" means none).
	Default string `toml:"default" json:"default,omitempty"`
	// DHCPTimeout bounds one interface's DHCP exchange (default 15s).
	DHCPTimeout Duration `toml:"dhcp_timeout" json:"dhcp_timeout,omitempty"`
	// CarrierTimeout bounds the wait for a link to come up (default 10s).
	CarrierTimeout Duration    `toml:"carrier_timeout" json:"carrier_timeout,omitempty"`
	Interfaces     []Interface `toml:"interface" json:"interfaces,omitempty"`
}

// Interface is the configuration of the NIC with one MAC address.
type Interface struct {
	MAC     string   `toml:"mac" json:"mac"`
	DHCP    bool     `toml:"dhcp" json:"dhcp,omitempty"`
	Address []string `toml:"address" json:"address,omitempty"` // CIDR, IPv4 or IPv6
	Gateway string   `toml:"gateway" json:"gateway,omitempty"` // IPv4 default gateway
	// Gateway6 is the IPv6 default gateway.
	Gateway6 string   `toml:"gateway6" json:"gateway6,omitempty"`
	DNS      []string `toml:"dns" json:"dns,omitempty"`
	Search   []string `toml:"search" json:"search,omitempty"`
	MTU      int      `toml:"mtu" json:"mtu,omitempty"`
	VLAN     int      `toml:"vlan" json:"vlan,omitempty"` // 0: untagged
}

// Duration is a time.Duration written as "15s" in TOML and JSON.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: use a number with a unit, such as 15s", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Validate checks every field and returns all problems at once, each naming
// the interface by its MAC address.
func (c *Config) Validate() error {
	var errs []error
	switch c.Default {
	case "", DefaultDHCP, DefaultNone:
	default:
		errs = append(errs, fmt.Errorf("network.default is %q: use \"dhcp\" or \"none\"", c.Default))
	}
	seen := make(map[string]bool)
	for i, in := range c.Interfaces {
		where := fmt.Sprintf("network.interface[%d]", i)
		mac, err := net.ParseMAC(in.MAC)
		if err != nil || len(mac) != 6 {
			errs = append(errs, fmt.Errorf("%s: mac %q is not a MAC address like 52:54:00:12:34:56", where, in.MAC))
			continue
		}
		where = fmt.Sprintf("network.interface %s", mac)
		key := fmt.Sprintf("%s/%d", mac, in.VLAN)
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: configured twice", where))
		}
		seen[key] = true
		if in.DHCP && len(in.Address) > 0 {
			errs = append(errs, fmt.Errorf("%s: both dhcp and static addresses: choose one", where))
		}
		if !in.DHCP && len(in.Address) == 0 {
			errs = append(errs, fmt.Errorf("%s: neither dhcp = true nor an address", where))
		}
		for _, a := range in.Address {
			if _, err := netip.ParsePrefix(a); err != nil {
				errs = append(errs, fmt.Errorf("%s: address %q is not in CIDR form like 192.168.1.10/24", where, a))
			}
		}
		if in.Gateway != "" {
			if ip, err := netip.ParseAddr(in.Gateway); err != nil || !ip.Is4() {
				errs = append(errs, fmt.Errorf("%s: gateway %q is not an IPv4 address", where, in.Gateway))
			}
		}
		if in.Gateway6 != "" {
			if ip, err := netip.ParseAddr(in.Gateway6); err != nil || !ip.Is6() {
				errs = append(errs, fmt.Errorf("%s: gateway6 %q is not an IPv6 address", where, in.Gateway6))
			}
		}
		for _, d := range in.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: dns server %q is not an IP address", where, d))
			}
		}
		if in.MTU != 0 && (in.MTU < 68 || in.MTU > 65535) {
			errs = append(errs, fmt.Errorf("%s: mtu %d is outside 68..65535", where, in.MTU))
		}
		if in.VLAN < 0 || in.VLAN > 4094 {
			errs = append(errs, fmt.Errorf("%s: vlan %d is outside 0..4094", where, in.VLAN))
		}
	}
	return errors.Join(errs...)
}

// lookup returns the interfaces configured for mac (one per VLAN).
func (c *Config) lookup(mac net.HardwareAddr) []Interface {
	var out []Interface
	for _, in := range c.Interfaces {
		if m, err := net.ParseMAC(in.MAC); err == nil && strings.EqualFold(m.String(), mac.String()) {
			out = append(out, in)
		}
	}
	return out
}

func (c *Config) dhcpTimeout() time.Duration {
	if c.DHCPTimeout.Duration > 0 {
		return c.DHCPTimeout.Duration
	}
	return 15 * time.Second
}

func (c *Config) carrierTimeout() time.Duration {
	if c.CarrierTimeout.Duration > 0 {
		return c.CarrierTimeout.Duration
	}
	return 10 * time.Second
}
