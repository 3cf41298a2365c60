package capmeasure

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/lab"
)

// Steps of the per-host daemon, in the order a run takes them. Each is one
// or more of the daemon's real operations, asked of it as the plane asks
// (over its mTLS gRPC API), or, for the sensor's, observed in its output.
var Steps = []StepInfo{
	{"start", "daemon start: BPF load and attach (tp_btf), ring buffer, maps; control socket, /metrics bind, mTLS listener (port 7443)"},
	{"image", "containerd client: the container image present (EnsureImage)"},
	{"netns", "network namespace and veth on the host's bridge (PrepareNetwork: unshare, bind mount under /run/netns, netlink)"},
	{"claim", "address lease (nftables fence in the namespace), ARP last look (packet socket), address add (ClaimAddress)"},
	{"run", "container create and start through containerd (Start)"},
	{"watch", "sensor: the container's cgroup resolved and watched, an epoch event for it"},
	{"announce", "gratuitous ARP from the container's interface (Announce: packet socket in the namespace)"},
	{"probe", "ARP probe from the host's interface (Probe: packet socket)"},
	{"checkpoint", "CRIU dump through containerd and runc, with the root filesystem's changes (Checkpoint; the agent's CRIU configuration, mask tmpfs)"},
	{"restore", "rollback: CRIU restore through containerd, CRIU's nftables locks cleared (Restore)"},
	{"stage", "migration destination staged: namespace, iptables guards through nsenter, root filesystem changes applied, bundle (Stage)"},
	{"lazy", "the staged copy started with a lazy restore: the agent's own criu lazy-pages daemon, guards lifted (StartStaged)"},
	{"release", "address removed and fenced (ReleaseAddress)"},
	{"leftover", "the task killed (Kill), and a process of another user put in the container's cgroup, as a lazy restore whose CRIU was killed leaves one"},
	{"remove", "container, namespace and the leftover removed (Remove: the agent kills what is left in the cgroup), checkpoint image dropped (DropImage)"},
}

// StepInfo names a step and says what it exercises.
type StepInfo struct{ Name, What string }

// Outcome is one run of the scenario under one bounding set.
type Outcome struct {
	Caps   []string // the bounding set asked for (setpriv names)
	Keep   []string // kept after the BPF load (nil: nothing dropped)
	Passed []string // steps that passed, in order
	Failed string   // the first step that failed ("" for none)
	Err    string   // its error
	// CapEff and CapBnd are the daemon's, read from /proc once it
	// answered (after the BPF load): hex, as /proc/<pid>/status shows.
	CapEff, CapBnd string
}

// OK says whether every step passed (of Steps, or of the steps given).
func (o Outcome) OK(steps ...[]StepInfo) bool {
	want := Steps
	if len(steps) > 0 {
		want = steps[0]
	}
	return o.Failed == "" && len(o.Passed) == len(want)
}

// runner runs the scenario on one lab host.
type runner struct {
	inv  *lab.Inventory
	host lab.Host
	bin  string
	seq  int
}

func newRunner(inv *lab.Inventory, host string) (*runner, error) {
	h, ok := inv.Host(host)
	if !ok {
		return nil, fmt.Errorf("no host %s in the lab", host)
	}
	bin := filepath.Join(inv.BinDir, "escape-sensor")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w (run: make build)", err)
	}
	return &runner{inv: inv, host: h, bin: bin}, nil
}

// serviceAddr is the nth address of the lab's service range.
func (r *runner) serviceAddr(n int) (netip.Prefix, string, error) {
	a := r.inv.ServiceRange.Addr()
	for range n {
		a = a.Next()
	}
	if !r.inv.ServiceRange.Contains(a) {
		return netip.Prefix{}, "", fmt.Errorf("%v is outside the service range %v", a, r.inv.ServiceRange)
	}
	b := a.As4()
	return netip.PrefixFrom(a, r.inv.Subnet.Bits()), fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3]), nil
}

