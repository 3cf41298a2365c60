package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/doctor"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// TestImagesRunInTheLab imports both images into h1's containerd with
// ctr, as an operator loads them into a node, and runs them there the way
// the manifests do: the doctor and the agent from the daemon image
// (privileged, the host's PID namespace, network and paths), the plane
// from its image as a non-root user without capabilities; the plane
// reaches the agent and an operator reaches the plane, over mutual TLS.
func TestImagesRunInTheLab(t *testing.T) {
	res, _ := builtImages(t)
	inv := labtest.Ensure(t)
	x := newHost(t, inv, "h1")
	// The DaemonSet's hostPath /run/netns is DirectoryOrCreate.
	if out, err := lab.Command(context.Background(), inv, x.h.Name, "mkdir", "-p", "/run/netns").CombinedOutput(); err != nil {
		t.Fatalf("mkdir /run/netns on %s: %v: %s", x.h.Name, err, out)
	}

	// Import: the archives as `make image` writes them, with ctr, from a
	// path on the node.
	for _, b := range []built{res.sensor, res.plane} {
		data, err := os.ReadFile(b.Archive)
		if err != nil {
			t.Fatal(err)
		}
		x.write(filepath.Base(b.Archive), data, 0o644)
		x.ctr("images", "import", x.in(filepath.Base(b.Archive)))
	}
	list := x.ctr("images", "ls", "-q")
	images := map[string]containerd.Image{}
	for _, b := range []built{res.sensor, res.plane} {
		for _, name := range []string{b.Ref(), b.Repo + ":" + b.Tag} {
			if !strings.Contains(list, name+"\n") {
				t.Fatalf("after the import, ctr images ls lacks %s:\n%s", name, list)
			}
		}
		// By the digest reference the manifests pin: the kubelet asks for
		// exactly that name.
		img, err := x.c.GetImage(x.ctx, b.Ref())
		if err != nil {
			t.Fatalf("image %s: %v", b.Ref(), err)
		}
		if got := img.Target().Digest.String(); got != b.Digest {
			t.Fatalf("image %s in containerd has digest %s, built %s", b.Ref(), got, b.Digest)
		}
		images[b.Repo] = img
	}
	sensorImg, planeImg := images[sensorRepo], images[planeRepo]
	ip := x.h.IP

	t.Run("doctor", func(t *testing.T) {
		x := *x
		x.t = t
		code, out := x.run("escape-image-doctor", sensorImg, daemonSet, "/bin/sh", "-c",
			sensorBin+" doctor --json --mode sensor --containerd "+lab.InsideContainerd+" && "+
				sensorBin+" doctor --json --mode agent --containerd "+lab.InsideContainerd)
		reports := decodeReports(t, out)
		if code != 0 || len(reports) != 2 {
			t.Fatalf("doctor in the daemon image: exit %d, %d reports:\n%s", code, len(reports), out)
		}
		for _, r := range reports {
			if !r.OK() {
				t.Errorf("doctor --mode %s in the daemon image is not ready: %+v", r.Mode, r.Blocking())
			}
		}
		criu := find(reports[1], "criu")
		if !criu.OK || !strings.Contains(criu.Detail, "/opt/escape/bin/criu: CRIU 4.") || !strings.Contains(criu.Detail, "criu check") {
			t.Errorf("the image's CRIU: %+v, want /opt/escape/bin/criu, CRIU 4.x and a passing criu check", criu)
		}
		t.Logf("doctor in the image: criu %q; iptables %q; runc %q", criu.Detail, find(reports[1], "iptables").Detail,
			find(reports[1], "runc").Detail)
	})

	t.Run("agent", func(t *testing.T) {
		x := *x
		x.t = t
		pki := "agent-pki"
		if _, err := inv.Issue(mtls.RoleAgent, x.h.Name, x.out(pki)); err != nil {
			t.Fatal(err)
		}
		x.write("agent.yaml", agentConfig(t, &x, netip.AddrPortFrom(ip, imageAgentPort), pki), 0o644)
		// The agent's state is Bidirectional in the DaemonSet: what the
		// agent mounts there (CRIU's mask tmpfs) must reach the node, whose
		// runc and CRIU write the checkpoint images there. A node's
		// Bidirectional hostPath is a shared mount; the lab host's
		// /var/lib/escape is private, so the test shares its directory.
		x.shareDir()
		// A namespace of the host's, as the agent makes for a migration's
		// destination, made before the agent starts so that its container
		// sees it whatever /run/netns's propagation.
		ns := inv.NetnsPrefix + "imgtest"
		hostCmd := func(args ...string) error {
			out, err := lab.Command(context.Background(), inv, x.h.Name, args[0], args[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), x.h.Name, err, out)
			}
			return nil
		}
		_ = hostCmd("ip", "netns", "del", ns) // a failed earlier run
		if err := hostCmd("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = hostCmd("ip", "netns", "del", ns) })
		log := x.start("escape-image-agent", sensorImg, daemonSet,
			sensorBin, "run", "--config", x.in("agent.yaml"), "--host", x.h.Name)
		h := x.h
		h.Agent = netip.AddrPortFrom(ip, imageAgentPort).String()
		c, err := lab.AgentClientWith(inv, h, inv.Plane.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		deadline := time.Now().Add(90 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			info, err := c.Hello(ctx)
			cancel()
			if err == nil {
				if info.Name != x.h.Name || !info.LazyRestore {
					t.Fatalf("the image's agent says %+v, want %s with lazy restores (its CRIU named)", info, x.h.Name)
				}
				t.Logf("the image's agent at %s answers Hello over mTLS: %+v", h.Agent, info)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the image's agent at %s does not answer Hello: %v\n%s", h.Agent, err, log)
			}
			time.Sleep(time.Second)
		}
		// The CRIU the agent names (agent.criu) for its lazy-pages daemon:
		// the image's own, run inside the agent's container.
		out, code := x.exec("escape-image-agent", "criu", "check")
		if code != 0 || !strings.Contains(out, "Looks good") {
			t.Fatalf("criu check in the agent's container: exit %d: %s", code, out)
		}
		// The migration guard as migrate/node/network.go sets and checks
		// it, with the image's nsenter and iptables and their extensions
		// (tcp, comment), in the namespace.
		rule := "OUTPUT -p tcp --tcp-flags RST RST -m comment --comment escape-migration -j DROP"
		out, code = x.exec("escape-image-agent", "/bin/sh", "-c",
			"printf '*filter\\n-I "+rule+"\\nCOMMIT\\n' | nsenter --net=/run/netns/"+ns+" iptables-restore -w --noflush && "+
				"nsenter --net=/run/netns/"+ns+" iptables -w -C "+rule+" && nsenter --net=/run/netns/"+ns+" iptables-save")
		if code != 0 || !strings.Contains(out, "-A OUTPUT -p tcp -m tcp --tcp-flags RST RST -m comment --comment escape-migration -j DROP") {
			t.Fatalf("the migration guard with the image's iptables: exit %d: %s", code, out)
		}

		t.Run("checkpoint", func(t *testing.T) { checkpointThroughImageAgent(t, inv, c) })

		t.Run("plane", func(t *testing.T) {
			x := x
			x.t = t
			testPlaneImage(t, &x, planeImg, res.src, h.Agent)
		})
	})
}

// agentConfig is escape-sensor run's configuration for the image's agent:
// deploy/escape.yaml's layout with this test's paths and ports, so that
// it runs beside the lab's own agent on the same host.
func agentConfig(t *testing.T, x *host, listen netip.AddrPort, pki string) []byte {
	files := mtls.IssuedFiles(x.in(pki), string(mtls.RoleAgent))
	doc := map[string]map[string]any{
		"sensor": {
			// The lab's workloads' namespace: its images are there.
			"containerd": lab.InsideContainerd, "host": x.h.Name, "namespace": x.inv.Namespace,
			"events": []string{"file:" + x.in("events.jsonl")}, "listen": fmt.Sprintf("127.0.0.1:%d", imageMetricsPort),
			"control": x.in("sensor.sock"), "profiles": x.in("profiles"),
		},
		"agent": {
			"listen": listen.String(), "tls": map[string]string{"ca": files.CA, "cert": files.Cert, "key": files.Key},
			"bridge": x.h.Bridge, "netns": "", "cgroup_parent": x.inv.CgroupParent + "/" + x.h.Name + "-image",
			"criu": "/opt/escape/bin/criu", "state": x.in("agent"),
		},
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testPlaneImage runs the plane image: its --version and --help, then
// serve as the image's user, with the image's agent as its one host, and
// asks it for its status over mutual TLS as an operator, from the plane
// image too. A certificate of another role is refused.
func testPlaneImage(t *testing.T, x *host, img containerd.Image, src source, agent string) {
	code, out := x.run("escape-image-plane-version", img, planePod, planeBin, "--version")
	if code != 0 || !strings.Contains(out, src.Version) {
		t.Fatalf("escape-plane --version in the plane image: exit %d: %q, want version %s", code, out, src.Version)
	}
	code, out = x.run("escape-image-plane-help", img, planePod, planeBin, "--help")
	if code != 0 || !strings.Contains(out, "serve") || !strings.Contains(out, "status") {
		t.Fatalf("escape-plane --help in the plane image: exit %d: %s", code, out)
	}

	// The plane's files belong to the image's user (the Secret's and the
	// volume's do in a pod: fsGroup, or the volume's owner).
	dir := "plane"
	if _, err := x.inv.Issue(mtls.RolePlane, "plane", x.out(dir+"/pki")); err != nil {
		t.Fatal(err)
	}
	if _, err := x.inv.Issue(mtls.RoleOperator, "image-test", x.out(dir+"/operator")); err != nil {
		t.Fatal(err)
	}
	cfg, err := x.inv.PlaneConfig()
	if err != nil {
		t.Fatal(err)
	}
	pf := mtls.IssuedFiles(x.in(dir+"/pki"), string(mtls.RolePlane))
	cfg.TLS = plane.TLSFiles{CA: pf.CA, Cert: pf.Cert, Key: pf.Key}
	api := netip.AddrPortFrom(x.h.IP, imagePlanePort).String()
	cfg.API, cfg.Listen = api, "127.0.0.1:9565"
	cfg.Socket, cfg.State, cfg.Audit = x.in(dir+"/plane.sock"), x.in(dir+"/state/plane.db"), x.in(dir+"/state/audit.jsonl")
	cfg.Hosts = []plane.HostConfig{{Name: x.h.Name, Agent: agent, Labels: x.h.Labels}}
	data, err := lab.MarshalPlaneConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	x.write(dir+"/escape.yaml", data, 0o644)
	if err := os.MkdirAll(x.out(dir+"/state"), 0o700); err != nil {
		t.Fatal(err)
	}
	var uid, gid int
	if is, err := img.Spec(x.ctx); err != nil {
		t.Fatal(err)
	} else if _, err := fmt.Sscanf(is.Config.User, "%d:%d", &uid, &gid); err != nil {
		t.Fatal(err)
	}
	if err := chownTree(x.out(dir), uid, gid); err != nil {
		t.Fatal(err)
	}
	log := x.start("escape-image-plane", img, planePod, planeBin, "serve", "--config", x.in(dir+"/escape.yaml"))

	operator := func(id, certDir, name string) (uint32, string) {
		f := mtls.IssuedFiles(x.in(certDir), name)
		return x.run(id, img, planePod, planeBin, "--server", api, "--cert", f.Cert, "--key", f.Key, "--ca", f.CA,
			"--timeout", "5s", "status")
	}
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; ; i++ {
		code, out := operator(fmt.Sprintf("escape-image-operator-%d", i), dir+"/operator", "image-test")
		if code == 0 {
			var st struct {
				Hosts []struct {
					Name      string `json:"name"`
					Reachable bool   `json:"reachable"`
				} `json:"hosts"`
			}
			if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Hosts) != 1 || st.Hosts[0].Name != x.h.Name {
				t.Fatalf("status from the plane image: %v: %s", err, out)
			}
			// The plane image reaches the daemon image's agent, over mTLS.
			if st.Hosts[0].Reachable {
				t.Logf("the plane image answers an operator over mTLS at %s, and reaches the image's agent", api)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plane image's API at %s does not answer: exit %d: %s\nplane log:\n%s", api, code, out, log)
		}
		time.Sleep(2 * time.Second)
	}
	// The plane's own certificate is no operator's: refused by role.
	code, out = operator("escape-image-operator-wrong-role", dir+"/pki", string(mtls.RolePlane))
	if code == 0 || !strings.Contains(out, "plane at "+api) {
		t.Fatalf("a plane certificate as an operator: exit %d: %s, want a refusal by the API at %s", code, out, api)
	}
	t.Logf("a plane certificate is refused as an operator: %s", strings.TrimSpace(out))
}

func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// decodeReports reads the doctor's JSON reports, one after the other.
func decodeReports(t *testing.T, out string) []doctor.Report {
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	var reps []doctor.Report
	for {
		var r doctor.Report
		if err := dec.Decode(&r); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("doctor output after %d reports: %v", len(reps), err)
			}
			return reps
		}
		reps = append(reps, r)
	}
}

func find(r doctor.Report, name string) doctor.Result {
	for _, res := range r.Results {
		if res.Name == name {
			return res
		}
	}
	return doctor.Result{Name: name, Detail: "not in the report"}
}

// checkpointThroughImageAgent: the plane's steps through the agent of the
// daemon image, in its container: it starts the lab's redis at a service
// address, a client reaches it, the agent checkpoints it (the node's runc
// and CRIU dump into the agent's state directory), the image verifies, the
// connection survives, and the agent removes the container.
func checkpointThroughImageAgent(t *testing.T, inv *lab.Inventory, agent *agentapi.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ip := netip.MustParsePrefix("198.18.1.230/15")
	spec := migrate.Spec{ID: "escape-image-redis", Image: inv.Images["redis"].Ref, IP: ip, MAC: "02:42:c6:12:01:e6",
		Args: []string{"/usr/bin/redis-server", "--protected-mode", "no", "--save", ""}}
	_, _ = agent.Remove(ctx, spec.ID) // a failed earlier run
	t.Cleanup(func() { _, _ = agent.Remove(context.Background(), spec.ID) })
	lease := migrate.Lease{IP: ip.Addr(), Generation: uint64(time.Now().UnixNano()), NotAfter: time.Now().Add(time.Hour)}
	if _, err := agent.Start(ctx, spec, migrate.StartOptions{Address: true, Lease: lease}); err != nil {
		t.Fatalf("start through the image's agent: %v", err)
	}
	r := labtest.DialRedis(t, inv, ip.Addr(), 20*time.Second)
	if n, err := r.Incr("image", 5*time.Second); err != nil || n != 1 {
		t.Fatalf("INCR from the client namespace: %d %v", n, err)
	}
	image := migrate.ImageName("image-test/redis")
	t.Cleanup(func() { _, _ = agent.DropImage(context.Background(), image) })
	res, err := agent.Checkpoint(ctx, spec.ID, image, migrate.CheckpointOptions{})
	if err != nil || res.Bytes == 0 {
		t.Fatalf("checkpoint through the image's agent: %+v %v", res, err)
	}
	if n, err := agent.VerifyImage(ctx, image); err != nil || n == 0 {
		t.Fatalf("verify the image: %d %v", n, err)
	}
	if n, err := r.Incr("image", 5*time.Second); err != nil || n != 2 {
		t.Fatalf("INCR after the checkpoint: %d %v", n, err)
	}
	t.Logf("checkpointed redis through the image's agent: %d bytes", res.Bytes)
	if _, err := agent.Remove(ctx, spec.ID); err != nil {
		t.Fatalf("remove through the image's agent: %v", err)
	}
	if st, err := agent.Status(ctx, spec.ID); err != nil || st.Status != migrate.Absent {
		t.Fatalf("status after remove: %+v %v", st, err)
	}
}
