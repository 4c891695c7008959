/*
 * The local APICs (include/libvmm/lapic.h): power-on registers, access
 * rules and reserved registers (ESR), priorities (TPR, PPR, ISR, EOI),
 * IPIs of every destination kind and their errors, software disable, the
 * timer in one-shot, periodic and TSC-deadline modes (clock driven
 * manually), LINT0 modes, INIT, CR8 as the TPR, creation errors and saved
 * states.
 */
#include "plattest.h"

#define ID 0x20
#define VER 0x30
#define TPR 0x80
#define APR 0x90
#define PPR 0xa0
#define EOI 0xb0
#define LDR 0xd0
#define DFR 0xe0
#define SVR 0xf0
#define ISR 0x100
#define TMR 0x180
#define IRR 0x200
#define ESR 0x280
#define ICR 0x300
#define ICR_HI 0x310
#define LVT_TIMER 0x320
#define LVT_LINT0 0x350
#define LVT_LINT1 0x360
#define LVT_ERROR 0x370
#define TMICT 0x380
#define TMCCT 0x390
#define TDCR 0x3e0

/* Vector bit in ISR/TMR/IRR. */
static uint32_t vec_word(struct pt *t, unsigned cpu, unsigned base,
                         unsigned v) {
  return (pt_apic_r(t, cpu, base + 0x10 * (v / 32)) >> (v % 32)) & 1;
}

/* Take want on cpu and end it. */
static void take_eoi(struct pt *t, unsigned cpu, int want) {
  pt_take(t, cpu, want);
  pt_apic_w(t, cpu, EOI, 0);
}

static void ipi(struct pt *t, unsigned from, uint8_t dest, uint32_t icr) {
  pt_apic_w(t, from, ICR_HI, (uint32_t)dest << 24);
  pt_apic_w(t, from, ICR, icr);
}

/* Latch and read ESR. */
static uint32_t esr(struct pt *t, unsigned cpu) {
  pt_apic_w(t, cpu, ESR, 0);
  return pt_apic_r(t, cpu, ESR);
}

static void test_power_on(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 2);
  for (unsigned i = 0; i < 2; i++) {
    assert_int_equal(pt_apic_r(&t, i, ID), i << 24);
    assert_int_equal(pt_apic_r(&t, i, VER), 0x00050014);
    assert_int_equal(pt_apic_r(&t, i, TPR), 0);
    assert_int_equal(pt_apic_r(&t, i, PPR), 0);
    assert_int_equal(pt_apic_r(&t, i, LDR), 0);
    assert_int_equal(pt_apic_r(&t, i, DFR), 0xffffffffu);
    assert_int_equal(pt_apic_r(&t, i, SVR), 0xff);
    for (unsigned r = LVT_TIMER; r <= LVT_ERROR; r += 0x10)
      if (r != LVT_LINT0)
        assert_int_equal(pt_apic_r(&t, i, r), 0x10000);
    for (unsigned w = 0; w < 8; w++) {
      assert_int_equal(pt_apic_r(&t, i, ISR + 0x10 * w), 0);
      assert_int_equal(pt_apic_r(&t, i, TMR + 0x10 * w), 0);
      assert_int_equal(pt_apic_r(&t, i, IRR + 0x10 * w), 0);
    }
    assert_int_equal(pt_apic_r(&t, i, TMICT), 0);
    assert_int_equal(pt_apic_r(&t, i, TMCCT), 0);
    assert_int_equal(pt_apic_r(&t, i, TDCR), 0);
  }
  /* Virtual wire on the BSP only. */
  assert_int_equal(pt_apic_r(&t, 0, LVT_LINT0), 0x700);
  assert_int_equal(pt_apic_r(&t, 1, LVT_LINT0), 0x10000);
  pt_fini(&t);
}

