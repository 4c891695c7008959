/* Fuzz target: the ELF parser (ELF32 or ELF64 by the class byte). See
 * fuzz_loader.h for the input layout. */
#include "fuzz_loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fz_load(data, size,
                 size > 8 && data[8] == 1 ? VMM_IMAGE_ELF32 : VMM_IMAGE_ELF64);
}
