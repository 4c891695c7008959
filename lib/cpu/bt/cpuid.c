/*
 * The CPUID the BT engine reports: exactly what it implements (docs/bt.md,
 * "CPUID"). Vendor, family and model come from the host, since guest code
 * runs natively and its undefined flags and timings are the host's.
 */
#include <cpuid.h>
#include <string.h>

#include "bt.h"

static void add(struct bt_vm *m, uint32_t fn, uint32_t idx, uint32_t flags,
                uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  if (m->nsupported == VMM__ARRAY_SIZE(m->supported))
    return;
  m->supported[m->nsupported++] = (struct vmm_cpuid_entry){.function = fn,
                                                           .index = idx,
                                                           .flags = flags,
                                                           .eax = a,
                                                           .ebx = b,
                                                           .ecx = c,
                                                           .edx = d};
}

#define BIT(n) (1u << (n))

static uint32_t host_features(void) {
  unsigned a, b, c, d, h = 0;
  __cpuid(1, a, b, c, d);
  if (c & BIT(0))
    h |= BT_H_SSE3;
  if (c & BIT(9))
    h |= BT_H_SSSE3;
  if ((c & BIT(19)) && (c & BIT(20)) && (c & BIT(23)))
    h |= BT_H_SSE4;
  if (c & BIT(22))
    h |= BT_H_MOVBE;
  if (c & BIT(25))
    h |= BT_H_AES;
  if (c & BIT(1))
    h |= BT_H_PCLMUL;
  __cpuid_count(7, 0, a, b, c, d);
  if (b & BIT(3))
    h |= BT_H_BMI1;
  if (b & BIT(8))
    h |= BT_H_BMI2;
  if (b & BIT(19))
    h |= BT_H_ADX;
  __cpuid(0x80000001, a, b, c, d);
  if (c & BIT(5))
    h |= BT_H_LZCNT;
  return h;
}

static bool host_amd(void) {
  unsigned a, b, c, d;
  __cpuid(0, a, b, c, d);
  return b == 0x68747541; /* "Auth" */
}

/* PEXT is microcoded (hundreds of cycles) on AMD before family 0x19. */
static bool fast_pext(void) {
  unsigned a, b, c, d;
  __cpuid(0, a, b, c, d);
  bool amd = b == 0x68747541; /* "Auth" */
  __cpuid(1, a, b, c, d);
  unsigned family = (a >> 8) & 0xf;
  if (family == 0xf)
    family += (a >> 20) & 0xff;
  return !amd || family >= 0x19;
}

void bt_supported_cpuid(struct bt_vm *m, bool platform) {
  unsigned a, b, c, d;
  m->nsupported = 0;
  m->host = host_features();
  m->fast_pext = fast_pext();
  m->ac16 = host_amd();
  /* LOOP is one fast instruction on AMD processors (K8 and later); on
     Intel's it is several micro-ops with a throughput of one per several
     cycles, worse than the taken jrcxz it would replace. */
  m->fast_loop = host_amd();
  __cpuid(0, a, b, c, d);
  add(m, 0, 0, 0, 7, b, c, d); /* max basic leaf 7, host vendor */

  __cpuid(1, a, b, c, d);
  uint32_t ecx1 = BIT(0) | BIT(1) | BIT(9) | BIT(13) | BIT(19) | BIT(20) |
                  BIT(22) | BIT(23) | BIT(25);
  uint32_t edx1 = BIT(0) | BIT(3) | BIT(4) | BIT(5) | BIT(6) | BIT(8) |
                  BIT(11) | BIT(13) | BIT(15) | BIT(16) | BIT(17) | BIT(19) |
                  BIT(23) | BIT(24) | BIT(25) | BIT(26);
  /* With the user-space interrupt platform: its local APIC (xAPIC) and
     TSC-deadline timer (the front end drops the latter where the rate is
     unknown). */
  uint32_t plat_ecx1 = platform ? BIT(24) : 0, plat_edx1 = platform ? BIT(9) : 0;
  /* CLFLUSH line size 64 bytes, one logical processor per package. */
  add(m, 1, 0, 0, a, (8u << 8) | (1u << 16), (c & ecx1) | plat_ecx1,
      (d & edx1) | plat_edx1);

  unsigned a7, b7, c7, d7;
  __cpuid_count(7, 0, a7, b7, c7, d7);
  /* BMI1, SMEP, BMI2, ERMS, ADX, SMAP. */
  uint32_t ebx7 = BIT(3) | BIT(7) | BIT(8) | BIT(9) | BIT(19) | BIT(20);
  add(m, 7, 0, VMM_CPUID_INDEXED, 0, b7 & ebx7, 0, 0);

  __cpuid(0x80000000, a, b, c, d);
  add(m, 0x80000000, 0, 0, 0x80000008, b, c, d);
  __cpuid(0x80000001, a, b, c, d);
  /* LAHF in long mode, LZCNT, PREFETCHW; SYSCALL, NX, 1 GiB pages,
     RDTSCP, long mode. */
  uint32_t ecx81 = BIT(0) | BIT(5) | BIT(8);
  uint32_t edx81 = BIT(11) | BIT(20) | BIT(26) | BIT(27) | BIT(29);
  add(m, 0x80000001, 0, 0, a, 0, c & ecx81, d & edx81);

  char brand[48];
  memset(brand, 0, sizeof(brand));
  strcpy(brand, "libvmm binary-translation engine");
  for (uint32_t i = 0; i < 3; i++) {
    uint32_t r[4];
    memcpy(r, brand + 16 * i, 16);
    add(m, 0x80000002 + i, 0, 0, r[0], r[1], r[2], r[3]);
  }
  /* 40-bit physical, 48-bit virtual addresses (the walker's limits). */
  add(m, 0x80000008, 0, 0, 0x3028, 0, 0, 0);
}
