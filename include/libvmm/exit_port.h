/*
 * libvmm - isa-debug-exit compatible exit port.
 *
 * A guest write of value v to the port ends the run of every vCPU with
 * VMM_EXIT_SYSTEM, event VMM_SYSTEM_EXIT_PORT and status (v << 1) | 1
 * (computed in 32 bits), as QEMU's isa-debug-exit does, so test kernels
 * written for QEMU report their result unchanged. Reads return 0.
 */
#ifndef LIBVMM_EXIT_PORT_H
#define LIBVMM_EXIT_PORT_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Exit port configuration; fill with vmm_exit_port_config_init(). */
struct vmm_exit_port_config {
  size_t size;
  /** Device name. Default "exit-port". */
  const char *name;
  /** First port. Default 0xf4. */
  uint16_t port;
  /**
   * Ports claimed: 1, 2 or 4 (default 4). A write of 1, 2 or 4 bytes at
   * port ends the run with the value zero-extended; accesses at the other
   * claimed ports are ignored.
   */
  uint8_t iosize;
};

VMM_EXTERN void vmm_exit_port_config_init(struct vmm_exit_port_config *cfg);

/**
 * Create the exit port and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad configuration (iosize not 1, 2 or 4, or
 *         the range leaving the port space); vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_exit_port_create(vmm_vm *vm,
                                    const struct vmm_exit_port_config *cfg,
                                    vmm_dev **out);

#ifdef __cplusplus
}
#endif
#endif
