package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/internal/modroot"
)

// options are the command's flags.
type options struct {
	repo, out, criuDir, pinDir string
	epoch                      time.Time
}

// result is what build made.
type result struct {
	sensor, plane built
	// pins are the image: lines the manifests get, by repository.
	pins map[string]pin
	src  source
}

// build makes both images from the tree at o.repo and writes them to o.out.
func build(ctx context.Context, o options) (result, error) {
	var r result
	src, err := describeSource(ctx, o.repo)
	if err != nil {
		return r, err
	}
	r.src = src
	sensorBin, planeBin, err := buildBinaries(ctx, o.repo, filepath.Join(o.out, "bin"), src)
	if err != nil {
		return r, err
	}
	sensor, plane, err := images(inputs{sensorBin: sensorBin, planeBin: planeBin, criuDir: o.criuDir, src: src, epoch: o.epoch})
	if err != nil {
		return r, err
	}
	if r.sensor, err = writeImage(sensor, sensorRepo, src.Version, o.out, "escape-sensor"); err != nil {
		return r, err
	}
	if r.plane, err = writeImage(plane, planeRepo, src.Version, o.out, "escape-plane"); err != nil {
		return r, err
	}
	if err := writeDigests(o.out, []built{r.sensor, r.plane}); err != nil {
		return r, err
	}
	criu, err := criuLayerID(sensor)
	if err != nil {
		return r, err
	}
	r.pins = map[string]pin{}
	for _, b := range []built{r.sensor, r.plane} {
		r.pins[b.Repo] = pin{Repo: b.Repo, Digest: b.Digest, Source: src.Version, Go: src.Go, CRIU: criu}
	}
	return r, nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org): the
// time every file and the image config carry; 0 when unset.
func sourceDateEpoch(lookup func(string) (string, bool)) (time.Time, error) {
	v, ok := lookup("SOURCE_DATE_EPOCH")
	if !ok || v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil || s < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970 (a non-negative integer)", v)
	}
	return time.Unix(s, 0).UTC(), nil
}

func main() {
	root, err := modroot.Find()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	var o options
	flag.StringVar(&o.repo, "repo", root, "the repository to build")
	flag.StringVar(&o.out, "out", filepath.Join(root, "out", "image"), "where the layouts, archives and images.json go")
	flag.StringVar(&o.criuDir, "criu", "/opt/escape/criu", "the CRIU closure make deps unpacked")
	flag.StringVar(&o.pinDir, "pin", "", "rewrite the image: lines of the manifests in this directory (deploy/kubernetes)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "image: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if o.epoch, err = sourceDateEpoch(os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	for _, b := range []built{r.sensor, r.plane} {
		fmt.Printf("%s:%s\n  %s\n  layout  %s\n  archive %s\n", b.Repo, b.Tag, b.Ref(), b.Layout, b.Archive)
	}
	if o.pinDir != "" {
		n, err := pinManifests(o.pinDir, r.pins)
		if err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
		fmt.Printf("pinned %d image: lines in %s\n", n, o.pinDir)
	}
}