static void test_access_rules(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 2);
  vmm_dev *l = vmm_dev_find(t.vm, "lapic");
  /* Byte and word reads inside a register's dword. */
  uint8_t b = 0;
  assert_int_equal(pt_mmio(&t, t.vcpu[1], PT_LAPIC + ID + 3, &b, 1, false), 0);
  assert_int_equal(b, 1);
  uint16_t w = 0;
  assert_int_equal(pt_mmio(&t, t.vcpu[0], PT_LAPIC + SVR, &w, 2, false), 0);
  assert_int_equal(w, 0xff);
  /* Reads crossing the dword, 8-byte reads, writes other than aligned
     dwords: ignored, reads give 0. */
  uint32_t v = 0xdead;
  assert_int_equal(pt_mmio(&t, t.vcpu[0], PT_LAPIC + SVR + 2, &v, 4, false), 0);
  assert_int_equal(v, 0);
  uint64_t q = 0;
  assert_int_equal(pt_mmio(&t, t.vcpu[0], PT_LAPIC + SVR, &q, 8, false), 0);
  assert_int_equal(q, 0);
  w = 0x1ff;
  assert_int_equal(pt_mmio(&t, t.vcpu[0], PT_LAPIC + SVR, &w, 2, true), 0);
  v = 0x1ff;
  assert_int_equal(pt_mmio(&t, t.vcpu[0], PT_LAPIC + SVR + 4, &v, 4, true), 0);
  assert_int_equal(pt_apic_r(&t, 0, SVR), 0xff);
  /* An access that is not a CPU's reaches no APIC. */
  assert_int_equal(pt_mmio(&t, NULL, PT_LAPIC + SVR, &v, 4, true), 0);
  assert_int_equal(dt_stat(l, "bad_access"), 5);
  /* Reserved registers: ESR bit 7 (illegal register address). */
  assert_int_equal(esr(&t, 0), 0);
  static const unsigned reserved[] = {0x000, 0x040, 0x070, 0x2f0,
                                      0x3a0, 0x3f0, 0x400, 0xff0};
  for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
    assert_int_equal(pt_apic_r(&t, 0, reserved[i]), 0);
    assert_int_equal(esr(&t, 0), 0x80);
    pt_apic_w(&t, 0, reserved[i], 1);
    assert_int_equal(esr(&t, 0), 0x80);
    assert_int_equal(esr(&t, 0), 0); /* a write latches anew */
  }
  assert_int_equal(esr(&t, 1), 0); /* another CPU's ESR */
  /* Read-only registers ignore writes; the ID register is writable. */
  pt_apic_w(&t, 0, VER, 0);
  pt_apic_w(&t, 0, PPR, 0xff);
  pt_apic_w(&t, 0, ISR, 0xffffffffu);
  assert_int_equal(pt_apic_r(&t, 0, VER), 0x00050014);
  assert_int_equal(pt_apic_r(&t, 0, PPR), 0);
  assert_int_equal(pt_apic_r(&t, 0, ISR), 0);
  pt_apic_w(&t, 0, ID, 0x12345678);
  assert_int_equal(pt_apic_r(&t, 0, ID), 0x12000000);
  pt_fini(&t);
}

/* Self-IPIs: the ICR's "self" shorthand, fixed, edge. */
static void self_ipi(struct pt *t, unsigned cpu, uint8_t vector) {
  pt_apic_w(t, cpu, ICR, 0x40000u | vector);
}

