package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rewind-bmr/rewind/diskrestore"
	"github.com/rewind-bmr/rewind/internal/units"
	"github.com/rewind-bmr/rewind/restore"
	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/rewind-bmr/rewind/upload"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

func newCaptureCmd(a *app) *cobra.Command {
	var (
		out         string
		chunkSize   = byteSize(snapshot.DefaultChunkSize)
		segmentSize = byteSize(snapshot.DefaultSegmentSize)
		sectorSize  int
		jobs        int
		signKey     string
		progress    string
		raw         bool
		tokenFile   string
		overwrite   bool
		ca          []string
	)
	cmd := &cobra.Command{
		Use:   "capture SOURCE -o DIR|URL",
		Short: "Capture a disk or disk image into a snapshot directory, or upload it to the lab server",
		Long: `Capture reads SOURCE (a block device or a disk image file) and writes a
snapshot into DIR, which must be new or empty. The partition table is recorded
in the manifest and recreated at restore; the partitions and any non-zero boot
areas (MBR boot code, the gap GRUB uses) are cut into chunks, each stored as one
independent LZ4 frame. All-zero chunks are detected and stored as tiny frames;
the holes of a sparse image file are not even read.

Used blocks: capture reads the allocation map of each partition's file system
(ext2/3/4, FAT12/16/32, NTFS) and reads and stores only the blocks it uses; of
a swap area only its header (signature, UUID, label). Free blocks are neither
read nor stored and restore as zeros, so deleted files do not come back (short
free gaps between used blocks are stored, as zeros). Other partitions (LVM,
LUKS, unknown file systems) are stored whole, and so is a file system whose
map is damaged or uses a feature Rewind does not read: the summary says which,
and why. A file system that was not cleanly unmounted (an ext4 journal that
needs recovery, an NTFS volume marked dirty, a FAT dirty bit) is refused,
since its map may not describe its data: check it (e2fsck, fsck.vfat, ntfsfix
or chkdsk), mount and unmount it cleanly, or boot the machine and shut it down
properly, then capture again. --raw reads no map and captures every byte of
every partition, as an image.

Upload: with -o http(s)://HOST/NAME (a location on 'rewind serve', which must
run with --upload-token), the snapshot goes to the lab server instead of a
directory: --upload-token FILE holds the same token as the server's. The
server checks every chunk's hash as it arrives and publishes the snapshot only
when it is complete, as NAME/<generation> (the capture's start time, UTC) with
NAME/latest pointing at it; restore from either URL. A NAME that exists on the
server is refused unless --overwrite adds a generation (the server keeps the
last few, rewind serve --keep). A wrong token or an existing NAME fails before
the disk is read; a dropped connection is resumed where it stopped.

Capture from a disk that is not in use (unmounted, or a snapshot of a volume):
a mounted file system that changes while it is read is captured inconsistent,
so a block device with a file system mounted read-write or active swap is
refused; read-only mounts are allowed. To capture the disk a machine runs
from, boot the rescue medium on it and pick "Capture this machine" in the
boot menu (or boot with rewind.action=capture), or capture an LVM or
file-system snapshot of the volume; a disk this system does not let you read
(permission denied, operation not permitted, busy) is explained the same way.`,
		Example: `  rewind capture /dev/sda -o /mnt/backup/pc1
  rewind capture /dev/sda -o http://lab:8080/snapshots/pc1 --upload-token /etc/rewind/upload-token
  rewind capture disk.img -o snap --chunk-size 8MiB --sign lab.key
  rewind capture /dev/sdb -o /mnt/backup/forensic --raw`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if out == "" {
				return usageError{errors.New("capture: the output directory is required: -o DIR (or -o http(s)://HOST/NAME to upload)")}
			}
			var (
				up  *upload.Client
				s3o *snapshot.S3Options
				err error
			)
			if snapshot.IsS3(out) {
				if err := snapshot.CheckLocation(out); err != nil {
					return usageError{fmt.Errorf("capture -o: %w", err)}
				}
				if tokenFile != "" || overwrite {
					return usageError{fmt.Errorf("capture -o %s: --upload-token and --overwrite are for rewind serve (-o http(s)://HOST/NAME); an s3:// capture is signed with the S3 credential, and its NAME must not hold a snapshot yet", out)}
				}
				o, err := a.s3.options(a.log.Warn)
				if err != nil {
					return err
				}
				s3o = &o
			} else if up, err = newUploadClient(a, out, tokenFile, overwrite, ca); err != nil {
				return err
			}
			src := argv[0]
			if err := diskrestore.CheckCaptureSource(src); err != nil {
				return fmt.Errorf("capture: %w", err)
			}
			f, err := os.Open(src)
			if err != nil {
				return fmt.Errorf("capture: %w", diskrestore.ExplainOpenError(src, err))
			}
			defer f.Close()
			size, sector, err := sourceGeometry(f, sectorSize)
			if err != nil {
				return err
			}
			if up != nil {
				// Before the disk is read: a wrong token or a name that
				// exists fails here.
				if err := up.Open(cmd.Context()); err != nil {
					return fmt.Errorf("capture %s: %w", src, uploadHint(err, tokenFile, overwrite))
				}
				defer up.Abort() // a no-op once published
			}
			// Capture reads front to back: ask the kernel for deep readahead.
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
			opts, err := diskrestore.PrepareCapture(f, size, sector, raw)
			if err != nil {
				return err
			}
			opts.ChunkSize, opts.SegmentSize, opts.Jobs = int64(chunkSize), int64(segmentSize), jobs
			opts.Origin = snapshot.Origin{Path: src}
			opts.Origin.Hostname, _ = os.Hostname()
			if signKey != "" {
				if opts.SignKey, err = snapshot.LoadPrivateKey(signKey); err != nil {
					return err
				}
			}
			pp, err := restore.NewProgressPrinter(os.Stderr, progress, term.IsTerminal(int(os.Stderr.Fd())), "capture")
			if err != nil {
				return usageError{err}
			}
			start := time.Now()
			opts.Progress = func(done, total int64) {
				pp.Update(restore.Progress{Done: done, Total: total, Elapsed: time.Since(start), Final: done == total})
			}
			if s3o != nil {
				return captureToS3(cmd, a, f, src, out, *s3o, ca, opts, start)
			}
			if up != nil {
				m, err := snapshot.CaptureTo(cmd.Context(), f, up, opts)
				if err != nil {
					return fmt.Errorf("capture %s: %w; nothing was published", src, uploadHint(err, tokenFile, overwrite))
				}
				printCaptureSummary(cmd, m, up.Published(), time.Since(start))
				fmt.Fprintf(cmd.OutOrStdout(), "  latest    %s/%s\n", up.String(), upload.Latest)
				return nil
			}
			m, err := snapshot.Capture(cmd.Context(), f, out, opts)
			if err != nil {
				return fmt.Errorf("capture %s: %w", src, err)
			}
			printCaptureSummary(cmd, m, out, time.Since(start))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "snapshot directory to create (must be new or empty), http(s)://HOST/NAME on rewind serve to upload to, or s3://BUCKET/PREFIX/NAME (see --s3-endpoint)")
	cmd.Flags().StringVar(&tokenFile, "upload-token", "", "file holding the lab's upload token (the one rewind serve --upload-token reads); needed with -o http(s)://")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "upload: add a new generation when NAME exists on the server (without it, an existing NAME is refused)")
	cmd.Flags().StringArrayVar(&ca, "ca", nil, "upload to https://: PEM file of a certificate authority to trust besides the system's, such as a lab's own CA (repeatable)")
	cmd.Flags().Var(&chunkSize, "chunk-size", "size of the pieces the disk is cut into")
	cmd.Flags().Var(&segmentSize, "segment-size", "largest data file; the 1GiB default fits FAT32 media")
	cmd.Flags().IntVar(&sectorSize, "sector-size", 0, "logical sector size of an image file (default: 4096 when its GPT or MBR only fits 4096-byte sectors, else 512; devices report their own)")
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 0, "compression workers (default: one per CPU)")
	cmd.Flags().StringVar(&signKey, "sign", "", "sign the manifest with this private key (see 'rewind key generate')")
	cmd.Flags().BoolVar(&raw, "raw", false, "capture every byte of every partition: read no file system's allocation map (also captures a file system that is not clean)")
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress display: auto (live on a terminal, else plain), live, plain, json or none")
	return cmd
}

