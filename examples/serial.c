/*
 * Stock devices and the event loop: a 64-bit guest prints through a 16550A
 * UART (COM1, its output on this program's stdout) and ends through the
 * isa-debug-exit port; its vCPU runs on a thread the library manages and
 * the completion arrives on a loop this program runs.
 *
 *   cc serial.c $(pkg-config --cflags --libs libvmm) -o serial
 */
#include <libvmm/vmm.h>
#include <stdio.h>
#include <string.h>

/* At 0x10000, 64-bit user mode:
 *       lea rsi, [rel msg]
 *   1:  mov dx, 0x3fd            ; LSR
 *   2:  in al, dx
 *       test al, 0x20            ; THR empty?
 *       jz 2b
 *       lodsb
 *       test al, al
 *       jz 3f
 *       mov dx, 0x3f8            ; THR
 *       out dx, al
 *       jmp 1b
 *   3:  out 0xf4, al             ; exit port: status (0 << 1) | 1
 *   msg: "Hello from COM1, on a library thread\n"                      */
static const uint8_t code[] = {0x48, 0x8d, 0x35, 0x17, 0x00, 0x00, 0x00, 0x66,
                               0xba, 0xfd, 0x03, 0xec, 0xa8, 0x20, 0x74, 0xfb,
                               0xac, 0x84, 0xc0, 0x74, 0x07, 0x66, 0xba, 0xf8,
                               0x03, 0xee, 0xeb, 0xeb, 0xe6, 0xf4};
static const char msg[] = "Hello from COM1, on a library thread\n";

static int status = -1;

/* Called on the loop's thread (here: this one, inside vmm_loop_run()). */
static void on_done(vmm_vcpu *vcpu, int err, struct vmm_exit *exit,
                    void *opaque) {
  (void)vcpu, (void)opaque;
  if (err == 0 && exit->reason == VMM_EXIT_SYSTEM &&
      exit->system.event == VMM_SYSTEM_EXIT_PORT)
    status = exit->system.status;
}

static int fail(const char *what, int err) {
  fprintf(stderr, "serial: %s: %s\n", what, vmm_strerror(err));
  return 1;
}

int main(void) {
  struct vmm_vm_config cfg;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  vmm_loop *loop;
  int err;

  vmm_vm_config_init(&cfg);
  if ((err = vmm_vm_create(&cfg, &vm)) < 0)
    return fail("creating the VM", err);

  /* A loop the library creates and this program runs. */
  struct vmm_loop_config lcfg;
  vmm_loop_config_init(&lcfg);
  if ((err = vmm_loop_create(&lcfg, &loop)) < 0 ||
      (err = vmm_vm_set_loop(vm, loop)) < 0)
    return fail("setting up the loop", err);

  /* COM1 on our stdout (no input: in_fd -1), and the exit port. */
  struct vmm_uart_config uart;
  vmm_uart_config_init(&uart);
  uart.backend = VMM_UART_TERMINAL;
  uart.in_fd = -1;
  uart.out_fd = 1;
  struct vmm_exit_port_config xport;
  vmm_exit_port_config_init(&xport);
  if ((err = vmm_uart_create(vm, &uart, NULL)) < 0 ||
      (err = vmm_exit_port_create(vm, &xport, NULL)) < 0)
    return fail("adding devices", err);

  struct vmm_mode_setup mode = {.mode = VMM_MODE_LONG64,
                                .cpl = 3,
                                .tables = 0x100000,
                                .kernel_stack = 0x70000};
  struct vmm_regs regs;
  if ((err = vmm_mem_slot_add(vm, 0, 2 << 20, NULL, 0, NULL)) < 0 ||
      (err = vmm_mem_write(vm, 0x10000, code, sizeof(code))) < 0 ||
      (err = vmm_mem_write(vm, 0x10000 + sizeof(code), msg, sizeof(msg))) < 0 ||
      (err = vmm_vcpu_create(vm, 0, &vcpu)) < 0 ||
      (err = vmm_vcpu_set_mode(vcpu, &mode)) < 0 ||
      (err = vmm_vcpu_get_regs(vcpu, &regs)) < 0)
    return fail("setting up the guest", err);
  regs.rip = 0x10000;
  regs.rsp = 0x80000;
  if ((err = vmm_vcpu_set_regs(vcpu, &regs)) < 0)
    return fail("setting registers", err);

  /* Run on a library thread; the loop returns once the run completed. */
  if ((err = vmm_vcpu_start(vcpu, on_done, NULL)) < 0)
    return fail("starting the vCPU", err);
  vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT);

  vmm_vm_destroy(vm);
  vmm_loop_destroy(loop);
  if (status != 1) {
    fprintf(stderr, "serial: the guest did not exit through the port\n");
    return 1;
  }
  return 0;
}
