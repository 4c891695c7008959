/*
 * libvmm - guest image loaders: raw flat binaries, ELF32/ELF64, Multiboot
 * v1 and Linux bzImage (boot protocol 2.06+, 64-bit entry).
 *
 * Loading is two steps. vmm_loader_load() parses an image held in memory,
 * plans where everything goes (image segments, boot information, command
 * line, initrd or modules, descriptor and page tables), checks the plan
 * against the VM's memory slots and writes guest memory; it needs no vCPU
 * and no running engine. vmm_loader_apply() then puts a vCPU into the entry
 * state the result describes. Between the two the caller may inspect or
 * adjust the result (for example the initial registers).
 *
 * Images are untrusted. Every size and offset is checked for truncation and
 * overflow; every range must lie in guest memory and must not overlap any
 * other range of the plan (including the loader's own structures). A bad
 * image gives a negative code and a diagnostic through the VM's log
 * callback naming the field at fault; guest memory is left untouched when
 * loading fails (the plan is checked completely before anything is
 * written). See docs/loader.md for the default memory layout.
 */
#ifndef LIBVMM_LOADER_H
#define LIBVMM_LOADER_H

#include "common.h"
#include "vcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Image formats. */
enum vmm_image_format {
  /** Options only: detect the format with vmm_loader_detect(). */
  VMM_IMAGE_AUTO = 0,
  /** Flat binary copied to one address. */
  VMM_IMAGE_RAW = 1,
  /** ELF32 (EM_386): PT_LOAD segments, entry in 32-bit protected mode. */
  VMM_IMAGE_ELF32 = 2,
  /** ELF64 (EM_X86_64): PT_LOAD segments, entry in 64-bit long mode. */
  VMM_IMAGE_ELF64 = 3,
  /** Multiboot v1 kernel (header with address fields, or an ELF). */
  VMM_IMAGE_MULTIBOOT = 4,
  /** Linux bzImage, boot protocol 2.06 or later, 64-bit entry. */
  VMM_IMAGE_BZIMAGE = 5,
};

/** Name of a format ("raw", "elf32", ...); "unknown" for other values. */
VMM_EXTERN const char *vmm_image_format_name(enum vmm_image_format fmt);

/**
 * Guess the format of an image: a Linux setup header ("HdrS" at 0x202 and
 * 0xAA55 at 0x1fe) means bzImage; a valid Multiboot header in the first
 * 8192 bytes means multiboot (checked before ELF because multiboot kernels
 * are usually ELF files too); the ELF magic means ELF32 or ELF64 by class;
 * anything else is VMM_IMAGE_RAW. Only magic numbers are examined: the
 * loader itself validates the rest. Never fails; thread-safe.
 */
VMM_EXTERN enum vmm_image_format vmm_loader_detect(const void *image,
                                                   size_t size);

/** Memory map entry types (the E820 / Multiboot numbering). */
enum vmm_e820_type {
  VMM_E820_RAM = 1,
  VMM_E820_RESERVED = 2,
  VMM_E820_ACPI = 3,
  VMM_E820_NVS = 4,
  VMM_E820_UNUSABLE = 5,
};

/** One memory map entry. */
struct vmm_e820_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type; /* enum vmm_e820_type */
  uint32_t padding;
};

/** Most memory map entries the loader passes (the zero page holds 128). */
#define VMM_LOADER_MAX_E820 128
/** Most Multiboot modules. */
#define VMM_LOADER_MAX_MODULES 16
/** Most PT_LOAD segments of an ELF image. */
#define VMM_LOADER_MAX_SEGMENTS 64
/** Longest command line (excluding the NUL) any format accepts. */
#define VMM_LOADER_MAX_CMDLINE 65536
/** Address value meaning "let the loader choose". */
#define VMM_LOADER_ADDR_AUTO UINT64_MAX

/** A Multiboot boot module: bytes (not copied until loading) and a string. */
struct vmm_loader_module {
  const void *data;
  size_t size;
  /** Module string passed to the kernel (may be NULL: empty string). */
  const char *cmdline;
};

/** Flags for struct vmm_loader_options.flags. */
enum vmm_loader_flags {
  /** ELF (not multiboot): place segments at p_vaddr instead of p_paddr. */
  VMM_LOADER_ELF_VADDR = 1u << 0,
};

/**
 * Loader options. Fill with vmm_loader_options_init() first; fields may be
 * added later. Pointers are only read during vmm_loader_load().
 */
