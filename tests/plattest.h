/*
 * Helpers of the interrupt platform's tests (test_dev_pic.c, test_dev_pit.c,
 * test_dev_ioapic.c, test_dev_lapic.c, test_platform.c, test_plat_fuzz.c),
 * on top of devtest.h.
 *
 * Register models are driven through the VM's buses as a vCPU's access
 * would be dispatched (MMIO accesses carry the vCPU whose local APIC they
 * reach), timers through the clock's manual source (time moves only when
 * the test says so), and interrupts are taken with the engines' own
 * acceptance calls (vmm__vcpu_irq_pending(), vmm__vcpu_irq_ack()), so a
 * test plays the CPU exactly as an engine does.
 */
#ifndef LIBVMM_PLATTEST_H
#define LIBVMM_PLATTEST_H

#include "devtest.h"

#define PT_LAPIC 0xfee00000ull
#define PT_IOAPIC 0xfec00000ull
#define PT_NS_MS 1000000ll

/* A VM with the user-space platform, RAM, and vCPUs 0..n-1. With manual,
   time is the clock's manual source starting at 0. */
struct pt {
  vmm_vm *vm;
  vmm_vcpu *vcpu[4];
  unsigned n;
};

static inline void pt_init_flags(struct pt *t, unsigned n, uint32_t flags,
                                 bool manual) {
  memset(t, 0, sizeof(*t));
  t->vm = dt_vm_flags(VMM_VM_IRQCHIP_USER | flags, n);
  t->n = n;
  if (manual)
    assert_ok(vmm__clock_set_manual(t->vm->clock, 0));
  for (unsigned i = 0; i < n; i++)
    assert_ok(vmm_vcpu_create(t->vm, i, &t->vcpu[i]));
}

static inline void pt_init(struct pt *t, unsigned n) {
  pt_init_flags(t, n, 0, true);
}

static inline void pt_fini(struct pt *t) {
  assert_ok(vmm_vm_destroy(t->vm));
  t->vm = NULL;
}

/* A platform device's create function refuses a NULL VM and a VM without
   the user-space platform. */
#define PT_NEEDS_PLATFORM(create, cfg)                                         \
  do {                                                                         \
    vmm_vm *pt_plain_ = dt_vm();                                               \
    assert_vmm(create(pt_plain_, (cfg), NULL), VMM_ENOTSUP);                   \
    assert_ok(vmm_vm_destroy(pt_plain_));                                      \
    assert_vmm(create(NULL, (cfg), NULL), VMM_EINVAL);                         \
  } while (0)

/* Manual time, in nanoseconds since the VM was created. */
static inline void pt_at(struct pt *t, int64_t ns) {
  vmm__clock_advance(t->vm->clock, ns);
}

static inline int64_t pt_now(struct pt *t) {
  return vmm__clock_now(t->vm->clock);
}

/* An MMIO access by vCPU cpu (NULL: not a CPU's). Returns the bus's
   answer: 0 handled, VMM_IO_DECLINED, or an error. */
static inline int pt_mmio(struct pt *t, vmm_vcpu *cpu, uint64_t addr,
                          void *data, uint32_t len, bool is_write) {
  if (!is_write)
    memset(data, 0, len);
  return vmm__iobus_dispatch(&t->vm->mmio, cpu, addr, data, len, is_write);
}

static inline void pt_w32(struct pt *t, vmm_vcpu *cpu, uint64_t addr,
                          uint32_t v) {
  assert_int_equal(pt_mmio(t, cpu, addr, &v, 4, true), 0);
}

static inline uint32_t pt_r32(struct pt *t, vmm_vcpu *cpu, uint64_t addr) {
  uint32_t v = 0;
  assert_int_equal(pt_mmio(t, cpu, addr, &v, 4, false), 0);
  return v;
}

/* Local APIC register of vCPU i. */
static inline void pt_apic_w(struct pt *t, unsigned i, unsigned reg,
                             uint32_t v) {
  pt_w32(t, t->vcpu[i], PT_LAPIC + reg, v);
}

static inline uint32_t pt_apic_r(struct pt *t, unsigned i, unsigned reg) {
  return pt_r32(t, t->vcpu[i], PT_LAPIC + reg);
}

/* IOAPIC register through IOREGSEL/IOWIN. */
static inline void pt_ioapic_w(struct pt *t, uint32_t reg, uint32_t v) {
  pt_w32(t, NULL, PT_IOAPIC, reg);
  pt_w32(t, NULL, PT_IOAPIC + 0x10, v);
}

