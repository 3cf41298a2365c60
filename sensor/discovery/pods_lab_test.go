package discovery_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/discovery"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// labContainer is a busybox loop run from a read-only copy of the lab
// image's root (labtest.BusyboxRootFS: it needs no image in the namespaces
// the lab did not import into), in the namespace and cgroup given.
type labContainer struct {
	ns, id, cgroupsPath string
	labels, annotations map[string]string
}

func (lc labContainer) run(ctx context.Context, t *testing.T, cli *client.Client, rootfs string) client.Container {
	t.Helper()
	nctx := namespaces.WithNamespace(ctx, lc.ns)
	remove := func() {
		cctx := namespaces.WithNamespace(context.Background(), lc.ns)
		if old, err := cli.LoadContainer(cctx, lc.id); err == nil {
			if task, err := old.Task(cctx, nil); err == nil {
				task.Delete(cctx, client.WithProcessKill)
			}
			old.Delete(cctx)
		}
	}
	remove()
	ctr, err := cli.NewContainer(nctx, lc.id, client.WithContainerLabels(lc.labels),
		client.WithNewSpec(oci.WithRootFSPath(rootfs), oci.WithRootFSReadonly(),
			oci.WithEnv([]string{"PATH=/bin:/usr/bin"}), oci.WithCgroup(lc.cgroupsPath), oci.WithAnnotations(lc.annotations),
			oci.WithProcessArgs("/bin/sh", "-c", `while true; do cat /proc/self/stat > /dev/null; usleep 2000; done`)))
	if err != nil {
		t.Fatalf("container %s/%s: %v", lc.ns, lc.id, err)
	}
	t.Cleanup(remove)
	task, err := ctr.NewTask(nctx, cio.NullIO)
	if err != nil {
		t.Fatalf("task %s/%s: %v", lc.ns, lc.id, err)
	}
	if err := task.Start(nctx); err != nil {
		t.Fatalf("start %s/%s: %v", lc.ns, lc.id, err)
	}
	return ctr
}

