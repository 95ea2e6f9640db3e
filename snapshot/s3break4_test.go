package snapshot_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestBreakPresignedExpireMidRestore: pre-signed URLs that expire in
// seconds are refused at Open, before a restore writes anything (it would
// fail part-way).
func TestBreakPresignedExpireMidRestore(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(6<<20, 41)
	const loc = "s3://lab/exp/pc1"
	full := s3Opts(srv, srv.Secret)
	_, m, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), loc, full)
	if err != nil {
		t.Fatal(err)
	}
	urls, err := snapshot.PresignS3(loc, full, snapshot.SnapshotFiles(m, false), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	o := snapshot.S3Options{Endpoint: srv.Endpoint, Presigned: urls}
	_, err = snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "too soon for a restore") {
		t.Fatalf("open with URLs that expire in 2 s: %v; want a refusal before anything is read", err)
	}
}

// TestBreakPresignedHostAndScheme: CheckPresigned checks only the path:
// a URL to any host (not the plan's endpoint), over plain http, or a
// virtual-host URL whose path is the path-style path (another object:
// bucket lab, key lab/...), all pass; and PlainHTTPWarning says nothing
// for a pre-signed reader (bearer URLs and the disk in clear text).
func TestBreakPresignedHostAndScheme(t *testing.T) {
	const q = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261208T000000Z&X-Amz-Expires=600&X-Amz-Signature=ab"
	for name, u := range map[string]string{
		"other host":               "https://attacker.example/lab/room/pc1/manifest.json" + q,
		"bucket-prefixed host":     "https://lab.attacker.example/room/pc1/manifest.json" + q,
		"virtual host, path style": "https://lab.s3.amazonaws.com/lab/room/pc1/manifest.json" + q,
		"plain http":               "http://store.lab/lab/room/pc1/manifest.json" + q,
	} {
		if err := snapshot.CheckPresigned(map[string]string{"s3://lab/room/pc1/manifest.json": u}, snapshot.S3Options{Endpoint: "https://store.lab"}); err == nil {
			t.Errorf("accepted for the store https://store.lab: %s: %s", name, u)
		}
	}
	o := snapshot.S3Options{Endpoint: "http://store.lab", Presigned: map[string]string{"s3://lab/room/pc1/manifest.json": "http://store.lab/lab/room/pc1/manifest.json" + q}}
	if w := o.PlainHTTPWarning(); w == "" {
		t.Errorf("no plain-http warning for a reader with pre-signed http URLs (bearer tokens and the disk in clear text)")
	}
}

// TestBreakCredentialsDuplicateKey: a profile with aws_secret_access_key
// twice: the AWS CLI (configparser, strict) refuses it; Rewind silently
// takes the last.
func TestBreakCredentialsDuplicateKey(t *testing.T) {
	f := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(f, []byte("[lab]\naws_access_key_id = AKID1\naws_secret_access_key = first\naws_secret_access_key = second\n"), 0o600)
	c, err := snapshot.LoadS3Credential(f, "lab")
	if err == nil {
		t.Errorf("a profile with aws_secret_access_key twice is accepted (uses %q)", strings.Repeat("*", len(c.SecretAccessKey)))
	}
}
