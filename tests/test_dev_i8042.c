/*
 * The i8042 keyboard controller: the command set Linux's probe uses, the
 * keyboard's answers, interrupts, the reset line and A20, saved state, and
 * a guest that self-tests the controller and reboots through it.
 */
#include "devtest.h"

#define DATA 0x60
#define CMD 0x64

static vmm_dev *i8042(vmm_vm *vm) {
  struct vmm_i8042_config cfg;
  vmm_dev *dev = NULL;
  vmm_i8042_config_init(&cfg);
  assert_ok(vmm_i8042_create(vm, &cfg, &dev));
  return dev;
}

static uint8_t status(vmm_vm *vm) {
  return dt_inb(vm, CMD);
}

/* Read one byte the controller has for us, checking OBF and its source. */
static uint8_t read_out(vmm_vm *vm, bool aux) {
  uint8_t s = status(vm);
  assert_true(s & 0x01);
  assert_int_equal((s & 0x20) != 0, aux);
  return dt_inb(vm, DATA);
}

static void assert_empty(vmm_vm *vm) {
  assert_false(status(vm) & 0x01);
}

static bool line(vmm_vm *vm, uint32_t gsi) {
  bool l;
  assert_ok(vmm_vm_irq_get(vm, gsi, &l));
  return l;
}

