/*
 * libvmm - virtual CPUs: state, running, exits, interrupts.
 *
 * Threading: a vCPU is run by one thread at a time. Its state (registers,
 * MSRs, CPUID, ...) may be read and written only while no thread is inside
 * vmm_vcpu_run() for it; otherwise those calls return -VMM_EBUSY. The calls
 * marked thread-safe (kick, interrupt and NMI injection) may come from any
 * thread at any time.
 */
#ifndef LIBVMM_VCPU_H
#define LIBVMM_VCPU_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** General-purpose registers, instruction pointer and flags. */
struct vmm_regs {
  uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
  uint64_t rip, rflags;
};

/** A segment register with its hidden descriptor cache. */
struct vmm_segment {
  uint64_t base;
  uint32_t limit; /* byte granular: 0xffffffff for a 4 GiB flat segment */
  uint16_t selector;
  uint8_t type; /* descriptor type field (4 bits) */
  uint8_t present, dpl, db, s, l, g, avl;
  uint8_t unusable;
  uint8_t padding;
};

/** GDTR / IDTR. */
struct vmm_dtable {
  uint64_t base;
  uint16_t limit;
  uint16_t padding[3];
};

/** Segment, descriptor-table and control registers, EFER, APIC base. */
struct vmm_sregs {
  struct vmm_segment cs, ds, es, fs, gs, ss;
  struct vmm_segment tr, ldt;
  struct vmm_dtable gdt, idt;
  uint64_t cr0, cr2, cr3, cr4, cr8;
  uint64_t efer;
  uint64_t apic_base;
};

/** x87 and SSE state (the FXSAVE subset). */
struct vmm_fpu {
  uint8_t st[8][16]; /* ST0-ST7, 80-bit values in the low 10 bytes */
  uint16_t fcw, fsw;
  uint8_t ftw; /* abridged tag word, one bit per register as in FXSAVE */
  uint8_t padding1;
  uint16_t fop;
  uint64_t fip, fdp;
  uint8_t xmm[16][16];
  uint32_t mxcsr;
  uint32_t padding2;
};

/** Size of the XSAVE area exchanged by vmm_vcpu_get_xsave(). */
#define VMM_XSAVE_SIZE 4096

/** A model-specific register. */
struct vmm_msr {
  uint32_t index;
  uint32_t reserved;
  uint64_t value;
};

/** CPUID leaf. flags: VMM_CPUID_INDEXED if ecx (index) selects a sub-leaf. */
struct vmm_cpuid_entry {
  uint32_t function, index, flags;
  uint32_t eax, ebx, ecx, edx;
};
#define VMM_CPUID_INDEXED 1u
/** Most CPUID entries a vCPU holds. */
#define VMM_CPUID_MAX_ENTRIES 256

/**
 * Create vCPU number index (0 <= index < max_vcpus). Its CPUID table starts
 * as the engine's supported set (vmm_vm_get_supported_cpuid()) with the
 * APIC id set to index; registers start in the architectural reset state
 * (real mode, CS:IP = f000:fff0).
 * @return 0; -VMM_EINVAL for a bad index; -VMM_EEXIST if it exists.
 */
VMM_EXTERN int vmm_vcpu_create(vmm_vm *vm, unsigned index, vmm_vcpu **out);

/** The vCPU with this index, or NULL. */
VMM_EXTERN vmm_vcpu *vmm_vm_vcpu(vmm_vm *vm, unsigned index);
VMM_EXTERN vmm_vm *vmm_vcpu_vm(vmm_vcpu *vcpu);
VMM_EXTERN unsigned vmm_vcpu_index(const vmm_vcpu *vcpu);

/*
 * Register access. Set functions validate what they are given and reject
 * architecturally invalid values with -VMM_EINVAL (reserved RFLAGS, CR0,
 * CR4 or EFER bits; CR0.PG without CR0.PE; long mode without PAE; EFER.LMA
 * inconsistent with LME and PG; a 64-bit code segment with D set; ...), so
 * both engines accept exactly the same states. An engine that cannot hold
 * a valid state returns -VMM_ENOTSUP and keeps the previous one (KVM on a
 * PVM host, for example, has no paging outside long mode).
 */
