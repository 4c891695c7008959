/*
 * libvmm - CMOS memory and real-time clock (MC146818 compatible).
 *
 * Index port 0x70 (bit 7 is the NMI-disable bit of PC chipsets: accepted
 * and ignored), data port 0x71, 128 bytes of CMOS memory. Registers 0x00-
 * 0x09 and the century byte 0x32 hold the time, in BCD or binary and 12-
 * or 24-hour format as register B says; register A reports update-in-
 * progress during the last 244 us of every second; register B's SET bit
 * freezes the clock so the guest can set it (to a date in 1900-2199; other
 * values, and malformed BCD, are clamped into range); registers C/D report the
 * periodic, alarm and update-ended interrupts (IRQ 8 when enabled in B;
 * delivered from a timer on the VM's loop, see loop.h) and a valid battery.
 *
 * Memory size bytes are computed from the VM's memory slots on the first
 * guest access after creation or reset (so slots may be added after the
 * device), as PC firmware and QEMU lay them out:
 *   0x15-0x16  base memory in KiB (contiguous RAM from 0, at most 640)
 *   0x17-0x18  extended memory in KiB: contiguous RAM from 1 MiB (max 65535)
 *   0x30-0x31  the same as 0x17-0x18
 *   0x34-0x35  contiguous RAM from 16 MiB below 4 GiB, in 64 KiB units
 *   0x5b-0x5d  contiguous RAM from 4 GiB, in 64 KiB units
 * After that they are ordinary CMOS memory the guest may overwrite.
 */
#ifndef LIBVMM_CMOS_RTC_H
#define LIBVMM_CMOS_RTC_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Clock source: nanoseconds since the Unix epoch (UTC). Called on vCPU
 * threads and the loop thread with the device's lock held; must be
 * thread-safe and must not call into the device.
 */
typedef int64_t (*vmm_cmos_clock_fn)(void *opaque);

/** CMOS/RTC configuration; fill with vmm_cmos_config_init(). */
struct vmm_cmos_config {
  size_t size;
  /** Device name. Default "cmos". */
  const char *name;
  /** Index port; data is base + 1. Default 0x70. */
  uint16_t base;
  /** Interrupt line. Default 8. */
  uint32_t gsi;
  /**
   * Guest time at creation, seconds since the Unix epoch (UTC). 0 (the
   * default) takes the host's clock. The clock then advances with the
   * host's monotonic clock.
   */
  int64_t start_time;
  /** Optional clock source replacing the above (deterministic runs). */
  vmm_cmos_clock_fn clock_fn;
  void *clock_opaque;
};

VMM_EXTERN void vmm_cmos_config_init(struct vmm_cmos_config *cfg);

/**
 * Create the CMOS/RTC and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad configuration; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_cmos_create(vmm_vm *vm, const struct vmm_cmos_config *cfg,
                               vmm_dev **out);

/**
 * Read or write a CMOS byte as the guest would see it (index 0..127;
 * time registers give the current time). Host writes to the time registers
 * set the clock like guest writes do. Thread-safe.
 * @return 0; -VMM_EINVAL for a bad index or a device that is not a CMOS.
 */
VMM_EXTERN int vmm_cmos_read(vmm_dev *dev, uint8_t index, uint8_t *value);
VMM_EXTERN int vmm_cmos_write(vmm_dev *dev, uint8_t index, uint8_t value);

#ifdef __cplusplus
}
#endif
#endif
