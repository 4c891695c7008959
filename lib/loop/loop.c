/*
 * The event loop: a uv loop (the library's or the host's), one uv_async
 * through which any thread hands work to the loop thread, and optionally a
 * thread of its own. See docs/event-loop.md.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../internal.h"

struct vmm_loop {
  uv_loop_t *uv;
  uv_loop_t own; /* when the library created the uv loop */
  bool owns_uv;
  bool threaded;
  uv_async_t async;

  /* The work queue and the vmm_loop_call() rendezvous. */
  pthread_mutex_t lock;
  pthread_cond_t call_done;
  struct vmm__work *head, *tail;

  pthread_t thread;   /* threaded loops */
  bool quit;          /* threaded: set on the loop thread by destroy */
  bool self_destruct; /* threaded: destroyed from its own thread */
  bool in_run;        /* inside vmm_loop_run() */
  unsigned holds;     /* pending VM work, loop thread only */
  atomic_uint users;  /* VMs using the loop */
  struct vmm__work stop_work;
};

void vmm_loop_config_init(struct vmm_loop_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
}

/* ------------------------------------------------------------------------ */
/* Work queue                                                               */

void vmm__loop_post(vmm_loop *loop, struct vmm__work *w) {
  pthread_mutex_lock(&loop->lock);
  if (!w->queued) {
    w->queued = true;
    w->next = NULL;
    if (loop->tail != NULL)
      loop->tail->next = w;
    else
      loop->head = w;
    loop->tail = w;
  }
  pthread_mutex_unlock(&loop->lock);
  uv_async_send(&loop->async);
}

bool vmm__loop_cancel(vmm_loop *loop, struct vmm__work *w) {
  bool found = false;
  pthread_mutex_lock(&loop->lock);
  if (w->queued) {
    struct vmm__work *prev = NULL;
    for (struct vmm__work *it = loop->head; it != NULL; it = it->next) {
      if (it == w) {
        if (prev != NULL)
          prev->next = w->next;
        else
          loop->head = w->next;
        if (loop->tail == w)
          loop->tail = prev;
        break;
      }
      prev = it;
    }
    w->queued = false;
    found = true;
  }
  pthread_mutex_unlock(&loop->lock);
  return found;
}

static void on_async(uv_async_t *handle) {
  vmm_loop *loop = handle->data;
  /* One item at a time, unlocked while it runs: an item may post, cancel,
     or destroy the VM that owns other queued items. */
  while (!loop->self_destruct) {
    pthread_mutex_lock(&loop->lock);
    struct vmm__work *w = loop->head;
    if (w != NULL) {
      loop->head = w->next;
      if (loop->head == NULL)
        loop->tail = NULL;
      w->queued = false;
    }
    pthread_mutex_unlock(&loop->lock);
    if (w == NULL)
      break;
    w->fn(w);
  }
}

/* A threaded loop's async handle stays referenced: nothing to count, and
   these may then be called from any thread. */
void vmm__loop_hold(vmm_loop *loop) {
  if (!loop->threaded && loop->holds++ == 0)
    uv_ref((uv_handle_t *)&loop->async);
}

void vmm__loop_release(vmm_loop *loop) {
  if (!loop->threaded && --loop->holds == 0)
    uv_unref((uv_handle_t *)&loop->async);
}

/* ------------------------------------------------------------------------ */
/* Calls on the loop thread                                                 */

struct call {
  struct vmm__work work;
  vmm_loop *loop;
  vmm_loop_fn fn;
  void *opaque;
  bool done;
};

static void run_call(struct vmm__work *w) {
  struct call *c = (struct call *)w;
  vmm_loop *loop = c->loop;
  c->fn(loop, c->opaque);
  /* c lives on the waiter's stack: not touched once done is seen. */
  pthread_mutex_lock(&loop->lock);
  c->done = true;
  pthread_cond_broadcast(&loop->call_done);
  pthread_mutex_unlock(&loop->lock);
}

