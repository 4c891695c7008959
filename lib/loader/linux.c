/*
 * Linux bzImage, boot protocol 2.06 or later, entered through the 64-bit
 * boot protocol (Documentation/arch/x86/boot.rst): the protected-mode
 * kernel is copied to its load address, a zero page (struct boot_params)
 * is built from the image's setup header with an e820 map, the command
 * line and the initrd, and the vCPU starts at the kernel's 64-bit entry
 * (load address + 0x200) in long mode with identity-mapped page tables,
 * CS = __BOOT_CS (0x10), DS/ES/SS = __BOOT_DS (0x18), interrupts off and
 * RSI pointing at the zero page.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "internal.h"

/* Setup header fields: offsets in the image and in the zero page alike. */
#define HDR_SETUP_SECTS 0x1f1
#define HDR_SYSSIZE 0x1f4
#define HDR_BOOT_FLAG 0x1fe
#define HDR_JUMP 0x200
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_LOADFLAGS 0x211
#define HDR_CODE32_START 0x214
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_CMD_LINE_PTR 0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_MIN_ALIGNMENT 0x235
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_HARDWARE_SUBARCH 0x23c
#define HDR_SETUP_DATA 0x250
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE 0x260

/* Zero page fields outside the setup header. */
#define ZP_EXT_RAMDISK_IMAGE 0x0c0
#define ZP_EXT_RAMDISK_SIZE 0x0c4
#define ZP_EXT_CMD_LINE_PTR 0x0c8
#define ZP_E820_ENTRIES 0x1e8
#define ZP_E820_TABLE 0x2d0
#define ZP_SIZE 4096

#define LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x0001
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x0002

#define DEFAULT_ZERO_PAGE 0x7000ull
#define DEFAULT_CMDLINE 0x20000ull
#define DEFAULT_KERNEL 0x100000ull
#define STARTUP_64 0x200
/* Auto-placed initrds stay above the first MiB (and off address 0, which
   the kernel reads as "no initrd"). */
#define INITRD_MIN 0x100000ull
#define FOUR_GIB (1ull << 32)
#define PAGE 4096ull

/* Reject something placed above 4 GiB unless the kernel allows it. */
static int below_4g(struct ld *ld, const char *what, vmm_gpa_t gpa,
                    uint64_t size, uint16_t xlf) {
  if (xlf & XLF_CAN_BE_LOADED_ABOVE_4G)
    return 0;
  if (gpa < FOUR_GIB && size <= FOUR_GIB - gpa)
    return 0;
  return ld_fail(ld, VMM_EINVAL,
                 "%s at 0x%llx crosses 4 GiB and the kernel lacks "
                 "XLF_CAN_BE_LOADED_ABOVE_4G",
                 what, (unsigned long long)gpa);
}

