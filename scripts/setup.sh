#!/usr/bin/env bash
# Installs the Debian packages Rewind's build, tests, demo and benchmarks use,
# when any is missing. Runs apt-get as root; prints what it installs.
set -euo pipefail

# command-or-file : package
needs=(
	"qemu-system-x86_64:qemu-system-x86"
	"qemu-img:qemu-utils"
	"sgdisk:gdisk"
	"sfdisk:fdisk"
	"mkfs.vfat:dosfstools"
	"mcopy:mtools"
	"mkfs.ext4:e2fsprogs"
	"debugfs:e2fsprogs"
	"dnsmasq:dnsmasq-base"
	"lz4:lz4"
	"strace:strace"                     # the capture test that checks the directory fsync
	"zstd:zstd"
	"bmaptool:bmap-tools"
	"curl:curl"                         # the bench's upload peer (partclone | lz4 | curl -T)
	"partclone.ext4:partclone"
	"mkntfs:ntfs-3g"                    # NTFS file systems for the used-block tests (mkntfs, ntfscp, ntfscat)
	"mkfs.exfat:exfatprogs"             # exFAT for the used-block tests (mkfs.exfat, fsck.exfat)
	"mount.exfat-fuse:exfat-fuse"       # writes files into those exFAT volumes (no exfat kernel driver here)
	"/bin/busybox:busybox-static"       # the static init of the used-block system disk (qemu-tests/sysdisk.go)
	"cpio:cpio"
	"/usr/bin/time:time"
	"losetup:mount"
	"ip:iproute2"
	"ping:iputils-ping"
	# the CA bundle 'rewind media build' copies into the rescue image (docs/network.md)
	"/etc/ssl/certs/ca-certificates.crt:ca-certificates"
	"/usr/lib/ipxe/qemu/efi-virtio.rom:ipxe-qemu"
	"/usr/share/OVMF/OVMF_CODE.fd:ovmf"
	# boot loaders for 'rewind media build --format iso|usb' (docs/media.md)
	"grub-mkimage:grub-common"
	"grub-mkrescue:grub-common"
	"/usr/lib/grub/i386-pc/boot.img:grub-pc-bin"
	"/usr/lib/grub/x86_64-efi/linux.mod:grub-efi-amd64-bin"
	"xorriso:xorriso"
	# the Secure Boot chain of the media: shim and Debian's signed GRUB images (docs/media.md)
	"/usr/lib/shim/shimx64.efi.signed:shim-signed"
	"/usr/lib/shim/mmx64.efi.signed:shim-helpers-amd64-signed"
	"/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed:grub-efi-amd64-signed"
	"sbverify:sbsigntool"               # checks the kernel's signature; the tests strip it (sbattach)
	"nginx:nginx"                       # the caching proxy in front of rewind serve (cmd/rewind.TestHTTPCacheInFront)
	"chromium:chromium"                 # the lab page in a real browser (rescue.TestLabPageInBrowser)
	"debootstrap:debootstrap"           # the Debian 12 system disk of qemu-tests.TestDrillDebianBootsToLogin
)

missing=()
for pair in "${needs[@]}"; do
	what=${pair%%:*} pkg=${pair#*:}
	if [[ $what == /* ]]; then
		[[ -e $what ]] && continue
	else
		command -v "$what" >/dev/null 2>&1 && continue
		[[ -x /usr/sbin/$what || -x /sbin/$what ]] && continue
	fi
	missing+=("$pkg")
done
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
	missing+=(linux-image-amd64)
fi

if ((${#missing[@]} > 0)); then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	if [[ $(id -u) != 0 ]]; then
		echo "setup: missing packages: ${missing[*]}; run 'sudo $0' to install them" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# The S3 tests run a real S3 server that checks signatures: versitygw,
# built from its Go module (pinned; internal/s3test.Version) into the test
# cache. About 3 minutes on two cores, once.
vgw_version=v1.8.0
vgw_dir=${HOME:-/root}/.cache/rewind-test/versitygw-$vgw_version
if [[ ! -x $vgw_dir/versitygw ]]; then
	echo "setup: building versitygw $vgw_version (the S3 server of the tests) into $vgw_dir" >&2
	mkdir -p "$vgw_dir"
	GOBIN=$vgw_dir GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$vgw_version" >&2
fi
