// Package bags is ESCAPE's detector: the bag-of-system-calls (BoSC)
// technique of the ESCAPE papers. It learns a per-workload database of the
// bags (syscall count vectors) seen in sliding windows during training, and
// flags an epoch as anomalous when too many of its windows hold unseen bags.
package bags
