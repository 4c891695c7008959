/*
 * libvmm test kernel: a multiboot v1 kernel (see start.asm) that runs in
 * 64-bit long mode, prints on a 16550 UART at 0x3f8, takes exceptions
 * through its own IDT, reads QEMU's fw_cfg signature, and ends through an
 * isa-debug-exit port at 0xf4 (status 0 on success, so vmmrun and QEMU exit
 * with (0 << 1) | 1 = 1). It is built for QEMU's multiboot loader too
 * (an ELF32 file), so the same image checks libvmm against QEMU.
 *
 * Command line words: "exit=N" writes N to the exit port instead of the
 * result; "loop=N" spins N iterations before exiting (for timeout tests).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COM1 0x3f8
#define EXIT_PORT 0xf4
#define MB_MAGIC_EAX 0x2badb002u

struct mb_info {
  uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
  uint32_t mods_count, mods_addr;
  uint32_t syms[4];
  uint32_t mmap_length, mmap_addr;
};

struct frame {
  uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
  uint64_t vector, error;
  uint64_t rip, cs, rflags, rsp, ss;
};

static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(uint16_t port, uint16_t v) {
  __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static void putc_(char c) {
  for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
    ;
  outb(COM1, (uint8_t)c);
}

static void puts_(const char *s) {
  for (; *s; s++) {
    if (*s == '\n')
      putc_('\r');
    putc_(*s);
  }
}

static void putx(uint64_t v) {
  char b[19];
  int i = 18;
  b[i] = 0;
  do {
    b[--i] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  b[--i] = 'x';
  b[--i] = '0';
  puts_(b + i);
}

static void putu(uint64_t v) {
  char b[21];
  int i = 20;
  b[i] = 0;
  do {
    b[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  puts_(b + i);
}

static void uart_init(void) {
  outb(COM1 + 1, 0x00); /* no interrupts */
  outb(COM1 + 3, 0x80); /* DLAB */
  outb(COM1 + 0, 0x01); /* 115200 baud */
  outb(COM1 + 1, 0x00);
  outb(COM1 + 3, 0x03); /* 8N1 */
  outb(COM1 + 2, 0xc7); /* FIFOs on, cleared */
  outb(COM1 + 4, 0x03); /* DTR, RTS */
}

/* ---- IDT ---------------------------------------------------------------- */

struct idt_entry {
  uint16_t off0, sel;
  uint8_t ist, type;
  uint16_t off1;
  uint32_t off2, zero;
} __attribute__((packed));

static struct idt_entry idt[32] __attribute__((aligned(16)));
extern char isr0[], isr1[], isr2[], isr3[], isr4[], isr5[], isr6[], isr7[],
    isr8[], isr9[], isr10[], isr11[], isr12[], isr13[], isr14[], isr15[],
    isr16[], isr17[], isr18[], isr19[], isr20[], isr21[], isr22[], isr23[],
    isr24[], isr25[], isr26[], isr27[], isr28[], isr29[], isr30[], isr31[];
static char *const isrs[32] = {
    isr0,  isr1,  isr2,  isr3,  isr4,  isr5,  isr6,  isr7,
    isr8,  isr9,  isr10, isr11, isr12, isr13, isr14, isr15,
    isr16, isr17, isr18, isr19, isr20, isr21, isr22, isr23,
    isr24, isr25, isr26, isr27, isr28, isr29, isr30, isr31};

static void idt_init(void) {
  for (int i = 0; i < 32; i++) {
    uint64_t a = (uint64_t)isrs[i];
    idt[i] = (struct idt_entry){(uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16),
                                (uint32_t)(a >> 32), 0};
  }
  struct {
    uint16_t limit;
    uint64_t base;
  } __attribute__((packed)) ptr = {sizeof(idt) - 1, (uint64_t)idt};
  __asm__ volatile("lidt %0" : : "m"(ptr));
}

