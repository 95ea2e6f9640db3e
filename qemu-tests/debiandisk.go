package qemutests

// The Debian 12 system disk of TestDrillDebianBootsToLogin: a real
// installed system, built once with debootstrap and cached in
// /root/.cache/rewind-test/debian12-VERSION/ (BuildDebianDisk):
//
//	debootstrap  bookworm, minbase plus linux-image-amd64, systemd-sysv
//	             and udev, from REWIND_DEBIAN_MIRROR or deb.debian.org
//	configure    /etc/fstab (the root by UUID), /etc/hostname; the serial
//	             getty comes from systemd's getty generator (console=ttyS0)
//	partition    an MBR: one bootable Linux partition from 1 MiB
//	mkfsExt4     mkfs.ext4 -d of the tree at the partition's offset
//	installGRUB  GRUB for BIOS as the busybox system disk has it, and a
//	             grub.cfg booting the installed kernel and initrd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// debianDiskVersion keys the cache: bump it when the disk changes.
const debianDiskVersion = "debian12-v1"

const (
	debianDiskSize = 2 << 30
	debianUUID     = "5e5d15c0-0012-4012-8012-0000000000de"
	// DebianHostname is the restored system's name, in its login prompt.
	DebianHostname = "drill-debian"
)

// CachedDebianDisk returns the Debian disk image, building it on the
// first call (several minutes: debootstrap downloads about 150 MB).
func CachedDebianDisk(ctx context.Context, logf func(string, ...any)) (string, error) {
	cache := filepath.Join("/root/.cache/rewind-test", debianDiskVersion)
	img := filepath.Join(cache, "debian.img")
	if _, err := os.Stat(filepath.Join(cache, "done")); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	logf("building the Debian 12 system disk with debootstrap (cached in %s)", cache)
	if err := BuildDebianDisk(ctx, img, logf); err != nil {
		return "", err
	}
	return img, os.WriteFile(filepath.Join(cache, "done"), nil, 0o644)
}

// BuildDebianDisk writes the Debian disk to path.
func BuildDebianDisk(ctx context.Context, path string, logf func(string, ...any)) error {
	mirror := os.Getenv("REWIND_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "root")
	var rel string
	steps := []struct {
		name string
		run  func() error
	}{
		{"debootstrap bookworm from " + mirror, func() error {
			out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=linux-image-amd64,systemd-sysv,udev",
				"bookworm", tree, mirror).CombinedOutput()
			if err != nil {
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				return fmt.Errorf("debootstrap: %v: %s", err, strings.Join(lines[max(0, len(lines)-8):], "\n"))
			}
			return nil
		}},
		{"configure", func() error {
			ks, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinuz-*"))
			if len(ks) == 0 {
				return fmt.Errorf("no kernel in %s/boot", tree)
			}
			rel = strings.TrimPrefix(filepath.Base(ks[len(ks)-1]), "vmlinuz-")
			grubCfg := fmt.Sprintf("serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\nset default=0\nset timeout=0\n"+
				"menuentry 'Debian GNU/Linux 12 (Rewind drill)' {\n\tlinux /boot/vmlinuz-%[1]s root=UUID=%[2]s ro console=ttyS0,115200n8 panic=-1\n\tinitrd /boot/initrd.img-%[1]s\n}\n", rel, debianUUID)
			for p, data := range map[string]string{
				"etc/fstab":          fmt.Sprintf("UUID=%s / ext4 errors=remount-ro 0 1\n", debianUUID),
				"etc/hostname":       DebianHostname + "\n",
				"boot/grub/grub.cfg": grubCfg,
				"etc/machine-id":     "",
			} {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(tree, p), []byte(data), 0o644); err != nil {
					return err
				}
			}
			// debootstrap leaves downloaded packages behind.
			debs, _ := filepath.Glob(filepath.Join(tree, "var/cache/apt/archives/*.deb"))
			for _, d := range debs {
				os.Remove(d)
			}
			return nil
		}},
		{"partition", func() error {
			return partitionOne(path, &SysDisk{Size: debianDiskSize, PartOffset: sysPartStart, PartSize: debianDiskSize - sysPartStart})
		}},
		{"mkfs.ext4", func() error {
			return runCtx(ctx, "mkfs.ext4", "-q", "-F", "-L", "root", "-U", debianUUID, "-E", "offset="+strconv.Itoa(sysPartStart)+",root_owner=0:0",
				"-d", tree, path, strconv.Itoa((debianDiskSize-sysPartStart)>>10)+"k")
		}},
		{"install GRUB", func() error { return installGRUB(ctx, path, tmp) }},
	}
	for _, s := range steps {
		logf("Debian disk: %s", s.name)
		if err := s.run(); err != nil {
			return fmt.Errorf("Debian disk %s: %s: %w", path, s.name, err)
		}
	}
	return nil
}
