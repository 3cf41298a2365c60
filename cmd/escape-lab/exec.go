package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/escape-mtd/escape/tools/lab"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

// exitError carries a command's exit status out of `escape-lab exec`.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// execCmd runs a command on one lab machine, in its namespaces.
func execCmd(root *string) *cobra.Command {
	return &cobra.Command{
		Use:   "exec WHERE -- COMMAND [ARG...]",
		Short: "Run a command on a lab machine (a host's name, plane or client), as if logged in there",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			inv, err := lab.LoadInventory(c.Context(), *root)
			if err != nil {
				return err
			}
			cmd := lab.Command(c.Context(), inv, args[0], args[1], args[2:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			err = cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitError(ee.ExitCode())
			}
			return err
		},
	}
}

// kubectlCmd runs kubectl as the lab's admin, inside the Kubernetes
// node's host (the apiserver listens on the lab's fabric only).
func kubectlCmd(root *string) *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl [ARG...]",
		Short:              "Run kubectl against the lab's Kubernetes (up --kubernetes), as its admin",
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error {
			inv, err := lab.LoadInventory(c.Context(), *root)
			if err != nil {
				return err
			}
			cmd := lab.Kubectl(c.Context(), inv, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			err = cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitError(ee.ExitCode())
			}
			return err
		},
	}
}

// faultCmds are the fault controls: each takes a host's name.
func faultCmds(root *string, logger func() *zap.Logger) []*cobra.Command {
	type fault struct {
		use, short string
		do         func(c *cobra.Command, inv *lab.Inventory, host string) error
	}
	faults := []fault{
		{"stop-agent", "Stop a host's agent (SIGTERM)", func(c *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.StopAgent(c.Context(), inv, h)
		}},
		{"kill-agent", "Kill a host's agent (SIGKILL)", func(c *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.KillAgent(c.Context(), inv, h)
		}},
		{"start-agent", "Start a host's agent with its configuration, and wait until it answers", func(c *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.StartAgent(c.Context(), inv, h, logger())
		}},
		{"partition", "Cut a host off the fabric (its port down)", func(_ *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.Partition(inv, h)
		}},
		{"heal", "Put a partitioned host back on the fabric", func(_ *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.Heal(inv, h)
		}},
		{"cut-plane-link", "Drop traffic between the plane and a host only (nftables in the host)", func(_ *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.CutPlaneLink(inv, h)
		}},
		{"heal-plane-link", "Remove cut-plane-link's rules", func(_ *cobra.Command, inv *lab.Inventory, h string) error {
			return lab.HealPlaneLink(inv, h)
		}},
	}
	var out []*cobra.Command
	for _, f := range faults {
		out = append(out, &cobra.Command{
			Use: f.use + " HOST", Short: f.short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				inv, err := lab.LoadInventory(c.Context(), *root)
				if err != nil {
					return err
				}
				return f.do(c, inv, args[0])
			},
		})
	}
	return out
}
