package qemutests

// Issue 11: a machine captured by the rescue environment, then restored.
// The disks (all built on the host over OLD RANDOM DATA, as a used disk
// holds it: testdisk.GPTDisk fills the disk with random bytes, and
// testdisk.MakeFS makes each file system over other random bytes without
// discarding them, then deletes a 256 KiB file whose blocks keep its data):
//
//	sys     64 MiB NVMe, serial srcsys: GPT, p1 vfat 12 MiB (files),
//	        p2 ext4 40 MiB (files); random bytes in the gap after the GPT
//	        and after the last partition
//	data    48 MiB virtio, serial srcdata: GPT, p1 ext4 30 MiB (files),
//	        p2 8 MiB of random bytes (no file system: stored whole)
//	blank   the restore targets: random bytes of other seeds (used disks),
//	        64 MiB NVMe (serial newsys), 56 MiB virtio (serial newdata:
//	        larger than the source, so the backup GPT moves to its end)
//	stick   FAT32 labelled REWIND (qemu-xhci + usb-storage)
//
// TestCaptureUploadTwoDisksQEMU: VM A boots the USB image 'rewind media
// build --format usb' writes (SeaBIOS, GRUB) with a capture plan (two
// [[machine.disk]], countdown 0) and uploads both disks through guestfwd
// to 'rewind serve --upload-token FILE --sign KEY --keep 2' (the real
// binary) on the host; VM B (-kernel, the plan and the server's public key
// in the initramfs) restores both from .../latest onto the blank disks.
// TestCaptureToStickQEMU: the single-disk form captures onto the stick
// with segment_size 5MiB (the snapshot takes several segments), read back
// with mtools; the same capture again (no overwrite) is refused and leaves
// it as it was; a third boot restores it from media:/snapshots/pc1.
//
// 'go test' ('make test') runs TestCaptureUploadTwoDisksQEMU (two boots,
// about 80 s under TCG on a loaded 2-core machine) and the host check
// TestRestoredDiskCheckHost (about 15 s); REWIND_QEMU_ALL=1 ('make
// qemu-test') adds TestCaptureToStickQEMU (three boots, about 50-90 s),
// TestCaptureMenuEntryQEMU (two boots through GRUB, about 50 s) and
// TestCaptureStickFullQEMU (one boot, about 20-30 s).
//
// What "restored" means here (checkRestoredDisk): the target is the source
// with every byte the snapshot does not store zeroed. Checked from the
// host, partition by partition: the same partition table (sfdisk --dump;
// on a larger disk without last-lba, and sgdisk -v clean), every byte of
// the ranges the manifest says are stored equal to the source's, every
// unused range zeros on the target (the source holds old data there, so
// the target's old bytes and the deleted files are gone), and per file
// system: fsck clean and every file's sha256 the source's (debugfs dump for
// ext4, mtype for vfat), the random partition equal byte for byte. The
// manifest is the uploaded one, but the file checks do not trust it: a
// used block the capture took for unused breaks fsck or a file hash.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

// partSpec is one partition of a machineDisk: a file system type as
// testdisk.MakeFS takes it ("" is random bytes), its size and the bytes
// of files it holds.
type partSpec struct {
	typ        string
	size, used int64
}

// machineDisk is a source disk of the machine that is captured.
type machineDisk struct {
	Name    string
	Path    string
	Size    int64
	Bus     string
	Serial  string
	Parts   []*testdisk.FSImage // in table order
	Offsets []int64             // each partition's byte offset
	SHA256  string              // of the whole image, as built
}

// newMachineDisk builds a GPT disk of size bytes over random bytes (seed)
// with one partition per spec, each made over other random bytes.
func newMachineDisk(t *testing.T, name string, size int64, seed uint64, bus, serial string, specs ...partSpec) *machineDisk {
	t.Helper()
	dir := t.TempDir()
	d := &machineDisk{Name: name, Path: filepath.Join(dir, name+".img"), Size: size, Bus: bus, Serial: serial}
	for i, s := range specs {
		d.Parts = append(d.Parts, testdisk.MakeFS(t, filepath.Join(dir, fmt.Sprintf("%s-p%d.img", name, i+1)), s.typ, s.size, s.used, seed*10+uint64(i)+1))
	}
	d.Offsets = testdisk.GPTDisk(t, d.Path, size, seed, d.Parts...)
	for _, p := range d.Parts {
		os.Remove(p.Path) // the disk holds it now
	}
	d.SHA256 = fileSHA256(t, d.Path)
	return d
}

