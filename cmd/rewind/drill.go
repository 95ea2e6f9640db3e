package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/drill"
	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/spf13/cobra"
)

func newDrillCmd() *cobra.Command {
	var (
		kernel, check, keep, base, expect, accel, planFile, medium string
		timeout, bootTimeout                                       time.Duration
		jsonOut                                                    bool
	)
	cmd := &cobra.Command{
		Use:   "drill SNAPSHOT... [--check fs] [--expect REGEX|tcp:PORT] [--accel auto|kvm|tcg] [--plan PLAN.toml] [--medium FILE] [--kernel VMLINUZ] [--timeout 15m] [--keep DIR] [--json]",
		Short: "Restore a machine's snapshots in a QEMU virtual machine with the real rescue flow and check the result",
		Long: `Drill the recovery of a machine: each SNAPSHOT (a snapshot directory) is one
of its disks, in order. Build the rescue initramfs and a stick holding the
snapshots (as media:/snapshots/BASENAME) with an unattended plan (or --plan, or
boot a built USB image with --medium), boot the rescue flow in QEMU (no
network) against one blank disk per snapshot, of its size, then check every
ext2/3/4 and FAT file system of the restored disks with its own fsck
(--check fs), and/or boot the restored disks with the firmware the first one's
layout needs (OVMF when it has an EFI system partition, else SeaBIOS) and wait
for --expect: a regular expression on the serial console, or tcp:PORT, a TCP
port of the guest accepting a connection (a NIC on QEMU's user network with
restrict=on, forwarded from a loopback port). --timeout applies to each VM,
--boot-timeout (if given) to the restored machine's.

--accel auto (the default) boots a one-sector guest under KVM first and uses
KVM only if it prints within 5s; otherwise TCG, with a note in the output.

Phases: accel, media, rescue boot, restore, check fs, reboot, expect, each
reported with its time; the exit status is 0 only when every phase passed.
On a failure the error names the phase and why, and the console logs and the
restored disk images are kept (in --keep DIR, or a directory the error names).

Not done yet: snapshot URLs (copy the snapshot here first).`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if check != "" && check != "fs" {
				return usageError{fmt.Errorf("--check %q: only --check fs is supported", check)}
			}
			if check == "" && expect == "" {
				return usageError{fmt.Errorf("nothing to check: give --check fs, --expect REGEX|tcp:PORT, or both")}
			}
			if accel != "auto" && accel != "kvm" && accel != "tcg" {
				return usageError{fmt.Errorf("--accel %q: use auto, kvm or tcg", accel)}
			}
			o := drill.Options{Snapshots: a, Check: check, Timeout: timeout, BootTimeout: bootTimeout, Keep: keep, Accel: accel, Medium: medium}
			if p, ok := strings.CutPrefix(expect, "tcp:"); ok {
				port, err := strconv.Atoi(p)
				if err != nil || port < 1 || port > 65535 {
					return usageError{fmt.Errorf("--expect %q: tcp:PORT takes a port from 1 to 65535", expect)}
				}
				o.ExpectTCP = port
			} else if expect != "" {
				re, err := regexp.Compile(expect)
				if err != nil {
					return usageError{fmt.Errorf("--expect %q: %w", expect, err)}
				}
				o.Expect = re
			}
			if planFile != "" {
				b, err := os.ReadFile(planFile)
				if err != nil {
					return usageError{fmt.Errorf("--plan: %w", err)}
				}
				o.Plan = b
			}
			if kernel == "" {
				ks, _ := filepath.Glob("/boot/vmlinuz-*")
				if len(ks) == 0 {
					return usageError{fmt.Errorf("--kernel is required (no /boot/vmlinuz-*)")}
				}
				kernel = ks[len(ks)-1]
			}
			o.Kernel = kernel
			if medium == "" {
				var err error
				if o.Base, _, err = initramfs.Base(base); err != nil {
					return err
				}
				if o.Modules, err = drill.Modules(kernel); err != nil {
					return err
				}
			}
			res, err := drill.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if jsonOut {
				e := json.NewEncoder(w)
				e.SetIndent("", "  ")
				if err := e.Encode(res); err != nil {
					return err
				}
			} else {
				for _, p := range res.Phases {
					st := "ok"
					if !p.OK {
						st = "FAILED"
					}
					fmt.Fprintf(w, "%-12s %-6s %6.1fs %s\n", p.Name, st, p.Seconds, p.Detail)
				}
			}
			if !res.OK {
				if res.Dir != "" {
					fmt.Fprintf(os.Stderr, "kept in %s: console %s, disks %s\n", res.Dir, res.Console, strings.Join(res.Disks, " "))
				}
				return fmt.Errorf("drill of %s failed in phase %s: %s (kept in %s)", strings.Join(a, " "), res.Failed, res.Error, res.Dir)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kernel, "kernel", "", "the rescue kernel (default: the newest /boot/vmlinuz-*)")
	f.StringVar(&check, "check", "", "what to check after the restore: fs (fsck every file system of the restored disks)")
	f.StringVar(&expect, "expect", "", "boot the restored disks (OVMF with an EFI system partition, else SeaBIOS) and wait for this regular expression on the serial console, e.g. 'login: ', or tcp:PORT for a guest port to accept")
	f.StringVar(&accel, "accel", "auto", "QEMU accelerator: auto (probe KVM for 5s, else TCG), kvm or tcg")
	f.StringVar(&planFile, "plan", "", "put this plan on the stick instead of the generated one (validated as the rescue does; snapshots are media:/snapshots/BASENAME, disks serial=drill1, drill2, ...; not with --medium)")
	f.StringVar(&medium, "medium", "", "boot this built rescue USB image ('rewind media build --format usb', holding its plan and snapshots) instead of building one")
	f.StringVar(&keep, "keep", "", "keep the console logs and the restored disk images in this directory (kept in a temporary one on failure anyway)")
	f.StringVar(&base, "base", "", "the base rescue initramfs (default: built into this binary)")
	f.DurationVar(&timeout, "timeout", 15*time.Minute, "how long each VM may run")
	f.DurationVar(&bootTimeout, "boot-timeout", 0, "how long the restored machine's VM may run (default: --timeout)")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}
