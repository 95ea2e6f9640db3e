package drill

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
)

// ext4Image makes a 40 MiB image with an ext4 file system at 1 MiB
// (sectors 2048..), and the manifest layout naming it.
func ext4Image(t *testing.T) (string, *snapshot.Manifest) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(40 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "offset=1048576", img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	m := &snapshot.Manifest{DiskSize: 40 << 20, Layout: &snapshot.Layout{Table: "gpt", LogicalSectorSize: 512,
		Partitions: []snapshot.Partition{{Number: 1, Start: 2048, Size: 65536, FSType: "ext4"}}}}
	return img, m
}

func TestCheckFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	t.Run("clean", func(t *testing.T) {
		img, m := ext4Image(t)
		detail, err := CheckFS(img, m)
		if err != nil || detail != "clean: 1:ext4" {
			t.Fatalf("CheckFS = %q, %v; want clean: 1:ext4", detail, err)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		img, m := ext4Image(t)
		f, _ := os.OpenFile(img, os.O_RDWR, 0)
		// The root directory's inode table region and the block group
		// descriptors: zero 1 MiB after the superblock.
		f.WriteAt(make([]byte, 1<<20), 1<<20+4096)
		f.Close()
		_, err := CheckFS(img, m)
		if err == nil || !strings.Contains(err.Error(), "partition 1 (ext4) does not check clean") {
			t.Fatalf("CheckFS on a damaged ext4 = %v; want partition 1 named as not clean", err)
		}
	})
	t.Run("no file system", func(t *testing.T) {
		img, m := ext4Image(t)
		m.Layout.Partitions[0].FSType = ""
		if _, err := CheckFS(img, m); err == nil || !strings.Contains(err.Error(), "no ext2/3/4, FAT or NTFS file system") {
			t.Fatalf("CheckFS with no file system = %v; want it refused", err)
		}
	})
	t.Run("a file system it cannot check", func(t *testing.T) {
		img, m := ext4Image(t)
		xfs := m.Layout.Partitions[0]
		xfs.Number, xfs.FSType = 2, "xfs"
		m.Layout.Partitions = append(m.Layout.Partitions, xfs)
		detail, err := CheckFS(img, m)
		if err != nil || !strings.Contains(detail, "clean: 1:ext4") || !strings.Contains(detail, "NOT checked (no checker here): 2:xfs") {
			t.Fatalf("CheckFS with ext4 and xfs = %q, %v; want ext4 clean and xfs named as not checked", detail, err)
		}
	})
}

func TestChooseAccel(t *testing.T) {
	hangs := errors.New("a one-sector guest under KVM printed nothing within 5s (KVM hangs on this host)")
	for _, tc := range []struct {
		want      string
		probe     error
		accel     string
		noteHas   string
		errHas    string
		probeRuns bool
	}{
		{"auto", nil, "kvm", "KVM ran the probe guest", "", true},
		{"", nil, "kvm", "KVM ran the probe guest", "", true},
		{"auto", hangs, "tcg", "KVM hangs on this host); using TCG", "", true},
		{"kvm", nil, "kvm", "KVM ran the probe guest", "", true},
		{"kvm", hangs, "", "", "--accel kvm: KVM is not usable", true},
		{"tcg", nil, "tcg", "--accel tcg", "", false},
		{"hvf", nil, "", "", `--accel "hvf"`, false},
	} {
		ran := false
		accel, note, err := ChooseAccel(context.Background(), tc.want, func(context.Context) error { ran = true; return tc.probe })
		if ran != tc.probeRuns {
			t.Errorf("--accel %q (probe %v): probe ran %v, want %v", tc.want, tc.probe, ran, tc.probeRuns)
		}
		if tc.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("--accel %q (probe %v): err %v, want %q", tc.want, tc.probe, err, tc.errHas)
			}
			continue
		}
		if err != nil || accel != tc.accel || !strings.Contains(note, tc.noteHas) {
			t.Errorf("--accel %q (probe %v) = %q, %q, %v; want %q with a note containing %q", tc.want, tc.probe, accel, note, err, tc.accel, tc.noteHas)
		}
	}
}

