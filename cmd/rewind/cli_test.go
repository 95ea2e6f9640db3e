package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/snapshot"
)

// rewindBin is the CLI built once for these tests.
var rewindBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rewind-cli-")
	if err != nil {
		panic(err)
	}
	rewindBin = filepath.Join(dir, "rewind")
	if out, err := exec.Command("go", "build", "-o", rewindBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build rewind: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rewind runs the CLI and returns its exit status and combined output.
func rewind(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(rewindBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run rewind %v: %v", args, err)
	}
	return 0, out.String()
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestCLIExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"capture"}, 2, "accepts 1 arg"},
		{[]string{"capture", "x.img"}, 2, "-o DIR"},
		{[]string{"restore", "--bogus", "a", "b"}, 2, "unknown flag"},
		{[]string{"capture", "--chunk-size", "4 furlongs", "x", "-o", "y"}, 2, `unknown unit "furlongs"`},
		{[]string{"verify", filepath.Join(dir, "nothing")}, 1, "not a Rewind snapshot"},
		{[]string{"capture", filepath.Join(dir, "missing.img"), "-o", filepath.Join(dir, "s")}, 1, "no such file"},
		{[]string{"restore", "--progress", "fancy", filepath.Join(dir, "nothing"), filepath.Join(dir, "t")}, 1, "not a Rewind snapshot"},
		{[]string{"drill", filepath.Join(dir, "nothing")}, 2, "nothing to check"},
		{[]string{"drill", "--check", "boot", filepath.Join(dir, "nothing")}, 2, "only --check fs"},
		{[]string{"drill", "--expect", "log(in", filepath.Join(dir, "nothing")}, 2, "--expect"},
		{[]string{"drill", "--check", "fs"}, 2, "requires at least 1 arg"},
		{[]string{"drill", "--check", "fs", "--accel", "hvf", filepath.Join(dir, "nothing")}, 2, "--accel \"hvf\""},
		{[]string{"drill", "--expect", "tcp:0", filepath.Join(dir, "nothing")}, 2, "tcp:PORT takes a port"},
		{[]string{"drill", "--check", "fs", "--plan", filepath.Join(dir, "no-plan.toml"), filepath.Join(dir, "nothing")}, 2, "--plan"},
		{[]string{"--help"}, 0, "Exit status: 0 success, 1 failure, 2 usage error"},
	}
	for _, tt := range tests {
		code, out := rewind(t, tt.args...)
		if code != tt.wantCode || !strings.Contains(out, tt.wantOut) {
			t.Errorf("rewind %s: exit %d, output %q; want exit %d and %q", strings.Join(tt.args, " "), code, out, tt.wantCode, tt.wantOut)
		}
	}
}

