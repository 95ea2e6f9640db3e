package rescue

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A machine with two disks reports progress: the lab page shows both
// disks with their status, and the progress over both.
func TestReportPageDisks(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	url := l.url + "/reports/"
	r := testReport("srv1", "52:54:00:00:00:21", StatusFailed, time.Now())
	r.Action = ActionRestore
	r.Disks = newDiskReports([]DiskEntry{
		{Snapshot: "http://lab/snapshots/srv1-sys", Target: "serial=nvme1"},
		{Snapshot: "http://lab/snapshots/srv1-data", Target: "size=48MiB"},
	})
	r.Disks[0].setTarget(Disk{Path: "/dev/nvme0n1", Size: 64 << 20, Serial: "nvme1", Transport: "nvme"})
	r.Disks[1].setTarget(Disk{Path: "/dev/vdb", Size: 48 << 20, Serial: "DATA-2", Transport: "virtio"})
	r.Disks[0].DataBytes, r.Disks[0].BytesWritten, r.Disks[0].Status = 300, 300, DiskOK
	r.Disks[1].DataBytes, r.Disks[1].Status = 100, DiskRunning

	// 50 of disk 2's 100 bytes: 350 of 400 over both disks.
	if err := PostReport(context.Background(), nil, url, testToken, r.progressCopy(50, 0)); err != nil {
		t.Fatal(err)
	}
	page := get(t, url)
	for _, want := range []string{"/dev/nvme0n1 (64.0 MiB, nvme, serial nvme1) (ok)<br>/dev/vdb (48.0 MiB, virtio, serial DATA-2) (running)",
		"http://lab/snapshots/srv1-sys<br>http://lab/snapshots/srv1-data", `value="88"`} {
		if !strings.Contains(page, want) {
			t.Errorf("lab page lacks %q:\n%s", want, page)
		}
	}

	// The progress copy leaves the flow's report as it was.
	if r.Status != StatusFailed || r.Disks[1].BytesWritten != 0 {
		t.Errorf("progressCopy changed the report: status %s, disk 2 written %d", r.Status, r.Disks[1].BytesWritten)
	}

	// A capture is marked as one.
	r.Action = ActionCapture
	r.Disks[1].Status = DiskOK
	r.Finish(StatusSuccess, nil, time.Now())
	if err := PostReport(context.Background(), nil, url, testToken, r); err != nil {
		t.Fatal(err)
	}
	if page := get(t, url); !strings.Contains(page, "done <small>capture</small>") {
		t.Errorf("lab page does not mark srv1's capture:\n%s", page)
	}
}
