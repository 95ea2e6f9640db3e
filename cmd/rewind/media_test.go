package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	} {
		code, out := rewind(t, append(append([]string{}, common...), tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("rewind media build %s: got exit %d, %q; want exit %d with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
}
