/*
 * difftest: differential tester of the BT engine against KVM (which runs
 * 64-bit CPL 3 code natively on the project's hosts). Random instruction
 * sequences (gen.c) run from the same initial registers, XMM state, MXCSR
 * and memory on two engines; the final GPRs, RIP, RFLAGS (less the flags
 * the sequence leaves architecturally undefined), XMM registers, MXCSR,
 * data memory, exception frames and MMIO accesses must agree. A mismatch
 * is minimized and printed as a reproducer. docs/difftest.md.
 *
 *   difftest [--seed S] [--count N] [--start I] [--engines kvm,bt]
 *            [--max-len L] [--index I] [--indexes I,J,...] [--code HEX]
 *            [--no-minimize] [--no-mmio] [--max-mismatches M]
 *            [--timeout-ms T] [--bt-flags F] [--groups G,...] [--quiet]
 *            [--list] [--verbose]
 *
 * The same seed and options give the same sequences and initial states.
 *
 * Exit status: 0 no mismatch, 1 mismatches, 2 usage or set-up error,
 * 77 an engine is not available on this host (a skip for meson).
 */
#include <cpuid.h>
#include <errno.h>
#include <inttypes.h>
#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen.h"

#define SKIP_STATUS 77
#define MAX_MMIO_LOG 32

/* ------------------------------------------------------------------------ */
/* Engines                                                                  */

enum engine_id { ENG_KVM, ENG_BT, ENG_BT_COUNT };

static const char *const engine_names[] = {"kvm", "bt", "bt-count"};

struct mmio_access {
  uint64_t gpa; /* or port */
  uint64_t value;
  uint8_t size, is_write, port;
  uint8_t padding[5];
};

/* Watchdog: kicks a run that takes longer than its deadline. */
struct watchdog {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  vmm_vcpu *vcpu; /* armed for this vCPU, or NULL */
  struct timespec deadline;
  bool fired, quit;
};

struct engine {
  enum engine_id id;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  uint8_t *ram;
  struct vmm_sregs sregs; /* CPL 3 long mode with our IDT */
  struct vmm_fpu fpu0;    /* x87 part of the initial FPU state */
  /* Per run */
  int port; /* the port that ended the run, -1 if none */
  size_t nmmio;
  struct mmio_access mmio[MAX_MMIO_LOG];
  bool mmio_overflow;
  uint64_t mmio_salt;
  uint8_t code_buf[DT_CODE_SIZE];
  /* The fixed structures (IDT, stubs, page tables, GDT, TSS) as set up:
     checked after every run and restored if a run changed them. */
  uint8_t *fixed;
  uint64_t tables_size;
};

/* Regions of fixed structures; page-table pages compare without the
   accessed and dirty bits, which the processor sets. */
struct fixed_region {
  uint64_t gpa, size;
  bool page_tables;
};

static size_t fixed_regions(const struct engine *e, struct fixed_region *r) {
  size_t n = 0;
  r[n++] = (struct fixed_region){DT_IDT, 32 * 16, false};
  r[n++] = (struct fixed_region){DT_STUBS, 33 * 8, false}; /* + SYSCALL */
  r[n++] = (struct fixed_region){DT_PT, 0x1000, true};
  /* vmm_vcpu_set_mode(): descriptor tables and TSS, then page tables
     from offset 0x3000 (docs/modes.md). */
  r[n++] = (struct fixed_region){DT_TABLES, 0x3000, false};
  r[n++] =
      (struct fixed_region){DT_TABLES + 0x3000, e->tables_size - 0x3000, true};
  return n;
}

/* Hash of the fixed structures as they are now; restores them if they
   differ from the set-up copy. */
static uint64_t fixed_check(struct engine *e) {
  struct fixed_region r[8];
  size_t n = fixed_regions(e, r);
  uint64_t h = 0;
  bool changed = false;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *now = e->ram + r[i].gpa, *was = e->fixed + r[i].gpa;
    for (uint64_t o = 0; o < r[i].size; o += 8) {
      uint64_t a, b;
      memcpy(&a, now + o, 8);
      memcpy(&b, was + o, 8);
      if (r[i].page_tables) {
        a &= ~0x60ull;
        b &= ~0x60ull;
      }
      if (a != b) {
        changed = true;
        h = (h ^ (r[i].gpa + o) ^ a) * 0x100000001b3ull;
      }
    }
  }
  if (changed)
    for (size_t i = 0; i < n; i++)
      vmm_mem_write(e->vm, r[i].gpa, e->fixed + r[i].gpa, r[i].size);
  return h;
}

enum status { ST_END, ST_FAULT, ST_SYSCALL, ST_TIMEOUT, ST_EXIT, ST_ERROR };

/* Classes of differences (a mismatch's signature). */
enum diff_class {
  D_STATUS = 1u << 0,
  D_GPR = 1u << 1,
  D_RIP = 1u << 2,
  D_FLAGS = 1u << 3,
  D_XMM = 1u << 4,
  D_MXCSR = 1u << 5,
  D_DATA = 1u << 6,
  D_FRAME = 1u << 7,
  D_CODE = 1u << 8,
  D_MMIO = 1u << 9,
  D_CR2 = 1u << 10,
  D_SYSMEM = 1u << 11,
  D_X87 = 1u << 12,
};

struct result {
  enum status status;
  int vector;      /* ST_FAULT */
  int exit_reason; /* ST_EXIT */
  uint64_t exit_info[3];
  int err; /* ST_ERROR */
  struct vmm_regs regs;
  uint64_t cr2;
  uint8_t xmm[16][16];
  uint32_t mxcsr;
  struct vmm_fpu fpu; /* the x87 part is compared (compare_x87) */
  size_t nmmio;
  bool mmio_overflow;
  struct mmio_access mmio[MAX_MMIO_LOG];
  uint64_t fixed_hash; /* 0: IDT, page tables, GDT, TSS untouched */
  uint8_t mem[DT_MEM_SIZE];
  uint8_t frame[DT_KSTACK - DT_FRAME_LO];
  uint8_t code[DT_CODE_SIZE];
};

/*
 * Every access outside RAM and every port is claimed, so no run stops
 * half way through an I/O or MMIO instruction (the next sequence resets
 * the registers, and KVM would still complete a pending read into them).
 * Accesses are logged and compared; reads return a value derived from
 * the address, the size and the access number, so a repeated or missing
 * read shows up.
 */
static void log_access(struct engine *e, uint64_t addr, void *data,
                       uint32_t len, bool is_write, bool port) {
  uint64_t v = 0;
  if (is_write) {
    memcpy(&v, data, len < 8 ? len : 8);
  } else {
    v = (addr * 0x9e3779b97f4a7c15ull) ^ (e->nmmio * 0x2545f4914f6cdd1dull) ^
        e->mmio_salt ^ len;
    memcpy(data, &v, len < 8 ? len : 8);
    if (len < 8)
      v &= (1ull << (8 * len)) - 1;
  }
  if (e->nmmio < MAX_MMIO_LOG)
    e->mmio[e->nmmio] = (struct mmio_access){.gpa = addr,
                                             .value = v,
                                             .size = (uint8_t)len,
                                             .is_write = is_write,
                                             .port = port};
  else
    e->mmio_overflow = true;
  e->nmmio++;
}

static int on_port(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  struct engine *e = opaque;
  /* The end port and the exception stubs' ports end the run. */
  if (port >= DT_END_PORT && port <= DT_SYSCALL_PORT && is_write) {
    if (e->port < 0)
      e->port = (int)port;
    return vmm_vcpu_kick(vcpu);
  }
  log_access(e, port, data, len, is_write, true);
  return 0;
}

static int on_mmio(vmm_vcpu *vcpu, uint64_t gpa, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  (void)vcpu;
  log_access(opaque, gpa, data, len, is_write, false);
  return 0;
}

