package plane

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
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
	// Socket is the unix socket of the API (sensors and operators).
	Socket string `yaml:"socket"`
	// Listen is the loopback address:port of /metrics and /healthz
	// (empty: off). Read-only: actions go through the socket.
	Listen string `yaml:"listen"`
	// AllowedUIDs may use the socket, besides root.
	AllowedUIDs []uint32 `yaml:"allowed_uids"`
	// State is the bbolt database.
	State string `yaml:"state"`
	// Audit is the JSON-lines audit log.
	Audit string `yaml:"audit"`
	// LabRoot is where the lab inventory lives (hosts, shared storage).
	LabRoot string `yaml:"lab_root"`
	// SharedDir is the plane's directory on shared storage (root
	// filesystems, CRIU configs, checkpoints); default <shared>/escape-plane.
	SharedDir string `yaml:"shared_dir"`
	// NetworkLock is how CRIU keeps a container's network quiet while it
	// dumps and restores it: "nftables" (the default: CRIU adds and drops
	// one table over netlink, inside its own process) or "iptables" (CRIU's
	// own default: it runs iptables-restore and ip6tables-restore, about
	// 4 ms an exec here, 2 execs on a dump and 7 on a restore, all of it
	// time the container is frozen).
	NetworkLock string `yaml:"criu_network_lock"`
	// LazyRestoreFrom is the size from which restores bring memory in
	// lazily (migrate.RestoreLazily), for migrations (the source copy's
	// memory) and rollbacks (the checkpoint's size) alike: a size such as
	// 16MiB (the default, migrate.DefaultLazyFrom), "always" or "never".
	LazyRestoreFrom string `yaml:"lazy_restore_from"`
	// Defaults is the policy every container starts from.
	Defaults PolicyOverrides `yaml:"defaults"`
	// Containers are deployed at start if not already placed.
	Containers []ContainerConfig `yaml:"containers"`
}

// ContainerConfig declares one protected container.
type ContainerConfig struct {
	ID string `yaml:"id"`
	// Image is a lab image name (busybox, redis) or an absolute rootfs path.
	Image  string            `yaml:"image"`
	Args   []string          `yaml:"args"`
	Env    []string          `yaml:"env"`
	Host   string            `yaml:"host"`
	IP     string            `yaml:"ip"`
	Memory string            `yaml:"memory"`
	Labels map[string]string `yaml:"labels"`
	Policy PolicyOverrides   `yaml:"policy"`
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		Socket:          "/run/escape-plane/plane.sock",
		Listen:          "127.0.0.1:9465",
		State:           "/var/lib/escape-plane/state.db",
		Audit:           "/var/lib/escape-plane/audit.jsonl",
		LabRoot:         "/var/lib/escape-lab",
		NetworkLock:     "nftables",
		LazyRestoreFrom: fmt.Sprintf("%dMiB", migrate.DefaultLazyFrom>>20),
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
	for key, p := range map[string]string{"socket": c.Socket, "state": c.State, "audit": c.Audit, "lab_root": c.LabRoot} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", key, p))
		}
	}
	if c.Listen != "" {
		if ap, err := netip.ParseAddrPort(c.Listen); err != nil || !ap.Addr().IsLoopback() {
			errs = append(errs, fmt.Errorf("listen: %q: want a loopback address:port such as 127.0.0.1:9465", c.Listen))
		}
	}
	if c.NetworkLock != "nftables" && c.NetworkLock != "iptables" {
		errs = append(errs, fmt.Errorf("criu_network_lock: %q: want nftables or iptables", c.NetworkLock))
	}
	if _, _, err := c.lazyRestoreFrom(); err != nil {
		errs = append(errs, fmt.Errorf("lazy_restore_from: %w", err))
	}
	if c.SharedDir != "" && !filepath.IsAbs(c.SharedDir) {
		errs = append(errs, fmt.Errorf("shared_dir: %q must be an absolute path", c.SharedDir))
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
	if cc.Image == "" {
		errs = append(errs, errors.New("image: required (a lab image name or an absolute rootfs path)"))
	}
	if len(cc.Args) == 0 {
		errs = append(errs, errors.New("args: required"))
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
