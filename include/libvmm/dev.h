/*
 * libvmm - the device interface.
 *
 * A device is an object attached to a VM: it claims port-I/O or MMIO ranges
 * through vmm_dev_io_register(), may raise interrupt lines with
 * vmm_dev_irq_set(), and may save and restore its state as JSON. The stock
 * devices (uart16550.h, exit_port.h, i8042.h, cmos_rtc.h, fw_cfg.h) are
 * built on exactly this interface, and a host program implements its own
 * devices the same way: fill a struct vmm_dev_ops and call vmm_dev_attach().
 *
 * Ownership: the VM owns its devices. vmm_dev_detach() or vmm_vm_destroy()
 * unregisters a device's ranges, drops the interrupt lines it asserts and
 * calls its destroy callback (devices are destroyed in reverse order of
 * attachment).
 *
 * Threads: I/O handlers run on the thread running the vCPU that made the
 * access (several at once on a VM with several vCPUs). Device backends that
 * wait for input (terminal, socket) run on the VM's event loop thread (see
 * loop.h). A device's state is therefore shared between threads and each
 * device protects it with its own lock. The interface's own calls are
 * thread-safe except where noted.
 *
 * Interrupts: devices raise "GSI n is at level l" with vmm_dev_irq_set().
 * The library ORs the levels of every device sharing a line (and the
 * host's, vmm_vm_irq_line()) and, when the line's level changes, forwards
 * it to the VM's interrupt controllers if it has some (VMM_VM_IRQCHIP:
 * KVM's in-kernel PIC and IOAPIC, or the library's user-space platform,
 * see vm.h), and to the host's interrupt handler if one is set. Without
 * either, the level is only recorded; vmm_vm_irq_get() reads it.
 *
 * JSON: save/restore/stats use jansson's json_t. The declarations below
 * only need the forward declaration; callers that use them include
 * <jansson.h>.
 */
#ifndef LIBVMM_DEV_H
#define LIBVMM_DEV_H

#include "common.h"
#include "io.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;

/** A device attached to a VM. */
typedef struct vmm_dev vmm_dev;

/** Longest device name, without the terminating NUL. */
#define VMM_DEV_NAME_MAX 63

/** Interrupt lines (GSIs) devices may drive: 0-15 ISA, 16-23 IOAPIC only. */
#define VMM_IRQ_LINES 24

/**
 * Device callbacks. Every callback gets the device first and the opaque
 * pointer given to vmm_dev_attach() last. Only realize and destroy are
 * required.
 */
struct vmm_dev_ops {
  /** sizeof(struct vmm_dev_ops) as the caller was compiled; lets fields be
      added later without breaking existing devices. */
  size_t size;
  /** Device type ("uart16550", "my-timer"); reported by vmm_dev_type(). */
  const char *type;
  /**
   * Claim ranges (vmm_dev_io_register()) and start whatever the device
   * needs. Called once, by vmm_dev_attach(), on its thread. A negative
   * return fails the attachment: ranges registered so far are removed and
   * destroy is called.
   */
  int (*realize)(vmm_dev *dev, void *opaque);
  /** Return to the power-on state (vmm_dev_reset(), vmm_dev_reset_all()).
      Optional. May run while vCPUs run: take the device's lock. */
  void (*reset)(vmm_dev *dev, void *opaque);
  /**
   * Release everything. Called once, after the device's ranges were
   * unregistered (no handler runs any more, none will), on the thread
   * calling vmm_dev_detach() or vmm_vm_destroy(), or from vmm_dev_attach()
   * when the attachment failed. dev is NULL only if vmm_dev_attach() could
   * not allocate the device.
   */
  void (*destroy)(vmm_dev *dev, void *opaque);
  /** Optional: store the device's guest-visible state in a new JSON object
      (*state receives a new reference). */
  int (*save)(vmm_dev *dev, struct json_t **state, void *opaque);
  /** Optional: load a state made by save. The input is untrusted (a
      snapshot file): validate all of it, and change nothing on error. */
  int (*restore)(vmm_dev *dev, const struct json_t *state, void *opaque);
  /** Optional: counters as a new JSON object of integers. */
  int (*stats)(vmm_dev *dev, struct json_t **stats, void *opaque);
};

