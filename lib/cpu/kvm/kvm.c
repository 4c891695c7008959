/*
 * The KVM engine: raw /dev/kvm ioctls behind the engine interface.
 * See docs/engines.md for the kick protocol and capability checks.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../../internal.h"
#include "../x86.h"

/* Guest-physical pages KVM reserves for its own use on Intel hosts. */
#define KVM_IDENTITY_MAP_GPA 0xfffbc000ull
#define KVM_TSS_GPA 0xfffbd000ull

_Static_assert(sizeof(struct vmm_regs) == sizeof(struct kvm_regs),
               "vmm_regs mirrors kvm_regs");

struct kvm_vm_state {
  int dev_fd;
  int vm_fd;
  int run_size;
  int kick_sig; /* 0: no signal kicks */
  bool readonly_mem;
  bool msr_exits; /* the platform's MSRs come to user space */
  struct vmm_cpuid_entry supported[VMM_CPUID_MAX_ENTRIES];
  size_t nsupported;
};

struct kvm_vcpu_state {
  int fd;
  struct kvm_run *run;
  bool complete_mmio_read;
  /* The thread whose kick signal is blocked (kvm_kick reads it). */
  _Atomic bool mask_set;
  _Atomic pthread_t mask_thread;
  atomic_uint kicks_sent;
  unsigned kicks_drained;
  uint32_t exc_mask;
  struct vmm_debug dbg;
  bool dbg_on;
  uint64_t cr8_in; /* run->cr8 as given to the last KVM_RUN */
};

static struct kvm_vm_state *K(vmm_vm *vm) { return vm->engine; }
static struct kvm_vcpu_state *KV(vmm_vcpu *v) { return v->engine; }

