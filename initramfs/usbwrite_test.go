package initramfs

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/sysfixture"
	"github.com/rewind-bmr/rewind/internal/testdisk"
)

// usbFixture is a sysfs and mount table tree:
//
//	sda      64 MiB SATA disk, not removable: never offered
//	sdb      64 MiB USB stick "SanDisk Cruzer Blade", sdb1 mounted on /media/stick
//	sdc      16 MiB USB stick "Kingston DataTraveler", not mounted
//	mmcblk0  32 MiB SD card, removable, no vendor
func usbFixture(t *testing.T) string {
	t.Helper()
	tree := sysfixture.New(t)
	root, put := tree.Root, tree.Put
	disk := func(name, devPath, sectors, removable string, files map[string]string) {
		t.Helper()
		files["removable"] = removable
		tree.Disk(name, devPath, sectors, files)
	}
	disk("sda", "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0", "131072", "0", map[string]string{
		"dev": "8:0", "device/vendor": "ATA", "device/model": "Samsung SSD 870", "sda1/partition": "1", "sda1/dev": "8:1",
	})
	disk("sdb", "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0", "131072", "1", map[string]string{
		"dev": "8:16", "device/vendor": "SanDisk", "device/model": "Cruzer Blade", "sdb1/partition": "1", "sdb1/dev": "8:17",
	})
	disk("sdc", "pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0/host7/target7:0:0/7:0:0:0", "32768", "0", map[string]string{
		"dev": "8:32", "device/vendor": "Kingston", "device/model": "DataTraveler 3.0",
	})
	disk("mmcblk0", "pci0000:00/0000:00:1e.6/mmc_host/mmc0/mmc0:0001", "65536", "1", map[string]string{"dev": "179:0"})
	put("proc/self/mountinfo", strings.Join([]string{
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
		"40 22 8:17 / /media/stick rw - vfat /dev/sdb1 rw",
	}, "\n"))
	return root
}

func TestListUSBDevices(t *testing.T) {
	devs, err := ListUSBDevices(usbFixture(t))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		n       int
		path    string
		desc    string
		size    int64
		mounted bool
	}
	want := []row{
		{1, "/dev/mmcblk0", "(no model)", 32 << 20, false},
		{2, "/dev/sdb", "SanDisk Cruzer Blade", 64 << 20, true},
		{3, "/dev/sdc", "Kingston DataTraveler 3.0", 16 << 20, false},
	}
	if len(devs) != len(want) {
		t.Fatalf("got %d devices %v, want %d", len(devs), devs, len(want))
	}
	for i, w := range want {
		d := devs[i]
		got := row{d.Number, d.Path, d.Description(), d.Size, d.Mounted}
		if got != w {
			t.Errorf("device %d: got %+v, want %+v", i, got, w)
		}
	}
}

func TestCheckUSBTargetRefuses(t *testing.T) {
	all, err := diskrestore.ListDisks(diskrestore.ListOptions{Root: usbFixture(t)})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]diskrestore.Disk{}
	for _, d := range all {
		byName[d.Name] = d
	}
	for _, tc := range []struct {
		disk       string
		size       int64
		allowFixed bool
		want       string // "" = accepted
	}{
		{"sdc", 8 << 20, false, ""},
		{"mmcblk0", 32 << 20, false, ""},
		{"sda", 8 << 20, false, "neither removable nor attached over USB"},
		{"sdb", 8 << 20, false, "has mounted partitions (/dev/sdb1 on /media/stick); unmount them first"},
		{"sdc", 16<<20 + 512, false, "larger than /dev/sdc"},
	} {
		err := CheckUSBTarget(byName[tc.disk], tc.size, tc.allowFixed)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s, image %d bytes: got %v, want accepted", tc.disk, tc.size, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s, image %d bytes: got %v, want an error containing %q", tc.disk, tc.size, err, tc.want)
		}
	}
}

