package capmeasure

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/tools/lab/labtest"
)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel)
		}
		if parent := filepath.Dir(dir); parent != dir {
			dir = parent
			continue
		}
		t.Fatal("no go.mod above the working directory")
	}
}

// mask is the /proc/<pid>/status hex of a set.
func mask(t *testing.T, caps []string) uint64 {
	var m uint64
	for _, c := range caps {
		bit, ok := capBits[c]
		if !ok {
			t.Fatalf("unknown capability %q", c)
		}
		m |= 1 << bit
	}
	return m
}

func hex(t *testing.T, s string) uint64 {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatalf("capability mask %q: %v", s, err)
	}
	return v
}

// The table in docs/operations.md, reproduced on a lab host: the daemon
// started under the systemd unit's CapabilityBoundingSet (the table's
// start set) passes every step (the BPF load, the sensor watching a
// container and emitting its epochs, the agent's network, checkpoint,
// restore, staging and lazy restore), and so does a daemon started with
// every capability (a privileged pod); both, once the BPF programs are
// attached, hold exactly the table's kept set, in their effective and
// bounding sets. Without each capability of the table, the step the table
// names fails. The plane needs no capability at all.
func TestDaemonUnderTheMeasuredCapabilities(t *testing.T) {
	inv := labtest.Ensure(t)
	rows, err := ReadTable(repoFile(t, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	unit, err := UnitCapabilities(repoFile(t, "deploy/systemd/escape-sensor.service"))
	if err != nil {
		t.Fatal(err)
	}
	start, kept := StartSet(rows), KeptSet(rows)
	if !sameSet(unit, start) {
		t.Fatalf("escape-sensor.service's CapabilityBoundingSet %v is not the table's start set %v", unit, start)
	}
	r, err := newRunner(inv, "h1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	all, err := Candidates()
	if err != nil {
		t.Fatal(err)
	}
	for name, bound := range map[string][]string{"the unit's bounding set": unit, "every capability (privileged pod)": all} {
		began := time.Now()
		o, err := r.Run(ctx, bound, []string{DaemonDefault})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: passed %v in %v; after the load CapEff %s CapBnd %s", name, o.Passed, time.Since(began).Round(time.Millisecond), o.CapEff, o.CapBnd)
		if !o.OK() {
			t.Errorf("%s: %s fails: %s", name, o.Failed, o.Err)
			continue
		}
		if want := mask(t, kept); hex(t, o.CapEff) != want || hex(t, o.CapBnd) != want {
			t.Errorf("%s: after the BPF load CapEff %s, CapBnd %s; want both %016x (the kept set %v)", name, o.CapEff, o.CapBnd, want, kept)
		}
	}
	for _, row := range rows {
		if !slices.ContainsFunc(Steps, func(s StepInfo) bool { return s.Name == row.Step }) {
			continue // a failure path another test measures (FailurePaths)
		}
		without := slices.DeleteFunc(slices.Clone(unit), func(c string) bool { return c == row.Cap })
		o, err := r.Run(ctx, without, nil)
		if err != nil {
			t.Fatal(err)
		}
		if o.OK() || o.Failed != row.Step {
			t.Errorf("without CAP_%s: failed %q (%s), passed %v; the table says %s fails", strings.ToUpper(row.Cap), o.Failed, o.Err, o.Passed, row.Step)
			continue
		}
		t.Logf("without CAP_%s: %s fails, as the table says: %s", strings.ToUpper(row.Cap), o.Failed, o.Err)
	}

	o, err := planeRun(ctx, inv, []string{}, inv.Plane.API)
	if err != nil {
		t.Fatal(err)
	}
	if !o.OK(PlaneSteps) || hex(t, o.CapEff) != 0 {
		t.Errorf("the plane with no capability: %s fails: %s (CapEff %s)", o.Failed, o.Err, o.CapEff)
	}
	if port := unprivilegedPortStart(ctx, inv); port != "?" && mustAtoi(t, port) > 443 {
		o, err := planeRun(ctx, inv, []string{}, planeAPIOn(inv, "443"))
		if err != nil {
			t.Fatal(err)
		}
		if o.OK(PlaneSteps) || o.Failed != "serve" {
			t.Errorf("the plane with no capability bound port 443 (ip_unprivileged_port_start %s): %+v", port, o)
		}
	}
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(fmt.Errorf("%q: %w", s, err))
	}
	return n
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func TestReadTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ops.md")
	doc := "# x\n## Capabilities\ntext\n\n| capability | start | kept | without |\n|---|---|---|---|\n" +
		"| `CAP_SYS_ADMIN` | yes | yes | start: exited: mount: operation not permitted |\n" +
		"| `CAP_CHOWN` | yes | no | lazy: apply: lchown a\\|b: operation not permitted |\n\n## Next\n| `CAP_KILL` | yes | yes | x: y |\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadTable(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Cap != "sys_admin" || !rows[0].Kept || rows[1].Kept || rows[1].Step != "lazy" ||
		rows[1].Err != "apply: lchown a|b: operation not permitted" {
		t.Errorf("rows %+v", rows)
	}
	if !sameSet(StartSet(rows), []string{"chown", "sys_admin"}) || !sameSet(KeptSet(rows), []string{"sys_admin"}) {
		t.Errorf("sets %v %v", StartSet(rows), KeptSet(rows))
	}
	if err := os.WriteFile(path, []byte("## Capabilities\nno table\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTable(path); err == nil {
		t.Error("a section without a table accepted")
	}
	if got := sanitize("create netns escape-ct-h1-capm-94100-16: x capm-1-2-s"); got != "create netns escape-ct-h1-{id}: x {id}-s" {
		t.Errorf("sanitize: %q", got)
	}
}
