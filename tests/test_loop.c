/*
 * The event loop and library-managed vCPU threads: loops the library runs,
 * loops the host runs (its own uv loop included), several VMs on one loop
 * without blocking it, completions and restarts, stopping, destroying a VM
 * while its threads run or from its own completion, and the error paths.
 */
#include <pthread.h>
#include <uv.h>

#include "devtest.h"

struct vmctx {
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  unsigned completions;
  int status;
  struct vmm_exit exit;
  uint64_t spins;      /* the guest's counter when it completed */
  pthread_t cb_thread; /* where the completion ran */
  bool restart;        /* restart once from the completion */
  bool destroy_in_cb;  /* destroy the VM from the completion */
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

static void ctx_init(struct vmctx *c) {
  memset(c, 0, sizeof(*c));
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->cond, NULL);
}

static void ctx_fini(struct vmctx *c) {
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->cond);
}

/* A VM running the spinner, with an exit port; exit value v. */
static void spin_vm(struct vmctx *c, uint8_t v) {
  c->vm = dt_vm();
  struct vmm_exit_port_config x;
  vmm_exit_port_config_init(&x);
  assert_ok(vmm_exit_port_create(c->vm, &x, NULL));
  c->vcpu = dt_guest(c->vm, 0, "dev_spin", 3);
  assert_ok(vmm_mem_write(c->vm, DT_DATA + 8, &v, 1));
}

static void release(vmm_vm *vm) {
  uint64_t one = 1;
  assert_ok(vmm_mem_write(vm, DT_DATA, &one, sizeof(one)));
}

static void on_done(vmm_vcpu *vcpu, int status, struct vmm_exit *exit,
                    void *opaque) {
  struct vmctx *c = opaque;
  pthread_mutex_lock(&c->lock);
  c->completions++;
  c->status = status;
  c->exit = *exit;
  c->cb_thread = pthread_self();
  /* The vCPU is not running: its state can be read here. */
  assert_ok(vmm_vcpu_reg_read(vcpu, VMM_REG_RBX, &c->spins));
  bool restart = c->restart, destroy = c->destroy_in_cb;
  vmm_vm *vm = c->vm;
  c->restart = false;
  if (!destroy)
    pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
  if (restart) {
    assert_ok(vmm_vm_system_event_clear(vm));
    assert_ok(vmm_vcpu_start(vcpu, on_done, c));
  }
  if (destroy) {
    assert_ok(vmm_vm_destroy(vm));
    /* The waiter may free c as soon as it sees this: c is not used after. */
    pthread_mutex_lock(&c->lock);
    c->vm = NULL;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
  }
}

/* Wait (off the loop) until pred holds or ms pass. */
#define WAIT_FOR(c, pred, ms)                                                  \
  do {                                                                         \
    struct timespec dl_;                                                       \
    clock_gettime(CLOCK_REALTIME, &dl_);                                       \
    dl_.tv_sec += (ms) / 1000;                                                 \
    dl_.tv_nsec += ((ms) % 1000) * 1000000L;                                   \
    if (dl_.tv_nsec >= 1000000000L) {                                          \
      dl_.tv_sec++;                                                            \
      dl_.tv_nsec -= 1000000000L;                                              \
    }                                                                          \
    pthread_mutex_lock(&(c)->lock);                                            \
    while (!(pred))                                                            \
      if (pthread_cond_timedwait(&(c)->cond, &(c)->lock, &dl_) != 0)           \
        break;                                                                 \
    pthread_mutex_unlock(&(c)->lock);                                          \
  } while (0)

static vmm_loop *loop_new(void *uv, uint32_t flags) {
  struct vmm_loop_config cfg;
  vmm_loop *loop = NULL;
  vmm_loop_config_init(&cfg);
  cfg.uv = uv;
  cfg.flags = flags;
  assert_ok(vmm_loop_create(&cfg, &loop));
  return loop;
}

