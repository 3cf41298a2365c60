package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
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
		oci.WithCgroup("/" + h.CgroupParent + "/" + h.Name + "/" + s.ID),
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
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return 0, err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return 0, fmt.Errorf("pid of %s on %s: %w", id, host, err)
	}
	t, err := ct.Task(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("pid of %s on %s: %w", id, host, err)
	}
	return t.Pid(), nil
}

// CheckpointOption tunes a checkpoint.
type CheckpointOption func(*options.CheckpointOptions)

// Exit stops the container once dumped (a migration); without it the
// container keeps running (a periodic safe checkpoint).
func Exit() CheckpointOption { return func(o *options.CheckpointOptions) { o.Exit = true } }

// WithWorkDir keeps CRIU's logs in dir.
func WithWorkDir(dir string) CheckpointOption {
	return func(o *options.CheckpointOptions) { o.WorkPath = dir }
}

// Checkpoint dumps the container on host into dir (which must not exist
// yet and is created).
//
// The request goes straight to containerd's task service. The client's
// Task.Checkpoint (CheckpointPaused) first pauses the task, so the freeze
// would also cover the shim's request, runc's and CRIU's start-up and
// CRIU's kernel probing (about 100 ms here), and it takes and drops a lease
// (two metadata commits) that a dump to a path does not need. CRIU freezes
// the container's cgroup itself once it is ready to dump.
func (r *Runtime) Checkpoint(ctx context.Context, host, id, dir string, opts ...CheckpointOption) error {
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	o := &options.CheckpointOptions{}
	for _, f := range opts {
		f(o)
	}
	o.ImagePath = dir
	req, err := typeurl.MarshalAnyToProto(o)
	if err != nil {
		return fmt.Errorf("checkpoint %s on %s: options: %w", id, host, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if _, err := c.TaskService().Checkpoint(ctx, &tasks.CheckpointTaskRequest{ContainerID: id, Options: req}); err != nil {
		err = errgrpc.ToNative(err)
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("checkpoint %s on %s: %w%s", id, host, err, criuLogTail(o.WorkPath, "dump.log"))
	}
	return nil
}

// CheckpointPaused is Checkpoint through the client's Task.Checkpoint:
// containerd pauses the task before asking the shim to dump it. It is kept
// to measure what the direct request saves (planebench -modes).
func (r *Runtime) CheckpointPaused(ctx context.Context, host, id, dir string, opts ...CheckpointOption) error {
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("checkpoint %s on %s: %w", id, host, err)
	}
	t, err := ct.Task(ctx, nil)
	if err != nil {
		return fmt.Errorf("checkpoint %s on %s: %w", id, host, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint %s: %w", id, err)
	}
	var work string
	_, err = t.Checkpoint(ctx, client.WithCheckpointImagePath(dir), func(i *client.CheckpointTaskInfo) error {
		o, ok := i.Options.(*options.CheckpointOptions)
		if !ok {
			return errors.New("unexpected checkpoint options type")
		}
		for _, f := range opts {
			f(o)
		}
		work = o.WorkPath
		return nil
	})
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("checkpoint %s on %s: %w%s", id, host, err, criuLogTail(work, "dump.log"))
	}
	return nil
}

// deleteTask kills (if needed) and deletes the container's task.
func deleteTask(ctx context.Context, ct client.Container) error {
	t, err := ct.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return err
	}
	// A created task has no process to kill; a staged restore (Stage) in
	// particular is not known to runc at all, so a kill would fail and the
	// wait for its exit would never end.
	if st.Status != client.Stopped && st.Status != client.Created {
		wait, err := t.Wait(ctx)
		if err != nil {
			return err
		}
		if err := t.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("task did not exit 10s after SIGKILL")
		}
	}
	if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// Kill stops the container's task on host and deletes it, keeping the
// container object and its network.
func (r *Runtime) Kill(ctx context.Context, host, id string) error {
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill %s on %s: %w", id, host, err)
	}
	if err := deleteTask(ctx, ct); err != nil {
		return fmt.Errorf("kill %s on %s: %w", id, host, err)
	}
	return nil
}

type restoreOpts struct {
	work  string
	fresh bool
}

// RestoreOption tunes a restore.
type RestoreOption func(*restoreOpts)

// RestoreWorkDir keeps CRIU's restore logs in dir.
func RestoreWorkDir(dir string) RestoreOption { return func(o *restoreOpts) { o.work = dir } }

