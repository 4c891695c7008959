/*
 * Tests of include/libvmm/stats.h: exits counted by reason (served by
 * handlers or not, stops and system events), handled I/O and MMIO, the time
 * split between the engine, handlers and the exit handler checked against
 * the wall clock, per-range access counts with their owning devices, sums
 * over vCPUs, resets (refused while a vCPU runs), the JSON document, the
 * engine's reason, and the argument checks.
 *
 * Guests run at CPL 3 in long mode (native on KVM even on hosts that
 * emulate kernel code), written inline below.
 */
#include <jansson.h>
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"

#define MMIO_BASE 0xd0000000ull

/*
 * At VMMT_CODE, 64-bit:
 *       mov ecx, N
 *   1:  out 0x80, al          ; served by a handler, N times
 *       dec ecx
 *       jnz 1b
 *       mov ebx, 0xd0000000
 *       mov rax, [rbx]        ; MMIO read served by a handler
 *       out 0x81, al          ; nobody's: to the exit handler / the caller
 *       out 0x82, al          ; nobody's either
 *   2:  jmp 2b
 */
static const uint8_t port_guest[] = {
    0xb9, 0,    0,    0,    0,    /* mov ecx, N (patched) */
    0xe6, 0x80,                   /* 1: out 0x80, al */
    0xff, 0xc9,                   /* dec ecx */
    0x75, 0xfa,                   /* jnz 1b */
    0xbb, 0x00, 0x00, 0x00, 0xd0, /* mov ebx, 0xd0000000 */
    0x48, 0x8b, 0x03,             /* mov rax, [rbx] */
    0xe6, 0x81,                   /* out 0x81, al */
    0xe6, 0x82,                   /* out 0x82, al */
    0xeb, 0xfe,                   /* 2: jmp 2b */
};

/*
 *       mov rcx, N
 *   1:  dec rcx
 *       jnz 1b
 *       out 0x81, al
 *   2:  jmp 2b
 */
static const uint8_t spin_guest[] = {
    0x48, 0xb9, 0,    0, 0, 0, 0, 0, 0, 0, /* mov rcx, imm64 (patched) */
    0x48, 0xff, 0xc9,                      /* 1: dec rcx */
    0x75, 0xfb,                            /* jnz 1b */
    0xe6, 0x81,                            /* out 0x81, al */
    0xeb, 0xfe,                            /* 2: jmp 2b */
};

/* N times out 0x80, al; out 0x83, al (N patched), then out 0x81, al. */
static const uint8_t two_port_guest[] = {
    0xb9, 0,    0, 0, 0, /* mov ecx, N (patched) */
    0xe6, 0x80,          /* 1: out 0x80, al */
    0xe6, 0x83,          /* out 0x83, al */
    0xff, 0xc9,          /* dec ecx */
    0x75, 0xf8,          /* jnz 1b */
    0xe6, 0x81,          /* out 0x81, al */
    0xeb, 0xfe,          /* 2: jmp 2b */
};

/* out 0xf4, al (the exit port); jmp $ */
static const uint8_t exit_guest[] = {0xe6, 0xf4, 0xeb, 0xfe};

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int count_io(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                    bool is_write, void *opaque) {
  (void)vcpu, (void)addr, (void)is_write;
  (*(unsigned *)opaque)++;
  if (!is_write)
    memset(data, 0x5a, len);
  return 0;
}

static void load_port_guest(struct vmmt *t, uint32_t n) {
  uint8_t code[sizeof(port_guest)];
  memcpy(code, port_guest, sizeof(code));
  memcpy(code + 1, &n, 4);
  vmmt_load(t, VMMT_CODE, code, sizeof(code));
}

static struct vmm_vcpu_stats get(vmm_vcpu *vcpu) {
  struct vmm_vcpu_stats st;
  vmm_vcpu_stats_init(&st);
  assert_ok(vmm_vcpu_stats_get(vcpu, &st));
  return st;
}

/* Every counter and time of st is zero. */
static void assert_zero(const struct vmm_vcpu_stats *st) {
  assert_int_equal(st->runs, 0);
  for (unsigned i = 0; i < VMM_STATS_REASONS; i++)
    assert_int_equal(st->exits[i], 0);
  assert_int_equal(st->io_handled, 0);
  assert_int_equal(st->mmio_handled, 0);
  assert_int_equal(st->run_ns, 0);
  assert_int_equal(st->guest_ns, 0);
  assert_int_equal(st->io_ns, 0);
  assert_int_equal(st->exit_handler_ns, 0);
}

