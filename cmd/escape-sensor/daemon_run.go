package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/control"
	"github.com/escape-mtd/escape/sensor/discovery"
	"github.com/escape-mtd/escape/sensor/events"
)

func newRunCmd() *cobra.Command {
	c := &runConfig{}
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the per-host sensor daemon: in-kernel bags, JSON events, /metrics, control socket",
		Long: `run is the per-host daemon. It loads the eBPF sensor, watches the
containers that this host's containerd (--containerd) reports, trains each
container identity's profile for at least --learn-epochs epochs and
--learn-for, until the scores of its held-out epochs are stable (at most
--learn-max), calibrates its threshold to --false-alarms-per-day, then scores
every epoch with --scorer (or the container's escape.scorer label).
Events are JSON lines (see docs/sensor.md). ` + "`escape-sensor retrain ID`" + `
makes one identity learn again.

With an "agent" section in --config it is also the host's node agent: it
serves the plane over mutual TLS (gRPC) every host-local step of a
checkpoint, rollback, restart, replication and migration, and streams its
sensor's events to the plane over the same link (docs/architecture.md).

Settings come from the "sensor" and "agent" sections of --config (the file
every daemon reads; docs/operations.md), then from the flags given, which
win. Each sensor key is the flag's name with "_" for "-" (--learn-epochs is
learn_epochs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.applyFile(cmd.Flags(), cfgPath); err != nil {
				return err
			}
			if err := c.validate(); err != nil {
				return err
			}
			ag, err := loadAgentConfig(cfgPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDaemon(ctx, c, ag, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML, section sensor)")
	f.IntVar(&c.Window, "window", bags.DefaultWindow, "window size W (1..16)")
	f.IntVar(&c.Epoch, "epoch", bags.DefaultEpoch, "epoch length E in calls (W..4096)")
	f.DurationVar(&c.Flush, "flush", 5*time.Second, "close an epoch this long after its first call (0: never)")
	f.IntVar(&c.MaxContainers, "max-containers", 128, "containers watched at once (~100 KiB of kernel memory each)")
	f.IntVar(&c.RingSize, "ring-size", 4<<20, "ring buffer bytes (power of two)")
	f.IntVar(&c.LearnEpochs, "learn-epochs", 30, "clean epochs that train a new identity before detection")
	f.DurationVar(&c.LearnFor, "learn-for", 0, "least time a new identity learns, from its first epoch, besides --learn-epochs")
	f.DurationVar(&c.LearnMax, "learn-max", sensor.DefaultLearnMax, "ceiling of a calibrated learning phase: it ends then even if the scores still move")
	f.StringVar(&c.Scorer, "scorer", "", "default scoring rule, bosc (the papers') or lm; a container's label escape.scorer wins (default lm, or bosc when --threshold is set)")
	f.Float64Var(&c.Threshold, "threshold", 0, "override: every identity's threshold in its scorer's unit (bosc: mismatches per epoch, lm: nats); 0 calibrates each container")
	f.Float64Var(&c.FalseAlarmsPerDay, "false-alarms-per-day", bags.DefaultFalseAlarmsPerDay, "calibration target: false alarms per 24 h of a container's epochs")
	f.BoolVar(&c.LearnOnline, "learn-online", false, "keep learning after the learning phase, behind the poisoning guard (a container's label escape.learn-online=on|off wins)")
	f.DurationVar(&c.LearnQuarantine, "learn-quarantine", bags.DefaultQuarantine, "online learning: a clean epoch teaches only this long after it was scored, and only if no anomaly of its identity came meanwhile")
	f.Float64Var(&c.LearnRate, "learn-rate", bags.DefaultTeachRate, "online learning: epochs a minute that may enter quarantine (token bucket), hence at most teach")
	f.IntVar(&c.LearnQueue, "learn-queue", bags.DefaultQuarantineQueue, "online learning: epochs in quarantine per identity; beyond, the oldest is dropped and counted")
	f.BoolVar(&c.EpochEvents, "epoch-events", false, "emit a summary event for every epoch")
	f.DurationVar(&c.InterventionSettle, "intervention-settle", intervene.DefaultSettle,
		"mark epochs beginning this long after the agent's checkpoint, restore or restart as overlapping it")
	f.StringVar(&c.Profiles, "profiles", "/var/lib/escape-sensor/profiles", "profile directory (shared: migrated containers keep theirs); empty: memory only")
	f.StringSliceVar(&c.Events, "events", []string{"stdout"}, "event targets: stdout, file:PATH, http(s)://URL (repeatable)")
	f.Int64Var(&c.EventsMaxSize, "events-max-size", 64<<20, "rotate the event file past this many bytes")
	f.IntVar(&c.EventsKeep, "events-keep", 5, "rotated event files kept")
	f.BoolVar(&c.WebhookAllowInsecureHTTP, "webhook-allow-insecure-http", false, "allow a plain http:// event target (events and auth header in clear)")
	f.StringVar(&c.WebhookAuthHeaderFile, "webhook-auth-header-file", "", `file holding the webhook's auth header ("Name: value", or a bare Bearer token); re-read when it changes`)
	f.StringVar(&c.WebhookCAFile, "webhook-ca-file", "", "PEM CA certificates for the webhook server (default: the system's roots)")
	f.StringSliceVar(&c.WebhookLabels, "webhook-labels", slices.Clone(events.DefaultWebhookLabels), "container label keys sent to webhooks (key or prefix*; the rest are stripped)")
	f.BoolVar(&c.DropCapabilities, "drop-capabilities", true, "once the BPF programs are attached, drop every capability but --keep-capabilities")
	f.StringSliceVar(&c.KeepCapabilities, "keep-capabilities", slices.Clone(defaultKeepCapabilities), "capabilities kept after the BPF load (what the agent's steps use)")
	f.StringVar(&c.Listen, "listen", "127.0.0.1:9464", "loopback address for /metrics and /healthz (empty: off)")
	f.StringVar(&c.Control, "control", control.DefaultPath, "control socket for `top` (root only)")
	f.StringVar(&c.Namespace, "namespace", "escape", "the agent's containerd namespace: watched, and the only one where escape.identity labels are honoured")
	f.StringSliceVar(&c.Namespaces, "namespaces", nil, "further containerd namespaces to watch, e.g. default,k8s.io (repeatable)")
	f.StringVar(&c.Containerd, "containerd", "/run/containerd/containerd.sock", "this host's containerd socket (empty: none)")
	f.StringSliceVar(&c.Cgroups, "cgroup", nil, "also watch this cgroup2 directory (no containerd; repeatable)")
	f.StringVar(&c.Host, "host", "", "sensor name in events (default: hostname)")
	return cmd
}

