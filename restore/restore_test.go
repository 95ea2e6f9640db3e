package restore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
)

const mib = 1 << 20

// sampleDisk builds a 96 MiB GPT image (ESP, ext4 from real files, random
// data, zeros) once per test binary.
var sampleDisk = sync1(func() (string, error) {
	if t := testdisk.Missing(); t != "" {
		return "", errors.New(t + " not installed (run scripts/setup.sh)")
	}
	dir, err := os.MkdirTemp("", "rewind-restore-test-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sample.img")
	_, err = testdisk.Sample{
		Size: 96 * mib, ESPSize: 33 * mib, ExtSize: 40 * mib, RandomSize: 9 * mib,
		FilesFrom: filepath.Join(runtime.GOROOT(), "src"), FilesLimit: 16 * mib, Seed: 7,
	}.Build(path)
	return path, err
})

func sync1(f func() (string, error)) func(t *testing.T) string {
	var (
		once atomic.Bool
		val  string
		err  error
		done = make(chan struct{})
	)
	return func(t *testing.T) string {
		t.Helper()
		if once.CompareAndSwap(false, true) {
			val, err = f()
			close(done)
		}
		<-done
		if err != nil {
			t.Skip("sample disk: ", err)
		}
		return val
	}
}

func fileSHA(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func capture(t *testing.T, src string, opts snapshot.CaptureOptions) (string, *snapshot.Manifest) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if opts.DiskSize == 0 {
		opts.DiskSize = fi.Size()
	}
	dir := filepath.Join(t.TempDir(), "snap")
	m, err := snapshot.Capture(context.Background(), f, dir, opts)
	if err != nil {
		t.Fatalf("capture %s: %v", src, err)
	}
	return dir, m
}

func restoreTo(t *testing.T, location, target string, opts restore.Options) (*restore.Result, error) {
	t.Helper()
	snap, err := snapshot.Open(context.Background(), location, snapshot.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	tg, err := restore.OpenTarget(target, snap.Manifest.RequiredSize(), snap.Manifest.DiskSize, opts.Delta)
	if err != nil {
		return nil, err
	}
	defer tg.File.Close()
	opts.FreshTarget = tg.Fresh
	return restore.Run(context.Background(), snap, tg.File, opts)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTripOntoFiles(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "odd.img")
	data := testdisk.RandomBytes(3, 5*mib+4096*3)
	copy(data[mib:2*mib], make([]byte, mib)) // a zero chunk inside random data
	writeFile(t, odd, data)
	zeros := filepath.Join(dir, "zeros.img")
	writeFile(t, zeros, make([]byte, 8*mib))

	tests := []struct {
		name     string
		src      func(t *testing.T) string
		chunk    int64
		segment  int64
		wantZero bool // expect at least one zero chunk
		wantSegs int  // at least this many segments
	}{
		{"gpt esp ext4 random zeros, 1MiB chunks, 8MiB segments", sampleDisk, mib, 8 * mib, true, 2},
		{"gpt sample, default sizes", sampleDisk, 0, 0, true, 1},
		{"odd size random with a zero chunk", func(*testing.T) string { return odd }, mib, 3 * mib, true, 2},
		{"all zeros", func(*testing.T) string { return zeros }, 256 << 10, 0, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src(t)
			fi, _ := os.Stat(src)
			snapDir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: tt.chunk, SegmentSize: tt.segment, Jobs: 3})
			if len(m.Segments) < tt.wantSegs {
				t.Errorf("got %d segments, want at least %d", len(m.Segments), tt.wantSegs)
			}
			zero := 0
			for _, c := range m.Chunks {
				if c.Zero {
					zero++
				}
			}
			if tt.wantZero && zero == 0 {
				t.Errorf("no zero chunk detected in %s", src)
			}
			target := filepath.Join(t.TempDir(), "restored.img")
			res, err := restoreTo(t, snapDir, target, restore.Options{Jobs: 3})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got, want := fileSHA(t, target, fi.Size()+1), fileSHA(t, src, fi.Size()+1); got != want {
				t.Fatalf("restored image sha256 %s, source %s", got, want)
			}
			if res.ZeroChunks != zero || res.Chunks != len(m.Chunks) {
				t.Errorf("result counts %d chunks (%d zero), manifest has %d (%d zero)", res.Chunks, res.ZeroChunks, len(m.Chunks), zero)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(target, &st); err != nil {
				t.Fatal(err)
			}
			if allocated := st.Blocks * 512; allocated > fi.Size()-res.BytesZeroed+mib {
				t.Errorf("target allocates %d bytes; zero chunks (%d bytes) should be holes", allocated, res.BytesZeroed)
			}
		})
	}
}