static void test_fresh_vcpu(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  struct vmm_vcpu_stats st = get(t.vcpu);
  assert_zero(&st);
  assert_int_equal(st.size, sizeof(st));
  /* The TSC rate is measured against CLOCK_MONOTONIC: plausible values. */
  assert_true(st.tsc_hz > 100000000ull && st.tsc_hz < 100000000000ull);
  vmmt_fini(&t);
}

/* A handler that takes (at least) the number of TSC cycles in *opaque. */
static int busy_io(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                   bool is_write, void *opaque) {
  (void)vcpu, (void)addr, (void)data, (void)len, (void)is_write;
  uint64_t t0 = __builtin_ia32_rdtsc();
  while (__builtin_ia32_rdtsc() - t0 < *(const uint64_t *)opaque)
    ;
  return 0;
}

/* io_ns holds the handlers' time: on BT, which serves these accesses
   inside run(), a slow handler is timed on every access and a fast one on
   a random sixteenth of them, counted sixteen times (vcpu.c, IO_SAMPLE);
   on KVM every exit is timed. */
static void test_io_time(void **state) {
  (void)state;
  struct vmmt t;
  const uint32_t n = 500;
  uint64_t fast = 2000, slow = 20000; /* cycles; IO_FAST is 4096 */
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x80, 1, busy_io, &fast));
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x83, 1, busy_io, &slow));
  uint8_t code[sizeof(two_port_guest)];
  memcpy(code, two_port_guest, sizeof(code));
  memcpy(code + 1, &n, 4);
  vmmt_load(&t, VMMT_CODE, code, sizeof(code));
  vmmt_run_to_port(t.vcpu, 0x81);
  struct vmm_vcpu_stats st = get(t.vcpu);
  assert_int_equal(st.io_handled, 2 * n);
  double ns_per_cycle = 1e9 / (double)st.tsc_hz;
  /* The slow handler's time exactly (or more); half the fast one's. */
  double floor_ns =
      ((double)n * (double)slow + (double)n * (double)fast / 2) * ns_per_cycle;
  assert_true((double)st.io_ns >= floor_ns);
  assert_true(st.guest_ns + st.io_ns <= st.run_ns + 2);
  vmmt_fini(&t);
}

/* Handled and unhandled exits, and where the time went. */
static void test_counts(void **state) {
  (void)state;
  struct vmmt t;
  const uint32_t n = 300;
  unsigned ports = 0, mmio = 0;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x80, 1, count_io, &ports));
  assert_ok(vmm_io_register(t.vm, VMM_IO_MMIO, MMIO_BASE, 8, count_io, &mmio));
  load_port_guest(&t, n);

  vmmt_run_to_port(t.vcpu, 0x81);
  assert_int_equal(ports, n);
  assert_int_equal(mmio, 1);
  struct vmm_vcpu_stats st = get(t.vcpu);
  assert_int_equal(st.runs, 1);
  assert_int_equal(st.exits[VMM_EXIT_IO], n + 1);
  assert_int_equal(st.exits[VMM_EXIT_MMIO], 1);
  assert_int_equal(st.io_handled, n);
  assert_int_equal(st.mmio_handled, 1);
  for (unsigned r = VMM_EXIT_HLT; r < VMM_STATS_REASONS; r++)
    assert_int_equal(st.exits[r], 0);
  assert_true(st.guest_ns > 0);
  assert_true(st.io_ns > 0);
  assert_int_equal(st.exit_handler_ns, 0); /* no exit handler */
  /* The parts lie inside the whole (to rounding of the conversion). */
  assert_true(st.guest_ns + st.io_ns <= st.run_ns + 2);

  /* A second run adds to the same counters. */
  vmmt_run_to_port(t.vcpu, 0x82);
  struct vmm_vcpu_stats st2 = get(t.vcpu);
  assert_int_equal(st2.runs, 2);
  assert_int_equal(st2.exits[VMM_EXIT_IO], n + 2);
  assert_int_equal(st2.io_handled, n);
  assert_true(st2.run_ns >= st.run_ns);
  vmmt_fini(&t);
}

