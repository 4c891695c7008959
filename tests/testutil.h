/*
 * Shared helpers of the cmocka test programs: engine selection with a clear
 * skip (exit 77) when the engine is absent, assertions that name libvmm
 * error codes, and a small fixture that builds a VM with RAM, one vCPU in a
 * chosen mode and a guest program loaded.
 *
 * Every test program that runs an engine takes the engine as argv[1]
 * ("kvm" or "bt"; default "kvm"), so the same checks run on both engines.
 * Tests that only make sense on one engine say so with vmmt_skip_unless().
 *
 * Guest snippets (tests/snippets/ (.asm files)) are assembled by the build;
 * their directory is passed in the VMMT_BIN_DIR environment variable.
 */
#ifndef LIBVMM_TESTUTIL_H
#define LIBVMM_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <libvmm/vmm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VMMT_SKIP 77

/* The standard guest layout of the fixture. */
#define VMMT_RAM (2ull << 20)
#define VMMT_CODE 0x10000ull
#define VMMT_STACK 0x80000ull
#define VMMT_KSTACK 0x70000ull
#define VMMT_TABLES 0x100000ull

/* The engine under test (argv[1]). */
static enum vmm_engine_kind vmmt_engine = VMM_ENGINE_KVM;

/*
 * Pick the engine from the command line. Returns 0, or VMMT_SKIP after
 * printing why when the engine cannot run here (the caller returns it from
 * main so meson reports the test as skipped), or 2 on a usage error.
 */
static inline int vmmt_select_engine(int argc, char **argv) {
  const char *name = argc > 1 ? argv[1] : "kvm";
  if (!strcmp(name, "kvm")) {
    vmmt_engine = VMM_ENGINE_KVM;
  } else if (!strcmp(name, "bt")) {
    vmmt_engine = VMM_ENGINE_BT;
  } else {
    fprintf(stderr, "usage: %s [kvm|bt]\n", argv[0]);
    return 2;
  }
  if (vmm_engine_available(vmmt_engine))
    return 0;
  if (vmmt_engine == VMM_ENGINE_KVM)
    printf("SKIP: the KVM engine is not available here (/dev/kvm is missing "
           "or not usable); these tests need it\n");
  else
    printf("SKIP: the BT engine is not available in this build of libvmm "
           "(not built, or not implemented yet); these tests need it\n");
  return VMMT_SKIP;
}

/* Skip the current test with a reason unless it runs on engine kind. */
#define vmmt_skip_unless(kind, why)                                            \
  do {                                                                         \
    if (vmmt_engine != (kind)) {                                               \
      print_message("skipped on %s: %s\n", vmm_engine_name(vmmt_engine), why); \
      skip();                                                                  \
    }                                                                          \
  } while (0)

/* Assert that expr returns the libvmm code want, naming both on failure. */
#define assert_vmm(expr, want)                                                 \
  do {                                                                         \
    int vmmt_rc_ = (expr);                                                     \
    int vmmt_want_ = (want);                                                   \
    if (vmmt_rc_ != vmmt_want_)                                                \
      fail_msg("%s returned %s (%d), expected %s (%d)", #expr,                 \
               vmm_err_name(vmmt_rc_), vmmt_rc_, vmm_err_name(vmmt_want_),     \
               vmmt_want_);                                                    \
  } while (0)
#define assert_ok(expr) assert_vmm(expr, 0)

/* Create a VM on the engine under test. */
static inline vmm_vm *vmmt_vm_create(unsigned max_vcpus, uint32_t flags) {
  struct vmm_vm_config cfg;
  vmm_vm *vm = NULL;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.max_vcpus = max_vcpus;
  cfg.flags = flags;
  assert_ok(vmm_vm_create(&cfg, &vm));
  assert_non_null(vm);
  return vm;
}

/* A VM with RAM at gpa 0 and vCPU 0 in a mode, ready to load a program. */
struct vmmt {
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  uint64_t ram;
};

static inline void vmmt_setup_vcpu(vmm_vcpu *vcpu, enum vmm_cpu_mode mode,
                                   unsigned cpl) {
  struct vmm_mode_setup ms = {.mode = mode,
                              .cpl = cpl,
                              .tables = VMMT_TABLES,
                              .identity_size = 4ull << 30,
                              .kernel_stack = VMMT_KSTACK};
  assert_ok(vmm_vcpu_set_mode(vcpu, &ms));
}

