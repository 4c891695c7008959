/*
 * 16550A UART: the register model (divisor latch, FIFOs and trigger
 * levels, overrun, interrupts and their priorities, loopback, modem
 * status), the input queue, every backend (callback, file, terminal on a
 * pty and on pipes, Unix socket as server and client, with flow control),
 * saved state, a random-access torture run, and a guest taking the UART's
 * interrupt through KVM's in-kernel PIC.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>

#include "devtest.h"

#define COM 0x3f8
#define RBR (COM + 0)
#define THR (COM + 0)
#define IER (COM + 1)
#define IIR (COM + 2)
#define FCR (COM + 2)
#define LCR (COM + 3)
#define MCR (COM + 4)
#define LSR (COM + 5)
#define MSR (COM + 6)
#define SCR (COM + 7)

/* Output collected by the callback backend. */
struct sink {
  pthread_mutex_t lock;
  uint8_t buf[4096];
  size_t len;
  unsigned calls;
};

static void sink_write(vmm_dev *dev, const uint8_t *buf, size_t len,
                       void *opaque) {
  struct sink *s = opaque;
  (void)dev;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < len && s->len < sizeof(s->buf); i++)
    s->buf[s->len++] = buf[i];
  s->calls++;
  pthread_mutex_unlock(&s->lock);
}

static struct sink sink = {.lock = PTHREAD_MUTEX_INITIALIZER};

static vmm_dev *uart_with(vmm_vm *vm, const struct vmm_uart_config *cfg) {
  vmm_dev *dev = NULL;
  assert_ok(vmm_uart_create(vm, cfg, &dev));
  return dev;
}

static vmm_dev *uart_cb(vmm_vm *vm) {
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_CALLBACK;
  cfg.write_fn = sink_write;
  cfg.write_opaque = &sink;
  pthread_mutex_lock(&sink.lock);
  sink.len = 0;
  sink.calls = 0;
  pthread_mutex_unlock(&sink.lock);
  return uart_with(vm, &cfg);
}

static bool irq4(vmm_vm *vm) {
  bool l;
  assert_ok(vmm_vm_irq_get(vm, 4, &l));
  return l;
}

