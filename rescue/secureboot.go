package rescue

// Secure Boot as the rescue environment sees it: the firmware's
// SecureBoot variable and the kernel's lockdown. Under Secure Boot,
// Debian's kernel locks itself down (integrity), and then loads only
// modules signed by a key it trusts: a plan's drivers/ built for another
// kernel, or signed by no one, are refused (DriverRefusal).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Where the kernel shows Secure Boot and lockdown.
const (
	// SecureBootVar is EFI's global SecureBoot variable in efivarfs: 4
	// bytes of attributes, then 1 when Secure Boot is on.
	SecureBootVar = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
	LockdownFile  = "sys/kernel/security/lockdown"
	efiDir        = "sys/firmware/efi"
)

// SecureBootState is the report's secure_boot.
type SecureBootState struct {
	// Firmware is "on", "off", or "bios" (no EFI), "unknown" when the
	// variable could not be read.
	Firmware string `json:"firmware"`
	// Lockdown is the kernel's lockdown mode: none, integrity,
	// confidentiality; "" when the kernel has no lockdown.
	Lockdown string `json:"lockdown,omitempty"`
}

// On is true when the firmware booted with Secure Boot on.
func (s SecureBootState) On() bool { return s.Firmware == "on" }

// String is the console's line: "on (kernel lockdown: integrity)".
func (s SecureBootState) String() string {
	l := s.Lockdown
	if l == "" {
		l = "not available"
	}
	return fmt.Sprintf("%s (kernel lockdown: %s)", s.Firmware, l)
}

// ReadSecureBoot reads the state under root ("/" in the rescue
// environment; tests pass a directory that looks like it). It mounts
// nothing: efivarfs and securityfs are mounted by MountBasics.
func ReadSecureBoot(root string) SecureBootState {
	var s SecureBootState
	if _, err := os.Stat(filepath.Join(root, efiDir)); err != nil {
		s.Firmware = "bios"
	} else if b, err := os.ReadFile(filepath.Join(root, SecureBootVar)); err != nil || len(b) < 5 {
		s.Firmware = "unknown"
	} else if b[4] == 1 {
		s.Firmware = "on"
	} else {
		s.Firmware = "off"
	}
	if b, err := os.ReadFile(filepath.Join(root, LockdownFile)); err == nil {
		// "none [integrity] confidentiality": the mode in brackets.
		for _, f := range strings.Fields(string(b)) {
			if strings.HasPrefix(f, "[") {
				s.Lockdown = strings.Trim(f, "[]")
			}
		}
	}
	return s
}

// DriverRefusal is a module from a drivers/ folder the kernel did not load.
type DriverRefusal struct {
	Path  string `json:"path"`
	Error string `json:"error"`
	// Why explains the error when it is the kernel's signature check.
	Why string `json:"why,omitempty"`
}

// refusal describes a module load error.
func refusal(path string, err error, sb SecureBootState) DriverRefusal {
	r := DriverRefusal{Path: path, Error: err.Error()}
	switch {
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY), errors.Is(err, unix.EKEYEXPIRED):
		r.Why = "the kernel requires modules signed by a key it trusts, and this one is not (sign it with the kernel's key, or enroll the signing key as a MOK)"
	case (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && (sb.On() || sb.Lockdown != "" && sb.Lockdown != "none"):
		r.Why = fmt.Sprintf("Secure Boot is %s: the locked-down kernel loads only signed modules (sign it with a key the kernel trusts, or enroll the signing key as a MOK)", sb)
	case errors.Is(err, unix.ENOEXEC):
		r.Why = "not a module for this kernel (built for another kernel release, or not a module)"
	}
	return r
}
