/*
 * virtio-mmio transport and split virtqueues (lib/io/virtio_mmio.c,
 * virtqueue.c), driven through the VM's MMIO bus by the host-side driver in
 * virtio_driver.h, with a small echo device on top. Each malformed-queue
 * case checks the error state it must produce and that the device then
 * leaves the rings alone until a reset. No vCPU runs, but the VM (and its
 * memory) is the engine's: test_virtio [kvm|bt].
 */
#include "testutil.h"
#include "virtio_driver.h"

#define BASE 0xd0000000ull
#define RAM_SIZE 0x100000ull /* 1 MiB at 0 */
#define ROM_GPA 0x100000ull  /* 64 KiB read-only after it */
#define ROM_SIZE 0x10000ull
#define Q0 0x10000ull /* queue memory */
#define Q1 0x20000ull
#define BUF 0x40000ull /* data buffers */

/* ------------------------------------------------------------------------ */
/* The echo device: queue 0 copies readable bytes, inverted, into the
   writable ones; queue 1 exists only when the driver accepted feature 0. */

struct echo {
  vmm_virtio *v;
  vmm_dev *dev;
  unsigned destroyed;
  unsigned requests;
  unsigned resets;
  unsigned notifies_q1;
};

static uint16_t echo_queue_max(void *dev, unsigned q, uint64_t features) {
  (void)dev;
  if (q == 0)
    return 16;
  if (q == 1 && (features & 1))
    return 16;
  return 0;
}

static void echo_notify(void *dev, unsigned q) {
  struct echo *e = dev;
  struct vmm__virtq_chain c;
  if (q == 1) {
    e->notifies_q1++;
    return;
  }
  bool used = false;
  while (vmm__virtq_pop(e->v, q, &c) > 0) {
    uint8_t buf[256];
    uint32_t n = c.readable < sizeof(buf) ? c.readable : sizeof(buf);
    if (n > c.writable)
      n = c.writable;
    assert_int_equal(vmm__virtq_read(e->v, &c, 0, buf, n), 0);
    for (uint32_t i = 0; i < n; i++)
      buf[i] ^= 0xff;
    assert_int_equal(vmm__virtq_write(e->v, &c, 0, buf, n), 0);
    assert_int_equal(vmm__virtq_push(e->v, q, c.head, n), 0);
    e->requests++;
    used = true;
  }
  if (used)
    vmm__virtq_signal(e->v, q);
}

static void echo_reset(void *dev) {
  struct echo *e = dev;
  e->resets++;
}

static void echo_config_write(void *dev, uint32_t off, uint32_t len) {
  (void)dev, (void)off, (void)len;
}

static void echo_destroy(void *dev) {
  struct echo *e = dev;
  e->destroyed++;
}

static const struct vmm__virtio_ops echo_ops = {
    .type = "virtio-echo",
    .default_name = "echo",
    .destroy = echo_destroy,
    .device_id = 0x7e,
    .config_size = 8,
    .queue_max = echo_queue_max,
    .notify = echo_notify,
    .config_write = echo_config_write,
    .reset = echo_reset,
};

/* ------------------------------------------------------------------------ */
/* Fixture                                                                  */

struct fixture {
  vmm_vm *vm;
  struct echo echo;
  struct vd d;
  unsigned irq_calls;
  bool irq_level;
};

/* The VM's interrupt handler: sees every level change of every line. */
static void irq_hook(vmm_vm *vm, uint32_t gsi, bool level, void *opaque) {
  struct fixture *f = opaque;
  (void)vm;
  if (gsi != 5)
    return;
  f->irq_calls++;
  f->irq_level = level;
}

static int make(void **state, unsigned version, bool with_irq_hook) {
  struct fixture *f = calloc(1, sizeof(*f));
  f->vm = vmmt_vm_create(1, 0);
  assert_int_equal(vmm_mem_slot_add(f->vm, 0, RAM_SIZE, NULL, 0, NULL), 0);
  assert_int_equal(
      vmm_mem_slot_add(f->vm, ROM_GPA, ROM_SIZE, NULL, VMM_MEM_READONLY, NULL),
      0);
  if (with_irq_hook)
    assert_ok(vmm_vm_set_irq_handler(f->vm, irq_hook, f));
  struct vmm_virtio_mmio_config mc;
  vmm_virtio_mmio_config_init(&mc);
  mc.base = BASE;
  mc.version = version;
  assert_ok(vmm__virtio_create(f->vm, &mc, &echo_ops, &f->echo, 0x3, 16,
                               &f->echo.v, &f->echo.dev));
  assert_string_equal(vmm_dev_name(f->echo.dev), "echo");
  assert_string_equal(vmm_dev_type(f->echo.dev), "virtio-mmio");
  f->d = (struct vd){f->vm, BASE};
  *state = f;
  return 0;
}

