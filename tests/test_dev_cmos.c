/*
 * CMOS/RTC: clock registers in BCD and binary, 12/24-hour, setting the
 * clock, update-in-progress, the NMI bit, all 128 indices, memory-size
 * bytes for several slot layouts, status flags and IRQ 8 (from the loop's
 * timer), saved state, and a guest reading it all.
 */
#include <time.h>

#include "devtest.h"

#define IDX 0x70
#define DAT 0x71
#define NS 1000000000ll

/* A clock the tests move by hand: guest time is what it says. */
static _Atomic int64_t fake_ns;
static int64_t fake_clock(void *opaque) {
  (void)opaque;
  return atomic_load(&fake_ns);
}

static int64_t utc(int y, int mo, int d, int h, int mi, int s) {
  struct tm tm = {.tm_year = y - 1900,
                  .tm_mon = mo - 1,
                  .tm_mday = d,
                  .tm_hour = h,
                  .tm_min = mi,
                  .tm_sec = s};
  return (int64_t)timegm(&tm) * NS;
}

static vmm_dev *cmos(vmm_vm *vm, bool fake) {
  struct vmm_cmos_config cfg;
  vmm_dev *dev = NULL;
  vmm_cmos_config_init(&cfg);
  if (fake) {
    cfg.clock_fn = fake_clock;
  }
  assert_ok(vmm_cmos_create(vm, &cfg, &dev));
  return dev;
}

static uint8_t rd(vmm_vm *vm, uint8_t idx) {
  dt_outb(vm, IDX, idx);
  return dt_inb(vm, DAT);
}

static void wr(vmm_vm *vm, uint8_t idx, uint8_t v) {
  dt_outb(vm, IDX, idx);
  dt_outb(vm, DAT, v);
}

