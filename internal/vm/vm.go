// Package vm runs QEMU for Rewind: the rescue environment and restored
// machines, on virtual disks, with the serial console logged. Guests run
// under TCG unless VM.Accel asks for KVM (see ProbeKVM).
// It is shared by rewind drill; qemu-tests keeps its own copy for now.
package vm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Drive is a virtual disk attached to the VM.
type Drive struct {
	Path   string // raw image file
	Bus    string // virtio (default), nvme, ahci, usb, cdrom (AHCI CD-ROM, read-only)
	Serial string
	Boot   bool // the firmware boots this drive first (bootindex=0)
}

// Key is input typed on the serial console once the console shows When.
type Key struct {
	When  string
	Send  string
	Delay time.Duration // after When appeared
}

// VM describes one boot.
type VM struct {
	Kernel  string
	Initrd  string
	Cmdline string // appended to "console=ttyS0 quiet panic=-1"
	Drives  []Drive
	// HTTPPort, when set, gives the guest a NIC on QEMU's user network
	// with restrict=on; the only host it can reach is 10.0.2.100:80,
	// forwarded to 127.0.0.1:HTTPPort.
	HTTPPort int
	// MAC is the HTTPPort NIC's MAC address (default: QEMU's).
	MAC string
	// NICs are more NICs, each on its own user network (restrict=on).
	NICs []NIC
	// UUID is the machine's DMI system UUID (-uuid).
	UUID string
	// UEFIVars, when set, boots OVMF (UEFI) instead of SeaBIOS, with
	// this writable copy of OVMF_VARS.fd (see OVMFVars).
	UEFIVars string
	// TFTP, when set, is served by QEMU's user network on the first NIC,
	// whose DHCP names BootFile, and the firmware boots that NIC first
	// (PXE with QEMU's iPXE ROM).
	TFTP     string
	BootFile string
	// StopWhen, when set, stops QEMU once the console shows it; Run then
	// returns the console without an error.
	StopWhen string
	// StopMatch, when set, stops QEMU once the console matches it, as
	// StopWhen does; Matched then reports true.
	StopMatch *regexp.Regexp
	// Until, when set, is called about every 50 ms with the console so
	// far; QEMU is stopped once it returns true, as with StopWhen.
	Until func(console string) bool
	// Monitor, when set, is a Unix socket path for QEMU's human monitor
	// (see MonitorCommand).
	Monitor string
	Keys    []Key
	// Accel is QEMU's accelerator: "tcg" (the default when empty) or
	// "kvm".
	Accel string
	// FirmwareLog, when set, receives SeaBIOS's debug console (I/O port
	// 0x402): its boot messages ("Booting from Hard Disk...", "Boot
	// failed: not a bootable disk", "No bootable device.") appear there
	// and not on the serial console.
	FirmwareLog string
	// TCPForwards, when set (and neither HTTPPort nor TFTP), give the
	// guest a NIC on QEMU's user network with restrict=on: the guest
	// reaches nothing, and each host port on 127.0.0.1 is forwarded to
	// its guest port (10.0.2.15).
	TCPForwards []TCPForward
	MemoryMB    int
	Timeout     time.Duration
	LogPath     string    // the serial console is copied here
	Echo        io.Writer // and here, live (the demo), if set

	// DefaultCPU boots QEMU's default CPU model instead of -cpu max: no
	// RDRAND, so without an RNG device the guest kernel's random pool
	// fills slowly, as on the SeaBIOS ISO boot of issue 10.
	DefaultCPU bool
}

// TCPForward forwards 127.0.0.1:Host on the host to the guest's port Guest.
type TCPForward struct{ Host, Guest int }

// NIC is an extra network card on its own QEMU user network, with
// restrict=on. With HTTPPort set, Net's .100 address port 80 reaches
// 127.0.0.1:HTTPPort on the host, as GuestServer does on the first NIC.
type NIC struct {
	MAC      string
	Net      string // e.g. "10.0.3.0/24"; QEMU's DHCP server answers there
	HTTPPort int
}

// GuestServer is the address the guest reaches the host's server at.
const GuestServer = "http://10.0.2.100"

// Kernel returns the Debian kernel to boot, or "".
func Kernel() string {
	if k := os.Getenv("REWIND_KERNEL"); k != "" {
		return k
	}
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(ks) == 0 {
		return ""
	}
	return ks[len(ks)-1]
}

