/*
 * Tests of include/libvmm/io.h: handler registration and its error paths
 * (overlaps in every arrangement, range limits), dispatch of every access
 * size for ports and MMIO, string I/O element by element, declined
 * accesses reaching the exit handler or the caller, handler errors ending
 * vmm_vcpu_run(), registration from inside a handler, unhandled reads
 * completed by the caller, the FPU state and GS base on both sides of a
 * handler, a debugger stopping in one and a backtrace from one, the
 * allocation stacks of its blocks (sanitizer builds), handlers on each
 * thread a vCPU is run from, one running another VM's vCPU, 6 MiB of
 * stack in one, signals to a thread running a vCPU, and registration
 * while vCPUs run: unregistering waits for handlers in flight (vCPUs,
 * threads without a vCPU, nested dispatch) and none is called after it
 * returned, with membarrier and with the fenced fallback; hit counts stay
 * exact through many table replacements.
 */
#include "testutil.h"

#include <asm/prctl.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h" /* vmm__iobus_dispatch, the bus's fallback switch */

#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define IO_ASAN 1
#elif defined(__has_feature) /* clang */
#if __has_feature(address_sanitizer)
#define IO_ASAN 1
#endif
#endif
#ifdef IO_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define E_SIZES 0x000
#define E_MMIO 0x080
#define E_STRING 0x100
#define E_IN 0x180
#define E_STRADDLE 0x200
#define E_THREE 0x280
#define E_LOOP 0x300
#define E_X87 0x500
#define E_HAMMER 0x700
#define MMIO_BASE 0xd0000000ull

struct access {
  uint64_t addr;
  uint32_t len;
  bool is_write;
  uint64_t value;       /* written value, or the value returned */
  uint64_t read_before; /* buffer content on entry for reads */
};

struct recorder {
  vmm_vcpu *expect_vcpu;
  unsigned n;
  struct access log[64];
  int rc;             /* what the handler returns */
  uint64_t read_base; /* reads return read_base + n */
  int decline_value;  /* decline writes of this byte (-1: none) */
  /* Registration attempts made from inside the handler. */
  vmm_vm *vm, *other_vm;
  int reg_rc, unreg_rc, mmio_reg_rc, other_rc;
  bool try_register;
  char *seq;        /* if set, accepted byte writes are appended here */
  int decline_read; /* decline the read with this index (-1: none) */
  unsigned reads;
};

static int record(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                  bool is_write, void *opaque) {
  struct recorder *r = opaque;
  if (r->expect_vcpu != NULL)
    assert_ptr_equal(vcpu, r->expect_vcpu);
  assert_true(len == 1 || len == 2 || len == 4 || len == 8);
  struct access a = {.addr = addr, .len = len, .is_write = is_write};
  memcpy(&a.read_before, data, len);
  if (is_write) {
    memcpy(&a.value, data, len);
    if (r->decline_value >= 0 && a.value == (uint64_t)r->decline_value)
      return VMM_IO_DECLINED;
    if (r->seq != NULL && len == 1)
      strncat(r->seq, (const char *)data, 1);
  } else {
    if ((int)r->reads++ == r->decline_read)
      return VMM_IO_DECLINED;
    a.value = r->read_base + r->n;
    memcpy(data, &a.value, len);
    a.value &= len == 8 ? ~0ull : (1ull << (8 * len)) - 1;
  }
  if (r->try_register) {
    r->try_register = false; /* once */
    r->reg_rc = vmm_io_register(r->vm, VMM_IO_PORT, 0x300, 1, record, r);
    r->mmio_reg_rc =
        vmm_io_register(r->vm, VMM_IO_MMIO, 0xe0000000, 1, record, r);
    r->unreg_rc = vmm_io_unregister(r->vm, VMM_IO_PORT, 0x10);
    r->other_rc =
        vmm_io_register(r->other_vm, VMM_IO_PORT, 0x300, 1, record, r);
  }
  if (r->n < 64)
    r->log[r->n] = a;
  r->n++;
  return r->rc;
}

static void recorder_init(struct recorder *r, vmm_vcpu *vcpu) {
  memset(r, 0, sizeof(*r));
  r->expect_vcpu = vcpu;
  r->decline_value = -1;
  r->decline_read = -1;
}

static void io_guest(struct vmmt *t, uint64_t entry) {
  vmmt_init(t, VMM_MODE_LONG64, 3);
  vmmt_load_snippet(t, "io64", VMMT_CODE, entry);
}

/* The E_LOOP guest to its end: three rounds of handled accesses, each
   ending at port 0x30, then 0xeb. */
static void run_loop(vmm_vcpu *vcpu) {
  for (unsigned i = 0; i < 3; i++)
    vmmt_run_to_port(vcpu, 0x30);
  vmmt_run_to_port(vcpu, 0xeb);
}

/* What an E_LOOP guest read when its handlers returned zeros. */
static void expect_loop_zeros(struct vmmt *t) {
  uint64_t got[3];
  assert_ok(vmm_mem_read(t->vm, 0x20000 + 48, got, sizeof(got)));
  assert_int_equal(got[0], ~0xffull);
  assert_int_equal(got[1], ~0xffffull);
  assert_int_equal(got[2], 0);
}

static int dummy(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                 bool is_write, void *opaque) {
  (void)vcpu, (void)addr, (void)data, (void)len, (void)is_write, (void)opaque;
  return 0;
}

static void test_register_bad_args(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(1, 0);
  assert_vmm(vmm_io_register(NULL, VMM_IO_PORT, 0x10, 1, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_PORT, 0x10, 1, NULL, NULL), VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_PORT, 0x10, 0, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, (enum vmm_io_space)2, 0x10, 1, dummy, NULL),
             VMM_EINVAL);
  /* Port space is 0..0xffff. */
  assert_vmm(vmm_io_register(vm, VMM_IO_PORT, 0xffff, 2, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_PORT, 0x10000, 1, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_PORT, 0, 0x10001, dummy, NULL),
             VMM_EINVAL);
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0xffff, 1, dummy, NULL));
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0, 0x10, dummy, NULL));
  /* MMIO space is the physical address space, below 2^52. */
  assert_vmm(vmm_io_register(vm, VMM_IO_MMIO, 1ull << 52, 1, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_MMIO, (1ull << 52) - 4, 8, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_MMIO, UINT64_MAX, 2, dummy, NULL),
             VMM_EINVAL);
  assert_vmm(vmm_io_register(vm, VMM_IO_MMIO, 0x1000, UINT64_MAX, dummy, NULL),
             VMM_EINVAL);
  assert_ok(vmm_io_register(vm, VMM_IO_MMIO, (1ull << 52) - 4, 4, dummy, NULL));
  assert_ok(vmm_vm_destroy(vm));
}

static void check_overlaps(vmm_vm *vm, enum vmm_io_space sp, uint64_t b) {
  assert_ok(vmm_io_register(vm, sp, b, 0x10, dummy, NULL));
  static const struct {
    int64_t off;
    uint64_t len;
  } bad[] = {
      {0, 0x10},     /* identical */
      {-8, 0x10},    /* covers the start */
      {8, 0x10},     /* covers the end */
      {4, 1},        /* inside */
      {0xf, 1},      /* last unit */
      {-0x10, 0x30}, /* encloses */
      {-1, 2},       /* one unit each side of the start */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_vmm(vmm_io_register(vm, sp, b + (uint64_t)bad[i].off, bad[i].len,
                               dummy, NULL),
               VMM_EOVERLAP);
  /* Adjacent on both sides. */
  assert_ok(vmm_io_register(vm, sp, b - 0x10, 0x10, dummy, NULL));
  assert_ok(vmm_io_register(vm, sp, b + 0x10, 0x10, dummy, NULL));
  assert_vmm(vmm_io_register(vm, sp, b - 0x11, 1, dummy, NULL), 0);
  assert_vmm(vmm_io_register(vm, sp, b - 0x12, 2, dummy, NULL), VMM_EOVERLAP);
}

static void test_register_overlap(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(1, 0);
  check_overlaps(vm, VMM_IO_PORT, 0x100);
  check_overlaps(vm, VMM_IO_MMIO, 0xd0000000);
  /* The two spaces are independent. */
  assert_ok(vmm_io_register(vm, VMM_IO_MMIO, 0x100, 0x10, dummy, NULL));
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0xd000, 0x10, dummy, NULL));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_unregister(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(1, 0);
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x100, 0x10, dummy, NULL));
  assert_vmm(vmm_io_unregister(vm, VMM_IO_PORT, 0x200), VMM_ENOENT);
  assert_vmm(vmm_io_unregister(vm, VMM_IO_PORT, 0x108), VMM_ENOENT);
  assert_vmm(vmm_io_unregister(vm, VMM_IO_MMIO, 0x100), VMM_ENOENT);
  assert_vmm(vmm_io_unregister(NULL, VMM_IO_PORT, 0x100), VMM_EINVAL);
  assert_vmm(vmm_io_unregister(vm, (enum vmm_io_space)9, 0x100), VMM_EINVAL);
  assert_ok(vmm_io_unregister(vm, VMM_IO_PORT, 0x100));
  assert_vmm(vmm_io_unregister(vm, VMM_IO_PORT, 0x100), VMM_ENOENT);
  /* The range is free again, with a different extent. */
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x104, 0x20, dummy, NULL));
  assert_ok(vmm_vm_destroy(vm));
}

