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
 * Membership: every task of a watched cgroup carries a mark in task storage
 * (its container's slot). A call of any other task returns after one load
 * from its own task_struct (task->bpf_storage is NULL), which is all an empty
 * program pays: on a host without PCID every syscall flushes the TLB, and the
 * css_set and index pages of the cgroup lookup cost ~60 ns a call. A marked
 * task's call is then attributed by its cgroup, through the watched-cgroup
 * index, so a stale mark costs time but never miscounts; a missing one would
 * lose calls. Marks are set where membership changes: at fork
 * (sched_process_fork, for clone and CLONE_INTO_CGROUP alike), when a task
 * or a whole thread group moves (cgroup_attach_task), and by the loader's
 * remark program for the tasks already in a cgroup when it becomes watched
 * (and, to drop stale marks, when it stops being watched). Each recomputes
 * the mark from the task's own cgroup and the index, so the order in which
 * they run does not matter.
 *
 * Per call of a watched container:
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
	__u64 cgptr;          /* the watched cgroup's address (set by pin) */
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
 * Watched set, keyed by the cgroup's address: task->cgroups->dfl_cgrp is one
 * load from the task's css_set and needs neither the cgroup itself, nor its
 * kernfs node, nor a helper call. On this kind of host (no PCID, so every
 * syscall flushes the TLB) each further kernel object a call touches costs a
 * page walk, and the cgroup-storage lookup this replaces touched four more
 * (docs/sensor.md, "Measured"). Buckets are written by the pin and unpin
 * programs only; the slot holds a reference to its cgroup, so the address
 * cannot be reused by another cgroup while it is in the index.
 */
struct bucket {
	__u64 cg[WATCH_WAYS];   /* cgroup address, 0 = free */
	__u32 slot[WATCH_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WATCH_BUCKETS);
	__type(key, __u32);
	__type(value, struct bucket);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct cstate);
} state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mark);
} marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Keep the record layouts in BTF for bpf2go -type. */
const struct newbag *unused_newbag __attribute__((unused));
const struct pin_args *unused_pin_args __attribute__((unused));
const struct remark_args *unused_remark_args __attribute__((unused));
const struct remark_rec *unused_remark_rec __attribute__((unused));
/* ...and struct cgroup as a struct, not a forward declaration (kfunc check). */
const struct cgroup *unused_cgroup __attribute__((unused));

