/*
 * 16550A UART register model. See include/libvmm/uart16550.h for the
 * model's choices and docs/devices.md for the data flow. Backends are in
 * uart_backend.c.
 *
 * All register state is under u->lock. The guest's accesses (vCPU
 * threads), backend input (loop thread) and the host's vmm_uart_input()
 * (any thread) all take it; output to synchronous backends and wake-ups of
 * the loop happen after it is released.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "uart.h"

/* Register offsets. */
#define R_RBR_THR 0
#define R_IER 1
#define R_IIR_FCR 2
#define R_LCR 3
#define R_MCR 4
#define R_LSR 5
#define R_MSR 6
#define R_SCR 7

#define IER_ERBFI 0x01
#define IER_ETBEI 0x02
#define IER_ELSI 0x04
#define IER_EDSSI 0x08

#define IIR_NONE 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_CTI 0x0c
#define IIR_FIFO 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_ERRORS 0x1e /* OE, PE, FE, BI */
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_FIFOERR 0x80

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

static const uint8_t trigger_levels[4] = {1, 4, 8, 14};

static const struct vmm_dev_ops uart_ops;

void vmm_uart_config_init(struct vmm_uart_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "com1";
  cfg->base = 0x3f8;
  cfg->gsi = 4;
  cfg->backend = VMM_UART_NONE;
  cfg->in_fd = 0;
  cfg->out_fd = 1;
  cfg->raw = true;
  cfg->fd = -1;
}

/* ------------------------------------------------------------------------ */
/* FIFOs and queues (lock held)                                             */

static void ring_push(struct uart_ring *r, uint8_t b) {
  r->buf[(r->head + r->count) % UART_FIFO] = b;
  r->count++;
}

static uint8_t ring_pop(struct uart_ring *r) {
  uint8_t b = r->buf[r->head];
  r->head = (r->head + 1) % UART_FIFO;
  r->count--;
  return b;
}

static void ring_clear(struct uart_ring *r) {
  r->head = r->count = 0;
}

static unsigned rx_depth(const struct uart *u) {
  return u->fifo_enabled ? UART_FIFO : 1;
}

static bool loopback(const struct uart *u) {
  return u->mcr & MCR_LOOP;
}

/* A byte arrives at the receiver. Returns false on overrun. */
static bool rx_wire(struct uart *u, uint8_t b) {
  if (u->rx.count >= rx_depth(u)) {
    u->lsr_err |= LSR_OE;
    u->overruns++;
    /* FIFO mode keeps the FIFO and loses the new byte; a 16450-style
       holding register is overwritten. */
    if (!u->fifo_enabled)
      u->rx.buf[u->rx.head] = b;
    return false;
  }
  ring_push(&u->rx, b);
  u->rx_bytes++;
  return true;
}

/* Move queued input into the receiver while there is room. Returns true
   when a backend waiting for room must be woken. */
static bool rx_fill(struct uart *u) {
  if (loopback(u))
    return false; /* serial input is disconnected in loopback */
  while (u->inq_count > 0 && u->rx.count < rx_depth(u)) {
    ring_push(&u->rx, u->inq[u->inq_head]);
    u->rx_bytes++;
    u->inq_head = (u->inq_head + 1) % VMM_UART_INPUT_QUEUE;
    u->inq_count--;
  }
  if (u->rx_wanted && u->inq_count < VMM_UART_INPUT_QUEUE) {
    u->rx_wanted = false;
    return true;
  }
  return false;
}

static size_t inq_put(struct uart *u, const uint8_t *buf, size_t len) {
  size_t n = 0;
  while (n < len && u->inq_count < VMM_UART_INPUT_QUEUE) {
    u->inq[(u->inq_head + u->inq_count) % VMM_UART_INPUT_QUEUE] = buf[n++];
    u->inq_count++;
  }
  return n;
}

/* Queue input and move what fits into the receiver: takes as much as the
   queue and the receive FIFO together hold. Returns the bytes taken. */
