package main

import (
	"bufio"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/machine"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newRestoreCmd(a *app) *cobra.Command {
	var (
		jobs     int
		trust    []string
		ca       []string
		yes      bool
		progress string
		growLast bool
		delta    bool
		wipe     string
	)
	cmd := &cobra.Command{
		Use:   "restore SNAPSHOT TARGET",
		Short: "Restore a snapshot onto a disk or image file",
		Long: `Restore writes SNAPSHOT (a directory or an http(s):// URL) onto TARGET (a block
device or an image file). It recreates the partition table with the original
disk GUID or MBR signature, then streams every chunk: fetched, verified against
its SHA-256, decompressed on several workers and written at its offset. The
target is flushed before success is reported.

The old partition table and signatures are made unusable first, the data and
the zeros for every byte the snapshot does not cover (--wipe) follow, and the
partition table is written last: until the restore succeeds TARGET has none.

A block device must not be mounted and must be large enough. An image file is
created (or emptied) at the snapshot's disk size, sparse; a snapshot that does
not fit, or a TARGET that is one of the snapshot's own files, is refused
before the file is touched. Everything on TARGET is lost: on
a terminal you are asked to confirm; elsewhere pass --yes.`,
		Example: `  rewind restore /mnt/backup/pc1 /dev/sdb
  rewind restore http://10.0.0.5:8080/pc1 /dev/nvme0n1 --trust lab.pub --yes
  rewind restore snap disk.img --progress json`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ctx := cmd.Context()
			wipeMode, err := machine.ParseWipe(wipe)
			if err != nil {
				return usageError{fmt.Errorf("--wipe: %w", err)}
			}
			keys, err := loadTrust(trust)
			if err != nil {
				return err
			}
			opts, err := openOptions(a, argv[0], keys, ca)
			if err != nil {
				return err
			}
			snap, err := snapshot.Open(ctx, argv[0], opts)
			if err != nil {
				return err
			}
			defer snap.Close()
			m := snap.Manifest
			// Refuse a layout restore cannot write before the target is opened
			// (an image target would be emptied first).
			if err := diskrestore.CheckRestorable(m.Layout, m.Extents); err != nil {
				return fmt.Errorf("%s: %w", snap.Location, err)
			}
			path := argv[1]
			if own := snap.OwnFile(path); own != "" {
				return fmt.Errorf("target %s is part of the snapshot being restored (its %s): restoring onto it would destroy the snapshot; choose another target", path, own)
			}
			if _, err := os.Stat(path); err == nil {
				if err := diskrestore.CheckNotMounted(path); err != nil {
					return err
				}
			}
			if !yes {
				if err := confirm(cmd, path, m); err != nil {
					return err
				}
			}
			// Everything is checked (layout fit, table encoding) before
			// the target is opened: a refused snapshot leaves an existing
			// image file as it was.
			t, err := restore.OpenTargetChecked(path, m.DiskSize, delta, func(size int64, sectorSize int) error {
				return machine.Check(m, size, sectorSize, growLast)
			})
			if err != nil {
				return err
			}
			defer t.File.Close()
			pp, err := restore.NewProgressPrinter(os.Stderr, progress, term.IsTerminal(int(os.Stderr.Fd())), "restore")
			if err != nil {
				return usageError{err}
			}
			applied, err := machine.Apply(ctx, snap, t.File, machine.ApplyOptions{
				GrowLast:    growLast,
				FreshTarget: t.Fresh,
				Delta:       delta,
				Wipe:        wipeMode,
				Jobs:        jobs,
				Progress:    pp.Update,
				Log:         a.log.Warn,
			})
			if err != nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("interrupted: %w", err)
				}
				return fmt.Errorf("restore onto %s failed: %w", path, err)
			}
			printRestoreSummary(cmd.OutOrStdout(), snap, path, applied)
			return nil
		},
	}
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 0, "decompress workers (default: one per CPU)")
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "public key file; the snapshot must be signed by it (repeatable)")
	cmd.Flags().StringArrayVar(&ca, "ca", nil, "PEM file of a certificate authority to trust for https:// besides the system's, such as a lab's own CA (repeatable)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask before overwriting TARGET")
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress display: auto (live on a terminal, else plain), live, plain, json or none")
	cmd.Flags().BoolVar(&delta, "delta", false, "read TARGET first and write only the chunks that differ (re-imaging a disk that holds most of the snapshot)")
	cmd.Flags().StringVar(&wipe, "wipe", machine.WipeAuto, "bytes of TARGET the snapshot does not cover: full (zero them all), signatures (zero the first and last MiB of each range and of old partitions), auto (full when the device zeroes cheaply or little is uncovered)")
	cmd.Flags().BoolVar(&growLast, "grow-last", false, "on a larger disk, extend the last partition to the end (its file system is not grown)")
	return cmd
}

