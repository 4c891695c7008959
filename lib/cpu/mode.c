/*
 * Mode helpers: put a vCPU into real mode, flat 32-bit protected mode, or
 * 64-bit long mode with identity page tables, writing the descriptor and
 * page tables into guest memory. See docs/modes.md for the table layout.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "x86.h"

/*
 * Layout of the tables area. The TSS carries a full I/O permission bitmap
 * granting every port. With IOPL 3 the processor does not consult it, but
 * some nested hypervisors (PVM) check the bitmap regardless of IOPL, and
 * user-mode port I/O would fault there without it.
 */
#define GDT_OFFSET 0x0
#define TSS_OFFSET 0x80
#define TSS_IOMAP 0x68     /* offset of the bitmap inside the TSS */
#define TSS_LIMIT (TSS_IOMAP + 0x2000) /* bitmap + the terminating byte */
#define TSS_PAGES 3
#define PML4_OFFSET 0x3000
#define PDPT_OFFSET 0x4000
#define PD_OFFSET 0x5000
#define GIB (1ull << 30)

/* Selectors, laid out as Linux does so syscall/sysret pairs work. */
#define SEL_KCODE32 0x08
#define SEL_KCODE64 0x10
#define SEL_KDATA 0x18
#define SEL_UCODE32 0x23
#define SEL_UDATA 0x2b
#define SEL_UCODE64 0x33
#define SEL_TSS 0x38
#define GDT_LIMIT 0x47

#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_US 0x4ull
#define PTE_PS 0x80ull

static uint64_t gdt_entry(uint32_t base, uint32_t limit, uint8_t access,
                          uint8_t flags) {
  return (uint64_t)(limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) |
         ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xf) << 48) |
         ((uint64_t)(flags & 0xf) << 52) | ((uint64_t)(base >> 24) << 56);
}

static int long_gib(const struct vmm_mode_setup *s, uint64_t *gib) {
  uint64_t size = s->identity_size ? s->identity_size : 4 * GIB;
  uint64_t n = (size + GIB - 1) / GIB;
  if (size > 512 * GIB || n == 0)
    return VMM_EINVAL;
  *gib = n;
  return 0;
}

uint64_t vmm_mode_tables_size(const struct vmm_mode_setup *s) {
  uint64_t gib;
  if (s == NULL)
    return 0;
  switch (s->mode) {
  case VMM_MODE_REAL:
    return 0;
  case VMM_MODE_PROT32:
    return TSS_PAGES * 0x1000;
  case VMM_MODE_LONG64:
    if (long_gib(s, &gib) < 0)
      return 0;
    return PD_OFFSET + gib * 0x1000;
  }
  return 0;
}

static struct vmm_segment flat(uint16_t sel, uint8_t type, unsigned dpl,
                               bool db, bool l) {
  struct vmm_segment seg = {
      .base = 0,
      .limit = 0xffffffffu,
      .selector = sel,
      .type = type,
      .present = 1,
      .dpl = (uint8_t)dpl,
      .db = db,
      .s = 1,
      .l = l,
      .g = 1,
  };
  return seg;
}

static struct vmm_segment real_seg(uint8_t type) {
  struct vmm_segment seg = {
      .limit = 0xffff, .type = type, .present = 1, .s = 1};
  return seg;
}

static int write_tables(vmm_vcpu *vcpu, const struct vmm_mode_setup *s,
                        uint64_t gib) {
  vmm_vm *vm = vcpu->vm;
  static const size_t area = TSS_PAGES * 0x1000;
  uint8_t *page = calloc(1, area);
  uint64_t gdt[GDT_LIMIT / 8 + 1];

  if (page == NULL)
    return VMM_ENOMEM;

  uint32_t tss = (uint32_t)(s->tables + TSS_OFFSET);
  gdt[0] = 0;
  gdt[1] = gdt_entry(0, 0xfffff, 0x9b, 0xc);     /* kernel code 32 */
  gdt[2] = gdt_entry(0, 0xfffff, 0x9b, 0xa);     /* kernel code 64 */
  gdt[3] = gdt_entry(0, 0xfffff, 0x93, 0xc);     /* kernel data */
  gdt[4] = gdt_entry(0, 0xfffff, 0xfb, 0xc);     /* user code 32 */
  gdt[5] = gdt_entry(0, 0xfffff, 0xf3, 0xc);     /* user data */
  gdt[6] = gdt_entry(0, 0xfffff, 0xfb, 0xa);     /* user code 64 */
  gdt[7] = gdt_entry(tss, TSS_LIMIT, 0x8b, 0x0); /* TSS, busy (loaded) */
  gdt[8] = (uint64_t)(s->tables >> 32);          /* TSS base 63:32 */
  memcpy(page + GDT_OFFSET, gdt, sizeof(gdt));

  uint8_t *t = page + TSS_OFFSET;
  if (s->mode == VMM_MODE_LONG64) {
    memcpy(t + 4, &s->kernel_stack, 8); /* RSP0 */
  } else {
    uint32_t esp0 = (uint32_t)s->kernel_stack;
    uint16_t ss0 = SEL_KDATA;
    memcpy(t + 4, &esp0, 4);
    memcpy(t + 8, &ss0, 2);
  }
  uint16_t iomap = TSS_IOMAP;
  memcpy(t + 0x66, &iomap, 2);
  t[TSS_LIMIT] = 0xff; /* the byte after the bitmap must be all ones */
  int err = vmm_mem_write(vm, s->tables, page, area);
  free(page);
  if (err < 0 || s->mode != VMM_MODE_LONG64)
    return err;

  uint64_t us = s->cpl == 3 ? PTE_US : 0;
  uint64_t e[512];
  memset(e, 0, sizeof(e));
  e[0] = (s->tables + PDPT_OFFSET) | PTE_P | PTE_RW | us;
  if ((err = vmm_mem_write(vm, s->tables + PML4_OFFSET, e, sizeof(e))) < 0)
    return err;
  memset(e, 0, sizeof(e));
  for (uint64_t i = 0; i < gib; i++)
    e[i] = (s->tables + PD_OFFSET + i * 0x1000) | PTE_P | PTE_RW | us;
  if ((err = vmm_mem_write(vm, s->tables + PDPT_OFFSET, e, sizeof(e))) < 0)
    return err;
  for (uint64_t i = 0; i < gib; i++) {
    for (uint64_t j = 0; j < 512; j++)
      e[j] = (i * GIB + j * (2ull << 20)) | PTE_P | PTE_RW | PTE_PS | us;
    err = vmm_mem_write(vm, s->tables + PD_OFFSET + i * 0x1000, e, sizeof(e));
    if (err < 0)
      return err;
  }
  return 0;
}

