/*
 * Does KVM on this host run guest kernel code natively? Measured, not
 * assumed: a CPL0 `dec/jnz` loop is timed at two lengths and the cost per
 * iteration is the slope, so fixed costs (VM entry, the first run's page
 * faults) cancel out. With hardware virtualization an iteration takes about
 * a nanosecond; under a software nested hypervisor that emulates kernel-mode
 * code (PVM) it takes hundreds. The threshold sits at 20 ns, a wide margin
 * both ways.
 */
#include <string.h>
#include <time.h>

#include "../../internal.h"

#define PROBE_SHORT 200
#define PROBE_LONG 2200
#define PROBE_NATIVE_LIMIT_NS 20 /* per iteration */

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

bool vmm__kvm_runs_kernel_natively(const struct vmm_vm_config *cfg) {
  return vmm__kvm_probe(cfg, NULL);
}

/* Time one run of the loop with n iterations; 0 on failure. */
static uint64_t time_loop(vmm_vcpu *vcpu, uint64_t at, uint32_t n,
                          const struct vmm_vm_config *parent) {
  struct vmm_regs r;
  memset(&r, 0, sizeof(r));
  r.rip = at;
  r.rcx = n;
  r.rflags = 2;
  struct vmm_exit *e;
  if (vmm_vcpu_set_regs(vcpu, &r) < 0)
    return 0;
  uint64_t t0 = now_ns();
  int rc = vmm_vcpu_run(vcpu, &e);
  uint64_t dt = now_ns() - t0;
  if (rc < 0 || e->reason != VMM_EXIT_HLT) {
    vmm__logv_cfg(parent, VMM_LOG_WARN,
                  "kvm: the CPL0 probe loop did not reach its hlt (%s, "
                  "exit %d): taking kernel code as emulated",
                  vmm_err_name(rc), rc < 0 ? -1 : (int)e->reason);
    return 0;
  }
  return dt > 0 ? dt : 1;
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

  /* 1: dec ecx; jnz 1b; hlt (ecx set per run) */
  const uint8_t code[] = {0x49, 0x75, 0xfd, 0xf4};
  /* The code goes above the mode tables (GDT, TSS and its I/O bitmap). */
  struct vmm_mode_setup ms = {.mode = VMM_MODE_PROT32, .tables = 0x1000};
  const uint64_t at = 0x1000 + vmm_mode_tables_size(&ms);
  if (at + sizeof(code) > 0x8000 || vmm_vcpu_set_mode(vcpu, &ms) < 0 ||
      vmm_mem_write(vm, at, code, sizeof(code)) < 0)
    goto out;

  /* Best of up to three pairs; a clearly emulated first pair settles it. */
  uint64_t best_short = UINT64_MAX, best_long = UINT64_MAX, per_iter = 0;
  for (int attempt = 0; attempt < 3; attempt++) {
    uint64_t s = time_loop(vcpu, at, PROBE_SHORT, parent);
    uint64_t l = s ? time_loop(vcpu, at, PROBE_LONG, parent) : 0;
    if (s == 0 || l == 0)
      goto out;
    best_short = s < best_short ? s : best_short;
    best_long = l < best_long ? l : best_long;
    per_iter = best_long > best_short
                   ? (best_long - best_short) / (PROBE_LONG - PROBE_SHORT)
                   : 0;
    if (per_iter > 10 * PROBE_NATIVE_LIMIT_NS)
      break;
  }
  native = per_iter <= PROBE_NATIVE_LIMIT_NS;
  if (probe_ns != NULL)
    *probe_ns = per_iter;
  vmm__logv_cfg(parent, VMM_LOG_INFO,
                "kvm: CPL0 probe loop costs %llu ns per iteration: kernel "
                "code runs %s",
                (unsigned long long)per_iter, native ? "natively" : "emulated");
out:
  vmm_vm_destroy(vm);
  return native;
}
