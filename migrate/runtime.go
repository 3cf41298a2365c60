package migrate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/zap"
)

// Host is one machine with its own containerd.
type Host struct {
	Name      string `json:"name"`
	Netns     string `json:"netns"`
	Bridge    string `json:"bridge"`
	Socket    string `json:"socket"`
	Namespace string `json:"namespace"`
	// RuncRoot is runc's state directory for this host. Hosts sharing one
	// kernel must not share it: runc keys state by container id alone, so
	// a source and a destination copy would clobber each other. Defaults
	// to a "runc" directory beside the containerd socket.
	RuncRoot string `json:"runc_root,omitempty"`
	// CgroupParent is the first element of every container's cgroups path
	// (/<parent>/<host>/<id>); defaults to "escape".
	CgroupParent string `json:"cgroup_parent,omitempty"`
	// CRIU is the CRIU binary runc uses on this host. With it, staged
	// migrations to the host restore memory lazily (lazy.go); without it,
	// in full.
	CRIU string `json:"criu,omitempty"`
}

// Status of a container's task on one host.
type Status string

const (
	Absent  Status = "absent"  // no container object
	Created Status = "created" // container object, no task
	Running Status = "running"
	Paused  Status = "paused"
	Stopped Status = "stopped" // task exited (e.g. after a dump with exit)
)

// Runtime drives the containerd of every host.
type Runtime struct {
	log     *zap.Logger
	timeout time.Duration
	mu      sync.Mutex
	hosts   map[string]Host
	clients map[string]*client.Client
}

// RuntimeOption tunes a Runtime.
type RuntimeOption func(*Runtime)

// WithRuntimeLogger sets the logger.
func WithRuntimeLogger(l *zap.Logger) RuntimeOption { return func(r *Runtime) { r.log = l } }

// WithDialTimeout bounds connecting to a host's containerd (default 5 s).
func WithDialTimeout(d time.Duration) RuntimeOption { return func(r *Runtime) { r.timeout = d } }

// NewRuntime returns a runtime for hosts. Connections are made lazily.
func NewRuntime(hosts []Host, opts ...RuntimeOption) (*Runtime, error) {
	r := &Runtime{log: zap.NewNop(), timeout: 5 * time.Second, hosts: map[string]Host{}, clients: map[string]*client.Client{}}
	for _, o := range opts {
		o(r)
	}
	for _, h := range hosts {
		if h.Name == "" || h.Netns == "" || h.Bridge == "" || h.Socket == "" {
			return nil, fmt.Errorf("host %+v: name, netns, bridge and socket are required", h)
		}
		if h.Namespace == "" {
			h.Namespace = "escape"
		}
		if h.CgroupParent == "" {
			h.CgroupParent = "escape"
		}
		if h.RuncRoot == "" {
			h.RuncRoot = filepath.Join(filepath.Dir(h.Socket), "runc")
		}
		if _, dup := r.hosts[h.Name]; dup {
			return nil, fmt.Errorf("host %s listed twice", h.Name)
		}
		r.hosts[h.Name] = h
	}
	return r, nil
}

// Hosts returns the configured hosts.
func (r *Runtime) Hosts() []Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Host, 0, len(r.hosts))
	for _, h := range r.hosts {
		out = append(out, h)
	}
	return out
}

// Close drops every connection.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for n, c := range r.clients {
		errs = append(errs, c.Close())
		delete(r.clients, n)
	}
	return errors.Join(errs...)
}

func (r *Runtime) conn(ctx context.Context, name string) (Host, *client.Client, context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[name]
	if !ok {
		return Host{}, nil, ctx, fmt.Errorf("unknown host %q", name)
	}
	ctx = namespaces.WithNamespace(ctx, h.Namespace)
	if c, ok := r.clients[name]; ok {
		return h, c, ctx, nil
	}
	c, err := client.New(h.Socket, client.WithTimeout(r.timeout), client.WithDefaultNamespace(h.Namespace))
	if err != nil {
		return h, nil, ctx, fmt.Errorf("containerd of %s: %w", name, err)
	}
	r.clients[name] = c
	return h, c, ctx, nil
}

// drop forgets a host's connection after an error so the next call redials.
func (r *Runtime) drop(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.clients[name]; ok {
		_ = c.Close()
		delete(r.clients, name)
	}
}

// Ping checks that a host's containerd answers.
func (r *Runtime) Ping(ctx context.Context, host string) error {
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if _, err := c.Version(ctx); err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("containerd of %s: %w", host, err)
	}
	return nil
}

func (r *Runtime) specOpts(h Host, s Spec) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithRootFSPath(s.RootFS),
		oci.WithProcessArgs(s.Args...),
		oci.WithHostname(s.ID),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: filepath.Join("/run/netns", CtNetns(h.Name, s.ID))}),
		oci.WithCgroup(h.cgroupPath(s.ID)),
		oci.WithoutRunMount, // one tmpfs fewer for CRIU to archive (mounts.go)
	}
	if len(s.Env) > 0 {
		opts = append(opts, oci.WithEnv(s.Env))
	}
	if s.MemoryLimit > 0 {
		opts = append(opts, oci.WithMemoryLimit(s.MemoryLimit))
	}
	if s.CRIUConfig != "" {
		opts = append(opts, oci.WithAnnotations(map[string]string{"org.criu.config": s.CRIUConfig}))
	}
	return opts
}

// ensureContainer creates the container object on h if it is missing.
func (r *Runtime) ensureContainer(ctx context.Context, h Host, c *client.Client, s Spec) (client.Container, error) {
	ct, err := c.LoadContainer(ctx, s.ID)
	if err == nil {
		return ct, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, err
	}
	return r.newContainer(ctx, h, c, s)
}

