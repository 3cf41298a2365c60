package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Adoption. A user's container (nerdctl's, ctr's, a unit's) that carries
// migrate.AdoptLabel=true in a namespace the agent adopts from is reported
// to the plane with what acting on it needs: its image, OCI spec, labels,
// snapshotter, runtime and network, and whether it can move to another
// host (Movable) or only be checkpointed and rolled back in place
// (Rollback), with the reasons (Refusals). What is refused, and why:
//
//   - a bind mount of a host path: the path is this host's, and a copy
//     elsewhere would run on another host's file of that name, or fail;
//   - a device: it is this host's hardware;
//   - the host's network namespace (none of its own, or the host's bound
//     under a name): its address is the host's, and moves with nothing; it
//     is rolled back in place only;
//   - a network namespace of runc's making, with loopback only: no address
//     to keep, so nothing to move it with (rolled back in place);
//   - an interface other than a veth on the host's bridge, or other than
//     one IPv4 address on it: the destination recreates exactly that;
//   - the host's PID or IPC namespace, or CAP_SYS_ADMIN (privileged): what
//     it sees and can change is the host's; the host's PID namespace is
//     not even rolled back (CRIU restores PIDs only in a namespace of the
//     container's own);
//   - a terminal (ctr run -t): CRIU dumps no terminal without --shell-job;
//   - a root filesystem that is no snapshot (ctr run --rootfs), or a
//     runtime other than runc v2.

// Adoptable lists this host's containers labelled for adoption, in the
// namespaces the node adopts from.
func (n *Node) Adoptable(ctx context.Context) ([]migrate.Spec, error) {
	if len(n.cfg.Adopt) == 0 {
		return nil, nil
	}
	c, _, err := n.conn(ctx)
	if err != nil {
		return nil, n.fail("adoptable", "", err)
	}
	own, err := n.ownIDs(ctx, c)
	if err != nil {
		return nil, n.fail("adoptable", "", err)
	}
	var out []migrate.Spec
	for _, ns := range n.cfg.Adopt {
		nctx := namespaces.WithNamespace(ctx, ns)
		cts, err := c.ContainerService().List(nctx, fmt.Sprintf(`labels.%q==true`, migrate.AdoptLabel))
		if err != nil {
			n.dropIfUnavailable(err)
			return nil, n.fail("adoptable", "", fmt.Errorf("containers of namespace %s: %w", ns, err))
		}
		if len(out)+len(cts) > migrate.MaxAdoptable {
			return nil, n.fail("adoptable", "", fmt.Errorf("more than %d containers labelled %s=true (namespaces %v): the answer is bounded; protect fewer per host", migrate.MaxAdoptable, migrate.AdoptLabel, n.cfg.Adopt))
		}
		for _, info := range cts {
			out = append(out, n.inspectAdoptable(nctx, c, ns, info))
		}
	}
	markConflicts(out, own)
	sort.Slice(out, func(i, j int) bool {
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].Adopted.Namespace < out[j].Adopted.Namespace
	})
	return out, nil
}

// ownIDs are the ids of the containers in the node's own namespace.
func (n *Node) ownIDs(ctx context.Context, c *client.Client) (map[string]bool, error) {
	cts, err := c.ContainerService().List(namespaces.WithNamespace(ctx, n.cfg.Namespace))
	if err != nil {
		n.dropIfUnavailable(err)
		return nil, err
	}
	ids := map[string]bool{}
	for _, ct := range cts {
		ids[ct.ID] = true
	}
	return ids, nil
}

// markConflicts refuses every container whose id another namespace of this
// host has too: a step names a container by its id alone.
func markConflicts(found []migrate.Spec, own map[string]bool) {
	nss := map[string][]string{}
	for _, s := range found {
		nss[s.ID] = append(nss[s.ID], s.Adopted.Namespace)
	}
	for i := range found {
		a := found[i].Adopted
		var others []string
		for _, ns := range nss[found[i].ID] {
			if ns != a.Namespace {
				others = append(others, ns)
			}
		}
		if own[found[i].ID] {
			others = append(others, "the agent's own (a container ESCAPE deployed)")
		}
		if len(others) > 0 {
			a.Movable, a.Rollback = false, false
			a.Refusals = append(a.Refusals, fmt.Sprintf("id %s is also in containerd namespace %s on this host: steps name a container by its id", found[i].ID, strings.Join(others, ", ")))
		}
	}
}

