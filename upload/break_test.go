package upload_test

// Attacks on the upload path: a client with a valid token that lies, names
// that collide with the server's own layout, and races. Each test failed
// before the fix it names.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
)

// A manifest's chunk list says more than where each frame is: how many
// raw bytes it holds, whether they are all zero (a restore then writes
// zeros without reading the frame) and their SHA-256. A client that lies
// about any of them, or sends a frame that is not LZ4 at all, must not get
// a snapshot published (and signed by --sign): the server decodes every
// frame as it arrives and checks those fields against what it decoded.
func TestBreakManifestLiesAboutRawData(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token", SignKeyFile: "key"})
	d := makeDisk(t, 11)
	garbage := ""
	for _, tc := range []struct {
		name     string
		frame    func(f *snapshot.Frame) bool
		manifest func(m *snapshot.Manifest)
		want     string
	}{
		{"a data chunk marked all-zero (a restore would write zeros)",
			nil, func(m *snapshot.Manifest) {
				m.Chunks[1].Zero, m.Chunks[1].RawSHA256 = true, ""
			}, "chunk 1"},
		{"a chunk's raw_sha256 is another chunk's",
			nil, func(m *snapshot.Manifest) {
				m.Chunks[2].RawSHA256 = m.Chunks[0].RawSHA256
			}, "chunk 2"},
		{"a zero chunk marked as data",
			nil, func(m *snapshot.Manifest) {
				for i := range m.Chunks {
					if m.Chunks[i].Zero {
						m.Chunks[i].Zero = false
						m.Chunks[i].RawSHA256 = strings.Repeat("ab", 32)
						return
					}
				}
				t.Fatal("the test disk has no zero chunk")
			}, "zero"},
		{"a frame that is not LZ4, its hash and the manifest matching it",
			func(f *snapshot.Frame) bool {
				if f.Index == 4 {
					copy(f.Data, testdisk.RandomBytes(99, len(f.Data)))
					f.SHA256 = sha256.Sum256(f.Data)
					garbage = hex.EncodeToString(f.SHA256[:])
				}
				return true
			}, func(m *snapshot.Manifest) { m.Chunks[4].SHA256 = garbage }, "chunk 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "lies/" + strings.NewReplacer(" ", "-", "'", "", "(", "", ")", "", ",", "").Replace(tc.name)
			c := newClient(t, l.url+"/"+name, upload.ClientOptions{})
			if err := c.Open(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, err := capture(t, d, &tamper{Client: c, frame: tc.frame, manifest: tc.manifest})
			if err == nil || !errors.Is(err, upload.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("capture error %v, want ErrRefused naming %q", err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(l.dir, name)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("DIR/%s exists after a refused upload (%v): something was published", name, err)
			}
			noStaging(t, l)
		})
	}
}

// A name element that is "latest" made a real directory named latest: a
// capture to http://host/pc1/latest (the URL a restore of the same plan
// entry reads) created DIR/pc1/latest/<generation>, which a restore of
// pc1/latest cannot read and which blocks every later upload to pc1. Such
// names are refused, before anything is written, by the client and by the
// server. A name element of a generation's form (which would let one
// name's prune remove another name) was already refused (':'); the
// attack stays here as a regression test.
func TestBreakNameLatest(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token", Keep: 1})
	d := makeDisk(t, 12)
	// The attack, in the order that used to work.
	for _, step := range []struct{ url, gen string }{
		{"/a/2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z"},
		{"/a", "2026-01-06T00:00:00Z"},
	} {
		c, err := upload.NewClient(l.url+step.url, upload.ClientOptions{Token: uploadToken, Overwrite: true, Generation: step.gen})
		if err != nil {
			continue // refused by the client: what the fix does
		}
		if err := c.Open(context.Background()); err != nil {
			continue
		}
		capture(t, d, c)
	}
	if gens, latest := generations(t, l, "a"); len(gens) > 1 || latest != "2026-01-06T00:00:00Z" {
		t.Errorf("DIR/a holds %v, latest -> %q; want only a's own generation 2026-01-06T00:00:00Z", gens, latest)
	}
	for _, tc := range []struct{ path, want string }{
		{"a/2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"pc1/latest", "latest"},
		{"pc1/latest/x", "latest"},
		{"latest", "latest"},
	} {
		before := listing(t, l.dir)
		if _, err := upload.NewClient(l.url+"/"+tc.path, upload.ClientOptions{Token: uploadToken}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewClient(%s): %v, want an error naming %q", tc.path, err, tc.want)
		}
		if code, msg := raw(t, "POST", l.url+"/upload/"+tc.path, uploadToken, nil, `{"overwrite":true}`); code != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("POST /upload/%s: %d %q, want 400 naming %q", tc.path, code, msg, tc.want)
		}
		if after := listing(t, l.dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Errorf("%s: DIR changed after a refused name: before %v, after %v", tc.path, before, after)
		}
	}
}
