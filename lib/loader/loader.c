/*
 * Loader core: options, format detection, the plan (regions checked
 * against the memory slots and against each other before anything is
 * written), memory maps, the VM and file front ends, and the entry state.
 * Format parsers live beside this file. See docs/loader.md.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../internal.h"
#include "internal.h"

#define GIB (1ull << 30)
#define LEGACY_HOLE_START 0xa0000ull
#define LEGACY_HOLE_END 0x100000ull

/* Default layout, see docs/loader.md. */
#define DEFAULT_TABLES 0x9000ull

const char *vmm_image_format_name(enum vmm_image_format fmt) {
  switch (fmt) {
  case VMM_IMAGE_AUTO: return "auto";
  case VMM_IMAGE_RAW: return "raw";
  case VMM_IMAGE_ELF32: return "elf32";
  case VMM_IMAGE_ELF64: return "elf64";
  case VMM_IMAGE_MULTIBOOT: return "multiboot";
  case VMM_IMAGE_BZIMAGE: return "bzimage";
  }
  return "unknown";
}

enum vmm_image_format vmm_loader_detect(const void *image, size_t size) {
  const uint8_t *b = image;

  if (image == NULL)
    return VMM_IMAGE_RAW;
  if (size >= 0x206 && ld_le16(b + 0x1fe) == 0xaa55 &&
      memcmp(b + 0x202, "HdrS", 4) == 0)
    return VMM_IMAGE_BZIMAGE;
  if (vmm__multiboot_find(image, size) >= 0)
    return VMM_IMAGE_MULTIBOOT;
  if (vmm__elf_magic(image, size) && size > 4)
    return b[4] == 2 ? VMM_IMAGE_ELF64 : VMM_IMAGE_ELF32;
  return VMM_IMAGE_RAW;
}

void vmm_loader_options_init(struct vmm_loader_options *opt) {
  if (opt == NULL)
    return;
  memset(opt, 0, sizeof(*opt));
  opt->size = sizeof(*opt);
  opt->format = VMM_IMAGE_AUTO;
  opt->raw_addr = VMM_LOADER_ADDR_AUTO;
  opt->raw_entry = VMM_LOADER_ADDR_AUTO;
  opt->raw_mode = VMM_MODE_REAL;
  opt->boot_info_addr = VMM_LOADER_ADDR_AUTO;
  opt->cmdline_addr = VMM_LOADER_ADDR_AUTO;
  opt->tables_addr = VMM_LOADER_ADDR_AUTO;
  opt->kernel_addr = VMM_LOADER_ADDR_AUTO;
  opt->initrd_addr = VMM_LOADER_ADDR_AUTO;
  opt->modules_addr = VMM_LOADER_ADDR_AUTO;
}

/* ------------------------------------------------------------------------ */
/* Plan helpers                                                             */

int ld_fail(struct ld *ld, int err, const char *fmt, ...) {
  char msg[400];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  vmm__logv_cfg(ld->mem->log, VMM_LOG_ERROR, "loader (%s): %s",
                vmm_image_format_name(ld->res->format), msg);
  return err;
}

int ld_add(struct ld *ld, vmm_gpa_t gpa, uint64_t size, const void *src,
           uint64_t src_len, uint32_t kind, uint32_t index, bool writable,
           const char *name, ...) {
  char nm[sizeof(ld->r[0].name)];
  va_list ap;

  va_start(ap, name);
  vsnprintf(nm, sizeof(nm), name, ap);
  va_end(ap);
  if (size == 0)
    return 0;
  if (gpa >= VMM__GPA_LIMIT || size > VMM__GPA_LIMIT - gpa)
    return ld_fail(ld, VMM_ENOMAP,
                   "%s (0x%llx, 0x%llx bytes) lies beyond the physical "
                   "address space",
                   nm, (unsigned long long)gpa, (unsigned long long)size);
  if (ld->nr >= LD_MAX_REGIONS)
    return ld_fail(ld, VMM_EINVAL, "too many regions (at %s)", nm);
  struct ld_region *r = &ld->r[ld->nr++];
  memset(r, 0, sizeof(*r));
  r->gpa = gpa;
  r->size = size;
  r->src = src;
  r->src_len = src_len < size ? src_len : size;
  r->kind = kind;
  r->index = index;
  r->writable = writable;
  memcpy(r->name, nm, sizeof(nm));
  return 0;
}

