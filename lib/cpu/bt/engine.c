/*
 * The BT engine's ops table: VM and vCPU lifetime, architectural state,
 * CPUID, debug controls, instruction counting, and run(): the dispatcher
 * that finds or translates fragments and enters translated code.
 * Design: docs/bt.md.
 */
#include <cpuid.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bt.h"

#ifdef BT_ASAN
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
/* The leak checker scans heap blocks, not our own mappings: struct
   bt_vcpu's pointers (the translation cache) would look leaked. */
#define LSAN_ROOT(p, n) __lsan_register_root_region(p, n)
#define LSAN_UNROOT(p, n) __lsan_unregister_root_region(p, n)
#else
#define LSAN_ROOT(p, n) ((void)(p), (void)(n))
#define LSAN_UNROOT(p, n) ((void)(p), (void)(n))
#endif

#define BT_DEFAULT_CACHE (32u << 20)
#define BT_MIN_CACHE (256u << 10)
#define BT_MAX_CACHE (1u << 30)
/* With a limit closer than this, run one instruction per TU. */
#define BT_MAX_TU 12
/* Budget when counting without a limit: far from overflow. */
#define BT_BUDGET_NONE (-(INT64_C(1) << 62))

/* ------------------------------------------------------------------------ */
/* Host support                                                             */

bool bt_host_ok(void) {
  unsigned a, bx, c, d;
  if (!__get_cpuid(1, &a, &bx, &c, &d))
    return false;
  /* FXSR, SSE2 (the host runs guest SSE natively). */
  if (!(d & (1u << 24)) || !(d & (1u << 26)))
    return false;
  if (!__get_cpuid_count(7, 0, &a, &bx, &c, &d))
    return false;
  /* BMI2: the flag-free soft-TLB and jump-cache lookups. */
  return (bx & (1u << 8)) != 0;
}

static bool bt_available(const struct vmm_vm_config *cfg) {
  VMM__UNUSED(cfg);
  return bt_host_ok();
}

void bt_internal_error(struct bt_vcpu *b, uint32_t code, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  vmm__log(b->vcpu->vm, VMM_LOG_ERROR, "bt: %s (rip 0x%llx)", msg,
           (unsigned long long)b->ctx.rip);
  struct vmm_exit *e = &b->vcpu->exit;
  memset(e, 0, sizeof(*e));
  e->reason = VMM_EXIT_INTERNAL_ERROR;
  e->internal.code = code;
  e->internal.data[0] = b->ctx.rip;
  b->exit_ready = true;
}

/* ------------------------------------------------------------------------ */
/* VM                                                                       */

static int bt_vm_init(vmm_vm *vm) {
  /* VMM_VM_IRQCHIP/PIT: the front end attaches the user-space platform
     (BT has no controllers of its own); events() takes its interrupts. */
  size_t cache = vm->cfg.bt_cache_size;
  if (cache != 0 && (cache < BT_MIN_CACHE || cache > BT_MAX_CACHE)) {
    vmm__log(vm, VMM_LOG_ERROR, "bt: bt_cache_size must be %u..%u bytes",
             BT_MIN_CACHE, BT_MAX_CACHE);
    return VMM_EINVAL;
  }
  uint32_t flags = vm->cfg.bt_flags;
  if (flags & ~(uint32_t)(VMM_BT_NO_LOOP | VMM_BT_NO_PEXT)) {
    vmm__log(vm, VMM_LOG_ERROR, "bt: unknown bt_flags 0x%x", flags);
    return VMM_EINVAL;
  }
  struct bt_vm *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return VMM_ENOMEM;
  int err = -pthread_mutex_init(&m->lock, NULL);
  if (err < 0) {
    free(m);
    return err;
  }
  atomic_init(&m->wp_gen, 0);
  m->wp_fence = !vmm__membarrier_usable();
  bt_supported_cpuid(m, vm->irqchip_kind == VMM__IRQCHIP_USER);
  if (flags & VMM_BT_NO_PEXT)
    m->fast_pext = false;
  if (flags & VMM_BT_NO_LOOP)
    m->fast_loop = false;
  vm->engine = m;
  return 0;
}

static void bt_vm_fini(vmm_vm *vm) {
  struct bt_vm *m = BM(vm);
  if (m == NULL)
    return;
  bt_vm_code_fini(m);
  for (unsigned i = 0; i < VMM_MEM_MAX_SLOTS; i++)
    free((void *)m->codebits[i]);
  pthread_mutex_destroy(&m->lock);
  free(m);
  vm->engine = NULL;
}

static int bt_slot_add(vmm_vm *vm, const struct vmm__slot *s) {
  struct bt_vm *m = BM(vm);
  uint64_t pages = s->size / VMM_PAGE_SIZE;
  _Atomic uint64_t *bits = calloc((pages + 63) / 64, sizeof(uint64_t));
  if (bits == NULL)
    return VMM_ENOMEM;
  free((void *)m->codebits[s->id]);
  m->codebits[s->id] = bits;
  m->slot_pages[s->id] = pages;
  return 0;
}

static void bt_slot_remove(vmm_vm *vm, const struct vmm__slot *s) {
  struct bt_vm *m = BM(vm);
  bt_code_forget_range(m, s->gpa, s->size);
  free((void *)m->codebits[s->id]);
  m->codebits[s->id] = NULL;
  m->slot_pages[s->id] = 0;
}

static int bt_dirty_log_fetch(vmm_vm *vm, const struct vmm__slot *s,
                              uint64_t *bitmap) {
  /* The software log already holds every guest write, because writable TLB
     entries for a logged slot exist only after marking. Revoke them so the
     next write marks again. */
  VMM__UNUSED(s);
  VMM__UNUSED(bitmap);
  bt_wp_shootdown(vm, NULL);
  return 0;
}

static void bt_mem_written(vmm_vm *vm, vmm_gpa_t gpa, uint64_t len) {
  bt_code_written(vm, NULL, gpa, len);
}

/*
 * A CLOCK_MONOTONIC reading and the TSC at that moment: the midpoint of
 * TSC reads on either side, the tightest pair of 16 (a preemption between
 * the reads of one pair widens it, and the next pairs are tight again).
 */
struct tsc_sample {
  uint64_t tsc;
  int64_t ns;
};