static void test_registers_and_time(void **state) {
  (void)state;
  atomic_store(&fake_ns, utc(2024, 2, 29, 23, 59, 58) + NS / 2);
  vmm_vm *vm = dt_vm();
  cmos(vm, true);
  assert_int_equal(rd(vm, 0x0a), 0x26);
  assert_int_equal(rd(vm, 0x0b), 0x02);
  assert_int_equal(rd(vm, 0x0c), 0x00);
  assert_int_equal(rd(vm, 0x0d), 0x80);

  /* BCD, 24 hours: Thursday 29 February 2024, 23:59:58. */
  static const uint8_t idx[] = {0, 2, 4, 6, 7, 8, 9, 0x32};
  static const uint8_t bcd[] = {0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20};
  for (size_t i = 0; i < sizeof(idx); i++)
    assert_int_equal(rd(vm, idx[i]), bcd[i]);
  /* Binary. */
  wr(vm, 0x0b, 0x06);
  static const uint8_t bin[] = {58, 59, 23, 5, 29, 2, 24, 20};
  for (size_t i = 0; i < sizeof(idx); i++)
    assert_int_equal(rd(vm, idx[i]), bin[i]);
  /* 12-hour BCD: 11 PM. */
  wr(vm, 0x0b, 0x00);
  assert_int_equal(rd(vm, 4), 0x91);
  wr(vm, 0x0b, 0x02);

  /* The clock runs: two seconds later it is Friday 1 March, 00:00:00. */
  atomic_fetch_add(&fake_ns, 2 * NS);
  static const uint8_t next[] = {0x00, 0x00, 0x00, 0x06,
                                 0x01, 0x03, 0x24, 0x20};
  for (size_t i = 0; i < sizeof(idx); i++)
    assert_int_equal(rd(vm, idx[i]), next[i]);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_setting_the_clock(void **state) {
  (void)state;
  atomic_store(&fake_ns, utc(2020, 6, 15, 12, 0, 0));
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = cmos(vm, true);

  /* The usual way: SET, write the fields, clear SET. */
  wr(vm, 0x0b, 0x82);
  assert_int_equal(rd(vm, 0x0b), 0x82);
  wr(vm, 0, 0x30);
  wr(vm, 2, 0x45);
  wr(vm, 4, 0x07);
  wr(vm, 7, 0x31);
  wr(vm, 8, 0x12);
  wr(vm, 9, 0x99);
  wr(vm, 0x32, 0x19);
  atomic_fetch_add(&fake_ns, 5 * NS); /* frozen while SET */
  assert_int_equal(rd(vm, 0), 0x30);
  wr(vm, 0x0b, 0x02);
  assert_int_equal(rd(vm, 0), 0x30);
  assert_int_equal(rd(vm, 9), 0x99);
  assert_int_equal(rd(vm, 0x32), 0x19);
  assert_int_equal(rd(vm, 6), 0x06); /* 31 Dec 1999 was a Friday */
  atomic_fetch_add(&fake_ns, 31 * NS);
  assert_int_equal(rd(vm, 0), 0x01);
  assert_int_equal(rd(vm, 2), 0x46);

  /* One field while running. */
  wr(vm, 4, 0x21);
  assert_int_equal(rd(vm, 4), 0x21);
  assert_int_equal(rd(vm, 2), 0x46);
  /* The host sets it the same way. */
  assert_ok(vmm_cmos_write(dev, 2, 0x10));
  uint8_t v;
  assert_ok(vmm_cmos_read(dev, 2, &v));
  assert_int_equal(v, 0x10);

  /* Garbage from the guest is clamped, never trusted. */
  wr(vm, 0x0b, 0x82);
  for (uint8_t i = 0; i < 10; i++)
    wr(vm, i, 0xff);
  wr(vm, 0x32, 0xff);
  wr(vm, 0x0b, 0x02);
  assert_int_equal(rd(vm, 8), 0x12); /* month 99 -> 12 */
  assert_int_equal(rd(vm, 7), 0x31); /* day 99 -> 31 */
  assert_int_equal(rd(vm, 4), 0x23);
  assert_int_equal(rd(vm, 9), 0x99); /* 2199 is as far as it goes */
  assert_int_equal(rd(vm, 0x32), 0x21);
  wr(vm, 0x0b, 0x86); /* binary */
  wr(vm, 8, 0);
  wr(vm, 7, 200);
  wr(vm, 0x0b, 0x06);
  assert_int_equal(rd(vm, 8), 1);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_update_in_progress(void **state) {
  (void)state;
  int64_t t0 = utc(2023, 1, 1, 0, 0, 0);
  atomic_store(&fake_ns, t0 + 500000000);
  vmm_vm *vm = dt_vm();
  cmos(vm, true);
  assert_false(rd(vm, 0x0a) & 0x80);
  /* The last 244 us before the second changes. */
  atomic_store(&fake_ns, t0 + NS - 244000);
  assert_true(rd(vm, 0x0a) & 0x80);
  atomic_store(&fake_ns, t0 + NS - 1);
  assert_true(rd(vm, 0x0a) & 0x80);
  assert_int_equal(rd(vm, 0), 0x00); /* still second 0 */
  atomic_store(&fake_ns, t0 + NS);
  assert_false(rd(vm, 0x0a) & 0x80);
  assert_int_equal(rd(vm, 0), 0x01);
  atomic_store(&fake_ns, t0 + NS - 244001);
  assert_false(rd(vm, 0x0a) & 0x80);
  /* No updates, no UIP: clock set mode, or the divider held in reset. */
  atomic_store(&fake_ns, t0 + 2 * NS - 1000);
  wr(vm, 0x0b, 0x82);
  assert_false(rd(vm, 0x0a) & 0x80);
  wr(vm, 0x0b, 0x02);
  wr(vm, 0x0a, 0x76);
  assert_false(rd(vm, 0x0a) & 0x80);
  assert_int_equal(rd(vm, 0x0a), 0x76);
  /* UIP is read-only. */
  wr(vm, 0x0a, 0xa6);
  assert_int_equal(rd(vm, 0x0a) & 0x7f, 0x26);
  assert_ok(vmm_vm_destroy(vm));
}

/* With the host's clock (the default source) the RTC tells the host's
   UTC time. */
static void test_host_clock(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  cmos(vm, false);
  wr(vm, 0x0b, 0x06); /* binary */
  for (int tries = 0;; tries++) {
    /* CLOCK_REALTIME, not time(): glibc's time() reads the coarse clock,
       which can lag the device's second by a tick. */
    struct timespec before, after;
    clock_gettime(CLOCK_REALTIME, &before);
    struct tm tm;
    uint8_t sec = rd(vm, 0), min = rd(vm, 2), hour = rd(vm, 4);
    uint8_t day = rd(vm, 7), mon = rd(vm, 8), year = rd(vm, 9);
    clock_gettime(CLOCK_REALTIME, &after);
    if (after.tv_sec != before.tv_sec && tries < 5)
      continue; /* a second ticked while reading: read again */
    time_t t0 = before.tv_sec;
    gmtime_r(&t0, &tm);
    assert_int_equal(sec, tm.tm_sec);
    assert_int_equal(min, tm.tm_min);
    assert_int_equal(hour, tm.tm_hour);
    assert_int_equal(day, tm.tm_mday);
    assert_int_equal(mon, tm.tm_mon + 1);
    assert_int_equal(year, tm.tm_year % 100);
    break;
  }
  assert_ok(vmm_vm_destroy(vm));
}

static void test_index_port_and_all_indices(void **state) {
  (void)state;
  atomic_store(&fake_ns, utc(2023, 1, 1, 0, 0, 0));
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = cmos(vm, true);
  /* The NMI-disable bit does not change the index. */
  dt_outb(vm, IDX, 0x80 | 0x0d);
  assert_int_equal(dt_inb(vm, DAT), 0x80);
  assert_int_equal(dt_inb(vm, IDX), 0xff); /* write-only */
  /* Every ordinary byte stores what is written. */
  for (unsigned i = 0x0e; i < 128; i++) {
    if (i == 0x32)
      continue; /* the century is part of the clock */
    wr(vm, (uint8_t)(i | 0x80), (uint8_t)(i ^ 0xa5));
  }
  for (unsigned i = 0x0e; i < 128; i++)
    if (i != 0x32)
      assert_int_equal(rd(vm, (uint8_t)i), (uint8_t)(i ^ 0xa5));
  /* Alarm bytes are plain memory too; C and D are read-only. */
  wr(vm, 1, 0x12);
  assert_int_equal(rd(vm, 1), 0x12);
  wr(vm, 0x0d, 0x00);
  assert_int_equal(rd(vm, 0x0d), 0x80);
  /* A 16-bit access writes index then data, as the ISA bus splits it. */
  dt_out(vm, IDX, 0x4240, 2);
  assert_int_equal(rd(vm, 0x40), 0x42);
  uint8_t v;
  assert_vmm(vmm_cmos_read(dev, 128, &v), VMM_EINVAL);
  assert_vmm(vmm_cmos_write(dev, 200, 0), VMM_EINVAL);
  assert_vmm(vmm_cmos_read(NULL, 0, &v), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

struct layout {
  const char *what;
  struct {
    uint64_t gpa, size;
  } slots[4];
  uint16_t base_kib, ext_kib, above16_64k;
  uint32_t above4g_64k;
};

#define KIB 1024ull
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

static const struct layout layouts[] = {
    {"2 MiB", {{0, 2 * MIB}}, 640, 1024, 0, 0},
    {"640 KiB + 1..64 MiB",
     {{0, 640 * KIB}, {MIB, 63 * MIB}},
     640,
     64512,
     768,
     0},
    {"adjacent slots",
     {{0, MIB}, {MIB, 7 * MIB}, {8 * MIB, 24 * MIB}},
     640,
     31744,
     256,
     0},
    {"512 KiB only", {{0, 512 * KIB}}, 512, 0, 0, 0},
    {"3 GiB + 2 GiB above 4 GiB",
     {{0, 3 * GIB}, {4 * GIB, 2 * GIB}},
     640,
     65535,
     48896,
     32768},
    {"64 GiB above 4 GiB",
     {{0, 16 * MIB}, {4 * GIB, 64 * GIB}},
     640,
     15360,
     0,
     0x100000},
    {"hole at 1 MiB", {{0, 640 * KIB}, {2 * MIB, 30 * MIB}}, 640, 0, 256, 0},
};

static void test_memory_bytes(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
    const struct layout *l = &layouts[i];
    print_message("layout: %s\n", l->what);
    struct vmm_vm_config cfg;
    vmm_vm *vm;
    vmm_vm_config_init(&cfg);
    cfg.engine = vmmt_engine;
    assert_ok(vmm_vm_create(&cfg, &vm));
    /* The device exists before the slots: the bytes follow them anyway. */
    cmos(vm, false);
    for (int j = 0; j < 4 && l->slots[j].size; j++)
      assert_ok(vmm_mem_slot_add(vm, l->slots[j].gpa, l->slots[j].size, NULL, 0,
                                 NULL));
    assert_int_equal(rd(vm, 0x15) | rd(vm, 0x16) << 8, l->base_kib);
    assert_int_equal(rd(vm, 0x17) | rd(vm, 0x18) << 8, l->ext_kib);
    assert_int_equal(rd(vm, 0x30) | rd(vm, 0x31) << 8, l->ext_kib);
    assert_int_equal(rd(vm, 0x34) | rd(vm, 0x35) << 8, l->above16_64k);
    assert_int_equal(rd(vm, 0x5b) | rd(vm, 0x5c) << 8 | rd(vm, 0x5d) << 16,
                     l->above4g_64k);
    /* Guest firmware may rewrite them; a reset recomputes them. */
    wr(vm, 0x15, 0);
    assert_int_equal(rd(vm, 0x15), 0);
    assert_ok(vmm_dev_reset_all(vm));
    assert_int_equal(rd(vm, 0x15) | rd(vm, 0x16) << 8, l->base_kib);
    assert_ok(vmm_vm_destroy(vm));
  }
}

static void test_flags_polled(void **state) {
  (void)state;
  int64_t t0 = utc(2023, 5, 5, 10, 20, 30);
  atomic_store(&fake_ns, t0 + NS / 4);
  vmm_vm *vm = dt_vm();
  cmos(vm, true);
  assert_int_equal(rd(vm, 0x0c), 0);
  /* Half a second: periodic (1024 Hz) but no update. */
  atomic_fetch_add(&fake_ns, NS / 2);
  assert_int_equal(rd(vm, 0x0c), 0x40);
  assert_int_equal(rd(vm, 0x0c), 0); /* reading clears */
  /* Across a second boundary: update-ended; the alarm matches 10:20:31. */
  wr(vm, 1, 0x31);
  wr(vm, 3, 0x20);
  wr(vm, 5, 0x10);
  atomic_fetch_add(&fake_ns, NS / 2);
  assert_int_equal(rd(vm, 0x0c), 0x70);
  /* A second later the alarm no longer matches; "don't care" matches. */
  atomic_fetch_add(&fake_ns, NS);
  assert_int_equal(rd(vm, 0x0c), 0x50);
  wr(vm, 1, 0xc0);
  wr(vm, 3, 0xff);
  wr(vm, 5, 0xc5);
  atomic_fetch_add(&fake_ns, NS);
  assert_int_equal(rd(vm, 0x0c), 0x70);
  /* With the interrupts enabled, IRQF and the line follow. */
  bool line;
  wr(vm, 0x0b, 0x02 | 0x10); /* UIE */
  atomic_fetch_add(&fake_ns, NS);
  wr(vm, 0x0a, 0x20); /* any access brings the flags up to date */
  assert_ok(vmm_vm_irq_get(vm, 8, &line));
  assert_true(line);
  assert_int_equal(rd(vm, 0x0c), 0xf0);
  assert_ok(vmm_vm_irq_get(vm, 8, &line));
  assert_false(line);
  /* Periodic rates: rate 0 is off. */
  atomic_fetch_add(&fake_ns, NS / 3);
  assert_int_equal(rd(vm, 0x0c) & 0x40, 0);
  /* SET stops updates, and clears UIE. */
  wr(vm, 0x0b, 0x82 | 0x10);
  assert_int_equal(rd(vm, 0x0b), 0x82);
  atomic_fetch_add(&fake_ns, 3 * NS);
  assert_int_equal(rd(vm, 0x0c) & 0x10, 0);
  assert_ok(vmm_vm_destroy(vm));
}

/* With the host clock, enabled interrupts arrive on IRQ 8 from a timer on
   the VM's loop, while nobody touches the device. */
static bool wait_line(vmm_vm *vm, uint32_t gsi, int ms) {
  for (int i = 0; i < ms; i++) {
    bool l;
    assert_ok(vmm_vm_irq_get(vm, gsi, &l));
    if (l)
      return true;
    usleep(1000);
  }
  return false;
}

static void test_interrupts_from_timer(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = cmos(vm, false);
  wr(vm, 0x0b, 0x02 | 0x40); /* PIE at the default 1024 Hz */
  assert_true(wait_line(vm, 8, 500));
  assert_int_equal(rd(vm, 0x0c) & 0xc0, 0xc0);
  wr(vm, 0x0a, 0x2f); /* 2 Hz */
  rd(vm, 0x0c);
  assert_true(wait_line(vm, 8, 1500));
  assert_int_equal(rd(vm, 0x0c) & 0xc0, 0xc0);
  wr(vm, 0x0b, 0x02 | 0x10); /* update-ended only */
  rd(vm, 0x0c);
  assert_true(wait_line(vm, 8, 1500));
  assert_int_equal(rd(vm, 0x0c) & 0x90, 0x90);
  wr(vm, 0x0b, 0x02); /* all off: the line stays down */
  rd(vm, 0x0c);
  usleep(1200000);
  bool l;
  assert_ok(vmm_vm_irq_get(vm, 8, &l));
  assert_false(l);
  assert_true(dt_stat(dev, "irqs") >= 3);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_state(void **state) {
  (void)state;
  atomic_store(&fake_ns, utc(2022, 7, 1, 8, 0, 0));
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = cmos(vm, true);
  wr(vm, 0x50, 0x77);
  wr(vm, 0x0b, 0x06);
  dt_outb(vm, IDX, 0x50);
  json_t *s = NULL;
  assert_ok(vmm_dev_save(dev, &s));
  /* Another VM restores it: same memory, same time, same index. */
  vmm_vm *vm2 = dt_vm();
  vmm_dev *dev2 = cmos(vm2, true);
  assert_ok(vmm_dev_restore(dev2, s));
  assert_int_equal(dt_inb(vm2, DAT), 0x77);
  assert_int_equal(rd(vm2, 0x0b), 0x06);
  assert_int_equal(rd(vm2, 4), 8);
  assert_int_equal(rd(vm2, 9), 22);
  json_t *bad = json_deep_copy(s);
  json_object_set_new(bad, "index", json_integer(128));
  assert_vmm(vmm_dev_restore(dev2, bad), VMM_EINVAL);
  json_decref(bad);
  bad = json_deep_copy(s);
  json_array_remove(json_object_get(bad, "ram"), 0);
  assert_vmm(vmm_dev_restore(dev2, bad), VMM_EINVAL);
  json_decref(bad);
  json_decref(s);
  /* Config errors. */
  struct vmm_cmos_config cfg;
  vmm_cmos_config_init(&cfg);
  cfg.name = "c2";
  cfg.gsi = 99;
  assert_vmm(vmm_cmos_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.gsi = 8;
  cfg.base = 0xffff;
  assert_vmm(vmm_cmos_create(vm, &cfg, NULL), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm2));
  assert_ok(vmm_vm_destroy(vm));
}

/* A guest reads memory bytes and the clock, with the NMI bit set. */
static void test_guest(void **state) {
  (void)state;
  atomic_store(&fake_ns, utc(2031, 12, 24, 18, 30, 15));
  vmm_vm *vm = dt_vm();
  cmos(vm, true);
  struct vmm_exit_port_config xcfg;
  vmm_exit_port_config_init(&xcfg);
  assert_ok(vmm_exit_port_create(vm, &xcfg, NULL));
  vmm_vcpu *vcpu = dt_guest(vm, 0, "dev_cmos", 3);
  static const uint8_t want_idx[] = {0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34,
                                     0x35, 0x5b, 0x00, 0x04, 0x09, 0x32, 0x0d};
  static const uint8_t want[] = {0x80, 0x02, 0x00, 0x04, 0x00, 0x04, 0,
                                 0,    0,    0x15, 0x18, 0x31, 0x20, 0x80};
  uint8_t table[1 + sizeof(want_idx)];
  table[0] = sizeof(want_idx);
  memcpy(table + 1, want_idx, sizeof(want_idx));
  assert_ok(vmm_mem_write(vm, 0x20000, table, sizeof(table)));
  dt_run_system(vcpu, VMM_SYSTEM_EXIT_PORT, 1);
  uint8_t got[sizeof(want)];
  assert_ok(vmm_mem_read(vm, DT_DATA, got, sizeof(got)));
  assert_memory_equal(got, want, sizeof(want));
  assert_ok(vmm_vm_destroy(vm));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registers_and_time),
      cmocka_unit_test(test_setting_the_clock),
      cmocka_unit_test(test_update_in_progress),
      cmocka_unit_test(test_host_clock),
      cmocka_unit_test(test_index_port_and_all_indices),
      cmocka_unit_test(test_memory_bytes),
      cmocka_unit_test(test_flags_polled),
      cmocka_unit_test(test_interrupts_from_timer),
      cmocka_unit_test(test_state),
      cmocka_unit_test(test_guest),
  };
  return vmmt_run_group(tests);
}
