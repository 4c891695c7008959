/*
 * I/O APIC. See include/libvmm/ioapic.h and docs/platform.md. Its state is
 * kept under the interrupt platform's lock (lib/io/irqchip.h).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define PINS 24
#define WINDOW 0x1000
#define REG_SEL 0x00
#define REG_WIN 0x10
#define REG_EOI 0x40

#define RTE_VECTOR 0xffull
#define RTE_DM_SHIFT 8
#define RTE_LOGICAL (1ull << 11)
#define RTE_POLARITY (1ull << 13)
#define RTE_REMOTE_IRR (1ull << 14)
#define RTE_LEVEL (1ull << 15)
#define RTE_MASKED (1ull << 16)
#define RTE_DEST_SHIFT 56
/* Bits the guest may write: vector, delivery and destination mode,
   polarity, trigger mode, mask, destination. */
#define RTE_WRITABLE                                                           \
  (RTE_VECTOR | (7ull << RTE_DM_SHIFT) | RTE_LOGICAL | RTE_POLARITY |          \
   RTE_LEVEL | RTE_MASKED | (0xffull << RTE_DEST_SHIFT))

struct vmm__ioapic {
  vmm_vm *vm;
  struct vmm__irqchip *hub;
  uint64_t base;
  uint8_t id, reset_id;
  uint8_t sel;
  uint32_t level; /* pin inputs */
  uint64_t rte[PINS];
  uint64_t messages, eois, bad_access, bad_register;
};

static const struct vmm_dev_ops ioapic_ops;

void vmm_ioapic_config_init(struct vmm_ioapic_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "ioapic";
  cfg->base = 0xfec00000ull;
}

/* ------------------------------------------------------------------------ */
/* The model                                                                */

static void send(struct vmm__ioapic *io, unsigned pin) {
  uint64_t e = io->rte[pin];
  struct vmm__irq_msg m = {
      .vector = (uint8_t)(e & RTE_VECTOR),
      .delivery = (uint8_t)((e >> RTE_DM_SHIFT) & 7),
      .logical = (e & RTE_LOGICAL) != 0,
      .level = (e & RTE_LEVEL) != 0,
      .assert = true,
      .dest = (uint8_t)(e >> RTE_DEST_SHIFT),
      .source = -1,
  };
  if (m.level)
    io->rte[pin] |= RTE_REMOTE_IRR;
  io->messages++;
  vmm__irqchip_deliver(io->hub, &m);
}

/* A level pin that is high, unmasked and not awaiting an EOI sends. */
static void check_level(struct vmm__ioapic *io, unsigned pin) {
  uint64_t e = io->rte[pin];
  if ((e & RTE_LEVEL) && !(e & (RTE_MASKED | RTE_REMOTE_IRR)) &&
      ((io->level >> pin) & 1))
    send(io, pin);
}

void vmm__ioapic_set_irq(struct vmm__ioapic *io, unsigned pin, bool level) {
  if (pin >= PINS)
    return;
  uint32_t bit = 1u << pin;
  bool was = (io->level & bit) != 0;
  if (level)
    io->level |= bit;
  else
    io->level &= ~bit;
  uint64_t e = io->rte[pin];
  if (e & RTE_LEVEL)
    check_level(io, pin);
  else if (level && !was && !(e & RTE_MASKED))
    send(io, pin); /* an edge while masked is lost, as on the 82093AA */
}

void vmm__ioapic_eoi(struct vmm__ioapic *io, uint8_t vector) {
  for (unsigned pin = 0; pin < PINS; pin++) {
    uint64_t e = io->rte[pin];
    if ((e & RTE_VECTOR) != vector || !(e & RTE_LEVEL) || !(e & RTE_REMOTE_IRR))
      continue;
    io->rte[pin] &= ~RTE_REMOTE_IRR;
    io->eois++;
    check_level(io, pin);
  }
}

void vmm__ioapic_vector_acked(struct vmm__ioapic *io, uint8_t vector) {
  for (unsigned pin = 0; pin < PINS; pin++) {
    uint64_t e = io->rte[pin];
    if ((e & RTE_VECTOR) == vector && !(e & RTE_LEVEL))
      vmm__irqchip_acked(io->hub, pin);
  }
}

void vmm__ioapic_info(const struct vmm__ioapic *io, uint64_t *base,
                      uint8_t *id) {
  *base = io->base;
  *id = io->id;
}