static struct tsc_sample tsc_sample(void) {
  struct tsc_sample best = {0, 0};
  uint64_t best_width = UINT64_MAX;
  for (int i = 0; i < 16; i++) {
    struct timespec t;
    uint64_t a = vmm__tsc();
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t b = vmm__tsc();
    if (b - a < best_width) {
      best_width = b - a;
      best.tsc = a + (b - a) / 2;
      best.ns = (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
    }
  }
  return best;
}

/*
 * The TSC-deadline timer of the user-space platform needs the guest TSC's
 * rate: the host's (fast mode), measured against CLOCK_MONOTONIC over 2 ms
 * when the platform is created. Each end is a tight sample, so a
 * preemption at either end (common on a loaded host) does not skew it. In
 * counting mode the guest TSC follows the instruction count instead, and
 * deadlines fire by host time (docs/bt.md).
 */
static uint64_t bt_tsc_khz(vmm_vm *vm) {
  VMM__UNUSED(vm);
  struct tsc_sample s0 = tsc_sample(), s1;
  do
    s1 = tsc_sample();
  while (s1.ns - s0.ns < 2000000);
  return (uint64_t)((unsigned __int128)(s1.tsc - s0.tsc) * 1000000u /
                    (uint64_t)(s1.ns - s0.ns));
}

static int bt_guest_tsc(vmm_vcpu *vcpu, uint64_t *tsc) {
  *tsc = bt_tsc(BV(vcpu));
  return 0;
}

static int bt_irq_line(vmm_vm *vm, uint32_t gsi, bool level) {
  VMM__UNUSED(vm);
  VMM__UNUSED(gsi);
  VMM__UNUSED(level);
  return VMM_ENOTSUP;
}

static int bt_supported(vmm_vm *vm, struct vmm_cpuid_entry *e, size_t *n) {
  struct bt_vm *m = BM(vm);
  size_t copy = m->nsupported < *n ? m->nsupported : *n;
  memcpy(e, m->supported, copy * sizeof(*e));
  *n = copy;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* vCPU state                                                               */

static struct vmm_segment real_seg(uint16_t sel, uint64_t base, uint8_t type) {
  return (struct vmm_segment){.base = base,
                              .limit = 0xffff,
                              .selector = sel,
                              .type = type,
                              .present = 1,
                              .s = 1};
}

static void reset_state(struct bt_vcpu *b) {
  memset(b->ctx.gpr, 0, sizeof(b->ctx.gpr));
  b->ctx.gpr[R_DX] = 0x600; /* family 6 reset signature, as KVM does */
  b->ctx.flags = 2;
  b->vflags = 0;
  b->ctx.rip = 0xfff0;
  for (int i = 0; i < 6; i++)
    b->seg[i] = real_seg(0, 0, X86_SEG_DATA_RW_ACCESSED);
  b->seg[S_CS] = real_seg(0xf000, 0xffff0000, X86_SEG_CODE_RX_ACCESSED);
  b->tr = (struct vmm_segment){
      .limit = 0xffff, .type = X86_SEG_TSS16_BUSY, .present = 1};
  b->ldt =
      (struct vmm_segment){.limit = 0xffff, .type = X86_SEG_LDT, .present = 1};
  b->gdt = (struct vmm_dtable){.limit = 0xffff};
  b->idt = (struct vmm_dtable){.limit = 0xffff};
  b->cr0 = X86_CR0_ET | X86_CR0_NW | X86_CR0_CD;
  b->cr2 = b->cr3 = b->cr4 = b->cr8 = b->efer = 0;
  b->apic_base =
      0xfee00000ull | (1ull << 11) | (b->vcpu->index == 0 ? (1ull << 8) : 0);
  b->xcr0 = X86_XCR0_X87;
  memset(b->dr, 0, sizeof(b->dr));
  b->dr[6] = 0xffff0ff0;
  b->dr[7] = 0x400;
  b->pat = 0x0007040600070406ull;
  memset(b->ctx.fpu, 0, sizeof(b->ctx.fpu));
  b->fcw = 0x37f;
  b->mxcsr = 0x1f80;
  uint16_t fcw = 0x37f;
  uint32_t mx = 0x1f80, mxmask = 0xffff;
  memcpy(b->ctx.fpu + 0, &fcw, 2);
  memcpy(b->ctx.fpu + 24, &mx, 4);
  memcpy(b->ctx.fpu + 28, &mxmask, 4);
  b->cpl = 0;
  b->halted = false;
  b->shadow = false;
  b->nmi_blocked = false;
}

static void tlb_and_links_flush(struct bt_vcpu *b) {
  bt_tlb_flush(b);
  bt_unlink_cross_page(b);
}

void bt_update_mode(struct bt_vcpu *b) {
  uint32_t key;
  bool pe = b->cr0 & X86_CR0_PE;
  bool lma = b->efer & X86_EFER_LMA;
  const struct vmm_segment *cs = &b->seg[S_CS], *ss = &b->seg[S_SS];
  if (!pe) {
    b->cpl = 0;
    key = BT_K_CODE16;
    b->zmode = ZYDIS_MACHINE_MODE_REAL_16;
  } else if (lma && cs->l) {
    key = BT_K_CODE64;
    b->zmode = ZYDIS_MACHINE_MODE_LONG_64;
  } else if (cs->db) {
    key = BT_K_CODE32;
    b->zmode =
        lma ? ZYDIS_MACHINE_MODE_LONG_COMPAT_32 : ZYDIS_MACHINE_MODE_LEGACY_32;
  } else {
    key = BT_K_CODE16;
    b->zmode =
        lma ? ZYDIS_MACHINE_MODE_LONG_COMPAT_16 : ZYDIS_MACHINE_MODE_LEGACY_16;
  }
  bool code64 = (key & BT_K_CODE_MASK) == BT_K_CODE64;
  if (code64)
    b->zstack = ZYDIS_STACK_WIDTH_64;
  else
    b->zstack = ss->db ? ZYDIS_STACK_WIDTH_32 : ZYDIS_STACK_WIDTH_16;
  if (!code64 && ss->db)
    key |= BT_K_STACK32;
  key |= (b->cpl & 3) << BT_K_CPL_SHIFT;
  if (pe)
    key |= BT_K_PE;
  if (lma)
    key |= BT_K_LMA;
  /* Inline memory paths need segments that add nothing and check nothing:
     64-bit mode, or 32-bit code with flat CS, DS, ES and SS. */
  bool flat = code64;
  if (!code64 && pe && (key & BT_K_CODE_MASK) == BT_K_CODE32 && ss->db) {
    flat = true;
    static const int segs[] = {S_CS, S_DS, S_ES, S_SS};
    for (int i = 0; i < 4; i++) {
      const struct vmm_segment *s = &b->seg[segs[i]];
      bool expand_down = s->s && !(s->type & 8) && (s->type & 4);
      if (s->base != 0 || s->limit != 0xffffffffu || expand_down ||
          (segs[i] != S_CS && s->unusable))
        flat = false;
    }
  }
  if (flat)
    key |= BT_K_FLAT;
  if (b->cr0 & X86_CR0_TS)
    key |= BT_K_TS;
  if (b->cr0 & X86_CR0_EM)
    key |= BT_K_EM;
  if (b->cr0 & X86_CR0_MP)
    key |= BT_K_MP;
  if (b->cr4 & X86_CR4_OSFXSR)
    key |= BT_K_OSFXSR;
  if (b->counting)
    key |= BT_K_COUNT;
  if (b->dbg_on && (b->dbg.flags & VMM_DEBUG_SINGLESTEP))
    key |= BT_K_SINGLE;
  if (b->vflags & X86_RFLAGS_TF)
    key |= BT_K_SINGLE;
  if (b->cpl == 3 && (b->cr0 & X86_CR0_AM) && (b->vflags & X86_RFLAGS_AC))
    key |= BT_K_AC;
  b->key = key;
  unsigned set = b->cpl == 3 ? 1 : 0;
  b->tlb_set = set;
  /* One 8-byte load per base: gcc's vector copy (16-byte loads across
     fields just written byte by byte, as syscall and sysret do) missed
     store forwarding, a tenth of a syscall round trip. */
  for (int i = 0; i < 6; i++) {
    uint64_t base = b->seg[i].base;
    __asm__("" : "+r"(base));
    b->ctx.segbase[i] = base;
  }
  if (code64) {
    b->ctx.segbase[S_CS] = b->ctx.segbase[S_DS] = 0;
    b->ctx.segbase[S_ES] = b->ctx.segbase[S_SS] = 0;
  }
}

uint64_t bt_get_rflags(const struct bt_vcpu *b) {
  return (b->ctx.flags & BT_HOST_FLAGS) | b->vflags | X86_RFLAGS_FIXED;
}

void bt_set_rflags(struct bt_vcpu *b, uint64_t rflags) {
  b->ctx.flags = (rflags & BT_HOST_FLAGS) | X86_RFLAGS_FIXED;
  b->vflags = rflags & ~(BT_HOST_FLAGS | X86_RFLAGS_FIXED);
}

/*
 * The vCPU's stack and its state in one mapping: a guard region, the stack
 * (translated code, the callout gate and the C code it calls, device
 * handlers included, run on it; as large as a thread's default, and only
 * what handlers touch is ever backed), then struct bt_vcpu, whose first
 * member is the context: the stack's top R is the context's address, and
 * translated code reaches the context as [rsp + offset] (glue.S).
 */
#define BT_STACK_SIZE (8ul << 20)
/* Below it, never mapped: 64 KiB, so a frame of a handler compiled
   without stack-clash probes that jumps past a page still faults here. */
#define BT_STACK_GUARD (64ul << 10)

static size_t vcpu_map_size(void) {
  return BT_STACK_GUARD + BT_STACK_SIZE +
         ((sizeof(struct bt_vcpu) + 4095) & ~4095ul);
}

static struct bt_vcpu *vcpu_map(void) {
  uint8_t *p = mmap(NULL, vcpu_map_size(), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  if (mprotect(p, BT_STACK_GUARD, PROT_NONE) < 0) {
    munmap(p, vcpu_map_size());
    return NULL;
  }
  /* Zeroed by mmap. */
  struct bt_vcpu *b = (struct bt_vcpu *)(p + BT_STACK_GUARD + BT_STACK_SIZE);
  _Static_assert(offsetof(struct bt_vcpu, ctx) == 0,
                "the stack's top is the context");
  b->ctx.host_rsp = (uint64_t)(uintptr_t)&b->ctx; /* page-aligned */
  LSAN_ROOT(b, sizeof(*b));
  return b;
}

#ifdef BT_ASAN
/*
 * AddressSanitizer knows one stack per thread. Code running on another
 * (callouts and the device handlers they call, on the vCPU's stack) gets
 * an allocation stack of malloc() alone, which LeakSanitizer takes for a
 * coroutine's and treats as reachable: a leak there was never reported,
 * and every report showed no allocating code. A callout tells it of the
 * switch, as coroutine libraries do, and of the way back before it
 * returns; nested ones (a handler running another vCPU) chain through
 * asan_caller_*. The stack's fake frames (detect_stack_use_after_return)
 * stay the vCPU's from one callout to the next. As for any coroutine, a
 * leak check made while a thread is in a callout scans its vCPU stack,
 * not the caller's frames: a block only those hold is reported.
 */
static void asan_switch_in(struct bt_vcpu *b) {
  __sanitizer_start_switch_fiber(&b->asan_caller_fake,
                                 (uint8_t *)b - BT_STACK_SIZE, BT_STACK_SIZE);
  __sanitizer_finish_switch_fiber(b->asan_fake, &b->asan_caller_bottom,
                                  &b->asan_caller_size);
}

static void asan_switch_out(struct bt_vcpu *b) {
  __sanitizer_start_switch_fiber(&b->asan_fake, b->asan_caller_bottom,
                                 b->asan_caller_size);
  __sanitizer_finish_switch_fiber(b->asan_caller_fake, NULL, NULL);
}

/* Fake frames are freed only by leaving their stack for good. */
static void asan_stack_free(struct bt_vcpu *b) {
  if (b->asan_fake == NULL)
    return;
  asan_switch_in(b);
  __sanitizer_start_switch_fiber(NULL, b->asan_caller_bottom,
                                 b->asan_caller_size);
  __sanitizer_finish_switch_fiber(b->asan_caller_fake, NULL, NULL);
}
#else
static void asan_switch_in(struct bt_vcpu *b) {
  (void)b;
}
static void asan_switch_out(struct bt_vcpu *b) {
  (void)b;
}
static void asan_stack_free(struct bt_vcpu *b) {
  (void)b;
}
#endif

static void vcpu_unmap(struct bt_vcpu *b) {
  asan_stack_free(b);
  LSAN_UNROOT(b, sizeof(*b));
  munmap((uint8_t *)b - BT_STACK_SIZE - BT_STACK_GUARD, vcpu_map_size());
}

static int bt_vcpu_init(vmm_vcpu *vcpu) {
  struct bt_vcpu *b = vcpu_map();
  if (b == NULL)
    return VMM_ENOMEM;
  b->slot_guard = aligned_alloc(4096, 3 * 4096);
  if (b->slot_guard == NULL) {
    vcpu_unmap(b);
    return VMM_ENOMEM;
  }
  memset(b->slot_guard, 0, 3 * 4096);
  b->dcache_pin = -1;
  b->vcpu = vcpu;
  b->vm = BM(vcpu->vm);
  size_t cache = vcpu->vm->cfg.bt_cache_size ? vcpu->vm->cfg.bt_cache_size
                                             : BT_DEFAULT_CACHE;
  int err = bt_tc_init(&b->tc, cache);
  if (err < 0) {
    free(b->slot_guard);
    vcpu_unmap(b);
    return err;
  }
  if ((err = -pthread_mutex_init(&b->link_lock, NULL)) < 0) {
    bt_tc_fini(&b->tc);
    free(b->slot_guard);
    vcpu_unmap(b);
    return err;
  }
  atomic_init(&b->kicked, false);
  atomic_init(&b->ctx.in_tc, 0);
  atomic_init(&b->inval_pending, false);
  b->ctx.self = (uint64_t)(uintptr_t)b;
  b->ctx.gate = (uint64_t)(uintptr_t)vmm__bt_gate;
  b->ctx.exit_link = (uint64_t)(uintptr_t)vmm__bt_exit_link;
  b->ctx.exit_jc = (uint64_t)(uintptr_t)vmm__bt_exit_jc;
  b->ctx.exit_budget = (uint64_t)(uintptr_t)vmm__bt_exit_budget;
  vcpu->engine = b;
  b->tlb_size = b->vm->fast_pext ? BT_TLB_SIZE : 256;
  b->ctx.tlb_mask = (uint64_t)(b->tlb_size - 1) << 12;
  for (unsigned a = 0; a < 5; a++)
    b->ctx.hit_mask[a] = ~0xfffull | ((1ull << a) - 1);
  b->ctx.jc_mask = BT_JC_SIZE - 1;
  reset_state(b);
  bt_update_mode(b);
  bt_slots_reset(b);
  bt_tlb_flush(b);
  b->jc_nused = BT_JC_TRACK + 1; /* nothing known: empty every entry */
  b->ctx.fpu_full = 1; /* the image is the whole state (glue.S) */
  b->ctx.x87 = (uint64_t)(uintptr_t)vmm__bt_x87_dirty;
  bt_jc_flush(b);
  b->mem_gen = atomic_load(&vcpu->vm->mem.generation);
  b->wp_gen = atomic_load(&b->vm->wp_gen);
  return 0;
}

static void bt_vcpu_fini(vmm_vcpu *vcpu) {
  struct bt_vcpu *b = BV(vcpu);
  if (b == NULL)
    return;
  bt_tc_fini(&b->tc);
  pthread_mutex_destroy(&b->link_lock);
  free(b->slot_guard);
  vcpu_unmap(b);
  vcpu->engine = NULL;
}

/* vmm_regs order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15. */
static const uint8_t regs_map[16] = {R_AX, R_BX, R_CX, R_DX, R_SI, R_DI,
                                     R_SP, R_BP, R_8,  R_9,  R_10, R_11,
                                     R_12, R_13, R_14, R_15};

static int bt_get_regs(vmm_vcpu *vcpu, struct vmm_regs *r) {
  struct bt_vcpu *b = BV(vcpu);
  uint64_t *o = (uint64_t *)r;
  for (int i = 0; i < 16; i++)
    o[i] = b->ctx.gpr[regs_map[i]];
  r->rip = b->ctx.rip;
  r->rflags = bt_get_rflags(b);
  return 0;
}

static int bt_set_regs(vmm_vcpu *vcpu, const struct vmm_regs *r) {
  struct bt_vcpu *b = BV(vcpu);
  const uint64_t *in = (const uint64_t *)r;
  for (int i = 0; i < 16; i++)
    b->ctx.gpr[regs_map[i]] = in[i];
  b->ctx.rip = r->rip;
  uint64_t mode_flags = X86_RFLAGS_TF | X86_RFLAGS_AC;
  uint64_t old = b->vflags & mode_flags;
  bt_set_rflags(b, r->rflags);
  if ((b->vflags & mode_flags) != old)
    bt_update_mode(b);
  /* A new RIP abandons any instruction left half-done by an exit. */
  b->pio.valid = false;
  b->mmio.n = 0;
  b->mmio.waiting = false;
  b->halted = false;
  return 0;
}

static int bt_get_sregs(vmm_vcpu *vcpu, struct vmm_sregs *s) {
  struct bt_vcpu *b = BV(vcpu);
  memset(s, 0, sizeof(*s));
  s->es = b->seg[S_ES];
  s->cs = b->seg[S_CS];
  s->ss = b->seg[S_SS];
  s->ds = b->seg[S_DS];
  s->fs = b->seg[S_FS];
  s->gs = b->seg[S_GS];
  s->tr = b->tr;
  s->ldt = b->ldt;
  s->gdt = b->gdt;
  s->idt = b->idt;
  s->cr0 = b->cr0;
  s->cr2 = b->cr2;
  s->cr3 = b->cr3;
  s->cr4 = b->cr4;
  s->cr8 = bt_get_cr8(b);
  s->efer = b->efer;
  s->apic_base = b->apic_base;
  return 0;
}

static int bt_set_sregs(vmm_vcpu *vcpu, const struct vmm_sregs *s) {
  struct bt_vcpu *b = BV(vcpu);
  b->seg[S_ES] = s->es;
  b->seg[S_CS] = s->cs;
  b->seg[S_SS] = s->ss;
  b->seg[S_DS] = s->ds;
  b->seg[S_FS] = s->fs;
  b->seg[S_GS] = s->gs;
  b->tr = s->tr;
  b->ldt = s->ldt;
  b->gdt = s->gdt;
  b->idt = s->idt;
  b->cr0 = s->cr0;
  b->cr2 = s->cr2;
  b->cr3 = s->cr3;
  b->cr4 = s->cr4;
  b->cr8 = s->cr8;
  b->efer = s->efer;
  b->apic_base = s->apic_base;
  b->cpl = (s->cr0 & X86_CR0_PE) ? s->cs.dpl : 0;
  bt_update_mode(b);
  tlb_and_links_flush(b);
  /* EFER.SCE may have changed under inline syscalls: to the dispatcher
     (sys_stale), even from a handler in a callout. */
  if (b->sys_inline)
    atomic_store(&b->inval_pending, true);
  return 0;
}

/* FXSAVE layout offsets. */
#define FX_FCW 0
#define FX_FSW 2
#define FX_FTW 4
#define FX_FOP 6
#define FX_FIP 8
#define FX_FDP 16
#define FX_MXCSR 24
#define FX_ST 32
#define FX_XMM 160

static int bt_get_fpu(vmm_vcpu *vcpu, struct vmm_fpu *f) {
  struct bt_vcpu *b = BV(vcpu);
  const uint8_t *a = b->ctx.fpu;
  memset(f, 0, sizeof(*f));
  f->fcw = b->fcw;
  memcpy(&f->fsw, a + FX_FSW, 2);
  f->ftw = a[FX_FTW];
  memcpy(&f->fop, a + FX_FOP, 2);
  memcpy(&f->fip, a + FX_FIP, 8);
  memcpy(&f->fdp, a + FX_FDP, 8);
  for (int i = 0; i < 8; i++)
    memcpy(f->st[i], a + FX_ST + 16 * i, 10);
  memcpy(f->xmm, a + FX_XMM, sizeof(f->xmm));
  f->mxcsr = bt_guest_mxcsr(b);
  return 0;
}

uint32_t bt_guest_mxcsr(const struct bt_vcpu *b) {
  uint32_t h;
  memcpy(&h, b->ctx.fpu + FX_MXCSR, 4);
  return (h & ~0x1f80u) | (b->mxcsr & 0x1f80u);
}

/* The host runs with every FP exception masked; the guest's masks are
   virtual (docs/bt.md). The control word holds what the x87 unit does
   (fldcw, fldenv, frstor, fxrstor alike): bits 7 and 13-15 do not exist
   and bit 6 reads as 1 (fldcw of 0xffff reads back 0x1f7f on the host,
   as difftest showed). */
void bt_fpu_set_controls(struct bt_vcpu *b, uint16_t fcw, uint32_t mxcsr) {
  fcw = (uint16_t)((fcw & 0x1f3f) | 0x40);
  b->fcw = fcw;
  b->mxcsr = mxcsr;
  uint16_t hfcw = (uint16_t)(fcw | 0x3f);
  uint32_t hmx = mxcsr | 0x1f80;
  memcpy(b->ctx.fpu + FX_FCW, &hfcw, 2);
  memcpy(b->ctx.fpu + FX_MXCSR, &hmx, 4);
}

static int bt_set_fpu(vmm_vcpu *vcpu, const struct vmm_fpu *f) {
  struct bt_vcpu *b = BV(vcpu);
  uint8_t *a = b->ctx.fpu;
  memcpy(a + FX_FSW, &f->fsw, 2);
  a[FX_FTW] = f->ftw;
  memcpy(a + FX_FOP, &f->fop, 2);
  memcpy(a + FX_FIP, &f->fip, 8);
  memcpy(a + FX_FDP, &f->fdp, 8);
  for (int i = 0; i < 8; i++) {
    memset(a + FX_ST + 16 * i, 0, 16);
    memcpy(a + FX_ST + 16 * i, f->st[i], 10);
  }
  memcpy(a + FX_XMM, f->xmm, sizeof(f->xmm));
  bt_fpu_set_controls(b, f->fcw, f->mxcsr);
  return 0;
}

static int bt_get_xsave(vmm_vcpu *vcpu, void *buf) {
  struct bt_vcpu *b = BV(vcpu);
  uint8_t *x = buf;
  memset(x, 0, VMM_XSAVE_SIZE);
  memcpy(x, b->ctx.fpu, 512);
  memcpy(x + FX_FCW, &b->fcw, 2);
  uint32_t mx = bt_guest_mxcsr(b), mxmask = 0xffff;
  memcpy(x + FX_MXCSR, &mx, 4);
  memcpy(x + FX_MXCSR + 4, &mxmask, 4); /* BT's model, not the host's */
  uint64_t bv = X86_XCR0_X87 | X86_XCR0_SSE;
  memcpy(x + 512, &bv, 8);
  return 0;
}

static int bt_set_xsave(vmm_vcpu *vcpu, const void *buf) {
  struct bt_vcpu *b = BV(vcpu);
  const uint8_t *x = buf;
  uint64_t bv, comp;
  memcpy(&bv, x + 512, 8);
  memcpy(&comp, x + 520, 8);
  if (comp != 0 || (bv & ~(X86_XCR0_X87 | X86_XCR0_SSE)))
    return VMM_EINVAL;
  uint16_t fcw = 0x37f;
  uint32_t mxcsr = 0x1f80;
  uint8_t a[512];
  memcpy(a, x, 512);
  if (!(bv & X86_XCR0_X87)) {
    /* x87 in its initial state. */
    memset(a + FX_FSW, 0, 30 - FX_FSW);
    memset(a + FX_ST, 0, 128);
  } else {
    memcpy(&fcw, x + FX_FCW, 2);
  }
  if (!(bv & X86_XCR0_SSE))
    memset(a + FX_XMM, 0, 256);
  memcpy(&mxcsr, x + FX_MXCSR, 4);
  uint32_t mxmask = 0xffff;
  memcpy(a + 28, &mxmask, 4);
  memcpy(b->ctx.fpu, a, 512);
  bt_fpu_set_controls(b, fcw, mxcsr);
  return 0;
}

static int bt_get_xcr0(vmm_vcpu *vcpu, uint64_t *xcr0) {
  *xcr0 = BV(vcpu)->xcr0;
  return 0;
}

static int bt_set_xcr0(vmm_vcpu *vcpu, uint64_t xcr0) {
  if (xcr0 & ~(X86_XCR0_X87 | X86_XCR0_SSE))
    return VMM_EINVAL;
  BV(vcpu)->xcr0 = xcr0;
  return 0;
}

static int bt_get_msrs(vmm_vcpu *vcpu, struct vmm_msr *msrs, size_t n) {
  struct bt_vcpu *b = BV(vcpu);
  uint64_t v[256];
  for (size_t i = 0; i < n; i++)
    if (bt_rdmsr(b, msrs[i].index, &v[i]) < 0)
      return VMM_ENOENT;
  for (size_t i = 0; i < n; i++)
    msrs[i].value = v[i];
  return 0;
}

static int bt_set_msrs(vmm_vcpu *vcpu, const struct vmm_msr *msrs, size_t n) {
  struct bt_vcpu *b = BV(vcpu);
  uint64_t old[256];
  for (size_t i = 0; i < n; i++)
    if (bt_rdmsr(b, msrs[i].index, &old[i]) < 0)
      return VMM_ENOENT;
  for (size_t i = 0; i < n; i++) {
    if (bt_wrmsr(b, msrs[i].index, msrs[i].value) < 0) {
      while (i-- > 0)
        bt_wrmsr(b, msrs[i].index, old[i]);
      return VMM_EINVAL;
    }
  }
  return 0;
}

/* Feature leaves whose bits must stay within what the engine implements. */
static int bt_set_cpuid(vmm_vcpu *vcpu, const struct vmm_cpuid_entry *e,
                        size_t n) {
  struct bt_vm *m = BM(vcpu->vm);
  static const struct {
    uint32_t fn;
    bool ecx_hv; /* leaf 1 ecx bit 31: the hypervisor bit may be set */
  } feat[] = {{1, true}, {7, false}, {0x80000001, false}};
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < VMM__ARRAY_SIZE(feat); k++) {
      if (e[i].function != feat[k].fn || e[i].index != 0)
        continue;
      const struct vmm_cpuid_entry *s =
          vmm__cpuid_find(m->supported, m->nsupported, feat[k].fn, 0);
      uint32_t ecx_ok = s ? s->ecx : 0, edx_ok = s ? s->edx : 0;
      uint32_t ebx_ok = s ? s->ebx : 0;
      if (feat[k].ecx_hv)
        ecx_ok |= 1u << 31;
      if ((e[i].ecx & ~ecx_ok) || (e[i].edx & ~edx_ok) ||
          (feat[k].fn == 7 && (e[i].ebx & ~ebx_ok))) {
        vmm__log(vcpu->vm, VMM_LOG_ERROR,
                 "bt: CPUID leaf 0x%x advertises features the engine does "
                 "not implement",
                 feat[k].fn);
        return VMM_EINVAL;
      }
    }
  }
  /* Paging features the walker honours. */
  struct bt_vcpu *b = BV(vcpu);
  const struct vmm_cpuid_entry *x = vmm__cpuid_find(e, n, 0x80000008, 0);
  b->maxphy = x ? (x->eax & 0xff) : 36;
  if (b->maxphy < 32 || b->maxphy > 52)
    b->maxphy = 36;
  x = vmm__cpuid_find(e, n, 0x80000001, 0);
  b->gbpages = x && (x->edx & (1u << 26));
  return 0;
}

static void counting_on(struct bt_vcpu *b) {
  if (b->counting)
    return;
  b->counting = true;
  b->budget_start = BT_BUDGET_NONE;
  b->ctx.budget = BT_BUDGET_NONE;
  if (!b->ran)
    b->count_valid = true;
  bt_update_mode(b);
}

static int bt_set_debug(vmm_vcpu *vcpu, const struct vmm_debug *dbg) {
  struct bt_vcpu *b = BV(vcpu);
  b->dbg_on = dbg != NULL;
  if (dbg != NULL)
    b->dbg = *dbg;
  else
    memset(&b->dbg, 0, sizeof(b->dbg));
  if (b->dbg_on && (b->dbg.flags & VMM_DEBUG_SINGLESTEP))
    counting_on(b);
  b->bp_skip = false;
  bt_update_mode(b);
  /* Breakpoints end TUs: drop what was translated without them. */
  bt_tc_flush(b);
  return 0;
}

static int bt_set_exception_exits(vmm_vcpu *vcpu, uint32_t mask) {
  BV(vcpu)->exc_mask = mask;
  return 0;
}

/* Fold the budget consumed so far into icount. */
static void count_sync(struct bt_vcpu *b) {
  if (!b->counting)
    return;
  b->icount += (uint64_t)(b->ctx.budget - b->budget_start);
  b->budget_start = b->ctx.budget;
}

static void budget_arm(struct bt_vcpu *b) {
  count_sync(b);
  int64_t bgt = b->limit ? -(int64_t)b->limit : BT_BUDGET_NONE;
  b->ctx.budget = b->budget_start = bgt;
}

static int bt_set_insn_limit(vmm_vcpu *vcpu, uint64_t n) {
  struct bt_vcpu *b = BV(vcpu);
  if (n > (1ull << 61))
    return VMM_EINVAL;
  counting_on(b);
  count_sync(b);
  b->limit = n;
  b->limit_hit = false;
  budget_arm(b);
  return 0;
}

static int bt_insn_count(vmm_vcpu *vcpu, uint64_t *count) {
  struct bt_vcpu *b = BV(vcpu);
  if (!b->ran)
    counting_on(b);
  if (!b->counting || !b->count_valid) {
    vmm__log(vcpu->vm, VMM_LOG_WARN,
             "bt: instruction count unavailable: the vCPU ran without "
             "counting (ask for it before the first run)");
    return VMM_ENOTSUP;
  }
  count_sync(b);
  *count = b->icount;
  return 0;
}

void bt_unretire(struct bt_vcpu *b, unsigned n) {
  if (b->counting)
    b->ctx.budget -= n;
}

/* ------------------------------------------------------------------------ */
/* Kicks                                                                    */

void bt_kick_internal(struct bt_vcpu *b) {
  pthread_mutex_lock(&b->link_lock);
  atomic_store(&b->kicked, true);
  bt_unlink_backward(b);
  bt_jc_flush(b);
  pthread_mutex_unlock(&b->link_lock);
}

static void bt_kick(vmm_vcpu *vcpu) {
  bt_kick_internal(BV(vcpu));
}

/* ------------------------------------------------------------------------ */
/* Callouts and events                                                      */

static uint64_t next_rip(const struct bt_vcpu *b, const struct bt_desc *d) {
  uint64_t n = d->rip + d->len;
  switch (b->key & BT_K_CODE_MASK) {
  case BT_K_CODE16: return n & 0xffff;
  case BT_K_CODE32: return (uint32_t)n;
  default: return n;
  }
}

static uint64_t cur_pc(struct bt_vcpu *b);
static struct bt_frag *xc_find(struct bt_vcpu *b, uint64_t pc);

/*
 * After a callout moved RIP elsewhere (an exception delivered, iret, a far
 * transfer, syscall/sysret): go on in translated code at the new RIP
 * instead of leaving for the dispatcher, when the dispatcher would do
 * nothing else: no exit, event, kick, invalidation or memory change
 * waiting, and none of the modes that need it between TUs (counting,
 * single-step, debugging, an interrupt shadow). The jump cache has the
 * target, as for an indirect jump, or else the dispatcher's cache (which
 * fills the jump cache, flushing it first on a mode change the jump
 * cache does not absorb: bt_jc_same). Returns true with ctx.cont set.
 */
static bool resume_direct(struct bt_vcpu *b) {
  if (b->exit_ready || b->halted || b->cur_invalid || b->counting ||
      b->dbg_on || b->shadow ||
      (b->key & BT_K_SINGLE) || (b->vflags & X86_RFLAGS_TF) ||
      atomic_load_explicit(&b->kicked, memory_order_relaxed) ||
      atomic_load_explicit(&b->inval_pending, memory_order_relaxed) ||
      atomic_load_explicit(&b->vcpu->vm->mem.generation,
                           memory_order_relaxed) != b->mem_gen)
    return false;
  if (vmm__vcpu_nmi_pending(b->vcpu) && !b->nmi_blocked)
    return false;
  if ((b->vflags & X86_RFLAGS_IF) && vmm__vcpu_irq_pending(b->vcpu))
    return false;
  uint64_t pc = cur_pc(b);
  unsigned ji = (unsigned)(pc & (BT_JC_SIZE - 1));
  if (bt_jc_same(b->jc_key, b->key) &&
      b->ctx.jc_npc[ji] == bt_jc_tag(pc, b->key)) {
    b->ctx.cont = b->ctx.jc_host[ji];
  } else {
    struct bt_frag *f = xc_find(b, pc);
    if (f == NULL)
      return false;
    if (!bt_jc_same(b->jc_key, b->key))
      bt_jc_flush(b);
    b->jc_key = b->key;
    bt_jc_fill(b, f);
    b->ctx.cont = bt_tc_addr(&b->tc, f->entry);
  }
  b->vflags &= ~X86_RFLAGS_RF; /* as the dispatcher does on entry */
  return true;
}

static int callout_emul(struct bt_vcpu *b, struct bt_desc *d) {
  bt_unspill(b, d);
  uint32_t key = b->key;
  b->tpr_lowered = false;
  int rc;
  if (d->kind == BT_D_PIO) {
    rc = bt_pio(b, d->arg, d->rip, next_rip(b, d));
  } else {
    b->pio_arg = 0;
    rc = bt_emulate(b, d);
    /* An in/out: its operands go into the descriptor, so later runs skip
       the decode cache and the emulator's dispatch (a fifth of an `in`
       served by a handler). Exact: the decoding depends only on the
       bytes and the fragment's mode. */
    if (b->pio_arg != 0) {
      d->kind = BT_D_PIO;
      d->arg = b->pio_arg;
    }
  }
  if (rc == BT_OK && !b->exit_ready && !d->ends_tu && b->key == key &&
      !b->tpr_lowered && !atomic_load_explicit(&b->kicked, memory_order_relaxed) &&
      b->ctx.rip == next_rip(b, d) && !b->cur_invalid && !b->halted) {
    b->ctx.cont = d->after;
    return 0;
  }
  bt_unretire(b, d->n - d->idx - (rc == BT_OK ? 1u : 0u));
  /* A TU run single-stepped (the guest's TF when it began, which the
     instruction may have cleared) takes its trap in the dispatcher. */
  if (!(key & BT_K_SINGLE) && !b->tpr_lowered && resume_direct(b))
    return 0;
  return 1;
}

/* Called by the gate (glue.S) with the guest state in the context. */
int vmm__bt_callout(struct bt_ctx *ctx) {
  struct bt_vcpu *b = (struct bt_vcpu *)(void *)ctx;
  asan_switch_in(b); /* on the vCPU's stack from here */
  struct bt_desc *d = &b->tc.descs[ctx->arg];
  b->cur = d->frag;
  b->cur_invalid = false;
  int leave;
  switch (d->kind) {
  case BT_D_MEM: leave = bt_mem_miss(b, d); break;
  case BT_D_MEMPOST: leave = bt_mem_post(b, d); break;
  case BT_D_EMUL:
  case BT_D_PIO: leave = callout_emul(b, d); break;
  default:
    bt_unspill(b, d);
    b->ctx.rip = d->rip;
    bt_raise(b, d->arg & 0xff, false, 0);
    bt_unretire(b, d->n - d->idx);
    leave = 1;
    break;
  }
  b->cur = NULL;
  /* A miss acknowledged before it decided (bt_mem_miss): acknowledging
     here would revoke what it decided while translated code goes on to
     use it without a check. It runs no handler: in_tc is still set. Other
     callouts set in_tc again where a handler cleared it (bt_host_call),
     then check the generation (bt_in_tc); while it stayed set, a revoker
     waits for us. */
  if (!leave && d->kind != BT_D_MEM) {
    if (atomic_load_explicit(&b->ctx.in_tc, memory_order_relaxed))
      bt_check_wp(b);
    else
      bt_in_tc(b);
  }
  asan_switch_out(b);
  return leave;
}

/* Deliver a pending NMI or external interrupt if the guest can take it.
   Returns true if one waits behind an interrupt shadow. */
static bool events(struct bt_vcpu *b) {
  vmm_vcpu *v = b->vcpu;
  if (b->shadow && b->ctx.rip != b->shadow_rip)
    b->shadow = false;
  /* The front end's acceptance interface (lib/internal.h): vectors queued
     by vmm_vcpu_inject_irq/nmi and the user-space platform's. */
  if (vmm__vcpu_nmi_pending(v) && !b->nmi_blocked) {
    if (b->shadow)
      return true;
    if (vmm__vcpu_nmi_ack(v)) {
      b->nmi_blocked = true;
      b->halted = false;
      bt_deliver(b, X86_EXC_NMI, BT_EV_NMI, false, 0, b->ctx.rip);
      return false;
    }
  }
  if ((b->vflags & X86_RFLAGS_IF) && vmm__vcpu_irq_pending(v)) {
    if (b->shadow)
      return true;
    /* The INTA cycle: a vector acked here must be delivered now. */
    int vec = vmm__vcpu_irq_ack(v);
    if (vec >= 0) {
      b->halted = false;
      bt_deliver(b, (unsigned)vec & 0xff, BT_EV_EXT, false, 0, b->ctx.rip);
    }
  }
  return false;
}

/* ------------------------------------------------------------------------ */
/* The dispatcher                                                           */

/*
 * Before a host handler runs in a callout. The thread's GS and FS bases
 * are the caller's throughout (translated code addresses the context
 * through RSP alone, glue.S), so only the FPU needs to be made the ABI's.
 */
void bt_host_call(struct bt_vcpu *b) {
  vmm__bt_fpu_host(&b->ctx);
  /* The handler may wait for another vCPU's shootdown (bt_wp_shootdown),
     which must not wait for this one. The callout's return sets in_tc and
     checks the generation again. A release store: a revoker that sees it
     sees every guest write before it. */
  atomic_store_explicit(&b->ctx.in_tc, 0, memory_order_release);
}

static void guest_single_step(struct bt_vcpu *b) {
  b->dr[6] |= 0x4000; /* BS */
  if (b->exc_mask & (1u << X86_EXC_DB)) {
    struct vmm_exit *e = &b->vcpu->exit;
    memset(e, 0, sizeof(*e));
    e->reason = VMM_EXIT_FAULT;
    e->fault.vector = X86_EXC_DB;
    b->exit_ready = true;
    return;
  }
  bt_deliver(b, X86_EXC_DB, BT_EV_EXC, false, 0, b->ctx.rip);
}

/* Exit: fill vcpu->exit and stop the dispatcher. */
static void make_exit(struct bt_vcpu *b, enum vmm_exit_reason r) {
  memset(&b->vcpu->exit, 0, sizeof(b->vcpu->exit));
  b->vcpu->exit.reason = r;
  b->exit_ready = true;
}

static uint64_t cur_pc(struct bt_vcpu *b) {
  uint64_t pc = b->ctx.segbase[S_CS] + b->ctx.rip;
  if ((b->key & BT_K_CODE_MASK) != BT_K_CODE64)
    pc = (uint32_t)pc;
  return pc;
}

/* Find or make the fragment for the current RIP. NULL: an exception was
   raised (state changed, loop again) or an exit is ready. */
static struct bt_frag *lookup_walk(struct bt_vcpu *b, uint64_t pc) {
  uint64_t phys0;
  if (bt_translate(b, pc, BT_X, false, &phys0) < 0)
    return NULL;
  struct bt_frag *f = bt_frag_find(b, pc, phys0 & ~0xfffull);
  if (f && f->phys[1] != ~0ull) {
    uint64_t p1;
    if (bt_translate(b, f->lin[1], BT_X, false, &p1) < 0)
      return NULL;
    if ((p1 & ~0xfffull) != f->phys[1]) {
      /* The second page moved: this translation is stale. */
      bt_invalidate_page(b, f->phys[1]);
      f = NULL;
    }
  }
  if (f == NULL)
    f = bt_translate_tu(b, pc);
  return f;
}

/* Find or make the fragment for the current RIP, through the dispatcher
   cache (bt.h). NULL: as lookup_walk(). */
static struct bt_frag *xc_find(struct bt_vcpu *b, uint64_t pc) {
  unsigned xi = (unsigned)((pc ^ (pc >> 12) ^ b->key) & (BT_XC_SIZE - 1));
  struct bt_frag *c = b->xc[xi].f;
  if (c != NULL && b->xc[xi].pc == pc && c->valid && c->key == b->key &&
      c->cs_base == b->ctx.segbase[S_CS])
    return c;
  return NULL;
}

static struct bt_frag *lookup(struct bt_vcpu *b) {
  uint64_t pc = cur_pc(b);
  unsigned xi = (unsigned)((pc ^ (pc >> 12) ^ b->key) & (BT_XC_SIZE - 1));
  struct bt_frag *c = xc_find(b, pc);
  if (c != NULL)
    return c;
  struct bt_frag *f = lookup_walk(b, pc);
  if (f != NULL) {
    b->xc[xi].pc = pc;
    b->xc[xi].f = f;
  }
  return f;
}

/* Is a hardware breakpoint armed at pc? */
static int hw_bp_at(struct bt_vcpu *b, uint64_t pc) {
  if (!b->dbg_on || !(b->dbg.flags & VMM_DEBUG_HW_BREAKPOINTS))
    return -1;
  for (uint32_t i = 0; i < b->dbg.nr_breakpoints; i++)
    if (b->dbg.breakpoints[i] == pc)
      return (int)i;
  return -1;
}

static bool limit_reached(struct bt_vcpu *b) {
  return b->counting && b->limit && b->ctx.budget >= 0;
}

static void want_single(struct bt_vcpu *b, bool on) {
  bool is = (b->key & BT_K_SINGLE) != 0;
  bool forced = (b->dbg_on && (b->dbg.flags & VMM_DEBUG_SINGLESTEP)) ||
                (b->vflags & X86_RFLAGS_TF);
  if (is != (on || forced)) {
    b->key ^= BT_K_SINGLE;
  }
}

/* Whether translations of syscall and sysret hold MSR values (or assume an
   EFER.SCE) that are no longer the vCPU's. */
static bool sys_stale(const struct bt_vcpu *b) {
  return b->sys_inline &&
         (b->star != b->sys_star || b->lstar != b->sys_lstar ||
          b->sfmask != b->sys_sfmask || !(b->efer & X86_EFER_SCE));
}

static int dispatch(struct bt_vcpu *b, bool one) {
  struct bt_link *pending = NULL;
  bool stepping = b->dbg_on && (b->dbg.flags & VMM_DEBUG_SINGLESTEP);
  bool stepped = false;
  for (;;) {
    if (b->exit_ready)
      return 0;
    if (atomic_load(&b->inval_pending))
      bt_process_invalidations(b);
    uint64_t gen = atomic_load(&b->vcpu->vm->mem.generation);
    if (gen != b->mem_gen) {
      b->mem_gen = gen;
      bt_tc_flush(b);
      bt_tlb_flush(b);
      pending = NULL;
    }
    if (sys_stale(b)) {
      bt_tc_flush(b); /* clears sys_inline */
      pending = NULL;
    }
    if (one && stepped)
      return 0;
    if (stepping && stepped) {
      make_exit(b, VMM_EXIT_DEBUG);
      b->vcpu->exit.debug.vector = X86_EXC_DB;
      b->vcpu->exit.debug.rip = b->ctx.rip;
      b->vcpu->exit.debug.dr6 = 0xffff4ff0; /* BS */
      b->vcpu->exit.debug.dr7 = b->dr[7];
      return 0;
    }
    if (atomic_load(&b->kicked) && !one) {
      pthread_mutex_lock(&b->link_lock);
      atomic_store(&b->kicked, false);
      pthread_mutex_unlock(&b->link_lock);
      make_exit(b, VMM_EXIT_NONE);
      return 0;
    }
    bool shadowed = false;
    if (!one && b->mmio.n > 0 && b->mmio.rip == b->ctx.rip) {
      /* An instruction an MMIO read exit left half done completes, alone,
         before any event is taken (KVM completes it on entry too): a
         handler's own MMIO reads would replace the served ones. */
      shadowed = true;
    } else if (!one) {
      uint64_t nev = b->nevents;
      shadowed = events(b);
      if (b->nevents != nev)
        pending = NULL;
      if (b->exit_ready)
        return 0;
      if (b->halted) {
        make_exit(b, VMM_EXIT_HLT);
        return 0;
      }
    }
    if (limit_reached(b)) {
      b->limit = 0;
      b->limit_hit = true;
      budget_arm(b);
      make_exit(b, VMM_EXIT_INSN_LIMIT);
      return 0;
    }
    if (b->counting && b->limit)
      want_single(b, one || shadowed || -b->ctx.budget < BT_MAX_TU);
    else
      want_single(b, one || shadowed);

    uint64_t pc = cur_pc(b);
    int bp = hw_bp_at(b, pc);
    if (bp >= 0 && !(b->bp_skip && b->bp_skip_rip == b->ctx.rip)) {
      make_exit(b, VMM_EXIT_DEBUG);
      b->vcpu->exit.debug.vector = X86_EXC_DB;
      b->vcpu->exit.debug.rip = b->ctx.rip;
      b->vcpu->exit.debug.dr6 = 0xffff0ff0 | (1u << bp);
      b->vcpu->exit.debug.dr7 = b->dr[7];
      b->bp_skip = true;
      b->bp_skip_rip = b->ctx.rip;
      return 0;
    }
    if (bp >= 0)
      want_single(b, true); /* step over the breakpoint alone */
    b->bp_skip = false;

    uint64_t host = 0;
    unsigned ji = (unsigned)(pc & (BT_JC_SIZE - 1));
    if (!bt_jc_same(b->jc_key, b->key)) {
      bt_jc_flush(b);
      pending = NULL;
    }
    b->jc_key = b->key;
    if (b->ctx.jc_npc[ji] == bt_jc_tag(pc, b->key) && pending == NULL) {
      host = b->ctx.jc_host[ji];
    } else {
      uint64_t flushes = b->tc.flushes;
      struct bt_frag *f = lookup(b);
      if (b->tc.flushes != flushes)
        pending = NULL;
      if (f == NULL) {
        pending = NULL;
        if (b->exit_ready)
          return 0;
        continue; /* an exception was delivered; go on from the handler */
      }
      /* The link leads to its own target only: an event delivered since
         the exit (an interrupt, an exception) moved RIP to a handler. */
      if (pending != NULL && pending->key == f->key &&
          pending->target_rip == f->rip &&
          pending->from->cs_base == f->cs_base)
        bt_link_patch(b, pending, f);
      pending = NULL;
      bt_jc_fill(b, f);
      host = bt_tc_addr(&b->tc, f->entry);
    }

    /* RF suppresses breakpoints for one instruction only. */
    b->vflags &= ~X86_RFLAGS_RF;
    /* The guest's own single-step: a trap after each instruction that
       began with TF set and raised nothing (one-instruction TUs). */
    bool guest_tf = (b->vflags & X86_RFLAGS_TF) != 0;
    uint64_t events_before = b->nevents;
    /* The shadow of sti or mov ss covers one execution of the next
       instruction, not every return to its address (sti; jmp $). An
       instruction in the shadow that sets one (sti) sets it again. */
    bool shadow_entry = b->shadow && b->ctx.rip == b->shadow_rip;
    if (shadow_entry)
      b->shadow = false;
    bt_in_tc(b);
    int reason = vmm__bt_enter(&b->ctx, host);
    atomic_store_explicit(&b->ctx.in_tc, 0, memory_order_release);
    stepped = true;
    switch (reason) {
    case BT_X_LINK: {
      struct bt_link *l = &b->tc.links[b->ctx.arg];
      b->ctx.rip = l->target_rip;
      pending = l;
      break;
    }
    case BT_X_JC: break;
    case BT_X_BUDGET: {
      struct bt_frag *f = &b->tc.frags[b->ctx.arg];
      b->ctx.rip = f->rip;
      stepped = false;
      b->shadow |= shadow_entry; /* nothing ran */
      break;
    }
    case BT_X_CALLOUT:
    default: break;
    }
    /* After the exit is resolved: RIP is then the next instruction's (a
       link exit stores it only above), which the trap frame must hold,
       and the handler, not the link's target, runs next. */
    if (guest_tf && reason != BT_X_BUDGET && b->nevents == events_before &&
        !b->exit_ready && !b->halted) {
      pending = NULL;
      guest_single_step(b);
    }
  }
}

static int bt_run(vmm_vcpu *vcpu) {
  struct bt_vcpu *b = BV(vcpu);
  if (!b->ran) {
    b->ran = true;
    if (!b->counting)
      b->count_valid = false;
  }
  b->exit_ready = false;
  int err = bt_complete_pio(b);
  if (err == 0)
    err = dispatch(b, false);
  vmm__bt_fpu_sync(&b->ctx); /* the caller gets its FPU; the image the guest's */
  count_sync(b);
  if (err == 0 && !b->exit_ready)
    make_exit(b, VMM_EXIT_NONE);
  return err;
}

static int bt_sync(vmm_vcpu *vcpu) {
  struct bt_vcpu *b = BV(vcpu);
  b->exit_ready = false;
  int err = bt_complete_pio(b);
  /* An MMIO read still waiting for its instruction: run just that one. */
  if (err == 0 && b->mmio.n > 0)
    err = dispatch(b, true);
  vmm__bt_fpu_sync(&b->ctx);
  count_sync(b);
  b->exit_ready = false;
  return err;
}

const struct vmm__engine_ops vmm__bt_ops = {
    .kind = VMM_ENGINE_BT,
    .name = "bt",
    .available = bt_available,
    .vm_init = bt_vm_init,
    .vm_fini = bt_vm_fini,
    .slot_add = bt_slot_add,
    .slot_remove = bt_slot_remove,
    .dirty_log_fetch = bt_dirty_log_fetch,
    .irq_line = bt_irq_line,
    .supported_cpuid = bt_supported,
    .vcpu_init = bt_vcpu_init,
    .vcpu_fini = bt_vcpu_fini,
    .get_regs = bt_get_regs,
    .set_regs = bt_set_regs,
    .get_sregs = bt_get_sregs,
    .set_sregs = bt_set_sregs,
    .get_fpu = bt_get_fpu,
    .set_fpu = bt_set_fpu,
    .get_xsave = bt_get_xsave,
    .set_xsave = bt_set_xsave,
    .get_xcr0 = bt_get_xcr0,
    .set_xcr0 = bt_set_xcr0,
    .get_msrs = bt_get_msrs,
    .set_msrs = bt_set_msrs,
    .set_cpuid = bt_set_cpuid,
    .set_debug = bt_set_debug,
    .set_exception_exits = bt_set_exception_exits,
    .set_insn_limit = bt_set_insn_limit,
    .insn_count = bt_insn_count,
    .run = bt_run,
    .sync = bt_sync,
    .kick = bt_kick,
    .mem_written = bt_mem_written,
    .tsc_khz = bt_tsc_khz,
    .guest_tsc = bt_guest_tsc,
};
