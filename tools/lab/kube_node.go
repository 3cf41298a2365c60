package lab

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// The node's components, their settings and how they start: each a daemon
// in the node host's namespaces (nsenter, its own session), logging to the
// host's log directory, its pid in the host's run directory for Down.

const (
	insidePKI     = InsideKubeDir + "/pki"
	etcdClientURL = "https://127.0.0.1:2379"
	// insideKubectlCache is kubectl's discovery cache, in the host's /run.
	insideKubectlCache = "/run/kubectl-cache"
)

// kubeArgs are each component's command line, inside the node host.
func kubeArgs(k *Kubernetes, h Host) map[string][]string {
	pki := func(f string) string { return insidePKI + "/" + f }
	conf := func(f string) string { return InsideKubeDir + "/" + f }
	ip := h.IP.String()
	return map[string][]string{
		"etcd": {k.Etcd, "--name", k.NodeName, "--data-dir", "/var/lib/etcd",
			"--listen-client-urls", etcdClientURL, "--advertise-client-urls", etcdClientURL,
			// One member: the peer port, on the host's loopback, has no peer to serve.
			"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--initial-cluster", k.NodeName + "=http://127.0.0.1:2380",
			"--cert-file", pki("etcd-server.crt"), "--key-file", pki("etcd-server.key"),
			"--client-cert-auth", "--trusted-ca-file", pki("ca.crt")},
		"kube-apiserver": {filepath.Join(k.BinDir, "kube-apiserver"),
			"--advertise-address", ip, "--bind-address", ip, "--secure-port", strconv.Itoa(KubeAPIPort),
			"--etcd-servers", etcdClientURL, "--etcd-cafile", pki("ca.crt"),
			"--etcd-certfile", pki("apiserver-etcd-client.crt"), "--etcd-keyfile", pki("apiserver-etcd-client.key"),
			"--service-cluster-ip-range", k.ServiceCIDR.String(),
			"--client-ca-file", pki("ca.crt"), "--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
			"--kubelet-client-certificate", pki("apiserver-kubelet-client.crt"), "--kubelet-client-key", pki("apiserver-kubelet-client.key"),
			"--kubelet-certificate-authority", pki("ca.crt"), "--kubelet-preferred-address-types", "InternalIP",
			"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file", pki("sa.pub"), "--service-account-signing-key-file", pki("sa.key"),
			"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
			"--allow-privileged=true", "--anonymous-auth=false", "--profiling=false"},
		"kube-controller-manager": {filepath.Join(k.BinDir, "kube-controller-manager"),
			"--kubeconfig", conf("controller-manager.conf"),
			"--authentication-kubeconfig", conf("controller-manager.conf"), "--authorization-kubeconfig", conf("controller-manager.conf"),
			"--bind-address", "127.0.0.1", "--leader-elect=false", "--use-service-account-credentials=true",
			"--service-account-private-key-file", pki("sa.key"), "--root-ca-file", pki("ca.crt"),
			"--service-cluster-ip-range", k.ServiceCIDR.String(), "--allocate-node-cidrs=false", "--profiling=false"},
		"kube-scheduler": {filepath.Join(k.BinDir, "kube-scheduler"),
			"--kubeconfig", conf("scheduler.conf"),
			"--authentication-kubeconfig", conf("scheduler.conf"), "--authorization-kubeconfig", conf("scheduler.conf"),
			"--bind-address", "127.0.0.1", "--leader-elect=false", "--profiling=false"},
		"kubelet": {filepath.Join(k.BinDir, "kubelet"),
			"--config", conf("kubelet.yaml"), "--kubeconfig", conf("kubelet.conf"),
			"--node-ip", ip, "--hostname-override", k.NodeName, "--root-dir", "/var/lib/kubelet"},
	}
}

// kubeletConfig is the kubelet's configuration file. These hosts are
// cgroup v1 (hybrid) without systemd: failCgroupV1 off, the cgroupfs
// driver. protectKernelDefaults makes the kubelet check the kernel
// tunables it wants instead of setting them (they are global to the
// machine); maskKernelTunables shows it, inside its host, the values it
// checks for.
func kubeletConfig(k *Kubernetes, h Host) []byte {
	return fmt.Appendf(nil, `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s/ca.crt
authorization:
  mode: Webhook
tlsCertFile: %s/kubelet.crt
tlsPrivateKeyFile: %s/kubelet.key
podLogsDir: /var/log/pods
protectKernelDefaults: true
oomScoreAdj: 0
failSwapOn: false
resolvConf: /etc/resolv.conf
makeIPTablesUtilChains: true
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
`, k.CgroupRoot, InsideContainerd, h.IP, insidePKI, insidePKI, insidePKI)
}

// cniConfig gives pods addresses of the pod range on a bridge of the node
// host, masqueraded behind the host's address when they leave it.
func cniConfig(k *Kubernetes) []byte {
	return fmt.Appendf(nil, `{
  "cniVersion": "1.0.0",
  "name": "escape-lab-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    }
  ]
}
`, k.PodCIDR)
}

