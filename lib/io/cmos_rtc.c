/*
 * CMOS memory and MC146818-compatible real-time clock. See
 * include/libvmm/cmos_rtc.h and docs/devices.md.
 *
 * The clock is not a ticking counter: the guest time is "source clock +
 * offset", computed when read. Setting the time changes the offset. The
 * status flags of register C are brought up to date ("caught up") whenever
 * the guest looks at the RTC and from a timer on the loop while interrupts
 * are enabled, so polling guests need no timer at all.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "../internal.h"

#define NS 1000000000ll

/* Registers. */
#define R_SEC 0x00
#define R_SEC_ALARM 0x01
#define R_MIN 0x02
#define R_MIN_ALARM 0x03
#define R_HOUR 0x04
#define R_HOUR_ALARM 0x05
#define R_DOW 0x06
#define R_DAY 0x07
#define R_MONTH 0x08
#define R_YEAR 0x09
#define R_A 0x0a
#define R_B 0x0b
#define R_C 0x0c
#define R_D 0x0d
#define R_CENTURY 0x32

#define A_UIP 0x80
#define A_DV_NORMAL 0x20 /* divider bits 6:4 = 010: 32.768 kHz, running */
#define B_SET 0x80
#define B_PIE 0x40
#define B_AIE 0x20
#define B_UIE 0x10
#define B_DM_BINARY 0x04
#define B_24H 0x02
#define C_IRQF 0x80
#define C_PF 0x40
#define C_AF 0x20
#define C_UF 0x10
#define D_VRT 0x80

/* UIP is set this long before each update (MC146818 datasheet). */
#define UIP_NS 244000ll

struct cmos {
  vmm_vm *vm;
  vmm_dev *dev;
  struct vmm_cmos_config cfg;
  pthread_mutex_t lock;

  uint8_t index;
  bool nmi_disabled; /* recorded only: there is no NMI source to gate */
  uint8_t ram[128];
  bool mem_stale; /* memory bytes to be computed from the slots */

  int64_t offset_ns;    /* guest time = source + offset */
  int64_t mono_base_ns; /* default source: real_base + (mono - mono_base) */
  int64_t real_base_ns;
  int64_t last_check_ns; /* guest time the flags were brought up to */

  /* Interrupt timer, on the VM's loop; timer fields used on the loop. */
  vmm_loop *loop;
  struct vmm__work timer_work;
  uv_timer_t *timer;

  uint64_t reads, writes, irqs;
};

static const struct vmm_dev_ops cmos_ops;

void vmm_cmos_config_init(struct vmm_cmos_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "cmos";
  cfg->base = 0x70;
  cfg->gsi = 8;
}

/* ------------------------------------------------------------------------ */
/* Time                                                                     */

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t source_ns(const struct cmos *c) {
  if (c->cfg.clock_fn != NULL)
    return c->cfg.clock_fn(c->cfg.clock_opaque);
  return c->real_base_ns + (clock_ns(CLOCK_MONOTONIC) - c->mono_base_ns);
}

static int64_t guest_ns(const struct cmos *c) {
  return source_ns(c) + c->offset_ns;
}

static bool binary(const struct cmos *c) {
  return (c->ram[R_B] & B_DM_BINARY) != 0;
}

static uint8_t enc(const struct cmos *c, int v) {
  return binary(c) ? (uint8_t)v : (uint8_t)((v / 10) << 4 | v % 10);
}

/* Guest-written values are untrusted: bad BCD digits are clamped. */
static int dec(const struct cmos *c, uint8_t b) {
  if (binary(c))
    return b;
  int hi = b >> 4, lo = b & 0xf;
  return (hi > 9 ? 9 : hi) * 10 + (lo > 9 ? 9 : lo);
}

