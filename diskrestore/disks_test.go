package diskrestore

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/sysfixture"
	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// sysFixture builds a sysfs and procfs tree under a temporary root:
//
//	sda      64 MiB SATA SSD, sda1 mounted on / (holds the running system)
//	sdb      64 MiB USB stick, removable: the rescue media (sdb1 excluded)
//	sdc      64 MiB SCSI disk whose sdc1 is active swap
//	vdb      64 MiB virtio disk, serial TARGET-1: the one to restore onto
//	vdc      32 MiB virtio disk, serial SPARE-2
//	nvme0n1 128 MiB NVMe, nvme0n1p1 held by dm-0 (vg-data) mounted on /data
//	loop0    nothing attached (size 0), ram0: left out
func sysFixture(t *testing.T) string {
	t.Helper()
	tree := sysfixture.New(t)
	root, put := tree.Root, tree.Put
	disk := func(name, devPath string, sectors string, files map[string]string) {
		t.Helper()
		if _, ok := files["queue/physical_block_size"]; !ok {
			files["queue/physical_block_size"] = "4096"
		}
		tree.Disk(name, devPath, sectors, files)
	}
	const mib64 = "131072"
	disk("sda", "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0", mib64, map[string]string{
		"dev": "8:0", "device/model": "Samsung SSD 870", "device/wwid": "naa.5002538e40a0b1c2",
		"device/vpd_pg80": "\x00\x80\x00\x0cS5SSNF0T1234",
		"sda1/partition":  "1", "sda1/dev": "8:1",
	})
	disk("sdb", "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0", mib64, map[string]string{
		"dev": "8:16", "removable": "1", "device/model": "Cruzer Blade",
		"sdb1/partition": "1", "sdb1/dev": "8:17",
	})
	put("sys/devices/pci0000:00/0000:00:14.0/usb1/1-2/idVendor", "0781")
	put("sys/devices/pci0000:00/0000:00:14.0/usb1/1-2/serial", "4C530001230518117093")
	disk("sdc", "pci0000:00/0000:00:10.0/host2/target2:0:0/2:0:0:0", mib64, map[string]string{
		"dev": "8:32", "device/model": "QEMU HARDDISK", "sdc1/partition": "1", "sdc1/dev": "8:33",
	})
	disk("vdb", "pci0000:00/0000:00:05.0/virtio2", mib64, map[string]string{"dev": "252:16", "serial": "TARGET-1"})
	disk("vdc", "pci0000:00/0000:00:06.0/virtio3", "65536", map[string]string{"dev": "252:32", "serial": "SPARE-2"})
	disk("nvme0n1", "pci0000:00/0000:00:04.0/nvme/nvme0", "262144", map[string]string{
		"dev": "259:0", "wwid": "eui.0025388b71b1e2f3", "device/model": "Samsung SSD 980", "device/serial": "S64ANS0T5",
		"nvme0n1p1/partition": "1", "nvme0n1p1/dev": "259:1", "nvme0n1p1/holders/dm-0": "",
	})
	disk("dm-0", "virtual", "200000", map[string]string{"dev": "253:0", "dm/name": "vg-data"})
	disk("loop0", "virtual", "0", map[string]string{"dev": "7:0"})
	disk("ram0", "virtual", "8192", map[string]string{"dev": "1:0"})
	// sys/class/block/dm-0, as the holders lookup uses it.
	tree.Link("sys/class/block/dm-0", "../../devices/virtual/block/dm-0")
	put("proc/self/mountinfo", strings.Join([]string{
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
		"23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw",
		"30 22 253:0 / /data\\040disk rw - xfs /dev/mapper/vg-data rw",
	}, "\n"))
	put("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/dev/sdc1 partition 1048572 0 -2")
	return root
}