// sourceDisks builds the two disks of the machine srv1 (see the top).
func sourceDisks(t *testing.T) (sys, data *machineDisk) {
	t.Helper()
	testdisk.NeedFS(t, "ext4", "vfat")
	for _, tool := range []string{"sgdisk", "sfdisk", "mtype", "mdir"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh)", tool)
		}
	}
	sys = newMachineDisk(t, "sys", 64<<20, 1101, "nvme", "srcsys",
		partSpec{"vfat", 12 << 20, 3 << 20}, partSpec{"ext4", 40 << 20, 10 << 20})
	data = newMachineDisk(t, "data", 48<<20, 1102, "virtio", "srcdata",
		partSpec{"ext4", 30 << 20, 8 << 20}, partSpec{"", 8 << 20, 0})
	return sys, data
}

// usedDisk writes size random bytes (seed) to a new image: a disk that is
// not blank, whose old bytes a restore must not leave behind.
func usedDisk(t *testing.T, name string, size int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".img")
	if err := os.WriteFile(p, testdisk.RandomBytes(seed, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// wantUnchanged fails the test if the capture wrote to a source disk.
func wantUnchanged(t *testing.T, disks ...*machineDisk) {
	t.Helper()
	for _, d := range disks {
		if got := fileSHA256(t, d.Path); got != d.SHA256 {
			t.Errorf("source disk %s (%s, serial %s) changed during the capture: sha256 %s, want %s", d.Name, d.Bus, d.Serial, got, d.SHA256)
		}
	}
}

// checkRestoredDisk checks target against the source disk src and the
// snapshot's manifest m (see the top of this file).
func checkRestoredDisk(t *testing.T, src *machineDisk, target string, m *snapshot.Manifest) {
	t.Helper()
	problems, summary, err := restoredProblems(src, target, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) == 0 {
		t.Log(summary)
	}
}

// restoredProblems lists how target differs from what restoring the
// snapshot m of src must give; err is for a check that could not run.
func restoredProblems(src *machineDisk, target string, m *snapshot.Manifest) (problems []string, summary string, err error) {
	ctx := context.Background()
	what := fmt.Sprintf("target %s (restored from disk %s)", target, src.Name)
	bad := func(format string, args ...any) { problems = append(problems, what+": "+fmt.Sprintf(format, args...)) }
	if m.DiskSize != src.Size {
		bad("the manifest's disk size is %d, want the source's %d", m.DiskSize, src.Size)
	}

	// The partition table.
	ds, err := SfdiskDump(src.Path)
	if err != nil {
		return nil, "", err
	}
	dt, err := SfdiskDump(target)
	if err != nil {
		bad("no readable partition table: %v", err)
		return problems, "", nil
	}
	if fi, err := os.Stat(target); err == nil && fi.Size() != src.Size {
		ds, dt = withoutLastLBA(ds), withoutLastLBA(dt)
	}
	if ds != dt {
		bad("sfdisk --dump\n%s\nwant the source's\n%s", dt, ds)
	}
	if out, err := exec.Command("sgdisk", "-v", target).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		bad("sgdisk -v: %v\n%s\nwant \"No problems found\"", err, out)
	}

	s, err := os.Open(src.Path)
	if err != nil {
		return nil, "", err
	}
	defer s.Close()
	tg, err := os.Open(target)
	if err != nil {
		return nil, "", err
	}
	defer tg.Close()

	// What the snapshot stores is the source's; what it does not is zeros.
	var stored, unused, oldBytes int64
	for i, e := range m.Extents {
		for _, r := range e.StoredRuns() {
			hs, err := hashRange(s, r.Offset, r.Length)
			if err != nil {
				return nil, "", err
			}
			if ht, err := hashRange(tg, r.Offset, r.Length); err != nil || hs != ht {
				bad("extent %d (%s, partition %d) bytes %d-%d: sha256 %s (%v), want the source's %s", i, e.Kind, e.Partition, r.Offset, r.End()-1, ht, err, hs)
			}
			stored += r.Length
		}
		for _, u := range e.Unused {
			if _, zero, err := nonZeroAt(s, u.Offset, u.Length); err != nil {
				return nil, "", err
			} else if !zero {
				oldBytes += u.Length
			}
			if off, zero, err := nonZeroAt(tg, u.Offset, u.Length); err != nil || !zero {
				bad("extent %d (partition %d) unused bytes %d-%d: byte %d is not zero (%v): the old data is still there", i, e.Partition, u.Offset, u.End()-1, off, err)
			}
			unused += u.Length
		}
	}
	// The fixture: the file systems' free blocks hold old data, and the
	// capture left them out.
	if oldBytes == 0 {
		bad("no unused range of the snapshot holds old data on the source (unused %d bytes): the capture stored every block, or the fixture lost its old data", unused)
	}

	// Each file system, from the target's bytes.
	tmp, err := os.MkdirTemp("", "rewind-restored-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	for i, p := range src.Parts {
		part := filepath.Join(tmp, fmt.Sprintf("p%d.img", i+1))
		if err := copyOut(tg, src.Offsets[i], p.Size, part); err != nil {
			return nil, "", err
		}
		pbad := func(format string, args ...any) {
			bad("partition %d (%s): %s", i+1, fsName(p.Type), fmt.Sprintf(format, args...))
		}
		if p.Deleted != nil {
			head := p.Deleted[:4096]
			b := make([]byte, p.Size)
			if _, err := s.ReadAt(b, src.Offsets[i]); err != nil {
				return nil, "", err
			}
			if !bytes.Contains(b, head) {
				return nil, "", fmt.Errorf("source disk %s partition %d: the deleted file's bytes are not there; the fixture lost its old data", src.Name, i+1)
			}
			if b, _ := os.ReadFile(part); bytes.Contains(b, head) {
				pbad("holds the bytes of the file deleted on the source: deleted data came back")
			}
		}
		switch p.Type {
		case "ext4":
			if err := fsckClean(ctx, part); err != nil {
				pbad("%v", err)
			}
			paths := make([]string, 0, len(p.Files))
			for name := range p.Files {
				paths = append(paths, "/"+name)
			}
			got, err := DumpFiles(ctx, part, paths)
			if err != nil {
				pbad("%v", err)
				continue
			}
			for name, want := range p.Files {
				if got["/"+name] != want {
					pbad("/%s has sha256 %s, want %s", name, got["/"+name], want)
				}
			}
		case "vfat":
			if out, err := exec.Command("fsck.vfat", "-n", part).CombinedOutput(); err != nil {
				pbad("fsck.vfat -n: %v (want clean)\n%s", err, out)
			}
			for name, want := range p.Files {
				b, err := StickFile(part, "/"+name)
				if err != nil {
					pbad("%v", err)
					continue
				}
				if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
					pbad("/%s has sha256 %x, want %s", name, sum, want)
				}
			}
		case "":
			hs, err := hashRange(s, src.Offsets[i], p.Size)
			if err != nil {
				return nil, "", err
			}
			if ht, err := hashRange(tg, src.Offsets[i], p.Size); err != nil || hs != ht {
				pbad("sha256 %s (%v), want the source's %s", ht, err, hs)
			}
		}
	}
	summary = fmt.Sprintf("%s: table, %d stored bytes and %d files equal the source's; %d unused bytes zeros (%d of them old data on the source)",
		what, stored, countFiles(src), unused, oldBytes)
	return problems, summary, nil
}

