/*
 * The BT engine's memory path: the soft TLB behind translated code, guest
 * memory access for C code (emulation, delivery), MMIO and the bounce
 * buffer, code pages for self-modifying code, and write-protect
 * shootdowns. See docs/bt.md, "The memory path".
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "bt.h"

/* ------------------------------------------------------------------------ */
/* Soft TLB                                                                 */

/*
 * Entry i is empty when its tag names a page whose index is neither i nor
 * i + 1: an access indexed by its first byte's page (index i) compares the
 * tag with its last byte's page, whose index is i or, when the access
 * crosses into the next page, i + 1. Either must miss.
 */
static uint64_t tlb_empty(const struct bt_vcpu *b, unsigned i) {
  return -(uint64_t)(((i + 2) & (b->tlb_size - 1)) << 12);
}

/*
 * Lookup slots (translate.c) copy TLB entries, so whatever empties TLB
 * entries empties them too. A slot's fill is counted under its page's TLB
 * index (slot_cnt) and the slot noted in that index's list of the last
 * BT_SLOT_LIST: a slot holding a page of index i is in list i unless the
 * count says the list overflowed. So a flush of one page looks at one
 * count, and usually at nothing else: an invlpg per page-table write
 * costs a load, and refills only that page's slots.
 */
static struct bt_slot slot_empty(const struct bt_vcpu *b) {
  uint64_t guard = (uint64_t)(uintptr_t)b->slot_guard[1];
  return (struct bt_slot){-BT_SLOT_EMPTY, guard - BT_SLOT_EMPTY + BT_TLB_BIAS,
                          guard};
}

/* Whether slot k of the flat array is a write slot: [set][write][class][n]. */
static bool slot_is_write(unsigned k) {
  return (k / (BT_SLOT_CLASSES * BT_SLOTS)) % 2 == 1;
}

static unsigned page_index(const struct bt_vcpu *b, uint64_t page) {
  return (unsigned)(page >> 12) & (b->tlb_size - 1);
}

/* Empty the slots of TLB index i whose page lies in [base, base + size)
   (any page: size 0; only write slots: writes). */
static void slots_flush_index(struct bt_vcpu *b, unsigned i, uint64_t base,
                              uint64_t size, bool writes) {
  uint64_t n = b->ctx.slot_cnt[i];
  if (n == 0)
    return;
  struct bt_slot *slots = &b->ctx.slot[0][0][0][0], empty = slot_empty(b);
  const unsigned total = 2 * 2 * BT_SLOT_CLASSES * BT_SLOTS;
  if (n > BT_SLOT_LIST) {
    /* Some of the index's slots are not in its list: every slot with a
       page of that index goes, whatever the flush asked for (the list
       starts empty again, so none may stay; the others refill). */
    for (unsigned k = 0; k < total; k++)
      if (slots[k].tag != -BT_SLOT_EMPTY && page_index(b, -slots[k].tag) == i)
        slots[k] = empty;
    b->ctx.slot_cnt[i] = 0;
    return;
  }
  /* Fill number j (counted from 1) went to slot_list[i][j % LIST]. */
  unsigned keep = 0;
  for (unsigned j = 1; j <= n; j++) {
    uint32_t off = b->ctx.slot_list[i][j % BT_SLOT_LIST];
    uint32_t k = (off - BT_OFF_SLOT) / (uint32_t)sizeof(struct bt_slot);
    if (off < BT_OFF_SLOT || k >= total ||
        (off - BT_OFF_SLOT) % sizeof(struct bt_slot) != 0)
      continue;
    struct bt_slot *sl = &slots[k];
    /* Refilled since with a page of another index: listed there. */
    if (sl->tag == -BT_SLOT_EMPTY || page_index(b, -sl->tag) != i)
      continue;
    bool write = slot_is_write(k);
    if ((!writes || write) && (size == 0 || -sl->tag - base < size)) {
      *sl = empty;
    } else {
      bool dup = false;
      for (unsigned d = 1; d <= keep; d++)
        dup |= b->ctx.slot_list[i][d % BT_SLOT_LIST] == off;
      if (!dup)
        b->ctx.slot_list[i][++keep % BT_SLOT_LIST] = off;
    }
  }
  b->ctx.slot_cnt[i] = keep;
}

/* Every index whose pages may lie in [base, base + size) (all: size 0). */
static void slots_flush(struct bt_vcpu *b, uint64_t base, uint64_t size,
                        bool writes) {
  if (size == 0 || size / 4096 >= b->tlb_size) {
    for (unsigned i = 0; i < b->tlb_size; i++)
      slots_flush_index(b, i, base, size, writes);
    return;
  }
  for (uint64_t p = base; p - base < size; p += 4096)
    slots_flush_index(b, page_index(b, p), base, size, writes);
}

void bt_slots_reset(struct bt_vcpu *b) {
  struct bt_slot *slots = &b->ctx.slot[0][0][0][0], empty = slot_empty(b);
  for (unsigned k = 0; k < 2 * 2 * BT_SLOT_CLASSES * BT_SLOTS; k++)
    slots[k] = empty;
  memset(b->ctx.slot_cnt, 0, sizeof(b->ctx.slot_cnt));
  b->ctx.slot_pos = BT_SLOT_LIST - 1;
}

void bt_tlb_flush(struct bt_vcpu *b) {
  slots_flush(b, 0, 0, false);
  for (unsigned s = 0; s < 2; s++) {
    for (unsigned i = 0; i < b->tlb_size; i++) {
      b->ctx.tlb_r[s][i] = tlb_empty(b, i);
      b->ctx.tlb_w[s][i] = tlb_empty(b, i);
      b->ctx.tlb_add[s][i] = BT_TLB_BIAS; /* the shift count, always */
    }
    b->tlb_nl[s] = 0;
    b->tlb_lover[s] = false;
    b->tlb_huge[s] = false;
  }
}

