// Package model is the prey-vs-predator search game of the ESCAPE papers
// (Section IV): closed-form survival probabilities, a Monte Carlo simulator
// that checks them, and the destination policy the control plane uses to
// rank hosts for a migration.
package model
