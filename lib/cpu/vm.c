/*
 * VM front end: configuration, engine selection, lifetime.
 */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "engine.h"

void vmm_vm_config_init(struct vmm_vm_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->engine = VMM_ENGINE_AUTO;
  cfg->max_vcpus = 1;
  cfg->kick_signal = VMM_KICK_SIGNAL_DEFAULT;
  cfg->kvm_device = "/dev/kvm";
  cfg->log_level = VMM_LOG_WARN;
}

const char *vmm_engine_name(enum vmm_engine_kind kind) {
  switch (kind) {
  case VMM_ENGINE_AUTO:
    return "auto";
  case VMM_ENGINE_KVM:
    return "kvm";
  case VMM_ENGINE_BT:
    return "bt";
  }
  return "unknown";
}

static int check_config(const struct vmm_vm_config *cfg) {
  if (cfg->max_vcpus == 0 || cfg->max_vcpus > VMM_MAX_VCPUS) {
    vmm__logv_cfg(cfg, VMM_LOG_ERROR, "max_vcpus must be 1..%d, got %u",
                  VMM_MAX_VCPUS, cfg->max_vcpus);
    return VMM_EINVAL;
  }
  if (cfg->flags &
      ~(uint32_t)(VMM_VM_IRQCHIP | VMM_VM_PIT | VMM_VM_IRQCHIP_USER)) {
    vmm__logv_cfg(cfg, VMM_LOG_ERROR, "unknown flags 0x%x", cfg->flags);
    return VMM_EINVAL;
  }
  if ((cfg->flags & VMM_VM_PIT) &&
      !(cfg->flags & (VMM_VM_IRQCHIP | VMM_VM_IRQCHIP_USER))) {
    vmm__logv_cfg(cfg, VMM_LOG_ERROR, "VMM_VM_PIT requires VMM_VM_IRQCHIP");
    return VMM_EINVAL;
  }
  if (cfg->engine != VMM_ENGINE_AUTO && cfg->engine != VMM_ENGINE_KVM &&
      cfg->engine != VMM_ENGINE_BT)
    return VMM_EINVAL;
  if (cfg->log_level > VMM_LOG_DEBUG)
    return VMM_EINVAL;
  if (cfg->kick_signal < VMM_KICK_SIGNAL_NONE || cfg->kick_signal > 64)
    return VMM_EINVAL;
  return 0;
}

bool vmm_engine_available(enum vmm_engine_kind kind) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  if (kind == VMM_ENGINE_AUTO)
    return vmm_engine_available(VMM_ENGINE_KVM) ||
           vmm_engine_available(VMM_ENGINE_BT);
  const struct vmm__engine_ops *ops = vmm__engine_lookup(kind);
  return ops != NULL && ops->available(&cfg);
}

/*
 * The user-space platform: the hub, then its stock devices with their
 * defaults (a host may detach one and attach its own configuration).
 */
static int platform_init(vmm_vm *vm) {
  if (vm->ops->tsc_khz != NULL && vm->ops->guest_tsc != NULL)
    vm->tsc_khz = vm->ops->tsc_khz(vm);
  int err = vmm__irqchip_create(vm, &vm->irqchip);
  if (err < 0)
    return err;
  struct vmm_pic_config pic;
  struct vmm_ioapic_config io;
  struct vmm_lapic_config la;
  vmm_pic_config_init(&pic);
  vmm_ioapic_config_init(&io);
  vmm_lapic_config_init(&la);
  if ((err = vmm_pic_create(vm, &pic, NULL)) < 0 ||
      (err = vmm_ioapic_create(vm, &io, NULL)) < 0 ||
      (err = vmm_lapic_create(vm, &la, NULL)) < 0)
    return err;
  if (vm->cfg.flags & VMM_VM_PIT) {
    struct vmm_pit_config pit;
    vmm_pit_config_init(&pit);
    if ((err = vmm_pit_create(vm, &pit, NULL)) < 0)
      return err;
  }
  return 0;
}

