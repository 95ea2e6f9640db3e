package rescue

import (
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/sysfixture"
)

// machineDisks lists the disks of a server in the rescue environment, as
// a sysfs fixture:
//
//	nvme0n1  64 MiB NVMe, serial nvme1: the system disk
//	vdb      48 MiB virtio, serial DATA-2: the data disk
//	vdc      48 MiB virtio, serial DATA-3: a second disk of the same size
//	vdd      16 MiB virtio, serial RO-4, read-only
//	sda      64 MiB USB stick, serial STICK-5: the rescue medium (sda1 excluded)
func machineDisks(t *testing.T) []Disk {
	t.Helper()
	tree := sysfixture.New(t)
	tree.Disk("nvme0n1", "pci0000:00/0000:00:04.0/nvme/nvme0", "131072", map[string]string{
		"dev": "259:0", "device/model": "QEMU NVMe Ctrl", "device/serial": "nvme1"})
	tree.Disk("vdb", "pci0000:00/0000:00:05.0/virtio2", "98304", map[string]string{"dev": "252:16", "serial": "DATA-2"})
	tree.Disk("vdc", "pci0000:00/0000:00:06.0/virtio3", "98304", map[string]string{"dev": "252:32", "serial": "DATA-3"})
	tree.Disk("vdd", "pci0000:00/0000:00:07.0/virtio4", "32768", map[string]string{"dev": "252:48", "serial": "RO-4", "ro": "1"})
	tree.Disk("sda", "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0", "131072", map[string]string{
		"dev": "8:0", "removable": "1", "device/model": "Cruzer Blade", "device/vpd_pg80": "\x00\x80\x00\x07STICK-5",
		"sda1/partition": "1", "sda1/dev": "8:1"})
	tree.Put("proc/self/mountinfo", "22 1 0:2 / / rw,relatime shared:1 - rootfs rootfs rw")
	disks, err := diskrestore.ListDisks(diskrestore.ListOptions{Root: tree.Root, Exclude: []string{"/dev/sda1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 5 {
		t.Fatalf("fixture lists %d disks, want 5: %+v", len(disks), disks)
	}
	return disks
}

func TestMatchDisks(t *testing.T) {
	disks := machineDisks(t)
	entry := func(snap, target string) DiskEntry { return DiskEntry{Snapshot: snap, Target: target} }
	for _, tc := range []struct {
		name    string
		entries []DiskEntry
		capture bool
		want    []string // picked device paths, in entry order
		errHas  []string // every entry's outcome, named
	}{
		{name: "two disks matched by serial and size", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/data", "serial=DATA-2")},
			want: []string{"/dev/nvme0n1", "/dev/vdb"}},
		{name: "entry order is kept", entries: []DiskEntry{entry("media:/snapshots/data", "serial=DATA-3"), entry("media:/snapshots/sys", "path=/dev/nvme0n1")},
			want: []string{"/dev/vdc", "/dev/nvme0n1"}},
		{name: "one disk missing refuses the set", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/data", "serial=GONE-9")},
			errHas: []string{`disk 1 (snapshot media:/snapshots/sys, target "serial=nvme1"): /dev/nvme0n1`,
				`disk 2 (snapshot media:/snapshots/data, target "serial=GONE-9"): matches no disk`,
				"the disks here are:", "/dev/vdc (48.0 MiB, virtio, serial DATA-3)", "no disk is used"}},
		{name: "ambiguous size refuses the set", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/data", "size=48MiB")},
			errHas: []string{`disk 2 (snapshot media:/snapshots/data, target "size=48MiB"): matches 2 disks`, "/dev/vdb", "/dev/vdc", "will not guess which to overwrite"}},
		{name: "two entries on one disk", entries: []DiskEntry{entry("media:/snapshots/a", "serial=DATA-2"), entry("media:/snapshots/b", "path=/dev/vdb")},
			errHas: []string{`disk 2 (snapshot media:/snapshots/b, target "path=/dev/vdb"): /dev/vdb`, "which disk 1 matches too"}},
		{name: "the medium is never a target", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/stick", "serial=STICK-5")},
			errHas: []string{`disk 2 (snapshot media:/snapshots/stick, target "serial=STICK-5"): matches no disk that may be overwritten`, "/dev/sda", "rescue medi"}},
		{name: "the medium is never captured", capture: true, entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/stick", "serial=STICK-5")},
			errHas: []string{`disk 2 (snapshot media:/snapshots/stick, target "serial=STICK-5"): matches no disk that may be captured`, "it is the rescue medium", "one disk it may capture"}},
		{name: "read-only refused for restore", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/ro", "serial=RO-4")},
			errHas: []string{`disk 2 (snapshot media:/snapshots/ro, target "serial=RO-4"): matches no disk that may be overwritten`, "/dev/vdd", "read-only"}},
		{name: "read-only allowed for capture", capture: true, entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/ro", "serial=RO-4")},
			want: []string{"/dev/nvme0n1", "/dev/vdd"}},
		{name: "empty spec with several disks", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=nvme1"), entry("media:/snapshots/data", "")},
			errHas: []string{`disk 2 (snapshot media:/snapshots/data, target ""): no target spec`}},
		{name: "single entry, empty spec, several disks: no guess", entries: []DiskEntry{entry("media:/snapshots/sys", "")},
			errHas: []string{`target spec "" matches 3 disks`, "/dev/nvme0n1", "/dev/vdb", "/dev/vdc"}},
		{name: "single entry, capture, empty spec sees the read-only disk too", capture: true, entries: []DiskEntry{entry("media:/snapshots/sys", "")},
			errHas: []string{`target spec "" matches 4 disks`, "/dev/vdd", "which to capture"}},
		{name: "single entry keeps its words", entries: []DiskEntry{entry("media:/snapshots/sys", "size=1TiB")},
			errHas: []string{`target spec "size=1TiB" matches no disk; the disks here are:`, "/dev/nvme0n1 (64.0 MiB, nvme, model QEMU NVMe Ctrl, serial nvme1)"}},
		{name: "single entry by serial", entries: []DiskEntry{entry("media:/snapshots/sys", "serial=DATA-3")}, want: []string{"/dev/vdc"}},
		{name: "too many disks", entries: make([]DiskEntry, MaxDisks+1), errHas: []string{"17 disks, more than 16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := matchDisks(disks, tc.entries, []string{"/dev/sda1"}, tc.capture)
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatalf("matchDisks picked %v, want an error", paths(got))
				}
				for _, want := range tc.errHas {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q\ndoes not contain %q", err, want)
					}
				}
				if got != nil {
					t.Errorf("matchDisks returned disks %v with its error; want none", paths(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := paths(got); strings.Join(g, " ") != strings.Join(tc.want, " ") {
				t.Errorf("got disks %v, want %v", g, tc.want)
			}
		})
	}
}

func paths(disks []Disk) []string {
	var p []string
	for _, d := range disks {
		p = append(p, d.Path)
	}
	return p
}
