/*
 * The VM's clock and timers. See lib/io/clock.h and docs/platform.md.
 *
 * Armed timers sit in a list sorted by deadline: a VM has a handful of
 * timers (the PIT's and one per local APIC), so insertion in O(n) costs
 * less than a heap's bookkeeping and never allocates, which keeps arm()
 * infallible on the paths where devices call it with their locks held.
 *
 * The host source's thread waits on a condition variable bound to
 * CLOCK_MONOTONIC with its timer slack set to 1 ns: measured here
 * (bench/timers.c), that wakes within tens of microseconds of a deadline,
 * where libuv's millisecond timers are late by half a millisecond on
 * average.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "../internal.h"
#include "clock.h"

#define NS 1000000000ll

struct vmm__clock {
  vmm_vm *vm;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* the thread's wait: new earliest deadline, quit */
  pthread_cond_t idle; /* a callback returned */
  struct vmm__timer *head;
  struct vmm__timer *running; /* callback in flight */
  int64_t base;               /* CLOCK_MONOTONIC at creation */
  bool manual;
  int64_t manual_now;
  bool thread_started, quit;
  pthread_t thread;
};

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t now_locked(const struct vmm__clock *c) {
  return c->manual ? c->manual_now : mono_ns() - c->base;
}

int64_t vmm__clock_now(struct vmm__clock *c) {
  pthread_mutex_lock(&c->lock);
  int64_t t = now_locked(c);
  pthread_mutex_unlock(&c->lock);
  return t;
}

int vmm__clock_create(vmm_vm *vm, struct vmm__clock **out) {
  struct vmm__clock *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return VMM_ENOMEM;
  c->vm = vm;
  c->base = mono_ns();
  pthread_condattr_t attr;
  int err = -pthread_condattr_init(&attr);
  if (err < 0)
    goto fail_alloc;
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  if ((err = -pthread_mutex_init(&c->lock, NULL)) < 0)
    goto fail_attr;
  if ((err = -pthread_cond_init(&c->cond, &attr)) < 0)
    goto fail_lock;
  if ((err = -pthread_cond_init(&c->idle, NULL)) < 0)
    goto fail_cond;
  pthread_condattr_destroy(&attr);
  *out = c;
  return 0;

fail_cond:
  pthread_cond_destroy(&c->cond);
fail_lock:
  pthread_mutex_destroy(&c->lock);
fail_attr:
  pthread_condattr_destroy(&attr);
fail_alloc:
  free(c);
  return err;
}

void vmm__clock_destroy(struct vmm__clock *c) {
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->lock);
  c->quit = true;
  pthread_cond_signal(&c->cond);
  bool started = c->thread_started;
  pthread_mutex_unlock(&c->lock);
  if (started)
    pthread_join(c->thread, NULL);
  pthread_cond_destroy(&c->idle);
  pthread_cond_destroy(&c->cond);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

void vmm__timer_init(struct vmm__timer *t, vmm__timer_fn fn, void *opaque) {
  memset(t, 0, sizeof(*t));
  t->fn = fn;
  t->opaque = opaque;
}

static void unlink_locked(struct vmm__clock *c, struct vmm__timer *t) {
  if (!t->armed)
    return;
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    c->head = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  t->next = t->prev = NULL;
  t->armed = false;
}

/* Run one due callback unlocked; called and returns with the lock held. */
static void fire_locked(struct vmm__clock *c, struct vmm__timer *t,
                        int64_t now) {
  unlink_locked(c, t);
  c->running = t;
  pthread_mutex_unlock(&c->lock);
  t->fn(t, now);
  pthread_mutex_lock(&c->lock);
  c->running = NULL;
  pthread_cond_broadcast(&c->idle);
}

static void *thread_main(void *arg) {
  struct vmm__clock *c = arg;
  /* Deadlines are what this thread is for: no slack on its sleeps. */
  prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
  pthread_mutex_lock(&c->lock);
  while (!c->quit) {
    struct vmm__timer *t = c->head;
    if (t == NULL) {
      pthread_cond_wait(&c->cond, &c->lock);
      continue;
    }
    int64_t now = now_locked(c);
    if (t->deadline <= now) {
      fire_locked(c, t, now);
      continue;
    }
    int64_t abs = c->base + t->deadline;
    struct timespec ts = {.tv_sec = abs / NS, .tv_nsec = abs % NS};
    pthread_cond_timedwait(&c->cond, &c->lock, &ts);
  }
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

/* Start the host source's thread; caller holds the lock. */
static int start_locked(struct vmm__clock *c) {
  if (c->thread_started || c->manual)
    return 0;
  /* A library thread takes none of the host's signals. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = -pthread_create(&c->thread, NULL, thread_main, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err < 0) {
    vmm__log(c->vm, VMM_LOG_ERROR, "clock: cannot start the timer thread: %s",
             vmm_strerror(err));
    return err;
  }
  c->thread_started = true;
  return 0;
}

int vmm__timer_arm(struct vmm__clock *c, struct vmm__timer *t,
                   int64_t deadline) {
  pthread_mutex_lock(&c->lock);
  unlink_locked(c, t);
  t->deadline = deadline;
  struct vmm__timer *prev = NULL, *it = c->head;
  while (it != NULL && it->deadline <= deadline) {
    prev = it;
    it = it->next;
  }
  t->prev = prev;
  t->next = it;
  if (it != NULL)
    it->prev = t;
  if (prev != NULL)
    prev->next = t;
  else
    c->head = t;
  t->armed = true;
  int err = start_locked(c);
  if (c->head == t)
    pthread_cond_signal(&c->cond);
  pthread_mutex_unlock(&c->lock);
  return err;
}

void vmm__timer_cancel(struct vmm__clock *c, struct vmm__timer *t) {
  pthread_mutex_lock(&c->lock);
  unlink_locked(c, t);
  pthread_mutex_unlock(&c->lock);
}

void vmm__timer_fini(struct vmm__clock *c, struct vmm__timer *t) {
  pthread_mutex_lock(&c->lock);
  unlink_locked(c, t);
  while (c->running == t)
    pthread_cond_wait(&c->idle, &c->lock);
  pthread_mutex_unlock(&c->lock);
}

int vmm__clock_set_manual(struct vmm__clock *c, int64_t now) {
  pthread_mutex_lock(&c->lock);
  int err = 0;
  if (c->thread_started)
    err = VMM_ESTATE;
  else {
    c->manual = true;
    c->manual_now = now;
  }
  pthread_mutex_unlock(&c->lock);
  return err;
}

void vmm__clock_advance(struct vmm__clock *c, int64_t now) {
  pthread_mutex_lock(&c->lock);
  if (c->manual && now > c->manual_now)
    c->manual_now = now;
  while (c->manual && c->head != NULL && c->head->deadline <= c->manual_now)
    fire_locked(c, c->head, c->manual_now);
  pthread_mutex_unlock(&c->lock);
}

int64_t vmm__clock_next_deadline(struct vmm__clock *c) {
  pthread_mutex_lock(&c->lock);
  int64_t d = c->head != NULL ? c->head->deadline : INT64_MAX;
  pthread_mutex_unlock(&c->lock);
  return d;
}
