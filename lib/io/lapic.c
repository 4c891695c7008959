/*
 * Local APICs (xAPIC). See include/libvmm/lapic.h and docs/platform.md.
 *
 * The state of every APIC is kept under the interrupt platform's lock
 * (lib/io/irqchip.h): IPIs go from one APIC to others, EOIs back to the
 * IOAPIC, and the INTA cycle runs on the vCPU taking the interrupt.
 *
 * Timers are computed, not ticked: an armed timer knows when it started
 * and when it next expires; the current count is derived from the clock
 * when read, and a clock timer (lib/io/clock.h) fires at expiry.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define WINDOW 0x1000
#define NS 1000000000ll
#define MIN_PERIOD_NS 100000ll
#define MAX_MISSED_NS 100000000ll

/* Register offsets. */
#define R_ID 0x020
#define R_VER 0x030
#define R_TPR 0x080
#define R_APR 0x090
#define R_PPR 0x0a0
#define R_EOI 0x0b0
#define R_RRD 0x0c0
#define R_LDR 0x0d0
#define R_DFR 0x0e0
#define R_SVR 0x0f0
#define R_ISR 0x100
#define R_TMR 0x180
#define R_IRR 0x200
#define R_ESR 0x280
#define R_ICR_LO 0x300
#define R_ICR_HI 0x310
#define R_LVT 0x320 /* timer, thermal, perf, LINT0, LINT1, error */
#define R_TMICT 0x380
#define R_TMCCT 0x390
#define R_TDCR 0x3e0

enum { LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR };
#define NLVT 6

#define VERSION 0x00050014u /* max LVT entry 5, integrated APIC */
#define SVR_ENABLE (1u << 8)
#define SVR_WRITABLE 0x3ffu
#define LVT_MASKED (1u << 16)
#define LVT_DM(v) (((v) >> 8) & 7)
#define LVT_LEVEL (1u << 15)
#define TIMER_PERIODIC (1u << 17)
#define TIMER_TSC_DEADLINE (1u << 18)
#define TIMER_MODE(v) (((v) >> 17) & 3)
#define ICR_WRITABLE 0x000cdfffu
#define ICR_LEVEL_ASSERT (1u << 14)
#define ICR_TRIGGER_LEVEL (1u << 15)

#define ESR_SEND_ILLEGAL (1u << 5)
#define ESR_RECV_ILLEGAL (1u << 6)
#define ESR_ILLEGAL_REG (1u << 7)

enum { MODE_ONESHOT = 0, MODE_PERIODIC = 1, MODE_TSC = 2 };

struct vmm__lapics;

struct apic {
  struct vmm__lapics *l;
  unsigned index;
  uint32_t id; /* the ID register (APIC ID in bits 31:24) */
  uint32_t tpr, ldr, dfr, svr, esr, esr_pending, icr_lo, icr_hi;
  uint32_t lvt[NLVT];
  uint32_t irr[8], isr[8], tmr[8];
  uint32_t tmict, tdcr;
  /* Timer: start of the current count and next expiry (clock time), or
     deadline < 0 when not running. */
  int64_t start, deadline;
  uint64_t tsc_deadline;
  uint32_t missed; /* periodic ticks owed to the guest */
  bool lint0_level;
  bool extint_latched;
  struct vmm__timer timer;
};

struct vmm__lapics {
  vmm_vm *vm;
  struct vmm__irqchip *hub;
  uint64_t base;
  uint64_t timer_hz;
  uint64_t tsc_khz; /* 0: no TSC-deadline mode */
  unsigned n;
  unsigned lowest_rr; /* round robin among equals for lowest priority */
  struct apic *a;
  uint64_t ipis, ipi_dropped, timer_irqs, coalesced, bad_access, errors;
};

static const struct vmm_dev_ops lapic_ops;

void vmm_lapic_config_init(struct vmm_lapic_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "lapic";
  cfg->base = 0xfee00000ull;
  cfg->timer_hz = 1000000000ull;
}

/* ------------------------------------------------------------------------ */
/* Vector bitmaps and priorities                                            */

static bool test_bit(const uint32_t *m, unsigned v) {
  return (m[v / 32] >> (v % 32)) & 1;
}
static void set_bit(uint32_t *m, unsigned v) {
  m[v / 32] |= 1u << (v % 32);
}
static void clear_bit(uint32_t *m, unsigned v) {
  m[v / 32] &= ~(1u << (v % 32));
}

static int highest(const uint32_t *m) {
  for (int w = 7; w >= 0; w--)
    if (m[w] != 0)
      return w * 32 + 31 - __builtin_clz(m[w]);
  return -1;
}

static uint32_t ppr(const struct apic *a) {
  int isrv = highest(a->isr);
  uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
  return (a->tpr & 0xf0) >= isr_class ? a->tpr : isr_class;
}

