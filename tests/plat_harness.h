/*
 * A harness driving the user-space interrupt platform (8259A pair, 8254,
 * IOAPIC, two local APICs) with arbitrary input, as a hostile guest
 * (register accesses of any width and alignment at and around the
 * devices), a hostile snapshot (saved states with any member, at any
 * depth, replaced) and the CPU side (INTA cycles, EOIs, TPR, the
 * TSC-deadline MSR, time passing) would. Used by tests/test_plat_fuzz.c
 * with pseudo-random inputs and by the libFuzzer target
 * fuzz/fuzz_platform.c.
 *
 * Input: a sequence of operations, each an opcode byte and its operands;
 * the input ending mid-operation ends it. Time is the clock's manual
 * source, so an input replays exactly. Checked: nothing crashes (the
 * sanitizers watch), an interrupt reported pending is always acknowledged
 * with a vector and one not reported never is, every restore answers 0
 * or -VMM_EINVAL and an accepted state saves again to the same JSON, and
 * after the devices are reset no vCPU has anything pending.
 */
#ifndef LIBVMM_PLAT_HARNESS_H
#define LIBVMM_PLAT_HARNESS_H

#include <jansson.h>
#include <libvmm/vmm.h>
#include <stdio.h> /* PH_DEBUG: print the states behind a failure */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PH_DEVS 4 /* pic, pit, ioapic, lapic */

struct ph {
  vmm_vm *vm;
  vmm_vcpu *vcpu[2];
  vmm_dev *dev[PH_DEVS];
  const char *failure; /* first broken invariant, or NULL */
};

static const uint16_t ph_ports[] = {
    0x1f, 0x20, 0x21, 0x22, 0x9f, 0xa0, 0xa1,  0xa2,  0x3f,  0x40,  0x41,
    0x42, 0x43, 0x44, 0x60, 0x61, 0x62, 0x4cf, 0x4d0, 0x4d1, 0x4d2, 0x3ff,
};

static inline void ph_fail(struct ph *h, const char *what) {
  if (h->failure == NULL)
    h->failure = what;
}

/* Returns 0, or a negative code if the VM cannot be built here. */
static inline int ph_init(struct ph *h, enum vmm_engine_kind engine) {
  struct vmm_vm_config cfg;
  memset(h, 0, sizeof(*h));
  vmm_vm_config_init(&cfg);
  cfg.engine = engine;
  cfg.max_vcpus = 2;
  cfg.flags = VMM_VM_IRQCHIP_USER | VMM_VM_PIT;
  int err = vmm_vm_create(&cfg, &h->vm);
  if (err < 0)
    return err;
  if ((err = vmm__clock_set_manual(h->vm->clock, 0)) < 0 ||
      (err = vmm_mem_slot_add(h->vm, 0, 2 << 20, NULL, 0, NULL)) < 0 ||
      (err = vmm_vcpu_create(h->vm, 0, &h->vcpu[0])) < 0 ||
      (err = vmm_vcpu_create(h->vm, 1, &h->vcpu[1])) < 0) {
    vmm_vm_destroy(h->vm);
    return err;
  }
  static const char *const names[PH_DEVS] = {"pic", "pit", "ioapic", "lapic"};
  for (int i = 0; i < PH_DEVS; i++)
    h->dev[i] = vmm_dev_find(h->vm, names[i]);
  return 0;
}

static inline void ph_fini(struct ph *h) {
  vmm_vm_destroy(h->vm);
}

/* Save, restore, save again: the two saves must be equal. */
static inline void ph_roundtrip(struct ph *h, vmm_dev *dev) {
  json_t *a = NULL, *b = NULL;
  if (vmm_dev_save(dev, &a) < 0)
    return ph_fail(h, "save failed");
  if (vmm_dev_restore(dev, a) != 0) {
#ifdef PH_DEBUG
    char *j = json_dumps(a, JSON_SORT_KEYS);
    fprintf(stderr, "refused %s: %s\n", vmm_dev_name(dev), j);
    free(j);
#endif
    ph_fail(h, "a saved state was refused");
  } else if (vmm_dev_save(dev, &b) < 0 || !json_equal(a, b)) {
#ifdef PH_DEBUG
    char *j = json_dumps(a, JSON_SORT_KEYS), *k = json_dumps(b, JSON_SORT_KEYS);
    fprintf(stderr, "changed %s:\n%s\n%s\n", vmm_dev_name(dev), j, k);
    free(j);
    free(k);
#endif
    ph_fail(h, "restore(save()) changed the state");
  }
  json_decref(a);
  json_decref(b);
}