static int xioctl(int fd, unsigned long req, void *arg) {
  int rc;
  do {
    rc = ioctl(fd, req, arg);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : rc;
}

static bool kvm_available(const struct vmm_vm_config *cfg) {
  int fd = open(cfg->kvm_device, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool ok = ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
  close(fd);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* VM                                                                       */

static int require_cap(vmm_vm *vm, int fd, long cap, const char *name) {
  int rc = ioctl(fd, KVM_CHECK_EXTENSION, cap);
  if (rc <= 0) {
    vmm__log(vm, VMM_LOG_ERROR, "kvm: required capability %s is missing",
             name);
    return VMM_ENOCAP;
  }
  return rc;
}

static int load_supported_cpuid(vmm_vm *vm) {
  struct kvm_vm_state *k = K(vm);
  size_t n = VMM_CPUID_MAX_ENTRIES;
  struct kvm_cpuid2 *c =
      calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
  if (c == NULL)
    return VMM_ENOMEM;
  c->nent = (uint32_t)n;
  int err = xioctl(k->dev_fd, KVM_GET_SUPPORTED_CPUID, c);
  if (err < 0) {
    vmm__log(vm, VMM_LOG_ERROR, "kvm: KVM_GET_SUPPORTED_CPUID: %s",
             vmm_strerror(err));
    free(c);
    return err;
  }
  k->nsupported = 0;
  for (uint32_t i = 0; i < c->nent && i < n; i++) {
    const struct kvm_cpuid_entry2 *s = &c->entries[i];
    k->supported[k->nsupported++] = (struct vmm_cpuid_entry){
        .function = s->function,
        .index = s->index,
        .flags = (s->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
                     ? VMM_CPUID_INDEXED
                     : 0,
        .eax = s->eax,
        .ebx = s->ebx,
        .ecx = s->ecx,
        .edx = s->edx,
    };
  }
  free(c);
  return 0;
}

/*
 * The user-space platform owns IA32_TSC_DEADLINE: without an in-kernel
 * local APIC KVM ignores it, so ask for an exit on every access through
 * an MSR filter. Without these capabilities the platform simply does not
 * offer the TSC-deadline timer (tsc_khz() reports 0).
 */
static void setup_msr_exits(vmm_vm *vm) {
  struct kvm_vm_state *k = K(vm);
  if (ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_USER_SPACE_MSR) <= 0 ||
      ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_MSR_FILTER) <= 0) {
    vmm__log(vm, VMM_LOG_INFO,
             "kvm: no user-space MSR exits: no TSC-deadline timer");
    return;
  }
  struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR,
                               .args = {KVM_MSR_EXIT_REASON_FILTER}};
  /* One MSR, its bit clear: filtered (denied in KVM, sent to us). */
  static const uint8_t deny[1] = {0};
  struct kvm_msr_filter f = {
      .flags = KVM_MSR_FILTER_DEFAULT_ALLOW,
      .ranges = {{.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
                  .nmsrs = 1,
                  .base = X86_MSR_TSC_DEADLINE,
                  .bitmap = (uint8_t *)deny}}};
  int err = xioctl(k->vm_fd, KVM_ENABLE_CAP, &cap);
  if (err == 0)
    err = xioctl(k->vm_fd, KVM_X86_SET_MSR_FILTER, &f);
  if (err < 0) {
    vmm__log(vm, VMM_LOG_INFO, "kvm: MSR filter: %s: no TSC-deadline timer",
             vmm_strerror(err));
    return;
  }
  k->msr_exits = true;
}

static int kvm_vm_init(vmm_vm *vm) {
  struct kvm_vm_state *k = calloc(1, sizeof(*k));
  if (k == NULL)
    return VMM_ENOMEM;
  k->vm_fd = -1;
  vm->engine = k;
  int err;

  k->dev_fd = open(vm->cfg.kvm_device, O_RDWR | O_CLOEXEC);
  if (k->dev_fd < 0) {
    err = errno == ENOENT ? VMM_ENODEV : -errno;
    vmm__log(vm, VMM_LOG_ERROR, "kvm: cannot open %s: %s", vm->cfg.kvm_device,
             vmm_strerror(-errno));
    goto fail;
  }
  if (ioctl(k->dev_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
    vmm__log(vm, VMM_LOG_ERROR, "kvm: unsupported API version");
    err = VMM_ENOCAP;
    goto fail;
  }
  static const struct {
    long cap;
    const char *name;
  } required[] = {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
      {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
      {KVM_CAP_XCRS, "KVM_CAP_XCRS"},
  };
  for (size_t i = 0; i < VMM__ARRAY_SIZE(required); i++)
    if ((err = require_cap(vm, k->dev_fd, required[i].cap,
                           required[i].name)) < 0)
      goto fail;
  bool in_kernel = vm->irqchip_kind == VMM__IRQCHIP_ENGINE;
  if (in_kernel)
    if ((err = require_cap(vm, k->dev_fd, KVM_CAP_IRQCHIP,
                           "KVM_CAP_IRQCHIP")) < 0)
      goto fail;
  if (in_kernel && (vm->cfg.flags & VMM_VM_PIT))
    if ((err = require_cap(vm, k->dev_fd, KVM_CAP_PIT2, "KVM_CAP_PIT2")) < 0)
      goto fail;
  int max = ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
  if (max > 0 && (unsigned)max < vm->cfg.max_vcpus) {
    vmm__log(vm, VMM_LOG_ERROR, "kvm: at most %d vCPUs supported", max);
    err = VMM_ENOCAP;
    goto fail;
  }
  int slots = ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
  if (slots > 0 && slots < VMM_MEM_MAX_SLOTS) {
    vmm__log(vm, VMM_LOG_ERROR, "kvm: only %d memory slots", slots);
    err = VMM_ENOCAP;
    goto fail;
  }
  k->readonly_mem = ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;

  k->vm_fd = ioctl(k->dev_fd, KVM_CREATE_VM, 0);
  if (k->vm_fd < 0) {
    err = -errno;
    vmm__log(vm, VMM_LOG_ERROR, "kvm: KVM_CREATE_VM: %s", vmm_strerror(err));
    goto fail;
  }
  if ((err = xioctl(k->vm_fd, KVM_SET_TSS_ADDR, (void *)KVM_TSS_GPA)) < 0)
    goto fail;
  if (ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
    uint64_t addr = KVM_IDENTITY_MAP_GPA;
    if ((err = xioctl(k->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &addr)) < 0)
      goto fail;
  }
  if (in_kernel) {
    if ((err = xioctl(k->vm_fd, KVM_CREATE_IRQCHIP, NULL)) < 0) {
      vmm__log(vm, VMM_LOG_ERROR, "kvm: KVM_CREATE_IRQCHIP: %s",
               vmm_strerror(err));
      goto fail;
    }
  }
  if (vm->irqchip_kind == VMM__IRQCHIP_USER)
    setup_msr_exits(vm);
  if (in_kernel && (vm->cfg.flags & VMM_VM_PIT)) {
    struct kvm_pit_config pit = {.flags = 0};
    if ((err = xioctl(k->vm_fd, KVM_CREATE_PIT2, &pit)) < 0) {
      vmm__log(vm, VMM_LOG_ERROR, "kvm: KVM_CREATE_PIT2: %s",
               vmm_strerror(err));
      goto fail;
    }
  }
  k->run_size = ioctl(k->dev_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (k->run_size < (int)sizeof(struct kvm_run)) {
    err = VMM_EENGINE;
    goto fail;
  }
  if ((err = load_supported_cpuid(vm)) < 0)
    goto fail;
  if (vm->cfg.kick_signal == VMM_KICK_SIGNAL_DEFAULT)
    k->kick_sig = SIGRTMIN;
  else if (vm->cfg.kick_signal == VMM_KICK_SIGNAL_NONE)
    k->kick_sig = 0;
  else
    k->kick_sig = vm->cfg.kick_signal;
  return 0;

fail:
  if (k->vm_fd >= 0)
    close(k->vm_fd);
  if (k->dev_fd >= 0)
    close(k->dev_fd);
  free(k);
  vm->engine = NULL;
  return err;
}

static void kvm_vm_fini(vmm_vm *vm) {
  struct kvm_vm_state *k = K(vm);
  if (k == NULL)
    return;
  close(k->vm_fd);
  close(k->dev_fd);
  free(k);
  vm->engine = NULL;
}

static int set_region(vmm_vm *vm, const struct vmm__slot *s, bool add) {
  struct kvm_userspace_memory_region r = {
      .slot = s->id,
      .guest_phys_addr = s->gpa,
      .memory_size = add ? s->size : 0,
      .userspace_addr = (uintptr_t)s->host,
  };
  if (add && (s->flags & VMM_MEM_DIRTY_LOG))
    r.flags |= KVM_MEM_LOG_DIRTY_PAGES;
  if (add && (s->flags & VMM_MEM_READONLY)) {
    if (!K(vm)->readonly_mem) {
      vmm__log(vm, VMM_LOG_ERROR, "kvm: KVM_CAP_READONLY_MEM is missing");
      return VMM_ENOCAP;
    }
    r.flags |= KVM_MEM_READONLY;
  }
  return xioctl(K(vm)->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);
}

static int kvm_slot_add(vmm_vm *vm, const struct vmm__slot *s) {
  int err = set_region(vm, s, true);
  if (err < 0)
    vmm__log(vm, VMM_LOG_ERROR, "kvm: adding slot at 0x%llx: %s",
             (unsigned long long)s->gpa, vmm_strerror(err));
  return err;
}

static void kvm_slot_remove(vmm_vm *vm, const struct vmm__slot *s) {
  set_region(vm, s, false);
}

static int kvm_dirty_log_fetch(vmm_vm *vm, const struct vmm__slot *s,
                               uint64_t *bitmap) {
  size_t words = (s->size / VMM_PAGE_SIZE + 63) / 64;
  uint64_t *tmp = calloc(words, sizeof(uint64_t));
  if (tmp == NULL)
    return VMM_ENOMEM;
  struct kvm_dirty_log log = {.slot = s->id, .dirty_bitmap = tmp};
  int err = xioctl(K(vm)->vm_fd, KVM_GET_DIRTY_LOG, &log);
  if (err == 0)
    for (size_t i = 0; i < words; i++)
      bitmap[i] |= tmp[i];
  free(tmp);
  return err;
}

static int kvm_get_msrs(vmm_vcpu *vcpu, struct vmm_msr *msrs, size_t n);

static uint64_t kvm_tsc_khz(vmm_vm *vm) {
  struct kvm_vm_state *k = K(vm);
  if (!k->msr_exits)
    return 0;
  int khz = ioctl(k->vm_fd, KVM_GET_TSC_KHZ, 0);
  return khz > 0 ? (uint64_t)khz : 0;
}

static int kvm_guest_tsc(vmm_vcpu *vcpu, uint64_t *tsc) {
  struct vmm_msr m = {.index = X86_MSR_TSC};
  int err = kvm_get_msrs(vcpu, &m, 1);
  if (err == 0)
    *tsc = m.value;
  return err;
}

static int kvm_irq_line(vmm_vm *vm, uint32_t gsi, bool level) {
  if (gsi > 23)
    return VMM_EINVAL;
  struct kvm_irq_level l = {.irq = gsi, .level = level};
  return xioctl(K(vm)->vm_fd, KVM_IRQ_LINE, &l);
}

static int kvm_supported_cpuid(vmm_vm *vm, struct vmm_cpuid_entry *e,
                               size_t *n) {
  struct kvm_vm_state *k = K(vm);
  size_t copy = k->nsupported < *n ? k->nsupported : *n;
  memcpy(e, k->supported, copy * sizeof(*e));
  *n = copy;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* vCPU state                                                               */

static int kvm_vcpu_init(vmm_vcpu *vcpu) {
  struct kvm_vm_state *k = K(vcpu->vm);
  struct kvm_vcpu_state *kv = calloc(1, sizeof(*kv));
  if (kv == NULL)
    return VMM_ENOMEM;
  atomic_init(&kv->kicks_sent, 0);
  kv->fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->index);
  if (kv->fd < 0) {
    int err = -errno;
    vmm__log(vcpu->vm, VMM_LOG_ERROR, "kvm: KVM_CREATE_VCPU: %s",
             vmm_strerror(err));
    free(kv);
    return err;
  }
  kv->run = mmap(NULL, (size_t)k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                 kv->fd, 0);
  if (kv->run == MAP_FAILED) {
    int err = -errno;
    close(kv->fd);
    free(kv);
    return err;
  }
  vcpu->engine = kv;
  return 0;
}

static void kvm_vcpu_fini(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  if (kv == NULL)
    return;
  munmap(kv->run, (size_t)K(vcpu->vm)->run_size);
  close(kv->fd);
  free(kv);
  vcpu->engine = NULL;
}

static int kvm_get_regs(vmm_vcpu *vcpu, struct vmm_regs *regs) {
  return xioctl(KV(vcpu)->fd, KVM_GET_REGS, regs);
}

static int kvm_set_regs(vmm_vcpu *vcpu, const struct vmm_regs *regs) {
  return xioctl(KV(vcpu)->fd, KVM_SET_REGS, (void *)regs);
}

static void seg_from_kvm(struct vmm_segment *d, const struct kvm_segment *s) {
  *d = (struct vmm_segment){
      .base = s->base,
      .limit = s->limit,
      .selector = s->selector,
      .type = s->type,
      .present = s->present,
      .dpl = s->dpl,
      .db = s->db,
      .s = s->s,
      .l = s->l,
      .g = s->g,
      .avl = s->avl,
      .unusable = s->unusable,
  };
}

static void seg_to_kvm(struct kvm_segment *d, const struct vmm_segment *s) {
  *d = (struct kvm_segment){
      .base = s->base,
      .limit = s->limit,
      .selector = s->selector,
      .type = s->type,
      .present = s->present,
      .dpl = s->dpl,
      .db = s->db,
      .s = s->s,
      .l = s->l,
      .g = s->g,
      .avl = s->avl,
      .unusable = s->unusable,
  };
}

static int kvm_get_sregs(vmm_vcpu *vcpu, struct vmm_sregs *o) {
  struct kvm_sregs s;
  int err = xioctl(KV(vcpu)->fd, KVM_GET_SREGS, &s);
  if (err < 0)
    return err;
  memset(o, 0, sizeof(*o));
  seg_from_kvm(&o->cs, &s.cs);
  seg_from_kvm(&o->ds, &s.ds);
  seg_from_kvm(&o->es, &s.es);
  seg_from_kvm(&o->fs, &s.fs);
  seg_from_kvm(&o->gs, &s.gs);
  seg_from_kvm(&o->ss, &s.ss);
  seg_from_kvm(&o->tr, &s.tr);
  seg_from_kvm(&o->ldt, &s.ldt);
  o->gdt.base = s.gdt.base;
  o->gdt.limit = s.gdt.limit;
  o->idt.base = s.idt.base;
  o->idt.limit = s.idt.limit;
  o->cr0 = s.cr0;
  o->cr2 = s.cr2;
  o->cr3 = s.cr3;
  o->cr4 = s.cr4;
  o->cr8 = s.cr8;
  o->efer = s.efer;
  o->apic_base = s.apic_base;
  return 0;
}

static int kvm_set_sregs(vmm_vcpu *vcpu, const struct vmm_sregs *o) {
  struct kvm_sregs s, old, back;
  /* Start from the current state to keep the pending-interrupt bitmap. */
  int err = xioctl(KV(vcpu)->fd, KVM_GET_SREGS, &s);
  if (err < 0)
    return err;
  old = s;
  seg_to_kvm(&s.cs, &o->cs);
  seg_to_kvm(&s.ds, &o->ds);
  seg_to_kvm(&s.es, &o->es);
  seg_to_kvm(&s.fs, &o->fs);
  seg_to_kvm(&s.gs, &o->gs);
  seg_to_kvm(&s.ss, &o->ss);
  seg_to_kvm(&s.tr, &o->tr);
  seg_to_kvm(&s.ldt, &o->ldt);
  s.gdt.base = o->gdt.base;
  s.gdt.limit = o->gdt.limit;
  s.idt.base = o->idt.base;
  s.idt.limit = o->idt.limit;
  s.cr0 = o->cr0;
  s.cr2 = o->cr2;
  s.cr3 = o->cr3;
  s.cr4 = o->cr4;
  s.cr8 = o->cr8;
  s.efer = o->efer;
  s.apic_base = o->apic_base;
  err = xioctl(KV(vcpu)->fd, KVM_SET_SREGS, &s);
  if (err < 0)
    return err == -EINVAL ? VMM_EINVAL : err;
  /*
   * A host may accept a state and silently keep part of it out: PVM leaves
   * CR0.PG clear outside long mode (it only runs 64-bit paging). Read the
   * control registers back, so the caller learns that instead of running
   * a different machine than it set up.
   */
  if ((err = xioctl(KV(vcpu)->fd, KVM_GET_SREGS, &back)) < 0)
    return err;
  if (back.cr0 != s.cr0 || back.cr4 != s.cr4 || back.efer != s.efer) {
    vmm__log(vcpu->vm, VMM_LOG_ERROR,
             "kvm: this host does not hold cr0=0x%llx cr4=0x%llx "
             "efer=0x%llx (kept cr0=0x%llx cr4=0x%llx efer=0x%llx)",
             (unsigned long long)s.cr0, (unsigned long long)s.cr4,
             (unsigned long long)s.efer, (unsigned long long)back.cr0,
             (unsigned long long)back.cr4, (unsigned long long)back.efer);
    xioctl(KV(vcpu)->fd, KVM_SET_SREGS, &old);
    return VMM_ENOTSUP;
  }
  return 0;
}

/*
 * The FPU state goes through the XSAVE area, not KVM_GET/SET_FPU: those
 * ioctls do not carry MXCSR (get reports 0, set drops it). The legacy
 * FXSAVE region at the start of the XSAVE area has every field.
 */
#define FX_FCW 0
#define FX_FSW 2
#define FX_FTW 4
#define FX_FOP 6
#define FX_FIP 8
#define FX_FDP 16
#define FX_MXCSR 24
#define FX_ST 32
#define FX_XMM 160
#define XSAVE_XSTATE_BV 512
#define XSTATE_FP_SSE 0x3ull
_Static_assert(sizeof(struct kvm_xsave) == VMM_XSAVE_SIZE, "xsave size");

static int kvm_get_fpu(vmm_vcpu *vcpu, struct vmm_fpu *o) {
  struct kvm_xsave x;
  int err = xioctl(KV(vcpu)->fd, KVM_GET_XSAVE, &x);
  if (err < 0)
    return err;
  const uint8_t *b = (const uint8_t *)x.region;
  memset(o, 0, sizeof(*o));
  memcpy(&o->fcw, b + FX_FCW, 2);
  memcpy(&o->fsw, b + FX_FSW, 2);
  o->ftw = b[FX_FTW];
  memcpy(&o->fop, b + FX_FOP, 2);
  memcpy(&o->fip, b + FX_FIP, 8);
  memcpy(&o->fdp, b + FX_FDP, 8);
  memcpy(&o->mxcsr, b + FX_MXCSR, 4);
  memcpy(o->st, b + FX_ST, sizeof(o->st));
  memcpy(o->xmm, b + FX_XMM, sizeof(o->xmm));
  return 0;
}

static int kvm_set_fpu(vmm_vcpu *vcpu, const struct vmm_fpu *o) {
  struct kvm_xsave x;
  int err = xioctl(KV(vcpu)->fd, KVM_GET_XSAVE, &x);
  if (err < 0)
    return err;
  uint8_t *b = (uint8_t *)x.region;
  memcpy(b + FX_FCW, &o->fcw, 2);
  memcpy(b + FX_FSW, &o->fsw, 2);
  b[FX_FTW] = o->ftw;
  memcpy(b + FX_FOP, &o->fop, 2);
  memcpy(b + FX_FIP, &o->fip, 8);
  memcpy(b + FX_FDP, &o->fdp, 8);
  memcpy(b + FX_MXCSR, &o->mxcsr, 4);
  for (int i = 0; i < 8; i++) /* the 80-bit values, padding zeroed */
    memcpy(memset(b + FX_ST + 16 * i, 0, 16), o->st[i], 10);
  memcpy(b + FX_XMM, o->xmm, sizeof(o->xmm));
  /* The x87 and SSE components are now explicitly present. */
  uint64_t bv;
  memcpy(&bv, b + XSAVE_XSTATE_BV, 8);
  bv |= XSTATE_FP_SSE;
  memcpy(b + XSAVE_XSTATE_BV, &bv, 8);
  err = xioctl(KV(vcpu)->fd, KVM_SET_XSAVE, &x);
  return err == -EINVAL ? VMM_EINVAL : err;
}

static int kvm_get_xsave(vmm_vcpu *vcpu, void *buf) {
  return xioctl(KV(vcpu)->fd, KVM_GET_XSAVE, buf);
}

static int kvm_set_xsave(vmm_vcpu *vcpu, const void *buf) {
  int err = xioctl(KV(vcpu)->fd, KVM_SET_XSAVE, (void *)buf);
  return err == -EINVAL ? VMM_EINVAL : err;
}

static int kvm_get_xcr0(vmm_vcpu *vcpu, uint64_t *xcr0) {
  struct kvm_xcrs x;
  int err = xioctl(KV(vcpu)->fd, KVM_GET_XCRS, &x);
  if (err < 0)
    return err;
  for (uint32_t i = 0; i < x.nr_xcrs; i++)
    if (x.xcrs[i].xcr == 0) {
      *xcr0 = x.xcrs[i].value;
      return 0;
    }
  *xcr0 = X86_XCR0_X87;
  return 0;
}

static int kvm_set_xcr0(vmm_vcpu *vcpu, uint64_t xcr0) {
  struct kvm_xcrs x;
  memset(&x, 0, sizeof(x));
  x.nr_xcrs = 1;
  x.xcrs[0].xcr = 0;
  x.xcrs[0].value = xcr0;
  int err = xioctl(KV(vcpu)->fd, KVM_SET_XCRS, &x);
  return err == -EINVAL ? VMM_EINVAL : err;
}

static struct kvm_msrs *msrs_alloc(size_t n) {
  return calloc(1, sizeof(struct kvm_msrs) + n * sizeof(struct kvm_msr_entry));
}

static int kvm_get_msrs(vmm_vcpu *vcpu, struct vmm_msr *msrs, size_t n) {
  struct kvm_msrs *m = msrs_alloc(n);
  if (m == NULL)
    return VMM_ENOMEM;
  m->nmsrs = (uint32_t)n;
  for (size_t i = 0; i < n; i++)
    m->entries[i].index = msrs[i].index;
  int rc = xioctl(KV(vcpu)->fd, KVM_GET_MSRS, m);
  if (rc >= 0 && (size_t)rc < n)
    rc = VMM_ENOENT;
  if (rc >= 0) {
    for (size_t i = 0; i < n; i++)
      msrs[i].value = m->entries[i].data;
    rc = 0;
  }
  free(m);
  return rc;
}

static int kvm_set_msrs(vmm_vcpu *vcpu, const struct vmm_msr *msrs, size_t n) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  struct kvm_msrs *m = msrs_alloc(n);
  if (m == NULL)
    return VMM_ENOMEM;
  /*
   * All or nothing: first check that KVM knows every index by reading them
   * all, keeping the old values to restore if a write is refused.
   */
  m->nmsrs = (uint32_t)n;
  for (size_t i = 0; i < n; i++)
    m->entries[i].index = msrs[i].index;
  int rc = xioctl(kv->fd, KVM_GET_MSRS, m);
  if (rc >= 0 && (size_t)rc < n)
    rc = VMM_ENOENT;
  if (rc < 0) {
    free(m);
    return rc;
  }
  struct kvm_msrs *w = msrs_alloc(n);
  if (w == NULL) {
    free(m);
    return VMM_ENOMEM;
  }
  w->nmsrs = (uint32_t)n;
  for (size_t i = 0; i < n; i++) {
    w->entries[i].index = msrs[i].index;
    w->entries[i].data = msrs[i].value;
  }
  rc = xioctl(kv->fd, KVM_SET_MSRS, w);
  if (rc >= 0 && (size_t)rc < n) {
    /* Restore those already written, then report the bad value. */
    m->nmsrs = (uint32_t)rc;
    xioctl(kv->fd, KVM_SET_MSRS, m);
    rc = VMM_EINVAL;
  }
  free(w);
  free(m);
  return rc < 0 ? rc : 0;
}

static int kvm_set_cpuid(vmm_vcpu *vcpu, const struct vmm_cpuid_entry *e,
                         size_t n) {
  struct kvm_cpuid2 *c =
      calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
  if (c == NULL)
    return VMM_ENOMEM;
  c->nent = (uint32_t)n;
  for (size_t i = 0; i < n; i++)
    c->entries[i] = (struct kvm_cpuid_entry2){
        .function = e[i].function,
        .index = e[i].index,
        .flags = (e[i].flags & VMM_CPUID_INDEXED)
                     ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                     : 0,
        .eax = e[i].eax,
        .ebx = e[i].ebx,
        .ecx = e[i].ecx,
        .edx = e[i].edx,
    };
  int err = xioctl(KV(vcpu)->fd, KVM_SET_CPUID2, c);
  free(c);
  return err == -EINVAL ? VMM_EINVAL : err;
}

/*
 * Guest debug combines explicit debug requests with exception exits for
 * #DB and #BP, which KVM can only intercept through the same interface.
 */
static int apply_debug(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  struct kvm_guest_debug g;
  memset(&g, 0, sizeof(g));
  uint32_t f = kv->dbg_on ? kv->dbg.flags : 0;
  if (f & VMM_DEBUG_SINGLESTEP)
    g.control |= KVM_GUESTDBG_SINGLESTEP;
  if ((f & VMM_DEBUG_SW_BREAKPOINTS) || (kv->exc_mask & (1u << X86_EXC_BP)))
    g.control |= KVM_GUESTDBG_USE_SW_BP;
  if ((f & VMM_DEBUG_HW_BREAKPOINTS) || (kv->exc_mask & (1u << X86_EXC_DB))) {
    g.control |= KVM_GUESTDBG_USE_HW_BP;
    if (f & VMM_DEBUG_HW_BREAKPOINTS) {
      for (uint32_t i = 0; i < kv->dbg.nr_breakpoints; i++) {
        g.arch.debugreg[i] = kv->dbg.breakpoints[i];
        g.arch.debugreg[7] |= 1ull << (2 * i); /* Ln, execute, 1 byte */
      }
    }
  }
  if (g.control)
    g.control |= KVM_GUESTDBG_ENABLE;
  return xioctl(kv->fd, KVM_SET_GUEST_DEBUG, &g);
}

static int kvm_set_debug(vmm_vcpu *vcpu, const struct vmm_debug *dbg) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  struct vmm_debug old = kv->dbg;
  bool old_on = kv->dbg_on;
  kv->dbg_on = dbg != NULL;
  if (dbg != NULL)
    kv->dbg = *dbg;
  int err = apply_debug(vcpu);
  if (err < 0) {
    kv->dbg = old;
    kv->dbg_on = old_on;
  }
  return err;
}

static int kvm_set_exception_exits(vmm_vcpu *vcpu, uint32_t mask) {
  if (mask & ~((1u << X86_EXC_DB) | (1u << X86_EXC_BP)))
    return VMM_ENOTSUP;
  struct kvm_vcpu_state *kv = KV(vcpu);
  uint32_t old = kv->exc_mask;
  kv->exc_mask = mask;
  int err = apply_debug(vcpu);
  if (err < 0)
    kv->exc_mask = old;
  return err;
}

/* ------------------------------------------------------------------------ */
/* Running                                                                  */

/*
 * Kicks without a signal handler: the kick signal stays blocked in the
 * thread and is unblocked only inside KVM_RUN through KVM_SET_SIGNAL_MASK.
 * A kick then makes KVM_RUN fail with EINTR, and the still-pending signal
 * is consumed here with sigtimedwait().
 */
static int setup_signal_mask(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  int sig = K(vcpu->vm)->kick_sig;
  if (sig == 0)
    return 0;
  sigset_t kick, old;
  sigemptyset(&kick);
  sigaddset(&kick, sig);
  int err = pthread_sigmask(SIG_BLOCK, &kick, &old);
  if (err != 0)
    return -err;
  sigdelset(&old, sig);
  /* struct kvm_signal_mask followed by the kernel's 8-byte sigset_t. */
  _Alignas(struct kvm_signal_mask) uint8_t
      m[sizeof(struct kvm_signal_mask) + 8];
  struct kvm_signal_mask hdr = {.len = 8};
  memcpy(m, &hdr, sizeof(hdr));
  memcpy(m + sizeof(hdr), &old, 8);
  err = xioctl(kv->fd, KVM_SET_SIGNAL_MASK, m);
  if (err < 0)
    return err;
  atomic_store(&kv->mask_thread, pthread_self());
  atomic_store(&kv->mask_set, true);
  return 0;
}

static void drain_kicks(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  int sig = K(vcpu->vm)->kick_sig;
  unsigned sent = atomic_load(&kv->kicks_sent);
  if (sig == 0 || sent == kv->kicks_drained)
    return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  struct timespec zero = {0, 0};
  while (sigtimedwait(&set, NULL, &zero) == sig)
    ;
  kv->kicks_drained = sent;
}

static void kvm_kick(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  int sig = K(vcpu->vm)->kick_sig;
  pthread_mutex_lock(&vcpu->lock);
  __atomic_store_n(&kv->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  /*
   * The signal only for a thread that blocks it: a run that has begun but
   * not yet set its mask (its first run, or a new thread) would be killed
   * by the signal's default action. Such a run has not entered KVM_RUN
   * yet, and will see immediate_exit when it does.
   */
  if (sig != 0 && vcpu->running && atomic_load(&kv->mask_set) &&
      pthread_equal(atomic_load(&kv->mask_thread), vcpu->thread)) {
    atomic_fetch_add(&kv->kicks_sent, 1);
    pthread_kill(vcpu->thread, sig);
  }
  pthread_mutex_unlock(&vcpu->lock);
}

/*
 * The interrupt acceptance contract (lib/internal.h) for KVM without its
 * in-kernel irqchip: before each KVM_RUN, an NMI goes in with KVM_NMI (KVM
 * tracks NMI blocking), and a pending external interrupt is acknowledged
 * and queued with KVM_INTERRUPT when the last exit said the guest can take
 * one (IF set, no shadow, nothing queued); otherwise KVM is asked to exit
 * when it can. With the user-space platform CR8 mirrors the APIC's TPR.
 */
static int inject_pending(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  struct kvm_run *run = kv->run;
  int err;
  if (vmm__vcpu_nmi_pending(vcpu) && vmm__vcpu_nmi_ack(vcpu))
    if ((err = xioctl(kv->fd, KVM_NMI, NULL)) < 0)
      return err;
  if (vcpu->vm->irqchip_kind == VMM__IRQCHIP_ENGINE)
    return 0; /* the in-kernel APIC injects by itself */
  run->request_interrupt_window = 0;
  if (vmm__vcpu_irq_pending(vcpu)) {
    if (run->ready_for_interrupt_injection && run->if_flag) {
      int vector = vmm__vcpu_irq_ack(vcpu);
      struct kvm_interrupt i = {.irq = (uint32_t)vector};
      if (vector >= 0 && (err = xioctl(kv->fd, KVM_INTERRUPT, &i)) < 0)
        return err;
    } else {
      run->request_interrupt_window = 1;
    }
  }
  if (vcpu->vm->irqchip_kind == VMM__IRQCHIP_USER)
    run->cr8 = kv->cr8_in = vmm__vcpu_tpr(vcpu);
  return 0;
}

/* A guest RDMSR/WRMSR KVM sent to user space (the platform's filter). */
static void exit_msr(vmm_vcpu *vcpu, bool write) {
  struct kvm_run *run = KV(vcpu)->run;
  uint64_t value = write ? run->msr.data : 0;
  int rc = vmm__vcpu_msr(vcpu, run->msr.index, &value, write);
  run->msr.error = rc == 0 ? 0 : 1; /* ours or #GP: nothing else is sent */
  if (rc == 0 && !write)
    run->msr.data = value;
}

static int kvm_sync(vmm_vcpu *vcpu);

static void exit_debug(vmm_vcpu *vcpu, struct vmm_exit *e) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  const struct kvm_debug_exit_arch *d = &kv->run->debug.arch;
  uint32_t f = kv->dbg_on ? kv->dbg.flags : 0;
  bool ours = (d->exception == X86_EXC_BP) ? (f & VMM_DEBUG_SW_BREAKPOINTS)
                                          : (f & (VMM_DEBUG_SINGLESTEP |
                                                  VMM_DEBUG_HW_BREAKPOINTS));
  if (!ours && d->exception < 32 && (kv->exc_mask & (1u << d->exception))) {
    e->reason = VMM_EXIT_FAULT;
    e->fault.vector = (uint8_t)d->exception;
    return;
  }
  e->reason = VMM_EXIT_DEBUG;
  e->debug.vector = (uint8_t)d->exception;
  e->debug.rip = d->pc;
  e->debug.dr6 = d->dr6;
  e->debug.dr7 = d->dr7;
}

static int kvm_run(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  struct kvm_run *run = kv->run;
  struct vmm_exit *e = &vcpu->exit;
  int err;

  if (VMM__UNLIKELY(!atomic_load(&kv->mask_set) ||
                    !pthread_equal(atomic_load(&kv->mask_thread),
                                  pthread_self())))
    if ((err = setup_signal_mask(vcpu)) < 0)
      return err;
  if (kv->complete_mmio_read) {
    memcpy(run->mmio.data, e->mmio.data, sizeof(run->mmio.data));
    kv->complete_mmio_read = false;
  }
  if ((err = inject_pending(vcpu)) < 0)
    return err;

  int rc = ioctl(kv->fd, KVM_RUN, 0);
  if (vcpu->vm->irqchip_kind == VMM__IRQCHIP_USER && run->cr8 != kv->cr8_in)
    vmm__vcpu_set_tpr(vcpu, run->cr8);
  if (rc < 0) {
    if (errno == EINTR || errno == EAGAIN) {
      __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
      drain_kicks(vcpu);
      e->reason = VMM_EXIT_NONE;
      return 0;
    }
    return -errno;
  }

  memset(e, 0, sizeof(*e));
  switch (run->exit_reason) {
  case KVM_EXIT_IO: {
    size_t bytes = (size_t)run->io.size * run->io.count;
    if (run->io.data_offset > (uint64_t)K(vcpu->vm)->run_size ||
        bytes > (size_t)K(vcpu->vm)->run_size - run->io.data_offset)
      return VMM_EENGINE;
    e->reason = VMM_EXIT_IO;
    e->io.port = run->io.port;
    e->io.size = run->io.size;
    e->io.is_write = run->io.direction == KVM_EXIT_IO_OUT;
    e->io.count = run->io.count;
    e->io.data = (uint8_t *)run + run->io.data_offset;
    break;
  }
  case KVM_EXIT_MMIO:
    e->reason = VMM_EXIT_MMIO;
    e->mmio.gpa = run->mmio.phys_addr;
    e->mmio.size = (uint8_t)(run->mmio.len > 8 ? 8 : run->mmio.len);
    e->mmio.is_write = run->mmio.is_write;
    memcpy(e->mmio.data, run->mmio.data, sizeof(e->mmio.data));
    kv->complete_mmio_read = !run->mmio.is_write;
    break;
  case KVM_EXIT_HLT:
    e->reason = VMM_EXIT_HLT;
    break;
  case KVM_EXIT_SHUTDOWN:
    e->reason = VMM_EXIT_SHUTDOWN;
    break;
  case KVM_EXIT_DEBUG:
    exit_debug(vcpu, e);
    break;
  case KVM_EXIT_EXCEPTION:
    e->reason = VMM_EXIT_FAULT;
    e->fault.vector = (uint8_t)run->ex.exception;
    e->fault.error_code = run->ex.error_code;
    break;
  case KVM_EXIT_IRQ_WINDOW_OPEN:
  case KVM_EXIT_INTR:
    e->reason = VMM_EXIT_NONE;
    break;
  case KVM_EXIT_X86_RDMSR:
  case KVM_EXIT_X86_WRMSR:
    exit_msr(vcpu, run->exit_reason == KVM_EXIT_X86_WRMSR);
    /* Complete the instruction now, so no caller ever sees it half done. */
    e->reason = VMM_EXIT_NONE;
    return kvm_sync(vcpu);
  case KVM_EXIT_FAIL_ENTRY:
    e->reason = VMM_EXIT_INTERNAL_ERROR;
    e->internal.code = VMM_INTERNAL_ENTRY_FAILED;
    e->internal.engine_code = (uint32_t)run->fail_entry.hardware_entry_failure_reason;
    break;
  case KVM_EXIT_INTERNAL_ERROR:
    e->reason = VMM_EXIT_INTERNAL_ERROR;
    e->internal.engine_code = run->internal.suberror;
    e->internal.code = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                           ? VMM_INTERNAL_EMULATION
                       : run->internal.suberror == KVM_INTERNAL_ERROR_DELIVERY_EV
                           ? VMM_INTERNAL_DELIVERY
                           : VMM_INTERNAL_UNKNOWN;
    for (uint32_t i = 0; i < run->internal.ndata && i < 4; i++)
      e->internal.data[i] = run->internal.data[i];
    break;
  case KVM_EXIT_SYSTEM_EVENT:
    if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
      e->reason = VMM_EXIT_SYSTEM;
      e->system.event = VMM_SYSTEM_RESET;
    } else {
      e->reason = VMM_EXIT_SHUTDOWN;
    }
    break;
  default:
    e->reason = VMM_EXIT_INTERNAL_ERROR;
    e->internal.code = VMM_INTERNAL_UNEXPECTED;
    e->internal.engine_code = run->exit_reason;
    break;
  }
  return 0;
}

/* Let KVM complete a served I/O or MMIO instruction without entering the
   guest: KVM_RUN with immediate_exit set finishes pending operations and
   returns EINTR. */
static int kvm_sync(vmm_vcpu *vcpu) {
  struct kvm_vcpu_state *kv = KV(vcpu);
  struct kvm_run *run = kv->run;
  if (kv->complete_mmio_read) {
    memcpy(run->mmio.data, vcpu->exit.mmio.data, sizeof(run->mmio.data));
    kv->complete_mmio_read = false;
  }
  __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_RELAXED);
  int rc = ioctl(kv->fd, KVM_RUN, 0);
  int err = rc < 0 && errno != EINTR ? -errno : 0;
  __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
  drain_kicks(vcpu);
  return err;
}

