/*
 * Guest-test runner. Each guest program in tests/guests/ is an assembly
 * file whose header comments say how to start it and what final state it
 * must reach; this program runs it on one engine, or on every available
 * engine and compares them ("compare").
 *
 *   guest_runner <guest.asm> <guest.bin> <kvm|bt|bt-portable|compare>
 *
 * bt-portable runs BT with the code generation forced to its portable
 * forms (VMM_BT_NO_LOOP | VMM_BT_NO_PEXT), the ones other hosts get.
 *
 * Directives (one per comment line, "; name: value"):
 *   mode:    real | prot32 | prot32-cpl3 | long64 | long64-cpl3
 *   mem:     RAM size at gpa 0 (default 0x200000)
 *   load:    where the binary goes (default 0x1000 real, 0x10000 else)
 *   entry:   first instruction (default: load)
 *   stack:   initial RSP (default 0x8000 real, 0x80000 else)
 *   tables:  mode tables (default 0x100000)
 *   kernel-stack: TSS stack for entries to CPL 0 (default: stack)
 *   idt:     BASE LIMIT  load IDTR before the run (a CPL 3 guest cannot)
 *   cr0-set: BITS  OR-ed into CR0 after the mode (CR0.AM for a CPL 3
 *            guest's alignment checks)
 *   msr:     model-specific registers set before the run, after the
 *            mode: "0xc0000082=0x10200 0xc0000080=0xd01"
 *   reg:     initial registers, "rax=1 rbx=2"
 *   input:   bytes returned, in order, by reads of port 0xea
 *   inject-on-hlt: VECTOR COUNT  inject an interrupt at each of the first
 *            COUNT HLT exits and resume
 *   inject-on-mmio-read: VECTOR  inject an interrupt while serving the
 *            guest's first read of the MMIO scratch device
 *   inject-on-port: VECTOR  inject an interrupt whenever the guest writes
 *            port 0xec (for CPL 3 guests, which cannot halt)
 *   exception-exits: MASK
 *   insn-limit: N              (engines without it skip the test)
 *   engines: the engines this guest is meant for (default: all)
 *   timeout: seconds before the run is stopped (default 20)
 *   compare-mem: off  do not compare RAM across engines
 *   expect-exit: hlt | shutdown | fault:VECTOR | insn-limit | stopped
 *   expect:  final registers, "rax=3 rip=0x1234" (any GPR, rip, rflags,
 *            cr0, cr2, cr3, cr4, efer, cs, ss, ds)
 *   expect-out: "text"  everything written to port 0xe9
 *   expect-mem: ADDR BYTE...   bytes in guest memory
 *   expect-mmio: N     number of accesses to the MMIO scratch device
 *   kvm-host-limit: EXIT "why"  on KVM, this exit instead of the expected
 *            one means the host's KVM lacks a feature (for example PVM does
 *            not intercept #BP for guest debugging); the test is skipped
 *            with that explanation. Any other outcome is still checked.
 *
 * The default expected exit is hlt for CPL 0 guests and "done" for CPL 3
 * ones, which end by writing to port 0xeb (hlt is privileged).
 *
 * Devices: port 0xe9 collects output; port 0xea returns input bytes; a
 * write to port 0xeb stops the vCPU ("done"); port 0xec, see
 * inject-on-port;
 * MMIO 0xd0000000-0xd0000fff is a scratch device that stores writes and
 * returns them on reads, counting accesses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <ctype.h>
#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SKIP_STATUS 77
#define MMIO_BASE 0xd0000000ull
#define MMIO_SIZE 0x1000
#define MAX_MEM_EXPECT 32
/* Pseudo exit reason: stopped by a write to the done port. */
#define EXIT_DONE 100

struct reg_value {
  char name[16];
  uint64_t value;
};

struct mem_expect {
  uint64_t addr;
  size_t len;
  uint8_t bytes[64];
};

