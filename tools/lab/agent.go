package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi"
)

// agentConfigFile is a host's /etc/escape/escape.yaml: the sensor and agent
// sections of `escape-sensor run`, with the paths an installed host uses
// (every host has its own, in its mount namespace). extra (YAML with
// sensor: and agent: maps, WithAgentSettings) is merged over them.
func agentConfigFile(inv *Inventory, h Host, extra []byte) ([]byte, error) {
	tls := inside(h.TLS)
	agent := map[string]any{
		"listen":        h.Agent,
		"tls":           map[string]any{"ca": tls.CA, "cert": tls.Cert, "key": tls.Key},
		"bridge":        h.Bridge,
		"netns":         "", // the agent runs inside the host's network namespace
		"cgroup_parent": inv.CgroupParent + "/" + h.Name,
		"criu":          h.CRIU,
		"state":         "/var/lib/escape/agent",
	}
	if inv.SharedStorage {
		agent["shared"] = inv.Shared
	}
	doc := map[string]map[string]any{
		"sensor": {
			"containerd": InsideContainerd,
			"host":       h.Name,
			"namespace":  inv.Namespace,
			"events":     []string{"file:/var/log/escape/events.jsonl"},
			"listen":     "127.0.0.1:9464", // loopback of the host's own netns: no clash
			"control":    "/run/escape/sensor.sock",
			"profiles":   "/var/lib/escape/profiles",
		},
		"agent": agent,
	}
	if len(extra) > 0 {
		var more map[string]map[string]any
		if err := yaml.Unmarshal(extra, &more); err != nil {
			return nil, fmt.Errorf("agent settings: %w", err)
		}
		for section, kv := range more {
			if doc[section] == nil {
				return nil, fmt.Errorf("agent settings: unknown section %q (want sensor or agent)", section)
			}
			for k, v := range kv {
				doc[section][k] = v
			}
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode agent config for %s: %w", h.Name, err)
	}
	return out, nil
}

// writeAgentConfig writes the host's configuration file.
func writeAgentConfig(inv *Inventory, h Host, extra []byte) error {
	data, err := agentConfigFile(inv, h, extra)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(h.Config, data, 0o644); err != nil {
		return fmt.Errorf("write agent config for %s: %w", h.Name, err)
	}
	return nil
}

// StartAgent starts host's node agent (escape-sensor run with the host's
// configuration, in its namespaces, as a daemon) unless it already serves,
// and waits until it answers the plane's Hello. log may be nil.
func StartAgent(ctx context.Context, inv *Inventory, host string, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	h, ok := inv.Host(host)
	if !ok {
		return fmt.Errorf("start agent: no host %q", host)
	}
	if pid, err := readPID(h.AgentPIDFile); err == nil && alive(pid) {
		return waitAgent(ctx, inv, h, pid)
	}
	bin := filepath.Join(inv.BinDir, "escape-sensor")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("start agent on %s: %w (run: make build)", h.Name, err)
	}
	logf, err := os.OpenFile(h.AgentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open agent log for %s: %w", h.Name, err)
	}
	defer logf.Close()
	cmd := Command(context.WithoutCancel(ctx), inv, h.Name, bin, "run", "--config", InsideConfig)
	cmd.Env = []string{"PATH=" + filepath.Dir(h.CRIU) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("start agent on %s: mark inherited fds close-on-exec: %w", h.Name, err)
	}
	log.Info("starting agent", zap.String("host", h.Name), zap.String("listen", h.Agent))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent on %s: %w", h.Name, err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it if it dies while we live
	if err := atomicfile.WriteFile(h.AgentPIDFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write agent pid file for %s: %w", h.Name, err)
	}
	return waitAgent(ctx, inv, h, pid)
}

