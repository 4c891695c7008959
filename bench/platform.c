/*
 * The user-space interrupt platform's costs, each measured side by side
 * with its reference in the same process, interleaved round by round so
 * both see the same machine load:
 *
 *   timers  how late a timer fires: the VM's clock (lib/io/clock.c, the
 *           time base of the PIT and APIC timers) against a raw timerfd
 *           poll loop (the best a thread can do) and a libuv timer on its
 *           own loop (the VM's event loop, millisecond resolution), for
 *           periods of 100 us, 1 ms and 4 ms on absolute deadlines.
 *   irq     a line raised by a host thread until a halted guest's handler
 *           runs (the handler's port write): the user-space platform
 *           (PIC, kick, wake from halt, KVM_INTERRUPT) against KVM's
 *           in-kernel irqchip, on KVM.
 *   exit    a port-I/O exit round trip of a CPL 3 guest on a VM with the
 *           user-space platform against one without interrupt controllers:
 *           what the acceptance checks and CR8 sync add to every exit.
 *
 *   bench_platform [rounds]
 */
#include <libvmm/vmm.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "internal.h"

#define N 200 /* deadlines per timer measurement */

static int64_t mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "bench_platform: %s: %s\n", what, vmm_strerror(err));
    exit(1);
  }
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

struct lat {
  double mean, p50, p99;
};

static struct lat summary(int64_t *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp64);
  double sum = 0;
  for (int i = 0; i < n; i++)
    sum += (double)v[i];
  return (struct lat){sum / n, (double)v[n / 2], (double)v[n * 99 / 100]};
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                   */

struct clock_run {
  struct vmm__clock *clock;
  struct vmm__timer timer;
  int64_t period, first, late[N];
  int n;
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

static void on_clock(struct vmm__timer *t, int64_t now) {
  struct clock_run *r = t->opaque;
  (void)now;
  int64_t deadline = r->first + (int64_t)r->n * r->period;
  r->late[r->n] = vmm__clock_now(r->clock) - deadline;
  if (++r->n < N) {
    vmm__timer_arm(r->clock, t, deadline + r->period);
    return;
  }
  pthread_mutex_lock(&r->lock);
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);
}

static struct lat run_clock(vmm_vm *vm, int64_t period) {
  struct clock_run r = {.clock = vm->clock, .period = period};
  pthread_mutex_init(&r.lock, NULL);
  pthread_cond_init(&r.cond, NULL);
  vmm__timer_init(&r.timer, on_clock, &r);
  r.first = vmm__clock_now(vm->clock) + period;
  pthread_mutex_lock(&r.lock);
  vmm__timer_arm(vm->clock, &r.timer, r.first);
  while (r.n < N)
    pthread_cond_wait(&r.cond, &r.lock);
  pthread_mutex_unlock(&r.lock);
  vmm__timer_fini(vm->clock, &r.timer);
  pthread_cond_destroy(&r.cond);
  pthread_mutex_destroy(&r.lock);
  return summary(r.late, N);
}

static struct lat run_timerfd(int64_t period) {
  prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  int64_t late[N], dl = mono() + period;
  for (int i = 0; i < N; i++, dl += period) {
    struct itimerspec its = {
        .it_value = {dl / 1000000000ll, dl % 1000000000ll}};
    timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    poll(&p, 1, -1);
    uint64_t x;
    if (read(fd, &x, sizeof(x)) < 0)
      exit(1);
    late[i] = mono() - dl;
  }
  close(fd);
  prctl(PR_SET_TIMERSLACK, 50000ul, 0ul, 0ul, 0ul);
  return summary(late, N);
}

struct uv_run_state {
  int64_t period, deadline, late[N];
  int n;
};

static void on_uv(uv_timer_t *t) {
  struct uv_run_state *s = t->data;
  s->late[s->n] = mono() - s->deadline;
  if (++s->n == N) {
    uv_timer_stop(t);
    return;
  }
  s->deadline += s->period;
  uv_update_time(t->loop);
  int64_t d = s->deadline - mono();
  uv_timer_start(t, on_uv, d > 0 ? (uint64_t)((d + 999999) / 1000000) : 0, 0);
}

