package mtls

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// serverSerial dials addr afresh (a new handshake) and returns the serial
// of the certificate the server presented.
func serverSerial(t *testing.T, client *Source, addr string) string {
	t.Helper()
	serial, err := healthCheck(dialGRPC(t, client, addr, agentH1))
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	return serial
}

// rotate atomically replaces f's certificate and key with a fresh
// identity from ca, returning the new certificate's serial.
func rotate(t *testing.T, f Files, ca *CA, id Identity, opts ...IssueOption) string {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.Cert, certPEM)
	writeFile(t, f.Key, keyPEM)
	return serialOfPEM(t, certPEM)
}

// TestReloadRotatesLeafWithoutRestart: the agent's certificate and key
// are replaced on disk (atomic renames) while its server runs; the next
// connection is served with the new certificate, and the reload is logged
// with the new expiry.
func TestReloadRotatesLeafWithoutRestart(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	sf := writeIdentity(t, ca, agentH1)
	server := newObserved(t, sf, WithReloadCheck(0))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))

	before := serverSerial(t, client.Source, gs.addr)
	newNotAfter := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	want := rotate(t, sf, ca, agentH1, WithValidity(time.Now().Add(-time.Minute), newNotAfter))
	if before == want {
		t.Fatal("the rotation reissued the same serial")
	}
	if got := serverSerial(t, client.Source, gs.addr); got != want {
		t.Fatalf("after rotation the server presents %s, want %s (was %s)", got, want, before)
	}
	if !server.NotAfter().Equal(newNotAfter) {
		t.Errorf("NotAfter() = %s, want %s", server.NotAfter(), newNotAfter)
	}
	logs := server.logs.FilterMessage("mtls: reloaded certificate").FilterLevelExact(zapcore.InfoLevel).All()
	if len(logs) != 1 {
		t.Fatalf("%d reload log lines, want 1", len(logs))
	}
	if got, _ := logs[0].ContextMap()["not_after"].(time.Time); !got.Equal(newNotAfter) {
		t.Errorf("reload logged not_after %v, want %s", logs[0].ContextMap()["not_after"], newNotAfter)
	}
	if n := server.metric(t, "escape_tls_certificate_not_after_timestamp_seconds", "identity", "agent/h1"); n != float64(newNotAfter.Unix()) {
		t.Errorf("expiry gauge %v, want %d", n, newNotAfter.Unix())
	}
}

// TestReloadRotatesCA: a new CA is added to the trust bundle and the
// agent's certificate reissued under it, live. New handshakes present the
// new certificate, and a client certified by the new CA, refused before,
// is now let in: the server's CA pool was reloaded too.
func TestReloadRotatesCA(t *testing.T) {
	oldCA := newTestCA(t, "escape-ca-1")
	newCA := newTestCA(t, "escape-ca-2")
	sf := writeIdentity(t, oldCA, agentH1)
	server := newObserved(t, sf, WithReloadCheck(0))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	oldClient := newObserved(t, writeIdentityIn(t, t.TempDir(), bundle(oldCA, newCA), oldCA, thePlane))
	newClient := newObserved(t, writeIdentityIn(t, t.TempDir(), bundle(oldCA, newCA), newCA, thePlane))

	serverSerial(t, oldClient.Source, gs.addr)
	if _, err := healthCheck(dialGRPC(t, newClient.Source, gs.addr, agentH1)); err == nil ||
		!strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("a client of the new CA before the rotation: %v, want unknown certificate authority", err)
	}

	writeFile(t, sf.CA, bundle(oldCA, newCA))
	want := rotate(t, sf, newCA, agentH1)
	if got := serverSerial(t, oldClient.Source, gs.addr); got != want {
		t.Fatalf("after the CA rotation the server presents %s, want %s", got, want)
	}
	if _, err := healthCheck(dialGRPC(t, newClient.Source, gs.addr, agentH1)); err != nil {
		t.Fatalf("a client of the new CA after the rotation: %v", err)
	}
	if n := server.metric(t, "escape_tls_reload_errors_total"); n != 0 {
		t.Errorf("%v reload errors", n)
	}
}

// k8sSecret lays out a directory as the kubelet mounts a Secret: the files
// live in a timestamped directory, ..data points at it, and each name is a
// symlink through ..data.
type k8sSecret struct {
	dir string
	gen int
}

