/*
 * libvmm - the virtio memory balloon.
 *
 * A balloon lets the host take memory back from a guest: the host sets a
 * target, the guest's balloon driver (Linux, Windows and BSD have one) picks
 * pages it will not use and hands their frame numbers to the device, and the
 * device gives those pages back to the host OS (hole punching for the
 * library's memfd-backed RAM, MADV_REMOVE or MADV_DONTNEED for caller
 * memory, see vmm_mem_discard()). When the target goes down the guest takes
 * pages back and they are faulted in again, zero-filled, on first use.
 *
 * The device is virtio-balloon (device ID 5) on virtio-mmio (virtio.h) and
 * offers VIRTIO_F_VERSION_1, VIRTIO_BALLOON_F_STATS_VQ (guest memory
 * statistics), VIRTIO_BALLOON_F_DEFLATE_ON_OOM and
 * VIRTIO_BALLOON_F_PAGE_REPORTING (the guest reports free pages, which are
 * discarded the same way). Frame numbers are always 4 KiB units. Frame
 * numbers outside guest RAM, or in read-only slots, are rejected (counted,
 * not touched). See docs/balloon.md.
 *
 * The balloon is a device of the device interface (dev.h): the VM owns it
 * and destroys it with itself, vmm_dev_detach() removes it earlier,
 * vmm_dev_stats() gives the same JSON object as vmm_balloon_stats_json().
 * The functions below take the balloon's vmm_dev and return -VMM_EINVAL
 * for any other device.
 *
 * Threading: every function here is thread-safe. The device's work happens
 * on the thread that runs the vCPU whose MMIO write notified it, inside
 * that MMIO exit: a request's discards delay that vCPU (Linux sends 256
 * frames per request, about a millisecond of work).
 */
#ifndef LIBVMM_BALLOON_H
#define LIBVMM_BALLOON_H

#include "common.h"
#include "virtio.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Optional balloon features the device offers (struct field `features`). */
enum vmm_balloon_features {
  /** Statistics virtqueue (VIRTIO_BALLOON_F_STATS_VQ). */
  VMM_BALLOON_F_STATS = 1u << 0,
  /** Guest may deflate on out-of-memory (VIRTIO_BALLOON_F_DEFLATE_ON_OOM). */
  VMM_BALLOON_F_DEFLATE_ON_OOM = 1u << 1,
  /** Free page reporting virtqueue (VIRTIO_BALLOON_F_PAGE_REPORTING). */
  VMM_BALLOON_F_REPORTING = 1u << 2,
  VMM_BALLOON_F_ALL = 0x7u,
};

/** Guest statistics tags, as defined by virtio and Linux. */
enum vmm_balloon_stat {
  VMM_BALLOON_STAT_SWAP_IN = 0,          /* bytes swapped in */
  VMM_BALLOON_STAT_SWAP_OUT = 1,         /* bytes swapped out */
  VMM_BALLOON_STAT_MAJOR_FAULTS = 2,     /* count */
  VMM_BALLOON_STAT_MINOR_FAULTS = 3,     /* count */
  VMM_BALLOON_STAT_FREE_MEMORY = 4,      /* bytes */
  VMM_BALLOON_STAT_TOTAL_MEMORY = 5,     /* bytes */
  VMM_BALLOON_STAT_AVAILABLE = 6,        /* bytes available without swapping */
  VMM_BALLOON_STAT_DISK_CACHES = 7,      /* bytes */
  VMM_BALLOON_STAT_HUGETLB_ALLOC = 8,    /* count */
  VMM_BALLOON_STAT_HUGETLB_FAIL = 9,     /* count */
  VMM_BALLOON_STAT_OOM_KILLS = 10,       /* count (Linux extension) */
  VMM_BALLOON_STAT_ALLOC_STALLS = 11,    /* count (Linux extension) */
  VMM_BALLOON_STAT_ASYNC_SCANS = 12,     /* bytes (Linux extension) */
  VMM_BALLOON_STAT_DIRECT_SCANS = 13,    /* bytes (Linux extension) */
  VMM_BALLOON_STAT_ASYNC_RECLAIMS = 14,  /* bytes (Linux extension) */
  VMM_BALLOON_STAT_DIRECT_RECLAIMS = 15, /* bytes (Linux extension) */
  VMM_BALLOON_STAT__COUNT = 16,
};

/** Name of a statistic ("free-memory", ...), NULL for an unknown tag. */
VMM_EXTERN const char *vmm_balloon_stat_name(unsigned tag);

/** The guest's latest statistics. */
struct vmm_balloon_stats {
  /** Bit i set: values[i] was reported by the guest. */
  uint32_t valid;
  uint32_t padding;
  uint64_t values[VMM_BALLOON_STAT__COUNT];
  /** Statistics buffers received since the device was created. */
  uint64_t updates;
  /** CLOCK_MONOTONIC time of the last update, nanoseconds (0: never). */
  uint64_t time_ns;
};

/**
 * Statistics callback: the guest delivered a statistics buffer. Runs
 * without the device lock held, on a thread that was inside the device -
 * normally the vCPU thread whose notification delivered the buffer. It may
 * call any vmm_balloon_* function (not vmm_dev_detach() of the balloon).
 */
