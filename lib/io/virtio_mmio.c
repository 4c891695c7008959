/*
 * virtio-mmio transport: the register window, feature negotiation, device
 * status, interrupts and the error state. Ring handling is in virtqueue.c.
 * See docs/virtio.md.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "virtio_internal.h"

static const char *const error_strs[] = {
#define XX(name, msg) msg,
    VMM_VIRTIO_ERROR_MAP(XX)
#undef XX
};

const char *vmm_virtio_error_str(enum vmm_virtio_error err) {
  if ((unsigned)err >= VMM__ARRAY_SIZE(error_strs))
    return "unknown virtio error";
  return error_strs[err];
}

void vmm_virtio_mmio_config_init(struct vmm_virtio_mmio_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->gsi = 5;
  cfg->version = 2;
}

/* ------------------------------------------------------------------------ */
/* Interrupts                                                               */

static void set_line(vmm_virtio *v, bool level) {
  int err = vmm_dev_irq_set(v->dev, v->cfg.gsi, level);
  v->irq_level = level;
  if (err < 0 && !v->irq_error_logged) {
    /* Once: an engine that refuses the line will refuse it every time,
       and a flood of identical messages helps nobody. */
    v->irq_error_logged = true;
    vmm__log(v->vm, VMM_LOG_DEBUG, "virtio %s: interrupt line %u: %s",
             v->ops->type, v->cfg.gsi, vmm_strerror(err));
  }
}

/* Line follows InterruptStatus; see vmm_virtio_irq_fn for the re-edge. */
void vmm__virtio_raise(vmm_virtio *v, uint32_t isr_bits) {
  v->isr |= isr_bits;
  v->interrupts++;
  if (v->irq_level)
    set_line(v, false);
  set_line(v, true);
}

static void update_line(vmm_virtio *v) {
  if (v->isr == 0 && v->irq_level)
    set_line(v, false);
}

/* ------------------------------------------------------------------------ */
/* State helpers                                                            */

uint64_t vmm__virtio_features(const vmm_virtio *v) {
  return v->driver_features & v->device_features;
}

bool vmm__virtio_live(const vmm_virtio *v) {
  return (v->status & VMM_VIRTIO_STATUS_DRIVER_OK) &&
         !(v->status & VMM_VIRTIO_STATUS_NEEDS_RESET);
}

void vmm__virtio_fail(vmm_virtio *v, enum vmm_virtio_error err, const char *fmt,
                      ...) {
  if (v->status & VMM_VIRTIO_STATUS_NEEDS_RESET)
    return;
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  /* A guest can fail, reset and fail again as fast as it can exit: the
     first few errors are warnings, the rest only debug noise. */
  vmm__log(v->vm, v->errors < 8 ? VMM_LOG_WARN : VMM_LOG_DEBUG,
           "virtio %s at 0x%llx: %s (%s); needs reset", v->ops->type,
           (unsigned long long)v->cfg.base, vmm_virtio_error_str(err), msg);
  v->error = err;
  v->errors++;
  v->status |= VMM_VIRTIO_STATUS_NEEDS_RESET;
  /*
   * The spec asks for a configuration-change notification once the driver
   * is running; legacy drivers know no NEEDS_RESET, so they get none.
   */
  if (v->cfg.version == 2 && (v->status & VMM_VIRTIO_STATUS_DRIVER_OK))
    vmm__virtio_raise(v, VMM__VIRTIO_INT_CONFIG);
}

void vmm__virtio_config_changed(vmm_virtio *v) {
  v->config_generation++;
  /* No notifications before the driver is ready for them. */
  if (v->status & VMM_VIRTIO_STATUS_DRIVER_OK)
    vmm__virtio_raise(v, VMM__VIRTIO_INT_CONFIG);
}

static uint16_t queue_max(vmm_virtio *v, unsigned q) {
  if (q >= VMM__VIRTIO_MAX_QUEUES)
    return 0;
  uint16_t max = v->ops->queue_max(v->model, q, vmm__virtio_features(v));
  return max < v->queue_size_max ? max : v->queue_size_max;
}

