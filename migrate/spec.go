package migrate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
)

// Spec is everything needed to run a protected container on any host: the
// root filesystem lives on shared storage, so every host sees the same one.
type Spec struct {
	ID     string   `json:"id"`
	RootFS string   `json:"rootfs"`
	Args   []string `json:"args"`
	Env    []string `json:"env,omitempty"`
	// IP is the service address (with its prefix length) the container
	// keeps wherever it runs; MAC is kept with it.
	IP  netip.Prefix `json:"ip"`
	MAC string       `json:"mac"`
	// MemoryLimit in bytes; 0 means none.
	MemoryLimit uint64 `json:"memory_limit,omitempty"`
	// CRIUConfig is a CRIU configuration file, named to runc through the
	// org.criu.config annotation so it applies to dump and restore alike
	// (the runc shim does not forward tcp-established on restore).
	CRIUConfig string            `json:"criu_config,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
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

// Validate rejects a spec that cannot be run.
func (s Spec) Validate() error {
	var errs []error
	if err := ValidID(s.ID); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(s.RootFS) {
		errs = append(errs, fmt.Errorf("rootfs %q: want an absolute path", s.RootFS))
	}
	if len(s.Args) == 0 {
		errs = append(errs, errors.New("args: empty"))
	}
	if !s.IP.IsValid() || !s.IP.Addr().Is4() || s.IP.Bits() == 32 {
		errs = append(errs, fmt.Errorf("ip %v: want an IPv4 address with its subnet prefix", s.IP))
	}
	if mac, err := net.ParseMAC(s.MAC); err != nil || len(mac) != 6 || mac[0]&1 == 1 {
		errs = append(errs, fmt.Errorf("mac %q: want a unicast Ethernet address", s.MAC))
	}
	if s.CRIUConfig != "" && !filepath.IsAbs(s.CRIUConfig) {
		errs = append(errs, fmt.Errorf("criu_config %q: want an absolute path", s.CRIUConfig))
	}
	if len(errs) > 0 {
		return fmt.Errorf("spec %s: %w", s.ID, errors.Join(errs...))
	}
	return nil
}
