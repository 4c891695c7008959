/*
 * vmmrun: boot a guest on libvmm. This file runs it: every vCPU on a
 * library thread, their completions, the timeout, signals and the control
 * socket on one event loop (this thread), then the exit status and the
 * statistics. docs/vmmrun.md is the manual.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "vmmrun.h"

#ifdef VMMRUN_HAVE_DEMO
/* guest/demo's kernel, linked in by demo_image.asm. */
extern const unsigned char vmmrun_demo_image[], vmmrun_demo_image_end[];
#endif

int vmmrun_verbosity = 1;

void vmmrun_log(int level, const char *fmt, ...) {
  if (level > vmmrun_verbosity)
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "vmmrun: %s\n", msg);
}

struct vcpu_state {
  bool running; /* started, completion not yet delivered */
  bool halted;  /* HLT with nothing to wake it: not restarted */
  bool parked;  /* stopped by a pause, restarted by resume */
};

struct vmmrun {
  struct vmmrun_opts *o;
  struct vmmrun_machine m;
  uv_loop_t *uv;
  uv_timer_t timer;
  uv_signal_t signals[3];
  bool handles_open;
  vmmrun_control *control;
  struct vcpu_state *vs;
  unsigned running;
  bool ending, paused;
  int status;
  char reason[512];
  uint64_t t_start, t_end; /* CLOCK_MONOTONIC ns */
};