static void test_port_dispatch_sizes(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_SIZES);
  recorder_init(&r, t.vcpu);
  r.read_base = 0xa1b2c3d4e5f60718ull;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, record, &r));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.n, 6);
  static const struct access want[] = {
      {0x10, 1, true, 0x11, 0},       {0x12, 2, true, 0x2233, 0},
      {0x14, 4, true, 0x44556677, 0}, {0x10, 1, false, 0x1b, 0},
      {0x12, 2, false, 0x071c, 0},    {0x14, 4, false, 0xe5f6071d, 0},
  };
  for (unsigned i = 0; i < 6; i++) {
    assert_int_equal(r.log[i].addr, want[i].addr);
    assert_int_equal(r.log[i].len, want[i].len);
    assert_int_equal(r.log[i].is_write, want[i].is_write);
    assert_int_equal(r.log[i].value, want[i].value);
    if (!want[i].is_write) /* reads start zeroed */
      assert_int_equal(r.log[i].read_before, 0);
  }
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RBX), 0x1b);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RCX), 0x071c);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RDX), 0xe5f6071d);
  vmmt_fini(&t);
}

/* The same accesses again and again: BT keeps an in/out's decoded form in
   its callout after the first run (docs/bt.md, "Port I/O"), with the port
   from the instruction or from DX, each size and direction, and an
   unhandled port in between. */
static void test_port_loop(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_LOOP);
  recorder_init(&r, t.vcpu);
  r.read_base = 0x8877665544332211ull;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, record, &r));
  for (unsigned i = 0; i < 3; i++) {
    struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x30);
    assert_true(e->io.is_write);
    assert_int_equal(e->io.size, 2);
    assert_int_equal(e->io.count, 1);
    uint16_t v;
    memcpy(&v, e->io.data, 2);
    assert_int_equal(v, 3 - i);
  }
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.n, 12);
  for (unsigned i = 0; i < 3; i++) {
    static const uint64_t ports[4] = {0x10, 0x12, 0x14, 0x16};
    static const uint32_t lens[4] = {1, 2, 4, 1};
    for (unsigned k = 0; k < 4; k++) {
      const struct access *a = &r.log[4 * i + k];
      assert_int_equal(a->addr, ports[k]);
      assert_int_equal(a->len, lens[k]);
      assert_int_equal(a->is_write, k == 3);
    }
    assert_int_equal(r.log[4 * i + 3].value, 3 - i);
    uint64_t v0 = r.read_base + 4 * i, got[3];
    assert_ok(vmm_mem_read(t.vm, 0x20000 + 24 * i, got, sizeof(got)));
    uint64_t want0 = ~0xffull | (v0 & 0xff);
    assert_int_equal(got[0], want0);
    assert_int_equal(got[1], (want0 & ~0xffffull) | ((v0 + 1) & 0xffff));
    assert_int_equal(got[2], (v0 + 2) & 0xffffffff);
  }
  vmmt_fini(&t);
}

static void test_mmio_dispatch_sizes(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_MMIO);
  recorder_init(&r, t.vcpu);
  r.read_base = 0x1122334455667788ull;
  assert_ok(vmm_io_register(t.vm, VMM_IO_MMIO, MMIO_BASE, 0x1000, record, &r));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.n, 8);
  static const struct access want[] = {
      {MMIO_BASE, 1, true, 0x5a, 0},
      {MMIO_BASE + 2, 2, true, 0x1234, 0},
      {MMIO_BASE + 4, 4, true, 0x89abcdef, 0},
      {MMIO_BASE + 8, 8, true, 0x0102030405060708ull, 0},
      {MMIO_BASE, 1, false, 0x8c, 0},
      {MMIO_BASE + 2, 2, false, 0x778d, 0},
      {MMIO_BASE + 4, 4, false, 0x5566778e, 0},
      {MMIO_BASE + 8, 8, false, 0x112233445566778full, 0},
  };
  for (unsigned i = 0; i < 8; i++) {
    assert_int_equal(r.log[i].addr, want[i].addr);
    assert_int_equal(r.log[i].len, want[i].len);
    assert_int_equal(r.log[i].is_write, want[i].is_write);
    assert_int_equal(r.log[i].value, want[i].value);
    if (!want[i].is_write)
      assert_int_equal(r.log[i].read_before, 0);
  }
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RBX), 0x8c);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RCX), 0x778d);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RDX), 0x5566778e);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RSI), 0x112233445566778full);
  vmmt_fini(&t);
}

/* rep outsb / rep insw reach the handler one element at a time. */
static void test_string_io(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_STRING);
  recorder_init(&r, t.vcpu);
  r.read_base = 0xa000;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 4, record, &r));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.n, 8);
  const char *hello = "hello";
  for (unsigned i = 0; i < 5; i++) {
    assert_int_equal(r.log[i].addr, 0x10);
    assert_int_equal(r.log[i].len, 1);
    assert_true(r.log[i].is_write);
    assert_int_equal(r.log[i].value, (uint8_t)hello[i]);
  }
  uint16_t words[3];
  assert_ok(vmm_mem_read(t.vm, 0x20000, words, sizeof(words)));
  for (unsigned i = 0; i < 3; i++) {
    assert_int_equal(r.log[5 + i].addr, 0x12);
    assert_int_equal(r.log[5 + i].len, 2);
    assert_false(r.log[5 + i].is_write);
    assert_int_equal(words[i], 0xa000 + 5 + i);
  }
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RCX), 0);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RDI), 0x20006);
  vmmt_fini(&t);
}

/* Without a handler, a string write comes to the caller in one exit with
   count elements. */
static void test_string_io_unhandled(void **state) {
  (void)state;
  struct vmmt t;
  io_guest(&t, E_STRING);
  struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x10);
  assert_true(e->io.is_write);
  assert_int_equal(e->io.size, 1);
  unsigned seen = 0;
  char got[8] = {0};
  /* An engine may split the string into several exits. */
  for (;;) {
    assert_true(e->io.count >= 1 && seen + e->io.count <= 5);
    memcpy(got + seen, e->io.data, e->io.count);
    seen += e->io.count;
    if (seen == 5)
      break;
    e = vmmt_run_to_port(t.vcpu, 0x10);
  }
  assert_string_equal(got, "hello");
  vmmt_fini(&t);
}

/* A handler declining an element in the middle of a string access: the
   elements it already took are not handed out again, and the caller gets
   the rest, so every element is processed exactly once and in order.
   (Engines may deliver a string access in one exit or element by element;
   the invariant holds either way.) */
static void test_string_io_declined_midway(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_STRING);
  recorder_init(&r, t.vcpu);
  r.decline_value = 'l';
  r.read_base = 0xa000;
  r.seq = calloc(1, 16);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 4, record, &r));
  for (;;) {
    struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_IO);
    if (e->io.port == 0xeb)
      break;
    assert_int_equal(e->io.port, 0x10);
    assert_true(e->io.is_write);
    assert_true(strlen(r.seq) + e->io.count <= 5);
    strncat(r.seq, (const char *)e->io.data, e->io.count);
  }
  assert_string_equal(r.seq, "hello");
  free(r.seq);
  vmmt_fini(&t);
}

/* The same for a string read: what the handler stored stays, the caller
   supplies only the elements from the declined one on. */