struct slow_handler {
  unsigned calls;
  uint64_t spin_ns;
};

/* Resumes 0x81 after spinning; returns 0x82 to the caller. */
static enum vmm_exit_action slow_exit(vmm_vcpu *vcpu, struct vmm_exit *e,
                                      void *opaque) {
  (void)vcpu;
  struct slow_handler *h = opaque;
  h->calls++;
  if (e->reason == VMM_EXIT_IO && e->io.port == 0x81) {
    uint64_t t0 = now_ns();
    while (now_ns() - t0 < h->spin_ns)
      ;
    return VMM_EXIT_ACTION_RESUME;
  }
  return VMM_EXIT_ACTION_RETURN;
}

static void test_exit_handler_time(void **state) {
  (void)state;
  struct vmmt t;
  unsigned ports = 0, mmio = 0;
  struct slow_handler h = {.spin_ns = 20 * 1000 * 1000};
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x80, 1, count_io, &ports));
  assert_ok(vmm_io_register(t.vm, VMM_IO_MMIO, MMIO_BASE, 8, count_io, &mmio));
  assert_ok(vmm_vm_set_exit_handler(t.vm, slow_exit, &h));
  load_port_guest(&t, 10);
  vmmt_run_to_port(t.vcpu, 0x82);
  assert_int_equal(h.calls, 2);
  struct vmm_vcpu_stats st = get(t.vcpu);
  assert_int_equal(st.runs, 1);
  assert_int_equal(st.exits[VMM_EXIT_IO], 12);
  assert_int_equal(st.io_handled, 10);
  /* The handler spun for 20 ms: the counter saw it (TSC conversion within
     a few percent), and the whole run includes it. */
  assert_true(st.exit_handler_ns >= 19 * 1000 * 1000);
  assert_true(st.exit_handler_ns < 200 * 1000 * 1000);
  assert_true(st.run_ns >= st.exit_handler_ns + st.guest_ns);
  vmmt_fini(&t);
}

/* run_ns matches the wall clock around vmm_vcpu_run(). */
static void test_time_vs_wall_clock(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  uint8_t code[sizeof(spin_guest)];
  memcpy(code, spin_guest, sizeof(code));
  uint64_t iters = 100 * 1000 * 1000;
  memcpy(code + 2, &iters, 8);
  vmmt_load(&t, VMMT_CODE, code, sizeof(code));
  uint64_t t0 = now_ns();
  vmmt_run_to_port(t.vcpu, 0x81);
  uint64_t wall = now_ns() - t0;
  struct vmm_vcpu_stats st = get(t.vcpu);
  print_message("spin: wall %llu ns, run %llu ns, guest %llu ns\n",
                (unsigned long long)wall, (unsigned long long)st.run_ns,
                (unsigned long long)st.guest_ns);
  assert_true(st.run_ns <= wall + wall / 10 + 1000000);
  assert_true(st.run_ns + st.run_ns / 10 + 1000000 >= wall);
  assert_true(st.guest_ns <= st.run_ns);
  /* Nearly all of it was inside the engine. */
  assert_true(st.guest_ns >= st.run_ns / 2);
  vmmt_fini(&t);
}

static void test_stop_and_system_event(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  vmmt_load(&t, VMMT_CODE, exit_guest, sizeof(exit_guest));
  /* A kick before the run: STOPPED at once, without entering the guest. */
  assert_ok(vmm_vcpu_kick(t.vcpu));
  vmmt_run_expect(t.vcpu, VMM_EXIT_STOPPED);
  struct vmm_vcpu_stats st = get(t.vcpu);
  assert_int_equal(st.runs, 1);
  assert_int_equal(st.exits[VMM_EXIT_STOPPED], 1);
  assert_int_equal(st.guest_ns, 0);

  /* The exit port device raises a system event. */
  struct vmm_exit_port_config xp;
  vmm_exit_port_config_init(&xp);
  assert_ok(vmm_exit_port_create(t.vm, &xp, NULL));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_SYSTEM);
  assert_int_equal(e->system.event, VMM_SYSTEM_EXIT_PORT);
  st = get(t.vcpu);
  assert_int_equal(st.runs, 2);
  assert_int_equal(st.exits[VMM_EXIT_SYSTEM], 1);
  assert_int_equal(st.exits[VMM_EXIT_IO], 1);
  assert_int_equal(st.io_handled, 1);
  /* While the event is pending the next run returns at once, counted. */
  vmmt_run_expect(t.vcpu, VMM_EXIT_SYSTEM);
  assert_int_equal(get(t.vcpu).exits[VMM_EXIT_SYSTEM], 2);
  vmmt_fini(&t);
}

