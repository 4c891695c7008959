/*
 * Tests of include/libvmm/mmu.h: vmm_vcpu_translate(), read_virt and
 * write_virt over page tables written into guest memory, for 32-bit paging
 * (4 KiB and 4 MiB pages), PAE and 4-level paging (2 MiB and 1 GiB pages),
 * with the access checks (U/S, R/W with and without CR0.WP, NX with and
 * without EFER.NXE, SMEP, SMAP), reserved bits, non-present entries,
 * non-canonical addresses, tables outside RAM, accessed/dirty updates and
 * paging off.
 *
 * No guest runs: the tests set control registers, write tables and
 * translate, so they run unchanged on every engine. Where the engine cannot
 * hold a paging state (this host's KVM, PVM, keeps CR0.PG clear outside
 * long mode and set_sregs says so with VMM_ENOTSUP), the same checks are
 * made on the library's walker directly, with the registers that were
 * asked for.
 */
#include "testutil.h"

#include "internal.h" /* vmm__mmu_walk, for engines without 32-bit paging */

#define RAM (8ull << 20)
#define MODE_TABLES 0x700000ull

#define P 0x1ull
#define RW 0x2ull
#define US 0x4ull
#define A 0x20ull
#define D 0x40ull
#define PS 0x80ull
#define NX (1ull << 63)

#define PF_P 0x1u
#define PF_W 0x2u
#define PF_U 0x4u
#define PF_RSVD 0x8u
#define PF_ID 0x10u

#define CR0_PG (1ull << 31)
#define CR0_WP (1ull << 16)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_SMEP (1ull << 20)
#define CR4_SMAP (1ull << 21)
#define EFER_NXE (1ull << 11)

#define R VMM_ACCESS_READ
#define W VMM_ACCESS_WRITE
#define X VMM_ACCESS_EXEC
#define U VMM_ACCESS_USER

struct mmu {
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  unsigned maxphy;
  uint32_t table_slot;
  /* The engine refused the paging state: walk with pg directly. */
  bool direct;
  struct vmm__paging pg;
};

/* RAM [0, 8 MiB) in two slots: [0, 1 MiB) holds the tables and is dirty
   logged, the rest is plain. */