static void test_priorities(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_apic_on(&t, 0);
  self_ipi(&t, 0, 0x31);
  self_ipi(&t, 0, 0x52);
  self_ipi(&t, 0, 0x53);
  assert_int_equal(vec_word(&t, 0, IRR, 0x31), 1);
  assert_int_equal(vec_word(&t, 0, IRR, 0x53), 1);
  pt_take(&t, 0, 0x53);
  assert_int_equal(vec_word(&t, 0, IRR, 0x53), 0);
  assert_int_equal(vec_word(&t, 0, ISR, 0x53), 1);
  assert_int_equal(pt_apic_r(&t, 0, PPR), 0x50);
  pt_none(&t, 0); /* 0x52 is of the class in service */
  pt_apic_w(&t, 0, EOI, 0);
  assert_int_equal(vec_word(&t, 0, ISR, 0x53), 0);
  pt_take(&t, 0, 0x52);
  pt_apic_w(&t, 0, EOI, 0);
  /* TPR holds back classes at or below it. */
  pt_apic_w(&t, 0, TPR, 0x3f);
  assert_int_equal(pt_apic_r(&t, 0, PPR), 0x3f);
  assert_int_equal(pt_apic_r(&t, 0, APR), 0x3f);
  pt_none(&t, 0);
  pt_apic_w(&t, 0, TPR, 0x2f);
  pt_take(&t, 0, 0x31);
  assert_int_equal(pt_apic_r(&t, 0, PPR), 0x30);
  /* An EOI with nothing in service is harmless. */
  pt_apic_w(&t, 0, EOI, 0);
  pt_apic_w(&t, 0, EOI, 0);
  assert_int_equal(pt_apic_r(&t, 0, PPR), 0x2f);
  /* The same vector twice before it is taken: one interrupt. */
  self_ipi(&t, 0, 0x60);
  self_ipi(&t, 0, 0x60);
  pt_take(&t, 0, 0x60);
  pt_none(&t, 0);
  assert_int_equal(dt_stat(vmm_dev_find(t.vm, "lapic"), "coalesced"), 1);
  pt_fini(&t);
}

static void test_ipis(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 3);
  vmm_dev *l = vmm_dev_find(t.vm, "lapic");
  for (unsigned i = 0; i < 3; i++)
    pt_apic_on(&t, i);
  /* Physical. ICR reads back without delivery status (done at once). */
  ipi(&t, 0, 2, 0x4041);
  assert_int_equal(pt_apic_r(&t, 0, ICR), 0x4041);
  assert_int_equal(pt_apic_r(&t, 0, ICR_HI), 0x02000000);
  pt_none(&t, 1);
  take_eoi(&t, 2, 0x41);
  /* Logical flat and cluster. */
  pt_apic_w(&t, 1, LDR, 0x04000000);
  pt_apic_w(&t, 2, LDR, 0x08000000);
  ipi(&t, 0, 0x0c, 0x4842);
  take_eoi(&t, 1, 0x42);
  take_eoi(&t, 2, 0x42);
  for (unsigned i = 0; i < 3; i++)
    pt_apic_w(&t, i, DFR, 0x0fffffff);
  pt_apic_w(&t, 1, LDR, 0x31000000);
  pt_apic_w(&t, 2, LDR, 0x32000000);
  ipi(&t, 0, 0x32, 0x4843);
  pt_none(&t, 1);
  take_eoi(&t, 2, 0x43);
  /* Shorthands: all including self, all excluding self. */
  ipi(&t, 1, 0, 0x84044);
  for (unsigned i = 0; i < 3; i++)
    take_eoi(&t, i, 0x44);
  ipi(&t, 1, 0, 0xc4045);
  take_eoi(&t, 0, 0x45);
  pt_none(&t, 1);
  take_eoi(&t, 2, 0x45);
  /* NMI. */
  ipi(&t, 0, 1, 0x4400);
  assert_true(vmm__vcpu_nmi_ack(t.vcpu[1]));
  assert_false(vmm__vcpu_nmi_pending(t.vcpu[2]));
  /* No such APIC: dropped; an illegal vector is not sent (ESR bit 5). */
  long long dropped = dt_stat(l, "ipi_dropped");
  ipi(&t, 0, 9, 0x4046);
  assert_int_equal(dt_stat(l, "ipi_dropped"), dropped + 1);
  ipi(&t, 0, 1, 0x400f);
  pt_none(&t, 1);
  assert_int_equal(esr(&t, 0), 0x20);
  /* A vector below 16 arriving (from an LVT): ESR bit 6, and the error
     LVT interrupts. */
  pt_apic_w(&t, 1, LVT_ERROR, 0x4e);
  pt_apic_w(&t, 1, LVT_TIMER, 0x05);
  pt_apic_w(&t, 1, TDCR, 0xb);
  pt_apic_w(&t, 1, TMICT, 10);
  pt_at(&t, pt_now(&t) + 100);
  take_eoi(&t, 1, 0x4e);
  assert_int_equal(esr(&t, 1), 0x40);
  pt_fini(&t);
}

