/*
 * 8259A PIC pair. See include/libvmm/i8259.h and docs/platform.md.
 *
 * The state is kept under the interrupt platform's lock (lib/io/irqchip.h):
 * the PIC's output feeds the local APICs and its INTA cycle runs from the
 * vCPU taking the interrupt, so one lock makes every path atomic.
 *
 * Priorities follow the 8259A's rotation scheme: priority_add is the IRQ
 * with the highest priority, the others follow in circular order; "rotate"
 * commands move it past the IRQ just serviced.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define ICW1_IC4 0x01
#define ICW1_SNGL 0x02
#define ICW1_LTIM 0x08
#define ICW1 0x10
#define OCW3 0x08
#define ICW4_UPM 0x01
#define ICW4_AEOI 0x02
#define ICW4_SFNM 0x10

struct chip {
  uint8_t irr, isr, imr;
  uint8_t last_level; /* input pins, for edge detection */
  uint8_t elcr, elcr_mask;
  uint8_t base;         /* ICW2: vector of IRQ 0 */
  uint8_t icw3;         /* slave bitmap (master) or ID (slave) */
  uint8_t priority_add; /* IRQ with the highest priority */
  uint8_t init_state;   /* 0 ready, 1-3: ICW2-ICW4 expected next */
  bool icw4_needed, single, ltim, upm;
  bool auto_eoi, rotate_aeoi, sfnm, special_mask, poll, read_isr;
};

struct vmm__pic {
  vmm_vm *vm;
  struct vmm__irqchip *hub;
  struct chip c[2]; /* master, slave */
  bool out;
  bool elcr_ports;
  uint64_t inta, spurious, eoi;
};

static const struct vmm_dev_ops pic_ops;

void vmm_pic_config_init(struct vmm_pic_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "pic";
  cfg->elcr = true;
}

/* ------------------------------------------------------------------------ */
/* The model                                                                */

static bool level_mode(const struct chip *c, unsigned irq) {
  return c->ltim || (c->elcr & (1u << irq));
}

/* Priority (0 highest) of the best IRQ in mask, 8 if none. */
static unsigned priority(const struct chip *c, uint8_t mask) {
  for (unsigned p = 0; p < 8; p++)
    if (mask & (1u << ((p + c->priority_add) & 7)))
      return p;
  return 8;
}

/* The IRQ this chip would raise its INT for, or -1. */
static int chip_irq(const struct chip *c, bool master) {
  unsigned req = priority(c, c->irr & ~c->imr);
  if (req == 8)
    return -1;
  uint8_t busy = c->isr;
  if (c->special_mask)
    busy &= ~c->imr; /* masked in-service levels do not block others */
  if (master && c->sfnm)
    busy &= ~(1u << 2); /* the slave may nest its own requests */
  if (req < priority(c, busy))
    return (int)((req + c->priority_add) & 7);
  return -1;
}

/* Recompute the cascade and the output; tell the hub when INTR moved. */
static void update(struct vmm__pic *p) {
  struct chip *m = &p->c[0];
  /* The slave's INT is the master's IR2 input, a level. */
  if (chip_irq(&p->c[1], false) >= 0)
    m->irr |= 1u << 2;
  else
    m->irr &= ~(1u << 2);
  bool out = chip_irq(m, true) >= 0;
  if (out != p->out) {
    p->out = out;
    vmm__irqchip_pic_changed(p->hub);
  }
}

static void set_input(struct chip *c, unsigned irq, bool level) {
  uint8_t bit = (uint8_t)(1u << irq);
  if (level_mode(c, irq)) {
    if (level)
      c->irr |= bit;
    else
      c->irr &= (uint8_t)~bit;
  } else if (level && !(c->last_level & bit)) {
    c->irr |= bit; /* rising edge, latched until acknowledged */
  }
  if (level)
    c->last_level |= bit;
  else
    c->last_level &= (uint8_t)~bit;
}

static void intack(struct chip *c, unsigned irq) {
  uint8_t bit = (uint8_t)(1u << irq);
  if (c->auto_eoi) {
    if (c->rotate_aeoi)
      c->priority_add = (uint8_t)((irq + 1) & 7);
  } else {
    c->isr |= bit;
  }
  if (!level_mode(c, irq))
    c->irr &= (uint8_t)~bit;
}

bool vmm__pic_output(const struct vmm__pic *p) {
  return p->out;
}

void vmm__pic_set_irq(struct vmm__pic *p, unsigned irq, bool level) {
  if (irq >= 16 || irq == 2)
    return;
  set_input(&p->c[irq >> 3], irq & 7, level);
  update(p);
}

