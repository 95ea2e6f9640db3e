package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"

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
		Long: `Inspect shows a snapshot's origin, format, partition layout and, per
extent (partition, whole disk or boot area), its file system, how it was
captured ("used blocks": only what the file system uses was stored; "header
only": a swap area, of which only the header page was stored; "whole"
with the reason when a recognised file system was stored whole), its size,
the bytes stored, the free bytes skipped and the compressed size. --json
prints the same per extent under "extents", with the manifest.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			opts, err := openOptions(a, argv[0], nil, ca)
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
					Extents  []extentSummary    `json:"extents"`
					Manifest *snapshot.Manifest `json:"manifest"`
				}{snap.ID, snap.Signed, summarizeExtents(m), m})
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
			fmt.Fprintf(w, "captured   %s from %s on %s\n", m.Created.Format("2006-01-02 15:04:05 MST"), shown(m.Origin.Path), shown(m.Origin.Hostname))
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
						units.Bytes(int64(p.Size)*int64(l.LogicalSectorSize)), shown(p.Type), shown(name))
				}
				tw.Flush()
				for _, n := range l.Notes {
					fmt.Fprintf(w, "note       %s\n", shown(n))
				}
			}
			fmt.Fprintln(w, "extents")
			printExtents(w, summarizeExtents(m), "  ")
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the manifest and identity as JSON")
	cmd.Flags().StringArrayVar(&ca, "ca", nil, "PEM file of a certificate authority to trust for https:// besides the system's, such as a lab's own CA (repeatable)")
	return cmd
}

// extentSummary is what capture's summary and inspect say of one extent
// (or, for boot areas, of all of them together).
type extentSummary struct {
	Kind      string `json:"kind"`
	Partition int    `json:"partition,omitempty"`
	Count     int    `json:"count"` // extents summed up in this row (boot areas), else 1
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
	// FS is the file system capture read or recognised, else the one the
	// layout records for the partition.
	FS string `json:"fs,omitempty"`
	// Capture is "used" (only the blocks the file system uses are
	// stored) or "whole".
	Capture string `json:"capture"`
	// Why says why a recognised file system was stored whole.
	Why          string `json:"why,omitempty"`
	StoredBytes  int64  `json:"stored_bytes"`  // raw bytes the chunks hold
	SkippedBytes int64  `json:"skipped_bytes"` // unused: neither read nor stored
	FrameBytes   int64  `json:"frame_bytes"`   // the chunks' compressed frames
}

// summarizeExtents sums up each extent of m: one row per partition (or
// whole disk), one for all boot areas.
func summarizeExtents(m *snapshot.Manifest) []extentSummary {
	fsOf := map[int]string{}
	if m.Layout != nil {
		for _, p := range m.Layout.Partitions {
			fsOf[p.Number] = p.FSType
		}
	}
	var rows []extentSummary
	boot := extentSummary{Kind: snapshot.ExtentBootArea, Capture: "whole", Offset: -1}
	c := 0
	for _, e := range m.Extents {
		r := extentSummary{Kind: e.Kind, Partition: e.Partition, Count: 1, Offset: e.Offset, Length: e.Length,
			FS: e.FS, Capture: "whole", Why: e.Note, SkippedBytes: e.UnusedBytes()}
		if e.Capture == snapshot.CaptureUsed {
			r.Capture = "used"
		}
		if r.FS == "" {
			r.FS = fsOf[e.Partition]
		}
		for ; c < len(m.Chunks) && m.Chunks[c].Offset < e.Offset+e.Length; c++ {
			r.StoredBytes += m.Chunks[c].Length
			r.FrameBytes += m.Chunks[c].FrameLength
		}
		if e.Kind == snapshot.ExtentBootArea {
			if boot.Offset < 0 {
				boot.Offset = e.Offset
			}
			boot.Count++
			boot.Length += r.Length
			boot.StoredBytes += r.StoredBytes
			boot.FrameBytes += r.FrameBytes
			continue
		}
		rows = append(rows, r)
	}
	if boot.Count > 0 {
		rows = append(rows, boot)
	}
	return rows
}

// printExtents prints the rows as a table with a total line, each line
// starting with indent.
func printExtents(w io.Writer, rows []extentSummary, indent string) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "%s#\tfs\tsize\tstored\tskipped\tcompressed\tcapture\n", indent)
	var total extentSummary
	for _, r := range rows {
		name := fmt.Sprint(r.Partition)
		switch r.Kind {
		case snapshot.ExtentDisk:
			name = "disk"
		case snapshot.ExtentBootArea:
			name = fmt.Sprintf("boot areas (%d)", r.Count)
		}
		fs := shown(r.FS)
		if fs == "" {
			fs = "-"
		}
		how := "used blocks"
		if r.FS == "swap" {
			how = "header only"
		}
		if r.Capture != "used" {
			how = "whole"
			if r.Why != "" {
				how += " (" + shown(r.Why) + ")"
			}
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", indent, name, fs, units.Bytes(r.Length),
			units.Bytes(r.StoredBytes), units.Bytes(r.SkippedBytes), units.Bytes(r.FrameBytes), how)
		total.Length += r.Length
		total.StoredBytes += r.StoredBytes
		total.SkippedBytes += r.SkippedBytes
		total.FrameBytes += r.FrameBytes
	}
	fmt.Fprintf(tw, "%stotal\t\t%s\t%s\t%s\t%s\t\n", indent, units.Bytes(total.Length),
		units.Bytes(total.StoredBytes), units.Bytes(total.SkippedBytes), units.Bytes(total.FrameBytes))
	tw.Flush()
}

// shown makes text from a manifest (a hostname, a partition name, a note)
// safe to print on a terminal: every rune that is not printable (C0 and
// C1 controls such as ESC and CSI, bidirectional overrides, invalid
// UTF-8) is written as a Go escape (\x1b, \u202e), so a snapshot cannot
// send the operator's terminal commands or disguise the text after it.
func shown(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == unicode.ReplacementChar }) < 0 {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == unicode.ReplacementChar && strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteString(`\ufffd`)
		case r == unicode.ReplacementChar:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
