package netcfg

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestConfigFromTOML(t *testing.T) {
	const plan = `
default = "dhcp"
dhcp_timeout = "7s"
[[interface]]
mac = "52:54:00:12:34:56"
address = ["192.168.77.10/24", "fd00::10/64"]
gateway = "192.168.77.1"
dns = ["192.168.77.1"]
mtu = 1500
vlan = 0
[[interface]]
mac = "52:54:00:12:34:57"
dhcp = true
`
	var c Config
	if _, err := toml.Decode(plan, &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid plan refused: %v", err)
	}
	if c.dhcpTimeout().Seconds() != 7 || len(c.Interfaces) != 2 || !c.Interfaces[1].DHCP || c.Interfaces[0].Address[1] != "fd00::10/64" {
		t.Errorf("decoded %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"bad default", Config{Default: "auto"}, `network.default is "auto"`},
		{"bad mac", Config{Interfaces: []Interface{{MAC: "52:54:00", DHCP: true}}}, `mac "52:54:00" is not a MAC address`},
		{"dhcp and static", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01", DHCP: true, Address: []string{"10.0.0.1/24"}}}}, "52:54:00:00:00:01: both dhcp and static"},
		{"nothing", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01"}}}, "neither dhcp"},
		{"address without prefix", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01", Address: []string{"10.0.0.1"}}}}, `address "10.0.0.1" is not in CIDR form`},
		{"v6 gateway in gateway", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01", Address: []string{"10.0.0.1/24"}, Gateway: "fd00::1"}}}, "not an IPv4 address"},
		{"mtu", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01", DHCP: true, MTU: 20}}}, "mtu 20"},
		{"vlan", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01", DHCP: true, VLAN: 5000}}}, "vlan 5000"},
		{"twice", Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:01", DHCP: true}, {MAC: "52:54:00:00:00:01", DHCP: true}}}, "configured twice"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
	}
}
