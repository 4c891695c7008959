/*
 * virtio-mmio transport and split virtqueues: the interface between the
 * transport (lib/io/virtio_mmio.c, virtqueue.c) and the device models built
 * on it (lib/balloon/, later console, block, ...). See docs/virtio.md.
 *
 * A virtio device is a device of the device interface (dev.h): create
 * attaches it, vmm_dev_detach() or the VM's destruction removes it and
 * frees the model through ops->destroy.
 *
 * Locking: a device has one mutex. The transport takes it for every guest
 * register access and calls the model's ops with it held; model code
 * called from elsewhere (host API threads, timers) takes it with
 * vmm__virtio_lock(). Every vmm__virtq_* and vmm__virtio_* function below
 * except create, _of and lock expects the lock held.
 */
#ifndef LIBVMM_IO_VIRTIO_INTERNAL_H
#define LIBVMM_IO_VIRTIO_INTERNAL_H

#include <libvmm/vmm.h>
#include <pthread.h>

#define VMM__VIRTIO_MAX_QUEUES 8
/* Largest split-ring size the spec allows. */
#define VMM__VIRTQ_MAX_SIZE 32768
/* Device-specific configuration space we can hold. */
#define VMM__VIRTIO_CONFIG_MAX 256

#define VMM__VIRTIO_MAGIC 0x74726976u  /* "virt" */
#define VMM__VIRTIO_VENDOR 0x4d4d564cu /* "LVMM" */

/* Register offsets (virtio 1.x section 4.2.2, legacy section 4.2.4). */
enum {
  VMM__VIRTIO_MMIO_MAGIC = 0x000,
  VMM__VIRTIO_MMIO_VERSION = 0x004,
  VMM__VIRTIO_MMIO_DEVICE_ID = 0x008,
  VMM__VIRTIO_MMIO_VENDOR_ID = 0x00c,
  VMM__VIRTIO_MMIO_DEVICE_FEATURES = 0x010,
  VMM__VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014,
  VMM__VIRTIO_MMIO_DRIVER_FEATURES = 0x020,
  VMM__VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024,
  VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE = 0x028, /* legacy */
  VMM__VIRTIO_MMIO_QUEUE_SEL = 0x030,
  VMM__VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034,
  VMM__VIRTIO_MMIO_QUEUE_NUM = 0x038,
  VMM__VIRTIO_MMIO_QUEUE_ALIGN = 0x03c, /* legacy */
  VMM__VIRTIO_MMIO_QUEUE_PFN = 0x040,   /* legacy */
  VMM__VIRTIO_MMIO_QUEUE_READY = 0x044,
  VMM__VIRTIO_MMIO_QUEUE_NOTIFY = 0x050,
  VMM__VIRTIO_MMIO_INTERRUPT_STATUS = 0x060,
  VMM__VIRTIO_MMIO_INTERRUPT_ACK = 0x064,
  VMM__VIRTIO_MMIO_STATUS = 0x070,
  VMM__VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080,
  VMM__VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084,
  VMM__VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090,
  VMM__VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094,
  VMM__VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0,
  VMM__VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4,
  VMM__VIRTIO_MMIO_SHM_SEL = 0x0ac,
  VMM__VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0,
  VMM__VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4,
  VMM__VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8,
  VMM__VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc,
  VMM__VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc,
  VMM__VIRTIO_MMIO_CONFIG = 0x100,
};

/* InterruptStatus bits. */
#define VMM__VIRTIO_INT_VRING 1u
#define VMM__VIRTIO_INT_CONFIG 2u

/* Split-ring flags. */
#define VMM__VIRTQ_DESC_F_NEXT 1u
#define VMM__VIRTQ_DESC_F_WRITE 2u
#define VMM__VIRTQ_DESC_F_INDIRECT 4u
#define VMM__VIRTQ_AVAIL_F_NO_INTERRUPT 1u

/* One descriptor of a chain, validated: [gpa, gpa+len) is guest RAM. */
struct vmm__virtq_buf {
  vmm_gpa_t gpa;
  uint32_t len;
  bool writable;
};

/*
 * A descriptor chain popped from a queue. bufs points into the queue's own
 * array and stays valid until the next pop on that queue. Device-readable
 * buffers come first (the driver must order them so; violations are
 * VMM_VIRTIO_ERR_DIRECTION).
 */
struct vmm__virtq_chain {
  uint16_t head;
  uint16_t count;
  uint32_t readable; /* total bytes of device-readable buffers */
  uint32_t writable; /* total bytes of device-writable buffers */
  const struct vmm__virtq_buf *bufs;
};

struct vmm__virtq {
  /* Driver-programmed registers. */
  uint32_t num;
  uint64_t desc, avail, used;
  uint32_t legacy_align, legacy_pfn;
  bool ready;
  /* Device-side ring state, valid while ready. */
  uint16_t last_avail;
  uint16_t used_idx;
  struct vmm__virtq_buf *bufs; /* max-size entries, allocated at create */
};

struct json_t;

/*
 * A device model. model is the model's own object. Every op except destroy
 * and stats runs with the transport lock held and may use the vmm__virtq_*
 * functions.
 */
