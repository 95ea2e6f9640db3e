package initramfs

// The USB disk image: GPT with
//
//	1  BIOS boot   1 MiB   GRUB's i386-pc core image (boot.img in the MBR loads it)
//	2  EFI system  FAT32   EFI/BOOT/BOOTX64.EFI (shim; or GRUB x86_64-efi built here),
//	                       EFI/BOOT/grubx64.efi and mmx64.efi (Debian's signed GRUB,
//	                       MokManager), EFI/debian/grub.cfg (what signed GRUB reads),
//	                       boot/grub/grub.cfg, boot/vmlinuz, boot/initramfs.cpio.gz
//	3  REWIND      FAT32   snapshots/NAME, rewind/reports/ (the rescue media file system)
//
// Both GRUB images carry every module they need and read the one
// grub.cfg on the EFI system partition. The file systems are made with
// mkfs.vfat and filled with mtools at their offsets in the image, so no
// loop device or mount is needed.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

const (
	sector      = 512
	mib         = 1 << 20
	biosBootLBA = 2048 // 1 MiB
	biosBootLen = 2048 // 1 MiB
	espLBA      = biosBootLBA + biosBootLen
	minESP      = 64 * mib // FAT32 needs 65525 clusters
	minData     = 64 * mib
	espLabel    = "REWINDBOOT"
)

// usbLayout is where the partitions of a USB image go, in bytes.
type usbLayout struct {
	espSize, dataStart, dataSize, total int64
}

func planUSB(bootBytes, snapBytes, dataMin int64) usbLayout {
	roundMiB := func(n int64) int64 { return (n + mib - 1) / mib * mib }
	l := usbLayout{espSize: max(minESP, roundMiB(bootBytes+bootBytes/8+8*mib))}
	l.dataStart = espLBA*sector + l.espSize
	// FAT32 takes about 1/1000 for its tables; directories and cluster
	// tails need a little more; 32 MiB remain for reports.
	l.dataSize = max(minData, dataMin, roundMiB(snapBytes+snapBytes/32+32*mib))
	l.total = l.dataStart + l.dataSize + mib // room for the backup GPT
	return l
}