static void test_string_in_declined_midway(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_STRING);
  recorder_init(&r, t.vcpu);
  r.read_base = 0xa000;
  r.decline_read = 1;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 4, record, &r));
  uint16_t next = 0x1111;
  unsigned supplied = 0;
  for (;;) {
    struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_IO);
    if (e->io.port == 0xeb)
      break;
    assert_int_equal(e->io.port, 0x12);
    assert_false(e->io.is_write);
    for (uint32_t i = 0; i < e->io.count; i++, next += 0x1111, supplied++)
      memcpy(e->io.data + 2 * i, &next, 2);
  }
  /* Element 0 comes from the handler (its 6th call, after the five string
     writes), element 1 from the caller; element 2 from the caller too if
     the engine delivered the rest in one exit, else from the handler. */
  uint16_t words[3];
  assert_ok(vmm_mem_read(t.vm, 0x20000, words, sizeof(words)));
  assert_int_equal(words[0], 0xa005);
  assert_int_equal(words[1], 0x1111);
  assert_true(supplied == 1 || supplied == 2);
  assert_int_equal(words[2], supplied == 2 ? 0x2222 : 0xa006);
  assert_int_equal(r.n, supplied == 2 ? 6 : 7);
  vmmt_fini(&t);
}

/* Reads no handler serves come to the caller, who supplies the value. */
static void test_unhandled_reads(void **state) {
  (void)state;
  struct vmmt t;
  io_guest(&t, E_IN);
  struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x20);
  assert_false(e->io.is_write);
  assert_int_equal(e->io.size, 1);
  assert_int_equal(e->io.count, 1);
  e->io.data[0] = 0x5a;
  e = vmmt_run_to_port(t.vcpu, 0x22);
  assert_int_equal(e->io.size, 2);
  memcpy(e->io.data, &(uint16_t){0xbeef}, 2);
  e = vmmt_run_to_port(t.vcpu, 0x24);
  assert_int_equal(e->io.size, 4);
  memcpy(e->io.data, &(uint32_t){0xfeedface}, 4);
  e = vmmt_run_expect(t.vcpu, VMM_EXIT_MMIO);
  assert_int_equal(e->mmio.gpa, MMIO_BASE + 0x1000);
  assert_false(e->mmio.is_write);
  assert_int_equal(e->mmio.size, 8);
  memcpy(e->mmio.data, &(uint64_t){0x0123456789abcdefull}, 8);
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RBX), 0x5a);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RCX), 0xbeef);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RDX), 0xfeedface);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RSI), 0x0123456789abcdefull);
  vmmt_fini(&t);
}

static enum vmm_exit_action fill_in(vmm_vcpu *vcpu, struct vmm_exit *e,
                                    void *opaque) {
  unsigned *calls = opaque;
  (void)vcpu;
  if (e->reason == VMM_EXIT_IO && !e->io.is_write) {
    memset(e->io.data, 0x42, e->io.size);
    ++*calls;
    return VMM_EXIT_ACTION_RESUME;
  }
  if (e->reason == VMM_EXIT_MMIO && !e->mmio.is_write) {
    memset(e->mmio.data, 0x43, e->mmio.size);
    ++*calls;
    return VMM_EXIT_ACTION_RESUME;
  }
  return VMM_EXIT_ACTION_RETURN;
}

/* The same, answered by the exit handler without returning. */
static void test_unhandled_reads_exit_handler(void **state) {
  (void)state;
  struct vmmt t;
  unsigned calls = 0;
  io_guest(&t, E_IN);
  assert_ok(vmm_vm_set_exit_handler(t.vm, fill_in, &calls));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(calls, 4);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RBX), 0x42);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RCX), 0x4242);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RDX), 0x42424242);
  assert_int_equal(vmmt_reg(t.vcpu, VMM_REG_RSI), 0x4343434343434343ull);
  vmmt_fini(&t);
}

/* An access that does not lie inside one range is not dispatched. */
static void test_straddling_access(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_STRADDLE);
  recorder_init(&r, t.vcpu);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x100, 0x10, record, &r));
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x110, 0x10, record, &r));
  struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x10f);
  assert_int_equal(e->io.size, 2);
  assert_int_equal(r.n, 0);
  vmmt_run_to_port(t.vcpu, 0xeb);
  vmmt_fini(&t);
}

static enum vmm_exit_action count_declined(vmm_vcpu *vcpu, struct vmm_exit *e,
                                           void *opaque) {
  unsigned *n = opaque;
  (void)vcpu;
  if (e->reason == VMM_EXIT_IO && e->io.port == 0x10) {
    assert_int_equal(e->io.data[0], 2);
    ++*n;
    return VMM_EXIT_ACTION_RESUME;
  }
  return VMM_EXIT_ACTION_RETURN;
}

/* A declined access goes on as an exit: to the exit handler if there is
   one, to the caller otherwise. Any positive return declines. */
static void test_declined(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_THREE);
  recorder_init(&r, t.vcpu);
  r.decline_value = 2;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 1, record, &r));
  struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x10);
  assert_int_equal(e->io.data[0], 2);
  assert_int_equal(r.n, 1);
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.log[1].value, 3);

  unsigned declined = 0;
  assert_ok(vmm_vm_set_exit_handler(t.vm, count_declined, &declined));
  vmmt_set_ip_sp(t.vcpu, VMMT_CODE + E_THREE, VMMT_STACK);
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(declined, 1);
  assert_int_equal(r.n, 4);

  /* Unregistered: every write is an exit now. */
  assert_ok(vmm_vm_set_exit_handler(t.vm, NULL, NULL));
  assert_ok(vmm_io_unregister(t.vm, VMM_IO_PORT, 0x10));
  r.decline_value = -1;
  r.rc = 7;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 1, record, &r));
  vmmt_set_ip_sp(t.vcpu, VMMT_CODE + E_THREE, VMMT_STACK);
  e = vmmt_run_to_port(t.vcpu, 0x10);
  assert_int_equal(e->io.data[0], 1);
  assert_int_equal(r.n, 5);
  vmmt_fini(&t);
}

/* A handler's error ends the run with that code; the guest continues
   after the access on the next run. */
static void test_handler_error(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_THREE);
  recorder_init(&r, t.vcpu);
  r.rc = VMM_EIO;
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 1, record, &r));
  struct vmm_exit *e = NULL;
  assert_vmm(vmm_vcpu_run(t.vcpu, &e), VMM_EIO);
  assert_ptr_equal(e, vmm_vcpu_exit(t.vcpu));
  assert_int_equal(r.n, 1);
  r.rc = VMM_ENOMEM;
  assert_vmm(vmm_vcpu_run(t.vcpu, &e), VMM_ENOMEM);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.log[1].value, 2);
  r.rc = 0;
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.log[2].value, 3);
  vmmt_fini(&t);
}

/* Registering on the VM whose handler is running would deadlock: refused
   with ESTATE. Another VM's buses are fine. */
static void test_register_from_handler(void **state) {
  (void)state;
  struct vmmt t;
  struct recorder r;
  io_guest(&t, E_THREE);
  recorder_init(&r, t.vcpu);
  r.try_register = true;
  r.vm = t.vm;
  r.other_vm = vmmt_vm_create(1, 0);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 1, record, &r));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(r.reg_rc, VMM_ESTATE);
  assert_int_equal(r.mmio_reg_rc, VMM_ESTATE);
  assert_int_equal(r.unreg_rc, VMM_ESTATE);
  assert_int_equal(r.other_rc, 0);
  /* The refused unregister left the handler in place for the rest. */
  assert_int_equal(r.n, 3);
  /* Outside a handler the same calls work. */
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x300, 1, dummy, NULL));
  assert_ok(vmm_io_unregister(t.vm, VMM_IO_PORT, 0x300));
  assert_ok(vmm_vm_destroy(r.other_vm));
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* FPU state around handlers                                                */

struct fpu_probe {
  vmm_vcpu *vcpu;
  uint16_t host_fcw;
  uint32_t host_mxcsr;
  unsigned calls;
  unsigned bad_env;     /* calls that found a state C may not run on */
  unsigned bad_math;    /* calls whose long double results were wrong */
  struct vmm_fpu first; /* the guest's FPU, as the first call saw it */
  int first_rc;
};

/* The x87 state a C function may rely on (the psABI's: control word as
   the thread set it, empty stack; no pending exception either), then
   long double arithmetic: 64-bit precision, all eight registers, an
   inexact result. It fills every x87 register and sets PE, so a guest
   state it shared would show it. */
