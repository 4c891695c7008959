/*
 * The virtio balloon (lib/balloon/) and the memory-management calls it
 * stands on (vmm_mem_discard, vmm_mem_slot_resident,
 * vmm_mem_slot_set_mergeable).
 *
 *   test_balloon [kvm|bt]           host-side tests: the device driven
 *                                   through the MMIO bus by virtio_driver.h
 *                                   (no vCPU runs; the VM is the engine's)
 *   test_balloon guest kvm|bt BIN   the freestanding guest driver
 *                                   (tests/guests/balloon) on that engine
 *
 * Every check of host memory uses the library's vmm_mem_slot_resident()
 * and, independently, the kernel's own accounting (/proc/self/smaps Rss of
 * the mapping, and the memfd's allocated blocks), so the API cannot vouch
 * for itself.
 */
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <uv.h>

#include "guests/balloon/protocol.h"
#include "virtio_driver.h"

#define BASE 0xd0000000ull
#define MIB (1ull << 20)
#define PAGE 4096ull

/* Host-side test layout. */
#define RAM_SIZE (16 * MIB)
#define ROM_GPA (16 * MIB)
#define ROM_SIZE MIB
#define ANON_GPA (32 * MIB)
#define ANON_SIZE (4 * MIB)
#define QMEM 0x10000ull
#define STATS_BUF 0x70000ull
#define PFN_BUF 0x80000ull
#define DATA_GPA MIB
#define DATA_SIZE (8 * MIB)

#define F_STATS (1ull << 1)
#define F_DOOM (1ull << 2)
#define F_REPORTING (1ull << 5)
#define F_V1 (1ull << 32)
#define F_ALL (F_STATS | F_DOOM | F_REPORTING | F_V1)

/* ------------------------------------------------------------------------ */
/* Independent measurements                                                 */

/* Rss of the mapping containing addr, from /proc/self/smaps. */
static uint64_t smaps_rss(const void *addr) {
  FILE *f = fopen("/proc/self/smaps", "r");
  assert_non_null(f);
  char line[512];
  bool in = false;
  uint64_t rss = UINT64_MAX;
  while (fgets(line, sizeof(line), f)) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
      in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
      continue;
    }
    unsigned long kb;
    if (in && sscanf(line, "Rss: %lu kB", &kb) == 1) {
      rss = (uint64_t)kb * 1024;
      break;
    }
  }
  fclose(f);
  assert_true(rss != UINT64_MAX);
  return rss;
}

static uint64_t fd_blocks_bytes(int fd) {
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  return (uint64_t)st.st_blocks * 512;
}

struct resident {
  uint64_t api, smaps, blocks; /* blocks: memfd only, else 0 */
};

static struct resident measure(vmm_vm *vm, uint32_t slot) {
  struct vmm_mem_slot_info info;
  assert_int_equal(vmm_mem_slot_info(vm, slot, &info), 0);
  struct resident r = {0};
  assert_int_equal(vmm_mem_slot_resident(vm, slot, &r.api), 0);
  r.smaps = smaps_rss(info.host);
  if (info.fd >= 0)
    r.blocks = fd_blocks_bytes(info.fd);
  return r;
}

/* Every measurement dropped (or grew) by at least 90% of bytes. */
static void expect_drop(const struct resident *before,
                        const struct resident *after, uint64_t bytes,
                        bool memfd, const char *what) {
  uint64_t need = bytes / 10 * 9;
  if (before->api < after->api || before->api - after->api < need ||
      before->smaps < after->smaps || before->smaps - after->smaps < need ||
      (memfd && (before->blocks < after->blocks ||
                 before->blocks - after->blocks < need)))
    fail_msg("%s: resident api %llu -> %llu, smaps %llu -> %llu, memfd "
             "blocks %llu -> %llu; expected a drop of at least %llu",
             what, (unsigned long long)before->api,
             (unsigned long long)after->api, (unsigned long long)before->smaps,
             (unsigned long long)after->smaps,
             (unsigned long long)before->blocks,
             (unsigned long long)after->blocks, (unsigned long long)need);
}

static void expect_growth(const struct resident *before,
                          const struct resident *after, uint64_t bytes,
                          bool memfd, const char *what) {
  expect_drop(after, before, bytes, memfd, what);
}

/* ------------------------------------------------------------------------ */
/* Host-side fixture                                                        */

struct fixture {
  vmm_vm *vm;
  uint32_t ram_slot, rom_slot, anon_slot;
  void *anon;
  vmm_dev *b;
  unsigned stats_calls;
  struct vmm_balloon_stats last_stats;
  unsigned irq_calls;
  bool irq_level;
  uint64_t base; /* where bdrv_up finds the device */
};

/* The VM's interrupt handler: level changes of the balloon's line. */
static void irq_hook(vmm_vm *vm, uint32_t gsi, bool level, void *opaque) {
  struct fixture *f = opaque;
  (void)vm;
  if (gsi != 5)
    return;
  f->irq_calls++;
  f->irq_level = level;
}

static void on_stats(vmm_dev *b, const struct vmm_balloon_stats *s,
                     void *opaque) {
  struct fixture *f = opaque;
  f->stats_calls++;
  f->last_stats = *s;
  /* The callback runs without the device lock: calling back works. */
  struct vmm_balloon_info info;
  assert_int_equal(vmm_balloon_get_info(b, &info), 0);
}

static void balloon_config(struct fixture *f, struct vmm_balloon_config *c,
                           unsigned version, uint32_t features) {
  vmm_balloon_config_init(c);
  c->mmio.base = BASE;
  c->mmio.version = version;
  c->features = features;
  c->stats_fn = on_stats;
  c->stats_opaque = f;
}