static uint32_t apr(const struct apic *a) {
  int irrv = highest(a->irr), isrv = highest(a->isr);
  uint32_t irr_class = irrv < 0 ? 0 : (uint32_t)irrv & 0xf0;
  uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
  if ((a->tpr & 0xf0) >= irr_class && (a->tpr & 0xf0) > isr_class)
    return a->tpr;
  uint32_t t = (a->tpr & 0xf0) & isr_class;
  return t > irr_class ? t : irr_class;
}

static bool sw_enabled(const struct apic *a) {
  return (a->svr & SVR_ENABLE) != 0;
}

static bool present(struct vmm__lapics *l, unsigned i) {
  return vmm__irqchip_vcpu(l->hub, i) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Interrupt acceptance                                                     */

static void accept(struct apic *a, unsigned vector, bool level);

/* Record an error; the error LVT interrupts once per new bit. */
static void error(struct apic *a, uint32_t bit) {
  a->l->errors++;
  bool fresh = !(a->esr_pending & bit);
  a->esr_pending |= bit;
  uint32_t lvt = a->lvt[LVT_ERROR];
  if (fresh && !(lvt & LVT_MASKED) && (lvt & 0xff) >= 16)
    accept(a, lvt & 0xff, false);
}

/* A fixed interrupt arrives: into IRR (TMR records its trigger mode). */
static void accept(struct apic *a, unsigned vector, bool level) {
  if (!sw_enabled(a))
    return; /* a software-disabled APIC takes no fixed interrupts */
  if (vector < 16) {
    error(a, ESR_RECV_ILLEGAL);
    return;
  }
  if (test_bit(a->irr, vector))
    a->l->coalesced++;
  set_bit(a->irr, vector);
  if (level)
    set_bit(a->tmr, vector);
  else
    clear_bit(a->tmr, vector);
  vmm__irqchip_dirty(a->l->hub, a->index);
}

/* An LVT entry fires: fixed or NMI delivery to this CPU. */
static void lvt_fire(struct apic *a, unsigned which) {
  uint32_t v = a->lvt[which];
  if (v & LVT_MASKED)
    return;
  switch (LVT_DM(v)) {
  case VMM__DM_FIXED:
    /* LINT pins are taken as edge-triggered (documented). */
    accept(a, v & 0xff, false);
    break;
  case VMM__DM_NMI: vmm__irqchip_nmi(a->l->hub, a->index); break;
  default: break; /* SMI, INIT, ExtINT (LINT0, see vmm__lapic_extint) */
  }
}

int vmm__lapic_pending(struct vmm__lapics *l, unsigned i) {
  if (i >= l->n)
    return -1;
  const struct apic *a = &l->a[i];
  int v = highest(a->irr);
  if (v < 0 || ((uint32_t)v & 0xf0) <= (ppr(a) & 0xf0))
    return -1;
  return v;
}

int vmm__lapic_ack(struct vmm__lapics *l, unsigned i) {
  int v = vmm__lapic_pending(l, i);
  if (v < 0)
    return -1;
  struct apic *a = &l->a[i];
  clear_bit(a->irr, (unsigned)v);
  set_bit(a->isr, (unsigned)v);
  /* A periodic tick owed to the guest goes in behind the one acked. */
  uint32_t t = a->lvt[LVT_TIMER];
  if (a->missed > 0 && (t & 0xff) == (uint32_t)v && !(t & LVT_MASKED)) {
    a->missed--;
    a->l->timer_irqs++;
    accept(a, (unsigned)v, false);
  }
  vmm__irqchip_dirty(l->hub, i);
  return v;
}

bool vmm__lapic_extint(struct vmm__lapics *l, unsigned i) {
  if (i >= l->n)
    return false;
  const struct apic *a = &l->a[i];
  uint32_t v = a->lvt[LVT_LINT0];
  return a->extint_latched ||
         (!(v & LVT_MASKED) && LVT_DM(v) == VMM__DM_EXTINT);
}

void vmm__lapic_extint_done(struct vmm__lapics *l, unsigned i) {
  if (i < l->n)
    l->a[i].extint_latched = false;
}

void vmm__lapic_lint0(struct vmm__lapics *l, bool level) {
  for (unsigned i = 0; i < l->n; i++) {
    struct apic *a = &l->a[i];
    bool rising = level && !a->lint0_level;
    a->lint0_level = level;
    if (rising && present(l, i) && LVT_DM(a->lvt[LVT_LINT0]) != VMM__DM_EXTINT)
      lvt_fire(a, LVT_LINT0);
  }
}

uint8_t vmm__lapic_tpr(struct vmm__lapics *l, unsigned i) {
  return i < l->n ? (uint8_t)l->a[i].tpr : 0;
}

static void set_tpr(struct apic *a, uint32_t tpr) {
  a->tpr = tpr & 0xff;
  vmm_vcpu *v = vmm__irqchip_vcpu(a->l->hub, a->index);
  if (v != NULL)
    atomic_store(&v->tpr, a->tpr);
  vmm__irqchip_dirty(a->l->hub, a->index);
}

void vmm__lapic_set_tpr(struct vmm__lapics *l, unsigned i, uint8_t tpr) {
  if (i < l->n)
    set_tpr(&l->a[i], tpr);
}

/* ------------------------------------------------------------------------ */
/* Message delivery                                                         */

static bool match(const struct apic *a, uint8_t dest, bool logical) {
  if (dest == 0xff)
    return true; /* broadcast, both modes */
  if (!logical)
    return (a->id >> 24) == dest;
  uint8_t ldr = (uint8_t)(a->ldr >> 24);
  if ((a->dfr >> 28) == 0xf) /* flat model */
    return (ldr & dest) != 0;
  /* cluster model: cluster in the high nibble, members in the low one */
  return (ldr >> 4) == (dest >> 4) && (ldr & dest & 0x0f) != 0;
}

void vmm__lapic_deliver(struct vmm__lapics *l, const struct vmm__irq_msg *m) {
  uint64_t targets[4] = {0};
  unsigned count = 0;
  for (unsigned i = 0; i < l->n; i++) {
    if (!present(l, i))
      continue;
    bool hit;
    switch (m->shorthand) {
    case 1: hit = (int)i == m->source; break;
    case 2: hit = true; break;
    case 3: hit = (int)i != m->source; break;
    default: hit = match(&l->a[i], m->dest, m->logical); break;
    }
    if (hit) {
      targets[i / 64] |= 1ull << (i % 64);
      count++;
    }
  }
  if (count == 0) {
    l->ipi_dropped++;
    return;
  }
  if (m->delivery == VMM__DM_LOWEST) {
    /* The target with the lowest priority; equals take turns. */
    unsigned best = l->n;
    for (unsigned k = 0; k < l->n; k++) {
      unsigned i = (l->lowest_rr + 1 + k) % l->n;
      if (!((targets[i / 64] >> (i % 64)) & 1))
        continue;
      if (best == l->n || apr(&l->a[i]) < apr(&l->a[best]))
        best = i;
    }
    l->lowest_rr = best;
    accept(&l->a[best], m->vector, m->level);
    return;
  }
  for (unsigned i = 0; i < l->n; i++) {
    if (!((targets[i / 64] >> (i % 64)) & 1))
      continue;
    struct apic *a = &l->a[i];
    switch (m->delivery) {
    case VMM__DM_FIXED: accept(a, m->vector, m->level); break;
    case VMM__DM_NMI: vmm__irqchip_nmi(l->hub, i); break;
    case VMM__DM_INIT:
      /* INIT level de-assert only resynchronizes arbitration IDs. */
      if (m->assert || !m->level)
        vmm__irqchip_init(l->hub, i);
      break;
    case VMM__DM_SIPI: vmm__irqchip_sipi(l->hub, i, m->vector); break;
    case VMM__DM_EXTINT:
      a->extint_latched = true;
      vmm__irqchip_dirty(l->hub, i);
      break;
    default: break; /* SMI: there is no SMM */
    }
  }
}

static void send_ipi(struct apic *a) {
  struct vmm__irq_msg m = {
      .vector = (uint8_t)a->icr_lo,
      .delivery = (uint8_t)LVT_DM(a->icr_lo),
      .shorthand = (uint8_t)((a->icr_lo >> 18) & 3),
      .logical = (a->icr_lo & (1u << 11)) != 0,
      .level = (a->icr_lo & ICR_TRIGGER_LEVEL) != 0,
      .assert = (a->icr_lo & ICR_LEVEL_ASSERT) != 0,
      .dest = (uint8_t)(a->icr_hi >> 24),
      .source = (int)a->index,
  };
  if ((m.delivery == VMM__DM_FIXED || m.delivery == VMM__DM_LOWEST) &&
      m.vector < 16) {
    error(a, ESR_SEND_ILLEGAL);
    return;
  }
  a->l->ipis++;
  vmm__lapic_deliver(a->l, &m);
}

static void eoi(struct apic *a) {
  int v = highest(a->isr);
  if (v < 0)
    return;
  clear_bit(a->isr, (unsigned)v);
  if (test_bit(a->tmr, (unsigned)v)) {
    clear_bit(a->tmr, (unsigned)v);
    /* Level-triggered: the IOAPIC clears remote IRR (EOI broadcast). */
    if (a->l->hub->ioapic != NULL)
      vmm__ioapic_eoi(a->l->hub->ioapic, (uint8_t)v);
  }
  vmm__irqchip_dirty(a->l->hub, a->index);
}

/* ------------------------------------------------------------------------ */
/* Timer                                                                    */

static uint32_t divisor(uint32_t tdcr) {
  uint32_t x = (tdcr & 3) | ((tdcr >> 1) & 4);
  return x == 7 ? 1 : 2u << x;
}

/* Bus ticks (after the divider) to nanoseconds and back, in 128 bits: an
   initial count of 2^32 at divide-by-128 is 2^39 ticks. */
static int64_t ticks_to_ns(const struct apic *a, uint64_t ticks) {
  unsigned __int128 ns =
      (unsigned __int128)ticks * divisor(a->tdcr) * NS / a->l->timer_hz;
  return ns > INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)ns;
}

