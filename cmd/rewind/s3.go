package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-bmr/rewind/snapshot"
)

func newS3Cmd(a *app) *cobra.Command {
	s3 := &cobra.Command{
		Use:   "s3",
		Short: "Object-store helpers for s3:// snapshots",
	}
	s3.AddCommand(newS3PresignCmd(a))
	return s3
}

func newS3PresignCmd(a *app) *cobra.Command {
	var (
		expires time.Duration
		trust   []string
	)
	cmd := &cobra.Command{
		Use:   "presign s3://BUCKET/PREFIX/NAME... [--expires 72h]",
		Short: "Print pre-signed GET URLs of snapshots for a plan's [s3.presigned] table",
		Long: `Presign opens each snapshot (with the credential of the host: the AWS
environment or --s3-profile), checks that it is complete, and prints on
standard output a TOML table [s3.presigned] with a pre-signed GET URL for
its manifest, its signature and every segment. Paste it into a plan: the
rescue environment then reads those snapshots with no credential in the
image at all.

Anyone who holds the URLs can read those objects (and nothing else) until
they expire: at most 7 days (--expires, default 72h). Serve the plan only
to the lab network, and make new URLs for each re-imaging run.`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if expires < time.Minute || expires > snapshot.MaxPresignExpiry {
				return usageError{fmt.Errorf("--expires %s: pre-signed URLs are valid from 1m to %s", expires, snapshot.MaxPresignExpiry)}
			}
			keys, err := loadTrust(trust)
			if err != nil {
				return err
			}
			all := map[string]string{}
			for _, loc := range argv {
				if !snapshot.IsS3(loc) {
					return usageError{fmt.Errorf("%s: presign takes s3:// locations", loc)}
				}
				opts, err := openOptions(a, loc, keys, nil)
				if err != nil {
					return err
				}
				snap, err := snapshot.Open(cmd.Context(), loc, opts)
				if err != nil {
					return err
				}
				urls, err := snapshot.PresignS3(loc, *opts.S3, snapshot.SnapshotFiles(snap.Manifest, snap.Signed), expires)
				snap.Close()
				if err != nil {
					return err
				}
				for k, v := range urls {
					all[k] = v
				}
			}
			// Only the sub-table: it merges with a plan's own [s3].
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "# pre-signed GET URLs made by rewind s3 presign, valid until %s\n[s3.presigned]\n",
				time.Now().Add(expires).UTC().Format(time.RFC3339))
			for _, k := range slices.Sorted(maps.Keys(all)) {
				fmt.Fprintf(w, "%s = %s\n", strconv.Quote(k), strconv.Quote(all[k])) // ASCII: a TOML basic string
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d URLs for %d snapshot(s), valid for %s: whoever holds them can read those objects until then\n", len(all), len(argv), expires)
			return nil
		},
	}
	cmd.Flags().DurationVar(&expires, "expires", 72*time.Hour, "how long the URLs are valid (1m to 168h)")
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "public key file; each snapshot must be signed by it (repeatable)")
	return cmd
}
