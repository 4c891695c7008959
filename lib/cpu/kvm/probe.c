/*
 * Does KVM on this host run guest kernel code natively? Measured, not
 * assumed: a short CPL0 loop is timed. With hardware virtualization it
 * takes microseconds; under a software nested hypervisor that emulates
 * kernel-mode code (as on PVM) it takes milliseconds.
 */
#include <string.h>
#include <time.h>

#include "../../internal.h"

#define PROBE_ITERATIONS 2000
/* Native: ~2 us plus entry costs. Emulated at ~1 us/insn: ~4 ms. */
#define PROBE_NATIVE_LIMIT_NS 1000000ull

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

bool vmm__kvm_runs_kernel_natively(const struct vmm_vm_config *cfg) {
  return vmm__kvm_probe(cfg, NULL);
}

bool vmm__kvm_probe(const struct vmm_vm_config *parent, uint64_t *probe_ns) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;
  cfg.kvm_device = parent->kvm_device;
  cfg.log_fn = parent->log_fn;
  cfg.log_opaque = parent->log_opaque;
  cfg.log_level = parent->log_level;

  vmm_vm *vm = NULL;
  vmm_vcpu *vcpu = NULL;
  bool native = false;
  if (probe_ns != NULL)
    *probe_ns = 0;
  if (vmm_vm_create(&cfg, &vm) < 0)
    return false;
  if (vmm_mem_slot_add(vm, 0, 0x8000, NULL, 0, NULL) < 0 ||
      vmm_vcpu_create(vm, 0, &vcpu) < 0)
    goto out;

  /* mov ecx, N; 1: dec ecx; jnz 1b; hlt */
  const uint8_t code[] = {0xb9, PROBE_ITERATIONS & 0xff,
                          PROBE_ITERATIONS >> 8, 0, 0, 0x49, 0x75, 0xfd, 0xf4};
  /* The code goes above the mode tables (GDT, TSS and its I/O bitmap). */
  struct vmm_mode_setup ms = {.mode = VMM_MODE_PROT32, .tables = 0x1000};
  const uint64_t at = 0x1000 + vmm_mode_tables_size(&ms);
  if (at + sizeof(code) > 0x8000 || vmm_vcpu_set_mode(vcpu, &ms) < 0 ||
      vmm_mem_write(vm, at, code, sizeof(code)) < 0)
    goto out;

  uint64_t best = UINT64_MAX;
  for (int attempt = 0; attempt < 3 && best > PROBE_NATIVE_LIMIT_NS;
       attempt++) {
    struct vmm_regs r;
    memset(&r, 0, sizeof(r));
    r.rip = at;
    r.rflags = 2;
    struct vmm_exit *e;
    if (vmm_vcpu_set_regs(vcpu, &r) < 0)
      goto out;
    uint64_t t0 = now_ns();
    int rc = vmm_vcpu_run(vcpu, &e);
    if (rc < 0 || e->reason != VMM_EXIT_HLT) {
      vmm__logv_cfg(parent, VMM_LOG_WARN,
                    "kvm: the CPL0 probe loop did not reach its hlt (%s, "
                    "exit %d): taking kernel code as emulated",
                    vmm_err_name(rc), rc < 0 ? -1 : (int)e->reason);
      goto out;
    }
    uint64_t dt = now_ns() - t0;
    if (dt < best)
      best = dt;
  }
  native = best <= PROBE_NATIVE_LIMIT_NS;
  if (probe_ns != NULL)
    *probe_ns = best;
  vmm__logv_cfg(parent, VMM_LOG_INFO,
                "kvm: CPL0 probe loop took %llu ns: kernel code runs %s",
                (unsigned long long)best, native ? "natively" : "emulated");
out:
  vmm_vm_destroy(vm);
  return native;
}
