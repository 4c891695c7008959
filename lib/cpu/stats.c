/*
 * Run statistics: reading, resetting and the JSON view. The counting
 * itself is in the run loop (vcpu.c) and the buses (io/bus.c). See
 * docs/stats.md.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../internal.h"

uint64_t vmm__now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static const char *const reason_names[] = {
    [VMM_EXIT_NONE] = "none",
    [VMM_EXIT_IO] = "io",
    [VMM_EXIT_MMIO] = "mmio",
    [VMM_EXIT_HLT] = "hlt",
    [VMM_EXIT_SHUTDOWN] = "shutdown",
    [VMM_EXIT_FAULT] = "fault",
    [VMM_EXIT_DEBUG] = "debug",
    [VMM_EXIT_INTERNAL_ERROR] = "internal_error",
    [VMM_EXIT_STOPPED] = "stopped",
    [VMM_EXIT_INSN_LIMIT] = "insn_limit",
    [VMM_EXIT_SYSTEM] = "system",
};
_Static_assert(VMM__ARRAY_SIZE(reason_names) <= VMM_STATS_REASONS,
               "more exit reasons than statistics slots");

const char *vmm_exit_reason_name(unsigned reason) {
  if (reason < VMM__ARRAY_SIZE(reason_names) && reason_names[reason] != NULL)
    return reason_names[reason];
  return "unknown";
}

/*
 * The TSC rate, measured over the VM's lifetime: no calibration delay at
 * creation, and the longer the VM lives the better the estimate. Right
 * after creation the interval is too short to be precise, so wait until it
 * reaches 1 ms (a one-time cost for the earliest readers only).
 */
static uint64_t tsc_hz(const vmm_vm *vm) {
  uint64_t ns, tsc;
  for (;;) {
    ns = vmm__now_ns();
    tsc = vmm__tsc();
    if (ns - vm->stats_ns0 >= 1000000)
      break;
  }
  uint64_t cycles = vmm__tsc_delta(vm->stats_tsc0, tsc);
  double hz = (double)cycles * 1e9 / (double)(ns - vm->stats_ns0);
  return hz < 1.0 ? 1 : (uint64_t)hz;
}

static uint64_t to_ns(uint64_t cycles, uint64_t hz) {
  return (uint64_t)((double)cycles * 1e9 / (double)hz);
}

static uint64_t ld(const atomic_uint_least64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

void vmm_vcpu_stats_init(struct vmm_vcpu_stats *st) {
  if (st == NULL)
    return;
  memset(st, 0, sizeof(*st));
  st->size = sizeof(*st);
}

static bool stats_arg_ok(const struct vmm_vcpu_stats *st) {
  return st != NULL &&
         st->size >=
             offsetof(struct vmm_vcpu_stats, tsc_hz) + sizeof(st->tsc_hz) &&
         st->size <= sizeof(*st);
}

/* Add a vCPU's counters (cycles in the ns fields) to acc. */
static void accumulate(const vmm_vcpu *vcpu, struct vmm_vcpu_stats *acc) {
  const struct vmm__vcpu_stats *s = &vcpu->stats;
  acc->runs += ld(&s->runs);
  for (unsigned i = 0; i < VMM_STATS_REASONS; i++)
    acc->exits[i] += ld(&s->exits[i]);
  acc->io_handled += ld(&s->io_handled);
  acc->mmio_handled += ld(&s->mmio_handled);
  acc->run_ns += ld(&s->run_cycles);
  acc->guest_ns += ld(&s->guest_cycles);
  acc->io_ns += ld(&s->io_cycles);
  acc->exit_handler_ns += ld(&s->exit_cycles);
}

static void cycles_to_ns(struct vmm_vcpu_stats *st, uint64_t hz) {
  st->run_ns = to_ns(st->run_ns, hz);
  st->guest_ns = to_ns(st->guest_ns, hz);
  st->io_ns = to_ns(st->io_ns, hz);
  st->exit_handler_ns = to_ns(st->exit_handler_ns, hz);
  st->tsc_hz = hz;
}

/* Copy into the caller's struct, as much of it as it has. */
static void deliver(const struct vmm_vcpu_stats *src,
                    struct vmm_vcpu_stats *dst) {
  size_t size = dst->size;
  memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
         size - sizeof(size_t));
}

int vmm_vcpu_stats_get(vmm_vcpu *vcpu, struct vmm_vcpu_stats *st) {
  if (vcpu == NULL || !stats_arg_ok(st))
    return VMM_EINVAL;
  struct vmm_vcpu_stats acc;
  vmm_vcpu_stats_init(&acc);
  accumulate(vcpu, &acc);
  cycles_to_ns(&acc, tsc_hz(vcpu->vm));
  deliver(&acc, st);
  return 0;
}

