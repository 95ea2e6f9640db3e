package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/rescue"
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
		s3CredFile                                string
		noModules                                 bool
		format, snap, cmdline                     string
		menuTimeout                               int
		dataSize                                  string
		secureBoot                                string
	)
	cmd := &cobra.Command{
		Use:   "build --plan PLAN.toml --kernel VMLINUZ -o OUTDIR [--format initramfs|pxe|iso|usb] [--snapshot DIR]",
		Short: "Build rescue media for a plan: kernel and initramfs, a PXE bundle, a hybrid ISO or a USB image",
		Long: `Build the rescue environment for a plan: OUTDIR/vmlinuz is the kernel,
OUTDIR/initramfs.cpio.gz is Rewind's base initramfs (u-root's shell commands,
rewind and rewind-init) with a second archive appended that holds the plan,
the trusted public keys, and the kernel modules for storage, USB, network and
file systems with everything they depend on. No Go toolchain is needed: the
base archive is built into rewind by 'make build' (or given with --base).

--format chooses the medium (docs/media.md):
  initramfs  OUTDIR/vmlinuz and OUTDIR/initramfs.cpio.gz (the default)
  pxe        the same with boot.ipxe and a sample dnsmasq.conf
  iso        OUTDIR/rewind.iso: boots on BIOS and UEFI, as a CD or written to a stick
  usb        OUTDIR/rewind-usb.img: a GPT disk image (EFI system partition and a
             FAT32 partition labelled REWIND) that boots on BIOS and UEFI
Both images have a boot menu with "Restore" (the default after
--menu-timeout seconds; Rewind's countdown then runs), "Rescue shell" and
"Capture this machine" (rewind.action=capture).
--snapshot DIR puts a snapshot on an iso or usb medium as
media:/snapshots/NAME; without it, the plan fetches its snapshot.
The usb image boots with UEFI Secure Boot on through shim and Debian's
signed GRUB (packages shim-signed, shim-helpers-amd64-signed,
grub-efi-amd64-signed) and a kernel signed by a key shim trusts; the
"secure boot" line says whether the result will, and if not why.
Write images onto a stick with 'rewind usb --create'.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if plan == "" || kernel == "" || out == "" {
				return usageError{fmt.Errorf("--plan, --kernel and -o are required")}
			}
			if !slices.Contains(initramfs.Formats, format) {
				return usageError{fmt.Errorf("--format %s: use one of %s", format, strings.Join(initramfs.Formats, ", "))}
			}
			if !slices.Contains([]string{initramfs.SecureBootAuto, initramfs.SecureBootRequire, initramfs.SecureBootOff}, secureBoot) {
				return usageError{fmt.Errorf("--secure-boot %s: use auto, require or off", secureBoot)}
			}
			image := format == initramfs.FormatISO || format == initramfs.FormatUSB
			if snap != "" && !image {
				return usageError{fmt.Errorf("--snapshot puts a snapshot on an iso or usb medium; --format %s has no room for one (serve it with 'rewind serve')", format)}
			}
			var minData int64
			if dataSize != "" {
				var err error
				if minData, err = units.ParseSize(dataSize); err != nil {
					return usageError{fmt.Errorf("--data-size: %w", err)}
				}
			}
			planData, err := os.ReadFile(plan)
			if err != nil {
				return err
			}
			parsed, err := rescue.ParsePlan(planData)
			if err != nil {
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
			// With --trust, the plan must hold to signed snapshots' rules.
			if err := parsed.ValidateFor(len(keys)); err != nil {
				return fmt.Errorf("%s: %w", plan, err)
			}
			s3creds, err := readS3Credentials(s3CredFile, parsed.S3)
			if err != nil {
				return err
			}
			baseData, from, err := initramfs.Base(base)
			if err != nil {
				return err
			}
			mediaID, err := newMediaID(format, kernel, baseData, planData, keys, cmdline)
			if err != nil {
				return err
			}
			kst, err := os.Stat(kernel)
			if err != nil {
				return err
			}
			need, err := initramfs.EstimateSize(format, kst.Size(), int64(len(baseData)), snap)
			if err != nil {
				return err
			}
			if err := initramfs.CheckOutDir(out, need+minData); err != nil {
				return err
			}
			if snap != "" {
				warnSnapshotNotInPlan(cmd, planData, snap)
			}
			bootDir := out
			if image {
				// The kernel and initramfs only go into the image.
				if bootDir, err = os.MkdirTemp(out, ".rewind-build-"); err != nil {
					return err
				}
				defer os.RemoveAll(bootDir)
			}
			var names []string
			if len(extra) > 0 {
				names = append(append(names, initramfs.DefaultModules...), extra...)
			}
			res, err := initramfs.BuildMedia(initramfs.MediaOptions{
				Base: baseData, Kernel: kernel, ModulesDir: modules, Modules: names, NoModules: noModules,
				DriversDir: drivers, Plan: planData, Trust: keys, MediaID: mediaID, OutDir: bootDir,
				S3Credentials: s3creds,
			})
			if err != nil {
				return err
			}
			if menuTimeout <= 0 {
				menuTimeout = -1 // BootOptions: 0 is the default, <0 none
			}
			var packed []string // the module files in the image, for the Secure Boot check
			if res.Modules != nil {
				for _, f := range res.Modules.Files {
					packed = append(packed, filepath.Join(res.Modules.Dir, f))
				}
			}
			if drivers != "" {
				kos, err := initramfs.DriverFiles(drivers)
				if err != nil {
					return err
				}
				packed = append(packed, kos...)
			}
			boot, err := initramfs.BuildBoot(cmd.Context(), initramfs.BootOptions{
				Format: format, Kernel: res.Kernel, KernelSource: kernel, Initramfs: res.Initramfs, Snapshot: snap,
				Cmdline: cmdline, MenuTimeout: menuTimeout, DataSize: minData, MediaID: mediaID, OutDir: out,
				SecureBoot: secureBoot, Modules: packed,
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if image {
				st, _ := os.Stat(boot.Files[0])
				fmt.Fprintf(w, "%-10s %s (%s)\n", format, boot.Files[0], units.Bytes(st.Size()))
			} else {
				for _, f := range boot.Files[:len(boot.Files)-2] {
					fmt.Fprintf(w, "%-10s %s\n", filepath.Ext(f)[1:], f)
				}
			}
			fmt.Fprintf(w, "kernel     %s (%s)\n", filepath.Base(res.Kernel), orUnknown(res.KernelRelease))
			st, _ := os.Stat(res.Initramfs)
			fmt.Fprintf(w, "initramfs  %s (%s; base archive %s)\n", filepath.Base(res.Initramfs), units.Bytes(st.Size()), from)
			if res.Modules != nil {
				fmt.Fprintf(w, "modules    %d from %s\n", len(res.Modules.Files), res.Modules.Dir)
				if len(res.Modules.Missing) > 0 {
					fmt.Fprintf(w, "           not in this kernel (skipped): %s\n", strings.Join(res.Modules.Missing, " "))
				}
			}
			switch mediaID {
			case "":
				fmt.Fprintf(w, "medium     none recorded: the rescue environment uses the file system labelled REWIND\n")
			case initramfs.NoMedium:
				fmt.Fprintf(w, "medium     none: network boot\n")
			default:
				fmt.Fprintf(w, "medium     %s: the rescue environment uses this file system only\n", mediaID)
			}
			fmt.Fprintf(w, "secure boot %s\n", boot.SecureBoot)
			fmt.Fprintf(w, "plan       %s\n", plan)
			if len(keys) > 0 {
				fmt.Fprintf(w, "trust      %d keys\n", len(keys))
			}
			if s3creds != nil {
				fmt.Fprintf(w, "s3         credential %q from %s (in the image; anyone who has the medium can read it: give it read-only rights unless the plan captures)\n", parsed.S3.Credential, s3CredFile)
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
	f.StringVar(&s3CredFile, "s3-credentials", "", "an AWS-format credentials file holding the profile the plan's [s3] credential names; that profile alone goes into the image (docs/s3.md)")
	f.StringVar(&base, "base", "", "the base initramfs from 'make initramfs' (default: built into rewind)")
	f.StringVarP(&out, "output", "o", "", "directory to write the media to")
	f.StringVar(&format, "format", initramfs.FormatInitramfs, "the medium: initramfs, pxe, iso or usb")
	f.StringVar(&snap, "snapshot", "", "a snapshot directory to put on an iso or usb medium (as media:/snapshots/NAME)")
	f.StringVar(&cmdline, "cmdline", "", "more kernel command line for every boot menu entry (e.g. rewind.auto)")
	f.IntVar(&menuTimeout, "menu-timeout", initramfs.DefaultMenuTimeout, "seconds the boot menu waits before Restore (0: start Restore at once)")
	f.StringVar(&secureBoot, "secure-boot", initramfs.SecureBootAuto, "auto: iso/usb start shim and Debian's signed GRUB when installed; require: fail without them; off: GRUB built here, unsigned")
	f.StringVar(&dataSize, "data-size", "", "usb: the least size of the REWIND partition, for reports and more snapshots (e.g. 4GiB)")
	return cmd
}

// newMediaID derives the identity of the medium a build writes from the
// build's inputs (initramfs.NewMediaID).
func newMediaID(format, kernel string, base, plan []byte, keys map[string][]byte, cmdline string) (string, error) {
	h := sha256.New()
	k, err := os.ReadFile(kernel)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(keys))
	for n := range keys {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, b := range [][]byte{[]byte(format), k, base, plan, []byte(cmdline)} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	for _, n := range names {
		fmt.Fprintf(h, "%s:%d:", n, len(keys[n]))
		h.Write(keys[n])
	}
	return initramfs.NewMediaID(format, h.Sum(nil), time.Now()), nil
}

// warnSnapshotNotInPlan says when no plan entry reads the snapshot put
// on the medium.
func warnSnapshotNotInPlan(cmd *cobra.Command, planData []byte, snap string) {
	p, err := rescue.ParsePlan(planData)
	if err != nil {
		return
	}
	loc := "media:/snapshots/" + filepath.Base(filepath.Clean(snap))
	for _, m := range p.Machines {
		if strings.TrimSuffix(m.Snapshot, "/") == loc {
			return
		}
		for _, d := range m.Disks {
			if strings.TrimSuffix(d.Snapshot, "/") == loc {
				return
			}
		}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "note: no [[machine]] of the plan has snapshot = %q; the snapshot on the medium is used only through rewind.snapshot=%s\n", loc, loc)
}

func orUnknown(s string) string {
	if s == "" {
		return "release unknown"
	}
	return s
}

// readS3Credentials reads --s3-credentials and checks that it holds the
// profile the plan's [s3] credential names; a plan naming a credential
// without a file for it (and no credentials_file of its own) is refused,
// and so is a file the plan never uses.
func readS3Credentials(file string, t rescue.S3To) ([]byte, error) {
	switch {
	case file == "" && t.Credential != "" && t.CredentialsFile == "":
		return nil, usageError{fmt.Errorf("the plan's [s3] credential %q needs its key in the image: --s3-credentials FILE (an AWS credentials file with a [%s] profile)", t.Credential, t.Credential)}
	case file == "":
		return nil, nil
	case t.Credential == "":
		return nil, usageError{fmt.Errorf("--s3-credentials %s: the plan's [s3] names no credential to use from it; add [s3] credential = \"PROFILE\"", file)}
	case t.CredentialsFile != "":
		return nil, usageError{fmt.Errorf("--s3-credentials %s: the plan's [s3] credentials_file %s is read instead; drop one of them", file, t.CredentialsFile)}
	}
	c, err := snapshot.LoadS3Credential(file, t.Credential)
	if err != nil {
		return nil, fmt.Errorf("--s3-credentials: %w", err)
	}
	// Only that profile goes into the image, never the file's others.
	out := fmt.Sprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", t.Credential, c.AccessKeyID, c.SecretAccessKey)
	if c.SessionToken != "" {
		out += "aws_session_token = " + c.SessionToken + "\n"
	}
	return []byte(out), nil
}
