/*
 * Port-I/O and MMIO buses: registration and dispatch. See docs/io.md
 * ("Dispatch without locks") for the read-copy-update scheme and why its
 * orderings are enough.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../internal.h"

/*
 * The bus a thread is currently dispatching on, to refuse registration from
 * inside a handler (which would wait for its own dispatch to end) with an
 * error.
 */
static _Thread_local const struct vmm__iobus *dispatching
    __attribute__((tls_model("initial-exec")));

bool vmm__iobus_in_handler(const vmm_vm *vm) {
  return dispatching != NULL &&
         (dispatching == &vm->pio || dispatching == &vm->mmio);
}

static struct vmm__io_table *table_alloc(size_t cap) {
  struct vmm__io_table *t =
      malloc(sizeof(*t) + cap * sizeof(struct vmm__io_entry));
  if (t != NULL) {
    t->count = 0;
    t->cap = cap;
  }
  return t;
}

int vmm__iobus_init(struct vmm__iobus *bus, uint64_t limit, unsigned nreaders) {
  memset(bus, 0, sizeof(*bus));
  bus->limit = limit;
  /* Whether writers can make readers' compiler barriers full fences. */
  bus->fence = !vmm__membarrier_usable();
  bus->nreaders = nreaders;
  bus->readers = aligned_alloc(_Alignof(struct vmm__io_reader),
                               nreaders * sizeof(struct vmm__io_reader));
  struct vmm__io_table *t = table_alloc(0);
  if (bus->readers == NULL || t == NULL) {
    free(bus->readers);
    free(t);
    return VMM_ENOMEM;
  }
  for (unsigned i = 0; i < nreaders; i++) {
    atomic_init(&bus->readers[i].seq, 0);
    bus->readers[i].hint = 0;
  }
  atomic_init(&bus->table, t);
  int err = -pthread_mutex_init(&bus->lock, NULL);
  if (err == 0 && (err = -pthread_rwlock_init(&bus->anon, NULL)) < 0)
    pthread_mutex_destroy(&bus->lock);
  if (err < 0) {
    free(bus->readers);
    free(t);
  }
  return err;
}

/* No reader is left (no vCPU runs): the tables and counters go. */
void vmm__iobus_fini(struct vmm__iobus *bus) {
  struct vmm__io_table *t = atomic_load(&bus->table);
  for (size_t i = 0; i < t->count; i++)
    free(t->e[i].hits);
  free(t);
  free(bus->spare);
  free(bus->readers);
  bus->spare = NULL;
  bus->readers = NULL;
  pthread_rwlock_destroy(&bus->anon);
  pthread_mutex_destroy(&bus->lock);
}

