/*
 * Tests of include/libvmm/vm.h: configuration, creation and its error
 * paths, engine choice, stop requests, system events, the exit handler and
 * interrupt lines (with the engine's interrupt controller: an in-kernel PIC
 * and PIT delivering interrupts to a guest).
 */
#include "testutil.h"

#include <pthread.h>

/* CPL 3 code: out 0x10, al; out 0xeb, al */
static const uint8_t out10_done[] = {0xe6, 0x10, 0xe6, 0xeb};

static void test_config_init(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  memset(&cfg, 0xa5, sizeof(cfg));
  vmm_vm_config_init(&cfg);
  assert_int_equal(cfg.size, sizeof(cfg));
  assert_int_equal(cfg.engine, VMM_ENGINE_AUTO);
  assert_int_equal(cfg.max_vcpus, 1);
  assert_int_equal(cfg.flags, 0);
  assert_int_equal(cfg.kick_signal, VMM_KICK_SIGNAL_DEFAULT);
  assert_string_equal(cfg.kvm_device, "/dev/kvm");
  assert_int_equal(cfg.bt_cache_size, 0);
  assert_null(cfg.log_fn);
  assert_null(cfg.log_opaque);
  assert_int_equal(cfg.log_level, VMM_LOG_WARN);
  vmm_vm_config_init(NULL); /* accepted, does nothing */
}

struct log_capture {
  unsigned calls;
  enum vmm_log_level level;
  char msg[512];
};

static void capture_log(enum vmm_log_level level, const char *msg,
                        void *opaque) {
  struct log_capture *c = opaque;
  c->calls++;
  c->level = level;
  snprintf(c->msg, sizeof(c->msg), "%s", msg);
}

/* Apply one change to a default config and expect creation to fail. */
static void expect_bad(void (*change)(struct vmm_vm_config *), int want) {
  struct vmm_vm_config cfg;
  vmm_vm *vm = (vmm_vm *)0x1;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  change(&cfg);
  assert_vmm(vmm_vm_create(&cfg, &vm), want);
  assert_ptr_equal(vm, (vmm_vm *)0x1); /* untouched on failure */
}

static void no_vcpus(struct vmm_vm_config *c) {
  c->max_vcpus = 0;
}
static void many_vcpus(struct vmm_vm_config *c) {
  c->max_vcpus = VMM_MAX_VCPUS + 1;
}
static void bad_flags(struct vmm_vm_config *c) {
  c->flags = 1u << 7;
}
static void pit_alone(struct vmm_vm_config *c) {
  c->flags = VMM_VM_PIT;
}
static void bad_engine(struct vmm_vm_config *c) {
  c->engine = (enum vmm_engine_kind)7;
}
static void bad_level(struct vmm_vm_config *c) {
  c->log_level = (enum vmm_log_level)(VMM_LOG_DEBUG + 1);
}
static void bad_signal_low(struct vmm_vm_config *c) {
  c->kick_signal = -2;
}
static void bad_signal_high(struct vmm_vm_config *c) {
  c->kick_signal = 65;
}
static void size_zero(struct vmm_vm_config *c) {
  c->size = 0;
}
static void size_big(struct vmm_vm_config *c) {
  c->size = sizeof(*c) + 8;
}

static void test_create_bad_config(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm *vm;
  vmm_vm_config_init(&cfg);
  assert_vmm(vmm_vm_create(NULL, &vm), VMM_EINVAL);
  assert_vmm(vmm_vm_create(&cfg, NULL), VMM_EINVAL);
  expect_bad(no_vcpus, VMM_EINVAL);
  expect_bad(many_vcpus, VMM_EINVAL);
  expect_bad(bad_flags, VMM_EINVAL);
  expect_bad(pit_alone, VMM_EINVAL);
  expect_bad(bad_engine, VMM_EINVAL);
  expect_bad(bad_level, VMM_EINVAL);
  expect_bad(bad_signal_low, VMM_EINVAL);
  expect_bad(bad_signal_high, VMM_EINVAL);
  expect_bad(size_zero, VMM_EINVAL);
  expect_bad(size_big, VMM_EINVAL);
}

