/*
 * ELF32 / ELF64 executables: PT_LOAD segments copied to their physical
 * (or, on request, virtual) addresses with the bss zeroed, entry point
 * translated to the physical address it was loaded at. Also used by the
 * Multiboot loader for kernels without address fields.
 */
#include <string.h>

#include "../internal.h"
#include "internal.h"

#define ET_EXEC 2
#define ET_DYN 3
#define EM_386 3
#define EM_X86_64 62
#define PT_LOAD 1
#define PN_XNUM 0xffff

bool vmm__elf_magic(const void *image, size_t size) {
  return image != NULL && size >= 4 && memcmp(image, "\177ELF", 4) == 0;
}

struct phdr {
  uint32_t type;
  uint64_t offset, vaddr, paddr, filesz, memsz;
};

static void read_phdr(const uint8_t *p, bool is64, struct phdr *ph) {
  ph->type = ld_le32(p);
  if (is64) {
    ph->offset = ld_le64(p + 8);
    ph->vaddr = ld_le64(p + 16);
    ph->paddr = ld_le64(p + 24);
    ph->filesz = ld_le64(p + 32);
    ph->memsz = ld_le64(p + 40);
  } else {
    ph->offset = ld_le32(p + 4);
    ph->vaddr = ld_le32(p + 8);
    ph->paddr = ld_le32(p + 12);
    ph->filesz = ld_le32(p + 16);
    ph->memsz = ld_le32(p + 20);
  }
}

