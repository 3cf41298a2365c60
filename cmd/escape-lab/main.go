// Command escape-lab builds ESCAPE's local lab of test hosts: each a
// network and a mount namespace of its own (a machine, as far as ESCAPE
// can tell) on a shared L2 fabric, with its own containerd and node agent,
// plus a plane namespace, a client namespace, a CA and a shared-storage
// directory standing in for NFS. It also runs commands on those machines
// and provokes faults (agents stopped, hosts partitioned).
package main

import (
	"context"
	"encoding/json"
	"errors"
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
	var name, root, runDir, prefix string
	var verbose bool
	opts := func() []lab.Option {
		o := []lab.Option{lab.WithName(name), lab.WithPrefix(prefix), lab.WithLogger(newLogger(verbose))}
		// Unset, the directories follow the name (/var/lib/<name>-lab, /run/<name>-lab).
		if root != "" {
			o = append(o, lab.WithRoot(root))
		}
		if runDir != "" {
			o = append(o, lab.WithRunDir(runDir))
		}
		return o
	}
	cmd := &cobra.Command{
		// The directories follow the name unless given: every subcommand
		// (probe, exec, faults) then finds the named lab's inventory.
		PersistentPreRun: func(*cobra.Command, []string) {
			if root == "" {
				root = "/var/lib/" + name + "-lab"
			}
			if runDir == "" {
				runDir = "/run/" + name + "-lab"
			}
		},
		Use:           "escape-lab",
		Short:         "Build and tear down ESCAPE's local lab of test hosts",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	defaultName := lab.DefaultName
	if env := os.Getenv("ESCAPE_LAB"); env != "" {
		defaultName = env
	}
	cmd.PersistentFlags().StringVar(&name, "name", defaultName, "lab name: prefixes its namespaces, cgroups and directories, so labs never touch each other (default $ESCAPE_LAB or escape)")
	cmd.PersistentFlags().StringVar(&root, "root", "", "lab directory (containerd roots, shared storage, inventory; default /var/lib/<name>-lab)")
	cmd.PersistentFlags().StringVar(&runDir, "run-dir", "", "lab runtime directory (sockets, pid files; default /run/<name>-lab)")
	cmd.PersistentFlags().StringVar(&prefix, "prefix", lab.DefaultPrefix, "where make deps installed containerd and CRIU")
	cmd.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug detail")

	var hosts int
	var sharedSize, binDir, agentSettings string
	var agents, shared, kubernetes bool
	var kubeCache string
	up := &cobra.Command{
		Use:   "up",
		Short: "Build N test hosts with their agents, and the plane namespace (reuses a healthy lab of the same options)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			inv, err := lab.Up(c.Context(), append(opts(), lab.WithHosts(hosts), lab.WithSharedSize(sharedSize),
				lab.WithAgents(agents), lab.WithSharedStorage(shared), lab.WithBinDir(binDir), lab.WithAgentSettings(agentSettings),
				lab.WithKubernetes(kubernetes), lab.WithKubeCache(kubeCache))...)
			if err != nil {
				return err
			}
			printInventory(inv)
			return nil
		},
	}
	up.Flags().IntVar(&hosts, "hosts", lab.DefaultHosts, "number of test hosts")
	up.Flags().StringVar(&sharedSize, "shared-size", "8g", "size cap of the shared storage (tmpfs size)")
	up.Flags().BoolVar(&agents, "agents", true, "start a node agent (escape-sensor run) on every host")
	up.Flags().BoolVar(&shared, "shared-storage", true, "mount the shared storage on every host (as NFS)")
	up.Flags().StringVar(&binDir, "bin", "", "directory of the ESCAPE binaries the hosts run (default: this program's)")
	up.Flags().StringVar(&agentSettings, "agent-settings", "", "YAML file whose sensor: and agent: maps are merged over every agent's settings")
	up.Flags().BoolVar(&kubernetes, "kubernetes", false, "also run a single-node Kubernetes ("+lab.DefaultKubeVersion+") inside h1 (builds its binaries once, minutes the first time)")
	up.Flags().StringVar(&kubeCache, "kube-cache", lab.DefaultKubeCache, "cache of the built Kubernetes binaries, by version")

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

	cmd.AddCommand(up, down, status, probeCmd(&root), execCmd(&root), kubectlCmd(&root))
	cmd.AddCommand(faultCmds(&root, func() *zap.Logger { return newLogger(verbose) })...)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.ExecuteContext(ctx); err != nil {
		var code exitError
		if errors.As(err, &code) {
			os.Exit(int(code)) // exec: the command's own status, it spoke for itself
		}
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
	fmt.Fprintf(w, "HOST\tNETNS\tADDRESS\tAGENT\tLABELS\n")
	for _, h := range inv.Hosts {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.Netns, h.IP, h.Agent, labels(h.Labels))
	}
	fmt.Fprintf(w, "plane\t%s\t%s\t\tapi %s\n", inv.Plane.Netns, inv.Plane.IP, inv.Plane.API)
	fmt.Fprintf(w, "client\t%s\t%s\t\t\n", inv.Client.Netns, inv.Client.IP)
	w.Flush()
	fmt.Printf("shared storage: %s\nimages: ", inv.Shared)
	names := make([]string, 0, len(inv.Images))
	for n, img := range inv.Images {
		names = append(names, img.Ref+" ("+n+")")
	}
	sort.Strings(names)
	fmt.Println(strings.Join(names, ", "))
	fmt.Printf("plane config: %s\nCA: %s\noperator certificate: %s\n", inv.Plane.Config, inv.PKI.CA, inv.PKI.Operator.Cert)
	if k := inv.Kubernetes; k != nil {
		fmt.Printf("kubernetes %s: node %s in %s, apiserver %s, pods %s, services %s\nadmin kubeconfig: %s (inside %s: %s; or: escape-lab kubectl ...)\n",
			k.Version, k.NodeName, k.Host, k.Server, k.PodCIDR, k.ServiceCIDR, k.Kubeconfig, k.Host, lab.InsideKubeconfig)
	}
	fmt.Printf("inventory: %s\n", lab.InventoryPath(inv.Root))
}

func printStatus(st lab.Status) {
	if !st.Up {
		fmt.Println("lab is down:", st.Problem)
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "HOST\tNETNS\tMOUNTNS\tCONTAINERD\tCONTAINERS\tAGENT\tANSWERS\tPROBLEM\n")
	for _, h := range st.Hosts {
		fmt.Fprintf(w, "%s\t%v\t%v\t%s\t%d\t%v\t%v\t%s\n", h.Name, h.Netns, h.MountNS, h.Containerd, h.Containers, h.Agent, h.AgentAnswers, h.Problem)
	}
	fmt.Fprintf(w, "plane\t%v\t%v\t\t\t\t\t%s\n", st.Plane.Netns, st.Plane.MountNS, st.Plane.Problem)
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