static int setup_common(void **state, unsigned version, uint32_t features) {
  struct fixture *f = calloc(1, sizeof(*f));
  f->base = BASE;
  f->vm = vmmt_vm_create(1, 0);
  assert_ok(vmm_vm_set_irq_handler(f->vm, irq_hook, f));
  assert_int_equal(vmm_mem_slot_add(f->vm, 0, RAM_SIZE, NULL, VMM_MEM_DIRTY_LOG,
                                    &f->ram_slot),
                   0);
  assert_int_equal(vmm_mem_slot_add(f->vm, ROM_GPA, ROM_SIZE, NULL,
                                    VMM_MEM_READONLY, &f->rom_slot),
                   0);
  f->anon = mmap(NULL, ANON_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(f->anon != MAP_FAILED);
  assert_int_equal(
      vmm_mem_slot_add(f->vm, ANON_GPA, ANON_SIZE, f->anon, 0, &f->anon_slot),
      0);
  if (version != 0) {
    struct vmm_balloon_config c;
    balloon_config(f, &c, version, features);
    assert_int_equal(vmm_balloon_create(f->vm, &c, &f->b), 0);
  }
  *state = f;
  return 0;
}

static int setup_modern(void **state) {
  return setup_common(state, 2, VMM_BALLOON_F_ALL);
}
static int setup_legacy(void **state) {
  return setup_common(state, 1, VMM_BALLOON_F_ALL);
}
static int setup_bare(void **state) {
  return setup_common(state, 0, 0);
}

static int teardown(void **state) {
  struct fixture *f = *state;
  if (f == NULL)
    return 0;
  /* The VM owns the balloon and destroys it with itself. */
  assert_ok(vmm_vm_destroy(f->vm));
  munmap(f->anon, ANON_SIZE);
  free(f);
  return 0;
}

/* The test's driver: queues numbered as Linux numbers them. */
struct bdrv {
  struct vd d;
  struct vq_drv q[4];
  int q_stats, q_report;
  unsigned nq;
  uint64_t features;
};

static void bdrv_up(struct fixture *f, struct bdrv *b, uint64_t accept,
                    bool post_stats_first) {
  memset(b, 0, sizeof(*b));
  b->d = (struct vd){f->vm, f->base};
  b->features = vd_device_features(&b->d) & accept;
  uint32_t st = vd_negotiate(&b->d, b->features);
  if (vd_r32(&b->d, VMM__VIRTIO_MMIO_VERSION) == 2)
    assert_true(st & VMM_VIRTIO_STATUS_FEATURES_OK);
  b->nq = 2;
  b->q_stats = b->features & F_STATS ? (int)b->nq++ : -1;
  b->q_report = b->features & F_REPORTING ? (int)b->nq++ : -1;
  for (unsigned i = 0; i < b->nq; i++)
    vq_setup(&b->d, &b->q[i], i, 64, QMEM + i * 0x4000ull);
  vd_w32(&b->d, VMM__VIRTIO_MMIO_QUEUE_SEL, b->nq);
  assert_int_equal(vd_r32(&b->d, VMM__VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
  if (post_stats_first && b->q_stats >= 0) {
    /* Like Linux: the first statistics go in before DRIVER_OK. */
    uint8_t e[10] = {5, 0};
    uint64_t v = 123 * MIB;
    memcpy(e + 2, &v, 8);
    vmm_mem_write(f->vm, STATS_BUF, e, sizeof(e));
    struct vd_buf sb = {STATS_BUF, 10, false};
    vq_add(&b->d, &b->q[b->q_stats], &sb, 1);
    vq_kick(&b->d, &b->q[b->q_stats]);
  }
  vd_set_status(&b->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  assert_int_equal(vd_status(&b->d) & VMM_VIRTIO_STATUS_NEEDS_RESET, 0);
}

/* Send frame numbers to queue q as one request (split over 2 buffers). */
static void send_pfns(struct fixture *f, struct bdrv *b, unsigned q,
                      const uint32_t *pfns, unsigned n) {
  vmm_mem_write(f->vm, PFN_BUF, pfns, n * 4ull);
  if (n >= 2) {
    struct vd_buf bufs[2] = {
        {PFN_BUF, (n / 2) * 4, false},
        {PFN_BUF + (n / 2) * 4ull, (n - n / 2) * 4, false}};
    vq_add(&b->d, &b->q[q], bufs, 2);
  } else {
    struct vd_buf buf = {PFN_BUF, n * 4, false};
    vq_add(&b->d, &b->q[q], &buf, 1);
  }
  vq_kick(&b->d, &b->q[q]);
  uint32_t id, len;
  assert_true(vq_get_used(&b->d, &b->q[q], &id, &len));
  assert_int_equal(len, 0);
}

static void fill(struct fixture *f, uint64_t gpa, uint64_t size, uint8_t v) {
  static uint8_t buf[1 << 16];
  memset(buf, v, sizeof(buf));
  for (uint64_t off = 0; off < size; off += sizeof(buf)) {
    uint64_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);
    assert_int_equal(vmm_mem_write(f->vm, gpa + off, buf, n), 0);
  }
}

/*
 * Whether pages of [gpa, gpa+size) read as zero, looking at one page in
 * `stride`: reading a discarded page maps a page again (a shmem read fault
 * allocates), so checks that precede residency measurements sample.
 */
static bool zero_pages(struct fixture *f, uint64_t gpa, uint64_t size,
                       uint64_t stride) {
  static uint8_t buf[PAGE];
  for (uint64_t off = 0; off < size; off += stride * PAGE) {
    assert_int_equal(vmm_mem_read(f->vm, gpa + off, buf, PAGE), 0);
    for (size_t i = 0; i < PAGE; i++)
      if (buf[i])
        return false;
  }
  return true;
}

static bool all_zero(struct fixture *f, uint64_t gpa, uint64_t size) {
  return zero_pages(f, gpa, size, 1);
}

static struct vmm_balloon_info info_of(struct fixture *f) {
  struct vmm_balloon_info i;
  assert_int_equal(vmm_balloon_get_info(f->b, &i), 0);
  return i;
}

static enum vmm_virtio_error error_of(struct fixture *f) {
  struct vmm_virtio_state st;
  assert_int_equal(vmm_virtio_get_state(f->b, &st), 0);
  return st.error;
}

/* ------------------------------------------------------------------------ */
/* Configuration and host API                                               */

static void test_create_validation(void **state) {
  struct fixture *f = *state;
  struct vmm_balloon_config c;
  vmm_dev *b = NULL;
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.features = 0x100;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EINVAL);
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.queue_size = 100;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EINVAL);
  c.queue_size = 2048;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EINVAL);
  balloon_config(f, &c, 3, VMM_BALLOON_F_ALL);
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EINVAL);
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.mmio.base = BASE + 0x100;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EALIGN);
  c.mmio.base = 0x1000; /* inside RAM: unreachable */
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EOVERLAP);
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.target_bytes = 4095;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EALIGN);
  c.target_bytes = (1ull << 44);
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_ERANGE);
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.mmio.gsi = VMM_IRQ_LINES;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EINVAL);
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.size = sizeof(c) + 8;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EINVAL);
  assert_int_equal(vmm_balloon_create(NULL, &c, &b), VMM_EINVAL);
  /* Names are unique; windows may not overlap; two balloons coexist. */
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  vmm_dev *b1, *b2;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b1), 0);
  assert_ptr_equal(vmm_dev_find(f->vm, "balloon"), b1);
  assert_string_equal(vmm_dev_type(b1), "virtio-mmio");
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EEXIST);
  c.mmio.name = "balloon2";
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b), VMM_EOVERLAP);
  c.mmio.base = BASE + VMM_VIRTIO_MMIO_SIZE;
  assert_int_equal(vmm_balloon_create(f->vm, &c, &b2), 0);
  assert_ok(vmm_dev_detach(b1));
  assert_null(vmm_dev_find(f->vm, "balloon"));
  /* Functions refuse devices that are not balloons. */
  struct vmm_exit_port_config xc;
  vmm_exit_port_config_init(&xc);
  vmm_dev *xp;
  assert_ok(vmm_exit_port_create(f->vm, &xc, &xp));
  struct vmm_balloon_info info;
  char *json;
  assert_vmm(vmm_balloon_set_target(xp, 0), VMM_EINVAL);
  assert_vmm(vmm_balloon_get_info(xp, &info), VMM_EINVAL);
  assert_vmm(vmm_balloon_stats_json(xp, &json), VMM_EINVAL);
  assert_vmm(vmm_balloon_request_stats(NULL), VMM_EINVAL);
  assert_vmm(vmm_balloon_set_stats_interval(xp, 1), VMM_EINVAL);
  /* b2 stays attached: the VM destroys it. */
  (void)b2;
  assert_string_equal(vmm_balloon_stat_name(4), "free-memory");
  assert_null(vmm_balloon_stat_name(16));
}