int vmm_vm_stats_get(vmm_vm *vm, struct vmm_vcpu_stats *st) {
  if (vm == NULL || !stats_arg_ok(st))
    return VMM_EINVAL;
  struct vmm_vcpu_stats acc;
  vmm_vcpu_stats_init(&acc);
  /* vCPUs are only freed with the VM, so the lock just orders the walk
     against vmm_vcpu_create(). */
  pthread_mutex_lock(&vm->lock);
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++)
    if (vm->vcpus[i] != NULL)
      accumulate(vm->vcpus[i], &acc);
  pthread_mutex_unlock(&vm->lock);
  cycles_to_ns(&acc, tsc_hz(vm));
  deliver(&acc, st);
  return 0;
}

static void zero(struct vmm__vcpu_stats *s) {
  atomic_store(&s->runs, 0);
  for (unsigned i = 0; i < VMM_STATS_REASONS; i++)
    atomic_store(&s->exits[i], 0);
  atomic_store(&s->io_handled, 0);
  atomic_store(&s->mmio_handled, 0);
  atomic_store(&s->run_cycles, 0);
  atomic_store(&s->guest_cycles, 0);
  atomic_store(&s->io_cycles, 0);
  atomic_store(&s->exit_cycles, 0);
}

int vmm_vcpu_stats_reset(vmm_vcpu *vcpu) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&vcpu->lock);
  int err = vcpu->running ? VMM_EBUSY : 0;
  if (err == 0)
    zero(&vcpu->stats);
  pthread_mutex_unlock(&vcpu->lock);
  return err;
}

