/*
 * kvm_host_probe: reproduces, with raw /dev/kvm ioctls and no libvmm code,
 * the behaviours of this project's KVM hosts (PVM, a software nested
 * hypervisor) that the test suite records as host limitations. Run it on
 * a new host to see which still apply; each line says what hardware KVM
 * does instead. Not a test: it reports, it does not judge.
 *
 *   build/tests/kvm_host_probe
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (2u << 20)
#define CODE 0x10000u
#define IDT 0x11000u
#define TSS 0x4000u
#define TSS_LIMIT 0x2068u

struct vm {
  int kvm, fd, vcpu;
  struct kvm_run *run;
  uint8_t *mem;
};

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void seg(struct kvm_segment *s, uint16_t sel, int type, int dpl, int l,
                int db) {
  memset(s, 0, sizeof(*s));
  s->selector = sel;
  s->type = (uint8_t)type;
  s->present = 1;
  s->dpl = (uint8_t)dpl;
  s->s = 1;
  s->l = (uint8_t)l;
  s->db = (uint8_t)db;
  s->g = 1;
  s->limit = 0xffffffff;
}

/* Long mode at CPL 0 or 3 with a 1 GiB identity map of 2 MiB user pages,
   a GDT laid out like libvmm's, a TSS with RSP0 = 0x70000 and a full I/O
   bitmap, RIP = CODE, RSP = 0x80000. */
static void vm_init(struct vm *v, int cpl) {
  v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (v->kvm < 0)
    die("/dev/kvm");
  if ((v->fd = ioctl(v->kvm, KVM_CREATE_VM, 0)) < 0)
    die("KVM_CREATE_VM");
  ioctl(v->fd, KVM_SET_TSS_ADDR, 0xfffbd000ul);
  v->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region r = {
      .slot = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)v->mem};
  if (ioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
    die("KVM_SET_USER_MEMORY_REGION");
  if ((v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0)) < 0)
    die("KVM_CREATE_VCPU");
  int size = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  v->run =
      mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
  struct {
    struct kvm_cpuid2 c;
    struct kvm_cpuid_entry2 e[256];
  } cpuid = {.c.nent = 256};
  if (ioctl(v->kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0 ||
      ioctl(v->vcpu, KVM_SET_CPUID2, &cpuid) < 0)
    die("CPUID");

  uint64_t *pml4 = (uint64_t *)(v->mem + 0x1000);
  uint64_t *pdpt = (uint64_t *)(v->mem + 0x2000);
  uint64_t *pd = (uint64_t *)(v->mem + 0x3000);
  pml4[0] = 0x2000 | 7;
  pdpt[0] = 0x3000 | 7;
  for (uint64_t i = 0; i < 512; i++)
    pd[i] = (i << 21) | 0x87;
  uint64_t *gdt = (uint64_t *)(v->mem + 0x500);
  gdt[1] = 0x00cf9b000000ffffull; /* 0x08 kernel code 32 */
  gdt[2] = 0x00af9b000000ffffull; /* 0x10 kernel code 64 */
  gdt[3] = 0x00cf93000000ffffull; /* 0x18 kernel data */
  gdt[4] = 0x00cffb000000ffffull; /* 0x23 user code 32 */
  gdt[5] = 0x00cff3000000ffffull; /* 0x2b user data */
  gdt[6] = 0x00affb000000ffffull; /* 0x33 user code 64 */
  gdt[7] = (TSS_LIMIT & 0xffff) | ((uint64_t)TSS << 16) | (0x8bull << 40);
  *(uint16_t *)(v->mem + TSS + 0x66) = 0x68;
  v->mem[TSS + TSS_LIMIT] = 0xff;
  *(uint64_t *)(v->mem + TSS + 4) = 0x70000;

  struct kvm_sregs s;
  if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0)
    die("KVM_GET_SREGS");
  seg(&s.cs, cpl ? 0x33 : 0x10, 0xb, cpl, 1, 0);
  seg(&s.ds, cpl ? 0x2b : 0x18, 0x3, cpl, 0, 1);
  s.es = s.fs = s.gs = s.ss = s.ds;
  memset(&s.tr, 0, sizeof(s.tr));
  s.tr.base = TSS;
  s.tr.limit = TSS_LIMIT;
  s.tr.selector = 0x38;
  s.tr.type = 0xb;
  s.tr.present = 1;
  s.ldt.unusable = 1;
  s.gdt.base = 0x500;
  s.gdt.limit = 0x47;
  s.idt.base = IDT;
  s.idt.limit = 0xfff;
  s.cr0 = 0x80050033;
  s.cr3 = 0x1000;
  s.cr4 = 0x620;
  s.efer = 0xd01;
  if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0)
    die("KVM_SET_SREGS");
  struct kvm_regs g = {.rip = CODE, .rsp = 0x80000, .rflags = 0x2};
  if (ioctl(v->vcpu, KVM_SET_REGS, &g) < 0)
    die("KVM_SET_REGS");
}

