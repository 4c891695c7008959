/*
 * Loader tests: every format, every error path, the engine-free core
 * against the VM front end, and end-to-end guests (the .asm files in
 * tests/loader) run on every available engine.
 *
 *   test_loader <kvm|bt> <guest-dir>     the suite on one engine (skips,
 *                                        exit 77, where it is absent)
 *   test_loader --bzimage <vmlinuz>      the real-kernel check (run by
 *                                        tests/loader/debian_kernel.sh)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loader/internal.h"
#include "testutil.h"

#define MIB (1ull << 20)
#define RAM_SIZE (64 * MIB)
#define FILL 0xa5

static const char *guest_dir;
static const char *bzimage_path;

/* ------------------------------------------------------------------------ */
/* Fixture: a VM with RAM at 0, a log capture                               */

struct env {
  vmm_vm *vm;
  enum vmm_engine_kind engine;
  char log[16384];
  size_t loglen;
  struct vmm_loader_options opt;
  struct vmm_loader_result res;
};

static void log_cb(enum vmm_log_level level, const char *msg, void *opaque) {
  struct env *e = opaque;
  (void)level;
  int n = snprintf(e->log + e->loglen, sizeof(e->log) - e->loglen, "%s\n", msg);
  if (n > 0 && (size_t)n < sizeof(e->log) - e->loglen)
    e->loglen += (size_t)n;
}

/* The engine under test: vmmt_engine, or for the real-kernel check the
   first one available. */
static enum vmm_engine_kind first_engine(void) {
  if (bzimage_path == NULL)
    return vmmt_engine;
  if (vmm_engine_available(VMM_ENGINE_KVM))
    return VMM_ENGINE_KVM;
  return VMM_ENGINE_BT;
}

static struct env *env_new(enum vmm_engine_kind engine, uint64_t ram) {
  struct env *e = calloc(1, sizeof(*e));
  struct vmm_vm_config cfg;
  assert_non_null(e);
  vmm_vm_config_init(&cfg);
  cfg.engine = engine;
  cfg.log_fn = log_cb;
  cfg.log_opaque = e;
  cfg.log_level = VMM_LOG_DEBUG;
  e->engine = engine;
  assert_int_equal(vmm_vm_create(&cfg, &e->vm), 0);
  if (ram > 0) {
    uint32_t slot;
    struct vmm_mem_slot_info info;
    assert_int_equal(vmm_mem_slot_add(e->vm, 0, ram, NULL, 0, &slot), 0);
    assert_int_equal(vmm_mem_slot_info(e->vm, slot, &info), 0);
    /* A pattern, so tests see what the loader zeroes and what it skips. */
    memset(info.host, FILL, ram);
  }
  vmm_loader_options_init(&e->opt);
  return e;
}

static int setup(void **state) {
  *state = env_new(first_engine(), RAM_SIZE);
  return 0;
}

static int teardown(void **state) {
  struct env *e = *state;
  assert_int_equal(vmm_vm_destroy(e->vm), 0);
  free(e);
  return 0;
}

static void log_reset(struct env *e) {
  e->loglen = 0;
  e->log[0] = 0;
}

static int load(struct env *e, const void *img, size_t size) {
  log_reset(e);
  return vmm_loader_load(e->vm, img, size, &e->opt, &e->res);
}

/* Load expecting err, with a diagnostic containing what. */
#define EXPECT_FAIL(e, img, size, err, what)                                   \
  do {                                                                         \
    int rc_ = load((e), (img), (size));                                        \
    if (rc_ != (err) || strstr((e)->log, (what)) == NULL)                      \
      fail_msg("expected %s with \"%s\", got %s; log: %s", vmm_err_name(err),  \
               (what), vmm_err_name(rc_), (e)->log);                           \
  } while (0)

static void mem_read(struct env *e, vmm_gpa_t gpa, void *buf, size_t len) {
  assert_int_equal(vmm_mem_read(e->vm, gpa, buf, len), 0);
}

static uint32_t rd32(struct env *e, vmm_gpa_t gpa) {
  uint8_t b[4];
  mem_read(e, gpa, b, 4);
  return ld_le32(b);
}

static uint64_t rd64(struct env *e, vmm_gpa_t gpa) {
  uint8_t b[8];
  mem_read(e, gpa, b, 8);
  return ld_le64(b);
}

static void expect_fill(struct env *e, vmm_gpa_t gpa, size_t len) {
  uint8_t *b = malloc(len);
  mem_read(e, gpa, b, len);
  for (size_t i = 0; i < len; i++)
    if (b[i] != FILL)
      fail_msg("byte 0x%llx was written (0x%02x)",
               (unsigned long long)(gpa + i), b[i]);
  free(b);
}

