package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// Credentials are how the agent talks to the kubelet and the API server:
// a bearer token (the DaemonSet's service account token, re-read on every
// call so a rotated token is picked up) and the CA that signed their
// serving certificates.
type Credentials struct {
	TokenFile string
	CAFile    string
}

// ErrForbidden is wrapped when the kubelet or the API server refuses the
// caller (401/403): the credential lacks nodes/checkpoint or pod rights.
var ErrForbidden = migrate.ErrPodForbidden

// ErrNotFound is wrapped when the pod, the container or a safe checkpoint
// of it does not exist.
var ErrNotFound = migrate.ErrPodNotFound

// apiClient is an HTTPS client with the credentials' CA and token.
type apiClient struct {
	base  string
	creds Credentials
	http  *http.Client
}

func newAPIClient(base string, creds Credentials) (*apiClient, error) {
	pem, err := os.ReadFile(creds.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA %s: %w", creds.CAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA %s holds no PEM certificate", creds.CAFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &apiClient{base: strings.TrimSuffix(base, "/"), creds: creds,
		http: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// do sends method path with body (JSON, or nil) and decodes a 2xx answer
// into out (if not nil). Errors carry the status and the server's message.
func (a *apiClient) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	tok, err := os.ReadFile(a.creds.TokenFile)
	if err != nil {
		return fmt.Errorf("read token %s: %w", a.creds.TokenFile, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 500 {
		msg = msg[:500]
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%s %s: %w (%s): %s", method, path, ErrForbidden, resp.Status, msg)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s %s: %w: %s", method, path, ErrNotFound, msg)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Kubelet is the kubelet of the agent's own node.
type Kubelet struct{ api *apiClient }

// NewKubelet talks to the kubelet at endpoint (https://<node>:10250).
func NewKubelet(endpoint string, creds Credentials) (*Kubelet, error) {
	a, err := newAPIClient(endpoint, creds)
	if err != nil {
		return nil, fmt.Errorf("kubelet client: %w", err)
	}
	return &Kubelet{api: a}, nil
}

// Checkpoint asks the kubelet to checkpoint a pod's container and returns
// the archive's path as the kubelet names it (under its root directory,
// /var/lib/kubelet/checkpoints). The container keeps running.
func (k *Kubelet) Checkpoint(ctx context.Context, namespace, pod, container string, timeout time.Duration) (string, error) {
	for _, s := range []string{namespace, pod, container} {
		if s == "" || strings.ContainsAny(s, "/?#%") {
			return "", fmt.Errorf("checkpoint %s/%s/%s: bad name %q", namespace, pod, container, s)
		}
	}
	p := "/checkpoint/" + url.PathEscape(namespace) + "/" + url.PathEscape(pod) + "/" + url.PathEscape(container)
	if timeout > 0 {
		p += fmt.Sprintf("?timeout=%d", int(timeout.Seconds()+0.5))
	}
	var out struct {
		Items []string `json:"items"`
	}
	if err := k.api.do(ctx, http.MethodPost, p, nil, &out); err != nil {
		return "", fmt.Errorf("checkpoint %s/%s/%s through the kubelet: %w", namespace, pod, container, err)
	}
	if len(out.Items) != 1 || !strings.HasPrefix(out.Items[0], "/") {
		return "", fmt.Errorf("checkpoint %s/%s/%s: the kubelet answered %v, not one archive path", namespace, pod, container, out.Items)
	}
	return out.Items[0], nil
}
