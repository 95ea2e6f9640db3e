package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/spf13/cobra"
)

func newServeCmd(a *app) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "serve DIR",
		Short: "Serve snapshots (and rescue media files) over HTTP with Range support",
		Long: `Serve makes every file under DIR available over HTTP, with the Range requests
restores use to fetch chunks and to resume after a dropped connection. A
snapshot in DIR/pc1 is restored from http://HOST:PORT/pc1.`,
		Example: `  rewind serve /srv/snapshots --listen 0.0.0.0:8080`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if fi, err := os.Stat(argv[0]); err != nil || !fi.IsDir() {
				return fmt.Errorf("serve: %s is not a directory", argv[0])
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("serve: listen on %s: %w", listen, err)
			}
			srv := &http.Server{Handler: snapshot.NewHandler(argv[0], a.log), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				srv.Close()
			}()
			fmt.Fprintf(cmd.OutOrStdout(), "serving %s on http://%s/\n", argv[0], ln.Addr())
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address and port to listen on")
	return cmd
}
