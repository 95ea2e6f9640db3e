package qemutests

// Install files, the resume journal and delta restores, in QEMU. The disks:
//
//	install source  80 MiB GPT image (internal/testdisk): 1 FAT32 ESP
//	                labelled EFI holding /EFI/BOOT/BOOTX64.EFI, 2 ext4
//	                "root" with files, 3 random data
//	power-cut source 216 MiB GPT image: one partition of 200 MiB of random
//	                bytes, so that the restore runs long enough to be cut
//	delta target    a copy of the 64 MiB sample disk (qemu_test.go) with
//	                two chunks scribbled over
//	USB stick       FAT32 labelled REWIND: the snapshot, rewind/plan.toml,
//	                the files to install under drivers/, and (written by
//	                the guest) rewind/journal/ and rewind/reports/
//
// Results are read from the host: ext4 files with debugfs on the extracted
// partition, FAT files with mtools at the partition's offset, the report
// from the console.
//
// 'go test' runs TestInstallFilesExt4AndVfat; the others need
// REWIND_QEMU_ALL=1 (make qemu-test).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/testdisk"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

const installDiskSize = 80 << 20

var installDisk struct {
	once   sync.Once
	err    error
	source string
	snap   string
	parts  [][2]int64 // byte ranges of partitions 1..3
	m      *snapshot.Manifest
}

// installSetup builds and captures the install source disk once.
func installSetup(t *testing.T, all bool) {
	t.Helper()
	setup(t, all)
	installDisk.once.Do(func() {
		installDisk.err = func() error {
			if tool := testdisk.Missing(); tool != "" {
				return fmt.Errorf("%s is not installed (scripts/setup.sh)", tool)
			}
			installDisk.source = filepath.Join(shared.dir, "install-source.img")
			var err error
			installDisk.parts, err = testdisk.Sample{
				Size: installDiskSize, ESPSize: 34 << 20, ExtSize: 24 << 20, RandomSize: 4 << 20,
				FilesFrom: filepath.Join(runtime.GOROOT(), "src", "fmt"), FilesLimit: 1 << 20, Seed: 3,
			}.Build(installDisk.source)
			if err != nil {
				return err
			}
			installDisk.snap = filepath.Join(shared.dir, "inst")
			installDisk.m, err = Capture(context.Background(), installDisk.source, installDisk.snap)
			return err
		}()
	})
	if installDisk.err != nil {
		t.Fatal(installDisk.err)
	}
}

// installStick makes a REWIND stick with the snapshot at snapshots/NAME,
// the plan, and files (stick path -> contents).
func installStick(t *testing.T, size int64, snapDir, plan string, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	m := map[string]string{"/snapshots/" + filepath.Base(snapDir): snapDir, "/rewind/plan.toml": filepath.Join(dir, "plan.toml")}
	os.WriteFile(m["/rewind/plan.toml"], []byte(plan), 0o644)
	for dst, data := range files {
		p := filepath.Join(dir, "f-"+filepath.Base(dst))
		os.WriteFile(p, data, 0o644)
		m[dst] = p
	}
	stick := filepath.Join(dir, "stick.img")
	if err := USBStick(stick, size, m); err != nil {
		t.Fatal(err)
	}
	return stick
}