static void test_config_and_errors(void **state) {
  (void)state;
  struct vmm_loop_config cfg;
  vmm_loop *loop;
  uv_loop_t uv;
  assert_int_equal(uv_loop_init(&uv), 0);
  vmm_loop_config_init(&cfg);
  cfg.uv = &uv;
  cfg.flags = VMM_LOOP_THREAD;
  assert_vmm(vmm_loop_create(&cfg, &loop), VMM_EINVAL);
  cfg.uv = NULL;
  cfg.flags = 0x80;
  assert_vmm(vmm_loop_create(&cfg, &loop), VMM_EINVAL);
  cfg.flags = 0;
  cfg.size = 0;
  assert_vmm(vmm_loop_create(&cfg, &loop), VMM_EINVAL);
  assert_vmm(vmm_loop_create(NULL, &loop), VMM_EINVAL);
  assert_ok(vmm_loop_destroy(NULL));

  /* Nothing to do: a library loop run by the host returns at once. */
  loop = loop_new(NULL, 0);
  assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), 0);
  assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_NOWAIT), 0);
  assert_vmm(vmm_loop_run(loop, (enum vmm_loop_run_mode)9), VMM_EINVAL);
  assert_non_null(vmm_loop_uv(loop));
  assert_ok(vmm_loop_destroy(loop));

  /* A threaded loop is not run by the host. */
  loop = loop_new(NULL, VMM_LOOP_THREAD);
  assert_vmm(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), VMM_ESTATE);
  assert_vmm(vmm_loop_stop(loop), VMM_ESTATE);

  /* One loop per VM, set before use; a loop in use is not destroyed. */
  vmm_vm *vm = dt_vm();
  assert_ok(vmm_vm_set_loop(vm, loop));
  vmm_loop *other = loop_new(NULL, 0);
  assert_vmm(vmm_vm_set_loop(vm, other), VMM_ESTATE);
  vmm_loop *got = NULL;
  assert_ok(vmm_vm_get_loop(vm, &got));
  assert_ptr_equal(got, loop);
  assert_vmm(vmm_loop_destroy(loop), VMM_EBUSY);
  assert_vmm(vmm_vm_set_loop(NULL, loop), VMM_EINVAL);
  assert_vmm(vmm_vcpu_start(NULL, on_done, NULL), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
  assert_ok(vmm_loop_destroy(loop));
  assert_ok(vmm_loop_destroy(other));
  uv_run(&uv, UV_RUN_NOWAIT);
  assert_int_equal(uv_loop_close(&uv), 0);
}

/* Two VMs on one loop the host runs. The guests spin until a timer on the
   same loop releases them: the loop serves the timer while both vCPUs
   run, and returns when both completions are delivered. */
struct release_ctx {
  struct vmctx *vms;
  unsigned n, fired, completions_before;
};

static void on_release(uv_timer_t *t) {
  struct release_ctx *r = t->data;
  r->fired++;
  for (unsigned i = 0; i < r->n; i++) {
    r->completions_before += r->vms[i].completions;
    release(r->vms[i].vm);
  }
  uv_close((uv_handle_t *)t, NULL);
}

static void run_two_vms(vmm_loop *loop, uv_loop_t *uv, bool host_runs_uv) {
  struct vmctx c[2];
  for (int i = 0; i < 2; i++) {
    ctx_init(&c[i]);
    spin_vm(&c[i], (uint8_t)(0x10 + i));
    assert_ok(vmm_vm_set_loop(c[i].vm, loop));
    assert_ok(vmm_vcpu_start(c[i].vcpu, on_done, &c[i]));
    /* A second start before the completion is refused. */
    assert_vmm(vmm_vcpu_start(c[i].vcpu, on_done, &c[i]), VMM_EBUSY);
  }
  struct release_ctx r = {.vms = c, .n = 2};
  uv_timer_t t;
  assert_int_equal(uv_timer_init(uv, &t), 0);
  t.data = &r;
  assert_int_equal(uv_timer_start(&t, on_release, 50, 0), 0);
  if (host_runs_uv)
    uv_run(uv, UV_RUN_DEFAULT); /* the host's own uv_run() */
  else
    assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), 0);

  assert_int_equal(r.fired, 1);
  assert_int_equal(r.completions_before, 0);
  pthread_t self = pthread_self();
  for (int i = 0; i < 2; i++) {
    assert_int_equal(c[i].completions, 1);
    assert_ok(c[i].status);
    assert_int_equal(c[i].exit.reason, VMM_EXIT_SYSTEM);
    assert_int_equal(c[i].exit.system.status, ((0x10 + i) << 1) | 1);
    assert_true(c[i].spins >= 1); /* read in the callback: not running */
    assert_true(pthread_equal(c[i].cb_thread, self));
    assert_ok(vmm_vm_destroy(c[i].vm));
    ctx_fini(&c[i]);
  }
}

static void test_two_vms_on_library_loop(void **state) {
  (void)state;
  vmm_loop *loop = loop_new(NULL, 0);
  run_two_vms(loop, vmm_loop_uv(loop), false);
  assert_ok(vmm_loop_destroy(loop));
}

