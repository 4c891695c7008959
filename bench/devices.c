/*
 * Costs the device layer adds, each measured side by side with its
 * reference in the same process, interleaved round by round so both see
 * the same machine load (KVM engine, guest at CPL 3 so guest instructions
 * run natively and the exit path is what is measured):
 *
 *   uart   a byte written to the 16550A's THR (register model, lock,
 *          interrupt update, callback backend) against a byte written to
 *          a bare registered port handler: per-exit time and ratio.
 *   start  a run on a library-managed thread with its completion delivered
 *          on a host-run loop (vmm_vcpu_start() + vmm_loop_run()) against
 *          vmm_vcpu_run() on the calling thread, for a guest whose run is a
 *          single exit-port write: per-run time and ratio.
 *
 *   bench_devices [bytes-per-round] [runs-per-round] [rounds]
 */
#include <libvmm/vmm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MEM_SIZE (2u << 20)
#define TABLES 0x100000
#define CODE 0x10000

/* 1: out dx, al; dec ecx; jnz 1b; out 0x81, al (unclaimed: back to us) */
static const uint8_t tx_loop[] = {0xee, 0xff, 0xc9, 0x75, 0xfb, 0xe6, 0x81};
/* out 0xf4, al (the exit port ends the run) */
static const uint8_t exit_now[] = {0xe6, 0xf4};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "bench_devices: %s: %s\n", what, vmm_strerror(err));
    exit(1);
  }
}

static vmm_vcpu *guest(vmm_vm *vm, const uint8_t *code, size_t len) {
  vmm_vcpu *vcpu;
  check(vmm_mem_slot_add(vm, 0, MEM_SIZE, NULL, 0, NULL), "slot");
  check(vmm_mem_write(vm, CODE, code, len), "code");
  check(vmm_vcpu_create(vm, 0, &vcpu), "vcpu");
  struct vmm_mode_setup m = {.mode = VMM_MODE_LONG64,
                             .cpl = 3,
                             .tables = TABLES,
                             .kernel_stack = 0x70000};
  check(vmm_vcpu_set_mode(vcpu, &m), "mode");
  return vcpu;
}

static void set_ip(vmm_vcpu *vcpu, uint64_t rcx, uint64_t rdx) {
  struct vmm_regs r;
  check(vmm_vcpu_get_regs(vcpu, &r), "get regs");
  r.rip = CODE;
  r.rsp = 0x80000;
  r.rcx = rcx;
  r.rdx = rdx;
  check(vmm_vcpu_set_regs(vcpu, &r), "set regs");
}

/* ---------------------------------------------------------------------- */

static unsigned long sunk;

static void sink(vmm_dev *dev, const uint8_t *buf, size_t len, void *op) {
  (void)dev, (void)buf, (void)op;
  sunk += len;
}

static int bare(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)data, (void)len, (void)is_write;
  ++*(unsigned long *)opaque;
  return 0;
}

/* Time per byte of one round of n bytes to port. */
static double tx_round(vmm_vcpu *vcpu, uint16_t port, unsigned n) {
  struct vmm_exit *e;
  set_ip(vcpu, n, port);
  double t0 = now();
  check(vmm_vcpu_run(vcpu, &e), "run");
  double t = now() - t0;
  if (e->reason != VMM_EXIT_IO || e->io.port != 0x81) {
    fprintf(stderr, "bench_devices: unexpected exit %d\n", e->reason);
    exit(1);
  }
  return t / n;
}

/* ---------------------------------------------------------------------- */

struct starter {
  vmm_vm *vm;
  unsigned left;
};

static void on_done(vmm_vcpu *vcpu, int status, struct vmm_exit *e,
                    void *opaque) {
  struct starter *s = opaque;
  check(status, "library run");
  if (e->reason != VMM_EXIT_SYSTEM) {
    fprintf(stderr, "bench_devices: unexpected exit %d\n", e->reason);
    exit(1);
  }
  vmm_vm_system_event_clear(s->vm);
  if (--s->left > 0) {
    set_ip(vcpu, 0, 0);
    check(vmm_vcpu_start(vcpu, on_done, s), "start");
  }
}