static void *watchdog_main(void *arg) {
  struct watchdog *w = arg;
  pthread_mutex_lock(&w->lock);
  while (!w->quit) {
    if (w->vcpu == NULL) {
      pthread_cond_wait(&w->cond, &w->lock);
      continue;
    }
    vmm_vcpu *v = w->vcpu;
    int rc = pthread_cond_timedwait(&w->cond, &w->lock, &w->deadline);
    if (rc == ETIMEDOUT && w->vcpu == v) {
      w->fired = true;
      w->vcpu = NULL;
      vmm_vcpu_kick(v);
    }
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

static void watchdog_arm(struct watchdog *w, vmm_vcpu *v, unsigned ms) {
  pthread_mutex_lock(&w->lock);
  clock_gettime(CLOCK_REALTIME, &w->deadline);
  w->deadline.tv_sec += ms / 1000;
  w->deadline.tv_nsec += (long)(ms % 1000) * 1000000;
  if (w->deadline.tv_nsec >= 1000000000) {
    w->deadline.tv_sec++;
    w->deadline.tv_nsec -= 1000000000;
  }
  w->vcpu = v;
  w->fired = false;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

static bool watchdog_disarm(struct watchdog *w) {
  pthread_mutex_lock(&w->lock);
  w->vcpu = NULL;
  bool fired = w->fired;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  return fired;
}

/* IDT gates for vectors 0-31 to stubs "out 0x40+v, al; jmp $". */
static int write_idt(vmm_vm *vm) {
  uint8_t idt[32 * 16], stubs[32 * 8];
  memset(idt, 0, sizeof(idt));
  memset(stubs, 0xcc, sizeof(stubs));
  for (int v = 0; v < 32; v++) {
    uint64_t h = DT_STUBS + 8 * (uint64_t)v;
    uint8_t *g = idt + 16 * v;
    unsigned dpl = (v == 3 || v == 4) ? 3 : 0; /* int3, into */
    g[0] = (uint8_t)h;
    g[1] = (uint8_t)(h >> 8);
    g[2] = 0x10; /* kernel 64-bit code selector of vmm_vcpu_set_mode() */
    g[3] = 0;
    g[4] = 0;
    g[5] = (uint8_t)(0x8e | (dpl << 5)); /* present interrupt gate */
    g[6] = (uint8_t)(h >> 16);
    g[7] = (uint8_t)(h >> 24);
    stubs[8 * v] = 0xe6;
    stubs[8 * v + 1] = (uint8_t)(DT_FAULT_PORT + v);
    stubs[8 * v + 2] = 0xeb;
    stubs[8 * v + 3] = 0xfe;
  }
  /* The SYSCALL entry (LSTAR): out 0x60, al; jmp $ */
  static const uint8_t sys[] = {0xe6, DT_SYSCALL_PORT, 0xeb, 0xfe};
  int err = vmm_mem_write(vm, DT_IDT, idt, sizeof(idt));
  if (err == 0)
    err = vmm_mem_write(vm, DT_STUBS, stubs, sizeof(stubs));
  if (err == 0)
    err = vmm_mem_write(vm, DT_SYSCALL_STUB, sys, sizeof(sys));
  return err;
}

/*
 * Replace the 2 MiB page that maps [0, 2 MiB) with 4 KiB pages, to have
 * pages that fault next to the data: not present, read-only, supervisor.
 */
static int write_page_table(vmm_vm *vm, uint64_t cr3) {
  uint64_t pml4e, pdpte;
  int err;
  if ((err = vmm_mem_read(vm, cr3 & ~0xfffull, &pml4e, 8)) < 0 ||
      (err = vmm_mem_read(vm, pml4e & 0xffffffffff000ull, &pdpte, 8)) < 0)
    return err;
  static uint64_t pt[512];
  for (uint64_t i = 0; i < 512; i++) {
    uint64_t a = i << 12;
    pt[i] = a | 7; /* present, writable, user */
    if (a == DT_NP_PAGE)
      pt[i] = 0;
    else if (a == DT_RO_PAGE)
      pt[i] = a | 5;
    else if (a == DT_SUP_PAGE)
      pt[i] = a | 3;
  }
  uint64_t pde = DT_PT | 7;
  if ((err = vmm_mem_write(vm, DT_PT, pt, sizeof(pt))) < 0)
    return err;
  return vmm_mem_write(vm, pdpte & 0xffffffffff000ull, &pde, 8);
}

static void log_fn(enum vmm_log_level level, const char *msg, void *opaque) {
  (void)opaque;
  if (level <= VMM_LOG_WARN)
    fprintf(stderr, "libvmm: %s\n", msg);
}

static int engine_init(struct engine *e, enum engine_id id,
                       uint32_t bt_flags) {
  memset(e, 0, sizeof(*e));
  e->id = id;
  e->mmio_salt = 0x5bd1e995;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = id == ENG_KVM ? VMM_ENGINE_KVM : VMM_ENGINE_BT;
  if (id != ENG_KVM)
    cfg.bt_flags = bt_flags;
  cfg.log_fn = log_fn;
  if (!vmm_engine_available(cfg.engine))
    return -VMM_ENODEV;
  int err = vmm_vm_create(&cfg, &e->vm);
  if (err < 0)
    return err;
  void *hva;
  if ((err = vmm_mem_slot_add(e->vm, 0, DT_RAM_SIZE, NULL, 0, NULL)) < 0 ||
      (err = vmm_mem_gpa_to_hva(e->vm, 0, DT_RAM_SIZE, &hva)) < 0 ||
      (err = vmm_vcpu_create(e->vm, 0, &e->vcpu)) < 0)
    return err;
  e->ram = hva;
  struct vmm_mode_setup ms = {.mode = VMM_MODE_LONG64,
                              .cpl = 3,
                              .tables = DT_TABLES,
                              .kernel_stack = DT_KSTACK};
  if ((err = vmm_vcpu_set_mode(e->vcpu, &ms)) < 0 ||
      (err = write_idt(e->vm)) < 0 ||
      (err = vmm_vcpu_get_sregs(e->vcpu, &e->sregs)) < 0 ||
      (err = vmm_vcpu_get_fpu(e->vcpu, &e->fpu0)) < 0 ||
      (err = write_page_table(e->vm, e->sregs.cr3)) < 0)
    return err;
  /* As Linux runs user code: alignment checking enabled (RFLAGS.AC
     decides), SYSCALL enabled, null DS/ES/FS/GS (FS and GS bases come
     from the sequence). */
  e->sregs.cr0 |= 1ull << 18;
  e->sregs.efer |= 1; /* SCE */
  e->sregs.ds.selector = e->sregs.es.selector = 0;
  e->sregs.fs.selector = e->sregs.gs.selector = 0;
  struct vmm_msr msrs[] = {
      {.index = 0xc0000081, .value = (0x23ull << 48) | (0x10ull << 32)},
      {.index = 0xc0000082, .value = DT_SYSCALL_STUB},
      {.index = 0xc0000084, .value = 0x47700}, /* TF DF IF IOPL NT AC */
  };
  if ((err = vmm_vcpu_set_msrs(e->vcpu, msrs, 3)) < 0)
    return err;
  e->sregs.idt.base = DT_IDT;
  e->sregs.idt.limit = 32 * 16 - 1;
  e->tables_size = vmm_mode_tables_size(&ms);
  if ((e->fixed = malloc(DT_RAM_SIZE)) == NULL)
    return -VMM_ENOMEM;
  memcpy(e->fixed, e->ram, DT_RAM_SIZE);
  if ((err = vmm_io_register(e->vm, VMM_IO_PORT, 0, 0x10000, on_port, e)) < 0 ||
      (err = vmm_io_register(e->vm, VMM_IO_MMIO, DT_RAM_SIZE,
                             (4ull << 30) - DT_RAM_SIZE, on_mmio, e)) < 0)
    return err;
  return 0;
}

/*
 * The features the generator may use on an engine. BT: what its vCPU's
 * CPUID reports (it raises #UD for the rest). KVM: what the host CPU has,
 * since CPL 3 code runs natively there whatever KVM's CPUID says (PVM's
 * supported CPUID leaves out SSE3..SSE4.2, BMI and more).
 */
static void engine_features(struct engine *e, bool *f) {
  struct vmm_cpuid_entry ent[VMM_CPUID_MAX_ENTRIES];
  size_t n = VMM_CPUID_MAX_ENTRIES;
  uint32_t c1 = 0, b7 = 0, c81 = 0;
  if (e->id == ENG_KVM) {
    unsigned a, b, c, d;
    if (__get_cpuid_count(1, 0, &a, &b, &c, &d))
      c1 = c;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
      b7 = b;
    if (__get_cpuid_count(0x80000001, 0, &a, &b, &c, &d))
      c81 = c;
  } else if (vmm_vcpu_get_cpuid(e->vcpu, ent, &n) == 0) {
    for (size_t i = 0; i < n; i++) {
      if (ent[i].function == 1)
        c1 = ent[i].ecx;
      else if (ent[i].function == 7 && ent[i].index == 0)
        b7 = ent[i].ebx;
      else if (ent[i].function == 0x80000001)
        c81 = ent[i].ecx;
    }
  }
  f[DT_F_SSE3] = c1 & 1;
  f[DT_F_PCLMUL] = (c1 >> 1) & 1;
  f[DT_F_SSSE3] = (c1 >> 9) & 1;
  f[DT_F_CX16] = (c1 >> 13) & 1;
  f[DT_F_SSE41] = (c1 >> 19) & 1;
  f[DT_F_SSE42] = (c1 >> 20) & 1;
  f[DT_F_MOVBE] = (c1 >> 22) & 1;
  f[DT_F_POPCNT] = (c1 >> 23) & 1;
  f[DT_F_AES] = (c1 >> 25) & 1;
  f[DT_F_BMI1] = (b7 >> 3) & 1;
  f[DT_F_BMI2] = (b7 >> 8) & 1;
  f[DT_F_ADX] = (b7 >> 19) & 1;
  f[DT_F_LAHF] = c81 & 1;
  f[DT_F_LZCNT] = (c81 >> 5) & 1;
}

static void to_regs(const struct dt_state *s, uint64_t rip,
                    struct vmm_regs *r) {
  const uint64_t *g = s->gpr;
  *r = (struct vmm_regs){.rax = g[0],
                         .rcx = g[1],
                         .rdx = g[2],
                         .rbx = g[3],
                         .rsp = g[4],
                         .rbp = g[5],
                         .rsi = g[6],
                         .rdi = g[7],
                         .r8 = g[8],
                         .r9 = g[9],
                         .r10 = g[10],
                         .r11 = g[11],
                         .r12 = g[12],
                         .r13 = g[13],
                         .r14 = g[14],
                         .r15 = g[15],
                         .rip = rip,
                         .rflags = s->rflags};
}

/* Run one sequence on one engine from its initial state. */
static void engine_run(struct engine *e, struct watchdog *wd,
                       const struct dt_seq *seq, const struct dt_code *code,
                       unsigned timeout_ms, struct result *res) {
  memset(res, 0, sizeof(*res));
  vmm_vm *vm = e->vm;
  int err;
  /* Code pages: the sequence on int3 filler (a stray jump ends in #BP). */
  memset(e->code_buf, 0xcc, sizeof(e->code_buf));
  memcpy(e->code_buf + (seq->code - DT_CODE), code->bytes, code->len);
  static const uint8_t zero[DT_KSTACK - DT_FRAME_LO];
  if ((err = vmm_mem_write(vm, DT_CODE, e->code_buf, DT_CODE_SIZE)) < 0 ||
      (err = vmm_mem_write(vm, DT_MEM, seq->init.mem, DT_MEM_SIZE)) < 0 ||
      (err = vmm_mem_write(vm, DT_FRAME_LO, zero, sizeof(zero))) < 0)
    goto fail;
  struct vmm_sregs sr = e->sregs;
  sr.fs.base = seq->init.fs_base;
  sr.gs.base = seq->init.gs_base;
  sr.cr2 = 0;
  struct vmm_regs regs;
  to_regs(&seq->init, seq->code, &regs);
  struct vmm_fpu fpu = e->fpu0;
  memcpy(fpu.xmm, seq->init.xmm, sizeof(fpu.xmm));
  fpu.mxcsr = seq->init.mxcsr;
  fpu.fcw = seq->init.fcw;
  fpu.fsw = seq->init.fsw;
  fpu.ftw = seq->init.ftw;
  fpu.fop = 0;
  fpu.fip = fpu.fdp = 0;
  for (int i = 0; i < 8; i++) {
    memset(fpu.st[i], 0, sizeof(fpu.st[i]));
    memcpy(fpu.st[i], seq->init.st[i], 10);
  }
  if ((err = vmm_vcpu_set_sregs(e->vcpu, &sr)) < 0 ||
      (err = vmm_vcpu_set_regs(e->vcpu, &regs)) < 0 ||
      (err = vmm_vcpu_set_fpu(e->vcpu, &fpu)) < 0)
    goto fail;
  if (e->id == ENG_BT_COUNT &&
      (err = vmm_vcpu_set_insn_limit(e->vcpu, 1000000)) < 0)
    goto fail;
  e->port = -1;
  e->nmmio = 0;
  e->mmio_overflow = false;
  e->mmio_salt = seq->seed * 31 + seq->index;
  struct vmm_exit *ex = NULL;
  watchdog_arm(wd, e->vcpu, timeout_ms);
  err = vmm_vcpu_run(e->vcpu, &ex);
  bool fired = watchdog_disarm(wd);
  if (err < 0)
    goto fail;
  if (ex->reason == VMM_EXIT_STOPPED && e->port == DT_END_PORT) {
    res->status = ST_END;
  } else if (ex->reason == VMM_EXIT_STOPPED && e->port == DT_SYSCALL_PORT) {
    res->status = ST_SYSCALL;
  } else if (ex->reason == VMM_EXIT_STOPPED && e->port >= DT_FAULT_PORT) {
    res->status = ST_FAULT;
    res->vector = e->port - DT_FAULT_PORT;
  } else if (ex->reason == VMM_EXIT_STOPPED && fired) {
    res->status = ST_TIMEOUT;
  } else {
    res->status = ST_EXIT;
    res->exit_reason = ex->reason;
    if (ex->reason == VMM_EXIT_IO) {
      res->exit_info[0] = ex->io.port;
      res->exit_info[1] = ex->io.is_write;
    } else if (ex->reason == VMM_EXIT_MMIO) {
      res->exit_info[0] = ex->mmio.gpa;
      res->exit_info[1] = ex->mmio.is_write;
      res->exit_info[2] = ex->mmio.size;
    } else if (ex->reason == VMM_EXIT_INTERNAL_ERROR) {
      res->exit_info[0] = ex->internal.code;
      res->exit_info[1] = ex->internal.engine_code;
    } else if (ex->reason == VMM_EXIT_FAULT) {
      res->exit_info[0] = ex->fault.vector;
    }
  }
  struct vmm_sregs out;
  if ((err = vmm_vcpu_get_regs(e->vcpu, &res->regs)) < 0 ||
      (err = vmm_vcpu_get_sregs(e->vcpu, &out)) < 0 ||
      (err = vmm_vcpu_get_fpu(e->vcpu, &fpu)) < 0)
    goto fail;
  /* A stopped run may leave an I/O or MMIO instruction half done; the
     next run starts from fresh state anyway. */
  res->cr2 = out.cr2;
  /* A watchdog kick that raced with the end of the run is still pending:
     consume it now (the run returns at once), not in the next sequence. */
  if (fired && res->status != ST_TIMEOUT)
    vmm_vcpu_run(e->vcpu, &ex);
  memcpy(res->xmm, fpu.xmm, sizeof(res->xmm));
  res->mxcsr = fpu.mxcsr;
  res->fpu = fpu;
  res->nmmio = e->nmmio;
  res->mmio_overflow = e->mmio_overflow;
  memcpy(res->mmio, e->mmio, sizeof(res->mmio));
  memcpy(res->mem, e->ram + DT_MEM, DT_MEM_SIZE);
  memcpy(res->frame, e->ram + DT_FRAME_LO, sizeof(res->frame));
  memcpy(res->code, e->ram + DT_CODE, DT_CODE_SIZE);
  res->fixed_hash = fixed_check(e);
  return;
fail:
  res->status = ST_ERROR;
  res->err = err;
}

/* ------------------------------------------------------------------------ */
/* Comparison                                                               */

#define FRAME_RIP_OFF (sizeof(((struct result *)0)->frame) - 40)
#define FRAME_FLAGS_OFF (sizeof(((struct result *)0)->frame) - 24)

static uint64_t frame_u64(const struct result *r, size_t off) {
  uint64_t v;
  memcpy(&v, r->frame + off, 8);
  return v;
}

/* Undefined-flags mask for a result: at the faulting instruction or at
   the end marker. */
static uint32_t undef_mask(const struct result *r, const struct dt_code *c) {
  if (r->status == ST_FAULT)
    return dt_undef_at(c, frame_u64(r, FRAME_RIP_OFF));
  if (r->status == ST_SYSCALL) /* RCX: after the syscall (2 bytes) */
    return dt_undef_at(c, r->regs.rcx - 2);
  if (r->status == ST_END)
    return c->undef_before[c->ninsn - 1];
  return 0x8d5u;
}

/* The same for the x87 condition codes. */
static uint16_t fundef_mask(const struct result *r, const struct dt_code *c) {
  if (r->status == ST_FAULT)
    return dt_fundef_at(c, frame_u64(r, FRAME_RIP_OFF));
  if (r->status == ST_SYSCALL)
    return dt_fundef_at(c, r->regs.rcx - 2);
  if (r->status == ST_END)
    return c->fundef_before[c->ninsn - 1];
  return DT_FSW_CC;
}

static void print_st(FILE *f, const uint8_t *v) {
  uint16_t se;
  uint64_t m;
  memcpy(&m, v, 8);
  memcpy(&se, v + 8, 2);
  fprintf(f, "%04x:%016" PRIx64, se, m);
}

/*
 * The x87 state (docs/difftest.md, "How it compares"): FCW, FSW less the
 * condition codes the sequence left undefined, the abridged tag word,
 * ST0-ST7 whatever their tags, FOP, FIP and FDP. Returns D_X87 or 0.
 */
static unsigned compare_x87(const struct result *a, const struct result *b,
                            uint16_t fund, FILE *f, const char *na,
                            const char *nb) {
  const struct vmm_fpu *x = &a->fpu, *y = &b->fpu;
  unsigned d = 0;
  if (x->fcw != y->fcw || ((x->fsw ^ y->fsw) & ~fund) || x->ftw != y->ftw) {
    d = D_X87;
    if (f)
      fprintf(f,
              "  x87    %s fcw %#06x fsw %#06x ftw %#04x  %s fcw %#06x fsw "
              "%#06x ftw %#04x  (condition codes not compared: %#x)\n",
              na, x->fcw, x->fsw, x->ftw, nb, y->fcw, y->fsw, y->ftw, fund);
  }
  if (x->fop != y->fop || x->fip != y->fip || x->fdp != y->fdp) {
    d = D_X87;
    if (f)
      fprintf(f,
              "  x87    %s fop %#x fip %#" PRIx64 " fdp %#" PRIx64
              "  %s fop %#x fip %#" PRIx64 " fdp %#" PRIx64 "\n",
              na, x->fop, x->fip, x->fdp, nb, y->fop, y->fip, y->fdp);
  }
  unsigned top = (x->fsw >> 11) & 7;
  for (unsigned i = 0; i < 8; i++) {
    if (memcmp(x->st[i], y->st[i], 10) == 0)
      continue;
    d = D_X87;
    if (f) {
      fprintf(f, "  st%u    (r%u, %s) %s ", i, (top + i) & 7,
              (x->ftw >> ((top + i) & 7)) & 1 ? "valid" : "empty", na);
      print_st(f, x->st[i]);
      fprintf(f, "  %s ", nb);
      print_st(f, y->st[i]);
      fprintf(f, "\n");
    }
  }
  return d;
}

static const char *const gpr_names[16] = {
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

static void describe(FILE *f, const struct result *r) {
  switch (r->status) {
  case ST_END: fprintf(f, "reached the end"); break;
  case ST_FAULT:
    fprintf(f, "exception %d at rip %#" PRIx64, r->vector,
            frame_u64(r, FRAME_RIP_OFF));
    break;
  case ST_SYSCALL:
    fprintf(f, "syscall from rip %#" PRIx64, r->regs.rcx - 2);
    break;
  case ST_TIMEOUT: fprintf(f, "did not finish (watchdog)"); break;
  case ST_EXIT:
    fprintf(f, "exit reason %d (%#" PRIx64 " %#" PRIx64 " %#" PRIx64 ")",
            r->exit_reason, r->exit_info[0], r->exit_info[1], r->exit_info[2]);
    break;
  case ST_ERROR: fprintf(f, "error %s", vmm_strerror(r->err)); break;
  }
}

/*
 * PVM (this host's KVM) intercepts #GP from guest user code and hands the
 * instruction to KVM's instruction emulator, which raises #UD for the
 * ones it does not know: a misaligned 16-byte operand of a legacy SSE
 * instruction (addps, paddb, ...; movaps and movdqa come out right), or
 * ldmxcsr of a value with reserved bits, give #UD instead of #GP(0);
 * so does INT n through a gate the program may not use, for #GP(8n+2).
 * Seen with raw ioctls, see docs/difftest.md. For those cases BT is
 * checked against the architecture instead: #GP at the same instruction,
 * with the error code the architecture gives, whose operand (computed from
 * the registers at the fault) is indeed misaligned or holds reserved MXCSR
 * bits, or whose vector has no gate for CPL 3.
 */
/* Both results are exceptions (vectors va and vb) at the same RIP in the
   code pages: decode the instruction there (the code as a left it). */
static bool same_fault_insn(const struct result *a, const struct result *b,
                            int va, int vb, uint64_t *rip,
                            ZydisDecodedInstruction *di,
                            ZydisDecodedOperand *ops) {
  if (a->status != ST_FAULT || b->status != ST_FAULT || a->vector != va ||
      b->vector != vb)
    return false;
  *rip = frame_u64(a, FRAME_RIP_OFF);
  if (*rip != frame_u64(b, FRAME_RIP_OFF) || *rip < DT_CODE ||
      *rip >= DT_CODE + DT_CODE_SIZE)
    return false;
  ZydisDecoder dec;
  ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&dec, a->code + (*rip - DT_CODE),
                                             DT_CODE + DT_CODE_SIZE - *rip, di,
                                             ops));
}

/* The linear address of memory operand o of the instruction at rip, from
   the registers of result k at the fault. */
static bool fault_ea(const struct result *k, const struct dt_seq *seq,
                     const ZydisDecodedInstruction *di,
                     const ZydisDecodedOperand *o, uint64_t rip, uint64_t *ea) {
  static ZydisRegisterContext ctx;
  memset(&ctx, 0, sizeof(ctx));
  const uint64_t *g = &k->regs.rax;
  static const ZydisRegister order[16] = {
      ZYDIS_REGISTER_RAX, ZYDIS_REGISTER_RBX, ZYDIS_REGISTER_RCX,
      ZYDIS_REGISTER_RDX, ZYDIS_REGISTER_RSI, ZYDIS_REGISTER_RDI,
      ZYDIS_REGISTER_RSP, ZYDIS_REGISTER_RBP, ZYDIS_REGISTER_R8,
      ZYDIS_REGISTER_R9,  ZYDIS_REGISTER_R10, ZYDIS_REGISTER_R11,
      ZYDIS_REGISTER_R12, ZYDIS_REGISTER_R13, ZYDIS_REGISTER_R14,
      ZYDIS_REGISTER_R15};
  for (int i = 0; i < 16; i++) {
    /* RSP at the fault: the frame holds it (the register is the kernel's). */
    uint64_t v = i == 6 ? frame_u64(k, FRAME_RIP_OFF + 24) : g[i];
    ctx.values[order[i]] = v;
    /* 32-bit addressing ([r15d + d]) reads the low halves. */
    ctx.values[order[i] - ZYDIS_REGISTER_RAX + ZYDIS_REGISTER_EAX] =
        v & 0xffffffff;
  }
  if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddressEx(di, o, rip, &ctx, ea)))
    return false;
  if (o->mem.segment == ZYDIS_REGISTER_FS)
    *ea += seq->init.fs_base;
  else if (o->mem.segment == ZYDIS_REGISTER_GS)
    *ea += seq->init.gs_base;
  return true;
}