static int setup_modern(void **state) {
  return make(state, 2, true);
}
static int setup_legacy(void **state) {
  return make(state, 1, true);
}
static int setup_no_hook(void **state) {
  return make(state, 2, false);
}

static int teardown(void **state) {
  struct fixture *f = *state;
  if (f == NULL)
    return 0;
  /* The VM owns the device: destroying it destroys the model too. */
  assert_ok(vmm_vm_destroy(f->vm));
  assert_int_equal(f->echo.destroyed, 1);
  free(f);
  return 0;
}

static struct vmm_virtio_state state_of(struct fixture *f) {
  struct vmm_virtio_state st;
  assert_int_equal(vmm_virtio_get_state(f->echo.dev, &st), 0);
  return st;
}

#define F_V1 (1ull << VMM_VIRTIO_F_VERSION_1)

/* Bring the device up with queue 0 at Q0, feature bits `features`. */
static void up(struct fixture *f, struct vq_drv *q, uint64_t features) {
  uint32_t st = vd_negotiate(&f->d, features);
  if (vd_r32(&f->d, VMM__VIRTIO_MMIO_VERSION) == 2)
    assert_true(st & VMM_VIRTIO_STATUS_FEATURES_OK);
  vq_setup(&f->d, q, 0, 16, Q0);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
}

static void expect_error(struct fixture *f, enum vmm_virtio_error err) {
  struct vmm_virtio_state st = state_of(f);
  if (st.error != err)
    fail_msg("error state %s, expected %s", vmm_virtio_error_str(st.error),
             vmm_virtio_error_str(err));
  assert_true(st.status & VMM_VIRTIO_STATUS_NEEDS_RESET);
  assert_true(vd_status(&f->d) & VMM_VIRTIO_STATUS_NEEDS_RESET);
}

/* After an error: a well-formed request is ignored until reset, then the
   device works again. */
static void expect_dead_then_recover(struct fixture *f, struct vq_drv *q) {
  unsigned before = f->echo.requests;
  uint16_t used = vq_used_idx(&f->d, q);
  vq_kick(&f->d, q);
  assert_int_equal(f->echo.requests, before);
  assert_int_equal(vq_used_idx(&f->d, q), used);

  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  assert_int_equal(vd_status(&f->d), 0);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  up(f, q, F_V1);
  vmm_mem_write(f->vm, BUF, "abc", 3);
  struct vd_buf b[2] = {{BUF, 3, false}, {BUF + 0x100, 3, true}};
  vq_add(&f->d, q, b, 2);
  vq_kick(&f->d, q);
  assert_int_equal(f->echo.requests, before + 1);
}

/* ------------------------------------------------------------------------ */
/* Registers and negotiation                                                */

static void test_registers_modern(void **state) {
  struct fixture *f = *state;
  assert_int_equal(vd_r32(&f->d, 0x000), 0x74726976);
  assert_int_equal(vd_r32(&f->d, 0x004), 2);
  assert_int_equal(vd_r32(&f->d, 0x008), 0x7e);
  assert_int_equal(vd_device_features(&f->d), F_V1 | 3);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_DEVICE_FEATURES), 0);
  /* Queue 1 appears only with feature 0 written. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 0);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 1);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
  vd_driver_features(&f->d, F_V1 | 1);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 9);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
  /* No shared memory regions: length and base read as all ones. */
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffffu);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_SHM_BASE_HIGH), 0xffffffffu);
  /* Config space: in bounds works, beyond it reads zero. */
  uint32_t gen = vd_r32(&f->d, VMM__VIRTIO_MMIO_CONFIG_GENERATION);
  vd_access(&f->d, 0x104, 0xabcd, 2, true);
  assert_int_equal(vd_access(&f->d, 0x104, 0, 2, false), 0xabcd);
  assert_int_equal(vd_access(&f->d, 0x108, 0, 4, false), 0);
  vmm__virtio_lock(f->echo.v);
  vmm__virtio_config_changed(f->echo.v);
  vmm__virtio_unlock(f->echo.v);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
  /* Before DRIVER_OK a config change does not interrupt. */
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);
  char line[80];
  assert_int_equal(vmm_virtio_mmio_cmdline(f->echo.dev, line, sizeof(line)), 0);
  assert_string_equal(line, "virtio_mmio.device=0x200@0xd0000000:5");
  assert_int_equal(vmm_virtio_mmio_cmdline(f->echo.dev, line, 10), VMM_E2BIG);
}

