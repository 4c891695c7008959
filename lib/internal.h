/*
 * libvmm internal definitions shared by all modules: the VM and vCPU
 * objects, the engine interface, and the internal entry points of the
 * memory, I/O and MMU modules. Nothing here is exported.
 */
#ifndef LIBVMM_INTERNAL_H
#define LIBVMM_INTERNAL_H

#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdatomic.h>

#include "io/internal.h"
#include "loop/internal.h"
#include "mmu/internal.h"

#define VMM__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VMM__ENGINE_REASON_MAX 160
#define VMM__UNUSED(x) ((void)(x))

#if defined(__GNUC__)
#define VMM__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define VMM__LIKELY(x) __builtin_expect(!!(x), 1)
#define VMM__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define VMM__PRINTF(f, a)
#define VMM__LIKELY(x) (x)
#define VMM__UNLIKELY(x) (x)
#endif

/*
 * The engine interface. Each engine provides one static table. The front
 * end (lib/cpu/vm.c, vcpu.c) validates arguments and state before calling
 * in, so engines may assume sane input: registers already checked, the vCPU
 * not running on another thread for state calls, slots not overlapping.
 *
 * run() enters the guest and returns 0 with vcpu->exit filled, or a
 * negative code if the engine failed. VMM_EXIT_NONE means "interrupted,
 * nothing to report" (a kick or a newly pending interrupt): the front end
 * checks for stop requests and calls run() again. On entry, if the previous
 * exit was an I/O or MMIO read, the engine completes the guest instruction
 * with the data in vcpu->exit. For a string access the front end may have
 * advanced exit.io.data and lowered exit.io.count past elements handlers
 * served: the engine completes from the buffer it handed out (the one
 * exit.io.data first pointed to) and its own element count.
 *
 * kick() is thread-safe: it makes a running run() return soon (with
 * VMM_EXIT_NONE) or the next one return at once.
 */
struct vmm__engine_ops {
  enum vmm_engine_kind kind;
  const char *name;
  bool (*available)(const struct vmm_vm_config *cfg);

  int (*vm_init)(vmm_vm *vm);
  void (*vm_fini)(vmm_vm *vm);
  /* Called with the slot table write-locked, after it was changed. */
  int (*slot_add)(vmm_vm *vm, const struct vmm__slot *slot);
  void (*slot_remove)(vmm_vm *vm, const struct vmm__slot *slot);
  /* OR the engine's dirty bits for slot into bitmap and clear them. */
  int (*dirty_log_fetch)(vmm_vm *vm, const struct vmm__slot *slot,
                         uint64_t *bitmap);
  int (*irq_line)(vmm_vm *vm, uint32_t gsi, bool level);
  int (*supported_cpuid)(vmm_vm *vm, struct vmm_cpuid_entry *entries,
                         size_t *n);

  int (*vcpu_init)(vmm_vcpu *vcpu);
  void (*vcpu_fini)(vmm_vcpu *vcpu);
  int (*get_regs)(vmm_vcpu *vcpu, struct vmm_regs *regs);
  int (*set_regs)(vmm_vcpu *vcpu, const struct vmm_regs *regs);
  int (*get_sregs)(vmm_vcpu *vcpu, struct vmm_sregs *sregs);
  int (*set_sregs)(vmm_vcpu *vcpu, const struct vmm_sregs *sregs);
  int (*get_fpu)(vmm_vcpu *vcpu, struct vmm_fpu *fpu);
  int (*set_fpu)(vmm_vcpu *vcpu, const struct vmm_fpu *fpu);
  int (*get_xsave)(vmm_vcpu *vcpu, void *buf);
  int (*set_xsave)(vmm_vcpu *vcpu, const void *buf);
  int (*get_xcr0)(vmm_vcpu *vcpu, uint64_t *xcr0);
  int (*set_xcr0)(vmm_vcpu *vcpu, uint64_t xcr0);
  int (*get_msrs)(vmm_vcpu *vcpu, struct vmm_msr *msrs, size_t n);
  int (*set_msrs)(vmm_vcpu *vcpu, const struct vmm_msr *msrs, size_t n);
  int (*set_cpuid)(vmm_vcpu *vcpu, const struct vmm_cpuid_entry *entries,
                   size_t n);
  int (*set_debug)(vmm_vcpu *vcpu, const struct vmm_debug *dbg);
  int (*set_exception_exits)(vmm_vcpu *vcpu, uint32_t mask);
  int (*set_insn_limit)(vmm_vcpu *vcpu, uint64_t n);
  int (*insn_count)(vmm_vcpu *vcpu, uint64_t *count);

  int (*run)(vmm_vcpu *vcpu);
  /*
   * Optional: finish the guest instruction left half-done by the last
   * I/O or MMIO exit (which a handler already served) without running any
   * further guest code, so the state the caller sees is consistent.
   */
  int (*sync)(vmm_vcpu *vcpu);
  void (*kick)(vmm_vcpu *vcpu);
  /* Optional: the run thread leaves vmm_vcpu_run() (vcpu->lock held). */
  void (*vcpu_leave)(vmm_vcpu *vcpu);
};