// Start creates the container on host with its network and starts it.
func (r *Runtime) Start(ctx context.Context, host string, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := r.PrepareNetwork(host, s, true); err != nil {
		return err
	}
	if err := r.Run(ctx, host, s); err != nil {
		_ = r.Remove(context.WithoutCancel(ctx), host, s.ID)
		return err
	}
	return nil
}

// Run creates the container on host, inside its already prepared network,
// and starts a fresh task from its root filesystem. An existing task is
// killed first (a restart).
func (r *Runtime) Run(ctx context.Context, host string, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	h, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ct, err := r.ensureContainer(ctx, h, c, s)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("run %s on %s: %w", s.ID, host, err)
	}
	if err := deleteTask(ctx, ct); err != nil {
		return fmt.Errorf("run %s on %s: clear old task: %w", s.ID, host, err)
	}
	t, err := ct.NewTask(ctx, cio.NullIO)
	if err != nil {
		return fmt.Errorf("run %s on %s: %w", s.ID, host, err)
	}
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return fmt.Errorf("run %s on %s: start: %w", s.ID, host, err)
	}
	return nil
}

// State reports the status of the container on host.
func (r *Runtime) State(ctx context.Context, host, id string) (Status, error) {
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return "", err
	}
	ct, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return Absent, nil
	}
	if err != nil {
		r.dropIfUnavailable(host, err)
		return "", fmt.Errorf("state of %s on %s: %w", id, host, err)
	}
	t, err := ct.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("state of %s on %s: %w", id, host, err)
	}
	st, err := t.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("state of %s on %s: %w", id, host, err)
	}
	switch st.Status {
	case client.Running:
		return Running, nil
	case client.Paused, client.Pausing:
		return Paused, nil
	case client.Stopped:
		return Stopped, nil
	default:
		return Created, nil
	}
}

// Pid returns the host PID of the container's init process on host.
func (r *Runtime) Pid(ctx context.Context, host, id string) (uint32, error) {
	t, _, err := r.task(ctx, host, id)
	if err != nil {
		return 0, fmt.Errorf("pid of %s on %s: %w", id, host, err)
	}
	return t.Pid(), nil
}

// Memory returns about what a dump of the container's task on host would
// write as pages: its cgroup's anonymous memory, and shared memory where
// the cgroup counts it apart (v2).
func (r *Runtime) Memory(ctx context.Context, host, id string) (uint64, error) {
	t, ctx, err := r.task(ctx, host, id)
	if err != nil {
		return 0, fmt.Errorf("memory of %s on %s: %w", id, host, err)
	}
	m, err := t.Metrics(ctx)
	if err != nil {
		return 0, fmt.Errorf("memory of %s on %s: %w", id, host, err)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return 0, fmt.Errorf("memory of %s on %s: %w", id, host, err)
	}
	switch st := v.(type) {
	case *cgroup2stats.Metrics:
		if st.Memory != nil {
			return st.Memory.Anon + st.Memory.Shmem, nil
		}
	case *cgroup1stats.Metrics:
		// v1 counts shared memory with the page cache, which a dump does
		// not write: anonymous memory only.
		if st.Memory != nil {
			return st.Memory.TotalRSS, nil
		}
	}
	return 0, fmt.Errorf("memory of %s on %s: metrics of type %T carry no memory", id, host, v)
}

// task loads the task of container id on host, and returns it with the
// context its calls need (the host's namespace).
func (r *Runtime) task(ctx context.Context, host, id string) (client.Task, context.Context, error) {
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return nil, nil, err
	}
	t, err := ct.Task(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	return t, ctx, nil
}

// dropIfUnavailable forgets a connection that timed out or was refused.
func (r *Runtime) dropIfUnavailable(host string, err error) {
	// Only a broken connection is dropped: a caller's deadline is not the
	// connection's fault, and closing it would fail other callers' calls.
	if errdefs.IsUnavailable(err) {
		r.drop(host)
	}
}

func (r *Runtime) host(name string) (Host, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[name]
	return h, ok
}

// PrepareNetwork creates the container's namespace on host, with the
// address only if withAddr.
func (r *Runtime) PrepareNetwork(host string, s Spec, withAddr bool) error {
	r.mu.Lock()
	h, ok := r.hosts[host]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("unknown host %q", host)
	}
	return setupNetwork(h, s, withAddr)
}

// Remove deletes the container (task, object and network) from host.
// Removing an absent container is not an error.
func (r *Runtime) Remove(ctx context.Context, host, id string) error {
	h, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("remove %s from %s: %w", id, host, err)
	default:
		if err := deleteTask(ctx, ct); err != nil {
			return fmt.Errorf("remove %s from %s: %w", id, host, err)
		}
		if err := ct.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove %s from %s: %w", id, host, err)
		}
	}
	return teardownNetwork(h, id)
}

// RemoveNetwork deletes only the container's namespace on host (used when
// undoing a prepared destination that never got a task).
func (r *Runtime) RemoveNetwork(host, id string) error {
	r.mu.Lock()
	h, ok := r.hosts[host]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("unknown host %q", host)
	}
	return teardownNetwork(h, id)
}

// newContainer creates s's container object on h, run by h's own runc root.
func (r *Runtime) newContainer(ctx context.Context, h Host, c *client.Client, s Spec) (client.Container, error) {
	return c.NewContainer(ctx, s.ID,
		client.WithRuntime("io.containerd.runc.v2", &options.Options{Root: h.RuncRoot}),
		client.WithNewSpec(r.specOpts(h, s)...),
		client.WithContainerLabels(s.Labels))
}
