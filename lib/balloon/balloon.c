/*
 * virtio-balloon (device ID 5) on the virtio-mmio transport: inflate,
 * deflate, statistics and free page reporting queues, and the host API.
 * See docs/balloon.md.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "../internal.h"
#include "../io/virtio_internal.h"

#define BALLOON_DEVICE_ID 5
/* Frame numbers are in 4 KiB units whatever the guest's page size. */
#define PFN_SHIFT 12
#define PFN_SIZE (1ull << PFN_SHIFT)

/* Virtio feature bits (virtio 1.x 5.5.3). */
#define F_MUST_TELL_HOST 0
#define F_STATS_VQ 1
#define F_DEFLATE_ON_OOM 2
#define F_FREE_PAGE_HINT 3
#define F_PAGE_POISON 4
#define F_PAGE_REPORTING 5

/* Configuration space (virtio 1.x 5.5.4), little endian. */
#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4
#define CFG_FREE_PAGE_HINT_CMD_ID 8
#define CFG_POISON_VAL 12
#define CFG_SIZE 16

/* One statistics entry: le16 tag, le64 value, packed. */
#define STAT_ENTRY_SIZE 10

/* PFNs read from the guest per batch. */
#define PFN_BATCH 1024

enum queue_role { Q_NONE, Q_INFLATE, Q_DEFLATE, Q_STATS, Q_REPORTING };

struct balloon {
  vmm_vm *vm;
  vmm_virtio *virtio;
  vmm_dev *dev;
  uint32_t features; /* enum vmm_balloon_features offered */
  uint16_t queue_size;
  uint32_t target_pages; /* the host's num_pages, under the transport lock */

  /* Statistics, under the transport lock. */
  bool stats_held; /* the driver's buffer is with the device */
  uint16_t stats_head;
  bool stats_first; /* next buffer is the first since DRIVER_OK */
  struct vmm_balloon_stats stats;
  bool stats_callback_due;
  vmm_balloon_stats_fn stats_fn;
  void *stats_opaque;

  /* Counters, under the transport lock. */
  uint64_t inflated, deflated, reported, rejected;
  uint64_t inflate_requests, deflate_requests, report_requests;
  uint64_t work_ns; /* inflate and report handling */

  /* Statistics polling on the VM's loop: interval_ms and loop under the
     transport lock, the timer only on the loop's thread. */
  unsigned interval_ms;
  vmm_loop *loop;
  uv_timer_t *timer;
  struct vmm__work timer_work;
};

static const char *const stat_names[VMM_BALLOON_STAT__COUNT] = {
    "swap-in",          "swap-out",     "major-faults",
    "minor-faults",     "free-memory",  "total-memory",
    "available-memory", "disk-caches",  "hugetlb-allocations",
    "hugetlb-failures", "oom-kills",    "alloc-stalls",
    "async-scans",      "direct-scans", "async-reclaims",
    "direct-reclaims",
};