int vmm__pic_inta(struct vmm__pic *p, int *acked) {
  struct chip *m = &p->c[0], *s = &p->c[1];
  int vector;
  int irq = chip_irq(m, true);
  p->inta++;
  if (irq < 0) {
    /* The request went away before the INTA: IRQ 7, not in service. */
    p->spurious++;
    *acked = -1;
    vector = m->base + 7;
  } else if (irq == 2) {
    intack(m, 2);
    int irq2 = chip_irq(s, false);
    if (irq2 >= 0) {
      intack(s, (unsigned)irq2);
      *acked = 8 + irq2;
      vector = s->base + irq2;
    } else {
      p->spurious++;
      *acked = -1;
      vector = s->base + 7; /* IRQ 15; the master's IR2 is in service */
    }
  } else {
    intack(m, (unsigned)irq);
    *acked = irq;
    vector = m->base + irq;
  }
  update(p);
  return vector;
}

/* ICW1: start initialization (8259A datasheet: mask and ISR cleared,
   IR7 lowest priority, special mask off, IRR selected for reads). */
static void icw1(struct chip *c, uint8_t v) {
  c->irr &= c->elcr; /* the edge sense latches are reset */
  c->last_level = 0;
  c->isr = 0;
  c->imr = 0;
  c->priority_add = 0;
  c->special_mask = c->poll = c->read_isr = false;
  c->auto_eoi = c->rotate_aeoi = c->sfnm = c->upm = false;
  c->icw4_needed = (v & ICW1_IC4) != 0;
  c->single = (v & ICW1_SNGL) != 0;
  c->ltim = (v & ICW1_LTIM) != 0;
  c->init_state = 1;
}

static void ocw2(struct vmm__pic *p, struct chip *c, uint8_t v) {
  unsigned cmd = v >> 5, irq = v & 7;
  switch (cmd) {
  case 0: c->rotate_aeoi = false; break;
  case 4: c->rotate_aeoi = true; break;
  case 1:   /* non-specific EOI */
  case 5: { /* rotate on non-specific EOI */
    unsigned pr = priority(c, c->isr);
    if (pr == 8)
      break;
    unsigned i = (pr + c->priority_add) & 7;
    c->isr &= (uint8_t) ~(1u << i);
    if (cmd == 5)
      c->priority_add = (uint8_t)((i + 1) & 7);
    p->eoi++;
    break;
  }
  case 3: /* specific EOI */
    c->isr &= (uint8_t) ~(1u << irq);
    p->eoi++;
    break;
  case 7: /* rotate on specific EOI */
    c->isr &= (uint8_t) ~(1u << irq);
    c->priority_add = (uint8_t)((irq + 1) & 7);
    p->eoi++;
    break;
  case 6: /* set priority: irq becomes the lowest */
    c->priority_add = (uint8_t)((irq + 1) & 7);
    break;
  default: /* 2: no operation */ break;
  }
}

static void write_reg_(struct vmm__pic *p, struct chip *c, unsigned a0,
                       uint8_t v);

/* A register write, then the lines whose requests will not be
   acknowledged as pending ones: edges an ICW1 dropped from IRR, and lines
   unmasked (an edge while masked stays in IRR, but what the device held
   back for an acknowledgment may follow now). The hub runs their ack
   hooks, as after an INTA: the PIT's owed ticks wait for one, and a
   request that never comes would hold the timer back (Linux's
   check_timer reinitializes the PIC and unmasks IRQ 0 between its tries,
   each a 61 ms window). */
static void write_reg(struct vmm__pic *p, struct chip *c, unsigned a0,
                      uint8_t v) {
  uint8_t imr = c->imr, irr = c->irr;
  write_reg_(p, c, a0, v);
  bool master = c == &p->c[0];
  uint8_t ended = (uint8_t)((imr & ~c->imr) | (irr & ~c->irr));
  if (master)
    ended &= (uint8_t)~(1u << 2); /* the cascade, no line of its own */
  for (unsigned i = 0; i < 8; i++)
    if (ended & (1u << i))
      vmm__irqchip_acked(p->hub, (master ? 0 : 8) + i);
}

