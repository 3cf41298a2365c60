package mtls

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestCLIRoundTrip: certs init, certs issue and certs show, as the command
// runs them: the files land with their modes, load as a Source, and show
// says what they hold.
func TestCLIRoundTrip(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	outDir := filepath.Join(t.TempDir(), "h1")
	caCert, caKey, err := InitCA(InitCARequest{Dir: caDir, Name: "escape-ca", Validity: 87600 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if mode(t, caKey) != 0o600 || mode(t, caCert) != 0o644 || mode(t, caDir) != 0o700 {
		t.Errorf("modes: key %o cert %o dir %o", mode(t, caKey), mode(t, caCert), mode(t, caDir))
	}
	f, err := IssueFiles(IssueRequest{CADir: caDir, OutDir: outDir, Role: "agent", Name: "h1",
		DNS: []string{"h1.lab"}, IPs: []string{"198.18.0.11"}, Validity: 8760 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if f != IssuedFiles(outDir, "h1") {
		t.Errorf("files %+v", f)
	}
	if mode(t, f.Key) != 0o600 || mode(t, f.Cert) != 0o644 || mode(t, f.CA) != 0o644 {
		t.Errorf("modes: key %o cert %o ca %o", mode(t, f.Key), mode(t, f.Cert), mode(t, f.CA))
	}
	caPEM, _ := os.ReadFile(caCert)
	if copied, _ := os.ReadFile(f.CA); !bytes.Equal(copied, caPEM) {
		t.Error("out-dir/ca.crt is not the CA's certificate")
	}
	src, err := NewSource(f)
	if err != nil {
		t.Fatal(err)
	}
	if src.Identity() != agentH1 {
		t.Errorf("identity %s", src.Identity())
	}
	if d := time.Until(src.NotAfter()); d < 8759*time.Hour || d > 8761*time.Hour {
		t.Errorf("valid for %s, want 8760h", d)
	}

	var out bytes.Buffer
	if err := ShowCertificate(&out, f.Cert, time.Now()); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "show", out.String(), "agent/h1 (spiffe://escape.mtd/agent/h1)", "h1, h1.lab", "198.18.0.11",
		"server, client", "CN=escape-ca", "valid (", "left)")
	out.Reset()
	if err := ShowCertificate(&out, f.Cert, time.Now().Add(9000*time.Hour)); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "show a year on", out.String(), "EXPIRED")
	out.Reset()
	if err := ShowCertificate(&out, caCert, time.Now()); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "show CA", out.String(), "none (a CA)", "ca:          true")
}

// TestCLIRefusesToOverwriteKeys: a second init or issue leaves the key it
// would replace as it was, unless forced.
func TestCLIRefusesToOverwriteKeys(t *testing.T) {
	caDir, outDir := t.TempDir(), t.TempDir()
	_, caKey, err := InitCA(InitCARequest{Dir: caDir, Name: "escape-ca", Validity: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(caKey)
	if _, _, err := InitCA(InitCARequest{Dir: caDir, Name: "escape-ca", Validity: 1000 * time.Hour}); err == nil ||
		!strings.Contains(err.Error(), "refusing to replace a key (--force replaces it)") {
		t.Fatalf("second init: %v", err)
	}
	if after, _ := os.ReadFile(caKey); !bytes.Equal(before, after) {
		t.Fatal("the refused init changed the CA key")
	}
	req := IssueRequest{CADir: caDir, OutDir: outDir, Role: "plane", Name: "plane", Validity: time.Hour}
	f, err := IssueFiles(req)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(f.Key)
	if _, err := IssueFiles(req); err == nil || !strings.Contains(err.Error(), "plane.key exists") {
		t.Fatalf("second issue: %v", err)
	}
	if again, _ := os.ReadFile(f.Key); !bytes.Equal(key, again) {
		t.Fatal("the refused issue changed the key")
	}
	req.Force = true
	if _, err := IssueFiles(req); err != nil {
		t.Fatal(err)
	}
	if forced, _ := os.ReadFile(f.Key); bytes.Equal(key, forced) {
		t.Fatal("--force kept the old key")
	}
	// An out-dir trusting another CA keeps its ca.crt unless forced.
	otherCA := t.TempDir()
	if _, _, err := InitCA(InitCARequest{Dir: otherCA, Name: "other-ca", Validity: 1000 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueFiles(IssueRequest{CADir: otherCA, OutDir: outDir, Role: "agent", Name: "h2", Validity: time.Hour}); err == nil ||
		!strings.Contains(err.Error(), "holds another CA's certificate") {
		t.Fatalf("issue under another CA into the same out-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outDir, "h2.key")); !os.IsNotExist(err) {
		t.Errorf("the refused issue wrote a key: %v", err)
	}
	if _, _, err := InitCA(InitCARequest{Dir: caDir, Name: "escape-ca", Validity: 1000 * time.Hour, Force: true}); err != nil {
		t.Fatalf("forced init: %v", err)
	}
}

// TestCLIRefusesGarbage: each bad flag is named in the error, and nothing
// is written.
func TestCLIRefusesGarbage(t *testing.T) {
	caDir := t.TempDir()
	if _, _, err := InitCA(InitCARequest{Dir: caDir, Name: "escape-ca", Validity: 1000 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	ok := IssueRequest{CADir: caDir, Role: "agent", Name: "h1", Validity: time.Hour}
	cases := []struct {
		name string
		edit func(r *IssueRequest)
		says string
	}{
		{"unknown role", func(r *IssueRequest) { r.Role = "admin" }, `--role: unknown role "admin"`},
		{"bad name", func(r *IssueRequest) { r.Name = "H1!" }, `--name: identity agent/H1!: bad name "H1!"`},
		{"bad ip", func(r *IssueRequest) { r.IPs = []string{"198.18.0.300"} }, `--ip "198.18.0.300": not an IP address`},
		{"bad dns", func(r *IssueRequest) { r.DNS = []string{"h1 lab"} }, `bad DNS name "h1 lab"`},
		{"operator with ip", func(r *IssueRequest) { r.Role, r.IPs = "operator", []string{"198.18.0.11"} }, "operator certificate carries no DNS or IP"},
		{"zero validity", func(r *IssueRequest) { r.Validity = 0 }, "--validity 0s"},
		{"too long", func(r *IssueRequest) { r.Validity = 100000 * time.Hour }, "would outlive its CA"},
		{"no CA", func(r *IssueRequest) { r.CADir = filepath.Join(caDir, "absent") }, "absent/ca.crt: no such file"},
		{"unreadable CA", func(r *IssueRequest) {
			r.CADir = t.TempDir()
			os.WriteFile(filepath.Join(r.CADir, "ca.crt"), []byte("junk"), 0o644)
		}, "ca.crt: no PEM data found"},
		{"no out-dir", func(r *IssueRequest) { r.OutDir = "" }, "--ca-dir and --out-dir"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			r.OutDir = filepath.Join(t.TempDir(), "out")
			tc.edit(&r)
			_, err := IssueFiles(r)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("IssueFiles: %v, want an error saying %q", err, tc.says)
			}
			if r.OutDir != "" {
				if _, err := os.Stat(r.OutDir); !os.IsNotExist(err) {
					t.Errorf("the refused issue made %s: %v", r.OutDir, err)
				}
			}
		})
	}
	if _, _, err := InitCA(InitCARequest{Dir: t.TempDir(), Name: "Escape CA", Validity: time.Hour}); err == nil || !strings.Contains(err.Error(), "bad name") {
		t.Errorf("init with a bad name: %v", err)
	}
	if _, _, err := InitCA(InitCARequest{Name: "escape-ca", Validity: time.Hour}); err == nil || !strings.Contains(err.Error(), "--dir") {
		t.Errorf("init without --dir: %v", err)
	}
	var out bytes.Buffer
	if err := ShowCertificate(&out, filepath.Join(caDir, "ca.key"), time.Now()); err == nil || !strings.Contains(err.Error(), "is a private key, not a certificate") {
		t.Errorf("show of a key: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.crt")
	os.WriteFile(junk, []byte("junk"), 0o644)
	if err := ShowCertificate(&out, junk, time.Now()); err == nil || !strings.Contains(err.Error(), "no PEM data found") {
		t.Errorf("show of junk: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("refused shows printed %q", out.String())
	}
}
