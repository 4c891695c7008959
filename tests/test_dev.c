/*
 * The device interface, through a device implemented here the way a host
 * program would: attachment and ownership, lookup, owned ranges, reset,
 * JSON state, stats, and device-driven interrupt lines.
 */
#include "devtest.h"

/* Order in which devices were destroyed, by their tag. */
static char destroyed[64];
static size_t ndestroyed;

struct toy {
  char tag;
  uint64_t port; /* first of two ports */
  int fail_with; /* realize's result after registering its first range */
  unsigned accesses, resets;
  uint8_t reg;
  bool try_attach_in_handler;
  int attach_rc, detach_rc;
  vmm_dev *self;
};

static const struct vmm_dev_ops toy_ops;

static int toy_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                  bool is_write, void *opaque) {
  struct toy *t = opaque;
  (void)vcpu, (void)port, (void)len;
  t->accesses++;
  if (t->try_attach_in_handler) {
    t->try_attach_in_handler = false;
    struct toy *inner = calloc(1, sizeof(*inner));
    inner->tag = 'i';
    inner->port = 0x7f0;
    t->attach_rc =
        vmm_dev_attach(vmm_dev_vm(t->self), "inner", &toy_ops, inner, NULL);
    t->detach_rc = vmm_dev_detach(t->self);
  }
  if (is_write)
    t->reg = *(uint8_t *)data;
  else
    *(uint8_t *)data = t->reg;
  return 0;
}

static int toy_realize(vmm_dev *dev, void *opaque) {
  struct toy *t = opaque;
  t->self = dev;
  int err = vmm_dev_io_register(dev, VMM_IO_PORT, t->port, 1, toy_io, t);
  if (err < 0 || t->fail_with < 0)
    return err < 0 ? err : t->fail_with;
  return vmm_dev_io_register(dev, VMM_IO_PORT, t->port + 1, 1, toy_io, t);
}

static void toy_reset(vmm_dev *dev, void *opaque) {
  struct toy *t = opaque;
  (void)dev;
  t->resets++;
  t->reg = 0;
}

static void toy_destroy(vmm_dev *dev, void *opaque) {
  struct toy *t = opaque;
  (void)dev;
  if (ndestroyed < sizeof(destroyed) - 1)
    destroyed[ndestroyed++] = t->tag;
  free(t);
}

static int toy_save(vmm_dev *dev, json_t **state, void *opaque) {
  struct toy *t = opaque;
  (void)dev;
  *state = json_pack("{s:i}", "reg", t->reg);
  return 0;
}

static int toy_restore(vmm_dev *dev, const json_t *state, void *opaque) {
  struct toy *t = opaque;
  int reg;
  (void)dev;
  if (json_unpack((json_t *)state, "{s:i}", "reg", &reg) < 0 || reg < 0 ||
      reg > 255)
    return VMM_EINVAL;
  t->reg = (uint8_t)reg;
  return 0;
}

static int toy_stats(vmm_dev *dev, json_t **stats, void *opaque) {
  struct toy *t = opaque;
  (void)dev;
  *stats = json_pack("{s:i}", "accesses", t->accesses);
  return 0;
}

static const struct vmm_dev_ops toy_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "toy",
    .realize = toy_realize,
    .reset = toy_reset,
    .destroy = toy_destroy,
    .save = toy_save,
    .restore = toy_restore,
    .stats = toy_stats,
};

/* Only the required callbacks. */
static const struct vmm_dev_ops bare_ops = {
    .size = offsetof(struct vmm_dev_ops, save),
    .realize = toy_realize,
    .destroy = toy_destroy,
};

static struct toy *toy_new(char tag, uint64_t port) {
  struct toy *t = calloc(1, sizeof(*t));
  assert_non_null(t);
  t->tag = tag;
  t->port = port;
  return t;
}

static void log_reset(void) {
  memset(destroyed, 0, sizeof(destroyed));
  ndestroyed = 0;
}

