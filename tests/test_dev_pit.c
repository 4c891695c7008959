/*
 * The 8254 (include/libvmm/i8254.h): counting in every mode against the
 * clock (driven manually here, so every count is exact), latch and
 * read-back, BCD, counter 2's gate and OUT on port 0x61, counter 0's
 * interrupt line (levels in mode 0, pulses otherwise), missed ticks owed
 * and reinjected on acknowledgment, the minimum period, bus rules,
 * creation errors and saved states.
 */
#include "plattest.h"

#define PIT_HZ 1193182ll

/* Nanoseconds at which `ticks` input clocks have passed. */
static int64_t at_ticks(int64_t ticks) {
  return (ticks * 1000000000ll + PIT_HZ - 1) / PIT_HZ;
}

static void pit_vm(struct pt *t, struct pt_edges *e) {
  pt_init_flags(t, 1, VMM_VM_PIT, true);
  if (e != NULL) {
    memset(e, 0, sizeof(*e));
    assert_ok(vmm_vm_set_irq_handler(t->vm, pt_edge_fn, e));
  }
}

static uint16_t read16(vmm_vm *vm, uint16_t port) {
  uint8_t lo = dt_inb(vm, port);
  return (uint16_t)(lo | dt_inb(vm, port) << 8);
}

static void program(vmm_vm *vm, unsigned ch, uint8_t mode_bits,
                    uint16_t count) {
  dt_outb(vm, 0x43, (uint8_t)(ch << 6 | 0x30 | mode_bits));
  dt_outb(vm, (uint16_t)(0x40 + ch), (uint8_t)count);
  dt_outb(vm, (uint16_t)(0x40 + ch), (uint8_t)(count >> 8));
}

static void test_counting_and_latch(void **state) {
  (void)state;
  struct pt t;
  pit_vm(&t, NULL);
  program(t.vm, 0, 0x04, 1193); /* mode 2 */
  pt_at(&t, at_ticks(596));
  assert_int_equal(read16(t.vm, 0x40), 1193 - 596);
  dt_outb(t.vm, 0x43, 0x00); /* latch counter 0 */
  pt_at(&t, at_ticks(700));
  dt_outb(t.vm, 0x43, 0x00); /* a second latch does not replace it */
  assert_int_equal(read16(t.vm, 0x40), 1193 - 596);
  assert_int_equal(read16(t.vm, 0x40), 1193 - 700);
  /* Mode 2 reloads: one period and 10 ticks later. */
  pt_at(&t, at_ticks(1193 + 710));
  assert_int_equal(read16(t.vm, 0x40), 1193 - 710);
  /* LSB-only and MSB-only access. */
  dt_outb(t.vm, 0x43, 0x54); /* counter 1, LSB, mode 2 */
  dt_outb(t.vm, 0x41, 200);
  pt_at(&t, at_ticks(1193 + 710) + at_ticks(50));
  assert_int_equal(dt_inb(t.vm, 0x41), 150);
  dt_outb(t.vm, 0x43, 0x64); /* counter 1, MSB, mode 2 */
  dt_outb(t.vm, 0x41, 0x02); /* 512 */
  assert_int_equal(dt_inb(t.vm, 0x41), 0x02);
  pt_fini(&t);
}

