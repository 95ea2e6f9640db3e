package initramfs

// The hybrid ISO: grub-mkrescue (GRUB's i386-pc and x86_64-efi images,
// with xorriso) makes an ISO 9660 image that boots from a CD under BIOS
// (El Torito) and UEFI (El Torito EFI image), and, written to a USB
// stick, under BIOS (MBR boot code) and UEFI (an EFI system partition in
// its partition table). The volume is labelled REWIND, so the rescue
// environment finds snapshots/ on it as media:/snapshots/.

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
)

func buildISO(ctx context.Context, o BootOptions) (*BootResult, error) {
	if err := checkGRUB("i386-pc", "x86_64-efi"); err != nil {
		return nil, err
	}
	if o.chain != nil {
		return buildSignedISO(ctx, o)
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
	if err := stageBootFiles(tree, &o); err != nil {
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

// buildSignedISO makes the ISO with xorriso itself, as grub-mkrescue
// would, but with the signed chain in the El Torito EFI image
// (EFI/BOOT/BOOTX64.EFI shim, grubx64.efi Debian's gcdx64, mmx64.efi):
//
//	/.disk/info                 how gcdx64 finds its root (CD, or the ISO on a stick)
//	/boot/grub/grub.cfg         the menu, for gcdx64 and the BIOS GRUB
//	/boot/grub/eltorito.img     GRUB i386-pc for El Torito (BIOS, CD)
//	/boot/grub/efi.img          FAT: the signed chain (UEFI, CD, and the
//	                            EFI partition of the ISO on a stick)
//	/boot/vmlinuz, /boot/initramfs.cpio.gz, snapshots/NAME
//
// boot_hybrid.img in the MBR starts the El Torito image from a stick on
// BIOS.
func buildSignedISO(ctx context.Context, o BootOptions) (*BootResult, error) {
	tree, err := os.MkdirTemp(o.OutDir, ".rewind-iso-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tree)
	for _, d := range []string{".disk", "boot/grub"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return nil, err
		}
	}
	cfg := grubConfig(Menu(o.Cmdline), menuTimeout(o.MenuTimeout), "/boot/vmlinuz", "/boot/initramfs.cpio.gz")
	// gcdx64 started from efi.img (the ISO on a stick) searches every
	// disk for /.disk/info: another disk that has one (an installer
	// stick, a second Rewind stick) would give its menu. efi.img holds a
	// boot/grub/grub.cfg, so gcdx64 never searches; it finds this ISO by
	// a file only this build has.
	tag := make([]byte, 8)
	if _, err := rand.Read(tag); err != nil {
		return nil, err
	}
	mark := fmt.Sprintf(".disk/rewind-%x", tag)
	stub := fmt.Sprintf("search --no-floppy --file --set=root /%s\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n", mark)
	files := map[string][]byte{
		".disk/info":         []byte("Rewind rescue medium\n"),
		mark:                 []byte("this ISO's own mark: its EFI boot image's GRUB finds the ISO by it\n"),
		"boot/grub/grub.cfg": []byte(cfg),
	}
	eltorito, err := grubImageAs(ctx, "i386-pc", "i386-pc-eltorito", "/boot/grub")
	if err != nil {
		return nil, err
	}
	files["boot/grub/eltorito.img"] = eltorito
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(tree, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	efiImg := filepath.Join(tree, "boot", "grub", "efi.img")
	if err := signedEFIImage(ctx, efiImg, o.chain, o.chain.GRUBCD, []byte(stub)); err != nil {
		return nil, err
	}
	if err := stageBootFiles(tree, &o); err != nil {
		return nil, err
	}
	out := filepath.Join(o.OutDir, ISOName)
	defer os.Remove(out + ".tmp")
	args := []string{"-as", "mkisofs", "-graft-points", "-o", out + ".tmp", "-r", "-J", "-V", MediaLabel}
	if d := mediaUUID(o.MediaID, "iso9660"); d != "" {
		args = append(args, "--modification-date="+d)
	}
	args = append(args,
		"-b", "boot/grub/eltorito.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "--grub2-boot-info",
		"--grub2-mbr", filepath.Join(GRUBDir, "i386-pc", "boot_hybrid.img"),
		"--efi-boot", "boot/grub/efi.img", "-efi-boot-part", "--efi-boot-image", "--protective-msdos-label",
		tree)
	if o.Snapshot != "" {
		args = append(args, "snapshots/"+o.SnapshotName+"="+filepath.Clean(o.Snapshot))
	}
	if err := runTool(ctx, "xorriso", args...); err != nil {
		return nil, err
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return nil, err
	}
	return &BootResult{Files: []string{out}}, nil
}

// signedEFIImage writes a FAT image holding EFI/BOOT/BOOTX64.EFI (shim),
// EFI/BOOT/grubx64.efi (grub, the signed GRUB for the medium) and
// EFI/BOOT/mmx64.efi.
func signedEFIImage(ctx context.Context, img string, c *SignedChain, grub string, stub []byte) error {
	var size int64
	for _, f := range []string{c.Shim, grub, c.MokManager} {
		st, err := os.Stat(f)
		if err != nil {
			return err
		}
		size += st.Size()
	}
	size = (size + size/8 + 2*mib + mib - 1) / mib * mib
	// -C creates the image file.
	if err := runTool(ctx, "mkfs.vfat", "-C", "-n", "REWINDEFI", img, fmt.Sprint(size/1024)); err != nil {
		return err
	}
	if err := runTool(ctx, "mmd", "-i", img, "::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub"); err != nil {
		return err
	}
	stubFile := img + ".grub.cfg"
	if err := os.WriteFile(stubFile, stub, 0o644); err != nil {
		return err
	}
	defer os.Remove(stubFile)
	if err := runTool(ctx, "mcopy", "-m", "-i", img, stubFile, "::/boot/grub/grub.cfg"); err != nil {
		return err
	}
	for _, cp := range [][2]string{
		{c.Shim, "::/EFI/BOOT/BOOTX64.EFI"},
		{grub, "::/EFI/BOOT/grubx64.efi"},
		{c.MokManager, "::/EFI/BOOT/mmx64.efi"},
	} {
		if err := runTool(ctx, "mcopy", "-m", "-i", img, cp[0], cp[1]); err != nil {
			return err
		}
	}
	return nil
}

// stageBootFiles puts the kernel and initramfs into the ISO tree's boot/,
// as hard links when the output directory allows them (no copies).
func stageBootFiles(tree string, o *BootOptions) error {
	for dst, src := range map[string]string{"vmlinuz": o.Kernel, "initramfs.cpio.gz": o.Initramfs} {
		dst = filepath.Join(tree, "boot", dst)
		if os.Link(src, dst) == nil {
			continue
		}
		if err := copyFile(dst, src); err != nil {
			return err
		}
	}
	return nil
}
