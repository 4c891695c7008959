/*
 * The machine vmmrun builds: RAM, the PC devices, the guest image, vCPUs
 * and the handling of accesses nobody claimed. docs/vmmrun.md lists what
 * a guest sees.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmmrun.h"

#define PCI_HOLE_START (3ull << 30)
#define HIGH_RAM_START (4ull << 30)

/* The power port: PM1a control as QEMU's PC machines place it. */
#define PM1A_CNT 0x604
#define PM1_SLP_EN (1u << 13)

/* Unclaimed MMIO is counted per page, for this many distinct pages. */
#define UNCLAIMED_MMIO_PAGES 64

struct vmmrun_unclaimed {
  atomic_uint_least32_t port_reads[0x10000], port_writes[0x10000];
  pthread_mutex_t lock; /* the MMIO table */
  struct {
    uint64_t page, reads, writes;
  } mmio[UNCLAIMED_MMIO_PAGES];
  size_t nmmio;
  uint64_t mmio_other; /* accesses to pages past the table */
};

/* ------------------------------------------------------------------------ */
/* Library diagnostics                                                      */

static void log_fn(enum vmm_log_level level, const char *msg, void *opaque) {
  const bool *mute = opaque;
  if (*mute)
    return;
  static const char *const names[] = {"error", "warning", "info", "debug"};
  vmmrun_log(0, "libvmm %s: %s", names[level & 3], msg);
}

/* The library's level for our verbosity: warnings by default. */
static enum vmm_log_level lib_level(int verbose) {
  return verbose < 0    ? VMM_LOG_ERROR
         : verbose == 0 ? VMM_LOG_WARN
         : verbose == 1 ? VMM_LOG_INFO
                        : VMM_LOG_DEBUG;
}

/* ------------------------------------------------------------------------ */
/* Accesses nobody claimed: what an ISA bus does with them                  */

static enum vmm_exit_action on_guest_exit(vmm_vcpu *vcpu, struct vmm_exit *e,
                                          void *opaque) {
  struct vmmrun_machine *m = opaque;
  struct vmmrun_unclaimed *u = m->unclaimed;
  (void)vcpu;
  if (e->reason == VMM_EXIT_IO) {
    atomic_uint_least32_t *c = e->io.is_write ? &u->port_writes[e->io.port]
                                              : &u->port_reads[e->io.port];
    if (atomic_fetch_add_explicit(c, e->io.count, memory_order_relaxed) == 0)
      vmmrun_log(2, "unclaimed port 0x%x %s (%u bytes): %s", e->io.port,
                 e->io.is_write ? "write" : "read", e->io.size,
                 e->io.is_write ? "ignored" : "reads as all ones");
    if (!e->io.is_write)
      memset(e->io.data, 0xff, (size_t)e->io.size * e->io.count);
    return VMM_EXIT_ACTION_RESUME;
  }
  if (e->reason == VMM_EXIT_MMIO) {
    uint64_t page = e->mmio.gpa & ~0xfffull;
    bool first = false;
    pthread_mutex_lock(&u->lock);
    size_t i = 0;
    while (i < u->nmmio && u->mmio[i].page != page)
      i++;
    if (i == u->nmmio && u->nmmio < UNCLAIMED_MMIO_PAGES) {
      u->mmio[u->nmmio++].page = page;
      first = true;
    }
    if (i < u->nmmio) {
      if (e->mmio.is_write)
        u->mmio[i].writes++;
      else
        u->mmio[i].reads++;
    } else {
      u->mmio_other++;
    }
    pthread_mutex_unlock(&u->lock);
    if (first)
      vmmrun_log(2, "unclaimed MMIO %s at 0x%llx (%u bytes): %s",
                 e->mmio.is_write ? "write" : "read",
                 (unsigned long long)e->mmio.gpa, e->mmio.size,
                 e->mmio.is_write ? "ignored" : "reads as all ones");
    if (!e->mmio.is_write)
      memset(e->mmio.data, 0xff, sizeof(e->mmio.data));
    return VMM_EXIT_ACTION_RESUME;
  }
  return VMM_EXIT_ACTION_RETURN;
}

