/*
 * Guest physical memory: slots, gpa-to-hva translation, copies and the
 * software half of dirty logging. See docs/memory.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../internal.h"

int vmm__mem_init(struct vmm__mem *mem) {
  memset(mem, 0, sizeof(*mem));
  atomic_init(&mem->generation, 0);
  int err = -pthread_mutex_init(&mem->dirty_lock, NULL);
  if (err == 0 && (err = -pthread_rwlock_init(&mem->lock, NULL)) < 0)
    pthread_mutex_destroy(&mem->dirty_lock);
  return err;
}

static void slot_free(struct vmm__slot *s) {
  if (s == NULL)
    return;
  if (s->owned)
    munmap(s->host, s->size);
  if (s->fd >= 0)
    close(s->fd);
  free((void *)s->dirty);
  free(s);
}

void vmm__mem_fini(struct vmm__mem *mem) {
  for (unsigned i = 0; i < mem->count; i++)
    slot_free(mem->slots[i]);
  mem->count = 0;
  pthread_rwlock_destroy(&mem->lock);
  pthread_mutex_destroy(&mem->dirty_lock);
}

/* Index of the first slot whose end is above gpa (binary search). */
static unsigned lower_bound(const struct vmm__mem *mem, vmm_gpa_t gpa) {
  unsigned lo = 0, hi = mem->count;

  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    const struct vmm__slot *s = mem->slots[mid];
    if (s->gpa + s->size <= gpa)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

struct vmm__slot *vmm__mem_find_locked(struct vmm__mem *mem, vmm_gpa_t gpa) {
  unsigned i = lower_bound(mem, gpa);

  if (i < mem->count && mem->slots[i]->gpa <= gpa)
    return mem->slots[i];
  return NULL;
}

/* True if [gpa, gpa+len) is inside slot s; len > 0, no overflow. */
static bool slot_contains(const struct vmm__slot *s, vmm_gpa_t gpa,
                          uint64_t len) {
  return gpa >= s->gpa && len <= s->size && gpa - s->gpa <= s->size - len;
}

void *vmm__mem_hva(struct vmm__mem *mem, vmm_gpa_t gpa, uint64_t len,
                   uint32_t *slot_flags) {
  void *hva = NULL;

  if (len == 0)
    return NULL;
  pthread_rwlock_rdlock(&mem->lock);
  struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
  if (s != NULL && slot_contains(s, gpa, len)) {
    hva = s->host + (gpa - s->gpa);
    if (slot_flags != NULL)
      *slot_flags = s->flags;
  }
  pthread_rwlock_unlock(&mem->lock);
  return hva;
}

void vmm__slot_mark_dirty(struct vmm__slot *s, vmm_gpa_t gpa, uint64_t len) {
  if (s->dirty == NULL || len == 0)
    return;
  uint64_t first = (gpa - s->gpa) / VMM_PAGE_SIZE;
  uint64_t last = (gpa - s->gpa + len - 1) / VMM_PAGE_SIZE;
  for (uint64_t p = first; p <= last; p++)
    atomic_fetch_or_explicit(&s->dirty[p / 64], 1ull << (p % 64),
                             memory_order_relaxed);
}

void vmm__mem_mark_dirty(struct vmm__mem *mem, vmm_gpa_t gpa, uint64_t len) {
  pthread_rwlock_rdlock(&mem->lock);
  while (len > 0) {
    struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
    if (s == NULL)
      break;
    uint64_t n = s->gpa + s->size - gpa;
    if (n > len)
      n = len;
    vmm__slot_mark_dirty(s, gpa, n);
    gpa += n;
    len -= n;
  }
  pthread_rwlock_unlock(&mem->lock);
}

static bool page_aligned(uint64_t v) {
  return (v & (VMM_PAGE_SIZE - 1)) == 0;
}

static int alloc_backing(struct vmm__slot *s) {
  if (s->flags & VMM_MEM_HUGEPAGES) {
    /* No commit charge up front, as a memfd's pages are charged when
       touched. */
    void *p = mmap(NULL, s->size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      return -errno;
    /* A host without THP refuses the advice; the memory works as is. */
    (void)madvise(p, s->size, MADV_HUGEPAGE);
    s->host = p;
    s->owned = true;
    return 0;
  }
  int fd = memfd_create("libvmm-ram", MFD_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (ftruncate(fd, (off_t)s->size) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  void *p = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = -errno;
    close(fd);
    return err;
  }
  s->fd = fd;
  s->host = p;
  s->owned = true;
  return 0;
}

int vmm_mem_slot_add(vmm_vm *vm, vmm_gpa_t gpa, uint64_t size, void *host,
                     uint32_t flags, uint32_t *slot_out) {
  if (vm == NULL)
    return VMM_EINVAL;
  if (flags & ~(uint32_t)(VMM_MEM_READONLY | VMM_MEM_DIRTY_LOG |
                          VMM_MEM_HUGEPAGES))
    return VMM_EINVAL;
  if ((flags & VMM_MEM_HUGEPAGES) && host != NULL)
    return VMM_EINVAL;
  if (size == 0)
    return VMM_EINVAL;
  if (!page_aligned(gpa) || !page_aligned(size) ||
      !page_aligned((uintptr_t)host))
    return VMM_EALIGN;
  if (gpa >= VMM__GPA_LIMIT || size > VMM__GPA_LIMIT - gpa)
    return VMM_EINVAL;

  struct vmm__mem *mem = &vm->mem;
  struct vmm__slot *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return VMM_ENOMEM;
  s->gpa = gpa;
  s->size = size;
  s->flags = flags;
  s->fd = -1;
  s->host = host;
  if (flags & VMM_MEM_DIRTY_LOG) {
    uint64_t words = (size / VMM_PAGE_SIZE + 63) / 64;
    s->dirty = calloc(words, sizeof(uint64_t));
    if (s->dirty == NULL) {
      free(s);
      return VMM_ENOMEM;
    }
  }
  if (host == NULL) {
    int err = alloc_backing(s);
    if (err < 0) {
      slot_free(s);
      return err;
    }
  }

  int err = 0;
  pthread_rwlock_wrlock(&mem->lock);
  unsigned i = lower_bound(mem, gpa);
  if (i < mem->count && mem->slots[i]->gpa < gpa + size) {
    err = VMM_EOVERLAP;
    goto out;
  }
  if (mem->count == VMM_MEM_MAX_SLOTS) {
    err = VMM_ENOSPC;
    goto out;
  }
  s->id = (uint32_t)__builtin_ctzll(~mem->used_ids);
  memmove(&mem->slots[i + 1], &mem->slots[i],
          (mem->count - i) * sizeof(mem->slots[0]));
  mem->slots[i] = s;
  mem->count++;
  err = vm->ops->slot_add(vm, s);
  if (err < 0) {
    memmove(&mem->slots[i], &mem->slots[i + 1],
            (mem->count - i - 1) * sizeof(mem->slots[0]));
    mem->count--;
    goto out;
  }
  mem->used_ids |= 1ull << s->id;
  atomic_fetch_add(&mem->generation, 1);
  if (slot_out != NULL)
    *slot_out = s->id;
out:
  pthread_rwlock_unlock(&mem->lock);
  if (err < 0)
    slot_free(s);
  return err;
}

static int find_id_locked(struct vmm__mem *mem, uint32_t id) {
  for (unsigned i = 0; i < mem->count; i++)
    if (mem->slots[i]->id == id)
      return (int)i;
  return -1;
}

int vmm_mem_slot_remove(vmm_vm *vm, uint32_t id) {
  if (vm == NULL)
    return VMM_EINVAL;
  struct vmm__mem *mem = &vm->mem;
  struct vmm__slot *s = NULL;
  int err = 0;

  pthread_rwlock_wrlock(&mem->lock);
  int i = find_id_locked(mem, id);
  if (i < 0) {
    err = VMM_ENOENT;
  } else if (atomic_load(&vm->running) != 0) {
    err = VMM_EBUSY;
  } else {
    s = mem->slots[i];
    memmove(&mem->slots[i], &mem->slots[i + 1],
            (mem->count - (unsigned)i - 1) * sizeof(mem->slots[0]));
    mem->count--;
    mem->used_ids &= ~(1ull << s->id);
    vm->ops->slot_remove(vm, s);
    atomic_fetch_add(&mem->generation, 1);
  }
  pthread_rwlock_unlock(&mem->lock);
  slot_free(s);
  return err;
}

static void fill_info(const struct vmm__slot *s, struct vmm_mem_slot_info *o) {
  o->id = s->id;
  o->flags = s->flags;
  o->gpa = s->gpa;
  o->size = s->size;
  o->host = s->host;
  o->fd = s->fd;
}

int vmm_mem_slot_info(vmm_vm *vm, uint32_t id, struct vmm_mem_slot_info *info) {
  if (vm == NULL || info == NULL)
    return VMM_EINVAL;
  int err = VMM_ENOENT;
  pthread_rwlock_rdlock(&vm->mem.lock);
  int i = find_id_locked(&vm->mem, id);
  if (i >= 0) {
    fill_info(vm->mem.slots[i], info);
    err = 0;
  }
  pthread_rwlock_unlock(&vm->mem.lock);
  return err;
}

int vmm_mem_slot_list(vmm_vm *vm, struct vmm_mem_slot_info *infos,
                      size_t *count) {
  if (vm == NULL || count == NULL || (infos == NULL && *count != 0))
    return VMM_EINVAL;
  pthread_rwlock_rdlock(&vm->mem.lock);
  size_t n = vm->mem.count;
  for (size_t i = 0; i < n && i < *count; i++)
    fill_info(vm->mem.slots[i], &infos[i]);
  pthread_rwlock_unlock(&vm->mem.lock);
  int err = n > *count ? VMM_E2BIG : 0;
  *count = n;
  return err;
}

int vmm_mem_gpa_to_hva(vmm_vm *vm, vmm_gpa_t gpa, uint64_t len, void **hva) {
  if (vm == NULL || hva == NULL || len == 0 || gpa + len < gpa)
    return VMM_EINVAL;
  void *p = vmm__mem_hva(&vm->mem, gpa, len, NULL);
  if (p == NULL)
    return VMM_ENOMAP;
  *hva = p;
  return 0;
}

/*
 * Copy across slots. First checks that every byte is backed, so a failed
 * copy changes nothing.
 */
static int mem_copy(vmm_vm *vm, vmm_gpa_t gpa, void *buf, size_t len,
                    bool write) {
  if (vm == NULL || (buf == NULL && len != 0))
    return VMM_EINVAL;
  if (len == 0)
    return 0;
  if (gpa + len < gpa)
    return VMM_ENOMAP;

  struct vmm__mem *mem = &vm->mem;
  int err = 0;
  pthread_rwlock_rdlock(&mem->lock);
  for (vmm_gpa_t a = gpa, left = len; left > 0;) {
    struct vmm__slot *s = vmm__mem_find_locked(mem, a);
    if (s == NULL) {
      err = VMM_ENOMAP;
      goto out;
    }
    uint64_t n = s->gpa + s->size - a;
    if (n >= left)
      break;
    a += n;
    left -= n;
  }
  uint8_t *p = buf;
  while (len > 0) {
    struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
    uint64_t off = gpa - s->gpa;
    uint64_t n = s->size - off;
    if (n > len)
      n = len;
    if (write) {
      memcpy(s->host + off, p, n);
      vmm__slot_mark_dirty(s, gpa, n);
    } else {
      memcpy(p, s->host + off, n);
    }
    p += n;
    gpa += n;
    len -= n;
  }
out:
  pthread_rwlock_unlock(&mem->lock);
  return err;
}

int vmm_mem_read(vmm_vm *vm, vmm_gpa_t gpa, void *buf, size_t len) {
  return mem_copy(vm, gpa, buf, len, false);
}

int vmm_mem_write(vmm_vm *vm, vmm_gpa_t gpa, const void *buf, size_t len) {
  int err = mem_copy(vm, gpa, (void *)buf, len, true);
  /* Engines that keep translations of guest code must drop stale ones. */
  if (err == 0 && len != 0 && vm->ops->mem_written != NULL)
    vm->ops->mem_written(vm, gpa, len);
  return err;
}

int vmm_mem_dirty_log_get(vmm_vm *vm, uint32_t id, uint64_t *bitmap,
                          size_t bitmap_bytes) {
  if (vm == NULL || bitmap == NULL)
    return VMM_EINVAL;
  struct vmm__mem *mem = &vm->mem;
  int err = 0;

  /*
   * The engine's fetch (KVM_GET_DIRTY_LOG) and our swap of the software
   * bitmap must not interleave with a concurrent fetch: dirty_lock. Only
   * the read lock on the slots: BT's fetch revokes write permissions and
   * waits for every vCPU to acknowledge, and a vCPU may be in a page walk
   * waiting for the read lock (with the write lock held here that was a
   * deadlock; test_dirty_log_race).
   */
  pthread_mutex_lock(&mem->dirty_lock);
  pthread_rwlock_rdlock(&mem->lock);
  int i = find_id_locked(mem, id);
  if (i < 0) {
    err = VMM_ENOENT;
    goto out;
  }
  struct vmm__slot *s = mem->slots[i];
  if (s->dirty == NULL) {
    err = VMM_EINVAL;
    goto out;
  }
  size_t words = (s->size / VMM_PAGE_SIZE + 63) / 64;
  if (bitmap_bytes < words * sizeof(uint64_t)) {
    err = VMM_E2BIG;
    goto out;
  }
  for (size_t w = 0; w < words; w++)
    bitmap[w] = atomic_exchange_explicit(&s->dirty[w], 0, memory_order_relaxed);
  if (vm->ops->dirty_log_fetch != NULL)
    err = vm->ops->dirty_log_fetch(vm, s, bitmap);
out:
  pthread_rwlock_unlock(&mem->lock);
  pthread_mutex_unlock(&mem->dirty_lock);
  return err;
}

/* ------------------------------------------------------------------------ */
/* Host memory management: discard, residency, same-page merging            */

/*
 * Check that every page of [gpa, gpa+size) is in a slot the guest may
 * write. Caller holds the read lock.
 */
static int discard_check_locked(struct vmm__mem *mem, vmm_gpa_t gpa,
                                uint64_t size) {
  while (size > 0) {
    struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
    if (s == NULL)
      return VMM_ENOMAP;
    if (s->flags & VMM_MEM_READONLY)
      return VMM_EREADONLY;
    uint64_t n = s->gpa + s->size - gpa;
    if (n >= size)
      break;
    gpa += n;
    size -= n;
  }
  return 0;
}

/* Give [off, off+len) of one slot back to the host OS. */
static int discard_slot(struct vmm__slot *s, uint64_t off, uint64_t len) {
  if (s->fd >= 0) {
    /* Punching the hole frees the page cache and unmaps it everywhere. */
    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) == 0)
      return 0;
    if (errno != EOPNOTSUPP)
      return -errno;
  }
  /*
   * Caller memory: we do not know how it was mapped. MADV_REMOVE frees a
   * shared file mapping's backing store; the kernel refuses it for private
   * mappings (EINVAL without a file, EACCES for a private file mapping),
   * where MADV_DONTNEED drops our copy of the pages instead.
   */
  void *p = s->host + off;
  if (madvise(p, len, MADV_REMOVE) == 0)
    return 0;
  if (errno != EINVAL && errno != EACCES && errno != EOPNOTSUPP)
    return -errno;
  if (madvise(p, len, MADV_DONTNEED) == 0)
    return 0;
  return -errno;
}

int vmm_mem_discard(vmm_vm *vm, vmm_gpa_t gpa, uint64_t size) {
  if (vm == NULL || size == 0 || gpa + size < gpa)
    return VMM_EINVAL;
  if (!page_aligned(gpa) || !page_aligned(size))
    return VMM_EALIGN;

  struct vmm__mem *mem = &vm->mem;
  vmm_gpa_t start = gpa;
  uint64_t total = size;
  /*
   * The read lock keeps slots from being unmapped under the madvise; the
   * guest may keep running and simply sees fresh pages afterwards.
   */
  pthread_rwlock_rdlock(&mem->lock);
  int err = discard_check_locked(mem, gpa, size);
  while (err == 0 && size > 0) {
    struct vmm__slot *s = vmm__mem_find_locked(mem, gpa);
    uint64_t off = gpa - s->gpa;
    uint64_t n = s->size - off;
    if (n > size)
      n = size;
    err = discard_slot(s, off, n);
    /* The contents changed (to zero): a migration must resend them. */
    vmm__slot_mark_dirty(s, gpa, n);
    gpa += n;
    size -= n;
  }
  pthread_rwlock_unlock(&mem->lock);
  /* Code translated from the old contents is stale now (the BT engine). */
  if (vm->ops->mem_written != NULL)
    vm->ops->mem_written(vm, start, total);
  return err;
}

int vmm_mem_slot_resident(vmm_vm *vm, uint32_t id, uint64_t *bytes) {
  if (vm == NULL || bytes == NULL)
    return VMM_EINVAL;
  enum { CHUNK_PAGES = 16384 };
  unsigned char *vec = malloc(CHUNK_PAGES);
  if (vec == NULL)
    return VMM_ENOMEM;

  int err = 0;
  uint64_t resident = 0;
  pthread_rwlock_rdlock(&vm->mem.lock);
  int i = find_id_locked(&vm->mem, id);
  if (i < 0) {
    err = VMM_ENOENT;
    goto out;
  }
  const struct vmm__slot *s = vm->mem.slots[i];
  for (uint64_t off = 0; off < s->size;) {
    uint64_t n = s->size - off;
    if (n > (uint64_t)CHUNK_PAGES * VMM_PAGE_SIZE)
      n = (uint64_t)CHUNK_PAGES * VMM_PAGE_SIZE;
    if (mincore(s->host + off, n, vec) < 0) {
      err = -errno;
      goto out;
    }
    for (uint64_t p = 0; p < n / VMM_PAGE_SIZE; p++)
      resident += vec[p] & 1;
    off += n;
  }
  *bytes = resident * VMM_PAGE_SIZE;
out:
  pthread_rwlock_unlock(&vm->mem.lock);
  free(vec);
  return err;
}

/*
 * Whether the mapping holding addr carries a VmFlags entry in
 * /proc/self/smaps. madvise(MADV_MERGEABLE) succeeds silently on mappings
 * KSM will never touch (shared ones), so we look at what the kernel
 * recorded instead of trusting the return value.
 */
static int vma_has_flag(const void *addr, const char *flag) {
  FILE *f = fopen("/proc/self/smaps", "re");
  if (f == NULL)
    return -errno;
  char line[512];
  bool in_vma = false;
  int found = 0;
  uintptr_t a = (uintptr_t)addr;
  while (fgets(line, sizeof(line), f) != NULL) {
    unsigned long lo, hi;
    char perms[8];
    /* Mapping headers are "lo-hi perms ...", field lines "Name: value". */
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
      in_vma = a >= lo && a < hi;
      continue;
    }
    if (in_vma && strncmp(line, "VmFlags:", 8) == 0) {
      size_t n = strlen(flag);
      for (char *p = line + 8; (p = strstr(p, flag)) != NULL; p += n)
        if (p[-1] == ' ' && (p[n] == ' ' || p[n] == '\n'))
          found = 1;
      break;
    }
  }
  fclose(f);
  return found;
}