// One sensor follows three containerd namespaces of a lab host: the agent's
// own, nerdctl's default and the CRI plugin's k8s.io. The kubelet's
// containers are made as containerd's CRI plugin makes them (its labels,
// annotations and pod sandbox), in both cgroup layouts: the systemd one is
// made by runc's cgroupfs driver at the place systemd would choose, and the
// container's spec then says what the kubelet's systemd driver writes
// (slice:prefix:name). The sensor finds both, gives their events the pod's
// metadata and one workload identity for two replicas, skips the sandbox,
// and honours the identity label only in the agent's namespace: a
// container of another namespace carrying the victim's label trains its
// own profile, not the victim's.
func TestLabPodsNamespacesAndIdentityPoisoning(t *testing.T) {
	inv := labtest.Ensure(t)
	host := inv.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := sensor.UnifiedRoot()
	if err != nil {
		t.Fatal(err)
	}
	// runc's cgroupfs driver makes every level in every hierarchy and
	// leaves some: the test removes what it made, last of all.
	var made []string
	t.Cleanup(func() { cgtest.RemoveEverywhere(t, made) })
	var tops []string
	for _, top := range []string{"/kubepods.slice/kubepods-burstable.slice", "/kubepods.slice", "/kubepods/burstable", "/kubepods"} {
		if _, err := os.Stat(filepath.Join(root, top)); os.IsNotExist(err) {
			tops = append(tops, top)
		}
	}
	defer func() { made = append(made, tops...) }() // after the pods' levels, deepest first
	cli, err := client.New(host.Containerd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() }) // after the containers' removal
	rootfs := labtest.BusyboxRootFS(t, inv)
	sfx := cgtest.RandomHex(3)
	victimID := "victim-" + sfx
	poison := map[string]string{sensor.IdentityLabel: victimID}
	victim := labContainer{ns: inv.Namespace, id: victimID, cgroupsPath: inv.CgroupsPath(host.Name, victimID), labels: poison}
	imposter := labContainer{ns: "default", id: "imposter-" + sfx, cgroupsPath: inv.CgroupsPath(host.Name, "imposter-"+sfx),
		labels: poison}

	// Two replicas of Deployment web in Kubernetes namespace shop.
	const hash = "7d9c5b8f6"
	type replica struct {
		pod, uid, sandbox, ctr string
		systemd                bool
	}
	uid := func() string {
		u := cgtest.RandomHex(16)
		return fmt.Sprintf("%s-%s-%s-%s-%s", u[:8], u[8:12], u[12:16], u[16:20], u[20:])
	}
	reps := []replica{
		{pod: "web-" + hash + "-aaaaa", uid: uid(), sandbox: cgtest.RandomHex(32), ctr: cgtest.RandomHex(32), systemd: true},
		{pod: "web-" + hash + "-bbbbb", uid: uid(), sandbox: cgtest.RandomHex(32), ctr: cgtest.RandomHex(32)},
	}
	wantDir := map[string]string{}
	sandboxIDs := map[string]bool{}
	for i, r := range reps {
		kubelet := map[string]string{"io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.name": r.pod,
			"io.kubernetes.pod.uid": r.uid}
		podLabels := map[string]string{"io.cri-containerd.kind": "sandbox", "app": "web", "pod-template-hash": hash}
		ctrLabels := map[string]string{"io.cri-containerd.kind": "container", "io.kubernetes.container.name": "nginx"}
		for k, v := range kubelet {
			podLabels[k], ctrLabels[k] = v, v
		}
		if i == 0 {
			ctrLabels[sensor.IdentityLabel] = victimID // an image label naming the victim
		}
		var sbPath, ctrPath string
		if r.systemd {
			slice := "kubepods-burstable-pod" + strings.ReplaceAll(r.uid, "-", "_") + ".slice"
			parent := "/kubepods.slice/kubepods-burstable.slice/" + slice
			sbPath, ctrPath = parent+"/cri-containerd-"+r.sandbox+".scope", parent+"/cri-containerd-"+r.ctr+".scope"
			made = append(made, ctrPath, sbPath, parent)
		} else {
			parent := "/kubepods/burstable/pod" + r.uid
			sbPath, ctrPath = parent+"/"+r.sandbox, parent+"/"+r.ctr
			made = append(made, ctrPath, sbPath, parent)
		}
		labContainer{ns: discovery.CRINamespace, id: r.sandbox, cgroupsPath: sbPath, labels: podLabels,
			annotations: map[string]string{"io.kubernetes.cri.container-type": "sandbox"}}.run(ctx, t, cli, rootfs)
		sandboxIDs[r.sandbox] = true
		ctr := labContainer{ns: discovery.CRINamespace, id: r.ctr, cgroupsPath: ctrPath, labels: ctrLabels,
			annotations: map[string]string{"io.kubernetes.cri.container-type": "container",
				"io.kubernetes.cri.sandbox-id": r.sandbox}}.run(ctx, t, cli, rootfs)
		wantDir[r.ctr] = filepath.Join(root, ctrPath)
		if r.systemd {
			// What containerd's CRI writes under the kubelet's systemd
			// driver; runc's cgroupfs driver could not have run it.
			nctx := namespaces.WithNamespace(ctx, discovery.CRINamespace)
			spec, err := ctr.Spec(nctx)
			if err != nil {
				t.Fatal(err)
			}
			spec.Linux.CgroupsPath = "kubepods-burstable-pod" + strings.ReplaceAll(r.uid, "-", "_") + ".slice:cri-containerd:" + r.ctr
			if err := ctr.Update(nctx, func(_ context.Context, _ *client.Client, c *containers.Container) error {
				c.Spec, err = typeurl.MarshalAny(spec)
				return err
			}); err != nil {
				t.Fatalf("spec in systemd form: %v", err)
			}
		}
	}
	victim.run(ctx, t, cli, rootfs)
	imposter.run(ctx, t, cli, rootfs)
	// A container whose spec no longer names its cgroup (empty: the
	// runtime's choice): found from its task's pid.
	unnamed := labContainer{ns: "default", id: "unnamed-" + sfx, cgroupsPath: inv.CgroupsPath(host.Name, "unnamed-"+sfx)}
	unnamedCtr := unnamed.run(ctx, t, cli, rootfs)
	{
		nctx := namespaces.WithNamespace(ctx, "default")
		spec, err := unnamedCtr.Spec(nctx)
		if err != nil {
			t.Fatal(err)
		}
		spec.Linux.CgroupsPath = ""
		if err := unnamedCtr.Update(nctx, func(_ context.Context, _ *client.Client, c *containers.Container) error {
			c.Spec, err = typeurl.MarshalAny(spec)
			return err
		}); err != nil {
			t.Fatalf("spec without a cgroups path: %v", err)
		}
	}
	made = append(made, victim.cgroupsPath, imposter.cgroupsPath, unnamed.cgroupsPath)
	wantDir[unnamed.id] = filepath.Join(root, unnamed.cgroupsPath)
	wantDir[victimID] = filepath.Join(root, victim.cgroupsPath)
	wantDir[imposter.id] = filepath.Join(root, imposter.cgroupsPath)

	ep := func(ns string, own, cri bool) discovery.Endpoint {
		return discovery.Endpoint{Host: host.Name, Address: host.Containerd, Namespace: ns, Own: own, CRI: cri}
	}
	d := startWatchers(t, t.TempDir(), ep(inv.Namespace, true, false), ep("default", false, false),
		ep(discovery.CRINamespace, false, true))

	want := map[string]struct{ ns, identity string }{
		victimID:    {inv.Namespace, victimID},
		imposter.id: {"default", "default/" + imposter.id},
		unnamed.id:  {"default", "default/" + unnamed.id},
		reps[0].ctr: {discovery.CRINamespace, "k8s/shop/deployment/web/nginx"},
		reps[1].ctr: {discovery.CRINamespace, "k8s/shop/deployment/web/nginx"},
	}
	for id, w := range want {
		ev, _ := d.wait(t, events.TypeEpoch, id, 0) // watched, and its calls counted
		c := ev.Container
		cg, err := sensor.CgroupID(wantDir[id])
		if err != nil {
			t.Fatal(err)
		}
		if c.Namespace != w.ns || c.Identity != w.identity || c.CgroupID != cg || c.Host != host.Name || ev.Epoch.Calls == 0 {
			t.Errorf("%s: %+v (epoch %+v), want namespace %s identity %s cgroup %d", id, c, ev.Epoch, w.ns, w.identity, cg)
		}
		if w.ns == discovery.CRINamespace {
			r := reps[0]
			if id == reps[1].ctr {
				r = reps[1]
			}
			if p := c.Pod; p == nil || *p != (events.Pod{Namespace: "shop", Name: r.pod, UID: r.uid, Container: "nginx", Owner: "deployment/web"}) {
				t.Errorf("%s: pod %+v", id, c.Pod)
			}
		} else if c.Pod != nil {
			t.Errorf("%s: a pod on a container of namespace %s: %+v", id, w.ns, c.Pod)
		}
	}
	// Every event of the victim's identity is the victim's own container;
	// the sandboxes (pause containers) were never watched.
	d.sink.mu.Lock()
	for _, e := range d.sink.ev {
		if e.Container == nil {
			continue
		}
		if e.Container.Identity == victimID && (e.Container.ID != victimID || e.Container.Namespace != inv.Namespace) {
			t.Errorf("the victim's profile reached by %s/%s: %+v", e.Container.Namespace, e.Container.ID, e)
		}
		if sandboxIDs[e.Container.ID] {
			t.Errorf("a pod sandbox was watched: %+v", e)
		}
	}
	d.sink.mu.Unlock()
	// One profile for the two replicas, one for the victim, one for the
	// imposter; the two ignored labels counted.
	rows := map[string]sensor.Row{}
	for _, r := range d.mon.Rows() {
		rows[r.Identity] = r
	}
	if r := rows[victimID]; r.ID != victimID || r.Namespace != inv.Namespace {
		t.Errorf("victim's row %+v", r)
	}
	if r, ok := rows["default/"+imposter.id]; !ok || r.Stats.Calls == 0 {
		t.Errorf("imposter's own row %+v", r)
	}
	if _, ok := rows["k8s/shop/deployment/web/nginx"]; !ok {
		t.Errorf("no workload row in %v", rows)
	}
	if n := d.mon.IgnoredIdentityLabels(); n != 2 {
		t.Errorf("ignored identity labels: %d, want 2 (the imposter's and the pod image's)", n)
	}
}
