/*
 * The smallest complete libvmm program: one VM, one memory slot, a 16-bit
 * guest that writes a string to an I/O port, a host handler that prints
 * it, and a clean exit when the guest halts.
 *
 *   cc hello.c $(pkg-config --cflags --libs libvmm) -o hello
 */
#include <libvmm/vmm.h>
#include <stdio.h>
#include <string.h>

/* Real-mode guest at 0x1000:
 *   mov si, msg; mov cx, 14; mov dx, 0xe9; cld; rep outsb; hlt
 *   msg: "Hello, world!\n"                                            */
static const uint8_t guest[] = {
    0xbe, 0x0d, 0x10, 0xb9, 0x0e, 0x00, 0xba, 0xe9, 0x00, 0xfc, 0xf3, 0x6e,
    0xf4, 'H', 'e', 'l', 'l', 'o', ',', ' ', 'w', 'o', 'r', 'l', 'd', '!', '\n'};

/* Port handler: called by the library on the vCPU thread for each byte. */
static int console_out(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                       bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)opaque;
  if (is_write)
    fwrite(data, 1, len, stdout);
  return 0;
}

static int fail(const char *what, int err) {
  fprintf(stderr, "hello: %s: %s\n", what, vmm_strerror(err));
  return 1;
}

int main(void) {
  struct vmm_vm_config cfg;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  struct vmm_exit *exit;
  int err;

  vmm_vm_config_init(&cfg); /* engine AUTO: KVM or the binary translator */
  if ((err = vmm_vm_create(&cfg, &vm)) < 0)
    return fail("creating the VM", err);
  if ((err = vmm_mem_slot_add(vm, 0, 0x10000, NULL, 0, NULL)) < 0 ||
      (err = vmm_mem_write(vm, 0x1000, guest, sizeof(guest))) < 0 ||
      (err = vmm_io_register(vm, VMM_IO_PORT, 0xe9, 1, console_out, NULL)) < 0 ||
      (err = vmm_vcpu_create(vm, 0, &vcpu)) < 0)
    return fail("setting up", err);

  struct vmm_mode_setup mode = {.mode = VMM_MODE_REAL};
  struct vmm_regs regs;
  memset(&regs, 0, sizeof(regs));
  regs.rip = 0x1000;
  if ((err = vmm_vcpu_set_mode(vcpu, &mode)) < 0 ||
      (err = vmm_vcpu_set_regs(vcpu, &regs)) < 0)
    return fail("setting registers", err);

  if ((err = vmm_vcpu_run(vcpu, &exit)) < 0)
    return fail("running", err);
  int status = exit->reason == VMM_EXIT_HLT ? 0 : 1;
  if (status)
    fprintf(stderr, "hello: unexpected exit %d\n", exit->reason);
  printf("guest halted on the %s engine\n",
         vmm_engine_name(vmm_vm_engine(vm)));
  vmm_vm_destroy(vm);
  return status;
}