func TestGeneratedPlanAndCheckPlan(t *testing.T) {
	snaps := []string{"/x/srv1-sys", "/y/srv1-data/"}
	p := generatedPlan(snaps)
	if err := checkPlan(p, snaps); err != nil {
		t.Fatalf("the generated plan for %v does not check: %v\n%s", snaps, err, p)
	}
	for _, want := range []string{`snapshot = "media:/snapshots/srv1-sys"`, `target = "serial=drill1"`, `snapshot = "media:/snapshots/srv1-data"`, `target = "serial=drill2"`} {
		if !strings.Contains(string(p), want) {
			t.Errorf("generated plan has no %s:\n%s", want, p)
		}
	}
	for _, tc := range []struct{ name, plan, errHas string }{
		{"not a plan", "[[machine]\n", "--plan: plan is not valid TOML"},
		{"unknown key", "[[machine]]\nname = \"a\"\nsnapshot = \"media:/snapshots/srv1-sys\"\nbogus = 1\n", "unknown keys"},
		{"other snapshot", "[[machine]]\nname = \"a\"\nsnapshot = \"media:/snapshots/pc9\"\n", "restores media:/snapshots/pc9, which the drill does not put on the stick"},
		{"capture", "[[machine]]\nname = \"a\"\naction = \"capture\"\nsnapshot = \"media:/snapshots/srv1-sys\"\n", "a drill restores"},
		// Found by attacking: disks swapped, so the checks would read disk N as another snapshot.
		{"swapped disks", "[[machine]]\nname = \"a\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/srv1-data\"\ntarget = \"serial=drill1\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/srv1-sys\"\ntarget = \"serial=drill2\"\n", `puts media:/snapshots/srv1-data on target "serial=drill1"; the drill's disk for it (snapshot 2) is serial=drill2`},
		{"no target for two", "[[machine]]\nname = \"a\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/srv1-sys\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/srv1-data\"\ntarget = \"serial=drill2\"\n", "has no target"},
	} {
		if err := checkPlan([]byte(tc.plan), snaps); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: checkPlan = %v, want %q", tc.name, err, tc.errHas)
		}
	}
}

// The reboot phase ends at the first line of the restored system: not
// SeaBIOS's banner (QEMU's SeaBIOS prints on the serial console), its
// boot messages, or OVMF's.
func TestGuestLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)", false},
		{"Booting from Hard Disk...", false},
		{"Boot failed: not a bootable disk", false},
		{"No bootable device.", false},
		{"BdsDxe: starting Boot0001 \"UEFI QEMU HARDDISK\"", false},
		{"\x1b[2J\x1b[H", false},
		{"   ", false},
		{"qemu-system-x86_64: terminating on signal 9", false},
		{"GNU GRUB  version 2.06-13+deb12u1", true},
		{"\x1b[0m\x1b[30m\x1b[47mBooting `Debian GNU/Linux'", true},
		{"[    0.000000] Linux version 6.1.0-57-amd64", true},
		{"rewind-sysdisk: booted, files ok, login:", true},
	} {
		if got := guestLine(tc.line); got != tc.want {
			t.Errorf("guestLine(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
	w := newWatch()
	w.Write([]byte("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n\r\nBooting from Hard"))
	w.Write([]byte(" Disk...\r\n"))
	if ok, _ := w.first(); ok {
		t.Errorf("watch: SeaBIOS's lines counted as the guest's")
	}
	w.Write([]byte("Welcome to GRUB!\r\n"))
	if ok, _ := w.first(); !ok {
		t.Errorf("watch: GRUB's line not counted as the guest's")
	}
}

// TestExpectMatchesOnlyTheGuest (found by attacking): --expect is matched
// against the restored system's lines, never the firmware's or QEMU's, and
// sees an unfinished prompt line; a regex matching the empty console is
// refused.
func TestExpectMatchesOnlyTheGuest(t *testing.T) {
	w := newWatch()
	w.Write([]byte("SeaBIOS (version 1.16.2)\r\nBooting from Hard Disk...\r\nBoot failed: not a bootable disk\r\nqemu-system-x86_64: terminating on signal 15\r\nPress Ctrl-B to configure iPXE (PCI 00:03.0)\r\n"))
	for _, re := range []string{`Booting from Hard Disk`, `Boot failed`, `terminating`, `iPXE`} {
		if w.guestMatch(regexp.MustCompile(re)) {
			t.Errorf("--expect %q matched a firmware or QEMU line", re)
		}
	}
	if ok, _ := w.first(); ok {
		t.Error("the firmware's and QEMU's lines counted as the guest printing")
	}
	w.Write([]byte("Debian GNU/Linux 12 drill ttyS0\r\n\r\ndrill login: "))
	if !w.guestMatch(regexp.MustCompile(`login: $`)) {
		t.Error("the unfinished login prompt is not matched")
	}
	for _, expr := range []string{`login:|`, `.*`, `^`} {
		_, err := Run(context.Background(), Options{Snapshots: []string{"/nonexistent"}, Timeout: time.Minute, Expect: regexp.MustCompile(expr)})
		if err == nil || !strings.Contains(err.Error(), "matches an empty console") {
			t.Errorf("--expect %q: %v; want it refused", expr, err)
		}
	}
	keep := t.TempDir()
	os.WriteFile(filepath.Join(keep, "disk.img"), []byte("the user's"), 0o600)
	if _, err := Run(context.Background(), Options{Snapshots: []string{"/nonexistent"}, Timeout: time.Minute, Check: "fs", Keep: keep}); err == nil || !strings.Contains(err.Error(), "give a new or empty directory") {
		t.Errorf("--keep with files in it: %v; want it refused", err)
	}
	if _, err := Run(context.Background(), Options{Snapshots: []string{"/nonexistent"}, Timeout: time.Minute, Check: "fs", BootTimeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "boot timeout") {
		t.Errorf("a negative boot timeout: %v; want it refused", err)
	}
}
