package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// With WithKubernetes, the first lab host also runs a real single-node
// Kubernetes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
// and the kubelet, all inside that host's network and mount namespaces,
// on the host's own containerd with its CRI plugin on. Nothing of it runs
// in the root namespace: the apiserver listens on the host's fabric
// address, the pods get addresses of the lab's range, and every directory
// the kubelet and containerd's CRI write at fixed places (/var/lib/kubelet,
// /var/log/pods, /var/log/containers, /var/lib/cni, ...) is, inside the
// host, a bind of a directory under the lab's root.

// Addresses of the Kubernetes node, from the lab's 198.18.0.0/15 and clear
// of what the rest of the lab uses (198.18.0.x machines, 198.18.1.0/24
// services; the arp tests' stations at 198.19.254.x live in namespaces of
// their own).
var (
	kubePodCIDR     = netip.MustParsePrefix("198.19.0.0/24")
	kubeServiceCIDR = netip.MustParsePrefix("198.19.1.0/24")
	// kubeServiceIP is the first address of the service range, which the
	// apiserver gives the "kubernetes" service.
	kubeServiceIP = netip.MustParseAddr("198.19.1.1")
)

const (
	// DefaultKubeVersion is the Kubernetes release the lab builds and runs.
	DefaultKubeVersion = "v1.36.3"
	// DefaultKubeCache is where the built binaries are kept, by version.
	DefaultKubeCache = "/var/cache/escape/kubernetes"
	// KubeAPIPort is the apiserver's port on the node host's address.
	KubeAPIPort = 6443
	// InsideKubeDir is the node host's /etc/kubernetes (configs, kubeconfigs, pki).
	InsideKubeDir = "/etc/kubernetes"
	// InsideKubeconfig is the admin kubeconfig as the node host sees it.
	InsideKubeconfig = InsideKubeDir + "/admin.conf"
	// KubeNamespace is containerd's namespace for the CRI's containers and images.
	KubeNamespace = "k8s.io"
)

// Kubernetes describes the lab's Kubernetes node (Inventory.Kubernetes).
// Paths are of the root namespace unless the field says inside.
type Kubernetes struct {
	Version string `json:"version"`
	// Host is the lab host the node runs in (its namespaces); NodeName the
	// node's name in the API.
	Host     string `json:"host"`
	NodeName string `json:"node_name"`
	// BinDir holds the Kubernetes binaries (the cache of this version);
	// the host sees them at the same path.
	BinDir string `json:"bin_dir"`
	Etcd   string `json:"etcd"`
	// Server is the apiserver's URL, reachable from the lab's namespaces.
	Server string `json:"server"`
	// Kubeconfig is the admin kubeconfig (InsideKubeconfig inside the host).
	Kubeconfig  string       `json:"kubeconfig"`
	PodCIDR     netip.Prefix `json:"pod_cidr"`
	ServiceCIDR netip.Prefix `json:"service_cidr"`
	// CgroupRoot is the kubelet's cgroupRoot: its pods live under
	// <CgroupRoot>/kubepods in every hierarchy.
	CgroupRoot string `json:"cgroup_root"`
	// Dir is the node's directory under the lab root: every directory the
	// node writes inside the host is a bind of one under it.
	Dir string `json:"dir"`
	// Images are the references imported into the host's containerd in
	// namespace KubeNamespace, by lab image name ("pause" is the sandbox).
	Images map[string]string `json:"images"`
	// PIDFiles and Logs are each component's, by name.
	PIDFiles map[string]string `json:"pid_files"`
	Logs     map[string]string `json:"logs"`
}

// kubeComponents in the order they start; Down stops them in reverse.
var kubeComponents = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}

// kubeBinaries are the binaries built from k8s.io/kubernetes.
var kubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"}

// kubeMount is a directory the node writes at a fixed path inside its host,
// bound there from Sub under Kubernetes.Dir.
type kubeMount struct{ Sub, Inside string }

// kubeMounts are the node's fixed paths. The kubelet writes
// /var/log/containers and /var/lib/kubelet/device-plugins whatever its
// configuration says, and the CRI plugin /var/lib/cni: inside the host
// these land in the lab's directory, never on the machine's own.
var kubeMounts = []kubeMount{
	{"etc", InsideKubeDir},
	{"etcd", "/var/lib/etcd"},
	{"kubelet", "/var/lib/kubelet"},
	{"log/pods", "/var/log/pods"},
	{"log/containers", "/var/log/containers"},
	{"cni/state", "/var/lib/cni"},
	{"cni/net.d", "/etc/cni/net.d"},
}

// WithKubernetes says whether Up also runs a single-node Kubernetes in the
// first host (off by default). Its binaries are built once per version
// into the cache (WithKubeCache), which takes minutes the first time.
func WithKubernetes(on bool) Option { return func(c *config) { c.kubernetes = on } }

// WithKubeCache sets the cache of built Kubernetes binaries (DefaultKubeCache).
func WithKubeCache(dir string) Option { return func(c *config) { c.kubeCache = dir } }

func (c config) kubeCacheDir() string {
	if c.kubeCache != "" {
		return c.kubeCache
	}
	return DefaultKubeCache
}