static void test_software_disable(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 2);
  pt_apic_on(&t, 0);
  pt_apic_on(&t, 1);
  pt_apic_w(&t, 1, LVT_LINT1, 0x400);
  pt_apic_w(&t, 1, LVT_TIMER, 0x30);
  pt_apic_w(&t, 1, SVR, 0x0ff); /* disabled: every LVT masked */
  assert_int_equal(pt_apic_r(&t, 1, LVT_LINT1), 0x10400);
  assert_int_equal(pt_apic_r(&t, 1, LVT_TIMER), 0x10030);
  pt_apic_w(&t, 1, LVT_TIMER, 0x30); /* cannot unmask while disabled */
  assert_int_equal(pt_apic_r(&t, 1, LVT_TIMER), 0x10030);
  ipi(&t, 0, 1, 0x4050); /* fixed: not accepted */
  pt_none(&t, 1);
  ipi(&t, 0, 1, 0x4400); /* NMI still is */
  assert_true(vmm__vcpu_nmi_ack(t.vcpu[1]));
  pt_apic_w(&t, 1, SVR, 0x1ff);
  pt_apic_w(&t, 1, LVT_TIMER, 0x30);
  assert_int_equal(pt_apic_r(&t, 1, LVT_TIMER), 0x30);
  pt_fini(&t);
}

static void test_timer_one_shot(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_apic_on(&t, 0);
  pt_apic_w(&t, 0, TDCR, 0xb); /* divide by 1: 1 ns per count at 1 GHz */
  pt_apic_w(&t, 0, LVT_TIMER, 0x40);
  pt_apic_w(&t, 0, TMICT, 1000);
  pt_at(&t, 400);
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 600);
  pt_none(&t, 0);
  pt_at(&t, 1000);
  pt_take(&t, 0, 0x40);
  pt_apic_w(&t, 0, EOI, 0);
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 0);
  assert_int_equal(pt_apic_r(&t, 0, TMICT), 1000);
  pt_at(&t, 5000);
  pt_none(&t, 0); /* one shot */
  /* Divide by 2 (TDCR 0), and a rate change midway keeps the count. */
  pt_apic_w(&t, 0, TDCR, 0x0);
  pt_apic_w(&t, 0, TMICT, 1000); /* 2000 ns */
  pt_at(&t, 5000 + 1000);
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 500);
  pt_apic_w(&t, 0, TDCR, 0xb);
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 500);
  pt_at(&t, 6000 + 499);
  pt_none(&t, 0);
  pt_at(&t, 6000 + 500);
  pt_take(&t, 0, 0x40);
  pt_apic_w(&t, 0, EOI, 0);
  /* Masked: counts, does not interrupt. Initial count 0 stops it. */
  pt_apic_w(&t, 0, LVT_TIMER, 0x10040);
  pt_apic_w(&t, 0, TMICT, 100);
  pt_at(&t, 7000);
  pt_none(&t, 0);
  pt_apic_w(&t, 0, LVT_TIMER, 0x40);
  pt_apic_w(&t, 0, TMICT, 100);
  pt_apic_w(&t, 0, TMICT, 0);
  pt_at(&t, 8000);
  pt_none(&t, 0);
  pt_fini(&t);
}

