package capmeasure

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/tools/lab"
)

// Report is what a measurement found.
type Report struct {
	Host       string      `json:"host"`
	Kernel     string      `json:"kernel"`
	Candidates []string    `json:"candidates"`
	Start      []string    `json:"start"`       // the bounding set the daemon needs
	StartNeeds []Removal   `json:"start_needs"` // each, with what failed without it
	Keep       []string    `json:"keep"`        // what it keeps after the load
	KeepNeeds  []Removal   `json:"keep_needs"`
	Probes     []Outcome   `json:"probes"`
	Plane      PlaneReport `json:"plane"`
	Runs       []Outcome   `json:"runs"`
	Took       string      `json:"took"`
}

func labRunner(ctx context.Context, host string) (*runner, error) {
	var opts []lab.Option
	if name := os.Getenv("ESCAPE_LAB"); name != "" {
		opts = append(opts, lab.WithName(name))
	}
	st := lab.GetStatus(ctx, opts...)
	if !st.Up || st.Inventory == nil || !st.Inventory.Agents {
		return nil, fmt.Errorf("the lab is not up with its agents: run escape-lab up first")
	}
	return newRunner(st.Inventory, host)
}

func splitCaps(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}

func RunOnce(ctx context.Context, host, caps, keep string) error {
	r, err := labRunner(ctx, host)
	if err != nil {
		return err
	}
	set := splitCaps(caps)
	if caps == "none" {
		set = []string{}
	}
	if caps == "all" {
		if set, err = Candidates(); err != nil {
			return err
		}
	}
	var k []string
	if keep != "-" {
		k = splitCaps(keep)
	}
	began := time.Now()
	o, err := r.Run(ctx, set, k)
	if err != nil {
		return err
	}
	data, _ := json.MarshalIndent(o, "", "  ")
	fmt.Printf("%s\ntook %v\n", data, time.Since(began).Round(time.Millisecond))
	return nil
}

func Measure(ctx context.Context, host, outDir string) error {
	began := time.Now()
	r, err := labRunner(ctx, host)
	if err != nil {
		return err
	}
	cands, err := Candidates()
	if err != nil {
		return err
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	rep := Report{Host: host, Kernel: strings.TrimSpace(string(kernel)), Candidates: cands}
	logf := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}

	logf("sweep 1: the bounding set the daemon starts under (%d candidates)", len(cands))
	start, needs, runs, err := Sweep(ctx, r, cands, nil, false, logf)
	rep.Runs = append(rep.Runs, runs...)
	if err != nil {
		return err
	}
	rep.Start, rep.StartNeeds = start, needs

	logf("sweep 2: what it keeps after the BPF load, started under %v", start)
	keep, kneeds, runs, err := Sweep(ctx, r, start, start, true, logf)
	rep.Runs = append(rep.Runs, runs...)
	if err != nil {
		return err
	}
	rep.Keep, rep.KeepNeeds = keep, kneeds

	// The load alone: what it needs without CAP_SYS_ADMIN, which covers
	// the kernel's bpf and perfmon checks.
	noAdmin := slices.DeleteFunc(slices.Clone(start), func(c string) bool { return c == "sys_admin" })
	for _, p := range [][]string{noAdmin, append(slices.Clone(noAdmin), "bpf"), append(slices.Clone(noAdmin), "bpf", "perfmon")} {
		o, err := r.Run(ctx, dedupe(p), nil)
		if err != nil {
			return err
		}
		logf("probe %v: passed %v, failed %s: %s", p, o.Passed, o.Failed, o.Err)
		rep.Probes = append(rep.Probes, o)
	}
	if rep.Plane, err = MeasurePlane(ctx); err != nil {
		return err
	}
	rep.Took = time.Since(began).Round(time.Second).String()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(outDir, "runs.json"), data, 0o644); err != nil {
		return err
	}
	table := Markdown(rep) + "\n" + PlaneMarkdown(rep.Plane)
	if err := atomicfile.WriteFile(filepath.Join(outDir, "table.md"), []byte(table), 0o644); err != nil {
		return err
	}
	fmt.Print(table)
	return nil
}

