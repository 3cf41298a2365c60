package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// CRINamespace is containerd's namespace of the CRI's images and containers.
	CRINamespace = "k8s.io"
	// CheckpointAnnotation marks an image index as a container checkpoint;
	// containerd's CRI (checkpointctl's lib, v1.3) looks for it on the
	// index and restores instead of creating a container from it. Its value
	// is the checkpointed container's name.
	CheckpointAnnotation = "org.criu.checkpoint.container.name"
	// snapshotter is the CRI's (and the lab's) snapshotter, which the
	// restore views the image's layer through.
	snapshotter = "overlayfs"
)

// ImportCheckpointImage makes the checkpoint archive at archivePath an OCI
// image named ref in containerd's CRI namespace, unpacked, so that a pod
// naming ref (imagePullPolicy Never or IfNotPresent) restores the
// checkpointed container. The archive is checked first; its bytes, as they
// are, are the image's single uncompressed layer, so the restore sees the
// archive's files at its root, as it would unpacking the archive itself.
// An image of that name already there is replaced.
func ImportCheckpointImage(ctx context.Context, c *client.Client, archivePath, ref, container, mirrorAddr string) (base ocispec.Descriptor, err error) {
	ctx = namespaces.WithNamespace(ctx, CRINamespace)
	info, err := readArchiveInfo(archivePath)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	base, err = baseImageTarget(ctx, c, info)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(archivePath), ".image-")
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	defer os.RemoveAll(tmp)
	layerPath := filepath.Join(tmp, "layer.tar")
	if err := rewriteBaseImage(archivePath, layerPath, mirrorRef(mirrorAddr, base.Digest)); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	f, err := os.Open(layerPath)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	defer f.Close()
	dgstr := digest.Canonical.Digester()
	size, err := f.WriteTo(dgstr.Hash())
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: digest archive: %w", ref, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: rewind archive: %w", ref, err)
	}
	ctx, done, err := c.WithLease(ctx)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: lease: %w", ref, err)
	}
	defer func() { _ = done(context.WithoutCancel(ctx)) }()
	cs := c.ContentStore()

	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dgstr.Digest(), Size: size}
	if err := content.WriteBlob(ctx, cs, "checkpoint-layer-"+layer.Digest.Encoded(), f, layer); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: write layer: %w", ref, err)
	}
	platform := platforms.DefaultSpec()
	config, err := writeJSON(ctx, cs, ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: platform,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	}, nil)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: write config: %w", ref, err)
	}
	manifest, err := writeJSON(ctx, cs, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: versioned(), MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: []ocispec.Descriptor{layer},
	}, map[string]string{
		"containerd.io/gc.ref.content.config": config.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layer.Digest.String(),
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: write manifest: %w", ref, err)
	}
	manifest.Platform = &platform
	index, err := writeJSON(ctx, cs, ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: versioned(), MediaType: ocispec.MediaTypeImageIndex,
		Manifests:   []ocispec.Descriptor{manifest},
		Annotations: map[string]string{CheckpointAnnotation: container},
	}, map[string]string{"containerd.io/gc.ref.content.m.0": manifest.Digest.String()})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: write index: %w", ref, err)
	}

	img := images.Image{Name: ref, Target: index}
	is := c.ImageService()
	if _, err := is.Create(ctx, img); errdefs.IsAlreadyExists(err) {
		_, err = is.Update(ctx, img, "target")
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: replace: %w", ref, err)
		}
	} else if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: create: %w", ref, err)
	}
	if err := client.NewImageWithPlatform(c, img, platforms.Only(platform)).Unpack(ctx, snapshotter); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("checkpoint image %s: unpack: %w", ref, err)
	}
	_ = index
	return base, nil
}

// readArchiveInfo checks the archive at p (ParseArchive).
func readArchiveInfo(p string) (ArchiveInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return ArchiveInfo{}, fmt.Errorf("open checkpoint archive: %w", err)
	}
	defer f.Close()
	info, err := ParseArchive(f)
	if err != nil {
		return info, fmt.Errorf("checkpoint archive %s: %w", p, err)
	}
	return info, nil
}

// RemoveCheckpointImage deletes a checkpoint image made by
// ImportCheckpointImage (absent is not an error).
func RemoveCheckpointImage(ctx context.Context, c *client.Client, ref string) error {
	ctx = namespaces.WithNamespace(ctx, CRINamespace)
	if err := c.ImageService().Delete(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove checkpoint image %s: %w", ref, err)
	}
	return nil
}

func versioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

// writeJSON stores v as a blob of mediaType with the given GC labels.
func writeJSON(ctx context.Context, cs content.Store, mediaType string, v any, labels map[string]string) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	var opts []content.Opt
	if labels != nil {
		opts = append(opts, content.WithLabels(labels))
	}
	if err := content.WriteBlob(ctx, cs, mediaType+"-"+desc.Digest.Encoded(), bytes.NewReader(data), desc, opts...); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}