static struct lat run_uv(int64_t period) {
  uv_loop_t loop;
  uv_timer_t t;
  struct uv_run_state s = {.period = period};
  uv_loop_init(&loop);
  uv_timer_init(&loop, &t);
  t.data = &s;
  s.deadline = mono() + period;
  uv_timer_start(&t, on_uv, (uint64_t)((period + 999999) / 1000000), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return summary(s.late, N);
}

static void bench_timers(int rounds) {
  vmm_vm *vm;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  check(vmm_vm_create(&cfg, &vm), "vm");
  static const int64_t periods[] = {100000, 1000000, 4000000};
  printf("timers: lateness of %d absolute deadlines (mean / median / p99, "
         "us)\n",
         N);
  for (size_t p = 0; p < 3; p++) {
    struct lat c = {0}, f = {0}, u = {0};
    for (int r = 0; r < rounds; r++) {
      struct lat a = run_clock(vm, periods[p]);
      struct lat b = run_timerfd(periods[p]);
      struct lat d = run_uv(periods[p]);
      c.mean += a.mean / rounds, c.p50 += a.p50 / rounds,
          c.p99 += a.p99 / rounds;
      f.mean += b.mean / rounds, f.p50 += b.p50 / rounds,
          f.p99 += b.p99 / rounds;
      u.mean += d.mean / rounds, u.p50 += d.p50 / rounds,
          u.p99 += d.p99 / rounds;
    }
    printf("  period %4lld us: clock %7.1f / %7.1f / %7.1f   timerfd %7.1f / "
           "%7.1f / %7.1f   libuv %7.1f / %7.1f / %7.1f\n",
           (long long)periods[p] / 1000, c.mean / 1e3, c.p50 / 1e3, c.p99 / 1e3,
           f.mean / 1e3, f.p50 / 1e3, f.p99 / 1e3, u.mean / 1e3, u.p50 / 1e3,
           u.p99 / 1e3);
    printf("                   mean lateness: clock/timerfd %.2f, "
           "clock/libuv %.3f\n",
           c.mean / f.mean, c.mean / u.mean);
  }
  vmm_vm_destroy(vm);
}

/* ------------------------------------------------------------------------ */
/* Interrupt delivery to a halted guest                                     */

/* 64-bit CPL 0 at 0x10000: PIC init (vectors 0x20, IRQ 4 only), lidt
   [0x10800] (IDT at 0x11000), then sti; hlt; jmp back. The handler at
   0x10100: out 0x80, EOI, iretq. */
static const uint8_t irq_guest[] = {
    0xb0, 0x11, 0xe6, 0x20, 0xb0, 0x20, 0xe6, 0x21, 0xb0, 0x04,
    0xe6, 0x21, 0xb0, 0x01, 0xe6, 0x21, 0xb0, 0xef, 0xe6, 0x21,
    0x0f, 0x01, 0x1c, 0x25, 0x00, 0x08, 0x01, 0x00, /* lidt [0x10800] */
    0xfb, 0xf4, 0xeb, 0xfc,                         /* sti; hlt; jmp -4 */
};
static const uint8_t irq_handler[] = {0xe6, 0x80, 0xb0, 0x20,
                                      0xe6, 0x20, 0x48, 0xcf};

struct irq_run {
  atomic_llong seen; /* handler time, 0 while waiting */
};

static int on_port80(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  struct irq_run *r = opaque;
  (void)vcpu, (void)port, (void)data, (void)len, (void)is_write;
  atomic_store(&r->seen, mono());
  return 0;
}

static void done_cb(vmm_vcpu *vcpu, int status, struct vmm_exit *exit,
                    void *opaque) {
  (void)vcpu, (void)status, (void)exit, (void)opaque;
}

/* Mean and median nanoseconds from vmm_vm_irq_line() to the handler. */
static struct lat run_irq(uint32_t flags, int count) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;
  cfg.flags = flags;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  check(vmm_vm_create(&cfg, &vm), "irq vm");
  check(vmm_mem_slot_add(vm, 0, 2u << 20, NULL, 0, NULL), "slot");
  check(vmm_mem_write(vm, 0x10000, irq_guest, sizeof(irq_guest)), "code");
  check(vmm_mem_write(vm, 0x10100, irq_handler, sizeof(irq_handler)), "isr");
  uint8_t idtr[10] = {0xff, 0x0f, 0x00, 0x10, 0x01, 0x00}; /* 0x11000 */
  check(vmm_mem_write(vm, 0x10800, idtr, sizeof(idtr)), "idtr");
  uint8_t gate[16] = {0x00, 0x01, 0x10, 0x00, 0x00, 0x8e, 0x01, 0x00};
  check(vmm_mem_write(vm, 0x11000 + 0x24 * 16, gate, 16), "gate");
  check(vmm_vcpu_create(vm, 0, &vcpu), "vcpu");
  struct vmm_mode_setup m = {
      .mode = VMM_MODE_LONG64, .tables = 0x100000, .kernel_stack = 0x70000};
  check(vmm_vcpu_set_mode(vcpu, &m), "mode");
  struct vmm_regs regs;
  check(vmm_vcpu_get_regs(vcpu, &regs), "regs");
  regs.rip = 0x10000;
  regs.rsp = 0x80000;
  check(vmm_vcpu_set_regs(vcpu, &regs), "regs");
  struct irq_run r;
  atomic_init(&r.seen, 0);
  check(vmm_io_register(vm, VMM_IO_PORT, 0x80, 1, on_port80, &r), "port");
  check(vmm_vcpu_start(vcpu, done_cb, NULL), "start");
  usleep(200000); /* set up, halted */
  int64_t *lat = calloc((size_t)count, sizeof(*lat));
  for (int i = 0; i < count; i++) {
    atomic_store(&r.seen, 0);
    int64_t t0 = mono();
    check(vmm_vm_irq_line(vm, 4, true), "line");
    while (atomic_load(&r.seen) == 0 && mono() - t0 < 1000000000ll)
      ;
    lat[i] = atomic_load(&r.seen) - t0;
    check(vmm_vm_irq_line(vm, 4, false), "line");
    usleep(2000); /* back in hlt */
  }
  vmm_vm_destroy(vm);
  struct lat s = summary(lat, count);
  free(lat);
  return s;
}

