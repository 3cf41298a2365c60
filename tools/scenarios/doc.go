// Command scenarios runs ESCAPE's container-attack scenarios (issue 25,
// part 3) and measures every scorer on them, as LID-DS does for host IDSs.
//
// Each scenario is a folder beside this file holding scenario.yaml (the
// service it attacks, the normal-traffic generator, the scripted attack and
// the expected verdict) and its attack script; the services' start and
// traffic scripts live in services/<name>/. For each scenario the runner
// creates a network namespace (198.19.200.0/24 on its loopback only) and a
// fresh cgroup, starts the service from its Debian package in both, records
// the cgroup with `escape-sensor record` (real BPF) through a normal phase
// and then the attack, and replays the recording offline: it trains on the
// first half of the normal phase, chooses thresholds on the next fifth,
// scores the rest of the normal phase and the attack with the live scorers
// (bags: bosc, lm calibrated as the daemon does) and with the eval's STIDE
// and papers' BoSC (bags/eval), and writes a markdown table (detected,
// latency from the attack's start, false alarms per hour of normal load)
// atomically to the output directory, beside the recordings.
package main
