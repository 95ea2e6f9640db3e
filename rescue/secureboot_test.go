package rescue

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeRoot makes a directory that looks like / to ReadSecureBoot: the
// SecureBoot variable (attributes, then the value) when value >= 0, and
// the lockdown file when lockdown != "".
func fakeRoot(t *testing.T, efi bool, value int, lockdown string) string {
	t.Helper()
	root := t.TempDir()
	if efi {
		os.MkdirAll(filepath.Join(root, filepath.Dir(SecureBootVar)), 0o755)
		if value >= 0 {
			os.WriteFile(filepath.Join(root, SecureBootVar), []byte{6, 0, 0, 0, byte(value)}, 0o644)
		}
	}
	if lockdown != "" {
		os.MkdirAll(filepath.Join(root, filepath.Dir(LockdownFile)), 0o755)
		os.WriteFile(filepath.Join(root, LockdownFile), []byte(lockdown+"\n"), 0o644)
	}
	return root
}

func TestReadSecureBoot(t *testing.T) {
	for _, tc := range []struct {
		name     string
		efi      bool
		value    int
		lockdown string
		want     SecureBootState
	}{
		{"on, locked down", true, 1, "none [integrity] confidentiality", SecureBootState{Firmware: "on", Lockdown: "integrity"}},
		{"off", true, 0, "[none] integrity confidentiality", SecureBootState{Firmware: "off", Lockdown: "none"}},
		{"no variable", true, -1, "", SecureBootState{Firmware: "unknown"}},
		{"BIOS", false, 0, "[none] integrity confidentiality", SecureBootState{Firmware: "bios", Lockdown: "none"}},
	} {
		got := ReadSecureBoot(fakeRoot(t, tc.efi, tc.value, tc.lockdown))
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if s := (SecureBootState{Firmware: "on", Lockdown: "integrity"}).String(); s != "on (kernel lockdown: integrity)" {
		t.Errorf("String() = %q", s)
	}
}

// Modules of a drivers/ folder that the kernel refuses are reported one
// by one with the kernel's error and why, and the others still load.
func TestLoadDirReportsRefusedDrivers(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"good.ko", "unsigned.ko", "locked.ko", "other.ko"} {
		os.WriteFile(filepath.Join(dir, n), []byte("module"), 0o644)
	}
	errs := map[string]error{
		"unsigned.ko": unix.EKEYREJECTED,
		"locked.ko":   unix.EPERM,
		"other.ko":    unix.ENOEXEC,
	}
	var logged []string
	d := &Drivers{
		log:        func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) },
		secureBoot: SecureBootState{Firmware: "on", Lockdown: "integrity"},
		insmod: func(p string) error {
			return errs[filepath.Base(p)]
		},
	}
	n, err := d.LoadDir(dir)
	if n != 1 || err == nil || !strings.Contains(err.Error(), "3 of 4 modules refused") {
		t.Fatalf("LoadDir: %d, %v; want 1 loaded and 3 of 4 refused", n, err)
	}
	got := map[string]DriverRefusal{}
	for _, r := range d.Refused() {
		got[filepath.Base(r.Path)] = r
	}
	for name, want := range map[string]struct{ err, why string }{
		"unsigned.ko": {"key was rejected by service", "signed by a key it trusts"},
		"locked.ko":   {"operation not permitted", "Secure Boot is on (kernel lockdown: integrity)"},
		"other.ko":    {"exec format error", "not a module for this kernel"},
	} {
		r, ok := got[name]
		if !ok {
			t.Errorf("%s: not in Refused() %+v", name, d.Refused())
			continue
		}
		if r.Error != want.err || !strings.Contains(r.Why, want.why) {
			t.Errorf("%s: got error %q why %q, want %q and %q", name, r.Error, r.Why, want.err, want.why)
		}
	}
	if _, ok := got["good.ko"]; ok {
		t.Errorf("good.ko is reported refused")
	}
	if log := strings.Join(logged, "\n"); !strings.Contains(log, "unsigned.ko refused: key was rejected by service") {
		t.Errorf("the console does not name the refused module and the kernel's error:\n%s", log)
	}
}

// Without Secure Boot or lockdown, EPERM is not explained as lockdown.
func TestRefusalWithoutLockdown(t *testing.T) {
	r := refusal("/media/drivers/x.ko", unix.EPERM, SecureBootState{Firmware: "off", Lockdown: "none"})
	if r.Why != "" {
		t.Errorf("EPERM without lockdown: why %q, want none", r.Why)
	}
}

func TestSummarySecureBootAndRefusedDrivers(t *testing.T) {
	r := &Report{Status: StatusSuccess, Action: ActionRestore}
	r.Machine.SecureBoot = &SecureBootState{Firmware: "on", Lockdown: "integrity"}
	r.DriversRefused = []DriverRefusal{refusal("/etc/rewind/drivers/ifb.ko", unix.EPERM, *r.Machine.SecureBoot)}
	got := Summary(r)
	for _, want := range []string{
		"  Secure Boot: on (kernel lockdown: integrity)\n",
		"  Refused:   driver /etc/rewind/drivers/ifb.ko: operation not permitted: Secure Boot is on (kernel lockdown: integrity): the locked-down kernel loads only signed modules",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	r.Machine.SecureBoot = &SecureBootState{Firmware: "bios", Lockdown: "none"}
	r.DriversRefused = nil
	if got := Summary(r); strings.Contains(got, "Secure Boot") || strings.Contains(got, "Refused") {
		t.Errorf("BIOS boot without refusals: summary says\n%s", got)
	}
}