static void test_bad_access_width(void **state) {
  struct fixture *f = *state;
  /* Control registers take aligned 32-bit accesses only; others are
     ignored (reads give zero) and counted, without an error state. */
  assert_int_equal(vd_access(&f->d, 0x000, 0, 2, false), 0);
  assert_int_equal(vd_access(&f->d, 0x001, 0, 4, false), 0);
  assert_int_equal(vd_access(&f->d, 0x000, 0, 8, false), 0);
  vd_access(&f->d, VMM__VIRTIO_MMIO_STATUS, 1, 1, true);
  assert_int_equal(vd_status(&f->d), 0);
  struct vmm_virtio_state st = state_of(f);
  assert_int_equal(st.bad_accesses, 4);
  assert_int_equal(st.error, VMM_VIRTIO_ERR_NONE);
}

static void test_features_refused(void **state) {
  struct fixture *f = *state;
  /* A feature the device lacks: FEATURES_OK does not stick. */
  uint32_t st = vd_negotiate(&f->d, F_V1 | 0x10);
  assert_false(st & VMM_VIRTIO_STATUS_FEATURES_OK);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  /* A modern device insists on VERSION_1. */
  st = vd_negotiate(&f->d, 1);
  assert_false(st & VMM_VIRTIO_STATUS_FEATURES_OK);
  st = vd_negotiate(&f->d, F_V1 | 1);
  assert_true(st & VMM_VIRTIO_STATUS_FEATURES_OK);
}

static void test_features_after_ok(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  vd_negotiate(&f->d, F_V1);
  vq_setup(&f->d, &q, 0, 16, Q0);
  vd_driver_features(&f->d, F_V1 | 1);
  expect_error(f, VMM_VIRTIO_ERR_FEATURES);
  /* Before DRIVER_OK there is no configuration interrupt. */
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);
  expect_dead_then_recover(f, &q);
}

static void test_status_clear_bits(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, VMM_VIRTIO_STATUS_ACKNOWLEDGE);
  expect_error(f, VMM_VIRTIO_ERR_STATUS);
  /* After DRIVER_OK the error state is announced as a config change. */
  assert_true(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS) &
              VMM__VIRTIO_INT_CONFIG);
  assert_true(f->irq_level);
  expect_dead_then_recover(f, &q);
}

static void test_driver_ok_without_features_ok(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_ACKNOWLEDGE);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER);
  vd_driver_features(&f->d, F_V1);
  vq_setup(&f->d, &q, 0, 16, Q0);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  expect_error(f, VMM_VIRTIO_ERR_STATUS);
  assert_false(vd_status(&f->d) & VMM_VIRTIO_STATUS_DRIVER_OK);
  expect_dead_then_recover(f, &q);
}

/* ------------------------------------------------------------------------ */
/* Queue configuration                                                      */

static void try_queue_size(struct fixture *f, uint32_t num) {
  vd_negotiate(&f->d, F_V1);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM, num);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)Q0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)Q0 + 0x800);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)Q0 + 0x1000);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY, 1);
  expect_error(f, VMM_VIRTIO_ERR_QUEUE_CONFIG);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY), 0);
}

static void test_queue_size_invalid(void **state) {
  struct fixture *f = *state;
  try_queue_size(f, 0);
  try_queue_size(f, 32); /* above QueueNumMax */
  try_queue_size(f, 12); /* not a power of two */
  try_queue_size(f, 0x10000);
  /* Ready on a queue that does not exist. */
  vd_negotiate(&f->d, F_V1);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 1);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY, 1);
  expect_error(f, VMM_VIRTIO_ERR_QUEUE_CONFIG);
}

static void test_queue_reconfig_live(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DESC_LOW, 0x30000);
  expect_error(f, VMM_VIRTIO_ERR_QUEUE_CONFIG);
  expect_dead_then_recover(f, &q);
  /* Stopping the queue first makes reconfiguration legal. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY, 0);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY), 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM, 8);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
}

static void setup_rings(struct fixture *f, uint64_t desc, uint64_t avail,
                        uint64_t used) {
  vd_negotiate(&f->d, F_V1);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM, 16);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY, 1);
}

static void test_ring_outside_ram(void **state) {
  struct fixture *f = *state;
  const uint64_t ok_d = Q0, ok_a = Q0 + 0x800, ok_u = Q0 + 0x1000;
  setup_rings(f, ok_d, ok_a, ok_u);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  struct {
    uint64_t d, a, u;
  } bad[] = {
      {0x200000, ok_a, ok_u},                  /* descriptors past RAM */
      {ROM_GPA + ROM_SIZE - 0x80, ok_a, ok_u}, /* runs off the end */
      {ok_d, 1ull << 51, ok_u},                /* avail far away */
      {ok_d, ok_a, ROM_GPA},                   /* used ring in ROM */
      {ok_d, ok_a, ~0ull - 0x40},              /* wraps */
      {ok_d + 8, ok_a, ok_u},                  /* descriptors misaligned */
      {ok_d, ok_a + 1, ok_u},                  /* avail misaligned */
      {ok_d, ok_a, ok_u + 2},                  /* used misaligned */
      {BASE, ok_a, ok_u},                      /* the device's own window */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    setup_rings(f, bad[i].d, bad[i].a, bad[i].u);
    expect_error(f, VMM_VIRTIO_ERR_RING_ADDRESS);
    assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_READY), 0);
  }
  /* A ring in ROM may be read: descriptors there are fine. */
  setup_rings(f, ROM_GPA, ok_a, ok_u);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
}