static int fpu_handler(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                       bool is_write, void *opaque) {
  struct fpu_probe *p = opaque;
  (void)port, (void)len, (void)is_write;
  uint8_t fx[512] __attribute__((aligned(16)));
  uint32_t mxcsr;
  __asm__ volatile("fxsave %0; stmxcsr %1" : "=m"(fx), "=m"(mxcsr));
  uint16_t fcw, fsw;
  memcpy(&fcw, fx, 2);
  memcpy(&fsw, fx + 2, 2);
  if (fcw != p->host_fcw || (fsw & 0x80) != 0 || fx[4] != 0 ||
      (mxcsr & ~0x3fu) != (p->host_mxcsr & ~0x3fu))
    p->bad_env++;
  static volatile long double tiny = 0x1p-60L, three = 3.0L;
  long double eight, sum, third;
  __asm__ volatile("fld1; fld1; fld1; fld1; fld1; fld1; fld1; fld1\n\t"
                   "faddp; faddp; faddp; faddp; faddp; faddp; faddp\n\t"
                   "fstpt %0"
                   : "=m"(eight));
  sum = 1.0L + tiny;
  third = 1.0L / three;
  /* SSE arithmetic too: an inexact division sets MXCSR.PE. */
  static volatile double one_d = 1.0, three_d = 3.0;
  volatile double third_d = one_d / three_d;
  if (sum == 1.0L || third == (long double)(double)third || eight != 8.0L ||
      third_d * 3.0 == 0.0)
    p->bad_math++;
  if (p->calls++ == 0)
    p->first_rc = vmm_vcpu_get_fpu(vcpu, &p->first);
  *(uint8_t *)data = (uint8_t)p->calls;
  return 0;
}

static void expect_tword_in(const uint8_t *b, uint64_t mant, uint16_t exp) {
  uint8_t want[10];
  memcpy(want, &mant, 8);
  memcpy(want + 8, &exp, 2);
  assert_memory_equal(b, want, 10);
}

static void expect_tword(struct vmmt *t, uint64_t gpa, uint64_t mant,
                         uint16_t exp) {
  uint8_t b[10];
  assert_ok(vmm_mem_read(t->vm, gpa, b, 10));
  expect_tword_in(b, mant, exp);
}

static uint64_t mem_u64(struct vmmt *t, uint64_t gpa, unsigned len) {
  uint64_t v = 0;
  assert_ok(vmm_mem_read(t->vm, gpa, &v, len));
  return v;
}

/* Handlers run with the thread's own FPU state even when the guest keeps
   values on the x87 stack, runs with another control word and MXCSR, or
   in MMX state; and the guest's state (registers, the values left in
   empty registers, status flags) is exactly its own afterwards. BT runs
   handlers inside the guest's callout (docs/bt.md, "Port I/O"), KVM after
   an exit: both must. */
static void test_handler_fpu(void **state) {
  (void)state;
  struct vmmt t;
  io_guest(&t, E_X87);
  struct fpu_probe p = {.vcpu = t.vcpu};
  __asm__ volatile("fnstcw %0; stmxcsr %1"
                   : "=m"(p.host_fcw), "=m"(p.host_mxcsr));
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x30, 1, fpu_handler, &p));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(p.calls, 10);
  assert_int_equal(p.bad_env, 0);
  assert_int_equal(p.bad_math, 0);
  /* The guest's own state as the handler of the first `in` saw it. */
  static const uint8_t one[10] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f};
  static const uint8_t pi[10] = {0x35, 0xc2, 0x68, 0x21, 0xa2,
                                 0xda, 0x0f, 0xc9, 0x00, 0x40};
  static const uint8_t x63[10] = {1, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f};
  assert_int_equal(p.first_rc, 0);
  assert_int_equal(p.first.fcw, 0x27f);
  assert_int_equal(p.first.fsw >> 11 & 7, 5);
  assert_int_equal(p.first.mxcsr, 0x7f80);
  assert_memory_equal(p.first.st[0], one, 10);
  assert_memory_equal(p.first.st[1], pi, 10);
  assert_memory_equal(p.first.st[2], x63, 10);
  /* The stack, precision, rounding and flags after the handler. */
  assert_int_equal(mem_u64(&t, 0x20000, 8), 0x401090fdaa22168cull);
  expect_tword(&t, 0x20010, 0xc90fdaa22168c235ull, 0x4000);
  expect_tword(&t, 0x20020, 0x8000000000000001ull, 0x3fff);
  expect_tword(&t, 0x20030, 0x8000000000000000ull, 0x3fff); /* 53 bits */
  assert_int_equal(mem_u64(&t, 0x20040, 2), 0x0020);        /* PE, TOP 0 */
  assert_int_equal(mem_u64(&t, 0x20042, 2), 0x027f);
  assert_int_equal(mem_u64(&t, 0x20044, 4), 0x7f80);
  assert_int_equal(mem_u64(&t, 0x20060, 8), 0x1122334455667788ull);
  /* Empty registers keep their contents, flags stay clear. */
  for (uint64_t fx = 0x20100; fx <= 0x20300; fx += 0x200) {
    assert_int_equal(mem_u64(&t, fx, 2), 0x037f);
    assert_int_equal(mem_u64(&t, fx + 2, 2), 0);
    assert_int_equal(mem_u64(&t, fx + 4, 1), 0);
  }
  expect_tword(&t, 0x20100 + 32 + 7 * 16, 0xc000000000000000ull, 0x4000);
  expect_tword(&t, 0x20300 + 32 + 7 * 16, 0xa000000000000000ull, 0x4001);
  assert_int_equal(mem_u64(&t, 0x20070, 8), 0x4000000000000000ull); /* 2.0 */
  assert_int_equal(mem_u64(&t, 0x20078, 2), 0);
  /* MXCSR: no status bit of the handler's, the guest's PE kept. */
  assert_int_equal(mem_u64(&t, 0x20080, 4), 0x1f80);
  assert_int_equal(mem_u64(&t, 0x20084, 4), 0x1fa0);
  assert_int_equal(mem_u64(&t, 0x20088, 4), 0x1fa4); /* PE, ZE */
  /* The run returned right after a handler: the guest's state is whole,
     and the thread has its own again. */
  struct vmm_fpu f;
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &f));
  assert_int_equal(f.fsw, 7 << 11);
  assert_int_equal(f.ftw, 0x80);
  assert_int_equal(f.fcw, 0x37f);
  expect_tword_in(f.st[0], 0xc000000000000000ull, 0x4000);
  uint16_t fcw;
  long double eight;
  __asm__ volatile("fnstcw %0\n\t"
                   "fld1; fld1; fld1; fld1; fld1; fld1; fld1; fld1\n\t"
                   "faddp; faddp; faddp; faddp; faddp; faddp; faddp\n\t"
                   "fstpt %1"
                   : "=m"(fcw), "=m"(eight));
  assert_int_equal(fcw, p.host_fcw);
  assert_true(eight == 8.0L);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* The thread's GS base around handlers                                     */

static uint64_t thread_gs(void) {
  unsigned long v = 0;
  assert_int_equal(syscall(SYS_arch_prctl, ARCH_GET_GS, &v), 0);
  return v;
}

struct gs_probe {
  unsigned calls, wrong;
  uint64_t want, next;
};

static int gs_handler(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                      bool is_write, void *opaque) {
  struct gs_probe *p = opaque;
  (void)vcpu, (void)port, (void)is_write;
  p->calls++;
  p->wrong += thread_gs() != p->want;
  if (p->calls == 6) { /* the middle of a run */
    assert_int_equal(syscall(SYS_arch_prctl, ARCH_SET_GS, p->next), 0);
    p->want = p->next;
  }
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

/* A thread that uses GS (its base is not 0) runs handlers with its own
   base, and has it after vmm_vcpu_run() returns. The engines never read or
   write it (BT reaches its context through RSP alone, docs/bt.md), so a
   handler that moves it in the middle of a run leaves the guest running
   as before and the thread with the new base. */
static void test_handler_gs(void **state) {
  (void)state;
  static uint64_t tls_block[4];
  struct vmmt t;
  io_guest(&t, E_LOOP);
  struct gs_probe p = {.want = (uint64_t)(uintptr_t)tls_block,
                       .next = (uint64_t)(uintptr_t)&tls_block[2]};
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, gs_handler, &p));
  assert_int_equal(syscall(SYS_arch_prctl, ARCH_SET_GS, p.want), 0);
  for (unsigned i = 0; i < 3; i++) {
    struct vmm_exit *e = vmmt_run_to_port(t.vcpu, 0x30);
    assert_int_equal(thread_gs(), p.want);
    uint16_t v;
    memcpy(&v, e->io.data, 2);
    assert_int_equal(v, 3 - i);
  }
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(thread_gs(), p.next);
  assert_int_equal(syscall(SYS_arch_prctl, ARCH_SET_GS, 0ul), 0);
  assert_int_equal(p.calls, 12);
  assert_int_equal(p.wrong, 0);
  expect_loop_zeros(&t); /* what the guest read: zeros from the handler */
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* A debugger stopped in a handler                                          */

