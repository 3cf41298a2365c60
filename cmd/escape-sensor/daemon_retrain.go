package main

import (
	"context"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/sensor/control"
	"github.com/spf13/cobra"
)

func newRetrainCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "retrain IDENTITY",
		Short: "Make one container identity learn its profile again (root only)",
		Long: `retrain asks the running daemon, over its root-only control socket, to drop
IDENTITY's profile and learn it again from its next epoch, calibrating its
threshold anew: after a release or a configuration change, whose new normal
shows as a burst of anomalies. IDENTITY is as top and the events name it
(namespace/id, or the escape.mtd/identity label).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRetrain(cmd.Context(), socket, args[0], cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&socket, "socket", control.DefaultPath, "the daemon's control socket")
	return cmd
}

func runRetrain(ctx context.Context, socket, identity string, out interface{ Write([]byte) (int, error) }) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cli, err := control.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer cli.Close()
	resp, err := cli.Do(ctx, control.Request{Op: "retrain", Identity: identity})
	if err != nil {
		return fmt.Errorf("retrain %s: %w", identity, err)
	}
	fmt.Fprintf(out, "%s: %s learns again from its next epoch\n", resp.Host, identity)
	return nil
}