// nonZeroAt returns the offset of the first byte in [off, off+n) of f
// that is not zero, or zero when there is none.
func nonZeroAt(f *os.File, off, n int64) (at int64, zero bool, err error) {
	buf := make([]byte, 1<<20)
	for done := int64(0); done < n; {
		b := buf[:min(int64(len(buf)), n-done)]
		if _, err := f.ReadAt(b, off+done); err != nil {
			return 0, false, fmt.Errorf("%s: bytes %d-%d: %w", f.Name(), off+done, off+done+int64(len(b))-1, err)
		}
		if i := slices.IndexFunc(b, func(c byte) bool { return c != 0 }); i >= 0 {
			return off + done + int64(i), false, nil
		}
		done += int64(len(b))
	}
	return 0, true, nil
}

func fsName(typ string) string {
	if typ == "" {
		return "random bytes"
	}
	return typ
}

func countFiles(d *machineDisk) int {
	n := 0
	for _, p := range d.Parts {
		n += len(p.Files)
	}
	return n
}

func withoutLastLBA(dump string) string {
	var keep []string
	for _, l := range strings.Split(dump, "\n") {
		if !strings.HasPrefix(l, "last-lba:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// wantDisksOK checks that the report lists want disks, each ok.
// wantDisksOK checks that the report says success for action and lists
// one disk per serial, in order, each ok and matched to the disk with
// that serial.
func wantDisksOK(t *testing.T, r *rescue.Report, action string, serials ...string) {
	t.Helper()
	if r.Status != rescue.StatusSuccess {
		t.Fatalf("report status %q, error %q; want success", r.Status, r.Error)
	}
	if r.Action != action {
		t.Errorf("report action %q, want %q", r.Action, action)
	}
	if len(r.Disks) != len(serials) {
		t.Fatalf("report lists %d disks (%+v), want %d", len(r.Disks), r.Disks, len(serials))
	}
	for i, d := range r.Disks {
		if d.Status != rescue.DiskOK {
			t.Errorf("report disk %d (%s): status %q, error %q; want %s", i, d.Snapshot, d.Status, d.Error, rescue.DiskOK)
		}
		if d.Target.Serial != serials[i] {
			t.Errorf("report disk %d (%s): disk %s serial %q, want serial %q", i, d.Snapshot, d.Target.Path, d.Target.Serial, serials[i])
		}
	}
}

// labServer is 'rewind serve' running on the host for a test.
type labServer struct {
	Dir  string // the served directory
	Port int
	log  *syncBuffer
}

// startServe runs 'rewind serve DIR --listen 127.0.0.1:0 args...' and
// returns once it listens; the server is stopped when the test ends.
func startServe(t *testing.T, rewind, dir string, args ...string) *labServer {
	t.Helper()
	cmd := exec.Command(rewind, append([]string{"serve", dir, "--listen", "127.0.0.1:0"}, args...)...)
	log := &syncBuffer{}
	cmd.Stderr = log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		wg.Wait()
		if t.Failed() {
			t.Logf("rewind serve's output:\n%s", log.String())
		}
	})
	sc := bufio.NewScanner(stdout)
	addr := regexp.MustCompile(`on http://127\.0\.0\.1:(\d+)/`)
	for sc.Scan() {
		fmt.Fprintln(log, sc.Text())
		if m := addr.FindStringSubmatch(sc.Text()); m != nil {
			var port int
			fmt.Sscan(m[1], &port)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for sc.Scan() {
					fmt.Fprintln(log, sc.Text())
				}
			}()
			return &labServer{Dir: dir, Port: port, log: log}
		}
	}
	cmd.Wait()
	t.Fatalf("rewind serve %s %s did not start:\n%s", dir, strings.Join(args, " "), log.String())
	return nil
}