const relayEnv = "REWIND_QEMU_RELAY"

// RelayMain must be called first by every program that runs VMs with
// HTTPPort (TestMain, the demo): QEMU starts the program again per guest
// connection, with the connection on stdin and stdout, to relay it to the
// host's server on the loopback.
func RelayMain() {
	addr := os.Getenv(relayEnv)
	if addr == "" {
		return
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		os.Exit(1)
	}
	go func() {
		io.Copy(conn, os.Stdin)
		conn.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(os.Stdout, conn)
	os.Exit(0)
}

// Args returns QEMU's command line.
func (v *VM) Args() []string {
	mem := v.MemoryMB
	if mem == 0 {
		mem = 1024
	}
	accel := v.Accel
	if accel == "" {
		accel = "tcg"
	}
	args := []string{
		"-machine", "q35", "-accel", accel, "-cpu", "max", "-smp", "1", "-m", fmt.Sprint(mem),
		"-nographic", "-no-reboot",
	}
	if v.DefaultCPU {
		args = slices.Delete(args, 4, 6) // no "-cpu max"
	}
	// Without a kernel, the firmware boots a drive or the network.
	if v.Kernel != "" {
		args = append(args, "-kernel", v.Kernel, "-initrd", v.Initrd,
			"-append", strings.TrimSpace("console=ttyS0 quiet panic=-1 "+v.Cmdline))
	}
	if v.UEFIVars != "" {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+v.UEFIVars)
	}
	if v.FirmwareLog != "" {
		args = append(args, "-chardev", "file,id=fwlog,path="+v.FirmwareLog, "-device", "isa-debugcon,iobase=0x402,chardev=fwlog")
	}
	usb, ahciPort := false, 0
	for i, d := range v.Drives {
		id := fmt.Sprintf("d%d", i)
		media := ""
		if d.Bus == "cdrom" {
			media = ",media=cdrom,readonly=on"
		}
		args = append(args, "-drive", fmt.Sprintf("file=%s,format=raw,if=none,id=%s,cache=unsafe%s", d.Path, id, media))
		serial := ""
		if d.Serial != "" {
			serial = ",serial=" + d.Serial
		}
		if d.Boot {
			serial += ",bootindex=0"
		}
		switch d.Bus {
		case "", "virtio":
			args = append(args, "-device", "virtio-blk-pci,drive="+id+serial)
		case "nvme":
			if serial == "" {
				serial = ",serial=nvme" + id
			}
			args = append(args, "-device", "nvme,drive="+id+serial)
		case "ahci":
			// q35 has an AHCI controller built in.
			args = append(args, "-device", fmt.Sprintf("ide-hd,drive=%s,bus=ide.%d%s", id, ahciPort, serial))
			ahciPort++
		case "cdrom":
			args = append(args, "-device", fmt.Sprintf("ide-cd,drive=%s,bus=ide.%d%s", id, ahciPort, serial))
			ahciPort++
		case "usb":
			if !usb {
				args = append(args, "-device", "qemu-xhci,id=xhci")
				usb = true
			}
			args = append(args, "-device", "usb-storage,bus=xhci.0,removable=on,drive="+id+serial)
		default:
			panic("unknown bus " + d.Bus)
		}
	}
	if v.HTTPPort != 0 {
		// guestfwd to a chardev ("-tcp:127.0.0.1:PORT") carries a single
		// stream that every guest connection would share; "-cmd:" starts
		// a relay per connection instead: this program, in relay mode.
		exe, _ := os.Executable()
		args = append(args,
			"-netdev", fmt.Sprintf("user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:/usr/bin/env %s=127.0.0.1:%d %s", relayEnv, v.HTTPPort, exe)+v.tftpOpt(),
			"-device", "virtio-net-pci,netdev=n0"+macOpt(v.MAC)+v.pxeBootOpt())
	} else if v.TFTP != "" {
		args = append(args, "-netdev", "user,id=n0,restrict=on"+v.tftpOpt(), "-device", "virtio-net-pci,netdev=n0"+macOpt(v.MAC)+v.pxeBootOpt())
	} else if len(v.TCPForwards) > 0 {
		netdev := "user,id=n0,restrict=on"
		for _, f := range v.TCPForwards {
			netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.Host, f.Guest)
		}
		args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"+macOpt(v.MAC))
	} else if len(v.NICs) == 0 {
		args = append(args, "-nic", "none")
	}
	for i, n := range v.NICs {
		id := fmt.Sprintf("n%d", i+1)
		netdev := fmt.Sprintf("user,id=%s,restrict=on,net=%s", id, n.Net)
		if n.HTTPPort != 0 {
			exe, _ := os.Executable()
			netdev += fmt.Sprintf(",guestfwd=tcp:%s:80-cmd:/usr/bin/env %s=127.0.0.1:%d %s", hostOn(n.Net, 100), relayEnv, n.HTTPPort, exe)
		}
		args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev="+id+macOpt(n.MAC))
	}
	if v.UUID != "" {
		args = append(args, "-uuid", v.UUID)
	}
	if v.Monitor != "" {
		args = append(args, "-monitor", "unix:"+v.Monitor+",server=on,wait=off")
	}
	return args
}

