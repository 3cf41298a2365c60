package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

func TestParseCapabilities(t *testing.T) {
	got, err := parseCapabilities([]string{"cap_net_admin", "CAP_SYS_ADMIN", " cap_chown "})
	if err != nil || len(got) != 3 || got[0] != cap.NET_ADMIN || got[1] != cap.SYS_ADMIN || got[2] != cap.CHOWN {
		t.Fatalf("parse: %v %v", got, err)
	}
	for _, bad := range [][]string{{"net_admin_x"}, {"cap_net_admin", "CAP_NET_ADMIN"}, {""}} {
		if _, err := parseCapabilities(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseCapabilities(defaultKeepCapabilities); err != nil {
		t.Errorf("the default keep set: %v", err)
	}
}

const envDropChild = "ESCAPE_TEST_DROP_CAPS_CHILD"

// statusCaps reads CapEff, CapPrm and CapBnd from a status file.
func statusCaps(path string) (map[string]uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.HasPrefix(k, "Cap") {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
	}
	return out, nil
}

// The drop, in a child process of its own (it cannot be undone): after it
// every thread of the Go runtime, those started before and after, holds
// the kept set only, effective, permitted and bounding, the ambient set
// is empty, and a program it runs starts with no more.
func TestDropCapabilitiesOnEveryThread(t *testing.T) {
	if os.Getenv(envDropChild) == "1" {
		dropChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (the lab machines run tests as root)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDropCapabilitiesOnEveryThread$", "-test.v")
	cmd.Env = append(os.Environ(), envDropChild+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child failed: %v", err)
	}
}

func dropChild(t *testing.T) {
	// Threads that exist before the drop.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			<-stop
		}()
	}
	core, logs := observer.New(zap.InfoLevel)
	keep := []cap.Value{cap.NET_ADMIN, cap.NET_RAW}
	dropped, err := dropCapabilities(zap.New(core), keep)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1)<<uint(cap.NET_ADMIN) | uint64(1)<<uint(cap.NET_RAW)
	for _, name := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SETPCAP"} {
		found := false
		for _, d := range dropped {
			found = found || d == name
		}
		if !found {
			t.Errorf("%s not among the dropped %v", name, dropped)
		}
	}
	if l := logs.FilterMessage("dropped the capabilities the daemon does not use after the BPF load").All(); len(l) != 1 {
		t.Errorf("drop logged %d times: %v", len(l), logs.All())
	}
	// And threads started after it.
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			<-stop
		}()
	}
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) < 8 {
		t.Fatalf("%d threads (%v)", len(tasks), err)
	}
	for _, task := range tasks {
		c, err := statusCaps(task)
		if err != nil {
			t.Fatal(err)
		}
		if c["CapEff"] != want || c["CapPrm"] != want || c["CapBnd"] != want || c["CapAmb"] != 0 || c["CapInh"] != 0 {
			t.Errorf("%s: %s; want eff, prm and bnd %016x", task, fmtCaps(c), want)
		}
	}
	close(stop)
	wg.Wait()
	// A program run now (as nsenter, iptables or criu lazy-pages are)
	// gets no dropped capability back at exec.
	out, err := exec.Command("grep", "^Cap", "/proc/self/status").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := statusCaps(path)
	if err != nil {
		t.Fatal(err)
	}
	if c["CapEff"] != want || c["CapBnd"] != want {
		t.Errorf("a child program: %s; want %016x", fmtCaps(c), want)
	}
	// A second drop finds nothing more to drop.
	if d, err := dropCapabilities(zap.NewNop(), keep); err != nil || len(d) != 0 {
		t.Errorf("second drop: %v %v", d, err)
	}
}

func fmtCaps(c map[string]uint64) string {
	var parts []string
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		parts = append(parts, fmt.Sprintf("%s %016x", k, c[k]))
	}
	return strings.Join(parts, ", ")
}