// generationName is the shape of a generation: the capture's start, UTC.
var generationName = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$`)

// published checks the server's directory for NAME (a path under the
// served directory): one generation directory and NAME/latest naming it,
// signed by pub; it returns the generation and its manifest.
func published(t *testing.T, lab *labServer, name string, pub ed25519.PublicKey) (string, *snapshot.Manifest) {
	t.Helper()
	dir := filepath.Join(lab.Dir, filepath.FromSlash(name))
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("server: %s: %v", name, err)
	}
	var gens []string
	for _, e := range entries {
		if e.Name() != "latest" {
			gens = append(gens, e.Name())
		}
	}
	if len(gens) != 1 || !generationName.MatchString(gens[0]) {
		t.Fatalf("server: %s holds %q besides latest; want one generation named like 2006-01-02T15:04:05Z", name, gens)
	}
	latest, err := os.Readlink(filepath.Join(dir, "latest"))
	if err != nil {
		t.Fatalf("server: %s/latest: %v; want a symbolic link to the generation", name, err)
	}
	if filepath.Base(latest) != gens[0] {
		t.Errorf("server: %s/latest -> %s, want the generation %s", name, latest, gens[0])
	}
	gen := filepath.Join(dir, gens[0])
	mb, err := os.ReadFile(filepath.Join(gen, snapshot.ManifestName))
	if err != nil {
		t.Fatalf("server: %s/%s: %v", name, gens[0], err)
	}
	m, err := snapshot.ParseManifest(mb)
	if err != nil {
		t.Fatalf("server: %s/%s/%s: %v", name, gens[0], snapshot.ManifestName, err)
	}
	sig, err := os.ReadFile(filepath.Join(gen, snapshot.SignatureName))
	if err != nil {
		t.Errorf("server: %s/%s has no signature (rewind serve --sign): %v", name, gens[0], err)
	} else if _, err := snapshot.VerifySignature(mb, sig, []ed25519.PublicKey{pub}); err != nil {
		t.Errorf("server: %s/%s: the signature does not verify with the server's key: %v", name, gens[0], err)
	}
	for _, seg := range m.Segments {
		fi, err := os.Stat(filepath.Join(gen, seg.Name))
		if err != nil {
			t.Errorf("server: %s/%s: %v", name, gens[0], err)
		} else if fi.Size() != seg.Size {
			t.Errorf("server: %s/%s/%s: %d bytes, the manifest says %d", name, gens[0], seg.Name, fi.Size(), seg.Size)
		}
	}
	return gens[0], m
}

// noStaging fails the test if the server kept staging data of an upload
// (a dot directory under DIR/.upload) after every upload committed.
func noStaging(t *testing.T, lab *labServer) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(lab.Dir, ".upload"))
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("server: .upload still holds %q after every upload committed", names)
	}
}

// Issue 11, test 1: the machine srv1 with two disks boots the rescue USB
// image with a capture plan and uploads both disks to the lab server; a
// second machine with two used disks restores both from the server.
func TestCaptureUploadTwoDisksQEMU(t *testing.T) {
	setup(t, false)
	sys, data := sourceDisks(t)
	rewind := rewindBin(t)

	// The lab server: 'rewind serve' with an upload token and a signing
	// key (both outside DIR), keeping 2 generations.
	secrets := t.TempDir()
	const token = "qemu-test-upload-token-0123456789abcdef"
	tokenFile := filepath.Join(secrets, "upload-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	privFile, pubFile, err := snapshot.GenerateKey(filepath.Join(secrets, "lab"))
	if err != nil {
		t.Fatal(err)
	}
	pubBytes, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := snapshot.ParsePublicKey(pubBytes)
	if err != nil {
		t.Fatal(err)
	}
	lab := startServe(t, rewind, t.TempDir(), "--upload-token", tokenFile, "--sign", privFile, "--keep", "2")

	// VM A: capture, booted from the USB image through SeaBIOS and GRUB.
	capturePlan := fmt.Sprintf(`
