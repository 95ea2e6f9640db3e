package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/initramfs"
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

// media build says in one line whether the medium boots under Secure
// Boot: yes around Debian's signed kernel, no around the same kernel with
// its signature removed (sbattach --remove), naming the --kernel given.
func TestMediaBuildSecureBootLine(t *testing.T) {
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		t.Skip("no kernel in /boot")
	}
	for _, tool := range []string{"sbattach", "sgdisk", "mkfs.vfat", "mcopy", "grub-mkimage"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh)", tool)
		}
	}
	if _, err := initramfs.FindSignedChain(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.toml")
	os.WriteFile(plan, []byte("[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n"), 0o644)
	base := filepath.Join(dir, "base.cpio.gz") // never booted here
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte("base"))
	w.Close()
	os.WriteFile(base, gz.Bytes(), 0o644)
	unsigned := filepath.Join(dir, "vmlinuz-unsigned")
	b, err := os.ReadFile(kernels[len(kernels)-1])
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(unsigned, b, 0o644)
	if out, err := exec.Command("sbattach", "--remove", unsigned).CombinedOutput(); err != nil {
		t.Fatalf("sbattach --remove: %v\n%s", err, out)
	}
	for _, tc := range []struct{ kernel, want string }{
		{kernels[len(kernels)-1], "\nsecure boot yes: shim (Microsoft UEFI CA) -> GRUB -> kernel signed by "},
		{unsigned, "\nsecure boot no: kernel " + unsigned + ": not signed (no Authenticode signature)"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		code, text := rewind(t, "media", "build", "--plan", plan, "--kernel", tc.kernel, "--base", base, "--no-modules", "--format", "usb", "-o", out)
		if code != 0 || !strings.Contains(text, tc.want) || strings.Count(text, "secure boot") != 1 {
			t.Errorf("media build --kernel %s: exit %d, output\n%s\nwant one line %q", tc.kernel, code, text, strings.TrimSpace(tc.want))
		}
	}
}