static bool pvm_misaligned_sse(const struct result *k, const struct result *b,
                               const struct dt_seq *seq) {
  uint64_t rip;
  ZydisDecodedInstruction di;
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
  if (!same_fault_insn(k, b, 6, 13, &rip, &di, ops) ||
      di.encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY)
    return false;
  /* INT n through a gate of DPL < 3, or beyond the IDT: #GP(8n + 2). */
  if (di.mnemonic == ZYDIS_MNEMONIC_INT) {
    uint64_t n = ops[0].imm.value.u & 0xff;
    bool gate_ok = n < 32 && (n == 3 || n == 4);
    return !gate_ok && frame_u64(b, FRAME_RIP_OFF - 8) == 8 * n + 2;
  }
  /* ldmxcsr, and fxrstor of an image (MXCSR at offset 24), with reserved
     MXCSR bits. */
  bool ldmxcsr = di.mnemonic == ZYDIS_MNEMONIC_LDMXCSR;
  bool fxrstor = di.mnemonic == ZYDIS_MNEMONIC_FXRSTOR ||
                 di.mnemonic == ZYDIS_MNEMONIC_FXRSTOR64;
  for (unsigned i = 0; i < di.operand_count_visible; i++) {
    const ZydisDecodedOperand *o = &ops[i];
    if (o->type != ZYDIS_OPERAND_TYPE_MEMORY ||
        (o->size != 128 && !ldmxcsr && !fxrstor))
      continue;
    uint64_t ea;
    if (!fault_ea(k, seq, &di, o, rip, &ea))
      return false;
    if (frame_u64(b, FRAME_RIP_OFF - 8) != 0) /* #GP(0) */
      return false;
    if (fxrstor) {
      if (ea & 15) /* misaligned: not generated (docs/testing.md) */
        return false;
      ea += 24;
    } else if (!ldmxcsr) {
      return (ea & 15) != 0;
    }
    /* The value with reserved bits (the memory is as it was at the
       fault: the run ended there). */
    uint32_t v;
    if (ea >= DT_MEM && ea + 4 <= DT_MEM + DT_MEM_SIZE)
      memcpy(&v, k->mem + (ea - DT_MEM), 4);
    else if (ea >= DT_CODE && ea + 4 <= DT_CODE + DT_CODE_SIZE)
      memcpy(&v, k->code + (ea - DT_CODE), 4);
    else
      return false;
    return (v & 0xffff0000u) != 0;
  }
  return false;
}