int vmm_vm_create(const struct vmm_vm_config *user_cfg, vmm_vm **out) {
  if (user_cfg == NULL || out == NULL)
    return VMM_EINVAL;
  if (user_cfg->size == 0 || user_cfg->size > sizeof(struct vmm_vm_config))
    return VMM_EINVAL;

  /* A caller built against an older, smaller config gets defaults for the
     fields it does not know. */
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  memcpy(&cfg, user_cfg, user_cfg->size);
  cfg.size = sizeof(cfg);
  if (cfg.kvm_device == NULL)
    cfg.kvm_device = "/dev/kvm";

  int err = check_config(&cfg);
  if (err < 0)
    return err;

  char why[VMM__ENGINE_REASON_MAX];
  const struct vmm__engine_ops *ops =
      vmm__engine_choose(&cfg, why, sizeof(why));
  if (ops == NULL) {
    vmm__logv_cfg(&cfg, VMM_LOG_ERROR, "engine %s is not available here",
                  vmm_engine_name(cfg.engine));
    return VMM_ENODEV;
  }
  enum vmm__irqchip_kind irqchip = VMM__IRQCHIP_NONE;
  if (cfg.flags & VMM_VM_IRQCHIP_USER) {
    cfg.flags |= VMM_VM_IRQCHIP;
    irqchip = VMM__IRQCHIP_USER;
  } else if (cfg.flags & VMM_VM_IRQCHIP) {
    irqchip = ops->has_irqchip ? VMM__IRQCHIP_ENGINE : VMM__IRQCHIP_USER;
  }
  if (irqchip == VMM__IRQCHIP_USER && cfg.max_vcpus > 255) {
    vmm__logv_cfg(&cfg, VMM_LOG_ERROR,
                  "the user-space interrupt platform addresses at most 255 "
                  "vCPUs (xAPIC IDs), max_vcpus is %u",
                  cfg.max_vcpus);
    return VMM_EINVAL;
  }

  vmm_vm *vm = calloc(1, sizeof(*vm));
  if (vm == NULL)
    return VMM_ENOMEM;
  vm->cfg = cfg;
  vm->cfg.kvm_device = strdup(cfg.kvm_device);
  vm->ops = ops;
  memcpy(vm->engine_reason, why, sizeof(why));
  vm->stats_ns0 = vmm__now_ns();
  vm->stats_tsc0 = vmm__tsc();
  vm->irqchip_kind = irqchip;
  vm->vcpus = calloc(cfg.max_vcpus, sizeof(vm->vcpus[0]));
  atomic_init(&vm->running, 0);
  atomic_init(&vm->system_event, 0);
  if (vm->cfg.kvm_device == NULL || vm->vcpus == NULL) {
    err = VMM_ENOMEM;
    goto fail_alloc;
  }
  if ((err = vmm__mem_init(&vm->mem)) < 0)
    goto fail_alloc;
  if ((err = vmm__iobus_init(&vm->pio, 0x10000, cfg.max_vcpus)) < 0)
    goto fail_mem;
  if ((err = vmm__iobus_init(&vm->mmio, VMM__GPA_LIMIT, cfg.max_vcpus)) < 0)
    goto fail_pio;
  if ((err = -pthread_mutex_init(&vm->lock, NULL)) < 0)
    goto fail_mmio;
  if ((err = vmm__devs_init(&vm->devs)) < 0)
    goto fail_lock;
  if ((err = vmm__clock_create(vm, &vm->clock)) < 0)
    goto fail_devs;
  if ((err = ops->vm_init(vm)) < 0)
    goto fail_clock;
  if (irqchip == VMM__IRQCHIP_USER && (err = platform_init(vm)) < 0)
    goto fail_engine;
  *out = vm;
  return 0;

fail_engine:
  vmm__devs_fini(vm);
  vmm__irqchip_destroy(vm->irqchip);
  ops->vm_fini(vm);
  vmm__clock_destroy(vm->clock);
  goto fail_lock;
fail_clock:
  vmm__clock_destroy(vm->clock);
fail_devs:
  vmm__devs_fini(vm);
fail_lock:
  pthread_mutex_destroy(&vm->lock);
fail_mmio:
  vmm__iobus_fini(&vm->mmio);
fail_pio:
  vmm__iobus_fini(&vm->pio);
fail_mem:
  vmm__mem_fini(&vm->mem);
fail_alloc:
  free((char *)vm->cfg.kvm_device);
  free(vm->vcpus);
  free(vm);
  return err;
}

