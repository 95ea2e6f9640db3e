package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestS3Presigned: a snapshot read with pre-signed URLs alone (no
// credential on the reader) reads back byte for byte; a file they do not
// cover, an altered URL and an expired one are refused at once with what
// to do, and no message shows a URL's signature.
func TestS3Presigned(t *testing.T) {
	srv := s3test.Start(t, "lab")
	disk := usedDisk(6<<20, 11)
	const loc = "s3://lab/room1/pc1"
	full := s3Opts(srv, srv.Secret)
	_, m, err := captureS3(t, bytes.NewReader(disk), int64(len(disk)), loc, full)
	if err != nil {
		t.Fatal(err)
	}
	urls, err := snapshot.PresignS3(loc, full, snapshot.SnapshotFiles(m, false), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(urls) != 1+len(m.Segments) {
		t.Fatalf("%d URLs for a manifest and %d segments", len(urls), len(m.Segments))
	}
	if err := snapshot.CheckPresigned(urls, snapshot.S3Options{Endpoint: srv.Endpoint}); err != nil {
		t.Fatalf("CheckPresigned of PresignS3's URLs: %v", err)
	}
	for k, u := range urls {
		if strings.Contains(u, srv.Secret) {
			t.Fatalf("the URL of %s holds the secret", k)
		}
	}
	anon := snapshot.S3Options{Endpoint: srv.Endpoint, Presigned: urls}
	if got := readBack(t, loc, anon); !bytes.Equal(got, disk) {
		t.Fatal("the disk read with pre-signed URLs differs from the source")
	}
	open := func(p map[string]string) error {
		o := snapshot.S3Options{Endpoint: srv.Endpoint, Presigned: p}
		s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &o, RetryFor: 5 * time.Second})
		if err == nil {
			s.Close()
		}
		return err
	}
	check := func(name string, err error, want ...string) {
		t.Helper()
		var se *snapshot.S3Error
		if !errors.As(err, &se) {
			t.Fatalf("%s: %v; want an S3Error", name, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", name, err, w)
			}
		}
		if strings.Contains(err.Error(), "X-Amz-Signature") {
			t.Errorf("%s: the message shows a signature: %s", name, err)
		}
	}
	missing := maps.Clone(urls)
	delete(missing, loc+"/data.000")
	check("missing", open(missing), "NoPresignedURL", "data.000", "rewind s3 presign")

	altered := maps.Clone(urls)
	u := altered[loc+"/manifest.json"]
	i := strings.Index(u, "X-Amz-Signature=") + len("X-Amz-Signature=")
	flip := "0"
	if u[i] == '0' {
		flip = "1"
	}
	altered[loc+"/manifest.json"] = u[:i] + flip + u[i+1:]
	check("altered", open(altered), "403", "refused the plan's pre-signed URL for manifest.json")

	// URLs that expire during a restore: the store's 403 is explained;
	// URLs expired already are refused before anything is asked.
	short, err := snapshot.PresignS3(loc, full, snapshot.SnapshotFiles(m, false), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	check("expiring soon", open(short), "PresignedURLsExpireSoon", "too soon", "nothing was written")
	so := snapshot.S3Options{Endpoint: srv.Endpoint, Presigned: short, PresignedMinLeft: -1}
	s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &so, RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	_, err = s.ReadFrame(context.Background(), 0, nil)
	s.Close()
	check("expired during the restore", err, "403", "expired at")
	check("expired before", open(short), "PresignedURLsExpired", "nothing was written")

	// A URL of one object under another's key, a user, a URL that is not
	// pre-signed, a key that is no snapshot file: refused by the check.
	for name, bad := range map[string]map[string]string{
		"swapped":  {loc + "/manifest.json": urls[loc+"/data.000"]},
		"user":     {loc + "/manifest.json": strings.Replace(urls[loc+"/manifest.json"], "://", "://u:p@", 1)},
		"plain":    {loc + "/manifest.json": srv.Endpoint + "/lab/room1/pc1/manifest.json"},
		"file key": {loc + "/../x": urls[loc+"/manifest.json"]},
		"bad loc":  {"s3://LAB/pc1/manifest.json": urls[loc+"/manifest.json"]},
	} {
		err := snapshot.CheckPresigned(bad, snapshot.S3Options{Endpoint: srv.Endpoint})
		if err == nil || strings.Contains(err.Error(), "X-Amz-Signature=") {
			t.Errorf("CheckPresigned(%s) = %v; want a refusal without the signature", name, err)
		}
	}
	if _, err := snapshot.PresignS3(loc, full, []string{"manifest.json"}, 8*24*time.Hour); err == nil {
		t.Error("PresignS3 for 8 days: no error (Signature V4 allows 7)")
	}
	if _, err := snapshot.PresignS3(loc, snapshot.S3Options{Endpoint: srv.Endpoint}, []string{"manifest.json"}, time.Hour); err == nil {
		t.Error("PresignS3 without a credential: no error")
	}
}