// waitAgent waits until the agent with pid answers Hello from the plane.
func waitAgent(ctx context.Context, inv *Inventory, h Host, pid int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		if !alive(pid) {
			return fmt.Errorf("agent on %s exited at start; last log lines:\n%s", h.Name, tail(h.AgentLog, 15))
		}
		if last = HelloAgent(ctx, inv, h.Name); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent on %s not answering at %s: %v; last log lines:\n%s", h.Name, h.Agent, last, tail(h.AgentLog, 15))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StopAgent stops host's agent with SIGTERM (SIGKILL after 10 s);
// KillAgent kills it at once. Neither minds an agent that is not running.
func StopAgent(ctx context.Context, inv *Inventory, host string) error {
	return signalAgent(ctx, inv, host, syscall.SIGTERM)
}

// KillAgent kills host's agent with SIGKILL and waits until it is gone.
func KillAgent(ctx context.Context, inv *Inventory, host string) error {
	return signalAgent(ctx, inv, host, syscall.SIGKILL)
}

func signalAgent(ctx context.Context, inv *Inventory, host string, sig syscall.Signal) error {
	h, ok := inv.Host(host)
	if !ok {
		return fmt.Errorf("stop agent: no host %q", host)
	}
	pid, err := readPID(h.AgentPIDFile)
	if errors.Is(err, os.ErrNotExist) || (err == nil && !isAgent(pid)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop agent on %s: %w", h.Name, err)
	}
	_ = syscall.Kill(pid, sig)
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop agent on %s: %w", h.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// isAgent tells a live agent from a pid reused by something else. An
// agent whose binary was rebuilt since it started is still one (its exe
// reads "... (deleted)").
func isAgent(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && alive(pid) && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "escape-sensor"
}

// staleAgent reports whether the agent with pid runs a binary that has
// been replaced since (make build): a reused lab restarts it.
func staleAgent(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && strings.HasSuffix(exe, " (deleted)")
}

// RestartStaleAgents restarts every agent whose binary was rebuilt since
// it started (make build between test runs); log may be nil.
func RestartStaleAgents(ctx context.Context, inv *Inventory, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	for _, h := range inv.Hosts {
		pid, err := readPID(h.AgentPIDFile)
		if err != nil || !isAgent(pid) || !staleAgent(pid) {
			continue
		}
		log.Info("restarting agent on a rebuilt binary", zap.String("host", h.Name))
		if err := StopAgent(ctx, inv, h.Name); err != nil {
			return err
		}
		if err := StartAgent(ctx, inv, h.Name, log); err != nil {
			return err
		}
	}
	return nil
}

// NetnsDialer returns a dialer whose TCP sockets are made inside the
// named network namespace, so that what it reaches it reaches over the
// lab's fabric as a program running there would.
func NetnsDialer(netns string) agentapi.Dialer {
	return func(ctx context.Context, address string) (net.Conn, error) {
		var c net.Conn
		err := arp.Do(netns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, "tcp", address)
			return err
		})
		return c, err
	}
}

// AgentClient returns a client of host's agent as the plane reaches it:
// from the plane's network namespace, with the plane's certificate,
// expecting the agent's identity agent/<host>. expect overrides the
// identity expected (tests check that a wrong one is refused).
func AgentClient(inv *Inventory, host string, expect ...mtls.Identity) (*agentapi.Client, error) {
	h, ok := inv.Host(host)
	if !ok {
		return nil, fmt.Errorf("agent client: no host %q", host)
	}
	return AgentClientWith(inv, h, inv.Plane.TLS, expect...)
}

// AgentClientWith is AgentClient with the certificate files f.
func AgentClientWith(inv *Inventory, h Host, f mtls.Files, expect ...mtls.Identity) (*agentapi.Client, error) {
	src, err := mtls.NewSource(f)
	if err != nil {
		return nil, fmt.Errorf("agent client for %s: %w", h.Name, err)
	}
	id := mtls.Identity{Role: mtls.RoleAgent, Name: h.Name}
	if len(expect) > 0 {
		id = expect[0]
	}
	return agentapi.NewClient(h.Name, h.Agent, agentapi.WithClientCredentials(src.ClientCredentials(id)),
		agentapi.WithDialer(NetnsDialer(inv.Plane.Netns)),
		agentapi.WithDialOptions(grpc.WithChainUnaryInterceptor(mtls.UnaryClientInterceptor(src))))
}

// HelloAgent asks host's agent, as the plane, who it is, and checks that it
// says host.
func HelloAgent(ctx context.Context, inv *Inventory, host string) error {
	c, err := AgentClient(inv, host)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := hello(ctx, c)
	if err != nil {
		return err
	}
	if info.Name != host {
		return fmt.Errorf("agent at %s says it is %q, want %q", c.Address(), info.Name, host)
	}
	return nil
}

func hello(ctx context.Context, c *agentapi.Client) (migrate.HostInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return c.Hello(ctx)
}