static void vm_fini(struct vm *v) {
  close(v->vcpu);
  close(v->fd);
  close(v->kvm);
  munmap(v->mem, MEM_SIZE);
}

static void code(struct vm *v, uint32_t at, const void *bytes, size_t n) {
  memcpy(v->mem + at, bytes, n);
}

/* An interrupt gate to handler, DPL dpl, in the IDT. */
static void gate(struct vm *v, unsigned vec, uint32_t handler, int dpl) {
  uint8_t *g = v->mem + IDT + 16 * vec;
  memset(g, 0, 16);
  g[0] = handler & 0xff;
  g[1] = (handler >> 8) & 0xff;
  g[2] = 0x10;
  g[5] = (uint8_t)(0x8e | (dpl << 5));
  g[6] = (handler >> 16) & 0xff;
  g[7] = (handler >> 24) & 0xff;
}

/* The vCPU's RFLAGS (CPL 3 probes: IOPL 3, as the mode helper sets it). */
static void set_rflags(struct vm *v, uint64_t rflags) {
  struct kvm_regs g;
  if (ioctl(v->vcpu, KVM_GET_REGS, &g) < 0)
    die("KVM_GET_REGS");
  g.rflags = rflags;
  if (ioctl(v->vcpu, KVM_SET_REGS, &g) < 0)
    die("KVM_SET_REGS");
}

static int run(struct vm *v) {
  if (ioctl(v->vcpu, KVM_RUN, 0) < 0)
    die("KVM_RUN");
  return (int)v->run->exit_reason;
}

static const char *exit_name(int r) {
  switch (r) {
  case KVM_EXIT_IO: return "I/O exit";
  case KVM_EXIT_HLT: return "hlt";
  case KVM_EXIT_MMIO: return "MMIO exit";
  case KVM_EXIT_SHUTDOWN: return "shutdown";
  case KVM_EXIT_DEBUG: return "debug exit";
  case KVM_EXIT_INTERNAL_ERROR: return "internal error";
  default: return "other exit";
  }
}

static void report(const char *probe, const char *seen, const char *hw) {
  printf("%-34s %s\n%-34s (hardware KVM: %s)\n", probe, seen, "", hw);
}

/* Paging outside long mode: KVM_SET_SREGS with CR0.PG in 32-bit mode. */
static void probe_paging32(void) {
  struct vm v;
  vm_init(&v, 0);
  struct kvm_sregs s;
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  seg(&s.cs, 0x08, 0xb, 0, 0, 1);
  seg(&s.ds, 0x18, 0x3, 0, 0, 1);
  s.es = s.fs = s.gs = s.ss = s.ds;
  s.efer = 0;
  s.cr4 = 0x610;
  s.cr0 = 0x80000033;
  s.cr3 = 0x1000;
  int rc = ioctl(v.vcpu, KVM_SET_SREGS, &s);
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  char buf[128];
  snprintf(buf, sizeof(buf), "SET_SREGS rc %d, CR0 reads back 0x%llx", rc,
           (unsigned long long)s.cr0);
  report("32-bit paging via SET_SREGS:", buf, "CR0 0x80000033 is kept");
  vm_fini(&v);
}

