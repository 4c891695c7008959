/*
 * libvmm - virtual machines.
 *
 * A VM is created from a configuration filled by vmm_vm_config_init() and
 * adjusted by the caller. It owns everything attached to it: vCPUs, memory
 * slots, I/O handlers and devices; vmm_vm_destroy() releases all of them.
 * VMs are independent: any number, on any mix of engines, may live in one
 * process.
 */
#ifndef LIBVMM_VM_H
#define LIBVMM_VM_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Execution engines. */
enum vmm_engine_kind {
  /** KVM where it runs guest kernel code natively, BT otherwise. */
  VMM_ENGINE_AUTO = 0,
  /** Hardware-assisted virtualization through /dev/kvm. */
  VMM_ENGINE_KVM = 1,
  /** The built-in dynamic binary translator. */
  VMM_ENGINE_BT = 2,
};

/**
 * Flags for struct vmm_vm_config.flags.
 *
 * Interrupt platforms. A VM has one of:
 *   - none (no flag): interrupts are injected per vCPU with
 *     vmm_vcpu_inject_irq(); a HLT returns VMM_EXIT_HLT to the caller;
 *   - the engine's own controllers (VMM_VM_IRQCHIP on KVM): KVM's in-kernel
 *     PIC, IOAPIC and local APICs, and with VMM_VM_PIT its i8254;
 *   - the library's user-space platform (VMM_VM_IRQCHIP_USER, or
 *     VMM_VM_IRQCHIP on an engine without controllers of its own, i.e. BT):
 *     an 8259A pair, an IOAPIC and a local APIC per vCPU attached as the
 *     devices "pic", "ioapic" and "lapic" (i8259.h, ioapic.h, lapic.h), and
 *     with VMM_VM_PIT an 8254 "pit" (i8254.h). It works on both engines.
 *     vCPUs then wait inside vmm_vcpu_run() while halted (VMM_EXIT_HLT is
 *     not returned) and, except vCPU 0, start waiting for INIT/SIPI (see
 *     vmm_vcpu_set_mp_state()). See docs/platform.md.
 */
enum vmm_vm_flags {
  /**
   * Interrupt controllers: the engine's own where it has them (KVM's
   * in-kernel irqchip), the library's user-space platform otherwise (BT).
   * Device interrupt lines (vmm_dev_irq_set()) and vmm_vm_irq_line() reach
   * them.
   */
  VMM_VM_IRQCHIP = 1u << 0,
  /** An i8254 PIT on line 0: KVM's in-kernel PIT with KVM's irqchip, the
      library's otherwise. Requires VMM_VM_IRQCHIP or VMM_VM_IRQCHIP_USER. */
  VMM_VM_PIT = 1u << 1,
  /**
   * The library's user-space interrupt platform on any engine (on KVM
   * instead of the in-kernel irqchip). Implies VMM_VM_IRQCHIP. At most 255
   * vCPUs (xAPIC IDs; 0xff is the broadcast address).
   */
  VMM_VM_IRQCHIP_USER = 1u << 2,
};

/**
 * Flags for struct vmm_vm_config.bt_flags. The BT engine picks some forms
 * of the code it generates from the host CPU; these force the portable
 * form instead, to test every variant on one host or to work around a
 * host whose CPUID misleads. Translated code stays correct either way;
 * only its speed changes.
 */
enum vmm_bt_flags {
  /**
   * Never branch with `loop` in translated code. Used on AMD hosts, where
   * it is one fast instruction that lets a soft-TLB or jump-cache hit fall
   * through (a taken branch per lookup fewer); elsewhere `jrcxz` jumps to
   * the hit.
   */
  VMM_BT_NO_LOOP = 1u << 0,
  /**
   * Never use `pext` in translated code's lookups (shifts and a 256-entry
   * soft TLB instead). Used where pext is fast: not on AMD processors
   * before family 19h, which microcode it.
   */
  VMM_BT_NO_PEXT = 1u << 1,
};

/** Default signal used to kick a vCPU out of KVM_RUN, see kick_signal. */
#define VMM_KICK_SIGNAL_DEFAULT 0
/** kick_signal value that disables signal-based kicks. */
#define VMM_KICK_SIGNAL_NONE (-1)

/**
 * VM configuration. Always fill it with vmm_vm_config_init() first: fields
 * may be added in later versions, and init records the size the caller was
 * compiled with.
 */
struct vmm_vm_config {
  /** Set by vmm_vm_config_init(); do not change. */
  size_t size;
  /** Engine to use. Default VMM_ENGINE_AUTO. */
  enum vmm_engine_kind engine;
  /** Maximum number of vCPUs (1..VMM_MAX_VCPUS). Default 1. */
  unsigned max_vcpus;
  /** enum vmm_vm_flags. Default 0. */
  uint32_t flags;
  /**
   * KVM: the signal used by vmm_vcpu_kick() to interrupt KVM_RUN. The
   * library installs no handler for it: the signal is blocked in threads
   * that run vCPUs and unblocked only inside KVM_RUN (KVM_SET_SIGNAL_MASK),
   * so it interrupts the guest and is then consumed with sigtimedwait().
   * VMM_KICK_SIGNAL_DEFAULT selects SIGRTMIN; VMM_KICK_SIGNAL_NONE disables
   * it, in which case a kick takes effect at the vCPU's next exit.
   */
  int kick_signal;
  /** KVM device path. Default "/dev/kvm". */
  const char *kvm_device;
  /** BT engine: translation cache size in bytes (0 = engine default). */
  size_t bt_cache_size;
  /** Optional diagnostics sink, see vmm_log_fn. */
  vmm_log_fn log_fn;
  void *log_opaque;
  /** Most verbose level passed to log_fn. Default VMM_LOG_WARN. */
  enum vmm_log_level log_level;
  /** BT engine: enum vmm_bt_flags. Default 0 (chosen from the host). */
  uint32_t bt_flags;
};

