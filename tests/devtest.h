/*
 * Helpers shared by the device and loop tests (test_dev*.c, test_loop.c),
 * on top of testutil.h (engine selection, assert_vmm, guest binaries).
 *
 * Register models are driven directly through the VM's port bus, as a
 * vCPU's access would be dispatched but without the cost of a guest exit;
 * guest programs (tests/guests/dev_*.asm) check the same devices end to
 * end.
 */
#ifndef LIBVMM_DEVTEST_H
#define LIBVMM_DEVTEST_H

#include "testutil.h"

#include <jansson.h>

#include "internal.h" /* the port bus, for register-level tests */

/* Where the device guests keep their results. */
#define DT_DATA 0x30000ull

/* A VM on the engine under test with RAM at 0. The test is skipped when
   the engine cannot provide what flags ask for (the BT engine has no
   interrupt controller yet). */
static inline vmm_vm *dt_vm_flags(uint32_t flags, unsigned vcpus) {
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.flags = flags;
  cfg.max_vcpus = vcpus;
  int err = vmm_vm_create(&cfg, &vm);
  if (err < 0 && flags != 0 && vmmt_engine != VMM_ENGINE_KVM) {
    print_message("skipped: the %s engine has no interrupt controller yet "
                  "(%s)\n",
                  vmm_engine_name(vmmt_engine), vmm_strerror(err));
    skip();
  }
  assert_ok(err);
  assert_ok(vmm_mem_slot_add(vm, 0, VMMT_RAM, NULL, 0, NULL));
  return vm;
}

static inline vmm_vm *dt_vm(void) {
  return dt_vm_flags(0, 1);
}

/* Port access through the VM's bus, as a vCPU's would be dispatched.
   Returns the bus result: 0 handled, VMM_IO_DECLINED (1), or an error. */
static inline int dt_pio(vmm_vm *vm, uint16_t port, void *data, uint32_t len,
                         bool is_write) {
  if (!is_write)
    memset(data, 0, len);
  return vmm__iobus_dispatch(&vm->pio, NULL, port, data, len, is_write);
}

static inline void dt_out(vmm_vm *vm, uint16_t port, uint32_t v, uint32_t len) {
  assert_int_equal(dt_pio(vm, port, &v, len, true), 0);
}

static inline uint32_t dt_in(vmm_vm *vm, uint16_t port, uint32_t len) {
  uint32_t v = 0;
  assert_int_equal(dt_pio(vm, port, &v, len, false), 0);
  return v;
}

static inline void dt_outb(vmm_vm *vm, uint16_t port, uint8_t v) {
  dt_out(vm, port, v, 1);
}

static inline uint8_t dt_inb(vmm_vm *vm, uint16_t port) {
  return (uint8_t)dt_in(vm, port, 1);
}

/* Create vCPU index of vm in 64-bit mode at cpl running guest name (from
   tests/guests/<name>.asm) at VMMT_CODE, RSP at VMMT_STACK. */
static inline vmm_vcpu *dt_guest(vmm_vm *vm, unsigned index, const char *name,
                                 unsigned cpl) {
  vmm_vcpu *vcpu;
  size_t len;
  uint8_t *bin = vmmt_read_bin(name, &len);
  assert_ok(vmm_mem_write(vm, VMMT_CODE, bin, len));
  free(bin);
  assert_ok(vmm_vcpu_create(vm, index, &vcpu));
  vmmt_setup_vcpu(vcpu, VMM_MODE_LONG64, cpl);
  vmmt_set_ip_sp(vcpu, VMMT_CODE, VMMT_STACK);
  return vcpu;
}

static inline void dt_set_reg(vmm_vcpu *vcpu, enum vmm_reg reg, uint64_t v) {
  assert_ok(vmm_vcpu_reg_write(vcpu, reg, v));
}

/* Run and require VMM_EXIT_SYSTEM with event and status. */
static inline void dt_run_system(vmm_vcpu *vcpu, uint32_t event,
                                 int32_t status) {
  struct vmm_exit *e = NULL;
  assert_ok(vmm_vcpu_run(vcpu, &e));
  if (e->reason != VMM_EXIT_SYSTEM) {
    uint64_t rip = 0;
    vmm_vcpu_reg_read(vcpu, VMM_REG_RIP, &rip);
    fail_msg("exit reason %d (io port 0x%x), expected VMM_EXIT_SYSTEM; "
             "rip 0x%llx",
             (int)e->reason, e->reason == VMM_EXIT_IO ? e->io.port : 0,
             (unsigned long long)rip);
  }
  assert_int_equal(e->system.event, event);
  assert_int_equal(e->system.status, status);
}

/* Integer member of a JSON object (stats), failing if absent. */
static inline long long dt_json_int(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  if (!json_is_integer(v))
    fail_msg("JSON member %s missing", key);
  return (long long)json_integer_value(v);
}

static inline long long dt_stat(vmm_dev *dev, const char *key) {
  json_t *s = NULL;
  assert_ok(vmm_dev_stats(dev, &s));
  long long v = dt_json_int(s, key);
  json_decref(s);
  return v;
}

#endif
