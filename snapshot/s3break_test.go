package snapshot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/rewind-bmr/rewind/internal/s3test"
	"github.com/rewind-bmr/rewind/snapshot"
)

// gate is a reverse proxy to the store that holds the PUT of a
// manifest.json until released.
type gate struct {
	srv      *httptest.Server
	arrived  chan struct{}
	release  chan struct{}
	once     sync.Once
	mu       sync.Mutex
	requests []string
}

func newGate(t *testing.T, target string) *gate {
	u, _ := url.Parse(target)
	g := &gate{arrived: make(chan struct{}), release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.requests = append(g.requests, r.Method+" "+r.URL.Path)
		g.mu.Unlock()
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifest.json") {
			g.once.Do(func() { close(g.arrived) })
			<-g.release
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// TestBreakLockTakeoverWhileOwnerCommits: the commit lock is "stale"
// after S3LockStale by its own Since field, with no heartbeat and no
// re-check by the owner. A commit that runs longer than 15 minutes (a
// slow store: each request retried for up to RetryFor) or a second host
// whose clock is 15 minutes ahead lets another capture take the lock
// while the owner still publishes. Here: A completes its segments and is
// about to write its manifest; B takes the "stale" lock, completes its
// own segments over A's objects, and waits; A writes its manifest and
// reports success. The published snapshot is A's manifest over B's
// segments: it does not read back, and A's capture said it succeeded.
// A's unlock also removes B's lock.
func TestBreakLockTakeoverWhileOwnerCommits(t *testing.T) {
	srv := s3test.Start(t, "lab")
	cl := srv.Client(t)
	loc := "s3://lab/race/pc1"
	gA, gB := newGate(t, srv.Endpoint), newGate(t, srv.Endpoint)
	oA, oB := s3Opts(srv, srv.Secret), s3Opts(srv, srv.Secret)
	oA.Endpoint, oB.Endpoint = gA.srv.URL, gB.srv.URL
	diskA, diskB := usedDisk(56<<20, 21), usedDisk(56<<20, 22)

	sinkA, sinkB := sinkS3(t, loc, oA), sinkS3(t, loc, oB)
	errA := make(chan error, 1)
	go func() { _, err := capS3(t, sinkA, diskA); errA <- err }()
	<-gA.arrived // A holds the lock, its segments are completed and checked

	// Time passes (or B's clock is ahead): the lock's Since is now
	// older than S3LockStale. Rewrite it with the same holder.
	lockKey := "race/pc1/" + snapshot.S3CommitLock
	obj, err := cl.GetObject(context.Background(), "lab", lockKey, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var held map[string]any
	if err := json.NewDecoder(obj).Decode(&held); err != nil {
		t.Fatalf("A's lock: %v", err)
	}
	obj.Close()
	held["since"] = time.Now().Add(-snapshot.S3LockStale - time.Minute)
	b, _ := json.Marshal(held)
	if _, err := cl.PutObject(context.Background(), "lab", lockKey, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	errB := make(chan error, 1)
	go func() { _, err := capS3(t, sinkB, diskB); errB <- err }()
	select {
	case <-gB.arrived: // B took over the lock and completed its segments over A's
	case err := <-errB:
		t.Logf("B refused before publishing (held): %v", err)
		close(gA.release)
		if err := <-errA; err != nil {
			t.Fatalf("A: %v", err)
		}
		return
	}
	close(gA.release)
	if err := <-errA; err != nil {
		t.Logf("A failed (good): %v", err)
	} else {
		t.Errorf("capture A reported success although B took its lock and replaced its segments while it published")
	}
	close(gB.release)
	t.Logf("B: %v", <-errB)

	s, err := snapshot.Open(context.Background(), loc, snapshot.OpenOptions{S3: &oA, RetryFor: 2 * time.Second})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	bad := 0
	for i, c := range s.Manifest.Chunks {
		if c.Zero {
			continue
		}
		frame, err := s.ReadFrame(context.Background(), i, nil)
		if err == nil {
			err = s.CheckFrame(i, frame)
		}
		if err != nil {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("the published snapshot (A's manifest) has %d chunks that fail their hashes: its segments are B's", bad)
	}
	_ = sha256.Sum256
	_ = errors.Is
	_ = io.EOF
}
