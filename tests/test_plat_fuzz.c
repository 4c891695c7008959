/*
 * The interrupt platform under arbitrary input (tests/plat_harness.h): a
 * fixed seed of pseudo-random operation streams, streams biased towards
 * each operation, and hostile saved states at every depth of every
 * device's state. Run under ASan/UBSan by `./build.sh sanitize`; the same
 * harness is the libFuzzer target fuzz/fuzz_platform.
 */
#include "devtest.h"

#include "plat_harness.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint8_t next(void) {
  return vmmt_rand8(&rng);
}

static void run(struct ph *h, const uint8_t *buf, size_t n) {
  const char *failure = ph_run(h, buf, n);
  if (failure != NULL)
    fail_msg("%s", failure);
}

static void init(struct ph *h) {
  int err = ph_init(h, vmmt_engine);
  if (err < 0 && vmmt_engine != VMM_ENGINE_KVM) {
    print_message("skipped: %s\n", vmm_strerror(err));
    skip();
  }
  assert_ok(err);
}

static void test_random_streams(void **state) {
  (void)state;
  struct ph h;
  init(&h);
  static uint8_t buf[2048];
  for (int round = 0; round < 2000; round++) {
    size_t n = (size_t)(next() | next() << 8) % sizeof(buf);
    /* Now and then, streams mostly of one kind of operation. */
    uint8_t only = round % 3 == 0 ? next() % 16 : 0xff;
    for (size_t i = 0; i < n; i++) {
      buf[i] = next();
      if (only != 0xff && i % 8 == 0)
        buf[i] = (uint8_t)((buf[i] & ~15u) | only);
    }
    run(&h, buf, n);
  }
  ph_fini(&h);
}

/* Register streams the guest would plausibly write: aligned 32-bit APIC
   and IOAPIC accesses, lines, time and INTAs interleaved. */
static void test_register_streams(void **state) {
  (void)state;
  struct ph h;
  init(&h);
  static const uint8_t ops[] = {0x62, 0x63, 0x64, 0x65, 0x06, 0x86,
                                0x07, 0x88, 0x08, 0x00, 0x01, 0x0b};
  uint8_t buf[1024];
  for (int round = 0; round < 1500; round++) {
    size_t n = 0;
    while (n + 10 <= sizeof(buf)) {
      buf[n++] = ops[next() % sizeof(ops)];
      buf[n++] = next() & 0x41; /* CPU 0 or 1, mostly */
      for (int k = 0; k < 8; k++)
        buf[n++] = next();
    }
    run(&h, buf, n);
  }
  ph_fini(&h);
}

/* Every device's state, each member at the first two levels replaced by
   each kind of value, or removed. */
static void test_hostile_states(void **state) {
  (void)state;
  struct ph h;
  init(&h);
  for (unsigned dev = 0; dev < PH_DEVS; dev++) {
    for (unsigned pick = 0; pick < 24; pick++) {
      for (unsigned kind = 0; kind < 14; kind++) {
        for (unsigned depth = 0; depth < 3; depth++) {
          uint8_t buf[2 + 32];
          size_t n = 0;
          buf[n++] = (uint8_t)(12 | dev << 6);
          buf[n++] = 31;
          for (unsigned d = 0; d < depth; d++) {
            buf[n++] = 0x80;
            buf[n++] = (uint8_t)(pick * 7 + d);
          }
          buf[n++] = (uint8_t)pick;
          buf[n++] = (uint8_t)(kind % 7 | (kind >= 7 ? 0x80 : 0));
          while (n < sizeof(buf))
            buf[n++] = kind & 1 ? 0xff : next();
          run(&h, buf, n);
        }
      }
    }
  }
  ph_fini(&h);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_streams),
      cmocka_unit_test(test_register_streams),
      cmocka_unit_test(test_hostile_states),
  };
  return vmmt_run_group(tests);
}