func TestCLICaptureSignServeRestore(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if _, err := (testdisk.Sample{Size: 64 << 20, ESPSize: 33 << 20, ExtSize: 16 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 6 << 20, Seed: 11}).Build(src); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "lab")
	if code, out := rewind(t, "key", "generate", key); code != 0 {
		t.Fatalf("key generate: %d %s", code, out)
	}
	root := filepath.Join(dir, "srv")
	snap := filepath.Join(root, "pc1")
	if code, out := rewind(t, "capture", src, "-o", snap, "--sign", key+".key", "--chunk-size", "1MiB", "--progress", "none"); code != 0 {
		t.Fatalf("capture: %d %s", code, out)
	}
	if code, out := rewind(t, "capture", src, "-o", snap); code != 1 || !strings.Contains(out, "not empty") {
		t.Errorf("capture into a used directory: exit %d %q, want 1 and 'not empty'", code, out)
	}
	if code, out := rewind(t, "verify", snap, "--trust", key+".pub", "--progress", "none"); code != 0 || !strings.Contains(out, "signature verified") {
		t.Fatalf("verify: %d %s", code, out)
	}
	if code, out := rewind(t, "inspect", snap); code != 0 || !strings.Contains(out, "signed: true") {
		t.Errorf("inspect: %d %s", code, out)
	}

	port := freePort(t)
	srv := exec.Command(rewindBin, "serve", root, "--listen", "127.0.0.1:"+port)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	waitListening(t, "127.0.0.1:"+port)

	target := filepath.Join(dir, "restored.img")
	code, out := rewind(t, "restore", "http://127.0.0.1:"+port+"/pc1", target, "--trust", key+".pub", "--progress", "json")
	if code != 0 {
		t.Fatalf("restore over http: %d %s", code, out)
	}
	if !strings.Contains(out, `"finished":true`) {
		t.Errorf("--progress json printed no final JSON line: %s", out)
	}
	if sha(t, target) != sha(t, src) {
		t.Fatal("restored image differs from the source")
	}
	// An existing target with no terminal to confirm on needs --yes.
	if code, out := rewind(t, "restore", snap, target); code != 2 || !strings.Contains(out, "--yes") {
		t.Errorf("restore onto an existing file without --yes: exit %d %q, want 2 and a hint to pass --yes", code, out)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func waitListening(t *testing.T, addr string) {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// dumpLines returns sfdisk --dump's lines without the device names, so the
// dumps of two devices compare field by field.
func dumpLines(t *testing.T, dev string) []string {
	var lines []string
	for _, l := range strings.Split(output(t, "sfdisk", "--dump", dev), "\n") {
		if strings.HasPrefix(l, "device:") || l == "" {
			continue
		}
		if name, rest, ok := strings.Cut(l, " : "); ok {
			l = strings.TrimPrefix(name, dev) + " : " + rest
		}
		lines = append(lines, l)
	}
	return lines
}

func TestCLIRestoreMBROntoLoopDevice(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "mbr.img")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(src, 64<<20)
	script := "label: dos\nlabel-id: 0x5eed1234\n" +
		"start=2048, size=20480, type=83, bootable\n" +
		"start=22528, size=100352, type=5\n" +
		"start=24576, size=40960, type=83\n" +
		"start=67584, size=30720, type=b\n"
	cmd := exec.Command("sfdisk", "-q", src)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("sfdisk: %v %s", err, out)
	}
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	f.WriteAt(testdisk.RandomBytes(1, 440), 0)               // boot code
	f.WriteAt(testdisk.RandomBytes(2, 300<<10), 512)         // GRUB core image in the gap
	f.WriteAt(testdisk.RandomBytes(3, 4<<20), 2048*512)      // partition 1
	f.WriteAt(testdisk.RandomBytes(4, 2<<20), 24576*512+1e6) // logical partition 5
	f.Close()

	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("capture: %s", out)
	}
	blank := filepath.Join(dir, "blank.img")
	os.WriteFile(blank, nil, 0o644)
	os.Truncate(blank, 64<<20)
	dev := testdisk.Loop(t, blank, 0)
	if code, out := rewind(t, "restore", snap, dev, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore onto %s: %s", dev, out)
	}
	want, got := dumpLines(t, testdisk.Loop(t, src, 0)), dumpLines(t, dev)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sfdisk --dump of %s:\n%s\nwant (source):\n%s", dev, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if sha(t, dev) != sha(t, src) {
		t.Error("restored device bytes differ from the source image")
	}
}

func TestCLIRestoreGPTOntoLargerLoopDevice(t *testing.T) {
	if tool := testdisk.Missing(); tool != "" {
		t.Skip(tool + " not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	parts, err := (testdisk.Sample{Size: 64 << 20, ESPSize: 33 << 20, ExtSize: 16 << 20, RandomSize: 4 << 20,
		FilesFrom: "/usr/share/doc", FilesLimit: 4 << 20, Seed: 5}).Build(src)
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("capture: %s", out)
	}
	big := filepath.Join(dir, "big.img")
	os.WriteFile(big, nil, 0o644)
	os.Truncate(big, 128<<20)
	dev := testdisk.Loop(t, big, 0)
	code, out := rewind(t, "restore", snap, dev, "--yes", "--grow-last", "--progress", "none")
	if code != 0 {
		t.Fatalf("restore onto larger %s: %s", dev, out)
	}
	if !strings.Contains(out, "not grown") && !strings.Contains(out, "file system") {
		t.Errorf("restore with --grow-last does not say the file system was left alone:\n%s", out)
	}
	if v := output(t, "sgdisk", "-v", dev); !strings.Contains(v, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", dev, v)
	}
	srcInfo, dstInfo := output(t, "sgdisk", "-p", src), output(t, "sgdisk", "-p", dev)
	for _, field := range []string{"Disk identifier (GUID)"} {
		if lineWith(srcInfo, field) != lineWith(dstInfo, field) {
			t.Errorf("%s differs: %q vs %q", field, lineWith(srcInfo, field), lineWith(dstInfo, field))
		}
	}
	for n := 1; n <= 3; n++ {
		si, di := output(t, "sgdisk", "-i", fmt.Sprint(n), src), output(t, "sgdisk", "-i", fmt.Sprint(n), dev)
		for _, field := range []string{"Partition GUID code", "Partition unique GUID", "First sector", "Partition name", "Attribute flags"} {
			if lineWith(si, field) != lineWith(di, field) {
				t.Errorf("partition %d %s: got %q, want %q", n, field, lineWith(di, field), lineWith(si, field))
			}
		}
		if n == 3 && lineWith(si, "Last sector") == lineWith(di, "Last sector") {
			t.Errorf("partition 3 was not grown: %s", lineWith(di, "Last sector"))
		}
	}
	sb, _ := os.ReadFile(src)
	db, _ := os.ReadFile(dev)
	for i, p := range parts {
		if sha256.Sum256(sb[p[0]:p[1]]) != sha256.Sum256(db[p[0]:p[1]]) {
			t.Errorf("partition %d bytes differ after restore onto the larger disk", i+1)
		}
	}
}

