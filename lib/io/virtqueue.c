/*
 * Split virtqueues, device side. Every ring and descriptor field is guest
 * data read through the slot table (vmm_mem_read/write), never through a
 * cached pointer, and checked before use: a slot removed under us, an index
 * out of range or a chain that loops is an error state, never an access
 * outside guest RAM or an endless walk. See docs/virtio.md.
 */
#include <string.h>

#include "../internal.h"
#include "virtio_internal.h"

/* Ring layout (virtio 1.x 2.7): offsets inside each part. */
#define AVAIL_FLAGS 0
#define AVAIL_IDX 2
#define AVAIL_RING 4
#define USED_FLAGS 0
#define USED_IDX 2
#define USED_RING 4
#define DESC_SIZE 16

struct desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

/*
 * Is [gpa, gpa+len) guest RAM (writable RAM if write)? The range may span
 * adjacent slots. len == 0 is trivially fine.
 */
static bool ram_range(vmm_vm *vm, vmm_gpa_t gpa, uint64_t len, bool write) {
  if (len == 0)
    return true;
  if (gpa + len < gpa)
    return false;
  struct vmm__mem *mem = &vm->mem;
  bool ok = true;
  pthread_rwlock_rdlock(&mem->lock);
  while (len > 0) {
    struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
    if (s == NULL || (write && (s->flags & VMM_MEM_READONLY))) {
      ok = false;
      break;
    }
    uint64_t n = s->gpa + s->size - gpa;
    if (n >= len)
      break;
    gpa += n;
    len -= n;
  }
  pthread_rwlock_unlock(&mem->lock);
  return ok;
}

int vmm__virtq_enable(vmm_virtio *v, unsigned qi) {
  struct vmm__virtq *q = &v->q[qi];
  uint32_t max = v->ops->queue_max(v->model, qi, vmm__virtio_features(v));
  if (max > v->queue_size_max)
    max = v->queue_size_max;
  if (q->num == 0 || q->num > max || (q->num & (q->num - 1))) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_QUEUE_CONFIG,
                     "queue %u size %u (maximum %u, power of two)", qi, q->num,
                     max);
    return VMM_EINVAL;
  }
  uint64_t n = q->num;
  if ((q->desc & 15) || (q->avail & 1) || (q->used & 3) ||
      !ram_range(v->vm, q->desc, DESC_SIZE * n, false) ||
      !ram_range(v->vm, q->avail, AVAIL_RING + 2 * n + 2, false) ||
      !ram_range(v->vm, q->used, USED_RING + 8 * n + 2, true)) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_RING_ADDRESS,
                     "queue %u rings desc 0x%llx avail 0x%llx used 0x%llx "
                     "size %u",
                     qi, (unsigned long long)q->desc,
                     (unsigned long long)q->avail, (unsigned long long)q->used,
                     q->num);
    return VMM_EINVAL;
  }
  q->last_avail = 0;
  q->used_idx = 0;
  q->ready = true;
  return 0;
}

/* Ring accesses. The rings were in RAM when enabled, but a slot may have
   been removed since: any failure is an error state. */
static int ring_read(vmm_virtio *v, unsigned qi, vmm_gpa_t gpa, void *buf,
                     size_t len) {
  if (vmm_mem_read(v->vm, gpa, buf, len) == 0)
    return 0;
  vmm__virtio_fail(v, VMM_VIRTIO_ERR_RING_ADDRESS,
                   "queue %u ring at 0x%llx no longer in RAM", qi,
                   (unsigned long long)gpa);
  return VMM_ENOMAP;
}

static int ring_write(vmm_virtio *v, unsigned qi, vmm_gpa_t gpa,
                      const void *buf, size_t len) {
  if (vmm_mem_write(v->vm, gpa, buf, len) == 0)
    return 0;
  vmm__virtio_fail(v, VMM_VIRTIO_ERR_RING_ADDRESS,
                   "queue %u ring at 0x%llx no longer in RAM", qi,
                   (unsigned long long)gpa);
  return VMM_ENOMAP;
}