int ld_keep(struct ld *ld, void *buf) {
  for (size_t i = 0; i < VMM__ARRAY_SIZE(ld->buf); i++) {
    if (ld->buf[i] == NULL) {
      ld->buf[i] = buf;
      return 0;
    }
  }
  free(buf);
  return VMM_ENOMEM;
}

int ld_cmdline_len(struct ld *ld, const char *s, size_t max, size_t *len) {
  size_t n = s == NULL ? 0 : strnlen(s, VMM_LOADER_MAX_CMDLINE + 1);
  if (max > VMM_LOADER_MAX_CMDLINE)
    max = VMM_LOADER_MAX_CMDLINE;
  if (n > max)
    return ld_fail(
        ld, VMM_E2BIG, "command line is %s%zu bytes long, at most %zu accepted",
        n > VMM_LOADER_MAX_CMDLINE ? "over " : "",
        n > VMM_LOADER_MAX_CMDLINE ? (size_t)VMM_LOADER_MAX_CMDLINE : n, max);
  *len = n;
  return 0;
}

static bool overlaps(vmm_gpa_t a, uint64_t alen, vmm_gpa_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

/* The planned region overlapping [gpa, gpa+size), or NULL. */
static const struct ld_region *plan_conflict(const struct ld *ld, vmm_gpa_t gpa,
                                             uint64_t size) {
  for (size_t i = 0; i < ld->nr; i++)
    if (overlaps(gpa, size, ld->r[i].gpa, ld->r[i].size))
      return &ld->r[i];
  return NULL;
}

static uint64_t align_down(uint64_t v, uint64_t a) {
  return v & ~(a - 1);
}

int ld_find_free(struct ld *ld, uint64_t size, uint64_t align, vmm_gpa_t lo,
                 vmm_gpa_t hi, bool top_down, vmm_gpa_t *out) {
  const struct vmm__loader_mem *m = ld->mem;

  if (size == 0 || align == 0 || (align & (align - 1)))
    return VMM_EINVAL;
  for (size_t k = 0; k < m->nr_slots; k++) {
    size_t i = top_down ? m->nr_slots - 1 - k : k;
    const struct vmm_mem_slot_info *s = &m->slots[i];
    if (s->flags & VMM_MEM_READONLY)
      continue;
    uint64_t rlo = s->gpa > lo ? s->gpa : lo;
    uint64_t rhi = s->gpa + s->size < hi ? s->gpa + s->size : hi;
    if (rlo >= rhi || rhi - rlo < size)
      continue;
    if (top_down) {
      uint64_t start = align_down(rhi - size, align);
      /* Each step moves below one planned region: at most nr steps. */
      while (start >= rlo) {
        const struct ld_region *c = plan_conflict(ld, start, size);
        if (c == NULL) {
          *out = start;
          return 0;
        }
        if (c->gpa < rlo + size)
          break;
        start = align_down(c->gpa - size, align);
      }
    } else {
      uint64_t start = (rlo + align - 1) & ~(align - 1);
      while (start >= rlo && start <= rhi - size) {
        const struct ld_region *c = plan_conflict(ld, start, size);
        if (c == NULL) {
          *out = start;
          return 0;
        }
        uint64_t next = c->gpa + c->size;
        if (next > UINT64_MAX - align)
          break;
        start = (next + align - 1) & ~(align - 1);
      }
    }
  }
  return VMM_ENOSPC;
}

/* Append [addr, addr+size) of type to the map, merging with the last. */
static int e820_push(struct vmm_loader_result *res, uint64_t addr,
                     uint64_t size, uint32_t type) {
  if (size == 0)
    return 0;
  if (res->nr_e820 > 0) {
    struct vmm_e820_entry *last = &res->e820[res->nr_e820 - 1];
    if (last->type == type && last->addr + last->size == addr) {
      last->size += size;
      return 0;
    }
  }
  if (res->nr_e820 >= VMM_LOADER_MAX_E820)
    return VMM_E2BIG;
  res->e820[res->nr_e820++] =
      (struct vmm_e820_entry){.addr = addr, .size = size, .type = type};
  return 0;
}

int ld_memmap(struct ld *ld) {
  struct vmm_loader_result *res = ld->res;
  const struct vmm_loader_options *o = &ld->opt;

  res->nr_e820 = 0;
  if (o->e820 != NULL) {
    if (o->nr_e820 == 0 || o->nr_e820 > VMM_LOADER_MAX_E820)
      return ld_fail(ld, VMM_EINVAL,
                     "memory map override has %zu entries "
                     "(1..%d allowed)",
                     o->nr_e820, VMM_LOADER_MAX_E820);
    for (size_t i = 0; i < o->nr_e820; i++) {
      const struct vmm_e820_entry *e = &o->e820[i];
      if (e->size == 0 || e->addr + e->size < e->addr || e->type == 0)
        return ld_fail(ld, VMM_EINVAL,
                       "memory map override entry %zu is invalid", i);
      res->e820[res->nr_e820++] = *e;
    }
    return 0;
  }
  /* From the slots: read-only slots are not RAM to the guest; the legacy
     VGA/BIOS hole is reported reserved, as on a PC. */
  for (size_t i = 0; i < ld->mem->nr_slots; i++) {
    const struct vmm_mem_slot_info *s = &ld->mem->slots[i];
    uint64_t a = s->gpa, end = s->gpa + s->size;
    uint32_t type =
        (s->flags & VMM_MEM_READONLY) ? VMM_E820_RESERVED : VMM_E820_RAM;
    int err = 0;
    if (a < LEGACY_HOLE_START && err == 0) {
      uint64_t e = end < LEGACY_HOLE_START ? end : LEGACY_HOLE_START;
      err = e820_push(res, a, e - a, type);
      a = e;
    }
    if (a < end && a < LEGACY_HOLE_END && err == 0) {
      uint64_t e = end < LEGACY_HOLE_END ? end : LEGACY_HOLE_END;
      err = e820_push(res, a, e - a, VMM_E820_RESERVED);
      a = e;
    }
    if (a < end && err == 0)
      err = e820_push(res, a, end - a, type);
    if (err < 0)
      return ld_fail(ld, VMM_EINVAL,
                     "the memory slots need more than %d memory map entries",
                     VMM_LOADER_MAX_E820);
  }
  return 0;
}

int ld_tables(struct ld *ld, enum vmm_cpu_mode mode) {
  struct vmm_loader_result *res = ld->res;
  struct vmm_mode_setup ms = {.mode = mode};

  res->mode = mode;
  if (mode == VMM_MODE_REAL)
    return 0;
  vmm_gpa_t t = ld_addr(ld->opt.tables_addr, DEFAULT_TABLES);
  if (t & (VMM_PAGE_SIZE - 1))
    return ld_fail(ld, VMM_EINVAL, "tables_addr 0x%llx is not page aligned",
                   (unsigned long long)t);
  if (mode == VMM_MODE_LONG64) {
    /* Identity-map at least 4 GiB and everything planned so far, so the
       entry code reaches its image, boot data and command line. */
    uint64_t top = 4 * GIB;
    for (size_t i = 0; i < ld->nr; i++) {
      uint64_t end = ld->r[i].gpa + ld->r[i].size;
      if (end > top)
        top = end;
    }
    top = (top + GIB - 1) & ~(GIB - 1);
    if (top > 512 * GIB)
      return ld_fail(ld, VMM_EINVAL,
                     "image reaches 0x%llx; the boot page tables map at most "
                     "512 GiB",
                     (unsigned long long)top);
    ms.identity_size = top;
  }
  uint64_t size = vmm_mode_tables_size(&ms);
  if (mode == VMM_MODE_PROT32 && (t >= (1ull << 32) || size > (1ull << 32) - t))
    return ld_fail(ld, VMM_EINVAL,
                   "tables_addr 0x%llx: 32-bit tables must lie below 4 GiB",
                   (unsigned long long)t);
  res->tables = t;
  res->identity_size = ms.identity_size;
  int err = ld_add(ld, t, size, NULL, 0, VMM_REGION_TABLES, 0, true,
                   "boot tables (GDT/TSS%s)",
                   mode == VMM_MODE_LONG64 ? "/page tables" : "");
  if (err == 0)
    ld->r[ld->nr - 1].reserve_only = true;
  return err;
}

/* Check that every region lies in guest memory and no two overlap. */
static int check_plan(struct ld *ld) {
  const struct vmm__loader_mem *m = ld->mem;

  for (size_t i = 0; i < ld->nr; i++) {
    const struct ld_region *r = &ld->r[i];
    uint64_t cur = r->gpa, end = r->gpa + r->size;
    for (size_t k = 0; k < m->nr_slots && cur < end; k++) {
      const struct vmm_mem_slot_info *s = &m->slots[k];
      if (cur < s->gpa || cur - s->gpa >= s->size)
        continue;
      if (r->writable && (s->flags & VMM_MEM_READONLY))
        return ld_fail(ld, VMM_ENOMAP,
                       "%s at 0x%llx is in a read-only slot; it needs "
                       "writable RAM",
                       r->name, (unsigned long long)cur);
      cur = s->gpa + s->size;
    }
    if (cur < end)
      return ld_fail(ld, VMM_ENOMAP,
                     "%s (0x%llx-0x%llx) is not in guest memory: 0x%llx is "
                     "not backed by a memory slot",
                     r->name, (unsigned long long)r->gpa,
                     (unsigned long long)(end - 1), (unsigned long long)cur);
  }

  /* Sort indices by start; an overlap always involves the region with the
     furthest end seen so far. */
  size_t idx[LD_MAX_REGIONS];
  for (size_t i = 0; i < ld->nr; i++)
    idx[i] = i;
  for (size_t i = 1; i < ld->nr; i++) {
    size_t v = idx[i], j = i;
    while (j > 0 && ld->r[idx[j - 1]].gpa > ld->r[v].gpa) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = v;
  }
  size_t far = SIZE_MAX;
  for (size_t k = 0; k < ld->nr; k++) {
    const struct ld_region *r = &ld->r[idx[k]];
    if (far != SIZE_MAX) {
      const struct ld_region *f = &ld->r[far];
      if (r->gpa < f->gpa + f->size) {
        /* Name them in plan order: the later one overlaps the earlier. */
        const struct ld_region *a = idx[k] > far ? r : f;
        const struct ld_region *b = idx[k] > far ? f : r;
        return ld_fail(ld, VMM_EOVERLAP,
                       "%s (0x%llx-0x%llx) overlaps %s (0x%llx-0x%llx)",
                       a->name, (unsigned long long)a->gpa,
                       (unsigned long long)(a->gpa + a->size - 1), b->name,
                       (unsigned long long)b->gpa,
                       (unsigned long long)(b->gpa + b->size - 1));
      }
      if (r->gpa + r->size > f->gpa + f->size)
        far = idx[k];
    } else {
      far = idx[k];
    }
  }
  return 0;
}

static int commit(struct ld *ld) {
  const struct vmm__loader_mem *m = ld->mem;

  for (size_t i = 0; i < ld->nr; i++) {
    const struct ld_region *r = &ld->r[i];
    int err = 0;
    if (r->reserve_only)
      continue;
    if (r->src_len > 0)
      err = m->write(m->ctx, r->gpa, r->src, r->src_len);
    if (err == 0 && !r->no_zero && r->size > r->src_len)
      err = m->write(m->ctx, r->gpa + r->src_len, NULL, r->size - r->src_len);
    if (err < 0)
      return ld_fail(ld, err, "writing %s failed", r->name);
  }
  return 0;
}

static int check_options(struct ld *ld, const struct vmm_loader_options *o) {
  if (o->format > VMM_IMAGE_BZIMAGE)
    return ld_fail(ld, VMM_EINVAL, "unknown format %d", (int)o->format);
  if (o->raw_mode != VMM_MODE_REAL && o->raw_mode != VMM_MODE_PROT32 &&
      o->raw_mode != VMM_MODE_LONG64)
    return ld_fail(ld, VMM_EINVAL, "unknown raw_mode %d", (int)o->raw_mode);
  if (o->initrd == NULL && o->initrd_size != 0)
    return ld_fail(ld, VMM_EINVAL, "initrd_size without initrd");
  if (o->nr_modules > VMM_LOADER_MAX_MODULES)
    return ld_fail(ld, VMM_EINVAL, "%zu modules, at most %d", o->nr_modules,
                   VMM_LOADER_MAX_MODULES);
  if (o->nr_modules > 0 && o->modules == NULL)
    return ld_fail(ld, VMM_EINVAL, "nr_modules without modules");
  for (size_t i = 0; i < o->nr_modules; i++)
    if (o->modules[i].data == NULL && o->modules[i].size != 0)
      return ld_fail(ld, VMM_EINVAL, "module %zu has a size but no data", i);
  if (o->flags & ~(uint32_t)VMM_LOADER_ELF_VADDR)
    return ld_fail(ld, VMM_EINVAL, "unknown flags 0x%x", o->flags);
  return 0;
}

int vmm__loader_run(const struct vmm__loader_mem *mem, const void *image,
                    size_t size, const struct vmm_loader_options *opt,
                    struct vmm_loader_result *res) {
  if (mem == NULL || res == NULL || (image == NULL && size != 0))
    return VMM_EINVAL;
  if (opt != NULL && (opt->size == 0 || opt->size > sizeof(*opt)))
    return VMM_EINVAL;

  struct ld *ld = calloc(1, sizeof(*ld));
  if (ld == NULL)
    return VMM_ENOMEM;
  ld->mem = mem;
  ld->image = image;
  ld->size = size;
  ld->res = res;
  vmm_loader_options_init(&ld->opt);
  if (opt != NULL) {
    /* A caller built against an older, smaller struct keeps the defaults
       for fields it does not know. */
    memcpy(&ld->opt, opt, opt->size);
    ld->opt.size = sizeof(ld->opt);
  }

  memset(res, 0, sizeof(*res));
  res->format = ld->opt.format;
  res->regs.rflags = 0x2; /* interrupts off, as every protocol wants */
  res->regs.rsp = ld->opt.stack;
  int err = check_options(ld, &ld->opt);
  if (err == 0) {
    if (res->format == VMM_IMAGE_AUTO)
      res->format = vmm_loader_detect(image, size);
    switch (res->format) {
    case VMM_IMAGE_RAW: err = vmm__load_raw(ld); break;
    case VMM_IMAGE_ELF32:
    case VMM_IMAGE_ELF64: err = vmm__load_elf(ld, false); break;
    case VMM_IMAGE_MULTIBOOT: err = vmm__load_multiboot(ld); break;
    case VMM_IMAGE_BZIMAGE: err = vmm__load_bzimage(ld); break;
    default: err = VMM_EINVAL; break;
    }
  }
  if (err == 0)
    err = check_plan(ld);
  if (err == 0)
    err = commit(ld);
  if (err == 0) {
    res->nr_regions = ld->nr;
    for (size_t i = 0; i < ld->nr; i++)
      res->regions[i] = (struct vmm_loader_region){
          .gpa = ld->r[i].gpa,
          .size = ld->r[i].size,
          .kind = ld->r[i].kind,
          .index = ld->r[i].index,
      };
  }
  for (size_t i = 0; i < VMM__ARRAY_SIZE(ld->buf); i++)
    free(ld->buf[i]);
  free(ld);
  return err;
}

int vmm__loader_host_write(void *ctx, vmm_gpa_t gpa, const void *src,
                           uint64_t len) {
  const struct vmm__loader_mem *m = ctx;

  while (len > 0) {
    const struct vmm_mem_slot_info *s = NULL;
    for (size_t i = 0; i < m->nr_slots; i++)
      if (gpa >= m->slots[i].gpa && gpa - m->slots[i].gpa < m->slots[i].size)
        s = &m->slots[i];
    if (s == NULL)
      return VMM_ENOMAP;
    uint64_t off = gpa - s->gpa, n = s->size - off;
    if (n > len)
      n = len;
    if (src != NULL) {
      memcpy((uint8_t *)s->host + off, src, n);
      src = (const uint8_t *)src + n;
    } else {
      memset((uint8_t *)s->host + off, 0, n);
    }
    gpa += n;
    len -= n;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* VM and file front ends                                                   */

static int vm_write(void *ctx, vmm_gpa_t gpa, const void *src, uint64_t len) {
  static const uint8_t zero[4096];
  vmm_vm *vm = ctx;

  if (src != NULL)
    return vmm_mem_write(vm, gpa, src, len);
  while (len > 0) {
    uint64_t n = len < sizeof(zero) ? len : sizeof(zero);
    int err = vmm_mem_write(vm, gpa, zero, n);
    if (err < 0)
      return err;
    gpa += n;
    len -= n;
  }
  return 0;
}

int vmm_loader_load(vmm_vm *vm, const void *image, size_t size,
                    const struct vmm_loader_options *opt,
                    struct vmm_loader_result *res) {
  struct vmm_mem_slot_info slots[VMM_MEM_MAX_SLOTS];
  size_t n = VMM_MEM_MAX_SLOTS;

  if (vm == NULL || res == NULL)
    return VMM_EINVAL;
  int err = vmm_mem_slot_list(vm, slots, &n);
  if (err < 0)
    return err;
  struct vmm__loader_mem mem = {
      .slots = slots,
      .nr_slots = n,
      .write = vm_write,
      .ctx = vm,
      .log = &vm->cfg,
  };
  return vmm__loader_run(&mem, image, size, opt, res);
}

int vmm_loader_map_file(const char *path, const void **data, size_t *size) {
  struct stat st;

  if (path == NULL || data == NULL || size == NULL)
    return VMM_EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return VMM_EINVAL;
  }
  *data = NULL;
  *size = (size_t)st.st_size;
  if (st.st_size > 0) {
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = -errno;
      close(fd);
      return err;
    }
    *data = p;
  }
  close(fd);
  return 0;
}

void vmm_loader_unmap_file(const void *data, size_t size) {
  if (data != NULL && size > 0)
    munmap((void *)data, size);
}

int vmm_loader_load_file(vmm_vm *vm, const char *path,
                         const struct vmm_loader_options *opt,
                         struct vmm_loader_result *res) {
  const void *data;
  size_t size;

  if (vm == NULL || path == NULL || res == NULL)
    return VMM_EINVAL;
  int err = vmm_loader_map_file(path, &data, &size);
  if (err < 0) {
    vmm__log(vm, VMM_LOG_ERROR, "loader: cannot map %s: %s", path,
             vmm_strerror(err));
    return err;
  }
  if (size == 0) {
    vmm__log(vm, VMM_LOG_ERROR, "loader: %s is empty", path);
    return VMM_ETRUNC;
  }
  err = vmm_loader_load(vm, data, size, opt, res);
  vmm_loader_unmap_file(data, size);
  return err;
}

/* ------------------------------------------------------------------------ */
/* Entry state                                                              */

int vmm_loader_apply(vmm_vcpu *vcpu, const struct vmm_loader_result *res) {
  if (vcpu == NULL || res == NULL)
    return VMM_EINVAL;
  if (res->mode != VMM_MODE_REAL && res->mode != VMM_MODE_PROT32 &&
      res->mode != VMM_MODE_LONG64)
    return VMM_EINVAL;
  if (res->mode == VMM_MODE_REAL && res->entry >= LEGACY_HOLE_END)
    return VMM_EINVAL;

  struct vmm_mode_setup ms = {
      .mode = res->mode,
      .cpl = 0,
      .tables = res->tables,
      .identity_size = res->identity_size,
  };
  int err = vmm_vcpu_set_mode(vcpu, &ms);
  if (err < 0)
    return err;
  struct vmm_regs regs = res->regs;
  if (res->mode == VMM_MODE_REAL) {
    /* Real mode reaches 1 MiB through CS: pick the 64 KiB-aligned
       segment holding the entry. */
    struct vmm_sregs sr;
    uint64_t base = res->entry & ~0xffffull;
    if ((err = vmm_vcpu_get_sregs(vcpu, &sr)) < 0)
      return err;
    sr.cs.base = base;
    sr.cs.selector = (uint16_t)(base >> 4);
    if ((err = vmm_vcpu_set_sregs(vcpu, &sr)) < 0)
      return err;
    regs.rip = res->entry - base;
  }
  return vmm_vcpu_set_regs(vcpu, &regs);
}