static void mmu_init(struct mmu *m, enum vmm_cpu_mode mode) {
  memset(m, 0, sizeof(*m));
  m->vm = vmmt_vm_create(1, 0);
  assert_ok(vmm_mem_slot_add(m->vm, 0, 1ull << 20, NULL, VMM_MEM_DIRTY_LOG,
                             &m->table_slot));
  assert_ok(
      vmm_mem_slot_add(m->vm, 1ull << 20, RAM - (1ull << 20), NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(m->vm, 0, &m->vcpu));
  struct vmm_mode_setup ms = {
      .mode = mode, .tables = MODE_TABLES, .identity_size = 1ull << 30};
  assert_ok(vmm_vcpu_set_mode(m->vcpu, &ms));
  struct vmm_cpuid_entry e[VMM_CPUID_MAX_ENTRIES];
  size_t n = VMM_CPUID_MAX_ENTRIES;
  assert_ok(vmm_vcpu_get_cpuid(m->vcpu, e, &n));
  m->maxphy = 36;
  for (size_t i = 0; i < n; i++)
    if (e[i].function == 0x80000008)
      m->maxphy = e[i].eax & 0xff;
  assert_true(m->maxphy >= 32 && m->maxphy <= 52);
}

static void mmu_fini(struct mmu *m) {
  assert_ok(vmm_vm_destroy(m->vm));
}

/* Offer or withdraw 1 GiB pages (CPUID 0x80000001 EDX bit 26). */
static void gbpages(struct mmu *m, bool on) {
  struct vmm_cpuid_entry e[VMM_CPUID_MAX_ENTRIES];
  size_t n = VMM_CPUID_MAX_ENTRIES;
  assert_ok(vmm_vcpu_get_cpuid(m->vcpu, e, &n));
  for (size_t i = 0; i < n; i++)
    if (e[i].function == 0x80000001)
      e[i].edx = on ? e[i].edx | (1u << 26) : e[i].edx & ~(1u << 26);
  assert_ok(vmm_vcpu_set_cpuid(m->vcpu, e, n));
  m->pg.gbpages = on;
}

/* Offer SMEP and SMAP (CPUID 7.0 EBX bits 7, 20): control bits are only
   accepted when the vCPU's CPUID has the feature. */
static void offer_smep_smap(struct mmu *m) {
  struct vmm_cpuid_entry e[VMM_CPUID_MAX_ENTRIES];
  size_t n = VMM_CPUID_MAX_ENTRIES;
  assert_ok(vmm_vcpu_get_cpuid(m->vcpu, e, &n));
  for (size_t i = 0; i < n; i++)
    if (e[i].function == 7 && e[i].index == 0)
      e[i].ebx |= (1u << 7) | (1u << 20);
  assert_ok(vmm_vcpu_set_cpuid(m->vcpu, e, n));
}

/* Switch paging registers; cr0 bits are added to the mode's CR0. */
static void paging(struct mmu *m, uint64_t cr0, uint64_t cr3, uint64_t cr4,
                   uint64_t efer) {
  struct vmm_sregs s;
  if (cr4 & (CR4_SMEP | CR4_SMAP))
    offer_smep_smap(m);
  assert_ok(vmm_vcpu_get_sregs(m->vcpu, &s));
  s.cr0 = (s.cr0 & ~CR0_WP) | cr0;
  s.cr3 = cr3;
  s.cr4 = (s.cr4 & ~(CR4_PSE | CR4_SMEP | CR4_SMAP)) | cr4;
  s.efer = (s.efer & ~EFER_NXE) | efer;
  int rc = vmm_vcpu_set_sregs(m->vcpu, &s);
  m->direct = false;
  if (rc == VMM_ENOTSUP && vmmt_engine == VMM_ENGINE_KVM) {
    print_message("host limitation: this KVM cannot hold cr0=0x%llx "
                  "cr4=0x%llx (PVM pages only in long mode); checking the "
                  "walker directly\n",
                  (unsigned long long)s.cr0, (unsigned long long)s.cr4);
    m->direct = true;
    m->pg = (struct vmm__paging){.cr0 = s.cr0,
                                 .cr3 = s.cr3,
                                 .cr4 = s.cr4,
                                 .efer = s.efer,
                                 .maxphyaddr = m->maxphy,
                                 .gbpages = m->pg.gbpages};
    return;
  }
  assert_ok(rc);
}

static int xlate(struct mmu *m, uint64_t gva, unsigned access,
                 struct vmm_translation *t) {
  if (m->direct)
    return vmm__mmu_walk(&m->vm->mem, &m->pg, gva, access, t);
  return vmm_vcpu_translate(m->vcpu, gva, access, t);
}

static void set_ac(struct mmu *m, bool ac) {
  uint64_t fl = vmmt_reg(m->vcpu, VMM_REG_RFLAGS);
  fl = ac ? fl | (1ull << 18) : fl & ~(1ull << 18);
  assert_ok(vmm_vcpu_reg_write(m->vcpu, VMM_REG_RFLAGS, fl));
  m->pg.ac = ac;
}

static void w32(struct mmu *m, uint64_t gpa, uint32_t v) {
  assert_ok(vmm_mem_write(m->vm, gpa, &v, 4));
}
static void w64(struct mmu *m, uint64_t gpa, uint64_t v) {
  assert_ok(vmm_mem_write(m->vm, gpa, &v, 8));
}
static uint32_t r32(struct mmu *m, uint64_t gpa) {
  uint32_t v;
  assert_ok(vmm_mem_read(m->vm, gpa, &v, 4));
  return v;
}
static uint64_t r64(struct mmu *m, uint64_t gpa) {
  uint64_t v;
  assert_ok(vmm_mem_read(m->vm, gpa, &v, 8));
  return v;
}

#define expect_ok(m, gva, acc, want_gpa, want_size)                            \
  do {                                                                         \
    struct vmm_translation t_;                                                 \
    int rc_ = xlate((m), (gva), (acc), &t_);                                   \
    if (rc_ != 0)                                                              \
      fail_msg("translate 0x%llx access %u: %s, error code 0x%x",              \
               (unsigned long long)(gva), (unsigned)(acc), vmm_err_name(rc_),  \
               t_.error_code);                                                 \
    assert_int_equal(t_.gpa, (want_gpa));                                      \
    assert_int_equal(t_.page_size, (want_size));                               \
  } while (0)

#define expect_pf(m, gva, acc, want_ec)                                        \
  do {                                                                         \
    struct vmm_translation t_;                                                 \
    int rc_ = xlate((m), (gva), (acc), &t_);                                   \
    if (rc_ != VMM_EPAGEFAULT)                                                 \
      fail_msg("translate 0x%llx access %u: %s (gpa 0x%llx), expected a "      \
               "page fault",                                                   \
               (unsigned long long)(gva), (unsigned)(acc), vmm_err_name(rc_),  \
               (unsigned long long)t_.gpa);                                    \
    if (t_.error_code != (want_ec))                                            \
      fail_msg("translate 0x%llx access %u: error code 0x%x, expected 0x%x",   \
               (unsigned long long)(gva), (unsigned)(acc), t_.error_code,      \
               (unsigned)(want_ec));                                           \
  } while (0)

/* ------------------------------------------------------------------------ */
/* 32-bit paging                                                            */

#define PD32 0x10000ull
#define PT32 0x11000ull

static void tables32(struct mmu *m) {
  w32(m, PD32 + 1 * 4, PT32 | P | RW | US);   /* 0x00400000 */
  w32(m, PT32 + 1 * 4, 0x5000 | P | RW | US); /* 0x00401000 */
  w32(m, PT32 + 2 * 4, 0x6000 | P);           /* 0x00402000 */
  w32(m, PT32 + 4 * 4, 0x7000 | P | US);      /* 0x00404000 */
  /* 0x00800000: a 4 MiB page with CR4.PSE; without it, a table pointer. */
  w32(m, PD32 + 2 * 4, 0x400000 | P | RW | US | PS);
  w32(m, 0x400000 + 0x12 * 4, 0x9000 | P | RW | US);
  /* 0x00c00000: PSE-36, address bit 32 in PDE bit 13. */
  w32(m, PD32 + 3 * 4, 0x400000 | (1u << 13) | P | RW | PS);
  /* 0x01000000: reserved bit 21 of a 4 MiB page. */
  w32(m, PD32 + 4 * 4, 0x400000 | (1u << 21) | P | RW | PS);
  /* 0x01400000: a supervisor-only table. */
  w32(m, PD32 + 5 * 4, PT32 | P | RW);
}

static void test_paging32_4k(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_PROT32);
  tables32(&m);
  paging(&m, CR0_PG, PD32, 0, 0);

  struct vmm_translation t;
  assert_ok(xlate(&m, 0x401abc, R, &t));
  assert_int_equal(t.gpa, 0x5abc);
  assert_int_equal(t.page_size, 0x1000);
  assert_true(t.writable && t.user && t.executable);
  assert_ok(xlate(&m, 0x402000, R, &t));
  assert_int_equal(t.gpa, 0x6000);
  assert_false(t.writable);
  assert_false(t.user);

  /* Linear addresses are 32 bits wide. */
  expect_ok(&m, 0x100401abcull, R, 0x5abc, 0x1000);
  /* Not present: PTE, then PDE. */
  expect_pf(&m, 0x403000, R, 0);
  expect_pf(&m, 0x403000, W, PF_W);
  expect_pf(&m, 0x403000, W | U, PF_W | PF_U);
  expect_pf(&m, 0x1800000, R | U, PF_U);
  /* U/S and R/W. */
  expect_pf(&m, 0x402000, U, PF_P | PF_U);
  expect_pf(&m, 0x404000, W | U, PF_P | PF_W | PF_U);
  expect_ok(&m, 0x404000, U, 0x7000, 0x1000);
  expect_ok(&m, 0x404000, W, 0x7000, 0x1000); /* CR0.WP = 0 */
  expect_pf(&m, 0x1401000, U, PF_P | PF_U);   /* supervisor PDE */
  expect_ok(&m, 0x1401000, W, 0x5000, 0x1000);
  paging(&m, CR0_PG | CR0_WP, PD32, 0, 0);
  expect_pf(&m, 0x404000, W, PF_P | PF_W);
  expect_pf(&m, 0x402000, W, PF_P | PF_W);
  expect_ok(&m, 0x401000, W | U, 0x5000, 0x1000);

  /* Without CR4.PSE the PS bit of a PDE is ignored. */
  expect_ok(&m, 0x812345, R, 0x9345, 0x1000);
  mmu_fini(&m);
}

