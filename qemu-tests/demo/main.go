// Command demo is Rewind's recovery shown end to end in QEMU ('make demo'):
// build, capture a sample disk, build rescue media and a USB stick, boot a
// machine with a blank disk, count down, restore, and verify from the host.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	qemutests "github.com/rewind-bmr/rewind/qemu-tests"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/snapshot"
)

const diskSize = 64 << 20

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> %s\033[0m\n", fmt.Sprintf(format, args...))
}

func sh(name string, args ...string) error {
	fmt.Printf("    $ %s %s\n", filepath.Base(name), strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func run() error {
	ctx := context.Background()
	root, err := qemutests.RepoRoot()
	if err != nil {
		return err
	}
	kernel := qemutests.Kernel()
	if kernel == "" {
		return fmt.Errorf("no kernel in /boot (scripts/setup.sh installs linux-image-amd64)")
	}
	work := filepath.Join(root, "out", "demo")
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	total := time.Now()

	step("1/7 Build rewind and the base rescue initramfs (u-root; cached in .cache/rescue)")
	rewind := filepath.Join(work, "rewind")
	if err := sh("go", "build", "-o", rewind, "./cmd/rewind"); err != nil {
		return err
	}
	base, err := qemutests.BaseInitramfs(ctx, root, func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) })
	if err != nil {
		return err
	}
	fmt.Printf("    base archive %s\n", base)

	step("2/7 Make a sample machine disk: GPT, ext4 with files, a data partition, a boot area")
	source := filepath.Join(work, "pc1-disk.img")
	if err := qemutests.SampleDisk(source, diskSize, 7); err != nil {
		return err
	}
	if err := sh("sfdisk", "--dump", source); err != nil {
		return err
	}

	step("3/7 Capture it into a snapshot")
	snapDir := filepath.Join(work, "pc1")
	if err := sh(rewind, "capture", source, "-o", snapDir, "--progress", "plain"); err != nil {
		return err
	}
	m, err := readManifest(snapDir)
	if err != nil {
		return err
	}

	step("4/7 Build the rescue media: kernel + initramfs with the plan and drivers")
	plan := filepath.Join(work, "plan.toml")
	os.WriteFile(plan, []byte(`# Restore pc1 from the stick onto the 64 MiB disk, after a 5 s countdown.
[countdown]
seconds = 5
default = "restore"

[[machine]]
name = "pc1"
snapshot = "media:/snapshots/pc1"
target = "size=64MiB"
after = "poweroff"
`), 0o644)
	fmt.Printf("    plan:\n%s", indent(plan))
	media := filepath.Join(work, "media")
	if err := sh(rewind, "media", "build", "--plan", plan, "--kernel", kernel, "--base", base, "-o", media); err != nil {
		return err
	}

	step("5/7 Make a USB stick (FAT32, label REWIND) holding the snapshot, and a blank target disk")
	stick := filepath.Join(work, "stick.img")
	if err := qemutests.USBStick(stick, 128<<20, map[string]string{"/snapshots/pc1": snapDir}); err != nil {
		return err
	}
	target := filepath.Join(work, "new-disk.img")
	if err := qemutests.BlankDisk(target, diskSize); err != nil {
		return err
	}
	fmt.Printf("    stick %s (usb-storage), target %s (virtio, all zeros)\n", stick, target)

	step("6/7 Boot the machine in QEMU (TCG, no network) and let the countdown run out")
	vm := &qemutests.VM{
		Kernel: filepath.Join(media, "vmlinuz"), Initrd: filepath.Join(media, "initramfs.cpio.gz"),
		Drives:  []qemutests.Drive{{Path: stick, Bus: "usb"}, {Path: target, Serial: "PC1-NEW-DISK"}},
		LogPath: filepath.Join(work, "console.log"), Echo: os.Stdout, Timeout: 3 * time.Minute,
	}
	bootStart := time.Now()
	out, err := vm.Run(ctx)
	bootTime := time.Since(bootStart)
	if err != nil {
		return err
	}
	r, err := report(out)
	if err != nil {
		return err
	}

	step("7/7 Verify from the host: the new disk's extents and partition table equal the original's")
	verr := qemutests.SameExtents(source, target, m)
	fmt.Printf("\n%s\n", strings.Repeat("=", 64))
	fmt.Printf("  Rewind demo summary\n")
	fmt.Printf("  rescue result     %s (report on the stick: rewind/reports/last.json)\n", r.Status)
	fmt.Printf("  restored          %d bytes of %d extents in %.1f s (%.1f MB/s under TCG)\n",
		r.BytesWritten+r.BytesZeroed, len(m.Extents), r.RestoreSeconds, r.BytesPerSecond/1e6)
	fmt.Printf("  QEMU boot to off  %.1f s (of which 5 s countdown, 10 s pause to read the summary)\n", bootTime.Seconds())
	if verr != nil {
		fmt.Printf("  verification      FAILED: %v\n", verr)
	} else {
		fmt.Printf("  verification      every extent's sha256 and sfdisk --dump match the source\n")
	}
	fmt.Printf("  whole demo        %.0f s; files in %s\n", time.Since(total).Seconds(), work)
	fmt.Printf("%s\n", strings.Repeat("=", 64))
	if r.Status != rescue.StatusSuccess {
		return fmt.Errorf("the rescue environment reported %s: %s", r.Status, r.Error)
	}
	return verr
}

func readManifest(dir string) (*snapshot.Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, snapshot.ManifestName))
	if err != nil {
		return nil, err
	}
	return snapshot.ParseManifest(b)
}

func report(console string) (*rescue.Report, error) {
	_, rest, ok := strings.Cut(console, rescue.ReportBegin)
	js, _, ok2 := strings.Cut(rest, rescue.ReportEnd)
	if !ok || !ok2 {
		return nil, fmt.Errorf("no report on the console")
	}
	var r rescue.Report
	if err := json.Unmarshal([]byte(strings.ReplaceAll(js, "\r", "")), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func indent(path string) string {
	b, _ := os.ReadFile(path)
	return "      " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n      ") + "\n"
}
