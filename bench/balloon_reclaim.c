/*
 * Balloon reclaim benchmark: how long, and how much host CPU, it takes to
 * take 1 GiB back from a guest through the virtio balloon, and the inflate
 * rate in pages per second - each against a baseline of the very same
 * system calls (fallocate hole punches, madvise) made directly by this
 * program on memory of the same kind, measured side by side in one run.
 *
 * The guest is the test suite's freestanding balloon driver
 * (tests/guests/balloon) at CPL 3. The host populates the pool, sets the
 * target, and the clock runs from there until the guest reports the balloon
 * at the target: the guest writes 262144 frame numbers, notifies, the
 * device reads them from guest memory, merges runs and discards.
 *
 * Scenarios:
 *   memfd-contiguous  library RAM (memfd), frames in order: the device
 *                     punches one hole per request (4096 frames)
 *   memfd-scattered   even frames first, then odd: one hole per page
 *   anon-contiguous   caller private anonymous RAM: MADV_DONTNEED per run
 *
 *   bench_balloon_reclaim [-e kvm|bt] [-m MIB] [-r REPS] [driver.bin]
 */
#include <fcntl.h>
#include <libvmm/vmm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

#define MIB (1ull << 20)
#define PAGE 4096ull
#define BASE 0xd0000000ull
#define PER_REQUEST 4096u /* frames per descriptor, as the guest sends */

#ifndef BALLOON_GUEST_BIN
#define BALLOON_GUEST_BIN NULL
#endif

struct scenario {
  const char *name;
  bool anon;
  bool scatter;
};

static const struct scenario scenarios[] = {
    {"memfd-contiguous", false, false},
    {"memfd-scattered", false, true},
    {"anon-contiguous", true, false},
};

