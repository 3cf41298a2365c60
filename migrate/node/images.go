package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/escape-mtd/escape/migrate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Container images: each host runs containers from its own containerd's
// content store, so an image must be there before a container can start
// or be restored on the host. It comes from its registry, or from another
// host that has it (a registry the destination cannot reach, or an image
// that never was in one).

var ticketRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func validPeer(p migrate.Peer) error {
	if !hostNameRE.MatchString(p.Name) {
		return fmt.Errorf("peer %q: want a host name", p.Name)
	}
	if !ticketRE.MatchString(string(p.Ticket)) {
		return fmt.Errorf("peer %s: ticket %.16q...: want 64 hex digits", p.Name, string(p.Ticket))
	}
	return nil
}

// EnsureImage makes sure the host's containerd has the image ref, unpacked:
// "present" if it was, "imported" from the peer that offered it (from), or
// "pulled" from its registry.
func (n *Node) EnsureImage(ctx context.Context, ref string, from *migrate.Peer) (migrate.ImageResult, error) {
	fail := func(err error) (migrate.ImageResult, error) {
		return migrate.ImageResult{}, n.fail("ensure image", "", fmt.Errorf("%s: %w", ref, err))
	}
	if err := migrate.ValidImageRef(ref); err != nil {
		return fail(err)
	}
	if from != nil {
		if err := validPeer(*from); err != nil {
			return fail(err)
		}
		if n.peers == nil {
			return fail(errors.New("this node has no way to reach other hosts (WithPeers)"))
		}
	}
	m := &n.imgLocks[stripe("ref:"+ref)]
	m.Lock()
	defer m.Unlock()
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return fail(err)
	}
	img, err := c.GetImage(ctx, ref)
	switch {
	case err == nil:
		if err := unpacked(ctx, img); err != nil {
			return fail(err)
		}
		size, _ := img.Size(ctx)
		return migrate.ImageResult{Did: "present", Bytes: size}, nil
	case !errdefs.IsNotFound(err):
		n.dropIfUnavailable(err)
		return fail(err)
	}
	if from == nil {
		img, err := c.Pull(ctx, ref, client.WithPullUnpack)
		if err != nil {
			return fail(fmt.Errorf("pull: %w", err))
		}
		size, _ := img.Size(ctx)
		return migrate.ImageResult{Did: "pulled", Bytes: size}, nil
	}
	rc, err := n.peers.Open(ctx, *from)
	if err != nil {
		return fail(fmt.Errorf("open the offer of %s: %w", from.Name, err))
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	if err := n.importImage(ctx, c, ref, cr); err != nil {
		return fail(fmt.Errorf("import from %s: %w", from.Name, err))
	}
	return migrate.ImageResult{Did: "imported", Bytes: cr.n}, nil
}

func unpacked(ctx context.Context, img client.Image) error {
	ok, err := img.IsUnpacked(ctx, "")
	if err != nil || ok {
		return err
	}
	return img.Unpack(ctx, "")
}

// serveImage writes image ref as an OCI archive, for this platform only.
func (n *Node) serveImage(ctx context.Context, ref string, w io.Writer) error {
	c, ctx, err := n.conn(ctx)
	if err != nil {
		return err
	}
	return c.Export(ctx, w, archive.WithImage(c.ImageService(), ref), archive.WithPlatform(platforms.Default()))
}

// importImage imports the OCI archive r and names ref from it, then
// unpacks it. Only ref is named: the client's Import would create every
// name the archive's index carries, and a peer must not be able to
// replace another image of this host.
func (n *Node) importImage(ctx context.Context, c *client.Client, ref string, r io.Reader) error {
	ctx, done, err := c.WithLease(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = done(context.WithoutCancel(ctx)) }()
	cs := c.ContentStore()
	index, err := archive.ImportIndex(ctx, cs, r)
	if err != nil {
		return err
	}
	b, err := content.ReadBlob(ctx, cs, index)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("archive index: %w", err)
	}
	var target *ocispec.Descriptor
	for i, m := range idx.Manifests {
		if m.Annotations[images.AnnotationImageName] == ref {
			target = &idx.Manifests[i]
			break
		}
	}
	if target == nil {
		return fmt.Errorf("the archive does not hold %s (%d manifests)", ref, len(idx.Manifests))
	}
	// Labels on each blob for its children: what keeps containerd's
	// collector off the image's content once the lease ends.
	h := images.SetChildrenLabels(cs, images.FilterPlatforms(images.ChildrenHandler(cs), platforms.Default()))
	if err := images.WalkNotEmpty(ctx, h, *target); err != nil {
		return err
	}
	is := c.ImageService()
	want := images.Image{Name: ref, Target: *target}
	if _, err := is.Create(ctx, want); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return err
		}
		if _, err := is.Update(ctx, want, "target"); err != nil {
			return err
		}
	}
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		return err
	}
	return img.Unpack(ctx, "")
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}