struct spec {
  char asm_path[512], bin_path[512];
  enum vmm_cpu_mode mode;
  unsigned cpl;
  uint64_t mem, load, entry, stack, tables, kernel_stack;
  bool entry_set, stack_set, load_set, kernel_stack_set;
  uint64_t idt_base;
  uint16_t idt_limit;
  bool idt_set;
  uint64_t cr0_set;
  struct vmm_msr msrs[8];
  size_t nmsrs;
  struct reg_value init[24];
  size_t ninit;
  uint8_t input[256];
  size_t ninput;
  unsigned inject_vector, inject_count;
  int inject_port_vector; /* -1: none */
  int inject_mmio_vector; /* -1: none */
  uint32_t exc_mask;
  uint64_t insn_limit;
  bool engines_set, want_kvm, want_bt;
  unsigned timeout;
  bool compare_mem;
  int expect_exit; /* enum vmm_exit_reason or EXIT_DONE */
  bool expect_exit_set;
  int expect_vector;
  struct reg_value expect[32];
  size_t nexpect;
  char expect_out[1024];
  size_t expect_out_len;
  bool expect_out_set;
  struct mem_expect mem_expect[MAX_MEM_EXPECT];
  size_t nmem_expect;
  long expect_mmio;
  int host_limit_exit; /* -1 if none */
  char host_limit_why[256];
};

struct result {
  bool ran;
  struct vmm_regs regs;
  struct vmm_sregs sregs;
  struct vmm_exit exit;
  char out[4096];
  size_t out_len;
  size_t in_pos;
  uint8_t mmio[MMIO_SIZE];
  unsigned mmio_count;
  bool mmio_injected;
  uint8_t *ram; /* copy of guest RAM at the end */
  bool done;     /* port 0xeb written */
  const struct spec *spec;
};

static struct spec g_spec;
static const char *g_engine_arg;
static uint32_t g_bt_flags; /* vmm_vm_config.bt_flags for BT */
static bool g_skipped;

