/*
 * vCPU front end: argument and state checks, the run loop with I/O
 * dispatch, kicks and interrupt injection. Engines see only valid input.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "engine.h"

#define CPUID_HYPERVISOR (1u << 31)
#define CPUID_1_ECX_X2APIC (1u << 21)
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_EDX_APIC (1u << 9)
#define RFLAGS_IF (1u << 9)

/* The vCPU this thread is running, if any: lets a thread raising an
   interrupt for its own vCPU skip the kick (it checks before entering). */
static _Thread_local vmm_vcpu *current_vcpu
    __attribute__((tls_model("initial-exec")));

bool vmm__vcpu_state_accessible(vmm_vcpu *vcpu) {
  pthread_mutex_lock(&vcpu->lock);
  bool ok = !vcpu->running || pthread_equal(vcpu->thread, pthread_self());
  pthread_mutex_unlock(&vcpu->lock);
  return ok;
}

const struct vmm_cpuid_entry *vmm__cpuid_find(const struct vmm_cpuid_entry *e,
                                              size_t n, uint32_t fn,
                                              uint32_t index) {
  for (size_t i = 0; i < n; i++)
    if (e[i].function == fn &&
        (!(e[i].flags & VMM_CPUID_INDEXED) || e[i].index == index))
      return &e[i];
  return NULL;
}

/* Per-vCPU adjustments of the engine's supported CPUID. */
static void cpuid_personalize(vmm_vcpu *vcpu) {
  for (size_t i = 0; i < vcpu->ncpuid; i++) {
    struct vmm_cpuid_entry *e = &vcpu->cpuid[i];
    switch (e->function) {
    case 1:
      e->ebx = (e->ebx & 0x00ffffffu) | (vcpu->index << 24);
      e->ecx |= CPUID_HYPERVISOR;
      if (vcpu->vm->irqchip_kind == VMM__IRQCHIP_USER) {
        /* What the user-space local APIC offers: xAPIC, and the
           TSC-deadline timer where the engine routes its MSR to it. */
        e->edx |= CPUID_1_EDX_APIC;
        e->ecx &= ~CPUID_1_ECX_X2APIC;
        if (vcpu->vm->tsc_khz != 0)
          e->ecx |= CPUID_1_ECX_TSC_DEADLINE;
        else
          e->ecx &= ~CPUID_1_ECX_TSC_DEADLINE;
      }
      break;
    case 0xb:
    case 0x1f:
      e->edx = vcpu->index;
      break;
    default:
      break;
    }
  }
}

int vmm_vcpu_create(vmm_vm *vm, unsigned index, vmm_vcpu **out) {
  if (vm == NULL || out == NULL || index >= vm->cfg.max_vcpus)
    return VMM_EINVAL;

  vmm_vcpu *vcpu = calloc(1, sizeof(*vcpu));
  if (vcpu == NULL)
    return VMM_ENOMEM;
  vcpu->vm = vm;
  vcpu->index = index;
  atomic_init(&vcpu->stop_requested, false);
  atomic_init(&vcpu->pending_irq, 0);
  atomic_init(&vcpu->pending_nmi, false);
  atomic_init(&vcpu->irq_bits, 0);
  atomic_init(&vcpu->tpr, 0);
  /* As after a reset: the bootstrap processor runs, the others wait for
     INIT/SIPI (only the user-space platform can send those). */
  vcpu->mp_state = vm->irqchip_kind == VMM__IRQCHIP_USER && index != 0
                       ? VMM_MP_WAIT_SIPI
                       : VMM_MP_RUNNABLE;
  int err = -pthread_mutex_init(&vcpu->lock, NULL);
  if (err < 0) {
    free(vcpu);
    return err;
  }
  if ((err = -pthread_mutex_init(&vcpu->wait_lock, NULL)) < 0) {
    pthread_mutex_destroy(&vcpu->lock);
    free(vcpu);
    return err;
  }
  if ((err = -pthread_cond_init(&vcpu->wait_cond, NULL)) < 0) {
    pthread_mutex_destroy(&vcpu->wait_lock);
    pthread_mutex_destroy(&vcpu->lock);
    free(vcpu);
    return err;
  }

  pthread_mutex_lock(&vm->lock);
  if (vm->vcpus[index] != NULL) {
    err = VMM_EEXIST;
    goto fail;
  }
  vcpu->ncpuid = VMM__ARRAY_SIZE(vcpu->cpuid);
  err = vm->ops->supported_cpuid(vm, vcpu->cpuid, &vcpu->ncpuid);
  if (err < 0)
    goto fail;
  cpuid_personalize(vcpu);
  if ((err = vm->ops->vcpu_init(vcpu)) < 0)
    goto fail;
  if ((err = vm->ops->set_cpuid(vcpu, vcpu->cpuid, vcpu->ncpuid)) < 0) {
    vm->ops->vcpu_fini(vcpu);
    goto fail;
  }
  vm->vcpus[index] = vcpu;
  pthread_mutex_unlock(&vm->lock);
  /* Outside vm->lock: the platform's lock ranks below it elsewhere. */
  if (vm->irqchip != NULL)
    vmm__irqchip_vcpu_added(vcpu);
  *out = vcpu;
  return 0;

fail:
  pthread_mutex_unlock(&vm->lock);
  pthread_cond_destroy(&vcpu->wait_cond);
  pthread_mutex_destroy(&vcpu->wait_lock);
  pthread_mutex_destroy(&vcpu->lock);
  free(vcpu);
  return err;
}