static size_t input_locked(struct uart *u, const uint8_t *buf, size_t len) {
  size_t n = 0;
  for (;;) {
    n += inq_put(u, buf + n, len - n);
    size_t queued = u->inq_count;
    rx_fill(u);
    if (n == len || u->inq_count == queued)
      return n;
  }
}

/* What one guest access produced for after the lock is released. */
struct io_ctx {
  struct uart *u;
  uint8_t out[UART_FIFO * 2];
  size_t nout;
  bool kick_tx, kick_rx;
};

/* Send what the TX FIFO holds: looped back, queued for an asynchronous
   backend, or collected for a synchronous one. */
static void tx_drain(struct uart *u, struct io_ctx *ctx) {
  bool had = u->tx.count > 0;
  if (loopback(u)) {
    while (u->tx.count > 0) {
      u->tx_bytes++;
      rx_wire(u, ring_pop(&u->tx));
    }
  } else if (u->outq != NULL) {
    while (u->tx.count > 0 && u->outq_count < UART_OUTQ) {
      u->outq[(u->outq_head + u->outq_count) % UART_OUTQ] = ring_pop(&u->tx);
      u->outq_count++;
      u->tx_bytes++;
      ctx->kick_tx = true;
    }
  } else {
    while (u->tx.count > 0 && ctx->nout < sizeof(ctx->out)) {
      ctx->out[ctx->nout++] = ring_pop(&u->tx);
      u->tx_bytes++;
    }
  }
  if (had && u->tx.count == 0)
    u->thr_ipending = true;
}

/* ------------------------------------------------------------------------ */
/* Interrupts and status (lock held)                                        */

static uint8_t iir(const struct uart *u) {
  if ((u->ier & IER_ELSI) && (u->lsr_err & LSR_ERRORS))
    return IIR_RLSI;
  if ((u->ier & IER_ERBFI) && u->rx.count > 0) {
    if (u->fifo_enabled && u->rx.count < u->rx_trigger)
      return IIR_CTI;
    return IIR_RDI;
  }
  if ((u->ier & IER_ETBEI) && u->thr_ipending)
    return IIR_THRI;
  if ((u->ier & IER_EDSSI) && (u->msr_delta & 0x0f))
    return IIR_MSI;
  return IIR_NONE;
}

static void update_irq(struct uart *u) {
  /* A PC wires the INTR pin through OUT2, which loopback disconnects. */
  bool level = !(iir(u) & IIR_NONE) && (u->mcr & MCR_OUT2) && !loopback(u);
  if (level != u->irq_level) {
    u->irq_level = level;
    vmm_dev_irq_set(u->dev, u->cfg.gsi, level);
  }
}

static void msr_update(struct uart *u) {
  uint8_t lines;
  if (loopback(u)) {
    lines = (uint8_t)(((u->mcr & MCR_RTS) ? MSR_CTS : 0) |
                      ((u->mcr & MCR_DTR) ? MSR_DSR : 0) |
                      ((u->mcr & MCR_OUT1) ? MSR_RI : 0) |
                      ((u->mcr & MCR_OUT2) ? MSR_DCD : 0));
  } else {
    lines = MSR_CTS | MSR_DSR | MSR_DCD;
  }
  uint8_t changed = lines ^ u->msr_lines;
  if (changed & MSR_CTS)
    u->msr_delta |= MSR_DCTS;
  if (changed & MSR_DSR)
    u->msr_delta |= MSR_DDSR;
  if (changed & MSR_DCD)
    u->msr_delta |= MSR_DDCD;
  if ((u->msr_lines & MSR_RI) && !(lines & MSR_RI))
    u->msr_delta |= MSR_TERI; /* trailing edge only */
  u->msr_lines = lines;
}

static uint8_t lsr(const struct uart *u) {
  uint8_t v = u->lsr_err;
  if (u->rx.count > 0)
    v |= LSR_DR;
  if (u->tx.count == 0)
    v |= LSR_THRE | LSR_TEMT;
  if (u->fifo_enabled && (u->lsr_err & (LSR_ERRORS & ~LSR_OE)))
    v |= LSR_FIFOERR;
  return v;
}