// planKube lays the node out in inv's first host.
func planKube(c config, inv *Inventory) *Kubernetes {
	h := inv.Hosts[0]
	dir := filepath.Join(h.Dir, "kube")
	k := &Kubernetes{
		Version: DefaultKubeVersion, Host: h.Name, NodeName: h.Name,
		BinDir:      filepath.Join(c.kubeCacheDir(), DefaultKubeVersion),
		Etcd:        filepath.Join(c.prefix, "bin", "etcd"),
		Server:      "https://" + netip.AddrPortFrom(h.IP, KubeAPIPort).String(),
		Kubeconfig:  filepath.Join(dir, "etc", "admin.conf"),
		PodCIDR:     kubePodCIDR,
		ServiceCIDR: kubeServiceCIDR,
		CgroupRoot:  "/" + inv.CgroupParent + "/" + h.Name,
		Dir:         dir,
		Images:      map[string]string{"pause": kubePauseRef},
		PIDFiles:    map[string]string{},
		Logs:        map[string]string{},
	}
	for name := range inv.Images {
		k.Images[name] = inv.Images[name].Ref
	}
	for _, comp := range kubeComponents {
		k.PIDFiles[comp] = filepath.Join(filepath.Dir(h.PIDFile), comp+".pid")
		k.Logs[comp] = filepath.Join(h.LogDir, comp+".log")
	}
	return k
}

// binds are the node's directories bound at their fixed paths in its host.
func (k *Kubernetes) binds() [][2]string {
	var b [][2]string
	for _, m := range kubeMounts {
		b = append(b, [2]string{filepath.Join(k.Dir, m.Sub), m.Inside})
	}
	return b
}

// kubeMountpointsFile records the directories of the machine's own file
// system that Up created only to bind the node's directories on, inside
// the host (mkdir before a bind): Down removes them again, and no others.
func kubeMountpointsFile(c config) string { return filepath.Join(c.runDir, "kube-mountpoints") }

// makeKubeMountpoints creates the fixed paths on the machine's file system
// (where the host's mount namespace binds them), recording each directory
// it had to create before creating it, so a crash leaves nothing unknown.
func makeKubeMountpoints(c config) error {
	var created []string
	record := func() error {
		return os.WriteFile(kubeMountpointsFile(c), []byte(strings.Join(created, "\n")+"\n"), 0o644)
	}
	for _, m := range kubeMounts {
		var missing []string
		for d := m.Inside; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil {
				break
			}
			missing = append([]string{d}, missing...)
		}
		for _, d := range missing {
			created = append(created, d)
			if err := record(); err != nil {
				return fmt.Errorf("record kubernetes mount points: %w", err)
			}
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("make mount point %s: %w", d, err)
			}
		}
	}
	return record()
}

// parseKubeMountpoints reads the record of makeKubeMountpoints: one
// absolute, clean path per line, never "/". A record that is anything else
// was not written by Up, and nothing of it is trusted.
func parseKubeMountpoints(data []byte) ([]string, error) {
	var dirs []string
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		if !filepath.IsAbs(line) || filepath.Clean(line) != line || line == "/" {
			return nil, fmt.Errorf("kubernetes mount points: %q is not a directory Up creates", line)
		}
		dirs = append(dirs, line)
	}
	return dirs, nil
}

func readKubeMountpoints(c config) ([]string, error) {
	data, err := os.ReadFile(kubeMountpointsFile(c))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read kubernetes mount points: %w", err)
	}
	return parseKubeMountpoints(data)
}

// removeKubeMountpoints removes, deepest first, the directories
// makeKubeMountpoints created, if they are still empty.
func removeKubeMountpoints(c config) error {
	dirs, err := readKubeMountpoints(c)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove mount point %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// kubeMountpointsLeft lists the recorded mount points that still exist.
func kubeMountpointsLeft(c config) []string {
	dirs, err := readKubeMountpoints(c)
	if err != nil {
		return []string{err.Error()}
	}
	var left []string
	for _, d := range dirs {
		if _, err := os.Lstat(d); err == nil {
			left = append(left, "mount point "+d)
		}
	}
	return left
}

// startKube brings the node up in its host, whose containerd (with CRI)
// already runs, and waits until the node is Ready.
func startKube(ctx context.Context, c config, inv *Inventory) error {
	k := inv.Kubernetes
	h, _ := inv.Host(k.Host)
	c.log.Info("starting kubernetes", zap.String("host", h.Name), zap.String("server", k.Server))
	if err := importKubeImages(ctx, inv, h); err != nil {
		return err
	}
	if err := prepareKubeCgroups(k.CgroupRoot); err != nil {
		return err
	}
	if err := maskKernelTunables(ctx, inv, h); err != nil {
		return err
	}
	for _, comp := range kubeComponents {
		if err := startKubeComponent(ctx, inv, h, comp); err != nil {
			return err
		}
		if comp == "kube-apiserver" {
			if err := waitAPIServer(ctx, inv); err != nil {
				return err
			}
		}
	}
	if err := waitNodeReady(ctx, inv, 2*time.Minute); err != nil {
		return err
	}
	return waitDefaultServiceAccount(ctx, inv)
}
