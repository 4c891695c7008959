/*
 * libFuzzer target: random bytes run as guest code on the BT engine, in
 * real mode, 32-bit protected mode and 64-bit long mode, at CPL 0 and 3.
 * Whatever the bytes do (wild pointers, jumps into data, rewriting
 * themselves or their page tables, enormous rep counts, privileged
 * instructions), the host must not crash, hang or touch memory outside
 * the guest's RAM and the engine's structures (ASan checks the latter).
 *
 * Input: byte 0 selects the mode and options (bits 5-6: the code forms,
 * vmm_vm_config.bt_flags; bit 7: no instruction limit, see FREE_MS),
 * bytes 1..16 seed registers (and in long mode LSTAR and FMASK: syscall
 * and sysretq enter and leave the kernel in the fuzzed bytes),
 * the rest is the code, placed at the entry point and also after it
 * (so jumps forward land in more fuzzed bytes).
 */
#include <errno.h>
#include <libvmm/vmm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RAM (2u << 20)
#define TABLES 0x100000u
#define LIMIT 4000 /* instructions per input: bounds the time */
#define WATCH_MS 500 /* and this, for guests that retire none (see below) */
/* Inputs with bit 7 of byte 0 run without the limit, bounded by the
   watchdog alone, after this many milliseconds: the limit needs counting
   mode, whose translations have no warm entries, self loops or loop
   regions (docs/bt.md), so only these runs fuzz those, the loop regions'
   look-ahead over the guest's bytes included. */
#define FREE_MS 10

/*
 * A guest can run forever without retiring an instruction, as a processor
 * would: an exception whose handler faults at once, delivered again and
 * again (real mode: an IVT entry pointing at an invalid opcode). The
 * instruction limit never ends that; the watchdog kicks the vCPU after
 * WATCH_MS milliseconds, as a host program would.
 */
struct watchdog {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  atomic_bool fired;
  vmm_vcpu *vcpu;
  long ms;
};