extern struct cgroup *bpf_cgroup_from_id(__u64 cgid) __ksym;
extern void bpf_cgroup_release(struct cgroup *cgrp) __ksym;
extern struct task_struct *bpf_task_from_vpid(__s32 vpid) __ksym;
extern struct task_struct *bpf_task_from_pid(__s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

/* Open-coded iterator over a process's threads (kernel >= 6.7). */
struct bpf_iter_task {
	__u64 __opaque[3];
} __attribute__((aligned(8)));
extern int bpf_iter_task_new(struct bpf_iter_task *it, struct task_struct *task, unsigned int flags) __ksym;
extern struct task_struct *bpf_iter_task_next(struct bpf_iter_task *it) __ksym;
extern void bpf_iter_task_destroy(struct bpf_iter_task *it) __ksym;
#define BPF_TASK_ITER_PROC_THREADS 2

/* Cgroups are kmalloc'ed and a few KiB apart: mix the low 32 bits of the
 * address (the high ones are the same for every kernel address). The 32-bit
 * move turns the pointer into a plain number, on which the verifier allows
 * arithmetic (it refuses shifting or multiplying a pointer). */
static __always_inline __u32 bucket_of(__u64 cg)
{
	__u32 lo = (__u32)cg;

	return ((lo >> 4) * 0x9E3779B1U) >> 22; /* 10 bits: WATCH_BUCKETS */
}

/* slot_of finds the cgroup's slot in the watched index (one bucket, four
 * compares once unrolled); -1 if not watched. Slots are < 2^31. */
static __always_inline int slot_of(__u64 cg)
{
	__u32 b = bucket_of(cg);
	struct bucket *bk = bpf_map_lookup_elem(&watched, &b);

	if (!bk)
		return -1;
	for (int i = 0; i < WATCH_WAYS; i++)
		if (bk->cg[i] == cg)
			return bk->slot[i] & 0x7fffffff;
	return -1;
}

/*
 * remark makes t's mark agree with its cgroup: set to the slot of a watched
 * cgroup, deleted otherwise. Task storage comes
 * from per-CPU caches that refill only once interrupts are on again, and
 * cgroup_attach_task runs with them off: moving a large thread group can run
 * them dry. A watched task left unmarked loses calls, so this counts as a drop
 * (the container's epochs read as degraded, never clean) and asks userspace,
 * through a REC_REMARK record, to mark it from remark_task, which may sleep.
 */
static __always_inline void remark(struct task_struct *t)
{
	__u64 cg = (__u64)t->cgroups->dfl_cgrp;
	int s = slot_of(cg);
	__u32 slot = s;
	struct cstate *st;
	struct mark *m;

	if (s >= 0 && (st = bpf_map_lookup_elem(&state, &slot)) && st->cgptr == cg) {
		m = bpf_task_storage_get(&marks, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!m) {
			struct remark_rec r = {.kind = REC_REMARK, .slot = slot, .tid = t->pid};

			__sync_fetch_and_add(&st->drops, 1);
			bpf_ringbuf_output(&events, &r, sizeof(r), 0);
			return;
		}
		m->slot = slot;
		m->gen = st->gen;
		return;
	}
	if (t->bpf_storage)
		bpf_task_storage_delete(&marks, t);
}

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

	/* Unwatched: no task storage at all, one load from the task itself. */
	if (!task->bpf_storage)
		return 0;

	/* A marked task (or one with another map's storage): its cgroup decides.
	 * The index costs two pages (css_set, bucket) where reading the mark
	 * back would cost two (storage, element) plus a helper call, and it
	 * keeps a stale mark harmless: marks only need to be a superset. */
	__u64 cg = (__u64)task->cgroups->dfl_cgrp;
	int s = slot_of(cg);

	if (s < 0)
		return 0;
	__u32 slot = s;
	struct cstate *st = bpf_map_lookup_elem(&state, &slot);
	/* The slot names its cgroup too: a bucket caught mid-update is ignored. */
	if (!st || st->cgptr != cg)
		return 0;

	__u16 nr = nr_of(id);
	__u32 w = window;
	__u32 p = 0, size = 0, closing = 0, start = 0, fresh = 0;
	struct newbag nb; /* filled only for a new bag: no zeroing per call */

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
			nb.gen = st->gen;
			__builtin_memcpy(nb.win, st->win, sizeof(nb.win));
		}
	}
	if (st->in_epoch >= epoch_len) {
		p = close_epoch(st, slot, 0, &size);
		closing = 1;
	}
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

/* withdraw removes addr from the index; it reports whether it was there. */
static __always_inline int withdraw(__u64 addr, __u32 slot, int any_slot)
{
	__u32 b = bucket_of(addr);
	struct bucket *bk = bpf_map_lookup_elem(&watched, &b);
	int found = 0;

	if (!bk)
		return 0;
	for (int i = 0; i < WATCH_WAYS; i++) {
		if (bk->cg[i] == addr && (any_slot || bk->slot[i] == slot)) {
			bk->cg[i] = 0;
			found = 1;
		}
	}
	return found;
}

/*
 * pin and unpin run from the loader (BPF_PROG_RUN), never on the hot path.
 * pin publishes the cgroup's address in a free way of its bucket, slot first.
 * If the cgroup is being removed concurrently, either rmdir's program runs
 * after the address is in (and withdraws it), or pin sees the cgroup offline
 * afterwards and withdraws it itself: the atomic add orders pin's store before
 * its read of the flags, and rmdir clears CSS_ONLINE before its tracepoint.
 */
