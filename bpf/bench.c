//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Floors for the overhead benchmark: empty programs on both kinds of
 * raw_syscalls/sys_enter hook. Attaching anything there moves every thread
 * onto the syscall slow path; these measure that price alone.
 */
#include "escape.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(empty_btf, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int empty_tp(void *ctx)
{
	return 0;
}
