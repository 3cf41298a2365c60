package bpf

// The generated *_bpfel.go and *_bpfel.o files are committed: building ESCAPE
// needs no clang. Regenerate with `go generate ./bpf` (clang >= 14, libbpf-dev).

//go:generate go tool bpf2go -target bpfel -no-global-types -type epoch_hdr -type newbag -type pin_args -type remark_args -type remark_rec -type cstate Sensor escape.c -- -O2 -g -Wall -Werror -I. -I/usr/include/x86_64-linux-gnu -mcpu=v3
//go:generate go tool bpf2go -target bpfel -type call_rec Stream stream.c -- -O2 -g -Wall -Werror -I. -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -target bpfel Bench bench.c -- -O2 -g -Wall -Werror -I. -I/usr/include/x86_64-linux-gnu
