/*
 * Memory slots and the guest page-table walker: internal interface.
 */
#ifndef LIBVMM_MMU_INTERNAL_H
#define LIBVMM_MMU_INTERNAL_H

#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdatomic.h>

/* Highest guest-physical address + 1 a slot may reach (2^52). */
#define VMM__GPA_LIMIT (1ull << 52)

struct vmm__slot {
  uint32_t id;
  uint32_t flags; /* enum vmm_mem_flags */
  vmm_gpa_t gpa;
  uint64_t size;
  uint8_t *host;
  int fd;     /* memfd, or -1 for caller memory */
  bool owned; /* unmap on removal */
  /*
   * Dirty pages written by the host (vmm_mem_write) or by an engine that
   * tracks dirtiness in software (BT). One bit per page, set atomically.
   * NULL without VMM_MEM_DIRTY_LOG.
   */
  _Atomic uint64_t *dirty;
};

/*
 * The slot table: sorted by gpa, never overlapping. Readers take the read
 * lock; add/remove take the write lock. Pointers to slots are stable while
 * the read lock is held (slots are stored by pointer).
 */
struct vmm__mem {
  pthread_rwlock_t lock;
  struct vmm__slot *slots[VMM_MEM_MAX_SLOTS];
  unsigned count;
  uint64_t used_ids; /* bit i: id i taken */
  /* Bumped on every add/remove so engines can drop cached translations. */
  atomic_uint_fast64_t generation;
  /* Serializes dirty-log fetches (taken with the read lock: the engine's
     fetch may wait for vCPUs, which take the read lock themselves). */
  pthread_mutex_t dirty_lock;
};

int vmm__mem_init(struct vmm__mem *mem);
void vmm__mem_fini(struct vmm__mem *mem);

/* Slot containing gpa, or NULL. Caller holds the read lock. */
struct vmm__slot *vmm__mem_find_locked(struct vmm__mem *mem, vmm_gpa_t gpa);

/*
 * Host pointer for [gpa, gpa+len) if it lies inside one slot. Takes the
 * read lock itself. *slot_flags (if not NULL) receives the slot's flags.
 */
void *vmm__mem_hva(struct vmm__mem *mem, vmm_gpa_t gpa, uint64_t len,
                   uint32_t *slot_flags);

/* Mark [gpa, gpa+len) dirty in software bitmaps (no-op without a log). */
void vmm__mem_mark_dirty(struct vmm__mem *mem, vmm_gpa_t gpa, uint64_t len);
void vmm__slot_mark_dirty(struct vmm__slot *slot, vmm_gpa_t gpa,
                          uint64_t len);

/* Paging state for the walker. */
struct vmm__paging {
  uint64_t cr0, cr3, cr4, efer;
  bool ac;              /* RFLAGS.AC, for SMAP */
  unsigned maxphyaddr;  /* physical address width, 32..52 */
  bool gbpages;         /* 1 GiB pages offered (CPUID 0x80000001 EDX.26) */
};

/*
 * Internal access bit: a host access (debugger view). Permission bits (R/W,
 * U/S, NX, SMEP, SMAP) are ignored; only non-present entries and reserved
 * bits fault.
 */
#define VMM__ACCESS_HOST (1u << 30)

/*
 * Walk the guest page tables. access: enum vmm_access bits. Returns 0,
 * -VMM_EPAGEFAULT (out->error_code set), or -VMM_EFAULT for a
 * non-canonical address in long mode. A page-table entry that is not in
 * RAM faults with the reserved bit set (error code P | RSVD), in every
 * paging format.
 */
int vmm__mmu_walk(struct vmm__mem *mem, const struct vmm__paging *pg,
                  vmm_gva_t gva, unsigned access, struct vmm_translation *out);

#endif
