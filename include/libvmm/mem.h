/*
 * libvmm - guest physical memory.
 *
 * Guest RAM is a set of slots: non-overlapping, page-aligned guest-physical
 * ranges, each backed either by memory the library allocates (a memfd mapped
 * shared, so it can later be shared, snapshotted and have holes punched) or
 * by memory the caller provides. Addresses not covered by a slot are MMIO:
 * guest accesses there reach the MMIO bus (see io.h).
 */
#ifndef LIBVMM_MEM_H
#define LIBVMM_MEM_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Guest page size used by slots and the dirty log. */
#define VMM_PAGE_SIZE 4096u

/** Flags for vmm_mem_slot_add(). */
enum vmm_mem_flags {
  /** Guest writes are not stored; on both engines they become MMIO exits. */
  VMM_MEM_READONLY = 1u << 0,
  /** Track pages written by the guest, see vmm_mem_dirty_log_get(). */
  VMM_MEM_DIRTY_LOG = 1u << 1,
  /**
   * Library-allocated memory only: private anonymous memory that the kernel
   * is asked to back with transparent huge pages (MADV_HUGEPAGE, as QEMU
   * backs guest RAM), instead of a memfd. Where the host enables THP
   * ("always" or "madvise" in /sys/kernel/mm/transparent_hugepage/enabled)
   * first touches and host TLB misses cost less; shared memory (a memfd)
   * gets huge pages only where shmem_enabled allows them. The slot has no
   * fd (vmm_mem_slot_info() reports -1), so it cannot be mapped elsewhere,
   * and KSM can merge it (vmm_mem_slot_set_mergeable()).
   */
  VMM_MEM_HUGEPAGES = 1u << 2,
};

/** Upper bound on the number of slots of one VM. */
#define VMM_MEM_MAX_SLOTS 64

/**
 * Add a memory slot.
 *
 * @param gpa    first guest-physical address, page aligned.
 * @param size   size in bytes, page aligned, non-zero; gpa + size must not
 *               exceed 2^52 (the architectural physical address limit).
 *               Engines may allow less: KVM stops at the host's physical
 *               address width and refuses the slot with its own error.
 * @param host   NULL to let the library allocate zeroed memory (memfd), or a
 *               page-aligned caller mapping of at least size bytes that
 *               stays valid until the slot is removed or the VM destroyed.
 * @param flags  enum vmm_mem_flags (VMM_MEM_HUGEPAGES only with host NULL).
 * @param slot   receives the slot id (may be NULL).
 * @return 0; -VMM_EALIGN for unaligned gpa, size or host; -VMM_EINVAL for a
 *         zero size, an overflowing range, unknown flags or
 *         VMM_MEM_HUGEPAGES with caller memory; -VMM_EOVERLAP if
 *         the range overlaps an existing slot; -VMM_ENOSPC when the VM has
 *         VMM_MEM_MAX_SLOTS slots; system errors from memfd/mmap.
 * May be called while vCPUs run.
 */
VMM_EXTERN int vmm_mem_slot_add(vmm_vm *vm, vmm_gpa_t gpa, uint64_t size,
                                void *host, uint32_t flags, uint32_t *slot);

/**
 * Remove a slot; library-allocated memory is unmapped.
 * @return 0; -VMM_ENOENT for an unknown id; -VMM_EBUSY while any vCPU of the
 *         VM is inside vmm_vcpu_run() (engines may hold translations of it).
 */
VMM_EXTERN int vmm_mem_slot_remove(vmm_vm *vm, uint32_t slot);

/** Description of a slot. */
struct vmm_mem_slot_info {
  uint32_t id;
  uint32_t flags;
  vmm_gpa_t gpa;
  uint64_t size;
  /** Host mapping of the slot's first byte. */
  void *host;
  /** memfd behind a library-allocated slot, -1 for caller memory and for
      VMM_MEM_HUGEPAGES slots. */
  int fd;
};

/** Describe slot id. @return 0 or -VMM_ENOENT. */
VMM_EXTERN int vmm_mem_slot_info(vmm_vm *vm, uint32_t slot,
                                 struct vmm_mem_slot_info *info);

/**
 * List slots in increasing gpa order. Writes up to *count entries and sets
 * *count to the number of slots. @return 0, or -VMM_E2BIG if the array was
 * too small (the first entries are still filled).
 */
VMM_EXTERN int vmm_mem_slot_list(vmm_vm *vm, struct vmm_mem_slot_info *infos,
                                 size_t *count);

