/*
 * libvmm - QEMU-compatible firmware configuration device (fw_cfg), the
 * traditional port interface.
 *
 * Selector register at port 0x510 (16-bit writes), data register at 0x511
 * (8-bit reads; as in QEMU, an 8-bit read at either port reads data, and
 * 8-bit writes, ignored since QEMU 2.4, are ignored). Selecting an item sets
 * the data offset to 0; each read returns the next byte, and 0 once past the
 * item's end or for an item that does not exist. Bit 14 of the selector
 * (write channel) is ignored, bit 15 selects the architecture-specific
 * items. There is no DMA interface: FW_CFG_ID reports the traditional
 * interface only.
 *
 * Items provided:
 *   0x0000 FW_CFG_SIGNATURE  "QEMU"
 *   0x0001 FW_CFG_ID         1 (32-bit little endian)
 *   0x0002 FW_CFG_UUID       16 zero bytes
 *   0x0003 FW_CFG_RAM_SIZE   64-bit; default: total RAM of the VM's slots,
 *                            computed when selected
 *   0x0005 FW_CFG_NB_CPUS    16-bit; default: the VM's max_vcpus
 *   0x000f FW_CFG_MAX_CPUS   16-bit, same value
 *   0x0014 FW_CFG_CMDLINE_SIZE  32-bit: strlen(cmdline) + 1   } only with a
 *   0x0015 FW_CFG_CMDLINE_DATA  cmdline and its NUL            } command line
 *   0x0019 FW_CFG_FILE_DIR   the file directory (big endian, QEMU layout),
 *                            sorted by name
 *   0x0020...                files added with vmm_fw_cfg_add_file()
 * and whatever the host sets with vmm_fw_cfg_set_item().
 */
#ifndef LIBVMM_FW_CFG_H
#define LIBVMM_FW_CFG_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Longest file name, without the NUL (QEMU's directory has 56 bytes). */
#define VMM_FW_CFG_NAME_MAX 55
/** Most files one device holds. */
#define VMM_FW_CFG_FILES_MAX 1024

/** fw_cfg configuration; fill with vmm_fw_cfg_config_init(). */
struct vmm_fw_cfg_config {
  size_t size;
  /** Device name. Default "fw-cfg". */
  const char *name;
  /** Selector port; data is base + 1. Default 0x510. */
  uint16_t base;
  /** Kernel command line (copied), or NULL for no command-line items. */
  const char *cmdline;
  /** FW_CFG_NB_CPUS and FW_CFG_MAX_CPUS; 0: the VM's max_vcpus. */
  uint16_t nb_cpus;
  /** FW_CFG_RAM_SIZE; 0: the VM's RAM, computed when the guest asks. */
  uint64_t ram_size;
};

VMM_EXTERN void vmm_fw_cfg_config_init(struct vmm_fw_cfg_config *cfg);

/**
 * Create the device and attach it to vm.
 * @return 0; -VMM_EINVAL for a bad configuration; -VMM_E2BIG for a command
 *         line over 1 MiB; vmm_dev_attach() errors.
 */
VMM_EXTERN int vmm_fw_cfg_create(vmm_vm *vm,
                                 const struct vmm_fw_cfg_config *cfg,
                                 vmm_dev **out);

/**
 * Add a named file ("etc/...", "opt/org.example/..."); data is copied.
 * @param select  receives the file's selector (0x0020 upward, in order of
 *                addition); may be NULL.
 * @return 0; -VMM_EINVAL for a bad device or a name that is empty, too long
 *         or not printable ASCII; -VMM_EEXIST; -VMM_ENOSPC after
 *         VMM_FW_CFG_FILES_MAX files; -VMM_E2BIG for data over 4 GiB - 1.
 * Thread-safe; a guest sees the new directory when it next selects it.
 */
VMM_EXTERN int vmm_fw_cfg_add_file(vmm_dev *dev, const char *name,
                                   const void *data, size_t len,
                                   uint16_t *select);

/**
 * Set (or, with data NULL, remove) a numbered item: key 0x0000-0x001f or
 * 0x8000-0x801f (architecture-specific), e.g. the kernel/initrd keys a
 * loader wants. Replaces a built-in item of the same key. data is copied.
 * @return 0; -VMM_EINVAL for a bad device or key; -VMM_E2BIG.
 */
VMM_EXTERN int vmm_fw_cfg_set_item(vmm_dev *dev, uint16_t key, const void *data,
                                   size_t len);

#ifdef __cplusplus
}
#endif
#endif