static uint64_t ns_to_ticks(const struct apic *a, int64_t ns) {
  if (ns <= 0)
    return 0;
  unsigned __int128 t = (unsigned __int128)ns * a->l->timer_hz /
                        ((unsigned __int128)NS * divisor(a->tdcr));
  return t > UINT64_MAX ? UINT64_MAX : (uint64_t)t;
}

static unsigned timer_mode(const struct apic *a) {
  return TIMER_MODE(a->lvt[LVT_TIMER]);
}

static int64_t period_ns(const struct apic *a) {
  return ticks_to_ns(a, a->tmict);
}

static int64_t now(const struct apic *a) {
  return vmm__clock_now(a->l->vm->clock);
}

static void timer_arm(struct apic *a, int64_t deadline) {
  a->deadline = deadline;
  vmm__timer_arm(a->l->vm->clock, &a->timer, deadline);
}

static void timer_stop(struct apic *a) {
  a->deadline = -1;
  a->missed = 0;
  vmm__timer_cancel(a->l->vm->clock, &a->timer);
}

/* Start counting tmict down from t. */
static void timer_start(struct apic *a, int64_t t) {
  a->missed = 0;
  if (a->tmict == 0 || timer_mode(a) == MODE_TSC) {
    timer_stop(a);
    return;
  }
  a->start = t;
  int64_t p = period_ns(a);
  if (timer_mode(a) == MODE_PERIODIC && p < MIN_PERIOD_NS)
    p = MIN_PERIOD_NS;
  timer_arm(a, t + p);
}