/* First range of t whose end is above addr. */
static size_t lower_bound(const struct vmm__io_table *t, uint64_t addr) {
  size_t lo = 0, hi = t->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct vmm__io_entry *r = &t->e[mid];
    if (r->base + r->len <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* ------------------------------------------------------------------------ */
/* Writers: lock held                                                       */

/*
 * Make every reader's earlier slot store visible to this thread, or its
 * next table load see what this thread stored before (docs/io.md).
 */
static void readers_barrier(const struct vmm__iobus *bus) {
  if (bus->fence)
    atomic_thread_fence(memory_order_seq_cst);
  else
    vmm__membarrier();
}

/* Let a reader inside a handler finish: yield at first, as fast handlers
   end within microseconds, then sleep up to 1 ms at a time. */
static void backoff(unsigned *round) {
  if (*round < 64) {
    sched_yield();
  } else {
    unsigned shift = *round - 64 < 5 ? *round - 64 : 5;
    struct timespec ts = {0, 31250l << shift}; /* 31 us .. 1 ms */
    nanosleep(&ts, NULL);
  }
  (*round)++;
}

/*
 * The grace period after a new table was published: returns once no vCPU
 * is still inside a dispatch that may have loaded an older table. A slot
 * seen even is outside dispatch, and its next entry will load the new
 * table; a slot seen odd waits until it changes, i.e. until that dispatch
 * has ended (a vCPU in a slow handler is waited for). vCPUs created later
 * start outside dispatch.
 */
static void grace_period(struct vmm__iobus *bus) {
  readers_barrier(bus);
  for (unsigned i = 0; i < bus->nreaders; i++) {
    atomic_uint_least64_t *seq = &bus->readers[i].seq;
    uint64_t s = atomic_load_explicit(seq, memory_order_acquire);
    unsigned round = 0;
    while ((s & 1) != 0 && atomic_load_explicit(seq, memory_order_acquire) == s)
      backoff(&round);
  }
}

/*
 * Publish t as the bus's table, wait for the grace period, and keep the
 * old table as the spare (freeing the previous spare). Readers without a
 * vCPU hold the read side of anon for their whole dispatch: taking the
 * write side to publish waits for the ones that may have the old table.
 */
static void publish(struct vmm__iobus *bus, struct vmm__io_table *t) {
  struct vmm__io_table *old =
      atomic_load_explicit(&bus->table, memory_order_relaxed);
  pthread_rwlock_wrlock(&bus->anon);
  atomic_store_explicit(&bus->table, t, memory_order_release);
  pthread_rwlock_unlock(&bus->anon);
  grace_period(bus);
  free(bus->spare);
  bus->spare = old;
}

/* A table with room for n entries: the spare if it is big enough. */
static struct vmm__io_table *table_for(struct vmm__iobus *bus, size_t n) {
  struct vmm__io_table *t = bus->spare;
  if (t != NULL && t->cap >= n) {
    bus->spare = NULL;
    return t;
  }
  /* Some headroom, so that registrations in a row rarely allocate. */
  return table_alloc(n < 8 ? 8 : n + n / 2);
}

static struct vmm__iobus *bus_of(vmm_vm *vm, enum vmm_io_space space) {
  switch (space) {
  case VMM_IO_PORT: return &vm->pio;
  case VMM_IO_MMIO: return &vm->mmio;
  }
  return NULL;
}

int vmm_io_register(vmm_vm *vm, enum vmm_io_space space, uint64_t base,
                    uint64_t len, vmm_io_handler_fn fn, void *opaque) {
  if (vm == NULL || fn == NULL || len == 0)
    return VMM_EINVAL;
  struct vmm__iobus *bus = bus_of(vm, space);
  if (bus == NULL)
    return VMM_EINVAL;
  if (base >= bus->limit || len > bus->limit - base)
    return VMM_EINVAL;
  if (vmm__iobus_in_handler(vm))
    return VMM_ESTATE;

  int err = 0;
  pthread_mutex_lock(&bus->lock);
  const struct vmm__io_table *cur =
      atomic_load_explicit(&bus->table, memory_order_relaxed);
  size_t i = lower_bound(cur, base);
  if (i < cur->count && cur->e[i].base < base + len) {
    err = VMM_EOVERLAP;
    goto out;
  }
  /* A line of its own: vCPUs hammering two ranges do not share one. */
  uint64_t *hits = aligned_alloc(64, 64);
  struct vmm__io_table *t = table_for(bus, cur->count + 1);
  if (hits == NULL || t == NULL) {
    free(hits);
    if (t != NULL && bus->spare == NULL)
      bus->spare = t;
    else
      free(t);
    err = VMM_ENOMEM;
    goto out;
  }
  *hits = 0;
  memcpy(t->e, cur->e, i * sizeof(t->e[0]));
  t->e[i] = (struct vmm__io_entry){base, len, fn, opaque, hits};
  memcpy(&t->e[i + 1], &cur->e[i], (cur->count - i) * sizeof(t->e[0]));
  t->count = cur->count + 1;
  publish(bus, t);
out:
  pthread_mutex_unlock(&bus->lock);
  return err;
}

int vmm_io_unregister(vmm_vm *vm, enum vmm_io_space space, uint64_t base) {
  if (vm == NULL)
    return VMM_EINVAL;
  struct vmm__iobus *bus = bus_of(vm, space);
  if (bus == NULL)
    return VMM_EINVAL;
  if (vmm__iobus_in_handler(vm))
    return VMM_ESTATE;

  int err = VMM_ENOENT;
  pthread_mutex_lock(&bus->lock);
  const struct vmm__io_table *cur =
      atomic_load_explicit(&bus->table, memory_order_relaxed);
  size_t i = lower_bound(cur, base);
  if (i < cur->count && cur->e[i].base == base) {
    /* The spare is the table before the last change, which held one
       entry more or one less than cur: no allocation, so unregistering
       cannot fail for want of memory. */
    struct vmm__io_table *t = table_for(bus, cur->count - 1);
    if (t == NULL) {
      err = VMM_ENOMEM;
      goto out;
    }
    uint64_t *hits = cur->e[i].hits;
    memcpy(t->e, cur->e, i * sizeof(t->e[0]));
    memcpy(&t->e[i], &cur->e[i + 1], (cur->count - i - 1) * sizeof(t->e[0]));
    t->count = cur->count - 1;
    publish(bus, t);
    free(hits); /* after the grace period: no dispatch can count on it */
    err = 0;
  }
out:
  pthread_mutex_unlock(&bus->lock);
  return err;
}

/* ------------------------------------------------------------------------ */
/* Readers                                                                  */

/* Inlined: the vCPU path is the hot one, and a call costs a few ns. */
static inline __attribute__((always_inline)) int
call(struct vmm__iobus *bus, const struct vmm__io_table *t, vmm_vcpu *vcpu,
     size_t *hint, uint64_t addr, void *data, uint32_t len, bool is_write) {
  size_t i = *hint;
  /* A guest's accesses mostly repeat the last device: no search then. */
  if (i >= t->count || addr - t->e[i].base >= t->e[i].len) {
    i = lower_bound(t, addr);
    if (i >= t->count)
      return VMM_IO_DECLINED;
    *hint = i;
  }
  const struct vmm__io_entry *r = &t->e[i];
  if (!(r->base <= addr && addr - r->base <= r->len - len && len <= r->len))
    return VMM_IO_DECLINED;
  const struct vmm__iobus *prev = dispatching;
  dispatching = bus;
  __atomic_fetch_add(r->hits, 1, __ATOMIC_RELAXED);
  int rc = r->fn(vcpu, addr, data, len, is_write, r->opaque);
  dispatching = prev;
  return rc > 0 ? VMM_IO_DECLINED : rc;
}

static __attribute__((noinline)) int dispatch_anon(struct vmm__iobus *bus,
                                                   uint64_t addr, void *data,
                                                   uint32_t len,
                                                   bool is_write) {
  size_t hint = SIZE_MAX;
  pthread_rwlock_rdlock(&bus->anon);
  int rc = call(bus, atomic_load_explicit(&bus->table, memory_order_acquire),
                NULL, &hint, addr, data, len, is_write);
  pthread_rwlock_unlock(&bus->anon);
  return rc;
}

int vmm__iobus_dispatch(struct vmm__iobus *bus, vmm_vcpu *vcpu, uint64_t addr,
                        void *data, uint32_t len, bool is_write) {
  if (VMM__UNLIKELY(vcpu == NULL))
    return dispatch_anon(bus, addr, data, len, is_write);
  struct vmm__io_reader *rd = &bus->readers[vcpu->index];
  atomic_uint_least64_t *seq = &rd->seq;
  uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
  /* A dispatch nested in a handler of this vCPU is covered by the outer
     one's mark, which writers wait out. */
  bool outer = (s & 1) == 0;
  if (outer) {
    atomic_store_explicit(seq, s + 1, memory_order_relaxed);
    /* The slot store must be visible before the table load reads, or a
       writer could miss this reader and free the table it loads. With
       membarrier the writer imposes that order when it needs it, so only
       the compiler must keep it here. */
    if (VMM__UNLIKELY(bus->fence))
      atomic_thread_fence(memory_order_seq_cst);
    else
      atomic_signal_fence(memory_order_seq_cst);
  }
  int rc = call(bus, atomic_load_explicit(&bus->table, memory_order_acquire),
                vcpu, &rd->hint, addr, data, len, is_write);
  /* Release: the handler's accesses to its opaque are done before a
     writer sees this dispatch end and lets the opaque be freed. */
  if (outer)
    atomic_store_explicit(seq, s + 2, memory_order_release);
  return rc;
}

int vmm__iobus_snapshot(struct vmm__iobus *bus, struct vmm__io_range **out,
                        size_t *count) {
  int err = 0;
  *out = NULL;
  *count = 0;
  pthread_rwlock_rdlock(&bus->anon);
  const struct vmm__io_table *t =
      atomic_load_explicit(&bus->table, memory_order_acquire);
  if (t->count > 0) {
    struct vmm__io_range *r = malloc(t->count * sizeof(*r));
    if (r == NULL) {
      err = VMM_ENOMEM;
    } else {
      for (size_t i = 0; i < t->count; i++) {
        const struct vmm__io_entry *e = &t->e[i];
        r[i] =
            (struct vmm__io_range){e->base, e->len, e->fn, e->opaque,
                                   __atomic_load_n(e->hits, __ATOMIC_RELAXED)};
      }
      *out = r;
      *count = t->count;
    }
  }
  pthread_rwlock_unlock(&bus->anon);
  return err;
}

void vmm__iobus_reset_hits(struct vmm__iobus *bus) {
  pthread_rwlock_rdlock(&bus->anon);
  const struct vmm__io_table *t =
      atomic_load_explicit(&bus->table, memory_order_acquire);
  for (size_t i = 0; i < t->count; i++)
    __atomic_store_n(t->e[i].hits, 0, __ATOMIC_RELAXED);
  pthread_rwlock_unlock(&bus->anon);
}
