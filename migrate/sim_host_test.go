package migrate

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// The simulated host's side of each Host call (sim_world_test.go), with
// the world's lock held.

func (h *simHost) hello() HostInfo {
	return HostInfo{Name: h.name, Version: "sim", SharedStorage: h.store.name, BootID: fmt.Sprintf("%s-%d", h.name, h.boot)}
}

func (h *simHost) status(id string) ContainerStatus {
	st := ContainerStatus{Status: Absent}
	if c := h.cts[id]; c != nil {
		st.Status = c.status
	}
	if n := h.nets[id]; n != nil {
		st.Network = true
		st.Addresses = slices.Clone(n.addrs)
		now := h.now()
		if n.lease.heldAt(now, h.w.broken) {
			st.Lease = LeaseState{Held: true, Generation: n.lease.gen, Pinned: n.lease.pinned}
			if !n.lease.pinned {
				st.Lease.Remaining = n.lease.lapse.Sub(now)
			}
		}
	}
	return st
}

func (h *simHost) netOf(id string) (*simNet, error) {
	n := h.nets[id]
	if n == nil {
		return nil, fmt.Errorf("container %s on %s: no network namespace", id, h.name)
	}
	return n, nil
}

func (h *simHost) ensureNet(s Spec) *simNet {
	n := h.nets[s.ID]
	if n == nil {
		n = &simNet{mac: s.MAC}
		h.nets[s.ID] = n
	}
	return n
}

// grant applies a lease as the kernel does: older generations and late
// grants are refused; an armed lease lapses at min(arrival+TTL, NotAfter).
func (h *simHost) grant(id string, n *simNet, l Lease) (LeaseState, error) {
	now := h.now()
	b := h.w.broken
	if l.Generation < h.seen[id] && !b.ignoreGeneration {
		return LeaseState{}, fmt.Errorf("lease of %s on %s: generation %d, seen %d: %w", id, h.name, l.Generation, h.seen[id], ErrStaleGeneration)
	}
	if b.ignoreNotAfter {
		l.NotAfter = time.Time{}
	}
	if !l.NotAfter.IsZero() && now.After(l.NotAfter) {
		return LeaseState{}, fmt.Errorf("lease of %s on %s: arrived %v after its deadline: %w", id, h.name, now.Sub(l.NotAfter), ErrLeaseExpired)
	}
	h.seen[id] = max(h.seen[id], l.Generation)
	if l.TTL == 0 && b.pinLapses > 0 && !l.Revoke {
		l.TTL = b.pinLapses
	}
	switch {
	case l.Revoke:
		n.lease = simLease{gen: l.Generation}
		return LeaseState{}, nil
	case l.TTL == 0:
		n.lease = simLease{held: true, pinned: true, gen: l.Generation}
		return LeaseState{Held: true, Generation: l.Generation, Pinned: true}, nil
	default:
		lapse := now.Add(l.TTL)
		if !l.NotAfter.IsZero() && l.NotAfter.Before(lapse) {
			lapse = l.NotAfter
		}
		n.lease = simLease{held: true, gen: l.Generation, lapse: lapse}
		return LeaseState{Held: true, Generation: l.Generation, Remaining: lapse.Sub(now)}, nil
	}
}

func (h *simHost) lease(id string, l Lease) (LeaseState, error) {
	n, err := h.netOf(id)
	if err != nil {
		return LeaseState{}, err
	}
	return h.grant(id, n, l)
}

func (h *simHost) startCtr(s Spec, opts StartOptions) (StepResult, error) {
	if c := h.cts[s.ID]; c != nil && c.status == Running {
		return StepResult{Did: "already running"}, nil
	}
	if !h.images[s.Image] {
		return StepResult{}, fmt.Errorf("start %s on %s: image %s not present", s.ID, h.name, s.Image)
	}
	n := h.ensureNet(s)
	if opts.Address {
		if _, err := h.grant(s.ID, n, opts.Lease); err != nil {
			return StepResult{}, err
		}
		if !n.has(s.IP) {
			n.addrs = append(n.addrs, s.IP)
		}
	}
	h.cts[s.ID] = &simCtr{status: Running}
	return StepResult{Did: "started"}, nil
}

