// Package control is the daemon's local control socket: a root-only unix
// socket (internal/unixsock: 0600, and the peer's uid checked with
// SO_PEERCRED) speaking one JSON request and one JSON answer per line. `top`
// reads container rows through it and `retrain` makes one identity learn
// again; root is the only role, checked on every connection. Garbage
// requests get a clear error answer.
package control