// OVMFCode is the UEFI firmware (Debian package ovmf).
const OVMFCode = "/usr/share/OVMF/OVMF_CODE.fd"

// OVMFVars copies OVMF's variable store template into dir, for VM.UEFIVars.
func OVMFVars(dir string) (string, error) {
	b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd")
	if err != nil {
		return "", fmt.Errorf("OVMF is not installed (scripts/setup.sh): %w", err)
	}
	p := filepath.Join(dir, "OVMF_VARS.fd")
	return p, os.WriteFile(p, b, 0o644)
}

func (v *VM) tftpOpt() string {
	if v.TFTP == "" {
		return ""
	}
	return fmt.Sprintf(",tftp=%s,bootfile=%s", v.TFTP, v.BootFile)
}

func (v *VM) pxeBootOpt() string {
	if v.TFTP == "" {
		return ""
	}
	return ",bootindex=0"
}

func macOpt(mac string) string {
	if mac == "" {
		return ""
	}
	return ",mac=" + mac
}

// hostOn returns address .n of an IPv4 /24 network such as "10.0.3.0/24".
func hostOn(network string, n int) string {
	prefix := strings.TrimSuffix(network[:strings.LastIndex(network, ".")], "/")
	return fmt.Sprintf("%s.%d", prefix, n)
}

// Run boots the VM until it powers off or reboots (QEMU exits), or the
// timeout passes. It returns the console output.
func (v *VM) Run(ctx context.Context) (string, error) {
	timeout := v.Timeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", v.Args()...)
	// QEMU dies with its parent, even a killed one: no guest runs on
	// unattended with no timeout left.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out syncBuffer
	var logw io.Writer = &out
	if v.LogPath != "" {
		f, err := os.Create(v.LogPath)
		if err != nil {
			return "", err
		}
		defer f.Close()
		logw = io.MultiWriter(&out, f)
	}
	if v.Echo != nil {
		logw = io.MultiWriter(logw, v.Echo)
	}
	cmd.Stdout, cmd.Stderr = logw, logw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() {
		for _, k := range v.Keys {
			for !strings.Contains(out.String(), k.When) {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(k.Delay)
			io.WriteString(stdin, k.Send)
		}
	}()
	var stopped atomic.Bool
	if v.StopWhen != "" || v.StopMatch != nil || v.Until != nil {
		done := func() bool {
			if v.Until != nil && v.Until(out.String()) {
				return true
			}
			if v.StopMatch != nil {
				return v.StopMatch.MatchString(out.String())
			}
			return v.StopWhen != "" && strings.Contains(out.String(), v.StopWhen)
		}
		go func() {
			for !done() {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			stopped.Store(true)
			cmd.Process.Kill()
		}()
	}
	err = cmd.Wait()
	stdin.Close()
	if stopped.Load() {
		return out.String(), nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		return out.String(), &TimeoutError{timeout}
	}
	if err != nil {
		return out.String(), fmt.Errorf("QEMU: %v", err)
	}
	return out.String(), nil
}

// TimeoutError is Run's error when QEMU was killed at VM.Timeout.
type TimeoutError struct{ Timeout time.Duration }

func (e *TimeoutError) Error() string { return fmt.Sprintf("QEMU did not finish within %s", e.Timeout) }

// LastLines returns the last n non-empty lines of a console log, joined
// with " | ", for an error message.
func LastLines(out string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "(the console is empty)"
	}
	return strings.Join(lines, " | ")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