/* ------------------------------------------------------------------------ */
/* Registers                                                                */

static void reg_write(struct io_ctx *ctx, unsigned off, uint8_t v) {
  struct uart *u = ctx->u;
  bool dlab = u->lcr & LCR_DLAB;
  switch (off) {
  case R_RBR_THR:
    if (dlab) {
      u->divisor = (uint16_t)((u->divisor & 0xff00) | v);
      break;
    }
    if (u->tx.count < (u->fifo_enabled ? UART_FIFO : 1u))
      ring_push(&u->tx, v);
    else
      u->tx_dropped++; /* written over a full FIFO: lost, as on hardware */
    u->thr_ipending = false;
    tx_drain(u, ctx);
    break;
  case R_IER:
    if (dlab) {
      u->divisor = (uint16_t)((u->divisor & 0x00ff) | v << 8);
      break;
    }
    /* Enabling the THRE interrupt with THR empty raises it at once; Linux's
       8250 driver checks for exactly that. */
    if ((v & IER_ETBEI) && !(u->ier & IER_ETBEI) && u->tx.count == 0)
      u->thr_ipending = true;
    if (!(v & IER_ETBEI))
      u->thr_ipending = false;
    u->ier = v & 0x0f;
    break;
  case R_IIR_FCR: {
    bool enable = v & FCR_ENABLE;
    bool clear_rx = false, clear_tx = false;
    if (enable != u->fifo_enabled) {
      clear_rx = clear_tx = true; /* switching modes resets the FIFOs */
      u->fifo_enabled = enable;
    }
    if (enable) {
      clear_rx |= (v & FCR_CLEAR_RX) != 0;
      clear_tx |= (v & FCR_CLEAR_TX) != 0;
      u->rx_trigger = trigger_levels[v >> 6];
    } /* without FCR0 the other bits are not programmed */
    if (clear_rx) {
      ring_clear(&u->rx);
      ctx->kick_rx |= rx_fill(u);
    }
    if (clear_tx && u->tx.count > 0) {
      u->tx_dropped += u->tx.count;
      ring_clear(&u->tx);
      u->thr_ipending = true;
    }
    break;
  }
  case R_LCR: u->lcr = v; break;
  case R_MCR: {
    bool was_loop = loopback(u);
    u->mcr = v & 0x1f;
    msr_update(u);
    if (was_loop && !loopback(u))
      ctx->kick_rx |= rx_fill(u);
    break;
  }
  case R_LSR:
  case R_MSR: break; /* read-only (factory test on LSR) */
  case R_SCR: u->scr = v; break;
  }
}

static uint8_t reg_read(struct io_ctx *ctx, unsigned off) {
  struct uart *u = ctx->u;
  bool dlab = u->lcr & LCR_DLAB;
  uint8_t v = 0;
  switch (off) {
  case R_RBR_THR:
    if (dlab)
      return (uint8_t)u->divisor;
    if (u->rx.count > 0) {
      u->rbr_last = ring_pop(&u->rx);
      ctx->kick_rx |= rx_fill(u);
    }
    return u->rbr_last; /* an empty receiver repeats the last byte */
  case R_IER: return dlab ? (uint8_t)(u->divisor >> 8) : u->ier;
  case R_IIR_FCR:
    v = iir(u);
    if (v == IIR_THRI)
      u->thr_ipending = false; /* reading IIR acknowledges THRE */
    return (uint8_t)(v | (u->fifo_enabled ? IIR_FIFO : 0));
  case R_LCR: return u->lcr;
  case R_MCR: return u->mcr;
  case R_LSR:
    v = lsr(u);
    u->lsr_err = 0;
    return v;
  case R_MSR:
    v = (uint8_t)(u->msr_lines | u->msr_delta);
    u->msr_delta = 0;
    return v;
  case R_SCR: return u->scr;
  }
  return 0;
}

static void byte_io(void *opaque, uint64_t port, uint8_t *b, bool is_write) {
  struct io_ctx *ctx = opaque;
  unsigned off = (unsigned)(port - ctx->u->cfg.base);
  if (is_write)
    reg_write(ctx, off, *b);
  else
    *b = reg_read(ctx, off);
}