// captureToS3 captures f to the s3:// location out. The destination is
// checked (credential, no snapshot there yet) before the disk is read.
func captureToS3(cmd *cobra.Command, a *app, f *os.File, src, out string, o snapshot.S3Options, ca []string, opts snapshot.CaptureOptions, start time.Time) error {
	so := snapshot.S3SinkOptions{SegmentSize: opts.SegmentSize, Log: s3Log(a)}
	if len(ca) > 0 {
		pool, err := snapshot.LoadCertPool(ca...)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		so.Transport = snapshot.NewHTTPClient(pool).Transport
	}
	sink, err := snapshot.NewS3Sink(cmd.Context(), out, o, so)
	if err != nil {
		return fmt.Errorf("capture %s: %w", src, err)
	}
	m, err := snapshot.CaptureTo(cmd.Context(), f, sink, opts)
	if err != nil {
		return fmt.Errorf("capture %s: %w; no snapshot was written to %s", src, err, out)
	}
	printCaptureSummary(cmd, m, out, time.Since(start))
	if sink.Resumed > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "  resumed   %s already in the store from an earlier run, %s sent\n", units.Bytes(sink.Resumed), units.Bytes(sink.Sent))
	}
	return nil
}

// s3Log shows retries and resumes without -v, like the upload client.
func s3Log(a *app) func(string, ...any) {
	return func(msg string, args ...any) {
		switch {
		case strings.HasPrefix(msg, "retrying"), strings.HasPrefix(msg, "the capture did not finish"):
			a.log.Warn(msg, args...)
		case strings.HasPrefix(msg, "resuming"):
			a.log.Info(msg, args...)
		default:
			a.log.Debug(msg, args...)
		}
	}
}