static void test_target_and_config(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  assert_int_equal(vmm_balloon_set_target(f->b, 100), VMM_EALIGN);
  assert_int_equal(vmm_balloon_set_target(f->b, 1ull << 44), VMM_ERANGE);
  assert_int_equal(vmm_balloon_set_target(f->b, 8 * MIB), 0);
  struct vd d = {f->vm, BASE};
  /* Before DRIVER_OK: visible, no interrupt. */
  assert_int_equal(vd_r32(&d, 0x100), 2048);
  assert_int_equal(vd_r32(&d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);

  bdrv_up(f, &b, F_ALL, false);
  uint32_t gen = vd_r32(&d, VMM__VIRTIO_MMIO_CONFIG_GENERATION);
  assert_int_equal(vmm_balloon_set_target(f->b, 4 * MIB), 0);
  assert_int_equal(vd_r32(&d, 0x100), 1024);
  assert_int_equal(vd_r32(&d, VMM__VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
  assert_int_equal(vd_r32(&d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS),
                   VMM__VIRTIO_INT_CONFIG);
  assert_true(f->irq_level);
  vd_ack_interrupts(&d);
  assert_false(f->irq_level);
  /* The same target again changes nothing. */
  assert_int_equal(vmm_balloon_set_target(f->b, 4 * MIB), 0);
  assert_int_equal(vd_r32(&d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);

  /* num_pages is the device's: a driver write is undone. */
  vd_w32(&d, 0x100, 7);
  assert_int_equal(vd_r32(&d, 0x100), 1024);
  /* actual is the driver's (byte writes too, as legacy PCI did). */
  vd_w32(&d, 0x104, 0x300);
  vd_access(&d, 0x106, 0x1, 1, true);
  struct vmm_balloon_info i = info_of(f);
  assert_int_equal(i.actual_bytes, 0x10300ull * PAGE);
  assert_int_equal(i.target_bytes, 4 * MIB);
  assert_true(i.driver_ok);
  assert_false(i.needs_reset);
  assert_int_equal(i.features, VMM_BALLOON_F_ALL);
  /* Out of range config reads as zero. */
  assert_int_equal(vd_r32(&d, 0x110), 0);

  /* Reset: the driver's actual is gone, the host's target stays. */
  vd_w32(&d, VMM__VIRTIO_MMIO_STATUS, 0);
  i = info_of(f);
  assert_int_equal(i.actual_bytes, 0);
  assert_int_equal(i.target_bytes, 4 * MIB);
  assert_false(i.driver_ok);

  /* A host reset (a machine reset) does the same. */
  bdrv_up(f, &b, F_ALL, false);
  vd_w32(&d, 0x104, 5);
  assert_ok(vmm_dev_reset(f->b));
  i = info_of(f);
  assert_int_equal(vd_status(&d), 0);
  assert_int_equal(i.actual_bytes, 0);
  assert_int_equal(i.target_bytes, 4 * MIB);
}

/* ------------------------------------------------------------------------ */
/* Inflate and deflate                                                      */

static void inflate_range(struct fixture *f, uint32_t slot, uint64_t gpa,
                          uint64_t size, bool memfd) {
  struct bdrv b;
  bdrv_up(f, &b, F_ALL, false);
  fill(f, gpa, size, 0xa5);
  struct resident before = measure(f->vm, slot);
  /* Descending order, as balloon drivers often hand pages out; the device
     merges runs either way. 2048 frames = 8 MiB per request. */
  uint64_t pages = size / PAGE;
  static uint32_t pfns[2048];
  for (uint64_t done = 0; done < pages;) {
    unsigned n = pages - done < 2048 ? (unsigned)(pages - done) : 2048;
    for (unsigned i = 0; i < n; i++)
      pfns[i] = (uint32_t)((gpa + size) / PAGE - 1 - done - i);
    send_pfns(f, &b, 0, pfns, n);
    done += n;
  }
  struct resident after = measure(f->vm, slot);
  expect_drop(&before, &after, size, memfd, "inflate");
  assert_true(zero_pages(f, gpa, size, 64));
  struct vmm_balloon_info i = info_of(f);
  assert_int_equal(i.inflated_pages, pages);
  assert_int_equal(i.rejected_pfns, 0);
  assert_true(i.work_ns > 0);

  /* Deflate: nothing happens on the host until the pages are used. */
  for (uint64_t done = 0; done < pages;) {
    unsigned n = pages - done < 2048 ? (unsigned)(pages - done) : 2048;
    for (unsigned k = 0; k < n; k++)
      pfns[k] = (uint32_t)(gpa / PAGE + done + k);
    send_pfns(f, &b, 1, pfns, n);
    done += n;
  }
  i = info_of(f);
  assert_int_equal(i.deflated_pages, pages);
  assert_int_equal(i.deflate_requests, (pages + 2047) / 2048);
  struct resident idle = measure(f->vm, slot);
  assert_true(idle.api < before.api - size / 10 * 9);
  fill(f, gpa, size, 0x5a);
  struct resident used = measure(f->vm, slot);
  expect_growth(&idle, &used, size, memfd, "use after deflate");
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_NONE);
}

static void test_inflate_memfd(void **state) {
  struct fixture *f = *state;
  inflate_range(f, f->ram_slot, DATA_GPA, DATA_SIZE, true);
  /* The discarded pages changed: the dirty log says so. */
  uint64_t bitmap[RAM_SIZE / PAGE / 64];
  assert_int_equal(
      vmm_mem_dirty_log_get(f->vm, f->ram_slot, bitmap, sizeof(bitmap)), 0);
  assert_true(bitmap[DATA_GPA / PAGE / 64] != 0);
}

static void test_inflate_anon(void **state) {
  struct fixture *f = *state;
  inflate_range(f, f->anon_slot, ANON_GPA, ANON_SIZE, false);
}

static void test_inflate_rejects(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  bdrv_up(f, &b, F_ALL, false);
  uint8_t rom_before[64], rom_after[64];
  fill(f, ROM_GPA, 64 * 1024, 0x77); /* host writes to ROM are allowed */
  vmm_mem_read(f->vm, ROM_GPA, rom_before, sizeof(rom_before));
  fill(f, DATA_GPA, 4 * PAGE, 0x11);
  uint32_t pfns[] = {
      (uint32_t)(DATA_GPA / PAGE),     /* RAM */
      (uint32_t)(ROM_GPA / PAGE),      /* ROM: rejected */
      (uint32_t)(DATA_GPA / PAGE) + 1, /* RAM */
      (uint32_t)(20 * MIB / PAGE),     /* hole between slots */
      (uint32_t)(BASE / PAGE),         /* the device itself */
      0xffffffffu,                     /* far beyond RAM */
      (uint32_t)(RAM_SIZE / PAGE) - 1, /* last RAM page */
      (uint32_t)(RAM_SIZE / PAGE),     /* first ROM page, runs on */
      (uint32_t)(DATA_GPA / PAGE) + 2, /* RAM */
  };
  fill(f, RAM_SIZE - PAGE, PAGE, 0x22);
  send_pfns(f, &b, 0, pfns, 9);
  struct vmm_balloon_info i = info_of(f);
  assert_int_equal(i.inflated_pages, 4);
  assert_int_equal(i.rejected_pfns, 5);
  assert_true(all_zero(f, DATA_GPA, 3 * PAGE));
  assert_false(all_zero(f, DATA_GPA + 3 * PAGE, PAGE)); /* not named */
  assert_true(all_zero(f, RAM_SIZE - PAGE, PAGE));
  vmm_mem_read(f->vm, ROM_GPA, rom_after, sizeof(rom_after));
  assert_memory_equal(rom_before, rom_after, sizeof(rom_before));
  /* Deflating frames that are not RAM is rejected the same way. */
  send_pfns(f, &b, 1, pfns, 9);
  i = info_of(f);
  assert_int_equal(i.deflated_pages, 4);
  assert_int_equal(i.rejected_pfns, 10);
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_NONE);
}

static void test_inflate_malformed(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  uint32_t id, len;
  /* A device-writable inflate buffer. */
  bdrv_up(f, &b, F_ALL, false);
  struct vd_buf w = {PFN_BUF, 8, true};
  vq_add(&b.d, &b.q[0], &w, 1);
  vq_kick(&b.d, &b.q[0]);
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_DIRECTION);
  assert_false(vq_get_used(&b.d, &b.q[0], &id, &len));
  assert_true(info_of(f).needs_reset);
  /* A frame list that is not a whole number of 32-bit entries. */
  bdrv_up(f, &b, F_ALL, false);
  struct vd_buf odd = {PFN_BUF, 6, false};
  vq_add(&b.d, &b.q[1], &odd, 1);
  vq_kick(&b.d, &b.q[1]);
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_REQUEST);
  /* After the reset in bdrv_up the device works again. */
  bdrv_up(f, &b, F_ALL, false);
  fill(f, DATA_GPA, PAGE, 1);
  uint32_t pfn = (uint32_t)(DATA_GPA / PAGE);
  send_pfns(f, &b, 0, &pfn, 1);
  assert_true(all_zero(f, DATA_GPA, PAGE));
  /* An empty request is fine. */
  struct vd_buf empty = {PFN_BUF, 0, false};
  vq_add(&b.d, &b.q[0], &empty, 1);
  vq_kick(&b.d, &b.q[0]);
  assert_true(vq_get_used(&b.d, &b.q[0], &id, &len));
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_NONE);
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */

