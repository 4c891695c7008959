/*
 * libvmm - firmware tables describing the interrupt platform.
 *
 * A guest kernel learns its processors, IOAPIC and ISA interrupt routing
 * from firmware tables. vmm_mptable_write() writes an Intel MultiProcessor
 * Specification 1.4 table - the floating pointer structure and, right
 * after it, the configuration table - into guest memory. Linux finds it by
 * scanning the first KiB of memory, the last KiB of base memory, the BIOS
 * area 0xf0000-0xfffff and the EBDA; the default address 0xf0000 is in the
 * BIOS area, which libvmm's loader reports as reserved in the e820 map, so
 * the kernel never reuses it.
 *
 * The table lists one enabled processor per vCPU index (APIC ID = index,
 * index 0 the bootstrap processor), one ISA bus, the IOAPIC (if the VM has
 * one: its ID and address), the ISA IRQs 0, 1 and 3-15 on IOAPIC pins of
 * the same number (edge, active high: "conforms to the ISA bus"), ExtINT
 * on every LINT0 and NMI on every LINT1. That is the wiring of both the
 * user-space platform and KVM's in-kernel irqchip (identity routing, IOAPIC
 * ID 0 at 0xfec00000). Lines 16-23 are not described (no PCI bus).
 */
#ifndef LIBVMM_MPTABLE_H
#define LIBVMM_MPTABLE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** MP table configuration; fill with vmm_mptable_config_init(). */
struct vmm_mptable_config {
  size_t size;
  /** Guest-physical address of the floating pointer structure (16-byte
      aligned; the configuration table follows it). Default 0xf0000. */
  vmm_gpa_t addr;
  /** Processors listed (1..the VM's max_vcpus). 0 (default): max_vcpus. */
  unsigned cpus;
  /** OEM ID (up to 8 characters) and product ID (up to 12). Defaults
      "LIBVMM" and "LIBVMM VM". */
  const char *oem_id;
  const char *product_id;
};

VMM_EXTERN void vmm_mptable_config_init(struct vmm_mptable_config *cfg);

/**
 * Write the MP table into guest memory.
 * @param size  if not NULL, receives the bytes written (at cfg->addr).
 * @return 0; -VMM_EINVAL for a bad argument (misaligned address, a table
 *         that would end above 4 GiB, cpus out of range); -VMM_ENOTSUP for a
 *         VM without interrupt controllers (VMM_VM_IRQCHIP); -VMM_ENOMAP
 *         when guest RAM does not cover the table. Thread-safe.
 */
VMM_EXTERN int vmm_mptable_write(vmm_vm *vm,
                                 const struct vmm_mptable_config *cfg,
                                 size_t *size);

#ifdef __cplusplus
}
#endif
#endif
