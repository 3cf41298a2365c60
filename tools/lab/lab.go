package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Defaults of a lab. Addresses come from 198.18.0.0/15 (RFC 2544's
// benchmarking range) and are used only inside the lab's namespaces.
const (
	DefaultRoot      = "/var/lib/" + DefaultName + "-lab"
	DefaultRunDir    = "/run/" + DefaultName + "-lab"
	DefaultPrefix    = "/opt/escape"
	DefaultHosts     = 3
	DefaultNamespace = "escape"
	// DefaultName names the default lab. Every namespace the lab (and
	// ESCAPE inside it) creates is named "<name>-...", and its containers
	// live in the cgroup subtree "/<name>/<host>/<container>", so that Down
	// can sweep them after a crash and two labs never touch each other.
	DefaultName = "escape"
	// MaxHosts bounds N so every host's address fits below the service range.
	MaxHosts = 200
)

var (
	labSubnet    = netip.MustParsePrefix("198.18.0.0/15")
	serviceRange = netip.MustParsePrefix("198.18.1.0/24")
	clientIP     = netip.MustParseAddr("198.18.0.2")
	planeIP      = netip.MustParseAddr("198.18.0.3")
)

type config struct {
	name, root, runDir, prefix string
	hosts                      int
	sharedSize                 string
	shared, agents             bool
	binDir, agentSettings      string
	kubernetes                 bool
	kubeCache                  string
	log                        *zap.Logger
}

// Option configures Up, Down and Status.
type Option func(*config)

// WithName sets the lab's name, which prefixes its namespaces and cgroups
// and, unless set explicitly, its directories (/var/lib/<name>-lab,
// /run/<name>-lab). Tests use it to build a lab of their own.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithRoot sets the lab's directory on disk (containerd roots, shared storage, inventory).
func WithRoot(dir string) Option { return func(c *config) { c.root = dir } }

// WithRunDir sets the lab's runtime directory (sockets, pid files, containerd state).
func WithRunDir(dir string) Option { return func(c *config) { c.runDir = dir } }

// WithPrefix sets where make deps installed containerd and CRIU.
func WithPrefix(dir string) Option { return func(c *config) { c.prefix = dir } }

// WithHosts sets the number of test hosts.
func WithHosts(n int) Option { return func(c *config) { c.hosts = n } }

// WithSharedSize caps the shared storage (a tmpfs size such as "8g"), so a
// test can fill it on purpose.
func WithSharedSize(size string) Option { return func(c *config) { c.sharedSize = size } }

// WithSharedStorage says whether every host mounts the shared storage (as
// NFS) at Inventory.Shared; without, checkpoint images go agent to agent.
func WithSharedStorage(on bool) Option { return func(c *config) { c.shared = on } }

// WithAgents says whether Up starts a node agent on every host (the
// default). Without, hosts have containerd only, and StartAgent starts one.
func WithAgents(on bool) Option { return func(c *config) { c.agents = on } }

// WithBinDir sets where the ESCAPE binaries are (escape-sensor); the
// default is the directory of the running executable.
func WithBinDir(dir string) Option { return func(c *config) { c.binDir = dir } }

// WithAgentSettings names a YAML file whose sensor: and agent: maps are
// merged over the settings the lab writes for every host's agent.
func WithAgentSettings(path string) Option { return func(c *config) { c.agentSettings = path } }

// WithLogger sets the logger for progress messages.
func WithLogger(l *zap.Logger) Option { return func(c *config) { c.log = l } }

func newConfig(opts []Option) config {
	c := config{name: DefaultName, prefix: DefaultPrefix, hosts: DefaultHosts, sharedSize: "8g", shared: true, agents: true, log: zap.NewNop()}
	for _, o := range opts {
		o(&c)
	}
	if c.root == "" {
		c.root = "/var/lib/" + c.name + "-lab"
	}
	if c.runDir == "" {
		c.runDir = "/run/" + c.name + "-lab"
	}
	if c.binDir == "" {
		if exe, err := os.Executable(); err == nil {
			c.binDir = filepath.Dir(exe)
		}
	}
	return c
}

func (c config) nsDir() string { return filepath.Join(c.runDir, "ns") }

// hostLabels gives each host a distinct mix of datacenter, network and
// configuration so the destination model has heterogeneity to weigh.
func hostLabels(i int, kernel string) map[string]string {
	configs := []string{"default", "hardened", "minimal"}
	return map[string]string{
		"datacenter": fmt.Sprintf("dc-%c", 'a'+rune((i-1)%2)),
		"network":    fmt.Sprintf("net-%d", (i-1)/2+1),
		"config":     configs[(i-1)%len(configs)],
		"kernel":     kernel,
		"runtime":    "runc",
	}
}

func (c config) netnsPrefix() string { return c.name + "-" }

func plan(c config) (*Inventory, error) {
	if c.hosts < 1 || c.hosts > MaxHosts {
		return nil, fmt.Errorf("hosts must be between 1 and %d, got %d", MaxHosts, c.hosts)
	}
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	kernel := utsString(uts.Release[:])
	planeDir := filepath.Join(c.root, "plane")
	inv := &Inventory{
		Version: InventoryVersion, Root: c.root, RunDir: c.runDir,
		Shared: filepath.Join(c.root, "shared"), SharedStorage: c.shared, Agents: c.agents, BinDir: c.binDir,
		Subnet: labSubnet, ServiceRange: serviceRange,
		Fabric: Fabric{Netns: c.netnsPrefix() + "fabric", Bridge: "br-fabric"},
		Client: Endpoint{Netns: c.netnsPrefix() + "client", IP: clientIP, Link: "eth0", Port: "p-client"},
		Plane: PlaneNS{
			Endpoint: Endpoint{Netns: c.netnsPrefix() + "plane", IP: planeIP, Link: "eth0", Port: "p-plane"},
			Machine:  machine(c, "plane", planeDir),
			API:      netip.AddrPortFrom(planeIP, PlaneAPIPort).String(),
		},
		PKI:          PKI{Dir: filepath.Join(c.root, "pki"), CA: filepath.Join(c.root, "pki", "ca.crt"), OperatorName: DefaultOperator},
		Images:       map[string]Image{},
		Namespace:    DefaultNamespace,
		NetnsPrefix:  c.netnsPrefix(),
		CgroupParent: c.name,
	}
	ip := netip.MustParseAddr("198.18.0.10")
	for i := 1; i <= c.hosts; i++ {
		ip = ip.Next()
		name := fmt.Sprintf("h%d", i)
		run := filepath.Join(c.runDir, name)
		dir := filepath.Join(c.root, "hosts", name)
		m := machine(c, name, dir)
		inv.Hosts = append(inv.Hosts, Host{
			Name:         name,
			Endpoint:     Endpoint{Netns: c.netnsPrefix() + name, IP: ip, Link: "br0", Port: "p-" + name},
			Machine:      m,
			Bridge:       "br0",
			Uplink:       "eth0",
			Containerd:   filepath.Join(run, "containerd.sock"),
			Agent:        netip.AddrPortFrom(ip, AgentPort).String(),
			Labels:       hostLabels(i, kernel),
			CRIU:         filepath.Join(c.prefix, "bin", "criu"),
			PIDFile:      filepath.Join(run, "containerd.pid"),
			AgentPIDFile: filepath.Join(run, "agent.pid"),
			LogFile:      filepath.Join(m.LogDir, "containerd.log"),
			AgentLog:     filepath.Join(m.LogDir, "agent.log"),
			RuncRoot:     "/run/containerd/runc",
			RootDir:      filepath.Join(dir, "containerd"),
		})
	}
	for _, spec := range labImages {
		inv.Images[spec.name] = Image{Ref: ImageRef(spec.name), RootFS: filepath.Join(c.root, "images", spec.name, "rootfs")}
	}
	return inv, nil
}

// machine lays out a lab machine's own directories under dir.
func machine(c config, name, dir string) Machine {
	return Machine{MountNS: filepath.Join(c.nsDir(), name), Dir: dir, Config: filepath.Join(dir, "etc", "escape.yaml"),
		LogDir: filepath.Join(dir, "log")}
}

// binds are the directories of a machine bound at the standard places.
func (m Machine) binds(host bool) [][2]string {
	b := [][2]string{{filepath.Join(m.Dir, "etc"), "/etc/escape"}, {filepath.Join(m.Dir, "state"), "/var/lib/escape"},
		{m.LogDir, "/var/log/escape"}}
	if host {
		b = append(b, [2]string{filepath.Join(m.Dir, "containerd"), "/var/lib/containerd"})
	}
	return b
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// Up builds the lab and returns its inventory. A lab that is already up
// and healthy with the same hosts, agents, shared storage and binaries is
// reused; anything else already there is torn down first. A failed Up
// tears down what it built.
func Up(ctx context.Context, opts ...Option) (*Inventory, error) {
	c := newConfig(opts)
	unlock, err := lock(ctx, c)
	if err != nil {
		return nil, err
	}
	defer unlock()

	if inv, err := LoadInventory(ctx, c.root); err == nil && len(inv.Hosts) == c.hosts && inv.Agents == c.agents &&
		inv.SharedStorage == c.shared && inv.BinDir == c.binDir && (inv.Kubernetes != nil) == c.kubernetes {
		if st := status(ctx, inv); st.Healthy() {
			c.log.Info("lab already up", zap.Int("hosts", len(inv.Hosts)))
			if err := RestartStaleAgents(ctx, inv, c.log); err != nil {
				return nil, fmt.Errorf("lab up: %w", err)
			}
			return inv, nil
		}
	}
	if err := down(ctx, c); err != nil {
		return nil, fmt.Errorf("clear previous lab: %w", err)
	}
	inv, err := plan(c)
	if err != nil {
		return nil, err
	}
	if err := build(ctx, c, inv); err != nil {
		if derr := down(context.WithoutCancel(ctx), c); derr != nil {
			c.log.Error("tear down after failed up", zap.Error(derr))
		}
		return nil, fmt.Errorf("lab up: %w", err)
	}
	return inv, nil
}

func build(ctx context.Context, c config, inv *Inventory) error {
	if _, err := os.Stat(filepath.Join(c.prefix, "bin", "containerd")); err != nil {
		return fmt.Errorf("containerd not installed under %s (run: make deps): %w", c.prefix, err)
	}
	var extra []byte
	if c.agentSettings != "" {
		var err error
		if extra, err = os.ReadFile(c.agentSettings); err != nil {
			return fmt.Errorf("agent settings: %w", err)
		}
	}
	if c.agents {
		if _, err := os.Stat(filepath.Join(c.binDir, "escape-sensor")); err != nil {
			return fmt.Errorf("agents need escape-sensor in %s (run: make build, or pass --bin): %w", c.binDir, err)
		}
	}
	if c.kubernetes {
		if err := EnsureKubeBinaries(ctx, c.kubeCacheDir(), DefaultKubeVersion); err != nil {
			return err
		}
	}
	for _, d := range []string{c.root, c.runDir, inv.Shared} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if c.kubernetes {
		inv.Kubernetes = planKube(c, inv)
		if _, err := os.Stat(inv.Kubernetes.Etcd); err != nil {
			return fmt.Errorf("kubernetes needs etcd (run: make deps): %w", err)
		}
		if err := makeKubeMountpoints(c); err != nil {
			return err
		}
	}
	// Shared storage is a size-capped tmpfs: every host sees it at the same
	// path, as with NFS, and "storage full" can be provoked for real.
	if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size="+c.sharedSize+",mode=0755", "escape-lab-shared", inv.Shared).CombinedOutput(); err != nil {
		return fmt.Errorf("mount shared storage at %s: %v: %s", inv.Shared, err, out)
	}
	if err := privateNSDir(c.nsDir()); err != nil {
		return err
	}
	c.log.Info("building network", zap.Int("hosts", len(inv.Hosts)))
	if err := buildNetwork(inv); err != nil {
		return err
	}
	if err := makePKI(inv); err != nil {
		return err
	}
	shared := ""
	if inv.SharedStorage {
		shared = inv.Shared
	}
	c.log.Info("building machines")
	if err := makeMachine(ctx, c, inv.Plane.MountNS, "", inv.Plane.binds(false)); err != nil {
		return fmt.Errorf("plane: %w", err)
	}
	if err := writePlaneBase(inv); err != nil {
		return err
	}
	for _, h := range inv.Hosts {
		if err := os.MkdirAll(filepath.Dir(h.PIDFile), 0o755); err != nil {
			return err
		}
		binds := h.binds(true)
		if inv.kubeHost(h.Name) {
			binds = append(binds, inv.Kubernetes.binds()...)
		}
		if err := makeMachine(ctx, c, h.MountNS, shared, binds); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		if inv.kubeHost(h.Name) {
			if err := writeKubeConfigs(inv, h); err != nil {
				return err
			}
		}
		if err := writeAgentConfig(inv, h, extra); err != nil {
			return err
		}
	}
	c.log.Info("building images")
	archives := map[string][]byte{}
	for _, spec := range labImages {
		img := inv.Images[spec.name]
		if err := buildRootFS(ctx, spec, img.RootFS); err != nil {
			return err
		}
		a, err := ociArchive(img.RootFS, img.Ref)
		if err != nil {
			return fmt.Errorf("pack image %s: %w", spec.name, err)
		}
		archives[spec.name] = a
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for _, h := range inv.Hosts {
		g.Go(func() error {
			c.log.Info("starting containerd", zap.String("host", h.Name))
			if err := startContainerd(gctx, h, c.prefix, inv.kubeHost(h.Name)); err != nil {
				return err
			}
			for name, a := range archives {
				if err := importImage(gctx, h.Containerd, inv.Namespace, a); err != nil {
					return fmt.Errorf("image %s on %s: %w", name, h.Name, err)
				}
			}
			if err := seedKdat(gctx, inv, h); err != nil {
				return err
			}
			if c.agents {
				return StartAgent(gctx, inv, h.Name, c.log)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if inv.Kubernetes != nil {
		if err := startKube(ctx, c, inv); err != nil {
			return err
		}
	}
	return saveInventory(inv)
}

// Down removes everything Up created. It works from what it finds on the
// machine, not only from the inventory, so it also cleans up after a
// crashed or half-finished Up.
func Down(ctx context.Context, opts ...Option) error {
	c := newConfig(opts)
	unlock, err := lock(ctx, c)
	if err != nil {
		return err
	}
	defer unlock()
	return down(ctx, c)
}

// lock serializes lab invocations machine-wide with an flock that lives
// outside the directories Down removes.
func lock(ctx context.Context, c config) (func(), error) {
	path := filepath.Join(filepath.Dir(c.runDir), filepath.Base(c.runDir)+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lab lock %s: %w", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
	case <-ctx.Done():
		f.Close() // unblocks nothing by itself, but the flock dies with the fd's last close
		return nil, fmt.Errorf("wait for lab lock %s: %w", path, ctx.Err())
	}
	return func() { f.Close() }, nil
}

// ErrUnhealthy reports a lab whose status shows failures.
var ErrUnhealthy = errors.New("lab is not healthy")