/* A bad configuration is explained through the log callback. */
static void test_create_logs_reason(void **state) {
  (void)state;
  struct log_capture c = {0};
  struct vmm_vm_config cfg;
  vmm_vm *vm;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.max_vcpus = 0;
  cfg.log_fn = capture_log;
  cfg.log_opaque = &c;
  assert_vmm(vmm_vm_create(&cfg, &vm), VMM_EINVAL);
  assert_int_equal(c.calls, 1);
  assert_int_equal(c.level, VMM_LOG_ERROR);
  assert_non_null(strstr(c.msg, "max_vcpus"));

  /* Below the configured level nothing is passed on. */
  memset(&c, 0, sizeof(c));
  cfg.log_level = VMM_LOG_ERROR;
  cfg.max_vcpus = 1;
  cfg.flags = VMM_VM_PIT;
  assert_vmm(vmm_vm_create(&cfg, &vm), VMM_EINVAL);
  assert_int_equal(c.calls, 1);
  assert_non_null(strstr(c.msg, "VMM_VM_PIT"));
}

/* A caller compiled against an older, smaller config: the library reads
   only `size` bytes and defaults the rest. */
static void test_create_old_config(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.size = offsetof(struct vmm_vm_config, bt_cache_size);
  /* Garbage the old caller does not know about must not be read. */
  cfg.log_fn = (vmm_log_fn)0x1;
  cfg.log_level = (enum vmm_log_level)99;
  assert_ok(vmm_vm_create(&cfg, &vm));
  assert_int_equal(vmm_vm_engine(vm), vmmt_engine);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_create_null_device_defaults(void **state) {
  (void)state;
  vmmt_skip_unless(VMM_ENGINE_KVM, "kvm_device is a KVM setting");
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;
  cfg.kvm_device = NULL;
  assert_ok(vmm_vm_create(&cfg, &vm));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_engine_names(void **state) {
  (void)state;
  assert_string_equal(vmm_engine_name(VMM_ENGINE_KVM), "kvm");
  assert_string_equal(vmm_engine_name(VMM_ENGINE_BT), "bt");
  assert_string_equal(vmm_engine_name(VMM_ENGINE_AUTO), "auto");
  assert_string_equal(vmm_engine_name((enum vmm_engine_kind)42), "unknown");
}

static void test_engine_available(void **state) {
  (void)state;
  bool kvm = vmm_engine_available(VMM_ENGINE_KVM);
  bool bt = vmm_engine_available(VMM_ENGINE_BT);
  assert_true(vmm_engine_available(vmmt_engine));
  assert_int_equal(vmm_engine_available(VMM_ENGINE_AUTO), kvm || bt);
  assert_false(vmm_engine_available((enum vmm_engine_kind)42));
}

static void test_engine_choice(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;

  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  assert_ok(vmm_vm_create(&cfg, &vm));
  assert_int_equal(vmm_vm_engine(vm), vmmt_engine);
  assert_ok(vmm_vm_destroy(vm));

  /* AUTO picks a real engine: KVM when BT is absent. */
  cfg.engine = VMM_ENGINE_AUTO;
  assert_ok(vmm_vm_create(&cfg, &vm));
  enum vmm_engine_kind got = vmm_vm_engine(vm);
  assert_true(got == VMM_ENGINE_KVM || got == VMM_ENGINE_BT);
  assert_true(vmm_engine_available(got));
  if (!vmm_engine_available(VMM_ENGINE_BT))
    assert_int_equal(got, VMM_ENGINE_KVM);
  assert_ok(vmm_vm_destroy(vm));

  assert_int_equal(vmm_vm_engine(NULL), VMM_ENGINE_AUTO);
}

/* An engine that cannot run here is ENODEV, with the reason logged. */
static void test_engine_unavailable(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  struct log_capture c = {0};
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;
  cfg.kvm_device = "/nonexistent/kvm";
  cfg.log_fn = capture_log;
  cfg.log_opaque = &c;
  assert_vmm(vmm_vm_create(&cfg, &vm), VMM_ENODEV);
  assert_null(vm);
  assert_true(c.calls >= 1);
  assert_non_null(strstr(c.msg, "kvm"));

  if (!vmm_engine_available(VMM_ENGINE_BT)) {
    cfg.engine = VMM_ENGINE_BT;
    assert_vmm(vmm_vm_create(&cfg, &vm), VMM_ENODEV);
  }
}

static void test_destroy_null(void **state) {
  (void)state;
  assert_ok(vmm_vm_destroy(NULL));
}

/* A VM owns its vCPUs and slots: destroy frees them (leak checkers see it)
   even when they were never run. */
static void test_destroy_with_everything(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(4, 0);
  vmm_vcpu *v;
  assert_ok(vmm_mem_slot_add(vm, 0, 0x10000, NULL, 0, NULL));
  assert_ok(
      vmm_mem_slot_add(vm, 0x100000, 0x10000, NULL, VMM_MEM_DIRTY_LOG, NULL));
  assert_ok(vmm_vcpu_create(vm, 0, &v));
  assert_ok(vmm_vcpu_create(vm, 3, &v));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_stop(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(2, 0);
  vmm_vcpu *v[2];
  assert_ok(vmm_mem_slot_add(vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_mem_write(vm, VMMT_CODE, out10_done, sizeof(out10_done)));
  for (unsigned i = 0; i < 2; i++) {
    assert_ok(vmm_vcpu_create(vm, i, &v[i]));
    vmmt_setup_vcpu(v[i], VMM_MODE_LONG64, 3);
    vmmt_set_ip_sp(v[i], VMMT_CODE, VMMT_STACK);
  }
  assert_vmm(vmm_vm_stop(NULL), VMM_EINVAL);
  assert_ok(vmm_vm_stop(vm));
  for (unsigned i = 0; i < 2; i++) {
    vmmt_run_expect(v[i], VMM_EXIT_STOPPED);
    /* Nothing ran. */
    assert_int_equal(vmmt_reg(v[i], VMM_REG_RIP), VMMT_CODE);
    /* The request is consumed: the next run executes the guest. */
    vmmt_run_to_port(v[i], 0x10);
  }
  assert_ok(vmm_vm_destroy(vm));
}

struct port_log {
  unsigned count;
  uint16_t ports[64];
  uint8_t values[64];
  /* Action for a write to port 0x10. */
  int (*on_ready)(vmm_vcpu *vcpu, void *arg);
  void *arg;
  int action_rc;
};

static int log_port(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                    bool is_write, void *opaque) {
  struct port_log *l = opaque;
  (void)len;
  if (!is_write)
    return VMM_IO_DECLINED;
  if (l->count < 64) {
    l->ports[l->count] = (uint16_t)port;
    l->values[l->count] = *(uint8_t *)data;
    l->count++;
  }
  if (port == 0x10 && l->on_ready != NULL)
    l->action_rc = l->on_ready(vcpu, l->arg);
  return 0;
}

static void test_system_event(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  vmmt_load(&t, VMMT_CODE, out10_done, sizeof(out10_done));

  assert_vmm(vmm_vm_system_event(NULL, VMM_SYSTEM_POWEROFF, 0), VMM_EINVAL);
  assert_vmm(vmm_vm_system_event(t.vm, 0, 0), VMM_EINVAL);
  assert_vmm(vmm_vm_system_event(t.vm, VMM_SYSTEM_EXIT_PORT + 1, 0),
             VMM_EINVAL);
  assert_vmm(vmm_vm_system_event_clear(NULL), VMM_EINVAL);

  assert_ok(vmm_vm_system_event(t.vm, VMM_SYSTEM_POWEROFF, -3));
  /* The first event wins until cleared. */
  assert_vmm(vmm_vm_system_event(t.vm, VMM_SYSTEM_RESET, 1), VMM_EBUSY);
  for (int i = 0; i < 2; i++) {
    struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_SYSTEM);
    assert_int_equal(e->system.event, VMM_SYSTEM_POWEROFF);
    assert_int_equal(e->system.status, -3);
  }
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RIP), VMMT_CODE);
  assert_ok(vmm_vm_system_event_clear(t.vm));
  vmmt_run_to_port(t.vcpu, 0x10);
  vmmt_fini(&t);
}

static int raise_exit_port(vmm_vcpu *vcpu, void *arg) {
  (void)arg;
  return vmm_vm_system_event(vmm_vcpu_vm(vcpu), VMM_SYSTEM_EXIT_PORT, 42);
}

static unsigned handler_calls;
static enum vmm_exit_action count_exits(vmm_vcpu *vcpu, struct vmm_exit *e,
                                        void *opaque) {
  (void)vcpu, (void)e, (void)opaque;
  handler_calls++;
  return VMM_EXIT_ACTION_RETURN;
}

/* A device raising an event from its handler ends the run at once with
   VMM_EXIT_SYSTEM, which the exit handler does not see. */
static void test_system_event_from_handler(void **state) {
  (void)state;
  struct vmmt t;
  struct port_log log = {.on_ready = raise_exit_port};
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  vmmt_load(&t, VMMT_CODE, out10_done, sizeof(out10_done));
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 1, log_port, &log));
  handler_calls = 0;
  assert_ok(vmm_vm_set_exit_handler(t.vm, count_exits, NULL));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_SYSTEM);
  assert_int_equal(log.action_rc, 0);
  assert_int_equal(e->system.event, VMM_SYSTEM_EXIT_PORT);
  assert_int_equal(e->system.status, 42);
  assert_int_equal(handler_calls, 0);
  /* The out instruction was completed before returning. */
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RIP), VMMT_CODE + 2);
  assert_int_equal(log.count, 1);
  assert_ok(vmm_vm_system_event_clear(t.vm));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(handler_calls, 1);
  vmmt_fini(&t);
}