json_t *vmmrun_unclaimed_json(const struct vmmrun_machine *m) {
  struct vmmrun_unclaimed *u = m->unclaimed;
  json_t *o = json_object(), *ports = json_array(), *mmio = json_array();
  uint64_t reads = 0, writes = 0;
  for (unsigned p = 0; p < 0x10000; p++) {
    uint32_t r = atomic_load(&u->port_reads[p]);
    uint32_t w = atomic_load(&u->port_writes[p]);
    if (r == 0 && w == 0)
      continue;
    reads += r;
    writes += w;
    json_array_append_new(ports,
                          json_pack("{s:i,s:i,s:i}", "port", p, "reads",
                                    (json_int_t)r, "writes", (json_int_t)w));
  }
  pthread_mutex_lock(&u->lock);
  for (size_t i = 0; i < u->nmmio; i++) {
    reads += u->mmio[i].reads;
    writes += u->mmio[i].writes;
    json_array_append_new(
        mmio, json_pack("{s:I,s:I,s:I}", "page", (json_int_t)u->mmio[i].page,
                        "reads", (json_int_t)u->mmio[i].reads, "writes",
                        (json_int_t)u->mmio[i].writes));
  }
  uint64_t other = u->mmio_other;
  pthread_mutex_unlock(&u->lock);
  json_object_set_new(o, "port", ports);
  json_object_set_new(o, "mmio", mmio);
  json_object_set_new(o, "mmio_other_pages", json_integer((json_int_t)other));
  json_object_set_new(o, "reads", json_integer((json_int_t)reads));
  json_object_set_new(o, "writes", json_integer((json_int_t)(writes + other)));
  return o;
}

/* ------------------------------------------------------------------------ */
/* The power port: a write with SLP_EN set at the PM1a control register     */
/* powers the machine off (VMM_SYSTEM_POWEROFF, vmmrun exits with 0).       */

struct power {
  atomic_uint_least64_t writes, poweroffs;
};

static int power_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                    bool is_write, void *opaque) {
  struct power *p = opaque;
  if (!is_write)
    return 0; /* reads start zeroed: SCI_EN and the rest clear */
  uint32_t v = 0;
  memcpy(&v, data, len < 4 ? len : 4);
  if (port == PM1A_CNT + 1)
    v <<= 8; /* the high byte alone */
  atomic_fetch_add(&p->writes, 1);
  if (v & PM1_SLP_EN) {
    atomic_fetch_add(&p->poweroffs, 1);
    vmm_vm_system_event(vmm_vcpu_vm(vcpu), VMM_SYSTEM_POWEROFF, 0);
  }
  return 0;
}

static int power_realize(vmm_dev *dev, void *opaque) {
  return vmm_dev_io_register(dev, VMM_IO_PORT, PM1A_CNT, 2, power_io, opaque);
}

static void power_destroy(vmm_dev *dev, void *opaque) {
  (void)dev;
  free(opaque);
}

static int power_stats(vmm_dev *dev, json_t **out, void *opaque) {
  (void)dev;
  struct power *p = opaque;
  *out = json_pack("{s:I,s:I}", "writes", (json_int_t)atomic_load(&p->writes),
                   "poweroffs", (json_int_t)atomic_load(&p->poweroffs));
  return *out ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops power_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "vmmrun-power",
    .realize = power_realize,
    .destroy = power_destroy,
    .stats = power_stats,
};

/* ------------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3))) static int fail(int status,
                                                      const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  vmmrun_log(0, "%s", msg);
  return status;
}

static void size_text(uint64_t bytes, char *buf, size_t len) {
  if (bytes % (1ull << 30) == 0)
    snprintf(buf, len, "%lluG", (unsigned long long)(bytes >> 30));
  else if (bytes % (1ull << 20) == 0)
    snprintf(buf, len, "%lluM", (unsigned long long)(bytes >> 20));
  else
    snprintf(buf, len, "%lluK", (unsigned long long)(bytes >> 10));
}

/* Whether fd can be watched by the terminal backend (tty, pipe, socket):
   regular files and /dev/null cannot be polled. */
static bool pollable(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return false;
  return isatty(fd) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
}