void vmm__vcpu_free(vmm_vcpu *vcpu) {
  if (vcpu == NULL)
    return;
  vcpu->vm->ops->vcpu_fini(vcpu);
  pthread_cond_destroy(&vcpu->wait_cond);
  pthread_mutex_destroy(&vcpu->wait_lock);
  pthread_mutex_destroy(&vcpu->lock);
  free(vcpu);
}

vmm_vcpu *vmm_vm_vcpu(vmm_vm *vm, unsigned index) {
  if (vm == NULL || index >= vm->cfg.max_vcpus)
    return NULL;
  pthread_mutex_lock(&vm->lock);
  vmm_vcpu *v = vm->vcpus[index];
  pthread_mutex_unlock(&vm->lock);
  return v;
}

vmm_vm *vmm_vcpu_vm(vmm_vcpu *vcpu) { return vcpu ? vcpu->vm : NULL; }
unsigned vmm_vcpu_index(const vmm_vcpu *vcpu) { return vcpu ? vcpu->index : 0; }

/* Common prologue of the state accessors. */
#define STATE_CHECK(vcpu, arg)                                                 \
  do {                                                                         \
    if ((vcpu) == NULL || (arg) == NULL)                                       \
      return VMM_EINVAL;                                                       \
    if (!vmm__vcpu_state_accessible(vcpu))                                     \
      return VMM_EBUSY;                                                        \
  } while (0)

int vmm_vcpu_get_regs(vmm_vcpu *vcpu, struct vmm_regs *regs) {
  STATE_CHECK(vcpu, regs);
  return vcpu->vm->ops->get_regs(vcpu, regs);
}

int vmm_vcpu_set_regs(vmm_vcpu *vcpu, const struct vmm_regs *regs) {
  STATE_CHECK(vcpu, regs);
  int err = vmm__check_regs(regs);
  if (err < 0)
    return err;
  struct vmm_regs r = *regs;
  r.rflags |= 2; /* bit 1 is always one */
  return vcpu->vm->ops->set_regs(vcpu, &r);
}

int vmm_vcpu_get_sregs(vmm_vcpu *vcpu, struct vmm_sregs *sregs) {
  STATE_CHECK(vcpu, sregs);
  int err = vcpu->vm->ops->get_sregs(vcpu, sregs);
  /* With the user-space platform CR8 is the local APIC's TPR. */
  if (err == 0 && vcpu->vm->irqchip != NULL)
    sregs->cr8 = vmm__vcpu_tpr(vcpu);
  return err;
}

int vmm_vcpu_set_sregs(vmm_vcpu *vcpu, const struct vmm_sregs *sregs) {
  STATE_CHECK(vcpu, sregs);
  int err = vmm__check_sregs(sregs, vcpu->cpuid, vcpu->ncpuid);
  if (err < 0)
    return err;
  if ((err = vcpu->vm->ops->set_sregs(vcpu, sregs)) == 0 &&
      vcpu->vm->irqchip != NULL)
    vmm__vcpu_set_tpr(vcpu, sregs->cr8);
  return err;
}

int vmm_vcpu_get_fpu(vmm_vcpu *vcpu, struct vmm_fpu *fpu) {
  STATE_CHECK(vcpu, fpu);
  return vcpu->vm->ops->get_fpu(vcpu, fpu);
}

int vmm_vcpu_set_fpu(vmm_vcpu *vcpu, const struct vmm_fpu *fpu) {
  STATE_CHECK(vcpu, fpu);
  /* MXCSR bits 16..31 are reserved and fault on FXRSTOR. */
  if (fpu->mxcsr & 0xffff0000u)
    return VMM_EINVAL;
  return vcpu->vm->ops->set_fpu(vcpu, fpu);
}

int vmm_vcpu_get_xsave(vmm_vcpu *vcpu, void *buf, size_t size) {
  STATE_CHECK(vcpu, buf);
  if (size < VMM_XSAVE_SIZE)
    return VMM_EINVAL;
  return vcpu->vm->ops->get_xsave(vcpu, buf);
}