[countdown]
seconds = 0
[upload]
token = %[2]q
[[machine]]
name = "srv1"
action = "capture"
after = "poweroff"
[[machine.disk]]
snapshot = "%[1]s/snapshots/srv1-sys"
target = "serial=srcsys"
[[machine.disk]]
snapshot = "%[1]s/snapshots/srv1-data"
target = "size=48MiB"
`, GuestServer, token)
	_, img := buildMedium(t, initramfs.FormatUSB, capturePlan, false)
	vmA := &VM{HTTPPort: lab.Port, Timeout: 400 * time.Second, LogPath: filepath.Join(t.TempDir(), "console-a.log"),
		Drives: []Drive{{Path: img, Bus: "usb", Boot: true}, {Path: sys.Path, Bus: sys.Bus, Serial: sys.Serial}, {Path: data.Path, Bus: data.Bus, Serial: data.Serial}}}
	out := runLogged(t, vmA, " (VM A: firmware, boot loader, rescue, capture and upload of two disks)")
	rA := consoleReport(t, out)
	wantDisksOK(t, rA, rescue.ActionCapture, sys.Serial, data.Serial)
	wantUnchanged(t, sys, data)
	// Every disk's match was shown, naming the device (as the report
	// names it), its serial and its snapshot, before the capture's result.
	end := strings.Index(out, rescue.ReportBegin)
	for i, snap := range []string{"/snapshots/srv1-sys", "/snapshots/srv1-data"} {
		d := rA.Disks[i]
		re := regexp.MustCompile(regexp.QuoteMeta(d.Target.Path) + `\b[^\r\n]*` + regexp.QuoteMeta(d.Target.Serial) + `[^\r\n]*` + regexp.QuoteMeta(GuestServer+snap))
		if line := re.FindStringIndex(out); line == nil || line[0] > end {
			t.Errorf("VM A's console shows no line naming disk %s (serial %s) and its snapshot %s before the report", d.Target.Path, d.Target.Serial, GuestServer+snap)
		} else {
			t.Logf("VM A's console: %s", strings.TrimSpace(out[line[0]:line[1]]))
		}
	}
	for i, d := range rA.Disks {
		t.Logf("VM A's report: disk %d %s (%s): %d bytes read, %d stored in %.1fs", i, d.Target.Path, d.Target.Serial, d.BytesRead, d.BytesStored, d.Seconds)
	}

	// The server: each snapshot under one shared generation, signed,
	// with latest naming it; no staging left.
	genSys, mSys := published(t, lab, "snapshots/srv1-sys", pub)
	genData, mData := published(t, lab, "snapshots/srv1-data", pub)
	if genSys != genData {
		t.Errorf("server: the disks of one capture have generations %s and %s, want one shared", genSys, genData)
	}
	noStaging(t, lab)
	for i, w := range []struct {
		name, gen string
		m         *snapshot.Manifest
	}{{"srv1-sys", genSys, mSys}, {"srv1-data", genData, mData}} {
		if w.m.Origin.Hostname != "srv1" || !strings.HasPrefix(w.m.Origin.Path, "/dev/") {
			t.Errorf("server: snapshots/%s: origin %+v, want hostname srv1 and the guest's device", w.name, w.m.Origin)
		}
		want := fmt.Sprintf("%s/snapshots/%s/%s", GuestServer, w.name, w.gen)
		if rA.Disks[i].Published != want {
			t.Errorf("report disk %d: published %q, want %q", i, rA.Disks[i].Published, want)
		}
	}
	if t.Failed() {
		return
	}

	// VM B: two used disks, restored from .../latest; the initramfs
	// trusts the server's key only, so the snapshots must be signed.
	restorePlan := fmt.Sprintf(`
