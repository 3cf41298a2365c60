// Package trace reads system-call traces into streams of syscall numbers for
// the BoSC engine, and defines ESCAPE's own recording format.
//
// Readers: ADFA-LD (one trace per file, i386 numbers), sysdig/LID-DS text
// (`ts uid pid proc tid syscall dir args`, enter events only), `strace -f`
// output, and the recording format (Writer/RecordReader), a versioned,
// CRC-framed binary stream with container identity, arch and optional
// timestamps and thread ids; see docs/bosc.md for the byte layout.
//
// Every reader returns io.EOF at a clean end and a wrapped, line-numbered
// error (ErrSyntax, ErrLineTooLong, ErrUnknownSyscall, ErrEmpty, ErrTruncated,
// ErrChecksum, ErrFormat) otherwise. Events read before an error stay valid:
// nothing already read is lost. No reader's memory grows with its input
// except through the events the caller keeps.
//
// The strace reader is on the offline train path, where text parsing used to
// dominate: it scans each line once, converting the pid while it scans it and
// hashing the call name on the way to its '(' for a lookup in a read-only
// per-arch index, and never looks at the arguments. A Prefetcher runs any
// Reader ahead in its own goroutine, in bounded blocks and in exact order,
// so that parsing overlaps with bagging and training.
package trace
