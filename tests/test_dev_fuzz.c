/*
 * Every stock device under arbitrary input (tests/dev_harness.h): a fixed
 * seed of pseudo-random operation streams, streams biased towards each
 * operation, and hostile saved states for every member of every device's
 * state. Run under ASan/UBSan by `./build.sh sanitize`.
 */
#include "devtest.h"

#include "dev_harness.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint8_t next(void) {
  return vmmt_rand8(&rng);
}

static void run(struct dh *h, const uint8_t *buf, size_t n) {
  const char *failure = dh_run(h, buf, n);
  if (failure != NULL)
    fail_msg("%s", failure);
}

static void test_random_streams(void **state) {
  (void)state;
  struct dh h;
  assert_ok(dh_init(&h, vmmt_engine));
  static uint8_t buf[4096];
  for (int round = 0; round < 3000; round++) {
    size_t n = (size_t)(next() | next() << 8) % sizeof(buf);
    /* Now and then, streams of one kind of operation. */
    uint8_t only = round % 3 == 0 ? next() % 8 : 0xff;
    for (size_t i = 0; i < n; i++) {
      buf[i] = next();
      if (only != 0xff && i % 6 == 0)
        buf[i] = (uint8_t)((buf[i] & ~7u) | only);
    }
    run(&h, buf, n);
  }
  dh_fini(&h);
}

/* Each member of each device's state replaced by each kind of value. */
static void test_hostile_states(void **state) {
  (void)state;
  struct dh h;
  assert_ok(dh_init(&h, vmmt_engine));
  for (unsigned dev = 0; dev < 5; dev++) {
    for (unsigned pick = 0; pick < 24; pick++) {
      for (unsigned kind = 0; kind < 6; kind++) {
        for (unsigned variant = 0; variant < 4; variant++) {
          uint8_t buf[2 + 2 + 24] = {6, (uint8_t)dev, (uint8_t)pick,
                                     (uint8_t)(variant * 6)};
          buf[0] = (uint8_t)(6 | kind << 3 | variant << 7);
          for (size_t i = 4; i < sizeof(buf); i++)
            buf[i] = variant == 0 ? 0xff : variant == 1 ? 0 : next();
          run(&h, buf, sizeof(buf));
        }
      }
    }
  }
  dh_fini(&h);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_streams),
      cmocka_unit_test(test_hostile_states),
  };
  return vmmt_run_group(tests);
}
