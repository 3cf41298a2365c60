package capmeasure

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/lab"
)

// DaemonDefault, as the only capability to keep, keeps the daemon's
// default (keep_capabilities).
const DaemonDefault = "default"

// setprivArgs bounds a program to caps: the bounding set holds them only,
// the inheritable and ambient sets are empty, so that root's program starts
// with exactly caps permitted and effective, and passes no more to what it
// runs.
func setprivArgs(caps []string) []string {
	bound := "-all"
	for _, c := range caps {
		bound += ",+" + c
	}
	return []string{"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=" + bound}
}

// startDaemon stops the host's agent and starts escape-sensor run in its
// place, under caps, with its usual configuration and two flags: an epoch
// event for every epoch, flushed within a second (the watch step).
func (r *runner) startDaemon(ctx context.Context, caps, keep []string) (pid int, err error) {
	if err := lab.StopAgent(ctx, r.inv, r.host.Name); err != nil {
		return 0, err
	}
	if err := r.unmountMaskDir(ctx); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(r.host.AgentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	start, _ := logf.Seek(0, 2)
	args := append(setprivArgs(caps), "--", r.bin, "run", "--config", lab.InsideConfig, "--epoch-events", "--flush", "1s")
	switch {
	case keep == nil:
		args = append(args, "--drop-capabilities=false")
	case len(keep) == 1 && keep[0] == DaemonDefault:
		args = append(args, "--drop-capabilities")
	default:
		named := make([]string, len(keep))
		for i, c := range keep {
			named[i] = "cap_" + c
		}
		args = append(args, "--drop-capabilities", "--keep-capabilities="+strings.Join(named, ","))
	}
	cmd := lab.Command(context.WithoutCancel(ctx), r.inv, r.host.Name, "setpriv", args...)
	cmd.Env = []string{"PATH=" + filepath.Dir(r.host.CRIU) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The lab's StopAgent and StartAgent find it by this file (nsenter and
	// setpriv exec, so the pid is the daemon's).
	if err := atomicfile.WriteFile(r.host.AgentPIDFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return pid, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			return 0, fmt.Errorf("exited (%v): %s", err, logSince(r.host.AgentLog, start))
		case <-time.After(200 * time.Millisecond):
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		herr := lab.HelloAgent(hctx, r.inv, r.host.Name)
		cancel()
		if herr == nil {
			return pid, nil
		}
		if time.Now().After(deadline) {
			return pid, fmt.Errorf("not answering after 30s: %v: %s", herr, logSince(r.host.AgentLog, start))
		}
	}
}

// unmountMaskDir takes away the read-only tmpfs an agent mounts at start
// for CRIU's masked directories (migrate/node/mounts.go), which a killed
// agent leaves behind: each run starts as on a booted host, where the
// daemon must mount it.
func (r *runner) unmountMaskDir(ctx context.Context) error {
	data, err := os.ReadFile(r.host.Config)
	if err != nil {
		return err
	}
	var cfg struct {
		Agent struct {
			State string `yaml:"state"`
		} `yaml:"agent"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil || cfg.Agent.State == "" {
		return fmt.Errorf("agent state directory in %s: %v", r.host.Config, err)
	}
	dir := filepath.Join(cfg.Agent.State, "empty")
	for range 10 {
		if lab.Command(ctx, r.inv, r.host.Name, "mountpoint", "-q", dir).Run() != nil {
			return nil
		}
		if out, err := lab.Command(ctx, r.inv, r.host.Name, "umount", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("umount %s on %s: %v: %s", dir, r.host.Name, err, out)
		}
	}
	return fmt.Errorf("%s on %s: still a mount point after 10 umounts", dir, r.host.Name)
}

// logSince is the first error of the daemon's log after offset, else its
// last line.
func logSince(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return err.Error()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	last := ""
	for sc.Scan() {
		line := sc.Text()
		var rec struct {
			Level, Msg, Error string
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level != "" {
			if rec.Level == "error" || rec.Level == "fatal" {
				return rec.Msg + ": " + rec.Error
			}
			continue
		}
		if strings.TrimSpace(line) != "" {
			last = line
		}
	}
	return last
}

// procCaps reads a process's CapEff and CapBnd.
func procCaps(pid int) (eff, bnd string) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			bnd = strings.TrimSpace(v)
		}
	}
	return eff, bnd
}

// leaveProcess starts a process as nobody (uid 65534) in the cgroup of
// container id, where the agent finds and kills leftovers: a process of
// another user, which only CAP_KILL may signal. It returns a channel
// closed once the process is gone, and what kills it if the agent did not.
func (r *runner) leaveProcess(id string) (<-chan struct{}, func(), error) {
	// Where the agent looks (migrate/node/leftovers.go): the unified
	// hierarchy, else the v1 controllers every task belongs to; the first
	// that holds the host's cgroup parent, as a cgroup file system.
	var dir string
	for _, hier := range []string{"", "pids", "memory", "freezer"} {
		parent := filepath.Join("/sys/fs/cgroup", hier, r.inv.CgroupParent, r.host.Name)
		var fs unix.Statfs_t
		if unix.Statfs(parent, &fs) == nil && (fs.Type == unix.CGROUP2_SUPER_MAGIC || fs.Type == unix.CGROUP_SUPER_MAGIC) {
			dir = filepath.Join(parent, id)
			break
		}
	}
	if dir == "" {
		return nil, nil, fmt.Errorf("leftover: no cgroup hierarchy holds %s/%s", r.inv.CgroupParent, r.host.Name)
	}
	// The task's cgroup went with it: make it again, as a restore that
	// runc never learnt of leaves it.
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, nil, fmt.Errorf("leftover: %w", err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "sleep", "600")
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("leftover: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-done
		_ = os.Remove(dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		stop()
		return nil, nil, fmt.Errorf("leftover: move pid %d into %s: %w", cmd.Process.Pid, dir, err)
	}
	return done, stop, nil
}

// waitEpoch waits for an epoch event of the container in the host's event
// file, written after since.
func (r *runner) waitEpoch(ctx context.Context, id string, since time.Time) error {
	path := filepath.Join(r.host.LogDir, "events.jsonl")
	for {
		if found, err := hasEpoch(path, id, since); err != nil || found {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.New("no epoch event for the container: the sensor does not watch it")
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func hasEpoch(path, id string, since time.Time) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e events.Event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if e.Container != nil && e.Container.ID == id && e.Epoch != nil && e.Time.After(since) {
			return true, nil
		}
	}
	return false, sc.Err()
}

// cleanup puts the host's agent back as the lab runs it and removes what a
// run left.
func (r *runner) cleanup(ctx context.Context, ids []string, img migrate.ImageName) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	_ = lab.StopAgent(ctx, r.inv, r.host.Name)
	if err := lab.StartAgent(ctx, r.inv, r.host.Name, nil); err != nil {
		return
	}
	agent, err := lab.AgentClient(r.inv, r.host.Name)
	if err != nil {
		return
	}
	defer agent.Close()
	for _, id := range ids {
		_, _ = agent.Remove(ctx, id)
	}
	_, _ = agent.DropImage(ctx, img)
}