static void test_attach_find_detach(void **state) {
  (void)state;
  log_reset();
  vmm_vm *vm = dt_vm();
  vmm_dev *a, *b;
  struct toy *ta = toy_new('a', 0x700);
  assert_ok(vmm_dev_attach(vm, "toy-a", &toy_ops, ta, &a));
  assert_ok(vmm_dev_attach(vm, "toy-b", &bare_ops, toy_new('b', 0x710), &b));
  assert_string_equal(vmm_dev_name(a), "toy-a");
  assert_string_equal(vmm_dev_type(a), "toy");
  assert_string_equal(vmm_dev_type(b), "device"); /* ops without a type */
  assert_ptr_equal(vmm_dev_vm(a), vm);
  assert_ptr_equal(vmm_dev_opaque(a), ta);
  assert_ptr_equal(vmm_dev_find(vm, "toy-a"), a);
  assert_ptr_equal(vmm_dev_find(vm, "toy-b"), b);
  assert_null(vmm_dev_find(vm, "toy-c"));
  assert_null(vmm_dev_find(vm, NULL));

  vmm_dev *list[4];
  size_t n = 1;
  assert_vmm(vmm_dev_list(vm, list, &n), VMM_E2BIG);
  assert_int_equal(n, 2);
  assert_ptr_equal(list[0], a);
  n = 4;
  assert_ok(vmm_dev_list(vm, list, &n));
  assert_int_equal(n, 2);
  assert_ptr_equal(list[1], b);

  /* Both of the device's ports reach it. */
  dt_outb(vm, 0x701, 0x5a);
  assert_int_equal(dt_inb(vm, 0x700), 0x5a);
  assert_int_equal(ta->accesses, 2);

  /* Detach unregisters the ranges and destroys. */
  assert_ok(vmm_dev_detach(b));
  assert_int_equal(ndestroyed, 1);
  assert_int_equal(destroyed[0], 'b');
  uint8_t v;
  assert_int_equal(dt_pio(vm, 0x710, &v, 1, false), VMM_IO_DECLINED);
  assert_int_equal(dt_pio(vm, 0x711, &v, 1, false), VMM_IO_DECLINED);
  assert_null(vmm_dev_find(vm, "toy-b"));
  assert_ok(vmm_dev_detach(NULL));
  /* The name and ports are free again. */
  assert_ok(vmm_dev_attach(vm, "toy-b", &toy_ops, toy_new('c', 0x710), NULL));
  assert_ok(vmm_dev_attach(vm, "toy-d", &toy_ops, toy_new('d', 0x720), NULL));

  /* The VM destroys what is left, newest first. */
  assert_ok(vmm_vm_destroy(vm));
  assert_string_equal(destroyed, "bdca");
}

static void test_attach_errors(void **state) {
  (void)state;
  log_reset();
  vmm_vm *vm = dt_vm();
  assert_ok(vmm_dev_attach(vm, "one", &toy_ops, toy_new('1', 0x700), NULL));

  /* Every failure with a usable destroy callback releases the opaque. */
  assert_vmm(vmm_dev_attach(vm, "one", &toy_ops, toy_new('e', 0x740), NULL),
             VMM_EEXIST);
  assert_vmm(vmm_dev_attach(vm, "", &toy_ops, toy_new('n', 0x740), NULL),
             VMM_EINVAL);
  assert_vmm(
      vmm_dev_attach(vm, "with space", &toy_ops, toy_new('s', 0x740), NULL),
      VMM_EINVAL);
  char longname[VMM_DEV_NAME_MAX + 2];
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = 0;
  assert_vmm(vmm_dev_attach(vm, longname, &toy_ops, toy_new('l', 0x740), NULL),
             VMM_EINVAL);
  longname[VMM_DEV_NAME_MAX] = 0; /* exactly the maximum is fine */
  assert_ok(vmm_dev_attach(vm, longname, &toy_ops, toy_new('L', 0x740), NULL));
  assert_vmm(vmm_dev_attach(NULL, "x", &toy_ops, toy_new('v', 0x750), NULL),
             VMM_EINVAL);
  struct vmm_dev_ops big = toy_ops;
  big.size = sizeof(big) + 8;
  assert_vmm(vmm_dev_attach(vm, "big", &big, toy_new('g', 0x750), NULL),
             VMM_EINVAL);
  struct vmm_dev_ops norealize = toy_ops;
  norealize.realize = NULL;
  assert_vmm(vmm_dev_attach(vm, "nr", &norealize, toy_new('r', 0x750), NULL),
             VMM_EINVAL);
  assert_string_equal(destroyed, "enslvgr");

  /* Without a destroy callback nothing can be called. */
  struct vmm_dev_ops nodestroy = toy_ops;
  nodestroy.destroy = NULL;
  struct toy *keep = toy_new('k', 0x750);
  assert_vmm(vmm_dev_attach(vm, "nd", &nodestroy, keep, NULL), VMM_EINVAL);
  assert_vmm(vmm_dev_attach(vm, "nd", NULL, keep, NULL), VMM_EINVAL);
  free(keep);
  assert_int_equal(ndestroyed, 7);

  /* realize failing after it registered a range: the range is released. */
  struct toy *f = toy_new('f', 0x760);
  f->fail_with = VMM_EIO;
  assert_vmm(vmm_dev_attach(vm, "fails", &toy_ops, f, NULL), VMM_EIO);
  assert_int_equal(destroyed[7], 'f');
  uint8_t v;
  assert_int_equal(dt_pio(vm, 0x760, &v, 1, false), VMM_IO_DECLINED);
  /* realize failing on an overlap with another device's range. */
  assert_vmm(vmm_dev_attach(vm, "overlap", &toy_ops, toy_new('o', 0x701), NULL),
             VMM_EOVERLAP);
  assert_int_equal(destroyed[8], 'o');
  assert_null(vmm_dev_find(vm, "overlap"));
  assert_int_equal(dt_inb(vm, 0x701), 0); /* still the first device's */
  assert_ok(vmm_vm_destroy(vm));
}

