package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/escape-mtd/escape/migrate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The container through the host's containerd: created from its image in
// the content store, inside the network the node prepared.

// Labels the node sets on its container objects: the image a copy was
// restored or staged from, so that a step asked again can tell that it
// already ran.
const (
	labelRestoredFrom = "escape.restored-from"
	labelStagedFrom   = "escape.staged-from"
)

// cgroupPath is the cgroups path of container id, as its OCI spec names it
// ("" for an adopted container whose path is not a cgroupfs one).
func (n *Node) cgroupPath(id string) string { return n.placeOf(id).cgroup }

func snapshotKey(id string) string { return "escape-" + id }

func (n *Node) specOpts(img client.Image, s migrate.Spec) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithImageConfig(img)}
	if len(s.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(s.Args...))
	}
	if len(s.Env) > 0 {
		opts = append(opts, oci.WithEnv(s.Env))
	}
	opts = append(opts,
		oci.WithHostname(s.ID),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: filepath.Join("/run/netns", CtNetns(n.cfg.Name, s.ID))}),
		oci.WithCgroup(n.cgroupPath(s.ID)),
		oci.WithoutRunMount, // one tmpfs fewer for CRIU to archive (mounts.go)
		oci.WithAnnotations(map[string]string{"org.criu.config": n.criuConfig(s.ID)}),
	)
	if s.MemoryLimit > 0 {
		opts = append(opts, oci.WithMemoryLimit(s.MemoryLimit))
	}
	return opts
}

// image returns s's image from the content store, or an error that says
// to bring it there.
func image(ctx context.Context, c *client.Client, ref string) (client.Image, error) {
	img, err := c.GetImage(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %s is not in this host's content store (EnsureImage first): %w", ref, err)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return img, nil
}

// newContainer creates s's container object, with a fresh snapshot of its
// image and its CRIU configuration. A snapshot left by a create that
// crashed is removed first.
func (n *Node) newContainer(ctx context.Context, c *client.Client, s migrate.Spec, labels map[string]string) (client.Container, error) {
	if s.Adopted != nil {
		return n.newAdoptedContainer(ctx, c, s, labels)
	}
	img, err := image(ctx, c, s.Image)
	if err != nil {
		return nil, err
	}
	if err := n.writeCRIUConfig(s); err != nil {
		return nil, err
	}
	all := map[string]string{}
	for k, v := range s.Labels {
		all[k] = v
	}
	for k, v := range labels {
		all[k] = v
	}
	sn := c.SnapshotService("")
	if err := sn.Remove(ctx, snapshotKey(s.ID)); err == nil {
		n.log.Warn("removed a snapshot left without its container", zapID(s.ID))
	}
	var ropts any
	if n.cfg.RuncRoot != "" {
		ropts = &options.Options{Root: n.cfg.RuncRoot}
	}
	ct, err := c.NewContainer(ctx, s.ID,
		client.WithImage(img),
		client.WithNewSnapshot(snapshotKey(s.ID), img),
		client.WithRuntime("io.containerd.runc.v2", ropts),
		client.WithNewSpec(n.specOpts(img, s)...),
		client.WithContainerLabels(all))
	if err != nil {
		n.dropIfUnavailable(err)
		return nil, err
	}
	return ct, nil
}

// ensureContainer loads s's container object, creating it if it is
// missing, and (re)writes its CRIU configuration.
func (n *Node) ensureContainer(ctx context.Context, c *client.Client, s migrate.Spec) (client.Container, error) {
	ct, err := c.LoadContainer(ctx, s.ID)
	if err == nil && s.Adopted != nil {
		return ct, n.ensureAdoptedSpec(ctx, ct, s.ID)
	}
	if err == nil {
		return ct, n.writeCRIUConfig(s)
	}
	if !errdefs.IsNotFound(err) {
		n.dropIfUnavailable(err)
		return nil, err
	}
	return n.newContainer(ctx, c, s, nil)
}

// state is a container's status on this host, with its task if it has one.
func (n *Node) state(ctx context.Context, c *client.Client, id string) (migrate.Status, client.Container, client.Task, error) {
	ct, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return migrate.Absent, nil, nil, nil
	}
	if err != nil {
		n.dropIfUnavailable(err)
		return "", nil, nil, err
	}
	t, err := ct.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return migrate.Created, ct, nil, nil
	}
	if err != nil {
		return "", ct, nil, err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return "", ct, t, err
	}
	switch st.Status {
	case client.Running:
		return migrate.Running, ct, t, nil
	case client.Paused, client.Pausing:
		return migrate.Paused, ct, t, nil
	case client.Stopped:
		return migrate.Stopped, ct, t, nil
	default:
		return migrate.Created, ct, t, nil
	}
}

// memory is about what a dump of t would write as pages: its cgroup's
// anonymous memory, and shared memory where the cgroup counts it apart
// (v2).
func memory(ctx context.Context, t client.Task) (uint64, error) {
	m, err := t.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return 0, err
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
	return 0, fmt.Errorf("metrics of type %T carry no memory", v)
}

// deleteTask kills (if needed) and deletes the container's task, and says
// whether there was one.
func deleteTask(ctx context.Context, ct client.Container) (bool, error) {
	t, err := ct.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return true, err
	}
	// A created task has no process to kill; a staged restore (Stage) in
	// particular is not known to runc at all, so a kill would fail and the
	// wait for its exit would never end.
	if st.Status != client.Stopped && st.Status != client.Created {
		wait, err := t.Wait(ctx)
		if err != nil {
			return true, err
		}
		if err := t.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
			return true, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(10 * time.Second):
			return true, errors.New("task did not exit 10s after SIGKILL")
		}
	}
	if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return true, err
	}
	return true, nil
}
