package qemutests

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/rescue"
)

// The boot menu's "Capture this machine" entry, chosen on the serial
// console (GRUB draws its menu there too), turns the plan's restore entry
// into a capture: the countdown says "capture" and lists where the disk
// goes. The plan's countdown default is abort, so the capture stops there:
// the report names a capture, aborted, and nothing was read into a
// snapshot or written to the disk.
func TestMediaCaptureEntry(t *testing.T) {
	setup(t, true)
	plan := `
[countdown]
seconds = 2
default = "abort"
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/cap1"
target = "serial=target1"
`
	_, img := buildMedium(t, initramfs.FormatUSB, plan, false)
	target := blank(t)
	vm := mediaVM(img, "usb", target)
	const entry = "Rewind: Capture this machine"
	vm.Keys = []Key{
		{When: entry, Send: "\x1b[B"},
		{When: entry, Send: "\x1b[B", Delay: 300 * time.Millisecond},
		{When: entry, Send: "\r", Delay: 300 * time.Millisecond},
	}
	vm.LogPath = filepath.Join(t.TempDir(), "console.log")
	vm.Timeout = 150 * time.Second
	out := runLogged(t, vm, " (firmware, boot loader, rescue, countdown)")
	if !strings.Contains(out, "Press any key to capture now") {
		t.Errorf("the capture entry showed no capture countdown")
	}
	if strings.Contains(out, "Press any key to restore now") {
		t.Errorf("the capture entry showed a restore countdown")
	}
	r := consoleReport(t, out)
	if r.Action != rescue.ActionCapture {
		t.Errorf("report action: got %q, want %q", r.Action, rescue.ActionCapture)
	}
	wantUntouched(t, target, r, rescue.StatusAborted)
	// The REWIND partition (the third) holds no trace of the snapshot.
	var table struct {
		PartitionTable struct {
			Partitions []struct{ Start int64 } `json:"partitions"`
		} `json:"partitiontable"`
	}
	js, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil || json.Unmarshal(js, &table) != nil || len(table.PartitionTable.Partitions) < 3 {
		t.Fatalf("sfdisk --json %s: %v\n%s", img, err, js)
	}
	off := table.PartitionTable.Partitions[2].Start * 512
	list, err := exec.Command("mdir", "-/", "-b", "-i", fmt.Sprintf("%s@@%d", img, off), "::/").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir of the REWIND partition: %v\n%s", err, list)
	}
	if strings.Contains(string(list), "cap1") {
		t.Errorf("an aborted capture left files on the medium:\n%s", list)
	}
}
