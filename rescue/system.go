package rescue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// MountBasics mounts the kernel file systems and tmpfs directories the
// rescue environment needs. Already mounted ones are left as they are.
func MountBasics() error {
	mounts := []struct {
		fstype, dir, data string
		flags             uintptr
	}{
		{"proc", "/proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "mode=0755", unix.MS_NOSUID},
		{"devpts", "/dev/pts", "newinstance,ptmxmode=0666", unix.MS_NOSUID | unix.MS_NOEXEC},
		{"tmpfs", "/run", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/tmp", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
	}
	var errs []error
	for _, m := range mounts {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fstype, m.dir, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err))
		}
	}
	MountSecurityFS()
	os.Symlink("/proc/self/fd", "/dev/fd")
	os.Symlink("/proc/self/fd/0", "/dev/stdin")
	os.Symlink("/proc/self/fd/1", "/dev/stdout")
	os.Symlink("/proc/self/fd/2", "/dev/stderr")
	return errors.Join(errs...)
}

// MountSecurityFS mounts where Secure Boot and lockdown show
// (ReadSecureBoot), when the kernel has them: the EFI variables read-only
// (nothing here writes them; Debian builds efivarfs as a module, so this
// runs again once it is loaded), and securityfs. Mounted ones stay.
func MountSecurityFS() {
	if _, err := os.Stat("/sys/firmware/efi/efivars"); err == nil {
		unix.Mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	if _, err := os.Stat("/sys/kernel/security"); err == nil {
		unix.Mount("securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
}

// ConsolePaths returns the devices of the console= entries on the kernel
// command line (ttyS0,115200n8 -> /dev/ttyS0; tty0 -> /dev/tty0), or
// /dev/console when there are none.
func ConsolePaths(cmdline string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range splitCmdline(cmdline) {
		v, ok := strings.CutPrefix(f, "console=")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(v, ",")
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, "/dev/"+name)
	}
	if len(out) == 0 {
		out = []string{"/dev/console"}
	}
	return out
}

// TTY is an open console device.
type TTY struct {
	*os.File
	saved *unix.Termios
}

// OpenConsoles opens every console device that exists.
func OpenConsoles(paths []string) []*TTY {
	var out []*TTY
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		out = append(out, &TTY{File: f})
	}
	return out
}

// KeyMode makes the terminal deliver single key presses without echo; it
// keeps output processing so that log lines still end properly.
func (t *TTY) KeyMode() {
	raw, err := t.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		tio, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			return
		}
		saved := *tio
		t.saved = &saved
		tio.Lflag &^= unix.ICANON | unix.ECHO
		tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
		unix.IoctlSetTermios(int(fd), unix.TCSETS, tio)
	})
}

// Restore undoes KeyMode.
func (t *TTY) Restore() {
	if t.saved == nil {
		return
	}
	raw, err := t.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) { unix.IoctlSetTermios(int(fd), unix.TCSETS, t.saved) })
	t.saved = nil
}

// Logger writes each line to every console and to the kernel log.
type Logger struct {
	mu       sync.Mutex
	consoles []io.Writer
	kmsg     io.Writer
	extra    []string // every line, for the report's log
}

// NewLogger returns a logger on the consoles and /dev/kmsg.
func NewLogger(consoles []io.Writer) *Logger {
	l := &Logger{consoles: consoles}
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		l.kmsg = f
	}
	return l
}

// Printf logs one line.
func (l *Logger) Printf(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.consoles {
		fmt.Fprintf(c, "rewind: %s\r\n", msg)
	}
	if l.kmsg != nil {
		// Level 6 (info) stays off the console under "quiet".
		fmt.Fprintf(l.kmsg, "<6>rewind: %s\n", msg)
	}
}

// Event logs one line from a message and key-value pairs, the calling
// convention of restore.Options.Log and snapshot.OpenOptions.Log:
// Event("retrying", "chunk", 7) logs "retrying chunk=7".
func (l *Logger) Event(msg string, args ...any) {
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	if len(args)%2 == 1 {
		fmt.Fprintf(&b, " %v", args[len(args)-1])
	}
	l.Printf("%s", b.String())
}

// Write writes raw text (the progress bar, the summary) to every console.
func (l *Logger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.ReplaceAll(string(p), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	for _, c := range l.consoles {
		io.WriteString(c, s)
	}
	return len(p), nil
}

// ReadIdentity reads the machine's MAC addresses and DMI identity.
func ReadIdentity() Identity {
	var id Identity
	nets, _ := filepath.Glob("/sys/class/net/*")
	sort.Strings(nets)
	for _, n := range nets {
		if filepath.Base(n) == "lo" {
			continue
		}
		if mac := readSys(n, "address"); mac != "" && mac != "00:00:00:00:00:00" {
			id.MACs = append(id.MACs, mac)
		}
	}
	dmi := "/sys/class/dmi/id"
	id.DMIUUID = readSys(dmi, "product_uuid")
	id.Vendor = readSys(dmi, "sys_vendor")
	id.Product = readSys(dmi, "product_name")
	id.Serial = readSys(dmi, "product_serial")
	return id
}

// KernelCmdline returns /proc/cmdline.
func KernelCmdline() string {
	b, _ := os.ReadFile("/proc/cmdline")
	return strings.TrimSpace(string(b))
}

// Shell runs the rescue shell on tty until it exits.
func Shell(tty string) error {
	f, err := os.OpenFile(tty, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		sh = "/bbin/gosh"
	}
	cmd := exec.Command(sh)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
	cmd.Env = append(os.Environ(), "PATH=/bbin:/bin:/ubin:/usr/bin:/sbin", "HOME=/root", "TERM=linux")
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	return cmd.Run()
}

// Halt syncs the disks and reboots or powers off. It returns only if the
// kernel refuses.
func Halt(after string) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if after == AfterPoweroff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	return unix.Reboot(cmd)
}

// waitFor polls cond every 100 ms until it is true or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
