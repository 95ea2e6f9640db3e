package rescue

import (
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/machine"
)

// TestSummaryUnused checks the console summary's line on file-system free
// space that a used-block snapshot does not store: all zeroed, or how much
// still holds the old disk's bytes.
func TestSummaryUnused(t *testing.T) {
	tests := []struct {
		name string
		wipe *machine.Wipe
		want []string
		not  []string
	}{
		{"all zeroed", &machine.Wipe{Mode: machine.WipeAuto, Uncovered: 600 << 20, Bytes: 600 << 20, Unused: 500 << 20, UnusedZeroed: 500 << 20, Method: "punch-hole"},
			[]string{"Unused:", "500.0 MiB of file-system free space", "all zeroed"}, []string{"left with the old disk's bytes"}},
		{"signatures only", &machine.Wipe{Mode: machine.WipeSignatures, Uncovered: 600 << 20, Bytes: 1 << 20, Unused: 500 << 20, OldRemains: true, Method: "punch-hole"},
			[]string{"Unused:", "0 B zeroed, 500.0 MiB left with the old disk's bytes", `wipe = "full"`}, nil},
		{"whole snapshot", &machine.Wipe{Mode: machine.WipeAuto, Uncovered: 1 << 20, Bytes: 1 << 20, Method: "punch-hole"},
			nil, []string{"Unused:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summary(&Report{Wipe: tt.wipe})
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("summary lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(got, w) {
					t.Errorf("summary has %q:\n%s", w, got)
				}
			}
		})
	}
}

// The countdown names every disk before anything is written, and says
// what will happen to it.
func TestCountdownBannerDisks(t *testing.T) {
	two := []PromptDisk{
		{Snapshot: "http://10.0.2.100/snapshots/srv1-sys (disk 64.0 MiB, 20.0 MiB of data)", Disk: "/dev/nvme0n1 (64.0 MiB, nvme, serial nvme1)"},
		{Snapshot: "http://10.0.2.100/snapshots/srv1-data (disk 48.0 MiB, 9.0 MiB of data)", Disk: "/dev/vdb (48.0 MiB, virtio, serial DATA-2)"},
	}
	for _, tc := range []struct {
		name string
		p    Prompt
		want []string
		not  []string
	}{
		{"one disk restore", Prompt{Snapshot: "media:/snapshots/pc1 (disk 8.0 GiB)", Target: "/dev/sda (8.0 GiB)"},
			[]string{"Snapshot: media:/snapshots/pc1", "Target:   /dev/sda", "ALL DATA ON THE TARGET DISK WILL BE LOST", "any key to restore now"}, nil},
		{"two disks restore", Prompt{Action: ActionRestore, Disks: two},
			[]string{"Restore 2 disks", " 1. /dev/nvme0n1 (64.0 MiB, nvme, serial nvme1)\r\n      <- http://10.0.2.100/snapshots/srv1-sys",
				" 2. /dev/vdb (48.0 MiB, virtio, serial DATA-2)\r\n      <- http://10.0.2.100/snapshots/srv1-data", "ALL DATA ON THESE 2 DISKS WILL BE LOST", "any key to restore now"},
			[]string{"capture"}},
		{"two disks capture", Prompt{Action: ActionCapture, Disks: two},
			[]string{"Capture 2 disks", " 1. /dev/nvme0n1 (64.0 MiB, nvme, serial nvme1)\r\n      -> http://10.0.2.100/snapshots/srv1-sys",
				" 2. /dev/vdb", "-> http://10.0.2.100/snapshots/srv1-data", "only read; nothing on them is changed", "any key to capture now"},
			[]string{"WILL BE LOST", "restore"}},
		{"one disk capture", Prompt{Action: ActionCapture, Snapshot: "media:/snapshots/pc1", Target: "/dev/sda (8.0 GiB)"},
			[]string{"Capture:  /dev/sda (8.0 GiB)", "Into:     media:/snapshots/pc1", "any key to capture now"}, []string{"WILL BE LOST"}},
	} {
		got := countdownBanner(tc.p)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: banner lacks %q:\n%s", tc.name, w, got)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(got, w) {
				t.Errorf("%s: banner has %q:\n%s", tc.name, w, got)
			}
		}
	}
	if got := countdownTick(5, Prompt{Action: ActionCapture, Default: DefaultRestore}); !strings.Contains(got, "Capturing in  5 s") {
		t.Errorf("capture countdown tick: got %q, want Capturing in 5 s", got)
	}
	if got := countdownOutcome(DecideRestore, whyKey, Prompt{Action: ActionCapture}); !strings.Contains(got, "Capture starts (a key was pressed)") {
		t.Errorf("capture countdown outcome: got %q", got)
	}
}

// A capture's summary says capture, and lists each disk with where it went.
func TestSummaryCaptureDisks(t *testing.T) {
	r := &Report{Status: StatusFailed, Action: ActionCapture, Disks: []DiskReport{
		{Snapshot: "http://lab/snapshots/srv1-sys", Published: "http://lab/snapshots/srv1-sys/2026-11-23T10:15:00Z", Status: DiskOK, BytesStored: 20 << 20},
		{Snapshot: "http://lab/snapshots/srv1-data", Spec: "size=48MiB", Status: DiskFailed, Error: "upload refused"},
	}}
	r.Disks[0].Target.Description = "/dev/nvme0n1 (64.0 MiB)"
	r.Finish(StatusFailed, nil, r.Started)
	got := Summary(r)
	for _, w := range []string{"CAPTURE FAILED", "Disk 1:    /dev/nvme0n1 (64.0 MiB) -> http://lab/snapshots/srv1-sys: ok, 20.0 MiB stored, published as http://lab/snapshots/srv1-sys/2026-11-23T10:15:00Z",
		`Disk 2:    target "size=48MiB" -> http://lab/snapshots/srv1-data: failed`, "Captured: disk 1. Not captured: disk 2."} {
		if !strings.Contains(got, w) {
			t.Errorf("summary lacks %q:\n%s", w, got)
		}
	}
}

// The machine menu names an entry with several disks by its first
// snapshot and how many more there are, and marks a capture.
func TestMachineMenuDisks(t *testing.T) {
	p := &Plan{Machines: []Machine{
		{Name: "pc1", Snapshot: "media:/snapshots/pc1"},
		{Name: "srv1", Action: ActionCapture, Disks: []DiskEntry{{Snapshot: "http://lab/snapshots/srv1-sys"}, {Snapshot: "http://lab/snapshots/srv1-data"}}},
	}}
	got := machineMenu(p, Identity{})
	for _, w := range []string{"1) pc1              media:/snapshots/pc1", "2) srv1             capture to http://lab/snapshots/srv1-sys and 1 more disks"} {
		if !strings.Contains(got, w) {
			t.Errorf("menu lacks %q:\n%s", w, got)
		}
	}
}