static void test_two_vms_on_host_uv_loop(void **state) {
  (void)state;
  uv_loop_t uv;
  assert_int_equal(uv_loop_init(&uv), 0);
  vmm_loop *loop = loop_new(&uv, 0);
  run_two_vms(loop, &uv, true);
  assert_ok(vmm_loop_destroy(loop));
  /* The library's handle goes with the host's next run; then the host's
     loop closes cleanly. */
  uv_run(&uv, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&uv), 0);
}

/* No loop set: the VM creates a threaded one; completions run there. The
   callback restarts the vCPU (second run ends on the fall-through port). */
static void test_vm_owned_loop_and_restart(void **state) {
  (void)state;
  struct vmctx c;
  ctx_init(&c);
  spin_vm(&c, 0x05);
  release(c.vm);
  c.restart = true;
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  WAIT_FOR(&c, c.completions == 2, 20000);
  assert_int_equal(c.completions, 2);
  assert_ok(c.status);
  assert_int_equal(c.exit.reason, VMM_EXIT_IO);
  assert_int_equal(c.exit.io.port, 0xeb);
  assert_false(pthread_equal(c.cb_thread, pthread_self()));
  vmm_loop *loop;
  assert_ok(vmm_vm_get_loop(c.vm, &loop));
  assert_vmm(vmm_loop_destroy(loop), VMM_EBUSY); /* the VM's own */
  assert_ok(vmm_vm_destroy(c.vm));
  ctx_fini(&c);
}

static void destroy_on_timer(uv_timer_t *h) {
  struct vmctx *c = h->data;
  assert_ok(vmm_vm_destroy(c->vm));
  uv_close((uv_handle_t *)h, NULL);
}

/* vmm_vm_destroy() stops and joins a running library thread; the run's
   completion is dropped. */
static void test_destroy_while_running(void **state) {
  (void)state;
  struct vmctx c;
  ctx_init(&c);
  spin_vm(&c, 1);
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  usleep(50000);
  assert_ok(vmm_vm_destroy(c.vm));
  usleep(20000);
  assert_int_equal(c.completions, 0);
  ctx_fini(&c);

  /* The same on a host-run loop, destroyed from a loop callback while the
     vCPU spins: the loop then has nothing left and returns. */
  vmm_loop *loop = loop_new(NULL, 0);
  ctx_init(&c);
  spin_vm(&c, 1);
  assert_ok(vmm_vm_set_loop(c.vm, loop));
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  uv_timer_t t;
  uv_timer_init(vmm_loop_uv(loop), &t);
  t.data = &c;
  uv_timer_start(&t, destroy_on_timer, 50, 0);
  assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), 0);
  assert_int_equal(c.completions, 0);
  assert_ok(vmm_loop_destroy(loop));
  ctx_fini(&c);
}

/* A completion callback destroys its own VM, whose loop is the VM's own
   threaded loop: the loop thread finishes the callback and exits. */
static void test_destroy_from_completion(void **state) {
  (void)state;
  struct vmctx c;
  ctx_init(&c);
  spin_vm(&c, 2);
  release(c.vm);
  c.destroy_in_cb = true;
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  WAIT_FOR(&c, c.vm == NULL, 20000);
  assert_null(c.vm);
  assert_int_equal(c.completions, 1);
  assert_int_equal(c.exit.system.status, (2 << 1) | 1);
  usleep(20000); /* let the detached loop thread finish (for leak checks) */
  ctx_fini(&c);
}

/* A caller-owned thread in vmm_vcpu_run(): destroy refuses (-VMM_EBUSY)
   and leaves everything intact. */
static void *caller_run(void *arg) {
  struct vmctx *c = arg;
  struct vmm_exit *e;
  c->status = vmm_vcpu_run(c->vcpu, &e);
  c->exit = *e;
  return NULL;
}

static void test_destroy_busy_with_caller_thread(void **state) {
  (void)state;
  struct vmctx c;
  ctx_init(&c);
  spin_vm(&c, 3);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, caller_run, &c), 0);
  vmmt_wait_running(c.vcpu);
  assert_vmm(vmm_vm_destroy(c.vm), VMM_EBUSY);
  /* Still usable: the library cannot run it meanwhile either. */
  assert_ok(vmm_vm_stop(c.vm));
  pthread_join(t, NULL);
  assert_ok(c.status);
  assert_int_equal(c.exit.reason, VMM_EXIT_STOPPED);
  release(c.vm);
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  WAIT_FOR(&c, c.completions == 1, 20000);
  assert_int_equal(c.exit.reason, VMM_EXIT_SYSTEM);
  assert_ok(vmm_vm_destroy(c.vm));
  ctx_fini(&c);
}

