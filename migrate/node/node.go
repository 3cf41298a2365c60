package node

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// Config is one host as its agent runs it.
type Config struct {
	// Name is the host's name, as its certificate names it.
	Name string
	// Containerd is the socket of the host's containerd.
	Containerd string
	// Namespace is the containerd namespace (default "escape").
	Namespace string
	// Netns is the named network namespace that holds the host's bridge;
	// "" is the agent's own (production).
	Netns string
	// Bridge is the bridge that container interfaces plug into.
	Bridge string
	// CgroupParent: containers' cgroups are /<CgroupParent>/<id> (default
	// "escape").
	CgroupParent string
	// RuncRoot is runc's state directory ("" = containerd's default).
	// Hosts sharing one kernel must not share it: runc keys state by
	// container id alone, so a source and a destination copy would clobber
	// each other.
	RuncRoot string
	// CRIU is the CRIU binary the lazy-pages daemon runs from; "" means no
	// lazy restore.
	CRIU string
	// StateDir holds the node's local state: images when there is no
	// shared storage, CRIU work directories and configurations, leases
	// and the mask directory.
	StateDir string
	// SharedDir is the shared storage mount ("" = none).
	SharedDir string
	// Adopt are the containerd namespaces whose containers labelled
	// migrate.AdoptLabel=true the node adopts (adopt.go): nerdctl's is
	// "default", Kubernetes' "k8s.io". None: the node acts on its own
	// namespace only.
	Adopt []string
}

// maxAdoptNamespaces bounds Config.Adopt: every step on a container the
// node did not find in its own namespace looks in each of them.
const maxAdoptNamespaces = 8

// Node is one host's agent: it carries out every host-local step of a
// checkpoint, a rollback, a replication or a migration against its own
// containerd, CRIU and netlink. It implements migrate.Host.
type Node struct {
	cfg         Config
	log         *zap.Logger
	peers       Peers
	now         func() time.Time
	dialTimeout time.Duration

	connMu sync.Mutex
	cl     *client.Client

	// Steps on one container (or one image) run one at a time; the locks
	// are striped so that garbage ids cannot grow a map.
	ctLocks  [64]sync.Mutex
	imgLocks [64]sync.Mutex

	// afterLazyStart, when set (by tests), runs between a lazy copy's
	// start and its last page.
	afterLazyStart func()

	// interventions hears of every step that runs code inside a container
	// (WithInterventions).
	interventions intervene.Func

	releaseMask func() error
	storageID   string

	offers offers
	sentry sentries
	// announcing are the containers' announcement rounds still to come:
	// a container that gives its address up stops announcing it.
	announcing announcements
	// places are where the adopted containers that steps found live
	// (place.go).
	places places
	// bgCtx carries the work that outlives a call (announcement rounds,
	// sentries); Close cancels it.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	closing  chan struct{}
	bg       sync.WaitGroup
}

var _ migrate.Host = (*Node)(nil)

// Option tunes a Node.
type Option func(*Node)

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(n *Node) { n.log = l } }

// WithPeers sets how the node reaches other hosts' agents (Fetch,
// EnsureImage from a peer).
func WithPeers(p Peers) Option { return func(n *Node) { n.peers = p } }

// WithInterventions tells f of every step that runs code inside a container
// or replaces its process: Checkpoint (CRIU's parasite), Restore and
// StartStaged (CRIU's restorer, lazily or not) and Restart. f is called as
// the step begins and the function it returns once it ends; the daemon
// gives it the sensor's intervene.Log, so that the sensor in the same
// process marks the epochs those steps perturb. Stage runs nothing in the
// container (runc reads the dump only at StartStaged) and is not reported.
func WithInterventions(f intervene.Func) Option { return func(n *Node) { n.interventions = f } }

// WithClock sets the clock of tickets and sentries (tests).
func WithClock(now func() time.Time) Option { return func(n *Node) { n.now = now } }

// WithDialTimeout bounds connecting to containerd and each of its
// liveness checks (default 5 s).
func WithDialTimeout(d time.Duration) Option { return func(n *Node) { n.dialTimeout = d } }

var (
	hostNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	cgroupRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
)