// newUploadClient checks the destination flags: nil for a directory, or
// the upload client for -o http(s)://HOST/NAME, with its token read from
// tokenFile. Nothing is sent yet.
func newUploadClient(a *app, out, tokenFile string, overwrite bool, ca []string) (*upload.Client, error) {
	if !strings.HasPrefix(out, "http://") && !strings.HasPrefix(out, "https://") {
		if err := snapshot.CheckLocation(out); err != nil {
			return nil, usageError{fmt.Errorf("capture -o: %w; give a directory, or http(s)://HOST/NAME on rewind serve", err)}
		}
		if tokenFile != "" || overwrite || len(ca) > 0 {
			return nil, usageError{fmt.Errorf("capture -o %s: --upload-token, --overwrite and --ca are for uploads (-o http(s)://HOST/NAME); a directory must be new or empty", out)}
		}
		return nil, nil
	}
	if tokenFile == "" {
		return nil, usageError{fmt.Errorf("capture -o %s: an upload needs the lab's upload token: --upload-token FILE (the file rewind serve --upload-token reads)", out)}
	}
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, fmt.Errorf("capture: --upload-token: %w; it must hold the lab's upload token, the same as the file rewind serve --upload-token reads", err)
	}
	tok, err := upload.ReadToken(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	opt := upload.ClientOptions{
		Token:     tok,
		Overwrite: overwrite,
		Log: func(format string, args ...any) {
			// A retry is shown without -v: the progress bar stands still
			// while the server is away (up to ten minutes).
			switch msg := fmt.Sprintf(format, args...); {
			case strings.Contains(format, "retrying"):
				a.log.Warn(msg)
			case strings.Contains(format, "resuming"):
				a.log.Info(msg)
			default:
				a.log.Debug(msg)
			}
		},
	}
	if len(ca) > 0 {
		pool, err := snapshot.LoadCertPool(ca...)
		if err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		opt.HTTP = snapshot.NewHTTPClient(pool)
	}
	c, err := upload.NewClient(out, opt)
	if err != nil {
		return nil, usageError{fmt.Errorf("capture -o: %w", err)}
	}
	return c, nil
}

// uploadHint adds what to do to the lab server's refusals that the user
// of the host CLI fixes with a flag (never a flag already given).
func uploadHint(err error, tokenFile string, overwrite bool) error {
	switch {
	case errors.Is(err, upload.ErrExists) && overwrite:
		return err // the server's reason says what to do; --overwrite was given
	case errors.Is(err, upload.ErrUnauthorized):
		return fmt.Errorf("%w; --upload-token %s must hold the token the server reads with rewind serve --upload-token", err, tokenFile)
	case errors.Is(err, upload.ErrExists):
		return fmt.Errorf("%w; pass --overwrite to add a new generation (the server keeps the last few), or capture under another name", err)
	case errors.Is(err, upload.ErrUploadsOff):
		return fmt.Errorf("%w; start rewind serve with --upload-token FILE", err)
	}
	return err
}

// sourceGeometry returns the size and logical sector size of a source.
func sourceGeometry(f *os.File, sectorFlag int) (size int64, sector int, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if fi.Mode().IsRegular() {
		// sectorFlag 0: ReadLayout finds a 4Kn image's sector size.
		if fi.Size() == 0 {
			return 0, 0, fmt.Errorf("source %s is empty", f.Name())
		}
		return fi.Size(), sectorFlag, nil
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return 0, 0, fmt.Errorf("source %s is neither a block device nor a regular file", f.Name())
	}
	if size, err = restore.DeviceSize(f); err != nil {
		return 0, 0, err
	}
	sector, err = unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, 0, fmt.Errorf("logical sector size of %s: %w", f.Name(), err)
	}
	return size, sector, nil
}

func printCaptureSummary(cmd *cobra.Command, m *snapshot.Manifest, dir string, took time.Duration) {
	w := cmd.OutOrStdout()
	zero := 0
	for _, c := range m.Chunks {
		if c.Zero {
			zero++
		}
	}
	table := "none (whole disk)"
	if m.Layout != nil && m.Layout.Table != "none" {
		table = fmt.Sprintf("%s, %d partitions", m.Layout.Table, len(m.Layout.Partitions))
	}
	fmt.Fprintf(w, "captured %s into %s in %s\n", m.Origin.Path, dir, took.Round(time.Millisecond))
	fmt.Fprintf(w, "  disk      %s (%d bytes), table %s\n", units.Bytes(m.DiskSize), m.DiskSize, table)
	fmt.Fprintf(w, "  data      %s in %d chunks (%d all-zero)\n", units.Bytes(m.DataBytes()), len(m.Chunks), zero)
	if skipped := m.UnusedBytes(); skipped > 0 {
		fmt.Fprintf(w, "  skipped   %s of free file-system blocks (neither read nor stored; restored as zeros)\n", units.Bytes(skipped))
	}
	fmt.Fprintf(w, "  stored    %s in %d segments\n", units.Bytes(m.StoredBytes()), len(m.Segments))
	printExtents(w, summarizeExtents(m), "  ")
	if m.Layout != nil {
		for _, n := range m.Layout.Notes {
			fmt.Fprintf(w, "  note      %s\n", shown(n))
		}
	}
}
