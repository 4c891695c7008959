/*
 * vmmrun's options: one table gives every option its flag, its JSON config
 * key and its parser, so the two can never disagree. Flags override the
 * config file. Every error names the flag or config field and says what
 * was expected.
 *
 * This file has no side effects beyond the options struct (no I/O except
 * reading the config file), so the fuzz target links it alone.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "vmmrun.h"

enum opt_type {
  T_ENGINE,
  T_MEMORY,
  T_CPUS,
  T_PATH,
  T_STRING,
  T_FORMAT,
  T_ADDR,
  T_MODE,
  T_SERIAL,
  T_DURATION,
  T_TRISTATE,
  T_BALLOON, /* a size (target); JSON also true/false */
  T_BOOL,    /* flag without a value; JSON true/false */
  T_VERBOSE, /* -v counts up, -q sets -1; JSON -1..2 */
  T_QUIET,
  T_CONFIG, /* flag only */
  T_ACTION, /* --help, --version, --engines: flag only */
};

enum opt_id {
  O_ENGINE,
  O_MEMORY,
  O_CPUS,
  O_KERNEL,
  O_FORMAT,
  O_LOAD_ADDR,
  O_ENTRY,
  O_RAW_MODE,
  O_INITRD,
  O_APPEND,
  O_SERIAL,
  O_TIMEOUT,
  O_STATS,
  O_CONTROL,
  O_IRQCHIP,
  O_BALLOON,
  O_DEMO,
  O_HUGEPAGES,
  O_VERBOSE,
  O_QUIET,
  O_CONFIG,
  O_HELP,
  O_VERSION,
  O_ENGINES,
};

struct opt {
  enum opt_id id;
  const char *name; /* --name; JSON key: the same with '_' for '-' */
  char short_name;
  enum opt_type type;
  const char *arg;  /* value placeholder in --help */
  const char *help; /* one line */
};

