/*
 * QEMU-compatible fw_cfg, port interface. See include/libvmm/fw_cfg.h.
 *
 * Built-in items are generated when selected (so RAM size follows the
 * slots); host items and files are copied blobs. The selection points into
 * one of them; replacing an item re-points it, so a guest never reads freed
 * memory.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#define KEY_SIGNATURE 0x00
#define KEY_ID 0x01
#define KEY_UUID 0x02
#define KEY_RAM_SIZE 0x03
#define KEY_NB_CPUS 0x05
#define KEY_MAX_CPUS 0x0f
#define KEY_CMDLINE_SIZE 0x14
#define KEY_CMDLINE_DATA 0x15
#define KEY_FILE_DIR 0x19
#define KEY_FILE_FIRST 0x20
#define KEY_ARCH 0x8000
#define KEY_INDEX 0x3fff /* without the write-channel and arch bits */
#define NUMBERED 0x20    /* numbered items per table */
#define DIR_ENTRY 64
#define CMDLINE_MAX (1u << 20)

enum item_state { ITEM_DEFAULT, ITEM_SET, ITEM_REMOVED };

struct blob {
  uint8_t *data;
  size_t len;
};

struct item {
  enum item_state state;
  struct blob b;
};

struct file {
  char name[VMM_FW_CFG_NAME_MAX + 1];
  uint16_t select;
  struct blob b;
};

struct fwcfg {
  vmm_vm *vm;
  struct vmm_fw_cfg_config cfg;
  char *cmdline;
  pthread_mutex_t lock;

  struct item items[2][NUMBERED]; /* [arch][index] set by the host */
  struct file *files;             /* sorted by name */
  size_t nfiles;

  uint16_t selector;
  const uint8_t *cur; /* selected item's bytes, or NULL */
  size_t cur_len, off;
  uint8_t small[16]; /* generated scalar items */
  uint8_t *dir;      /* generated file directory */

  uint64_t selects, bytes_read, ignored;
};

static const struct vmm_dev_ops fw_cfg_ops;

void vmm_fw_cfg_config_init(struct vmm_fw_cfg_config *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->size = sizeof(*cfg);
  cfg->name = "fw-cfg";
  cfg->base = 0x510;
}