// Run runs every step with the daemon started under the bounding set caps,
// keeping keep after its BPF load (nil: dropping nothing), stopping at the
// first step that fails, then cleans up with the host's agent as the lab
// runs it (every capability), which it leaves running.
func (r *runner) Run(ctx context.Context, caps, keep []string) (Outcome, error) {
	r.seq++
	out := Outcome{Caps: caps, Keep: keep}
	id := fmt.Sprintf("capm-%d-%d", time.Now().Unix()%100000, r.seq)
	ip, mac, err := r.serviceAddr(200)
	if err != nil {
		return out, err
	}
	ip2, mac2, err := r.serviceAddr(201)
	if err != nil {
		return out, err
	}
	spec := migrate.Spec{ID: id, Image: lab.ImageRef("redis"), IP: ip, MAC: mac, NetworkLock: "nftables",
		// Changes to the image's files of every kind a migration carries
		// (the checkpoint's RootFS, applied by the staged copy): a file
		// of another owner with its setuid bit, a deleted file (a
		// whiteout), a directory; then redis.
		Args: []string{"/bin/sh", "-c", "mkdir -p /srv/capm && echo x >/srv/capm/owned && chown 65534:65534 /srv/capm/owned /srv/capm && " +
			"chmod 4755 /srv/capm/owned && rm /usr/bin/redis-cli && " +
			"exec /usr/bin/redis-server --port 6379 --protected-mode no --save '' --appendonly no"}}
	staged := spec
	staged.ID, staged.IP, staged.MAC = id+"-s", ip2, mac2
	img := migrate.ImageName("capmeasure/" + id)
	defer r.cleanup(ctx, []string{staged.ID, spec.ID}, img)

	var pid int
	var agent *agentapi.Client
	var cleanups []func()
	var leftoverGone <-chan struct{}
	defer func() {
		if agent != nil {
			agent.Close()
		}
		for _, c := range cleanups {
			c()
		}
	}()
	startedAt := time.Now()
	lease := migrate.Lease{IP: ip.Addr(), Generation: uint64(time.Now().UnixNano()), NotAfter: time.Now().Add(time.Hour)}
	steps := map[string]func(context.Context) error{
		"start": func(ctx context.Context) error {
			var err error
			if pid, err = r.startDaemon(ctx, caps, keep); err != nil {
				return err
			}
			out.CapEff, out.CapBnd = procCaps(pid)
			agent, err = lab.AgentClient(r.inv, r.host.Name)
			return err
		},
		"image": func(ctx context.Context) error { _, err := agent.EnsureImage(ctx, spec.Image, nil); return err },
		"netns": func(ctx context.Context) error { _, err := agent.PrepareNetwork(ctx, spec, false); return err },
		"claim": func(ctx context.Context) error {
			_, err := agent.ClaimAddress(ctx, id, ip, migrate.ClaimOptions{LastLook: 200 * time.Millisecond, Lease: lease})
			return err
		},
		"run":   func(ctx context.Context) error { _, err := agent.Start(ctx, spec, migrate.StartOptions{}); return err },
		"watch": func(ctx context.Context) error { return r.waitEpoch(ctx, id, startedAt) },
		"announce": func(ctx context.Context) error {
			_, err := agent.Announce(ctx, id, ip.Addr(), migrate.AnnounceOptions{Rounds: 1, Interval: 10 * time.Millisecond})
			return err
		},
		"probe": func(ctx context.Context) error {
			_, err := agent.Probe(ctx, ip2.Addr(), "", 200*time.Millisecond)
			return err
		},
		"checkpoint": func(ctx context.Context) error {
			res, err := agent.Checkpoint(ctx, id, img, migrate.CheckpointOptions{RootFS: true})
			if err == nil && res.Did != "dumped" {
				err = fmt.Errorf("checkpoint did %q, want dumped", res.Did)
			}
			return err
		},
		"restore": func(ctx context.Context) error {
			_, err := agent.Restore(ctx, spec, img, migrate.RestoreOptions{ClearLocks: true, TCPClose: true})
			return err
		},
		"stage": func(ctx context.Context) error {
			_, err := agent.Stage(ctx, staged, img, migrate.StageOptions{Guards: migrate.GuardResets | migrate.GuardHold})
			return err
		},
		"lazy": func(ctx context.Context) error {
			_, err := agent.StartStaged(ctx, staged, img, migrate.StartStagedOptions{Lazy: true, Guards: migrate.GuardResets | migrate.GuardHold})
			return err
		},
		"release": func(ctx context.Context) error { _, err := agent.ReleaseAddress(ctx, id, ip); return err },
		"leftover": func(ctx context.Context) error {
			if _, err := agent.Kill(ctx, id); err != nil {
				return err
			}
			gone, stop, err := r.leaveProcess(id)
			if err != nil {
				return err
			}
			leftoverGone = gone
			cleanups = append(cleanups, stop)
			return nil
		},
		"remove": func(ctx context.Context) error {
			for _, c := range []string{staged.ID, spec.ID} {
				if _, err := agent.Remove(ctx, c); err != nil {
					return err
				}
			}
			select {
			case <-leftoverGone:
			case <-time.After(2 * time.Second):
				return errors.New("the leftover process in the container's cgroup still runs after Remove")
			}
			_, err := agent.DropImage(ctx, img)
			return err
		},
	}
	for _, s := range Steps {
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err := steps[s.Name](sctx)
		cancel()
		if err != nil {
			out.Failed, out.Err = s.Name, oneLine(err.Error())
			return out, nil
		}
		out.Passed = append(out.Passed, s.Name)
	}
	return out, nil
}

func oneLine(s string) string {
	s = sanitize(strings.Join(strings.Fields(s), " "))
	// The client and the agent both name the step: "start staged x on
	// h1: start staged x on h1: ..." says it once.
	if i := strings.Index(s, ": "); i > 0 && strings.HasPrefix(s[i+2:], s[:i+2]) {
		s = s[i+2:]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