// The segments are plain LZ4 frames: stock lz4 reproduces the captured bytes.
func TestStockLZ4ReadsSegments(t *testing.T) {
	lz4, err := exec.LookPath("lz4")
	if err != nil {
		t.Skip("lz4 not installed")
	}
	src := sampleDisk(t)
	snapDir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib, SegmentSize: 8 * mib})
	var names []string
	for _, s := range m.Segments {
		names = append(names, filepath.Join(snapDir, s.Name))
	}
	cmd := exec.Command("sh", "-c", `cat "$@" | `+lz4+` -dc`, "sh")
	cmd.Args = append(cmd.Args, names...)
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("cat data.* | lz4 -dc: %v", err)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("cat data.* | lz4 -dc gave %d bytes that differ from the %d-byte source", len(got), len(want))
	}
}

func TestRoundTripOntoLoopDevice(t *testing.T) {
	src := sampleDisk(t)
	fi, _ := os.Stat(src)
	snapDir, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	// The target holds garbage: zero chunks must be zeroed, not skipped.
	backing := filepath.Join(t.TempDir(), "disk.img")
	writeFile(t, backing, bytes.Repeat([]byte{0xA5}, int(fi.Size())))
	dev := testdisk.Loop(t, backing, 0)
	if _, err := restoreTo(t, snapDir, dev, restore.Options{Jobs: 2}); err != nil {
		t.Fatalf("restore onto %s: %v", dev, err)
	}
	if got, want := fileSHA(t, dev, fi.Size()), fileSHA(t, src, fi.Size()); got != want {
		t.Fatalf("%s sha256 %s, source %s", dev, got, want)
	}
}

func TestRefusesTooSmallAndMountedTargets(t *testing.T) {
	src := sampleDisk(t)
	snapDir, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	small := filepath.Join(t.TempDir(), "small.img")
	writeFile(t, small, make([]byte, 32*mib))
	dev := testdisk.Loop(t, small, 0)
	_, err := restoreTo(t, snapDir, dev, restore.Options{})
	if err == nil || !strings.Contains(err.Error(), "choose a larger disk") || !strings.Contains(err.Error(), dev) {
		t.Errorf("restore onto a 32 MiB %s: got %v, want an error naming the device and asking for a larger disk", dev, err)
	}

	ext := filepath.Join(t.TempDir(), "ext.img")
	writeFile(t, ext, nil)
	os.Truncate(ext, 128*mib)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", ext).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v %s", err, out)
	}
	mdev := testdisk.Loop(t, ext, 0)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", mdev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	_, err = restoreTo(t, snapDir, mdev, restore.Options{})
	if err == nil || !strings.Contains(err.Error(), "unmount") {
		t.Errorf("restore onto mounted %s: got %v, want a refusal telling to unmount", mdev, err)
	}
}

