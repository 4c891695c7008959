/*
 * Raw flat binary: the whole file at one address, entry at another, in the
 * CPU mode the caller chose. Nothing in the file is interpreted.
 */
#include "../internal.h"
#include "internal.h"

#define RAW_DEFAULT_REAL 0x7c00ull
#define RAW_DEFAULT_PROT 0x100000ull

int vmm__load_raw(struct ld *ld) {
  struct vmm_loader_result *res = ld->res;
  enum vmm_cpu_mode mode = ld->opt.raw_mode;

  if (ld->size == 0)
    return ld_fail(ld, VMM_ETRUNC, "the image is empty");
  vmm_gpa_t addr =
      ld_addr(ld->opt.raw_addr,
              mode == VMM_MODE_REAL ? RAW_DEFAULT_REAL : RAW_DEFAULT_PROT);
  vmm_gpa_t entry = ld_addr(ld->opt.raw_entry, addr);
  int err = ld_add(ld, addr, ld->size, ld->image, ld->size, VMM_REGION_IMAGE, 0,
                   false, "raw image");
  if (err < 0)
    return err;
  if (mode == VMM_MODE_REAL && entry >= 0x100000)
    return ld_fail(ld, VMM_EINVAL,
                   "entry 0x%llx is above 1 MiB, unreachable in real mode",
                   (unsigned long long)entry);
  if (mode == VMM_MODE_PROT32 && entry >= (1ull << 32))
    return ld_fail(ld, VMM_EINVAL,
                   "entry 0x%llx is above 4 GiB, unreachable in 32-bit mode",
                   (unsigned long long)entry);
  res->entry = entry;
  res->image_start = addr;
  res->image_end = addr + ld->size;
  res->regs.rip = mode == VMM_MODE_REAL ? entry & 0xffff : entry;
  return ld_tables(ld, mode);
}
