package qemutests

// These tests boot the media 'rewind media build --format pxe|iso|usb'
// writes, the way a machine does: through its firmware and boot loader,
// with no -kernel. The VMs (q35, TCG, 1 GiB) have:
//
//	firmware   SeaBIOS, or OVMF (UEFI) with a copy of OVMF_VARS.fd
//	medium     the USB image on qemu-xhci + usb-storage, the ISO on an AHCI
//	           CD-ROM or as a USB disk, or PXE: QEMU's iPXE ROM on virtio-net,
//	           with QEMU's user network (restrict=on) serving the bundle
//	           over TFTP and the snapshot over HTTP (guestfwd to 127.0.0.1)
//	target     blank 64 MiB virtio disk, serial target1
//
// The medium's plan counts down 2 s and restores when the count ends; the
// boot menu starts "Restore" after 1 s and passes rewind.after=poweroff on
// the kernel command line. The host checks that the countdown was shown,
// that the target's extents and sfdisk --dump equal the source's, and that
// the report says success.
//
// 'go test' runs the USB image under SeaBIOS; REWIND_QEMU_ALL=1 the rest.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/rescue"
)

// mediaPlan counts down, so that the test sees Rewind's own prompt after
// the boot menu, and restores when the count ends.
func mediaPlan(snapshot string) string {
	return fmt.Sprintf(`
[countdown]
seconds = 2
default = "restore"
[[machine]]
name = "pc1"
snapshot = %q
target = "serial=target1"
`, snapshot)
}

// buildMedium runs what 'rewind media build --format FORMAT' runs and
// returns the output directory and the file to boot (the image, or the
// PXE bundle's directory).
func buildMedium(t *testing.T, format, plan string, withSnapshot bool) (dir, medium string) {
	t.Helper()
	dir, medium, _ = buildMediumOf(t, format, plan, withSnapshot, shared.kernel)
	return dir, medium
}

// mediumDrivers is the drivers directory buildMediumOf puts into the
// initramfs, "" for none.
type mediumDrivers string