static void test_periodic_interrupts(void **state) {
  (void)state;
  struct pt t;
  struct pt_edges e;
  pit_vm(&t, &e);
  vmm_dev *pit = vmm_dev_find(t.vm, "pit");
  pt_pic_init(t.vm, 0xfe, 0xff);
  program(t.vm, 0, 0x04, 1193); /* ~1 kHz */
  int64_t period = at_ticks(1193);
  for (int i = 1; i <= 10; i++) {
    pt_at(&t, i * period);
    assert_int_equal(e.rises[0], i);
    pt_take(&t, 0, 0x20);
    dt_outb(t.vm, 0x20, 0x20);
    pt_none(&t, 0);
  }
  assert_false(e.level[0]); /* pulses leave the line low */

  /* The host comes 5 periods late: one tick now, four owed, each given as
     the guest acknowledges the previous one. */
  pt_at(&t, 15 * period);
  assert_int_equal(e.rises[0], 11);
  assert_int_equal(dt_stat(pit, "owed"), 4);
  for (int i = 0; i < 5; i++) {
    pt_take(&t, 0, 0x20);
    dt_outb(t.vm, 0x20, 0x20);
  }
  pt_none(&t, 0);
  assert_int_equal(e.rises[0], 15);
  assert_int_equal(dt_stat(pit, "reinjected"), 4);
  assert_int_equal(dt_stat(pit, "owed"), 0);

  /* Reprogramming forgets what was owed. */
  pt_at(&t, 18 * period);
  assert_int_equal(dt_stat(pit, "owed"), 2);
  program(t.vm, 0, 0x06, 1193); /* mode 3 */
  assert_int_equal(dt_stat(pit, "owed"), 0);
  pt_take(&t, 0, 0x20); /* the one raised at 18 periods */
  dt_outb(t.vm, 0x20, 0x20);
  pt_at(&t, pt_now(&t) + period);
  pt_take(&t, 0, 0x20);
  dt_outb(t.vm, 0x20, 0x20);

  /* Ticks that come while the previous one is still pending (a vCPU the
     host has not run) are owed, not merged into the pending request. */
  unsigned r = e.rises[0];
  pt_at(&t, pt_now(&t) + period);
  pt_at(&t, pt_now(&t) + 2 * period);
  assert_int_equal(e.rises[0], r + 1);
  assert_int_equal(dt_stat(pit, "owed"), 2);
  for (int i = 0; i < 3; i++) {
    pt_take(&t, 0, 0x20);
    dt_outb(t.vm, 0x20, 0x20);
  }
  pt_none(&t, 0);
  assert_int_equal(e.rises[0], r + 3);
  assert_int_equal(dt_stat(pit, "owed"), 0);

  /* A request never acknowledged (a controller reset clears it without an
     INTA) holds the ticks back for 100 ms, not for ever. */
  for (int i = 0; i < 99; i++)
    pt_at(&t, pt_now(&t) + period);
  assert_int_equal(e.rises[0], r + 4);
  for (int i = 0; i < 3; i++)
    pt_at(&t, pt_now(&t) + period);
  assert_int_equal(e.rises[0], r + 5);
  assert_true(dt_stat(pit, "owed") <= 100);
  pt_fini(&t);
}

/* A tick the interrupt controllers drop or hold masked is not a pending
   request the next ones must wait behind: reinitializing the PIC (ICW1
   clears its edge requests) or unmasking the line lets the timer go on at
   once. Linux's check_timer does both between its tries, each a 61 ms
   window; the ticks held back for 100 ms made it panic ("IO-APIC + timer
   doesn't work!"). */
static void test_dropped_tick_releases_timer(void **state) {
  (void)state;
  struct pt t;
  struct pt_edges e;
  pit_vm(&t, &e);
  pt_pic_init(t.vm, 0xfe, 0xff);
  program(t.vm, 0, 0x04, 1193); /* ~1 kHz */
  int64_t period = at_ticks(1193);
  pt_at(&t, period);
  assert_int_equal(e.rises[0], 1); /* pending, not taken */
  /* Through the PIC: a reinitialization drops it, masked. */
  pt_pic_init(t.vm, 0xff, 0xff);
  pt_at(&t, 2 * period);
  assert_int_equal(e.rises[0], 2); /* not held back behind the dropped one */
  pt_none(&t, 0);
  dt_outb(t.vm, 0x21, 0xfe); /* unmasked: the latched edge goes in */
  pt_take(&t, 0, 0x20);
  dt_outb(t.vm, 0x20, 0x20);
  pt_at(&t, 3 * period);
  pt_take(&t, 0, 0x20);
  dt_outb(t.vm, 0x20, 0x20);
  pt_none(&t, 0);

  /* Through the I/O APIC, the PIC masked: an edge on a masked pin is lost;
     unmasking it lets the next tick in. */
  pt_apic_on(&t, 0);
  dt_outb(t.vm, 0x21, 0xff);
  pt_route(&t, 0, 0x30 | 1u << 16, 0); /* masked, edge, vector 0x30 */
  pt_at(&t, 4 * period);
  assert_int_equal(e.rises[0], 4);
  pt_none(&t, 0);
  pt_route(&t, 0, 0x30, 0);
  pt_at(&t, 5 * period);
  assert_int_equal(e.rises[0], 5);
  pt_take(&t, 0, 0x30);
  pt_apic_w(&t, 0, 0xb0, 0); /* EOI */
  pt_at(&t, 6 * period);
  pt_take(&t, 0, 0x30);
  pt_fini(&t);
}

