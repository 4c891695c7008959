/*
 * The library's user-space interrupt platform ("the irqchip"): internal
 * interface between its hub (lib/io/irqchip.c), its devices (i8259.c,
 * ioapic.c, lapic.c; the PIT in i8254.c only drives a line like any
 * device) and the front end. See docs/platform.md for the data flow.
 *
 * One lock, the hub's, protects the state of the PIC pair, the IOAPIC and
 * every local APIC: interrupt delivery crosses all three (IOAPIC message to
 * a LAPIC, LAPIC EOI back to the IOAPIC, PIC output into LINT0), and a
 * single lock makes every such path atomic without a lock order between
 * them. It ranks below the device interface's interrupt lock (lines come
 * in from vmm_dev_irq_set() with that lock held) and above the vCPUs'
 * wait locks and kicks. vCPUs whose deliverable state changed are woken
 * and kicked by vmm__irqchip_unlock(), after the hub lock is released.
 */
#ifndef LIBVMM_IO_IRQCHIP_H
#define LIBVMM_IO_IRQCHIP_H

#include <libvmm/vmm.h>
#include <pthread.h>

#include "clock.h"

struct vmm__pic;
struct vmm__ioapic;
struct vmm__lapics;

/* Delivery modes (IOAPIC redirection entries, LAPIC ICR and LVTs). */
enum {
  VMM__DM_FIXED = 0,
  VMM__DM_LOWEST = 1,
  VMM__DM_SMI = 2,
  VMM__DM_NMI = 4,
  VMM__DM_INIT = 5,
  VMM__DM_SIPI = 6,
  VMM__DM_EXTINT = 7,
};

/* An interrupt message: an IOAPIC redirection entry or an IPI. */
struct vmm__irq_msg {
  uint8_t vector;
  uint8_t delivery;  /* VMM__DM_* */
  uint8_t shorthand; /* ICR bits 19:18; 0 for IOAPIC messages */
  bool logical;      /* destination mode */
  bool level;        /* trigger mode */
  bool assert;       /* ICR level bit (an INIT with it clear is a no-op) */
  uint8_t dest;      /* xAPIC destination field */
  int source;        /* sending LAPIC (shorthands), -1 for the IOAPIC */
};

/* Called, without any lock held, when the guest acknowledges an interrupt
   raised on line gsi: the PIC's INTA of that IRQ, or the LAPIC's of the
   vector of an edge-triggered IOAPIC pin. */
typedef void (*vmm__irq_ack_fn)(void *opaque, uint32_t gsi);

struct vmm__irqchip {
  vmm_vm *vm;
  pthread_mutex_t lock;
  uint32_t lines; /* input level of every line, as routed here */

  /* The devices, registered by their realize and cleared by their
     destroy; each may be absent. */
  struct vmm__pic *pic;
  struct vmm__ioapic *ioapic;
  struct vmm__lapics *lapic;

  unsigned nvcpus;  /* the VM's max_vcpus */
  vmm_vcpu **vcpus; /* vCPUs created so far, by index */
  uint64_t *dirty;  /* vCPUs whose summary must be recomputed */
  uint64_t *notify; /* vCPUs to wake and kick at unlock */
  uint32_t acked;   /* lines whose ack hooks are due */

  /* Ack hooks. Called under the read side of hook_lock, so clearing one
     (write side) waits for calls in flight. */
  pthread_rwlock_t hook_lock;
  struct {
    vmm__irq_ack_fn fn;
    void *opaque;
  } hooks[VMM_IRQ_LINES];
};

int vmm__irqchip_create(vmm_vm *vm, struct vmm__irqchip **out);
void vmm__irqchip_destroy(struct vmm__irqchip *h);

void vmm__irqchip_lock(struct vmm__irqchip *h);
/* Recompute dirty vCPUs, release the lock, then wake and kick vCPUs with
   something new to take and run the ack hooks due. */
void vmm__irqchip_unlock(struct vmm__irqchip *h);

/* Under the lock: vCPU i (all of them) must have its summary recomputed. */
void vmm__irqchip_dirty(struct vmm__irqchip *h, unsigned i);
void vmm__irqchip_dirty_all(struct vmm__irqchip *h);
/* Under the lock: ack hooks of line gsi are due at unlock. */
void vmm__irqchip_acked(struct vmm__irqchip *h, uint32_t gsi);
/* Under the lock: the vCPU of index i, if created. */
vmm_vcpu *vmm__irqchip_vcpu(struct vmm__irqchip *h, unsigned i);

/* Register or clear (fn NULL) the ack hook of a line. Not under the lock;
   clearing waits for calls in flight. -VMM_EBUSY if another is set. */
int vmm__irqchip_ack_hook(vmm_vm *vm, uint32_t gsi, vmm__irq_ack_fn fn,
                          void *opaque);

/* Device registration (realize/destroy). attach returns -VMM_ENOTSUP on a
   VM without the user-space platform, -VMM_EEXIST if one is there. */
