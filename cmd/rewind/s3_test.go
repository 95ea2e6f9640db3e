package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

// rewindEnv runs the CLI with env added to a clean environment (no AWS
// settings of the machine running the tests leak in).
func rewindEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(rewindBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run rewind %v: %v", args, err)
	}
	return 0, out.String()
}

// TestCLIS3 is what a user does with an object store: capture a used
// disk (a GPT with an ext4 file system holding live and deleted files) to
// s3:// with the standard AWS environment, inspect, verify and restore it
// from there byte for byte, with a profile file too; a wrong secret fails
// at once naming the problem, and no output ever holds a secret.
func TestCLIS3(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	srv := s3test.Start(t, "lab")
	dir := t.TempDir()
	src := &usedSource{path: filepath.Join(dir, "disk.img"), size: 64 * mib}
	src.parts = []*testdisk.FSImage{
		testdisk.MakeFS(t, filepath.Join(dir, "p1.img"), "ext4", 40*mib, 16*mib, 11),
		testdisk.MakeFS(t, filepath.Join(dir, "p2.img"), "", 8*mib, 0, 12),
	}
	src.offsets = testdisk.GPTDisk(t, src.path, src.size, 13, src.parts...)
	img := src.path
	env := srv.Env()
	loc := "s3://lab/rooms/b/pc1"

	code, out := rewindEnv(t, env, "capture", img, "-o", loc, "--progress", "none")
	if code != 0 {
		t.Fatalf("capture -o %s: exit %d\n%s", loc, code, out)
	}
	if !strings.Contains(out, "into "+loc) {
		t.Errorf("capture summary does not name %s:\n%s", loc, out)
	}
	code, out = rewindEnv(t, env, "inspect", loc)
	if code != 0 || !strings.Contains(out, "ext4") {
		t.Fatalf("inspect %s: exit %d\n%s", loc, code, out)
	}
	code, out = rewindEnv(t, env, "verify", loc)
	if code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("verify %s: exit %d\n%s", loc, code, out)
	}
	target := filepath.Join(dir, "restored.img")
	code, out = rewindEnv(t, env, "restore", "--yes", loc, target)
	if code != 0 {
		t.Fatalf("restore %s: exit %d\n%s", loc, code, out)
	}
	// Every file, fsck clean, no deleted byte, free blocks zeroed.
	checkRestored(t, "restore from "+loc, target, src)

	// Pre-signed URLs for a plan: they read the snapshot with no
	// credential at all, and hold no secret.
	code, out = rewindEnv(t, env, "s3", "presign", loc, "--expires", "1h")
	if code != 0 {
		t.Fatalf("s3 presign: exit %d\n%s", code, out)
	}
	var plan struct {
		S3 struct {
			Presigned map[string]string `toml:"presigned"`
		} `toml:"s3"`
	}
	var tomlPart strings.Builder // stdout's lines; stderr's note is prose
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "[") || strings.HasPrefix(l, "#") || strings.HasPrefix(l, `"s3://`) {
			tomlPart.WriteString(l + "\n")
		}
	}
	if _, err := toml.Decode(tomlPart.String(), &plan); err != nil {
		t.Fatalf("s3 presign printed no TOML table: %v\n%s", err, out)
	}
	if strings.Contains(out, srv.Secret) || len(plan.S3.Presigned) < 2 {
		t.Fatalf("s3 presign: %d URLs (want the manifest and segments), secret shown: %v", len(plan.S3.Presigned), strings.Contains(out, srv.Secret))
	}
	anon := snapshot.S3Options{Endpoint: srv.Endpoint, Presigned: plan.S3.Presigned}
	ps, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &anon})
	if err != nil {
		t.Fatalf("open with the printed URLs alone: %v", err)
	}
	if _, err := restore.Verify(context.Background(), ps, restore.Options{}); err != nil {
		t.Fatalf("verify with the printed URLs alone: %v", err)
	}
	ps.Close()
	if code, out = rewindEnv(t, env, "s3", "presign", loc, "--expires", "200h"); code != 2 || !strings.Contains(out, "1m to 168h") {
		t.Errorf("s3 presign --expires 200h: exit %d, want a usage error naming the limit:\n%s", code, out)
	}

	// The same through a profile in a shared credentials file.
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte("[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n[lab-ro]\naws_access_key_id = "+srv.Access+"\naws_secret_access_key = "+srv.Secret+"\n"), 0o600)
	penv := []string{"AWS_SHARED_CREDENTIALS_FILE=" + creds, "AWS_ENDPOINT_URL=" + srv.Endpoint}
	if code, out = rewindEnv(t, penv, "verify", "--s3-profile", "lab-ro", loc); code != 0 {
		t.Fatalf("verify --s3-profile lab-ro: exit %d\n%s", code, out)
	}
	if code, out = rewindEnv(t, append(penv, "AWS_PROFILE=lab-ro"), "verify", loc); code != 0 {
		t.Fatalf("verify with AWS_PROFILE=lab-ro: exit %d\n%s", code, out)
	}
	code, out = rewindEnv(t, penv, "verify", "--s3-profile", "lab-rw", loc)
	if code == 0 || !strings.Contains(out, "no profile [lab-rw]") {
		t.Fatalf("verify --s3-profile lab-rw (absent): exit %d\n%s", code, out)
	}

	wrong := []string{"AWS_ACCESS_KEY_ID=" + srv.Access, "AWS_SECRET_ACCESS_KEY=not-the-secret-42", "AWS_ENDPOINT_URL=" + srv.Endpoint}
	for _, args := range [][]string{
		{"restore", "--yes", loc, filepath.Join(dir, "x.img")},
		{"capture", img, "-o", "s3://lab/pc2", "--progress", "none"},
	} {
		code, out = rewindEnv(t, wrong, args...)
		if code == 0 || !strings.Contains(out, "403 SignatureDoesNotMatch") || !strings.Contains(out, "access key "+srv.Access) {
			t.Errorf("rewind %s with a wrong secret: exit %d, want 403 SignatureDoesNotMatch naming the key:\n%s", strings.Join(args, " "), code, out)
		}
		if strings.Contains(out, "not-the-secret-42") {
			t.Errorf("rewind %s printed the secret:\n%s", args[0], out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.img")); err == nil {
		t.Error("a restore refused by the store created its target")
	}
	code, out = rewindEnv(t, env, "capture", img, "-o", loc, "--progress", "none")
	if code == 0 || !strings.Contains(out, "a snapshot exists there") {
		t.Errorf("a second capture to %s: exit %d, want a refusal:\n%s", loc, code, out)
	}
	for _, args := range [][]string{{"inspect", loc}, {"verify", loc}} {
		_, out = rewindEnv(t, env, args...)
		if strings.Contains(out, srv.Secret) {
			t.Errorf("rewind %s printed the secret", args[0])
		}
	}
}

// TestS3PublicBucketThroughCache: the lab layout of docs/scale.md with an
// object store: a bucket readable by anyone on the lab network, a caching
// nginx per room in front of it, and machines restoring from the cache as
// from any http(s) server. Two restores: identical to the source, the
// second's segments all served from the cache, the manifest never.
func TestS3PublicBucketThroughCache(t *testing.T) {
	srv := s3test.Start(t, "pub")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, testdisk.RandomBytes(21, 12<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := rewindEnv(t, srv.Env(), "capture", img, "-o", "s3://pub/rooms/pc1", "--segment-size", "8MiB", "--progress", "none"); code != 0 {
		t.Fatalf("capture: exit %d\n%s", code, out)
	}
	pol := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::pub/*"]}]}`
	if err := srv.Client(t).SetBucketPolicy(context.Background(), "pub", pol); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.Endpoint + "/pub/rooms/pc1/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("anonymous GET of the manifest: %s, Cache-Control %q; want 200 and no-cache", resp.Status, resp.Header.Get("Cache-Control"))
	}
	cache := startNginxCache(t, srv.Addr)
	seen := 0
	var runs [2][][2]string
	for i := range runs {
		target := filepath.Join(dir, "restored.img")
		os.Remove(target)
		if code, out := rewindEnv(t, nil, "restore", "http://"+cache.addr+"/pub/rooms/pc1", target, "--progress", "none"); code != 0 {
			t.Fatalf("restore through the cache (run %d): exit %d\n%s", i+1, code, out)
		}
		if sha(t, target) != sha(t, img) {
			t.Fatalf("restore through the cache (run %d) differs from the source", i+1)
		}
		runs[i], seen = cache.requests(t, seen)
	}
	segments := 0
	for _, r := range runs[1] {
		switch status, uri := r[0], r[1]; {
		case strings.Contains(uri, "/data."):
			segments++
			if status != "HIT" {
				t.Errorf("second restore: %s was %s, want HIT", uri, status)
			}
		case strings.HasSuffix(uri, "/manifest.json") && status == "HIT":
			t.Errorf("second restore: the manifest came from the cache")
		}
	}
	if segments == 0 {
		t.Errorf("second restore: no segment request in the cache's log: %v", runs[1])
	}
}
