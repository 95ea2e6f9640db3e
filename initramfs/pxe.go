package initramfs

// The PXE bundle: the kernel and initramfs with an iPXE script and a
// sample dnsmasq configuration. Served with 'rewind serve DIR' (HTTP) and
// dnsmasq (DHCP, TFTP), every file the script names is fetched relative to
// the script's own URL, so the same bundle boots over TFTP or HTTP.

import (
	"fmt"
	"os"
	"path/filepath"
)

func buildPXE(o BootOptions) (*BootResult, error) {
	script := filepath.Join(o.OutDir, IPXEName)
	if err := os.WriteFile(script, []byte(ipxeScript(Menu(o.Cmdline), menuTimeout(o.MenuTimeout))), 0o644); err != nil {
		return nil, err
	}
	conf := filepath.Join(o.OutDir, DnsmasqName)
	abs, err := filepath.Abs(o.OutDir)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, []byte(dnsmasqConfig(abs)), 0o644); err != nil {
		return nil, err
	}
	return &BootResult{Files: []string{script, conf, o.Kernel, o.Initramfs}}, nil
}

// dnsmasqConfig is a lab's DHCP and TFTP server for the bundle in dir:
// firmware PXE clients get iPXE over TFTP, and iPXE gets boot.ipxe.
func dnsmasqConfig(dir string) string {
	return fmt.Sprintf(`# Rewind PXE lab: dnsmasq as DHCP and TFTP server (docs/media.md).
# Adjust interface and dhcp-range to the lab network, then:
#   dnsmasq --conf-file=%[1]s/dnsmasq.conf --no-daemon
# and, for iPXE over HTTP with the snapshots next to the bundle:
#   rewind serve %[1]s --listen 0.0.0.0:8080 --report-token /etc/rewind/report.token
# (the same token as the plan's [report] token; the file outside %[1]s)
interface=eth1
bind-interfaces
port=0                              # no DNS
dhcp-range=192.168.50.100,192.168.50.200,12h
log-dhcp

enable-tftp
tftp-root=%[1]s
# Firmware PXE loads iPXE from TFTP (Debian package ipxe: copy
# /boot/ipxe.efi and /usr/lib/ipxe/undionly.kpxe into tftp-root).
dhcp-match=set:ipxe,175
dhcp-match=set:efi-x86_64,option:client-arch,7
dhcp-match=set:efi-x86_64,option:client-arch,9
dhcp-boot=tag:!ipxe,tag:efi-x86_64,ipxe.efi
dhcp-boot=tag:!ipxe,tag:!efi-x86_64,undionly.kpxe
# iPXE then runs the Rewind script, over TFTP:
dhcp-boot=tag:ipxe,boot.ipxe
# ... or over HTTP from 'rewind serve' (faster for the initramfs):
#dhcp-boot=tag:ipxe,http://192.168.50.1:8080/boot.ipxe
`, dir)
}
