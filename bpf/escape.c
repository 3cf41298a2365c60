//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * ESCAPE's sensor: bags of system calls built in the kernel, one epoch at a
 * time.
 *
 * Hook: tp_btf/sys_enter (raw_syscalls). tp_btf is measurably cheaper than the
 * classic tracepoint (no perf trace-buffer record is built; see
 * docs/sensor.md) and, being BPF_PROG_TYPE_TRACING, may use bpf_spin_lock and
 * bpf_timer, which the classic tracepoint type may not.
 *
 * Per call of a watched container (everything else returns after one
 * cgroup-storage lookup):
 *   - the last W syscall numbers sit in a ring; the bag's identity is an
 *     additive hash, sum of keys[nr] over the window, updated in O(1):
 *     subtract the key of the call leaving the window, add the entering one;
 *   - each closed window's hash is appended to the epoch buffer (a plain
 *     store: no helper, no map lookup on the hot path);
 *   - a hash missing from a direct-mapped cache of hashes already shipped is
 *     new: its exact window goes out once (REC_NEWBAG) so that userspace
 *     learns the count vector, not only the hash, and detects collisions;
 *   - after E calls the epoch buffer goes out in one ring-buffer record.
 *
 * Threads: one window per container stream. All threads of the container
 * feed one ring, serialised by the slot's spin lock, in the order they enter
 * the kernel; this is the stream sysdig logged in the papers and the stream
 * bags.Windower replays offline, so kernel and offline bags are identical.
 */
#include "escape.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader before load (RewriteConstants). */
const volatile __u32 window = 10;          /* W, 1..MAX_WINDOW */
const volatile __u32 epoch_len = 1000;     /* E, 1..MAX_EPOCH */
const volatile __u64 flush_ns = 5000000000ULL; /* idle flush; 0 = none */
const volatile __u64 keys[NR_KEYS];        /* random 64-bit key per number */

struct ep_buf {
	struct epoch_hdr hdr;
	__u64 hash[MAX_EPOCH];
};

struct cstate {
	struct bpf_spin_lock lock;
	__u32 gen;            /* written by userspace when the slot is assigned */
	__u32 pos;            /* next ring position */
	__u32 filled;         /* calls in the ring, up to W */
	__u32 in_epoch;       /* calls in the open epoch */
	__u32 nwin;           /* windows closed in the open epoch */
	__u32 seq;            /* epochs closed; parity selects the epoch buffer */
	__u32 drops;          /* failed ring-buffer outputs (atomic, outside the lock) */
	__u32 timer_ok;       /* bpf_timer_init done */
	__u64 hash;           /* current window's bag identity */
	__u64 total;          /* calls ever */
	__u16 win[MAX_WINDOW];
	struct bpf_timer timer;
	__u64 seen[SEEN_SLOTS];
	/* Double buffer: epoch k fills ep[k&1] while ep[(k-1)&1] is copied out. */
	struct ep_buf ep[2];
};

/*
 * Watched set: cgroup local storage holding the state slot, created by
 * userspace (key: a cgroup directory fd) for watched cgroups only. Finding it
 * is a pointer walk from the task to its cgroup and that cgroup's storage
 * list; an unwatched cgroup has none and returns at once. Measured cheaper
 * than bpf_get_current_cgroup_id() plus a hash lookup (docs/sensor.md).
 */
struct {
	__uint(type, MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct cstate);
} state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Keep the record layouts in BTF for bpf2go -type. */
const struct newbag *unused_newbag __attribute__((unused));

/* close_epoch finalises the open epoch into its buffer's header. Caller holds
 * the lock; it returns the buffer index to ship and the record size. */
