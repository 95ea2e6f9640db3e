package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/rewind-bmr/rewind/drill"
	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/spf13/cobra"
)

func newDrillCmd() *cobra.Command {
	var (
		kernel, check, keep, base, expect string
		timeout                           time.Duration
		jsonOut                           bool
	)
	cmd := &cobra.Command{
		Use:   "drill SNAPSHOT [--check fs] [--expect REGEX] [--kernel VMLINUZ] [--timeout 15m] [--keep DIR] [--json]",
		Short: "Restore a snapshot in a QEMU virtual machine with the real rescue flow and check the result",
		Long: `Drill the recovery of SNAPSHOT (a snapshot directory): build the rescue
initramfs and a stick holding the snapshot with an unattended plan, boot the
rescue flow in QEMU (TCG, no network) against a blank disk of the snapshot's
size, then check every ext2/3/4 and FAT file system of the restored disk with
its own fsck (--check fs), and/or boot the restored disk with the firmware its
layout needs (OVMF when it has an EFI system partition, else SeaBIOS) and wait
for --expect REGEX on its serial console (--timeout applies to each VM). Each phase is reported with its time; the exit
status is 0 only when every phase passed. With --keep DIR the console log and
the restored disk image stay in DIR.

Not done yet: --accel (always TCG), several disks, HTTP serving, --plan,
--expect on a TCP port.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if check != "" && check != "fs" {
				return usageError{fmt.Errorf("--check %q: only --check fs is supported", check)}
			}
			if check == "" && expect == "" {
				return usageError{fmt.Errorf("nothing to check: give --check fs, --expect REGEX, or both")}
			}
			var re *regexp.Regexp
			if expect != "" {
				var err error
				if re, err = regexp.Compile(expect); err != nil {
					return usageError{fmt.Errorf("--expect %q: %w", expect, err)}
				}
			}
			if kernel == "" {
				ks, _ := filepath.Glob("/boot/vmlinuz-*")
				if len(ks) == 0 {
					return usageError{fmt.Errorf("--kernel is required (no /boot/vmlinuz-*)")}
				}
				kernel = ks[len(ks)-1]
			}
			baseData, _, err := initramfs.Base(base)
			if err != nil {
				return err
			}
			mods, err := drill.Modules(kernel)
			if err != nil {
				return err
			}
			res, err := drill.Run(cmd.Context(), drill.Options{Snapshot: a[0], Kernel: kernel, Base: baseData,
				Modules: mods, Check: check, Expect: re, Timeout: timeout, Keep: keep})
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
					fmt.Fprintf(w, "%-10s %-6s %6.1fs %s\n", p.Name, st, p.Seconds, p.Detail)
				}
			}
			if !res.OK {
				if keep != "" {
					fmt.Fprintf(os.Stderr, "kept: console %s, disk %s\n", res.Console, res.Disk)
				}
				return fmt.Errorf("drill of %s failed in phase %s: %s", a[0], res.Failed, res.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kernel, "kernel", "", "the rescue kernel (default: the newest /boot/vmlinuz-*)")
	f.StringVar(&check, "check", "", "what to check after the restore: fs (fsck every file system of the restored disk)")
	f.StringVar(&expect, "expect", "", "boot the restored disk (OVMF with an EFI system partition, else SeaBIOS) and wait for this regular expression on its serial console, e.g. 'login: '")
	f.StringVar(&keep, "keep", "", "keep the console log and the restored disk image in this directory")
	f.StringVar(&base, "base", "", "the base rescue initramfs (default: built into this binary)")
	f.DurationVar(&timeout, "timeout", 15*time.Minute, "how long the rescue VM may run")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}