struct vmm_loader_options {
  /** Set by vmm_loader_options_init(); do not change. */
  size_t size;
  /** Format to load as; VMM_IMAGE_AUTO (default) detects it. */
  enum vmm_image_format format;
  /** enum vmm_loader_flags. */
  uint32_t flags;
  /** Kernel command line (multiboot, bzImage), NULL for none. */
  const char *cmdline;
  /** bzImage: initial ramdisk bytes (NULL/0 for none). */
  const void *initrd;
  size_t initrd_size;
  /** Multiboot: boot modules. */
  const struct vmm_loader_module *modules;
  size_t nr_modules;
  /**
   * Memory map passed to the guest (e820 for bzImage, mmap and
   * mem_lower/mem_upper for multiboot). NULL (default) derives it from the
   * VM's memory slots, see docs/loader.md.
   */
  const struct vmm_e820_entry *e820;
  size_t nr_e820;

  /* Placement. VMM_LOADER_ADDR_AUTO (the default) picks the documented
     default; any other value is used as given and checked. */
  /** Raw: load address (default 0x7c00 in real mode, 0x100000 else). */
  vmm_gpa_t raw_addr;
  /** Raw: entry point (default: raw_addr). */
  vmm_gpa_t raw_entry;
  /** Raw: CPU mode at entry (default VMM_MODE_REAL). */
  enum vmm_cpu_mode raw_mode;
  /** Zero page (bzImage) or Multiboot information area (default 0x7000). */
  vmm_gpa_t boot_info_addr;
  /** Command line(s) (default 0x20000). */
  vmm_gpa_t cmdline_addr;
  /** GDT, TSS and page tables written by vmm_loader_apply() (0x9000). */
  vmm_gpa_t tables_addr;
  /** bzImage: protected-mode kernel (default 0x100000). */
  vmm_gpa_t kernel_addr;
  /** bzImage: initrd (default: highest fitting RAM below
      initrd_addr_max). */
  vmm_gpa_t initrd_addr;
  /** Multiboot: first module (default: first free page above the image). */
  vmm_gpa_t modules_addr;
  /** Initial stack pointer (default 0: entry code sets its own stack, as
      the Multiboot and Linux protocols require). */
  uint64_t stack;
};

/** Fill opt with defaults. */
VMM_EXTERN void vmm_loader_options_init(struct vmm_loader_options *opt);

/** What a region of the plan holds. */
enum vmm_loader_region_kind {
  VMM_REGION_IMAGE = 1,     /* raw image, or ELF segment number index */
  VMM_REGION_KERNEL = 2,    /* bzImage kernel incl. its init_size area */
  VMM_REGION_INITRD = 3,    /* bzImage initrd */
  VMM_REGION_MODULE = 4,    /* multiboot module number index */
  VMM_REGION_BOOT_INFO = 5, /* zero page or Multiboot information area */
  VMM_REGION_CMDLINE = 6,   /* command line(s) */
  VMM_REGION_TABLES = 7,    /* GDT/TSS/page tables, written at apply */
};

/** A guest-physical range the loader placed something in. */
struct vmm_loader_region {
  vmm_gpa_t gpa;
  uint64_t size;
  uint32_t kind;  /* enum vmm_loader_region_kind */
  uint32_t index; /* segment or module number, else 0 */
};

#define VMM_LOADER_MAX_REGIONS (VMM_LOADER_MAX_SEGMENTS + 32)

/**
 * What was loaded where, and the entry state. Filled by vmm_loader_load().
 * All addresses are guest-physical.
 */
struct vmm_loader_result {
  enum vmm_image_format format;
  /** CPU mode at entry (set up by vmm_loader_apply()). */
  enum vmm_cpu_mode mode;
  /** Entry point (physical; in real mode CS:IP is derived from it). */
  vmm_gpa_t entry;
  /** Mode tables address and identity-mapped size (long mode). */
  vmm_gpa_t tables;
  uint64_t identity_size;
  /** Initial general registers: rip, rflags (IF clear), rax/rbx
      (multiboot), rsi (bzImage), rsp (options.stack). */
  struct vmm_regs regs;
  /** Lowest and highest+1 address of the loaded image itself. */
  vmm_gpa_t image_start, image_end;

  size_t nr_regions;
  struct vmm_loader_region regions[VMM_LOADER_MAX_REGIONS];

  /** Memory map given to the guest (multiboot and bzImage). */
  size_t nr_e820;
  struct vmm_e820_entry e820[VMM_LOADER_MAX_E820];