static void put_stat(uint8_t *p, uint16_t tag, uint64_t val) {
  memcpy(p, &tag, 2);
  memcpy(p + 2, &val, 8);
}

/* Post a statistics buffer: free-memory = freemem, an unknown tag, and a
   trailing 3-byte fragment (ignored). */
static void post_stats(struct fixture *f, struct bdrv *b, uint64_t freemem) {
  uint8_t buf[33];
  put_stat(buf, 4, freemem);
  put_stat(buf + 10, 5, RAM_SIZE);
  put_stat(buf + 20, 999, 1);
  memset(buf + 30, 0xee, 3);
  vmm_mem_write(f->vm, STATS_BUF, buf, sizeof(buf));
  struct vd_buf sb = {STATS_BUF, sizeof(buf), false};
  vq_add(&b->d, &b->q[b->q_stats], &sb, 1);
  vq_kick(&b->d, &b->q[b->q_stats]);
}

static void test_stats(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  assert_int_equal(vmm_balloon_request_stats(f->b), VMM_EAGAIN);
  bdrv_up(f, &b, F_ALL, true);
  /* The buffer posted before DRIVER_OK was read at DRIVER_OK. */
  assert_int_equal(f->stats_calls, 1);
  assert_int_equal(f->last_stats.valid, 1u << 5);
  assert_int_equal(f->last_stats.values[5], 123 * MIB);
  uint32_t id, len;
  struct vq_drv *sq = &b.q[b.q_stats];
  assert_false(vq_get_used(&b.d, sq, &id, &len)); /* held by the device */

  /* A request hands the buffer back with an interrupt. */
  unsigned irqs = f->irq_calls;
  assert_int_equal(vmm_balloon_request_stats(f->b), 0);
  assert_true(vq_get_used(&b.d, sq, &id, &len));
  assert_true(f->irq_calls > irqs);
  assert_int_equal(vmm_balloon_request_stats(f->b), VMM_EAGAIN);
  post_stats(f, &b, 5 * MIB);
  assert_int_equal(f->stats_calls, 2);
  assert_int_equal(f->last_stats.valid, (1u << 4) | (1u << 5));
  assert_int_equal(f->last_stats.values[4], 5 * MIB);
  struct vmm_balloon_stats s;
  assert_int_equal(vmm_balloon_get_stats(f->b, &s), 0);
  assert_int_equal(s.updates, 2);
  assert_true(s.time_ns > 0);

  /* A second buffer while the device holds one breaks the protocol. */
  post_stats(f, &b, 1);
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_REQUEST);
  assert_int_equal(vmm_balloon_request_stats(f->b), VMM_EAGAIN);

  /* A device-writable statistics buffer. */
  bdrv_up(f, &b, F_ALL, false);
  struct vd_buf w = {STATS_BUF, 10, true};
  vq_add(&b.d, &b.q[b.q_stats], &w, 1);
  vq_kick(&b.d, &b.q[b.q_stats]);
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_DIRECTION);

  /* Without the statistics queue there is nothing to ask. */
  bdrv_up(f, &b, F_V1 | F_REPORTING, false);
  assert_int_equal(vmm_balloon_request_stats(f->b), VMM_ENOTSUP);
}

static void test_stats_legacy(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  bdrv_up(f, &b, F_STATS, true);
  /* Legacy: the first buffer historically held garbage; ignored. */
  assert_int_equal(f->stats_calls, 0);
  assert_int_equal(vmm_balloon_request_stats(f->b), 0);
  uint32_t id, len;
  assert_true(vq_get_used(&b.d, &b.q[b.q_stats], &id, &len));
  post_stats(f, &b, 9 * MIB);
  assert_int_equal(f->stats_calls, 1);
  assert_int_equal(f->last_stats.values[4], 9 * MIB);
}

struct timer_ctx {
  struct fixture *f;
  struct bdrv *b;
  uv_timer_t guard;
  int requests_seen;
};

static void timer_guard(uv_timer_t *t) {
  struct timer_ctx *c = t->data;
  uint32_t id, len;
  /* Play the driver: answer each request with fresh statistics. */
  if (vq_get_used(&c->b->d, &c->b->q[c->b->q_stats], &id, &len)) {
    c->requests_seen++;
    post_stats(c->f, c->b, (uint64_t)c->requests_seen * MIB);
  }
  if (c->requests_seen >= 3)
    uv_stop(t->loop);
}

