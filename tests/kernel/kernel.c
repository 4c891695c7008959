/*
 * libvmm test kernel: a multiboot v1 kernel (runtime in guest/rt) that runs
 * in 64-bit long mode, prints on a 16550 UART at 0x3f8, takes exceptions
 * through its own IDT, reads QEMU's fw_cfg signature, and ends through an
 * isa-debug-exit port at 0xf4 (status 0 on success, so vmmrun and QEMU exit
 * with (0 << 1) | 1 = 1). It is an ELF32 file, so QEMU's multiboot loader
 * boots the same image and keeps the kernel itself honest.
 *
 * Command line words: "exit=N" writes N to the exit port instead of the
 * result; "loop=N" spins N iterations before exiting (for timeout tests);
 * "bp=1" also tests int3 (#BP), which is off by default because this
 * project's KVM host (PVM) fails int3 at CPL 0 with an internal error.
 */
#include "klib.h"

static volatile uint64_t trap_vector = ~0ull, trap_error, trap_cr2;
static volatile uint64_t trap_resume;

static void on_trap(struct frame *f) {
  trap_vector = f->vector;
  trap_error = f->error;
  if (f->vector == 14) {
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    trap_cr2 = cr2;
  }
  if (f->vector != 3) { /* #BP is a trap: RIP is already past the int3 */
    f->rip = trap_resume;
    trap_resume = 0;
  }
}

static bool test_breakpoint(void) {
  trap_vector = ~0ull;
  __asm__ volatile("int3");
  return trap_vector == 3;
}

static bool test_invalid_opcode(void) {
  trap_vector = ~0ull;
  __asm__ volatile("lea 1f(%%rip), %%rax\n\t"
                   "mov %%rax, %0\n\t"
                   "ud2\n"
                   "1:"
                   : "=m"(trap_resume)
                   :
                   : "rax", "memory");
  return trap_vector == 6;
}

static bool test_divide(void) {
  trap_vector = ~0ull;
  __asm__ volatile("lea 1f(%%rip), %%rax\n\t"
                   "mov %%rax, %0\n\t"
                   "xor %%edx, %%edx\n\t"
                   "mov $1, %%eax\n\t"
                   "xor %%ecx, %%ecx\n\t"
                   "div %%ecx\n"
                   "1:"
                   : "=m"(trap_resume)
                   :
                   : "rax", "rcx", "rdx", "memory");
  return trap_vector == 0;
}

static bool test_page_fault(void) {
  /* 16 GiB is beyond the identity map built in start.asm. */
  volatile uint64_t *p = (volatile uint64_t *)0x400000000ull;
  trap_vector = ~0ull;
  __asm__ volatile("lea 1f(%%rip), %%rax\n\t"
                   "mov %%rax, %0\n\t"
                   "movq $1, (%1)\n"
                   "1:"
                   : "=m"(trap_resume)
                   : "r"(p)
                   : "rax", "memory");
  /* not present (P=0), write (W=1), supervisor */
  return trap_vector == 14 && trap_cr2 == (uint64_t)p && trap_error == 2;
}

static bool fw_cfg_signature(void) {
  outw(0x510, 0x0000);
  char sig[4];
  for (int i = 0; i < 4; i++)
    sig[i] = (char)inb(0x511);
  return sig[0] == 'Q' && sig[1] == 'E' && sig[2] == 'M' && sig[3] == 'U';
}

void kmain(uint32_t magic, uint32_t info);
void kmain(uint32_t magic, uint32_t info) {
  klib_console_init();
  kputs("libvmm test kernel\n");
  bool ok = magic == KLIB_MB_MAGIC;
  kputs(ok ? "multiboot: ok\n" : "multiboot: bad magic\n");

  const struct mb_info *mb = (const struct mb_info *)(uintptr_t)info;
  if (ok && (mb->flags & 1)) {
    kputs("memory: lower ");
    kputu(mb->mem_lower);
    kputs(" KiB, upper ");
    kputu(mb->mem_upper);
    kputs(" KiB\n");
  }
  const char *cmdline = klib_cmdline(magic, info);
  kputs("cmdline: ");
  kputs(cmdline);
  kputs("\n");

  klib_idt_init();
  klib_set_trap(0, on_trap);
  klib_set_trap(3, on_trap);
  klib_set_trap(6, on_trap);
  klib_set_trap(14, on_trap);
  bool de = test_divide(), ud = test_invalid_opcode(), pf = test_page_fault();
  kputs(de ? "idt: #DE ok\n" : "idt: #DE FAILED\n");
  kputs(ud ? "idt: #UD ok\n" : "idt: #UD FAILED\n");
  kputs(pf ? "idt: #PF ok\n" : "idt: #PF FAILED\n");
  ok = ok && de && ud && pf;
  if (klib_parse_u(klib_arg(cmdline, "bp"), 0)) {
    bool bp = test_breakpoint();
    kputs(bp ? "idt: #BP ok\n" : "idt: #BP FAILED\n");
    ok = ok && bp;
  }

  kputs(fw_cfg_signature() ? "fw_cfg: QEMU\n" : "fw_cfg: absent\n");

  uint64_t spin = klib_parse_u(klib_arg(cmdline, "loop"), 0);
  for (volatile uint64_t i = 0; i < spin; i++)
    ;

  kputs(ok ? "result: pass\n" : "result: FAIL\n");
  klib_exit((uint32_t)klib_parse_u(klib_arg(cmdline, "exit"), ok ? 0 : 1));
}
