/*
 * libvmm benchmark kernel (multiboot, long mode, runtime in guest/rt): the
 * compute kernels of bench/workloads.c and the nanobenchmarks of the
 * VMware BT-versus-hardware paper (syscall, in, cr8 write, call/ret, page
 * fault, divide-by-zero fault, page-table-entry write), timed with rdtsc
 * and reported on the UART as
 *     bench <name> <iterations> <cycles> <checksum>
 * then "done" and the exit port. The same ELF32 image runs under libvmm
 * (BT and KVM) and under QEMU, so the numbers compare engines, not builds.
 *
 * Command line: name=N sets the iterations (or bytes/elements) of a
 * benchmark, 0 skips it: loop sieve sha sort syscall in cr8 callret
 * pgfault divzero ptemod. user=1 runs the compute kernels and call/ret at
 * CPL 3 (the timing included), which is where a software nested
 * hypervisor such as PVM runs guest code natively rather than emulating it.
 */
#include "klib.h"
#include "workloads.h"

#define HEAP 0x1000000ull        /* 16 MiB: buffers for the compute kernels */
#define PF_VA 0x40000000ull      /* 1 GiB: a 4 KiB-mapped page for faults */
#define PF_PA 0x800000ull        /* ... backed by this physical page */

static uint64_t mem_end; /* first byte past RAM, from multiboot */

static void report(const char *name, uint64_t iters, uint64_t cycles,
                   uint64_t checksum) {
  kputs("bench ");
  kputs(name);
  kputs(" ");
  kputu(iters);
  kputs(" ");
  kputu(cycles);
  kputs(" ");
  kputx(checksum);
  kputs("\n");
}

static bool fits(const char *name, uint64_t bytes) {
  if (HEAP + bytes <= mem_end)
    return true;
  kputs("skip ");
  kputs(name);
  kputs(": not enough guest memory\n");
  return false;
}

/* ---- compute ------------------------------------------------------------ */

enum job { JOB_LOOP, JOB_SIEVE, JOB_SHA, JOB_SORT, JOB_CALLRET };

static void nop_fn(void) { __asm__ volatile(""); }

/* One timed job; with user set, klib_enter_user runs it at CPL 3. */
static struct {
  enum job job;
  uint64_t n, cycles, checksum;
} cur;

static void do_job(void) {
  uint64_t t = rdtsc(), c = 0;
  switch (cur.job) {
  case JOB_LOOP: c = wl_loop(cur.n); break;
  case JOB_SIEVE: c = wl_sieve((uint8_t *)HEAP, cur.n); break;
  case JOB_SHA: c = wl_sha256((uint8_t *)HEAP, cur.n); break;
  case JOB_SORT: c = wl_sort((uint32_t *)HEAP, cur.n); break;
  case JOB_CALLRET: {
    void (*volatile fn)(void) = nop_fn;
    for (uint64_t i = 0; i < cur.n; i++)
      fn();
    break;
  }
  }
  cur.cycles = rdtsc() - t;
  cur.checksum = c;
}

static uint8_t job_stack[65536] __attribute__((aligned(16)));

static void user_job(void) {
  do_job();
  __asm__ volatile("mov $1, %%eax\n\tsyscall" : : : "rax", "rcx", "r11",
                   "memory");
}

static bool user_mode;

static void run_job(const char *name, enum job job, uint64_t n) {
  cur.job = job;
  cur.n = n;
  if (user_mode)
    klib_enter_user(user_job, (uint64_t)(job_stack + sizeof(job_stack)));
  else
    do_job();
  report(name, n, cur.cycles, cur.checksum);
}

static void run_compute(const char *cmdline) {
  uint64_t n;

  if ((n = klib_parse_u(klib_arg(cmdline, "loop"), 100000000)))
    run_job("loop", JOB_LOOP, n);
  if ((n = klib_parse_u(klib_arg(cmdline, "sieve"), 16000000)) &&
      fits("sieve", n))
    run_job("sieve", JOB_SIEVE, n);
  if ((n = klib_parse_u(klib_arg(cmdline, "sha"), 6400000)) && fits("sha", n))
    run_job("sha", JOB_SHA, n);
  if ((n = klib_parse_u(klib_arg(cmdline, "sort"), 2000000)) &&
      fits("sort", n * 4))
    run_job("sort", JOB_SORT, n);
}

/* ---- nanobenchmarks ----------------------------------------------------- */

static volatile uint64_t user_iters;
static uint8_t user_stack[4096] __attribute__((aligned(16)));

/* Runs at CPL 3: user_iters syscall round trips, then leave. */
static void user_syscalls(void) {
  uint64_t n = user_iters;
  __asm__ volatile("1: xor %%eax, %%eax\n\t"
                   "syscall\n\t"
                   "dec %0\n\t"
                   "jnz 1b\n\t"
                   "mov $1, %%eax\n\t"
                   "syscall"
                   : "+r"(n)
                   :
                   : "rax", "rcx", "r11", "memory");
}