static const struct opt opts[] = {
    {O_ENGINE, "engine", 'e', T_ENGINE, "auto|kvm|bt",
     "execution engine (default auto)"},
    {O_MEMORY, "memory", 'm', T_MEMORY, "SIZE",
     "guest RAM: 256M, 1G, or a number of MiB (default 256M)"},
    {O_CPUS, "cpus", 'c', T_CPUS, "N", "vCPUs (default 1; see docs/vmmrun.md)"},
    {O_KERNEL, "kernel", 'k', T_PATH, "FILE",
     "guest image: bzImage, Multiboot, ELF or flat (also positional)"},
    {O_FORMAT, "format", 'f', T_FORMAT, "FMT",
     "auto|raw|elf|elf32|elf64|multiboot|bzimage (default auto: detected)"},
    {O_LOAD_ADDR, "load-addr", 0, T_ADDR, "ADDR",
     "flat image: load address (default 0x7c00 real mode, else 0x100000)"},
    {O_ENTRY, "entry", 0, T_ADDR, "ADDR",
     "flat image: entry point (default the load address)"},
    {O_RAW_MODE, "raw-mode", 0, T_MODE, "real|prot32|long64",
     "flat image: CPU mode at entry (default real)"},
    {O_INITRD, "initrd", 'i', T_PATH, "FILE", "initial ramdisk (bzImage)"},
    {O_APPEND, "append", 'a', T_STRING, "CMDLINE", "kernel command line"},
    {O_SERIAL, "serial", 's', T_SERIAL, "BACKEND",
     "COM1: stdio|file:PATH|unix:PATH|none (default stdio)"},
    {O_TIMEOUT, "timeout", 't', T_DURATION, "SECONDS",
     "stop after this long, exit status 124 (10, 2.5, 500ms; 0: none)"},
    {O_STATS, "stats", 0, T_PATH, "FILE",
     "write JSON statistics here when the run ends"},
    {O_CONTROL, "control", 0, T_PATH, "PATH",
     "control socket: one JSON command per line (docs/vmmrun.md)"},
    {O_IRQCHIP, "irqchip", 0, T_TRISTATE, "auto|on|off",
     "engine's interrupt controller and PIT (default auto: if it has one)"},
    {O_BALLOON, "balloon", 0, T_BALLOON, "TARGET",
     "add a virtio-balloon asking for TARGET (64M; 0: none yet)"},
    {O_DEMO, "demo", 0, T_BOOL, NULL,
     "boot the built-in demo guest (what no arguments do)"},
    {O_HUGEPAGES, "hugepages", 0, T_BOOL, NULL,
     "guest RAM as anonymous memory with transparent huge pages, no memfd"},
    {O_VERBOSE, "verbose", 'v', T_VERBOSE, NULL,
     "more messages on stderr (repeat for library debug logs)"},
    {O_QUIET, "quiet", 'q', T_QUIET, NULL, "errors only"},
    {O_CONFIG, "config", 'C', T_CONFIG, "FILE",
     "JSON config file; flags override its values"},
    {O_ENGINES, "engines", 0, T_ACTION, NULL,
     "list the engines this host can run, and exit"},
    {O_VERSION, "version", 'V', T_ACTION, NULL, "print the version and exit"},
    {O_HELP, "help", 'h', T_ACTION, NULL, "this help"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

/* The option a T_BOOL sets. */
static bool *bool_opt(struct vmmrun_opts *o, enum opt_id id) {
  return id == O_HUGEPAGES ? &o->hugepages : &o->demo;
}

void vmmrun_opts_init(struct vmmrun_opts *o) {
  memset(o, 0, sizeof(*o));
  o->engine = VMM_ENGINE_AUTO;
  o->memory = VMMRUN_DEFAULT_MEMORY;
  o->cpus = 1;
  o->format = VMM_IMAGE_AUTO;
  o->load_addr = VMM_LOADER_ADDR_AUTO;
  o->entry = VMM_LOADER_ADDR_AUTO;
  o->raw_mode = VMM_MODE_REAL;
  o->serial = VMMRUN_SERIAL_STDIO;
  o->irqchip = VMMRUN_AUTO;
}

void vmmrun_opts_free(struct vmmrun_opts *o) {
  free(o->kernel);
  free(o->initrd);
  free(o->append);
  free(o->serial_path);
  free(o->stats);
  free(o->control);
  free(o->config);
  memset(o, 0, sizeof(*o));
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t len,
                                                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Value parsers: 0 on success, -1 if the text is not a valid value.        */

int vmmrun_parse_size(const char *s, uint64_t unit, uint64_t *out) {
  if (s == NULL || !isdigit((unsigned char)*s))
    return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0)
    return -1;
  uint64_t mul = unit;
  if (*end != 0) {
    switch (toupper((unsigned char)*end)) {
    case 'B': mul = 1; break;
    case 'K': mul = 1ull << 10; break;
    case 'M': mul = 1ull << 20; break;
    case 'G': mul = 1ull << 30; break;
    case 'T': mul = 1ull << 40; break;
    default: return -1;
    }
    end++;
    /* "M", "MB", "MiB" all mean MiB (binary units, as memory sizes are) */
    if (mul != 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
      end += strlen(end);
    if (*end != 0)
      return -1;
  }
  if (v > UINT64_MAX / mul)
    return -1;
  *out = (uint64_t)v * mul;
  return 0;
}

static int parse_addr(const char *s, uint64_t *out) {
  if (s == NULL || !isdigit((unsigned char)*s))
    return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno != 0 || *end != 0 || v >= (1ull << 52))
    return -1;
  *out = v;
  return 0;
}

static int parse_duration(const char *s, double *out) {
  if (s == NULL || !(isdigit((unsigned char)*s) || *s == '.'))
    return -1;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (errno != 0 || end == s)
    return -1;
  double mul = 1;
  if (strcmp(end, "ms") == 0)
    mul = 1e-3;
  else if (strcmp(end, "s") == 0 || *end == 0)
    mul = 1;
  else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
    mul = 60;
  else if (strcmp(end, "h") == 0)
    mul = 3600;
  else
    return -1;
  v *= mul;
  if (!isfinite(v) || v < 0 || v > 30 * 86400.0)
    return -1;
  *out = v;
  return 0;
}

static const char *const format_names[] = {
    [VMM_IMAGE_AUTO] = "auto",           [VMM_IMAGE_RAW] = "raw",
    [VMM_IMAGE_ELF32] = "elf32",         [VMM_IMAGE_ELF64] = "elf64",
    [VMM_IMAGE_MULTIBOOT] = "multiboot", [VMM_IMAGE_BZIMAGE] = "bzimage",
};

static int parse_format(const char *s, int *out) {
  if (strcmp(s, "elf") == 0) {
    *out = VMMRUN_FORMAT_ELF;
    return 0;
  }
  for (int i = 0; i < (int)(sizeof(format_names) / sizeof(format_names[0]));
       i++)
    if (strcmp(s, format_names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}

static int parse_engine(const char *s, enum vmm_engine_kind *out) {
  if (strcmp(s, "auto") == 0)
    *out = VMM_ENGINE_AUTO;
  else if (strcmp(s, "kvm") == 0)
    *out = VMM_ENGINE_KVM;
  else if (strcmp(s, "bt") == 0)
    *out = VMM_ENGINE_BT;
  else
    return -1;
  return 0;
}

static int parse_mode(const char *s, enum vmm_cpu_mode *out) {
  if (strcmp(s, "real") == 0)
    *out = VMM_MODE_REAL;
  else if (strcmp(s, "prot32") == 0)
    *out = VMM_MODE_PROT32;
  else if (strcmp(s, "long64") == 0)
    *out = VMM_MODE_LONG64;
  else
    return -1;
  return 0;
}

static int parse_tristate(const char *s, enum vmmrun_tristate *out) {
  if (strcmp(s, "auto") == 0)
    *out = VMMRUN_AUTO;
  else if (strcmp(s, "on") == 0 || strcmp(s, "true") == 0)
    *out = VMMRUN_ON;
  else if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0)
    *out = VMMRUN_OFF;
  else
    return -1;
  return 0;
}

/* What each type expects, for error messages. */
static const char *expected(const struct opt *d) {
  switch (d->type) {
  case T_ENGINE: return "expected \"auto\", \"kvm\" or \"bt\"";
  case T_MEMORY:
    return "expected a size like \"256M\" or an integer (MiB), 2M..1T, a "
           "multiple of 4K";
  case T_CPUS: return "expected an integer 1..256";
  case T_PATH: return "expected a file path (a non-empty string)";
  case T_STRING: return "expected a string";
  case T_FORMAT:
    return "expected one of auto, raw, elf, elf32, elf64, multiboot, bzimage";
  case T_ADDR:
    return "expected an address like \"0x100000\" or an integer below 2^52";
  case T_MODE: return "expected \"real\", \"prot32\" or \"long64\"";
  case T_SERIAL:
    return "expected \"stdio\", \"file:PATH\", \"unix:PATH\" or \"none\"";
  case T_DURATION:
    return "expected seconds like 10 or 2.5, or a string like \"500ms\", "
           "\"2m\" (0: no timeout; at most 30 days)";
  case T_TRISTATE: return "expected \"auto\", \"on\", \"off\", true or false";
  case T_BALLOON:
    return "expected a target size like \"64M\" or an integer (MiB), a "
           "multiple of 4K (0: an empty balloon; config: also true or false)";
  case T_BOOL: return "expected true or false";
  case T_VERBOSE: return "expected an integer -1..2";
  default: return "not allowed here";
  }
}

static char *join_path(const char *base_dir, const char *path) {
  if (base_dir == NULL || path[0] == '/')
    return strdup(path);
  size_t n = strlen(base_dir) + strlen(path) + 2;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s/%s", base_dir, path);
  return p;
}

static int set_string(char **dst, char *value) {
  if (value == NULL)
    return -1;
  free(*dst);
  *dst = value;
  return 0;
}

/*
 * Set option d from a string (str) or a JSON value (json, config files).
 * base_dir resolves relative paths from a config file. Returns 0, or -1
 * after writing "<field>: <expected>" to err.
 */
static int apply(struct vmmrun_opts *o, const struct opt *d, const char *str,
                 const json_t *json, const char *base_dir, const char *field,
                 char *err, size_t errlen) {
  if (json != NULL) {
    /* Non-string JSON values the type accepts directly. */
    switch (d->type) {
    case T_MEMORY:
    case T_CPUS:
    case T_ADDR:
    case T_VERBOSE:
      if (json_is_integer(json)) {
        json_int_t v = json_integer_value(json);
        if (d->type == T_VERBOSE) {
          if (v < -1 || v > 2)
            goto bad;
          o->verbose = (int)v;
          return 0;
        }
        if (v < 0)
          goto bad;
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)v);
        return apply(o, d, buf, NULL, base_dir, field, err, errlen);
      }
      break;
    case T_DURATION:
      if (json_is_number(json)) {
        double v = json_number_value(json);
        if (!isfinite(v) || v < 0 || v > 30 * 86400.0)
          goto bad;
        o->timeout = v;
        o->timeout_set = true;
        return 0;
      }
      break;
    case T_BALLOON:
      if (json_is_boolean(json)) {
        o->balloon = json_is_true(json);
        o->balloon_target = 0;
        return 0;
      }
      if (json_is_integer(json)) {
        json_int_t v = json_integer_value(json);
        if (v < 0)
          goto bad;
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)v);
        return apply(o, d, buf, NULL, base_dir, field, err, errlen);
      }
      break;
    case T_BOOL:
    case T_TRISTATE:
      if (json_is_boolean(json)) {
        if (d->type == T_BOOL)
          *bool_opt(o, d->id) = json_is_true(json);
        else
          o->irqchip = json_is_true(json) ? VMMRUN_ON : VMMRUN_OFF;
        return 0;
      }
      if (d->type == T_BOOL)
        goto bad;
      break;
    default: break;
    }
    /* Counts are integers in a config, never strings. */
    if (!json_is_string(json) || d->type == T_VERBOSE || d->type == T_CPUS)
      goto bad;
    str = json_string_value(json);
  }

  switch (d->type) {
  case T_ENGINE:
    if (parse_engine(str, &o->engine) < 0)
      goto bad;
    return 0;
  case T_MEMORY: {
    uint64_t v;
    if (vmmrun_parse_size(str, 1ull << 20, &v) < 0 || v < VMMRUN_MIN_MEMORY ||
        v > VMMRUN_MAX_MEMORY || (v & 0xfff))
      goto bad;
    o->memory = v;
    return 0;
  }
  case T_CPUS: {
    uint64_t v;
    if (parse_addr(str, &v) < 0 || v < 1 || v > VMM_MAX_VCPUS)
      goto bad;
    o->cpus = (unsigned)v;
    return 0;
  }
  case T_PATH: {
    if (*str == 0)
      goto bad;
    char *p = json != NULL ? join_path(base_dir, str) : strdup(str);
    char **dst = d->id == O_KERNEL   ? &o->kernel
                 : d->id == O_INITRD ? &o->initrd
                 : d->id == O_STATS  ? &o->stats
                                     : &o->control;
    if (set_string(dst, p) < 0)
      return fail(err, errlen, "%s: out of memory", field);
    return 0;
  }
  case T_STRING:
    if (set_string(&o->append, strdup(str)) < 0)
      return fail(err, errlen, "%s: out of memory", field);
    return 0;
  case T_FORMAT:
    if (parse_format(str, &o->format) < 0)
      goto bad;
    return 0;
  case T_ADDR:
    if (parse_addr(str, d->id == O_LOAD_ADDR ? &o->load_addr : &o->entry) < 0)
      goto bad;
    return 0;
  case T_MODE:
    if (parse_mode(str, &o->raw_mode) < 0)
      goto bad;
    o->raw_mode_set = true;
    return 0;
  case T_SERIAL: {
    enum vmmrun_serial_kind kind;
    const char *path = NULL;
    if (strcmp(str, "stdio") == 0)
      kind = VMMRUN_SERIAL_STDIO;
    else if (strcmp(str, "none") == 0)
      kind = VMMRUN_SERIAL_NONE;
    else if (strncmp(str, "file:", 5) == 0 && str[5] != 0)
      kind = VMMRUN_SERIAL_FILE, path = str + 5;
    else if (strncmp(str, "unix:", 5) == 0 && str[5] != 0)
      kind = VMMRUN_SERIAL_UNIX, path = str + 5;
    else
      goto bad;
    char *p = NULL;
    if (path != NULL &&
        (p = json != NULL ? join_path(base_dir, path) : strdup(path)) == NULL)
      return fail(err, errlen, "%s: out of memory", field);
    free(o->serial_path);
    o->serial_path = p;
    o->serial = kind;
    return 0;
  }
  case T_DURATION:
    if (parse_duration(str, &o->timeout) < 0)
      goto bad;
    o->timeout_set = true;
    return 0;
  case T_TRISTATE:
    if (parse_tristate(str, &o->irqchip) < 0)
      goto bad;
    return 0;
  case T_BALLOON: {
    uint64_t v;
    if (vmmrun_parse_size(str, 1ull << 20, &v) < 0 || (v & 0xfff) ||
        v > VMMRUN_MAX_MEMORY)
      goto bad;
    o->balloon = true;
    o->balloon_target = v;
    return 0;
  }
  default: goto bad;
  }
