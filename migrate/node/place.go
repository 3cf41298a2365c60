package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Where a container's steps act. A container ESCAPE deployed lives in the
// node's own containerd namespace and in a network namespace the node made
// (CtNetns). An adopted one (migrate.Adopted) lives in a namespace the
// node adopts from (Config.Adopt) and in the network namespace its user
// gave it, or, once migrated here, in one the node made under the same
// rule as its own containers'. Every step on a container finds it first
// (locate, under the container's lock) and the helpers it calls read what
// was found (ctNetns, ctEndpoint, cgroupPath), so that each helper acts
// where the container is and nowhere else.

// place is where one container lives on this host.
type place struct {
	// ns is its containerd namespace.
	ns string
	// adopted says a user made it (or its copy here was made from a user's).
	adopted bool
	// netns is its named network namespace; "" for an adopted container
	// that has none (the host's network, or runc's anonymous one): no
	// network step acts on it.
	netns string
	// link is its interface in netns.
	link string
	// own says the node made netns (CtNetns): it goes with the container.
	own bool
	// cgroup is its cgroups path ("" when it is not a cgroupfs path).
	cgroup string
}

// places remembers the adopted containers steps found, for the helpers of
// the step under way. Only adopted containers are kept (at most one entry
// per container on this host), and an entry goes when a step no longer
// finds the container adopted.
type places struct {
	mu sync.Mutex
	m  map[string]place
}

func (ps *places) get(id string) (place, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.m[id]
	return p, ok
}

func (ps *places) set(id string, p place) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !p.adopted {
		delete(ps.m, id)
		return
	}
	if ps.m == nil {
		ps.m = map[string]place{}
	}
	ps.m[id] = p
}

// ownPlace is where a container ESCAPE deployed lives.
func (n *Node) ownPlace(id string) place {
	return place{ns: n.cfg.Namespace, netns: CtNetns(n.cfg.Name, id), link: "eth0", own: true, cgroup: "/" + n.cfg.CgroupParent + "/" + id}
}

// in returns ctx in the place's containerd namespace.
func (p place) in(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, p.ns) }

// hasNetwork says the container has a network namespace steps may act on.
func (p place) hasNetwork() bool { return p.netns != "" }

// errNoNetwork refuses a network step on an adopted container without a
// network namespace of its own.
var errNoNetwork = errors.New("an adopted container without a network namespace of its own (the host's, or runc's anonymous one): no network step acts on it")

// locate finds container id: in the node's own namespace, else in one it
// adopts from with migrate.AdoptLabel set. A container in neither is where
// the node would create it (its own place). The same id adopted from two
// namespaces is refused: a step cannot tell which is meant.
func (n *Node) locate(ctx context.Context, id string) (place, error) {
	p, err := n.find(ctx, id)
	if err == nil {
		n.places.set(id, p)
	}
	return p, err
}

