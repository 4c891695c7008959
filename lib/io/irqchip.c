/*
 * The hub of the user-space interrupt platform: routes lines to the PIC
 * and IOAPIC, the PIC's output to the local APICs' LINT0, messages to the
 * local APICs, and keeps each vCPU's interrupt summary (vcpu->irq_bits)
 * for the engines' acceptance calls. See lib/io/irqchip.h and
 * docs/platform.md.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define BITMAP_WORDS(n) (((n) + 63) / 64)

int vmm__irqchip_create(vmm_vm *vm, struct vmm__irqchip **out) {
  struct vmm__irqchip *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return VMM_ENOMEM;
  h->vm = vm;
  h->nvcpus = vm->cfg.max_vcpus;
  h->vcpus = calloc(h->nvcpus, sizeof(h->vcpus[0]));
  h->dirty = calloc(BITMAP_WORDS(h->nvcpus), sizeof(uint64_t));
  h->notify = calloc(BITMAP_WORDS(h->nvcpus), sizeof(uint64_t));
  int err = VMM_ENOMEM;
  if (h->vcpus == NULL || h->dirty == NULL || h->notify == NULL)
    goto fail;
  if ((err = -pthread_mutex_init(&h->lock, NULL)) < 0)
    goto fail;
  if ((err = -pthread_rwlock_init(&h->hook_lock, NULL)) < 0) {
    pthread_mutex_destroy(&h->lock);
    goto fail;
  }
  *out = h;
  return 0;

fail:
  free(h->notify);
  free(h->dirty);
  free(h->vcpus);
  free(h);
  return err;
}

void vmm__irqchip_destroy(struct vmm__irqchip *h) {
  if (h == NULL)
    return;
  pthread_rwlock_destroy(&h->hook_lock);
  pthread_mutex_destroy(&h->lock);
  free(h->notify);
  free(h->dirty);
  free(h->vcpus);
  free(h);
}

void vmm__irqchip_lock(struct vmm__irqchip *h) {
  pthread_mutex_lock(&h->lock);
}

void vmm__irqchip_dirty(struct vmm__irqchip *h, unsigned i) {
  if (i < h->nvcpus)
    h->dirty[i / 64] |= 1ull << (i % 64);
}

void vmm__irqchip_dirty_all(struct vmm__irqchip *h) {
  for (unsigned i = 0; i < h->nvcpus; i++)
    vmm__irqchip_dirty(h, i);
}

static void mark_notify(struct vmm__irqchip *h, unsigned i) {
  h->notify[i / 64] |= 1ull << (i % 64);
}

void vmm__irqchip_acked(struct vmm__irqchip *h, uint32_t gsi) {
  if (gsi < VMM_IRQ_LINES)
    h->acked |= 1u << gsi;
}

vmm_vcpu *vmm__irqchip_vcpu(struct vmm__irqchip *h, unsigned i) {
  return i < h->nvcpus ? h->vcpus[i] : NULL;
}

/* What vCPU i could take now from the platform (VMM__IRQ_LAPIC/EXTINT). */
static unsigned summary(struct vmm__irqchip *h, unsigned i) {
  unsigned bits = 0;
  bool intr = h->pic != NULL && vmm__pic_output(h->pic);
  if (h->lapic != NULL) {
    if (vmm__lapic_pending(h->lapic, i) >= 0)
      bits |= VMM__IRQ_LAPIC;
    if (intr && vmm__lapic_extint(h->lapic, i))
      bits |= VMM__IRQ_EXTINT;
  } else if (intr && i == 0) {
    /* No local APIC: the PIC's INTR is the BSP's interrupt pin. */
    bits |= VMM__IRQ_EXTINT;
  }
  return bits;
}