// writeKubeConfigs writes the node's PKI, kubeconfigs, kubelet
// configuration and CNI network before anything of it starts.
func writeKubeConfigs(inv *Inventory, h Host) error {
	k := inv.Kubernetes
	if err := makeKubePKI(k, h.IP, filepath.Join(inv.PKI.Dir, "kubernetes")); err != nil {
		return err
	}
	// etcd wants its data directory private.
	if err := os.Chmod(filepath.Join(k.Dir, "etcd"), 0o700); err != nil {
		return fmt.Errorf("kubernetes node files: %w", err)
	}
	for path, data := range map[string][]byte{
		filepath.Join(k.Dir, "etc", "kubelet.yaml"):                    kubeletConfig(k, h),
		filepath.Join(k.Dir, "cni", "net.d", "10-escape-lab.conflist"): cniConfig(k),
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("kubernetes node files: %w", err)
		}
		if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("kubernetes node files: %w", err)
		}
	}
	return nil
}

// startKubeComponent starts one component as a daemon in the node host.
func startKubeComponent(ctx context.Context, inv *Inventory, h Host, comp string) error {
	k := inv.Kubernetes
	args := kubeArgs(k, h)[comp]
	logf, err := os.OpenFile(k.Logs[comp], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", comp, err)
	}
	defer logf.Close()
	cmd := Command(context.WithoutCancel(ctx), inv, h.Name, args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + filepath.Dir(h.CRIU) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("start %s: mark inherited fds close-on-exec: %w", comp, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s on %s: %w", comp, h.Name, err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it dies while we live
	if err := atomicfile.WriteFile(k.PIDFiles[comp], []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s pid file: %w", comp, err)
	}
	return nil
}

// Kubectl returns a command that runs kubectl with args in the node host,
// as the lab's admin (the admin kubeconfig). Without a Kubernetes node in
// the lab, its Run fails and says so.
func Kubectl(ctx context.Context, inv *Inventory, args ...string) *exec.Cmd {
	if inv.Kubernetes == nil {
		cmd := exec.CommandContext(ctx, "kubectl", args...)
		cmd.Err = fmt.Errorf("the lab has no kubernetes node (run: escape-lab up --kubernetes)")
		return cmd
	}
	k := inv.Kubernetes
	// kubectl caches discovery under $HOME/.kube, which is the machine's
	// own: the host's private /run holds it instead.
	return Command(ctx, inv, k.Host, filepath.Join(k.BinDir, "kubectl"),
		append([]string{"--kubeconfig", InsideKubeconfig, "--cache-dir", insideKubectlCache}, args...)...)
}

// kubeComponentsDown lists the components whose process is not running.
func kubeComponentsDown(k *Kubernetes) []string {
	var down []string
	for _, comp := range kubeComponents {
		if pid, err := readPID(k.PIDFiles[comp]); err != nil || !alive(pid) {
			down = append(down, comp)
		}
	}
	return down
}

// waitKube polls check until it returns nil, a component dies or limit passes.
func waitKube(ctx context.Context, inv *Inventory, what string, limit time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	k := inv.Kubernetes
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		started := map[string]bool{}
		for _, comp := range kubeComponents {
			if _, serr := os.Stat(k.PIDFiles[comp]); serr == nil {
				started[comp] = true
			}
		}
		for _, comp := range kubeComponentsDown(k) {
			if started[comp] {
				return fmt.Errorf("%s exited while waiting for %s; last log lines:\n%s", comp, what, tail(k.Logs[comp], 20))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %v (last: %v); kubelet log:\n%s", what, ctx.Err(), err, tail(k.Logs["kubelet"], 10))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func kubectlOutput(ctx context.Context, inv *Inventory, args ...string) (string, error) {
	out, err := Kubectl(ctx, inv, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func waitAPIServer(ctx context.Context, inv *Inventory) error {
	return waitKube(ctx, inv, "the apiserver", time.Minute, func(ctx context.Context) error {
		out, err := kubectlOutput(ctx, inv, "get", "--raw", "/readyz")
		if err == nil && out != "ok" {
			err = fmt.Errorf("readyz says %q", out)
		}
		return err
	})
}

// waitDefaultServiceAccount waits until the controller-manager has made
// the default namespace's service account, without which the
// ServiceAccount admission refuses pods.
func waitDefaultServiceAccount(ctx context.Context, inv *Inventory) error {
	return waitKube(ctx, inv, "the default service account", time.Minute, func(ctx context.Context) error {
		_, err := kubectlOutput(ctx, inv, "get", "serviceaccount", "default", "-o", "name")
		return err
	})
}

// waitNodeReady waits until the node reports Ready.
func waitNodeReady(ctx context.Context, inv *Inventory, limit time.Duration) error {
	return waitKube(ctx, inv, "node "+inv.Kubernetes.NodeName+" Ready", limit, func(ctx context.Context) error {
		out, err := kubectlOutput(ctx, inv, "get", "node", inv.Kubernetes.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && out != "True" {
			err = fmt.Errorf("Ready is %q", out)
		}
		return err
	})
}
