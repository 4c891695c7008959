/*
 * The translation cache: code memory (a memfd mapped twice, writable and
 * executable), the fragment table, chaining links, the jump cache, and
 * invalidation. Memory is reclaimed only by a whole flush, done by the
 * dispatcher when the code area or an arena is full (docs/bt.md).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bt.h"
#include "emit.h"

int bt_tc_init(struct bt_tc *tc, size_t size) {
  memset(tc, 0, sizeof(*tc));
  tc->fd = -1;
  tc->size = size;
  int fd = memfd_create("libvmm-bt-tc", MFD_CLOEXEC);
  if (fd < 0)
    return -errno;
  int err = 0;
  if (ftruncate(fd, (off_t)size) < 0) {
    err = -errno;
    goto fail;
  }
  tc->rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (tc->rw == MAP_FAILED) {
    err = -errno;
    tc->rw = NULL;
    goto fail;
  }
  tc->rx = mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
  if (tc->rx == MAP_FAILED) {
    err = -errno;
    tc->rx = NULL;
    goto fail;
  }
  tc->fd = fd;
  tc->max_frags = (unsigned)(size / BT_FRAG_BYTES);
  tc->max_links = tc->max_frags * 2;
  tc->max_descs = tc->max_frags * 4;
  tc->frags = calloc(tc->max_frags, sizeof(*tc->frags));
  tc->links = calloc(tc->max_links, sizeof(*tc->links));
  tc->descs = calloc(tc->max_descs, sizeof(*tc->descs));
  tc->pages = calloc(tc->max_frags * 2, sizeof(*tc->pages));
  if (!tc->frags || !tc->links || !tc->descs || !tc->pages) {
    bt_tc_fini(tc);
    return VMM_ENOMEM;
  }
  return 0;
fail:
  if (tc->rw)
    munmap(tc->rw, size);
  if (tc->rx)
    munmap(tc->rx, size);
  close(fd);
  tc->rw = tc->rx = NULL;
  return err;
}

void bt_tc_fini(struct bt_tc *tc) {
  if (tc->rw)
    munmap(tc->rw, tc->size);
  if (tc->rx)
    munmap(tc->rx, tc->size);
  if (tc->fd >= 0)
    close(tc->fd);
  free(tc->frags);
  free(tc->links);
  free(tc->descs);
  free(tc->pages);
  memset(tc, 0, sizeof(*tc));
  tc->fd = -1;
}

uint64_t bt_tc_addr(const struct bt_tc *tc, uint32_t off) {
  return (uint64_t)(uintptr_t)tc->rx + off;
}

/* Jump cache entry i is empty when its tag cannot belong to slot i. */
static uint64_t jc_empty(unsigned i) {
  return -(uint64_t)((i + 1) & (BT_JC_SIZE - 1));
}

/* Mode changes other than privilege (bt_jc_same) flush the cache: empty
   only the entries filled since the last flush while there are few of
   them. */
void bt_jc_flush(struct bt_vcpu *b) {
  if (b->jc_nused <= BT_JC_TRACK) {
    for (unsigned k = 0; k < b->jc_nused; k++)
      b->ctx.jc_npc[b->jc_used[k]] = jc_empty(b->jc_used[k]);
  } else {
    for (unsigned i = 0; i < BT_JC_SIZE; i++)
      b->ctx.jc_npc[i] = jc_empty(i);
  }
  b->jc_nused = 0;
  b->jc_lo = UINT64_MAX;
  b->jc_hi = 0;
}

/* Only the dispatcher fills, under the link lock, so a kick (which empties
   the cache under the same lock) cannot be undone by a racing fill. */