static void write_reg_(struct vmm__pic *p, struct chip *c, unsigned a0,
                       uint8_t v) {
  if (a0 == 0) {
    if (v & ICW1)
      icw1(c, v);
    else if (v & OCW3) {
      if (v & 0x04)
        c->poll = true;
      if (v & 0x02)
        c->read_isr = v & 1;
      if (v & 0x40)
        c->special_mask = (v >> 5) & 1;
    } else {
      ocw2(p, c, v);
    }
    return;
  }
  switch (c->init_state) {
  case 0: c->imr = v; break;
  case 1:
    c->base = v & 0xf8;
    c->init_state = c->single ? (c->icw4_needed ? 3 : 0) : 2;
    break;
  case 2:
    c->icw3 = v;
    c->init_state = c->icw4_needed ? 3 : 0;
    break;
  default:
    c->upm = v & ICW4_UPM;
    c->auto_eoi = (v & ICW4_AEOI) != 0;
    c->sfnm = (v & ICW4_SFNM) != 0;
    c->init_state = 0;
    break;
  }
}

/* Poll command: the highest request, acknowledged as an INTA would. */
static uint8_t poll_read(struct vmm__pic *p, struct chip *c) {
  bool master = c == &p->c[0];
  int irq = chip_irq(c, master);
  if (irq < 0)
    return 0;
  intack(c, (unsigned)irq);
  return (uint8_t)(0x80 | irq);
}

static uint8_t read_reg(struct vmm__pic *p, struct chip *c, unsigned a0) {
  if (c->poll) {
    c->poll = false;
    return poll_read(p, c);
  }
  if (a0 == 0)
    return c->read_isr ? c->isr : c->irr;
  return c->imr;
}

static void reset_chip(struct chip *c, uint8_t base, uint8_t icw3,
                       uint8_t elcr_mask) {
  memset(c, 0, sizeof(*c));
  c->base = base;
  c->icw3 = icw3;
  c->imr = 0xff;
  c->upm = true;
  c->icw4_needed = true;
  c->elcr_mask = elcr_mask;
}

