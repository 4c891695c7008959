/*
 * The I/O APIC (include/libvmm/ioapic.h): its registers and their
 * read-only and reserved bits, redirection entries out of range, access
 * rules, edge and level delivery with remote IRR and both kinds of EOI,
 * destinations (physical, logical, broadcast, lowest priority, absent
 * APICs), NMI and ExtINT delivery, creation errors and saved states.
 */
#include "plattest.h"

#define RTE(pin) (0x10 + 2 * (pin))
#define LEVEL (1u << 15)
#define MASKED (1u << 16)
#define REMOTE_IRR (1u << 14)
#define LOGICAL (1u << 11)

static void test_registers(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  assert_int_equal(pt_ioapic_r(&t, 0x01), 0x00170020);
  assert_int_equal(pt_ioapic_r(&t, 0x00), 0);
  pt_ioapic_w(&t, 0x00, 0xff000000u);
  assert_int_equal(pt_ioapic_r(&t, 0x00), 0x0f000000u); /* 4-bit ID */
  assert_int_equal(pt_ioapic_r(&t, 0x02), 0x0f000000u);
  pt_ioapic_w(&t, 0x01, 0); /* read-only */
  assert_int_equal(pt_ioapic_r(&t, 0x01), 0x00170020);
  for (unsigned pin = 0; pin < 24; pin++) {
    assert_int_equal(pt_ioapic_r(&t, RTE(pin)), MASKED);
    assert_int_equal(pt_ioapic_r(&t, RTE(pin) + 1), 0);
  }
  /* Only the writable bits stick: not delivery status, not remote IRR,
     not the reserved ones. */
  pt_ioapic_w(&t, RTE(5), 0xffffffffu);
  pt_ioapic_w(&t, RTE(5) + 1, 0xffffffffu);
  assert_int_equal(pt_ioapic_r(&t, RTE(5)), 0x0001afffu);
  assert_int_equal(pt_ioapic_r(&t, RTE(5) + 1), 0xff000000u);
  /* IOREGSEL keeps 8 bits. */
  pt_w32(&t, NULL, PT_IOAPIC, 0x1234);
  assert_int_equal(pt_r32(&t, NULL, PT_IOAPIC), 0x34);
  pt_fini(&t);
}

static void test_bad_registers_and_accesses(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  vmm_dev *io = vmm_dev_find(t.vm, "ioapic");
  /* Past pin 23 and between the fixed registers: 0, writes ignored. */
  pt_ioapic_w(&t, 0x40, 0x12345678);
  assert_int_equal(pt_ioapic_r(&t, 0x40), 0);
  assert_int_equal(pt_ioapic_r(&t, 0xff), 0);
  assert_int_equal(pt_ioapic_r(&t, 0x03), 0);
  assert_int_equal(dt_stat(io, "bad_register"), 4);
  /* 8-byte accesses, offsets inside a register or between them. */
  uint64_t v = 0x1111;
  assert_int_equal(pt_mmio(&t, NULL, PT_IOAPIC, &v, 8, true), 0);
  uint32_t w = 0x22;
  assert_int_equal(pt_mmio(&t, NULL, PT_IOAPIC + 4, &w, 4, true), 0);
  assert_int_equal(pt_mmio(&t, NULL, PT_IOAPIC + 0x20, &w, 4, false), 0);
  assert_int_equal(w, 0);
  assert_int_equal(pt_mmio(&t, NULL, PT_IOAPIC + 0xffc, &w, 4, false), 0);
  assert_int_equal(dt_stat(io, "bad_access"), 4);
  assert_int_equal(pt_r32(&t, NULL, PT_IOAPIC), 0x03); /* the last select */
  /* Byte accesses at a register's offset are served. */
  uint8_t b = 0x01;
  assert_int_equal(pt_mmio(&t, NULL, PT_IOAPIC, &b, 1, true), 0);
  assert_int_equal(pt_r32(&t, NULL, PT_IOAPIC + 0x10), 0x00170020);
  /* Leaving the 4 KiB window is not the IOAPIC's access. */
  assert_int_equal(pt_mmio(&t, NULL, PT_IOAPIC + 0xffe, &w, 4, false),
                   VMM_IO_DECLINED);
  pt_fini(&t);
}

static void test_edge(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_apic_on(&t, 0);
  pt_route(&t, 4, 0x34, 0);
  pt_line(t.vm, 4, true);
  pt_take(&t, 0, 0x34);
  pt_apic_w(&t, 0, 0xb0, 0);
  pt_none(&t, 0); /* still high: no new edge */
  pt_line(t.vm, 4, false);
  pt_line(t.vm, 4, true);
  pt_take(&t, 0, 0x34);
  pt_apic_w(&t, 0, 0xb0, 0);
  /* An edge while masked is lost. */
  pt_line(t.vm, 4, false);
  pt_route(&t, 4, 0x34 | MASKED, 0);
  pt_line(t.vm, 4, true);
  pt_route(&t, 4, 0x34, 0);
  pt_none(&t, 0);
  pt_fini(&t);
}

