/*
 * Fuzz target: the virtio-mmio transport, split virtqueues and the balloon
 * device, driven the way a hostile guest can drive them - random register
 * writes and reads of any width, and random queue contents written into
 * guest RAM - plus the host calls that race with a guest (target changes,
 * statistics requests, JSON).
 *
 * One VM (any engine; no vCPU ever runs) lives for the whole process with
 * 256 KiB of memfd RAM at 0, 64 KiB of ROM after it and 64 KiB of private
 * anonymous RAM at 1 MiB. Each input creates a balloon, runs its
 * operations and destroys it. After every input the ROM must be unchanged:
 * the device may discard or write RAM the guest names, never ROM.
 *
 * Input: byte 0 configures the device
 *   bit 0     legacy layout (version 1) instead of modern
 *   bits 1-3  offered features: statistics, deflate-on-OOM, reporting
 *   bit 4     interrupt line 23 instead of 5
 * then operations, each an opcode byte followed by its operands (missing
 * bytes read as zero):
 *   0 write32  reg:u8 (offset reg*4) value:u32
 *   1 read32   reg:u8
 *   2 access   off:u16 (mod 0x200) width:u8 (1,2,4,8; bit 7 = write)
 *              value:u64
 *   3 memory   addr:u32 (mod RAM) len:u8 (mod 64) bytes...
 *   4 desc     queue:u8 index:u8 addr:sel len:u32 flags:u16 next:u16
 *   5 publish  queue:u8 head:u16 bump:u8
 *   6 notify   queue:u8
 *   7 setup    accept:u8 (feature bits), queue sizes from the device
 *   8 host     what:u8 value:u32
 *   9 pfns     count:u8 then count sel-bytes: frame numbers into the
 *              frame buffer
 * "sel" picks an address from a table of interesting ones, or is followed
 * by a raw u32.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "io/virtio_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_BASE 0xd0000000ull
#define FZ_RAM 0x40000ull
#define FZ_ROM_GPA FZ_RAM
#define FZ_ROM 0x10000ull
#define FZ_ANON_GPA 0x100000ull
#define FZ_ANON 0x10000ull
#define FZ_QUEUES 0x10000ull /* 0x2000 per queue */
#define FZ_FRAMES 0x20000ull /* frame number buffer */
#define FZ_QSIZE 16

static vmm_vm *fz_vm;
static void *fz_anon;
static uint8_t fz_rom[FZ_ROM];

static void fz_log(enum vmm_log_level level, const char *msg, void *opaque) {
  (void)level;
  (void)opaque;
  volatile size_t n = strlen(msg); /* a bad format would trip ASan here */
  (void)n;
}

/* Every line change of the VM; a device must never leave one asserted
   after it is gone (checked after each input). */
static int fz_lines;

static void fz_irq(vmm_vm *vm, uint32_t gsi, bool level, void *opaque) {
  (void)vm, (void)gsi, (void)opaque;
  fz_lines += level ? 1 : -1;
}

