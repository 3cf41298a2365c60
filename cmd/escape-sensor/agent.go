package main

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/escape-mtd/escape/internal/config"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate/node"
	"github.com/escape-mtd/escape/plane/agentapi"
)

// agentConfig is the "agent" section of the configuration file: the node
// agent that runs this host's share of every ESCAPE action
// (docs/operations.md). Without it, the daemon only detects.
type agentConfig struct {
	// Listen is the address:port the plane (and other agents) reach this
	// agent on: the host's address on the network the plane uses.
	Listen string `yaml:"listen"`
	// TLS is this host's certificate (it must name the sensor's host),
	// its key and the CA (internal/mtls).
	TLS struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	// Bridge is the bridge container interfaces plug into, in Netns (""
	// for the daemon's own network namespace).
	Bridge string `yaml:"bridge"`
	Netns  string `yaml:"netns"`
	// CgroupParent is the cgroup subtree of the containers ESCAPE runs
	// (/<cgroup_parent>/<id>).
	CgroupParent string `yaml:"cgroup_parent"`
	// CRIU is the CRIU binary, for lazy restores ("" for none).
	CRIU string `yaml:"criu"`
	// RuncRoot is runc's state directory ("" for containerd's default).
	RuncRoot string `yaml:"runc_root"`
	// State is the agent's own directory: checkpoint images (without
	// shared storage), CRIU's work directories and configurations, lease
	// generations.
	State string `yaml:"state"`
	// Shared is the shared storage every host mounts at the same path
	// (NFS; "" for none: images then go agent to agent).
	Shared string `yaml:"shared"`
	// Adopt takes under protection the containers of this host's
	// containerd labelled escape.mtd/protect=true, in these containerd
	// namespaces (nerdctl's is "default", Kubernetes' "k8s.io"; none:
	// nothing is adopted). docs/operations.md, "Adopting running
	// containers".
	Adopt struct {
		Namespaces []string `yaml:"namespaces"`
	} `yaml:"adopt"`
	// Kubernetes turns on the pod actions (agent_kube.go).
	Kubernetes *kubeAgentConfig `yaml:"kubernetes"`
}

func defaultAgentConfig() agentConfig {
	a := agentConfig{Bridge: "br0", CgroupParent: "escape", State: "/var/lib/escape-agent"}
	a.TLS.CA, a.TLS.Cert, a.TLS.Key = "/etc/escape/pki/ca.crt", "/etc/escape/pki/agent.crt", "/etc/escape/pki/agent.key"
	return a
}

func (a agentConfig) enabled() bool { return a.Listen != "" }

// loadAgentConfig reads the agent section of the file at path ("" for
// none: the agent is off).
func loadAgentConfig(path string) (agentConfig, error) {
	a := defaultAgentConfig()
	if path == "" {
		return a, nil
	}
	if err := config.Load(path, "agent", &a); err != nil {
		return a, err
	}
	listen, err := expandListen(a.Listen, os.LookupEnv)
	if err != nil {
		return a, err
	}
	a.Listen = listen
	return a, a.validate()
}

// expandListen expands $VAR and ${VAR} in the agent's listen address from
// the environment, and only there: in Kubernetes the node's address is
// known to the pod only as an environment variable (HOST_IP from the
// downward API's status.hostIP), and one ConfigMap serves every node. A
// variable that is unset or empty is an error naming it, never an empty
// host that would listen on every address.
func expandListen(listen string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(listen, "$") {
		return listen, nil
	}
	var missing []string
	out := os.Expand(listen, func(name string) string {
		v, ok := lookup(name)
		if !ok || v == "" {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("agent: listen: %q: environment variable %s is not set (in Kubernetes, set it from the downward API, e.g. HOST_IP from status.hostIP)",
			listen, strings.Join(missing, ", "))
	}
	return out, nil
}

func (a agentConfig) validate() error {
	if !a.enabled() {
		return nil
	}
	if _, err := netip.ParseAddrPort(a.Listen); err != nil {
		return fmt.Errorf("agent: listen: %q: want the host's address:port such as 198.18.0.11:7443", a.Listen)
	}
	for key, p := range map[string]string{"tls.ca": a.TLS.CA, "tls.cert": a.TLS.Cert, "tls.key": a.TLS.Key, "state": a.State} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("agent: %s: %q must be an absolute path", key, p)
		}
	}
	for key, p := range map[string]string{"criu": a.CRIU, "shared": a.Shared, "runc_root": a.RuncRoot} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("agent: %s: %q must be an absolute path (or empty)", key, p)
		}
	}
	if a.Bridge == "" || a.CgroupParent == "" {
		return fmt.Errorf("agent: bridge and cgroup_parent must not be empty")
	}
	return nil
}