static uint32_t current_count(const struct apic *a) {
  if (a->deadline < 0 || timer_mode(a) == MODE_TSC || a->tmict == 0)
    return 0;
  uint64_t elapsed = ns_to_ticks(a, now(a) - a->start);
  if (timer_mode(a) == MODE_PERIODIC)
    return a->tmict - (uint32_t)(elapsed % a->tmict);
  return elapsed >= a->tmict ? 0 : a->tmict - (uint32_t)elapsed;
}

/* The timer is due at t: interrupt, then re-arm a periodic timer. */
static void expire(struct apic *a, int64_t t) {
  uint32_t lvt = a->lvt[LVT_TIMER];
  unsigned mode = timer_mode(a);
  uint64_t owed = 1;
  if (mode == MODE_PERIODIC) {
    int64_t p = period_ns(a);
    if (p < MIN_PERIOD_NS)
      p = MIN_PERIOD_NS;
    /* Periods that passed while the host did not run us are owed. */
    owed = (uint64_t)((t - a->deadline) / p) + 1;
    a->deadline += (int64_t)owed * p;
    vmm__timer_arm(a->l->vm->clock, &a->timer, a->deadline);
    uint64_t cap = (uint64_t)(MAX_MISSED_NS / p);
    cap = cap < 1 ? 1 : cap > 1000 ? 1000 : cap;
    uint64_t missed = a->missed + owed - 1;
    a->missed = (uint32_t)(missed > cap ? cap : missed);
  } else {
    a->deadline = -1;
    a->tsc_deadline = 0;
  }
  if (lvt & LVT_MASKED)
    return;
  unsigned v = lvt & 0xff;
  if (sw_enabled(a) && v >= 16 && test_bit(a->irr, v) &&
      mode == MODE_PERIODIC && a->missed < 1000) {
    a->missed++; /* still pending: deliver when the guest acks that one */
    a->l->coalesced++;
    return;
  }
  a->l->timer_irqs++;
  lvt_fire(a, LVT_TIMER);
}

static void on_timer(struct vmm__timer *t, int64_t when) {
  struct apic *a = t->opaque;
  struct vmm__irqchip *hub = a->l->hub;
  vmm__irqchip_lock(hub);
  /* The timer may have been stopped or moved since it was due. */
  if (a->deadline >= 0 && when >= a->deadline)
    expire(a, when);
  vmm__irqchip_unlock(hub);
}

/* Write of the LVT timer entry: a mode change disarms the timer. */
static void write_lvt_timer(struct apic *a, uint32_t v) {
  uint32_t old = a->lvt[LVT_TIMER];
  a->lvt[LVT_TIMER] = v;
  if (TIMER_MODE(old) != TIMER_MODE(v)) {
    a->tmict = 0;
    a->tsc_deadline = 0;
    timer_stop(a);
  }
}

static void write_tdcr(struct apic *a, uint32_t v) {
  /* Keep the count continuous across the change of rate. */
  uint32_t left = current_count(a);
  bool running = a->deadline >= 0 && timer_mode(a) != MODE_TSC;
  a->tdcr = v & 0xb;
  if (!running)
    return;
  int64_t t = now(a);
  a->start = t - ticks_to_ns(a, a->tmict - left);
  int64_t p = period_ns(a);
  if (timer_mode(a) == MODE_PERIODIC && p < MIN_PERIOD_NS)
    p = MIN_PERIOD_NS;
  int64_t next = t + ticks_to_ns(a, left);
  timer_arm(a, next > t + p ? t + p : next);
}

