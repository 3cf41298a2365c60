// Package control is the daemon's local control socket: a unix socket in a
// root-only directory (0700, socket 0600, and the peer's uid checked with
// SO_PEERCRED) speaking one JSON request and one JSON answer per line. `top`
// reads container rows through it. Garbage requests get a clear error answer.
package control
