package upload_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
)

// sameSecondLab serves a Receiver whose clock is stopped at one second, as
// every upload of a busy lab lands in the same second: the host CLI
// (rewind capture -o URL) sends no generation, so the server's clock names
// it.
func sameSecondLab(t *testing.T) (url, dir string) {
	t.Helper()
	dir = t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	now := time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)
	rcv, err := upload.NewReceiver(root, upload.ReceiverConfig{Token: uploadToken, Keep: 10, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(upload.Prefix+"/", http.StripPrefix(upload.Prefix, rcv))
	mux.Handle("/", snapshot.NewRootHandler(root, snapshot.HandlerOptions{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, dir
}

// TestE2EBreakOverwriteSameSecond: uploads with overwrite and no
// generation of their own (rewind capture -o URL --overwrite), one after
// the other or two at once, within one second of the server's clock: each
// is published as a generation of its own and restores to its disk; none
// is refused after its whole upload, none replaces another.
func TestE2EBreakOverwriteSameSecond(t *testing.T) {
	for _, tc := range []struct {
		name   string
		at     int // uploads at once
		rounds int
	}{
		{"one after the other", 1, 3},
		{"two at once", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, dir := sameSecondLab(t)
			var published []string
			want := map[string]string{}
			for r := range tc.rounds {
				clients := make([]*upload.Client, tc.at)
				errs := make([]error, tc.at)
				disks := make([]*disk, tc.at)
				var wg sync.WaitGroup
				for i := range tc.at {
					disks[i] = makeDisk(t, uint64(100*r+10*i+1))
					clients[i] = newClient(t, url+"/snapshots/pc1", upload.ClientOptions{Overwrite: true})
					wg.Go(func() {
						if errs[i] = clients[i].Open(context.Background()); errs[i] == nil {
							_, errs[i] = capture(t, disks[i], clients[i])
						}
					})
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("round %d, upload %d of snapshots/pc1 with overwrite: %v; want it published as a generation of its own", r, i, err)
					}
					published = append(published, clients[i].Published())
					want[clients[i].Published()] = disks[i].sum
				}
			}
			if len(want) != len(published) {
				t.Fatalf("published %v: got %d distinct generations, want %d", published, len(want), len(published))
			}
			for u, sum := range want {
				if got := restored(t, u); got != sum {
					t.Errorf("restore of %s: got %s, want %s (its own upload)", u, got, sum)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "snapshots", "pc1", "latest", snapshot.ManifestName)); err != nil {
				t.Errorf("snapshots/pc1/latest: %v", err)
			}
		})
	}
}
