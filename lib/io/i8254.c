/*
 * 8254 PIT and port 0x61. See include/libvmm/i8254.h and docs/platform.md.
 *
 * Counters are computed from the VM's clock (lib/io/clock.h): a counter
 * knows when its count was loaded, and its value and OUT at any time
 * follow from the mode. Only counter 0 has an interrupt, so only it arms a
 * clock timer, for its next rising edge of OUT.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define NS 1000000000ll
#define PIT_HZ 1193182ll
#define REFRESH_NS 15085ll /* port 0x61 bit 4 period (half) */
#define MIN_PERIOD_NS 100000ll
#define MAX_MISSED_NS 100000000ll

enum { RW_LATCH = 0, RW_LSB = 1, RW_MSB = 2, RW_WORD = 3 };

struct channel {
  uint32_t count; /* loaded count, binary; 0 = the maximum */
  uint8_t mode;   /* 0-5 */
  uint8_t rw;     /* RW_LSB, RW_MSB, RW_WORD */
  bool bcd;
  bool gate;
  bool counting;   /* a count was loaded since the control word */
  bool null_count; /* written but not yet loaded (status bit 6) */
  bool paused;     /* gate low in a mode the gate inhibits */
  int64_t load_time;
  int64_t frozen; /* ticks counted when paused */
  /* Access state. */
  bool write_msb; /* RW_WORD: the LSB was written, MSB next */
  uint8_t write_lsb;
  bool read_msb; /* RW_WORD: the LSB was read, MSB next */
  bool count_latched, status_latched;
  uint16_t latch; /* latched count, as read (BCD when bcd) */
  uint8_t status;
  bool latch_msb; /* RW_WORD latched count: LSB was read */
};

struct pit {
  vmm_vm *vm;
  vmm_dev *dev;
  pthread_mutex_t lock;
  uint16_t base;
  uint32_t gsi;
  bool port61;
  bool hooked; /* ack hook registered (user-space platform) */
  struct channel ch[3];
  uint8_t port61_bits; /* bits 0-3 as written */
  /* Counter 0's interrupt. */
  bool line;
  int64_t edges;   /* rising edges of OUT accounted since the load */
  uint32_t missed; /* periodic ticks owed to the guest */
  /* Hooked: a pulse the guest has not acknowledged yet, raised at
     pulse_time. An edge then would merge into the controller's pending
     request: it is owed instead. Not saved (a restored PIT starts with
     none, at worst merging one tick). */
  bool unacked;
  int64_t pulse_time;
  struct vmm__timer timer;
  uint64_t irqs, reinjected, lost;
};

static const struct vmm_dev_ops pit_ops;

void vmm_pit_config_init(struct vmm_pit_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "pit";
  cfg->base = 0x40;
  cfg->gsi = 0;
  cfg->port61 = true;
}

/* ------------------------------------------------------------------------ */
/* Counting                                                                 */

static int64_t now(const struct pit *p) {
  return vmm__clock_now(p->vm->clock);
}

/* The count actually used: 0 stands for 2^16 (binary) or 10^4 (BCD). */
static int64_t period(const struct channel *c) {
  return c->count != 0 ? c->count : (c->bcd ? 10000 : 65536);
}

static int64_t ticks_at(const struct channel *c, int64_t t) {
  if (c->paused)
    return c->frozen;
  if (t <= c->load_time)
    return 0;
  return (int64_t)((__int128)(t - c->load_time) * PIT_HZ / NS);
}

/* Earliest time at which ticks_at() reaches ticks. */
static int64_t time_of(const struct channel *c, int64_t ticks) {
  return c->load_time + (int64_t)(((__int128)ticks * NS + PIT_HZ - 1) / PIT_HZ);
}

/* The modes whose counting stops while the gate is low. */
static bool gate_inhibits(uint8_t mode) {
  return mode == 0 || mode == 2 || mode == 3 || mode == 4;
}