uv_loop_t *vmmrun_uv(struct vmmrun *r) {
  return r->uv;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void close_handles(struct vmmrun *r) {
  if (!r->handles_open)
    return;
  r->handles_open = false;
  uv_close((uv_handle_t *)&r->timer, NULL);
  for (size_t i = 0; i < sizeof(r->signals) / sizeof(r->signals[0]); i++)
    uv_close((uv_handle_t *)&r->signals[i], NULL);
  vmmrun_control_close(r->control);
  r->control = NULL;
}

/* Once the run is ending and no vCPU runs, let the loop drain and return. */
static void maybe_done(struct vmmrun *r) {
  if (r->ending && r->running == 0)
    close_handles(r);
}

void vmmrun_finish(struct vmmrun *r, int status, const char *fmt, ...) {
  if (!r->ending) {
    r->ending = true;
    r->status = status;
    r->t_end = now_ns();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    uv_timer_stop(&r->timer);
    /* Every vCPU still running comes back with STOPPED (or the system
       event that ended the run); secondary vCPUs waiting for a SIPI too. */
    vmm_vm_stop(r->m.vm);
  }
  maybe_done(r);
}

static int start_vcpu(struct vmmrun *r, unsigned i);

static void on_done(vmm_vcpu *vcpu, int status, struct vmm_exit *e,
                    void *opaque) {
  struct vmmrun *r = opaque;
  unsigned i = vmm_vcpu_index(vcpu);
  r->vs[i].running = false;
  r->running--;
  struct vmm_regs regs = {0};
  vmm_vcpu_get_regs(vcpu, &regs);
  unsigned long long rip = (unsigned long long)regs.rip;

  if (status < 0) {
    vmmrun_finish(r, VMMRUN_EXIT_ERROR, "vCPU %u: run failed: %s (rip 0x%llx)",
                  i, vmm_strerror(status), rip);
  } else {
    switch (e->reason) {
    case VMM_EXIT_SYSTEM:
      switch (e->system.event) {
      case VMM_SYSTEM_EXIT_PORT:
        vmmrun_finish(r, e->system.status & 0xff,
                      "the guest wrote %u to the exit port: status (%u << 1) "
                      "| 1 = %d",
                      (uint32_t)e->system.status >> 1,
                      (uint32_t)e->system.status >> 1, e->system.status & 0xff);
        break;
      case VMM_SYSTEM_POWEROFF:
        vmmrun_finish(r, VMMRUN_EXIT_POWEROFF, "the guest powered off");
        break;
      case VMM_SYSTEM_RESET:
        vmmrun_finish(r, VMMRUN_EXIT_RESET, "the guest asked for a reset");
        break;
      default:
        vmmrun_finish(r, VMMRUN_EXIT_ERROR, "unknown system event %u",
                      e->system.event);
      }
      break;
    case VMM_EXIT_SHUTDOWN:
      vmmrun_finish(r, VMMRUN_EXIT_SHUTDOWN,
                    "vCPU %u: triple fault (shutdown) at rip 0x%llx", i, rip);
      break;
    case VMM_EXIT_HLT: {
      r->vs[i].halted = true;
      bool all = true;
      for (unsigned k = 0; k < r->m.nvcpus; k++)
        all = all && r->vs[k].halted;
      vmmrun_log(2, "vCPU %u halted at rip 0x%llx with nothing to wake it", i,
                 rip);
      if (all)
        vmmrun_finish(r, VMMRUN_EXIT_POWEROFF,
                      "every vCPU halted with nothing to wake it");
      break;
    }
    case VMM_EXIT_STOPPED:
      if (r->ending)
        break;
      if (r->paused)
        r->vs[i].parked = true;
      else if (start_vcpu(r, i) < 0)
        vmmrun_finish(r, VMMRUN_EXIT_ERROR, "vCPU %u: cannot restart", i);
      break;
    case VMM_EXIT_INTERNAL_ERROR:
      vmmrun_finish(r, VMMRUN_EXIT_ERROR,
                    "vCPU %u: the %s engine failed (internal error %u, engine "
                    "code %u) at rip 0x%llx",
                    i, vmm_engine_name(vmm_vm_engine(r->m.vm)),
                    e->internal.code, e->internal.engine_code, rip);
      break;
    default:
      vmmrun_finish(r, VMMRUN_EXIT_ERROR,
                    "vCPU %u: unexpected exit \"%s\" at rip 0x%llx", i,
                    vmm_exit_reason_name(e->reason), rip);
    }
  }
  maybe_done(r);
}

static int start_vcpu(struct vmmrun *r, unsigned i) {
  int err = vmm_vcpu_start(r->m.vcpus[i], on_done, r);
  if (err < 0) {
    vmmrun_log(0, "vCPU %u: cannot start: %s", i, vmm_strerror(err));
    return -1;
  }
  r->vs[i].running = true;
  r->running++;
  return 0;
}

int vmmrun_pause(struct vmmrun *r, bool pause, char *err, size_t errlen) {
  if (r->ending) {
    snprintf(err, errlen, "the run is ending");
    return -1;
  }
  if (pause == r->paused)
    return 0;
  r->paused = pause;
  if (pause) {
    vmm_vm_stop(r->m.vm);
    return 0;
  }
  for (unsigned i = 0; i < r->m.nvcpus; i++) {
    if (r->vs[i].parked) {
      r->vs[i].parked = false;
      if (start_vcpu(r, i) < 0) {
        snprintf(err, errlen, "vCPU %u: cannot restart", i);
        vmmrun_finish(r, VMMRUN_EXIT_ERROR, "vCPU %u: cannot restart", i);
        return -1;
      }
    }
  }
  return 0;
}

json_t *vmmrun_balloon(struct vmmrun *r, const json_t *target, char *err,
                       size_t errlen) {
  vmm_dev *b = r->m.balloon;
  if (b == NULL) {
    snprintf(err, errlen,
             "balloon: this guest has no balloon (start vmmrun with "
             "--balloon)");
    return NULL;
  }
  if (target != NULL) {
    uint64_t bytes = 0;
    int ok = -1;
    if (json_is_string(target))
      ok = vmmrun_parse_size(json_string_value(target), 1ull << 20, &bytes);
    else if (json_is_integer(target) && json_integer_value(target) >= 0 &&
             (uint64_t)json_integer_value(target) <= (r->o->memory >> 20))
      ok = 0, bytes = (uint64_t)json_integer_value(target) << 20;
    int e = ok < 0 || (bytes & 0xfff) || bytes > r->o->memory
                ? VMM_EINVAL
                : vmm_balloon_set_target(b, bytes);
    if (e < 0) {
      snprintf(err, errlen,
               "balloon: target: expected a size like \"64M\" or an integer "
               "(MiB), a multiple of 4K, at most the guest's %llu MiB",
               (unsigned long long)(r->o->memory >> 20));
      return NULL;
    }
  }
  /* Fresh guest statistics for the next query (the driver answers
     asynchronously; none when it is not running or did not take them). */
  vmm_balloon_request_stats(b);
  json_t *j = NULL;
  int e = vmm_dev_stats(b, &j);
  if (e < 0) {
    snprintf(err, errlen, "balloon: %s", vmm_strerror(e));
    return NULL;
  }
  return j;
}

long vmmrun_serial_input(struct vmmrun *r, const char *data, size_t len) {
  return r->m.uart ? vmm_uart_input(r->m.uart, data, len) : -1;
}

static void on_timeout(uv_timer_t *t) {
  struct vmmrun *r = t->data;
  vmmrun_finish(r, VMMRUN_EXIT_TIMEOUT, "timeout: stopped after %g s",
                r->o->timeout);
}

static void on_signal(uv_signal_t *s, int signum) {
  struct vmmrun *r = s->data;
  vmmrun_finish(r, VMMRUN_EXIT_SIGNAL, "interrupted by %s",
                signum == SIGINT    ? "SIGINT"
                : signum == SIGTERM ? "SIGTERM"
                                    : "SIGHUP");
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */

static const char *state_name(const struct vmmrun *r) {
  if (r->ending)
    return r->running == 0 ? "ended" : "ending";
  return r->paused ? "paused" : "running";
}

json_t *vmmrun_info_json(struct vmmrun *r) {
  json_t *vcpus = json_array();
  for (unsigned i = 0; i < r->m.nvcpus; i++) {
    const struct vcpu_state *v = &r->vs[i];
    json_array_append_new(vcpus, json_pack("{s:i,s:s}", "index", i, "state",
                                           v->running  ? "running"
                                           : v->halted ? "halted"
                                           : v->parked ? "paused"
                                                       : "stopped"));
  }
  return json_pack(
      "{s:s,s:s,s:s,s:s,s:I,s:i,s:b,s:s,s:o,s:I}", "version",
      vmm_version_string(), "engine", vmm_engine_name(vmm_vm_engine(r->m.vm)),
      "engine_reason", vmm_vm_engine_reason(r->m.vm), "state", state_name(r),
      "memory", (json_int_t)r->o->memory, "cpus", r->o->cpus, "irqchip",
      r->m.irqchip, "kernel", r->o->demo ? "(demo)" : r->o->kernel, "vcpus",
      vcpus, "uptime_ns", (json_int_t)(now_ns() - r->t_start));
}

json_t *vmmrun_stats_json(struct vmmrun *r) {
  json_t *root = NULL;
  int err = vmm_vm_stats_json(r->m.vm, &root);
  if (err < 0)
    return json_pack("{s:s}", "error", vmm_strerror(err));
  uint64_t end = r->ending ? r->t_end : now_ns();
  json_t *me = json_pack(
      "{s:s,s:s,s:s,s:I,s:i,s:b,s:s,s:I}", "version", vmm_version_string(),
      "kernel", r->o->demo ? "(demo)" : r->o->kernel, "format",
      vmm_image_format_name(r->m.load->format), "memory",
      (json_int_t)r->o->memory, "cpus", r->o->cpus, "irqchip", r->m.irqchip,
      "state", state_name(r), "wall_ns", (json_int_t)(end - r->t_start));
  if (me != NULL) {
    json_object_set_new(me, "status",
                        r->ending ? json_integer(r->status) : json_null());
    json_object_set_new(me, "reason",
                        r->ending ? json_string(r->reason) : json_null());
  }
  json_object_set_new(root, "vmmrun", me);
  json_object_set_new(root, "unclaimed", vmmrun_unclaimed_json(&r->m));
  return root;
}

/* A short report of where the demo's exits went (no arguments). */
static void demo_summary(struct vmmrun *r, json_t *stats, const char *engine,
                         const char *why) {
  json_t *total = json_object_get(stats, "total");
  json_int_t served = json_integer_value(json_object_get(total, "io_handled"));
  char per_dev[512] = "";
  size_t used = 0;
  size_t i;
  json_t *range;
  json_array_foreach(json_object_get(json_object_get(stats, "io"), "port"), i,
                     range) {
    json_int_t n = json_integer_value(json_object_get(range, "accesses"));
    const char *dev = json_string_value(json_object_get(range, "device"));
    if (n == 0 || dev == NULL || used >= sizeof(per_dev))
      continue;
    int w = snprintf(per_dev + used, sizeof(per_dev) - used, "%s%s %lld",
                     used ? ", " : "", dev, (long long)n);
    if (w > 0)
      used += (size_t)w;
  }
  double secs = (double)(r->t_end - r->t_start) / 1e9;
  double guest_ms = (double)json_integer_value(json_object_get(
                        json_object_get(total, "time_ns"), "guest")) /
                    1e6;
  vmmrun_log(1,
             "demo: %s after %.2f s on the %s engine (%s)\n"
             "vmmrun: demo: %lld port accesses served by the handlers of "
             "the devices (%s); %.1f ms inside the engine\n"
             "vmmrun: demo: boot your own kernel with \"vmmrun KERNEL\"; "
             "--stats FILE writes these statistics (docs/vmmrun.md)",
             r->reason, secs, engine, why, (long long)served, per_dev,
             guest_ms);
}

/* ------------------------------------------------------------------------ */

static void list_engines(void) {
  static const enum vmm_engine_kind kinds[] = {VMM_ENGINE_KVM, VMM_ENGINE_BT};
  for (size_t i = 0; i < 2; i++) {
    enum vmm_engine_kind k = kinds[i];
    if (!vmm_engine_available(k)) {
      printf("%s unavailable\n", vmm_engine_name(k));
      continue;
    }
    struct vmm_vm_config cfg;
    vmm_vm_config_init(&cfg);
    cfg.engine = k;
    cfg.flags = VMM_VM_IRQCHIP | VMM_VM_PIT;
    vmm_vm *vm = NULL;
    bool irqchip = vmm_vm_create(&cfg, &vm) == 0;
    vmm_vm_destroy(vm);
    printf("%s available irqchip=%s\n", vmm_engine_name(k),
           irqchip ? "yes" : "no");
  }
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  vmm_vm *vm = NULL;
  if (vmm_vm_create(&cfg, &vm) == 0)
    printf("auto %s (%s)\n", vmm_engine_name(vmm_vm_engine(vm)),
           vmm_vm_engine_reason(vm));
  else
    printf("auto none\n");
  vmm_vm_destroy(vm);
}

/* Check now that the stats file can be written, so a bad path fails before
   the guest runs rather than after (without touching an existing file). */
static int check_stats_path(const char *path) {
  char *dir = strdup(path);
  char *slash = dir ? strrchr(dir, '/') : NULL;
  if (slash != NULL)
    slash[slash == dir ? 1 : 0] = 0;
  int rc = access(path, F_OK) == 0
               ? access(path, W_OK)
               : access(slash != NULL ? dir : ".", W_OK | X_OK);
  int err = errno;
  free(dir);
  if (rc < 0) {
    vmmrun_log(0, "--stats: %s: %s", path, strerror(err));
    return -1;
  }
  return 0;
}

static int run(struct vmmrun_opts *o) {
  struct vmmrun r;
  memset(&r, 0, sizeof(r));
  r.o = o;
  r.t_start = now_ns();
  const void *demo = NULL;
  size_t demo_size = 0;
#ifdef VMMRUN_HAVE_DEMO
  demo = vmmrun_demo_image;
  demo_size = (size_t)(vmmrun_demo_image_end - vmmrun_demo_image);
#else
  if (o->demo) {
    vmmrun_log(0, "this vmmrun was built without the demo guest (nasm was "
                  "missing); give a kernel");
    return VMMRUN_EXIT_USAGE;
  }
#endif
  if (o->stats != NULL && check_stats_path(o->stats) < 0)
    return VMMRUN_EXIT_USAGE;

  int status = vmmrun_machine_create(&r.m, o, demo, demo_size);
  if (status != 0) {
    vmmrun_machine_destroy(&r.m);
    return status;
  }
  r.uv = vmm_loop_uv(r.m.loop);
  r.vs = calloc(r.m.nvcpus, sizeof(*r.vs));
  if (r.vs == NULL) {
    vmmrun_machine_destroy(&r.m);
    return VMMRUN_EXIT_ERROR;
  }

  uv_timer_init(r.uv, &r.timer);
  r.timer.data = &r;
  static const int signums[] = {SIGINT, SIGTERM, SIGHUP};
  for (size_t i = 0; i < 3; i++) {
    uv_signal_init(r.uv, &r.signals[i]);
    r.signals[i].data = &r;
    uv_signal_start(&r.signals[i], on_signal, signums[i]);
  }
  r.handles_open = true;
  /* Handlers in place: a signal that came while the machine was being
     built is delivered now (to the loop, which then ends the run). */
  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < 3; i++)
    sigaddset(&set, signums[i]);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);

  char err[512];
  if (o->control != NULL &&
      vmmrun_control_start(&r, o->control, &r.control, err, sizeof(err)) < 0) {
    vmmrun_log(0, "%s", err);
    status = VMMRUN_EXIT_USAGE;
    goto out;
  }
  if (o->timeout > 0)
    uv_timer_start(&r.timer, on_timeout, (uint64_t)(o->timeout * 1000 + 0.5),
                   0);

  r.t_start = now_ns();
  for (unsigned i = 0; i < r.m.nvcpus; i++)
    if (start_vcpu(&r, i) < 0) {
      vmmrun_finish(&r, VMMRUN_EXIT_ERROR, "vCPU %u: cannot start", i);
      break;
    }
  vmm_loop_run(r.m.loop, VMM_LOOP_RUN_DEFAULT);
  status = r.status;

  json_t *stats = NULL;
  if (o->stats != NULL || o->demo)
    stats = vmmrun_stats_json(&r);
  if (o->stats != NULL &&
      json_dump_file(stats, o->stats, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
    vmmrun_log(0, "--stats: cannot write %s", o->stats);
    status = VMMRUN_EXIT_ERROR;
  }
  /* The terminal is restored when the UART goes: report after that. */
  char engine[16], why[256];
  snprintf(engine, sizeof(engine), "%s",
           vmm_engine_name(vmm_vm_engine(r.m.vm)));
  snprintf(why, sizeof(why), "%s", vmm_vm_engine_reason(r.m.vm));
  close_handles(&r);
  vmmrun_machine_destroy(&r.m);
  int level = r.status == VMMRUN_EXIT_ERROR     ? 0
              : (r.status & 1) || r.status == 0 ? 2
                                                : 1;
  if (o->demo && stats != NULL && r.status == VMMRUN_EXIT_POWEROFF)
    demo_summary(&r, stats, engine, why);
  else
    vmmrun_log(level, "%s (exit status %d)", r.reason, r.status);
  json_decref(stats);
  free(r.vs);
  return status;
out:
  close_handles(&r);
  vmmrun_machine_destroy(&r.m);
  free(r.vs);
  return status;
}

int main(int argc, char **argv) {
  struct vmmrun_opts o;
  vmmrun_opts_init(&o);
  char err[1024];
  int status;

  /* Writes to a control client that went away must not kill us. */
  signal(SIGPIPE, SIG_IGN);
  /* The signals that stop a run are held until their handlers are in place
     (run()): before that their default action would kill vmmrun with the
     socket files and the terminal left as they were. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  if (argc <= 1) {
    o.demo = true;
  } else if (vmmrun_parse_args(&o, argc, argv, err, sizeof(err)) < 0) {
    vmmrun_log(0, "%s", err);
    vmmrun_opts_free(&o);
    return VMMRUN_EXIT_USAGE;
  }
  vmmrun_verbosity = o.verbose + 1;
  if (o.help) {
    vmmrun_usage(stdout);
    status = 0;
  } else if (o.version) {
    printf("vmmrun (libvmm) %s\n", vmm_version_string());
    status = 0;
  } else if (o.list_engines) {
    list_engines();
    status = 0;
  } else if (vmmrun_opts_check(&o, err, sizeof(err)) < 0) {
    vmmrun_log(0, "%s", err);
    status = VMMRUN_EXIT_USAGE;
  } else {
    if (o.demo && !o.timeout_set)
      o.timeout = VMMRUN_DEMO_TIMEOUT;
    status = run(&o);
  }
  vmmrun_opts_free(&o);
  return status;
}