static void test_no_attach_or_detach_from_handler(void **state) {
  (void)state;
  log_reset();
  vmm_vm *vm = dt_vm();
  struct toy *t = toy_new('h', 0x700);
  assert_ok(vmm_dev_attach(vm, "h", &toy_ops, t, NULL));
  t->try_attach_in_handler = true;
  dt_outb(vm, 0x700, 1);
  assert_vmm(t->attach_rc, VMM_ESTATE);
  assert_vmm(t->detach_rc, VMM_ESTATE);
  assert_null(vmm_dev_find(vm, "inner"));
  assert_string_equal(destroyed, "i"); /* the refused one was released */
  assert_non_null(vmm_dev_find(vm, "h"));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_reset_save_restore_stats(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *a, *b;
  struct toy *ta = toy_new('a', 0x700), *tb = toy_new('b', 0x710);
  assert_ok(vmm_dev_attach(vm, "a", &toy_ops, ta, &a));
  assert_ok(vmm_dev_attach(vm, "b", &bare_ops, tb, &b));

  dt_outb(vm, 0x700, 0x33);
  json_t *s = NULL;
  assert_ok(vmm_dev_save(a, &s));
  assert_int_equal(dt_json_int(s, "reg"), 0x33);
  assert_ok(vmm_dev_reset(a));
  assert_int_equal(ta->resets, 1);
  assert_int_equal(dt_inb(vm, 0x700), 0);
  assert_ok(vmm_dev_restore(a, s));
  assert_int_equal(dt_inb(vm, 0x700), 0x33);
  json_decref(s);
  json_t *bad = json_pack("{s:i}", "reg", 300);
  assert_vmm(vmm_dev_restore(a, bad), VMM_EINVAL);
  json_decref(bad);
  assert_int_equal(dt_stat(a, "accesses"), 3);

  /* A device without the optional callbacks. */
  assert_vmm(vmm_dev_save(b, &s), VMM_ENOTSUP);
  json_t *empty = json_object();
  assert_vmm(vmm_dev_restore(b, empty), VMM_ENOTSUP);
  json_decref(empty);
  assert_vmm(vmm_dev_stats(b, &s), VMM_ENOTSUP);
  assert_ok(vmm_dev_reset(b)); /* no reset callback: nothing to do */
  assert_ok(vmm_dev_reset_all(vm));
  assert_int_equal(ta->resets, 2);
  assert_int_equal(tb->resets, 0);
  assert_vmm(vmm_dev_save(NULL, &s), VMM_EINVAL);
  assert_vmm(vmm_dev_reset(NULL), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

/* Interrupt lines: OR of the devices, forwarded on change. */
struct irq_log {
  unsigned n;
  uint32_t gsi[16];
  bool level[16];
};

static void on_irq(vmm_vm *vm, uint32_t gsi, bool level, void *opaque) {
  struct irq_log *l = opaque;
  (void)vm;
  if (l->n < 16) {
    l->gsi[l->n] = gsi;
    l->level[l->n] = level;
  }
  l->n++;
}

static bool line(vmm_vm *vm, uint32_t gsi) {
  bool level = false;
  assert_ok(vmm_vm_irq_get(vm, gsi, &level));
  return level;
}

static void irq_lines(uint32_t flags) {
  vmm_vm *vm = dt_vm_flags(flags, 1);
  vmm_dev *a, *b;
  assert_ok(vmm_dev_attach(vm, "a", &toy_ops, toy_new('a', 0x700), &a));
  assert_ok(vmm_dev_attach(vm, "b", &toy_ops, toy_new('b', 0x710), &b));
  struct irq_log log = {0};
  assert_ok(vmm_vm_set_irq_handler(vm, on_irq, &log));

  assert_false(line(vm, 5));
  assert_ok(vmm_dev_irq_set(a, 5, true));
  assert_true(line(vm, 5));
  assert_ok(vmm_dev_irq_set(a, 5, true)); /* no change, no call */
  assert_ok(vmm_dev_irq_set(b, 5, true));
  assert_int_equal(log.n, 1);
  assert_ok(vmm_dev_irq_set(a, 5, false));
  assert_true(line(vm, 5)); /* b still asserts it */
  assert_int_equal(log.n, 1);
  assert_ok(vmm_dev_irq_set(b, 5, false));
  assert_false(line(vm, 5));
  assert_int_equal(log.n, 2);
  assert_int_equal(log.gsi[0], 5);
  assert_true(log.level[0]);
  assert_false(log.level[1]);

  /* Deasserting what one never asserted changes nothing. */
  assert_ok(vmm_dev_irq_set(a, 7, false));
  assert_int_equal(log.n, 2);
  /* The highest line, and the first one out of range. */
  assert_ok(vmm_dev_irq_set(a, VMM_IRQ_LINES - 1, true));
  assert_true(line(vm, VMM_IRQ_LINES - 1));
  assert_vmm(vmm_dev_irq_set(a, VMM_IRQ_LINES, true), VMM_EINVAL);
  bool lv;
  assert_vmm(vmm_vm_irq_get(vm, VMM_IRQ_LINES, &lv), VMM_EINVAL);
  assert_vmm(vmm_dev_irq_set(NULL, 1, true), VMM_EINVAL);

  /* A device that goes away releases its lines. */
  assert_ok(vmm_dev_irq_set(b, 3, true));
  unsigned before = log.n;
  assert_ok(vmm_dev_detach(b));
  assert_false(line(vm, 3));
  assert_int_equal(log.n, before + 1);
  assert_int_equal(log.gsi[before], 3);
  assert_false(log.level[before]);

  /* The host is one more source, ORed with the devices (vmm_vm_irq_line()
     needs interrupt controllers). */
  if (flags != 0) {
    unsigned mark = log.n;
    assert_ok(vmm_vm_irq_line(vm, 6, true));
    assert_true(line(vm, 6));
    assert_ok(vmm_dev_irq_set(a, 6, true));
    assert_ok(vmm_vm_irq_line(vm, 6, false));
    assert_true(line(vm, 6)); /* the device still asserts it */
    assert_ok(vmm_dev_irq_set(a, 6, false));
    assert_false(line(vm, 6));
    assert_int_equal(log.n, mark + 2);
    assert_ok(vmm_vm_irq_line(vm, 6, true));
    assert_ok(vmm_dev_detach(a)); /* the host's level stays */
    assert_true(line(vm, 6));
    a = NULL;
  }

  /* Clearing the handler: lines are still tracked. */
  unsigned calls = log.n;
  assert_ok(vmm_vm_set_irq_handler(vm, NULL, NULL));
  if (a == NULL)
    assert_ok(vmm_dev_attach(vm, "a", &toy_ops, toy_new('a', 0x700), &a));
  assert_ok(vmm_dev_irq_set(a, 4, true));
  assert_true(line(vm, 4));
  assert_int_equal(log.n, calls);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_irq_lines_recorded(void **state) {
  (void)state;
  irq_lines(0);
}

/* With the engine's interrupt controller the same calls succeed (KVM:
   KVM_IRQ_LINE on the in-kernel PIC/IOAPIC). */
static void test_irq_lines_irqchip(void **state) {
  (void)state;
  irq_lines(VMM_VM_IRQCHIP);
}

/* And with the library's user-space platform. */
static void test_irq_lines_user_irqchip(void **state) {
  (void)state;
  irq_lines(VMM_VM_IRQCHIP_USER);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_attach_find_detach),
      cmocka_unit_test(test_attach_errors),
      cmocka_unit_test(test_no_attach_or_detach_from_handler),
      cmocka_unit_test(test_reset_save_restore_stats),
      cmocka_unit_test(test_irq_lines_recorded),
      cmocka_unit_test(test_irq_lines_irqchip),
      cmocka_unit_test(test_irq_lines_user_irqchip),
  };
  return vmmt_run_group(tests);
}
