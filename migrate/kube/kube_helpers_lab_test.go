package kube

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// What the pod-action lab tests (kube_lab_test.go) share.

// kubectl runs kubectl as the lab's admin (labtest.KubectlErr), its
// output trimmed.
func kubectl(t testing.TB, inv *lab.Inventory, stdin string, args ...string) (string, error) {
	t.Helper()
	out, err := labtest.KubectlErr(inv, stdin, args...)
	return strings.TrimSpace(out), err
}

func mustKubectl(t testing.TB, inv *lab.Inventory, stdin string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(labtest.Kubectl(t, inv, stdin, args...))
}

// testAccounts are the agent's service account (the DaemonSet's, which
// deploy/kubernetes/pod-actions/rbac.yaml authorises) and one with no
// role at all.
const testAccounts = `apiVersion: v1
kind: Namespace
metadata: {name: escape-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: escape-sensor, namespace: escape-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: escape-ckpt-nobody, namespace: default}
`

// envPodActionsRBAC hands the child the repository's RBAC manifest (the
// repository is not visible inside the host).
const envPodActionsRBAC = "ESCAPE_TEST_POD_ACTIONS_RBAC"

func redisPod(name string) string {
	return `apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: default, labels: {app: ` + name + `}}
spec:
  containers:
  - name: redis
    image: escape.local/redis:latest
    imagePullPolicy: Never
    command: ["/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", ""]
`
}

func redisCLI(t testing.TB, inv *lab.Inventory, pod string, args ...string) string {
	t.Helper()
	return mustKubectl(t, inv, "", append([]string{"exec", pod, "--", "/usr/bin/redis-cli"}, args...)...)
}

// credentials writes a token of service account sa (in namespace ns) to a file.
func credentials(t testing.TB, inv *lab.Inventory, ns, sa string) Credentials {
	t.Helper()
	tok := mustKubectl(t, inv, "", "create", "token", "-n", ns, sa, "--duration", "1h")
	p := filepath.Join(t.TempDir(), sa+".token")
	if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return Credentials{TokenFile: p, CAFile: lab.InsideKubeDir + "/pki/ca.crt"}
}

// brokenCRIUArchive is a copy of the archive at src whose CRIU images are
// garbage: whole enough to be kept, impossible to restore.
func brokenCRIUArchive(t testing.TB, src string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), "broken.tar")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(hdr.Name, "checkpoint/") && strings.HasSuffix(hdr.Name, ".img") {
			body = []byte("not a CRIU image")
			hdr.Size = int64(len(body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// removeCheckpointImages removes the checkpoint images the test made, and
// the base-image names the restores pulled from the mirror.
func removeCheckpointImages(t testing.TB, c *client.Client) {
	ctx := namespaces.WithNamespace(context.Background(), CRINamespace)
	imgs, err := c.ImageService().List(ctx)
	if err != nil {
		t.Errorf("list images to clean up: %v", err)
		return
	}
	for _, img := range imgs {
		if strings.HasPrefix(img.Name, "escape.local/checkpoint/") || strings.Contains(img.Name, "/"+mirrorRepo+"@") {
			if err := c.ImageService().Delete(ctx, img.Name); err != nil {
				t.Errorf("clean up image %s: %v", img.Name, err)
			}
		}
	}
}