struct vmm__virtio_ops {
  /* Device type for vmm_dev_type() ("virtio-balloon"); default name. */
  const char *type;
  const char *default_name;
  uint32_t device_id;
  /* Bytes of device configuration space (<= VMM__VIRTIO_CONFIG_MAX). */
  uint32_t config_size;
  /*
   * Size limit of queue q (0: the queue does not exist), given the
   * features the driver wrote. Real drivers number optional queues
   * compactly after the ones they use, so the answer may depend on them.
   */
  uint16_t (*queue_max)(void *model, unsigned q, uint64_t driver_features);
  /* The driver made buffers available in queue q (DRIVER_OK is set). */
  void (*notify)(void *model, unsigned q);
  /* The driver wrote config bytes [off, off+len) (already stored). */
  void (*config_write)(void *model, uint32_t off, uint32_t len);
  /* The driver set DRIVER_OK. Optional. */
  void (*activate)(void *model);
  /* The device was reset, by the driver or the host (transport state
     already cleared). */
  void (*reset)(void *model);
  /*
   * Optional: runs after the transport dropped the lock at the end of a
   * guest access or vmm__virtio_unlock(), on the same thread, so the model
   * can call host callbacks without holding the lock.
   */
  void (*unlocked)(void *model);
  /* The device is gone (detached or its VM destroyed): free the model. No
     guest access can reach it any more. Not under the lock. */
  void (*destroy)(void *model);
  /* Optional: counters for vmm_dev_stats(), a new JSON object. Not under
     the lock. */
  int (*stats)(void *model, struct json_t **out);
};

/* Internal only: hosts see virtio devices as vmm_dev. */
typedef struct vmm_virtio vmm_virtio;

struct vmm_virtio {
  vmm_vm *vm;
  vmm_dev *dev; /* the device-interface object, set by realize */
  pthread_mutex_t lock;
  const struct vmm__virtio_ops *ops;
  void *model;
  bool attached; /* the model belongs to the device now */
  struct vmm_virtio_mmio_config cfg;

  uint64_t device_features;
  uint64_t driver_features;
  uint32_t device_features_sel, driver_features_sel;
  uint32_t status;
  uint32_t isr;
  uint32_t queue_sel;
  uint32_t guest_page_size; /* legacy */
  uint32_t config_generation;
  uint32_t shm_sel;
  bool irq_level;
  bool irq_error_logged;
  enum vmm_virtio_error error;

  uint16_t queue_size_max; /* allocation bound for every queue */
  struct vmm__virtq q[VMM__VIRTIO_MAX_QUEUES];
  uint8_t config[VMM__VIRTIO_CONFIG_MAX];

  uint64_t notifications, interrupts, errors, bad_accesses, resets;
};

/*
 * Create a virtio-mmio device for a model and attach it to the VM through
 * the device interface (name: cfg->name or ops->default_name). features:
 * device-specific feature bits offered (VERSION_1 is added for the modern
 * layout). queue_size_max bounds every queue. On success the device owns
 * the model (ops->destroy frees it when the device goes); on failure the
 * caller still owns it. *out_dev may be NULL.
 */
int vmm__virtio_create(vmm_vm *vm, const struct vmm_virtio_mmio_config *cfg,
                       const struct vmm__virtio_ops *ops, void *model,
                       uint64_t features, uint16_t queue_size_max,
                       vmm_virtio **out, vmm_dev **out_dev);

/* The transport of a virtio device, or NULL for any other device. */
vmm_virtio *vmm__virtio_of(const vmm_dev *dev);

/* One guest access to the device window; what the MMIO handler does. */
void vmm__virtio_mmio_access(vmm_virtio *v, uint64_t off, void *data,
                             uint32_t len, bool is_write);

void vmm__virtio_lock(vmm_virtio *v);
/* Drops the lock, then runs ops->unlocked. */
void vmm__virtio_unlock(vmm_virtio *v);

/* Features both sides agreed on (what the driver wrote, masked). */
uint64_t vmm__virtio_features(const vmm_virtio *v);
/* DRIVER_OK set and not in the error state: queues may be processed. */
bool vmm__virtio_live(const vmm_virtio *v);
/* Enter the error state (first reason wins until reset). */
void vmm__virtio_fail(vmm_virtio *v, enum vmm_virtio_error err, const char *fmt,
                      ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* The device changed its config space: new generation, interrupt. */
void vmm__virtio_config_changed(vmm_virtio *v);

/*
 * Pop the next available chain of queue q. Returns 1 with *chain filled, 0
 * when the queue is empty, not ready or the device is not live, or a
 * negative code after putting the device into its error state.
 */
int vmm__virtq_pop(vmm_virtio *v, unsigned q, struct vmm__virtq_chain *chain);
/* Return chain head to the driver with len bytes written. */
int vmm__virtq_push(vmm_virtio *v, unsigned q, uint16_t head, uint32_t len);
/* Signal used buffers of queue q unless the driver suppressed it. */
void vmm__virtq_signal(vmm_virtio *v, unsigned q);
/*
 * Copy from the device-readable bytes of a chain, starting at byte off of
 * them, or into its device-writable bytes. Returns 0, or -VMM_ERANGE if
 * the chain is too short, or -VMM_ENOMAP if the memory went away.
 */
int vmm__virtq_read(vmm_virtio *v, const struct vmm__virtq_chain *chain,
                    uint32_t off, void *buf, uint32_t len);
int vmm__virtq_write(vmm_virtio *v, const struct vmm__virtq_chain *chain,
                     uint32_t off, const void *buf, uint32_t len);

/* Transport internals shared by virtio_mmio.c and virtqueue.c. */
int vmm__virtq_enable(vmm_virtio *v, unsigned q);
void vmm__virtio_raise(vmm_virtio *v, uint32_t isr_bits);

#endif