int vmm__irqchip_attach_pic(vmm_vm *vm, struct vmm__pic *pic);
int vmm__irqchip_attach_ioapic(vmm_vm *vm, struct vmm__ioapic *io);
int vmm__irqchip_attach_lapic(vmm_vm *vm, struct vmm__lapics *l);
/* detach clears the registration if it is dev's (destroy after a failed
   attach must not clear another device's). */
void vmm__irqchip_detach_pic(vmm_vm *vm, struct vmm__pic *pic);
void vmm__irqchip_detach_ioapic(vmm_vm *vm, struct vmm__ioapic *io);
void vmm__irqchip_detach_lapic(vmm_vm *vm, struct vmm__lapics *l);

/* Under the lock: vCPU i gets an NMI, INIT, or SIPI with vector (dropped
   when the vCPU does not exist; a SIPI also unless it waits for one). */
void vmm__irqchip_nmi(struct vmm__irqchip *h, unsigned i);
void vmm__irqchip_init(struct vmm__irqchip *h, unsigned i);
void vmm__irqchip_sipi(struct vmm__irqchip *h, unsigned i, uint8_t vector);

/* Under the lock: the PIC's INTR output changed (LINT0 edges, ExtINT). */
void vmm__irqchip_pic_changed(struct vmm__irqchip *h);
/* Under the lock: send a message to the local APICs (dropped when there
   are none). */
void vmm__irqchip_deliver(struct vmm__irqchip *h, const struct vmm__irq_msg *m);
/* Under the lock: acknowledge an ExtINT at the PIC (vector, or -1). */
int vmm__irqchip_pic_inta(struct vmm__irqchip *h);

/* Front-end entry points, see lib/internal.h for the engine contract. */
void vmm__irqchip_line(vmm_vm *vm, uint32_t gsi, bool level);
int vmm__irqchip_ack(vmm_vcpu *vcpu);
void vmm__irqchip_vcpu_added(vmm_vcpu *vcpu);
/* MSRs of the platform: 0 handled, VMM_IO_DECLINED not ours, -VMM_EINVAL
   for an access the guest must see fault (#GP). vCPU thread. */
int vmm__irqchip_msr(vmm_vcpu *vcpu, uint32_t index, uint64_t *value,
                     bool write);
void vmm__irqchip_set_tpr(vmm_vcpu *vcpu, uint8_t tpr);

/* ---- Device model entry points used by the hub (all under the lock) ---- */

/* i8259.c */
bool vmm__pic_output(const struct vmm__pic *p);
void vmm__pic_set_irq(struct vmm__pic *p, unsigned irq, bool level);
/* INTA cycle: the vector, and *irq the IRQ acknowledged (-1: spurious). */
int vmm__pic_inta(struct vmm__pic *p, int *irq);

/* ioapic.c */
void vmm__ioapic_set_irq(struct vmm__ioapic *io, unsigned pin, bool level);
void vmm__ioapic_eoi(struct vmm__ioapic *io, uint8_t vector);
/* Mark as acked the lines of edge-triggered pins that send vector. */
void vmm__ioapic_vector_acked(struct vmm__ioapic *io, uint8_t vector);
void vmm__ioapic_info(const struct vmm__ioapic *io, uint64_t *base,
                      uint8_t *id);

/* lapic.c */
/* Highest vector the LAPIC would deliver to its CPU now, or -1. */
int vmm__lapic_pending(struct vmm__lapics *l, unsigned i);
/* INTA: move the highest deliverable vector from IRR to ISR; -1 if none. */
int vmm__lapic_ack(struct vmm__lapics *l, unsigned i);
/* Whether LINT0 of LAPIC i passes the PIC's INTR as ExtINT, or an IOAPIC
   ExtINT message is waiting there. */
bool vmm__lapic_extint(struct vmm__lapics *l, unsigned i);
void vmm__lapic_extint_done(struct vmm__lapics *l, unsigned i);
void vmm__lapic_deliver(struct vmm__lapics *l, const struct vmm__irq_msg *m);
/* The PIC's INTR output changed: LINT0 edges in Fixed or NMI mode. */
void vmm__lapic_lint0(struct vmm__lapics *l, bool level);
uint8_t vmm__lapic_tpr(struct vmm__lapics *l, unsigned i);
void vmm__lapic_set_tpr(struct vmm__lapics *l, unsigned i, uint8_t tpr);
/* The LAPIC's MSRs (TSC-deadline). guest_tsc: the vCPU's TSC now, read
   by the caller before taking the lock (valid for writes of 0x6e0). */
int vmm__lapic_msr(struct vmm__lapics *l, unsigned i, uint32_t index,
                   uint64_t *value, bool write, uint64_t guest_tsc);
uint64_t vmm__lapic_base(const struct vmm__lapics *l);
/* INIT received by CPU i: its LAPIC returns to the INIT state. */
void vmm__lapic_init_reset(struct vmm__lapics *l, unsigned i);

#endif