typedef void (*vmm_balloon_stats_fn)(vmm_dev *balloon,
                                     const struct vmm_balloon_stats *stats,
                                     void *opaque);

/** Balloon configuration; fill with vmm_balloon_config_init() first. */
struct vmm_balloon_config {
  /** Set by vmm_balloon_config_init(); do not change. */
  size_t size;
  /** Placement, interrupt and register layout of the device. */
  struct vmm_virtio_mmio_config mmio;
  /** enum vmm_balloon_features offered to the driver. Default: all. */
  uint32_t features;
  /** Entries per virtqueue (power of two, 2..1024). Default 256. */
  uint16_t queue_size;
  /** Initial target, in bytes (multiple of 4096). Default 0. */
  uint64_t target_bytes;
  /** Statistics callback (optional). */
  vmm_balloon_stats_fn stats_fn;
  void *stats_opaque;
  /**
   * Ask the guest for fresh statistics every stats_interval_ms (0: never;
   * vmm_balloon_request_stats() still works). The timer runs on the VM's
   * event loop (vmm_vm_get_loop(): a threaded one is created if the VM has
   * none; see loop.h).
   */
  unsigned stats_interval_ms;
};

/** Fill cfg with defaults (base 0xd0000000, gsi 5, version 2). */
VMM_EXTERN void vmm_balloon_config_init(struct vmm_balloon_config *cfg);

/**
 * Create a balloon device and attach it to the VM.
 *
 * @param out  receives the device (may be NULL; vmm_dev_find() finds it by
 *             name).
 * @return 0; -VMM_EINVAL for a bad configuration (unknown features, queue
 *         size, version, gsi); -VMM_EALIGN for a misaligned base or target;
 *         -VMM_EOVERLAP if the MMIO window overlaps RAM or another range;
 *         -VMM_ERANGE for a target above 2^32 pages; -VMM_EEXIST if the
 *         name is taken; -VMM_ENOMEM; loop errors when polling is asked for.
 * Not from the VM's I/O handlers.
 */
VMM_EXTERN int vmm_balloon_create(vmm_vm *vm,
                                  const struct vmm_balloon_config *cfg,
                                  vmm_dev **out);

/**
 * Set the balloon's target size: how many bytes the host wants the guest
 * to give up (virtio's num_pages * 4096). The guest is told with a
 * configuration-change interrupt once its driver is running.
 * @return 0; -VMM_EALIGN unless a multiple of 4096; -VMM_ERANGE above
 *         2^32 pages; -VMM_EINVAL.
 */
VMM_EXTERN int vmm_balloon_set_target(vmm_dev *balloon, uint64_t bytes);

/** Host-side view of the balloon. */
struct vmm_balloon_info {
  /** Target set by the host. */
  uint64_t target_bytes;
  /** Balloon size the guest reports (virtio's `actual`; guest-written). */
  uint64_t actual_bytes;
  /** enum vmm_balloon_features the driver accepted. */
  uint32_t features;
  bool driver_ok;
  /** The device is in its error state (vmm_virtio_get_state says why). */
  bool needs_reset;
  /** Counted by the device since creation, in 4 KiB pages. */
  uint64_t inflated_pages; /* given to the balloon and discarded */
  uint64_t deflated_pages; /* taken back by the guest */
  uint64_t reported_pages; /* free pages reported and discarded */
  uint64_t rejected_pfns;  /* frame numbers outside writable RAM */
  /** Requests (descriptor chains) handled per queue. */
  uint64_t inflate_requests, deflate_requests, report_requests;
  /** Host time spent handling inflate, deflate and free page report
      requests (reading frame lists, discarding), nanoseconds. */
  uint64_t work_ns;
};

/** Read the host-side view. @return 0 or -VMM_EINVAL. */
VMM_EXTERN int vmm_balloon_get_info(vmm_dev *balloon,
                                    struct vmm_balloon_info *info);

/** Copy the latest guest statistics. @return 0 or -VMM_EINVAL. */
VMM_EXTERN int vmm_balloon_get_stats(vmm_dev *balloon,
                                     struct vmm_balloon_stats *stats);

/**
 * Ask the guest for fresh statistics now: the device returns the buffer it
 * holds and interrupts; the driver refills it and the callback runs when it
 * comes back. @return 0; -VMM_EAGAIN if the driver is not running (or is
 * in the error state), or holds no buffer with the device (not posted yet,
 * or a request is in flight); -VMM_ENOTSUP if the running driver did not
 * accept the statistics queue.
 */
VMM_EXTERN int vmm_balloon_request_stats(vmm_dev *balloon);

/**
 * Change the polling interval in milliseconds (0 stops polling); the
 * timer runs on the VM's loop, created if the VM has none.
 * @return 0; -VMM_EINVAL; loop errors (vmm_vm_get_loop()).
 */
VMM_EXTERN int vmm_balloon_set_stats_interval(vmm_dev *balloon, unsigned ms);

/**
 * Everything above as a JSON object (target, actual, features, counters,
 * statistics by name, and each memory slot with its host resident size).
 * *json receives a NUL-terminated string the caller frees with free().
 * @return 0, -VMM_ENOMEM or a vmm_mem_slot_resident() error.
 */
VMM_EXTERN int vmm_balloon_stats_json(vmm_dev *balloon, char **json);

#ifdef __cplusplus
}
#endif
#endif