func TestListDisks(t *testing.T) {
	root := sysFixture(t)
	disks, err := ListDisks(ListOptions{Root: root, Exclude: []string{"/dev/sdb1"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Disk{}
	var names []string
	for _, d := range disks {
		got[d.Path] = d
		names = append(names, d.Name)
	}
	if want := "dm-0 nvme0n1 sda sdb sdc vdb vdc"; strings.Join(names, " ") != want {
		t.Errorf("ListDisks: disks %q, want %q", strings.Join(names, " "), want)
	}
	tests := []struct {
		path, field, got, want string
	}{
		{"/dev/sda", "transport", got["/dev/sda"].Transport, "sata"},
		{"/dev/sda", "model", got["/dev/sda"].Model, "Samsung SSD 870"},
		{"/dev/sda", "serial", got["/dev/sda"].Serial, "S5SSNF0T1234"},
		{"/dev/sda", "wwn", got["/dev/sda"].WWN, "naa.5002538e40a0b1c2"},
		{"/dev/sda", "system", b(got["/dev/sda"].System), "true"},
		{"/dev/sda", "mounts", strings.Join(got["/dev/sda"].Mounts, ";"), "/dev/sda1 on /"},
		{"/dev/sda", "partitions", strings.Join(got["/dev/sda"].Partitions, ";"), "/dev/sda1"},
		{"/dev/sda", "size", i64(got["/dev/sda"].Size), i64(64 * MiB)},
		{"/dev/sda", "physical sector", i64(int64(got["/dev/sda"].PhysicalSectorSize)), "4096"},
		{"/dev/sdb", "transport", got["/dev/sdb"].Transport, "usb"},
		{"/dev/sdb", "serial", got["/dev/sdb"].Serial, "4C530001230518117093"},
		{"/dev/sdb", "removable", b(got["/dev/sdb"].Removable), "true"},
		{"/dev/sdb", "rescue", b(got["/dev/sdb"].Rescue), "true"},
		{"/dev/sdb", "mounted", b(got["/dev/sdb"].Mounted), "false"},
		{"/dev/sdc", "transport", got["/dev/sdc"].Transport, "scsi"},
		{"/dev/sdc", "mounts", strings.Join(got["/dev/sdc"].Mounts, ";"), "/dev/sdc1 on [swap]"},
		{"/dev/vdb", "transport", got["/dev/vdb"].Transport, "virtio"},
		{"/dev/vdb", "serial", got["/dev/vdb"].Serial, "TARGET-1"},
		{"/dev/vdb", "mounted", b(got["/dev/vdb"].Mounted), "false"},
		{"/dev/vdb", "rescue", b(got["/dev/vdb"].Rescue), "false"},
		{"/dev/vdb", "system", b(got["/dev/vdb"].System), "false"},
		{"/dev/nvme0n1", "transport", got["/dev/nvme0n1"].Transport, "nvme"},
		{"/dev/nvme0n1", "serial", got["/dev/nvme0n1"].Serial, "S64ANS0T5"},
		{"/dev/nvme0n1", "wwn", got["/dev/nvme0n1"].WWN, "eui.0025388b71b1e2f3"},
		{"/dev/nvme0n1", "holders", strings.Join(got["/dev/nvme0n1"].Holders, ";"), "dm-0 (vg-data)"},
		{"/dev/nvme0n1", "mounts", strings.Join(got["/dev/nvme0n1"].Mounts, ";"), "/dev/mapper/vg-data on /data disk"},
		{"/dev/dm-0", "transport", got["/dev/dm-0"].Transport, "dm"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s %s: got %q, want %q", tc.path, tc.field, tc.got, tc.want)
		}
	}
}

func b(v bool) string    { return strconv.FormatBool(v) }
func i64(n int64) string { return strconv.FormatInt(n, 10) }

func TestSelectTarget(t *testing.T) {
	root := sysFixture(t)
	disks, err := ListDisks(ListOptions{Root: root, Exclude: []string{"/dev/sdb1"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec    string
		exclude []string
		want    string   // path chosen, or ""
		errHas  []string // substrings of the refusal
	}{
		// The same-size boot stick (sdb) and the other 64 MiB disks are
		// never chosen: only vdb may be written.
		{spec: "size=64MiB", want: "/dev/vdb"},
		{spec: "size=60MiB-70MiB", want: "/dev/vdb"},
		{spec: "serial=target-1", want: "/dev/vdb"},
		{spec: "/dev/vdb", want: "/dev/vdb"},
		{spec: "path=vdc", want: "/dev/vdc"},
		{spec: "size=-40MiB", want: "/dev/vdc"},
		{spec: "wwn=0x0025388B71B1E2F3", errHas: []string{"/dev/nvme0n1", "mounted", "/data disk"}},
		{spec: "/dev/sdb", errHas: []string{"/dev/sdb", "rescue media"}},
		{spec: "serial=4C530001230518117093", errHas: []string{"/dev/sdb", "rescue media"}},
		{spec: "wwn=5002538e40a0b1c2", errHas: []string{"/dev/sda", "running system"}},
		{spec: "/dev/sdc", errHas: []string{"/dev/sdc", "[swap]", "unmount it first"}},
		{spec: "size=64MiB", exclude: []string{"/dev/vdb"}, errHas: []string{"/dev/vdb", "holds the snapshot", "/dev/sdb", "/dev/sda"}},
		{spec: "size=20MiB-", errHas: []string{"matches 2 disks", "/dev/vdb", "/dev/vdc", "serial TARGET-1"}},
		{spec: "size=1TiB", errHas: []string{"matches no disk", "/dev/vdb (64.0 MiB, virtio, serial TARGET-1)", "/dev/nvme0n1"}},
		{spec: "serial=TARGET-1,size=32MiB", errHas: []string{"matches no disk"}},
	}
	for _, tc := range tests {
		spec, err := ParseSpec(tc.spec)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.spec, err)
			continue
		}
		d, err := SelectTarget(disks, spec, tc.exclude)
		if tc.want != "" {
			if err != nil || d.Path != tc.want {
				t.Errorf("SelectTarget(%q) = %s, %v; want %s", tc.spec, d.Path, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("SelectTarget(%q) chose %s; want a refusal", tc.spec, d.Path)
			continue
		}
		t.Logf("SelectTarget(%q) refuses: %v", tc.spec, err)
		for _, s := range tc.errHas {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("SelectTarget(%q) error does not name %q:\n%v", tc.spec, s, err)
			}
		}
	}
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in       string
		min, max int64
		path     string
		bad      bool
	}{
		{in: "size=8GiB", min: 8418135900, max: 8761733283}, // 8 GiB ± 2%
		{in: "size=7GiB-9GiB", min: 7 << 30, max: 9 << 30},
		{in: "size=500GB-", min: 500e9},
		{in: "size=1.5T-2T", min: 3 << 39, max: 2 << 40},
		{in: "/dev/vda,size=-8G", path: "/dev/vda", max: 8 << 30},
		{in: "path=sda", path: "/dev/sda"},
		{in: "size=9GiB-7GiB", bad: true},
		{in: "size=8XB", bad: true},
		{in: "size=-", bad: true},
		{in: "colour=blue", bad: true},
		{in: "serial=", bad: true},
		{in: "", bad: true},
	}
	for _, tc := range tests {
		s, err := ParseSpec(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseSpec(%q) = %+v; want an error", tc.in, s)
			}
			continue
		}
		if err != nil || s.MinSize != tc.min || s.MaxSize != tc.max || s.Path != tc.path {
			t.Errorf("ParseSpec(%q) = min %d max %d path %q, %v; want min %d max %d path %q", tc.in, s.MinSize, s.MaxSize, s.Path, err, tc.min, tc.max, tc.path)
		}
	}
}

// TestCheckNotMounted mounts ext4 from loop devices: one on the whole
// device, one on a partition the kernel was told about with BLKPG.
func TestCheckNotMounted(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mount", "umount", "sgdisk")
	img := newImage(t, "plain.img", 0)
	if err := CheckNotMounted(img); err != nil {
		t.Errorf("CheckNotMounted(regular file %s): %v", img, err)
	}

	// A whole loop device, mounted.
	whole := newImage(t, "whole.img", 32*MiB)
	run(t, "", "mkfs.ext4", "-q", "-F", whole)
	dev := testdisk.Loop(t, whole, 512)
	if err := CheckNotMounted(dev); err != nil {
		t.Errorf("CheckNotMounted(%s), not mounted yet: %v", dev, err)
	}
	mnt := mountAt(t, dev)
	err := CheckNotMounted(dev)
	if err == nil || !strings.Contains(err.Error(), mnt) || !strings.Contains(err.Error(), "unmount it first") {
		t.Errorf("CheckNotMounted(%s) mounted on %s: %v; want a refusal naming the mount point", dev, mnt, err)
	}

	// A partition of a loop device, mounted: the whole disk is refused.
	parted := newImage(t, "parted.img", 64*MiB)
	run(t, "", "sgdisk", "-o", "-n", "1:2048:+32M", parted)
	l, _ := readLayoutOf(t, parted, 0)
	pdev := testdisk.Loop(t, parted, 512)
	f, err := os.OpenFile(pdev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteLayout(f, l, WriteOptions{Logf: t.Logf}); err != nil {
		t.Fatal(err)
	}
	part := pdev + "p1"
	if _, err := os.Stat(part); err != nil {
		t.Skipf("the kernel made no %s (BLKPG refused?): %v", part, err)
	}
	run(t, "", "mkfs.ext4", "-q", "-F", part)
	pmnt := mountAt(t, part)
	err = CheckNotMounted(pdev)
	if err == nil || !strings.Contains(err.Error(), pmnt) || !strings.Contains(err.Error(), part) {
		t.Errorf("CheckNotMounted(%s) with %s mounted on %s: %v; want a refusal naming both", pdev, part, pmnt, err)
	}

	// The running system's listing agrees.
	disks, err := ListDisks(ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		if d.Path == dev && (!d.Mounted || d.Transport != "loop") {
			t.Errorf("ListDisks: %s mounted %v transport %q, want mounted loop", dev, d.Mounted, d.Transport)
		}
	}
}

// mountAt mounts dev on a new directory and unmounts it when the test ends.
func mountAt(t *testing.T, dev string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount %s here: %v: %s", dev, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}
