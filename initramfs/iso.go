package initramfs

// The hybrid ISO: grub-mkrescue (GRUB's i386-pc and x86_64-efi images,
// with xorriso) makes an ISO 9660 image that boots from a CD under BIOS
// (El Torito) and UEFI (El Torito EFI image), and, written to a USB
// stick, under BIOS (MBR boot code) and UEFI (an EFI system partition in
// its partition table). The volume is labelled REWIND, so the rescue
// environment finds snapshots/ on it as media:/snapshots/.

import (
	"context"
	"os"
	"path/filepath"
)

func buildISO(ctx context.Context, o BootOptions) (*BootResult, error) {
	if err := checkGRUB("i386-pc", "x86_64-efi"); err != nil {
		return nil, err
	}
	tree, err := os.MkdirTemp(o.OutDir, ".rewind-iso-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tree)
	if err := os.MkdirAll(filepath.Join(tree, "boot", "grub"), 0o755); err != nil {
		return nil, err
	}
	cfg := grubConfig(Menu(o.Cmdline), menuTimeout(o.MenuTimeout), "/boot/vmlinuz", "/boot/initramfs.cpio.gz")
	if err := os.WriteFile(filepath.Join(tree, "boot", "grub", "grub.cfg"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	// Hard links when the output directory allows them: no copies.
	link := func(dst, src string) error {
		if os.Link(src, dst) == nil {
			return nil
		}
		return copyFile(dst, src)
	}
	if err := link(filepath.Join(tree, "boot", "vmlinuz"), o.Kernel); err != nil {
		return nil, err
	}
	if err := link(filepath.Join(tree, "boot", "initramfs.cpio.gz"), o.Initramfs); err != nil {
		return nil, err
	}
	args := []string{"-o", "", "--fonts=", "--locales=", "--themes=", "--modules=part_gpt part_msdos",
		tree, "-volid", MediaLabel, "-r", "-J"}
	if d := mediaUUID(o.MediaID, "iso9660"); d != "" {
		// The volume's dates, and so the UUID blkid shows: the rescue
		// environment knows its medium by it.
		args = append(args, "--modification-date="+d)
	}
	if o.Snapshot != "" {
		args = append(args, "snapshots/"+o.SnapshotName+"="+filepath.Clean(o.Snapshot))
	}
	out := filepath.Join(o.OutDir, ISOName)
	args[1] = out + ".tmp"
	defer os.Remove(out + ".tmp")
	if err := runTool(ctx, "grub-mkrescue", args...); err != nil {
		return nil, err
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return nil, err
	}
	return &BootResult{Files: []string{out}}, nil
}

// MediaLabel is the volume label the rescue environment looks for.
const MediaLabel = "REWIND"
