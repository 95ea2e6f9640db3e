package initramfs

// Boot media around a kernel and a rescue initramfs: a PXE bundle, a
// hybrid ISO and a USB disk image. See docs/media.md.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Media formats of 'rewind media build --format'.
const (
	FormatInitramfs = "initramfs" // vmlinuz and initramfs.cpio.gz only
	FormatPXE       = "pxe"       // plus boot.ipxe and dnsmasq.conf
	FormatISO       = "iso"       // rewind.iso: hybrid ISO 9660, BIOS and UEFI, CD or USB
	FormatUSB       = "usb"       // rewind-usb.img: GPT disk image, BIOS and UEFI
)

// Formats lists the formats in the order the CLI shows them.
var Formats = []string{FormatInitramfs, FormatPXE, FormatISO, FormatUSB}

// Names of the files the formats write into the output directory.
const (
	ISOName      = "rewind.iso"
	USBImageName = "rewind-usb.img"
	IPXEName     = "boot.ipxe"
	DnsmasqName  = "dnsmasq.conf"
)

// DefaultMenuTimeout is how long a boot menu waits before it starts the
// Restore entry, whose countdown is Rewind's own.
const DefaultMenuTimeout = 5

// BootOptions describes boot media around a built kernel and initramfs.
type BootOptions struct {
	Format string
	Kernel string // the kernel, as BuildMedia wrote it
	// KernelSource is the kernel BuildMedia copied (--kernel), named in
	// what the build says about Secure Boot; "" names Kernel.
	KernelSource string
	Initramfs    string // the rescue initramfs, as BuildMedia wrote it
	// Snapshot is a snapshot directory to put on the medium under
	// snapshots/SnapshotName (iso, usb); "" for none: the plan then
	// fetches its snapshot over the network.
	Snapshot     string
	SnapshotName string // default: the directory's base name
	Cmdline      string // appended to every menu entry's kernel command line
	MenuTimeout  int    // seconds; 0 is DefaultMenuTimeout, <0 none (start Restore at once)
	// DataSize is the least size of a USB image's REWIND partition, for
	// reports and more snapshots; 0 fits the snapshot plus 32 MiB.
	DataSize int64
	// MediaID is the identity NewMediaID gave the medium, recorded in the
	// initramfs: the usb image's REWIND volume ID or the ISO's volume
	// date is set from it; "" derives them from the boot files as before.
	MediaID string
	// SecureBoot is SecureBootAuto (""), SecureBootRequire or
	// SecureBootOff: whether the EFI boot starts shim and Debian's
	// signed GRUB (iso, usb, pxe) or GRUB built here.
	SecureBoot string
	// Modules are the module files packed into the initramfs (the
	// kernel's and drivers/), checked for signatures when the medium is
	// to boot under Secure Boot.
	Modules []string
	OutDir  string

	chain *SignedChain // the signed boot loaders, nil for GRUB built here
}

// BootResult names what a build wrote.
type BootResult struct {
	Files []string // paths, the image first
	// SecureBoot says whether the medium boots with Secure Boot on, and why.
	SecureBoot SecureBoot
}

// BuildBoot writes the medium of opts.Format into opts.OutDir.
func BuildBoot(ctx context.Context, opts BootOptions) (*BootResult, error) {
	if opts.Snapshot != "" && opts.SnapshotName == "" {
		opts.SnapshotName = filepath.Base(filepath.Clean(opts.Snapshot))
	}
	if opts.Snapshot != "" {
		if _, err := os.Stat(filepath.Join(opts.Snapshot, "manifest.json")); err != nil {
			return nil, fmt.Errorf("--snapshot %s is not a snapshot directory (no manifest.json): %w", opts.Snapshot, err)
		}
	}
	sb, err := signedChain(ctx, &opts)
	if err != nil {
		return nil, err
	}
	var res *BootResult
	switch opts.Format {
	case FormatInitramfs, "":
		res, err = &BootResult{Files: []string{opts.Kernel, opts.Initramfs}}, nil
	case FormatPXE:
		res, err = buildPXE(opts)
	case FormatISO:
		res, err = buildISO(ctx, opts)
	case FormatUSB:
		res, err = buildUSB(ctx, opts)
	default:
		return nil, fmt.Errorf("unknown media format %q: use initramfs, pxe, iso or usb", opts.Format)
	}
	if err != nil {
		return nil, err
	}
	res.SecureBoot = sb
	return res, nil
}

