package lab_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// on runs a shell script on a lab machine and returns its output and error.
func on(ctx context.Context, inv *lab.Inventory, where, script string) (string, error) {
	out, err := lab.Command(ctx, inv, where, "sh", "-c", script).CombinedOutput()
	return string(out), err
}

func mustOn(ctx context.Context, t *testing.T, inv *lab.Inventory, where, script string) string {
	t.Helper()
	out, err := on(ctx, inv, where, script)
	if err != nil {
		t.Fatalf("on %s: %s: %v: %s", where, script, err, out)
	}
	return out
}

// TestMachinesAreSeparate: what one host writes under /run, /tmp or
// /etc/escape no other host, nor the plane, nor the root namespace sees;
// the plane has no containerd and no lab directories.
func TestMachinesAreSeparate(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	mark := "escape-isolation-" + hex.EncodeToString(b)
	for _, dir := range []string{"/run", "/tmp", "/var/lib/escape", "/etc/escape"} {
		path := filepath.Join(dir, mark)
		mustOn(ctx, t, inv, "h1", "echo h1 > "+path)
		t.Cleanup(func() { _, _ = on(context.Background(), inv, "h1", "rm -f "+path) })
		if got := mustOn(ctx, t, inv, "h1", "cat "+path); strings.TrimSpace(got) != "h1" {
			t.Fatalf("h1 cannot read back its own %s: %q", path, got)
		}
		for _, where := range []string{"h2", "h3", lab.WherePlane} {
			if out, err := on(ctx, inv, where, "test ! -e "+path); err != nil {
				t.Errorf("%s sees h1's %s: %v %s", where, path, err, out)
			}
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("the root namespace sees h1's %s", path)
		}
	}
	// Each host's containerd is its own, at the standard path.
	for _, h := range inv.Hosts {
		if out := mustOn(ctx, t, inv, h.Name, "grep '^ *host:' /etc/escape/escape.yaml; test -S /run/containerd/containerd.sock && echo sock"); !strings.Contains(out, "host: "+h.Name) || !strings.Contains(out, "sock") {
			t.Errorf("%s: config or containerd socket not its own: %q", h.Name, out)
		}
	}
	for _, script := range []string{"test ! -e /run/containerd", "test ! -e " + inv.Root + "/hosts", "test ! -e " + inv.PKI.Dir + "/ca.key",
		"test ! -e /etc/escape/pki/agent.key", "test -s /etc/escape/pki/plane.key", "test -s /etc/escape/escape.yaml"} {
		if out, err := on(ctx, inv, lab.WherePlane, script); err != nil {
			t.Errorf("plane: %s failed: %v %s", script, err, out)
		}
	}
	for _, script := range []string{"test ! -e " + inv.Root + "/hosts", "test ! -e " + inv.PKI.Dir + "/ca.key", "test -s /run/criu.kdat"} {
		if out, err := on(ctx, inv, "h2", script); err != nil {
			t.Errorf("h2: %s failed: %v %s", script, err, out)
		}
	}
	// CRIU's cache is each host's: up wrote none into the root's /run
	// (where /run is a tmpfs, CRIU's own may be there).
	var fs syscall.Statfs_t
	if syscall.Statfs("/run", &fs) == nil && fs.Type != 0x01021994 { // TMPFS_MAGIC
		ca, err := os.Stat(inv.PKI.CA) // made early in up
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat("/run/criu.kdat"); err == nil && st.ModTime().After(ca.ModTime()) {
			t.Error("the root namespace got a CRIU kdat cache in /run since up: a lab wrote it outside its hosts")
		}
	}
	// With shared storage, every host sees the same files at the same path.
	shared := filepath.Join(inv.Shared, mark)
	mustOn(ctx, t, inv, "h1", "echo shared > "+shared)
	t.Cleanup(func() { os.Remove(shared) })
	if got := strings.TrimSpace(mustOn(ctx, t, inv, "h3", "cat "+shared)); got != "shared" {
		t.Errorf("h3 reads %q from the shared storage", got)
	}
	if out, err := on(ctx, inv, lab.WherePlane, "test ! -e "+shared); err != nil {
		t.Errorf("the plane sees the shared storage: %v %s", err, out)
	}
}