static int add_devices(struct vmmrun_machine *m, const struct vmmrun_opts *o) {
  int err;
  struct vmm_uart_config uart;
  vmm_uart_config_init(&uart);
  switch (o->serial) {
  case VMMRUN_SERIAL_STDIO:
    uart.backend = VMM_UART_TERMINAL;
    uart.in_fd = pollable(0) ? 0 : -1;
    uart.out_fd = 1;
    uart.raw = true;
    /* ^C must still reach vmmrun (which then stops the guest). */
    uart.keep_signals = true;
    break;
  case VMMRUN_SERIAL_FILE:
    uart.backend = VMM_UART_FILE;
    uart.path = o->serial_path;
    uart.fd = -1;
    break;
  case VMMRUN_SERIAL_UNIX:
    uart.backend = VMM_UART_SOCKET;
    uart.path = o->serial_path;
    break;
  case VMMRUN_SERIAL_NONE: uart.backend = VMM_UART_NONE; break;
  }
  if ((err = vmm_uart_create(m->vm, &uart, &m->uart)) < 0)
    return fail(VMMRUN_EXIT_USAGE, "--serial: cannot set up COM1%s%s: %s",
                o->serial_path ? " at " : "",
                o->serial_path ? o->serial_path : "", vmm_strerror(err));

  struct vmm_exit_port_config xp;
  vmm_exit_port_config_init(&xp);
  struct vmm_i8042_config kbd;
  vmm_i8042_config_init(&kbd);
  struct vmm_cmos_config cmos;
  vmm_cmos_config_init(&cmos);
  struct vmm_fw_cfg_config fw;
  vmm_fw_cfg_config_init(&fw);
  fw.cmdline = o->append;
  vmm_dev *fwdev;
  struct power *power = calloc(1, sizeof(*power));
  if ((err = vmm_exit_port_create(m->vm, &xp, NULL)) < 0 ||
      (err = vmm_i8042_create(m->vm, &kbd, NULL)) < 0 ||
      (err = vmm_cmos_create(m->vm, &cmos, NULL)) < 0 ||
      (err = vmm_fw_cfg_create(m->vm, &fw, &fwdev)) < 0) {
    free(power);
    return fail(VMMRUN_EXIT_ERROR, "cannot add the PC devices: %s",
                vmm_strerror(err));
  }
  if (power == NULL)
    return fail(VMMRUN_EXIT_ERROR, "out of memory");
  /* vmm_dev_attach() owns power from here on, even when it fails. */
  if ((err = vmm_dev_attach(m->vm, "power", &power_ops, power, NULL)) < 0)
    return fail(VMMRUN_EXIT_ERROR, "cannot add the power port: %s",
                vmm_strerror(err));

  if (o->balloon) {
    struct vmm_balloon_config bc;
    vmm_balloon_config_init(&bc); /* 0xd0000000, GSI 5: outside RAM */
    bc.target_bytes = o->balloon_target;
    if ((err = vmm_balloon_create(m->vm, &bc, &m->balloon)) < 0)
      return fail(VMMRUN_EXIT_ERROR, "--balloon: cannot add the device: %s",
                  vmm_strerror(err));
  }

  /* What the host tells the guest about the machine (the demo prints it). */
  char info[256], mem[32];
  size_text(o->memory, mem, sizeof(mem));
  snprintf(info, sizeof(info), "vmmrun=%s engine=%s cpus=%u memory=%s",
           vmm_version_string(), vmm_engine_name(vmm_vm_engine(m->vm)), o->cpus,
           mem);
  if ((err = vmm_fw_cfg_add_file(fwdev, "opt/vmmrun/info", info, strlen(info),
                                 NULL)) < 0)
    return fail(VMMRUN_EXIT_ERROR, "fw_cfg: %s", vmm_strerror(err));
  return 0;
}

