/* Fuzz target: the Multiboot parser (header, address fields, ELF kernels, info
 * structure). See fuzz_loader.h for the input layout. */
#include "fuzz_loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fz_load(data, size, VMM_IMAGE_MULTIBOOT);
}