/* ------------------------------------------------------------------------ */
/* Normal operation                                                         */

static void test_echo(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  vmm_mem_write(f->vm, BUF, "hello", 5);
  /* Readable split over two descriptors, writable over two more. */
  struct vd_buf b[4] = {{BUF, 2, false},
                        {BUF + 2, 3, false},
                        {BUF + 0x100, 1, true},
                        {BUF + 0x200, 8, true}};
  uint16_t head = vq_add(&f->d, &q, b, 4);
  unsigned irqs = f->irq_calls;
  vq_kick(&f->d, &q);
  uint32_t id, len;
  assert_true(vq_get_used(&f->d, &q, &id, &len));
  assert_int_equal(id, head);
  assert_int_equal(len, 5);
  uint8_t out[5];
  vmm_mem_read(f->vm, BUF + 0x100, out, 1);
  vmm_mem_read(f->vm, BUF + 0x200, out + 1, 4);
  for (int i = 0; i < 5; i++)
    assert_int_equal(out[i], (uint8_t)("hello"[i] ^ 0xff));
  /* Used buffer interrupt: status bit, line up; ACK lowers it. */
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS),
                   VMM__VIRTIO_INT_VRING);
  assert_true(f->irq_level);
  assert_true(f->irq_calls > irqs);
  vd_ack_interrupts(&f->d);
  assert_false(f->irq_level);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);

  /* The ring wraps: 40 more requests through a 16-entry queue. */
  for (int i = 0; i < 40; i++) {
    struct vd_buf c[2] = {{BUF, 5, false}, {BUF + 0x300, 5, true}};
    head = vq_add(&f->d, &q, c, 2);
    vq_kick(&f->d, &q);
    assert_true(vq_get_used(&f->d, &q, &id, &len));
    assert_int_equal(id, head);
  }
  /* A second event while the line is up re-edges it (low, then high). */
  unsigned calls = f->irq_calls;
  assert_true(f->irq_level);
  struct vd_buf c[2] = {{BUF, 5, false}, {BUF + 0x300, 5, true}};
  vq_add(&f->d, &q, c, 2);
  vq_kick(&f->d, &q);
  assert_int_equal(f->irq_calls, calls + 2);
  assert_true(f->irq_level);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
}

static void test_no_interrupt_flag(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  uint16_t flags = VMM__VIRTQ_AVAIL_F_NO_INTERRUPT;
  vmm_mem_write(f->vm, q.avail, &flags, 2);
  struct vd_buf b[2] = {{BUF, 1, false}, {BUF + 0x100, 1, true}};
  vq_add(&f->d, &q, b, 2);
  vq_kick(&f->d, &q);
  uint32_t id, len;
  assert_true(vq_get_used(&f->d, &q, &id, &len));
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);
  assert_false(f->irq_level);
}

static void test_notify_before_driver_ok(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  vd_negotiate(&f->d, F_V1);
  vq_setup(&f->d, &q, 0, 16, Q0);
  struct vd_buf b[2] = {{BUF, 1, false}, {BUF + 0x100, 1, true}};
  vq_add(&f->d, &q, b, 2);
  vq_kick(&f->d, &q);
  /* Not processed yet: the device may not use buffers before DRIVER_OK. */
  assert_int_equal(f->echo.requests, 0);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  assert_int_equal(f->echo.requests, 1);
}