/* Dirty log of a slot the guest only reads (CPL 3, first touch). */
static void probe_dirty_reads(void) {
  struct vm v;
  vm_init(&v, 3);
  uint8_t *d = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region r = {.slot = 1,
                                          .flags = KVM_MEM_LOG_DIRTY_PAGES,
                                          .guest_phys_addr = 0x400000,
                                          .memory_size = 16 * 4096,
                                          .userspace_addr = (uintptr_t)d};
  ioctl(v.fd, KVM_SET_USER_MEMORY_REGION, &r);
  /* mov byte [0x400000], 1; mov al, [0x406000]; out 0xeb, al */
  static const uint8_t c[] = {0xc6, 0x04, 0x25, 0x00, 0x00, 0x40,
                              0x00, 0x01, 0x8a, 0x04, 0x25, 0x00,
                              0x60, 0x40, 0x00, 0xe6, 0xeb};
  code(&v, CODE, c, sizeof(c));
  set_rflags(&v, 0x3002);
  uint64_t bm = 0;
  struct kvm_dirty_log log = {.slot = 1, .dirty_bitmap = &bm};
  ioctl(v.fd, KVM_GET_DIRTY_LOG, &log);
  int x = run(&v);
  ioctl(v.fd, KVM_GET_DIRTY_LOG, &log);
  char buf[128];
  snprintf(buf, sizeof(buf), "%s, bitmap 0x%llx (page 0 written, 6 read)",
           exit_name(x), (unsigned long long)bm);
  report("dirty log after a CPL 3 read:", buf, "0x1");
  munmap(d, 16 * 4096);
  vm_fini(&v);
}

/* Guest debugging of natively run CPL 3 code. */
static void probe_debug(int singlestep) {
  struct vm v;
  vm_init(&v, 3);
  static const uint8_t c[] = {0x90, 0x90, 0x90, 0xe6, 0xeb};
  code(&v, CODE, c, sizeof(c));
  set_rflags(&v, 0x3002);
  struct kvm_guest_debug dbg;
  memset(&dbg, 0, sizeof(dbg));
  dbg.control = KVM_GUESTDBG_ENABLE |
                (singlestep ? KVM_GUESTDBG_SINGLESTEP : KVM_GUESTDBG_USE_HW_BP);
  dbg.arch.debugreg[0] = CODE + 2;
  dbg.arch.debugreg[7] = singlestep ? 0 : 1;
  ioctl(v.vcpu, KVM_SET_GUEST_DEBUG, &dbg);
  int x = run(&v);
  report(singlestep ? "single-step at CPL 3:" : "HW breakpoint at CPL 3:",
         exit_name(x), "debug exit");
  vm_fini(&v);
}

/* int 0x80 from CPL 3 through a DPL 3 gate; #GP/#NP/#SS/#TS handlers
   record an error code, so a refused delivery would show up there. */
static void probe_int80(void) {
  struct vm v;
  vm_init(&v, 3);
  static const uint8_t user[] = {0xcd, 0x80, 0xe6, 0xeb};
  /* mov [0x30000], rsp; iretq */
  static const uint8_t h80[] = {0x48, 0x89, 0x24, 0x25, 0x00,
                                0x00, 0x03, 0x00, 0x48, 0xcf};
  /* pop rax; mov [0x30010], rax; hlt */
  static const uint8_t hflt[] = {0x58, 0x48, 0x89, 0x04, 0x25,
                                 0x10, 0x00, 0x03, 0x00, 0xf4};
  code(&v, CODE, user, sizeof(user));
  code(&v, CODE + 0x100, h80, sizeof(h80));
  code(&v, CODE + 0x300, hflt, sizeof(hflt));
  gate(&v, 0x80, CODE + 0x100, 3);
  for (unsigned vec = 10; vec <= 14; vec++)
    gate(&v, vec, CODE + 0x300, 0);
  struct kvm_regs g;
  set_rflags(&v, 0x3002);
  int x = run(&v);
  ioctl(v.vcpu, KVM_GET_REGS, &g);
  char buf[128];
  snprintf(buf, sizeof(buf), "%s at rip 0x%llx", exit_name(x),
           (unsigned long long)g.rip);
  report("int 0x80 from CPL 3:", buf, "handler runs, iretq, I/O exit");
  vm_fini(&v);
}