bad:
  return fail(err, errlen, "%s: %s", field, expected(d));
}

/* ------------------------------------------------------------------------ */
/* The JSON config                                                          */

int vmmrun_config_apply(struct vmmrun_opts *o, const char *text, size_t len,
                        const char *base_dir, char *err, size_t errlen) {
  json_error_t je;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (root == NULL)
    return fail(err, errlen, "config: line %d, column %d: %s", je.line,
                je.column, je.text);
  int rc = 0;
  if (!json_is_object(root)) {
    rc = fail(err, errlen, "config: expected a JSON object at the top level");
    goto out;
  }
  const char *key;
  json_t *value;
  json_object_foreach(root, key, value) {
    const struct opt *d = NULL;
    for (size_t i = 0; i < NOPTS && d == NULL; i++) {
      if (opts[i].type >= T_QUIET)
        continue; /* flag-only options have no config key */
      const char *a = opts[i].name, *b = key;
      /* The key is the option's name with '_' where it has '-'. */
      while (*a && (*a == '-' ? *b == '_' : *a == *b))
        a++, b++;
      if (*a == 0 && *b == 0)
        d = &opts[i];
    }
    char field[96];
    snprintf(field, sizeof(field), "config: %.80s", key);
    if (d == NULL) {
      rc = fail(err, errlen, "%s: unknown key (see vmmrun --help)", field);
      goto out;
    }
    if ((rc = apply(o, d, NULL, value, base_dir, field, err, errlen)) < 0)
      goto out;
  }
out:
  json_decref(root);
  return rc;
}

