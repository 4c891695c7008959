/*
 * Freestanding runtime for libvmm's guest kernels; see klib.h.
 */
#include "klib.h"

static void wait_thre(void) {
  for (int i = 0; i < 100000 && !(inb(KLIB_COM1 + 5) & 0x20); i++)
    ;
}

void klib_console_init(void) {
  outb(KLIB_COM1 + 1, 0x00); /* no interrupts */
  outb(KLIB_COM1 + 3, 0x80); /* DLAB */
  outb(KLIB_COM1 + 0, 0x01); /* 115200 baud */
  outb(KLIB_COM1 + 1, 0x00);
  outb(KLIB_COM1 + 3, 0x03); /* 8N1 */
  outb(KLIB_COM1 + 2, 0xc7); /* FIFOs on, cleared */
  outb(KLIB_COM1 + 4, 0x03); /* DTR, RTS */
}

void kputc(char c) {
  wait_thre();
  outb(KLIB_COM1, (uint8_t)c);
}

void kputs(const char *s) {
  for (; *s; s++) {
    if (*s == '\n')
      kputc('\r');
    kputc(*s);
  }
}

void kputx(uint64_t v) {
  char b[19];
  int i = 18;
  b[i] = 0;
  do {
    b[--i] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  b[--i] = 'x';
  b[--i] = '0';
  kputs(b + i);
}

void kputu(uint64_t v) {
  char b[21];
  int i = 20;
  b[i] = 0;
  do {
    b[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  kputs(b + i);
}

/* ---- IDT ---------------------------------------------------------------- */

struct idt_entry {
  uint16_t off0, sel;
  uint8_t ist, type;
  uint16_t off1;
  uint32_t off2, zero;
} __attribute__((packed));

static struct idt_entry idt[32] __attribute__((aligned(16)));
static klib_trap_fn handlers[32];

extern char isr0[], isr1[], isr2[], isr3[], isr4[], isr5[], isr6[], isr7[],
    isr8[], isr9[], isr10[], isr11[], isr12[], isr13[], isr14[], isr15[],
    isr16[], isr17[], isr18[], isr19[], isr20[], isr21[], isr22[], isr23[],
    isr24[], isr25[], isr26[], isr27[], isr28[], isr29[], isr30[], isr31[];
static char *const isrs[32] = {
    isr0,  isr1,  isr2,  isr3,  isr4,  isr5,  isr6,  isr7,
    isr8,  isr9,  isr10, isr11, isr12, isr13, isr14, isr15,
    isr16, isr17, isr18, isr19, isr20, isr21, isr22, isr23,
    isr24, isr25, isr26, isr27, isr28, isr29, isr30, isr31};

void klib_idt_init(void) {
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

void klib_set_trap(unsigned vector, klib_trap_fn fn) {
  if (vector < 32)
    handlers[vector] = fn;
}

/* Called by isr_common in start.asm. */
void trap(struct frame *f);
void trap(struct frame *f) {
  if (f->vector < 32 && handlers[f->vector] != NULL) {
    handlers[f->vector](f);
    return;
  }
  kputs("unexpected exception ");
  kputu(f->vector);
  kputs(" at ");
  kputx(f->rip);
  kputs("\n");
  klib_exit(0x7f);
}

/* ---- command line ------------------------------------------------------- */

const char *klib_arg(const char *cmdline, const char *key) {
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

uint64_t klib_parse_u(const char *s, uint64_t dflt) {
  if (s == NULL || *s < '0' || *s > '9')
    return dflt;
  uint64_t v = 0;
  while (*s >= '0' && *s <= '9')
    v = v * 10 + (uint64_t)(*s++ - '0');
  return v;
}

const char *klib_cmdline(uint32_t magic, uint32_t info) {
  const struct mb_info *mb = (const struct mb_info *)(uintptr_t)info;
  if (magic != KLIB_MB_MAGIC || !(mb->flags & 4) || mb->cmdline == 0)
    return "";
  return (const char *)(uintptr_t)mb->cmdline;
}

/* ---- user mode ---------------------------------------------------------- */

uint64_t user_return_rsp; /* used by syscall_entry in start.asm */
extern char syscall_entry[];

void klib_syscall_init(void) {
  wrmsr(0xc0000080, rdmsr(0xc0000080) | 1);       /* EFER.SCE */
  wrmsr(0xc0000081, (0x10ull << 48) | (0x08ull << 32)); /* STAR */
  wrmsr(0xc0000082, (uint64_t)syscall_entry);     /* LSTAR */
  wrmsr(0xc0000084, 0x700);                       /* FMASK: TF, IF, DF */
}

void klib_exit(uint32_t status) {
  outl(KLIB_EXIT_PORT, status);
  for (;;)
    __asm__ volatile("cli; hlt");
}
