/*
 * The vmmrun demo guest: what `vmmrun` with no arguments (and so
 * `./build.sh demo`) boots. A Multiboot kernel in 64-bit long mode (runtime
 * in guest/rt) that talks to its host only through port I/O, every access
 * served on the host by a handler registered with the library:
 *
 *   COM1 16550A UART (0x3f8)    the report below
 *   fw_cfg (0x510, 0x511)       the host's description of the machine, in
 *                               the file "opt/vmmrun/info"
 *   CMOS/RTC (0x70, 0x71)       the date and time
 *   power port (0x604)          power off, written the way a guest powers
 *                               off through an ACPI PM1a control block
 *                               (SLP_EN), so vmmrun exits with status 0.
 *
 * Kernel-mode code is emulated by KVM on some hosts (about 1 us per
 * instruction), so the work here is kept to a few hundred thousand
 * instructions.
 */
#include "klib.h"

#define FW_CFG_SEL 0x510
#define FW_CFG_DATA 0x511
#define FW_CFG_FILE_DIR 0x19
#define PM1A_CNT 0x604
#define PM1_SLP_EN (1u << 13)

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static void fw_cfg_read(void *buf, uint32_t len) {
  uint8_t *b = buf;
  for (uint32_t i = 0; i < len; i++)
    b[i] = inb(FW_CFG_DATA);
}

static bool streq(const char *a, const char *b) {
  while (*a && *a == *b)
    a++, b++;
  return *a == *b;
}

/* Read fw_cfg file name into buf (NUL-terminated, truncated to cap - 1).
   Returns false when the device or the file is missing. */
static bool fw_cfg_file(const char *name, char *buf, uint32_t cap) {
  char sig[4];
  outw(FW_CFG_SEL, 0);
  fw_cfg_read(sig, 4);
  if (sig[0] != 'Q' || sig[1] != 'E' || sig[2] != 'M' || sig[3] != 'U')
    return false;
  uint8_t w[4];
  outw(FW_CFG_SEL, FW_CFG_FILE_DIR);
  fw_cfg_read(w, 4);
  uint32_t count = be32(w);
  for (uint32_t i = 0; i < count && i < 64; i++) {
    uint8_t e[64]; /* size, select, reserved, name[56] (big endian) */
    fw_cfg_read(e, sizeof(e));
    e[63] = 0;
    if (!streq((const char *)e + 8, name))
      continue;
    uint32_t size = be32(e);
    uint16_t select = (uint16_t)(e[4] << 8 | e[5]);
    uint32_t n = size < cap - 1 ? size : cap - 1;
    outw(FW_CFG_SEL, select);
    fw_cfg_read(buf, n);
    buf[n] = 0;
    return true;
  }
  return false;
}

static uint8_t cmos(uint8_t reg) {
  outb(0x70, reg);
  return inb(0x71);
}

static void put2(unsigned v) {
  kputc((char)('0' + v / 10 % 10));
  kputc((char)('0' + v % 10));
}

static void print_time(void) {
  /* Wait for the end of an update cycle so the fields belong together. */
  for (int i = 0; i < 100000 && (cmos(0x0a) & 0x80); i++)
    ;
  uint8_t b = cmos(0x0b);
  uint8_t f[7] = {cmos(0x00), cmos(0x02), cmos(0x04), cmos(0x07),
                  cmos(0x08), cmos(0x09), cmos(0x32)};
  bool pm = false;
  if (!(b & 0x02)) { /* 12-hour clock: bit 7 of the hour is PM */
    pm = (f[2] & 0x80) != 0;
    f[2] &= 0x7f;
  }
  if (!(b & 0x04)) /* BCD */
    for (int i = 0; i < 7; i++)
      f[i] = (uint8_t)((f[i] >> 4) * 10 + (f[i] & 15));
  if (!(b & 0x02))
    f[2] = (uint8_t)(f[2] % 12 + (pm ? 12 : 0));
  put2(f[6]);
  put2(f[5]);
  kputc('-');
  put2(f[4]);
  kputc('-');
  put2(f[3]);
  kputc(' ');
  put2(f[2]);
  kputc(':');
  put2(f[1]);
  kputc(':');
  put2(f[0]);
  kputs(" UTC");
}

/* Sieve of Eratosthenes: a little real work for the vCPU. */
static unsigned count_primes(unsigned below) {
  static uint8_t composite[1024];
  unsigned n = 0;
  if (below > sizeof(composite))
    below = sizeof(composite);
  for (unsigned i = 2; i < below; i++) {
    if (composite[i])
      continue;
    n++;
    for (unsigned j = i * i; j < below; j += i)
      composite[j] = 1;
  }
  return n;
}

void kmain(uint32_t magic, uint32_t info);
void kmain(uint32_t magic, uint32_t info) {
  klib_console_init();
  kputs("\nHello from the libvmm demo guest: a 64-bit kernel booted by "
        "vmmrun.\n");
  kputs("Everything below reached the host through port I/O served by "
        "handlers it registered.\n\n");

  char host[256];
  kputs("  host, via fw_cfg \"opt/vmmrun/info\": ");
  kputs(fw_cfg_file("opt/vmmrun/info", host, sizeof(host)) ? host
                                                           : "(no fw_cfg)");
  kputs("\n");

  if (magic == KLIB_MB_MAGIC) {
    const struct mb_info *mb = (const struct mb_info *)(uintptr_t)info;
    if (mb->flags & 1) {
      kputs("  memory, from the Multiboot loader: ");
      kputu((mb->mem_upper + 1024) / 1024);
      kputs(" MiB\n");
    }
    const char *cmdline = klib_cmdline(magic, info);
    kputs("  command line: ");
    kputs(*cmdline ? cmdline : "(empty)");
    kputs("\n");
  }

  kputs("  date and time, from the CMOS RTC: ");
  print_time();
  kputs("\n");

  kputs("  primes below 1000, counted by this vCPU: ");
  kputu(count_primes(1000));
  kputs("\n\nPowering off through the power port (0x604). Bye!\n");

  outw(PM1A_CNT, PM1_SLP_EN);
  /* Not powered off (no such port): report success on the exit port. */
  klib_exit(0);
}
