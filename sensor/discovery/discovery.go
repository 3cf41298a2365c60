package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"go.uber.org/zap"

	"github.com/escape-mtd/escape/sensor"
)

// Target is what discovery drives: the sensor's monitor.
type Target interface {
	Add(ctx context.Context, c sensor.Container) error
	Remove(ctx context.Context, cgid uint64) error
}

// Endpoint is one containerd namespace of one containerd daemon.
type Endpoint struct {
	Host      string // host name reported in events
	Address   string // containerd socket
	Namespace string // containerd namespace to watch
	// Own marks the agent's own namespace, where only the agent creates
	// containers: the identity label of its containers is honoured
	// (sensor.Container.Own). Elsewhere it is ignored.
	Own bool
	// CRI marks the namespace of containerd's CRI plugin (k8s.io), where
	// the kubelet's containers are: their pod metadata is read, and pod
	// sandboxes (pause containers) are not watched.
	CRI bool
}

// CRINamespace is the containerd namespace of the CRI plugin, where the
// kubelet's pods run.
const CRINamespace = "k8s.io"

// errSandbox means a container is a pod's sandbox: it runs only the pause
// process, so it is not watched.
var errSandbox = errors.New("a pod sandbox (pause container)")

// Watcher follows one endpoint.
type Watcher struct {
	ep     Endpoint
	root   string // cgroup2 mount
	target Target
	log    *zap.Logger

	mu      sync.Mutex
	watched map[string]uint64 // container id -> cgroup id
}

// NewWatcher returns a watcher of ep feeding target; root is the cgroup2 mount.
func NewWatcher(ep Endpoint, root string, target Target, log *zap.Logger) (*Watcher, error) {
	if ep.Address == "" || ep.Namespace == "" || ep.Host == "" {
		return nil, fmt.Errorf("discovery endpoint %+v: host, address and namespace are required", ep)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Watcher{ep: ep, root: root, target: target,
		log:     log.With(zap.String("host", ep.Host), zap.String("namespace", ep.Namespace)),
		watched: make(map[string]uint64)}, nil
}

// Run follows the endpoint until ctx ends, reconnecting with back-off.
func (w *Watcher) Run(ctx context.Context) error {
	wait := 200 * time.Millisecond
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		w.log.Warn("containerd session ended; reconnecting", zap.Error(err), zap.Duration("in", wait))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// session subscribes first and scans second, so that no task starting in
// between is missed (Add is idempotent).
func (w *Watcher) session(ctx context.Context) error {
	cli, err := containerd.New(w.ep.Address, containerd.WithDefaultNamespace(w.ep.Namespace),
		containerd.WithTimeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect %s: %w", w.ep.Address, err)
	}
	defer cli.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, errs := cli.Subscribe(sctx, `topic~="/tasks/"`)
	if err := w.scan(ctx, cli); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("event stream: %w", err)
		case env := <-ch:
			if env == nil {
				return errors.New("event stream closed")
			}
			w.onEvent(ctx, cli, env)
		}
	}
}