static void test_one_shot_modes(void **state) {
  (void)state;
  struct pt t;
  struct pt_edges e;
  pit_vm(&t, &e);
  /* Mode 0: OUT (and the line) low until terminal count, then high. */
  program(t.vm, 0, 0x00, 100);
  dt_outb(t.vm, 0x43, 0xe2); /* read back counter 0's status */
  assert_int_equal(dt_inb(t.vm, 0x40), 0x30);
  pt_at(&t, at_ticks(99));
  assert_false(e.level[0]);
  pt_at(&t, at_ticks(100));
  assert_true(e.level[0]);
  bool level;
  assert_ok(vmm_vm_irq_get(t.vm, 0, &level));
  assert_true(level);
  dt_outb(t.vm, 0x43, 0xe2);
  assert_int_equal(dt_inb(t.vm, 0x40), 0xb0);
  /* It counts on, wrapping, OUT staying high. */
  pt_at(&t, at_ticks(110));
  assert_int_equal(read16(t.vm, 0x40), 0x10000 - 10);
  /* A new count drops OUT. */
  dt_outb(t.vm, 0x40, 50);
  dt_outb(t.vm, 0x40, 0);
  assert_false(e.level[0]);
  assert_int_equal(e.rises[0], 1);

  /* Mode 4: OUT low for one clock at terminal count: one pulse after it. */
  int64_t t0 = pt_now(&t);
  program(t.vm, 0, 0x08, 10);
  pt_at(&t, t0 + at_ticks(10));
  assert_int_equal(e.rises[0], 1);
  pt_at(&t, t0 + at_ticks(11));
  assert_int_equal(e.rises[0], 2);
  assert_false(e.level[0]);
  pt_at(&t, t0 + at_ticks(500));
  assert_int_equal(e.rises[0], 2);

  /* A control word alone: mode 0's OUT is low, nothing counts. */
  dt_outb(t.vm, 0x43, 0x30);
  dt_outb(t.vm, 0x43, 0xe2);
  assert_int_equal(dt_inb(t.vm, 0x40), 0x70); /* null count */
  pt_fini(&t);
}

static void test_gate_and_port61(void **state) {
  (void)state;
  struct pt t;
  pit_vm(&t, NULL);
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x0f, 0);
  dt_outb(t.vm, 0x61, 0x0e); /* gate low; speaker and bits 2-3 stored */
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x0f, 0x0e);
  /* DRAM refresh toggles every 15.085 us. */
  pt_at(&t, 15085 * 4);
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x10, 0);
  pt_at(&t, 15085 * 5);
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x10, 0x10);

  /* Counter 2, mode 0, gate low: it waits. */
  int64_t t0 = pt_now(&t);
  program(t.vm, 2, 0x00, 1000);
  pt_at(&t, t0 + at_ticks(400));
  assert_int_equal(read16(t.vm, 0x42), 1000);
  dt_outb(t.vm, 0x61, 0x01); /* gate high: counting starts */
  int64_t t1 = pt_now(&t);
  pt_at(&t, t1 + at_ticks(300));
  assert_int_equal(read16(t.vm, 0x42), 700);
  dt_outb(t.vm, 0x61, 0x00); /* paused at 700 */
  pt_at(&t, t1 + at_ticks(600));
  assert_int_equal(read16(t.vm, 0x42), 700);
  dt_outb(t.vm, 0x61, 0x01);
  int64_t t2 = pt_now(&t);
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0);
  /* OUT2 rises at terminal count: what Linux's TSC calibration polls. */
  pt_at(&t, t2 + at_ticks(699));
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0);
  pt_at(&t, t2 + at_ticks(701));
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0x20);

  /* Mode 3 on counter 2: a square wave; a rising gate restarts it. */
  program(t.vm, 2, 0x06, 100);
  int64_t t3 = pt_now(&t);
  pt_at(&t, t3 + at_ticks(10));
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0x20);
  pt_at(&t, t3 + at_ticks(60));
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0);
  dt_outb(t.vm, 0x61, 0x00); /* gate low: OUT forced high */
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0x20);
  dt_outb(t.vm, 0x61, 0x01);
  int64_t t4 = pt_now(&t);
  pt_at(&t, t4 + at_ticks(60));
  assert_int_equal(dt_inb(t.vm, 0x61) & 0x20, 0);
  pt_fini(&t);
}

