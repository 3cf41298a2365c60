package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
)

// onKubernetes is the plane's side on a cluster (plane.kubernetes): the
// nodes as its hosts, a Lease for the one replica that acts, Events on
// the pods.
type onKubernetes struct {
	cfg      plane.KubeConfig
	identity string
	rec      *kube.Recorder
	elect    *kube.Election
	cs       kubernetes.Interface
	log      *zap.Logger
}

// replicaIdentity names this replica in the Lease: the configured
// identity, else the pod's name (the Downward API's POD_NAME), else the
// host name (a pod's is its name too).
func replicaIdentity(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if n := os.Getenv("POD_NAME"); n != "" {
		return n, nil
	}
	n, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("kubernetes: no identity for the Lease: %w", err)
	}
	return n, nil
}

func newOnKubernetes(cfg plane.KubeConfig, log *zap.Logger) (*onKubernetes, error) {
	id, err := replicaIdentity(cfg.Identity)
	if err != nil {
		return nil, err
	}
	cs, err := kube.NewClient(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	k := &onKubernetes{cfg: cfg, identity: id, log: log, cs: cs,
		rec: kube.NewRecorder(cs, id, kube.WithRate(cfg.EventsPerSecond, cfg.EventBurst), kube.WithRecorderLogger(log.Named("events")))}
	if k.elect, err = kube.NewElection(cs, cfg.Namespace, cfg.Lease, id, kube.WithElectionLogger(log.Named("lease")),
		kube.WithTimings(time.Duration(cfg.LeaseDuration), time.Duration(cfg.RenewDeadline), time.Duration(cfg.RetryPeriod))); err != nil {
		return nil, err
	}
	return k, nil
}

// options are the plane's: it starts as a follower, and its decisions go
// to the recorder.
func (k *onKubernetes) options() []plane.Option {
	return []plane.Option{plane.WithFollower(), plane.WithEventSink(k.rec.Sink)}
}

// run fills p's inventory from the nodes (it returns once the first is
// set), then, in g until ctx ends, follows the nodes, stands for the
// Lease and posts Events.
func (k *onKubernetes) run(ctx context.Context, g *errgroup.Group, p *plane.Plane) error {
	k.rec.Attach(p.PodOf)
	disc, err := kube.NewDiscovery(k.cs, p.SetHosts, kube.WithNodeSelector(k.cfg.NodeSelector), kube.WithAgentPort(k.cfg.AgentPort),
		kube.WithDiscoveryLogger(k.log.Named("nodes")))
	if err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	if err := disc.Start(ctx); err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	g.Go(func() error { k.rec.Run(ctx); return nil })
	g.Go(func() error { return k.elect.Run(ctx, p) })
	return nil
}
