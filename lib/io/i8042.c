/*
 * i8042 keyboard controller: the controller's command set, a keyboard that
 * acknowledges commands, no auxiliary device, and the reset line. See
 * include/libvmm/i8042.h.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

/* Status register. */
#define ST_OBF 0x01
#define ST_SYS 0x04
#define ST_CMD 0x08      /* last write went to the command port */
#define ST_UNLOCKED 0x10 /* keyboard not inhibited by the key lock */
#define ST_AUXOBF 0x20
#define ST_TIMEOUT 0x40

/* Command byte (controller RAM byte 0). */
#define CTR_KBDINT 0x01
#define CTR_AUXINT 0x02
#define CTR_SYS 0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE 0x40
/* Directly booted guests find a controller as a BIOS leaves it. */
#define CTR_RESET (CTR_XLATE | CTR_AUXDIS | CTR_SYS | CTR_KBDINT)

/* Output port. */
#define OUT_RESET 0x01 /* low: reset asserted */
#define OUT_A20 0x02
#define OUT_KBDOBF 0x10
#define OUT_AUXOBF 0x20

#define KBD_ACK 0xfa
#define KBD_RESEND 0xfe
#define QUEUE 16

struct outbyte {
  uint8_t byte;
  bool aux;
  bool timeout;
};

struct i8042 {
  vmm_vm *vm;
  vmm_dev *dev;
  struct vmm_i8042_config cfg;
  pthread_mutex_t lock;

  uint8_t ram[32]; /* ram[0] is the command byte */
  uint8_t outport;
  uint8_t last;        /* last byte read from the data port */
  bool last_was_cmd;   /* status bit 3 */
  uint8_t pending_cmd; /* controller command waiting for its data byte */
  uint8_t kbd_pending; /* keyboard command waiting for its parameter */
  uint8_t scanset;
  bool scanning;
  struct outbyte q[QUEUE];
  unsigned head, count;

  uint64_t commands, resets, dropped;
};

static const struct vmm_dev_ops i8042_ops;

void vmm_i8042_config_init(struct vmm_i8042_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "i8042";
  cfg->data_port = 0x60;
  cfg->cmd_port = 0x64;
  cfg->kbd_gsi = 1;
  cfg->aux_gsi = 12;
}

/* Caller holds the lock in all that follows. */

static void update_irq(struct i8042 *k) {
  bool kbd = false, aux = false;
  k->outport &= (uint8_t) ~(OUT_KBDOBF | OUT_AUXOBF);
  if (k->count > 0) {
    const struct outbyte *h = &k->q[k->head];
    if (h->aux) {
      aux = (k->ram[0] & CTR_AUXINT) != 0;
      k->outport |= OUT_AUXOBF;
    } else {
      kbd = (k->ram[0] & CTR_KBDINT) != 0;
      k->outport |= OUT_KBDOBF;
    }
  }
  vmm_dev_irq_set(k->dev, k->cfg.kbd_gsi, kbd);
  vmm_dev_irq_set(k->dev, k->cfg.aux_gsi, aux);
}

static void push(struct i8042 *k, uint8_t byte, bool aux, bool timeout) {
  if (k->count == QUEUE) {
    k->dropped++;
    return;
  }
  k->q[(k->head + k->count) % QUEUE] = (struct outbyte){byte, aux, timeout};
  k->count++;
}

static void reset_line(struct i8042 *k) {
  k->resets++;
  vmm_vm_system_event(k->vm, VMM_SYSTEM_RESET, 0);
}

static void set_outport(struct i8042 *k, uint8_t v) {
  k->outport = v;
  if (!(v & OUT_RESET))
    reset_line(k);
}

