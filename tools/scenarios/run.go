package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Addresses of a scenario's namespace, on its loopback only: the service
// listens on ServiceIP, the attacker's listeners (reverse shell, exfiltration
// sink, payload server) on PeerIP.
const (
	ServiceIP = "198.19.200.1"
	PeerIP    = "198.19.200.2"
)

// LiveConfig is one live run's shape.
type LiveConfig struct {
	Root   string        // tools/scenarios
	Out    string        // recordings and logs
	Sensor string        // escape-sensor binary
	Self   string        // this binary (its enter subcommand)
	Normal time.Duration // normal phase before the attack
	Post   time.Duration // normal load recorded after the attack ended
	Log    *zap.Logger
}

// Live is what a live run leaves: the recording and when the attack began.
type Live struct {
	Recording   string
	AttackStart int64 // Unix ns, just before the attack's first call
	AttackEnd   int64
	AttackErr   error // the attack script's exit (informational: probes fail on purpose)
	Drops       string
}

// netns is a namespace made for one scenario.
type netns struct{ name string }

func newNetns(ctx context.Context, name string) (*netns, error) {
	n := &netns{name: name}
	_ = exec.CommandContext(ctx, "ip", "netns", "del", name).Run() // a crashed run's leftover
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "-n", name, "addr", "add", ServiceIP + "/32", "dev", "lo"},
		{"ip", "-n", name, "addr", "add", PeerIP + "/32", "dev", "lo"},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			n.close()
			return nil, fmt.Errorf("create netns %s: %s: %w: %s", name, strings.Join(s, " "), err, out)
		}
	}
	return n, nil
}

func (n *netns) close() error {
	if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
		return fmt.Errorf("delete netns %s: %w: %s", n.name, err, out)
	}
	return nil
}

// cgroupRoot holds the scenarios' cgroups.
const cgroupRoot = "/sys/fs/cgroup/unified/escape-scenarios"

type cgroup struct{ dir string }