func (c *Config) validate() error {
	var errs []error
	if !hostNameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("Name %q: want a host name of [a-z0-9.-]", c.Name))
	}
	if !filepath.IsAbs(c.Containerd) {
		errs = append(errs, fmt.Errorf("Containerd %q: want the absolute path of containerd's socket", c.Containerd))
	}
	if c.Namespace == "" {
		c.Namespace = "escape"
	}
	if err := identifiers.Validate(c.Namespace); err != nil {
		errs = append(errs, fmt.Errorf("Namespace %q: %w", c.Namespace, err))
	}
	if len(c.Adopt) > maxAdoptNamespaces {
		errs = append(errs, fmt.Errorf("Adopt: %d namespaces, at most %d", len(c.Adopt), maxAdoptNamespaces))
	}
	for _, ns := range c.Adopt {
		if err := identifiers.Validate(ns); err != nil {
			errs = append(errs, fmt.Errorf("Adopt %q: %w", ns, err))
		} else if ns == c.Namespace {
			errs = append(errs, fmt.Errorf("Adopt %q: the node's own namespace holds what ESCAPE deploys, not what it adopts", ns))
		}
	}
	if c.Netns != "" && (strings.ContainsAny(c.Netns, "/\x00") || c.Netns == "." || c.Netns == "..") {
		errs = append(errs, fmt.Errorf("Netns %q: want the name of a namespace in /run/netns", c.Netns))
	}
	if c.Bridge == "" || len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/ \x00") {
		errs = append(errs, fmt.Errorf("Bridge %q: want an interface name", c.Bridge))
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "escape"
	}
	if !cgroupRE.MatchString(c.CgroupParent) || strings.Contains("/"+c.CgroupParent+"/", "/../") || strings.Contains("/"+c.CgroupParent+"/", "/./") {
		errs = append(errs, fmt.Errorf("CgroupParent %q: want a relative cgroup path such as escape or escape/h1", c.CgroupParent))
	}
	if c.RuncRoot != "" && !filepath.IsAbs(c.RuncRoot) {
		errs = append(errs, fmt.Errorf("RuncRoot %q: want an absolute path or nothing", c.RuncRoot))
	}
	if c.CRIU != "" {
		if st, err := os.Stat(c.CRIU); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("CRIU %q: want an executable CRIU binary (%v)", c.CRIU, err))
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("StateDir %q: want an absolute path", c.StateDir))
	}
	if c.SharedDir != "" {
		if st, err := os.Stat(c.SharedDir); err != nil || !st.IsDir() || !filepath.IsAbs(c.SharedDir) {
			errs = append(errs, fmt.Errorf("SharedDir %q: want the absolute path of a mounted directory (%v)", c.SharedDir, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("node config: %w", errors.Join(errs...))
	}
	c.StateDir, c.SharedDir = filepath.Clean(c.StateDir), cleanOrEmpty(c.SharedDir)
	return nil
}

func cleanOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// New returns the node for cfg. It prepares the local state (directories,
// the mask directory, the shared storage's id) and puts every container's
// CRIU configuration back as the node writes it, without what a crashed
// agent left in it for one restore (lazy-pages, tcp-close). containerd is
// dialled lazily.
func New(cfg Config, opts ...Option) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: zap.NewNop(), now: time.Now, dialTimeout: 5 * time.Second, closing: make(chan struct{})}
	for _, o := range opts {
		o(n)
	}
	n.log = n.log.With(zap.String("host", cfg.Name))
	if err := n.prepareState(); err != nil {
		return nil, err
	}
	n.bgCtx, n.bgCancel = context.WithCancel(context.Background())
	n.bg.Add(1)
	go n.sweepSentries()
	return n, nil
}

// Name is the host's name.
func (n *Node) Name() string { return n.cfg.Name }

// Close stops the node's sentries, drops its containerd connection and
// releases its mask directory.
func (n *Node) Close() error {
	select {
	case <-n.closing:
		return nil
	default:
	}
	close(n.closing)
	n.bgCancel()
	n.bg.Wait()
	n.sentry.stopAll()
	n.connMu.Lock()
	var errs []error
	if n.cl != nil {
		errs = append(errs, n.cl.Close())
		n.cl = nil
	}
	n.connMu.Unlock()
	if n.releaseMask != nil {
		errs = append(errs, n.releaseMask())
	}
	return errors.Join(errs...)
}

// Hello says who the agent is and what it can do; it checks that
// containerd answers.
func (n *Node) Hello(ctx context.Context) (migrate.HostInfo, error) {
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return migrate.HostInfo{}, n.fail("hello", "", err)
	}
	pctx, cancel := context.WithTimeout(ctx, n.dialTimeout)
	defer cancel()
	if _, err := c.Version(pctx); err != nil {
		n.dropIfUnavailable(err)
		return migrate.HostInfo{}, n.fail("hello", "", fmt.Errorf("containerd: %w", err))
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return migrate.HostInfo{}, n.fail("hello", "", err)
	}
	return migrate.HostInfo{Name: n.cfg.Name, Version: version(), SharedStorage: n.storageID,
		LazyRestore: n.cfg.CRIU != "", BootID: strings.TrimSpace(string(boot))}, nil
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// conn returns the containerd client, dialling it if needed, and ctx in
// the node's namespace.
func (n *Node) conn(ctx context.Context) (*client.Client, context.Context, error) {
	ctx = namespaces.WithNamespace(ctx, n.cfg.Namespace)
	n.connMu.Lock()
	defer n.connMu.Unlock()
	select {
	case <-n.closing:
		return nil, ctx, errors.New("node closed")
	default:
	}
	if n.cl != nil {
		return n.cl, ctx, nil
	}
	c, err := client.New(n.cfg.Containerd, client.WithTimeout(n.dialTimeout), client.WithDefaultNamespace(n.cfg.Namespace))
	if err != nil {
		return nil, ctx, fmt.Errorf("containerd at %s: %w", n.cfg.Containerd, err)
	}
	n.cl = c
	return c, ctx, nil
}

// dropIfUnavailable forgets a connection that broke, so the next call
// redials. A caller's deadline is not the connection's fault, and closing
// it would fail other callers' calls.
func (n *Node) dropIfUnavailable(err error) {
	if !errdefs.IsUnavailable(err) {
		return
	}
	n.connMu.Lock()
	defer n.connMu.Unlock()
	if n.cl != nil {
		_ = n.cl.Close()
		n.cl = nil
	}
}

// fail wraps err with the step, the container (if any) and the host.
func (n *Node) fail(step, id string, err error) error {
	if id == "" {
		return fmt.Errorf("%s on %s: %w", step, n.cfg.Name, err)
	}
	return fmt.Errorf("%s %s on %s: %w", step, id, n.cfg.Name, err)
}

func stripe(s string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return int(h.Sum32() % 64)
}

// lockContainer serialises the steps on container id.
func (n *Node) lockContainer(id string) func() {
	m := &n.ctLocks[stripe(id)]
	m.Lock()
	return m.Unlock
}

// lockImage serialises the steps on one image; taken after a container's
// lock, never before.
func (n *Node) lockImage(name migrate.ImageName) func() {
	m := &n.imgLocks[stripe(string(name))]
	m.Lock()
	return m.Unlock
}