/**
 * Attach a device to a VM.
 *
 * @param name    unique within the VM, 1..VMM_DEV_NAME_MAX printable ASCII
 *                characters without spaces; copied.
 * @param ops     callbacks; the table is copied (ops->size bytes).
 * @param opaque  passed to every callback and I/O handler of the device.
 *                Ownership passes to the device: whenever this call fails
 *                (and ops has a destroy callback) destroy is called before
 *                it returns, with dev NULL if the failure came before the
 *                device existed.
 * @param out     receives the device (may be NULL).
 * @return 0; -VMM_EINVAL for a bad vm, name or ops (NULL, size 0 or larger
 *         than this library's struct, realize or destroy missing);
 *         -VMM_EEXIST if the name is taken; -VMM_ESTATE from an I/O handler
 *         of the same VM; -VMM_ENOMEM; realize's error.
 * Thread-safe; not from the VM's I/O handlers.
 */
VMM_EXTERN int vmm_dev_attach(vmm_vm *vm, const char *name,
                              const struct vmm_dev_ops *ops, void *opaque,
                              vmm_dev **out);

/**
 * Detach and destroy a device: its ranges are unregistered (waiting for
 * handlers already running), the lines it asserts are released, then destroy
 * runs. NULL is accepted.
 * @return 0; -VMM_ESTATE when called from an I/O handler of the VM.
 */
VMM_EXTERN int vmm_dev_detach(vmm_dev *dev);

/** The device called name, or NULL. Thread-safe. */
VMM_EXTERN vmm_dev *vmm_dev_find(vmm_vm *vm, const char *name);

/**
 * The VM's devices in attachment order. Writes up to *count handles and
 * sets *count to the number of devices.
 * @return 0, or -VMM_E2BIG when the array was too small.
 */
VMM_EXTERN int vmm_dev_list(vmm_vm *vm, vmm_dev **devs, size_t *count);

/** Accessors. Valid until the device is detached. */
VMM_EXTERN const char *vmm_dev_name(const vmm_dev *dev);
VMM_EXTERN const char *vmm_dev_type(const vmm_dev *dev);
VMM_EXTERN vmm_vm *vmm_dev_vm(const vmm_dev *dev);
VMM_EXTERN void *vmm_dev_opaque(const vmm_dev *dev);

/**
 * Register an I/O handler on behalf of the device (same rules as
 * vmm_io_register()); it is unregistered automatically when the device
 * goes. Usually called from realize.
 */
VMM_EXTERN int vmm_dev_io_register(vmm_dev *dev, enum vmm_io_space space,
                                   uint64_t base, uint64_t len,
                                   vmm_io_handler_fn fn, void *opaque);

/**
 * Drive interrupt line gsi to level (true = asserted). A line is asserted
 * while any device asserts it. When its level changes the library forwards
 * it (see the top of this file). Thread-safe; may be called from handlers,
 * loop callbacks and with the device's own lock held.
 * @return 0; -VMM_EINVAL for gsi >= VMM_IRQ_LINES; the engine's error.
 */
VMM_EXTERN int vmm_dev_irq_set(vmm_dev *dev, uint32_t gsi, bool level);

/**
 * Interrupt handler: called each time a line changes level (driven by
 * devices or by vmm_vm_irq_line()),
 * on the thread that changed it, with the library's interrupt lock held
 * (calls are serialized and in order). It must not call vmm_dev_irq_set()
 * or into devices. Called whether or not the VM also has an engine
 * interrupt controller, so it can trace as well as deliver interrupts.
 */
typedef void (*vmm_irq_handler_fn)(vmm_vm *vm, uint32_t gsi, bool level,
                                   void *opaque);

/** Set (fn NULL: clear) the VM's interrupt handler. Thread-safe. */
VMM_EXTERN int vmm_vm_set_irq_handler(vmm_vm *vm, vmm_irq_handler_fn fn,
                                      void *opaque);

/**
 * Current level of a line (as the devices and the host drive it, whether
 * or not anything receives it). Thread-safe.
 * @return 0 or -VMM_EINVAL.
 */
VMM_EXTERN int vmm_vm_irq_get(vmm_vm *vm, uint32_t gsi, bool *level);

/** Reset one device, or every device of the VM in attachment order. */
VMM_EXTERN int vmm_dev_reset(vmm_dev *dev);
VMM_EXTERN int vmm_dev_reset_all(vmm_vm *vm);

/**
 * Save, restore, stats: see struct vmm_dev_ops. save and stats give the
 * caller a new reference (json_decref() it).
 * @return 0; -VMM_ENOTSUP when the device lacks the callback; the
 *         callback's error (restore: -VMM_EINVAL for a malformed state).
 */
VMM_EXTERN int vmm_dev_save(vmm_dev *dev, struct json_t **state);
VMM_EXTERN int vmm_dev_restore(vmm_dev *dev, const struct json_t *state);
VMM_EXTERN int vmm_dev_stats(vmm_dev *dev, struct json_t **stats);

#ifdef __cplusplus
}
#endif
#endif
