/*
 * libvmm - I/O APIC (82093AA register model, version 0x20 with an EOI
 * register).
 *
 * Part of the user-space interrupt platform (vm.h: VMM_VM_IRQCHIP_USER, or
 * VMM_VM_IRQCHIP on BT), which attaches one as "ioapic" by itself; a host
 * may detach it and attach its own configuration. One per VM.
 *
 * 24 pins: line n of the VM is pin n. MMIO: IOREGSEL at base + 0x00, IOWIN
 * at base + 0x10, EOI at base + 0x40 (4 KiB claimed). Registers: ID (0x00,
 * 4 bits), version (0x01: 0x00170020), arbitration ID (0x02), and the
 * redirection table (0x10-0x3f, two dwords per pin: vector, delivery mode
 * fixed/lowest priority/SMI/NMI/INIT/ExtINT, physical or logical
 * destination, polarity (kept; lines are logical levels), trigger mode,
 * mask, and the read-only remote IRR). Edge-triggered pins send a message
 * on a rising edge while unmasked; level-triggered pins send while the line
 * is high, unmasked and remote IRR is clear, and set remote IRR until an
 * EOI for their vector (a local APIC's EOI of a level-triggered vector, or
 * the EOI register) clears it, after which a line still high sends again.
 *
 * Guest accesses must be 32-bit (1, 2 and 4 bytes at a register's offset
 * are accepted, as Linux and others only use 32-bit ones); other accesses
 * inside the window are ignored and counted ("bad_access"); registers that
 * do not exist (including redirection entries past pin 23) read as 0 and
 * ignore writes ("bad_register").
 */
#ifndef LIBVMM_IOAPIC_H
#define LIBVMM_IOAPIC_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** IOAPIC configuration; fill with vmm_ioapic_config_init(). */
struct vmm_ioapic_config {
  size_t size;
  /** Device name. Default "ioapic". */
  const char *name;
  /** MMIO base, 4 KiB aligned. Default 0xfec00000. */
  uint64_t base;
  /** Initial APIC ID (0-15). Default 0, as KVM's and QEMU's. */
  uint8_t id;
};

VMM_EXTERN void vmm_ioapic_config_init(struct vmm_ioapic_config *cfg);

/**
 * Create the IOAPIC and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad vm or configuration; -VMM_ENOTSUP when
 *         the VM does not use the user-space platform; -VMM_EEXIST if it
 *         has an IOAPIC already; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_ioapic_create(vmm_vm *vm,
                                 const struct vmm_ioapic_config *cfg,
                                 vmm_dev **out);

#ifdef __cplusplus
}
#endif
#endif