// find is locate without remembering what it found.
func (n *Node) find(ctx context.Context, id string) (place, error) {
	own := n.ownPlace(id)
	if len(n.cfg.Adopt) == 0 {
		return own, nil
	}
	c, _, err := n.conn(ctx)
	if err != nil {
		return place{}, err
	}
	if _, err := c.LoadContainer(own.in(ctx), id); err == nil {
		return own, nil
	} else if !errdefs.IsNotFound(err) {
		n.dropIfUnavailable(err)
		return place{}, err
	}
	var found []place
	for _, ns := range n.cfg.Adopt {
		p, ok, err := n.adoptedPlace(ctx, c, ns, id)
		if err != nil {
			return place{}, err
		}
		if ok {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return own, nil
	case 1:
		return found[0], nil
	}
	return place{}, fmt.Errorf("container %s is adopted in containerd namespaces %s and %s: refused, a step cannot tell which is meant", id, found[0].ns, found[1].ns)
}

// locateSpec finds the container of s. A spec without Adopted is one ESCAPE
// deployed. An adopted one must be in the namespace the spec names, which
// the node must adopt from; absent, it is where the node creates it (a
// migration's destination): in that namespace, with a network namespace
// and cgroup of the node's making.
func (n *Node) locateSpec(ctx context.Context, s migrate.Spec) (place, error) {
	if s.Adopted == nil {
		p, err := n.locate(ctx, s.ID)
		if err == nil && p.adopted {
			err = fmt.Errorf("%s is a container adopted in containerd namespace %s, and the spec is one ESCAPE deploys", s.ID, p.ns)
		}
		return p, err
	}
	if !slices.Contains(n.cfg.Adopt, s.Adopted.Namespace) {
		return place{}, fmt.Errorf("containerd namespace %q: this agent does not adopt from it (agent adopt.namespaces: %v)", s.Adopted.Namespace, n.cfg.Adopt)
	}
	p, err := n.locate(ctx, s.ID)
	if err != nil {
		return place{}, err
	}
	if p.adopted {
		if p.ns != s.Adopted.Namespace {
			return place{}, fmt.Errorf("%s is adopted in containerd namespace %s, the spec says %s", s.ID, p.ns, s.Adopted.Namespace)
		}
		return p, nil
	}
	c, _, err := n.conn(ctx)
	if err != nil {
		return place{}, err
	}
	if _, err := c.LoadContainer(p.in(ctx), s.ID); err == nil {
		return place{}, fmt.Errorf("%s is a container ESCAPE deployed here, not the adopted one", s.ID)
	}
	// One of the same id without the label is another container of a
	// user's here: nothing may replace or remove it.
	if _, err := c.LoadContainer(namespaces.WithNamespace(ctx, s.Adopted.Namespace), s.ID); err == nil {
		return place{}, fmt.Errorf("containerd namespace %s here has a container %s that is not labelled %s=true: it is not the adopted one, and is left alone", s.Adopted.Namespace, s.ID, migrate.AdoptLabel)
	} else if !errdefs.IsNotFound(err) {
		n.dropIfUnavailable(err)
		return place{}, err
	}
	dest := n.ownPlace(s.ID)
	dest.ns, dest.adopted = s.Adopted.Namespace, true
	if s.SharesHostNetwork() {
		dest.netns, dest.link, dest.own = "", "", false
	}
	n.places.set(s.ID, dest)
	return dest, nil
}

// adoptedPlace looks for id in namespace ns, labelled for adoption.
func (n *Node) adoptedPlace(ctx context.Context, c *client.Client, ns, id string) (place, bool, error) {
	nctx := namespaces.WithNamespace(ctx, ns)
	ct, err := c.LoadContainer(nctx, id)
	if errdefs.IsNotFound(err) {
		return place{}, false, nil
	}
	if err != nil {
		n.dropIfUnavailable(err)
		return place{}, false, err
	}
	info, err := ct.Info(nctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return place{}, false, err
	}
	if info.Labels[migrate.AdoptLabel] != "true" {
		return place{}, false, nil
	}
	spec, err := ct.Spec(nctx)
	if err != nil {
		return place{}, false, fmt.Errorf("spec of %s in %s: %w", id, ns, err)
	}
	return n.placeOfSpec(ns, id, spec), true, nil
}

// placeOfSpec is where an adopted container's spec puts it.
func (n *Node) placeOfSpec(ns, id string, spec *specs.Spec) place {
	p := place{ns: ns, adopted: true}
	if spec.Linux == nil {
		return p
	}
	if cg := spec.Linux.CgroupsPath; strings.HasPrefix(cg, "/") && !strings.Contains(cg+"/", "/../") {
		p.cgroup = cg
	}
	if name, ok := migrate.NetnsName(netnsPath(spec)); ok {
		p.netns = name
		p.own = name == CtNetns(n.cfg.Name, id)
		p.link = "eth0"
		if l, err := serviceLink(name); err == nil {
			p.link = l
		}
	}
	return p
}

// netnsPath is the path of the network namespace spec joins ("" for a new
// one, or none: the host's).
func netnsPath(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// serviceLink is the interface of a user's network namespace that carries
// the container's address: eth0 if there is one, else its only interface
// other than loopback.
func serviceLink(netns string) (string, error) {
	h, err := arp.Handle(netns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return "", err
	}
	var names []string
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 || l.Attrs().Name == "lo" {
			continue
		}
		if l.Attrs().Name == "eth0" {
			return "eth0", nil
		}
		names = append(names, l.Attrs().Name)
	}
	if len(names) != 1 {
		return "", fmt.Errorf("network namespace %s has %d interfaces besides loopback (%v): want one", netns, len(names), names)
	}
	return names[0], nil
}

// placeOf is what the step under way found of container id: an adopted
// container's place, or the node's own.
func (n *Node) placeOf(id string) place {
	if p, ok := n.places.get(id); ok {
		return p
	}
	return n.ownPlace(id)
}

// placeNetwork locates the container of a network step (of s, when the
// step has a spec) and refuses one without a network namespace it may act
// on.
func (n *Node) placeNetwork(ctx context.Context, id string, s *migrate.Spec) error {
	var p place
	var err error
	if s != nil {
		p, err = n.locateSpec(ctx, *s)
	} else {
		p, err = n.locate(ctx, id)
	}
	if err != nil {
		return err
	}
	if !p.hasNetwork() {
		return errNoNetwork
	}
	return nil
}

// userHolds says whether a container of id, labelled or not, is in one of
// the namespaces the node adopts from (an error counts as yes: the
// network stays).
func (n *Node) userHolds(ctx context.Context, id string) bool {
	if len(n.cfg.Adopt) == 0 {
		return false
	}
	c, _, err := n.conn(ctx)
	if err != nil {
		return true
	}
	for _, ns := range n.cfg.Adopt {
		_, err := c.LoadContainer(namespaces.WithNamespace(ctx, ns), id)
		if err == nil || !errdefs.IsNotFound(err) {
			return true
		}
	}
	return false
}
