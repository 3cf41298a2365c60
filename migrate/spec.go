package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/distribution/reference"
)

// Spec is everything a host needs to run a protected container: an image
// from the host's containerd content store, the process, and the address
// and MAC the container keeps wherever it runs.
type Spec struct {
	ID string `json:"id"`
	// Image is an OCI image reference (escape.local/redis:latest); each
	// host runs the container from its own content store (EnsureImage).
	Image string   `json:"image"`
	Args  []string `json:"args,omitempty"`
	Env   []string `json:"env,omitempty"`
	// IP is the service address (with its prefix length) the container
	// keeps wherever it runs; MAC is kept with it.
	IP  netip.Prefix `json:"ip"`
	MAC string       `json:"mac"`
	// MemoryLimit in bytes; 0 means none.
	MemoryLimit uint64 `json:"memory_limit,omitempty"`
	// NetworkLock is how CRIU keeps the container's network quiet while it
	// dumps and restores it: "nftables" or "iptables" (docs/plane.md).
	NetworkLock string            `json:"network_lock,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Adopted is set for a container the plane did not deploy: one a user
	// started in the host's containerd and labelled for protection
	// (AdoptLabel). Its steps act on the user's container object, in its
	// own containerd namespace, with its own OCI spec.
	Adopted *Adopted `json:"adopted,omitempty"`
}

// AdoptLabel on a container in a host's containerd asks for its protection.
const AdoptLabel = "escape.mtd/protect"

// MaxAdoptedSpec bounds an adopted container's OCI runtime spec (JSON): an
// agent's answer carries one per container, and a plane keeps it in its
// record.
const MaxAdoptedSpec = 48 << 10

// MaxAdoptable bounds the containers one host's agent lists for adoption:
// with MaxAdoptedSpec, its answer stays under gRPC's default 4 MiB.
const MaxAdoptable = 64

// Adopted is what a host's agent found of an adopted container and what
// its steps need to act on it in place, or to recreate it elsewhere.
type Adopted struct {
	// Namespace is the containerd namespace the container lives in.
	Namespace string `json:"namespace"`
	// OCISpec is its OCI runtime spec, as containerd holds it (JSON).
	OCISpec json.RawMessage `json:"oci_spec,omitempty"`
	// Snapshotter and Runtime are containerd's record of it.
	Snapshotter string `json:"snapshotter,omitempty"`
	Runtime     string `json:"runtime,omitempty"`
	// Netns is the path of its network namespace on the host that reported
	// it ("" when it has none of its own: it shares the host's), Link the
	// interface that carries its address there.
	Netns string `json:"netns,omitempty"`
	Link  string `json:"link,omitempty"`
	// Status is its task's, when the agent looked.
	Status Status `json:"status,omitempty"`
	// Movable says it can be recreated on another host with its address;
	// Rollback says it can be checkpointed and restored in place. Refusals
	// say why not (for the audit).
	Movable  bool     `json:"movable"`
	Rollback bool     `json:"rollback"`
	Refusals []string `json:"refusals,omitempty"`
}

var (
	idRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	namespaceRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
	linkRE      = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,15}$`)
)

// ValidID checks a container id: lower-case letters, digits, '.', '_' and
// '-', at most 64 characters (a containerd id such as nerdctl's 64 hex
// digits), not starting with punctuation.
func ValidID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("invalid container id %q: want [a-z0-9][a-z0-9_.-]{0,63}", id)
	}
	return nil
}

// ValidNamespace checks a containerd namespace name (containerd's own
// identifier rule, at most 76 characters).
func ValidNamespace(ns string) error {
	if len(ns) > 76 || !namespaceRE.MatchString(ns) {
		return fmt.Errorf("containerd namespace %q: want letters and digits separated by '.', '_' or '-', at most 76", ns)
	}
	return nil
}

// NetnsName returns the name of a named network namespace from its path
// (/run/netns/NAME or /var/run/netns/NAME); ok is false for any other path.
func NetnsName(path string) (string, bool) {
	for _, dir := range []string{"/run/netns/", "/var/run/netns/"} {
		if name, ok := strings.CutPrefix(path, dir); ok && name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00") && len(name) <= 255 {
			return name, true
		}
	}
	return "", false
}

