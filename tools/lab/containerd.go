package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/internal/atomicfile"
)

// containerdConfig is a minimal containerd 2 configuration for one lab
// host, with the standard paths: each host has its own /run and
// /var/lib/containerd. CRI is disabled: ESCAPE drives containerd through
// its Go client, and CRI would want CNI plugins the lab does not install.
const containerdConfig = `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]
` + containerdListeners

// containerdListeners are the sockets of a lab host's containerd: its
// standard one, and no debug or metrics listener.
const containerdListeners = `
[grpc]
  address = "` + InsideContainerd + `"

[ttrpc]
  address = "` + InsideContainerd + `.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
`

// kubeContainerdConfig is the node host's containerd configuration under
// WithKubernetes: the same daemon with its CRI plugin on, for the kubelet.
// restrict_oom_score_adj is required here: these machines lack
// CAP_SYS_RESOURCE, and without it every pod sandbox fails in runc
// ("can't get final child's PID from pipe: EOF"). The sandbox (pause)
// image is the lab's own, imported, as no registry is reachable.
const kubeContainerdConfig = `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
` + containerdListeners + `
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "` + kubePauseRef + `"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/etc/cni/net.d"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
`

// startContainerd launches the host's containerd inside its network and
// mount namespaces, with its own session so it outlives the caller, and
// points h.Containerd (a symlink of the root namespace) at its socket
// through /proc/<pid>/root, so that the lab can import images. With cri
// (the Kubernetes node's host) the CRI plugin is on.
func startContainerd(ctx context.Context, h Host, prefix string, cri bool) error {
	cfg := filepath.Join(h.Dir, "etc", "containerd.toml")
	config := containerdConfig
	if cri {
		config = kubeContainerdConfig
	}
	if err := atomicfile.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return fmt.Errorf("write containerd config for %s: %w", h.Name, err)
	}
	logf, err := os.OpenFile(h.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open containerd log for %s: %w", h.Name, err)
	}
	defer logf.Close()

	bin := filepath.Join(prefix, "bin")
	cmd := exec.Command("nsenter", "--mount="+h.MountNS, "--net="+arp.NetnsPath(h.Netns), "--",
		filepath.Join(bin, "containerd"), "--config", "/etc/escape/containerd.toml")
	// runc looks criu up on PATH and containerd finds its shim there: the
	// private prefix comes first so the CRIU 4.2 wrapper wins.
	cmd.Env = []string{"PATH=" + bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// A daemon must not inherit what our own parent left open without
	// close-on-exec (a `flock LOCK cmd` wrapper's lock fd would then be held
	// for the daemon's whole life). Go marks its own fds close-on-exec;
	// mark the inherited ones too.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("start containerd for %s: mark inherited fds close-on-exec: %w", h.Name, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd for %s: %w", h.Name, err)
	}
	pid := cmd.Process.Pid // nsenter execs containerd: the same process
	if err := atomicfile.WriteFile(h.PIDFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file for %s: %w", h.Name, err)
	}
	_ = os.Remove(h.Containerd)
	if err := os.Symlink(fmt.Sprintf("/proc/%d/root%s", pid, InsideContainerd), h.Containerd); err != nil {
		return fmt.Errorf("link containerd socket of %s: %w", h.Name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("containerd for %s exited at start (%v); last log lines:\n%s", h.Name, err, tail(h.LogFile, 15))
		case <-deadline.C:
			return fmt.Errorf("containerd for %s not serving on %s after 30s; last log lines:\n%s", h.Name, h.Containerd, tail(h.LogFile, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if _, err := containerdVersion(ctx, h.Containerd); err == nil {
				return nil
			}
		}
	}
}

// containerdVersion asks the daemon at socket for its version.
func containerdVersion(ctx context.Context, socket string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := containerd.New(socket, containerd.WithTimeout(time.Second))
	if err != nil {
		return "", err
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	return v.Version, nil
}

// stopProcess sends SIGTERM, waits up to grace, then SIGKILLs.
func stopProcess(pid int, grace time.Duration) {
	if pid <= 1 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold spaces.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func readPID(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, errors.New("bad pid file " + path)
	}
	return pid, nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