VMM_EXTERN int vmm_vcpu_get_regs(vmm_vcpu *vcpu, struct vmm_regs *regs);
VMM_EXTERN int vmm_vcpu_set_regs(vmm_vcpu *vcpu, const struct vmm_regs *regs);
VMM_EXTERN int vmm_vcpu_get_sregs(vmm_vcpu *vcpu, struct vmm_sregs *sregs);
VMM_EXTERN int vmm_vcpu_set_sregs(vmm_vcpu *vcpu,
                                  const struct vmm_sregs *sregs);
VMM_EXTERN int vmm_vcpu_get_fpu(vmm_vcpu *vcpu, struct vmm_fpu *fpu);
VMM_EXTERN int vmm_vcpu_set_fpu(vmm_vcpu *vcpu, const struct vmm_fpu *fpu);

/**
 * XSAVE area in the standard (non-compacted) format, VMM_XSAVE_SIZE bytes.
 * @return 0, -VMM_EINVAL if size < VMM_XSAVE_SIZE.
 */
VMM_EXTERN int vmm_vcpu_get_xsave(vmm_vcpu *vcpu, void *buf, size_t size);
VMM_EXTERN int vmm_vcpu_set_xsave(vmm_vcpu *vcpu, const void *buf, size_t size);

/** XCR0 (extended control register 0). set rejects invalid combinations. */
VMM_EXTERN int vmm_vcpu_get_xcr0(vmm_vcpu *vcpu, uint64_t *xcr0);
VMM_EXTERN int vmm_vcpu_set_xcr0(vmm_vcpu *vcpu, uint64_t xcr0);

/**
 * Read or write n MSRs. All or nothing: an MSR the engine does not know
 * gives -VMM_ENOENT and nothing is written.
 */
VMM_EXTERN int vmm_vcpu_get_msrs(vmm_vcpu *vcpu, struct vmm_msr *msrs,
                                 size_t n);
VMM_EXTERN int vmm_vcpu_set_msrs(vmm_vcpu *vcpu, const struct vmm_msr *msrs,
                                 size_t n);

/**
 * The vCPU's CPUID table. get writes up to *n entries and sets *n to the
 * table size (-VMM_E2BIG if the array was too small). set replaces the
 * table; on KVM it must be called before the vCPU first runs (-VMM_ESTATE
 * otherwise). Entries the engine cannot honour are rejected with
 * -VMM_EINVAL (n == 0 or n > VMM_CPUID_MAX_ENTRIES too).
 */
VMM_EXTERN int vmm_vcpu_get_cpuid(vmm_vcpu *vcpu,
                                  struct vmm_cpuid_entry *entries, size_t *n);
VMM_EXTERN int vmm_vcpu_set_cpuid(vmm_vcpu *vcpu,
                                  const struct vmm_cpuid_entry *entries,
                                  size_t n);

/** CPUID leaves the VM's engine supports, same convention as get_cpuid. */
VMM_EXTERN int vmm_vm_get_supported_cpuid(vmm_vm *vm,
                                          struct vmm_cpuid_entry *entries,
                                          size_t *n);

/** Single registers, for scripting. */
enum vmm_reg {
  VMM_REG_RAX, VMM_REG_RBX, VMM_REG_RCX, VMM_REG_RDX,
  VMM_REG_RSI, VMM_REG_RDI, VMM_REG_RSP, VMM_REG_RBP,
  VMM_REG_R8, VMM_REG_R9, VMM_REG_R10, VMM_REG_R11,
  VMM_REG_R12, VMM_REG_R13, VMM_REG_R14, VMM_REG_R15,
  VMM_REG_RIP, VMM_REG_RFLAGS,
  VMM_REG_CR0, VMM_REG_CR2, VMM_REG_CR3, VMM_REG_CR4, VMM_REG_CR8,
  VMM_REG_EFER,
  VMM_REG__COUNT
};
/** Read/write one register (same validation as the bulk setters). */
VMM_EXTERN int vmm_vcpu_reg_read(vmm_vcpu *vcpu, enum vmm_reg reg,
                                 uint64_t *value);
VMM_EXTERN int vmm_vcpu_reg_write(vmm_vcpu *vcpu, enum vmm_reg reg,
                                  uint64_t value);

/* ------------------------------------------------------------------------ */
/* Exits                                                                    */