static void reset(vmm_virtio *v) {
  v->driver_features = 0;
  v->device_features_sel = v->driver_features_sel = 0;
  v->status = 0;
  v->isr = 0;
  v->queue_sel = 0;
  v->guest_page_size = 0;
  v->shm_sel = 0;
  v->error = VMM_VIRTIO_ERR_NONE;
  for (unsigned i = 0; i < VMM__VIRTIO_MAX_QUEUES; i++) {
    struct vmm__virtq *q = &v->q[i];
    struct vmm__virtq_buf *bufs = q->bufs;
    memset(q, 0, sizeof(*q));
    q->bufs = bufs;
  }
  update_line(v);
  v->ops->reset(v->model);
}

/* ------------------------------------------------------------------------ */
/* Status and features                                                      */

static bool features_acceptable(vmm_virtio *v) {
  if (v->driver_features & ~v->device_features) {
    vmm__log(v->vm, VMM_LOG_INFO,
             "virtio %s: driver wants features 0x%llx the device lacks",
             v->ops->type,
             (unsigned long long)(v->driver_features & ~v->device_features));
    return false;
  }
  if (v->cfg.version == 2 &&
      !(v->driver_features & (1ull << VMM_VIRTIO_F_VERSION_1))) {
    vmm__log(v->vm, VMM_LOG_INFO,
             "virtio %s: modern device, driver did not accept VERSION_1",
             v->ops->type);
    return false;
  }
  return true;
}

static void write_status(vmm_virtio *v, uint32_t val) {
  if (val == 0) {
    v->resets++;
    reset(v);
    return;
  }
  /* NEEDS_RESET belongs to the device; what the driver writes there is
     ignored, and it stays set until reset. */
  uint32_t dev_bits = v->status & VMM_VIRTIO_STATUS_NEEDS_RESET;
  uint32_t old = v->status & ~VMM_VIRTIO_STATUS_NEEDS_RESET;
  val &= ~VMM_VIRTIO_STATUS_NEEDS_RESET & 0xff;
  if (old & ~val) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_STATUS,
                     "status 0x%x written over 0x%x clears bits", val, old);
    return;
  }
  uint32_t added = val & ~old;
  if ((added & VMM_VIRTIO_STATUS_FEATURES_OK) && v->cfg.version == 2 &&
      !features_acceptable(v)) {
    /* The spec's refusal: FEATURES_OK does not stick; the driver reads the
       status back and gives up. Not an error state. */
    val &= ~(uint32_t)VMM_VIRTIO_STATUS_FEATURES_OK;
    added &= ~(uint32_t)VMM_VIRTIO_STATUS_FEATURES_OK;
  }
  if ((added & VMM_VIRTIO_STATUS_DRIVER_OK) && v->cfg.version == 2 &&
      !(val & VMM_VIRTIO_STATUS_FEATURES_OK)) {
    v->status = old | dev_bits;
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_STATUS, "DRIVER_OK without FEATURES_OK");
    return;
  }
  if ((added & VMM_VIRTIO_STATUS_DRIVER_OK) && v->cfg.version == 1 &&
      (v->driver_features & ~v->device_features)) {
    /* Legacy has no way to refuse; use the common subset. */
    vmm__log(v->vm, VMM_LOG_INFO,
             "virtio %s: legacy driver features 0x%llx masked to 0x%llx",
             v->ops->type, (unsigned long long)v->driver_features,
             (unsigned long long)vmm__virtio_features(v));
    v->driver_features &= v->device_features;
  }
  v->status = val | dev_bits;
  if ((added & VMM_VIRTIO_STATUS_DRIVER_OK) && !dev_bits) {
    if (v->ops->activate != NULL)
      v->ops->activate(v->model);
    /*
     * Drivers (Linux's balloon among them) may queue buffers and notify
     * before DRIVER_OK; the device could not look then, so look now.
     */
    for (unsigned q = 0; q < VMM__VIRTIO_MAX_QUEUES && vmm__virtio_live(v); q++)
      if (v->q[q].ready)
        v->ops->notify(v->model, q);
  }
}

static bool features_locked(const vmm_virtio *v) {
  if (v->cfg.version == 2)
    return v->status & VMM_VIRTIO_STATUS_FEATURES_OK;
  return v->status & VMM_VIRTIO_STATUS_DRIVER_OK;
}

static void write_driver_features(vmm_virtio *v, uint32_t val) {
  if (features_locked(v)) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_FEATURES,
                     "DriverFeatures[%u] = 0x%x after negotiation",
                     v->driver_features_sel, val);
    return;
  }
  if (v->driver_features_sel > 1)
    return; /* no features there; the driver may zero them */
  unsigned shift = v->driver_features_sel * 32;
  v->driver_features &= ~(0xffffffffull << shift);
  v->driver_features |= (uint64_t)val << shift;
}