static inline uint32_t pt_ioapic_r(struct pt *t, uint32_t reg) {
  pt_w32(t, NULL, PT_IOAPIC, reg);
  return pt_r32(t, NULL, PT_IOAPIC + 0x10);
}

/* Redirection entry of pin: low and high dwords. */
static inline void pt_route(struct pt *t, unsigned pin, uint32_t lo,
                            uint8_t dest) {
  pt_ioapic_w(t, 0x11 + 2 * pin, (uint32_t)dest << 24);
  pt_ioapic_w(t, 0x10 + 2 * pin, lo);
}

/* The CPU side: is an interrupt deliverable, and the INTA cycle. */
static inline bool pt_pending(struct pt *t, unsigned i) {
  return vmm__vcpu_irq_pending(t->vcpu[i]);
}

static inline int pt_ack(struct pt *t, unsigned i) {
  return vmm__vcpu_irq_ack(t->vcpu[i]);
}

/* Take the interrupt vCPU i has pending, which must be want. */
static inline void pt_take(struct pt *t, unsigned i, int want) {
  if (!pt_pending(t, i))
    fail_msg("vCPU %u has no interrupt pending, expected vector 0x%x", i, want);
  int got = pt_ack(t, i);
  if (got != want)
    fail_msg("vCPU %u took vector 0x%x, expected 0x%x", i, got, want);
}

static inline void pt_none(struct pt *t, unsigned i) {
  if (pt_pending(t, i))
    fail_msg("vCPU %u has an interrupt pending (vector 0x%x)", i, pt_ack(t, i));
}

/* Enable vCPU i's APIC (SVR, spurious vector 0xff). */
static inline void pt_apic_on(struct pt *t, unsigned i) {
  pt_apic_w(t, i, 0xf0, 0x1ff);
}

/* Initialize both PICs: vectors 0x20/0x28, cascade, 8086 mode, masks. */
static inline void pt_pic_init(vmm_vm *vm, uint8_t mmask, uint8_t smask) {
  static const uint8_t seq[] = {0x11, 0x20, 0x04, 0x01};
  static const uint8_t sseq[] = {0x11, 0x28, 0x02, 0x01};
  dt_outb(vm, 0x20, seq[0]);
  dt_outb(vm, 0xa0, sseq[0]);
  for (int i = 1; i < 4; i++) {
    dt_outb(vm, 0x21, seq[i]);
    dt_outb(vm, 0xa1, sseq[i]);
  }
  dt_outb(vm, 0x21, mmask);
  dt_outb(vm, 0xa1, smask);
}

static inline void pt_line(vmm_vm *vm, uint32_t gsi, bool level) {
  assert_ok(vmm_vm_irq_line(vm, gsi, level));
}

/* Restore a state with one member replaced: must be refused, and leave
   the device's state as it was. */
static inline void pt_refuse(vmm_dev *dev, const char *path_key,
                             json_t *value) {
  json_t *s = NULL, *after = NULL;
  assert_ok(vmm_dev_save(dev, &s));
  json_t *copy = json_deep_copy(s);
  json_object_set_new(copy, path_key, value);
  assert_vmm(vmm_dev_restore(dev, copy), VMM_EINVAL);
  assert_ok(vmm_dev_save(dev, &after));
  assert_true(json_equal(s, after));
  json_decref(copy);
  json_decref(after);
  json_decref(s);
}

/* Save, restore, save: equal. */
static inline void pt_roundtrip(vmm_dev *dev) {
  json_t *a = NULL, *b = NULL;
  assert_ok(vmm_dev_save(dev, &a));
  assert_ok(vmm_dev_restore(dev, a));
  assert_ok(vmm_dev_save(dev, &b));
  if (!json_equal(a, b)) {
    char *x = json_dumps(a, JSON_SORT_KEYS), *y = json_dumps(b, JSON_SORT_KEYS);
    fail_msg("state changed by restore:\n%s\n%s", x, y);
  }
  json_decref(a);
  json_decref(b);
}

/* Count rising edges per line through the host's interrupt handler. */
struct pt_edges {
  unsigned rises[VMM_IRQ_LINES];
  bool level[VMM_IRQ_LINES];
};

static inline void pt_edge_fn(vmm_vm *vm, uint32_t gsi, bool level,
                              void *opaque) {
  struct pt_edges *e = opaque;
  (void)vm;
  if (level && !e->level[gsi])
    e->rises[gsi]++;
  e->level[gsi] = level;
}

#endif