static const struct vmm_loader_region *
find_region(const struct env *e, uint32_t kind, uint32_t index) {
  for (size_t i = 0; i < e->res.nr_regions; i++)
    if (e->res.regions[i].kind == kind && e->res.regions[i].index == index)
      return &e->res.regions[i];
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Image builders                                                           */

struct seg {
  uint32_t type;
  uint64_t off, vaddr, paddr, filesz, memsz;
};

/* ELF header and program headers at the start of buf; segment data is
   whatever the caller put at each p_offset. */
static void build_elf(uint8_t *buf, bool is64, uint64_t entry,
                      const struct seg *s, unsigned n) {
  memcpy(buf, "\177ELF", 4);
  buf[4] = is64 ? 2 : 1;
  buf[5] = 1;
  buf[6] = 1;
  ld_put16(buf + 16, 2);
  ld_put16(buf + 18, is64 ? 62 : 3);
  ld_put32(buf + 20, 1);
  if (is64) {
    ld_put64(buf + 24, entry);
    ld_put64(buf + 32, 64);
    ld_put16(buf + 52, 64);
    ld_put16(buf + 54, 56);
    ld_put16(buf + 56, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
      uint8_t *p = buf + 64 + i * 56;
      ld_put32(p, s[i].type);
      ld_put32(p + 4, 7);
      ld_put64(p + 8, s[i].off);
      ld_put64(p + 16, s[i].vaddr);
      ld_put64(p + 24, s[i].paddr);
      ld_put64(p + 32, s[i].filesz);
      ld_put64(p + 40, s[i].memsz);
      ld_put64(p + 48, 0x1000);
    }
  } else {
    ld_put32(buf + 24, (uint32_t)entry);
    ld_put32(buf + 28, 52);
    ld_put16(buf + 40, 52);
    ld_put16(buf + 42, 32);
    ld_put16(buf + 44, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
      uint8_t *p = buf + 52 + i * 32;
      ld_put32(p, s[i].type);
      ld_put32(p + 4, (uint32_t)s[i].off);
      ld_put32(p + 8, (uint32_t)s[i].vaddr);
      ld_put32(p + 12, (uint32_t)s[i].paddr);
      ld_put32(p + 16, (uint32_t)s[i].filesz);
      ld_put32(p + 20, (uint32_t)s[i].memsz);
      ld_put32(p + 24, 7);
      ld_put32(p + 28, 0x1000);
    }
  }
}

#define ELF_SIZE 0x3000
/* A valid two-segment ELF: text 0x100 bytes at file 0x1000 (vaddr
   0xffff800000400000 -> paddr 0x400000 for ELF64, 0x400000 for ELF32),
   data 0x10 bytes at file 0x2000 -> 0x600000 with a 0x1000-byte bss. */
static void std_elf(uint8_t *buf, bool is64, struct seg s[2]) {
  memset(buf, 0, ELF_SIZE);
  uint64_t tv = is64 ? 0xffff800000400000ull : 0x400000;
  s[0] = (struct seg){1, 0x1000, tv, 0x400000, 0x100, 0x100};
  s[1] = (struct seg){1, 0x2000, 0x600000, 0x600000, 0x10, 0x1000};
  for (int i = 0; i < 0x100; i++)
    buf[0x1000 + i] = (uint8_t)(i ^ 0x5a);
  for (int i = 0; i < 0x10; i++)
    buf[0x2000 + i] = (uint8_t)(0xd0 + i);
  build_elf(buf, is64, tv + 0x10, s, 2);
}

#define MB_MAGIC 0x1badb002u
/* Multiboot image with address fields: header at hoff, loaded at 1 MiB. */
struct mb {
  size_t hoff, size;
  uint32_t flags, header_addr, load_addr, load_end, bss_end, entry;
};

static void mb_default(struct mb *m) {
  m->hoff = 0x40;
  m->size = 0x2000;
  m->flags = (1u << 16) | 3;
  m->load_addr = 0x100000;
  m->header_addr = 0x100040;
  m->load_end = 0x101800;
  m->bss_end = 0x103000;
  m->entry = 0x100080;
}

static void build_mb(uint8_t *buf, const struct mb *m) {
  for (size_t i = 0; i < m->size; i++)
    buf[i] = (uint8_t)(i * 7);
  uint8_t *h = buf + m->hoff;
  ld_put32(h, MB_MAGIC);
  ld_put32(h + 4, m->flags);
  ld_put32(h + 8, (uint32_t) - (MB_MAGIC + m->flags));
  ld_put32(h + 12, m->header_addr);
  ld_put32(h + 16, m->load_addr);
  ld_put32(h + 20, m->load_end);
  ld_put32(h + 24, m->bss_end);
  ld_put32(h + 28, m->entry);
}

struct bz {
  uint16_t version;
  uint8_t setup_sects, loadflags, reloc, min_align, jump;
  uint16_t xlf;
  uint32_t syssize, cmdline_size, initrd_max, kalign, init_size;
  uint32_t subarch;
  uint64_t pref, setup_data;
  size_t size;
};

static void bz_default(struct bz *p) {
  memset(p, 0, sizeof(*p));
  p->version = 0x20f;
  p->setup_sects = 3;
  p->loadflags = 1;
  p->reloc = 1;
  p->min_align = 21;
  p->jump = 0x6a;
  p->xlf = 0x7f;
  p->syssize = 0x1000; /* 64 KiB */
  p->cmdline_size = 255;
  p->initrd_max = 0x7fffffff;
  p->kalign = 0x200000;
  p->init_size = 0x400000;
  p->pref = 0x1000000;
  p->size = 4 * 512 + 0x10000 + 64; /* setup, kernel, a trailer */
}

#define BZ_MAX (4 * 512 + 0x10000 + 4096)
static void build_bz(uint8_t *b, const struct bz *p) {
  memset(b, 0, BZ_MAX);
  for (size_t i = 0x1000; i < p->size; i++)
    b[i] = (uint8_t)(i * 13 + 1);
  b[0x1f1] = p->setup_sects;
  ld_put32(b + 0x1f4, p->syssize);
  ld_put16(b + 0x1fa, 0xffff);
  ld_put16(b + 0x1fe, 0xaa55);
  b[0x200] = 0xeb;
  b[0x201] = p->jump;
  memcpy(b + 0x202, "HdrS", 4);
  ld_put16(b + 0x206, p->version);
  b[0x211] = p->loadflags;
  ld_put32(b + 0x214, 0x100000);
  ld_put32(b + 0x22c, p->initrd_max);
  ld_put32(b + 0x230, p->kalign);
  b[0x234] = p->reloc;
  b[0x235] = p->min_align;
  ld_put16(b + 0x236, p->xlf);
  ld_put32(b + 0x238, p->cmdline_size);
  ld_put32(b + 0x23c, p->subarch);
  ld_put64(b + 0x250, p->setup_data);
  ld_put64(b + 0x258, p->pref);
  ld_put32(b + 0x260, p->init_size);
}

/* ------------------------------------------------------------------------ */
/* Detection, options, files                                                */

static void test_detect(void **state) {
  (void)state;
  static uint8_t b[BZ_MAX];
  struct bz p;
  struct seg s[2];
  struct mb m;

  bz_default(&p);
  build_bz(b, &p);
  assert_int_equal(vmm_loader_detect(b, p.size), VMM_IMAGE_BZIMAGE);
  assert_int_equal(vmm_loader_detect(b, 0x205), VMM_IMAGE_RAW);
  std_elf(b, true, s);
  assert_int_equal(vmm_loader_detect(b, ELF_SIZE), VMM_IMAGE_ELF64);
  std_elf(b, false, s);
  assert_int_equal(vmm_loader_detect(b, ELF_SIZE), VMM_IMAGE_ELF32);
  /* An ELF with a Multiboot header is multiboot. */
  ld_put32(b + 0x200, MB_MAGIC);
  ld_put32(b + 0x204, 2);
  ld_put32(b + 0x208, (uint32_t) - (MB_MAGIC + 2));
  assert_int_equal(vmm_loader_detect(b, ELF_SIZE), VMM_IMAGE_MULTIBOOT);
  /* A bad checksum is no header. */
  ld_put32(b + 0x208, 0);
  assert_int_equal(vmm_loader_detect(b, ELF_SIZE), VMM_IMAGE_ELF32);
  mb_default(&m);
  build_mb(b, &m);
  assert_int_equal(vmm_loader_detect(b, m.size), VMM_IMAGE_MULTIBOOT);
  /* Beyond the first 8 KiB the header does not count. */
  memset(b, 0, 0x3000);
  m.hoff = 0x2000;
  m.size = 0x3000;
  build_mb(b, &m);
  memset(b, 0, 0x2000);
  assert_int_equal(vmm_loader_detect(b, m.size), VMM_IMAGE_RAW);
  assert_int_equal(vmm_loader_detect(NULL, 0), VMM_IMAGE_RAW);
  assert_int_equal(vmm_loader_detect("\177EL", 3), VMM_IMAGE_RAW);
  assert_string_equal(vmm_image_format_name(VMM_IMAGE_BZIMAGE), "bzimage");
  assert_string_equal(vmm_image_format_name((enum vmm_image_format)99),
                      "unknown");
}

static void test_bad_arguments(void **state) {
  struct env *e = *state;
  uint8_t b[16] = {0};

  assert_int_equal(vmm_loader_load(NULL, b, 16, NULL, &e->res), VMM_EINVAL);
  assert_int_equal(vmm_loader_load(e->vm, b, 16, NULL, NULL), VMM_EINVAL);
  assert_int_equal(vmm_loader_load(e->vm, NULL, 16, NULL, &e->res), VMM_EINVAL);
  e->opt.format = (enum vmm_image_format)42;
  EXPECT_FAIL(e, b, 16, VMM_EINVAL, "unknown format");
  vmm_loader_options_init(&e->opt);
  e->opt.raw_mode = (enum vmm_cpu_mode)7;
  EXPECT_FAIL(e, b, 16, VMM_EINVAL, "raw_mode");
  vmm_loader_options_init(&e->opt);
  e->opt.initrd_size = 5;
  EXPECT_FAIL(e, b, 16, VMM_EINVAL, "initrd_size");
  vmm_loader_options_init(&e->opt);
  e->opt.nr_modules = VMM_LOADER_MAX_MODULES + 1;
  EXPECT_FAIL(e, b, 16, VMM_EINVAL, "modules");
  vmm_loader_options_init(&e->opt);
  e->opt.flags = 0x80;
  EXPECT_FAIL(e, b, 16, VMM_EINVAL, "flags");
  vmm_loader_options_init(&e->opt);
  e->opt.size = sizeof(e->opt) + 8;
  assert_int_equal(load(e, b, 16), VMM_EINVAL);
  /* A caller compiled with a shorter struct gets defaults for the rest. */
  vmm_loader_options_init(&e->opt);
  e->opt.size = offsetof(struct vmm_loader_options, raw_addr);
  e->opt.raw_addr = 0; /* not seen */
  assert_int_equal(load(e, b, 16), 0);
  assert_int_equal(e->res.image_start, 0x7c00);
  assert_int_equal(vmm_loader_apply(NULL, &e->res), VMM_EINVAL);
}

static void test_load_file(void **state) {
  struct env *e = *state;
  char path[] = "/tmp/libvmm-loader-XXXXXX";
  int fd = mkstemp(path);
  const void *data;
  size_t size;

  assert_true(fd >= 0);
  log_reset(e);
  assert_int_equal(vmm_loader_load_file(e->vm, path, &e->opt, &e->res),
                   VMM_ETRUNC);
  assert_non_null(strstr(e->log, "empty"));
  assert_int_equal(write(fd, "\xf4\xf4", 2), 2);
  close(fd);
  assert_int_equal(vmm_loader_load_file(e->vm, path, &e->opt, &e->res), 0);
  assert_int_equal(e->res.format, VMM_IMAGE_RAW);
  assert_int_equal(rd32(e, 0x7c00) & 0xffff, 0xf4f4);
  assert_int_equal(vmm_loader_map_file(path, &data, &size), 0);
  assert_int_equal(size, 2);
  assert_memory_equal(data, "\xf4\xf4", 2);
  vmm_loader_unmap_file(data, size);
  unlink(path);
  assert_int_equal(vmm_loader_load_file(e->vm, path, &e->opt, &e->res),
                   -ENOENT);
  assert_int_equal(vmm_loader_load_file(e->vm, "/tmp", &e->opt, &e->res),
                   VMM_EINVAL);
  assert_int_equal(vmm_loader_map_file(NULL, &data, &size), VMM_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Raw                                                                      */

static void test_raw(void **state) {
  struct env *e = *state;
  uint8_t img[300];

  for (size_t i = 0; i < sizeof(img); i++)
    img[i] = (uint8_t)i;
  assert_int_equal(load(e, img, sizeof(img)), 0);
  assert_int_equal(e->res.format, VMM_IMAGE_RAW);
  assert_int_equal(e->res.mode, VMM_MODE_REAL);
  assert_int_equal(e->res.entry, 0x7c00);
  assert_int_equal(e->res.regs.rip, 0x7c00);
  assert_int_equal(e->res.nr_regions, 1);
  uint8_t back[300];
  mem_read(e, 0x7c00, back, sizeof(back));
  assert_memory_equal(back, img, sizeof(img));
  expect_fill(e, 0x7c00 + sizeof(img), 16);

  /* Protected mode: default address, tables reserved. */
  e->opt.raw_mode = VMM_MODE_PROT32;
  e->opt.raw_entry = 0x100010;
  assert_int_equal(load(e, img, sizeof(img)), 0);
  assert_int_equal(e->res.image_start, 0x100000);
  assert_int_equal(e->res.regs.rip, 0x100010);
  assert_non_null(find_region(e, VMM_REGION_TABLES, 0));
  assert_int_equal(e->res.tables, 0x9000);

  /* Errors. */
  EXPECT_FAIL(e, img, 0, VMM_ETRUNC, "empty");
  e->opt.raw_addr = 0x9100;
  EXPECT_FAIL(e, img, sizeof(img), VMM_EOVERLAP,
              "boot tables (GDT/TSS) (0x9000-0xbfff) overlaps raw image");
  e->opt.raw_addr = RAM_SIZE - 100;
  EXPECT_FAIL(e, img, sizeof(img), VMM_ENOMAP, "raw image");
  e->opt.raw_addr = UINT64_MAX - 10;
  EXPECT_FAIL(e, img, sizeof(img), VMM_ENOMAP, "physical address space");
  e->opt.raw_addr = 0x20000;
  e->opt.raw_entry = 0x100000000ull;
  EXPECT_FAIL(e, img, sizeof(img), VMM_EINVAL, "above 4 GiB");
  e->opt.raw_mode = VMM_MODE_REAL;
  e->opt.raw_entry = 0x100000;
  EXPECT_FAIL(e, img, sizeof(img), VMM_EINVAL, "above 1 MiB");
}

static void test_failure_writes_nothing(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

  /* Segment 0 is fine, segment 1 overlaps the tables: nothing written. */
  std_elf(b, true, s);
  s[1].paddr = 0xa000;
  build_elf(b, true, s[0].vaddr + 0x10, s, 2);
  EXPECT_FAIL(e, b, ELF_SIZE, VMM_EOVERLAP, "ELF program header 1");
  expect_fill(e, 0x400000, 0x100);
  expect_fill(e, 0x9000, 0x1000);
}

/* ------------------------------------------------------------------------ */
/* ELF                                                                      */

static void check_std_elf(struct env *e, const uint8_t *b, bool is64) {
  uint8_t back[0x100];
  mem_read(e, 0x400000, back, 0x100);
  assert_memory_equal(back, b + 0x1000, 0x100);
  mem_read(e, 0x600000, back, 0x10);
  assert_memory_equal(back, b + 0x2000, 0x10);
  /* The bss is zeroed, nothing past it touched. */
  uint8_t zero[0x1000 - 0x10] = {0};
  uint8_t bss[sizeof(zero)];
  mem_read(e, 0x600010, bss, sizeof(bss));
  assert_memory_equal(bss, zero, sizeof(zero));
  expect_fill(e, 0x601000, 64);
  expect_fill(e, 0x400100, 64);
  assert_int_equal(e->res.elf.segments, 2);
  assert_int_equal(e->res.entry, 0x400010);
  assert_int_equal(e->res.regs.rip, 0x400010);
  assert_int_equal(e->res.image_start, 0x400000);
  assert_int_equal(e->res.image_end, 0x601000);
  assert_int_equal(e->res.mode, is64 ? VMM_MODE_LONG64 : VMM_MODE_PROT32);
  if (is64)
    assert_int_equal(e->res.identity_size, 4ull << 30);
  const struct vmm_loader_region *r = find_region(e, VMM_REGION_IMAGE, 1);
  assert_non_null(r);
  assert_int_equal(r->gpa, 0x600000);
  assert_int_equal(r->size, 0x1000);
}

static void test_elf64(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

  std_elf(b, true, s);
  assert_int_equal(load(e, b, ELF_SIZE), 0);
  assert_int_equal(e->res.format, VMM_IMAGE_ELF64);
  assert_int_equal(e->res.elf.entry_virtual, 0xffff800000400010ull);
  check_std_elf(e, b, true);
}

static void test_elf32(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

  std_elf(b, false, s);
  assert_int_equal(load(e, b, ELF_SIZE), 0);
  assert_int_equal(e->res.format, VMM_IMAGE_ELF32);
  check_std_elf(e, b, false);
}

static void test_elf_vaddr_flag(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

  std_elf(b, false, s);
  s[0].vaddr = 0x500000;
  build_elf(b, false, 0x500010, s, 2);
  e->opt.flags = VMM_LOADER_ELF_VADDR;
  assert_int_equal(load(e, b, ELF_SIZE), 0);
  assert_int_equal(e->res.entry, 0x500010);
  assert_int_equal(rd32(e, 0x500000), ld_le32(b + 0x1000));
}

static void test_elf_truncation(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

  /* Every prefix of a valid ELF fails cleanly; the diagnostic names the
     structure cut: identification, header, program headers, a segment. */
  for (int is64 = 0; is64 < 2; is64++) {
    std_elf(b, is64, s);
    size_t ehsize = is64 ? 64 : 52, phend = ehsize + 2 * (is64 ? 56 : 32);
    e->opt.format = is64 ? VMM_IMAGE_ELF64 : VMM_IMAGE_ELF32;
    for (size_t n = 0; n < 0x2010; n++) {
      const char *what = n < 16       ? "identification truncated"
                         : n < ehsize ? "ELF header truncated"
                         : n < phend  ? "program header table"
                         : n < 0x1100 ? "program header 0: p_offset+p_filesz"
                                      : "program header 1: p_offset+p_filesz";
      if (n >= 0x1100 && n < 0x2000)
        n = 0x2000 - 1; /* nothing changes in between */
      EXPECT_FAIL(e, b, n, VMM_ETRUNC, what);
    }
    assert_int_equal(load(e, b, 0x2010), 0);
  }
}

static void test_elf_bad_headers(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

#define MUTATE(stmt, err, what)                                                \
  do {                                                                         \
    std_elf(b, true, s);                                                       \
    stmt;                                                                      \
    EXPECT_FAIL(e, b, ELF_SIZE, err, what);                                    \
  } while (0)
  e->opt.format = VMM_IMAGE_ELF64;
  MUTATE(b[0] = 0x7e, VMM_EBADIMAGE, "bad ELF magic");
  MUTATE(b[4] = 3, VMM_EBADIMAGE, "bad ELF class 3");
  MUTATE(b[5] = 2, VMM_EBADIMAGE, "not little-endian");
  MUTATE(b[6] = 0, VMM_EBADIMAGE, "ELF version 0");
  MUTATE(ld_put16(b + 16, 1), VMM_EBADIMAGE, "ELF type 1");
  MUTATE(ld_put16(b + 18, 3), VMM_EBADIMAGE, "ELF machine 3");
  MUTATE(ld_put16(b + 54, 55), VMM_EBADIMAGE, "e_phentsize 55");
  MUTATE(ld_put16(b + 56, 0), VMM_EBADIMAGE, "no program headers");
  MUTATE(ld_put16(b + 56, 0xffff), VMM_EBADIMAGE, "PN_XNUM");
  MUTATE(ld_put64(b + 32, UINT64_MAX - 8), VMM_ETRUNC, "program header table");
  /* filesz > memsz */
  MUTATE((s[1].filesz = 0x2000, build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
         VMM_EBADIMAGE, "program header 1: p_filesz 0x2000 exceeds");
  /* p_offset + p_filesz overflows */
  MUTATE((s[1].off = UINT64_MAX - 4, build_elf(b, true, 0, s, 2)), VMM_ETRUNC,
         "program header 1: p_offset+p_filesz");
  /* paddr + memsz overflows */
  MUTATE((s[1].paddr = UINT64_MAX - 0x100,
          build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
         VMM_EBADIMAGE, "program header 1: address");
  MUTATE((s[0].type = 4, s[1].type = 6,
          build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
         VMM_EBADIMAGE, "no loadable segment");
  MUTATE(build_elf(b, true, 0x12345, s, 2), VMM_EBADIMAGE,
         "entry point 0x12345 is not inside");
  /* Outside RAM, on top of each other, on the loader's tables. */
  MUTATE((s[1].paddr = RAM_SIZE - 0x800,
          build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
         VMM_ENOMAP,
         "ELF program header 1 (0x3fff800-0x40007ff) is not in "
         "guest memory");
  MUTATE((s[1].paddr = 0x4000f0, build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
         VMM_EOVERLAP,
         "ELF program header 1 (0x4000f0-0x4010ef) overlaps "
         "ELF program header 0");
  MUTATE((s[0].paddr = 0x8f80, build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
         VMM_EOVERLAP,
         "boot tables (GDT/TSS/page tables) (0x9000-0x11fff) "
         "overlaps ELF program header 0");
  /* A segment beyond 512 GiB cannot be identity mapped. */
  MUTATE(
      (s[1].paddr = 600ull << 30, build_elf(b, true, s[0].vaddr + 0x10, s, 2)),
      VMM_EINVAL, "512 GiB");
  /* The format asked for must match the class. */
  MUTATE(e->opt.format = VMM_IMAGE_ELF32, VMM_EBADIMAGE,
         "image is elf64, not elf32");
  e->opt.format = VMM_IMAGE_ELF32;
  std_elf(b, false, s);
  s[1].paddr = 0xfffff800;
  build_elf(b, false, 0x400010, s, 2);
  EXPECT_FAIL(e, b, ELF_SIZE, VMM_EBADIMAGE, "ends above 4 GiB");
  /* Too many PT_LOAD segments. */
  e->opt.format = VMM_IMAGE_AUTO;
  struct seg many[VMM_LOADER_MAX_SEGMENTS + 1];
  for (unsigned i = 0; i <= VMM_LOADER_MAX_SEGMENTS; i++)
    many[i] = (struct seg){
        1, 0x1000, 0x400000 + i * 0x1000, 0x400000 + i * 0x1000, 0x10, 0x10};
  memset(b, 0, ELF_SIZE);
  build_elf(b, true, 0x400000, many, VMM_LOADER_MAX_SEGMENTS + 1);
  EXPECT_FAIL(e, b, ELF_SIZE, VMM_EBADIMAGE, "more than 64 PT_LOAD");
  build_elf(b, true, 0x400000, many, VMM_LOADER_MAX_SEGMENTS);
  assert_int_equal(load(e, b, ELF_SIZE), 0);
  assert_int_equal(e->res.elf.segments, VMM_LOADER_MAX_SEGMENTS);
#undef MUTATE
}

/* ------------------------------------------------------------------------ */
/* Multiboot                                                                */

static void test_multiboot(void **state) {
  struct env *e = *state;
  static uint8_t b[0x2000];
  struct mb m;
  static const char mod0[] = "module zero";
  static uint8_t mod1[5000];
  struct vmm_loader_module mods[2] = {
      {mod0, sizeof(mod0), "m0 args"},
      {mod1, sizeof(mod1), NULL},
  };

  memset(mod1, 0x42, sizeof(mod1));
  mb_default(&m);
  build_mb(b, &m);
  e->opt.cmdline = "console=ttyS0 hello";
  e->opt.modules = mods;
  e->opt.nr_modules = 2;
  assert_int_equal(load(e, b, m.size), 0);
  assert_int_equal(e->res.format, VMM_IMAGE_MULTIBOOT);
  assert_int_equal(e->res.mode, VMM_MODE_PROT32);
  assert_int_equal(e->res.multiboot.header_offset, 0x40);
  assert_int_equal(e->res.regs.rax, 0x2badb002);
  assert_int_equal(e->res.regs.rip, 0x100080);
  assert_int_equal(e->res.regs.rflags, 0x2);
  vmm_gpa_t info = e->res.regs.rbx;
  assert_int_equal(info, 0x7000);
  assert_int_equal(e->res.multiboot.info, 0x7000);

  /* The image: file bytes up to load_end, then a zeroed bss. */
  uint8_t back[0x1800];
  mem_read(e, 0x100000, back, 0x1800);
  assert_memory_equal(back, b, 0x1800);
  assert_int_equal(rd64(e, 0x101800), 0);
  assert_int_equal(rd64(e, 0x102ff8), 0);

  /* The information structure. */
  uint32_t flags = rd32(e, info);
  assert_int_equal(flags,
                   (1u << 0) | (1u << 2) | (1u << 3) | (1u << 6) | (1u << 9));
  assert_int_equal(rd32(e, info + 4), 640);
  assert_int_equal(rd32(e, info + 8), (RAM_SIZE - MIB) / 1024);
  assert_int_equal(e->res.multiboot.mem_upper, (RAM_SIZE - MIB) / 1024);
  char str[64];
  mem_read(e, rd32(e, info + 16), str, 20);
  assert_string_equal(str, "console=ttyS0 hello");
  assert_int_equal(rd32(e, info + 20), 2);
  vmm_gpa_t ml = rd32(e, info + 24);
  uint32_t m0s = rd32(e, ml), m0e = rd32(e, ml + 4);
  uint32_t m1s = rd32(e, ml + 16), m1e = rd32(e, ml + 20);
  /* Page aligned, after the image (bss included), in order. */
  assert_int_equal(m0s, 0x103000);
  assert_int_equal(m0e, 0x103000 + sizeof(mod0));
  assert_int_equal(m1s, 0x104000);
  assert_int_equal(m1e, 0x104000 + sizeof(mod1));
  mem_read(e, m0s, str, sizeof(mod0));
  assert_string_equal(str, mod0);
  mem_read(e, rd32(e, ml + 8), str, 8);
  assert_string_equal(str, "m0 args");
  mem_read(e, rd32(e, ml + 24), str, 1);
  assert_int_equal(str[0], 0);
  assert_int_equal(rd32(e, ml + 12), 0);
  /* The memory map: RAM, the legacy hole, RAM. */
  assert_int_equal(rd32(e, info + 44), 3 * 24);
  vmm_gpa_t mm = rd32(e, info + 48);
  uint64_t expect[3][3] = {
      {0, 0xa0000, 1}, {0xa0000, 0x60000, 2}, {0x100000, RAM_SIZE - MIB, 1}};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rd32(e, mm + i * 24), 20);
    assert_int_equal(rd64(e, mm + i * 24 + 4), expect[i][0]);
    assert_int_equal(rd64(e, mm + i * 24 + 12), expect[i][1]);
    assert_int_equal(rd32(e, mm + i * 24 + 20), expect[i][2]);
  }
  mem_read(e, rd32(e, info + 64), str, 7);
  assert_string_equal(str, "libvmm");
  assert_non_null(find_region(e, VMM_REGION_MODULE, 1));
  assert_non_null(find_region(e, VMM_REGION_CMDLINE, 0));

  /* A caller-given memory map is what the kernel sees. */
  struct vmm_e820_entry map[2] = {{0, 0x9f000, 1, 0},
                                  {0x100000, 0x1000000, 1, 0}};
  e->opt.e820 = map;
  e->opt.nr_e820 = 2;
  e->opt.nr_modules = 0;
  assert_int_equal(load(e, b, m.size), 0);
  assert_int_equal(rd32(e, info + 4), 0x9f000 / 1024);
  assert_int_equal(rd32(e, info + 8), 0x1000000 / 1024);
  assert_int_equal(rd32(e, info + 44), 2 * 24);
  assert_int_equal(rd32(e, info) & (1u << 3), 0);
  map[1].size = 0;
  EXPECT_FAIL(e, b, m.size, VMM_EINVAL, "memory map override entry 1");
}

static void test_multiboot_elf(void **state) {
  struct env *e = *state;
  static uint8_t b[ELF_SIZE];
  struct seg s[2];

  std_elf(b, false, s);
  s[0].vaddr = 0xc0400000;
  build_elf(b, false, 0xc0400010, s, 2);
  ld_put32(b + 0x200, MB_MAGIC);
  ld_put32(b + 0x204, 2);
  ld_put32(b + 0x208, (uint32_t) - (MB_MAGIC + 2));
  assert_int_equal(load(e, b, ELF_SIZE), 0);
  assert_int_equal(e->res.format, VMM_IMAGE_MULTIBOOT);
  assert_int_equal(e->res.entry, 0x400010);
  assert_int_equal(e->res.regs.rip, 0x400010);
  assert_int_equal(e->res.elf.segments, 2);
  assert_int_equal(rd32(e, 0x600000), ld_le32(b + 0x2000));
  assert_int_equal(rd32(e, e->res.regs.rbx) & (1u << 2), 0); /* no cmdline */
  /* ELF64 multiboot kernels load too, if they stay below 4 GiB. */
  std_elf(b, true, s);
  ld_put32(b + 0x200, MB_MAGIC);
  ld_put32(b + 0x204, 2);
  ld_put32(b + 0x208, (uint32_t) - (MB_MAGIC + 2));
  assert_int_equal(load(e, b, ELF_SIZE), 0);
  assert_int_equal(e->res.mode, VMM_MODE_PROT32);
  s[1].paddr = 0x100000000ull;
  build_elf(b, true, s[0].vaddr + 0x10, s, 2);
  EXPECT_FAIL(e, b, ELF_SIZE, VMM_EBADIMAGE, "above 4 GiB");
}

static void test_multiboot_errors(void **state) {
  struct env *e = *state;
  static uint8_t b[0x3000];
  struct mb m;

#define MB_CASE(stmt, size_, err, what)                                        \
  do {                                                                         \
    mb_default(&m);                                                            \
    stmt;                                                                      \
    build_mb(b, &m);                                                           \
    EXPECT_FAIL(e, b, (size_), err, what);                                     \
  } while (0)
  e->opt.format = VMM_IMAGE_MULTIBOOT;
  memset(b, 0, sizeof(b));
  EXPECT_FAIL(e, b, 0x2000, VMM_EBADIMAGE, "no Multiboot header");
  EXPECT_FAIL(e, b, 8, VMM_ETRUNC, "no Multiboot header");
  MB_CASE(m.flags |= 4, m.size, VMM_EBADIMAGE, "video mode");
  MB_CASE(m.flags |= 1u << 5, m.size, VMM_EBADIMAGE, "unknown features");
  /* Truncated at every byte of the address fields. */
  for (size_t n = 0x40 + 12; n < 0x40 + 32; n++)
    MB_CASE((void)0, n, VMM_ETRUNC, "address fields");
  MB_CASE(m.load_addr = 0x100041, m.size, VMM_EBADIMAGE,
          "load_addr 0x100041 is above header_addr");
  MB_CASE(m.load_addr = 0xf0000, m.size, VMM_EBADIMAGE,
          "exceeds the header's file offset");
  MB_CASE(m.load_end = 0xfff00, m.size, VMM_EBADIMAGE,
          "load_end_addr 0xfff00 is below load_addr");
  MB_CASE(m.load_end = 0x102001, m.size, VMM_ETRUNC,
          "load range (file offset 0x0, 0x2001 bytes) beyond the file");
  MB_CASE(m.bss_end = 0x101000, m.size, VMM_EBADIMAGE,
          "bss_end_addr 0x101000 is below");
  MB_CASE(m.entry = 0x103000, m.size, VMM_EBADIMAGE,
          "entry_addr 0x103000 is outside");
  MB_CASE((m.load_addr = 0xfffff000, m.header_addr = 0xfffff040, m.load_end = 0,
           m.bss_end = 0, m.entry = 0xfffff080),
          m.size, VMM_EBADIMAGE, "ends above 4 GiB");
  /* load_end_addr 0 loads the whole file; bss_end 0 means no bss. */
  MB_CASE((m.load_end = 0, m.bss_end = 0), m.size, 0, "");
  assert_int_equal(e->res.image_end, 0x102000);
  /* The header must end in the first 8 KiB. */
  MB_CASE((m.hoff = 0x1fec, m.header_addr = 0x101fec, m.size = 0x3000,
           m.load_end = 0, m.bss_end = 0),
          m.size, VMM_EBADIMAGE, "first 8192 bytes");
  /* Not ELF and no address fields. */
  MB_CASE(m.flags = 2, m.size, VMM_EBADIMAGE, "not ELF");

  /* Placement: the image on the loader's structures, modules, options. */
  MB_CASE((m.load_addr = 0x7000, m.header_addr = 0x7040, m.load_end = 0x7800,
           m.bss_end = 0, m.entry = 0x7100),
          m.size, VMM_EOVERLAP, "Multiboot information (0x7000-0x");
  e->opt.boot_info_addr = 0x100000000ull;
  MB_CASE((void)0, m.size, VMM_EINVAL, "below 4 GiB");
  e->opt.boot_info_addr = 0x8000;
  e->opt.cmdline = "x";
  e->opt.cmdline_addr = 0x8010;
  MB_CASE((void)0, m.size, VMM_EOVERLAP, "overlaps command line");
  vmm_loader_options_init(&e->opt);
  uint8_t mod[64] = {1};
  struct vmm_loader_module mods[2] = {{mod, 64, "a"}, {mod, 64, NULL}};
  e->opt.modules = mods;
  e->opt.nr_modules = 2;
  e->opt.modules_addr = 0x102000;
  MB_CASE((void)0, m.size, VMM_EOVERLAP, "module 0");
  e->opt.modules_addr = 0x200000;
  MB_CASE((void)0, m.size, 0, "");
  assert_int_equal(find_region(e, VMM_REGION_MODULE, 1)->gpa, 0x201000);
  e->opt.modules_addr = 0xfffff000;
  MB_CASE((void)0, m.size, VMM_EINVAL, "module 1");
  e->opt.modules_addr = VMM_LOADER_ADDR_AUTO;
  mods[1].size = RAM_SIZE;
  MB_CASE((void)0, m.size, VMM_ENOSPC, "no free RAM below 4 GiB for module 1");
  static char longcmd[VMM_LOADER_MAX_CMDLINE + 2];
  memset(longcmd, 'a', sizeof(longcmd) - 1);
  mods[1].size = 64;
  mods[1].cmdline = longcmd;
  MB_CASE((void)0, m.size, VMM_E2BIG, "command line is over 65536 bytes");
#undef MB_CASE
}

/* ------------------------------------------------------------------------ */
/* bzImage                                                                  */

static void test_bzimage(void **state) {
  struct env *e = *state;
  static uint8_t b[BZ_MAX];
  static uint8_t initrd[3 * 4096 + 100];
  struct bz p;

  bz_default(&p);
  p.subarch = 2;          /* the image may not choose Xen */
  p.setup_data = 0x12345; /* nor hand the kernel a pointer */
  build_bz(b, &p);
  for (size_t i = 0; i < sizeof(initrd); i++)
    initrd[i] = (uint8_t)(i * 3);
  e->opt.cmdline = "console=ttyS0 root=/dev/vda";
  e->opt.initrd = initrd;
  e->opt.initrd_size = sizeof(initrd);
  assert_int_equal(load(e, b, p.size), 0);
  struct vmm_loader_result *r = &e->res;
  assert_int_equal(r->format, VMM_IMAGE_BZIMAGE);
  assert_int_equal(r->mode, VMM_MODE_LONG64);
  assert_int_equal(r->identity_size, 4ull << 30);
  assert_int_equal(r->bzimage.version, 0x20f);
  assert_int_equal(r->bzimage.setup_sects, 3);
  assert_int_equal(r->bzimage.kernel_offset, 4 * 512);
  assert_int_equal(r->bzimage.kernel_size, 0x10000);
  assert_int_equal(r->bzimage.kernel, 0x100000);
  assert_int_equal(r->bzimage.runtime_start, 0x1000000);
  assert_int_equal(r->entry, 0x100200);
  assert_int_equal(r->regs.rip, 0x100200);
  assert_int_equal(r->regs.rsi, 0x7000);
  assert_int_equal(r->regs.rflags, 0x2);
  /* The kernel region reaches to the end of the init_size area. */
  const struct vmm_loader_region *k = find_region(e, VMM_REGION_KERNEL, 0);
  assert_non_null(k);
  assert_int_equal(k->gpa, 0x100000);
  assert_int_equal(k->size, 0x1000000 + 0x400000 - 0x100000);

  static uint8_t back[0x10000];
  mem_read(e, 0x100000, back, 0x10000);
  assert_memory_equal(back, b + 4 * 512, 0x10000);
  expect_fill(e, 0x110000, 64); /* the kernel zeroes its own bss */

  /* The initrd: as high as possible, page aligned, intact. */
  assert_int_equal(r->bzimage.initrd, (RAM_SIZE - sizeof(initrd)) & ~0xfffull);
  static uint8_t rd[sizeof(initrd)];
  mem_read(e, r->bzimage.initrd, rd, sizeof(rd));
  assert_memory_equal(rd, initrd, sizeof(rd));

  /* The zero page. */
  static uint8_t zp[4096];
  mem_read(e, 0x7000, zp, sizeof(zp));
  for (size_t i = 0; i < 0x1f1; i++)
    if (i != 0x1e8 && (i < 0xc0 || i >= 0xcc))
      assert_int_equal(zp[i], 0);
  assert_int_equal(zp[0x1ef], 0); /* sentinel */
  assert_int_equal(zp[0x1f1], 3);
  assert_int_equal(ld_le32(zp + 0x1f4), 0x1000);
  assert_memory_equal(zp + 0x202, "HdrS", 4);
  assert_int_equal(ld_le16(zp + 0x206), 0x20f);
  assert_int_equal(zp[0x210], 0xff);
  assert_int_equal(ld_le32(zp + 0x214), 0x100000);
  assert_int_equal(ld_le32(zp + 0x218), r->bzimage.initrd);
  assert_int_equal(ld_le32(zp + 0x21c), sizeof(initrd));
  assert_int_equal(ld_le32(zp + 0x228), 0x20000);
  assert_int_equal(ld_le32(zp + 0xc8), 0);
  assert_int_equal(ld_le32(zp + 0x22c), 0x7fffffff);
  assert_int_equal(ld_le32(zp + 0x23c), 0);
  assert_int_equal(ld_le64(zp + 0x250), 0);
  assert_int_equal(ld_le32(zp + 0x260), 0x400000);
  /* Nothing past the header's end (0x202 + 0x6a) is copied. */
  for (size_t i = 0x26c; i < 0x2d0; i++)
    assert_int_equal(zp[i], 0);
  assert_int_equal(zp[0x1e8], 3);
  assert_int_equal(ld_le64(zp + 0x2d0), 0);
  assert_int_equal(ld_le64(zp + 0x2d8), 0xa0000);
  assert_int_equal(ld_le32(zp + 0x2e0), 1);
  assert_int_equal(ld_le64(zp + 0x2e4), 0xa0000);
  assert_int_equal(ld_le32(zp + 0x2f4), 2);
  assert_int_equal(ld_le64(zp + 0x2f8), 0x100000);
  assert_int_equal(ld_le64(zp + 0x300), RAM_SIZE - 0x100000);
  assert_int_equal(ld_le32(zp + 0x308), 1);
  char cmd[64];
  mem_read(e, 0x20000, cmd, 28);
  assert_string_equal(cmd, "console=ttyS0 root=/dev/vda");

  /* No command line: an empty string is still passed. */
  e->opt.cmdline = NULL;
  e->opt.initrd = NULL;
  e->opt.initrd_size = 0;
  assert_int_equal(load(e, b, p.size), 0);
  assert_int_equal(rd32(e, 0x7000 + 0x228), 0x20000);
  mem_read(e, 0x20000, cmd, 1);
  assert_int_equal(cmd[0], 0);
  assert_int_equal(rd32(e, 0x7000 + 0x218), 0);
  assert_null(find_region(e, VMM_REGION_INITRD, 0));

  /* Relocated: runtime start aligned up, above pref_address. */
  e->opt.kernel_addr = 0x2001000;
  assert_int_equal(load(e, b, p.size), 0);
  assert_int_equal(e->res.bzimage.runtime_start, 0x2200000);
  assert_int_equal(e->res.regs.rip, 0x2001200);
  assert_int_equal(rd32(e, 0x7000 + 0x214), 0x2001000);
  /* setup_sects 0 means 4. */
  vmm_loader_options_init(&e->opt);
  p.setup_sects = 0;
  p.size = 5 * 512 + 0x10000;
  build_bz(b, &p);
  assert_int_equal(load(e, b, p.size), 0);
  assert_int_equal(e->res.bzimage.setup_sects, 4);
  assert_int_equal(e->res.bzimage.kernel_offset, 5 * 512);
}

static void test_bzimage_truncation(void **state) {
  struct env *e = *state;
  static uint8_t b[BZ_MAX];
  struct bz p;

  bz_default(&p);
  p.size = 4 * 512 + 0x10000;
  build_bz(b, &p);
  e->opt.format = VMM_IMAGE_BZIMAGE;
  for (size_t n = 0; n < p.size; n++) {
    const char *what = n < 0x208   ? "setup header truncated"
                       : n < 0x26c ? "setup header ends at 0x26c, beyond"
                       : n < 0x800 ? "setup code (3 sectors"
                                   : "syssize 0x1000 (0x10000 bytes) beyond";
    if (n >= 0x900 && n < p.size - 8)
      n = p.size - 8; /* same path in between */
    EXPECT_FAIL(e, b, n, VMM_ETRUNC, what);
  }
  assert_int_equal(load(e, b, p.size), 0);
}

static void test_bzimage_errors(void **state) {
  struct env *e = *state;
  static uint8_t b[BZ_MAX];
  struct bz p;

#define BZ_CASE(stmt, err, what)                                               \
  do {                                                                         \
    bz_default(&p);                                                            \
    stmt;                                                                      \
    build_bz(b, &p);                                                           \
    EXPECT_FAIL(e, b, p.size, err, what);                                      \
  } while (0)
  e->opt.format = VMM_IMAGE_BZIMAGE;
  bz_default(&p);
  build_bz(b, &p);
  b[0x1fe] = 0;
  EXPECT_FAIL(e, b, p.size, VMM_EBADIMAGE, "boot_flag at 0x1fe is 0xaa00");
  build_bz(b, &p);
  b[0x205] = 'T';
  EXPECT_FAIL(e, b, p.size, VMM_EBADIMAGE, "HdrS");
  BZ_CASE(p.version = 0x205, VMM_EBADIMAGE, "boot protocol 2.05 is too old");
  BZ_CASE(p.jump = 0x5e, VMM_EBADIMAGE,
          "setup header ends at 0x260 (jump at 0x200) but protocol 2.15 has "
          "fields up to 0x264");
  BZ_CASE(p.jump = 0x80, VMM_EBADIMAGE, "setup header ends at 0x202");
  BZ_CASE((p.version = 0x206, p.jump = 0x3a), VMM_EBADIMAGE,
          "XLF_KERNEL_64 clear in xloadflags 0x0000, protocol 2.06");
  BZ_CASE(p.syssize = 0, VMM_EBADIMAGE, "syssize is 0");
  BZ_CASE(p.syssize = 0xffffffff, VMM_ETRUNC, "syssize 0xffffffff");
  BZ_CASE(p.loadflags = 0, VMM_EBADIMAGE, "LOADED_HIGH");
  BZ_CASE(p.xlf = 0x7e, VMM_EBADIMAGE, "XLF_KERNEL_64 clear");
  BZ_CASE(p.kalign = 0x300000, VMM_EBADIMAGE,
          "kernel_alignment 0x300000 is not a power of two");
  BZ_CASE(p.kalign = 0, VMM_EBADIMAGE, "kernel_alignment 0x0");
  BZ_CASE(p.min_align = 40, VMM_EBADIMAGE, "min_alignment 40");
  /* Placement. */
  BZ_CASE(p.init_size = 0x8000000, VMM_ENOMAP,
          "kernel (with its init_size area) (0x100000-0x8ffffff) is not in "
          "guest memory");
  BZ_CASE((p.pref = UINT64_MAX - 0x1000, p.init_size = 0x10000), VMM_ENOMAP,
          "decompression area");
  BZ_CASE((p.reloc = 0, p.pref = 0x80000), VMM_EBADIMAGE,
          "below its load address");
  e->opt.kernel_addr = 0x200000;
  BZ_CASE(p.reloc = 0, VMM_EINVAL, "not relocatable");
  e->opt.kernel_addr = 0x200800;
  BZ_CASE((void)0, VMM_EINVAL, "not page aligned");
  e->opt.kernel_addr = 0x100000000ull;
  BZ_CASE(p.xlf = 1, VMM_EINVAL, "kernel at 0x100000000 crosses 4 GiB");
  e->opt.kernel_addr = VMM_LOADER_ADDR_AUTO;
  e->opt.boot_info_addr = 0x100000;
  BZ_CASE((void)0, VMM_EOVERLAP,
          "zero page (0x100000-0x100fff) overlaps "
          "kernel");
  e->opt.boot_info_addr = 0x100000000ull;
  BZ_CASE(p.xlf = 1, VMM_EINVAL, "zero page at 0x100000000 crosses 4 GiB");
  e->opt.boot_info_addr = VMM_LOADER_ADDR_AUTO;
  e->opt.cmdline_addr = 0x7800;
  e->opt.cmdline = "a";
  BZ_CASE((void)0, VMM_EOVERLAP,
          "command line (0x7800-0x7801) overlaps zero "
          "page");
  e->opt.cmdline_addr = 0xa000;
  BZ_CASE((void)0, VMM_EOVERLAP,
          "boot tables (GDT/TSS/page tables) "
          "(0x9000-0x11fff) overlaps command line");
  vmm_loader_options_init(&e->opt);
  e->opt.format = VMM_IMAGE_BZIMAGE;

  /* The command line limit is the kernel's cmdline_size. */
  char cmd[32];
  memset(cmd, 'c', 16);
  cmd[16] = 0;
  e->opt.cmdline = cmd;
  bz_default(&p);
  p.cmdline_size = 16;
  build_bz(b, &p);
  assert_int_equal(load(e, b, p.size), 0);
  cmd[16] = 'c';
  cmd[17] = 0;
  EXPECT_FAIL(e, b, p.size, VMM_E2BIG,
              "command line is 17 bytes long, at most 16 accepted");
  e->opt.cmdline = NULL;

  /* The initrd must end at or below initrd_addr_max. */
  static uint8_t rd[4 * 1024 * 1024];
  e->opt.initrd = rd;
  e->opt.initrd_size = sizeof(rd);
  BZ_CASE(p.initrd_max = 0x2fffff, VMM_E2BIG,
          "initrd (0x400000 bytes) is too big for initrd_addr_max 0x2fffff");
  /* Fits below the limit only where the kernel already is. */
  BZ_CASE(p.initrd_max = 0x4fffff, VMM_ENOSPC, "no free RAM for the initrd");
  bz_default(&p);
  p.initrd_max = 0x1ffffff;
  build_bz(b, &p);
  assert_int_equal(load(e, b, p.size), 0);
  assert_int_equal(e->res.bzimage.initrd, 0x1c00000);
  /* Never below 1 MiB (address 0 would read as "no initrd"). */
  e->opt.initrd_size = 4096;
  BZ_CASE(p.initrd_max = 0xfffff, VMM_ENOSPC, "no free RAM for the initrd");
  e->opt.initrd_addr = 0;
  BZ_CASE((void)0, VMM_EINVAL, "initrd_addr 0");
  e->opt.initrd_size = sizeof(rd);
  e->opt.initrd_addr = 0x3000000;
  BZ_CASE((p.initrd_max = 0x1ffffff, p.xlf = 1), VMM_E2BIG,
          "ends above initrd_addr_max 0x1ffffff");
  /* A kernel that may have its initrd above 4 GiB ignores the limit when
     the caller places it explicitly. */
  BZ_CASE(p.initrd_max = 0x1ffffff, 0, "");
  assert_int_equal(e->res.bzimage.initrd, 0x3000000);
  e->opt.initrd_addr = 0x1000000;
  BZ_CASE((void)0, VMM_EOVERLAP,
          "initrd (0x1000000-0x13fffff) overlaps "
          "kernel");
  e->opt.initrd_addr = RAM_SIZE - 0x1000;
  BZ_CASE((void)0, VMM_ENOMAP, "initrd");
  e->opt.initrd_addr = UINT64_MAX - 0x1000;
  BZ_CASE((void)0, VMM_ENOMAP, "initrd_addr");
#undef BZ_CASE
}

/* Loader structures need writable RAM; images may go to read-only slots. */
static void test_readonly_slots(void **state) {
  (void)state;
  struct env *e = env_new(first_engine(), 0);
  assert_int_equal(
      vmm_mem_slot_add(e->vm, 0, 0x10000, NULL, VMM_MEM_READONLY, NULL), 0);
  assert_int_equal(vmm_mem_slot_add(e->vm, 0x10000, 16 * MIB, NULL, 0, NULL),
                   0);
  static uint8_t b[0x2000];
  struct mb m;
  mb_default(&m);
  build_mb(b, &m);
  EXPECT_FAIL(e, b, m.size, VMM_ENOMAP,
              "Multiboot information at 0x7000 is in a read-only slot");
  e->opt.boot_info_addr = 0x30000;
  e->opt.tables_addr = 0x40000;
  assert_int_equal(load(e, b, m.size), 0);
  /* The read-only slot is reserved in the map; mem_lower is 0. */
  assert_int_equal(e->res.e820[0].type, VMM_E820_RESERVED);
  assert_int_equal(e->res.multiboot.mem_lower, 0);
  /* A raw image may be placed in ROM. */
  e->opt.raw_addr = 0x1000;
  e->opt.format = VMM_IMAGE_RAW;
  assert_int_equal(load(e, b, 16), 0);
  teardown((void **)&e);
}

/* The engine-free core writes exactly what the VM front end writes. */
static void test_core_matches_vm(void **state) {
  struct env *e = *state;
  static uint8_t b[0x2000];
  struct mb m;

  mb_default(&m);
  build_mb(b, &m);
  e->opt.cmdline = "same";
  assert_int_equal(load(e, b, m.size), 0);

  uint8_t *host = malloc(RAM_SIZE);
  memset(host, FILL, RAM_SIZE);
  struct vmm_mem_slot_info slot = {.gpa = 0, .size = RAM_SIZE, .host = host};
  struct vmm__loader_mem mem = {.slots = &slot, .nr_slots = 1};
  mem.write = vmm__loader_host_write;
  mem.ctx = &mem;
  struct vmm_loader_result res2;
  assert_int_equal(vmm__loader_run(&mem, b, m.size, &e->opt, &res2), 0);
  assert_memory_equal(&res2, &e->res, sizeof(res2));
  uint8_t *vmmem = malloc(4 * MIB);
  mem_read(e, 0, vmmem, 4 * MIB);
  assert_memory_equal(vmmem, host, 4 * MIB);
  free(vmmem);
  free(host);
}

/* ------------------------------------------------------------------------ */
/* Entry state and end-to-end guests                                        */

static void test_apply_state(void **state) {
  struct env *e = *state;
  static uint8_t b[BZ_MAX];
  struct bz p;
  vmm_vcpu *vcpu;
  struct vmm_sregs sr;
  struct vmm_regs r;

  assert_int_equal(vmm_vcpu_create(e->vm, 0, &vcpu), 0);
  bz_default(&p);
  build_bz(b, &p);
  assert_int_equal(load(e, b, p.size), 0);
  assert_int_equal(vmm_loader_apply(vcpu, &e->res), 0);
  assert_int_equal(vmm_vcpu_get_sregs(vcpu, &sr), 0);
  assert_int_equal(vmm_vcpu_get_regs(vcpu, &r), 0);
  /* 64-bit boot protocol: __BOOT_CS / __BOOT_DS, paging, IF clear. */
  assert_int_equal(sr.cs.selector, 0x10);
  assert_int_equal(sr.cs.l, 1);
  assert_int_equal(sr.ds.selector, 0x18);
  assert_int_equal(sr.es.selector, 0x18);
  assert_int_equal(sr.ss.selector, 0x18);
  assert_int_equal(sr.ds.base, 0);
  assert_true(sr.cr0 & (1u << 31));
  assert_true(sr.efer & (1u << 10));
  assert_int_equal(sr.gdt.base, 0x9000);
  assert_int_equal(r.rip, 0x100200);
  assert_int_equal(r.rsi, 0x7000);
  assert_int_equal(r.rflags & (1u << 9), 0);
  /* The identity map covers the kernel, zero page and command line. */
  vmm_gpa_t gpas[] = {0x100200, 0x7000, 0x20000, 0x13ff000, 0xfffff000};
  for (size_t i = 0; i < sizeof(gpas) / sizeof(gpas[0]); i++) {
    struct vmm_translation t;
    assert_int_equal(vmm_vcpu_translate(vcpu, gpas[i], VMM_ACCESS_WRITE, &t),
                     0);
    assert_int_equal(t.gpa, gpas[i]);
  }

  /* Real-mode raw entry above 64 KiB: CS carries the high bits. */
  e->opt.raw_addr = 0x23450;
  assert_int_equal(load(e, b, 16), 0);
  assert_int_equal(vmm_loader_apply(vcpu, &e->res), 0);
  assert_int_equal(vmm_vcpu_get_sregs(vcpu, &sr), 0);
  assert_int_equal(vmm_vcpu_get_regs(vcpu, &r), 0);
  assert_int_equal(sr.cs.selector, 0x2000);
  assert_int_equal(sr.cs.base, 0x20000);
  assert_int_equal(r.rip, 0x3450);
  assert_int_equal(sr.cr0 & 1, 0);
  struct vmm_loader_result bad = e->res;
  bad.entry = 0x100000;
  assert_int_equal(vmm_loader_apply(vcpu, &bad), VMM_EINVAL);
  bad.mode = (enum vmm_cpu_mode)9;
  assert_int_equal(vmm_loader_apply(vcpu, &bad), VMM_EINVAL);
}

struct out {
  char buf[512];
  size_t len;
};

static int port_e9(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  struct out *o = opaque;
  (void)vcpu;
  (void)addr;
  if (is_write && len == 1 && o->len + 1 < sizeof(o->buf))
    o->buf[o->len++] = *(char *)data;
  return 0;
}

struct watchdog {
  vmm_vm *vm;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
};

static void *watchdog_fn(void *arg) {
  struct watchdog *w = arg;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 30;
  pthread_mutex_lock(&w->lock);
  while (!w->done)
    if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) != 0)
      break;
  if (!w->done)
    vmm_vm_stop(w->vm);
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Load a guest file on the engine, run it to HLT; return its output. */
static void run_guest(enum vmm_engine_kind engine, const char *name,
                      const struct vmm_loader_options *opt,
                      enum vmm_image_format want, struct out *out,
                      struct vmm_regs *final) {
  char path[1024];
  struct env *e = env_new(engine, RAM_SIZE);
  vmm_vcpu *vcpu;
  struct vmm_exit *ex;

  snprintf(path, sizeof(path), "%s/%s", guest_dir, name);
  e->opt = *opt;
  int rc = vmm_loader_load_file(e->vm, path, &e->opt, &e->res);
  if (rc != 0)
    fail_msg("loading %s: %s; log: %s", path, vmm_err_name(rc), e->log);
  assert_int_equal(e->res.format, want);
  memset(out, 0, sizeof(*out));
  assert_int_equal(vmm_io_register(e->vm, VMM_IO_PORT, 0xe9, 1, port_e9, out),
                   0);
  assert_int_equal(vmm_vcpu_create(e->vm, 0, &vcpu), 0);
  assert_int_equal(vmm_loader_apply(vcpu, &e->res), 0);

  struct watchdog w = {.vm = e->vm};
  pthread_t th;
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.cond, NULL);
  pthread_create(&th, NULL, watchdog_fn, &w);
  rc = vmm_vcpu_run(vcpu, &ex);
  pthread_mutex_lock(&w.lock);
  w.done = true;
  pthread_cond_signal(&w.cond);
  pthread_mutex_unlock(&w.lock);
  pthread_join(th, NULL);
  assert_int_equal(rc, 0);
  if (ex->reason != VMM_EXIT_HLT)
    fail_msg("%s on %s: exit %d, output \"%s\"", name, vmm_engine_name(engine),
             ex->reason, out->buf);
  assert_int_equal(vmm_vcpu_get_regs(vcpu, final), 0);
  teardown((void **)&e);
}

/* Run on the engine under test: the output and RDI must be as expected
   (every engine is checked against the same expectation). */
static void run_everywhere(const char *name,
                           const struct vmm_loader_options *opt,
                           enum vmm_image_format want, const char *expect,
                           uint64_t rdi) {
  struct out out;
  struct vmm_regs r;
  run_guest(vmmt_engine, name, opt, want, &out, &r);
  if (strcmp(out.buf, expect) != 0)
    fail_msg("%s on %s printed \"%s\", expected \"%s\"", name,
             vmm_engine_name(vmmt_engine), out.buf, expect);
  assert_int_equal(r.rdi & 0xffff, rdi);
}

static void test_guest_multiboot(void **state) {
  (void)state;
  struct vmm_loader_options opt;
  static const char mod[] = "MODULE";
  struct vmm_loader_module m = {mod, sizeof(mod), "mod-arg"};
  char expect[256];

  vmm_loader_options_init(&opt);
  opt.cmdline = "hello multiboot";
  opt.modules = &m;
  opt.nr_modules = 1;
  snprintf(expect, sizeof(expect),
           "mb magic=ok lower=%08x upper=%08x cmdline=hello multiboot "
           "mods=00000001 mod0=MODU mmap=00000003 bss=00000000\n",
           640, (unsigned)((RAM_SIZE - MIB) / 1024));
  run_everywhere("mb_guest.bin", &opt, VMM_IMAGE_MULTIBOOT, expect, 0x600d);
}

static void test_guest_multiboot_elf(void **state) {
  (void)state;
  struct vmm_loader_options opt;
  vmm_loader_options_init(&opt);
  opt.cmdline = "elf args";
  run_everywhere("mb_elf_guest.bin", &opt, VMM_IMAGE_MULTIBOOT,
                 "mb-elf ok cmdline=elf args\n", 0x600d);
}

static void test_guest_elf64(void **state) {
  (void)state;
  struct vmm_loader_options opt;
  vmm_loader_options_init(&opt);
  run_everywhere("elf64_guest.bin", &opt, VMM_IMAGE_ELF64,
                 "elf64 ok data=12345678 bss=00000000\n", 0x600d);
}

static void test_guest_raw(void **state) {
  (void)state;
  struct vmm_loader_options opt;
  vmm_loader_options_init(&opt);
  opt.raw_addr = 0x20000;
  run_everywhere("raw_guest.bin", &opt, VMM_IMAGE_RAW, "raw ok cs=2000\n",
                 0x600d);
}

/* The project's multiboot test kernel (tests/kernel, an ELF32 file another
   loader, QEMU's, also boots) reads our information structure: run it until
   it has printed what it found there, on a minimal 16550 stand-in. */
struct uart {
  vmm_vm *vm;
  char buf[1024];
  size_t len;
};

static int uart_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  struct uart *u = opaque;
  (void)vcpu;
  (void)len;
  if (!is_write && port == 0x3fd)
    *(uint8_t *)data = 0x60; /* LSR: transmitter empty */
  /* Text only: the kernel also writes the divisor latch through 0x3f8 and
     ends lines with \r\n. */
  char ch = *(char *)data;
  if (is_write && port == 0x3f8 && u->len + 1 < sizeof(u->buf) &&
      (ch == '\n' || (ch >= ' ' && ch <= '~'))) {
    u->buf[u->len++] = ch;
    const char *c = strstr(u->buf, "cmdline: ");
    if (c != NULL && strchr(c, '\n') != NULL)
      vmm_vm_stop(u->vm);
  }
  return 0;
}

static void test_project_kernel(void **state) {
  struct env *e = *state;
  char path[1024];
  vmm_vcpu *vcpu;
  struct vmm_exit *ex;
  struct uart u = {.vm = e->vm};

  snprintf(path, sizeof(path), "%s/kernel/test-kernel.elf", guest_dir);
  e->opt.cmdline = "exit=0 from-libvmm";
  log_reset(e);
  int rc = vmm_loader_load_file(e->vm, path, &e->opt, &e->res);
  if (rc != 0)
    fail_msg("%s: %s; log: %s", path, vmm_err_name(rc), e->log);
  assert_int_equal(e->res.format, VMM_IMAGE_MULTIBOOT);
  assert_int_equal(e->res.mode, VMM_MODE_PROT32);
  assert_true(e->res.elf.segments >= 1);
  assert_int_equal(e->res.image_start, 0x100000);
  assert_int_equal(vmm_io_register(e->vm, VMM_IO_PORT, 0x3f8, 8, uart_io, &u),
                   0);
  assert_int_equal(vmm_vcpu_create(e->vm, 0, &vcpu), 0);
  assert_int_equal(vmm_loader_apply(vcpu, &e->res), 0);
  assert_int_equal(vmm_vcpu_run(vcpu, &ex), 0);
  if (ex->reason != VMM_EXIT_STOPPED)
    fail_msg("exit %d before the kernel printed its command line: \"%s\"",
             ex->reason, u.buf);
  char expect[256];
  snprintf(expect, sizeof(expect),
           "multiboot: ok\nmemory: lower 640 KiB, upper %llu KiB\n"
           "cmdline: exit=0 from-libvmm\n",
           (unsigned long long)((RAM_SIZE - MIB) / 1024));
  if (strstr(u.buf, expect) == NULL)
    fail_msg("the kernel printed \"%s\", expected it to contain \"%s\"", u.buf,
             expect);
}

/* ------------------------------------------------------------------------ */
/* A real kernel: Debian's bzImage                                          */

static void test_debian_bzimage(void **state) {
  (void)state;
  const void *img;
  size_t size;
  struct env *e = env_new(first_engine(), 256 * MIB);
  static uint8_t initrd[3 * MIB + 123];

  assert_int_equal(vmm_loader_map_file(bzimage_path, &img, &size), 0);
  const uint8_t *b = img;
  for (size_t i = 0; i < sizeof(initrd); i++)
    initrd[i] = (uint8_t)(i * 31 + 7);
  e->opt.cmdline = "console=ttyS0 earlyprintk=serial panic=-1";
  e->opt.initrd = initrd;
  e->opt.initrd_size = sizeof(initrd);
  assert_int_equal(vmm_loader_detect(img, size), VMM_IMAGE_BZIMAGE);
  int rc = load(e, img, size);
  if (rc != 0)
    fail_msg("%s: %s; log: %s", bzimage_path, vmm_err_name(rc), e->log);
  const struct vmm_loader_result *r = &e->res;

  /* Header fields, as the boot protocol documents them for this kernel
     generation (6.1, x86-64, relocatable, 2 MiB alignment). */
  printf("# %s: protocol %x, setup_sects %u, kernel 0x%llx bytes at file "
         "0x%llx, init_size 0x%x, pref_address 0x%llx, xloadflags 0x%x, "
         "cmdline_size %u\n",
         bzimage_path, r->bzimage.version, r->bzimage.setup_sects,
         (unsigned long long)r->bzimage.kernel_size,
         (unsigned long long)r->bzimage.kernel_offset, r->bzimage.init_size,
         (unsigned long long)r->bzimage.pref_address, r->bzimage.xloadflags,
         r->bzimage.cmdline_size);
  assert_true(r->bzimage.version >= 0x20c);
  assert_true(r->bzimage.loadflags & 1);
  assert_true(r->bzimage.xloadflags & 1);
  assert_true(r->bzimage.relocatable);
  assert_int_equal(r->bzimage.kernel_alignment, 0x200000);
  assert_int_equal(r->bzimage.pref_address, 0x1000000);
  assert_true(r->bzimage.cmdline_size >= 255);
  assert_true(r->bzimage.init_size > r->bzimage.kernel_size);
  assert_int_equal(r->bzimage.kernel_offset,
                   (r->bzimage.setup_sects + 1) * 512);
  assert_true(r->bzimage.kernel_offset + r->bzimage.kernel_size <= size);

  /* Where things landed. */
  assert_int_equal(r->bzimage.kernel, 0x100000);
  assert_int_equal(r->bzimage.runtime_start, 0x1000000);
  assert_int_equal(r->bzimage.zero_page, 0x7000);
  assert_int_equal(r->bzimage.cmdline, 0x20000);
  assert_true(r->bzimage.initrd + sizeof(initrd) <= 256 * MIB);
  assert_true(r->bzimage.initrd >= 0x1000000 + r->bzimage.init_size);
  assert_int_equal(r->bzimage.initrd & 0xfff, 0);
  assert_true(r->bzimage.initrd + sizeof(initrd) - 1 <=
              r->bzimage.initrd_addr_max);
  uint8_t *buf = malloc(r->bzimage.kernel_size);
  mem_read(e, 0x100000, buf, r->bzimage.kernel_size);
  assert_memory_equal(buf, b + r->bzimage.kernel_offset,
                      r->bzimage.kernel_size);
  free(buf);
  buf = malloc(sizeof(initrd));
  mem_read(e, r->bzimage.initrd, buf, sizeof(initrd));
  assert_memory_equal(buf, initrd, sizeof(initrd));
  free(buf);

  /* The zero page: the kernel's own header plus the loader's fields. */
  uint8_t zp[4096];
  mem_read(e, 0x7000, zp, sizeof(zp));
  size_t hdr_end = 0x202 + b[0x201];
  for (size_t i = 0x1f1; i < hdr_end; i++) {
    bool written = (i >= 0x210 && i < 0x211) || (i >= 0x214 && i < 0x220) ||
                   (i >= 0x228 && i < 0x22c);
    if (!written && zp[i] != b[i])
      fail_msg("zero page byte 0x%zx: 0x%02x, image has 0x%02x", i, zp[i],
               b[i]);
  }
  assert_int_equal(zp[0x210], 0xff);
  assert_int_equal(ld_le32(zp + 0x214), 0x100000);
  assert_int_equal(ld_le32(zp + 0x218), r->bzimage.initrd);
  assert_int_equal(ld_le32(zp + 0x21c), sizeof(initrd));
  assert_int_equal(ld_le32(zp + 0x228), 0x20000);
  assert_int_equal(zp[0x1e8], 3);
  assert_int_equal(ld_le64(zp + 0x2f8), 0x100000);
  assert_int_equal(ld_le64(zp + 0x300), 255 * MIB);
  char cmd[64];
  mem_read(e, 0x20000, cmd, sizeof(cmd));
  assert_string_equal(cmd, e->opt.cmdline);

  /* The entry state on a vCPU. */
  vmm_vcpu *vcpu;
  struct vmm_sregs sr;
  struct vmm_regs regs;
  assert_int_equal(vmm_vcpu_create(e->vm, 0, &vcpu), 0);
  assert_int_equal(vmm_loader_apply(vcpu, r), 0);
  assert_int_equal(vmm_vcpu_get_sregs(vcpu, &sr), 0);
  assert_int_equal(vmm_vcpu_get_regs(vcpu, &regs), 0);
  assert_int_equal(regs.rip, 0x100200);
  assert_int_equal(regs.rsi, 0x7000);
  assert_int_equal(sr.cs.selector, 0x10);
  assert_int_equal(sr.cs.l, 1);
  assert_int_equal(sr.ss.selector, 0x18);
  assert_true(sr.efer & (1u << 10));
  /* startup_64 is where the entry points: its first bytes are the image's
     at offset kernel_offset + 0x200. */
  uint8_t code[16];
  assert_int_equal(vmm_vcpu_read_virt(vcpu, regs.rip, code, sizeof(code)), 0);
  assert_memory_equal(code, b + r->bzimage.kernel_offset + 0x200, sizeof(code));

  /* The kernel accepts that state: single-step its first instructions
     (startup_64 of the decompressor: segment and stack setup, CPU checks)
     and require each to retire without a fault, staying inside the kernel's
     reserved range. Booting further needs the UART and vmmrun. */
  struct vmm_debug dbg = {.flags = VMM_DEBUG_SINGLESTEP};
  int drc = vmm_vcpu_set_debug(vcpu, &dbg);
  if (drc == VMM_ENOTSUP) {
    printf("# %s cannot single-step: first instructions not run\n",
           vmm_engine_name(e->engine));
  } else {
    assert_int_equal(drc, 0);
    const struct vmm_loader_region *k = find_region(e, VMM_REGION_KERNEL, 0);
    uint64_t lo = UINT64_MAX, hi = 0;
    unsigned steps = 0;
    for (; steps < 2000; steps++) {
      struct vmm_exit *ex;
      assert_int_equal(vmm_vcpu_run(vcpu, &ex), 0);
      assert_int_equal(vmm_vcpu_get_regs(vcpu, &regs), 0);
      if (ex->reason != VMM_EXIT_DEBUG)
        fail_msg("step %u: exit %d at rip 0x%llx", steps, ex->reason,
                 (unsigned long long)regs.rip);
      if (regs.rip < k->gpa || regs.rip >= k->gpa + k->size)
        fail_msg("step %u: rip 0x%llx left the kernel", steps,
                 (unsigned long long)regs.rip);
      lo = regs.rip < lo ? regs.rip : lo;
      hi = regs.rip > hi ? regs.rip : hi;
    }
    printf("# %u instructions single-stepped on %s, rip 0x%llx-0x%llx%s\n",
           steps, vmm_engine_name(e->engine), (unsigned long long)lo,
           (unsigned long long)hi,
           hi >= r->bzimage.runtime_start
               ? " (it copied itself into its init_size area and went on)"
               : "");
  }
  vmm_loader_unmap_file(img, size);
  teardown((void **)&e);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--bzimage") == 0) {
    bzimage_path = argv[2];
    if (!vmm_engine_available(VMM_ENGINE_AUTO)) {
      printf("SKIP: no engine available on this host (no /dev/kvm, no BT)\n");
      return VMMT_SKIP;
    }
    const struct CMUnitTest t[] = {cmocka_unit_test(test_debian_bzimage)};
    return cmocka_run_group_tests_name("loader-debian", t, NULL, NULL);
  }
  if (argc != 3) {
    fprintf(stderr, "usage: %s <kvm|bt> <guest-dir> | --bzimage <vmlinuz>\n",
            argv[0]);
    return 2;
  }
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  guest_dir = argv[2];
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_detect),
      T(test_bad_arguments),
      T(test_load_file),
      T(test_raw),
      T(test_failure_writes_nothing),
      T(test_elf64),
      T(test_elf32),
      T(test_elf_vaddr_flag),
      T(test_elf_truncation),
      T(test_elf_bad_headers),
      T(test_multiboot),
      T(test_multiboot_elf),
      T(test_multiboot_errors),
      T(test_bzimage),
      T(test_bzimage_truncation),
      T(test_bzimage_errors),
      cmocka_unit_test(test_readonly_slots),
      T(test_core_matches_vm),
      T(test_apply_state),
      cmocka_unit_test(test_guest_multiboot),
      cmocka_unit_test(test_guest_multiboot_elf),
      cmocka_unit_test(test_guest_elf64),
      cmocka_unit_test(test_guest_raw),
      T(test_project_kernel),
  };
#undef T
  return cmocka_run_group_tests_name("loader", tests, NULL, NULL);
}