static void *watch(void *arg) {
  struct watchdog *w = arg;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += w->ms * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
  }
  pthread_mutex_lock(&w->lock);
  int rc = 0;
  while (!w->done && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&w->cond, &w->lock, &until);
  if (!w->done) {
    atomic_store(&w->fired, true);
    vmm_vcpu_kick(w->vcpu);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Devices that answer anything, so I/O and MMIO exits complete. */
static int any_io(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                  bool is_write, void *opaque) {
  (void)vcpu, (void)addr, (void)opaque;
  if (!is_write)
    memset(data, 0x5a, len);
  return 0;
}

/* FUZZ_BT_VERBOSE=1 prints the engine's diagnostics (to replay a crash). */
static void print_log(enum vmm_log_level level, const char *msg, void *opaque) {
  (void)opaque;
  fprintf(stderr, "libvmm[%d]: %s\n", (int)level, msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 18)
    return 0;
  uint8_t sel = data[0];
  enum vmm_cpu_mode mode = (enum vmm_cpu_mode)(sel % 3);
  unsigned cpl = (mode != VMM_MODE_REAL && (sel & 4)) ? 3 : 0;
  bool exc_exits = sel & 8;
  bool devices = sel & 16;
  uint32_t bt_flags = (sel >> 5) & (VMM_BT_NO_LOOP | VMM_BT_NO_PEXT);
  bool free_run = sel & 0x80;
  uint64_t seed[2];
  memcpy(seed, data + 1, 16);
  const uint8_t *code = data + 17;
  size_t len = size - 17;
  if (len > 0x8000)
    len = 0x8000;

  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_BT;
  cfg.bt_cache_size = 256u << 10;
  cfg.bt_flags = bt_flags;
  if (getenv("FUZZ_BT_VERBOSE")) {
    cfg.log_fn = print_log;
    cfg.log_level = VMM_LOG_DEBUG;
  }
  vmm_vm *vm;
  if (vmm_vm_create(&cfg, &vm) < 0)
    abort();
  vmm_vcpu *vcpu;
  if (vmm_mem_slot_add(vm, 0, RAM, NULL, 0, NULL) < 0 ||
      vmm_vcpu_create(vm, 0, &vcpu) < 0)
    abort();
  if (devices) {
    vmm_io_register(vm, VMM_IO_PORT, 0, 0x10000, any_io, NULL);
    vmm_io_register(vm, VMM_IO_MMIO, RAM, (1ull << 40) - RAM, any_io, NULL);
  }
  uint64_t entry = mode == VMM_MODE_REAL ? 0x1000 : 0x10000;
  vmm_mem_write(vm, entry, code, len);
  vmm_mem_write(vm, entry + len, code, len);
  struct vmm_mode_setup ms = {.mode = mode,
                              .cpl = cpl,
                              .tables = TABLES,
                              .identity_size = 1ull << 30,
                              .kernel_stack = 0x70000};
  if (vmm_vcpu_set_mode(vcpu, &ms) < 0)
    abort();
  struct vmm_regs r;
  vmm_vcpu_get_regs(vcpu, &r);
  r.rax = seed[0];
  r.rcx = seed[1] & 0xffffff; /* bounded rep counts are more productive */
  r.rdx = seed[1] >> 32;
  r.rbx = 0x20000;
  r.rsi = 0x30000;
  r.rdi = 0x40000;
  r.rip = entry;
  r.rsp = mode == VMM_MODE_REAL ? 0x8000 : 0x80000;
  vmm_vcpu_set_regs(vcpu, &r);
  if (mode == VMM_MODE_LONG64) {
    /* syscall and sysretq work (translated inline on BT when no limit
       counts): LSTAR into the fuzzed bytes, FMASK from the seed. */
    struct vmm_msr m[4] = {
        {.index = 0xc0000080, .value = 0xd01}, /* EFER: SCE, LME, LMA, NXE */
        {.index = 0xc0000081, .value = 0x0023001000000000ull}, /* STAR */
        {.index = 0xc0000082, .value = entry + (seed[0] >> 52) % len},
        {.index = 0xc0000084, .value = (uint32_t)seed[0]}, /* FMASK */
    };
    if (vmm_vcpu_set_msrs(vcpu, m, 4) < 0)
      abort();
  }
  if (!free_run && vmm_vcpu_set_insn_limit(vcpu, LIMIT) < 0)
    abort();
  if (exc_exits)
    vmm_vcpu_set_exception_exits(vcpu, 0xffffffffu);

  struct watchdog w = {.lock = PTHREAD_MUTEX_INITIALIZER,
                       .cond = PTHREAD_COND_INITIALIZER,
                       .vcpu = vcpu,
                       .ms = free_run ? FREE_MS : WATCH_MS};
  atomic_init(&w.fired, false);
  pthread_t wt;
  if (pthread_create(&wt, NULL, watch, &w) != 0)
    abort();
  for (int i = 0; i < 64 && !atomic_load(&w.fired); i++) {
    struct vmm_exit *e;
    if (vmm_vcpu_run(vcpu, &e) < 0)
      abort();
    if (e->reason == VMM_EXIT_IO || e->reason == VMM_EXIT_MMIO) {
      if (e->reason == VMM_EXIT_IO && !e->io.is_write)
        memset(e->io.data, 0xa5, (size_t)e->io.size * e->io.count);
      if (e->reason == VMM_EXIT_MMIO && !e->mmio.is_write)
        memset(e->mmio.data, 0xa5, sizeof(e->mmio.data));
      continue;
    }
    if (e->reason == VMM_EXIT_INTERNAL_ERROR &&
        e->internal.code == VMM_INTERNAL_UNKNOWN)
      abort(); /* the engine failed on its own, not on the guest */
    if (e->reason != VMM_EXIT_NONE)
      break;
  }
  pthread_mutex_lock(&w.lock);
  w.done = true;
  pthread_cond_signal(&w.cond);
  pthread_mutex_unlock(&w.lock);
  pthread_join(wt, NULL);
  uint64_t n = 0;
  if (!free_run)
    vmm_vcpu_insn_count(vcpu, &n);
  if (n > LIMIT)
    abort();
  if (vmm_vm_destroy(vm) < 0)
    abort();
  return 0;
}