static void test_legacy(void **state) {
  struct fixture *f = *state;
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_VERSION), 1);
  /* Legacy drivers see 32 feature bits and no VERSION_1. */
  assert_int_equal(vd_device_features(&f->d), 3);
  /* Modern-only registers do nothing. */
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_SHM_LEN_LOW), 0);
  uint32_t st = vd_negotiate(&f->d, 1);
  assert_false(st & VMM_VIRTIO_STATUS_FEATURES_OK);
  struct vq_drv q0, q1;
  vq_setup(&f->d, &q0, 0, 16, Q0);
  vq_setup(&f->d, &q1, 1, 8, Q1);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_PFN), Q1 >> 12);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  /* The device found the used ring where the legacy layout puts it. */
  vmm_mem_write(f->vm, BUF, "xy", 2);
  struct vd_buf b[2] = {{BUF, 2, false}, {BUF + 0x100, 2, true}};
  uint16_t head = vq_add(&f->d, &q0, b, 2);
  vq_kick(&f->d, &q0);
  uint32_t id, len;
  assert_true(vq_get_used(&f->d, &q0, &id, &len));
  assert_int_equal(id, head);
  assert_int_equal(len, 2);
  /* QueuePFN 0 stops the queue. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_PFN, 0);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_QUEUE_PFN), 0);
  vq_add(&f->d, &q0, b, 2);
  vq_kick(&f->d, &q0);
  assert_int_equal(f->echo.requests, 1);
  /* Writing features after DRIVER_OK is a legacy error too; legacy
     drivers get no configuration interrupt for it. */
  vd_ack_interrupts(&f->d);
  vd_driver_features(&f->d, 0);
  expect_error(f, VMM_VIRTIO_ERR_FEATURES);
  assert_int_equal(vd_r32(&f->d, VMM__VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

static void test_legacy_bad_page_size(void **state) {
  struct fixture *f = *state;
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  vd_set_status(&f->d,
                VMM_VIRTIO_STATUS_ACKNOWLEDGE | VMM_VIRTIO_STATUS_DRIVER);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE, 3000);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_SEL, 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM, 16);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_PFN, Q0 >> 12);
  expect_error(f, VMM_VIRTIO_ERR_QUEUE_CONFIG);
  /* A PFN whose rings end beyond RAM. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE, 4096);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM, 16);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_PFN, (RAM_SIZE >> 12) - 1);
  expect_error(f, VMM_VIRTIO_ERR_RING_ADDRESS);
  /* The largest PFN with a 2^31 page size stays a plain bad address. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_GUEST_PAGE_SIZE, 0x80000000u);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NUM, 16);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_PFN, 0xffffffffu);
  expect_error(f, VMM_VIRTIO_ERR_RING_ADDRESS);
}

/* ------------------------------------------------------------------------ */
/* Malformed queue contents                                                 */

static void test_avail_index_jump(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  vq_write_desc(&f->d, &q, 0, (struct vd_desc){BUF, 1, 0, 0});
  vq_publish(&f->d, &q, 0, 17); /* 17 new entries in a 16-entry ring */
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_AVAIL_INDEX);
  assert_int_equal(f->echo.requests, 0);
  expect_dead_then_recover(f, &q);
}

static void test_head_index(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  vq_publish(&f->d, &q, 16, 1);
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_HEAD_INDEX);
  expect_dead_then_recover(f, &q);
}

static void test_next_index(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  vq_write_desc(&f->d, &q, 0,
                (struct vd_desc){BUF, 1, VMM__VIRTQ_DESC_F_NEXT, 0xffff});
  vq_publish(&f->d, &q, 0, 1);
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_NEXT_INDEX);
  expect_dead_then_recover(f, &q);
}

static void test_chain_loop(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  /* A descriptor pointing at itself. */
  up(f, &q, F_V1);
  vq_write_desc(&f->d, &q, 3,
                (struct vd_desc){BUF, 1, VMM__VIRTQ_DESC_F_NEXT, 3});
  vq_publish(&f->d, &q, 3, 1);
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_CHAIN_LOOP);
  expect_dead_then_recover(f, &q);
  /* A longer cycle 0 -> 1 -> ... -> 15 -> 0. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  up(f, &q, F_V1);
  for (uint16_t i = 0; i < 16; i++)
    vq_write_desc(&f->d, &q, i,
                  (struct vd_desc){BUF, 1, VMM__VIRTQ_DESC_F_NEXT,
                                   (uint16_t)((i + 1) % 16)});
  vq_publish(&f->d, &q, 5, 1);
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_CHAIN_LOOP);
  /* A chain of exactly 16 descriptors is fine. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  up(f, &q, F_V1);
  for (uint16_t i = 0; i < 16; i++)
    vq_write_desc(
        &f->d, &q, i,
        (struct vd_desc){BUF + i, 1,
                         (uint16_t)((i < 15 ? VMM__VIRTQ_DESC_F_NEXT : 0) |
                                    (i >= 8 ? VMM__VIRTQ_DESC_F_WRITE : 0)),
                         (uint16_t)(i + 1)});
  vq_publish(&f->d, &q, 0, 1);
  vq_kick(&f->d, &q);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  assert_int_equal(f->echo.requests, 2);
}

static void bad_buffer(struct fixture *f, uint64_t addr, uint32_t len,
                       uint16_t flags, enum vmm_virtio_error err) {
  struct vq_drv q;
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  up(f, &q, F_V1);
  vq_write_desc(&f->d, &q, 0,
                (struct vd_desc){BUF, 4, VMM__VIRTQ_DESC_F_NEXT, 1});
  vq_write_desc(&f->d, &q, 1, (struct vd_desc){addr, len, flags, 0});
  vq_publish(&f->d, &q, 0, 1);
  vq_kick(&f->d, &q);
  expect_error(f, err);
  assert_int_equal(vq_used_idx(&f->d, &q), 0);
}

static void test_buffer_address(void **state) {
  struct fixture *f = *state;
  const uint16_t W = VMM__VIRTQ_DESC_F_WRITE;
  bad_buffer(f, RAM_SIZE + ROM_SIZE, 16, 0, VMM_VIRTIO_ERR_BUFFER_ADDRESS);
  bad_buffer(f, RAM_SIZE - 8, 16, W, VMM_VIRTIO_ERR_BUFFER_ADDRESS);
  bad_buffer(f, BASE, 4, 0, VMM_VIRTIO_ERR_BUFFER_ADDRESS);
  bad_buffer(f, 1ull << 52, 4, W, VMM_VIRTIO_ERR_BUFFER_ADDRESS);
  /* ROM is readable by the device but not writable. */
  bad_buffer(f, ROM_GPA, 16, W, VMM_VIRTIO_ERR_BUFFER_ADDRESS);
  /* Spanning RAM into ROM is fine for reading. */
  struct vq_drv q;
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  up(f, &q, F_V1);
  struct vd_buf b[2] = {{RAM_SIZE - 8, 16, false}, {BUF, 16, true}};
  vq_add(&f->d, &q, b, 2);
  vq_kick(&f->d, &q);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  assert_int_equal(f->echo.requests, 1);
}

