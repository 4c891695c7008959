/*
 * libFuzzer target: vmmrun's JSON config parser (tools/vmmrun/options.c).
 * A config file is untrusted input: whatever the bytes, parsing must not
 * crash or leak, and whatever it accepts must be within the documented
 * ranges (checked here, so the fuzzer finds violations as crashes).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/vmmrun/vmmrun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct vmmrun_opts o;
  vmmrun_opts_init(&o);
  char err[512];
  err[0] = 0;
  if (vmmrun_config_apply(&o, (const char *)data, size, "/base", err,
                          sizeof(err)) == 0) {
    if (o.memory < VMMRUN_MIN_MEMORY || o.memory > VMMRUN_MAX_MEMORY ||
        (o.memory & 0xfff))
      abort();
    if (o.cpus < 1 || o.cpus > VMM_MAX_VCPUS)
      abort();
    if (!isfinite(o.timeout) || o.timeout < 0 || o.timeout > 30 * 86400.0)
      abort();
    if (o.verbose < -1 || o.verbose > 2)
      abort();
    if (o.engine != VMM_ENGINE_AUTO && o.engine != VMM_ENGINE_KVM &&
        o.engine != VMM_ENGINE_BT)
      abort();
    if ((o.serial == VMMRUN_SERIAL_FILE || o.serial == VMMRUN_SERIAL_UNIX) &&
        (o.serial_path == NULL || o.serial_path[0] == 0))
      abort();
    /* Relative paths were resolved against the config's directory. */
    if (o.kernel != NULL && o.kernel[0] != '/')
      abort();
    vmmrun_opts_check(&o, err, sizeof(err));
  } else if (err[0] == 0 || strncmp(err, "config: ", 8) != 0) {
    abort(); /* every rejection says where */
  }
  vmmrun_opts_free(&o);
  return 0;
}
