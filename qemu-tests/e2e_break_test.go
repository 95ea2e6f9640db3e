package qemutests

// Breaking a capture at boot from the outside: the guest boots the real
// initramfs (direct kernel boot, plan in the initramfs) under TCG and
// uploads to 'rewind serve' on the host through guestfwd.
//
//	/dev/nvme0n1 (serial srcsys)  64 MiB GPT: vfat + ext4 (sourceDisks' sys)
//	/dev/vda     (serial srcdata) 48 MiB GPT: ext4 + raw   (only in the late-server case)

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/rescue"
)

const e2eToken = "qemu-e2e-break-token-0123456789abcdef"

// e2eCapturePlan is a two-disk capture plan of srv1 to the host's server.
func e2eCapturePlan() string {
	return fmt.Sprintf(`
[countdown]
seconds = 0
[upload]
token = %[2]q
[[machine]]
name = "srv1"
action = "capture"
after = "poweroff"
[[machine.disk]]
snapshot = "%[1]s/snapshots/srv1-sys"
target = "serial=srcsys"
[[machine.disk]]
snapshot = "%[1]s/snapshots/srv1-data"
target = "serial=srcdata"
`, GuestServer, e2eToken)
}

// TestE2EBreakCaptureSecondDiskMissingQEMU: the two-disk capture plan on a
// machine whose second disk is missing is refused as a whole: the report
// fails naming the entry that matches no disk, no disk is read into an
// upload, and the server holds nothing (no name, no staging).
func TestE2EBreakCaptureSecondDiskMissingQEMU(t *testing.T) {
	setup(t, false)
	sys, _ := sourceDisks(t)
	tokenFile := filepath.Join(t.TempDir(), "upload-token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lab := startServe(t, rewindBin(t), t.TempDir(), "--upload-token", tokenFile)
	vm := &VM{HTTPPort: lab.Port, Timeout: 200 * time.Second,
		Drives: []Drive{{Path: sys.Path, Bus: sys.Bus, Serial: sys.Serial}}}
	_, r := boot(t, vm, e2eCapturePlan())
	if r.Status != rescue.StatusFailed {
		t.Fatalf("report status %q, want %q: a machine with a disk missing is never captured in part", r.Status, rescue.StatusFailed)
	}
	if !strings.Contains(r.Error, "serial=srcdata") {
		t.Errorf("report error %q does not name the entry that matches no disk (serial=srcdata)", r.Error)
	}
	for i, d := range r.Disks {
		if d.Status == rescue.DiskOK || d.BytesStored != 0 {
			t.Errorf("report disk %d (%s): status %q, %d bytes stored; want nothing captured", i, d.Snapshot, d.Status, d.BytesStored)
		}
	}
	for _, name := range []string{"snapshots", ".upload"} {
		entries, _ := os.ReadDir(filepath.Join(lab.Dir, name))
		if len(entries) != 0 {
			t.Errorf("server: %s holds %d entries after a refused capture, want none", name, len(entries))
		}
	}
	wantUnchanged(t, sys)
}

// TestE2EBreakCaptureServerLateQEMU: the capture's upload server is down
// when the rescue first tries it (the host port closes every connection
// at once, as a server that is not up yet does through guestfwd), and
// rewind serve starts on that port 20 s after that first attempt: the
// rescue says it retries, then publishes both disks (a lab server
// restarting while machines boot must not fail their captures).
func TestE2EBreakCaptureServerLateQEMU(t *testing.T) {
	setup(t, false)
	sys, data := sourceDisks(t)
	tokenFile := filepath.Join(t.TempDir(), "upload-token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	bin := rewindBin(t)
	var first atomic.Int64 // the first attempt, Unix ns
	started := make(chan *exec.Cmd, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			if first.CompareAndSwap(0, time.Now().UnixNano()) {
				time.AfterFunc(20*time.Second, func() {
					ln.Close()
					cmd := exec.Command(bin, "serve", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--upload-token", tokenFile)
					if err := cmd.Start(); err != nil {
						started <- nil
						return
					}
					started <- cmd
				})
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case cmd := <-started:
			if cmd != nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		default:
		}
	})
	vm := &VM{HTTPPort: port, Timeout: 300 * time.Second,
		Drives: []Drive{{Path: sys.Path, Bus: sys.Bus, Serial: sys.Serial}, {Path: data.Path, Bus: data.Bus, Serial: data.Serial}}}
	out, r := boot(t, vm, e2eCapturePlan())
	if first.Load() == 0 {
		t.Fatal("the guest never reached the host's port: the test proves nothing")
	}
	t.Logf("the capture ended %.0fs after the rescue's first attempt (the server came up 20 s after it)", time.Since(time.Unix(0, first.Load())).Seconds())
	if !strings.Contains(out, "open the upload session: attempt 1 failed, retrying") {
		t.Errorf("the console does not say that the rescue retries the upload while the server is down")
	}
	wantDisksOK(t, r, rescue.ActionCapture, sys.Serial, data.Serial)
	wantUnchanged(t, sys, data)
	for _, name := range []string{"srv1-sys", "srv1-data"} {
		if _, err := os.Readlink(filepath.Join(dir, "snapshots", name, "latest")); err != nil {
			t.Errorf("server: snapshots/%s/latest: %v; want it published", name, err)
		}
	}
}
