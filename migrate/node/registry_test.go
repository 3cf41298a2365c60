package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"github.com/opencontainers/go-digest"
)

// registry is a read-only OCI distribution registry on the loopback of
// network namespace netns serving one image, by tag, from the content store
// of c: enough for containerd's resolver and fetcher to pull it for real,
// as from a registry on the puller's own machine (plain HTTP).
func registry(t *testing.T, c *client.Client, ctx context.Context, ref, repo, tag, netns string) string {
	t.Helper()
	img, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	cs := c.ContentStore()
	var ln net.Listener
	if err := arp.Do(netns, func() error {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/v2/")
		if r.URL.Path == "/v2/" {
			return
		}
		name, rest, ok := strings.Cut(p, "/manifests/")
		kind := "manifest"
		if !ok {
			name, rest, ok = strings.Cut(p, "/blobs/")
			kind = "blob"
		}
		if !ok || name != repo {
			http.NotFound(w, r)
			return
		}
		d := digest.Digest(rest)
		mediaType := "application/octet-stream"
		if kind == "manifest" {
			if rest == tag {
				d = img.Target.Digest
			}
			if d != img.Target.Digest {
				http.NotFound(w, r)
				return
			}
			mediaType = img.Target.MediaType
		}
		if d.Validate() != nil {
			http.NotFound(w, r)
			return
		}
		info, err := cs.Info(ctx, d)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", mediaType)
		w.Header().Set("Docker-Content-Digest", d.String())
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", itoa(info.Size))
			return
		}
		b, err := content.ReadBlob(ctx, cs, img.Target)
		if d != img.Target.Digest {
			ra, e := cs.ReaderAt(ctx, contentDesc(d, info.Size))
			if e != nil {
				http.Error(w, e.Error(), 500)
				return
			}
			defer ra.Close()
			b = make([]byte, info.Size)
			_, err = ra.ReadAt(b, 0)
		}
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_, _ = w.Write(b)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// A host pulls an image from its registry when no peer is named, and
// reports "pulled"; then it is present. The node runs inside h2; the
// registry, serving h1's content, is the parent's, listening on the
// loopback of h2's network namespace (a node pulls from its own process).
func TestNodeEnsureImagePulls(t *testing.T) {
	l := newTestLab(t)
	if labtest.Child() == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		tag := hex.EncodeToString(b[:])
		c, ctx := containerdOf(t, l.inv, "h1")
		h2, _ := l.inv.Host("h2")
		addr := registry(t, c, ctx, "escape.local/busybox:latest", "escape/busybox", tag, h2.Netns)
		l.inHost(t, "h2", "ESCAPE_TEST_REGISTRY="+addr, "ESCAPE_TEST_TAG="+tag)
		return
	}
	if !l.inHost(t, "h2") {
		return
	}
	addr, tag := os.Getenv("ESCAPE_TEST_REGISTRY"), os.Getenv("ESCAPE_TEST_TAG")
	h2 := l.node(t, "h2")
	ctx := testCtx(t)
	c, cctx, err := h2.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx = namespaces.WithNamespace(cctx, h2.cfg.Namespace)
	ref := addr + "/escape/busybox:" + tag
	cleanupImage(t, ref, c.ImageService(), cctx, "h2")
	res, err := h2.EnsureImage(ctx, ref, nil)
	if err != nil || res.Did != "pulled" || res.Bytes < 100_000 {
		t.Fatalf("pull: %+v, %v", res, err)
	}
	res, err = h2.EnsureImage(ctx, ref, nil)
	if err != nil || res.Did != "present" {
		t.Fatalf("ensure again: %+v, %v", res, err)
	}
	// A tag the registry does not have is not pulled, and nothing is named.
	missing := addr + "/escape/busybox:missing-" + tag
	cleanupImage(t, missing, c.ImageService(), cctx, "h2")
	if _, err := h2.EnsureImage(ctx, missing, nil); err == nil || !strings.Contains(err.Error(), "pull") {
		t.Fatalf("pull of a tag the registry lacks: %v", err)
	}
	s := redisSpec(t, "nd-pulled", 155, h2)
	s.Image, s.Args = ref, []string{"/bin/sh", "-c", "while true; do sleep 1; done"}
	r, err := h2.Start(ctx, s, migrate.StartOptions{})
	wantDid(t, "start from the pulled image", r, err, "started")
}
