/*
 * Multiboot v1 kernels: the header (address fields, or an ELF image), the
 * information structure with mem_lower/mem_upper, command line, modules,
 * a memory map and the boot loader name, and the 32-bit protected-mode
 * entry with EAX = 0x2BADB002 and EBX = the information structure.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "internal.h"

#define MB_HEADER_MAGIC 0x1badb002u
#define MB_BOOTLOADER_MAGIC 0x2badb002u
#define MB_SEARCH 8192
#define MB_F_PAGE_ALIGN (1u << 0)
#define MB_F_MEMORY_INFO (1u << 1)
#define MB_F_VIDEO_MODE (1u << 2)
#define MB_F_ADDRESS (1u << 16)

#define MBI_MEM (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS (1u << 3)
#define MBI_MMAP (1u << 6)
#define MBI_LOADER_NAME (1u << 9)

/* The info structure as far as libvmm fills it (through vbe fields). */
#define MBI_SIZE 128
#define MB_MOD_SIZE 16
#define MB_MMAP_SIZE 24 /* the 4-byte size field, then 20 bytes */

#define DEFAULT_BOOT_INFO 0x7000ull
#define DEFAULT_CMDLINE 0x20000ull
#define FOUR_GIB (1ull << 32)
#define PAGE 4096ull

static const char loader_name[] = "libvmm";

long vmm__multiboot_find(const void *image, size_t size) {
  const uint8_t *b = image;
  size_t lim = size < MB_SEARCH ? size : MB_SEARCH;

  if (image == NULL)
    return -1;
  for (size_t off = 0; off + 12 <= lim; off += 4) {
    uint32_t magic = ld_le32(b + off), flags = ld_le32(b + off + 4);
    uint32_t sum = ld_le32(b + off + 8);
    if (magic == MB_HEADER_MAGIC && (uint32_t)(magic + flags + sum) == 0)
      return (long)off;
  }
  return -1;
}

/* End of the RAM run of the map that starts at addr (addr if none). */
static uint64_t ram_run(const struct vmm_loader_result *res, uint64_t addr) {
  bool grew = true;
  while (grew) {
    grew = false;
    for (size_t i = 0; i < res->nr_e820; i++) {
      const struct vmm_e820_entry *e = &res->e820[i];
      if (e->type == VMM_E820_RAM && e->addr <= addr &&
          addr - e->addr < e->size) {
        addr = e->addr + e->size;
        grew = true;
      }
    }
  }
  return addr;
}

/* Load by the header's address fields (flags bit 16). */
static int load_address_fields(struct ld *ld, size_t off) {
  const uint8_t *b = ld->image;
  struct vmm_loader_result *res = ld->res;

  if (!ld_in_file(off, 32, ld->size))
    return ld_fail(ld, VMM_ETRUNC,
                   "Multiboot address fields at 0x%zx truncated by the end "
                   "of the file",
                   off + 12);
  if (off + 32 > MB_SEARCH)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot header does not end within the first %d bytes",
                   MB_SEARCH);
  uint64_t header_addr = ld_le32(b + off + 12);
  uint64_t load_addr = ld_le32(b + off + 16);
  uint64_t load_end_addr = ld_le32(b + off + 20);
  uint64_t bss_end_addr = ld_le32(b + off + 24);
  uint64_t entry = ld_le32(b + off + 28);

  if (load_addr > header_addr)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot load_addr 0x%llx is above header_addr 0x%llx",
                   (unsigned long long)load_addr,
                   (unsigned long long)header_addr);
  if (header_addr - load_addr > off)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot header_addr - load_addr (0x%llx) exceeds the "
                   "header's file offset 0x%zx",
                   (unsigned long long)(header_addr - load_addr), off);
  uint64_t load_off = off - (header_addr - load_addr), load_len;
  if (load_end_addr == 0) {
    load_len = ld->size - load_off;
  } else {
    if (load_end_addr < load_addr)
      return ld_fail(ld, VMM_EBADIMAGE,
                     "Multiboot load_end_addr 0x%llx is below load_addr "
                     "0x%llx",
                     (unsigned long long)load_end_addr,
                     (unsigned long long)load_addr);
    load_len = load_end_addr - load_addr;
    if (!ld_in_file(load_off, load_len, ld->size))
      return ld_fail(ld, VMM_ETRUNC,
                     "Multiboot load range (file offset 0x%llx, 0x%llx "
                     "bytes) beyond the file (%zu bytes)",
                     (unsigned long long)load_off, (unsigned long long)load_len,
                     ld->size);
  }
  uint64_t load_end = load_addr + load_len, mem_end = load_end;
  if (load_end > FOUR_GIB)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot image (0x%llx bytes at 0x%llx) ends above "
                   "4 GiB",
                   (unsigned long long)load_len, (unsigned long long)load_addr);
  if (bss_end_addr != 0) {
    if (bss_end_addr < load_end)
      return ld_fail(ld, VMM_EBADIMAGE,
                     "Multiboot bss_end_addr 0x%llx is below the end of the "
                     "loaded data 0x%llx",
                     (unsigned long long)bss_end_addr,
                     (unsigned long long)load_end);
    mem_end = bss_end_addr;
  }
  if (entry < load_addr || entry >= mem_end)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot entry_addr 0x%llx is outside the loaded image "
                   "0x%llx-0x%llx",
                   (unsigned long long)entry, (unsigned long long)load_addr,
                   (unsigned long long)mem_end);
  int err = ld_add(ld, load_addr, mem_end - load_addr, b + load_off, load_len,
                   VMM_REGION_IMAGE, 0, false, "Multiboot image");
  if (err < 0)
    return err;
  res->entry = entry;
  res->image_start = load_addr;
  res->image_end = mem_end;
  return 0;
}

