// Package top renders the sensor's live table: one row per container with
// its system-call rate, epoch, last epoch's mismatches, profile size, state
// and drops, sorted by a chosen column and fitted to the terminal width
// (80 columns at least).
package top
