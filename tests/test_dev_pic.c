/*
 * The 8259A pair (include/libvmm/i8259.h): initialization, masks, edge and
 * level triggering (ELCR, LTIM), priorities and rotation, special mask and
 * special fully nested modes, automatic EOI, poll mode, the cascade,
 * spurious IRQ 7, the path to the CPU (LINT0 ExtINT, or straight to vCPU 0
 * without local APICs), bus errors and saved states.
 */
#include "plattest.h"

/* As a BIOS leaves it: vectors 0x08/0x70, everything masked, edge. */
static void test_power_on_state(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  assert_int_equal(dt_inb(t.vm, 0x21), 0xff);
  assert_int_equal(dt_inb(t.vm, 0xa1), 0xff);
  assert_int_equal(dt_inb(t.vm, 0x4d0), 0);
  assert_int_equal(dt_inb(t.vm, 0x4d1), 0);
  pt_line(t.vm, 1, true);
  pt_none(&t, 0); /* masked */
  dt_outb(t.vm, 0x21, 0xfd);
  pt_take(&t, 0, 0x09);
  /* Reads of IRR by default, ISR after OCW3. */
  dt_outb(t.vm, 0x20, 0x0b);
  assert_int_equal(dt_inb(t.vm, 0x20), 0x02);
  dt_outb(t.vm, 0x20, 0x0a);
  assert_int_equal(dt_inb(t.vm, 0x20), 0x00);
  pt_fini(&t);
}

static void test_init_and_cascade(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_pic_init(t.vm, 0xfb, 0xef); /* IRQ 2 (cascade) and IRQ 12 open */
  assert_int_equal(dt_inb(t.vm, 0x21), 0xfb);
  assert_int_equal(dt_inb(t.vm, 0xa1), 0xef);
  pt_line(t.vm, 12, true);
  pt_take(&t, 0, 0x2c);
  /* In service on both chips. */
  dt_outb(t.vm, 0x20, 0x0b);
  dt_outb(t.vm, 0xa0, 0x0b);
  assert_int_equal(dt_inb(t.vm, 0x20), 0x04);
  assert_int_equal(dt_inb(t.vm, 0xa0), 0x10);
  dt_outb(t.vm, 0xa0, 0x20);
  dt_outb(t.vm, 0x20, 0x20);
  assert_int_equal(dt_inb(t.vm, 0x20), 0);
  assert_int_equal(dt_inb(t.vm, 0xa0), 0);
  /* Line 2 reaches no PIC input: IRQ 2 is the cascade. */
  pt_line(t.vm, 12, false);
  pt_line(t.vm, 2, true);
  pt_none(&t, 0);
  pt_fini(&t);
}

static void test_edge_and_level(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_pic_init(t.vm, 0x00, 0x00);
  /* Edge: latched on the rising edge, kept after the line drops, and a
     line that stays high raises nothing more. */
  pt_line(t.vm, 3, true);
  pt_line(t.vm, 3, false);
  pt_take(&t, 0, 0x23);
  dt_outb(t.vm, 0x20, 0x20);
  pt_none(&t, 0);
  pt_line(t.vm, 3, true);
  pt_take(&t, 0, 0x23);
  dt_outb(t.vm, 0x20, 0x20);
  pt_none(&t, 0);
  pt_line(t.vm, 3, false);

  /* ELCR: IRQs 0-2 and 8 and 13 cannot be level-triggered. */
  dt_outb(t.vm, 0x4d0, 0xff);
  dt_outb(t.vm, 0x4d1, 0xff);
  assert_int_equal(dt_inb(t.vm, 0x4d0), 0xf8);
  assert_int_equal(dt_inb(t.vm, 0x4d1), 0xde);
  dt_outb(t.vm, 0x4d0, 0x20);
  /* Level: requested while high, again after EOI, gone when it drops. */
  pt_line(t.vm, 5, true);
  pt_take(&t, 0, 0x25);
  pt_none(&t, 0); /* in service */
  dt_outb(t.vm, 0x20, 0x20);
  pt_take(&t, 0, 0x25);
  pt_line(t.vm, 5, false);
  dt_outb(t.vm, 0x20, 0x20);
  pt_none(&t, 0);
  /* A level request that drops before the CPU takes it is gone. */
  pt_line(t.vm, 5, true);
  pt_line(t.vm, 5, false);
  pt_none(&t, 0);

  /* LTIM (ICW1 bit 3): every IRQ of the chip is level-triggered. */
  dt_outb(t.vm, 0x4d0, 0);
  dt_outb(t.vm, 0x20, 0x19);
  dt_outb(t.vm, 0x21, 0x20);
  dt_outb(t.vm, 0x21, 0x04);
  dt_outb(t.vm, 0x21, 0x01);
  dt_outb(t.vm, 0x21, 0x00);
  pt_line(t.vm, 6, true);
  pt_line(t.vm, 6, false);
  pt_none(&t, 0);
  pt_fini(&t);
}

