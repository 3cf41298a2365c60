package capmeasure

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/tools/lab"
)

// PlaneSteps are the control plane's: it touches nothing of any host.
var PlaneSteps = []StepInfo{
	{"serve", "escape-plane serve: state and audit files, its local socket, the mTLS API and /metrics bound, /healthz ok"},
	{"agents", "every host's agent reached over mutual TLS (status: reachable)"},
}

// planeRun runs escape-plane serve in the lab's plane machine under caps,
// with the lab's plane configuration and api (its address:port), and
// checks its steps.
func planeRun(ctx context.Context, inv *lab.Inventory, caps []string, api string) (Outcome, error) {
	out := Outcome{Caps: caps}
	cfg, err := inv.PlaneConfig()
	if err != nil {
		return out, err
	}
	// Paths of the plane machine (its /etc/escape is <plane dir>/etc).
	state := "/etc/escape/capmeasure"
	if err := os.MkdirAll(filepath.Join(inv.Plane.Dir, "etc", "capmeasure"), 0o700); err != nil {
		return out, err
	}
	defer os.RemoveAll(filepath.Join(inv.Plane.Dir, "etc", "capmeasure"))
	cfg.Socket, cfg.State, cfg.Audit = state+"/plane.sock", state+"/plane.db", state+"/audit.jsonl"
	cfg.API, cfg.Listen = api, "127.0.0.1:9475"
	if err := lab.WritePlaneConfig(cfg, filepath.Join(inv.Plane.Dir, "etc", "capmeasure.yaml")); err != nil {
		return out, err
	}
	bin := filepath.Join(inv.BinDir, "escape-plane")
	args := append(setprivArgs(caps), "--", bin, "serve", "--config", "/etc/escape/capmeasure.yaml")
	cmd := lab.Command(context.WithoutCancel(ctx), inv, "plane", "setpriv", args...)
	var logb strings.Builder
	cmd.Stdout, cmd.Stderr = &logb, &logb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return out, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	inPlane := func(name string, a ...string) (string, error) {
		b, err := lab.Command(ctx, inv, "plane", name, a...).CombinedOutput()
		return string(b), err
	}
	steps := map[string]func() error{
		"serve": func() error {
			deadline := time.Now().Add(30 * time.Second)
			for {
				select {
				case err := <-exited:
					exited <- err
					return fmt.Errorf("exited (%v): %s", err, lastLine(logb.String()))
				case <-time.After(300 * time.Millisecond):
				}
				if _, err := inPlane("curl", "-sf", "http://127.0.0.1:9475/healthz"); err == nil {
					out.CapEff, out.CapBnd = procCaps(cmd.Process.Pid)
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("/healthz not ok after 30s: %s", lastLine(logb.String()))
				}
			}
		},
		"agents": func() error {
			deadline := time.Now().Add(30 * time.Second)
			for {
				o, err := inPlane(filepath.Join(inv.BinDir, "escape-plane"), "--socket", cfg.Socket, "status")
				if err == nil && strings.Count(o, `"reachable": true`) == len(inv.Hosts) {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("not every agent reachable after 30s (%v): %s", err, lastLine(o))
				}
				time.Sleep(500 * time.Millisecond)
			}
		},
	}
	for _, s := range PlaneSteps {
		if err := steps[s.Name](); err != nil {
			out.Failed, out.Err = s.Name, oneLine(err.Error())
			return out, nil
		}
		out.Passed = append(out.Passed, s.Name)
	}
	return out, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// unprivilegedPortStart is the lowest port binding needs no capability
// for (net.ipv4.ip_unprivileged_port_start) in the plane machine.
func unprivilegedPortStart(ctx context.Context, inv *lab.Inventory) string {
	b, err := lab.Command(ctx, inv, "plane", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// planeAPIOn is the lab plane's API address with another port.
func planeAPIOn(inv *lab.Inventory, port string) string {
	host, _, err := net.SplitHostPort(inv.Plane.API)
	if err != nil {
		return inv.Plane.API
	}
	return net.JoinHostPort(host, port)
}
