package lab

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestKubeAddressesInLabRangeAndApart(t *testing.T) {
	inv, err := plan(newConfig([]Option{WithName("kubeplan"), WithHosts(MaxHosts)}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{kubePodCIDR, kubeServiceCIDR} {
		if !labSubnet.Contains(p.Addr()) || !labSubnet.Contains(lastAddr(p)) {
			t.Errorf("%s is not inside the lab's %s", p, labSubnet)
		}
		if p.Overlaps(serviceRange) || p.Overlaps(kubePodCIDR) && p != kubePodCIDR {
			t.Errorf("%s overlaps another lab range", p)
		}
		for _, a := range []netip.Addr{clientIP, planeIP, inv.Hosts[0].IP, inv.Hosts[len(inv.Hosts)-1].IP} {
			if p.Contains(a) {
				t.Errorf("%s holds the lab machine address %s", p, a)
			}
		}
	}
	if !kubeServiceCIDR.Contains(kubeServiceIP) || kubeServiceIP != kubeServiceCIDR.Addr().Next() {
		t.Errorf("the kubernetes service address %s is not the first of %s", kubeServiceIP, kubeServiceCIDR)
	}
	if kubePauseRef != ImageRef("pause") {
		t.Errorf("sandbox image %s, want %s", kubePauseRef, ImageRef("pause"))
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(a)
}

// TestKubePKI makes the node's PKI and checks each certificate's chain,
// identity and addresses, and that the kubeconfigs carry them.
func TestKubePKI(t *testing.T) {
	dir := t.TempDir()
	inv, err := plan(newConfig([]Option{WithName("kubepki"), WithRoot(dir)}))
	if err != nil {
		t.Fatal(err)
	}
	k := planKube(newConfig([]Option{WithName("kubepki"), WithRoot(dir)}), inv)
	h := inv.Hosts[0]
	caDir := filepath.Join(dir, "pki", "kubernetes")
	if err := makeKubePKI(k, h.IP, caDir); err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(k.Dir, "etc", "pki")
	if _, err := os.Stat(filepath.Join(pki, "ca.key")); err == nil {
		t.Error("the Kubernetes CA key was given to the node's host")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mustRead(t, filepath.Join(pki, "ca.crt")))
	for _, want := range kubeCerts(k, h.IP) {
		cert := parseCert(t, mustRead(t, filepath.Join(pki, want.file+".crt")))
		usage := x509.ExtKeyUsageClientAuth
		if want.server {
			usage = x509.ExtKeyUsageServerAuth
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s: %v", want.file, err)
		}
		if cert.Subject.CommonName != want.cn || !slices.Equal(cert.Subject.Organization, want.orgs) {
			t.Errorf("%s: subject %s, want CN=%s O=%v", want.file, cert.Subject, want.cn, want.orgs)
		}
		if want.server {
			for _, ip := range want.ips {
				if err := cert.VerifyHostname(ip.String()); err != nil {
					t.Errorf("%s: %v", want.file, err)
				}
			}
		}
		if st, err := os.Stat(filepath.Join(pki, want.file+".key")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s.key: %v %v", want.file, st.Mode(), err)
		}
	}
	if err := parseCert(t, mustRead(t, filepath.Join(pki, "apiserver.crt"))).VerifyHostname("kubernetes.default.svc"); err != nil {
		t.Errorf("apiserver: %v", err)
	}
	for file, user := range kubeconfigs {
		var kc struct {
			Clusters []struct {
				Cluster struct {
					Server string `yaml:"server"`
				} `yaml:"cluster"`
			} `yaml:"clusters"`
			Users []struct {
				User struct {
					Cert string `yaml:"client-certificate-data"`
				} `yaml:"user"`
			} `yaml:"users"`
		}
		if err := yaml.Unmarshal(mustRead(t, filepath.Join(k.Dir, "etc", file)), &kc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(kc.Clusters) != 1 || kc.Clusters[0].Cluster.Server != "https://"+h.IP.String()+":6443" || len(kc.Users) != 1 {
			t.Errorf("%s: %+v", file, kc)
			continue
		}
		if !strings.Contains(string(mustRead(t, filepath.Join(pki, user+".crt"))), "CERTIFICATE") || kc.Users[0].User.Cert == "" {
			t.Errorf("%s has no certificate for %s", file, user)
		}
	}
}

// TestKubeConfigFiles checks that the kubelet's configuration and the CNI
// network parse, and say what the node relies on.
func TestKubeConfigFiles(t *testing.T) {
	inv, err := plan(newConfig([]Option{WithName("kubecfg")}))
	if err != nil {
		t.Fatal(err)
	}
	k := planKube(newConfig([]Option{WithName("kubecfg")}), inv)
	var kc map[string]any
	if err := yaml.Unmarshal(kubeletConfig(k, inv.Hosts[0]), &kc); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{"failCgroupV1": false, "cgroupDriver": "cgroupfs", "cgroupRoot": "/kubecfg/h1",
		"protectKernelDefaults": true, "address": inv.Hosts[0].IP.String(), "readOnlyPort": 0} {
		if kc[key] != want {
			t.Errorf("kubelet %s = %v, want %v", key, kc[key], want)
		}
	}
	var cni struct {
		Plugins []struct {
			Type string
			IPAM struct {
				Ranges [][]struct{ Subnet string }
			}
		}
	}
	if err := json.Unmarshal(cniConfig(k), &cni); err != nil {
		t.Fatal(err)
	}
	if len(cni.Plugins) != 1 || cni.Plugins[0].Type != "bridge" || cni.Plugins[0].IPAM.Ranges[0][0].Subnet != kubePodCIDR.String() {
		t.Errorf("cni config: %+v", cni)
	}
	for _, m := range k.binds() {
		if !strings.HasPrefix(m[0], k.Dir+"/") || !filepath.IsAbs(m[1]) {
			t.Errorf("bind %v: not from the node's directory to a fixed path", m)
		}
	}
}

func TestParseKubeMountpoints(t *testing.T) {
	got, err := parseKubeMountpoints([]byte("/etc/cni\n/etc/cni/net.d\n/var/log/pods\n"))
	if err != nil || !slices.Equal(got, []string{"/etc/cni", "/etc/cni/net.d", "/var/log/pods"}) {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"/\n", "relative/dir\n", "/etc/../var\n", "/var/lib//kubelet\n", "/ok\n/\n"} {
		if got, err := parseKubeMountpoints([]byte(bad)); err == nil {
			t.Errorf("%q accepted: %v", bad, got)
		}
	}
}

func FuzzParseKubeMountpoints(f *testing.F) {
	for _, seed := range []string{"/etc/cni\n/etc/cni/net.d\n", "", "/\n", "a/b", "/x/../y\n", "/a\x00b\n"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dirs, err := parseKubeMountpoints(data)
		if err != nil {
			return
		}
		for _, d := range dirs {
			if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
				t.Fatalf("accepted %q", d)
			}
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
