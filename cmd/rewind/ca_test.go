package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testca"
	"github.com/rewind-bmr/rewind/snapshot"
)

// labTLS returns a certificate for 127.0.0.1 signed by a CA made here, and
// the CA's certificate as PEM.
func labTLS(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	ca := testca.New(t)
	return ca.Localhost(t), ca.PEM
}

// rewindWithin runs the CLI like rewind, but fails the test when it is
// still running after a minute (a certificate error retried for ten).
func rewindWithin(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rewindBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("rewind %s: still running after a minute (retrying?); output:\n%s", strings.Join(args, " "), out.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run rewind %v: %v", args, err)
	}
	return 0, out.String()
}

// A snapshot on an https server with a lab's own CA: without --ca, inspect,
// verify and restore fail at once naming the certificate problem and
// --ca; with it, restore writes the source's bytes.
func TestCLIRestoreOverHTTPSWithLabCA(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	data := make([]byte, 4<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "srv")
	if code, out := rewind(t, "capture", src, "-o", filepath.Join(root, "pc1"), "--chunk-size", "1MiB", "--progress", "none"); code != 0 {
		t.Fatalf("capture: %d %s", code, out)
	}
	cert, caPEM := labTLS(t)
	caFile := filepath.Join(dir, "lab-ca.pem")
	os.WriteFile(caFile, caPEM, 0o644)
	notCA := filepath.Join(dir, "lab.key")
	os.WriteFile(notCA, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	srv := httptest.NewUnstartedServer(snapshot.NewHandler(root, nil))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	defer srv.Close()
	url := srv.URL + "/pc1"
	target := filepath.Join(dir, "restored.img")

	for _, tc := range []struct {
		args     []string
		wantCode int
		want     []string
	}{
		{[]string{"inspect", url}, 1, []string{"not trusted", "unknown authority", "--ca FILE"}},
		{[]string{"verify", url, "--progress", "none"}, 1, []string{"not trusted", "unknown authority", "--ca FILE"}},
		{[]string{"restore", url, target, "--yes", "--progress", "none"}, 1, []string{"not trusted", "unknown authority", "--ca FILE"}},
		{[]string{"inspect", url, "--ca", notCA}, 1, []string{notCA, "holds no PEM certificate"}},
		{[]string{"inspect", url, "--ca", caFile}, 0, []string{"disk"}},
		{[]string{"verify", url, "--ca", caFile, "--progress", "none"}, 0, nil},
		{[]string{"restore", url, target, "--ca", caFile, "--yes", "--progress", "none"}, 0, nil},
	} {
		code, out := rewindWithin(t, tc.args...)
		if code != tc.wantCode {
			t.Errorf("rewind %s: exit %d, want %d; output:\n%s", strings.Join(tc.args, " "), code, tc.wantCode, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("rewind %s: output lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
			}
		}
	}
	if got, want := sha(t, target), sha(t, src); got != want {
		t.Errorf("%s restored over https with --ca: sha256 %x, want the source's %x", target, got, want)
	}
}