void bt_tlb_flush_writes(struct bt_vcpu *b) {
  slots_flush(b, 0, 0, true);
  for (unsigned s = 0; s < 2; s++)
    for (unsigned i = 0; i < b->tlb_size; i++)
      b->ctx.tlb_w[s][i] = tlb_empty(b, i);
}

/* Empty every entry of set s in [first, first + n) whose page lies in the
   naturally aligned region of `size` bytes around lin. */
static void tlb_flush_region(struct bt_vcpu *b, unsigned s, unsigned first,
                             unsigned n, uint64_t lin, uint64_t size) {
  uint64_t base = lin & ~(size - 1);
  for (unsigned i = first; i < first + n; i++) {
    uint64_t page = -b->ctx.tlb_r[s][i];
    if (page - base < size) {
      b->ctx.tlb_r[s][i] = tlb_empty(b, i);
      b->ctx.tlb_w[s][i] = tlb_empty(b, i);
    }
  }
}

/*
 * invlpg: the page containing lin, which may be a large page the TLB holds
 * as many 4 KiB entries. A 2 MiB page's entries all lie in one block of
 * 512 consecutive indexes (the whole TLB when it is smaller), scanned only
 * when lin's 2 MiB region is one entries were filled from; 4 MiB and
 * 1 GiB pages span blocks and scan everything.
 */
void bt_tlb_flush_page(struct bt_vcpu *b, uint64_t lin) {
  unsigned per = b->tlb_size < 512 ? b->tlb_size : 512;
  uint64_t base = lin & ~((2ull << 20) - 1);
  /* The slots of the largest page the TLB may hold lin in (as below). */
  uint64_t span = 4096;
  for (unsigned s = 0; s < 2; s++) {
    if (b->tlb_huge[s]) {
      span = 1ull << 30;
      break;
    }
    bool large = b->tlb_lover[s];
    for (unsigned k = 0; k < b->tlb_nl[s]; k++)
      large |= b->tlb_lbase[s][k] == base;
    if (large)
      span = 2ull << 20;
  }
  slots_flush(b, lin & ~(span - 1), span, false);
  for (unsigned s = 0; s < 2; s++) {
    if (b->tlb_huge[s]) {
      tlb_flush_region(b, s, 0, b->tlb_size, lin, 1ull << 30);
      continue;
    }
    bool large = b->tlb_lover[s];
    for (unsigned k = 0; k < b->tlb_nl[s]; k++) {
      if (b->tlb_lbase[s][k] == base) {
        b->tlb_lbase[s][k] = b->tlb_lbase[s][--b->tlb_nl[s]];
        large = true;
        break;
      }
    }
    if (large) {
      unsigned i = (unsigned)(lin >> 12) & (b->tlb_size - 1);
      unsigned first = i / per * per;
      tlb_flush_region(b, s, first, per, lin, 2ull << 20);
      continue;
    }
    unsigned i = (unsigned)(lin >> 12) & (b->tlb_size - 1);
    b->ctx.tlb_r[s][i] = tlb_empty(b, i);
    b->ctx.tlb_w[s][i] = tlb_empty(b, i);
  }
}

/* Remember that set s holds entries from the 2 MiB page around lin. */
static void tlb_note_large(struct bt_vcpu *b, unsigned s, uint64_t lin) {
  uint64_t base = lin & ~((2ull << 20) - 1);
  for (unsigned k = 0; k < b->tlb_nl[s]; k++)
    if (b->tlb_lbase[s][k] == base)
      return;
  if (b->tlb_nl[s] < 8)
    b->tlb_lbase[s][b->tlb_nl[s]++] = base;
  else
    b->tlb_lover[s] = true;
}

/* Whether the entry was made: guest RAM is mapped page-aligned
   (vmm_mem_slot_add checks), so the bias's bits of an addend are clear;
   should one not be, no entry is made and the caller must not count on
   one (a hoisted lookup's retry does not check the tag again). */
static bool tlb_fill(struct bt_vcpu *b, uint64_t lin, uint8_t *hva,
                     bool write) {
  uint64_t page = lin & ~0xfffull;
  unsigned i = (unsigned)(page >> 12) & (b->tlb_size - 1);
  unsigned s = b->tlb_set;
  uint64_t add = (uint64_t)(uintptr_t)hva - (lin & 0xfff) - page;
  if (add & 0xfff)
    return false;
  add += BT_TLB_BIAS;
  /* One entry describes one page: a different page evicts both tags. */
  if (b->ctx.tlb_r[s][i] != -page || b->ctx.tlb_add[s][i] != add)
    b->ctx.tlb_w[s][i] = tlb_empty(b, i);
  b->ctx.tlb_add[s][i] = add;
  b->ctx.tlb_r[s][i] = -page;
  if (write)
    b->ctx.tlb_w[s][i] = -page;
  if (b->last_page_size > (2ull << 20))
    b->tlb_huge[s] = true;
  else if (b->last_page_size > 4096)
    tlb_note_large(b, s, lin);
  return true;
}

/* ------------------------------------------------------------------------ */
/* Translation                                                              */

void bt_paging(const struct bt_vcpu *b, struct vmm__paging *pg) {
  memset(pg, 0, sizeof(*pg));
  pg->cr0 = b->cr0;
  pg->cr3 = b->cr3;
  pg->cr4 = b->cr4;
  pg->efer = b->efer;
  pg->ac = (b->vflags & X86_RFLAGS_AC) != 0;
  pg->maxphyaddr = b->maxphy;
  pg->gbpages = b->gbpages;
}