/* Skip the test and make the process report "skipped" to meson. */
#define SKIP_TEST()                                                            \
  do {                                                                         \
    g_skipped = true;                                                          \
    skip();                                                                    \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Spec parsing                                                             */

static uint64_t parse_num(const char *s) { return strtoull(s, NULL, 0); }

static size_t parse_regs(const char *s, struct reg_value *out, size_t max) {
  size_t n = 0;
  char buf[512];
  snprintf(buf, sizeof(buf), "%s", s);
  for (char *tok = strtok(buf, " \t"); tok && n < max; tok = strtok(NULL, " \t")) {
    char *eq = strchr(tok, '=');
    if (!eq)
      continue;
    *eq = 0;
    snprintf(out[n].name, sizeof(out[n].name), "%s", tok);
    out[n].value = parse_num(eq + 1);
    n++;
  }
  return n;
}

static size_t parse_string(const char *s, char *out, size_t max) {
  const char *p = strchr(s, '"');
  size_t n = 0;
  if (!p)
    return 0;
  for (p++; *p && *p != '"' && n < max; p++) {
    if (*p == '\\' && p[1]) {
      p++;
      switch (*p) {
      case 'n': out[n++] = '\n'; break;
      case 't': out[n++] = '\t'; break;
      case '0': out[n++] = '\0'; break;
      case 'x': {
        char hex[3] = {p[1], p[2], 0};
        out[n++] = (char)strtoul(hex, NULL, 16);
        p += 2;
        break;
      }
      default: out[n++] = *p; break;
      }
    } else {
      out[n++] = *p;
    }
  }
  return n;
}

static int parse_spec(struct spec *sp, const char *asm_path, const char *bin_path) {
  memset(sp, 0, sizeof(*sp));
  snprintf(sp->asm_path, sizeof(sp->asm_path), "%s", asm_path);
  snprintf(sp->bin_path, sizeof(sp->bin_path), "%s", bin_path);
  sp->mode = VMM_MODE_LONG64;
  sp->mem = 0x200000;
  sp->tables = 0x100000;
  sp->timeout = 20;
  sp->compare_mem = true;
  sp->expect_exit = VMM_EXIT_HLT;
  sp->expect_vector = -1;
  sp->expect_mmio = -1;
  sp->host_limit_exit = -1;
  sp->inject_port_vector = -1;
  sp->inject_mmio_vector = -1;

  FILE *f = fopen(asm_path, "r");
  if (!f)
    return -1;
  char line[1024];
  while (fgets(line, sizeof(line), f)) {
    char *p = line;
    while (isspace((unsigned char)*p))
      p++;
    if (*p != ';')
      continue;
    p++;
    while (isspace((unsigned char)*p))
      p++;
    char *colon = strchr(p, ':');
    if (!colon)
      continue;
    *colon = 0;
    char *key = p, *val = colon + 1;
    while (isspace((unsigned char)*val))
      val++;
    val[strcspn(val, "\r\n")] = 0;

    if (!strcmp(key, "mode")) {
      if (!strncmp(val, "real", 4))
        sp->mode = VMM_MODE_REAL;
      else if (!strncmp(val, "prot32", 6))
        sp->mode = VMM_MODE_PROT32;
      else if (!strncmp(val, "long64", 6))
        sp->mode = VMM_MODE_LONG64;
      else
        return -1;
      sp->cpl = strstr(val, "cpl3") ? 3 : 0;
    } else if (!strcmp(key, "mem")) {
      sp->mem = parse_num(val);
    } else if (!strcmp(key, "load")) {
      sp->load = parse_num(val);
      sp->load_set = true;
    } else if (!strcmp(key, "entry")) {
      sp->entry = parse_num(val);
      sp->entry_set = true;
    } else if (!strcmp(key, "stack")) {
      sp->stack = parse_num(val);
      sp->stack_set = true;
    } else if (!strcmp(key, "tables")) {
      sp->tables = parse_num(val);
    } else if (!strcmp(key, "kernel-stack")) {
      sp->kernel_stack = parse_num(val);
      sp->kernel_stack_set = true;
    } else if (!strcmp(key, "idt")) {
      char *end;
      sp->idt_base = strtoull(val, &end, 0);
      sp->idt_limit = (uint16_t)strtoul(end, NULL, 0);
      sp->idt_set = true;
    } else if (!strcmp(key, "cr0-set")) {
      sp->cr0_set = parse_num(val);
    } else if (!strcmp(key, "msr")) {
      struct reg_value rv[8];
      size_t n = parse_regs(val, rv, 8);
      for (size_t i = 0; i < n && sp->nmsrs < 8; i++)
        sp->msrs[sp->nmsrs++] =
            (struct vmm_msr){.index = (uint32_t)strtoul(rv[i].name, NULL, 0),
                             .value = rv[i].value};
    } else if (!strcmp(key, "reg")) {
      sp->ninit += parse_regs(val, sp->init + sp->ninit, 24 - sp->ninit);
    } else if (!strcmp(key, "input")) {
      char *end;
      for (char *q = val; *q && sp->ninput < sizeof(sp->input); q = end) {
        unsigned long b = strtoul(q, &end, 0);
        if (end == q)
          break;
        sp->input[sp->ninput++] = (uint8_t)b;
      }
    } else if (!strcmp(key, "inject-on-hlt")) {
      sscanf(val, "%i %u", (int *)&sp->inject_vector, &sp->inject_count);
    } else if (!strcmp(key, "inject-on-mmio-read")) {
      sp->inject_mmio_vector = (int)parse_num(val);
    } else if (!strcmp(key, "inject-on-port")) {
      sp->inject_port_vector = (int)parse_num(val);
    } else if (!strcmp(key, "exception-exits")) {
      sp->exc_mask = (uint32_t)parse_num(val);
    } else if (!strcmp(key, "insn-limit")) {
      sp->insn_limit = parse_num(val);
    } else if (!strcmp(key, "engines")) {
      sp->engines_set = true;
      sp->want_kvm = strstr(val, "kvm") != NULL;
      sp->want_bt = strstr(val, "bt") != NULL;
    } else if (!strcmp(key, "timeout")) {
      sp->timeout = (unsigned)parse_num(val);
    } else if (!strcmp(key, "compare-mem")) {
      sp->compare_mem = strcmp(val, "off") != 0;
    } else if (!strcmp(key, "expect-exit")) {
      sp->expect_exit_set = true;
      if (!strcmp(val, "done"))
        sp->expect_exit = EXIT_DONE;
      else if (!strcmp(val, "hlt"))
        sp->expect_exit = VMM_EXIT_HLT;
      else if (!strcmp(val, "shutdown"))
        sp->expect_exit = VMM_EXIT_SHUTDOWN;
      else if (!strncmp(val, "fault:", 6)) {
        sp->expect_exit = VMM_EXIT_FAULT;
        sp->expect_vector = (int)parse_num(val + 6);
      } else if (!strcmp(val, "insn-limit"))
        sp->expect_exit = VMM_EXIT_INSN_LIMIT;
      else if (!strcmp(val, "stopped"))
        sp->expect_exit = VMM_EXIT_STOPPED;
      else
        return -1;
    } else if (!strcmp(key, "expect")) {
      sp->nexpect += parse_regs(val, sp->expect + sp->nexpect, 32 - sp->nexpect);
    } else if (!strcmp(key, "expect-out")) {
      size_t n = parse_string(val, sp->expect_out + sp->expect_out_len,
                              sizeof(sp->expect_out) - sp->expect_out_len);
      sp->expect_out_len += n;
      sp->expect_out_set = true;
    } else if (!strcmp(key, "expect-mem")) {
      if (sp->nmem_expect == MAX_MEM_EXPECT)
        return -1;
      struct mem_expect *m = &sp->mem_expect[sp->nmem_expect++];
      char *end;
      m->addr = strtoull(val, &end, 0);
      for (char *q = end; m->len < sizeof(m->bytes); q = end) {
        unsigned long b = strtoul(q, &end, 16);
        if (end == q)
          break;
        m->bytes[m->len++] = (uint8_t)b;
      }
    } else if (!strcmp(key, "kvm-host-limit")) {
      if (!strncmp(val, "shutdown", 8))
        sp->host_limit_exit = VMM_EXIT_SHUTDOWN;
      else if (!strncmp(val, "internal", 8))
        sp->host_limit_exit = VMM_EXIT_INTERNAL_ERROR;
      else if (!strncmp(val, "hlt", 3))
        sp->host_limit_exit = VMM_EXIT_HLT;
      else
        return -1;
      parse_string(val, sp->host_limit_why, sizeof(sp->host_limit_why) - 1);
    } else if (!strcmp(key, "expect-mmio")) {
      sp->expect_mmio = (long)parse_num(val);
    }
  }
  fclose(f);
  if (!sp->load_set)
    sp->load = sp->mode == VMM_MODE_REAL ? 0x1000 : 0x10000;
  if (!sp->entry_set)
    sp->entry = sp->load;
  if (!sp->stack_set)
    sp->stack = sp->mode == VMM_MODE_REAL ? 0x8000 : 0x80000;
  if (!sp->kernel_stack_set)
    sp->kernel_stack = sp->stack;
  if (!sp->engines_set)
    sp->want_kvm = sp->want_bt = true;
  if (!sp->expect_exit_set)
    sp->expect_exit = sp->cpl == 3 ? EXIT_DONE : VMM_EXIT_HLT;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                  */

static int out_port(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                    bool is_write, void *opaque) {
  struct result *r = opaque;
  (void)vcpu, (void)port;
  if (!is_write)
    return VMM_IO_DECLINED;
  for (uint32_t i = 0; i < len && r->out_len < sizeof(r->out); i++)
    r->out[r->out_len++] = ((char *)data)[i];
  return 0;
}

static int in_port(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  struct result *r = opaque;
  (void)vcpu, (void)port;
  if (is_write)
    return VMM_IO_DECLINED;
  for (uint32_t i = 0; i < len; i++)
    ((uint8_t *)data)[i] =
        r->in_pos < r->spec->ninput ? r->spec->input[r->in_pos++] : 0xff;
  return 0;
}

static int done_port(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  struct result *r = opaque;
  (void)port, (void)data, (void)len;
  if (!is_write)
    return VMM_IO_DECLINED;
  r->done = true;
  return vmm_vcpu_kick(vcpu);
}

static int inject_port(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                       bool is_write, void *opaque) {
  struct result *r = opaque;
  (void)port, (void)data, (void)len;
  if (!is_write || r->spec->inject_port_vector < 0)
    return VMM_IO_DECLINED;
  return vmm_vcpu_inject_irq(vcpu, (uint8_t)r->spec->inject_port_vector);
}

static int scratch_mmio(vmm_vcpu *vcpu, uint64_t addr, void *data,
                        uint32_t len, bool is_write, void *opaque) {
  struct result *r = opaque;
  uint64_t off = addr - MMIO_BASE;
  r->mmio_count++;
  if (is_write) {
    memcpy(r->mmio + off, data, len);
    return 0;
  }
  memcpy(data, r->mmio + off, len);
  if (r->spec->inject_mmio_vector >= 0 && !r->mmio_injected) {
    r->mmio_injected = true;
    return vmm_vcpu_inject_irq(vcpu, (uint8_t)r->spec->inject_mmio_vector);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Running                                                                  */

struct watchdog {
  vmm_vcpu *vcpu;
  unsigned seconds;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
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

static bool set_reg(struct vmm_regs *r, const char *name, uint64_t v) {
  static const char *names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi",
                                "rsp", "rbp", "r8",  "r9",  "r10", "r11",
                                "r12", "r13", "r14", "r15", "rip", "rflags"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (!strcmp(names[i], name)) {
      ((uint64_t *)r)[i] = v;
      return true;
    }
  return false;
}

static bool get_reg(const struct result *res, const char *name, uint64_t *v) {
  struct vmm_regs tmp = res->regs;
  static const char *names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi",
                                "rsp", "rbp", "r8",  "r9",  "r10", "r11",
                                "r12", "r13", "r14", "r15", "rip", "rflags"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (!strcmp(names[i], name)) {
      *v = ((uint64_t *)&tmp)[i];
      return true;
    }
  const struct vmm_sregs *s = &res->sregs;
  if (!strcmp(name, "cr0")) *v = s->cr0;
  else if (!strcmp(name, "cr2")) *v = s->cr2;
  else if (!strcmp(name, "cr3")) *v = s->cr3;
  else if (!strcmp(name, "cr4")) *v = s->cr4;
  else if (!strcmp(name, "efer")) *v = s->efer;
  else if (!strcmp(name, "cs")) *v = s->cs.selector;
  else if (!strcmp(name, "ss")) *v = s->ss.selector;
  else if (!strcmp(name, "ds")) *v = s->ds.selector;
  else return false;
  return true;
}

/* Returns 0, or SKIP_STATUS if the engine is not available. */
static int run_guest(const struct spec *sp, enum vmm_engine_kind engine,
                     struct result *res) {
  memset(res, 0, sizeof(*res));
  res->spec = sp;
  if (!vmm_engine_available(engine))
    return SKIP_STATUS;

  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = engine;
  cfg.bt_flags = g_bt_flags;
  vmm_vm *vm;
  assert_int_equal(vmm_vm_create(&cfg, &vm), 0);
  assert_int_equal(vmm_mem_slot_add(vm, 0, sp->mem, NULL, 0, NULL), 0);
  assert_int_equal(vmm_io_register(vm, VMM_IO_PORT, 0xe9, 1, out_port, res), 0);
  assert_int_equal(vmm_io_register(vm, VMM_IO_PORT, 0xea, 1, in_port, res), 0);
  assert_int_equal(vmm_io_register(vm, VMM_IO_PORT, 0xeb, 1, done_port, res), 0);
  assert_int_equal(vmm_io_register(vm, VMM_IO_PORT, 0xec, 1, inject_port, res),
                   0);
  assert_int_equal(
      vmm_io_register(vm, VMM_IO_MMIO, MMIO_BASE, MMIO_SIZE, scratch_mmio, res), 0);

  FILE *f = fopen(sp->bin_path, "rb");
  assert_non_null(f);
  static uint8_t image[1 << 20];
  size_t n = fread(image, 1, sizeof(image), f);
  fclose(f);
  assert_true(n > 0);
  assert_int_equal(vmm_mem_write(vm, sp->load, image, n), 0);

  vmm_vcpu *vcpu;
  assert_int_equal(vmm_vcpu_create(vm, 0, &vcpu), 0);
  struct vmm_mode_setup ms = {.mode = sp->mode,
                              .cpl = sp->cpl,
                              .tables = sp->tables,
                              .identity_size = 1ull << 32,
                              .kernel_stack = sp->kernel_stack};
  assert_int_equal(vmm_vcpu_set_mode(vcpu, &ms), 0);
  if (sp->idt_set || sp->cr0_set) {
    struct vmm_sregs sr;
    assert_int_equal(vmm_vcpu_get_sregs(vcpu, &sr), 0);
    if (sp->idt_set) {
      sr.idt.base = sp->idt_base;
      sr.idt.limit = sp->idt_limit;
    }
    sr.cr0 |= sp->cr0_set;
    assert_int_equal(vmm_vcpu_set_sregs(vcpu, &sr), 0);
  }
  if (sp->nmsrs > 0)
    assert_int_equal(vmm_vcpu_set_msrs(vcpu, sp->msrs, sp->nmsrs), 0);
  struct vmm_regs regs;
  assert_int_equal(vmm_vcpu_get_regs(vcpu, &regs), 0);
  regs.rip = sp->entry;
  regs.rsp = sp->stack;
  for (size_t i = 0; i < sp->ninit; i++)
    assert_true(set_reg(&regs, sp->init[i].name, sp->init[i].value));
  assert_int_equal(vmm_vcpu_set_regs(vcpu, &regs), 0);
  if (sp->exc_mask) {
    int rc = vmm_vcpu_set_exception_exits(vcpu, sp->exc_mask);
    if (rc == VMM_ENOTSUP) {
      vmm_vm_destroy(vm);
      return SKIP_STATUS;
    }
    assert_int_equal(rc, 0);
  }
  if (sp->insn_limit) {
    int rc = vmm_vcpu_set_insn_limit(vcpu, sp->insn_limit);
    if (rc == VMM_ENOTSUP) {
      vmm_vm_destroy(vm);
      return SKIP_STATUS;
    }
    assert_int_equal(rc, 0);
  }

  struct watchdog w = {.vcpu = vcpu, .seconds = sp->timeout};
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.cond, NULL);
  pthread_t wt;
  assert_int_equal(pthread_create(&wt, NULL, watchdog_main, &w), 0);

  struct vmm_exit *e;
  unsigned injected = 0;
  int rc;
  for (;;) {
    rc = vmm_vcpu_run(vcpu, &e);
    if (rc < 0)
      break;
    if (e->reason == VMM_EXIT_HLT && injected < sp->inject_count) {
      injected++;
      assert_int_equal(vmm_vcpu_inject_irq(vcpu, (uint8_t)sp->inject_vector), 0);
      continue;
    }
    break;
  }
  pthread_mutex_lock(&w.lock);
  w.done = true;
  pthread_cond_signal(&w.cond);
  pthread_mutex_unlock(&w.lock);
  pthread_join(wt, NULL);
  assert_int_equal(rc, 0);

  res->exit = *e;
  assert_int_equal(vmm_vcpu_get_regs(vcpu, &res->regs), 0);
  assert_int_equal(vmm_vcpu_get_sregs(vcpu, &res->sregs), 0);
  res->ram = malloc(sp->mem);
  assert_non_null(res->ram);
  assert_int_equal(vmm_mem_read(vm, 0, res->ram, sp->mem), 0);
  res->ran = true;
  assert_int_equal(vmm_vm_destroy(vm), 0);
  return 0;
}

static int exit_kind(const struct result *r) {
  return r->exit.reason == VMM_EXIT_STOPPED && r->done ? EXIT_DONE
                                                      : (int)r->exit.reason;
}

static const char *exit_name(int r) {
  if (r == EXIT_DONE)
    return "done";
  static const char *names[] = {"none",     "io",       "mmio",    "hlt",
                                "shutdown", "fault",    "debug",   "internal",
                                "stopped",  "insn-limit", "system"};
  return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

static void check_result(const struct spec *sp, const struct result *r,
                         const char *engine) {
  if (exit_kind(r) != sp->expect_exit)
    fail_msg("%s: exit %s, expected %s (rip=0x%llx)", engine,
             exit_name(exit_kind(r)), exit_name(sp->expect_exit),
             (unsigned long long)r->regs.rip);
  if (sp->expect_vector >= 0 && r->exit.fault.vector != sp->expect_vector)
    fail_msg("%s: fault vector %u, expected %d", engine, r->exit.fault.vector,
             sp->expect_vector);
  for (size_t i = 0; i < sp->nexpect; i++) {
    uint64_t v;
    if (!get_reg(r, sp->expect[i].name, &v))
      fail_msg("unknown register %s in expect", sp->expect[i].name);
    if (v != sp->expect[i].value)
      fail_msg("%s: %s = 0x%llx, expected 0x%llx", engine, sp->expect[i].name,
               (unsigned long long)v,
               (unsigned long long)sp->expect[i].value);
  }
  if (sp->expect_out_set &&
      (r->out_len != sp->expect_out_len ||
       memcmp(r->out, sp->expect_out, r->out_len) != 0))
    fail_msg("%s: output \"%.*s\" (%zu bytes), expected \"%.*s\"", engine,
             (int)r->out_len, r->out, r->out_len, (int)sp->expect_out_len,
             sp->expect_out);
  for (size_t i = 0; i < sp->nmem_expect; i++) {
    const struct mem_expect *m = &sp->mem_expect[i];
    assert_true(m->addr + m->len <= sp->mem);
    for (size_t j = 0; j < m->len; j++)
      if (r->ram[m->addr + j] != m->bytes[j])
        fail_msg("%s: memory at 0x%llx is %02x, expected %02x", engine,
                 (unsigned long long)(m->addr + j), r->ram[m->addr + j],
                 m->bytes[j]);
  }
  if (sp->expect_mmio >= 0 && (long)r->mmio_count != sp->expect_mmio)
    fail_msg("%s: %u MMIO accesses, expected %ld", engine, r->mmio_count,
             sp->expect_mmio);
}

static void compare_results(const struct spec *sp, const struct result *a,
                            const struct result *b) {
  if (exit_kind(a) != exit_kind(b))
    fail_msg("exit differs: kvm %s, bt %s", exit_name(exit_kind(a)),
             exit_name(exit_kind(b)));
  static const char *names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi",
                                "rsp", "rbp", "r8",  "r9",  "r10", "r11",
                                "r12", "r13", "r14", "r15", "rip", "rflags"};
  for (size_t i = 0; i < 18; i++) {
    uint64_t va = ((const uint64_t *)&a->regs)[i];
    uint64_t vb = ((const uint64_t *)&b->regs)[i];
    /* This host's KVM (PVM) runs CPL 3 code with IOPL 0 and reports the
       guest's RFLAGS.IOPL as 0 once it ran, although no instruction at
       CPL 3 can change it; compare the rest. */
    if (i == 17 && sp->cpl == 3) {
      va &= ~0x3000ull;
      vb &= ~0x3000ull;
    }
    if (va != vb)
      fail_msg("%s differs: kvm 0x%llx, bt 0x%llx", names[i],
               (unsigned long long)va, (unsigned long long)vb);
  }
  if (a->sregs.cr0 != b->sregs.cr0 || a->sregs.cr3 != b->sregs.cr3 ||
      a->sregs.cr4 != b->sregs.cr4 || a->sregs.efer != b->sregs.efer)
    fail_msg("control registers differ");
  if (a->out_len != b->out_len || memcmp(a->out, b->out, a->out_len))
    fail_msg("port output differs");
  if (a->mmio_count != b->mmio_count || memcmp(a->mmio, b->mmio, MMIO_SIZE))
    fail_msg("MMIO accesses differ");
  if (sp->compare_mem)
    for (uint64_t i = 0; i < sp->mem; i++)
      if (a->ram[i] != b->ram[i])
        fail_msg("RAM differs at 0x%llx: kvm %02x, bt %02x",
                 (unsigned long long)i, a->ram[i], b->ram[i]);
}

static void test_guest(void **state) {
  (void)state;
  const struct spec *sp = &g_spec;
  static struct result kvm, bt;

  if (!strcmp(g_engine_arg, "compare")) {
    if (!sp->want_kvm || !sp->want_bt)
      SKIP_TEST();
    int a = run_guest(sp, VMM_ENGINE_KVM, &kvm);
    int b = run_guest(sp, VMM_ENGINE_BT, &bt);
    if (a == SKIP_STATUS || b == SKIP_STATUS) {
      print_message("comparison needs both engines; %s is not available\n",
                    a == SKIP_STATUS ? "kvm" : "bt");
      SKIP_TEST();
    }
    if (sp->host_limit_exit >= 0 && exit_kind(&kvm) == sp->host_limit_exit &&
        sp->expect_exit != sp->host_limit_exit) {
      print_message("host limitation: %s\n", sp->host_limit_why);
      SKIP_TEST();
    }
    check_result(sp, &kvm, "kvm");
    check_result(sp, &bt, "bt");
    compare_results(sp, &kvm, &bt);
    free(kvm.ram);
    free(bt.ram);
    return;
  }
  enum vmm_engine_kind engine =
      !strcmp(g_engine_arg, "kvm") ? VMM_ENGINE_KVM : VMM_ENGINE_BT;
  if ((engine == VMM_ENGINE_KVM && !sp->want_kvm) ||
      (engine == VMM_ENGINE_BT && !sp->want_bt)) {
    print_message("guest is not meant for the %s engine\n", g_engine_arg);
    SKIP_TEST();
  }
  struct result *r = engine == VMM_ENGINE_KVM ? &kvm : &bt;
  if (run_guest(sp, engine, r) == SKIP_STATUS) {
    print_message("%s engine not available here (or lacks a feature this "
                  "guest needs)\n", g_engine_arg);
    SKIP_TEST();
  }
  if (engine == VMM_ENGINE_KVM && sp->host_limit_exit >= 0 &&
      exit_kind(r) == sp->host_limit_exit && sp->expect_exit != sp->host_limit_exit) {
    print_message("host limitation: %s\n", sp->host_limit_why);
    free(r->ram);
    SKIP_TEST();
  }
  check_result(sp, r, g_engine_arg);
  free(r->ram);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s guest.asm guest.bin kvm|bt|bt-portable|compare\n",
            argv[0]);
    return 2;
  }
  if (!strcmp(argv[3], "bt-portable"))
    g_bt_flags = VMM_BT_NO_LOOP | VMM_BT_NO_PEXT;
  else if (strcmp(argv[3], "kvm") && strcmp(argv[3], "bt") &&
           strcmp(argv[3], "compare")) {
    fprintf(stderr, "%s: unknown engine %s\n", argv[0], argv[3]);
    return 2;
  }
  if (parse_spec(&g_spec, argv[1], argv[2]) < 0) {
    fprintf(stderr, "%s: bad directives\n", argv[1]);
    return 2;
  }
  g_engine_arg = argv[3];
  const char *base = strrchr(argv[1], '/');
  char name[256];
  snprintf(name, sizeof(name), "%s-%s", base ? base + 1 : argv[1], argv[3]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_guest),
  };
  int failed = _cmocka_run_group_tests(name, tests, 1, NULL, NULL);
  return failed ? 1 : g_skipped ? SKIP_STATUS : 0;
}
