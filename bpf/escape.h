/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Shared definitions of ESCAPE's BPF programs. A small header instead of a
 * multi-megabyte vmlinux.h: the programs read no kernel structure (tp_btf
 * hands the syscall number over as an argument), so the UAPI headers suffice.
 * The record layouts below are mirrored in Go by bpf2go (-type ...).
 */
#ifndef ESCAPE_BPF_H
#define ESCAPE_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct pt_regs; /* only passed through, never dereferenced */

/*
 * The few kernel types the sensor reads, CO-RE style: only the fields used,
 * relocated against the running kernel's BTF at load time.
 */
struct cgroup_subsys_state {
	unsigned int flags; /* CSS_ONLINE until rmdir */
} __attribute__((preserve_access_index));
struct cgroup {
	struct cgroup_subsys_state self;
} __attribute__((preserve_access_index));
#define CSS_ONLINE (1 << 1)
struct css_set {
	struct cgroup *dfl_cgrp; /* the task's cgroup in the cgroup2 hierarchy */
} __attribute__((preserve_access_index));
struct task_struct {
	int pid; /* thread id, in the initial pid namespace */
	struct css_set *cgroups;
	void *bpf_storage; /* NULL until some task-storage map holds a value for it */
} __attribute__((preserve_access_index));

/* Watched-cgroup index: direct-mapped buckets of WATCH_WAYS cgroup pointers. */
#define WATCH_BUCKETS 1024
#define WATCH_WAYS 4

/* A watched task's mark (task storage). The hot path only tests that the
 * task has storage; slot and generation say what it was marked for, for
 * tests and diagnostics. */
struct mark {
	__u32 slot;
	__u32 gen;
};

/* Arguments of the remark program (BPF_PROG_RUN from the loader). */
struct remark_args {
	__s32 tid;  /* thread id: in the loader's pid namespace, or the initial one if global */
	__s32 err;  /* out: 0, or a negative errno */
	__u32 global; /* tid is from a REC_REMARK record (initial pid namespace) */
	__u32 pad;
};

/* A mark the kernel could not allocate (no memory in an atomic context):
 * userspace marks the thread from the remark program, where it may sleep. */
struct remark_rec {
	__u32 kind;
	__u32 slot;
	__s32 tid; /* initial pid namespace */
	__u32 pad;
};

/* Arguments of the pin/unpin programs (BPF_PROG_RUN from the loader). */
struct pin_args {
	__u64 cgid; /* cgroup id (cgroup2 directory inode) */
	__u32 slot; /* state slot */
	__s32 err;  /* out: 0, or a negative errno */
};

#define MAX_WINDOW 16    /* bags.MaxWindow */
#define MAX_EPOCH 4096   /* largest epoch length E (the papers use 1,000-4,000) */
#define NR_KEYS 512      /* syscall numbers 0..510 keep their own key... */
#define NR_UNKNOWN_KEY (NR_KEYS - 1) /* ...every other number shares this one */
#define NR_UNKNOWN 0xFFFE /* bags.Unknown: the number shipped for them */
#define SEEN_SLOTS 4096  /* direct-mapped cache of bag hashes already shipped */

#define CLOCK_MONOTONIC 1

/* Ring-buffer record kinds (first field of every record). */
enum rec_kind {
	REC_EPOCH = 1,  /* struct epoch_hdr followed by windows x __u64 bag hashes */
	REC_NEWBAG = 2, /* struct newbag: the exact window of a hash not shipped before */
	REC_CALL = 3,   /* struct call_rec: one call (streaming/recording program) */
	REC_REMARK = 4, /* struct remark_rec: a watched thread left unmarked */
};

/* Epoch flags. */
#define EPOCH_FLUSHED 1 /* closed by the idle timer before E calls */

struct epoch_hdr {
	__u32 kind;
	__u32 slot;    /* state slot of the container */
	__u32 gen;     /* slot generation: tells a reused slot from its previous owner */
	__u32 seq;     /* epoch number within this slot generation */
	__u32 calls;   /* calls in the epoch (E unless flushed) */
	__u32 windows; /* hashes that follow */
	__u32 flags;
	__u32 drops;   /* cumulative failed ring-buffer outputs of this slot */
	__u64 total;   /* cumulative calls of this slot */
};

struct newbag {
	__u32 kind;
	__u32 slot;
	__u32 gen;
	__u32 w;                 /* window size: win[0..w) are meaningful */
	__u64 hash;              /* sum of keys[] of the window's calls */
	__u16 win[MAX_WINDOW];   /* the window, ring order (only the multiset matters) */
};

struct call_rec {
	__u32 kind;
	__u16 nr;   /* syscall number after the NR_UNKNOWN folding */
	__u16 pad;
	__u32 tid;
	__u32 pad2;
	__u64 ts;   /* bpf_ktime_get_ns() */
	__u64 cgid;
};

/* Hooks are restricted to x86_64 numbers; bags.Unknown folding below. */
/* nr_of folds a raw syscall id to what a bag holds: 0..510 as is, every
 * negative, huge or x32-flagged id to bags.Unknown. */
static __always_inline __u16 nr_of(long id)
{
	if (id >= 0 && id < NR_UNKNOWN_KEY)
		return (__u16)id;
	return NR_UNKNOWN;
}

static __always_inline __u32 key_of(__u16 nr)
{
	return nr < NR_UNKNOWN_KEY ? nr : NR_UNKNOWN_KEY;
}

#endif
