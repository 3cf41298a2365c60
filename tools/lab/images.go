package lab

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sync/errgroup"
)

// imageSpec is a workload image assembled from files that Debian packages
// installed on this machine (make deps installs them): each binary is
// copied with the shared libraries `ldd` says it needs. No registry needed.
type imageSpec struct {
	name string
	// files maps a path inside the image to its source on the machine.
	files map[string]string
	// busyboxLinks adds a shell and the usual applets as symlinks.
	busyboxLinks bool
}

var labImages = []imageSpec{
	{name: "busybox", files: map[string]string{"/bin/busybox": "/bin/busybox"}, busyboxLinks: true},
	{name: "redis", busyboxLinks: true, files: map[string]string{
		"/bin/busybox": "/bin/busybox",
		// Debian ships the server binary as redis-check-rdb; redis picks
		// its role from argv[0], so the image names it redis-server.
		"/usr/bin/redis-server": "/usr/bin/redis-check-rdb",
		"/usr/bin/redis-cli":    "/usr/bin/redis-cli",
	}},
}

// ImageRef is the reference under which the lab imports an image.
func ImageRef(name string) string { return "escape.local/" + name + ":latest" }

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibs lists the absolute paths of the libraries bin loads.
func sharedLibs(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	if bytes.Contains(out, []byte("not found")) {
		return nil, fmt.Errorf("ldd %s: missing libraries:\n%s", bin, out)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// buildRootFS assembles spec's root filesystem at dir.
func buildRootFS(ctx context.Context, spec imageSpec, dir string) error {
	for _, d := range []string{"bin", "usr/bin", "etc", "tmp", "proc", "sys", "dev", "run", "data", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	for dst, src := range spec.files {
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("image %s needs %s (installed by make deps): %w", spec.name, src, err)
		}
		if err := copyFile(src, filepath.Join(dir, dst)); err != nil {
			return fmt.Errorf("image %s: %w", spec.name, err)
		}
		libs, err := sharedLibs(ctx, src)
		if err != nil {
			return fmt.Errorf("image %s: %w", spec.name, err)
		}
		for _, lib := range libs {
			if err := copyFile(lib, filepath.Join(dir, lib)); err != nil {
				return fmt.Errorf("image %s: %w", spec.name, err)
			}
		}
	}
	if spec.busyboxLinks {
		out, err := exec.CommandContext(ctx, "/bin/busybox", "--list").Output()
		if err != nil {
			return fmt.Errorf("busybox --list: %w", err)
		}
		for _, applet := range strings.Fields(string(out)) {
			if applet == "busybox" {
				continue
			}
			link := filepath.Join(dir, "bin", applet)
			if _, err := os.Lstat(link); err == nil {
				continue
			}
			if err := os.Symlink("busybox", link); err != nil {
				return err
			}
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":    "root:x:0:\nnogroup:x:65534:\n",
		"etc/hosts":    "127.0.0.1 localhost\n",
		"etc/hostname": spec.name + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src) // follows symlinks: the image gets real files
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// ociArchive packs rootfs into an OCI image-layout tar with one layer. The
// index carries containerd's image-name annotation so Import names it ref.
func ociArchive(rootfs, ref string) ([]byte, error) {
	return ociArchiveCmd(rootfs, ref, []string{"/bin/sh"})
}

// ociArchiveCmd is ociArchive with cmd as the image's command (a pod's
// sandbox runs its image's command).
func ociArchiveCmd(rootfs, ref string, cmd []string) ([]byte, error) {
	var layer bytes.Buffer
	diffID := sha256.New()
	gz := gzip.NewWriter(&layer)
	tw := tar.NewWriter(io.MultiWriter(gz, diffID))
	var paths []string
	if err := filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != rootfs {
			paths = append(paths, p)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	sort.Strings(paths) // a stable layer digest for the same tree
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		link := ""
		if st.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil, err
			}
		}
		hdr, err := tar.FileInfoHeader(st, link)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(rootfs, p)
		hdr.Name = rel
		if st.IsDir() {
			hdr.Name += "/"
		}
		hdr.ModTime = time.Unix(0, 0)
		hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = "", "", 0, 0
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if st.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}

	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := put(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/usr/bin:/bin"}, "Cmd": cmd},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID.Sum(nil))}},
	})
	configDigest, configSize := put(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": "latest"},
		}},
	})

	var out bytes.Buffer
	otw := tar.NewWriter(&out)
	add := func(name string, b []byte) error {
		if err := otw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := otw.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := add("index.json", index); err != nil {
		return nil, err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return nil, err
		}
	}
	if err := otw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// importImage imports an OCI archive into the host's containerd and unpacks
// it for the default snapshotter, so containers can be created at once.
func importImage(ctx context.Context, socket, namespace string, archive []byte) error {
	c, err := containerd.New(socket)
	if err != nil {
		return fmt.Errorf("connect %s: %w", socket, err)
	}
	defer c.Close()
	ctx = namespaces.WithNamespace(ctx, namespace)
	imgs, err := c.Import(ctx, bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("import into %s: %w", socket, err)
	}
	for _, img := range imgs {
		if err := containerd.NewImage(c, img).Unpack(ctx, ""); err != nil {
			return fmt.Errorf("unpack %s on %s: %w", img.Name, socket, err)
		}
	}
	return nil
}

// ImportImage packs the root filesystem rootfs (a directory of the root
// namespace) as a one-layer OCI image named ref and imports it into every
// host's containerd, unpacked, as Up does with the lab's own images: a
// benchmark or a test can then deploy a workload of its own by reference.
// Importing the same ref again replaces the image.
func ImportImage(ctx context.Context, inv *Inventory, rootfs, ref string) error {
	if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
		return fmt.Errorf("import image %s: root filesystem %s is not a directory (%v)", ref, rootfs, err)
	}
	a, err := ociArchive(rootfs, ref)
	if err != nil {
		return fmt.Errorf("pack image %s: %w", ref, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, h := range inv.Hosts {
		g.Go(func() error {
			if err := importImage(gctx, h.Containerd, inv.Namespace, a); err != nil {
				return fmt.Errorf("image %s on %s: %w", ref, h.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}