static int load_config(struct vmmrun_opts *o, const char *path, char *err,
                       size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return fail(err, errlen, "--config: %s: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 4096;
      if (cap > (1u << 20)) {
        rc = fail(err, errlen, "--config: %s: larger than 1 MiB", path);
        goto out;
      }
      char *n = realloc(buf, cap);
      if (n == NULL) {
        rc = fail(err, errlen, "--config: out of memory");
        goto out;
      }
      buf = n;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0)
      break;
  }
  if (ferror(f)) {
    rc = fail(err, errlen, "--config: %s: read error", path);
    goto out;
  }
  {
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash != NULL)
      *slash = 0;
    char msg[512];
    rc = vmmrun_config_apply(o, buf, len, slash ? dir : NULL, msg, sizeof(msg));
    if (rc < 0)
      fail(err, errlen, "%s (in %s)", msg, path);
    free(dir);
  }
out:
  free(buf);
  fclose(f);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The command line                                                         */

struct arg {
  const struct opt *d;
  const char *value; /* NULL for flags without a value */
  char flag[40];     /* how it was spelled, for messages */
};

static const struct opt *find_long(const char *name, size_t n) {
  for (size_t i = 0; i < NOPTS; i++)
    if (strlen(opts[i].name) == n && strncmp(opts[i].name, name, n) == 0)
      return &opts[i];
  return NULL;
}

