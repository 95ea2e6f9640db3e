package main

import (
	"fmt"
	"os"
	"time"

	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newVerifyCmd(a *app) *cobra.Command {
	var (
		trust    []string
		ca       []string
		jobs     int
		progress string
	)
	cmd := &cobra.Command{
		Use:   "verify SNAPSHOT",
		Short: "Check a snapshot's signature and every chunk without writing anything",
		Long: `Verify reads every chunk of SNAPSHOT (a directory or an http(s):// URL), checks
its SHA-256 against the manifest, decompresses it and checks its length; with
--trust it first checks the manifest's signature. It writes nothing.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			keys, err := loadTrust(trust)
			if err != nil {
				return err
			}
			opts, err := openOptions(a, argv[0], keys, ca)
			if err != nil {
				return err
			}
			snap, err := snapshot.Open(cmd.Context(), argv[0], opts)
			if err != nil {
				return err
			}
			defer snap.Close()
			pp, err := restore.NewProgressPrinter(os.Stderr, progress, term.IsTerminal(int(os.Stderr.Fd())), "verify")
			if err != nil {
				return usageError{err}
			}
			res, err := restore.Verify(cmd.Context(), snap, restore.Options{Jobs: jobs, Progress: pp.Update, Log: a.log.Warn})
			if err != nil {
				return fmt.Errorf("verify %s: %w", argv[0], err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "snapshot %s is intact: %d chunks, %s, checked in %s\n", argv[0], res.Chunks,
				units.Bytes(res.BytesWritten+res.BytesZeroed), res.Duration.Round(time.Millisecond))
			fmt.Fprintf(w, "  id %s%s\n", snap.ID, signedNote(snap))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "public key file; the snapshot must be signed by it (repeatable)")
	cmd.Flags().StringArrayVar(&ca, "ca", nil, "PEM file of a certificate authority to trust for https:// besides the system's, such as a lab's own CA (repeatable)")
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 0, "decompress workers (default: one per CPU)")
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress display: auto (live on a terminal, else plain), live, plain, json or none")
	return cmd
}
