/*
 * Error strings and version, generated from the list in common.h.
 */
#include <string.h>

#include "../internal.h"

const char *vmm_strerror(int err) {
  switch (err) {
#define VMM__ERR_MSG(name, value, msg)                                         \
  case value:                                                                  \
    return msg;
    VMM_ERRNO_MAP(VMM__ERR_MSG)
#undef VMM__ERR_MSG
  case 0:
    return "success";
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    /* strerrordesc_np returns static strings and is thread-safe. */
    const char *s = strerrordesc_np(-err);
    if (s != NULL)
      return s;
  }
  return "unknown error";
}

const char *vmm_err_name(int err) {
  switch (err) {
#define VMM__ERR_NAME(name, value, msg)                                        \
  case value:                                                                  \
    return "VMM_" #name;
    VMM_ERRNO_MAP(VMM__ERR_NAME)
#undef VMM__ERR_NAME
  case 0:
    return "OK";
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *s = strerrorname_np(-err);
    if (s != NULL)
      return s;
  }
  return "VMM_EUNKNOWN";
}

unsigned vmm_version(void) { return VMM_VERSION_HEX; }

#define VMM__STR2(x) #x
#define VMM__STR(x) VMM__STR2(x)
const char *vmm_version_string(void) {
  return VMM__STR(VMM_VERSION_MAJOR) "." VMM__STR(
      VMM_VERSION_MINOR) "." VMM__STR(VMM_VERSION_PATCH);
}
