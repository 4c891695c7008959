/*
 * Threads: two VMs running at once on two threads (on the same engine and,
 * when both exist, on KVM and BT side by side), kicks from another thread
 * during a long computation, vmm_vm_stop() with several vCPUs running on
 * several threads, destroy while vCPUs run, and interrupts injected from
 * another thread into a guest spinning at CPL 3.
 */
#include "testutil.h"

#include <pthread.h>
#include <sched.h>

#define SUM_ENTRY 0x000
#define SPIN_ENTRY 0x080
#define RESULTS 0x20000ull

static uint64_t sum_to(uint64_t n) {
  return n * (n + 1) / 2;
}

struct worker {
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  enum vmm_engine_kind engine;
  uint64_t n;
  pthread_barrier_t *start;
  /* results */
  int rc;
  unsigned stopped;
  struct vmm_exit last;
};

static vmm_vm *vm_on(enum vmm_engine_kind kind, unsigned vcpus) {
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = kind;
  cfg.max_vcpus = vcpus;
  assert_ok(vmm_vm_create(&cfg, &vm));
  assert_ok(vmm_mem_slot_add(vm, 0, VMMT_RAM, NULL, 0, NULL));
  size_t len;
  uint8_t *bin = vmmt_read_bin("work64", &len);
  assert_ok(vmm_mem_write(vm, VMMT_CODE, bin, len));
  free(bin);
  return vm;
}

static vmm_vcpu *vcpu_at(vmm_vm *vm, unsigned index, uint64_t entry,
                         uint64_t rbx, uint64_t rcx) {
  vmm_vcpu *v;
  assert_ok(vmm_vcpu_create(vm, index, &v));
  vmmt_setup_vcpu(v, VMM_MODE_LONG64, 3);
  struct vmm_regs r;
  assert_ok(vmm_vcpu_get_regs(v, &r));
  r.rip = VMMT_CODE + entry;
  r.rsp = VMMT_STACK - index * 0x1000;
  r.rbx = rbx;
  r.rcx = rcx;
  assert_ok(vmm_vcpu_set_regs(v, &r));
  return v;
}

/* Run until the guest's final port write, counting STOPPED exits. Plain
   code, not cmocka asserts: it runs on worker threads. */
static void *work(void *arg) {
  struct worker *w = arg;
  if (w->start != NULL)
    pthread_barrier_wait(w->start);
  for (;;) {
    struct vmm_exit *e = NULL;
    w->rc = vmm_vcpu_run(w->vcpu, &e);
    if (w->rc < 0)
      return NULL;
    w->last = *e;
    if (e->reason != VMM_EXIT_STOPPED)
      return NULL;
    w->stopped++;
    if (w->n == 0) /* spinners end at the first stop */
      return NULL;
  }
}

static uint64_t result(vmm_vm *vm, unsigned slot) {
  uint64_t v = 0;
  assert_ok(vmm_mem_read(vm, RESULTS + 8 * slot, &v, 8));
  return v;
}

static void check_done(const struct worker *w) {
  assert_ok(w->rc);
  assert_int_equal(w->last.reason, VMM_EXIT_IO);
  assert_int_equal(w->last.io.port, 0xeb);
}

/* Two VMs, each on its own thread, computing at the same time. */
static void two_vms(enum vmm_engine_kind a, enum vmm_engine_kind b) {
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, 2);
  struct worker w[2] = {
      {.engine = a, .n = 3000000, .start = &start},
      {.engine = b, .n = 2000000, .start = &start},
  };
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    w[i].vm = vm_on(w[i].engine, 1);
    w[i].vcpu = vcpu_at(w[i].vm, 0, SUM_ENTRY, 0, w[i].n);
  }
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++) {
    check_done(&w[i]);
    assert_int_equal(w[i].stopped, 0);
    assert_int_equal(result(w[i].vm, 0), sum_to(w[i].n));
    /* Each VM's memory is its own. */
    assert_int_equal(result(w[i].vm, 1), 0);
    assert_int_equal(vmm_vm_engine(w[i].vm), w[i].engine);
    assert_ok(vmm_vm_destroy(w[i].vm));
  }
  pthread_barrier_destroy(&start);
}

static void test_two_vms_same_engine(void **state) {
  (void)state;
  two_vms(vmmt_engine, vmmt_engine);
}

static void test_two_vms_two_engines(void **state) {
  (void)state;
  if (!vmm_engine_available(VMM_ENGINE_KVM) ||
      !vmm_engine_available(VMM_ENGINE_BT)) {
    print_message("needs both engines; %s is not available here\n",
                  vmm_engine_available(VMM_ENGINE_KVM) ? "bt" : "kvm");
    skip();
  }
  two_vms(VMM_ENGINE_KVM, VMM_ENGINE_BT);
}

/* Kicks from another thread interrupt a long computation without
   changing its result. */
