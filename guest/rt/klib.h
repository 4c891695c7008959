/*
 * Freestanding runtime shared by libvmm's guest kernels (tests/kernel and
 * bench/kernel): port I/O, a polled 16550 console, an IDT with per-vector
 * C handlers, the kernel command line, MSRs, CPL 3 entry, and the
 * isa-debug-exit port. Built with -mgeneral-regs-only; no libc.
 */
#ifndef LIBVMM_GUEST_KLIB_H
#define LIBVMM_GUEST_KLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KLIB_COM1 0x3f8
#define KLIB_EXIT_PORT 0xf4
#define KLIB_MB_MAGIC 0x2badb002u

struct mb_info {
  uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
  uint32_t mods_count, mods_addr;
  uint32_t syms[4];
  uint32_t mmap_length, mmap_addr;
};

/* The frame isr_common (start.asm) builds. Handlers may change rip. */
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
static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (uint64_t)hi << 32 | lo;
}
static inline uint64_t rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return (uint64_t)hi << 32 | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v),
                   "d"((uint32_t)(v >> 32)));
}

void klib_console_init(void);
void kputc(char c);
void kputs(const char *s);
void kputx(uint64_t v);
void kputu(uint64_t v);

typedef void (*klib_trap_fn)(struct frame *f);
/* Install the IDT; vectors without a handler print and exit with 0x7f. */
void klib_idt_init(void);
void klib_set_trap(unsigned vector, klib_trap_fn fn);

/* Value of "key=..." in a space-separated command line, or NULL. */
const char *klib_arg(const char *cmdline, const char *key);
uint64_t klib_parse_u(const char *s, uint64_t dflt);
/* The multiboot command line ("" if none). */
const char *klib_cmdline(uint32_t magic, uint32_t info);

/* SYSCALL/SYSRET set up for klib_enter_user(). */
void klib_syscall_init(void);
/* Run fn at CPL 3 on user_stack until it does syscall with rax != 0. */
void klib_enter_user(void (*fn)(void), uint64_t user_stack);

/* Write status to the exit port; halts if no exit device is present. */
__attribute__((noreturn)) void klib_exit(uint32_t status);

#endif