static void keyboard_write(struct i8042 *k, uint8_t v) {
  if (k->kbd_pending != 0) {
    uint8_t cmd = k->kbd_pending;
    k->kbd_pending = 0;
    if (cmd == 0xf0 && v == 0) {
      push(k, KBD_ACK, false, false);
      push(k, k->scanset, false, false);
      return;
    }
    if (cmd == 0xf0) {
      if (v < 1 || v > 3) {
        push(k, KBD_RESEND, false, false);
        return;
      }
      k->scanset = v;
    }
    push(k, KBD_ACK, false, false); /* LEDs, typematic rate */
    return;
  }
  switch (v) {
  case 0xed: /* set LEDs */
  case 0xf0: /* get/set scan-code set */
  case 0xf3: /* typematic rate */
    k->kbd_pending = v;
    push(k, KBD_ACK, false, false);
    break;
  case 0xee: push(k, 0xee, false, false); break; /* echo */
  case 0xf2:                                     /* identify */
    push(k, KBD_ACK, false, false);
    push(k, 0xab, false, false);
    /* What a translating controller makes of the keyboard's 0x83. */
    push(k, (k->ram[0] & CTR_XLATE) ? 0x41 : 0x83, false, false);
    break;
  case 0xf4:
    k->scanning = true;
    push(k, KBD_ACK, false, false);
    break;
  case 0xf5:
    k->scanning = false;
    push(k, KBD_ACK, false, false);
    break;
  case 0xf6: push(k, KBD_ACK, false, false); break;
  case 0xff: /* reset and self-test */
    k->scanning = true;
    k->scanset = 2;
    push(k, KBD_ACK, false, false);
    push(k, 0xaa, false, false);
    break;
  default: push(k, KBD_RESEND, false, false); break;
  }
}

static void data_write(struct i8042 *k, uint8_t v) {
  uint8_t cmd = k->pending_cmd;
  k->pending_cmd = 0;
  k->last_was_cmd = false;
  if (cmd >= 0x60 && cmd <= 0x7f) {
    k->ram[cmd - 0x60] = v;
    return;
  }
  switch (cmd) {
  case 0xd1: set_outport(k, v); return;
  case 0xd2: push(k, v, false, false); return;
  case 0xd3: push(k, v, true, false); return;
  case 0xd4: push(k, KBD_RESEND, true, true); return; /* no aux device */
  default: break;
  }
  keyboard_write(k, v);
}

static void command(struct i8042 *k, uint8_t c) {
  k->commands++;
  k->last_was_cmd = true;
  k->pending_cmd = 0;
  if (c >= 0x20 && c <= 0x3f) {
    push(k, k->ram[c - 0x20], false, false);
    return;
  }
  if ((c >= 0x60 && c <= 0x7f) || (c >= 0xd1 && c <= 0xd4)) {
    k->pending_cmd = c;
    return;
  }
  if (c >= 0xf0) {
    /* Pulse output lines: bit n clear pulses line n; line 0 is reset. */
    if (!(c & 1))
      reset_line(k);
    return;
  }
  switch (c) {
  case 0xa4: push(k, 0xf1, false, false); break; /* no password */
  case 0xa7: k->ram[0] |= CTR_AUXDIS; break;
  case 0xa8: k->ram[0] &= (uint8_t)~CTR_AUXDIS; break;
  case 0xa9: push(k, 0x00, false, false); break; /* aux interface ok */
  case 0xaa: push(k, 0x55, false, false); break; /* self-test passed */
  case 0xab: push(k, 0x00, false, false); break; /* kbd interface ok */
  case 0xad: k->ram[0] |= CTR_KBDDIS; break;
  case 0xae: k->ram[0] &= (uint8_t)~CTR_KBDDIS; break;
  case 0xc0: push(k, 0x80, false, false); break; /* input port */
  case 0xd0: push(k, k->outport, false, false); break;
  case 0xdd: k->outport &= (uint8_t)~OUT_A20; break;
  case 0xdf: k->outport |= OUT_A20; break;
  case 0xe0: push(k, 0x00, false, false); break; /* test inputs */
  default: break; /* unknown commands are ignored, as on hardware */
  }
}