static inline void vmmt_init(struct vmmt *t, enum vmm_cpu_mode mode,
                             unsigned cpl) {
  memset(t, 0, sizeof(*t));
  t->ram = VMMT_RAM;
  t->vm = vmmt_vm_create(1, 0);
  assert_ok(vmm_mem_slot_add(t->vm, 0, t->ram, NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(t->vm, 0, &t->vcpu));
  vmmt_setup_vcpu(t->vcpu, mode, cpl);
}

static inline void vmmt_fini(struct vmmt *t) {
  assert_ok(vmm_vm_destroy(t->vm));
  t->vm = NULL;
}

/* Set RIP and RSP (other registers keep their values). */
static inline void vmmt_set_ip_sp(vmm_vcpu *vcpu, uint64_t rip, uint64_t rsp) {
  struct vmm_regs r;
  assert_ok(vmm_vcpu_get_regs(vcpu, &r));
  r.rip = rip;
  r.rsp = rsp;
  assert_ok(vmm_vcpu_set_regs(vcpu, &r));
}

/* Copy code into guest memory at gpa and point RIP there. */
static inline void vmmt_load(struct vmmt *t, uint64_t gpa, const void *code,
                             size_t len) {
  assert_ok(vmm_mem_write(t->vm, gpa, code, len));
  vmmt_set_ip_sp(t->vcpu, gpa, VMMT_STACK);
}

/* Read an assembled snippet from $VMMT_BIN_DIR, by default the directory
   of the test program (where the build puts them); the caller frees it. */
static inline uint8_t *vmmt_read_bin(const char *name, size_t *len) {
  const char *dir = getenv("VMMT_BIN_DIR");
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
    fail_msg("cannot open snippet %s (is VMMT_BIN_DIR set?)", path);
  uint8_t *buf = malloc(1 << 20);
  assert_non_null(buf);
  *len = fread(buf, 1, 1 << 20, f);
  fclose(f);
  assert_true(*len > 0);
  return buf;
}

/* Load a snippet at gpa and point RIP at gpa + entry. */
static inline void vmmt_load_snippet(struct vmmt *t, const char *name,
                                     uint64_t gpa, uint64_t entry) {
  size_t len;
  uint8_t *bin = vmmt_read_bin(name, &len);
  assert_ok(vmm_mem_write(t->vm, gpa, bin, len));
  free(bin);
  vmmt_set_ip_sp(t->vcpu, gpa + entry, VMMT_STACK);
}

/* Run and require a given exit reason; returns the exit record. */
static inline struct vmm_exit *vmmt_run_expect(vmm_vcpu *vcpu,
                                               enum vmm_exit_reason want) {
  struct vmm_exit *e = NULL;
  assert_ok(vmm_vcpu_run(vcpu, &e));
  assert_non_null(e);
  if (e->reason != want) {
    struct vmm_regs r;
    memset(&r, 0, sizeof(r));
    vmm_vcpu_get_regs(vcpu, &r);
    fail_msg("exit reason %d, expected %d (rip 0x%llx, io port 0x%x, "
             "fault vector %u, internal code %u/%u)",
             (int)e->reason, (int)want, (unsigned long long)r.rip,
             e->reason == VMM_EXIT_IO ? e->io.port : 0,
             e->reason == VMM_EXIT_FAULT ? e->fault.vector : 0,
             e->reason == VMM_EXIT_INTERNAL_ERROR ? e->internal.code : 0,
             e->reason == VMM_EXIT_INTERNAL_ERROR ? e->internal.engine_code
                                                  : 0);
  }
  return e;
}

/* Run until a port write to `port` that no handler consumed. */
static inline struct vmm_exit *vmmt_run_to_port(vmm_vcpu *vcpu, uint16_t port) {
  struct vmm_exit *e = vmmt_run_expect(vcpu, VMM_EXIT_IO);
  if (e->io.port != port)
    fail_msg("I/O exit on port 0x%x, expected 0x%x", e->io.port, port);
  return e;
}

static inline uint64_t vmmt_reg(vmm_vcpu *vcpu, enum vmm_reg reg) {
  uint64_t v = 0;
  assert_ok(vmm_vcpu_reg_read(vcpu, reg, &v));
  return v;
}

/* Wait until another thread is inside vmm_vcpu_run() for vcpu (its state
   calls return EBUSY exactly then); fail after 10 s. A thread just created
   to run it may not have got there yet on a busy host. */
static inline void vmmt_wait_running(vmm_vcpu *vcpu) {
  struct vmm_regs r;
  for (int i = 0; i < 100000; i++) {
    if (vmm_vcpu_get_regs(vcpu, &r) == VMM_EBUSY)
      return;
    usleep(100);
  }
  fail_msg("the vCPU never started running");
}

/* xorshift64: the fixed-seed byte streams of the randomized harnesses. */
static inline uint8_t vmmt_rand8(uint64_t *state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *state = x;
  return (uint8_t)(x >> 24);
}

/* Run a cmocka group named after the engine under test. */
#define vmmt_run_group(tests)                                                  \
  cmocka_run_group_tests_name(vmm_engine_name(vmmt_engine), tests, NULL, NULL)

#endif
