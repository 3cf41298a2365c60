package kube_test

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
)

// cutProxy forwards loopback TCP to the apiserver until cut, which
// closes its listener and every connection: a replica cut off from the
// API, still running.
type cutProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				continue
			}
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.Cut)
	return p
}

func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	p.conns = append(p.conns, cs...)
	return true
}

// Cut severs the replica from the API.
func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.l.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// A leader cut off from the API (alive, but unable to renew) stops acting
// once its renew deadline passes, before the other replica, which takes
// over once the lease duration has run out, acts: never both at once.
func TestLeaderCutOffStopsBeforeTheOtherActs(t *testing.T) {
	kc, cs := cluster(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	cfg.Host = "https://" + proxy.l.Addr().String() // 127.0.0.1: the apiserver's certificate names it
	cfg.Timeout = 3 * time.Second
	cutCS, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	newReplica := func(id string, client kubernetes.Interface) *replica {
		p := newPlane(t, plane.WithFollower())
		if err := p.SetHosts([]plane.HostConfig{{Name: "node-1", Agent: "127.0.0.1:1"}}); err != nil {
			t.Fatal(err)
		}
		e, err := kube.NewElection(client, "default", "escape-plane", id, kube.WithTimings(testLease, testRenew, testRetry))
		if err != nil {
			t.Fatal(err)
		}
		return stand(t, p, e, id)
	}
	leader := newReplica("plane-0", cutCS)
	eventually(t, 2*testLease, "plane-0 leads", func() bool { ok, _ := leader.p.Leader(); return ok })
	other := newReplica("plane-1", cs)
	eventually(t, 2*testLease, "plane-1 follows plane-0", func() bool { _, who := other.p.Leader(); return who == "plane-0" })

	start := time.Now()
	proxy.Cut()
	var stopped, tookOver time.Duration
	deadline := time.Now().Add(4 * testLease)
	for tookOver == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the cut: plane-0 stopped after %v, plane-1 never took over", stopped)
		}
		oldLeads, _ := leader.p.Leader()
		newLeads, _ := other.p.Leader()
		if !oldLeads && stopped == 0 {
			stopped = time.Since(start)
		}
		if newLeads {
			tookOver = time.Since(start)
			if oldLeads {
				t.Fatal("plane-1 leads while the cut-off plane-0 still does")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("cut-off leader stopped after %v; the other took over after %v (renew deadline %v, lease %v)", stopped, tookOver, testRenew, testLease)
	if ok, _ := acts(t, leader); ok {
		t.Error("the cut-off leader still acts")
	}
	if ok, err := acts(t, other); !ok {
		t.Errorf("the new leader does not act: %v", err)
	}
}