static void test_priorities(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_pic_init(t.vm, 0x00, 0xff);
  pt_line(t.vm, 5, true);
  pt_line(t.vm, 3, true);
  pt_line(t.vm, 1, true);
  /* IRQ 1 first; while IRQ 3 is in service IRQ 5 waits, IRQ 1 nests. */
  pt_take(&t, 0, 0x21);
  dt_outb(t.vm, 0x20, 0x20);
  pt_take(&t, 0, 0x23);
  pt_none(&t, 0);
  pt_line(t.vm, 1, false);
  pt_line(t.vm, 1, true);
  pt_take(&t, 0, 0x21);
  dt_outb(t.vm, 0x20, 0x20); /* non-specific: ends IRQ 1 */
  dt_outb(t.vm, 0x20, 0x63); /* specific EOI for IRQ 3 */
  pt_take(&t, 0, 0x25);
  dt_outb(t.vm, 0x20, 0xa0); /* rotate on non-specific EOI: 5 lowest */
  pt_line(t.vm, 4, true);
  pt_line(t.vm, 6, true);
  pt_take(&t, 0, 0x26); /* 6 is now the highest */
  dt_outb(t.vm, 0x20, 0x20);
  pt_take(&t, 0, 0x24);
  dt_outb(t.vm, 0x20, 0x20);
  /* Set priority (OCW2 0xc0 | n): n lowest, n + 1 highest. */
  dt_outb(t.vm, 0x20, 0xc1);
  pt_line(t.vm, 1, false);
  pt_line(t.vm, 7, true);
  pt_line(t.vm, 1, true);
  pt_take(&t, 0, 0x27);
  dt_outb(t.vm, 0x20, 0xe7); /* rotate on specific EOI 7: 0 highest */
  pt_take(&t, 0, 0x21);
  dt_outb(t.vm, 0x20, 0x20);
  pt_fini(&t);
}

static void test_special_modes(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_pic_init(t.vm, 0x00, 0xff);
  /* Special mask mode: an in-service level that is masked stops blocking
     lower priorities. */
  pt_line(t.vm, 3, true);
  pt_take(&t, 0, 0x23);
  pt_line(t.vm, 5, true);
  pt_none(&t, 0);
  dt_outb(t.vm, 0x21, 0x08);
  dt_outb(t.vm, 0x20, 0x68); /* OCW3: set special mask */
  pt_take(&t, 0, 0x25);
  dt_outb(t.vm, 0x20, 0x48); /* clear special mask */
  dt_outb(t.vm, 0x20, 0x65);
  dt_outb(t.vm, 0x20, 0x63);
  dt_outb(t.vm, 0x21, 0x00);
  pt_none(&t, 0);

  /* Automatic EOI (ICW4 bit 1): nothing stays in service. */
  dt_outb(t.vm, 0x20, 0x11);
  dt_outb(t.vm, 0x21, 0x20);
  dt_outb(t.vm, 0x21, 0x04);
  dt_outb(t.vm, 0x21, 0x03);
  pt_line(t.vm, 4, true);
  pt_take(&t, 0, 0x24);
  dt_outb(t.vm, 0x20, 0x0b);
  assert_int_equal(dt_inb(t.vm, 0x20), 0);

  /* Poll mode: the read acknowledges; without a request bit 7 is 0. */
  pt_line(t.vm, 6, true);
  dt_outb(t.vm, 0x20, 0x0c);
  assert_int_equal(dt_inb(t.vm, 0x20), 0x86);
  dt_outb(t.vm, 0x20, 0x0c);
  assert_int_equal(dt_inb(t.vm, 0x20), 0x00);
  pt_none(&t, 0);

  /* Special fully nested mode: the slave nests behind its own IRQ 2. */
  pt_pic_init(t.vm, 0x00, 0x00);
  dt_outb(t.vm, 0x20, 0x11);
  dt_outb(t.vm, 0x21, 0x20);
  dt_outb(t.vm, 0x21, 0x04);
  dt_outb(t.vm, 0x21, 0x11);
  dt_outb(t.vm, 0x21, 0x00);
  pt_line(t.vm, 14, true);
  pt_take(&t, 0, 0x2e);
  pt_line(t.vm, 9, true);
  pt_take(&t, 0, 0x29); /* without SFNM the master's IR2 would block it */
  pt_fini(&t);
}

