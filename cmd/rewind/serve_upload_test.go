package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
)

// rewind serve --upload-token --sign --keep: uploads are accepted, signed
// by the server, and only the newest generations stay; rewind verify
// reads NAME/latest and checks the server's signature.
func TestServeUploads(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "srv")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "upload-token")
	const token = "0123456789abcdef0123456789abcdef-upload"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "lab")
	if code, out := rewind(t, "key", "generate", key); code != 0 {
		t.Fatalf("key generate: %d %s", code, out)
	}
	port := freePort(t)
	srv := exec.Command(rewindBin, "serve", root, "--listen", "127.0.0.1:"+port, "--upload-token", tokenFile, "--sign", key+".key", "--keep", "2")
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	waitListening(t, "127.0.0.1:"+port)

	data := testdisk.RandomBytes(11, 1<<20)
	gens := []string{"2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z", "2026-11-23T12:00:00Z"}
	for _, gen := range gens {
		c, err := upload.NewClient("http://127.0.0.1:"+port+"/snapshots/pc1", upload.ClientOptions{Token: token, Overwrite: true, Generation: gen})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Open(context.Background()); err != nil {
			t.Fatalf("open upload %s: %v\nserver: %s", gen, err, srvOut.String())
		}
		if _, err := snapshot.CaptureTo(context.Background(), bytes.NewReader(data), c, snapshot.CaptureOptions{DiskSize: int64(len(data)), ChunkSize: 64 << 10}); err != nil {
			t.Fatalf("upload %s: %v", gen, err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(root, "snapshots", "pc1"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := gens[1] + " " + gens[2] + " latest"; strings.Join(names, " ") != want {
		t.Errorf("DIR/snapshots/pc1 holds %v with --keep 2, want %s", names, want)
	}
	code, out := rewind(t, "verify", "http://127.0.0.1:"+port+"/snapshots/pc1/latest", "--trust", key+".pub", "--progress", "none")
	if code != 0 || !strings.Contains(out, "signature verified") {
		t.Errorf("verify pc1/latest with the server's public key: exit %d %s", code, out)
	}
}

func TestServeUploadFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "srv")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	outsideTok := filepath.Join(dir, "upload-token")
	insideTok := filepath.Join(root, "upload-token")
	reportTok := filepath.Join(dir, "report-token")
	for _, p := range []string{outsideTok, insideTok} {
		if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(reportTok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "lab")
	if code, out := rewind(t, "key", "generate", key); code != 0 {
		t.Fatalf("key generate: %d %s", code, out)
	}
	insideKey := filepath.Join(root, "lab.key")
	if b, err := os.ReadFile(key + ".key"); err != nil || os.WriteFile(insideKey, b, 0o600) != nil {
		t.Fatal("copy key")
	}
	// Secrets other users can read, and secrets with a second name
	// (a hard link) inside DIR, which the path check cannot see.
	readableTok := filepath.Join(dir, "readable-token")
	if err := os.WriteFile(readableTok, []byte("0123456789abcdef0123456789abcdee\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	readableKey := filepath.Join(dir, "readable.key")
	if b, err := os.ReadFile(key + ".key"); err != nil || os.WriteFile(readableKey, b, 0o640) != nil {
		t.Fatal("copy key")
	}
	linkedTok := filepath.Join(dir, "linked-token")
	linkedReport := filepath.Join(dir, "linked-report-token")
	for _, p := range []string{linkedTok, linkedReport} {
		if err := os.WriteFile(p, []byte("0123456789abcdef0123456789abcdea\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(p, filepath.Join(root, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"upload token readable by others", []string{"--upload-token", readableTok}, "chmod 600 " + readableTok},
		{"signing key readable by others", []string{"--upload-token", outsideTok, "--sign", readableKey}, "chmod 600 " + readableKey},
		{"upload token hard-linked into DIR", []string{"--upload-token", linkedTok}, "has 2 hard links"},
		{"report token hard-linked into DIR", []string{"--report-token", linkedReport}, "has 2 hard links"},
		{"keep 0", []string{"--upload-token", outsideTok, "--keep", "0"}, "--keep 0"},
		{"upload token inside DIR", []string{"--upload-token", insideTok}, "upload token file " + insideTok + " is inside"},
		{"signing key inside DIR", []string{"--upload-token", outsideTok, "--sign", insideKey}, "signing key " + insideKey + " is inside"},
		{"sign without uploads", []string{"--sign", key + ".key"}, "uploads are off"},
		{"upload token is the report token", []string{"--upload-token", outsideTok, "--report-token", reportTok}, "is the report token"},
		{"sign with a public key", []string{"--upload-token", outsideTok, "--sign", key + ".pub"}, "--sign"},
	} {
		args := append([]string{"serve", root, "--listen", "127.0.0.1:0"}, tc.args...)
		// The timeout only turns a server that starts anyway into a
		// failure instead of a hang.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, rewindBin, args...).CombinedOutput()
		hung := ctx.Err() != nil
		cancel()
		if err == nil || hung || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: rewind %v: %v %q, want a failure naming %q", tc.name, tc.args, err, out, tc.want)
		}
	}
}
