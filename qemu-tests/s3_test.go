package qemutests

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestS3CaptureRestoreQEMU (issue 14): machine A's rescue flow captures
// its system disk to an S3 store (versitygw, which checks every
// signature; reached through guestfwd, restrict=on) with the plan's named
// credential from the image; machine B, whose image holds no credential,
// restores it from the store with the pre-signed URLs of its plan onto a
// used disk, checked file by file from the host. The credential's secret
// and the URLs' signatures appear in no console line.
func TestS3CaptureRestoreQEMU(t *testing.T) {
	setup(t, false)
	sys, _ := sourceDisks(t)
	srv := s3test.Start(t, "lab")
	_, port, _ := net.SplitHostPort(srv.Addr)
	p, _ := strconv.Atoi(port)
	creds := []byte(fmt.Sprintf("[lab-rw]\naws_access_key_id = %s\naws_secret_access_key = %s\n", srv.Access, srv.Secret))
	const loc = "s3://lab/rooms/a/srv1-sys"
	plan := func(action, target string) string {
		return fmt.Sprintf(`
[countdown]
seconds = 0
[s3]
endpoint = %q
credential = "lab-rw"
[[machine]]
name = "srv1"
action = %q
after = "poweroff"
snapshot = %q
target = %q
`, GuestServer, action, loc, target)
	}
	initrd := func(plan string) string {
		path := filepath.Join(t.TempDir(), "initrd")
		if err := Initrd(shared.base, path, &initramfs.Overlay{Modules: shared.modules, Plan: []byte(plan), S3Credentials: creds}); err != nil {
			t.Fatal(err)
		}
		return path
	}

	outA, rA := boot(t, &VM{HTTPPort: p, Initrd: initrd(plan("capture", "serial="+sys.Serial)), Timeout: 300 * time.Second,
		Drives: []Drive{{Path: sys.Path, Bus: sys.Bus, Serial: sys.Serial}}}, "")
	wantDisksOK(t, rA, rescue.ActionCapture, sys.Serial)
	wantUnchanged(t, sys)
	o := snapshot.S3Options{Endpoint: srv.Endpoint, Credential: &snapshot.S3Credential{AccessKeyID: srv.Access, SecretAccessKey: srv.Secret, Source: "the test"}}
	snap, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o})
	if err != nil {
		t.Fatalf("the capture's snapshot in the store: %v", err)
	}
	m := snap.Manifest
	snap.Close()
	if m.Origin.Hostname != "srv1" {
		t.Errorf("manifest origin %+v, want hostname srv1", m.Origin)
	}

	// Machine B's image holds no credential: its plan carries pre-signed
	// URLs, made for the store's address as the guest reaches it.
	guest := o
	guest.Endpoint = GuestServer
	urls, err := snapshot.PresignS3(loc, guest, snapshot.SnapshotFiles(m, false), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	for k, v := range urls {
		fmt.Fprintf(&table, "%q = %q\n", k, v)
	}
	restorePlan := fmt.Sprintf(`
[countdown]
seconds = 0
[s3]
endpoint = %q
[s3.presigned]
%s
[[machine]]
name = "srv1"
after = "poweroff"
snapshot = %q
target = "serial=newsys"
`, GuestServer, table.String(), loc)
	restoreInitrd := filepath.Join(t.TempDir(), "initrd")
	if err := Initrd(shared.base, restoreInitrd, &initramfs.Overlay{Modules: shared.modules, Plan: []byte(restorePlan)}); err != nil {
		t.Fatal(err)
	}
	target := usedDisk(t, "newsys", 64<<20, 3101)
	outB, rB := boot(t, &VM{HTTPPort: p, Initrd: restoreInitrd, Timeout: 300 * time.Second,
		Drives: []Drive{{Path: target, Bus: "nvme", Serial: "newsys"}}}, "")
	wantDisksOK(t, rB, rescue.ActionRestore, "newsys")
	checkRestoredDisk(t, sys, target, m)
	for name, out := range map[string]string{"capture": outA, "restore": outB} {
		if strings.Contains(out, srv.Secret) {
			t.Errorf("the %s's console shows the S3 secret", name)
		}
		if strings.Contains(out, "X-Amz-Signature") {
			t.Errorf("the %s's console shows a pre-signed URL's signature", name)
		}
	}
}