/* ------------------------------------------------------------------------ */
/* Queue registers                                                          */

static struct vmm__virtq *selected(vmm_virtio *v) {
  return v->queue_sel < VMM__VIRTIO_MAX_QUEUES ? &v->q[v->queue_sel] : NULL;
}

/*
 * A write to one of the selected queue's configuration registers. The
 * driver must not change a live queue; it may poke queues that do not exist
 * (they have no state), which we ignore.
 */
static struct vmm__virtq *queue_for_config(vmm_virtio *v, const char *reg) {
  struct vmm__virtq *q = selected(v);
  if (q == NULL || queue_max(v, v->queue_sel) == 0)
    return NULL;
  if (q->ready) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_QUEUE_CONFIG,
                     "%s of queue %u written while it is live", reg,
                     v->queue_sel);
    return NULL;
  }
  return q;
}

static void set_half(uint64_t *reg, uint32_t val, bool high) {
  if (high)
    *reg = (*reg & 0xffffffffull) | (uint64_t)val << 32;
  else
    *reg = (*reg & ~0xffffffffull) | val;
}

static void write_queue_ready(vmm_virtio *v, uint32_t val) {
  struct vmm__virtq *q = selected(v);
  if (val == 0) {
    /* Stopping a queue is always allowed; its ring is forgotten. */
    if (q != NULL)
      q->ready = false;
    return;
  }
  if (q == NULL || queue_max(v, v->queue_sel) == 0) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_QUEUE_CONFIG,
                     "QueueReady for queue %u, which does not exist",
                     v->queue_sel);
    return;
  }
  if (!q->ready)
    vmm__virtq_enable(v, v->queue_sel);
}

static void write_queue_pfn(vmm_virtio *v, uint32_t val) {
  struct vmm__virtq *q = selected(v);
  if (val == 0) {
    if (q != NULL) {
      q->ready = false;
      q->legacy_pfn = 0;
    }
    return;
  }
  if (q == NULL || queue_max(v, v->queue_sel) == 0) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_QUEUE_CONFIG,
                     "QueuePFN for queue %u, which does not exist",
                     v->queue_sel);
    return;
  }
  if (q->ready) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_QUEUE_CONFIG,
                     "QueuePFN of live queue %u rewritten", v->queue_sel);
    return;
  }
  uint32_t page = v->guest_page_size;
  uint32_t align = q->legacy_align ? q->legacy_align : page;
  if (page == 0 || (page & (page - 1)) || (align & (align - 1)) || align == 0) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_QUEUE_CONFIG,
                     "legacy queue %u: GuestPageSize %u / QueueAlign %u "
                     "not powers of two",
                     v->queue_sel, page, q->legacy_align);
    return;
  }
  /*
   * Legacy layout: descriptors, then the available ring (flags, idx,
   * ring[num], used_event), then the used ring at the next QueueAlign
   * boundary. 32-bit pfn times 32-bit page size cannot overflow 64 bits.
   */
  uint64_t base = (uint64_t)val * page;
  uint64_t avail = base + 16ull * q->num;
  uint64_t used = avail + 2ull * (3 + q->num);
  used = (used + align - 1) & ~(uint64_t)(align - 1);
  q->desc = base;
  q->avail = avail;
  q->used = used;
  q->legacy_pfn = val;
  vmm__virtq_enable(v, v->queue_sel);
}

/* ------------------------------------------------------------------------ */
/* Register access                                                          */