static const struct opt *find_short(char c) {
  for (size_t i = 0; i < NOPTS; i++)
    if (opts[i].short_name == c)
      return &opts[i];
  return NULL;
}

static bool takes_value(const struct opt *d) {
  return d->type != T_BOOL && d->type != T_VERBOSE && d->type != T_QUIET &&
         d->type != T_ACTION;
}

int vmmrun_parse_args(struct vmmrun_opts *o, int argc, char **argv, char *err,
                      size_t errlen) {
  /* At most one option per character of the command line (-vvv). */
  size_t max_args = 1;
  for (int i = 1; i < argc; i++)
    max_args += strlen(argv[i]);
  struct arg *args = calloc(max_args, sizeof(*args));
  size_t nargs = 0;
  const char *positional = NULL;
  const char *config = NULL;
  int rc = -1;
  if (args == NULL)
    return fail(err, errlen, "out of memory");

  /* Pass 1: split the command line without applying anything. */
  bool only_positional = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_positional || a[0] != '-' || a[1] == 0) {
      if (positional != NULL) {
        fail(err, errlen,
             "unexpected argument \"%s\" (the kernel is \"%s\"; quote the "
             "command line of --append)",
             a, positional);
        goto out;
      }
      positional = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_positional = true;
      continue;
    }
    if (a[1] == '-') {
      const char *name = a + 2, *eq = strchr(name, '=');
      size_t n = eq ? (size_t)(eq - name) : strlen(name);
      const struct opt *d = find_long(name, n);
      if (d == NULL) {
        fail(err, errlen, "unknown option --%.*s (see vmmrun --help)",
             (int)(n > 40 ? 40 : n), name);
        goto out;
      }
      struct arg *g = &args[nargs++];
      g->d = d;
      snprintf(g->flag, sizeof(g->flag), "--%s", d->name);
      if (!takes_value(d)) {
        if (eq != NULL) {
          fail(err, errlen, "--%s takes no value", d->name);
          goto out;
        }
      } else if (eq != NULL) {
        g->value = eq + 1;
      } else if (i + 1 < argc) {
        g->value = argv[++i];
      } else {
        fail(err, errlen, "--%s: missing value (%s)", d->name, d->arg);
        goto out;
      }
      continue;
    }
    /* A cluster of short options: -vv, -m 256M, -m256M. */
    for (const char *p = a + 1; *p; p++) {
      const struct opt *d = find_short(*p);
      if (d == NULL) {
        fail(err, errlen, "unknown option -%c (see vmmrun --help)", *p);
        goto out;
      }
      struct arg *g = &args[nargs++];
      g->d = d;
      snprintf(g->flag, sizeof(g->flag), "--%s", d->name);
      if (!takes_value(d))
        continue;
      if (p[1] != 0) {
        g->value = p + 1;
      } else if (i + 1 < argc) {
        g->value = argv[++i];
      } else {
        fail(err, errlen, "-%c: missing value (%s)", *p, d->arg);
        goto out;
      }
      break;
    }
  }
  for (size_t i = 0; i < nargs; i++)
    if (args[i].d->type == T_CONFIG)
      config = args[i].value;

  /* Pass 2: the config file, then the flags over it. */
  if (config != NULL) {
    if (load_config(o, config, err, errlen) < 0)
      goto out;
    free(o->config);
    o->config = strdup(config);
  }
  for (size_t i = 0; i < nargs; i++) {
    const struct arg *g = &args[i];
    switch (g->d->type) {
    case T_CONFIG: break;
    case T_ACTION:
      if (g->d->id == O_HELP)
        o->help = true;
      else if (g->d->id == O_VERSION)
        o->version = true;
      else
        o->list_engines = true;
      break;
    case T_BOOL: *bool_opt(o, g->d->id) = true; break;
    case T_VERBOSE:
      o->verbose = o->verbose < 0 ? 1 : o->verbose + 1;
      if (o->verbose > 2)
        o->verbose = 2;
      break;
    case T_QUIET: o->verbose = -1; break;
    default:
      if (apply(o, g->d, g->value, NULL, NULL, g->flag, err, errlen) < 0)
        goto out;
    }
  }
  if (positional != NULL) {
    if (set_string(&o->kernel, strdup(positional)) < 0) {
      fail(err, errlen, "out of memory");
      goto out;
    }
  }
  rc = 0;
