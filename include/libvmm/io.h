/*
 * libvmm - port I/O and MMIO handlers.
 *
 * A handler claims a range of one address space. Guest accesses to it are
 * dispatched by the library on the thread running the vCPU, without
 * returning from vmm_vcpu_run(). Ranges of one space never overlap.
 * Handlers are ordinary C functions of that thread: they get its own FPU
 * state (its x87 control word and MXCSR controls, an empty x87 stack), may
 * use x87, SSE and long double freely, and neither see nor change the
 * guest's FPU state (vmm_vcpu_get_fpu() reads it). The library never
 * reads or writes the thread's FS or GS base. On the BT engine handlers
 * run on a stack of the vCPU's own, 8 MiB like a thread's default, not
 * the thread's: code that checks its stack pointer against the thread's
 * stack bounds (some language runtimes' callbacks) sees it outside them.
 * A debugger may stop in them as anywhere else. A handler returns
 * normally: leaving it by longjmp() or a C++ exception skips the
 * library's own bookkeeping and leaves the vCPU unusable (every call on it
 * and vmm_vm_destroy() then fail with VMM_EBUSY), on either engine.
 */
#ifndef LIBVMM_IO_H
#define LIBVMM_IO_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum vmm_io_space {
  VMM_IO_PORT = 0, /* 16-bit port space, addresses 0..0xffff */
  VMM_IO_MMIO = 1, /* guest-physical addresses not backed by RAM */
};

/** Return value of a handler that does not want this access. */
#define VMM_IO_DECLINED 1

/**
 * I/O handler.
 *
 * @param vcpu      the vCPU performing the access.
 * @param addr      port number or guest-physical address accessed.
 * @param data      len bytes: the value written, or where to store the
 *                  value read (little endian). Reads start zeroed.
 * @param len       access size in bytes (1, 2, 4 or 8).
 * @param is_write  true for a guest write.
 * @param opaque    the pointer given at registration.
 * @return 0 when handled; VMM_IO_DECLINED to pass the access on as an exit
 *         (to the exit handler or the caller); a negative code to make
 *         vmm_vcpu_run() return that code. String port I/O is dispatched
 *         one element at a time; if an element is declined, the exit
 *         carries that element and the ones after it (io.data, io.count).
 */
typedef int (*vmm_io_handler_fn)(vmm_vcpu *vcpu, uint64_t addr, void *data,
                                 uint32_t len, bool is_write, void *opaque);

/**
 * Register a handler for [base, base + len) in space.
 * @return 0; -VMM_EINVAL for len 0, a range that overflows or (ports) leaves
 *         0..0xffff, an unknown space or a NULL fn; -VMM_EOVERLAP if the
 *         range overlaps a registered one; -VMM_ENOMEM; -VMM_ESTATE when
 *         called from a handler of the same VM.
 * Thread-safe; may be called while vCPUs run, and from handlers of other
 * VMs. Returns once every vCPU sees the new range (docs/io.md).
 */
VMM_EXTERN int vmm_io_register(vmm_vm *vm, enum vmm_io_space space,
                               uint64_t base, uint64_t len,
                               vmm_io_handler_fn fn, void *opaque);

/**
 * Remove the handler registered at exactly base in space. Once it returns
 * the handler is not running and is never called again, so its opaque may
 * be freed; it waits for a handler call in progress.
 * @return 0, -VMM_ENOENT, or -VMM_ESTATE when called from a handler of the
 *         same VM. Thread-safe.
 */
VMM_EXTERN int vmm_io_unregister(vmm_vm *vm, enum vmm_io_space space,
                                 uint64_t base);

#ifdef __cplusplus
}
#endif
#endif
