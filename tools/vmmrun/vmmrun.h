/*
 * vmmrun - boot a guest on libvmm from flags or a JSON config file.
 * Shared declarations of the tool's files; docs/vmmrun.md is the manual.
 *
 *   options.c   the option table: flags, the JSON config, validation
 *   machine.c   the VM: memory, devices, the image, vCPUs
 *   control.c   the run-time control socket (one JSON command per line)
 *   main.c      the run: vCPU threads, timeout, signals, exit status, stats
 */
#ifndef VMMRUN_H
#define VMMRUN_H

#include <libvmm/vmm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct json_t;

/*
 * Exit statuses. The guest's own status (exit port) is always odd; every
 * status vmmrun chooses is even, so a script can tell them apart.
 */
enum vmmrun_status {
  VMMRUN_EXIT_POWEROFF = 0,  /* powered off, or every vCPU halted for good */
  VMMRUN_EXIT_USAGE = 2,     /* bad flag or config, image cannot be loaded */
  VMMRUN_EXIT_ERROR = 4,     /* engine or run-time error */
  VMMRUN_EXIT_SHUTDOWN = 6,  /* triple fault (shutdown) */
  VMMRUN_EXIT_RESET = 8,     /* the guest asked for a reset (reboot) */
  VMMRUN_EXIT_STOPPED = 10,  /* stopped through the control socket */
  VMMRUN_EXIT_TIMEOUT = 124, /* --timeout expired, as timeout(1) */
  VMMRUN_EXIT_SIGNAL = 130,  /* SIGINT, SIGTERM or SIGHUP */
};

enum vmmrun_serial_kind {
  VMMRUN_SERIAL_STDIO = 0, /* stdout, and stdin when it can be polled */
  VMMRUN_SERIAL_FILE = 1,  /* output to a file */
  VMMRUN_SERIAL_UNIX = 2,  /* a Unix socket server */
  VMMRUN_SERIAL_NONE = 3,  /* discarded */
};

enum vmmrun_tristate { VMMRUN_AUTO = 0, VMMRUN_ON = 1, VMMRUN_OFF = 2 };

/* --format elf: ELF32 or ELF64, whichever the file is. */
#define VMMRUN_FORMAT_ELF 1000

/* Everything a run is configured with. Strings are owned (malloc). */
struct vmmrun_opts {
  enum vmm_engine_kind engine;
  uint64_t memory; /* bytes */
  unsigned cpus;
  char *kernel;
  int format;                /* enum vmm_image_format, or VMMRUN_FORMAT_ELF */
  uint64_t load_addr, entry; /* VMM_LOADER_ADDR_AUTO: default */
  enum vmm_cpu_mode raw_mode;
  bool raw_mode_set;
  char *initrd;
  char *append;
  enum vmmrun_serial_kind serial;
  char *serial_path;
  double timeout;   /* seconds, 0: none */
  bool timeout_set; /* given (a demo's default applies otherwise) */
  char *stats;
  char *control;
  enum vmmrun_tristate irqchip;
  bool balloon;            /* --balloon: add the virtio-balloon */
  uint64_t balloon_target; /* its initial target, bytes */
  bool demo;
  bool hugepages; /* guest RAM with VMM_MEM_HUGEPAGES */
  int verbose; /* -1 quiet, 0 default, 1 info, 2 debug */
  char *config;
  /* Set by the parser. */
  bool help, version, list_engines;
};

#define VMMRUN_DEFAULT_MEMORY (256ull << 20)
#define VMMRUN_MAX_MEMORY (1ull << 40)
#define VMMRUN_MIN_MEMORY (2ull << 20)
#define VMMRUN_DEMO_TIMEOUT 30.0

void vmmrun_opts_init(struct vmmrun_opts *o);
void vmmrun_opts_free(struct vmmrun_opts *o);

/*
 * Parse the command line into o: first --config FILE (if given) is loaded,
 * then every flag is applied over it, so flags override the file. On error
 * returns -1 with a message naming the flag or field in err.
 */
int vmmrun_parse_args(struct vmmrun_opts *o, int argc, char **argv, char *err,
                      size_t errlen);

/*
 * Apply a JSON config held in memory (what --config reads), relative paths
 * resolved against base_dir (NULL: as given). Returns 0, or -1 with
 * "config: <field>: <what was expected>" in err. Used by the fuzz target.
 */
int vmmrun_config_apply(struct vmmrun_opts *o, const char *text, size_t len,
                        const char *base_dir, char *err, size_t errlen);

/* Cross-field checks after parsing (kernel given or demo, ...). */
int vmmrun_opts_check(const struct vmmrun_opts *o, char *err, size_t errlen);

/* The --help text. */
void vmmrun_usage(FILE *f);

/* Parsers shared with the control socket. */
int vmmrun_parse_size(const char *s, uint64_t unit, uint64_t *out);

/* ---- machine.c ---------------------------------------------------------- */

struct vmmrun_machine {
  vmm_vm *vm;
  vmm_loop *loop;
  vmm_vcpu **vcpus;
  unsigned nvcpus;
  vmm_dev *uart;
  vmm_dev *balloon; /* NULL without --balloon */
  bool irqchip;
  bool log_mute; /* library diagnostics are dropped while set */
  struct vmm_loader_result *load;
  /* Accesses nobody claimed: reads return all ones, writes are dropped. */
  struct vmmrun_unclaimed *unclaimed;
};

/* Build the VM; on error prints why and returns the exit status to use. */
int vmmrun_machine_create(struct vmmrun_machine *m, const struct vmmrun_opts *o,
                          const void *demo_image, size_t demo_size);
void vmmrun_machine_destroy(struct vmmrun_machine *m);
/* Unclaimed accesses as JSON (new reference). */
struct json_t *vmmrun_unclaimed_json(const struct vmmrun_machine *m);

/* ---- control.c ---------------------------------------------------------- */

struct vmmrun;
typedef struct vmmrun_control vmmrun_control;

/* Listen at path on the machine's loop (loop thread). */
int vmmrun_control_start(struct vmmrun *r, const char *path,
                         vmmrun_control **out, char *err, size_t errlen);
/* Close the listener and every client after its pending replies. */
void vmmrun_control_close(vmmrun_control *c);

/* ---- main.c: what the control socket drives ----------------------------- */

struct uv_loop_s;
/* The run's uv loop (the machine's). */
struct uv_loop_s *vmmrun_uv(struct vmmrun *r);
/* The statistics document (new reference), as --stats writes it. */
struct json_t *vmmrun_stats_json(struct vmmrun *r);
/* A state summary for the "info" command (new reference). */
struct json_t *vmmrun_info_json(struct vmmrun *r);
/* End the run with status (first caller wins). */
void vmmrun_finish(struct vmmrun *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Pause (stop every vCPU and keep them stopped) or resume. 0 or -1. */
int vmmrun_pause(struct vmmrun *r, bool pause, char *err, size_t errlen);
/* The balloon's state (new reference), after setting its target when
   target is not NULL (a size string, or an integer of MiB). NULL with a
   message in err when there is no balloon or the target is bad. */
struct json_t *vmmrun_balloon(struct vmmrun *r, const struct json_t *target,
                              char *err, size_t errlen);
/* Queue input for the guest's serial port; bytes taken or -1. */
long vmmrun_serial_input(struct vmmrun *r, const char *data, size_t len);
/* Print a diagnostic (level: 0 always, 1 with -v, 2 with -vv). */
void vmmrun_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
extern int vmmrun_verbosity;

#endif
