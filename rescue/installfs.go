package rescue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/snapshot"
	"golang.org/x/sys/unix"
)

// installMounts is where destination file systems are mounted.
const installMounts = "/run/rewind/install"

// partitionWait is how long a partition's device node may take to appear
// after the kernel re-read the table.
const partitionWait = 10 * time.Second

// install copies the machine's install_file entries into the restored
// file systems (after a successful restore). A required file that is not
// copied fails the recovery, but the restored disk and its partition
// table are kept: the data restore itself succeeded.
func (r *Rescue) install(ctx context.Context, snap *snapshot.Snapshot, disk Disk) (string, error) {
	files := r.settings.Machine.InstallFiles
	if len(files) == 0 {
		return StatusSuccess, nil
	}
	r.setPhase(PhaseInstalling)
	start := time.Now()
	r.drivers.Load("ext4", "vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii", "ntfs3")
	in := &installer{r: r, ctx: ctx, layout: snap.Manifest.Layout, disk: disk, mounts: map[string]string{}}
	defer in.unmountAll()
	timeout := time.Duration(r.settings.Countdown) * time.Second
	var failed []InstallOutcome
	counts := map[string]int{}
	for _, f := range files {
		var out InstallOutcome
		if dir, err := in.mountFor(f); err != nil {
			out = InstallOutcome{Source: f.Source, Dest: f.Dest, Result: InstallFailed, Why: err.Error(), Required: f.has(FlagRequired)}
		} else {
			out = InstallInto(dir, f, in.open, r.asker(), timeout)
		}
		r.report.InstallFiles = append(r.report.InstallFiles, out)
		r.log.Printf("install: %s", installLine(out))
		counts[out.Result]++
		if out.Failed() {
			failed = append(failed, out)
		}
	}
	if err := in.unmountAll(); err != nil {
		r.log.Printf("install: %v", err)
	}
	var parts []string
	for _, k := range []string{InstallCopied, InstallReplaced, InstallSkipped, InstallFailed} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	if len(failed) > 0 {
		r.report.AddStep("install", StepFailed, start, strings.Join(parts, ", "))
		return StatusFailed, errors.New(installFailure(failed))
	}
	r.report.AddStep("install", StepOK, start, strings.Join(parts, ", "))
	return StatusSuccess, nil
}

// installer mounts the destination file systems of one install step.
type installer struct {
	r      *Rescue
	ctx    context.Context
	layout *snapshot.Layout
	disk   Disk
	mounts map[string]string // device -> mount point
}

// mountFor finds the partition f.Dest names on the restored disk and
// mounts its file system (once per partition).
func (in *installer) mountFor(f InstallFile) (string, error) {
	d, err := f.Validate()
	if err != nil {
		return "", err
	}
	dev, err := in.partition(d)
	if err != nil {
		return "", err
	}
	if dir, ok := in.mounts[dev]; ok {
		return dir, nil
	}
	dir := filepath.Join(installMounts, filepath.Base(dev))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	fstype := probeFSType(dev)
	tries := []string{fstype}
	if fstype == "" {
		tries = []string{"ext4", "vfat", "ntfs3"}
	}
	var errs []string
	for _, t := range tries {
		var err error
		if t == "vfat" {
			// iocharset=utf8 keeps non-ASCII names; it needs nls_utf8.
			if err = unix.Mount(dev, dir, t, 0, "iocharset=utf8"); err != nil {
				err = unix.Mount(dev, dir, t, 0, "")
			}
		} else {
			err = unix.Mount(dev, dir, t, 0, "")
		}
		if err == nil {
			in.mounts[dev] = dir
			in.r.log.Printf("install: %s (%s) mounted on %s", dev, t, dir)
			return dir, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", t, err))
	}
	what := fstype
	if what == "" {
		what = "an unrecognised file system"
	}
	return "", fmt.Errorf("cannot mount %s (%s; %s); Rewind installs into ext4, vfat and, when the kernel has ntfs3, NTFS", dev, what, strings.Join(errs, ", "))
}

// unmountAll flushes and unmounts every destination file system.
func (in *installer) unmountAll() error {
	var errs []error
	for dev, dir := range in.mounts {
		if fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
			unix.Syncfs(fd)
			unix.Close(fd)
		}
		if err := unix.Unmount(dir, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s from %s: %w", dev, dir, err))
			continue
		}
		delete(in.mounts, dev)
	}
	return errors.Join(errs...)
}

// open reads an install source: media:/path on the rescue media, or an
// http(s) URL.
func (in *installer) open(source string) (io.ReadCloser, error) {
	return in.r.openLocation(in.ctx, source)
}

// partition returns the device node of the partition d names on the
// restored disk: part:N by number; label= and uuid= by the snapshot's
// layout (GPT partition name or GUID, file-system label) and else by
// probing each partition's file system (label, UUID or FAT serial).
func (in *installer) partition(d Dest) (string, error) {
	n := d.Partition
	if n == 0 && in.layout != nil {
		for _, p := range in.layout.Partitions {
			if d.Label != "" && (p.Name == d.Label || strings.EqualFold(p.FSLabel, d.Label)) ||
				d.UUID != "" && strings.EqualFold(p.GUID, d.UUID) {
				n = p.Number
				break
			}
		}
	}
	if n > 0 {
		var dev string
		waitFor(partitionWait, func() bool {
			dev = partitionNode(in.disk.Name, n)
			return dev != ""
		})
		if dev == "" {
			return "", fmt.Errorf("partition %d of %s did not appear within %s", n, in.disk.Path, partitionWait)
		}
		return dev, nil
	}
	want := len(partitionNodes(in.disk.Name))
	if in.layout != nil {
		want = len(in.layout.Partitions)
	}
	waitFor(partitionWait, func() bool { return len(partitionNodes(in.disk.Name)) >= max(want, 1) })
	for _, dev := range partitionNodes(in.disk.Name) {
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		fs := diskrestore.ProbeFS(f)
		f.Close()
		if d.Label != "" && strings.EqualFold(fs.Label, d.Label) || d.UUID != "" && strings.EqualFold(fs.UUID, d.UUID) {
			return dev, nil
		}
	}
	sel := "label " + d.Label
	if d.UUID != "" {
		sel = "UUID " + d.UUID
	}
	return "", fmt.Errorf("no partition of %s has the %s (GPT name or GUID, or file-system label or UUID)", in.disk.Path, sel)
}

// partitionNode returns /dev/NAME of partition n of disk (vda -> vda2,
// nvme0n1 -> nvme0n1p2) once the kernel and devtmpfs have it, or "".
func partitionNode(disk string, n int) string {
	matches, _ := filepath.Glob(filepath.Join("/sys/class/block", disk, "*", "partition"))
	for _, m := range matches {
		if readSys(filepath.Dir(m), "partition") != strconv.Itoa(n) {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(m))
		if _, err := os.Stat(dev); err == nil {
			return dev
		}
	}
	return ""
}

// partitionNodes lists the partition device nodes of disk.
func partitionNodes(disk string) []string {
	matches, _ := filepath.Glob(filepath.Join("/sys/class/block", disk, "*", "partition"))
	var out []string
	for _, m := range matches {
		dev := "/dev/" + filepath.Base(filepath.Dir(m))
		if _, err := os.Stat(dev); err == nil {
			out = append(out, dev)
		}
	}
	sort.Strings(out)
	return out
}

// probeFSType names the file system on dev for mount(2), or "".
func probeFSType(dev string) string {
	f, err := os.Open(dev)
	if err != nil {
		return ""
	}
	defer f.Close()
	return diskrestore.ProbeFS(f).MountType()
}