#define VMM_MAX_VCPUS 256

/** Fill cfg with defaults. Always call before vmm_vm_create(). */
VMM_EXTERN void vmm_vm_config_init(struct vmm_vm_config *cfg);

/**
 * Create a VM.
 *
 * @param cfg  configuration from vmm_vm_config_init(), read during the call
 *             only (strings are copied).
 * @param out  receives the handle.
 * @return 0; -VMM_EINVAL for a bad configuration; -VMM_ENODEV when the
 *         requested engine is not available on this host (for KVM: no
 *         /dev/kvm); -VMM_ENOCAP when KVM lacks a required capability (the
 *         log callback names it); other negative codes on system errors.
 */
VMM_EXTERN int vmm_vm_create(const struct vmm_vm_config *cfg, vmm_vm **out);

/**
 * Destroy a VM and everything it owns. NULL is accepted.
 *
 * Must not be called while a caller-owned thread is inside vmm_vcpu_run()
 * for one of its vCPUs: stop them with vmm_vm_stop() and let the threads
 * return first. In that case nothing is freed and -VMM_EBUSY is returned
 * (as it is when called from one of the VM's I/O handlers). vCPUs running
 * on library threads (vmm_vcpu_start(), loop.h) are stopped and joined
 * here, and their undelivered completions dropped. Devices are destroyed
 * (newest first), then vCPUs, then the VM's own loop if it has one. With
 * a loop the host runs, call this on that loop's thread (see loop.h).
 * @return 0 or -VMM_EBUSY.
 */
VMM_EXTERN int vmm_vm_destroy(vmm_vm *vm);

/** The engine the VM actually runs on (never VMM_ENGINE_AUTO). */
VMM_EXTERN enum vmm_engine_kind vmm_vm_engine(const vmm_vm *vm);

/**
 * Why the VM runs on its engine, for logs and statistics: "requested", or
 * for VMM_ENGINE_AUTO the choice and its grounds (e.g. "auto: kvm emulates
 * guest kernel code (probe loop: 4210 us), so bt"). Valid as long as the
 * VM; "" for NULL.
 */
VMM_EXTERN const char *vmm_vm_engine_reason(const vmm_vm *vm);

/** Engine name: "kvm" or "bt". */
VMM_EXTERN const char *vmm_engine_name(enum vmm_engine_kind kind);

/**
 * Whether an engine can run on this host. For VMM_ENGINE_AUTO, whether any
 * engine can. Does not create a VM.
 */
VMM_EXTERN bool vmm_engine_available(enum vmm_engine_kind kind);

/**
 * Ask every vCPU of the VM to stop: each one inside vmm_vcpu_run() returns
 * with VMM_EXIT_STOPPED soon; one not running returns it from its next run.
 * Thread-safe; may be called from handlers and from other threads.
 */
VMM_EXTERN int vmm_vm_stop(vmm_vm *vm);

/**
 * Raise a system event (enum vmm_system_event in vcpu.h: power off, reset,
 * exit port) with a status. Every vCPU of the VM returns from
 * vmm_vcpu_run() with VMM_EXIT_SYSTEM carrying it, now if running or at its
 * next run, until the host clears it with vmm_vm_system_event_clear(). The
 * first event raised wins until cleared. Thread-safe; meant for devices.
 * @return 0, -VMM_EINVAL for an unknown event, -VMM_EBUSY if another event
 *         is already pending.
 */
VMM_EXTERN int vmm_vm_system_event(vmm_vm *vm, uint32_t event, int32_t status);

/** Clear a pending system event (after handling a reset, for example). */
VMM_EXTERN int vmm_vm_system_event_clear(vmm_vm *vm);

/**
 * Drive an interrupt line (GSI) from the host: the host is one more source
 * on the line, ORed with the devices driving it (vmm_dev_irq_set()), so a
 * host level and a device level never overwrite each other. The line goes
 * to the VM's interrupt controllers: on KVM's in-kernel irqchip, GSIs 0-15
 * reach the PIC and IOAPIC, 16-23 the IOAPIC; on the user-space platform
 * the same (line n is PIC IRQ n for n < 16 except 2, the cascade, and
 * IOAPIC pin n). Thread-safe.
 * @return 0; -VMM_ENOTSUP without interrupt controllers; -VMM_EINVAL for a
 *         bad gsi.
 */
VMM_EXTERN int vmm_vm_irq_line(vmm_vm *vm, uint32_t gsi, bool level);

#ifdef __cplusplus
}
#endif
#endif
