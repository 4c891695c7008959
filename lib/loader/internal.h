/*
 * Loader internals: the plan every format builds, and the memory view it
 * is checked against and written through. The view decouples the parsers
 * from vmm_vm so fuzz targets can load into plain host buffers without an
 * engine (vmm__loader_run() with a slot array).
 */
#ifndef LIBVMM_LOADER_INTERNAL_H
#define LIBVMM_LOADER_INTERNAL_H

#include <libvmm/vmm.h>

/*
 * Guest memory as the loader sees it: slots sorted by gpa (host pointers
 * unused by the checks) and a write function. write(ctx, gpa, src, len)
 * copies len bytes, or zero-fills them when src is NULL; the loader calls
 * it only for ranges it checked against the slots.
 */
struct vmm__loader_mem {
  const struct vmm_mem_slot_info *slots;
  size_t nr_slots;
  int (*write)(void *ctx, vmm_gpa_t gpa, const void *src, uint64_t len);
  void *ctx;
  /* Diagnostics sink (may be NULL). */
  const struct vmm_vm_config *log;
};

/* Load through a memory view: the engine-free core of vmm_loader_load(). */
int vmm__loader_run(const struct vmm__loader_mem *mem, const void *image,
                    size_t size, const struct vmm_loader_options *opt,
                    struct vmm_loader_result *res);

/* write() for views whose slots carry valid host pointers. */
int vmm__loader_host_write(void *ctx, vmm_gpa_t gpa, const void *src,
                           uint64_t len);

/* ---- used by the format parsers (the other files of lib/loader) ---- */

/* One range of the plan. */
struct ld_region {
  vmm_gpa_t gpa;
  uint64_t size;    /* footprint in guest memory */
  const void *src;  /* bytes to copy (NULL: none) */
  uint64_t src_len; /* <= size; the rest is zero-filled */
  uint32_t kind, index;
  bool reserve_only; /* checked but written later (mode tables) */
  bool no_zero;      /* leave the bytes past src_len alone */
  bool writable;     /* must be writable RAM (loader structures) */
  char name[48];     /* for diagnostics */
};

#define LD_MAX_REGIONS VMM_LOADER_MAX_REGIONS

struct ld {
  const struct vmm__loader_mem *mem;
  const void *image;
  size_t size;
  struct vmm_loader_options opt;
  struct vmm_loader_result *res;
  size_t nr;
  struct ld_region r[LD_MAX_REGIONS];
  /* Host buffers built by the parsers (zero page, multiboot info,
     command-line area), freed by the core. */
  void *buf[4];
};

#define LD_BYTE(ld, off) (((const uint8_t *)(ld)->image)[off])

/* Little-endian reads; the caller has bounds-checked off. */
static inline uint16_t ld_le16(const void *p) {
  const uint8_t *b = p;
  return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t ld_le32(const void *p) {
  const uint8_t *b = p;
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}
static inline uint64_t ld_le64(const void *p) {
  const uint8_t *b = p;
  return (uint64_t)ld_le32(b) | (uint64_t)ld_le32(b + 4) << 32;
}
static inline void ld_put16(void *p, uint16_t v) {
  uint8_t *b = p;
  b[0] = (uint8_t)v;
  b[1] = (uint8_t)(v >> 8);
}
static inline void ld_put32(void *p, uint32_t v) {
  uint8_t *b = p;
  for (int i = 0; i < 4; i++)
    b[i] = (uint8_t)(v >> (8 * i));
}
static inline void ld_put64(void *p, uint64_t v) {
  ld_put32(p, (uint32_t)v);
  ld_put32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* True if [off, off + len) lies within [0, total), overflow-safe. */
static inline bool ld_in_file(uint64_t off, uint64_t len, uint64_t total) {
  return off <= total && len <= total - off;
}

/* Log an error through the view's sink and return err. */
int ld_fail(struct ld *ld, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append a region; -VMM_EINVAL (logged) when the plan is full or the
   range overflows. name is printf-formatted. */
int ld_add(struct ld *ld, vmm_gpa_t gpa, uint64_t size, const void *src,
           uint64_t src_len, uint32_t kind, uint32_t index, bool writable,
           const char *name, ...) __attribute__((format(printf, 9, 10)));

/* The address to use for an option: its value, or def when AUTO. */
static inline vmm_gpa_t ld_addr(vmm_gpa_t opt, vmm_gpa_t def) {
  return opt == VMM_LOADER_ADDR_AUTO ? def : opt;
}

/* Find size bytes of free writable RAM aligned to align inside
   [lo, hi). top_down picks the highest fit. -VMM_ENOSPC if none. */
int ld_find_free(struct ld *ld, uint64_t size, uint64_t align, vmm_gpa_t lo,
                 vmm_gpa_t hi, bool top_down, vmm_gpa_t *out);

/* Build res->e820 (from options or slots); idempotent. */
int ld_memmap(struct ld *ld);

/* Reserve the mode tables for mode (identity map covering what's
   planned) and fill res->mode/tables/identity_size. */
int ld_tables(struct ld *ld, enum vmm_cpu_mode mode);

/* Keep a malloc'd buffer until the load ends. */
int ld_keep(struct ld *ld, void *buf);

/* Command-line length check: -VMM_E2BIG (logged) beyond max. */
int ld_cmdline_len(struct ld *ld, const char *s, size_t max, size_t *len);

/* Format parsers. They parse, add regions and fill res; the core checks
   the plan and writes memory afterwards. */
int vmm__load_raw(struct ld *ld);
int vmm__load_elf(struct ld *ld, bool multiboot);
int vmm__load_multiboot(struct ld *ld);
int vmm__load_bzimage(struct ld *ld);

/* ELF helpers shared with multiboot. */
bool vmm__elf_magic(const void *image, size_t size);
/* Multiboot header search: offset or -1. */
long vmm__multiboot_find(const void *image, size_t size);

#endif
