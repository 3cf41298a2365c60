package plane

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/escape-mtd/escape/internal/config"
	"github.com/escape-mtd/escape/migrate"
	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "30s", "10m" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 30s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 30s", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%s is not a duration such as 30s", b)
	}
	*d = Duration(v)
	return nil
}

// Config is the plane's configuration file.
type Config struct {
	// Socket is the local unix socket of the operator API: root only.
	Socket string `yaml:"socket"`
	// Listen is the loopback address:port of /metrics and /healthz
	// (empty: off). Read-only: actions go through the API.
	Listen string `yaml:"listen"`
	// API is the address:port of the operator API over mutual TLS (empty:
	// off): a client certificate with the operator role may act.
	API string `yaml:"api"`
	// TLS is the plane's own certificate, its key and the CA of every
	// identity it trusts (internal/mtls). The plane reaches agents only
	// with it.
	TLS TLSFiles `yaml:"tls"`
	// State is the bbolt database.
	State string `yaml:"state"`
	// Audit is the JSON-lines audit log; it is rotated past AuditMaxSize,
	// AuditKeep old files kept.
	Audit        string `yaml:"audit"`
	AuditMaxSize string `yaml:"audit_max_size"`
	AuditKeep    int    `yaml:"audit_keep"`
	// ServiceRange is where container addresses are allocated, and
	// ServicePrefix the prefix length of the L2 segment they sit on (the
	// hosts' bridges).
	ServiceRange  string `yaml:"service_range"`
	ServicePrefix int    `yaml:"service_prefix"`
	// Hosts are the machines the plane places containers on, each reached
	// through its node agent.
	Hosts []HostConfig `yaml:"hosts"`
	// LeaseTTL is how long an address lease lasts, during a handoff,
	// without the plane's renewal: what a host that stops answering in the
	// middle of a migration costs before its address may move.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// NetworkLock is how CRIU keeps a container's network quiet while it
	// dumps and restores it: "nftables" (the default: CRIU adds and drops
	// one table over netlink, inside its own process) or "iptables" (CRIU's
	// own default: it runs iptables-restore and ip6tables-restore, about
	// 4 ms an exec here, 2 execs on a dump and 7 on a restore, all of it
	// time the container is frozen).
	NetworkLock string `yaml:"criu_network_lock"`
	// LazyRestoreFrom is the size from which restores bring memory in
	// lazily, for migrations (the source copy's memory) and rollbacks (the
	// checkpoint's size) alike: a size such as 16MiB (the default,
	// migrate.DefaultLazyFrom), "always" or "never".
	LazyRestoreFrom string `yaml:"lazy_restore_from"`
	// Defaults is the policy every container starts from.
	Defaults PolicyOverrides `yaml:"defaults"`
	// Containers are deployed at start if not already placed.
	Containers []ContainerConfig `yaml:"containers"`
	// Adopt is how the plane takes under protection the containers users
	// started themselves (adopt.go).
	Adopt AdoptConfig `yaml:"adopt"`
	// Kubernetes makes the cluster's nodes the hosts, with a Lease and
	// Events (kubeconfig.go); the hosts key must then be empty.
	Kubernetes KubeConfig `yaml:"kubernetes"`
}

// AdoptConfig tunes adoption: every Interval the plane asks each agent for
// its host's containers labelled escape.mtd/protect=true (in the
// namespaces the agent adopts from, its adopt.namespaces), takes the new
// ones under protection and releases those that lost the label or are
// gone.
type AdoptConfig struct {
	// Interval between two rounds (default 10s; 1s to 10m).
	Interval Duration `yaml:"interval"`
	// Off turns adoption off: nothing is adopted or released.
	Off bool `yaml:"off"`
}

// TLSFiles are the paths of a certificate, its key and the CA: files an
// operator issued with `escape-plane certs`, or a cert-manager Secret
// mounted as a directory (tls.crt, tls.key, ca.crt).
type TLSFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// HostConfig is one host of the inventory.
type HostConfig struct {
	// Name is the host's name, as its agent's certificate names it.
	Name string `yaml:"name"`
	// Agent is the address:port its agent listens on.
	Agent string `yaml:"agent"`
	// Labels tell hosts apart for the destination model: datacenter,
	// network, kernel, runtime, config.
	Labels map[string]string `yaml:"labels"`
}

