/*
 * A 64-bit guest: libvmm builds identity page tables and puts the vCPU in
 * long mode; the guest streams Fibonacci numbers to an MMIO device the host
 * implements, reads back the sum the device computed, and halts.
 *
 *   cc long_mode.c $(pkg-config --cflags --libs libvmm) -o long_mode
 */
#include <inttypes.h>
#include <libvmm/vmm.h>
#include <stdio.h>
#include <string.h>

#define RAM_SIZE (4u << 20)
#define TABLES 0x1000
#define CODE 0x10000
#define STACK 0x80000
#define DEVICE 0xd0000000u

/*  mov edi, DEVICE; xor eax, eax; mov ebx, 1; mov ecx, 20
 *  1: mov [rdi], rax; lea rdx, [rax+rbx]; mov rax, rbx; mov rbx, rdx
 *     dec ecx; jnz 1b
 *  mov rax, [rdi+8]; hlt                                               */
static const uint8_t guest[] = {
    0xbf, 0x00, 0x00, 0x00, 0xd0, 0x31, 0xc0, 0xbb, 0x01, 0x00, 0x00, 0x00,
    0xb9, 0x14, 0x00, 0x00, 0x00, 0x48, 0x89, 0x07, 0x48, 0x8d, 0x14, 0x18,
    0x48, 0x89, 0xd8, 0x48, 0x89, 0xd3, 0xff, 0xc9, 0x75, 0xef, 0x48, 0x8b,
    0x47, 0x08, 0xf4};

struct device {
  uint64_t sum;
  unsigned writes;
};

/* MMIO handler: offset 0 takes numbers, offset 8 returns their sum. */
static int device_io(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  struct device *dev = opaque;
  uint64_t v = 0;
  (void)vcpu;
  if (len != 8)
    return VMM_IO_DECLINED;
  if (is_write && addr == DEVICE) {
    memcpy(&v, data, 8);
    printf("%" PRIu64 " ", v);
    dev->sum += v;
    dev->writes++;
  } else if (!is_write && addr == DEVICE + 8) {
    memcpy(data, &dev->sum, 8);
  }
  return 0;
}

static int fail(const char *what, int err) {
  fprintf(stderr, "long_mode: %s: %s\n", what, vmm_strerror(err));
  return 1;
}

int main(void) {
  struct vmm_vm_config cfg;
  struct device dev = {0, 0};
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  struct vmm_exit *exit;
  int err;

  vmm_vm_config_init(&cfg);
  if ((err = vmm_vm_create(&cfg, &vm)) < 0)
    return fail("creating the VM", err);
  if ((err = vmm_mem_slot_add(vm, 0, RAM_SIZE, NULL, 0, NULL)) < 0 ||
      (err = vmm_mem_write(vm, CODE, guest, sizeof(guest))) < 0 ||
      (err = vmm_io_register(vm, VMM_IO_MMIO, DEVICE, 16, device_io, &dev)) < 0 ||
      (err = vmm_vcpu_create(vm, 0, &vcpu)) < 0)
    return fail("setting up", err);

  struct vmm_mode_setup mode = {
      .mode = VMM_MODE_LONG64, .tables = TABLES, .identity_size = 1ull << 32};
  if ((err = vmm_vcpu_set_mode(vcpu, &mode)) < 0)
    return fail("entering long mode", err);
  struct vmm_regs regs;
  vmm_vcpu_get_regs(vcpu, &regs);
  regs.rip = CODE;
  regs.rsp = STACK;
  if ((err = vmm_vcpu_set_regs(vcpu, &regs)) < 0)
    return fail("setting registers", err);

  if ((err = vmm_vcpu_run(vcpu, &exit)) < 0)
    return fail("running", err);
  vmm_vcpu_get_regs(vcpu, &regs);
  printf("\nguest read back %" PRIu64 " after %u writes (%s engine)\n",
         regs.rax, dev.writes, vmm_engine_name(vmm_vm_engine(vm)));
  int ok = exit->reason == VMM_EXIT_HLT && regs.rax == dev.sum &&
           dev.writes == 20;
  vmm_vm_destroy(vm);
  return ok ? 0 : 1;
}