static int trap_handler(vmm_vcpu *vcpu, uint64_t port, void *data,
                        uint32_t len, bool is_write, void *opaque) {
  unsigned *calls = opaque;
  (void)vcpu, (void)port;
  ++*calls;
  raise(SIGTRAP); /* a breakpoint: the tracer takes over here */
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

/* The traced child: E_LOOP with a breakpoint in every handler call. Exit
   status 0 when the guest ended as it does untraced. */
static void debuggee(void) {
  if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
    _exit(77);
  struct vmmt t;
  unsigned calls = 0;
  io_guest(&t, E_LOOP);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, trap_handler, &calls));
  run_loop(t.vcpu);
  uint64_t got[3];
  assert_ok(vmm_mem_read(t.vm, 0x20000 + 48, got, sizeof(got)));
  bool ok = calls == 12 && got[0] == ~0xffull && got[1] == ~0xffffull &&
            got[2] == 0;
  vmmt_fini(&t);
  _exit(ok ? 0 : 1);
}

/* What gdb does at a breakpoint in a handler: read the thread's registers
   and write them back (PTRACE_SETREGS), then continue; the guest goes on
   and ends as it does untraced. BT once ran handlers with a GS base above
   2^47, which the kernel refuses to write back (EIO: gdb's "Couldn't
   write registers"). */
static void test_handler_under_debugger(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    debuggee();
  unsigned stops = 0, refused = 0, high_gs = 0;
  int status;
  for (;;) {
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSTOPPED(status))
      break;
    int sig = WSTOPSIG(status);
    if (sig == SIGTRAP) {
      struct user_regs_struct r;
      stops++;
      assert_int_equal(ptrace(PTRACE_GETREGS, pid, NULL, &r), 0);
      high_gs += r.gs_base >= (1ull << 47) - 4096;
      refused += ptrace(PTRACE_SETREGS, pid, NULL, &r) != 0;
      sig = 0; /* the breakpoint's trap is the debugger's */
    }
    assert_int_equal(ptrace(PTRACE_CONT, pid, NULL, (void *)(intptr_t)sig), 0);
  }
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) {
    print_message("skipped: ptrace(PTRACE_TRACEME) refused here\n");
    skip();
  }
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(stops, 12);
  assert_int_equal(high_gs, 0);
  assert_int_equal(refused, 0);
}

/* The unwinder (glibc's backtrace(), gdb's `bt`) finds the way from a
   handler back through vmm_vcpu_run() to main() and the C library that
   called it: on BT through the callout gate, whose unwind information
   describes the frame vmm__bt_enter left on the caller's stack (glue.S,
   CALLER_CFA). The library is linked into this program, so its own names
   are not visible to dladdr(); libc's are. */
static int unwind_handler(vmm_vcpu *vcpu, uint64_t port, void *data,
                          uint32_t len, bool is_write, void *opaque) {
  unsigned *found = opaque;
  (void)vcpu, (void)port, (void)is_write;
  void *pc[64];
  int n = backtrace(pc, 64);
  for (int i = 0; i < n; i++) {
    Dl_info info;
    if (dladdr(pc[i], &info) != 0 && info.dli_sname != NULL &&
        strcmp(info.dli_sname, "__libc_start_main") == 0) {
      ++*found;
      break;
    }
  }
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

static void test_handler_backtrace(void **state) {
  (void)state;
  struct vmmt t;
  unsigned found = 0;
  io_guest(&t, E_LOOP);
  assert_ok(
      vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, unwind_handler, &found));
  run_loop(t.vcpu);
  assert_int_equal(found, 12);
  vmmt_fini(&t);
}

/* Handlers run on the thread that runs the vCPU, whichever it is. */
struct thread_probe {
  unsigned calls, elsewhere;
  pthread_t want;
};

static int thread_handler(vmm_vcpu *vcpu, uint64_t port, void *data,
                          uint32_t len, bool is_write, void *opaque) {
  struct thread_probe *p = opaque;
  (void)vcpu, (void)port;
  p->calls++;
  p->elsewhere += !pthread_equal(pthread_self(), p->want);
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

/* One round of the E_LOOP guest on a thread of its own (cmocka cannot
   fail from it: the main thread asserts). */
struct thread_round {
  vmm_vcpu *vcpu;
  struct thread_probe *p;
  int rc; /* of vmm_vcpu_run(), or -1 for another exit than 0x30 */
};

static void *thread_round_run(void *arg) {
  struct thread_round *r = arg;
  struct vmm_exit *e = NULL;
  r->p->want = pthread_self();
  r->rc = vmm_vcpu_run(r->vcpu, &e);
  if (r->rc == 0 && (e->reason != VMM_EXIT_IO || e->io.port != 0x30))
    r->rc = -1;
  return NULL;
}

/* A vCPU run from one thread, then another, then the first again: on BT
   the vCPU's stack (and under AddressSanitizer its fake frames) goes from
   thread to thread, and the handlers run on each. */
static void test_handler_threads(void **state) {
  (void)state;
  struct vmmt t;
  io_guest(&t, E_LOOP);
  struct thread_probe p = {.want = pthread_self()};
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, thread_handler, &p));
  vmmt_run_to_port(t.vcpu, 0x30);
  struct thread_round r = {.vcpu = t.vcpu, .p = &p};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, thread_round_run, &r), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_ok(r.rc);
  p.want = pthread_self();
  vmmt_run_to_port(t.vcpu, 0x30);
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(p.calls, 12);
  assert_int_equal(p.elsewhere, 0);
  expect_loop_zeros(&t);
  vmmt_fini(&t);
}

/* A handler that runs a vCPU of another VM to the end of its guest: on BT
   the inner vCPU's dispatcher runs on the outer vCPU's stack and enters
   its own (docs/bt.md), and under AddressSanitizer the callouts' stack
   switches nest. Both guests end as they do alone. */
struct nest_probe {
  unsigned calls;
  struct vmmt *inner; /* run on the first call, if set */
};

static int nest_handler(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                        bool is_write, void *opaque) {
  struct nest_probe *p = opaque;
  (void)vcpu, (void)port;
  if (p->calls++ == 0 && p->inner != NULL)
    run_loop(p->inner->vcpu);
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

static void test_handler_runs_vcpu(void **state) {
  (void)state;
  struct vmmt outer, inner;
  io_guest(&outer, E_LOOP);
  io_guest(&inner, E_LOOP);
  struct nest_probe p = {.inner = &inner}, q = {0};
  assert_ok(vmm_io_register(outer.vm, VMM_IO_PORT, 0x10, 8, nest_handler, &p));
  assert_ok(vmm_io_register(inner.vm, VMM_IO_PORT, 0x10, 8, nest_handler, &q));
  run_loop(outer.vcpu);
  assert_int_equal(p.calls, 12);
  assert_int_equal(q.calls, 12);
  expect_loop_zeros(&outer);
  expect_loop_zeros(&inner);
  vmmt_fini(&inner);
  vmmt_fini(&outer);
}

/* Handlers get a thread's default stack, 8 MiB (on BT the vCPU's own):
   6 MiB of it in one frame, in each call. */
static __attribute__((noinline)) unsigned use_stack(size_t n) {
  char buf[n];
  memset(buf, 0x5a, n);
  __asm__ volatile("" ::"r"(buf) : "memory");
  return (unsigned char)buf[n - 1];
}

static int stack_handler(vmm_vcpu *vcpu, uint64_t port, void *data,
                         uint32_t len, bool is_write, void *opaque) {
  unsigned *calls = opaque;
  (void)vcpu, (void)port;
  *calls += use_stack(6u << 20) == 0x5a;
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

static void test_handler_stack_size(void **state) {
  (void)state;
  struct vmmt t;
  unsigned calls = 0;
  io_guest(&t, E_LOOP);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, stack_handler, &calls));
  run_loop(t.vcpu);
  assert_int_equal(calls, 12);
  expect_loop_zeros(&t);
  vmmt_fini(&t);
}

/* LeakSanitizer reports a leaked block with the stack that allocated it,
   and takes a block whose allocation stack does not reach the caller of
   malloc() for one a coroutine allocated and treats it as reachable: a leak
   in a handler must still record its caller, on BT from the vCPU's own
   stack (docs/bt.md). Only an AddressSanitizer build records the stacks. */
struct alloc_probe {
  unsigned calls;
  size_t min_frames; /* of each block's allocation stack */
};

static int alloc_handler(vmm_vcpu *vcpu, uint64_t port, void *data,
                         uint32_t len, bool is_write, void *opaque) {
  struct alloc_probe *p = opaque;
  (void)vcpu, (void)port;
  void *block = malloc(64);
  assert_non_null(block);
#ifdef IO_ASAN
  void *trace[8];
  int tid;
  size_t n = __asan_get_alloc_stack(block, trace, 8, &tid);
  if (p->calls == 0 || n < p->min_frames)
    p->min_frames = n;
#endif
  free(block);
  p->calls++;
  if (!is_write)
    memset(data, 0, len);
  return 0;
}