func blankOf(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.img")
	if err := BlankDisk(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// ext4File reads path from the ext4 file system at [off, off+n) of img.
func ext4File(t *testing.T, img string, off, n int64, path string) []byte {
	t.Helper()
	part := filepath.Join(t.TempDir(), "part.img")
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, io.NewSectionReader(src, off, n))
	dst.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-R", "cat "+path, part).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return out
}

// fatFile reads path from the FAT file system at byte off of img.
func fatFile(t *testing.T, img string, off int64, path string) ([]byte, error) {
	t.Helper()
	out, err := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", img, off), "::"+path).Output()
	if err != nil {
		return nil, fmt.Errorf("mtype %s: %v", path, err)
	}
	return out, nil
}

func outcome(t *testing.T, r *rescue.Report, dest string) rescue.InstallOutcome {
	t.Helper()
	for _, o := range r.InstallFiles {
		if o.Dest == dest {
			return o
		}
	}
	t.Fatalf("report has no install outcome for %s: %+v", dest, r.InstallFiles)
	return rescue.InstallOutcome{}
}

const installPlan = `
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/inst"
target = "serial=target1"
after = "poweroff"
[[machine.install_file]]
source = "media:/drivers/raid.ko"
dest = "part:2:/lib/modules/extra/raid.ko"
flags = ["required"]
mode = "0600"
[[machine.install_file]]
source = "media:/drivers/tool.efi"
dest = "label=EFI:/EFI/vendor/tool.efi"
flags = ["required"]
[[machine.install_file]]
source = "media:/drivers/readme.txt"
media_label = "Vendor driver stick"
dest = "part:2:/root/readme.txt"
flags = ["prompt_always"]
[[machine.install_file]]
source = "media:/drivers/tool.efi"
dest = "part:1:/EFI/BOOT/BOOTX64.EFI"
`

// A file copied into the ext4 and one into the FAT partition of the
// restored disk; an unattended prompt skips its file; an existing file is
// left alone without overwrite.
func TestInstallFilesExt4AndVfat(t *testing.T) {
	installSetup(t, false)
	raid := bytes.Repeat([]byte("raid driver\n"), 5000)
	tool := testdisk.RandomBytes(11, 70000)
	stick := installStick(t, 128<<20, installDisk.snap, installPlan, map[string][]byte{
		"/drivers/raid.ko": raid, "/drivers/tool.efi": tool, "/drivers/readme.txt": []byte("read me\n"),
	})
	target := blankOf(t, installDiskSize)
	out, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}}, "")
	if r.Status != rescue.StatusSuccess {
		t.Fatalf("report status %q, error %q; want success", r.Status, r.Error)
	}
	for dest, want := range map[string]string{
		"part:2:/lib/modules/extra/raid.ko": rescue.InstallCopied,
		"label=EFI:/EFI/vendor/tool.efi":    rescue.InstallCopied,
		"part:2:/root/readme.txt":           rescue.InstallSkipped,
		"part:1:/EFI/BOOT/BOOTX64.EFI":      rescue.InstallSkipped,
	} {
		if o := outcome(t, r, dest); o.Result != want {
			t.Errorf("install %s: %s (%s), want %s", dest, o.Result, o.Why, want)
		}
	}
	p1, p2 := installDisk.parts[0], installDisk.parts[1]
	if got := ext4File(t, target, p2[0], p2[1]-p2[0], "/lib/modules/extra/raid.ko"); !bytes.Equal(got, raid) {
		t.Errorf("ext4 partition 2: /lib/modules/extra/raid.ko holds %d bytes, want the %d of the source", len(got), len(raid))
	}
	if got, err := fatFile(t, target, p1[0], "/EFI/vendor/tool.efi"); err != nil || !bytes.Equal(got, tool) {
		t.Errorf("FAT partition 1: /EFI/vendor/tool.efi: %d bytes, %v; want the %d of the source", len(got), err, len(tool))
	}
	if got, err := fatFile(t, target, p1[0], "/EFI/BOOT/BOOTX64.EFI"); err != nil || bytes.Equal(got, tool) || len(got) != 300<<10 {
		t.Errorf("FAT partition 1: /EFI/BOOT/BOOTX64.EFI was replaced (%d bytes, %v); want it left alone", len(got), err)
	}
	if !strings.Contains(out, "File:      media:/drivers/raid.ko -> part:2:/lib/modules/extra/raid.ko: copied") {
		t.Errorf("the console summary does not list the copied file")
	}
	t.Logf("restore %.1fs, whole boot %.1fs", r.RestoreSeconds, r.Seconds)
}

