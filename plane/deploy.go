package plane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
)

// allocateIP returns the lowest free address of the service range (the
// first 9 are left for infrastructure).
func (p *Plane) allocateIP(want string) (netip.Prefix, error) {
	cs, err := p.store.Containers()
	if err != nil {
		return netip.Prefix{}, err
	}
	used := map[netip.Addr]string{}
	for _, c := range cs {
		used[c.Spec.IP.Addr()] = c.Spec.ID
	}
	if want != "" {
		a, err := netip.ParseAddr(want)
		if err != nil || !p.service.Contains(a) {
			return netip.Prefix{}, fmt.Errorf("ip %q: not in the service range %v", want, p.service)
		}
		if by, ok := used[a]; ok {
			return netip.Prefix{}, fmt.Errorf("ip %v: already used by %s", a, by)
		}
		return netip.PrefixFrom(a, p.subnetBits), nil
	}
	a := p.service.Addr()
	for i := 0; i < 10; i++ {
		a = a.Next()
	}
	for ; p.service.Contains(a); a = a.Next() {
		if _, ok := used[a]; !ok && p.service.Contains(a.Next()) {
			return netip.PrefixFrom(a, p.subnetBits), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("service range %v is exhausted", p.service)
}

func macFor(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("02:e5:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// pickHost places a new container: the eligible host with the fewest
// protected containers.
func (p *Plane) pickHost() (string, error) {
	cs, err := p.store.Containers()
	if err != nil {
		return "", err
	}
	load := map[string]int{}
	for _, c := range cs {
		load[c.Host]++
	}
	best := ""
	for _, h := range p.hosts.configs() {
		hr, err := p.store.Host(h.Name)
		if err != nil {
			return "", err
		}
		if hr.Compromised || hr.Draining {
			continue
		}
		if best == "" || load[h.Name] < load[best] {
			best = h.Name
		}
	}
	if best == "" {
		return "", errors.New("no eligible host (all flagged or draining)")
	}
	return best, nil
}

// Deploy puts a container under protection: it gets an address, its host's
// agent makes sure it has the image (pulled from its registry), and starts
// it there with the address under a pinned lease.
func (p *Plane) Deploy(ctx context.Context, cc ContainerConfig, actor string) (ContainerRecord, error) {
	if err := cc.validate(p.cfg.Defaults); err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	unlock, err := p.lock(ctx, cc.ID)
	if err != nil {
		return ContainerRecord{}, err
	}
	defer unlock()
	if _, err := p.store.Container(cc.ID); err == nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: already protected", cc.ID)
	} else if !errors.Is(err, ErrNotFound) {
		return ContainerRecord{}, err
	}
	pol, err := ResolvePolicy(p.defaults, cc.Policy, cc.Labels)
	if err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	// The sensor keys its profile and its reports by this label: with the
	// id as identity, its events name the container the plane knows.
	if cc.Labels[events.IdentityLabel] == "" {
		cc.Labels = maps.Clone(cc.Labels)
		if cc.Labels == nil {
			cc.Labels = map[string]string{}
		}
		cc.Labels[events.IdentityLabel] = cc.ID
	}
	host := cc.Host
	if host == "" {
		if host, err = p.pickHost(); err != nil {
			return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
		}
	}
	h, err := p.Host(host)
	if err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: host: %w", cc.ID, err)
	}
	ip, err := p.allocateIP(cc.IP)
	if err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	var mem uint64
	if cc.Memory != "" {
		if mem, err = ParseSize(cc.Memory); err != nil {
			return ContainerRecord{}, fmt.Errorf("deploy %s: memory: %w", cc.ID, err)
		}
	}
	spec := migrate.Spec{ID: cc.ID, Image: cc.Image, Args: cc.Args, Env: cc.Env, IP: ip, MAC: macFor(ip.Addr()),
		MemoryLimit: mem, NetworkLock: p.cfg.NetworkLock, Labels: cc.Labels}
	if err := spec.Validate(); err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy: %w", err)
	}
	now := p.now()
	rec := ContainerRecord{Spec: spec, Host: host, Policy: pol, Generation: p.firstGeneration(ctx, cc.ID), Created: now, Updated: now}
	// Recorded before starting, so a crash leaves a record to reconcile,
	// never an untracked container.
	if err := p.store.PutContainer(rec); err != nil {
		return ContainerRecord{}, err
	}
	fail := func(err error) (ContainerRecord, error) {
		_, _ = h.Remove(context.WithoutCancel(ctx), cc.ID)
		_ = p.store.DeleteContainer(cc.ID)
		p.event(AuditEvent{Kind: "action", Action: "deploy", Container: cc.ID, Host: host, Actor: actor, Outcome: "failed", Error: err.Error()})
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	img, err := h.EnsureImage(ctx, spec.Image, nil)
	if err != nil {
		return fail(err)
	}
	if _, err := h.Start(ctx, spec, migrate.StartOptions{Address: true, Lease: migrate.Lease{IP: ip.Addr(), Generation: rec.Generation}}); err != nil {
		return fail(err)
	}
	p.event(AuditEvent{Kind: "action", Action: "deploy", Container: cc.ID, Host: host, Actor: actor, Outcome: "ok",
		Details: map[string]any{"ip": ip.String(), "class": pol.Class, "image": cc.Image, "image_on_host": img.Did}})
	return rec, nil
}

// Remove stops protecting a container and deletes it, and its checkpoints,
// from every host. An adopted container is its user's: it is released
// (adopt.go), and keeps running.
func (p *Plane) Remove(ctx context.Context, id, actor string) error {
	err := p.withLock(ctx, id, func(c ContainerRecord) error {
		if c.Adopted {
			return p.releaseByOperator(ctx, c, actor)
		}
		var errs []error
		for _, hc := range p.hosts.configs() {
			h, _ := p.hosts.Host(hc.Name)
			if _, err := h.Remove(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		cks, err := p.store.Checkpoints(id)
		if err != nil {
			return err
		}
		for _, ck := range cks {
			if h, err := p.Host(ck.Host); err == nil {
				if _, err := h.DropImage(ctx, ck.Image); err != nil {
					errs = append(errs, err)
				}
			}
		}
		errs = append(errs, p.store.DeleteContainer(id))
		p.event(AuditEvent{Kind: "action", Action: "remove", Container: id, Host: c.Host, Actor: actor, Outcome: "ok"})
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// firstGeneration is the lease generation a new deployment of id starts
// at: above any generation a host still remembers for that id (from an
// earlier deployment under the same id, or a plane whose state was lost),
// since agents refuse leases older than what they have seen. A host that
// does not answer in time is left out: a later move onto it is refused
// as stale and undone, never applied.
func (p *Plane) firstGeneration(ctx context.Context, id string) uint64 {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	hosts := p.hosts.configs()
	seen := make(chan uint64, len(hosts))
	for _, hc := range hosts {
		go func() {
			h, err := p.Host(hc.Name)
			if err != nil {
				seen <- 0
				return
			}
			st, err := h.Status(ctx, id)
			if err != nil {
				seen <- 0
				return
			}
			seen <- st.Lease.Generation
		}()
	}
	gen := uint64(1)
	for range hosts {
		if g := <-seen; g >= gen {
			gen = g + 1
		}
	}
	return gen
}