static void test_timer_periodic(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  vmm_dev *l = vmm_dev_find(t.vm, "lapic");
  pt_apic_on(&t, 0);
  pt_apic_w(&t, 0, TDCR, 0xb);
  pt_apic_w(&t, 0, LVT_TIMER, 0x20040);
  pt_apic_w(&t, 0, TMICT, 200000); /* 200 us */
  for (int i = 1; i <= 5; i++) {
    pt_at(&t, i * 200000ll - 1);
    pt_none(&t, 0);
    pt_at(&t, i * 200000ll);
    pt_take(&t, 0, 0x40);
    pt_apic_w(&t, 0, EOI, 0);
  }
  pt_at(&t, 5 * 200000ll + 50000);
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 150000);
  /* Five periods late: one now, four owed and given on each INTA. */
  pt_at(&t, 10 * 200000ll);
  for (int i = 0; i < 5; i++) {
    pt_take(&t, 0, 0x40);
    pt_none(&t, 0);
    pt_apic_w(&t, 0, EOI, 0);
  }
  pt_none(&t, 0);
  assert_int_equal(dt_stat(l, "timer_irqs"), 10);
  /* Not taken in time: the next one is owed, not lost. */
  pt_at(&t, 11 * 200000ll);
  pt_at(&t, 12 * 200000ll);
  pt_take(&t, 0, 0x40);
  pt_apic_w(&t, 0, EOI, 0);
  pt_take(&t, 0, 0x40);
  pt_apic_w(&t, 0, EOI, 0);
  pt_none(&t, 0);
  /* A mode change disarms the timer. */
  pt_apic_w(&t, 0, LVT_TIMER, 0x40);
  assert_int_equal(pt_apic_r(&t, 0, TMICT), 0);
  pt_at(&t, 20 * 200000ll);
  pt_none(&t, 0);
  /* A tiny period interrupts at most every 100 us. */
  pt_apic_w(&t, 0, LVT_TIMER, 0x20040);
  pt_apic_w(&t, 0, TMICT, 1);
  long long before = dt_stat(l, "timer_irqs");
  for (int i = 1; i <= 10; i++)
    pt_at(&t, 20 * 200000ll + i * 50000ll);
  long long n = dt_stat(l, "timer_irqs") - before;
  assert_true(n >= 1 && n <= 6);
  pt_fini(&t);
}

static void test_tsc_deadline(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  struct vmm_cpuid_entry e[VMM_CPUID_MAX_ENTRIES];
  size_t ne = VMM_CPUID_MAX_ENTRIES;
  assert_ok(vmm_vcpu_get_cpuid(t.vcpu[0], e, &ne));
  uint32_t ecx1 = 0;
  for (size_t i = 0; i < ne; i++)
    if (e[i].function == 1)
      ecx1 = e[i].ecx;
  assert_false(ecx1 & (1u << 21)); /* no x2APIC */
  uint64_t khz = t.vm->tsc_khz;
  assert_int_equal((ecx1 >> 24) & 1, khz != 0);
  uint64_t v = 0;
  if (khz == 0) {
    /* The mode cannot be selected, the MSR is not the platform's. */
    pt_apic_w(&t, 0, LVT_TIMER, 0x40040);
    assert_int_equal(pt_apic_r(&t, 0, LVT_TIMER), 0x40);
    assert_int_equal(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, false),
                     VMM_IO_DECLINED);
    pt_fini(&t);
    print_message("skipped: %s cannot give the platform IA32_TSC_DEADLINE "
                  "here (no user-space MSR exits)\n",
                  vmm_engine_name(vmmt_engine));
    skip();
  }
  pt_apic_on(&t, 0);
  /* Outside the mode the MSR reads 0 and ignores writes. */
  v = 12345;
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, true));
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, false));
  assert_int_equal(v, 0);
  pt_apic_w(&t, 0, LVT_TIMER, 0x40040);
  assert_int_equal(pt_apic_r(&t, 0, LVT_TIMER), 0x40040);
  pt_apic_w(&t, 0, TMICT, 1000); /* ignored in this mode */
  assert_int_equal(pt_apic_r(&t, 0, TMICT), 0);
  /* A deadline 10 ms of guest TSC ahead. The guest's TSC runs in real
     time meanwhile and the manual clock does not: allow it 5 ms. */
  struct vmm_msr tsc = {.index = 0x10};
  assert_ok(vmm_vcpu_get_msrs(t.vcpu[0], &tsc, 1));
  uint64_t deadline = tsc.value + 10 * khz;
  int64_t t0 = pt_now(&t);
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &deadline, true));
  v = 0;
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, false));
  assert_int_equal(v, deadline);
  pt_at(&t, t0 + 5000000);
  pt_none(&t, 0);
  pt_at(&t, t0 + 10000000);
  pt_take(&t, 0, 0x40);
  pt_apic_w(&t, 0, EOI, 0);
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, false));
  assert_int_equal(v, 0); /* disarmed by firing */
  /* A deadline in the past fires at once; 0 disarms. */
  v = 1;
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, true));
  pt_at(&t, pt_now(&t));
  pt_take(&t, 0, 0x40);
  pt_apic_w(&t, 0, EOI, 0);
  v = tsc.value + 10 * khz;
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, true));
  v = 0;
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, true));
  pt_at(&t, pt_now(&t) + 20000000);
  pt_none(&t, 0);
  /* Leaving the mode disarms as well. */
  v = tsc.value + 10 * khz;
  assert_ok(vmm__vcpu_msr(t.vcpu[0], 0x6e0, &v, true));
  pt_apic_w(&t, 0, LVT_TIMER, 0x40);
  pt_at(&t, pt_now(&t) + 20000000);
  pt_none(&t, 0);
  /* Not the platform's MSRs. */
  assert_int_equal(vmm__vcpu_msr(t.vcpu[0], 0x6e1, &v, false), VMM_IO_DECLINED);
  pt_fini(&t);
}

