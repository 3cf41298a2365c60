package main

import (
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// defaultKeepCapabilities are the capabilities the daemon still uses once
// its BPF programs are attached, as measured (docs/operations.md,
// "Capabilities"; tools/capmeasure): the node agent's steps. The load's own
// (CAP_BPF, CAP_PERFMON) are not among them: once the programs are attached
// and the maps and ring buffer open, the sensor works on their file
// descriptors, which the kernel checks when they are made, not when they
// are used.
var defaultKeepCapabilities = []string{
	"cap_sys_admin", "cap_dac_override", "cap_fowner", "cap_chown", "cap_kill", "cap_net_admin", "cap_net_raw",
	"cap_sys_ptrace",
}

// parseCapabilities reads capability names (cap_net_admin or
// CAP_NET_ADMIN), each once.
func parseCapabilities(names []string) ([]cap.Value, error) {
	var out []cap.Value
	for _, n := range names {
		v, err := cap.FromName(strings.ToLower(strings.TrimSpace(n)))
		if err != nil {
			return nil, fmt.Errorf("capability %q: not a capability name such as cap_net_admin", n)
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("capability %s named twice", n)
		}
		out = append(out, v)
	}
	return out, nil
}

// dropCapabilities keeps only keep, on every thread, in the effective,
// permitted and inheritable sets and in the bounding set (so that no
// program the daemon runs, such as nsenter, iptables or a criu lazy-pages
// daemon, gets a dropped one back at exec), clears the ambient set, and
// drops CAP_SETPCAP last unless kept. It runs once, after the BPF load.
// The library's psx mechanism applies each change to all the Go runtime's
// threads at once: capset(2) and PR_CAPBSET_DROP act on the calling thread
// only.
//
// A capability to keep that the process does not have is not an error
// (a unit or a pod may grant less; the step that needs it fails and says
// so). Without CAP_SETPCAP the bounding set cannot shrink: the process's
// own sets still do, and the warning says that programs it runs could get
// the dropped capabilities back.
func dropCapabilities(log *zap.Logger, keep []cap.Value) ([]string, error) {
	proc := cap.GetProc()
	setpcap, err := proc.GetFlag(cap.Effective, cap.SETPCAP)
	if err != nil {
		return nil, fmt.Errorf("drop capabilities: %w", err)
	}
	var gone, bound []cap.Value
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if slices.Contains(keep, v) {
			continue
		}
		inBound, err := cap.GetBound(v)
		if err != nil {
			return nil, fmt.Errorf("drop capabilities: read the bounding set: %w", err)
		}
		perm, err := proc.GetFlag(cap.Permitted, v)
		if err != nil {
			return nil, fmt.Errorf("drop capabilities: %w", err)
		}
		if perm || inBound {
			gone = append(gone, v)
		}
		if inBound && v != cap.SETPCAP {
			bound = append(bound, v)
		}
	}
	if len(gone) == 0 {
		log.Info("no capability to drop after the BPF load", zap.String("capabilities", proc.String()))
		return nil, nil
	}
	if setpcap {
		if err := cap.DropBound(bound...); err != nil {
			return nil, fmt.Errorf("drop %s from the bounding set: %w", names(bound), err)
		}
		// Last: CAP_SETPCAP itself, whose only use here was the above.
		if !slices.Contains(keep, cap.SETPCAP) {
			if err := cap.DropBound(cap.SETPCAP); err != nil {
				return nil, fmt.Errorf("drop CAP_SETPCAP from the bounding set: %w", err)
			}
		}
	}
	if err := cap.ResetAmbient(); err != nil {
		return nil, fmt.Errorf("drop capabilities: clear the ambient set: %w", err)
	}
	next, err := proc.Dup()
	if err != nil {
		return nil, fmt.Errorf("drop capabilities: %w", err)
	}
	for _, f := range []cap.Flag{cap.Effective, cap.Permitted, cap.Inheritable} {
		if err := next.SetFlag(f, false, gone...); err != nil {
			return nil, fmt.Errorf("drop capabilities: %w", err)
		}
	}
	if err := next.SetProc(); err != nil {
		return nil, fmt.Errorf("drop %s from the process: %w", names(gone), err)
	}
	dropped := strings.Split(names(gone), ",")
	fields := []zap.Field{zap.Strings("dropped", dropped), zap.String("kept", cap.GetProc().String())}
	if !setpcap && len(bound) > 0 {
		log.Warn("dropped capabilities from the process only: without CAP_SETPCAP the bounding set keeps them, and a program the daemon runs gets them back",
			fields...)
	} else {
		log.Info("dropped the capabilities the daemon does not use after the BPF load", fields...)
	}
	return dropped, nil
}

func names(vs []cap.Value) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strings.ToUpper(v.String())
	}
	return strings.Join(out, ",")
}