int vmm__load_elf(struct ld *ld, bool multiboot) {
  struct vmm_loader_result *res = ld->res;
  const uint8_t *b = ld->image;
  size_t size = ld->size;

  if (size < 16)
    return ld_fail(ld, VMM_ETRUNC,
                   "ELF identification truncated (%zu of 16 "
                   "bytes)",
                   size);
  if (!vmm__elf_magic(b, size))
    return ld_fail(ld, VMM_EBADIMAGE, "bad ELF magic");
  if (b[4] != 1 && b[4] != 2)
    return ld_fail(ld, VMM_EBADIMAGE, "bad ELF class %u", b[4]);
  bool is64 = b[4] == 2;
  if (!multiboot) {
    enum vmm_image_format want = is64 ? VMM_IMAGE_ELF64 : VMM_IMAGE_ELF32;
    if (res->format != want)
      return ld_fail(ld, VMM_EBADIMAGE, "image is %s, not %s",
                     vmm_image_format_name(want),
                     vmm_image_format_name(res->format));
  }
  if (b[5] != 1)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "ELF data encoding %u is not "
                   "little-endian",
                   b[5]);
  if (b[6] != 1)
    return ld_fail(ld, VMM_EBADIMAGE, "ELF version %u is not 1", b[6]);
  size_t ehsize = is64 ? 64 : 52;
  if (size < ehsize)
    return ld_fail(ld, VMM_ETRUNC, "ELF header truncated (%zu of %zu bytes)",
                   size, ehsize);

  uint16_t type = ld_le16(b + 16), machine = ld_le16(b + 18);
  uint64_t entry, phoff;
  uint16_t phentsize, phnum;
  if (is64) {
    entry = ld_le64(b + 24);
    phoff = ld_le64(b + 32);
    phentsize = ld_le16(b + 54);
    phnum = ld_le16(b + 56);
  } else {
    entry = ld_le32(b + 24);
    phoff = ld_le32(b + 28);
    phentsize = ld_le16(b + 42);
    phnum = ld_le16(b + 44);
  }
  if (type != ET_EXEC && type != ET_DYN)
    return ld_fail(ld, VMM_EBADIMAGE, "ELF type %u is not an executable", type);
  if (machine != (is64 ? EM_X86_64 : EM_386))
    return ld_fail(ld, VMM_EBADIMAGE, "ELF machine %u is not %s", machine,
                   is64 ? "x86-64 (62)" : "i386 (3)");
  size_t phsize = is64 ? 56 : 32;
  if (phnum == 0 || phnum == PN_XNUM)
    return ld_fail(ld, VMM_EBADIMAGE, "ELF has %s program headers",
                   phnum == 0 ? "no" : "extended-numbered (PN_XNUM)");
  if (phentsize < phsize)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "e_phentsize %u is smaller than a "
                   "program header (%zu)",
                   phentsize, phsize);
  if (!ld_in_file(phoff, (uint64_t)phnum * phentsize, size))
    return ld_fail(ld, VMM_ETRUNC,
                   "program header table (e_phoff 0x%llx, %u x %u bytes) "
                   "beyond the file (%zu bytes)",
                   (unsigned long long)phoff, phnum, phentsize, size);

  bool vaddr = !multiboot && (ld->opt.flags & VMM_LOADER_ELF_VADDR);
  uint64_t lo = UINT64_MAX, hi = 0, phys_entry = 0;
  bool entry_found = false;
  unsigned segments = 0;
  for (unsigned i = 0; i < phnum; i++) {
    struct phdr ph;
    read_phdr(b + phoff + (uint64_t)i * phentsize, is64, &ph);
    if (ph.type != PT_LOAD || ph.memsz == 0)
      continue;
    if (ph.filesz > ph.memsz)
      return ld_fail(ld, VMM_EBADIMAGE,
                     "ELF program header %u: p_filesz 0x%llx exceeds "
                     "p_memsz 0x%llx",
                     i, (unsigned long long)ph.filesz,
                     (unsigned long long)ph.memsz);
    if (!ld_in_file(ph.offset, ph.filesz, size))
      return ld_fail(ld, VMM_ETRUNC,
                     "ELF program header %u: p_offset+p_filesz (0x%llx + "
                     "0x%llx) beyond the file (%zu bytes)",
                     i, (unsigned long long)ph.offset,
                     (unsigned long long)ph.filesz, size);
    uint64_t at = vaddr ? ph.vaddr : ph.paddr;
    if (at + ph.memsz < at)
      return ld_fail(ld, VMM_EBADIMAGE,
                     "ELF program header %u: address 0x%llx + p_memsz "
                     "0x%llx overflows",
                     i, (unsigned long long)at, (unsigned long long)ph.memsz);
    if ((multiboot || !is64) && at + ph.memsz > (1ull << 32))
      return ld_fail(ld, VMM_EBADIMAGE,
                     "ELF program header %u: ends above 4 GiB, out of reach "
                     "of a 32-bit entry",
                     i);
    if (segments >= VMM_LOADER_MAX_SEGMENTS)
      return ld_fail(ld, VMM_EBADIMAGE, "more than %d PT_LOAD segments",
                     VMM_LOADER_MAX_SEGMENTS);
    int err = ld_add(ld, at, ph.memsz, b + ph.offset, ph.filesz,
                     VMM_REGION_IMAGE, i, false, "ELF program header %u", i);
    if (err < 0)
      return err;
    segments++;
    if (at < lo)
      lo = at;
    if (at + ph.memsz > hi)
      hi = at + ph.memsz;
    /* The entry is a virtual address: find it through p_vaddr. */
    if (!entry_found && entry >= ph.vaddr && entry - ph.vaddr < ph.memsz) {
      phys_entry = at + (entry - ph.vaddr);
      entry_found = true;
    }
  }
  if (segments == 0)
    return ld_fail(ld, VMM_EBADIMAGE, "ELF has no loadable segment");
  if (!entry_found)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "entry point 0x%llx is not inside any PT_LOAD segment",
                   (unsigned long long)entry);

  res->elf.segments = segments;
  res->elf.entry_virtual = entry;
  res->entry = phys_entry;
  res->image_start = lo;
  res->image_end = hi;
  res->regs.rip = phys_entry;
  if (multiboot)
    return 0;
  return ld_tables(ld, is64 ? VMM_MODE_LONG64 : VMM_MODE_PROT32);
}
