package plane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sort"
	"sync"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// The inventory of hosts: the hosts section of the configuration at New,
// then whatever SetHosts says (plane/kube's node discovery). The plane
// acts on the inventory of the moment, without knowing what fed it.

// hostSet is the plane's links to the hosts' agents, and the hosts' settings.
type hostSet struct {
	mu    sync.RWMutex
	m     map[string]migrate.Host
	cfgs  map[string]HostConfig
	dial  func(HostConfig) (migrate.Host, error)
	watch func(name string, h migrate.Host) context.CancelFunc // Run's event subscription, nil outside Run
	stop  map[string]context.CancelFunc                        // per host, while Run runs
	tls   *mtls.Source
}

// Host implements migrate.Hosts.
func (s *hostSet) Host(name string) (migrate.Host, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.m[name]
	return h, ok
}

// configs are the hosts' settings, by name.
func (s *hostSet) configs() []HostConfig {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]HostConfig, 0, len(s.cfgs))
	for _, h := range s.cfgs {
		out = append(out, h)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

func (s *hostSet) config(name string) (HostConfig, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.cfgs[name]
	return h, ok
}

// set makes hosts the inventory: links to new hosts (or to hosts whose
// agent moved) are opened, those of hosts gone are closed. It says which
// hosts came, changed and went.
func (s *hostSet) set(hosts []HostConfig) (added, changed, removed []string, err error) {
	want := make(map[string]HostConfig, len(hosts))
	for _, h := range hosts {
		want[h.Name] = h
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var closing []migrate.Host
	moved := map[string]bool{}
	for name, old := range s.cfgs {
		h, ok := want[name]
		if ok && h.Agent == old.Agent {
			if !reflect.DeepEqual(h.Labels, old.Labels) {
				s.cfgs[name] = h
				changed = append(changed, name)
			}
			continue
		}
		closing = append(closing, s.drop(name))
		if ok {
			changed = append(changed, name)
			moved[name] = true
		} else {
			removed = append(removed, name)
		}
	}
	var errs []error
	for name, h := range want {
		if _, ok := s.cfgs[name]; ok {
			continue
		}
		link, err := s.dial(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("host %s: %w", name, err))
			continue
		}
		s.m[name], s.cfgs[name] = link, h
		if !moved[name] {
			added = append(added, name)
		}
		if s.watch != nil {
			s.stop[name] = s.watch(name, link)
		}
	}
	for _, h := range closing {
		// A call under way on the old link fails: the host left, or its
		// agent moved.
		errs = append(errs, h.Close())
	}
	sort.Strings(added)
	sort.Strings(changed)
	sort.Strings(removed)
	return added, changed, removed, errors.Join(errs...)
}

// drop forgets one host; the caller closes the link it returns.
func (s *hostSet) drop(name string) migrate.Host {
	h := s.m[name]
	if stop := s.stop[name]; stop != nil {
		stop()
	}
	delete(s.stop, name)
	delete(s.m, name)
	delete(s.cfgs, name)
	return h
}

// follow starts watch on every host, and on every host added later, until
// the returned function is called.
func (s *hostSet) follow(watch func(name string, h migrate.Host) context.CancelFunc) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watch, s.stop = watch, map[string]context.CancelFunc{}
	for name, h := range s.m {
		s.stop[name] = watch(name, h)
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, stop := range s.stop {
			stop()
		}
		s.watch, s.stop = nil, nil
	}
}

func (s *hostSet) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, h := range s.m {
		errs = append(errs, h.Close())
	}
	s.m, s.cfgs = map[string]migrate.Host{}, map[string]HostConfig{}
	return errors.Join(errs...)
}

// ValidateHosts checks an inventory: names an agent certificate can
// carry, listed once, each with an agent's host:port.
func ValidateHosts(hosts []HostConfig) error {
	var errs []error
	names := map[string]bool{}
	for i, h := range hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		if err := validHostName(h.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: name: %w", key, err))
		}
		if names[h.Name] {
			errs = append(errs, fmt.Errorf("%s: host %q listed twice", key, h.Name))
		}
		names[h.Name] = true
		if _, _, err := net.SplitHostPort(h.Agent); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): agent: %q: want host:port such as 198.18.0.11:7443", key, h.Name, h.Agent))
		}
	}
	return errors.Join(errs...)
}

// SetHosts replaces the inventory of hosts (plane/kube's node discovery
// calls it on every change of the cluster's nodes). A host that left is
// no longer chosen, watched or reached; its records stay, so that it
// finds them if it comes back. An invalid inventory changes nothing.
func (p *Plane) SetHosts(hosts []HostConfig) error {
	if err := ValidateHosts(hosts); err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	added, changed, removed, err := p.hosts.set(hosts)
	if len(added)+len(changed)+len(removed) > 0 {
		p.event(AuditEvent{Kind: "config", Action: "inventory", Outcome: "ok",
			Details: map[string]any{"added": added, "changed": changed, "removed": removed, "hosts": len(hosts)}})
		p.log.Info("inventory", zap.Strings("added", added), zap.Strings("changed", changed), zap.Strings("removed", removed))
	}
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	return nil
}

// Hosts is the inventory of the moment.
func (p *Plane) Hosts() []HostConfig { return p.hosts.configs() }
