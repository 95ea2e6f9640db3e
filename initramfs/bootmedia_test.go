package initramfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/rescue"
)

func TestCheckOutDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "media")
	if err := CheckOutDir(dir, 1<<20); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".rewind-write-test")); !os.IsNotExist(err) {
		t.Errorf("%s: the test file was left behind (%v)", dir, err)
	}
	if err := CheckOutDir(dir, 1<<60); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "MiB free") {
		t.Errorf("%s, 1 EiB needed: got %v, want an error naming the directory and its free space", dir, err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	bad := filepath.Join(file, "media")
	if err := CheckOutDir(bad, 1); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("%s under a file: got %v, want an error naming it", bad, err)
	}
}

func TestMenus(t *testing.T) {
	menu := Menu("rewind.auto")
	cfg := grubConfig(menu, 5, "/boot/vmlinuz", "/boot/initramfs.cpio.gz")
	for _, want := range []string{
		"set default=0\nset timeout=5\n",
		"menuentry 'Rewind: Restore or capture, as the plan says' --id restore {",
		"linux /boot/vmlinuz " + BaseCmdline + " rewind.auto\n",
		"menuentry 'Rewind: Rescue shell' --id shell {",
		"linux /boot/vmlinuz " + BaseCmdline + " rewind.auto " + ShellCmdline + "\n",
		"initrd /boot/initramfs.cpio.gz\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("grub.cfg lacks %q:\n%s", want, cfg)
		}
	}
	script := ipxeScript(menu, 3)
	for _, want := range []string{
		"#!ipxe\n",
		"choose --default restore --timeout 3000 entry",
		":restore\nkernel vmlinuz initrd=initramfs.cpio.gz " + BaseCmdline + " rewind.auto\ninitrd initramfs.cpio.gz\nboot",
		":shell\nkernel vmlinuz initrd=initramfs.cpio.gz " + BaseCmdline + " rewind.auto " + ShellCmdline + "\n",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("boot.ipxe lacks %q:\n%s", want, script)
		}
	}
}

// The rescue shell entry keeps working when media build --cmdline sets the
// keys it sets: the rescue flow refuses a key given twice, so the shell
// entry drops them from the extra command line instead of repeating them.
func TestMenuShellEntryOverridesExtra(t *testing.T) {
	menu := Menu(`rewind.countdown=30 rewind.default=restore rewind.after=reboot rewind.target="serial=WD 1" quiet`)
	shell := menu[1].Cmdline
	o, err := rescue.ParseCmdline(shell)
	if err != nil {
		t.Fatalf("shell entry %q: %v", shell, err)
	}
	if o.Default != rescue.DefaultAbort || o.After != rescue.AfterShell || o.Countdown == nil || *o.Countdown != 0 || o.Target != "serial=WD 1" {
		t.Errorf("shell entry %q: got overrides %+v, want countdown 0, default abort, after shell, target serial=WD 1", shell, o)
	}
	if _, err := rescue.ParseCmdline(menu[0].Cmdline); err != nil {
		t.Errorf("restore entry %q: %v", menu[0].Cmdline, err)
	}
}

func TestPlanUSB(t *testing.T) {
	for _, tc := range []struct {
		boot, snap, dataMin  int64
		esp, dataSize, total int64
	}{
		{20 << 20, 0, 0, 64 << 20, 64 << 20, 2<<20 + 128<<20 + 1<<20},
		{80 << 20, 3 << 30, 0, 98 << 20, 3<<30 + 96<<20 + 32<<20, 2<<20 + 98<<20 + 3<<30 + 128<<20 + 1<<20},
		{20 << 20, 0, 1 << 30, 64 << 20, 1 << 30, 2<<20 + 64<<20 + 1<<30 + 1<<20},
	} {
		l := planUSB(tc.boot, tc.snap, tc.dataMin)
		if l.espSize != tc.esp || l.dataSize != tc.dataSize || l.total != tc.total {
			t.Errorf("boot %d, snapshot %d, data at least %d: got ESP %d, data %d, total %d; want %d, %d, %d",
				tc.boot, tc.snap, tc.dataMin, l.espSize, l.dataSize, l.total, tc.esp, tc.dataSize, tc.total)
		}
	}
}

