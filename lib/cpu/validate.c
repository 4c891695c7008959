/*
 * Architectural validity checks applied by the front end before any engine
 * sees a register state, so that both engines accept the same states and a
 * bad state is an error code rather than a failed VM entry.
 */
#include "../internal.h"
#include "x86.h"

int vmm__check_regs(const struct vmm_regs *regs) {
  /* Reserved: bits 3, 5, 15 and 22-63. VM86 mode is not supported. */
  const uint64_t reserved = (1ull << 3) | (1ull << 5) | (1ull << 15) |
                            ~((1ull << 22) - 1);
  if (regs->rflags & (reserved | X86_RFLAGS_VM))
    return VMM_EINVAL;
  return 0;
}

static bool is_code(const struct vmm_segment *s) {
  return s->s && (s->type & 0x8);
}

int vmm__check_sregs(const struct vmm_sregs *s) {
  const uint64_t cr0_valid = X86_CR0_PE | X86_CR0_MP | X86_CR0_EM |
                             X86_CR0_TS | X86_CR0_ET | X86_CR0_NE |
                             X86_CR0_WP | X86_CR0_AM | X86_CR0_NW |
                             X86_CR0_CD | X86_CR0_PG;
  if (s->cr0 & ~cr0_valid)
    return VMM_EINVAL;
  if ((s->cr0 & X86_CR0_PG) && !(s->cr0 & X86_CR0_PE))
    return VMM_EINVAL;
  if ((s->cr0 & X86_CR0_NW) && !(s->cr0 & X86_CR0_CD))
    return VMM_EINVAL;
  if (s->cr4 & ~X86_CR4_KNOWN)
    return VMM_EINVAL;
  if (s->cr8 & ~0xfull)
    return VMM_EINVAL;
  if (s->cr3 >> 52)
    return VMM_EINVAL;
  const uint64_t efer_valid =
      X86_EFER_SCE | X86_EFER_LME | X86_EFER_LMA | X86_EFER_NXE | X86_EFER_FFXSR;
  if (s->efer & ~efer_valid)
    return VMM_EINVAL;
  /* LMA is the result of LME and PG; long mode needs PAE. */
  bool lm = (s->efer & X86_EFER_LME) && (s->cr0 & X86_CR0_PG);
  if (lm != ((s->efer & X86_EFER_LMA) != 0))
    return VMM_EINVAL;
  if (lm && !(s->cr4 & X86_CR4_PAE))
    return VMM_EINVAL;
  if ((s->cr4 & X86_CR4_PCIDE) && !lm)
    return VMM_EINVAL;
  if (s->cr0 & X86_CR0_PE) {
    if (!s->cs.present || !is_code(&s->cs))
      return VMM_EINVAL;
    if (lm && s->cs.l && s->cs.db)
      return VMM_EINVAL;
  }
  if (!lm && s->cs.l)
    return VMM_EINVAL;
  if (s->gdt.padding[0] || s->idt.padding[0])
    return VMM_EINVAL;
  return 0;
}

int vmm__check_xcr0(uint64_t xcr0) {
  if (!(xcr0 & X86_XCR0_X87))
    return VMM_EINVAL;
  if ((xcr0 & X86_XCR0_AVX) && !(xcr0 & X86_XCR0_SSE))
    return VMM_EINVAL;
  uint64_t avx512 = X86_XCR0_OPMASK | X86_XCR0_ZMM_HI256 | X86_XCR0_HI16_ZMM;
  if ((xcr0 & avx512) && ((xcr0 & avx512) != avx512 || !(xcr0 & X86_XCR0_AVX)))
    return VMM_EINVAL;
  uint64_t mpx = X86_XCR0_BNDREGS | X86_XCR0_BNDCSR;
  if ((xcr0 & mpx) && (xcr0 & mpx) != mpx)
    return VMM_EINVAL;
  return 0;
}