enum vmm_exit_reason {
  VMM_EXIT_NONE = 0,
  /** Port I/O no registered handler claimed. */
  VMM_EXIT_IO,
  /** MMIO access no registered handler claimed. */
  VMM_EXIT_MMIO,
  /** The guest executed HLT with interrupts unable to wake it here
      (never with the user-space platform: the vCPU waits instead). */
  VMM_EXIT_HLT,
  /** Triple fault or other shutdown condition. The vCPU state is kept. */
  VMM_EXIT_SHUTDOWN,
  /** A guest exception selected with vmm_vcpu_set_exception_exits(), or
      one the engine could not deliver. */
  VMM_EXIT_FAULT,
  /** Single step or breakpoint, see vmm_vcpu_set_debug(). */
  VMM_EXIT_DEBUG,
  /** The engine failed; the vCPU cannot continue. */
  VMM_EXIT_INTERNAL_ERROR,
  /** vmm_vcpu_kick() / vmm_vm_stop() was honoured. Always returns to the
      caller; the exit handler does not see it. */
  VMM_EXIT_STOPPED,
  /** The instruction limit set with vmm_vcpu_set_insn_limit() was hit. */
  VMM_EXIT_INSN_LIMIT,
  /** A system event ended the run (power off, reset, exit port), see
      vmm_vm_system_event(). Like STOPPED, always returned to the caller. */
  VMM_EXIT_SYSTEM,
};

/** Events carried by VMM_EXIT_SYSTEM. */
enum vmm_system_event {
  VMM_SYSTEM_POWEROFF = 1,
  VMM_SYSTEM_RESET = 2,
  /** A test exit port was written: status is the exit status. */
  VMM_SYSTEM_EXIT_PORT = 3,
};

/** Internal-error codes in exit.internal.code. */
enum vmm_internal_error {
  VMM_INTERNAL_UNKNOWN = 0,
  /** The engine could not emulate an instruction. */
  VMM_INTERNAL_EMULATION = 1,
  /** KVM refused to enter the guest (invalid state). */
  VMM_INTERNAL_ENTRY_FAILED = 2,
  /** An exception occurred while delivering another. */
  VMM_INTERNAL_DELIVERY = 3,
  /** Unexpected exit reason from the engine. */
  VMM_INTERNAL_UNEXPECTED = 4,
};

/**
 * The exit record, owned by the vCPU and valid until its next run. For an
 * I/O or MMIO read the caller stores the value in data before running again;
 * the engine completes the guest instruction with it.
 */
struct vmm_exit {
  enum vmm_exit_reason reason;
  uint32_t padding;
  union {
    struct {
      uint16_t port;
      uint8_t size; /* 1, 2 or 4 */
      uint8_t is_write;
      uint32_t count; /* > 1 for string instructions */
      uint8_t *data;  /* count * size bytes */
    } io;
    struct {
      vmm_gpa_t gpa;
      uint8_t size; /* 1, 2, 4 or 8 */
      uint8_t is_write;
      uint8_t padding[6];
      uint8_t data[8];
    } mmio;
    struct {
      uint8_t vector;
      uint8_t has_error_code;
      uint16_t padding;
      uint32_t error_code;
      uint64_t cr2; /* for #PF */
    } fault;
    struct {
      uint8_t vector; /* 1 (#DB) or 3 (#BP) */
      uint8_t padding[7];
      uint64_t rip;
      uint64_t dr6, dr7;
    } debug;
    struct {
      uint32_t code; /* enum vmm_internal_error */
      uint32_t engine_code;
      uint64_t data[4];
    } internal;
    struct {
      uint32_t event; /* enum vmm_system_event */
      int32_t status;
    } system;
    uint64_t raw[8];
  };
};

/**
 * What the exit handler asks for: resume the guest, or return the exit to
 * the caller of vmm_vcpu_run().
 */
enum vmm_exit_action {
  VMM_EXIT_ACTION_RESUME = 0,
  VMM_EXIT_ACTION_RETURN = 1,
};

/**
 * Exit handler, set per VM with vmm_vm_set_exit_handler(). Called on the
 * thread running the vCPU for every exit not consumed by a registered I/O or
 * MMIO handler (except VMM_EXIT_STOPPED). It may change the vCPU's state and
 * fill exit->io.data / exit->mmio.data for reads before resuming.
 */
typedef enum vmm_exit_action (*vmm_exit_handler_fn)(vmm_vcpu *vcpu,
                                                    struct vmm_exit *exit,
                                                    void *opaque);

/** Set (or clear, with fn NULL) the VM's exit handler. */
VMM_EXTERN int vmm_vm_set_exit_handler(vmm_vm *vm, vmm_exit_handler_fn fn,
                                       void *opaque);