static void test_buffer_length(void **state) {
  struct fixture *f = *state;
  /* addr + len wraps around 2^64. */
  bad_buffer(f, ~0ull - 0x10, 0x100, 0, VMM_VIRTIO_ERR_BUFFER_LENGTH);
  /*
   * A chain above 4 GiB in total: three 1.5 GiB buffers over the same
   * sparse slot (a memfd; nothing is touched).
   */
  const uint64_t big = 0x100000000ull;
  assert_int_equal(vmm_mem_slot_add(f->vm, big, 0x60000000ull, NULL, 0, NULL),
                   0);
  struct vq_drv q;
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  up(f, &q, F_V1);
  for (uint16_t i = 0; i < 3; i++)
    vq_write_desc(
        &f->d, &q, i,
        (struct vd_desc){big, 0x60000000u,
                         (uint16_t)(i < 2 ? VMM__VIRTQ_DESC_F_NEXT : 0),
                         (uint16_t)(i + 1)});
  vq_publish(&f->d, &q, 0, 1);
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_BUFFER_LENGTH);
}

static void test_indirect(void **state) {
  struct fixture *f = *state;
  bad_buffer(f, BUF, 16, VMM__VIRTQ_DESC_F_INDIRECT, VMM_VIRTIO_ERR_INDIRECT);
}

static void test_direction(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  /* Readable after writable breaks the framing rule. */
  vq_write_desc(
      &f->d, &q, 0,
      (struct vd_desc){BUF, 4, VMM__VIRTQ_DESC_F_NEXT | VMM__VIRTQ_DESC_F_WRITE,
                       1});
  vq_write_desc(&f->d, &q, 1, (struct vd_desc){BUF + 0x10, 4, 0, 0});
  vq_publish(&f->d, &q, 0, 1);
  vq_kick(&f->d, &q);
  expect_error(f, VMM_VIRTIO_ERR_DIRECTION);
  expect_dead_then_recover(f, &q);
}

static void test_notify_bad_queue(void **state) {
  struct fixture *f = *state;
  struct vq_drv q;
  up(f, &q, F_V1);
  /* Queue 1 does not exist without feature 0. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NOTIFY, 1);
  expect_error(f, VMM_VIRTIO_ERR_NOTIFY);
  expect_dead_then_recover(f, &q);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NOTIFY, 0xffff);
  expect_error(f, VMM_VIRTIO_ERR_NOTIFY);
  /* With the feature, queue 1 exists and its notify reaches the device. */
  vd_w32(&f->d, VMM__VIRTIO_MMIO_STATUS, 0);
  vd_negotiate(&f->d, F_V1 | 1);
  struct vq_drv q1;
  vq_setup(&f->d, &q, 0, 16, Q0);
  vq_setup(&f->d, &q1, 1, 16, Q1);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  unsigned before = f->echo.notifies_q1;
  vq_kick(&f->d, &q1);
  assert_int_equal(f->echo.notifies_q1, before + 1);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
}

