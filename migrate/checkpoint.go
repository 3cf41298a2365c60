package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"go.uber.org/zap"
)

// Checkpoint, restore and kill through a host's containerd: the calls a
// migration and a rollback are made of.

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
	work       string
	fresh      bool
	clearLocks bool
	lazy       bool
}

// taskOpts are the options of a task that restores from dir, its CRIU work
// directory created.
func (o restoreOpts) taskOpts(dir string) ([]client.NewTaskOpts, error) {
	topts := []client.NewTaskOpts{client.WithRestoreImagePath(dir)}
	if o.work != "" {
		if err := os.MkdirAll(o.work, 0o700); err != nil {
			return nil, err
		}
		topts = append(topts, client.WithRestoreWorkPath(o.work))
	}
	return topts, nil
}

// RestoreOption tunes a restore.
type RestoreOption func(*restoreOpts)

// RestoreWorkDir keeps CRIU's restore logs in dir.
func RestoreWorkDir(dir string) RestoreOption { return func(o *restoreOpts) { o.work = dir } }

// Fresh requires that the host has no container object with the id yet: a
// migration destination must not adopt a leftover it did not create.
func Fresh() RestoreOption { return func(o *restoreOpts) { o.fresh = true } }

// ClearNetworkLocks removes what earlier, failed restores left blocking the
// container's namespace: CRIU's network locks (netlock.go) and a lazy
// restore's hold (guardHold). It does so once the old task is gone, just
// before the restore. For a restore that carries no live connection, such
// as a rollback; never for a migration's, whose dump's lock protects the
// connections it moves.
func ClearNetworkLocks() RestoreOption { return func(o *restoreOpts) { o.clearLocks = true } }

// Restore starts the container on host from the dump in dir. The
// container's network must exist on host (PrepareNetwork), with its address
// in place for established TCP connections to be restored.
func (r *Runtime) Restore(ctx context.Context, host string, s Spec, dir string, opts ...RestoreOption) error {
	var o restoreOpts
	for _, f := range opts {
		f(&o)
	}
	if o.lazy {
		return r.restoreLazily(ctx, host, s, dir, o)
	}
	_, err := r.startRestore(ctx, host, s, dir, o)
	return err
}

// startRestore creates the task that restores s from dir, replacing any
// old one, clears the namespace if asked (ClearNetworkLocks), holds it if
// the restore is lazy (guardHold), and starts the task. On error no task
// of the restore is left and no hold is added; on success a lazy restore's
// hold is the caller's to lift.
func (r *Runtime) startRestore(ctx context.Context, host string, s Spec, dir string, o restoreOpts) (_ client.Task, err error) {
	t, err := r.restoreTask(ctx, "restore", host, s, dir, o)
	if err != nil {
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	if o.clearLocks {
		if err := r.clearBlocks(ctx, host, s.ID); err != nil {
			_, _ = t.Delete(bg)
			return nil, fmt.Errorf("restore %s on %s: %w", s.ID, host, err)
		}
	}
	if o.lazy {
		if err := setGuards(ctx, host, s.ID, guardHold, true); err != nil {
			_, _ = t.Delete(bg)
			return nil, fmt.Errorf("restore %s on %s: %w", s.ID, host, err)
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, setGuards(bg, host, s.ID, guardHold, false))
			}
		}()
	}
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(bg, client.WithProcessKill)
		return nil, fmt.Errorf("restore %s on %s: start: %w%s", s.ID, host, err, criuLogTail(o.work, "restore.log"))
	}
	return t, nil
}

// clearBlocks removes the CRIU lock tables and the hold rule found in the
// namespace of container id on host (ClearNetworkLocks).
func (r *Runtime) clearBlocks(ctx context.Context, host, id string) error {
	names, err := clearNetworkLocks(host, id)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		r.log.Warn("removed network locks left by a failed restore", zap.String("container", id), zap.String("host", host), zap.Strings("tables", names))
	}
	return clearGuards(ctx, host, id, guardHold)
}

// Stage prepares a restore on host without running it: it creates the
// container object (which must not exist there yet, as with Fresh) and a
// task that restores from dir when it is started. containerd starts the
// shim and writes the bundle now, but runc reads the dump only at Start, so
// dir need not exist yet: a migration stages its destination before the
// source is frozen, and the frozen window keeps only runc's restore
// (StartStaged). The container's network must exist on host.
func (r *Runtime) Stage(ctx context.Context, host string, s Spec, dir string, opts ...RestoreOption) error {
	o := restoreOpts{fresh: true}
	for _, f := range opts {
		f(&o)
	}
	_, err := r.restoreTask(ctx, "stage", host, s, dir, o)
	return err
}

// restoreTask creates (or, unless o.fresh, adopts) the container object on
// host and a task that restores it from dir when started; what names the
// operation in errors.
func (r *Runtime) restoreTask(ctx context.Context, what, host string, s Spec, dir string, o restoreOpts) (client.Task, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	h, c, ctx, err := r.conn(ctx, host)
	if err != nil {
		return nil, err
	}
	var ct client.Container
	if o.fresh {
		ct, err = r.newContainer(ctx, h, c, s)
	} else {
		ct, err = r.ensureContainer(ctx, h, c, s)
	}
	if err != nil {
		r.dropIfUnavailable(host, err)
		return nil, fmt.Errorf("%s %s on %s: %w", what, s.ID, host, err)
	}
	// A container adopted from an earlier run may still have its task; a
	// fresh one has none.
	if !o.fresh {
		if err := deleteTask(ctx, ct); err != nil {
			return nil, fmt.Errorf("%s %s on %s: clear old task: %w", what, s.ID, host, err)
		}
	}
	topts, err := o.taskOpts(dir)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, s.ID, err)
	}
	t, err := ct.NewTask(ctx, cio.NullIO, topts...)
	if err != nil {
		r.dropIfUnavailable(host, err)
		return nil, fmt.Errorf("%s %s on %s: %w%s", what, s.ID, host, err, criuLogTail(o.work, "restore.log"))
	}
	return t, nil
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
