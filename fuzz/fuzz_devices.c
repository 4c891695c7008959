/* Fuzz target: every stock device driven by a hostile guest and hostile
 * saved states. The input format and the invariants checked are those of
 * tests/dev_harness.h; a broken invariant aborts. One VM serves all inputs
 * (devices are attached afresh for each), on whatever engine is present;
 * without one there is nothing to fuzz and every input is a no-op. */
#include <stdio.h>

#include "../tests/dev_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct dh h;
  static int state; /* 0 untried, 1 ready, -1 no engine */
  if (state == 0)
    state = dh_init(&h, VMM_ENGINE_AUTO) == 0 ? 1 : -1;
  if (state < 0)
    return 0;
  const char *failure = dh_run(&h, data, size);
  if (failure != NULL) {
    fprintf(stderr, "fuzz_devices: %s\n", failure);
    abort();
  }
  return 0;
}