struct sample {
  double wall_ms, cpu_ms;
  double discard_ms; /* library: time inside discard calls (device count) */
  uint64_t pages;
  uint64_t resident_before, resident_after;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double cpu_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void die(const char *what, int err) {
  fprintf(stderr, "balloon_reclaim: %s: %s\n", what, vmm_strerror(err));
  exit(1);
}

#define CHECK(call)                                                            \
  do {                                                                         \
    int err_ = (call);                                                         \
    if (err_ < 0)                                                              \
      die(#call, err_);                                                        \
  } while (0)

/* Make every page of [p, p + size) resident, as a guest's use would. */
static void populate(uint8_t *p, uint64_t size) {
  for (uint64_t off = 0; off < size; off += PAGE)
    p[off] = 1;
}

/* The i-th frame of the pool in the guest's order (driver.c pool_pfn). */
static uint64_t pool_page(uint64_t i, uint64_t n, bool scatter) {
  if (!scatter)
    return i;
  return i < (n + 1) / 2 ? 2 * i : 2 * (i - (n + 1) / 2) + 1;
}

struct run {
  uint32_t phase;
  bool synced, failed;
};

static int port_sync(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  struct run *r = opaque;
  if (!is_write || len != 4)
    return VMM_IO_DECLINED;
  memcpy(&r->phase, data, 4);
  if (port == BG_PORT_SYNC)
    r->synced = true;
  else
    r->failed = true;
  return vmm_vcpu_kick(vcpu);
}

static int port_out(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                    bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)opaque;
  if (is_write)
    fwrite(data, 1, len, stderr);
  return 0;
}

static void run_to(vmm_vcpu *vcpu, struct run *r, uint32_t phase) {
  struct vmm_exit *e;
  r->synced = false;
  CHECK(vmm_vcpu_run(vcpu, &e));
  if (r->failed || !r->synced || r->phase != phase) {
    fprintf(stderr, "balloon_reclaim: guest at phase %u (exit %d), wanted %u\n",
            r->phase, e->reason, phase);
    exit(1);
  }
}

/* One reclaim through the balloon. */
static struct sample library_run(const struct scenario *sc,
                                 enum vmm_engine_kind engine, const void *image,
                                 size_t image_len, uint64_t pool) {
  uint64_t ram = BG_POOL_MIN + pool;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = engine;
  vmm_vm *vm;
  CHECK(vmm_vm_create(&cfg, &vm));
  void *anon = NULL;
  if (sc->anon) {
    anon = mmap(NULL, ram, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (anon == MAP_FAILED)
      die("mmap", -1);
  }
  uint32_t slot;
  CHECK(vmm_mem_slot_add(vm, 0, ram, anon, 0, &slot));
  struct run r = {0};
  CHECK(vmm_io_register(vm, VMM_IO_PORT, BG_PORT_SYNC, 8, port_sync, &r));
  CHECK(vmm_io_register(vm, VMM_IO_PORT, BG_PORT_OUT, 1, port_out, NULL));
  struct vmm_balloon_config bc;
  vmm_balloon_config_init(&bc);
  bc.mmio.base = BASE;
  vmm_dev *b;
  CHECK(vmm_balloon_create(vm, &bc, &b));
  CHECK(vmm_mem_write(vm, BG_LOAD, image, image_len));
  struct bg_params p = {
      .magic = BG_MAGIC,
      .version = 2,
      .mmio_base = BASE,
      .accept = BG_FEAT_VERSION_1 | BG_FEAT_STATS | BG_FEAT_REPORTING,
      .pool_gpa = BG_POOL_MIN,
      .pool_size = pool,
      .ram_size = ram,
      .pfns_per_desc = PER_REQUEST,
      .flags =
          BG_F_NO_TOUCH | BG_F_INFLATE_ONLY | (sc->scatter ? BG_F_SCATTER : 0),
  };
  CHECK(vmm_mem_write(vm, BG_PARAMS, &p, sizeof(p)));
  vmm_vcpu *vcpu;
  CHECK(vmm_vcpu_create(vm, 0, &vcpu));
  struct vmm_mode_setup ms = {.mode = VMM_MODE_LONG64,
                              .cpl = 3,
                              .tables = BG_TABLES,
                              .identity_size = 4ull << 30,
                              .kernel_stack = BG_STACK};
  CHECK(vmm_vcpu_set_mode(vcpu, &ms));
  struct vmm_regs regs;
  CHECK(vmm_vcpu_get_regs(vcpu, &regs));
  regs.rip = BG_LOAD;
  regs.rsp = BG_STACK;
  CHECK(vmm_vcpu_set_regs(vcpu, &regs));

  run_to(vcpu, &r, BG_SYNC_READY);
  void *hva;
  CHECK(vmm_mem_gpa_to_hva(vm, BG_POOL_MIN, pool, &hva));
  populate(hva, pool);
  struct sample s = {.pages = pool / PAGE};
  CHECK(vmm_mem_slot_resident(vm, slot, &s.resident_before));

  double c0 = cpu_ms(), t0 = now_ms();
  CHECK(vmm_balloon_set_target(b, pool));
  run_to(vcpu, &r, BG_SYNC_INFLATED);
  s.wall_ms = now_ms() - t0;
  s.cpu_ms = cpu_ms() - c0;

  CHECK(vmm_mem_slot_resident(vm, slot, &s.resident_after));
  struct vmm_balloon_info info;
  CHECK(vmm_balloon_get_info(b, &info));
  if (info.inflated_pages != pool / PAGE) {
    fprintf(stderr, "balloon_reclaim: inflated %llu pages, wanted %llu\n",
            (unsigned long long)info.inflated_pages,
            (unsigned long long)(pool / PAGE));
    exit(1);
  }
  s.discard_ms = info.work_ns / 1e6;
  vmm_vm_destroy(vm); /* the balloon goes with it */
  if (anon != NULL)
    munmap(anon, ram);
  return s;
}

/*
 * The same discards, made directly: the same runs in the same order (runs
 * merge within one request of PER_REQUEST frames, as the device merges
 * within one descriptor chain), fallocate on a memfd or MADV_DONTNEED on
 * private anonymous memory. With in_vm, the memory is a slot of a VM (never
 * run), so the kernel also tells KVM about every discard (MMU notifiers),
 * as it does for the balloon: the difference between the two baselines is
 * the cost of the memory being guest RAM, the rest is the device's.
 */
static struct sample direct_run(const struct scenario *sc, uint64_t pool,
                                enum vmm_engine_kind engine, bool in_vm) {
  int fd = -1;
  uint8_t *p = NULL;
  vmm_vm *vm = NULL;
  if (sc->anon) {
    p = mmap(NULL, pool, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      die("mmap", -1);
  }
  if (in_vm) {
    struct vmm_vm_config cfg;
    vmm_vm_config_init(&cfg);
    cfg.engine = engine;
    CHECK(vmm_vm_create(&cfg, &vm));
    uint32_t slot;
    CHECK(vmm_mem_slot_add(vm, 0, pool, sc->anon ? p : NULL, 0, &slot));
    struct vmm_mem_slot_info info;
    CHECK(vmm_mem_slot_info(vm, slot, &info));
    p = info.host;
    fd = info.fd;
  } else if (!sc->anon) {
    fd = memfd_create("bench", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)pool) < 0)
      die("memfd", -1);
    p = mmap(NULL, pool, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      die("mmap", -1);
  }
  populate(p, pool);
  struct sample s = {.pages = pool / PAGE};

  uint64_t n = pool / PAGE;
  double c0 = cpu_ms(), t0 = now_ms();
  for (uint64_t req = 0; req < n; req += PER_REQUEST) {
    uint64_t end = req + PER_REQUEST < n ? req + PER_REQUEST : n;
    uint64_t lo = 0, len = 0;
    for (uint64_t i = req; i <= end; i++) {
      uint64_t pg = i < end ? pool_page(i, n, sc->scatter) : UINT64_MAX;
      if (len > 0 && pg == lo + len) {
        len++;
        continue;
      }
      if (len > 0) {
        int rc = sc->anon
                     ? madvise(p + lo * PAGE, len * PAGE, MADV_DONTNEED)
                     : fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 (off_t)(lo * PAGE), (off_t)(len * PAGE));
        if (rc < 0)
          die("discard", -1);
      }
      lo = pg;
      len = 1;
    }
  }
  s.wall_ms = now_ms() - t0;
  s.cpu_ms = cpu_ms() - c0;
  s.discard_ms = s.wall_ms;
  if (vm != NULL) {
    vmm_vm_destroy(vm);
  } else {
    if (!sc->anon)
      munmap(p, pool);
    if (fd >= 0)
      close(fd);
  }
  if (sc->anon)
    munmap(p, pool);
  return s;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  enum vmm_engine_kind engine = VMM_ENGINE_KVM;
  uint64_t pool = 1024 * MIB;
  int reps = 3;
  const char *bin = BALLOON_GUEST_BIN;
  int opt;
  while ((opt = getopt(argc, argv, "e:m:r:")) != -1) {
    switch (opt) {
    case 'e':
      engine = !strcmp(optarg, "bt") ? VMM_ENGINE_BT : VMM_ENGINE_KVM;
      break;
    case 'm': pool = strtoull(optarg, NULL, 0) * MIB; break;
    case 'r': reps = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: %s [-e kvm|bt] [-m MIB] [-r REPS] [driver.bin]\n",
              argv[0]);
      return 2;
    }
  }
  if (optind < argc)
    bin = argv[optind];
  if (bin == NULL || reps < 1 || reps > 50 || pool == 0 ||
      pool > BG_PFN_AREA_SIZE / 4 * PAGE) {
    fprintf(stderr, "balloon_reclaim: need the driver binary, 1..50 "
                    "repetitions and at most 1024 MiB\n");
    return 2;
  }
  if (!vmm_engine_available(engine)) {
    printf("balloon_reclaim: %s engine not available here\n",
           vmm_engine_name(engine));
    return 77;
  }
  FILE *f = fopen(bin, "rb");
  if (f == NULL) {
    perror(bin);
    return 1;
  }
  static uint8_t image[1 << 16];
  size_t image_len = fread(image, 1, sizeof(image), f);
  fclose(f);