static void fz_init(void) {
  if (fz_vm != NULL)
    return;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.log_fn = fz_log;
  cfg.log_level = VMM_LOG_DEBUG;
  if (vmm_vm_create(&cfg, &fz_vm) < 0) {
    fprintf(stderr, "fuzz_virtio_mmio: no engine to create a VM with\n");
    abort();
  }
  fz_anon = mmap(NULL, FZ_ANON, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (size_t i = 0; i < FZ_ROM; i++)
    fz_rom[i] = (uint8_t)(i * 7 + 3);
  if (fz_anon == MAP_FAILED ||
      vmm_mem_slot_add(fz_vm, 0, FZ_RAM, NULL, 0, NULL) < 0 ||
      vmm_mem_slot_add(fz_vm, FZ_ROM_GPA, FZ_ROM, NULL, VMM_MEM_READONLY,
                       NULL) < 0 ||
      vmm_mem_slot_add(fz_vm, FZ_ANON_GPA, FZ_ANON, fz_anon, 0, NULL) < 0 ||
      vmm_mem_write(fz_vm, FZ_ROM_GPA, fz_rom, FZ_ROM) < 0 ||
      vmm_vm_set_irq_handler(fz_vm, fz_irq, NULL) < 0)
    abort();
}

struct input {
  const uint8_t *p;
  size_t left;
};

static uint64_t take(struct input *in, unsigned bytes) {
  uint64_t v = 0;
  for (unsigned i = 0; i < bytes; i++) {
    uint8_t b = 0;
    if (in->left > 0) {
      b = *in->p++;
      in->left--;
    }
    v |= (uint64_t)b << (8 * i);
  }
  return v;
}

static const uint64_t interesting[] = {
    0,
    0x1000,
    FZ_FRAMES,
    FZ_FRAMES + 2,
    FZ_QUEUES,
    FZ_RAM - 4,
    FZ_RAM - 0x1000,
    FZ_ROM_GPA,
    FZ_ROM_GPA + FZ_ROM - 8,
    FZ_ANON_GPA,
    FZ_ANON_GPA + FZ_ANON - 0x1000,
    0x80000,
    FZ_BASE,
    0xffffffffull,
    1ull << 52,
    UINT64_MAX - 7,
};
#define N_INTERESTING (sizeof(interesting) / sizeof(interesting[0]))

/* An address: table entry, or (selector >= table size) a raw u32. */
static uint64_t take_addr(struct input *in) {
  uint8_t sel = (uint8_t)take(in, 1);
  if (sel < N_INTERESTING)
    return interesting[sel];
  return take(in, 4);
}

struct fz {
  vmm_dev *b;
  uint64_t rings[4][3]; /* desc, avail, used of the queues we set up */
  uint16_t avail_idx[4];
};

static void stats_cb(vmm_dev *b, const struct vmm_balloon_stats *s,
                     void *opaque) {
  (void)opaque;
  /* Host code calling back from the callback must work. */
  struct vmm_balloon_info info;
  vmm_balloon_get_info(b, &info);
  (void)s;
}

static uint32_t mmio(uint64_t off, uint64_t val, uint32_t len, bool write) {
  uint8_t buf[8];
  memcpy(buf, &val, sizeof(buf));
  vmm__iobus_dispatch(&fz_vm->mmio, NULL, FZ_BASE + off, buf, len, write);
  uint32_t out;
  memcpy(&out, buf, 4);
  return out;
}

/* The standard bring-up, so inputs reach the queues without having to
   discover the whole sequence. */
static void setup(struct fz *f, uint8_t accept) {
  uint64_t feats = (uint64_t)(accept & 0x3f) | (1ull << 32);
  mmio(VMM__VIRTIO_MMIO_STATUS, 0, 4, true);
  mmio(VMM__VIRTIO_MMIO_STATUS, 3, 4, true);
  mmio(VMM__VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1, 4, true);
  mmio(VMM__VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(feats >> 32), 4, true);
  mmio(VMM__VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0, 4, true);
  mmio(VMM__VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)feats, 4, true);
  mmio(VMM__VIRTIO_MMIO_STATUS, 11, 4, true);
  mmio(VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE, 4096, 4, true);
  for (unsigned q = 0; q < 4; q++) {
    uint64_t base = FZ_QUEUES + q * 0x2000ull;
    f->rings[q][0] = base;
    f->rings[q][1] = base + 16 * FZ_QSIZE;
    f->rings[q][2] = base + 0x1000;
    f->avail_idx[q] = 0;
    static const uint8_t zero[0x2000];
    vmm_mem_write(fz_vm, base, zero, sizeof(zero));
    mmio(VMM__VIRTIO_MMIO_QUEUE_SEL, q, 4, true);
    if (mmio(VMM__VIRTIO_MMIO_QUEUE_NUM_MAX, 0, 4, false) == 0)
      break;
    mmio(VMM__VIRTIO_MMIO_QUEUE_NUM, FZ_QSIZE, 4, true);
    mmio(VMM__VIRTIO_MMIO_QUEUE_ALIGN, 4096, 4, true);
    mmio(VMM__VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)base, 4, true);
    mmio(VMM__VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)f->rings[q][1], 4, true);
    mmio(VMM__VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)f->rings[q][2], 4, true);
    mmio(VMM__VIRTIO_MMIO_QUEUE_READY, 1, 4, true);
    mmio(VMM__VIRTIO_MMIO_QUEUE_PFN, (uint32_t)(base >> 12), 4, true);
  }
  mmio(VMM__VIRTIO_MMIO_STATUS, 15, 4, true);
}

static void host_op(struct fz *f, uint8_t what, uint32_t value) {
  switch (what % 6) {
  case 0: vmm_balloon_set_target(f->b, (uint64_t)value << 12); break;
  case 1: vmm_balloon_set_target(f->b, value); break;
  case 2: vmm_balloon_request_stats(f->b); break;
  case 3: {
    struct vmm_balloon_info info;
    struct vmm_balloon_stats st;
    struct vmm_virtio_state vs;
    vmm_balloon_get_info(f->b, &info);
    vmm_balloon_get_stats(f->b, &st);
    vmm_virtio_get_state(f->b, &vs);
    break;
  }
  case 4: {
    char *json = NULL;
    if (vmm_balloon_stats_json(f->b, &json) == 0)
      free(json);
    break;
  }
  default: {
    char line[64];
    vmm_virtio_mmio_cmdline(f->b, line, value % 64);
    break;
  }
  }
}

