/*
 * fw_cfg: QEMU's items and their encodings, the file directory, reads past
 * the end, access widths, host items, saved state, and a guest reading the
 * signature and command line as a QEMU test kernel does.
 */
#include "devtest.h"

#define SEL 0x510
#define DAT 0x511

static vmm_dev *fw_cfg(vmm_vm *vm, const char *cmdline) {
  struct vmm_fw_cfg_config cfg;
  vmm_dev *dev = NULL;
  vmm_fw_cfg_config_init(&cfg);
  cfg.cmdline = cmdline;
  assert_ok(vmm_fw_cfg_create(vm, &cfg, &dev));
  return dev;
}

static void sel(vmm_vm *vm, uint16_t key) {
  dt_out(vm, SEL, key, 2);
}

static void read_bytes(vmm_vm *vm, uint8_t *buf, size_t n) {
  for (size_t i = 0; i < n; i++)
    buf[i] = dt_inb(vm, DAT);
}

static uint64_t read_le(vmm_vm *vm, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; i++)
    v |= (uint64_t)dt_inb(vm, DAT) << (8 * i);
  return v;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void test_items(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm *vm;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.max_vcpus = 3;
  assert_ok(vmm_vm_create(&cfg, &vm));
  fw_cfg(vm, "console=ttyS0 quiet");
  /* RAM is added after the device: the size follows the slots. */
  assert_ok(vmm_mem_slot_add(vm, 0, 2 << 20, NULL, 0, NULL));
  assert_ok(vmm_mem_slot_add(vm, 1ull << 32, 1 << 20, NULL, 0, NULL));

  uint8_t sig[4];
  sel(vm, 0x0000);
  read_bytes(vm, sig, 4);
  assert_memory_equal(sig, "QEMU", 4);
  assert_int_equal(dt_inb(vm, DAT), 0); /* past the end */
  sel(vm, 0x0001);
  assert_int_equal(read_le(vm, 4), 1); /* traditional interface, no DMA */
  sel(vm, 0x0003);
  assert_int_equal(read_le(vm, 8), (2 << 20) + (1 << 20));
  sel(vm, 0x0005);
  assert_int_equal(read_le(vm, 2), 3);
  sel(vm, 0x000f);
  assert_int_equal(read_le(vm, 2), 3);
  sel(vm, 0x0002);
  assert_int_equal(read_le(vm, 8) | read_le(vm, 8), 0);
  sel(vm, 0x0014);
  assert_int_equal(read_le(vm, 4), strlen("console=ttyS0 quiet") + 1);
  char line[32];
  sel(vm, 0x0015);
  read_bytes(vm, (uint8_t *)line, sizeof(line));
  assert_string_equal(line, "console=ttyS0 quiet"); /* NUL, then zeros */
  /* Selecting again restarts at offset 0. */
  sel(vm, 0x0015);
  assert_int_equal(dt_inb(vm, DAT), 'c');
  /* Unknown items, the write-channel bit, arch items. */
  sel(vm, 0x0042);
  assert_int_equal(dt_inb(vm, DAT), 0);
  sel(vm, 0x4000); /* bit 14 ignored: still the signature */
  assert_int_equal(dt_inb(vm, DAT), 'Q');
  sel(vm, 0x8000); /* no arch items unless the host sets them */
  assert_int_equal(dt_inb(vm, DAT), 0);
  sel(vm, 0xffff);
  assert_int_equal(dt_inb(vm, DAT), 0);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_no_cmdline_and_overrides(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = fw_cfg(vm, NULL);
  sel(vm, 0x0014);
  assert_int_equal(read_le(vm, 4), 0); /* absent: reads as zeros */
  /* The host replaces a built-in and adds an arch item. */
  uint32_t n = 0x12345678;
  assert_ok(vmm_fw_cfg_set_item(dev, 0x0005, &n, 4));
  sel(vm, 0x0005);
  assert_int_equal(read_le(vm, 4), 0x12345678);
  assert_ok(vmm_fw_cfg_set_item(dev, 0x8003, "e820", 4));
  sel(vm, 0x8003);
  assert_int_equal(read_le(vm, 4), 0x30323865);
  /* Removing an item, even a built-in. */
  assert_ok(vmm_fw_cfg_set_item(dev, 0x0000, NULL, 0));
  sel(vm, 0x0000);
  assert_int_equal(dt_inb(vm, DAT), 0);
  /* Replacing the item being read: the guest goes on in the new bytes. */
  assert_ok(vmm_fw_cfg_set_item(dev, 0x0010, "abcdef", 6));
  sel(vm, 0x0010);
  assert_int_equal(dt_inb(vm, DAT), 'a');
  assert_int_equal(dt_inb(vm, DAT), 'b');
  assert_ok(vmm_fw_cfg_set_item(dev, 0x0010, "XYZ", 3));
  assert_int_equal(dt_inb(vm, DAT), 'Z');
  assert_int_equal(dt_inb(vm, DAT), 0);
  assert_ok(vmm_fw_cfg_set_item(dev, 0x0010, "1", 1)); /* shorter still */
  assert_int_equal(dt_inb(vm, DAT), 0);

  assert_vmm(vmm_fw_cfg_set_item(dev, 0x0020, "x", 1), VMM_EINVAL);
  assert_vmm(vmm_fw_cfg_set_item(dev, 0x4001, "x", 1), VMM_EINVAL);
  assert_vmm(vmm_fw_cfg_set_item(dev, 0x0001, NULL, 3), VMM_EINVAL);
  assert_vmm(vmm_fw_cfg_set_item(NULL, 0x0001, "x", 1), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_files(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = fw_cfg(vm, NULL);
  uint16_t s1, s2, s3;
  assert_ok(vmm_fw_cfg_add_file(dev, "opt/zeta", "zz", 2, &s1));
  assert_ok(vmm_fw_cfg_add_file(dev, "etc/alpha", "aaaa", 4, &s2));
  assert_ok(vmm_fw_cfg_add_file(dev, "opt/empty", NULL, 0, &s3));
  assert_int_equal(s1, 0x20);
  assert_int_equal(s2, 0x21);
  assert_int_equal(s3, 0x22);
  assert_vmm(vmm_fw_cfg_add_file(dev, "etc/alpha", "b", 1, NULL), VMM_EEXIST);
  assert_vmm(vmm_fw_cfg_add_file(dev, "", "b", 1, NULL), VMM_EINVAL);
  assert_vmm(vmm_fw_cfg_add_file(dev, "has space", "b", 1, NULL), VMM_EINVAL);
  char name[VMM_FW_CFG_NAME_MAX + 2];
  memset(name, 'n', sizeof(name) - 1);
  name[sizeof(name) - 1] = 0;
  assert_vmm(vmm_fw_cfg_add_file(dev, name, "b", 1, NULL), VMM_EINVAL);
  name[VMM_FW_CFG_NAME_MAX] = 0;
  assert_ok(vmm_fw_cfg_add_file(dev, name, "b", 1, NULL));
  assert_vmm(vmm_fw_cfg_add_file(dev, "x", NULL, 1, NULL), VMM_EINVAL);

  /* The directory: big-endian count, entries sorted by name. */
  uint8_t dir[4 + 4 * 64];
  sel(vm, 0x0019);
  read_bytes(vm, dir, sizeof(dir));
  assert_int_equal(be32(dir), 4);
  const char *order[] = {"etc/alpha", name, "opt/empty", "opt/zeta"};
  const uint16_t sels[] = {0x21, 0x23, 0x22, 0x20};
  const uint32_t sizes[] = {4, 1, 0, 2};
  for (int i = 0; i < 4; i++) {
    const uint8_t *e = dir + 4 + i * 64;
    assert_int_equal(be32(e), sizes[i]);
    assert_int_equal(e[4] << 8 | e[5], sels[i]);
    assert_int_equal(e[6] | e[7], 0);
    assert_string_equal((const char *)e + 8, order[i]);
  }
  assert_int_equal(dt_inb(vm, DAT), 0); /* past the directory */
  /* A file's data, then zeros past its end, a long way past. */
  sel(vm, s2);
  char got[4];
  read_bytes(vm, (uint8_t *)got, 4);
  assert_memory_equal(got, "aaaa", 4);
  for (int i = 0; i < 100000; i++)
    assert_int_equal(dt_inb(vm, DAT), 0);
  sel(vm, s3);
  assert_int_equal(dt_inb(vm, DAT), 0);
  sel(vm, 0x24); /* no such file */
  assert_int_equal(dt_inb(vm, DAT), 0);
  assert_int_equal(dt_stat(dev, "files"), 4);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_access_widths(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = fw_cfg(vm, NULL);
  sel(vm, 0x0000);
  /* As in QEMU, a byte read at either port reads data. */
  assert_int_equal(dt_inb(vm, SEL), 'Q');
  assert_int_equal(dt_inb(vm, DAT), 'E');
  /* Byte writes are data writes, ignored; they do not select. */
  dt_outb(vm, SEL, 0x05);
  dt_outb(vm, DAT, 0x05);
  assert_int_equal(dt_inb(vm, DAT), 'M');
  /* A 16-bit read is not an access QEMU accepts: 0, nothing consumed. */
  assert_int_equal(dt_in(vm, SEL, 2), 0);
  assert_int_equal(dt_inb(vm, DAT), 'U');
  /* 32-bit accesses do not fit the two ports: not the device's. */
  uint32_t v = 0;
  assert_int_equal(dt_pio(vm, SEL, &v, 4, false), VMM_IO_DECLINED);
  assert_int_equal(dt_pio(vm, DAT, &v, 2, true), VMM_IO_DECLINED);
  assert_int_equal(dt_stat(dev, "ignored"), 3);
  assert_int_equal(dt_stat(dev, "bytes_read"), 4);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_state_and_config(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  vmm_dev *dev = fw_cfg(vm, "root=/dev/vda");
  sel(vm, 0x0015);
  read_le(vm, 5);
  json_t *s = NULL;
  assert_ok(vmm_dev_save(dev, &s));
  assert_ok(vmm_dev_reset(dev));
  assert_int_equal(dt_inb(vm, DAT), 'Q'); /* reset selects the signature */
  assert_ok(vmm_dev_restore(dev, s));
  assert_int_equal(dt_inb(vm, DAT), '/');
  /* An offset past the end is clamped: reads give 0, not memory. */
  json_object_set_new(s, "offset", json_integer(1000));
  assert_ok(vmm_dev_restore(dev, s));
  assert_int_equal(dt_inb(vm, DAT), 0);
  json_object_set_new(s, "selector", json_integer(0x10000));
  assert_vmm(vmm_dev_restore(dev, s), VMM_EINVAL);
  json_object_set_new(s, "selector", json_string("x"));
  assert_vmm(vmm_dev_restore(dev, s), VMM_EINVAL);
  json_decref(s);

  struct vmm_fw_cfg_config cfg;
  vmm_fw_cfg_config_init(&cfg);
  cfg.name = "f2";
  cfg.base = 0xffff;
  assert_vmm(vmm_fw_cfg_create(vm, &cfg, NULL), VMM_EINVAL);
  char *huge = malloc((1 << 20) + 1);
  memset(huge, 'a', 1 << 20);
  huge[1 << 20] = 0;
  vmm_fw_cfg_config_init(&cfg);
  cfg.name = "f2";
  cfg.base = 0x520;
  cfg.cmdline = huge;
  assert_vmm(vmm_fw_cfg_create(vm, &cfg, NULL), VMM_E2BIG);
  free(huge);
  /* The type is checked. */
  vmm_dev *cmos;
  struct vmm_cmos_config cc;
  vmm_cmos_config_init(&cc);
  assert_ok(vmm_cmos_create(vm, &cc, &cmos));
  assert_vmm(vmm_fw_cfg_add_file(cmos, "a", "b", 1, NULL), VMM_EINVAL);
  assert_ok(vmm_vm_destroy(vm));
}

/* A guest reads the signature, the command line (rep insb), the CPU count
   and the directory, then exits through the exit port. */
static void test_guest(void **state) {
  (void)state;
  vmm_vm *vm = dt_vm();
  const char *cmdline = "console=ttyS0 libvmm.test=fw_cfg";
  vmm_dev *dev = fw_cfg(vm, cmdline);
  assert_ok(vmm_fw_cfg_add_file(dev, "etc/test", "hello", 5, NULL));
  struct vmm_exit_port_config x;
  vmm_exit_port_config_init(&x);
  assert_ok(vmm_exit_port_create(vm, &x, NULL));
  vmm_vcpu *vcpu = dt_guest(vm, 0, "dev_fw_cfg", 3);
  dt_run_system(vcpu, VMM_SYSTEM_EXIT_PORT, 0x43);

  uint8_t m[0x200];
  assert_ok(vmm_mem_read(vm, DT_DATA, m, sizeof(m)));
  assert_memory_equal(m, "QEMU", 4);
  uint32_t size;
  memcpy(&size, m + 0x10, 4);
  assert_int_equal(size, strlen(cmdline) + 1);
  assert_string_equal((const char *)m + 0x100, cmdline);
  assert_int_equal(m[0x20] | m[0x21] << 8, 1);
  assert_int_equal(be32(m + 0x30), 1);
  assert_int_equal(be32(m + 0x34), 5);
  assert_int_equal(m[0x38] << 8 | m[0x39], 0x20);
  assert_string_equal((const char *)m + 0x3c, "etc/test");
  assert_ok(vmm_vm_destroy(vm));
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_items),
      cmocka_unit_test(test_no_cmdline_and_overrides),
      cmocka_unit_test(test_files),
      cmocka_unit_test(test_access_widths),
      cmocka_unit_test(test_state_and_config),
      cmocka_unit_test(test_guest),
  };
  return vmmt_run_group(tests);
}
