/*
 * End-to-end tests of vmmrun (tools/vmmrun, docs/vmmrun.md), run as a
 * separate process the way users run it, on one engine per invocation:
 *
 *   test_vmmrun <kvm|bt> <vmmrun> <test-kernel.elf> <guest-dir>
 *
 * guest-dir holds the assembled guests of tests/vmmrun/ (vmmrun-*.bin).
 * The multiboot test kernel (tests/kernel) prints on COM1, checks its IDT
 * and fw_cfg and ends through the exit port; small flat guests written
 * below cover triple faults, halts, resets, power-off and accesses nobody
 * claimed. Checked: the guest's output, every exit status vmmrun documents,
 * timeouts, the --stats file against what the guest did, flags and config
 * files (good and bad, with messages naming the field), the control
 * socket, signals, serial backends and the demo.
 */
#include <fcntl.h>
#include <limits.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "testutil.h"

static const char *vmmrun_path, *kernel_path;
static char mptable_path[PATH_MAX + 32], balloon_poll_path[PATH_MAX + 32];
static char tmpdir[256];

/* ------------------------------------------------------------------------ */
/* Running vmmrun                                                           */

struct proc {
  pid_t pid;
  int out_fd, err_fd;
  char *out, *err;
  size_t out_len, err_len;
  int status; /* exit status, or 128 + signal */
  double secs;
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Start vmmrun with the engine under test (unless the caller gives one
   or none: engine NULL) and the given arguments (NULL-terminated). */
static void spawn(struct proc *p, const char *engine, const char *const *args) {
  const char *argv[64];
  size_t n = 0;
  argv[n++] = vmmrun_path;
  if (engine != NULL) {
    argv[n++] = "--engine";
    argv[n++] = engine;
  }
  for (size_t i = 0; args[i] != NULL && n < 63; i++)
    argv[n++] = args[i];
  argv[n] = NULL;

  int out[2], err[2];
  assert_int_equal(pipe2(out, O_CLOEXEC), 0);
  assert_int_equal(pipe2(err, O_CLOEXEC), 0);
  memset(p, 0, sizeof(*p));
  p->secs = now_s();
  p->pid = fork();
  assert_true(p->pid >= 0);
  if (p->pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execv(vmmrun_path, (char *const *)argv);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  p->out_fd = out[0];
  p->err_fd = err[0];
}

static void append(char **buf, size_t *len, const char *data, size_t n) {
  *buf = realloc(*buf, *len + n + 1);
  assert_non_null(*buf);
  memcpy(*buf + *len, data, n);
  *len += n;
  (*buf)[*len] = 0;
}

/* Read whatever is available for up to ms milliseconds. Returns false once
   both pipes are at end of file. */
static bool pump(struct proc *p, int ms) {
  struct pollfd fds[2] = {{p->out_fd, POLLIN, 0}, {p->err_fd, POLLIN, 0}};
  int nfds = 0;
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0)
      nfds++;
  if (nfds == 0)
    return false;
  if (poll(fds, 2, ms) <= 0)
    return true;
  char buf[4096];
  for (int i = 0; i < 2; i++) {
    if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    ssize_t r = read(fds[i].fd, buf, sizeof(buf));
    if (r <= 0) {
      close(fds[i].fd);
      if (i == 0)
        p->out_fd = -1;
      else
        p->err_fd = -1;
    } else if (i == 0) {
      append(&p->out, &p->out_len, buf, (size_t)r);
    } else {
      append(&p->err, &p->err_len, buf, (size_t)r);
    }
  }
  return true;
}

/* Read until `what` shows up on stdout (false if vmmrun ends first). */
static bool wait_output(struct proc *p, const char *what, double timeout) {
  double end = now_s() + timeout;
  while (now_s() < end) {
    if (p->out != NULL && strstr(p->out, what) != NULL)
      return true;
    if (!pump(p, 50))
      return p->out != NULL && strstr(p->out, what) != NULL;
  }
  return false;
}

/* Collect everything and the exit status; kill it after timeout. */
static void finish(struct proc *p, double timeout) {
  double end = now_s() + timeout;
  while (pump(p, 50)) {
    if (now_s() > end) {
      kill(p->pid, SIGKILL);
      fail_msg("vmmrun did not exit within %.0f s; stdout: %s; stderr: %s",
               timeout, p->out ? p->out : "", p->err ? p->err : "");
    }
  }
  int ws;
  assert_int_equal(waitpid(p->pid, &ws, 0), p->pid);
  p->secs = now_s() - p->secs;
  p->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
  if (p->out == NULL)
    append(&p->out, &p->out_len, "", 0);
  if (p->err == NULL)
    append(&p->err, &p->err_len, "", 0);
}

static void proc_free(struct proc *p) {
  free(p->out);
  free(p->err);
  p->out = p->err = NULL;
}

/* Run to completion, with a generous limit. */
static void run(struct proc *p, const char *engine, const char *const *args) {
  spawn(p, engine, args);
  finish(p, 120);
}

#define ENG (vmm_engine_name(vmmt_engine))
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_status(const struct proc *p, int want) {
  if (p->status != want)
    fail_msg("vmmrun exited with %d, expected %d\nstdout:\n%s\nstderr:\n%s",
             p->status, want, p->out, p->err);
}

static void expect_out(const struct proc *p, const char *what) {
  if (strstr(p->out, what) == NULL)
    fail_msg("stdout lacks \"%s\":\n%s\nstderr:\n%s", what, p->out, p->err);
}

static void expect_err(const struct proc *p, const char *what) {
  if (strstr(p->err, what) == NULL)
    fail_msg("stderr lacks \"%s\":\n%s", what, p->err);
}

/* A file in the test's directory, with given bytes. */
static const char *write_file(const char *name, const void *data, size_t len) {
  static char paths[16][512];
  static unsigned next;
  char *path = paths[next++ % 16];
  snprintf(path, 512, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
  return path;
}

static const char *write_text(const char *name, const char *text) {
  return write_file(name, text, strlen(text));
}

static const char *tmp_path(const char *name) {
  static char paths[8][512];
  static unsigned next;
  char *path = paths[next++ % 8];
  snprintf(path, 512, "%s/%s", tmpdir, name);
  return path;
}

static json_t *load_json(const char *path) {
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (j == NULL)
    fail_msg("%s: not JSON: %s (line %d)", path, je.text, je.line);
  return j;
}

static json_int_t jint(const json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v))
    fail_msg("\"%s\" is missing or not an integer", key);
  return json_integer_value(v);
}