static json_t *find_range(json_t *stats, const char *space, uint64_t base) {
  json_t *arr = json_object_get(json_object_get(stats, "io"), space);
  assert_true(json_is_array(arr));
  size_t i;
  json_t *r;
  json_array_foreach(arr, i, r) {
    if ((uint64_t)json_integer_value(json_object_get(r, "base")) == base)
      return r;
  }
  fail_msg("no %s range at 0x%llx in the statistics", space,
           (unsigned long long)base);
  return NULL;
}

static json_int_t jint(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v))
    fail_msg("\"%s\" is not an integer", key);
  return json_integer_value(v);
}

static void test_json(void **state) {
  (void)state;
  struct vmmt t;
  unsigned ports = 0, mmio = 0;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x80, 1, count_io, &ports));
  assert_ok(vmm_io_register(t.vm, VMM_IO_MMIO, MMIO_BASE, 8, count_io, &mmio));
  struct vmm_exit_port_config xp;
  vmm_exit_port_config_init(&xp);
  xp.port = 0x82; /* the guest's last write */
  assert_ok(vmm_exit_port_create(t.vm, &xp, NULL));
  load_port_guest(&t, 25);
  vmmt_run_to_port(t.vcpu, 0x81);
  assert_ok(vmm_vcpu_run(t.vcpu, NULL)); /* through 0x82: the exit port */

  json_t *s = NULL;
  assert_ok(vmm_vm_stats_json(t.vm, &s));
  char *text = json_dumps(s, JSON_INDENT(1) | JSON_SORT_KEYS);
  print_message("%s\n", text);
  free(text);

  assert_string_equal(json_string_value(json_object_get(s, "engine")),
                      vmm_engine_name(vmmt_engine));
  assert_string_equal(json_string_value(json_object_get(s, "engine_reason")),
                      "requested");
  assert_true(jint(s, "tsc_hz") > 100000000);

  json_t *vcpus = json_object_get(s, "vcpus");
  assert_int_equal(json_array_size(vcpus), 1);
  json_t *v0 = json_array_get(vcpus, 0);
  assert_int_equal(jint(v0, "index"), 0);
  json_t *total = json_object_get(s, "total");
  for (json_t *o = v0; o != NULL; o = o == v0 ? total : NULL) {
    assert_int_equal(jint(o, "runs"), 2);
    json_t *exits = json_object_get(o, "exits");
    assert_int_equal(json_object_size(exits), 10);
    assert_int_equal(jint(exits, "io"), 25 + 2);
    assert_int_equal(jint(exits, "mmio"), 1);
    assert_int_equal(jint(exits, "system"), 1);
    assert_int_equal(jint(exits, "shutdown"), 0);
    assert_int_equal(jint(o, "io_handled"), 25 + 1);
    assert_int_equal(jint(o, "mmio_handled"), 1);
    assert_int_equal(jint(o, "reentries"), get(t.vcpu).exits[VMM_EXIT_NONE]);
    json_t *tm = json_object_get(o, "time_ns");
    assert_true(jint(tm, "run") >= jint(tm, "guest"));
    assert_true(jint(tm, "io_handlers") > 0);
    assert_int_equal(jint(tm, "exit_handler"), 0);
  }

  /* Ranges: a bare handler has no device; the exit port's range is its. */
  json_t *r = find_range(s, "port", 0x80);
  assert_int_equal(jint(r, "len"), 1);
  assert_int_equal(jint(r, "accesses"), 25);
  assert_true(json_is_null(json_object_get(r, "device")));
  r = find_range(s, "port", 0x82);
  assert_string_equal(json_string_value(json_object_get(r, "device")),
                      "exit-port");
  assert_int_equal(jint(r, "accesses"), 1);
  r = find_range(s, "mmio", MMIO_BASE);
  assert_int_equal(jint(r, "accesses"), 1);
  /* Devices with their own counters and type. */
  json_t *dev = json_object_get(json_object_get(s, "devices"), "exit-port");
  assert_non_null(dev);
  assert_string_equal(json_string_value(json_object_get(dev, "type")),
                      "exit-port");
  assert_int_equal(jint(dev, "writes"), 1);
  json_decref(s);

  /* vmm_vm_stats_reset() zeroes the ranges too. */
  assert_ok(vmm_vm_stats_reset(t.vm));
  assert_ok(vmm_vm_stats_json(t.vm, &s));
  assert_int_equal(jint(find_range(s, "port", 0x80), "accesses"), 0);
  assert_int_equal(jint(json_object_get(s, "total"), "runs"), 0);
  json_decref(s);
  vmmt_fini(&t);
}

