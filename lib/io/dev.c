/*
 * The device interface: attachment, lookup, owned I/O ranges, device-driven
 * interrupt lines, reset and JSON state. See docs/devices.md.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

struct dev_range {
  enum vmm_io_space space;
  uint64_t base;
};

struct vmm_dev {
  vmm_vm *vm;
  char name[VMM_DEV_NAME_MAX + 1];
  struct vmm_dev_ops ops;
  void *opaque;

  /* Ranges registered through vmm_dev_io_register(). */
  pthread_mutex_t range_lock;
  struct dev_range *ranges;
  size_t nranges, cap;

  /* Lines this device asserts (bit n: GSI n), under vm->devs.irq_lock. */
  uint32_t irq_asserted;
};

int vmm__devs_init(struct vmm__devs *devs) {
  memset(devs, 0, sizeof(*devs));
  int err = -pthread_mutex_init(&devs->lock, NULL);
  if (err < 0)
    return err;
  if ((err = -pthread_mutex_init(&devs->irq_lock, NULL)) < 0) {
    pthread_mutex_destroy(&devs->lock);
    return err;
  }
  return 0;
}

static bool valid_name(const char *name) {
  size_t n = strnlen(name, VMM_DEV_NAME_MAX + 1);
  if (n == 0 || n > VMM_DEV_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (name[i] <= ' ' || name[i] > '~')
      return false;
  return true;
}

/* Index of the device called name, or -1. Caller holds devs->lock. */
static ptrdiff_t find_locked(struct vmm__devs *devs, const char *name) {
  for (size_t i = 0; i < devs->count; i++)
    if (strcmp(devs->list[i]->name, name) == 0)
      return (ptrdiff_t)i;
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Interrupt lines                                                          */

/*
 * Forward a level change. The engine's controller (VMM_VM_IRQCHIP) gets it
 * through the same engine op as vmm_vm_irq_line(), so an engine that grows
 * an interrupt controller (BT) receives device interrupts without any
 * device changing. Caller holds irq_lock.
 */
static int route_locked(vmm_vm *vm, uint32_t gsi, bool level) {
  struct vmm__devs *d = &vm->devs;
  int err = 0;
  if (vm->irqchip_kind == VMM__IRQCHIP_ENGINE && vm->ops->irq_line != NULL)
    err = vm->ops->irq_line(vm, gsi, level);
  else if (vm->irqchip_kind == VMM__IRQCHIP_USER)
    vmm__irqchip_line(vm, gsi, level);
  if (d->irq_fn != NULL)
    d->irq_fn(vm, gsi, level, d->irq_opaque);
  return err;
}

/* The line is the OR of its device sources and the host's; forward a
   change of that. Caller holds irq_lock. */
static int update_locked(vmm_vm *vm, uint32_t gsi) {
  struct vmm__devs *d = &vm->devs;
  uint32_t bit = 1u << gsi;
  bool line = d->irq_sources[gsi] != 0 || (d->irq_host & bit) != 0;
  if (line == ((d->irq_level & bit) != 0))
    return 0;
  d->irq_level ^= bit;
  return route_locked(vm, gsi, line);
}

int vmm_dev_irq_set(vmm_dev *dev, uint32_t gsi, bool level) {
  if (dev == NULL || gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  vmm_vm *vm = dev->vm;
  struct vmm__devs *d = &vm->devs;
  uint32_t bit = 1u << gsi;
  int err = 0;

  pthread_mutex_lock(&d->irq_lock);
  if (level != ((dev->irq_asserted & bit) != 0)) {
    if (level) {
      dev->irq_asserted |= bit;
      d->irq_sources[gsi]++;
    } else {
      dev->irq_asserted &= ~bit;
      d->irq_sources[gsi]--;
    }
    err = update_locked(vm, gsi);
  }
  pthread_mutex_unlock(&d->irq_lock);
  return err;
}

int vmm__irq_host_set(vmm_vm *vm, uint32_t gsi, bool level) {
  if (gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  struct vmm__devs *d = &vm->devs;
  pthread_mutex_lock(&d->irq_lock);
  if (level)
    d->irq_host |= 1u << gsi;
  else
    d->irq_host &= ~(1u << gsi);
  int err = update_locked(vm, gsi);
  pthread_mutex_unlock(&d->irq_lock);
  return err;
}

int vmm_vm_set_irq_handler(vmm_vm *vm, vmm_irq_handler_fn fn, void *opaque) {
  if (vm == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&vm->devs.irq_lock);
  vm->devs.irq_fn = fn;
  vm->devs.irq_opaque = opaque;
  pthread_mutex_unlock(&vm->devs.irq_lock);
  return 0;
}

int vmm_vm_irq_get(vmm_vm *vm, uint32_t gsi, bool *level) {
  if (vm == NULL || level == NULL || gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  pthread_mutex_lock(&vm->devs.irq_lock);
  *level = (vm->devs.irq_level >> gsi) & 1;
  pthread_mutex_unlock(&vm->devs.irq_lock);
  return 0;
}

/* Release every line the device asserts, so a departed device cannot hold
   a shared line high. */
static void irq_release_all(vmm_dev *dev) {
  for (uint32_t gsi = 0; gsi < VMM_IRQ_LINES; gsi++)
    if (dev->irq_asserted & (1u << gsi))
      vmm_dev_irq_set(dev, gsi, false);
}

/* ------------------------------------------------------------------------ */
/* Attachment                                                               */

int vmm_dev_io_register(vmm_dev *dev, enum vmm_io_space space, uint64_t base,
                        uint64_t len, vmm_io_handler_fn fn, void *opaque) {
  if (dev == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&dev->range_lock);
  int err = 0;
  if (dev->nranges == dev->cap) {
    size_t cap = dev->cap ? dev->cap * 2 : 4;
    struct dev_range *r = realloc(dev->ranges, cap * sizeof(*r));
    if (r == NULL) {
      err = VMM_ENOMEM;
      goto out;
    }
    dev->ranges = r;
    dev->cap = cap;
  }
  if ((err = vmm_io_register(dev->vm, space, base, len, fn, opaque)) == 0)
    dev->ranges[dev->nranges++] = (struct dev_range){space, base};
out:
  pthread_mutex_unlock(&dev->range_lock);
  return err;
}

/* Unregister the ranges, release the lines, destroy and free. */
static void teardown(vmm_dev *dev) {
  pthread_mutex_lock(&dev->range_lock);
  for (size_t i = dev->nranges; i-- > 0;)
    vmm_io_unregister(dev->vm, dev->ranges[i].space, dev->ranges[i].base);
  dev->nranges = 0;
  pthread_mutex_unlock(&dev->range_lock);
  irq_release_all(dev);
  dev->ops.destroy(dev, dev->opaque);
  /* destroy may not raise lines, but a stray call must not leave one up. */
  irq_release_all(dev);
  free(dev->ranges);
  pthread_mutex_destroy(&dev->range_lock);
  free(dev);
}

/* destroy can be called for these ops (see vmm_dev_attach()). */
static bool has_destroy(const struct vmm_dev_ops *ops) {
  return ops != NULL &&
         ops->size >=
             offsetof(struct vmm_dev_ops, destroy) + sizeof(ops->destroy) &&
         ops->destroy != NULL;
}

int vmm_dev_attach(vmm_vm *vm, const char *name, const struct vmm_dev_ops *ops,
                   void *opaque, vmm_dev **out) {
  if (!has_destroy(ops))
    return VMM_EINVAL;
  int err = VMM_EINVAL;
  if (vm == NULL || name == NULL || !valid_name(name) ||
      ops->size > sizeof(struct vmm_dev_ops) || ops->realize == NULL)
    goto fail_early;

  vmm_dev *dev = calloc(1, sizeof(*dev));
  err = VMM_ENOMEM;
  if (dev == NULL)
    goto fail_early;
  if ((err = -pthread_mutex_init(&dev->range_lock, NULL)) < 0) {
    free(dev);
    goto fail_early;
  }
  dev->vm = vm;
  memcpy(&dev->ops, ops, ops->size);
  dev->opaque = opaque;
  snprintf(dev->name, sizeof(dev->name), "%s", name);
  if (dev->ops.type == NULL)
    dev->ops.type = "device";

  if (vmm__iobus_in_handler(vm)) {
    err = VMM_ESTATE;
    goto fail;
  }
  struct vmm__devs *d = &vm->devs;
  pthread_mutex_lock(&d->lock);
  err = find_locked(d, name) >= 0 ? VMM_EEXIST : 0;
  pthread_mutex_unlock(&d->lock);
  if (err < 0)
    goto fail;

  /* realize runs without the list lock so it may look other devices up. */
  if ((err = dev->ops.realize(dev, opaque)) < 0)
    goto fail;

  pthread_mutex_lock(&d->lock);
  if (find_locked(d, name) >= 0) {
    err = VMM_EEXIST; /* attached concurrently under the same name */
  } else if (d->count == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;
    vmm_dev **l = realloc(d->list, cap * sizeof(*l));
    if (l == NULL) {
      err = VMM_ENOMEM;
    } else {
      d->list = l;
      d->cap = cap;
    }
  }
  if (err == 0)
    d->list[d->count++] = dev;
  pthread_mutex_unlock(&d->lock);
  if (err < 0)
    goto fail;
  if (out != NULL)
    *out = dev;
  return 0;

fail:
  teardown(dev);
  return err;
fail_early:
  ops->destroy(NULL, opaque);
  return err;
}

int vmm_dev_detach(vmm_dev *dev) {
  if (dev == NULL)
    return 0;
  vmm_vm *vm = dev->vm;
  if (vmm__iobus_in_handler(vm))
    return VMM_ESTATE;
  struct vmm__devs *d = &vm->devs;
  pthread_mutex_lock(&d->lock);
  for (size_t i = 0; i < d->count; i++) {
    if (d->list[i] == dev) {
      memmove(&d->list[i], &d->list[i + 1],
              (d->count - i - 1) * sizeof(d->list[0]));
      d->count--;
      break;
    }
  }
  pthread_mutex_unlock(&d->lock);
  teardown(dev);
  return 0;
}

void vmm__devs_fini(vmm_vm *vm) {
  struct vmm__devs *d = &vm->devs;
  /* Newest first: a device may rely on one attached before it. */
  for (;;) {
    pthread_mutex_lock(&d->lock);
    vmm_dev *dev = d->count > 0 ? d->list[--d->count] : NULL;
    pthread_mutex_unlock(&d->lock);
    if (dev == NULL)
      break;
    teardown(dev);
  }
  free(d->list);
  d->list = NULL;
  d->cap = 0;
  pthread_mutex_destroy(&d->irq_lock);
  pthread_mutex_destroy(&d->lock);
}

vmm_dev *vmm_dev_find(vmm_vm *vm, const char *name) {
  if (vm == NULL || name == NULL)
    return NULL;
  pthread_mutex_lock(&vm->devs.lock);
  ptrdiff_t i = find_locked(&vm->devs, name);
  vmm_dev *dev = i >= 0 ? vm->devs.list[i] : NULL;
  pthread_mutex_unlock(&vm->devs.lock);
  return dev;
}

int vmm_dev_list(vmm_vm *vm, vmm_dev **devs, size_t *count) {
  if (vm == NULL || count == NULL || (devs == NULL && *count != 0))
    return VMM_EINVAL;
  pthread_mutex_lock(&vm->devs.lock);
  size_t n = vm->devs.count;
  size_t copy = n < *count ? n : *count;
  if (copy > 0)
    memcpy(devs, vm->devs.list, copy * sizeof(devs[0]));
  pthread_mutex_unlock(&vm->devs.lock);
  *count = n;
  return copy < n ? VMM_E2BIG : 0;
}

const char *vmm_dev_name(const vmm_dev *dev) {
  return dev != NULL ? dev->name : NULL;
}
const char *vmm_dev_type(const vmm_dev *dev) {
  return dev != NULL ? dev->ops.type : NULL;
}
int vmm__config_merge(void *dst, size_t dst_size, const void *user) {
  size_t size;
  if (user == NULL)
    return VMM_EINVAL;
  memcpy(&size, user, sizeof(size));
  if (size < sizeof(size) || size > dst_size)
    return VMM_EINVAL;
  memcpy(dst, user, size);
  memcpy(dst, &dst_size, sizeof(dst_size));
  return 0;
}

bool vmm__dev_range_owner(vmm_vm *vm, enum vmm_io_space space, uint64_t base,
                          char name[VMM_DEV_NAME_MAX + 1]) {
  bool found = false;
  /* Lock order: the list, then a device's ranges (nothing takes them the
     other way round); a listed device cannot be torn down meanwhile. */
  pthread_mutex_lock(&vm->devs.lock);
  for (size_t i = 0; i < vm->devs.count && !found; i++) {
    vmm_dev *dev = vm->devs.list[i];
    pthread_mutex_lock(&dev->range_lock);
    for (size_t j = 0; j < dev->nranges && !found; j++) {
      if (dev->ranges[j].space == space && dev->ranges[j].base == base) {
        memcpy(name, dev->name, sizeof(dev->name));
        found = true;
      }
    }
    pthread_mutex_unlock(&dev->range_lock);
  }
  pthread_mutex_unlock(&vm->devs.lock);
  return found;
}

void *vmm__dev_data(const vmm_dev *dev, const struct vmm_dev_ops *ops) {
  if (dev == NULL || dev->ops.realize != ops->realize ||
      dev->ops.destroy != ops->destroy)
    return NULL;
  return dev->opaque;
}

vmm_vm *vmm_dev_vm(const vmm_dev *dev) {
  return dev ? dev->vm : NULL;
}
void *vmm_dev_opaque(const vmm_dev *dev) {
  return dev ? dev->opaque : NULL;
}

/* ------------------------------------------------------------------------ */
/* Reset and state                                                          */

int vmm_dev_reset(vmm_dev *dev) {
  if (dev == NULL)
    return VMM_EINVAL;
  if (dev->ops.reset != NULL)
    dev->ops.reset(dev, dev->opaque);
  return 0;
}

int vmm_dev_reset_all(vmm_vm *vm) {
  if (vm == NULL)
    return VMM_EINVAL;
  /* A snapshot of the list: reset callbacks run without the list lock. */
  pthread_mutex_lock(&vm->devs.lock);
  size_t n = vm->devs.count;
  vmm_dev **copy = n ? malloc(n * sizeof(*copy)) : NULL;
  if (copy != NULL)
    memcpy(copy, vm->devs.list, n * sizeof(*copy));
  pthread_mutex_unlock(&vm->devs.lock);
  if (n != 0 && copy == NULL)
    return VMM_ENOMEM;
  for (size_t i = 0; i < n; i++)
    vmm_dev_reset(copy[i]);
  free(copy);
  return 0;
}

int vmm_dev_save(vmm_dev *dev, json_t **state) {
  if (dev == NULL || state == NULL)
    return VMM_EINVAL;
  if (dev->ops.size <= offsetof(struct vmm_dev_ops, save) ||
      dev->ops.save == NULL)
    return VMM_ENOTSUP;
  *state = NULL;
  int err = dev->ops.save(dev, state, dev->opaque);
  if (err == 0 && *state == NULL)
    err = VMM_EIO;
  return err;
}

int vmm_dev_restore(vmm_dev *dev, const json_t *state) {
  if (dev == NULL || state == NULL)
    return VMM_EINVAL;
  if (dev->ops.size <= offsetof(struct vmm_dev_ops, restore) ||
      dev->ops.restore == NULL)
    return VMM_ENOTSUP;
  return dev->ops.restore(dev, state, dev->opaque);
}

int vmm_dev_stats(vmm_dev *dev, json_t **stats) {
  if (dev == NULL || stats == NULL)
    return VMM_EINVAL;
  if (dev->ops.size <= offsetof(struct vmm_dev_ops, stats) ||
      dev->ops.stats == NULL)
    return VMM_ENOTSUP;
  *stats = NULL;
  int err = dev->ops.stats(dev, stats, dev->opaque);
  if (err == 0 && *stats == NULL)
    err = VMM_EIO;
  return err;
}

/* ------------------------------------------------------------------------ */
/* Register-model helpers                                                   */

void vmm__io_bytes(void *dev, uint64_t addr, void *data, uint32_t len,
                   bool is_write, vmm__byte_fn fn) {
  uint8_t *b = data;
  for (uint32_t i = 0; i < len; i++)
    fn(dev, addr + i, &b[i], is_write);
}

/* ------------------------------------------------------------------------ */
/* Saved-state helpers                                                      */

int vmm__json_uint(const json_t *obj, const char *key, uint64_t max,
                   uint64_t *out) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_integer(v) || json_integer_value(v) < 0 ||
      (uint64_t)json_integer_value(v) > max)
    return VMM_EINVAL;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

int vmm__json_bool(const json_t *obj, const char *key, bool *out) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_boolean(v))
    return VMM_EINVAL;
  *out = json_is_true(v);
  return 0;
}

int vmm__json_bytes(const json_t *obj, const char *key, uint8_t *buf,
                    size_t max, size_t *len) {
  json_t *a = json_object_get(obj, key);
  if (!json_is_array(a) || json_array_size(a) > max)
    return VMM_EINVAL;
  size_t n = json_array_size(a);
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(a, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > 255)
      return VMM_EINVAL;
  }
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)json_integer_value(json_array_get(a, i));
  *len = n;
  return 0;
}

int vmm__json_header(const json_t *obj, const char *type, uint64_t version) {
  uint64_t v;
  if (!json_is_object(obj))
    return VMM_EINVAL;
  json_t *t = json_object_get(obj, "type");
  if (!json_is_string(t) || strcmp(json_string_value(t), type) != 0)
    return VMM_EINVAL;
  if (vmm__json_uint(obj, "version", UINT32_MAX, &v) < 0 || v != version)
    return VMM_EINVAL;
  return 0;
}

json_t *vmm__json_from_bytes(const uint8_t *buf, size_t len) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < len; i++) {
    if (json_array_append_new(a, json_integer(buf[i])) < 0) {
      json_decref(a);
      return NULL;
    }
  }
  return a;
}
