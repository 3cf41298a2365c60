package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
)

func main() {
	d := &demo{start: time.Now()}
	flag.StringVar(&d.bin, "bin", "bin", "directory of the escape-* binaries")
	flag.StringVar(&d.out, "out", "out/demo", "directory for logs, events and the summary")
	d.labName = lab.DefaultName
	if name := os.Getenv("ESCAPE_LAB"); name != "" {
		d.labName = name // escape-lab, run by the demo, reads it too
	}
	flag.IntVar(&d.limit, "rollbacks", 2, "N: rollbacks before the plane escalates to live migration")
	flag.DurationVar(&d.learnMax, "learn", 3*time.Minute, "the sensor's learn_max: longest time it may learn redis before detecting")
	flag.DurationVar(&d.learnFor, "learn-for", 30*time.Second, "the sensor's learn_for: least time it learns redis")
	flag.StringVar(&d.scorer, "scorer", "lm", "the sensor's scoring rule for redis: lm (the default rule) or bosc (the papers')")
	flag.Float64Var(&d.threshold, "threshold", 0, "the scorer's threshold, in its own unit; 0: redis's own threshold, calibrated while it learns")
	flag.DurationVar(&d.soakFor, "soak", 0, "instead of attacking, run this long under normal load and report false positives")
	flag.BoolVar(&d.keepLab, "keep-lab", false, "leave the lab up at the end")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := d.run(ctx)
	stop()
	d.collect()
	if err != nil && !errors.Is(err, context.Canceled) {
		// Before cleanup: the daemons' logs are complete and the failure
		// sits next to the step that caused it.
		d.diagnose(os.Stderr, err)
	}
	d.cleanup()
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Println("interrupted; cleaned up")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\nlogs: %s\n", err, d.out)
		os.Exit(1)
	}
}

type demo struct {
	bin, out, labName string
	limit             int
	learnMax          time.Duration
	learnFor, soakFor time.Duration
	scorer            string
	threshold         float64
	keepLab           bool

	start    time.Time
	inv      *lab.Inventory
	operator *plane.Client
	procs    []*exec.Cmd
	stopBG   context.CancelFunc
	summary  []string
	// clientSeen is when the client reported the last outage already
	// attributed to an action: its reports up to then belong to earlier
	// actions, even where the next action's start (from the audit log)
	// falls before the client's reconnection.
	clientSeen time.Time
	// decisionSeen is when the newest plane decision the demo has accounted
	// for was logged (at its action's end) and decisionStart when its
	// action began: the sensor may watch the restored copy before the
	// decision is logged.
	decisionSeen, decisionStart time.Time
	// unprovoked counts the rollbacks no attack of the demo caused.
	unprovoked int
}

const (
	serviceID = "redis"
	serviceIP = "198.18.1.10"
)

