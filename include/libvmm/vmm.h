/*
 * libvmm - the core of a virtual machine monitor for x86, as a library.
 *
 * Umbrella header: include this one. See README.md for a tour.
 */
#ifndef LIBVMM_VMM_H
#define LIBVMM_VMM_H

#include "balloon.h"
#include "common.h"
#include "dev.h"
#include "io.h"
#include "loader.h"
#include "loop.h"
#include "mem.h"
#include "mmu.h"
#include "stats.h"
#include "vcpu.h"
#include "virtio.h"
#include "vm.h"

/* Stock devices. */
#include "cmos_rtc.h"
#include "exit_port.h"
#include "fw_cfg.h"
#include "i8042.h"
#include "uart16550.h"

/* The user-space interrupt platform (vm.h: VMM_VM_IRQCHIP_USER). */
#include "i8254.h"
#include "i8259.h"
#include "ioapic.h"
#include "lapic.h"
#include "mptable.h"

#endif