int vmm__load_bzimage(struct ld *ld) {
  struct vmm_loader_result *res = ld->res;
  const struct vmm_loader_options *o = &ld->opt;
  const uint8_t *b = ld->image;
  size_t size = ld->size;
  int err;

  if (size < HDR_VERSION + 2)
    return ld_fail(ld, VMM_ETRUNC,
                   "bzImage setup header truncated (%zu bytes; the magic and "
                   "version end at 0x%x)",
                   size, HDR_VERSION + 2);
  if (ld_le16(b + HDR_BOOT_FLAG) != 0xaa55)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "boot_flag at 0x1fe is 0x%04x, not "
                   "0xAA55",
                   ld_le16(b + HDR_BOOT_FLAG));
  if (memcmp(b + HDR_MAGIC, "HdrS", 4) != 0)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "no \"HdrS\" setup header magic at 0x202 (boot protocol "
                   "older than 2.00)");
  uint16_t version = ld_le16(b + HDR_VERSION);
  res->bzimage.version = version;
  if (version < 0x206)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "boot protocol %u.%02u is too old: 2.06 or later needed",
                   version >> 8, version & 0xff);
  /* The jump at 0x200 doubles as the header length. */
  int8_t jump = (int8_t)b[HDR_JUMP + 1];
  size_t hdr_end = (size_t)(HDR_MAGIC + (jump > 0 ? jump : 0));
  size_t need = version >= 0x20a ? HDR_INIT_SIZE + 4 : HDR_CMDLINE_SIZE + 4;
  if (hdr_end < need)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "setup header ends at 0x%zx (jump at 0x200) but protocol "
                   "%u.%02u has fields up to 0x%zx",
                   hdr_end, version >> 8, version & 0xff, need);
  if (hdr_end > size)
    return ld_fail(ld, VMM_ETRUNC,
                   "setup header ends at 0x%zx, beyond the file (%zu bytes)",
                   hdr_end, size);

  uint32_t setup_sects = b[HDR_SETUP_SECTS] ? b[HDR_SETUP_SECTS] : 4;
  uint64_t setup_size = (uint64_t)(setup_sects + 1) * 512;
  uint32_t syssize = ld_le32(b + HDR_SYSSIZE);
  uint64_t ksize = (uint64_t)syssize * 16;
  uint8_t loadflags = b[HDR_LOADFLAGS];
  uint16_t xlf = version >= 0x20c ? ld_le16(b + HDR_XLOADFLAGS) : 0;
  uint32_t cmdline_size = ld_le32(b + HDR_CMDLINE_SIZE);
  uint32_t initrd_max = ld_le32(b + HDR_INITRD_ADDR_MAX);
  uint32_t kalign = ld_le32(b + HDR_KERNEL_ALIGNMENT);
  uint8_t reloc = b[HDR_RELOCATABLE];
  uint8_t min_align = version >= 0x20a ? b[HDR_MIN_ALIGNMENT] : 0;
  uint64_t pref = version >= 0x20a ? ld_le64(b + HDR_PREF_ADDRESS) : 0;
  uint32_t init_size = version >= 0x20a ? ld_le32(b + HDR_INIT_SIZE) : 0;

  res->bzimage.setup_sects = setup_sects;
  res->bzimage.syssize = syssize;
  res->bzimage.loadflags = loadflags;
  res->bzimage.xloadflags = xlf;
  res->bzimage.cmdline_size = cmdline_size;
  res->bzimage.initrd_addr_max = initrd_max;
  res->bzimage.kernel_alignment = kalign;
  res->bzimage.relocatable = reloc;
  res->bzimage.pref_address = pref;
  res->bzimage.init_size = init_size;
  res->bzimage.kernel_offset = setup_size;
  res->bzimage.kernel_size = ksize;

  if (setup_size > size)
    return ld_fail(ld, VMM_ETRUNC,
                   "setup code (%u sectors + boot sector) beyond the file "
                   "(%zu bytes)",
                   setup_sects, size);
  if (syssize == 0)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "syssize is 0: no protected-mode "
                   "kernel");
  if (!ld_in_file(setup_size, ksize, size))
    return ld_fail(ld, VMM_ETRUNC,
                   "syssize 0x%x (0x%llx bytes) beyond the file: only 0x%llx "
                   "bytes follow the setup code",
                   syssize, (unsigned long long)ksize,
                   (unsigned long long)(size - setup_size));
  if (!(loadflags & LOADED_HIGH))
    return ld_fail(ld, VMM_EBADIMAGE,
                   "loadflags 0x%02x lacks LOADED_HIGH: zImage kernels are "
                   "not supported",
                   loadflags);
  if (!(xlf & XLF_KERNEL_64))
    return ld_fail(ld, VMM_EBADIMAGE,
                   "no 64-bit entry point (XLF_KERNEL_64 clear in xloadflags "
                   "0x%04x, protocol %u.%02u); only the 64-bit boot protocol "
                   "is supported",
                   xlf, version >> 8, version & 0xff);
  if (reloc && (kalign == 0 || (kalign & (kalign - 1))))
    return ld_fail(ld, VMM_EBADIMAGE,
                   "kernel_alignment 0x%x is not a power of two", kalign);
  if (min_align > 31)
    return ld_fail(ld, VMM_EBADIMAGE, "min_alignment %u is out of range",
                   min_align);

  size_t cmdlen;
  if ((err = ld_cmdline_len(ld, o->cmdline, cmdline_size, &cmdlen)) < 0)
    return err;

  /* Kernel placement, and where it will decompress itself: the 64-bit
     entry aligns a relocatable kernel's address up to kernel_alignment
     and never goes below pref_address (LOAD_PHYSICAL_ADDR). */
  vmm_gpa_t kaddr = ld_addr(o->kernel_addr, DEFAULT_KERNEL);
  if (!reloc && kaddr != DEFAULT_KERNEL)
    return ld_fail(ld, VMM_EINVAL,
                   "the kernel is not relocatable: it must be loaded at "
                   "0x100000, not 0x%llx",
                   (unsigned long long)kaddr);
  /* min_alignment and kernel_alignment constrain where the kernel runs,
     which the 64-bit entry code computes itself by aligning up; the
     compressed image only needs a page. */
  if (kaddr & (PAGE - 1))
    return ld_fail(ld, VMM_EINVAL, "kernel_addr 0x%llx is not page aligned",
                   (unsigned long long)kaddr);
  if (kaddr >= VMM__GPA_LIMIT || ksize > VMM__GPA_LIMIT - kaddr)
    return ld_fail(ld, VMM_ENOMAP, "kernel_addr 0x%llx is out of range",
                   (unsigned long long)kaddr);
  uint64_t rs = kaddr;
  if (reloc) {
    rs = (kaddr + kalign - 1) & ~((uint64_t)kalign - 1);
    if (version >= 0x20a && rs < pref)
      rs = pref;
  } else if (version >= 0x20a) {
    rs = pref;
  }
  if (rs < kaddr)
    return ld_fail(ld, VMM_EBADIMAGE,
                   "kernel would decompress at 0x%llx (pref_address), below "
                   "its load address 0x%llx",
                   (unsigned long long)rs, (unsigned long long)kaddr);
  uint64_t end = kaddr + ksize;
  if (rs > VMM__GPA_LIMIT || init_size > VMM__GPA_LIMIT - rs)
    return ld_fail(ld, VMM_ENOMAP,
                   "decompression area at 0x%llx (init_size 0x%x) lies "
                   "beyond the physical address space",
                   (unsigned long long)rs, init_size);
  if (rs + init_size > end)
    end = rs + init_size;
  if ((err = below_4g(ld, "kernel", kaddr, end - kaddr, xlf)) < 0)
    return err;
  if ((err = ld_add(ld, kaddr, end - kaddr, b + setup_size, ksize,
                    VMM_REGION_KERNEL, 0, true,
                    "kernel (with its init_size area)")) < 0)
    return err;
  /* The kernel clears what it needs beyond its image itself. */
  ld->r[ld->nr - 1].no_zero = true;

  uint8_t *zp = calloc(1, ZP_SIZE);
  if (zp == NULL || (err = ld_keep(ld, zp)) < 0)
    return zp == NULL ? VMM_ENOMEM : err;
  vmm_gpa_t zp_gpa = ld_addr(o->boot_info_addr, DEFAULT_ZERO_PAGE);
  if ((err = below_4g(ld, "zero page", zp_gpa, ZP_SIZE, xlf)) < 0 ||
      (err = ld_add(ld, zp_gpa, ZP_SIZE, zp, ZP_SIZE, VMM_REGION_BOOT_INFO, 0,
                    true, "zero page")) < 0)
    return err;

  char *cmd = calloc(1, cmdlen + 1);
  if (cmd == NULL || (err = ld_keep(ld, cmd)) < 0)
    return cmd == NULL ? VMM_ENOMEM : err;
  if (cmdlen > 0)
    memcpy(cmd, o->cmdline, cmdlen);
  vmm_gpa_t cmd_gpa = ld_addr(o->cmdline_addr, DEFAULT_CMDLINE);
  if ((err = below_4g(ld, "command line", cmd_gpa, cmdlen + 1, xlf)) < 0 ||
      (err = ld_add(ld, cmd_gpa, cmdlen + 1, cmd, cmdlen + 1,
                    VMM_REGION_CMDLINE, 0, true, "command line")) < 0)
    return err;
  if ((err = ld_tables(ld, VMM_MODE_LONG64)) < 0)
    return err;

  vmm_gpa_t rd = 0;
  uint64_t rd_size = o->initrd_size;
  if (rd_size > 0) {
    uint64_t max_end = (uint64_t)initrd_max + 1;
    if (o->initrd_addr != VMM_LOADER_ADDR_AUTO) {
      rd = o->initrd_addr;
      if (rd == 0)
        return ld_fail(ld, VMM_EINVAL,
                       "initrd_addr 0: a ramdisk_image of 0 means no initrd");
      bool high_ok = (xlf & XLF_CAN_BE_LOADED_ABOVE_4G) != 0;
      if (rd >= VMM__GPA_LIMIT || rd_size > VMM__GPA_LIMIT - rd)
        return ld_fail(ld, VMM_ENOMAP, "initrd_addr 0x%llx is out of range",
                       (unsigned long long)rd);
      if (!high_ok && rd + rd_size > max_end)
        return ld_fail(ld, VMM_E2BIG,
                       "initrd (0x%llx bytes at 0x%llx) ends above "
                       "initrd_addr_max 0x%x",
                       (unsigned long long)rd_size, (unsigned long long)rd,
                       initrd_max);
    } else {
      if (rd_size > max_end)
        return ld_fail(ld, VMM_E2BIG,
                       "initrd (0x%llx bytes) is too big for "
                       "initrd_addr_max 0x%x",
                       (unsigned long long)rd_size, initrd_max);
      /* As high as possible, as boot loaders traditionally do, out of the
         way of the kernel's decompression. */
      if (ld_find_free(ld, rd_size, PAGE, INITRD_MIN, max_end, true, &rd) < 0)
        return ld_fail(ld, VMM_ENOSPC,
                       "no free RAM for the initrd (0x%llx bytes) below "
                       "initrd_addr_max 0x%x",
                       (unsigned long long)rd_size, initrd_max);
    }
    if ((err = ld_add(ld, rd, rd_size, o->initrd, rd_size, VMM_REGION_INITRD, 0,
                      true, "initrd")) < 0)
      return err;
  }

  if ((err = ld_memmap(ld)) < 0)
    return err;

  /* The zero page: the image's setup header, then what a loader writes. */
  memcpy(zp + HDR_SETUP_SECTS, b + HDR_SETUP_SECTS, hdr_end - HDR_SETUP_SECTS);
  zp[HDR_TYPE_OF_LOADER] = 0xff;
  ld_put32(zp + HDR_CODE32_START, (uint32_t)kaddr);
  ld_put32(zp + HDR_CMD_LINE_PTR, (uint32_t)cmd_gpa);
  ld_put32(zp + ZP_EXT_CMD_LINE_PTR, (uint32_t)(cmd_gpa >> 32));
  ld_put32(zp + HDR_RAMDISK_IMAGE, (uint32_t)rd);
  ld_put32(zp + ZP_EXT_RAMDISK_IMAGE, (uint32_t)(rd >> 32));
  ld_put32(zp + HDR_RAMDISK_SIZE, (uint32_t)rd_size);
  ld_put32(zp + ZP_EXT_RAMDISK_SIZE, (uint32_t)(rd_size >> 32));
  /* Fields the image must not choose for us: the platform and a pointer
     the kernel would follow. */
  if (version >= 0x207)
    memset(zp + HDR_HARDWARE_SUBARCH, 0, 12);
  if (version >= 0x209)
    memset(zp + HDR_SETUP_DATA, 0, 8);
  zp[ZP_E820_ENTRIES] = (uint8_t)res->nr_e820;
  for (size_t i = 0; i < res->nr_e820; i++) {
    uint8_t *e = zp + ZP_E820_TABLE + i * 20;
    ld_put64(e, res->e820[i].addr);
    ld_put64(e + 8, res->e820[i].size);
    ld_put32(e + 16, res->e820[i].type);
  }

  res->entry = kaddr + STARTUP_64;
  res->image_start = kaddr;
  res->image_end = kaddr + ksize;
  res->regs.rip = res->entry;
  res->regs.rsi = zp_gpa;
  res->bzimage.kernel = kaddr;
  res->bzimage.runtime_start = rs;
  res->bzimage.zero_page = zp_gpa;
  res->bzimage.cmdline = cmd_gpa;
  res->bzimage.initrd = rd;
  res->bzimage.initrd_size = rd_size;
  return 0;
}
