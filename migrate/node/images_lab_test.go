package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/escape-mtd/escape/migrate"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tagImage names a copy of image from on n's containerd ref, deleted at
// cleanup from every node given.
func tagImage(t *testing.T, n *Node, from, ref string, also ...*Node) {
	t.Helper()
	c, ctx, err := n.conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.ImageService().Get(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImageService().Create(ctx, images.Image{Name: ref, Target: img.Target}); err != nil {
		t.Fatal(err)
	}
	cleanupImage(t, ref, append([]*Node{n}, also...)...)
}

// cleanupImage deletes image ref from the nodes at cleanup.
func cleanupImage(t *testing.T, ref string, nodes ...*Node) {
	t.Cleanup(func() {
		for _, x := range nodes {
			c, ctx, err := x.conn(context.Background())
			if err == nil {
				err = c.ImageService().Delete(namespaces.WithNamespace(ctx, x.cfg.Namespace), ref)
			}
			if err != nil && !strings.Contains(err.Error(), "not found") {
				t.Errorf("delete image %s on %s: %v", ref, x.Name(), err)
			}
		}
	})
}

// A host without an image imports it from a host that offered it, through
// the peers' stream; only the offered name is created; a container then
// runs from it.
func TestNodeEnsureImageFromPeer(t *testing.T) {
	l := newTestLab(t)
	peers := &pipePeers{self: "h3", nodes: map[string]*Node{}}
	h1 := l.node(t, "h1", false)
	h3 := l.node(t, "h3", false, WithPeers(peers))
	peers.nodes["h1"] = h1
	ctx := testCtx(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	ref := "escape.local/nd-import:" + hex.EncodeToString(b[:])
	other := ref + "-other"
	tagImage(t, h1, "escape.local/busybox:latest", ref, h3)
	tagImage(t, h1, "escape.local/busybox:latest", other, h3)

	tk, err := h1.Offer(ctx, migrate.Offer{Kind: migrate.OfferImage, Name: ref, To: "h3"})
	if err != nil {
		t.Fatal(err)
	}
	// The ticket serves ref, not another image of h1's.
	if _, err := h3.EnsureImage(ctx, other, &migrate.Peer{Name: "h1", Ticket: tk}); err == nil || !strings.Contains(err.Error(), "does not hold") {
		t.Fatalf("imported %s with a ticket for %s: %v", other, ref, err)
	}
	res, err := h3.EnsureImage(ctx, ref, &migrate.Peer{Name: "h1", Ticket: tk})
	if err != nil || res.Did != "imported" || res.Bytes < 100_000 {
		t.Fatalf("ensure from peer: %+v, %v", res, err)
	}
	res, err = h3.EnsureImage(ctx, ref, &migrate.Peer{Name: "h1", Ticket: tk})
	if err != nil || res.Did != "present" {
		t.Fatalf("ensure again: %+v, %v", res, err)
	}
	res, err = h3.EnsureImage(ctx, ref, nil)
	if err != nil || res.Did != "present" {
		t.Fatalf("ensure without a peer: %+v, %v", res, err)
	}
	s := redisSpec(t, "nd-imported", 154, h3)
	s.Image, s.Args = ref, []string{"/bin/sh", "-c", "while true; do sleep 1; done"}
	r, err := h3.Start(ctx, s, migrate.StartOptions{})
	wantDid(t, "start from the imported image", r, err, "started")
	wantStatus(t, h3, s.ID, migrate.Running)
	peers.wg.Wait()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func contentDesc(d digest.Digest, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: d, Size: size}
}
