package plane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
)

// writeCRIUConfig writes the CRIU configuration every protected container gets: it
// reaches CRIU on dump and on restore alike through org.criu.config.
// Established connections are carried, and runc's masked directories are
// external mounts (migrate.MaskConfig). Connections still in flight, which
// the kernel completed while the application was frozen and never accepted,
// are skipped: without skip-in-flight a client that connects during a dump
// fails the dump ("In-flight connection"), and with it the migration (seen
// in the demo, where the client reconnects after each rollback). After a
// migration such a client sees its connection reset, as after a restart; a
// safe checkpoint leaves the container running, and it is accepted then.
// Accepted connections are carried as before. While a rollback restores, closed
// adds tcp-close: the checkpoint's connections are restored closed (their
// applications see them drop). The network lock is the configured one
// (Config.NetworkLock).
func (p *Plane) writeCRIUConfig(path string, closed bool) error {
	masks, err := migrate.MaskConfig(p.maskDir())
	if err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	conf := "tcp-established\nskip-in-flight\nnetwork-lock " + p.cfg.NetworkLock + "\n"
	if closed {
		conf += "tcp-close\n"
	}
	if err := atomicfile.WriteFile(path, []byte(conf+masks), 0o644); err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	return nil
}

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
		if err != nil || !p.env.ServiceRange.Contains(a) {
			return netip.Prefix{}, fmt.Errorf("ip %q: not in the service range %v", want, p.env.ServiceRange)
		}
		if by, ok := used[a]; ok {
			return netip.Prefix{}, fmt.Errorf("ip %v: already used by %s", a, by)
		}
		return netip.PrefixFrom(a, p.env.SubnetBits), nil
	}
	a := p.env.ServiceRange.Masked().Addr()
	for i := 0; i < 10; i++ {
		a = a.Next()
	}
	for ; p.env.ServiceRange.Contains(a); a = a.Next() {
		if _, ok := used[a]; !ok && p.env.ServiceRange.Contains(a.Next()) {
			return netip.PrefixFrom(a, p.env.SubnetBits), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("service range %v is exhausted", p.env.ServiceRange)
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
	for _, h := range p.env.Hosts {
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

// Deploy puts a container under protection: its root filesystem is copied
// to shared storage, it gets an address and a CRIU configuration, and it
// is started on its host.
func (p *Plane) Deploy(ctx context.Context, cc ContainerConfig) (ContainerRecord, error) {
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
	src := cc.Image
	if !filepath.IsAbs(src) {
		var ok bool
		if src, ok = p.env.Images[cc.Image]; !ok {
			return ContainerRecord{}, fmt.Errorf("deploy %s: image %q: unknown (have %v)", cc.ID, cc.Image, keys(p.env.Images))
		}
	}
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		return ContainerRecord{}, fmt.Errorf("deploy %s: image rootfs %s: not a directory", cc.ID, src)
	}
	host := cc.Host
	if host == "" {
		if host, err = p.pickHost(); err != nil {
			return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
		}
	} else if _, ok := p.hostEnv(host); !ok {
		return ContainerRecord{}, fmt.Errorf("deploy %s: host: unknown host %q", cc.ID, host)
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
	rootfs := filepath.Join(p.dir, "rootfs", cc.ID)
	if err := os.RemoveAll(rootfs); err != nil {
		return ContainerRecord{}, err
	}
	tmp := rootfs + ".tmp"
	_ = os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, tmp).CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		return ContainerRecord{}, fmt.Errorf("deploy %s: copy rootfs: %v: %s", cc.ID, err, out)
	}
	if err := os.Rename(tmp, rootfs); err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	conf := filepath.Join(p.dir, "criu", cc.ID+".conf")
	if err := p.writeCRIUConfig(conf, false); err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	spec := migrate.Spec{ID: cc.ID, RootFS: rootfs, Args: cc.Args, Env: cc.Env, IP: ip, MAC: macFor(ip.Addr()),
		MemoryLimit: mem, CRIUConfig: conf, Labels: cc.Labels}
	if err := spec.Validate(); err != nil {
		return ContainerRecord{}, fmt.Errorf("deploy: %w", err)
	}
	now := p.now()
	rec := ContainerRecord{Spec: spec, Host: host, Policy: pol, Image: cc.Image, Created: now, Updated: now}
	// Recorded before starting, so a crash leaves a record to reconcile,
	// never an untracked container.
	if err := p.store.PutContainer(rec); err != nil {
		return ContainerRecord{}, err
	}
	if err := p.rt.Start(ctx, host, spec); err != nil {
		_ = p.store.DeleteContainer(cc.ID)
		p.event(AuditEvent{Kind: "action", Action: "deploy", Container: cc.ID, Host: host, Outcome: "failed", Error: err.Error()})
		return ContainerRecord{}, fmt.Errorf("deploy %s: %w", cc.ID, err)
	}
	p.event(AuditEvent{Kind: "action", Action: "deploy", Container: cc.ID, Host: host, Outcome: "ok",
		Details: map[string]any{"ip": ip.String(), "class": pol.Class, "image": cc.Image}})
	return rec, nil
}

// Remove stops protecting a container and deletes it everywhere.
func (p *Plane) Remove(ctx context.Context, id string) error {
	err := p.withLock(ctx, id, func(c ContainerRecord) error {
		var errs []error
		for _, h := range p.env.Hosts {
			if err := p.rt.Remove(ctx, h.Name, id); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		for _, d := range []string{c.Spec.RootFS, filepath.Join(p.checkpointRoot(), id), c.Spec.CRIUConfig} {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, p.store.DeleteContainer(id))
		p.event(AuditEvent{Kind: "action", Action: "remove", Container: id, Host: c.Host, Outcome: "ok"})
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
