package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/spf13/cobra"
)

func newDisksCmd() *cobra.Command {
	var asJSON bool
	var exclude []string
	cmd := &cobra.Command{
		Use:   "disks",
		Short: "List the block devices a snapshot could be captured from or restored onto",
		Long: `List whole-disk block devices: path, size, transport, model, serial and WWN,
and whether each is removable, mounted (itself, a partition, or through
device mapper / RAID), holds the running system, or is excluded.

The serial, WWN and size shown are what a restore's target spec matches:
  serial=S5SSNF0T1234   wwn=naa.5002538e40a0b1c2   size=500GB   size=450GB-550GB`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			disks, err := diskrestore.ListDisks(diskrestore.ListOptions{Exclude: exclude})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", " ")
				if disks == nil {
					disks = []diskrestore.Disk{}
				}
				return enc.Encode(disks)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tSIZE\tTRANSPORT\tMODEL\tSERIAL\tWWN\tNOTES")
			for _, d := range disks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Path, units.Bytes(d.Size), disksDash(d.Transport),
					disksDash(d.Model), disksDash(d.Serial), disksDash(d.WWN), disksDash(diskNotes(d)))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	cmd.Flags().StringSliceVar(&exclude, "exclude", nil, "mark these devices as excluded (rescue media, snapshot source)")
	return cmd
}

// diskNotes says what makes a disk special, or unsafe to restore onto.
func diskNotes(d diskrestore.Disk) string {
	var n []string
	if d.System {
		n = append(n, "running system")
	}
	if d.Rescue {
		n = append(n, "excluded")
	}
	if d.Mounted {
		n = append(n, "mounted: "+strings.Join(d.Mounts, ", "))
	}
	if len(d.Holders) > 0 {
		n = append(n, "used by "+strings.Join(d.Holders, ", "))
	}
	if d.Removable {
		n = append(n, "removable")
	}
	if d.ReadOnly {
		n = append(n, "read-only")
	}
	if d.LogicalSectorSize == 4096 {
		n = append(n, "4Kn")
	}
	return strings.Join(n, "; ")
}

func disksDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
