package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// containerdName is the annotation containerd's import names an image by.
const containerdName = "io.containerd.image.name"

// built is one image as written.
type built struct {
	Repo string `json:"repo"`
	// Tag and Digest give its two names: repo:tag and repo@digest.
	Tag    string `json:"tag"`
	Digest string `json:"digest"`
	// Layout is the OCI layout directory; Archive its tar, for
	// `ctr images import`.
	Layout  string `json:"layout"`
	Archive string `json:"archive"`
}

// Ref is the reference the manifests pin: by digest.
func (b built) Ref() string { return b.Repo + "@" + b.Digest }

// writeImage writes img as an OCI layout at dir/<name> and its archive at
// dir/<name>.tar. The index lists the image twice, named repo:tag and
// repo@digest, so that an import makes both names: the kubelet finds a
// digest-pinned image among the node's images only under that name.
func writeImage(img v1.Image, repo, tag, dir, name string) (built, error) {
	d, err := img.Digest()
	if err != nil {
		return built{}, fmt.Errorf("image %s: digest: %w", repo, err)
	}
	b := built{Repo: repo, Tag: tag, Digest: d.String(), Layout: filepath.Join(dir, name), Archive: filepath.Join(dir, name+".tar")}
	tmp := b.Layout + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return built{}, err
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return built{}, fmt.Errorf("image %s: layout: %w", repo, err)
	}
	for _, ref := range []struct{ name, refName string }{{repo + ":" + tag, tag}, {b.Ref(), ""}} {
		ann := map[string]string{containerdName: ref.name}
		if ref.refName != "" {
			ann["org.opencontainers.image.ref.name"] = ref.refName
		}
		if err := p.AppendImage(img, layout.WithAnnotations(ann),
			layout.WithPlatform(v1.Platform{Architecture: "amd64", OS: "linux"})); err != nil {
			return built{}, fmt.Errorf("image %s: layout: %w", repo, err)
		}
	}
	archive, err := tarDir(tmp)
	if err != nil {
		return built{}, fmt.Errorf("image %s: archive: %w", repo, err)
	}
	if err := os.RemoveAll(b.Layout); err != nil {
		return built{}, err
	}
	if err := os.Rename(tmp, b.Layout); err != nil {
		return built{}, err
	}
	if err := atomicfile.WriteFile(b.Archive, archive, 0o644); err != nil {
		return built{}, fmt.Errorf("image %s: %w", repo, err)
	}
	return b, nil
}

// tarDir packs an OCI layout directory the way tree.pack packs a layer:
// sorted, owned by root, at time 0.
func tarDir(dir string) ([]byte, error) {
	var files []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, p)
			files = append(files, rel)
			return err
		}
		return nil
	}); err != nil {
		return nil, err
	}
	sort.Strings(files)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		for _, parent := range parents(f) {
			if !dirs[parent] {
				dirs[parent] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: parent + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
					return nil, err
				}
			}
		}
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.ToSlash(f), Mode: 0o644, Size: int64(len(data)),
			ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parents lists the directories above the relative path f, outermost first.
func parents(f string) []string {
	var out []string
	for d := filepath.Dir(f); d != "."; d = filepath.Dir(d) {
		out = append([]string{filepath.ToSlash(d)}, out...)
	}
	return out
}

// writeDigests records what was built in dir/images.json.
func writeDigests(dir string, images []built) error {
	data, err := json.MarshalIndent(images, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "images.json"), append(data, '\n'), 0o644)
}