static bool out_at(const struct channel *c, int64_t t) {
  if (!c->counting)
    return c->mode != 0; /* after a control word: low in mode 0 only */
  int64_t d = ticks_at(c, t), n = period(c);
  switch (c->mode) {
  case 0:
  case 1: return d >= n;
  case 2: return !c->gate || d % n != n - 1;
  case 3: return !c->gate || d % n < (n + 1) / 2;
  default: return d != n; /* 4, 5: low for one clock at terminal count */
  }
}

static uint32_t count_at(const struct channel *c, int64_t t) {
  if (!c->counting)
    return (uint32_t)period(c) & 0xffff;
  int64_t d = ticks_at(c, t), n = period(c), wrap = c->bcd ? 10000 : 65536;
  int64_t v;
  switch (c->mode) {
  case 2: v = n - d % n; break;
  case 3: v = n - (2 * d) % n; break;
  default: v = ((n - d) % wrap + wrap) % wrap; break;
  }
  return (uint32_t)(v & 0xffff);
}

static uint16_t to_bcd(uint32_t v) {
  v %= 10000;
  return (uint16_t)((v / 1000) << 12 | (v / 100 % 10) << 8 |
                    (v / 10 % 10) << 4 | v % 10);
}

/* A guest BCD count; bad digits are clamped to 9. */
static uint32_t from_bcd(uint16_t v) {
  uint32_t r = 0;
  for (int s = 12; s >= 0; s -= 4) {
    uint32_t d = (v >> s) & 0xf;
    r = r * 10 + (d > 9 ? 9 : d);
  }
  return r;
}

static uint16_t read_value(const struct channel *c, int64_t t) {
  uint32_t v = count_at(c, t);
  return c->bcd ? to_bcd(v == 65536 ? 0 : v) : (uint16_t)v;
}

static uint8_t status_byte(const struct channel *c, int64_t t) {
  return (uint8_t)((out_at(c, t) ? 0x80 : 0) | (c->null_count ? 0x40 : 0) |
                   c->rw << 4 | c->mode << 1 | (c->bcd ? 1 : 0));
}

/* ------------------------------------------------------------------------ */
/* Counter 0's interrupt                                                    */

static void set_line(struct pit *p, bool level) {
  if (level != p->line) {
    p->line = level;
    vmm_dev_irq_set(p->dev, p->gsi, level);
  }
}

/* A rising edge for the edge-triggered controllers, the line left low. */
static void pulse(struct pit *p, int64_t t) {
  p->irqs++;
  p->unacked = p->hooked;
  p->pulse_time = t;
  vmm_dev_irq_set(p->dev, p->gsi, true);
  vmm_dev_irq_set(p->dev, p->gsi, false);
  p->line = false;
}

static int64_t period_ns(const struct channel *c) {
  return (int64_t)((__int128)period(c) * NS / PIT_HZ);
}

static uint32_t missed_cap(const struct channel *c) {
  int64_t p = period_ns(c);
  if (p < MIN_PERIOD_NS)
    p = MIN_PERIOD_NS;
  int64_t cap = MAX_MISSED_NS / p;
  return (uint32_t)(cap < 1 ? 1 : cap > 1000 ? 1000 : cap);
}

/* Bring counter 0's line up to time t and arm the timer for what is next.
   Idempotent: the clock's callbacks may come late or twice. */