int bt_translate(struct bt_vcpu *b, uint64_t lin, unsigned acc, bool sys,
                 uint64_t *gpa) {
  struct vmm__paging pg;
  bt_paging(b, &pg);
  unsigned a = VMM_ACCESS_SET_AD;
  if (acc & BT_W)
    a |= VMM_ACCESS_WRITE;
  if (acc & BT_X)
    a |= VMM_ACCESS_EXEC;
  if (b->cpl == 3 && !sys)
    a |= VMM_ACCESS_USER;
  struct vmm_translation t;
  int err = vmm__mmu_walk(&b->vcpu->vm->mem, &pg, lin, a, &t);
  if (err == VMM_EPAGEFAULT)
    return bt_raise_pf(b, lin, t.error_code);
  if (err < 0)
    return bt_raise(b, X86_EXC_GP, true, 0);
  *gpa = t.gpa;
  b->last_user_page = t.user;
  b->last_page_size = t.page_size;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Code pages                                                               */

static unsigned code_hash(uint64_t page) {
  return (unsigned)((page >> 12) * 0x9e3779b1u) & (BT_CODE_HASH - 1);
}

static struct bt_codepage *code_find(struct bt_vm *m, uint64_t page,
                                     bool create) {
  struct bt_codepage **pp = &m->code[code_hash(page)];
  for (struct bt_codepage *c = *pp; c; c = c->next)
    if (c->page == page)
      return c;
  if (!create)
    return NULL;
  struct bt_codepage *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->page = page;
  c->next = *pp;
  *pp = c;
  return c;
}

static void code_remove(struct bt_vm *m, uint64_t page) {
  for (struct bt_codepage **pp = &m->code[code_hash(page)]; *pp;
       pp = &(*pp)->next) {
    if ((*pp)->page == page) {
      struct bt_codepage *c = *pp;
      *pp = c->next;
      free(c);
      return;
    }
  }
}

void bt_vm_code_fini(struct bt_vm *m) {
  for (unsigned i = 0; i < BT_CODE_HASH; i++) {
    while (m->code[i]) {
      struct bt_codepage *c = m->code[i];
      m->code[i] = c->next;
      free(c);
    }
  }
}

void bt_code_forget_range(struct bt_vm *m, uint64_t gpa, uint64_t size) {
  pthread_mutex_lock(&m->lock);
  for (unsigned i = 0; i < BT_CODE_HASH; i++) {
    for (struct bt_codepage **pp = &m->code[i]; *pp;) {
      if ((*pp)->page >= gpa && (*pp)->page - gpa < size) {
        struct bt_codepage *c = *pp;
        *pp = c->next;
        free(c);
      } else {
        pp = &(*pp)->next;
      }
    }
  }
  pthread_mutex_unlock(&m->lock);
}

/* The code bit of gpa's page in slot s (caller holds the slot table). */
static _Atomic uint64_t *code_word(struct bt_vm *m, const struct vmm__slot *s,
                                   uint64_t gpa, uint64_t *bit) {
  _Atomic uint64_t *bits = m->codebits[s->id];
  if (bits == NULL)
    return NULL;
  uint64_t p = (gpa - s->gpa) / VMM_PAGE_SIZE;
  *bit = 1ull << (p % 64);
  return &bits[p / 64];
}

static bool slot_code(struct bt_vm *m, const struct vmm__slot *s,
                      uint64_t gpa) {
  uint64_t bit;
  _Atomic uint64_t *w = code_word(m, s, gpa, &bit);
  return w && (atomic_load(w) & bit);
}

bool bt_is_code_page(vmm_vm *vm, uint64_t gpa) {
  struct vmm__mem *mem = &vm->mem;
  pthread_rwlock_rdlock(&mem->lock);
  struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
  bool r = s && slot_code(BM(vm), s, gpa);
  pthread_rwlock_unlock(&mem->lock);
  return r;
}

void bt_check_wp(struct bt_vcpu *b) {
  uint64_t g = atomic_load(&b->vm->wp_gen);
  if (g != b->wp_gen) {
    bt_tlb_flush_writes(b);
    __atomic_store_n(&b->wp_gen, g, __ATOMIC_SEQ_CST);
  }
}

/*
 * Enter translated code (or come back to it from a callout that ran a
 * host handler): in_tc set, then the write-protect generation checked. A
 * revoker bumps the generation before it looks at in_tc, so one of the
 * two sees the other (bt_wp_shootdown), if each orders its store before
 * its load. Here that is a compiler barrier when the revoker makes every
 * thread run a full fence with membarrier(2) (as the I/O buses' writers
 * do, docs/io.md), else a fence: the seq_cst store it replaces (an
 * xchg) was 20 cycles of every handled `in` and dispatcher round trip.
 */
void bt_in_tc(struct bt_vcpu *b) {
  atomic_store_explicit(&b->ctx.in_tc, 1, memory_order_relaxed);
  if (b->vm->wp_fence)
    atomic_thread_fence(memory_order_seq_cst);
  else
    atomic_signal_fence(memory_order_seq_cst);
  bt_check_wp(b);
}

/*
 * Revoke every vCPU's writable TLB entries: bump the generation, then wait
 * for each vCPU inside translated code to leave it or to acknowledge
 * (bt_in_tc: a membarrier here orders the other vCPUs' in_tc stores
 * before their generation loads).
 */
void bt_wp_shootdown(vmm_vm *vm, struct bt_vcpu *self) {
  struct bt_vm *m = BM(vm);
  uint64_t gen = atomic_fetch_add(&m->wp_gen, 1) + 1;
  struct bt_vcpu *others[VMM_MAX_VCPUS];
  unsigned n = 0;
  pthread_mutex_lock(&vm->lock);
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *v = vm->vcpus[i];
    if (v == NULL || v->engine == NULL)
      continue;
    if (BV(v) == self)
      continue;
    others[n++] = BV(v);
  }
  pthread_mutex_unlock(&vm->lock);
  if (self != NULL)
    bt_check_wp(self);
  if (n > 0 && !m->wp_fence)
    vmm__membarrier();
  for (unsigned i = 0; i < n; i++) {
    struct bt_vcpu *o = others[i];
    if (!atomic_load(&o->ctx.in_tc))
      continue;
    bt_kick_internal(o);
    while (atomic_load(&o->ctx.in_tc) &&
           __atomic_load_n(&o->wp_gen, __ATOMIC_SEQ_CST) < gen)
      sched_yield();
  }
}

/*
 * Make gpa's page a code page before its bytes are read for translation,
 * and record [gpa, gpa+len) as translated once decoded.
 */
