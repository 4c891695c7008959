/*
 * Diagnostics go to the host's log callback, never to stdout/stderr.
 */
#include <stdarg.h>
#include <stdio.h>

#include "../internal.h"

static void logv(const struct vmm_vm_config *cfg, enum vmm_log_level level,
                 const char *fmt, va_list ap) {
  char buf[512];

  if (cfg == NULL || cfg->log_fn == NULL || level > cfg->log_level)
    return;
  vsnprintf(buf, sizeof(buf), fmt, ap);
  cfg->log_fn(level, buf, cfg->log_opaque);
}

void vmm__log(const vmm_vm *vm, enum vmm_log_level level, const char *fmt,
              ...) {
  va_list ap;

  va_start(ap, fmt);
  logv(vm != NULL ? &vm->cfg : NULL, level, fmt, ap);
  va_end(ap);
}

void vmm__logv_cfg(const struct vmm_vm_config *cfg, enum vmm_log_level level,
                   const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  logv(cfg, level, fmt, ap);
  va_end(ap);
}