static void test_kicks_across_threads(void **state) {
  (void)state;
  struct worker w = {.engine = vmmt_engine, .n = 400000000};
  w.vm = vm_on(w.engine, 1);
  w.vcpu = vcpu_at(w.vm, 0, SUM_ENTRY, 2, w.n);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, work, &w), 0);
  vmmt_wait_running(w.vcpu);
  unsigned kicks = 0;
  for (; kicks < 20; kicks++) {
    assert_ok(vmm_vcpu_kick(w.vcpu));
    usleep(1000);
  }
  pthread_join(th, NULL);
  check_done(&w);
  assert_true(w.stopped >= 1 && w.stopped <= kicks);
  assert_int_equal(result(w.vm, 2), sum_to(w.n));
  assert_ok(vmm_vm_destroy(w.vm));
}

/* vmm_vm_stop() reaches every running vCPU, on every thread. */
static void test_vm_stop_many(void **state) {
  (void)state;
  enum { N = 3 };
  vmm_vm *vm = vm_on(vmmt_engine, N);
  struct worker w[N];
  pthread_t th[N];
  for (unsigned i = 0; i < N; i++) {
    w[i] = (struct worker){.vm = vm, .engine = vmmt_engine};
    w[i].vcpu = vcpu_at(vm, i, SPIN_ENTRY, 0, 0);
  }
  for (unsigned i = 0; i < N; i++)
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  for (unsigned i = 0; i < N; i++)
    vmmt_wait_running(w[i].vcpu);
  assert_ok(vmm_vm_stop(vm));
  for (unsigned i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    assert_ok(w[i].rc);
    assert_int_equal(w[i].last.reason, VMM_EXIT_STOPPED);
    assert_int_equal(vmmt_reg(w[i].vcpu, VMM_REG_RIP), VMMT_CODE + SPIN_ENTRY);
  }
  assert_ok(vmm_vm_destroy(vm));
}

/* Destroying a VM whose vCPUs run is refused, then works once they have
   returned: polled here without joining first, as a host might. */
static void test_destroy_while_running(void **state) {
  (void)state;
  enum { N = 2 };
  vmm_vm *vm = vm_on(vmmt_engine, N);
  struct worker w[N];
  pthread_t th[N];
  for (unsigned i = 0; i < N; i++) {
    w[i] = (struct worker){.vm = vm, .engine = vmmt_engine};
    w[i].vcpu = vcpu_at(vm, i, SPIN_ENTRY, 0, 0);
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  for (unsigned i = 0; i < N; i++)
    vmmt_wait_running(w[i].vcpu);
  assert_vmm(vmm_vm_destroy(vm), VMM_EBUSY);
  /* Nothing was freed: the VM still works. */
  assert_ok(vmm_mem_slot_add(vm, 0x400000, 0x1000, NULL, 0, NULL));
  assert_ok(vmm_vm_stop(vm));
  int rc;
  while ((rc = vmm_vm_destroy(vm)) == VMM_EBUSY)
    sched_yield();
  assert_ok(rc);
  for (unsigned i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    assert_ok(w[i].rc);
    assert_int_equal(w[i].last.reason, VMM_EXIT_STOPPED);
  }
}

/* irq64 snippet: a CPL 3 spin that ends when the vector 0x50 handler has
   run. */
#define IRQ64_SPIN 0x080
#define IRQ64_IDT 0x1000

static void test_inject_from_thread(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  vmmt_load_snippet(&t, "irq64", VMMT_CODE, IRQ64_SPIN);
  struct vmm_sregs s;
  assert_ok(vmm_vcpu_get_sregs(t.vcpu, &s));
  s.idt.base = VMMT_CODE + IRQ64_IDT;
  s.idt.limit = 0xfff;
  assert_ok(vmm_vcpu_set_sregs(t.vcpu, &s));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RFLAGS, 0x3202)); /* IF */

  struct worker w = {.vm = t.vm, .vcpu = t.vcpu, .n = 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, work, &w), 0);
  vmmt_wait_running(t.vcpu);
  usleep(2000); /* spinning in the guest now */
  assert_ok(vmm_vcpu_inject_irq(t.vcpu, 0x50));
  pthread_join(th, NULL);
  check_done(&w);
  assert_int_equal(w.stopped, 0);
  uint8_t flag;
  assert_ok(vmm_mem_read(t.vm, VMMT_CODE + 0x400, &flag, 1));
  assert_int_equal(flag, 1);
  /* Back at CPL 3 after the handler's iretq, on the user stack. */
  assert_ok(vmm_vcpu_get_sregs(t.vcpu, &s));
  assert_int_equal(s.cs.selector, 0x33);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RSP), VMMT_STACK);
  vmmt_fini(&t);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_vms_same_engine),
      cmocka_unit_test(test_two_vms_two_engines),
      cmocka_unit_test(test_kicks_across_threads),
      cmocka_unit_test(test_vm_stop_many),
      cmocka_unit_test(test_destroy_while_running),
      cmocka_unit_test(test_inject_from_thread),
  };
  return vmmt_run_group(tests);
}