struct handler_state {
  vmm_vcpu *vcpu;
  unsigned ios, others;
  uint8_t values[8];
};

static enum vmm_exit_action resume_port10(vmm_vcpu *vcpu, struct vmm_exit *e,
                                          void *opaque) {
  struct handler_state *h = opaque;
  assert_ptr_equal(vcpu, h->vcpu);
  assert_ptr_equal(e, vmm_vcpu_exit(vcpu));
  if (e->reason == VMM_EXIT_IO && e->io.port == 0x10) {
    assert_true(e->io.is_write);
    assert_int_equal(e->io.size, 1);
    assert_int_equal(e->io.count, 1);
    if (h->ios < 8)
      h->values[h->ios] = e->io.data[0];
    h->ios++;
    return VMM_EXIT_ACTION_RESUME;
  }
  h->others++;
  return VMM_EXIT_ACTION_RETURN;
}

static void test_exit_handler(void **state) {
  (void)state;
  /* mov al, 1; out 0x10, al; mov al, 2; out 0x10, al; out 0xeb, al */
  static const uint8_t code[] = {0xb0, 0x01, 0xe6, 0x10, 0xb0,
                                 0x02, 0xe6, 0x10, 0xe6, 0xeb};
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  vmmt_load(&t, VMMT_CODE, code, sizeof(code));
  struct handler_state h = {.vcpu = t.vcpu};

  assert_vmm(vmm_vm_set_exit_handler(NULL, resume_port10, &h), VMM_EINVAL);
  assert_ok(vmm_vm_set_exit_handler(t.vm, resume_port10, &h));

  /* A stop request never reaches the handler. */
  assert_ok(vmm_vcpu_kick(t.vcpu));
  vmmt_run_expect(t.vcpu, VMM_EXIT_STOPPED);
  assert_int_equal(h.ios + h.others, 0);

  /* Both port writes are resumed by the handler; 0xeb is returned. */
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(h.ios, 2);
  assert_int_equal(h.values[0], 1);
  assert_int_equal(h.values[1], 2);
  assert_int_equal(h.others, 1);

  /* Without a handler the first port write comes back to the caller. */
  assert_ok(vmm_vm_set_exit_handler(t.vm, NULL, NULL));
  vmmt_set_ip_sp(t.vcpu, VMMT_CODE, VMMT_STACK);
  struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x10);
  assert_int_equal(e->io.data[0], 1);
  assert_int_equal(h.ios, 2);
  vmmt_fini(&t);
}

