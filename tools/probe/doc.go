// Package probe is the client the demo and the operators' drills use to
// see a protected service the way its users do: it holds one TCP
// connection to a redis server, sends a request every interval, and
// reports each outage with its length, whether the connection was reset,
// and whether the data survived (a key written at the start is read back;
// a counter shows whether state was kept, rolled back or lost).
package probe