static int create_vm(struct vmmrun_machine *m, const struct vmmrun_opts *o) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = o->engine;
  cfg.max_vcpus = o->cpus;
  cfg.log_fn = log_fn;
  cfg.log_opaque = &m->log_mute;
  cfg.log_level = lib_level(o->verbose);
  int err = 0;
  if (o->irqchip != VMMRUN_OFF) {
    cfg.flags = VMM_VM_IRQCHIP | VMM_VM_PIT;
    /* An engine without an interrupt controller refuses the flags (and
       logs it); with auto that only means "none here": stay quiet. */
    m->log_mute = o->irqchip == VMMRUN_AUTO;
    err = vmm_vm_create(&cfg, &m->vm);
    m->log_mute = false;
    if (err == 0)
      m->irqchip = true;
    else if (o->irqchip == VMMRUN_ON)
      return fail(VMMRUN_EXIT_ERROR,
                  "--irqchip on: the %s engine cannot provide an interrupt "
                  "controller and PIT: %s",
                  vmm_engine_name(o->engine), vmm_strerror(err));
  }
  if (m->vm == NULL) {
    cfg.flags = 0;
    err = vmm_vm_create(&cfg, &m->vm);
    if (err == 0 && o->irqchip == VMMRUN_AUTO)
      vmmrun_log(2,
                 "the %s engine has no interrupt controller: device "
                 "interrupts are recorded, not delivered",
                 vmm_engine_name(vmm_vm_engine(m->vm)));
  }
  if (err < 0)
    return fail(VMMRUN_EXIT_ERROR, "cannot create a VM on engine %s: %s",
                vmm_engine_name(o->engine), vmm_strerror(err));
  vmmrun_log(2, "engine %s (%s)%s", vmm_engine_name(vmm_vm_engine(m->vm)),
             vmm_vm_engine_reason(m->vm),
             m->irqchip ? ", in-engine interrupt controller and PIT" : "");
  return 0;
}

static int add_memory(struct vmmrun_machine *m, const struct vmmrun_opts *o) {
  /* Above 3 GiB the rest goes above 4 GiB, leaving the hole where PC
     firmware, the IOAPIC and local APICs live (and KVM's private pages). */
  uint64_t low = o->memory < PCI_HOLE_START ? o->memory : PCI_HOLE_START;
  uint32_t flags = o->hugepages ? VMM_MEM_HUGEPAGES : 0;
  int err = vmm_mem_slot_add(m->vm, 0, low, NULL, flags, NULL);
  if (err == 0 && o->memory > low)
    err = vmm_mem_slot_add(m->vm, HIGH_RAM_START, o->memory - low, NULL,
                           flags, NULL);
  if (err < 0)
    return fail(VMMRUN_EXIT_ERROR, "cannot add %llu MiB of guest RAM: %s",
                (unsigned long long)(o->memory >> 20), vmm_strerror(err));
  return 0;
}

