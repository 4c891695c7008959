/*
 * The BT engine against its references, side by side in one run: the
 * multiboot benchmark kernel (bench/kernel) on BT and on KVM through the
 * library, on QEMU TCG (qemu-system-x86_64 spawned with the same image and
 * command line, its serial output parsed), and the compute kernels natively
 * (bench/workloads.c compiled for the host with the guest's flags).
 *
 * Every measurement is in host TSC cycles: the kernel times itself with
 * rdtsc, which on BT (fast mode), on KVM and on QEMU TCG without icount is
 * the host's TSC plus an offset; the native side uses rdtsc too. Cycles
 * become ns with the TSC frequency calibrated here.
 *
 * The host is shared and its speed drifts in phases of seconds, so the
 * engines measure each benchmark back to back: every benchmark runs alone
 * (a fresh VM or process with only it on the command line) on each engine
 * in turn (native, BT, TCG, KVM; the reverse on odd repetitions, so drift
 * within a round favours neither side), then the next benchmark, and the
 * whole round --reps times. The table shows each engine's median and, as
 * ratios, the median of the per-round ratios: each ratio's two figures
 * were measured a fraction of a second apart. Checksums must agree between
 * all of them, or the program fails.
 *
 * The kernel runs with user=1: compute kernels and call/ret at CPL 3. On a
 * software nested hypervisor (PVM) KVM runs CPL 3 natively but emulates
 * CPL 0 at about 1 us per instruction, so the KVM column of the other
 * nanobenchmarks (whose loops run at CPL 0) measures that emulator; the
 * table marks them "cpl0". Their iteration counts on KVM are divided by
 * KVM_DIV (the per-op figures stay comparable).
 *
 * The library's guest RAM is anonymous memory advised for transparent huge
 * pages (VMM_MEM_HUGEPAGES), as QEMU allocates guest RAM by default;
 * --memfd uses the library's default (a memfd), whose first touches cost
 * more where the host backs shared memory with small pages only.
 *
 *   bt_compare [--reps N] [--quick] [--no-qemu] [--no-kvm] [--memfd]
 *              [--only A,B..]
 *
 * --quick runs tiny iteration counts once (the smoke test). --only runs
 * the named benchmarks alone (to profile one of them). Exit status 0
 * when everything ran and agreed (targets missed are reported, not fatal).
 */
#include <libvmm/exit_port.h>
#include <libvmm/io.h>
#include <libvmm/loader.h>
#include <libvmm/mem.h>
#include <libvmm/uart16550.h>
#include <libvmm/vmm.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "workloads.h"

#define GUEST_MEM (256ull << 20)
#define KVM_DIV 50
#define MAX_REPS 31

enum { ENG_NATIVE, ENG_BT, ENG_KVM, ENG_TCG, NENG };
static const char *const eng_name[NENG] = {"native", "BT", "KVM", "TCG"};

enum target { T_NONE, T_COMPUTE, T_LOOP, T_NANO };

struct bench {
  const char *name;
  uint64_t n, n_quick;
  bool native;   /* has a native counterpart */
  bool kvm_cpl0; /* its loop runs at CPL 0 (emulated on PVM) */
  enum target target;
  const char *unit;
  bool kvm_none; /* cannot run on PVM's KVM */
};

static const struct bench benches[] = {
    {"loop", 200000000, 100000, true, false, T_LOOP, "iter", false},
    {"sieve", 8000000, 10000, true, false, T_COMPUTE, "elem", false},
    {"sha", 4000000, 10000, true, false, T_COMPUTE, "byte", false},
    {"sort", 1000000, 10000, true, false, T_COMPUTE, "elem", false},
    {"callret", 20000000, 10000, true, false, T_COMPUTE, "call", false},
    {"syscall", 1000000, 100, false, true, T_NANO, "op", true},
    {"in", 1000000, 100, false, true, T_NANO, "op", false},
    {"cr8", 1000000, 100, false, true, T_NANO, "op", false},
    {"pgfault", 100000, 100, false, true, T_NANO, "op", false},
    {"divzero", 100000, 100, false, true, T_NANO, "op", false},
    {"ptemod", 100000, 100, false, true, T_NANO, "op", false},
};
#define NB (sizeof(benches) / sizeof(benches[0]))

