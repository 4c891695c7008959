/*
 * Port-I/O and MMIO buses: internal interface.
 */
#ifndef LIBVMM_IO_INTERNAL_H
#define LIBVMM_IO_INTERNAL_H

#include <libvmm/vmm.h>
#include <pthread.h>

struct vmm__io_range {
  uint64_t base, len;
  vmm_io_handler_fn fn;
  void *opaque;
};

/*
 * A bus is a sorted array of non-overlapping ranges under a reader-writer
 * lock. Dispatch holds the read lock while the handler runs, so a handler
 * is never called after vmm_io_unregister() returned; in exchange, a
 * handler must not register or unregister on its own VM (detected, and
 * refused with -VMM_ESTATE, instead of deadlocking).
 */
struct vmm__iobus {
  pthread_rwlock_t lock;
  struct vmm__io_range *ranges;
  size_t count, cap;
  uint64_t limit; /* highest address + 1 */
};

int vmm__iobus_init(struct vmm__iobus *bus, uint64_t limit);
void vmm__iobus_fini(struct vmm__iobus *bus);

/*
 * Dispatch one access. Returns 0 if a handler took it, VMM_IO_DECLINED if
 * no handler covers it or the handler declined, or the handler's negative
 * error. An access must lie entirely in one range to be dispatched.
 */
int vmm__iobus_dispatch(struct vmm__iobus *bus, vmm_vcpu *vcpu, uint64_t addr,
                        void *data, uint32_t len, bool is_write);

#endif
