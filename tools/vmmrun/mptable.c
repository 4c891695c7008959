/*
 * An Intel MultiProcessor Specification 1.4 table: how a guest without
 * ACPI (Linux included) learns about the vCPUs it may start, the IOAPIC
 * and how ISA interrupts reach it. Written for KVM's in-kernel interrupt
 * controllers: local APICs at 0xfee00000 with IDs 0..n-1 (the vCPU index),
 * one IOAPIC at 0xfec00000 whose pins 0-15 receive ISA IRQs 0-15 (KVM's
 * default GSI routing), LINT0 in ExtINT mode (the PIC) and LINT1 NMI.
 */
#include <stdlib.h>
#include <string.h>

#include "vmmrun.h"

#define LAPIC_BASE 0xfee00000u
#define IOAPIC_BASE 0xfec00000u

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)v);
  put16(p + 2, (uint16_t)(v >> 16));
}

static uint8_t checksum(const uint8_t *p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++)
    sum = (uint8_t)(sum + p[i]);
  return (uint8_t)-sum;
}

size_t vmmrun_mptable_size(unsigned ncpus) {
  /* floating pointer, header, CPUs, bus, IOAPIC, 15 ISA IRQs, 2 LINTs */
  return 16 + 44 + 20 * (size_t)ncpus + 8 + 8 + 15 * 8 + 2 * 8;
}

int vmmrun_mptable_build(uint8_t *buf, size_t size, uint32_t at, unsigned ncpus,
                         uint32_t signature, uint32_t features) {
  if (ncpus == 0 || ncpus > VMMRUN_MPTABLE_MAX_CPUS ||
      size < vmmrun_mptable_size(ncpus))
    return -1;
  memset(buf, 0, vmmrun_mptable_size(ncpus));
  const uint8_t ioapic_id = (uint8_t)ncpus; /* after the CPUs' APIC IDs */

  /* The configuration table follows the floating pointer. */
  uint8_t *t = buf + 16, *e = t + 44;
  uint16_t count = 0;
  for (unsigned i = 0; i < ncpus; i++, e += 20, count++) {
    e[0] = 0;                    /* processor */
    e[1] = (uint8_t)i;           /* local APIC ID */
    e[2] = 0x14;                 /* local APIC version */
    e[3] = 1 | (i == 0 ? 2 : 0); /* enabled, bootstrap processor */
    put32(e + 4, signature);     /* CPUID 1 EAX */
    put32(e + 8, features);      /* CPUID 1 EDX */
  }
  e[0] = 1; /* bus 0: ISA */
  memcpy(e + 2, "ISA   ", 6);
  e += 8, count++;
  e[0] = 2; /* the IOAPIC */
  e[1] = ioapic_id;
  e[2] = 0x11;
  e[3] = 1; /* enabled */
  put32(e + 4, IOAPIC_BASE);
  e += 8, count++;
  for (uint8_t irq = 0; irq < 16; irq++) {
    if (irq == 2)
      continue; /* the PIC cascade */
    e[0] = 3;   /* I/O interrupt */
    e[1] = 0;   /* INT */
    /* flags 0: polarity and trigger as the bus says (ISA: high, edge) */
    e[4] = 0;   /* source bus */
    e[5] = irq; /* source IRQ */
    e[6] = ioapic_id;
    e[7] = irq; /* INTIN#: KVM routes GSI n to pin n */
    e += 8, count++;
  }
  for (uint8_t lint = 0; lint < 2; lint++) {
    e[0] = 4;                 /* local interrupt */
    e[1] = lint == 0 ? 3 : 1; /* ExtINT (the PIC) / NMI */
    e[6] = 0xff;              /* every local APIC */
    e[7] = lint;              /* LINT0 / LINT1 */
    e += 8, count++;
  }
  size_t len = (size_t)(e - t);
  memcpy(t, "PCMP", 4);
  put16(t + 4, (uint16_t)len);
  t[6] = 4; /* specification 1.4 */
  memcpy(t + 8, "LIBVMM  ", 8);
  memcpy(t + 16, "VMMRUN      ", 12);
  put16(t + 34, count);
  put32(t + 36, LAPIC_BASE);
  t[7] = checksum(t, len);

  memcpy(buf, "_MP_", 4);
  put32(buf + 4, at + 16);
  buf[8] = 1; /* length in 16-byte units */
  buf[9] = 4; /* specification 1.4 */
  /* feature bytes 0: the table above, no IMCR (virtual wire mode) */
  buf[10] = checksum(buf, 16);
  return 0;
}
