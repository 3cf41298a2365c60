package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/escape-mtd/escape/migrate"
)

// ErrOwned is wrapped when a pod has a controller (ReplicaSet, StatefulSet,
// Job, DaemonSet...): its controller would count a bare replacement as a
// surplus replica and delete one of the two, or recreate the deleted pod
// from its template, so Replace refuses and leaves the pod as it is.
var ErrOwned = migrate.ErrPodOwned

// Annotations Replace puts on the replacement pod.
const (
	AnnotationRestoredFrom = "escape.mtd/restored-from"
	AnnotationCheckpoint   = "escape.mtd/checkpoint-image"
)

// Replacer replaces compromised pods of its node with pods restored from
// their last safe checkpoints.
type Replacer struct {
	node       string
	api        *apiClient
	containerd *client.Client
	store      *Store
	mirrorAddr string
	log        *zap.Logger
	wait       time.Duration

	mu     sync.Mutex
	mirror *mirror // started by the first Replace, until Close
}

// ReplacerOption configures a Replacer.
type ReplacerOption func(*Replacer)

// WithMirrorAddr sets the loopback address of the base-image mirror
// (DefaultMirrorAddr).
func WithMirrorAddr(addr string) ReplacerOption { return func(r *Replacer) { r.mirrorAddr = addr } }

// WithLogger sets the logger (none by default).
func WithLogger(l *zap.Logger) ReplacerOption { return func(r *Replacer) { r.log = l } }

// WithRunningWait bounds how long Replace waits for the replacement to run
// (2 minutes by default).
func WithRunningWait(d time.Duration) ReplacerOption { return func(r *Replacer) { r.wait = d } }

// NewReplacer acts for node through the API server at apiServer, with the
// node's containerd and the store of its safe checkpoints.
func NewReplacer(node, apiServer string, creds Credentials, c *client.Client, store *Store, opts ...ReplacerOption) (*Replacer, error) {
	a, err := newAPIClient(apiServer, creds)
	if err != nil {
		return nil, fmt.Errorf("api server client: %w", err)
	}
	r := &Replacer{node: node, api: a, containerd: c, store: store, mirrorAddr: DefaultMirrorAddr, log: zap.NewNop(), wait: 2 * time.Minute}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// pod is the part of a Pod object Replace reads; the rest of the object
// travels as it was (raw).
type pod struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		UID             string            `json:"uid"`
		Labels          map[string]string `json:"labels"`
		Annotations     map[string]string `json:"annotations"`
		OwnerReferences []struct {
			Kind       string `json:"kind"`
			Name       string `json:"name"`
			Controller *bool  `json:"controller"`
		} `json:"ownerReferences"`
	} `json:"metadata"`
	Spec   map[string]any `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		ContainerStatuses []struct {
			Name         string `json:"name"`
			RestartCount int    `json:"restartCount"`
			Ready        bool   `json:"ready"`
			State        struct {
				Running *struct{} `json:"running"`
				Waiting *struct {
					Reason  string `json:"reason"`
					Message string `json:"message"`
				} `json:"waiting"`
			} `json:"state"`
			LastState struct {
				Terminated *struct {
					Reason   string `json:"reason"`
					Message  string `json:"message"`
					ExitCode int    `json:"exitCode"`
				} `json:"terminated"`
			} `json:"lastState"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func podPath(ns, name string) string {
	return "/api/v1/namespaces/" + url.PathEscape(ns) + "/pods/" + url.PathEscape(name)
}

func (r *Replacer) getPod(ctx context.Context, ns, name string) (*pod, error) {
	var p pod
	if err := r.api.do(ctx, http.MethodGet, podPath(ns, name), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Replace replaces pc's pod with a bare pod restored from pc's newest safe
// checkpoint, on this node, and returns the new pod's name. The old pod is
// deleted through the API server only once the new one runs; on any
// failure before that, the new pod is deleted and the old one left
// untouched, its archives kept.
func (r *Replacer) Replace(ctx context.Context, pc PodContainer) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("replace pod %s: %w", pc, err) }
	old, err := r.getPod(ctx, pc.Namespace, pc.Pod)
	if err != nil {
		return fail(err)
	}
	for _, o := range old.Metadata.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			return fail(fmt.Errorf("%w: %s %s", ErrOwned, o.Kind, o.Name))
		}
	}
	if n, _ := old.Spec["nodeName"].(string); n != r.node {
		return fail(fmt.Errorf("the pod runs on node %q, this agent acts for %q", n, r.node))
	}
	archive, err := r.store.Newest(pc)
	if err != nil {
		return fail(err)
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	ref := "escape.local/checkpoint/" + pc.Namespace + "/" + pc.Pod + "-" + pc.Container + ":" + stamp
	base, err := ImportCheckpointImage(ctx, r.containerd, archive, ref, pc.Container, r.mirrorAddr)
	if err != nil {
		return fail(err)
	}
	if err := r.serveBase(ctx, base); err != nil {
		_ = RemoveCheckpointImage(context.WithoutCancel(ctx), r.containerd, ref)
		return fail(err)
	}

	name := replacementName(pc.Pod, stamp)
	body, err := replacementPod(old, pc.Container, name, ref, r.node)
	if err != nil {
		return fail(err)
	}
	if err := r.api.do(ctx, http.MethodPost, "/api/v1/namespaces/"+url.PathEscape(pc.Namespace)+"/pods", bytes.NewReader(body), nil); err != nil {
		return fail(fmt.Errorf("create the replacement pod: %w", err))
	}
	r.log.Info("replacement pod created", zap.String("pod", pc.String()), zap.String("replacement", name), zap.String("image", ref))
	if err := r.waitRunning(ctx, pc.Namespace, name, pc.Container); err != nil {
		derr := r.deleteAndWait(context.WithoutCancel(ctx), pc.Namespace, name)
		return fail(errors.Join(fmt.Errorf("the replacement %s did not run from the checkpoint: %w", name, err), derr))
	}
	if err := r.api.do(ctx, http.MethodDelete, podPath(pc.Namespace, pc.Pod), nil, nil); err != nil && !errors.Is(err, ErrNotFound) {
		return name, fmt.Errorf("replace pod %s: the replacement %s runs, but deleting the old pod failed: %w", pc, name, err)
	}
	r.log.Info("compromised pod deleted", zap.String("pod", pc.String()), zap.String("replacement", name))
	return name, nil
}