/*
 * The cmps both results fault at (vectors va and vb), with the same rSI
 * and rDI and DS/ES addressing: its element size and the two elements'
 * addresses. False for anything else.
 */
static bool cmps_elements(const struct result *a, const struct result *b,
                          int va, int vb, unsigned *size, uint64_t *dsi,
                          uint64_t *edi) {
  uint64_t rip;
  ZydisDecodedInstruction di;
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
  if (!same_fault_insn(a, b, va, vb, &rip, &di, ops))
    return false;
  switch (di.mnemonic) {
  case ZYDIS_MNEMONIC_CMPSB: *size = 1; break;
  case ZYDIS_MNEMONIC_CMPSW: *size = 2; break;
  case ZYDIS_MNEMONIC_CMPSD: *size = 4; break;
  case ZYDIS_MNEMONIC_CMPSQ: *size = 8; break;
  default: return false;
  }
  if (a->regs.rsi != b->regs.rsi || a->regs.rdi != b->regs.rdi)
    return false;
  /* DS and ES have base 0; an FS or GS source is left to the plain
     comparison. */
  if (di.attributes &
      (ZYDIS_ATTRIB_HAS_SEGMENT_FS | ZYDIS_ATTRIB_HAS_SEGMENT_GS))
    return false;
  uint64_t am = di.address_width == 32 ? 0xffffffffull : ~0ull;
  *dsi = a->regs.rsi & am;
  *edi = a->regs.rdi & am;
  return true;
}