struct result {
  bool have;
  uint64_t n, cycles, checksum;
};

static bool quick;
static bool skipped[NB]; /* not named by --only */
static uint32_t ram_flags = VMM_MEM_HUGEPAGES; /* --memfd: 0 */
static double tsc_ghz;

static void fail(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "bt_compare: ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  exit(1);
}

static uint64_t iters(size_t i, int eng) {
  uint64_t n = quick ? benches[i].n_quick : benches[i].n;
  if (skipped[i])
    return 0;
  if (eng == ENG_KVM && benches[i].kvm_none)
    return 0;
  if (eng == ENG_KVM && benches[i].kvm_cpl0 && !quick)
    n /= KVM_DIV;
  return n;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void calibrate(void) {
  double t0 = now();
  uint64_t c0 = __rdtsc();
  while (now() - t0 < 0.2)
    ;
  double t1 = now();
  uint64_t c1 = __rdtsc();
  tsc_ghz = (double)(c1 - c0) / ((t1 - t0) * 1e9);
}

/* ---- the kernel's output --------------------------------------------- */

/* The kernel's command line to run benchmark `only` alone on `eng`. */
static void cmdline_for(int eng, size_t only, char *buf, size_t size) {
  size_t off = (size_t)snprintf(buf, size, "user=1");
  for (size_t i = 0; i < NB; i++)
    off += (size_t)snprintf(buf + off, size - off, " %s=%llu",
                            benches[i].name,
                            (unsigned long long)(i == only ? iters(i, eng)
                                                           : 0));
}

/* Parse "bench <name> <n> <cycles> <checksum>" lines; true if "done" was
   seen. */
static bool parse_output(const char *out, struct result res[NB]) {
  bool done = false;
  for (const char *p = out; p && *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char line[256];
    if (len >= sizeof(line))
      len = sizeof(line) - 1;
    memcpy(line, p, len);
    line[len] = 0;
    if (len && line[len - 1] == '\r')
      line[len - 1] = 0;
    char name[32];
    unsigned long long n, cyc, sum;
    if (sscanf(line, "bench %31s %llu %llu %llx", name, &n, &cyc, &sum) == 4) {
      for (size_t i = 0; i < NB; i++)
        if (!strcmp(name, benches[i].name))
          res[i] = (struct result){true, n, cyc, sum};
    } else if (!strcmp(line, "done")) {
      done = true;
    }
    p = nl ? nl + 1 : NULL;
  }
  return done;
}

/* ---- BT and KVM through the library ---------------------------------- */

struct outbuf {
  char data[16384];
  size_t len;
};

static void uart_out(vmm_dev *dev, const uint8_t *buf, size_t len,
                     void *opaque) {
  (void)dev;
  struct outbuf *o = opaque;
  size_t room = sizeof(o->data) - 1 - o->len;
  if (len > room)
    len = room;
  memcpy(o->data + o->len, buf, len);
  o->len += len;
  o->data[o->len] = 0;
}

/* An unassigned ISA port, as on QEMU: reads as all ones. */
static int port80(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                  bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)opaque;
  if (is_write)
    return 0;
  if (len == 1) /* what the benchmark reads: no call to memset */
    *(uint8_t *)data = 0xff;
  else
    memset(data, 0xff, len);
  return 0;
}

static void check(int err, const char *what) {
  if (err < 0)
    fail("library: %s: %s", what, vmm_strerror(err));
}