static void test_irq_line_without_irqchip(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(1, 0);
  assert_vmm(vmm_vm_irq_line(NULL, 4, true), VMM_EINVAL);
  assert_vmm(vmm_vm_irq_line(vm, 4, true), VMM_ENOTSUP);
  assert_vmm(vmm_vm_irq_line(vm, 4, false), VMM_ENOTSUP);
  assert_ok(vmm_vm_destroy(vm));
}

/* Create a VM with the engine's interrupt controllers, or skip when this
   engine has none (only KVM is required to). */
static vmm_vm *irqchip_vm(uint32_t flags) {
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.flags = flags;
  int rc = vmm_vm_create(&cfg, &vm);
  if (vmmt_engine != VMM_ENGINE_KVM &&
      (rc == VMM_ENOTSUP || rc == VMM_ENOCAP)) {
    print_message("%s engine has no in-engine interrupt controller (%s)\n",
                  vmm_engine_name(vmmt_engine), vmm_err_name(rc));
    skip();
  }
  assert_ok(rc);
  return vm;
}

static void irqchip_guest(vmm_vm *vm, vmm_vcpu **vcpu, uint64_t entry) {
  assert_ok(vmm_mem_slot_add(vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(vm, 0, vcpu));
  vmmt_setup_vcpu(*vcpu, VMM_MODE_LONG64, 0);
  size_t len;
  uint8_t *bin = vmmt_read_bin("irqchip", &len);
  assert_ok(vmm_mem_write(vm, VMMT_CODE, bin, len));
  free(bin);
  vmmt_set_ip_sp(*vcpu, VMMT_CODE + entry, VMMT_STACK);
  struct vmm_sregs s;
  assert_ok(vmm_vcpu_get_sregs(*vcpu, &s));
  s.idt.base = VMMT_CODE + 0x1000;
  s.idt.limit = 0xfff;
  assert_ok(vmm_vcpu_set_sregs(*vcpu, &s));
}

static int raise_gsi4(vmm_vcpu *vcpu, void *arg) {
  (void)arg;
  return vmm_vm_irq_line(vmm_vcpu_vm(vcpu), 4, true);
}

/* The same guest on the engine's controllers (VMM_VM_IRQCHIP: KVM's
   in-kernel ones, the user-space platform on BT) and on the library's
   user-space platform (VMM_VM_IRQCHIP_USER, every engine). */
static void irq_line_case(uint32_t flags) {
  vmm_vm *vm = irqchip_vm(flags);
  bool engine_chip = vmm_dev_find(vm, "pic") == NULL;
  vmm_vcpu *vcpu;
  struct port_log log = {.on_ready = raise_gsi4};
  assert_vmm(vmm_vm_irq_line(vm, 24, true), VMM_EINVAL);
  assert_vmm(vmm_vm_irq_line(vm, UINT32_MAX, false), VMM_EINVAL);
  irqchip_guest(vm, &vcpu, 0x000);
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x10, 0x10, log_port, &log));
  /* With the engine's controllers, interrupts go through lines only. */
  if (engine_chip)
    assert_vmm(vmm_vcpu_inject_irq(vcpu, 0x40), VMM_ENOTSUP);

  vmmt_run_to_port(vcpu, 0xeb);
  assert_int_equal(log.action_rc, 0);
  assert_int_equal(log.count, 2);
  assert_int_equal(log.ports[0], 0x10);
  assert_int_equal(log.ports[1], 0x11);
  assert_int_equal(log.values[1], 0x24); /* IRQ 4 at vector base 0x20 */
  assert_ok(vmm_vm_irq_line(vm, 4, false));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_irq_line_irqchip(void **state) {
  (void)state;
  irq_line_case(VMM_VM_IRQCHIP);
}