static void le(uint8_t *p, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void be(uint8_t *p, uint64_t v, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t ram_size(const struct fwcfg *f) {
  if (f->cfg.ram_size != 0)
    return f->cfg.ram_size;
  struct vmm_mem_slot_info s[VMM_MEM_MAX_SLOTS];
  size_t n = VMM_MEM_MAX_SLOTS;
  uint64_t total = 0;
  if (vmm_mem_slot_list(f->vm, s, &n) == 0)
    for (size_t i = 0; i < n; i++)
      total += s[i].size;
  return total;
}

static void select_small(struct fwcfg *f, uint64_t v, unsigned n) {
  le(f->small, v, n);
  f->cur = f->small;
  f->cur_len = n;
}

/* Generate a built-in item; false if there is none with this index. */
static bool builtin(struct fwcfg *f, unsigned idx) {
  uint16_t cpus =
      f->cfg.nb_cpus ? f->cfg.nb_cpus : (uint16_t)f->vm->cfg.max_vcpus;
  switch (idx) {
  case KEY_SIGNATURE:
    memcpy(f->small, "QEMU", 4);
    f->cur = f->small;
    f->cur_len = 4;
    return true;
  case KEY_ID: select_small(f, 1, 4); return true; /* traditional only */
  case KEY_UUID:
    memset(f->small, 0, 16);
    f->cur = f->small;
    f->cur_len = 16;
    return true;
  case KEY_RAM_SIZE: select_small(f, ram_size(f), 8); return true;
  case KEY_NB_CPUS:
  case KEY_MAX_CPUS: select_small(f, cpus, 2); return true;
  case KEY_CMDLINE_SIZE:
    if (f->cmdline == NULL)
      return false;
    select_small(f, strlen(f->cmdline) + 1, 4);
    return true;
  case KEY_CMDLINE_DATA:
    if (f->cmdline == NULL)
      return false;
    f->cur = (const uint8_t *)f->cmdline;
    f->cur_len = strlen(f->cmdline) + 1;
    return true;
  case KEY_FILE_DIR: {
    size_t len = 4 + f->nfiles * DIR_ENTRY;
    uint8_t *d = calloc(1, len);
    if (d == NULL)
      return false;
    be(d, f->nfiles, 4);
    for (size_t i = 0; i < f->nfiles; i++) {
      uint8_t *e = d + 4 + i * DIR_ENTRY;
      be(e, f->files[i].b.len, 4);
      be(e + 4, f->files[i].select, 2);
      memcpy(e + 8, f->files[i].name, strlen(f->files[i].name));
    }
    f->dir = d;
    f->cur = d;
    f->cur_len = len;
    return true;
  }
  default: return false;
  }
}

/* Select key and keep the data offset at off (clamped). */
static void do_select(struct fwcfg *f, uint16_t key, size_t off) {
  free(f->dir);
  f->dir = NULL;
  f->selector = key;
  f->cur = NULL;
  f->cur_len = 0;
  unsigned arch = (key & KEY_ARCH) ? 1 : 0;
  unsigned idx = key & KEY_INDEX;
  if (idx < NUMBERED) {
    const struct item *it = &f->items[arch][idx];
    if (it->state == ITEM_SET) {
      f->cur = it->b.data;
      f->cur_len = it->b.len;
    } else if (it->state == ITEM_DEFAULT && !arch) {
      builtin(f, idx);
    }
  } else if (!arch) {
    for (size_t i = 0; i < f->nfiles; i++) {
      if (f->files[i].select == idx) {
        f->cur = f->files[i].b.data;
        f->cur_len = f->files[i].b.len;
        break;
      }
    }
  }
  f->off = off < f->cur_len ? off : f->cur_len;
}

static int on_io(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  struct fwcfg *f = opaque;
  uint8_t *b = data;
  (void)vcpu;
  pthread_mutex_lock(&f->lock);
  if (is_write && len == 2 && port == f->cfg.base) {
    f->selects++;
    do_select(f, (uint16_t)(b[0] | b[1] << 8), 0);
  } else if (!is_write && len == 1) {
    /* Past the end (or nothing selected) reads as 0. */
    if (f->off < f->cur_len) {
      *b = f->cur[f->off++];
      f->bytes_read++;
    }
  } else {
    /* Data writes (ignored since QEMU 2.4) and accesses QEMU rejects. */
    f->ignored++;
  }
  pthread_mutex_unlock(&f->lock);
  return 0;
}

static int realize(vmm_dev *dev, void *opaque) {
  struct fwcfg *f = opaque;
  return vmm_dev_io_register(dev, VMM_IO_PORT, f->cfg.base, 2, on_io, f);
}

static void reset(vmm_dev *dev, void *opaque) {
  struct fwcfg *f = opaque;
  (void)dev;
  pthread_mutex_lock(&f->lock);
  do_select(f, KEY_SIGNATURE, 0);
  pthread_mutex_unlock(&f->lock);
}

static void destroy(vmm_dev *dev, void *opaque) {
  struct fwcfg *f = opaque;
  (void)dev;
  for (unsigned a = 0; a < 2; a++)
    for (unsigned i = 0; i < NUMBERED; i++)
      free(f->items[a][i].b.data);
  for (size_t i = 0; i < f->nfiles; i++)
    free(f->files[i].b.data);
  free(f->files);
  free(f->dir);
  free(f->cmdline);
  pthread_mutex_destroy(&f->lock);
  free(f);
}

#define STATE_VERSION 1

static int save(vmm_dev *dev, json_t **out, void *opaque) {
  struct fwcfg *f = opaque;
  (void)dev;
  pthread_mutex_lock(&f->lock);
  *out = json_pack("{s:s, s:i, s:i, s:I}", "type", "fw-cfg", "version",
                   STATE_VERSION, "selector", f->selector, "offset",
                   (json_int_t)f->off);
  pthread_mutex_unlock(&f->lock);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static int restore(vmm_dev *dev, const json_t *in, void *opaque) {
  struct fwcfg *f = opaque;
  uint64_t sel, off;
  (void)dev;
  if (vmm__json_header(in, "fw-cfg", STATE_VERSION) < 0 ||
      vmm__json_uint(in, "selector", 0xffff, &sel) < 0 ||
      vmm__json_uint(in, "offset", UINT32_MAX, &off) < 0)
    return VMM_EINVAL;
  pthread_mutex_lock(&f->lock);
  do_select(f, (uint16_t)sel, (size_t)off);
  pthread_mutex_unlock(&f->lock);
  return 0;
}

static int stats(vmm_dev *dev, json_t **out, void *opaque) {
  struct fwcfg *f = opaque;
  (void)dev;
  pthread_mutex_lock(&f->lock);
  *out = json_pack("{s:I, s:I, s:I, s:I}", "selects", (json_int_t)f->selects,
                   "bytes_read", (json_int_t)f->bytes_read, "ignored",
                   (json_int_t)f->ignored, "files", (json_int_t)f->nfiles);
  pthread_mutex_unlock(&f->lock);
  return *out != NULL ? 0 : VMM_ENOMEM;
}

static const struct vmm_dev_ops fw_cfg_ops = {
    .size = sizeof(struct vmm_dev_ops),
    .type = "fw-cfg",
    .realize = realize,
    .reset = reset,
    .destroy = destroy,
    .save = save,
    .restore = restore,
    .stats = stats,
};

int vmm_fw_cfg_create(vmm_vm *vm, const struct vmm_fw_cfg_config *user,
                      vmm_dev **out) {
  struct vmm_fw_cfg_config cfg;
  vmm_fw_cfg_config_init(&cfg);
  if (vm == NULL || vmm__config_merge(&cfg, sizeof(cfg), user) < 0)
    return VMM_EINVAL;
  if (cfg.base > 0xfffe)
    return VMM_EINVAL;
  if (cfg.cmdline != NULL && strnlen(cfg.cmdline, CMDLINE_MAX) >= CMDLINE_MAX)
    return VMM_E2BIG;
  struct fwcfg *f = calloc(1, sizeof(*f));
  if (f == NULL)
    return VMM_ENOMEM;
  if (pthread_mutex_init(&f->lock, NULL) != 0) {
    free(f);
    return VMM_ENOMEM;
  }
  f->vm = vm;
  f->cfg = cfg;
  f->cfg.name = f->cfg.cmdline = NULL;
  if (cfg.cmdline != NULL && (f->cmdline = strdup(cfg.cmdline)) == NULL) {
    pthread_mutex_destroy(&f->lock);
    free(f);
    return VMM_ENOMEM;
  }
  do_select(f, KEY_SIGNATURE, 0);
  return vmm_dev_attach(vm, cfg.name != NULL ? cfg.name : "fw-cfg", &fw_cfg_ops,
                        f, out);
}

static bool valid_file_name(const char *name) {
  size_t n = strnlen(name, VMM_FW_CFG_NAME_MAX + 1);
  if (n == 0 || n > VMM_FW_CFG_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (name[i] <= ' ' || name[i] > '~')
      return false;
  return true;
}

static int copy_blob(struct blob *b, const void *data, size_t len) {
  if (len > UINT32_MAX)
    return VMM_E2BIG; /* sizes are 32-bit in the directory */
  b->data = malloc(len ? len : 1);
  if (b->data == NULL)
    return VMM_ENOMEM;
  if (len)
    memcpy(b->data, data, len);
  b->len = len;
  return 0;
}

int vmm_fw_cfg_add_file(vmm_dev *dev, const char *name, const void *data,
                        size_t len, uint16_t *select) {
  struct fwcfg *f = vmm__dev_data(dev, &fw_cfg_ops);
  if (f == NULL || name == NULL || !valid_file_name(name) ||
      (data == NULL && len != 0))
    return VMM_EINVAL;
  struct file nf;
  memset(&nf, 0, sizeof(nf));
  snprintf(nf.name, sizeof(nf.name), "%s", name);
  int err = copy_blob(&nf.b, data, len);
  if (err < 0)
    return err;

  pthread_mutex_lock(&f->lock);
  size_t pos = 0;
  while (pos < f->nfiles && strcmp(f->files[pos].name, name) < 0)
    pos++;
  if (pos < f->nfiles && strcmp(f->files[pos].name, name) == 0) {
    err = VMM_EEXIST;
  } else if (f->nfiles == VMM_FW_CFG_FILES_MAX) {
    err = VMM_ENOSPC;
  } else {
    struct file *nl = realloc(f->files, (f->nfiles + 1) * sizeof(*nl));
    if (nl == NULL) {
      err = VMM_ENOMEM;
    } else {
      f->files = nl;
      memmove(&nl[pos + 1], &nl[pos], (f->nfiles - pos) * sizeof(*nl));
      nf.select = (uint16_t)(KEY_FILE_FIRST + f->nfiles);
      nl[pos] = nf;
      f->nfiles++;
    }
  }
  pthread_mutex_unlock(&f->lock);
  if (err < 0) {
    free(nf.b.data);
    return err;
  }
  if (select != NULL)
    *select = nf.select;
  return 0;
}

int vmm_fw_cfg_set_item(vmm_dev *dev, uint16_t key, const void *data,
                        size_t len) {
  struct fwcfg *f = vmm__dev_data(dev, &fw_cfg_ops);
  unsigned idx = key & ~(unsigned)KEY_ARCH;
  if (f == NULL || idx >= NUMBERED || (data == NULL && len != 0))
    return VMM_EINVAL;
  struct blob nb = {NULL, 0};
  if (data != NULL) {
    int err = copy_blob(&nb, data, len);
    if (err < 0)
      return err;
  }
  pthread_mutex_lock(&f->lock);
  struct item *it = &f->items[(key & KEY_ARCH) ? 1 : 0][idx];
  uint8_t *old = it->b.data;
  it->b = nb;
  it->state = data != NULL ? ITEM_SET : ITEM_REMOVED;
  /* A guest reading this item goes on reading the new bytes. */
  if ((f->selector & (KEY_ARCH | KEY_INDEX)) == (key & (KEY_ARCH | KEY_INDEX)))
    do_select(f, f->selector, f->off);
  pthread_mutex_unlock(&f->lock);
  free(old);
  return 0;
}