// TestCRIULoadsKdatInsideHost: up computed CRIU's kernel-feature cache in
// each host's own /run, and CRIU run there loads it.
func TestCRIULoadsKdatInsideHost(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := inv.Hosts[1]
	out := mustOn(ctx, t, inv, h.Name, h.CRIU+" check -v4 -o /tmp/kdat-check.log >/dev/null 2>&1; cat /tmp/kdat-check.log; rm -f /tmp/kdat-check.log")
	if !strings.Contains(out, "Loaded kdat cache from /run/criu.kdat") {
		t.Fatalf("criu on %s did not load the cache; its log ends:\n%s", h.Name, lastLines(out, 20))
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// TestAgentsAnswerOverMTLS: from the plane's namespace, with the plane's
// certificate, every agent answers Hello with its own name; an operator's
// certificate, or a client expecting another host, is refused.
func TestAgentsAnswerOverMTLS(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, h := range inv.Hosts {
		info, err := labtest.AgentClient(t, inv, h.Name).Hello(ctx)
		if err != nil {
			t.Fatalf("hello %s: %v", h.Name, err)
		}
		if info.Name != h.Name {
			t.Errorf("agent at %s says it is %q, want %q", h.Agent, info.Name, h.Name)
		}
	}
	h1, _ := inv.Host("h1")
	op, err := lab.AgentClientWith(inv, h1, inv.PKI.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if info, err := hello(ctx, op); err == nil {
		t.Errorf("the agent answered an operator's certificate: %+v", info)
	}
	wrong, err := lab.AgentClient(inv, "h1", mtls.Identity{Role: mtls.RoleAgent, Name: "h2"})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if info, err := hello(ctx, wrong); err == nil {
		t.Errorf("a client expecting agent/h2 accepted h1's agent: %+v", info)
	}
	// A certificate from another CA is refused too.
	other, err := mtls.NewCA("other-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM, keyPEM, err := other.Issue(mtls.Identity{Role: mtls.RolePlane, Name: "plane"},
		mtls.WithValidity(time.Now().Add(-time.Minute), time.Now().Add(30*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	f := mtls.Files{CA: inv.PKI.CA, Cert: filepath.Join(dir, "p.crt"), Key: filepath.Join(dir, "p.key")}
	if err := os.WriteFile(f.Cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// mtls refuses to load a certificate that does not chain to its CA
	// bundle: the bundle here is the other CA, so only the agent refuses.
	f.CA = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(f.CA, other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if stranger, err := lab.AgentClientWith(inv, h1, f); err == nil {
		defer stranger.Close()
		if info, err := hello(ctx, stranger); err == nil {
			t.Errorf("the agent answered a plane certificate from another CA: %+v", info)
		}
	}
}

// hello asks c's agent who it is, within a few seconds.
func hello(ctx context.Context, c *agentapi.Client) (migrate.HostInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return c.Hello(ctx)
}

// TestPlaneBaseConfig: the plane namespace's configuration loads as the
// plane's and names every host's agent.
func TestPlaneBaseConfig(t *testing.T) {
	inv := labtest.Ensure(t)
	cfg, err := plane.LoadConfig(inv.Plane.Config)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Hosts) != len(inv.Hosts) || cfg.API != inv.Plane.API || len(cfg.Containers) != 0 {
		t.Fatalf("plane config: %d hosts, api %q, %d containers", len(cfg.Hosts), cfg.API, len(cfg.Containers))
	}
	for i, h := range cfg.Hosts {
		if h.Name != inv.Hosts[i].Name || h.Agent != inv.Hosts[i].Agent {
			t.Errorf("host %d: %+v", i, h)
		}
	}
}

// TestInProcessPlaneReachesAgents: a plane run in the test's process, its
// connections made in the plane namespace, reaches every agent over the
// fabric with the lab's plane certificate.
func TestInProcessPlaneReachesAgents(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := inv.PlaneConfigIn(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := plane.New(cfg, plane.WithAgentDialer(labtest.PlaneDialer(inv)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, h := range inv.Hosts {
		link, err := p.Host(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := link.Hello(hctx)
		hcancel()
		if err != nil || info.Name != h.Name {
			t.Errorf("plane's hello to %s: %+v %v", h.Name, info, err)
		}
	}
}

// TestEscapeLabExec runs `escape-lab exec` from the repository's bin.
func TestEscapeLabExec(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin := filepath.Join(inv.BinDir, "escape-lab")
	out, err := exec.CommandContext(ctx, bin, "exec", "h2", "--", "cat", "/etc/escape/escape.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "host: h2") {
		t.Fatalf("escape-lab exec h2: %v: %s", err, out)
	}
	err = exec.CommandContext(ctx, bin, "exec", "plane", "--", "sh", "-c", "exit 7").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("escape-lab exec passes on the command's status: got %v", err)
	}
	out, err = lab.Command(ctx, inv, lab.WhereClient, "ip", "-brief", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), inv.Client.IP.String()) {
		t.Fatalf("client namespace: %v: %s", err, out)
	}
	// The fault subcommands drive the same controls as the API.
	cli := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("escape-lab %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = lab.HealPlaneLink(inv, "h2"); _ = lab.StartAgent(context.Background(), inv, "h2", nil) })
	cli("cut-plane-link", "h2")
	answers(ctx, t, inv, "h2", false, 5*time.Second)
	cli("heal-plane-link", "h2")
	answers(ctx, t, inv, "h2", true, 10*time.Second)
	cli("kill-agent", "h2")
	answers(ctx, t, inv, "h2", false, 5*time.Second)
	cli("start-agent", "h2")
	answers(ctx, t, inv, "h2", true, time.Second)
}