/* An INTA that finds nothing gives IRQ 7, which is not put in service.
   (The platform acknowledges atomically, so only a direct INTA can.) */
static void test_spurious(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  pt_pic_init(t.vm, 0x00, 0x00);
  vmm__irqchip_lock(t.vm->irqchip);
  int v = vmm__irqchip_pic_inta(t.vm->irqchip);
  vmm__irqchip_unlock(t.vm->irqchip);
  assert_int_equal(v, 0x27);
  dt_outb(t.vm, 0x20, 0x0b);
  assert_int_equal(dt_inb(t.vm, 0x20), 0);
  assert_int_equal(dt_stat(vmm_dev_find(t.vm, "pic"), "spurious"), 1);
  pt_fini(&t);
}

/* INTR reaches vCPU 0 through LINT0 in ExtINT mode, not when LINT0 is
   masked; with no local APICs it is vCPU 0's interrupt pin. */
static void test_path_to_the_cpu(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 2);
  pt_pic_init(t.vm, 0xfe, 0xff);
  pt_line(t.vm, 0, true);
  assert_true(pt_pending(&t, 0));
  pt_none(&t, 1); /* APs' LINT0 are masked */
  pt_apic_on(&t, 0);
  pt_apic_w(&t, 0, 0x350, 0x10700); /* LINT0 masked */
  pt_none(&t, 0);
  pt_apic_w(&t, 0, 0x350, 0x00700);
  pt_take(&t, 0, 0x20);
  dt_outb(t.vm, 0x20, 0x20);
  pt_line(t.vm, 0, false);

  assert_ok(vmm_dev_detach(vmm_dev_find(t.vm, "lapic")));
  pt_line(t.vm, 0, true);
  pt_take(&t, 0, 0x20);
  pt_none(&t, 1);
  pt_fini(&t);
}

static void test_bus_rules(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  /* A 16-bit access splits into the two byte ports, as the ISA bus does:
     OCW1 after ICW1 would be ICW2; here, after init, 0x21 is IMR. */
  pt_pic_init(t.vm, 0xff, 0xff);
  dt_out(t.vm, 0x20, 0x7e0b, 2); /* 0x20: OCW3 read ISR; 0x21: IMR 0x7e */
  assert_int_equal(dt_inb(t.vm, 0x21), 0x7e);
  uint32_t v = 0;
  /* Leaving the device's two ports: not its access. */
  assert_int_equal(dt_pio(t.vm, 0x21, &v, 2, false), VMM_IO_DECLINED);
  assert_int_equal(dt_pio(t.vm, 0x20, &v, 4, true), VMM_IO_DECLINED);
  pt_fini(&t);
}

