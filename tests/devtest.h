/*
 * Helpers shared by the device and loop tests (test_dev*.c, test_loop.c).
 *
 * Each program takes the engine as argv[1] ("kvm" or "bt") and exits 77
 * with a message when that engine cannot run here. Register models are
 * driven directly through the VM's port bus (as a vCPU's access would be,
 * without the cost of a guest exit); guest programs from tests/guests/
 * check the same devices end to end. Guest binaries are found in
 * $DEVTEST_BIN_DIR (set by the build), else next to the test program.
 */
#ifndef LIBVMM_DEVTEST_H
#define LIBVMM_DEVTEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h" /* the port bus, for register-level tests */

#define DT_SKIP 77
#define DT_RAM (2ull << 20)
#define DT_CODE 0x10000ull
#define DT_DATA 0x30000ull
#define DT_STACK 0x80000ull
#define DT_KSTACK 0x70000ull
#define DT_TABLES 0x100000ull

static enum vmm_engine_kind dt_engine = VMM_ENGINE_KVM;

static inline int dt_select_engine(int argc, char **argv) {
  const char *name = argc > 1 ? argv[1] : "kvm";
  if (strcmp(name, "kvm") == 0) {
    dt_engine = VMM_ENGINE_KVM;
  } else if (strcmp(name, "bt") == 0) {
    dt_engine = VMM_ENGINE_BT;
  } else {
    fprintf(stderr, "usage: %s [kvm|bt]\n", argv[0]);
    return 2;
  }
  if (vmm_engine_available(dt_engine))
    return 0;
  printf("SKIP: the %s engine is not available here (%s)\n",
         vmm_engine_name(dt_engine),
         dt_engine == VMM_ENGINE_KVM
             ? "/dev/kvm is missing or unusable"
             : "not built into this libvmm, or not implemented yet");
  return DT_SKIP;
}

#define assert_vmm(expr, want)                                                 \
  do {                                                                         \
    int dt_rc_ = (int)(expr);                                                  \
    int dt_want_ = (want);                                                     \
    if (dt_rc_ != dt_want_)                                                    \
      fail_msg("%s returned %s (%d), expected %s (%d)", #expr,                 \
               vmm_err_name(dt_rc_), dt_rc_, vmm_err_name(dt_want_),           \
               dt_want_);                                                      \
  } while (0)
#define assert_ok(expr) assert_vmm(expr, 0)

/* A VM on the engine under test with RAM at 0. NULL (test skipped) when
   the engine cannot provide what flags ask for. */
static inline vmm_vm *dt_vm_flags(uint32_t flags, unsigned vcpus) {
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = dt_engine;
  cfg.flags = flags;
  cfg.max_vcpus = vcpus;
  int err = vmm_vm_create(&cfg, &vm);
  if (err < 0 && flags != 0 && dt_engine != VMM_ENGINE_KVM) {
    print_message("skipped: the %s engine has no interrupt controller yet "
                  "(%s)\n",
                  vmm_engine_name(dt_engine), vmm_strerror(err));
    skip();
  }
  assert_ok(err);
  assert_ok(vmm_mem_slot_add(vm, 0, DT_RAM, NULL, 0, NULL));
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

/* Read a guest binary built from tests/guests/<name>.asm. */
static inline uint8_t *dt_read_bin(const char *name, size_t *len) {
  const char *dir = getenv("DEVTEST_BIN_DIR");
  char self[1024], path[1200];
  if (dir == NULL) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash != NULL)
      *slash = 0;
    dir = n > 0 ? self : ".";
  }
  snprintf(path, sizeof(path), "%s/%s.bin", dir, name);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    fail_msg("cannot open guest %s", path);
  uint8_t *buf = malloc(1 << 16);
  assert_non_null(buf);
  *len = fread(buf, 1, 1 << 16, f);
  fclose(f);
  assert_true(*len > 0);
  return buf;
}

/* Create vCPU index of vm in 64-bit mode at cpl running guest name from
   DT_CODE, RSP at DT_STACK. */
static inline vmm_vcpu *dt_guest(vmm_vm *vm, unsigned index, const char *name,
                                 unsigned cpl) {
  vmm_vcpu *vcpu;
  size_t len;
  uint8_t *bin = dt_read_bin(name, &len);
  assert_ok(vmm_mem_write(vm, DT_CODE, bin, len));
  free(bin);
  assert_ok(vmm_vcpu_create(vm, index, &vcpu));
  struct vmm_mode_setup ms = {.mode = VMM_MODE_LONG64,
                              .cpl = cpl,
                              .tables = DT_TABLES,
                              .kernel_stack = DT_KSTACK};
  assert_ok(vmm_vcpu_set_mode(vcpu, &ms));
  struct vmm_regs r;
  assert_ok(vmm_vcpu_get_regs(vcpu, &r));
  r.rip = DT_CODE;
  r.rsp = DT_STACK;
  assert_ok(vmm_vcpu_set_regs(vcpu, &r));
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

#define dt_run_group(tests)                                                    \
  cmocka_run_group_tests_name(vmm_engine_name(dt_engine), tests, NULL, NULL)

#endif
