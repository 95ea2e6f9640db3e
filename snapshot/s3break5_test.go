package snapshot_test

import (
	"bytes"
	"context"
	"github.com/rewind-bmr/rewind/snapshot"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rewind-bmr/rewind/internal/s3test"
)

// TestBreakIfMatchHonoured: the stale-lock takeover relies on If-Match
// on PUT; TestS3CommitLock checks only If-None-Match.
func TestBreakIfMatchHonoured(t *testing.T) {
	srv := s3test.Start(t, "lab")
	cl := srv.Client(t)
	ctx := context.Background()
	if _, err := cl.PutObject(ctx, "lab", "k", bytes.NewReader([]byte("a")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	var o minio.PutObjectOptions
	o.SetMatchETag("00000000000000000000000000000000")
	_, err := cl.PutObject(ctx, "lab", "k", bytes.NewReader([]byte("b")), 1, o)
	r := minio.ToErrorResponse(err)
	t.Logf("PUT If-Match wrong ETag: status %d code %s err %v", r.StatusCode, r.Code, err)
	if r.StatusCode != 412 {
		t.Errorf("versitygw does not honour If-Match on PUT: two captures can both take over a stale lock")
	}
}

// TestBreakAnonymousBesidePresigned: a plan whose pre-signed URLs cover
// snapshot A cannot also restore a public-read snapshot B anonymously:
// every file of B is refused as "not covered", no request is made.
func TestBreakAnonymousBesidePresigned(t *testing.T) {
	var hits int
	pub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++; w.Write([]byte("{}")) }))
	defer pub.Close()
	o := snapshot.S3Options{Endpoint: pub.URL, Presigned: map[string]string{
		"s3://lab/private/a/manifest.json": pub.URL + "/lab/private/a/manifest.json?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261208T000000Z&X-Amz-Expires=600&X-Amz-Signature=ab",
	}}
	h, _ := snapshot.NewS3Source("s3://pub/public/b", o, nil, time.Second, func(string, ...any) {})
	_, err := h.ReadFile(context.Background(), "manifest.json")
	t.Logf("anonymous read of public B beside A's URLs: %v (requests: %d)", err, hits)
	if err != nil {
		t.Errorf("a public-read snapshot is refused because the plan carries pre-signed URLs for another snapshot")
	}
}
