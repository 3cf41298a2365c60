package node

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// Status reports the container's task, and its address, network locks and
// lease when its namespace exists. The lease generation the host has seen
// is reported even when nothing of the container is left, so that a new
// deployment under the same id starts above it.
func (n *Node) Status(ctx context.Context, id string) (migrate.ContainerStatus, error) {
	if err := migrate.ValidID(id); err != nil {
		return migrate.ContainerStatus{}, n.fail("status", id, err)
	}
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return migrate.ContainerStatus{}, n.fail("status", id, err)
	}
	// Not under the container's lock: a status is asked while a step runs
	// (a migration's, a dump's). What it finds is used here only.
	where, err := n.find(ctx, id)
	if err != nil {
		return migrate.ContainerStatus{}, n.fail("status", id, err)
	}
	ctx = where.in(ctx)
	st, _, t, err := n.state(ctx, c, id)
	if err != nil {
		return migrate.ContainerStatus{}, n.fail("status", id, err)
	}
	out := migrate.ContainerStatus{Status: st}
	if t != nil && st != migrate.Stopped {
		out.PID = t.Pid()
	}
	if st == migrate.Running {
		if m, err := memory(ctx, t); err == nil {
			out.MemoryBytes = m
		}
	}
	ep := arp.Endpoint{Netns: where.netns, Link: where.link}
	if !where.hasNetwork() || !arp.NetnsExists(ep.Netns) {
		rec, err := n.leaseRecordOf(id)
		if err != nil {
			return out, n.fail("status", id, err)
		}
		out.Lease.Generation = rec.Generation
		return out, nil
	}
	out.Network = true
	var errs []error
	if out.Addresses, err = addressesOn(ep); err != nil {
		errs = append(errs, err)
	}
	if out.NetworkLocks, err = networkLocks(ep.Netns, false); err != nil {
		errs = append(errs, err)
	}
	if out.Lease, err = n.leaseStateOn(id, ep); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return out, n.fail("status", id, err)
	}
	return out, nil
}

// Start creates the container from its image, with its network (and,
// with opts.Address, its lease granted and then its address), and starts a
// fresh task. A running copy is left as it is ("already running"). On
// error what Start created is removed again.
func (n *Node) Start(ctx context.Context, s migrate.Spec, opts migrate.StartOptions) (migrate.StepResult, error) {
	err := s.Validate()
	if err == nil && opts.Address {
		if !opts.Lease.IP.IsValid() {
			opts.Lease.IP = s.IP.Addr()
		}
		err = validLease(opts.Lease)
		if err == nil && (opts.Lease.IP != s.IP.Addr() || opts.Lease.Revoke) {
			err = fmt.Errorf("lease %+v: want a grant for the spec's address %v", opts.Lease, s.IP.Addr())
		}
	}
	if err == nil && s.Adopted != nil {
		err = errors.New("an adopted container is its user's: the plane never starts one (it restores or restarts it)")
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("start", s.ID, err)
	}
	defer n.lockContainer(s.ID)()
	c, ctx, err := n.conn(ctx)
	if err == nil {
		_, err = n.locateSpec(ctx, s)
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("start", s.ID, err)
	}
	st, _, _, err := n.state(ctx, c, s.ID)
	if err != nil {
		return migrate.StepResult{}, n.fail("start", s.ID, err)
	}
	if st == migrate.Running {
		return migrate.StepResult{Did: "already running"}, nil
	}
	if _, err := image(ctx, c, s.Image); err != nil {
		return migrate.StepResult{}, n.fail("start", s.ID, err)
	}
	fresh := st == migrate.Absent
	netCreated, err := n.prepareNetwork(s, opts.Address, opts.Lease)
	if err == nil {
		err = n.run(ctx, c, s)
	}
	if err != nil {
		bg := context.WithoutCancel(ctx)
		if fresh {
			_, _ = n.removeContainer(bg, c, s.ID)
		}
		if netCreated {
			_, _ = n.removeNetwork(bg, s.ID)
		} else if opts.Address {
			_ = arp.DelAddress(n.ctEndpoint(s.ID), s.IP)
		}
		return migrate.StepResult{}, n.fail("start", s.ID, err)
	}
	return migrate.StepResult{Did: "started"}, nil
}

