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

#include "io/clock.h"
#include "io/internal.h"
#include "io/irqchip.h"
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
 * VMM_EXIT_NONE) or the next one return at once. It may be called with
 * the front end's interrupt locks held (never the vCPU's own run state),
 * so it must not take locks an engine holds while calling the interrupt
 * acceptance functions below.
 *
 * Interrupts reach engines through the acceptance interface at the end of
 * this file, never through vcpu fields directly.
 */
struct vmm__engine_ops {
  enum vmm_engine_kind kind;
  const char *name;
  /* The engine has interrupt controllers of its own (KVM's in-kernel
     irqchip), which VMM_VM_IRQCHIP selects; without them VMM_VM_IRQCHIP
     selects the library's user-space platform. */
  bool has_irqchip;
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

  /*
   * Optional, for the user-space platform's TSC-deadline timer. tsc_khz
   * returns the guest TSC rate when the engine hands IA32_TSC_DEADLINE
   * (MSR 0x6e0) accesses to vmm__vcpu_msr(), else 0 (the timer mode is
   * then not advertised). guest_tsc reads the guest's TSC now, on the
   * vCPU's thread while it is out of the guest.
   */
  uint64_t (*tsc_khz)(vmm_vm *vm);
  int (*guest_tsc)(vmm_vcpu *vcpu, uint64_t *tsc);
  /*
   * Optional: the host changed [gpa, gpa+len) of guest RAM (vmm_mem_write,
   * vmm_mem_discard).
   * Any thread, no lock held. BT drops translations of code written.
   */
  void (*mem_written)(vmm_vm *vm, vmm_gpa_t gpa, uint64_t len);
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

/* Which interrupt controllers a VM has, decided at creation (vm.h flags). */
enum vmm__irqchip_kind {
  VMM__IRQCHIP_NONE = 0,   /* vmm_vcpu_inject_irq() only */
  VMM__IRQCHIP_ENGINE = 1, /* the engine's own (KVM in-kernel) */
  VMM__IRQCHIP_USER = 2,   /* the library's platform (lib/io/irqchip.c) */
};

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

  /* Interrupt platform (fixed at creation) and the clock of its timers. */
  enum vmm__irqchip_kind irqchip_kind;
  struct vmm__irqchip *irqchip; /* VMM__IRQCHIP_USER only */
  struct vmm__clock *clock;
  uint64_t tsc_khz; /* guest TSC rate if TSC-deadline is offered, else 0 */
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
  /* Interrupt state. Engines use the acceptance functions below, not
     these fields. pending_irq: the vector queued by vmm_vcpu_inject_irq()
     (0 none, else 0x100 | vector); irq_bits: VMM__IRQ_* kept by the
     user-space platform; tpr: its local APIC's TPR, mirrored for CR8. */
  atomic_uint pending_irq;
  atomic_bool pending_nmi;
  atomic_uint irq_bits;
  atomic_uint tpr;

  /* Waiting (user-space platform): a halted vCPU, or an AP waiting for
     INIT/SIPI, sleeps in vmm_vcpu_run() on wait_cond. mp_state is written
     by the run thread (and the host while the vCPU is not running), the
     rest under wait_lock. */
  pthread_mutex_t wait_lock;
  pthread_cond_t wait_cond;
  enum vmm_mp_state mp_state;
  bool waiting;        /* asleep on wait_cond */
  bool halt_if;        /* RFLAGS.IF when it halted */
  uint8_t sipi_vector; /* with VMM__IRQ_SIPI */

  /* CPUID table kept by the front end for the walker and introspection. */
  struct vmm_cpuid_entry cpuid[VMM_CPUID_MAX_ENTRIES];
  size_t ncpuid;
  bool has_run;

  /* Library-managed run thread (lib/loop/vcpu_thread.c), under vm->lock. */
  struct vmm__vthread *vthread;

  struct vmm__vcpu_stats stats;
  /* Port accesses an engine served from inside run() through
     vmm__vcpu_pio_inline(): their handler time, taken out of guest_cycles,
     and the result of one the handlers did not take, which the exit that
     follows reports without dispatching it again (run thread only). */
  uint64_t inline_io_cycles;
  bool inline_io_declined;
  int inline_io_rc;
  /* Which inline accesses are timed (vmm__vcpu_pio_inline): per port (a
     small direct-mapped table), how many timed accesses in a row were
     fast; and the random state choosing the samples. */
  struct vmm__io_time {
    uint16_t port;
    uint16_t fast;
  } io_time[16];
  uint32_t io_rng;
};

/*
 * Serve one port access (not a string one) from inside an engine's run(),
 * with what the run loop does for a VMM_EXIT_IO exit: the registered
 * handler runs on the calling thread and the statistics count an I/O exit
 * served by a handler. Returns 0 when a handler took it (data filled for a
 * read). Otherwise the engine must report the access as a VMM_EXIT_IO exit
 * with these port, size and data: the run loop then hands it to the exit
 * handler or the caller with the handler's result (VMM_IO_DECLINED, or an
 * error it returns from run) without calling the handler a second time.
 */
int vmm__vcpu_pio_inline(vmm_vcpu *vcpu, uint16_t port, void *data,
                         uint32_t size, bool is_write);

/* Monotonic clock in nanoseconds. */
uint64_t vmm__now_ns(void);

/* Asymmetric fences (lib/util/barrier.c): whether membarrier(2)'s
   private expedited command is registered for the process, and the call
   that runs a full fence on every thread of it. */