func (d *demo) run(ctx context.Context) error {
	if d.scorer != "lm" && d.scorer != "bosc" {
		return fmt.Errorf("--scorer %q: want lm or bosc", d.scorer)
	}
	if d.threshold < 0 || d.learnFor < 0 || d.soakFor < 0 || d.learnMax < d.learnFor {
		return fmt.Errorf("--threshold %g, --learn-for %v, --learn %v, --soak %v: want no negative threshold or time, and --learn at least --learn-for",
			d.threshold, d.learnFor, d.learnMax, d.soakFor)
	}
	var err error
	if d.bin, err = filepath.Abs(d.bin); err != nil {
		return err
	}
	if d.out, err = filepath.Abs(d.out); err != nil {
		return err
	}
	if err := os.RemoveAll(d.out); err != nil {
		return err
	}
	if err := os.MkdirAll(d.out, 0o755); err != nil {
		return err
	}
	d.step("1/9 preflight: what this machine can run")
	if err := d.cmd(ctx, "escape-sensor", "doctor", "--mode", "lab"); err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	d.step("2/9 the lab: 3 hosts, each with its own network and mount namespaces, containerd and node agent (escape-sensor run), and a plane machine, on one L2 fabric")
	settings, err := d.writeAgentSettings()
	if err != nil {
		return err
	}
	if err := d.cmd(ctx, "escape-lab", "up", "--hosts", "3", "--bin", d.bin, "--agent-settings", settings); err != nil {
		return err
	}
	st := lab.GetStatus(ctx, lab.WithName(d.labName))
	if st.Inventory == nil {
		return fmt.Errorf("the lab %s after escape-lab up: %s", d.labName, st.Problem)
	}
	d.inv = st.Inventory
	if d.operator, err = d.operatorClient(); err != nil {
		return err
	}
	cfg, err := d.writeConfig()
	if err != nil {
		return err
	}
	d.step("3/9 the control plane, on its own machine, protects a real redis (Debian's package) on h1 at " + serviceIP)
	d.note("the plane's configuration: %s (its /etc/escape/escape.yaml); it reaches the agents only over mutual TLS on the fabric", cfg)
	if err := d.startPlane(ctx); err != nil {
		return err
	}
	d.step("4/9 each host's eBPF sensor watches its containers and sends every epoch to the plane over its agent's mTLS link")
	if err := d.watchSensor(ctx); err != nil {
		return err
	}
	d.step("5/9 a client holds one connection to redis from the client namespace; load trains the sensor")
	if err := d.startClient(ctx); err != nil {
		return err
	}
	if err := d.train(ctx); err != nil {
		return err
	}
	host, err := d.waitCheckpoint(ctx)
	if err != nil {
		return err
	}
	d.note("what an operator on %s sees (escape-sensor top --once):", host)
	if err := d.inHost(ctx, host, filepath.Join(d.bin, "escape-sensor"), "top", "--once", "--socket", "/run/escape/sensor.sock"); err != nil {
		return err
	}
	d.note("what an operator sees from elsewhere, over mTLS with an operator certificate (escape-plane --server %s status):", d.inv.Plane.API)
	if err := d.inHost(ctx, "client", filepath.Join(d.bin, "escape-plane"), "--server", d.inv.Plane.API,
		"--cert", d.inv.PKI.Operator.Cert, "--key", d.inv.PKI.Operator.Key, "--ca", d.inv.PKI.Operator.CA, "status"); err != nil {
		return err
	}
	if d.soakFor > 0 {
		return d.soak(ctx, d.soakFor)
	}
	d.step(fmt.Sprintf("6/9 the attack: a shell inside the container on %s (recon, /etc/shadow, a reverse connection to h2)", host))
	// The plane counts every rollback toward its limit, the demo's and any
	// false positive's on a restored copy, so the demo counts them the same.
	rollbacks := 0
	var migrated *plane.AuditEvent
	for i := 1; i <= d.limit+1 && migrated == nil; i++ {
		if i > 1 {
			n, err := d.settle(ctx)
			if err != nil {
				return err
			}
			if rollbacks += n; rollbacks > d.limit {
				return fmt.Errorf("%d rollbacks before attack %d; the plane's limit is %d", rollbacks, i, d.limit)
			}
			d.step(fmt.Sprintf("7/9 the attack persists: round %d of %d", i, d.limit+1))
		}
		dec, err := d.attackOnce(ctx, i)
		if err != nil {
			return err
		}
		switch dec.Decision {
		case "rollback":
			rollbacks++
			if err := d.afterRollback(ctx, dec); err != nil {
				return err
			}
		case "migrate":
			mig, err := d.afterMigration(ctx, dec, host)
			if err != nil {
				return err
			}
			migrated = &mig
		default:
			return fmt.Errorf("attack %d: the plane decided %q (%s), want rollback or migrate", i, dec.Decision, strings.Join(dec.Reasons, "; "))
		}
	}
	if rollbacks != d.limit || migrated == nil {
		return fmt.Errorf("%d rollbacks and migrated=%v; want %d rollbacks, then a migration", rollbacks, migrated != nil, d.limit)
	}
	return d.summarize()
}

// writeAgentSettings is what every host's sensor runs with in the demo,
// merged by the lab over its agents' settings: epochs short enough to
// watch, and the demo's learning, scorer and threshold. Without a
// threshold each identity calibrates its own while it learns.
func (d *demo) writeAgentSettings() (string, error) {
	path := filepath.Join(d.out, "agent-settings.yaml")
	settings := fmt.Sprintf(`sensor:
  epoch_events: true
  flush: 2s
  learn_epochs: 150
  learn_for: %s
  learn_max: %s
  scorer: %s
`, d.learnFor, d.learnMax, d.scorer)
	if d.threshold > 0 {
		settings += fmt.Sprintf("  threshold: %g\n", d.threshold)
	}
	return path, os.WriteFile(path, []byte(settings), 0o600)
}

// writeConfig writes the plane's configuration into the plane machine's
// /etc/escape/escape.yaml: the lab's hosts, and redis to protect. A copy
// goes to the demo's output.
func (d *demo) writeConfig() (string, error) {
	cfg, err := d.inv.PlaneConfig()
	if err != nil {
		return "", err
	}
	cfg.Defaults = plane.PolicyOverrides{CheckpointInterval: ptr(plane.Duration(5 * time.Second)), CleanEpochs: ptr(3),
		RollbackLimit: ptr(d.limit), RollbackWindow: ptr(plane.Duration(10 * time.Minute))}
	cfg.Containers = []plane.ContainerConfig{{ID: serviceID, Image: lab.ImageRef("redis"), Host: "h1", IP: serviceIP,
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}}
	if err := lab.WritePlaneConfig(cfg, d.inv.Plane.Config); err != nil {
		return "", err
	}
	data, err := lab.MarshalPlaneConfig(cfg)
	if err != nil {
		return "", err
	}
	return d.inv.Plane.Config, os.WriteFile(filepath.Join(d.out, "escape.yaml"), data, 0o644)
}

func ptr[T any](v T) *T { return &v }