static __always_inline __u32 close_epoch(struct cstate *st, __u32 slot, __u32 flags, __u32 *size)
{
	__u32 p = st->seq & 1;
	__u32 n = st->nwin;

	if (n > MAX_EPOCH)
		n = MAX_EPOCH;
	st->ep[p].hdr.kind = REC_EPOCH;
	st->ep[p].hdr.slot = slot;
	st->ep[p].hdr.gen = st->gen;
	st->ep[p].hdr.seq = st->seq;
	st->ep[p].hdr.calls = st->in_epoch;
	st->ep[p].hdr.windows = n;
	st->ep[p].hdr.flags = flags;
	st->ep[p].hdr.drops = st->drops;
	st->ep[p].hdr.total = st->total;
	st->seq++;
	st->in_epoch = 0;
	st->nwin = 0;
	*size = sizeof(struct epoch_hdr) + n * sizeof(__u64);
	return p;
}

static __always_inline void ship_epoch(struct cstate *st, __u32 p, __u32 size)
{
	if (size > sizeof(struct ep_buf))
		return;
	if (bpf_ringbuf_output(&events, &st->ep[p & 1], size, 0))
		__sync_fetch_and_add(&st->drops, 1);
}

/* Idle flush: fires flush_ns after an epoch's first call. */
static int flush_cb(void *map, __u32 *key, struct cstate *st)
{
	__u32 p = 0, size = 0, closing = 0;

	bpf_spin_lock(&st->lock);
	if (st->in_epoch > 0) {
		p = close_epoch(st, *key, EPOCH_FLUSHED, &size);
		closing = 1;
	}
	bpf_spin_unlock(&st->lock);
	if (closing)
		ship_epoch(st, p, size);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(escape_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 *slotp = bpf_cgrp_storage_get(&watched, task->cgroups->dfl_cgrp, 0, 0);
	if (!slotp)
		return 0; /* unwatched: the only cost is this lookup */

	__u32 slot = *slotp;
	struct cstate *st = bpf_map_lookup_elem(&state, &slot);
	if (!st)
		return 0;

	__u16 nr = nr_of(id);
	__u32 w = window;
	__u32 p = 0, size = 0, closing = 0, start = 0, fresh = 0;
	struct newbag nb = {};

	if (w < 1 || w > MAX_WINDOW)
		return 0;

	bpf_spin_lock(&st->lock);
	__u32 pos = st->pos & (MAX_WINDOW - 1);
	if (st->filled >= w)
		st->hash -= keys[key_of(st->win[pos])]; /* the call leaving the window */
	else
		st->filled++;
	st->win[pos] = nr;
	st->hash += keys[key_of(nr)];
	st->pos = pos + 1 >= w ? 0 : pos + 1;
	st->total++;
	if (st->in_epoch++ == 0)
		start = 1;
	if (st->filled >= w) {
		__u64 h = st->hash;
		__u32 i = st->nwin;

		st->ep[st->seq & 1].hash[i & (MAX_EPOCH - 1)] = h;
		st->nwin = i + 1;
		if (st->seen[h & (SEEN_SLOTS - 1)] != h) {
			st->seen[h & (SEEN_SLOTS - 1)] = h;
			fresh = 1;
			nb.hash = h;
			__builtin_memcpy(nb.win, st->win, sizeof(nb.win));
		}
	}
	if (st->in_epoch >= epoch_len) {
		p = close_epoch(st, slot, 0, &size);
		closing = 1;
	}
	nb.gen = st->gen;
	bpf_spin_unlock(&st->lock);

	if (fresh) {
		nb.kind = REC_NEWBAG;
		nb.slot = slot;
		nb.w = w;
		if (bpf_ringbuf_output(&events, &nb, sizeof(nb), 0)) {
			__sync_fetch_and_add(&st->drops, 1);
			/* Forget it so that the next occurrence is shipped again. */
			st->seen[nb.hash & (SEEN_SLOTS - 1)] = 0;
		}
	}
	if (closing)
		ship_epoch(st, p, size);
	if (start && flush_ns) {
		if (!st->timer_ok) {
			bpf_timer_init(&st->timer, &state, CLOCK_MONOTONIC);
			bpf_timer_set_callback(&st->timer, flush_cb);
			st->timer_ok = 1;
		}
		bpf_timer_start(&st->timer, flush_ns, 0);
	}
	return 0;
}