// serveBase has the mirror serve base, starting it on first use. It stays
// up until Close: the kubelet restarts a replacement's container by
// creating it again from the checkpoint image, and each such restore pulls
// the base image again.
func (r *Replacer) serveBase(ctx context.Context, base ocispec.Descriptor) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mirror != nil {
		return r.mirror.allow(ctx, base)
	}
	m, err := startMirror(ctx, r.containerd, r.mirrorAddr, base)
	if err != nil {
		return err
	}
	r.mirror = m
	return nil
}

// Close stops the base-image mirror. Replacement pods keep running; a
// restart of their containers fails to create until a Replacer runs again.
func (r *Replacer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mirror != nil {
		r.mirror.stop()
		r.mirror = nil
	}
	return nil
}

// replacementName is the pod's name with a suffix, within 63 characters
// (the limit of the pod's hostname label).
func replacementName(pod, stamp string) string {
	suffix := "-r" + stamp
	if len(pod)+len(suffix) > 63 {
		pod = pod[:63-len(suffix)]
	}
	return pod + suffix
}

// replacementPod is old's spec, pinned to node, with container's image
// set to the checkpoint image (never pulled: it exists only on this node),
// and old's labels and annotations.
func replacementPod(old *pod, container, name, ref, node string) ([]byte, error) {
	spec := old.Spec
	spec["nodeName"] = node
	cs, _ := spec["containers"].([]any)
	found := false
	for _, c := range cs {
		m, ok := c.(map[string]any)
		if ok && m["name"] == container {
			m["image"] = ref
			m["imagePullPolicy"] = "IfNotPresent"
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("the pod has no container %q: %w", container, ErrNotFound)
	}
	ann := map[string]string{}
	for k, v := range old.Metadata.Annotations {
		ann[k] = v
	}
	ann[AnnotationRestoredFrom] = old.Metadata.Name
	ann[AnnotationCheckpoint] = ref
	return json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": old.Metadata.Namespace, "labels": old.Metadata.Labels, "annotations": ann},
		"spec":     spec,
	})
}

// deleteAndWait deletes a pod through the API server and waits (a
// minute at most) until the API server no longer has it, so that a failed
// replacement leaves nothing behind.
func (r *Replacer) deleteAndWait(ctx context.Context, ns, name string) error {
	if err := r.api.do(ctx, http.MethodDelete, podPath(ns, name), nil, nil); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete pod %s/%s: %w", ns, name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		_, err := r.getPod(ctx, ns, name)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s still there after its deletion: %w (last: %v)", ns, name, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// restoreFailed are the kubelet's reasons for a container that could not
// be created or started (for a checkpoint image: the restore failed).
var restoreFailed = map[string]bool{"CreateContainerError": true, "RunContainerError": true, "StartError": true,
	"CrashLoopBackOff": true, "CreateContainerConfigError": true, "ErrImageNeverPull": true}

// waitRunning polls until the pod's container runs, ready, or r.wait passes.
func (r *Replacer) waitRunning(ctx context.Context, ns, name, container string) error {
	ctx, cancel := context.WithTimeout(ctx, r.wait)
	defer cancel()
	var last string
	for {
		p, err := r.getPod(ctx, ns, name)
		if err == nil {
			last = p.Status.Phase
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Name != container {
					continue
				}
				if cs.State.Running != nil && cs.Ready {
					return nil
				}
				// The restore failed, and the kubelet is retrying it: say
				// why now rather than when the bound runs out.
				if w := cs.State.Waiting; w != nil && restoreFailed[w.Reason] {
					return fmt.Errorf("%s: %s", w.Reason, w.Message)
				}
				if term := cs.LastState.Terminated; term != nil {
					return fmt.Errorf("its container ended (%s, exit %d): %s", term.Reason, term.ExitCode, term.Message)
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