void vmm__irqchip_unlock(struct vmm__irqchip *h) {
  const unsigned maskable = VMM__IRQ_LAPIC | VMM__IRQ_EXTINT;
  for (unsigned w = 0; w < BITMAP_WORDS(h->nvcpus); w++) {
    uint64_t d = h->dirty[w];
    h->dirty[w] = 0;
    while (d != 0) {
      unsigned i = w * 64 + (unsigned)__builtin_ctzll(d);
      d &= d - 1;
      vmm_vcpu *v = h->vcpus[i];
      if (v == NULL)
        continue;
      unsigned now = summary(h, i);
      unsigned old = atomic_load(&v->irq_bits) & maskable;
      if (now == old)
        continue;
      atomic_fetch_or(&v->irq_bits, now);
      atomic_fetch_and(&v->irq_bits, ~(old & ~now));
      if (now & ~old)
        mark_notify(h, i);
    }
  }
  /* Collect under the lock, act after it: waking and kicking take the
     vCPU's locks, and hooks run device code that raises lines. */
  vmm_vcpu *wake[256];
  unsigned nwake = 0;
  for (unsigned w = 0; w < BITMAP_WORDS(h->nvcpus); w++) {
    uint64_t n = h->notify[w];
    h->notify[w] = 0;
    while (n != 0) {
      unsigned i = w * 64 + (unsigned)__builtin_ctzll(n);
      n &= n - 1;
      if (h->vcpus[i] != NULL && nwake < 256)
        wake[nwake++] = h->vcpus[i];
    }
  }
  uint32_t acked = h->acked;
  h->acked = 0;
  pthread_mutex_unlock(&h->lock);

  for (unsigned k = 0; k < nwake; k++)
    vmm__vcpu_notify(wake[k]);
  if (acked != 0) {
    pthread_rwlock_rdlock(&h->hook_lock);
    for (uint32_t gsi = 0; gsi < VMM_IRQ_LINES; gsi++)
      if ((acked & (1u << gsi)) && h->hooks[gsi].fn != NULL)
        h->hooks[gsi].fn(h->hooks[gsi].opaque, gsi);
    pthread_rwlock_unlock(&h->hook_lock);
  }
}

