package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/spf13/cobra"
)

func newInspectCmd(a *app) *cobra.Command {
	var (
		asJSON bool
		ca     []string
	)
	cmd := &cobra.Command{
		Use:   "inspect SNAPSHOT",
		Short: "Show a snapshot's origin, layout and size",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			opts, err := openOptions(a, nil, ca)
			if err != nil {
				return err
			}
			snap, err := snapshot.Open(cmd.Context(), argv[0], opts)
			if err != nil {
				return err
			}
			defer snap.Close()
			m := snap.Manifest
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					ID       string             `json:"id"`
					Signed   bool               `json:"signed"`
					Manifest *snapshot.Manifest `json:"manifest"`
				}{snap.ID, snap.Signed, m})
			}
			zero := 0
			for _, c := range m.Chunks {
				if c.Zero {
					zero++
				}
			}
			fmt.Fprintf(w, "snapshot   %s\n", snap.Location)
			fmt.Fprintf(w, "id         %s\n", snap.ID)
			fmt.Fprintf(w, "format     %s version %d, signed: %v\n", m.Format, m.Version, snap.Signed)
			fmt.Fprintf(w, "captured   %s from %s on %s\n", m.Created.Format("2006-01-02 15:04:05 MST"), m.Origin.Path, m.Origin.Hostname)
			fmt.Fprintf(w, "disk       %s (%d bytes)\n", units.Bytes(m.DiskSize), m.DiskSize)
			fmt.Fprintf(w, "data       %s in %d chunks of %s (%d all-zero), stored as %s in %d segments\n",
				units.Bytes(m.DataBytes()), len(m.Chunks), units.Bytes(m.ChunkSize), zero,
				units.Bytes(m.StoredBytes()), len(m.Segments))
			if l := m.Layout; l != nil {
				id := l.DiskGUID
				if l.Table == "mbr" {
					id = l.MBRSignature
				}
				fmt.Fprintf(w, "layout     %s, %d-byte sectors, disk id %s\n", l.Table, l.LogicalSectorSize, id)
				tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "  #\tstart\tsectors\tsize\ttype\tname/label")
				for _, p := range l.Partitions {
					name := p.Name
					if name == "" {
						name = p.FSLabel
					}
					fmt.Fprintf(tw, "  %d\t%d\t%d\t%s\t%s\t%s\n", p.Number, p.Start, p.Size,
						units.Bytes(int64(p.Size)*int64(l.LogicalSectorSize)), p.Type, name)
				}
				tw.Flush()
			}
			fmt.Fprintln(w, "extents")
			for _, e := range m.Extents {
				fmt.Fprintf(w, "  %-10s offset %d length %d\n", e.Kind, e.Offset, e.Length)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the manifest and identity as JSON")
	cmd.Flags().StringArrayVar(&ca, "ca", nil, "PEM file of a certificate authority to trust for https:// besides the system's, such as a lab's own CA (repeatable)")
	return cmd
}