func buildUSB(ctx context.Context, o BootOptions) (*BootResult, error) {
	if err := checkGRUB("i386-pc", "x86_64-efi"); err != nil {
		return nil, err
	}
	seed, err := seedOf(o.Kernel, o.Initramfs)
	if err != nil {
		return nil, err
	}
	var boot, snap int64
	for _, f := range []string{o.Kernel, o.Initramfs} {
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		boot += st.Size()
	}
	if o.Snapshot != "" {
		if snap, err = dirSize(o.Snapshot); err != nil {
			return nil, err
		}
	}
	l := planUSB(boot, snap, o.DataSize)
	out := filepath.Join(o.OutDir, USBImageName)
	tmp := out + ".tmp"
	defer os.Remove(tmp)
	steps := []struct {
		name string
		do   func() error
	}{
		{"partition", func() error { return partitionUSB(ctx, tmp, l, seed) }},
		{"EFI system partition", func() error { return writeESP(ctx, tmp, l, seed, o) }},
		{"BIOS boot", func() error { return writeBIOSBoot(ctx, tmp) }},
		{"REWIND partition", func() error { return writeDataPartition(ctx, tmp, l, seed, o) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return nil, fmt.Errorf("USB image %s, %s: %w", out, s.name, err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	return &BootResult{Files: []string{out}}, nil
}

// partitionUSB creates the sparse image and its GPT, with GUIDs derived
// from the boot files.
func partitionUSB(ctx context.Context, img string, l usbLayout, seed []byte) error {
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if err := f.Truncate(l.total); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	dataLBA := l.dataStart / sector
	return runTool(ctx, "sgdisk",
		"-U", guidFrom(seed, "disk"),
		"-n", fmt.Sprintf("1:%d:%d", biosBootLBA, biosBootLBA+biosBootLen-1), "-t", "1:EF02", "-c", "1:BIOS boot", "-u", "1:"+guidFrom(seed, "p1"),
		"-n", fmt.Sprintf("2:%d:%d", espLBA, dataLBA-1), "-t", "2:EF00", "-c", "2:EFI system", "-u", "2:"+guidFrom(seed, "p2"),
		"-n", fmt.Sprintf("3:%d:%d", dataLBA, dataLBA+l.dataSize/sector-1), "-t", "3:0700", "-c", "3:REWIND", "-u", "3:"+guidFrom(seed, "p3"),
		img)
}

// mkfat makes a FAT32 file system of size bytes at byte offset off.
func mkfat(ctx context.Context, img string, off, size int64, label string, seed []byte) error {
	return runTool(ctx, "mkfs.vfat", "-F", "32", "--offset", fmt.Sprint(off/sector), "-n", label,
		"-i", volumeID(seed, label), img, fmt.Sprint(size/1024))
}

// volumeID derives a FAT volume ID from seed and the label.
func volumeID(seed []byte, label string) string {
	h := sha256.Sum256(append(append([]byte{}, seed...), "volume "+label...))
	return fmt.Sprintf("%08X", binary.BigEndian.Uint32(h[:4]))
}

// fat is an mtools image address: the image and a file system's offset.
func fat(img string, off int64) string { return fmt.Sprintf("%s@@%d", img, off) }

func writeESP(ctx context.Context, img string, l usbLayout, seed []byte, o BootOptions) error {
	off := int64(espLBA * sector)
	if err := mkfat(ctx, img, off, l.espSize, espLabel, seed); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "rewind-esp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg := filepath.Join(tmp, "grub.cfg")
	if err := os.WriteFile(cfg, []byte(grubConfig(Menu(o.Cmdline), menuTimeout(o.MenuTimeout), "/boot/vmlinuz", "/boot/initramfs.cpio.gz")), 0o644); err != nil {
		return err
	}
	// The BIOS GRUB reads boot/grub/grub.cfg.
	copies := [][2]string{
		{cfg, "::/boot/grub/grub.cfg"},
		{o.Kernel, "::/boot/vmlinuz"},
		{o.Initramfs, "::/boot/initramfs.cpio.gz"},
	}
	dirs := []string{"::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub"}
	if c := o.chain; c != nil {
		// The firmware starts shim, shim grubx64.efi from its own
		// directory (or MokManager), and Debian's GRUB reads
		// /EFI/debian/grub.cfg of its partition.
		dirs = append(dirs, "::/EFI/debian")
		copies = append(copies, [][2]string{
			{c.Shim, "::/EFI/BOOT/BOOTX64.EFI"},
			{c.GRUB, "::/EFI/BOOT/grubx64.efi"},
			{c.MokManager, "::/EFI/BOOT/mmx64.efi"},
			{cfg, "::/EFI/debian/grub.cfg"},
		}...)
	} else {
		efi, err := grubImage(ctx, "x86_64-efi", "/boot/grub")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, "BOOTX64.EFI"), efi, 0o644); err != nil {
			return err
		}
		copies = append(copies, [2]string{filepath.Join(tmp, "BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"})
	}
	a := fat(img, off)
	if err := runTool(ctx, "mmd", append([]string{"-i", a}, dirs...)...); err != nil {
		return err
	}
	for _, c := range copies {
		if err := runTool(ctx, "mcopy", "-m", "-i", a, c[0], c[1]); err != nil {
			return err
		}
	}
	return nil
}

// GRUB i386-pc boot sector offsets (grub/include/grub/i386/pc/boot.h).
const (
	bootKernelSector = 0x5c // LBA of the core image's first sector
	bootDriveCheck   = 0x66 // a jump a hard disk boot replaces with two NOPs
	mbrCodeSize      = 440  // boot code; the disk signature and table follow
	// The first sector of the core image (diskboot.img) ends with a
	// block list of the rest: start LBA (8 bytes), sectors (2), segment (2).
	diskbootListStart = sector - 12
)

// writeBIOSBoot puts GRUB's core image into the BIOS boot partition and
// boot.img, pointed at it, into the MBR's boot code: what grub-install
// does on a disk, done on an image file.
func writeBIOSBoot(ctx context.Context, img string) error {
	core, err := grubImage(ctx, "i386-pc", "(,gpt2)/boot/grub")
	if err != nil {
		return err
	}
	if len(core) > biosBootLen*sector {
		return fmt.Errorf("GRUB core image is %d bytes, more than the %d-byte BIOS boot partition", len(core), biosBootLen*sector)
	}
	bootImg, err := os.ReadFile(filepath.Join(GRUBDir, "i386-pc", "boot.img"))
	if err != nil {
		return err
	}
	if len(bootImg) != sector {
		return fmt.Errorf("%s/i386-pc/boot.img is %d bytes, want %d", GRUBDir, len(bootImg), sector)
	}
	binary.LittleEndian.PutUint64(bootImg[bootKernelSector:], biosBootLBA)
	bootImg[bootDriveCheck], bootImg[bootDriveCheck+1] = 0x90, 0x90
	binary.LittleEndian.PutUint64(core[diskbootListStart:], biosBootLBA+1)
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(bootImg[:mbrCodeSize], 0); err != nil {
		return err
	}
	if _, err := f.WriteAt(core, biosBootLBA*sector); err != nil {
		return err
	}
	return f.Close()
}

func writeDataPartition(ctx context.Context, img string, l usbLayout, seed []byte, o BootOptions) error {
	// The rescue environment knows its medium by this volume ID.
	id := volumeID(seed, MediaLabel)
	if v := mediaUUID(o.MediaID, "vfat"); v != "" {
		id = v
	}
	if err := runTool(ctx, "mkfs.vfat", "-F", "32", "--offset", fmt.Sprint(l.dataStart/sector), "-n", MediaLabel,
		"-i", id, img, fmt.Sprint(l.dataSize/1024)); err != nil {
		return err
	}
	a := fat(img, l.dataStart)
	if err := runTool(ctx, "mmd", "-i", a, "::/rewind", "::/rewind/reports", "::/snapshots"); err != nil {
		return err
	}
	if o.Snapshot == "" {
		return nil
	}
	return runTool(ctx, "mcopy", "-s", "-m", "-i", a, filepath.Clean(o.Snapshot), "::/snapshots/"+o.SnapshotName)
}