static void test_controller_commands(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  i8042(vm);
  assert_empty(vm);
  assert_true(status(vm) & 0x10); /* keyboard not inhibited */

  dt_outb(vm, CMD, 0xaa);         /* self-test */
  assert_true(status(vm) & 0x08); /* last write was a command */
  assert_int_equal(read_out(vm, false), 0x55);
  assert_empty(vm);
  dt_outb(vm, CMD, 0xab); /* keyboard interface test */
  assert_int_equal(read_out(vm, false), 0x00);
  dt_outb(vm, CMD, 0xa9); /* aux interface test */
  assert_int_equal(read_out(vm, false), 0x00);

  /* Command byte: read, write, read back; SYS is mirrored in status. */
  dt_outb(vm, CMD, 0x20);
  uint8_t ctr = read_out(vm, false);
  assert_int_equal(ctr, 0x65);
  assert_true(status(vm) & 0x04);
  dt_outb(vm, CMD, 0x60);
  dt_outb(vm, DATA, 0x30); /* interrupts off, both ports disabled, no SYS */
  assert_false(status(vm) & 0x08);
  dt_outb(vm, CMD, 0x20);
  assert_int_equal(read_out(vm, false), 0x30);
  assert_false(status(vm) & 0x04);
  /* Enable/disable commands edit the same byte. */
  dt_outb(vm, CMD, 0xae);
  dt_outb(vm, CMD, 0xa8);
  dt_outb(vm, CMD, 0x20);
  assert_int_equal(read_out(vm, false), 0x00);
  /* Other RAM bytes. */
  dt_outb(vm, CMD, 0x65);
  dt_outb(vm, DATA, 0x9c);
  dt_outb(vm, CMD, 0x25);
  assert_int_equal(read_out(vm, false), 0x9c);

  /* Reading an empty buffer repeats the last byte. */
  assert_int_equal(dt_inb(vm, DATA), 0x9c);
  /* Unknown commands are ignored. */
  dt_outb(vm, CMD, 0xc8);
  assert_empty(vm);
  dt_outb(vm, CMD, 0xc0); /* input port */
  assert_int_equal(read_out(vm, false), 0x80);
  dt_outb(vm, CMD, 0xa4); /* password: none installed */
  assert_int_equal(read_out(vm, false), 0xf1);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_keyboard_and_aux(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  i8042(vm);
  dt_outb(vm, DATA, 0xff); /* keyboard reset */
  assert_int_equal(read_out(vm, false), 0xfa);
  assert_int_equal(read_out(vm, false), 0xaa);
  dt_outb(vm, DATA, 0xf2); /* identify, translated by default */
  assert_int_equal(read_out(vm, false), 0xfa);
  assert_int_equal(read_out(vm, false), 0xab);
  assert_int_equal(read_out(vm, false), 0x41);
  dt_outb(vm, DATA, 0xed); /* LEDs + parameter */
  assert_int_equal(read_out(vm, false), 0xfa);
  dt_outb(vm, DATA, 0x07);
  assert_int_equal(read_out(vm, false), 0xfa);
  dt_outb(vm, DATA, 0xf0); /* scan-code set: set 3, then query */
  assert_int_equal(read_out(vm, false), 0xfa);
  dt_outb(vm, DATA, 3);
  assert_int_equal(read_out(vm, false), 0xfa);
  dt_outb(vm, DATA, 0xf0);
  assert_int_equal(read_out(vm, false), 0xfa);
  dt_outb(vm, DATA, 0);
  assert_int_equal(read_out(vm, false), 0xfa);
  assert_int_equal(read_out(vm, false), 3);
  dt_outb(vm, DATA, 0xf0); /* an impossible set is refused */
  assert_int_equal(read_out(vm, false), 0xfa);
  dt_outb(vm, DATA, 9);
  assert_int_equal(read_out(vm, false), 0xfe);
  dt_outb(vm, DATA, 0xee); /* echo */
  assert_int_equal(read_out(vm, false), 0xee);
  dt_outb(vm, DATA, 0x42); /* unknown keyboard command */
  assert_int_equal(read_out(vm, false), 0xfe);

  /* Aux loopback (0xD3) returns the byte as aux data; a command for the
     absent mouse (0xD4) answers at once with a timeout. */
  dt_outb(vm, CMD, 0xd3);
  dt_outb(vm, DATA, 0x5a);
  assert_int_equal(read_out(vm, true), 0x5a);
  dt_outb(vm, CMD, 0xd4);
  dt_outb(vm, DATA, 0xf2);
  assert_true(status(vm) & 0x40);
  assert_int_equal(read_out(vm, true), 0xfe);
  assert_false(status(vm) & 0x40);
  /* Keyboard buffer write (0xD2). */
  dt_outb(vm, CMD, 0xd2);
  dt_outb(vm, DATA, 0x1c);
  assert_int_equal(read_out(vm, false), 0x1c);

  /* More bytes than the controller holds are dropped, never overflow. */
  for (int i = 0; i < 40; i++)
    dt_outb(vm, DATA, 0xee);
  int got = 0;
  while (status(vm) & 1) {
    assert_int_equal(dt_inb(vm, DATA), 0xee);
    got++;
  }
  assert_int_equal(got, 16);
  assert_int_equal(dt_stat(vmm_dev_find(vm, "i8042"), "dropped"), 24);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_interrupts(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  i8042(vm);
  /* The default command byte enables the keyboard interrupt only. */
  assert_false(line(vm, 1));
  dt_outb(vm, DATA, 0xee);
  assert_true(line(vm, 1));
  dt_inb(vm, DATA);
  assert_false(line(vm, 1));
  dt_outb(vm, CMD, 0xd3);
  dt_outb(vm, DATA, 1);
  assert_false(line(vm, 12)); /* aux interrupt disabled */
  dt_inb(vm, DATA);
  dt_outb(vm, CMD, 0x60);
  dt_outb(vm, DATA, 0x03); /* both interrupts */
  dt_outb(vm, CMD, 0xd3);
  dt_outb(vm, DATA, 1);
  assert_true(line(vm, 12));
  assert_false(line(vm, 1));
  dt_inb(vm, DATA);
  assert_false(line(vm, 12));
  /* Output port bits 4/5 reflect the buffer when the port is read. */
  dt_outb(vm, DATA, 0xee);
  dt_outb(vm, CMD, 0xd0);
  assert_int_equal(read_out(vm, false), 0xee);
  assert_int_equal(read_out(vm, false) & 0x33, 0x13);
  assert_ok(vmm_vm_destroy(vm));
}

static uint32_t pending(vmm_vm *vm) {
  return (uint32_t)(atomic_load(&vm->system_event) >> 32);
}

static void test_reset_line_and_a20(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = i8042(vm);
  bool a20;
  assert_ok(vmm_i8042_a20(dev, &a20));
  assert_true(a20);
  dt_outb(vm, CMD, 0xdd);
  assert_ok(vmm_i8042_a20(dev, &a20));
  assert_false(a20);
  dt_outb(vm, CMD, 0xd1); /* output port: A20 on, reset line released */
  dt_outb(vm, DATA, 0x03);
  assert_ok(vmm_i8042_a20(dev, &a20));
  assert_true(a20);
  assert_int_equal(pending(vm), 0);

  /* Pulses that leave line 0 alone do nothing; 0xFE resets. */
  dt_outb(vm, CMD, 0xff);
  dt_outb(vm, CMD, 0xf1);
  assert_int_equal(pending(vm), 0);
  dt_outb(vm, CMD, 0xfe);
  assert_int_equal(pending(vm), VMM_SYSTEM_RESET);
  assert_ok(vmm_vm_system_event_clear(vm));
  dt_outb(vm, CMD, 0xf0);
  assert_int_equal(pending(vm), VMM_SYSTEM_RESET);
  assert_ok(vmm_vm_system_event_clear(vm));
  /* Writing the output port with bit 0 clear asserts reset too. */
  dt_outb(vm, CMD, 0xd1);
  dt_outb(vm, DATA, 0x02);
  assert_int_equal(pending(vm), VMM_SYSTEM_RESET);
  assert_ok(vmm_vm_system_event_clear(vm));
  assert_int_equal(dt_stat(dev, "resets"), 3);

  /* Wider accesses are not the device's: its ports are one byte wide. */
  uint16_t w = 0xfe;
  assert_int_equal(dt_pio(vm, CMD, &w, 2, true), VMM_IO_DECLINED);
  assert_int_equal(pending(vm), 0);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_state_and_config(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = i8042(vm);
  dt_outb(vm, CMD, 0x60);
  dt_outb(vm, DATA, 0x47);
  dt_outb(vm, DATA, 0xf2); /* three bytes waiting */
  dt_outb(vm, CMD, 0xd1);  /* and a command waiting for its data */
  json_t *s = NULL;
  assert_ok(vmm_dev_save(dev, &s));
  assert_ok(vmm_dev_reset(dev));
  assert_empty(vm);
  assert_ok(vmm_dev_restore(dev, s));
  dt_outb(vm, DATA, 0x02); /* the pending 0xD1 takes it: reset asserted */
  assert_int_equal(pending(vm), VMM_SYSTEM_RESET);
  assert_ok(vmm_vm_system_event_clear(vm));
  assert_int_equal(read_out(vm, false), 0xfa);
  assert_int_equal(read_out(vm, false), 0xab);
  assert_int_equal(read_out(vm, false), 0x41);
  dt_outb(vm, CMD, 0x20);
  assert_int_equal(read_out(vm, false), 0x47);

  /* Malformed states are refused and change nothing. */
  json_t *bad = json_deep_copy(s);
  json_object_set_new(bad, "pending_cmd", json_integer(0xaa));
  assert_vmm(vmm_dev_restore(dev, bad), VMM_EINVAL);
  json_decref(bad);
  bad = json_deep_copy(s);
  json_t *q = json_object_get(bad, "queue");
  for (int i = 0; i < 20; i++)
    json_array_append_new(q, json_pack("[i, b, b]", 1, 0, 0));
  assert_vmm(vmm_dev_restore(dev, bad), VMM_EINVAL);
  json_decref(bad);
  bad = json_deep_copy(s);
  json_object_set_new(bad, "type", json_string("cmos"));
  assert_vmm(vmm_dev_restore(dev, bad), VMM_EINVAL);
  json_decref(bad);
  assert_empty(vm);
  json_decref(s);

  struct vmm_i8042_config cfg;
  vmm_i8042_config_init(&cfg);
  cfg.name = "kbd2";
  cfg.cmd_port = cfg.data_port;
  assert_vmm(vmm_i8042_create(vm, &cfg, NULL), VMM_EINVAL);
  vmm_i8042_config_init(&cfg);
  cfg.name = "kbd2";
  cfg.kbd_gsi = VMM_IRQ_LINES;
  assert_vmm(vmm_i8042_create(vm, &cfg, NULL), VMM_EINVAL);
  bool a20;
  assert_vmm(vmm_i8042_a20(NULL, &a20), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

/* A guest self-tests the controller, reads the command byte, and resets
   the machine through it. */
static void test_guest_reboot(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  i8042(vm);
  vmm_vcpu *vcpu = dt_guest(vm, 0, "dev_i8042", 3);
  dt_run_system(vcpu, VMM_SYSTEM_RESET, 0);
  uint8_t out[3];
  assert_ok(vmm_mem_read(vm, DT_DATA, out, sizeof(out)));
  assert_int_equal(out[0], 0x55);
  assert_int_equal(out[1], 0x65);
  assert_int_equal(out[2] & 0x01, 0); /* nothing left to read */
  assert_ok(vmm_vm_destroy(vm));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_controller_commands),
      cmocka_unit_test(test_keyboard_and_aux),
      cmocka_unit_test(test_interrupts),
      cmocka_unit_test(test_reset_line_and_a20),
      cmocka_unit_test(test_state_and_config),
      cmocka_unit_test(test_guest_reboot),
  };
  return vmmt_run_group(tests);
}
