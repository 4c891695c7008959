/* Fuzz target: the user-space interrupt platform (8259A pair, 8254,
 * IOAPIC, local APICs) driven by a hostile guest, hostile saved states
 * and the CPU side. The input format and the invariants checked are those
 * of tests/plat_harness.h; a broken invariant aborts. One VM serves all
 * inputs (its devices are reset and its manual clock put on a fixed phase
 * for each), on whatever engine is present; without one there is nothing
 * to fuzz and every input is a no-op. */
#include <stdio.h>

#include "../tests/plat_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct ph h;
  static int state; /* 0 untried, 1 ready, -1 no engine */
  if (state == 0)
    state = ph_init(&h, VMM_ENGINE_AUTO) == 0 ? 1 : -1;
  if (state < 0)
    return 0;
  const char *failure = ph_run(&h, data, size);
  if (failure != NULL) {
    fprintf(stderr, "fuzz_platform: %s\n", failure);
    abort();
  }
  return 0;
}