int vmm_loop_call(vmm_loop *loop, vmm_loop_fn fn, void *opaque) {
  if (loop == NULL || fn == NULL)
    return VMM_EINVAL;
  if (!loop->threaded || pthread_equal(loop->thread, pthread_self())) {
    fn(loop, opaque);
    return 0;
  }
  struct call c = {.loop = loop, .fn = fn, .opaque = opaque};
  vmm__work_init(&c.work, run_call);
  vmm__loop_post(loop, &c.work);
  pthread_mutex_lock(&loop->lock);
  while (!c.done)
    pthread_cond_wait(&loop->call_done, &loop->lock);
  pthread_mutex_unlock(&loop->lock);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */

static void *thread_main(void *arg) {
  vmm_loop *loop = arg;
  while (!loop->quit && !loop->self_destruct)
    uv_run(loop->uv, UV_RUN_DEFAULT);
  /* Let every close callback (ours and the devices') run before closing
     the uv loop. */
  uv_close((uv_handle_t *)&loop->async, NULL);
  uv_run(loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(loop->uv);
  if (loop->self_destruct) {
    pthread_cond_destroy(&loop->call_done);
    pthread_mutex_destroy(&loop->lock);
    free(loop);
  }
  return NULL;
}

static void do_stop(struct vmm__work *w) {
  vmm_loop *loop = (vmm_loop *)((char *)w - offsetof(vmm_loop, stop_work));
  uv_stop(loop->uv);
}

int vmm_loop_create(const struct vmm_loop_config *user, vmm_loop **out) {
  if (user == NULL || out == NULL || user->size == 0 ||
      user->size > sizeof(struct vmm_loop_config))
    return VMM_EINVAL;
  struct vmm_loop_config cfg;
  vmm_loop_config_init(&cfg);
  memcpy(&cfg, user, user->size);
  if ((cfg.flags & ~(uint32_t)VMM_LOOP_THREAD) ||
      ((cfg.flags & VMM_LOOP_THREAD) && cfg.uv != NULL))
    return VMM_EINVAL;

  vmm_loop *loop = calloc(1, sizeof(*loop));
  if (loop == NULL)
    return VMM_ENOMEM;
  loop->threaded = (cfg.flags & VMM_LOOP_THREAD) != 0;
  atomic_init(&loop->users, 0);
  vmm__work_init(&loop->stop_work, do_stop);
  int err = -pthread_mutex_init(&loop->lock, NULL);
  if (err < 0)
    goto fail_alloc;
  if ((err = -pthread_cond_init(&loop->call_done, NULL)) < 0)
    goto fail_lock;
  if (cfg.uv != NULL) {
    loop->uv = cfg.uv;
  } else {
    if ((err = uv_loop_init(&loop->own)) < 0)
      goto fail_cond;
    loop->uv = &loop->own;
    loop->owns_uv = true;
  }
  if ((err = uv_async_init(loop->uv, &loop->async, on_async)) < 0)
    goto fail_uv;
  loop->async.data = loop;
  if (!loop->threaded) {
    /* Only pending VM work keeps a host-run loop alive (vmm__loop_hold). */
    uv_unref((uv_handle_t *)&loop->async);
  } else {
    /* The thread must not take the host's signals. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = -pthread_create(&loop->thread, NULL, thread_main, loop);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err < 0)
      goto fail_async;
  }
  *out = loop;
  return 0;

fail_async:
  uv_close((uv_handle_t *)&loop->async, NULL);
  uv_run(loop->uv, UV_RUN_NOWAIT);
fail_uv:
  if (loop->owns_uv)
    uv_loop_close(&loop->own);
fail_cond:
  pthread_cond_destroy(&loop->call_done);
fail_lock:
  pthread_mutex_destroy(&loop->lock);
fail_alloc:
  free(loop);
  return err;
}

static void free_on_close(uv_handle_t *h) {
  vmm_loop *loop = h->data;
  pthread_cond_destroy(&loop->call_done);
  pthread_mutex_destroy(&loop->lock);
  free(loop);
}

static void do_quit(struct vmm__work *w) {
  struct call *c = (struct call *)w;
  c->loop->quit = true;
  uv_stop(c->loop->uv);
}

int vmm_loop_destroy(vmm_loop *loop) {
  if (loop == NULL)
    return 0;
  if (atomic_load(&loop->users) != 0)
    return VMM_EBUSY;

  if (loop->threaded) {
    if (pthread_equal(loop->thread, pthread_self())) {
      /* From a loop callback: the thread finishes it, then cleans up. */
      loop->self_destruct = true;
      pthread_detach(loop->thread);
      uv_stop(loop->uv);
      return 0;
    }
    struct call c = {.loop = loop};
    vmm__work_init(&c.work, do_quit);
    vmm__loop_post(loop, &c.work);
    pthread_join(loop->thread, NULL);
    pthread_cond_destroy(&loop->call_done);
    pthread_mutex_destroy(&loop->lock);
    free(loop);
    return 0;
  }

  if (loop->in_run)
    return VMM_EBUSY;
  if (!loop->owns_uv) {
    /* The host's loop releases our handle, and then us, when it next runs. */
    uv_close((uv_handle_t *)&loop->async, free_on_close);
    return 0;
  }
  uv_close((uv_handle_t *)&loop->async, NULL);
  uv_run(&loop->own, UV_RUN_DEFAULT);
  uv_loop_close(&loop->own);
  pthread_cond_destroy(&loop->call_done);
  pthread_mutex_destroy(&loop->lock);
  free(loop);
  return 0;
}

struct uv_loop_s *vmm_loop_uv(vmm_loop *loop) {
  return loop != NULL ? loop->uv : NULL;
}

int vmm_loop_run(vmm_loop *loop, enum vmm_loop_run_mode mode) {
  if (loop == NULL)
    return VMM_EINVAL;
  if (loop->threaded || loop->in_run)
    return VMM_ESTATE;
  uv_run_mode m;
  switch (mode) {
  case VMM_LOOP_RUN_DEFAULT: m = UV_RUN_DEFAULT; break;
  case VMM_LOOP_RUN_ONCE: m = UV_RUN_ONCE; break;
  case VMM_LOOP_RUN_NOWAIT: m = UV_RUN_NOWAIT; break;
  default: return VMM_EINVAL;
  }
  loop->in_run = true;
  int r = uv_run(loop->uv, m);
  loop->in_run = false;
  return r != 0 ? 1 : 0;
}

int vmm_loop_stop(vmm_loop *loop) {
  if (loop == NULL)
    return VMM_EINVAL;
  if (loop->threaded)
    return VMM_ESTATE;
  vmm__loop_post(loop, &loop->stop_work);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The VM's loop                                                            */

int vmm_vm_set_loop(vmm_vm *vm, vmm_loop *loop) {
  if (vm == NULL || loop == NULL)
    return VMM_EINVAL;
  int err = 0;
  pthread_mutex_lock(&vm->lock);
  if (vm->loop.loop != NULL || vm->loop.destroying) {
    err = VMM_ESTATE;
  } else {
    vm->loop.loop = loop;
    vm->loop.owned = false;
    atomic_fetch_add(&loop->users, 1);
  }
  pthread_mutex_unlock(&vm->lock);
  return err;
}

int vmm_vm_get_loop(vmm_vm *vm, vmm_loop **out) {
  if (vm == NULL || out == NULL)
    return VMM_EINVAL;
  int err = 0;
  pthread_mutex_lock(&vm->lock);
  if (vm->loop.loop == NULL) {
    if (vm->loop.destroying) {
      err = VMM_ESTATE;
    } else {
      struct vmm_loop_config cfg;
      vmm_loop_config_init(&cfg);
      cfg.flags = VMM_LOOP_THREAD;
      vmm_loop *loop;
      if ((err = vmm_loop_create(&cfg, &loop)) == 0) {
        atomic_fetch_add(&loop->users, 1);
        vm->loop.loop = loop;
        vm->loop.owned = true;
      }
    }
  }
  *out = vm->loop.loop;
  pthread_mutex_unlock(&vm->lock);
  return err;
}

void vmm__vm_loop_fini(vmm_vm *vm) {
  vmm_loop *loop = vm->loop.loop;
  if (loop == NULL)
    return;
  atomic_fetch_sub(&loop->users, 1);
  if (vm->loop.owned)
    vmm_loop_destroy(loop);
  vm->loop.loop = NULL;
}