/* LINT0 in Fixed and NMI modes takes the PIC's rising edges. */
static void test_lint0(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_apic_on(&t, 0);
  pt_pic_init(t.vm, 0xfe, 0xff);
  pt_apic_w(&t, 0, LVT_LINT0, 0x0070);
  pt_line(t.vm, 0, true);
  pt_take(&t, 0, 0x70);
  pt_apic_w(&t, 0, EOI, 0);
  pt_none(&t, 0); /* the PIC's request stays, but no new edge */
  dt_outb(t.vm, 0x21, 0xff);
  pt_apic_w(&t, 0, LVT_LINT0, 0x0400);
  dt_outb(t.vm, 0x21, 0xfe);
  assert_true(vmm__vcpu_nmi_ack(t.vcpu[0]));
  pt_fini(&t);
}

/* INIT: the target's APIC returns to its INIT state, ID kept. */
static void test_init(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 2);
  pt_apic_on(&t, 0);
  pt_apic_on(&t, 1);
  pt_apic_w(&t, 1, ID, 0x07000000);
  pt_apic_w(&t, 1, TPR, 0x20);
  pt_apic_w(&t, 1, LDR, 0x01000000);
  self_ipi(&t, 1, 0x55);
  ipi(&t, 0, 7, 0x8500); /* INIT level de-assert: nothing */
  assert_int_equal(pt_apic_r(&t, 1, TPR), 0x20);
  ipi(&t, 0, 7, 0x4500);
  assert_int_equal(pt_apic_r(&t, 1, ID), 0x07000000);
  assert_int_equal(pt_apic_r(&t, 1, TPR), 0);
  assert_int_equal(pt_apic_r(&t, 1, LDR), 0);
  assert_int_equal(pt_apic_r(&t, 1, SVR), 0xff);
  assert_int_equal(pt_apic_r(&t, 1, LVT_LINT0), 0x10000);
  pt_none(&t, 1);
  assert_true(atomic_load(&t.vcpu[1]->irq_bits) & VMM__IRQ_INIT);
  pt_fini(&t);
}

/* CR8 is TPR[7:4], both ways, and in the sregs. */
static void test_cr8(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  vmm__vcpu_set_tpr(t.vcpu[0], 5);
  assert_int_equal(pt_apic_r(&t, 0, TPR), 0x50);
  pt_apic_w(&t, 0, TPR, 0x7f);
  assert_int_equal(vmm__vcpu_tpr(t.vcpu[0]), 7);
  struct vmm_sregs s;
  assert_ok(vmm_vcpu_get_sregs(t.vcpu[0], &s));
  assert_int_equal(s.cr8, 7);
  s.cr8 = 3;
  assert_ok(vmm_vcpu_set_sregs(t.vcpu[0], &s));
  assert_int_equal(pt_apic_r(&t, 0, TPR), 0x30);
  pt_fini(&t);
}