static int read_desc(vmm_virtio *v, unsigned qi, uint16_t i, struct desc *d) {
  uint8_t raw[DESC_SIZE];
  int err = ring_read(v, qi, v->q[qi].desc + (uint64_t)i * DESC_SIZE, raw,
                      sizeof(raw));
  if (err < 0)
    return err;
  /* Little endian on the wire; so is every host we build for. */
  memcpy(&d->addr, raw, 8);
  memcpy(&d->len, raw + 8, 4);
  memcpy(&d->flags, raw + 12, 2);
  memcpy(&d->next, raw + 14, 2);
  return 0;
}

int vmm__virtq_pop(vmm_virtio *v, unsigned qi, struct vmm__virtq_chain *c) {
  if (qi >= VMM__VIRTIO_MAX_QUEUES || !vmm__virtio_live(v))
    return 0;
  struct vmm__virtq *q = &v->q[qi];
  if (!q->ready)
    return 0;

  uint16_t avail_idx;
  int err = ring_read(v, qi, q->avail + AVAIL_IDX, &avail_idx, 2);
  if (err < 0)
    return err;
  uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
  if (pending == 0)
    return 0;
  if (pending > q->num) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_AVAIL_INDEX,
                     "queue %u avail idx %u, device at %u, size %u", qi,
                     avail_idx, q->last_avail, q->num);
    return VMM_EINVAL;
  }
  /* The ring entry and descriptors were written before idx. */
  atomic_thread_fence(memory_order_acquire);

  uint16_t head;
  err = ring_read(
      v, qi, q->avail + AVAIL_RING + 2ull * (q->last_avail % q->num), &head, 2);
  if (err < 0)
    return err;
  if (head >= q->num) {
    vmm__virtio_fail(v, VMM_VIRTIO_ERR_HEAD_INDEX,
                     "queue %u avail entry %u names descriptor %u of %u", qi,
                     q->last_avail, head, q->num);
    return VMM_EINVAL;
  }

  uint64_t readable = 0, writable = 0;
  uint16_t count = 0;
  for (uint16_t i = head;;) {
    /* A chain has at most num descriptors; more means it loops. */
    if (count == q->num) {
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_CHAIN_LOOP,
                       "queue %u chain from %u longer than %u", qi, head,
                       q->num);
      return VMM_EINVAL;
    }
    struct desc d;
    if ((err = read_desc(v, qi, i, &d)) < 0)
      return err;
    if (d.flags & VMM__VIRTQ_DESC_F_INDIRECT) {
      /* We never offer VIRTIO_F_INDIRECT_DESC. */
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_INDIRECT,
                       "queue %u descriptor %u is indirect", qi, i);
      return VMM_EINVAL;
    }
    bool w = d.flags & VMM__VIRTQ_DESC_F_WRITE;
    if (!w && writable > 0) {
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_DIRECTION,
                       "queue %u descriptor %u readable after writable", qi, i);
      return VMM_EINVAL;
    }
    if (d.addr + d.len < d.addr) {
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_BUFFER_LENGTH,
                       "queue %u descriptor %u: 0x%llx + 0x%x wraps", qi, i,
                       (unsigned long long)d.addr, d.len);
      return VMM_EINVAL;
    }
    if (!ram_range(v->vm, d.addr, d.len, w)) {
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_BUFFER_ADDRESS,
                       "queue %u descriptor %u: [0x%llx, +0x%x) %s", qi, i,
                       (unsigned long long)d.addr, d.len,
                       w ? "not writable RAM" : "not RAM");
      return VMM_EINVAL;
    }
    if (w)
      writable += d.len;
    else
      readable += d.len;
    /* The used ring reports lengths in 32 bits; so do we. */
    if (readable + writable > UINT32_MAX) {
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_BUFFER_LENGTH,
                       "queue %u chain from %u exceeds 4 GiB", qi, head);
      return VMM_EINVAL;
    }
    q->bufs[count++] = (struct vmm__virtq_buf){d.addr, d.len, w};
    if (!(d.flags & VMM__VIRTQ_DESC_F_NEXT))
      break;
    if (d.next >= q->num) {
      vmm__virtio_fail(v, VMM_VIRTIO_ERR_NEXT_INDEX,
                       "queue %u descriptor %u next %u of %u", qi, i, d.next,
                       q->num);
      return VMM_EINVAL;
    }
    i = d.next;
  }
  q->last_avail++;
  *c = (struct vmm__virtq_chain){.head = head,
                                 .count = count,
                                 .readable = (uint32_t)readable,
                                 .writable = (uint32_t)writable,
                                 .bufs = q->bufs};
  return 1;
}