int bt_code_mark(struct bt_vcpu *b, uint64_t gpa, unsigned len) {
  vmm_vm *vm = b->vcpu->vm;
  struct bt_vm *m = b->vm;
  uint64_t page = gpa & ~0xfffull;
  bool fresh = false;
  pthread_rwlock_rdlock(&vm->mem.lock);
  struct vmm__slot *s = vmm__mem_find_locked(&vm->mem, gpa);
  if (s != NULL) {
    uint64_t bit;
    _Atomic uint64_t *w = code_word(m, s, gpa, &bit);
    if (w && !(atomic_fetch_or(w, bit) & bit))
      fresh = true;
  }
  pthread_rwlock_unlock(&vm->mem.lock);
  if (s == NULL)
    return 0; /* code outside RAM cannot be written by anyone */
  if (fresh)
    bt_wp_shootdown(vm, b);
  if (len == 0)
    return 0;
  pthread_mutex_lock(&m->lock);
  struct bt_codepage *c = code_find(m, page, true);
  if (c != NULL)
    for (uint64_t o = gpa & 0xfff; o < (gpa & 0xfff) + len && o < 4096; o++)
      c->cover[o / 64] |= 1ull << (o % 64);
  pthread_mutex_unlock(&m->lock);
  return c ? 0 : VMM_ENOMEM;
}

static void queue_invalidate(struct bt_vcpu *o, uint64_t page) {
  /* Caller holds bt_vm.lock. */
  if (o->ninval < VMM__ARRAY_SIZE(o->inval))
    o->inval[o->ninval++] = page;
  else
    o->inval_all = true;
  atomic_store(&o->inval_pending, true);
}

/*
 * The cover bits of a translation are set only after its bytes were
 * decoded, so a write by another vCPU (or the host) landing between the
 * read and bt_code_mark() finds no cover and invalidates nothing: the
 * stale translation would live for ever. Writers store first and then
 * take bt_vm.lock to look at the cover; bt_code_mark() sets it under the
 * same lock, and this re-reads the bytes afterwards, so a racing write is
 * either seen here or sees the cover. A mismatch keeps the translation for
 * at most the current dispatch (executing the old bytes once is what a
 * processor may do for unsynchronised cross-modifying code) and queues its
 * page for invalidation; the kick stops chaining until that is done.
 */
void bt_code_recheck(struct bt_vcpu *b, uint64_t gpa, const uint8_t *bytes,
                     unsigned len) {
  uint8_t now[15];
  if (len == 0 || len > sizeof(now))
    return;
  if (vmm_mem_read(b->vcpu->vm, gpa, now, len) == 0 &&
      memcmp(now, bytes, len) == 0)
    return;
  pthread_mutex_lock(&b->vm->lock);
  queue_invalidate(b, gpa & ~0xfffull);
  pthread_mutex_unlock(&b->vm->lock);
  bt_kick_internal(b);
}

void bt_process_invalidations(struct bt_vcpu *b) {
  uint64_t pages[VMM__ARRAY_SIZE(b->inval)];
  pthread_mutex_lock(&b->vm->lock);
  unsigned n = b->ninval;
  bool all = b->inval_all;
  memcpy(pages, b->inval, n * sizeof(pages[0]));
  b->ninval = 0;
  b->inval_all = false;
  atomic_store(&b->inval_pending, false);
  pthread_mutex_unlock(&b->vm->lock);
  if (all) {
    bt_tc_flush(b);
    return;
  }
  for (unsigned i = 0; i < n; i++)
    bt_invalidate_page(b, pages[i]);
}

/*
 * [gpa, gpa+len) was written (by `writer`, or by the host if NULL). If the
 * write touched translated bytes, drop every translation of those pages.
 */
void bt_code_written(vmm_vm *vm, struct bt_vcpu *writer, uint64_t gpa,
                     uint64_t len) {
  struct bt_vm *m = BM(vm);
  if (len == 0)
    return;
  uint64_t end = gpa + len;
  for (uint64_t page = gpa & ~0xfffull; page < end; page += 4096) {
    bool code = false;
    pthread_rwlock_rdlock(&vm->mem.lock);
    struct vmm__slot *s = vmm__mem_find_locked(&vm->mem, page);
    uint64_t bit = 0;
    _Atomic uint64_t *w = s ? code_word(m, s, page, &bit) : NULL;
    code = w && (atomic_load(w) & bit);
    pthread_rwlock_unlock(&vm->mem.lock);
    if (!code)
      continue;
    uint64_t lo = page > gpa ? 0 : gpa & 0xfff;
    uint64_t hi = end - page >= 4096 ? 4096 : end - page;
    bool hit = false;
    pthread_mutex_lock(&m->lock);
    struct bt_codepage *c = code_find(m, page, false);
    for (uint64_t o = lo; c && o < hi && !hit; o++)
      hit = (c->cover[o / 64] >> (o % 64)) & 1;
    if (!hit) {
      pthread_mutex_unlock(&m->lock);
      continue;
    }
    code_remove(m, page);
    /* The page is data again until something is translated from it. */
    atomic_fetch_and(w, ~bit);
    struct bt_vcpu *others[VMM_MAX_VCPUS];
    unsigned n = 0;
    pthread_mutex_lock(&vm->lock);
    for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
      vmm_vcpu *v = vm->vcpus[i];
      if (v != NULL && v->engine != NULL && BV(v) != writer)
        others[n++] = BV(v);
    }
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < n; i++)
      queue_invalidate(others[i], page);
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < n; i++)
      bt_kick_internal(others[i]);
    if (writer != NULL)
      bt_invalidate_page(writer, page);
  }
}

/* ------------------------------------------------------------------------ */
/* Guest memory for C code                                                  */

/* Find the RAM behind gpa for len bytes within one page, or NULL (MMIO).
 *ro: the slot is read-only; *code: the page holds translations. */