static void test_level(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_apic_on(&t, 0);
  pt_route(&t, 9, 0x59 | LEVEL, 0);
  pt_line(t.vm, 9, true);
  assert_true(pt_pending(&t, 0));
  assert_int_equal(pt_ioapic_r(&t, RTE(9)), 0x59 | LEVEL | REMOTE_IRR);
  assert_int_equal(pt_apic_r(&t, 0, 0x180 + 0x10 * 2), 1u << (0x59 - 64));
  pt_take(&t, 0, 0x59);
  /* Still asserted: sent again after the EOI (broadcast by the APIC). */
  pt_apic_w(&t, 0, 0xb0, 0);
  pt_take(&t, 0, 0x59);
  pt_line(t.vm, 9, false);
  pt_apic_w(&t, 0, 0xb0, 0);
  pt_none(&t, 0);
  assert_int_equal(pt_ioapic_r(&t, RTE(9)), 0x59 | LEVEL);
  /* The IOAPIC's own EOI register works too. */
  pt_line(t.vm, 9, true);
  pt_take(&t, 0, 0x59);
  pt_w32(&t, NULL, PT_IOAPIC + 0x40, 0x58); /* other vector: nothing */
  assert_int_equal(pt_ioapic_r(&t, RTE(9)), 0x59 | LEVEL | REMOTE_IRR);
  pt_w32(&t, NULL, PT_IOAPIC + 0x40, 0x59);
  /* Sent again, held back by the same vector in service. */
  assert_int_equal(pt_apic_r(&t, 0, 0x200 + 0x10 * 2), 1u << (0x59 - 64));
  pt_none(&t, 0);
  pt_apic_w(&t, 0, 0xb0, 0);
  pt_take(&t, 0, 0x59);
  /* Masked: not sent until unmasked; switching to edge drops remote IRR. */
  pt_route(&t, 9, 0x59 | LEVEL | MASKED, 0);
  pt_apic_w(&t, 0, 0xb0, 0);
  pt_none(&t, 0);
  pt_route(&t, 9, 0x59 | LEVEL, 0);
  pt_take(&t, 0, 0x59);
  pt_route(&t, 9, 0x59, 0);
  assert_int_equal(pt_ioapic_r(&t, RTE(9)), 0x59);
  pt_fini(&t);
}

static void test_destinations(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 2);
  pt_apic_on(&t, 0);
  pt_apic_on(&t, 1);
  vmm_dev *lapic = vmm_dev_find(t.vm, "lapic");
  /* Physical. */
  pt_route(&t, 5, 0x45, 1);
  pt_line(t.vm, 5, true);
  pt_none(&t, 0);
  pt_take(&t, 1, 0x45);
  pt_apic_w(&t, 1, 0xb0, 0);
  pt_line(t.vm, 5, false);
  /* Logical, flat model. */
  pt_apic_w(&t, 0, 0xd0, 0x01000000);
  pt_apic_w(&t, 1, 0xd0, 0x02000000);
  pt_route(&t, 6, 0x46 | LOGICAL, 0x02);
  pt_line(t.vm, 6, true);
  pt_none(&t, 0);
  pt_take(&t, 1, 0x46);
  pt_apic_w(&t, 1, 0xb0, 0);
  pt_line(t.vm, 6, false);
  /* Logical, cluster model: cluster 1, member bits. */
  pt_apic_w(&t, 0, 0xe0, 0x0fffffff);
  pt_apic_w(&t, 1, 0xe0, 0x0fffffff);
  pt_apic_w(&t, 0, 0xd0, 0x11000000);
  pt_apic_w(&t, 1, 0xd0, 0x21000000);
  pt_route(&t, 7, 0x47 | LOGICAL, 0x21);
  pt_line(t.vm, 7, true);
  pt_none(&t, 0);
  pt_take(&t, 1, 0x47);
  pt_apic_w(&t, 1, 0xb0, 0);
  pt_line(t.vm, 7, false);
  /* Broadcast. */
  pt_route(&t, 8, 0x48, 0xff);
  pt_line(t.vm, 8, true);
  pt_take(&t, 0, 0x48);
  pt_take(&t, 1, 0x48);
  pt_apic_w(&t, 0, 0xb0, 0);
  pt_apic_w(&t, 1, 0xb0, 0);
  pt_line(t.vm, 8, false);
  /* Lowest priority: the APIC with the lower priority takes it. */
  pt_apic_w(&t, 0, 0x80, 0x30);
  pt_route(&t, 10, 0x4a | (1u << 8), 0xff);
  pt_line(t.vm, 10, true);
  pt_none(&t, 0);
  pt_take(&t, 1, 0x4a);
  pt_line(t.vm, 10, false);
  /* An APIC ID no vCPU has: dropped. */
  long long dropped = dt_stat(lapic, "ipi_dropped");
  pt_route(&t, 11, 0x4b, 7);
  pt_line(t.vm, 11, true);
  pt_none(&t, 0);
  pt_none(&t, 1);
  assert_int_equal(dt_stat(lapic, "ipi_dropped"), dropped + 1);
  pt_fini(&t);
}

