package capmeasure

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// broadFirst are tried first when the sweep takes capabilities away: each
// covers narrower ones (CAP_SYS_ADMIN passes the kernel's bpf and perfmon
// checks, CAP_DAC_OVERRIDE passes CAP_DAC_READ_SEARCH's), so that the set
// found keeps the narrow capability where one suffices.
var broadFirst = []string{"sys_admin", "dac_override", "fowner", "setpcap", "setfcap"}

// Candidates are the capabilities to measure: every one setpriv and the
// kernel name that this process's bounding set holds, broad ones first.
func Candidates() ([]string, error) {
	out, err := exec.Command("setpriv", "--list-caps").Output()
	if err != nil {
		return nil, fmt.Errorf("setpriv --list-caps (util-linux): %w", err)
	}
	var held []string
	for _, name := range strings.Fields(string(out)) {
		if inBound(name) {
			held = append(held, name)
		}
	}
	slices.SortStableFunc(held, func(a, b string) int {
		ia, ib := slices.Index(broadFirst, a), slices.Index(broadFirst, b)
		switch {
		case ia >= 0 && ib >= 0:
			return ia - ib
		case ia >= 0:
			return -1
		case ib >= 0:
			return 1
		}
		return 0
	})
	return held, nil
}

// inBound reads this process's bounding set from /proc.
func inBound(name string) bool {
	bit, ok := capBits[name]
	if !ok {
		return false
	}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			var mask uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &mask)
			return mask&(1<<bit) != 0
		}
	}
	return false
}

// capBits numbers the capabilities (linux/capability.h).
var capBits = func() map[string]uint {
	m := map[string]uint{}
	for i, n := range []string{"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
		"setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
		"sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
		"sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
		"mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
		"checkpoint_restore"} {
		m[n] = uint(i)
	}
	return m
}()

// Removal is one capability the sweep could not take away, with what
// failed without it.
type Removal struct {
	Cap, Step, Err string
}

// Sweep takes each candidate away in turn, for good if every step still
// passes. vary says which set is swept: the bounding set the daemon
// starts under (keep: nil, nothing dropped after the load), or, with the
// daemon started under base, the set it keeps after the load. It returns
// the set that remains, each capability in it with the step that failed
// without it, and the runs made.
func Sweep(ctx context.Context, r *runner, candidates, base []string, afterLoad bool, logf func(string, ...any)) ([]string, []Removal, []Outcome, error) {
	set := slices.Clone(candidates)
	run := func(s []string) (Outcome, error) {
		if afterLoad {
			return r.Run(ctx, base, s)
		}
		return r.Run(ctx, s, nil)
	}
	first, err := run(set)
	if err != nil {
		return nil, nil, nil, err
	}
	runs := []Outcome{first}
	if !first.OK() {
		return nil, nil, runs, fmt.Errorf("with every candidate the run fails at %s: %s", first.Failed, first.Err)
	}
	var needed []Removal
	for _, c := range candidates {
		try := slices.DeleteFunc(slices.Clone(set), func(x string) bool { return x == c })
		o, err := run(try)
		if err != nil {
			return nil, nil, runs, err
		}
		runs = append(runs, o)
		if o.OK() {
			set = try
			logf("without %-18s every step passes: dropped", c)
			continue
		}
		needed = append(needed, Removal{Cap: c, Step: o.Failed, Err: o.Err})
		logf("without %-18s %s fails: %s", c, o.Failed, o.Err)
	}
	return set, needed, runs, nil
}