static void run_lib(int eng, size_t only, const void *img, size_t size,
                    struct result res[NB]) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = eng == ENG_BT ? VMM_ENGINE_BT : VMM_ENGINE_KVM;
  /* A local APIC for cr8, as QEMU has: KVM's in the kernel, the library's
     on BT. */
  cfg.flags = VMM_VM_IRQCHIP;
  vmm_vm *vm;
  check(vmm_vm_create(&cfg, &vm), "create");
  check(vmm_mem_slot_add(vm, 0, GUEST_MEM, NULL, ram_flags, NULL), "slot");
  static struct outbuf out;
  out.len = 0;
  out.data[0] = 0;
  struct vmm_uart_config uc;
  vmm_uart_config_init(&uc);
  uc.backend = VMM_UART_CALLBACK;
  uc.write_fn = uart_out;
  uc.write_opaque = &out;
  check(vmm_uart_create(vm, &uc, NULL), "uart");
  struct vmm_exit_port_config xc;
  vmm_exit_port_config_init(&xc);
  check(vmm_exit_port_create(vm, &xc, NULL), "exit port");
  check(vmm_io_register(vm, VMM_IO_PORT, 0x80, 1, port80, NULL), "port 0x80");
  char cmdline[512];
  cmdline_for(eng, only, cmdline, sizeof(cmdline));
  struct vmm_loader_options opt;
  vmm_loader_options_init(&opt);
  opt.cmdline = cmdline;
  struct vmm_loader_result *load = calloc(1, sizeof(*load));
  if (load == NULL)
    fail("%s%s", "out of memory", "");
  check(vmm_loader_load(vm, img, size, &opt, load), "load");
  vmm_vcpu *vcpu;
  check(vmm_vcpu_create(vm, 0, &vcpu), "vcpu");
  check(vmm_loader_apply(vcpu, load), "apply");
  free(load);
  struct vmm_exit *e;
  for (;;) {
    check(vmm_vcpu_run(vcpu, &e), "run");
    if (e->reason == VMM_EXIT_SYSTEM)
      break;
    if (e->reason == VMM_EXIT_IO) { /* unclaimed port */
      if (!e->io.is_write)
        memset(e->io.data, 0xff, (size_t)e->io.size * e->io.count);
      continue;
    }
    fprintf(stderr, "%s", out.data);
    fail("%s: unexpected exit %s", eng_name[eng],
         vmm_exit_reason_name(e->reason));
  }
  int32_t status = e->system.status; /* e lives in the vCPU */
  vmm_vm_destroy(vm);
  if (status != 1 || !parse_output(out.data, res)) {
    fprintf(stderr, "%s", out.data);
    fail("%s: the kernel failed%s", eng_name[eng], "");
  }
}

/* ---- QEMU TCG ---------------------------------------------------------- */

static void run_tcg(size_t only, struct result res[NB]) {
  char cmdline[512], cmd[1024];
  cmdline_for(ENG_TCG, only, cmdline, sizeof(cmdline));
  snprintf(cmd, sizeof(cmd),
           "qemu-system-x86_64 -accel tcg -m %llu -nodefaults -display none "
           "-no-reboot -serial stdio "
           "-device isa-debug-exit,iobase=0xf4,iosize=4 "
           "-kernel '%s' -append '%s' 2>&1",
           (unsigned long long)(GUEST_MEM >> 20), BENCH_KERNEL, cmdline);
  FILE *p = popen(cmd, "r");
  if (p == NULL)
    fail("TCG: cannot run %s%s", "qemu-system-x86_64", "");
  static char out[16384];
  size_t len = fread(out, 1, sizeof(out) - 1, p);
  out[len] = 0;
  int st = pclose(p);
  /* isa-debug-exit: the exit status is (0 << 1) | 1. */
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 1 ||
      !parse_output(out, res)) {
    fprintf(stderr, "%s", out);
    fail("TCG: %s failed%s", "qemu-system-x86_64", "");
  }
}

/* ---- native ------------------------------------------------------------ */

static void nop_fn(void) { __asm__ volatile(""); }

/* Benchmark i natively (it has a native counterpart), on fresh memory
   advised as the guests' RAM is. */
static void run_native(size_t i, struct result res[NB]) {
  uint64_t n = iters(i, ENG_NATIVE);
  /* Fresh memory each time, as a fresh guest has. */
  void *buf = mmap(NULL, n * 4 + 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED)
    fail("%s%s", "mmap failed", "");
  if (ram_flags & VMM_MEM_HUGEPAGES) /* as the guests' RAM */
    (void)madvise(buf, n * 4 + 4096, MADV_HUGEPAGE);
  uint64_t c = 0, t = __rdtsc();
  if (!strcmp(benches[i].name, "loop")) {
    c = wl_loop(n);
  } else if (!strcmp(benches[i].name, "sieve")) {
    c = wl_sieve(buf, n);
  } else if (!strcmp(benches[i].name, "sha")) {
    c = wl_sha256(buf, n);
  } else if (!strcmp(benches[i].name, "sort")) {
    c = wl_sort(buf, n);
  } else {
    void (*volatile fn)(void) = nop_fn;
    for (uint64_t k = 0; k < n; k++)
      fn();
  }
  res[i] = (struct result){true, n, __rdtsc() - t, c};
  munmap(buf, n * 4 + 4096);
}