void bt_jc_fill(struct bt_vcpu *b, struct bt_frag *f) {
  unsigned i = (unsigned)(f->pc & (BT_JC_SIZE - 1));
  pthread_mutex_lock(&b->link_lock);
  if (!atomic_load(&b->kicked) && f->valid) {
    b->ctx.jc_host[i] = bt_tc_addr(&b->tc, f->entry);
    b->ctx.jc_warm[i] = bt_tc_addr(&b->tc, f->warm);
    b->ctx.jc_npc[i] = bt_jc_tag(f->pc, f->key);
    if (b->jc_nused < BT_JC_TRACK)
      b->jc_used[b->jc_nused] = (uint16_t)i;
    if (b->jc_nused <= BT_JC_TRACK)
      b->jc_nused++;
    if (f->pc < b->jc_lo)
      b->jc_lo = f->pc;
    if (f->pc > b->jc_hi)
      b->jc_hi = f->pc;
  }
  pthread_mutex_unlock(&b->link_lock);
}

void bt_xc_flush(struct bt_vcpu *b) {
  memset(b->xc, 0, sizeof(b->xc));
}

void bt_tc_flush(struct bt_vcpu *b) {
  struct bt_tc *tc = &b->tc;
  bt_xc_flush(b);
  pthread_mutex_lock(&b->link_lock);
  tc->used = 0;
  tc->nfrags = 0;
  tc->nlinks = 0;
  tc->ndescs = 0;
  tc->npages = 0;
  memset(tc->hash, 0, sizeof(tc->hash));
  memset(tc->phash, 0, sizeof(tc->phash));
  tc->flushes++;
  b->sys_inline = false; /* no inline syscall or sysret left */
  bt_jc_flush(b);
  pthread_mutex_unlock(&b->link_lock);
}

static unsigned frag_hash(uint64_t pc, uint32_t key) {
  uint64_t h = pc * 0x9e3779b97f4a7c15ull ^ key;
  return (unsigned)(h >> 52) & (BT_FRAG_HASH - 1);
}

struct bt_frag *bt_frag_find(struct bt_vcpu *b, uint64_t pc, uint64_t phys0) {
  uint64_t csb = b->ctx.segbase[S_CS];
  for (struct bt_frag *f = b->tc.hash[frag_hash(pc, b->key)]; f; f = f->hnext)
    if (f->valid && f->pc == pc && f->key == b->key && f->phys[0] == phys0 &&
        f->cs_base == csb)
      return f;
  return NULL;
}

struct bt_frag *bt_frag_alloc(struct bt_vcpu *b) {
  struct bt_tc *tc = &b->tc;
  if (tc->nfrags == tc->max_frags)
    return NULL;
  struct bt_frag *f = &tc->frags[tc->nfrags++];
  memset(f, 0, sizeof(*f));
  return f;
}

struct bt_link *bt_link_alloc(struct bt_vcpu *b) {
  struct bt_tc *tc = &b->tc;
  if (tc->nlinks == tc->max_links)
    return NULL;
  struct bt_link *l = &tc->links[tc->nlinks++];
  memset(l, 0, sizeof(*l));
  return l;
}

struct bt_desc *bt_desc_alloc(struct bt_vcpu *b, uint32_t *index) {
  struct bt_tc *tc = &b->tc;
  if (tc->ndescs == tc->max_descs)
    return NULL;
  *index = tc->ndescs;
  struct bt_desc *d = &tc->descs[tc->ndescs++];
  memset(d, 0, sizeof(*d));
  return d;
}

static struct bt_pagelist *page_get(struct bt_vcpu *b, uint64_t page,
                                    bool create) {
  struct bt_tc *tc = &b->tc;
  unsigned h = (unsigned)((page >> 12) * 0x9e3779b1u) & (BT_PAGE_HASH - 1);
  for (struct bt_pagelist *p = tc->phash[h]; p; p = p->next)
    if (p->page == page)
      return p;
  if (!create || tc->npages == tc->max_frags * 2)
    return NULL;
  struct bt_pagelist *p = &tc->pages[tc->npages++];
  p->page = page;
  p->frags = NULL;
  p->next = tc->phash[h];
  tc->phash[h] = p;
  return p;
}

