// Command escape-lab builds ESCAPE's local lab of test hosts: network
// namespaces on a shared L2 fabric, each with its own containerd, plus a
// shared-storage directory standing in for NFS.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/escape-mtd/escape/tools/lab"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var version = "dev"

func main() {
	var root, runDir, prefix string
	var verbose bool
	opts := func() []lab.Option {
		return []lab.Option{lab.WithRoot(root), lab.WithRunDir(runDir), lab.WithPrefix(prefix), lab.WithLogger(newLogger(verbose))}
	}
	cmd := &cobra.Command{
		Use:           "escape-lab",
		Short:         "Build and tear down ESCAPE's local lab of test hosts",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.PersistentFlags().StringVar(&root, "root", lab.DefaultRoot, "lab directory (containerd roots, shared storage, inventory)")
	cmd.PersistentFlags().StringVar(&runDir, "run-dir", lab.DefaultRunDir, "lab runtime directory (sockets, pid files)")
	cmd.PersistentFlags().StringVar(&prefix, "prefix", lab.DefaultPrefix, "where make deps installed containerd and CRIU")
	cmd.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug detail")

	var hosts int
	var sharedSize string
	up := &cobra.Command{
		Use:   "up",
		Short: "Build N test hosts (reuses a healthy lab of the same size)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			inv, err := lab.Up(c.Context(), append(opts(), lab.WithHosts(hosts), lab.WithSharedSize(sharedSize))...)
			if err != nil {
				return err
			}
			printInventory(inv)
			return nil
		},
	}
	up.Flags().IntVar(&hosts, "hosts", lab.DefaultHosts, "number of test hosts")
	up.Flags().StringVar(&sharedSize, "shared-size", "8g", "size cap of the shared storage (tmpfs size)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove everything up created, even after a crashed up",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := lab.Down(c.Context(), opts()...); err != nil {
				return err
			}
			fmt.Println("lab is down; nothing left behind")
			return nil
		},
	}

	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each host's namespace and containerd",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st := lab.GetStatus(c.Context(), opts()...)
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return err
				}
			} else {
				printStatus(st)
			}
			if !st.Healthy() {
				return lab.ErrUnhealthy
			}
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	cmd.AddCommand(up, down, status, probeCmd(&root))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "escape-lab:", err)
		os.Exit(1)
	}
}

func newLogger(verbose bool) *zap.Logger {
	cfg := zap.NewDevelopmentEncoderConfig()
	cfg.TimeKey, cfg.CallerKey = "", ""
	level := zapcore.InfoLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.Lock(os.Stderr), level))
}

func printInventory(inv *lab.Inventory) {
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "HOST\tNETNS\tADDRESS\tCONTAINERD\tLABELS\n")
	for _, h := range inv.Hosts {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.Netns, h.IP, h.Containerd, labels(h.Labels))
	}
	fmt.Fprintf(w, "client\t%s\t%s\t\t\n", inv.Client.Netns, inv.Client.IP)
	w.Flush()
	fmt.Printf("shared storage: %s\nimages: ", inv.Shared)
	names := make([]string, 0, len(inv.Images))
	for n, img := range inv.Images {
		names = append(names, img.Ref+" ("+n+")")
	}
	sort.Strings(names)
	fmt.Println(strings.Join(names, ", "))
	fmt.Printf("inventory: %s\n", lab.InventoryPath(inv.Root))
}

func printStatus(st lab.Status) {
	if !st.Up {
		fmt.Println("lab is down:", st.Problem)
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "HOST\tNETNS\tCONTAINERD\tCONTAINERS\tPROBLEM\n")
	for _, h := range st.Hosts {
		fmt.Fprintf(w, "%s\t%v\t%s\t%d\t%s\n", h.Name, h.Netns, h.Containerd, h.Containers, h.Problem)
	}
	w.Flush()
	if st.Problem != "" {
		fmt.Println("problem:", st.Problem)
	}
}

func labels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}
