package systemd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/control"
	"github.com/escape-mtd/escape/tools/capmeasure"
)

// unit is a parsed unit file: section -> key -> values in order.
type unit map[string]map[string][]string

// parseUnit reads systemd's unit syntax (systemd.syntax(7)): [Section]
// headers, Key=Value lines, # and ; comments, backslash continuations.
func parseUnit(data []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	line, n := "", 0
	for sc.Scan() {
		n++
		raw := sc.Text()
		trimmed := strings.TrimSpace(raw)
		if line == "" && (trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			line += cont + " "
			continue
		}
		line += trimmed
		l := line
		line = ""
		if strings.HasPrefix(l, "[") {
			if !strings.HasSuffix(l, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n, l)
			}
			section = l[1 : len(l)-1]
			if _, dup := u[section]; dup {
				return nil, fmt.Errorf("line %d: section [%s] twice", n, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %q before any section", n, l)
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not Key=Value", n, l)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if v == "" {
			// An empty assignment resets a list; it stays present, empty,
			// because for some keys (CapabilityBoundingSet=) that is the
			// setting.
			u[section][k] = []string{}
			continue
		}
		u[section][k] = append(u[section][k], v)
	}
	if line != "" {
		return nil, errors.New("file ends in a continuation")
	}
	return u, sc.Err()
}

// get is the last value of key (systemd's rule for single-valued keys).
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// words splits every value of a list key (After=a b, After=c).
func (u unit) words(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// knownKeys are the directives these units may use. A key outside this list
// is an error: a typo that systemd would only warn about and ignore. Add a
// directive here only after checking systemd.directives(7).
var knownKeys = map[string][]string{
	"Unit": {"Description", "Documentation", "After", "Wants", "Requires", "Before", "BindsTo", "PartOf"},
	"Service": {"Type", "ExecStart", "Restart", "RestartSec", "KillSignal", "KillMode", "TimeoutStopSec",
		"StateDirectory", "StateDirectoryMode", "RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve",
		"ConfigurationDirectory", "LimitMEMLOCK", "LimitNOFILE", "OOMScoreAdjust", "UMask",
		"ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectSystem", "ProtectClock", "ProtectKernelModules", "ProtectKernelTunables",
		"ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname", "ProtectProc", "NoNewPrivileges", "RestrictSUIDSGID",
		"RestrictNamespaces", "MemoryDenyWriteExecute", "RestrictRealtime", "LockPersonality",
		"SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber", "RestrictAddressFamilies",
		"CapabilityBoundingSet"},
	"Install": {"WantedBy"},
}

// mountNamespaceKeys each give the service a private mount namespace
// (systemd.exec(5)), in which mounts do not propagate back to the host.
var mountNamespaceKeys = []string{"PrivateTmp", "PrivateDevices", "ProtectHome", "ProtectSystem",
	"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname",
	"ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem",
	"BindPaths", "BindReadOnlyPaths", "MountFlags", "RootDirectory", "RootImage", "PrivateMounts"}

// parseSpan reads a systemd time span ("11min", "60s", "1min 30s", "90").
func parseSpan(s string) (time.Duration, error) {
	units := map[string]time.Duration{"": time.Second, "us": time.Microsecond, "ms": time.Millisecond,
		"s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour}
	re := regexp.MustCompile(`^\s*(\d+)\s*([a-z]*)`)
	var d time.Duration
	rest := s
	for strings.TrimSpace(rest) != "" {
		m := re.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("time span %q", s)
		}
		n, _ := strconv.Atoi(m[1])
		u, ok := units[m[2]]
		if !ok {
			return 0, fmt.Errorf("time span %q: unit %q", s, m[2])
		}
		d += time.Duration(n) * u
		rest = rest[len(m[0]):]
	}
	if s == "" || s == "infinity" {
		return 0, fmt.Errorf("time span %q: want a bounded span", s)
	}
	return d, nil
}

// want is what a daemon needs from its unit.
type want struct {
	binary, command string
	minStop         time.Duration // TimeoutStopSec at least
	after, wants    []string
	stateDirs       []string // StateDirectory
	runtimeDir      string   // RuntimeDirectory: the socket's directory below /run
	hardening       map[string]string
	noMountNS       bool     // the agent's netns and CRIU mounts must reach the host
	families        []string // RestrictAddressFamilies, exactly
	noCaps          bool     // CapabilityBoundingSet= (empty)
	caps            []string // CapabilityBoundingSet, exactly (setpriv names), when not nil
	mustNot         []string // keys that would break the daemon
}

// operationsGuide holds the measured capability table ("Capabilities").
const operationsGuide = "../../docs/operations.md"

// measured is the table's start set: what the daemon needs at start, as
// tools/capmeasure measured it.
func measured() []string {
	rows, err := capmeasure.ReadTable(operationsGuide)
	if err != nil {
		panic(err)
	}
	return capmeasure.StartSet(rows)
}

func sensorWant() want {
	return want{caps: measured(), binary: "/usr/local/bin/escape-sensor", command: "run", minStop: 30 * time.Second,
		after: []string{"containerd.service", "network-online.target"}, wants: []string{"containerd.service", "network-online.target"},
		stateDirs:  []string{"escape-sensor", strings.TrimPrefix(agentStateDefault, "/var/lib/")},
		runtimeDir: strings.TrimPrefix(filepath.Dir(control.DefaultPath), "/run/"),
		hardening:  map[string]string{"NoNewPrivileges": "yes", "LockPersonality": "yes", "RestrictRealtime": "yes"},
		noMountNS:  true,
		// netlink: netns, addresses, nftables; packet: gratuitous ARP.
		families: []string{"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"},
		// The agent creates network namespaces; a seccomp filter would be
		// inherited by CRIU; the agent writes setuid files of containers.
		mustNot: []string{"RestrictNamespaces", "SystemCallFilter", "MemoryDenyWriteExecute", "RestrictSUIDSGID"}}
}

// agentStateDefault is the agent's default state directory
// (cmd/escape-sensor/agent.go, defaultAgentConfig; package main cannot be
// imported, and deploy/escape.yaml, tested against it, says the same).
const agentStateDefault = "/var/lib/escape-agent"

func planeWant() want {
	// The plane waits up to 10 minutes for an action under way on SIGTERM.
	return want{binary: "/usr/local/bin/escape-plane", command: "serve", minStop: 11 * time.Minute,
		after: []string{"network-online.target"}, wants: []string{"network-online.target"},
		stateDirs: []string{"escape-plane"}, runtimeDir: strings.TrimPrefix(filepath.Dir(plane.DefaultConfig().Socket), "/run/"),
		hardening: map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
			"PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
			"ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes",
			"SystemCallFilter": "@system-service", "UMask": "0077"},
		// The plane holds no host path and moves no address.
		families: []string{"AF_UNIX", "AF_INET", "AF_INET6"}, noCaps: true}
}

// check returns every way u falls short of w.
func check(u unit, w want) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for section, keys := range u {
		known, ok := knownKeys[section]
		if !ok {
			bad("unknown section [%s]", section)
			continue
		}
		for k := range keys {
			if !slices.Contains(known, k) {
				bad("[%s] %s: not a directive these units use (typo?)", section, k)
			}
		}
	}
	if u.get("Unit", "Description") == "" {
		bad("[Unit] Description is empty")
	}
	// The daemons do not call sd_notify: notify would never become active.
	if t := u.get("Service", "Type"); t != "simple" {
		bad("[Service] Type=%s, want simple (the daemons do not implement sd_notify)", t)
	}
	exec := strings.Fields(u.get("Service", "ExecStart"))
	wantExec := []string{w.binary, w.command, "--config", "/etc/escape/escape.yaml"}
	if !slices.Equal(exec, wantExec) {
		bad("[Service] ExecStart=%s, want %s", strings.Join(exec, " "), strings.Join(wantExec, " "))
	}
	if r := u.get("Service", "Restart"); r != "on-failure" {
		bad("[Service] Restart=%s, want on-failure", r)
	}
	if s := u.get("Service", "KillSignal"); s != "SIGTERM" {
		bad("[Service] KillSignal=%s, want SIGTERM (the daemons shut down gracefully on it)", s)
	}
	if d, err := parseSpan(u.get("Service", "TimeoutStopSec")); err != nil {
		bad("[Service] TimeoutStopSec: %v", err)
	} else if d < w.minStop {
		bad("[Service] TimeoutStopSec=%v, want at least %v", d, w.minStop)
	}
	for _, a := range w.after {
		if !slices.Contains(u.words("Unit", "After"), a) {
			bad("[Unit] After= lacks %s", a)
		}
	}
	for _, a := range w.wants {
		if !slices.Contains(u.words("Unit", "Wants"), a) && !slices.Contains(u.words("Unit", "Requires"), a) {
			bad("[Unit] Wants= lacks %s", a)
		}
	}
	if s := u.words("Service", "StateDirectory"); !slices.Equal(s, w.stateDirs) {
		bad("[Service] StateDirectory=%s, want %s", strings.Join(s, " "), strings.Join(w.stateDirs, " "))
	}
	if r := u.get("Service", "RuntimeDirectory"); r != w.runtimeDir {
		bad("[Service] RuntimeDirectory=%s, want %s (the directory of the daemon's default socket)", r, w.runtimeDir)
	}
	if c := u.get("Service", "ConfigurationDirectory"); c != "escape" {
		bad("[Service] ConfigurationDirectory=%s, want escape (/etc/escape)", c)
	}
	for h, v := range w.hardening {
		if got := u.get("Service", h); got != v {
			bad("[Service] %s=%s, want %s", h, got, v)
		}
	}
	if w.families != nil {
		if got := u.words("Service", "RestrictAddressFamilies"); !slices.Equal(got, w.families) {
			bad("[Service] RestrictAddressFamilies=%s, want %s", strings.Join(got, " "), strings.Join(w.families, " "))
		}
	}
	if w.noCaps {
		if vs, ok := u["Service"]["CapabilityBoundingSet"]; !ok || len(vs) != 0 {
			bad("[Service] CapabilityBoundingSet=%s, want it empty (no capability)", strings.Join(vs, " "))
		}
	}
	if w.caps != nil {
		vs, ok := u["Service"]["CapabilityBoundingSet"]
		var got []string
		for _, c := range u.words("Service", "CapabilityBoundingSet") {
			got = append(got, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
		if !ok || len(vs) == 0 || !sameSet(got, w.caps) {
			bad("[Service] CapabilityBoundingSet=%s, want the measured set %s (docs/operations.md, \"Capabilities\")",
				strings.Join(u.words("Service", "CapabilityBoundingSet"), " "), strings.Join(w.caps, " "))
		}
	}
	for _, k := range w.mustNot {
		if _, ok := u["Service"][k]; ok {
			bad("[Service] %s is set: it would break the agent (see the unit's comments)", k)
		}
	}
	if w.noMountNS {
		for _, k := range mountNamespaceKeys {
			if v := u.get("Service", k); v != "" && v != "no" && v != "false" {
				bad("[Service] %s=%s gives the service its own mount namespace: the netns and CRIU mounts the agent makes would not reach containerd", k, v)
			}
		}
	}
	if !slices.Contains(u.words("Install", "WantedBy"), "multi-user.target") {
		bad("[Install] WantedBy= lacks multi-user.target")
	}
	return errs
}

func load(t *testing.T, name string) (unit, []byte) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return u, data
}

func TestSystemdUnitsHaveWhatTheDaemonsNeed(t *testing.T) {
	for name, w := range map[string]want{"escape-sensor.service": sensorWant(), "escape-plane.service": planeWant()} {
		u, _ := load(t, name)
		for _, err := range check(u, w) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The checks fail where they should: each broken copy of a unit is
// rejected with a message naming the directive.
func TestSystemdUnitChecksRejectBrokenUnits(t *testing.T) {
	for _, tc := range []struct {
		name, file, from, to, want string
	}{
		{"plane stop timeout too short", "escape-plane.service", "TimeoutStopSec=11min", "TimeoutStopSec=5min", "TimeoutStopSec=5m0s, want at least 11m0s"},
		{"wrong config path", "escape-sensor.service", "--config /etc/escape/escape.yaml", "--config /etc/escape.yaml", "ExecStart="},
		{"wrong binary", "escape-plane.service", "/usr/local/bin/escape-plane serve", "/usr/bin/escape-plane serve", "ExecStart="},
		{"restart always", "escape-sensor.service", "Restart=on-failure", "Restart=always", "Restart=always, want on-failure"},
		{"notify without sd_notify", "escape-plane.service", "Type=simple", "Type=notify", "Type=notify"},
		{"SIGKILL", "escape-plane.service", "KillSignal=SIGTERM", "KillSignal=SIGKILL", "KillSignal=SIGKILL"},
		{"private /tmp on the agent", "escape-sensor.service", "NoNewPrivileges=yes", "NoNewPrivileges=yes\nPrivateTmp=yes", "PrivateTmp=yes gives the service its own mount namespace"},
		{"agent without packet sockets", "escape-sensor.service", " AF_NETLINK AF_PACKET", " AF_NETLINK", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK, want"},
		{"agent under a namespace ban", "escape-sensor.service", "NoNewPrivileges=yes", "NoNewPrivileges=yes\nRestrictNamespaces=yes", "RestrictNamespaces is set"},
		{"plane with capabilities", "escape-plane.service", "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "CapabilityBoundingSet=CAP_NET_ADMIN, want it empty"},
		{"plane with netlink", "escape-plane.service", "AF_INET AF_INET6\n", "AF_INET AF_INET6 AF_NETLINK\n", "RestrictAddressFamilies="},
		{"plane sandbox loosened", "escape-plane.service", "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem=full, want strict"},
		{"agent state directory missing", "escape-sensor.service", "StateDirectory=escape-sensor escape-agent", "StateDirectory=escape-sensor", "StateDirectory=escape-sensor, want escape-sensor escape-agent"},
		{"typo", "escape-plane.service", "ProtectHome=yes", "ProtectHome=yes\nProtectHomes=yes", "ProtectHomes: not a directive"},
		{"sensor without containerd", "escape-sensor.service", "Wants=containerd.service", "Wants=", "Wants= lacks containerd.service"},
		{"runtime directory not the socket's", "escape-sensor.service", "RuntimeDirectory=escape-sensor", "RuntimeDirectory=escape", "RuntimeDirectory=escape, want escape-sensor"},
		{"agent without packet capability", "escape-sensor.service", " CAP_NET_RAW CAP_SYS_PTRACE\n", " CAP_SYS_PTRACE\n", "want the measured set"},
		{"agent with an unmeasured capability", "escape-sensor.service", " CAP_SYS_PTRACE\n", " CAP_SYS_PTRACE CAP_SYS_CHROOT\n", "want the measured set"},
		{"agent without a bounding set", "escape-sensor.service", "CapabilityBoundingSet=", "#CapabilityBoundingSet=", "want the measured set"},
		{"unbounded stop", "escape-plane.service", "TimeoutStopSec=11min", "TimeoutStopSec=infinity", "TimeoutStopSec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, data := load(t, tc.file)
			if !bytes.Contains(data, []byte(tc.from)) {
				t.Fatalf("%s no longer contains %q: update this test", tc.file, tc.from)
			}
			u, err := parseUnit(bytes.Replace(data, []byte(tc.from), []byte(tc.to), 1))
			if err != nil {
				t.Fatal(err)
			}
			w := sensorWant()
			if strings.Contains(tc.file, "plane") {
				w = planeWant()
			}
			for _, err := range check(u, w) {
				if strings.Contains(err.Error(), tc.want) {
					t.Logf("rejected: %v", err)
					return
				}
			}
			t.Fatalf("broken copy accepted; want an error containing %q", tc.want)
		})
	}
}

func TestSystemdUnitParser(t *testing.T) {
	u, err := parseUnit([]byte("# c\n[Unit]\nAfter=a b\nAfter=c \\\n  d\n; c\n[Service]\nExecStart=/x\nExecStart=\nExecStart=/y\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := u.words("Unit", "After"); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("After: %v", got)
	}
	if got := u["Service"]["ExecStart"]; !slices.Equal(got, []string{"/y"}) {
		t.Errorf("ExecStart after a reset: %v", got)
	}
	for _, bad := range []string{"Key=v\n", "[Unit\n", "[Unit]\nnovalue\n", "[Unit]\n[Unit]\n", "[Unit]\nA=b \\\n"} {
		if _, err := parseUnit([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for s, d := range map[string]time.Duration{"11min": 11 * time.Minute, "60s": time.Minute, "90": 90 * time.Second, "1min 30s": 90 * time.Second, "2h": 2 * time.Hour} {
		if got, err := parseSpan(s); err != nil || got != d {
			t.Errorf("parseSpan(%q) = %v, %v; want %v", s, got, err, d)
		}
	}
	for _, s := range []string{"", "infinity", "5 fortnights", "x"} {
		if _, err := parseSpan(s); err == nil {
			t.Errorf("parseSpan(%q) accepted", s)
		}
	}
}

// systemd-analyze verify, offline, in a scratch root that holds the host's
// stock units, these units and stand-ins for the binaries (verify checks
// that ExecStart's program exists and is executable).
func TestSystemdAnalyzeVerify(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (package systemd); the unit checks above still ran")
	}
	units := []string{"escape-sensor.service", "escape-plane.service"}
	out, err := verify(t, tool, units, nil)
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// And it does fail: a bad value and an unknown directive are reported.
	out, err = verify(t, tool, units, map[string][2]string{"escape-plane.service": {"Restart=on-failure", "Restart=sometimes\nKillSignall=SIGTERM"}})
	if err == nil && out == "" {
		t.Fatal("systemd-analyze verify accepted a broken unit")
	}
	for _, want := range []string{"sometimes", "KillSignall"} {
		if !strings.Contains(out, want) {
			t.Errorf("systemd-analyze verify on a broken unit does not mention %s:\n%s", want, out)
		}
	}
}

// verify runs systemd-analyze verify on units (edited as asked) and returns
// its output about them.
func verify(t *testing.T, tool string, units []string, edit map[string][2]string) (string, error) {
	t.Helper()
	root := t.TempDir()
	stock := ""
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			stock = d
			break
		}
	}
	if stock == "" {
		t.Skip("no stock unit directory (/usr/lib/systemd/system): systemd-analyze cannot resolve default dependencies")
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", stock, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", stock, err, out)
	}
	for _, d := range []string{"etc/systemd/system", "usr/local/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range units {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := edit[name]; ok {
			data = bytes.Replace(data, []byte(e[0]), []byte(e[1]), 1)
		}
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(root, "usr/local/bin", strings.TrimSuffix(name, ".service"))
		if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(tool, append([]string{"verify", "--root=" + root, "--man=no"}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "LANG=C")
	raw, err := cmd.CombinedOutput()
	// Keep what is about our units; the host's stock units are not ours.
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, "escape-") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n"), err
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// The daemon keeps, after its BPF load, the table's kept set by default:
// the example configuration holds the defaults (cmd/escape-sensor's
// deploy_config_test checks that), and it must be the measured set.
func TestKeptCapabilitiesAreTheMeasuredOnes(t *testing.T) {
	rows, err := capmeasure.ReadTable(operationsGuide)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../escape.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sensor struct {
			Drop bool     `yaml:"drop_capabilities"`
			Keep []string `yaml:"keep_capabilities"`
		} `yaml:"sensor"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, c := range doc.Sensor.Keep {
		keep = append(keep, strings.TrimPrefix(c, "cap_"))
	}
	if !doc.Sensor.Drop || !sameSet(keep, capmeasure.KeptSet(rows)) {
		t.Errorf("deploy/escape.yaml: drop_capabilities %v, keep_capabilities %v; want true and the table's kept set %v",
			doc.Sensor.Drop, keep, capmeasure.KeptSet(rows))
	}
	// The kept set is within the start set: nothing is kept that the
	// daemon could not have started with.
	for _, c := range capmeasure.KeptSet(rows) {
		if !slices.Contains(capmeasure.StartSet(rows), c) {
			t.Errorf("CAP_%s kept but not in the start set", strings.ToUpper(c))
		}
	}
}