static void test_create_and_state(void **state) {
  (void)state;
  struct vmm_lapic_config c;
  vmm_lapic_config_init(&c);
  assert_int_equal(c.base, PT_LAPIC);
  assert_int_equal(c.timer_hz, 1000000000ull);
  PT_NEEDS_PLATFORM(vmm_lapic_create, &c);

  struct pt t;
  pt_init(&t, 2);
  assert_vmm(vmm_lapic_create(t.vm, &c, NULL), VMM_EEXIST);
  vmm_dev *l = vmm_dev_find(t.vm, "lapic");
  assert_ok(vmm_dev_detach(l));
  c.base = PT_LAPIC + 8;
  assert_vmm(vmm_lapic_create(t.vm, &c, NULL), VMM_EINVAL);
  c.base = PT_LAPIC;
  c.timer_hz = 999999;
  assert_vmm(vmm_lapic_create(t.vm, &c, NULL), VMM_EINVAL);
  c.timer_hz = 100000000; /* 100 MHz: 10 ns per count */
  assert_ok(vmm_lapic_create(t.vm, &c, &l));

  pt_apic_on(&t, 0);
  pt_apic_on(&t, 1);
  pt_apic_w(&t, 0, TDCR, 0xb);
  pt_apic_w(&t, 0, LVT_TIMER, 0x20040);
  pt_apic_w(&t, 0, TMICT, 100000); /* 1 ms */
  pt_at(&t, 400000);
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 60000);
  self_ipi(&t, 1, 0x61);
  pt_take(&t, 1, 0x61);
  self_ipi(&t, 1, 0x62);
  pt_apic_w(&t, 1, TPR, 0x10);
  pt_roundtrip(l);

  json_t *s;
  assert_ok(vmm_dev_save(l, &s));
  assert_ok(vmm_dev_reset(l));
  assert_int_equal(pt_apic_r(&t, 0, TMICT), 0);
  assert_ok(vmm_dev_restore(l, s));
  assert_int_equal(pt_apic_r(&t, 0, TMCCT), 60000);
  assert_int_equal(pt_apic_r(&t, 1, TPR), 0x10);
  pt_at(&t, 999999);
  pt_none(&t, 0);
  pt_at(&t, 1000000);
  pt_take(&t, 0, 0x40);
  pt_none(&t, 1); /* 0x62 waits behind 0x61 in service */
  pt_apic_w(&t, 1, EOI, 0);
  pt_take(&t, 1, 0x62);

  json_t *cpus = json_object_get(s, "cpus");
  json_t *bad = json_deep_copy(cpus);
  json_array_remove(bad, 1);
  pt_refuse(l, "cpus", bad);
  bad = json_deep_copy(cpus);
  json_t *irr = json_array();
  for (int i = 0; i < 8; i++)
    json_array_append_new(irr, json_integer(i == 0 ? 0x8000 : 0));
  json_object_set_new(json_array_get(bad, 0), "irr", irr); /* vector 15 */
  pt_refuse(l, "cpus", bad);
  bad = json_deep_copy(cpus);
  json_object_set_new(json_array_get(bad, 0), "dfr", json_integer(0));
  pt_refuse(l, "cpus", bad);
  bad = json_deep_copy(cpus);
  json_object_set_new(json_array_get(bad, 1), "timer_remaining_ns",
                      json_integer(-2));
  pt_refuse(l, "cpus", bad);
  bad = json_deep_copy(cpus);
  json_t *lvt = json_deep_copy(json_object_get(json_array_get(cpus, 0), "lvt"));
  json_array_set_new(lvt, 5, json_integer(0x700)); /* error LVT: no DM */
  json_object_set_new(json_array_get(bad, 0), "lvt", lvt);
  pt_refuse(l, "cpus", bad);
  json_decref(s);
  pt_fini(&t);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_power_on),
      cmocka_unit_test(test_access_rules),
      cmocka_unit_test(test_priorities),
      cmocka_unit_test(test_ipis),
      cmocka_unit_test(test_software_disable),
      cmocka_unit_test(test_timer_one_shot),
      cmocka_unit_test(test_timer_periodic),
      cmocka_unit_test(test_tsc_deadline),
      cmocka_unit_test(test_lint0),
      cmocka_unit_test(test_init),
      cmocka_unit_test(test_cr8),
      cmocka_unit_test(test_create_and_state),
  };
  return vmmt_run_group(tests);
}