func dedupe(s []string) []string {
	out := []string{}
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// Markdown renders the tables docs/operations.md holds: one row per
// capability the daemon needs, whether it is in the start set and in the
// set kept after the load, and what fails without it; then the load's
// own needs without CAP_SYS_ADMIN (the probes).
func Markdown(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| capability | start | kept after the load | without it: the first step that fails, and its error |\n|---|---|---|---|\n")
	why := map[string]string{}
	for _, n := range rep.StartNeeds {
		why[n.Cap] = sanitize(n.Step + ": " + n.Err)
	}
	kwhy := map[string]string{}
	for _, n := range rep.KeepNeeds {
		kwhy[n.Cap] = sanitize(n.Step + ": " + n.Err)
	}
	for _, c := range rep.Start {
		kept := "no"
		if slices.Contains(rep.Keep, c) {
			kept = "yes"
		}
		w := why[c]
		if k, ok := kwhy[c]; ok && k != w {
			w += "; dropped after the load: " + k
		}
		fmt.Fprintf(&b, "| `CAP_%s` | yes | %s | %s |\n", strings.ToUpper(c), kept, escapeCell(w))
	}
	for _, f := range FailurePaths {
		fmt.Fprintf(&b, "| `CAP_%s` | yes | yes | %s |\n", strings.ToUpper(f.Cap), escapeCell(f.Step+": "+f.Err))
	}
	if len(rep.Probes) > 0 {
		fmt.Fprintf(&b, "\n| the load without `CAP_SYS_ADMIN`: bounding set | the first step that fails, and its error |\n|---|---|\n")
		for _, p := range rep.Probes {
			res := "every step passes"
			if !p.OK() {
				res = sanitize(p.Failed + ": " + p.Err)
			}
			caps := make([]string, len(p.Caps))
			for i, c := range p.Caps {
				caps[i] = "CAP_" + strings.ToUpper(c)
			}
			fmt.Fprintf(&b, "| %s | %s |\n", strings.Join(caps, " "), escapeCell(res))
		}
	}
	return b.String()
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// PlaneReport is the plane's measurement: with no capability at all, on
// its port and on a privileged one.
type PlaneReport struct {
	UnprivilegedPortStart string  `json:"unprivileged_port_start"`
	NoCaps                Outcome `json:"no_caps"`
	NoCapsPort443         Outcome `json:"no_caps_port_443"`
	BindService443        Outcome `json:"net_bind_service_port_443"`
}

func MeasurePlane(ctx context.Context) (PlaneReport, error) {
	var opts []lab.Option
	if name := os.Getenv("ESCAPE_LAB"); name != "" {
		opts = append(opts, lab.WithName(name))
	}
	st := lab.GetStatus(ctx, opts...)
	if !st.Up || st.Inventory == nil {
		return PlaneReport{}, fmt.Errorf("the lab is not up: run escape-lab up first")
	}
	inv := st.Inventory
	rep := PlaneReport{UnprivilegedPortStart: unprivilegedPortStart(ctx, inv)}
	var err error
	if rep.NoCaps, err = planeRun(ctx, inv, []string{}, inv.Plane.API); err != nil {
		return rep, err
	}
	if rep.NoCapsPort443, err = planeRun(ctx, inv, []string{}, planeAPIOn(inv, "443")); err != nil {
		return rep, err
	}
	if rep.BindService443, err = planeRun(ctx, inv, []string{"net_bind_service"}, planeAPIOn(inv, "443")); err != nil {
		return rep, err
	}
	return rep, nil
}

// PlaneMarkdown renders the plane's rows.
func PlaneMarkdown(p PlaneReport) string {
	row := func(what string, o Outcome) string {
		res := "every step passes"
		if !o.OK(PlaneSteps) {
			res = fmt.Sprintf("%s: %s", o.Failed, o.Err)
		}
		return fmt.Sprintf("| %s | %s |\n", what, escapeCell(sanitize(res)))
	}
	return "| escape-plane serve | result |\n|---|---|\n" +
		row("no capability, API on its port (7444)", p.NoCaps) +
		row("no capability, API on port 443", p.NoCapsPort443) +
		row("`CAP_NET_BIND_SERVICE` only, API on port 443", p.BindService443) +
		fmt.Sprintf("\n(net.ipv4.ip_unprivileged_port_start = %s)\n", p.UnprivilegedPortStart)
}
