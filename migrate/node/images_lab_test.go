package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerdOf is a client of host's containerd from the root namespace,
// in the lab's containerd namespace, closed at cleanup. Image records and
// content need no mount, so they are reachable from outside the host.
func containerdOf(t *testing.T, inv *lab.Inventory, host string) (*client.Client, context.Context) {
	t.Helper()
	h, ok := inv.Host(host)
	if !ok {
		t.Fatalf("no host %s in the lab", host)
	}
	c, err := client.New(h.Containerd, client.WithDefaultNamespace(inv.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(context.Background(), inv.Namespace)
}

// tagImage names a copy of image from on host's containerd ref, deleted
// at cleanup from every host given.
func tagImage(t *testing.T, inv *lab.Inventory, host, from, ref string, also ...string) {
	t.Helper()
	c, ctx := containerdOf(t, inv, host)
	img, err := c.ImageService().Get(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImageService().Create(ctx, images.Image{Name: ref, Target: img.Target}); err != nil {
		t.Fatal(err)
	}
	for _, h := range append([]string{host}, also...) {
		c, ctx := containerdOf(t, inv, h)
		cleanupImage(t, ref, c.ImageService(), ctx, h)
	}
}

// cleanupImage deletes image ref from is at cleanup.
func cleanupImage(t *testing.T, ref string, is images.Store, ctx context.Context, host string) {
	t.Cleanup(func() {
		if err := is.Delete(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("delete image %s on %s: %v", ref, host, err)
		}
	})
}

// A host without an image imports it from a host that offered it, through
// the peers' stream; only the offered name is created; a container then
// runs from it. The hosts are the lab's agents: h3's imports from h1's
// over the fabric.
func TestNodeEnsureImageFromPeer(t *testing.T) {
	l := newTestLab(t)
	h1, h3 := l.agent(t, "h1"), l.agent(t, "h3")
	ctx := testCtx(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	ref := "escape.local/nd-import:" + hex.EncodeToString(b[:])
	other := ref + "-other"
	tagImage(t, l.inv, "h1", "escape.local/busybox:latest", ref, "h3")
	tagImage(t, l.inv, "h1", "escape.local/busybox:latest", other, "h3")

	tk, err := h1.Offer(ctx, migrate.Offer{Kind: migrate.OfferImage, Name: ref, To: "h3"})
	if err != nil {
		t.Fatal(err)
	}
	// The ticket serves ref, not another image of h1's.
	if _, err := h3.EnsureImage(ctx, other, ptr(peer(h1, tk))); err == nil || !strings.Contains(err.Error(), "does not hold") {
		t.Fatalf("imported %s with a ticket for %s: %v", other, ref, err)
	}
	res, err := h3.EnsureImage(ctx, ref, ptr(peer(h1, tk)))
	if err != nil || res.Did != "imported" || res.Bytes < 100_000 {
		t.Fatalf("ensure from peer: %+v, %v", res, err)
	}
	res, err = h3.EnsureImage(ctx, ref, ptr(peer(h1, tk)))
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
}

func ptr[T any](v T) *T { return &v }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func contentDesc(d digest.Digest, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: d, Size: size}
}