static void bench_irq(int rounds) {
  double user = 0, kern = 0, user50 = 0, kern50 = 0;
  for (int r = 0; r < rounds; r++) {
    struct lat u = run_irq(VMM_VM_IRQCHIP_USER, 100);
    struct lat k = run_irq(VMM_VM_IRQCHIP, 100);
    user += u.mean / rounds, user50 += u.p50 / rounds;
    kern += k.mean / rounds, kern50 += k.p50 / rounds;
  }
  printf("irq: line raised by a host thread until a halted guest's handler "
         "runs (mean / median, us)\n");
  printf("  user-space platform %8.1f / %8.1f   in-kernel irqchip %8.1f / "
         "%8.1f   ratio %.2f\n",
         user / 1e3, user50 / 1e3, kern / 1e3, kern50 / 1e3, user / kern);
}

/* ------------------------------------------------------------------------ */
/* Exit round trips                                                         */

/* CPL 3: out 0x81, al; dec ecx; jnz; out 0x82, al (unclaimed) */
static const uint8_t exit_loop[] = {0xe6, 0x81, 0xff, 0xc9,
                                    0x75, 0xfa, 0xe6, 0x82};

static int on_port81(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)data, (void)len, (void)is_write, (void)opaque;
  return 0;
}

static double run_exits(uint32_t flags, int count) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;
  cfg.flags = flags;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  check(vmm_vm_create(&cfg, &vm), "exit vm");
  check(vmm_mem_slot_add(vm, 0, 2u << 20, NULL, 0, NULL), "slot");
  check(vmm_mem_write(vm, 0x10000, exit_loop, sizeof(exit_loop)), "code");
  check(vmm_io_register(vm, VMM_IO_PORT, 0x81, 1, on_port81, NULL), "port");
  check(vmm_vcpu_create(vm, 0, &vcpu), "vcpu");
  struct vmm_mode_setup m = {.mode = VMM_MODE_LONG64,
                             .cpl = 3,
                             .tables = 0x100000,
                             .kernel_stack = 0x70000};
  check(vmm_vcpu_set_mode(vcpu, &m), "mode");
  struct vmm_regs regs;
  check(vmm_vcpu_get_regs(vcpu, &regs), "regs");
  regs.rip = 0x10000;
  regs.rsp = 0x80000;
  regs.rcx = (uint64_t)count;
  check(vmm_vcpu_set_regs(vcpu, &regs), "regs");
  int64_t t0 = mono();
  struct vmm_exit *e;
  check(vmm_vcpu_run(vcpu, &e), "run");
  double per = (double)(mono() - t0) / count;
  vmm_vm_destroy(vm);
  return per;
}

static void bench_exits(int rounds) {
  double user = 0, none = 0;
  for (int r = 0; r < rounds; r++) {
    user += run_exits(VMM_VM_IRQCHIP_USER, 20000) / rounds;
    none += run_exits(0, 20000) / rounds;
  }
  printf("exit: port-I/O round trip of a CPL 3 guest (us)\n");
  printf("  user-space platform %.2f   no controllers %.2f   ratio %.3f\n",
         user / 1e3, none / 1e3, user / none);
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 3;
  if (rounds < 1)
    rounds = 1;
  bench_timers(rounds);
  if (!vmm_engine_available(VMM_ENGINE_KVM)) {
    printf("irq, exit: skipped, KVM is not available here\n");
    return 0;
  }
  bench_irq(rounds);
  bench_exits(rounds);
  return 0;
}