static void test_paging32_pse(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_PROT32);
  tables32(&m);
  paging(&m, CR0_PG, PD32, CR4_PSE, 0);

  struct vmm_translation t;
  assert_ok(xlate(&m, 0x812345, W | U, &t));
  assert_int_equal(t.gpa, 0x412345);
  assert_int_equal(t.page_size, 4ull << 20);
  assert_true(t.writable && t.user);
  /* 4 KiB pages still work beside 4 MiB ones. */
  expect_ok(&m, 0x401abc, R, 0x5abc, 0x1000);
  /* PSE-36: bits 13.. of the PDE are physical address bits 32.. */
  expect_ok(&m, 0xc01234, R, 0x100401234ull, 4ull << 20);
  expect_pf(&m, 0xc01234, U, PF_P | PF_U);
  /* Bit 21 of a 4 MiB PDE is reserved. */
  expect_pf(&m, 0x1000000, R, PF_P | PF_RSVD);
  expect_pf(&m, 0x1000000, W | U, PF_P | PF_RSVD | PF_W | PF_U);
  mmu_fini(&m);
}

/* 32-bit paging has no execute-disable bit: instruction fetches fault
   only on U/S, and report I/D only with SMEP (Intel SDM 4.7). */
static void test_paging32_exec(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_PROT32);
  tables32(&m);
  paging(&m, CR0_PG, PD32, 0, EFER_NXE);
  struct vmm_translation t;
  assert_ok(xlate(&m, 0x402000, X, &t));
  assert_true(t.executable);
  expect_pf(&m, 0x403000, X, 0);
  expect_pf(&m, 0x402000, X | U, PF_P | PF_U);
  paging(&m, CR0_PG, PD32, CR4_SMEP, 0);
  expect_pf(&m, 0x403000, X, PF_ID);
  expect_pf(&m, 0x401000, X, PF_P | PF_ID); /* SMEP: user page */
  expect_ok(&m, 0x402000, X, 0x6000, 0x1000);
  mmu_fini(&m);
}

/* ------------------------------------------------------------------------ */
/* PAE paging                                                               */

#define PDPT_PAE 0x10020ull /* 32-byte aligned, not page aligned */
#define PD_PAE 0x12000ull
#define PT_PAE 0x13000ull