int vmm__irqchip_ack_hook(vmm_vm *vm, uint32_t gsi, vmm__irq_ack_fn fn,
                          void *opaque) {
  struct vmm__irqchip *h = vm->irqchip;
  if (h == NULL)
    return VMM_ENOTSUP;
  if (gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  int err = 0;
  pthread_rwlock_wrlock(&h->hook_lock);
  if (fn != NULL && h->hooks[gsi].fn != NULL)
    err = VMM_EBUSY;
  else {
    h->hooks[gsi].fn = fn;
    h->hooks[gsi].opaque = opaque;
  }
  pthread_rwlock_unlock(&h->hook_lock);
  return err;
}

/* ------------------------------------------------------------------------ */
/* vCPU events                                                              */

void vmm__irqchip_nmi(struct vmm__irqchip *h, unsigned i) {
  vmm_vcpu *v = vmm__irqchip_vcpu(h, i);
  if (v == NULL)
    return;
  atomic_store(&v->pending_nmi, true);
  mark_notify(h, i);
}

void vmm__irqchip_init(struct vmm__irqchip *h, unsigned i) {
  vmm_vcpu *v = vmm__irqchip_vcpu(h, i);
  if (v == NULL)
    return;
  pthread_mutex_lock(&v->wait_lock);
  /* A SIPI that came before this INIT is void. */
  atomic_fetch_and(&v->irq_bits, ~VMM__IRQ_SIPI);
  atomic_fetch_or(&v->irq_bits, VMM__IRQ_INIT);
  pthread_mutex_unlock(&v->wait_lock);
  if (h->lapic != NULL)
    vmm__lapic_init_reset(h->lapic, i);
  vmm__irqchip_dirty(h, i);
  mark_notify(h, i);
}

void vmm__irqchip_sipi(struct vmm__irqchip *h, unsigned i, uint8_t vector) {
  vmm_vcpu *v = vmm__irqchip_vcpu(h, i);
  if (v == NULL)
    return;
  pthread_mutex_lock(&v->wait_lock);
  /* Taken while waiting for it, including right after an INIT the vCPU
     has not processed yet (guests send INIT and SIPI back to back). */
  bool accept = v->mp_state == VMM_MP_WAIT_SIPI ||
                (atomic_load(&v->irq_bits) & VMM__IRQ_INIT) != 0;
  if (accept && !(atomic_load(&v->irq_bits) & VMM__IRQ_SIPI)) {
    v->sipi_vector = vector;
    atomic_fetch_or(&v->irq_bits, VMM__IRQ_SIPI);
  }
  pthread_mutex_unlock(&v->wait_lock);
  if (accept)
    mark_notify(h, i);
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                  */

void vmm__irqchip_pic_changed(struct vmm__irqchip *h) {
  if (h->lapic != NULL)
    vmm__lapic_lint0(h->lapic, h->pic != NULL && vmm__pic_output(h->pic));
  vmm__irqchip_dirty_all(h);
}

void vmm__irqchip_deliver(struct vmm__irqchip *h,
                          const struct vmm__irq_msg *m) {
  if (h->lapic != NULL)
    vmm__lapic_deliver(h->lapic, m);
}

int vmm__irqchip_pic_inta(struct vmm__irqchip *h) {
  if (h->pic == NULL)
    return -1;
  int irq;
  int vector = vmm__pic_inta(h->pic, &irq);
  if (irq >= 0)
    vmm__irqchip_acked(h, (uint32_t)irq);
  vmm__irqchip_pic_changed(h);
  return vector;
}

/* Line n: PIC IRQ n (n < 16; IRQ 2 is the cascade) and IOAPIC pin n. */
static void route(struct vmm__irqchip *h, uint32_t gsi, bool level) {
  if (h->pic != NULL && gsi < 16 && gsi != 2)
    vmm__pic_set_irq(h->pic, gsi, level);
  if (h->ioapic != NULL)
    vmm__ioapic_set_irq(h->ioapic, gsi, level);
}

void vmm__irqchip_line(vmm_vm *vm, uint32_t gsi, bool level) {
  struct vmm__irqchip *h = vm->irqchip;
  if (h == NULL || gsi >= VMM_IRQ_LINES)
    return;
  vmm__irqchip_lock(h);
  if (level)
    h->lines |= 1u << gsi;
  else
    h->lines &= ~(1u << gsi);
  route(h, gsi, level);
  vmm__irqchip_unlock(h);
}

/* ------------------------------------------------------------------------ */
/* The front end's side                                                     */

int vmm__irqchip_ack(vmm_vcpu *vcpu) {
  struct vmm__irqchip *h = vcpu->vm->irqchip;
  unsigned i = vcpu->index;
  vmm__irqchip_lock(h);
  int vector = -1;
  unsigned bits = summary(h, i);
  if (bits & VMM__IRQ_EXTINT) {
    vector = vmm__irqchip_pic_inta(h);
    if (h->lapic != NULL)
      vmm__lapic_extint_done(h->lapic, i);
  } else if (bits & VMM__IRQ_LAPIC) {
    vector = vmm__lapic_ack(h->lapic, i);
    if (vector >= 0 && h->ioapic != NULL)
      vmm__ioapic_vector_acked(h->ioapic, (uint8_t)vector);
  }
  vmm__irqchip_dirty(h, i);
  vmm__irqchip_unlock(h);
  return vector;
}

void vmm__irqchip_vcpu_added(vmm_vcpu *vcpu) {
  struct vmm__irqchip *h = vcpu->vm->irqchip;
  vmm__irqchip_lock(h);
  h->vcpus[vcpu->index] = vcpu;
  if (h->lapic != NULL)
    atomic_store(&vcpu->tpr, vmm__lapic_tpr(h->lapic, vcpu->index));
  vmm__irqchip_dirty(h, vcpu->index);
  vmm__irqchip_unlock(h);
}

int vmm__irqchip_msr(vmm_vcpu *vcpu, uint32_t index, uint64_t *value,
                     bool write) {
  struct vmm__irqchip *h = vcpu->vm->irqchip;
  uint64_t tsc = 0;
  /* IA32_TSC_DEADLINE (where offered) needs the guest's TSC now; read it
     before taking the lock, it is an engine call. */
  if (index == 0x6e0 && write && vcpu->vm->tsc_khz != 0 &&
      vcpu->vm->ops->guest_tsc(vcpu, &tsc) < 0)
    return VMM_EINVAL;
  vmm__irqchip_lock(h);
  int rc = VMM_IO_DECLINED;
  if (h->lapic != NULL)
    rc = vmm__lapic_msr(h->lapic, vcpu->index, index, value, write, tsc);
  vmm__irqchip_unlock(h);
  return rc;
}

void vmm__irqchip_set_tpr(vmm_vcpu *vcpu, uint8_t tpr) {
  struct vmm__irqchip *h = vcpu->vm->irqchip;
  vmm__irqchip_lock(h);
  if (h->lapic != NULL)
    vmm__lapic_set_tpr(h->lapic, vcpu->index, tpr);
  vmm__irqchip_dirty(h, vcpu->index);
  vmm__irqchip_unlock(h);
}

/* ------------------------------------------------------------------------ */
/* Device registration                                                      */

/* One attach for the three kinds: the pointer's slot is chosen by kind. */
enum kind { PIC, IOAPIC, LAPIC };

static void **slot(struct vmm__irqchip *h, enum kind k) {
  switch (k) {
  case PIC: return (void **)&h->pic;
  case IOAPIC: return (void **)&h->ioapic;
  default: return (void **)&h->lapic;
  }
}

static int do_attach(vmm_vm *vm, enum kind k, void *dev) {
  struct vmm__irqchip *h = vm->irqchip;
  if (h == NULL)
    return VMM_ENOTSUP;
  vmm__irqchip_lock(h);
  int err = 0;
  void **s = slot(h, k);
  if (*s != NULL) {
    err = VMM_EEXIST;
  } else {
    *s = dev;
    /* A late device starts from the lines as they are now. */
    for (uint32_t gsi = 0; gsi < VMM_IRQ_LINES; gsi++) {
      bool level = (h->lines >> gsi) & 1;
      if (!level)
        continue;
      if (k == PIC && gsi < 16 && gsi != 2)
        vmm__pic_set_irq(h->pic, gsi, true);
      if (k == IOAPIC)
        vmm__ioapic_set_irq(h->ioapic, gsi, true);
    }
    if (k == LAPIC)
      for (unsigned i = 0; i < h->nvcpus; i++)
        if (h->vcpus[i] != NULL)
          atomic_store(&h->vcpus[i]->tpr, vmm__lapic_tpr(h->lapic, i));
    vmm__irqchip_pic_changed(h);
  }
  vmm__irqchip_unlock(h);
  return err;
}

static void do_detach(vmm_vm *vm, enum kind k, void *dev) {
  struct vmm__irqchip *h = vm->irqchip;
  if (h == NULL)
    return;
  vmm__irqchip_lock(h);
  void **s = slot(h, k);
  if (*s == dev) {
    *s = NULL;
    vmm__irqchip_pic_changed(h);
  }
  vmm__irqchip_unlock(h);
}

int vmm__irqchip_attach_pic(vmm_vm *vm, struct vmm__pic *pic) {
  return do_attach(vm, PIC, pic);
}
int vmm__irqchip_attach_ioapic(vmm_vm *vm, struct vmm__ioapic *io) {
  return do_attach(vm, IOAPIC, io);
}
int vmm__irqchip_attach_lapic(vmm_vm *vm, struct vmm__lapics *l) {
  return do_attach(vm, LAPIC, l);
}
void vmm__irqchip_detach_pic(vmm_vm *vm, struct vmm__pic *pic) {
  do_detach(vm, PIC, pic);
}
void vmm__irqchip_detach_ioapic(vmm_vm *vm, struct vmm__ioapic *io) {
  do_detach(vm, IOAPIC, io);
}
void vmm__irqchip_detach_lapic(vmm_vm *vm, struct vmm__lapics *l) {
  do_detach(vm, LAPIC, l);
}
