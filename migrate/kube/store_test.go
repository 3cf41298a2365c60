package kube

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func writeArchive(t *testing.T, dir, name string, extra int) string {
	t.Helper()
	entries := append(validArchive(), tarEntry{name: "checkpoint/pages-2.img", body: strings.Repeat("x", extra)})
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, makeTar(t, entries), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStoreKeepsTheNewestWithinBounds(t *testing.T) {
	src := t.TempDir()
	s, err := NewStore(filepath.Join(t.TempDir(), "store"), 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	a := PodContainer{"default", "redis-a", "redis"}
	b := PodContainer{"default", "redis-b", "redis"}
	var keptA []string
	for i := 0; i < 3; i++ {
		k, err := s.Keep(a, writeArchive(t, src, "a"+string(rune('0'+i))+".tar", 10))
		if err != nil {
			t.Fatal(err)
		}
		keptA = append(keptA, k)
	}
	if _, err := os.Stat(keptA[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the oldest of three archives (two kept per container) is still there: %v", err)
	}
	for _, k := range keptA[1:] {
		if _, err := os.Stat(k); err != nil {
			t.Errorf("a newer archive is gone: %v", err)
		}
	}
	if n, err := s.Newest(a); err != nil || n != keptA[2] {
		t.Errorf("newest of a: %q %v, want %q", n, err, keptA[2])
	}
	if _, err := s.Newest(b); !errors.Is(err, ErrNotFound) {
		t.Errorf("newest of a container never kept: want ErrNotFound, got %v", err)
	}
	// The byte bound prunes across containers, oldest first, never the new one.
	big, err := s.Keep(b, writeArchive(t, src, "b.tar", 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(big); err != nil {
		t.Errorf("the archive just kept was pruned: %v", err)
	}
	for _, k := range keptA[1:] {
		if _, err := os.Stat(k); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("over the byte bound, older archive %s was kept: %v", k, err)
		}
	}
}

func TestStoreRefusesAndLosesNothing(t *testing.T) {
	src := t.TempDir()
	s, err := NewStore(filepath.Join(t.TempDir(), "store"), 2, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	pc := PodContainer{"default", "redis", "redis"}
	good, err := s.Keep(pc, writeArchive(t, src, "good.tar", 1))
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(src, "bad.tar")
	if err := os.WriteFile(bad, []byte("not an archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Keep(pc, bad); !errors.Is(err, ErrBadArchive) {
		t.Errorf("corrupt archive: want ErrBadArchive, got %v", err)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Errorf("the refused archive was moved or removed: %v", err)
	}
	if n, _ := s.Newest(pc); n != good {
		t.Errorf("newest after a refusal: %q, want %q", n, good)
	}
	for _, name := range []PodContainer{{"../..", "x", "y"}, {"default", "a/b", "c"}, {"default", "", "c"}, {"Default", "x", "y"}} {
		if _, err := s.Keep(name, writeArchive(t, src, "n.tar", 1)); err == nil {
			t.Errorf("kept an archive under the bad name %v", name)
		}
	}
	if _, err := NewStore(t.TempDir(), 0, 1); err == nil {
		t.Error("a store that keeps nothing was accepted")
	}
}

func TestRewriteBaseImageChangesOnlyTheReference(t *testing.T) {
	dir := t.TempDir()
	src := writeArchive(t, dir, "in.tar", 100)
	dst := filepath.Join(dir, "out.tar")
	const ref = "127.0.0.1:5571/escape-checkpoint-base@sha256:f6f71eb5bab371de2d76c348c51b5d4793edbb5db086c931f4d716141423fc65"
	if err := rewriteBaseImage(src, dst, ref); err != nil {
		t.Fatal(err)
	}
	read := func(p string) map[string]string {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out := map[string]string{}
		tr := tar.NewReader(f)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			out[hdr.Name] = string(b)
		}
	}
	in, out := read(src), read(dst)
	if len(in) != len(out) {
		t.Fatalf("%d entries in, %d out", len(in), len(out))
	}
	for name, body := range in {
		if name == archiveConfig {
			continue
		}
		if out[name] != body {
			t.Errorf("%s changed", name)
		}
	}
	var before, after map[string]any
	if err := json.Unmarshal([]byte(in[archiveConfig]), &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out[archiveConfig]), &after); err != nil {
		t.Fatal(err)
	}
	if after["rootfsImageRef"] != ref {
		t.Errorf("rootfsImageRef %v, want %s", after["rootfsImageRef"], ref)
	}
	after["rootfsImageRef"] = before["rootfsImageRef"]
	if b1, b2 := mustJSON(t, before), mustJSON(t, after); b1 != b2 {
		t.Errorf("other fields changed:\n%s\n%s", b1, b2)
	}
	if err := rewriteBaseImage(filepath.Join(dir, "absent.tar"), dst, ref); err == nil {
		t.Error("rewrote an archive that does not exist")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReplacementPod(t *testing.T) {
	var old pod
	if err := json.Unmarshal([]byte(`{"metadata":{"name":"web","namespace":"shop","labels":{"app":"web"},"annotations":{"a":"b"}},
		"spec":{"nodeName":"h1","containers":[{"name":"side","image":"busybox"},{"name":"redis","image":"redis","imagePullPolicy":"Always"}]}}`), &old); err != nil {
		t.Fatal(err)
	}
	body, err := replacementPod(&old, "redis", "web-r1", "escape.local/checkpoint/shop/web-redis:1", "h1")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata struct {
			Name, Namespace string
			Labels          map[string]string
			Annotations     map[string]string
		}
		Spec struct {
			NodeName   string
			Containers []struct{ Name, Image, ImagePullPolicy string }
		}
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Name != "web-r1" || got.Metadata.Namespace != "shop" || got.Metadata.Labels["app"] != "web" ||
		got.Metadata.Annotations["a"] != "b" || got.Metadata.Annotations[AnnotationRestoredFrom] != "web" {
		t.Errorf("metadata %+v", got.Metadata)
	}
	if got.Spec.NodeName != "h1" || got.Spec.Containers[0].Image != "busybox" ||
		got.Spec.Containers[1].Image != "escape.local/checkpoint/shop/web-redis:1" || got.Spec.Containers[1].ImagePullPolicy != "IfNotPresent" {
		t.Errorf("spec %+v", got.Spec)
	}
	if _, err := replacementPod(&old, "absent", "x", "y", "h1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a container the pod lacks: want ErrNotFound, got %v", err)
	}
	long := strings.Repeat("p", 63)
	if n := replacementName(long, "abc"); len(n) > 63 || !strings.HasSuffix(n, "-rabc") {
		t.Errorf("replacement name %q (%d)", n, len(n))
	}
}

func TestMirrorServesOnlyWhatItWasGiven(t *testing.T) {
	ctx := context.Background()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(mt string, data []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(ctx, cs, d.Digest.String(), bytes.NewReader(data), d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	layer := put(ocispec.MediaTypeImageLayer, []byte("layer"))
	config := put(ocispec.MediaTypeImageConfig, []byte(`{"rootfs":{"type":"layers"}}`))
	mb, _ := json.Marshal(ocispec.Manifest{Versioned: versioned(), MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: []ocispec.Descriptor{layer}})
	manifest := put(ocispec.MediaTypeImageManifest, mb)
	secret := put(ocispec.MediaTypeImageLayer, []byte("another image's layer"))

	m := &mirror{cs: cs, allowed: map[digest.Digest]ocispec.Descriptor{}}
	if err := m.allow(ctx, manifest); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.handler(ctx))
	defer srv.Close()
	get := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	base := "/v2/" + mirrorRepo
	if resp, body := get("GET", base+"/manifests/"+manifest.Digest.String()); resp.StatusCode != 200 || body != string(mb) ||
		resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest || resp.Header.Get("Docker-Content-Digest") != manifest.Digest.String() {
		t.Errorf("manifest: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := get("HEAD", base+"/manifests/"+manifest.Digest.String()); resp.StatusCode != 200 || body != "" || resp.ContentLength != manifest.Size {
		t.Errorf("HEAD manifest: %d %q %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, body := get("GET", base+"/blobs/"+layer.Digest.String()); resp.StatusCode != 200 || body != "layer" {
		t.Errorf("layer: %d %q", resp.StatusCode, body)
	}
	for _, path := range []string{base + "/blobs/" + secret.Digest.String(), base + "/manifests/latest", "/v2/other/blobs/" + layer.Digest.String(), base + "/tags/list"} {
		if resp, _ := get("GET", path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := get("PUT", base+"/blobs/"+layer.Digest.String()); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", resp.StatusCode)
	}
}