int vmm__lapic_msr(struct vmm__lapics *l, unsigned i, uint32_t index,
                   uint64_t *value, bool write, uint64_t guest_tsc) {
  if (index != 0x6e0 || l->tsc_khz == 0)
    return VMM_IO_DECLINED;
  if (i >= l->n)
    return VMM_EINVAL;
  struct apic *a = &l->a[i];
  bool tsc_mode = timer_mode(a) == MODE_TSC;
  if (!write) {
    *value = tsc_mode ? a->tsc_deadline : 0;
    return 0;
  }
  if (!tsc_mode)
    return 0; /* ignored outside TSC-deadline mode */
  a->tsc_deadline = *value;
  if (*value == 0) {
    timer_stop(a);
    return 0;
  }
  int64_t t = now(a);
  int64_t delta = 0;
  if (*value > guest_tsc) {
    unsigned __int128 ns =
        (unsigned __int128)(*value - guest_tsc) * 1000000u / l->tsc_khz;
    delta = ns > INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)ns;
  }
  a->missed = 0;
  timer_arm(a, t + delta);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Registers                                                                */

/* Every register's offset is valid here; reserved ones are not. */
static bool reg_exists(unsigned r) {
  switch (r) {
  case R_ID:
  case R_VER:
  case R_TPR:
  case R_APR:
  case R_PPR:
  case R_EOI:
  case R_RRD:
  case R_LDR:
  case R_DFR:
  case R_SVR:
  case R_ESR:
  case R_ICR_LO:
  case R_ICR_HI:
  case R_TMICT:
  case R_TMCCT:
  case R_TDCR: return true;
  default:
    return (r >= R_ISR && r < R_IRR + 0x80) ||
           (r >= R_LVT && r < R_LVT + NLVT * 0x10);
  }
}

static uint32_t read_reg(struct apic *a, unsigned r) {
  switch (r) {
  case R_ID: return a->id;
  case R_VER: return VERSION;
  case R_TPR: return a->tpr;
  case R_APR: return apr(a);
  case R_PPR: return ppr(a);
  case R_LDR: return a->ldr;
  case R_DFR: return a->dfr;
  case R_SVR: return a->svr;
  case R_ESR: return a->esr;
  case R_ICR_LO: return a->icr_lo;
  case R_ICR_HI: return a->icr_hi;
  case R_TMICT: return a->tmict;
  case R_TMCCT: return current_count(a);
  case R_TDCR: return a->tdcr;
  case R_EOI:
  case R_RRD: return 0;
  default: break;
  }
  if (r >= R_ISR && r < R_ISR + 0x80)
    return a->isr[(r - R_ISR) / 0x10];
  if (r >= R_TMR && r < R_TMR + 0x80)
    return a->tmr[(r - R_TMR) / 0x10];
  if (r >= R_IRR && r < R_IRR + 0x80)
    return a->irr[(r - R_IRR) / 0x10];
  return a->lvt[(r - R_LVT) / 0x10];
}

static const uint32_t lvt_writable[NLVT] = {
    0x000700ff, /* timer: vector, mask, mode (TSC-deadline bit if offered) */
    0x000107ff, /* thermal: vector, delivery mode, mask */
    0x000107ff, /* performance */
    0x0001a7ff, /* LINT0: + polarity, trigger mode */
    0x0001a7ff, /* LINT1 */
    0x000100ff, /* error: vector, mask */
};

static void write_reg(struct apic *a, unsigned r, uint32_t v) {
  switch (r) {
  case R_ID: a->id = v & 0xff000000u; return;
  case R_TPR: set_tpr(a, v); return;
  case R_EOI: eoi(a); return;
  case R_LDR: a->ldr = v & 0xff000000u; return;
  case R_DFR: a->dfr = v | 0x0fffffffu; return;
  case R_SVR:
    a->svr = v & SVR_WRITABLE;
    if (!sw_enabled(a))
      for (unsigned k = 0; k < NLVT; k++)
        a->lvt[k] |= LVT_MASKED;
    vmm__irqchip_dirty(a->l->hub, a->index);
    return;
  case R_ESR:
    a->esr = a->esr_pending;
    a->esr_pending = 0;
    return;
  case R_ICR_HI: a->icr_hi = v & 0xff000000u; return;
  case R_ICR_LO:
    a->icr_lo = v & ICR_WRITABLE;
    send_ipi(a);
    return;
  case R_TMICT:
    if (timer_mode(a) == MODE_TSC)
      return;
    a->tmict = v;
    timer_start(a, now(a));
    return;
  case R_TDCR: write_tdcr(a, v); return;
  default: break;
  }
  if (r >= R_LVT && r < R_LVT + NLVT * 0x10) {
    unsigned k = (r - R_LVT) / 0x10;
    uint32_t mask = lvt_writable[k];
    if (k == LVT_TIMER && a->l->tsc_khz == 0)
      mask &= ~TIMER_TSC_DEADLINE;
    /* Remote IRR and delivery status are read-only. */
    uint32_t nv = v & mask;
    if (!sw_enabled(a))
      nv |= LVT_MASKED;
    if (k == LVT_TIMER)
      write_lvt_timer(a, nv);
    else
      a->lvt[k] = nv;
    if (k == LVT_LINT0)
      vmm__irqchip_dirty(a->l->hub, a->index);
  }
  /* Read-only registers ignore writes. */
}