/* Power-on, as a BIOS leaves it. Under the hub lock. */
static void reset_locked(struct vmm__pic *p) {
  /* IRQs 0, 1, 2, 8 and 13 are edge-triggered on every PC (ELCR masks). */
  reset_chip(&p->c[0], 0x08, 0x04, 0xf8);
  reset_chip(&p->c[1], 0x70, 0x02, 0xde);
  /* Lines already high stay visible as levels (nothing is latched). */
  for (unsigned irq = 0; irq < 16; irq++)
    if (irq != 2 && (p->hub->lines >> irq) & 1)
      p->c[irq >> 3].last_level |= (uint8_t)(1u << (irq & 7));
  update(p);
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

static void on_byte(void *opaque, uint64_t port, uint8_t *b, bool is_write) {
  struct vmm__pic *p = opaque;
  if (port >= 0x4d0) {
    struct chip *c = &p->c[port - 0x4d0];
    if (is_write) {
      c->elcr = *b & c->elcr_mask;
      /* Pins turning to level follow their line now. */
      unsigned base = port == 0x4d0 ? 0 : 8;
      for (unsigned i = 0; i < 8; i++)
        if (base + i != 2)
          set_input(c, i, (c->last_level >> i) & 1);
    } else {
      *b = c->elcr;
    }
  } else {
    struct chip *c = &p->c[port >= 0xa0];
    if (is_write)
      write_reg(p, c, port & 1, *b);
    else
      *b = read_reg(p, c, port & 1);
  }
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct vmm__pic *p = opaque;
  (void)vcpu;
  vmm__irqchip_lock(p->hub);
  vmm__io_bytes(p, port, data, len, is_write, on_byte);
  update(p);
  vmm__irqchip_unlock(p->hub);
  return 0;
}

static int realize(vmm_dev *dev, void *opaque) {
  struct vmm__pic *p = opaque;
  /* The hub first: a second PIC is refused as such (-VMM_EEXIST), not as
     overlapping ports. destroy detaches on failure. */
  int err = vmm__irqchip_attach_pic(p->vm, p);
  if (err == 0)
    err = vmm_dev_io_register(dev, VMM_IO_PORT, 0x20, 2, on_io, p);
  if (err == 0)
    err = vmm_dev_io_register(dev, VMM_IO_PORT, 0xa0, 2, on_io, p);
  if (err == 0 && p->elcr_ports)
    err = vmm_dev_io_register(dev, VMM_IO_PORT, 0x4d0, 2, on_io, p);
  return err;
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct vmm__pic *p = opaque;
  (void)dev;
  vmm__irqchip_detach_pic(p->vm, p);
  free(p);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct vmm__pic *p = opaque;
  (void)dev;
  vmm__irqchip_lock(p->hub);
  reset_locked(p);
  vmm__irqchip_unlock(p->hub);
}

/* ------------------------------------------------------------------------ */
/* State                                                                    */

static json_t *chip_save(const struct chip *c) {
  return json_pack(
      "{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:b, s:b, s:b, "
      "s:b, s:b, s:b, s:b, s:b, s:b}",
      "irr", c->irr, "isr", c->isr, "imr", c->imr, "last_level", c->last_level,
      "elcr", c->elcr, "base", c->base, "icw3", c->icw3, "priority_add",
      c->priority_add, "init_state", c->init_state, "icw4_needed",
      c->icw4_needed, "single", c->single, "ltim", c->ltim, "upm", c->upm,
      "auto_eoi", c->auto_eoi, "rotate_aeoi", c->rotate_aeoi, "sfnm", c->sfnm,
      "special_mask", c->special_mask, "poll", c->poll, "read_isr",
      c->read_isr);
}

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct vmm__pic *p = opaque;
  (void)dev;
  vmm__irqchip_lock(p->hub);
  json_t *m = chip_save(&p->c[0]), *s = chip_save(&p->c[1]);
  vmm__irqchip_unlock(p->hub);
  *out = json_pack("{s:s, s:i, s:o, s:o}", "type", "i8259", "version", 1,
                   "master", m, "slave", s);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int chip_load(const json_t *o, struct chip *c) {
  static const char *const bytes[] = {
      "irr",  "isr",  "imr",          "last_level", "elcr",
      "base", "icw3", "priority_add", "init_state"};
  static const char *const bools[] = {
      "icw4_needed", "single", "ltim",         "upm",  "auto_eoi",
      "rotate_aeoi", "sfnm",   "special_mask", "poll", "read_isr"};
  uint64_t b[9];
  bool f[10];
  if (!json_is_object(o))
    return VMM_EINVAL;
  for (size_t i = 0; i < 9; i++)
    if (vmm__json_uint(o, bytes[i], 0xff, &b[i]) < 0)
      return VMM_EINVAL;
  for (size_t i = 0; i < 10; i++)
    if (vmm__json_bool(o, bools[i], &f[i]) < 0)
      return VMM_EINVAL;
  if (b[7] > 7 || b[8] > 3 || (b[5] & 7) != 0 || (b[4] & ~c->elcr_mask))
    return VMM_EINVAL;
  c->irr = (uint8_t)b[0];
  c->isr = (uint8_t)b[1];
  c->imr = (uint8_t)b[2];
  c->last_level = (uint8_t)b[3];
  c->elcr = (uint8_t)b[4];
  c->base = (uint8_t)b[5];
  c->icw3 = (uint8_t)b[6];
  c->priority_add = (uint8_t)b[7];
  c->init_state = (uint8_t)b[8];
  c->icw4_needed = f[0];
  c->single = f[1];
  c->ltim = f[2];
  c->upm = f[3];
  c->auto_eoi = f[4];
  c->rotate_aeoi = f[5];
  c->sfnm = f[6];
  c->special_mask = f[7];
  c->poll = f[8];
  c->read_isr = f[9];
  return 0;
}

static int restore(vmm_dev *dev, const json_t *st, void *opaque) {
  struct vmm__pic *p = opaque;
  (void)dev;
  if (vmm__json_header(st, "i8259", 1) < 0)
    return VMM_EINVAL;
  struct chip c[2] = {p->c[0], p->c[1]};
  if (chip_load(json_object_get(st, "master"), &c[0]) < 0 ||
      chip_load(json_object_get(st, "slave"), &c[1]) < 0)
    return VMM_EINVAL;
  vmm__irqchip_lock(p->hub);
  p->c[0] = c[0];
  p->c[1] = c[1];
  update(p);
  vmm__irqchip_unlock(p->hub);
  return 0;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct vmm__pic *p = opaque;
  (void)dev;
  vmm__irqchip_lock(p->hub);
  *out = json_pack("{s:I, s:I, s:I}", "inta", (json_int_t)p->inta, "spurious",
                   (json_int_t)p->spurious, "eoi", (json_int_t)p->eoi);
  vmm__irqchip_unlock(p->hub);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops pic_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "i8259",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_pic_create(vmm_vm *vm, const struct vmm_pic_config *user,
                   vmm_dev **out) {
  struct vmm_pic_config cfg;
  vmm_pic_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  if (vm->irqchip == NULL)
    return VMM_ENOTSUP;
  struct vmm__pic *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return VMM_ENOMEM;
  p->vm = vm;
  p->hub = vm->irqchip;
  p->elcr_ports = cfg.elcr;
  /* Not yet reachable by anyone: no lock needed before attaching. */
  reset_chip(&p->c[0], 0x08, 0x04, 0xf8);
  reset_chip(&p->c[1], 0x70, 0x02, 0xde);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "pic", &pic_ops, p,
                        out);
}