// startAgent opens the host's steps and its mutual-TLS listener, and
// returns what serves them until its context ends.
func startAgent(ctx context.Context, c *runConfig, a agentConfig, outbox *agentapi.Outbox, ivs intervene.Func, reg prometheus.Registerer, log *zap.Logger) (func(context.Context) error, error) {
	log = log.Named("agent")
	src, err := mtls.NewSource(mtls.Files{CA: a.TLS.CA, Cert: a.TLS.Cert, Key: a.TLS.Key}, mtls.WithLogger(log.Named("tls")), mtls.WithMetrics(reg))
	if err != nil {
		return nil, fmt.Errorf("agent certificate: %w", err)
	}
	if id := src.Identity(); id.Role != mtls.RoleAgent || id.Name != c.Host {
		return nil, fmt.Errorf("agent certificate %s names %s, want agent %s (the sensor's host)", a.TLS.Cert, id, c.Host)
	}
	peers, err := agentapi.NewPeers(func(peer string) credentials.TransportCredentials {
		return src.ClientCredentials(mtls.Identity{Role: mtls.RoleAgent, Name: peer})
	}, agentapi.WithDialOptions(grpc.WithChainUnaryInterceptor(mtls.UnaryClientInterceptor(src)),
		grpc.WithChainStreamInterceptor(mtls.StreamClientInterceptor(src))))
	if err != nil {
		return nil, err
	}
	n, err := node.New(node.Config{Name: c.Host, Containerd: c.Containerd, Namespace: c.Namespace, Netns: a.Netns,
		Bridge: a.Bridge, CgroupParent: a.CgroupParent, RuncRoot: a.RuncRoot, CRIU: a.CRIU, StateDir: a.State,
		SharedDir: a.Shared, Adopt: a.Adopt.Namespaces}, node.WithLogger(log), node.WithPeers(peers),
		node.WithInterventions(ivs))
	if err != nil {
		return nil, err
	}
	caller := func(ctx context.Context) (agentapi.Caller, error) {
		id, _, err := mtls.PeerIdentity(ctx)
		if err != nil {
			return agentapi.Caller{}, err
		}
		return agentapi.Caller{Role: agentapi.Role(id.Role), Name: id.Name}, nil
	}
	closeKube := func() error { return nil }
	var podOpts []agentapi.ServerOption
	if a.Kubernetes != nil {
		pods, closePods, err := startKubeAgent(c.Host, c.Containerd, a.State, a.Kubernetes, log)
		if err != nil {
			_ = n.Close()
			return nil, err
		}
		closeKube, podOpts = closePods, []agentapi.ServerOption{agentapi.WithPods(pods)}
	}
	srv, err := agentapi.NewServer(n, append(podOpts,
		agentapi.WithServerCredentials(src.ServerCredentials(mtls.RolePlane, mtls.RoleAgent)),
		agentapi.WithCaller(caller), agentapi.WithOutbox(outbox), agentapi.WithServerLogger(log),
		// The certificate is checked again on every call: one that expires
		// mid-run stops being trusted on a kept-alive connection too.
		agentapi.WithGRPCOptions(grpc.ChainUnaryInterceptor(mtls.UnaryServerInterceptor(src, nil)),
			grpc.ChainStreamInterceptor(mtls.StreamServerInterceptor(src, nil))))...)
	if err != nil {
		_ = closeKube()
		_ = n.Close()
		return nil, err
	}
	var lc net.ListenConfig
	// CRIU cannot dump MPTCP sockets, and nothing here needs it.
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(ctx, "tcp", a.Listen)
	if err != nil {
		_ = closeKube()
		_ = n.Close()
		return nil, fmt.Errorf("agent: listen %s: %w", a.Listen, err)
	}
	log.Info("node agent up", zap.String("listen", a.Listen), zap.String("identity", src.Identity().String()),
		zap.String("shared", a.Shared))
	return func(ctx context.Context) error {
		defer n.Close()
		defer closeKube()
		return srv.Serve(ctx, l)
	}, nil
}