static void test_vm_sum(void **state) {
  (void)state;
  unsigned ports = 0, mmio = 0;
  vmm_vm *vm = vmmt_vm_create(2, 0);
  vmm_vcpu *v[2];
  assert_ok(vmm_mem_slot_add(vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x80, 1, count_io, &ports));
  assert_ok(vmm_io_register(vm, VMM_IO_MMIO, MMIO_BASE, 8, count_io, &mmio));
  for (unsigned i = 0; i < 2; i++) {
    assert_ok(vmm_vcpu_create(vm, i, &v[i]));
    vmmt_setup_vcpu(v[i], VMM_MODE_LONG64, 3);
  }
  /* Two copies of the guest with different counts. */
  for (unsigned i = 0; i < 2; i++) {
    uint8_t code[sizeof(port_guest)];
    uint32_t n = 10 + 5 * i;
    memcpy(code, port_guest, sizeof(code));
    memcpy(code + 1, &n, 4);
    uint64_t at = VMMT_CODE + 0x1000 * i;
    assert_ok(vmm_mem_write(vm, at, code, sizeof(code)));
    vmmt_set_ip_sp(v[i], at, VMMT_STACK - 0x1000 * i);
    vmmt_run_to_port(v[i], 0x81);
  }
  struct vmm_vcpu_stats st;
  vmm_vcpu_stats_init(&st);
  assert_ok(vmm_vm_stats_get(vm, &st));
  assert_int_equal(st.runs, 2);
  assert_int_equal(st.exits[VMM_EXIT_IO], 10 + 15 + 2);
  assert_int_equal(st.io_handled, 25);
  assert_int_equal(st.mmio_handled, 2);
  assert_int_equal(get(v[1]).exits[VMM_EXIT_IO], 16);

  /* Resetting one vCPU leaves the other's counters. */
  assert_ok(vmm_vcpu_stats_reset(v[0]));
  struct vmm_vcpu_stats z = get(v[0]);
  assert_zero(&z);
  assert_ok(vmm_vm_stats_get(vm, &st));
  assert_int_equal(st.exits[VMM_EXIT_IO], 16);
  assert_ok(vmm_vm_destroy(vm));
}

static atomic_int completions;

static void on_done(vmm_vcpu *vcpu, int status, struct vmm_exit *e,
                    void *opaque) {
  (void)vcpu, (void)opaque;
  assert_int_equal(status, 0);
  assert_int_equal(e->reason, VMM_EXIT_STOPPED);
  atomic_fetch_add(&completions, 1);
}

/* Counters belong to the running thread: no reset while it runs. */
static void test_reset_while_running(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  static const uint8_t forever[] = {0xeb, 0xfe}; /* jmp $ */
  vmmt_load(&t, VMMT_CODE, forever, sizeof(forever));
  atomic_store(&completions, 0);
  assert_ok(vmm_vcpu_start(t.vcpu, on_done, NULL));
  /* runs is counted once vmm_vcpu_run() owns the vCPU. */
  uint64_t t0 = now_ns();
  while (get(t.vcpu).runs == 0) {
    if (now_ns() - t0 > 10ull * 1000000000ull)
      fail_msg("the vCPU did not start within 10 s");
    usleep(1000);
  }
  assert_vmm(vmm_vcpu_stats_reset(t.vcpu), VMM_EBUSY);
  assert_vmm(vmm_vm_stats_reset(t.vm), VMM_EBUSY);
  /* Reading is fine meanwhile, JSON included. */
  json_t *s = NULL;
  assert_ok(vmm_vm_stats_json(t.vm, &s));
  json_decref(s);
  assert_ok(vmm_vcpu_kick(t.vcpu));
  while (atomic_load(&completions) == 0) {
    if (now_ns() - t0 > 20ull * 1000000000ull)
      fail_msg("no completion after the kick");
    usleep(1000);
  }
  struct vmm_vcpu_stats st = get(t.vcpu);
  assert_int_equal(st.runs, 1);
  assert_true(st.exits[VMM_EXIT_STOPPED] == 1);
  /* The completion is delivered after vmm_vcpu_run() returned. */
  assert_ok(vmm_vcpu_stats_reset(t.vcpu));
  st = get(t.vcpu);
  assert_zero(&st);
  vmmt_fini(&t);
}