// inspectAdoptable is what the node can tell of one labelled container.
func (n *Node) inspectAdoptable(ctx context.Context, c *client.Client, ns string, info containers.Container) migrate.Spec {
	a := &migrate.Adopted{Namespace: ns, Snapshotter: info.Snapshotter, Runtime: info.Runtime.Name, Status: migrate.Absent}
	s := migrate.Spec{ID: info.ID, Image: info.Image, Labels: info.Labels, Adopted: a}
	refuse := func(move, rollback bool, why string) {
		a.Movable = a.Movable && !move
		a.Rollback = a.Rollback && !rollback
		a.Refusals = append(a.Refusals, why)
	}
	a.Movable, a.Rollback = true, true
	if err := migrate.ValidID(info.ID); err != nil {
		refuse(true, true, fmt.Sprintf("id: %v", err))
	}
	if st, _, _, err := n.state(ctx, c, info.ID); err == nil {
		a.Status = st
	}
	if info.Spec == nil {
		refuse(true, true, "no OCI spec")
		return s
	}
	var spec specs.Spec
	if err := json.Unmarshal(info.Spec.GetValue(), &spec); err != nil {
		refuse(true, true, fmt.Sprintf("OCI spec: %v", err))
		return s
	}
	if len(info.Spec.GetValue()) > migrate.MaxAdoptedSpec {
		refuse(true, true, fmt.Sprintf("its OCI spec is %d bytes, more than the %d an agent reports", len(info.Spec.GetValue()), migrate.MaxAdoptedSpec))
	} else {
		a.OCISpec = json.RawMessage(slices.Clone(info.Spec.GetValue()))
	}
	if spec.Process != nil {
		s.Args, s.Env = spec.Process.Args, spec.Process.Env
	}
	for _, r := range assessSpec(&spec, info) {
		refuse(r.move, r.rollback, r.why)
	}
	n.assessNetwork(&s, &spec, refuse)
	return s
}

// refusal is one reason a container cannot move, or cannot be rolled back.
type refusal struct {
	move, rollback bool
	why            string
}

// Mount destinations a bind mount may have without keeping a container on
// its host: none. The runtime's own /etc/resolv.conf, /etc/hosts and
// /etc/hostname (nerdctl binds them from its state directory) would have to
// be carried to the destination, which the node does not do yet: they are
// refused like any other, and say so.
var runtimeFiles = []string{"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"}