static uint8_t *ram(struct bt_vcpu *b, uint64_t gpa, unsigned len, bool *ro,
                    bool *code, struct vmm__slot **slot_out) {
  vmm_vm *vm = b->vcpu->vm;
  uint8_t *p = NULL;
  pthread_rwlock_rdlock(&vm->mem.lock);
  struct vmm__slot *s = vmm__mem_find_locked(&vm->mem, gpa);
  if (s != NULL && gpa - s->gpa <= s->size - len) {
    p = s->host + (gpa - s->gpa);
    *ro = (s->flags & VMM_MEM_READONLY) != 0;
    *code = slot_code(b->vm, s, gpa);
  }
  if (slot_out)
    *slot_out = s;
  pthread_rwlock_unlock(&vm->mem.lock);
  return p;
}

static void mark_dirty(struct bt_vcpu *b, uint64_t gpa, unsigned len) {
  vmm__mem_mark_dirty(&b->vcpu->vm->mem, gpa, len);
}

/* Host pointer to writable RAM at gpa (len within one page), or NULL for
   MMIO, read-only slots and pages holding translated code. */
uint8_t *bt_ram_writable(struct bt_vcpu *b, uint64_t gpa, unsigned len) {
  bool ro = false, code = false;
  uint8_t *p = ram(b, gpa, len, &ro, &code, NULL);
  return (p && !ro && !code) ? p : NULL;
}

/* Host pointer to RAM at gpa for reading (len within one page), or NULL. */
uint8_t *bt_ram_readable(struct bt_vcpu *b, uint64_t gpa, unsigned len) {
  bool ro = false, code = false;
  return ram(b, gpa, len, &ro, &code, NULL);
}

/* Bookkeeping after C wrote RAM through bt_ram_writable(). */
void bt_ram_written(struct bt_vcpu *b, uint64_t gpa, unsigned len) {
  mark_dirty(b, gpa, len);
}

void bt_mmio_begin(struct bt_vcpu *b) {
  struct bt_mmio *m = &b->mmio;
  if (m->rip != b->ctx.rip) {
    m->rip = b->ctx.rip;
    m->n = 0;
  }
  m->cursor = 0;
}

void bt_mmio_retire(struct bt_vcpu *b) {
  b->mmio.n = 0;
  b->mmio.cursor = 0;
}

static int mmio_read(struct bt_vcpu *b, uint64_t gpa, void *buf, unsigned len) {
  struct bt_mmio *m = &b->mmio;
  if (m->rip == b->ctx.rip && m->cursor < m->n &&
      m->log[m->cursor].gpa == gpa && m->log[m->cursor].size == len) {
    memcpy(buf, m->log[m->cursor].data, len);
    m->cursor++;
    return 0;
  }
  if (len > 8 || b->exit_ready || m->cursor == BT_MMIO_LOG) {
    bt_internal_error(b, VMM_INTERNAL_EMULATION,
                      "MMIO read of %u bytes at 0x%llx not supported", len,
                      (unsigned long long)gpa);
    return BT_EXIT;
  }
  struct vmm_exit *e = &b->vcpu->exit;
  memset(e, 0, sizeof(*e));
  e->reason = VMM_EXIT_MMIO;
  e->mmio.gpa = gpa;
  e->mmio.size = (uint8_t)len;
  m->rip = b->ctx.rip;
  m->n = m->cursor + 1;
  m->log[m->cursor].gpa = gpa;
  m->log[m->cursor].size = (uint8_t)len;
  m->waiting = true;
  b->exit_ready = true;
  return BT_EXIT;
}

static int mmio_write(struct bt_vcpu *b, uint64_t gpa, const void *buf,
                      unsigned len) {
  if (len > 8 || b->exit_ready) {
    bt_internal_error(b, VMM_INTERNAL_EMULATION,
                      "MMIO write of %u bytes at 0x%llx not supported", len,
                      (unsigned long long)gpa);
    return BT_EXIT;
  }
  struct vmm_exit *e = &b->vcpu->exit;
  memset(e, 0, sizeof(*e));
  e->reason = VMM_EXIT_MMIO;
  e->mmio.gpa = gpa;
  e->mmio.size = (uint8_t)len;
  e->mmio.is_write = 1;
  memcpy(e->mmio.data, buf, len);
  b->exit_ready = true;
  return 0;
}

/* Split [lin, lin+len) at a page boundary and translate both parts before
   touching anything, so a fault leaves memory unchanged. */
static int xlate2(struct bt_vcpu *b, uint64_t lin, unsigned len, unsigned acc,
                  bool sys, uint64_t gpa[2], unsigned part[2]) {
  unsigned first = 4096 - (unsigned)(lin & 0xfff);
  if (first > len)
    first = len;
  part[0] = first;
  part[1] = len - first;
  int err = bt_translate(b, lin, acc, sys, &gpa[0]);
  if (err < 0)
    return err;
  if (part[1]) {
    uint64_t next = lin + first;
    if ((b->key & BT_K_CODE_MASK) != BT_K_CODE64)
      next = (uint32_t)next;
    err = bt_translate(b, next, acc, sys, &gpa[1]);
  }
  return err;
}

/* C accesses at the current privilege fill the soft TLB as translated
   code would, so stack operations emulated after a miss make the next
   inline lookup hit. */
static void c_fill(struct bt_vcpu *b, uint64_t lin, uint8_t *p, bool write,
                   bool sys) {
  bool smap_dep = b->cpl != 3 && (b->cr4 & X86_CR4_SMAP) && b->last_user_page;
  if (!sys && !smap_dep)
    tlb_fill(b, lin, p, write);
}

/*
 * The soft TLB serves C's accesses too (exception frames, descriptor
 * tables, emulated stack operations): without it each one walked the
 * page tables and searched the slots under the memory lock. An entry is
 * used only for the privilege it was made for (set 1: CPL 3 code's own
 * accesses; set 0: supervisor, which holds no SMAP-dependent pages, so
 * implicit supervisor accesses may use it) and never across a page.
 */
