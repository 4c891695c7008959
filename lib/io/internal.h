/*
 * Port-I/O and MMIO buses: internal interface.
 */
#ifndef LIBVMM_IO_INTERNAL_H
#define LIBVMM_IO_INTERNAL_H

#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdatomic.h>

/* One range as vmm__iobus_snapshot() reports it. */
struct vmm__io_range {
  uint64_t base, len;
  vmm_io_handler_fn fn;
  void *opaque;
  uint64_t hits; /* accesses dispatched to the handler (statistics) */
};

/* A range in a published table. hits points to the range's own counter,
   which lives from registration to the grace period after unregistration,
   so counts survive the replacement of the tables that point to it. */
struct vmm__io_entry {
  uint64_t base, len;
  vmm_io_handler_fn fn;
  void *opaque;
  uint64_t *hits; /* relaxed atomic adds: several vCPUs may dispatch */
};

/* An immutable table of sorted, non-overlapping ranges. cap is the room
   allocated, so that a retired table can be reused by the next change. */
struct vmm__io_table {
  size_t count, cap;
  struct vmm__io_entry e[];
};

/*
 * A vCPU's reader slot on one bus: odd while the vCPU's thread is inside
 * dispatch (a read-side critical section), bumped on entry and on exit.
 * Written only by the thread running the vCPU, with plain stores; one cache
 * line each so that vCPUs do not share them.
 */
struct vmm__io_reader {
  _Alignas(64) atomic_uint_least64_t seq;
  /* Index of the range this vCPU reached last, in whatever table: a hint
     checked against the current table before use (ranges never overlap,
     so a range holding the access is the one). */
  size_t hint;
};

/*
 * A bus publishes an immutable table through an atomic pointer; readers
 * (dispatch) take no lock and execute no locked instruction but the hit
 * count's add. Writers (registration) serialize on lock, publish a new
 * table, then wait for a grace period: until no reader that could have
 * seen the old table is still inside dispatch. Only then is the old table
 * reused or freed and does vmm_io_unregister() return, so a handler is
 * never called after that. Readers without a vCPU (tests, statistics) use
 * the read side of anon, which writers take to publish. A handler must
 * not register or unregister on its own VM (detected, and refused with
 * -VMM_ESTATE, instead of waiting for itself forever). docs/io.md has the
 * memory-ordering argument.
 */
struct vmm__iobus {
  /* Read by every dispatch. */
  struct vmm__io_table *_Atomic table;
  struct vmm__io_reader *readers; /* one per vCPU index */
  unsigned nreaders;
  /* No membarrier(2): readers order their slot store before the table
     load with a full fence, and writers fence instead of membarrier. */
  bool fence;

  uint64_t limit;        /* highest address + 1 */
  pthread_mutex_t lock;  /* writers */
  pthread_rwlock_t anon; /* readers without a vCPU; write side: publishing */
  struct vmm__io_table *spare; /* retired after a grace period, or NULL */
};

/*
 * Set up a bus for addresses below limit and vCPU indexes below nreaders.
 * Returns 0, -VMM_ENOMEM or a -errno from the locks' initialization.
 */
int vmm__iobus_init(struct vmm__iobus *bus, uint64_t limit, unsigned nreaders);
void vmm__iobus_fini(struct vmm__iobus *bus);

/*
 * Dispatch one access. Returns 0 if a handler took it, VMM_IO_DECLINED if
 * no handler covers it or the handler declined, or the handler's negative
 * error. An access must lie entirely in one range to be dispatched.
 * With a vcpu, only on the thread running it (or, while it runs nowhere,
 * on one thread at a time): its reader slot is not shared. Without one,
 * on any thread (a slower path with a reader lock).
 */
int vmm__iobus_dispatch(struct vmm__iobus *bus, vmm_vcpu *vcpu, uint64_t addr,
                        void *data, uint32_t len, bool is_write);

/*
 * Copy the ranges (with their hit counts) into a new array (*out, freed by
 * the caller; NULL when there are none). Returns 0 or -VMM_ENOMEM.
 */
int vmm__iobus_snapshot(struct vmm__iobus *bus, struct vmm__io_range **out,
                        size_t *count);
/* Zero every range's hit count. */
void vmm__iobus_reset_hits(struct vmm__iobus *bus);

/* True while the calling thread runs an I/O handler of vm. */
bool vmm__iobus_in_handler(const vmm_vm *vm);

/*
 * The devices of a VM and the lines they drive (lib/io/dev.c).
 *
 * list is guarded by lock. The interrupt state is guarded by irq_lock, a
 * leaf lock: devices call vmm_dev_irq_set() with their own lock held, and
 * the engine's irq_line() and the host's handler are called under it.
 */
struct vmm__devs {
  pthread_mutex_t lock;
  vmm_dev **list;
  size_t count, cap;

  pthread_mutex_t irq_lock;
  uint32_t irq_level;                  /* bit n: line n asserted */
  uint32_t irq_host;                   /* bit n: the host asserts line n */
  uint16_t irq_sources[VMM_IRQ_LINES]; /* devices asserting each line */
  vmm_irq_handler_fn irq_fn;
  void *irq_opaque;
};

int vmm__devs_init(struct vmm__devs *devs);
/* The host's source on a line (vmm_vm_irq_line()), ORed with the devices'. */
int vmm__irq_host_set(vmm_vm *vm, uint32_t gsi, bool level);
/* Detach every device (reverse order), then free the table. */
void vmm__devs_fini(vmm_vm *vm);

/*
 * Lay a caller's configuration (a struct starting with size_t size, from
 * an older or the current header) over defaults already in dst. Returns 0,
 * or -VMM_EINVAL for a NULL or mis-sized user struct.
 */
int vmm__config_merge(void *dst, size_t dst_size, const void *user);

/*
 * The name of the device that registered the range at base in space
 * (through vmm_dev_io_register()), copied into name; false if none did.
 */
bool vmm__dev_range_owner(vmm_vm *vm, enum vmm_io_space space, uint64_t base,
                          char name[VMM_DEV_NAME_MAX + 1]);

/* The device's opaque pointer if dev was attached with ops (a stock
   device's type check), else NULL. */
void *vmm__dev_data(const vmm_dev *dev, const struct vmm_dev_ops *ops);

/*
 * Helpers for device register models. A multi-byte access to byte-wide
 * registers is split as an 8-bit ISA bus splits it: one access per byte at
 * consecutive addresses. fn handles one byte.
 */
typedef void (*vmm__byte_fn)(void *dev, uint64_t addr, uint8_t *byte,
                             bool is_write);
void vmm__io_bytes(void *dev, uint64_t addr, void *data, uint32_t len,
                   bool is_write, vmm__byte_fn fn);

/*
 * Checked reads of saved device state (untrusted JSON). Each returns 0 or
 * -VMM_EINVAL when the member is missing, of the wrong type or out of
 * range; *out is only written on success.
 */
struct json_t;
int vmm__json_uint(const struct json_t *obj, const char *key, uint64_t max,
                   uint64_t *out);
int vmm__json_bool(const struct json_t *obj, const char *key, bool *out);
/* An array of at most max integers 0..255. */
int vmm__json_bytes(const struct json_t *obj, const char *key, uint8_t *buf,
                    size_t max, size_t *len);
/* Check the "type" and "version" members written by every stock device. */
int vmm__json_header(const struct json_t *obj, const char *type,
                     uint64_t version);
/* A byte array as a JSON array of integers (new reference, NULL on OOM). */
struct json_t *vmm__json_from_bytes(const uint8_t *buf, size_t len);

#endif