static void run_op(struct fz *f, struct input *in) {
  uint8_t op = (uint8_t)take(in, 1);
  switch (op % 10) {
  case 0: {
    uint64_t off = take(in, 1) * 4;
    mmio(off, take(in, 4), 4, true);
    break;
  }
  case 1: mmio(take(in, 1) * 4, 0, 4, false); break;
  case 2: {
    uint64_t off = take(in, 2) % VMM_VIRTIO_MMIO_SIZE;
    uint8_t w = (uint8_t)take(in, 1);
    uint32_t len = 1u << (w & 3);
    uint64_t val = take(in, 8);
    /* The bus only dispatches accesses inside the window. */
    if (off + len <= VMM_VIRTIO_MMIO_SIZE)
      mmio(off, val, len, w & 0x80);
    break;
  }
  case 3: {
    uint64_t addr = take(in, 4) % FZ_RAM;
    size_t n = (size_t)take(in, 1) % 64;
    uint8_t buf[64];
    for (size_t i = 0; i < n; i++)
      buf[i] = (uint8_t)take(in, 1);
    if (addr + n > FZ_RAM)
      n = FZ_RAM - addr;
    vmm_mem_write(fz_vm, addr, buf, n);
    break;
  }
  case 4: {
    unsigned q = (unsigned)take(in, 1) % 4;
    uint16_t idx = (uint16_t)(take(in, 1) % FZ_QSIZE);
    uint8_t raw[16];
    uint64_t addr = take_addr(in);
    uint32_t len = (uint32_t)take(in, 4);
    uint16_t flags = (uint16_t)take(in, 2);
    uint16_t next = (uint16_t)take(in, 2);
    memcpy(raw, &addr, 8);
    memcpy(raw + 8, &len, 4);
    memcpy(raw + 12, &flags, 2);
    memcpy(raw + 14, &next, 2);
    if (f->rings[q][0] != 0)
      vmm_mem_write(fz_vm, f->rings[q][0] + 16ull * idx, raw, 16);
    break;
  }
  case 5: {
    unsigned q = (unsigned)take(in, 1) % 4;
    uint16_t head = (uint16_t)take(in, 2);
    uint8_t bump = (uint8_t)take(in, 1);
    if (f->rings[q][1] == 0)
      break;
    vmm_mem_write(fz_vm,
                  f->rings[q][1] + 4 + 2ull * (f->avail_idx[q] % FZ_QSIZE),
                  &head, 2);
    f->avail_idx[q] = (uint16_t)(f->avail_idx[q] + bump);
    vmm_mem_write(fz_vm, f->rings[q][1] + 2, &f->avail_idx[q], 2);
    break;
  }
  case 6: mmio(VMM__VIRTIO_MMIO_QUEUE_NOTIFY, take(in, 1) % 6, 4, true); break;
  case 7: setup(f, (uint8_t)take(in, 1)); break;
  case 8: {
    uint8_t what = (uint8_t)take(in, 1);
    host_op(f, what, (uint32_t)take(in, 4));
    break;
  }
  default: {
    unsigned n = (unsigned)take(in, 1);
    uint32_t frames[256];
    for (unsigned i = 0; i < n; i++)
      frames[i] = (uint32_t)(take_addr(in) >> 12);
    vmm_mem_write(fz_vm, FZ_FRAMES, frames, n * 4ull);
    break;
  }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_init();
  if (size == 0)
    return 0;
  struct input in = {data, size};
  uint8_t cfgb = (uint8_t)take(&in, 1);
  struct fz f;
  memset(&f, 0, sizeof(f));

  struct vmm_balloon_config cfg;
  vmm_balloon_config_init(&cfg);
  cfg.mmio.base = FZ_BASE;
  cfg.mmio.version = cfgb & 1 ? 1 : 2;
  cfg.features = (cfgb >> 1) & VMM_BALLOON_F_ALL;
  cfg.queue_size = FZ_QSIZE;
  cfg.stats_fn = stats_cb;
  cfg.mmio.gsi = cfgb & 0x10 ? 23 : 5;
  if (vmm_balloon_create(fz_vm, &cfg, &f.b) < 0)
    abort();
  /* Bounded: every operation consumes at least its opcode byte. */
  while (in.left > 0)
    run_op(&f, &in);
  if (vmm_dev_detach(f.b) < 0)
    abort();
  if (fz_lines != 0) {
    fprintf(stderr, "fuzz_virtio_mmio: interrupt line left asserted\n");
    abort();
  }

  static uint8_t rom[FZ_ROM];
  if (vmm_mem_read(fz_vm, FZ_ROM_GPA, rom, FZ_ROM) < 0 ||
      memcmp(rom, fz_rom, FZ_ROM) != 0) {
    fprintf(stderr, "fuzz_virtio_mmio: ROM changed\n");
    abort();
  }
  return 0;
}
