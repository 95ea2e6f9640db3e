package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/rewind-bmr/rewind/initramfs"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newUSBCmd(a *app) *cobra.Command {
	var (
		list, create, force, quiet bool
		image                      string
		number                     int
	)
	cmd := &cobra.Command{
		Use:   "usb (--list-devices | --create --iso FILE --device N [--force] [--quiet])",
		Short: "List USB sticks, or write a rescue image (ISO or USB image) onto one",
		Long: `The rescue USB writer.

--list-devices shows the removable and USB-attached disks with the number
--device takes, vendor and model, size, and whether a partition is mounted.

--create writes FILE (from 'rewind media build --format usb' or '--format iso')
onto device N, flushes it and reads it back to compare. Everything on the
device is lost, so it asks first; --force skips the question and --quiet the
progress bar, and both are implied when the output is not a terminal. A disk
that is neither removable nor USB, a disk with mounted partitions and a disk
smaller than the image are refused. Right before writing, the device is
checked again: a different stick at the same /dev/sdX (another device
number, serial, WWN, model or size than listed) is refused.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case list == create:
				return usageError{errors.New("give one of --list-devices (-l) or --create (-c)")}
			case list:
				return listUSB(cmd)
			case image == "" || number == 0:
				return usageError{errors.New("--create needs --iso FILE and --device N (see 'rewind usb --list-devices')")}
			}
			devs, err := initramfs.ListUSBDevices("")
			if err != nil {
				return err
			}
			if number < 1 || number > len(devs) {
				return usageError{fmt.Errorf("there is no USB device %d: 'rewind usb --list-devices' shows %d", number, len(devs))}
			}
			dev := devs[number-1]
			st, err := os.Stat(image)
			if err != nil {
				return err
			}
			if err := initramfs.CheckUSBTarget(dev.Disk, st.Size(), false); err != nil {
				return err
			}
			if !term.IsTerminal(int(os.Stdout.Fd())) {
				force, quiet = true, true
			}
			if !force {
				if err := confirmUSB(cmd, dev, image); err != nil {
					return err
				}
			}
			var pp *restore.ProgressPrinter
			if !quiet {
				if pp, err = restore.NewProgressPrinter(cmd.ErrOrStderr(), restore.ProgressAuto, term.IsTerminal(int(os.Stderr.Fd())), "write "); err != nil {
					return err
				}
			}
			verify := pp
			if !quiet {
				verify, _ = restore.NewProgressPrinter(cmd.ErrOrStderr(), restore.ProgressAuto, term.IsTerminal(int(os.Stderr.Fd())), "verify")
			}
			err = initramfs.WriteImage(cmd.Context(), initramfs.WriteOptions{
				Image: image, Device: dev,
				Progress: func(p initramfs.WriteProgress) {
					q := restore.Progress{Done: p.Done, Total: p.Total, Elapsed: p.Elapsed, Final: p.Final}
					switch {
					case quiet:
					case p.Stage == "write":
						pp.Update(q)
					default:
						verify.Update(q)
					}
				},
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s onto %s (%s) and read it back: the stick is ready\n", image, dev.Path, dev.Description())
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&list, "list-devices", "l", false, "list removable and USB-attached disks")
	f.BoolVarP(&create, "create", "c", false, "write an image onto a device")
	f.StringVarP(&image, "iso", "i", "", "the image to write: a hybrid ISO or a USB image from 'rewind media build'")
	f.IntVarP(&number, "device", "d", 0, "the device's number from --list-devices")
	f.BoolVarP(&force, "force", "f", false, "do not ask before overwriting the device")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

func listUSB(cmd *cobra.Command) error {
	devs, err := initramfs.ListUSBDevices("")
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if len(devs) == 0 {
		fmt.Fprintln(w, "no removable or USB disks found; plug a stick in and try again")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tDEVICE\tMODEL\tSERIAL\tSIZE\tMOUNTED")
	for _, d := range devs {
		mounted := "no"
		if d.Mounted {
			var points []string
			for _, m := range d.Mounts {
				_, p, _ := strings.Cut(m, " on ")
				points = append(points, p)
			}
			mounted = "yes: " + strings.Join(points, ", ")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.Number, d.Path, d.Description(), serialOf(d), units.Bytes(d.Size), mounted)
	}
	return tw.Flush()
}

// serialOf is the device's serial, else its WWN, else "-".
func serialOf(d initramfs.USBDevice) string {
	switch {
	case d.Serial != "":
		return d.Serial
	case d.WWN != "":
		return d.WWN
	}
	return "-"
}

// confirmUSB asks before the device is overwritten.
func confirmUSB(cmd *cobra.Command, dev initramfs.USBDevice, image string) error {
	in, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return usageError{fmt.Errorf("writing would erase everything on %s and there is no terminal to confirm on: pass --force", dev.Path)}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "Write %s onto %s (%s, serial %s, %s)?\nALL DATA ON %s WILL BE LOST. Type yes to continue: ",
		image, dev.Path, dev.Description(), serialOf(dev), units.Bytes(dev.Size), dev.Path)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	if strings.TrimSpace(strings.ToLower(answer)) != "yes" {
		return errors.New("cancelled: nothing was written")
	}
	return nil
}