/**
 * Run the vCPU until an exit must be returned: one no handler consumed, one
 * the exit handler returned, or a stop request. Port I/O and MMIO to
 * registered ranges are handled inside without returning.
 *
 * @param exit  if not NULL, receives a pointer to the vCPU's exit record.
 * @return 0 with the exit record filled; -VMM_EBUSY if another thread is
 *         running this vCPU; a negative code if the engine failed or a
 *         handler returned an error (its code is passed through).
 */
VMM_EXTERN int vmm_vcpu_run(vmm_vcpu *vcpu, struct vmm_exit **exit);

/** The vCPU's exit record (the last exit). */
VMM_EXTERN struct vmm_exit *vmm_vcpu_exit(vmm_vcpu *vcpu);

/**
 * Make the vCPU return from vmm_vcpu_run() with VMM_EXIT_STOPPED as soon as
 * possible. If it is not running, its next run returns at once. Thread-safe
 * and async-signal-unsafe.
 */
VMM_EXTERN int vmm_vcpu_kick(vmm_vcpu *vcpu);

/**
 * Queue an external interrupt with this vector (32..255) for the vCPU; it is
 * delivered when the guest can take it (RFLAGS.IF set, no interrupt
 * shadow). One interrupt can be pending at a time: -VMM_EBUSY otherwise.
 * Not available with the engine's irqchip (KVM's, VMM_VM_IRQCHIP): use
 * vmm_vm_irq_line(), -VMM_ENOTSUP. With the user-space platform it acts as
 * a direct INTR: taken before the local APIC's vectors, it bypasses the
 * APIC (no ISR bit, no EOI). Thread-safe: a running (or halted) vCPU is
 * interrupted to take it.
 */
VMM_EXTERN int vmm_vcpu_inject_irq(vmm_vcpu *vcpu, uint8_t vector);

/** Queue a non-maskable interrupt. Thread-safe. */
VMM_EXTERN int vmm_vcpu_inject_nmi(vmm_vcpu *vcpu);

/** Multiprocessor run states (user-space interrupt platform). */
enum vmm_mp_state {
  /** Runs guest code. */
  VMM_MP_RUNNABLE = 0,
  /** Executed HLT: waits inside vmm_vcpu_run() for an interrupt it can
      take (RFLAGS.IF was set at the halt), an NMI, INIT or SIPI. */
  VMM_MP_HALTED = 1,
  /** After INIT (or creation, for vCPUs other than 0): waits for a
      start-up IPI, which starts it in real mode at vector << 12. */
  VMM_MP_WAIT_SIPI = 2,
};

/**
 * Read or set the vCPU's run state. With the user-space platform vCPU 0
 * starts RUNNABLE and the others WAIT_SIPI, as processors after a reset: a
 * guest kernel starts them with INIT/SIPI IPIs. A host that sets up an AP
 * itself makes it RUNNABLE here. While the vCPU is not running only
 * (-VMM_EBUSY).
 * @return 0; -VMM_ENOTSUP without the user-space platform; -VMM_EINVAL.
 */
VMM_EXTERN int vmm_vcpu_get_mp_state(vmm_vcpu *vcpu, enum vmm_mp_state *state);
VMM_EXTERN int vmm_vcpu_set_mp_state(vmm_vcpu *vcpu, enum vmm_mp_state state);

/** Debug controls for vmm_vcpu_set_debug(). */
enum vmm_debug_flags {
  /** Exit with VMM_EXIT_DEBUG after every guest instruction. */
  VMM_DEBUG_SINGLESTEP = 1u << 0,
  /** Exit on INT3 instead of delivering #BP to the guest. */
  VMM_DEBUG_SW_BREAKPOINTS = 1u << 1,
  /** Use the hardware breakpoints in struct vmm_debug. */
  VMM_DEBUG_HW_BREAKPOINTS = 1u << 2,
};

struct vmm_debug {
  uint32_t flags; /* enum vmm_debug_flags */
  uint32_t padding;
  /** Execution breakpoints (linear addresses) when HW_BREAKPOINTS. */
  uint64_t breakpoints[4];
  uint32_t nr_breakpoints;
  uint32_t padding2;
};

/** Configure debug exits. NULL disables them. */
VMM_EXTERN int vmm_vcpu_set_debug(vmm_vcpu *vcpu, const struct vmm_debug *dbg);

