package kube

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/escape-mtd/escape/plane"
)

// Discovery keeps an inventory of hosts equal to the cluster's nodes.
type Discovery struct {
	cs       kubernetes.Interface
	set      func([]plane.HostConfig) error
	port     int
	selector string
	log      *zap.Logger
	resync   time.Duration
	// syncTimeout bounds the wait for the first list of the nodes.
	syncTimeout time.Duration
}

// DiscoveryOption tunes a Discovery.
type DiscoveryOption func(*Discovery)

// WithNodeSelector watches only the nodes matching a label selector (the
// nodes that run an agent).
func WithNodeSelector(s string) DiscoveryOption { return func(d *Discovery) { d.selector = s } }

// WithAgentPort is the agents' port on a node's InternalIP (default 7443).
func WithAgentPort(port int) DiscoveryOption { return func(d *Discovery) { d.port = port } }

// WithDiscoveryLogger sets the logger.
func WithDiscoveryLogger(l *zap.Logger) DiscoveryOption { return func(d *Discovery) { d.log = l } }

// NewDiscovery makes a Discovery that gives each new inventory to set
// (plane.SetHosts).
func NewDiscovery(cs kubernetes.Interface, set func([]plane.HostConfig) error, opts ...DiscoveryOption) (*Discovery, error) {
	d := &Discovery{cs: cs, set: set, port: 7443, log: zap.NewNop(), resync: 10 * time.Minute, syncTimeout: 2 * time.Minute}
	for _, o := range opts {
		o(d)
	}
	if _, err := labels.Parse(d.selector); err != nil {
		return nil, fmt.Errorf("node selector %q: %w", d.selector, err)
	}
	return d, nil
}

// Start watches the nodes until ctx ends. It returns once the first
// inventory is set; the watch goes on in the background.
func (d *Discovery) Start(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(d.cs, d.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = d.selector }))
	inf := f.Core().V1().Nodes()
	// One pending refresh at most, whatever the rate of node updates (each
	// kubelet's status every few seconds): memory stays bounded.
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, DeleteFunc: poke, UpdateFunc: func(_, n any) { poke(n) }}); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	f.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, d.syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), inf.Informer().HasSynced) {
		f.Shutdown()
		return fmt.Errorf("node informer: no list of the nodes within %v: %w", d.syncTimeout, context.Cause(sctx))
	}
	var last []plane.HostConfig
	synced := false // last was set once
	var lastErrs string
	refresh := func() {
		nodes, err := inf.Lister().List(labels.Everything())
		if err != nil {
			d.log.Error("list nodes", zap.Error(err))
			return
		}
		hosts, errs := Inventory(nodes, d.port)
		if msg := fmt.Sprint(errs); len(errs) > 0 && msg != lastErrs {
			d.log.Warn("nodes left out of the inventory", zap.Errors("reasons", errs))
			lastErrs = msg
		}
		if synced && reflect.DeepEqual(hosts, last) {
			return
		}
		if err := d.set(hosts); err != nil {
			// Tried again on the next change of a node, or the resync.
			d.log.Error("inventory from the nodes", zap.Error(err))
			return
		}
		last, synced = append([]plane.HostConfig{}, hosts...), true
	}
	refresh()
	go func() {
		defer f.Shutdown()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				refresh()
			}
		}
	}()
	return nil
}
