// Package figures reproduces Figures 4–9 of the ESCAPE papers (and the
// policy comparison) from Table I: closed form and simulation on the same
// axes, written as PNG, SVG and the CSV behind them. It is kept apart from
// package model so that the control plane does not link gonum/plot.
package figures
