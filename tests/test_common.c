/*
 * Tests of include/libvmm/common.h: error strings and names for every code
 * of VMM_ERRNO_MAP and for plain -errno values, and the version calls.
 * Needs no engine.
 */
#include "testutil.h"

#include <limits.h>

struct code {
  const char *name;
  int value;
  const char *msg;
};

static const struct code codes[] = {
#define CODE(name, value, msg) {"VMM_" #name, value, msg},
    VMM_ERRNO_MAP(CODE)
#undef CODE
};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

static void test_every_code_described(void **state) {
  (void)state;
  for (size_t i = 0; i < NCODES; i++) {
    assert_string_equal(vmm_strerror(codes[i].value), codes[i].msg);
    assert_string_equal(vmm_err_name(codes[i].value), codes[i].name);
  }
}

static void test_codes_distinct_and_negative(void **state) {
  (void)state;
  for (size_t i = 0; i < NCODES; i++) {
    assert_true(codes[i].value < 0);
    for (size_t j = 0; j < i; j++)
      if (codes[i].value == codes[j].value)
        fail_msg("%s and %s share the value %d", codes[i].name, codes[j].name,
                 codes[i].value);
  }
}

/* Codes that mirror errno are the negated errno; libvmm's own codes lie
   below VMM__ERRBASE, where no errno value lives. */
static void test_code_ranges(void **state) {
  (void)state;
  assert_int_equal(VMM_EINVAL, -EINVAL);
  assert_int_equal(VMM_ENOMEM, -ENOMEM);
  assert_int_equal(VMM_ENOTSUP, -EOPNOTSUPP);
  assert_int_equal(VMM_EBUSY, -EBUSY);
  for (size_t i = 0; i < NCODES; i++) {
    int v = codes[i].value;
    if (v < VMM__ERRBASE) {
      assert_null(strerrorname_np(-v));
    } else {
      const char *sys = strerrorname_np(-v);
      assert_non_null(sys);
      /* VMM_ENOTSUP is EOPNOTSUPP; every other name matches errno's. */
      if (v != VMM_ENOTSUP)
        assert_string_equal(sys, codes[i].name + 4);
    }
  }
}

static void test_success(void **state) {
  (void)state;
  assert_string_equal(vmm_strerror(0), "success");
  assert_string_equal(vmm_err_name(0), "OK");
}

/* An errno the list does not name is described by the C library. */
static void test_plain_errno(void **state) {
  (void)state;
  assert_string_equal(vmm_strerror(-ENOTDIR), strerrordesc_np(ENOTDIR));
  assert_string_equal(vmm_err_name(-ENOTDIR), "ENOTDIR");
  assert_string_equal(vmm_strerror(-EMFILE), strerrordesc_np(EMFILE));
  assert_string_equal(vmm_err_name(-EMFILE), "EMFILE");
  assert_string_equal(vmm_err_name(-ENXIO), "ENXIO");
}

static void test_unknown_codes(void **state) {
  (void)state;
  static const int unknown[] = {
      1,      77, INT_MAX, INT_MIN, -4095, VMM__ERRBASE, VMM__ERRBASE - 100,
      -100000};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    const char *s = vmm_strerror(unknown[i]);
    assert_non_null(s);
    assert_string_equal(s, "unknown error");
    assert_string_equal(vmm_err_name(unknown[i]), "VMM_EUNKNOWN");
  }
}

static void test_version(void **state) {
  (void)state;
  char want[32];
  assert_int_equal(vmm_version(), VMM_VERSION_HEX);
  assert_int_equal(vmm_version() >> 16, VMM_VERSION_MAJOR);
  assert_int_equal((vmm_version() >> 8) & 0xff, VMM_VERSION_MINOR);
  assert_int_equal(vmm_version() & 0xff, VMM_VERSION_PATCH);
  snprintf(want, sizeof(want), "%d.%d.%d", VMM_VERSION_MAJOR, VMM_VERSION_MINOR,
           VMM_VERSION_PATCH);
  assert_string_equal(vmm_version_string(), want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_code_described),
      cmocka_unit_test(test_codes_distinct_and_negative),
      cmocka_unit_test(test_code_ranges),
      cmocka_unit_test(test_success),
      cmocka_unit_test(test_plain_errno),
      cmocka_unit_test(test_unknown_codes),
      cmocka_unit_test(test_version),
  };
  return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