const char *vmm_balloon_stat_name(unsigned tag) {
  return tag < VMM_BALLOON_STAT__COUNT ? stat_names[tag] : NULL;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t cfg_get32(const struct balloon *b, uint32_t off) {
  uint32_t v;
  memcpy(&v, b->virtio->config + off, 4);
  return v;
}

static void cfg_set32(struct balloon *b, uint32_t off, uint32_t v) {
  memcpy(b->virtio->config + off, &v, 4);
}

/* Our features as virtio balloon feature bits. */
static uint64_t virtio_features(uint32_t f) {
  uint64_t bits = 0;
  if (f & VMM_BALLOON_F_STATS)
    bits |= 1ull << F_STATS_VQ;
  if (f & VMM_BALLOON_F_DEFLATE_ON_OOM)
    bits |= 1ull << F_DEFLATE_ON_OOM;
  if (f & VMM_BALLOON_F_REPORTING)
    bits |= 1ull << F_PAGE_REPORTING;
  return bits;
}

static uint32_t balloon_features(uint64_t bits) {
  uint32_t f = 0;
  if (bits & (1ull << F_STATS_VQ))
    f |= VMM_BALLOON_F_STATS;
  if (bits & (1ull << F_DEFLATE_ON_OOM))
    f |= VMM_BALLOON_F_DEFLATE_ON_OOM;
  if (bits & (1ull << F_PAGE_REPORTING))
    f |= VMM_BALLOON_F_REPORTING;
  return f;
}

/*
 * Queue numbering. The spec lists inflateq 0, deflateq 1, statsq 2,
 * free_page_vq 3, reporting_vq 4 and says the optional ones exist only with
 * their feature. Real drivers (Linux's find_vqs skips absent queues and
 * numbers the rest consecutively; QEMU and crosvm do the same) leave no
 * holes: without STATS_VQ the reporting queue is 2. We follow the features
 * the driver wrote, which is what the Linux driver computes from; a Linux
 * driver accepts every balloon queue feature it is offered, so this also
 * agrees with devices that number by the offered features.
 */
static enum queue_role role_of(unsigned q, uint64_t features) {
  enum queue_role order[5];
  unsigned n = 0;
  order[n++] = Q_INFLATE;
  order[n++] = Q_DEFLATE;
  if (features & (1ull << F_STATS_VQ))
    order[n++] = Q_STATS;
  /* FREE_PAGE_HINT is never offered, so its queue never takes a number. */
  if (features & (1ull << F_PAGE_REPORTING))
    order[n++] = Q_REPORTING;
  return q < n ? order[q] : Q_NONE;
}

static uint16_t op_queue_max(void *dev, unsigned q, uint64_t features) {
  struct balloon *b = dev;
  return role_of(q, features) != Q_NONE ? b->queue_size : 0;
}

/* ------------------------------------------------------------------------ */
/* Inflate, deflate, report                                                 */

/*
 * Discard a run of contiguous frames. vmm_mem_discard() refuses, whole, a
 * range that is not all writable RAM; then go page by page so the valid
 * frames are still reclaimed and only the bad ones are rejected. Returns
 * the number of pages discarded.
 */
static uint64_t discard_run(struct balloon *b, uint64_t first_pfn, uint64_t n) {
  int err = vmm_mem_discard(b->vm, first_pfn << PFN_SHIFT, n << PFN_SHIFT);
  if (err == 0)
    return n;
  uint64_t done = 0;
  for (uint64_t i = 0; i < n; i++) {
    if (vmm_mem_discard(b->vm, (first_pfn + i) << PFN_SHIFT, PFN_SIZE) == 0)
      done++;
  }
  if (done < n)
    vmm__log(b->vm, VMM_LOG_DEBUG,
             "balloon: %llu of %llu frames from 0x%llx are not guest RAM",
             (unsigned long long)(n - done), (unsigned long long)n,
             (unsigned long long)first_pfn);
  return done;
}

/* Does frame pfn lie in writable guest RAM? */
static bool pfn_is_ram(struct balloon *b, uint64_t pfn) {
  uint32_t flags = 0;
  void *p = vmm__mem_hva(&b->vm->mem, pfn << PFN_SHIFT, PFN_SIZE, &flags);
  return p != NULL && !(flags & VMM_MEM_READONLY);
}

/* Account for an inflated run: discard it, count what went and what not. */
static void flush_run(struct balloon *b, uint64_t lo, uint64_t n) {
  if (n == 0)
    return;
  uint64_t ok = discard_run(b, lo, n);
  b->inflated += ok;
  b->rejected += n - ok;
}

/*
 * Walk the frame numbers of one inflate or deflate request. For inflate,
 * consecutive frames (ascending or descending, as drivers hand them out)
 * are merged so the host makes one system call per run, not per page.
 * Deflate needs no host work (pages fault back in on use): frames are only
 * checked and counted.
 */
static int handle_pfns(struct balloon *b, const struct vmm__virtq_chain *c,
                       bool inflate) {
  uint32_t pfns[PFN_BATCH];
  uint32_t total = c->readable / 4;
  uint64_t run_lo = 0, run_n = 0; /* current run [run_lo, run_lo + run_n) */

  for (uint32_t done = 0; done < total;) {
    uint32_t n = total - done < PFN_BATCH ? total - done : PFN_BATCH;
    int err = vmm__virtq_read(b->virtio, c, done * 4, pfns, n * 4);
    if (err < 0) {
      vmm__virtio_fail(b->virtio, VMM_VIRTIO_ERR_BUFFER_ADDRESS,
                       "balloon frame list no longer readable");
      return err;
    }
    for (uint32_t i = 0; i < n; i++) {
      uint64_t pfn = pfns[i];
      if (!inflate) {
        if (pfn_is_ram(b, pfn))
          b->deflated++;
        else
          b->rejected++;
      } else if (run_n > 0 && pfn == run_lo + run_n) {
        run_n++;
      } else if (run_n > 0 && pfn + 1 == run_lo) {
        run_lo = pfn;
        run_n++;
      } else {
        flush_run(b, run_lo, run_n);
        run_lo = pfn;
        run_n = 1;
      }
    }
    done += n;
  }
  flush_run(b, run_lo, run_n);
  return 0;
}

static void handle_inflate_deflate(struct balloon *b, unsigned q,
                                   bool inflate) {
  struct vmm__virtq_chain c;
  bool used = false;
  while (vmm__virtq_pop(b->virtio, q, &c) > 0) {
    if (c.writable > 0) {
      vmm__virtio_fail(b->virtio, VMM_VIRTIO_ERR_DIRECTION,
                       "%s request with device-writable buffers",
                       inflate ? "inflate" : "deflate");
      return;
    }
    if (c.readable % 4) {
      vmm__virtio_fail(b->virtio, VMM_VIRTIO_ERR_REQUEST,
                       "%s request of %u bytes is not a list of 32-bit "
                       "frame numbers",
                       inflate ? "inflate" : "deflate", c.readable);
      return;
    }
    if (inflate)
      b->inflate_requests++;
    else
      b->deflate_requests++;
    /* Timed per request: a clock read per discarded page would cost more
       than a scattered inflate's bookkeeping. */
    uint64_t t0 = now_ns();
    int err = handle_pfns(b, &c, inflate);
    b->work_ns += now_ns() - t0;
    if (err < 0)
      return;
    if (vmm__virtq_push(b->virtio, q, c.head, 0) < 0)
      return;
    used = true;
  }
  if (used)
    vmm__virtq_signal(b->virtio, q);
}

static void handle_reporting(struct balloon *b, unsigned q) {
  struct vmm__virtq_chain c;
  bool used = false;
  while (vmm__virtq_pop(b->virtio, q, &c) > 0) {
    /* Linux hands the free pages themselves over as device-writable
       buffers: the device may change their contents. */
    if (c.readable > 0) {
      vmm__virtio_fail(b->virtio, VMM_VIRTIO_ERR_DIRECTION,
                       "free page report with device-readable buffers");
      return;
    }
    b->report_requests++;
    uint64_t t0 = now_ns();
    for (uint16_t i = 0; i < c.count; i++) {
      /* Whole 4 KiB pages inside the buffer; the buffer itself was
         checked to be writable RAM, not wrapping, when the chain was
         popped. A buffer shorter than a page holds no whole page, and
         skipping it first keeps the round-up below from wrapping for a
         buffer at the very top of the address space. */
      if (c.bufs[i].len < PFN_SIZE)
        continue;
      vmm_gpa_t lo = (c.bufs[i].gpa + PFN_SIZE - 1) & ~(PFN_SIZE - 1);
      vmm_gpa_t hi = (c.bufs[i].gpa + c.bufs[i].len) & ~(PFN_SIZE - 1);
      if (hi <= lo)
        continue;
      uint64_t ok = discard_run(b, lo >> PFN_SHIFT, (hi - lo) >> PFN_SHIFT);
      b->reported += ok;
      b->rejected += ((hi - lo) >> PFN_SHIFT) - ok;
    }
    b->work_ns += now_ns() - t0;
    if (vmm__virtq_push(b->virtio, q, c.head, 0) < 0)
      return;
    used = true;
  }
  if (used)
    vmm__virtq_signal(b->virtio, q);
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */

static void parse_stats(struct balloon *b, const struct vmm__virtq_chain *c) {
  /* Entries are 10 bytes; a trailing fragment (the spec once said
     "multiple of 6") is ignored. Unknown tags are ignored as required. */
  uint32_t n = c->readable / STAT_ENTRY_SIZE;
  struct vmm_balloon_stats s = b->stats;
  s.valid = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t e[STAT_ENTRY_SIZE];
    if (vmm__virtq_read(b->virtio, c, i * STAT_ENTRY_SIZE, e, sizeof(e)) < 0)
      return;
    uint16_t tag;
    uint64_t val;
    memcpy(&tag, e, 2);
    memcpy(&val, e + 2, 8);
    if (tag < VMM_BALLOON_STAT__COUNT) {
      s.values[tag] = val;
      s.valid |= 1u << tag;
    }
  }
  s.updates++;
  s.time_ns = now_ns();
  b->stats = s;
  b->stats_callback_due = true;
}

static void handle_stats(struct balloon *b, unsigned q) {
  struct vmm__virtq_chain c;
  while (vmm__virtq_pop(b->virtio, q, &c) > 0) {
    if (b->stats_held) {
      vmm__virtio_fail(b->virtio, VMM_VIRTIO_ERR_REQUEST,
                       "second statistics buffer while one is held");
      return;
    }
    if (c.writable > 0) {
      vmm__virtio_fail(b->virtio, VMM_VIRTIO_ERR_DIRECTION,
                       "statistics buffer is device-writable");
      return;
    }
    /* Legacy drivers historically sent garbage in the first buffer. */
    bool skip = b->stats_first && b->virtio->cfg.version == 1;
    b->stats_first = false;
    if (!skip)
      parse_stats(b, &c);
    /* Keep the buffer: returning it is how we ask for the next update. */
    b->stats_held = true;
    b->stats_head = c.head;
  }
}

/* ------------------------------------------------------------------------ */
/* Transport callbacks                                                      */

static void op_notify(void *dev, unsigned q) {
  struct balloon *b = dev;
  switch (role_of(q, vmm__virtio_features(b->virtio))) {
  case Q_INFLATE: handle_inflate_deflate(b, q, true); break;
  case Q_DEFLATE: handle_inflate_deflate(b, q, false); break;
  case Q_STATS: handle_stats(b, q); break;
  case Q_REPORTING: handle_reporting(b, q); break;
  case Q_NONE: break;
  }
}

static void op_config_write(void *dev, uint32_t off, uint32_t len) {
  struct balloon *b = dev;
  VMM__UNUSED(off);
  VMM__UNUSED(len);
  /* The driver writes actual (and poison_val, never offered, so unused).
     num_pages and the hint command id are the device's: undo any write. */
  cfg_set32(b, CFG_NUM_PAGES, b->target_pages);
  cfg_set32(b, CFG_FREE_PAGE_HINT_CMD_ID, 0);
}

static void op_activate(void *dev) {
  struct balloon *b = dev;
  b->stats_first = true;
}

static void op_reset(void *dev) {
  struct balloon *b = dev;
  /* The target is the host's and survives; the rest is the driver's. */
  cfg_set32(b, CFG_ACTUAL, 0);
  cfg_set32(b, CFG_FREE_PAGE_HINT_CMD_ID, 0);
  cfg_set32(b, CFG_POISON_VAL, 0);
  b->stats_held = false;
  b->stats_first = true;
}

/* After a guest access: deliver statistics without holding the lock. */
static void op_unlocked(void *dev) {
  struct balloon *b = dev;
  pthread_mutex_lock(&b->virtio->lock);
  bool due = b->stats_callback_due;
  b->stats_callback_due = false;
  struct vmm_balloon_stats s = b->stats;
  pthread_mutex_unlock(&b->virtio->lock);
  if (due && b->stats_fn != NULL)
    b->stats_fn(b->dev, &s, b->stats_opaque);
}

static void op_destroy(void *dev);
static int op_stats(void *dev, json_t **out);

static const struct vmm__virtio_ops balloon_ops = {
    .type = "virtio-balloon",
    .default_name = "balloon",
    .device_id = BALLOON_DEVICE_ID,
    .config_size = CFG_SIZE,
    .queue_max = op_queue_max,
    .notify = op_notify,
    .config_write = op_config_write,
    .activate = op_activate,
    .reset = op_reset,
    .unlocked = op_unlocked,
    .destroy = op_destroy,
    .stats = op_stats,
};

/* ------------------------------------------------------------------------ */
/* Host API                                                                 */

/* The balloon behind a device, or NULL for any other device. */
static struct balloon *balloon_of(vmm_dev *dev) {
  vmm_virtio *v = vmm__virtio_of(dev);
  return v != NULL && v->ops == &balloon_ops ? v->model : NULL;
}

void vmm_balloon_config_init(struct vmm_balloon_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  vmm_virtio_mmio_config_init(&cfg->mmio);
  cfg->mmio.base = 0xd0000000ull;
  cfg->features = VMM_BALLOON_F_ALL;
  cfg->queue_size = 256;
}

static int check_target(uint64_t bytes) {
  if (bytes % PFN_SIZE)
    return VMM_EALIGN;
  if ((bytes >> PFN_SHIFT) > UINT32_MAX)
    return VMM_ERANGE;
  return 0;
}

/* Index of the statistics queue for the driver's features, or -1. */
static int stats_queue(struct balloon *b) {
  uint64_t f = vmm__virtio_features(b->virtio);
  for (unsigned q = 0; q < VMM__VIRTIO_MAX_QUEUES; q++)
    if (role_of(q, f) == Q_STATS)
      return (int)q;
  return -1;
}

static int request_stats_locked(struct balloon *b) {
  if (!vmm__virtio_live(b->virtio))
    return VMM_EAGAIN;
  int q = stats_queue(b);
  if (q < 0)
    return VMM_ENOTSUP;
  if (!b->stats_held)
    return VMM_EAGAIN;
  int err = vmm__virtq_push(b->virtio, (unsigned)q, b->stats_head, 0);
  if (err < 0)
    return err;
  b->stats_held = false;
  vmm__virtq_signal(b->virtio, (unsigned)q);
  return 0;
}

/* ---- Polling, on the VM's loop (the CMOS RTC's pattern, docs/devices.md) */

static void on_timer(uv_timer_t *t) {
  struct balloon *b = t->data;
  vmm__virtio_lock(b->virtio);
  /* EAGAIN (driver not there yet, or still answering) is routine. */
  request_stats_locked(b);
  vmm__virtio_unlock(b->virtio);
}

/* Loop thread: make the timer match interval_ms. */
static void timer_sync(struct vmm__work *w) {
  struct balloon *b =
      (struct balloon *)((char *)w - offsetof(struct balloon, timer_work));
  vmm__virtio_lock(b->virtio);
  unsigned ms = b->interval_ms;
  vmm__virtio_unlock(b->virtio);
  if (ms == 0) {
    if (b->timer != NULL)
      uv_timer_stop(b->timer);
    return;
  }
  if (b->timer == NULL) {
    uv_timer_t *t = malloc(sizeof(*t));
    if (t == NULL || uv_timer_init(vmm_loop_uv(b->loop), t) < 0) {
      free(t);
      vmm__log(b->vm, VMM_LOG_ERROR, "balloon: cannot create the timer");
      return;
    }
    t->data = b;
    /* Device timers never keep the host's loop alive by themselves. */
    uv_unref((uv_handle_t *)t);
    b->timer = t;
  }
  uv_timer_start(b->timer, on_timer, ms, ms);
}

static void close_timer(uv_handle_t *h) {
  free(h);
}

/* Loop thread: nothing of the device may stay queued or armed. */
static void teardown_on_loop(vmm_loop *loop, void *opaque) {
  struct balloon *b = opaque;
  vmm__loop_cancel(loop, &b->timer_work);
  if (b->timer != NULL)
    uv_close((uv_handle_t *)b->timer, close_timer);
  b->timer = NULL;
}

static void op_destroy(void *dev) {
  struct balloon *b = dev;
  if (b->loop != NULL)
    vmm_loop_call(b->loop, teardown_on_loop, b);
  free(b);
}

int vmm_balloon_set_stats_interval(vmm_dev *dev, unsigned ms) {
  struct balloon *b = balloon_of(dev);
  if (b == NULL)
    return VMM_EINVAL;
  vmm__virtio_lock(b->virtio);
  b->interval_ms = ms;
  vmm_loop *loop = b->loop;
  vmm__virtio_unlock(b->virtio);
  if (loop == NULL && ms == 0)
    return 0; /* nothing armed, nothing wanted: no loop needed */
  if (loop == NULL) {
    /* Not under our lock: vmm_vm_get_loop() takes the VM's. */
    int err = vmm_vm_get_loop(b->vm, &loop);
    if (err < 0)
      return err;
    vmm__virtio_lock(b->virtio);
    if (b->loop == NULL)
      b->loop = loop;
    loop = b->loop;
    vmm__virtio_unlock(b->virtio);
  }
  vmm__loop_post(loop, &b->timer_work);
  return 0;
}

int vmm_balloon_create(vmm_vm *vm, const struct vmm_balloon_config *user,
                       vmm_dev **out) {
  struct vmm_balloon_config cfg;
  vmm_balloon_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  if (cfg.features & ~(uint32_t)VMM_BALLOON_F_ALL)
    return VMM_EINVAL;
  if (cfg.queue_size < 2 || cfg.queue_size > 1024 ||
      (cfg.queue_size & (cfg.queue_size - 1)))
    return VMM_EINVAL;
  int err = check_target(cfg.target_bytes);
  if (err < 0)
    return err;

  struct balloon *b = calloc(1, sizeof(*b));
  if (b == NULL)
    return VMM_ENOMEM;
  b->vm = vm;
  b->features = cfg.features;
  b->queue_size = cfg.queue_size;
  b->target_pages = (uint32_t)(cfg.target_bytes >> PFN_SHIFT);
  b->stats_fn = cfg.stats_fn;
  b->stats_opaque = cfg.stats_opaque;
  b->stats_first = true;
  vmm__work_init(&b->timer_work, timer_sync);
  /* num_pages must be in place before the window is reachable. */
  uint8_t initial[4];
  memcpy(initial, &b->target_pages, 4);
  vmm_dev *dev;
  err = vmm__virtio_create(vm, &cfg.mmio, &balloon_ops, b,
                           virtio_features(cfg.features), cfg.queue_size,
                           &b->virtio, &dev);
  if (err < 0) {
    free(b);
    return err;
  }
  b->dev = dev;
  vmm__virtio_lock(b->virtio);
  memcpy(b->virtio->config + CFG_NUM_PAGES, initial, 4);
  vmm__virtio_unlock(b->virtio);
  if (cfg.stats_interval_ms != 0 &&
      (err = vmm_balloon_set_stats_interval(dev, cfg.stats_interval_ms)) < 0) {
    vmm_dev_detach(dev);
    return err;
  }
  if (out != NULL)
    *out = dev;
  return 0;
}

int vmm_balloon_set_target(vmm_dev *dev, uint64_t bytes) {
  struct balloon *b = balloon_of(dev);
  if (b == NULL)
    return VMM_EINVAL;
  int err = check_target(bytes);
  if (err < 0)
    return err;
  vmm__virtio_lock(b->virtio);
  uint32_t pages = (uint32_t)(bytes >> PFN_SHIFT);
  if (pages != b->target_pages) {
    b->target_pages = pages;
    cfg_set32(b, CFG_NUM_PAGES, pages);
    vmm__virtio_config_changed(b->virtio);
  }
  vmm__virtio_unlock(b->virtio);
  return 0;
}

int vmm_balloon_get_info(vmm_dev *dev, struct vmm_balloon_info *info) {
  struct balloon *b = balloon_of(dev);
  if (b == NULL || info == NULL)
    return VMM_EINVAL;
  vmm__virtio_lock(b->virtio);
  vmm_virtio *v = b->virtio;
  *info = (struct vmm_balloon_info){
      .target_bytes = (uint64_t)b->target_pages << PFN_SHIFT,
      .actual_bytes = (uint64_t)cfg_get32(b, CFG_ACTUAL) << PFN_SHIFT,
      .features = balloon_features(vmm__virtio_features(v)),
      .driver_ok = (v->status & VMM_VIRTIO_STATUS_DRIVER_OK) != 0,
      .needs_reset = (v->status & VMM_VIRTIO_STATUS_NEEDS_RESET) != 0,
      .inflated_pages = b->inflated,
      .deflated_pages = b->deflated,
      .reported_pages = b->reported,
      .rejected_pfns = b->rejected,
      .inflate_requests = b->inflate_requests,
      .deflate_requests = b->deflate_requests,
      .report_requests = b->report_requests,
      .work_ns = b->work_ns,
  };
  vmm__virtio_unlock(b->virtio);
  return 0;
}

int vmm_balloon_get_stats(vmm_dev *dev, struct vmm_balloon_stats *stats) {
  struct balloon *b = balloon_of(dev);
  if (b == NULL || stats == NULL)
    return VMM_EINVAL;
  vmm__virtio_lock(b->virtio);
  *stats = b->stats;
  vmm__virtio_unlock(b->virtio);
  return 0;
}

int vmm_balloon_request_stats(vmm_dev *dev) {
  struct balloon *b = balloon_of(dev);
  if (b == NULL)
    return VMM_EINVAL;
  vmm__virtio_lock(b->virtio);
  int err = request_stats_locked(b);
  vmm__virtio_unlock(b->virtio);
  return err;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */

static int add_slots(vmm_vm *vm, json_t *root) {
  struct vmm_mem_slot_info infos[VMM_MEM_MAX_SLOTS];
  size_t n = VMM__ARRAY_SIZE(infos);
  int err = vmm_mem_slot_list(vm, infos, &n);
  if (err < 0)
    return err;
  json_t *slots = json_array();
  if (slots == NULL || json_object_set_new(root, "slots", slots) < 0)
    return VMM_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    uint64_t resident;
    err = vmm_mem_slot_resident(vm, infos[i].id, &resident);
    if (err == VMM_ENOENT)
      continue; /* removed meanwhile */
    if (err < 0)
      return err;
    json_t *s = json_pack(
        "{s:I, s:I, s:I, s:I, s:b}", "id", (json_int_t)infos[i].id, "gpa",
        (json_int_t)infos[i].gpa, "size", (json_int_t)infos[i].size,
        "resident_bytes", (json_int_t)resident, "memfd", infos[i].fd >= 0);
    if (s == NULL || json_array_append_new(slots, s) < 0)
      return VMM_ENOMEM;
  }
  return 0;
}

/* Everything the host may want, as one new JSON object. */
static int op_stats(void *dev, json_t **out) {
  struct balloon *b = dev;
  struct vmm_balloon_info info;
  struct vmm_balloon_stats st;
  struct vmm_virtio_state vs;
  vmm_balloon_get_info(b->dev, &info);
  vmm_balloon_get_stats(b->dev, &st);
  vmm_virtio_get_state(b->dev, &vs);

  int err = VMM_ENOMEM;
  json_t *root = json_pack(
      "{s:s, s:I, s:I, s:b, s:b, s:s, s:{s:b, s:b, s:b}, "
      "s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
      "type", "virtio-balloon", "target_bytes", (json_int_t)info.target_bytes,
      "actual_bytes", (json_int_t)info.actual_bytes, "driver_ok",
      info.driver_ok, "needs_reset", info.needs_reset, "error",
      vmm_virtio_error_str(vs.error), "features", "stats",
      (info.features & VMM_BALLOON_F_STATS) != 0, "deflate_on_oom",
      (info.features & VMM_BALLOON_F_DEFLATE_ON_OOM) != 0, "reporting",
      (info.features & VMM_BALLOON_F_REPORTING) != 0, "host", "inflated_pages",
      (json_int_t)info.inflated_pages, "deflated_pages",
      (json_int_t)info.deflated_pages, "reported_pages",
      (json_int_t)info.reported_pages, "rejected_pfns",
      (json_int_t)info.rejected_pfns, "inflate_requests",
      (json_int_t)info.inflate_requests, "deflate_requests",
      (json_int_t)info.deflate_requests, "report_requests",
      (json_int_t)info.report_requests, "work_ns", (json_int_t)info.work_ns);
  if (root == NULL)
    return VMM_ENOMEM;
  json_t *stats = json_object();
  if (stats == NULL || json_object_set_new(root, "stats", stats) < 0)
    goto fail;
  for (unsigned t = 0; t < VMM_BALLOON_STAT__COUNT; t++)
    if ((st.valid & (1u << t)) &&
        json_object_set_new(stats, stat_names[t],
                            json_integer((json_int_t)st.values[t])) < 0)
      goto fail;
  if (json_object_set_new(root, "stats_updates",
                          json_integer((json_int_t)st.updates)) < 0)
    goto fail;
  if (st.time_ns != 0 &&
      json_object_set_new(
          root, "stats_age_ms",
          json_integer((json_int_t)((now_ns() - st.time_ns) / 1000000))) < 0)
    goto fail;
  if ((err = add_slots(b->vm, root)) < 0)
    goto fail;
  *out = root;
  return 0;
fail:
  json_decref(root);
  return err;
}

int vmm_balloon_stats_json(vmm_dev *dev, char **out) {
  struct balloon *b = balloon_of(dev);
  if (b == NULL || out == NULL)
    return VMM_EINVAL;
  json_t *root;
  int err = op_stats(b, &root);
  if (err < 0)
    return err;
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (s == NULL)
    return VMM_ENOMEM;
  /* jansson's allocator may not be malloc (json_set_alloc_funcs); the
     caller frees with free(). */
  *out = strdup(s);
  json_free_t jfree;
  json_get_alloc_funcs(NULL, &jfree);
  jfree(s);
  return *out != NULL ? 0 : VMM_ENOMEM;
}