static double start_round(vmm_vm *vm, vmm_vcpu *vcpu, vmm_loop *loop,
                          unsigned n) {
  struct starter s = {vm, n};
  set_ip(vcpu, 0, 0);
  double t0 = now();
  check(vmm_vcpu_start(vcpu, on_done, &s), "start");
  check(vmm_loop_run(loop, VMM_LOOP_RUN_DEFAULT), "loop");
  return (now() - t0) / n;
}

static double direct_round(vmm_vm *vm, vmm_vcpu *vcpu, unsigned n) {
  double t0 = now();
  for (unsigned i = 0; i < n; i++) {
    struct vmm_exit *e;
    set_ip(vcpu, 0, 0);
    check(vmm_vcpu_run(vcpu, &e), "run");
    if (e->reason != VMM_EXIT_SYSTEM) {
      fprintf(stderr, "bench_devices: unexpected exit %d\n", e->reason);
      exit(1);
    }
    vmm_vm_system_event_clear(vm);
  }
  return (now() - t0) / n;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n) {
  qsort(v, n, sizeof(v[0]), cmp);
  return v[n / 2];
}

int main(int argc, char **argv) {
  unsigned bytes = argc > 1 ? (unsigned)atoi(argv[1]) : 2000;
  unsigned runs = argc > 2 ? (unsigned)atoi(argv[2]) : 300;
  unsigned rounds = argc > 3 ? (unsigned)atoi(argv[3]) : 9;
  if (bytes == 0 || runs == 0 || rounds == 0 || rounds > 101) {
    fprintf(stderr, "usage: bench_devices [bytes] [runs] [rounds<=101]\n");
    return 2;
  }
  if (!vmm_engine_available(VMM_ENGINE_KVM)) {
    printf("bench_devices: the KVM engine is not available here\n");
    return 0;
  }
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;

  /* uart vs bare handler: one VM, both devices, the port chosen per run. */
  vmm_vm *vm;
  check(vmm_vm_create(&cfg, &vm), "vm");
  vmm_vcpu *vcpu = guest(vm, tx_loop, sizeof(tx_loop));
  struct vmm_uart_config ucfg;
  vmm_uart_config_init(&ucfg);
  ucfg.backend = VMM_UART_CALLBACK;
  ucfg.write_fn = sink;
  check(vmm_uart_create(vm, &ucfg, NULL), "uart");
  unsigned long bare_count = 0;
  check(vmm_io_register(vm, VMM_IO_PORT, 0x80, 1, bare, &bare_count), "io");
  double tu[101], tb[101];
  for (unsigned r = 0; r < rounds; r++) {
    tu[r] = tx_round(vcpu, 0x3f8, bytes);
    tb[r] = tx_round(vcpu, 0x80, bytes);
  }
  if (sunk != (unsigned long)bytes * rounds ||
      bare_count != (unsigned long)bytes * rounds) {
    fprintf(stderr, "bench_devices: byte counts do not match\n");
    return 1;
  }
  double mu = median(tu, rounds), mb = median(tb, rounds);
  printf("uart   THR write %8.2f us/exit   bare handler %8.2f us/exit   "
         "ratio %.3f\n",
         mu * 1e6, mb * 1e6, mu / mb);
  check(vmm_vm_destroy(vm), "destroy");

  /* library thread + loop completion vs direct run. */
  check(vmm_vm_create(&cfg, &vm), "vm");
  vcpu = guest(vm, exit_now, sizeof(exit_now));
  struct vmm_exit_port_config xcfg;
  vmm_exit_port_config_init(&xcfg);
  check(vmm_exit_port_create(vm, &xcfg, NULL), "exit port");
  struct vmm_loop_config lcfg;
  vmm_loop_config_init(&lcfg);
  vmm_loop *loop;
  check(vmm_loop_create(&lcfg, &loop), "loop");
  check(vmm_vm_set_loop(vm, loop), "set loop");
  double ts[101], td[101];
  for (unsigned r = 0; r < rounds; r++) {
    ts[r] = start_round(vm, vcpu, loop, runs);
    td[r] = direct_round(vm, vcpu, runs);
  }
  double ms = median(ts, rounds), md = median(td, rounds);
  printf("start  library thread %8.2f us/run    direct run   %8.2f us/run    "
         "ratio %.3f\n",
         ms * 1e6, md * 1e6, ms / md);
  check(vmm_vm_destroy(vm), "destroy");
  check(vmm_loop_destroy(loop), "loop destroy");
  return 0;
}
