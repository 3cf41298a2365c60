// Command escape-plane is ESCAPE's control plane: `serve` runs it; the
// other commands are operator commands that talk to a running plane, as
// root over its local socket or with an operator certificate over mutual
// TLS (--server); `certs` issues the certificates of an install.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/plane"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "escape-plane:", err)
		os.Exit(1)
	}
}

type globals struct {
	socket string
	server string
	// serverName is the plane's name in its certificate (plane/<name>).
	serverName string
	tls        mtls.Files
	timeout    time.Duration
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "escape-plane",
		Short:         "ESCAPE control plane: safe checkpoints, rollback, live migration",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", plane.DefaultConfig().Socket, "plane's local API socket (root)")
	pf.StringVar(&g.server, "server", "", "plane's API address host:port over mutual TLS (instead of --socket)")
	pf.StringVar(&g.serverName, "server-name", "plane", "the plane's name in its certificate (spiffe://escape.mtd/plane/NAME), checked on --server")
	pf.StringVar(&g.tls.Cert, "cert", "/etc/escape/pki/operator.crt", "operator certificate (with --server)")
	pf.StringVar(&g.tls.Key, "key", "/etc/escape/pki/operator.key", "operator key (with --server)")
	pf.StringVar(&g.tls.CA, "ca", "/etc/escape/pki/ca.crt", "CA certificate (with --server)")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Minute, "how long an operator command waits for its answer (an action, once accepted, runs to its end anyway)")
	root.AddCommand(serveCmd(), statusCmd(g), checkpointCmd(g), rollbackCmd(g), migrateCmd(g), drainCmd(g), undrainCmd(g),
		flagCmd(g), deployCmd(g), removeCmd(g), reportCmd(g), certsCmd())
	return root
}

func serveCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the plane: recover, deploy configured containers, take safe checkpoints, answer the API",
		Long: `serve settles what a previous run left (half-done migrations are finished
or undone), deploys the configured containers, takes safe checkpoints, and
answers sensors and operators on its root-only unix socket. /metrics and
/healthz are served on the loopback address of "listen".

Settings come from the "plane" section of --config (the file both daemons
read; docs/operations.md); --socket overrides the file. On SIGTERM it stops
taking work, lets an action under way finish, and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := plane.DefaultConfig()
			if cfgPath != "" {
				var err error
				if cfg, err = plane.LoadConfig(cfgPath); err != nil {
					return err
				}
			}
			if s := cmd.Flag("socket"); s.Changed {
				cfg.Socket = s.Value.String()
			}
			log, err := zap.NewProduction()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, log)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML, section plane; see docs/operations.md)")
	return cmd
}

func serve(ctx context.Context, cfg plane.Config, log *zap.Logger) error {
	reg := prometheus.NewRegistry()
	opts := []plane.Option{plane.WithLogger(log), plane.WithTLSMetrics(reg)}
	var k8s *onKubernetes
	if cfg.Kubernetes.Enabled {
		var err error
		if k8s, err = newOnKubernetes(cfg.Kubernetes, log); err != nil {
			return err
		}
		opts = append(opts, k8s.options()...)
	}
	p, err := plane.New(cfg, opts...)
	if err != nil {
		return err
	}
	defer p.Close()
	l, err := plane.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	defer l.Close()
	var tl net.Listener
	if cfg.API != "" {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		raw, err := lc.Listen(ctx, "tcp", cfg.API)
		if err != nil {
			return fmt.Errorf("api: listen %s: %w", cfg.API, err)
		}
		// Operators act; agents may post their own host's events.
		tl = p.TLS().Listener(raw, mtls.RoleOperator, mtls.RoleAgent)
		defer tl.Close()
	}
	var started atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			l.Close()
			return fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
		reg.MustRegister(plane.NewMetrics(p), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if !started.Load() {
				http.Error(w, "starting: settling the previous run", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	if k8s != nil {
		// A follower serves its status at once; the replica that gains
		// the Lease settles the previous run's work then (plane.Lead).
		if err := k8s.run(gctx, g, p); err != nil {
			return err
		}
	} else if err := p.Start(gctx); err != nil {
		log.Error("start: some work could not be settled", zap.Error(err))
	}
	started.Store(true)
	log.Info("plane serving", zap.String("socket", cfg.Socket), zap.String("api", cfg.API), zap.String("listen", cfg.Listen),
		zap.Int("hosts", len(p.Hosts())), zap.Bool("kubernetes", k8s != nil), zap.String("version", version))
	api := plane.NewAPI(p)
	g.Go(func() error { return api.Serve(gctx, l) })
	if tl != nil {
		g.Go(func() error { return api.Serve(gctx, tl) })
	}
	g.Go(func() error { return p.Run(gctx) })
	err = g.Wait()
	log.Info("plane stopped", zap.Error(err))
	return err
}

func (g *globals) call(cmd *cobra.Command, method, route string, in any) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	c, err := g.client()
	if err != nil {
		return err
	}
	var out json.RawMessage
	if err := c.Do(ctx, method, route, in, &out); err != nil {
		return err
	}
	var pretty any
	if json.Unmarshal(out, &pretty) == nil {
		b, _ := json.MarshalIndent(pretty, "", "  ")
		fmt.Fprintln(cmd.OutOrStdout(), string(b))
	}
	return nil
}

// client is the plane's local socket, or with --server its API over
// mutual TLS with the operator's certificate.
func (g *globals) client() (*plane.Client, error) {
	if g.server == "" {
		return plane.NewClient(g.socket), nil
	}
	src, err := mtls.NewSource(g.tls)
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	return plane.NewTLSClient(g.server, src.ClientConfig(mtls.Identity{Role: mtls.RolePlane, Name: g.serverName})), nil
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "status", Short: "Show containers, hosts and unsettled migrations", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.call(cmd, "GET", "/v1/status", nil) }}
}

func checkpointCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{Use: "checkpoint CONTAINER", Short: "Take a safe checkpoint now (refused unless recent epochs are clean, or --force)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.call(cmd, "POST", "/v1/checkpoint", plane.ContainerRequest{Container: a[0], Force: force})
		}}
	cmd.Flags().BoolVar(&force, "force", false, "checkpoint even if recent epochs are not all clean (recorded as forced)")
	return cmd
}

func rollbackCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "rollback CONTAINER", Short: "Restore the container from its last safe checkpoint", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.call(cmd, "POST", "/v1/rollback", plane.ContainerRequest{Container: a[0]})
		}}
}

func migrateCmd(g *globals) *cobra.Command {
	var to string
	cmd := &cobra.Command{Use: "migrate CONTAINER [--to HOST]", Short: "Live-migrate the container (the model picks the host unless --to)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.call(cmd, "POST", "/v1/migrate", plane.ContainerRequest{Container: a[0], To: to})
		}}
	cmd.Flags().StringVar(&to, "to", "", "destination host")
	return cmd
}

func drainCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "drain HOST", Short: "Move every container off HOST and keep new ones away", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.call(cmd, "POST", "/v1/drain", plane.HostRequest{Host: a[0]})
		}}
}

func undrainCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "undrain HOST", Short: "Let HOST receive containers again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.call(cmd, "POST", "/v1/undrain", plane.HostRequest{Host: a[0]})
		}}
}

func flagCmd(g *globals) *cobra.Command {
	var compromised, clean bool
	var reason string
	cmd := &cobra.Command{Use: "flag HOST --compromised|--clean", Short: "Flag HOST as compromised (never a destination) or clean",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if compromised == clean {
				return errors.New("give exactly one of --compromised or --clean")
			}
			return g.call(cmd, "POST", "/v1/flag", plane.HostRequest{Host: a[0], Compromised: &compromised, Reason: reason})
		}}
	cmd.Flags().BoolVar(&compromised, "compromised", false, "flag the host compromised")
	cmd.Flags().BoolVar(&clean, "clean", false, "clear the flag")
	cmd.Flags().StringVar(&reason, "reason", "operator", "why (recorded in the audit log)")
	return cmd
}

func deployCmd(g *globals) *cobra.Command {
	var cc plane.ContainerConfig
	var labels map[string]string
	cmd := &cobra.Command{Use: "deploy ID --image IMAGE [--host H] [--ip IP] [-- ARGS...]", Short: "Put a new container under protection",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cc.ID, cc.Args, cc.Labels = a[0], a[1:], labels
			return g.call(cmd, "POST", "/v1/deploy", cc)
		}}
	cmd.Flags().StringVar(&cc.Image, "image", "", "OCI image reference, run from each host's content store")
	cmd.Flags().StringVar(&cc.Host, "host", "", "host (default: the least loaded eligible one)")
	cmd.Flags().StringVar(&cc.IP, "ip", "", "service address (default: allocated)")
	cmd.Flags().StringVar(&cc.Memory, "memory", "", "memory limit, e.g. 64MiB")
	cmd.Flags().StringToStringVar(&labels, "label", nil, "labels, including escape.mtd/ policy keys")
	return cmd
}

func removeCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "remove CONTAINER", Short: "Stop protecting the container and delete it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.call(cmd, "POST", "/v1/remove", plane.ContainerRequest{Container: a[0]})
		}}
}

func reportCmd(g *globals) *cobra.Command {
	var r plane.Report
	cmd := &cobra.Command{Use: "report CONTAINER --epoch N [--anomalous]", Short: "Send a sensor report by hand (as a sensor would)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			r.Container = a[0]
			r.Time = time.Now().UTC()
			return g.call(cmd, "POST", "/v1/reports", r)
		}}
	cmd.Flags().Uint64Var(&r.Epoch, "epoch", 0, "epoch number (strictly increasing per container)")
	cmd.Flags().BoolVar(&r.Anomalous, "anomalous", false, "the epoch was anomalous")
	cmd.Flags().IntVar(&r.Mismatches, "mismatches", 0, "mismatch count")
	cmd.Flags().IntVar(&r.Threshold, "threshold", 0, "detection threshold")
	return cmd
}