extern const struct vmm__engine_ops vmm__kvm_ops;
/* Whether KVM here runs guest CPL0 code natively (measured, kvm/probe.c). */
bool vmm__kvm_runs_kernel_natively(const struct vmm_vm_config *cfg);
/* The same, and the measured cost per loop iteration in *probe_ns (0 if
   none ran). */
bool vmm__kvm_probe(const struct vmm_vm_config *cfg, uint64_t *probe_ns);
#ifdef LIBVMM_HAVE_BT
extern const struct vmm__engine_ops vmm__bt_ops;
#endif

/*
 * Run statistics of a vCPU (lib/cpu/stats.c, include/libvmm/stats.h).
 * Written only by the thread running the vCPU (load + store, no locked
 * instruction), read by any thread; times in TSC cycles.
 */
struct vmm__vcpu_stats {
  atomic_uint_least64_t runs;
  atomic_uint_least64_t exits[VMM_STATS_REASONS];
  atomic_uint_least64_t io_handled, mmio_handled;
  atomic_uint_least64_t run_cycles, guest_cycles, io_cycles, exit_cycles;
};

static inline uint64_t vmm__tsc(void) {
  return __builtin_ia32_rdtsc();
}

/* Cycles from a to b; 0 if the TSC went backwards (a thread that migrated
   between CPUs whose TSCs differ slightly). */
static inline uint64_t vmm__tsc_delta(uint64_t a, uint64_t b) {
  return b > a ? b - a : 0;
}

/* Single-writer counter update: a plain load and store, no lock prefix. */
static inline void vmm__stat_add(atomic_uint_least64_t *c, uint64_t v) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

struct vmm_vm {
  struct vmm_vm_config cfg;
  const struct vmm__engine_ops *ops;
  void *engine; /* engine-private VM state */
  /* Why this engine was chosen (vmm_vm_engine_reason()). */
  char engine_reason[VMM__ENGINE_REASON_MAX];
  /* TSC and CLOCK_MONOTONIC at creation: the statistics' TSC rate. */
  uint64_t stats_tsc0, stats_ns0;

  struct vmm__mem mem;
  struct vmm__iobus pio;
  struct vmm__iobus mmio;

  pthread_mutex_t lock; /* vcpus[], exit handler */
  vmm_exit_handler_fn exit_fn;
  void *exit_opaque;

  vmm_vcpu **vcpus; /* max_vcpus entries */
  atomic_uint running; /* vCPUs inside vmm_vcpu_run() */

  /* Pending system event: (uint64_t)event << 32 | (uint32_t)status, 0 none. */
  atomic_uint_fast64_t system_event;

  /* Attached devices and device-driven interrupt lines (lib/io/dev.c). */
  struct vmm__devs devs;
  /* The VM's event loop and the destroy latch (lib/loop/), under lock. */
  struct vmm__vm_loop loop;
};

struct vmm_vcpu {
  vmm_vm *vm;
  unsigned index;
  void *engine; /* engine-private vCPU state */

  struct vmm_exit exit;

  /* Run-state, protected by lock; kick() takes it to signal safely. */
  pthread_mutex_t lock;
  bool running;
  pthread_t thread;

  atomic_bool stop_requested;
  /* Pending external interrupt: 0 none, else 0x100 | vector. */
  atomic_uint pending_irq;
  atomic_bool pending_nmi;

  /* CPUID table kept by the front end for the walker and introspection. */
  struct vmm_cpuid_entry cpuid[VMM_CPUID_MAX_ENTRIES];
  size_t ncpuid;
  bool has_run;

  /* Library-managed run thread (lib/loop/vcpu_thread.c), under vm->lock. */
  struct vmm__vthread *vthread;

  struct vmm__vcpu_stats stats;
};

/* Monotonic clock in nanoseconds. */
uint64_t vmm__now_ns(void);

/* Logging through the VM's log callback. */
void vmm__log(const vmm_vm *vm, enum vmm_log_level level, const char *fmt, ...)
    VMM__PRINTF(3, 4);
void vmm__logv_cfg(const struct vmm_vm_config *cfg, enum vmm_log_level level,
                   const char *fmt, ...) VMM__PRINTF(3, 4);

/* Architectural checks shared by both engines (lib/cpu/validate.c). */
int vmm__check_regs(const struct vmm_regs *regs);
/* Also checks CR4 and EFER feature bits against the vCPU's CPUID table. */
int vmm__check_sregs(const struct vmm_sregs *sregs,
                     const struct vmm_cpuid_entry *cpuid, size_t ncpuid);
int vmm__check_xcr0(uint64_t xcr0);

/* True if the caller may access the vCPU's state now. */
bool vmm__vcpu_state_accessible(vmm_vcpu *vcpu);

/* The paging state of a vCPU as the walker wants it. */
int vmm__vcpu_paging(vmm_vcpu *vcpu, struct vmm__paging *pg);

/* CPUID lookup in a table (NULL if absent). */
const struct vmm_cpuid_entry *
vmm__cpuid_find(const struct vmm_cpuid_entry *e, size_t n, uint32_t fn,
                uint32_t index);

#endif