// run starts a fresh task of s's container (created if missing) from its
// image, replacing any old task.
func (n *Node) run(ctx context.Context, c *client.Client, s migrate.Spec) error {
	ct, err := n.ensureContainer(ctx, c, s)
	if err != nil {
		return err
	}
	if _, err := deleteTask(ctx, ct); err != nil {
		return fmt.Errorf("clear old task: %w", err)
	}
	t, err := ct.NewTask(ctx, cio.NullIO)
	if err != nil {
		n.dropIfUnavailable(err)
		return err
	}
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return fmt.Errorf("start task: %w", err)
	}
	return nil
}

// Restart kills the task, if any, and starts a fresh one from the image,
// keeping the network (a stateless container's restart).
func (n *Node) Restart(ctx context.Context, s migrate.Spec) (migrate.StepResult, error) {
	if err := s.Validate(); err != nil {
		return migrate.StepResult{}, n.fail("restart", s.ID, err)
	}
	defer n.lockContainer(s.ID)()
	c, ctx, err := n.conn(ctx)
	var where place
	if err == nil {
		where, err = n.locateSpec(ctx, s)
		ctx = where.in(ctx)
	}
	if err == nil && !n.networkReady(s) {
		err = errors.New("no network (Start the container instead)")
	}
	if err == nil {
		_, err = image(ctx, c, s.Image)
	}
	if err == nil {
		end := n.interventions.Begin(s.ID, intervene.Restart)
		err = n.run(ctx, c, s)
		end()
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("restart", s.ID, err)
	}
	return migrate.StepResult{Did: "restarted"}, nil
}

// Kill stops and deletes the task, keeping the container object and its
// network.
func (n *Node) Kill(ctx context.Context, id string) (migrate.StepResult, error) {
	if err := migrate.ValidID(id); err != nil {
		return migrate.StepResult{}, n.fail("kill", id, err)
	}
	defer n.lockContainer(id)()
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return migrate.StepResult{}, n.fail("kill", id, err)
	}
	where, err := n.locate(ctx, id)
	if err != nil {
		return migrate.StepResult{}, n.fail("kill", id, err)
	}
	ctx = where.in(ctx)
	ct, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return migrate.StepResult{Did: "absent"}, nil
	}
	if err != nil {
		n.dropIfUnavailable(err)
		return migrate.StepResult{}, n.fail("kill", id, err)
	}
	had, err := deleteTask(ctx, ct)
	if err != nil {
		return migrate.StepResult{}, n.fail("kill", id, err)
	}
	return didIf(had, "killed", "no task"), nil
}

// Remove deletes the task, the container object and its snapshot, any
// process left in its cgroup, its network and its CRIU configuration. The
// lease's generation is kept: a removed container's old plane must not
// grant its address again.
func (n *Node) Remove(ctx context.Context, id string) (migrate.StepResult, error) {
	if err := migrate.ValidID(id); err != nil {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	defer n.lockContainer(id)()
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	where, err := n.locate(ctx, id)
	if err != nil {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	ctx = where.in(ctx)
	if where.adopted {
		// Only a copy that no longer runs goes: the one a migration dumped
		// and left behind, or a destination's copy that never ran. A
		// running adopted container is its user's, and the plane releases
		// it instead.
		if st, _, _, err := n.state(ctx, c, id); err != nil {
			return migrate.StepResult{}, n.fail("remove", id, err)
		} else if st == migrate.Running || st == migrate.Paused {
			return migrate.StepResult{}, n.fail("remove", id, fmt.Errorf("the adopted container is %s: it is its user's, and only a copy that stopped is removed", st))
		}
	}
	had, err := n.removeContainer(ctx, c, id)
	if err != nil {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	pids, err := n.killLeftovers(id)
	if err != nil {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	if len(pids) > 0 {
		n.log.Warn("killed processes left in the container's cgroup", zapID(id), zap.Ints("pids", pids))
	}
	hadNet, err := n.removeNetwork(ctx, id)
	if err != nil {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	if err := os.Remove(n.criuConfig(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return migrate.StepResult{}, n.fail("remove", id, err)
	}
	return didIf(had || hadNet || len(pids) > 0, "removed", "absent"), nil
}

// removeContainer deletes the task, the container object and its
// snapshot, and says whether there was a container.
func (n *Node) removeContainer(ctx context.Context, c *client.Client, id string) (bool, error) {
	ct, err := c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		// A snapshot left by a create that crashed goes too.
		_ = c.SnapshotService("").Remove(ctx, snapshotKey(id))
		return false, nil
	}
	if err != nil {
		n.dropIfUnavailable(err)
		return false, err
	}
	if _, err := deleteTask(ctx, ct); err != nil {
		return true, err
	}
	if err := ct.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return true, err
	}
	return true, nil
}