static void test_handler_alloc_stack(void **state) {
  (void)state;
#ifndef IO_ASAN
  print_message("skipped: needs AddressSanitizer (./build.sh sanitize)\n");
  skip();
#endif
  struct vmmt t;
  struct alloc_probe p = {0};
  io_guest(&t, E_LOOP);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x10, 8, alloc_handler, &p));
  vmmt_run_to_port(t.vcpu, 0x30);
  assert_int_equal(p.calls, 4);
  /* malloc() and at least the handler that called it. */
  assert_true(p.min_frames >= 2);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* Registration while vCPUs run                                             */

struct counter {
  atomic_uint_fast64_t calls;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wait (yielding) until *v reaches at least want; fail after 20 s. */
static void wait_at_least(atomic_uint_fast64_t *v, uint64_t want) {
  uint64_t t0 = now_ns();
  while (atomic_load(v) < want) {
    if (now_ns() - t0 > 20000000000ull)
      fail_msg("waited 20 s for %llu calls, saw %llu", (unsigned long long)want,
               (unsigned long long)atomic_load(v));
    sched_yield();
  }
}

/* A vCPU running entry_hammer on its own thread until stopped. Ports 0x40
   and 0x42 without a handler are reads the caller completes (with 0). */
struct hammer {
  vmm_vcpu *vcpu;
  pthread_t thread;
  atomic_bool stop;
  int rc; /* a run error, or 1000 + an unexpected exit reason */
};

static void *hammer_run(void *arg) {
  struct hammer *h = arg;
  while (!atomic_load(&h->stop)) {
    struct vmm_exit *e = NULL;
    int rc = vmm_vcpu_run(h->vcpu, &e);
    if (rc < 0) {
      h->rc = rc;
      break;
    }
    if (e->reason == VMM_EXIT_STOPPED)
      continue;
    if (e->reason == VMM_EXIT_IO && !e->io.is_write &&
        (e->io.port == 0x40 || e->io.port == 0x42))
      continue;
    h->rc = 1000 + (int)e->reason;
    break;
  }
  return NULL;
}

#define RIG_MAX 2

/* A VM whose vCPUs all run entry_hammer. */
struct rig {
  vmm_vm *vm;
  unsigned n;
  struct hammer h[RIG_MAX];
};

static void rig_init(struct rig *g, unsigned n, bool fenced) {
  memset(g, 0, sizeof(*g));
  g->n = n;
  g->vm = vmmt_vm_create(n, 0);
  if (fenced) {
    /* As without membarrier(2): readers fence. Set before any reader. */
    g->vm->pio.fence = true;
    g->vm->mmio.fence = true;
  }
  assert_ok(vmm_mem_slot_add(g->vm, 0, VMMT_RAM, NULL, 0, NULL));
  size_t len;
  uint8_t *bin = vmmt_read_bin("io64", &len);
  assert_ok(vmm_mem_write(g->vm, VMMT_CODE, bin, len));
  free(bin);
  for (unsigned i = 0; i < n; i++) {
    assert_ok(vmm_vcpu_create(g->vm, i, &g->h[i].vcpu));
    vmmt_setup_vcpu(g->h[i].vcpu, VMM_MODE_LONG64, 3);
    vmmt_set_ip_sp(g->h[i].vcpu, VMMT_CODE + E_HAMMER, VMMT_STACK);
  }
}

static void rig_start(struct rig *g) {
  for (unsigned i = 0; i < g->n; i++) {
    atomic_store(&g->h[i].stop, false);
    assert_int_equal(
        pthread_create(&g->h[i].thread, NULL, hammer_run, &g->h[i]), 0);
  }
}

static void rig_stop(struct rig *g) {
  for (unsigned i = 0; i < g->n; i++) {
    atomic_store(&g->h[i].stop, true);
    assert_ok(vmm_vcpu_kick(g->h[i].vcpu));
  }
  for (unsigned i = 0; i < g->n; i++) {
    assert_int_equal(pthread_join(g->h[i].thread, NULL), 0);
    assert_int_equal(g->h[i].rc, 0);
  }
}

/* ------------------------------------------------------------------------ */
/* Signals while a vCPU runs                                                */

/* What the signal handler saw: signals handled, and how many interrupted
   code outside the thread's own stack [sig_lo, sig_hi) (on BT, translated
   code, callouts and handlers, on the vCPU's stack). */
static atomic_uint sig_seen, sig_elsewhere;
static uintptr_t sig_lo, sig_hi;

static void count_signal(int sig, siginfo_t *si, void *ucv) {
  ucontext_t *uc = ucv;
  (void)si;
  uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
  /* A handler uses stack and SSE registers like any other. */
  char buf[16384];
  memset(buf, sig, sizeof(buf));
  __asm__ volatile("xorps %%xmm0, %%xmm0" ::"r"(buf) : "memory", "xmm0");
  atomic_fetch_add(&sig_seen, 1);
  if (sp < sig_lo || sp >= sig_hi)
    atomic_fetch_add(&sig_elsewhere, 1);
}

static int round_handler(vmm_vcpu *vcpu, uint64_t port, void *data,
                         uint32_t len, bool is_write, void *opaque) {
  atomic_uint_fast64_t *calls = opaque;
  (void)vcpu, (void)is_write;
  atomic_fetch_add(&calls[port == 0x42], 1);
  memset(data, 0, len);
  return 0;
}

/* Asynchronous signals the host program sends a thread running a vCPU are
   handled there and change nothing the guest sees (docs/bt.md, "Execution
   model"): a vCPU hammers two handled ports while the main thread queues
   a real-time signal (not SIGRTMIN, KVM's kick) to its thread every 50
   us, 400 times. Every signal is
   handled, the guest's round counter matches the handlers' calls, and on
   BT some signals arrive on the vCPU's own stack. */
static void test_signals_while_running(void **state) {
  (void)state;
  enum { SIGNALS = 400 };
  struct sigaction sa = {.sa_sigaction = count_signal,
                         .sa_flags = SA_SIGINFO | SA_RESTART},
                   old;
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGRTMIN + 1, &sa, &old), 0);
  atomic_store(&sig_seen, 0);
  atomic_store(&sig_elsewhere, 0);
  struct rig g;
  atomic_uint_fast64_t calls[2] = {0, 0};
  rig_init(&g, 1, false);
  assert_ok(vmm_io_register(g.vm, VMM_IO_PORT, 0x40, 4, round_handler, calls));
  rig_start(&g);
  pthread_attr_t attr;
  void *lo;
  size_t size;
  assert_int_equal(pthread_getattr_np(g.h[0].thread, &attr), 0);
  assert_int_equal(pthread_attr_getstack(&attr, &lo, &size), 0);
  pthread_attr_destroy(&attr);
  sig_lo = (uintptr_t)lo;
  sig_hi = sig_lo + size;
  vmmt_wait_running(g.h[0].vcpu);
  for (unsigned i = 0; i < SIGNALS; i++) {
    assert_int_equal(pthread_kill(g.h[0].thread, SIGRTMIN + 1), 0);
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
  for (unsigned i = 0; i < 10000 && atomic_load(&sig_seen) < SIGNALS; i++)
    usleep(1000);
  rig_stop(&g);
  assert_int_equal(sigaction(SIGRTMIN + 1, &old, NULL), 0);
  assert_int_equal(atomic_load(&sig_seen), SIGNALS);
  if (vmmt_engine == VMM_ENGINE_BT)
    assert_true(atomic_load(&sig_elsewhere) > 0);
  /* Each round is in al,0x40; in al,0x42; inc rbx. */
  uint64_t rounds = vmmt_reg(g.h[0].vcpu, VMM_REG_RBX);
  uint64_t c40 = atomic_load(&calls[0]), c42 = atomic_load(&calls[1]);
  assert_true(rounds > 0);
  assert_true(c42 == rounds || c42 == rounds + 1);
  assert_true(c40 == c42 || c40 == c42 + 1);
  assert_ok(vmm_vm_destroy(g.vm));
}

/* Handler state that the test poisons once vmm_io_unregister() returned
   (as a device would free it). A call that finds it poisoned, on entry or
   when it ends, is a call after unregistering. */
#define RACE_LIVE 0x11fe11feu
#define RACE_DEAD 0xdeaddeadu

struct race {
  atomic_uint late;      /* calls seen after unregistering returned */
  atomic_uint busy_seen; /* rounds that unregistered a running handler */
};