static void tables_pae(struct mmu *m) {
  w64(m, PDPT_PAE + 0 * 8, PD_PAE | P);
  w64(m, PD_PAE + 2 * 8, PT_PAE | P | RW | US);             /* 0x00400000 */
  w64(m, PT_PAE + 1 * 8, 0x5000 | P | RW | US);             /* 0x00401000 */
  w64(m, PT_PAE + 2 * 8, 0x6000 | P | RW | US | NX);        /* 0x00402000 */
  w64(m, PT_PAE + 3 * 8, 0x7000 | P);                       /* 0x00403000 */
  w64(m, PD_PAE + 3 * 8, 0x200000 | P | RW | PS);           /* 0x00600000 */
  w64(m, PD_PAE + 4 * 8, 0x200000 | (1ull << 13) | P | PS); /* rsvd */
  w64(m, PD_PAE + 5 * 8, 0x200000 | P | RW | PS | NX);      /* 0x00a00000 */
}

static void test_paging_pae(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_PROT32);
  tables_pae(&m);
  paging(&m, CR0_PG, PDPT_PAE, CR4_PAE, 0);

  struct vmm_translation t;
  assert_ok(xlate(&m, 0x401abc, W | U, &t));
  assert_int_equal(t.gpa, 0x5abc);
  assert_int_equal(t.page_size, 0x1000);
  assert_ok(xlate(&m, 0x612345, R, &t));
  assert_int_equal(t.gpa, 0x212345);
  assert_int_equal(t.page_size, 2ull << 20);
  assert_false(t.user);
  /* Linear addresses are 32 bits wide. */
  expect_ok(&m, 0x100612345ull, R, 0x212345, 2ull << 20);
  /* Not present: PDPTE, PDE, PTE. */
  expect_pf(&m, 0x40000000, R, 0);
  expect_pf(&m, 0x800000 + 0x400000, W, PF_W);
  expect_pf(&m, 0x404000, U, PF_U);
  expect_pf(&m, 0x403000, U, PF_P | PF_U);
  expect_pf(&m, 0x403000, W | U, PF_P | PF_W | PF_U);
  /* Reserved bit 13 of a 2 MiB page. */
  expect_pf(&m, 0x800000, R, PF_P | PF_RSVD);
  /* Without EFER.NXE, bit 63 is reserved. */
  expect_pf(&m, 0x402000, R, PF_P | PF_RSVD);
  expect_pf(&m, 0xa00000, X, PF_P | PF_RSVD);
  expect_ok(&m, 0x401000, X, 0x5000, 0x1000);
  mmu_fini(&m);
}

static void test_paging_pae_nx(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_PROT32);
  tables_pae(&m);
  paging(&m, CR0_PG, PDPT_PAE, CR4_PAE, EFER_NXE);
  struct vmm_translation t;
  assert_ok(xlate(&m, 0x402000, R | U, &t));
  assert_int_equal(t.gpa, 0x6000);
  assert_false(t.executable);
  expect_pf(&m, 0x402000, X, PF_P | PF_ID);
  expect_pf(&m, 0x402000, X | U, PF_P | PF_ID | PF_U);
  expect_pf(&m, 0xa00000, X, PF_P | PF_ID);
  expect_ok(&m, 0xa00000, W, 0x200000, 2ull << 20);
  /* With NXE, a not-present fetch reports I/D. */
  expect_pf(&m, 0x404000, X, PF_ID);
  assert_ok(xlate(&m, 0x401000, X, &t));
  assert_true(t.executable);
  mmu_fini(&m);
}

/* A PAE PDPTE has reserved bits 1, 2, 5-8, 63 and those above MAXPHYADDR;
   any of them faults with RSVD, whatever the access. */
static void test_paging_pae_pdpte_reserved(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_PROT32);
  tables_pae(&m);
  paging(&m, CR0_PG, PDPT_PAE, CR4_PAE, EFER_NXE);
  uint64_t bits[] = {1ull << 1, 1ull << 2, 1ull << 5,  1ull << 6,
                     1ull << 7, 1ull << 8, 1ull << 63, 0};
  if (m.maxphy < 52)
    bits[7] = 1ull << m.maxphy;
  for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]) && bits[i]; i++) {
    w64(&m, PDPT_PAE + 1 * 8, PD_PAE | P | bits[i]);
    expect_pf(&m, 0x40400000 + 0x1000, R, PF_P | PF_RSVD);
    expect_pf(&m, 0x40401000, W | U, PF_P | PF_RSVD | PF_W | PF_U);
  }
  /* Accessed, PWT, PCD and the available bits are not reserved. */
  w64(&m, PDPT_PAE + 1 * 8,
      PD_PAE | P | (1ull << 3) | (1ull << 4) | (7ull << 9));
  expect_ok(&m, 0x40401000, R, 0x5000, 0x1000);
  mmu_fini(&m);
}

/* ------------------------------------------------------------------------ */
/* 4-level paging                                                           */

#define PML4 0x10000ull
#define PDPT 0x11000ull
#define PD 0x12000ull
#define PT 0x13000ull
#define GIB (1ull << 30)