static void kvm_vcpu_leave(vmm_vcpu *vcpu) { drain_kicks(vcpu); }

const struct vmm__engine_ops vmm__kvm_ops = {
    .kind = VMM_ENGINE_KVM,
    .name = "kvm",
    .has_irqchip = true,
    .available = kvm_available,
    .vm_init = kvm_vm_init,
    .vm_fini = kvm_vm_fini,
    .slot_add = kvm_slot_add,
    .slot_remove = kvm_slot_remove,
    .dirty_log_fetch = kvm_dirty_log_fetch,
    .irq_line = kvm_irq_line,
    .supported_cpuid = kvm_supported_cpuid,
    .vcpu_init = kvm_vcpu_init,
    .vcpu_fini = kvm_vcpu_fini,
    .get_regs = kvm_get_regs,
    .set_regs = kvm_set_regs,
    .get_sregs = kvm_get_sregs,
    .set_sregs = kvm_set_sregs,
    .get_fpu = kvm_get_fpu,
    .set_fpu = kvm_set_fpu,
    .get_xsave = kvm_get_xsave,
    .set_xsave = kvm_set_xsave,
    .get_xcr0 = kvm_get_xcr0,
    .set_xcr0 = kvm_set_xcr0,
    .get_msrs = kvm_get_msrs,
    .set_msrs = kvm_set_msrs,
    .set_cpuid = kvm_set_cpuid,
    .set_debug = kvm_set_debug,
    .set_exception_exits = kvm_set_exception_exits,
    .set_insn_limit = NULL,
    .insn_count = NULL,
    .run = kvm_run,
    .sync = kvm_sync,
    .kick = kvm_kick,
    .vcpu_leave = kvm_vcpu_leave,
    .tsc_khz = kvm_tsc_khz,
    .guest_tsc = kvm_guest_tsc,
};