/* A JSON value made from input bytes. */
static inline json_t *ph_value(uint8_t kind, const uint8_t *v, size_t n) {
  int64_t x = 0;
  memcpy(&x, v, n < 8 ? n : 8);
  switch (kind % 7) {
  case 0: return json_integer(x);
  case 1: return json_integer(x & 0x1ff);
  case 2: return json_integer(-(x & 0xff));
  case 3: return json_stringn((const char *)v, n);
  case 4: {
    json_t *a = json_array();
    for (size_t j = 0; j < n; j++)
      json_array_append_new(a, json_integer(v[j]));
    return a;
  }
  case 5: return json_null();
  default: return json_boolean(x & 1);
  }
}

/* Replace one member of dev's saved state, at a depth and position the
   input picks, restore it, and check the answer. */
static inline void ph_mutate(struct ph *h, vmm_dev *dev, const uint8_t *d,
                             size_t n) {
  json_t *s = NULL;
  if (n < 4 || vmm_dev_save(dev, &s) < 0)
    return;
  json_t *node = s;
  size_t i = 0;
  /* Descend while the input says so and there is somewhere to go. */
  while (i + 1 < n && (d[i] & 0x80)) {
    uint8_t pick = d[i + 1];
    json_t *child = NULL;
    if (json_is_object(node) && json_object_size(node) > 0) {
      size_t k = pick % json_object_size(node), j = 0;
      const char *key;
      json_t *val;
      json_object_foreach(node, key, val) {
        if (j++ == k) {
          child = val;
          break;
        }
      }
    } else if (json_is_array(node) && json_array_size(node) > 0) {
      child = json_array_get(node, pick % json_array_size(node));
    }
    if (child == NULL || (!json_is_object(child) && !json_is_array(child)))
      break;
    node = child;
    i += 2;
  }
  if (i + 2 >= n) {
    json_decref(s);
    return;
  }
  uint8_t pick = d[i], kind = d[i + 1];
  json_t *nv = ph_value(kind, d + i + 2, n - i - 2);
  if (json_is_object(node)) {
    size_t count = json_object_size(node), k = pick % (count + 1), j = 0;
    const char *key;
    json_t *val;
    void *tmp;
    bool set = false;
    json_object_foreach_safe(node, tmp, key, val) {
      (void)val;
      if (j++ == k) {
        if (kind & 0x80)
          json_object_del(node, key);
        else
          json_object_set(node, key, nv);
        set = true;
        break;
      }
    }
    if (!set)
      json_object_set(node, "junk", nv);
  } else if (json_is_array(node)) {
    size_t count = json_array_size(node);
    if (count > 0 && !(kind & 0x80))
      json_array_set(node, pick % count, nv);
    else if (count > 0)
      json_array_remove(node, pick % count);
    else
      json_array_append(node, nv);
  }
  json_decref(nv);
  int rc = vmm_dev_restore(dev, s);
  if (rc != 0 && rc != VMM_EINVAL)
    ph_fail(h, "restore gave neither 0 nor -VMM_EINVAL");
  if (rc == 0)
    ph_roundtrip(h, dev);
  json_decref(s);
}

/* The CPU's INTA: pending and acknowledgment must agree. */
static inline void ph_inta(struct ph *h, unsigned cpu, bool eoi) {
  vmm_vcpu *v = h->vcpu[cpu];
  bool pending = vmm__vcpu_irq_pending(v);
  int vector = vmm__vcpu_irq_ack(v);
  if (pending != (vector >= 0))
    ph_fail(h, "irq_pending() and irq_ack() disagree");
  if (vector > 255)
    ph_fail(h, "a vector out of range");
  if (eoi) {
    uint32_t zero = 0;
    vmm__iobus_dispatch(&h->vm->mmio, v, 0xfee000b0, &zero, 4, true);
  }
}

/* What the front end does with INIT, SIPI and NMIs: consume them. */
static inline void ph_consume_events(struct ph *h) {
  for (int i = 0; i < 2; i++) {
    vmm_vcpu *v = h->vcpu[i];
    vmm__vcpu_nmi_ack(v);
    atomic_fetch_and(&v->irq_bits, ~(VMM__IRQ_INIT | VMM__IRQ_SIPI));
    atomic_store(&v->pending_irq, 0);
  }
}

/* Start of every input: devices reset, lines low, events consumed, time
   on a fixed phase (port 0x61's refresh bit depends on it). */
static inline void ph_start(struct ph *h) {
  for (uint32_t gsi = 0; gsi < VMM_IRQ_LINES; gsi++)
    vmm_vm_irq_line(h->vm, gsi, false);
  for (int i = 0; i < PH_DEVS; i++)
    vmm_dev_reset(h->dev[i]);
  ph_consume_events(h);
  const int64_t phase = 30170000; /* a multiple of 2 x 15.085 us */
  int64_t now = vmm__clock_now(h->vm->clock);
  vmm__clock_advance(h->vm->clock, (now / phase + 1) * phase);
}