static const char *jstr(const json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  if (!json_is_string(v))
    fail_msg("\"%s\" is missing or not a string", key);
  return json_string_value(v);
}

/* ------------------------------------------------------------------------ */
/* Flat guests                                                              */

/* prot32 at 0x10000: ud2 with no IDT, a triple fault. */
static const uint8_t triple_fault[] = {0x0f, 0x0b};
/* real mode: cli; hlt */
static const uint8_t halt[] = {0xfa, 0xf4};
/* real mode: mov al, 0xfe; out 0x64, al (i8042 reset pulse); hlt */
static const uint8_t reset[] = {0xb0, 0xfe, 0xe6, 0x64, 0xf4};
/* real mode: mov dx, 0x604; mov ax, 0x2000 (SLP_EN); out dx, ax; hlt */
static const uint8_t poweroff[] = {0xba, 0x04, 0x06, 0xb8,
                                   0x00, 0x20, 0xef, 0xf4};
/*
 * prot32 at 0x10000, nobody's port 0x99 and MMIO page 0xd0000000:
 *   in al, 0x99; out 0x99, al; mov bl, al
 *   mov eax, [0xd0000000]; mov [0xd0000004], eax
 *   and al, bl; sub al, 0xf0      ; 0x0f if both reads gave all ones
 *   out 0xf4, al; hlt              ; status (0x0f << 1) | 1 = 31
 */
static const uint8_t unclaimed[] = {
    0xe4, 0x99, 0xe6, 0x99, 0x88, 0xc3, 0xa1, 0x00, 0x00, 0x00, 0xd0, 0x89,
    0x05, 0x04, 0x00, 0x00, 0xd0, 0x20, 0xd8, 0x2c, 0xf0, 0xe6, 0xf4, 0xf4};

/* ------------------------------------------------------------------------ */
/* The test kernel                                                          */

static void test_kernel_passes(void **state) {
  (void)state;
  struct proc p;
  run(&p, ENG, ARGS(kernel_path));
  /* The kernel wrote 0 to the exit port: (0 << 1) | 1. */
  expect_status(&p, 1);
  expect_out(&p, "libvmm test kernel");
  expect_out(&p, "multiboot: ok");
  expect_out(&p, "memory: lower 640 KiB, upper 261120 KiB"); /* 256 MiB */
  expect_out(&p, "idt: #DE ok");
  expect_out(&p, "idt: #UD ok");
  expect_out(&p, "idt: #PF ok");
  expect_out(&p, "fw_cfg: QEMU");
  expect_out(&p, "result: pass");
  assert_null(strstr(p.out, "FAIL"));
  /* Success is quiet on stderr. */
  assert_int_equal(p.err_len, 0);
  proc_free(&p);
}

static void test_exit_statuses(void **state) {
  (void)state;
  static const struct {
    const char *append;
    int status;
  } cases[] = {
      {"exit=5", 11},  {"exit=21", 43}, {"exit=127", 255}, /* (127 << 1) | 1 */
      {"exit=128", 1}, /* low 8 bits, as QEMU's isa-debug-exit */
      {"exit=1", 3},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct proc p;
    run(&p, ENG, ARGS(kernel_path, "--append", cases[i].append));
    expect_status(&p, cases[i].status);
    char want[64];
    snprintf(want, sizeof(want), "cmdline: %s", cases[i].append);
    expect_out(&p, want);
    proc_free(&p);
  }
  /* -v says why it ended. */
  struct proc p;
  run(&p, ENG, ARGS(kernel_path, "-a", "exit=3", "-v"));
  expect_status(&p, 7);
  expect_err(&p, "the guest wrote 3 to the exit port");
  expect_err(&p, "engine ");
  proc_free(&p);
}

static void test_timeout(void **state) {
  (void)state;
  struct proc p;
  run(&p, ENG, ARGS(kernel_path, "-a", "loop=1000000000000", "-t", "1"));
  expect_status(&p, 124);
  expect_err(&p, "timeout");
  expect_out(&p, "fw_cfg: QEMU"); /* it ran up to the loop */
  assert_null(strstr(p.out, "result:"));
  assert_true(p.secs >= 1.0 && p.secs < 30.0);
  proc_free(&p);
  /* Units. */
  run(&p, ENG, ARGS(kernel_path, "-a", "loop=1000000000000", "-t", "300ms"));
  expect_status(&p, 124);
  assert_true(p.secs >= 0.3);
  proc_free(&p);
}

