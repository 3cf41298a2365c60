package lab

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/plane"
)

// PlaneConfig is the plane's configuration for this lab, with the paths the
// plane namespace sees (its /etc/escape, /var/lib/escape, /var/log/escape):
// every host with its agent's address and labels, no containers. Tests and
// the demo add containers and write their own copy (WritePlaneConfig).
func (inv *Inventory) PlaneConfig() (plane.Config, error) {
	cfg := plane.DefaultConfig()
	cfg.Socket = "/run/escape/plane.sock"
	cfg.API = inv.Plane.API
	cfg.Listen = "127.0.0.1:9465"
	tls := inside(inv.Plane.TLS)
	cfg.TLS = plane.TLSFiles{CA: tls.CA, Cert: tls.Cert, Key: tls.Key}
	cfg.State = "/var/lib/escape/plane.db"
	cfg.Audit = "/var/log/escape/audit.jsonl"
	cfg.ServiceRange = inv.ServiceRange.String()
	cfg.ServicePrefix = inv.Subnet.Bits()
	for _, h := range inv.Hosts {
		cfg.Hosts = append(cfg.Hosts, plane.HostConfig{Name: h.Name, Agent: h.Agent, Labels: maps.Clone(h.Labels)})
	}
	if err := cfg.Validate(); err != nil {
		return plane.Config{}, fmt.Errorf("lab plane config: %w", err)
	}
	return cfg, nil
}

// PlaneConfigIn is PlaneConfig for a plane run in the root namespace (a
// test's own process, dialing with labtest.PlaneDialer): the plane's
// certificate at its root-namespace paths, socket, state and audit under
// dir, and no API or metrics listener (their addresses are the plane
// namespace's).
func (inv *Inventory) PlaneConfigIn(dir string) (plane.Config, error) {
	cfg, err := inv.PlaneConfig()
	if err != nil {
		return plane.Config{}, err
	}
	cfg.TLS = plane.TLSFiles{CA: inv.Plane.TLS.CA, Cert: inv.Plane.TLS.Cert, Key: inv.Plane.TLS.Key}
	cfg.Socket, cfg.State, cfg.Audit = filepath.Join(dir, "plane.sock"), filepath.Join(dir, "plane.db"), filepath.Join(dir, "audit.jsonl")
	cfg.API, cfg.Listen = "", ""
	if err := cfg.Validate(); err != nil {
		return plane.Config{}, fmt.Errorf("lab plane config in %s: %w", dir, err)
	}
	return cfg, nil
}

// MarshalPlaneConfig writes cfg as ESCAPE's configuration file (its plane
// section) and parses it back as the plane would, so that what it returns
// always loads.
func MarshalPlaneConfig(cfg plane.Config) ([]byte, error) {
	data, err := yaml.Marshal(map[string]plane.Config{"plane": cfg})
	if err != nil {
		return nil, fmt.Errorf("encode plane config: %w", err)
	}
	if _, err := plane.ParseConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("plane config does not load back: %w", err)
	}
	return data, nil
}

// WritePlaneConfig writes cfg to path (a path of the root namespace).
func WritePlaneConfig(cfg plane.Config, path string) error {
	data, err := MarshalPlaneConfig(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write plane config: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write plane config: %w", err)
	}
	return nil
}

// writePlaneBase writes the plane namespace's /etc/escape/escape.yaml.
func writePlaneBase(inv *Inventory) error {
	cfg, err := inv.PlaneConfig()
	if err != nil {
		return err
	}
	return WritePlaneConfig(cfg, inv.Plane.Config)
}