static uint32_t read_reg(vmm_virtio *v, uint64_t off) {
  struct vmm__virtq *q = selected(v);
  switch (off) {
  case VMM__VIRTIO_MMIO_MAGIC: return VMM__VIRTIO_MAGIC;
  case VMM__VIRTIO_MMIO_VERSION: return v->cfg.version;
  case VMM__VIRTIO_MMIO_DEVICE_ID: return v->ops->device_id;
  case VMM__VIRTIO_MMIO_VENDOR_ID: return VMM__VIRTIO_VENDOR;
  case VMM__VIRTIO_MMIO_DEVICE_FEATURES:
    /* Legacy drivers know 32 feature bits. */
    if (v->device_features_sel > 1 ||
        (v->cfg.version == 1 && v->device_features_sel != 0))
      return 0;
    return (uint32_t)(v->device_features >> (32 * v->device_features_sel));
  case VMM__VIRTIO_MMIO_QUEUE_NUM_MAX: return queue_max(v, v->queue_sel);
  case VMM__VIRTIO_MMIO_QUEUE_READY:
    return v->cfg.version == 2 && q != NULL && q->ready;
  case VMM__VIRTIO_MMIO_QUEUE_PFN:
    return v->cfg.version == 1 && q != NULL ? q->legacy_pfn : 0;
  case VMM__VIRTIO_MMIO_INTERRUPT_STATUS: return v->isr;
  case VMM__VIRTIO_MMIO_STATUS: return v->status;
  case VMM__VIRTIO_MMIO_SHM_LEN_LOW:
  case VMM__VIRTIO_MMIO_SHM_LEN_HIGH:
  case VMM__VIRTIO_MMIO_SHM_BASE_LOW:
  case VMM__VIRTIO_MMIO_SHM_BASE_HIGH:
    /* No shared memory regions: the spec's "does not exist" is all ones. */
    return v->cfg.version == 2 ? 0xffffffffu : 0;
  case VMM__VIRTIO_MMIO_CONFIG_GENERATION:
    return v->cfg.version == 2 ? v->config_generation : 0;
  default:
    /* Write-only and reserved registers read as zero. */
    return 0;
  }
}

static void notify(vmm_virtio *v, uint32_t val) {
  v->notifications++;
  /* Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index. */
  if (val >= VMM__VIRTIO_MAX_QUEUES || queue_max(v, val) == 0) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_NOTIFY, "QueueNotify %u names no queue",
                     val);
    return;
  }
  /* Before DRIVER_OK the device may not use buffers; write_status() looks
     at every ready queue when the driver gets there. */
  if (v->q[val].ready && vmm__virtio_live(v))
    v->ops->notify(v->model, val);
}

static void write_reg(vmm_virtio *v, uint64_t off, uint32_t val) {
  struct vmm__virtq *q;
  bool modern = v->cfg.version == 2;
  switch (off) {
  case VMM__VIRTIO_MMIO_DEVICE_FEATURES_SEL:
    v->device_features_sel = val;
    break;
  case VMM__VIRTIO_MMIO_DRIVER_FEATURES: write_driver_features(v, val); break;
  case VMM__VIRTIO_MMIO_DRIVER_FEATURES_SEL:
    v->driver_features_sel = val;
    break;
  case VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE:
    if (!modern)
      v->guest_page_size = val;
    break;
  case VMM__VIRTIO_MMIO_QUEUE_SEL: v->queue_sel = val; break;
  case VMM__VIRTIO_MMIO_QUEUE_NUM:
    if ((q = queue_for_config(v, "QueueNum")) != NULL)
      q->num = val;
    break;
  case VMM__VIRTIO_MMIO_QUEUE_ALIGN:
    if (!modern && (q = queue_for_config(v, "QueueAlign")) != NULL)
      q->legacy_align = val;
    break;
  case VMM__VIRTIO_MMIO_QUEUE_PFN:
    if (!modern)
      write_queue_pfn(v, val);
    break;
  case VMM__VIRTIO_MMIO_QUEUE_READY:
    if (modern)
      write_queue_ready(v, val);
    break;
  case VMM__VIRTIO_MMIO_QUEUE_NOTIFY: notify(v, val); break;
  case VMM__VIRTIO_MMIO_INTERRUPT_ACK:
    v->isr &= ~val;
    update_line(v);
    break;
  case VMM__VIRTIO_MMIO_STATUS: write_status(v, val); break;
  case VMM__VIRTIO_MMIO_QUEUE_DESC_LOW:
  case VMM__VIRTIO_MMIO_QUEUE_DESC_HIGH:
    if (modern && (q = queue_for_config(v, "QueueDesc")) != NULL)
      set_half(&q->desc, val, off == VMM__VIRTIO_MMIO_QUEUE_DESC_HIGH);
    break;
  case VMM__VIRTIO_MMIO_QUEUE_DRIVER_LOW:
  case VMM__VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
    if (modern && (q = queue_for_config(v, "QueueDriver")) != NULL)
      set_half(&q->avail, val, off == VMM__VIRTIO_MMIO_QUEUE_DRIVER_HIGH);
    break;
  case VMM__VIRTIO_MMIO_QUEUE_DEVICE_LOW:
  case VMM__VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
    if (modern && (q = queue_for_config(v, "QueueDevice")) != NULL)
      set_half(&q->used, val, off == VMM__VIRTIO_MMIO_QUEUE_DEVICE_HIGH);
    break;
  case VMM__VIRTIO_MMIO_SHM_SEL: v->shm_sel = val; break;
  default:
    /* Read-only and reserved registers ignore writes. */
    break;
  }
}

