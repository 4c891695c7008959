/*
 * isa-debug-exit compatible exit port. See include/libvmm/exit_port.h.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

struct exit_port {
  vmm_vm *vm;
  struct vmm_exit_port_config cfg;
  atomic_uint_fast64_t writes, ignored;
};

void vmm_exit_port_config_init(struct vmm_exit_port_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "exit-port";
  cfg->port = 0xf4;
  cfg->iosize = 4;
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct exit_port *x = opaque;
  (void)vcpu;
  if (!is_write)
    return 0; /* reads as 0 (data starts zeroed) */
  if (port != x->cfg.port || len > 4) {
    atomic_fetch_add(&x->ignored, 1);
    return 0;
  }
  uint32_t v = 0;
  memcpy(&v, data, len);
  atomic_fetch_add(&x->writes, 1);
  /* The first event wins; a second write while one is pending is moot. */
  vmm_vm_system_event(x->vm, VMM_SYSTEM_EXIT_PORT, (int32_t)((v << 1) | 1u));
  return 0;
}

static int realize(vmm_dev *dev, void *opaque) {
  struct exit_port *x = opaque;
  return vmm_dev_io_register(dev, VMM_IO_PORT, x->cfg.port, x->cfg.iosize,
                             on_io, x);
}

static void destroy(vmm_dev *dev, void *opaque) {
  (void)dev;
  free(opaque);
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct exit_port *x = opaque;
  (void)dev;
  *out = json_pack("{s:I, s:I}", "writes", (json_int_t)atomic_load(&x->writes),
                   "ignored", (json_int_t)atomic_load(&x->ignored));
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops exit_port_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "exit-port",
    .realize = realize,
    .destroy = destroy,
    .stats = stats,
};

int vmm_exit_port_create(vmm_vm *vm, const struct vmm_exit_port_config *user,
                         vmm_dev **out) {
  struct vmm_exit_port_config cfg;
  vmm_exit_port_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0 ||
      (cfg.iosize != 1 && cfg.iosize != 2 && cfg.iosize != 4) ||
      (uint32_t)cfg.port + cfg.iosize > 0x10000)
    return VMM_EINVAL;
  struct exit_port *x = calloc(1, sizeof(*x));
  if (x == NULL)
    return VMM_ENOMEM;
  const char *name = cfg.name != NULL ? cfg.name : "exit-port";
  x->cfg = cfg;
  x->cfg.name = NULL; /* not kept: the device holds its name */
  x->vm = vm;
  atomic_init(&x->writes, 0);
  atomic_init(&x->ignored, 0);
  return vmm_dev_attach(vm, name, &exit_port_ops, x, out);
}
