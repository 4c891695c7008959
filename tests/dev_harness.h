/*
 * A harness driving every stock device with arbitrary input, as a hostile
 * guest (register accesses of any width at and around the devices' ports)
 * and a hostile snapshot (saved states with any members changed) would.
 * Used by tests/test_dev_fuzz.c with pseudo-random inputs and by the
 * libFuzzer target fuzz/fuzz_devices.c.
 *
 * Input: a sequence of operations, each an opcode byte and its operands;
 * the input ending mid-operation ends it. Checked after every input:
 * nothing crashed (the sanitizers watch), every restore answered 0 or
 * -VMM_EINVAL, a state that was accepted saves again to the same JSON, IIR
 * always holds a defined value, and the UART drains in bounded time.
 */
#ifndef LIBVMM_DEV_HARNESS_H
#define LIBVMM_DEV_HARNESS_H

#include <jansson.h>
#include <libvmm/vmm.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct dh {
  vmm_vm *vm;
  vmm_dev *dev[5]; /* uart, i8042, cmos, fw_cfg, exit port */
  unsigned long out_bytes;
  const char *failure; /* first broken invariant, or NULL */
};

static const uint16_t dh_ports[] = {
    0x3f7, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x400,
    0x5f,  0x60,  0x61,  0x63,  0x64,  0x65,  0x6f,  0x70,  0x71,  0x72,
    0x50f, 0x510, 0x511, 0x512, 0xf3,  0xf4,  0xf5,  0xf6,  0xf7,  0xf8,
};

static int64_t dh_clock(void *opaque) {
  (void)opaque;
  return 1700000000ll * 1000000000ll; /* fixed: inputs replay exactly */
}

static void dh_out(vmm_dev *dev, const uint8_t *buf, size_t len, void *opaque) {
  (void)dev, (void)buf;
  ((struct dh *)opaque)->out_bytes += len;
}

/* Attach the five devices anew (after dh_detach(): fresh state). */
static inline int dh_attach(struct dh *h) {
  struct vmm_uart_config u;
  vmm_uart_config_init(&u);
  u.backend = VMM_UART_CALLBACK;
  u.write_fn = dh_out;
  u.write_opaque = h;
  struct vmm_i8042_config k;
  vmm_i8042_config_init(&k);
  struct vmm_cmos_config c;
  vmm_cmos_config_init(&c);
  c.clock_fn = dh_clock;
  struct vmm_fw_cfg_config f;
  vmm_fw_cfg_config_init(&f);
  f.cmdline = "console=ttyS0";
  struct vmm_exit_port_config x;
  vmm_exit_port_config_init(&x);
  int err;
  if ((err = vmm_uart_create(h->vm, &u, &h->dev[0])) < 0 ||
      (err = vmm_i8042_create(h->vm, &k, &h->dev[1])) < 0 ||
      (err = vmm_cmos_create(h->vm, &c, &h->dev[2])) < 0 ||
      (err = vmm_fw_cfg_create(h->vm, &f, &h->dev[3])) < 0 ||
      (err = vmm_exit_port_create(h->vm, &x, &h->dev[4])) < 0 ||
      (err = vmm_fw_cfg_add_file(h->dev[3], "etc/a", "abc", 3, NULL)) < 0 ||
      (err = vmm_fw_cfg_add_file(h->dev[3], "opt/b", "", 0, NULL)) < 0)
    return err;
  return 0;
}

static inline void dh_detach(struct dh *h) {
  for (int i = 4; i >= 0; i--) {
    vmm_dev_detach(h->dev[i]);
    h->dev[i] = NULL;
  }
}

/* Returns 0, or a negative code if the VM cannot be built here. */
static inline int dh_init(struct dh *h, enum vmm_engine_kind engine) {
  struct vmm_vm_config cfg;
  memset(h, 0, sizeof(*h));
  vmm_vm_config_init(&cfg);
  cfg.engine = engine;
  int err = vmm_vm_create(&cfg, &h->vm);
  if (err < 0)
    return err;
  if ((err = vmm_mem_slot_add(h->vm, 0, 2 << 20, NULL, 0, NULL)) < 0 ||
      (err = dh_attach(h)) < 0) {
    vmm_vm_destroy(h->vm);
    return err;
  }
  return 0;
}

static inline void dh_fini(struct dh *h) {
  vmm_vm_destroy(h->vm);
}

static inline void dh_fail(struct dh *h, const char *what) {
  if (h->failure == NULL)
    h->failure = what;
}

/* Save, restore and save again: the two saves must be equal. */
static inline void dh_roundtrip(struct dh *h, vmm_dev *dev) {
  json_t *a = NULL, *b = NULL;
  int rc = vmm_dev_save(dev, &a);
  if (rc == VMM_ENOTSUP) /* the exit port has no state */
    return;
  if (rc < 0)
    return dh_fail(h, "save failed");
  if (vmm_dev_restore(dev, a) != 0)
    dh_fail(h, "a saved state was refused");
  else if (vmm_dev_save(dev, &b) < 0 || !json_equal(a, b))
    dh_fail(h, "restore(save()) changed the state");
  json_decref(a);
  json_decref(b);
}

/* Replace member (index pick) of dev's saved state with a value made from
   the input, restore it, and check the answer. */