/* ---- the table ---------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    fail("%s: %s", path, "cannot open");
  static char buf[4 << 20];
  *size = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  return buf;
}

/* --only: a comma-separated list of benchmark names. */
static void select_only(const char *list) {
  for (size_t i = 0; i < NB; i++)
    skipped[i] = true;
  for (const char *p = list; *p;) {
    size_t len = strcspn(p, ",");
    size_t i = 0;
    while (i < NB && !(strlen(benches[i].name) == len &&
                       !strncmp(benches[i].name, p, len)))
      i++;
    if (i == NB)
      fail("--only: no benchmark %s%s", p, "");
    skipped[i] = false;
    p += len + (p[len] == ',');
  }
}

int main(int argc, char **argv) {
  int reps = 5;
  bool use_qemu = true, use_kvm = true;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick"))
      quick = true, reps = 1;
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-qemu"))
      use_qemu = false;
    else if (!strcmp(argv[i], "--no-kvm"))
      use_kvm = false;
    else if (!strcmp(argv[i], "--memfd"))
      ram_flags = 0;
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      select_only(argv[++i]);
    else
      fail("usage: %s [--reps N] [--quick] [--no-qemu] [--no-kvm] [--memfd] "
           "[--only A,B..]%s",
           argv[0], "");
  }
  if (reps < 1 || reps > MAX_REPS)
    fail("--reps: 1..31%s%s", "", "");
  if (!vmm_engine_available(VMM_ENGINE_BT)) {
    printf("bt_compare: the BT engine is not available here\n");
    return 77;
  }
  bool have[NENG] = {true, true, use_kvm && vmm_engine_available(VMM_ENGINE_KVM),
                     use_qemu};
  if (use_qemu && system("qemu-system-x86_64 --version >/dev/null 2>&1")) {
    printf("note: qemu-system-x86_64 not found (apt-get install "
           "qemu-system-x86): no TCG column\n");
    have[ENG_TCG] = false;
  }
  size_t size;
  void *img = read_file(BENCH_KERNEL, &size);
  calibrate();

  static double ns[NENG][NB][MAX_REPS];
  static uint64_t sums[NENG][NB];
  static const int order[NENG] = {ENG_NATIVE, ENG_BT, ENG_TCG, ENG_KVM};
  for (int r = 0; r < reps; r++) {
    for (size_t i = 0; i < NB; i++) {
      if (skipped[i])
        continue;
      for (int k = 0; k < NENG; k++) {
        int eng = order[r % 2 ? NENG - 1 - k : k];
        if (!have[eng] || (eng == ENG_NATIVE && !benches[i].native) ||
            iters(i, eng) == 0)
          continue;
        struct result res[NB] = {0};
        if (eng == ENG_NATIVE)
          run_native(i, res);
        else if (eng == ENG_TCG)
          run_tcg(i, res);
        else
          run_lib(eng, i, img, size, res);
        if (!res[i].have || res[i].n != iters(i, eng))
          fail("%s: no result for %s", eng_name[eng], benches[i].name);
        ns[eng][i][r] = (double)res[i].cycles / tsc_ghz / (double)res[i].n;
        if (r > 0 && sums[eng][i] != res[i].checksum)
          fail("%s: checksum of %s changed between runs", eng_name[eng],
               benches[i].name);
        sums[eng][i] = res[i].checksum;
      }
    }
  }
  /* The same computation everywhere: checksums agree (KVM's reduced
     iteration counts change the pgfault one, the last value written). */
  for (size_t i = 0; i < NB; i++)
    for (int eng = ENG_NATIVE; eng < NENG; eng++) {
      if (!have[eng] || (eng == ENG_NATIVE && !benches[i].native) ||
          iters(i, eng) == 0 ||
          (eng == ENG_KVM && iters(i, ENG_KVM) != iters(i, ENG_BT)))
        continue;
      if (sums[eng][i] != sums[ENG_BT][i])
        fail("checksum of %s differs on %s", benches[i].name, eng_name[eng]);
    }

  printf("bt_compare: TSC %.3f GHz, ns per op: median of %d round%s; "
         "ratios: median of\n  the rounds' ratios (each benchmark run back to "
         "back on every engine)\n  guest RAM of BT and KVM: %s\n",
         tsc_ghz, reps, reps > 1 ? "s" : "",
         ram_flags ? "anonymous, MADV_HUGEPAGE (as QEMU's)" : "memfd");
  printf("%-8s %-5s %10s %10s %10s %10s %8s %8s %8s  %s\n", "bench", "unit",
         "native", "BT", "KVM", "TCG", "BT/TCG", "BT/nat", "BT/KVM",
         "target");
  int missed = 0;
  for (size_t i = 0; i < NB; i++) {
    if (skipped[i])
      continue;
    const struct bench *b = &benches[i];
    bool ran[NENG];
    for (int eng = 0; eng < NENG; eng++)
      ran[eng] = have[eng] && (eng != ENG_NATIVE || b->native) &&
                 iters(i, eng) != 0;
    /* BT against each reference: the median of the rounds' ratios (taken
       before median() sorts the figures). */
    const int ref[3] = {ENG_TCG, ENG_NATIVE, ENG_KVM};
    double rt[3];
    for (int k = 0; k < 3; k++) {
      double v[MAX_REPS];
      for (int r = 0; r < reps; r++)
        v[r] = ns[ENG_BT][i][r] / ns[ref[k]][i][r];
      rt[k] = ran[ref[k]] ? median(v, reps) : -1;
    }
    double m[NENG];
    for (int eng = 0; eng < NENG; eng++)
      m[eng] = ran[eng] ? median(ns[eng][i], reps) : -1;
    char col[NENG][16], rat[3][16];
    for (int eng = 0; eng < NENG; eng++) {
      if (m[eng] < 0)
        snprintf(col[eng], sizeof(col[eng]), "-");
      else
        snprintf(col[eng], sizeof(col[eng]), "%.2f%s", m[eng],
                 eng == ENG_KVM && b->kvm_cpl0 ? "*" : "");
    }
    for (int k = 0; k < 3; k++) {
      if (rt[k] < 0)
        snprintf(rat[k], sizeof(rat[k]), "-");
      else
        snprintf(rat[k], sizeof(rat[k]), "%.3f", rt[k]);
    }
    char tgt[64] = "";
    bool met = true;
    switch (b->target) {
    case T_LOOP:
    case T_COMPUTE:
      if (rt[0] >= 0) {
        met = rt[0] * 3 <= 1;
        snprintf(tgt, sizeof(tgt), "BT/TCG<=0.333 %s", met ? "met" : "MISSED");
      }
      if (b->target == T_LOOP && rt[1] >= 0) {
        bool ok = rt[1] <= 2;
        size_t l = strlen(tgt);
        snprintf(tgt + l, sizeof(tgt) - l, ", BT/nat<=2 %s",
                 ok ? "met" : "MISSED");
        met = met && ok;
      }
      break;
    case T_NANO:
      if (rt[0] >= 0) {
        met = rt[0] < 1;
        snprintf(tgt, sizeof(tgt), "BT/TCG<1 %s", met ? "met" : "MISSED");
      }
      break;
    case T_NONE: break;
    }
    missed += !met;
    printf("%-8s %-5s %10s %10s %10s %10s %8s %8s %8s  %s\n", b->name, b->unit,
           col[ENG_NATIVE], col[ENG_BT], col[ENG_KVM], col[ENG_TCG], rat[0],
           rat[1], rat[2], tgt);
  }
  if (have[ENG_KVM])
    printf("* KVM: the loop runs at CPL 0, which a software nested hypervisor "
           "(PVM) emulates;\n  %d times fewer iterations there\n",
           quick ? 1 : KVM_DIV);
  if (have[ENG_KVM])
    printf("  KVM syscall: not run, sysretq at CPL 0 triple-faults under PVM "
           "(KVM's instruction\n  emulator, which runs CPL 0 there, has no "
           "SYSRET)\n");
  printf("targets missed: %d\n", missed);
  return 0;
}