static void test_errors_and_names(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 3);
  struct vmm_vcpu_stats st;
  vmm_vcpu_stats_init(&st);
  assert_vmm(vmm_vcpu_stats_get(NULL, &st), VMM_EINVAL);
  assert_vmm(vmm_vcpu_stats_get(t.vcpu, NULL), VMM_EINVAL);
  assert_vmm(vmm_vm_stats_get(NULL, &st), VMM_EINVAL);
  st.size = 0;
  assert_vmm(vmm_vcpu_stats_get(t.vcpu, &st), VMM_EINVAL);
  st.size = sizeof(st) + 8; /* from a newer header than this library */
  assert_vmm(vmm_vcpu_stats_get(t.vcpu, &st), VMM_EINVAL);
  assert_vmm(vmm_vm_stats_get(t.vm, &st), VMM_EINVAL);
  assert_vmm(vmm_vcpu_stats_reset(NULL), VMM_EINVAL);
  assert_vmm(vmm_vm_stats_reset(NULL), VMM_EINVAL);
  json_t *j = NULL;
  assert_vmm(vmm_vm_stats_json(NULL, &j), VMM_EINVAL);
  assert_vmm(vmm_vm_stats_json(t.vm, NULL), VMM_EINVAL);
  assert_null(j);
  vmm_vcpu_stats_init(NULL); /* harmless */

  assert_string_equal(vmm_exit_reason_name(VMM_EXIT_NONE), "none");
  assert_string_equal(vmm_exit_reason_name(VMM_EXIT_IO), "io");
  assert_string_equal(vmm_exit_reason_name(VMM_EXIT_SHUTDOWN), "shutdown");
  assert_string_equal(vmm_exit_reason_name(VMM_EXIT_INTERNAL_ERROR),
                      "internal_error");
  assert_string_equal(vmm_exit_reason_name(VMM_EXIT_SYSTEM), "system");
  assert_string_equal(vmm_exit_reason_name(VMM_EXIT_SYSTEM + 1), "unknown");
  assert_string_equal(vmm_exit_reason_name(~0u), "unknown");

  assert_string_equal(vmm_vm_engine_reason(t.vm), "requested");
  assert_string_equal(vmm_vm_engine_reason(NULL), "");
  vmmt_fini(&t);
}

/* VMM_ENGINE_AUTO says what it chose and why. */
static void test_auto_reason(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  vmm_vm *vm;
  assert_ok(vmm_vm_create(&cfg, &vm));
  const char *why = vmm_vm_engine_reason(vm);
  print_message("auto chose %s: %s\n", vmm_engine_name(vmm_vm_engine(vm)), why);
  assert_true(strncmp(why, "auto: ", 6) == 0);
  assert_non_null(strstr(why, vmm_engine_name(vmm_vm_engine(vm))));
  assert_ok(vmm_vm_destroy(vm));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fresh_vcpu),
      cmocka_unit_test(test_counts),
      cmocka_unit_test(test_io_time),
      cmocka_unit_test(test_exit_handler_time),
      cmocka_unit_test(test_time_vs_wall_clock),
      cmocka_unit_test(test_stop_and_system_event),
      cmocka_unit_test(test_json),
      cmocka_unit_test(test_vm_sum),
      cmocka_unit_test(test_reset_while_running),
      cmocka_unit_test(test_errors_and_names),
      cmocka_unit_test(test_auto_reason),
  };
  return vmmt_run_group(tests);
}