static inline void dh_mutate(struct dh *h, vmm_dev *dev, uint8_t pick,
                             uint8_t kind, const uint8_t *v, size_t n) {
  json_t *s = NULL;
  int rc = vmm_dev_save(dev, &s);
  if (rc == VMM_ENOTSUP)
    return;
  if (rc < 0)
    return dh_fail(h, "save failed");
  size_t count = json_object_size(s), i = 0;
  const char *key = NULL;
  json_t *val;
  void *iter;
  json_object_foreach_safe(s, iter, key, val) {
    (void)val;
    if (i++ != pick % (count + 1))
      continue;
    json_t *nv;
    int64_t x = 0;
    memcpy(&x, v, n < 8 ? n : 8);
    switch (kind % 6) {
    case 0: nv = json_integer(x); break;
    case 1: nv = json_integer(x & 0x1ff); break;
    case 2: nv = json_stringn((const char *)v, n); break;
    case 3: {
      nv = json_array();
      for (size_t j = 0; j < n; j++)
        json_array_append_new(nv, json_integer(v[j] * (kind >> 4)));
      break;
    }
    case 4: nv = json_null(); break;
    default: nv = json_boolean(x & 1); break;
    }
    json_object_set_new(s, key, nv);
    break;
  }
  if (pick % (count + 1) == count) /* or drop one, or add junk */
    json_object_set_new(s, "junk", json_integer(pick));
  rc = vmm_dev_restore(dev, s);
  if (rc != 0 && rc != VMM_EINVAL)
    dh_fail(h, "restore gave neither 0 nor -VMM_EINVAL");
  if (rc == 0)
    dh_roundtrip(h, dev);
  json_decref(s);
}

static inline void dh_check_uart(struct dh *h) {
  vmm_vm *vm = h->vm;
  uint8_t v = 0x03;
  /* DLAB off, loopback off, then drain what the receiver holds. */
  vmm__iobus_dispatch(&vm->pio, NULL, 0x3fb, &v, 1, true);
  v = 0;
  vmm__iobus_dispatch(&vm->pio, NULL, 0x3fc, &v, 1, true);
  for (int n = 0;; n++) {
    uint8_t iir = 0, lsr = 0;
    vmm__iobus_dispatch(&vm->pio, NULL, 0x3fa, &iir, 1, false);
    switch (iir & 0x0f) {
    case 0x00:
    case 0x01:
    case 0x02:
    case 0x04:
    case 0x06:
    case 0x0c: break;
    default: return dh_fail(h, "undefined IIR value");
    }
    vmm__iobus_dispatch(&vm->pio, NULL, 0x3fd, &lsr, 1, false);
    if (!(lsr & 1))
      return;
    if (n > 16 + VMM_UART_INPUT_QUEUE)
      return dh_fail(h, "the UART never drains");
    vmm__iobus_dispatch(&vm->pio, NULL, 0x3f8, &v, 1, false);
  }
}

/*
 * Run one input on freshly attached devices (so every input starts from
 * the same state and replays exactly). Returns h->failure (NULL when all
 * held).
 */
static inline const char *dh_run(struct dh *h, const uint8_t *d, size_t n) {
  h->failure = NULL;
  dh_detach(h);
  if (dh_attach(h) < 0)
    return "devices could not be attached";
  vmm_vm_system_event_clear(h->vm);
  size_t i = 0;
  while (i + 2 <= n) {
    uint8_t op = d[i++], a = d[i++];
    vmm_dev *dev = h->dev[a % 5];
    switch (op % 8) {
    case 0:   /* port write, 1/2/4 bytes */
    case 1: { /* port read */
      uint32_t val = 0;
      uint32_t len = 1u << ((op >> 3) % 3);
      if (i + 4 <= n)
        memcpy(&val, d + i, 4);
      i += 4;
      uint16_t port = dh_ports[a % (sizeof(dh_ports) / sizeof(dh_ports[0]))];
      int rc =
          vmm__iobus_dispatch(&h->vm->pio, NULL, port, &val, len, op % 8 == 0);
      if (rc < 0)
        dh_fail(h, "a device handler failed");
      break;
    }
    case 2:   /* flow-controlled input */
    case 3: { /* input on the wire */
      size_t len = a % 32 < n - i ? a % 32 : n - i;
      long rc = op % 8 == 2 ? vmm_uart_input(h->dev[0], d + i, len)
                            : vmm_uart_input_raw(h->dev[0], d + i, len);
      if (rc < 0 || (size_t)rc > len)
        dh_fail(h, "UART input count out of range");
      i += len;
      break;
    }
    case 4: /* host CMOS access */
      if (i < n) {
        uint8_t v = d[i++];
        if (op & 0x80)
          vmm_cmos_write(h->dev[2], a & 0x7f, v);
        else
          vmm_cmos_read(h->dev[2], a & 0x7f, &v);
      }
      break;
    case 5: { /* host replaces a fw_cfg item while the guest reads it */
      size_t len = a % 16 < n - i ? a % 16 : n - i;
      uint16_t key = (uint16_t)((op >> 3) & 0x1f) | (op & 0x80 ? 0x8000 : 0);
      vmm_fw_cfg_set_item(h->dev[3], key, len ? d + i : NULL, len);
      i += len;
      break;
    }
    case 6: /* a hostile saved state */
      if (i + 2 <= n) {
        size_t len = d[i + 1] % 24 < n - i - 2 ? d[i + 1] % 24 : n - i - 2;
        dh_mutate(h, dev, d[i], op, d + i + 2, len);
        i += 2 + len;
      }
      break;
    default: /* a faithful one */ dh_roundtrip(h, dev); break;
    }
  }
  dh_check_uart(h);
  vmm_vm_system_event_clear(h->vm);
  return h->failure;
}

#endif
