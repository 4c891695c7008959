/*
 * A host-side virtio-mmio driver for tests and fuzzers: it plays the guest
 * by making MMIO accesses through the VM's bus (the same path a vCPU exit
 * takes, handler and locking included) and by writing rings into guest RAM
 * with vmm_mem_write. Header-only; needs the internal include path.
 */
#ifndef LIBVMM_TESTS_VIRTIO_DRIVER_H
#define LIBVMM_TESTS_VIRTIO_DRIVER_H

#include <string.h>

#include "internal.h"
#include "io/virtio_internal.h"

struct vd {
  vmm_vm *vm;
  uint64_t base;
};

/* One MMIO access through the bus; returns what a read produced. */
static inline uint64_t vd_access(struct vd *d, uint64_t off, uint64_t val,
                                 uint32_t len, bool write) {
  uint8_t data[8] = {0};
  memcpy(data, &val, len);
  vmm__iobus_dispatch(&d->vm->mmio, NULL, d->base + off, data, len, write);
  uint64_t out = 0;
  memcpy(&out, data, len);
  return out;
}

static inline uint32_t vd_r32(struct vd *d, uint64_t off) {
  return (uint32_t)vd_access(d, off, 0, 4, false);
}

static inline void vd_w32(struct vd *d, uint64_t off, uint32_t v) {
  vd_access(d, off, v, 4, true);
}

static inline uint64_t vd_device_features(struct vd *d) {
  vd_w32(d, VMM__VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  uint64_t f = (uint64_t)vd_r32(d, VMM__VIRTIO_MMIO_DEVICE_FEATURES) << 32;
  vd_w32(d, VMM__VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  return f | vd_r32(d, VMM__VIRTIO_MMIO_DEVICE_FEATURES);
}

static inline void vd_driver_features(struct vd *d, uint64_t f) {
  vd_w32(d, VMM__VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  vd_w32(d, VMM__VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(f >> 32));
  vd_w32(d, VMM__VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  vd_w32(d, VMM__VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)f);
}

static inline uint32_t vd_status(struct vd *d) {
  return vd_r32(d, VMM__VIRTIO_MMIO_STATUS);
}

static inline void vd_set_status(struct vd *d, uint32_t bits) {
  vd_w32(d, VMM__VIRTIO_MMIO_STATUS, vd_status(d) | bits);
}

/*
 * Standard initialization up to (not including) queue setup: reset,
 * ACKNOWLEDGE, DRIVER, features, FEATURES_OK (modern). Returns the status.
 */
static inline uint32_t vd_negotiate(struct vd *d, uint64_t features) {
  vd_w32(d, VMM__VIRTIO_MMIO_STATUS, 0);
  vd_set_status(d, VMM_VIRTIO_STATUS_ACKNOWLEDGE);
  vd_set_status(d, VMM_VIRTIO_STATUS_DRIVER);
  vd_driver_features(d, features);
  if (vd_r32(d, VMM__VIRTIO_MMIO_VERSION) == 2)
    vd_set_status(d, VMM_VIRTIO_STATUS_FEATURES_OK);
  else
    vd_w32(d, VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE, 4096);
  return vd_status(d);
}

/* A driver-side queue with the legacy layout (valid for modern too). */
struct vq_drv {
  unsigned index;
  uint16_t num;
  uint64_t desc, avail, used;
  uint16_t avail_idx;
  uint16_t used_seen;
  uint16_t next_desc;
};

static inline uint64_t vq_layout_size(uint16_t num) {
  uint64_t used = (16ull * num + 2ull * (3 + num) + 4095) & ~4095ull;
  return used + ((6ull + 8ull * num + 4095) & ~4095ull);
}

/* Set up queue index at gpa (page aligned, zeroed here) with num entries. */
static inline void vq_setup(struct vd *d, struct vq_drv *q, unsigned index,
                            uint16_t num, uint64_t gpa) {
  memset(q, 0, sizeof(*q));
  q->index = index;
  q->num = num;
  q->desc = gpa;
  q->avail = gpa + 16ull * num;
  q->used = (q->avail + 2ull * (3 + num) + 4095) & ~4095ull;
  static const uint8_t zero[4096];
  for (uint64_t off = 0; off < vq_layout_size(num); off += sizeof(zero))
    vmm_mem_write(d->vm, gpa + off, zero, sizeof(zero));
  vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_SEL, index);
  vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_NUM, num);
  if (vd_r32(d, VMM__VIRTIO_MMIO_VERSION) == 2) {
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)q->desc);
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(q->desc >> 32));
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)q->avail);
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(q->avail >> 32));
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)q->used);
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(q->used >> 32));
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_READY, 1);
  } else {
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_ALIGN, 4096);
    vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_PFN, (uint32_t)(gpa >> 12));
  }
}

