/*
 * libvmm - virtio over MMIO: what every virtio device of the library shares.
 *
 * The library's virtio devices (the memory balloon first, see balloon.h)
 * sit on the virtio-mmio transport: a 0x200-byte window of guest-physical
 * space with the control registers at 0x000-0x0ff and the device's
 * configuration space from 0x100, plus one interrupt line. They are
 * ordinary devices of the device interface (dev.h): the VM owns them,
 * vmm_dev_detach() removes one, vmm_dev_reset() resets it, vmm_dev_stats()
 * reports on it. Both register
 * layouts are implemented: the modern one (Version 2, virtio 1.x, feature
 * VIRTIO_F_VERSION_1 required) and the legacy one (Version 1: GuestPageSize,
 * QueueAlign and QueuePFN instead of 64-bit ring addresses). Queues are split
 * virtqueues. See docs/virtio.md.
 *
 * Everything the guest writes (registers, rings, descriptors, buffers) is
 * untrusted. A driver that breaks the protocol - rings or buffers outside
 * RAM, descriptor loops, out-of-range indices, lengths that overflow, bad
 * feature or status sequences - puts the device into an error state the
 * virtio way: the device sets DEVICE_NEEDS_RESET in its status, raises a
 * configuration-change interrupt (modern layout, after DRIVER_OK), stops
 * touching its queues and waits for the driver to reset it. The host sees
 * the reason in struct vmm_virtio_state.
 */
#ifndef LIBVMM_VIRTIO_H
#define LIBVMM_VIRTIO_H

#include "common.h"
#include "dev.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes of guest-physical address space one virtio-mmio device decodes. */
#define VMM_VIRTIO_MMIO_SIZE 0x200u

/** Device status bits (the Status register). */
enum vmm_virtio_status {
  VMM_VIRTIO_STATUS_ACKNOWLEDGE = 1u << 0,
  VMM_VIRTIO_STATUS_DRIVER = 1u << 1,
  VMM_VIRTIO_STATUS_DRIVER_OK = 1u << 2,
  VMM_VIRTIO_STATUS_FEATURES_OK = 1u << 3,
  VMM_VIRTIO_STATUS_NEEDS_RESET = 1u << 6,
  VMM_VIRTIO_STATUS_FAILED = 1u << 7,
};

/** Transport feature bit: the modern interface (required by Version 2). */
#define VMM_VIRTIO_F_VERSION_1 32

/** Why a device entered its error state (first error since the last reset). */
#define VMM_VIRTIO_ERROR_MAP(XX)                                               \
  XX(NONE, "no error")                                                         \
  XX(FEATURES, "driver features written after they were accepted")             \
  XX(STATUS, "driver cleared a status bit or set DRIVER_OK too early")         \
  XX(QUEUE_CONFIG, "invalid queue size or queue reconfigured while live")      \
  XX(RING_ADDRESS, "virtqueue ring outside guest RAM or misaligned")           \
  XX(AVAIL_INDEX, "available index moved by more than the queue size")         \
  XX(HEAD_INDEX, "available ring names a descriptor beyond the queue")         \
  XX(NEXT_INDEX, "descriptor chain continues beyond the queue")                \
  XX(CHAIN_LOOP, "descriptor chain longer than the queue (a loop)")            \
  XX(BUFFER_ADDRESS, "buffer outside guest RAM (or writable buffer in ROM)")   \
  XX(BUFFER_LENGTH, "buffer address + length or chain length overflows")       \
  XX(INDIRECT, "indirect descriptor without VIRTIO_F_INDIRECT_DESC")           \
  XX(DIRECTION, "buffer direction not what the device expects")                \
  XX(NOTIFY, "notification for a queue the device does not have")              \
  XX(REQUEST, "malformed device request")

enum vmm_virtio_error {
#define VMM__VIRTIO_ERR_ENUM(name, msg) VMM_VIRTIO_ERR_##name,
  VMM_VIRTIO_ERROR_MAP(VMM__VIRTIO_ERR_ENUM)
#undef VMM__VIRTIO_ERR_ENUM
      VMM_VIRTIO_ERR__COUNT
};

/** Describe an error state. Returns a static string, never NULL. */
VMM_EXTERN const char *vmm_virtio_error_str(enum vmm_virtio_error err);

/**
 * Where a virtio-mmio device lives and how it interrupts.
 *
 * Interrupts go through the device interface (vmm_dev_irq_set()): the line
 * is asserted while InterruptStatus is non-zero, and reaches the engine's
 * interrupt controller with VMM_VM_IRQCHIP and the host's handler
 * (vmm_vm_set_irq_handler()) if one is set; drivers may also poll
 * InterruptStatus. A new event while the line is already asserted lowers
 * and raises it again, so an edge-triggered routing sees every event.
 */
struct vmm_virtio_mmio_config {
  /** Device name in the VM (vmm_dev_find()); NULL: the device type's
      default ("balloon" for the balloon). Copied. */
  const char *name;
  /** Guest-physical base, VMM_VIRTIO_MMIO_SIZE aligned, outside RAM. */
  vmm_gpa_t base;
  /** Interrupt line, below VMM_IRQ_LINES. */
  uint32_t gsi;
  /** Register layout: 2 (modern, default) or 1 (legacy). */
  unsigned version;
};

/** Fill cfg with defaults: no name, base 0, gsi 5, version 2. */
VMM_EXTERN void vmm_virtio_mmio_config_init(struct vmm_virtio_mmio_config *cfg);

/** Snapshot of a device's transport state. */
struct vmm_virtio_state {
  uint32_t device_id;
  uint32_t version;
  /** enum vmm_virtio_status bits. */
  uint32_t status;
  uint32_t interrupt_status;
  bool irq_level;
  /** First error since the last reset, VMM_VIRTIO_ERR_NONE if none. */
  enum vmm_virtio_error error;
  uint64_t device_features;
  /** Features the driver wrote; final once FEATURES_OK (legacy: DRIVER_OK). */
  uint64_t driver_features;
  /** Counters since creation. */
  uint64_t notifications; /* QueueNotify writes */
  uint64_t interrupts;    /* events signalled to the driver */
  uint64_t errors;        /* times the device entered its error state */
  uint64_t bad_accesses;  /* register accesses of a wrong size or offset */
  uint64_t resets;        /* driver resets (Status written with 0) */
};

/**
 * Read the transport state of a virtio device (any of the library's).
 * Thread-safe.
 * @return 0, or -VMM_EINVAL for NULL arguments or a device that is not a
 *         virtio device.
 */
VMM_EXTERN int vmm_virtio_get_state(vmm_dev *dev,
                                    struct vmm_virtio_state *state);

/**
 * Write the Linux kernel parameter that makes a guest kernel probe this
 * virtio device, e.g. "virtio_mmio.device=0x200@0xd0000000:5", into buf
 * (always NUL-terminated when size > 0).
 * @return 0; -VMM_E2BIG if buf is too small; -VMM_EINVAL.
 */
VMM_EXTERN int vmm_virtio_mmio_cmdline(vmm_dev *dev, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
