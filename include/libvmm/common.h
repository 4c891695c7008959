/*
 * libvmm - common definitions: export macro, version, error codes, basic types.
 *
 * Every public function returns 0 on success or a negative error code. Codes
 * that correspond to a system error are the negated errno value; codes that
 * are specific to libvmm lie below VMM__ERRBASE. vmm_strerror() and
 * vmm_err_name() describe both kinds.
 */
#ifndef LIBVMM_COMMON_H
#define LIBVMM_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(LIBVMM_BUILDING) && defined(__GNUC__)
#define VMM_EXTERN __attribute__((visibility("default")))
#else
#define VMM_EXTERN
#endif

#define VMM_VERSION_MAJOR 0
#define VMM_VERSION_MINOR 1
#define VMM_VERSION_PATCH 0
#define VMM_VERSION_HEX                                                        \
  ((VMM_VERSION_MAJOR << 16) | (VMM_VERSION_MINOR << 8) | VMM_VERSION_PATCH)

/** Guest physical address. */
typedef uint64_t vmm_gpa_t;
/** Guest virtual (linear) address. */
typedef uint64_t vmm_gva_t;

/** Opaque handles. A VM owns its vCPUs, memory slots, handlers and devices. */
typedef struct vmm_vm vmm_vm;
typedef struct vmm_vcpu vmm_vcpu;

#define VMM__ERRBASE (-4000)

/*
 * The error list. XX(name, value, message). One list generates the enum,
 * vmm_strerror() and vmm_err_name().
 */
#define VMM_ERRNO_MAP(XX)                                                      \
  XX(EPERM, -EPERM, "operation not permitted")                                 \
  XX(ENOENT, -ENOENT, "no such object")                                        \
  XX(EINTR, -EINTR, "interrupted")                                             \
  XX(EIO, -EIO, "input/output error")                                          \
  XX(E2BIG, -E2BIG, "argument list or buffer too large")                       \
  XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                      \
  XX(ENOMEM, -ENOMEM, "out of memory")                                         \
  XX(EACCES, -EACCES, "permission denied")                                     \
  XX(EFAULT, -EFAULT, "bad address")                                           \
  XX(EBUSY, -EBUSY, "resource busy (a vCPU is running)")                       \
  XX(EEXIST, -EEXIST, "object already exists")                                 \
  XX(ENODEV, -ENODEV, "engine or device not available on this host")           \
  XX(EINVAL, -EINVAL, "invalid argument")                                      \
  XX(ENOSPC, -ENOSPC, "no space left")                                         \
  XX(ERANGE, -ERANGE, "value out of range")                                    \
  XX(ENOSYS, -ENOSYS, "function not implemented")                             \
  XX(ENOTSUP, -EOPNOTSUPP, "operation not supported by this engine")           \
  XX(ETIMEDOUT, -ETIMEDOUT, "timed out")                                       \
  XX(ECANCELED, -ECANCELED, "operation canceled")                              \
  XX(EOVERLAP, VMM__ERRBASE - 1, "range overlaps an existing one")             \
  XX(EALIGN, VMM__ERRBASE - 2, "address or size not page aligned")             \
  XX(ENOMAP, VMM__ERRBASE - 3, "guest physical address not backed by memory")  \
  XX(ENOCAP, VMM__ERRBASE - 4, "required KVM capability missing")              \
  XX(EPAGEFAULT, VMM__ERRBASE - 5, "guest page walk faulted")                  \
  XX(EBADIMAGE, VMM__ERRBASE - 6, "malformed guest image")                     \
  XX(ETRUNC, VMM__ERRBASE - 7, "guest image truncated")                        \
  XX(EREADONLY, VMM__ERRBASE - 8, "guest memory is read-only")                 \
  XX(EENGINE, VMM__ERRBASE - 9, "engine internal error")                       \
  XX(ECONFIG, VMM__ERRBASE - 10, "invalid configuration")                      \
  XX(ESTATE, VMM__ERRBASE - 11, "object in the wrong state for this call")

typedef enum vmm_errno {
#define VMM__ERR_ENUM(name, value, msg) VMM_##name = (value),
  VMM_ERRNO_MAP(VMM__ERR_ENUM)
#undef VMM__ERR_ENUM
} vmm_errno_t;

/**
 * Describe an error code. Accepts any libvmm code and any negated errno.
 * Returns a static string; never NULL. Thread-safe.
 */
VMM_EXTERN const char *vmm_strerror(int err);

/** Symbolic name of an error code ("VMM_EINVAL", "VMM_EOVERLAP", ...). */
VMM_EXTERN const char *vmm_err_name(int err);

/** Run-time version as VMM_VERSION_HEX, and as a "major.minor.patch" string. */
VMM_EXTERN unsigned vmm_version(void);
VMM_EXTERN const char *vmm_version_string(void);

/** Log levels used by the optional log callback in struct vmm_vm_config. */
enum vmm_log_level {
  VMM_LOG_ERROR = 0,
  VMM_LOG_WARN = 1,
  VMM_LOG_INFO = 2,
  VMM_LOG_DEBUG = 3,
};

/**
 * Log callback. The library never prints; diagnostics (why a capability
 * check failed, which guest structure was malformed) go here if set.
 * May be called from any thread that calls into the library.
 */
typedef void (*vmm_log_fn)(enum vmm_log_level level, const char *msg,
                           void *opaque);

#ifdef __cplusplus
}
#endif
#endif