static void tables64(struct mmu *m) {
  w64(m, PML4 + 0 * 8, PDPT | P | RW | US);
  w64(m, PDPT + 0 * 8, PD | P | RW | US);
  w64(m, PD + 0 * 8, PT | P | RW | US);
  w64(m, PT + 5 * 8, 0x5000 | P | RW | US);             /* 0x5000: user RW */
  w64(m, PT + 6 * 8, 0x6000 | P | RW | US | NX);        /* 0x6000: NX */
  w64(m, PT + 7 * 8, 0x7000 | P | RW);                  /* 0x7000: kernel */
  w64(m, PT + 8 * 8, 0x8000 | P | US);                  /* 0x8000: user RO */
  w64(m, PT + 10 * 8, 0x9000 | P | RW);                 /* 0xa000 -> 0x9000 */
  w64(m, PT + 11 * 8, 0x3000 | P | RW);                 /* 0xb000 -> 0x3000 */
  w64(m, PT + 12 * 8, 0x40000000 | P | RW);             /* outside RAM */
  w64(m, PD + 1 * 8, 0x200000 | P | RW | US | PS);      /* 2 MiB */
  w64(m, PD + 2 * 8, 0x400000 | P | PS | (1ull << 13)); /* reserved */
  w64(m, PDPT + 1 * 8, 0x80000000 | P | RW | PS);       /* 1 GiB */
  w64(m, PDPT + 2 * 8, 0x80000000 | P | PS | (1ull << 20)); /* reserved */
  w64(m, PML4 + 1 * 8, PDPT | P | RW | PS);                 /* PS in a PML4E */
  w64(m, PML4 + 511 * 8, PDPT | P | RW); /* the top 512 GiB */
}

static void long_paging(struct mmu *m, uint64_t cr0, uint64_t cr4,
                        uint64_t efer) {
  paging(m, cr0 | CR0_PG, PML4, cr4 | CR4_PAE, efer);
}

static void test_paging64_sizes(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  gbpages(&m, true);
  long_paging(&m, 0, 0, 0);

  struct vmm_translation t;
  assert_ok(xlate(&m, 0x5abc, R | U, &t));
  assert_int_equal(t.gpa, 0x5abc);
  assert_int_equal(t.page_size, 0x1000);
  assert_true(t.writable && t.user && t.executable);
  assert_ok(xlate(&m, 0x2abcde, W | U, &t));
  assert_int_equal(t.gpa, 0x2abcde);
  assert_int_equal(t.page_size, 2ull << 20);
  assert_ok(xlate(&m, GIB + 0x12345678, W, &t));
  assert_int_equal(t.gpa, 0x80000000 + 0x12345678);
  assert_int_equal(t.page_size, GIB);
  assert_false(t.user);
  /* Non-identity 4 KiB mappings. */
  expect_ok(&m, 0xa123, R, 0x9123, 0x1000);
  expect_ok(&m, 0xb123, R, 0x3123, 0x1000);
  /* The top of the canonical space: PML4E 511. */
  expect_ok(&m, 0xffffff8000005000ull, R, 0x5000, 0x1000);
  /* Without 1 GiB pages in CPUID, PS in a PDPTE is a reserved bit. */
  gbpages(&m, false);
  expect_pf(&m, GIB + 0x12345678, W, PF_P | PF_W | PF_RSVD);
  expect_ok(&m, 0x2abcde, R, 0x2abcde, 2ull << 20);
  mmu_fini(&m);
}

static void test_paging64_faults(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  gbpages(&m, true);
  long_paging(&m, 0, 0, 0);

  /* Not present at each level. */
  expect_pf(&m, 0x10000000000ull, R, 0);       /* PML4E 2 */
  expect_pf(&m, 3 * GIB, W, PF_W);             /* PDPTE 3 */
  expect_pf(&m, 0x600000, W | U, PF_W | PF_U); /* PDE 3 */
  expect_pf(&m, 0x9000, U, PF_U);              /* PTE 9 */
  /* U/S. */
  expect_pf(&m, 0x7000, U, PF_P | PF_U);
  expect_pf(&m, 0x7000, W | U, PF_P | PF_W | PF_U);
  expect_ok(&m, 0x5000, R, 0x5000, 0x1000); /* supervisor on a user page */
  expect_pf(&m, GIB, U, PF_P | PF_U);
  /* R/W with and without CR0.WP. */
  expect_pf(&m, 0x8000, W | U, PF_P | PF_W | PF_U);
  expect_ok(&m, 0x8000, W, 0x8000, 0x1000);
  long_paging(&m, CR0_WP, 0, 0);
  expect_pf(&m, 0x8000, W, PF_P | PF_W);
  expect_ok(&m, 0x7000, W, 0x7000, 0x1000);
  expect_ok(&m, 0x8000, R | U, 0x8000, 0x1000);
  /* Reserved bits: PS in a PML4E, low bits of large pages, and bits at
     or above MAXPHYADDR. */
  expect_pf(&m, 0x8000000000ull, R, PF_P | PF_RSVD);
  expect_pf(&m, 0x400000, R, PF_P | PF_RSVD);
  expect_pf(&m, 2 * GIB, W, PF_P | PF_W | PF_RSVD);
  if (m.maxphy < 52) {
    w64(&m, PT + 13 * 8, (1ull << m.maxphy) | 0x6000 | P);
    expect_pf(&m, 0xd000, R, PF_P | PF_RSVD);
    w64(&m, PD + 3 * 8, PT | (1ull << 51) | P | RW | US);
    expect_pf(&m, 0x600000, U, PF_P | PF_RSVD | PF_U);
  }
  /* NX is reserved without EFER.NXE. */
  expect_pf(&m, 0x6000, R, PF_P | PF_RSVD);
  mmu_fini(&m);
}

