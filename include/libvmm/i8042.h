/*
 * libvmm - i8042 keyboard controller.
 *
 * Enough of the PS/2 controller for guests to probe it and to reboot
 * through it: status/command port 0x64, data port 0x60, the controller
 * self-test (0xAA -> 0x55), interface tests, the command byte, the output
 * port with the A20 gate, and a keyboard that acknowledges the usual
 * commands (reset, identify, LEDs, scan-code set, enable/disable). There
 * is no mouse: commands for the auxiliary device answer with a timeout
 * error so drivers give up at once. The reset line, pulsed by command 0xFE
 * (or any 0xF0-0xFF command with bit 0 clear) or by writing the output port
 * with bit 0 clear, raises VMM_SYSTEM_RESET (see vmm_vm_system_event()).
 * Keyboard data raises IRQ 1, auxiliary data IRQ 12, when enabled in the
 * command byte.
 */
#ifndef LIBVMM_I8042_H
#define LIBVMM_I8042_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** i8042 configuration; fill with vmm_i8042_config_init(). */
struct vmm_i8042_config {
  size_t size;
  /** Device name. Default "i8042". */
  const char *name;
  /** Data and command/status ports. Defaults 0x60 and 0x64. */
  uint16_t data_port, cmd_port;
  /** Keyboard and auxiliary interrupt lines. Defaults 1 and 12. */
  uint32_t kbd_gsi, aux_gsi;
};

VMM_EXTERN void vmm_i8042_config_init(struct vmm_i8042_config *cfg);

/**
 * Create the controller and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad configuration; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_i8042_create(vmm_vm *vm, const struct vmm_i8042_config *cfg,
                                vmm_dev **out);

/**
 * State of the A20 gate as last set through the output port (true:
 * enabled). The library does not mask address line 20: this only reports
 * what the guest asked for. -VMM_EINVAL if dev is not an i8042.
 */
VMM_EXTERN int vmm_i8042_a20(vmm_dev *dev, bool *enabled);

#ifdef __cplusplus
}
#endif
#endif
