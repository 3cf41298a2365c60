package kube

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultMirrorAddr is where the agent serves, on the node's loopback and
// only while a restore runs, the base images of its checkpoints.
const DefaultMirrorAddr = "127.0.0.1:5571"

// mirrorRepo is the repository name the mirror answers for.
const mirrorRepo = "escape-checkpoint-base"

// A mirror is a read-only registry (the distribution API's GET and HEAD of
// manifests and blobs by digest, nothing else) over the node's own
// containerd content, limited to the content of the images it was given.
// containerd's CRI restore pulls a checkpoint's base image by reference
// from a registry, with neither the pod's pull secrets nor the CRI's
// registry configuration; from the mirror it always can, and the blobs
// are already local, so only the manifests cross loopback.
type mirror struct {
	cs      content.Store
	mu      sync.Mutex
	allowed map[digest.Digest]ocispec.Descriptor
	srv     *http.Server
}

// mirrorRef is the reference under which the mirror at addr serves dgst.
func mirrorRef(addr string, dgst digest.Digest) string {
	return addr + "/" + mirrorRepo + "@" + dgst.String()
}

// baseImageTarget finds the image the checkpointed container ran from in
// the CRI's namespace: by its name, else by its image id (the config's
// digest, which is the CRI's reference to an image without repo digest).
func baseImageTarget(ctx context.Context, c *client.Client, info ArchiveInfo) (ocispec.Descriptor, error) {
	ctx = namespaces.WithNamespace(ctx, CRINamespace)
	is := c.ImageService()
	if img, err := is.Get(ctx, info.RootfsImageName); err == nil {
		return img.Target, nil
	}
	if _, d, ok := strings.Cut(info.RootfsImageRef, "@"); ok {
		dg, err := digest.Parse(d)
		if err == nil {
			if ra, err := c.ContentStore().Info(ctx, dg); err == nil {
				return ocispec.Descriptor{Digest: dg, Size: ra.Size, MediaType: ocispec.MediaTypeImageManifest}, nil
			}
		}
	}
	all, err := is.List(ctx)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("base image of %s: list images: %w", info.Name, err)
	}
	for _, img := range all {
		cfg, err := images.Config(ctx, c.ContentStore(), img.Target, platforms.Default())
		if err == nil && cfg.Digest.String() == info.RootfsImageRef {
			return img.Target, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("base image %s (%s) of %s is not in the node's containerd", info.RootfsImageName, info.RootfsImageRef, info.Name)
}

// startMirror serves the content reachable from roots on addr until stop.
func startMirror(ctx context.Context, c *client.Client, addr string, roots ...ocispec.Descriptor) (*mirror, error) {
	ctx = namespaces.WithNamespace(ctx, CRINamespace)
	m := &mirror{cs: c.ContentStore(), allowed: map[digest.Digest]ocispec.Descriptor{}}
	if err := m.allow(ctx, roots...); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("checkpoint base mirror: listen %s: %w", addr, err)
	}
	if ap, ok := ln.Addr().(*net.TCPAddr); !ok || !ap.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("checkpoint base mirror: %s is not a loopback address", addr)
	}
	m.srv = &http.Server{Handler: m.handler(namespaces.WithNamespace(context.WithoutCancel(ctx), CRINamespace)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

// allow adds the content reachable from roots to what the mirror serves.
func (m *mirror) allow(ctx context.Context, roots ...ocispec.Descriptor) error {
	found := map[digest.Digest]ocispec.Descriptor{}
	collect := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		found[desc.Digest] = desc
		return images.Children(ctx, m.cs, desc)
	})
	if err := images.Walk(namespaces.WithNamespace(ctx, CRINamespace), collect, roots...); err != nil {
		return fmt.Errorf("checkpoint base mirror: walk images: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for d, desc := range found {
		m.allowed[d] = desc
	}
	return nil
}

func (m *mirror) stop() { _ = m.srv.Close() }

func (m *mirror) handler(ctx context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
			w.WriteHeader(http.StatusOK)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/v2/"+mirrorRepo+"/")
		kind, ref, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 || (kind != "manifests" && kind != "blobs") {
			http.NotFound(w, r)
			return
		}
		dgst, err := digest.Parse(ref)
		m.mu.Lock()
		desc, known := m.allowed[dgst]
		m.mu.Unlock()
		if err != nil || !known {
			http.NotFound(w, r)
			return
		}
		ra, err := m.cs.ReaderAt(ctx, desc)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer ra.Close()
		if kind == "manifests" {
			w.Header().Set("Content-Type", desc.MediaType)
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		w.Header().Set("Docker-Content-Digest", dgst.String())
		w.Header().Set("Content-Length", strconv.FormatInt(ra.Size(), 10))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		_, _ = io.Copy(w, content.NewReader(ra)) // a client gone mid-blob retries
	})
}
