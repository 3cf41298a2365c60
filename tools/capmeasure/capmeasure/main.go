// Command capmeasure runs package capmeasure's measurement (its doc says
// what it does and how long it takes) and prints the table that
// docs/operations.md, "Capabilities", holds.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/escape-mtd/escape/tools/capmeasure"
)

func main() {
	host := flag.String("host", "h1", "lab host whose agent is measured")
	outDir := flag.String("out", "out/capmeasure", "directory for runs.json (every run) and table.md")
	once := flag.String("once", "", "run the steps once under this bounding set (comma-separated setpriv names, all, or none) and print the outcome")
	keep := flag.String("keep", "-", "with --once: the set kept after the load (- for no drop)")
	planeOnly := flag.Bool("plane", false, "measure escape-plane serve only")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch {
	case *planeOnly:
		var rep capmeasure.PlaneReport
		if rep, err = capmeasure.MeasurePlane(ctx); err == nil {
			fmt.Print(capmeasure.PlaneMarkdown(rep))
		}
	case *once != "":
		err = capmeasure.RunOnce(ctx, *host, *once, *keep)
	default:
		err = capmeasure.Measure(ctx, *host, *outDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "capmeasure:", err)
		os.Exit(1)
	}
}