static void test_reset_values_and_latch(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  assert_string_equal(vmm_dev_name(dev), "com1");
  assert_string_equal(vmm_dev_type(dev), "uart16550");
  assert_int_equal(dt_inb(vm, IER), 0);
  assert_int_equal(dt_inb(vm, IIR), 0x01);
  assert_int_equal(dt_inb(vm, LCR), 0);
  assert_int_equal(dt_inb(vm, MCR), 0);
  assert_int_equal(dt_inb(vm, LSR), 0x60);
  assert_int_equal(dt_inb(vm, MSR), 0xb0);

  /* Divisor latch: offsets 0/1 are DLL/DLM while LCR.DLAB is set. */
  dt_outb(vm, LCR, 0x83);
  dt_outb(vm, COM + 0, 0x01);
  dt_outb(vm, COM + 1, 0x02);
  assert_int_equal(dt_inb(vm, COM + 0), 0x01);
  assert_int_equal(dt_inb(vm, COM + 1), 0x02);
  assert_int_equal(sink.len, 0); /* a DLL write transmits nothing */
  dt_outb(vm, LCR, 0x03);
  assert_int_equal(dt_inb(vm, IER), 0);
  assert_int_equal(dt_inb(vm, LCR), 0x03);
  dt_outb(vm, IER, 0xff); /* only four bits exist */
  assert_int_equal(dt_inb(vm, IER), 0x0f);
  dt_outb(vm, IER, 0);
  dt_outb(vm, SCR, 0x5a);
  assert_int_equal(dt_inb(vm, SCR), 0x5a);
  dt_outb(vm, MCR, 0xff);
  assert_int_equal(dt_inb(vm, MCR), 0x1f);
  /* LSR and MSR are read-only. */
  dt_outb(vm, MCR, 0);
  dt_outb(vm, LSR, 0x00);
  dt_outb(vm, MSR, 0x00);
  assert_int_equal(dt_inb(vm, LSR), 0x60);
  assert_int_equal(dt_inb(vm, MSR) & 0xf0, 0xb0);
  /* An empty receiver returns the last byte read (0 at first). */
  assert_int_equal(dt_inb(vm, RBR), 0);

  /* A reset clears the registers but not the divisor's absence of harm. */
  dt_outb(vm, LCR, 0x1b);
  assert_ok(vmm_dev_reset(dev));
  assert_int_equal(dt_inb(vm, LCR), 0);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_transmit(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  const char *msg = "Hello, UART\n";
  for (const char *p = msg; *p; p++) {
    assert_int_equal(dt_inb(vm, LSR) & 0x60, 0x60);
    dt_outb(vm, THR, (uint8_t)*p);
  }
  assert_int_equal(sink.len, strlen(msg));
  assert_memory_equal(sink.buf, msg, strlen(msg));
  assert_int_equal(dt_stat(dev, "tx_bytes"), strlen(msg));
  /* A 16-bit write is split: THR gets the low byte, IER the high one. */
  dt_out(vm, THR, 0x0241, 2);
  assert_int_equal(sink.buf[sink.len - 1], 'A');
  assert_int_equal(dt_inb(vm, IER), 0x02);
  /* A 32-bit access at the last port would leave the device. */
  uint32_t v = 0;
  assert_int_equal(dt_pio(vm, SCR, &v, 4, true), VMM_IO_DECLINED);
  /* FIFO mode transmits the same way. */
  dt_outb(vm, FCR, 0x07);
  dt_outb(vm, THR, 'z');
  assert_int_equal(sink.buf[sink.len - 1], 'z');
  assert_ok(vmm_vm_destroy(vm));
}

static void test_receive_fifo_and_triggers(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  dt_outb(vm, IER, 0x01);
  dt_outb(vm, FCR, 0x81); /* FIFO, trigger 8 */
  assert_int_equal(dt_inb(vm, IIR), 0xc1);
  assert_int_equal(vmm_uart_input(dev, "abcde", 5), 5);
  assert_true(dt_inb(vm, LSR) & 0x01);
  assert_int_equal(dt_inb(vm, IIR), 0xcc); /* below trigger: timeout */
  assert_int_equal(vmm_uart_input(dev, "fgh", 3), 3);
  assert_int_equal(dt_inb(vm, IIR), 0xc4); /* at trigger: data available */
  char got[8];
  for (int i = 0; i < 8; i++)
    got[i] = (char)dt_inb(vm, RBR);
  assert_memory_equal(got, "abcdefgh", 8);
  assert_int_equal(dt_inb(vm, IIR), 0xc1);
  assert_false(dt_inb(vm, LSR) & 0x01);
  assert_int_equal(dt_inb(vm, RBR), 'h'); /* repeats the last byte */

  /* Each trigger level. */
  static const struct {
    uint8_t fcr, level;
  } t[] = {{0x01, 1}, {0x41, 4}, {0x81, 8}, {0xc1, 14}};
  for (int i = 0; i < 4; i++) {
    dt_outb(vm, FCR, t[i].fcr);
    for (int n = 1; n <= 16; n++) {
      vmm_uart_input(dev, "x", 1);
      assert_int_equal(dt_inb(vm, IIR), n >= t[i].level ? 0xc4 : 0xcc);
    }
    dt_outb(vm, FCR, t[i].fcr | 0x02); /* clear the receive FIFO */
    assert_false(dt_inb(vm, LSR) & 0x01);
  }
  /* FCR writes without bit 0 disable the FIFOs (and clear them). */
  vmm_uart_input(dev, "xy", 2);
  dt_outb(vm, FCR, 0x00);
  assert_false(dt_inb(vm, LSR) & 1);
  assert_int_equal(dt_inb(vm, IIR), 0x01);
  /* 16450 mode: one byte at a time, the next waits in the queue. */
  assert_int_equal(vmm_uart_input(dev, "xy", 2), 2);
  assert_int_equal(dt_inb(vm, IIR), 0x04);
  assert_int_equal(dt_inb(vm, RBR), 'x');
  assert_int_equal(dt_inb(vm, IIR), 0x04);
  assert_int_equal(dt_inb(vm, RBR), 'y');
  assert_int_equal(dt_inb(vm, IIR), 0x01);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_overrun(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  dt_outb(vm, FCR, 0x01);
  uint8_t bytes[20];
  for (int i = 0; i < 20; i++)
    bytes[i] = (uint8_t)('A' + i);
  assert_int_equal(vmm_uart_input_raw(dev, bytes, 20), 16);
  dt_outb(vm, IER, 0x05);                  /* line status + data */
  assert_int_equal(dt_inb(vm, IIR), 0xc6); /* line status first */
  uint8_t lsr = dt_inb(vm, LSR);
  assert_int_equal(lsr & 0x03, 0x03);          /* DR and OE */
  assert_int_equal(dt_inb(vm, LSR) & 0x02, 0); /* cleared by reading */
  assert_int_equal(dt_inb(vm, IIR), 0xc4);
  for (int i = 0; i < 16; i++) /* the FIFO kept the first 16 */
    assert_int_equal(dt_inb(vm, RBR), 'A' + i);
  assert_int_equal(dt_stat(dev, "overruns"), 4);

  /* Non-FIFO mode: the holding register is overwritten. */
  dt_outb(vm, FCR, 0x00);
  assert_int_equal(vmm_uart_input_raw(dev, "12", 2), 1);
  assert_int_equal(dt_inb(vm, LSR) & 0x03, 0x03);
  assert_int_equal(dt_inb(vm, RBR), '2');
  /* The input queue never overruns: the bytes wait. */
  assert_int_equal(vmm_uart_input(dev, "345", 3), 3);
  assert_int_equal(dt_inb(vm, LSR) & 0x03, 0x01);
  assert_int_equal(dt_inb(vm, RBR), '3');
  assert_int_equal(dt_inb(vm, RBR), '4');
  assert_int_equal(dt_inb(vm, RBR), '5');
  assert_int_equal(dt_stat(dev, "overruns"), 5);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_input_queue(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  dt_outb(vm, FCR, 0x01);
  static uint8_t big[VMM_UART_INPUT_QUEUE + 100];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (uint8_t)(i * 7);
  /* 16 go to the FIFO at once, a full queue after them. */
  long taken = vmm_uart_input(dev, big, sizeof(big));
  assert_int_equal(taken, VMM_UART_INPUT_QUEUE + 16);
  assert_int_equal(vmm_uart_input(dev, big, 1), 0);
  for (long i = 0; i < taken; i++) {
    assert_true(dt_inb(vm, LSR) & 1);
    assert_int_equal(dt_inb(vm, RBR), (uint8_t)(i * 7));
  }
  assert_false(dt_inb(vm, LSR) & 1);
  assert_int_equal(vmm_uart_input(dev, big, 0), 0);
  assert_vmm(vmm_uart_input(dev, NULL, 1), VMM_EINVAL);
  assert_vmm(vmm_uart_input(NULL, big, 1), VMM_EINVAL);
  assert_vmm(vmm_uart_input_raw(NULL, big, 1), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_thre_interrupt_and_out2(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  uart_cb(vm);
  /* Linux 8250 probe: enabling THRI with THR empty raises it at once. */
  dt_outb(vm, IER, 0x00);
  dt_outb(vm, IER, 0x02);
  assert_int_equal(dt_inb(vm, IIR), 0x02);
  assert_int_equal(dt_inb(vm, IIR), 0x01); /* acknowledged by reading */
  dt_outb(vm, IER, 0x00);
  dt_outb(vm, IER, 0x02);
  assert_int_equal(dt_inb(vm, IIR), 0x02);

  /* The line follows the interrupt only while OUT2 is set. */
  assert_false(irq4(vm));
  dt_outb(vm, MCR, 0x08);
  assert_false(irq4(vm)); /* already acknowledged */
  dt_outb(vm, THR, 'a');  /* sent at once: THR empty again */
  assert_true(irq4(vm));
  assert_int_equal(dt_inb(vm, IIR), 0x02);
  assert_false(irq4(vm));
  dt_outb(vm, THR, 'b');
  assert_true(irq4(vm));
  dt_outb(vm, MCR, 0x00);
  assert_false(irq4(vm));
  dt_outb(vm, MCR, 0x08);
  assert_true(irq4(vm));
  dt_outb(vm, IER, 0x00); /* disabling drops it */
  assert_false(irq4(vm));
  dt_outb(vm, IER, 0x02);
  assert_true(irq4(vm));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_loopback_and_modem_status(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  dt_outb(vm, FCR, 0x01);
  dt_outb(vm, MCR, 0x1a); /* loop, RTS, OUT2: Linux expects MSR 0x90 */
  assert_int_equal(dt_inb(vm, MSR) & 0xf0, 0x90);
  dt_outb(vm, THR, 'L');
  dt_outb(vm, THR, 'B');
  assert_int_equal(sink.len, 0); /* nothing leaves in loopback */
  assert_int_equal(dt_inb(vm, RBR), 'L');
  assert_int_equal(dt_inb(vm, RBR), 'B');
  /* Input waits while the receiver listens to the transmitter. */
  assert_int_equal(vmm_uart_input(dev, "in", 2), 2);
  assert_false(dt_inb(vm, LSR) & 1);
  assert_int_equal(vmm_uart_input_raw(dev, "x", 1), 0);

  /* Modem status deltas, and the MSR interrupt; no IRQ in loopback. */
  dt_outb(vm, IER, 0x08);
  dt_inb(vm, MSR);
  dt_outb(vm, MCR, 0x1f); /* DTR, RTS, OUT1, OUT2 */
  assert_int_equal(dt_inb(vm, IIR), 0xc0);
  assert_false(irq4(vm));
  assert_int_equal(dt_inb(vm, MSR), 0xf2); /* all lines, DDSR */
  assert_int_equal(dt_inb(vm, IIR), 0xc1);
  dt_outb(vm, MCR, 0x1b); /* OUT1 falls: trailing edge of RI */
  assert_int_equal(dt_inb(vm, MSR), 0xb4);
  dt_outb(vm, MCR, 0x10); /* everything falls */
  assert_int_equal(dt_inb(vm, MSR), 0x0b);
  /* Leaving loopback: the lines are the backend's again, the queued
     input arrives. */
  dt_outb(vm, MCR, 0x0b);
  assert_int_equal(dt_inb(vm, MSR), 0xbb);
  assert_int_equal(dt_inb(vm, RBR), 'i');
  assert_int_equal(dt_inb(vm, RBR), 'n');
  assert_ok(vmm_vm_destroy(vm));
}

static void test_priorities(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  dt_outb(vm, FCR, 0x01);
  dt_outb(vm, MCR, 0x08);
  dt_outb(vm, IER, 0x0f); /* THRE pending from here on */
  uint8_t b[17] = {0};
  vmm_uart_input_raw(dev, b, 17); /* data and an overrun */
  assert_int_equal(dt_inb(vm, IIR), 0xc6);
  dt_inb(vm, LSR);
  assert_int_equal(dt_inb(vm, IIR), 0xc4);
  dt_outb(vm, FCR, 0x03); /* drop the data */
  assert_int_equal(dt_inb(vm, IIR), 0xc2);
  assert_int_equal(dt_inb(vm, IIR), 0xc1);
  assert_true(irq4(vm) == false);
  assert_ok(vmm_vm_destroy(vm));
}

/*
 * The checks Linux's 8250 autoconfiguration makes, in its order, and what
 * it must conclude: a 16550A (not an 8250/16450, not a 16650/16750/XScale),
 * a working scratch register and IER, a passing loopback test, and a THRE
 * interrupt that is raised again when re-enabled (no UART_BUG_THRE).
 */
static void test_linux_8250_probe(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  uart_cb(vm);
  /* IER: the four defined bits hold, cleared reads back 0. */
  uint8_t saved = dt_inb(vm, IER);
  dt_outb(vm, IER, 0);
  assert_int_equal(dt_inb(vm, IER) & 0x0f, 0);
  dt_outb(vm, IER, 0x0f);
  assert_int_equal(dt_inb(vm, IER) & 0x0f, 0x0f);
  dt_outb(vm, IER, saved);
  /* Loopback: MCR = LOOP | RTS | OUT2 reads back CTS | DCD. */
  uint8_t mcr = dt_inb(vm, MCR);
  dt_outb(vm, MCR, 0x1a);
  assert_int_equal(dt_inb(vm, MSR) & 0xf0, 0x90);
  dt_outb(vm, MCR, mcr);
  /* FIFO enabled: IIR bits 7:6 = 11, a 16550A. */
  dt_outb(vm, FCR, 0x01);
  assert_int_equal(dt_inb(vm, IIR) >> 6, 3);
  /* No EFR behind LCR 0x80 or 0xBF (offset 2 must not read 0). */
  dt_outb(vm, LCR, 0x80);
  assert_int_not_equal(dt_inb(vm, IIR), 0);
  dt_outb(vm, LCR, 0xbf);
  assert_int_not_equal(dt_inb(vm, IIR), 0);
  /* Not a 16750: the 64-byte FIFO bit does not show in IIR bit 5. */
  dt_outb(vm, LCR, 0x80);
  dt_outb(vm, FCR, 0x21);
  uint8_t s1 = dt_inb(vm, IIR) >> 5;
  dt_outb(vm, FCR, 0x01);
  dt_outb(vm, LCR, 0x00);
  dt_outb(vm, FCR, 0x21);
  uint8_t s2 = dt_inb(vm, IIR) >> 5;
  assert_false(s1 == 6 && s2 == 7);
  /* Not an XScale: IER bit 6 does not stick. */
  dt_outb(vm, IER, 0x40);
  assert_int_equal(dt_inb(vm, IER) & 0x40, 0);
  dt_outb(vm, IER, 0);
  /* Scratch register. */
  dt_outb(vm, SCR, 0xa5);
  assert_int_equal(dt_inb(vm, SCR), 0xa5);
  dt_outb(vm, SCR, 0x5a);
  assert_int_equal(dt_inb(vm, SCR), 0x5a);
  /* Startup: LSR is not 0xff (a port is there); THRE re-asserts. */
  dt_outb(vm, FCR, 0x07);
  assert_int_not_equal(dt_inb(vm, LSR), 0xff);
  dt_outb(vm, IER, 0x02);
  uint8_t iir1 = dt_inb(vm, IIR);
  dt_outb(vm, IER, 0x00);
  dt_outb(vm, IER, 0x02);
  uint8_t iir2 = dt_inb(vm, IIR);
  dt_outb(vm, IER, 0x00);
  assert_false(iir1 & 0x01);
  assert_false(iir2 & 0x01);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_state(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  dt_outb(vm, FCR, 0x81);
  dt_outb(vm, LCR, 0x80);
  dt_outb(vm, COM, 0x03);
  dt_outb(vm, LCR, 0x03);
  dt_outb(vm, IER, 0x01);
  dt_outb(vm, MCR, 0x0b);
  dt_outb(vm, SCR, 0x77);
  vmm_uart_input(dev, "state", 5);
  json_t *s = NULL;
  assert_ok(vmm_dev_save(dev, &s));
  assert_ok(vmm_dev_reset(dev));
  assert_int_equal(dt_inb(vm, SCR), 0);
  assert_false(irq4(vm));
  assert_ok(vmm_dev_restore(dev, s));
  assert_true(irq4(vm));
  assert_int_equal(dt_inb(vm, IIR), 0xcc);
  assert_int_equal(dt_inb(vm, SCR), 0x77);
  char got[5];
  for (int i = 0; i < 5; i++)
    got[i] = (char)dt_inb(vm, RBR);
  assert_memory_equal(got, "state", 5);
  dt_outb(vm, LCR, 0x83);
  assert_int_equal(dt_inb(vm, COM), 0x03);
  dt_outb(vm, LCR, 0x03);
  /* Malformed states: refused, nothing changed. */
  static const char *bad[] = {
      "{\"rx\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}",
      "{\"rx_trigger\": 3}",
      "{\"ier\": 16}",
      "{\"rx\": [256]}",
      "{\"input\": \"text\"}",
      "{\"version\": 2}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    json_t *b = json_deep_copy(s);
    json_t *patch = json_loads(bad[i], 0, NULL);
    assert_non_null(patch);
    json_object_update(b, patch);
    assert_vmm(vmm_dev_restore(dev, b), VMM_EINVAL);
    json_decref(patch);
    json_decref(b);
  }
  assert_int_equal(dt_inb(vm, SCR), 0x77);
  assert_false(dt_inb(vm, LSR) & 1);
  json_decref(s);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_config_errors(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.base = 0xfffa;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  vmm_uart_config_init(&cfg);
  cfg.gsi = VMM_IRQ_LINES;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  vmm_uart_config_init(&cfg);
  cfg.backend = (enum vmm_uart_backend)42;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.backend = VMM_UART_CALLBACK;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.backend = VMM_UART_FILE;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.path = "/tmp/x";
  cfg.fd = 1;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.backend = VMM_UART_SOCKET;
  cfg.path = NULL;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  char longpath[200];
  memset(longpath, 'p', sizeof(longpath) - 1);
  longpath[sizeof(longpath) - 1] = 0;
  cfg.path = longpath;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.backend = VMM_UART_FILE;
  cfg.fd = -1;
  cfg.path = "/nonexistent-dir/file";
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), -ENOENT);
  assert_null(vmm_dev_find(vm, "com1"));
  /* Nothing of the failed attempts is left. */
  vmm_uart_config_init(&cfg);
  assert_ok(vmm_uart_create(vm, &cfg, NULL));
  cfg.name = "com2";
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), VMM_EOVERLAP);
  cfg.base = 0x2f8;
  cfg.gsi = 3;
  assert_ok(vmm_uart_create(vm, &cfg, NULL));
  assert_vmm(vmm_uart_input(vmm_dev_find(vm, "com2"), "x", 1), 1);
  struct vmm_exit_port_config x;
  vmm_exit_port_config_init(&x);
  vmm_dev *other;
  assert_ok(vmm_exit_port_create(vm, &x, &other));
  assert_vmm(vmm_uart_input(other, "x", 1), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

/* Random accesses to every register, with random input, must keep the
   model consistent: never more than 16 bytes readable in FIFO mode, LSR.DR
   exactly while bytes remain, IIR always one of the defined values. */
static void test_torture(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = uart_cb(vm);
  uint32_t seed = 12345;
  for (int i = 0; i < 200000; i++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t r = seed >> 8;
    uint16_t port = (uint16_t)(COM + (r & 7));
    uint8_t v = (uint8_t)(r >> 3);
    switch ((r >> 11) & 7) {
    case 0: dt_outb(vm, port, v); break;
    case 1: vmm_uart_input_raw(dev, &v, 1); break;
    case 2: vmm_uart_input(dev, &v, 1); break;
    default: {
      uint8_t got = dt_inb(vm, port);
      if (port == IIR) {
        uint8_t id = got & 0x0f;
        assert_true(id == 0x01 || id == 0x00 || id == 0x02 || id == 0x04 ||
                    id == 0x06 || id == 0x0c);
      }
      break;
    }
    }
  }
  /* Drain: at most 16 + what the queue holds, and DR ends clear. */
  dt_outb(vm, LCR, 0x03);
  dt_outb(vm, MCR, 0x00);
  int n = 0;
  while ((dt_inb(vm, LSR) & 1) && n < 10000) {
    dt_inb(vm, RBR);
    n++;
  }
  assert_true(n < 10000);
  assert_false(dt_inb(vm, LSR) & 1);
  assert_ok(vmm_vm_destroy(vm));
}

/* ------------------------------------------------------------------------ */
/* Backends                                                                 */

static char tmp_path[96];

static const char *tmp_name(const char *what) {
  snprintf(tmp_path, sizeof(tmp_path), "/tmp/libvmm-test-%d-%s", (int)getpid(),
           what);
  unlink(tmp_path);
  return tmp_path;
}

static void guest_puts(vmm_vm *vm, const char *s) {
  for (; *s; s++)
    dt_outb(vm, THR, (uint8_t)*s);
}

/* Wait until the UART has a byte for the guest (input comes through the
   loop thread). */
static bool wait_rx(vmm_vm *vm, int ms) {
  for (int i = 0; i < ms; i++) {
    if (dt_inb(vm, LSR) & 1)
      return true;
    usleep(1000);
  }
  return false;
}

static void test_file_backend(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_FILE;
  cfg.path = tmp_name("file");
  int pre = open(tmp_path, O_WRONLY | O_CREAT, 0600);
  assert_true(write(pre, "old contents", 12) == 12); /* truncated */
  close(pre);
  vmm_dev *dev = uart_with(vm, &cfg);
  guest_puts(vm, "line 1\nline 2\n");
  /* A second UART on a descriptor we own. */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  vmm_uart_config_init(&cfg);
  cfg.name = "com2";
  cfg.base = 0x2f8;
  cfg.backend = VMM_UART_FILE;
  cfg.fd = fds[1];
  uart_with(vm, &cfg);
  dt_outb(vm, 0x2f8, 'P');
  assert_int_equal(dt_stat(dev, "tx_bytes"), 14);
  assert_ok(vmm_vm_destroy(vm));
  char buf[64] = {0};
  int fd = open(tmp_path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(read(fd, buf, sizeof(buf)), 14);
  assert_string_equal(buf, "line 1\nline 2\n");
  close(fd);
  unlink(tmp_path);
  /* The caller's descriptor is not closed by the UART. */
  assert_int_equal(read(fds[0], buf, 1), 1);
  assert_int_equal(buf[0], 'P');
  assert_int_equal(write(fds[1], "q", 1), 1);
  close(fds[0]);
  close(fds[1]);
}

/* A broken pipe costs bytes, not the process: SIGPIPE is not raised. */
static void test_output_to_broken_pipe(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  close(fds[0]);
  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_FILE;
  cfg.fd = fds[1];
  vmm_dev *dev = uart_with(vm, &cfg);
  guest_puts(vm, "nobody reads this");
  assert_int_equal(dt_stat(dev, "tx_dropped"), 17);
  sigset_t pending;
  sigpending(&pending);
  assert_false(sigismember(&pending, SIGPIPE));
  assert_ok(vmm_vm_destroy(vm));
  close(fds[1]);
}

static ssize_t read_timeout(int fd, void *buf, size_t len, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, ms) != 1)
    return -2;
  return read(fd, buf, len);
}

/* Reads exactly len bytes, however the kernel splits them (the UART writes
 * each byte as the guest transmits it); fewer only on timeout or EOF. */
static size_t read_full(int fd, void *buf, size_t len, int ms) {
  size_t n = 0;
  while (n < len) {
    ssize_t r = read_timeout(fd, (char *)buf + n, len - n, ms);
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  return n;
}

static void test_terminal_backend_pty(void **state) {
  (void)state;
  int master, slave;
  if (openpty(&master, &slave, NULL, NULL, NULL) < 0) {
    print_message("skipped: no pseudo-terminals here (%s)\n", strerror(errno));
    skip();
  }
  struct termios before, during, after;
  assert_int_equal(tcgetattr(slave, &before), 0);
  assert_true(before.c_lflag & ICANON);
  int flags_before = fcntl(slave, F_GETFL);

  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_TERMINAL;
  cfg.in_fd = slave;
  cfg.out_fd = slave;
  uart_with(vm, &cfg);
  /* Raw mode, without touching the descriptor's own flags. */
  assert_int_equal(tcgetattr(slave, &during), 0);
  assert_false(during.c_lflag & (ICANON | ECHO | ISIG));
  assert_true(during.c_oflag & OPOST);
  assert_int_equal(fcntl(slave, F_GETFL), flags_before);

  /* Typing reaches the guest, without waiting for a newline. */
  assert_int_equal(write(master, "k", 1), 1);
  assert_true(wait_rx(vm, 2000));
  assert_int_equal(dt_inb(vm, RBR), 'k');
  /* Guest output reaches the terminal. */
  guest_puts(vm, "ok");
  char buf[8] = {0};
  assert_int_equal(read_full(master, buf, 2, 2000), 2);
  assert_string_equal(buf, "ok");

  assert_ok(vmm_vm_destroy(vm));
  assert_int_equal(tcgetattr(slave, &after), 0);
  assert_int_equal(after.c_lflag, before.c_lflag);
  assert_int_equal(after.c_iflag, before.c_iflag);
  assert_int_equal(fcntl(slave, F_GETFL), flags_before);
  close(master);
  close(slave);
}

static void test_terminal_backend_pipes(void **state) {
  (void)state;
  int in[2], out[2];
  assert_int_equal(pipe(in), 0);
  assert_int_equal(pipe(out), 0);
  int flags_before = fcntl(in[0], F_GETFL);
  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_TERMINAL;
  cfg.in_fd = in[0];
  cfg.out_fd = out[1];
  vmm_dev *dev = uart_with(vm, &cfg);
  assert_int_equal(fcntl(in[0], F_GETFL), flags_before); /* private reopen */

  /* More than the input queue holds: flow control, nothing lost. */
  dt_outb(vm, FCR, 0x01);
  static uint8_t data[3 * VMM_UART_INPUT_QUEUE];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)(i % 251);
  size_t sent = 0, got = 0;
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  for (int spins = 0; got < sizeof(data) && spins < 100000; spins++) {
    if (sent < sizeof(data)) {
      ssize_t n = write(in[1], data + sent, sizeof(data) - sent);
      if (n > 0)
        sent += (size_t)n;
    }
    if (dt_inb(vm, LSR) & 1) {
      assert_int_equal(dt_inb(vm, RBR), data[got]);
      got++;
    } else {
      usleep(100);
    }
  }
  assert_int_equal(got, sizeof(data));
  assert_int_equal(dt_stat(dev, "overruns"), 0);
  guest_puts(vm, "bye");
  char buf[4] = {0};
  assert_int_equal(read_full(out[0], buf, 3, 2000), 3);
  assert_string_equal(buf, "bye");
  /* End of input is not an error. */
  close(in[1]);
  usleep(20000);
  assert_ok(vmm_vm_destroy(vm));
  close(in[0]);
  close(out[0]);
  close(out[1]);
}

static int connect_to(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/*
 * Connects a peer and returns once the UART's loop serves it: a byte the
 * peer sends reaches the guest. Until then guest output is dropped (nobody
 * connected), so a test that expects output must not write before. A peer
 * that arrives before the loop has seen the previous one leave is turned
 * away (one at a time; it reads end of file): it connects again.
 */
static int connect_served(vmm_vm *vm, const char *path) {
  for (int tries = 0; tries < 100; tries++) {
    int c = connect_to(path);
    if (c < 0) {
      usleep(10000);
      continue;
    }
    assert_int_equal(send(c, "@", 1, MSG_NOSIGNAL), 1);
    for (int ms = 0; ms < 5000; ms++) {
      if (dt_inb(vm, LSR) & 1) {
        assert_int_equal(dt_inb(vm, RBR), '@');
        return c;
      }
      struct pollfd p = {.fd = c, .events = POLLIN};
      if (poll(&p, 1, 1) == 1) {
        char x;
        /* Nothing is sent to a peer before its byte arrived. */
        assert_true(recv(c, &x, 1, MSG_DONTWAIT) <= 0);
        break;
      }
    }
    close(c);
  }
  fail_msg("no peer of %s was served", path);
  return -1;
}

static void test_socket_server(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_SOCKET;
  cfg.path = tmp_name("sock");
  vmm_dev *dev = uart_with(vm, &cfg);
  struct stat st;
  assert_int_equal(stat(tmp_path, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));

  /* Output with nobody connected is discarded. */
  guest_puts(vm, "lost");
  for (int i = 0; i < 5000 && dt_stat(dev, "tx_dropped") < 4; i++)
    usleep(1000);
  assert_int_equal(dt_stat(dev, "tx_dropped"), 4);

  int c = connect_to(tmp_path);
  assert_true(c >= 0);
  /* A second peer is turned away while the first is connected. */
  int c2 = connect_to(tmp_path);
  if (c2 >= 0) {
    char x;
    assert_int_equal(read_timeout(c2, &x, 1, 2000), 0);
    close(c2);
  }
  assert_int_equal(write(c, "ping", 4), 4);
  char got[5] = {0};
  for (int i = 0; i < 4; i++) {
    assert_true(wait_rx(vm, 2000));
    got[i] = (char)dt_inb(vm, RBR);
  }
  assert_string_equal(got, "ping");
  guest_puts(vm, "pong");
  char buf[8] = {0};
  assert_int_equal(read_full(c, buf, 4, 2000), 4);
  assert_string_equal(buf, "pong");
  close(c);

  /* After a disconnect, the next peer is served. */
  int c3 = connect_served(vm, tmp_path);
  guest_puts(vm, "again");
  memset(buf, 0, sizeof(buf));
  assert_int_equal(read_full(c3, buf, 5, 2000), 5);
  assert_string_equal(buf, "again");

  /* The path is taken while the UART exists. */
  vmm_uart_config_init(&cfg);
  cfg.name = "com2";
  cfg.base = 0x2f8;
  cfg.backend = VMM_UART_SOCKET;
  cfg.path = tmp_path;
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), -EADDRINUSE);
  assert_ok(vmm_vm_destroy(vm));
  /* Destroy removed the socket it created and dropped the peer. */
  assert_int_not_equal(stat(tmp_path, &st), 0);
  char x;
  assert_int_equal(read_timeout(c3, &x, 1, 2000), 0);
  close(c3);
}

/* A peer that does not read: the output queue and then the TX FIFO fill,
   THRE clears (flow control); once the peer reads, everything arrives in
   order and THRE comes back. */
static void test_socket_flow_control(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_SOCKET;
  cfg.path = tmp_name("flow");
  vmm_dev *dev = uart_with(vm, &cfg);
  int c = connect_served(vm, tmp_path);
  int sz = 4096;
  setsockopt(c, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  dt_outb(vm, FCR, 0x07);
  size_t written = 0;
  bool blocked = false;
  for (int spins = 0; written < (8u << 20) && !blocked; spins++) {
    if (dt_inb(vm, LSR) & 0x20) {
      dt_outb(vm, THR, (uint8_t)(written % 253));
      written++;
    } else {
      /* THRE clear: is it still clear a while later? */
      usleep(20000);
      blocked = !(dt_inb(vm, LSR) & 0x20);
    }
  }
  assert_true(blocked);
  /* Now read everything: the bytes come in order, none lost. The loop
     sends what waits as the socket drains, at its own pace: read until
     all of it is here (a pause is no end), then check nothing follows. */
  size_t got = 0;
  uint8_t buf[4096];
  while (got < written) {
    ssize_t r = read_timeout(c, buf, sizeof(buf), 5000);
    if (r <= 0)
      break;
    for (ssize_t i = 0; i < r; i++)
      assert_int_equal(buf[i], (uint8_t)((got + (size_t)i) % 253));
    got += (size_t)r;
  }
  assert_int_equal(got, written);
  assert_int_equal(read_timeout(c, buf, sizeof(buf), 100), -2);
  assert_true(dt_inb(vm, LSR) & 0x20);
  assert_int_equal(dt_stat(dev, "tx_dropped"), 0);
  close(c);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_socket_client(void **state) {
  (void)state;
  const char *path = tmp_name("client");
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(l, 1), 0);

  vmm_vm *vm = dt_vm();
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_SOCKET;
  cfg.client = true;
  cfg.path = path;
  uart_with(vm, &cfg);
  int c = accept(l, NULL, NULL);
  assert_true(c >= 0);
  guest_puts(vm, "hi");
  char buf[3] = {0};
  assert_int_equal(read_full(c, buf, 2, 2000), 2);
  assert_string_equal(buf, "hi");
  assert_int_equal(write(c, "!", 1), 1);
  assert_true(wait_rx(vm, 2000));
  assert_int_equal(dt_inb(vm, RBR), '!');
  assert_ok(vmm_vm_destroy(vm));
  char x;
  assert_int_equal(read_timeout(c, &x, 1, 2000), 0); /* closed */
  close(c);
  close(l);

  /* Nobody listening: creation fails and leaves nothing behind. */
  vm = dt_vm();
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), -ECONNREFUSED);
  assert_null(vmm_dev_find(vm, "com1"));
  struct stat st;
  assert_int_equal(stat(path, &st), 0); /* the client never removes it */
  unlink(path);
  assert_vmm(vmm_uart_create(vm, &cfg, NULL), -ENOENT);
  assert_ok(vmm_vm_destroy(vm));
}

/* ------------------------------------------------------------------------ */
/* A guest taking the UART's interrupt                                      */

struct done {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  int status;
  struct vmm_exit exit;
};

static void on_done(vmm_vcpu *vcpu, int status, struct vmm_exit *exit,
                    void *opaque) {
  struct done *d = opaque;
  (void)vcpu;
  pthread_mutex_lock(&d->lock);
  d->done = true;
  d->status = status;
  d->exit = *exit;
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->lock);
}

/*
 * The guest (CPL 0, in-kernel PIC) waits in HLT; bytes sent to the UART's
 * socket raise IRQ 4, its handler reads and echoes them. The run is on a
 * library thread; its completion arrives on the VM's loop.
 */
static void test_guest_interrupt(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm_flags(VMM_VM_IRQCHIP, 1);
  struct vmm_uart_config cfg;
  vmm_uart_config_init(&cfg);
  cfg.backend = VMM_UART_SOCKET;
  cfg.path = tmp_name("irq");
  uart_with(vm, &cfg);
  struct vmm_exit_port_config x;
  vmm_exit_port_config_init(&x);
  assert_ok(vmm_exit_port_create(vm, &x, NULL));
  vmm_vcpu *vcpu = dt_guest(vm, 0, "dev_uart_irq", 0);

  struct done d = {.lock = PTHREAD_MUTEX_INITIALIZER,
                   .cond = PTHREAD_COND_INITIALIZER};
  assert_ok(vmm_vcpu_start(vcpu, on_done, &d));
  /* Send once the guest has set the UART up: its FIFO reset would discard
     bytes that arrived before (as on hardware). IER is written last. */
  for (int i = 0; i < 20000 && dt_inb(vm, IER) != 0x01; i++)
    usleep(1000);
  assert_int_equal(dt_inb(vm, IER), 0x01);
  int c = connect_to(tmp_path);
  assert_true(c >= 0);
  const char *msg = "hello";
  assert_int_equal(write(c, msg, 5), 5);

  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 20;
  pthread_mutex_lock(&d.lock);
  while (!d.done)
    if (pthread_cond_timedwait(&d.cond, &d.lock, &deadline) != 0)
      break;
  bool done = d.done;
  pthread_mutex_unlock(&d.lock);
  if (!done) {
    uint8_t m[12];
    vmm_vm_stop(vm);
    vmm_mem_read(vm, DT_DATA, m, sizeof(m));
    fail_msg("the guest did not finish within 20 s: %u bytes, %u interrupts",
             m[0], m[4]);
  }
  assert_ok(d.status);
  assert_int_equal(d.exit.reason, VMM_EXIT_SYSTEM);
  assert_int_equal(d.exit.system.event, VMM_SYSTEM_EXIT_PORT);
  uint8_t sum = 0;
  for (int i = 0; i < 5; i++)
    sum = (uint8_t)(sum + msg[i]);
  assert_int_equal(d.exit.system.status, (sum << 1) | 1);

  uint8_t m[0x110];
  assert_ok(vmm_mem_read(vm, DT_DATA, m, sizeof(m)));
  uint32_t count, irqs;
  memcpy(&count, m, 4);
  memcpy(&irqs, m + 4, 4);
  assert_int_equal(count, 5);
  assert_true(irqs >= 1 && irqs <= 5);
  /* Five bytes under a trigger of 14: a character-timeout interrupt. */
  assert_int_equal(m[8], 0xcc);
  assert_memory_equal(m + 0x100, msg, 5);
  char echo[6] = {0};
  assert_int_equal(read_full(c, echo, 5, 2000), 5);
  assert_string_equal(echo, msg);
  close(c);
  assert_ok(vmm_vm_destroy(vm));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reset_values_and_latch),
      cmocka_unit_test(test_transmit),
      cmocka_unit_test(test_receive_fifo_and_triggers),
      cmocka_unit_test(test_overrun),
      cmocka_unit_test(test_input_queue),
      cmocka_unit_test(test_thre_interrupt_and_out2),
      cmocka_unit_test(test_loopback_and_modem_status),
      cmocka_unit_test(test_priorities),
      cmocka_unit_test(test_linux_8250_probe),
      cmocka_unit_test(test_state),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_torture),
      cmocka_unit_test(test_file_backend),
      cmocka_unit_test(test_output_to_broken_pipe),
      cmocka_unit_test(test_terminal_backend_pty),
      cmocka_unit_test(test_terminal_backend_pipes),
      cmocka_unit_test(test_socket_server),
      cmocka_unit_test(test_socket_flow_control),
      cmocka_unit_test(test_socket_client),
      cmocka_unit_test(test_guest_interrupt),
  };
  return vmmt_run_group(tests);
}
