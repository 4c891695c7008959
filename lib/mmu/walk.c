/*
 * Guest page-table walker for 32-bit, PAE, 4-level and 5-level paging.
 *
 * The tables are guest data: every entry address is looked up in the slot
 * table, and an entry outside RAM faults as a reserved-bit violation (what
 * the all-ones value of an unbacked bus gives in the 64-bit formats; a
 * 32-bit entry of all ones would be valid, so the fault is explicit). The
 * walk has a fixed depth, so hostile tables cannot make it loop.
 */
#include <string.h>

#include "../internal.h"

#define PTE_P (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_US (1ull << 2)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_NX (1ull << 63)

#define PF_P (1u << 0)
#define PF_W (1u << 1)
#define PF_U (1u << 2)
#define PF_RSVD (1u << 3)
#define PF_ID (1u << 4)

#define CR0_PG (1ull << 31)
#define CR0_WP (1ull << 16)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_LA57 (1ull << 12)
#define CR4_SMEP (1ull << 20)
#define CR4_SMAP (1ull << 21)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

/* Read one entry; outside RAM it reads as all ones. */
static uint64_t read_entry(struct vmm__mem *mem, vmm_gpa_t addr, unsigned size,
                           void **where, struct vmm__slot **slot) {
  struct vmm__slot *s = vmm__mem_find_locked(mem, addr);
  *slot = s;
  if (s == NULL || addr - s->gpa > s->size - size) {
    *where = NULL;
    return ~0ull;
  }
  void *p = s->host + (addr - s->gpa);
  *where = p;
  if (size == 4)
    return __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED);
  return __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED);
}

static void set_bits(void *where, unsigned size, uint64_t bits) {
  if (size == 4)
    __atomic_fetch_or((uint32_t *)where, (uint32_t)bits, __ATOMIC_RELAXED);
  else
    __atomic_fetch_or((uint64_t *)where, bits, __ATOMIC_RELAXED);
}

struct level {
  void *where;
  struct vmm__slot *slot;
  vmm_gpa_t addr;
  uint64_t value;
  unsigned size;
};

static uint32_t fault_code(const struct vmm__paging *pg, unsigned access) {
  uint32_t ec = 0;
  if (access & VMM_ACCESS_WRITE)
    ec |= PF_W;
  if (access & VMM_ACCESS_USER)
    ec |= PF_U;
  /* I/D: SMEP, or NXE with 64-bit entries (32-bit paging has no NX). */
  bool wide = (pg->efer & EFER_LMA) || (pg->cr4 & CR4_PAE);
  if ((access & VMM_ACCESS_EXEC) &&
      ((wide && (pg->efer & EFER_NXE)) || (pg->cr4 & CR4_SMEP)))
    ec |= PF_ID;
  return ec;
}

