package main

import (
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/upload"
)

// labServer runs rewind serve's server (rescue.NewLabServer) on
// 127.0.0.1 over root, taking uploads with the token in tokenFile, and
// returns its base URL.
func labServer(t *testing.T, root, tokenFile string) string {
	t.Helper()
	srv, err := rescue.NewLabServer(root, rescue.LabServerConfig{UploadTokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("lab server: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// writeToken writes a token file as 'openssl rand -hex 32' makes one.
func writeToken(t *testing.T, path, tok string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// capturedInto returns the destination of "captured SRC into DEST in T".
func capturedInto(t *testing.T, out string) string {
	t.Helper()
	line := lineWith(out, "captured ")
	_, rest, ok := strings.Cut(line, " into ")
	dest, _, ok2 := strings.Cut(rest, " in ")
	if !ok || !ok2 {
		t.Fatalf("no \"captured ... into DEST in ...\" line in:\n%s", out)
	}
	return dest
}

// stored lists the files the server holds under root/name, staging left out.
func stored(t *testing.T, root, name string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(root, name), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	return files
}

// rewind capture -o http://HOST/snapshots/pc1 uploads to rewind serve: a
// wrong or missing token and an existing name without --overwrite are
// refused before the disk is read and publish nothing; the upload is
// published as a generation and as latest, signed by the host's --sign
// key, and verify and restore from either URL give the source's bytes;
// --overwrite adds a generation that latest then names.
func TestCLICaptureUpload(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if _, err := (testdisk.Sample{Size: 64 << 20, ESPSize: 33 << 20, ExtSize: 16 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 6 << 20, Seed: 23}).Build(src); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "lab")
	if code, out := rewind(t, "key", "generate", key); code != 0 {
		t.Fatalf("key generate: %d %s", code, out)
	}
	good := writeToken(t, filepath.Join(dir, "upload-token"), strings.Repeat("5e", 32))
	wrong := writeToken(t, filepath.Join(dir, "wrong-token"), strings.Repeat("a1", 32))
	root := filepath.Join(dir, "srv")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	base := labServer(t, root, good)
	off := labServer(t, root, "")
	url := base + "/snapshots/pc1"
	capture := []string{"capture", src, "-o", url, "--chunk-size", "1MiB", "--segment-size", "4MiB", "--sign", key + ".key", "--progress", "none"}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"wrong token", append(capture, "--upload-token", wrong), 1, []string{url, "refused the upload token", "401", "--upload-token " + wrong}},
		{"no token", capture, 2, []string{url, "--upload-token FILE"}},
		{"token file missing", append(capture, "--upload-token", filepath.Join(dir, "nothing")), 1, []string{filepath.Join(dir, "nothing"), "no such file", "rewind serve --upload-token"}},
		{"uploads off", []string{"capture", src, "-o", off + "/snapshots/pc1", "--upload-token", good}, 1, []string{"takes no uploads", "rewind serve with --upload-token"}},
		{"directory with --overwrite", []string{"capture", src, "-o", filepath.Join(dir, "snap"), "--overwrite"}, 2, []string{"--overwrite", "uploads"}},
		{"other scheme", []string{"capture", src, "-o", "ftp://bucket/pc1"}, 2, []string{"ftp", "http(s)://HOST/NAME"}},
		{"s3 with an upload token", []string{"capture", src, "-o", "s3://bucket/pc1", "--upload-token", good}, 2, []string{"s3://", "--upload-token and --overwrite are for rewind serve"}},
		{"bad name", []string{"capture", src, "-o", base + "/reports/pc1", "--upload-token", good}, 2, []string{"reports"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := rewind(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit status: got %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if files := stored(t, root, "snapshots"); len(files) > 0 {
				t.Errorf("a refused upload left files on the server: %v", files)
			}
		})
	}

	code, out := rewind(t, append(capture, "--upload-token", good)...)
	if code != 0 {
		t.Fatalf("upload to %s: exit %d:\n%s", url, code, out)
	}
	first := capturedInto(t, out)
	if !strings.HasPrefix(first, url+"/") {
		t.Fatalf("published at %s, want a generation under %s", first, url)
	}
	if want := "latest    " + url + "/latest"; !strings.Contains(out, want) {
		t.Errorf("upload summary does not say %q:\n%s", want, out)
	}
	gen := strings.TrimPrefix(first, url+"/")
	if _, err := time.Parse(upload.GenerationLayout, gen); err != nil {
		t.Errorf("generation %q is not a UTC time: %v", gen, err)
	}
	for _, loc := range []string{first, url + "/latest"} {
		if code, out := rewind(t, "verify", loc, "--trust", key+".pub", "--progress", "none"); code != 0 || !strings.Contains(out, "signature verified") {
			t.Errorf("verify %s: exit %d, want 0 and a verified signature:\n%s", loc, code, out)
		}
		target := filepath.Join(dir, "restored-"+filepath.Base(loc)+".img")
		if code, out := rewind(t, "restore", loc, target, "--trust", key+".pub", "--progress", "none"); code != 0 {
			t.Errorf("restore %s: exit %d:\n%s", loc, code, out)
		} else if sha(t, target) != sha(t, src) {
			t.Errorf("restore %s onto %s: the bytes differ from the source %s", loc, target, src)
		}
	}

	// The name exists: refused without --overwrite, before anything is sent.
	before := stored(t, root, "snapshots")
	code, out = rewind(t, append(capture, "--upload-token", good)...)
	if code != 1 || !strings.Contains(out, "exists") || !strings.Contains(out, "--overwrite") {
		t.Errorf("second upload to %s without --overwrite: exit %d, want 1 naming the existing snapshot and --overwrite:\n%s", url, code, out)
	}
	if after := stored(t, root, "snapshots"); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("a refused upload changed the server's files: before %v, after %v", before, after)
	}

	// With --overwrite, a new generation, which latest then names. The
	// generation is the second the capture starts: wait for the next one.
	g, _ := time.Parse(upload.GenerationLayout, gen)
	for !time.Now().After(g.Add(time.Second)) {
		time.Sleep(100 * time.Millisecond)
	}
	code, out = rewind(t, append(capture, "--upload-token", good, "--overwrite")...)
	if code != 0 {
		t.Fatalf("upload to %s with --overwrite: exit %d:\n%s", url, code, out)
	}
	second := capturedInto(t, out)
	if second == first || !strings.HasPrefix(second, url+"/") {
		t.Errorf("upload with --overwrite published at %s, want a new generation under %s (the first is %s)", second, url, first)
	}
	link, err := os.Readlink(filepath.Join(root, "snapshots", "pc1", "latest"))
	if err != nil || filepath.Base(link) != filepath.Base(second) {
		t.Errorf("snapshots/pc1/latest on the server: got %q (%v), want it to name %s", link, err, filepath.Base(second))
	}
	for _, loc := range []string{first, second} {
		if code, out := rewind(t, "verify", loc, "--trust", key+".pub", "--progress", "none"); code != 0 {
			t.Errorf("verify %s: exit %d:\n%s", loc, code, out)
		}
	}
}
