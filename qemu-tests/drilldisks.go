package qemutests

// The listening disk of the drill tests: a small BIOS system disk whose
// init brings up the NIC and serves HTTP, so that a drill can wait for a
// TCP port of the restored machine (BuildListenDisk):
//
//	partition    an MBR: one bootable Linux partition from 1 MiB to the end
//	rootTree     the host's Debian kernel and initramfs-tools initrd, GRUB's
//	             grub.cfg (serial console), a static busybox, virtio_net
//	             and the modules it needs, /www/index.html, and /sbin/init:
//	             insmod, the first NIC at 10.0.2.15 (QEMU's user network),
//	             busybox httpd on ListenPort, ListenMarker on the console
//	mkfsExt4     mkfs.ext4 -d of the tree
//	installGRUB  boot.img in the MBR, core.img in the gap after it

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rewind-bmr/rewind/initramfs"
)

// ListenPort is the guest port the listening disk serves HTTP on, and
// ListenMarker what its init prints once httpd runs.
const (
	ListenPort   = 8080
	ListenMarker = "rewind-listendisk: httpd listening"
	listenSize   = 96 << 20
	listenUUID   = "5e5d15c0-0013-4013-8013-000000000013"
)

// listenModules are virtio_net and what it needs that the initramfs-tools
// initrd may not have loaded, relative to /lib/modules/RELEASE.
var listenModules = []string{"kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"}

const listenInit = `#!/bin/busybox sh
export PATH=/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
for m in failover net_failover virtio_net; do /bin/busybox insmod /lib/modules/$m.ko 2>/dev/null; done
for i in /sys/class/net/*; do
	n=${i##*/}
	[ "$n" = lo ] || /bin/busybox ifconfig "$n" 10.0.2.15 netmask 255.255.255.0 up
done
/bin/busybox httpd -p %d -h /www
echo "` + ListenMarker + `" > /dev/console
while :; do /bin/busybox sleep 3600; done
`

// BuildListenDisk writes the listening disk to path (a new file).
func BuildListenDisk(ctx context.Context, path, kernel, initrd string) error {
	if err := checkStaticBusybox(); err != nil {
		return err
	}
	bz, err := os.ReadFile(kernel)
	if err != nil {
		return err
	}
	rel := initramfs.KernelRelease(bz)
	tmp, err := os.MkdirTemp(filepath.Dir(path), "listendisk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	d := &SysDisk{Size: listenSize, PartOffset: sysPartStart, PartSize: listenSize - sysPartStart, UUID: listenUUID, BlockSize: 4096}
	tree, part := filepath.Join(tmp, "root"), filepath.Join(tmp, "part.ext4")
	steps := []struct {
		name string
		run  func() error
	}{
		{"partition", func() error { return partitionOne(path, d) }},
		{"write the root tree", func() error { return listenTree(tree, kernel, initrd, rel) }},
		{"mkfs.ext4", func() error {
			if err := BlankDisk(part, d.PartSize); err != nil {
				return err
			}
			return mkfsExt4(ctx, part, tree, d)
		}},
		{"copy the partition into the disk", func() error { return copyAt(path, part, d.PartOffset) }},
		{"install GRUB", func() error { return installGRUB(ctx, path, tmp) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return fmt.Errorf("listening disk %s: %s: %w", path, s.name, err)
		}
	}
	return nil
}

func partitionOne(path string, d *SysDisk) error {
	if err := BlankDisk(path, d.Size); err != nil {
		return err
	}
	cmd := exec.Command("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nstart=%d, size=%d, type=83, bootable\n", d.PartOffset/512, d.PartSize/512))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %v\n%s", err, out)
	}
	return nil
}

func listenTree(dir, kernel, initrd, rel string) error {
	for _, sub := range []string{"boot/grub", "bin", "sbin", "proc", "sys", "dev", "www", "lib/modules"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	grubCfg := fmt.Sprintf(`serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set default=0
set timeout=0
menuentry 'Rewind drill listening disk' {
	linux /boot/vmlinuz root=UUID=%s ro console=ttyS0,115200n8 noresume panic=-1
	initrd /boot/initrd.img
}
`, listenUUID)
	copies := map[string]string{"/boot/vmlinuz": kernel, "/boot/initrd.img": initrd, "/bin/busybox": busyboxPath}
	for _, m := range listenModules {
		copies["/lib/modules/"+filepath.Base(m)] = filepath.Join("/lib/modules", rel, m)
	}
	for dst, src := range copies {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o755); err != nil {
			return err
		}
	}
	for dst, data := range map[string]string{
		"/boot/grub/grub.cfg": grubCfg,
		"/sbin/init":          fmt.Sprintf(listenInit, ListenPort),
		"/www/index.html":     "restored by rewind drill\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, dst), []byte(data), 0o755); err != nil {
			return err
		}
	}
	return nil
}
