/*
 * libvmm - 8259A programmable interrupt controller pair (PC/AT cascade).
 *
 * Part of the user-space interrupt platform (vm.h: VMM_VM_IRQCHIP_USER, or
 * VMM_VM_IRQCHIP on BT), which attaches one as "pic" by itself; a host may
 * detach that one and attach its own configuration. Only one PIC pair per
 * VM, and only on a VM with the user-space platform.
 *
 * Master at ports 0x20-0x21, slave at 0xa0-0xa1 cascaded on master IRQ 2,
 * ELCR (edge/level control) at 0x4d0-0x4d1. Lines 0-15 of the VM reach IRQ
 * n (line 2 has no PIC input: IRQ 2 is the cascade). The master's INTR
 * output goes to LINT0 of every local APIC (ExtINT in virtual-wire mode),
 * or straight to vCPU 0 when the VM has no local APICs.
 *
 * Model: ICW1-ICW4 (single or cascaded, LTIM, 8086 mode; 8080 mode is
 * treated as 8086), OCW1 (mask), OCW2 (non-specific, specific and
 * rotating EOI, set priority, rotate in automatic-EOI mode), OCW3 (read
 * IRR/ISR, poll, special mask mode), automatic EOI, special fully nested
 * mode, edge and level triggering (per IRQ through the ELCR, or all with
 * LTIM), and spurious IRQ 7 / 15 when an acknowledged request vanished.
 * The state after creation and reset is what a PC BIOS leaves: vectors
 * 0x08-0x0f and 0x70-0x77, every IRQ masked, all edge-triggered.
 */
#ifndef LIBVMM_I8259_H
#define LIBVMM_I8259_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** PIC configuration; fill with vmm_pic_config_init(). */
struct vmm_pic_config {
  size_t size;
  /** Device name. Default "pic". */
  const char *name;
  /** Claim the ELCR ports 0x4d0-0x4d1. Default true; without them every
      IRQ is edge-triggered unless ICW1 selects level mode (LTIM). */
  bool elcr;
};

VMM_EXTERN void vmm_pic_config_init(struct vmm_pic_config *cfg);

/**
 * Create the PIC pair and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad vm or configuration; -VMM_ENOTSUP when
 *         the VM does not use the user-space platform; -VMM_EEXIST if it
 *         has a PIC already; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_pic_create(vmm_vm *vm, const struct vmm_pic_config *cfg,
                              vmm_dev **out);

#ifdef __cplusplus
}
#endif
#endif