func (k *k8sSecret) publish(t *testing.T, caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	k.gen++
	gen := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", k.gen, os.Getpid())
	if err := os.Mkdir(filepath.Join(k.dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.crt": caPEM, "tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(k.dir, gen, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(k.dir, "..data"))
	// The kubelet's swap: a new link, renamed over ..data in one step.
	if err := os.Symlink(gen, filepath.Join(k.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(k.dir, "..data_tmp"), filepath.Join(k.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.crt", "tls.crt", "tls.key"} {
		link := filepath.Join(k.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReloadKubernetesSecretSwap: the certificate is rotated the way the
// kubelet updates a mounted Secret, by swapping the ..data symlink; the
// file names the Source watches never change, yet the next handshake sees
// the new certificate.
func TestReloadKubernetesSecretSwap(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	k := &k8sSecret{dir: t.TempDir()}
	certPEM, keyPEM, err := ca.Issue(agentH1)
	if err != nil {
		t.Fatal(err)
	}
	k.publish(t, ca.CertPEM(), certPEM, keyPEM)
	server := newObserved(t, SecretFiles(k.dir), WithReloadCheck(0))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))
	if got, want := serverSerial(t, client.Source, gs.addr), serialOfPEM(t, certPEM); got != want {
		t.Fatalf("server presents %s, want %s", got, want)
	}

	certPEM2, keyPEM2, err := ca.Issue(agentH1)
	if err != nil {
		t.Fatal(err)
	}
	k.publish(t, ca.CertPEM(), certPEM2, keyPEM2)
	if got, want := serverSerial(t, client.Source, gs.addr), serialOfPEM(t, certPEM2); got != want {
		t.Fatalf("after the ..data swap the server presents %s, want %s", got, want)
	}
}

// TestReloadKeepsLastGoodMaterial: a corrupt certificate, then a key that
// is not the certificate's (a rotation half done), then a certificate of
// another identity: each time the server goes on with the last good
// material, logs the failure at error level and counts it, once per
// change of the files. Mended files are picked up.
func TestReloadKeepsLastGoodMaterial(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	sf := writeIdentity(t, ca, agentH1)
	good, _ := os.ReadFile(sf.Cert)
	server := newObserved(t, sf, WithReloadCheck(0))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))
	want := serverSerial(t, client.Source, gs.addr)

	otherCert, otherKey, err := ca.Issue(agentH1)
	if err != nil {
		t.Fatal(err)
	}
	h2Cert, h2Key, err := ca.Issue(agentH2)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		cert, key []byte // nil: leave as is
		says      string
	}{
		{"corrupt certificate", []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), nil, "certificate file"},
		{"key of another certificate", good, otherKey, "is not the key of certificate"},
		{"another identity", h2Cert, h2Key, "identity changes only with a restart"},
	}
	for i, st := range steps {
		if st.cert != nil {
			writeFile(t, sf.Cert, st.cert)
		}
		if st.key != nil {
			writeFile(t, sf.Key, st.key)
		}
		// Two handshakes on unchanged bad files: reported once.
		for range 2 {
			if got := serverSerial(t, client.Source, gs.addr); got != want {
				t.Fatalf("%s: server presents %s, want the last good %s", st.name, got, want)
			}
		}
		if n := server.metric(t, "escape_tls_reload_errors_total"); n != float64(i+1) {
			t.Fatalf("%s: %v reload errors counted, want %d", st.name, n, i+1)
		}
		logs := server.logs.FilterMessage("mtls: reload failed, keeping the certificate in use").FilterLevelExact(zapcore.ErrorLevel).All()
		if len(logs) != i+1 {
			t.Fatalf("%s: %d reload error lines, want %d", st.name, len(logs), i+1)
		}
		mustContain(t, st.name+" log", fmt.Sprint(logs[i].ContextMap()["error"]), st.says)
		if server.Identity() != agentH1 {
			t.Fatalf("%s: identity became %s", st.name, server.Identity())
		}
	}
	writeFile(t, sf.Cert, otherCert)
	writeFile(t, sf.Key, otherKey)
	if got, want := serverSerial(t, client.Source, gs.addr), serialOfPEM(t, otherCert); got != want {
		t.Fatalf("mended files: server presents %s, want %s", got, want)
	}
}

// TestReloadCheckInterval: within WithReloadCheck's interval a changed
// file is not looked at; Reload loads it at once.
func TestReloadCheckInterval(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	sf := writeIdentity(t, ca, agentH1)
	server := newObserved(t, sf, WithReloadCheck(time.Hour))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))
	before := serverSerial(t, client.Source, gs.addr)
	want := rotate(t, sf, ca, agentH1)
	if got := serverSerial(t, client.Source, gs.addr); got != before {
		t.Fatalf("within the check interval the server already presents %s", got)
	}
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serverSerial(t, client.Source, gs.addr); got != want {
		t.Fatalf("after Reload the server presents %s, want %s", got, want)
	}
	writeFile(t, sf.Key, []byte("garbage"))
	if err := server.Reload(); err == nil || !strings.Contains(err.Error(), "no PEM data found") {
		t.Fatalf("Reload of a garbage key: %v", err)
	}
	if got := serverSerial(t, client.Source, gs.addr); got != want {
		t.Fatalf("after a failed Reload the server presents %s, want %s", got, want)
	}
}
