/*
 * libvmm - the event loop and library-managed vCPU threads.
 *
 * A vmm_loop wraps a libuv loop (uv_loop_t). Device backends (terminal and
 * socket input, socket output), device timers (the RTC's interrupts) and
 * the completions of vCPUs run on library threads are served there. The
 * uv loop is either
 *   - created by the library and run on a thread of its own
 *     (VMM_LOOP_THREAD): the simplest choice; every loop callback then runs
 *     on that thread;
 *   - created by the library and run by the host with vmm_loop_run();
 *   - the host's own uv_loop_t, run by the host with uv_run() among its
 *     other work; many VMs can share it, and no VM ever blocks it.
 *
 * A VM uses one loop: set it with vmm_vm_set_loop() before attaching
 * devices that need one, or let the VM create a private threaded loop the
 * first time one is needed (vmm_vm_get_loop()); that one is destroyed with
 * the VM.
 *
 * Threading rules.
 *   - libuv is not thread-safe. For a loop the host runs (no
 *     VMM_LOOP_THREAD), the calls marked "loop thread" below, and
 *     vmm_dev_attach()/vmm_dev_detach() of devices that use the loop, and
 *     vmm_vm_destroy() of a VM using it, must be made on the thread running
 *     the loop (from a loop callback, or before/after uv_run()), never
 *     concurrently with it. For a threaded loop the library moves that work
 *     to the loop's thread itself, so any thread may call.
 *   - Completion callbacks run on the loop thread. They may call anything,
 *     including vmm_vcpu_start() again and vmm_vm_destroy() of their VM.
 *   - vmm_loop_call() and vmm_loop_stop() are thread-safe.
 */
#ifndef LIBVMM_LOOP_H
#define LIBVMM_LOOP_H

#include "common.h"
#include "vcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s; /* uv_loop_t, from <uv.h> */

typedef struct vmm_loop vmm_loop;

/** Flags for struct vmm_loop_config. */
enum vmm_loop_flags {
  /** Run the loop on a thread the library creates and joins. Not
      compatible with a host-supplied uv loop. */
  VMM_LOOP_THREAD = 1u << 0,
};

/** Loop configuration; fill with vmm_loop_config_init(). */
struct vmm_loop_config {
  /** Set by vmm_loop_config_init(); do not change. */
  size_t size;
  /** The host's uv loop, or NULL to let the library create one. The host
      keeps ownership and must outlive the vmm_loop. */
  struct uv_loop_s *uv;
  /** enum vmm_loop_flags. Default 0. */
  uint32_t flags;
};

VMM_EXTERN void vmm_loop_config_init(struct vmm_loop_config *cfg);

/**
 * Create a loop.
 * @return 0; -VMM_EINVAL for a bad config (VMM_LOOP_THREAD with a host uv
 *         loop, unknown flags); system errors.
 * For a host uv loop: call on the thread that runs it, or while it does not.
 */
VMM_EXTERN int vmm_loop_create(const struct vmm_loop_config *cfg,
                               vmm_loop **out);

/**
 * Destroy a loop. NULL is accepted.
 *   - threaded: stops and joins its thread (when called on that thread, from
 *     a loop callback, the thread finishes the callback and exits by itself);
 *   - library uv loop run by the host: closes it; not from inside
 *     vmm_loop_run() (-VMM_EBUSY);
 *   - host uv loop: the library's handle on it is closed; its memory is
 *     released by the host's next run of its loop (as with any uv_close()).
 * @return 0; -VMM_EBUSY while a VM uses the loop.
 */
VMM_EXTERN int vmm_loop_destroy(vmm_loop *loop);

/** The underlying uv loop, for the host's own handles (loop thread rules
    apply to them). */
VMM_EXTERN struct uv_loop_s *vmm_loop_uv(vmm_loop *loop);