void bt_frag_insert(struct bt_vcpu *b, struct bt_frag *f) {
  unsigned h = frag_hash(f->pc, f->key);
  f->hnext = b->tc.hash[h];
  b->tc.hash[h] = f;
  for (int i = 0; i < 2; i++) {
    if (f->phys[i] == ~0ull)
      continue;
    /* page_get cannot fail here: the arena holds two pages per fragment. */
    struct bt_pagelist *p = page_get(b, f->phys[i], true);
    f->pnext[i] = p->frags;
    p->frags = f;
  }
  f->valid = true;
}

/* A region link's entry into its target: the flags entry where the
   target expects the flags the link brings. */
static uint32_t kept_entry(const struct bt_link *l, const struct bt_frag *to) {
  return l->flen && l->flen == to->flen && l->fbytes == to->fbytes
             ? to->kflags
             : to->kwarm;
}

/* Point a link at a fragment, or back at its exit stub (to == NULL). */
static void link_set(struct bt_vcpu *b, struct bt_link *l, struct bt_frag *to) {
  struct bt_tc *tc = &b->tc;
  uint32_t off = to == NULL ? l->stub
                 : l->head   ? l->head
                 : l->kset   ? kept_entry(l, to)
                 : l->warm   ? to->warm
                             : to->entry;
  uint64_t target = bt_tc_addr(tc, off);
  e_set_rel32(tc->rw + l->patch, bt_tc_addr(tc, l->patch), target);
  l->to = to;
}

void bt_link_patch(struct bt_vcpu *b, struct bt_link *l, struct bt_frag *to) {
  pthread_mutex_lock(&b->link_lock);
  /* A kick since the dispatcher decided to run on must win: leave the
     link open so the next trip comes back. */
  if (!atomic_load(&b->kicked) && to->valid && l->from->valid && !l->to &&
      (!l->head || to == l->from) && (!l->kset || l->kset == to->kset)) {
    if (l->listed != to) {
      if (l->listed != NULL) {
        struct bt_link **pp = &l->listed->in;
        while (*pp && *pp != l)
          pp = &(*pp)->next_in;
        if (*pp)
          *pp = l->next_in;
      }
      l->next_in = to->in;
      to->in = l;
      l->listed = to;
    }
    link_set(b, l, to);
    if (l->cross_page) {
      uint64_t lo = to->lin[0];
      uint64_t hi = to->phys[1] != ~0ull ? to->lin[1] : lo;
      if (lo > hi) {
        uint64_t x = lo;
        lo = hi;
        hi = x;
      }
      if (lo < b->xl_lo)
        b->xl_lo = lo;
      if (hi > b->xl_hi)
        b->xl_hi = hi;
    }
  }
  pthread_mutex_unlock(&b->link_lock);
}

static void unlink_if(struct bt_vcpu *b, bool backward, bool cross) {
  struct bt_tc *tc = &b->tc;
  for (unsigned i = 0; i < tc->nlinks; i++) {
    struct bt_link *l = &tc->links[i];
    if (l->to && ((backward && l->backward) || (cross && l->cross_page))) {
      /* Leave it on the target's list; link_set(NULL) only retargets. */
      link_set(b, l, NULL);
    }
  }
}

/* Caller holds link_lock (kick) or is the vCPU thread. */
void bt_unlink_backward(struct bt_vcpu *b) {
  unlink_if(b, true, false);
}

void bt_unlink_cross_page(struct bt_vcpu *b) {
  bt_xc_flush(b);
  pthread_mutex_lock(&b->link_lock);
  unlink_if(b, false, true);
  b->xl_lo = UINT64_MAX;
  b->xl_hi = 0;
  bt_jc_flush(b);
  pthread_mutex_unlock(&b->link_lock);
}

static bool in_region(uint64_t page, uint64_t base, uint64_t size) {
  return page - base < size;
}

/* invlpg: only code in the naturally aligned region of `size` bytes
   around lin may now translate differently; links and jump-cache entries
   elsewhere stay (the dispatcher's cache is emptied, so its next lookups
   walk the page tables). */