struct race_dev {
  atomic_uint magic;
  atomic_bool busy;
  atomic_uint_fast64_t calls;
  struct race *race;
};

static int race_handler(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                        bool is_write, void *opaque) {
  struct race_dev *d = opaque;
  (void)vcpu, (void)addr, (void)is_write;
  if (atomic_load(&d->magic) != RACE_LIVE)
    atomic_fetch_add(&d->race->late, 1);
  atomic_store(&d->busy, true);
  atomic_fetch_add(&d->calls, 1);
  /* Stay a while (5 us), so that unregistering mostly finds the handler
     running, as a device's slow handler would be. */
  uint64_t t0 = now_ns();
  while (now_ns() - t0 < 5000)
    ;
  if (atomic_load(&d->magic) != RACE_LIVE)
    atomic_fetch_add(&d->race->late, 1);
  atomic_store(&d->busy, false);
  memset(data, 0x5a, len);
  return 0;
}

/* Two vCPUs hammer port 0x40 while the main thread registers a handler,
   waits until it is being called, unregisters it and poisons its state,
   again and again: no call may come after unregistering returned. */
static void race_rounds(bool fenced) {
  enum { ROUNDS = 300 };
  struct rig g;
  struct race r = {0};
  struct race_dev *devs = calloc(ROUNDS, sizeof(*devs));
  assert_non_null(devs);
  rig_init(&g, RIG_MAX, fenced);
  rig_start(&g);
  for (unsigned i = 0; i < ROUNDS; i++) {
    struct race_dev *d = &devs[i];
    atomic_init(&d->magic, RACE_LIVE);
    d->race = &r;
    assert_ok(vmm_io_register(g.vm, VMM_IO_PORT, 0x40, 1, race_handler, d));
    wait_at_least(&d->calls, 2);
    if (atomic_load(&d->busy))
      atomic_fetch_add(&r.busy_seen, 1);
    assert_ok(vmm_io_unregister(g.vm, VMM_IO_PORT, 0x40));
    atomic_store(&d->magic, RACE_DEAD);
  }
  /* Hammering goes on without a handler for a while. */
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  rig_stop(&g);
  assert_int_equal(atomic_load(&r.late), 0);
  /* The race was real: handlers were running when unregistering began. */
  assert_true(atomic_load(&r.busy_seen) > 0);
  free(devs);
  assert_ok(vmm_vm_destroy(g.vm));
}

static void test_unregister_races_dispatch(void **state) {
  (void)state;
  race_rounds(false);
}

/* The same with the fallback for hosts without membarrier(2). */
static void test_unregister_races_dispatch_fenced(void **state) {
  (void)state;
  race_rounds(true);
}

static int count_handler(vmm_vcpu *vcpu, uint64_t addr, void *data,
                         uint32_t len, bool is_write, void *opaque) {
  struct counter *c = opaque;
  (void)vcpu, (void)addr, (void)is_write;
  atomic_fetch_add(&c->calls, 1);
  memset(data, 0, len);
  return 0;
}

/* The "accesses" of the range at base in the VM's statistics (-1: no such
   range), and the number of ranges in that space. */
static long long range_accesses(vmm_vm *vm, enum vmm_io_space space,
                                uint64_t base, size_t *nranges) {
  json_t *s = NULL;
  assert_ok(vmm_vm_stats_json(vm, &s));
  json_t *arr = json_object_get(json_object_get(s, "io"),
                                space == VMM_IO_PORT ? "port" : "mmio");
  assert_true(json_is_array(arr));
  long long n = -1;
  size_t i;
  json_t *r;
  json_array_foreach(arr, i, r) {
    if ((uint64_t)json_integer_value(json_object_get(r, "base")) == base)
      n = json_integer_value(json_object_get(r, "accesses"));
  }
  if (nranges != NULL)
    *nranges = json_array_size(arr);
  json_decref(s);
  return n;
}

/* Many registrations and unregistrations on both buses while two vCPUs
   dispatch: the range at 0x40, in place all along while the tables around
   it are replaced (and its index in them moves), counts every access
   exactly; a range registered anew counts from zero; and every `in` the
   guest executed reached the handler exactly once. */
static void test_register_churn_hits(void **state) {
  (void)state;
  enum { CHURN = 200 };
  struct rig g;
  struct counter a = {0}, b[CHURN + 1];
  memset(b, 0, sizeof(b));
  rig_init(&g, RIG_MAX, false);
  assert_ok(vmm_io_register(g.vm, VMM_IO_PORT, 0x40, 1, count_handler, &a));
  rig_start(&g);
  for (unsigned i = 0; i < CHURN; i++) {
    uint64_t lo = 0x20 - i % 16, hi = 0x100 + i, mmio = MMIO_BASE + i * 0x1000;
    assert_ok(vmm_io_register(g.vm, VMM_IO_PORT, hi, 1, dummy, NULL));
    assert_ok(vmm_io_register(g.vm, VMM_IO_PORT, lo, 1, dummy, NULL));
    assert_ok(vmm_io_register(g.vm, VMM_IO_MMIO, mmio, 0x1000, dummy, NULL));
    assert_ok(
        vmm_io_register(g.vm, VMM_IO_PORT, 0x42, 1, count_handler, &b[i]));
    if (i % 16 == 0)
      wait_at_least(&b[i].calls, 1);
    assert_ok(vmm_io_unregister(g.vm, VMM_IO_PORT, 0x42));
    assert_ok(vmm_io_unregister(g.vm, VMM_IO_PORT, lo));
    if (i % 2 == 0) /* keep every other: the tables grow */
      assert_ok(vmm_io_unregister(g.vm, VMM_IO_PORT, hi));
  }
  struct counter *last = &b[CHURN];
  assert_ok(vmm_io_register(g.vm, VMM_IO_PORT, 0x42, 1, count_handler, last));
  wait_at_least(&last->calls, 100);
  rig_stop(&g);

  size_t nports, nmmio;
  uint64_t a_calls = atomic_load(&a.calls);
  assert_int_equal(range_accesses(g.vm, VMM_IO_PORT, 0x40, &nports), a_calls);
  assert_int_equal(range_accesses(g.vm, VMM_IO_PORT, 0x42, NULL),
                   atomic_load(&last->calls));
  assert_int_equal(nports, 2 + CHURN / 2);
  assert_int_equal(range_accesses(g.vm, VMM_IO_MMIO, MMIO_BASE, &nmmio), 0);
  assert_int_equal(nmmio, CHURN);
  /* rbx counts each vCPU's finished rounds: the `in` of a round that was
     interrupted may have been served already. */
  uint64_t rounds = 0;
  for (unsigned i = 0; i < g.n; i++)
    rounds += vmmt_reg(g.h[i].vcpu, VMM_REG_RBX);
  assert_true(a_calls >= rounds && a_calls <= rounds + g.n);

  /* Resetting zeroes the live counters; counting goes on from there. */
  assert_ok(vmm_vm_stats_reset(g.vm));
  assert_int_equal(range_accesses(g.vm, VMM_IO_PORT, 0x40, NULL), 0);
  rig_start(&g);
  wait_at_least(&a.calls, a_calls + 100);
  rig_stop(&g);
  assert_int_equal(range_accesses(g.vm, VMM_IO_PORT, 0x40, NULL),
                   atomic_load(&a.calls) - a_calls);
  assert_ok(vmm_vm_destroy(g.vm));
}

/* A handler that blocks until the test opens the gate (unless pass is
   set: then it only counts); nest_port: first dispatch that port on the
   same vCPU, from inside. */
struct gate {
  pthread_mutex_t m;
  pthread_cond_t c;
  bool entered, open, pass;
  unsigned calls;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  uint64_t nest_port;
  int nest_rc;
};

static void gate_init(struct gate *g, vmm_vm *vm) {
  memset(g, 0, sizeof(*g));
  assert_int_equal(pthread_mutex_init(&g->m, NULL), 0);
  assert_int_equal(pthread_cond_init(&g->c, NULL), 0);
  g->vm = vm;
  g->nest_rc = 1;
}

static void gate_fini(struct gate *g) {
  pthread_cond_destroy(&g->c);
  pthread_mutex_destroy(&g->m);
}

static int gate_handler(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                        bool is_write, void *opaque) {
  struct gate *g = opaque;
  (void)addr, (void)is_write;
  if (g->nest_port != 0) {
    uint8_t byte = 0;
    g->nest_rc =
        vmm__iobus_dispatch(&g->vm->pio, vcpu, g->nest_port, &byte, 1, false);
  }
  pthread_mutex_lock(&g->m);
  g->calls++;
  g->entered = true;
  pthread_cond_broadcast(&g->c);
  while (!g->open && !g->pass)
    pthread_cond_wait(&g->c, &g->m);
  pthread_mutex_unlock(&g->m);
  memset(data, 0, len);
  return 0;
}

