package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// Restore starts the container from the named image, replacing its task.
// The container's network must exist, with its address for established
// connections to come back. opts.TCPClose restores the dump's connections
// closed and opts.Lazy brings the memory in lazily: each puts its option in
// the container's CRIU configuration for this restore only. A container
// object that this call creates gets the dump's root filesystem changes,
// if it carries them, before its task starts.
func (n *Node) Restore(ctx context.Context, s migrate.Spec, name migrate.ImageName, opts migrate.RestoreOptions) (migrate.RestoreResult, error) {
	fail := func(err error) (migrate.RestoreResult, error) {
		return migrate.RestoreResult{}, n.fail("restore", s.ID, err)
	}
	dir, err := n.checkRestore(s, name, opts.Lazy)
	if err != nil {
		return fail(err)
	}
	defer n.lockContainer(s.ID)()
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return fail(err)
	}
	where, err := n.locateSpec(ctx, s)
	if err != nil {
		return fail(err)
	}
	if opts.Lazy && !where.hasNetwork() {
		return fail(errors.New("lazy restore: the copy is held off the network until its last page is in, and this adopted container has no network namespace of its own to hold"))
	}
	ctx = where.in(ctx)
	st, ct, _, err := n.state(ctx, c, s.ID)
	if err != nil {
		return fail(err)
	}
	if opts.Fresh && st != migrate.Absent {
		if st == migrate.Running && labelOf(ctx, ct, labelRestoredFrom) == string(name) {
			return migrate.RestoreResult{Did: "already restored"}, nil
		}
		return fail(fmt.Errorf("a container object exists (%s) and a fresh restore adopts no leftover", st))
	}
	if s.Adopted != nil && st == migrate.Absent && !opts.Fresh {
		// In place, the user's container is restored, never made again:
		// one its user deleted is no longer protected.
		return fail(errors.New("the adopted container is gone from this host (its user deleted it): nothing to restore in place"))
	}
	if !n.networkReady(s) {
		return fail(errors.New("no network (PrepareNetwork first)"))
	}
	_, work := n.workDirs(name)
	if err := freshDir(work); err != nil {
		return fail(err)
	}
	defer n.interventions.Begin(s.ID, intervene.Restore)()
	t0 := time.Now()
	t, ct, err := n.restoreTask(ctx, c, s, dir, work, st == migrate.Absent, map[string]string{labelRestoredFrom: string(name)})
	if err != nil {
		return fail(err)
	}
	bg := context.WithoutCancel(ctx)
	if opts.ClearLocks && where.hasNetwork() {
		if err := n.clearBlocks(ctx, s.ID); err != nil {
			_, _ = t.Delete(bg)
			return fail(err)
		}
	}
	if opts.TCPClose {
		if err := addOption(n.criuConfig(s.ID), optTCPClose); err != nil {
			_, _ = t.Delete(bg)
			return fail(err)
		}
		// Before anything else can dump the container.
		defer func() {
			if _, err := stripOption(n.criuConfig(s.ID), optTCPClose); err != nil {
				n.log.Error("take tcp-close out of the CRIU configuration", zapID(s.ID), zap.Error(err))
			}
		}()
	}
	if opts.Lazy {
		err = n.restoreLazily(ctx, s.ID, t, dir, work, true)
	} else {
		err = startTask(ctx, t, work)
	}
	if err != nil {
		return fail(err)
	}
	if _, err := ct.SetLabels(ctx, map[string]string{labelRestoredFrom: string(name)}); err != nil {
		n.log.Warn("label the restored container", zapID(s.ID), zap.Error(err))
	}
	stats, err := readCRIUStats("", work)
	if err != nil {
		n.log.Warn("criu stats", zapID(s.ID), zap.Error(err))
	}
	return migrate.RestoreResult{Did: "restored", Lazy: opts.Lazy, Took: time.Since(t0), CRIU: stats}, nil
}

// checkRestore answers bad input to a restore before anything is touched:
// the spec, the image's name, a whole dump under it, and lazy-pages only
// with a CRIU binary to run the daemon from.
func (n *Node) checkRestore(s migrate.Spec, name migrate.ImageName, lazy bool) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	dir, err := n.imagePath(name)
	if err != nil {
		return "", err
	}
	if _, err := verifyDir(dir); err != nil {
		return "", err
	}
	if lazy && n.cfg.CRIU == "" {
		return "", errors.New("lazy restore: this host names no CRIU binary")
	}
	return dir, nil
}

func freshDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o700)
}

func labelOf(ctx context.Context, ct client.Container, key string) string {
	if ct == nil {
		return ""
	}
	ls, err := ct.Labels(ctx)
	if err != nil {
		return ""
	}
	return ls[key]
}