void bt_unlink_region(struct bt_vcpu *b, uint64_t lin, uint64_t size) {
  uint64_t base = lin & ~(size - 1);
  bt_xc_flush(b);
  pthread_mutex_lock(&b->link_lock);
  struct bt_tc *tc = &b->tc;
  /* Linked cross-page targets lie in pages [xl_lo, xl_hi]. */
  bool meets = b->xl_lo <= b->xl_hi && b->xl_lo < base + size &&
               b->xl_hi + 4096 > base;
  for (unsigned i = 0; meets && i < tc->nlinks; i++) {
    struct bt_link *l = &tc->links[i];
    if (l->to && l->cross_page &&
        (in_region(l->to->lin[0], base, size) ||
         (l->to->phys[1] != ~0ull && in_region(l->to->lin[1], base, size))))
      link_set(b, l, NULL);
  }
  /* The cache holds PCs in [jc_lo, jc_hi]; their code may reach into the
     next page. Scanning it costs more than refilling it. */
  if (b->jc_lo <= b->jc_hi && b->jc_lo < base + size &&
      (b->jc_hi | 0xfff) + 1 >= base)
    bt_jc_flush(b);
  pthread_mutex_unlock(&b->link_lock);
}

/* Make f unreachable: unhash it and point links into it back at their
   stubs. Its code stays intact until the next flush, so a callout running
   inside it may return into it. Caller holds link_lock. */
static void frag_drop_locked(struct bt_vcpu *b, struct bt_frag *f) {
  if (!f->valid)
    return;
  f->valid = false;
  struct bt_frag **pp = &b->tc.hash[frag_hash(f->pc, f->key)];
  while (*pp && *pp != f)
    pp = &(*pp)->hnext;
  if (*pp)
    *pp = f->hnext;
  for (struct bt_link *l = f->in; l; l = l->next_in) {
    if (l->to == f)
      link_set(b, l, NULL);
    l->listed = NULL;
  }
  f->in = NULL;
}

void bt_frag_drop(struct bt_vcpu *b, struct bt_frag *f) {
  pthread_mutex_lock(&b->link_lock);
  frag_drop_locked(b, f);
  bt_jc_flush(b);
  pthread_mutex_unlock(&b->link_lock);
}

/* Drop every fragment translated from guest-physical page `page`. */
void bt_invalidate_page(struct bt_vcpu *b, uint64_t page) {
  struct bt_pagelist *p = page_get(b, page, false);
  if (p == NULL)
    return;
  pthread_mutex_lock(&b->link_lock);
  for (struct bt_frag *f = p->frags; f;) {
    struct bt_frag *next = f->phys[0] == page ? f->pnext[0] : f->pnext[1];
    if (f->valid && f == b->cur)
      b->cur_invalid = true;
    frag_drop_locked(b, f);
    f = next;
  }
  p->frags = NULL;
  bt_jc_flush(b);
  pthread_mutex_unlock(&b->link_lock);
}

/* The adaptive set: instructions retranslated as callouts (docs/bt.md,
   "Self-modifying code"). Open addressing on the linear PC. */
static unsigned adapt_slot(uint64_t pc) {
  return (unsigned)((pc * 0x9e3779b97f4a7c15ull) >> 55) & (BT_ADAPT_SIZE - 1);
}

bool bt_adaptive(const struct bt_vcpu *b, uint64_t pc) {
  unsigned i = adapt_slot(pc);
  for (unsigned k = 0; k < 8; k++) {
    uint64_t v = b->adapt[(i + k) & (BT_ADAPT_SIZE - 1)];
    if (v == pc + 1)
      return true;
    if (v == 0)
      return false;
  }
  return false;
}

void bt_adaptive_add(struct bt_vcpu *b, uint64_t pc) {
  unsigned i = adapt_slot(pc);
  for (unsigned k = 0; k < 8; k++) {
    uint64_t *v = &b->adapt[(i + k) & (BT_ADAPT_SIZE - 1)];
    if (*v == 0 || *v == pc + 1) {
      *v = pc + 1;
      return;
    }
  }
  /* Crowded: start over (the set is only a performance hint). */
  memset(b->adapt, 0, sizeof(b->adapt));
  b->adapt[i] = pc + 1;
}