static void test_irq_line_user_irqchip(void **state) {
  (void)state;
  irq_line_case(VMM_VM_IRQCHIP_USER);
}

static void pit_case(uint32_t flags) {
  vmm_vm *vm = irqchip_vm(flags | VMM_VM_PIT);
  vmm_vcpu *vcpu;
  struct port_log log = {0};
  irqchip_guest(vm, &vcpu, 0x080);
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x10, 0x10, log_port, &log));
  vmmt_run_to_port(vcpu, 0xeb);
  assert_int_equal(log.count, 1);
  assert_int_equal(log.ports[0], 0x11);
  assert_int_equal(log.values[0], 0x20); /* IRQ 0 */
  assert_ok(vmm_vm_destroy(vm));
}

static void test_pit_irqchip(void **state) {
  (void)state;
  pit_case(VMM_VM_IRQCHIP);
}

static void test_pit_user_irqchip(void **state) {
  (void)state;
  pit_case(VMM_VM_IRQCHIP_USER);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_init),
      cmocka_unit_test(test_create_bad_config),
      cmocka_unit_test(test_create_logs_reason),
      cmocka_unit_test(test_create_old_config),
      cmocka_unit_test(test_create_null_device_defaults),
      cmocka_unit_test(test_engine_names),
      cmocka_unit_test(test_engine_available),
      cmocka_unit_test(test_engine_choice),
      cmocka_unit_test(test_engine_unavailable),
      cmocka_unit_test(test_destroy_null),
      cmocka_unit_test(test_destroy_with_everything),
      cmocka_unit_test(test_stop),
      cmocka_unit_test(test_system_event),
      cmocka_unit_test(test_system_event_from_handler),
      cmocka_unit_test(test_exit_handler),
      cmocka_unit_test(test_irq_line_without_irqchip),
      cmocka_unit_test(test_irq_line_irqchip),
      cmocka_unit_test(test_irq_line_user_irqchip),
      cmocka_unit_test(test_pit_irqchip),
      cmocka_unit_test(test_pit_user_irqchip),
  };
  return vmmt_run_group(tests);
}