/* A second balloon polled on a loop the host runs (vmm_vm_set_loop). */
static void test_stats_polling(void **state) {
  (void)state;
  struct fixture *f = calloc(1, sizeof(*f));
  f->vm = vmmt_vm_create(1, 0);
  f->base = BASE;
  assert_ok(vmm_mem_slot_add(f->vm, 0, RAM_SIZE, NULL, 0, NULL));
  uv_loop_t uv;
  assert_int_equal(uv_loop_init(&uv), 0);
  struct vmm_loop_config lc;
  vmm_loop_config_init(&lc);
  lc.uv = &uv;
  vmm_loop *loop;
  assert_ok(vmm_loop_create(&lc, &loop));
  assert_ok(vmm_vm_set_loop(f->vm, loop));
  struct vmm_balloon_config c;
  balloon_config(f, &c, 2, VMM_BALLOON_F_ALL);
  c.stats_interval_ms = 5;
  assert_ok(vmm_balloon_create(f->vm, &c, &f->b));
  struct bdrv b;
  bdrv_up(f, &b, F_ALL, false);
  post_stats(f, &b, 0);

  struct timer_ctx ctx = {.f = f, .b = &b};
  uv_timer_init(&uv, &ctx.guard);
  ctx.guard.data = &ctx;
  uv_timer_start(&ctx.guard, timer_guard, 1, 1);
  uint64_t t0 = uv_hrtime();
  while (ctx.requests_seen < 3 && uv_hrtime() - t0 < 5000000000ull)
    uv_run(&uv, UV_RUN_ONCE);
  assert_int_equal(ctx.requests_seen, 3);
  assert_true(f->stats_calls >= 3);
  assert_int_equal(f->last_stats.values[4], 3 * MIB);

  /* Stop polling: no further requests. A request the timer made after
     the guard's last look may still sit in the used ring; drain it. */
  assert_ok(vmm_balloon_set_stats_interval(f->b, 0));
  uv_run(&uv, UV_RUN_NOWAIT); /* the change reaches the loop */
  uint32_t id, len;
  vq_get_used(&b.d, &b.q[b.q_stats], &id, &len);
  ctx.requests_seen = -100; /* keep the guard from stopping the loop */
  uint64_t t1 = uv_hrtime();
  while (uv_hrtime() - t1 < 30000000ull)
    uv_run(&uv, UV_RUN_NOWAIT);
  assert_int_equal(ctx.requests_seen, -100);

  /* On this (the loop's) thread: the VM destroys the balloon, whose timer
     is closed on the loop; then the loop can go. */
  uv_close((uv_handle_t *)&ctx.guard, NULL);
  assert_ok(vmm_vm_destroy(f->vm));
  assert_ok(vmm_loop_destroy(loop));
  uv_run(&uv, UV_RUN_DEFAULT); /* runs the close callbacks */
  assert_int_equal(uv_loop_close(&uv), 0);
  free(f);
}

/* Polling on the loop the VM creates for itself (a thread of its own). */
static void test_stats_polling_threaded(void **state) {
  struct fixture *f = *state;
  assert_ok(vmm_balloon_set_stats_interval(f->b, 2));
  struct bdrv b;
  bdrv_up(f, &b, F_ALL, false);
  post_stats(f, &b, 0);
  /* The loop thread asks; this thread answers, as a vCPU would. */
  int answered = 0;
  uint64_t t0 = uv_hrtime();
  while (answered < 3 && uv_hrtime() - t0 < 5000000000ull) {
    uint32_t id, len;
    if (vq_get_used(&b.d, &b.q[b.q_stats], &id, &len)) {
      answered++;
      post_stats(f, &b, (uint64_t)answered * MIB);
    }
    usleep(200);
  }
  assert_int_equal(answered, 3);
  struct vmm_balloon_stats st;
  assert_ok(vmm_balloon_get_stats(f->b, &st));
  assert_int_equal(st.values[4], 3 * MIB);
  /* The VM's destruction (teardown) stops the timer on its thread. */
}

/* ------------------------------------------------------------------------ */
/* Free page reporting                                                      */

static void test_reporting(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  bdrv_up(f, &b, F_ALL, false);
  assert_true(b.q_report >= 0);
  fill(f, DATA_GPA, 4 * MIB, 0x33);
  struct resident before = measure(f->vm, f->ram_slot);
  /* Ranges with ragged edges: only whole pages inside them go. An empty
     buffer names no memory, wherever it points: one at the top of the
     address space must not wrap into a range of 2^64 bytes. */
  struct vd_buf bufs[4] = {
      {DATA_GPA + 100, (uint32_t)(2 * MIB - 100), true},
      {DATA_GPA + 2 * MIB, (uint32_t)(2 * MIB - 100), true},
      {ANON_GPA, 0, true},
      {UINT64_MAX - 7, 0, true},
  };
  vq_add(&b.d, &b.q[b.q_report], bufs, 4);
  vq_kick(&b.d, &b.q[b.q_report]);
  uint32_t id, len;
  assert_true(vq_get_used(&b.d, &b.q[b.q_report], &id, &len));
  struct resident after = measure(f->vm, f->ram_slot);
  uint64_t pages = 4 * MIB / PAGE - 2;
  expect_drop(&before, &after, pages * PAGE, true, "report");
  assert_int_equal(info_of(f).reported_pages, pages);
  assert_int_equal(info_of(f).report_requests, 1);
  uint8_t edge[100];
  vmm_mem_read(f->vm, DATA_GPA, edge, sizeof(edge));
  assert_int_equal(edge[0], 0x33); /* the partial first page stays */
  assert_true(all_zero(f, DATA_GPA + PAGE, 2 * MIB - PAGE));
  /* Reports must be device-writable, as Linux makes them. */
  struct vd_buf r = {DATA_GPA, (uint32_t)PAGE, false};
  vq_add(&b.d, &b.q[b.q_report], &r, 1);
  vq_kick(&b.d, &b.q[b.q_report]);
  assert_int_equal(error_of(f), VMM_VIRTIO_ERR_DIRECTION);
}

/* ------------------------------------------------------------------------ */
/* Queue numbering                                                          */

struct numbering_case {
  uint32_t offered;  /* VMM_BALLOON_F_* */
  uint64_t accepted; /* virtio bits the driver writes */
  int stats_q, report_q;
};

static void test_queue_numbering(void **state) {
  struct fixture *f = *state;
  const struct numbering_case cases[] = {
      {VMM_BALLOON_F_ALL, F_ALL, 2, 3},
      {VMM_BALLOON_F_ALL, F_V1 | F_STATS, 2, -1},
      /* Linux numbers compactly: no statistics, reporting is queue 2. */
      {VMM_BALLOON_F_ALL, F_V1 | F_REPORTING, -1, 2},
      {VMM_BALLOON_F_REPORTING, F_ALL, -1, 2},
      {0, F_ALL, -1, -1},
  };
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    assert_ok(vmm_dev_detach(f->b));
    struct vmm_balloon_config c;
    balloon_config(f, &c, 2, cases[k].offered);
    assert_int_equal(vmm_balloon_create(f->vm, &c, &f->b), 0);
    struct bdrv b;
    bdrv_up(f, &b, cases[k].accepted, false);
    assert_int_equal(b.q_stats, cases[k].stats_q);
    assert_int_equal(b.q_report, cases[k].report_q);
    /* And the device agrees: the queue behaves as its role says. */
    if (cases[k].report_q >= 0) {
      fill(f, DATA_GPA, PAGE, 9);
      struct vd_buf r = {DATA_GPA, (uint32_t)PAGE, true};
      vq_add(&b.d, &b.q[cases[k].report_q], &r, 1);
      vq_kick(&b.d, &b.q[cases[k].report_q]);
      assert_int_equal(error_of(f), VMM_VIRTIO_ERR_NONE);
      assert_int_equal(info_of(f).reported_pages, 1);
    }
    if (cases[k].stats_q >= 0) {
      unsigned before = f->stats_calls;
      post_stats(f, &b, 1);
      assert_int_equal(f->stats_calls, before + 1);
    }
    /* Notifying the queue after the last one is an error. */
    vd_w32(&b.d, VMM__VIRTIO_MMIO_QUEUE_NOTIFY, b.nq);
    assert_int_equal(error_of(f), VMM_VIRTIO_ERR_NOTIFY);
  }
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */

static void test_json(void **state) {
  struct fixture *f = *state;
  struct bdrv b;
  bdrv_up(f, &b, F_ALL, true);
  assert_int_equal(vmm_balloon_set_target(f->b, 2 * MIB), 0);
  fill(f, DATA_GPA, PAGE, 1);
  uint32_t pfn = (uint32_t)(DATA_GPA / PAGE);
  send_pfns(f, &b, 0, &pfn, 1);
  char *s = NULL;
  assert_int_equal(vmm_balloon_stats_json(f->b, &s), 0);
  json_error_t err;
  json_t *j = json_loads(s, 0, &err);
  assert_non_null(j);
  assert_int_equal(json_integer_value(json_object_get(j, "target_bytes")),
                   2 * MIB);
  assert_true(json_is_true(json_object_get(j, "driver_ok")));
  assert_string_equal(json_string_value(json_object_get(j, "error")),
                      "no error");
  json_t *host = json_object_get(j, "host");
  assert_int_equal(json_integer_value(json_object_get(host, "inflated_pages")),
                   1);
  json_t *stats = json_object_get(j, "stats");
  assert_int_equal(json_integer_value(json_object_get(stats, "total-memory")),
                   123 * MIB);
  assert_null(json_object_get(stats, "free-memory")); /* not reported */
  json_t *slots = json_object_get(j, "slots");
  assert_int_equal(json_array_size(slots), 3);
  json_t *s0 = json_array_get(slots, 0);
  uint64_t res;
  assert_int_equal(vmm_mem_slot_resident(f->vm, f->ram_slot, &res), 0);
  assert_int_equal(json_integer_value(json_object_get(s0, "size")), RAM_SIZE);
  assert_true(json_is_true(json_object_get(s0, "memfd")));
  assert_true(json_integer_value(json_object_get(s0, "resident_bytes")) > 0);
  json_decref(j);
  free(s);
  assert_int_equal(vmm_balloon_stats_json(f->b, NULL), VMM_EINVAL);
  /* The device interface's stats are the same object. */
  json_t *o;
  assert_ok(vmm_dev_stats(f->b, &o));
  assert_string_equal(json_string_value(json_object_get(o, "type")),
                      "virtio-balloon");
  assert_int_equal(json_integer_value(json_object_get(
                       json_object_get(o, "host"), "inflated_pages")),
                   1);
  json_decref(o);
}

/* ------------------------------------------------------------------------ */
/* Memory management calls                                                  */

static void test_mem_discard(void **state) {
  struct fixture *f = *state;
  assert_int_equal(vmm_mem_discard(f->vm, DATA_GPA + 1, PAGE), VMM_EALIGN);
  assert_int_equal(vmm_mem_discard(f->vm, DATA_GPA, 100), VMM_EALIGN);
  assert_int_equal(vmm_mem_discard(f->vm, DATA_GPA, 0), VMM_EINVAL);
  assert_int_equal(vmm_mem_discard(f->vm, ~0ull & ~4095ull, 2 * PAGE),
                   VMM_EINVAL);
  assert_int_equal(vmm_mem_discard(NULL, 0, PAGE), VMM_EINVAL);
  /* A range running from RAM into ROM or a hole changes nothing. */
  fill(f, RAM_SIZE - PAGE, PAGE, 3);
  assert_int_equal(vmm_mem_discard(f->vm, RAM_SIZE - PAGE, 2 * PAGE),
                   VMM_EREADONLY);
  assert_false(all_zero(f, RAM_SIZE - PAGE, PAGE));
  assert_int_equal(vmm_mem_discard(f->vm, ROM_GPA + ROM_SIZE - PAGE, 2 * PAGE),
                   VMM_EREADONLY);
  assert_int_equal(vmm_mem_discard(f->vm, 20 * MIB, PAGE), VMM_ENOMAP);
  assert_int_equal(
      vmm_mem_discard(f->vm, ANON_GPA + ANON_SIZE - PAGE, 2 * PAGE),
      VMM_ENOMAP);
  /* Across two adjacent writable slots (memfd + caller memory). */
  uint32_t s2;
  void *anon2 = mmap(NULL, MIB, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_int_equal(
      vmm_mem_slot_add(f->vm, ANON_GPA + ANON_SIZE, MIB, anon2, 0, &s2), 0);
  fill(f, ANON_GPA + ANON_SIZE - PAGE, 2 * PAGE, 4);
  assert_int_equal(
      vmm_mem_discard(f->vm, ANON_GPA + ANON_SIZE - PAGE, 2 * PAGE), 0);
  assert_true(all_zero(f, ANON_GPA + ANON_SIZE - PAGE, 2 * PAGE));
  assert_int_equal(vmm_mem_slot_remove(f->vm, s2), 0);
  munmap(anon2, MIB);
}

static void test_resident(void **state) {
  struct fixture *f = *state;
  uint64_t r;
  assert_int_equal(vmm_mem_slot_resident(f->vm, 42, &r), VMM_ENOENT);
  assert_int_equal(vmm_mem_slot_resident(f->vm, f->ram_slot, NULL), VMM_EINVAL);
  struct resident a = measure(f->vm, f->anon_slot);
  fill(f, ANON_GPA, 2 * MIB, 1);
  struct resident b = measure(f->vm, f->anon_slot);
  expect_growth(&a, &b, 2 * MIB, false, "touch anon");
  assert_true(b.api <= ANON_SIZE);
  struct resident m0 = measure(f->vm, f->ram_slot);
  fill(f, DATA_GPA, 3 * MIB, 1);
  struct resident m1 = measure(f->vm, f->ram_slot);
  expect_growth(&m0, &m1, 3 * MIB, true, "touch memfd");
  /* Our count and the kernel's agree to the page. */
  assert_int_equal(m1.api, m1.blocks);
}

static void test_mergeable(void **state) {
  struct fixture *f = *state;
  assert_int_equal(vmm_mem_slot_set_mergeable(f->vm, f->ram_slot, true),
                   VMM_ENOTSUP);
  assert_int_equal(vmm_mem_slot_set_mergeable(f->vm, 42, true), VMM_ENOENT);
  int rc = vmm_mem_slot_set_mergeable(f->vm, f->anon_slot, true);
  if (rc == VMM_ENOTSUP) {
    print_message("kernel without KSM (MADV_MERGEABLE refused)\n");
    return;
  }
  assert_int_equal(rc, 0);
  /* The kernel's record of it, independently of our own check. */
  FILE *fp = fopen("/proc/self/smaps", "r");
  char line[512];
  bool in = false, mg = false;
  while (fgets(line, sizeof(line), fp)) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3)
      in = (uintptr_t)f->anon >= lo && (uintptr_t)f->anon < hi;
    else if (in && !strncmp(line, "VmFlags:", 8))
      mg = strstr(line, " mg") != NULL;
  }
  fclose(fp);
  assert_true(mg);
  assert_int_equal(vmm_mem_slot_set_mergeable(f->vm, f->anon_slot, false), 0);
}