// TestBuildUSBImage builds a USB image around stand-in boot files and a
// stand-in snapshot, and reads it back with sfdisk, mtools and fsck.fat.
// Booting it is qemu-tests' job.
func TestBuildUSBImage(t *testing.T) {
	for _, tool := range []string{"sgdisk", "sfdisk", "mkfs.vfat", "mcopy", "mdir", "fsck.fat", "grub-mkimage"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh)", tool)
		}
	}
	if checkGRUB("i386-pc", "x86_64-efi") != nil {
		t.Skip("GRUB images are not installed (scripts/setup.sh)")
	}
	dir := t.TempDir()
	rnd := rand.New(rand.NewSource(6))
	write := func(name string, n int) string {
		b := make([]byte, n)
		rnd.Read(b)
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel, initrd := write("vmlinuz", 1<<20), write("initramfs.cpio.gz", 2<<20)
	write("snap/manifest.json", 1000)
	write("snap/data.000", 3<<20)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	res, err := BuildBoot(context.Background(), BootOptions{Format: FormatUSB, Kernel: kernel, Initramfs: initrd,
		Snapshot: filepath.Join(dir, "snap"), SnapshotName: "pc1", MediaID: "vfat 1A2B-3C4D", OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	img := res.Files[0]
	dump, err := exec.Command("sfdisk", "--dump", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"label: gpt",
		"start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649",
		"start=        4096, size=      131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
		"type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
		`name="REWIND"`,
	} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("%s: sfdisk --dump lacks %q:\n%s", img, want, dump)
		}
	}
	f, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(f[bootKernelSector:]); got != biosBootLBA {
		t.Errorf("%s: MBR boot code loads sector %d, want %d", img, got, biosBootLBA)
	}
	if got := binary.LittleEndian.Uint64(f[biosBootLBA*sector+diskbootListStart:]); got != biosBootLBA+1 {
		t.Errorf("%s: core image continues at sector %d, want %d", img, got, biosBootLBA+1)
	}
	if !bytes.Equal(f[510:512], []byte{0x55, 0xaa}) {
		t.Errorf("%s: no MBR signature", img)
	}
	l := planUSB(3<<20, 3<<20+1000, 0)
	for _, c := range []struct {
		off  int64
		dir  string
		want []string
	}{
		{espLBA * sector, "::/EFI/BOOT", []string{"BOOTX64.EFI"}},
		{espLBA * sector, "::/boot/grub", []string{"grub.cfg"}},
		{espLBA * sector, "::/boot", []string{"vmlinuz", "initramfs.cpio.gz", "grub"}},
		{l.dataStart, "::/snapshots/pc1", []string{"manifest.json", "data.000"}},
		{l.dataStart, "::/rewind", []string{"reports"}},
	} {
		cmd := exec.Command("mdir", "-b", "-i", fat(img, c.off), c.dir)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("mdir %s at %d: %v %s", c.dir, c.off, err, b)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(b), c.dir+"/"+w) {
				t.Errorf("%s at offset %d: %s missing; have %s", img, c.off, w, b)
			}
		}
	}
	if res.SecureBoot.Chain {
		for _, p := range []string{"::/EFI/BOOT/grubx64.efi", "::/EFI/BOOT/mmx64.efi", "::/EFI/debian/grub.cfg"} {
			cmd := exec.Command("mdir", "-b", "-i", fat(img, espLBA*sector), p)
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: the EFI system partition lacks %s (signed chain): %v %s", img, p, err, b)
			}
		}
	}
	// fsck.fat reads each file system whole: the FAT, directories, sizes.
	for _, p := range []struct {
		name      string
		off, size int64
	}{{"EFI system", espLBA * sector, l.espSize}, {"REWIND", l.dataStart, l.dataSize}} {
		part := filepath.Join(dir, "part.img")
		if err := os.WriteFile(part, f[p.off:p.off+p.size], 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("fsck.fat", "-n", "-V", part).CombinedOutput(); err != nil || strings.Contains(string(b), "differ") {
			t.Errorf("%s: fsck.fat -n of the %s partition: %v\n%s", img, p.name, err, b)
		}
	}
	if label := strings.TrimSpace(string(f[l.dataStart+0x47 : l.dataStart+0x47+11])); label != "REWIND" {
		t.Errorf("%s: data partition label %q, want REWIND", img, label)
	}
	// The rescue environment knows its medium by this volume ID.
	if fs := diskrestore.ProbeFS(bytes.NewReader(f[l.dataStart:])); fs.UUID != "1A2B-3C4D" {
		t.Errorf("%s: REWIND partition volume ID %q, want the media identity's 1A2B-3C4D", img, fs.UUID)
	}
}

// The ISO's volume date, the UUID blkid shows, is the media identity the
// initramfs records, so that the rescue environment finds this disc.
func TestBuildISOMediaID(t *testing.T) {
	for _, tool := range []string{"grub-mkrescue", "xorriso", "blkid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh)", tool)
		}
	}
	if checkGRUB("i386-pc", "x86_64-efi") != nil {
		t.Skip("GRUB images are not installed (scripts/setup.sh)")
	}
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.cpio.gz")
	os.WriteFile(kernel, make([]byte, 4096), 0o644)
	os.WriteFile(initrd, make([]byte, 4096), 0o644)
	id := NewMediaID(FormatISO, []byte("seed"), time.Date(2026, 11, 23, 11, 27, 10, 0, time.UTC))
	res, err := BuildBoot(context.Background(), BootOptions{Format: FormatISO, Kernel: kernel, Initramfs: initrd, MediaID: id, OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("blkid", "-p", "-s", "UUID", "-s", "LABEL", "-o", "export", res.Files[0]).Output()
	if err != nil {
		t.Fatalf("blkid %s: %v", res.Files[0], err)
	}
	_, uuid, _ := strings.Cut(id, " ")
	for _, want := range []string{"UUID=" + uuid, "LABEL=REWIND"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("blkid %s: got %q, want %s (media identity %q)", res.Files[0], out, want, id)
		}
	}
}

func TestNewMediaID(t *testing.T) {
	now := time.Date(2026, 11, 23, 11, 27, 10, 0, time.UTC)
	for _, tc := range []struct{ format, want string }{
		{FormatUSB, "vfat "},
		{FormatISO, "iso9660 2026-11-23-11-27-10-"},
		{FormatPXE, NoMedium},
		{FormatInitramfs, ""},
	} {
		got := NewMediaID(tc.format, []byte("seed"), now)
		if !strings.HasPrefix(got, tc.want) || (tc.want == "" && got != "") {
			t.Errorf("--format %s: media identity %q, want one starting with %q", tc.format, got, tc.want)
		}
	}
	if a, b := NewMediaID(FormatUSB, []byte("a"), now), NewMediaID(FormatUSB, []byte("b"), now); a == b {
		t.Errorf("two builds from different inputs share the media identity %s", a)
	}
}