static void test_ring_slot_removed(void **state) {
  struct fixture *f = *state;
  /* Rings in a second slot that the host removes while the queue is live:
     the next access finds no memory and fails cleanly. */
  const uint64_t gpa = 0x200000;
  uint32_t slot;
  assert_int_equal(vmm_mem_slot_add(f->vm, gpa, 0x10000, NULL, 0, &slot), 0);
  struct vq_drv q;
  vd_negotiate(&f->d, F_V1);
  vq_setup(&f->d, &q, 0, 16, gpa);
  vd_set_status(&f->d, VMM_VIRTIO_STATUS_DRIVER_OK);
  assert_int_equal(state_of(f).error, VMM_VIRTIO_ERR_NONE);
  assert_int_equal(vmm_mem_slot_remove(f->vm, slot), 0);
  vd_w32(&f->d, VMM__VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  expect_error(f, VMM_VIRTIO_ERR_RING_ADDRESS);
}

static void test_default_irq_path(void **state) {
  struct fixture *f = *state;
  /* No handler and no in-kernel irqchip: the line's level is recorded by
     the device interface, and a polling driver works. */
  struct vq_drv q;
  up(f, &q, F_V1);
  struct vd_buf b[2] = {{BUF, 1, false}, {BUF + 0x100, 1, true}};
  vq_add(&f->d, &q, b, 2);
  vq_kick(&f->d, &q);
  uint32_t id, len;
  assert_true(vq_get_used(&f->d, &q, &id, &len));
  struct vmm_virtio_state st = state_of(f);
  assert_int_equal(st.interrupt_status, VMM__VIRTIO_INT_VRING);
  assert_int_equal(st.interrupts, 1);
  assert_int_equal(st.resets, 1);
  bool level;
  assert_ok(vmm_vm_irq_get(f->vm, 5, &level));
  assert_true(level);
  vd_ack_interrupts(&f->d);
  assert_ok(vmm_vm_irq_get(f->vm, 5, &level));
  assert_false(level);
}

struct log_capture {
  unsigned messages;
  char last[256];
};

static void capture_log(enum vmm_log_level level, const char *msg,
                        void *opaque) {
  struct log_capture *c = opaque;
  (void)level;
  c->messages++;
  snprintf(c->last, sizeof(c->last), "%s", msg);
}

static void test_irqchip_path(void **state) {
  (void)state;
  /* The VM's interrupt path: the engine's interrupt controller. */
  struct log_capture logs = {0};
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.flags = VMM_VM_IRQCHIP;
  cfg.log_fn = capture_log;
  cfg.log_opaque = &logs;
  cfg.log_level = VMM_LOG_DEBUG;
  vmm_vm *vm;
  int rc = vmm_vm_create(&cfg, &vm);
  if (rc == VMM_ENOTSUP || rc == VMM_EINVAL) {
    print_message("%s has no in-kernel interrupt controller: %s\n",
                  vmm_engine_name(vmmt_engine), vmm_strerror(rc));
    skip();
  }
  assert_ok(rc);
  assert_ok(vmm_mem_slot_add(vm, 0, RAM_SIZE, NULL, 0, NULL));
  struct echo e = {0};
  struct vmm_virtio_mmio_config mc;
  vmm_virtio_mmio_config_init(&mc);
  mc.base = BASE;
  mc.gsi = 10;
  mc.name = "echo-irqchip";
  assert_ok(vmm__virtio_create(vm, &mc, &echo_ops, &e, 0, 16, &e.v, &e.dev));
  struct vd d = {vm, BASE};
  struct vq_drv q;
  vd_negotiate(&d, F_V1);
  vq_setup(&d, &q, 0, 16, Q0);
  vd_set_status(&d, VMM_VIRTIO_STATUS_DRIVER_OK);
  unsigned before = logs.messages;
  struct vd_buf b[2] = {{BUF, 1, false}, {BUF + 0x100, 1, true}};
  vq_add(&d, &q, b, 2);
  vq_kick(&d, &q);
  struct vmm_virtio_state st;
  assert_ok(vmm_virtio_get_state(e.dev, &st));
  assert_true(st.irq_level);
  bool level;
  assert_ok(vmm_vm_irq_get(vm, 10, &level));
  assert_true(level);
  vd_ack_interrupts(&d);
  assert_ok(vmm_virtio_get_state(e.dev, &st));
  assert_false(st.irq_level);
  /* The engine took every level change: nothing was logged. */
  if (logs.messages != before)
    fail_msg("unexpected log: %s", logs.last);
  /* Detaching destroys the model; the name is free again. */
  assert_ok(vmm_dev_detach(e.dev));
  assert_int_equal(e.destroyed, 1);
  assert_null(vmm_dev_find(vm, "echo-irqchip"));
  /* A line the controller does not have is refused up front. */
  mc.gsi = VMM_IRQ_LINES;
  assert_vmm(vmm__virtio_create(vm, &mc, &echo_ops, &e, 0, 16, &e.v, NULL),
             VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_error_log_rate(void **state) {
  (void)state;
  /* A guest that fails, resets and fails again in a loop must not flood
     the host's log with warnings. */
  struct log_capture logs = {0};
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.log_fn = capture_log;
  cfg.log_opaque = &logs;
  cfg.log_level = VMM_LOG_WARN;
  vmm_vm *vm;
  assert_ok(vmm_vm_create(&cfg, &vm));
  struct echo e = {0};
  struct vmm_virtio_mmio_config mc;
  vmm_virtio_mmio_config_init(&mc);
  mc.base = BASE;
  assert_ok(vmm__virtio_create(vm, &mc, &echo_ops, &e, 0, 16, &e.v, &e.dev));
  struct vd d = {vm, BASE};
  for (int i = 0; i < 100; i++) {
    vd_w32(&d, VMM__VIRTIO_MMIO_STATUS, 0);
    vd_w32(&d, VMM__VIRTIO_MMIO_QUEUE_NOTIFY, 7);
  }
  struct vmm_virtio_state st;
  assert_ok(vmm_virtio_get_state(e.dev, &st));
  assert_int_equal(st.errors, 100);
  assert_int_equal(logs.messages, 8);
  assert_non_null(strstr(logs.last, "notification for a queue"));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_attach_errors(void **state) {
  struct fixture *f = *state;
  struct echo e = {0};
  struct vmm_virtio_mmio_config mc;
  vmm_virtio_mmio_config_init(&mc);
  mc.base = BASE + VMM_VIRTIO_MMIO_SIZE;
  /* The name is taken: the model stays the caller's. */
  assert_vmm(vmm__virtio_create(f->vm, &mc, &echo_ops, &e, 0, 16, &e.v, NULL),
             VMM_EEXIST);
  assert_int_equal(e.destroyed, 0);
  mc.name = "echo2";
  mc.base = BASE; /* overlaps the first device's window */
  assert_vmm(vmm__virtio_create(f->vm, &mc, &echo_ops, &e, 0, 16, &e.v, NULL),
             VMM_EOVERLAP);
  mc.base = 0x1000; /* inside RAM */
  assert_vmm(vmm__virtio_create(f->vm, &mc, &echo_ops, &e, 0, 16, &e.v, NULL),
             VMM_EOVERLAP);
  mc.base = BASE + 0x100;
  assert_vmm(vmm__virtio_create(f->vm, &mc, &echo_ops, &e, 0, 16, &e.v, NULL),
             VMM_EALIGN);
  mc.base = BASE + VMM_VIRTIO_MMIO_SIZE;
  mc.version = 3;
  assert_vmm(vmm__virtio_create(f->vm, &mc, &echo_ops, &e, 0, 16, &e.v, NULL),
             VMM_EINVAL);
  assert_int_equal(e.destroyed, 0);
  /* Another device is not a virtio device. */
  struct vmm_exit_port_config xc;
  vmm_exit_port_config_init(&xc);
  vmm_dev *xp;
  assert_ok(vmm_exit_port_create(f->vm, &xc, &xp));
  struct vmm_virtio_state st;
  char line[64];
  assert_vmm(vmm_virtio_get_state(xp, &st), VMM_EINVAL);
  assert_vmm(vmm_virtio_mmio_cmdline(xp, line, sizeof(line)), VMM_EINVAL);
  assert_vmm(vmm_virtio_get_state(NULL, &st), VMM_EINVAL);
}

static void test_error_strings(void **state) {
  (void)state;
  for (int e = 0; e < VMM_VIRTIO_ERR__COUNT; e++)
    assert_non_null(vmm_virtio_error_str((enum vmm_virtio_error)e));
  assert_string_equal(vmm_virtio_error_str(VMM_VIRTIO_ERR__COUNT),
                      "unknown virtio error");
  assert_int_equal(vmm_virtio_get_state(NULL, NULL), VMM_EINVAL);
}

#define T(fn, s) cmocka_unit_test_setup_teardown(fn, s, teardown)

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      T(test_registers_modern, setup_modern),
      T(test_bad_access_width, setup_modern),
      T(test_features_refused, setup_modern),
      T(test_features_after_ok, setup_modern),
      T(test_status_clear_bits, setup_modern),
      T(test_driver_ok_without_features_ok, setup_modern),
      T(test_queue_size_invalid, setup_modern),
      T(test_queue_reconfig_live, setup_modern),
      T(test_ring_outside_ram, setup_modern),
      T(test_echo, setup_modern),
      T(test_no_interrupt_flag, setup_modern),
      T(test_notify_before_driver_ok, setup_modern),
      T(test_legacy, setup_legacy),
      T(test_legacy_bad_page_size, setup_legacy),
      T(test_avail_index_jump, setup_modern),
      T(test_head_index, setup_modern),
      T(test_next_index, setup_modern),
      T(test_chain_loop, setup_modern),
      T(test_buffer_address, setup_modern),
      T(test_buffer_length, setup_modern),
      T(test_indirect, setup_modern),
      T(test_direction, setup_modern),
      T(test_notify_bad_queue, setup_modern),
      T(test_ring_slot_removed, setup_modern),
      T(test_default_irq_path, setup_no_hook),
      cmocka_unit_test(test_irqchip_path),
      T(test_attach_errors, setup_modern),
      cmocka_unit_test(test_error_log_rate),
      cmocka_unit_test(test_error_strings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
