package main

import (
	"fmt"

	"github.com/rewind-bmr/rewind/snapshot"
	"github.com/spf13/cobra"
)

func newKeyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the ed25519 keys that sign snapshots",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "generate NAME",
		Short: "Write a new key pair: NAME.key (private, mode 0600) and NAME.pub",
		Long: `Generate writes NAME.key, the private key that 'rewind capture --sign' uses,
and NAME.pub, the public key that 'rewind restore --trust' and rescue media
check snapshots against. Keep NAME.key off the machines you restore.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			priv, pub, err := snapshot.GenerateKey(argv[0])
			if err != nil {
				return err
			}
			k, err := snapshot.LoadPublicKey(pub)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (private) and %s (public), key id %s\n", priv, pub, snapshot.KeyID(k))
			return nil
		},
	})
	return cmd
}