int vmm_vcpu_set_xsave(vmm_vcpu *vcpu, const void *buf, size_t size) {
  STATE_CHECK(vcpu, buf);
  if (size < VMM_XSAVE_SIZE)
    return VMM_EINVAL;
  uint32_t mxcsr;
  memcpy(&mxcsr, (const uint8_t *)buf + 24, sizeof(mxcsr));
  if (mxcsr & 0xffff0000u)
    return VMM_EINVAL;
  return vcpu->vm->ops->set_xsave(vcpu, buf);
}

int vmm_vcpu_get_xcr0(vmm_vcpu *vcpu, uint64_t *xcr0) {
  STATE_CHECK(vcpu, xcr0);
  return vcpu->vm->ops->get_xcr0(vcpu, xcr0);
}

int vmm_vcpu_set_xcr0(vmm_vcpu *vcpu, uint64_t xcr0) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  int err = vmm__check_xcr0(xcr0);
  if (err < 0)
    return err;
  /* Only features the vCPU's CPUID advertises (leaf 0xd, eax/edx). */
  const struct vmm_cpuid_entry *d =
      vmm__cpuid_find(vcpu->cpuid, vcpu->ncpuid, 0xd, 0);
  uint64_t allowed = d ? ((uint64_t)d->edx << 32 | d->eax) : 3;
  if (xcr0 & ~allowed)
    return VMM_EINVAL;
  return vcpu->vm->ops->set_xcr0(vcpu, xcr0);
}

int vmm_vcpu_get_msrs(vmm_vcpu *vcpu, struct vmm_msr *msrs, size_t n) {
  STATE_CHECK(vcpu, msrs);
  if (n == 0 || n > 256)
    return VMM_EINVAL;
  return vcpu->vm->ops->get_msrs(vcpu, msrs, n);
}

int vmm_vcpu_set_msrs(vmm_vcpu *vcpu, const struct vmm_msr *msrs, size_t n) {
  STATE_CHECK(vcpu, msrs);
  if (n == 0 || n > 256)
    return VMM_EINVAL;
  return vcpu->vm->ops->set_msrs(vcpu, msrs, n);
}

int vmm_vcpu_get_cpuid(vmm_vcpu *vcpu, struct vmm_cpuid_entry *entries,
                       size_t *n) {
  if (vcpu == NULL || n == NULL || (entries == NULL && *n != 0))
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  size_t copy = vcpu->ncpuid < *n ? vcpu->ncpuid : *n;
  if (copy > 0)
    memcpy(entries, vcpu->cpuid, copy * sizeof(entries[0]));
  int err = vcpu->ncpuid > *n ? VMM_E2BIG : 0;
  *n = vcpu->ncpuid;
  return err;
}

int vmm_vcpu_set_cpuid(vmm_vcpu *vcpu, const struct vmm_cpuid_entry *entries,
                       size_t n) {
  if (vcpu == NULL || entries == NULL || n == 0 || n > VMM_CPUID_MAX_ENTRIES)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  for (size_t i = 0; i < n; i++) {
    if (entries[i].flags & ~VMM_CPUID_INDEXED)
      return VMM_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (entries[j].function == entries[i].function &&
          (!(entries[i].flags & VMM_CPUID_INDEXED) ||
           entries[j].index == entries[i].index))
        return VMM_EINVAL; /* duplicate leaf */
  }
  if (vcpu->has_run && vcpu->vm->ops->kind == VMM_ENGINE_KVM)
    return VMM_ESTATE;
  int err = vcpu->vm->ops->set_cpuid(vcpu, entries, n);
  if (err < 0)
    return err;
  memcpy(vcpu->cpuid, entries, n * sizeof(entries[0]));
  vcpu->ncpuid = n;
  return 0;
}

/* Register indices into struct vmm_regs, which is an array of uint64_t. */
int vmm_vcpu_reg_read(vmm_vcpu *vcpu, enum vmm_reg reg, uint64_t *value) {
  STATE_CHECK(vcpu, value);
  if ((unsigned)reg >= VMM_REG__COUNT)
    return VMM_EINVAL;
  int err;
  if (reg <= VMM_REG_RFLAGS) {
    struct vmm_regs r;
    if ((err = vcpu->vm->ops->get_regs(vcpu, &r)) < 0)
      return err;
    *value = ((const uint64_t *)&r)[reg];
    return 0;
  }
  struct vmm_sregs s;
  if ((err = vcpu->vm->ops->get_sregs(vcpu, &s)) < 0)
    return err;
  switch (reg) {
  case VMM_REG_CR0: *value = s.cr0; break;
  case VMM_REG_CR2: *value = s.cr2; break;
  case VMM_REG_CR3: *value = s.cr3; break;
  case VMM_REG_CR4: *value = s.cr4; break;
  case VMM_REG_CR8: *value = s.cr8; break;
  case VMM_REG_EFER: *value = s.efer; break;
  default: return VMM_EINVAL;
  }
  return 0;
}

