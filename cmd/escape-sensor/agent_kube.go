package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/client"
	"go.uber.org/zap"

	"github.com/escape-mtd/escape/migrate/kube"
)

// kubeAgentConfig is the agent's "kubernetes" section: on a Kubernetes
// node the agent checkpoints pods through the node's kubelet and replaces
// compromised ones through the API server (docs/kubernetes.md). Absent:
// no pod actions.
type kubeAgentConfig struct {
	// Node is the node's name in the API (the sensor's host by default).
	Node string `yaml:"node"`
	// Kubelet is the node's kubelet (https://<node address>:10250);
	// APIServer the API server's URL.
	Kubelet   string `yaml:"kubelet"`
	APIServer string `yaml:"api_server"`
	// TokenFile is a service-account token allowed create on
	// nodes/checkpoint and get/create/delete on pods
	// (deploy/kubernetes/pod-actions/rbac.yaml), re-read on every call;
	// CAFile the CA of the kubelet's and the API server's certificates.
	TokenFile string `yaml:"token_file"`
	CAFile    string `yaml:"ca_file"`
	// Checkpoints keeps the safe archives (<state>/kube-checkpoints by
	// default), at most Keep per pod container and MaxBytes in all.
	Checkpoints string `yaml:"checkpoints"`
	Keep        int    `yaml:"keep"`
	MaxBytes    int64  `yaml:"max_bytes"`
	// Mirror is the loopback address of the restores' base-image mirror.
	Mirror string `yaml:"mirror"`
}

// startKubeAgent builds the pod actions of a Kubernetes node's agent; the
// returned close releases them.
func startKubeAgent(host, containerd, state string, k *kubeAgentConfig, log *zap.Logger) (*kube.Agent, func() error, error) {
	if k.Kubelet == "" || k.APIServer == "" || k.TokenFile == "" || k.CAFile == "" {
		return nil, nil, fmt.Errorf("agent kubernetes: kubelet, api_server, token_file and ca_file are all required")
	}
	node, dir, keep, maxBytes, mirror := k.Node, k.Checkpoints, k.Keep, k.MaxBytes, k.Mirror
	if node == "" {
		node = host
	}
	if dir == "" {
		dir = filepath.Join(state, "kube-checkpoints")
	}
	if keep == 0 {
		keep = 3
	}
	if maxBytes == 0 {
		maxBytes = 8 << 30
	}
	if mirror == "" {
		mirror = kube.DefaultMirrorAddr
	}
	creds := kube.Credentials{TokenFile: k.TokenFile, CAFile: k.CAFile}
	kl, err := kube.NewKubelet(k.Kubelet, creds)
	if err != nil {
		return nil, nil, fmt.Errorf("agent kubernetes: %w", err)
	}
	store, err := kube.NewStore(dir, keep, maxBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("agent kubernetes: %w", err)
	}
	c, err := client.New(containerd)
	if err != nil {
		return nil, nil, fmt.Errorf("agent kubernetes: containerd %s: %w", containerd, err)
	}
	r, err := kube.NewReplacer(node, k.APIServer, creds, c, store, kube.WithMirrorAddr(mirror), kube.WithLogger(log.Named("kube")))
	if err != nil {
		_ = c.Close()
		return nil, nil, fmt.Errorf("agent kubernetes: %w", err)
	}
	log.Info("pod actions on", zap.String("node", node), zap.String("kubelet", k.Kubelet), zap.String("checkpoints", dir))
	return kube.NewAgent(kl, store, r, 2*time.Minute), func() error {
		_ = r.Close()
		return c.Close()
	}, nil
}