int vmm_vm_destroy(vmm_vm *vm) {
  if (vm == NULL)
    return 0;
  /* Threads the library manages are stopped and joined here; a thread the
     caller owns must have left vmm_vcpu_run() (-VMM_EBUSY otherwise). */
  int err = vmm__vthreads_stop(vm);
  if (err < 0)
    return err;
  if (atomic_load(&vm->running) != 0)
    return VMM_EBUSY;
  /* Devices go first: their teardown may still need the VM's loop. */
  vmm__devs_fini(vm);
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++)
    vmm__vcpu_free(vm->vcpus[i]);
  vmm__vm_loop_fini(vm);
  vm->ops->vm_fini(vm);
  /* After the devices: their timers and hub registrations are gone. */
  vmm__irqchip_destroy(vm->irqchip);
  vmm__clock_destroy(vm->clock);
  vmm__mem_fini(&vm->mem);
  vmm__iobus_fini(&vm->mmio);
  vmm__iobus_fini(&vm->pio);
  pthread_mutex_destroy(&vm->lock);
  free((char *)vm->cfg.kvm_device);
  free(vm->vcpus);
  free(vm);
  return 0;
}

enum vmm_engine_kind vmm_vm_engine(const vmm_vm *vm) {
  return vm != NULL ? vm->ops->kind : VMM_ENGINE_AUTO;
}

const char *vmm_vm_engine_reason(const vmm_vm *vm) {
  return vm != NULL ? vm->engine_reason : "";
}

int vmm_vm_stop(vmm_vm *vm) {
  if (vm == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&vm->lock);
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++)
    if (vm->vcpus[i] != NULL)
      vmm_vcpu_kick(vm->vcpus[i]);
  pthread_mutex_unlock(&vm->lock);
  return 0;
}

int vmm_vm_system_event(vmm_vm *vm, uint32_t event, int32_t status) {
  if (vm == NULL || event < VMM_SYSTEM_POWEROFF || event > VMM_SYSTEM_EXIT_PORT)
    return VMM_EINVAL;
  uint_fast64_t expected = 0;
  uint_fast64_t v = (uint_fast64_t)event << 32 | (uint32_t)status;
  if (!atomic_compare_exchange_strong(&vm->system_event, &expected, v))
    return VMM_EBUSY;
  return vmm_vm_stop(vm);
}

int vmm_vm_system_event_clear(vmm_vm *vm) {
  if (vm == NULL)
    return VMM_EINVAL;
  atomic_store(&vm->system_event, 0);
  return 0;
}

int vmm_vm_irq_line(vmm_vm *vm, uint32_t gsi, bool level) {
  if (vm == NULL)
    return VMM_EINVAL;
  if (vm->irqchip_kind == VMM__IRQCHIP_NONE)
    return VMM_ENOTSUP;
  return vmm__irq_host_set(vm, gsi, level);
}

int vmm_vm_set_exit_handler(vmm_vm *vm, vmm_exit_handler_fn fn, void *opaque) {
  if (vm == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&vm->lock);
  vm->exit_fn = fn;
  vm->exit_opaque = opaque;
  pthread_mutex_unlock(&vm->lock);
  return 0;
}

int vmm_vm_get_supported_cpuid(vmm_vm *vm, struct vmm_cpuid_entry *entries,
                               size_t *n) {
  if (vm == NULL || n == NULL || (entries == NULL && *n != 0))
    return VMM_EINVAL;
  struct vmm_cpuid_entry all[VMM_CPUID_MAX_ENTRIES];
  size_t count = VMM__ARRAY_SIZE(all);
  int err = vm->ops->supported_cpuid(vm, all, &count);
  if (err < 0)
    return err;
  size_t copy = count < *n ? count : *n;
  if (copy > 0)
    memcpy(entries, all, copy * sizeof(all[0]));
  err = count > *n ? VMM_E2BIG : 0;
  *n = count;
  return err;
}