static int load_image(struct vmmrun_machine *m, const struct vmmrun_opts *o,
                      const void *demo_image, size_t demo_size) {
  const void *img = demo_image, *initrd = NULL;
  size_t size = demo_size, initrd_size = 0;
  const char *name = o->demo ? "the demo guest" : o->kernel;
  int err, status = 0;

  if (!o->demo && (err = vmm_loader_map_file(o->kernel, &img, &size)) < 0)
    return fail(VMMRUN_EXIT_USAGE, "%s: cannot read: %s", o->kernel,
                vmm_strerror(err));
  if (size == 0) {
    status = fail(VMMRUN_EXIT_USAGE, "%s: empty file", name);
    goto out;
  }
  struct vmm_loader_options opt;
  vmm_loader_options_init(&opt);
  enum vmm_image_format detected = vmm_loader_detect(img, size);
  if (o->format == VMMRUN_FORMAT_ELF) {
    if (detected != VMM_IMAGE_ELF32 && detected != VMM_IMAGE_ELF64 &&
        detected != VMM_IMAGE_MULTIBOOT) {
      status =
          fail(VMMRUN_EXIT_USAGE, "--format elf: %s is not an ELF file", name);
      goto out;
    }
    /* A Multiboot ELF loaded as plain ELF: its class decides. */
    const uint8_t *b = img;
    opt.format = size > 4 && b[4] == 2 ? VMM_IMAGE_ELF64 : VMM_IMAGE_ELF32;
  } else {
    opt.format = (enum vmm_image_format)o->format;
  }
  enum vmm_image_format fmt = opt.format ? opt.format : detected;
  bool raw_opts = o->load_addr != VMM_LOADER_ADDR_AUTO ||
                  o->entry != VMM_LOADER_ADDR_AUTO || o->raw_mode_set;
  if (raw_opts && fmt != VMM_IMAGE_RAW) {
    status = fail(VMMRUN_EXIT_USAGE,
                  "--load-addr, --entry and --raw-mode are for flat images; "
                  "%s is %s (--format raw loads it flat)",
                  name, vmm_image_format_name(fmt));
    goto out;
  }
  opt.raw_addr = o->load_addr;
  opt.raw_entry = o->entry;
  opt.raw_mode = o->raw_mode;
  opt.cmdline = o->append;
  /* Linux finds virtio-mmio devices on its command line. */
  char cmdline[4096];
  if (m->balloon != NULL && fmt == VMM_IMAGE_BZIMAGE) {
    char param[128];
    if ((err = vmm_virtio_mmio_cmdline(m->balloon, param, sizeof(param))) < 0 ||
        (size_t)snprintf(cmdline, sizeof(cmdline), "%s%s%s",
                         o->append ? o->append : "", o->append ? " " : "",
                         param) >= sizeof(cmdline)) {
      status = fail(VMMRUN_EXIT_USAGE, "--append: too long with --balloon");
      goto out;
    }
    opt.cmdline = cmdline;
  }
  if (opt.cmdline != NULL)
    vmmrun_log(2, "command line: %s", opt.cmdline);

  struct vmm_loader_module module;
  if (o->initrd != NULL) {
    if (fmt != VMM_IMAGE_BZIMAGE && fmt != VMM_IMAGE_MULTIBOOT) {
      status = fail(VMMRUN_EXIT_USAGE,
                    "--initrd: %s is %s; only bzImage (initrd) and Multiboot "
                    "(first module) kernels take one",
                    name, vmm_image_format_name(fmt));
      goto out;
    }
    if ((err = vmm_loader_map_file(o->initrd, &initrd, &initrd_size)) < 0) {
      status = fail(VMMRUN_EXIT_USAGE, "--initrd: %s: cannot read: %s",
                    o->initrd, vmm_strerror(err));
      goto out;
    }
    if (fmt == VMM_IMAGE_BZIMAGE) {
      opt.initrd = initrd;
      opt.initrd_size = initrd_size;
    } else {
      module = (struct vmm_loader_module){initrd, initrd_size, o->initrd};
      opt.modules = &module;
      opt.nr_modules = 1;
    }
  }

  m->load = calloc(1, sizeof(*m->load));
  if (m->load == NULL) {
    status = fail(VMMRUN_EXIT_ERROR, "out of memory");
    goto out;
  }
  if ((err = vmm_loader_load(m->vm, img, size, &opt, m->load)) < 0) {
    status = fail(VMMRUN_EXIT_USAGE, "%s: cannot load as %s: %s", name,
                  vmm_image_format_name(fmt), vmm_strerror(err));
    goto out;
  }
  vmmrun_log(2, "%s: %s, entry 0x%llx", name,
             vmm_image_format_name(m->load->format),
             (unsigned long long)m->load->entry);
out:
  if (initrd != NULL)
    vmm_loader_unmap_file(initrd, initrd_size);
  if (!o->demo && img != NULL)
    vmm_loader_unmap_file(img, size);
  return status;
}

/*
 * Tell OS kernels (Linux reads no fw_cfg) about the vCPUs and the IOAPIC
 * with an MP table, so they can route interrupts and start secondary vCPUs,
 * whenever the VM has interrupt controllers (KVM's or the library's). Not
 * for flat images: their memory is the caller's.
 */