int vmm_vcpu_reg_write(vmm_vcpu *vcpu, enum vmm_reg reg, uint64_t value) {
  if (vcpu == NULL || (unsigned)reg >= VMM_REG__COUNT)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  int err;
  if (reg <= VMM_REG_RFLAGS) {
    struct vmm_regs r;
    if ((err = vcpu->vm->ops->get_regs(vcpu, &r)) < 0)
      return err;
    ((uint64_t *)&r)[reg] = value;
    return vmm_vcpu_set_regs(vcpu, &r);
  }
  struct vmm_sregs s;
  if ((err = vcpu->vm->ops->get_sregs(vcpu, &s)) < 0)
    return err;
  switch (reg) {
  case VMM_REG_CR0: s.cr0 = value; break;
  case VMM_REG_CR2: s.cr2 = value; break;
  case VMM_REG_CR3: s.cr3 = value; break;
  case VMM_REG_CR4: s.cr4 = value; break;
  case VMM_REG_CR8: s.cr8 = value; break;
  case VMM_REG_EFER: s.efer = value; break;
  default: return VMM_EINVAL;
  }
  return vmm_vcpu_set_sregs(vcpu, &s);
}

int vmm_vcpu_set_debug(vmm_vcpu *vcpu, const struct vmm_debug *dbg) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  if (dbg != NULL) {
    if (dbg->flags & ~(uint32_t)(VMM_DEBUG_SINGLESTEP |
                                 VMM_DEBUG_SW_BREAKPOINTS |
                                 VMM_DEBUG_HW_BREAKPOINTS))
      return VMM_EINVAL;
    if (dbg->nr_breakpoints > 4)
      return VMM_EINVAL;
  }
  return vcpu->vm->ops->set_debug(vcpu, dbg);
}

int vmm_vcpu_set_exception_exits(vmm_vcpu *vcpu, uint32_t mask) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  return vcpu->vm->ops->set_exception_exits(vcpu, mask);
}

int vmm_vcpu_set_insn_limit(vmm_vcpu *vcpu, uint64_t n) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  if (vcpu->vm->ops->set_insn_limit == NULL)
    return VMM_ENOTSUP;
  return vcpu->vm->ops->set_insn_limit(vcpu, n);
}

int vmm_vcpu_insn_count(vmm_vcpu *vcpu, uint64_t *count) {
  STATE_CHECK(vcpu, count);
  if (vcpu->vm->ops->insn_count == NULL)
    return VMM_ENOTSUP;
  return vcpu->vm->ops->insn_count(vcpu, count);
}

/* ------------------------------------------------------------------------ */
/* Running                                                                  */

struct vmm_exit *vmm_vcpu_exit(vmm_vcpu *vcpu) {
  return vcpu ? &vcpu->exit : NULL;
}

/* Wake a vCPU sleeping in wait_runnable(). Returns whether it was. */
static bool wake(vmm_vcpu *vcpu) {
  pthread_mutex_lock(&vcpu->wait_lock);
  bool waiting = vcpu->waiting;
  pthread_cond_broadcast(&vcpu->wait_cond);
  pthread_mutex_unlock(&vcpu->wait_lock);
  return waiting;
}

void vmm__vcpu_notify(vmm_vcpu *vcpu) {
  /* A sleeping vCPU only needs the wake-up; the thread running a vCPU
     checks for interrupts before it next enters the guest. */
  if (!wake(vcpu) && current_vcpu != vcpu)
    vcpu->vm->ops->kick(vcpu);
}

int vmm_vcpu_kick(vmm_vcpu *vcpu) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  atomic_store(&vcpu->stop_requested, true);
  vcpu->vm->ops->kick(vcpu);
  wake(vcpu);
  return 0;
}

int vmm_vcpu_inject_irq(vmm_vcpu *vcpu, uint8_t vector) {
  if (vcpu == NULL || vector < 32)
    return VMM_EINVAL;
  if (vcpu->vm->irqchip_kind == VMM__IRQCHIP_ENGINE)
    return VMM_ENOTSUP;
  unsigned expected = 0;
  if (!atomic_compare_exchange_strong(&vcpu->pending_irq, &expected,
                                      0x100u | vector))
    return VMM_EBUSY;
  vmm__vcpu_notify(vcpu);
  return 0;
}