static int clamp(int v, int lo, int hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

static uint8_t enc_hour(const struct cmos *c, int h) {
  if (c->ram[R_B] & B_24H)
    return enc(c, h);
  int h12 = h % 12 == 0 ? 12 : h % 12;
  return (uint8_t)(enc(c, h12) | (h >= 12 ? 0x80 : 0));
}

static int dec_hour(const struct cmos *c, uint8_t b) {
  if (c->ram[R_B] & B_24H)
    return clamp(dec(c, b), 0, 23);
  int h = clamp(dec(c, b & 0x7f), 1, 12) % 12;
  return (b & 0x80) ? h + 12 : h;
}

static void tm_at(int64_t ns, struct tm *tm) {
  time_t t = (time_t)floor_div(ns, NS);
  if (gmtime_r(&t, tm) == NULL)
    memset(tm, 0, sizeof(*tm)); /* beyond what struct tm can hold */
}

/* The value of a time register at guest time ns. */
static uint8_t time_reg(const struct cmos *c, uint8_t idx, int64_t ns) {
  struct tm tm;
  tm_at(ns, &tm);
  int year = tm.tm_year + 1900;
  switch (idx) {
  case R_SEC: return enc(c, tm.tm_sec > 59 ? 59 : tm.tm_sec);
  case R_MIN: return enc(c, tm.tm_min);
  case R_HOUR: return enc_hour(c, tm.tm_hour);
  case R_DOW: return enc(c, tm.tm_wday + 1);
  case R_DAY: return enc(c, tm.tm_mday);
  case R_MONTH: return enc(c, tm.tm_mon + 1);
  case R_YEAR: return enc(c, ((year % 100) + 100) % 100);
  case R_CENTURY: return enc(c, clamp(year / 100, 0, 99));
  }
  return 0;
}

static bool is_time_reg(uint8_t idx) {
  return idx == R_SEC || idx == R_MIN || idx == R_HOUR || idx == R_DOW ||
         idx == R_DAY || idx == R_MONTH || idx == R_YEAR || idx == R_CENTURY;
}

/* Copy the running time into the registers (for SET, or before a write). */
static void latch(struct cmos *c) {
  static const uint8_t regs[] = {R_SEC, R_MIN,   R_HOUR, R_DOW,
                                 R_DAY, R_MONTH, R_YEAR, R_CENTURY};
  int64_t now = guest_ns(c);
  for (size_t i = 0; i < sizeof(regs); i++)
    c->ram[regs[i]] = time_reg(c, regs[i], now);
}

/* Make the time in the registers the running time. */
static void commit(struct cmos *c) {
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  tm.tm_sec = clamp(dec(c, c->ram[R_SEC]), 0, 59);
  tm.tm_min = clamp(dec(c, c->ram[R_MIN]), 0, 59);
  tm.tm_hour = dec_hour(c, c->ram[R_HOUR]);
  tm.tm_mday = clamp(dec(c, c->ram[R_DAY]), 1, 31);
  tm.tm_mon = clamp(dec(c, c->ram[R_MONTH]), 1, 12) - 1;
  /* 1900-2199: what nanoseconds since 1970 in 64 bits can hold. */
  int year = clamp(dec(c, c->ram[R_CENTURY]), 19, 21) * 100 +
             clamp(dec(c, c->ram[R_YEAR]), 0, 99);
  tm.tm_year = year - 1900;
  int64_t t = (int64_t)timegm(&tm);
  c->offset_ns = t * NS - source_ns(c);
  c->last_check_ns = t * NS;
}

static bool running(const struct cmos *c) {
  return (c->ram[R_A] & 0x70) == A_DV_NORMAL;
}

static bool uip(const struct cmos *c) {
  if (!running(c) || (c->ram[R_B] & B_SET))
    return false;
  int64_t ns = guest_ns(c);
  return ns - floor_div(ns, NS) * NS >= NS - UIP_NS;
}

/* Periodic interrupt period for rate select rs, 0 if off. */
static int64_t period_ns(unsigned rs) {
  if (rs == 0)
    return 0;
  if (rs < 3)
    rs += 7; /* 1 and 2 repeat 8 and 9 with a 32.768 kHz base */
  return (int64_t)((1000000000ull << (rs - 1)) / 32768);
}

static bool alarm_field(uint8_t alarm, uint8_t now) {
  return (alarm & 0xc0) == 0xc0 || alarm == now; /* 11xxxxxx: any value */
}

/* ------------------------------------------------------------------------ */
/* Flags and the interrupt                                                  */

static void update_irq(struct cmos *c) {
  uint8_t pending = c->ram[R_C] & c->ram[R_B] & (C_PF | C_AF | C_UF);
  if (pending && !(c->ram[R_C] & C_IRQF)) {
    c->ram[R_C] |= C_IRQF;
    c->irqs++;
  }
  vmm_dev_irq_set(c->dev, c->cfg.gsi, (c->ram[R_C] & C_IRQF) != 0);
}

/* Set the flags of events between the last check and now. */
static void catch_up(struct cmos *c) {
  int64_t now = guest_ns(c), last = c->last_check_ns;
  c->last_check_ns = now;
  if (now <= last || !running(c))
    return; /* clock set backwards, or divider stopped */
  int64_t period = period_ns(c->ram[R_A] & 0xf);
  if (period != 0 && floor_div(now, period) > floor_div(last, period))
    c->ram[R_C] |= C_PF;
  if (!(c->ram[R_B] & B_SET) && floor_div(now, NS) > floor_div(last, NS)) {
    c->ram[R_C] |= C_UF;
    /* The alarm is checked against the current second: the timer runs at
       least once a second while AIE is set, so no second goes unseen. */
    if (alarm_field(c->ram[R_SEC_ALARM], time_reg(c, R_SEC, now)) &&
        alarm_field(c->ram[R_MIN_ALARM], time_reg(c, R_MIN, now)) &&
        alarm_field(c->ram[R_HOUR_ALARM], time_reg(c, R_HOUR, now)))
      c->ram[R_C] |= C_AF;
  }
}

/* Milliseconds until the timer must next look, or -1 for no timer. */
static int64_t timer_delay_ms(const struct cmos *c) {
  uint8_t b = c->ram[R_B];
  if (!(b & (B_PIE | B_AIE | B_UIE)) || !running(c))
    return -1;
  int64_t ns = guest_ns(c);
  int64_t next = NS - (ns - floor_div(ns, NS) * NS); /* next second */
  int64_t period = period_ns(c->ram[R_A] & 0xf);
  if ((b & B_PIE) && period != 0 && period < next)
    next = period;
  int64_t ms = (next + 999999) / 1000000;
  return ms < 1 ? 1 : ms; /* uv timers have millisecond resolution */
}

static void on_timer(uv_timer_t *t) {
  struct cmos *c = t->data;
  pthread_mutex_lock(&c->lock);
  catch_up(c);
  update_irq(c);
  int64_t ms = timer_delay_ms(c);
  pthread_mutex_unlock(&c->lock);
  if (ms >= 0)
    uv_timer_start(t, on_timer, (uint64_t)ms, 0);
}

/* Loop thread: start or stop the timer as the registers now ask. */
static void timer_sync(struct vmm__work *w) {
  struct cmos *c =
      (struct cmos *)((char *)w - offsetof(struct cmos, timer_work));
  pthread_mutex_lock(&c->lock);
  int64_t ms = timer_delay_ms(c);
  pthread_mutex_unlock(&c->lock);
  if (ms < 0) {
    if (c->timer != NULL)
      uv_timer_stop(c->timer);
    return;
  }
  if (c->timer == NULL) {
    uv_timer_t *t = malloc(sizeof(*t));
    if (t == NULL || uv_timer_init(vmm_loop_uv(c->loop), t) < 0) {
      free(t);
      vmm__log(c->vm, VMM_LOG_ERROR, "cmos: cannot create the RTC timer");
      return;
    }
    t->data = c;
    /* Device timers never keep the host's loop alive by themselves. */
    uv_unref((uv_handle_t *)t);
    c->timer = t;
  }
  uv_timer_start(c->timer, on_timer, (uint64_t)ms, 0);
}

/* After a change to A or B: (re)arm the timer on the loop. Not under the
   lock (vmm_vm_get_loop() takes the VM's lock). */
static void timer_kick(struct cmos *c) {
  pthread_mutex_lock(&c->lock);
  vmm_loop *loop = c->loop;
  bool idle = loop == NULL && timer_delay_ms(c) < 0;
  pthread_mutex_unlock(&c->lock);
  if (idle)
    return; /* no timer wanted, none armed: no loop needed either */
  if (loop == NULL) {
    if (vmm_vm_get_loop(c->vm, &loop) < 0) {
      vmm__log(c->vm, VMM_LOG_WARN,
               "cmos: no event loop, RTC interrupts are not delivered");
      return;
    }
    pthread_mutex_lock(&c->lock);
    if (c->loop == NULL)
      c->loop = loop;
    pthread_mutex_unlock(&c->lock);
  }
  vmm__loop_post(loop, &c->timer_work);
}

/* ------------------------------------------------------------------------ */
/* Memory size bytes                                                        */

/* Bytes of RAM contiguous from addr, up to limit (0 if addr has none). */
static uint64_t contiguous(const struct vmm_mem_slot_info *s, size_t n,
                           uint64_t addr, uint64_t limit) {
  uint64_t end = addr;
  for (size_t i = 0; i < n; i++) {
    if (s[i].gpa <= end && s[i].gpa + s[i].size > end)
      end = s[i].gpa + s[i].size; /* slots are sorted: keep extending */
  }
  if (end > limit)
    end = limit;
  return end > addr ? end - addr : 0;
}

static void put16(uint8_t *p, uint64_t v, uint64_t max) {
  v = v > max ? max : v;
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void compute_memory(struct cmos *c) {
  struct vmm_mem_slot_info s[VMM_MEM_MAX_SLOTS];
  size_t n = VMM_MEM_MAX_SLOTS;
  if (vmm_mem_slot_list(c->vm, s, &n) < 0)
    n = 0; /* cannot happen: the array holds the most slots a VM has */
  const uint64_t kib = 1024, mib = 1024 * kib, gib = 1024 * mib;
  put16(&c->ram[0x15], contiguous(s, n, 0, 640 * kib) / kib, 640);
  uint64_t ext = contiguous(s, n, mib, UINT64_MAX) / kib;
  put16(&c->ram[0x17], ext, 0xffff);
  put16(&c->ram[0x30], ext, 0xffff);
  put16(&c->ram[0x34], contiguous(s, n, 16 * mib, 4 * gib) / (64 * kib),
        0xffff);
  uint64_t high = contiguous(s, n, 4 * gib, UINT64_MAX) / (64 * kib);
  if (high > 0xffffff)
    high = 0xffffff;
  c->ram[0x5b] = (uint8_t)high;
  c->ram[0x5c] = (uint8_t)(high >> 8);
  c->ram[0x5d] = (uint8_t)(high >> 16);
}

/* ------------------------------------------------------------------------ */
/* Register access                                                          */

/* Returns true when the interrupt timer must be re-evaluated. */
static bool reg_write(struct cmos *c, uint8_t idx, uint8_t v) {
  c->writes++;
  switch (idx) {
  case R_A:
    catch_up(c);
    update_irq(c);
    c->ram[R_A] = v & 0x7f; /* UIP is read-only */
    return true;
  case R_B: {
    catch_up(c);
    uint8_t old = c->ram[R_B];
    if ((v & B_SET) && !(old & B_SET))
      latch(c);
    if (v & B_SET)
      v &= (uint8_t)~B_UIE; /* SET clears UIE */
    c->ram[R_B] = v;
    if (!(v & B_SET) && (old & B_SET))
      commit(c);
    update_irq(c);
    return true;
  }
  case R_C:
  case R_D: return false; /* read-only */
  default: break;
  }
  if (is_time_reg(idx) && !(c->ram[R_B] & B_SET)) {
    latch(c);
    c->ram[idx] = v;
    commit(c);
    return false;
  }
  c->ram[idx] = v;
  return false;
}

static uint8_t reg_read(struct cmos *c, uint8_t idx) {
  c->reads++;
  switch (idx) {
  case R_A: return (uint8_t)(c->ram[R_A] | (uip(c) ? A_UIP : 0));
  case R_C: {
    catch_up(c);
    update_irq(c);
    uint8_t v = c->ram[R_C];
    c->ram[R_C] = 0; /* reading C acknowledges the interrupt */
    update_irq(c);
    return v;
  }
  case R_D: return D_VRT;
  default: break;
  }
  if (is_time_reg(idx) && !(c->ram[R_B] & B_SET))
    return time_reg(c, idx, guest_ns(c));
  return c->ram[idx];
}

static void byte_io(void *dev, uint64_t port, uint8_t *b, bool is_write) {
  struct cmos *c = dev;
  if (c->mem_stale) {
    compute_memory(c);
    c->mem_stale = false;
  }
  if (port == c->cfg.base) {
    if (is_write) {
      c->index = *b & 0x7f;
      c->nmi_disabled = (*b & 0x80) != 0;
    } else {
      *b = 0xff; /* the index register is write-only */
    }
    return;
  }
  if (is_write) {
    reg_write(c, c->index, *b);
  } else {
    *b = reg_read(c, c->index);
  }
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct cmos *c = opaque;
  (void)vcpu;
  pthread_mutex_lock(&c->lock);
  uint8_t b = c->ram[R_B], a = c->ram[R_A];
  vmm__io_bytes(c, port, data, len, is_write, byte_io);
  bool rearm = ((c->ram[R_B] ^ b) & (B_PIE | B_AIE | B_UIE | B_SET)) != 0 ||
               ((c->ram[R_A] ^ a) & 0x7f) != 0;
  pthread_mutex_unlock(&c->lock);
  if (rearm)
    timer_kick(c);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

static void reset_locked(struct cmos *c) {
  /* Time and the memory contents survive a reset; registers do not. */
  c->ram[R_A] = A_DV_NORMAL | 0x06; /* 1024 Hz periodic rate */
  c->ram[R_B] = B_24H;
  c->ram[R_C] = 0;
  c->index = 0;
  c->nmi_disabled = false;
  c->mem_stale = true;
  c->last_check_ns = guest_ns(c);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct cmos *c = opaque;
  (void)dev;
  pthread_mutex_lock(&c->lock);
  reset_locked(c);
  update_irq(c);
  pthread_mutex_unlock(&c->lock);
  timer_kick(c);
}

static int realize(vmm_dev *dev, void *opaque) {
  struct cmos *c = opaque;
  c->dev = dev;
  return vmm_dev_io_register(dev, VMM_IO_PORT, c->cfg.base, 2, on_io, c);
}

static void close_timer(uv_handle_t *h) {
  free(h);
}

/* Loop thread: nothing of the device may stay queued or armed. */
static void teardown_on_loop(vmm_loop *loop, void *opaque) {
  struct cmos *c = opaque;
  vmm__loop_cancel(loop, &c->timer_work);
  if (c->timer != NULL)
    uv_close((uv_handle_t *)c->timer, close_timer);
  c->timer = NULL;
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct cmos *c = opaque;
  (void)dev;
  if (c->loop != NULL)
    vmm_loop_call(c->loop, teardown_on_loop, c);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

#define STATE_VERSION 1

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct cmos *c = opaque;
  (void)dev;
  pthread_mutex_lock(&c->lock);
  catch_up(c);
  uint8_t ram[128];
  memcpy(ram, c->ram, sizeof(ram));
  if (!(ram[R_B] & B_SET)) {
    /* Saved as the guest would read them. */
    int64_t now = guest_ns(c);
    for (uint8_t i = 0; i < 128; i++)
      if (is_time_reg(i))
        ram[i] = time_reg(c, i, now);
  }
  *out = json_pack("{s:s, s:i, s:o*, s:i, s:b, s:b, s:I}", "type", "cmos",
                   "version", STATE_VERSION, "ram",
                   vmm__json_from_bytes(ram, sizeof(ram)), "index", c->index,
                   "nmi_disabled", c->nmi_disabled, "mem_stale", c->mem_stale,
                   "time_ns", (json_int_t)guest_ns(c));
  pthread_mutex_unlock(&c->lock);
  if (*out != NULL && json_object_get(*out, "ram") == NULL) {
    json_decref(*out);
    *out = NULL;
  }
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int restore(vmm_dev *dev, const json_t *in, void *opaque) {
  struct cmos *c = opaque;
  uint8_t ram[128];
  size_t len;
  uint64_t index;
  bool nmi, stale;
  (void)dev;
  json_t *t = json_object_get(in, "time_ns");
  /* The clock's range (1900-2199): the offset must not overflow. */
  static const int64_t t_min = -2208988800ll * NS, t_max = 7258118400ll * NS;
  if (vmm__json_header(in, "cmos", STATE_VERSION) < 0 ||
      vmm__json_bytes(in, "ram", ram, sizeof(ram), &len) < 0 ||
      len != sizeof(ram) || vmm__json_uint(in, "index", 127, &index) < 0 ||
      vmm__json_bool(in, "nmi_disabled", &nmi) < 0 ||
      vmm__json_bool(in, "mem_stale", &stale) < 0 || !json_is_integer(t) ||
      json_integer_value(t) < t_min || json_integer_value(t) >= t_max)
    return VMM_EINVAL;
  pthread_mutex_lock(&c->lock);
  memcpy(c->ram, ram, sizeof(ram));
  c->ram[R_A] &= 0x7f;
  c->index = (uint8_t)index;
  c->nmi_disabled = nmi;
  c->mem_stale = stale;
  c->offset_ns = (int64_t)json_integer_value(t) - source_ns(c);
  c->last_check_ns = guest_ns(c);
  update_irq(c);
  pthread_mutex_unlock(&c->lock);
  timer_kick(c);
  return 0;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct cmos *c = opaque;
  (void)dev;
  pthread_mutex_lock(&c->lock);
  *out = json_pack("{s:I, s:I, s:I}", "reads", (json_int_t)c->reads, "writes",
                   (json_int_t)c->writes, "irqs", (json_int_t)c->irqs);
  pthread_mutex_unlock(&c->lock);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops cmos_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "cmos",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_cmos_create(vmm_vm *vm, const struct vmm_cmos_config *user,
                    vmm_dev **out) {
  struct vmm_cmos_config cfg;
  vmm_cmos_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  if (cfg.base > 0xfffe || cfg.gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  struct cmos *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return VMM_ENOMEM;
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return VMM_ENOMEM;
  }
  c->vm = vm;
  c->cfg = cfg;
  c->cfg.name = NULL;
  vmm__work_init(&c->timer_work, timer_sync);
  c->mono_base_ns = clock_ns(CLOCK_MONOTONIC);
  c->real_base_ns =
      cfg.start_time != 0 ? cfg.start_time * NS : clock_ns(CLOCK_REALTIME);
  if (cfg.clock_fn != NULL && cfg.start_time != 0)
    c->offset_ns = cfg.start_time * NS - cfg.clock_fn(cfg.clock_opaque);
  reset_locked(c);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "cmos", &cmos_ops, c,
                        out);
}

static struct cmos *cmos_of(vmm_dev *dev) {
  return vmm__dev_data(dev, &cmos_ops);
}

int vmm_cmos_read(vmm_dev *dev, uint8_t index, uint8_t *value) {
  struct cmos *c = cmos_of(dev);
  if (c == NULL || value == NULL || index > 127)
    return VMM_EINVAL;
  pthread_mutex_lock(&c->lock);
  if (c->mem_stale) {
    compute_memory(c);
    c->mem_stale = false;
  }
  *value = reg_read(c, index);
  pthread_mutex_unlock(&c->lock);
  return 0;
}

int vmm_cmos_write(vmm_dev *dev, uint8_t index, uint8_t value) {
  struct cmos *c = cmos_of(dev);
  if (c == NULL || index > 127)
    return VMM_EINVAL;
  pthread_mutex_lock(&c->lock);
  if (c->mem_stale) {
    compute_memory(c);
    c->mem_stale = false;
  }
  bool rearm = reg_write(c, index, value);
  pthread_mutex_unlock(&c->lock);
  if (rearm)
    timer_kick(c);
  return 0;
}
