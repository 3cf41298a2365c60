package migrate

import (
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
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,39}$`)

// ValidID checks a container id: lower-case letters, digits, '.', '_' and
// '-', at most 40 characters, not starting with punctuation.
func ValidID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("invalid container id %q: want [a-z0-9][a-z0-9_.-]{0,39}", id)
	}
	return nil
}

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
	if !s.IP.IsValid() || !s.IP.Addr().Is4() || s.IP.Bits() == 32 {
		errs = append(errs, fmt.Errorf("ip %v: want an IPv4 address with its subnet prefix", s.IP))
	}
	if mac, err := net.ParseMAC(s.MAC); err != nil || len(mac) != 6 || mac[0]&1 == 1 {
		errs = append(errs, fmt.Errorf("mac %q: want a unicast Ethernet address", s.MAC))
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