// scan watches every running task and drops watches of tasks that vanished
// while the session was down.
func (w *Watcher) scan(ctx context.Context, cli *containerd.Client) error {
	nctx := containerdNS(ctx, w.ep.Namespace)
	cs, err := cli.Containers(nctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	alive := make(map[string]bool)
	for _, c := range cs {
		task, err := c.Task(nctx, nil)
		if err != nil {
			continue // no task: nothing runs
		}
		st, err := task.Status(nctx)
		if err != nil || (st.Status != containerd.Running && st.Status != containerd.Paused && st.Status != containerd.Created) {
			continue
		}
		alive[c.ID()] = true
		w.add(ctx, cli, c.ID())
	}
	w.mu.Lock()
	var gone []string
	for id := range w.watched {
		if !alive[id] {
			gone = append(gone, id)
		}
	}
	w.mu.Unlock()
	for _, id := range gone {
		w.remove(ctx, id)
	}
	w.log.Info("containerd scan done", zap.Int("running", len(alive)))
	return nil
}

func (w *Watcher) onEvent(ctx context.Context, cli *containerd.Client, env *events.Envelope) {
	if env.Namespace != w.ep.Namespace || env.Event == nil {
		return
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		w.log.Warn("undecodable containerd event", zap.String("topic", env.Topic), zap.Error(err))
		return
	}
	switch e := v.(type) {
	case *apievents.TaskCreate:
		w.add(ctx, cli, e.ContainerID) // watch before the first call runs
	case *apievents.TaskStart:
		w.add(ctx, cli, e.ContainerID)
	case *apievents.TaskExit:
		if e.ID == e.ContainerID { // the init process: the container's stream ends
			w.remove(ctx, e.ContainerID)
		}
	case *apievents.TaskDelete:
		w.remove(ctx, e.ContainerID)
	case *apievents.TaskCheckpointed:
		w.log.Info("container checkpointed", zap.String("id", e.ContainerID))
	}
}

func (w *Watcher) add(ctx context.Context, cli *containerd.Client, id string) {
	c, err := w.describe(ctx, cli, id)
	if errors.Is(err, errSandbox) {
		w.log.Debug("not watched", zap.String("id", id), zap.Error(err))
		return
	}
	if err != nil {
		w.log.Warn("cannot watch container", zap.String("id", id), zap.Error(err))
		return
	}
	w.mu.Lock()
	old, had := w.watched[id]
	w.mu.Unlock()
	if had && old == c.CgroupID {
		return
	}
	if had { // a restore recreated the cgroup: the old one is gone
		w.remove(ctx, id)
	}
	if err := w.target.Add(ctx, c); err != nil {
		w.log.Warn("cannot watch container", zap.String("id", id), zap.Error(err))
		return
	}
	w.mu.Lock()
	w.watched[id] = c.CgroupID
	w.mu.Unlock()
}

func (w *Watcher) remove(ctx context.Context, id string) {
	w.mu.Lock()
	cg, ok := w.watched[id]
	delete(w.watched, id)
	w.mu.Unlock()
	if !ok {
		return
	}
	if err := w.target.Remove(ctx, cg); err != nil && !errors.Is(err, sensor.ErrNotWatched) {
		w.log.Warn("cannot unwatch container", zap.String("id", id), zap.Error(err))
	}
}

// describe resolves a container to its identity and cgroup.
func (w *Watcher) describe(ctx context.Context, cli *containerd.Client, id string) (sensor.Container, error) {
	nctx := containerdNS(ctx, w.ep.Namespace)
	c, err := cli.LoadContainer(nctx, id)
	if err != nil {
		return sensor.Container{}, fmt.Errorf("load container %s: %w", id, err)
	}
	info, err := c.Info(nctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return sensor.Container{}, fmt.Errorf("container %s info: %w", id, err)
	}
	if w.ep.CRI && info.Labels[criKindLabel] == criKindSandbox {
		return sensor.Container{}, fmt.Errorf("container %s: %w", id, errSandbox)
	}
	spec, err := c.Spec(nctx)
	if err != nil {
		return sensor.Container{}, fmt.Errorf("container %s spec: %w", id, err)
	}
	if spec.Linux == nil {
		return sensor.Container{}, fmt.Errorf("container %s: not a Linux container: %w", id, errdefs.ErrNotImplemented)
	}
	dir, cg, err := w.cgroupOf(nctx, c, spec.Linux.CgroupsPath)
	if err != nil {
		return sensor.Container{}, fmt.Errorf("container %s: %w", id, err)
	}
	out := sensor.Container{ID: id, Namespace: w.ep.Namespace, Host: w.ep.Host, Image: info.Image,
		Labels: info.Labels, CgroupID: cg, CgroupPath: dir, Own: w.ep.Own}
	if w.ep.CRI {
		out.Pod = w.podOf(nctx, cli, id, info.Labels, spec.Annotations)
	}
	return out, nil
}

// cgroupOf finds a container's cgroup2 directory: from its spec's
// cgroupsPath (either cgroup driver), else from its task's pid, which is
// where the kernel counts its calls (a spec with no path, a runtime that
// placed it elsewhere).
func (w *Watcher) cgroupOf(ctx context.Context, c containerd.Container, cgroupsPath string) (string, uint64, error) {
	dir, specErr := sensor.CgroupDir(w.root, cgroupsPath)
	if specErr == nil {
		cg, err := sensor.CgroupID(dir)
		if err == nil {
			return dir, cg, nil
		}
		specErr = err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return "", 0, errors.Join(specErr, fmt.Errorf("task: %w", err))
	}
	dir, err = sensor.CgroupDirOfPID(w.root, int(task.Pid()))
	if err != nil {
		return "", 0, errors.Join(specErr, err)
	}
	cg, err := sensor.CgroupID(dir)
	if err != nil {
		return "", 0, errors.Join(specErr, err)
	}
	w.log.Info("cgroup found from the task's pid", zap.String("id", c.ID()), zap.String("cgroup", dir),
		zap.NamedError("spec", specErr))
	return dir, cg, nil
}