static uint8_t status(const struct i8042 *k) {
  uint8_t s = ST_UNLOCKED;
  if (k->ram[0] & CTR_SYS)
    s |= ST_SYS;
  if (k->last_was_cmd)
    s |= ST_CMD;
  if (k->count > 0) {
    s |= ST_OBF;
    if (k->q[k->head].aux)
      s |= ST_AUXOBF;
    if (k->q[k->head].timeout)
      s |= ST_TIMEOUT;
  }
  return s;
}

static uint8_t data_read(struct i8042 *k) {
  if (k->count > 0) {
    k->last = k->q[k->head].byte;
    k->head = (k->head + 1) % QUEUE;
    k->count--;
  }
  return k->last; /* an empty buffer repeats the last byte */
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct i8042 *k = opaque;
  uint8_t *b = data;
  (void)vcpu, (void)len; /* ranges are one port wide: len is 1 */
  pthread_mutex_lock(&k->lock);
  if (port == k->cfg.cmd_port) {
    if (is_write)
      command(k, *b);
    else
      *b = status(k);
  } else {
    if (is_write)
      data_write(k, *b);
    else
      *b = data_read(k);
  }
  update_irq(k);
  pthread_mutex_unlock(&k->lock);
  return 0;
}

static void reset_locked(struct i8042 *k) {
  memset(k->ram, 0, sizeof(k->ram));
  k->ram[0] = CTR_RESET;
  k->outport = OUT_RESET | OUT_A20;
  k->last = 0;
  k->last_was_cmd = false;
  k->pending_cmd = k->kbd_pending = 0;
  k->scanset = 2;
  k->scanning = true;
  k->head = k->count = 0;
}

static void reset(vmm_dev *dev, void *opaque) {
  struct i8042 *k = opaque;
  (void)dev;
  pthread_mutex_lock(&k->lock);
  reset_locked(k);
  update_irq(k);
  pthread_mutex_unlock(&k->lock);
}

static int realize(vmm_dev *dev, void *opaque) {
  struct i8042 *k = opaque;
  k->dev = dev;
  int err =
      vmm_dev_io_register(dev, VMM_IO_PORT, k->cfg.data_port, 1, on_io, k);
  if (err == 0)
    err = vmm_dev_io_register(dev, VMM_IO_PORT, k->cfg.cmd_port, 1, on_io, k);
  return err;
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct i8042 *k = opaque;
  (void)dev;
  pthread_mutex_destroy(&k->lock);
  free(k);
}

