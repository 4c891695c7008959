/*
 * libvmm - 8254 programmable interval timer, with PC port 0x61.
 *
 * The user-space interrupt platform attaches one as "pit" when the VM is
 * created with VMM_VM_PIT (vm.h); it is an ordinary device driving a line,
 * so a host may also attach it to a VM without the platform (the line is
 * then recorded, or given to the host's interrupt handler) or with KVM's
 * in-kernel irqchip - but not together with KVM's in-kernel PIT
 * (-VMM_EBUSY), which owns the same ports inside the kernel.
 *
 * Ports base..base+3 (default 0x40): counters 0-2 and the control word;
 * port 0x61 (system control port B): bit 0 gates counter 2, bit 1 the
 * speaker (stored), bits 2-3 stored, bit 4 toggles every 15.085 us (DRAM
 * refresh, used by delay loops), bit 5 is counter 2's OUT - what Linux's
 * TSC calibration polls. Counter 0's OUT drives line gsi (default 0).
 *
 * Model: modes 0-5 (6 and 7 alias 2 and 3), binary and BCD counting,
 * LSB/MSB/LSB-then-MSB access, counter latch and read-back commands
 * (count and status, the status's OUT and null-count bits), gate inputs
 * (counter 2's from port 0x61; 0 and 1 always enabled). Counts are
 * computed from the VM's clock at 1.193182 MHz when read, so polling
 * guests see exact values. The interrupt line goes high when OUT rises:
 * it stays high in modes 0 and 1 (as OUT does) and is pulsed once per
 * period in modes 2-5. Periodic interrupts come at most every 100 us; with
 * the user-space platform, ticks the guest missed (the host was late, or
 * the previous one was still pending) are delivered as the guest
 * acknowledges the one before (up to 100 ms worth), so the average rate
 * is exact. A tick the controllers drop (a PIC reinitialized, a masked
 * I/O APIC pin) or hold masked does not hold back the next ones once the
 * line is unmasked.
 */
#ifndef LIBVMM_I8254_H
#define LIBVMM_I8254_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** PIT configuration; fill with vmm_pit_config_init(). */
struct vmm_pit_config {
  size_t size;
  /** Device name. Default "pit". */
  const char *name;
  /** First port (counters, then the control word). Default 0x40. */
  uint16_t base;
  /** Line driven by counter 0. Default 0. */
  uint32_t gsi;
  /** Claim port 0x61. Default true. */
  bool port61;
};

VMM_EXTERN void vmm_pit_config_init(struct vmm_pit_config *cfg);

/**
 * Create the PIT and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad vm or configuration; -VMM_EBUSY when
 *         the VM has KVM's in-kernel PIT; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_pit_create(vmm_vm *vm, const struct vmm_pit_config *cfg,
                              vmm_dev **out);

#ifdef __cplusplus
}
#endif
#endif
