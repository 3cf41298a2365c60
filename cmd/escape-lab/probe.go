package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/probe"
	"github.com/spf13/cobra"
)

// probeCmd watches a redis service from the lab's client namespace, as its
// users would, until interrupted.
func probeCmd(root *string) *cobra.Command {
	var addr, out string
	var interval, timeout, dialTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Hold one connection to a redis service from the client namespace and report every outage (JSON lines)",
		Long: `probe connects from the lab's client namespace to a redis server, sends
INCR every --interval on one connection, and writes a JSON line for each
outage: its gap (last answered request before, first after), whether the
connection was reset, and whether the data survived. It runs until
SIGINT or SIGTERM, then writes a summary line.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			inv, err := lab.LoadInventory(c.Context(), *root)
			if err != nil {
				return err
			}
			w := os.Stdout
			if out != "" {
				f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			dial := func(ctx context.Context, a string) (net.Conn, error) {
				var nc net.Conn
				err := arp.Do(inv.Client.Netns, func() error {
					var d net.Dialer
					var err error
					nc, err = d.DialContext(ctx, "tcp4", a)
					return err
				})
				return nc, err
			}
			p, err := probe.New(addr, w, probe.WithInterval(interval), probe.WithTimeout(timeout),
				probe.WithDialTimeout(dialTimeout), probe.WithDialer(dial))
			if err != nil {
				return err
			}
			if err := p.Run(c.Context()); err != nil {
				return fmt.Errorf("probe %s: %w", addr, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "redis address host:port (required)")
	cmd.Flags().StringVar(&out, "out", "", "write the JSON lines here (default stdout)")
	cmd.Flags().DurationVar(&interval, "interval", 50*time.Millisecond, "time between requests")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long one request may wait (a migration freezes the service)")
	cmd.Flags().DurationVar(&dialTimeout, "dial-timeout", 250*time.Millisecond,
		"how long one connection attempt may take (a SYN lost while the address moves is retried on the next tick, not after TCP's 1 s backoff)")
	_ = cmd.MarkFlagRequired("addr")
	return cmd
}