int vmm_vm_stats_reset(vmm_vm *vm) {
  if (vm == NULL)
    return VMM_EINVAL;
  /* All or nothing: hold every vCPU's lock (which enter() needs to start a
     run) while checking and zeroing, so none starts in between. */
  pthread_mutex_lock(&vm->lock);
  unsigned n = vm->cfg.max_vcpus, locked = 0;
  int err = 0;
  for (; locked < n; locked++) {
    vmm_vcpu *v = vm->vcpus[locked];
    if (v == NULL)
      continue;
    pthread_mutex_lock(&v->lock);
    if (v->running) {
      pthread_mutex_unlock(&v->lock);
      err = VMM_EBUSY;
      break;
    }
  }
  for (unsigned i = 0; i < locked; i++) {
    vmm_vcpu *v = vm->vcpus[i];
    if (v == NULL)
      continue;
    if (err == 0)
      zero(&v->stats);
    pthread_mutex_unlock(&v->lock);
  }
  pthread_mutex_unlock(&vm->lock);
  if (err == 0) {
    vmm__iobus_reset_hits(&vm->pio);
    vmm__iobus_reset_hits(&vm->mmio);
  }
  return err;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */

/* json_object_set_new that remembers the first failure. */
static void put(json_t *obj, const char *key, json_t *value, bool *ok) {
  if (value == NULL || json_object_set_new(obj, key, value) < 0)
    *ok = false;
}

static json_t *counters_json(const struct vmm_vcpu_stats *st) {
  bool ok = true;
  json_t *o = json_object(), *exits = json_object(), *t = json_object();
  if (o == NULL || exits == NULL || t == NULL) {
    json_decref(o);
    json_decref(exits);
    json_decref(t);
    return NULL;
  }
  put(o, "runs", json_integer((json_int_t)st->runs), &ok);
  for (unsigned r = 1; r < VMM__ARRAY_SIZE(reason_names); r++)
    put(exits, reason_names[r], json_integer((json_int_t)st->exits[r]), &ok);
  put(o, "exits", exits, &ok);
  put(o, "reentries", json_integer((json_int_t)st->exits[VMM_EXIT_NONE]), &ok);
  put(o, "io_handled", json_integer((json_int_t)st->io_handled), &ok);
  put(o, "mmio_handled", json_integer((json_int_t)st->mmio_handled), &ok);
  put(t, "run", json_integer((json_int_t)st->run_ns), &ok);
  put(t, "guest", json_integer((json_int_t)st->guest_ns), &ok);
  put(t, "io_handlers", json_integer((json_int_t)st->io_ns), &ok);
  put(t, "exit_handler", json_integer((json_int_t)st->exit_handler_ns), &ok);
  put(o, "time_ns", t, &ok);
  if (!ok) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static json_t *ranges_json(vmm_vm *vm, enum vmm_io_space space) {
  struct vmm__iobus *bus = space == VMM_IO_PORT ? &vm->pio : &vm->mmio;
  struct vmm__io_range *r;
  size_t n;
  if (vmm__iobus_snapshot(bus, &r, &n) < 0)
    return NULL;
  json_t *arr = json_array();
  bool ok = arr != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    json_t *o = json_object();
    char owner[VMM_DEV_NAME_MAX + 1];
    ok = o != NULL;
    put(o, "base", json_integer((json_int_t)r[i].base), &ok);
    put(o, "len", json_integer((json_int_t)r[i].len), &ok);
    if (vmm__dev_range_owner(vm, space, r[i].base, owner))
      put(o, "device", json_string(owner), &ok);
    else
      put(o, "device", json_null(), &ok);
    put(o, "accesses", json_integer((json_int_t)r[i].hits), &ok);
    if (!ok || json_array_append_new(arr, o) < 0)
      ok = false;
  }
  free(r);
  if (!ok) {
    json_decref(arr);
    return NULL;
  }
  return arr;
}

static json_t *devices_json(vmm_vm *vm) {
  vmm_dev *fixed[32], **devs = fixed;
  size_t n = VMM__ARRAY_SIZE(fixed);
  int err = vmm_dev_list(vm, devs, &n);
  while (err == VMM_E2BIG) {
    if (devs != fixed)
      free(devs);
    size_t want = n + 8;
    if ((devs = malloc(want * sizeof(*devs))) == NULL)
      return NULL;
    n = want;
    err = vmm_dev_list(vm, devs, &n);
  }
  json_t *o = json_object();
  bool ok = o != NULL && err == 0;
  for (size_t i = 0; ok && i < n; i++) {
    json_t *d = NULL;
    int rc = vmm_dev_stats(devs[i], &d);
    if (rc == VMM_ENOTSUP)
      d = json_object(); /* a device without counters still shows up */
    else if (rc < 0)
      d = NULL;
    /* The device's type, unless its counters already say it more exactly
       (the balloon is a "virtio-balloon" on a "virtio-mmio" device). */
    if (d != NULL && json_object_get(d, "type") == NULL &&
        json_object_set_new(d, "type", json_string(vmm_dev_type(devs[i]))) <
            0) {
      json_decref(d);
      d = NULL;
    }
    put(o, vmm_dev_name(devs[i]), d, &ok);
  }
  if (devs != fixed)
    free(devs);
  if (!ok) {
    json_decref(o);
    return NULL;
  }
  return o;
}

int vmm_vm_stats_json(vmm_vm *vm, json_t **out) {
  if (vm == NULL || out == NULL)
    return VMM_EINVAL;
  uint64_t hz = tsc_hz(vm);
  bool ok = true;
  json_t *root = json_object(), *vcpus = json_array(), *io = json_object();
  if (root == NULL || vcpus == NULL || io == NULL) {
    json_decref(root);
    json_decref(vcpus);
    json_decref(io);
    return VMM_ENOMEM;
  }
  put(root, "engine", json_string(vm->ops->name), &ok);
  put(root, "engine_reason", json_string(vm->engine_reason), &ok);
  put(root, "tsc_hz", json_integer((json_int_t)hz), &ok);

  struct vmm_vcpu_stats total;
  vmm_vcpu_stats_init(&total);
  pthread_mutex_lock(&vm->lock);
  for (unsigned i = 0; ok && i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *v = vm->vcpus[i];
    if (v == NULL)
      continue;
    struct vmm_vcpu_stats st;
    vmm_vcpu_stats_init(&st);
    accumulate(v, &st);
    accumulate(v, &total);
    cycles_to_ns(&st, hz);
    json_t *o = counters_json(&st);
    if (o == NULL || json_object_set_new(o, "index", json_integer(i)) < 0 ||
        json_array_append_new(vcpus, o) < 0) {
      json_decref(o);
      ok = false;
    }
  }
  pthread_mutex_unlock(&vm->lock);
  cycles_to_ns(&total, hz);
  put(root, "vcpus", vcpus, &ok);
  put(root, "total", counters_json(&total), &ok);
  put(io, "port", ranges_json(vm, VMM_IO_PORT), &ok);
  put(io, "mmio", ranges_json(vm, VMM_IO_MMIO), &ok);
  put(root, "io", io, &ok);
  put(root, "devices", devices_json(vm), &ok);
  if (!ok) {
    json_decref(root);
    return VMM_ENOMEM;
  }
  *out = root;
  return 0;
}