struct vd_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

/* Write descriptor i of the table as given (no checks: tests lie). */
static inline void vq_write_desc(struct vd *d, struct vq_drv *q, uint16_t i,
                                 struct vd_desc x) {
  uint8_t raw[16];
  memcpy(raw, &x.addr, 8);
  memcpy(raw + 8, &x.len, 4);
  memcpy(raw + 12, &x.flags, 2);
  memcpy(raw + 14, &x.next, 2);
  vmm_mem_write(d->vm, q->desc + 16ull * i, raw, sizeof(raw));
}

/* Publish head in the available ring and bump idx by `bump` (normally 1). */
static inline void vq_publish(struct vd *d, struct vq_drv *q, uint16_t head,
                              uint16_t bump) {
  vmm_mem_write(d->vm, q->avail + 4 + 2ull * (q->avail_idx % q->num), &head, 2);
  q->avail_idx = (uint16_t)(q->avail_idx + bump);
  vmm_mem_write(d->vm, q->avail + 2, &q->avail_idx, 2);
}

/* A buffer for vq_add: readable unless writable. */
struct vd_buf {
  uint64_t addr;
  uint32_t len;
  bool writable;
};

/* Add a well-formed chain of n buffers and publish it. Returns its head. */
static inline uint16_t vq_add(struct vd *d, struct vq_drv *q,
                              const struct vd_buf *bufs, unsigned n) {
  uint16_t head = q->next_desc;
  for (unsigned i = 0; i < n; i++) {
    uint16_t idx = (uint16_t)((head + i) % q->num);
    uint16_t flags = bufs[i].writable ? VMM__VIRTQ_DESC_F_WRITE : 0;
    if (i + 1 < n)
      flags |= VMM__VIRTQ_DESC_F_NEXT;
    vq_write_desc(d, q, idx,
                  (struct vd_desc){bufs[i].addr, bufs[i].len, flags,
                                   (uint16_t)((idx + 1) % q->num)});
  }
  q->next_desc = (uint16_t)((head + n) % q->num);
  vq_publish(d, q, head, 1);
  return head;
}

static inline void vq_kick(struct vd *d, struct vq_drv *q) {
  vd_w32(d, VMM__VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

static inline uint16_t vq_used_idx(struct vd *d, struct vq_drv *q) {
  uint16_t idx = 0;
  vmm_mem_read(d->vm, q->used + 2, &idx, 2);
  return idx;
}

/* Take the next used element; false if the device has not used more. */
static inline bool vq_get_used(struct vd *d, struct vq_drv *q, uint32_t *id,
                               uint32_t *len) {
  if (vq_used_idx(d, q) == q->used_seen)
    return false;
  uint8_t e[8];
  vmm_mem_read(d->vm, q->used + 4 + 8ull * (q->used_seen % q->num), e, 8);
  memcpy(id, e, 4);
  memcpy(len, e + 4, 4);
  q->used_seen++;
  return true;
}

static inline void vd_ack_interrupts(struct vd *d) {
  vd_w32(d, VMM__VIRTIO_MMIO_INTERRUPT_ACK,
         vd_r32(d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS));
}

#endif