static void test_nmi_and_extint(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_apic_on(&t, 0);
  pt_route(&t, 12, 4u << 8, 0); /* NMI */
  pt_line(t.vm, 12, true);
  assert_true(vmm__vcpu_nmi_pending(t.vcpu[0]));
  assert_true(vmm__vcpu_nmi_ack(t.vcpu[0]));
  assert_false(vmm__vcpu_nmi_pending(t.vcpu[0]));
  pt_none(&t, 0);
  /* ExtINT: the vector comes from the PIC's INTA (here with LINT0 masked,
     so only the IOAPIC brings the PIC to the CPU). */
  pt_apic_w(&t, 0, 0x350, 0x10700);
  pt_pic_init(t.vm, 0xf7, 0xff);
  pt_line(t.vm, 3, true);
  pt_none(&t, 0);
  pt_route(&t, 3, 7u << 8, 0);
  pt_line(t.vm, 3, false);
  pt_line(t.vm, 3, true);
  pt_take(&t, 0, 0x23);
  pt_fini(&t);
}

static void test_create_and_state(void **state) {
  (void)state;
  struct vmm_ioapic_config c;
  vmm_ioapic_config_init(&c);
  assert_int_equal(c.base, PT_IOAPIC);
  assert_int_equal(c.id, 0);
  PT_NEEDS_PLATFORM(vmm_ioapic_create, &c);

  struct pt t;
  pt_init(&t, 1);
  assert_vmm(vmm_ioapic_create(t.vm, &c, NULL), VMM_EEXIST);
  vmm_dev *io = vmm_dev_find(t.vm, "ioapic");
  assert_ok(vmm_dev_detach(io));
  c.base = PT_IOAPIC + 0x10;
  assert_vmm(vmm_ioapic_create(t.vm, &c, NULL), VMM_EINVAL);
  c.base = PT_IOAPIC + 0x1000;
  c.id = 16;
  assert_vmm(vmm_ioapic_create(t.vm, &c, NULL), VMM_EINVAL);
  c.id = 9;
  assert_ok(vmm_ioapic_create(t.vm, &c, &io));
  pt_w32(&t, NULL, PT_IOAPIC + 0x1000, 0);
  assert_int_equal(pt_r32(&t, NULL, PT_IOAPIC + 0x1010), 0x09000000);

  /* Saved states. */
  pt_apic_on(&t, 0);
  pt_w32(&t, NULL, PT_IOAPIC + 0x1000, RTE(9));
  pt_w32(&t, NULL, PT_IOAPIC + 0x1010, 0x59 | LEVEL);
  pt_w32(&t, NULL, PT_IOAPIC + 0x1000, RTE(3) + 1);
  pt_w32(&t, NULL, PT_IOAPIC + 0x1010, 0xfe000000u);
  pt_line(t.vm, 9, true);
  pt_roundtrip(io);
  json_t *s;
  assert_ok(vmm_dev_save(io, &s));
  assert_ok(vmm_dev_reset(io));
  pt_w32(&t, NULL, PT_IOAPIC + 0x1000, 0);
  assert_int_equal(pt_r32(&t, NULL, PT_IOAPIC + 0x1010), 0x09000000);
  assert_ok(vmm_dev_restore(io, s));
  pt_w32(&t, NULL, PT_IOAPIC + 0x1000, RTE(9));
  assert_int_equal(pt_r32(&t, NULL, PT_IOAPIC + 0x1010),
                   0x59 | LEVEL | REMOTE_IRR);
  json_t *rte = json_object_get(s, "redirection");
  json_t *bad = json_deep_copy(rte);
  json_array_set_new(bad, 2, json_integer(REMOTE_IRR)); /* edge: no IRR */
  pt_refuse(io, "redirection", bad);
  bad = json_deep_copy(rte);
  json_array_set_new(bad, 2, json_integer(1u << 20)); /* reserved bit */
  pt_refuse(io, "redirection", bad);
  bad = json_deep_copy(rte);
  json_array_remove(bad, 23);
  pt_refuse(io, "redirection", bad);
  pt_refuse(io, "id", json_integer(16));
  pt_refuse(io, "select", json_string("x"));
  json_decref(s);
  pt_fini(&t);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registers),
      cmocka_unit_test(test_bad_registers_and_accesses),
      cmocka_unit_test(test_edge),
      cmocka_unit_test(test_level),
      cmocka_unit_test(test_destinations),
      cmocka_unit_test(test_nmi_and_extint),
      cmocka_unit_test(test_create_and_state),
  };
  return vmmt_run_group(tests);
}