/**
 * Translate a guest-physical range to a host pointer. The whole range
 * [gpa, gpa+len) must lie inside one slot. The pointer stays valid until the
 * slot is removed.
 * @return 0; -VMM_ENOMAP if any byte is outside memory or the range crosses
 *         a slot boundary; -VMM_EINVAL for len 0 or overflow.
 */
VMM_EXTERN int vmm_mem_gpa_to_hva(vmm_vm *vm, vmm_gpa_t gpa, uint64_t len,
                                  void **hva);

/**
 * Copy between guest memory and a host buffer. The range may span adjacent
 * slots but every byte must be backed by a slot (read-only slots included:
 * host writes to them are allowed; the flag only concerns the guest). Host
 * writes are recorded in the dirty log of dirty-logged slots.
 * @return 0 or -VMM_ENOMAP (nothing is copied then).
 */
VMM_EXTERN int vmm_mem_read(vmm_vm *vm, vmm_gpa_t gpa, void *buf, size_t len);
VMM_EXTERN int vmm_mem_write(vmm_vm *vm, vmm_gpa_t gpa, const void *buf,
                             size_t len);

/**
 * Fetch and clear the dirty log of a slot created with VMM_MEM_DIRTY_LOG:
 * one bit per page (bit i of bitmap[i / 64] for page i of the slot), set
 * for pages written by the guest or by vmm_mem_write() since the last call.
 *
 * @param bitmap_bytes  size of bitmap; at least ceil(pages / 64) * 8.
 * @return 0; -VMM_ENOENT; -VMM_EINVAL if the slot has no dirty log;
 *         -VMM_E2BIG if the bitmap is too small.
 */
VMM_EXTERN int vmm_mem_dirty_log_get(vmm_vm *vm, uint32_t slot,
                                     uint64_t *bitmap, size_t bitmap_bytes);

/* ------------------------------------------------------------------------ */
/* Host memory management (the balloon's tools, usable by any host)         */

/**
 * Give the host memory behind [gpa, gpa + size) back to the host OS. The
 * range must be page aligned and backed by slots the guest may write (it
 * may span adjacent slots). Library memfd slots get a hole punched
 * (fallocate); caller memory gets MADV_REMOVE when it is a shared mapping
 * of a file that supports it, MADV_DONTNEED otherwise (private anonymous
 * memory). Afterwards the pages read as zero (private file mappings: as the
 * file's contents) and are allocated again on first use; KVM drops its
 * mappings of them through the kernel's MMU notifiers. Discarded pages are
 * marked in the dirty log of dirty-logged slots, since their contents
 * changed.
 *
 * @return 0; -VMM_EINVAL for size 0 or an overflowing range; -VMM_EALIGN;
 *         -VMM_ENOMAP if any page is not RAM; -VMM_EREADONLY if any page
 *         lies in a read-only slot (nothing is discarded in these cases);
 *         a negative errno from the kernel (e.g. mlocked caller memory).
 * Thread-safe; may be called while vCPUs run.
 */
VMM_EXTERN int vmm_mem_discard(vmm_vm *vm, vmm_gpa_t gpa, uint64_t size);

/**
 * Host memory currently resident for a slot, in bytes: pages of the slot's
 * host mapping present in RAM (page cache for memfd and other shared
 * mappings, resident anonymous pages otherwise), measured with mincore(2).
 * Thread-safe. Cost: one bit of work per page of the slot.
 * @return 0; -VMM_ENOENT for an unknown slot; a negative errno.
 */
VMM_EXTERN int vmm_mem_slot_resident(vmm_vm *vm, uint32_t slot,
                                     uint64_t *bytes);

/**
 * Let the kernel merge identical pages of a slot with other mergeable
 * memory (KSM, MADV_MERGEABLE), or stop it. The kernel merges only private
 * anonymous memory, so this needs a slot created with caller memory from
 * mmap(MAP_PRIVATE | MAP_ANONYMOUS) or with VMM_MEM_HUGEPAGES; merging
 * then happens while KSM runs
 * (/sys/kernel/mm/ksm/run, a system setting the library does not change).
 * @return 0; -VMM_ENOENT; -VMM_ENOTSUP for a library (memfd) slot, for
 *         shared caller memory the kernel did not mark, or a kernel
 *         without KSM; a negative errno.
 */
VMM_EXTERN int vmm_mem_slot_set_mergeable(vmm_vm *vm, uint32_t slot,
                                          bool enable);

#ifdef __cplusplus
}
#endif
#endif
