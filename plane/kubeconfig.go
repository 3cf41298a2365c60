package plane

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"time"
)

// KubeConfig is the plane section's kubernetes key: on a cluster the
// plane learns its hosts from the Node objects (instead of the hosts
// key), runs under a coordination.k8s.io Lease so that one replica only
// acts, and records its decisions as Events on the pods (plane/kube).
type KubeConfig struct {
	// Enabled turns it on.
	Enabled bool `yaml:"enabled"`
	// Kubeconfig is a kubeconfig file; empty: the pod's service account
	// (in-cluster).
	Kubeconfig string `yaml:"kubeconfig"`
	// Namespace holds the Lease (default escape-system).
	Namespace string `yaml:"namespace"`
	// Lease is the Lease's name (default escape-plane).
	Lease string `yaml:"lease"`
	// Identity names this replica in the Lease (default: $POD_NAME, else
	// the host name).
	Identity string `yaml:"identity"`
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's leader
	// election timings (defaults 15s, 10s, 2s): a leader that cannot renew
	// within RenewDeadline stops acting; another takes over once
	// LeaseDuration has passed since the last renewal.
	LeaseDuration Duration `yaml:"lease_duration"`
	RenewDeadline Duration `yaml:"renew_deadline"`
	RetryPeriod   Duration `yaml:"retry_period"`
	// NodeSelector is a label selector of the nodes that run an agent
	// (default: every node).
	NodeSelector string `yaml:"node_selector"`
	// AgentPort is the agents' port on each node's InternalIP (default
	// 7443); a node's escape.mtd/agent-address annotation overrides it.
	AgentPort int `yaml:"agent_port"`
	// EventsPerSecond and EventBurst bound the Events posted (defaults 1
	// and 10); the excess is dropped and counted, never queued.
	EventsPerSecond float64 `yaml:"events_per_second"`
	EventBurst      int     `yaml:"event_burst"`
}

// DefaultKubeConfig is the kubernetes key with nothing set (off).
func DefaultKubeConfig() KubeConfig {
	return KubeConfig{Namespace: "escape-system", Lease: "escape-plane",
		LeaseDuration: Duration(15 * time.Second), RenewDeadline: Duration(10 * time.Second), RetryPeriod: Duration(2 * time.Second),
		AgentPort: 7443, EventsPerSecond: 1, EventBurst: 10}
}

var kubeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate checks the kubernetes key, naming each problem's key.
func (k KubeConfig) Validate() error {
	if !k.Enabled {
		return nil
	}
	var errs []error
	if k.Kubeconfig != "" && !filepath.IsAbs(k.Kubeconfig) {
		errs = append(errs, fmt.Errorf("kubernetes.kubeconfig: %q must be an absolute path", k.Kubeconfig))
	}
	if !kubeNameRE.MatchString(k.Namespace) {
		errs = append(errs, fmt.Errorf("kubernetes.namespace: %q is not a namespace name", k.Namespace))
	}
	if !kubeNameRE.MatchString(k.Lease) {
		errs = append(errs, fmt.Errorf("kubernetes.lease: %q is not a Lease name", k.Lease))
	}
	ld, rd, rp := time.Duration(k.LeaseDuration), time.Duration(k.RenewDeadline), time.Duration(k.RetryPeriod)
	if rp < 100*time.Millisecond || rd <= rp || ld <= rd || ld > 5*time.Minute {
		errs = append(errs, fmt.Errorf("kubernetes: lease_duration %v > renew_deadline %v > retry_period %v >= 100ms, lease_duration at most 5m", ld, rd, rp))
	}
	if k.AgentPort < 1 || k.AgentPort > 65535 {
		errs = append(errs, fmt.Errorf("kubernetes.agent_port: %d is not a port", k.AgentPort))
	}
	if k.EventsPerSecond <= 0 || k.EventsPerSecond > 100 || k.EventBurst < 1 || k.EventBurst > 1000 {
		errs = append(errs, fmt.Errorf("kubernetes: events_per_second %v (0..100] and event_burst %d (1..1000)", k.EventsPerSecond, k.EventBurst))
	}
	return errors.Join(errs...)
}