static int on_mmio(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  struct vmm__lapics *l = opaque;
  unsigned off = (unsigned)(addr - l->base);
  unsigned r = off & ~0xfu, in = off & 0xf;
  vmm__irqchip_lock(l->hub);
  if (vcpu == NULL || vcpu->index >= l->n) {
    l->bad_access++; /* not a CPU's access: no APIC to answer */
  } else if (is_write ? (len != 4 || in != 0) : (in + len > 4)) {
    l->bad_access++;
  } else {
    struct apic *a = &l->a[vcpu->index];
    if (!reg_exists(r)) {
      error(a, ESR_ILLEGAL_REG);
    } else if (is_write) {
      uint32_t v;
      memcpy(&v, data, 4);
      write_reg(a, r, v);
    } else {
      uint32_t v = read_reg(a, r) >> (8 * in);
      memcpy(data, &v, len);
    }
  }
  vmm__irqchip_unlock(l->hub);
  return 0;
}

/* The registers of the power-on (or INIT) state; touches nothing else. */
static void apic_regs_reset(struct apic *a, bool power_on) {
  if (power_on)
    a->id = (uint32_t)a->index << 24;
  a->tpr = a->ldr = a->esr = a->esr_pending = a->icr_lo = a->icr_hi = 0;
  a->dfr = 0xffffffffu;
  a->svr = 0xff;
  for (unsigned k = 0; k < NLVT; k++)
    a->lvt[k] = LVT_MASKED;
  memset(a->irr, 0, sizeof(a->irr));
  memset(a->isr, 0, sizeof(a->isr));
  memset(a->tmr, 0, sizeof(a->tmr));
  a->tmict = a->tdcr = 0;
  a->tsc_deadline = 0;
  a->extint_latched = false;
  a->missed = 0;
  /* Virtual-wire mode on the BSP, as firmware leaves it. */
  if (power_on && a->index == 0)
    a->lvt[LVT_LINT0] = VMM__DM_EXTINT << 8;
}

/* Power-on (reset) or INIT state of one APIC. Under the hub lock. */
static void apic_reset(struct apic *a, bool power_on) {
  apic_regs_reset(a, power_on);
  timer_stop(a);
  vmm_vcpu *v = vmm__irqchip_vcpu(a->l->hub, a->index);
  if (v != NULL)
    atomic_store(&v->tpr, 0);
  vmm__irqchip_dirty(a->l->hub, a->index);
}

uint64_t vmm__lapic_base(const struct vmm__lapics *l) {
  return l->base;
}

void vmm__lapic_init_reset(struct vmm__lapics *l, unsigned i) {
  if (i < l->n)
    apic_reset(&l->a[i], false);
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

static int realize(vmm_dev *dev, void *opaque) {
  struct vmm__lapics *l = opaque;
  /* The hub first: second local APICs are -VMM_EEXIST, not an overlap. */
  int err = vmm__irqchip_attach_lapic(l->vm, l);
  if (err == 0)
    err = vmm_dev_io_register(dev, VMM_IO_MMIO, l->base, WINDOW, on_mmio, l);
  return err;
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct vmm__lapics *l = opaque;
  (void)dev;
  vmm__irqchip_detach_lapic(l->vm, l);
  for (unsigned i = 0; i < l->n; i++)
    vmm__timer_fini(l->vm->clock, &l->a[i].timer);
  free(l->a);
  free(l);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct vmm__lapics *l = opaque;
  (void)dev;
  vmm__irqchip_lock(l->hub);
  for (unsigned i = 0; i < l->n; i++)
    apic_reset(&l->a[i], true);
  vmm__irqchip_unlock(l->hub);
}

static json_t *words(const uint32_t *w, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a != NULL && i < n; i++)
    if (json_array_append_new(a, json_integer(w[i])) < 0) {
      json_decref(a);
      return NULL;
    }
  return a;
}