int vmm__load_multiboot(struct ld *ld) {
  struct vmm_loader_result *res = ld->res;
  const struct vmm_loader_options *o = &ld->opt;
  const uint8_t *b = ld->image;
  int err;

  long found = vmm__multiboot_find(b, ld->size);
  if (found < 0)
    return ld_fail(ld, ld->size < 12 ? VMM_ETRUNC : VMM_EBADIMAGE,
                   "no Multiboot header (magic 0x1BADB002 with a valid "
                   "checksum) in the first %d bytes",
                   MB_SEARCH);
  size_t off = (size_t)found;
  uint32_t flags = ld_le32(b + off + 4);
  res->multiboot.header_offset = (uint32_t)off;
  res->multiboot.header_flags = flags;
  if (flags & MB_F_VIDEO_MODE)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot header requires a video mode (flags bit 2), "
                   "which libvmm cannot provide");
  if (flags & 0xfff8u)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot header requires unknown features (flags "
                   "0x%x)",
                   flags & 0xfff8u);

  if (flags & MB_F_ADDRESS)
    err = load_address_fields(ld, off);
  else if (!vmm__elf_magic(b, ld->size))
    return ld_fail(ld, VMM_EBADIMAGE,
                   "Multiboot header has no address fields (flags bit 16) "
                   "and the image is not ELF");
  else
    err = vmm__load_elf(ld, true);
  if (err < 0)
    return err;
  if ((err = ld_memmap(ld)) < 0)
    return err;

  /* Command-line area: the kernel's, then each module's string. */
  size_t klen = 0, total = 0, lens[VMM_LOADER_MAX_MODULES];
  if ((err = ld_cmdline_len(ld, o->cmdline, VMM_LOADER_MAX_CMDLINE, &klen)) < 0)
    return err;
  total = o->cmdline != NULL ? klen + 1 : 0;
  for (size_t i = 0; i < o->nr_modules; i++) {
    if ((err = ld_cmdline_len(ld, o->modules[i].cmdline, VMM_LOADER_MAX_CMDLINE,
                              &lens[i])) < 0)
      return err;
    total += lens[i] + 1;
  }
  vmm_gpa_t cmd_gpa = ld_addr(o->cmdline_addr, DEFAULT_CMDLINE);
  if (total > 0 && (cmd_gpa >= FOUR_GIB || total > FOUR_GIB - cmd_gpa))
    return ld_fail(ld, VMM_EINVAL,
                   "cmdline_addr 0x%llx: Multiboot strings must lie below "
                   "4 GiB",
                   (unsigned long long)cmd_gpa);
  char *cmd = NULL;
  if (total > 0) {
    if ((cmd = calloc(1, total)) == NULL || (err = ld_keep(ld, cmd)) < 0)
      return err < 0 ? err : VMM_ENOMEM;
    if ((err = ld_add(ld, cmd_gpa, total, cmd, total, VMM_REGION_CMDLINE, 0,
                      true, "command line")) < 0)
      return err;
  }

  size_t info_size = MBI_SIZE + o->nr_modules * MB_MOD_SIZE +
                     res->nr_e820 * MB_MMAP_SIZE + sizeof(loader_name);
  vmm_gpa_t info_gpa = ld_addr(o->boot_info_addr, DEFAULT_BOOT_INFO);
  if (info_gpa >= FOUR_GIB || info_size > FOUR_GIB - info_gpa)
    return ld_fail(ld, VMM_EINVAL,
                   "boot_info_addr 0x%llx: the Multiboot information must "
                   "lie below 4 GiB",
                   (unsigned long long)info_gpa);
  uint8_t *info = calloc(1, info_size);
  if (info == NULL || (err = ld_keep(ld, info)) < 0)
    return info == NULL ? VMM_ENOMEM : err;
  if ((err = ld_add(ld, info_gpa, info_size, info, info_size,
                    VMM_REGION_BOOT_INFO, 0, true, "Multiboot information")) <
      0)
    return err;
  if ((err = ld_tables(ld, VMM_MODE_PROT32)) < 0)
    return err;

  /* Modules: page aligned (which also satisfies flags bit 0), after the
     image unless the caller says where. */
  uint32_t iflags = MBI_MEM | MBI_MMAP | MBI_LOADER_NAME;
  size_t pos = 0; /* in cmd */
  if (o->cmdline != NULL) {
    memcpy(cmd, o->cmdline, klen);
    ld_put32(info + 16, (uint32_t)cmd_gpa);
    iflags |= MBI_CMDLINE;
    pos = klen + 1;
  }
  vmm_gpa_t cursor = ld_addr(o->modules_addr, 0);
  uint8_t *mods = info + MBI_SIZE;
  for (size_t i = 0; i < o->nr_modules; i++) {
    const struct vmm_loader_module *m = &o->modules[i];
    vmm_gpa_t at;
    if (o->modules_addr != VMM_LOADER_ADDR_AUTO) {
      at = (cursor + PAGE - 1) & ~(PAGE - 1);
    } else {
      vmm_gpa_t lo = (res->image_end + PAGE - 1) & ~(PAGE - 1);
      at = lo; /* an empty module takes no space */
      if (m->size > 0 &&
          ld_find_free(ld, m->size, PAGE, lo, FOUR_GIB, false, &at) < 0)
        return ld_fail(ld, VMM_ENOSPC,
                       "no free RAM below 4 GiB for module %zu (%zu bytes)", i,
                       m->size);
    }
    if (at >= FOUR_GIB || m->size > FOUR_GIB - at)
      return ld_fail(ld, VMM_EINVAL,
                     "module %zu (%zu bytes at 0x%llx) does not end below "
                     "4 GiB",
                     i, m->size, (unsigned long long)at);
    if ((err = ld_add(ld, at, m->size, m->data, m->size, VMM_REGION_MODULE,
                      (uint32_t)i, false, "module %zu", i)) < 0)
      return err;
    cursor = at + m->size;
    if (lens[i] > 0)
      memcpy(cmd + pos, m->cmdline, lens[i]);
    ld_put32(mods + i * MB_MOD_SIZE, (uint32_t)at);
    ld_put32(mods + i * MB_MOD_SIZE + 4, (uint32_t)(at + m->size));
    ld_put32(mods + i * MB_MOD_SIZE + 8, (uint32_t)(cmd_gpa + pos));
    pos += lens[i] + 1;
  }
  if (o->nr_modules > 0) {
    iflags |= MBI_MODS;
    ld_put32(info + 20, (uint32_t)o->nr_modules);
    ld_put32(info + 24, (uint32_t)(info_gpa + MBI_SIZE));
  }

  uint64_t low = ram_run(res, 0), high = ram_run(res, 0x100000);
  uint64_t lower = (low > 0xa0000 ? 0xa0000 : low) / 1024;
  uint64_t upper = high > 0x100000 ? (high - 0x100000) / 1024 : 0;
  if (upper > UINT32_MAX)
    upper = UINT32_MAX;
  res->multiboot.mem_lower = (uint32_t)lower;
  res->multiboot.mem_upper = (uint32_t)upper;
  ld_put32(info + 4, (uint32_t)lower);
  ld_put32(info + 8, (uint32_t)upper);

  uint8_t *mm = mods + o->nr_modules * MB_MOD_SIZE;
  for (size_t i = 0; i < res->nr_e820; i++) {
    ld_put32(mm + i * MB_MMAP_SIZE, MB_MMAP_SIZE - 4);
    ld_put64(mm + i * MB_MMAP_SIZE + 4, res->e820[i].addr);
    ld_put64(mm + i * MB_MMAP_SIZE + 12, res->e820[i].size);
    ld_put32(mm + i * MB_MMAP_SIZE + 20, res->e820[i].type);
  }
  vmm_gpa_t mm_gpa = info_gpa + (uint64_t)(mm - info);
  ld_put32(info + 44, (uint32_t)(res->nr_e820 * MB_MMAP_SIZE));
  ld_put32(info + 48, (uint32_t)mm_gpa);
  size_t name_off = (size_t)(mm - info) + res->nr_e820 * MB_MMAP_SIZE;
  memcpy(info + name_off, loader_name, sizeof(loader_name));
  ld_put32(info + 64, (uint32_t)(info_gpa + name_off));
  ld_put32(info, iflags);

  res->multiboot.info = info_gpa;
  res->multiboot.nr_modules = o->nr_modules;
  res->regs.rax = MB_BOOTLOADER_MAGIC;
  res->regs.rbx = info_gpa;
  res->regs.rip = res->entry;
  return 0;
}
