package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/spf13/cobra"
)

func newMediaCmd() *cobra.Command {
	media := &cobra.Command{
		Use:   "media",
		Short: "Build rescue media: a kernel and an initramfs with a plan, keys and drivers",
	}
	media.AddCommand(newMediaBuildCmd())
	return media
}

func newMediaBuildCmd() *cobra.Command {
	var (
		plan, kernel, modules, drivers, base, out string
		trust, extra                              []string
		noModules                                 bool
	)
	cmd := &cobra.Command{
		Use:   "build --plan PLAN.toml --kernel VMLINUZ -o OUTDIR",
		Short: "Write OUTDIR/vmlinuz and OUTDIR/initramfs.cpio.gz for a plan",
		Long: `Build the rescue environment for a plan: OUTDIR/vmlinuz is the kernel,
OUTDIR/initramfs.cpio.gz is Rewind's base initramfs (u-root's shell commands,
rewind and rewind-init) with a second archive appended that holds the plan,
the trusted public keys, and the kernel modules for storage, USB, network and
file systems with everything they depend on. No Go toolchain is needed: the
base archive is built into rewind by 'make build' (or given with --base).

Boot the two files from PXE, a boot loader or QEMU; see docs/rescue.md.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if plan == "" || kernel == "" || out == "" {
				return usageError{fmt.Errorf("--plan, --kernel and -o are required")}
			}
			planData, err := os.ReadFile(plan)
			if err != nil {
				return err
			}
			if _, err := rescue.ParsePlan(planData); err != nil {
				return fmt.Errorf("%s: %w", plan, err)
			}
			keys := map[string][]byte{}
			for _, k := range trust {
				if _, err := snapshot.LoadPublicKey(k); err != nil {
					return err
				}
				b, err := os.ReadFile(k)
				if err != nil {
					return err
				}
				name := filepath.Base(k)
				if _, dup := keys[name]; dup {
					return usageError{fmt.Errorf("two --trust keys are named %s; rename one", name)}
				}
				keys[name] = b
			}
			baseData, from, err := initramfs.Base(base)
			if err != nil {
				return err
			}
			var names []string
			if len(extra) > 0 {
				names = append(append(names, initramfs.DefaultModules...), extra...)
			}
			res, err := initramfs.BuildMedia(initramfs.MediaOptions{
				Base: baseData, Kernel: kernel, ModulesDir: modules, Modules: names, NoModules: noModules,
				DriversDir: drivers, Plan: planData, Trust: keys, OutDir: out,
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "kernel     %s (%s)\n", res.Kernel, orUnknown(res.KernelRelease))
			st, _ := os.Stat(res.Initramfs)
			fmt.Fprintf(w, "initramfs  %s (%s; base archive %s)\n", res.Initramfs, restore.HumanBytes(st.Size()), from)
			if res.Modules != nil {
				fmt.Fprintf(w, "modules    %d from %s\n", len(res.Modules.Files), res.Modules.Dir)
				if len(res.Modules.Missing) > 0 {
					fmt.Fprintf(w, "           not in this kernel (skipped): %s\n", strings.Join(res.Modules.Missing, " "))
				}
			}
			fmt.Fprintf(w, "plan       %s\n", plan)
			if len(keys) > 0 {
				fmt.Fprintf(w, "trust      %d keys\n", len(keys))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&plan, "plan", "", "the plan (TOML, see docs/plan.md)")
	f.StringVar(&kernel, "kernel", "", "the kernel to boot (bzImage), e.g. /boot/vmlinuz-$(uname -r)")
	f.StringVar(&modules, "modules", "", "the kernel's modules directory (default /lib/modules/RELEASE of --kernel)")
	f.StringSliceVar(&extra, "module", nil, "add this kernel module (and its dependencies) to the default set; repeatable")
	f.BoolVar(&noModules, "no-modules", false, "add no kernel modules (for a kernel with every driver built in)")
	f.StringVar(&drivers, "drivers", "", "a directory of extra kernel modules (*.ko) loaded at boot")
	f.StringSliceVar(&trust, "trust", nil, "a public key (from 'rewind key generate') the snapshot must be signed with; repeatable")
	f.StringVar(&base, "base", "", "the base initramfs from 'make initramfs' (default: built into rewind)")
	f.StringVarP(&out, "output", "o", "", "directory to write vmlinuz and initramfs.cpio.gz to")
	return cmd
}

func orUnknown(s string) string {
	if s == "" {
		return "release unknown"
	}
	return s
}