SEC("syscall")
int pin(struct pin_args *a)
{
	__u32 slot = a->slot, b;
	struct cstate *st = bpf_map_lookup_elem(&state, &slot);
	struct cgroup *cg;
	struct bucket *bk;
	__u64 addr;
	int i;

	a->err = -22; /* EINVAL */
	if (!st)
		return 0;
	cg = bpf_cgroup_from_id(a->cgid);
	if (!cg) {
		a->err = -2; /* ENOENT */
		return 0;
	}
	addr = (__u64)cg;
	b = bucket_of(addr);
	bk = bpf_map_lookup_elem(&watched, &b);
	if (!bk)
		goto out;
	st->cgptr = addr;
	for (i = 0; i < WATCH_WAYS; i++) {
		if (bk->cg[i] == addr) {
			a->err = -17; /* EEXIST */
			goto out;
		}
	}
	a->err = -28; /* ENOSPC: WATCH_WAYS watched cgroups share this bucket */
	for (i = 0; i < WATCH_WAYS; i++) {
		if (bk->cg[i] == 0) {
			bk->slot[i] = slot;
			/* The slot before the address that names it (x86 keeps
			 * store order; the hot path also checks st->cgptr). */
			asm volatile("" ::: "memory");
			bk->cg[i] = addr;
			__sync_fetch_and_add(&bk->slot[i], 0); /* full barrier */
			a->err = 0;
			break;
		}
	}
	if (a->err == 0 && !(cg->self.flags & CSS_ONLINE)) {
		withdraw(addr, slot, 0);
		a->err = -2; /* ENOENT: removed meanwhile */
	}
out:
	bpf_cgroup_release(cg);
	return 0;
}

SEC("syscall")
int unpin(struct pin_args *a)
{
	__u32 slot = a->slot;
	struct cstate *st = bpf_map_lookup_elem(&state, &slot);

	/* ENOENT: already withdrawn by rmdir. */
	a->err = st && st->cgptr && withdraw(st->cgptr, slot, 0) ? 0 : -2;
	return 0;
}

/*
 * remark_task recomputes one thread's mark (BPF_PROG_RUN from the loader, for
 * the threads already in a cgroup when it is pinned or unpinned). A thread
 * that moves meanwhile is remarked by cgroup_attach_task after its css_set
 * changed; re-reading the cgroup after the mark closes the window in which
 * this program read the old cgroup and the hook ran before the mark was set.
 */
SEC("syscall")
int remark_task(struct remark_args *a)
{
	struct task_struct *t = a->global ? bpf_task_from_pid(a->tid) : bpf_task_from_vpid(a->tid);
	__u64 cg;
	__u32 fence = 0;

	a->err = -3; /* ESRCH */
	if (!t)
		return 0;
	for (int i = 0; i < 4; i++) {
		cg = (__u64)t->cgroups->dfl_cgrp;
		remark(t);
		/* Full barrier: the mark is stored before the cgroup is read again. */
		__sync_fetch_and_add(&fence, 0);
		if ((__u64)t->cgroups->dfl_cgrp == cg) {
			a->err = 0;
			break;
		}
	}
	bpf_task_release(t);
	if (a->err) /* moved four times while being marked */
		a->err = -11; /* EAGAIN */
	return 0;
}

/* A new task's mark follows its own cgroup (clone or CLONE_INTO_CGROUP). */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(escape_fork, struct task_struct *parent, struct task_struct *child)
{
	remark(child);
	return 0;
}

/* A task, or a whole thread group, moved to another cgroup. The tracepoint
 * fires after the move, so each thread's css_set is already the new one. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(escape_attach, struct cgroup *dst, const char *path, struct task_struct *task, _Bool group)
{
	struct bpf_iter_task it;
	struct task_struct *t;

	remark(task);
	if (!group)
		return 0;
	bpf_iter_task_new(&it, task, BPF_TASK_ITER_PROC_THREADS);
	while ((t = bpf_iter_task_next(&it)))
		remark(t);
	bpf_iter_task_destroy(&it);
	return 0;
}

/* A removed cgroup leaves the index before it can be freed. */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(escape_rmdir, struct cgroup *cgrp, const char *path)
{
	withdraw((__u64)cgrp, 0, 1);
	return 0;
}