static json_t *apic_save(const struct apic *a, int64_t t) {
  /* -1: not running; an overdue timer is saved due now (0). */
  int64_t remaining = -1, elapsed = 0;
  if (a->deadline >= 0) {
    remaining = a->deadline > t ? a->deadline - t : 0;
    elapsed = t > a->start ? t - a->start : 0;
  }
  return json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, "
      "s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}",
      "id", (json_int_t)a->id, "tpr", (json_int_t)a->tpr, "ldr",
      (json_int_t)a->ldr, "dfr", (json_int_t)a->dfr, "svr", (json_int_t)a->svr,
      "esr", (json_int_t)a->esr, "esr_pending", (json_int_t)a->esr_pending,
      "icr_lo", (json_int_t)a->icr_lo, "icr_hi", (json_int_t)a->icr_hi, "lvt",
      words(a->lvt, NLVT), "irr", words(a->irr, 8), "isr", words(a->isr, 8),
      "tmr", words(a->tmr, 8), "tmict", (json_int_t)a->tmict, "tdcr",
      (json_int_t)a->tdcr, "timer_elapsed_ns", (json_int_t)elapsed,
      "timer_remaining_ns", (json_int_t)remaining, "tsc_deadline",
      (json_int_t)a->tsc_deadline, "missed", (json_int_t)a->missed,
      "lint0_level", a->lint0_level, "extint_latched", a->extint_latched);
}

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct vmm__lapics *l = opaque;
  (void)dev;
  json_t *cpus = json_array();
  vmm__irqchip_lock(l->hub);
  int64_t t = vmm__clock_now(l->vm->clock);
  for (unsigned i = 0; cpus != NULL && i < l->n; i++) {
    json_t *c = apic_save(&l->a[i], t);
    if (c == NULL || json_array_append_new(cpus, c) < 0) {
      json_decref(cpus);
      cpus = NULL;
    }
  }
  vmm__irqchip_unlock(l->hub);
  if (cpus == NULL)
    return VMM_ENOMEM;
  *out =
      json_pack("{s:s, s:i, s:o}", "type", "lapic", "version", 1, "cpus", cpus);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int load_words(const json_t *o, const char *key, uint32_t *w, size_t n,
                      const uint32_t *allowed) {
  json_t *a = json_object_get(o, key);
  if (!json_is_array(a) || json_array_size(a) != n)
    return VMM_EINVAL;
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(a, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > UINT32_MAX)
      return VMM_EINVAL;
    w[i] = (uint32_t)json_integer_value(v);
    if (allowed != NULL && (w[i] & ~allowed[i]))
      return VMM_EINVAL;
  }
  return 0;
}

static int u32(const json_t *o, const char *key, uint32_t allowed,
               uint32_t *out) {
  uint64_t v;
  if (vmm__json_uint(o, key, UINT32_MAX, &v) < 0 || (v & ~(uint64_t)allowed))
    return VMM_EINVAL;
  *out = (uint32_t)v;
  return 0;
}

/* Parse one APIC's saved state into a (timer fields relative to now). */
static int apic_load(const json_t *o, struct apic *a, int64_t *elapsed,
                     int64_t *remaining, uint32_t timer_mask) {
  uint32_t lvt_allowed[NLVT];
  memcpy(lvt_allowed, lvt_writable, sizeof(lvt_allowed));
  lvt_allowed[LVT_TIMER] = timer_mask | (1u << 12);
  for (unsigned k = 1; k < NLVT; k++)
    lvt_allowed[k] |= (1u << 12) | (1u << 14);
  uint64_t el, tscd, missed;
  json_int_t rem;
  json_t *r = json_object_get(o, "timer_remaining_ns");
  if (!json_is_object(o) || u32(o, "id", 0xff000000u, &a->id) < 0 ||
      u32(o, "tpr", 0xff, &a->tpr) < 0 ||
      u32(o, "ldr", 0xff000000u, &a->ldr) < 0 ||
      u32(o, "dfr", UINT32_MAX, &a->dfr) < 0 ||
      (a->dfr & 0x0fffffffu) != 0x0fffffffu ||
      u32(o, "svr", SVR_WRITABLE, &a->svr) < 0 ||
      u32(o, "esr", 0xe0, &a->esr) < 0 ||
      u32(o, "esr_pending", 0xe0, &a->esr_pending) < 0 ||
      u32(o, "icr_lo", ICR_WRITABLE, &a->icr_lo) < 0 ||
      u32(o, "icr_hi", 0xff000000u, &a->icr_hi) < 0 ||
      load_words(o, "lvt", a->lvt, NLVT, lvt_allowed) < 0 ||
      load_words(o, "irr", a->irr, 8, NULL) < 0 ||
      load_words(o, "isr", a->isr, 8, NULL) < 0 ||
      load_words(o, "tmr", a->tmr, 8, NULL) < 0 ||
      u32(o, "tmict", UINT32_MAX, &a->tmict) < 0 ||
      u32(o, "tdcr", 0xb, &a->tdcr) < 0 ||
      vmm__json_uint(o, "timer_elapsed_ns", INT64_MAX / 4, &el) < 0 ||
      !json_is_integer(r) || (rem = json_integer_value(r)) < -1 ||
      rem > INT64_MAX / 4 ||
      !json_is_integer(json_object_get(o, "tsc_deadline")) ||
      vmm__json_uint(o, "missed", 1000, &missed) < 0 ||
      vmm__json_bool(o, "lint0_level", &a->lint0_level) < 0 ||
      vmm__json_bool(o, "extint_latched", &a->extint_latched) < 0)
    return VMM_EINVAL;
  /* Vectors 0-15 never enter IRR or ISR. */
  if ((a->irr[0] & 0xffff) || (a->isr[0] & 0xffff))
    return VMM_EINVAL;
  /* Any 64-bit value (JSON integers are signed: saved as its bits). */
  tscd = (uint64_t)json_integer_value(json_object_get(o, "tsc_deadline"));
  a->tsc_deadline = tscd;
  a->missed = (uint32_t)missed;
  *elapsed = (int64_t)el;
  *remaining = rem;
  return 0;
}