static void update_irq(struct pit *p, int64_t t) {
  struct channel *c = &p->ch[0];
  struct vmm__clock *clk = p->vm->clock;
  if (!c->counting || c->paused) {
    if (!c->counting)
      set_line(p, false); /* no count: no terminal count either */
    vmm__timer_cancel(clk, &p->timer);
    return;
  }
  int64_t d = ticks_at(c, t), n = period(c);
  switch (c->mode) {
  case 0:
  case 1:
    set_line(p, d >= n); /* OUT high from terminal count on */
    if (d < n)
      vmm__timer_arm(clk, &p->timer, time_of(c, n));
    else
      vmm__timer_cancel(clk, &p->timer);
    break;
  case 2:
  case 3: {
    int64_t edges = d / n;
    if (edges > p->edges) {
      uint64_t owed = (uint64_t)(edges - p->edges);
      p->edges = edges;
      /* The previous tick still pending: this one waits behind it too.
         One pending for 100 ms (its request cleared without an INTA: a
         controller reset or rerouted) no longer holds the timer back. */
      if (p->unacked && t - p->pulse_time < MAX_MISSED_NS)
        owed++;
      else
        pulse(p, t);
      uint64_t m = p->missed + owed - 1, cap = missed_cap(c);
      if (p->hooked)
        p->missed = (uint32_t)(m > cap ? cap : m);
      else
        p->lost += owed - 1;
    }
    int64_t next = time_of(c, (edges + 1) * n);
    if (next < t + MIN_PERIOD_NS && period_ns(c) < MIN_PERIOD_NS)
      next = t + MIN_PERIOD_NS;
    vmm__timer_arm(clk, &p->timer, next);
    break;
  }
  default: /* 4, 5: OUT rises again one clock after terminal count */
    if (p->edges == 0 && d >= n + 1) {
      p->edges = 1;
      pulse(p, t);
    }
    if (p->edges == 0)
      vmm__timer_arm(clk, &p->timer, time_of(c, n + 1));
    else
      vmm__timer_cancel(clk, &p->timer);
    break;
  }
}

static void on_timer(struct vmm__timer *t, int64_t when) {
  struct pit *p = t->opaque;
  pthread_mutex_lock(&p->lock);
  update_irq(p, when);
  pthread_mutex_unlock(&p->lock);
}

/* The guest took counter 0's interrupt: one owed tick goes in behind it. */
static void on_ack(void *opaque, uint32_t gsi) {
  struct pit *p = opaque;
  (void)gsi;
  pthread_mutex_lock(&p->lock);
  struct channel *c = &p->ch[0];
  p->unacked = false;
  if (p->missed > 0 && c->counting && (c->mode == 2 || c->mode == 3)) {
    p->missed--;
    p->reinjected++;
    pulse(p, now(p));
  }
  pthread_mutex_unlock(&p->lock);
}

/* ------------------------------------------------------------------------ */
/* Registers                                                                */

static void load(struct pit *p, unsigned i, uint16_t raw, int64_t t) {
  struct channel *c = &p->ch[i];
  c->count = c->bcd ? from_bcd(raw) : raw;
  c->counting = true;
  c->null_count = false;
  c->load_time = t;
  c->paused = !c->gate && gate_inhibits(c->mode);
  c->frozen = 0;
  if (i == 0) {
    p->edges = 0;
    p->missed = 0;
    update_irq(p, t);
  }
}

static void latch_count(struct channel *c, int64_t t) {
  if (c->count_latched)
    return; /* the first latch holds until read */
  c->latch = read_value(c, t);
  c->count_latched = true;
  c->latch_msb = false;
}

static void control(struct pit *p, uint8_t v, int64_t t) {
  unsigned sc = v >> 6;
  if (sc == 3) { /* read-back */
    for (unsigned i = 0; i < 3; i++) {
      if (!(v & (2u << i)))
        continue;
      struct channel *c = &p->ch[i];
      if (!(v & 0x20))
        latch_count(c, t);
      if (!(v & 0x10) && !c->status_latched) {
        c->status = status_byte(c, t);
        c->status_latched = true;
      }
    }
    return;
  }
  struct channel *c = &p->ch[sc];
  unsigned rw = (v >> 4) & 3;
  if (rw == RW_LATCH) {
    latch_count(c, t);
    return;
  }
  c->rw = (uint8_t)rw;
  c->mode = (v >> 1) & 7;
  if (c->mode > 5)
    c->mode -= 4;
  c->bcd = v & 1;
  c->counting = false;
  c->null_count = true;
  c->paused = false;
  c->write_msb = c->read_msb = false;
  c->count_latched = c->status_latched = false;
  if (sc == 0) {
    p->edges = 0;
    p->missed = 0;
    set_line(p, false);
    update_irq(p, t);
  }
}

