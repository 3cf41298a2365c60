package plane

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

func TestConfigParsesAndLayersPolicy(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(`
sensor: {window: 10}  # the other daemon's section is left alone
plane:
 socket: /run/x/plane.sock
 service_range: 198.18.1.0/24
 service_prefix: 15
 hosts:
   - {name: h1, agent: "198.18.0.11:7443", labels: {datacenter: dc-a}}
   - {name: h2, agent: "agent-2.example.net:7443"}
 defaults:
   checkpoint_interval: 10s
   rollback_limit: 2
 containers:
   - id: web
     image: docker.io/library/busybox:1.36
     args: [/bin/httpd, -f]
     memory: 64MiB
     policy: {class: stateless, stateless_action: replicate}
   - id: db
     image: redis
     args: [/usr/bin/redis-server]
     labels: {escape.mtd/retain: "5", other.label: x}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Socket != "/run/x/plane.sock" || cfg.State != DefaultConfig().State {
		t.Fatalf("paths: %+v", cfg)
	}
	if len(cfg.Hosts) != 2 || cfg.Hosts[0].Labels["datacenter"] != "dc-a" || cfg.Hosts[1].Agent != "agent-2.example.net:7443" {
		t.Fatalf("hosts: %+v", cfg.Hosts)
	}
	defaults := cfg.Defaults.Apply(DefaultPolicy())
	web, err := ResolvePolicy(defaults, cfg.Containers[0].Policy, cfg.Containers[0].Labels)
	if err != nil {
		t.Fatal(err)
	}
	if web.Class != Stateless || web.Stateless != Replicate || web.CheckpointInterval != 10*time.Second || web.RollbackLimit != 2 {
		t.Fatalf("web policy %+v", web)
	}
	db, err := ResolvePolicy(defaults, cfg.Containers[1].Policy, cfg.Containers[1].Labels)
	if err != nil {
		t.Fatal(err)
	}
	if db.Retain != 5 || db.Class != Stateful || db.RollbackWindow != 10*time.Minute {
		t.Fatalf("db policy %+v", db)
	}
	// Labels beat the config.
	p, err := ResolvePolicy(defaults, PolicyOverrides{Retain: ptr(2)}, map[string]string{"escape.mtd/retain": "7"})
	if err != nil || p.Retain != 7 {
		t.Fatalf("label precedence: %+v %v", p, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestConfigRejectsGarbageNamingTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"sockett: /x\n", "sockett"},
		{"defaults: {retian: 3}\n", "retian"},
		{"defaults: {checkpoint_interval: soon}\n", `"soon" is not a duration`},
		{"defaults: {retain: 0}\n", "retain: 0 is outside"},
		{"defaults: {class: stateish}\n", "class"},
		{"defaults: {stateless_action: explode}\n", "stateless_action"},
		{"defaults: {rollback_window: 100ms}\n", "rollback_window"},
		{"state: relative/path.db\n", "state:"},
		{"containers: [{id: Bad_ID, image: busybox, args: [x]}]\n", "id:"},
		{"containers: [{id: a, image: busybox, args: [x], ip: 300.1.1.1}]\n", "ip:"},
		{"containers: [{id: a, image: busybox, args: [x], memory: lots}]\n", "memory:"},
		{"containers: [{id: a, image: busybox, args: [x], labels: {escape.mtd/retians: '3'}}]\n", "escape.mtd/retians"},
		{"containers: [{id: a, image: busybox, args: [x], labels: {escape.mtd/retain: three}}]\n", "escape.mtd/retain"},
		{"containers: [{id: a, image: b, args: [x]}, {id: a, image: b, args: [x]}]\n", "declared twice"},
		{"[not, a, map]\n", "config"},
		{"listen: 0.0.0.0:9465\n", "listen"},
		{"criu_network_lock: ebtables\n", "criu_network_lock"},
		{"criu_network_lock: \"\"\n", "criu_network_lock"},
		{"lazy_restore_from: sometimes\n", "lazy_restore_from"},
		{"lazy_restore_from: 0MiB\n", "lazy_restore_from"},
		{"tls: {ca: pki/ca.crt}\n", "tls.ca"},
		{"api: everywhere\n", "api:"},
		{"lease_ttl: 10ms\n", "lease_ttl"},
		{"audit_keep: 0\n", "audit_keep"},
		{"containers: [{id: a, image: /var/lib/rootfs, args: [x]}]\n", "image"},
		{"containers: [{id: a, image: ../../etc, args: [x]}]\n", "image"},
		{"containers: [{id: a, image: 'UPPER CASE', args: [x]}]\n", "image"},
		{"containers: [{id: a, image: busybox, args: [x], host: h9}]\n", "not in hosts"},
	} {
		_, err := ParseConfig(strings.NewReader(inPlane(tc.yaml)))
		if err == nil {
			t.Errorf("%q: accepted", tc.yaml)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q does not name %q", tc.yaml, err, tc.want)
		}
	}
	for _, doc := range []string{"\x00\x01garbage: [\n", "socket: /x\n", "plane: {}\nsensr: {}\n"} {
		if _, err := ParseConfig(strings.NewReader(doc)); err == nil {
			t.Errorf("%q: accepted", doc)
		}
	}
	if _, err := ParseConfig(strings.NewReader(strings.Repeat("#", maxConfigBytes+10))); err == nil {
		t.Error("oversize config accepted")
	}
	// An empty file has no hosts to protect anything on.
	if _, err := ParseConfig(strings.NewReader("")); err == nil || !strings.Contains(err.Error(), "hosts: at least one host") {
		t.Fatalf("empty config: %v", err)
	}
	for _, tc := range []struct{ hosts, want string }{
		{"[{name: h1, agent: 198.18.0.11}]", "agent"},
		{"[{name: H_1!, agent: '198.18.0.11:7443'}]", "name"},
		{"[{name: h1, agent: '198.18.0.11:7443'}, {name: h1, agent: '198.18.0.12:7443'}]", "listed twice"},
		{"[{name: h1, agent: '198.18.0.11:7443', addr: x}]", "addr"},
	} {
		doc := "plane:\n  service_range: 198.18.1.0/24\n  service_prefix: 15\n  hosts: " + tc.hosts + "\n"
		if _, err := ParseConfig(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hosts %s: %v, want an error naming %q", tc.hosts, err, tc.want)
		}
	}
}

func TestLazyRestoreFrom(t *testing.T) {
	for _, tc := range []struct {
		value string
		from  uint64
		on    bool
	}{
		{"", migrate.DefaultLazyFrom, true},
		{"always", 0, true},
		{"never", 0, false},
		{"64MiB", 64 << 20, true},
	} {
		cfg, err := ParseConfig(strings.NewReader(inPlane("lazy_restore_from: \"" + tc.value + "\"\n")))
		if err != nil {
			t.Fatalf("%q: %v", tc.value, err)
		}
		from, on, err := cfg.lazyRestoreFrom()
		if err != nil || from != tc.from || on != tc.on {
			t.Errorf("%q: from %d, on %v (%v); want %d, %v", tc.value, from, on, err, tc.from, tc.on)
		}
	}
}

// inPlane puts a plane-section body under the file's plane key.
func inPlane(body string) string {
	var b strings.Builder
	b.WriteString("plane:\n")
	// Every valid file names its hosts and service range.
	if !strings.Contains(body, "hosts:") {
		b.WriteString("  hosts: [{name: h1, agent: '198.18.0.11:7443'}, {name: h2, agent: '198.18.0.12:7443'}]\n")
	}
	if !strings.Contains(body, "service_range:") {
		b.WriteString("  service_range: 198.18.1.0/24\n  service_prefix: 15\n")
	}
	for _, l := range strings.SplitAfter(body, "\n") {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"64MiB": 64 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "4096": 4096} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "1.5GiB", "0", "12TB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestLazyAttemptContext: the lazy attempt of a rollback never takes more
// than its budget, nor more than half of what is left, so the full restore
// after a hung lazy one still has time.
func TestLazyAttemptContext(t *testing.T) {
	left := func(ctx context.Context) time.Duration {
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("the lazy attempt must have a deadline")
		}
		return time.Until(dl)
	}
	ctx, cancel := lazyAttemptContext(context.Background())
	defer cancel()
	if d := left(ctx); d > lazyRestoreBudget || d < lazyRestoreBudget-time.Second {
		t.Fatalf("no outer deadline: %v left, want the budget %v", d, lazyRestoreBudget)
	}
	outer, cancelOuter := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelOuter()
	ctx2, cancel2 := lazyAttemptContext(outer)
	defer cancel2()
	if d := left(ctx2); d > 5*time.Second || d < 4*time.Second {
		t.Fatalf("10 s left: the lazy attempt got %v, want half", d)
	}
}