// Fresh requires that the host has no container object with the id yet: a
// migration destination must not adopt a leftover it did not create.
func Fresh() RestoreOption { return func(o *restoreOpts) { o.fresh = true } }

// Restore starts the container on host from the dump in dir. The
// container's network must exist on host (PrepareNetwork), with its address
// in place for established TCP connections to be restored.
func (r *Runtime) Restore(ctx context.Context, host string, s Spec, dir string, opts ...RestoreOption) error {
	var o restoreOpts
	for _, f := range opts {
		f(&o)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	h, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	var ct client.Container
	if o.fresh {
		ct, err = r.newContainer(ctx, h, c, s)
	} else {
		ct, err = r.ensureContainer(ctx, h, c, s)
	}
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("restore %s on %s: %w", s.ID, host, err)
	}
	if err := deleteTask(ctx, ct); err != nil {
		return fmt.Errorf("restore %s on %s: clear old task: %w", s.ID, host, err)
	}
	topts := []client.NewTaskOpts{client.WithRestoreImagePath(dir)}
	if o.work != "" {
		if err := os.MkdirAll(o.work, 0o700); err != nil {
			return fmt.Errorf("restore %s: %w", s.ID, err)
		}
		topts = append(topts, client.WithRestoreWorkPath(o.work))
	}
	t, err := ct.NewTask(ctx, cio.NullIO, topts...)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("restore %s on %s: %w%s", s.ID, host, err, criuLogTail(o.work, "restore.log"))
	}
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return fmt.Errorf("restore %s on %s: start: %w%s", s.ID, host, err, criuLogTail(o.work, "restore.log"))
	}
	return nil
}

// Stage prepares a restore on host without running it: it creates the
// container object (which must not exist there yet, as with Fresh) and a
// task that restores from dir when it is started. containerd starts the
// shim and writes the bundle now, but runc reads the dump only at Start, so
// dir need not exist yet: a migration stages its destination before the
// source is frozen, and the frozen window keeps only runc's restore
// (StartStaged). The container's network must exist on host.
func (r *Runtime) Stage(ctx context.Context, host string, s Spec, dir string, opts ...RestoreOption) error {
	var o restoreOpts
	for _, f := range opts {
		f(&o)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	h, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ct, err := r.newContainer(ctx, h, c, s)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("stage %s on %s: %w", s.ID, host, err)
	}
	topts := []client.NewTaskOpts{client.WithRestoreImagePath(dir)}
	if o.work != "" {
		if err := os.MkdirAll(o.work, 0o700); err != nil {
			return fmt.Errorf("stage %s: %w", s.ID, err)
		}
		topts = append(topts, client.WithRestoreWorkPath(o.work))
	}
	if _, err := ct.NewTask(ctx, cio.NullIO, topts...); err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("stage %s on %s: %w", s.ID, host, err)
	}
	return nil
}

// StartStaged starts the task Stage created on host: runc restores it from
// the dump. On failure the task is deleted (the container object stays).
// Pass the same RestoreWorkDir as to Stage to get CRIU's errors quoted.
func (r *Runtime) StartStaged(ctx context.Context, host, id string, opts ...RestoreOption) error {
	var o restoreOpts
	for _, f := range opts {
		f(&o)
	}
	_, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("start staged %s on %s: %w", id, host, err)
	}
	t, err := ct.Task(ctx, nil)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("start staged %s on %s: %w", id, host, err)
	}
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		r.dropIfUnavailable(host, err)
		return fmt.Errorf("start staged %s on %s: %w%s", id, host, err, criuLogTail(o.work, "restore.log"))
	}
	return nil
}

// dropIfUnavailable forgets a connection that timed out or was refused.
func (r *Runtime) dropIfUnavailable(host string, err error) {
	// Only a broken connection is dropped: a caller's deadline is not the
	// connection's fault, and closing it would fail other callers' calls.
	if errdefs.IsUnavailable(err) {
		r.drop(host)
	}
}

// criuLogTail returns the last error lines of a CRIU log, for error messages.
func criuLogTail(dir, name string) string {
	if dir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error") || strings.Contains(l, "error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) > 6 {
		errs = errs[len(errs)-6:]
	}
	if len(errs) == 0 {
		return ""
	}
	return " (criu: " + strings.Join(errs, "; ") + ")"
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
