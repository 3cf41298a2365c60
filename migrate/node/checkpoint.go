package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// Checkpoint dumps the container into the named image and verifies it.
// With opts.Exit the container stops once dumped (a migration); without,
// it keeps running (a safe checkpoint). An image that exists and verifies
// is not dumped again ("exists"); a partial one is removed first. The dump
// is written beside the image's place and renamed into it once whole, so
// that no host ever restores from half a dump.
//
// The request goes straight to containerd's task service (unless
// opts.Paused). The client's Task.Checkpoint first pauses the task, so the
// freeze would also cover the shim's request, runc's and CRIU's start-up
// and CRIU's kernel probing (about 100 ms here), and it takes and drops a
// lease (two metadata commits) that a dump to a path does not need. CRIU
// freezes the container's cgroup itself once it is ready to dump.
func (n *Node) Checkpoint(ctx context.Context, id string, name migrate.ImageName, opts migrate.CheckpointOptions) (migrate.CheckpointResult, error) {
	fail := func(err error) (migrate.CheckpointResult, error) {
		return migrate.CheckpointResult{}, n.fail("checkpoint", id, err)
	}
	if err := migrate.ValidID(id); err != nil {
		return fail(err)
	}
	dir, err := n.imagePath(name)
	if err != nil {
		return fail(err)
	}
	defer n.lockContainer(id)()
	defer n.lockImage(name)()
	if size, err := verifyDir(dir); err == nil {
		return migrate.CheckpointResult{Did: "exists", Bytes: size}, nil
	}
	c, cctx, err := n.conn(ctx)
	if err != nil {
		return fail(err)
	}
	where, err := n.locate(cctx, id)
	if err != nil {
		return fail(err)
	}
	cctx = where.in(cctx)
	st, ct, _, err := n.state(cctx, c, id)
	if err != nil {
		return fail(err)
	}
	if st != migrate.Running && st != migrate.Paused {
		return fail(fmt.Errorf("%s, not running: nothing to dump", st))
	}
	if where.adopted {
		// Its user started it without the node's CRIU configuration: the
		// dump asks for established connections itself, and the file is
		// there for the restores (which put it in its spec).
		if err := n.writeAdoptedCRIUConfig(id); err != nil {
			return fail(err)
		}
	} else if _, err := os.Stat(n.criuConfig(id)); err != nil {
		return fail(fmt.Errorf("its CRIU configuration is missing (start or restore it through this node): %w", err))
	}
	if err := dropDump(dir); err != nil {
		return fail(fmt.Errorf("remove the partial image: %w", err))
	}
	work, _ := n.workDirs(name)
	if err := os.RemoveAll(work); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fail(err)
	}
	tmp, err := partialDir(dir)
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp) // gone once renamed
	defer n.interventions.Begin(id, intervene.Checkpoint)()
	t0 := time.Now()
	if opts.Paused {
		err = n.dumpPaused(cctx, ct, tmp, work, opts.Exit)
	} else {
		err = n.dump(cctx, c, id, tmp, work, opts.Exit, where.adopted)
	}
	took := time.Since(t0)
	if err == nil && opts.RootFS {
		err = n.writeRootFSDiff(cctx, c, id, filepath.Join(tmp, rootfsDiffName))
	}
	if err != nil {
		return fail(err)
	}
	size, err := verifyDir(tmp)
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		return fail(err)
	}
	stats, err := readCRIUStats(work, "")
	if err != nil {
		n.log.Warn("criu stats", zapID(id), zap.Error(err))
	}
	return migrate.CheckpointResult{Did: "dumped", Bytes: size, Took: took, CRIU: stats}, nil
}

// partialDir creates the directory a dump into dir is written to: beside
// it, named so that no image name can be it (elements start with a letter
// or digit).
func partialDir(dir string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(dir), ".partial-"+filepath.Base(dir)+"-"+hex.EncodeToString(b[:]))
	return p, os.Mkdir(p, 0o700)
}

func (n *Node) dump(ctx context.Context, c *client.Client, id, dir, work string, exit, openTCP bool) error {
	o := &options.CheckpointOptions{Exit: exit, WorkPath: work, ImagePath: dir, OpenTcp: openTCP}
	req, err := typeurl.MarshalAnyToProto(o)
	if err != nil {
		return fmt.Errorf("options: %w", err)
	}
	if _, err := c.TaskService().Checkpoint(ctx, &tasks.CheckpointTaskRequest{ContainerID: id, Options: req}); err != nil {
		err = errgrpc.ToNative(err)
		n.dropIfUnavailable(err)
		return fmt.Errorf("%w%s", err, criuLogTail(work, "dump.log"))
	}
	return nil
}

// dumpPaused is the dump through the client's Task.Checkpoint: containerd
// pauses the task before asking the shim to dump it. It is kept to
// measure what the direct request saves (planebench -modes).
func (n *Node) dumpPaused(ctx context.Context, ct client.Container, dir, work string, exit bool) error {
	t, err := ct.Task(ctx, nil)
	if err != nil {
		return err
	}
	_, err = t.Checkpoint(ctx, client.WithCheckpointImagePath(dir), func(i *client.CheckpointTaskInfo) error {
		o, ok := i.Options.(*options.CheckpointOptions)
		if !ok {
			return fmt.Errorf("unexpected checkpoint options type %T", i.Options)
		}
		o.Exit, o.WorkPath = exit, work
		return nil
	})
	if err != nil {
		n.dropIfUnavailable(err)
		return fmt.Errorf("%w%s", err, criuLogTail(work, "dump.log"))
	}
	return nil
}

// VerifyImage checks that the named image holds a whole dump and returns
// its size.
func (n *Node) VerifyImage(ctx context.Context, name migrate.ImageName) (int64, error) {
	dir, err := n.imagePath(name)
	if err != nil {
		return 0, n.fail("verify image", "", err)
	}
	size, err := verifyDir(dir)
	if err != nil {
		return size, n.fail("verify image", "", err)
	}
	return size, nil
}

// DropImage deletes the named image and its work directories. An image
// nested under it (a name that extends this one) is left alone.
func (n *Node) DropImage(ctx context.Context, name migrate.ImageName) (migrate.StepResult, error) {
	dir, err := n.imagePath(name)
	if err != nil {
		return migrate.StepResult{}, n.fail("drop image", "", err)
	}
	defer n.lockImage(name)()
	_, statErr := os.Stat(dir)
	had := statErr == nil
	err = dropDump(dir)
	dump, _ := n.workDirs(name)
	work := filepath.Dir(dump)
	if _, e := os.Stat(work); e == nil {
		had = true
		_ = unmountUnder(work) // a killed CRIU's yard, if any
		err = errors.Join(err, os.RemoveAll(work))
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("drop image", "", err)
	}
	pruneEmpty(filepath.Dir(dir), n.imageRoot())
	return didIf(had, "dropped", "absent"), nil
}

// dropDump removes the files of the dump in dir and dir itself if that
// leaves it empty; directories in it (other images) stay.
func dropDump(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	keep := false
	for _, e := range ents {
		if e.IsDir() {
			keep = true
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if !keep && len(errs) == 0 {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pruneEmpty removes dir and its parents while they are empty, up to root
// (which stays).
func pruneEmpty(dir, root string) {
	for dir != root && strings.HasPrefix(dir, root+"/") {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
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