static uint8_t *tlb_hit(struct bt_vcpu *b, uint64_t lin, unsigned len,
                        bool sys, bool write) {
  if ((lin & 0xfff) + len > 4096)
    return NULL;
  unsigned s = sys || b->cpl != 3 ? 0 : 1;
  unsigned i = (unsigned)(lin >> 12) & (b->tlb_size - 1);
  uint64_t tag = write ? b->ctx.tlb_w[s][i] : b->ctx.tlb_r[s][i];
  if (tag != -(lin & ~0xfffull))
    return NULL;
  return (uint8_t *)(uintptr_t)(lin + b->ctx.tlb_add[s][i] - BT_TLB_BIAS);
}

int bt_read(struct bt_vcpu *b, uint64_t lin, void *buf, unsigned len,
            bool sys) {
  if (!sys && bt_ac_fault(b, lin, len))
    return bt_raise(b, X86_EXC_AC, true, 0);
  uint8_t *h = tlb_hit(b, lin, len, sys, false);
  if (h != NULL) {
    memcpy(buf, h, len);
    return 0;
  }
  uint64_t gpa[2];
  unsigned part[2];
  int err = xlate2(b, lin, len, BT_R, sys, gpa, part);
  if (err < 0)
    return err;
  uint8_t *out = buf;
  for (int i = 0; i < 2 && part[i]; i++) {
    bool ro, code;
    uint8_t *p = ram(b, gpa[i], part[i], &ro, &code, NULL);
    if (p != NULL) {
      if (part[1] == 0)
        c_fill(b, lin, p, false, sys);
      memcpy(out, p, part[i]);
    } else {
      if (part[1] != 0)
        return mmio_read(b, gpa[i], out, 16); /* refused: > 8 bytes */
      if ((err = mmio_read(b, gpa[i], out, part[i])) < 0)
        return err;
    }
    out += part[i];
  }
  return 0;
}

int bt_write(struct bt_vcpu *b, uint64_t lin, const void *buf, unsigned len,
             bool sys) {
  /* Alignment first: a TLB hit is no excuse for a misaligned access. */
  if (!sys && bt_ac_fault(b, lin, len))
    return bt_raise(b, X86_EXC_AC, true, 0);
  bt_check_wp(b); /* a dirty-log fetch may have revoked write entries */
  uint8_t *h = tlb_hit(b, lin, len, sys, true);
  if (h != NULL) {
    memcpy(h, buf, len);
    return 0;
  }
  uint64_t gpa[2];
  unsigned part[2];
  int err = xlate2(b, lin, len, BT_W, sys, gpa, part);
  if (err < 0)
    return err;
  const uint8_t *in = buf;
  for (int i = 0; i < 2 && part[i]; i++) {
    bool ro = false, code = false;
    uint8_t *p = ram(b, gpa[i], part[i], &ro, &code, NULL);
    if (p != NULL && !ro) {
      memcpy(p, in, part[i]);
      mark_dirty(b, gpa[i] & ~0xfffull, 4096);
      if (code)
        bt_code_written(b->vcpu->vm, b, gpa[i], part[i]);
      else if (part[1] == 0)
        c_fill(b, lin, p, true, sys);
    } else if ((err = mmio_write(b, gpa[i], in, part[i])) < 0) {
      return err;
    }
    in += part[i];
  }
  return 0;
}