func (h *simHost) restart(s Spec) (StepResult, error) {
	c := h.cts[s.ID]
	if c == nil {
		return StepResult{}, fmt.Errorf("restart %s on %s: no container", s.ID, h.name)
	}
	*c = simCtr{status: Running}
	return StepResult{Did: "restarted"}, nil
}

func (h *simHost) kill(id string) (StepResult, error) {
	c := h.cts[id]
	if c == nil {
		return StepResult{Did: "absent"}, nil
	}
	*c = simCtr{status: Created}
	return StepResult{Did: "killed"}, nil
}

func (h *simHost) remove(id string) (StepResult, error) {
	if h.cts[id] == nil && h.nets[id] == nil {
		return StepResult{Did: "absent"}, nil
	}
	delete(h.cts, id)
	delete(h.nets, id)
	return StepResult{Did: "removed"}, nil
}

func (h *simHost) checkpoint(id string, image ImageName, opts CheckpointOptions) (CheckpointResult, error) {
	if img, ok := h.store.images[image]; ok {
		return CheckpointResult{Did: "exists", Bytes: img.bytes}, nil
	}
	c := h.cts[id]
	if c == nil || c.status != Running {
		return CheckpointResult{}, fmt.Errorf("checkpoint %s on %s: not running", id, h.name)
	}
	img := simImage{counter: c.counter, bytes: 4096 + c.counter}
	if h.w.broken.dumpForgets {
		img.counter--
	}
	h.store.images[image] = img
	if opts.Exit {
		*c = simCtr{status: Stopped, counter: -1}
	}
	return CheckpointResult{Did: "dumped", Bytes: img.bytes}, nil
}

// restoreFrom starts c from image (w.mu held).
func (h *simHost) restoreFrom(c *simCtr, image ImageName) error {
	img, ok := h.store.images[image]
	if !ok {
		return fmt.Errorf("restore on %s from %s: %w", h.name, image, ErrIncompleteImage)
	}
	*c = simCtr{status: Running, counter: img.counter}
	return nil
}

func (h *simHost) restore(s Spec, image ImageName, opts RestoreOptions) (RestoreResult, error) {
	if _, err := h.netOf(s.ID); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	c := h.cts[s.ID]
	if c != nil && opts.Fresh {
		return RestoreResult{}, fmt.Errorf("restore %s on %s: a container object exists (fresh restore)", s.ID, h.name)
	}
	if c == nil {
		c = &simCtr{status: Created}
	}
	// Like the node's Restore, it replaces the task, running or not.
	if err := h.restoreFrom(c, image); err != nil {
		return RestoreResult{}, err
	}
	h.cts[s.ID] = c
	return RestoreResult{Did: "restored"}, nil
}

func (h *simHost) stage(s Spec, image ImageName, opts StageOptions) (StepResult, error) {
	if c := h.cts[s.ID]; c != nil {
		if c.status == Created && c.staged == image {
			return StepResult{Did: "already staged"}, nil
		}
		return StepResult{}, fmt.Errorf("stage %s on %s: a container object exists (%s)", s.ID, h.name, c.status)
	}
	n := h.ensureNet(s)
	n.guards |= opts.Guards
	h.cts[s.ID] = &simCtr{status: Created, staged: image}
	return StepResult{Did: "staged"}, nil
}