// startTask starts a restore task; on failure it is deleted and CRIU's
// errors are quoted.
func startTask(ctx context.Context, t client.Task, work string) error {
	if err := t.Start(ctx); err != nil {
		_, _ = t.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
		return fmt.Errorf("start: %w%s", err, criuLogTail(work, "restore.log"))
	}
	return nil
}

// restoreTask creates (create) or adopts s's container object and a task
// that restores it from dir when started, deleting an adopted object's old
// task first. A created object gets the dump's root filesystem changes and
// the labels.
func (n *Node) restoreTask(ctx context.Context, c *client.Client, s migrate.Spec, dir, work string, create bool, labels map[string]string) (client.Task, client.Container, error) {
	var ct client.Container
	var err error
	if create {
		ct, err = n.newContainer(ctx, c, s, labels)
	} else {
		ct, err = n.ensureContainer(ctx, c, s)
	}
	if err != nil {
		return nil, nil, err
	}
	if create {
		if err := n.applyRootFSDiff(ctx, c, s.ID, dir); err != nil {
			_, _ = n.removeContainer(context.WithoutCancel(ctx), c, s.ID)
			return nil, nil, err
		}
	} else if _, err := deleteTask(ctx, ct); err != nil {
		return nil, nil, fmt.Errorf("clear old task: %w", err)
	}
	t, err := ct.NewTask(ctx, cio.NullIO, client.WithRestoreImagePath(dir), client.WithRestoreWorkPath(work))
	if err != nil {
		n.dropIfUnavailable(err)
		if create {
			_, _ = n.removeContainer(context.WithoutCancel(ctx), c, s.ID)
		}
		return nil, nil, fmt.Errorf("%w%s", err, criuLogTail(work, "restore.log"))
	}
	return t, ct, nil
}

// clearBlocks removes the CRIU lock tables and the hold rule found in the
// namespace of container id (RestoreOptions.ClearLocks): what earlier,
// failed restores left blocking it. It runs once the old task is gone,
// just before the restore; for a restore that carries no live connection,
// such as a rollback, and never for a migration's, whose dump's lock
// protects the connections it moves.
func (n *Node) clearBlocks(ctx context.Context, id string) error {
	names, err := networkLocks(n.ctNetns(id), true)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		n.log.Warn("removed network locks left by a failed restore", zapID(id), zap.Strings("tables", names))
	}
	_, err = clearGuards(ctx, n.ctNetns(id), guardHold)
	return err
}

// Stage prepares a restore without running it: the network (no address),
// the guards, the container object and a task that restores from the
// named image when StartStaged starts it. containerd starts the shim and
// writes the bundle now, but runc reads the dump only at start, so the
// image need not exist yet: a migration stages its destination before the
// source is frozen, and the frozen window keeps only runc's restore. A
// dead leftover of the container is removed first; a live copy is refused.
func (n *Node) Stage(ctx context.Context, s migrate.Spec, name migrate.ImageName, opts migrate.StageOptions) (migrate.StepResult, error) {
	fail := func(err error) (migrate.StepResult, error) { return migrate.StepResult{}, n.fail("stage", s.ID, err) }
	err := s.Validate()
	if err == nil && opts.Guards&^(migrate.GuardResets|migrate.GuardHold) != 0 {
		err = fmt.Errorf("guards %#x: want GuardResets, GuardHold or both", uint8(opts.Guards))
	}
	if err != nil {
		return fail(err)
	}
	dir, err := n.imagePath(name)
	if err != nil {
		return fail(err)
	}
	defer n.lockContainer(s.ID)()
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return fail(err)
	}
	where, err := n.locateSpec(ctx, s)
	if err == nil && !where.hasNetwork() {
		err = errNoNetwork
	}
	if err != nil {
		return fail(err)
	}
	ctx = where.in(ctx)
	if s.Adopted != nil {
		_, err = n.adoptedImage(ctx, c, s.Image, s.Adopted.Snapshotter)
	} else {
		_, err = image(ctx, c, s.Image)
	}
	if err != nil {
		return fail(err)
	}
	st, ct, t, err := n.state(ctx, c, s.ID)
	if err != nil {
		return fail(err)
	}
	switch {
	case st == migrate.Running || st == migrate.Paused:
		return fail(fmt.Errorf("a live copy runs here (%s)", st))
	case st == migrate.Created && t != nil && labelOf(ctx, ct, labelStagedFrom) == string(name) && n.networkReady(s):
		if _, err := ensureGuards(ctx, n.ctNetns(s.ID), guard(opts.Guards), true); err != nil {
			return fail(err)
		}
		return migrate.StepResult{Did: "already staged"}, nil
	case st != migrate.Absent:
		if _, err := n.removeContainer(ctx, c, s.ID); err != nil {
			return fail(fmt.Errorf("remove the leftover: %w", err))
		}
		if _, err := n.killLeftovers(s.ID); err != nil {
			return fail(err)
		}
	}
	if !n.networkReady(s) {
		if err := n.setupNetwork(s); err != nil {
			return fail(err)
		}
	}
	if _, err := ensureGuards(ctx, n.ctNetns(s.ID), guard(opts.Guards), true); err != nil {
		return fail(err)
	}
	_, work := n.workDirs(name)
	if err := freshDir(work); err != nil {
		return fail(err)
	}
	ct, err = n.newContainer(ctx, c, s, map[string]string{labelStagedFrom: string(name)})
	if err == nil {
		_, err = ct.NewTask(ctx, cio.NullIO, client.WithRestoreImagePath(dir), client.WithRestoreWorkPath(work))
		if err != nil {
			_, _ = n.removeContainer(context.WithoutCancel(ctx), c, s.ID)
		}
	}
	if err != nil {
		n.dropIfUnavailable(err)
		return fail(err)
	}
	return migrate.StepResult{Did: "staged"}, nil
}