static int restore(vmm_dev *dev, const json_t *st, void *opaque) {
  struct vmm__lapics *l = opaque;
  (void)dev;
  json_t *cpus = json_object_get(st, "cpus");
  if (vmm__json_header(st, "lapic", 1) < 0 || !json_is_array(cpus) ||
      json_array_size(cpus) != l->n)
    return VMM_EINVAL;
  struct apic *na = calloc(l->n, sizeof(*na));
  int64_t *el = calloc(l->n, sizeof(*el)), *rem = calloc(l->n, sizeof(*rem));
  int err = VMM_ENOMEM;
  if (na == NULL || el == NULL || rem == NULL)
    goto out;
  uint32_t timer_mask = lvt_writable[LVT_TIMER];
  if (l->tsc_khz == 0)
    timer_mask &= ~TIMER_TSC_DEADLINE;
  err = 0;
  for (unsigned i = 0; i < l->n && err == 0; i++)
    err =
        apic_load(json_array_get(cpus, i), &na[i], &el[i], &rem[i], timer_mask);
  if (err < 0)
    goto out;
  vmm__irqchip_lock(l->hub);
  int64_t t = vmm__clock_now(l->vm->clock);
  for (unsigned i = 0; i < l->n; i++) {
    struct apic *a = &l->a[i];
    /* Field by field: the clock may be walking a->timer right now. */
    const struct apic *n = &na[i];
    a->id = n->id;
    a->tpr = n->tpr;
    a->ldr = n->ldr;
    a->dfr = n->dfr;
    a->svr = n->svr;
    a->esr = n->esr;
    a->esr_pending = n->esr_pending;
    a->icr_lo = n->icr_lo;
    a->icr_hi = n->icr_hi;
    memcpy(a->lvt, n->lvt, sizeof(a->lvt));
    memcpy(a->irr, n->irr, sizeof(a->irr));
    memcpy(a->isr, n->isr, sizeof(a->isr));
    memcpy(a->tmr, n->tmr, sizeof(a->tmr));
    a->tmict = n->tmict;
    a->tdcr = n->tdcr;
    a->tsc_deadline = n->tsc_deadline;
    a->lint0_level = n->lint0_level;
    a->extint_latched = n->extint_latched;
    a->start = t - el[i];
    if (rem[i] >= 0)
      timer_arm(a, t + rem[i]);
    else
      timer_stop(a);
    a->missed = n->missed; /* after timer_stop(), which clears it */
    vmm_vcpu *v = vmm__irqchip_vcpu(l->hub, i);
    if (v != NULL)
      atomic_store(&v->tpr, a->tpr);
    vmm__irqchip_dirty(l->hub, i);
  }
  vmm__irqchip_unlock(l->hub);
out:
  free(rem);
  free(el);
  free(na);
  return err;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct vmm__lapics *l = opaque;
  (void)dev;
  vmm__irqchip_lock(l->hub);
  *out = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I}", "ipis", (json_int_t)l->ipis,
      "ipi_dropped", (json_int_t)l->ipi_dropped, "timer_irqs",
      (json_int_t)l->timer_irqs, "coalesced", (json_int_t)l->coalesced,
      "bad_access", (json_int_t)l->bad_access, "errors", (json_int_t)l->errors);
  vmm__irqchip_unlock(l->hub);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops lapic_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "lapic",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_lapic_create(vmm_vm *vm, const struct vmm_lapic_config *user,
                     vmm_dev **out) {
  struct vmm_lapic_config cfg;
  vmm_lapic_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0 ||
      (cfg.base & (WINDOW - 1)) != 0 || cfg.base + WINDOW < cfg.base ||
      cfg.timer_hz < 1000000ull || cfg.timer_hz > 10000000000ull)
    return VMM_EINVAL;
  if (vm->irqchip == NULL)
    return VMM_ENOTSUP;
  struct vmm__lapics *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return VMM_ENOMEM;
  l->vm = vm;
  l->hub = vm->irqchip;
  l->base = cfg.base;
  l->timer_hz = cfg.timer_hz;
  l->tsc_khz = vm->tsc_khz;
  l->n = vm->cfg.max_vcpus;
  l->a = calloc(l->n, sizeof(*l->a));
  if (l->a == NULL) {
    free(l);
    return VMM_ENOMEM;
  }
  for (unsigned i = 0; i < l->n; i++) {
    struct apic *a = &l->a[i];
    a->l = l;
    a->index = i;
    vmm__timer_init(&a->timer, on_timer, a);
    /* Not reachable yet: nothing else to tell. */
    a->deadline = -1;
    apic_regs_reset(a, true);
  }
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "lapic", &lapic_ops,
                        l, out);
}
