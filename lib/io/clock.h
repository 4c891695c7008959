/*
 * The VM's clock and timers (lib/io/clock.c): the time base of the
 * interrupt platform's timers (PIT, local APIC timers). See docs/platform.md.
 *
 * Time is nanoseconds on one monotonic scale per VM. Two sources drive it:
 *
 *   - host (default): CLOCK_MONOTONIC since the clock's creation; a thread
 *     of the library, started when the first timer is armed, sleeps until
 *     the earliest deadline and runs due callbacks;
 *   - manual: the time is whatever the driver last set with
 *     vmm__clock_advance(), which also runs the callbacks now due on the
 *     calling thread. Tests use it to drive timers deterministically; it is
 *     also the seam for a virtual clock derived from the BT engine's
 *     instruction count (the engine would advance the clock as guest
 *     instructions retire and bound its run by vmm__clock_next_deadline()).
 *
 * Devices see one interface either way: now(), arm(), cancel(), fini().
 *
 * Locking: the clock's lock is a leaf; arm() and cancel() may be called
 * with any device lock held. Callbacks run without the clock's lock (they
 * may arm timers again) and may take device locks, so fini() - which waits
 * for a callback in flight - must be called without locks the callback
 * takes, and never from the timer's own callback. cancel() does not wait:
 * a callback already on its way may still run once, so callbacks check
 * their device's state rather than trusting that they are wanted.
 */
#ifndef LIBVMM_IO_CLOCK_H
#define LIBVMM_IO_CLOCK_H

#include <libvmm/vmm.h>
#include <stdint.h>

struct vmm__clock;
struct vmm__timer;

/* A timer callback: now is the clock's time when the callback started. */
typedef void (*vmm__timer_fn)(struct vmm__timer *t, int64_t now);

struct vmm__timer {
  vmm__timer_fn fn;
  void *opaque;
  int64_t deadline;
  struct vmm__timer *next, *prev; /* in the clock's sorted list */
  bool armed;
};

int vmm__clock_create(vmm_vm *vm, struct vmm__clock **out);
/* Joins the thread. Every timer must have been finalized. NULL accepted. */
void vmm__clock_destroy(struct vmm__clock *c);

int64_t vmm__clock_now(struct vmm__clock *c);

void vmm__timer_init(struct vmm__timer *t, vmm__timer_fn fn, void *opaque);
/*
 * Arm (or re-arm) t to run at deadline (clock time; a deadline in the past
 * runs as soon as possible). Returns 0, or a negative code when the host
 * clock's thread could not be started (logged; the timer is then armed
 * but will only run once a later arm starts the thread).
 */
int vmm__timer_arm(struct vmm__clock *c, struct vmm__timer *t,
                   int64_t deadline);
void vmm__timer_cancel(struct vmm__clock *c, struct vmm__timer *t);
/* Cancel and wait until no callback of t runs. See the locking note. */
void vmm__timer_fini(struct vmm__clock *c, struct vmm__timer *t);

/*
 * Manual mode. set_manual switches the clock to time `now` driven by
 * vmm__clock_advance(); only before any timer was armed on the host
 * source (-VMM_ESTATE otherwise). advance sets the time (never backwards)
 * and runs every callback due, in deadline order, on the calling thread,
 * including those armed by the callbacks themselves while due.
 */
int vmm__clock_set_manual(struct vmm__clock *c, int64_t now);
void vmm__clock_advance(struct vmm__clock *c, int64_t now);
/* Earliest armed deadline, or INT64_MAX when no timer is armed. */
int64_t vmm__clock_next_deadline(struct vmm__clock *c);

#endif
