/*
 * Port-I/O and MMIO buses: registration and dispatch. See docs/io.md.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

/*
 * The bus a thread is currently dispatching on, to refuse registration from
 * inside a handler (which would deadlock on the bus lock) with an error.
 */
static _Thread_local const struct vmm__iobus *dispatching
    __attribute__((tls_model("initial-exec")));

bool vmm__iobus_in_handler(const vmm_vm *vm) {
  return dispatching != NULL &&
         (dispatching == &vm->pio || dispatching == &vm->mmio);
}

int vmm__iobus_init(struct vmm__iobus *bus, uint64_t limit) {
  memset(bus, 0, sizeof(*bus));
  bus->limit = limit;
  return -pthread_rwlock_init(&bus->lock, NULL);
}

void vmm__iobus_fini(struct vmm__iobus *bus) {
  free(bus->ranges);
  bus->ranges = NULL;
  bus->count = bus->cap = 0;
  pthread_rwlock_destroy(&bus->lock);
}

/* First range whose end is above addr. */
static size_t lower_bound(const struct vmm__iobus *bus, uint64_t addr) {
  size_t lo = 0, hi = bus->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct vmm__io_range *r = &bus->ranges[mid];
    if (r->base + r->len <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static struct vmm__iobus *bus_of(vmm_vm *vm, enum vmm_io_space space) {
  switch (space) {
  case VMM_IO_PORT:
    return &vm->pio;
  case VMM_IO_MMIO:
    return &vm->mmio;
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
  pthread_rwlock_wrlock(&bus->lock);
  size_t i = lower_bound(bus, base);
  if (i < bus->count && bus->ranges[i].base < base + len) {
    err = VMM_EOVERLAP;
    goto out;
  }
  if (bus->count == bus->cap) {
    size_t cap = bus->cap ? bus->cap * 2 : 16;
    struct vmm__io_range *r = realloc(bus->ranges, cap * sizeof(*r));
    if (r == NULL) {
      err = VMM_ENOMEM;
      goto out;
    }
    bus->ranges = r;
    bus->cap = cap;
  }
  memmove(&bus->ranges[i + 1], &bus->ranges[i],
          (bus->count - i) * sizeof(bus->ranges[0]));
  bus->ranges[i] = (struct vmm__io_range){base, len, fn, opaque, 0};
  bus->count++;
out:
  pthread_rwlock_unlock(&bus->lock);
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
  pthread_rwlock_wrlock(&bus->lock);
  size_t i = lower_bound(bus, base);
  if (i < bus->count && bus->ranges[i].base == base) {
    memmove(&bus->ranges[i], &bus->ranges[i + 1],
            (bus->count - i - 1) * sizeof(bus->ranges[0]));
    bus->count--;
    err = 0;
  }
  pthread_rwlock_unlock(&bus->lock);
  return err;
}

int vmm__iobus_dispatch(struct vmm__iobus *bus, vmm_vcpu *vcpu, uint64_t addr,
                        void *data, uint32_t len, bool is_write) {
  int rc = VMM_IO_DECLINED;

  pthread_rwlock_rdlock(&bus->lock);
  size_t i = lower_bound(bus, addr);
  if (i < bus->count) {
    const struct vmm__io_range *r = &bus->ranges[i];
    if (r->base <= addr && addr - r->base <= r->len - len && len <= r->len) {
      const struct vmm__iobus *prev = dispatching;
      dispatching = bus;
      __atomic_fetch_add(&bus->ranges[i].hits, 1, __ATOMIC_RELAXED);
      rc = r->fn(vcpu, addr, data, len, is_write, r->opaque);
      dispatching = prev;
      if (rc > 0)
        rc = VMM_IO_DECLINED;
    }
  }
  pthread_rwlock_unlock(&bus->lock);
  return rc;
}

int vmm__iobus_snapshot(struct vmm__iobus *bus, struct vmm__io_range **out,
                        size_t *count) {
  int err = 0;
  *out = NULL;
  *count = 0;
  pthread_rwlock_rdlock(&bus->lock);
  if (bus->count > 0) {
    struct vmm__io_range *r = malloc(bus->count * sizeof(*r));
    if (r == NULL) {
      err = VMM_ENOMEM;
    } else {
      for (size_t i = 0; i < bus->count; i++) {
        r[i] = bus->ranges[i];
        r[i].hits = __atomic_load_n(&bus->ranges[i].hits, __ATOMIC_RELAXED);
      }
      *out = r;
      *count = bus->count;
    }
  }
  pthread_rwlock_unlock(&bus->lock);
  return err;
}

void vmm__iobus_reset_hits(struct vmm__iobus *bus) {
  pthread_rwlock_rdlock(&bus->lock);
  for (size_t i = 0; i < bus->count; i++)
    __atomic_store_n(&bus->ranges[i].hits, 0, __ATOMIC_RELAXED);
  pthread_rwlock_unlock(&bus->lock);
}