static void config_access(vmm_virtio *v, uint64_t off, void *data, uint32_t len,
                          bool is_write) {
  uint32_t size = v->ops->config_size;
  if (off >= size || len > size - off) {
    v->bad_accesses++;
    return; /* reads stay zero */
  }
  if (!is_write) {
    memcpy(data, v->config + off, len);
    return;
  }
  memcpy(v->config + off, data, len);
  if (v->ops->config_write != NULL)
    v->ops->config_write(v->model, (uint32_t)off, len);
}

void vmm__virtio_mmio_access(vmm_virtio *v, uint64_t off, void *data,
                             uint32_t len, bool is_write) {
  if (off >= VMM__VIRTIO_MMIO_CONFIG) {
    config_access(v, off - VMM__VIRTIO_MMIO_CONFIG, data, len, is_write);
    return;
  }
  /* Control registers: 32-bit aligned accesses only (spec 4.2.2.2). */
  if (len != 4 || (off & 3)) {
    v->bad_accesses++;
    return;
  }
  if (is_write) {
    uint32_t val;
    memcpy(&val, data, 4);
    write_reg(v, off, val);
  } else {
    uint32_t val = read_reg(v, off);
    memcpy(data, &val, 4);
  }
}

static int mmio_handler(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                        bool is_write, void *opaque) {
  vmm_virtio *v = opaque;
  VMM__UNUSED(vcpu);
  vmm__virtio_lock(v);
  vmm__virtio_mmio_access(v, addr - v->cfg.base, data, len, is_write);
  vmm__virtio_unlock(v);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Lifetime: a device of the device interface                               */

void vmm__virtio_lock(vmm_virtio *v) {
  pthread_mutex_lock(&v->lock);
}

void vmm__virtio_unlock(vmm_virtio *v) {
  pthread_mutex_unlock(&v->lock);
  if (v->ops->unlocked != NULL)
    v->ops->unlocked(v->model);
}

/* The window must not shadow RAM: the guest would never reach it. */
static int check_window(vmm_vm *vm, vmm_gpa_t base) {
  struct vmm_mem_slot_info infos[VMM_MEM_MAX_SLOTS];
  size_t n = VMM__ARRAY_SIZE(infos);
  int err = vmm_mem_slot_list(vm, infos, &n);
  if (err < 0)
    return err;
  for (size_t i = 0; i < n; i++)
    if (base < infos[i].gpa + infos[i].size &&
        infos[i].gpa < base + VMM_VIRTIO_MMIO_SIZE)
      return VMM_EOVERLAP;
  return 0;
}

static int dev_realize(vmm_dev *dev, void *opaque) {
  vmm_virtio *v = opaque;
  v->dev = dev;
  return vmm_dev_io_register(dev, VMM_IO_MMIO, v->cfg.base,
                             VMM_VIRTIO_MMIO_SIZE, mmio_handler, v);
}

/* Host reset (vmm_dev_reset, a machine reset): as if the driver wrote 0. */
static void dev_reset(vmm_dev *dev, void *opaque) {
  vmm_virtio *v = opaque;
  VMM__UNUSED(dev);
  vmm__virtio_lock(v);
  reset(v);
  vmm__virtio_unlock(v);
}

static void free_transport(vmm_virtio *v) {
  pthread_mutex_destroy(&v->lock);
  for (unsigned i = 0; i < VMM__VIRTIO_MAX_QUEUES; i++)
    free(v->q[i].bufs);
  free(v);
}

/* Ranges are gone and our lines released when this runs. */
static void dev_destroy(vmm_dev *dev, void *opaque) {
  vmm_virtio *v = opaque;
  VMM__UNUSED(dev);
  if (v == NULL)
    return;
  if (v->attached)
    v->ops->destroy(v->model);
  free_transport(v);
}

static int dev_stats(vmm_dev *dev, struct json_t **out, void *opaque) {
  vmm_virtio *v = opaque;
  VMM__UNUSED(dev);
  if (v->ops->stats == NULL)
    return VMM_ENOTSUP;
  return v->ops->stats(v->model, out);
}

static const struct vmm_dev_ops virtio_dev_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "virtio-mmio",
    .realize = dev_realize,
    .reset = dev_reset,
    .destroy = dev_destroy,
    .stats = dev_stats,
};

