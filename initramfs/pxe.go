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
	files := []string{script}
	efiBoot := "ipxe.efi"
	if c := o.chain; c != nil {
		// UEFI clients boot shim over TFTP, shim grubx64.efi (Debian's
		// signed network GRUB) next to it, and that GRUB
		// grub/grub.cfg from the TFTP server.
		efiBoot = PXEShimName
		if err := os.MkdirAll(filepath.Join(o.OutDir, "grub"), 0o755); err != nil {
			return nil, err
		}
		cfg := filepath.Join(o.OutDir, "grub", "grub.cfg")
		if err := os.WriteFile(cfg, []byte(grubConfig(Menu(o.Cmdline), menuTimeout(o.MenuTimeout), "/vmlinuz", "/initramfs.cpio.gz")), 0o644); err != nil {
			return nil, err
		}
		for _, cp := range [][2]string{{c.Shim, PXEShimName}, {c.GRUBNet, "grubx64.efi"}, {c.MokManager, "mmx64.efi"}} {
			dst := filepath.Join(o.OutDir, cp[1])
			if err := copyFile(dst, cp[0]); err != nil {
				return nil, err
			}
			files = append(files, dst)
		}
		files = append(files, cfg)
	}
	conf := filepath.Join(o.OutDir, DnsmasqName)
	abs, err := filepath.Abs(o.OutDir)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, []byte(dnsmasqConfig(abs, efiBoot)), 0o644); err != nil {
		return nil, err
	}
	return &BootResult{Files: append(files, conf, o.Kernel, o.Initramfs)}, nil
}

// PXEShimName is the boot file of UEFI PXE clients in a bundle with the
// signed chain.
const PXEShimName = "shimx64.efi"

// dnsmasqConfig is a lab's DHCP and TFTP server for the bundle in dir:
// firmware PXE clients get iPXE over TFTP (UEFI ones efiBoot: iPXE, or
// shim with the signed chain), and iPXE gets boot.ipxe.
func dnsmasqConfig(dir, efiBoot string) string {
	efiNote := `# Firmware PXE loads iPXE from TFTP (Debian package ipxe: copy
# /boot/ipxe.efi and /usr/lib/ipxe/undionly.kpxe into tftp-root).`
	if efiBoot == PXEShimName {
		efiNote = `# UEFI clients boot shim, then Debian's signed GRUB (grubx64.efi, reading
# grub/grub.cfg), with Secure Boot on or off; BIOS clients iPXE (Debian
# package ipxe: copy /usr/lib/ipxe/undionly.kpxe into tftp-root).`
	}
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
%[2]s
dhcp-match=set:ipxe,175
dhcp-match=set:efi-x86_64,option:client-arch,7
dhcp-match=set:efi-x86_64,option:client-arch,9
dhcp-boot=tag:!ipxe,tag:efi-x86_64,%[3]s
dhcp-boot=tag:!ipxe,tag:!efi-x86_64,undionly.kpxe
# iPXE then runs the Rewind script, over TFTP:
dhcp-boot=tag:ipxe,boot.ipxe
# ... or over HTTP from 'rewind serve' (faster for the initramfs):
#dhcp-boot=tag:ipxe,http://192.168.50.1:8080/boot.ipxe
`, dir, efiNote, efiBoot)
}