/* ------------------------------------------------------------------------ */
/* The guest driver on a real engine                                        */

struct guest_case {
  const char *name;
  unsigned version;
  uint32_t offered;
  uint64_t accept;
  bool anon; /* RAM is private anonymous caller memory */
};

#define G_RAM (48 * MIB)
#define G_POOL_GPA (8 * MIB)
#define G_POOL_SIZE (24 * MIB)
#define G_REPORT_GPA (32 * MIB)
#define G_REPORT_SIZE (8 * MIB)
#define G_DEFLATED_TARGET (8 * MIB)

static const char *g_bin;

struct run {
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  uint32_t phase;
  bool synced, failed;
  uint32_t fail_line;
  char out[1024];
  size_t out_len;
  unsigned stats_calls;
  struct vmm_balloon_stats stats;
};

static int port_out(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                    bool is_write, void *opaque) {
  struct run *r = opaque;
  (void)vcpu, (void)port;
  if (!is_write)
    return VMM_IO_DECLINED;
  for (uint32_t i = 0; i < len && r->out_len + 1 < sizeof(r->out); i++)
    r->out[r->out_len++] = ((char *)data)[i];
  return 0;
}

static int port_sync(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  struct run *r = opaque;
  if (!is_write || len != 4)
    return VMM_IO_DECLINED;
  uint32_t v;
  memcpy(&v, data, 4);
  if (port == BG_PORT_SYNC) {
    r->phase = v;
    r->synced = true;
  } else {
    r->failed = true;
    r->fail_line = v;
  }
  return vmm_vcpu_kick(vcpu);
}

static void guest_stats(vmm_dev *b, const struct vmm_balloon_stats *s,
                        void *opaque) {
  struct run *r = opaque;
  (void)b;
  r->stats_calls++;
  r->stats = *s;
}

struct watchdog {
  vmm_vcpu *vcpu;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  unsigned seconds;
};

static void *watchdog_main(void *arg) {
  struct watchdog *w = arg;
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += w->seconds;
  pthread_mutex_lock(&w->lock);
  while (!w->done)
    if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) != 0)
      break;
  if (!w->done)
    vmm_vcpu_kick(w->vcpu);
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Run until the guest's next sync; fail the test on anything else. */
static uint32_t run_to_sync(struct run *r, uint32_t expect) {
  struct watchdog w = {.vcpu = r->vcpu, .seconds = 60};
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.cond, NULL);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, watchdog_main, &w), 0);
  r->synced = false;
  struct vmm_exit *e;
  int rc = vmm_vcpu_run(r->vcpu, &e);
  pthread_mutex_lock(&w.lock);
  w.done = true;
  pthread_cond_signal(&w.cond);
  pthread_mutex_unlock(&w.lock);
  pthread_join(t, NULL);
  assert_int_equal(rc, 0);
  r->out[r->out_len] = 0;
  if (r->failed) {
    struct bg_result res;
    vmm_mem_read(r->vm, BG_RESULT, &res, sizeof(res));
    fail_msg("guest driver failed at driver.c:%u (detail 0x%llx): %s",
             r->fail_line, (unsigned long long)res.fail_detail, r->out);
  }
  if (!r->synced || e->reason != VMM_EXIT_STOPPED) {
    struct vmm_regs regs;
    vmm_vcpu_get_regs(r->vcpu, &regs);
    fail_msg("guest stopped without sync (exit %d, rip 0x%llx), output: %s",
             e->reason, (unsigned long long)regs.rip, r->out);
  }
  if (r->phase != expect)
    fail_msg("guest reached phase %u, expected %u", r->phase, expect);
  return r->phase;
}

static void *load_file(const char *path, size_t *size) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  static uint8_t image[1 << 16];
  *size = fread(image, 1, sizeof(image), fp);
  fclose(fp);
  assert_true(*size > 0 && *size < sizeof(image));
  return image;
}