static void test_bcd_and_read_back(void **state) {
  (void)state;
  struct pt t;
  pit_vm(&t, NULL);
  dt_outb(t.vm, 0x61, 0x01);
  dt_outb(t.vm, 0x43, 0xb1); /* counter 2, LSB/MSB, mode 0, BCD */
  dt_outb(t.vm, 0x42, 0x00);
  dt_outb(t.vm, 0x42, 0x10); /* 1000 */
  pt_at(&t, at_ticks(1));
  assert_int_equal(read16(t.vm, 0x42), 0x0999);
  /* Bad BCD digits count as 9. */
  dt_outb(t.vm, 0x42, 0xff);
  dt_outb(t.vm, 0x42, 0x00);
  assert_int_equal(read16(t.vm, 0x42), 0x0099);

  /* Read-back of counters 0 and 2, count and status: status first. */
  int64_t t0 = pt_now(&t);
  program(t.vm, 0, 0x04, 5000);
  pt_at(&t, t0 + at_ticks(1000));
  dt_outb(t.vm, 0x43, 0xca); /* 11 0 0 0101 0: both latches, counters 0, 2 */
  pt_at(&t, t0 + at_ticks(3000));
  assert_int_equal(dt_inb(t.vm, 0x40), 0xb4); /* OUT high, LSB/MSB, mode 2 */
  assert_int_equal(read16(t.vm, 0x40), 4000);
  assert_int_equal(read16(t.vm, 0x40), 2000);        /* latch released */
  assert_int_equal(dt_inb(t.vm, 0x42) & 0x3f, 0x31); /* mode 0, BCD */
  (void)read16(t.vm, 0x42);
  /* The control word does not read back. */
  assert_int_equal(dt_inb(t.vm, 0x43), 0);
  pt_fini(&t);
}

/* A period far below 100 us interrupts at most every 100 us; what it
   cannot deliver is owed up to 100 ms worth, not without bound. */
static void test_minimum_period(void **state) {
  (void)state;
  struct pt t;
  struct pt_edges e;
  pit_vm(&t, &e);
  vmm_dev *pit = vmm_dev_find(t.vm, "pit");
  pt_pic_init(t.vm, 0xfe, 0xff);
  program(t.vm, 0, 0x04, 2);
  for (int i = 1; i <= 20; i++) {
    pt_at(&t, i * 50000ll);
    while (pt_pending(&t, 0)) { /* each taken as soon as it is there */
      assert_int_equal(pt_ack(&t, 0), 0x20);
      dt_outb(t.vm, 0x20, 0x20);
    }
  }
  /* The timer's own pulses; owed ones follow the guest's acks. */
  long long timer = dt_stat(pit, "irqs") - dt_stat(pit, "reinjected");
  assert_true(timer >= 9 && timer <= 11);
  assert_int_equal(e.rises[0], dt_stat(pit, "irqs"));
  assert_int_equal(dt_stat(pit, "owed"), 0);
  long long before = e.rises[0];
  pt_at(&t, 2000000000ll); /* two seconds at once: one pulse */
  assert_int_equal(e.rises[0], before + 1);
  assert_int_equal(dt_stat(pit, "owed"), 1000);
  pt_fini(&t);
}