func newLogger() (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	cfg.OutputPaths, cfg.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	return cfg.Build()
}

func runDaemon(ctx context.Context, c *runConfig, ag agentConfig, out interface{ Write([]byte) (int, error) }) error {
	log, err := newLogger()
	if err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	defer log.Sync() //nolint:errcheck
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	// The kernel's per-program run time and count; off by default because
	// it costs two clock reads per run.
	if st, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err != nil {
		log.Warn("cannot enable BPF run-time statistics", zap.Error(err))
	} else {
		defer st.Close()
	}
	root, err := sensor.UnifiedRoot()
	if err != nil {
		return err
	}
	if ag.enabled() {
		// What the agent adopts must be watched, or it could never be
		// detected: its adoption namespaces are the sensor's too.
		for _, ns := range ag.Adopt.Namespaces {
			if !slices.Contains(c.Namespaces, ns) {
				c.Namespaces = append(c.Namespaces, ns)
			}
		}
	}
	endpoints := c.endpoints()
	sinks, err := c.openSinks(out, log)
	if err != nil {
		return err
	}
	defer sinks.Close()
	probe, err := sensor.LoadProbe(c.probeOptions(log)...)
	if err != nil {
		return err
	}
	defer probe.Close()
	if c.DropCapabilities {
		keep, err := parseCapabilities(c.KeepCapabilities)
		if err != nil {
			return err
		}
		if _, err := dropCapabilities(log, keep); err != nil {
			return err
		}
	}
	mopts := []sensor.MonitorOption{sensor.WithHost(c.Host), sensor.WithLearnEpochs(c.LearnEpochs),
		sensor.WithLearnFor(c.LearnFor), sensor.WithEpochEvents(c.EpochEvents),
		sensor.WithProfileDir(c.Profiles), sensor.WithMonitorLogger(log)}
	// The agent, in this process, records its checkpoints, restores and
	// restarts here; the monitor marks the epochs that overlap them.
	ivs := intervene.NewLog(c.InterventionSettle)
	mopts = append(mopts, sensor.WithInterventions(ivs))
	mopts = append(mopts, c.scoringOptions()...)
	var outbox *agentapi.Outbox
	if ag.enabled() {
		// Every scored epoch goes to the plane over the agent's link: the
		// outbox holds it until the plane acknowledges it. Closed after
		// the monitor has stopped (deferred before it runs), so the last
		// epochs are kept for the plane until the process ends.
		if outbox, err = agentapi.NewOutbox(); err != nil {
			return err
		}
		defer outbox.Close()
		mopts = append(mopts, sensor.WithReporter(outbox))
	}
	mon, err := sensor.NewMonitor(probe, sinks, mopts...)
	if err != nil {
		return err
	}
	ctl, err := control.Listen(c.Control, mon, c.Host, log)
	if err != nil {
		return err
	}
	var alive atomic.Bool
	// One registry for the sensor's and the agent certificate's metrics.
	reg := prometheus.NewRegistry()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		alive.Store(true)
		defer alive.Store(false)
		return mon.Run(gctx)
	})
	g.Go(func() error { return ctl.Serve(gctx) })
	if c.Listen != "" {
		srv, err := metricsServer(c.Listen, reg, mon, probe, &alive)
		if err != nil {
			return err
		}
		g.Go(func() error { return serveHTTP(gctx, srv) })
	}
	for _, ep := range endpoints {
		w, err := discovery.NewWatcher(ep, root, mon, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(gctx) })
	}
	if ag.enabled() {
		serve, err := startAgent(ctx, c, ag, outbox, ivs.Begin, reg, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return serve(gctx) })
	}
	for _, dir := range c.Cgroups {
		id, err := sensor.CgroupID(dir)
		if err != nil {
			return err
		}
		// Identity cgroup/<path below the cgroup2 root>, e.g. cgroup/escape/h1/web.
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("--cgroup %s: not under the cgroup2 root %s", dir, root)
		}
		ctr := sensor.Container{ID: rel, Namespace: "cgroup", Host: c.Host, CgroupID: id, CgroupPath: dir}
		if err := mon.Add(ctx, ctr); err != nil {
			return err
		}
	}
	log.Info("sensor daemon up", zap.Int("endpoints", len(endpoints)), zap.String("control", c.Control),
		zap.String("listen", c.Listen))
	return g.Wait()
}

func metricsServer(addr string, reg *prometheus.Registry, mon *sensor.Monitor, p *sensor.Probe, alive *atomic.Bool) (*http.Server, error) {
	if err := reg.Register(sensor.NewMetrics(mon, p.Programs())); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !alive.Load() {
			http.Error(w, "collector not running", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok %d watched\n", p.Watched())
	})
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}, nil
}

func serveHTTP(ctx context.Context, srv *http.Server) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("metrics listen: %w", err)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