static void test_paging64_nx(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  long_paging(&m, 0, 0, EFER_NXE);
  struct vmm_translation t;
  assert_ok(xlate(&m, 0x6000, W | U, &t));
  assert_false(t.executable);
  expect_pf(&m, 0x6000, X, PF_P | PF_ID);
  expect_pf(&m, 0x6000, X | U, PF_P | PF_ID | PF_U);
  expect_pf(&m, 0x9000, X, PF_ID);
  expect_ok(&m, 0x5000, X | U, 0x5000, 0x1000);
  /* NX in an upper level applies to everything below it. */
  w64(&m, PD + 4 * 8, PT | P | RW | US | NX);
  expect_pf(&m, 0x800000 + 0x5000, X, PF_P | PF_ID);
  expect_ok(&m, 0x800000 + 0x5000, R, 0x5000, 0x1000);
  mmu_fini(&m);
}

static void test_paging64_smep_smap(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  long_paging(&m, 0, CR4_SMEP | CR4_SMAP, EFER_NXE);
  set_ac(&m, false);
  /* SMEP: supervisor fetch from a user page. */
  expect_pf(&m, 0x5000, X, PF_P | PF_ID);
  expect_ok(&m, 0x7000, X, 0x7000, 0x1000);
  expect_ok(&m, 0x5000, X | U, 0x5000, 0x1000);
  /* SMAP: supervisor data access to a user page unless RFLAGS.AC. */
  expect_pf(&m, 0x5000, R, PF_P);
  expect_pf(&m, 0x5000, W, PF_P | PF_W);
  expect_ok(&m, 0x7000, W, 0x7000, 0x1000);
  expect_ok(&m, 0x5000, W | U, 0x5000, 0x1000);
  set_ac(&m, true);
  expect_ok(&m, 0x5000, R, 0x5000, 0x1000);
  expect_ok(&m, 0x5000, W, 0x5000, 0x1000);
  expect_pf(&m, 0x5000, X, PF_P | PF_ID); /* AC does not lift SMEP */
  mmu_fini(&m);
}

static void test_non_canonical(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  long_paging(&m, 0, 0, 0);
  struct vmm_translation t;
  assert_vmm(xlate(&m, 0x0000800000000000ull, R, &t), VMM_EFAULT);
  assert_vmm(xlate(&m, 0xffff7fffffffffffull, W, &t), VMM_EFAULT);
  assert_vmm(xlate(&m, 0x8000000000005000ull, R, &t), VMM_EFAULT);
  uint8_t b;
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0x0000800000000000ull, &b, 1),
             VMM_EFAULT);
  mmu_fini(&m);
}

/* Tables outside RAM are guest garbage, not a host problem: the walk
   faults (with RSVD: an unbacked bus reads as all ones). */
static void test_tables_outside_ram(void **state) {
  (void)state;
  struct mmu m;
  const uint64_t far = 0x40000000; /* no slot there */

  mmu_init(&m, VMM_MODE_PROT32);
  tables32(&m);
  paging(&m, CR0_PG, far, 0, 0);
  expect_pf(&m, 0x401000, R, PF_P | PF_RSVD);
  paging(&m, CR0_PG, far, CR4_PSE, 0);
  expect_pf(&m, 0x401000, R, PF_P | PF_RSVD);
  paging(&m, CR0_PG, PD32, 0, 0);
  w32(&m, PD32 + 6 * 4, (uint32_t)far | P | RW | US);
  expect_pf(&m, 0x1800000, U, PF_P | PF_RSVD | PF_U);
  /* A directory in the last page of RAM pointing just past its end. */
  paging(&m, CR0_PG, RAM - 0x1000, 0, 0);
  w32(&m, RAM - 0x1000 + 1023 * 4, (uint32_t)RAM | P);
  w32(&m, RAM - 0x1000 + 1022 * 4, 0 | P);
  w32(&m, 0, 0x5000 | P);
  expect_pf(&m, 0xffc00000, R, PF_P | PF_RSVD);
  expect_ok(&m, 0xff800123, R, 0x5123, 0x1000); /* PT at 0, entry 0 */
  mmu_fini(&m);

  mmu_init(&m, VMM_MODE_PROT32);
  paging(&m, CR0_PG, far, CR4_PAE, EFER_NXE);
  expect_pf(&m, 0x401000, R, PF_P | PF_RSVD);
  mmu_fini(&m);

  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  long_paging(&m, 0, 0, EFER_NXE);
  w64(&m, PD + 5 * 8, far | P | RW);
  expect_pf(&m, 0xa00000, W, PF_P | PF_RSVD | PF_W);
  paging(&m, CR0_PG, far, CR4_PAE, EFER_NXE);
  expect_pf(&m, 0x5000, R, PF_P | PF_RSVD);
  struct vmm_translation t;
  assert_vmm(xlate(&m, 0x5000, R | VMM_ACCESS_SET_AD, &t), VMM_EPAGEFAULT);
  uint8_t b;
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0x5000, &b, 1), VMM_EPAGEFAULT);
  mmu_fini(&m);
}