static void test_memory_sizes(void **state) {
  (void)state;
  static const struct {
    const char *size, *line;
  } cases[] = {
      {"64", "upper 64512 KiB"}, /* a bare number is MiB */
      {"32M", "upper 31744 KiB"},
      {"1G", "upper 1047552 KiB"},
      {"4096K", "upper 3072 KiB"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct proc p;
    run(&p, ENG, ARGS("-m", cases[i].size, kernel_path));
    expect_status(&p, 1);
    expect_out(&p, cases[i].line);
    proc_free(&p);
  }
}

/* ------------------------------------------------------------------------ */
/* Endings other than the exit port                                         */

static void test_triple_fault(void **state) {
  (void)state;
  const char *img =
      write_file("triple.bin", triple_fault, sizeof(triple_fault));
  struct proc p;
  run(&p, ENG, ARGS("--raw-mode", "prot32", "--load-addr", "0x10000", img));
  expect_status(&p, 6);
  expect_err(&p, "triple fault");
  proc_free(&p);
}

static void test_halt(void **state) {
  (void)state;
  const char *img = write_file("halt.bin", halt, sizeof(halt));
  struct proc p;
  /* Without an interrupt controller nothing can wake a halted vCPU. (With
     KVM's in-kernel one, HLT waits in the kernel: only a timeout ends it.) */
  run(&p, ENG, ARGS("--irqchip", "off", "-v", img));
  expect_status(&p, 0);
  expect_err(&p, "halted");
  proc_free(&p);
}

static void test_reset_and_poweroff(void **state) {
  (void)state;
  struct proc p;
  run(&p, ENG, ARGS(write_file("reset.bin", reset, sizeof(reset))));
  expect_status(&p, 8);
  expect_err(&p, "reset");
  proc_free(&p);
  run(&p, ENG, ARGS("-v", write_file("off.bin", poweroff, sizeof(poweroff))));
  expect_status(&p, 0);
  expect_err(&p, "powered off");
  proc_free(&p);
}

static json_t *find_port(json_t *arr, const char *key, json_int_t value) {
  size_t i;
  json_t *o;
  json_array_foreach(arr, i, o) {
    if (json_integer_value(json_object_get(o, key)) == value)
      return o;
  }
  fail_msg("no entry with %s %lld", key, (long long)value);
  return NULL;
}

static void test_unclaimed(void **state) {
  (void)state;
  const char *img = write_file("unclaimed.bin", unclaimed, sizeof(unclaimed));
  const char *stats = tmp_path("unclaimed.json");
  struct proc p;
  run(&p, ENG,
      ARGS("--raw-mode", "prot32", "--load-addr", "0x10000", "--stats", stats,
           img));
  /* Both reads returned all ones: (0x0f << 1) | 1. */
  expect_status(&p, 31);
  json_t *s = load_json(stats);
  json_t *u = json_object_get(s, "unclaimed");
  json_t *port = find_port(json_object_get(u, "port"), "port", 0x99);
  assert_int_equal(jint(port, "reads"), 1);
  assert_int_equal(jint(port, "writes"), 1);
  json_t *page =
      find_port(json_object_get(u, "mmio"), "page", (json_int_t)0xd0000000);
  assert_int_equal(jint(page, "reads"), 1);
  assert_int_equal(jint(page, "writes"), 1);
  assert_int_equal(jint(u, "reads"), 2);
  assert_int_equal(jint(u, "writes"), 2);
  /* Those exits went to vmmrun's exit handler, timed there. */
  json_t *total = json_object_get(s, "total");
  assert_int_equal(jint(json_object_get(total, "exits"), "mmio"), 2);
  assert_true(jint(json_object_get(total, "time_ns"), "exit_handler") > 0);
  json_decref(s);
  proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */

static void test_stats_file(void **state) {
  (void)state;
  const char *stats = tmp_path("stats.json");
  struct proc p;
  run(&p, ENG, ARGS(kernel_path, "--stats", stats, "-a", "exit=2"));
  expect_status(&p, 5);
  json_t *s = load_json(stats);

  json_t *me = json_object_get(s, "vmmrun");
  assert_int_equal(jint(me, "status"), 5);
  assert_non_null(strstr(jstr(me, "reason"), "exit port"));
  assert_string_equal(jstr(me, "format"), "multiboot");
  assert_string_equal(jstr(me, "kernel"), kernel_path);
  assert_string_equal(jstr(me, "state"), "ended");
  assert_int_equal(jint(me, "memory"), 256 << 20);
  assert_int_equal(jint(me, "cpus"), 1);
  assert_true(jint(me, "wall_ns") > 0);

  assert_string_equal(jstr(s, "engine"), ENG);
  assert_string_equal(jstr(s, "engine_reason"), "requested");
  assert_true(jint(s, "tsc_hz") > 100000000);
  assert_int_equal(json_array_size(json_object_get(s, "vcpus")), 1);

  /* Exits: every port access of the kernel was served by a device. */
  json_t *total = json_object_get(s, "total");
  json_t *exits = json_object_get(total, "exits");
  assert_int_equal(jint(total, "runs"), 1);
  assert_true(jint(exits, "io") > 100);
  assert_int_equal(jint(total, "io_handled"), jint(exits, "io"));
  assert_int_equal(jint(exits, "system"), 1);
  assert_int_equal(jint(exits, "shutdown"), 0);
  json_t *t = json_object_get(total, "time_ns");
  assert_true(jint(t, "guest") > 0);
  assert_true(jint(t, "io_handlers") > 0);
  assert_true(jint(t, "run") >= jint(t, "guest"));
  /* Per range, with the device that owns it; they add up to the exits. */
  json_t *ranges = json_object_get(json_object_get(s, "io"), "port");
  json_t *com1 = find_port(ranges, "base", 0x3f8);
  assert_string_equal(jstr(com1, "device"), "com1");
  json_t *xp = find_port(ranges, "base", 0xf4);
  assert_string_equal(jstr(xp, "device"), "exit-port");
  assert_int_equal(jint(xp, "accesses"), 1);
  json_int_t sum = 0;
  size_t i;
  json_t *r;
  json_array_foreach(ranges, i, r) sum += jint(r, "accesses");
  assert_int_equal(sum, jint(exits, "io"));
  /* The UART sent exactly what we read on stdout. */
  json_t *dev = json_object_get(json_object_get(s, "devices"), "com1");
  assert_string_equal(jstr(dev, "type"), "uart16550");
  assert_int_equal(jint(dev, "tx_bytes"), (json_int_t)p.out_len);
  assert_int_equal(
      jint(json_object_get(json_object_get(s, "devices"), "fw-cfg"), "selects"),
      1);
  assert_int_equal(jint(json_object_get(s, "unclaimed"), "reads"), 0);
  json_decref(s);
  proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* vCPUs                                                                    */

static void test_cpus(void **state) {
  (void)state;
  const char *stats = tmp_path("cpus.json");
  struct proc p;
  run(&p, ENG, ARGS("-c", "2", "--stats", stats, kernel_path));
  /* Secondary vCPUs wait for INIT/SIPI from the boot vCPU's local APIC:
     with an engine interrupt controller they wait (the test kernel never
     sends one) and the run ends normally; without one vmmrun refuses. */
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = vmmt_engine;
  cfg.flags = VMM_VM_IRQCHIP | VMM_VM_PIT;
  vmm_vm *vm = NULL;
  bool irqchip = vmm_vm_create(&cfg, &vm) == 0;
  vmm_vm_destroy(vm);
  if (irqchip) {
    expect_status(&p, 1);
    json_t *s = load_json(stats);
    json_t *vcpus = json_object_get(s, "vcpus");
    assert_int_equal(json_array_size(vcpus), 2);
    /* vCPU 1 ran (waiting) and was stopped by the exit port's event. */
    json_t *ap = json_array_get(vcpus, 1);
    assert_int_equal(jint(ap, "runs"), 1);
    assert_int_equal(jint(json_object_get(ap, "exits"), "io"), 0);
    assert_int_equal(jint(json_object_get(s, "vmmrun"), "cpus"), 2);
    json_decref(s);
  } else {
    expect_status(&p, 2);
    expect_err(&p, "--cpus 2");
    expect_err(&p, "INIT and SIPI");
  }
  proc_free(&p);
  /* --irqchip off never has them. */
  run(&p, ENG, ARGS("-c", "2", "--irqchip", "off", kernel_path));
  expect_status(&p, 2);
  expect_err(&p, "--cpus 2");
  proc_free(&p);
}

/* The MP table (KVM's in-kernel APICs): tests/vmmrun/mptable.asm checks it
   and reports the enabled processors, 0x40 when there is none. */
static void test_mptable(void **state) {
  (void)state;
  struct proc p;
  /* Every engine has interrupt controllers (KVM's in-kernel ones, BT the
     library's platform), so every engine gets a table: (n << 1) | 1 with
     n processor entries; without controllers there is none, 0x40. */
  run(&p, ENG, ARGS(mptable_path));
  expect_status(&p, (1 << 1) | 1);
  proc_free(&p);
  run(&p, ENG, ARGS("-c", "3", mptable_path));
  expect_status(&p, (3 << 1) | 1);
  proc_free(&p);
  run(&p, ENG, ARGS("--irqchip", "off", mptable_path));
  expect_status(&p, (0x40 << 1) | 1);
  proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* Flags and config files                                                   */

static void test_bad_flags(void **state) {
  (void)state;
  const char *raw = write_file("flat.bin", halt, sizeof(halt));
  const char *notsock = write_text("not-a-socket", "x");
  static const char *const none[] = {NULL};
  struct {
    const char *const *args;
    const char *message;
  } cases[] = {
      {ARGS("-m", "12x", kernel_path), "--memory: expected a size"},
      {ARGS("--memory=1", kernel_path), "--memory: expected a size"},
      {ARGS("-m", "4097K", kernel_path), "--memory"},
      {ARGS("--engine", "vmware", kernel_path), "--engine: expected"},
      {ARGS("--cpus", "0", kernel_path), "--cpus: expected an integer 1..256"},
      {ARGS("-c", "257", kernel_path), "--cpus: expected an integer"},
      {ARGS("--timeout", "-1", kernel_path), "--timeout: expected seconds"},
      {ARGS("-t", "5 parsecs", kernel_path), "--timeout"},
      {ARGS("--serial", "tcp:80", kernel_path), "--serial: expected"},
      {ARGS("--serial", "file:", kernel_path), "--serial: expected"},
      {ARGS("--format", "pe", kernel_path), "--format: expected one of"},
      {ARGS("--raw-mode", "v86", kernel_path), "--raw-mode: expected"},
      {ARGS("--load-addr", "banana", raw), "--load-addr: expected an address"},
      {ARGS("--irqchip", "maybe", kernel_path), "--irqchip: expected"},
      {ARGS("--balloon", "12x", kernel_path), "--balloon: expected a target"},
      {ARGS("--balloon", "5K", kernel_path), "--balloon: expected a target"},
      {ARGS("--balloon", "1G", kernel_path), "more than the guest's 256 MiB"},
      {ARGS("--bogus", kernel_path), "unknown option --bogus"},
      {ARGS("-Z", kernel_path), "unknown option -Z"},
      {ARGS(kernel_path, "extra"), "unexpected argument \"extra\""},
      {ARGS(kernel_path, "-m"), "-m: missing value"},
      {ARGS("--demo=yes"), "--demo takes no value"},
      {ARGS("--hugepages=1"), "--hugepages takes no value"},
      {ARGS("-v"), "no kernel given"},
      {ARGS("--demo", kernel_path), "--demo boots the built-in demo"},
      {ARGS(tmp_path("no-such-kernel")), "cannot read"},
      {ARGS("--load-addr", "0x1000", kernel_path), "for flat images"},
      {ARGS("--format", "elf", raw), "--format elf"},
      {ARGS("--initrd", raw, raw), "--initrd"},
      {ARGS("--control", notsock, kernel_path), "not a socket"},
      {ARGS("--stats", "/nonexistent-dir/s.json", kernel_path), "--stats"},
      {ARGS("--config", tmp_path("no-such-config")), "--config"},
      {ARGS("--format", "bzimage", kernel_path), "cannot load as bzimage"},
  };
  (void)none;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct proc p;
    run(&p, ENG, cases[i].args);
    if (p.status != 2 || strstr(p.err, cases[i].message) == NULL)
      fail_msg("case %zu: status %d (want 2), stderr \"%s\" (want \"%s\")", i,
               p.status, p.err, cases[i].message);
    assert_int_equal(p.out_len, 0); /* no guest ran */
    proc_free(&p);
  }
}

static void test_bad_configs(void **state) {
  (void)state;
  static const struct {
    const char *json, *message;
  } cases[] = {
      {"{\"memory\": \"12x\"}",
       "config: memory: expected a size like \"256M\" or an integer"},
      {"{\"memory\": true}", "config: memory: expected a size"},
      {"{\"memory\": -5}", "config: memory: expected a size"},
      {"{\"memroy\": 64}", "config: memroy: unknown key"},
      {"{\"cpus\": \"2\"}", "config: cpus: expected an integer 1..256"},
      {"{\"cpus\": 2.5}", "config: cpus: expected an integer"},
      {"{\"engine\": 1}", "config: engine: expected \"auto\", \"kvm\""},
      {"{\"kernel\": 7}", "config: kernel: expected a file path"},
      {"{\"kernel\": \"\"}", "config: kernel: expected a file path"},
      {"{\"append\": [\"a\"]}", "config: append: expected a string"},
      {"{\"timeout\": \"soon\"}", "config: timeout: expected seconds"},
      {"{\"timeout\": -1}", "config: timeout: expected seconds"},
      {"{\"serial\": 5}", "config: serial: expected \"stdio\""},
      {"{\"irqchip\": \"maybe\"}", "config: irqchip: expected"},
      {"{\"demo\": \"yes\"}", "config: demo: expected true or false"},
      {"{\"hugepages\": 1}", "config: hugepages: expected true or false"},
      {"{\"balloon\": \"lots\"}", "config: balloon: expected a target"},
      {"{\"balloon\": -1}", "config: balloon: expected a target"},
      {"{\"verbose\": 7}", "config: verbose: expected an integer -1..2"},
      {"{\"load_addr\": \"0x1g\"}", "config: load_addr: expected an address"},
      {"{\"load-addr\": 4096}", "config: load-addr: unknown key"},
      {"{\"config\": \"x.json\"}", "config: config: unknown key"},
      {"{\"help\": true}", "config: help: unknown key"},
      {"[1, 2]", "config: expected a JSON object"},
      {"{\"cpus\": 1, \"cpus\": 2}", "config: line 1"},
      {"{\"memory\": \"64M\",", "config: line"},
      {"", "config: line"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *cfg = write_text("bad.json", cases[i].json);
    struct proc p;
    run(&p, ENG, ARGS("--config", cfg, kernel_path));
    if (p.status != 2 || strstr(p.err, cases[i].message) == NULL)
      fail_msg("config %s: status %d (want 2), stderr \"%s\" (want \"%s\")",
               cases[i].json, p.status, p.err, cases[i].message);
    expect_err(&p, cfg); /* names the file too */
    proc_free(&p);
  }
}

static void test_config(void **state) {
  (void)state;
  /* The kernel path is relative to the config file's directory. */
  char link[600];
  snprintf(link, sizeof(link), "%s/kernel.elf", tmpdir);
  unlink(link);
  assert_int_equal(symlink(kernel_path, link), 0);
  char json[1024];
  snprintf(json, sizeof(json),
           "{\n"
           "  \"engine\": \"%s\",\n"
           "  \"memory\": \"64M\",\n"
           "  \"cpus\": 1,\n"
           "  \"kernel\": \"kernel.elf\",\n"
           "  \"append\": \"exit=7 from-config\",\n"
           "  \"serial\": \"stdio\",\n"
           "  \"timeout\": 60,\n"
           "  \"irqchip\": \"auto\",\n"
           "  \"verbose\": 0\n"
           "}\n",
           ENG);
  const char *cfg = write_text("good.json", json);
  struct proc p;
  run(&p, NULL, ARGS("--config", cfg));
  expect_status(&p, 15);
  expect_out(&p, "cmdline: exit=7 from-config");
  expect_out(&p, "upper 64512 KiB");
  proc_free(&p);

  /* Flags override the file, wherever they stand. */
  run(&p, NULL, ARGS("-a", "exit=9", "--config", cfg, "-m", "32M"));
  expect_status(&p, 19);
  expect_out(&p, "cmdline: exit=9");
  expect_out(&p, "upper 31744 KiB");
  proc_free(&p);

  /* Every option's key, with JSON types where they fit. */
  const char *stats = tmp_path("cfg-stats.json");
  snprintf(json, sizeof(json),
           "{\"engine\": \"%s\", \"memory\": 48, \"kernel\": \"%s\", "
           "\"format\": \"multiboot\", \"append\": \"loop=1000000000000\", "
           "\"serial\": \"none\", \"timeout\": 0.5, \"stats\": \"%s\", "
           "\"irqchip\": false, \"demo\": false, \"verbose\": -1}",
           ENG, kernel_path, stats);
  run(&p, NULL, ARGS("--config", write_text("all.json", json)));
  expect_status(&p, 124);
  assert_int_equal(p.out_len, 0); /* serial none */
  assert_int_equal(p.err_len, 0); /* verbose -1: quiet */
  json_t *s = load_json(stats);
  assert_int_equal(jint(json_object_get(s, "vmmrun"), "memory"), 48 << 20);
  assert_int_equal(jint(json_object_get(s, "vmmrun"), "status"), 124);
  json_decref(s);
  proc_free(&p);

  /* A flat image from a config, addresses as strings and integers. */
  snprintf(json, sizeof(json),
           "{\"engine\": \"%s\", \"kernel\": \"unclaimed.bin\", "
           "\"raw_mode\": \"prot32\", \"load_addr\": 65536, "
           "\"entry\": \"0x10000\", \"format\": \"raw\"}",
           ENG);
  write_file("unclaimed.bin", unclaimed, sizeof(unclaimed));
  run(&p, NULL, ARGS("--config", write_text("flat.json", json)));
  expect_status(&p, 31);
  proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* Serial backends                                                          */

static void test_serial_backends(void **state) {
  (void)state;
  const char *file = tmp_path("serial.txt");
  char spec[600];
  snprintf(spec, sizeof(spec), "file:%s", file);
  struct proc p;
  run(&p, ENG, ARGS(kernel_path, "--serial", spec));
  expect_status(&p, 1);
  assert_int_equal(p.out_len, 0);
  FILE *f = fopen(file, "rb");
  assert_non_null(f);
  char buf[4096];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = 0;
  fclose(f);
  assert_non_null(strstr(buf, "result: pass"));
  proc_free(&p);

  run(&p, ENG, ARGS(kernel_path, "--serial", "none"));
  expect_status(&p, 1);
  assert_int_equal(p.out_len, 0);
  proc_free(&p);

  /* A Unix socket server: a client connects and reads what the guest
     writes from then on (nothing is queued while no one is connected). */
  const char *sock = tmp_path("serial.sock");
  snprintf(spec, sizeof(spec), "unix:%s", sock);
  unlink(sock);
  spawn(&p, ENG,
        ARGS(kernel_path, "--serial", spec, "-a", "loop=1000000000000", "-t",
             "30"));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
  double end = now_s() + 20;
  while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    if (now_s() > end)
      fail_msg("cannot connect to the serial socket %s", sock);
    usleep(20000);
  }
  close(fd);
  kill(p.pid, SIGTERM);
  finish(&p, 60);
  expect_status(&p, 130);
  assert_int_equal(p.out_len, 0);
  struct stat st;
  assert_int_equal(stat(sock, &st), -1); /* removed at the end */
  proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* Signals and the control socket                                           */

static void test_signal(void **state) {
  (void)state;
  struct proc p;
  spawn(&p, ENG, ARGS(kernel_path, "-a", "loop=1000000000000", "-t", "60"));
  assert_true(wait_output(&p, "fw_cfg: QEMU", 30));
  kill(p.pid, SIGINT);
  finish(&p, 30);
  expect_status(&p, 130);
  expect_err(&p, "interrupted by SIGINT");
  proc_free(&p);
}

struct client {
  int fd;
  char buf[1 << 17];
  size_t len;
};

static void client_connect(struct client *c, const char *path, double wait) {
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  c->len = 0;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  double end = now_s() + wait;
  while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    if (now_s() > end)
      fail_msg("cannot connect to the control socket %s", path);
    usleep(20000);
  }
}

/* One reply line, or NULL at end of file. */
static json_t *client_read(struct client *c) {
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl != NULL) {
      json_error_t je;
      json_t *j = json_loadb(c->buf, (size_t)(nl - c->buf), 0, &je);
      if (j == NULL)
        fail_msg("reply is not JSON: %.*s", (int)(nl - c->buf), c->buf);
      c->len -= (size_t)(nl + 1 - c->buf);
      memmove(c->buf, nl + 1, c->len);
      return j;
    }
    struct pollfd pfd = {c->fd, POLLIN, 0};
    if (poll(&pfd, 1, 30000) <= 0)
      fail_msg("no reply within 30 s");
    ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    if (r <= 0)
      return NULL;
    c->len += (size_t)r;
  }
}

static json_t *request(struct client *c, const char *line) {
  size_t n = strlen(line);
  assert_int_equal(write(c->fd, line, n), (ssize_t)n);
  json_t *j = client_read(c);
  if (j == NULL)
    fail_msg("the control socket closed after %s", line);
  return j;
}

static bool ok(const json_t *j) {
  return json_is_true(json_object_get(j, "ok"));
}

static json_int_t guest_ns(json_t *reply) {
  json_t *t = json_object_get(
      json_object_get(json_object_get(reply, "stats"), "total"), "time_ns");
  return jint(t, "guest");
}

static void test_control(void **state) {
  (void)state;
  const char *sock = tmp_path("control.sock");
  unlink(sock);
  struct proc p;
  spawn(&p, ENG,
        ARGS(kernel_path, "-a", "loop=1000000000000", "--control", sock, "-t",
             "120"));
  struct client c, c2;
  client_connect(&c, sock, 30);
  struct stat st;
  assert_int_equal(stat(sock, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_true(wait_output(&p, "fw_cfg: QEMU", 30));

  json_t *j = request(&c, "{\"cmd\": \"info\", \"id\": 42}\n");
  assert_true(ok(j));
  assert_int_equal(jint(j, "id"), 42);
  json_t *info = json_object_get(j, "info");
  assert_string_equal(jstr(info, "engine"), ENG);
  assert_string_equal(jstr(info, "state"), "running");
  assert_int_equal(jint(info, "cpus"), 1);
  json_decref(j);

  j = request(&c, "{\"cmd\": \"stats\"}\n");
  assert_true(ok(j));
  json_t *me = json_object_get(json_object_get(j, "stats"), "vmmrun");
  assert_string_equal(jstr(me, "state"), "running");
  assert_true(json_is_null(json_object_get(me, "status")));
  assert_true(jint(json_object_get(json_object_get(j, "stats"), "total"),
                   "io_handled") > 0);
  json_decref(j);

  /* Paused: the vCPU's run ends (STOPPED) and it stays parked: its time
     in the guest stands still (to the TSC rate re-estimated per read). */
  j = request(&c, "{\"cmd\": \"pause\"}\n");
  assert_true(ok(j));
  assert_string_equal(jstr(j, "state"), "paused");
  json_decref(j);
  j = request(&c, "{\"cmd\": \"pause\"}\n"); /* idempotent */
  assert_true(ok(j));
  json_decref(j);
  /* The reply comes once the vCPU was asked to stop; its run ends on its
     own thread and the completion parks it: wait for that. */
  for (double end = now_s() + 20;; usleep(20000)) {
    j = request(&c, "{\"cmd\": \"info\"}\n");
    char vs[16];
    snprintf(vs, sizeof(vs), "%s",
             jstr(json_array_get(
                      json_object_get(json_object_get(j, "info"), "vcpus"), 0),
                  "state"));
    json_decref(j);
    if (strcmp(vs, "paused") == 0)
      break;
    if (now_s() > end)
      fail_msg("the vCPU was not parked 20 s after pause (state %s)", vs);
  }
  json_t *a = request(&c, "{\"cmd\": \"stats\"}\n");
  usleep(300000);
  json_t *b = request(&c, "{\"cmd\": \"stats\"}\n");
  json_int_t ga = guest_ns(a), gb = guest_ns(b);
  assert_true(gb - ga <= ga / 1000 + 1000 && ga - gb <= ga / 1000 + 1000);
  json_t *total = json_object_get(json_object_get(b, "stats"), "total");
  assert_int_equal(jint(total, "runs"), 1);
  assert_int_equal(jint(json_object_get(total, "exits"), "stopped"), 1);
  json_decref(a);
  json_decref(b);
  j = request(&c, "{\"cmd\": \"info\"}\n");
  info = json_object_get(j, "info");
  assert_string_equal(jstr(info, "state"), "paused");
  assert_string_equal(
      jstr(json_array_get(json_object_get(info, "vcpus"), 0), "state"),
      "paused");
  json_decref(j);
  /* Resumed: a new run of the vCPU starts. */
  j = request(&c, "{\"cmd\": \"resume\"}\n");
  assert_true(ok(j));
  assert_string_equal(jstr(j, "state"), "running");
  json_decref(j);
  for (double end = now_s() + 20;; usleep(20000)) {
    j = request(&c, "{\"cmd\": \"stats\"}\n");
    json_int_t runs =
        jint(json_object_get(json_object_get(j, "stats"), "total"), "runs");
    json_decref(j);
    if (runs == 2)
      break;
    if (now_s() > end)
      fail_msg("no second run after resume (runs %lld)", (long long)runs);
  }

  /* A second client at the same time. */
  client_connect(&c2, sock, 5);
  j = request(&c2, "{\"cmd\": \"serial\", \"data\": \"hello\"}\n");
  assert_true(ok(j));
  assert_int_equal(jint(j, "queued"), 5);
  json_decref(j);

  /* Errors: each answered, the connection kept. */
  static const struct {
    const char *line, *error;
  } bad[] = {
      {"{\"cmd\": \"reboot\"}\n", "unknown command \"reboot\""},
      {"{\"id\": 1}\n", "cmd: expected a string"},
      {"{\"cmd\": 5}\n", "cmd: expected a string"},
      {"[\"stats\"]\n", "expected a JSON object"},
      {"stats please\n", "not JSON"},
      {"{\"cmd\": \"serial\"}\n", "serial: data: expected a string"},
      {"{\"cmd\": \"balloon\"}\n", "this guest has no balloon"},
      {"{\"cmd\": \"stats\"\r\n", "not JSON"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    j = request(&c, bad[i].line);
    assert_false(ok(j));
    if (strstr(jstr(j, "error"), bad[i].error) == NULL)
      fail_msg("%s: error \"%s\", want \"%s\"", bad[i].line, jstr(j, "error"),
               bad[i].error);
    json_decref(j);
  }
  j = request(&c, "{\"cmd\":\"info\"}\r\n"); /* CRLF is fine */
  assert_true(ok(j));
  json_decref(j);

  /* An over-long line: answered, then that client is disconnected. */
  size_t big = 70 * 1024;
  char *line = malloc(big);
  memset(line, 'x', big);
  ssize_t w = write(c2.fd, line, big);
  (void)w;
  free(line);
  j = client_read(&c2);
  assert_non_null(j);
  assert_false(ok(j));
  assert_non_null(strstr(jstr(j, "error"), "longer than"));
  json_decref(j);
  assert_null(client_read(&c2));
  close(c2.fd);

  /* Still running; stop: the reply arrives, then vmmrun exits with 10. */
  j = request(&c, "{\"cmd\": \"stop\", \"id\": \"last\"}\n");
  assert_true(ok(j));
  assert_string_equal(jstr(j, "id"), "last");
  json_decref(j);
  assert_null(client_read(&c));
  close(c.fd);
  finish(&p, 30);
  expect_status(&p, 10);
  expect_err(&p, "stopped through the control socket");
  assert_int_equal(stat(sock, &st), -1);
  proc_free(&p);
}

/* --balloon and the control socket's balloon command: a guest waits for the
   host to change the target (tests/vmmrun/balloon_poll.asm) and reports
   the new one in MiB through the exit port. */
static void test_balloon(void **state) {
  (void)state;
  const char *sock = tmp_path("balloon.sock");
  const char *stats = tmp_path("balloon.json");
  unlink(sock);
  struct proc p;
  spawn(&p, ENG,
        ARGS("--balloon", "4M", "--control", sock, "--stats", stats,
             "--raw-mode", "prot32", "--load-addr", "0x10000", "-t", "120",
             balloon_poll_path));
  struct client c;
  client_connect(&c, sock, 30);
  json_t *j = request(&c, "{\"cmd\": \"balloon\"}\n");
  assert_true(ok(j));
  json_t *b = json_object_get(j, "balloon");
  assert_int_equal(jint(b, "target_bytes"), 4 << 20);
  assert_int_equal(jint(b, "actual_bytes"), 0);
  assert_false(json_is_true(json_object_get(b, "driver_ok")));
  json_decref(j);
  static const char *const bad[] = {
      "{\"cmd\": \"balloon\", \"target\": \"3K\"}\n",
      "{\"cmd\": \"balloon\", \"target\": \"1G\"}\n",
      "{\"cmd\": \"balloon\", \"target\": -1}\n",
      "{\"cmd\": \"balloon\", \"target\": [1]}\n",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    j = request(&c, bad[i]);
    assert_false(ok(j));
    assert_non_null(strstr(jstr(j, "error"), "balloon: target: expected"));
    json_decref(j);
  }
  /* Once the guest polls the target (its third access of the device's
     registers, after magic and device ID), change it: the guest then reads
     4 MiB at least once before the new value, whenever its vCPU started. */
  for (double end = now_s() + 20;; usleep(20000)) {
    j = request(&c, "{\"cmd\": \"stats\"}\n");
    json_int_t n =
        jint(find_port(json_object_get(
                           json_object_get(json_object_get(j, "stats"), "io"),
                           "mmio"),
                       "base", (json_int_t)0xd0000000),
             "accesses");
    json_decref(j);
    if (n >= 3)
      break;
    if (now_s() > end)
      fail_msg("the guest did not poll the balloon within 20 s (%lld accesses)",
               (long long)n);
  }
  /* Integers are MiB, as for --memory. */
  j = request(&c, "{\"cmd\": \"balloon\", \"target\": 12, \"id\": 3}\n");
  assert_true(ok(j));
  assert_int_equal(jint(json_object_get(j, "balloon"), "target_bytes"),
                   12 << 20);
  json_decref(j);
  assert_null(client_read(&c));
  close(c.fd);
  finish(&p, 60);
  expect_status(&p, (12 << 1) | 1);
  json_t *s = load_json(stats);
  json_t *dev = json_object_get(json_object_get(s, "devices"), "balloon");
  assert_string_equal(jstr(dev, "type"), "virtio-balloon");
  assert_int_equal(jint(dev, "target_bytes"), 12 << 20);
  json_t *r = find_port(json_object_get(json_object_get(s, "io"), "mmio"),
                        "base", (json_int_t)0xd0000000);
  assert_string_equal(jstr(r, "device"), "balloon");
  assert_true(jint(r, "accesses") >= 4);
  /* The guest's RAM is a memfd by default. */
  json_t *slot = json_array_get(json_object_get(dev, "slots"), 0);
  assert_true(json_is_true(json_object_get(slot, "memfd")));
  json_decref(s);
  proc_free(&p);

  /* From a config file: true is an empty balloon; hugepages: anonymous
     RAM (VMM_MEM_HUGEPAGES), no memfd. */
  char json[512];
  snprintf(json, sizeof(json),
           "{\"engine\": \"%s\", \"balloon\": true, \"hugepages\": true, "
           "\"kernel\": \"%s\"}",
           ENG, kernel_path);
  run(&p, NULL,
      ARGS("--config", write_text("balloon.json", json), "--stats", stats));
  expect_status(&p, 1);
  s = load_json(stats);
  dev = json_object_get(json_object_get(s, "devices"), "balloon");
  assert_int_equal(jint(dev, "target_bytes"), 0);
  slot = json_array_get(json_object_get(dev, "slots"), 0);
  assert_true(json_is_false(json_object_get(slot, "memfd")));
  json_decref(s);
  proc_free(&p);
  /* The flag: the same. */
  run(&p, ENG, ARGS("--balloon", "0", "--hugepages", "--stats", stats,
                    kernel_path));
  expect_status(&p, 1);
  s = load_json(stats);
  slot = json_array_get(
      json_object_get(
          json_object_get(json_object_get(s, "devices"), "balloon"), "slots"),
      0);
  assert_true(json_is_false(json_object_get(slot, "memfd")));
  json_decref(s);
  proc_free(&p);
}

/* ------------------------------------------------------------------------ */
/* The demo, help, version, engines                                         */

static void test_demo(void **state) {
  (void)state;
  struct proc p;
  /* No arguments at all: the README's main-job command. */
  run(&p, NULL, (const char *const[]){NULL});
  expect_status(&p, 0);
  expect_out(&p, "Hello from the libvmm demo guest");
  expect_out(&p, "host, via fw_cfg \"opt/vmmrun/info\": vmmrun=");
  expect_out(&p, "primes below 1000, counted by this vCPU: 168");
  expect_out(&p, "Powering off");
  expect_err(&p, "demo: the guest powered off");
  expect_err(&p, "served by the handlers of the devices");
  proc_free(&p);

  /* The same on the engine under test, with its name in the host line. */
  run(&p, ENG, ARGS("--demo", "-a", "hello=1"));
  expect_status(&p, 0);
  char want[64];
  snprintf(want, sizeof(want), "engine=%s cpus=1 memory=256M", ENG);
  expect_out(&p, want);
  expect_out(&p, "command line: hello=1");
  expect_out(&p, "memory, from the Multiboot loader: 256 MiB");
  proc_free(&p);
}

static void test_help_version_engines(void **state) {
  (void)state;
  struct proc p;
  run(&p, NULL, ARGS("--help"));
  expect_status(&p, 0);
  static const char *const flags[] = {
      "--engine",    "--memory",  "--cpus",      "--kernel",  "--format",
      "--load-addr", "--entry",   "--raw-mode",  "--initrd",  "--append",
      "--serial",    "--timeout", "--stats",     "--control", "--irqchip",
      "--demo",      "--config",  "Exit status", "124"};
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
    expect_out(&p, flags[i]);
  proc_free(&p);
  run(&p, NULL, ARGS("--version"));
  expect_status(&p, 0);
  expect_out(&p, vmm_version_string());
  proc_free(&p);
  run(&p, NULL, ARGS("--engines"));
  expect_status(&p, 0);
  char want[32];
  snprintf(want, sizeof(want), "%s available", ENG);
  expect_out(&p, want);
  expect_out(&p, "auto ");
  proc_free(&p);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr,
            "usage: %s <kvm|bt> <vmmrun> <test-kernel.elf> <guest-dir>\n",
            argv[0]);
    return 2;
  }
  int rc = vmmt_select_engine(2, argv);
  if (rc != 0)
    return rc;
  /* Absolute, so config files elsewhere can name them. */
  static char abs[3][PATH_MAX];
  for (int i = 0; i < 3; i++)
    if (realpath(argv[2 + i], abs[i]) == NULL) {
      perror(argv[2 + i]);
      return 1;
    }
  vmmrun_path = abs[0];
  kernel_path = abs[1];
  snprintf(mptable_path, sizeof(mptable_path), "%s/vmmrun-mptable.bin", abs[2]);
  snprintf(balloon_poll_path, sizeof(balloon_poll_path),
           "%s/vmmrun-balloon-poll.bin", abs[2]);
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_vmmrun-%s-XXXXXX", argv[1]);
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kernel_passes),
      cmocka_unit_test(test_exit_statuses),
      cmocka_unit_test(test_timeout),
      cmocka_unit_test(test_memory_sizes),
      cmocka_unit_test(test_triple_fault),
      cmocka_unit_test(test_halt),
      cmocka_unit_test(test_reset_and_poweroff),
      cmocka_unit_test(test_unclaimed),
      cmocka_unit_test(test_stats_file),
      cmocka_unit_test(test_cpus),
      cmocka_unit_test(test_mptable),
      cmocka_unit_test(test_balloon),
      cmocka_unit_test(test_bad_flags),
      cmocka_unit_test(test_bad_configs),
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_serial_backends),
      cmocka_unit_test(test_signal),
      cmocka_unit_test(test_control),
      cmocka_unit_test(test_demo),
      cmocka_unit_test(test_help_version_engines),
  };
  rc = vmmt_run_group(tests);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", tmpdir);
  return rc;
}