  printf("balloon reclaim of %llu MiB (%llu pages) on %s, %d runs each, "
         "medians; baseline = the same discard calls made directly\n\n",
         (unsigned long long)(pool / MIB), (unsigned long long)(pool / PAGE),
         vmm_engine_name(engine), reps);
  printf("%-17s %9s %9s %9s %9s %9s %11s %7s %7s %7s\n", "scenario", "lib ms",
         "base ms", "vm ms", "lib cpu", "base cpu", "lib pages/s", "time x",
         "cpu x", "vs vm");
  for (size_t k = 0; k < sizeof(scenarios) / sizeof(scenarios[0]); k++) {
    const struct scenario *sc = &scenarios[k];
    double lw[50], lc[50], ld[50], bw[50], bc[50], vw[50];
    double reclaimed = 1.0;
    for (int i = 0; i < reps; i++) {
      /* Interleaved, so drift in the machine hits all sides alike. */
      struct sample l = library_run(sc, engine, image, image_len, pool);
      struct sample d = direct_run(sc, pool, engine, false);
      struct sample v = direct_run(sc, pool, engine, true);
      lw[i] = l.wall_ms;
      lc[i] = l.cpu_ms;
      ld[i] = l.discard_ms;
      bw[i] = d.wall_ms;
      bc[i] = d.cpu_ms;
      vw[i] = v.wall_ms;
      double r = (double)(l.resident_before - l.resident_after) / (double)pool;
      if (r < reclaimed)
        reclaimed = r;
    }
    double mlw = median(lw, reps), mlc = median(lc, reps);
    double mbw = median(bw, reps), mbc = median(bc, reps);
    double mvw = median(vw, reps), mld = median(ld, reps);
    printf("%-17s %9.1f %9.1f %9.1f %9.1f %9.1f %11.0f %6.2fx %6.2fx %6.2fx\n",
           sc->name, mlw, mbw, mvw, mlc, mbc,
           (double)(pool / PAGE) / (mlw / 1e3), mlw / mbw,
           mbc > 0 ? mlc / mbc : 0.0, mlw / mvw);
    printf("%-17s baseline %.0f pages/s; device time on the requests "
           "%.1f ms; reclaimed %.1f%% of the pool\n",
           "", (double)(pool / PAGE) / (mbw / 1e3), mld, reclaimed * 100);
  }
  printf("\nlib: through the balloon (guest writes frames, notifies, device "
         "discards); base: same calls on plain host memory; vm: same calls "
         "on the memory of a VM (KVM notified). time x / cpu x = lib / base, "
         "vs vm = lib / vm.\n");
  return 0;
}