  /** ELF details (ELF32, ELF64, and multiboot images that are ELF). */
  struct {
    unsigned segments;      /* PT_LOAD segments loaded */
    uint64_t entry_virtual; /* e_entry before translation */
  } elf;

  /** Multiboot details. */
  struct {
    uint32_t header_offset; /* of the Multiboot header in the file */
    uint32_t header_flags;
    vmm_gpa_t info;                /* the information structure (EBX) */
    uint32_t mem_lower, mem_upper; /* KiB, as given to the kernel */
    size_t nr_modules;
  } multiboot;

  /** bzImage details (setup header values as read from the image). */
  struct {
    uint16_t version;
    uint8_t loadflags;
    uint8_t relocatable;
    uint16_t xloadflags;
    uint16_t padding;
    uint32_t setup_sects; /* 0 in the file is reported as 4 */
    uint32_t syssize;
    uint32_t kernel_alignment;
    uint32_t cmdline_size;
    uint32_t initrd_addr_max;
    uint32_t init_size;
    uint64_t pref_address;
    /** File offset and size of the protected-mode kernel (syssize * 16);
        the real-mode setup code is not copied into the guest: the 64-bit
        entry does not use it, only its header (in the zero page). */
    uint64_t kernel_offset, kernel_size;
    vmm_gpa_t kernel;        /* where the kernel was copied */
    vmm_gpa_t runtime_start; /* where it decompresses itself */
    vmm_gpa_t zero_page;
    vmm_gpa_t cmdline;
    vmm_gpa_t initrd;
    uint64_t initrd_size;
  } bzimage;
};

/**
 * Load an image into the VM's memory.
 *
 * @param vm     the VM; its memory slots must exist already. No vCPU is
 *               needed and none is touched.
 * @param image  the image bytes (untrusted); size bytes, read only during
 *               the call (a caller may mmap a file, see
 *               vmm_loader_map_file()).
 * @param opt    options from vmm_loader_options_init(), or NULL for
 *               defaults.
 * @param res    receives the plan and entry state.
 * @return 0; -VMM_ETRUNC if the image (a header, a table, a segment) is cut
 *         short; -VMM_EBADIMAGE for a malformed or unsupported image (bad
 *         magic, too-old boot protocol, inconsistent sizes, overflowing
 *         fields); -VMM_ENOMAP if a range is not in guest memory (loader
 *         structures need writable RAM); -VMM_EOVERLAP if two ranges of the
 *         plan overlap; -VMM_E2BIG for a command line longer than the kernel
 *         accepts or an initrd that cannot end below initrd_addr_max;
 *         -VMM_ENOSPC if no free RAM fits an auto-placed initrd or module;
 *         -VMM_EINVAL for bad arguments or options. The log callback names
 *         the offending field. On error guest memory is unchanged.
 * Thread-safety: do not run vCPUs of the VM concurrently (their memory is
 * being written).
 */
VMM_EXTERN int vmm_loader_load(vmm_vm *vm, const void *image, size_t size,
                               const struct vmm_loader_options *opt,
                               struct vmm_loader_result *res);

/**
 * vmm_loader_load() on a file, mapped read-only for the duration of the
 * call. @return as vmm_loader_load(), or -errno if the file cannot be read
 * (-VMM_ETRUNC for an empty file).
 */
VMM_EXTERN int vmm_loader_load_file(vmm_vm *vm, const char *path,
                                    const struct vmm_loader_options *opt,
                                    struct vmm_loader_result *res);

/**
 * Map a whole file read-only (for initrds and modules). Release with
 * vmm_loader_unmap_file(). An empty file gives *data = NULL, *size = 0.
 * @return 0 or -errno.
 */
VMM_EXTERN int vmm_loader_map_file(const char *path, const void **data,
                                   size_t *size);
VMM_EXTERN void vmm_loader_unmap_file(const void *data, size_t size);

/**
 * Put the vCPU into the entry state of res: the mode set up with
 * vmm_vcpu_set_mode() (which writes the GDT, TSS and page tables to
 * res->tables), then res->regs. In real mode CS is chosen so that CS:IP
 * reaches res->entry (entry below 1 MiB). Call before the vCPU first runs,
 * from the thread that will run it or while it is not running.
 * @return 0; -VMM_EINVAL for a bad result; -VMM_EBUSY if the vCPU is
 *         running; errors from the mode and register setters.
 */
VMM_EXTERN int vmm_loader_apply(vmm_vcpu *vcpu,
                                const struct vmm_loader_result *res);

#ifdef __cplusplus
}
#endif
#endif