[countdown]
seconds = 0
[[machine]]
name = "srv1"
after = "poweroff"
[[machine.disk]]
snapshot = "%[1]s/snapshots/srv1-sys/latest"
target = "serial=newsys"
[[machine.disk]]
snapshot = "%[1]s/snapshots/srv1-data/latest"
target = "serial=newdata"
`, GuestServer)
	newSys, newData := usedDisk(t, "newsys", 64<<20, 2101), usedDisk(t, "newdata", 56<<20, 2102)
	initrd := filepath.Join(t.TempDir(), "initrd")
	if err := Initrd(shared.base, initrd, &initramfs.Overlay{Modules: shared.modules, Plan: []byte(restorePlan), Trust: map[string][]byte{"lab.pub": pubBytes}}); err != nil {
		t.Fatal(err)
	}
	vmB := &VM{HTTPPort: lab.Port, Initrd: initrd, Timeout: 300 * time.Second,
		Drives: []Drive{{Path: newSys, Bus: "nvme", Serial: "newsys"}, {Path: newData, Serial: "newdata"}}}
	_, rB := boot(t, vmB, "")
	wantDisksOK(t, rB, rescue.ActionRestore, "newsys", "newdata")
	for i, d := range rB.Disks {
		if !d.Signed {
			t.Errorf("VM B's report disk %d: snapshot %s not signed, want it verified with the server's key", i, d.Snapshot)
		}
	}
	checkRestoredDisk(t, sys, newSys, mSys)
	checkRestoredDisk(t, data, newData, mData)
}

// Issue 11, test 2: capture onto the rescue stick, in segments, then
// restore from it onto a used disk.
func TestCaptureToStickQEMU(t *testing.T) {
	setup(t, true)
	testdisk.NeedFS(t, "ext4", "vfat")
	src := newMachineDisk(t, "pc1", 64<<20, 1201, "virtio", "pc1disk",
		partSpec{"vfat", 12 << 20, 3 << 20}, partSpec{"ext4", 40 << 20, 10 << 20})
	stick := filepath.Join(t.TempDir(), "stick.img")
	if err := USBStick(stick, 128<<20, nil); err != nil {
		t.Fatal(err)
	}

	// Boot 1: capture.
	const segment = 5 << 20
	capturePlan := `
