package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestS3CommitLock: a capture does not publish while another holds the
// commit lock (the store must honour If-None-Match: *), takes over a
// lock the store last saw written long enough ago, and leaves no lock.
// A manifest PUT over an existing one is refused by the store too.
func TestS3CommitLock(t *testing.T) {
	srv := s3test.Start(t, "lab")
	cl := srv.Client(t)
	o := s3Opts(srv, srv.Secret)
	plant := func(key string, since time.Time) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"capture": "other", "host": "pc-other", "since": since})
		if _, err := cl.PutObject(context.Background(), "lab", key, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	disk := usedDisk(6<<20, 91)
	plant("held/"+snapshot.S3CommitLock, time.Now().Add(-time.Minute))
	_, err := capS3(t, sinkS3(t, "s3://lab/held", o), disk)
	if err == nil || !strings.Contains(err.Error(), "another capture (on pc-other") || !strings.Contains(err.Error(), "delete s3://lab/held/"+snapshot.S3CommitLock) {
		t.Fatalf("capture while another holds the lock: %v; want a refusal naming the holder and the lock", err)
	}
	if _, err := snapshot.Open(context.Background(), "s3://lab/held", snapshot.OpenOptions{S3: &o, RetryFor: 2 * time.Second}); err == nil {
		t.Fatal("a snapshot was published while another capture held the lock")
	}

	// Stale by the store's clock (Last-Modified), whatever the lock says.
	plant("stale/"+snapshot.S3CommitLock, time.Now().Add(time.Hour))
	time.Sleep(2 * time.Second)
	sink, err := snapshot.NewS3Sink(context.Background(), "s3://lab/stale", o, snapshot.S3SinkOptions{SegmentSize: 40 << 20, RetryFor: 5 * time.Second, LockStale: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := capS3(t, sink, disk); err != nil {
		t.Fatalf("capture over a stale lock: %v", err)
	}
	if back := readBack(t, "s3://lab/stale", o); sha256.Sum256(back) != sha256.Sum256(disk) {
		t.Fatal("the capture over a stale lock reads back differently")
	}
	for _, k := range keys(t, srv, "lab", "stale/") {
		if strings.HasSuffix(k, snapshot.S3CommitLock) {
			t.Errorf("the commit lock %s stays after the capture", k)
		}
	}

	// The conditional write the lock and the manifest rely on.
	var po minio.PutObjectOptions
	po.SetMatchETagExcept("*")
	_, err = cl.PutObject(context.Background(), "lab", "stale/manifest.json", bytes.NewReader([]byte("{}")), 2, po)
	if r := minio.ToErrorResponse(err); r.StatusCode != 412 {
		t.Fatalf("PUT If-None-Match: * over an existing object: %v (status %d); the store does not honour conditional writes", err, r.StatusCode)
	}
}
