/*
 * Engine selection.
 */
#include <stdio.h>

#include "engine.h"

const struct vmm__engine_ops *vmm__engine_lookup(enum vmm_engine_kind kind) {
  switch (kind) {
  case VMM_ENGINE_KVM:
    return &vmm__kvm_ops;
  case VMM_ENGINE_BT:
#ifdef LIBVMM_HAVE_BT
    return &vmm__bt_ops;
#else
    return NULL;
#endif
  case VMM_ENGINE_AUTO:
    break;
  }
  return NULL;
}

const struct vmm__engine_ops *
vmm__engine_choose(const struct vmm_vm_config *cfg, char *why, size_t len) {
  if (cfg->engine != VMM_ENGINE_AUTO) {
    const struct vmm__engine_ops *ops = vmm__engine_lookup(cfg->engine);
    snprintf(why, len, "requested");
    return ops != NULL && ops->available(cfg) ? ops : NULL;
  }
  const struct vmm__engine_ops *kvm = vmm__engine_lookup(VMM_ENGINE_KVM);
  const struct vmm__engine_ops *bt = vmm__engine_lookup(VMM_ENGINE_BT);
  bool have_kvm = kvm != NULL && kvm->available(cfg);
  bool have_bt = bt != NULL && bt->available(cfg);
  if (have_kvm) {
    /* Measured even when KVM is the only choice: the reason then still
       tells the host whether guest kernel code will crawl. */
    uint64_t ns = 0;
    bool native = vmm__kvm_probe(cfg, &ns);
    if (!have_bt)
      snprintf(why, len,
               "auto: kvm, the only engine here (bt %s); it %s guest kernel "
               "code (probe loop: %llu ns per iteration)",
               bt == NULL ? "not built" : "cannot run on this host",
               native ? "runs" : "emulates", (unsigned long long)ns);
    else
      snprintf(why, len,
               "auto: kvm %s guest kernel code (probe loop: %llu ns per "
               "iteration), so %s",
               native ? "runs" : "emulates", (unsigned long long)ns,
               native ? "kvm" : "bt");
    return native || !have_bt ? kvm : bt;
  }
  if (have_bt) {
    snprintf(why, len, "auto: bt, kvm is not available here");
    return bt;
  }
  return NULL;
}
