// Package syscalls holds the explicit i386 and x86_64 Linux system-call
// tables (name <-> number) and maps numbers across the two architectures by
// name. ADFA-LD traces are i386 numbers, the live sensor and LID-DS/strace
// traces are x86_64; the tables keep each stream in its own number space and
// make any cross-arch comparison explicit.
//
// The tables are generated from the kernel uapi headers; regenerate with
// go generate after a header update.
package syscalls

//go:generate go run ./internal/gen -source "linux-libc-dev 6.1 uapi headers" -o zsyscalls.go
