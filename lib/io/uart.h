/*
 * 16550A UART: what the register model (uart16550.c) and the backends
 * (uart_backend.c) share. See include/libvmm/uart16550.h.
 */
#ifndef LIBVMM_IO_UART_H
#define LIBVMM_IO_UART_H

#include "../internal.h"

#define UART_FIFO 16
/* Output waiting for an asynchronous backend (socket) before the TX FIFO
   itself backs up and THRE stays clear. */
#define UART_OUTQ (64 * 1024)

struct uart_ring {
  uint8_t buf[UART_FIFO];
  unsigned head, count;
};

struct uart_be;

struct uart {
  vmm_vm *vm;
  vmm_dev *dev;
  struct vmm_uart_config cfg; /* path is a private copy */
  pthread_mutex_t lock;

  /* Registers. */
  uint8_t ier, lcr, mcr, scr;
  uint16_t divisor;
  uint8_t lsr_err;   /* OE/PE/FE/BI, cleared by reading LSR */
  uint8_t msr_lines; /* CTS/DSR/RI/DCD (bits 4-7) */
  uint8_t msr_delta; /* DCTS/DDSR/TERI/DDCD (bits 0-3) */
  uint8_t rx_trigger;
  bool fifo_enabled;
  bool thr_ipending; /* THRE interrupt not yet acknowledged */
  uint8_t rbr_last;
  struct uart_ring rx, tx;
  bool irq_level;

  /* Host-side queues. */
  uint8_t inq[VMM_UART_INPUT_QUEUE];
  size_t inq_head, inq_count;
  bool rx_wanted; /* a backend waits for room in inq */
  uint8_t *outq;  /* asynchronous backends only */
  size_t outq_head, outq_count;

  uint64_t tx_bytes, rx_bytes, overruns, tx_dropped;

  struct uart_be *be; /* NULL for NONE and CALLBACK */
};

/* Model side, called by backends (they take the lock). */
/* Queue input with flow control; returns the bytes taken. Sets rx_wanted
   when not all were taken so the backend is told when room appears. */
size_t vmm__uart_rx_offer(struct uart *u, const uint8_t *buf, size_t len);
/* Take output queued for an asynchronous backend (up to max bytes). */
size_t vmm__uart_tx_take(struct uart *u, uint8_t *buf, size_t max);
void vmm__uart_tx_dropped(struct uart *u, size_t n);

/* Backend side. open/close run on the loop thread for loop backends. */
int vmm__uart_be_open(struct uart *u);
void vmm__uart_be_close(struct uart *u);
bool vmm__uart_be_async(const struct uart *u);
/* Synchronous output, on the vCPU thread, without the lock. */
void vmm__uart_be_write(struct uart *u, const uint8_t *buf, size_t len);
/* Output was queued / input room appeared: wake the backend. No lock. */
void vmm__uart_be_kick_tx(struct uart *u);
void vmm__uart_be_kick_rx(struct uart *u);

#endif