/* ------------------------------------------------------------------------ */
/* Accessed and dirty bits                                                  */

static void test_ad_bits64(void **state) {
  (void)state;
  struct mmu m;
  struct vmm_translation t;
  uint64_t bm[4];
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  gbpages(&m, true);
  long_paging(&m, 0, 0, 0);
  assert_ok(vmm_mem_dirty_log_get(m.vm, m.table_slot, bm, sizeof(bm)));

  /* Without VMM_ACCESS_SET_AD nothing changes. */
  assert_ok(xlate(&m, 0x5000, W, &t));
  assert_int_equal(r64(&m, PT + 5 * 8), 0x5000 | P | RW | US);
  assert_int_equal(r64(&m, PML4), PDPT | P | RW | US);
  assert_ok(vmm_mem_dirty_log_get(m.vm, m.table_slot, bm, sizeof(bm)));
  assert_int_equal(bm[0], 0);

  /* A read sets A at every level, D nowhere. */
  assert_ok(xlate(&m, 0x5000, R | VMM_ACCESS_SET_AD, &t));
  assert_int_equal(r64(&m, PML4), PDPT | P | RW | US | A);
  assert_int_equal(r64(&m, PDPT), PD | P | RW | US | A);
  assert_int_equal(r64(&m, PD), PT | P | RW | US | A);
  assert_int_equal(r64(&m, PT + 5 * 8), 0x5000 | P | RW | US | A);
  /* The table pages written count as dirty. */
  assert_ok(vmm_mem_dirty_log_get(m.vm, m.table_slot, bm, sizeof(bm)));
  assert_int_equal(bm[0], 0xfull << 16); /* pages 0x10-0x13 */

  /* A write sets D in the leaf only. */
  assert_ok(xlate(&m, 0x5000, W | VMM_ACCESS_SET_AD, &t));
  assert_int_equal(r64(&m, PT + 5 * 8), 0x5000 | P | RW | US | A | D);
  assert_int_equal(r64(&m, PD), PT | P | RW | US | A);
  assert_ok(vmm_mem_dirty_log_get(m.vm, m.table_slot, bm, sizeof(bm)));
  assert_int_equal(bm[0], 1ull << 0x13);

  /* Large pages: D in the PDE / PDPTE that maps the page. */
  assert_ok(xlate(&m, 0x200000, W | U | VMM_ACCESS_SET_AD, &t));
  assert_int_equal(r64(&m, PD + 8), 0x200000 | P | RW | US | PS | A | D);
  assert_ok(xlate(&m, GIB, W | VMM_ACCESS_SET_AD, &t));
  assert_int_equal(r64(&m, PDPT + 8), 0x80000000 | P | RW | PS | A | D);

  /* A faulting access sets nothing. */
  assert_vmm(xlate(&m, 0x8000, W | U | VMM_ACCESS_SET_AD, &t), VMM_EPAGEFAULT);
  assert_int_equal(r64(&m, PT + 8 * 8), 0x8000 | P | US);
  mmu_fini(&m);
}

static void test_ad_bits32_pae(void **state) {
  (void)state;
  struct mmu m;
  struct vmm_translation t;
  mmu_init(&m, VMM_MODE_PROT32);
  tables32(&m);
  paging(&m, CR0_PG, PD32, CR4_PSE, 0);
  assert_ok(xlate(&m, 0x401000, W | VMM_ACCESS_SET_AD, &t));
  assert_int_equal(r32(&m, PD32 + 4), PT32 | P | RW | US | A);
  assert_int_equal(r32(&m, PT32 + 4), 0x5000 | P | RW | US | A | D);
  assert_ok(xlate(&m, 0x800000, R | VMM_ACCESS_SET_AD, &t));
  assert_int_equal(r32(&m, PD32 + 8), 0x400000 | P | RW | US | PS | A);
  mmu_fini(&m);

  mmu_init(&m, VMM_MODE_PROT32);
  tables_pae(&m);
  paging(&m, CR0_PG, PDPT_PAE, CR4_PAE, EFER_NXE);
  assert_ok(xlate(&m, 0x401000, W | VMM_ACCESS_SET_AD, &t));
  /* PAE PDPTEs have no accessed bit (bit 5 is reserved there). */
  assert_int_equal(r64(&m, PDPT_PAE), PD_PAE | P);
  assert_int_equal(r64(&m, PD_PAE + 2 * 8), PT_PAE | P | RW | US | A);
  assert_int_equal(r64(&m, PT_PAE + 8), 0x5000 | P | RW | US | A | D);
  assert_ok(xlate(&m, 0x401000, R, &t));
  mmu_fini(&m);
}

/* ------------------------------------------------------------------------ */
/* Paging off, argument checks, virtual copies                              */

static void test_paging_off(void **state) {
  (void)state;
  struct mmu m;
  struct vmm_translation t;
  mmu_init(&m, VMM_MODE_PROT32);
  assert_ok(xlate(&m, 0x100001234ull, W | U, &t));
  assert_int_equal(t.gpa, 0x1234);
  assert_true(t.writable && t.user && t.executable);
  expect_ok(&m, 0xfffff000, X, 0xfffff000, 0x1000);
  mmu_fini(&m);

  mmu_init(&m, VMM_MODE_REAL);
  expect_ok(&m, 0x1000ffff0ull, R, 0xffff0, 0x1000);
  mmu_fini(&m);
}