static inline void ph_end(struct ph *h) {
  for (uint32_t gsi = 0; gsi < VMM_IRQ_LINES; gsi++)
    vmm_vm_irq_line(h->vm, gsi, false);
  for (int i = 0; i < PH_DEVS; i++)
    vmm_dev_reset(h->dev[i]);
  ph_consume_events(h);
  for (int i = 0; i < 2; i++)
    if (vmm__vcpu_irq_pending(h->vcpu[i]))
      ph_fail(h, "an interrupt pending after every device was reset");
}

/*
 * Run one input. Returns h->failure (NULL when all held).
 */
static inline const char *ph_run(struct ph *h, const uint8_t *d, size_t n) {
  h->failure = NULL;
  ph_start(h);
  size_t i = 0;
  while (i + 2 <= n) {
    uint8_t op = d[i++], a = d[i++];
    uint64_t val = 0;
    size_t take = n - i < 8 ? n - i : 8;
    memcpy(&val, d + i, take);
    uint32_t lens[] = {1, 2, 4, 8};
    uint32_t len = lens[(op >> 4) & 3];
    vmm_vcpu *cpu = (a & 0x80) ? NULL : h->vcpu[(a >> 6) & 1];
    switch (op % 16) {
    case 0: /* port write */
    case 1: /* port read */ {
      uint16_t port = ph_ports[a % (sizeof(ph_ports) / sizeof(ph_ports[0]))];
      uint32_t v = (uint32_t)val;
      i += 4;
      if (len > 4)
        len = 4;
      if (vmm__iobus_dispatch(&h->vm->pio, cpu, port, &v, len, op % 16 == 0) <
          0)
        ph_fail(h, "a port handler failed");
      break;
    }
    case 2: /* local APIC write */
    case 3: /* local APIC read */
    case 4: /* IOAPIC write */
    case 5: /* IOAPIC read */ {
      bool apic = op % 16 < 4;
      uint64_t off = (val & 0xffff) % (apic ? 0x1010 : 0x1010);
      if (op & 0x40)
        off &= ~(uint64_t)0xf; /* mostly register-aligned */
      uint64_t base = apic ? 0xfee00000ull : 0xfec00000ull;
      uint64_t v = val >> 16;
      i += 8;
      if (vmm__iobus_dispatch(&h->vm->mmio, cpu, base + off, &v, len,
                              op % 2 == 0) < 0)
        ph_fail(h, "an MMIO handler failed");
      break;
    }
    case 6: /* a line */
      vmm_vm_irq_line(h->vm, a % VMM_IRQ_LINES, op & 0x80);
      break;
    case 7: { /* time passes: up to 65 ms, in ns steps of varying size */
      uint64_t step = (val & 0xffff) * (1ull << ((op >> 4) & 0xf));
      i += 2;
      int64_t now = vmm__clock_now(h->vm->clock);
      vmm__clock_advance(h->vm->clock, now + (int64_t)(step % 65000000));
      break;
    }
    case 8: /* INTA, with or without EOI */
      ph_inta(h, (a >> 6) & 1, op & 0x80);
      break;
    case 9: ph_consume_events(h); break;
    case 10: /* CR8 */
      vmm__vcpu_set_tpr(h->vcpu[a & 1], a >> 1);
      if (vmm__vcpu_tpr(h->vcpu[a & 1]) != ((a >> 1) & 0xf))
        ph_fail(h, "CR8 does not read back as written");
      break;
    case 11: { /* IA32_TSC_DEADLINE against a guest TSC of 0 */
      struct vmm__irqchip *hub = h->vm->irqchip;
      uint64_t v = val;
      i += 8;
      vmm__irqchip_lock(hub);
      if (hub->lapic != NULL)
        vmm__lapic_msr(hub->lapic, a & 1, 0x6e0, &v, op & 0x80, 0);
      vmm__irqchip_unlock(hub);
      break;
    }
    case 12: { /* a hostile saved state */
      size_t len2 = a % 32 < n - i ? a % 32 : n - i;
      ph_mutate(h, h->dev[op >> 6], d + i, len2);
      i += len2;
      break;
    }
    case 13: ph_roundtrip(h, h->dev[a % PH_DEVS]); break;
    case 14: vmm_dev_reset(h->dev[a % PH_DEVS]); break;
    default: { /* the MP table, anywhere */
      struct vmm_mptable_config c;
      vmm_mptable_config_init(&c);
      c.addr = (val & 0xffffff) << (a & 7);
      c.cpus = a >> 6;
      i += 4;
      int rc = vmm_mptable_write(h->vm, &c, NULL);
      if (rc != 0 && rc != VMM_EINVAL && rc != VMM_ENOMAP)
        ph_fail(h, "the MP table writer gave an unexpected error");
      break;
    }
    }
  }
  ph_end(h);
  return h->failure;
}

#endif