static uint32_t read_win(struct vmm__ioapic *io) {
  unsigned r = io->sel;
  switch (r) {
  case 0x00:
  case 0x02: return (uint32_t)io->id << 24;
  case 0x01: return ((PINS - 1u) << 16) | 0x20;
  default: break;
  }
  if (r >= 0x10 && r < 0x10 + 2 * PINS) {
    uint64_t e = io->rte[(r - 0x10) / 2];
    return (r & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
  }
  io->bad_register++;
  return 0;
}

static void write_win(struct vmm__ioapic *io, uint32_t v) {
  unsigned r = io->sel;
  if (r == 0x00) {
    io->id = (v >> 24) & 0xf;
    return;
  }
  if (r < 0x10 || r >= 0x10 + 2 * PINS) {
    io->bad_register++; /* read-only or absent */
    return;
  }
  unsigned pin = (r - 0x10) / 2;
  uint64_t old = io->rte[pin], e = old;
  if (r & 1)
    e = (e & 0xffffffffull) | ((uint64_t)v << 32);
  else
    e = (e & ~0xffffffffull) | v;
  e = (e & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
  if (!(e & RTE_LEVEL))
    e &= ~RTE_REMOTE_IRR; /* edge pins never await an EOI */
  io->rte[pin] = e;
  /* Unmasked: an edge sent while masked was lost (82093AA), so what the
     device held back for its acknowledgment may follow now (the PIT's
     owed ticks), as after an EOI; see i8259.c's write_reg. */
  if ((old & RTE_MASKED) && !(e & RTE_MASKED))
    vmm__irqchip_acked(io->hub, pin);
  check_level(io, pin);
}

static int on_mmio(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  struct vmm__ioapic *io = opaque;
  (void)vcpu;
  uint64_t off = addr - io->base;
  uint32_t v = 0;
  vmm__irqchip_lock(io->hub);
  if ((off & 0xf) != 0 || len > 4 ||
      (off != REG_SEL && off != REG_WIN && off != REG_EOI)) {
    io->bad_access++;
  } else if (is_write) {
    memcpy(&v, data, len);
    if (off == REG_SEL)
      io->sel = (uint8_t)v;
    else if (off == REG_WIN)
      write_win(io, v);
    else
      vmm__ioapic_eoi(io, (uint8_t)v);
  } else {
    if (off == REG_SEL)
      v = io->sel;
    else if (off == REG_WIN)
      v = read_win(io);
    memcpy(data, &v, len);
  }
  vmm__irqchip_unlock(io->hub);
  return 0;
}

static void reset_locked(struct vmm__ioapic *io, uint8_t id) {
  io->id = id;
  io->sel = 0;
  for (unsigned pin = 0; pin < PINS; pin++)
    io->rte[pin] = RTE_MASKED;
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

static int realize(vmm_dev *dev, void *opaque) {
  struct vmm__ioapic *io = opaque;
  int err =
      vmm_dev_io_register(dev, VMM_IO_MMIO, io->base, WINDOW, on_mmio, io);
  if (err < 0)
    return err;
  return vmm__irqchip_attach_ioapic(io->vm, io);
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct vmm__ioapic *io = opaque;
  (void)dev;
  vmm__irqchip_detach_ioapic(io->vm, io);
  free(io);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct vmm__ioapic *io = opaque;
  (void)dev;
  vmm__irqchip_lock(io->hub);
  reset_locked(io, io->reset_id);
  vmm__irqchip_unlock(io->hub);
}

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct vmm__ioapic *io = opaque;
  (void)dev;
  json_t *rte = json_array();
  vmm__irqchip_lock(io->hub);
  for (unsigned pin = 0; rte != NULL && pin < PINS; pin++)
    if (json_array_append_new(rte, json_integer((json_int_t)io->rte[pin])) <
        0) {
      json_decref(rte);
      rte = NULL;
    }
  uint8_t id = io->id, sel = io->sel;
  vmm__irqchip_unlock(io->hub);
  if (rte == NULL)
    return VMM_ENOMEM;
  *out = json_pack("{s:s, s:i, s:i, s:i, s:o}", "type", "ioapic", "version", 1,
                   "id", id, "select", sel, "redirection", rte);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int restore(vmm_dev *dev, const json_t *st, void *opaque) {
  struct vmm__ioapic *io = opaque;
  (void)dev;
  uint64_t id, sel, rte[PINS];
  if (vmm__json_header(st, "ioapic", 1) < 0 ||
      vmm__json_uint(st, "id", 15, &id) < 0 ||
      vmm__json_uint(st, "select", 0xff, &sel) < 0)
    return VMM_EINVAL;
  json_t *a = json_object_get(st, "redirection");
  if (!json_is_array(a) || json_array_size(a) != PINS)
    return VMM_EINVAL;
  for (unsigned pin = 0; pin < PINS; pin++) {
    json_t *v = json_array_get(a, pin);
    if (!json_is_integer(v))
      return VMM_EINVAL;
    /* JSON integers are signed 64-bit: destinations >= 0x80 are negative. */
    rte[pin] = (uint64_t)json_integer_value(v);
    if (rte[pin] & ~(RTE_WRITABLE | RTE_REMOTE_IRR))
      return VMM_EINVAL;
    if (!(rte[pin] & RTE_LEVEL) && (rte[pin] & RTE_REMOTE_IRR))
      return VMM_EINVAL;
  }
  vmm__irqchip_lock(io->hub);
  io->id = (uint8_t)id;
  io->sel = (uint8_t)sel;
  memcpy(io->rte, rte, sizeof(rte));
  for (unsigned pin = 0; pin < PINS; pin++)
    check_level(io, pin);
  vmm__irqchip_unlock(io->hub);
  return 0;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct vmm__ioapic *io = opaque;
  (void)dev;
  vmm__irqchip_lock(io->hub);
  *out = json_pack("{s:I, s:I, s:I, s:I}", "messages", (json_int_t)io->messages,
                   "eois", (json_int_t)io->eois, "bad_access",
                   (json_int_t)io->bad_access, "bad_register",
                   (json_int_t)io->bad_register);
  vmm__irqchip_unlock(io->hub);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops ioapic_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "ioapic",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_ioapic_create(vmm_vm *vm, const struct vmm_ioapic_config *user,
                      vmm_dev **out) {
  struct vmm_ioapic_config cfg;
  vmm_ioapic_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0 ||
      (cfg.base & (WINDOW - 1)) != 0 || cfg.base + WINDOW < cfg.base ||
      cfg.id > 15)
    return VMM_EINVAL;
  if (vm->irqchip == NULL)
    return VMM_ENOTSUP;
  struct vmm__ioapic *io = calloc(1, sizeof(*io));
  if (io == NULL)
    return VMM_ENOMEM;
  io->vm = vm;
  io->hub = vm->irqchip;
  io->base = cfg.base;
  io->reset_id = cfg.id;
  reset_locked(io, cfg.id);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "ioapic", &ioapic_ops,
                        io, out);
}