// ContainerConfig declares one protected container.
type ContainerConfig struct {
	ID string `yaml:"id" json:"id"`
	// Image is an OCI image reference, run from each host's content
	// store; never a path.
	Image  string            `yaml:"image" json:"image"`
	Args   []string          `yaml:"args" json:"args,omitempty"`
	Env    []string          `yaml:"env" json:"env,omitempty"`
	Host   string            `yaml:"host" json:"host,omitempty"`
	IP     string            `yaml:"ip" json:"ip,omitempty"`
	Memory string            `yaml:"memory" json:"memory,omitempty"`
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	Policy PolicyOverrides   `yaml:"policy" json:"policy,omitzero"`
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		Socket:          "/run/escape-plane/plane.sock",
		Listen:          "127.0.0.1:9465",
		State:           "/var/lib/escape-plane/state.db",
		Audit:           "/var/lib/escape-plane/audit.jsonl",
		AuditMaxSize:    "64MiB",
		AuditKeep:       5,
		TLS:             TLSFiles{CA: "/etc/escape/pki/ca.crt", Cert: "/etc/escape/pki/plane.crt", Key: "/etc/escape/pki/plane.key"},
		ServicePrefix:   24,
		LeaseTTL:        Duration(10 * time.Second),
		NetworkLock:     "nftables",
		LazyRestoreFrom: fmt.Sprintf("%dMiB", migrate.DefaultLazyFrom>>20),
		Adopt:           AdoptConfig{Interval: Duration(10 * time.Second)},
		Kubernetes:      DefaultKubeConfig(),
	}
}

// maxConfigBytes bounds a configuration file.
const maxConfigBytes = 1 << 20

// ParseConfig reads the plane section of ESCAPE's configuration file
// (internal/config: one YAML file, a section per daemon). Unknown keys and
// invalid values are errors that name the key.
func ParseConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxConfigBytes {
		return Config{}, fmt.Errorf("config larger than %d bytes", maxConfigBytes)
	}
	cfg := DefaultConfig()
	if err := config.Decode(data, "plane", &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LoadConfig reads the configuration file at path.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks every field, naming the key of each problem.
func (c Config) Validate() error {
	var errs []error
	for key, p := range map[string]string{"socket": c.Socket, "state": c.State, "audit": c.Audit,
		"tls.ca": c.TLS.CA, "tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", key, p))
		}
	}
	if c.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.Listen); err != nil || !ap.Addr().IsLoopback() {
			errs = append(errs, fmt.Errorf("listen: %q: want a loopback address:port such as 127.0.0.1:9465", c.Listen))
		}
	}
	if c.API != "" {
		if _, err := netip.ParseAddrPort(c.API); err != nil {
			errs = append(errs, fmt.Errorf("api: %q: want an address:port such as 198.18.0.3:7444", c.API))
		}
	}
	if _, err := ParseSize(c.AuditMaxSize); err != nil {
		errs = append(errs, fmt.Errorf("audit_max_size: %w", err))
	}
	if c.AuditKeep < 1 || c.AuditKeep > 100 {
		errs = append(errs, fmt.Errorf("audit_keep: %d is outside 1..100", c.AuditKeep))
	}
	if _, _, err := c.serviceRange(); err != nil {
		errs = append(errs, err)
	}
	if d := time.Duration(c.LeaseTTL); d < time.Second || d > 10*time.Minute {
		errs = append(errs, fmt.Errorf("lease_ttl: %v is outside 1s..10m", d))
	}
	if d := time.Duration(c.Adopt.Interval); !c.Adopt.Off && (d < time.Second || d > 10*time.Minute) {
		errs = append(errs, fmt.Errorf("adopt.interval: %v is outside 1s..10m", d))
	}
	switch {
	case c.Kubernetes.Enabled && len(c.Hosts) > 0:
		errs = append(errs, errors.New("hosts: must be empty with kubernetes.enabled: the hosts are the cluster's nodes"))
	case !c.Kubernetes.Enabled && len(c.Hosts) == 0:
		errs = append(errs, errors.New("hosts: at least one host is required"))
	}
	if err := c.Kubernetes.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := ValidateHosts(c.Hosts); err != nil {
		errs = append(errs, err)
	}
	names := map[string]bool{}
	for _, h := range c.Hosts {
		names[h.Name] = true
	}
	if c.NetworkLock != "nftables" && c.NetworkLock != "iptables" {
		errs = append(errs, fmt.Errorf("criu_network_lock: %q: want nftables or iptables", c.NetworkLock))
	}
	if _, _, err := c.lazyRestoreFrom(); err != nil {
		errs = append(errs, fmt.Errorf("lazy_restore_from: %w", err))
	}
	if err := c.Defaults.Apply(DefaultPolicy()).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("defaults: %w", err))
	}
	seen := map[string]bool{}
	for i, cc := range c.Containers {
		key := fmt.Sprintf("containers[%d]", i)
		if err := cc.validate(c.Defaults); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", key, cc.ID, err))
		}
		if cc.Host != "" && !names[cc.Host] && !c.Kubernetes.Enabled {
			errs = append(errs, fmt.Errorf("%s (%s): host: %q is not in hosts", key, cc.ID, cc.Host))
		}
		if seen[cc.ID] {
			errs = append(errs, fmt.Errorf("%s: id %q declared twice", key, cc.ID))
		}
		seen[cc.ID] = true
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: section plane: %w", errors.Join(errs...))
	}
	return nil
}

var hostNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// validHostName checks a host name: what a certificate can name
// (internal/mtls), and what migrate's names are built from.
func validHostName(s string) error {
	if !hostNameRE.MatchString(s) {
		return fmt.Errorf("%q: want [a-z0-9][a-z0-9_.-]{0,62}", s)
	}
	return nil
}

// serviceRange is ServiceRange parsed, with the prefix of the segment.
func (c Config) serviceRange() (netip.Prefix, int, error) {
	r, err := netip.ParsePrefix(c.ServiceRange)
	if err != nil || !r.Addr().Is4() || r.Bits() > 30 {
		return netip.Prefix{}, 0, fmt.Errorf("service_range: %q: want an IPv4 prefix of at least 4 addresses, such as 198.18.1.0/24", c.ServiceRange)
	}
	if c.ServicePrefix < 1 || c.ServicePrefix > r.Bits() {
		return netip.Prefix{}, 0, fmt.Errorf("service_prefix: /%d must contain the service range %v", c.ServicePrefix, r)
	}
	return r.Masked(), c.ServicePrefix, nil
}

// lazyRestoreFrom is LazyRestoreFrom parsed: whether restores may be lazy,
// and from which size.
func (c Config) lazyRestoreFrom() (bytes uint64, on bool, err error) {
	switch c.LazyRestoreFrom {
	case "":
		return migrate.DefaultLazyFrom, true, nil
	case "always":
		return 0, true, nil
	case "never":
		return 0, false, nil
	}
	n, err := ParseSize(c.LazyRestoreFrom)
	if err != nil {
		return 0, false, fmt.Errorf("%w, always or never", err)
	}
	return n, true, nil
}

func (cc ContainerConfig) validate(defaults PolicyOverrides) error {
	var errs []error
	if err := migrate.ValidID(cc.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	if err := migrate.ValidImageRef(cc.Image); err != nil {
		errs = append(errs, err)
	}
	if cc.IP != "" {
		if a, err := netip.ParseAddr(cc.IP); err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("ip: %q is not an IPv4 address", cc.IP))
		}
	}
	if cc.Memory != "" {
		if _, err := ParseSize(cc.Memory); err != nil {
			errs = append(errs, fmt.Errorf("memory: %w", err))
		}
	}
	if _, err := ResolvePolicy(defaults.Apply(DefaultPolicy()), cc.Policy, cc.Labels); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ParseSize parses "64MiB", "1GiB", "512KiB" or a plain byte count.
func ParseSize(s string) (uint64, error) {
	units := map[string]uint64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "": 1}
	keys := []string{"KiB", "MiB", "GiB", ""}
	sort.SliceStable(keys, func(a, b int) bool { return len(keys[a]) > len(keys[b]) })
	for _, u := range keys {
		if !strings.HasSuffix(s, u) {
			continue
		}
		var n uint64
		num := strings.TrimSuffix(s, u)
		if num == "" {
			break
		}
		for _, ch := range num {
			if ch < '0' || ch > '9' || n > (1<<40) {
				return 0, fmt.Errorf("%q is not a size such as 64MiB", s)
			}
			n = n*10 + uint64(ch-'0')
		}
		if n == 0 {
			return 0, fmt.Errorf("%q: size must be positive", s)
		}
		return n * units[u], nil
	}
	return 0, fmt.Errorf("%q is not a size such as 64MiB", s)
}
