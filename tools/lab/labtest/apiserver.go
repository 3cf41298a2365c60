package labtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/escape-mtd/escape/tools/lab"
)

// APIServer starts a control plane of its own for t, the way
// controller-runtime's envtest does: etcd and kube-apiserver (the lab's
// cached binaries, built by make kube-bins) on loopback, on free ports,
// with a throwaway CA, everything under t.TempDir(). It returns the path
// of a kubeconfig for a system:masters user; the processes are stopped
// when t ends. No controller-manager, scheduler or kubelet: objects are
// what the test creates. RBAC is on (authorization-mode RBAC), and the
// ServiceAccount admission is off (no controller makes the default
// service accounts pods would need). Under -short it skips.
func APIServer(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver: not run with -short")
	}
	apiserver := filepath.Join(lab.DefaultKubeCache, lab.DefaultKubeVersion, "kube-apiserver")
	etcd := filepath.Join(lab.DefaultPrefix, "bin", "etcd")
	for _, bin := range []string{apiserver, etcd} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: run make deps and make kube-bins", bin)
		}
	}
	// A port taken between its choice and its use (another test, another
	// helper) makes the process exit: start again on new ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		kc, err := startControlPlane(t, etcd, apiserver)
		if err == nil {
			return kc
		}
		lastErr = err
		t.Logf("control plane, attempt %d: %v", attempt+1, err)
	}
	t.Fatalf("start etcd and kube-apiserver: %v", lastErr)
	return ""
}

// startControlPlane starts etcd, then the apiserver, and waits for the
// apiserver's /readyz.
func startControlPlane(t testing.TB, etcdBin, apiserverBin string) (string, error) {
	dir := t.TempDir()
	ports, err := freePorts(3)
	if err != nil {
		return "", err
	}
	client, peer, secure := ports[0], ports[1], ports[2]
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	server := "https://127.0.0.1:" + strconv.Itoa(secure)
	pki, err := lab.MakeAPIServerPKI(filepath.Join(dir, "pki"), server)
	if err != nil {
		return "", err
	}
	etcd, err := startDaemon(t, dir, "etcd", etcdBin, "--name", "test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test="+peerURL, "--unsafe-no-fsync")
	if err != nil {
		return "", err
	}
	api, err := startDaemon(t, dir, "kube-apiserver", apiserverBin,
		"--etcd-servers", clientURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(secure), "--cert-dir", filepath.Join(dir, "certs"),
		"--tls-cert-file", pki.ServerCert, "--tls-private-key-file", pki.ServerKey, "--client-ca-file", pki.CA,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki.SAPub, "--service-account-signing-key-file", pki.SAKey,
		"--service-cluster-ip-range", "198.19.1.0/24", "--authorization-mode", "RBAC",
		"--disable-admission-plugins", "ServiceAccount", "--anonymous-auth=false", "--profiling=false")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := waitReady(ctx, pki.AdminKubeconfig, etcd, api); err != nil {
		return "", err
	}
	return pki.AdminKubeconfig, nil
}

// daemon is one process of the control plane.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// tail is the end of the daemon's log, for an error message.
func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(bytes.TrimSpace(b))
}

// startDaemon starts bin in its own process group, logging to
// dir/<name>.log; it is stopped (SIGTERM, then SIGKILL after 15s) when t
// ends.
func startDaemon(t testing.TB, dir, name, bin string, args ...string) (*daemon, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); logf.Close(); close(d.done) }()
	t.Cleanup(func() {
		if d.exited() {
			return
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
	})
	return d, nil
}

// waitReady polls the apiserver's /readyz until it answers ok, failing
// early if a daemon exits.
func waitReady(ctx context.Context, kubeconfig string, daemons ...*daemon) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	var last error
	for {
		for _, d := range daemons {
			if d.exited() {
				return fmt.Errorf("%s exited (%v): %s", d.name, d.err, d.tail())
			}
		}
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = fmt.Errorf("readyz: %v %s", err, body)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %v; its log: %s", last, daemons[len(daemons)-1].tail())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct loopback ports free at the time of the call.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