static void skip_div(struct frame *f) { f->rip += 2; /* div ecx */ }

static volatile uint64_t *pf_pte;

static void fix_pf(struct frame *f) {
  (void)f;
  *pf_pte |= 1; /* present again; the access is retried */
}

/* Map PF_VA with a 4 KiB page table of its own; returns its PTE. */
static volatile uint64_t *map_fault_page(void) {
  static uint64_t pt[512] __attribute__((aligned(4096)));
  uint64_t cr3;
  __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
  uint64_t *pml4 = (uint64_t *)(cr3 & ~0xfffull);
  uint64_t *pdpt = (uint64_t *)(pml4[(PF_VA >> 39) & 511] & ~0xfffull);
  uint64_t *pd = (uint64_t *)(pdpt[(PF_VA >> 30) & 511] & ~0xfffull);
  pt[0] = PF_PA | 7;
  pd[(PF_VA >> 21) & 511] = (uint64_t)pt | 7;
  __asm__ volatile("invlpg (%0)" : : "r"(PF_VA) : "memory");
  return &pt[0];
}

static void run_nano(const char *cmdline) {
  uint64_t n, t;

  if ((n = klib_parse_u(klib_arg(cmdline, "in"), 100000))) {
    uint64_t sum = 0;
    t = rdtsc();
    for (uint64_t i = 0; i < n; i++)
      sum += inb(0x80);
    report("in", n, rdtsc() - t, sum);
  }
  if ((n = klib_parse_u(klib_arg(cmdline, "cr8"), 1000000))) {
    t = rdtsc();
    for (uint64_t i = 0; i < n; i++)
      __asm__ volatile("mov %0, %%cr8" : : "r"(0ull));
    report("cr8", n, rdtsc() - t, 0);
  }
  if ((n = klib_parse_u(klib_arg(cmdline, "divzero"), 100000))) {
    klib_set_trap(0, skip_div);
    t = rdtsc();
    for (uint64_t i = 0; i < n; i++)
      __asm__ volatile("xor %%edx, %%edx\n\t"
                       "mov $1, %%eax\n\t"
                       "xor %%ecx, %%ecx\n\t"
                       "div %%ecx"
                       :
                       :
                       : "rax", "rcx", "rdx");
    report("divzero", n, rdtsc() - t, 0);
  }
  uint64_t npf = klib_parse_u(klib_arg(cmdline, "pgfault"), 100000);
  uint64_t npte = klib_parse_u(klib_arg(cmdline, "ptemod"), 100000);
  if (npf || npte) {
    pf_pte = map_fault_page();
    klib_set_trap(14, fix_pf);
  }
  if (npf) {
    volatile uint64_t *p = (volatile uint64_t *)PF_VA;
    t = rdtsc();
    for (uint64_t i = 0; i < npf; i++) {
      *pf_pte &= ~1ull;
      __asm__ volatile("invlpg (%0)" : : "r"(PF_VA) : "memory");
      *p = i; /* faults once, then succeeds */
    }
    report("pgfault", npf, rdtsc() - t, *p);
  }
  if (npte) {
    t = rdtsc();
    for (uint64_t i = 0; i < npte; i++) {
      *pf_pte = PF_PA | 7 | ((i & 1) << 5);
      __asm__ volatile("invlpg (%0)" : : "r"(PF_VA) : "memory");
    }
    report("ptemod", npte, rdtsc() - t, 0);
  }
  /* CPL 3 last: on PVM, an exception or a cr8 write at CPL 0 after the
     first return from CPL 3 through syscall triple-faults. */
  if ((n = klib_parse_u(klib_arg(cmdline, "syscall"), 1000000))) {
    klib_syscall_init();
    user_iters = n;
    t = rdtsc();
    klib_enter_user(user_syscalls, (uint64_t)(user_stack + sizeof(user_stack)));
    report("syscall", n, rdtsc() - t, 0);
  }
  if ((n = klib_parse_u(klib_arg(cmdline, "callret"), 10000000)))
    run_job("callret", JOB_CALLRET, n);
}

void kmain(uint32_t magic, uint32_t info);
void kmain(uint32_t magic, uint32_t info) {
  klib_console_init();
  const struct mb_info *mb = (const struct mb_info *)(uintptr_t)info;
  if (magic != KLIB_MB_MAGIC || !(mb->flags & 1)) {
    kputs("bench: not started by a multiboot loader with memory info\n");
    klib_exit(1);
  }
  mem_end = 0x100000ull + (uint64_t)mb->mem_upper * 1024;
  const char *cmdline = klib_cmdline(magic, info);
  klib_idt_init();
  user_mode = klib_parse_u(klib_arg(cmdline, "user"), 0) != 0;
  if (user_mode)
    klib_syscall_init();
  run_nano(cmdline);
  run_compute(cmdline);
  kputs("done\n");
  klib_exit(0);
}