func (h *simHost) startStaged(s Spec, image ImageName, opts StartStagedOptions) (RestoreResult, error) {
	c := h.cts[s.ID]
	switch {
	case c == nil:
		return RestoreResult{}, fmt.Errorf("start staged %s on %s: no container", s.ID, h.name)
	case c.status == Running:
		return RestoreResult{Did: "already running"}, nil
	case c.status != Created || c.staged != image:
		return RestoreResult{}, fmt.Errorf("start staged %s on %s: no staged task for %s", s.ID, h.name, image)
	}
	if err := h.restoreFrom(c, image); err != nil {
		c.staged = "" // the failed task is deleted; the container stays
		return RestoreResult{}, err
	}
	if n := h.nets[s.ID]; n != nil {
		n.guards &^= opts.Guards
	}
	return RestoreResult{Did: "started"}, nil
}

func (h *simHost) verifyImage(image ImageName) (int64, error) {
	img, ok := h.store.images[image]
	if !ok {
		return 0, fmt.Errorf("image %s on %s: %w", image, h.name, ErrIncompleteImage)
	}
	return img.bytes, nil
}

func (h *simHost) dropImage(image ImageName) (StepResult, error) {
	if _, ok := h.store.images[image]; !ok {
		return StepResult{Did: "absent"}, nil
	}
	delete(h.store.images, image)
	return StepResult{Did: "dropped"}, nil
}

func (h *simHost) offer(what Offer) (Ticket, error) {
	switch what.Kind {
	case OfferCheckpoint:
		if _, ok := h.store.images[ImageName(what.Name)]; !ok {
			return "", fmt.Errorf("offer %s on %s: %w", what.Name, h.name, ErrIncompleteImage)
		}
	case OfferImage:
		if !h.images[what.Name] {
			return "", fmt.Errorf("offer image %s on %s: not present", what.Name, h.name)
		}
	default:
		return "", fmt.Errorf("offer on %s: kind %q", h.name, what.Kind)
	}
	h.seq++
	t := Ticket(fmt.Sprintf("%s-%d-%d", h.name, h.boot, h.seq))
	h.offers[t] = simOffer{kind: what.Kind, name: what.Name, to: what.To, until: time.Now().Add(time.Minute)}
	return t, nil
}

// redeem uses up a ticket the peer from issued to h (w.mu held).
func (h *simHost) redeem(from Peer, kind OfferKind, name string, alive func(string) bool) (*simHost, error) {
	p := h.w.hosts[from.Name]
	if p == nil || !alive(from.Name) {
		return nil, fmt.Errorf("%s cannot reach peer %s", h.name, from.Name)
	}
	o, ok := p.offers[from.Ticket]
	if !ok || o.kind != kind || o.name != name || o.to != h.name || time.Now().After(o.until) {
		return nil, fmt.Errorf("fetch %s from %s: %w", name, from.Name, ErrTicket)
	}
	delete(p.offers, from.Ticket)
	return p, nil
}

func (h *simHost) fetch(image ImageName, from Peer, alive func(string) bool) (TransferResult, error) {
	if img, ok := h.store.images[image]; ok {
		return TransferResult{Bytes: img.bytes}, nil
	}
	p, err := h.redeem(from, OfferCheckpoint, string(image), alive)
	if err != nil {
		return TransferResult{}, err
	}
	img, ok := p.store.images[image]
	if !ok {
		return TransferResult{}, fmt.Errorf("fetch %s from %s: %w", image, from.Name, ErrIncompleteImage)
	}
	h.store.images[image] = img
	return TransferResult{Bytes: img.bytes, Wire: img.bytes / 2, Files: 1}, nil
}

func (h *simHost) ensureImage(ref string, from *Peer, alive func(string) bool) (ImageResult, error) {
	if h.images[ref] {
		return ImageResult{Did: "present"}, nil
	}
	if from == nil {
		if !h.w.registry[ref] {
			return ImageResult{}, fmt.Errorf("pull %s on %s: not in the registry", ref, h.name)
		}
		h.images[ref] = true
		return ImageResult{Did: "pulled"}, nil
	}
	if _, err := h.redeem(*from, OfferImage, ref, alive); err != nil {
		return ImageResult{}, err
	}
	h.images[ref] = true
	return ImageResult{Did: "imported"}, nil
}