/* syscall from CPL 3 and sysretq back. */
static void probe_sysret(void) {
  struct vm v;
  vm_init(&v, 3);
  static const uint8_t user[] = {0x0f, 0x05, 0xe6, 0xeb};
  /* sysretq */
  static const uint8_t hsys[] = {0x48, 0x0f, 0x07};
  /* pop rax; mov [0x30010], rax; hlt */
  static const uint8_t hflt[] = {0x58, 0x48, 0x89, 0x04, 0x25,
                                 0x10, 0x00, 0x03, 0x00, 0xf4};
  code(&v, CODE, user, sizeof(user));
  code(&v, CODE + 0x200, hsys, sizeof(hsys));
  code(&v, CODE + 0x300, hflt, sizeof(hflt));
  for (unsigned vec = 10; vec <= 14; vec++)
    gate(&v, vec, CODE + 0x300, 0);
  struct {
    struct kvm_msrs h;
    struct kvm_msr_entry e[3];
  } m = {.h.nmsrs = 3,
         .e = {{.index = 0xc0000081, .data = 0x0023001000000000ull},
               {.index = 0xc0000082, .data = CODE + 0x200},
               {.index = 0xc0000084, .data = 0x47700}}};
  ioctl(v.vcpu, KVM_SET_MSRS, &m);
  struct kvm_regs g;
  set_rflags(&v, 0x3202);
  int x = run(&v);
  ioctl(v.vcpu, KVM_GET_REGS, &g);
  char buf[160];
  snprintf(buf, sizeof(buf), "%s at rip 0x%llx%s", exit_name(x),
           (unsigned long long)g.rip,
           x == KVM_EXIT_HLT ? " (a fault handler ran: #GP on sysretq)" : "");
  report("syscall / sysretq:", buf, "I/O exit after sysretq");
  vm_fini(&v);
}

/* An interrupt injected while CPL 3 code runs with IOPL 3: the RFLAGS
   image pushed for the handler. */
static void probe_iopl(void) {
  struct vm v;
  vm_init(&v, 3);
  /* out 0xec, al; jmp $ */
  static const uint8_t user[] = {0xe6, 0xec, 0xeb, 0xfe};
  /* mov rax, [rsp + 16]; mov [0x30000], rax; out 0xeb, al */
  static const uint8_t h[] = {0x48, 0x8b, 0x44, 0x24, 0x10, 0x48, 0x89, 0x04,
                              0x25, 0x00, 0x00, 0x03, 0x00, 0xe6, 0xeb};
  code(&v, CODE, user, sizeof(user));
  code(&v, CODE + 0x100, h, sizeof(h));
  gate(&v, 0x40, CODE + 0x100, 0);
  set_rflags(&v, 0x3202);
  int x = run(&v); /* the out 0xec */
  for (int i = 0; i < 4 && x == KVM_EXIT_IO && v.run->io.port == 0xec; i++) {
    if (v.run->ready_for_interrupt_injection) {
      struct kvm_interrupt irq = {.irq = 0x40};
      ioctl(v.vcpu, KVM_INTERRUPT, &irq);
    } else {
      v.run->request_interrupt_window = 1;
    }
    x = run(&v);
    if (x == KVM_EXIT_IRQ_WINDOW_OPEN) {
      v.run->request_interrupt_window = 0;
      struct kvm_interrupt irq = {.irq = 0x40};
      ioctl(v.vcpu, KVM_INTERRUPT, &irq);
      x = run(&v);
    }
  }
  char buf[128];
  snprintf(buf, sizeof(buf), "%s, pushed RFLAGS 0x%llx", exit_name(x),
           (unsigned long long)*(uint64_t *)(v.mem + 0x30000));
  report("interrupt frame at CPL 3, IOPL 3:", buf, "0x3202");
  vm_fini(&v);
}

/* pushfq at CPL 3 against the RFLAGS set with KVM_SET_REGS (IOPL 3, IF
   clear, as the mode helper sets them for CPL 3). */
static void probe_pushf(void) {
  struct vm v;
  vm_init(&v, 3);
  /* pushfq; pop rax; out 0xec, al */
  static const uint8_t user[] = {0x9c, 0x58, 0xe6, 0xec};
  code(&v, CODE, user, sizeof(user));
  struct kvm_regs g;
  set_rflags(&v, 0x3002);
  int x = run(&v);
  ioctl(v.vcpu, KVM_GET_REGS, &g);
  char buf[128];
  snprintf(buf, sizeof(buf), "%s, pushed 0x%llx, RFLAGS 0x%llx", exit_name(x),
           (unsigned long long)g.rax, (unsigned long long)g.rflags);
  report("pushfq at CPL 3, RFLAGS 0x3002:", buf, "0x3002");
  vm_fini(&v);
}