func TestDamagedSnapshots(t *testing.T) {
	src := sampleDisk(t)
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string, m *snapshot.Manifest)
		wantErr []string
	}{
		{"corrupted byte in a chunk", func(t *testing.T, dir string, m *snapshot.Manifest) {
			c := m.Chunks[40]
			f, _ := os.OpenFile(filepath.Join(dir, m.Segments[c.Segment].Name), os.O_RDWR, 0)
			defer f.Close()
			b := []byte{0}
			f.ReadAt(b, c.FrameOffset+c.FrameLength/2)
			b[0] ^= 0xFF
			f.WriteAt(b, c.FrameOffset+c.FrameLength/2)
		}, []string{"chunk 40", "sha256", "read twice", "data.0"}},
		{"truncated segment", func(t *testing.T, dir string, m *snapshot.Manifest) {
			last := m.Segments[len(m.Segments)-1]
			os.Truncate(filepath.Join(dir, last.Name), last.Size-100)
		}, []string{"truncated", "data.0"}},
		{"missing segment", func(t *testing.T, dir string, m *snapshot.Manifest) {
			os.Remove(filepath.Join(dir, m.Segments[1].Name))
		}, []string{"data.001", "missing"}},
		{"garbage manifest", func(t *testing.T, dir string, m *snapshot.Manifest) {
			writeFile(t, filepath.Join(dir, snapshot.ManifestName), []byte("{\"format\": garbage"))
		}, []string{"not valid JSON"}},
		{"unknown version", func(t *testing.T, dir string, m *snapshot.Manifest) {
			b, _ := os.ReadFile(filepath.Join(dir, snapshot.ManifestName))
			b = bytes.Replace(b, []byte(fmt.Sprintf(`"version": %d`, snapshot.FormatVersion)), []byte(`"version": 9`), 1)
			writeFile(t, filepath.Join(dir, snapshot.ManifestName), b)
		}, []string{"version 9", "upgrade Rewind"}},
		{"no manifest", func(t *testing.T, dir string, m *snapshot.Manifest) {
			os.Remove(filepath.Join(dir, snapshot.ManifestName))
		}, []string{"no manifest.json", "not a Rewind snapshot"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib, SegmentSize: 4 * mib})
			tt.damage(t, dir, m)
			target := filepath.Join(t.TempDir(), "t.img")
			_, err := restoreTo(t, dir, target, restore.Options{})
			if err == nil {
				t.Fatal("restore of a damaged snapshot succeeded")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSignedSnapshots(t *testing.T) {
	src := sampleDisk(t)
	keyDir := t.TempDir()
	priv, pub, err := snapshot.GenerateKey(filepath.Join(keyDir, "lab"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(priv); fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	_, otherPub, _ := snapshot.GenerateKey(filepath.Join(keyDir, "other"))
	key, _ := snapshot.LoadPrivateKey(priv)
	trusted, _ := snapshot.LoadPublicKey(pub)
	other, _ := snapshot.LoadPublicKey(otherPub)

	signed, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib, SignKey: key})
	unsigned, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	tampered, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib, SignKey: key})
	mf := filepath.Join(tampered, snapshot.ManifestName)
	b, _ := os.ReadFile(mf)
	writeFile(t, mf, bytes.Replace(b, []byte(`"path": "`), []byte(`"path": "x`), 1))

	tests := []struct {
		name    string
		dir     string
		trust   []ed25519.PublicKey
		wantErr string
	}{
		{"signed, trusted key", signed, []ed25519.PublicKey{trusted}, ""},
		{"signed, two keys one trusted", signed, []ed25519.PublicKey{other, trusted}, ""},
		{"signed, other key", signed, []ed25519.PublicKey{other}, "does not match"},
		{"unsigned with trust", unsigned, []ed25519.PublicKey{trusted}, "not signed"},
		{"tampered manifest", tampered, []ed25519.PublicKey{trusted}, "modified"},
		{"tampered without trust still opens", tampered, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := snapshot.Open(context.Background(), tt.dir, snapshot.OpenOptions{Trust: tt.trust})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if len(tt.trust) > 0 && !snap.Verified {
					t.Error("snapshot opened with trust but not marked verified")
				}
				snap.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("open: got %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// cuttingHandler cuts the first responses for each segment mid-body, as a
// flaky network would.
type cuttingHandler struct {
	next     http.Handler
	cuts     atomic.Int32
	maxCuts  int32
	bytesOut atomic.Int64
}

func (h *cuttingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Range") != "" && strings.Contains(r.URL.Path, "data.") && h.cuts.Add(1) <= h.maxCuts {
		rec := httptest.NewRecorder()
		h.next.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:len(body)/3])
		h.bytesOut.Add(int64(len(body) / 3))
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
		return
	}
	cw := &countingWriter{ResponseWriter: w, n: &h.bytesOut}
	h.next.ServeHTTP(cw, r)
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

func TestHTTPRestoreResumesAfterDroppedConnections(t *testing.T) {
	src := sampleDisk(t)
	fi, _ := os.Stat(src)
	root := t.TempDir()
	snapDir := filepath.Join(root, "pc1")
	f, _ := os.Open(src)
	m, err := snapshot.Capture(context.Background(), f, snapDir, snapshot.CaptureOptions{DiskSize: fi.Size(), ChunkSize: mib})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	h := &cuttingHandler{next: snapshot.NewHandler(root, nil), maxCuts: 6}
	srv := httptest.NewServer(h)
	defer srv.Close()

	target := filepath.Join(t.TempDir(), "restored.img")
	res, err := restoreTo(t, srv.URL+"/pc1", target, restore.Options{Jobs: 2})
	if err != nil {
		t.Fatalf("restore over HTTP with dropped connections: %v", err)
	}
	if h.cuts.Load() < h.maxCuts {
		t.Fatalf("only %d responses were cut; the test did not exercise resuming", h.cuts.Load())
	}
	if got, want := fileSHA(t, target, fi.Size()), fileSHA(t, src, fi.Size()); got != want {
		t.Fatalf("restored sha256 %s, source %s", got, want)
	}
	// Resuming asks only for missing bytes: the server sends at most the
	// non-zero frames plus the cut-off thirds, never the snapshot twice.
	var need int64
	for _, c := range m.Chunks {
		if !c.Zero {
			need += c.FrameLength
		}
	}
	if sent := h.bytesOut.Load(); sent > need+need/2 {
		t.Errorf("server sent %d bytes for %d bytes of frames: the restore started over instead of resuming", sent, need)
	}
	if res.BytesWritten == 0 {
		t.Error("nothing written")
	}
}

func TestHTTPServerWithoutRangesIsRefused(t *testing.T) {
	src := sampleDisk(t)
	dir, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	_, err := restoreTo(t, srv.URL, filepath.Join(t.TempDir(), "t.img"), restore.Options{})
	if err == nil || !strings.Contains(err.Error(), "ignores Range") {
		t.Fatalf("got %v, want a refusal naming the missing Range support", err)
	}
}

// flakySource corrupts the first read of one chunk's frame.
type flakySource struct {
	snapshot.Source
	at    int64
	seg   string
	times int32
	n     atomic.Int32
}

func (f *flakySource) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := f.Source.ReadAt(ctx, name, p, off); err != nil {
		return err
	}
	if name == f.seg && off == f.at && f.n.Add(1) <= f.times {
		p[len(p)/2] ^= 1
	}
	return nil
}

func TestChunkFailingVerificationIsReadOnceMore(t *testing.T) {
	src := sampleDisk(t)
	fi, _ := os.Stat(src)
	dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	i := len(m.Chunks) - 5
	for m.Chunks[i].Zero {
		i--
	}
	c := m.Chunks[i]
	for _, times := range []int32{1, 2} {
		fs := &flakySource{Source: snapshot.NewDirSource(dir), at: c.FrameOffset, seg: m.Segments[c.Segment].Name, times: times}
		snap, err := snapshot.OpenSource(context.Background(), fs, snapshot.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(t.TempDir(), "t.img")
		tg, err := restore.OpenTarget(target, m.RequiredSize(), m.DiskSize, false)
		if err != nil {
			t.Fatal(err)
		}
		res, err := restore.Run(context.Background(), snap, tg.File, restore.Options{FreshTarget: true})
		tg.File.Close()
		switch times {
		case 1:
			if err != nil {
				t.Fatalf("one bad read: %v", err)
			}
			if res.Refetched != 1 {
				t.Errorf("refetched %d chunks, want 1", res.Refetched)
			}
			if got, want := fileSHA(t, target, fi.Size()), fileSHA(t, src, fi.Size()); got != want {
				t.Errorf("restored sha256 %s, source %s", got, want)
			}
		case 2:
			var ce *snapshot.ChunkError
			if !errors.As(err, &ce) || ce.Index != i || ce.Offset != c.Offset {
				t.Fatalf("two bad reads: got %v, want a ChunkError for chunk %d at offset %d", err, i, c.Offset)
			}
		}
	}
}

func TestVerify(t *testing.T) {
	src := sampleDisk(t)
	dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := restore.Verify(context.Background(), snap, restore.Options{})
	snap.Close()
	if err != nil || res.Chunks != len(m.Chunks) {
		t.Fatalf("verify intact snapshot: %v (%+v)", err, res)
	}
	c := m.Chunks[3]
	f, _ := os.OpenFile(filepath.Join(dir, m.Segments[c.Segment].Name), os.O_RDWR, 0)
	f.WriteAt([]byte("XX"), c.FrameOffset+10)
	f.Close()
	snap, _ = snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	defer snap.Close()
	if _, err := restore.Verify(context.Background(), snap, restore.Options{}); err == nil || !strings.Contains(err.Error(), "chunk 3 ") {
		t.Fatalf("verify damaged snapshot: got %v, want an error naming chunk 3", err)
	}
}

func TestDeltaRestoreWritesOnlyTheDifference(t *testing.T) {
	src := sampleDisk(t)
	fi, _ := os.Stat(src)
	dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	target := filepath.Join(t.TempDir(), "t.img")
	if _, err := restoreTo(t, dir, target, restore.Options{}); err != nil {
		t.Fatal(err)
	}
	// Damage two data chunks and one zero chunk of the restored image.
	var data, zero []int
	for i, c := range m.Chunks {
		if c.Zero {
			zero = append(zero, i)
		} else {
			data = append(data, i)
		}
	}
	if len(data) < 3 || len(zero) < 1 {
		t.Fatalf("sample has %d data and %d zero chunks", len(data), len(zero))
	}
	f, _ := os.OpenFile(target, os.O_RDWR, 0)
	damaged := []int{data[1], data[len(data)-1], zero[len(zero)/2]}
	for _, i := range damaged {
		f.WriteAt([]byte("scribble"), m.Chunks[i].Offset+4096)
	}
	f.Close()

	res, err := restoreTo(t, dir, target, restore.Options{Delta: true})
	if err != nil {
		t.Fatalf("delta restore: %v", err)
	}
	if got, want := fileSHA(t, target, fi.Size()), fileSHA(t, src, fi.Size()); got != want {
		t.Fatalf("after delta restore sha256 %s, source %s", got, want)
	}
	var changed int64
	for _, i := range damaged {
		changed += m.Chunks[i].Length
	}
	if got := res.BytesWritten + res.BytesZeroed; got != changed {
		t.Errorf("delta restore wrote %d bytes, want only the %d bytes of the 3 damaged chunks", got, changed)
	}
	if res.BytesSkipped != m.DataBytes()-changed {
		t.Errorf("delta restore skipped %d bytes, want %d", res.BytesSkipped, m.DataBytes()-changed)
	}
}

// A Checkpoint names only chunks whose bytes are on the target, and a
// restore stopped after a checkpoint and resumed with Skip set to what it
// named gives the source back.
func TestCheckpointNeverClaimsUnwrittenChunksAndResumes(t *testing.T) {
	src := sampleDisk(t)
	fi, _ := os.Stat(src)
	dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	srcF, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer srcF.Close()
	target := filepath.Join(t.TempDir(), "t.img")
	tf, err := os.Create(target)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	tf.Truncate(m.DiskSize)
	snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last []bool
	calls := 0
	want, got := make([]byte, mib), make([]byte, mib)
	check := func(done []bool) error {
		calls++
		for i, d := range done {
			if !d {
				continue
			}
			c := m.Chunks[i]
			srcF.ReadAt(want[:c.Length], c.Offset)
			tf.ReadAt(got[:c.Length], c.Offset)
			if !bytes.Equal(want[:c.Length], got[:c.Length]) {
				t.Errorf("checkpoint %d claims chunk %d (offset %d) but the target does not hold it", calls, i, c.Offset)
			}
		}
		last = done
		if calls == 5 {
			cancel() // the power goes out
		}
		return nil
	}
	_, err = restore.Run(ctx, snap, tf, restore.Options{Jobs: 2, FreshTarget: true, Checkpoint: check, CheckpointInterval: time.Nanosecond})
	if err == nil {
		t.Fatalf("the interrupted restore reported success after %d checkpoints", calls)
	}
	n := 0
	for _, d := range last {
		if d {
			n++
		}
	}
	if n == 0 || n == len(m.Chunks) {
		t.Fatalf("last checkpoint before the cut covers %d of %d chunks; want some", n, len(m.Chunks))
	}
	// Scribble over every chunk not covered: the resume must rewrite them.
	for i, d := range last {
		if !d {
			tf.WriteAt([]byte("half-written"), m.Chunks[i].Offset)
		}
	}
	res, err := restore.Run(context.Background(), snap, tf, restore.Options{Skip: func(i int) bool { return last[i] }})
	if err != nil {
		t.Fatalf("resumed restore: %v", err)
	}
	if res.Chunks != len(m.Chunks)-n {
		t.Errorf("resumed restore handled %d chunks, want the %d not in the journal", res.Chunks, len(m.Chunks)-n)
	}
	if got, want := fileSHA(t, target, fi.Size()), fileSHA(t, src, fi.Size()); got != want {
		t.Fatalf("after resume sha256 %s, source %s", got, want)
	}
}

// A sparse image's holes are found with SEEK_DATA and not read; the data
// islands between them, wherever they start, are captured exactly.
func TestSparseImageRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(16 * mib)
	f.WriteAt([]byte("an island in the middle of a chunk"), 5*mib+7)
	f.WriteAt(testdisk.RandomBytes(9, 3*mib), 9*mib+4096) // spans three chunks
	f.WriteAt([]byte{1}, 16*mib-1)                        // the very last byte
	f.Close()
	dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	zero := 0
	for _, c := range m.Chunks {
		if c.Zero {
			zero++
		}
	}
	if want := 16 - 1 - 4 - 1; zero != want {
		t.Errorf("%d zero chunks, want %d", zero, want)
	}
	target := filepath.Join(t.TempDir(), "t.img")
	if _, err := restoreTo(t, dir, target, restore.Options{}); err != nil {
		t.Fatal(err)
	}
	if got, want := fileSHA(t, target, 16*mib), fileSHA(t, src, 16*mib); got != want {
		t.Fatalf("restored sha256 %s, source %s", got, want)
	}
}

// stallingHandler sends part of the first few ranged responses and then
// neither sends more nor closes: a stalled proxy or half-dead server.
type stallingHandler struct {
	next   http.Handler
	stalls atomic.Int32
	max    int32
	done   chan struct{}
}

func (h *stallingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Range") != "" && strings.Contains(r.URL.Path, "data.") && h.stalls.Add(1) <= h.max {
		rec := httptest.NewRecorder()
		h.next.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
		w.(http.Flusher).Flush()
		<-h.done // hang until the test ends
		return
	}
	h.next.ServeHTTP(w, r)
}