/* After the lock is released: output and wake-ups. */
static void finish(struct io_ctx *ctx) {
  if (ctx->nout > 0)
    vmm__uart_be_write(ctx->u, ctx->out, ctx->nout);
  if (ctx->kick_tx)
    vmm__uart_be_kick_tx(ctx->u);
  if (ctx->kick_rx)
    vmm__uart_be_kick_rx(ctx->u);
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct io_ctx ctx = {.u = opaque};
  (void)vcpu;
  pthread_mutex_lock(&ctx.u->lock);
  /* Wider accesses are split into bytes, as the 8-bit ISA bus does. */
  vmm__io_bytes(&ctx, port, data, len, is_write, byte_io);
  update_irq(ctx.u);
  pthread_mutex_unlock(&ctx.u->lock);
  finish(&ctx);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Backend and host side                                                    */

size_t vmm__uart_rx_offer(struct uart *u, const uint8_t *buf, size_t len) {
  pthread_mutex_lock(&u->lock);
  size_t n = input_locked(u, buf, len);
  if (n < len)
    u->rx_wanted = true;
  update_irq(u);
  pthread_mutex_unlock(&u->lock);
  return n;
}

size_t vmm__uart_tx_take(struct uart *u, uint8_t *buf, size_t max) {
  struct io_ctx ctx = {.u = u};
  pthread_mutex_lock(&u->lock);
  size_t n = 0;
  while (n < max && u->outq_count > 0) {
    buf[n++] = u->outq[u->outq_head];
    u->outq_head = (u->outq_head + 1) % UART_OUTQ;
    u->outq_count--;
  }
  if (n > 0 && u->tx.count > 0) {
    tx_drain(u, &ctx); /* the TX FIFO waited for this room */
    update_irq(u);
  }
  pthread_mutex_unlock(&u->lock);
  return n;
}

void vmm__uart_tx_dropped(struct uart *u, size_t n) {
  pthread_mutex_lock(&u->lock);
  u->tx_dropped += n;
  pthread_mutex_unlock(&u->lock);
}

static struct uart *uart_of(vmm_dev *dev) {
  return vmm__dev_data(dev, &uart_ops);
}

long vmm_uart_input(vmm_dev *dev, const void *buf, size_t len) {
  struct uart *u = uart_of(dev);
  if (u == NULL || (buf == NULL && len != 0))
    return VMM_EINVAL;
  pthread_mutex_lock(&u->lock);
  size_t n = input_locked(u, buf, len);
  update_irq(u);
  pthread_mutex_unlock(&u->lock);
  return (long)n;
}

long vmm_uart_input_raw(vmm_dev *dev, const void *buf, size_t len) {
  struct uart *u = uart_of(dev);
  if (u == NULL || (buf == NULL && len != 0))
    return VMM_EINVAL;
  const uint8_t *b = buf;
  long kept = 0;
  pthread_mutex_lock(&u->lock);
  for (size_t i = 0; i < len && !loopback(u); i++)
    kept += rx_wire(u, b[i]);
  update_irq(u);
  pthread_mutex_unlock(&u->lock);
  return kept;
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */

static void reset_locked(struct uart *u) {
  u->ier = u->lcr = u->mcr = u->scr = 0;
  u->divisor = 12; /* 9600 baud */
  u->lsr_err = 0;
  u->msr_lines = MSR_CTS | MSR_DSR | MSR_DCD;
  u->msr_delta = 0;
  u->rx_trigger = 1;
  u->fifo_enabled = false;
  u->thr_ipending = false;
  u->rbr_last = 0;
  ring_clear(&u->rx);
  ring_clear(&u->tx);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct uart *u = opaque;
  (void)dev;
  pthread_mutex_lock(&u->lock);
  reset_locked(u);
  update_irq(u);
  pthread_mutex_unlock(&u->lock);
}

static int realize(vmm_dev *dev, void *opaque) {
  struct uart *u = opaque;
  u->dev = dev;
  int err = vmm__uart_be_open(u);
  if (err < 0)
    return err;
  return vmm_dev_io_register(dev, VMM_IO_PORT, u->cfg.base, 8, on_io, u);
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct uart *u = opaque;
  (void)dev;
  if (u == NULL)
    return;
  vmm__uart_be_close(u);
  free(u->outq);
  free((char *)u->cfg.path);
  pthread_mutex_destroy(&u->lock);
  free(u);
}

#define STATE_VERSION 1

static json_t *ring_json(const struct uart_ring *r) {
  uint8_t b[UART_FIFO];
  for (unsigned i = 0; i < r->count; i++)
    b[i] = r->buf[(r->head + i) % UART_FIFO];
  return vmm__json_from_bytes(b, r->count);
}

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct uart *u = opaque;
  (void)dev;
  pthread_mutex_lock(&u->lock);
  uint8_t *in = malloc(VMM_UART_INPUT_QUEUE);
  json_t *inq = NULL;
  if (in != NULL) {
    for (size_t i = 0; i < u->inq_count; i++)
      in[i] = u->inq[(u->inq_head + i) % VMM_UART_INPUT_QUEUE];
    inq = vmm__json_from_bytes(in, u->inq_count);
    free(in);
  }
  *out = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i,"
                   " s:b, s:b, s:i, s:o*, s:o*, s:o*}",
                   "type", "uart16550", "version", STATE_VERSION, "ier", u->ier,
                   "lcr", u->lcr, "mcr", u->mcr, "scr", u->scr, "divisor",
                   u->divisor, "lsr_err", u->lsr_err, "msr_lines", u->msr_lines,
                   "msr_delta", u->msr_delta, "rx_trigger", u->rx_trigger,
                   "fifo_enabled", u->fifo_enabled, "thr_ipending",
                   u->thr_ipending, "rbr_last", u->rbr_last, "rx",
                   ring_json(&u->rx), "tx", ring_json(&u->tx), "input", inq);
  pthread_mutex_unlock(&u->lock);
  if (*out != NULL && (json_object_get(*out, "rx") == NULL ||
                       json_object_get(*out, "tx") == NULL ||
                       json_object_get(*out, "input") == NULL)) {
    json_decref(*out);
    *out = NULL;
  }
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int restore(vmm_dev *dev, const json_t *in, void *opaque) {
  struct uart *u = opaque;
  uint64_t ier, lcr, mcr, scr, div, err, lines, delta, trig, last;
  bool fifo, thr;
  uint8_t rx[UART_FIFO], tx[UART_FIFO];
  size_t nrx, ntx, nin;
  (void)dev;
  uint8_t *inq = malloc(VMM_UART_INPUT_QUEUE);
  if (inq == NULL)
    return VMM_ENOMEM;
  int rc = VMM_EINVAL;
  if (vmm__json_header(in, "uart16550", STATE_VERSION) < 0 ||
      vmm__json_uint(in, "ier", 0x0f, &ier) < 0 ||
      vmm__json_uint(in, "lcr", 0xff, &lcr) < 0 ||
      vmm__json_uint(in, "mcr", 0x1f, &mcr) < 0 ||
      vmm__json_uint(in, "scr", 0xff, &scr) < 0 ||
      vmm__json_uint(in, "divisor", 0xffff, &div) < 0 ||
      vmm__json_uint(in, "lsr_err", LSR_ERRORS, &err) < 0 ||
      (err & ~(uint64_t)LSR_ERRORS) ||
      vmm__json_uint(in, "msr_lines", 0xf0, &lines) < 0 || (lines & 0x0f) ||
      vmm__json_uint(in, "msr_delta", 0x0f, &delta) < 0 ||
      vmm__json_uint(in, "rx_trigger", 14, &trig) < 0 ||
      vmm__json_bool(in, "fifo_enabled", &fifo) < 0 ||
      vmm__json_bool(in, "thr_ipending", &thr) < 0 ||
      vmm__json_uint(in, "rbr_last", 0xff, &last) < 0 ||
      vmm__json_bytes(in, "rx", rx, UART_FIFO, &nrx) < 0 ||
      vmm__json_bytes(in, "tx", tx, UART_FIFO, &ntx) < 0 ||
      vmm__json_bytes(in, "input", inq, VMM_UART_INPUT_QUEUE, &nin) < 0)
    goto out;
  if ((trig != 1 && trig != 4 && trig != 8 && trig != 14) ||
      (!fifo && (nrx > 1 || ntx > 1)))
    goto out;
  pthread_mutex_lock(&u->lock);
  u->ier = (uint8_t)ier;
  u->lcr = (uint8_t)lcr;
  u->mcr = (uint8_t)mcr;
  u->scr = (uint8_t)scr;
  u->divisor = (uint16_t)div;
  u->lsr_err = (uint8_t)err;
  u->msr_lines = (uint8_t)lines;
  u->msr_delta = (uint8_t)delta;
  u->rx_trigger = (uint8_t)trig;
  u->fifo_enabled = fifo;
  u->thr_ipending = thr;
  u->rbr_last = (uint8_t)last;
  ring_clear(&u->rx);
  ring_clear(&u->tx);
  for (size_t i = 0; i < nrx; i++)
    ring_push(&u->rx, rx[i]);
  for (size_t i = 0; i < ntx; i++)
    ring_push(&u->tx, tx[i]);
  memcpy(u->inq, inq, nin);
  u->inq_head = 0;
  u->inq_count = nin;
  update_irq(u);
  pthread_mutex_unlock(&u->lock);
  rc = 0;
out:
  free(inq);
  return rc;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct uart *u = opaque;
  (void)dev;
  pthread_mutex_lock(&u->lock);
  *out = json_pack("{s:I, s:I, s:I, s:I, s:I}", "tx_bytes",
                   (json_int_t)u->tx_bytes, "rx_bytes", (json_int_t)u->rx_bytes,
                   "overruns", (json_int_t)u->overruns, "tx_dropped",
                   (json_int_t)u->tx_dropped, "input_queued",
                   (json_int_t)u->inq_count);
  pthread_mutex_unlock(&u->lock);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops uart_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "uart16550",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_uart_create(vmm_vm *vm, const struct vmm_uart_config *user,
                    vmm_dev **out) {
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  if (cfg.base > 0x10000 - 8 || cfg.gsi >= VMM_IRQ_LINES)
    return VMM_EINVAL;
  switch (cfg.backend) {
  case VMM_UART_NONE: break;
  case VMM_UART_TERMINAL:
    if (cfg.in_fd < -1 || cfg.out_fd < -1)
      return VMM_EINVAL;
    break;
  case VMM_UART_FILE:
    if ((cfg.path == NULL) == (cfg.fd < 0))
      return VMM_EINVAL; /* exactly one of path and fd */
    break;
  case VMM_UART_SOCKET:
    if (cfg.path == NULL || cfg.path[0] == 0)
      return VMM_EINVAL;
    break;
  case VMM_UART_CALLBACK:
    if (cfg.write_fn == NULL)
      return VMM_EINVAL;
    break;
  default: return VMM_EINVAL;
  }

  struct uart *u = calloc(1, sizeof(*u));
  if (u == NULL)
    return VMM_ENOMEM;
  if (pthread_mutex_init(&u->lock, NULL) != 0) {
    free(u);
    return VMM_ENOMEM;
  }
  u->vm = vm;
  u->cfg = cfg;
  u->cfg.name = NULL;
  u->cfg.path = NULL;
  int err = 0;
  if (cfg.path != NULL && (u->cfg.path = strdup(cfg.path)) == NULL)
    err = VMM_ENOMEM;
  if (err == 0 && cfg.backend == VMM_UART_SOCKET &&
      (u->outq = malloc(UART_OUTQ)) == NULL)
    err = VMM_ENOMEM;
  if (err < 0) {
    destroy(NULL, u);
    return err;
  }
  reset_locked(u);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "com1", &uart_ops, u,
                        out);
}