static int add_mptable(struct vmmrun_machine *m, const struct vmmrun_opts *o) {
  if (!m->irqchip || (m->load->format != VMM_IMAGE_BZIMAGE &&
                      m->load->format != VMM_IMAGE_MULTIBOOT))
    return 0;
  struct vmm_mptable_config cfg;
  vmm_mptable_config_init(&cfg);
  cfg.cpus = o->cpus;
  /* The table and its processor entries fit in the BIOS page at 0xf0000;
     refuse to overwrite anything the image put there. */
  const uint64_t span = 0x10000;
  for (size_t i = 0; i < m->load->nr_regions; i++) {
    const struct vmm_loader_region *r = &m->load->regions[i];
    if (r->gpa < cfg.addr + span && cfg.addr < r->gpa + r->size) {
      vmmrun_log(1, "no MP table: the image uses 0x%llx",
                 (unsigned long long)cfg.addr);
      return 0;
    }
  }
  size_t size = 0;
  int err = vmm_mptable_write(m->vm, &cfg, &size);
  if (err < 0)
    return fail(VMMRUN_EXIT_ERROR, "cannot write the MP table: %s",
                vmm_strerror(err));
  vmmrun_log(2, "MP table at 0x%llx (%zu bytes): %u vCPUs, IOAPIC",
             (unsigned long long)cfg.addr, size, o->cpus);
  return 0;
}

int vmmrun_machine_create(struct vmmrun_machine *m, const struct vmmrun_opts *o,
                          const void *demo_image, size_t demo_size) {
  memset(m, 0, sizeof(*m));
  int status, err;
  m->unclaimed = calloc(1, sizeof(*m->unclaimed));
  if (m->unclaimed == NULL)
    return fail(VMMRUN_EXIT_ERROR, "out of memory");
  pthread_mutex_init(&m->unclaimed->lock, NULL);

  if ((status = create_vm(m, o)) != 0)
    return status;
  if (o->cpus > 1 && !m->irqchip)
    return fail(VMMRUN_EXIT_USAGE,
                "--cpus %u: secondary vCPUs wait for the INIT and SIPI the "
                "boot vCPU sends through its local APIC, and the %s engine "
                "has no interrupt controller here; use --cpus 1%s",
                o->cpus, vmm_engine_name(vmm_vm_engine(m->vm)),
                o->irqchip == VMMRUN_OFF ? " or drop --irqchip off" : "");

  struct vmm_loop_config lcfg;
  vmm_loop_config_init(&lcfg);
  if ((err = vmm_loop_create(&lcfg, &m->loop)) < 0 ||
      (err = vmm_vm_set_loop(m->vm, m->loop)) < 0)
    return fail(VMMRUN_EXIT_ERROR, "cannot set up the event loop: %s",
                vmm_strerror(err));
  if ((status = add_memory(m, o)) != 0 || (status = add_devices(m, o)) != 0 ||
      (status = load_image(m, o, demo_image, demo_size)) != 0)
    return status;

  m->vcpus = calloc(o->cpus, sizeof(*m->vcpus));
  if (m->vcpus == NULL)
    return fail(VMMRUN_EXIT_ERROR, "out of memory");
  for (unsigned i = 0; i < o->cpus; i++) {
    if ((err = vmm_vcpu_create(m->vm, i, &m->vcpus[i])) < 0)
      return fail(VMMRUN_EXIT_ERROR, "cannot create vCPU %u: %s", i,
                  vmm_strerror(err));
    m->nvcpus++;
  }
  /* The boot vCPU enters the image; the others stay in their reset state,
     which with the in-kernel local APICs means waiting for INIT/SIPI. */
  if ((err = vmm_loader_apply(m->vcpus[0], m->load)) < 0)
    return fail(VMMRUN_EXIT_USAGE, "cannot enter the image: %s",
                vmm_strerror(err));
  if ((status = add_mptable(m, o)) != 0)
    return status;
  if ((err = vmm_vm_set_exit_handler(m->vm, on_guest_exit, m)) < 0)
    return fail(VMMRUN_EXIT_ERROR, "exit handler: %s", vmm_strerror(err));
  return 0;
}

void vmmrun_machine_destroy(struct vmmrun_machine *m) {
  if (m->vm != NULL) {
    int err = vmm_vm_destroy(m->vm);
    if (err < 0)
      vmmrun_log(0, "destroying the VM: %s", vmm_strerror(err));
  }
  vmm_loop_destroy(m->loop);
  if (m->unclaimed != NULL)
    pthread_mutex_destroy(&m->unclaimed->lock);
  free(m->unclaimed);
  free(m->vcpus);
  free(m->load);
  memset(m, 0, sizeof(*m));
}