/* Whether a #PF on the size-byte access at addr reports cr2: its first
   byte (its first page faults) or the start of its second page. */
static unsigned pf_cr2_of(uint64_t cr2, uint64_t addr, unsigned size) {
  uint64_t page2 = (addr | 0xfff) + 1;
  return cr2 == addr || (page2 - addr < size && cr2 == page2);
}

/*
 * cmps with both operands faulting: which #PF the processor reports is
 * not architectural, and the hosts are not consistent (both operands on
 * one not-present page: DS:rSI's; on different pages: often ES:rDI's).
 * Accepted when both engines fault at the same cmps with #PF, each CR2
 * where a #PF on one of the two elements reports (its first byte, or its
 * second page's; elements from the registers at the fault) and the two
 * CR2s name different elements; CR2 and the error code are then
 * not compared (everything else is: the iteration that faults is the
 * same whichever operand is reported).
 */
static bool cmps_fault_order(const struct result *a, const struct result *b) {
  unsigned size;
  uint64_t dsi, edi;
  if (a->cr2 == b->cr2 || !cmps_elements(a, b, 14, 14, &size, &dsi, &edi))
    return false;
  /* Elements may overlap (seed 9001 index 51858: rDI = rSI + 6, both
     crossing down into a faulting page): which one a CR2 names follows
     from where a #PF on each would report. */
  unsigned ma = pf_cr2_of(a->cr2, dsi, size) | pf_cr2_of(a->cr2, edi, size) << 1;
  unsigned mb = pf_cr2_of(b->cr2, dsi, size) | pf_cr2_of(b->cr2, edi, size) << 1;
  return ma != 0 && mb != 0 && (ma | mb) == 3;
}

/*
 * The same for a misaligned operand under alignment checks: one engine
 * reports #AC (the misaligned element checked first), the other #PF for
 * the other element. Accepted when the #PF's CR2 is inside one element
 * and the other element is misaligned; vector, handler RIP, CR2 and the
 * error code are then not compared.
 */
static bool cmps_ac_pf(const struct result *a, const struct result *b) {
  unsigned size;
  uint64_t dsi, edi;
  const struct result *pf;
  if (cmps_elements(a, b, 14, 17, &size, &dsi, &edi))
    pf = a;
  else if (cmps_elements(a, b, 17, 14, &size, &dsi, &edi))
    pf = b;
  else
    return false;
  if (pf->cr2 - dsi < size)
    return (edi & (size - 1)) != 0;
  if (pf->cr2 - edi < size)
    return (dsi & (size - 1)) != 0;
  return false;
}

/* Whether an access to addr faults in the guest's layout (a store: write
   is true). */
static bool page_faults(uint64_t addr, bool write) {
  uint64_t p = addr & ~0xfffull;
  return p == DT_NP_PAGE || p == DT_SUP_PAGE || (write && p == DT_RO_PAGE);
}

/*
 * Which byte of an x87 or FXSAVE save area a #PF names is not
 * architectural: the area takes several accesses, in an order the
 * processor chooses (this host's fxsave names the area's last byte, BT the
 * first byte that faults). Accepted when both engines fault with #PF at
 * the same fxsave/fxrstor/fnsave/frstor/fnstenv/fldenv, each CR2 inside
 * the area on a page the access faults on; CR2 and the error code are
 * then not compared.
 */
static bool x87_area_fault(const struct result *a, const struct result *b,
                           const struct dt_seq *seq) {
  uint64_t rip, ea;
  ZydisDecodedInstruction di;
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
  if (a->cr2 == b->cr2 || !same_fault_insn(a, b, 14, 14, &rip, &di, ops))
    return false;
  bool w16 = di.operand_width == 16, store = true;
  unsigned size;
  switch (di.mnemonic) {
  case ZYDIS_MNEMONIC_FXRSTOR:
  case ZYDIS_MNEMONIC_FXRSTOR64: store = false; /* fall through */
  case ZYDIS_MNEMONIC_FXSAVE:
  case ZYDIS_MNEMONIC_FXSAVE64: size = 512; break;
  case ZYDIS_MNEMONIC_FRSTOR: store = false; /* fall through */
  case ZYDIS_MNEMONIC_FNSAVE: size = w16 ? 94 : 108; break;
  case ZYDIS_MNEMONIC_FLDENV: store = false; /* fall through */
  case ZYDIS_MNEMONIC_FNSTENV: size = w16 ? 14 : 28; break;
  default: return false;
  }
  if (ops[0].type != ZYDIS_OPERAND_TYPE_MEMORY ||
      !fault_ea(a, seq, &di, &ops[0], rip, &ea))
    return false;
  return a->cr2 - ea < size && b->cr2 - ea < size &&
         page_faults(a->cr2, store) && page_faults(b->cr2, store);
}

/*
 * Fields of x87 images not compared (docs/difftest.md):
 *  - the x87 pointers (FIP, FCS, FOP, FDP, FDS) of an fnstenv/fnsave
 *    image: on this host they hold the last x87 instruction's only until
 *    the next exit to the hypervisor (KVM's save of the guest FPU drops
 *    them, as AMD's FXSAVE/XSAVE do without a pending exception), so the
 *    reference is not a function of the program; BT stores 0;
 *  - an fxsave image's MXCSR_MASK, a property of the processor model like
 *    CPUID: the host's has AMD's misaligned-SSE bit (17), BT's model not.
 */
static bool image_skip(const struct dt_seq *seq, uint64_t addr) {
  for (size_t i = 0; seq && i < seq->nskip; i++)
    if (addr - seq->skip[i].addr < seq->skip[i].len)
      return true;
  return false;
}

struct cmp_opts {
  bool pvm_adjudicate; /* a is KVM on PVM: see pvm_misaligned_sse() */
  const struct dt_seq *seq;
};

