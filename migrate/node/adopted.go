package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/containerd/typeurl/v2"
	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// An adopted container's object: its user made it, and the node changes
// only what acting on it needs. In place (a rollback) its spec gains the
// annotation that names the node's CRIU configuration to runc, so that the
// restore carries established connections (runc forwards no such option
// on restore). Elsewhere (a migration) it is made again from its whole
// spec, image, labels, snapshotter and runtime, with three changes: the
// network namespace is the one the destination made, with the same
// address and MAC; the cgroup is under the destination agent's parent
// (two copies coexist during a handoff, and hosts may share a kernel); and
// the annotation.

const criuConfigAnnotation = "org.criu.config"

// adoptedSpec decodes s's OCI spec and points it at this host: its network
// namespace, its cgroup and the node's CRIU configuration.
func (n *Node) adoptedSpec(s migrate.Spec) (*specs.Spec, error) {
	if s.Adopted == nil || len(s.Adopted.OCISpec) == 0 {
		return nil, fmt.Errorf("adopted container %s: no OCI spec to make it from", s.ID)
	}
	var spec specs.Spec
	if err := json.Unmarshal(s.Adopted.OCISpec, &spec); err != nil {
		return nil, fmt.Errorf("adopted container %s: OCI spec: %w", s.ID, err)
	}
	if spec.Linux == nil || spec.Process == nil || spec.Root == nil {
		return nil, fmt.Errorf("adopted container %s: the OCI spec has no linux, process or root section", s.ID)
	}
	p := n.placeOf(s.ID)
	if p.hasNetwork() {
		set := false
		for i := range spec.Linux.Namespaces {
			if spec.Linux.Namespaces[i].Type == specs.NetworkNamespace {
				spec.Linux.Namespaces[i].Path, set = arp.NetnsPath(p.netns), true
			}
		}
		if !set {
			return nil, fmt.Errorf("adopted container %s: its spec joins no network namespace, and it has an address to keep", s.ID)
		}
	}
	if p.cgroup != "" {
		spec.Linux.CgroupsPath = p.cgroup
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[criuConfigAnnotation] = n.criuConfig(s.ID)
	return &spec, nil
}

// newAdoptedContainer makes an adopted container's object here from its
// spec (a migration's destination), with a fresh snapshot of its image.
func (n *Node) newAdoptedContainer(ctx context.Context, c *client.Client, s migrate.Spec, labels map[string]string) (client.Container, error) {
	spec, err := n.adoptedSpec(s)
	if err != nil {
		return nil, err
	}
	img, err := n.adoptedImage(ctx, c, s.Image, s.Adopted.Snapshotter)
	if err != nil {
		return nil, err
	}
	if err := n.writeAdoptedCRIUConfig(s.ID); err != nil {
		return nil, err
	}
	all := maps.Clone(s.Labels)
	if all == nil {
		all = map[string]string{}
	}
	maps.Copy(all, labels)
	all[migrate.AdoptLabel] = "true"
	sn := c.SnapshotService(s.Adopted.Snapshotter)
	if err := sn.Remove(ctx, snapshotKey(s.ID)); err == nil {
		n.log.Warn("removed a snapshot left without its container", zapID(s.ID))
	}
	runtime := s.Adopted.Runtime
	if runtime == "" {
		runtime = "io.containerd.runc.v2"
	}
	var ropts any
	if n.cfg.RuncRoot != "" {
		ropts = &options.Options{Root: n.cfg.RuncRoot}
	}
	ct, err := c.NewContainer(ctx, s.ID,
		client.WithImage(img),
		client.WithSnapshotter(s.Adopted.Snapshotter),
		client.WithNewSnapshot(snapshotKey(s.ID), img),
		client.WithRuntime(runtime, ropts),
		client.WithSpec(spec),
		client.WithContainerLabels(all))
	if err != nil {
		n.dropIfUnavailable(err)
		return nil, err
	}
	return ct, nil
}

// ensureAdoptedSpec gives an existing adopted container (a rollback in
// place) the annotation that names the node's CRIU configuration, and
// writes the file. Its next task reads both.
func (n *Node) ensureAdoptedSpec(ctx context.Context, ct client.Container, id string) error {
	if err := n.writeAdoptedCRIUConfig(id); err != nil {
		return err
	}
	spec, err := ct.Spec(ctx)
	if err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if spec.Annotations[criuConfigAnnotation] == n.criuConfig(id) {
		return nil
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[criuConfigAnnotation] = n.criuConfig(id)
	err = ct.Update(ctx, func(ctx context.Context, _ *client.Client, c *containers.Container) error {
		a, err := typeurl.MarshalAny(spec)
		if err != nil {
			return err
		}
		c.Spec = a
		return nil
	})
	if err != nil {
		return fmt.Errorf("name the CRIU configuration in its spec: %w", err)
	}
	return nil
}

// adoptedImage returns image ref in the adopted container's namespace
// (ctx's), unpacked for its snapshotter. Images reach a host in the node's
// own namespace (EnsureImage); one missing in the adopted namespace is
// copied over from there.
func (n *Node) adoptedImage(ctx context.Context, c *client.Client, ref, snapshotter string) (client.Image, error) {
	img, err := c.GetImage(ctx, ref)
	if errdefs.IsNotFound(err) {
		if err := n.copyImageIn(ctx, c, ref); err != nil {
			return nil, err
		}
		img, err = c.GetImage(ctx, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	ok, err := img.IsUnpacked(ctx, snapshotter)
	if err == nil && !ok {
		err = img.Unpack(ctx, snapshotter)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: unpack: %w", ref, err)
	}
	return img, nil
}

// copyImageIn copies image ref from the node's own namespace into ctx's.
func (n *Node) copyImageIn(ctx context.Context, c *client.Client, ref string) error {
	own := namespaces.WithNamespace(ctx, n.cfg.Namespace)
	if _, err := c.GetImage(own, ref); err != nil {
		return fmt.Errorf("image %s is not in this host's content store (EnsureImage first): %w", ref, err)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(c.Export(own, pw, archive.WithImage(c.ImageService(), ref), archive.WithPlatform(platforms.Default())))
	}()
	err := n.importImage(ctx, c, ref, pr)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("copy image %s into the adopted container's namespace: %w", ref, err)
	}
	return nil
}
