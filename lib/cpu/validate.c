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

/* A feature bit of the CPUID table: leaf, register (0=eax..3=edx), bit. */
struct feature {
  uint64_t bit; /* the CR4 or EFER bit it enables */
  uint32_t leaf;
  uint8_t reg, pos;
};

static const struct feature cr4_features[] = {
    {X86_CR4_VME, 1, 3, 1},       {X86_CR4_PVI, 1, 3, 1},
    {X86_CR4_TSD, 1, 3, 4},       {X86_CR4_DE, 1, 3, 2},
    {X86_CR4_PSE, 1, 3, 3},       {X86_CR4_PAE, 1, 3, 6},
    {X86_CR4_MCE, 1, 3, 7},       {X86_CR4_PGE, 1, 3, 13},
    {X86_CR4_OSFXSR, 1, 3, 24},   {X86_CR4_OSXMMEXCPT, 1, 3, 25},
    {X86_CR4_VMXE, 1, 2, 5},      {X86_CR4_SMXE, 1, 2, 6},
    {X86_CR4_PCIDE, 1, 2, 17},    {X86_CR4_OSXSAVE, 1, 2, 26},
    {X86_CR4_FSGSBASE, 7, 1, 0},  {X86_CR4_SMEP, 7, 1, 7},
    {X86_CR4_SMAP, 7, 1, 20},     {X86_CR4_UMIP, 7, 2, 2},
    {X86_CR4_PKE, 7, 2, 3},       {X86_CR4_LA57, 7, 2, 16},
};

static const struct feature efer_features[] = {
    {X86_EFER_SCE, 0x80000001, 3, 11},
    {X86_EFER_NXE, 0x80000001, 3, 20},
    {X86_EFER_FFXSR, 0x80000001, 3, 25},
    {X86_EFER_LME, 0x80000001, 3, 29},
    {X86_EFER_LMA, 0x80000001, 3, 29},
};

static bool has_feature(const struct vmm_cpuid_entry *cpuid, size_t n,
                        const struct feature *f) {
  const struct vmm_cpuid_entry *e = vmm__cpuid_find(cpuid, n, f->leaf, 0);
  if (e == NULL)
    return false;
  uint32_t regs[4] = {e->eax, e->ebx, e->ecx, e->edx};
  return (regs[f->reg] >> f->pos) & 1;
}

/* Every enabled bit of value needs its CPUID feature. */
static bool features_ok(uint64_t value, const struct feature *fs, size_t nfs,
                        const struct vmm_cpuid_entry *cpuid, size_t n) {
  for (size_t i = 0; i < nfs; i++)
    if ((value & fs[i].bit) && !has_feature(cpuid, n, &fs[i]))
      return false;
  return true;
}

int vmm__check_sregs(const struct vmm_sregs *s,
                     const struct vmm_cpuid_entry *cpuid, size_t ncpuid) {
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
  /* The same states on every engine: a control bit is valid only if the
     vCPU's CPUID offers the feature, as hardware KVM insists. */
  if (!features_ok(s->cr4, cr4_features, VMM__ARRAY_SIZE(cr4_features), cpuid,
                   ncpuid) ||
      !features_ok(s->efer, efer_features, VMM__ARRAY_SIZE(efer_features),
                   cpuid, ncpuid))
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