bool vmm__membarrier_usable(void);
void vmm__membarrier(void);

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

/* The VM's user-space interrupt platform, or NULL. */
static inline struct vmm__irqchip *vmm__irqchip_of(vmm_vm *vm) {
  return vm->irqchip;
}

/* Wake the vCPU if it waits in vmm_vcpu_run() (halted, or for a SIPI) and
   kick it out of the guest unless the calling thread is the one running
   it (which checks again before it enters). Any thread. */
void vmm__vcpu_notify(vmm_vcpu *vcpu);

/* ------------------------------------------------------------------------ */
/*
 * Interrupt acceptance: the contract between engines and the front end.
 *
 * Interrupts come from two sources, both behind these functions: vectors
 * queued with vmm_vcpu_inject_irq()/vmm_vcpu_inject_nmi(), and the
 * user-space platform's local APIC, PIC (ExtINT) and IPIs (docs/platform.md).
 * Engines without an interrupt controller of their own (BT; KVM without
 * its in-kernel irqchip) must
 *
 *  1. At every point where the guest could take an external interrupt
 *     (instruction boundaries with RFLAGS.IF set, no STI/MOV SS shadow, no
 *     event being delivered), call vmm__vcpu_irq_pending(). It is a pair
 *     of relaxed atomic loads, cheap enough for every boundary; a vCPU
 *     whose answer changes from false to true is also kicked (kick()), so
 *     an engine may instead check only when it (re)enters the guest.
 *  2. When it is true and the guest can take it now, call
 *     vmm__vcpu_irq_ack() - the INTA cycle: it returns the vector (moving
 *     it from the local APIC's IRR to its ISR, or acknowledging the PIC)
 *     or -1 when nothing is left after all (a level line dropped; then
 *     deliver nothing). A vector returned must be delivered through the
 *     IDT before the next guest instruction: it cannot be put back.
 *     Acking may run device code (the PIT reinjects ticks on acks), so do
 *     not hold locks kick() takes.
 *  3. NMIs likewise: vmm__vcpu_nmi_pending(), then vmm__vcpu_nmi_ack()
 *     (true: deliver vector 2) when NMIs are not blocked. The engine keeps
 *     NMI blocking until IRET itself.
 *  4. HLT: return VMM_EXIT_HLT with RIP after the HLT (BT may keep its
 *     halted flag; it is cleared by set_regs or by delivering an event).
 *     With the user-space platform the front end does not return it to the
 *     caller: it sleeps until an interrupt is deliverable (RFLAGS.IF was
 *     set at the halt), an NMI/INIT/SIPI arrives, or a kick or system
 *     event; then it calls run() again, and the engine delivers at entry.
 *  5. MSRs: pass every RDMSR/WRMSR to vmm__vcpu_msr() first. 0: done
 *     (value read/written); VMM_IO_DECLINED: not the platform's, handle
 *     it as usual; -VMM_EINVAL: raise #GP. The platform owns
 *     IA32_TSC_DEADLINE (0x6e0).
 *  6. CR8: with the user-space platform, MOV to/from CR8 reads and writes
 *     the local APIC's TPR: vmm__vcpu_tpr() is TPR[7:4] (lock-free),
 *     vmm__vcpu_set_tpr() takes the CR8 value.
 *  7. Provide the ops tsc_khz and guest_tsc for the TSC-deadline timer.
 *
 * KVM without its in-kernel irqchip does exactly this (lib/cpu/kvm/kvm.c:
 * inject_pending() before each KVM_RUN, user-space MSR exits, run->cr8).
 */
#define VMM__IRQ_LAPIC (1u << 0)  /* the local APIC has a vector for it */
#define VMM__IRQ_EXTINT (1u << 1) /* the PIC's INTR reaches it (ExtINT) */
#define VMM__IRQ_INIT (1u << 2)   /* INIT received, not yet processed */
#define VMM__IRQ_SIPI (1u << 3)   /* SIPI received (sipi_vector) */

static inline bool vmm__vcpu_irq_pending(vmm_vcpu *vcpu) {
  return atomic_load_explicit(&vcpu->pending_irq, memory_order_relaxed) != 0 ||
         (atomic_load_explicit(&vcpu->irq_bits, memory_order_relaxed) &
          (VMM__IRQ_LAPIC | VMM__IRQ_EXTINT)) != 0;
}

/* The INTA cycle: the vector to deliver now, or -1. vCPU thread. */
int vmm__vcpu_irq_ack(vmm_vcpu *vcpu);

static inline bool vmm__vcpu_nmi_pending(vmm_vcpu *vcpu) {
  return atomic_load_explicit(&vcpu->pending_nmi, memory_order_relaxed);
}

static inline bool vmm__vcpu_nmi_ack(vmm_vcpu *vcpu) {
  return atomic_exchange(&vcpu->pending_nmi, false);
}

/* The platform's MSRs, see 5. above. vCPU thread. */
int vmm__vcpu_msr(vmm_vcpu *vcpu, uint32_t index, uint64_t *value, bool write);

/* CR8 as the local APIC's TPR, see 6. above. */
static inline uint8_t vmm__vcpu_tpr(vmm_vcpu *vcpu) {
  return (uint8_t)(atomic_load_explicit(&vcpu->tpr, memory_order_relaxed) >> 4);
}
void vmm__vcpu_set_tpr(vmm_vcpu *vcpu, uint64_t cr8);

#endif
