/*
 * Intel MP table (MultiProcessor Specification 1.4) for the VM's interrupt
 * platform. See include/libvmm/mptable.h and docs/platform.md.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define FPS_SIZE 16
#define HDR_SIZE 44
#define CPU_SIZE 20
#define ENTRY_SIZE 8
#define LAPIC_VERSION 0x14
#define IOAPIC_VERSION 0x20

enum { T_CPU = 0, T_BUS = 1, T_IOAPIC = 2, T_IOINT = 3, T_LINT = 4 };
enum { INT_INT = 0, INT_NMI = 1, INT_EXTINT = 3 };

void vmm_mptable_config_init(struct vmm_mptable_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->addr = 0xf0000;
  cfg->oem_id = "LIBVMM";
  cfg->product_id = "LIBVMM VM";
}

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
  put16(p, (uint16_t)v);
  put16(p + 2, (uint16_t)(v >> 16));
}

/* Space-padded fixed-width string field. */
static void put_str(uint8_t *p, const char *s, size_t width) {
  size_t n = s != NULL ? strnlen(s, width) : 0;
  memset(p, ' ', width);
  memcpy(p, s, n);
}

/* The byte that makes the bytes sum to zero. */
static uint8_t checksum(const uint8_t *p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++)
    sum = (uint8_t)(sum + p[i]);
  return (uint8_t)-sum;
}

/* An I/O or local interrupt entry: type, interrupt type, flags 0
   (conforming to the bus), source bus 0, source IRQ, destination APIC,
   destination pin. */
static uint8_t *int_entry(uint8_t *p, uint8_t type, uint8_t itype, uint8_t irq,
                          uint8_t dest, uint8_t pin) {
  p[0] = type;
  p[1] = itype;
  p[2] = p[3] = p[4] = 0;
  p[5] = irq;
  p[6] = dest;
  p[7] = pin;
  return p + ENTRY_SIZE;
}

int vmm_mptable_write(vmm_vm *vm, const struct vmm_mptable_config *user,
                      size_t *size_out) {
  struct vmm_mptable_config cfg;
  vmm_mptable_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  unsigned ncpu = cfg.cpus != 0 ? cfg.cpus : vm->cfg.max_vcpus;
  if ((cfg.addr & 15) != 0 || ncpu > vm->cfg.max_vcpus || ncpu > 255)
    return VMM_EINVAL;
  if (vm->irqchip_kind == VMM__IRQCHIP_NONE)
    return VMM_ENOTSUP;

  /* What the platform looks like: KVM's in-kernel devices sit at fixed
     places; the user-space ones say where they are. */
  uint64_t lapic_base = 0xfee00000ull, ioapic_base = 0xfec00000ull;
  uint8_t ioapic_id = 0;
  bool has_ioapic = true;
  struct vmm__irqchip *h = vm->irqchip;
  if (h != NULL) {
    vmm__irqchip_lock(h);
    if (h->lapic != NULL)
      lapic_base = vmm__lapic_base(h->lapic);
    has_ioapic = h->ioapic != NULL;
    if (has_ioapic)
      vmm__ioapic_info(h->ioapic, &ioapic_base, &ioapic_id);
    vmm__irqchip_unlock(h);
  }
  if (lapic_base > UINT32_MAX || ioapic_base > UINT32_MAX)
    return VMM_EINVAL; /* the table holds 32-bit addresses */

  unsigned nint = has_ioapic ? 15 : 0; /* ISA IRQs 0, 1, 3-15 */
  size_t body = HDR_SIZE + (size_t)ncpu * CPU_SIZE +
                ENTRY_SIZE * (1 + (has_ioapic ? 1 : 0) + nint + 2);
  size_t total = FPS_SIZE + body;
  if (cfg.addr + total > (1ull << 32))
    return VMM_EINVAL;
  uint8_t *buf = calloc(1, total);
  if (buf == NULL)
    return VMM_ENOMEM;

  /* Processor signature and features, as CPUID leaf 1 reports them. */
  uint32_t sig = 0x600, features = 0x201; /* family 6, FPU and APIC */
  struct vmm_cpuid_entry *ids = calloc(VMM_CPUID_MAX_ENTRIES, sizeof(*ids));
  size_t nids = VMM_CPUID_MAX_ENTRIES;
  if (ids != NULL && vmm_vm_get_supported_cpuid(vm, ids, &nids) == 0) {
    const struct vmm_cpuid_entry *e = vmm__cpuid_find(ids, nids, 1, 0);
    if (e != NULL) {
      sig = e->eax;
      features = e->edx;
    }
  }
  free(ids);

  uint8_t *fps = buf, *hdr = buf + FPS_SIZE, *p = hdr + HDR_SIZE;
  memcpy(fps, "_MP_", 4);
  put32(fps + 4, (uint32_t)(cfg.addr + FPS_SIZE));
  fps[8] = 1; /* length in 16-byte units */
  fps[9] = 4; /* specification revision 1.4 */
  /* feature byte 1 = 0: a configuration table is present; feature byte 2
     bit 7 = 0: no IMCR, the PIC reaches the APICs in virtual-wire mode. */

  unsigned count = 0;
  for (unsigned i = 0; i < ncpu; i++, count++) {
    p[0] = T_CPU;
    p[1] = (uint8_t)i;
    p[2] = LAPIC_VERSION;
    p[3] = (uint8_t)(1 | (i == 0 ? 2 : 0)); /* enabled, bootstrap */
    put32(p + 4, sig);
    put32(p + 8, features);
    p += CPU_SIZE;
  }
  p[0] = T_BUS;
  p[1] = 0;
  memcpy(p + 2, "ISA   ", 6);
  p += ENTRY_SIZE;
  count++;
  if (has_ioapic) {
    p[0] = T_IOAPIC;
    p[1] = ioapic_id;
    p[2] = IOAPIC_VERSION;
    p[3] = 1; /* enabled */
    put32(p + 4, (uint32_t)ioapic_base);
    p += ENTRY_SIZE;
    count++;
    for (uint8_t irq = 0; irq < 16; irq++) {
      if (irq == 2)
        continue; /* the cascade: no device behind it */
      p = int_entry(p, T_IOINT, INT_INT, irq, ioapic_id, irq);
      count++;
    }
  }
  /* Local interrupts of every APIC (destination 0xff). */
  p = int_entry(p, T_LINT, INT_EXTINT, 0, 0xff, 0);
  p = int_entry(p, T_LINT, INT_NMI, 0, 0xff, 1);
  count += 2;

  memcpy(hdr, "PCMP", 4);
  put16(hdr + 4, (uint16_t)body);
  hdr[6] = 4;
  put_str(hdr + 8, cfg.oem_id, 8);
  put_str(hdr + 16, cfg.product_id, 12);
  put16(hdr + 34, (uint16_t)count);
  put32(hdr + 36, (uint32_t)lapic_base);
  hdr[7] = checksum(hdr, body);
  fps[10] = checksum(fps, FPS_SIZE);

  int err = vmm_mem_write(vm, cfg.addr, buf, total);
  free(buf);
  if (err == 0 && size_out != NULL)
    *size_out = total;
  return err;
}
