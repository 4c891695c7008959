/*
 * libvmm - local APICs (xAPIC), one per vCPU.
 *
 * Part of the user-space interrupt platform (vm.h: VMM_VM_IRQCHIP_USER, or
 * VMM_VM_IRQCHIP on BT), which attaches them as "lapic" by itself; a host
 * may detach that device and attach its own configuration. One device
 * holds the local APICs of every vCPU index of the VM; APIC i belongs to
 * vCPU i (initial APIC ID i) and takes part in delivery once that vCPU
 * exists.
 *
 * The xAPIC registers are memory-mapped at the APIC base (default
 * 0xfee00000, 4 KiB; every vCPU reaches its own APIC there, so keep RAM
 * out of that page). Relocating the base through IA32_APIC_BASE and
 * x2APIC mode are not supported (CPUID does not advertise x2APIC).
 *
 * Registers: ID, version (0x00050014: 6 LVT entries), TPR, APR, PPR, EOI,
 * LDR, DFR (flat and cluster models), SVR (software enable; disabling masks
 * every LVT), ISR/TMR/IRR, ESR (send/receive illegal vector, illegal
 * register address; latched by a write, as on hardware), ICR (fixed,
 * lowest priority, NMI, INIT, INIT de-assert, start-up; physical, logical
 * and shorthand destinations), the LVT entries timer/thermal/performance/
 * LINT0/LINT1/error, and the timer: initial and current count, divide
 * configuration, one-shot, periodic and - where the engine passes the
 * IA32_TSC_DEADLINE MSR to the platform (KVM with user-space MSR exits,
 * BT) - TSC-deadline mode, advertised in CPUID then.
 *
 * Access rules: registers are 32-bit at 16-byte aligned offsets. Reads of
 * 1, 2 or 4 bytes inside a register's dword are served; writes must be
 * 4-byte aligned dwords. Anything else is ignored (reads give 0) and
 * counted ("bad_access"); reserved registers set ESR bit 7 as hardware
 * does. IPIs to APIC IDs that no vCPU has are dropped ("ipi_dropped").
 *
 * After creation and reset each APIC is in its power-on state, except that
 * LINT0 of vCPU 0 is in ExtINT mode, unmasked (virtual-wire mode, as a PC
 * BIOS leaves it), so the PIC reaches vCPU 0 until the guest sets up its
 * APIC. Timers: the bus runs at timer_hz; a periodic timer fires at most
 * every 100 us; ticks the guest could not take because the previous one
 * was still pending are delivered when it acknowledges that one (up to
 * 100 ms worth), so the average rate stays right when the host is late.
 */
#ifndef LIBVMM_LAPIC_H
#define LIBVMM_LAPIC_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Local APIC configuration; fill with vmm_lapic_config_init(). */
struct vmm_lapic_config {
  size_t size;
  /** Device name. Default "lapic". */
  const char *name;
  /** xAPIC MMIO base, 4 KiB aligned. Default 0xfee00000. */
  uint64_t base;
  /** APIC timer input clock in Hz (before the divider), 1 MHz to 10 GHz.
      Default 1 GHz. */
  uint64_t timer_hz;
};

VMM_EXTERN void vmm_lapic_config_init(struct vmm_lapic_config *cfg);

/**
 * Create the local APICs of every vCPU index and attach them to vm.
 * @return 0; -VMM_EINVAL for a bad vm or configuration; -VMM_ENOTSUP when
 *         the VM does not use the user-space platform; -VMM_EEXIST if it
 *         has local APICs already; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_lapic_create(vmm_vm *vm, const struct vmm_lapic_config *cfg,
                                vmm_dev **out);

#ifdef __cplusplus
}
#endif
#endif
