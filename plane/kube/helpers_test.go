package kube_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// cluster is a control plane of the test's own (labtest.APIServer) and
// an admin's clientset of it.
func cluster(t *testing.T) (kubeconfig string, cs kubernetes.Interface) {
	t.Helper()
	kc := labtest.APIServer(t)
	cs, err := kube.NewClient(kc)
	if err != nil {
		t.Fatal(err)
	}
	return kc, cs
}

// newPlane is a plane on Kubernetes (no hosts key), with a real plane
// certificate of a CA made for the test and its own state, as a replica
// of its own would have.
func newPlane(t *testing.T, opts ...plane.Option) *plane.Plane {
	t.Helper()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if _, _, err := mtls.InitCA(mtls.InitCARequest{Dir: caDir, Name: "test-ca", Validity: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	files, err := mtls.IssueFiles(mtls.IssueRequest{CADir: caDir, OutDir: filepath.Join(dir, "pki"), Role: "plane", Name: "plane", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := plane.DefaultConfig()
	cfg.Socket, cfg.State, cfg.Audit = filepath.Join(dir, "plane.sock"), filepath.Join(dir, "state.db"), filepath.Join(dir, "audit.jsonl")
	cfg.TLS = plane.TLSFiles{CA: files.CA, Cert: files.Cert, Key: files.Key}
	cfg.ServiceRange = "198.18.200.0/24"
	cfg.Kubernetes.Enabled = true
	cfg.Adopt.Off = true
	p, err := plane.New(cfg, append([]plane.Option{plane.WithLogger(zaptest.NewLogger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("plane: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// createNode registers a node as a kubelet would: the object, then its
// status with its InternalIP and what the kubelet reports.
func createNode(t *testing.T, cs kubernetes.Interface, name, ip string, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	n.Status.NodeInfo = corev1.NodeSystemInfo{KernelVersion: "6.1.0-test", ContainerRuntimeVersion: "containerd://2.1.0"}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of node %s: %v", name, err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// eventually polls cond every 100ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func podRef(p *corev1.Pod) events.Pod {
	return events.Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)}
}