enum vmm_loop_run_mode {
  /** Until no VM work is pending (every started vCPU has completed and its
      callback returned) and no other referenced handle is active, or until
      vmm_loop_stop(). Backend handles do not keep the loop alive. */
  VMM_LOOP_RUN_DEFAULT = 0,
  /** Wait for and process one batch of events. */
  VMM_LOOP_RUN_ONCE = 1,
  /** Process what is ready without waiting. */
  VMM_LOOP_RUN_NOWAIT = 2,
};

/**
 * Run a loop that has no thread of its own (uv_run()).
 * @return 0 when nothing keeps the loop alive any more, 1 if work remains
 *         (ONCE, NOWAIT, or after vmm_loop_stop()); -VMM_ESTATE for a
 *         threaded loop or a nested call.
 */
VMM_EXTERN int vmm_loop_run(vmm_loop *loop, enum vmm_loop_run_mode mode);

/** Make vmm_loop_run() return soon. Thread-safe. -VMM_ESTATE if threaded. */
VMM_EXTERN int vmm_loop_stop(vmm_loop *loop);

typedef void (*vmm_loop_fn)(vmm_loop *loop, void *opaque);

/**
 * Run fn(loop, opaque) on the loop thread and wait for it: through the
 * loop's thread for a threaded loop (directly when already on it), directly
 * on the calling thread otherwise (the loop thread rules then make that the
 * loop thread). For host code that needs uv calls on a threaded loop.
 * fn must not wait for vCPUs or for locks a loop callback may hold.
 * @return 0 or -VMM_EINVAL.
 */
VMM_EXTERN int vmm_loop_call(vmm_loop *loop, vmm_loop_fn fn, void *opaque);

/**
 * Make loop the VM's loop. Must precede anything that makes the VM use a
 * loop (devices with loop backends, vmm_vcpu_start()).
 * @return 0; -VMM_ESTATE if the VM already has a loop; -VMM_EINVAL.
 */
VMM_EXTERN int vmm_vm_set_loop(vmm_vm *vm, vmm_loop *loop);

/**
 * The VM's loop; if it has none, a threaded loop owned by the VM is created
 * (and destroyed with it).
 * @return 0; -VMM_ESTATE while the VM is being destroyed; system errors.
 */
VMM_EXTERN int vmm_vm_get_loop(vmm_vm *vm, vmm_loop **out);

/**
 * Completion of a run started with vmm_vcpu_start(), called on the loop
 * thread once vmm_vcpu_run() has returned.
 *
 * @param status  vmm_vcpu_run()'s return value.
 * @param exit    the vCPU's exit record (valid when status is 0); it and the
 *                vCPU stay valid until the callback returns, and further
 *                while nothing runs the vCPU again.
 * The vCPU is not running during the callback: its state may be read and
 * changed, and it may be started again.
 */
typedef void (*vmm_vcpu_done_fn)(vmm_vcpu *vcpu, int status,
                                 struct vmm_exit *exit, void *opaque);

/**
 * Run the vCPU on a thread the library manages (one per vCPU, created on
 * first use, joined by vmm_vm_destroy()) until vmm_vcpu_run() returns, then
 * call done on the VM's loop (see vmm_vm_get_loop()). Loop thread (for a
 * host-run loop).
 *
 * Library threads block every signal (the KVM kick signal is unblocked only
 * inside KVM_RUN), so host signal handling is not disturbed.
 *
 * vmm_vm_destroy() stops such runs (as vmm_vm_stop() would), joins the
 * threads and drops completions not yet delivered: their callbacks are not
 * called. Stop a vCPU without destroying the VM with vmm_vcpu_kick() or
 * vmm_vm_stop(); the completion then reports VMM_EXIT_STOPPED.
 *
 * @return 0; -VMM_EBUSY if a run started earlier has not been delivered
 *         yet (its callback has not been called); -VMM_ESTATE while the VM
 *         is being destroyed; -VMM_EINVAL; system errors.
 */
VMM_EXTERN int vmm_vcpu_start(vmm_vcpu *vcpu, vmm_vcpu_done_fn done,
                              void *opaque);

#ifdef __cplusplus
}
#endif
#endif
