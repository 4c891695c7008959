/*
 * libvmm - 16550A UART.
 *
 * The register model of a 16550A: RBR/THR, IER, IIR/FCR, LCR, MCR, LSR,
 * MSR, SCR, the divisor latch (LCR.DLAB), 16-byte receive and transmit
 * FIFOs with the four receive trigger levels, line status errors (overrun),
 * loopback, modem status with its delta bits, and the receive-data,
 * character-timeout, transmitter-empty, line-status and modem-status
 * interrupts with their priorities. COM1 (0x3f8, IRQ 4) by default.
 *
 * Model choices (docs/devices.md has the rationale):
 *   - No baud-rate timing: a byte written to THR reaches the backend at
 *     once, so THRE is set again at once unless the backend is full (socket
 *     output that the peer does not read); then the TX FIFO fills and THRE
 *     stays clear, which flow-controls guests that poll LSR.
 *   - The character-timeout interrupt (IIR 0xC, FIFO mode) is reported as
 *     soon as the receive FIFO holds data below the trigger level, instead
 *     of four character times later.
 *   - As on a PC, the interrupt reaches the line only while MCR.OUT2 is set
 *     and loopback is off.
 *   - Without a modem, MSR reports CTS, DSR and DCD asserted.
 *
 * Input: bytes from the backend or from vmm_uart_input() wait in an input
 * queue and move into the receive FIFO as the guest empties it, so input is
 * never lost; vmm_uart_input_raw() instead delivers bytes "on the wire" now,
 * and what does not fit overruns (LSR.OE), as on hardware.
 */
#ifndef LIBVMM_UART16550_H
#define LIBVMM_UART16550_H

#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

enum vmm_uart_backend {
  /** Output discarded; input only through vmm_uart_input(). */
  VMM_UART_NONE = 0,
  /**
   * A terminal: output written to out_fd, input read from in_fd on the
   * VM's loop. If in_fd is a terminal and raw is set, it is put in raw mode
   * (no echo, no line editing; output post-processing kept so "\n" still
   * starts a new line) and restored when the device is destroyed. The
   * caller's descriptors are never closed and their flags are restored.
   */
  VMM_UART_TERMINAL = 1,
  /** A file: output appended to path (created, truncated) or written to
      fd; no input. */
  VMM_UART_FILE = 2,
  /**
   * A Unix stream socket at path, served on the VM's loop: listening
   * (server, the default: one client at a time, later ones are refused
   * while one is connected; the socket file is removed on destroy) or
   * connecting (client). Input and output; output is discarded while no
   * peer is connected.
   */
  VMM_UART_SOCKET = 3,
  /** Output through write_fn; input through vmm_uart_input(). */
  VMM_UART_CALLBACK = 4,
};

/**
 * Output callback. Called on the thread of the vCPU that wrote THR, without
 * the device's lock (it may call vmm_uart_input()), for each byte or burst
 * the guest sends.
 */
typedef void (*vmm_uart_write_fn)(vmm_dev *dev, const uint8_t *buf, size_t len,
                                  void *opaque);

/** UART configuration; fill with vmm_uart_config_init(). */
struct vmm_uart_config {
  size_t size;
  /** Device name. Default "com1". */
  const char *name;
  /** First of the 8 ports. Default 0x3f8. */
  uint16_t base;
  /** Interrupt line. Default 4. */
  uint32_t gsi;
  enum vmm_uart_backend backend;
  /** TERMINAL: descriptors (defaults 0 and 1) and raw mode (default on). */
  int in_fd, out_fd;
  bool raw;
  /** TERMINAL with raw: keep ^C/^Z generating signals. Default off. */
  bool keep_signals;
  /** FILE, SOCKET: path (copied). FILE: or fd >= 0 with path NULL. */
  const char *path;
  int fd;
  /** SOCKET: connect to path instead of listening. */
  bool client;
  /** CALLBACK. */
  vmm_uart_write_fn write_fn;
  void *write_opaque;
};

VMM_EXTERN void vmm_uart_config_init(struct vmm_uart_config *cfg);

/**
 * Create a UART and attach it to vm. TERMINAL and SOCKET backends use the
 * VM's loop (vmm_vm_get_loop(): created if the VM has none); their set-up
 * runs on the loop thread (see loop.h for the threading rules).
 * @return 0; -VMM_EINVAL for a bad configuration; system errors from
 *         opening the file or socket (e.g. -EADDRINUSE); vmm_dev_attach()
 *         errors.
 */
VMM_EXTERN int vmm_uart_create(vmm_vm *vm, const struct vmm_uart_config *cfg,
                               vmm_dev **out);

/** Size of the input queue of vmm_uart_input(), in bytes. */
#define VMM_UART_INPUT_QUEUE 4096

/**
 * Queue input for the guest (as if typed by a flow-controlled peer).
 * Thread-safe.
 * @return the number of bytes taken (less than len when the queue is full:
 *         offer the rest later), or -VMM_EINVAL.
 */
VMM_EXTERN long vmm_uart_input(vmm_dev *dev, const void *buf, size_t len);

/**
 * Deliver bytes to the receiver now, bypassing the input queue: bytes that
 * do not fit in the receive FIFO (or the holding register in non-FIFO
 * mode) are overruns, as on hardware. For testing guest drivers.
 * Thread-safe.
 * @return the number of bytes the receiver kept, or -VMM_EINVAL.
 */
VMM_EXTERN long vmm_uart_input_raw(vmm_dev *dev, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