int vmm__mmu_walk(struct vmm__mem *mem, const struct vmm__paging *pg,
                  vmm_gva_t gva, unsigned access, struct vmm_translation *out) {
  memset(out, 0, sizeof(*out));
  if (!(pg->cr0 & CR0_PG)) {
    out->gpa = (pg->efer & EFER_LMA) ? gva : (uint32_t)gva;
    out->page_size = VMM_PAGE_SIZE;
    out->writable = out->user = out->executable = true;
    return 0;
  }

  unsigned maxphy = pg->maxphyaddr;
  if (maxphy < 32 || maxphy > 52)
    maxphy = 52;
  const uint64_t addr_mask = ((1ull << maxphy) - 1) & ~0xfffull;
  const bool nxe = (pg->efer & EFER_NXE) != 0;
  const bool wide = (pg->efer & EFER_LMA) || (pg->cr4 & CR4_PAE);

  unsigned levels, esize = wide ? 8 : 4;
  uint64_t table;
  if (pg->efer & EFER_LMA) {
    levels = (pg->cr4 & CR4_LA57) ? 5 : 4;
    unsigned bits = levels == 5 ? 57 : 48;
    int64_t sx = (int64_t)(gva << (64 - bits)) >> (64 - bits);
    if ((uint64_t)sx != gva)
      return VMM_EFAULT;
    table = pg->cr3 & addr_mask;
  } else if (pg->cr4 & CR4_PAE) {
    levels = 3;
    gva = (uint32_t)gva;
    table = pg->cr3 & 0xffffffe0ull;
  } else {
    levels = 2;
    gva = (uint32_t)gva;
    table = pg->cr3 & 0xfffff000ull;
  }

  /* Reserved bits common to every 64-bit entry. */
  uint64_t rsvd64 = ((1ull << 52) - 1) & ~((1ull << maxphy) - 1);
  if (!nxe)
    rsvd64 |= PTE_NX;

  struct level used[5];
  unsigned nused = 0;
  bool user = true, writable = true, nx = false;
  uint32_t ec = fault_code(pg, access);
  uint64_t gpa = 0, page_size = 0;
  int err = 0;

  pthread_rwlock_rdlock(&mem->lock);
  for (int lvl = (int)levels - 1; lvl >= 0; lvl--) {
    unsigned shift, idx_bits;
    if (esize == 4) {
      shift = 12 + 10 * (unsigned)lvl;
      idx_bits = 10;
    } else if (levels == 3 && lvl == 2) {
      shift = 30;
      idx_bits = 2;
    } else {
      shift = 12 + 9 * (unsigned)lvl;
      idx_bits = 9;
    }
    uint64_t idx = (gva >> shift) & ((1ull << idx_bits) - 1);
    void *where;
    struct vmm__slot *slot;
    vmm_gpa_t eaddr = table + idx * esize;
    uint64_t e = read_entry(mem, eaddr, esize, &where, &slot);

    if (where == NULL) {
      ec |= PF_RSVD;
      err = VMM_EPAGEFAULT;
      break;
    }
    if (!(e & PTE_P)) {
      err = VMM_EPAGEFAULT;
      break;
    }
    uint64_t rsvd = 0;
    bool leaf = lvl == 0;
    if (esize == 4) {
      if (lvl == 1 && (e & PTE_PS) && (pg->cr4 & CR4_PSE)) {
        leaf = true;
        unsigned hi = maxphy > 40 ? 40 : maxphy;
        rsvd = (1ull << 21) | (((1ull << 21) - 1) & ~((1ull << (13 + hi - 32)) - 1));
      }
    } else if (levels == 3 && lvl == 2) {
      /* PAE PDPTE: no access-right bits, several reserved ones. */
      rsvd = rsvd64 | PTE_NX | 0x1e6ull;
    } else {
      rsvd = rsvd64;
      /* PS is reserved above the PDPTE, and in the PDPTE unless the
         vCPU offers 1 GiB pages. */
      if (lvl >= 3 || (lvl == 2 && !pg->gbpages))
        rsvd |= PTE_PS;
      if ((lvl == 1 || lvl == 2) && (e & PTE_PS)) {
        leaf = true;
        /* Bits 12 .. page-size-1 except PAT(12) must be zero. */
        rsvd |= ((1ull << shift) - 1) & ~0x1fffull;
      }
    }
    if (e & rsvd) {
      ec |= PF_RSVD;
      err = VMM_EPAGEFAULT;
      break;
    }
    if (!(levels == 3 && lvl == 2)) {
      user = user && (e & PTE_US);
      writable = writable && (e & PTE_RW);
      if (nxe && (e & PTE_NX))
        nx = true;
    }
    used[nused].where = where;
    used[nused].slot = slot;
    used[nused].addr = eaddr;
    used[nused].value = e;
    used[nused].size = esize;
    nused++;

    if (leaf) {
      page_size = 1ull << shift;
      uint64_t frame;
      if (esize == 4 && lvl == 1) {
        frame = (e & 0xffc00000ull) | (((e >> 13) & 0xffull) << 32);
        frame &= (1ull << maxphy) - 1;
      } else {
        frame = e & addr_mask & ~(page_size - 1);
      }
      gpa = frame | (gva & (page_size - 1));
      break;
    }
    table = esize == 4 ? (e & 0xfffff000ull) : (e & addr_mask);
  }

  if (err == 0 && !(access & VMM__ACCESS_HOST)) {
    bool is_user = access & VMM_ACCESS_USER;
    bool fault = false;
    if (is_user && !user)
      fault = true;
    if (access & VMM_ACCESS_WRITE) {
      if (!writable && (is_user || (pg->cr0 & CR0_WP)))
        fault = true;
    }
    if (access & VMM_ACCESS_EXEC) {
      if (nx)
        fault = true;
      if (!is_user && user && (pg->cr4 & CR4_SMEP))
        fault = true;
    } else if (!is_user && user && (pg->cr4 & CR4_SMAP) && !pg->ac) {
      fault = true;
    }
    if (fault) {
      ec |= PF_P;
      err = VMM_EPAGEFAULT;
    }
  } else if (ec & PF_RSVD) {
    ec |= PF_P;
  }

  if (err == 0 && (access & VMM_ACCESS_SET_AD)) {
    for (unsigned i = 0; i < nused; i++) {
      uint64_t bits = PTE_A;
      if (i == nused - 1 && (access & VMM_ACCESS_WRITE))
        bits |= PTE_D;
      /* PAE PDPTEs have no accessed bit. */
      if ((levels == 3 && i == 0) || (used[i].value & bits) == bits)
        continue;
      set_bits(used[i].where, used[i].size, bits);
      vmm__slot_mark_dirty(used[i].slot, used[i].addr, used[i].size);
    }
  }
  pthread_rwlock_unlock(&mem->lock);

  if (err < 0) {
    out->error_code = ec;
    return err;
  }
  out->gpa = gpa;
  out->page_size = page_size;
  out->writable = writable;
  out->user = user;
  out->executable = !nx;
  return 0;
}