/* Fetch code bytes for translation (exec access at the current CPL). */
int bt_fetch(struct bt_vcpu *b, uint64_t lin, uint8_t *buf, unsigned len,
             uint64_t *phys0, uint64_t *phys1, unsigned *got) {
  uint64_t gpa;
  *got = 0;
  while (*got < len) {
    uint64_t a = lin + *got;
    if ((b->key & BT_K_CODE_MASK) != BT_K_CODE64)
      a = (uint32_t)a;
    int err = bt_translate(b, a, BT_X, false, &gpa);
    if (err < 0)
      return err;
    if (*got == 0)
      *phys0 = gpa;
    else if (phys1)
      *phys1 = gpa;
    unsigned n = 4096 - (unsigned)(a & 0xfff);
    if (n > len - *got)
      n = len - *got;
    bool ro, code;
    uint8_t *p = ram(b, gpa, n, &ro, &code, NULL);
    if (p == NULL)
      return *got ? 0 : BT_EXIT; /* executing MMIO */
    bt_code_mark(b, gpa, 0);
    memcpy(buf + *got, p, n);
    *got += n;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The miss path of translated memory accesses                              */

/* Registers translated code borrowed at this callout get their guest
   values back (from their slots), so ctx->gpr is the exact guest state. */
void bt_unspill(struct bt_vcpu *b, const struct bt_desc *d) {
  if (d->park < 16)
    b->ctx.gpr[R_CX] = b->ctx.gpr[d->park];
  for (unsigned m = d->spill; m != 0; m &= m - 1) {
    unsigned r = (unsigned)__builtin_ctz(m);
    b->ctx.gpr[r] = b->ctx.spill[r];
  }
}

/* Operand of a decoded instruction touching memory (not lea/nop). */
int bt_find_memop(const ZydisDecodedInstruction *di,
                  const ZydisDecodedOperand *op) {
  for (int i = 0; i < di->operand_count; i++)
    if (op[i].type == ZYDIS_OPERAND_TYPE_MEMORY &&
        op[i].mem.type == ZYDIS_MEMOP_TYPE_MEM &&
        op[i].visibility != ZYDIS_OPERAND_VISIBILITY_HIDDEN)
      return i;
  return -1;
}

/*
 * Callouts decode their instruction again each time (a descriptor keeps
 * only its bytes), which was a quarter of a syscall round trip. Decoding
 * is a pure function of the bytes and the mode, so a small cache of
 * results keyed by both is exact. It is 2-way set associative: direct
 * mapped, the two instructions of the divide-by-zero benchmark (`div`,
 * `iretq`) shared a slot and a third of its time was Zydis.
 */
int bt_decode_ref(struct bt_vcpu *b, const uint8_t *bytes, unsigned len,
                  const ZydisDecodedInstruction **di,
                  const ZydisDecodedOperand **op) {
  if (len > 15)
    len = 15;
  uint64_t h = len * 0x9e3779b97f4a7c15ull ^ (uint64_t)b->zmode << 8 ^
               (uint64_t)b->zstack;
  for (unsigned i = 0; i < len; i++)
    h = (h ^ bytes[i]) * 0x100000001b3ull;
  h ^= h >> 31; /* FNV's low bits mix poorly into the high ones */
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  unsigned set = (unsigned)(h & (BT_DCACHE_SIZE / 2 - 1));
  for (unsigned way = 0; way < 2; way++) {
    struct bt_dcache *c = &b->dcache[set * 2 + way];
    if (c->valid && c->len == len && c->zmode == b->zmode &&
        c->zstack == b->zstack && !memcmp(c->bytes, bytes, len)) {
      b->dcache_victim[set] = (uint8_t)(way ^ 1);
      b->dcache_pin = (int)(set * 2 + way);
      *di = &c->di;
      *op = c->op;
      return 0;
    }
  }
  unsigned way = b->dcache_victim[set] & 1;
  if ((int)(set * 2 + way) == b->dcache_pin)
    way ^= 1;
  b->dcache_victim[set] = (uint8_t)(way ^ 1);
  struct bt_dcache *c = &b->dcache[set * 2 + way];
  c->valid = false;
  ZydisDecoder dec;
  ZydisDecoderInit(&dec, b->zmode, b->zstack);
  if (ZYAN_FAILED(ZydisDecoderDecodeFull(&dec, bytes, len, &c->di, c->op)))
    return -1;
  c->valid = true;
  c->gen = ++b->dcache_gen;
  c->len = (uint8_t)len;
  c->zmode = b->zmode;
  c->zstack = b->zstack;
  memcpy(c->bytes, bytes, len);
  b->dcache_pin = (int)(set * 2 + way);
  *di = &c->di;
  *op = c->op;
  return 0;
}

/* A descriptor belongs to one fragment, which runs only in its own mode
   (key), so the decoder mode of its entry is the current one; the bytes
   are the descriptor's own. gen is 64 bits: it never comes round again. */
int bt_decode_desc(struct bt_vcpu *b, struct bt_desc *d,
                   const ZydisDecodedInstruction **di,
                   const ZydisDecodedOperand **op) {
  if (d->dgen != 0 && d->dslot < BT_DCACHE_SIZE) {
    struct bt_dcache *c = &b->dcache[d->dslot];
    if (c->valid && c->gen == d->dgen) {
      b->dcache_victim[d->dslot / 2] = (uint8_t)((d->dslot & 1) ^ 1);
      b->dcache_pin = d->dslot;
      *di = &c->di;
      *op = c->op;
      return 0;
    }
  }
  int rc = bt_decode_ref(b, d->bytes, d->len, di, op);
  if (rc == 0) {
    d->dslot = (uint8_t)b->dcache_pin;
    d->dgen = b->dcache[b->dcache_pin].gen;
  }
  return rc;
}

int bt_decode(struct bt_vcpu *b, const uint8_t *bytes, unsigned len,
              ZydisDecodedInstruction *di, ZydisDecodedOperand *op) {
  const ZydisDecodedInstruction *cdi;
  const ZydisDecodedOperand *cop;
  int pin = b->dcache_pin;
  int rc = bt_decode_ref(b, bytes, len, &cdi, &cop);
  b->dcache_pin = pin;
  if (rc < 0)
    return rc;
  *di = *cdi;
  memcpy(op, cop, sizeof(*op) * cdi->operand_count);
  return 0;
}

/* Leave the fragment at this instruction: completed (RIP after it) or
   not (RIP on it, e.g. waiting for MMIO data). */
static void leave_at(struct bt_vcpu *b, const struct bt_desc *d, bool retired) {
  b->ctx.rip = retired ? d->rip + d->len : d->rip;
  bt_unretire(b, d->n - d->idx - (retired ? 1u : 0u));
}

/* Leave after an exception was delivered: RIP is the handler's now. */
static void leave_fault(struct bt_vcpu *b, const struct bt_desc *d) {
  bt_unretire(b, d->n - d->idx);
}

/*
 * Adaptive translation: an instruction with an inline soft-TLB lookup that
 * keeps taking the slow path anyway (MMIO, writes next to translated code,
 * page-crossing accesses) is retranslated as a plain callout, which skips
 * the lookup that always misses. Its fragment becomes unreachable now and
 * is translated again at the next lookup.
 */
static void adapt(struct bt_vcpu *b, struct bt_desc *d) {
  if (d->retry == 0 || ++d->traps != BT_ADAPT_TRAPS)
    return;
  uint64_t pc = b->ctx.segbase[S_CS] + d->rip;
  if ((b->key & BT_K_CODE_MASK) != BT_K_CODE64)
    pc = (uint32_t)pc;
  bt_adaptive_add(b, pc);
  bt_frag_drop(b, d->frag);
  b->stat_adapted++;
  vmm__log(b->vcpu->vm, VMM_LOG_DEBUG,
           "bt: instruction at 0x%llx keeps trapping: retranslated as a "
           "callout",
           (unsigned long long)pc);
}

int bt_mem_miss(struct bt_vcpu *b, struct bt_desc *d) {
  struct bt_ctx *c = &b->ctx;
  /* The linear address the inline lookup missed on (before unspilling). */
  uint64_t looked_up = c->gpr[d->s1];
  bt_unspill(b, d);
  c->rip = d->rip;
  /* Acknowledge write revocations (bt_wp_shootdown) before deciding, and
     not again before translated code resumes (vmm__bt_callout): a fill or
     a direct RAM pointer decided here is used without another tag check
     (a hoisted lookup's retry, the no-lookup path below), so it must not
     be revoked in between. A revocation that comes later waits for this
     vCPU to acknowledge it, which it does only after the access. */
  bt_check_wp(b);
  bt_mmio_begin(b);
  ZydisDecodedInstruction di;
  ZydisDecodedOperand op[ZYDIS_MAX_OPERAND_COUNT];
  if (bt_decode(b, d->bytes, d->len, &di, op) < 0) {
    bt_internal_error(b, VMM_INTERNAL_UNKNOWN, "miss: undecodable");
    return 1;
  }
  int mi = bt_find_memop(&di, op);
  if (mi < 0) {
    bt_internal_error(b, VMM_INTERNAL_UNKNOWN, "miss: no memory operand");
    return 1;
  }
  const ZydisDecodedOperand *o = &op[mi];
  unsigned size = o->size / 8;
  bool r =
      o->actions & (ZYDIS_OPERAND_ACTION_READ | ZYDIS_OPERAND_ACTION_CONDREAD);
  bool w = o->actions &
           (ZYDIS_OPERAND_ACTION_WRITE | ZYDIS_OPERAND_ACTION_CONDWRITE);
  uint64_t lin;
  if (bt_operand_lin(b, &di, o, size, w, &lin) < 0) {
    leave_fault(b, d);
    return 1;
  }
  /* A TLB entry for another address than the lookup's would make the
     retry miss forever: a translator bug, reported instead of a hang. */
  if (d->retry != 0 && looked_up != lin) {
    bt_internal_error(b, VMM_INTERNAL_UNKNOWN,
                      "miss: inline address 0x%llx, decoded 0x%llx",
                      (unsigned long long)looked_up, (unsigned long long)lin);
    leave_at(b, d, false);
    return 1;
  }
  if (bt_needs_align16(&di, o) && (lin & 15)) {
    bt_raise(b, X86_EXC_GP, true, 0);
    leave_fault(b, d);
    return 1;
  }
  if (bt_ac_fault(b, lin, size) ||
      (size == 10 && (b->key & BT_K_AC) && (lin & 7))) {
    bt_raise(b, X86_EXC_AC, true, 0);
    leave_fault(b, d);
    return 1;
  }
  uint64_t gpa[2];
  unsigned part[2];
  if (xlate2(b, lin, size, w ? BT_W : BT_R, false, gpa, part) < 0) {
    leave_fault(b, d);
    return 1;
  }
  struct bt_bounce *bb = &b->bounce;
  bool ro = false, code = false;
  uint8_t *p = ram(b, gpa[0], part[0], &ro, &code, NULL);
  /* With SMAP on, a supervisor access to a user page depends on
     RFLAGS.AC, which the TLB does not track: no entry for it. */
  bool smap_dep = b->cpl != 3 && (b->cr4 & X86_CR4_SMAP) && b->last_user_page;
  if (part[1] == 0 && p != NULL && !(w && (ro || code))) {
    if (w)
      mark_dirty(b, gpa[0] & ~0xfffull, 4096);
    if (d->retry != 0 && !smap_dep && tlb_fill(b, lin, p, w)) {
      c->cont = d->retry;
      return 0;
    }
    /* No inline lookup (real mode, segments, SMAP): run it on RAM. */
    adapt(b, d);
    bb->active = false;
    c->gpr[d->s1] = (uint64_t)(uintptr_t)p;
    c->cont = d->bounce;
    return 0;
  }
  /* Bounce: page-crossing, MMIO, read-only or code page. */
  adapt(b, d);
  if (size > sizeof(bb->buf)) {
    bt_internal_error(b, VMM_INTERNAL_EMULATION,
                      "%u-byte access needs a bounce buffer", size);
    leave_at(b, d, false);
    return 1;
  }
  memset(bb, 0, offsetof(struct bt_bounce, buf));
  bb->write = w;
  bb->npart = part[1] ? 2 : 1;
  uint8_t *out = bb->buf;
  for (int i = 0; i < bb->npart; i++) {
    bool pro = false, pcode = false;
    uint8_t *q = ram(b, gpa[i], part[i], &pro, &pcode, NULL);
    bb->gpa[i] = gpa[i];
    bb->len[i] = part[i];
    bb->hva[i] = (q && !(w && pro)) ? q : NULL;
    if (bb->hva[i] == NULL)
      bb->mmio = true;
    if (w && pcode)
      bb->code = true;
    if (r || bb->npart == 2 || q != NULL) {
      if (q != NULL) {
        memcpy(out, q, part[i]);
      } else if (r) {
        if (bb->npart == 2) {
          bt_internal_error(b, VMM_INTERNAL_EMULATION,
                            "page-crossing MMIO access at 0x%llx",
                            (unsigned long long)lin);
          leave_at(b, d, false);
          return 1;
        }
        if (mmio_read(b, gpa[i], out, part[i]) < 0) {
          leave_at(b, d, false);
          return 1;
        }
      }
    }
    out += part[i];
  }
  bb->active = true;
  c->gpr[d->s1] = (uint64_t)(uintptr_t)bb->buf;
  c->cont = d->bounce;
  return 0;
}

int bt_mem_post(struct bt_vcpu *b, struct bt_desc *d) {
  struct bt_ctx *c = &b->ctx;
  struct bt_bounce *bb = &b->bounce;
  int leave = 0;
  bt_unspill(b, d);
  if (bb->active && bb->write) {
    const uint8_t *in = bb->buf;
    for (int i = 0; i < bb->npart; i++) {
      if (bb->hva[i] != NULL) {
        memcpy(bb->hva[i], in, bb->len[i]);
        mark_dirty(b, bb->gpa[i], bb->len[i]);
        if (bb->code)
          bt_code_written(b->vcpu->vm, b, bb->gpa[i], bb->len[i]);
      } else {
        if (bb->npart == 2) {
          bt_internal_error(b, VMM_INTERNAL_EMULATION,
                            "page-crossing MMIO write");
        } else {
          mmio_write(b, bb->gpa[i], in, bb->len[i]);
        }
        leave = 1;
      }
      in += bb->len[i];
    }
  }
  bb->active = false;
  bt_mmio_retire(b);
  if (b->cur_invalid)
    leave = 1;
  if (leave) {
    leave_at(b, d, true);
    return 1;
  }
  c->cont = d->after;
  return 0;
}
