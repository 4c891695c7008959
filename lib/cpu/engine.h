/*
 * Engine selection (lib/cpu/engine.c).
 */
#ifndef LIBVMM_CPU_ENGINE_H
#define LIBVMM_CPU_ENGINE_H

#include "../internal.h"

/* The ops table of an engine kind compiled into the library, or NULL. */
const struct vmm__engine_ops *vmm__engine_lookup(enum vmm_engine_kind kind);

/*
 * The engine a configuration gets: the requested one if it is available;
 * for VMM_ENGINE_AUTO, KVM when it runs guest kernel code natively and BT
 * otherwise (see docs/engines.md). NULL if none is available. why (len
 * bytes) receives the reason, for vmm_vm_engine_reason().
 */
const struct vmm__engine_ops *
vmm__engine_choose(const struct vmm_vm_config *cfg, char *why, size_t len);

/* Free a vCPU (vcpu.c); NULL accepted. */
void vmm__vcpu_free(vmm_vcpu *vcpu);

#endif
