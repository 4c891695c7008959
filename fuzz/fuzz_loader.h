/*
 * Shared harness of the loader fuzz targets. The loader core runs against
 * plain host buffers standing in for guest RAM (no VM, no engine), so each
 * input costs microseconds.
 *
 * Input: 4 option bytes, then the image.
 *   byte 0  bit 0-1 command line: none, short, 300 bytes, 70000 bytes
 *           bit 2   initrd (byte 1 * 64 KiB + 1 bytes)
 *           bit 3   initrd at a fixed address (from byte 3)
 *           bit 4   multiboot modules (byte 2 & 3 of them)
 *           bit 5   kernel_addr / raw_addr / modules_addr from byte 3
 *           bit 6   caller-given memory map
 *           bit 7   VMM_LOADER_ELF_VADDR
 *   byte 2  bits 2-3 raw mode; bits 4-7 which of boot_info, cmdline and
 *           tables addresses come from byte 3
 *   byte 3  index into a table of interesting addresses
 *
 * After a successful load the harness checks the result's invariants: every
 * region lies in the fake RAM and no two overlap. A violation aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "loader/internal.h"

#define FZ_RAM0 (32ull << 20)
#define FZ_ROM_BASE FZ_RAM0
#define FZ_ROM (1ull << 20)
#define FZ_HIGH_BASE (4ull << 30)
#define FZ_HIGH (2ull << 20)

static struct vmm_mem_slot_info fz_slots[3];

static void fz_log(enum vmm_log_level level, const char *msg, void *opaque) {
  (void)level;
  (void)opaque;
  /* Touch the message so a bad format string is caught by ASan. */
  volatile size_t n = strlen(msg);
  (void)n;
}

static void *fz_map(uint64_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    abort();
  return p;
}

static void fz_init(void) {
  if (fz_slots[0].host != NULL)
    return;
  fz_slots[0] = (struct vmm_mem_slot_info){
      .id = 0, .gpa = 0, .size = FZ_RAM0, .host = fz_map(FZ_RAM0), .fd = -1};
  fz_slots[1] = (struct vmm_mem_slot_info){.id = 1,
                                           .flags = VMM_MEM_READONLY,
                                           .gpa = FZ_ROM_BASE,
                                           .size = FZ_ROM,
                                           .host = fz_map(FZ_ROM),
                                           .fd = -1};
  fz_slots[2] = (struct vmm_mem_slot_info){.id = 2,
                                           .gpa = FZ_HIGH_BASE,
                                           .size = FZ_HIGH,
                                           .host = fz_map(FZ_HIGH),
                                           .fd = -1};
}

static const uint64_t fz_addrs[] = {
    0x0,        0x1000,           0x7000,      0x7c00,
    0x9000,     0x20000,          0x9f000,     0xa0000,
    0x100000,   0x100200,         0x200000,    0x1000000,
    0x1fff000,  FZ_RAM0 - 0x1000, FZ_ROM_BASE, FZ_HIGH_BASE,
    0xfffff000, 0xffffffffull,    1ull << 52,  UINT64_MAX - 0xfff,
    0x123,      0x8f80,
};

static void fz_check(const struct vmm_loader_result *res) {
  for (size_t i = 0; i < res->nr_regions; i++) {
    const struct vmm_loader_region *r = &res->regions[i];
    bool in = false;
    for (size_t k = 0; k < 3; k++) {
      const struct vmm_mem_slot_info *s = &fz_slots[k];
      /* Slots 0 and 1 are adjacent: a region may span both. */
      uint64_t lo = s->gpa, hi = s->gpa + s->size;
      if (k == 0)
        hi = FZ_ROM_BASE + FZ_ROM;
      if (r->gpa >= lo && r->gpa < hi && r->size <= hi - r->gpa)
        in = true;
    }
    if (!in || r->size == 0)
      abort();
    for (size_t j = 0; j < i; j++) {
      const struct vmm_loader_region *o = &res->regions[j];
      if (r->gpa < o->gpa + o->size && o->gpa < r->gpa + r->size)
        abort();
    }
  }
}

static int fz_load(const uint8_t *data, size_t size,
                   enum vmm_image_format fmt) {
  static char cmdline[70001];
  static uint8_t blob[(255u << 16) + 1];
  struct vmm_loader_options opt;
  struct vmm_loader_module mods[3];
  struct vmm_loader_result *res = malloc(sizeof(*res));
  struct vmm_vm_config cfg = {.log_fn = fz_log, .log_level = VMM_LOG_DEBUG};
  struct vmm__loader_mem mem = {.slots = fz_slots, .nr_slots = 3, .log = &cfg};

  fz_init();
  mem.write = vmm__loader_host_write;
  mem.ctx = &mem;
  if (cmdline[0] == 0)
    memset(cmdline, 'k', sizeof(cmdline) - 1);
  vmm_loader_options_init(&opt);
  opt.format = fmt;
  if (size >= 4) {
    uint8_t b0 = data[0], b1 = data[1], b2 = data[2];
    uint64_t a = fz_addrs[data[3] % (sizeof(fz_addrs) / sizeof(fz_addrs[0]))];
    static const size_t cmdlens[] = {0, 16, 300, 70000};
    size_t cl = cmdlens[b0 & 3];
    if (cl > 0)
      opt.cmdline = cmdline + sizeof(cmdline) - 1 - cl;
    if (b0 & 4) {
      opt.initrd = blob;
      opt.initrd_size = ((size_t)b1 << 16) + 1;
    }
    if (b0 & 8)
      opt.initrd_addr = a;
    if (b0 & 16) {
      opt.nr_modules = b2 & 3;
      for (size_t i = 0; i < opt.nr_modules; i++)
        mods[i] = (struct vmm_loader_module){
            .data = blob, .size = (size_t)b1 << (i * 4), .cmdline = "m"};
      opt.modules = mods;
    }
    if (b0 & 32)
      opt.kernel_addr = opt.raw_addr = opt.modules_addr = a;
    static const struct vmm_e820_entry map[2] = {{0, 0x9fc00, 1, 0},
                                                 {0x100000, 0x1f00000, 1, 0}};
    if (b0 & 64) {
      opt.e820 = map;
      opt.nr_e820 = 2;
    }
    if (b0 & 128)
      opt.flags |= VMM_LOADER_ELF_VADDR;
    opt.raw_mode = (enum vmm_cpu_mode)((b2 >> 2) & 3);
    if (b2 & 16)
      opt.boot_info_addr = a;
    if (b2 & 32)
      opt.cmdline_addr = a;
    if (b2 & 64)
      opt.tables_addr = a;
    if (b2 & 128)
      opt.stack = a;
    data += 4;
    size -= 4;
  }
  if (res == NULL)
    abort();
  int err = vmm__loader_run(&mem, data, size, &opt, res);
  if (err == 0)
    fz_check(res);
  free(res);
  return 0;
}
