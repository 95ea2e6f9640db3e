// Command rewind is Rewind's host CLI: capture a disk into a snapshot,
// restore, verify and inspect snapshots, manage signing keys, serve
// snapshots over HTTP, list disks and build rescue media.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// usageError marks errors that exit with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// app carries what every command shares: the logger and the output streams.
type app struct {
	log     *slog.Logger
	verbose bool
	s3      s3Flags
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "rewind:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

func newRootCmd() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "rewind",
		Short: "Capture disks into snapshots and bring machines back from them",
		Long: `Rewind captures a machine's disk into a snapshot (a directory of plain
LZ4 segments and a signed manifest) and restores it exactly: partition table,
disk GUID or MBR signature, boot areas and every partition's bytes.

Exit status: 0 success, 1 failure, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			level := slog.LevelInfo
			if a.verbose {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		},
	}
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "log details such as retried requests")
	a.s3.register(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newCaptureCmd(a),
		newRestoreCmd(a),
		newVerifyCmd(a),
		newInspectCmd(a),
		newKeyCmd(a),
		newServeCmd(a),
		newDisksCmd(),
		newMediaCmd(),
		newUSBCmd(a),
		newDrillCmd(),
		newS3Cmd(a),
	)
	return root
}

// args wraps a cobra argument check so that its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{fmt.Errorf("%s: %w (see 'rewind %s --help')", cmd.CommandPath(), err, cmd.Name())}
		}
		return nil
	}
}