/**
 * Report the exceptions whose vector bit is set in mask as VMM_EXIT_FAULT
 * instead of delivering them to the guest. The BT engine supports every
 * vector; KVM supports #DB (1) and #BP (3) only and returns -VMM_ENOTSUP for
 * other bits.
 */
VMM_EXTERN int vmm_vcpu_set_exception_exits(vmm_vcpu *vcpu, uint32_t mask);

/*
 * Instruction counting (BT engine; KVM returns -VMM_ENOTSUP for both calls
 * below). Counting costs a check per block of translated code, so a vCPU
 * runs without it until asked: calling vmm_vcpu_set_insn_limit(),
 * vmm_vcpu_insn_count(), or vmm_vcpu_set_debug() with VMM_DEBUG_SINGLESTEP
 * switches the vCPU to counting mode for good. Each iteration of a rep
 * string instruction counts as one instruction (a rep with a zero count
 * counts once); interrupts and exceptions delivered do not count, INT n
 * and INT3 do. In counting mode RDTSC is derived from the count, so runs
 * with the same inputs are identical. See docs/bt.md.
 */

/**
 * Stop with VMM_EXIT_INSN_LIMIT after at most n more retired guest
 * instructions; 0 removes the limit. The limit is exact from the moment it
 * is set (RIP is at the first instruction not executed, a rep string
 * instruction possibly half done) and is spent once reached: the next run
 * goes on without a limit unless another is set.
 * @return 0; -VMM_EINVAL for n > 2^61; -VMM_ENOTSUP on KVM.
 */
VMM_EXTERN int vmm_vcpu_set_insn_limit(vmm_vcpu *vcpu, uint64_t n);

/**
 * Exact number of guest instructions retired by this vCPU since it was
 * created. Available when counting was switched on before the vCPU's
 * first run (calling this function before it is enough).
 * @return 0; -VMM_ENOTSUP if the vCPU already ran without counting (the
 *         count would be incomplete; a diagnostic says so) or on KVM.
 */
VMM_EXTERN int vmm_vcpu_insn_count(vmm_vcpu *vcpu, uint64_t *count);

/* ------------------------------------------------------------------------ */
/* Mode helpers                                                             */

enum vmm_cpu_mode {
  /** 16-bit real mode, all segment bases and selectors 0. */
  VMM_MODE_REAL = 0,
  /** 32-bit protected mode, flat 4 GiB segments, paging off. */
  VMM_MODE_PROT32 = 1,
  /** 64-bit long mode with 4-level identity page tables. */
  VMM_MODE_LONG64 = 2,
};

/**
 * Mode setup. PROT32 and LONG64 need guest memory for their tables at
 * `tables` (page aligned): a GDT with flat code/data segments for CPL 0 and
 * 3 and a 64-bit TSS; for LONG64 also the page tables identity-mapping
 * [0, identity_size) with 2 MiB pages. vmm_mode_tables_size() tells how many
 * bytes that takes.
 */
struct vmm_mode_setup {
  enum vmm_cpu_mode mode;
  /** Privilege level to run at: 0 or 3. For 3, RFLAGS.IOPL is set to 3 so
      port I/O still reaches the host, and pages are user-accessible. */
  unsigned cpl;
  /** Guest-physical address of the tables (PROT32, LONG64). */
  vmm_gpa_t tables;
  /** LONG64: bytes to identity-map, rounded up to 1 GiB (0 = 4 GiB). */
  uint64_t identity_size;
  /** Stack pointer for privilege changes to CPL 0 (TSS.RSP0). */
  uint64_t kernel_stack;
};

/** Bytes of guest memory vmm_vcpu_set_mode() writes at setup->tables. */
VMM_EXTERN uint64_t vmm_mode_tables_size(const struct vmm_mode_setup *setup);

/**
 * Put the vCPU into a mode: writes the tables to guest memory, then sets
 * segment, control and descriptor-table registers and EFER. General
 * registers other than RFLAGS are left alone; RFLAGS becomes 0x2 (IOPL 3 for
 * CPL 3).
 * @return 0; -VMM_EINVAL for a bad mode or cpl; -VMM_EALIGN for unaligned
 *         tables; -VMM_ENOMAP if the tables do not fit in guest memory.
 */
VMM_EXTERN int vmm_vcpu_set_mode(vmm_vcpu *vcpu,
                                 const struct vmm_mode_setup *setup);

#ifdef __cplusplus
}
#endif
#endif