[countdown]
seconds = 0
[[machine]]
name = "pc1"
action = "capture"
snapshot = "media:/snapshots/pc1"
target = "serial=pc1disk"
segment_size = "5MiB"
after = "poweroff"
`
	_, r := boot(t, &VM{Timeout: 300 * time.Second, Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: src.Path, Serial: src.Serial}}}, capturePlan)
	wantDisksOK(t, r, rescue.ActionCapture, src.Serial)
	if p := r.Disks[0].Published; p != "media:/snapshots/pc1" {
		t.Errorf("report disk 0: published %q, want media:/snapshots/pc1", p)
	}
	wantUnchanged(t, src)

	// The stick, read with mtools: snapshots/pc1 alone, in several
	// segments of at most 5 MiB, and no partial directory left.
	names, err := StickFiles(stick, "/snapshots")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || !strings.HasSuffix(strings.TrimSuffix(names[0], "/"), "/pc1") {
		t.Errorf("stick: /snapshots holds %q, want pc1 alone (no partial or old directory)", names)
	}
	mb, err := StickFile(stick, "/snapshots/pc1/"+snapshot.ManifestName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.ParseManifest(mb)
	if err != nil {
		t.Fatalf("stick: snapshots/pc1/%s: %v", snapshot.ManifestName, err)
	}
	if m.SegmentSize != segment || len(m.Segments) < 2 {
		t.Errorf("stick: snapshots/pc1: segment size %d in %d segments; want %d, several", m.SegmentSize, len(m.Segments), segment)
	}
	files, err := StickFiles(stick, "/snapshots/pc1")
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range m.Segments {
		if !slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, "/"+seg.Name) }) {
			t.Errorf("stick: snapshots/pc1 holds %q, no %s", files, seg.Name)
			continue
		}
		b, err := StickFile(stick, "/snapshots/pc1/"+seg.Name)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != seg.Size || seg.Size > segment {
			t.Errorf("stick: snapshots/pc1/%s: %d bytes, manifest %d; want at most %d", seg.Name, len(b), seg.Size, segment)
		}
	}
	t.Logf("stick: snapshots/pc1: %d segments, %d bytes stored for a %d-byte disk", len(m.Segments), m.StoredBytes(), m.DiskSize)
	if t.Failed() {
		return
	}

	// Boot 2: the same capture again, without overwrite: refused before
	// anything is read, the snapshot on the stick as it was.
	_, r = boot(t, &VM{Timeout: 300 * time.Second, Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: src.Path, Serial: src.Serial}}}, capturePlan)
	if r.Status != rescue.StatusFailed || !strings.Contains(r.Error, "media:/snapshots/pc1") || !strings.Contains(r.Error, "overwrite") {
		t.Errorf("second capture onto media:/snapshots/pc1: report status %q, error %q; want failed, naming the snapshot and overwrite", r.Status, r.Error)
	}
	if again, err := StickFile(stick, "/snapshots/pc1/"+snapshot.ManifestName); err != nil || !bytes.Equal(again, mb) {
		t.Errorf("stick: snapshots/pc1/%s changed or went away (%v) after a refused capture", snapshot.ManifestName, err)
	}
	if names, err := StickFiles(stick, "/snapshots"); err != nil || len(names) != 1 {
		t.Errorf("stick: /snapshots holds %q (%v) after a refused capture, want pc1 alone", names, err)
	}

	// Boot 3: restore from the stick onto a used disk.
	restorePlan := `
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
target = "serial=newdisk"
after = "poweroff"
`
	target := usedDisk(t, "newdisk", 64<<20, 2201)
	_, r = boot(t, &VM{Timeout: 300 * time.Second, Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "newdisk"}}}, restorePlan)
	wantDisksOK(t, r, rescue.ActionRestore, "newdisk")
	checkRestoredDisk(t, src, target, m)
}

// The check the capture tests rely on, on the host: the machine's system
// disk captured and restored with the host CLI (onto a loop device over a
// used disk) passes it; a byte-for-byte copy of the source (old data in
// the free blocks) and a restored disk with one stored byte changed fail
// it, each naming the problem.
func TestRestoredDiskCheckHost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds disks with the real tools; skipped with -short")
	}
	sys, _ := sourceDisks(t)
	rewind := rewindBin(t)
	snap := filepath.Join(t.TempDir(), "srv1-sys")
	if out, err := exec.Command(rewind, "capture", sys.Path, "-o", snap, "--progress", "none").CombinedOutput(); err != nil {
		t.Fatalf("rewind capture %s: %v\n%s", sys.Path, err, out)
	}
	mb, err := os.ReadFile(filepath.Join(snap, snapshot.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.ParseManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	target := usedDisk(t, "newsys", sys.Size, 2101)
	dev := testdisk.Loop(t, target, 0)
	if out, err := exec.Command(rewind, "restore", snap, dev, "--yes", "--progress", "none").CombinedOutput(); err != nil {
		t.Fatalf("rewind restore %s %s: %v\n%s", snap, dev, err, out)
	}
	checkRestoredDisk(t, sys, target, m)

	// A copy of the source keeps the old data in the unused ranges.
	cp := filepath.Join(t.TempDir(), "copy.img")
	if err := run("cp", sys.Path, cp); err != nil {
		t.Fatal(err)
	}
	// The restored disk with one stored byte of the ext4 partition changed.
	changed := filepath.Join(t.TempDir(), "changed.img")
	if err := run("cp", target, changed); err != nil {
		t.Fatal(err)
	}
	var at int64 = -1
	for _, e := range m.Extents {
		if e.Partition == 2 {
			runs := e.StoredRuns()
			r := runs[len(runs)-1]
			at = r.Offset + r.Length/2
		}
	}
	if at < 0 {
		t.Fatalf("the manifest has no extent for partition 2: %+v", m.Extents)
	}
	f, err := os.OpenFile(changed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, at)
	b[0] ^= 0xff
	f.WriteAt(b, at)
	f.Close()

	for _, c := range []struct {
		name, target, want string
	}{
		{"copy of the source", cp, "the old data is still there"},
		{"one byte changed", changed, "partition 2) bytes"},
	} {
		problems, _, err := restoredProblems(sys, c.target, m)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
			t.Errorf("%s: the check found %q; want a problem saying %q", c.name, problems, c.want)
		}
	}
}

// partitionOffset returns the byte offset of partition n of a disk image,
// as sfdisk --json lists it.
func partitionOffset(t *testing.T, img string, n int) int64 {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", img, err)
	}
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node  string `json:"node"`
				Start int64  `json:"start"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &table); err != nil {
		t.Fatalf("sfdisk --json %s: %v", img, err)
	}
	pt := table.PartitionTable
	if pt.SectorSize == 0 {
		pt.SectorSize = 512
	}
	for _, p := range pt.Partitions {
		if strings.HasSuffix(p.Node, fmt.Sprint(n)) && !strings.HasSuffix(p.Node, fmt.Sprint(10+n)) {
			return p.Start * pt.SectorSize
		}
	}
	t.Fatalf("%s has no partition %d: %s", img, n, out)
	return 0
}