static void test_translate_args(void **state) {
  (void)state;
  struct mmu m;
  struct vmm_translation t;
  mmu_init(&m, VMM_MODE_LONG64);
  assert_vmm(vmm_vcpu_translate(NULL, 0, R, &t), VMM_EINVAL);
  assert_vmm(vmm_vcpu_translate(m.vcpu, 0, R, NULL), VMM_EINVAL);
  assert_vmm(vmm_vcpu_translate(m.vcpu, 0, 1u << 4, &t), VMM_EINVAL);
  assert_vmm(vmm_vcpu_translate(m.vcpu, 0, W | X, &t), VMM_EINVAL);
  /* The mode helper's identity map. */
  expect_ok(&m, 0x3fffffff, W, 0x3fffffff, 2ull << 20);
  mmu_fini(&m);
}

static void test_virt_copies(void **state) {
  (void)state;
  struct mmu m;
  mmu_init(&m, VMM_MODE_LONG64);
  tables64(&m);
  long_paging(&m, CR0_WP, 0, 0);

  /* 16 bytes across 0xa000/0xb000, which map to 0x9000 and 0x3000. */
  uint8_t out[16], in[16];
  for (int i = 0; i < 16; i++)
    out[i] = (uint8_t)(0xc0 + i);
  assert_ok(vmm_vcpu_write_virt(m.vcpu, 0xaff8, out, 16));
  assert_ok(vmm_mem_read(m.vm, 0x9ff8, in, 8));
  assert_memory_equal(in, out, 8);
  assert_ok(vmm_mem_read(m.vm, 0x3000, in, 8));
  assert_memory_equal(in, out + 8, 8);
  memset(in, 0, sizeof(in));
  assert_ok(vmm_vcpu_read_virt(m.vcpu, 0xaff8, in, 16));
  assert_memory_equal(in, out, 16);
  assert_ok(vmm_vcpu_read_virt(m.vcpu, 0xaff8, NULL, 0));

  /* No A/D updates from virtual copies. */
  assert_int_equal(r64(&m, PT + 10 * 8), 0x9000 | P | RW);

  /* Host copies ignore permissions: a read-only page (0x8000) is written
     even under CR0.WP, as a debugger planting a breakpoint would. */
  uint8_t bp = 0xcc, old8;
  assert_ok(vmm_vcpu_read_virt(m.vcpu, 0x8000, &old8, 1));
  assert_ok(vmm_vcpu_write_virt(m.vcpu, 0x8000, &bp, 1));
  assert_ok(vmm_vcpu_read_virt(m.vcpu, 0x8000, in, 1));
  assert_int_equal(in[0], 0xcc);
  assert_ok(vmm_vcpu_write_virt(m.vcpu, 0x8000, &old8, 1));

  /* Faults: not present; unbacked: ENOMAP. */
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0x9000, in, 1), VMM_EPAGEFAULT);
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0xc000, in, 1), VMM_ENOMAP);
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0x8ff0, in, 0x20), VMM_EPAGEFAULT);
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0x8000000000000000ull, in, 1),
             VMM_EFAULT);

  /* A copy that fails on its second page copies nothing at all. */
  uint8_t before[16], after[16], junk[32];
  memset(junk, 0x5a, sizeof(junk));
  assert_ok(vmm_mem_read(m.vm, 0x8ff0, before, 16));
  assert_vmm(vmm_vcpu_write_virt(m.vcpu, 0x8ff0, junk, 0x20), VMM_EPAGEFAULT);
  assert_ok(vmm_mem_read(m.vm, 0x8ff0, after, 16));
  assert_memory_equal(before, after, 16);

  assert_vmm(vmm_vcpu_read_virt(NULL, 0x5000, in, 1), VMM_EINVAL);
  assert_vmm(vmm_vcpu_read_virt(m.vcpu, 0x5000, NULL, 1), VMM_EINVAL);
  assert_vmm(vmm_vcpu_write_virt(m.vcpu, 0x5000, NULL, 1), VMM_EINVAL);
  mmu_fini(&m);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_paging32_4k),
      cmocka_unit_test(test_paging32_pse),
      cmocka_unit_test(test_paging32_exec),
      cmocka_unit_test(test_paging_pae),
      cmocka_unit_test(test_paging_pae_nx),
      cmocka_unit_test(test_paging_pae_pdpte_reserved),
      cmocka_unit_test(test_paging64_sizes),
      cmocka_unit_test(test_paging64_faults),
      cmocka_unit_test(test_paging64_nx),
      cmocka_unit_test(test_paging64_smep_smap),
      cmocka_unit_test(test_non_canonical),
      cmocka_unit_test(test_tables_outside_ram),
      cmocka_unit_test(test_ad_bits64),
      cmocka_unit_test(test_ad_bits32_pae),
      cmocka_unit_test(test_paging_off),
      cmocka_unit_test(test_translate_args),
      cmocka_unit_test(test_virt_copies),
  };
  return vmmt_run_group(tests);
}
