package main

import (
	"cmp"
	"fmt"
	"net"
	"os"

	"github.com/rewind-bmr/rewind/rescue"
	"github.com/rewind-bmr/rewind/upload"
	"github.com/spf13/cobra"
)

func newServeCmd(a *app) *cobra.Command {
	var listen string
	var cfg rescue.LabServerConfig
	cmd := &cobra.Command{
		Use:   "serve DIR",
		Short: "Serve snapshots (and rescue media files) over HTTP with Range support",
		Long: `Serve makes the files under DIR available over HTTP, with the Range requests
restores use to fetch chunks and to resume after a dropped connection. A
snapshot in DIR/pc1 is restored from http://HOST:PORT/pc1. Nothing outside
DIR is served (a symbolic link leading out is not followed), nor dotfiles,
*.key files or private keys; directories are listed only with --list.

It also receives the reports of rescue environments: a plan with
[report] url = "http://HOST:PORT/reports/" and token = "..." sends progress
while it restores and its final report; http://HOST:PORT/reports/ shows every
machine's latest state (reloading itself), and final reports are kept in
DIR/reports/. Reports need the lab's token, read from the file given with
--report-token (kept outside DIR); without one, reports are refused unless
--insecure-reports accepts them from anyone who reaches the server.

It also receives snapshots that rescue environments capture (a plan entry
with action = "capture" and snapshot = "http://HOST:PORT/snapshots/pc1")
when started with --upload-token FILE: the plan's [upload] token must match
it (a separate token from the report token: a stick that only reports
cannot publish snapshots). Every chunk is checked against its hash as it
arrives; a snapshot appears only when complete, as DIR/snapshots/pc1/<time>
with DIR/snapshots/pc1/latest naming the newest, and only the last --keep
generations stay. An existing name gets a new generation only when the
plan says overwrite = true. With --sign KEY (a private key from 'rewind key
generate', kept outside DIR), the server signs every snapshot it accepts:
no private key travels on a stick. Restores read
http://HOST:PORT/snapshots/pc1/latest (one generation, even if a new one
is published meanwhile). See docs/upload.md.`,
		Example: `  openssl rand -hex 32 > /etc/rewind/report-token && chmod 600 /etc/rewind/report-token
  openssl rand -hex 32 > /etc/rewind/upload-token && chmod 600 /etc/rewind/upload-token
  rewind serve /srv/snapshots --listen 0.0.0.0:8080 --report-token /etc/rewind/report-token \
      --upload-token /etc/rewind/upload-token --sign /etc/rewind/lab.key --keep 3`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if fi, err := os.Stat(argv[0]); err != nil || !fi.IsDir() {
				return fmt.Errorf("serve: %s is not a directory", argv[0])
			}
			if cmd.Flags().Changed("keep") && cfg.Keep < 1 {
				return fmt.Errorf("serve: --keep %d: keep at least one generation", cfg.Keep)
			}
			cfg.Log = a.log
			srv, err := rescue.NewLabServer(argv[0], cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("serve: listen on %s: %w", listen, err)
			}
			go func() {
				<-cmd.Context().Done()
				srv.Close()
			}()
			reports := "with the token in " + cfg.TokenFile
			switch {
			case cfg.InsecureReports:
				reports = "from anyone, without a token (--insecure-reports)"
			case cfg.TokenFile == "":
				reports = "refused: no --report-token"
			}
			uploads := "uploads off: no --upload-token"
			if cfg.UploadTokenFile != "" {
				uploads = fmt.Sprintf("uploads with the token in %s, keeping %d generations", cfg.UploadTokenFile, cmp.Or(cfg.Keep, upload.DefaultKeep))
				if cfg.SignKeyFile != "" {
					uploads += ", signed with " + cfg.SignKeyFile
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "serving %s on http://%s/ (machines' reports: http://%s/reports/, %s; %s)\n", argv[0], ln.Addr(), ln.Addr(), reports, uploads)
			return srv.Serve(ln)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address and port to listen on")
	cmd.Flags().StringVar(&cfg.TokenFile, "report-token", "", "file holding the lab's report token (outside DIR); reports must carry it")
	cmd.Flags().BoolVar(&cfg.InsecureReports, "insecure-reports", false, "accept reports without a token from anyone who reaches the server")
	cmd.Flags().BoolVar(&cfg.List, "list", false, "show directory listings")
	cmd.Flags().StringVar(&cfg.UploadTokenFile, "upload-token", "", "file holding the lab's upload token (outside DIR, not the report token); uploads must carry it, without it uploads are refused")
	cmd.Flags().StringVar(&cfg.SignKeyFile, "sign", "", "private key file (outside DIR) that signs every uploaded snapshot the server accepts")
	cmd.Flags().IntVar(&cfg.Keep, "keep", upload.DefaultKeep, "generations kept per uploaded snapshot name (the newest; the one latest names is never removed)")
	cmd.Flags().IntVar(&cfg.MaxMachines, "max-machines", rescue.DefaultMaxMachines, "machines the reports page tracks; beyond, the one heard from least recently is dropped")
	return cmd
}
