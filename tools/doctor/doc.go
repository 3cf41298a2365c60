// Package doctor is ESCAPE's preflight: it checks that the kernel, the
// container runtime and CRIU can do what each ESCAPE mode needs, and names
// the remedy for every failed check.
package doctor