func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestCLICaptureNotes: what capture normalised or could not recognise is
// said in its summary and by inspect (here: a disk without a partition
// table is captured whole).
func TestCLICaptureNotes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "raw.img")
	if err := os.WriteFile(src, bytes.Repeat([]byte("not a table "), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 2<<20); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snap")
	const want = "no partition table was recognised"
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 || !strings.Contains(out, "note      "+want) {
		t.Errorf("capture of %s: exit %d, summary %q, want a note %q", src, code, out, want)
	}
	if code, out := rewind(t, "inspect", snap); code != 0 || !strings.Contains(out, "note       "+want) {
		t.Errorf("inspect %s: exit %d, %q, want a note %q", snap, code, out, want)
	}
}

// TestCLIRefusedLayoutTouchesNoTarget: a manifest whose recorded MBR
// tables disagree with its partitions is refused before the target image
// is opened for writing (restore used to truncate it first).
func TestCLIRefusedLayoutTouchesNoTarget(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "mbr.img")
	if err := os.WriteFile(src, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sf := exec.Command("sfdisk", "-q", src)
	sf.Stdin = strings.NewReader("label: dos\nstart=2048,size=2048,type=83\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v %s", err, out)
	}
	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 {
		t.Fatalf("capture: %d %s", code, out)
	}
	mpath := filepath.Join(snap, snapshot.ManifestName)
	data, err := os.ReadFile(mpath)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	m.Layout.MBRTables[0].Entries = strings.Repeat("0", 128) // LBA 0 now says: no partition
	data, _ = m.Marshal()
	if err := os.WriteFile(mpath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target.img")
	old := bytes.Repeat([]byte("keep me "), 1<<16)
	if err := os.WriteFile(target, old, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := rewind(t, "restore", snap, target, "--yes", "--progress", "none")
	if code == 0 || !strings.Contains(out, "mbr_tables") {
		t.Errorf("restore of an inconsistent layout: exit %d %q, want a failure naming mbr_tables", code, out)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, old) {
		t.Errorf("%s was changed (%d bytes now) although the snapshot was refused", target, len(got))
	}
}

// TestCLIOddEBRChainRoundTrip captures an image whose EBR chain has the
// shapes other tools write (an empty first EBR that only links on, the
// link in slot 1 and the logical partition in slot 2, a 0x85 link) and
// restores it with rewind restore: every logical partition and every EBR
// must come back, the whole image equal (they used to be lost, exit 0).
func TestCLIOddEBRChainRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "odd.img")
	img := make([]byte, 32<<20)
	put := func(lba int, slot int, typ byte, start, size uint32) {
		p := img[lba*512+446+16*slot:]
		p[4] = typ
		binary.LittleEndian.PutUint32(p[8:], start)
		binary.LittleEndian.PutUint32(p[12:], size)
		img[lba*512+510], img[lba*512+511] = 0x55, 0xaa
	}
	put(0, 0, 0x0f, 2048, 40000)   // extended
	put(2048, 1, 0x05, 2048, 8192) // empty first EBR: only a link, in slot 2
	put(4096, 0, 0x85, 8192, 8192) // link in slot 1 ...
	put(4096, 1, 0x83, 64, 4000)   // ... logical 5 in slot 2
	put(10240, 0, 0x07, 100, 5000) // logical 6
	for _, off := range []int{4160 * 512, 10340 * 512} {
		copy(img[off:], bytes.Repeat([]byte("logical data "), 300))
	}
	if err := os.WriteFile(src, img, 0o644); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "snap")
	if code, out := rewind(t, "capture", src, "-o", snap, "--progress", "none"); code != 0 || !strings.Contains(out, "mbr, 3 partitions") {
		t.Fatalf("capture: exit %d %s, want an mbr with 3 partitions", code, out)
	}
	target := filepath.Join(dir, "restored.img")
	if code, out := rewind(t, "restore", snap, target, "--yes", "--progress", "none"); code != 0 {
		t.Fatalf("restore: exit %d %s", code, out)
	}
	if sha(t, target) != sha(t, src) {
		t.Errorf("%s differs from %s after capture and restore", target, src)
	}
}
