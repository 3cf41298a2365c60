// Package model is the prey-vs-predator search game of the ESCAPE papers
// (Section IV): closed-form survival probabilities, a Monte Carlo simulator
// that checks them, and the destination policy the control plane uses to
// rank hosts for a migration.
//
// Closed forms: New validates Params (Table I's V, N, growth k and μ, t_d)
// and returns a Model whose Static, Mobile, S and NAt evaluate equations
// 1–3 and the growth models. Every place where the papers are ambiguous is
// an Interpretation field, set with an Option or parsed from text by
// ParseInterpretation, so each figure can name the reading it used.
//
// Simulation: Simulate plays the game on a 2-D grid (or torus, or complete
// graph) of V hosts: N(t) predators random-walk, neighbours of hacked hosts
// are exposed, each attack succeeds with equation 3's fraction, and the
// prey stays or migrates under a SimPolicy. Trials are seeded per index, so
// results depend on the seed only, not on worker count or GOMAXPROCS.
//
// Policy: RankDestinations is the contract the control plane calls. The
// simulator's model-guided policy runs the same scoring core, which is what
// makes the policy comparison (ComparePolicies) meaningful.
//
// docs/model.md records the interpretations and the findings where the
// closed forms and the simulation agree or not.
package model