vmm_virtio *vmm__virtio_of(const vmm_dev *dev) {
  return vmm__dev_data(dev, &virtio_dev_ops);
}

int vmm__virtio_create(vmm_vm *vm, const struct vmm_virtio_mmio_config *cfg,
                       const struct vmm__virtio_ops *ops, void *model,
                       uint64_t features, uint16_t queue_size_max,
                       vmm_virtio **out, vmm_dev **out_dev) {
  if (vm == NULL || cfg == NULL || ops == NULL || out == NULL ||
      ops->config_size > VMM__VIRTIO_CONFIG_MAX || queue_size_max == 0 ||
      (queue_size_max & (queue_size_max - 1)) || ops->destroy == NULL)
    return VMM_EINVAL;
  if ((cfg->version != 1 && cfg->version != 2) || cfg->gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  if (cfg->base % VMM_VIRTIO_MMIO_SIZE)
    return VMM_EALIGN;
  if (cfg->base >= (1ull << 52) - VMM_VIRTIO_MMIO_SIZE)
    return VMM_EINVAL;
  int err = check_window(vm, cfg->base);
  if (err < 0)
    return err;

  vmm_virtio *v = calloc(1, sizeof(*v));
  if (v == NULL)
    return VMM_ENOMEM;
  v->vm = vm;
  v->ops = ops;
  v->model = model;
  v->cfg = *cfg;
  v->cfg.name = NULL; /* not kept: vmm_dev_name() has the copy */
  v->queue_size_max = queue_size_max;
  v->device_features = features;
  if (cfg->version == 2)
    v->device_features |= 1ull << VMM_VIRTIO_F_VERSION_1;
  else
    v->device_features &= 0xffffffffull;
  if ((err = -pthread_mutex_init(&v->lock, NULL)) < 0) {
    free(v);
    return err;
  }
  for (unsigned i = 0; i < VMM__VIRTIO_MAX_QUEUES; i++) {
    v->q[i].bufs = calloc(queue_size_max, sizeof(*v->q[i].bufs));
    if (v->q[i].bufs == NULL) {
      free_transport(v);
      return VMM_ENOMEM;
    }
  }
  /* On failure vmm_dev_attach() calls dev_destroy(), which frees the
     transport and, with attached still false, leaves the model alone. */
  vmm_dev *dev;
  err = vmm_dev_attach(vm, cfg->name != NULL ? cfg->name : ops->default_name,
                       &virtio_dev_ops, v, &dev);
  if (err < 0)
    return err;
  v->attached = true;
  *out = v;
  if (out_dev != NULL)
    *out_dev = dev;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Public introspection                                                     */

int vmm_virtio_get_state(vmm_dev *dev, struct vmm_virtio_state *st) {
  vmm_virtio *v = vmm__virtio_of(dev);
  if (v == NULL || st == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&v->lock);
  *st = (struct vmm_virtio_state){
      .device_id = v->ops->device_id,
      .version = v->cfg.version,
      .status = v->status,
      .interrupt_status = v->isr,
      .irq_level = v->irq_level,
      .error = v->error,
      .device_features = v->device_features,
      .driver_features = v->driver_features,
      .notifications = v->notifications,
      .interrupts = v->interrupts,
      .errors = v->errors,
      .bad_accesses = v->bad_accesses,
      .resets = v->resets,
  };
  pthread_mutex_unlock(&v->lock);
  return 0;
}

int vmm_virtio_mmio_cmdline(vmm_dev *dev, char *buf, size_t size) {
  vmm_virtio *v = vmm__virtio_of(dev);
  if (v == NULL || (buf == NULL && size != 0))
    return VMM_EINVAL;
  int n = snprintf(buf, size, "virtio_mmio.device=0x%x@0x%llx:%u",
                   VMM_VIRTIO_MMIO_SIZE, (unsigned long long)v->cfg.base,
                   v->cfg.gsi);
  return n < 0 || (size_t)n >= size ? VMM_E2BIG : 0;
}