static void run_guest_case(const struct guest_case *gc) {
  const char *eng = vmm_engine_name(vmmt_engine);
  struct run r;
  memset(&r, 0, sizeof(r));
  r.vm = vmmt_vm_create(1, 0);
  void *anon = NULL;
  if (gc->anon) {
    anon = mmap(NULL, G_RAM, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(anon != MAP_FAILED);
  }
  uint32_t slot;
  assert_int_equal(vmm_mem_slot_add(r.vm, 0, G_RAM, anon, 0, &slot), 0);
  assert_int_equal(
      vmm_io_register(r.vm, VMM_IO_PORT, BG_PORT_OUT, 1, port_out, &r), 0);
  assert_int_equal(
      vmm_io_register(r.vm, VMM_IO_PORT, BG_PORT_SYNC, 8, port_sync, &r), 0);

  struct vmm_balloon_config bc;
  vmm_balloon_config_init(&bc);
  bc.mmio.base = BASE;
  bc.mmio.version = gc->version;
  bc.features = gc->offered;
  bc.stats_fn = guest_stats;
  bc.stats_opaque = &r;
  vmm_dev *b;
  assert_int_equal(vmm_balloon_create(r.vm, &bc, &b), 0);

  size_t n;
  void *image = load_file(g_bin, &n);
  assert_int_equal(vmm_mem_write(r.vm, BG_LOAD, image, n), 0);
  struct bg_params p = {
      .magic = BG_MAGIC,
      .version = gc->version,
      .mmio_base = BASE,
      .accept = gc->accept,
      .pool_gpa = G_POOL_GPA,
      .pool_size = G_POOL_SIZE,
      .report_gpa = G_REPORT_GPA,
      .report_size = G_REPORT_SIZE,
      .ram_size = G_RAM,
      .pfns_per_desc = 512,
  };
  assert_int_equal(vmm_mem_write(r.vm, BG_PARAMS, &p, sizeof(p)), 0);

  assert_int_equal(vmm_vcpu_create(r.vm, 0, &r.vcpu), 0);
  struct vmm_mode_setup ms = {.mode = VMM_MODE_LONG64,
                              .cpl = 3,
                              .tables = BG_TABLES,
                              .identity_size = 4ull << 30,
                              .kernel_stack = BG_STACK};
  assert_int_equal(vmm_vcpu_set_mode(r.vcpu, &ms), 0);
  struct vmm_regs regs;
  assert_int_equal(vmm_vcpu_get_regs(r.vcpu, &regs), 0);
  regs.rip = BG_LOAD;
  regs.rsp = BG_STACK;
  assert_int_equal(vmm_vcpu_set_regs(r.vcpu, &regs), 0);

  bool memfd = !gc->anon;
  bool stats = (gc->accept & F_STATS) && (gc->offered & VMM_BALLOON_F_STATS);
  bool report =
      (gc->accept & F_REPORTING) && (gc->offered & VMM_BALLOON_F_REPORTING);

  /* 1. Driver up, pools touched by the guest. */
  run_to_sync(&r, BG_SYNC_READY);
  struct resident r1 = measure(r.vm, slot);
  if (r1.api < G_POOL_SIZE + G_REPORT_SIZE)
    fail_msg("guest touched %llu bytes, resident only %llu",
             (unsigned long long)(G_POOL_SIZE + G_REPORT_SIZE),
             (unsigned long long)r1.api);
  if (stats)
    assert_int_equal(r.stats_calls, gc->version == 2 ? 1 : 0);
  assert_int_equal(vmm_balloon_set_target(b, G_POOL_SIZE), 0);

  /* 2. Inflated: the host really has the memory back. */
  run_to_sync(&r, BG_SYNC_INFLATED);
  struct vmm_balloon_info i;
  assert_int_equal(vmm_balloon_get_info(b, &i), 0);
  assert_int_equal(i.actual_bytes, G_POOL_SIZE);
  assert_int_equal(i.inflated_pages, G_POOL_SIZE / PAGE);
  assert_int_equal(i.rejected_pfns, 0);
  struct resident r2 = measure(r.vm, slot);
  expect_drop(&r1, &r2, G_POOL_SIZE, memfd, "guest inflate");
  print_message("%s/%s: inflated %llu MiB, host resident %llu -> %llu MiB "
                "(smaps %llu -> %llu)\n",
                eng, gc->name, (unsigned long long)(G_POOL_SIZE / MIB),
                (unsigned long long)(r1.api / MIB),
                (unsigned long long)(r2.api / MIB),
                (unsigned long long)(r1.smaps / MIB),
                (unsigned long long)(r2.smaps / MIB));
  assert_int_equal(vmm_balloon_request_stats(b), stats ? 0 : VMM_ENOTSUP);
  assert_int_equal(vmm_balloon_set_target(b, G_DEFLATED_TARGET), 0);

  /* 3. Deflated and used again: the memory came back. */
  run_to_sync(&r, BG_SYNC_DEFLATED);
  uint64_t back = G_POOL_SIZE - G_DEFLATED_TARGET;
  assert_int_equal(vmm_balloon_get_info(b, &i), 0);
  assert_int_equal(i.deflated_pages, back / PAGE);
  assert_int_equal(i.actual_bytes, G_DEFLATED_TARGET);
  struct resident r3 = measure(r.vm, slot);
  expect_growth(&r2, &r3, back, memfd, "guest deflate");
  if (stats) {
    /* The refilled buffer: the driver's sequence number is 2. */
    assert_true(r.stats_calls >= 1);
    assert_int_equal(r.stats.valid, (1u << 3) | (1u << 4) | (1u << 5));
    assert_int_equal(r.stats.values[3], 2);
    assert_int_equal(r.stats.values[5], G_RAM);
  }

  /* 4. Free page reporting. */
  if (report) {
    run_to_sync(&r, BG_SYNC_REPORTED);
    assert_int_equal(vmm_balloon_get_info(b, &i), 0);
    assert_int_equal(i.reported_pages, G_REPORT_SIZE / PAGE);
    struct resident r4 = measure(r.vm, slot);
    expect_drop(&r3, &r4, G_REPORT_SIZE, memfd, "guest report");
  }
  run_to_sync(&r, BG_SYNC_DONE);

  /* The guest's own view. */
  struct bg_result res;
  assert_int_equal(vmm_mem_read(r.vm, BG_RESULT, &res, sizeof(res)), 0);
  assert_int_equal(res.fail_line, 0);
  assert_int_equal(res.q_stats, stats ? 2 : -1);
  assert_int_equal(res.q_report, report ? (stats ? 3 : 2) : -1);
  assert_int_equal(res.zero_pages_seen,
                   back / PAGE + (report ? G_REPORT_SIZE / PAGE : 0));
  struct vmm_virtio_state vs;
  assert_int_equal(vmm_virtio_get_state(b, &vs), 0);
  assert_int_equal(vs.error, VMM_VIRTIO_ERR_NONE);
  assert_int_equal(vs.errors, 0);
  assert_int_equal(res.features, vs.driver_features);
  print_message("%s/%s: %u notifications, %llu interrupts, queue size %u\n",
                eng, gc->name, res.notifies, (unsigned long long)vs.interrupts,
                res.queue_size);

  assert_int_equal(vmm_vm_destroy(r.vm), 0); /* and the balloon with it */
  if (anon != NULL)
    munmap(anon, G_RAM);
}

static void test_guest_modern(void **state) {
  (void)state;
  static const struct guest_case gc = {"modern", 2, VMM_BALLOON_F_ALL, F_ALL,
                                       false};
  run_guest_case(&gc);
}

static void test_guest_legacy(void **state) {
  (void)state;
  static const struct guest_case gc = {"legacy", 1, VMM_BALLOON_F_ALL,
                                       F_STATS | F_DOOM | F_REPORTING, false};
  run_guest_case(&gc);
}

static void test_guest_no_stats_offered(void **state) {
  (void)state;
  static const struct guest_case gc = {
      "no-stats-offered", 2,
      VMM_BALLOON_F_DEFLATE_ON_OOM | VMM_BALLOON_F_REPORTING, F_ALL, false};
  run_guest_case(&gc);
}

static void test_guest_stats_declined(void **state) {
  (void)state;
  static const struct guest_case gc = {"stats-declined", 2, VMM_BALLOON_F_ALL,
                                       F_V1 | F_REPORTING, false};
  run_guest_case(&gc);
}

static void test_guest_private_anon(void **state) {
  (void)state;
  static const struct guest_case gc = {"private-anon", 2, VMM_BALLOON_F_ALL,
                                       F_ALL, true};
  run_guest_case(&gc);
}

#define T(fn, s) cmocka_unit_test_setup_teardown(fn, s, teardown)

int main(int argc, char **argv) {
  int failed;
  if (argc == 4 && !strcmp(argv[1], "guest")) {
    char *engine_args[] = {argv[0], argv[2]};
    int rc = vmmt_select_engine(2, engine_args);
    if (rc != 0)
      return rc;
    g_bin = argv[3];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guest_modern),
        cmocka_unit_test(test_guest_legacy),
        cmocka_unit_test(test_guest_no_stats_offered),
        cmocka_unit_test(test_guest_stats_declined),
        cmocka_unit_test(test_guest_private_anon),
    };
    failed = cmocka_run_group_tests_name("balloon-guest", tests, NULL, NULL);
  } else if (argc <= 2) {
    int rc = vmmt_select_engine(argc, argv);
    if (rc != 0)
      return rc;
    const struct CMUnitTest tests[] = {
        T(test_create_validation, setup_bare),
        T(test_target_and_config, setup_modern),
        T(test_inflate_memfd, setup_modern),
        T(test_inflate_anon, setup_modern),
        T(test_inflate_rejects, setup_modern),
        T(test_inflate_malformed, setup_modern),
        T(test_stats, setup_modern),
        T(test_stats_legacy, setup_legacy),
        cmocka_unit_test(test_stats_polling),
        T(test_stats_polling_threaded, setup_modern),
        T(test_reporting, setup_modern),
        T(test_queue_numbering, setup_modern),
        T(test_json, setup_modern),
        T(test_mem_discard, setup_bare),
        T(test_resident, setup_bare),
        T(test_mergeable, setup_bare),
    };
    failed = cmocka_run_group_tests(tests, NULL, NULL);
  } else {
    fprintf(stderr, "usage: %s [kvm|bt] | guest kvm|bt driver.bin\n", argv[0]);
    return 2;
  }
  return failed ? 1 : 0;
}