int vmm__virtq_push(vmm_virtio *v, unsigned qi, uint16_t head, uint32_t len) {
  if (qi >= VMM__VIRTIO_MAX_QUEUES || !v->q[qi].ready || !vmm__virtio_live(v))
    return VMM_ESTATE;
  struct vmm__virtq *q = &v->q[qi];
  uint8_t elem[8];
  uint32_t id = head;
  memcpy(elem, &id, 4);
  memcpy(elem + 4, &len, 4);
  int err =
      ring_write(v, qi, q->used + USED_RING + 8ull * (q->used_idx % q->num),
                 elem, sizeof(elem));
  if (err < 0)
    return err;
  /* The element must be visible before the index that publishes it. */
  atomic_thread_fence(memory_order_release);
  uint16_t idx = ++q->used_idx;
  return ring_write(v, qi, q->used + USED_IDX, &idx, 2);
}

void vmm__virtq_signal(vmm_virtio *v, unsigned qi) {
  if (qi >= VMM__VIRTIO_MAX_QUEUES || !v->q[qi].ready || !vmm__virtio_live(v))
    return;
  /* Our used idx stores must be visible before we read the driver's flag. */
  atomic_thread_fence(memory_order_seq_cst);
  uint16_t flags;
  if (ring_read(v, qi, v->q[qi].avail + AVAIL_FLAGS, &flags, 2) < 0)
    return;
  if (flags & VMM__VIRTQ_AVAIL_F_NO_INTERRUPT)
    return;
  vmm__virtio_raise(v, VMM__VIRTIO_INT_VRING);
}

/* Copy between the chain's readable or writable bytes and buf. */
static int chain_copy(vmm_virtio *v, const struct vmm__virtq_chain *c,
                      bool writable, uint32_t off, void *buf, uint32_t len) {
  uint64_t total = writable ? c->writable : c->readable;
  if ((uint64_t)off + len > total)
    return VMM_ERANGE;
  uint8_t *p = buf;
  for (uint16_t i = 0; i < c->count && len > 0; i++) {
    const struct vmm__virtq_buf *b = &c->bufs[i];
    if (b->writable != writable)
      continue;
    if (off >= b->len) {
      off -= b->len;
      continue;
    }
    uint32_t n = b->len - off;
    if (n > len)
      n = len;
    int err = writable ? vmm_mem_write(v->vm, b->gpa + off, p, n)
                       : vmm_mem_read(v->vm, b->gpa + off, p, n);
    if (err < 0)
      return err;
    p += n;
    len -= n;
    off = 0;
  }
  return 0;
}

int vmm__virtq_read(vmm_virtio *v, const struct vmm__virtq_chain *c,
                    uint32_t off, void *buf, uint32_t len) {
  return chain_copy(v, c, false, off, buf, len);
}

int vmm__virtq_write(vmm_virtio *v, const struct vmm__virtq_chain *c,
                     uint32_t off, const void *buf, uint32_t len) {
  return chain_copy(v, c, true, off, (void *)buf, len);
}