static void write_count(struct pit *p, unsigned i, uint8_t v, int64_t t) {
  struct channel *c = &p->ch[i];
  switch (c->rw) {
  case RW_LSB: load(p, i, v, t); break;
  case RW_MSB: load(p, i, (uint16_t)(v << 8), t); break;
  case RW_WORD:
    if (!c->write_msb) {
      c->write_lsb = v;
      c->write_msb = true;
    } else {
      c->write_msb = false;
      load(p, i, (uint16_t)(c->write_lsb | v << 8), t);
    }
    break;
  default: break; /* no control word yet */
  }
}

static uint8_t read_count(struct channel *c, int64_t t) {
  if (c->status_latched) {
    c->status_latched = false;
    return c->status;
  }
  if (c->count_latched) {
    uint8_t b;
    if (c->rw == RW_MSB) {
      b = (uint8_t)(c->latch >> 8);
      c->count_latched = false;
    } else if (c->rw == RW_WORD && c->latch_msb) {
      b = (uint8_t)(c->latch >> 8);
      c->count_latched = false;
    } else {
      b = (uint8_t)c->latch;
      if (c->rw == RW_WORD)
        c->latch_msb = true;
      else
        c->count_latched = false;
    }
    return b;
  }
  uint16_t v = read_value(c, t);
  switch (c->rw) {
  case RW_MSB: return (uint8_t)(v >> 8);
  case RW_WORD:
    c->read_msb = !c->read_msb;
    return c->read_msb ? (uint8_t)v : (uint8_t)(v >> 8);
  default: return (uint8_t)v;
  }
}

static void set_gate2(struct pit *p, bool gate, int64_t t) {
  struct channel *c = &p->ch[2];
  if (gate == c->gate)
    return;
  c->gate = gate;
  if (!c->counting)
    return;
  if (!gate) {
    if (gate_inhibits(c->mode)) {
      c->frozen = ticks_at(c, t);
      c->paused = true;
    }
    return;
  }
  if (c->mode == 0 || c->mode == 4) {
    /* Resume where it stopped. */
    if (c->paused)
      c->load_time =
          t - (int64_t)(((__int128)c->frozen * NS + PIT_HZ - 1) / PIT_HZ);
    c->paused = false;
  } else {
    /* Modes 1, 2, 3, 5: a rising gate (re)starts the count. */
    c->load_time = t;
    c->paused = false;
  }
}