#define STATE_VERSION 1

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct i8042 *k = opaque;
  (void)dev;
  pthread_mutex_lock(&k->lock);
  json_t *q = json_array();
  for (unsigned i = 0; q != NULL && i < k->count; i++) {
    const struct outbyte *o = &k->q[(k->head + i) % QUEUE];
    if (json_array_append_new(
            q, json_pack("[i, b, b]", o->byte, o->aux, o->timeout)) < 0) {
      json_decref(q);
      q = NULL;
    }
  }
  *out = json_pack("{s:s, s:i, s:o*, s:i, s:i, s:b, s:i, s:i, s:i, s:b, s:o*}",
                   "type", "i8042", "version", STATE_VERSION, "ram",
                   vmm__json_from_bytes(k->ram, sizeof(k->ram)), "outport",
                   k->outport, "last", k->last, "last_was_cmd", k->last_was_cmd,
                   "pending_cmd", k->pending_cmd, "kbd_pending", k->kbd_pending,
                   "scanset", k->scanset, "scanning", k->scanning, "queue", q);
  pthread_mutex_unlock(&k->lock);
  if (*out != NULL && (json_object_get(*out, "ram") == NULL ||
                       json_object_get(*out, "queue") == NULL)) {
    json_decref(*out);
    *out = NULL;
  }
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int restore(vmm_dev *dev, const json_t *in, void *opaque) {
  struct i8042 *k = opaque;
  struct i8042 n;
  uint64_t outport, last, pending, kbd_pending, scanset;
  size_t ramlen;
  (void)dev;
  if (vmm__json_header(in, "i8042", STATE_VERSION) < 0 ||
      vmm__json_bytes(in, "ram", n.ram, sizeof(n.ram), &ramlen) < 0 ||
      ramlen != sizeof(n.ram) ||
      vmm__json_uint(in, "outport", 255, &outport) < 0 ||
      vmm__json_uint(in, "last", 255, &last) < 0 ||
      vmm__json_bool(in, "last_was_cmd", &n.last_was_cmd) < 0 ||
      vmm__json_uint(in, "pending_cmd", 255, &pending) < 0 ||
      vmm__json_uint(in, "kbd_pending", 255, &kbd_pending) < 0 ||
      vmm__json_uint(in, "scanset", 3, &scanset) < 0 || scanset == 0 ||
      vmm__json_bool(in, "scanning", &n.scanning) < 0)
    return VMM_EINVAL;
  /* Only states this model can be in. */
  if ((pending != 0 && !(pending >= 0x60 && pending <= 0x7f) &&
       !(pending >= 0xd1 && pending <= 0xd4)) ||
      (kbd_pending != 0 && kbd_pending != 0xed && kbd_pending != 0xf0 &&
       kbd_pending != 0xf3))
    return VMM_EINVAL;
  json_t *q = json_object_get(in, "queue");
  if (!json_is_array(q) || json_array_size(q) > QUEUE)
    return VMM_EINVAL;
  n.count = (unsigned)json_array_size(q);
  for (unsigned i = 0; i < n.count; i++) {
    int byte, aux, timeout;
    if (json_unpack(json_array_get(q, i), "[i, b, b]", &byte, &aux, &timeout) <
            0 ||
        byte < 0 || byte > 255)
      return VMM_EINVAL;
    n.q[i] = (struct outbyte){(uint8_t)byte, aux != 0, timeout != 0};
  }
  pthread_mutex_lock(&k->lock);
  memcpy(k->ram, n.ram, sizeof(k->ram));
  k->outport = (uint8_t)outport;
  k->last = (uint8_t)last;
  k->last_was_cmd = n.last_was_cmd;
  k->pending_cmd = (uint8_t)pending;
  k->kbd_pending = (uint8_t)kbd_pending;
  k->scanset = (uint8_t)scanset;
  k->scanning = n.scanning;
  memcpy(k->q, n.q, n.count * sizeof(n.q[0]));
  k->head = 0;
  k->count = n.count;
  update_irq(k);
  pthread_mutex_unlock(&k->lock);
  return 0;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct i8042 *k = opaque;
  (void)dev;
  pthread_mutex_lock(&k->lock);
  *out = json_pack("{s:I, s:I, s:I}", "commands", (json_int_t)k->commands,
                   "resets", (json_int_t)k->resets, "dropped",
                   (json_int_t)k->dropped);
  pthread_mutex_unlock(&k->lock);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops i8042_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "i8042",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_i8042_create(vmm_vm *vm, const struct vmm_i8042_config *user,
                     vmm_dev **out) {
  struct vmm_i8042_config cfg;
  vmm_i8042_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  if (cfg.data_port == cfg.cmd_port || cfg.kbd_gsi >= VMM_IRQ_LINES ||
      cfg.aux_gsi >= VMM_IRQ_LINES || cfg.kbd_gsi == cfg.aux_gsi)
    return VMM_EINVAL;
  struct i8042 *k = calloc(1, sizeof(*k));
  if (k == NULL)
    return VMM_ENOMEM;
  if (pthread_mutex_init(&k->lock, NULL) != 0) {
    free(k);
    return VMM_ENOMEM;
  }
  k->vm = vm;
  k->cfg = cfg;
  k->cfg.name = NULL;
  reset_locked(k);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "i8042", &i8042_ops,
                        k, out);
}

int vmm_i8042_a20(vmm_dev *dev, bool *enabled) {
  struct i8042 *k = vmm__dev_data(dev, &i8042_ops);
  if (k == NULL || enabled == NULL)
    return VMM_EINVAL;
  pthread_mutex_lock(&k->lock);
  *enabled = (k->outport & OUT_A20) != 0;
  pthread_mutex_unlock(&k->lock);
  return 0;
}