func TestHTTPRestoreRetriesAStalledConnection(t *testing.T) {
	src := sampleDisk(t)
	fi, _ := os.Stat(src)
	dir, _ := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	h := &stallingHandler{next: snapshot.NewHandler(dir, nil), max: 2, done: make(chan struct{})}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer close(h.done)

	hs := snapshot.NewHTTPSource(srv.URL, nil, time.Minute, nil)
	hs.SetStallTimeout(300 * time.Millisecond)
	snap, err := snapshot.OpenSource(context.Background(), hs, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	target := filepath.Join(t.TempDir(), "t.img")
	tg, err := restore.OpenTarget(target, snap.Manifest.RequiredSize(), snap.Manifest.DiskSize, false)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.File.Close()
	if _, err := restore.Run(context.Background(), snap, tg.File, restore.Options{FreshTarget: true}); err != nil {
		t.Fatalf("restore through stalled connections: %v", err)
	}
	if h.stalls.Load() < h.max {
		t.Fatalf("only %d responses stalled", h.stalls.Load())
	}
	if got, want := fileSHA(t, target, fi.Size()), fileSHA(t, src, fi.Size()); got != want {
		t.Fatalf("restored sha256 %s, source %s", got, want)
	}
}

// Excluded chunks (extents that do not fit a smaller disk) are neither
// written nor ever reported done to a journal; skipped ones (a resume) are.
func TestExcludedChunksAreNotDone(t *testing.T) {
	src := sampleDisk(t)
	dir, m := capture(t, src, snapshot.CaptureOptions{ChunkSize: mib})
	snap, err := snapshot.Open(context.Background(), dir, snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	tg, err := restore.OpenTarget(filepath.Join(t.TempDir(), "t.img"), 0, m.DiskSize, false)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.File.Close()
	last := len(m.Chunks) - 1
	var final []bool
	res, err := restore.Run(context.Background(), snap, tg.File, restore.Options{
		FreshTarget:        true,
		Skip:               func(i int) bool { return i == 0 },
		Exclude:            func(i int) bool { return i == last },
		Checkpoint:         func(done []bool) error { final = done; return nil },
		CheckpointInterval: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Chunks != len(m.Chunks)-2 {
		t.Errorf("restored %d chunks, want %d (all but the skipped and the excluded)", res.Chunks, len(m.Chunks)-2)
	}
	if final == nil || !final[0] || final[last] {
		t.Errorf("last checkpoint: skipped chunk done=%v, excluded chunk done=%v; want true and false", final != nil && final[0], final != nil && final[last])
	}
}
