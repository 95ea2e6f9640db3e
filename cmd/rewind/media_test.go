package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/snapshot"
)

func TestMediaBuildFormatUsage(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.toml")
	os.WriteFile(plan, []byte("[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n"), 0o644)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	common := []string{"media", "build", "--plan", plan, "--kernel", "/boot/vmlinuz", "--base", file}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--format", "floppy", "-o", dir}, 2, "--format floppy: use one of initramfs, pxe, iso, usb"},
		{[]string{"--format", "pxe", "--snapshot", dir, "-o", dir}, 2, "--snapshot puts a snapshot on an iso or usb medium"},
		{[]string{"--format", "usb", "--data-size", "lots", "-o", dir}, 2, "--data-size"},
		{[]string{"--format", "usb", "--secure-boot", "maybe", "-o", dir}, 2, "--secure-boot maybe: use auto, require or off"},
	} {
		code, out := rewind(t, append(append([]string{}, common...), tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("rewind media build %s: got exit %d, %q; want exit %d with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
}

// media build refuses a plan that would fail at boot, before it writes
// anything: the error names the plan, the machine and the field.
func TestMediaBuildValidatesPlan(t *testing.T) {
	dir := t.TempDir()
	_, pub, err := snapshot.GenerateKey(filepath.Join(dir, "lab"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	const pc1 = "[[machine]]\nname = \"pc1\"\nsnapshot = \"http://10.0.0.1/pc1\"\n"
	for _, tc := range []struct {
		name, plan string
		trust      bool
		want       string
	}{
		{"http install without sha256, --trust", pc1 + "[[machine.install_file]]\nsource = \"http://10.0.0.1/x\"\ndest = \"part:1:/x\"\n", true,
			"machine pc1: install_file http://10.0.0.1/x is fetched over the network without a sha256"},
		{"bad MAC", pc1 + "[machine.match]\nmac = [\"52:54:00\"]\n", false, `machine pc1 match.mac "52:54:00"`},
		{"setuid", pc1 + "[[machine.install_file]]\nsource = \"media:/x\"\ndest = \"part:1:/x\"\nmode = \"4755\"\n", false, "sets the setuid"},
	} {
		plan := filepath.Join(dir, "plan.toml")
		os.WriteFile(plan, []byte(tc.plan), 0o644)
		out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-"))
		args := []string{"media", "build", "--plan", plan, "--kernel", "/boot/vmlinuz", "--base", file, "-o", out}
		if tc.trust {
			args = append(args, "--trust", pub)
		}
		code, msg := rewind(t, args...)
		if code == 0 || !strings.Contains(msg, plan+": plan machine") || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: got exit %d, %q; want a failure naming %s and %q", tc.name, code, msg, plan, tc.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: %s was created", tc.name, out)
		}
	}
}