static void test_create_errors(void **state) {
  (void)state;
  struct vmm_pic_config c;
  vmm_pic_config_init(&c);
  assert_string_equal(c.name, "pic");
  assert_true(c.elcr);
  PT_NEEDS_PLATFORM(vmm_pic_create, &c);

  struct pt t;
  pt_init(&t, 1);
  c.name = "pic2";
  assert_vmm(vmm_pic_create(t.vm, &c, NULL), VMM_EEXIST);
  assert_null(vmm_dev_find(t.vm, "pic2"));
  c.size = 0;
  assert_vmm(vmm_pic_create(t.vm, &c, NULL), VMM_EINVAL);
  /* Replace the stock one with one without ELCR ports. */
  assert_ok(vmm_dev_detach(vmm_dev_find(t.vm, "pic")));
  vmm_pic_config_init(&c);
  c.elcr = false;
  vmm_dev *d;
  assert_ok(vmm_pic_create(t.vm, &c, &d));
  assert_string_equal(vmm_dev_type(d), "i8259");
  uint32_t v = 0;
  assert_int_equal(dt_pio(t.vm, 0x4d0, &v, 1, false), VMM_IO_DECLINED);
  /* A line that went high while there was no PIC is seen by a new one. */
  assert_ok(vmm_dev_detach(d));
  pt_line(t.vm, 4, true);
  assert_ok(vmm_pic_create(t.vm, &c, &d));
  pt_none(&t, 0);
  dt_outb(t.vm, 0x21, 0xef);
  pt_take(&t, 0, 0x0c);
  pt_fini(&t);
}

static void test_state(void **state) {
  (void)state;
  struct pt t;
  pt_init(&t, 1);
  vmm_dev *pic = vmm_dev_find(t.vm, "pic");
  pt_pic_init(t.vm, 0x00, 0x00);
  dt_outb(t.vm, 0x4d1, 0x02);
  pt_line(t.vm, 9, true);
  pt_line(t.vm, 3, true);
  pt_take(&t, 0, 0x29); /* the cascade outranks IRQ 3 */
  pt_roundtrip(pic);

  json_t *s = NULL;
  assert_ok(vmm_dev_save(pic, &s));
  assert_string_equal(json_string_value(json_object_get(s, "type")), "i8259");
  /* Restoring brings back what was in service and requested. */
  assert_ok(vmm_dev_reset(pic));
  pt_none(&t, 0);
  assert_ok(vmm_dev_restore(pic, s));
  pt_line(t.vm, 9, false);
  pt_none(&t, 0); /* IRQ 3 waits behind IRQ 2 in service */
  dt_outb(t.vm, 0xa0, 0x20);
  dt_outb(t.vm, 0x20, 0x20);
  pt_take(&t, 0, 0x23);
  json_decref(s);

  /* Hostile states: refused, nothing changed. */
  json_t *chip = json_pack("{s:i}", "irr", 1);
  pt_refuse(pic, "master", chip);
  assert_ok(vmm_dev_save(pic, &s));
  json_t *m = json_deep_copy(json_object_get(s, "master"));
  json_object_set_new(m, "priority_add", json_integer(8));
  pt_refuse(pic, "master", m);
  m = json_deep_copy(json_object_get(s, "slave"));
  json_object_set_new(m, "elcr", json_integer(0x01)); /* IRQ 8: edge only */
  pt_refuse(pic, "slave", m);
  m = json_deep_copy(json_object_get(s, "master"));
  json_object_set_new(m, "base", json_integer(0x21)); /* not 8-aligned */
  pt_refuse(pic, "master", m);
  m = json_deep_copy(json_object_get(s, "master"));
  json_object_set_new(m, "poll", json_integer(1));
  pt_refuse(pic, "master", m);
  pt_refuse(pic, "version", json_integer(2));
  json_decref(s);
  pt_fini(&t);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_power_on_state),
      cmocka_unit_test(test_init_and_cascade),
      cmocka_unit_test(test_edge_and_level),
      cmocka_unit_test(test_priorities),
      cmocka_unit_test(test_special_modes),
      cmocka_unit_test(test_spurious),
      cmocka_unit_test(test_path_to_the_cpu),
      cmocka_unit_test(test_bus_rules),
      cmocka_unit_test(test_create_errors),
      cmocka_unit_test(test_state),
  };
  return vmmt_run_group(tests);
}