/* cpuid at CPL 3 against the table set with KVM_SET_CPUID2. */
static void probe_cpuid(void) {
  struct vm v;
  vm_init(&v, 3);
  struct {
    struct kvm_cpuid2 c;
    struct kvm_cpuid_entry2 e[1];
  } cpuid = {.c.nent = 1, .e = {{.function = 0x40000000, .ebx = 0x11111111}}};
  ioctl(v.vcpu, KVM_SET_CPUID2, &cpuid);
  /* mov eax, 0x40000000; cpuid; out 0xeb, al */
  static const uint8_t c[] = {0xb8, 0x00, 0x00, 0x00, 0x40,
                              0x0f, 0xa2, 0xe6, 0xeb};
  code(&v, CODE, c, sizeof(c));
  struct kvm_regs g;
  set_rflags(&v, 0x3002);
  int x = run(&v);
  ioctl(v.vcpu, KVM_GET_REGS, &g);
  char buf[128];
  snprintf(buf, sizeof(buf), "%s, ebx 0x%llx", exit_name(x),
           (unsigned long long)g.rbx);
  report("cpuid 0x40000000 at CPL 3:", buf, "ebx 0x11111111");
  vm_fini(&v);
}

/* RFLAGS.AC in a CPL 0 handler entered from CPL 3 through a 64-bit
   interrupt gate (delivery clears TF, NT, RF, VM and IF, not AC). */
static void probe_ac(void) {
  struct vm v;
  vm_init(&v, 3);
  /* push 0x40202; popfq; mov eax, [0x30001] (#AC: CR0.AM is set); jmp $ */
  static const uint8_t user[] = {0x68, 0x02, 0x02, 0x04, 0x00, 0x9d, 0x8b, 0x04,
                                 0x25, 0x01, 0x00, 0x03, 0x00, 0xeb, 0xfe};
  /* pushfq; pop rax; mov [0x30000], rax; mov rax, [rsp + 24];
     mov [0x30008], rax; out 0xeb, al */
  static const uint8_t h[] = {0x9c, 0x58, 0x48, 0x89, 0x04, 0x25, 0x00,
                              0x00, 0x03, 0x00, 0x48, 0x8b, 0x44, 0x24,
                              0x18, 0x48, 0x89, 0x04, 0x25, 0x08, 0x00,
                              0x03, 0x00, 0xe6, 0xeb};
  code(&v, CODE, user, sizeof(user));
  code(&v, CODE + 0x100, h, sizeof(h));
  gate(&v, 17, CODE + 0x100, 0);
  int x = run(&v);
  char buf[128];
  snprintf(buf, sizeof(buf), "%s, RFLAGS 0x%llx, frame RFLAGS 0x%llx",
           exit_name(x), (unsigned long long)*(uint64_t *)(v.mem + 0x30000),
           (unsigned long long)*(uint64_t *)(v.mem + 0x30008));
  report("#AC handler's RFLAGS.AC:", buf, "AC (0x40000) set in both");
  vm_fini(&v);
}

/* A misaligned 16-byte operand of a legacy SSE instruction at CPL 3. */
static void probe_sse_align(void) {
  struct vm v;
  vm_init(&v, 3);
  /* addps xmm0, [0x30001]; jmp $ */
  static const uint8_t user[] = {0x0f, 0x58, 0x04, 0x25, 0x01,
                                 0x00, 0x03, 0x00, 0xeb, 0xfe};
  code(&v, CODE, user, sizeof(user));
  for (unsigned vec = 6; vec <= 13; vec += 7) {
    /* mov byte [0x30010], vec; out 0xeb, al */
    uint8_t h[] = {0xc6, 0x04, 0x25,         0x10, 0x00,
                   0x03, 0x00, (uint8_t)vec, 0xe6, 0xeb};
    code(&v, CODE + 0x100 * vec, h, sizeof(h));
    gate(&v, vec, CODE + 0x100 * vec, 0);
  }
  int x = run(&v);
  char buf[128];
  snprintf(buf, sizeof(buf), "%s, vector %u", exit_name(x), v.mem[0x30010]);
  report("addps xmm0, [misaligned] at CPL 3:", buf, "vector 13 (#GP)");
  vm_fini(&v);
}