/* What the last trap saw, and where to resume after a fault. */
static volatile uint64_t trap_vector = ~0ull, trap_error, trap_cr2;
static volatile uint64_t trap_resume;
static volatile unsigned trap_count;

void trap(struct frame *f) {
  trap_vector = f->vector;
  trap_error = f->error;
  trap_count++;
  if (f->vector == 14) {
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    trap_cr2 = cr2;
  }
  if (f->vector == 3)
    return; /* a trap: RIP is already past the int3 */
  if (trap_resume) {
    f->rip = trap_resume;
    trap_resume = 0;
    return;
  }
  puts_("unexpected exception ");
  putu(f->vector);
  puts_(" at ");
  putx(f->rip);
  puts_("\n");
  outb(EXIT_PORT, 0x7f);
  for (;;)
    __asm__ volatile("cli; hlt");
}

static bool test_breakpoint(void) {
  trap_vector = ~0ull;
  __asm__ volatile("int3");
  return trap_vector == 3;
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

/* ---- fw_cfg ------------------------------------------------------------- */

static bool fw_cfg_signature(void) {
  outw(0x510, 0x0000);
  char sig[4];
  for (int i = 0; i < 4; i++)
    sig[i] = (char)inb(0x511);
  return sig[0] == 'Q' && sig[1] == 'E' && sig[2] == 'M' && sig[3] == 'U';
}

/* ---- command line ------------------------------------------------------- */

static const char *word_value(const char *cmdline, const char *key) {
  for (const char *p = cmdline; p && *p; p++) {
    if (p != cmdline && p[-1] != ' ')
      continue;
    const char *k = key, *q = p;
    while (*k && *q == *k)
      k++, q++;
    if (!*k && *q == '=')
      return q + 1;
  }
  return NULL;
}

static uint64_t parse_u(const char *s) {
  uint64_t v = 0;
  while (s && *s >= '0' && *s <= '9')
    v = v * 10 + (uint64_t)(*s++ - '0');
  return v;
}

void kmain(uint32_t magic, uint32_t info_addr) {
  uart_init();
  puts_("libvmm test kernel\n");
  bool ok = magic == MB_MAGIC_EAX;
  puts_(ok ? "multiboot: ok\n" : "multiboot: bad magic\n");

  const struct mb_info *mb = (const struct mb_info *)(uintptr_t)info_addr;
  const char *cmdline = "";
  if (ok && (mb->flags & 1)) {
    puts_("memory: lower ");
    putu(mb->mem_lower);
    puts_(" KiB, upper ");
    putu(mb->mem_upper);
    puts_(" KiB\n");
  }
  if (ok && (mb->flags & 4) && mb->cmdline)
    cmdline = (const char *)(uintptr_t)mb->cmdline;
  puts_("cmdline: ");
  puts_(cmdline);
  puts_("\n");

  idt_init();
  bool bp = test_breakpoint(), de = test_divide(), pf = test_page_fault();
  puts_(bp ? "idt: #BP ok\n" : "idt: #BP FAILED\n");
  puts_(de ? "idt: #DE ok\n" : "idt: #DE FAILED\n");
  puts_(pf ? "idt: #PF ok\n" : "idt: #PF FAILED\n");
  ok = ok && bp && de && pf;

  bool fw = fw_cfg_signature();
  puts_(fw ? "fw_cfg: QEMU\n" : "fw_cfg: absent\n");

  uint64_t spin = parse_u(word_value(cmdline, "loop"));
  for (volatile uint64_t i = 0; i < spin; i++)
    ;

  const char *exit_word = word_value(cmdline, "exit");
  uint32_t status = exit_word ? (uint32_t)parse_u(exit_word) : (ok ? 0 : 1);
  puts_(ok ? "result: pass\n" : "result: FAIL\n");
  outl(EXIT_PORT, status);
  /* Not reached when an exit device is present. */
  for (;;)
    __asm__ volatile("cli; hlt");
}