int vmm_vcpu_inject_nmi(vmm_vcpu *vcpu) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  atomic_store(&vcpu->pending_nmi, true);
  vmm__vcpu_notify(vcpu);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Interrupt acceptance (the engines' side is documented in internal.h)     */

int vmm__vcpu_irq_ack(vmm_vcpu *vcpu) {
  unsigned queued = atomic_exchange(&vcpu->pending_irq, 0);
  if (queued != 0)
    return (int)(queued & 0xff);
  if (vcpu->vm->irqchip != NULL)
    return vmm__irqchip_ack(vcpu);
  return -1;
}

int vmm__vcpu_msr(vmm_vcpu *vcpu, uint32_t index, uint64_t *value, bool write) {
  if (vcpu->vm->irqchip == NULL)
    return VMM_IO_DECLINED;
  return vmm__irqchip_msr(vcpu, index, value, write);
}

void vmm__vcpu_set_tpr(vmm_vcpu *vcpu, uint64_t cr8) {
  if (vcpu->vm->irqchip != NULL)
    vmm__irqchip_set_tpr(vcpu, (uint8_t)((cr8 & 0xf) << 4));
}

/* ------------------------------------------------------------------------ */
/* Run states: halt, INIT and SIPI (user-space platform)                   */

static struct vmm_segment real_seg(uint16_t sel, uint64_t base, uint8_t type) {
  return (struct vmm_segment){.base = base,
                              .limit = 0xffff,
                              .selector = sel,
                              .type = type,
                              .present = 1,
                              .s = 1};
}

/* INIT: the processor state of SDM vol. 3 table 10-1 (the parts an INIT
   resets; x87/SSE state and MSRs other than EFER are kept). */
static int do_init(vmm_vcpu *vcpu) {
  const struct vmm__engine_ops *ops = vcpu->vm->ops;
  struct vmm_sregs s;
  int err = ops->get_sregs(vcpu, &s);
  if (err < 0)
    return err;
  uint64_t apic_base = s.apic_base;
  memset(&s, 0, sizeof(s));
  s.cs = real_seg(0xf000, 0xffff0000ull, 0xb);
  s.ds = s.es = s.fs = s.gs = s.ss = real_seg(0, 0, 0x3);
  s.tr = real_seg(0, 0, 0xb);
  s.tr.s = 0;
  s.ldt = real_seg(0, 0, 0x2);
  s.ldt.s = 0;
  s.gdt.limit = 0xffff;
  s.idt.limit = 0xffff;
  s.cr0 = 0x60000010ull;
  s.apic_base = apic_base;
  struct vmm_regs r;
  memset(&r, 0, sizeof(r));
  r.rip = 0xfff0;
  r.rflags = 0x2;
  if ((err = ops->set_sregs(vcpu, &s)) < 0 ||
      (err = ops->set_regs(vcpu, &r)) < 0) {
    vmm__log(vcpu->vm, VMM_LOG_ERROR,
             "vcpu %u: cannot enter the INIT state: %s", vcpu->index,
             vmm_strerror(err));
    return err;
  }
  return 0;
}

/* SIPI: real mode at vector << 12 (CS = vector << 8, IP = 0). */
static int do_sipi(vmm_vcpu *vcpu, uint8_t vector) {
  const struct vmm__engine_ops *ops = vcpu->vm->ops;
  struct vmm_sregs s;
  struct vmm_regs r;
  int err = ops->get_sregs(vcpu, &s);
  if (err == 0) {
    s.cs = real_seg((uint16_t)(vector << 8), (uint64_t)vector << 12, 0xb);
    err = ops->set_sregs(vcpu, &s);
  }
  if (err == 0 && (err = ops->get_regs(vcpu, &r)) == 0) {
    r.rip = 0;
    err = ops->set_regs(vcpu, &r);
  }
  if (err < 0)
    vmm__log(vcpu->vm, VMM_LOG_ERROR,
             "vcpu %u: cannot start at SIPI 0x%02x: %s", vcpu->index, vector,
             vmm_strerror(err));
  return err;
}

/*
 * Sleep until the vCPU can run guest code: it is halted and an interrupt
 * it can take (or an NMI) is pending, or it waits for a SIPI and one came.
 * INIT and SIPI are processed here. Returns early (still not RUNNABLE)
 * for a stop request or a system event, which the caller reports.
 */
static int wait_runnable(vmm_vcpu *vcpu) {
  vmm_vm *vm = vcpu->vm;
  int err = 0;
  pthread_mutex_lock(&vcpu->wait_lock);
  for (;;) {
    unsigned bits = atomic_load(&vcpu->irq_bits);
    if (bits & VMM__IRQ_INIT) {
      atomic_fetch_and(&vcpu->irq_bits, ~VMM__IRQ_INIT);
      pthread_mutex_unlock(&vcpu->wait_lock);
      err = do_init(vcpu);
      pthread_mutex_lock(&vcpu->wait_lock);
      if (err < 0)
        break;
      /* The BSP restarts at the reset vector, APs wait for a SIPI. */
      vcpu->mp_state = vcpu->index == 0 ? VMM_MP_RUNNABLE : VMM_MP_WAIT_SIPI;
      continue;
    }
    if (bits & VMM__IRQ_SIPI) {
      atomic_fetch_and(&vcpu->irq_bits, ~VMM__IRQ_SIPI);
      if (vcpu->mp_state != VMM_MP_WAIT_SIPI)
        continue; /* ignored unless waiting for it */
      uint8_t vector = vcpu->sipi_vector;
      pthread_mutex_unlock(&vcpu->wait_lock);
      err = do_sipi(vcpu, vector);
      pthread_mutex_lock(&vcpu->wait_lock);
      if (err < 0)
        break;
      vcpu->mp_state = VMM_MP_RUNNABLE;
      continue;
    }
    if (vcpu->mp_state == VMM_MP_HALTED &&
        (vmm__vcpu_nmi_pending(vcpu) ||
         (vcpu->halt_if && vmm__vcpu_irq_pending(vcpu))))
      vcpu->mp_state = VMM_MP_RUNNABLE;
    if (vcpu->mp_state == VMM_MP_RUNNABLE ||
        atomic_load(&vcpu->stop_requested) || atomic_load(&vm->system_event))
      break;
    vcpu->waiting = true;
    pthread_cond_wait(&vcpu->wait_cond, &vcpu->wait_lock);
    vcpu->waiting = false;
  }
  pthread_mutex_unlock(&vcpu->wait_lock);
  return err;
}

/* The engine reported HLT: the vCPU waits, taking what wakes it then. */
static int halted(vmm_vcpu *vcpu) {
  struct vmm_regs r;
  int err = vcpu->vm->ops->get_regs(vcpu, &r);
  if (err < 0)
    return err;
  pthread_mutex_lock(&vcpu->wait_lock);
  vcpu->halt_if = (r.rflags & RFLAGS_IF) != 0;
  vcpu->mp_state = VMM_MP_HALTED;
  pthread_mutex_unlock(&vcpu->wait_lock);
  return 0;
}

int vmm_vcpu_get_mp_state(vmm_vcpu *vcpu, enum vmm_mp_state *state) {
  STATE_CHECK(vcpu, state);
  if (vcpu->vm->irqchip_kind != VMM__IRQCHIP_USER)
    return VMM_ENOTSUP;
  pthread_mutex_lock(&vcpu->wait_lock);
  *state = vcpu->mp_state;
  pthread_mutex_unlock(&vcpu->wait_lock);
  return 0;
}

int vmm_vcpu_set_mp_state(vmm_vcpu *vcpu, enum vmm_mp_state state) {
  if (vcpu == NULL || (state != VMM_MP_RUNNABLE && state != VMM_MP_HALTED &&
                       state != VMM_MP_WAIT_SIPI))
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;
  if (vcpu->vm->irqchip_kind != VMM__IRQCHIP_USER)
    return VMM_ENOTSUP;
  if (state == VMM_MP_HALTED)
    return halted(vcpu);
  pthread_mutex_lock(&vcpu->wait_lock);
  vcpu->mp_state = state;
  pthread_mutex_unlock(&vcpu->wait_lock);
  return 0;
}

static int enter(vmm_vcpu *vcpu) {
  pthread_mutex_lock(&vcpu->lock);
  if (vcpu->running) {
    pthread_mutex_unlock(&vcpu->lock);
    return VMM_EBUSY;
  }
  vcpu->running = true;
  vcpu->thread = pthread_self();
  current_vcpu = vcpu;
  /* Under the slot table's read lock, so vmm_mem_slot_remove() (which
     checks the count under the write lock) either sees this vCPU running
     or finishes before it can use the slot. */
  pthread_rwlock_rdlock(&vcpu->vm->mem.lock);
  atomic_fetch_add(&vcpu->vm->running, 1);
  pthread_rwlock_unlock(&vcpu->vm->mem.lock);
  pthread_mutex_unlock(&vcpu->lock);
  return 0;
}

static void leave(vmm_vcpu *vcpu) {
  vmm_vm *vm = vcpu->vm;
  current_vcpu = NULL;
  pthread_mutex_lock(&vcpu->lock);
  vcpu->running = false;
  vcpu->has_run = true;
  if (vm->ops->vcpu_leave != NULL)
    vm->ops->vcpu_leave(vcpu);
  pthread_mutex_unlock(&vcpu->lock);
  /* Last: once the count drops, vmm_vm_destroy() may free the vCPU, so
     nothing of it may be touched after this. */
  atomic_fetch_sub(&vm->running, 1);
}

/*
 * Handler time of the port accesses an engine serves inside its run()
 * (stats.h): two TSC reads were a sixth of such an access to a fast
 * handler. A port whose last IO_STREAK timed accesses each took less than
 * IO_FAST cycles is timed on one access in IO_SAMPLE, chosen at random (a
 * periodic guest access pattern cannot alias with the choice), and each
 * sample counts IO_SAMPLE times; a timed access that takes longer counts
 * once and makes the port timed on every access again. The estimate is
 * unbiased for fast handlers and exact for slow ones; it can miss a rare
 * slow access to a port that is otherwise fast.
 */
#define IO_SAMPLE 16
#define IO_FAST 4096 /* cycles: about 1.5 us at 2.6 GHz */
#define IO_STREAK 64

/*
 * Serve a port access from inside the engine's run() (internal.h).
 * Returns 0 if a handler consumed it, VMM_IO_DECLINED if it must go on,
 * or a handler's error.
 */
int vmm__vcpu_pio_inline(vmm_vcpu *vcpu, uint16_t port, void *data,
                         uint32_t size, bool is_write) {
  struct vmm__vcpu_stats *st = &vcpu->stats;
  struct vmm__io_time *h = &vcpu->io_time[port % 16];
  if (h->port != port) {
    h->port = port;
    h->fast = 0;
  }
  bool sampled = h->fast >= IO_STREAK, timed = true;
  if (sampled) {
    uint32_t x = vcpu->io_rng ? vcpu->io_rng : 0x9e3779b9u; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    vcpu->io_rng = x;
    timed = x % IO_SAMPLE == 0;
  }
  uint64_t t = timed ? vmm__tsc() : 0;
  if (!is_write) {
    /* Constant sizes: no call to memset. */
    switch (size) {
    case 1: memset(data, 0, 1); break;
    case 2: memset(data, 0, 2); break;
    case 4: memset(data, 0, 4); break;
    default: memset(data, 0, size); break;
    }
  }
  int rc = vmm__iobus_dispatch(&vcpu->vm->pio, vcpu, port, data, size,
                               is_write);
  if (timed) {
    uint64_t dt = vmm__tsc_delta(t, vmm__tsc());
    bool fast = dt < IO_FAST;
    h->fast = fast ? (uint16_t)(h->fast + (h->fast < IO_STREAK)) : 0;
    /* Added to io_cycles when run() returns (vmm_vcpu_run). */
    vcpu->inline_io_cycles += sampled && fast ? dt * IO_SAMPLE : dt;
  }
  if (rc != 0) {
    /* The exit the engine makes now is counted by the run loop. */
    vcpu->inline_io_declined = true;
    vcpu->inline_io_rc = rc;
    return rc;
  }
  vmm__stat_add(&st->exits[VMM_EXIT_IO], 1);
  vmm__stat_add(&st->io_handled, 1);
  return 0;
}

static int dispatch_io(vmm_vcpu *vcpu, struct vmm_exit *e) {
  vmm_vm *vm = vcpu->vm;
  if (e->reason == VMM_EXIT_IO && vcpu->inline_io_declined) {
    /* The engine called the handler already (vmm__vcpu_pio_inline). */
    vcpu->inline_io_declined = false;
    return vcpu->inline_io_rc;
  }
  if (e->reason == VMM_EXIT_IO) {
    bool write = e->io.is_write;
    for (uint32_t i = 0; i < e->io.count; i++) {
      uint8_t *d = e->io.data + (size_t)i * e->io.size;
      if (!write)
        memset(d, 0, e->io.size);
      int rc = vmm__iobus_dispatch(&vm->pio, vcpu, e->io.port, d, e->io.size,
                                   write);
      if (rc < 0)
        return rc;
      if (rc != 0) {
        /* Declined midway through a string access: hand on only the
           elements not yet served, so none is processed twice. */
        e->io.data = d;
        e->io.count -= i;
        return rc;
      }
    }
    return 0;
  }
  if (!e->mmio.is_write)
    memset(e->mmio.data, 0, sizeof(e->mmio.data));
  return vmm__iobus_dispatch(&vm->mmio, vcpu, e->mmio.gpa, e->mmio.data,
                             e->mmio.size, e->mmio.is_write);
}

int vmm_vcpu_run(vmm_vcpu *vcpu, struct vmm_exit **exit_out) {
  if (vcpu == NULL)
    return VMM_EINVAL;
  int err = enter(vcpu);
  if (err < 0)
    return err;

  vmm_vm *vm = vcpu->vm;
  struct vmm_exit *e = &vcpu->exit;
  /* Statistics (stats.h): two TSC reads per exit, single-writer stores. */
  struct vmm__vcpu_stats *st = &vcpu->stats;
  uint64_t t_run = vmm__tsc();
  vmm__stat_add(&st->runs, 1);
  bool user_irqchip = vm->irqchip_kind == VMM__IRQCHIP_USER;
  /* An I/O or MMIO exit was served and the engine has yet to finish the
     instruction: done on the next entry, or by sync() before returning. */
  bool half_done = false;
  for (;;) {
    if (atomic_load_explicit(&vcpu->stop_requested, memory_order_relaxed) ||
        atomic_load_explicit(&vm->system_event, memory_order_relaxed)) {
      if (half_done && vm->ops->sync != NULL && (err = vm->ops->sync(vcpu)) < 0)
        break;
      uint_fast64_t ev = atomic_load(&vm->system_event);
      if (ev != 0) {
        /* A system event outranks a plain stop; the kick it sent is
           consumed with it. */
        atomic_store(&vcpu->stop_requested, false);
        e->reason = VMM_EXIT_SYSTEM;
        e->system.event = (uint32_t)(ev >> 32);
        e->system.status = (int32_t)(uint32_t)ev;
        vmm__stat_add(&st->exits[VMM_EXIT_SYSTEM], 1);
        break;
      }
      if (atomic_exchange(&vcpu->stop_requested, false)) {
        e->reason = VMM_EXIT_STOPPED;
        vmm__stat_add(&st->exits[VMM_EXIT_STOPPED], 1);
        break;
      }
    }
    if (user_irqchip &&
        VMM__UNLIKELY(
            vcpu->mp_state != VMM_MP_RUNNABLE ||
            (atomic_load_explicit(&vcpu->irq_bits, memory_order_relaxed) &
             (VMM__IRQ_INIT | VMM__IRQ_SIPI)))) {
      if (half_done && vm->ops->sync != NULL && (err = vm->ops->sync(vcpu)) < 0)
        break;
      half_done = false;
      if ((err = wait_runnable(vcpu)) < 0)
        break;
      if (vcpu->mp_state != VMM_MP_RUNNABLE)
        continue; /* a stop or system event woke it */
    }
    uint64_t t0 = vmm__tsc(); /* after any wait: guest time only */
    vcpu->inline_io_cycles = 0;
    vcpu->inline_io_declined = false;
    err = vm->ops->run(vcpu);
    uint64_t t1 = vmm__tsc();
    uint64_t g = vmm__tsc_delta(t0, t1);
    /* The engine's inline port accesses: their handlers' time (partly
       estimated, see IO_SAMPLE) is I/O time, bounded by the whole. */
    uint64_t io = vcpu->inline_io_cycles < g ? vcpu->inline_io_cycles : g;
    vmm__stat_add(&st->guest_cycles, g - io);
    vmm__stat_add(&st->io_cycles, io);
    if (err < 0)
      break;
    unsigned why = (unsigned)e->reason;
    vmm__stat_add(&st->exits[why < VMM_STATS_REASONS ? why : 0], 1);
    if (e->reason == VMM_EXIT_NONE) {
      half_done = false;
      continue;
    }
    half_done = false;
    if (e->reason == VMM_EXIT_STOPPED || e->reason == VMM_EXIT_SYSTEM)
      break;
    if (e->reason == VMM_EXIT_HLT && user_irqchip) {
      if ((err = halted(vcpu)) < 0)
        break;
      continue;
    }
    if (e->reason == VMM_EXIT_IO || e->reason == VMM_EXIT_MMIO) {
      int rc = dispatch_io(vcpu, e);
      vmm__stat_add(&st->io_cycles, vmm__tsc_delta(t1, vmm__tsc()));
      if (rc == 0) {
        vmm__stat_add(
            e->reason == VMM_EXIT_IO ? &st->io_handled : &st->mmio_handled, 1);
        half_done = true;
        continue;
      }
      if (rc < 0) {
        err = rc;
        break;
      }
    }
    /* The handler pointer is read without the lock: a pointer-sized load
       is atomic on every target, and a stale value is harmless. */
    vmm_exit_handler_fn fn = __atomic_load_n(&vm->exit_fn, __ATOMIC_ACQUIRE);
    if (fn == NULL)
      break;
    uint64_t t2 = vmm__tsc();
    enum vmm_exit_action action = fn(vcpu, e, vm->exit_opaque);
    vmm__stat_add(&st->exit_cycles, vmm__tsc_delta(t2, vmm__tsc()));
    if (action != VMM_EXIT_ACTION_RESUME)
      break;
    half_done = e->reason == VMM_EXIT_IO || e->reason == VMM_EXIT_MMIO;
  }
  /* Before leave(): once it returns the vCPU may be freed. */
  vmm__stat_add(&st->run_cycles, vmm__tsc_delta(t_run, vmm__tsc()));
  leave(vcpu);
  if (exit_out != NULL)
    *exit_out = e;
  return err;
}
