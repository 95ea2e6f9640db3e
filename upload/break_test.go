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

// Symbolic links planted in DIR (by someone with a shell on the server,
// or a restore of DIR from a backup) never lead an upload's files out of
// DIR or into a served place. DIR/.upload made a link after the server
// started used to take the staging of every new session, so half-written
// segments appeared under a served name.
func TestBreakPlantedSymlinks(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	d := makeDisk(t, 13)
	if _, err := uploadDisk(t, d, l.url+"/gens", upload.ClientOptions{Generation: "2026-11-23T10:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	for link, target := range map[string]string{
		"etc":            "/etc",  // DIR/etc -> /etc
		"snapshots":      outside, // DIR/snapshots -> a directory outside DIR
		"inner":          "gens",  // DIR/inner -> another name inside DIR
		"gens/latest.x":  "../..",
		"victim/.keep/x": "", // makes DIR/victim
	} {
		p := filepath.Join(l.dir, link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target != "" {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	// DIR/gens/latest -> ../../ : replaced by the next publication.
	if err := os.Remove(filepath.Join(l.dir, "gens/latest.x")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, want string }{
		{"/etc", "not a directory"},
		{"/etc/cron.d", "not a directory"},
		{"/snapshots/pc1", "not a directory"},
		{"/inner", "not a directory"},
	} {
		c := newClient(t, l.url+tc.url, upload.ClientOptions{Overwrite: true})
		if err := c.Open(context.Background()); !errors.Is(err, upload.ErrExists) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open %s through a planted link: %v, want ErrExists naming %q", tc.url, err, tc.want)
		}
	}
	// The staging directory replaced by a link into a served name.
	if err := os.RemoveAll(filepath.Join(l.dir, ".upload")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("victim", filepath.Join(l.dir, ".upload")); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, l.url+"/pc9", upload.ClientOptions{})
	err := c.Open(context.Background())
	if err == nil || !strings.Contains(err.Error(), ".upload") {
		t.Errorf("Open with DIR/.upload a link to DIR/victim: %v, want an error naming .upload", err)
	}
	if err == nil {
		if got := listing(t, filepath.Join(l.dir, "victim")); len(got) != 2 {
			t.Errorf("DIR/victim (served) holds %v while an upload is staged: half-written segments are served", got)
		}
		capture(t, d, c)
	}
	if got := listing(t, filepath.Join(l.dir, "victim")); len(got) != 2 { // ".", ".keep"
		t.Errorf("DIR/victim holds %v after an upload with .upload a link to it; want only .keep", got)
	}
	if got := listing(t, outside); len(got) != 1 {
		t.Errorf("the directory outside DIR holds %v; want nothing", got)
	}
}

// A server killed between the rename of a generation and the swap of
// latest, then restarted: a restore of latest reads the generation
// before (whole), the new one is intact under its own name, the staging
// of the sessions in progress is removed, and the next publication
// removes the temporary link the kill left (it used to stay forever).
func TestBreakCrashBetweenRenameAndLatest(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "srv")
	old, newer := makeDisk(t, 14), makeDisk(t, 15)
	const g1, g2 = "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z"
	for _, g := range []struct {
		gen string
		d   *disk
	}{{g1, old}, {g2, newer}} {
		if _, err := snapshot.Capture(context.Background(), mustOpen(t, g.d.path), filepath.Join(dir, "pc1", g.gen), captureOptions(g.d)); err != nil {
			t.Fatal(err)
		}
	}
	// What the killed server left: latest still at g1, its temporary
	// link to g2, a session's staging.
	for link, to := range map[string]string{"pc1/latest": g1, "pc1/.latest-0123": g2} {
		if err := os.Symlink(to, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, ".upload/0456"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".upload/0456/data.000"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(base, "upload-token")
	if err := os.WriteFile(tok, []byte(uploadToken), 0o600); err != nil {
		t.Fatal(err)
	}
	url := serveLab(t, dir, rescue.LabServerConfig{UploadTokenFile: tok})
	if _, err := os.Lstat(filepath.Join(dir, ".upload/0456")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the staging of the killed server's session is still there: %v", err)
	}
	if got := restored(t, url+"/pc1/latest"); got != old.sum {
		t.Errorf("restore of pc1/latest after the kill: %s, want the generation latest named (%s)", got, old.sum)
	}
	if got := restored(t, url+"/pc1/"+g2); got != newer.sum {
		t.Errorf("restore of pc1/%s (renamed before the kill): %s, want %s", g2, got, newer.sum)
	}
	if _, err := uploadDisk(t, newer, url+"/pc1", upload.ClientOptions{Overwrite: true, Generation: "2026-11-23T12:00:00Z"}); err != nil {
		t.Fatalf("upload after the restart: %v", err)
	}
	for _, e := range listing(t, filepath.Join(dir, "pc1")) {
		if strings.HasPrefix(e, ".latest-") {
			t.Errorf("DIR/pc1/%s: a temporary link of an earlier run is left after a publication", e)
		}
	}
}

// Every endpoint refuses every malformed or near-miss token with 401 and
// writes nothing (this held); the scheme is case-insensitive as RFC 6750
// allows.
func TestBreakTokenVariants(t *testing.T) {
	l := startLab(t, rescue.LabServerConfig{UploadTokenFile: "token"})
	before := listing(t, l.dir)
	for _, auth := range []string{
		"", "Bearer", "Bearer ", "Bearer " + uploadToken[:len(uploadToken)-1], "Bearer " + uploadToken + "0",
		"Bearer " + uploadToken + " x", "Bearer " + strings.ToUpper(uploadToken), "Basic " + uploadToken,
		uploadToken, "Bearer\t" + uploadToken, "Bearer " + reportToken, "Bearer " + strings.Repeat("a", 5000),
	} {
		for _, m := range []string{"POST", "PUT", "GET", "DELETE"} {
			u := l.url + "/upload/pc1"
			if m != "POST" {
				u += "?session=0123&commit=1"
			}
			hdr := map[string]string{}
			if auth != "" {
				hdr["Authorization"] = auth
			}
			if code, msg := raw(t, m, u, "", hdr, `{"overwrite":true}`); code != 401 || !strings.Contains(msg, "token") {
				t.Errorf("%s with Authorization %.40q: %d %q, want 401 naming the token", m, auth, code, msg)
			}
		}
	}
	if after := listing(t, l.dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("DIR changed after refused requests: before %v, after %v", before, after)
	}
	for _, auth := range []string{"bearer " + uploadToken, "BEARER  " + uploadToken + " "} {
		if code, msg := raw(t, "POST", l.url+"/upload/ok", "", map[string]string{"Authorization": auth}, `{}`); code != 201 {
			t.Errorf("POST with Authorization %.20q…: %d %q, want 201", auth, code, msg)
		}
	}
}