func newCgroup(name string) (*cgroup, error) {
	dir := filepath.Join(cgroupRoot, name)
	c := &cgroup{dir: dir}
	if _, err := os.Stat(dir); err == nil {
		if err := c.close(); err != nil { // a crashed run's leftover
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	return c, nil
}

func (c *cgroup) empty() bool {
	b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.procs"))
	return err != nil || len(strings.TrimSpace(string(b))) == 0
}

// close kills every process left in the cgroup and removes it.
func (c *cgroup) close() error {
	if err := os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kill cgroup %s: %w", c.dir, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !c.empty() {
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes still alive 30 s after cgroup.kill", c.dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.Remove(c.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	return nil
}

// proc is a started script, in its own process group.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited, err then set
	err  error
}

func (p *proc) wait() error {
	<-p.done
	return p.err
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop() error {
	if p == nil {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	err := p.wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // killed on purpose
	}
	return err
}

// runner runs one scenario live.
type runner struct {
	cfg  LiveConfig
	s    *Scenario
	ns   *netns
	cg   *cgroup
	work string // the service's state, owned by its user
	log  io.Writer
}

func (r *runner) env() []string {
	return append(os.Environ(), "SCN_IP="+ServiceIP, "SCN_PEER="+PeerIP, "SCN_WORK="+r.work,
		"SCN_SVC="+filepath.Join(r.cfg.Root, "services", r.s.Service), "SCN_DIR="+r.s.dir,
		"SCN_ATTACKER="+filepath.Join(r.cfg.Out, r.s.Name+".attacker"))
}

// Where a script runs: in the namespace as root (a client), as the
// service's user outside the cgroup (its setup) or in the container.
type place int

const (
	asClient place = iota
	asServiceUser
	inContainer
)

// start runs argv in the namespace, placed as asked.
func (r *runner) start(ctx context.Context, where place, argv ...string) (*proc, error) {
	args := []string{"enter", "-netns", r.ns.name}
	if where != asClient {
		args = append(args, "-user", r.s.User)
	}
	if where == inContainer {
		args = append(args, "-cgroup", r.cg.dir)
	}
	cmd := exec.CommandContext(ctx, r.cfg.Self, append(append(args, "--"), argv...)...)
	cmd.Env, cmd.Dir = r.env(), r.work
	cmd.Stdout, cmd.Stderr = r.log, r.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitFor polls cond every 100 ms until it holds or the deadline passes.
func waitFor(ctx context.Context, within time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %v", what, within)
		case <-t.C:
		}
	}
	return nil
}

// RunLive runs scenario s: service, recording, normal load, attack.
func RunLive(ctx context.Context, s *Scenario, cfg LiveConfig) (live *Live, err error) {
	// The scripts run in the service's state folder: every path absolute.
	if cfg.Root, err = filepath.Abs(cfg.Root); err != nil {
		return nil, err
	}
	if cfg.Out, err = filepath.Abs(cfg.Out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	logf, err := os.Create(filepath.Join(cfg.Out, s.Name+".log"))
	if err != nil {
		return nil, fmt.Errorf("scenario log: %w", err)
	}
	defer logf.Close()
	r := &runner{cfg: cfg, s: s, log: logf}
	for _, d := range []string{filepath.Join(cfg.Out, s.Name+".attacker")} {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if r.work, err = os.MkdirTemp("", "escape-scn-"+s.Name+"-"); err != nil {
		return nil, fmt.Errorf("service state: %w", err)
	}
	defer os.RemoveAll(r.work)
	if err := chownTo(r.work, s.User); err != nil {
		return nil, err
	}
	if r.ns, err = newNetns(ctx, fmt.Sprintf("escscn-%s-%d", s.Name, os.Getpid())); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, r.ns.close()) }()
	if r.cg, err = newCgroup(fmt.Sprintf("%s-%d", s.Name, os.Getpid())); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, r.cg.close()) }()

	svcDir := filepath.Join(cfg.Root, "services", s.Service)
	if setup := filepath.Join(svcDir, "setup.sh"); fileExists(setup) {
		p, err := r.start(ctx, asServiceUser, "sh", setup)
		if err != nil {
			return nil, err
		}
		if err := p.wait(); err != nil {
			return nil, fmt.Errorf("%s: %w (see %s)", setup, err, logf.Name())
		}
	}
	recPath := filepath.Join(cfg.Out, s.Name+".rec")
	if err := os.Remove(recPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the last recording: %w", err)
	}
	recLog, err := os.Create(filepath.Join(cfg.Out, s.Name+".record.log"))
	if err != nil {
		return nil, err
	}
	defer recLog.Close()
	rec := exec.Command(cfg.Sensor, "record", "--cgroup", r.cg.dir, "--out", recPath,
		"--container", s.Name, "--workload", s.Service, "--duration", "24h")
	rec.Stdout, rec.Stderr = recLog, recLog
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("start escape-sensor record: %w", err)
	}
	recDone := make(chan error, 1)
	go func() { recDone <- rec.Wait() }()
	stopRecorder := func() error {
		_ = rec.Process.Signal(os.Interrupt)
		select {
		case err := <-recDone:
			return err
		case <-time.After(60 * time.Second):
			_ = rec.Process.Kill()
			return errors.New("escape-sensor record did not stop within 60 s of SIGINT")
		}
	}
	// The recorder opens its file before it watches the cgroup, and its
	// writer flushes only every few hundred thousand calls: the service
	// starts once the file exists, so its start-up is recorded (the daemon
	// learns from a container's start too), and the normal phase counts
	// from the service's readiness.
	if err := waitFor(ctx, 60*time.Second, "escape-sensor record's file", func() bool {
		_, err := os.Stat(recPath)
		return err == nil
	}); err != nil {
		return nil, errors.Join(err, stopRecorder())
	}
	svc, err := r.start(ctx, inContainer, "sh", filepath.Join(svcDir, "start.sh"))
	if err != nil {
		return nil, errors.Join(err, stopRecorder())
	}
	defer func() { err = errors.Join(err, svc.stop()) }()
	err = waitFor(ctx, 90*time.Second, s.Service+" ready", func() bool {
		if svc.exited() {
			return true
		}
		p, err := r.start(ctx, asClient, "sh", filepath.Join(svcDir, "ready.sh"))
		return err == nil && p.wait() == nil
	})
	if err == nil && svc.exited() {
		err = fmt.Errorf("%s exited before it was ready: %v (see %s)", s.Service, svc.err, logf.Name())
	}
	if err != nil {
		return nil, errors.Join(err, stopRecorder())
	}
	traffic, err := r.start(ctx, asClient, "sh", filepath.Join(svcDir, "traffic.sh"))
	if err != nil {
		return nil, errors.Join(err, stopRecorder())
	}
	defer func() { err = errors.Join(err, traffic.stop()) }()
	cfg.Log.Info("normal phase", zap.String("scenario", s.Name), zap.Duration("for", cfg.Normal))
	select {
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), stopRecorder())
	case err := <-recDone:
		return nil, fmt.Errorf("escape-sensor record stopped early: %w (see %s)", err, recLog.Name())
	case <-time.After(cfg.Normal):
	}
	live = &Live{Recording: recPath}
	cfg.Log.Info("attack", zap.String("scenario", s.Name), zap.String("script", s.Attack), zap.String("in", s.AttackIn))
	actx, cancel := context.WithTimeout(ctx, time.Duration(s.AttackFor))
	live.AttackStart = time.Now().UnixNano()
	atk, err := r.start(actx, map[bool]place{true: inContainer, false: asClient}[s.AttackIn == AttackContainer], "sh", filepath.Join(s.dir, s.Attack))
	if err != nil {
		cancel()
		return nil, errors.Join(err, stopRecorder())
	}
	live.AttackErr = atk.wait()
	live.AttackEnd = time.Now().UnixNano()
	cancel()
	time.Sleep(cfg.Post) // normal load after the attack, so its last epoch closes as live
	if err := stopRecorder(); err != nil {
		// A full ring is reported and the recording kept: its gaps are
		// counted in the table.
		b, _ := os.ReadFile(recLog.Name())
		live.Drops = strings.TrimSpace(string(b))
		if !strings.Contains(live.Drops, "lost to a full ring") {
			return nil, fmt.Errorf("escape-sensor record: %w: %s", err, b)
		}
	}
	return live, nil
}

func chownTo(dir, username string) error {
	u, err := user.Lookup(username)
	if err != nil {
		return fmt.Errorf("service user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("service state: %w", err)
	}
	return os.Chmod(dir, 0o755)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
