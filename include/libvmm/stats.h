/*
 * libvmm - run statistics: where each vCPU's time went and why it exited.
 *
 * Every vCPU counts, inside vmm_vcpu_run(), always (the counters cost two
 * TSC reads and a few stores per exit, well under 1% of the cheapest exit):
 *   - calls of vmm_vcpu_run();
 *   - exits by reason: every exit the engine reported, including the ones
 *     registered handlers served without returning, and the STOPPED and
 *     SYSTEM exits made when a kick or a system event is honoured
 *     (VMM_EXIT_NONE counts re-entries after a kick or a newly pending
 *     interrupt);
 *   - port-I/O and MMIO exits served by registered handlers;
 *   - time: the whole of vmm_vcpu_run(), inside the engine's run (guest
 *     code plus the engine's own entry and exit work: for KVM the KVM_RUN
 *     ioctl, for BT translation and execution), in I/O handlers (with
 *     their dispatch; sampled for fast handlers of the port accesses BT
 *     serves inside its run, see io_ns), and in the VM's exit handler.
 *     What is left of the total is the front end's own work.
 * Times are measured with the TSC and converted to nanoseconds with the
 * TSC rate measured over the VM's lifetime against CLOCK_MONOTONIC (so no
 * calibration delay is ever paid; tsc_hz reports the rate used).
 *
 * The VM also counts, per registered port-I/O and MMIO range, the accesses
 * dispatched to it. vmm_vm_stats_json() gathers everything, with the
 * engine, why it was chosen and the devices' own counters, as one JSON
 * object (see docs/stats.md for its layout).
 *
 * Threading: the counters are written by the thread running the vCPU and
 * may be read from any thread at any time (a read during a run sees a
 * consistent value of each counter, not a snapshot of all of them).
 * Resetting requires the vCPU not to be running.
 */
#ifndef LIBVMM_STATS_H
#define LIBVMM_STATS_H

#include "common.h"
#include "vcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;

/** Slots of vmm_vcpu_stats.exits: indexed by enum vmm_exit_reason. */
#define VMM_STATS_REASONS 16

/**
 * Counters of one vCPU (or their sum over a VM). Fill size with
 * vmm_vcpu_stats_init() before vmm_vcpu_stats_get(): fields may be added
 * later.
 */
struct vmm_vcpu_stats {
  /** Set by vmm_vcpu_stats_init(); do not change. */
  size_t size;
  /** Calls of vmm_vcpu_run() (including those that returned an error). */
  uint64_t runs;
  /** Exits by enum vmm_exit_reason (see the top of this file).
      exits[VMM_EXIT_NONE]: re-entries after a kick or a new interrupt. */
  uint64_t exits[VMM_STATS_REASONS];
  /** Port-I/O / MMIO exits served entirely by registered handlers. */
  uint64_t io_handled, mmio_handled;
  /** Nanoseconds: inside vmm_vcpu_run(), inside the engine's run, in
      registered I/O handlers, in the VM's exit handler. For port accesses
      an engine serves inside its run (BT), io_ns of fast handlers is
      estimated from a random sixteenth of their accesses (docs/stats.md);
      slow handlers are timed on every access. */
  uint64_t run_ns, guest_ns, io_ns, exit_handler_ns;
  /** TSC rate used for the conversion, in Hz. */
  uint64_t tsc_hz;
};

/** Fill st with zeros and its size. */
VMM_EXTERN void vmm_vcpu_stats_init(struct vmm_vcpu_stats *st);

/**
 * Read a vCPU's counters. Thread-safe, also while the vCPU runs.
 * @param st  initialized with vmm_vcpu_stats_init().
 * @return 0; -VMM_EINVAL for a NULL argument or a bad st->size.
 */
VMM_EXTERN int vmm_vcpu_stats_get(vmm_vcpu *vcpu, struct vmm_vcpu_stats *st);

/**
 * The sum of the counters of every vCPU of the VM (runs, exits and times
 * add up; tsc_hz is the VM's). Thread-safe.
 * @return 0 or -VMM_EINVAL.
 */
VMM_EXTERN int vmm_vm_stats_get(vmm_vm *vm, struct vmm_vcpu_stats *st);

/**
 * Set a vCPU's counters to zero.
 * @return 0; -VMM_EBUSY while a thread is inside vmm_vcpu_run() for it
 *         (the counters are its thread's to write); -VMM_EINVAL.
 */
VMM_EXTERN int vmm_vcpu_stats_reset(vmm_vcpu *vcpu);

/**
 * Set every counter of the VM to zero: each vCPU's and each I/O range's.
 * @return 0; -VMM_EBUSY (and nothing is reset) while one of its vCPUs
 *         runs; -VMM_EINVAL.
 */
VMM_EXTERN int vmm_vm_stats_reset(vmm_vm *vm);

/**
 * Everything as a new JSON object (*out receives a new reference; the
 * caller json_decref()s it): "engine", "engine_reason", "tsc_hz",
 * "vcpus" (one object per vCPU), "total", "io" (per registered range, with
 * the owning device's name) and "devices" (each device's own stats
 * callback). docs/stats.md describes every member. Thread-safe; must not
 * be called from the VM's I/O handlers (device stats take device locks).
 * @return 0; -VMM_EINVAL; -VMM_ENOMEM.
 */
VMM_EXTERN int vmm_vm_stats_json(vmm_vm *vm, struct json_t **out);

/**
 * Short lower-case name of an exit reason ("io", "mmio", "hlt",
 * "shutdown", "fault", "debug", "internal_error", "stopped",
 * "insn_limit", "system"; "none" for VMM_EXIT_NONE), as used in the JSON
 * statistics; "unknown" for other values. Never NULL.
 */
VMM_EXTERN const char *vmm_exit_reason_name(unsigned reason);

#ifdef __cplusplus
}
#endif
#endif
