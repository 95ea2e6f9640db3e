package rescue

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// TestPlanCaptureHostileNames: a capture plan whose disk entries name the
// same place in two spellings (case only, which the FAT stick ignores; a
// trailing, doubled or ./ slash; an upper-case host), or one snapshot
// inside another, is refused at plan time: on the stick the second disk
// would otherwise replace the first's snapshot (with overwrite) and the
// report say both were captured. Media names FAT cannot keep as written,
// that climb out with "..", or that land among the medium's own
// directories are refused too, and so is an expect table on a capture.
func TestPlanCaptureHostileNames(t *testing.T) {
	const up = "[upload]\ntoken = \"" + testUploadToken + "\"\n"
	const srv = "[[machine]]\nname = \"srv1\"\naction = \"capture\"\noverwrite = true\n"
	disk := func(snap, target string) string {
		return "[[machine.disk]]\nsnapshot = \"" + snap + "\"\ntarget = \"" + target + "\"\n"
	}
	one := func(snap string) string { return srv + disk(snap, "serial=A") }
	for _, tc := range []struct {
		name, plan string
		want       string // "" = accepted
	}{
		{"case only on the stick", srv + disk("media:/snapshots/PC1", "serial=A") + disk("media:/snapshots/pc1", "serial=B"),
			"disks 1 and 2 both name snapshot media:/snapshots/pc1"},
		{"trailing slash", srv + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots/pc1/", "serial=B"), "disks 1 and 2 both name snapshot"},
		{"doubled slash", srv + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots//pc1", "serial=B"), "disks 1 and 2 both name snapshot"},
		{"dot element", srv + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots/./pc1", "serial=B"), "disks 1 and 2 both name snapshot"},
		{"upload host case and slash", up + srv + disk("http://LAB/snapshots/pc1", "serial=A") + disk("http://lab/snapshots/pc1/", "serial=B"), "disks 1 and 2 both name snapshot http://lab/snapshots/pc1"},
		{"restore entry, same snapshot two spellings", "[[machine]]\nname = \"srv1\"\n" + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots/pc1/", "serial=B"), "disks 1 and 2 both name snapshot"},
		{"second inside the first", srv + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots/pc1/data", "serial=B"), "disk 2's snapshot media:/snapshots/pc1/data lies inside disk 1's media:/snapshots/pc1"},
		{"first inside the second", srv + disk("media:/snapshots/pc1/data", "serial=A") + disk("media:/Snapshots/PC1", "serial=B"), "disk 1's snapshot media:/snapshots/pc1/data lies inside disk 2's media:/Snapshots/PC1"},
		{"upload inside another", up + srv + disk("http://lab/snapshots/pc1", "serial=A") + disk("http://lab/snapshots/pc1/data", "serial=B"), "lies inside disk 1's"},
		{"nested, restore entry (nothing is replaced)", "[[machine]]\nname = \"srv1\"\n" + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots/pc1/data", "serial=B"), ""},
		{"side by side", srv + disk("media:/snapshots/pc1", "serial=A") + disk("media:/snapshots/pc10", "serial=B"), ""},
		{"climbs to the root", one("media:/snapshots/../.."), `which has the path element ".."`},
		{"climbs out", one("media:/snapshots/.."), `which has the path element ".."`},
		{"colon (FAT refuses it)", one("media:/snapshots/pc1:sys"), "with a character other than letters"},
		{"question mark", one("media:/snapshots/pc1?"), "with a character other than letters"},
		{"trailing dot (FAT drops it)", one("media:/snapshots/pc1."), "that ends with a dot"},
		{"trailing space", one("media:/snapshots/pc1 "), "with a character other than letters"},
		{"dot-leading name", one("media:/snapshots/.pc1"), "that starts with a dot"},
		{"very long name", one("media:/snapshots/" + strings.Repeat("a", 240)), "a path element of 240 bytes"},
		{"the medium's EFI directory", one("media:/EFI/BOOT"), "under the rescue medium's own EFI/ directory"},
		{"the medium's rewind directory", one("media:/rewind/reports"), "under the rescue medium's own rewind/ directory"},
		{"the medium's boot directory, any case", one("media:/Boot"), "own Boot/ directory"},
		{"a good media name", one("media:/snapshots/srv1-sys_2.img"), ""},
		{"disk expect on a capture", srv + disk("media:/snapshots/a", "serial=A") + "[machine.disk.expect]\nhostname = \"srv1\"\n",
			"plan machine srv1 captures, but disk 1's [machine.disk.expect] pins the snapshot a restore reads"},
		{"segment_size 0", srv + "segment_size = \"0\"\n" + disk("media:/snapshots/a", "serial=A"), `segment_size "0" is smaller than one stored chunk`},
		{"segment_size -1", srv + "segment_size = \"-1\"\n" + disk("media:/snapshots/a", "serial=A"), `segment_size "-1": size "-1" is not a number`},
		{"segment_size 1e3", srv + "segment_size = \"1e3\"\n" + disk("media:/snapshots/a", "serial=A"), `segment_size "1e3": size "1e3" has an unknown unit`},
		{"segment_size 5GiB onto the stick", srv + "segment_size = \"5GiB\"\n" + disk("media:/snapshots/a", "serial=A"), `with segment_size "5GiB", but FAT32 holds no file of 4 GiB or more`},
		{"delta and wipe on a capture", srv + "delta = true\nwipe = \"full\"\n" + disk("media:/snapshots/a", "serial=A"), "plan machine srv1 captures, but has delta, wipe, which only a restore uses"},
		{"install file on a capture", srv + disk("media:/snapshots/a", "serial=A") + "[[machine.install_file]]\nsource = \"media:/x\"\ndest = \"part:1:/x\"\n", "has [[machine.install_file]], which only a restore uses"},
		{"machine expect on a capture", srv + "snapshot = \"media:/snapshots/a\"\n[machine.expect]\nhostname = \"srv1\"\n", "plan machine srv1 captures, but [machine.expect] pins"},
	} {
		_, err := ParsePlan([]byte(tc.plan))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want the plan accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestResolveCaptureHostileSnapshot: rewind.action=capture turns a restore
// entry into a capture at boot; a rewind.snapshot= that climbs out of the
// medium or a name FAT cannot keep is refused then, naming it.
func TestResolveCaptureHostileSnapshot(t *testing.T) {
	p, err := ParsePlan([]byte("[[machine]]\nname = \"pc1\"\nsnapshot = \"media:/snapshots/pc1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ snap, want string }{
		{"media:/snapshots/../..", `media:/snapshots/../.., which has the path element ".."`},
		{"media:/EFI", "own EFI/ directory"},
		{"media:/snapshots/pc1:", "with a character other than letters"},
		{"media:/snapshots/pc2", ""},
	} {
		_, err := p.Resolve(Identity{}, Overrides{Action: ActionCapture, Snapshot: tc.snap})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("rewind.snapshot=%s: got %v, want accepted", tc.snap, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("rewind.snapshot=%s: got %v, want an error containing %q", tc.snap, err, tc.want)
		}
	}
}

// TestCaptureUploadSecondNameExists: a two-disk capture to the lab server
// where disk 2's name already exists (no overwrite) is refused before
// any disk is read: the server gets no snapshot of disk 1 (no partial
// machine), the error names disk 2 and the name, and the report marks no
// disk captured.
func TestCaptureUploadSecondNameExists(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	const token = "upload-0123456789abcdef0123456789abcdef"
	dir := t.TempDir()
	sys := newCaptureSource(t, "sys", 24*mib, 71, testdisk.MakeFS(t, filepath.Join(dir, "a.img"), "ext4", 16*mib, 2*mib, 72))
	data := newCaptureSource(t, "data", 24*mib, 73, testdisk.MakeFS(t, filepath.Join(dir, "b.img"), "ext4", 16*mib, 2*mib, 74))
	url, srvDir := startUploadLab(t, token)
	run := func(entries []DiskEntry) (*Rescue, string, string, error) {
		r, console := captureRescue(t.TempDir(), entries, "", false)
		r.settings.UploadToken = token
		r.client = httpClient(nil)
		status, err := r.capture(context.Background(), testEnv(r))
		return r, console.String(), status, err
	}
	dataEntry := DiskEntry{Snapshot: url + "/snapshots/srv1-data", Target: "path=" + data.dev}
	if _, console, status, err := run([]DiskEntry{dataEntry}); err != nil || status != StatusSuccess {
		t.Fatalf("first capture of %s: %s, %v\n%s", data.dev, status, err, console)
	}

	r, console, status, err := run([]DiskEntry{{Snapshot: url + "/snapshots/srv1-sys", Target: "path=" + sys.dev}, dataEntry})
	if err == nil || status != StatusFailed || !strings.Contains(err.Error(), "disk 2 ("+data.dev+")") || !strings.Contains(err.Error(), "exists") {
		t.Errorf("capture with disk 2's name existing: %s, %v; want an error naming disk 2 and the existing name", status, err)
	}
	if strings.Contains(console, "reading ") {
		t.Errorf("a disk was read although disk 2's name exists on the server:\n%s", console)
	}
	if _, err := os.Stat(filepath.Join(srvDir, "snapshots", "srv1-sys")); err == nil {
		t.Errorf("the server holds snapshots/srv1-sys: disk 1 was published although the machine's capture was refused")
	}
	for i, d := range r.report.Disks {
		if d.Status == DiskOK || d.Published != "" {
			t.Errorf("report disk %d: status %q, published %q; want not captured", i+1, d.Status, d.Published)
		}
	}
}

// TestCaptureMediaNeverWritesThrough: on an ext4 stick, snapshots/ as a
// symlink to another directory, NAME as a symlink, or NAME as a file,
// refuses the capture (with and without overwrite) before the disk is
// read, and nothing appears where the symlink points; overwrite never
// replaces a directory that is not a snapshot (media:/snapshots itself,
// holding other machines' snapshots).
func TestCaptureMediaNeverWritesThrough(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	src := newCaptureSource(t, "sys", 24*mib, 81, testdisk.MakeFS(t, filepath.Join(t.TempDir(), "a.img"), "ext4", 16*mib, 2*mib, 82))
	for _, tc := range []struct {
		name  string
		loc   string
		setup func(t *testing.T, media, elsewhere string)
		want  string
	}{
		{"snapshots/ is a symlink", "media:/snapshots/srv1", func(t *testing.T, media, elsewhere string) {
			os.Symlink(elsewhere, filepath.Join(media, "snapshots"))
		}, "is not a directory (a file or a symlink"},
		{"NAME is a symlink", "media:/snapshots/srv1", func(t *testing.T, media, elsewhere string) {
			os.MkdirAll(filepath.Join(media, "snapshots"), 0o755)
			os.Symlink(elsewhere, filepath.Join(media, "snapshots", "srv1"))
		}, "is not a snapshot directory (a file or a symlink)"},
		{"NAME is a file", "media:/snapshots/srv1", func(t *testing.T, media, elsewhere string) {
			os.MkdirAll(filepath.Join(media, "snapshots"), 0o755)
			os.WriteFile(filepath.Join(media, "snapshots", "srv1"), []byte("notes"), 0o644)
		}, "is not a snapshot directory"},
		{"NAME is a directory of other snapshots", "media:/snapshots", func(t *testing.T, media, elsewhere string) {
			existingSnapshot(t, media, "other")
		}, "is not a snapshot (no manifest.json): overwrite would replace it"},
	} {
		for _, overwrite := range []bool{false, true} {
			if tc.name == "NAME is a directory of other snapshots" && !overwrite {
				continue // refused as existing; TestCaptureExistingName
			}
			t.Run(fmt.Sprintf("%s, overwrite %v", tc.name, overwrite), func(t *testing.T) {
				media, elsewhere := t.TempDir(), t.TempDir()
				tc.setup(t, media, elsewhere)
				before := treeOf(t, media)
				r, console := captureRescue(media, []DiskEntry{{Snapshot: tc.loc, Target: "path=" + src.dev}}, "", overwrite)
				status, err := r.capture(context.Background(), testEnv(r))
				if err == nil || status != StatusFailed || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.loc) {
					t.Errorf("capture into %s: %s, %v; want an error naming it and saying %q", tc.loc, status, err, tc.want)
				}
				if strings.Contains(console.String(), "reading ") {
					t.Errorf("the refused capture read %s:\n%s", src.dev, console)
				}
				if entries, _ := os.ReadDir(elsewhere); len(entries) > 0 {
					t.Errorf("the capture wrote %d entries through the symlink into %s", len(entries), elsewhere)
				}
				if after := treeOf(t, media); after != before {
					t.Errorf("the medium changed:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	}
}

// treeOf lists every path under dir with its size, for comparison.
func treeOf(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, fmt.Sprintf("%s:%d", strings.TrimPrefix(p, dir), fi.Size()))
		}
		return nil
	})
	return strings.Join(out, " ")
}

// TestReportPageCapture: the lab page reads a capture's report as the
// capture fills it (bytes read and stored, no bytes written): a running
// two-disk capture shows its progress over both disks, a finished one
// 100%, the single-disk form too; and hostile snapshot and disk names
// from a machine's report are shown as text, never as markup.
func TestReportPageCapture(t *testing.T) {
	l := startLab(t, LabServerConfig{TokenFile: "token"})
	url := l.url + "/reports/"
	post := func(r *Report) string {
		t.Helper()
		if err := PostReport(context.Background(), nil, url, testToken, r); err != nil {
			t.Fatal(err)
		}
		return get(t, url)
	}

	r := testReport("srv1", "52:54:00:00:00:31", StatusFailed, time.Now())
	r.Action = ActionCapture
	r.Disks = newDiskReports([]DiskEntry{
		{Snapshot: "media:/snapshots/<script>alert(1)</script>", Target: "serial=nvme1"},
		{Snapshot: "http://lab/snapshots/srv1-data", Target: "size=48MiB"},
	})
	r.Disks[0].setTarget(Disk{Path: "/dev/nvme0n1", Size: 64 << 20, Serial: `"><img src=x onerror=alert(2)>`, Transport: "nvme"})
	r.Disks[1].setTarget(Disk{Path: "/dev/vdb", Size: 48 << 20, Serial: "DATA-2", Transport: "virtio"})
	// Disk 1 captured as captureDisk records it; disk 2 half read.
	r.Disks[0].Status, r.Disks[0].DataBytes, r.Disks[0].BytesRead, r.Disks[0].BytesStored = DiskOK, 300, 300, 120
	r.Disks[1].Status = DiskRunning
	page := post(r.progressCopy(50, 100)) // 350 of 400 bytes
	for _, want := range []string{`value="88"`, "&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x"} {
		if !strings.Contains(page, want) {
			t.Errorf("lab page during the capture lacks %q:\n%s", want, page)
		}
	}
	for _, bad := range []string{"<script>alert", "<img src"} {
		if strings.Contains(page, bad) {
			t.Errorf("lab page holds the report's %q as markup:\n%s", bad, page)
		}
	}

	r.Disks[1].Status, r.Disks[1].DataBytes, r.Disks[1].BytesRead, r.Disks[1].BytesStored = DiskOK, 100, 100, 40
	r.Finish(StatusSuccess, nil, time.Now())
	if page := post(r); !strings.Contains(page, `value="100"`) {
		t.Errorf("lab page after the two-disk capture: want 100%%:\n%s", page)
	}

	one := testReport("pc1", "52:54:00:00:00:32", StatusFailed, time.Now())
	one.Action = ActionCapture
	one.Disks = newDiskReports([]DiskEntry{{Snapshot: "media:/snapshots/pc1"}})
	one.Disks[0].Status = DiskRunning
	if page := post(one.progressCopy(30, 120)); !strings.Contains(page, `value="25"`) {
		t.Errorf("lab page during pc1's single-disk capture: want 25%%:\n%s", page)
	}
	one.Disks[0].Status, one.Disks[0].DataBytes, one.Disks[0].BytesRead = DiskOK, 120, 120
	one.Finish(StatusSuccess, nil, time.Now())
	page = post(one)
	row := page[strings.Index(page, "pc1"):]
	if !strings.Contains(row[:min(len(row), 400)], `value="100"`) {
		t.Errorf("lab page after pc1's single-disk capture: want 100%%:\n%s", page)
	}
}

// TestCaptureSecondDiskNotClean: a two-disk capture whose second disk's
// ext4 was not cleanly unmounted is refused as a whole before any disk
// is stored: the medium holds no snapshot of disk 1 (no partial
// machine, no leftovers), the error names disk 2 and the cause, and the
// report marks no disk captured.
func TestCaptureSecondDiskNotClean(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	sys := newCaptureSource(t, "sys", 24*mib, 91, testdisk.MakeFS(t, filepath.Join(dir, "a.img"), "ext4", 16*mib, 2*mib, 92))
	dirty := testdisk.MakeFS(t, filepath.Join(dir, "b.img"), "ext4", 16*mib, 2*mib, 94)
	if out, err := exec.Command("debugfs", "-w", "-R", "ssv state 0", dirty.Path).CombinedOutput(); err != nil {
		t.Skipf("debugfs: %v: %s", err, out)
	}
	data := newCaptureSource(t, "data", 24*mib, 93, dirty)
	media := t.TempDir()
	r, console := captureRescue(media, []DiskEntry{
		{Snapshot: "media:/snapshots/srv1-sys", Target: "path=" + sys.dev},
		{Snapshot: "media:/snapshots/srv1-data", Target: "path=" + data.dev},
	}, "", false)
	status, err := r.capture(context.Background(), testEnv(r))
	if err == nil || status != StatusFailed || !strings.Contains(err.Error(), "disk 2 ("+data.dev+")") || !strings.Contains(err.Error(), "not cleanly unmounted") {
		t.Errorf("capture with disk 2 not clean: %s, %v; want an error naming disk 2 and the file system's state", status, err)
	}
	if tree := treeOf(t, media); strings.Contains(tree, "srv1-sys") {
		t.Errorf("the medium holds disk 1's snapshot although the machine's capture was refused: %s\n%s", tree, console)
	}
	for i, d := range r.report.Disks {
		if d.Status == DiskOK || d.Published != "" {
			t.Errorf("report disk %d: status %q, published %q; want not captured", i+1, d.Status, d.Published)
		}
	}
}

// TestRestoreTwoDisksSecondUntrusted: disk 1's snapshot signed by the
// trusted key, disk 2's by another: the set is refused before anything
// is written, naming disk 2 and the signature; both disks stay blank.
func TestRestoreTwoDisksSecondUntrusted(t *testing.T) {
	m := newTwoDiskMachine(t)
	keys := t.TempDir()
	trusted, trustedPub, err := snapshot.GenerateKey(filepath.Join(keys, "lab"))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := snapshot.GenerateKey(filepath.Join(keys, "other"))
	if err != nil {
		t.Fatal(err)
	}
	for i, keyFile := range []string{trusted, other} {
		key, err := snapshot.LoadPrivateKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(m.snaps[i], snapshot.ManifestName))
		if err != nil {
			t.Fatal(err)
		}
		sig := snapshot.EncodeSignature(ed25519.Sign(key, data))
		if err := os.WriteFile(filepath.Join(m.snaps[i], snapshot.SignatureName), sig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var console bytes.Buffer
	r := m.rescue(t, []DiskEntry{
		{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]},
		{Snapshot: m.snaps[1], Target: "path=" + m.targets[1]},
	}, &console)
	pub, _ := os.ReadFile(trustedPub)
	os.WriteFile(filepath.Join(r.trustDir, "lab.pub"), pub, 0o644)

	status, err := r.restoreMachine(context.Background(), &Plan{})
	if err == nil || status != StatusFailed || !strings.HasPrefix(err.Error(), "disk 2: snapshot "+m.snaps[1]) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("restore with disk 2's snapshot signed by an untrusted key: %s, %v; want disk 2 refused for its signature\n%s", status, err, console.String())
	}
	for i, dev := range m.targets {
		if !isBlank(t, dev) {
			t.Errorf("disk %d: %s was written although disk 2's snapshot is not trusted", i+1, dev)
		}
	}
	if st := r.report.Disks[0].Status; st == DiskOK || st == DiskRunning {
		t.Errorf("report disk 1: status %q, want it not restored", st)
	}
}

// TestCaptureRefusalHolders: a disk that device mapper or RAID holds
// (an LVM volume group, an md array) is never a capture source: what
// stacks on it can write to it while it is read (an md resync, a dm
// writer), which no file-system map check would see. A read-only disk
// and a plain disk may be captured; the rescue medium and the running
// system's disk never.
func TestCaptureRefusalHolders(t *testing.T) {
	for _, tc := range []struct {
		name string
		disk Disk
		want string // "" = may be captured
	}{
		{"plain", Disk{Path: "/dev/vdb"}, ""},
		{"read-only", Disk{Path: "/dev/vdb", ReadOnly: true}, ""},
		{"held by LVM", Disk{Path: "/dev/vdb", Holders: []string{"dm-0 (vg-data)"}}, "held by dm-0 (vg-data)"},
		{"held by md", Disk{Path: "/dev/vdc", Holders: []string{"md0"}}, "mdadm --stop"},
		{"the medium", Disk{Path: "/dev/sda", Partitions: []string{"/dev/sda1"}}, "rescue medium"},
		{"the system", Disk{Path: "/dev/vda", System: true}, "running system"},
	} {
		got := captureRefusal(tc.disk, []string{"/dev/sda1"})
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: captureRefusal(%s) = %q, want %q", tc.name, tc.disk.Path, got, tc.want)
		}
	}
}

// TestCaptureUnknownFSStoredWhole: a disk with an ext4 partition and one
// of random bytes (no file system Rewind knows: encrypted, say) is
// captured at boot onto the medium; the unknown partition is stored whole
// and restores byte for byte, the ext4 one with its free blocks zeroed.
func TestCaptureUnknownFSStoredWhole(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	unknown := testdisk.MakeFS(t, filepath.Join(dir, "crypt.img"), "", 8*mib, 0, 102)
	src := newCaptureSource(t, "sys", 32*mib, 101, testdisk.MakeFS(t, filepath.Join(dir, "ext4.img"), "ext4", 16*mib, 2*mib, 103), unknown)
	media := t.TempDir()
	r, console := captureRescue(media, []DiskEntry{{Snapshot: "media:/snapshots/srv1", Target: "path=" + src.dev}}, "", false)
	if status, err := r.capture(context.Background(), testEnv(r)); err != nil || status != StatusSuccess {
		t.Fatalf("capture of %s: %s, %v\n%s", src.dev, status, err, console)
	}
	want := src.want(t)
	restoreCheck(t, filepath.Join(media, "snapshots", "srv1"), want, nil)
	// want keeps the unknown partition as it is: check that it does.
	raw, _ := os.ReadFile(unknown.Path)
	if !bytes.Contains(want, raw) {
		t.Errorf("the unknown partition's %d random bytes are not in the restored disk whole", len(raw))
	}
}

// TestRestoreTwoDisksResumeSecond: a two-disk restore cut while writing
// disk 2, disk 1 complete. The disks are alike (no serial, the same
// size) and restore the same snapshot (two copies of it), so disk 2's
// journal would be the file disk 1 looks for, were the journal not named
// by the disk's entry too. The second boot restores both disks equal to
// the source, disk 2 resuming from its own journal, checking every chunk it claims against the disk before skipping
// it, so a journal is never trusted for the wrong disk; no journal is
// left afterwards.
func TestRestoreTwoDisksResumeSecond(t *testing.T) {
	m := newTwoDiskMachine(t, 48<<20, 48<<20)
	copyDir := filepath.Join(m.dir, "snap1-copy")
	if out, err := exec.Command("cp", "-a", m.snaps[0], copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	entries := []DiskEntry{{Snapshot: m.snaps[0], Target: "path=" + m.targets[0]}, {Snapshot: copyDir, Target: "path=" + m.targets[1]}}
	media := t.TempDir()
	run := func() (*Rescue, string, error) {
		var console bytes.Buffer
		r := m.rescue(t, entries, &console)
		r.media = &Media{Dir: media, RW: true, FSType: "ext4"}
		status, err := r.restoreMachine(context.Background(), &Plan{})
		if err == nil && status != StatusSuccess {
			err = fmt.Errorf("status %s", status)
		}
		return r, console.String(), err
	}
	r, console, err := run()
	if err != nil {
		t.Fatalf("first restore: %v\n%s", err, console)
	}

	// The cut: disk 2's second half never written, its table neither,
	// and its journal claims the chunks of the first half.
	snap, err := snapshot.Open(context.Background(), m.snaps[0], snapshot.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	const half = 24 << 20
	f, err := os.OpenFile(m.targets[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, half), half)
	f.WriteAt(make([]byte, 1<<20), 0)
	f.Close()
	picked, _, err := selectDisks([]DiskEntry{{Target: "path=" + m.targets[1]}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	done := make([]bool, len(snap.Manifest.Chunks))
	for i, c := range snap.Manifest.Chunks {
		done[i] = c.Offset+c.Length <= half
	}
	j := &Journal{Version: JournalVersion, Snapshot: snap.ID, Plan: PlanHash(r.settings.Machine), Target: IdentityOf(picked[0]), Updated: time.Now()}
	j.Target.Entry = 2 // disk 2's journal: the one the cut left
	j.SetDone(done)
	path := JournalPath(filepath.Join(media, MediaJournals), snap.ID, j.Target)
	if err := SaveJournal(path, j); err != nil {
		t.Fatal(err)
	}

	r, console, err = run()
	if err != nil {
		t.Fatalf("second restore: %v\n%s", err, console)
	}
	src, _ := os.Stat(m.sources[0])
	for i, dev := range m.targets {
		if fileHash(t, dev, src.Size()) != fileHash(t, m.sources[0], src.Size()) {
			t.Errorf("disk %d: %s differs from the source after the resumed restore", i+1, dev)
		}
		t.Logf("disk %d: resume %+v", i+1, r.report.Disks[i].Resume)
	}
	// Each disk finds only its own journal: disk 1 (complete, alike,
	// same snapshot) does not take disk 2's, and disk 2 resumes from it.
	if rs := r.report.Disks[0].Resume; rs != nil {
		t.Errorf("disk 1 resumed from %s, disk 2's journal", rs.Journal)
	}
	if rs := r.report.Disks[1].Resume; rs == nil || rs.ChunksDone == 0 {
		t.Errorf("disk 2 did not resume from its journal: %+v", rs)
	}
	if left, _ := os.ReadDir(filepath.Join(media, MediaJournals)); len(left) > 0 {
		t.Errorf("journals left after the restore: %d", len(left))
	}
}

// TestOutsidePlanCannotUpload: with trusted keys in the rescue image, a
// plan from outside it (rewind.plan= on a server an attacker controls)
// that carries an [upload] token is refused before any disk is looked
// at: it could capture the machine's disks (its own entry, or any entry
// with rewind.action=capture) and upload them to any server it names. A
// capture onto the medium, and a plan without image keys, still load.
func TestOutsidePlanCannotUpload(t *testing.T) {
	dir := t.TempDir()
	imageDir := filepath.Join(dir, "image-trust")
	os.Mkdir(imageDir, 0o755)
	newKey(t, imageDir, "lab")
	noKeys := filepath.Join(dir, "no-keys")
	os.Mkdir(noKeys, 0o755)
	idFile := filepath.Join(dir, "media-id")
	os.WriteFile(idFile, []byte("none\n"), 0o644)
	plans := map[string]string{
		"/exfil.toml":   "[upload]\ntoken = \"" + testUploadToken + "\"\n[[machine]]\nname = \"pc1\"\naction = \"capture\"\nsnapshot = \"http://10.0.0.66/snapshots/pc1\"\n",
		"/restore.toml": "[upload]\ntoken = \"" + testUploadToken + "\"\n[[machine]]\nname = \"pc1\"\nsnapshot = \"http://10.0.0.66/snapshots/pc1\"\n",
		"/media.toml":   "[[machine]]\nname = \"pc1\"\naction = \"capture\"\nsnapshot = \"media:/snapshots/pc1\"\n",
		"/s3.toml":      "[s3]\nendpoint = \"http://10.0.0.66\"\ncredential = \"lab-rw\"\n[[machine]]\nname = \"pc1\"\naction = \"capture\"\nsnapshot = \"s3://exfil/pc1\"\n",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, plans[req.URL.Path])
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, trustDir, plan, want string // want "" = loaded
	}{
		{"image keys, capture upload", imageDir, "/exfil.toml", "[upload] token in a plan from outside the rescue image"},
		{"image keys, restore entry with an upload token (rewind.action=capture)", imageDir, "/restore.toml", "[upload] token in a plan from outside"},
		{"image keys, capture onto the medium", imageDir, "/media.toml", ""},
		{"image keys, capture to s3", imageDir, "/s3.toml", "captures to s3://exfil/pc1, but the plan comes from outside the rescue image"},
		{"no image keys, capture upload", noKeys, "/exfil.toml", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := testRescue(tc.trustDir)
			r.mediaIDFile = idFile
			r.netUp = true
			r.client = httpClient(nil)
			r.over.Plan = srv.URL + tc.plan
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _, err := r.loadPlan(ctx)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("plan %s: got %v, want it loaded", tc.plan, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("plan %s: got error %v, want one containing %q", tc.plan, err, tc.want)
			}
		})
	}
}

// TestCaptureDiskGoneOrChanged: a source disk that is gone after the
// disks were matched (unplugged), or no longer the size it was matched
// with (another disk under its name), refuses the whole capture before
// any disk is stored, naming it; the medium holds nothing. The matching
// itself is the real one (selectDisks); the test then changes what it
// returned, as a hot-unplug would between matching and capture.
func TestCaptureDiskGoneOrChanged(t *testing.T) {
	testdisk.NeedFS(t, "ext4")
	dir := t.TempDir()
	sys := newCaptureSource(t, "sys", 24*mib, 111, testdisk.MakeFS(t, filepath.Join(dir, "a.img"), "ext4", 16*mib, 2*mib, 112))
	data := newCaptureSource(t, "data", 24*mib, 113, testdisk.MakeFS(t, filepath.Join(dir, "b.img"), "ext4", 16*mib, 2*mib, 114))
	for _, tc := range []struct {
		name   string
		change func(d *Disk)
		want   string
	}{
		{"gone", func(d *Disk) { d.Path = "/dev/rewind-test-gone" }, "/dev/rewind-test-gone: no such file or directory"},
		{"other size", func(d *Disk) { d.Size += mib }, "it changed or was replaced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			media := t.TempDir()
			r, console := captureRescue(media, []DiskEntry{
				{Snapshot: "media:/snapshots/srv1-sys", Target: "path=" + sys.dev},
				{Snapshot: "media:/snapshots/srv1-data", Target: "path=" + data.dev},
			}, "", false)
			env := testEnv(r)
			env.sources = func(entries []DiskEntry, exclude []string) ([]Disk, []Disk, error) {
				picked, all, err := captureSources(entries, exclude)
				if err == nil {
					tc.change(&picked[1])
				}
				return picked, all, err
			}
			status, err := r.capture(context.Background(), env)
			if err == nil || status != StatusFailed || !strings.Contains(err.Error(), "disk 2") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("capture with disk 2 %s: %s, %v; want the whole capture refused saying %q", tc.name, status, err, tc.want)
			}
			if tree := treeOf(t, media); strings.Contains(tree, "srv1") {
				t.Errorf("the medium holds %s after the refused capture\n%s", tree, console)
			}
		})
	}
}

// TestResolveCaptureNested: rewind.action=capture on a restore entry
// whose disks are nested (accepted for a restore) is refused at boot.
func TestResolveCaptureNested(t *testing.T) {
	p, err := ParsePlan([]byte("[[machine]]\nname = \"srv1\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/pc1\"\ntarget = \"serial=A\"\n[[machine.disk]]\nsnapshot = \"media:/snapshots/pc1/data\"\ntarget = \"serial=B\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Resolve(Identity{}, Overrides{Action: ActionCapture}); err == nil || !strings.Contains(err.Error(), "machine srv1 disk 2's snapshot media:/snapshots/pc1/data lies inside disk 1's media:/snapshots/pc1") {
		t.Errorf("rewind.action=capture on nested disks: got %v, want them refused", err)
	}
}