// StartStaged starts what Stage prepared: runc restores the copy from the
// named image (lazily with opts.Lazy), then the guards are lifted. It
// returns once the copy runs and, lazily, once every page is in. On error
// no copy of the restore is left running (the container object, the
// network and the guards stay, for the caller to remove).
func (n *Node) StartStaged(ctx context.Context, s migrate.Spec, name migrate.ImageName, opts migrate.StartStagedOptions) (migrate.RestoreResult, error) {
	fail := func(err error) (migrate.RestoreResult, error) {
		return migrate.RestoreResult{}, n.fail("start staged", s.ID, err)
	}
	dir, err := n.checkRestore(s, name, opts.Lazy)
	if err != nil {
		return fail(err)
	}
	defer n.lockContainer(s.ID)()
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return fail(err)
	}
	where, err := n.locateSpec(ctx, s)
	if err == nil && !where.hasNetwork() {
		err = errNoNetwork
	}
	if err != nil {
		return fail(err)
	}
	ctx = where.in(ctx)
	st, ct, t, err := n.state(ctx, c, s.ID)
	if err != nil {
		return fail(err)
	}
	if labelOf(ctx, ct, labelStagedFrom) != string(name) {
		return fail(fmt.Errorf("not staged from %s (%s)", name, st))
	}
	ns := n.ctNetns(s.ID)
	if st == migrate.Running {
		if _, err := clearGuards(ctx, ns, guard(opts.Guards)); err != nil {
			return fail(err)
		}
		return migrate.RestoreResult{Did: "already running", Lazy: opts.Lazy}, nil
	}
	if st != migrate.Created || t == nil {
		return fail(fmt.Errorf("staged copy is %s, want created", st))
	}
	// A lazy copy must not answer before its pages are in: the stage's hold
	// must be in place, whether this call lifts it (a rollback) or the
	// caller does later (a migration lifts it once its lease is pinned).
	if opts.Lazy && presentGuards(ctx, ns, guardHold)&guardHold == 0 {
		return fail(errors.New("a lazy restore needs the stage to hold the copy (GuardHold), and the hold is not in place"))
	}
	_, work := n.workDirs(name)
	defer n.interventions.Begin(s.ID, intervene.Restore)()
	t0 := time.Now()
	if err := n.applyRootFSDiff(ctx, c, s.ID, dir); err != nil {
		return fail(err)
	}
	if opts.Lazy {
		err = n.restoreLazily(ctx, s.ID, t, dir, work, false)
	} else {
		err = startTask(ctx, t, work)
	}
	if err != nil {
		return fail(err)
	}
	// The restored sockets may answer for themselves now. The guards were
	// set by Stage, so all of them go in one instant; should that fail,
	// whichever are there are looked for and removed.
	if err := setGuards(ctx, ns, guard(opts.Guards), false); err != nil {
		if _, err := clearGuards(ctx, ns, guard(opts.Guards)); err != nil {
			if opts.Guards&migrate.GuardHold != 0 {
				_, _ = t.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
				return fail(fmt.Errorf("lift the hold (the copy cannot answer, so it was killed): %w", err))
			}
			n.log.Warn("remove reset guard", zapID(s.ID), zap.Error(err))
		}
	}
	took := time.Since(t0)
	stats, err := readCRIUStats("", work)
	if err != nil {
		n.log.Warn("criu stats", zapID(s.ID), zap.Error(err))
	}
	return migrate.RestoreResult{Did: "restored", Lazy: opts.Lazy, Took: took, CRIU: stats}, nil
}
