package initramfs

// Boot menus and GRUB images for the ISO, USB and PXE media. GRUB comes
// from Debian's grub-pc-bin (BIOS) and grub-efi-amd64-bin (UEFI x86-64)
// packages; grub-mkimage assembles the images offline from their modules.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// GRUBDir holds GRUB's per-platform module directories.
var GRUBDir = "/usr/lib/grub"

// BaseCmdline is on every menu entry: the kernel and Rewind's messages go
// to the screen and to the first serial port (headless servers, QEMU).
// /dev/console is the last console=, so the serial port gets the shell.
const BaseCmdline = "console=tty0 console=ttyS0,115200n8 quiet"

// ShellCmdline makes a boot open the rescue shell without touching a disk:
// no prompt, the default is abort, and after it the shell.
const ShellCmdline = "rewind.countdown=0 rewind.default=abort rewind.after=shell"

// CaptureCmdline makes a boot capture the machine's disks as its plan
// entry describes them (where each disk's snapshot goes), whatever the
// entry's own action says.
const CaptureCmdline = "rewind.action=capture"

// MenuEntry is one boot menu entry.
type MenuEntry struct {
	ID      string // restore, shell, capture
	Title   string
	Cmdline string
}

// Menu returns the boot menu: "Restore or capture, as the plan says" (the default; the countdown
// then runs as the plan says), "Rescue shell", and "Capture this
// machine". extra is appended to every command line; the shell and
// capture entries leave out extra's keys that they set themselves, since
// the rescue flow refuses a key given twice.
func Menu(extra string) []MenuEntry {
	cl := func(s ...string) string { return strings.Join(cmdlineFields(strings.Join(s, " ")), " ") }
	return []MenuEntry{
		{ID: "restore", Title: "Rewind: Restore or capture, as the plan says", Cmdline: cl(BaseCmdline, extra)},
		{ID: "shell", Title: "Rewind: Rescue shell", Cmdline: cl(BaseCmdline, withoutKeysOf(extra, ShellCmdline), ShellCmdline)},
		{ID: "capture", Title: "Rewind: Capture this machine", Cmdline: cl(BaseCmdline, withoutKeysOf(extra, CaptureCmdline), CaptureCmdline)},
	}
}

// withoutKeysOf returns the fields of extra whose keys the command line
// own does not set.
func withoutKeysOf(extra, own string) string {
	keys := make(map[string]bool)
	for _, f := range cmdlineFields(own) {
		key, _, _ := strings.Cut(f, "=")
		keys[key] = true
	}
	var kept []string
	for _, f := range cmdlineFields(extra) {
		if key, _, _ := strings.Cut(f, "="); !keys[key] {
			kept = append(kept, f)
		}
	}
	return strings.Join(kept, " ")
}

// cmdlineFields splits a kernel command line at white space outside
// double quotes, keeping the quotes.
func cmdlineFields(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// grubConfig is boot/grub/grub.cfg: a menu on the screen and the serial
// port that picks Restore after timeout seconds, so the only countdown a
// person meets is Rewind's own.
func grubConfig(entries []MenuEntry, timeout int, kernel, initrd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Rewind rescue media (rewind media build)
if serial --unit=0 --speed=115200; then
	terminal_input --append serial
	terminal_output --append serial
fi
set default=0
set timeout=%d
set timeout_style=menu
`, timeout)
	for _, e := range entries {
		fmt.Fprintf(&b, "\nmenuentry '%s' --id %s {\n\techo 'Loading the Rewind rescue environment...'\n\tlinux %s %s\n\tinitrd %s\n}\n",
			e.Title, e.ID, kernel, e.Cmdline, initrd)
	}
	return b.String()
}

// ipxeScript is boot.ipxe: the same menu, loading the kernel and the
// initramfs relative to the script's own URL (TFTP or HTTP alike).
func ipxeScript(entries []MenuEntry, timeout int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!ipxe\n# Rewind rescue environment (rewind media build --format pxe)\n\nmenu Rewind\n")
	for _, e := range entries {
		fmt.Fprintf(&b, "item %s %s\n", e.ID, e.Title)
	}
	fmt.Fprintf(&b, "choose --default %s --timeout %d entry || goto %s\ngoto ${entry}\n", entries[0].ID, timeout*1000, entries[0].ID)
	for _, e := range entries {
		fmt.Fprintf(&b, "\n:%s\nkernel vmlinuz initrd=initramfs.cpio.gz %s\ninitrd initramfs.cpio.gz\nboot || goto failed\n", e.ID, e.Cmdline)
	}
	b.WriteString("\n:failed\necho Booting Rewind failed; dropping to the iPXE shell\nshell\n")
	return b.String()
}

// grubModules are built into both GRUB images, so neither needs a module
// directory on the media.
var grubModules = []string{
	"normal", "linux", "configfile", "echo", "test", "ls", "cat", "sleep", "halt", "reboot",
	"search", "search_fs_uuid", "search_fs_file", "search_label",
	"part_gpt", "part_msdos", "fat", "iso9660", "serial", "terminal", "gzio",
}

var grubPlatformModules = map[string][]string{
	"i386-pc":    {"biosdisk"},
	"x86_64-efi": {"efi_gop", "efi_uga", "all_video"},
}

// grubImage runs grub-mkimage for platform (i386-pc or x86_64-efi) with
// prefix as GRUB's $prefix, and returns the image.
func grubImage(ctx context.Context, platform, prefix string) ([]byte, error) {
	return grubImageAs(ctx, platform, platform, prefix)
}

// grubImageAs runs grub-mkimage with platform's modules for the image
// format (i386-pc-eltorito: a CD's El Torito boot image).
func grubImageAs(ctx context.Context, platform, format, prefix string) ([]byte, error) {
	tmp, err := os.CreateTemp("", "rewind-grub-*.img")
	if err != nil {
		return nil, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	args := []string{"-d", GRUBDir + "/" + platform, "-O", format, "-o", tmp.Name(), "-p", prefix}
	args = append(append(args, grubModules...), grubPlatformModules[platform]...)
	if err := runTool(ctx, "grub-mkimage", args...); err != nil {
		return nil, err
	}
	return os.ReadFile(tmp.Name())
}

// runTool runs a packaged tool; a failure carries its output and, when
// the tool is missing, the package to install.
func runTool(ctx context.Context, name string, args ...string) error {
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("%s is not installed (Debian package %s; scripts/setup.sh installs it)", name, toolPackage[name])
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

var toolPackage = map[string]string{
	"grub-mkimage":  "grub-common, with grub-pc-bin and grub-efi-amd64-bin",
	"grub-mkrescue": "grub-common, with grub-pc-bin, grub-efi-amd64-bin, xorriso and mtools",
	"xorriso":       "xorriso",
	"sgdisk":        "gdisk",
	"mkfs.vfat":     "dosfstools",
	"mcopy":         "mtools",
	"mmd":           "mtools",
}

// checkGRUB reports a missing GRUB platform directory with the package
// that provides it.
func checkGRUB(platforms ...string) error {
	pkg := map[string]string{"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}
	for _, p := range platforms {
		if _, err := os.Stat(GRUBDir + "/" + p + "/linux.mod"); err != nil {
			return fmt.Errorf("GRUB for %s is not installed in %s/%s (Debian package %s; scripts/setup.sh installs it)", p, GRUBDir, p, pkg[p])
		}
	}
	return nil
}
