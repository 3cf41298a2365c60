package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// escape-plane serve with plane.kubernetes, against a control plane of
// the test's own: its hosts are the cluster's nodes, it takes the Lease
// and leads, it answers status; on SIGTERM it releases the Lease.
func TestServeOnKubernetes(t *testing.T) {
	kc := labtest.APIServer(t)
	bin, err := labtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kube.NewClient(kc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "escape-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-s"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.41"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if _, _, err := mtls.InitCA(mtls.InitCARequest{Dir: caDir, Name: "test-ca", Validity: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	files, err := mtls.IssueFiles(mtls.IssueRequest{CADir: caDir, OutDir: filepath.Join(dir, "pki"), Role: "plane", Name: "plane", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "plane.sock")
	conf := filepath.Join(dir, "escape.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `plane:
  socket: %s
  listen: ""
  state: %s
  audit: %s
  tls: {ca: %s, cert: %s, key: %s}
  service_range: 198.18.210.0/24
  adopt: {off: true}
  kubernetes:
    enabled: true
    kubeconfig: %s
    identity: plane-test
    lease_duration: 8s
    renew_deadline: 5s
    retry_period: 500ms
`, socket, filepath.Join(dir, "state.db"), filepath.Join(dir, "audit.jsonl"), files.CA, files.Cert, files.Key, kc), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "escape-plane"), "serve", "--config", conf)
	logPath := filepath.Join(dir, "plane.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("escape-plane's log:\n%s", b)
		}
	}()

	c := plane.NewClient(socket)
	var st plane.Status
	deadline := time.Now().Add(2 * time.Minute)
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Do(sctx, "GET", "/v1/status", nil, &st)
		cancel()
		if err == nil && st.Leading && len(st.Hosts) == 1 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("escape-plane exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("escape-plane never led with the node as its host: status %+v, %v", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Leader != "plane-test" || st.Hosts[0].Name != "node-s" || st.Hosts[0].Agent != "198.18.0.41:7443" {
		t.Errorf("status: leader %q, hosts %+v", st.Leader, st.Hosts)
	}
	l, err := cs.CoordinationV1().Leases("escape-system").Get(ctx, "escape-plane", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "plane-test" {
		t.Fatalf("lease %+v, %v: want held by plane-test", l, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("escape-plane on SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("escape-plane did not stop on SIGTERM")
	}
	l, err = cs.CoordinationV1().Leases("escape-system").Get(ctx, "escape-plane", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
		t.Errorf("the Lease is still held by %q after a clean stop", *l.Spec.HolderIdentity)
	}
}