static void stop_on_timer(uv_timer_t *h) {
  assert_ok(vmm_loop_stop(h->data));
  uv_close((uv_handle_t *)h, NULL);
}

/* vmm_vm_stop() ends library runs with VMM_EXIT_STOPPED; vmm_loop_stop()
   makes vmm_loop_run() return while work remains. */
static void test_stop(void **state) {
  (void)state;
  vmm_loop *loop = loop_new(NULL, 0);
  struct vmctx c;
  ctx_init(&c);
  spin_vm(&c, 4);
  assert_ok(vmm_vm_set_loop(c.vm, loop));
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  uv_timer_t t;
  uv_timer_init(vmm_loop_uv(loop), &t);
  t.data = loop;
  uv_timer_start(&t, stop_on_timer, 30, 0);
  assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), 1);
  assert_int_equal(c.completions, 0); /* still spinning */
  assert_ok(vmm_vm_stop(c.vm));
  assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), 0);
  assert_int_equal(c.completions, 1);
  assert_int_equal(c.exit.reason, VMM_EXIT_STOPPED);
  assert_ok(vmm_vm_destroy(c.vm));
  assert_ok(vmm_loop_destroy(loop));
  ctx_fini(&c);
}

/* vmm_loop_call() runs on the loop's thread and waits. */
struct call_ctx {
  pthread_t thread;
  int calls;
};

static void record(vmm_loop *loop, void *opaque) {
  struct call_ctx *cc = opaque;
  (void)loop;
  cc->thread = pthread_self();
  cc->calls++;
}

static void test_loop_call(void **state) {
  (void)state;
  vmm_loop *loop = loop_new(NULL, VMM_LOOP_THREAD);
  struct call_ctx cc = {0};
  assert_ok(vmm_loop_call(loop, record, &cc));
  assert_int_equal(cc.calls, 1);
  assert_false(pthread_equal(cc.thread, pthread_self()));
  /* Completions of VMs on it run on that same thread. */
  struct vmctx c;
  ctx_init(&c);
  spin_vm(&c, 6);
  assert_ok(vmm_vm_set_loop(c.vm, loop));
  release(c.vm);
  assert_ok(vmm_vcpu_start(c.vcpu, on_done, &c));
  WAIT_FOR(&c, c.completions == 1, 20000);
  assert_true(pthread_equal(c.cb_thread, cc.thread));
  assert_ok(vmm_vm_destroy(c.vm));
  assert_ok(vmm_loop_destroy(loop));
  ctx_fini(&c);

  loop = loop_new(NULL, 0); /* not threaded: called right here */
  assert_ok(vmm_loop_call(loop, record, &cc));
  assert_true(pthread_equal(cc.thread, pthread_self()));
  assert_vmm(vmm_loop_call(loop, NULL, &cc), VMM_EINVAL);
  assert_ok(vmm_loop_destroy(loop));
}

/* Many VMs, each on its own library thread, one host loop: all complete. */
static void test_many_vms(void **state) {
  (void)state;
  enum { N = 6 };
  vmm_loop *loop = loop_new(NULL, 0);
  struct vmctx c[N];
  for (int i = 0; i < N; i++) {
    ctx_init(&c[i]);
    spin_vm(&c[i], (uint8_t)i);
    assert_ok(vmm_vm_set_loop(c[i].vm, loop));
    release(c[i].vm);
    assert_ok(vmm_vcpu_start(c[i].vcpu, on_done, &c[i]));
  }
  assert_int_equal(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(c[i].completions, 1);
    assert_int_equal(c[i].exit.system.status, (i << 1) | 1);
    assert_ok(vmm_vm_destroy(c[i].vm));
    ctx_fini(&c[i]);
  }
  assert_ok(vmm_loop_destroy(loop));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_and_errors),
      cmocka_unit_test(test_two_vms_on_library_loop),
      cmocka_unit_test(test_two_vms_on_host_uv_loop),
      cmocka_unit_test(test_vm_owned_loop_and_restart),
      cmocka_unit_test(test_destroy_while_running),
      cmocka_unit_test(test_destroy_from_completion),
      cmocka_unit_test(test_destroy_busy_with_caller_thread),
      cmocka_unit_test(test_stop),
      cmocka_unit_test(test_loop_call),
      cmocka_unit_test(test_many_vms),
  };
  return vmmt_run_group(tests);
}