static void on_byte(void *opaque, uint64_t port, uint8_t *b, bool is_write) {
  struct pit *p = opaque;
  int64_t t = now(p);
  if (port == 0x61) {
    if (is_write) {
      p->port61_bits = *b & 0x0f;
      set_gate2(p, *b & 1, t);
    } else {
      *b = (uint8_t)(p->port61_bits | ((t / REFRESH_NS) & 1) << 4 |
                     (out_at(&p->ch[2], t) ? 0x20 : 0));
    }
    return;
  }
  unsigned i = (unsigned)(port - p->base);
  if (i == 3) {
    if (is_write)
      control(p, *b, t);
    else
      *b = 0; /* the control word cannot be read */
  } else if (is_write) {
    write_count(p, i, *b, t);
  } else {
    *b = read_count(&p->ch[i], t);
  }
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct pit *p = opaque;
  (void)vcpu;
  pthread_mutex_lock(&p->lock);
  vmm__io_bytes(p, port, data, len, is_write, on_byte);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

static void reset_locked(struct pit *p) {
  memset(p->ch, 0, sizeof(p->ch));
  for (unsigned i = 0; i < 3; i++) {
    p->ch[i].gate = i != 2; /* counter 2's gate is port 0x61 bit 0 */
    p->ch[i].rw = RW_WORD;
    p->ch[i].mode = 3;
  }
  p->port61_bits = 0;
  p->edges = 0;
  p->missed = 0;
  p->unacked = false;
  set_line(p, false);
  vmm__timer_cancel(p->vm->clock, &p->timer);
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

static int realize(vmm_dev *dev, void *opaque) {
  struct pit *p = opaque;
  p->dev = dev;
  int err = vmm_dev_io_register(dev, VMM_IO_PORT, p->base, 4, on_io, p);
  if (err == 0 && p->port61)
    err = vmm_dev_io_register(dev, VMM_IO_PORT, 0x61, 1, on_io, p);
  if (err == 0 && p->vm->irqchip != NULL) {
    err = vmm__irqchip_ack_hook(p->vm, p->gsi, on_ack, p);
    p->hooked = err == 0;
  }
  return err;
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct pit *p = opaque;
  (void)dev;
  if (p->hooked)
    vmm__irqchip_ack_hook(p->vm, p->gsi, NULL, NULL);
  vmm__timer_fini(p->vm->clock, &p->timer);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct pit *p = opaque;
  (void)dev;
  pthread_mutex_lock(&p->lock);
  reset_locked(p);
  pthread_mutex_unlock(&p->lock);
}

static json_t *channel_save(const struct channel *c, int64_t t) {
  return json_pack(
      "{s:i, s:i, s:i, s:b, s:b, s:b, s:b, s:b, s:I, s:I, s:b, s:i, s:b, s:b, "
      "s:b, s:i, s:i, s:b}",
      "count", (int)c->count, "mode", c->mode, "rw", c->rw, "bcd", c->bcd,
      "gate", c->gate, "counting", c->counting, "null_count", c->null_count,
      "paused", c->paused, "elapsed_ns",
      (json_int_t)(c->counting && !c->paused && t > c->load_time
                       ? t - c->load_time
                       : 0),
      "frozen", (json_int_t)c->frozen, "write_msb", c->write_msb, "write_lsb",
      c->write_lsb, "read_msb", c->read_msb, "count_latched", c->count_latched,
      "status_latched", c->status_latched, "latch", c->latch, "status",
      c->status, "latch_msb", c->latch_msb);
}

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct pit *p = opaque;
  (void)dev;
  json_t *chs = json_array();
  pthread_mutex_lock(&p->lock);
  int64_t t = now(p);
  for (unsigned i = 0; chs != NULL && i < 3; i++) {
    json_t *c = channel_save(&p->ch[i], t);
    if (c == NULL || json_array_append_new(chs, c) < 0) {
      json_decref(chs);
      chs = NULL;
    }
  }
  uint8_t bits = p->port61_bits;
  int64_t edges = p->edges;
  uint32_t missed = p->missed;
  pthread_mutex_unlock(&p->lock);
  if (chs == NULL)
    return VMM_ENOMEM;
  *out = json_pack("{s:s, s:i, s:o, s:i, s:I, s:I}", "type", "i8254", "version",
                   1, "channels", chs, "port61", bits, "edges",
                   (json_int_t)edges, "missed", (json_int_t)missed);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int channel_load(const json_t *o, struct channel *c, int64_t *elapsed) {
  uint64_t count, mode, rw, el, frozen, wl, latch, status;
  if (!json_is_object(o) || vmm__json_uint(o, "count", 0xffff, &count) < 0 ||
      vmm__json_uint(o, "mode", 5, &mode) < 0 ||
      vmm__json_uint(o, "rw", 3, &rw) < 0 || rw == 0 ||
      vmm__json_bool(o, "bcd", &c->bcd) < 0 ||
      vmm__json_bool(o, "gate", &c->gate) < 0 ||
      vmm__json_bool(o, "counting", &c->counting) < 0 ||
      vmm__json_bool(o, "null_count", &c->null_count) < 0 ||
      vmm__json_bool(o, "paused", &c->paused) < 0 ||
      vmm__json_uint(o, "elapsed_ns", INT64_MAX / 4, &el) < 0 ||
      vmm__json_uint(o, "frozen", 1ull << 40, &frozen) < 0 ||
      vmm__json_bool(o, "write_msb", &c->write_msb) < 0 ||
      vmm__json_uint(o, "write_lsb", 0xff, &wl) < 0 ||
      vmm__json_bool(o, "read_msb", &c->read_msb) < 0 ||
      vmm__json_bool(o, "count_latched", &c->count_latched) < 0 ||
      vmm__json_bool(o, "status_latched", &c->status_latched) < 0 ||
      vmm__json_uint(o, "latch", 0xffff, &latch) < 0 ||
      vmm__json_uint(o, "status", 0xff, &status) < 0 ||
      vmm__json_bool(o, "latch_msb", &c->latch_msb) < 0)
    return VMM_EINVAL;
  /* A count loaded in binary stays when a control word selects BCD: any
     16-bit value is a state the guest can reach. */
  c->count = (uint32_t)count;
  c->mode = (uint8_t)mode;
  c->rw = (uint8_t)rw;
  c->frozen = (int64_t)frozen;
  c->write_lsb = (uint8_t)wl;
  c->latch = (uint16_t)latch;
  c->status = (uint8_t)status;
  *elapsed = (int64_t)el;
  return 0;
}

static int restore(vmm_dev *dev, const json_t *st, void *opaque) {
  struct pit *p = opaque;
  (void)dev;
  struct channel ch[3];
  int64_t el[3];
  uint64_t bits, edges, missed;
  json_t *a = json_object_get(st, "channels");
  if (vmm__json_header(st, "i8254", 1) < 0 || !json_is_array(a) ||
      json_array_size(a) != 3 ||
      vmm__json_uint(st, "port61", 0x0f, &bits) < 0 ||
      vmm__json_uint(st, "edges", INT64_MAX / 4, &edges) < 0 ||
      vmm__json_uint(st, "missed", 1000, &missed) < 0)
    return VMM_EINVAL;
  memset(ch, 0, sizeof(ch));
  for (unsigned i = 0; i < 3; i++)
    if (channel_load(json_array_get(a, i), &ch[i], &el[i]) < 0)
      return VMM_EINVAL;
  /* Counters 0 and 1 have no gate input; counter 2's is port 0x61 bit 0. */
  if (!ch[0].gate || !ch[1].gate || ch[2].gate != (bits & 1))
    return VMM_EINVAL;
  pthread_mutex_lock(&p->lock);
  int64_t t = now(p);
  for (unsigned i = 0; i < 3; i++) {
    ch[i].load_time = t - el[i];
    p->ch[i] = ch[i];
  }
  p->port61_bits = (uint8_t)bits;
  p->edges = (int64_t)edges;
  p->missed = (uint32_t)missed;
  struct channel *c0 = &p->ch[0];
  /* Edges cannot lie ahead of the count (a state from elsewhere). */
  if (c0->counting && !c0->paused && p->edges > ticks_at(c0, t) / period(c0))
    p->edges = ticks_at(c0, t) / period(c0);
  /* Derived state only: the line of modes 0 and 1 as OUT is now. Edges
     due are left to the timer, so a restored state saves back unchanged. */
  set_line(p, c0->counting && !c0->paused && c0->mode <= 1 &&
                  ticks_at(c0, t) >= period(c0));
  vmm__timer_arm(p->vm->clock, &p->timer, t);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct pit *p = opaque;
  (void)dev;
  pthread_mutex_lock(&p->lock);
  *out = json_pack("{s:I, s:I, s:I, s:I}", "irqs", (json_int_t)p->irqs,
                   "reinjected", (json_int_t)p->reinjected, "owed",
                   (json_int_t)p->missed, "lost", (json_int_t)p->lost);
  pthread_mutex_unlock(&p->lock);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops pit_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "i8254",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_pit_create(vmm_vm *vm, const struct vmm_pit_config *user,
                   vmm_dev **out) {
  struct vmm_pit_config cfg;
  vmm_pit_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0 ||
      (uint32_t)cfg.base + 4 > 0x10000 || cfg.gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  if (vm->irqchip_kind == VMM__IRQCHIP_ENGINE && (vm->cfg.flags & VMM_VM_PIT))
    return VMM_EBUSY;
  struct pit *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return VMM_ENOMEM;
  if (pthread_mutex_init(&p->lock, NULL) != 0) {
    free(p);
    return VMM_ENOMEM;
  }
  p->vm = vm;
  p->base = cfg.base;
  p->gsi = cfg.gsi;
  p->port61 = cfg.port61;
  vmm__timer_init(&p->timer, on_timer, p);
  reset_locked(p);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "pit", &pit_ops, p,
                        out);
}