int vmm_mem_slot_set_mergeable(vmm_vm *vm, uint32_t id, bool enable) {
  if (vm == NULL)
    return VMM_EINVAL;
  int err = 0;
  pthread_rwlock_rdlock(&vm->mem.lock);
  int i = find_id_locked(&vm->mem, id);
  if (i < 0) {
    err = VMM_ENOENT;
    goto out;
  }
  const struct vmm__slot *s = vm->mem.slots[i];
  if (s->fd >= 0) {
    /* memfd memory is shared, and KSM merges private anonymous pages. */
    vmm__log(vm, VMM_LOG_WARN,
             "slot %u: KSM needs private anonymous memory (caller memory or "
             "VMM_MEM_HUGEPAGES)", id);
    err = VMM_ENOTSUP;
    goto out;
  }
  if (madvise(s->host, s->size, enable ? MADV_MERGEABLE : MADV_UNMERGEABLE) <
      0) {
    err = errno == EINVAL ? VMM_ENOTSUP : -errno;
    goto out;
  }
  if (enable) {
    int has = vma_has_flag(s->host, "mg");
    if (has == 0) {
      vmm__log(vm, VMM_LOG_WARN,
               "slot %u: the kernel did not mark the memory mergeable "
               "(shared mapping?)",
               id);
      err = VMM_ENOTSUP;
    } else if (has < 0) {
      err = has;
    }
  }
out:
  pthread_rwlock_unlock(&vm->mem.lock);
  return err;
}
