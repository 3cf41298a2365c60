package main

import (
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Repositories the images are named in (deploy/kubernetes pins them).
const (
	sensorRepo = "escape.local/escape-sensor"
	planeRepo  = "escape.local/escape-plane"
)

// spec is one image to assemble.
type spec struct {
	repo        string
	title, desc string
	layers      []namedTree
	entrypoint  []string
	cmd         []string
	env         []string
	user        string
}

// namedTree is a layer and what its history entry says made it.
type namedTree struct {
	what string
	tree tree
}

// assemble makes the image of s: OCI media types, amd64/linux, created at
// epoch, labelled with the source it was built from.
func assemble(s spec, src source, epoch time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var adds []mutate.Addendum
	for _, l := range s.layers {
		layer, err := l.tree.layer(epoch)
		if err != nil {
			return nil, fmt.Errorf("image %s: layer %q: %w", s.repo, l.what, err)
		}
		adds = append(adds, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "tools/image: " + l.what, Comment: "make image"}})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.repo, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = "amd64", "linux", v1.Time{Time: epoch}
	labels := map[string]string{
		"org.opencontainers.image.title":       s.title,
		"org.opencontainers.image.description": s.desc,
		"org.opencontainers.image.version":     src.Version,
		"org.opencontainers.image.created":     epoch.Format(time.RFC3339),
		"org.opencontainers.image.source":      "https://github.com/escape-mtd/escape",
		"org.opencontainers.image.vendor":      "ESCAPE",
		"mtd.escape.go":                        src.Go,
	}
	if src.Revision != "" {
		labels["org.opencontainers.image.revision"] = src.Revision
	}
	cf.Config = v1.Config{Entrypoint: s.entrypoint, Cmd: s.cmd, Env: s.env, User: s.user, WorkingDir: "/", Labels: labels}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", s.repo, err)
	}
	return img, nil
}

// inputs are the files the images are made of.
type inputs struct {
	sensorBin, planeBin string
	// criuDir is make deps' CRIU closure (/opt/escape/criu).
	criuDir string
	src     source
	epoch   time.Time
}

// images assembles the daemon image and the plane image.
func images(in inputs) (sensor, plane v1.Image, err error) {
	runtimeTree, err := sensorRuntime()
	if err != nil {
		return nil, nil, err
	}
	criuTree, err := sensorCRIU(in.criuDir)
	if err != nil {
		return nil, nil, err
	}
	// Least changing first: a node that has the base layers fetches only
	// the binary's on an upgrade.
	sensor, err = assemble(spec{repo: sensorRepo, title: "escape-sensor",
		desc: "ESCAPE's per-host daemon: the eBPF sensor and the node agent, with CRIU 4.2",
		layers: []namedTree{{"runtime: busybox, nsenter, iptables, runc and their libraries", runtimeTree},
			{"CRIU closure of make deps and its wrapper", criuTree},
			{"escape-sensor", binary(in.sensorBin, sensorBin)}},
		entrypoint: []string{sensorBin}, cmd: []string{"run", "--config", "/etc/escape/escape.yaml"},
		env: []string{sensorPath}, user: "0:0"}, in.src, in.epoch)
	if err != nil {
		return nil, nil, err
	}
	plane, err = assemble(spec{repo: planeRepo, title: "escape-plane",
		desc: "ESCAPE's control plane",
		layers: []namedTree{{"accounts and directories", planeBase()},
			{"escape-plane", binary(in.planeBin, planeBin)}},
		entrypoint: []string{planeBin}, cmd: []string{"serve", "--config", "/etc/escape/escape.yaml"},
		env: []string{planePath}, user: fmt.Sprintf("%d:%d", planeUID, planeUID)}, in.src, in.epoch)
	if err != nil {
		return nil, nil, err
	}
	return sensor, plane, nil
}

// criuLayerID names the daemon image's CRIU layer (its second) by the
// first 12 hex digits of its diff id: what make deps fetched from
// Debian unstable, which moves on its own.
func criuLayerID(sensor v1.Image) (string, error) {
	layers, err := sensor.Layers()
	if err != nil {
		return "", err
	}
	if len(layers) != 3 {
		return "", fmt.Errorf("daemon image has %d layers, want 3 (runtime, CRIU, escape-sensor)", len(layers))
	}
	d, err := layers[1].DiffID()
	if err != nil {
		return "", err
	}
	return d.Algorithm + ":" + d.Hex[:12], nil
}