struct unreg_call {
  vmm_vm *vm;
  uint64_t port;
  atomic_bool done;
  int rc;
};

static void *unreg_run(void *arg) {
  struct unreg_call *u = arg;
  u->rc = vmm_io_unregister(u->vm, VMM_IO_PORT, u->port);
  atomic_store(&u->done, true);
  return NULL;
}

/* With the gate's handler blocked in dispatch, unregistering its range
   from another thread does not return until the handler did; registration
   on the VM's other bus and on another VM is not held up meanwhile. */
static void expect_unregister_waits(struct gate *g, uint64_t port) {
  pthread_mutex_lock(&g->m);
  while (!g->entered)
    pthread_cond_wait(&g->c, &g->m);
  pthread_mutex_unlock(&g->m);
  struct unreg_call u = {.vm = g->vm, .port = port};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, unreg_run, &u), 0);
  /* Until the thread is inside vmm_io_unregister() (it holds the bus's
     writer lock for the whole change) nothing is being waited for: a
     thread started late would find the gate open and test nothing. */
  uint64_t t0 = now_ns();
  while (pthread_mutex_trylock(&g->vm->pio.lock) == 0) {
    pthread_mutex_unlock(&g->vm->pio.lock);
    if (now_ns() - t0 > 20000000000ull)
      fail_msg("the unregistering thread did not start within 20 s");
    sched_yield();
  }
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  assert_false(atomic_load(&u.done));
  assert_ok(vmm_io_register(g->vm, VMM_IO_MMIO, 0xe0000000, 1, dummy, NULL));
  assert_ok(vmm_io_unregister(g->vm, VMM_IO_MMIO, 0xe0000000));
  vmm_vm *other = vmmt_vm_create(1, 0);
  assert_ok(vmm_io_register(other, VMM_IO_PORT, port, 1, dummy, NULL));
  assert_ok(vmm_io_unregister(other, VMM_IO_PORT, port));
  assert_ok(vmm_vm_destroy(other));
  assert_false(atomic_load(&u.done));
  pthread_mutex_lock(&g->m);
  g->open = true;
  pthread_cond_broadcast(&g->c);
  pthread_mutex_unlock(&g->m);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_true(atomic_load(&u.done));
  assert_ok(u.rc);
}

/* A vCPU in a slow handler (here: one that blocks) is waited for. */
static void test_unregister_waits_for_vcpu(void **state) {
  (void)state;
  struct rig r;
  struct gate g;
  rig_init(&r, 1, false);
  gate_init(&g, r.vm);
  assert_ok(vmm_io_register(r.vm, VMM_IO_PORT, 0x40, 1, gate_handler, &g));
  rig_start(&r);
  expect_unregister_waits(&g, 0x40);
  /* The guest goes on reading port 0x40, unhandled now: wait for three
     I/O exits, the third of which comes after a round's inc rbx (whether
     or not the engine counts the gate's handled access among them). */
  uint64_t t0 = now_ns();
  for (;;) {
    struct vmm_vcpu_stats st;
    vmm_vcpu_stats_init(&st);
    assert_ok(vmm_vcpu_stats_get(r.h[0].vcpu, &st));
    if (st.exits[VMM_EXIT_IO] >= 3)
      break;
    if (now_ns() - t0 > 20000000000ull)
      fail_msg("the guest did not go on after unregistering (%llu I/O exits)",
               (unsigned long long)st.exits[VMM_EXIT_IO]);
    sched_yield();
  }
  rig_stop(&r);
  assert_int_equal(g.calls, 1);
  assert_true(vmmt_reg(r.h[0].vcpu, VMM_REG_RBX) > 0);
  gate_fini(&g);
  assert_ok(vmm_vm_destroy(r.vm));
}

struct anon_call {
  vmm_vm *vm;
  vmm_vcpu *vcpu; /* NULL: a dispatch without a vCPU */
  uint64_t port;
  int rc;
};

static void *anon_run(void *arg) {
  struct anon_call *a = arg;
  uint8_t byte = 0;
  a->rc = vmm__iobus_dispatch(&a->vm->pio, a->vcpu, a->port, &byte, 1, false);
  return NULL;
}

/* Dispatch from a thread without a vCPU (devices' tests, the harnesses) is
   waited for the same way. */
static void test_unregister_waits_for_anon(void **state) {
  (void)state;
  vmm_vm *vm = vmmt_vm_create(1, 0);
  struct gate g;
  gate_init(&g, vm);
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x40, 1, gate_handler, &g));
  struct anon_call a = {.vm = vm, .port = 0x40};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, anon_run, &a), 0);
  expect_unregister_waits(&g, 0x40);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_ok(a.rc);
  a.rc = 1;
  anon_run(&a);
  assert_int_equal(a.rc, VMM_IO_DECLINED);
  assert_int_equal(g.calls, 1);
  gate_fini(&g);
  assert_ok(vmm_vm_destroy(vm));
}

/* A dispatch nested in a handler on the same vCPU: the vCPU stays marked
   from the outer dispatch's start to its end, while the inner one runs
   and after it ended. Unregistering the outer range waits for both.
   block_inner: the inner handler blocks, else the outer one after the
   inner dispatch returned. */
static void nested_case(bool block_inner) {
  vmm_vm *vm = vmmt_vm_create(1, 0);
  vmm_vcpu *vcpu;
  assert_ok(vmm_vcpu_create(vm, 0, &vcpu));
  struct gate outer, inner;
  gate_init(&outer, vm);
  gate_init(&inner, vm);
  outer.nest_port = 0x47;
  outer.pass = block_inner;
  inner.pass = !block_inner;
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x46, 1, gate_handler, &outer));
  assert_ok(vmm_io_register(vm, VMM_IO_PORT, 0x47, 1, gate_handler, &inner));
  /* The thread dispatches as the (not running) vCPU would. */
  struct anon_call a = {.vm = vm, .vcpu = vcpu, .port = 0x46};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, anon_run, &a), 0);
  expect_unregister_waits(block_inner ? &inner : &outer, 0x46);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_ok(a.rc);
  assert_ok(outer.nest_rc);
  assert_int_equal(outer.calls, 1);
  assert_int_equal(inner.calls, 1);
  /* The mark was cleared when the outer dispatch ended: a writer does not
     wait for it any more. */
  assert_ok(vmm_io_unregister(vm, VMM_IO_PORT, 0x47));
  gate_fini(&outer);
  gate_fini(&inner);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_unregister_waits_nested(void **state) {
  (void)state;
  nested_case(false);
  nested_case(true);
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc, argv);
  if (rc != 0)
    return rc;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_register_bad_args),
      cmocka_unit_test(test_register_overlap),
      cmocka_unit_test(test_unregister),
      cmocka_unit_test(test_port_dispatch_sizes),
      cmocka_unit_test(test_port_loop),
      cmocka_unit_test(test_mmio_dispatch_sizes),
      cmocka_unit_test(test_string_io),
      cmocka_unit_test(test_string_io_unhandled),
      cmocka_unit_test(test_string_io_declined_midway),
      cmocka_unit_test(test_string_in_declined_midway),
      cmocka_unit_test(test_unhandled_reads),
      cmocka_unit_test(test_unhandled_reads_exit_handler),
      cmocka_unit_test(test_straddling_access),
      cmocka_unit_test(test_declined),
      cmocka_unit_test(test_handler_error),
      cmocka_unit_test(test_register_from_handler),
      cmocka_unit_test(test_handler_fpu),
      cmocka_unit_test(test_handler_gs),
      cmocka_unit_test(test_handler_threads),
      cmocka_unit_test(test_handler_under_debugger),
      cmocka_unit_test(test_handler_backtrace),
      cmocka_unit_test(test_handler_alloc_stack),
      cmocka_unit_test(test_handler_runs_vcpu),
      cmocka_unit_test(test_handler_stack_size),
      cmocka_unit_test(test_signals_while_running),
      cmocka_unit_test(test_unregister_races_dispatch),
      cmocka_unit_test(test_unregister_races_dispatch_fenced),
      cmocka_unit_test(test_register_churn_hits),
      cmocka_unit_test(test_unregister_waits_for_vcpu),
      cmocka_unit_test(test_unregister_waits_for_anon),
      cmocka_unit_test(test_unregister_waits_nested),
  };
  return vmmt_run_group(tests);
}