out:
  free(args);
  return rc;
}

int vmmrun_opts_check(const struct vmmrun_opts *o, char *err, size_t errlen) {
  if (o->demo && o->kernel != NULL)
    return fail(err, errlen,
                "--demo boots the built-in demo guest: do not also give a "
                "kernel (%s)",
                o->kernel);
  if (!o->demo && o->kernel == NULL)
    return fail(err, errlen,
                "no kernel given (vmmrun KERNEL, --kernel or \"kernel\" in "
                "the config; no arguments at all boot the demo)");
  if (o->balloon && o->balloon_target > o->memory)
    return fail(err, errlen,
                "--balloon: a target of %llu MiB is more than the guest's "
                "%llu MiB of memory",
                (unsigned long long)(o->balloon_target >> 20),
                (unsigned long long)(o->memory >> 20));
  if (o->initrd != NULL && o->format != VMM_IMAGE_AUTO &&
      o->format != VMM_IMAGE_BZIMAGE)
    return fail(err, errlen, "--initrd: only bzImage kernels take an initrd");
  bool raw_opts = o->load_addr != VMM_LOADER_ADDR_AUTO ||
                  o->entry != VMM_LOADER_ADDR_AUTO || o->raw_mode_set;
  if (raw_opts && o->format != VMM_IMAGE_AUTO && o->format != VMM_IMAGE_RAW)
    return fail(err, errlen,
                "--load-addr, --entry and --raw-mode are for flat images, "
                "not --format %s",
                o->format == VMMRUN_FORMAT_ELF ? "elf"
                                               : format_names[o->format]);
  return 0;
}