// buildMediumOf builds the medium around kernel and also returns what the
// build says about Secure Boot.
func buildMediumOf(t *testing.T, format, plan string, withSnapshot bool, kernel string, drivers ...mediumDrivers) (dir, medium string, sb initramfs.SecureBoot) {
	t.Helper()
	for _, tool := range []string{"sgdisk", "mkfs.vfat", "mcopy", "grub-mkimage", "grub-mkrescue", "xorriso"} {
		if _, err := os.Stat("/usr/bin/" + tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil && format != initramfs.FormatPXE {
				t.Skipf("%s is not installed (scripts/setup.sh)", tool)
			}
		}
	}
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	bootDir := dir
	if format != initramfs.FormatPXE {
		bootDir = filepath.Join(dir, "boot")
	}
	start := time.Now()
	// As 'rewind media build' does: the medium's identity in the initramfs.
	id := initramfs.NewMediaID(format, []byte(t.Name()), start)
	mo := initramfs.MediaOptions{Base: base, Kernel: kernel, Plan: []byte(plan), MediaID: id, OutDir: bootDir}
	if len(drivers) > 0 {
		mo.DriversDir = string(drivers[0])
	}
	res, err := initramfs.BuildMedia(mo)
	if err != nil {
		t.Fatal(err)
	}
	opts := initramfs.BootOptions{
		Format: format, Kernel: res.Kernel, Initramfs: res.Initramfs,
		Cmdline: "rewind.after=poweroff", MenuTimeout: 1, MediaID: id, OutDir: dir,
	}
	if withSnapshot {
		opts.Snapshot = shared.snap
	}
	out, err := initramfs.BuildBoot(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s media in %.1fs: %s; secure boot %s", format, time.Since(start).Seconds(), out.Files[0], out.SecureBoot)
	if format == initramfs.FormatPXE {
		return dir, dir, out.SecureBoot
	}
	return dir, out.Files[0], out.SecureBoot
}

// bootMedium boots vm (no kernel: the firmware finds the medium) and
// checks that Rewind counted down and restored the target. It returns the
// console and the report.
func bootMedium(t *testing.T, vm *VM, target string) (string, *rescue.Report) {
	t.Helper()
	vm.LogPath = filepath.Join(t.TempDir(), "console.log")
	if vm.Timeout == 0 {
		vm.Timeout = 150 * time.Second
	}
	out := runLogged(t, vm, " (firmware, boot loader, rescue, restore)")
	if !strings.Contains(out, "Press any key to restore now") {
		t.Errorf("the console shows no countdown prompt")
	}
	r := consoleReport(t, out)
	if !strings.HasPrefix(r.Countdown, "restore") {
		t.Errorf("countdown ended %q, want restore when the count ended", r.Countdown)
	}
	wantRestored(t, target, r)
	return out, r
}

// wantSecureBoot checks the rescue environment's Secure Boot line on the
// console and in the report.
func wantSecureBoot(t *testing.T, out string, r *rescue.Report, want rescue.SecureBootState) {
	t.Helper()
	if line := "secure boot: " + want.String(); !strings.Contains(out, line) {
		t.Errorf("the console does not show %q", line)
	}
	if r.Machine.SecureBoot == nil || *r.Machine.SecureBoot != want {
		t.Errorf("report machine.secure_boot = %+v, want %+v", r.Machine.SecureBoot, want)
	}
}

func uefiVars(t *testing.T) string {
	t.Helper()
	p, err := OVMFVars(t.TempDir())
	if err != nil {
		t.Skip(err)
	}
	return p
}

func mediaVM(medium, bus, target string) *VM {
	return &VM{Drives: []Drive{{Path: medium, Bus: bus, Boot: true}, {Path: target, Serial: "target1"}}}
}

// The USB image (GPT: BIOS boot, EFI system, REWIND) as a USB disk under
// SeaBIOS: boot.img in the MBR, GRUB's core image in the BIOS boot
// partition; the snapshot is on the REWIND partition, the report goes there.
func TestMediaUSBImageBIOS(t *testing.T) {
	setup(t, false)
	_, img := buildMedium(t, initramfs.FormatUSB, mediaPlan("media:/snapshots/pc1"), true)
	target := blank(t)
	bootMedium(t, mediaVM(img, "usb", target), target)
}

// An internal disk labelled REWIND (an AHCI disk, /dev/sda, ahead of the
// USB stick's /dev/sdb) is not the rescue medium: the medium is known by
// the identity the initramfs records, the volume ID of the USB image's
// REWIND partition. The decoy holds no snapshot; taking it for the medium
// would fail the restore.
func TestMediaIdentityIgnoresInternalREWIND(t *testing.T) {
	setup(t, false)
	_, img := buildMedium(t, initramfs.FormatUSB, mediaPlan("media:/snapshots/pc1"), true)
	dir := t.TempDir()
	decoyPlan := filepath.Join(dir, "plan.toml")
	os.WriteFile(decoyPlan, []byte("# not the rescue medium's plan\n"), 0o644)
	decoy := filepath.Join(dir, "decoy.img")
	if err := USBStick(decoy, 64<<20, map[string]string{"/rewind/plan.toml": decoyPlan}); err != nil {
		t.Fatal(err)
	}
	target := blank(t)
	vm := &VM{Drives: []Drive{{Path: decoy, Bus: "ahci"}, {Path: img, Bus: "usb", Boot: true}, {Path: target, Serial: "target1"}}}
	vm.LogPath = filepath.Join(t.TempDir(), "console.log")
	vm.Timeout = 150 * time.Second
	out := runLogged(t, vm, " (firmware, boot loader, rescue, restore)")
	r := consoleReport(t, out)
	wantRestored(t, target, r)
	if line := regexp.MustCompile(`media: /dev/sd[a-z]3 \(vfat\)[^\r\n]*`).FindString(out); line == "" {
		t.Errorf("the console does not show the USB image's REWIND partition (/dev/sdX3) as the medium")
	} else {
		t.Logf("console: %s", line)
	}
	if b, err := StickFile(decoy, "/rewind/reports/last.json"); err == nil {
		t.Errorf("the decoy REWIND disk got a report: %.80s", b)
	}
}

// The same image under OVMF without Secure Boot: EFI/BOOT/BOOTX64.EFI
// (shim) on the EFI system partition starts GRUB unchecked; the
// unsigned drivers/ module loads (no lockdown).
func TestMediaUSBImageUEFI(t *testing.T) {
	setup(t, true)
	drivers := lockdownDrivers(t)
	_, img, _ := buildMediumOf(t, initramfs.FormatUSB, mediaPlan("media:/snapshots/pc1"), true, shared.kernel, drivers)
	target := blank(t)
	vm := mediaVM(img, "usb", target)
	vm.UEFIVars = uefiVars(t)
	out, r := bootMedium(t, vm, target)
	wantSecureBoot(t, out, r, rescue.SecureBootState{Firmware: "off", Lockdown: "none"})
	// Without lockdown the unsigned module loads too.
	if len(r.DriversRefused) != 0 {
		t.Errorf("drivers refused without Secure Boot: %+v", r.DriversRefused)
	}
}

// lockdownDrivers is a drivers directory for the initramfs with two of
// the kernel's modules that nothing else loads: dummy.ko as the kernel
// signed it, and ifb.ko with its signature cut off.
func lockdownDrivers(t *testing.T) mediumDrivers {
	t.Helper()
	mods := filepath.Join("/lib/modules", shared.modules.Release, "kernel/drivers/net")
	dir := t.TempDir()
	signed, err := os.ReadFile(filepath.Join(mods, "dummy.ko"))
	if err != nil {
		t.Skip(err)
	}
	os.WriteFile(filepath.Join(dir, "dummy.ko"), signed, 0o644)
	b, err := os.ReadFile(filepath.Join(mods, "ifb.ko"))
	if err != nil {
		t.Skip(err)
	}
	// A signed module ends with the signature, struct module_signature
	// (12 bytes, the signature's length big-endian in the last 4) and
	// the marker.
	const marker = "~Module signature appended~\n"
	if !strings.HasSuffix(string(b), marker) {
		t.Fatalf("%s/ifb.ko is not signed", mods)
	}
	end := len(b) - len(marker)
	n := int(binary.BigEndian.Uint32(b[end-4 : end]))
	os.WriteFile(filepath.Join(dir, "ifb.ko"), b[:end-12-n], 0o644)
	return mediumDrivers(dir)
}

// wantLockdownRefusal checks that the locked-down kernel loaded the
// signed module and refused the unsigned one, and that the report says why.
func wantLockdownRefusal(t *testing.T, out string, r *rescue.Report) {
	t.Helper()
	var ifb *rescue.DriverRefusal
	for i, d := range r.DriversRefused {
		switch filepath.Base(d.Path) {
		case "ifb.ko":
			ifb = &r.DriversRefused[i]
		case "dummy.ko":
			t.Errorf("the signed dummy.ko was refused: %+v", d)
		}
	}
	if ifb == nil {
		t.Fatalf("report drivers_refused = %+v, want the unsigned ifb.ko", r.DriversRefused)
	}
	if !strings.Contains(ifb.Why, "Secure Boot is on") && !strings.Contains(ifb.Why, "signed by a key it trusts") {
		t.Errorf("ifb.ko refused with %q, why %q: want the signature check named", ifb.Error, ifb.Why)
	}
	if !strings.Contains(out, "ifb.ko refused: "+ifb.Error) {
		t.Errorf("the console does not name ifb.ko and the kernel's error %q", ifb.Error)
	}
	t.Logf("console: %s", lineWith(out, "ifb.ko refused"))
}

// The hybrid ISO on a CD-ROM under SeaBIOS (El Torito, GRUB's cdboot).
func TestMediaISOCDBIOS(t *testing.T) {
	setup(t, true)
	_, iso := buildMedium(t, initramfs.FormatISO, mediaPlan("media:/snapshots/pc1"), true)
	target := blank(t)
	bootMedium(t, mediaVM(iso, "cdrom", target), target)
}

// The hybrid ISO on a CD-ROM under OVMF (El Torito EFI image).
func TestMediaISOCDUEFI(t *testing.T) {
	setup(t, true)
	_, iso := buildMedium(t, initramfs.FormatISO, mediaPlan("media:/snapshots/pc1"), true)
	target := blank(t)
	vm := mediaVM(iso, "cdrom", target)
	vm.UEFIVars = uefiVars(t)
	bootMedium(t, vm, target)
}

// The hybrid ISO written to a USB stick, as 'rewind usb --create' does,
// under SeaBIOS (the ISO's MBR boot code) and OVMF (its EFI partition).
func TestMediaISOAsUSBDisk(t *testing.T) {
	setup(t, true)
	_, iso := buildMedium(t, initramfs.FormatISO, mediaPlan("media:/snapshots/pc1"), true)
	for _, fw := range []string{"bios", "uefi"} {
		t.Run(fw, func(t *testing.T) {
			target := blank(t)
			vm := mediaVM(iso, "usb", target)
			if fw == "uefi" {
				vm.UEFIVars = uefiVars(t)
			}
			bootMedium(t, vm, target)
		})
	}
}

// PXE: QEMU's iPXE ROM gets boot.ipxe from the bundle over TFTP (QEMU's
// user network: DHCP and TFTP, restrict=on), the script loads the kernel
// and initramfs next to it, and the plan fetches the snapshot over HTTP.
func TestMediaPXE(t *testing.T) {
	setup(t, true)
	mux := http.NewServeMux()
	mux.Handle("/snapshots/", http.StripPrefix("/snapshots/", http.FileServer(http.Dir(filepath.Dir(shared.snap)))))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	bundle, _ := buildMedium(t, initramfs.FormatPXE, mediaPlan(GuestServer+"/snapshots/pc1"), false)
	target := blank(t)
	vm := &VM{
		HTTPPort: ln.Addr().(*net.TCPAddr).Port,
		TFTP:     bundle, BootFile: initramfs.IPXEName,
		Drives: []Drive{{Path: target, Serial: "target1"}},
	}
	bootMedium(t, vm, target)
}

// The boot menu's "Rescue shell" entry, chosen on the serial console
// (GRUB draws its menu there too): no countdown, no disk touched, the
// rescue shell starts. QEMU is stopped once it does.
func TestMediaRescueShellEntry(t *testing.T) {
	setup(t, true)
	_, img := buildMedium(t, initramfs.FormatUSB, mediaPlan("media:/snapshots/pc1"), true)
	target := blank(t)
	vm := mediaVM(img, "usb", target)
	vm.Keys = []Key{{When: "Rewind: Rescue shell", Send: "\x1b[B"}, {When: "Rewind: Rescue shell", Send: "\r", Delay: 300 * time.Millisecond}}
	vm.StopWhen = "Starting the rescue shell"
	vm.LogPath = filepath.Join(t.TempDir(), "console.log")
	vm.Timeout = 150 * time.Second
	start := time.Now()
	out, err := vm.Run(context.Background())
	t.Logf("QEMU ran for %.1fs", time.Since(start).Seconds())
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(out, "Press any key to restore now") {
		t.Errorf("the rescue shell entry showed the countdown")
	}
	wantUntouched(t, target, consoleReport(t, out), rescue.StatusAborted)
}

// The rescue shell menu entry touches no disk.
func TestMediaMenuHasShell(t *testing.T) {
	menu := initramfs.Menu("")
	if len(menu) != 3 || menu[0].ID != "restore" || menu[1].ID != "shell" {
		t.Fatalf("menu %+v, want restore, shell, then capture", menu)
	}
	o, err := rescue.ParseCmdline(menu[1].Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	if o.Default != rescue.DefaultAbort || o.After != rescue.AfterShell || o.Countdown == nil || *o.Countdown != 0 {
		t.Errorf("shell entry %q: overrides %+v, want countdown 0, default abort, after shell", menu[1].Cmdline, o)
	}
}

func secureBootVars(t *testing.T) string {
	t.Helper()
	p, err := OVMFSecureBootVars(t.TempDir())
	if err != nil {
		t.Skip(err)
	}
	return p
}

// The USB image under OVMF with Secure Boot on and Microsoft's keys
// enrolled: the firmware checks shim (Microsoft's UEFI CA), shim checks
// Debian's GRUB and, through GRUB, Debian's kernel (Debian's CA, shim's
// vendor certificate). The rescue environment sees Secure Boot on and the
// kernel locked down, loads the initramfs' signed drivers/ module and
// reports the unsigned one refused (lockdownDrivers).
func TestMediaUSBImageSecureBoot(t *testing.T) {
	setup(t, false)
	if _, err := initramfs.FindSignedChain(); err != nil {
		t.Skip(err)
	}
	_, img, sb := buildMediumOf(t, initramfs.FormatUSB, mediaPlan("media:/snapshots/pc1"), true, shared.kernel, lockdownDrivers(t))
	if !sb.Boots {
		t.Fatalf("media build says %q, want it to boot under Secure Boot", sb)
	}
	target := blank(t)
	vm := mediaVM(img, "usb", target)
	vm.UEFIVars, vm.SecureBoot = secureBootVars(t), true
	vm.Timeout = 300 * time.Second
	out, r := bootMedium(t, vm, target)
	wantSecureBoot(t, out, r, rescue.SecureBootState{Firmware: "on", Lockdown: "integrity"})
	wantLockdownRefusal(t, out, r)
}

// unsignedKernel is a copy of the kernel with its signature removed
// (sbattach --remove).
func unsignedKernel(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("sbattach"); err != nil {
		t.Skip("sbattach is not installed (sbsigntool; scripts/setup.sh)")
	}
	k := filepath.Join(t.TempDir(), filepath.Base(shared.kernel))
	b, err := os.ReadFile(shared.kernel)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sbattach", "--remove", k).CombinedOutput(); err != nil {
		t.Fatalf("sbattach --remove %s: %v\n%s", k, err, out)
	}
	return k
}

// The same USB image around a kernel whose signature was removed: media
// build says it will not boot under Secure Boot, and under Secure Boot
// shim (through GRUB) refuses the kernel; no rescue environment starts.
// QEMU is stopped once GRUB shows the refusal.
func TestMediaUSBImageSecureBootRefusesUnsignedKernel(t *testing.T) {
	setup(t, true)
	if _, err := initramfs.FindSignedChain(); err != nil {
		t.Skip(err)
	}
	_, img, sb := buildMediumOf(t, initramfs.FormatUSB, mediaPlan("media:/snapshots/pc1"), true, unsignedKernel(t))
	if sb.Boots || !strings.Contains(sb.Why, "not signed") {
		t.Errorf("media build says %q, want no: ... not signed", sb)
	}
	target := blank(t)
	vm := mediaVM(img, "usb", target)
	vm.UEFIVars, vm.SecureBoot = secureBootVars(t), true
	vm.StopWhen = "bad shim signature"
	vm.Timeout = 240 * time.Second
	vm.LogPath = filepath.Join(t.TempDir(), "console.log")
	out := runLogged(t, vm, " (firmware, shim, GRUB refusing the kernel)")
	if !strings.Contains(out, vm.StopWhen) {
		t.Fatalf("the console does not show GRUB's %q", vm.StopWhen)
	}
	if strings.Contains(out, "Rewind rescue environment starting") {
		t.Errorf("the unsigned kernel booted under Secure Boot")
	}
	t.Logf("console: %s", lineWith(out, vm.StopWhen))
}

// lineWith returns the console line holding s.
func lineWith(out, s string) string {
	i := strings.Index(out, s)
	if i < 0 {
		return ""
	}
	start := strings.LastIndexAny(out[:i], "\r\n") + 1
	end := strings.IndexAny(out[i:], "\r\n")
	if end < 0 {
		end = len(out) - i
	}
	return out[start : i+end]
}

// The ISO under OVMF with Secure Boot on: as a CD (El Torito EFI image:
// shim, Debian's gcdx64 as grubx64.efi, which finds the ISO by
// /.disk/info) and written to a USB stick (the same image as the EFI
// partition of the ISO's partition table).
func TestMediaISOSecureBoot(t *testing.T) {
	setup(t, true)
	if _, err := initramfs.FindSignedChain(); err != nil {
		t.Skip(err)
	}
	_, iso, sb := buildMediumOf(t, initramfs.FormatISO, mediaPlan("media:/snapshots/pc1"), true, shared.kernel)
	if !sb.Boots {
		t.Fatalf("media build says %q, want it to boot under Secure Boot", sb)
	}
	for _, bus := range []string{"cdrom", "usb"} {
		t.Run(bus, func(t *testing.T) {
			target := blank(t)
			vm := mediaVM(iso, bus, target)
			vm.UEFIVars, vm.SecureBoot = secureBootVars(t), true
			vm.Timeout = 300 * time.Second
			out, r := bootMedium(t, vm, target)
			wantSecureBoot(t, out, r, rescue.SecureBootState{Firmware: "on", Lockdown: "integrity"})
		})
	}
}

// PXE with Secure Boot on: OVMF's own PXE (the NIC has no iPXE ROM, see
// VM.FirmwarePXE) boots shimx64.efi over TFTP (QEMU's user network,
// restrict=on), shim Debian's signed network GRUB (grubx64.efi
// next to it), which reads grub/grub.cfg and loads the kernel and the
// initramfs over TFTP; the plan fetches the snapshot over HTTP.
func TestMediaPXESecureBoot(t *testing.T) {
	setup(t, true)
	if _, err := initramfs.FindSignedChain(); err != nil {
		t.Skip(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/snapshots/", http.StripPrefix("/snapshots/", http.FileServer(http.Dir(filepath.Dir(shared.snap)))))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	bundle, _, sb := buildMediumOf(t, initramfs.FormatPXE, mediaPlan(GuestServer+"/snapshots/pc1"), false, shared.kernel)
	if !sb.Boots {
		t.Fatalf("media build says %q, want it to boot under Secure Boot", sb)
	}
	target := blank(t)
	vm := &VM{
		HTTPPort: ln.Addr().(*net.TCPAddr).Port,
		TFTP:     bundle, BootFile: initramfs.PXEShimName, FirmwarePXE: true,
		Drives: []Drive{{Path: target, Serial: "target1"}},
	}
	vm.UEFIVars, vm.SecureBoot = secureBootVars(t), true
	vm.Timeout = 480 * time.Second
	out, r := bootMedium(t, vm, target)
	wantSecureBoot(t, out, r, rescue.SecureBootState{Firmware: "on", Lockdown: "integrity"})
}

// TestMediaISOStickIgnoresOtherDiskInfo (found by attacking the Secure
// Boot ISO): the ISO on a stick, booted by UEFI through shim and Debian's
// gcdx64, next to another disk that has a /.disk/info and a GRUB menu (an
// installer stick, say): Rewind's own menu boots and restores, never the
// other disk's.
func TestMediaISOStickIgnoresOtherDiskInfo(t *testing.T) {
	setup(t, true)
	_, iso := buildMedium(t, initramfs.FormatISO, mediaPlan("media:/snapshots/pc1"), true)
	dir := t.TempDir()
	decoy := filepath.Join(dir, "decoy.img")
	cfg := filepath.Join(dir, "grub.cfg")
	info := filepath.Join(dir, "info")
	os.WriteFile(cfg, []byte("echo DECOY-MENU-FROM-ANOTHER-DISK\nmenuentry DECOY { halt }\n"), 0o644)
	os.WriteFile(info, []byte("Debian GNU/Linux 12 installer\n"), 0o644)
	for _, c := range [][]string{
		{"truncate", "-s", "64M", decoy}, {"mkfs.vfat", "-n", "DECOY", decoy},
		{"mmd", "-i", decoy, "::/.disk", "::/boot", "::/boot/grub"},
		{"mcopy", "-i", decoy, info, "::/.disk/info"}, {"mcopy", "-i", decoy, cfg, "::/boot/grub/grub.cfg"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	// Both on virtio, the other disk first, and no boot order given (a
	// bootindex makes OVMF connect the boot disk alone, and GRUB would
	// not see the other one): OVMF tries the other disk, finds no EFI
	// loader on it, boots the ISO, and GRUB can search both.
	target := blank(t)
	vm := mediaVM(iso, "virtio", target)
	vm.Drives[0].Boot = false
	vm.Drives = append([]Drive{{Path: decoy, Serial: "decoy"}}, vm.Drives...)
	vm.UEFIVars = uefiVars(t)
	out, _ := bootMedium(t, vm, target)
	if strings.Contains(out, "DECOY-MENU") {
		t.Fatal("the other disk's GRUB menu was loaded")
	}
}