// Validate rejects what an agent could not act on safely.
func (a *Adopted) Validate() error {
	var errs []error
	if err := ValidNamespace(a.Namespace); err != nil {
		errs = append(errs, err)
	}
	if len(a.OCISpec) > MaxAdoptedSpec {
		errs = append(errs, fmt.Errorf("oci spec: %d bytes, more than %d", len(a.OCISpec), MaxAdoptedSpec))
	} else if len(a.OCISpec) > 0 && !json.Valid(a.OCISpec) {
		errs = append(errs, errors.New("oci spec: not JSON"))
	}
	if a.Netns != "" {
		if _, ok := NetnsName(a.Netns); !ok {
			errs = append(errs, fmt.Errorf("netns %q: want /run/netns/NAME", a.Netns))
		}
	}
	if a.Link != "" && !linkRE.MatchString(a.Link) {
		errs = append(errs, fmt.Errorf("link %q: want an interface name", a.Link))
	}
	if a.Movable && (a.Netns == "" || len(a.OCISpec) == 0) {
		errs = append(errs, errors.New("movable without a network namespace of its own or an OCI spec"))
	}
	if len(a.Refusals) > 32 {
		errs = append(errs, fmt.Errorf("%d refusals: at most 32", len(a.Refusals)))
	}
	for _, r := range a.Refusals {
		if len(r) > 1024 {
			errs = append(errs, fmt.Errorf("refusal of %d bytes: at most 1024", len(r)))
			break
		}
	}
	return errors.Join(errs...)
}

// Movable refuses to migrate an adopted container its agent found
// unmovable, with the agent's reasons.
func (s Spec) Movable() error {
	if s.Adopted == nil || s.Adopted.Movable {
		return nil
	}
	return fmt.Errorf("adopted container is rolled back in place only: %s", strings.Join(s.Adopted.Refusals, "; "))
}

// SharesHostNetwork says the adopted container has no network namespace
// of its own: it has no address to keep, and moves nowhere.
func (s Spec) SharesHostNetwork() bool { return s.Adopted != nil && s.Adopted.Netns == "" }

// ValidImageRef checks an OCI image reference with the reference grammar
// registries use (distribution/reference). A path is refused: hosts run
// containers from their content store only.
func ValidImageRef(ref string) error {
	if ref == "" || strings.ContainsAny(ref, " \t\n") || strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, ".") {
		return fmt.Errorf("image %q: want an OCI image reference such as registry.example/redis:7 (paths are refused)", ref)
	}
	if _, err := reference.ParseNormalizedNamed(ref); err != nil {
		return fmt.Errorf("image %q: want an OCI image reference such as registry.example/redis:7: %w", ref, err)
	}
	return nil
}

// Validate rejects a spec that cannot be run.
func (s Spec) Validate() error {
	var errs []error
	if err := ValidID(s.ID); err != nil {
		errs = append(errs, err)
	}
	if err := ValidImageRef(s.Image); err != nil {
		errs = append(errs, err)
	}
	if s.Adopted != nil {
		if err := s.Adopted.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("adopted: %w", err))
		}
	}
	// An adopted container without an address of its own (the host's
	// network, or loopback only) is acted on in place only.
	addressless := s.Adopted != nil && !s.Adopted.Movable && !s.IP.IsValid() && s.MAC == ""
	if !addressless {
		if !s.IP.IsValid() || !s.IP.Addr().Is4() || s.IP.Bits() == 32 {
			errs = append(errs, fmt.Errorf("ip %v: want an IPv4 address with its subnet prefix", s.IP))
		}
		if mac, err := net.ParseMAC(s.MAC); err != nil || len(mac) != 6 || mac[0]&1 == 1 {
			errs = append(errs, fmt.Errorf("mac %q: want a unicast Ethernet address", s.MAC))
		}
	}
	switch s.NetworkLock {
	case "", "nftables", "iptables":
	default:
		errs = append(errs, fmt.Errorf("network_lock %q: want nftables or iptables", s.NetworkLock))
	}
	if len(errs) > 0 {
		return fmt.Errorf("spec %s: %w", s.ID, errors.Join(errs...))
	}
	return nil
}