void vmmrun_usage(FILE *f) {
  fprintf(f, "usage: vmmrun [options] [KERNEL]\n"
             "       vmmrun                 boot the built-in demo guest\n"
             "\n"
             "Boots a guest on libvmm. The image format is detected (bzImage,\n"
             "Multiboot, ELF, else flat). Every option also has a config-file\n"
             "key: its long name with '_' for '-' (\"load_addr\").\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    const struct opt *d = &opts[i];
    char left[64];
    int n = d->short_name ? snprintf(left, sizeof(left), "-%c, --%s",
                                     d->short_name, d->name)
                          : snprintf(left, sizeof(left), "    --%s", d->name);
    if (d->arg != NULL && n > 0 && (size_t)n < sizeof(left))
      snprintf(left + n, sizeof(left) - (size_t)n, " %s", d->arg);
    if (strlen(left) > 28)
      fprintf(f, "  %s\n  %-28s %s\n", left, "", d->help);
    else
      fprintf(f, "  %-28s %s\n", left, d->help);
  }
  fprintf(f, "\nExit status:\n"
             "  odd     the guest's exit-port status: (value << 1) | 1, low 8 "
             "bits\n"
             "  0       the guest powered off, or halted with no way to wake\n"
             "  2       usage, config or image-loading error\n"
             "  4       engine or run-time error\n"
             "  6       triple fault (shutdown)\n"
             "  8       the guest asked for a reset (reboot)\n"
             "  10      stopped through the control socket\n"
             "  124     --timeout expired\n"
             "  130     interrupted by SIGINT, SIGTERM or SIGHUP\n"
             "\nSee docs/vmmrun.md for devices, the config format, statistics "
             "and the\ncontrol socket.\n");
}
