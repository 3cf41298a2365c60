package doctor

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestCRIUAgainstKernel(t *testing.T) {
	cases := []struct {
		major, minor, kmaj, kmin int
		hangs                    bool
	}{
		{4, 1, 6, 16, true}, {4, 1, 6, 18, true}, {3, 17, 7, 0, true},
		{4, 2, 6, 18, false}, {4, 1, 6, 15, false}, {3, 17, 5, 10, false}, {5, 0, 6, 18, false},
	}
	for _, c := range cases {
		err := criuFitsKernel(c.major, c.minor, c.kmaj, c.kmin)
		if (err != nil) != c.hangs {
			t.Errorf("CRIU %d.%d on %d.%d: err=%v, want hang=%v", c.major, c.minor, c.kmaj, c.kmin, err, c.hangs)
		}
		if err != nil && !strings.Contains(err.Error(), "dump will hang") {
			t.Errorf("message %q does not say the dump will hang", err)
		}
	}
}

func TestBlockingDependsOnMode(t *testing.T) {
	rep := Report{Mode: ModeAgent, Results: []Result{
		{Name: "btf", OK: false, NeededBy: []Mode{ModeSensor}},
		{Name: "criu", OK: true, NeededBy: []Mode{ModeAgent}},
	}}
	if !rep.OK() {
		t.Error("a sensor-only failure blocked the plane")
	}
	rep.Mode = ModeSensor
	if rep.OK() || len(rep.Blocking()) != 1 || rep.Blocking()[0].Name != "btf" {
		t.Errorf("sensor mode blocking = %+v", rep.Blocking())
	}
	rep.Mode = ModeAll
	if rep.OK() {
		t.Error("mode all ignored a failure")
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []string{"sensor", "agent", "plane", "lab", "all"} {
		if _, err := ParseMode(m); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
	if _, err := ParseMode("everything"); err == nil || !strings.Contains(err.Error(), "everything") {
		t.Errorf("bad mode accepted or not named: %v", err)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"2.1.9+unknown": true, "v2.0.0": true, "1.7.20": false, "garbage": false, "2": false} {
		if got := versionAtLeast(v, 2, 0); got != want {
			t.Errorf("versionAtLeast(%q, 2.0) = %v", v, got)
		}
	}
}

// TestRunOnThisMachine runs every check for real. Where the machine can
// run the lab (root, CRIU, runc), the kernel-side and runtime checks must
// all pass, and every failed check must name a remedy.
func TestRunOnThisMachine(t *testing.T) {
	rep := Run(context.Background(), ModeAll, WithContainerd("/nonexistent/containerd.sock"))
	if len(rep.Results) != len(checks()) {
		t.Fatalf("%d results for %d checks", len(rep.Results), len(checks()))
	}
	for _, r := range rep.Results {
		if !r.OK && r.Remedy == "" {
			t.Errorf("%s failed without a remedy: %s", r.Name, r.Detail)
		}
		if r.Name == "containerd" && r.OK {
			t.Error("containerd check passed against a socket that does not exist")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: the privileged checks cannot pass here (the doctor reports why)")
	}
	if reason := LabUnavailable(context.Background()); reason != "" {
		t.Skipf("lab unavailable: %s", reason)
	}
	for _, r := range rep.Results {
		if r.Name != "containerd" && !r.OK {
			t.Errorf("%s failed on a machine that can run ESCAPE: %s", r.Name, r.Detail)
		}
	}
}
