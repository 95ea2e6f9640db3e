// Package drill runs the recovery of a snapshot end to end in QEMU: it
// builds a rescue medium (a FAT stick holding the snapshot and an
// unattended plan, and the rescue initramfs), boots the real rescue flow
// against a blank disk of the snapshot's size, and checks the result: for
// now, that every file system on the restored disk checks clean with its
// own fsck (--check fs). Booting the restored disk is not done yet.
package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/vm"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

// Options describe one drill.
type Options struct {
	Snapshot string // a snapshot directory on this host
	Kernel   string // the rescue kernel
	Base     []byte // the base rescue initramfs (initramfs.Base)
	Modules  *initramfs.ModuleSet
	Check    string // "fs": fsck every file system of the restored disk
	Timeout  time.Duration
	Keep     string // directory kept with the console log and the disk image; "" = temporary
	// Expect, when set, boots the restored disk (OVMF when its layout has
	// an EFI system partition, else SeaBIOS) and waits until its serial
	// console matches, within Timeout.
	Expect *regexp.Regexp
}

// Phase is one step of the drill and how long it took.
type Phase struct {
	Name    string  `json:"name"`
	OK      bool    `json:"ok"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// Result is the drill's JSON result.
type Result struct {
	Snapshot string  `json:"snapshot"`
	OK       bool    `json:"ok"`
	Failed   string  `json:"failed_phase,omitempty"`
	Error    string  `json:"error,omitempty"`
	Phases   []Phase `json:"phases"`
	Console  string  `json:"console_log,omitempty"`
	Disk     string  `json:"disk_image,omitempty"`
}

const plan = `
[countdown]
seconds = 0
[[machine]]
name = "drill"
snapshot = "media:/snapshots/drill"
after = "poweroff"
`

// Run performs the drill. The returned Result says which phase failed and
// why; err is set only when the drill itself could not be run.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Check != "fs" && o.Check != "" {
		return nil, fmt.Errorf("drill: --check %q is not supported: only \"fs\" is implemented", o.Check)
	}
	if o.Check == "" && o.Expect == nil {
		return nil, fmt.Errorf("drill: nothing to check: give --check fs or --expect REGEX")
	}
	if o.Timeout <= 0 {
		return nil, fmt.Errorf("drill: timeout %s: give a positive --timeout", o.Timeout)
	}
	if fi, err := os.Stat(o.Snapshot); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("drill: snapshot %s is not a snapshot directory on this host (a URL is not supported yet): copy it here first", o.Snapshot)
	}
	snap, err := snapshot.Open(ctx, o.Snapshot, snapshot.OpenOptions{})
	if err != nil {
		return nil, fmt.Errorf("drill: snapshot %s: %w", o.Snapshot, err)
	}
	m := snap.Manifest
	snap.Close()
	dir := o.Keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "rewind-drill-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("drill: --keep %s: %w", dir, err)
	}
	res := &Result{Snapshot: o.Snapshot}
	phase := func(name string, f func() (string, error)) bool {
		start := time.Now()
		detail, err := f()
		p := Phase{Name: name, OK: err == nil, Seconds: time.Since(start).Seconds(), Detail: detail}
		res.Phases = append(res.Phases, p)
		if err != nil {
			res.Failed, res.Error = name, err.Error()
			return false
		}
		return true
	}
	stick := filepath.Join(dir, "stick.img")
	initrd := filepath.Join(dir, "initrd")
	disk := filepath.Join(dir, "disk.img")
	if o.Keep != "" {
		res.Console, res.Disk = filepath.Join(dir, "console.log"), disk
	}
	ok := phase("media", func() (string, error) {
		planFile := filepath.Join(dir, "plan.toml")
		if err := os.WriteFile(planFile, []byte(plan), 0o644); err != nil {
			return "", err
		}
		size := snapDirSize(o.Snapshot) + 64<<20
		if err := vm.USBStick(stick, size, map[string]string{"/snapshots/drill": o.Snapshot, "/rewind/plan.toml": planFile}); err != nil {
			return "", fmt.Errorf("rescue stick: %w", err)
		}
		var buf bytes.Buffer
		if err := initramfs.Compose(&buf, o.Base, &initramfs.Overlay{Modules: o.Modules}); err != nil {
			return "", fmt.Errorf("rescue initramfs: %w", err)
		}
		return "", os.WriteFile(initrd, buf.Bytes(), 0o644)
	})
	ok = ok && phase("restore", func() (string, error) {
		if err := vm.BlankDisk(disk, m.DiskSize); err != nil {
			return "", err
		}
		v := &vm.VM{Kernel: o.Kernel, Initrd: initrd, Cmdline: "rewind.after=poweroff",
			Drives:  []vm.Drive{{Path: stick, Bus: "usb"}, {Path: disk, Serial: "drill1"}},
			Timeout: o.Timeout, LogPath: filepath.Join(dir, "console.log")}
		out, err := v.Run(ctx)
		if err != nil {
			return "", fmt.Errorf("rescue VM: %w (console: %s)", err, v.LogPath)
		}
		r, err := consoleReport(out)
		if err != nil {
			return "", err
		}
		if r.Status != rescue.StatusSuccess {
			return "", fmt.Errorf("the rescue flow reported %s: %s", r.Status, r.Error)
		}
		return fmt.Sprintf("%d bytes restored", r.BytesWritten+r.BytesZeroed), nil
	})
	if o.Check == "fs" {
		ok = ok && phase("check fs", func() (string, error) { return CheckFS(disk, m) })
	}
	if o.Expect != nil {
		ok = ok && phase("boot", func() (string, error) {
			v := &vm.VM{Drives: []vm.Drive{{Path: disk, Boot: true}}, StopMatch: o.Expect,
				Timeout: o.Timeout, LogPath: filepath.Join(dir, "boot-console.log")}
			fw := "SeaBIOS"
			if hasESP(m) {
				vars, err := vm.OVMFVars(dir)
				if err != nil {
					return "", err
				}
				v.UEFIVars, fw = vars, "OVMF"
			}
			out, err := v.Run(ctx)
			if o.Expect.MatchString(out) {
				return fw + ": console matched " + o.Expect.String(), nil
			}
			if err != nil {
				return "", fmt.Errorf("the restored disk (%s) did not print %q: %w (console: %s)", fw, o.Expect.String(), err, v.LogPath)
			}
			return "", fmt.Errorf("the restored machine (%s) stopped without printing %q (console: %s)", fw, o.Expect.String(), v.LogPath)
		})
	}
	res.OK = ok
	return res, nil
}

// hasESP reports whether the layout has an EFI system partition.
func hasESP(m *snapshot.Manifest) bool {
	if m.Layout == nil {
		return false
	}
	for _, p := range m.Layout.Partitions {
		if strings.EqualFold(p.Type, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") || p.Type == "0xef" {
			return true
		}
	}
	return false
}

func snapDirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n + n/8
}

func consoleReport(out string) (*rescue.Report, error) {
	_, rest, ok := strings.Cut(out, rescue.ReportBegin)
	if !ok {
		return nil, fmt.Errorf("the rescue flow printed no report on the console")
	}
	js, _, ok := strings.Cut(rest, rescue.ReportEnd)
	if !ok {
		return nil, fmt.Errorf("the rescue report on the console is cut off")
	}
	var r rescue.Report
	if err := json.Unmarshal([]byte(strings.ReplaceAll(js, "\r", "")), &r); err != nil {
		return nil, fmt.Errorf("the rescue report on the console: %w", err)
	}
	return &r, nil
}

// CheckFS runs each file system's own fsck, read-only, on the partitions
// of the restored image that the snapshot's layout names a file system
// for. It fails when a partition does not check clean, or when there is
// no file system to check.
func CheckFS(img string, m *snapshot.Manifest) (string, error) {
	if m.Layout == nil {
		return "", fmt.Errorf("snapshot has no partition layout: no file system to check")
	}
	ss := uint64(m.Layout.LogicalSectorSize)
	var checked []string
	for _, p := range m.Layout.Partitions {
		var tool []string
		switch p.FSType {
		case "ext2", "ext3", "ext4":
			tool = []string{"e2fsck", "-f", "-n"}
		case "vfat", "fat", "fat16", "fat32":
			tool = []string{"fsck.vfat", "-n"}
		default:
			continue
		}
		lo, err := exec.Command("losetup", "--find", "--show", "--read-only", "-o", fmt.Sprint(p.Start*ss), "--sizelimit", fmt.Sprint(p.Size*ss), img).Output()
		if err != nil {
			return "", fmt.Errorf("partition %d: losetup: %w", p.Number, err)
		}
		dev := strings.TrimSpace(string(lo))
		out, err := exec.Command(tool[0], append(tool[1:], dev)...).CombinedOutput()
		exec.Command("losetup", "-d", dev).Run()
		if err != nil {
			return "", fmt.Errorf("partition %d (%s) does not check clean: %s: %v\n%s", p.Number, p.FSType, tool[0], err, out)
		}
		checked = append(checked, fmt.Sprintf("%d:%s", p.Number, p.FSType))
	}
	if len(checked) == 0 {
		return "", fmt.Errorf("no ext2/3/4 or FAT file system in the snapshot's layout to check")
	}
	return "clean: " + strings.Join(checked, " "), nil
}

// Modules selects the rescue's default kernel modules for kernel from
// /lib/modules/RELEASE.
func Modules(kernel string) (*initramfs.ModuleSet, error) {
	bz, err := os.ReadFile(kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	rel := initramfs.KernelRelease(bz)
	if rel == "" {
		return nil, fmt.Errorf("kernel %s: cannot read its release", kernel)
	}
	return initramfs.SelectModules(filepath.Join("/lib/modules", rel), initramfs.DefaultModules)
}
