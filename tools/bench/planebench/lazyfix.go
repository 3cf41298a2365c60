package main

import (
	"context"
	"sync/atomic"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/lab"
)

// The migrator's restore step calls StartStaged without the guards its
// stage set (migrate/migrate.go, StepRestore: StartStagedOptions{Lazy:
// r.rec.Lazy}), and a node refuses a lazy restore that is not told the
// copy is held ("a lazy restore needs the stage to hold the copy
// (GuardHold)"): every lazy migration (the plane's default from 16 MiB)
// fails on the networked path and is reverted. Passing the guards is not
// the whole fix, for a node given them lifts them when the copy runs,
// before the migration's commit step (the migrator lifts them after it).
//
// With -fix-lazy-guards planebench's links to the agents (the same as the
// plane's own: the plane's certificate, dialed from the plane namespace)
// add the stage's guards to a lazy StartStaged, so the lazy path can be
// measured; its downtime is what it would be once fixed, its safety on a
// failed commit is not what the migrator promises. Full restores are
// passed through unchanged.

// lazyGuardFixes counts the lazy restores the workaround changed.
var lazyGuardFixes atomic.Int64

// lazyGuardHost embeds the client itself, not migrate.Host, so that what
// the migrator asks of a link beyond migrate.Host (its address, for a
// peer's fetch) still answers.
type lazyGuardHost struct{ *agentapi.Client }

func (h lazyGuardHost) StartStaged(ctx context.Context, s migrate.Spec, image migrate.ImageName, opts migrate.StartStagedOptions) (migrate.RestoreResult, error) {
	if opts.Lazy && opts.Guards&migrate.GuardHold == 0 {
		opts.Guards |= migrate.GuardResets | migrate.GuardHold
		lazyGuardFixes.Add(1)
	}
	return h.Client.StartStaged(ctx, s, image, opts)
}

// lazyGuardLinks are the plane's links to the lab's agents, wrapped.
func lazyGuardLinks(inv *lab.Inventory) plane.Option {
	return plane.WithHostLinks(func(hc plane.HostConfig) (migrate.Host, error) {
		c, err := lab.AgentClient(inv, hc.Name)
		if err != nil {
			return nil, err
		}
		return lazyGuardHost{c}, nil
	})
}