/* Compare; print differences to f if not NULL. Returns the classes. */
static unsigned compare(const struct result *a, const struct result *b,
                        const struct dt_code *c, const struct cmp_opts *co,
                        FILE *f, const char *na, const char *nb,
                        unsigned *adjudicated) {
  unsigned d = 0;
  bool arch = co->pvm_adjudicate && pvm_misaligned_sse(a, b, co->seq);
  bool acpf = cmps_ac_pf(a, b);
  bool order = acpf || cmps_fault_order(a, b);
  bool area = x87_area_fault(a, b, co->seq);
  if (area && f)
    fprintf(f,
            "  save area: #PF for different bytes (cr2 %s %#" PRIx64
            ", %s %#" PRIx64 "): accepted\n",
            na, a->cr2, nb, b->cr2);
  if (order && f)
    fprintf(f,
            "  cmps: %s for different operands (cr2 %s %#" PRIx64
            ", %s %#" PRIx64 "): accepted\n",
            acpf ? "#AC and #PF" : "#PF", na, a->cr2, nb, b->cr2);
  if (adjudicated)
    *adjudicated = (arch ? 1u : 0u) | (order ? 2u : 0u) | (area ? 4u : 0u);
  if (arch) {
    if (f)
      fprintf(f,
              "  outcome: %s #UD (PVM), %s #GP(0) as the architecture "
              "says: accepted\n",
              na, nb);
  } else if (acpf) {
    /* Vectors differ by the adjudication above. */
  } else if (a->status != b->status || a->vector != b->vector ||
             a->exit_reason != b->exit_reason ||
             memcmp(a->exit_info, b->exit_info, sizeof(a->exit_info)) != 0) {
    d |= D_STATUS;
    if (f) {
      fprintf(f, "  outcome: %s ", na);
      describe(f, a);
      fprintf(f, ", %s ", nb);
      describe(f, b);
      fprintf(f, "\n");
    }
  }
  if (a->status == ST_ERROR || b->status == ST_ERROR)
    return d | D_STATUS;
  uint32_t und = undef_mask(a, c);
  const uint64_t *ga = &a->regs.rax, *gb = &b->regs.rax;
  /* SYSCALL saved RFLAGS in R11: the undefined flags are in it too. */
  uint64_t r11_mask = a->status == ST_SYSCALL ? und : 0;
  for (int i = 0; i < 16; i++)
    if (((ga[i] ^ gb[i]) & ~(i == 11 ? r11_mask : 0)) != 0 &&
        !(arch && i == 6 /* rsp: frames differ */)) {
      d |= D_GPR;
      if (f)
        fprintf(f, "  %-6s %s %#018" PRIx64 "  %s %#018" PRIx64 "\n",
                gpr_names[i], na, ga[i], nb, gb[i]);
    }
  if (a->regs.rip != b->regs.rip && !arch && !acpf) {
    d |= D_RIP;
    if (f)
      fprintf(f, "  rip    %s %#018" PRIx64 "  %s %#018" PRIx64 "\n", na,
              a->regs.rip, nb, b->regs.rip);
  }
  /* PVM clears RFLAGS.AC when it delivers an exception to the guest's
     CPL 0 handler (the SDM's 64-bit delivery keeps it, and so does BT):
     not compared in the handler's live RFLAGS. The user's RFLAGS, AC
     included, are in the frame, which is. */
  uint64_t live_mask = und;
  if (a->status == ST_FAULT && co->pvm_adjudicate)
    live_mask |= 1ull << 18;
  if ((a->regs.rflags ^ b->regs.rflags) & ~live_mask) {
    d |= D_FLAGS;
    if (f)
      fprintf(f,
              "  rflags %s %#" PRIx64 "  %s %#" PRIx64
              "  (undefined, not compared: %#x)\n",
              na, a->regs.rflags, nb, b->regs.rflags, und);
  }
  if (a->status == ST_FAULT && (a->vector == 14 || b->vector == 14) &&
      a->cr2 != b->cr2 && !order && !area) {
    d |= D_CR2;
    if (f)
      fprintf(f, "  cr2    %s %#" PRIx64 "  %s %#" PRIx64 "\n", na, a->cr2, nb,
              b->cr2);
  }
  for (int i = 0; i < 16; i++)
    if (memcmp(a->xmm[i], b->xmm[i], 16) != 0) {
      d |= D_XMM;
      if (f) {
        uint64_t x[2], y[2];
        memcpy(x, a->xmm[i], 16);
        memcpy(y, b->xmm[i], 16);
        fprintf(f,
                "  xmm%-3d %s %016" PRIx64 "%016" PRIx64 "  %s %016" PRIx64
                "%016" PRIx64 "\n",
                i, na, x[1], x[0], nb, y[1], y[0]);
      }
    }
  if (a->mxcsr != b->mxcsr) {
    d |= D_MXCSR;
    if (f)
      fprintf(f, "  mxcsr  %s %#x  %s %#x\n", na, a->mxcsr, nb, b->mxcsr);
  }
  d |= compare_x87(a, b, fundef_mask(a, c), f, na, nb);
  struct {
    const uint8_t *x, *y;
    size_t n;
    uint64_t base;
    unsigned cls;
    const char *name;
  } mems[] = {
      {a->mem, b->mem, DT_MEM_SIZE, DT_MEM, D_DATA, "memory"},
      {a->frame, b->frame, sizeof(a->frame), DT_FRAME_LO, D_FRAME, "frame"},
      {a->code, b->code, DT_CODE_SIZE, DT_CODE, D_CODE, "code"},
  };
  for (size_t m = 0; m < sizeof(mems) / sizeof(mems[0]); m++) {
    unsigned shown = 0;
    if (arch && mems[m].cls == D_FRAME)
      continue; /* #UD and #GP frames differ; both RIPs were checked */
    for (size_t i = 0; i < mems[m].n; i++) {
      uint8_t x = mems[m].x[i], y = mems[m].y[i];
      if ((order || area) && mems[m].cls == D_FRAME && i >= FRAME_RIP_OFF - 8 &&
          i < FRAME_RIP_OFF)
        continue; /* the error code of the operand reported */
      if (mems[m].cls == D_DATA && image_skip(co->seq, mems[m].base + i))
        continue;
      if (mems[m].cls == D_FRAME && i >= FRAME_FLAGS_OFF &&
          i < FRAME_FLAGS_OFF + 4) {
        uint32_t sh = 8 * (uint32_t)(i - FRAME_FLAGS_OFF);
        uint8_t mask = (uint8_t)(und >> sh);
        x &= (uint8_t)~mask;
        y &= (uint8_t)~mask;
      }
      if (x == y)
        continue;
      d |= mems[m].cls;
      if (f && shown++ < 24)
        fprintf(f, "  %s byte %#" PRIx64 ": %s %02x  %s %02x\n", mems[m].name,
                mems[m].base + i, na, mems[m].x[i], nb, mems[m].y[i]);
    }
    if (f && shown > 24)
      fprintf(f, "  ... %u %s bytes differ in all\n", shown, mems[m].name);
  }
  if (a->fixed_hash != b->fixed_hash) {
    d |= D_SYSMEM;
    if (f)
      fprintf(f, "  IDT, GDT, TSS or page tables changed: %s %s, %s %s\n", na,
              a->fixed_hash ? "yes" : "no", nb, b->fixed_hash ? "yes" : "no");
  }
  bool mm = a->nmmio != b->nmmio || a->mmio_overflow != b->mmio_overflow;
  for (size_t i = 0; !mm && i < a->nmmio && i < MAX_MMIO_LOG; i++)
    mm = memcmp(&a->mmio[i], &b->mmio[i], sizeof(a->mmio[i])) != 0;
  if (mm) {
    d |= D_MMIO;
    if (f) {
      const struct result *rs[2] = {a, b};
      const char *ns[2] = {na, nb};
      for (int k = 0; k < 2; k++) {
        fprintf(f, "  mmio %s:", ns[k]);
        for (size_t i = 0; i < rs[k]->nmmio && i < MAX_MMIO_LOG; i++)
          fprintf(f, " %s%s%u@%#" PRIx64 "=%#" PRIx64,
                  rs[k]->mmio[i].port ? "port-" : "",
                  rs[k]->mmio[i].is_write ? "w" : "r", rs[k]->mmio[i].size,
                  rs[k]->mmio[i].gpa, rs[k]->mmio[i].value);
        fprintf(f, "\n");
      }
    }
  }
  return d;
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                  */

static void print_listing(FILE *f, const struct dt_seq *seq,
                          const struct dt_code *c) {
  ZydisDecoder dec;
  ZydisFormatter fmt;
  ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  ZydisFormatterInit(&fmt, ZYDIS_FORMATTER_STYLE_INTEL);
  size_t off = 0;
  while (off < c->len) {
    ZydisDecodedInstruction di;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    uint64_t addr = seq->code + off;
    char text[128] = "(bad)";
    size_t n = 1;
    if (ZYAN_SUCCESS(ZydisDecoderDecodeFull(&dec, c->bytes + off, c->len - off,
                                            &di, ops))) {
      n = di.length;
      ZydisFormatterFormatInstruction(&fmt, &di, ops, di.operand_count_visible,
                                      text, sizeof(text), addr, NULL);
    }
    char hex[48] = "";
    for (size_t i = 0; i < n && i < 15; i++)
      snprintf(hex + 3 * i, sizeof(hex) - 3 * i, "%02x ", c->bytes[off + i]);
    fprintf(f, "    %06" PRIx64 "  %-42s %s\n", addr, hex, text);
    off += n;
  }
}

static void print_state(FILE *f, const struct dt_seq *seq) {
  const struct dt_state *s = &seq->init;
  static const char *const order[16] = {
      "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
      "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  fprintf(f, "  initial state:\n   ");
  for (int i = 0; i < 16; i++)
    fprintf(f, " %s=%#" PRIx64 "%s", order[i], s->gpr[i],
            i % 4 == 3 ? "\n   " : "");
  fprintf(f,
          " rflags=%#" PRIx64 " mxcsr=%#x fs.base=%#" PRIx64
          " gs.base=%#" PRIx64 "\n",
          s->rflags, s->mxcsr, s->fs_base, s->gs_base);
  for (int i = 0; i < 16; i++) {
    uint64_t x[2];
    memcpy(x, s->xmm[i], 16);
    fprintf(f, "    xmm%-2d=%016" PRIx64 "%016" PRIx64 "%s", i, x[1], x[0],
            i % 2 ? "\n" : "");
  }
  fprintf(f, "    fcw=%#06x fsw=%#06x ftw=%#04x\n   ", s->fcw, s->fsw, s->ftw);
  for (int i = 0; i < 8; i++) {
    fprintf(f, " st%d=", i);
    print_st(f, s->st[i]);
    fprintf(f, "%s", i % 4 == 3 ? "\n   " : "");
  }
  fprintf(f, "\n");
  fprintf(f,
          "    memory %#" PRIx64 "-%#" PRIx64
          ": as generated for this seed and index\n",
          (uint64_t)DT_MEM, (uint64_t)(DT_MEM + DT_MEM_SIZE - 1));
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */

struct options {
  uint64_t seed, start, count;
  bool one;
  unsigned max_len, timeout_ms, max_mismatches;
  uint32_t bt_flags; /* vmm_vm_config.bt_flags of the BT engines */
  bool minimize, mmio, quiet, list, verbose;
  enum engine_id eng[2];
  uint8_t code[1024]; /* --code: these bytes instead of generated ones */
  size_t code_len;
  uint64_t order[64]; /* --indexes: run exactly these, in this order */
  size_t nlist;
  uint32_t groups; /* --groups: generator groups to draw from, 0 all */
};

struct tester {
  struct options opt;
  struct cmp_opts cmp;
  uint64_t adjudicated, cmps_order, x87_area;
  struct engine eng[2];
  struct watchdog wd;
  struct dt_gen_config gen;
  struct result res[2];
  /* statistics */
  uint64_t items[32], faults[32], statuses[8];
  uint64_t mismatches, insns, mmio, ports;
};

static unsigned run_pair(struct tester *t, const struct dt_seq *seq,
                         const struct dt_code *code, FILE *f) {
  for (int i = 0; i < 2; i++)
    engine_run(&t->eng[i], &t->wd, seq, code, t->opt.timeout_ms, &t->res[i]);
  t->cmp.seq = seq;
  unsigned adj = 0;
  unsigned d =
      compare(&t->res[0], &t->res[1], code, &t->cmp, f,
              engine_names[t->opt.eng[0]], engine_names[t->opt.eng[1]], &adj);
  t->adjudicated += adj & 1;
  t->cmps_order += (adj >> 1) & 1;
  t->x87_area += (adj >> 2) & 1;
  return d;
}

/* Drop items while the mismatch stays (same outcomes, a common class). */
static void minimize(struct tester *t, struct dt_seq *seq, unsigned classes) {
  enum status s0 = t->res[0].status, s1 = t->res[1].status;
  int v0 = t->res[0].vector, v1 = t->res[1].vector;
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t i = seq->n; i-- > 0;) {
      struct dt_seq trial = *seq;
      memmove(&trial.items[i], &trial.items[i + 1],
              (trial.n - i - 1) * sizeof(trial.items[0]));
      trial.n--;
      struct dt_code code;
      if (!dt_assemble(&trial, &code))
        continue;
      unsigned d = run_pair(t, &trial, &code, NULL);
      if (d != 0 && (d & classes) != 0 && t->res[0].status == s0 &&
          t->res[1].status == s1 && t->res[0].vector == v0 &&
          t->res[1].vector == v1) {
        *seq = trial;
        progress = true;
      }
    }
  }
}

static void report_mismatch(struct tester *t, const struct dt_seq *orig,
                            unsigned classes) {
  struct dt_seq *seq = malloc(sizeof(*seq));
  if (seq == NULL)
    return;
  *seq = *orig;
  if (t->opt.minimize)
    minimize(t, seq, classes);
  struct dt_code code;
  if (!dt_assemble(seq, &code)) {
    free(seq);
    return;
  }
  printf("MISMATCH seed %" PRIu64 " index %" PRIu64 " (%zu of %zu items)\n",
         seq->seed, seq->index, seq->n, orig->n);
  print_listing(stdout, seq, &code);
  print_state(stdout, seq);
  unsigned d = run_pair(t, seq, &code, stdout);
  if (d == 0)
    printf("  (the minimized sequence no longer mismatches)\n");
  printf("  reproduce: difftest --engines %s,%s --seed %" PRIu64
         " --index %" PRIu64 " --max-len %u%s --bt-flags %" PRIu32,
         engine_names[t->opt.eng[0]], engine_names[t->opt.eng[1]], seq->seed,
         seq->index, t->opt.max_len, t->opt.mmio ? "" : " --no-mmio",
         t->opt.bt_flags);
  for (unsigned g = 0, n = 0; g < dt_group_count(); g++)
    if (t->opt.groups >> g & 1)
      printf("%s%s", n++ ? "," : " --groups ", dt_group_name(g));
  printf("\n\n");
  fflush(stdout);
  free(seq);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(void) {
  fprintf(
      stderr,
      "usage: difftest [--seed S] [--count N] [--start I] [--index I]\n"
      "                [--engines kvm,bt|kvm,bt-count|bt,bt-count] [--bt-flags F]\n"
      "                [--max-len L] [--timeout-ms T] [--max-mismatches M]\n"
      "                [--no-minimize] [--no-mmio] [--list] [--verbose]\n"
      "                [--quiet]\n"
      "                [--code HEX]\n"
      "                [--indexes I,J,...] [--groups G,...]\n");
  return 2;
}

static bool parse_engine(const char *s, size_t n, enum engine_id *out) {
  for (int i = 0; i < (int)(sizeof(engine_names) / sizeof(engine_names[0]));
       i++)
    if (strlen(engine_names[i]) == n && !strncmp(s, engine_names[i], n)) {
      *out = (enum engine_id)i;
      return true;
    }
  return false;
}

static int parse_options(int argc, char **argv, struct options *o) {
  *o = (struct options){.seed = 1,
                        .count = 1000,
                        .max_len = 24,
                        .timeout_ms = 5000,
                        .max_mismatches = 20,
                        .minimize = true,
                        .mmio = true,
                        .eng = {ENG_KVM, ENG_BT}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NUM(name, field)                                                       \
  if (!strcmp(a, name)) {                                                      \
    if (!v)                                                                    \
      return usage();                                                          \
    o->field = strtoull(v, NULL, 0);                                           \
    i++;                                                                       \
    continue;                                                                  \
  }
    NUM("--seed", seed)
    NUM("--count", count)
    NUM("--start", start)
    NUM("--max-len", max_len)
    NUM("--timeout-ms", timeout_ms)
    NUM("--max-mismatches", max_mismatches)
    NUM("--bt-flags", bt_flags)
#undef NUM
    if (!strcmp(a, "--index") && v) {
      o->start = strtoull(v, NULL, 0);
      o->count = 1;
      o->one = true;
      i++;
    } else if (!strcmp(a, "--engines") && v) {
      const char *comma = strchr(v, ',');
      if (!comma || !parse_engine(v, (size_t)(comma - v), &o->eng[0]) ||
          !parse_engine(comma + 1, strlen(comma + 1), &o->eng[1]))
        return usage();
      i++;
    } else if (!strcmp(a, "--code") && v) {
      /* Hex bytes, spaces allowed: run them from the generated state. */
      for (const char *p = v; *p;) {
        while (*p == ' ')
          p++;
        if (!*p)
          break;
        char *end;
        char hex[3] = {p[0], p[1] ? p[1] : 0, 0};
        unsigned long b = strtoul(hex, &end, 16);
        if (end != hex + 2 || o->code_len == sizeof(o->code))
          return usage();
        o->code[o->code_len++] = (uint8_t)b;
        p += 2;
      }
      i++;
    } else if (!strcmp(a, "--indexes") && v) {
      /* Sequences whose effect on an engine outlives them (a stale
         translation, say) show only after others: replay a given list. */
      for (char *p = (char *)v; *p && o->nlist < 64;) {
        char *end;
        o->order[o->nlist++] = strtoull(p, &end, 0);
        p = *end == ',' ? end + 1 : end;
        if (end == p && *p != ',')
          break;
      }
      o->count = o->nlist;
      i++;
    } else if (!strcmp(a, "--groups") && v) {
      /* Names as in the summary's "items by group", comma-separated. */
      for (const char *p = v; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int g = dt_group_find(p, n);
        if (g < 0)
          return usage();
        o->groups |= 1u << g;
        p += n + (end != NULL);
      }
      i++;
    } else if (!strcmp(a, "--no-minimize")) {
      o->minimize = false;
    } else if (!strcmp(a, "--no-mmio")) {
      o->mmio = false;
    } else if (!strcmp(a, "--quiet")) {
      o->quiet = true;
    } else if (!strcmp(a, "--list")) {
      o->list = true;
    } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
      o->list = o->verbose = true;
    } else {
      return usage();
    }
  }
  if (o->max_len < 1 || o->max_len > DT_MAX_ITEMS || o->timeout_ms == 0)
    return usage();
  return 0;
}

int main(int argc, char **argv) {
  struct tester *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return 2;
  int rc = parse_options(argc, argv, &t->opt);
  if (rc)
    return rc;
  for (int i = 0; i < 2; i++) {
    int err = engine_init(&t->eng[i], t->opt.eng[i], t->opt.bt_flags);
    if (err == -VMM_ENODEV || err == -VMM_ENOCAP) {
      printf("difftest: engine %s not available on this host (%s): skipped\n",
             engine_names[t->opt.eng[i]], vmm_strerror(err));
      return SKIP_STATUS;
    }
    if (err < 0) {
      fprintf(stderr, "difftest: %s: set-up failed: %s\n",
              engine_names[t->opt.eng[i]], vmm_strerror(err));
      return 2;
    }
  }
  /* Features both vCPUs report. */
  bool fa[DT_F__COUNT] = {0}, fb[DT_F__COUNT] = {0};
  engine_features(&t->eng[0], fa);
  engine_features(&t->eng[1], fb);
  t->gen.max_len = t->opt.max_len;
  t->gen.mmio = t->opt.mmio;
  t->gen.groups = t->opt.groups;
  t->cmp.pvm_adjudicate = t->opt.eng[0] == ENG_KVM;
  for (int i = 0; i < DT_F__COUNT; i++)
    t->gen.features[i] = fa[i] && fb[i];
  pthread_mutex_init(&t->wd.lock, NULL);
  pthread_cond_init(&t->wd.cond, NULL);
  if (pthread_create(&t->wd.thread, NULL, watchdog_main, &t->wd) != 0)
    return 2;

  struct dt_seq *seq = malloc(sizeof(*seq));
  struct dt_code *code = malloc(sizeof(*code));
  if (!seq || !code)
    return 2;
  double t0 = now_s(), last = t0;
  uint64_t done = 0;
  for (uint64_t k = 0; k < t->opt.count; k++) {
    uint64_t idx = t->opt.nlist ? t->opt.order[k] : t->opt.start + k;
    dt_generate(&t->gen, t->opt.seed, idx, seq);
    if (t->opt.code_len) {
      /* Raw items of up to 64 bytes; the bytes are taken as they are. */
      seq->n = 0;
      for (size_t off = 0; off < t->opt.code_len; off += 64) {
        struct dt_item *it = &seq->items[seq->n++];
        size_t n = t->opt.code_len - off < 64 ? t->opt.code_len - off : 64;
        memset(it, 0, sizeof(*it));
        it->kind = DT_ITEM_RAW;
        it->rawlen = (uint8_t)n;
        memcpy(it->raw, t->opt.code + off, n);
      }
    }
    if (!dt_assemble(seq, code)) {
      fprintf(stderr,
              "difftest: generator bug: seed %" PRIu64 " index %" PRIu64
              " does not assemble\n",
              t->opt.seed, idx);
      return 2;
    }
    if (t->opt.list || t->opt.one) {
      printf("sequence seed %" PRIu64 " index %" PRIu64 ":\n", t->opt.seed,
             idx);
      print_listing(stdout, seq, code);
      if (t->opt.verbose)
        print_state(stdout, seq);
    }
    for (size_t i = 0; i < seq->n; i++)
      t->items[seq->items[i].group % 32]++;
    t->insns += code->ninsn;
    unsigned d = run_pair(t, seq, code, NULL);
    t->statuses[t->res[0].status]++;
    for (size_t i = 0; i < t->res[0].nmmio && i < MAX_MMIO_LOG; i++)
      t->res[0].mmio[i].port ? t->ports++ : t->mmio++;
    if (t->res[0].status == ST_FAULT)
      t->faults[t->res[0].vector & 31]++;
    done++;
    if (d) {
      t->mismatches++;
      report_mismatch(t, seq, d);
      if (t->mismatches >= t->opt.max_mismatches) {
        printf("difftest: stopping after %" PRIu64 " mismatches\n",
               t->mismatches);
        break;
      }
    } else if (t->opt.one || t->opt.verbose) {
      printf("  no mismatch (%s: ", engine_names[t->opt.eng[0]]);
      describe(stdout, &t->res[0]);
      printf(")\n");
      if (t->opt.verbose) {
        const struct vmm_fpu *x = &t->res[0].fpu;
        printf("  x87 after: fcw %#06x fsw %#06x ftw %#04x fop %#x fip "
               "%#" PRIx64 " fdp %#" PRIx64 "\n",
               x->fcw, x->fsw, x->ftw, x->fop, x->fip, x->fdp);
      }
    }
    double now = now_s();
    if (!t->opt.quiet && now - last >= 10) {
      fprintf(stderr,
              "difftest: %" PRIu64 " sequences, %" PRIu64
              " mismatches, %.0f/s\n",
              done, t->mismatches, (double)done / (now - t0));
      last = now;
    }
  }
  double el = now_s() - t0;
  printf("difftest: seed %" PRIu64 ", sequences %" PRIu64 "-%" PRIu64
         " on %s and %s: %" PRIu64 " mismatches\n",
         t->opt.seed, t->opt.start, t->opt.start + done - (done > 0),
         engine_names[t->opt.eng[0]], engine_names[t->opt.eng[1]],
         t->mismatches);
  printf("  %" PRIu64 " sequences, %" PRIu64 " instructions in %.1f s "
         "(%.0f sequences/s)\n",
         done, t->insns, el, el > 0 ? (double)done / el : 0.0);
  printf(
      "  outcomes on %s: %" PRIu64 " reached the end, %" PRIu64 " exceptions",
      engine_names[t->opt.eng[0]], t->statuses[ST_END], t->statuses[ST_FAULT]);
  for (int v = 0; v < 32; v++)
    if (t->faults[v])
      printf(" #%d:%" PRIu64, v, t->faults[v]);
  printf(", %" PRIu64 " syscalls, %" PRIu64 " other\n", t->statuses[ST_SYSCALL],
         t->statuses[ST_TIMEOUT] + t->statuses[ST_EXIT] +
             t->statuses[ST_ERROR]);
  printf("  %" PRIu64 " MMIO and %" PRIu64 " port accesses compared\n", t->mmio,
         t->ports);
  if (t->adjudicated)
    printf("  %" PRIu64 " #GP checked against the architecture (PVM gives "
           "#UD)\n",
           t->adjudicated);
  if (t->cmps_order)
    printf("  %" PRIu64 " cmps faulting on different operands accepted "
           "(#PF or #AC, not architectural)\n",
           t->cmps_order);
  if (t->x87_area)
    printf("  %" PRIu64 " save-area #PF naming different bytes accepted (not "
           "architectural)\n",
           t->x87_area);
  printf("  items by group:");
  for (unsigned g = 0; g < dt_group_count(); g++)
    printf(" %s %" PRIu64, dt_group_name(g), t->items[g]);
  printf("\n");

  pthread_mutex_lock(&t->wd.lock);
  t->wd.quit = true;
  pthread_cond_signal(&t->wd.cond);
  pthread_mutex_unlock(&t->wd.lock);
  pthread_join(t->wd.thread, NULL);
  for (int i = 0; i < 2; i++) {
    vmm_vm_destroy(t->eng[i].vm);
    free(t->eng[i].fixed);
  }
  free(seq);
  free(code);
  uint64_t mism = t->mismatches;
  free(t);
  return mism ? 1 : 0;
}