func loadTrust(files []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range files {
		k, err := snapshot.LoadPublicKey(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// openOptions returns the options of snapshot.Open for location, --trust
// keys and --ca files (and, for s3://, the --s3-* flags and the AWS
// environment).
func openOptions(a *app, location string, keys []ed25519.PublicKey, ca []string) (snapshot.OpenOptions, error) {
	o := snapshot.OpenOptions{Trust: keys, Log: a.log.Warn}
	if len(ca) > 0 {
		pool, err := snapshot.LoadCertPool(ca...)
		if err != nil {
			return o, err
		}
		o.HTTPClient = snapshot.NewHTTPClient(pool)
	}
	if snapshot.IsS3(location) {
		s3, err := a.s3.options(a.log.Warn)
		if err != nil {
			return o, err
		}
		o.S3 = &s3
	}
	return o, nil
}

// confirm asks on a terminal before TARGET is overwritten; it refuses when
// there is no terminal to ask on. A target file that does not exist yet
// needs no confirmation.
func confirm(cmd *cobra.Command, path string, m *snapshot.Manifest) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	in, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return usageError{fmt.Errorf("restore would overwrite everything on %s and there is no terminal to confirm on: pass --yes", path)}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "Restore snapshot of %s (%s) onto %s?\nALL DATA ON %s WILL BE LOST. Type yes to continue: ",
		shown(m.Origin.Path), units.Bytes(m.DiskSize), path, path)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	if strings.TrimSpace(strings.ToLower(answer)) != "yes" {
		return errors.New("restore cancelled: nothing was written")
	}
	return nil
}

func printRestoreSummary(w io.Writer, snap *snapshot.Snapshot, path string, applied *machine.Applied) {
	res := applied.Restore
	secs := res.Duration.Seconds()
	fmt.Fprintf(w, "restored %s onto %s in %s\n", snap.Location, path, res.Duration.Round(time.Millisecond))
	fmt.Fprintf(w, "  snapshot  %s%s\n", snap.ID[:16], signedNote(snap))
	if applied.LayoutWritten {
		fmt.Fprintf(w, "  layout    %s partition table with %d partitions\n", applied.Table, applied.Partitions)
	}
	for _, n := range applied.Notes {
		fmt.Fprintf(w, "  note      %s\n", shown(n))
	}
	zeroed := ""
	if res.ZeroMethod != "" {
		zeroed = " (" + res.ZeroMethod + ")"
	}
	fmt.Fprintf(w, "  written   %s in %d chunks, plus %s of zero chunks%s\n",
		units.Bytes(res.BytesWritten), res.Chunks-res.ZeroChunks, units.Bytes(res.BytesZeroed), zeroed)
	if secs > 0 {
		fmt.Fprintf(w, "  speed     %.1f MB/s (disk bytes restored per second)\n", float64(res.BytesWritten+res.BytesZeroed)/secs/1e6)
	}
	if res.BytesSkipped > 0 {
		fmt.Fprintf(w, "  delta     %s already on the target, not written\n", units.Bytes(res.BytesSkipped))
	}
	printWipe(w, applied.Wipe)
	if res.Refetched > 0 {
		fmt.Fprintf(w, "  re-read   %d chunks failed their first hash check and verified on the second read\n", res.Refetched)
	}
}

// printWipe says what became of the bytes the snapshot does not cover.
func printWipe(w io.Writer, wp *machine.Wipe) {
	if wp == nil || wp.Uncovered == 0 {
		return
	}
	took := time.Duration(wp.Seconds * float64(time.Second)).Round(time.Millisecond)
	fmt.Fprintf(w, "  wipe      %s: %s of %s not in the snapshot zeroed by %s in %s (%s)\n",
		wp.Mode, units.Bytes(wp.Bytes), units.Bytes(wp.Uncovered), wp.Method, took, wp.Why)
	if wp.Unused > 0 {
		left := "all zeroed"
		if wp.UnusedZeroed < wp.Unused {
			left = fmt.Sprintf("%s zeroed, %s left with the old disk's bytes (--wipe %s)", units.Bytes(wp.UnusedZeroed), units.Bytes(wp.Unused-wp.UnusedZeroed), wp.Mode)
		}
		fmt.Fprintf(w, "  unused    %s of file-system free space not stored in the snapshot (of the above): %s\n", units.Bytes(wp.Unused), left)
	}
	if wp.OldRemains {
		fmt.Fprintf(w, "  note      the other %s of free space still holds the old disk's bytes; --wipe full zeroes them all\n",
			units.Bytes(wp.Uncovered-wp.Bytes))
	}
}

func signedNote(snap *snapshot.Snapshot) string {
	switch {
	case snap.Verified:
		return ", signature verified (key " + snap.KeyID + ")"
	case snap.Signed:
		return ", signed (signature not checked: pass --trust)"
	default:
		return ", unsigned"
	}
}