// A required file that is missing from the media fails the recovery; the
// restored disk keeps its partition table.
func TestInstallRequiredMissingFails(t *testing.T) {
	installSetup(t, true)
	plan := `
[countdown]
seconds = 0
[[machine]]
name = "pc1"
snapshot = "media:/snapshots/inst"
after = "poweroff"
[[machine.install_file]]
source = "media:/drivers/missing.ko"
dest = "part:2:/lib/modules/extra/missing.ko"
flags = ["required"]
`
	stick := installStick(t, 128<<20, installDisk.snap, plan, nil)
	target := blankOf(t, installDiskSize)
	out, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target}}}, "")
	if r.Status != rescue.StatusFailed {
		t.Fatalf("report status %q; want failed", r.Status)
	}
	o := outcome(t, r, "part:2:/lib/modules/extra/missing.ko")
	if o.Result != rescue.InstallFailed || !o.Required || !strings.Contains(o.Why, "missing.ko") {
		t.Errorf("install outcome %+v; want failed, required, naming the file", o)
	}
	if !r.LayoutWritten || r.TableCleared {
		t.Errorf("report: layout written %v, table cleared %v; want written and kept", r.LayoutWritten, r.TableCleared)
	}
	if !strings.Contains(r.Error, "missing.ko") || !strings.Contains(r.Error, "restored") {
		t.Errorf("report error %q: want the file named and that the disk was restored", r.Error)
	}
	// The ext4 partition was mounted read-write to try the copy (its
	// superblock changed); every other extent and the table are the source's.
	m := *installDisk.m
	m.Extents = nil
	for _, e := range installDisk.m.Extents {
		if e.Partition != 2 {
			m.Extents = append(m.Extents, e)
		}
	}
	if err := SameExtents(installDisk.source, target, &m); err != nil {
		t.Errorf("the restore itself: %v", err)
	}
	if !strings.Contains(out, "partition table kept") {
		t.Errorf("the console summary does not say the disk was restored and kept")
	}
}

// powerCutDisk writes a GPT image with one partition of size bytes of
// random data.
func powerCutDisk(path string, size int64) error {
	if err := BlankDisk(path, size+16<<20); err != nil {
		return err
	}
	cmd := exec.Command("sfdisk", "--quiet", path)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nlabel-id: 2C4E6A8B-0000-4000-8000-000000000007\nstart=2048, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"data\"\n", size/512))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sfdisk: %v\n%s", err, out)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(testdisk.RandomBytes(7, int(size)), 1<<20); err != nil {
		return err
	}
	return f.Sync()
}

var progressRE = regexp.MustCompile(`restore \[[^\]]*\]\s+([0-9.]+)%`)

