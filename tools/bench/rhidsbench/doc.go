// Command rhidsbench times ESCAPE's offline `train` against the BoSC
// authors' rhids classifier on the same `strace -f` trace, side by side in
// one run: it records the trace itself (strace -f of tar+gzip, ls -lR and a
// file-reading find), concatenates it -repeat times, then runs both tools
// -reps times in alternating order and reports the medians of wall time and
// peak RSS (wait4's ru_maxrss) and their ratios.
//
//	go run ./tools/bench/rhidsbench --out out/bench-rhids.md   # make bench-rhids
//
// rhids runs as its authors did: java -jar classifier.jar -v 0 -e 1000
// -t 0.99 -d 10 -i TRACE, with the `syscalls` index file it reads from its
// working directory written from bags/syscalls (x86_64).
package main