int vmm_vcpu_set_mode(vmm_vcpu *vcpu, const struct vmm_mode_setup *s) {
  if (vcpu == NULL || s == NULL)
    return VMM_EINVAL;
  if (s->mode != VMM_MODE_REAL && s->mode != VMM_MODE_PROT32 &&
      s->mode != VMM_MODE_LONG64)
    return VMM_EINVAL;
  if (s->cpl != 0 && s->cpl != 3)
    return VMM_EINVAL;
  if (s->mode == VMM_MODE_REAL && s->cpl != 0)
    return VMM_EINVAL;
  if (!vmm__vcpu_state_accessible(vcpu))
    return VMM_EBUSY;

  uint64_t gib = 0;
  if (s->mode != VMM_MODE_REAL) {
    if (s->tables & (VMM_PAGE_SIZE - 1))
      return VMM_EALIGN;
    if (s->mode == VMM_MODE_LONG64 && long_gib(s, &gib) < 0)
      return VMM_EINVAL;
    if (s->mode == VMM_MODE_PROT32 &&
        s->tables + TSS_PAGES * 0x1000 > (1ull << 32))
      return VMM_EINVAL; /* the GDT must be reachable from 32-bit code */
    uint64_t size = vmm_mode_tables_size(s);
    void *hva;
    /* Check the whole area first so a failure writes nothing. */
    for (uint64_t off = 0; off < size; off += VMM_PAGE_SIZE)
      if (vmm_mem_gpa_to_hva(vcpu->vm, s->tables + off, VMM_PAGE_SIZE, &hva))
        return VMM_ENOMAP;
  }

  const struct vmm__engine_ops *ops = vcpu->vm->ops;
  struct vmm_sregs sr;
  struct vmm_regs r;
  int err;
  if ((err = ops->get_sregs(vcpu, &sr)) < 0 ||
      (err = ops->get_regs(vcpu, &r)) < 0)
    return err;

  if (s->mode == VMM_MODE_REAL) {
    sr.cs = real_seg(X86_SEG_CODE_RX_ACCESSED);
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss = real_seg(X86_SEG_DATA_RW_ACCESSED);
    sr.tr = (struct vmm_segment){
        .limit = 0xffff, .type = X86_SEG_TSS_BUSY, .present = 1};
    sr.ldt = (struct vmm_segment){
        .limit = 0xffff, .type = X86_SEG_LDT, .present = 1};
    sr.gdt = (struct vmm_dtable){.base = 0, .limit = 0xffff};
    sr.idt = (struct vmm_dtable){.base = 0, .limit = 0x3ff};
    sr.cr0 = X86_CR0_ET;
    sr.cr3 = 0;
    sr.cr4 = 0;
    sr.efer = 0;
  } else {
    if ((err = write_tables(vcpu, s, gib)) < 0)
      return err;
    bool lm = s->mode == VMM_MODE_LONG64;
    unsigned dpl = s->cpl;
    uint16_t cs_sel = lm ? (dpl ? SEL_UCODE64 : SEL_KCODE64)
                         : (dpl ? SEL_UCODE32 : SEL_KCODE32);
    uint16_t ds_sel = dpl ? SEL_UDATA : SEL_KDATA;
    sr.cs = flat(cs_sel, X86_SEG_CODE_RX_ACCESSED, dpl, !lm, lm);
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss =
        flat(ds_sel, X86_SEG_DATA_RW_ACCESSED, dpl, true, false);
    sr.tr = (struct vmm_segment){.base = s->tables + TSS_OFFSET,
                                 .limit = TSS_LIMIT,
                                 .selector = SEL_TSS,
                                 .type = X86_SEG_TSS_BUSY,
                                 .present = 1};
    sr.ldt = (struct vmm_segment){.type = X86_SEG_LDT, .unusable = 1};
    sr.gdt = (struct vmm_dtable){.base = s->tables + GDT_OFFSET,
                                 .limit = GDT_LIMIT};
    sr.idt = (struct vmm_dtable){.base = 0, .limit = 0};
    sr.cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE;
    sr.cr4 = X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT;
    sr.efer = 0;
    sr.cr3 = 0;
    if (lm) {
      sr.cr0 |= X86_CR0_PG | X86_CR0_WP;
      sr.cr4 |= X86_CR4_PAE;
      sr.cr3 = s->tables + PML4_OFFSET;
      sr.efer = X86_EFER_LME | X86_EFER_LMA;
    }
  }
  if ((err = vmm__check_sregs(&sr, vcpu->cpuid, vcpu->ncpuid)) < 0 || (err = ops->set_sregs(vcpu, &sr)) < 0)
    return err;
  r.rflags = X86_RFLAGS_FIXED | (s->cpl == 3 ? X86_RFLAGS_IOPL : 0);
  return ops->set_regs(vcpu, &r);
}
