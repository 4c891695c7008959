/*
 * Event loop and library-managed vCPU threads: internal interface. See
 * docs/event-loop.md.
 */
#ifndef LIBVMM_LOOP_INTERNAL_H
#define LIBVMM_LOOP_INTERNAL_H

#include <libvmm/vmm.h>
#include <pthread.h>

/*
 * A unit of work run on the loop thread. Posting is thread-safe and
 * coalescing: posting an item that is already queued does nothing, so a
 * device can post "flush" from every handler call without flooding the
 * loop. Items are embedded in their owner, which must cancel them (from
 * the loop thread, see vmm_loop_call()) before it goes away.
 */
struct vmm__work;
typedef void (*vmm__work_fn)(struct vmm__work *w);
struct vmm__work {
  vmm__work_fn fn;
  struct vmm__work *next;
  bool queued;
};

static inline void vmm__work_init(struct vmm__work *w, vmm__work_fn fn) {
  w->fn = fn;
  w->next = NULL;
  w->queued = false;
}

void vmm__loop_post(vmm_loop *loop, struct vmm__work *w);
/* Remove w from the queue; true if it was queued. */
bool vmm__loop_cancel(vmm_loop *loop, struct vmm__work *w);

/*
 * Keep the loop alive while VM work is pending (a started vCPU whose
 * completion has not been delivered). Loop thread only.
 */
void vmm__loop_hold(vmm_loop *loop);
void vmm__loop_release(vmm_loop *loop);

/* The VM's side: its loop, whether it owns it, and the destroy latch. All
   under vm->lock. */
struct vmm__vm_loop {
  vmm_loop *loop;
  bool owned;
  bool destroying;
};

/*
 * First step of vmm_vm_destroy(): -VMM_EBUSY (and nothing changed) if a
 * thread the caller owns is running one of the VM's vCPUs, or if called
 * from one of the VM's library threads; otherwise latch "destroying",
 * stop and join the library threads and drop undelivered completions.
 */
int vmm__vthreads_stop(vmm_vm *vm);
/* Last step of vmm_vm_destroy(): let go of (or destroy) the VM's loop. */
void vmm__vm_loop_fini(vmm_vm *vm);

#endif
