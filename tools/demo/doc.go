// Command demo is `make demo`: ESCAPE's whole loop on the local lab, in the
// order a user watches it. It brings up three test hosts, protects a real
// redis with the control plane, trains the eBPF sensor on a real client's
// traffic, then attacks the container from inside. The sensor's anomaly
// reaches the plane, which rolls the container back; the attack comes
// back, and after N rollbacks the plane live-migrates the container to the
// host the model ranks first, keeping its IP address, while a client holds
// one TCP connection open across the move. It ends with a summary of
// downtimes and the model's survival estimate for the lab, and cleans up
// on exit, Ctrl-C included.
//
// Every figure it prints is measured in the run; none is asserted. It
// exits non-zero if a step of the loop does not happen.
package main
