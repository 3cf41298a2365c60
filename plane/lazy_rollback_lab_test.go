package plane_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/migrate/node"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// A rollback restores its checkpoint lazily from Config.LazyRestoreFrom on.
// The copy comes back with the checkpoint's state, nothing is left holding
// its namespace or in its CRIU file, and the audit says it was lazy. When
// the lazy-pages daemon dies mid-copy, the same checkpoint is restored in
// full instead and the audit says why, also when only CRIU saw the death,
// after the copy's sockets were live. A daemon that stalls costs the lazy
// attempt its budget (lazyRestoreBudget), and the full restore still runs.
func TestPlaneLazyRollback(t *testing.T) {
	for _, tc := range []struct {
		name      string
		octet     int
		fault     string // the daemon's signal; "": none
		unnoticed time.Duration
	}{
		{"completes", 243, "", 0},
		{"daemon dies", 244, "KILL", 0},
		{"daemon dies unnoticed", 245, "KILL", time.Second},
		{"daemon stalls", 246, "STOP", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := labtest.Ensure(t)
			h1, _ := inv.Host("h1")
			if h1.CRIU == "" {
				t.Fatal("the lab's inventory names no CRIU binary, so the lazy restore would go untested (re-create the lab)")
			}
			faulty := tc.fault != ""
			if faulty {
				// h1's agent runs the lazy-pages daemon from its agent.criu:
				// the stand-in goes where h1 sees it (its /var/lib/escape),
				// and h1's agent restarts on it until the test ends.
				wrapper := labtest.LazyDaemonFault(t, hostTestsDir(t, h1), h1.CRIU, tc.fault, tc.unnoticed)
				inside := filepath.Join(labtest.TestsDir, filepath.Base(wrapper))
				labtest.AgentSettings(t, inv, "h1", func(a map[string]any) { a["criu"] = inside })
			}
			cfg := labConfig(t, inv, plane.PolicyOverrides{CleanEpochs: ptr(1), RollbackLimit: ptr(10)})
			cfg.LazyRestoreFrom = "always" // the test's redis is far below the default
			p := openLabPlane(t, cfg, inv)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			id := fmt.Sprintf("pl-lazy-%d", tc.octet)
			c, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: lab.ImageRef("redis"), Host: "h1", IP: fmt.Sprintf("198.18.1.%d", tc.octet),
				Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}, "test")
			if err != nil {
				t.Fatal(err)
			}
			agent, err := p.Host("h1")
			if err != nil {
				t.Fatal(err)
			}
			if info, err := agent.Hello(ctx); err != nil || !info.LazyRestore {
				t.Fatalf("h1 cannot restore lazily (%+v, %v), so the lazy rollback would go untested", info, err)
			}
			rc := labtest.DialRedis(t, inv, c.Spec.IP.Addr(), 15*time.Second)
			if n := incr(t, rc); n != 1 {
				t.Fatalf("INCR = %d, want 1", n)
			}
			if _, err := p.HandleReport(ctx, plane.Report{Container: id, Epoch: 1, Threshold: 3}, "test"); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Checkpoint(ctx, id, false, "test"); err != nil {
				t.Fatal(err)
			}
			incr(t, rc)
			incr(t, rc) // 3 now; the checkpoint holds 1

			res, err := p.Rollback(ctx, id, []string{"test"}, "test")
			if err != nil {
				t.Fatalf("rollback: %v", err)
			}
			if res.Lazy == faulty {
				t.Fatalf("rollback lazy = %v, want %v", res.Lazy, !faulty)
			}
			t.Logf("rollback: lazy %v, downtime %v (kill %v, restore %v)", res.Lazy, time.Duration(res.Downtime), time.Duration(res.Kill), time.Duration(res.Restore))
			if st := status(ctx, t, p, "h1", id); st.Status != migrate.Running {
				t.Fatalf("after the rollback the container is %s, want running", st.Status)
			}
			rc = labtest.DialRedis(t, inv, c.Spec.IP.Addr(), 15*time.Second)
			if n := incr(t, rc); n != 2 {
				t.Fatalf("INCR after the rollback = %d, want 2 (the checkpoint's 1, plus one)", n)
			}

			// Nothing left holding the namespace: no chain lists a hold
			// rule (listed, not probed, so that a missing namespace fails
			// the test rather than passing it). The copy's namespace is
			// named inside h1 only.
			out, err := lab.Command(ctx, inv, "h1", "nsenter", "--net="+arp.NetnsPath(node.CtNetns("h1", id)), "iptables", "-w", "-S").CombinedOutput()
			if err != nil {
				t.Fatalf("list the copy's filter rules: %v: %s", err, out)
			}
			if strings.Contains(string(out), "escape-hold") {
				t.Fatalf("the copy's namespace is still held:\n%s", out)
			}
			// The agent's CRIU file of the container, as the root
			// namespace sees h1's /var/lib/escape/agent.
			conf, err := os.ReadFile(filepath.Join(h1.Dir, "state", "agent", "criu", id+".conf"))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(conf), "lazy-pages") {
				t.Fatalf("the CRIU file still says lazy-pages:\n%s", conf)
			}
			if !auditHas(t, auditPath(p), func(ev plane.AuditEvent) bool {
				if ev.Action != "rollback" || ev.Outcome != "ok" || ev.Container != id || ev.Details["lazy"] != !faulty {
					return false
				}
				said := strings.Contains(strings.Join(ev.Reasons, "\n"), "lazy restore of checkpoint")
				return said == faulty
			}) {
				t.Fatalf("no audited rollback with lazy=%v (and, after a fault, its reason)", !faulty)
			}
		})
	}
}

// hostTestsDir is h's /var/lib/escape/tests (labtest.TestsDir) as the root
// namespace sees it: what a test writes there, the host finds at once.
func hostTestsDir(t *testing.T, h lab.Host) string {
	t.Helper()
	dir := filepath.Join(h.Dir, "state", "tests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
