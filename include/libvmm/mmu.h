/*
 * libvmm - guest virtual-to-physical translation.
 *
 * The walker understands the three x86 paging formats: 32-bit (with 4 MiB
 * pages under CR4.PSE), PAE, and 4-level long-mode paging, with U/S, R/W
 * and NX checks as the processor applies them (CR0.WP, EFER.NXE, CR4.SMEP
 * and SMAP are honoured). It reads the guest's page tables from guest
 * memory; they are untrusted and a table outside RAM is a fault, never a
 * host error. Both engines use the same walker.
 */
#ifndef LIBVMM_MMU_H
#define LIBVMM_MMU_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Access kinds for translation. Combine with VMM_ACCESS_USER for CPL 3. */
enum vmm_access {
  VMM_ACCESS_READ = 0,
  VMM_ACCESS_WRITE = 1u << 0,
  VMM_ACCESS_EXEC = 1u << 1,
  VMM_ACCESS_USER = 1u << 2,
  /** Set accessed (and, for writes, dirty) bits as the processor would. */
  VMM_ACCESS_SET_AD = 1u << 3,
};

/** Result of a translation. */
struct vmm_translation {
  vmm_gpa_t gpa;
  /** Size of the page mapping gva: 4 KiB, 2 MiB, 4 MiB or 1 GiB. */
  uint64_t page_size;
  bool writable, user, executable;
  /** On -VMM_EPAGEFAULT: the #PF error code the access would raise. */
  uint32_t error_code;
};

/**
 * Translate gva for the vCPU's current paging mode (CR0, CR3, CR4, EFER).
 * With paging off, gpa = gva (truncated to 32 bits outside long mode).
 *
 * @param access  enum vmm_access bits.
 * @return 0; -VMM_EPAGEFAULT with out->error_code set when the access
 *         would fault; -VMM_EBUSY if the vCPU is running.
 */
VMM_EXTERN int vmm_vcpu_translate(vmm_vcpu *vcpu, vmm_gva_t gva,
                                  unsigned access, struct vmm_translation *out);

/**
 * Copy between a host buffer and guest virtual memory through the vCPU's
 * page tables, as a debugger would: permission bits (R/W, U/S, NX, SMEP,
 * SMAP) are ignored, no accessed/dirty bits are set, only pages that are not
 * mapped fail. The range may cross pages; every page is translated first,
 * so on failure nothing is copied.
 * @return 0; -VMM_EPAGEFAULT (not mapped, or reserved bits); -VMM_EFAULT
 *         (non-canonical); -VMM_ENOMAP if a page maps outside RAM.
 */
VMM_EXTERN int vmm_vcpu_read_virt(vmm_vcpu *vcpu, vmm_gva_t gva, void *buf,
                                  size_t len);
VMM_EXTERN int vmm_vcpu_write_virt(vmm_vcpu *vcpu, vmm_gva_t gva,
                                   const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
