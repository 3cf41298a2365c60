// Package eval measures the BoSC engine on ADFA-LD: it trains on
// Training_Data_Master, scores Validation (normal) and Attack traces with the
// papers' rule and with the improvements described in docs/bosc.md, and
// reports ROC AUC, detection at fixed false-positive rates, a held-out
// threshold choice, a window/epoch/threshold sweep, and ROC and heat-map
// figures.
//
// Thresholds are chosen on normal data only: the validation traces are split
// deterministically (even/odd position in name order) into a selection half,
// on which thresholds are set, and a reporting half, on which false-positive
// rates are reported. Attack runs 1..Config.DevRuns of each family are the
// dev subset: the only attacks a fitted rule (the logistic combiner, the
// supervised two-class k-NN) or a model choice may see; every reported
// detection rate uses the other runs.
//
// Two further analyses sit beside the per-trace figures. Ceiling (--ceiling)
// measures what no per-trace detector can do on the held-out split: attack
// traces identical to normal ones (an exact bound on DR at each FPR) and
// attack traces with no n-gram or bag unseen in the normal data (a bound for
// novelty detectors). The session view scores each attack run (one
// Attack_Data_Master folder, the processes of one attack session) by an
// aggregate of its traces' scores, against normal pseudo-sessions of
// consecutive validation traces sized like the runs; it is labelled as a
// session view and never replaces the per-trace numbers.
package eval