// TestWriteImageLoop writes an image onto a 16 MiB loop device (root
// only) and reads it back; the loop device is not removable, so only
// AllowFixed lets the write through.
func TestWriteImageLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	dir := t.TempDir()
	backing := filepath.Join(dir, "stick.img")
	if err := os.WriteFile(backing, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	loop := testdisk.Loop(t, backing, 0)
	disks, err := diskrestore.ListDisks(diskrestore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var dev USBDevice
	for _, d := range disks {
		if d.Path == loop {
			dev = DescribeDevice("", d)
		}
	}
	if dev.Path == "" {
		t.Fatalf("%s not listed by ListDisks", loop)
	}
	image := make([]byte, 5<<20+4096)
	rand.New(rand.NewSource(6)).Read(image)
	imgPath := filepath.Join(dir, "rescue.img")
	os.WriteFile(imgPath, image, 0o644)
	big := filepath.Join(dir, "big.img")
	os.WriteFile(big, make([]byte, 17<<20), 0o644)

	ctx := context.Background()
	if err := WriteImage(ctx, WriteOptions{Image: imgPath, Device: dev}); err == nil || !strings.Contains(err.Error(), "neither removable nor attached over USB") {
		t.Errorf("write to %s without AllowFixed: got %v, want a refusal", loop, err)
	}
	// The listing described another device than the one now at this path
	// (a stick swapped between listing and writing): refused, nothing written.
	otherNum, otherSerial := dev, dev
	otherNum.DevNum = "8:16"
	otherSerial.Serial = "4C530001230117115135"
	for _, tc := range []struct {
		name   string
		listed USBDevice
		want   string
	}{
		{"another device number", otherNum, `device number now ` + dev.DevNum + `, was "8:16"`},
		{"another serial", otherSerial, `serial now "", was "4C530001230117115135"`},
	} {
		err := WriteImage(ctx, WriteOptions{Image: imgPath, Device: tc.listed, AllowFixed: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "is no longer the device that was listed") {
			t.Errorf("%s at %s: got %v, want a refusal containing %q", tc.name, loop, err, tc.want)
		}
		if b, _ := os.ReadFile(backing); !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("%s at %s: the device was written", tc.name, loop)
		}
	}
	if err := WriteImage(ctx, WriteOptions{Image: big, Device: dev, AllowFixed: true}); err == nil || !strings.Contains(err.Error(), "larger than "+loop) {
		t.Errorf("17 MiB image onto 16 MiB %s: got %v, want a refusal", loop, err)
	}
	var stages []string
	err = WriteImage(ctx, WriteOptions{Image: imgPath, Device: dev, AllowFixed: true, Progress: func(p WriteProgress) {
		if p.Final {
			stages = append(stages, p.Stage)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(stages, ",") != "write,verify" {
		t.Errorf("final progress stages: got %v, want write,verify", stages)
	}
	got, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(image)], image) {
		t.Errorf("%s (backing %s) does not hold the image", loop, backing)
	}
}

// A stick listed as #3 and then swapped for another at the same /dev/sdc
// (same device number, other serial), removed, or renumbered is refused
// by the check right before writing, naming what changed.
func TestCheckSameDevice(t *testing.T) {
	root := usbFixture(t)
	devs, err := ListUSBDevices(root)
	if err != nil {
		t.Fatal(err)
	}
	listed := devs[2]
	if listed.Name != "sdc" || listed.DevNum != "8:32" {
		t.Fatalf("device 3: got %s (%s), want sdc (8:32)", listed.Name, listed.DevNum)
	}
	listed.Serial = "AA00000000011111" // as the USB layer reported it for the listed stick
	sdc := filepath.Join(root, "sys/block/sdc")
	for _, tc := range []struct {
		name   string
		change func()
		want   string // "" = still the same device
	}{
		{"unchanged", func() { os.WriteFile(filepath.Join(sdc, "device/serial"), []byte("AA00000000011111\n"), 0o644) }, ""},
		{"another stick, same device number", func() {
			os.WriteFile(filepath.Join(sdc, "device/serial"), []byte("0401396b5e1a\n"), 0o644)
			os.WriteFile(filepath.Join(sdc, "device/model"), []byte("Ultra Fit\n"), 0o644)
		}, `serial now "0401396b5e1a", was "AA00000000011111", model now "Ultra Fit", was "DataTraveler 3.0"`},
		{"renumbered", func() {
			os.WriteFile(filepath.Join(sdc, "device/serial"), []byte("AA00000000011111\n"), 0o644)
			os.WriteFile(filepath.Join(sdc, "device/model"), []byte("DataTraveler 3.0\n"), 0o644)
			os.WriteFile(filepath.Join(sdc, "dev"), []byte("8:48\n"), 0o644)
		}, `device number now "8:48", was "8:32"`},
		{"gone", func() { os.Remove(filepath.Join(root, "sys/block/sdc")) }, "/dev/sdc (Kingston DataTraveler 3.0) is gone since it was listed"},
	} {
		tc.change()
		err := CheckSameDevice(root, listed)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the same device", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