// The boot menu's "Capture this machine" entry with a plan written for
// restores: one USB image, one plan (snapshot media:/snapshots/pc1, no
// action), two boots. Chosen on the serial console, the capture entry
// captures the disk onto the image's own REWIND partition; the default
// entry then restores it onto a used disk.
func TestCaptureMenuEntryQEMU(t *testing.T) {
	setup(t, true)
	testdisk.NeedFS(t, "ext4", "vfat")
	src := newMachineDisk(t, "pc1", 64<<20, 1301, "virtio", "pc1disk",
		partSpec{"vfat", 12 << 20, 3 << 20}, partSpec{"ext4", 40 << 20, 10 << 20})
	plan := `
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
target = "size=64MiB"
after = "poweroff"
`
	base, err := os.ReadFile(shared.base)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id := initramfs.NewMediaID(initramfs.FormatUSB, []byte(t.Name()), time.Now())
	res, err := initramfs.BuildMedia(initramfs.MediaOptions{Base: base, Kernel: shared.kernel, Plan: []byte(plan), MediaID: id, OutDir: filepath.Join(dir, "boot")})
	if err != nil {
		t.Fatal(err)
	}
	built, err := initramfs.BuildBoot(context.Background(), initramfs.BootOptions{
		Format: initramfs.FormatUSB, Kernel: res.Kernel, Initramfs: res.Initramfs,
		Cmdline: "rewind.after=poweroff", MenuTimeout: 1, MediaID: id, OutDir: dir, DataSize: 96 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	img := built.Files[0]

	// Boot 1: the third menu entry (restore, shell, capture).
	const entry = "Rewind: Capture this machine"
	vm := &VM{Timeout: 300 * time.Second, LogPath: filepath.Join(t.TempDir(), "console-capture.log"),
		Drives: []Drive{{Path: img, Bus: "usb", Boot: true}, {Path: src.Path, Serial: src.Serial}},
		Keys:   []Key{{When: entry, Send: "\x1b[B"}, {When: entry, Send: "\x1b[B", Delay: 300 * time.Millisecond}, {When: entry, Send: "\r", Delay: 300 * time.Millisecond}}}
	out := runLogged(t, vm, " (firmware, GRUB's capture entry, rescue, capture onto the medium)")
	r := consoleReport(t, out)
	wantDisksOK(t, r, rescue.ActionCapture, src.Serial)
	wantUnchanged(t, src)
	rewindPart := fmt.Sprintf("%s@@%d", img, partitionOffset(t, img, 3))
	mb, err := StickFile(rewindPart, "/snapshots/pc1/"+snapshot.ManifestName)
	if err != nil {
		t.Fatalf("the medium's REWIND partition has no snapshot after the capture entry: %v", err)
	}
	m, err := snapshot.ParseManifest(mb)
	if err != nil {
		t.Fatalf("medium: snapshots/pc1/%s: %v", snapshot.ManifestName, err)
	}
	if t.Failed() {
		return
	}

	// Boot 2: the default entry restores it onto a used disk of the
	// same size (the plan's size=64MiB).
	target := usedDisk(t, "newdisk", 64<<20, 2301)
	vm = &VM{Timeout: 300 * time.Second, LogPath: filepath.Join(t.TempDir(), "console-restore.log"),
		Drives: []Drive{{Path: img, Bus: "usb", Boot: true}, {Path: target, Serial: "newdisk"}}}
	out = runLogged(t, vm, " (firmware, GRUB's default entry, rescue, restore from the medium)")
	wantDisksOK(t, consoleReport(t, out), rescue.ActionRestore, "newdisk")
	checkRestoredDisk(t, src, target, m)
}

// A capture that does not fit on the stick: the real vfat driver answers
// ENOSPC. The report says the medium is full and what to do, the partial
// directory is gone, and the snapshot already on the stick is untouched.
func TestCaptureStickFullQEMU(t *testing.T) {
	setup(t, true)
	testdisk.NeedFS(t, "ext4", "vfat")
	// About 40 MiB to store; the stick has about 30 MiB free.
	src := newMachineDisk(t, "pc2", 64<<20, 1401, "virtio", "pc2disk",
		partSpec{"vfat", 12 << 20, 3 << 20}, partSpec{"ext4", 40 << 20, 26 << 20})
	stick := filepath.Join(t.TempDir(), "stick.img")
	if err := USBStick(stick, 40<<20, map[string]string{"/snapshots/pc1": shared.snap}); err != nil {
		t.Fatal(err)
	}
	before, err := StickFile(stick, "/snapshots/pc1/"+snapshot.ManifestName)
	if err != nil {
		t.Fatal(err)
	}
	plan := `
[countdown]
seconds = 0
[[machine]]
name = "pc2"
action = "capture"
snapshot = "media:/snapshots/pc2"
target = "serial=pc2disk"
after = "poweroff"
`
	_, r := boot(t, &VM{Timeout: 300 * time.Second, Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: src.Path, Serial: src.Serial}}}, plan)
	if r.Status != rescue.StatusFailed || !strings.Contains(r.Error, "the rescue medium is full") || !strings.Contains(r.Error, "media:/snapshots/pc2") {
		t.Errorf("report status %q, error %q; want failed, saying the rescue medium is full, naming media:/snapshots/pc2", r.Status, r.Error)
	}
	t.Logf("report error: %s", r.Error)
	if len(r.Disks) != 1 || r.Disks[0].Status != rescue.DiskFailed {
		t.Errorf("report disks %+v; want the one disk failed", r.Disks)
	}
	names, err := StickFiles(stick, "/snapshots")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || !strings.HasSuffix(strings.TrimSuffix(names[0], "/"), "/pc1") {
		t.Errorf("stick: /snapshots holds %q after the failed capture, want pc1 alone (no partial directory, no pc2)", names)
	}
	if after, err := StickFile(stick, "/snapshots/pc1/"+snapshot.ManifestName); err != nil || !bytes.Equal(after, before) {
		t.Errorf("stick: snapshots/pc1/%s changed or went away (%v) after the failed capture", snapshot.ManifestName, err)
	}
	wantUnchanged(t, src)
}
