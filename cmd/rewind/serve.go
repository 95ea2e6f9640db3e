package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rewind-bmr/rewind/rescue"
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
snapshot in DIR/pc1 is restored from http://HOST:PORT/pc1.

It also receives the reports of rescue environments: a plan with
[report] url = "http://HOST:PORT/reports/" sends progress while it restores
and its final report; http://HOST:PORT/reports/ shows every machine's latest
state (reloading itself), and final reports are kept in DIR/reports/.`,
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
			reports, err := rescue.NewReportServer(filepath.Join(argv[0], "reports"))
			if err != nil {
				return err
			}
			mux := http.NewServeMux()
			mux.Handle("/reports/", http.StripPrefix("/reports", reports))
			mux.Handle("/", snapshot.NewHandler(argv[0], a.log))
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				srv.Close()
			}()
			fmt.Fprintf(cmd.OutOrStdout(), "serving %s on http://%s/ (machines' reports: http://%s/reports/)\n", argv[0], ln.Addr(), ln.Addr())
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address and port to listen on")
	return cmd
}