// Filesystems a mount may be of and stay the container's own, wherever it
// runs: kernel filesystems and tmpfs (CRIU carries a tmpfs' content).
var ownFilesystems = []string{"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "shm"}

// assessSpec is what the spec alone says against moving or rolling back a
// container.
func assessSpec(spec *specs.Spec, info containers.Container) []refusal {
	var rs []refusal
	add := func(move, rollback bool, format string, args ...any) {
		rs = append(rs, refusal{move, rollback, fmt.Sprintf(format, args...)})
	}
	if spec.Linux == nil || spec.Process == nil || spec.Root == nil {
		add(true, true, "the OCI spec has no linux, process or root section")
		return rs
	}
	if info.Runtime.Name != "io.containerd.runc.v2" {
		add(true, true, "runtime %q: only io.containerd.runc.v2 is checkpointed", info.Runtime.Name)
	}
	if info.SnapshotKey == "" {
		add(true, false, "its root filesystem is no containerd snapshot (a host path): its changes cannot be carried")
	}
	if err := migrate.ValidImageRef(info.Image); err != nil {
		add(true, false, "image: %v", err)
	}
	if spec.Process.Terminal {
		add(true, true, "it has a terminal (ctr run -t): CRIU dumps none without --shell-job")
	}
	if c := spec.Process.Capabilities; c != nil && (slices.Contains(c.Bounding, "CAP_SYS_ADMIN") || slices.Contains(c.Effective, "CAP_SYS_ADMIN")) {
		add(true, false, "privileged (CAP_SYS_ADMIN): what it can change is the host's")
	}
	for _, m := range spec.Mounts {
		bind := m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
		switch {
		case bind && slices.Contains(runtimeFiles, m.Destination):
			add(true, false, "bind mount of the runtime's %s from %s: not carried to another host yet", m.Destination, m.Source)
		case bind:
			add(true, false, "bind mount of host path %s at %s: it is this host's", m.Source, m.Destination)
		case !slices.Contains(ownFilesystems, m.Type):
			add(true, false, "mount of type %q at %s from %s: it is this host's", m.Type, m.Destination, m.Source)
		}
	}
	for _, d := range spec.Linux.Devices {
		add(true, false, "device %s: it is this host's", d.Path)
	}
	var rules []specs.LinuxDeviceCgroup
	if spec.Linux.Resources != nil {
		rules = spec.Linux.Resources.Devices
	}
	for _, d := range rules {
		if d.Allow && d.Type == "a" && d.Major == nil && d.Minor == nil {
			add(true, false, "every device allowed: it is this host's hardware")
		}
	}
	have := map[specs.LinuxNamespaceType]specs.LinuxNamespace{}
	for _, ns := range spec.Linux.Namespaces {
		have[ns.Type] = ns
	}
	if ns, ok := have[specs.PIDNamespace]; !ok || ns.Path != "" {
		add(true, true, "the host's (or another's) PID namespace: CRIU restores PIDs only in a namespace of the container's own")
	}
	if ns, ok := have[specs.IPCNamespace]; !ok || ns.Path != "" {
		add(true, false, "the host's (or another's) IPC namespace: it shares the host's")
	}
	if _, ok := have[specs.MountNamespace]; !ok {
		add(true, true, "no mount namespace of its own")
	}
	return rs
}

// assessNetwork says what the container's network namespace allows, and
// fills in its address, MAC and interface when it has one to keep.
func (n *Node) assessNetwork(s *migrate.Spec, spec *specs.Spec, refuse func(move, rollback bool, why string)) {
	if spec.Linux == nil {
		return
	}
	have := false
	for _, ns := range spec.Linux.Namespaces {
		have = have || ns.Type == specs.NetworkNamespace
	}
	path := netnsPath(spec)
	switch {
	case !have:
		refuse(true, false, "it shares the host's network namespace, and with it the host's address: rolled back in place only")
		return
	case path == "":
		refuse(true, false, "its network namespace is runc's own, with loopback only: no address to keep, so it is rolled back in place only")
		return
	}
	name, ok := migrate.NetnsName(path)
	if !ok {
		refuse(true, false, fmt.Sprintf("network namespace %s: not a named one (/run/netns/NAME), which the node cannot act in: rolled back in place only", path))
		return
	}
	same, err := n.isHostNetns(name)
	if err != nil {
		refuse(true, true, fmt.Sprintf("network namespace %s: %v", path, err))
		return
	}
	if same {
		refuse(true, false, fmt.Sprintf("network namespace %s is the host's own, with the host's address: rolled back in place only", path))
		return
	}
	s.Adopted.Netns = path
	link, err := serviceLink(name)
	if err != nil {
		refuse(true, false, err.Error())
		return
	}
	s.Adopted.Link = link
	ip, mac, err := n.bridgedAddress(name, link)
	if err != nil {
		refuse(true, false, fmt.Sprintf("interface %s in %s: %v", link, path, err))
		return
	}
	s.IP, s.MAC = ip, mac
}

// isHostNetns says whether the named namespace is the one the host's
// bridge is in (or the agent's own).
func (n *Node) isHostNetns(name string) (bool, error) {
	var st, host unix.Stat_t
	if err := unix.Stat(arp.NetnsPath(name), &st); err != nil {
		return false, fmt.Errorf("missing: %w", err)
	}
	hostPath := "/proc/self/ns/net"
	if n.cfg.Netns != "" {
		hostPath = arp.NetnsPath(n.cfg.Netns)
	}
	if err := unix.Stat(hostPath, &host); err != nil {
		return false, err
	}
	self := unix.Stat_t{}
	_ = unix.Stat("/proc/self/ns/net", &self)
	return st.Ino == host.Ino && st.Dev == host.Dev || st.Ino == self.Ino && st.Dev == self.Dev, nil
}

// bridgedAddress is the one IPv4 address and the MAC of link in the named
// namespace, if link is a veth whose peer is a port of the host's bridge.
func (n *Node) bridgedAddress(netns, link string) (netip.Prefix, string, error) {
	ch, err := arp.Handle(netns)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	defer ch.Close()
	l, err := ch.LinkByName(link)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	veth, ok := l.(*netlink.Veth)
	if !ok {
		return netip.Prefix{}, "", fmt.Errorf("a %s: only a veth on the host's bridge is recreated elsewhere", l.Type())
	}
	// IFLA_LINK: the peer's index in its own namespace (the host's, for a
	// veth on the bridge). netlink.VethPeerIndex would ask ethtool in the
	// agent's namespace, of the agent's own interface of that name.
	peer := veth.Attrs().ParentIndex
	if peer == 0 {
		return netip.Prefix{}, "", errors.New("its peer is unknown")
	}
	hh, err := arp.Handle(n.cfg.Netns)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	defer hh.Close()
	br, err := hh.LinkByName(n.cfg.Bridge)
	if err != nil {
		return netip.Prefix{}, "", fmt.Errorf("bridge %s: %w", n.cfg.Bridge, err)
	}
	pl, err := hh.LinkByIndex(peer)
	if err != nil || pl.Attrs().MasterIndex != br.Attrs().Index {
		return netip.Prefix{}, "", fmt.Errorf("its peer is no port of the host's bridge %s", n.cfg.Bridge)
	}
	addrs, err := addressesOn(arp.Endpoint{Netns: netns, Link: link})
	if err != nil {
		return netip.Prefix{}, "", err
	}
	var global []netip.Prefix
	for _, a := range addrs {
		if !a.Addr().IsLinkLocalUnicast() {
			global = append(global, a)
		}
	}
	if len(global) != 1 {
		return netip.Prefix{}, "", fmt.Errorf("%d IPv4 addresses (%v): want one to keep", len(global), global)
	}
	if global[0].Bits() == 32 {
		return netip.Prefix{}, "", fmt.Errorf("address %v: want one with its subnet prefix", global[0])
	}
	return global[0], l.Attrs().HardwareAddr.String(), nil
}
