package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Mode is what the caller wants to run; it decides which checks must pass.
type Mode string

const (
	ModeSensor Mode = "sensor" // the eBPF sensor
	// ModeAgent is the node agent's share of checkpoint, restore and
	// migration, on this host. The plane itself needs none of these
	// checks: it reaches hosts only through their agents.
	ModeAgent Mode = "agent"
	ModeLab   Mode = "lab" // the local lab of test hosts
	ModeAll   Mode = "all"
)

// ParseMode validates a mode name from the command line.
func ParseMode(s string) (Mode, error) {
	if s == "plane" { // its name before the plane reached hosts over the network
		return ModeAgent, nil
	}
	switch m := Mode(s); m {
	case ModeSensor, ModeAgent, ModeLab, ModeAll:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q (want sensor, agent, lab or all)", s)
}

// Result is the outcome of one check.
type Result struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found (a version, a path, an id).
	Detail string `json:"detail"`
	// Remedy says how to fix a failed check; empty when OK.
	Remedy string `json:"remedy,omitempty"`
	// NeededBy lists the modes that cannot run without this check.
	NeededBy []Mode `json:"needed_by"`
}

// Report is the outcome of a doctor run.
type Report struct {
	Mode    Mode     `json:"mode"`
	Results []Result `json:"results"`
}

// OK reports whether every check the report's mode needs passed.
func (r Report) OK() bool { return len(r.Blocking()) == 0 }

// Blocking lists the failed checks the report's mode needs.
func (r Report) Blocking() []Result {
	var out []Result
	for _, res := range r.Results {
		if !res.OK && (r.Mode == ModeAll || slices.Contains(res.NeededBy, r.Mode)) {
			out = append(out, res)
		}
	}
	return out
}

// check is one preflight check: it returns what it found, or an error
// whose text is the detail and a remedy.
type check struct {
	name     string
	neededBy []Mode
	run      func(ctx context.Context, c *config) (detail string, remedy string, err error)
}

type config struct {
	prefix     string
	labRoot    string
	containerd []string
}

// Option configures Run.
type Option func(*config)

// WithPrefix sets where make deps installed containerd and CRIU.
func WithPrefix(dir string) Option { return func(c *config) { c.prefix = dir } }

// WithLabRoot sets the lab whose containerd daemons are checked when no
// socket is given explicitly.
func WithLabRoot(dir string) Option { return func(c *config) { c.labRoot = dir } }

// WithContainerd sets the containerd sockets to check.
func WithContainerd(sockets ...string) Option {
	return func(c *config) { c.containerd = append(c.containerd, sockets...) }
}

func checks() []check {
	sensor := []Mode{ModeSensor}
	runtime := []Mode{ModeAgent, ModeLab}
	return []check{
		{"root", []Mode{ModeSensor, ModeAgent, ModeLab}, checkRoot},
		{"btf", sensor, checkBTF},
		{"bpf", sensor, checkBPF},
		{"raw_syscalls tracepoint", sensor, checkTracepoint},
		{"cgroup id", sensor, checkCgroupID},
		{"containerd", []Mode{ModeSensor, ModeAgent}, checkContainerd},
		{"containerd binaries", []Mode{ModeLab}, checkContainerdBinaries},
		{"runc", runtime, checkRunc},
		{"criu", runtime, checkCRIU},
		{"iptables", runtime, checkIptables},
		{"nftables", runtime, checkNftables},
		{"netns", runtime, checkNetns},
	}
}

// Run performs every check and reports them against mode.
func Run(ctx context.Context, mode Mode, opts ...Option) Report {
	c := &config{prefix: "/opt/escape", labRoot: "/var/lib/escape-lab"}
	for _, o := range opts {
		o(c)
	}
	rep := Report{Mode: mode}
	for _, ch := range checks() {
		detail, remedy, err := ch.run(ctx, c)
		res := Result{Name: ch.name, OK: err == nil, Detail: detail, NeededBy: ch.neededBy}
		if err != nil {
			res.Detail = err.Error()
			res.Remedy = remedy
		}
		rep.Results = append(rep.Results, res)
	}
	return rep
}

// LabUnavailable returns why the lab cannot run on this machine, or "" if
// it can. Integration tests skip with this reason elsewhere.
func LabUnavailable(ctx context.Context, opts ...Option) string {
	rep := Run(ctx, ModeLab, opts...)
	var why []string
	for _, r := range rep.Results {
		if !r.OK && slices.Contains(r.NeededBy, ModeLab) {
			why = append(why, r.Name+": "+r.Detail+" ("+r.Remedy+")")
		}
	}
	return strings.Join(why, "; ")
}