// signedChain finds the signed boot loaders as opts.SecureBoot asks and
// says whether the medium will boot under Secure Boot.
func signedChain(ctx context.Context, opts *BootOptions) (SecureBoot, error) {
	kernel := opts.KernelSource
	if kernel == "" {
		kernel = opts.Kernel
	}
	switch opts.SecureBoot {
	case "", SecureBootAuto, SecureBootRequire, SecureBootOff:
	default:
		return SecureBoot{}, fmt.Errorf("--secure-boot %q: use auto, require or off", opts.SecureBoot)
	}
	if opts.Format == FormatInitramfs || opts.Format == "" {
		return kernelSecureBoot(kernel), nil
	}
	if opts.SecureBoot == SecureBootOff {
		return CheckSecureBoot(ctx, nil, nil, kernel), nil
	}
	chain, err := FindSignedChain()
	if err != nil && opts.SecureBoot == SecureBootRequire {
		return SecureBoot{}, fmt.Errorf("--secure-boot require: %w", err)
	}
	opts.chain = chain
	// The copy the medium gets is checked (the --kernel file may change
	// under a running build), named as the user gave it.
	sb := CheckSecureBoot(ctx, chain, err, opts.Kernel)
	if opts.KernelSource != "" {
		sb.Why = strings.ReplaceAll(sb.Why, opts.Kernel, opts.KernelSource)
	}
	if err != nil {
		sb.Why += " (--secure-boot off builds without them)"
	}
	if sb.Boots {
		unsigned, unchecked, merr := UnsignedModules(opts.Modules)
		switch {
		case merr != nil:
			return SecureBoot{}, merr
		case len(unsigned) > 0:
			sb.Boots = false
			sb.Why = fmt.Sprintf("the kernel boots, but %d modules carry no signature and the locked-down kernel refuses them: %s (sign them with the kernel's key, or use the kernel's own modules)", len(unsigned), strings.Join(unsigned, " "))
		case len(unchecked) > 0:
			sb.Why += fmt.Sprintf("; %d compressed modules not checked for a signature: %s", len(unchecked), strings.Join(unchecked, " "))
		}
	}
	if opts.SecureBoot == SecureBootRequire && !sb.Boots {
		return SecureBoot{}, fmt.Errorf("--secure-boot require: the medium would not boot under Secure Boot: %s", sb.Why)
	}
	if opts.Format == FormatPXE {
		if chain == nil {
			sb.Why = "UEFI clients boot iPXE, which is not signed; " + sb.Why
		} else {
			sb.Why = "UEFI clients boot " + PXEShimName + ": " + sb.Why
		}
	}
	return sb, nil
}

// kernelSecureBoot is the line for a bare kernel and initramfs: the boot
// loader is the lab's, so only the kernel's signature is known.
func kernelSecureBoot(kernel string) SecureBoot {
	signers, err := AuthenticodeSigners(kernel)
	if err != nil {
		return SecureBoot{External: true, Why: fmt.Sprintf("kernel %s is %v", kernel, err)}
	}
	return SecureBoot{External: true, Why: fmt.Sprintf("kernel %s is signed by %q", kernel, signers[0].Subject.CommonName)}
}

// EstimateSize is about how many bytes a build of format needs in its
// output directory, given the kernel and base archive sizes and the
// snapshot directory (or ""), counting the temporary files.
func EstimateSize(format string, kernel, base int64, snapshotDir string) (int64, error) {
	const slack = 64 << 20 // modules, boot loaders, file system overhead
	boot := kernel + 2*base + slack
	var snap int64
	if snapshotDir != "" && (format == FormatISO || format == FormatUSB) {
		var err error
		if snap, err = dirSize(snapshotDir); err != nil {
			return 0, fmt.Errorf("--snapshot %s: %w", snapshotDir, err)
		}
	}
	switch format {
	case FormatISO, FormatUSB:
		// The staged boot files and the image.
		return 2*boot + snap + snap/16, nil
	}
	return boot, nil
}

func menuTimeout(t int) int {
	switch {
	case t == 0:
		return DefaultMenuTimeout
	case t < 0:
		return 0
	}
	return t
}

// seedOf hashes the boot files, so that GUIDs and volume IDs are the same
// for the same inputs (reproducible images) and differ otherwise.
func seedOf(files ...string) ([]byte, error) {
	h := sha256.New()
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(h, r)
		r.Close()
		if err != nil {
			return nil, err
		}
	}
	return h.Sum(nil), nil
}

// guidFrom derives a version-4-shaped GUID from seed and a purpose.
func guidFrom(seed []byte, purpose string) string {
	h := sha256.Sum256(append(append([]byte{}, seed...), purpose...))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// copyFile copies src to dst.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
