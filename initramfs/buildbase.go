package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CoreCommands are the u-root commands of the rescue shell. Each must also
// be imported by tools.go so that go.mod and go.sum keep what it needs and
// offline builds work.
var CoreCommands = []string{
	"cat", "chmod", "cp", "df", "dhclient", "dmesg", "echo", "find", "free", "gosh", "grep", "gzip",
	"head", "hexdump", "insmod", "ip", "kill", "ln", "ls", "lsdrivers", "lsmod", "mkdir", "mknod",
	"more", "mount", "mv", "pci", "poweroff", "ps", "pwd", "readlink", "rm", "rmmod", "shasum",
	"shutdown", "sleep", "sync", "tail", "tee", "uname", "umount", "wc", "wget",
}

// RewindCommands are Rewind's own commands in the base archive, relative
// to the module root.
var RewindCommands = []string{"./cmd/rewind-init", "./cmd/rewind"}

// BuildBase builds the base archive with u-root from the module at root
// (the directory holding go.mod) and writes it gzip-compressed to out.
// /init is rewind-init; the rescue shell is u-root's gosh.
func BuildBase(ctx context.Context, root, out string) error {
	tmp, err := os.MkdirTemp("", "rewind-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cpio := filepath.Join(tmp, "base.cpio")
	args := []string{"tool", "u-root", "-o", cpio, "-initcmd=rewind-init", "-uinitcmd=", "-defaultsh=gosh"}
	for _, c := range CoreCommands {
		args = append(args, "github.com/u-root/u-root/cmds/core/"+c)
	}
	for _, c := range RewindCommands {
		if _, err := os.Stat(filepath.Join(root, c)); err == nil {
			args = append(args, c)
		}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	// GOAMD64=v1: the rescue environment must run on any x86-64 machine.
	cmd.Env = append(os.Environ(), "GOAMD64=v1", "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("u-root build failed: %v\n%s", err, log.Bytes())
	}
	raw, err := os.ReadFile(cpio)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
