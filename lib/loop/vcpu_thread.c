/*
 * Library-managed vCPU threads: one thread per vCPU, created on the first
 * vmm_vcpu_start() and kept (parked on a condition variable) between runs,
 * so the per-thread engine setup (KVM's signal mask) is done once. Each
 * run's completion is handed to the VM's loop. See docs/event-loop.md.
 */
#include <signal.h>
#include <stdlib.h>

#include "../internal.h"

struct vmm__vthread {
  vmm_vcpu *vcpu;
  vmm_loop *loop;
  pthread_t tid;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool go;   /* a run was requested */
  bool quit; /* the VM is being destroyed */
  bool busy; /* started, completion not yet delivered */
  int status;
  vmm_vcpu_done_fn done;
  void *opaque;
  struct vmm__work done_work; /* delivers the completion on the loop */
};

static void *thread_main(void *arg) {
  struct vmm__vthread *vt = arg;
  pthread_mutex_lock(&vt->lock);
  for (;;) {
    while (!vt->go && !vt->quit)
      pthread_cond_wait(&vt->cond, &vt->lock);
    if (vt->quit)
      break;
    vt->go = false;
    pthread_mutex_unlock(&vt->lock);
    int status = vmm_vcpu_run(vt->vcpu, NULL);
    pthread_mutex_lock(&vt->lock);
    vt->status = status;
    if (vt->quit)
      break;
    vmm__loop_post(vt->loop, &vt->done_work);
  }
  pthread_mutex_unlock(&vt->lock);
  return NULL;
}

static void deliver(struct vmm__work *w) {
  struct vmm__vthread *vt =
      (struct vmm__vthread *)((char *)w -
                              offsetof(struct vmm__vthread, done_work));
  pthread_mutex_lock(&vt->lock);
  vt->busy = false;
  int status = vt->status;
  vmm_vcpu_done_fn done = vt->done;
  void *opaque = vt->opaque;
  vmm_vcpu *vcpu = vt->vcpu;
  pthread_mutex_unlock(&vt->lock);
  vmm__loop_release(vt->loop);
  /* vt may be freed by the callback (vmm_vm_destroy()): not used after. */
  done(vcpu, status, &vcpu->exit, opaque);
}

static int vthread_create(vmm_vcpu *vcpu, vmm_loop *loop,
                          struct vmm__vthread **out) {
  struct vmm__vthread *vt = calloc(1, sizeof(*vt));
  if (vt == NULL)
    return VMM_ENOMEM;
  vt->vcpu = vcpu;
  vt->loop = loop;
  vmm__work_init(&vt->done_work, deliver);
  int err = -pthread_mutex_init(&vt->lock, NULL);
  if (err < 0)
    goto fail_alloc;
  if ((err = -pthread_cond_init(&vt->cond, NULL)) < 0)
    goto fail_lock;
  /* Library threads take none of the host's signals; KVM unblocks its
     kick signal inside KVM_RUN only. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  err = -pthread_create(&vt->tid, NULL, thread_main, vt);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err < 0)
    goto fail_cond;
  *out = vt;
  return 0;

fail_cond:
  pthread_cond_destroy(&vt->cond);
fail_lock:
  pthread_mutex_destroy(&vt->lock);
fail_alloc:
  free(vt);
  return err;
}

int vmm_vcpu_start(vmm_vcpu *vcpu, vmm_vcpu_done_fn done, void *opaque) {
  if (vcpu == NULL || done == NULL)
    return VMM_EINVAL;
  vmm_vm *vm = vcpu->vm;
  vmm_loop *loop;
  int err = vmm_vm_get_loop(vm, &loop);
  if (err < 0)
    return err;

  pthread_mutex_lock(&vm->lock);
  struct vmm__vthread *vt = vcpu->vthread;
  if (vm->loop.destroying)
    err = VMM_ESTATE;
  else if (vt == NULL && (err = vthread_create(vcpu, loop, &vt)) == 0)
    vcpu->vthread = vt;
  pthread_mutex_unlock(&vm->lock);
  if (err < 0)
    return err;

  pthread_mutex_lock(&vt->lock);
  if (vt->quit) {
    err = VMM_ESTATE;
  } else if (vt->busy) {
    err = VMM_EBUSY;
  } else {
    /* Held before the thread can possibly complete and release. */
    vmm__loop_hold(loop);
    vt->busy = true;
    vt->go = true;
    vt->done = done;
    vt->opaque = opaque;
    pthread_cond_signal(&vt->cond);
  }
  pthread_mutex_unlock(&vt->lock);
  return err;
}

/* On the loop thread, so no completion is being delivered meanwhile. */
static void drop_completions(vmm_loop *loop, void *opaque) {
  vmm_vm *vm = opaque;
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *vcpu = vm->vcpus[i];
    struct vmm__vthread *vt = vcpu != NULL ? vcpu->vthread : NULL;
    if (vt == NULL || !vt->busy)
      continue;
    vmm__loop_cancel(loop, &vt->done_work);
    vt->busy = false;
    vmm__loop_release(loop);
  }
}

int vmm__vthreads_stop(vmm_vm *vm) {
  pthread_t self = pthread_self();
  bool any = false;

  pthread_mutex_lock(&vm->lock);
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *vcpu = vm->vcpus[i];
    if (vcpu == NULL)
      continue;
    struct vmm__vthread *vt = vcpu->vthread;
    /* Joining ourselves would hang: destroy from a handler is refused. */
    bool foreign = vt != NULL && pthread_equal(vt->tid, self);
    pthread_mutex_lock(&vcpu->lock);
    if (vcpu->running && (vt == NULL || !pthread_equal(vcpu->thread, vt->tid)))
      foreign = true;
    pthread_mutex_unlock(&vcpu->lock);
    if (foreign) {
      pthread_mutex_unlock(&vm->lock);
      return VMM_EBUSY;
    }
    any |= vt != NULL;
  }
  vm->loop.destroying = true;
  pthread_mutex_unlock(&vm->lock);
  if (!any)
    return 0;

  /* No vmm_vcpu_start() can create or wake a thread from here on. */
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *vcpu = vm->vcpus[i];
    struct vmm__vthread *vt = vcpu != NULL ? vcpu->vthread : NULL;
    if (vt == NULL)
      continue;
    pthread_mutex_lock(&vt->lock);
    vt->quit = true;
    pthread_cond_signal(&vt->cond);
    pthread_mutex_unlock(&vt->lock);
    vmm_vcpu_kick(vcpu);
  }
  vmm_loop *loop = NULL;
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *vcpu = vm->vcpus[i];
    struct vmm__vthread *vt = vcpu != NULL ? vcpu->vthread : NULL;
    if (vt == NULL)
      continue;
    pthread_join(vt->tid, NULL);
    loop = vt->loop;
  }
  vmm_loop_call(loop, drop_completions, vm);
  for (unsigned i = 0; i < vm->cfg.max_vcpus; i++) {
    vmm_vcpu *vcpu = vm->vcpus[i];
    struct vmm__vthread *vt = vcpu != NULL ? vcpu->vthread : NULL;
    if (vt == NULL)
      continue;
    pthread_cond_destroy(&vt->cond);
    pthread_mutex_destroy(&vt->lock);
    free(vt);
    vcpu->vthread = NULL;
  }
  return 0;
}