func (h *simHost) prepareNetwork(s Spec, withAddress bool) (StepResult, error) {
	n := h.ensureNet(s)
	if withAddress && !n.has(s.IP) {
		n.addrs = append(n.addrs, s.IP)
	}
	return StepResult{Did: "prepared"}, nil
}

func (h *simHost) removeNetwork(id string) (StepResult, error) {
	if h.nets[id] == nil {
		return StepResult{Did: "absent"}, nil
	}
	delete(h.nets, id)
	return StepResult{Did: "removed"}, nil
}

func (h *simHost) releaseAddress(id string, ip netip.Prefix) (StepResult, error) {
	n := h.nets[id]
	if n == nil {
		return StepResult{Did: "absent"}, nil
	}
	n.addrs = slices.DeleteFunc(n.addrs, func(a netip.Prefix) bool { return a == ip })
	n.lease = simLease{gen: n.lease.gen}
	return StepResult{Did: "released"}, nil
}

// strangerAnswers says a station with another MAC than the container's
// answers for ip (a copy of the container has its MAC: only its lease
// fences it, never a probe).
func (h *simHost) strangerAnswers(ip netip.Addr, ignoreMAC string) (string, bool) {
	mac, ok := h.w.strangers[ip]
	return mac, ok && mac != ignoreMAC
}

func (h *simHost) claimAddress(id string, ip netip.Prefix, opts ClaimOptions) (StepResult, error) {
	n, err := h.netOf(id)
	if err != nil {
		return StepResult{}, fmt.Errorf("claim: %w", err)
	}
	if _, err := h.grant(id, n, opts.Lease); err != nil {
		return StepResult{}, err
	}
	if opts.LastLook > 0 {
		if mac, taken := h.strangerAnswers(ip.Addr(), n.mac); taken {
			return StepResult{}, fmt.Errorf("claim %v on %s: %w (%s)", ip, h.name, ErrAddressTaken, mac)
		}
	}
	if !n.has(ip) {
		n.addrs = append(n.addrs, ip)
	}
	return StepResult{Did: "claimed"}, nil
}

func (h *simHost) announce(id string) (StepResult, error) {
	if _, err := h.netOf(id); err != nil {
		return StepResult{}, fmt.Errorf("announce: %w", err)
	}
	return StepResult{Did: "announced"}, nil
}

func (h *simHost) probe(ip netip.Addr, ignoreMAC string) (ProbeResult, error) {
	mac, taken := h.strangerAnswers(ip, ignoreMAC)
	return ProbeResult{Taken: taken, By: mac}, nil
}

func (h *simHost) startSentry() (SentryID, error) {
	h.seq++
	id := SentryID(fmt.Sprintf("sentry-%d-%d", h.boot, h.seq))
	h.sentries[id] = true
	return id, nil
}

func (h *simHost) stopSentry(id SentryID, ip netip.Addr, ignoreMAC string) (ProbeResult, error) {
	if !h.sentries[id] {
		return ProbeResult{}, fmt.Errorf("sentry %s on %s: unknown", id, h.name)
	}
	delete(h.sentries, id)
	return h.probe(ip, ignoreMAC)
}

func (h *simHost) setGuards(id string, g Guards, on bool) (StepResult, error) {
	n := h.nets[id]
	if n == nil {
		if on {
			return StepResult{}, fmt.Errorf("guards: container %s on %s: no network namespace", id, h.name)
		}
		return StepResult{Did: "absent"}, nil
	}
	if on {
		n.guards |= g
	} else {
		n.guards &^= g
	}
	return StepResult{Did: "set"}, nil
}

// agentRestarted forgets what only the agent's memory held.
func (h *simHost) agentRestarted() {
	h.offers = map[Ticket]simOffer{}
	h.sentries = map[SentryID]bool{}
	h.boot++
}