/* KVM_GET_FPU and MXCSR (a KVM API property, not PVM's). */
static void probe_fpu_mxcsr(void) {
  struct vm v;
  vm_init(&v, 0);
  struct kvm_fpu f;
  struct kvm_xsave x;
  ioctl(v.vcpu, KVM_GET_FPU, &f);
  ioctl(v.vcpu, KVM_GET_XSAVE, &x);
  char buf[128];
  snprintf(buf, sizeof(buf), "KVM_GET_FPU mxcsr 0x%x, XSAVE mxcsr 0x%x",
           f.mxcsr, x.region[6]);
  report("MXCSR of a new vCPU:", buf, "KVM_GET_FPU leaves mxcsr out too");
  vm_fini(&v);
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* mov ecx, 10000000; dec ecx (49); jnz; out 0xeb, al (32-bit code) */
static const uint8_t c32[] = {0xb9, 0x80, 0x96, 0x98, 0x00,
                              0x49, 0x75, 0xfd, 0xe6, 0xeb};

/* Time a run of a dec/jnz loop of 10M iterations at CPL 3, in 64-bit mode
   (compat 0) or in compatibility mode (CS 0x23: L=0, D=1, DPL 3). */
static double loop_ns(struct vm *v, int compat) {
  /* the same in 64-bit code (dec ecx is ff c9) */
  static const uint8_t c64[] = {0xb9, 0x80, 0x96, 0x98, 0x00, 0xff,
                                0xc9, 0x75, 0xfc, 0xe6, 0xeb};
  code(v, CODE, compat ? c32 : c64, compat ? sizeof(c32) : sizeof(c64));
  struct kvm_regs g = {.rip = CODE, .rsp = 0x80000, .rflags = 0x3002};
  ioctl(v->vcpu, KVM_SET_REGS, &g);
  double t = now_ns();
  int x = run(v);
  t = now_ns() - t;
  ioctl(v->vcpu, KVM_GET_REGS, &g);
  if (x != KVM_EXIT_IO || g.rcx != 0)
    return -1;
  return t / 1e7;
}

/* 32-bit compatibility-mode code at CPL 3: is it run natively (the loop
   as fast as 64-bit code's), do 32-bit-only instructions give the right
   results, and what does exception delivery to the 64-bit IDT push? */
static void probe_compat(void) {
  struct vm v;
  vm_init(&v, 3);
  struct kvm_sregs s;
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  struct kvm_segment cs64 = s.cs;
  double t64 = loop_ns(&v, 0);
  seg(&s.cs, 0x23, 0xb, 3, 0, 1);
  ioctl(v.vcpu, KVM_SET_SREGS, &s);
  double t32 = loop_ns(&v, 1);
  char buf[200];
  snprintf(buf, sizeof(buf), "%.2f ns per iteration (64-bit %.2f)", t32, t64);
  report("dec/jnz loop in compat mode, CPL 3:", buf, "both native, equal");

  /* The same loop entered from 64-bit CPL 3 code by a far return, in
     case only the mode set with KVM_SET_SREGS is emulated:
     push 0x23; push CODE + 0x20; retfq */
  s.cs = cs64;
  ioctl(v.vcpu, KVM_SET_SREGS, &s);
  static const uint8_t far[] = {0x6a, 0x23, 0x68, 0x20, 0x00,
                                0x01, 0x00, 0x48, 0xcb};
  code(&v, CODE, far, sizeof(far));
  code(&v, CODE + 0x20, c32, sizeof(c32));
  struct kvm_regs r = {.rip = CODE, .rsp = 0x80000, .rflags = 0x3002};
  ioctl(v.vcpu, KVM_SET_REGS, &r);
  double t = now_ns();
  int x = run(&v);
  t = now_ns() - t;
  ioctl(v.vcpu, KVM_GET_REGS, &r);
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  snprintf(buf, sizeof(buf), "%s, cs 0x%x, ecx %llu, %.2f ns per iteration",
           exit_name(x), s.cs.selector, (unsigned long long)r.rcx, t / 1e7);
  report("same, entered by retfq from 64-bit:", buf, "native");
  seg(&s.cs, 0x23, 0xb, 3, 0, 1);
  ioctl(v.vcpu, KVM_SET_SREGS, &s);

  /* ud2 at CODE + 4 (after mov eax, esp): the 64-bit #UD gate's handler
     stores the 40-byte frame at 0x30000 */
  static const uint8_t u[] = {0x89, 0xe0, 0x90, 0x90, 0x0f, 0x0b};
  /* mov rax,[rsp]; mov [0x30000],rax; ... five times; out 0xeb, al */
  uint8_t h[80], *p = h;
  for (int i = 0; i < 5; i++) {
    uint8_t ld[] = {0x48, 0x8b, 0x44, 0x24, (uint8_t)(8 * i)};
    uint8_t st[] = {0x48, 0x89, 0x04, 0x25, (uint8_t)(8 * i), 0x00, 0x03, 0x00};
    memcpy(p, ld, 5);
    memcpy(p + 5, st, 8);
    p += 13;
  }
  p[0] = 0xe6;
  p[1] = 0xeb;
  code(&v, CODE, u, sizeof(u));
  code(&v, CODE + 0x100, h, (size_t)(p + 2 - h));
  gate(&v, 6, CODE + 0x100, 0);
  r = (struct kvm_regs){.rip = CODE, .rsp = 0x80000, .rflags = 0x3002};
  ioctl(v.vcpu, KVM_SET_REGS, &r);
  x = run(&v);
  uint64_t *f = (uint64_t *)(v.mem + 0x30000);
  snprintf(buf, sizeof(buf),
           "%s, frame rip 0x%llx cs 0x%llx rsp 0x%llx ss 0x%llx", exit_name(x),
           (unsigned long long)f[0], (unsigned long long)f[1],
           (unsigned long long)f[3], (unsigned long long)f[4]);
  report("ud2 in compat mode (64-bit IDT):", buf,
         "rip 0x10004 cs 0x23 rsp 0x80000 ss 0x2b");
  vm_fini(&v);
}

/* One compat-mode instruction case: bytes run from CODE (then out 0xeb),
   and the EAX they must leave, or the vector they must raise. */
struct compat_case {
  const char *name;
  uint8_t len;
  uint8_t bytes[15];
  uint32_t eax; /* expected */
  int vector;   /* expected exception, or -1 */
};

static const struct compat_case compat_cases[] = {
    {"inc eax (40)", 1, {0x40}, 0x16, -1},
    {"dec eax (48)", 1, {0x48}, 0x14, -1},
    /* 41 is a REX prefix in 64-bit mode: mov r8d, ebx would leave eax */
    {"inc ecx; mov eax, ebx", 3, {0x41, 0x89, 0xd8}, 0x30000, -1},
    {"pusha/popa", 4, {0x60, 0x61, 0x89, 0xe0}, 0x80000, -1},
    {"pusha; pop eax", 2, {0x60, 0x58}, 0x30020, -1},
    {"daa", 3, {0x04, 0x27, 0x27}, 0x42, -1},
    {"das", 3, {0x2c, 0x07, 0x2f}, 0x08, -1},
    {"aaa", 3, {0x04, 0x05, 0x37}, 0x100, -1},
    {"aas", 3, {0x2c, 0x07, 0x3f}, 0xff08, -1},
    {"aam", 2, {0xd4, 0x0a}, 0x0201, -1},
    {"aad", 4, {0xb4, 0x03, 0xd5, 0x0a}, 0x33, -1},
    {"push cs; pop eax", 2, {0x0e, 0x58}, 0x23, -1},
    {"push ds; pop eax", 2, {0x1e, 0x58}, 0x2b, -1},
    {"push 0x2b; pop ds", 5, {0x6a, 0x2b, 0x1f, 0x89, 0xe0}, 0x80000, -1},
    {"bound (in range)", 2, {0x62, 0x03}, 0x15, -1},
    {"bound (#BR)", 7, {0xb8, 0x00, 0x02, 0x00, 0x00, 0x62, 0x03}, 0, 5},
    {"into (#OF)", 5, {0xb0, 0x7f, 0x04, 0x01, 0xce}, 0, 4},
    {"arpl ax, cx", 2, {0x63, 0xc8}, 0x17, -1},
    {"les eax, [ebx+0x30]", 3, {0xc4, 0x43, 0x30}, 0x1234, -1},
    {"lds eax, [ebx+0x30]", 3, {0xc5, 0x43, 0x30}, 0x1234, -1},
    {"jecxz (taken)", 6, {0x31, 0xc9, 0xe3, 0x02, 0xb0, 0x01}, 0x15, -1},
    {"loop (ecx 3)", 6, {0xb0, 0x00, 0xfe, 0xc0, 0xe2, 0xfc}, 3, -1},
    {"call far 0x23:; retf",
     7,
     {0x9a, 0x40, 0x00, 0x01, 0x00, 0x23, 0x00},
     0x10007,
     -1},
    {"push -1; pop eax", 3, {0x6a, 0xff, 0x58}, 0xffffffff, -1},
    {"xlat", 1, {0xd7}, 0x99, -1},
    {"mul ecx", 2, {0xf7, 0xe1}, 0x3f, -1},
    {"popcnt eax, eax", 4, {0xf3, 0x0f, 0xb8, 0xc0}, 3, -1},
    {"rep stosd", 5, {0xf3, 0xab, 0x8b, 0x47, 0xfc}, 0x15, -1},
    {"movd/paddd/movd",
     12,
     {0x66, 0x0f, 0x6e, 0xc0, 0x66, 0x0f, 0xfe, 0xc0, 0x66, 0x0f, 0x7e, 0xc0},
     0x2a,
     -1},
};

/* Run each case alone in compat mode; the exception gates are DPL 3
   (into) and lead to 64-bit CPL 0 stubs that store the vector. */
static void probe_compat_cases(void) {
  struct vm v;
  vm_init(&v, 3);
  struct kvm_sregs s;
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  seg(&s.cs, 0x23, 0xb, 3, 0, 1);
  ioctl(v.vcpu, KVM_SET_SREGS, &s);
  for (unsigned vec = 0; vec < 32; vec++) {
    /* mov byte [0x30100], vec; out 0xec, al */
    uint8_t h[] = {0xc6, 0x04, 0x25,         0x00, 0x01,
                   0x03, 0x00, (uint8_t)vec, 0xe6, 0xec};
    code(&v, CODE + 0x400 + 16 * vec, h, sizeof(h));
    gate(&v, vec, CODE + 0x400 + 16 * vec, 3);
  }
  char bad[1024] = "";
  size_t nbad = 0, n = sizeof(compat_cases) / sizeof(compat_cases[0]);
  uint64_t upper = 0;
  for (size_t i = 0; i < n; i++) {
    const struct compat_case *k = &compat_cases[i];
    uint8_t c[32];
    memcpy(c, k->bytes, k->len);
    c[k->len] = 0xe6;
    c[k->len + 1] = 0xeb;
    code(&v, CODE, c, k->len + 2u);
    static const uint8_t far[] = {0x8b, 0x04, 0x24, 0xcb}; /* mov eax,[esp] */
    code(&v, CODE + 0x40, far, sizeof(far));
    memset(v.mem + 0x30000, 0, 0x200);
    *(uint32_t *)(v.mem + 0x30004) = 0x100;  /* bound: [0, 0x100] */
    *(uint32_t *)(v.mem + 0x30030) = 0x1234; /* les/lds: 0x2b:0x1234 */
    *(uint16_t *)(v.mem + 0x30034) = 0x2b;
    v.mem[0x30015] = 0x99; /* xlat: [ebx + 0x15] */
    v.mem[0x30100] = 0xff;
    /* upper halves set, to see what 32-bit writes do to them */
    struct kvm_regs g = {.rip = CODE,
                         .rsp = 0x80000,
                         .rflags = 0x3002,
                         .rax = 0xdead000000000015ull,
                         .rcx = 3,
                         .rbx = 0x30000,
                         .rdi = 0x30020};
    ioctl(v.vcpu, KVM_SET_REGS, &g);
    int x = run(&v);
    ioctl(v.vcpu, KVM_GET_REGS, &g);
    int port = x == KVM_EXIT_IO ? v.run->io.port : -1;
    int vec = port == 0xec ? v.mem[0x30100] : -1;
    if (i == 0)
      upper = g.rax >> 32;
    bool ok = k->vector >= 0 ? vec == k->vector
                             : port == 0xeb && (uint32_t)g.rax == k->eax;
    if (!ok) {
      nbad++;
      size_t l = strlen(bad);
      if (port == 0xeb)
        snprintf(bad + l, sizeof(bad) - l, "%s%s: eax 0x%x", l ? "; " : "",
                 k->name, (uint32_t)g.rax);
      else if (vec >= 0)
        snprintf(bad + l, sizeof(bad) - l, "%s%s: vector %d", l ? "; " : "",
                 k->name, vec);
      else
        snprintf(bad + l, sizeof(bad) - l, "%s%s: %s", l ? "; " : "", k->name,
                 exit_name(x));
    }
  }
  char buf[1200];
  snprintf(buf, sizeof(buf), "%zu of %zu right%s%s; inc eax: rax[63:32] 0x%llx",
           n - nbad, n, nbad ? ", wrong: " : "", bad,
           (unsigned long long)upper);
  report("32-bit-only instructions, compat:", buf, "all right, rax[63:32] 0");
  vm_fini(&v);
}

int main(void) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    printf("no usable /dev/kvm here\n");
    return 0;
  }
  probe_paging32();
  probe_dirty_reads();
  probe_debug(1);
  probe_debug(0);
  probe_int80();
  probe_sysret();
  probe_iopl();
  probe_pushf();
  probe_cpuid();
  probe_fpu_mxcsr();
  probe_ac();
  probe_sse_align();
  probe_compat();
  probe_compat_cases();
  return 0;
}
