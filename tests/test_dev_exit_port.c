/*
 * The isa-debug-exit compatible exit port: register level and through a
 * guest's vmm_vcpu_run().
 */
#include "devtest.h"

static vmm_dev *exit_port(vmm_vm *vm, uint16_t port, uint8_t iosize) {
  struct vmm_exit_port_config cfg;
  vmm_dev *dev = NULL;
  vmm_exit_port_config_init(&cfg);
  cfg.port = port;
  cfg.iosize = iosize;
  assert_ok(vmm_exit_port_create(vm, &cfg, &dev));
  return dev;
}

/* The pending system event, as a vCPU's next run would report it. */
static uint64_t pending_event(vmm_vm *vm) {
  return (uint64_t)atomic_load(&vm->system_event);
}

static void test_defaults_and_status(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = exit_port(vm, 0xf4, 4);
  assert_string_equal(vmm_dev_type(dev), "exit-port");
  assert_ptr_equal(vmm_dev_find(vm, "exit-port"), dev);
  assert_int_equal(pending_event(vm), 0);

  dt_outb(vm, 0xf4, 0x21);
  assert_int_equal(pending_event(vm),
                   (uint64_t)VMM_SYSTEM_EXIT_PORT << 32 | ((0x21 << 1) | 1));
  /* The first event wins until cleared. */
  dt_outb(vm, 0xf4, 0x05);
  assert_int_equal((uint32_t)pending_event(vm), (0x21 << 1) | 1);
  assert_ok(vmm_vm_system_event_clear(vm));

  /* 16- and 32-bit writes: the value is zero-extended from the width. */
  dt_out(vm, 0xf4, 0x1234, 2);
  assert_int_equal((uint32_t)pending_event(vm), (0x1234 << 1) | 1);
  assert_ok(vmm_vm_system_event_clear(vm));
  dt_out(vm, 0xf4, 0x40000000, 4);
  assert_int_equal((uint32_t)pending_event(vm), (0x40000000u << 1) | 1);
  assert_ok(vmm_vm_system_event_clear(vm));
  /* Values past 31 bits: the status is the low 32 bits of (v << 1) | 1. */
  dt_out(vm, 0xf4, 0xffffffffu, 4);
  assert_int_equal((uint32_t)pending_event(vm), 0xffffffffu);
  assert_ok(vmm_vm_system_event_clear(vm));

  /* Reads give 0 and raise nothing. */
  assert_int_equal(dt_in(vm, 0xf4, 4), 0);
  assert_int_equal(pending_event(vm), 0);
  /* Writes to the other claimed ports are ignored, and counted. */
  dt_outb(vm, 0xf5, 7);
  dt_out(vm, 0xf6, 7, 2);
  assert_int_equal(pending_event(vm), 0);
  assert_int_equal(dt_stat(dev, "ignored"), 2);
  assert_int_equal(dt_stat(dev, "writes"), 5);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_iosize_and_config_errors(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  struct vmm_exit_port_config cfg;
  vmm_exit_port_config_init(&cfg);
  assert_int_equal(cfg.port, 0xf4);
  assert_int_equal(cfg.iosize, 4);
  cfg.iosize = 3;
  assert_vmm(vmm_exit_port_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.iosize = 4;
  cfg.port = 0xfffe; /* would leave the port space */
  assert_vmm(vmm_exit_port_create(vm, &cfg, NULL), VMM_EINVAL);
  cfg.size = 0;
  assert_vmm(vmm_exit_port_create(vm, &cfg, NULL), VMM_EINVAL);
  assert_vmm(vmm_exit_port_create(NULL, &cfg, NULL), VMM_EINVAL);

  /* iosize 1: a 2-byte access at the port is not entirely inside the
     device's range, so the bus does not give it to the device. */
  exit_port(vm, 0x501, 1);
  uint16_t v = 3;
  assert_int_equal(dt_pio(vm, 0x501, &v, 2, true), VMM_IO_DECLINED);
  assert_int_equal(pending_event(vm), 0);
  dt_outb(vm, 0x501, 3);
  assert_int_equal((uint32_t)pending_event(vm), 7);
  assert_ok(vmm_vm_system_event_clear(vm));

  /* The port is taken: a second device there is refused, and its name too. */
  vmm_exit_port_config_init(&cfg);
  cfg.port = 0x501;
  cfg.name = "second";
  assert_vmm(vmm_exit_port_create(vm, &cfg, NULL), VMM_EOVERLAP);
  assert_null(vmm_dev_find(vm, "second"));
  cfg.port = 0x600;
  cfg.name = "exit-port"; /* taken by the first one */
  assert_vmm(vmm_exit_port_create(vm, &cfg, NULL), VMM_EEXIST);
  assert_ok(vmm_vm_destroy(vm));
}

/* A guest writes the port with each width; vmm_vcpu_run() reports it. */
static void test_guest_exit_status(void **state) {
  (void)state;
  static const struct {
    uint32_t width, value;
  } cases[] = {{1, 0x00}, {1, 0x7f}, {2, 0x1ff}, {4, 0x10001}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    vmm_vm *vm = dt_vm();
    exit_port(vm, 0xf4, 4);
    vmm_vcpu *vcpu = dt_guest(vm, 0, "dev_exit", 3);
    dt_set_reg(vcpu, VMM_REG_RDI, 0xf4);
    dt_set_reg(vcpu, VMM_REG_RSI, cases[i].value);
    dt_set_reg(vcpu, VMM_REG_RBX, cases[i].width);
    dt_run_system(vcpu, VMM_SYSTEM_EXIT_PORT,
                  (int32_t)((cases[i].value << 1) | 1));
    /* Like QEMU: the guest stops before the next instruction runs, and
       runs end the same way until the host clears the event. */
    struct vmm_exit *e;
    assert_ok(vmm_vcpu_run(vcpu, &e));
    assert_int_equal(e->reason, VMM_EXIT_SYSTEM);
    assert_ok(vmm_vm_system_event_clear(vm));
    assert_ok(vmm_vcpu_run(vcpu, &e));
    assert_int_equal(e->reason, VMM_EXIT_IO);
    assert_int_equal(e->io.port, 0xeb);
    assert_ok(vmm_vm_destroy(vm));
  }
}

/* Without the device the same write is an ordinary unhandled I/O exit. */
static void test_guest_without_device(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_vcpu *vcpu = dt_guest(vm, 0, "dev_exit", 3);
  dt_set_reg(vcpu, VMM_REG_RDI, 0xf4);
  dt_set_reg(vcpu, VMM_REG_RSI, 1);
  dt_set_reg(vcpu, VMM_REG_RBX, 1);
  struct vmm_exit *e;
  assert_ok(vmm_vcpu_run(vcpu, &e));
  assert_int_equal(e->reason, VMM_EXIT_IO);
  assert_int_equal(e->io.port, 0xf4);
  assert_ok(vmm_vm_destroy(vm));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_status),
      cmocka_unit_test(test_iosize_and_config_errors),
      cmocka_unit_test(test_guest_exit_status),
      cmocka_unit_test(test_guest_without_device),
  };
  return vmmt_run_group(tests);
}