static void test_bus_and_create_errors(void **state) {
  (void)state;
  struct pt t;
  pit_vm(&t, NULL);
  uint32_t v = 0;
  assert_int_equal(dt_pio(t.vm, 0x43, &v, 2, true), VMM_IO_DECLINED);
  assert_int_equal(dt_pio(t.vm, 0x61, &v, 2, false), VMM_IO_DECLINED);
  /* 16 bits at 0x42 are counter 2 then the control word, byte by byte. */
  dt_out(t.vm, 0x42, 0xb000, 2); /* 0x42: a count's LSB; 0x43: restart */
  dt_outb(t.vm, 0x42, 0x34);
  dt_outb(t.vm, 0x42, 0x12);
  assert_int_equal(read16(t.vm, 0x42), 0x1234);

  struct vmm_pit_config c;
  vmm_pit_config_init(&c);
  assert_int_equal(c.base, 0x40);
  assert_int_equal(c.gsi, 0);
  assert_true(c.port61);
  assert_vmm(vmm_pit_create(NULL, &c, NULL), VMM_EINVAL);
  c.gsi = VMM_IRQ_LINES;
  assert_vmm(vmm_pit_create(t.vm, &c, NULL), VMM_EINVAL);
  vmm_pit_config_init(&c);
  c.base = 0xfffd;
  assert_vmm(vmm_pit_create(t.vm, &c, NULL), VMM_EINVAL);
  vmm_pit_config_init(&c);
  c.name = "pit2";
  assert_vmm(vmm_pit_create(t.vm, &c, NULL), VMM_EOVERLAP);
  pt_fini(&t);

  /* Without the platform it is a device like any other: the line is
     recorded. */
  vmm_vm *vm = dt_vm();
  assert_ok(vmm__clock_set_manual(vm->clock, 0));
  vmm_pit_config_init(&c);
  c.gsi = 5;
  c.port61 = false;
  vmm_dev *d;
  assert_ok(vmm_pit_create(vm, &c, &d));
  assert_string_equal(vmm_dev_type(d), "i8254");
  assert_int_equal(dt_pio(vm, 0x61, &v, 1, false), VMM_IO_DECLINED);
  program(vm, 0, 0x00, 10);
  vmm__clock_advance(vm->clock, at_ticks(10));
  bool level;
  assert_ok(vmm_vm_irq_get(vm, 5, &level));
  assert_true(level);
  assert_ok(vmm_vm_destroy(vm));

  /* KVM's in-kernel PIT owns the ports. */
  if (vmmt_engine == VMM_ENGINE_KVM) {
    vm = dt_vm_flags(VMM_VM_IRQCHIP | VMM_VM_PIT, 1);
    vmm_pit_config_init(&c);
    assert_vmm(vmm_pit_create(vm, &c, NULL), VMM_EBUSY);
    assert_ok(vmm_vm_destroy(vm));
  }
}

static void test_state(void **state) {
  (void)state;
  struct pt t;
  struct pt_edges e;
  pit_vm(&t, &e);
  vmm_dev *pit = vmm_dev_find(t.vm, "pit");
  program(t.vm, 0, 0x04, 1193);
  dt_outb(t.vm, 0x61, 0x01);
  program(t.vm, 2, 0x00, 5000);
  pt_at(&t, 300000);
  dt_outb(t.vm, 0x43, 0x80); /* latch counter 2 */
  pt_roundtrip(pit);
  json_t *s = NULL;
  assert_ok(vmm_dev_save(pit, &s));
  /* Restored counters continue from where they were. */
  uint16_t c0 = read16(t.vm, 0x40);
  assert_ok(vmm_dev_reset(pit));
  assert_ok(vmm_dev_restore(pit, s));
  assert_int_equal(read16(t.vm, 0x40), c0);
  assert_int_equal(read16(t.vm, 0x42), 5000 - 357); /* the latched value */
  pt_at(&t, at_ticks(1193) + 1);
  assert_int_equal(e.rises[0], 1);

  json_t *chs = json_object_get(s, "channels");
  json_t *bad = json_deep_copy(chs);
  json_object_set_new(json_array_get(bad, 0), "mode", json_integer(6));
  pt_refuse(pit, "channels", bad);
  bad = json_deep_copy(chs);
  json_object_set_new(json_array_get(bad, 1), "rw", json_integer(0));
  pt_refuse(pit, "channels", bad);
  bad = json_deep_copy(chs);
  json_object_set_new(json_array_get(bad, 2), "count", json_integer(0x10000));
  pt_refuse(pit, "channels", bad);
  bad = json_deep_copy(chs);
  json_object_set_new(json_array_get(bad, 0), "gate", json_false());
  pt_refuse(pit, "channels", bad);
  pt_refuse(pit, "port61", json_integer(0)); /* counter 2's gate is 1 */
  pt_refuse(pit, "missed", json_integer(1001));
  pt_refuse(pit, "channels", json_array());
  json_decref(s);
  pt_fini(&t);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counting_and_latch),
      cmocka_unit_test(test_periodic_interrupts),
      cmocka_unit_test(test_dropped_tick_releases_timer),
      cmocka_unit_test(test_one_shot_modes),
      cmocka_unit_test(test_gate_and_port61),
      cmocka_unit_test(test_bcd_and_read_back),
      cmocka_unit_test(test_minimum_period),
      cmocka_unit_test(test_bus_and_create_errors),
      cmocka_unit_test(test_state),
  };
  return vmmt_run_group(tests);
}