// runUntilCut boots vm and kills QEMU (a power cut) once the console shows
// the restore past percent. It returns the console output.
func runUntilCut(t *testing.T, vm *VM, plan string, percent float64) string {
	t.Helper()
	dir := t.TempDir()
	o := &initramfs.Overlay{Modules: shared.modules}
	if plan != "" {
		o.Plan = []byte(plan)
	}
	vm.Kernel, vm.Initrd = shared.kernel, filepath.Join(dir, "initrd")
	if err := Initrd(shared.base, vm.Initrd, o); err != nil {
		t.Fatal(err)
	}
	vm.Cmdline += " rewind.after=poweroff"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", vm.Args()...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	start := time.Now()
	for {
		select {
		case err := <-exited:
			t.Fatalf("QEMU ended (%v) before the restore passed %.0f%%:\n%s", err, percent, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		best := 0.0
		for _, m := range progressRE.FindAllStringSubmatch(out.String(), -1) {
			if v, _ := strconv.ParseFloat(m[1], 64); v > best {
				best = v
			}
		}
		if best >= percent {
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			t.Logf("power cut at %.1f%% after %.1fs", best, time.Since(start).Seconds())
			return out.String()
		}
	}
}

// The power fails in the middle of a restore from a stick: the target has
// no partition table yet; the next boot finds the journal on the stick,
// reads back every chunk it names, and resumes; the result equals the
// source.
func TestPowerCutResumes(t *testing.T) {
	setup(t, true)
	const data = 200 << 20
	dir := t.TempDir()
	source := filepath.Join(dir, "big.img")
	if err := powerCutDisk(source, data); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "big")
	m, err := Capture(context.Background(), source, snapDir)
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Replace(unattended, `"media:/snapshots/pc1"`, `"media:/snapshots/big"`, 1)
	stick := installStick(t, 320<<20, snapDir, plan, nil)
	target := blankOf(t, data+16<<20)
	drives := []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}

	runUntilCut(t, &VM{Drives: drives}, "", 60)
	// The table is written after all data: the half-restored disk has
	// none, so nothing boots from it.
	if dump, err := SfdiskDump(target); err == nil {
		t.Errorf("after the power cut at 60%% the target has a partition table:\n%s", dump)
	}
	// A cut leaves the FAT's dirty bit and free-cluster count stale, as any
	// power cut of a mounted stick does; the journal, written in place
	// without allocating, must not add more. The second boot's report on
	// the stick shows the file system still takes writes.
	if out, err := exec.Command("fsck.vfat", "-n", stick).CombinedOutput(); err != nil {
		t.Logf("fsck.vfat -n on the stick after the power cut: %v\n%s", err, out)
	}
	var journals []string
	files, err := StickFiles(stick, "/rewind/journal")
	for _, f := range files {
		if strings.HasSuffix(f, ".json") {
			journals = append(journals, f)
		}
	}
	if err != nil || len(journals) != 1 {
		t.Fatalf("after the power cut the stick's rewind/journal holds %v (%v); want one journal", journals, err)
	}

	out, r := boot(t, &VM{Drives: drives}, "")
	wantSame := func() {
		if r.Status != rescue.StatusSuccess {
			t.Fatalf("report status %q, error %q; want success", r.Status, r.Error)
		}
		if err := SameExtents(source, target, m); err != nil {
			t.Fatalf("target after the resumed restore: %v", err)
		}
	}
	wantSame()
	if r.Resume == nil || r.Resume.FromChunk == 0 || r.Resume.ChunksDone == 0 || r.Resume.Verified != r.Resume.ChunksDone+r.Resume.Rewritten {
		t.Fatalf("report resume %+v; want a resume past chunk 0 with every chunk the journal names read back and checked", r.Resume)
	}
	if !strings.Contains(out, fmt.Sprintf("resumed from chunk %d", r.Resume.FromChunk)) {
		t.Errorf("the console does not say where the restore resumed")
	}
	var all int64
	for _, c := range m.Chunks {
		all += c.Length
	}
	if got := r.BytesWritten + r.BytesZeroed; got >= all {
		t.Errorf("the resumed restore wrote %d bytes, the whole snapshot is %d; want less", got, all)
	}
	if _, err := StickFile(stick, "/rewind/reports/last.json"); err != nil {
		t.Errorf("no report on the stick after the resumed restore: %v", err)
	}
	if left, _ := StickFiles(stick, "/rewind/journal"); len(left) != 0 {
		t.Errorf("the journal was not deleted after success: %v", left)
	}
	t.Logf("resumed from chunk %d: %d of %d chunks were on the disk, %d verified; wrote %d bytes", r.Resume.FromChunk, r.Resume.ChunksDone, r.Resume.Chunks, r.Resume.Verified, r.BytesWritten+r.BytesZeroed)
}

// A delta restore onto a disk that already holds the snapshot except two
// chunks writes only those two.
func TestDeltaRestoreWritesTheDifference(t *testing.T) {
	setup(t, true)
	target := filepath.Join(t.TempDir(), "target.img")
	b, err := os.ReadFile(shared.source)
	if err != nil {
		t.Fatal(err)
	}
	var data []int
	for i, c := range shared.m.Chunks {
		if !c.Zero {
			data = append(data, i)
		}
	}
	damaged := []int{data[0], data[len(data)-1]}
	var changed int64
	for _, i := range damaged {
		c := shared.m.Chunks[i]
		copy(b[c.Offset+512:], "scribbled over")
		changed += c.Length
	}
	if err := os.WriteFile(target, b, 0o644); err != nil {
		t.Fatal(err)
	}
	plan := strings.Replace(unattended, `after = "poweroff"`, "delta = true\nafter = \"poweroff\"", 1)
	stick := stickWithSnapshot(t, 96<<20, plan)
	_, r := boot(t, &VM{Drives: []Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "target1"}}}, "")
	wantRestored(t, target, r)
	if !r.Delta {
		t.Errorf("report: delta false; want true")
	}
	if got := r.BytesWritten + r.BytesZeroed; got != changed {
		t.Errorf("delta restore wrote %d bytes; want only the %d of chunks %v", got, changed, damaged)
	}
	if want := shared.m.DataBytes() - changed; r.BytesSkipped != want {
		t.Errorf("delta restore skipped %d bytes; want %d", r.BytesSkipped, want)
	}
	t.Logf("delta restore wrote %d bytes, skipped %d", r.BytesWritten+r.BytesZeroed, r.BytesSkipped)
}
