/*
 * Tests of what only the binary-translation engine offers or must prove:
 * exact instruction counts and limits, exception exits for every vector
 * with precise state, single-step and breakpoints, self-modifying code,
 * kicks that interrupt endless loops and enormous rep counts, the soft
 * TLB's dirty logging, MMIO read-modify-write, confinement of hostile
 * code, the translation-cache bound, CPUID, and AUTO picking BT where KVM
 * cannot run kernel code natively. Guest code: tests/snippets/bt64.asm.
 */
#include <sys/mman.h>
#include <ucontext.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"

/* The translator's hand encoders, checked against Zydis's decoder. */
#include "cpu/bt/emit.h"

/* Not public: whether KVM runs guest kernel code natively (kvm/probe.c). */
bool vmm__kvm_runs_kernel_natively(const struct vmm_vm_config *cfg);

#define E_COUNT 0x000
#define E_REP_HUGE 0x040
#define E_FAULT_MID 0x080
#define E_UD 0x0c0
#define E_DE 0x0d0
#define E_GP 0x0e0
#define E_INT3 0x100
#define E_STEPS 0x120
#define E_CALL_FN 0x140
#define E_SMC_SELF 0x160
#define E_MMIO_RMW 0x180
#define E_DIRTY 0x1a0
#define E_SPIN 0x1e0
#define E_AVX 0x1f0
#define E_MID_INSN 0x200
#define E_WILD 0x220
#define E_FPU 0x240
#define E_CPUID 0x280
#define E_LOOP_MEM 0x2a0
#define E_CROSS 0x2c0
#define E_BITMEM 0x2e0
#define E_MMIO_LOOP 0x320
#define E_SPIN_PATCH 0x340
#define E_PATCHER 0x360
#define E_TF 0x380
#define E_FPU_CALLOUTS 0x3a0
#define E_INVLPG 0x480
#define E_SELF_LOOP 0x600
#define E_SELF_LOOP_SPIN 0x651
#define E_WARM_SPIN 0x680
#define E_WARM_SPIN_A 0x6c1
#define E_MANY_INTS 0x700
#define E_DIRTY_ONCE 0xd00
#define E_REGION_SPIN 0xe00
#define E_REGION_SPIN_LOOP 0xea4
#define E_REGION_SMC 0xf00

static void setup(struct vmmt *t, uint64_t entry) {
  vmmt_init(t, VMM_MODE_LONG64, 0);
  vmmt_load_snippet(t, "bt64", VMMT_CODE, entry);
}

/* A BT VM with these code forms (vmm_vm_config.bt_flags), RAM at 0 and
   vCPU 0 in a mode. */
static void init_bt(struct vmmt *t, uint32_t bt_flags, enum vmm_cpu_mode mode) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_BT;
  cfg.bt_flags = bt_flags;
  memset(t, 0, sizeof(*t));
  assert_ok(vmm_vm_create(&cfg, &t->vm));
  assert_ok(vmm_mem_slot_add(t->vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(t->vm, 0, &t->vcpu));
  vmmt_setup_vcpu(t->vcpu, mode, 0);
}

static uint64_t reg(struct vmmt *t, enum vmm_reg r) {
  return vmmt_reg(t->vcpu, r);
}

static void set_rip(struct vmmt *t, uint64_t rip) {
  assert_ok(vmm_vcpu_reg_write(t->vcpu, VMM_REG_RIP, rip));
}

static uint64_t count(struct vmmt *t) {
  uint64_t n = 0;
  assert_ok(vmm_vcpu_insn_count(t->vcpu, &n));
  return n;
}

/* ------------------------------------------------------------------------ */
/* Engine choice                                                            */

static void test_auto_engine(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  vmm_vm *vm;
  assert_ok(vmm_vm_create(&cfg, &vm));
  enum vmm_engine_kind want = VMM_ENGINE_BT;
  if (vmm_engine_available(VMM_ENGINE_KVM) &&
      vmm__kvm_runs_kernel_natively(&cfg))
    want = VMM_ENGINE_KVM;
  print_message("AUTO picked %s\n", vmm_engine_name(vmm_vm_engine(vm)));
  assert_int_equal(vmm_vm_engine(vm), want);
  assert_ok(vmm_vm_destroy(vm));
}

static void test_cache_size_config(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_BT;
  vmm_vm *vm = NULL;
  cfg.bt_cache_size = 4096; /* far too small to hold a fragment */
  assert_vmm(vmm_vm_create(&cfg, &vm), VMM_EINVAL);
  cfg.bt_cache_size = (size_t)1 << 40;
  assert_vmm(vmm_vm_create(&cfg, &vm), VMM_EINVAL);
  /* BT has no controllers of its own: VMM_VM_IRQCHIP gets the library's
     user-space platform. */
  cfg.flags = VMM_VM_IRQCHIP | VMM_VM_PIT;
  cfg.bt_cache_size = 0;
  assert_ok(vmm_vm_create(&cfg, &vm));
  assert_non_null(vmm_dev_find(vm, "pic"));
  assert_non_null(vmm_dev_find(vm, "pit"));
  assert_ok(vmm_vm_destroy(vm));
}

/* bt_flags: unknown bits refused; the portable code forms are a per-VM
   choice, so two VMs made with different flags run side by side (and
   reach the same state). */
static void test_bt_flags_config(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  assert_int_equal(cfg.bt_flags, 0);
  cfg.engine = VMM_ENGINE_BT;
  vmm_vm *vm = NULL;
  cfg.bt_flags = 1u << 7;
  assert_vmm(vmm_vm_create(&cfg, &vm), VMM_EINVAL);
  struct vmmt t[2];
  for (int k = 0; k < 2; k++) {
    memset(&t[k], 0, sizeof(t[k]));
    t[k].ram = VMMT_RAM;
    cfg.bt_flags = k ? VMM_BT_NO_LOOP | VMM_BT_NO_PEXT : 0;
    assert_ok(vmm_vm_create(&cfg, &t[k].vm));
    assert_ok(vmm_mem_slot_add(t[k].vm, 0, t[k].ram, NULL, 0, NULL));
    assert_ok(vmm_vcpu_create(t[k].vm, 0, &t[k].vcpu));
    vmmt_setup_vcpu(t[k].vcpu, VMM_MODE_LONG64, 0);
    vmmt_load_snippet(&t[k], "bt64", VMMT_CODE, E_LOOP_MEM);
  }
  for (int k = 0; k < 2; k++) {
    vmmt_run_expect(t[k].vcpu, VMM_EXIT_HLT);
    /* [0x30008] = [0x30000] + ecx, ecx = 1000 .. 1: the last value 1. */
    uint64_t v = 0;
    assert_ok(vmm_mem_read(t[k].vm, 0x30008, &v, 8));
    assert_int_equal(v, 1);
    assert_int_equal(reg(&t[k], VMM_REG_RCX), 0);
    /* After its hlt (25 bytes on). */
    assert_int_equal(reg(&t[k], VMM_REG_RIP), VMMT_CODE + E_LOOP_MEM + 25);
  }
  for (int k = 0; k < 2; k++)
    vmmt_fini(&t[k]);
}

/* ------------------------------------------------------------------------ */
/* Counting, limits, determinism                                            */

static void test_count_exact(void **state) {
  (void)state;
  for (int round = 0; round < 2; round++) {
    struct vmmt t;
    setup(&t, E_COUNT);
    /* Asking before the first run switches counting on. */
    assert_int_equal(count(&t), 0);
    vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
    assert_int_equal(reg(&t, VMM_REG_RAX), 500500);
    /* mov, xor, 1000 x (add, dec, jnz), hlt */
    assert_int_equal(count(&t), 3003);
    vmmt_fini(&t);
  }
}

static void test_count_unavailable(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_COUNT);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  uint64_t n;
  assert_vmm(vmm_vcpu_insn_count(t.vcpu, &n), VMM_ENOTSUP);
  /* A limit still works exactly from the moment it is set. */
  set_rip(&t, VMMT_CODE + E_COUNT);
  assert_ok(vmm_vcpu_set_insn_limit(t.vcpu, 5));
  vmmt_run_expect(t.vcpu, VMM_EXIT_INSN_LIMIT);
  /* mov, xor, add, dec, jnz: back at the add. */
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_COUNT + 7);
  assert_int_equal(reg(&t, VMM_REG_RCX), 999);
  vmmt_fini(&t);
}

static void test_insn_limit(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_COUNT);
  assert_vmm(vmm_vcpu_set_insn_limit(t.vcpu, 1ull << 62), VMM_EINVAL);
  assert_ok(vmm_vcpu_set_insn_limit(t.vcpu, 1000));
  vmmt_run_expect(t.vcpu, VMM_EXIT_INSN_LIMIT);
  assert_int_equal(count(&t), 1000);
  /* 2 + 332 x 3 + 2: the 333rd iteration stopped before its jnz. */
  assert_int_equal(reg(&t, VMM_REG_RCX), 1000 - 333);
  assert_int_equal(reg(&t, VMM_REG_RAX), (1000 + 668) * 333 / 2);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_COUNT + 12);
  /* The limit is spent: the next run goes on to the end. */
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(count(&t), 3003);
  assert_int_equal(reg(&t, VMM_REG_RAX), 500500);
  /* Limits of 1 instruction at a time step exactly. */
  set_rip(&t, VMMT_CODE + E_STEPS);
  for (int i = 0; i < 3; i++) {
    assert_ok(vmm_vcpu_set_insn_limit(t.vcpu, 1));
    vmmt_run_expect(t.vcpu, VMM_EXIT_INSN_LIMIT);
  }
  assert_int_equal(reg(&t, VMM_REG_RAX), 6);
  assert_int_equal(count(&t), 3006);
  vmmt_fini(&t);
}

/* Map gigabytes 1 to 511 (0x40000000 up to 512 GiB) onto a 2 MiB RAM slot
   at 0x400000, so a rep of 2^40 bytes stays in RAM for long: even at the
   speed of a host memset (tens of GB/s) it takes seconds to leave. */
static void alias_gigabyte(struct vmmt *t) {
  assert_ok(vmm_mem_slot_add(t->vm, 0x400000, 2u << 20, NULL, 0, NULL));
  uint64_t e[512];
  for (int i = 0; i < 512; i++)
    e[i] = 0x400000 | 0x83; /* P, RW, PS */
  /* The mode helper's page directory for gigabyte 1 ... */
  uint64_t pd = VMMT_TABLES + 0x5000 + 0x1000;
  assert_ok(vmm_mem_write(t->vm, pd, e, sizeof(e)));
  /* ... serves every gigabyte but the first in its PDPT. */
  assert_ok(vmm_mem_read(t->vm, VMMT_TABLES + 0x4000, e, 8));
  for (int g = 1; g < 512; g++)
    e[g] = pd | 0x7; /* P, RW, US */
  assert_ok(vmm_mem_write(t->vm, VMMT_TABLES + 0x4000, e, sizeof(e)));
}

static void test_rep_huge_limit(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_REP_HUGE);
  alias_gigabyte(&t);
  assert_ok(vmm_vcpu_set_insn_limit(t.vcpu, 100000));
  vmmt_run_expect(t.vcpu, VMM_EXIT_INSN_LIMIT);
  /* Four instructions, then one per rep iteration. */
  assert_int_equal(count(&t), 100000);
  assert_int_equal(reg(&t, VMM_REG_RCX), (1ull << 40) - (100000 - 4));
  assert_int_equal(reg(&t, VMM_REG_RDI), 0x40000000 + (100000 - 4));
  uint64_t rip = reg(&t, VMM_REG_RIP);
  assert_int_equal(rip, VMMT_CODE + E_REP_HUGE + 18);
  uint8_t b[2];
  assert_ok(vmm_mem_read(t.vm, 0x400000 + 100000 - 5, b, 2));
  assert_int_equal(b[0], 0x5a);
  assert_int_equal(b[1], 0);
  vmmt_fini(&t);
}

struct kicker {
  vmm_vcpu *vcpu;
  unsigned ms;
};

static void *kick_later(void *arg) {
  struct kicker *k = arg;
  struct timespec ts = {k->ms / 1000, (long)(k->ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  vmm_vcpu_kick(k->vcpu);
  return NULL;
}

static void run_kicked(struct vmmt *t, unsigned ms) {
  pthread_t th;
  struct kicker k = {t->vcpu, ms};
  assert_int_equal(pthread_create(&th, NULL, kick_later, &k), 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  vmmt_run_expect(t->vcpu, VMM_EXIT_STOPPED);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  pthread_join(th, NULL);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  /* The stop is prompt: well under a second after the kick. */
  assert_true(s < ms / 1000.0 + 1.0);
}

static void test_kick_endless(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_SPIN);
  run_kicked(&t, 50);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_SPIN);
  /* Again, after the loop was linked to itself. */
  run_kicked(&t, 20);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_SPIN);
  vmmt_fini(&t);
}

/* Self loops keep their scratch registers borrowed around the back edge
   (docs/bt.md): the guest values must be back when the loop ends, when a
   kick unlinks it, and after it was linked to its head again. */
static void check_kept_regs(struct vmmt *t, uint64_t rip) {
  assert_int_equal(reg(t, VMM_REG_RCX), 0x1111);
  static const enum vmm_reg r8[] = {VMM_REG_R8,  VMM_REG_R9,  VMM_REG_R10,
                                    VMM_REG_R11, VMM_REG_R12, VMM_REG_R13,
                                    VMM_REG_R14, VMM_REG_R15};
  for (unsigned i = 0; i < 8; i++)
    assert_int_equal(reg(t, r8[i]), 0x8888 + 0x1111 * i);
  assert_int_equal(reg(t, VMM_REG_RDX), 0);
  assert_int_equal(reg(t, VMM_REG_RSI), 300000);
  assert_int_equal(reg(t, VMM_REG_RDI), 0x30000);
  assert_int_equal(reg(t, VMM_REG_RIP), VMMT_CODE + rip);
}

static void test_kick_self_loop(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_SELF_LOOP);
  run_kicked(&t, 50);
  check_kept_regs(&t, E_SELF_LOOP_SPIN);
  uint64_t n1 = 0, n2 = 0, sum = 0;
  assert_ok(vmm_mem_read(t.vm, 0x30000, &sum, 8));
  assert_int_equal(sum, 300000);
  assert_ok(vmm_mem_read(t.vm, 0x30008, &n1, 8));
  assert_true(n1 > 0);
  run_kicked(&t, 20);
  check_kept_regs(&t, E_SELF_LOOP_SPIN);
  assert_ok(vmm_mem_read(t.vm, 0x30008, &n2, 8));
  assert_true(n2 > n1);
  vmmt_fini(&t);
}

/* Links that leave rcx, r10 and r11 borrowed into the next fragment's warm
   entry: a kick leaves through such a link's stub. */
static void test_kick_warm_links(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_WARM_SPIN);
  uint64_t a1 = 0, b1 = 0, a2 = 0;
  run_kicked(&t, 50);
  check_kept_regs(&t, E_WARM_SPIN_A);
  assert_ok(vmm_mem_read(t.vm, 0x30010, &a1, 8));
  assert_ok(vmm_mem_read(t.vm, 0x30018, &b1, 8));
  assert_true(a1 > 0);
  assert_int_equal(a1, b1); /* stopped at .a: both blocks ran as often */
  run_kicked(&t, 20);
  check_kept_regs(&t, E_WARM_SPIN_A);
  assert_ok(vmm_mem_read(t.vm, 0x30010, &a2, 8));
  assert_true(a2 > a1);
  vmmt_fini(&t);
}

/* A loop of three TUs whose fragments keep registers it never names
   borrowed across the links between them (loop regions): the guest values
   must be back after the counted loop ends through a fall-through, and
   when a kick leaves through the back edge's stub, before and after the
   loop was linked again. */
static void test_kick_region(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_REGION_SPIN);
  uint64_t sum = 0, n1 = 0, n2 = 0, twice = 0;
  run_kicked(&t, 50);
  check_kept_regs(&t, E_REGION_SPIN_LOOP);
  assert_ok(vmm_mem_read(t.vm, 0x30020, &sum, 8));
  assert_int_equal(sum, 300000);
  assert_ok(vmm_mem_read(t.vm, 0x30028, &n1, 8));
  assert_ok(vmm_mem_read(t.vm, 0x30030, &twice, 8));
  assert_true(n1 > 0);
  assert_int_equal(twice, 2 * n1);
  run_kicked(&t, 20);
  check_kept_regs(&t, E_REGION_SPIN_LOOP);
  assert_ok(vmm_mem_read(t.vm, 0x30028, &n2, 8));
  assert_ok(vmm_mem_read(t.vm, 0x30030, &twice, 8));
  assert_true(n2 > n1);
  assert_int_equal(twice, 2 * n2);
  vmmt_fini(&t);
}

/* Links of a loop region that no fragment will ever take (docs/bt.md,
   "Loop regions"): tc.c patches a link that leaves a set borrowed only to a
   fragment keeping the same set, so one whose target is translated with
   another set stays on its stub, and every pass through it goes by the
   dispatcher, for as long as both fragments live. */
static unsigned stuck_region_links(struct vmmt *t) {
  struct bt_vcpu *b = t->vcpu->engine;
  unsigned n = 0;
  for (unsigned i = 0; i < b->tc.nlinks; i++) {
    const struct bt_link *l = &b->tc.links[i];
    if (l->kset == 0 || !l->from->valid)
      continue;
    for (unsigned k = 0; k < b->tc.nfrags; k++) {
      const struct bt_frag *f = &b->tc.frags[k];
      if (f->valid && f->rip == l->target_rip && f->key == l->from->key &&
          f->cs_base == l->from->cs_base && f->kset != l->kset)
        n++;
    }
  }
  return n;
}

/* The guest patches a block of a loop region that never ran (bytes no
   fragment covers: no invalidation) and then runs through it: the
   fragments translated before and after the patch must still agree on
   the region's set, or the links between them are refused for good. */
static void test_region_smc(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_REGION_SMC);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  uint64_t m[3];
  assert_ok(vmm_mem_read(t.vm, 0x30000, m, sizeof(m)));
  assert_int_equal(m[0], 1001000);
  assert_int_equal(m[1], 6000);
  assert_int_equal(m[2], 1000);
  assert_int_equal(reg(&t, VMM_REG_RCX), 0x1111);
  assert_int_equal(reg(&t, VMM_REG_R9), 0x9999);
  assert_int_equal(stuck_region_links(&t), 0);
  vmmt_fini(&t);
}

/* 32-bit code with CS base 0x800: RIP wraps from 0xffffffff to 0 in the
   middle of the linear page 0, where a loop of 18 instructions (two TUs)
   starts at RIP 0xffffffe0 and ends at RIP 0xc. Its TUs must agree on its
   region even so (TU 2 starts at RIP 0), or the link between them is
   refused at every iteration. The results are KVM's for the same code. */
static void test_region_rip_wrap(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_PROT32, 0);
  static const uint8_t head[] = {
      0xbf, 0x00, 0x00, 0x03, 0x00, /* mov edi, 0x30000 */
      0xb9, 0x11, 0x11, 0x00, 0x00, /* mov ecx, 0x1111 */
      0xba, 0xe8, 0x03, 0x00, 0x00, /* mov edx, 1000 */
      0x31, 0xdb,                   /* xor ebx, ebx */
      0x31, 0xf6,                   /* xor esi, esi */
      0xe9, 0xc8, 0x00, 0x00, 0x00, /* jmp top (linear 0x7e0) */
  };
  static const uint8_t loop[] = {
      0x8b, 0x07,             /* top: mov eax, [edi] */
      0x01, 0xd0,             /* add eax, edx */
      0x89, 0x07,             /* mov [edi], eax */
      0x8b, 0x6f, 0x08,       /* mov ebp, [edi + 8] */
      0x01, 0xd5,             /* add ebp, edx */
      0x89, 0x6f, 0x08,       /* mov [edi + 8], ebp */
      0x01, 0xee,             /* add esi, ebp */
      0x8b, 0x47, 0x10,       /* mov eax, [edi + 16] */
      0x31, 0xf0,             /* xor eax, esi */
      0x89, 0x47, 0x10,       /* mov [edi + 16], eax */
      0x0f, 0x1f, 0x40, 0x00, /* nop */
      0x0f, 0x1f, 0x40, 0x00, /* nop (the 12th: RIP 0 is next) */
      0x83, 0xc6, 0x07,       /* add esi, 7 */
      0x8b, 0x47, 0x0c,       /* mov eax, [edi + 12] */
      0x01, 0xf0,             /* add eax, esi */
      0x89, 0x47, 0x0c,       /* mov [edi + 12], eax */
      0x4a,                   /* dec edx */
      0x75, 0xd2,             /* jnz top */
      0x89, 0x4f, 0x14,       /* mov [edi + 20], ecx */
      0xf4,                   /* hlt */
  };
  assert_ok(vmm_mem_write(t.vm, 0x700, head, sizeof(head)));
  assert_ok(vmm_mem_write(t.vm, 0x7e0, loop, sizeof(loop)));
  struct vmm_sregs sr;
  assert_ok(vmm_vcpu_get_sregs(t.vcpu, &sr));
  sr.cs.base = 0x800;
  assert_ok(vmm_vcpu_set_sregs(t.vcpu, &sr));
  set_rip(&t, 0xffffff00); /* linear 0x700 */
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  uint32_t m[6];
  assert_ok(vmm_mem_read(t.vm, 0x30000, m, sizeof(m)));
  assert_int_equal(m[0], 500500);
  assert_int_equal(m[2], 500500);
  assert_int_equal(m[3], 0x33a5a4e2);
  assert_int_equal(m[4], 0x0d0da3f0);
  assert_int_equal(m[5], 0x1111);
  assert_int_equal(reg(&t, VMM_REG_RSI), 0x13e60074);
  assert_int_equal(reg(&t, VMM_REG_RIP), 0x12);
  assert_int_equal(stuck_region_links(&t), 0);
  vmmt_fini(&t);
}

/* SHA-256's message schedule (as gcc -O2 compiles bench/workloads.c): a
   loop region of 25 instructions whose second and third memory accesses
   each follow a flag writer by a few register instructions. Cut every 12
   instructions, the second access started a TU (nothing to hoist its
   lookup above) and the back edge sat alone in a third TU; region_cut
   cuts before instructions 10 and 19, the flag writers both lookups
   hoist above. The loop
   is entered at its sixth instruction first, so the TU translated first
   starts there, and must end at the same cut as the loop head's. The
   results are the schedule's, computed here. */
static const uint8_t sched_loop[] = {
    0x89, 0xc8,             /* mov eax, ecx */
    0x41, 0x89, 0xca,       /* mov r10d, ecx */
    0x41, 0x89, 0xf0,       /* mov r8d, esi */
    0x8b, 0x32,             /* mov esi, [rdx] */
    0x41, 0xc1, 0xc2, 0x0d, /* rol r10d, 13 */
    0xc1, 0xc0, 0x0f,       /* rol eax, 15 (the entry) */
    0x48, 0x83, 0xc2, 0x04, /* add rdx, 4 */
    0x44, 0x31, 0xd0,       /* xor eax, r10d */
    0xc1, 0xe9, 0x0a,       /* shr ecx, 10 */
    0x41, 0x89, 0xf2,       /* mov r10d, esi */
    0x31, 0xc8,             /* xor eax, ecx */
    0x89, 0xf1,             /* mov ecx, esi */
    0x41, 0xc1, 0xc2, 0x0e, /* rol r10d, 14 */
    0x03, 0x42, 0x1c,       /* add eax, [rdx + 0x1c] */
    0xc1, 0xc9, 0x07,       /* ror ecx, 7 */
    0x44, 0x31, 0xd1,       /* xor ecx, r10d */
    0x41, 0x89, 0xf2,       /* mov r10d, esi */
    0x41, 0xc1, 0xea, 0x03, /* shr r10d, 3 */
    0x44, 0x31, 0xd1,       /* xor ecx, r10d */
    0x01, 0xc8,             /* add eax, ecx */
    0x89, 0xf9,             /* mov ecx, edi */
    0x41, 0x8d, 0x3c, 0x00, /* lea edi, [r8 + rax] */
    0x89, 0x7a, 0x38,       /* mov [rdx + 0x38], edi */
    0x49, 0x39, 0xd1,       /* cmp r9, rdx */
    0x75, 0xb7,             /* jnz (the loop's first instruction) */
    0xf4,                   /* hlt */
};

static uint32_t rol32(uint32_t x, unsigned n) {
  return x << n | x >> (32 - n);
}

static void test_region_cuts(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 0);
  const uint64_t code = VMMT_CODE, data = 0x30000, entry = 14;
  const unsigned iters = 48;
  uint32_t w[16 + 64];
  for (unsigned k = 0; k < 16 + 64; k++)
    w[k] = k < 16 ? 0x9e3779b9u * (k + 1) : 0;
  assert_ok(vmm_mem_write(t.vm, data, w, sizeof(w)));
  assert_ok(vmm_mem_write(t.vm, code, sched_loop, sizeof(sched_loop)));
  uint32_t a = 0x1234567, c = 0x89abcdef, si = 0x13579bdf, di = 0x2468ace0;
  uint32_t r8 = 0x5555, r10 = 0x7777;
  uint64_t d = data;
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RAX, a));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RCX, c));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RSI, si));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RDI, di));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_R8, r8));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_R10, r10));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RDX, d));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_R9, d + 4 * iters));
  set_rip(&t, code + entry);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);

  /* The same, here (first iteration from the entry on). */
  for (unsigned it = 0; it < iters; it++) {
    if (it > 0) {
      a = c;
      r10 = c;
      r8 = si;
      si = w[(d - data) / 4];
      r10 = rol32(r10, 13);
    }
    a = rol32(a, 15);
    d += 4;
    a ^= r10;
    c >>= 10;
    r10 = si;
    a ^= c;
    c = si;
    r10 = rol32(r10, 14);
    a += w[(d - data) / 4 + 7];
    c = rol32(c, 25);
    c ^= r10;
    r10 = si >> 3;
    c ^= r10;
    a += c;
    c = di;
    di = r8 + a;
    w[(d - data) / 4 + 14] = di;
  }
  uint32_t got[16 + 64];
  assert_ok(vmm_mem_read(t.vm, data, got, sizeof(got)));
  assert_memory_equal(got, w, sizeof(w));
  assert_int_equal(reg(&t, VMM_REG_RAX), a);
  assert_int_equal(reg(&t, VMM_REG_RCX), c);
  assert_int_equal(reg(&t, VMM_REG_RDI), di);
  assert_int_equal(reg(&t, VMM_REG_RIP), code + sizeof(sched_loop));

  /* The loop's fragments: from the entry to the first cut, then the
     cuts' TUs. */
  struct bt_vcpu *b = t.vcpu->engine;
  static const struct {
    uint64_t off;
    unsigned ninsn;
  } want[] = {{entry, 5}, {0, 10}, {30, 9}, {57, 6}};
  for (unsigned k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
    unsigned found = 0;
    for (unsigned f = 0; f < b->tc.nfrags; f++) {
      const struct bt_frag *fr = &b->tc.frags[f];
      if (fr->valid && fr->rip == code + want[k].off) {
        assert_int_equal(fr->ninsn, want[k].ninsn);
        assert_int_not_equal(fr->kset, 0);
        found++;
      }
    }
    assert_int_equal(found, 1);
  }
  assert_int_equal(stuck_region_links(&t), 0);
  vmmt_fini(&t);
}

/* Loops whose first instruction accesses memory, where the flags are the
   back edge's `cmp` (docs/bt.md, "Flags at a loop head"): a region (two
   jccs, 13 instructions) loading at its head, and a self loop storing at
   its head, each reading CF right after the access and faulting there
   (unmapped) once. */
static const uint8_t head_loops[] = {
    0xf8,                         /* clc */
    0x8b, 0x06,                   /* rtop: mov eax, [rsi] */
    0x0f, 0x92, 0xc3,             /* setc bl */
    0x01, 0x1f,                   /* add [rdi], ebx */
    0x48, 0x8d, 0x76, 0x04,       /* lea rsi, [rsi + 4] */
    0x01, 0xc2,                   /* add edx, eax */
    0xa9, 0x01, 0x00, 0x00, 0x00, /* test eax, 1 */
    0x74, 0x04,                   /* jz .even */
    0x41, 0x83, 0xc0, 0x01,       /* add r8d, 1 */
    0x41, 0x83, 0xfd, 0x14,       /* .even: cmp r13d, 20 */
    0x49, 0x0f, 0x44, 0xf6,       /* cmove rsi, r14 */
    0x41, 0xff, 0xc5,             /* inc r13d */
    0x45, 0x39, 0xe5,             /* cmp r13d, r12d */
    0x72, 0xd8,                   /* jb rtop */
    0xf4,                         /* hlt */
    0xf8,                         /* clc */
    0x89, 0x1e,                   /* stop: mov [rsi], ebx */
    0x0f, 0x92, 0xc3,             /* setc bl */
    0x41, 0x01, 0xd9,             /* add r9d, ebx */
    0x48, 0x8d, 0x76, 0x04,       /* lea rsi, [rsi + 4] */
    0x41, 0x83, 0xfd, 0x14,       /* cmp r13d, 20 */
    0x49, 0x0f, 0x44, 0xf6,       /* cmove rsi, r14 */
    0x41, 0xff, 0xc5,             /* inc r13d */
    0x45, 0x39, 0xe5,             /* cmp r13d, r12d */
    0x72, 0xe4,                   /* jb stop */
    0xf4,                         /* hlt */
};
#define HL_REGION 0x00
#define HL_SELF 0x2a

static uint64_t flags_of_cmp(uint32_t a, uint32_t b);

struct reg_val {
  enum vmm_reg r;
  uint64_t v;
};

/* Load code at VMMT_CODE, make #PF an exit, set the registers and RIP. */
static void start_loop(struct vmmt *t, const uint8_t *code, size_t len,
                       uint64_t rip, const struct reg_val *rv, size_t n) {
  assert_ok(vmm_mem_write(t->vm, VMMT_CODE, code, len));
  assert_ok(vmm_vcpu_set_exception_exits(t->vcpu, 1u << 14));
  for (size_t k = 0; k < n; k++)
    assert_ok(vmm_vcpu_reg_write(t->vcpu, rv[k].r, rv[k].v));
  set_rip(t, rip);
}

static const struct bt_frag *frag_at(struct vmmt *t, uint64_t rip) {
  struct bt_vcpu *b = t->vcpu->engine;
  for (unsigned f = 0; f < b->tc.nfrags; f++)
    if (b->tc.frags[f].valid && b->tc.frags[f].rip == rip)
      return &b->tc.frags[f];
  return NULL;
}

/* Whether a link into f goes to its flags entry. */
static bool flags_linked(struct vmmt *t, const struct bt_frag *f) {
  struct bt_vcpu *b = t->vcpu->engine;
  for (unsigned i = 0; i < b->tc.nlinks; i++) {
    const struct bt_link *l = &b->tc.links[i];
    if (l->to != f || f->kflags == 0)
      continue;
    if (l->head ? l->head == f->kflags
                : l->flen == f->flen && l->fbytes == f->fbytes)
      return true;
  }
  return false;
}

static void run_head_loop(uint32_t bt_flags, uint64_t entry) {
  struct vmmt t;
  init_bt(&t, bt_flags, VMM_MODE_LONG64);
  const uint64_t code = VMMT_CODE, data = 0x30000, cell = 0x2f000;
  const uint64_t unmapped = 0x7f0000000000ull;
  uint32_t w[64];
  for (unsigned k = 0; k < 64; k++)
    w[k] = 0x9e3779b9u * (k + 1);
  assert_ok(vmm_mem_write(t.vm, data, w, sizeof(w)));
  const struct reg_val rv[] = {
      {VMM_REG_RSI, data},     {VMM_REG_RDI, cell}, {VMM_REG_R12, 40},
      {VMM_REG_R14, unmapped}, {VMM_REG_RBX, 0},    {VMM_REG_RDX, 0},
      {VMM_REG_R8, 0},         {VMM_REG_R9, 0},     {VMM_REG_R13, 0}};
  start_loop(&t, head_loops, sizeof(head_loops), code + entry, rv,
             sizeof(rv) / sizeof(rv[0]));
  /* The 22nd pass faults at the head, entered by the back edge: the
     frame holds that `cmp`'s flags, and every pass before from the back
     edge read CF set after the access (the first, from the clc, clear). */
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.vector, 14);
  assert_int_equal(e->fault.cr2, unmapped);
  assert_int_equal(reg(&t, VMM_REG_RIP), code + entry + 1);
  assert_int_equal(reg(&t, VMM_REG_R13), 21);
  assert_int_equal(reg(&t, VMM_REG_RFLAGS) & 0x8d5, flags_of_cmp(21, 40));
  uint32_t ones = 0;
  if (entry == HL_REGION)
    assert_ok(vmm_mem_read(t.vm, cell, &ones, 4));
  else
    ones = (uint32_t)reg(&t, VMM_REG_R9);
  assert_int_equal(ones, 20);
  const struct bt_frag *head = frag_at(&t, code + entry + 1);
  assert_non_null(head);
  assert_true(flags_linked(&t, head));
  /* On from a mapped page: the dispatcher enters at the other copy. */
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RSI, data + 0x80));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_R13), 40);
  if (entry == HL_REGION) {
    assert_ok(vmm_mem_read(t.vm, cell, &ones, 4));
    uint32_t sum = 0, odd = 0;
    for (unsigned k = 0; k < 40; k++) {
      uint32_t v = w[k < 21 ? k : 32 + (k - 21)];
      sum += v;
      odd += v & 1;
    }
    assert_int_equal((uint32_t)reg(&t, VMM_REG_RDX), sum);
    assert_int_equal(reg(&t, VMM_REG_R8), odd);
  } else {
    ones = (uint32_t)reg(&t, VMM_REG_R9);
    uint32_t got[64];
    assert_ok(vmm_mem_read(t.vm, data, got, sizeof(got)));
    /* Each pass stores the CF the one before read. */
    for (unsigned k = 0; k < 40; k++)
      assert_int_equal(got[k < 21 ? k : 32 + (k - 21)], k >= 2);
  }
  assert_int_equal(ones, 39);
  assert_int_equal(stuck_region_links(&t), 0);
  vmmt_fini(&t);
}

/* A region whose cut L is reached by falling through from `test ebx,
   ebx` (ebx = 1: ZF clear), for which its flags entry is made, and by a
   jz from `cmp eax, 5` (ZF set): that link must enter L where the flags
   are left alone. L's load faults on the 21st pass, which comes by the
   jz; setz after the load counts the passes that did. */
static const uint8_t head_mismatch[] = {
    0x8b, 0x06,             /* top: mov eax, [rsi] */
    0x48, 0x8d, 0x76, 0x04, /* lea rsi, [rsi + 4] */
    0x4d, 0x89, 0xfa,       /* mov r10, r15 */
    0x41, 0x83, 0xfd, 0x14, /* cmp r13d, 20 */
    0x4d, 0x0f, 0x44, 0xd6, /* cmove r10, r14 */
    0x83, 0xf8, 0x05,       /* cmp eax, 5 */
    0x74, 0x04,             /* jz L */
    0x85, 0xdb,             /* test ebx, ebx */
    0x74, 0x09,             /* jz X */
    0x41, 0x8b, 0x0a,       /* L: mov ecx, [r10] */
    0x0f, 0x94, 0xc2,       /* setz dl */
    0x41, 0x01, 0xd1,       /* add r9d, edx */
    0x41, 0xff, 0xc5,       /* X: inc r13d */
    0x45, 0x39, 0xe5,       /* cmp r13d, r12d */
    0x72, 0xd5,             /* jb top */
    0xf4,                   /* hlt */
};
#define HM_L 0x1a

static void test_flags_entry_mismatch(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 0);
  const uint64_t code = VMMT_CODE, data = 0x30000, cell = 0x2f000;
  const uint64_t unmapped = 0x7f0000000000ull;
  uint32_t w[40] = {0};
  w[3] = w[7] = w[20] = w[31] = 5;
  assert_ok(vmm_mem_write(t.vm, data, w, sizeof(w)));
  const struct reg_val rv[] = {{VMM_REG_RSI, data},     {VMM_REG_R15, cell},
                               {VMM_REG_R14, unmapped}, {VMM_REG_R12, 40},
                               {VMM_REG_RBX, 1},        {VMM_REG_RDX, 0},
                               {VMM_REG_R9, 0},         {VMM_REG_R13, 0}};
  start_loop(&t, head_mismatch, sizeof(head_mismatch), code, rv,
             sizeof(rv) / sizeof(rv[0]));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.cr2, unmapped);
  assert_int_equal(reg(&t, VMM_REG_RIP), code + HM_L);
  assert_int_equal(reg(&t, VMM_REG_RFLAGS) & 0x8d5, flags_of_cmp(5, 5));
  assert_int_equal(reg(&t, VMM_REG_R9), 2);
  /* The fall-through came in at L's flags entry. */
  const struct bt_frag *l = frag_at(&t, code + HM_L);
  assert_non_null(l);
  assert_true(flags_linked(&t, l));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_R10, cell));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_R9), 4);
  assert_int_equal(reg(&t, VMM_REG_R13), 40);
  vmmt_fini(&t);
}

/* A self loop whose back edge's `cmp` is followed by a `not` of one of
   its registers: its flags cannot be made again at the head, which keeps
   no flags entry, and a fault there still sees them. */
static const uint8_t head_written[] = {
    0xf8,                   /* clc */
    0x89, 0x1e,             /* s: mov [rsi], ebx */
    0x0f, 0x92, 0xc3,       /* setc bl */
    0x41, 0x01, 0xd9,       /* add r9d, ebx */
    0x48, 0x8d, 0x76, 0x04, /* lea rsi, [rsi + 4] */
    0x41, 0x83, 0xfd, 0x0c, /* cmp r13d, 12 */
    0x49, 0x0f, 0x44, 0xf6, /* cmove rsi, r14 */
    0x41, 0xff, 0xc5,       /* inc r13d */
    0x45, 0x39, 0xe5,       /* cmp r13d, r12d */
    0x41, 0xf7, 0xd4,       /* not r12d */
    0x72, 0xe1,             /* jb s */
    0xf4,                   /* hlt */
};

static void test_flags_entry_written(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 0);
  const uint64_t code = VMMT_CODE, data = 0x30000;
  const uint64_t unmapped = 0x7f0000000000ull;
  const struct reg_val rv[] = {{VMM_REG_RSI, data}, {VMM_REG_R14, unmapped},
                               {VMM_REG_R12, 40},   {VMM_REG_RBX, 0},
                               {VMM_REG_R9, 0},     {VMM_REG_R13, 0}};
  start_loop(&t, head_written, sizeof(head_written), code, rv,
             sizeof(rv) / sizeof(rv[0]));
  /* r12 is 40 on odd passes, ~40 on even ones; the 13th's cmp saw 40. */
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.cr2, unmapped);
  assert_int_equal(reg(&t, VMM_REG_RIP), code + 1);
  assert_int_equal(reg(&t, VMM_REG_R13), 13);
  assert_int_equal(reg(&t, VMM_REG_RFLAGS) & 0x8d5, flags_of_cmp(13, 40));
  const struct bt_frag *f = frag_at(&t, code + 1);
  assert_non_null(f);
  assert_false(flags_linked(&t, f));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RSI, data));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_R13), 41);
  assert_int_equal(reg(&t, VMM_REG_R9), 40); /* all passes but the first */
  vmmt_fini(&t);
}

/* A port handler that clobbers every XMM register, as host code may. */
static int xmm_clobber(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                       bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)data, (void)len, (void)is_write;
  (void)opaque;
  __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tpcmpeqd %%xmm1, %%xmm1\n\t"
                   "pcmpeqd %%xmm2, %%xmm2\n\tpcmpeqd %%xmm3, %%xmm3\n\t"
                   "pcmpeqd %%xmm4, %%xmm4\n\tpcmpeqd %%xmm5, %%xmm5\n\t"
                   "pcmpeqd %%xmm6, %%xmm6\n\tpcmpeqd %%xmm7, %%xmm7\n\t"
                   "pcmpeqd %%xmm8, %%xmm8\n\tpcmpeqd %%xmm9, %%xmm9\n\t"
                   "pcmpeqd %%xmm10, %%xmm10\n\tpcmpeqd %%xmm11, %%xmm11\n\t"
                   "pcmpeqd %%xmm12, %%xmm12\n\tpcmpeqd %%xmm13, %%xmm13\n\t"
                   "pcmpeqd %%xmm14, %%xmm14\n\tpcmpeqd %%xmm15, %%xmm15"
                   :
                   :
                   : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                     "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
                     "xmm14", "xmm15");
  return 0;
}

/* The guest's XMM registers before and after its first SSE instruction
   (docs/bt.md, "FPU and SSE state"): set by the host, kept through
   handled port writes whose handler clobbers every XMM register and
   through x87 code after them (the x87 state comes back with fxrstor64,
   which loads XMM too), then read and doubled by the guest. */
static const uint8_t xmm_lazy[] = {
    0xe6, 0x80,                   /* out 0x80, al */
    0xd9, 0xe8,                   /* fld1 */
    0xdd, 0xd8,                   /* fstp st0 */
    0xe6, 0x80,                   /* out 0x80, al */
    0xe6, 0x81,                   /* out 0x81, al (an exit) */
    0xeb, 0x00,                   /* jmp $+2 (ends the TU: no SSE in it) */
    0x66, 0x48, 0x0f, 0x7e, 0xd8, /* movq rax, xmm3 */
    0x66, 0x4c, 0x0f, 0x7e, 0xe3, /* movq rbx, xmm12 */
    0xe6, 0x80,                   /* out 0x80, al */
    0x66, 0x0f, 0xd4, 0xdb,       /* paddq xmm3, xmm3 */
    0xe6, 0x80,                   /* out 0x80, al */
    0xd9, 0xe8,                   /* fld1 */
    0xdd, 0xd8,                   /* fstp st0 */
    0x66, 0x48, 0x0f, 0x7e, 0xd9, /* movq rcx, xmm3 */
    0x66, 0x4c, 0x0f, 0x7e, 0xe2, /* movq rdx, xmm12 */
    0xf4,                         /* hlt */
};

static void test_xmm_lazy(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_LONG64, 0);
  assert_ok(vmm_io_register(t.vm, VMM_IO_PORT, 0x80, 1, xmm_clobber, NULL));
  assert_ok(vmm_mem_write(t.vm, VMMT_CODE, xmm_lazy, sizeof(xmm_lazy)));
  struct vmm_fpu f;
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &f));
  const uint64_t a = 0x1111222233334444ull, c = 0x5555666677778888ull;
  memcpy(f.xmm[3], &a, 8);
  memcpy(f.xmm[12], &c, 8);
  assert_ok(vmm_vcpu_set_fpu(t.vcpu, &f));
  set_rip(&t, VMMT_CODE);
  vmmt_run_expect(t.vcpu, VMM_EXIT_IO);
  struct vmm_fpu g;
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &g));
  assert_memory_equal(g.xmm, f.xmm, sizeof(f.xmm));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_RAX), a);
  assert_int_equal(reg(&t, VMM_REG_RBX), c);
  assert_int_equal(reg(&t, VMM_REG_RCX), 2 * a);
  assert_int_equal(reg(&t, VMM_REG_RDX), c);
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &g));
  uint64_t v;
  memcpy(&v, g.xmm[3], 8);
  assert_int_equal(v, 2 * a);
  memcpy(&v, g.xmm[12], 8);
  assert_int_equal(v, c);
  vmmt_fini(&t);
}

/* The same in 32-bit protected mode (flat), where the head's access
   that misses goes to an MMIO handler: the state it sees, RFLAGS
   included, is an exit's. A self loop and a region (two jccs). */
static const uint8_t head_loops32[] = {
    0xf8,                                     /* clc */
    0x8b, 0x06,                               /* s: mov eax, [esi] */
    0x0f, 0x92, 0xc0,                         /* setc al */
    0x0f, 0xb6, 0xc0,                         /* movzx eax, al */
    0x01, 0xc5,                               /* add ebp, eax */
    0x8d, 0x34, 0xbb,                         /* lea esi, [ebx + edi*4] */
    0x83, 0xff, 0x14,                         /* cmp edi, 20 */
    0x0f, 0x44, 0xf2,                         /* cmove esi, edx */
    0x47,                                     /* inc edi */
    0x39, 0xcf,                               /* cmp edi, ecx */
    0x72, 0xe8,                               /* jb s */
    0xf4,                                     /* hlt */
    0xf8,                                     /* clc */
    0x8b, 0x06,                               /* r: mov eax, [esi] */
    0x0f, 0x92, 0xc0,                         /* setc al */
    0x0f, 0xb6, 0xc0,                         /* movzx eax, al */
    0x01, 0xc5,                               /* add ebp, eax */
    0xf7, 0xc7, 0x01, 0x00, 0x00, 0x00,       /* test edi, 1 */
    0x74, 0x07,                               /* jz .even */
    0x83, 0x83, 0x00, 0x04, 0x00, 0x00, 0x01, /* add dword [ebx + 0x400], 1 */
    0x8d, 0x34, 0xbb, /* .even: lea esi, [ebx + edi*4] */
    0x83, 0xff, 0x14, /* cmp edi, 20 */
    0x0f, 0x44, 0xf2, /* cmove esi, edx */
    0x47,             /* inc edi */
    0x39, 0xcf,       /* cmp edi, ecx */
    0x72, 0xd9,       /* jb r */
    0xf4,             /* hlt */
};
#define HL32_SELF 0x00
#define HL32_REGION 0x1a
#define HL32_MMIO 0xd0000000u

struct mmio_seen {
  unsigned n;
  uint64_t rip, rflags;
};

static int mmio_state(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                      bool is_write, void *opaque) {
  (void)addr, (void)is_write;
  struct mmio_seen *m = opaque;
  m->n++;
  assert_ok(vmm_vcpu_reg_read(vcpu, VMM_REG_RIP, &m->rip));
  assert_ok(vmm_vcpu_reg_read(vcpu, VMM_REG_RFLAGS, &m->rflags));
  memset(data, 0x5a, len);
  return 0;
}

static void run_head_loop32(uint32_t bt_flags, uint64_t entry) {
  struct vmmt t;
  init_bt(&t, bt_flags, VMM_MODE_PROT32);
  struct mmio_seen seen = {0};
  assert_ok(
      vmm_io_register(t.vm, VMM_IO_MMIO, HL32_MMIO, 0x1000, mmio_state, &seen));
  const uint64_t code = VMMT_CODE, data = 0x30000;
  const struct reg_val rv[] = {{VMM_REG_RSI, data},      {VMM_REG_RBX, data},
                               {VMM_REG_RDX, HL32_MMIO}, {VMM_REG_RCX, 40},
                               {VMM_REG_RDI, 0},         {VMM_REG_RBP, 0}};
  start_loop(&t, head_loops32, sizeof(head_loops32), code + entry, rv,
             sizeof(rv) / sizeof(rv[0]));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  /* The 22nd pass's load, entered by the back edge, went to MMIO. */
  assert_int_equal(seen.n, 1);
  assert_int_equal(seen.rip, code + entry + 1);
  assert_int_equal(seen.rflags & 0x8d5, flags_of_cmp(21, 40));
  assert_int_equal(reg(&t, VMM_REG_RBP), 39); /* CF set after every pass's
                                                 load but the first */
  assert_int_equal(reg(&t, VMM_REG_RDI), 40);
  if (entry == HL32_REGION) {
    uint32_t odd = 0;
    assert_ok(vmm_mem_read(t.vm, data + 0x400, &odd, 4));
    assert_int_equal(odd, 20);
  }
  const struct bt_frag *head = frag_at(&t, code + entry + 1);
  assert_non_null(head);
  assert_true(flags_linked(&t, head));
  vmmt_fini(&t);
}

static void test_flags_entry(void **state) {
  (void)state;
  for (unsigned v = 0; v < 2; v++) {
    uint32_t fl = v ? VMM_BT_NO_LOOP | VMM_BT_NO_PEXT : 0;
    run_head_loop(fl, HL_REGION);
    run_head_loop(fl, HL_SELF);
    run_head_loop32(fl, HL32_REGION);
    run_head_loop32(fl, HL32_SELF);
  }
}

/* ------------------------------------------------------------------------ */
/* Random loop regions                                                      */

/*
 * Random loops whose bodies span several TUs, run three ways: as they are
 * (loop regions, warm entries, self loops: docs/bt.md), with the portable
 * code forms and kicks at random moments (every kick leaves through a
 * stub), and in counting mode, which has none of these and is the
 * reference. Each body writes a random subset of the registers, so the
 * sets its fragments keep vary (rcx among them or not, one to four), and
 * mixes memory operands walking eight pages, MMIO (callouts in the
 * middle of a fragment), div and cpuid (emulated: they give every
 * register back), stack operations, forward jccs inside the loop and
 * out of it, and an entry into the body's middle. Every register, the
 * data pages and the MMIO accesses must come out the same, and no region
 * link may be refused for good.
 */
#define RL_DATA 0x40000ull
#define RL_RANGE 0x8000ull
#define RL_MMIO 0x40000000ull

struct rl_gen {
  uint8_t buf[8192];
  size_t len;
  uint64_t rng;
  uint16_t w;    /* registers the body may write: not rsp, c or a */
  unsigned c, a; /* loop counter, address register */
  size_t item[64];
  struct {
    size_t at;
    int item; /* -1: the exit */
  } fix[128];
  unsigned nfix;
};

static unsigned rl_rnd(struct rl_gen *g, unsigned n) {
  uint64_t x = g->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  g->rng = x;
  return (unsigned)((x * 0x2545f4914f6cdd1dull >> 32) % n);
}

static void rl_enc(struct rl_gen *g, ZydisMnemonic m, unsigned nops,
                   const ZydisEncoderOperand *ops) {
  ZydisEncoderRequest q;
  memset(&q, 0, sizeof(q));
  q.machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
  q.mnemonic = m;
  q.operand_count = nops;
  if (nops > 0)
    memcpy(q.operands, ops, nops * sizeof(*ops));
  ZyanUSize n = sizeof(g->buf) - g->len;
  assert_true(
      ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&q, g->buf + g->len, &n)));
  g->len += n;
}

static ZydisEncoderOperand rl_r(ZydisRegister r) {
  ZydisEncoderOperand o = {.type = ZYDIS_OPERAND_TYPE_REGISTER};
  o.reg.value = r;
  return o;
}

/* An immediate for an operand of `bits`: Zydis takes narrower ones
   sign-extended. */
static ZydisEncoderOperand rl_i(uint64_t v, unsigned bits) {
  ZydisEncoderOperand o = {.type = ZYDIS_OPERAND_TYPE_IMMEDIATE};
  o.imm.s = bits == 32 ? (int64_t)(int32_t)v : (int64_t)v;
  return o;
}

static ZydisEncoderOperand rl_m(ZydisRegister base, int64_t disp,
                                unsigned size) {
  ZydisEncoderOperand o = {.type = ZYDIS_OPERAND_TYPE_MEMORY};
  o.mem.base = base;
  o.mem.displacement = disp;
  o.mem.size = (ZyanU16)size;
  return o;
}

static ZydisRegister rl_q(unsigned r) {
  return (ZydisRegister)(ZYDIS_REGISTER_RAX + r);
}

static ZydisRegister rl_d(unsigned r) {
  return (ZydisRegister)(ZYDIS_REGISTER_EAX + r);
}

static void rl_2(struct rl_gen *g, ZydisMnemonic m, ZydisEncoderOperand a,
                 ZydisEncoderOperand b) {
  ZydisEncoderOperand ops[2] = {a, b};
  rl_enc(g, m, 2, ops);
}

static void rl_1(struct rl_gen *g, ZydisMnemonic m, ZydisEncoderOperand a) {
  rl_enc(g, m, 1, &a);
}

static unsigned rl_w(struct rl_gen *g) {
  for (;;) {
    unsigned r = rl_rnd(g, 16);
    if (g->w & (1u << r))
      return r;
  }
}

static unsigned rl_read(struct rl_gen *g) {
  for (;;) {
    unsigned r = rl_rnd(g, 16);
    if (r != R_SP && ((g->w & (1u << r)) || r == g->c || r == g->a))
      return r;
  }
}

static void rl_jcc(struct rl_gen *g, unsigned cc, int item) {
  g->buf[g->len++] = 0x0f;
  g->buf[g->len++] = (uint8_t)(0x80 + cc);
  g->fix[g->nfix].at = g->len;
  g->fix[g->nfix++].item = item;
  g->len += 4;
}

/* One item of the body (i of n); false if it does not fit the registers. */
static bool rl_item(struct rl_gen *g, unsigned i, unsigned n) {
  static const ZydisMnemonic alu[] = {ZYDIS_MNEMONIC_ADD, ZYDIS_MNEMONIC_SUB,
                                      ZYDIS_MNEMONIC_XOR, ZYDIS_MNEMONIC_AND,
                                      ZYDIS_MNEMONIC_OR,  ZYDIS_MNEMONIC_ADC,
                                      ZYDIS_MNEMONIC_IMUL};
  bool abcd = (g->w & 0xf) == 0xf;
  unsigned d;
  switch (rl_rnd(g, 18)) {
  case 0:
  case 1:
    rl_2(g, alu[rl_rnd(g, 7)], rl_r(rl_q(rl_w(g))), rl_r(rl_q(rl_read(g))));
    return true;
  case 2: {
    ZydisEncoderOperand m = rl_m(rl_q(rl_read(g)), rl_rnd(g, 100), 8);
    m.mem.index = rl_q(rl_read(g));
    m.mem.scale = (ZyanU8)(1u << rl_rnd(g, 4));
    rl_2(g, ZYDIS_MNEMONIC_LEA, rl_r(rl_q(rl_w(g))), m);
    return true;
  }
  case 3:
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_q(rl_w(g))),
         rl_m(rl_q(g->a), RL_DATA + rl_rnd(g, 256), 8));
    return true;
  case 4:
    rl_2(g, ZYDIS_MNEMONIC_ADD, rl_m(rl_q(g->a), RL_DATA + rl_rnd(g, 256), 8),
         rl_r(rl_q(rl_read(g))));
    return true;
  case 5:
    /* The address register walks the data pages (crossing some). */
    rl_2(g, ZYDIS_MNEMONIC_ADD, rl_r(rl_d(g->a)),
         rl_i(0x1000 + 8 * rl_rnd(g, 64), 32));
    rl_2(g, ZYDIS_MNEMONIC_AND, rl_r(rl_d(g->a)), rl_i(RL_RANGE - 1, 32));
    return true;
  case 6:
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(rl_w(g))),
         rl_m(ZYDIS_REGISTER_NONE, RL_MMIO + 8 * rl_rnd(g, 32), 4));
    return true;
  case 7:
    rl_2(g, ZYDIS_MNEMONIC_MOV,
         rl_m(ZYDIS_REGISTER_NONE, RL_MMIO + 8 * rl_rnd(g, 32), 4),
         rl_r(rl_d(rl_read(g))));
    return true;
  case 8:
    if (!(g->w & (1u << R_AX)) || !(g->w & (1u << R_DX)))
      return false;
    d = rl_w(g);
    if (d == R_AX || d == R_DX)
      return false;
    rl_2(g, ZYDIS_MNEMONIC_XOR, rl_r(rl_d(R_DX)), rl_r(rl_d(R_DX)));
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_q(R_AX)), rl_r(rl_q(rl_read(g))));
    rl_2(g, ZYDIS_MNEMONIC_OR, rl_r(rl_q(d)), rl_i(1, 8));
    rl_1(g, ZYDIS_MNEMONIC_DIV, rl_r(rl_q(d)));
    return true;
  case 9:
    if (!abcd)
      return false;
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(R_AX)), rl_i(1, 32));
    rl_2(g, ZYDIS_MNEMONIC_XOR, rl_r(rl_d(R_CX)), rl_r(rl_d(R_CX)));
    rl_enc(g, ZYDIS_MNEMONIC_CPUID, 0, NULL);
    return true;
  case 10:
    rl_1(g, ZYDIS_MNEMONIC_PUSH, rl_r(rl_q(rl_read(g))));
    rl_1(g, ZYDIS_MNEMONIC_POP, rl_r(rl_q(rl_w(g))));
    return true;
  case 11:
    rl_enc(g, ZYDIS_MNEMONIC_PUSHFQ, 0, NULL);
    rl_1(g, ZYDIS_MNEMONIC_POP, rl_r(rl_q(rl_w(g))));
    return true;
  case 12:
    /* Forward, inside the loop: over the next item or two. */
    if (i + 2 >= n)
      return false;
    rl_2(g, ZYDIS_MNEMONIC_TEST, rl_r(rl_d(rl_read(g))),
         rl_i(1u << rl_rnd(g, 8), 32));
    rl_jcc(g, 4 + rl_rnd(g, 2), (int)(i + 2 + rl_rnd(g, 2)));
    return true;
  case 13:
    /* Forward, out of the loop (rarely taken). */
    rl_2(g, ZYDIS_MNEMONIC_CMP, rl_r(rl_d(rl_read(g))), rl_i(0x7ffffff0, 32));
    rl_jcc(g, 4, -1);
    return true;
  case 14:
    rl_2(g, ZYDIS_MNEMONIC_ROL, rl_r(rl_q(rl_w(g))),
         rl_i(1 + rl_rnd(g, 63), 8));
    return true;
  case 15:
    if (!abcd)
      return false;
    rl_2(g, ZYDIS_MNEMONIC_ADD, rl_r(ZYDIS_REGISTER_AH),
         rl_r(ZYDIS_REGISTER_BL));
    return true;
  case 16:
    rl_2(g, ZYDIS_MNEMONIC_CMOVZ, rl_r(rl_q(rl_w(g))), rl_r(rl_q(rl_read(g))));
    return true;
  default:
    rl_2(g, ZYDIS_MNEMONIC_XCHG, rl_r(rl_q(rl_w(g))), rl_r(rl_q(rl_w(g))));
    return true;
  }
}

/* Program `seed` at offset org of its page; returns its entry offset. */
static size_t rl_program(struct rl_gen *g, uint64_t seed, size_t org) {
  memset(g, 0, sizeof(*g));
  memset(g->buf, 0xcc, sizeof(g->buf));
  g->rng = seed * 0x9e3779b97f4a7c15ull + 1;
  g->len = org;
  do
    g->c = rl_rnd(g, 16);
  while (g->c == R_SP);
  do
    g->a = rl_rnd(g, 16);
  while (g->a == R_SP || g->a == g->c);
  unsigned nw = 2 + rl_rnd(g, 12);
  while (__builtin_popcount(g->w) < (int)nw) {
    unsigned r = rl_rnd(g, 16);
    if (r != R_SP && r != g->c && r != g->a)
      g->w |= (uint16_t)(1u << r);
  }
  for (unsigned r = 0; r < 16; r++)
    if (r != R_SP) {
      uint64_t v = (uint64_t)rl_rnd(g, 1u << 30) << 34 ^ rl_rnd(g, 1u << 30);
      rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_q(r)), rl_i(v, 64));
    }
  rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(g->a)), rl_i(0, 32));
  rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(g->c)), rl_i(50 + rl_rnd(g, 400), 32));
  unsigned n = 8 + rl_rnd(g, 40);
  g->buf[g->len++] = 0xe9; /* into the body's middle */
  g->fix[g->nfix].at = g->len;
  g->fix[g->nfix++].item = (int)rl_rnd(g, n);
  g->len += 4;
  size_t top = g->len;
  for (unsigned i = 0; i < n; i++) {
    g->item[i] = g->len;
    while (!rl_item(g, i, n))
      ;
  }
  g->item[n] = g->len;
  rl_1(g, ZYDIS_MNEMONIC_DEC, rl_r(rl_q(g->c)));
  int32_t back = (int32_t)top - (int32_t)(g->len + 6);
  g->buf[g->len++] = 0x0f; /* jnz top */
  g->buf[g->len++] = 0x85;
  memcpy(g->buf + g->len, &back, 4);
  g->len += 4;
  size_t out = g->len;
  g->buf[g->len++] = 0xf4; /* hlt */
  assert_true(g->len <= sizeof(g->buf));
  for (unsigned k = 0; k < g->nfix; k++) {
    size_t to = g->fix[k].item < 0 ? out : g->item[g->fix[k].item];
    int32_t rel = (int32_t)to - (int32_t)(g->fix[k].at + 4);
    memcpy(g->buf + g->fix[k].at, &rel, 4);
  }
  return org;
}

/* MMIO answering a function of the address and the access's number, and
   hashing the accesses in order. */
struct rl_mmio {
  uint64_t n, hash;
};

static int rl_mmio_fn(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                      bool is_write, void *opaque) {
  (void)vcpu;
  struct rl_mmio *d = opaque;
  uint64_t v = 0;
  if (is_write) {
    memcpy(&v, data, len);
  } else {
    v = addr * 0x9e3779b97f4a7c15ull ^ d->n;
    memcpy(data, &v, len);
  }
  d->hash = (d->hash ^ v ^ addr ^ (is_write ? 1u << 31 : 0)) * 0x100000001b3ull;
  d->n++;
  return 0;
}

struct rl_vm {
  struct vmmt t;
  struct rl_mmio mmio;
  struct vmm_regs regs;
  uint8_t mem[RL_RANGE + 0x100];
};

static void rl_vm_init(struct rl_vm *x, uint32_t bt_flags, bool counting) {
  init_bt(&x->t, bt_flags, VMM_MODE_LONG64);
  assert_ok(vmm_io_register(x->t.vm, VMM_IO_MMIO, RL_MMIO, 0x1000, rl_mmio_fn,
                            &x->mmio));
  if (counting)
    assert_ok(vmm_vcpu_set_insn_limit(x->t.vcpu, 1ull << 40));
}

struct rl_kicker {
  vmm_vcpu *vcpu;
  atomic_bool stop;
  uint64_t rng;
};

static void *rl_kick(void *arg) {
  struct rl_kicker *k = arg;
  while (!atomic_load(&k->stop)) {
    k->rng = k->rng * 6364136223846793005ull + 1442695040888963407ull;
    struct timespec ts = {0, 20000 + (long)(k->rng >> 33) % 200000};
    nanosleep(&ts, NULL);
    vmm_vcpu_kick(k->vcpu);
  }
  return NULL;
}

static void rl_run(struct rl_vm *x, const struct rl_gen *g, size_t entry,
                   bool kicks) {
  static const uint8_t zero[RL_RANGE + 0x100];
  assert_ok(vmm_mem_write(x->t.vm, VMMT_CODE, g->buf, sizeof(g->buf)));
  assert_ok(vmm_mem_write(x->t.vm, RL_DATA, zero, sizeof(zero)));
  x->mmio.n = x->mmio.hash = 0;
  struct vmm_regs r;
  assert_ok(vmm_vcpu_get_regs(x->t.vcpu, &r));
  r.rip = VMMT_CODE + entry;
  r.rsp = VMMT_STACK;
  r.rflags = 2;
  assert_ok(vmm_vcpu_set_regs(x->t.vcpu, &r));
  struct rl_kicker k = {.vcpu = x->t.vcpu, .rng = entry + 1};
  atomic_init(&k.stop, false);
  pthread_t th;
  if (kicks)
    assert_int_equal(pthread_create(&th, NULL, rl_kick, &k), 0);
  struct vmm_exit *e;
  do
    assert_ok(vmm_vcpu_run(x->t.vcpu, &e));
  while (e->reason == VMM_EXIT_STOPPED);
  if (kicks) {
    atomic_store(&k.stop, true);
    pthread_join(th, NULL);
  }
  assert_int_equal(e->reason, VMM_EXIT_HLT);
  assert_ok(vmm_vcpu_get_regs(x->t.vcpu, &x->regs));
  assert_ok(vmm_mem_read(x->t.vm, RL_DATA, x->mem, sizeof(x->mem)));
}

static void test_region_random(void **state) {
  (void)state;
  static struct rl_vm vms[3]; /* as is; portable and kicked; counting */
  rl_vm_init(&vms[0], 0, false);
  rl_vm_init(&vms[1], VMM_BT_NO_LOOP | VMM_BT_NO_PEXT, false);
  rl_vm_init(&vms[2], 0, true);
  for (uint64_t seed = 1; seed <= 120; seed++) {
    struct rl_gen g;
    /* Mostly at the page's start; every fourth runs into the next page,
       so regions end before the page's last 15 bytes. */
    size_t entry = rl_program(&g, seed, seed % 4 ? seed % 7 * 16 : 0xe00);
    for (unsigned v = 0; v < 3; v++)
      rl_run(&vms[v], &g, entry, v == 1);
    for (unsigned v = 0; v < 2; v++) {
      if (memcmp(&vms[v].regs, &vms[2].regs, sizeof(vms[2].regs)) ||
          memcmp(vms[v].mem, vms[2].mem, sizeof(vms[2].mem)) ||
          vms[v].mmio.hash != vms[2].mmio.hash)
        fail_msg("program %llu: run %u differs from counting mode",
                 (unsigned long long)seed, v);
      assert_int_equal(stuck_region_links(&vms[v].t), 0);
    }
  }
  for (unsigned v = 0; v < 3; v++)
    vmmt_fini(&vms[v].t);
}

/* ------------------------------------------------------------------------ */
/* Random loops with memory accesses at their heads                         */

/*
 * Flags entries (docs/bt.md, "Flags at a loop head"), at random: loops
 * whose first instruction accesses memory, ending with a random flag
 * producer (cmp, test, and, or, xor: 8-bit low and high, 16, 32 and
 * 64-bit, register or immediate source), sometimes followed by a write
 * of one of its registers (partial ones included), and a jcc back with a
 * random condition; short bodies are self loops, long ones with forward
 * jccs loop regions whose cuts may start with accesses too. The accesses
 * mix loads, stores, read-modify-writes (some writing all six flags, inc
 * keeping CF), AH..BH, MMIO callouts, x87 and SSE, push from memory (two
 * lookups) and xchg; the writes after the producer include hidden ones
 * (cdq, cbw, lahf, fnstsw ax, mulx). Flag readers (setcc, lahf, pushfq,
 * cmovcc) after accesses hash the flags into a register without writing
 * any; every pass decrements a counter, and
 * when its low bits are zero the address register is pointed at an
 * unmapped page, so the next access faults: often the head's, entered
 * by the back edge. Each fault's registers (RFLAGS included) and the
 * final memory must be those of counting mode, which has no flags
 * entries, with and without the portable code forms and kicks. Leaving
 * out the hit path's rebuild at a flags entry, or tc.c's comparison of
 * the instruction bytes, fails it.
 */
#define FE_UNMAPPED 0x7f0000000000ull

struct fe_gen {
  struct rl_gen g;
  unsigned u, h;
};

static ZydisRegister fe_reg(unsigned r, unsigned bits, bool high) {
  switch (bits) {
  case 8:
    if (high)
      return (ZydisRegister)(ZYDIS_REGISTER_AH + r);
    return r < 4 ? (ZydisRegister)(ZYDIS_REGISTER_AL + r)
                 : (ZydisRegister)(ZYDIS_REGISTER_SPL + (r - 4));
  case 16: return (ZydisRegister)(ZYDIS_REGISTER_AX + r);
  case 32: return rl_d(r);
  default: return rl_q(r);
  }
}

/* A writable register usable next to AH..BH (rax..rbx), or -1. */
static int fe_w_legacy(struct rl_gen *g) {
  if (!(g->w & 0xf))
    return -1;
  for (;;) {
    unsigned r = rl_rnd(g, 4);
    if (g->w & (1u << r))
      return (int)r;
  }
}

/* A memory access through the address register. */
static void fe_access(struct fe_gen *f, bool mmio) {
  struct rl_gen *g = &f->g;
  int64_t d = (int64_t)RL_DATA + rl_rnd(g, 248);
  static const unsigned sz[] = {8, 16, 32, 64};
  unsigned bits = sz[rl_rnd(g, 4)];
  ZydisEncoderOperand m = rl_m(rl_q(g->a), d, bits / 8);
  int hl = g->a < 8 ? fe_w_legacy(g) : -1; /* no REX next to AH..BH */
  switch (rl_rnd(g, 14)) {
  case 9: /* MMIO: a callout in the middle of the fragment */
    if (!mmio) {
      rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(fe_reg(rl_w(g), bits, false)), m);
      break;
    }
    m = rl_m(ZYDIS_REGISTER_NONE, RL_MMIO + 8 * rl_rnd(g, 32), 4);
    if (rl_rnd(g, 2))
      rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(rl_w(g))), m);
    else
      rl_2(g, ZYDIS_MNEMONIC_MOV, m, rl_r(rl_d(rl_read(g))));
    break;
  case 10: { /* x87 from and to memory */
    m.mem.size = 8;
    rl_1(g, ZYDIS_MNEMONIC_FILD, m);
    ZydisEncoderOperand m2 = m;
    m2.mem.displacement = (int64_t)RL_DATA + rl_rnd(g, 248);
    rl_1(g, ZYDIS_MNEMONIC_FISTP, m2);
    break;
  }
  case 11: /* SSE */
    m.mem.size = 8;
    rl_2(g, ZYDIS_MNEMONIC_MOVQ, rl_r(ZYDIS_REGISTER_XMM1), m);
    rl_2(g, ZYDIS_MNEMONIC_PADDQ, rl_r(ZYDIS_REGISTER_XMM1),
         rl_r(ZYDIS_REGISTER_XMM1));
    rl_2(g, ZYDIS_MNEMONIC_MOVQ, rl_r(rl_q(rl_w(g))),
         rl_r(ZYDIS_REGISTER_XMM1));
    break;
  case 12: /* a stack operation with a memory operand: two lookups */
    m.mem.size = 8;
    rl_1(g, ZYDIS_MNEMONIC_PUSH, m);
    rl_1(g, ZYDIS_MNEMONIC_POP, rl_r(rl_q(rl_w(g))));
    break;
  case 13:
    rl_2(g, ZYDIS_MNEMONIC_XCHG, m, rl_r(fe_reg(rl_w(g), bits, false)));
    break;
  case 0:
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(fe_reg(rl_w(g), bits, false)), m);
    break;
  case 1:
    rl_2(g, ZYDIS_MNEMONIC_MOV, m, rl_r(fe_reg(rl_read(g), bits, false)));
    break;
  case 2: /* all six flags written, none read */
    rl_2(g, ZYDIS_MNEMONIC_ADD, m, rl_r(fe_reg(rl_read(g), bits, false)));
    break;
  case 3:
    rl_2(g, ZYDIS_MNEMONIC_ADD, rl_r(fe_reg(rl_w(g), bits, false)), m);
    break;
  case 4: /* CF kept */ rl_1(g, ZYDIS_MNEMONIC_INC, m); break;
  case 5:
    rl_2(g, ZYDIS_MNEMONIC_ADC, m, rl_r(fe_reg(rl_read(g), bits, false)));
    break;
  case 6:
    if (hl >= 0) {
      m.mem.size = 1;
      if (rl_rnd(g, 2))
        rl_2(g, ZYDIS_MNEMONIC_MOV, m, rl_r(fe_reg((unsigned)hl, 8, true)));
      else
        rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(fe_reg((unsigned)hl, 8, true)), m);
      break;
    }
    /* fall through */
  case 7:
    m.mem.size = 1;
    rl_2(g, ZYDIS_MNEMONIC_MOVZX, rl_r(rl_d(rl_w(g))), m);
    break;
  default:
    rl_2(g, ZYDIS_MNEMONIC_CMP, m, rl_r(fe_reg(rl_read(g), bits, false)));
    break;
  }
}

/* The flags into f->h without writing any: h = 2h + r. */
static void fe_hash(struct fe_gen *f, unsigned r) {
  ZydisEncoderOperand m = rl_m(rl_q(r), 0, 8);
  m.mem.index = rl_q(f->h);
  m.mem.scale = 2;
  rl_2(&f->g, ZYDIS_MNEMONIC_LEA, rl_r(rl_q(f->h)), m);
}

static void fe_reader(struct fe_gen *f) {
  struct rl_gen *g = &f->g;
  static const ZydisMnemonic setcc[] = {
      ZYDIS_MNEMONIC_SETB,  ZYDIS_MNEMONIC_SETZ,  ZYDIS_MNEMONIC_SETS,
      ZYDIS_MNEMONIC_SETO,  ZYDIS_MNEMONIC_SETP,  ZYDIS_MNEMONIC_SETBE,
      ZYDIS_MNEMONIC_SETL,  ZYDIS_MNEMONIC_SETLE, ZYDIS_MNEMONIC_SETNB,
      ZYDIS_MNEMONIC_SETNZ, ZYDIS_MNEMONIC_SETNL, ZYDIS_MNEMONIC_SETNLE};
  unsigned r;
  switch (rl_rnd(g, 4)) {
  case 0:
    if (g->w & 1) {
      rl_enc(g, ZYDIS_MNEMONIC_LAHF, 0, NULL);
      if (f->h != R_AX)
        fe_hash(f, R_AX);
      break;
    }
    /* fall through */
  case 1:
    r = rl_w(g);
    rl_enc(g, ZYDIS_MNEMONIC_PUSHFQ, 0, NULL);
    rl_1(g, ZYDIS_MNEMONIC_POP, rl_r(rl_q(r)));
    if (r != f->h)
      fe_hash(f, r);
    break;
  case 2:
    r = rl_w(g);
    rl_2(g, ZYDIS_MNEMONIC_CMOVZ, rl_r(rl_q(r)), rl_r(rl_q(rl_read(g))));
    break;
  default: {
    int hl = fe_w_legacy(g);
    if (hl >= 0 && rl_rnd(g, 2)) {
      rl_1(g, setcc[rl_rnd(g, 12)], rl_r(fe_reg((unsigned)hl, 8, true)));
      r = (unsigned)hl;
    } else {
      r = rl_w(g);
      rl_1(g, setcc[rl_rnd(g, 12)], rl_r(fe_reg(r, 8, false)));
    }
    if (r != f->h)
      fe_hash(f, r);
    break;
  }
  }
}

/* A write of register r that leaves the flags alone. */
static void fe_write(struct fe_gen *f, unsigned r) {
  struct rl_gen *g = &f->g;
  switch (rl_rnd(g, 12)) {
  case 6:
    if (r == R_AX) {
      static const ZydisMnemonic ext[] = {
          ZYDIS_MNEMONIC_CBW, ZYDIS_MNEMONIC_CWDE, ZYDIS_MNEMONIC_CDQE};
      rl_enc(g, ext[rl_rnd(g, 3)], 0, NULL);
      break;
    }
    /* fall through */
  case 7: {
    ZydisEncoderOperand ops[3] = {rl_r(rl_q(r)), rl_r(rl_q(rl_read(g))),
                                  rl_i(1 + rl_rnd(g, 63), 8)};
    rl_enc(g, ZYDIS_MNEMONIC_RORX, 3, ops);
    break;
  }
  case 8: {
    /* mulx: rdx, hidden */
    unsigned o = rl_w(g);
    ZydisEncoderOperand ops[3] = {rl_r(rl_q(r)), rl_r(rl_q(o)),
                                  rl_r(rl_q(rl_read(g)))};
    if (o == r)
      ops[1] = ops[0];
    rl_enc(g, ZYDIS_MNEMONIC_MULX, 3, ops);
    break;
  }
  case 9:
    if (r == R_AX) {
      rl_1(g, ZYDIS_MNEMONIC_FNSTSW, rl_r(ZYDIS_REGISTER_AX));
      break;
    }
    /* fall through */
  case 10:
    rl_2(g, ZYDIS_MNEMONIC_XCHG, rl_r(rl_q(r)), rl_r(rl_q(rl_w(g))));
    break;
  case 11:
    rl_1(g, ZYDIS_MNEMONIC_PUSH, rl_r(rl_q(rl_read(g))));
    rl_1(g, ZYDIS_MNEMONIC_POP, rl_r(rl_q(r)));
    break;
  case 0:
    if (r < 4) {
      rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(fe_reg(r, 8, true)),
           rl_i(rl_rnd(g, 128), 8));
      break;
    }
    /* fall through */
  case 1:
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(fe_reg(r, 8, false)),
         rl_i(rl_rnd(g, 128), 8));
    break;
  case 2:
    rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(fe_reg(r, 16, false)),
         rl_i(rl_rnd(g, 32768), 16));
    break;
  case 3: rl_1(g, ZYDIS_MNEMONIC_NOT, rl_r(rl_q(r))); break;
  case 4: rl_1(g, ZYDIS_MNEMONIC_BSWAP, rl_r(rl_d(r))); break;
  default:
    if (r == R_DX && (g->w & 1)) {
      rl_enc(g, ZYDIS_MNEMONIC_CDQ, 0, NULL);
      break;
    }
    if (r == R_AX) {
      rl_enc(g, ZYDIS_MNEMONIC_LAHF, 0, NULL);
      break;
    }
    rl_2(g, ZYDIS_MNEMONIC_LEA, rl_r(rl_q(r)), rl_m(rl_q(r), 1, 8));
    break;
  }
}

/* The flag producer ending the body, and maybe a write of its registers
   after it. */
static void fe_producer(struct fe_gen *f) {
  struct rl_gen *g = &f->g;
  static const ZydisMnemonic ops[] = {ZYDIS_MNEMONIC_CMP, ZYDIS_MNEMONIC_TEST,
                                      ZYDIS_MNEMONIC_AND, ZYDIS_MNEMONIC_OR,
                                      ZYDIS_MNEMONIC_XOR};
  ZydisMnemonic m = ops[rl_rnd(g, 5)];
  bool ro = m == ZYDIS_MNEMONIC_CMP || m == ZYDIS_MNEMONIC_TEST;
  static const unsigned sz[] = {8, 8, 16, 32, 64};
  unsigned k = rl_rnd(g, 5), bits = sz[k];
  bool high = k == 0 && (g->w & 0xf);
  unsigned d, s;
  if (high) {
    d = (unsigned)fe_w_legacy(g);
    if (ro)
      d = rl_rnd(g, 4);
    s = rl_rnd(g, 4);
  } else {
    d = ro ? rl_read(g) : rl_w(g);
    s = rl_read(g);
  }
  bool imm = rl_rnd(g, 3) == 0;
  rl_2(g, m, rl_r(fe_reg(d, bits, high)),
       imm ? rl_i(rl_rnd(g, 128), bits == 64 ? 32 : bits)
           : rl_r(fe_reg(s, bits, high && rl_rnd(g, 2))));
  if (rl_rnd(g, 4) == 0) {
    unsigned r = imm || rl_rnd(g, 2) ? d : s;
    if (g->w & (1u << r))
      fe_write(f, r);
  }
}

static void fe_item(struct fe_gen *f, unsigned i, unsigned n) {
  struct rl_gen *g = &f->g;
  switch (rl_rnd(g, 8)) {
  case 0:
  case 1:
    fe_access(f, true);
    if (rl_rnd(g, 2))
      fe_reader(f);
    break;
  case 2: fe_reader(f); break;
  case 3:
    rl_2(g, ZYDIS_MNEMONIC_ADD, rl_r(rl_q(rl_w(g))), rl_r(rl_q(rl_read(g))));
    break;
  case 4: fe_write(f, rl_w(g)); break;
  case 5:
    if (i + 2 < n) {
      /* Forward, over an item or two: a cut that may start with an
         access, entered with test's flags or by the jcc. */
      rl_2(g, ZYDIS_MNEMONIC_TEST, rl_r(rl_d(rl_read(g))),
           rl_i(1u << rl_rnd(g, 8), 32));
      rl_jcc(g, 4 + rl_rnd(g, 2), (int)(i + 1 + rl_rnd(g, 2)));
      break;
    }
    /* fall through */
  case 6: fe_producer(f); break;
  default: rl_1(g, ZYDIS_MNEMONIC_INC, rl_r(rl_d(rl_w(g)))); break;
  }
}

static void fe_program(struct fe_gen *f, uint64_t seed) {
  struct rl_gen *g = &f->g;
  memset(f, 0, sizeof(*f));
  memset(g->buf, 0xcc, sizeof(g->buf));
  g->rng = seed * 0x9e3779b97f4a7c15ull + 7;
  unsigned res[3];
  for (unsigned k = 0; k < 3; k++) {
    unsigned r;
    do
      r = rl_rnd(g, 16);
    while (r == R_SP || (k > 0 && r == res[0]) || (k > 1 && r == res[1]));
    res[k] = r;
  }
  g->c = res[0];
  g->a = res[1];
  f->u = res[2];
  g->w = (uint16_t)(0xffff & ~(1u << R_SP) & ~(1u << g->c) & ~(1u << g->a) &
                    ~(1u << f->u));
  /* Drop a few, so the sets the fragments keep vary. */
  unsigned drop = rl_rnd(g, 6);
  for (unsigned k = 0; k < drop; k++)
    g->w &= (uint16_t) ~(1u << rl_rnd(g, 16));
  if (g->w == 0)
    g->w =
        (uint16_t)(1u << (g->c == R_BP || g->a == R_BP || f->u == R_BP ? R_SI
                                                                       : R_BP));
  f->h = rl_w(g);
  for (unsigned r = 0; r < 16; r++)
    if (r != R_SP) {
      uint64_t v = (uint64_t)rl_rnd(g, 1u << 30) << 34 ^ rl_rnd(g, 1u << 30);
      rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_q(r)), rl_i(v, 64));
    }
  rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(g->a)), rl_i(8 * rl_rnd(g, 64), 32));
  rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_d(g->c)), rl_i(30 + rl_rnd(g, 200), 32));
  rl_2(g, ZYDIS_MNEMONIC_MOV, rl_r(rl_q(f->u)), rl_i(FE_UNMAPPED, 64));
  /* Short bodies are self loops, long ones regions. */
  unsigned n = rl_rnd(g, 3) ? 1 + rl_rnd(g, 4) : 6 + rl_rnd(g, 20);
  /* The counter, where no forward jcc can skip it. */
  unsigned at = rl_rnd(g, 2) ? 0 : n;
  size_t top = g->len;
  fe_access(f, false); /* through the address register: faults */
  if (rl_rnd(g, 2))
    fe_access(f, true);
  if (rl_rnd(g, 3))
    fe_reader(f);
  for (unsigned i = 0; i < n; i++) {
    g->item[i] = g->len;
    if (i == at) {
      rl_1(g, ZYDIS_MNEMONIC_DEC, rl_r(rl_q(g->c)));
      rl_2(g, ZYDIS_MNEMONIC_TEST, rl_r(fe_reg(g->c, 8, false)), rl_i(7, 8));
      rl_2(g, ZYDIS_MNEMONIC_CMOVZ, rl_r(rl_q(g->a)), rl_r(rl_q(f->u)));
    }
    fe_item(f, i, n);
  }
  g->item[n] = g->len;
  if (at == n) {
    rl_1(g, ZYDIS_MNEMONIC_DEC, rl_r(rl_q(g->c)));
    rl_2(g, ZYDIS_MNEMONIC_TEST, rl_r(fe_reg(g->c, 8, false)), rl_i(7, 8));
    rl_2(g, ZYDIS_MNEMONIC_CMOVZ, rl_r(rl_q(g->a)), rl_r(rl_q(f->u)));
  }
  fe_producer(f);
  int32_t back = (int32_t)top - (int32_t)(g->len + 6);
  g->buf[g->len++] = 0x0f; /* jcc top */
  g->buf[g->len++] = (uint8_t)(0x80 + rl_rnd(g, 16));
  memcpy(g->buf + g->len, &back, 4);
  g->len += 4;
  back = (int32_t)top - (int32_t)(g->len + 5);
  g->buf[g->len++] = 0xe9; /* jmp top */
  memcpy(g->buf + g->len, &back, 4);
  g->len += 4;
  for (unsigned k = 0; k < g->nfix; k++) {
    size_t to = g->item[g->fix[k].item];
    int32_t rel = (int32_t)to - (int32_t)(g->fix[k].at + 4);
    memcpy(g->buf + g->fix[k].at, &rel, 4);
  }
}

#define FE_FAULTS 64

struct fe_trace {
  struct vmm_regs at[FE_FAULTS];
  unsigned n;
  uint8_t mem[RL_RANGE + 0x100];
};

static const enum vmm_reg fe_vreg[16] = {
    VMM_REG_RAX, VMM_REG_RCX, VMM_REG_RDX, VMM_REG_RBX,
    VMM_REG_RSP, VMM_REG_RBP, VMM_REG_RSI, VMM_REG_RDI,
    VMM_REG_R8,  VMM_REG_R9,  VMM_REG_R10, VMM_REG_R11,
    VMM_REG_R12, VMM_REG_R13, VMM_REG_R14, VMM_REG_R15};

/* Runs to the fault that finds the counter at zero (or FE_FAULTS
   faults), pointing the address register back at the data after each. */
static void fe_run(struct rl_vm *x, const struct fe_gen *f, bool kicks,
                   struct fe_trace *tr) {
  static const uint8_t zero[RL_RANGE + 0x100];
  const struct rl_gen *g = &f->g;
  assert_ok(vmm_mem_write(x->t.vm, VMMT_CODE, g->buf, sizeof(g->buf)));
  assert_ok(vmm_mem_write(x->t.vm, RL_DATA, zero, sizeof(zero)));
  struct vmm_regs r;
  assert_ok(vmm_vcpu_get_regs(x->t.vcpu, &r));
  r.rip = VMMT_CODE;
  r.rsp = VMMT_STACK;
  r.rflags = 2;
  assert_ok(vmm_vcpu_set_regs(x->t.vcpu, &r));
  assert_ok(vmm_vcpu_set_exception_exits(x->t.vcpu, 1u << 14));
  struct rl_kicker k = {.vcpu = x->t.vcpu, .rng = g->rng | 1};
  atomic_init(&k.stop, false);
  pthread_t th;
  if (kicks)
    assert_int_equal(pthread_create(&th, NULL, rl_kick, &k), 0);
  tr->n = 0;
  for (;;) {
    struct vmm_exit *e;
    do
      assert_ok(vmm_vcpu_run(x->t.vcpu, &e));
    while (e->reason == VMM_EXIT_STOPPED);
    assert_int_equal(e->reason, VMM_EXIT_FAULT);
    assert_int_equal(e->fault.vector, 14);
    assert_ok(vmm_vcpu_get_regs(x->t.vcpu, &tr->at[tr->n]));
    uint64_t c;
    assert_ok(vmm_vcpu_reg_read(x->t.vcpu, fe_vreg[g->c], &c));
    if (++tr->n == FE_FAULTS || c == 0)
      break;
    assert_ok(vmm_vcpu_reg_write(x->t.vcpu, fe_vreg[g->a], 8 * (c % 61)));
  }
  if (kicks) {
    atomic_store(&k.stop, true);
    pthread_join(th, NULL);
  }
  assert_ok(vmm_mem_read(x->t.vm, RL_DATA, tr->mem, sizeof(tr->mem)));
}

static void test_flags_entry_random(void **state) {
  (void)state;
  static struct rl_vm vms[3]; /* as is; portable and kicked; counting */
  static struct fe_trace tr[3];
  rl_vm_init(&vms[0], 0, false);
  rl_vm_init(&vms[1], VMM_BT_NO_LOOP | VMM_BT_NO_PEXT, false);
  rl_vm_init(&vms[2], 0, true);
  for (uint64_t seed = 1; seed <= 300; seed++) {
    struct fe_gen f;
    fe_program(&f, seed);
    for (unsigned v = 0; v < 3; v++)
      fe_run(&vms[v], &f, v == 1, &tr[v]);
    for (unsigned v = 0; v < 2; v++) {
      if (tr[v].n != tr[2].n)
        fail_msg("program %llu: run %u: %u faults, counting mode %u",
                 (unsigned long long)seed, v, tr[v].n, tr[2].n);
      for (unsigned k = 0; k < tr[2].n; k++)
        if (memcmp(&tr[v].at[k], &tr[2].at[k], sizeof(tr[2].at[k])))
          fail_msg("program %llu: run %u differs at fault %u (rip %llx "
                   "flags %llx, counting mode rip %llx flags %llx)",
                   (unsigned long long)seed, v, k,
                   (unsigned long long)tr[v].at[k].rip,
                   (unsigned long long)tr[v].at[k].rflags,
                   (unsigned long long)tr[2].at[k].rip,
                   (unsigned long long)tr[2].at[k].rflags);
      if (memcmp(tr[v].mem, tr[2].mem, sizeof(tr[2].mem)))
        fail_msg("program %llu: run %u: memory differs",
                 (unsigned long long)seed, v);
    }
  }
  for (unsigned v = 0; v < 3; v++)
    vmmt_fini(&vms[v].t);
}

/* Emulated instructions keep their decode cache entry in their callout's
   descriptor (bt_decode_desc); 160 runs of 80 different `int n` reuse
   every entry of the 64-entry cache, and each must still be its own. */
static void test_decode_reuse(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_MANY_INTS);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  uint64_t got[160];
  assert_ok(vmm_mem_read(t.vm, 0x31000, got, sizeof(got)));
  for (unsigned i = 0; i < 160; i++)
    assert_int_equal(got[i], 0x30 + i % 80);
  vmmt_fini(&t);
}

static void test_kick_rep_huge(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_REP_HUGE);
  alias_gigabyte(&t);
  run_kicked(&t, 100);
  uint64_t rcx = reg(&t, VMM_REG_RCX);
  assert_true(rcx < (1ull << 40));
  assert_int_equal(reg(&t, VMM_REG_RDI) - 0x40000000, (1ull << 40) - rcx);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_REP_HUGE + 18);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* Exceptions and precise state                                             */

static uint64_t flags_of_cmp(uint32_t a, uint32_t b) {
  uint64_t f;
  __asm__("cmpl %k2, %k1; pushfq; popq %0" : "=r"(f) : "r"(a), "r"(b) : "cc");
  return f & 0x8d5; /* CF PF AF ZF SF OF */
}

static void test_precise_fault(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_FAULT_MID);
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 1u << 14));
  assert_int_equal(count(&t), 0);
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.vector, 14);
  assert_true(e->fault.has_error_code);
  assert_int_equal(e->fault.error_code, 0); /* not present, read, CPL 0 */
  assert_int_equal(e->fault.cr2, 0x7f0000000000ull);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_FAULT_MID + 22);
  assert_int_equal(reg(&t, VMM_REG_RAX), 7);
  assert_int_equal(reg(&t, VMM_REG_RBX), 9);
  assert_int_equal(reg(&t, VMM_REG_RFLAGS) & 0x8d5, flags_of_cmp(7, 9));
  /* mov, mov, mov, cmp retired; the load did not. */
  assert_int_equal(count(&t), 4);
  vmmt_fini(&t);
}

static void expect_fault_at(uint64_t entry, unsigned vec, uint64_t off,
                            bool has_err, uint32_t err) {
  struct vmmt t;
  setup(&t, entry);
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 1u << vec));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.vector, vec);
  assert_int_equal(e->fault.has_error_code, has_err);
  if (has_err)
    assert_int_equal(e->fault.error_code, err);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + entry + off);
  vmmt_fini(&t);
}

static void test_exception_exits(void **state) {
  (void)state;
  expect_fault_at(E_UD, 6, 5, false, 0);
  expect_fault_at(E_DE, 0, 9, false, 0);
  expect_fault_at(E_GP, 13, 10, true, 0);
  expect_fault_at(E_AVX, 6, 0, false, 0);
  expect_fault_at(E_MID_INSN, 6, 3, false, 0);
  /* #BP is reported at the int3, as KVM does. */
  expect_fault_at(E_INT3, 3, 5, false, 0);
}

static void test_sw_breakpoint(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_INT3);
  struct vmm_debug d = {.flags = VMM_DEBUG_SW_BREAKPOINTS};
  assert_ok(vmm_vcpu_set_debug(t.vcpu, &d));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_DEBUG);
  assert_int_equal(e->debug.vector, 3);
  assert_int_equal(e->debug.rip, VMMT_CODE + E_INT3 + 5);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_INT3 + 5);
  assert_int_equal(reg(&t, VMM_REG_RAX), 0x77);
  vmmt_fini(&t);
}

static void test_singlestep(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_STEPS);
  struct vmm_debug d = {.flags = VMM_DEBUG_SINGLESTEP};
  assert_ok(vmm_vcpu_set_debug(t.vcpu, &d));
  static const uint64_t rips[3] = {5, 8, 11};
  static const uint64_t rax[3] = {1, 3, 6};
  for (int i = 0; i < 3; i++) {
    struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_DEBUG);
    assert_int_equal(e->debug.vector, 1);
    assert_int_equal(e->debug.rip, VMMT_CODE + E_STEPS + rips[i]);
    assert_int_equal(reg(&t, VMM_REG_RAX), rax[i]);
  }
  assert_int_equal(count(&t), 3);
  assert_ok(vmm_vcpu_set_debug(t.vcpu, NULL));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  vmmt_fini(&t);
}

/* The guest's own trap flag: #DB after the instruction following popf. */
static void test_guest_trap_flag(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_TF);
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 1u << 1));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.vector, 1);
  assert_int_equal(reg(&t, VMM_REG_RAX), 1);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_TF + 15);
  assert_true(reg(&t, VMM_REG_RFLAGS) & 0x100);
  vmmt_fini(&t);
}

static void test_hw_breakpoint(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_STEPS);
  struct vmm_debug d = {.flags = VMM_DEBUG_HW_BREAKPOINTS,
                        .breakpoints = {VMMT_CODE + E_STEPS + 8},
                        .nr_breakpoints = 1};
  assert_ok(vmm_vcpu_set_debug(t.vcpu, &d));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_DEBUG);
  assert_int_equal(e->debug.rip, VMMT_CODE + E_STEPS + 8);
  assert_true(e->debug.dr6 & 1);
  assert_int_equal(reg(&t, VMM_REG_RAX), 3); /* before the breakpoint */
  /* Resuming executes the instruction under the breakpoint. */
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_RAX), 6);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* Self-modifying code                                                      */

static void test_smc_host_write(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_CALL_FN);
  for (uint8_t v = 1; v <= 3; v++) {
    uint8_t fn[] = {0xb8, v, 0, 0, 0, 0xc3}; /* mov eax, v; ret */
    assert_ok(vmm_mem_write(t.vm, 0x11000, fn, sizeof(fn)));
    set_rip(&t, VMMT_CODE + E_CALL_FN);
    vmmt_run_to_port(t.vcpu, 0xeb);
    assert_int_equal(reg(&t, VMM_REG_RAX), v);
  }
  vmmt_fini(&t);
}

/* Discarded pages read as zeros: code translated from them must go. */
static void test_smc_discard(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_CALL_FN);
  /* Counting mode (a limit before the first run), to stop in the zeros. */
  assert_ok(vmm_vcpu_set_insn_limit(t.vcpu, 1000000));
  uint8_t fn[] = {0xb8, 7, 0, 0, 0, 0xc3}; /* mov eax, 7; ret */
  assert_ok(vmm_mem_write(t.vm, 0x11000, fn, sizeof(fn)));
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(reg(&t, VMM_REG_RAX), 7);
  assert_ok(vmm_mem_discard(t.vm, 0x11000, 0x1000));
  /* Now 0x11000 holds `add [rax], al` (00 00) over and over. */
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RAX, 0x20003));
  set_rip(&t, VMMT_CODE + E_CALL_FN);
  /* mov, call and 1000 adds: long enough to run translated code. */
  assert_ok(vmm_vcpu_set_insn_limit(t.vcpu, 2 + 1000));
  vmmt_run_expect(t.vcpu, VMM_EXIT_INSN_LIMIT);
  assert_int_equal(reg(&t, VMM_REG_RIP), 0x11000 + 1000 * 2);
  uint8_t b = 0;
  assert_ok(vmm_mem_read(t.vm, 0x20003, &b, 1));
  assert_int_equal(b, (1000 * 3) & 0xff);
  vmmt_fini(&t);
}

static void test_smc_same_unit(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_SMC_SELF);
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(reg(&t, VMM_REG_RAX) & 0xff, 0x42);
  /* And once more, with the code already translated and patched. */
  uint8_t orig = 0x11;
  assert_ok(vmm_mem_write(t.vm, VMMT_CODE + E_SMC_SELF + 11, &orig, 1));
  set_rip(&t, VMMT_CODE + E_SMC_SELF);
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_int_equal(reg(&t, VMM_REG_RAX) & 0xff, 0x42);
  vmmt_fini(&t);
}

struct spinner {
  vmm_vcpu *vcpu;
  struct vmm_exit exit;
  int err;
};

static void *run_spinner(void *arg) {
  struct spinner *s = arg;
  struct vmm_exit *e;
  s->err = vmm_vcpu_run(s->vcpu, &e);
  if (s->err == 0)
    s->exit = *e;
  return NULL;
}

/* A VM with two vCPUs in long mode and the bt64 snippet: t->vcpu spins in
   spin_patch, *v1 runs the patcher. */
static void smc_two_vcpus(struct vmmt *t, vmm_vcpu **v1) {
  memset(t, 0, sizeof(*t));
  t->vm = vmmt_vm_create(2, 0);
  assert_ok(vmm_mem_slot_add(t->vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(t->vm, 0, &t->vcpu));
  assert_ok(vmm_vcpu_create(t->vm, 1, v1));
  vmmt_setup_vcpu(t->vcpu, VMM_MODE_LONG64, 0);
  vmmt_setup_vcpu(*v1, VMM_MODE_LONG64, 0);
  vmmt_load_snippet(t, "bt64", VMMT_CODE, E_SPIN_PATCH);
}

/* Start the spinner on a thread, give it head_ms, run the patcher on v1,
   and check the spinner saw the patch (a kick after 5 s bounds the wait). */
static void spin_against_patcher(struct vmmt *t, vmm_vcpu *v1, unsigned head_ms,
                                 int round) {
  assert_ok(vmm_vcpu_reg_write(t->vcpu, VMM_REG_RIP, VMMT_CODE + E_SPIN_PATCH));
  assert_ok(vmm_vcpu_reg_write(v1, VMM_REG_RIP, VMMT_CODE + E_PATCHER));
  struct spinner s = {.vcpu = t->vcpu};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_spinner, &s), 0);
  struct timespec ts = {0, (long)head_ms * 1000000L};
  nanosleep(&ts, NULL);
  vmmt_run_expect(v1, VMM_EXIT_HLT);
  struct kicker k = {t->vcpu, 5000};
  pthread_t kt;
  assert_int_equal(pthread_create(&kt, NULL, kick_later, &k), 0);
  pthread_join(th, NULL);
  pthread_cancel(kt);
  pthread_join(kt, NULL);
  assert_int_equal(s.err, 0);
  if (s.exit.reason != VMM_EXIT_IO || s.exit.io.port != 0xeb)
    fail_msg("round %d: the spinner never saw the patch (exit %d)", round,
             (int)s.exit.reason);
  assert_int_equal(reg(t, VMM_REG_RAX), 2);
}

/* One vCPU rewrites code another vCPU is running in a loop: the other one
   must see the new code (cross-modifying code). */
static void test_smc_other_vcpu(void **state) {
  (void)state;
  struct vmmt t;
  vmm_vcpu *v1;
  smc_two_vcpus(&t, &v1);
  spin_against_patcher(&t, v1, 50, 0); /* spinning in translated code */
  vmmt_fini(&t);
}

/* The same, with no head start: the spinner's translation of the loop
   races with the patch (a write landing between the decode and the
   recording of the translated bytes must still be seen). Each round puts
   the old byte back from the host, which drops both vCPUs' translations. */
static void test_smc_other_vcpu_race(void **state) {
  (void)state;
  struct vmmt t;
  vmm_vcpu *v1;
  smc_two_vcpus(&t, &v1);
  for (int round = 0; round < 200; round++) {
    uint8_t one = 1;
    assert_ok(vmm_mem_write(t.vm, VMMT_CODE + E_SPIN_PATCH + 1, &one, 1));
    spin_against_patcher(&t, v1, 0, round);
  }
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */

static void test_mmio_rmw(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_MMIO_RMW);
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_MMIO);
  assert_int_equal(e->mmio.gpa, 0xd0000000);
  assert_int_equal(e->mmio.size, 4);
  assert_false(e->mmio.is_write);
  uint32_t v = 10;
  memcpy(e->mmio.data, &v, 4);
  e = vmmt_run_expect(t.vcpu, VMM_EXIT_MMIO);
  assert_true(e->mmio.is_write);
  assert_int_equal(e->mmio.size, 4);
  memcpy(&v, e->mmio.data, 4);
  assert_int_equal(v, 15);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  vmmt_fini(&t);
}

/* Dirty-log fetches racing with a running vCPU's stores. The guest stores
   each new round number once, racing with the fetch the host starts right
   after publishing it; the host copies the page after that fetch, as
   pre-copy migration does. If the page then differs from the copy, the
   round's second fetch must report it. This found a deadlock: the fetch
   held the slot table's write lock while BT's revocation waited for a
   vCPU that was in a page walk waiting for the read lock. (The race it is
   named for, a revocation acknowledged between a miss's TLB fill and its
   hoisted store, has a window too short to hit here; bt_mem_miss's order
   argues it away.) */
static void test_dirty_log_race(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_DIRTY_ONCE);
  uint32_t slot;
  assert_ok(vmm_mem_slot_add(t.vm, 0x200000, 0x10000, NULL, VMM_MEM_DIRTY_LOG,
                             &slot));
  struct spinner s = {.vcpu = t.vcpu};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, run_spinner, &s), 0);
  unsigned lost = 0, raced = 0;
  for (uint64_t r = 1; r <= 3000; r++) {
    uint64_t bits = 0, copy = 0, now = 0;
    assert_ok(vmm_mem_write(t.vm, 0x30000, &r, 8));
    assert_ok(vmm_mem_dirty_log_get(t.vm, slot, &bits, sizeof(bits)));
    assert_ok(vmm_mem_read(t.vm, 0x200000, &copy, 8));
    for (unsigned spin = 0; now != r && spin < 100000000; spin++)
      assert_ok(vmm_mem_read(t.vm, 0x200000, &now, 8));
    assert_int_equal(now, r);
    assert_ok(vmm_mem_dirty_log_get(t.vm, slot, &bits, sizeof(bits)));
    if (copy != r) {
      raced++;
      lost += !(bits & 1);
    }
  }
  vmm_vcpu_kick(t.vcpu);
  pthread_join(th, NULL);
  assert_int_equal(s.err, 0);
  assert_int_equal(lost, 0);
  assert_true(raced > 0); /* the fetch did overlap the guest's store */
  vmmt_fini(&t);
}

static void test_dirty_log(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_DIRTY);
  uint32_t slot;
  assert_ok(vmm_mem_slot_add(t.vm, 0x200000, 0x10000, NULL, VMM_MEM_DIRTY_LOG,
                             &slot));
  uint64_t bits = 0;
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_ok(vmm_mem_dirty_log_get(t.vm, slot, &bits, sizeof(bits)));
  assert_int_equal(bits, 0x3);
  /* After the fetch the same page must be reported again when written. */
  vmmt_run_to_port(t.vcpu, 0xeb);
  assert_ok(vmm_mem_dirty_log_get(t.vm, slot, &bits, sizeof(bits)));
  assert_int_equal(bits, 0x5);
  uint8_t b;
  assert_ok(vmm_mem_read(t.vm, 0x200000, &b, 1));
  assert_int_equal(b, 4);
  vmmt_fini(&t);
}

static void test_wild_access(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_WILD);
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_MMIO);
  assert_int_equal(e->mmio.gpa, 0xfee00000);
  assert_int_equal(e->mmio.size, 8);
  uint64_t v = 0x1122334455667788ull;
  memcpy(e->mmio.data, &v, 8);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_RAX), v);
  vmmt_fini(&t);
}

/* Page tables outside RAM read as all ones: a reserved-bit #PF, and with no
   IDT the guest shuts down rather than the host touching anything. */
static void test_tables_outside_ram(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_COUNT);
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_CR3, 0x80000000));
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 1u << 14));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.vector, 14);
  /* P and RSVD; no I/D bit, since neither NX nor SMEP is on. */
  assert_int_equal(e->fault.error_code, 0x9);
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 0));
  vmmt_run_expect(t.vcpu, VMM_EXIT_SHUTDOWN);
  vmmt_fini(&t);
}

/* 16-bit addressing in 32-bit code wraps at 64 KiB, on the inline path as
   in C (regression: the fuzzer found the fragment looking up the unwrapped
   address, which then missed forever). */
static void test_addr16_wraps(void **state) {
  (void)state;
  struct vmmt t;
  vmmt_init(&t, VMM_MODE_PROT32, 0);
  static const uint8_t code[] = {0x67, 0x8b, 0x00, 0xf4}; /* mov eax,[bx+si] */
  uint32_t lo = 0x11223344, hi = 0x55667788;
  assert_ok(vmm_mem_write(t.vm, 0x10, &lo, 4));
  assert_ok(vmm_mem_write(t.vm, 0x20010, &hi, 4));
  vmmt_load(&t, VMMT_CODE, code, sizeof(code));
  /* Twice: the first run fills the soft TLB, the second hits it. */
  for (int i = 0; i < 2; i++) {
    assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RBX, 0x1fff0));
    assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RSI, 0x20));
    set_rip(&t, VMMT_CODE);
    vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
    assert_int_equal(reg(&t, VMM_REG_RAX), lo);
  }
  vmmt_fini(&t);
}

/* An access crossing into the next page must never hit an empty soft-TLB
   entry (regression: the fuzzer found one that used a stale host
   address). */
static void test_cross_page_access(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_CROSS);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_RAX), 0x11223344);
  uint32_t v;
  assert_ok(vmm_mem_read(t.vm, 0x2fffe, &v, 4));
  assert_int_equal(v, 0x11223344);
  vmmt_fini(&t);
}

/* A bit test with a register offset addresses memory far from its operand:
   within RAM it works (atomically with lock); far away it faults in the
   guest, never reaching host memory past the guest page. */
static void test_bit_offset_confined(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_BITMEM);
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 1u << 14));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(e->fault.vector, 14);
  assert_int_equal(e->fault.cr2, 0x30000ull + (1ull << 41));
  assert_int_equal(reg(&t, VMM_REG_RBX), 1);
  uint8_t byte;
  assert_ok(vmm_mem_read(t.vm, 0x3000c, &byte, 1));
  assert_int_equal(byte, 0x10);
  vmmt_fini(&t);
}

struct adapt_log {
  unsigned retranslated;
  unsigned writes;
  uint32_t last;
};

static void capture_log(enum vmm_log_level level, const char *msg,
                        void *opaque) {
  struct adapt_log *a = opaque;
  (void)level;
  if (strstr(msg, "retranslated as a callout"))
    a->retranslated++;
}

static int count_writes(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                        bool is_write, void *opaque) {
  struct adapt_log *a = opaque;
  (void)vcpu, (void)addr;
  if (is_write) {
    a->writes++;
    memcpy(&a->last, data, len < 4 ? len : 4);
  }
  return 0;
}

/* An instruction that keeps trapping (MMIO) is retranslated once as a
   callout, and keeps working. */
static void test_adaptive_retranslation(void **state) {
  (void)state;
  struct adapt_log a = {0};
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_BT;
  cfg.log_fn = capture_log;
  cfg.log_opaque = &a;
  cfg.log_level = VMM_LOG_DEBUG;
  struct vmmt t;
  memset(&t, 0, sizeof(t));
  assert_ok(vmm_vm_create(&cfg, &t.vm));
  assert_ok(vmm_mem_slot_add(t.vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(t.vm, 0, &t.vcpu));
  vmmt_setup_vcpu(t.vcpu, VMM_MODE_LONG64, 0);
  vmmt_load_snippet(&t, "bt64", VMMT_CODE, E_MMIO_LOOP);
  assert_ok(
      vmm_io_register(t.vm, VMM_IO_MMIO, 0xd0000000, 0x1000, count_writes, &a));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(a.writes, 40);
  assert_int_equal(a.last, 1);
  assert_int_equal(a.retranslated, 1);
  vmmt_fini(&t);
}

struct sync_dev {
  unsigned reads;
};

static int mmio_kick(vmm_vcpu *vcpu, uint64_t addr, void *data, uint32_t len,
                     bool is_write, void *opaque) {
  struct sync_dev *d = opaque;
  (void)addr;
  if (!is_write) {
    d->reads++;
    memset(data, 0x5a, len);
  }
  return vmm_vcpu_kick(vcpu);
}

/* A stop after a served MMIO read still completes the instruction. */
static void test_sync_completes_read(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_WILD);
  struct sync_dev d = {0};
  assert_ok(
      vmm_io_register(t.vm, VMM_IO_MMIO, 0xfee00000, 0x1000, mmio_kick, &d));
  vmmt_run_expect(t.vcpu, VMM_EXIT_STOPPED);
  assert_int_equal(d.reads, 1);
  assert_int_equal(reg(&t, VMM_REG_RAX), 0x5a5a5a5a5a5a5a5aull);
  assert_int_equal(reg(&t, VMM_REG_RIP), VMMT_CODE + E_WILD + 8);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* FPU, CPUID                                                               */

static void test_fpu_virtual_controls(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_FPU);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  uint16_t two, cw;
  uint64_t q;
  assert_ok(vmm_mem_read(t.vm, 0x30000, &two, 2));
  assert_ok(vmm_mem_read(t.vm, 0x30008, &q, 8));
  assert_ok(vmm_mem_read(t.vm, 0x30010, &cw, 2));
  assert_int_equal(two, 2);
  /* The guest sees its own control word, and (documented) gets the masked
     response, a NaN, instead of #MF. */
  assert_int_equal(cw, 0x37e);
  assert_int_equal(q & 0x7ff0000000000000ull, 0x7ff0000000000000ull);
  assert_true(q & 0x000fffffffffffffull);
  struct vmm_fpu f;
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &f));
  assert_int_equal(f.fcw, 0x37e);
  f.fcw = 0x27f;
  f.mxcsr = 0x1f00; /* some exceptions unmasked, as a guest might */
  assert_ok(vmm_vcpu_set_fpu(t.vcpu, &f));
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &f));
  assert_int_equal(f.fcw, 0x27f);
  assert_int_equal(f.mxcsr, 0x1f00);
  vmmt_fini(&t);
}

/* Callouts and exits to the dispatcher save only XMM and MXCSR (glue.S):
   the guest's x87 stack and every XMM register survive them. */
static void test_fpu_across_callouts(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_FPU_CALLOUTS);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  struct vmm_fpu f;
  assert_ok(vmm_vcpu_get_fpu(t.vcpu, &f));
  for (unsigned i = 0; i < 16; i++) {
    uint32_t lo;
    memcpy(&lo, f.xmm[i], 4);
    assert_int_equal(lo, i + 1);
    for (unsigned k = 4; k < 16; k++)
      assert_int_equal(f.xmm[i][k], 0);
  }
  static const uint8_t zero[10],
      one[10] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f};
  assert_memory_equal(f.st[0], zero, 10); /* fldz */
  assert_memory_equal(f.st[1], one, 10);  /* fld1 */
  assert_int_equal(f.fsw >> 11 & 7, 6);   /* two pushes: TOP = 6 */
  assert_int_equal(f.fcw, 0x37f);
  assert_int_equal(f.mxcsr & 0xffbf, 0x1f80);
  vmmt_fini(&t);
}

/* invlpg invalidates only its page, but the whole of a large page the
   soft TLB holds as 4 KiB entries. */
static void test_invlpg_remap(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_INVLPG);
  assert_ok(vmm_vcpu_set_exception_exits(t.vcpu, 1u << 14));
  struct vmm_exit *e = vmmt_run_expect(t.vcpu, VMM_EXIT_FAULT);
  assert_int_equal(reg(&t, VMM_REG_RCX), 0x1111);
  assert_int_equal(reg(&t, VMM_REG_RDX), 0x2222);
  assert_int_equal(reg(&t, VMM_REG_R8), 0x3333);
  assert_int_equal(reg(&t, VMM_REG_R9), 0x2222);
  assert_int_equal(reg(&t, VMM_REG_R10), 0x4444);
  assert_int_equal(e->fault.vector, 14);
  assert_int_equal(e->fault.cr2, 0x40230000);
  vmmt_fini(&t);
}

static void test_cpuid(void **state) {
  (void)state;
  struct vmmt t;
  setup(&t, E_CPUID);
  struct vmm_cpuid_entry e[VMM_CPUID_MAX_ENTRIES];
  size_t n = VMM_CPUID_MAX_ENTRIES;
  assert_ok(vmm_vm_get_supported_cpuid(t.vm, e, &n));
  bool leaf1 = false;
  for (size_t i = 0; i < n; i++) {
    if (e[i].function == 1) {
      leaf1 = true;
      assert_false(e[i].ecx & (1u << 28)); /* AVX */
      assert_false(e[i].ecx & (1u << 26)); /* XSAVE */
      assert_true(e[i].edx & (1u << 26));  /* SSE2 */
      assert_true(e[i].ecx & (1u << 20) || !(e[i].ecx & (1u << 19)));
    }
  }
  assert_true(leaf1);
  /* A table offering AVX is refused; a custom leaf is visible. */
  n = VMM_CPUID_MAX_ENTRIES;
  assert_ok(vmm_vcpu_get_cpuid(t.vcpu, e, &n));
  for (size_t i = 0; i < n; i++)
    if (e[i].function == 1)
      e[i].ecx |= 1u << 28;
  assert_vmm(vmm_vcpu_set_cpuid(t.vcpu, e, n), VMM_EINVAL);
  for (size_t i = 0; i < n; i++)
    if (e[i].function == 1)
      e[i].ecx &= ~(1u << 28);
  e[n++] = (struct vmm_cpuid_entry){
      .function = 0x40000000, .eax = 0x1234, .ebx = 0x42};
  assert_ok(vmm_vcpu_set_cpuid(t.vcpu, e, n));
  assert_ok(vmm_vcpu_reg_write(t.vcpu, VMM_REG_RAX, 0x40000000));
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_RAX), 0x1234);
  assert_int_equal(reg(&t, VMM_REG_RBX), 0x42);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* The translation cache bound                                              */

/* 4096 distinct blocks "add eax, 1; jmp next", looped 3 times: far more
   code than a 256 KiB cache holds, so it is flushed while running. */
static void test_small_cache(void **state) {
  (void)state;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_BT;
  cfg.bt_cache_size = 256u << 10;
  struct vmmt t;
  memset(&t, 0, sizeof(t));
  assert_ok(vmm_vm_create(&cfg, &t.vm));
  assert_ok(vmm_mem_slot_add(t.vm, 0, VMMT_RAM, NULL, 0, NULL));
  assert_ok(vmm_vcpu_create(t.vm, 0, &t.vcpu));
  vmmt_setup_vcpu(t.vcpu, VMM_MODE_LONG64, 0);
  enum { BLOCKS = 4096, BSIZE = 8 };
  static uint8_t code[16 + BLOCKS * BSIZE + 16];
  size_t p = 0;
  code[p++] = 0xb9; /* mov ecx, 3 */
  code[p++] = 3;
  code[p++] = 0;
  code[p++] = 0;
  code[p++] = 0;
  size_t loop = p;
  for (int i = 0; i < BLOCKS; i++) {
    uint8_t blk[BSIZE] = {0x83, 0xc0, 0x01, 0xe9,
                          0,    0,    0,    0}; /* add eax,1; jmp +0 */
    memcpy(code + p, blk, BSIZE);
    p += BSIZE;
  }
  code[p++] = 0xff; /* dec ecx */
  code[p++] = 0xc9;
  int32_t back = (int32_t)loop - (int32_t)(p + 6);
  code[p++] = 0x0f; /* jnz loop */
  code[p++] = 0x85;
  memcpy(code + p, &back, 4);
  p += 4;
  code[p++] = 0xf4;
  vmmt_load(&t, VMMT_CODE, code, p);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  assert_int_equal(reg(&t, VMM_REG_RAX), 3 * BLOCKS);
  vmmt_fini(&t);
}

/* ------------------------------------------------------------------------ */
/* Two engines in one process                                               */

struct runner {
  enum vmm_engine_kind eng;
  uint64_t rax;
  int err;
};

static void *run_count(void *arg) {
  struct runner *r = arg;
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = r->eng;
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  r->err = vmm_vm_create(&cfg, &vm);
  if (r->err < 0)
    return NULL;
  size_t len;
  uint8_t *bin = vmmt_read_bin("bt64", &len);
  vmm_mem_slot_add(vm, 0, VMMT_RAM, NULL, 0, NULL);
  vmm_mem_write(vm, VMMT_CODE, bin, len);
  free(bin);
  vmm_vcpu_create(vm, 0, &vcpu);
  struct vmm_mode_setup ms = {.mode = VMM_MODE_LONG64,
                              .tables = VMMT_TABLES,
                              .kernel_stack = VMMT_KSTACK};
  vmm_vcpu_set_mode(vcpu, &ms);
  vmm_vcpu_reg_write(vcpu, VMM_REG_RIP, VMMT_CODE + E_COUNT);
  struct vmm_exit *e;
  r->err = vmm_vcpu_run(vcpu, &e);
  if (r->err == 0 && e->reason != VMM_EXIT_HLT)
    r->err = -1;
  vmm_vcpu_reg_read(vcpu, VMM_REG_RAX, &r->rax);
  vmm_vm_destroy(vm);
  return NULL;
}

static void test_two_engines(void **state) {
  (void)state;
  if (!vmm_engine_available(VMM_ENGINE_KVM))
    skip();
  struct runner r[4] = {{VMM_ENGINE_BT, 0, 0},
                        {VMM_ENGINE_KVM, 0, 0},
                        {VMM_ENGINE_BT, 0, 0},
                        {VMM_ENGINE_KVM, 0, 0}};
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&th[i], NULL, run_count, &r[i]), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(r[i].err, 0);
    assert_int_equal(r[i].rax, 500500);
  }
}

/* Translated code reaches its context at the host RSP plus up to the
   context's size, and that effective address must be canonical (below
   2^47): run() skips what a stack has above the bound first. A stack that
   ends a page below 2^47 (the main thread's does with ASLR off, under
   gdb) runs a guest whose stores use the write TLB, far into the context;
   without the skip that died of SIGSEGV. */
static ucontext_t high_main;

static void high_body(void) {
  struct vmmt t;
  setup(&t, E_LOOP_MEM);
  vmmt_run_expect(t.vcpu, VMM_EXIT_HLT);
  /* [0x30008] = [0x30000] + ecx, ecx = 1000 .. 1: the last value 1. */
  uint64_t v = 0;
  assert_ok(vmm_mem_read(t.vm, 0x30008, &v, 8));
  assert_int_equal(v, 1);
  assert_int_equal(reg(&t, VMM_REG_RCX), 0);
  vmmt_fini(&t);
}

static void test_high_stack(void **state) {
  (void)state;
  const size_t size = 1u << 20;
  uintptr_t top = (1ull << 47) - 4096; /* the last page is never mapped */
  void *stk = mmap((void *)(top - size), size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (stk == MAP_FAILED || stk != (void *)(top - size)) {
    /* Taken by this process's own stack: there with ASLR off, or put
       within 1 MiB of the top by ASLR (about 1 in 16000). The main
       thread's stack is then high enough for the case. */
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (stk != MAP_FAILED)
      munmap(stk, size);
    if (sp < top - size)
      fail_msg("the top 1 MiB below 2^47 is taken, not by the stack");
    high_body();
    return;
  }
  ucontext_t body;
  assert_int_equal(getcontext(&body), 0);
  body.uc_stack.ss_sp = stk;
  body.uc_stack.ss_size = size;
  body.uc_link = &high_main;
  makecontext(&body, high_body, 0);
  assert_int_equal(swapcontext(&high_main, &body), 0);
  munmap(stk, size);
}

/* ------------------------------------------------------------------------ */
/* The emitter                                                              */

static void decode(const uint8_t *p, size_t n, ZydisDecodedInstruction *di,
                   ZydisDecodedOperand *op) {
  ZydisDecoder d;
  ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  if (ZYAN_FAILED(ZydisDecoderDecodeFull(&d, p, n, di, op)))
    fail_msg("emitted bytes do not decode");
  assert_int_equal(di->length, n);
}

static void check_mem(const ZydisDecodedOperand *o, ZydisRegister seg,
                      ZydisRegister base, ZydisRegister index, unsigned scale,
                      int64_t disp) {
  assert_int_equal(o->type, ZYDIS_OPERAND_TYPE_MEMORY);
  if (seg != ZYDIS_REGISTER_NONE)
    assert_int_equal(o->mem.segment, seg);
  assert_int_equal(o->mem.base, base);
  assert_int_equal(o->mem.index, index);
  if (index != ZYDIS_REGISTER_NONE)
    assert_int_equal(o->mem.scale, scale);
  assert_int_equal(o->mem.disp.has_displacement ? o->mem.disp.value : 0, disp);
}

#define EMIT(call)                                                             \
  do {                                                                         \
    e_init(&e, buf, 0x1000, sizeof(buf));                                      \
    call;                                                                      \
    assert_true(e_finish(&e));                                                 \
    decode(buf, e.pos, &di, op);                                               \
  } while (0)

static void test_emitter(void **state) {
  (void)state;
  uint8_t buf[64];
  struct emit e;
  ZydisDecodedInstruction di;
  ZydisDecodedOperand op[ZYDIS_MAX_OPERAND_COUNT];
  static const int32_t offs[] = {0, 0x90, 0x12345};
  static const int64_t disps[] = {0, 8, -200, 0x10000};
  for (unsigned r = 0; r < 16; r++) {
    for (size_t k = 0; k < 3; k++) {
      EMIT(e_mov_r_ctx(&e, r, offs[k]));
      assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_MOV);
      assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
      check_mem(&op[1], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP,
                ZYDIS_REGISTER_NONE, 0, offs[k]);
      EMIT(e_mov_ctx_r(&e, offs[k], r));
      assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_RAX + r);
      check_mem(&op[0], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP,
                ZYDIS_REGISTER_NONE, 0, offs[k]);
      for (unsigned x = 0; x < 16; x++) {
        if (x == R_SP)
          continue;
        EMIT(e_mov_r_ctxidx(&e, r, offs[k], x));
        assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
        check_mem(&op[1], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP,
                  ZYDIS_REGISTER_RAX + x, 8, offs[k]);
        EMIT(e_mov_ctxidx_r(&e, offs[k], x, r));
        assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_MOV);
        assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_RAX + r);
        check_mem(&op[0], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP,
                  ZYDIS_REGISTER_RAX + x, 8, offs[k]);
        EMIT(e_mov_ctxidx4_i32(&e, offs[k], x, 0x80000000u | r));
        assert_int_equal(op[0].size, 32);
        check_mem(&op[0], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP,
                  ZYDIS_REGISTER_RAX + x, 4, offs[k]);
        assert_int_equal(op[1].imm.value.u & 0xffffffffu, 0x80000000u | r);
        EMIT(e_shrx(&e, r, x, (r + x) & 15));
        assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_SHRX);
        assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
        assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_RAX + x);
        assert_int_equal(op[2].reg.value, ZYDIS_REGISTER_RAX + ((r + x) & 15));
        EMIT(e_shlx(&e, r, x, (r * x) & 15));
        assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_SHLX);
        assert_int_equal(op[2].reg.value, ZYDIS_REGISTER_RAX + ((r * x) & 15));
        EMIT(e_rorx(&e, r, x, 12 + k));
        assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_RORX);
        assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_RAX + x);
        assert_int_equal(op[2].imm.value.u, 12 + k);
        EMIT(e_pext_ctx(&e, r, x, offs[k]));
        assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_PEXT);
        assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
        assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_RAX + x);
        check_mem(&op[2], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP,
                  ZYDIS_REGISTER_NONE, 0, offs[k]);
        EMIT(e_movzx8(&e, r, x));
        assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_MOVZX);
        assert_int_equal(op[1].reg.value, x < 4 ? ZYDIS_REGISTER_AL + x
                                                : ZYDIS_REGISTER_SPL + x - 4);
        EMIT(e_movzx16(&e, r, x));
        assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_AX + x);
        for (unsigned bits = 16; bits <= 64; bits *= 2) {
          EMIT(e_mov_r_r(&e, r, x, bits));
          ZydisRegister w = bits == 64   ? ZYDIS_REGISTER_RAX
                            : bits == 32 ? ZYDIS_REGISTER_EAX
                                         : ZYDIS_REGISTER_AX;
          assert_int_equal(op[0].reg.value, w + r);
          assert_int_equal(op[1].reg.value, w + x);
        }
        for (size_t d = 0; d < 4; d++) {
          for (unsigned bits = 32; bits <= 64; bits *= 2) {
            ZydisRegister w =
                bits == 64 ? ZYDIS_REGISTER_RAX : ZYDIS_REGISTER_EAX;
            EMIT(e_lea(&e, bits, r, (int)((x + 3) & 15), (int)x, 1u << (d & 3),
                       disps[d]));
            assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_LEA);
            assert_int_equal(op[0].reg.value, w + r);
            check_mem(&op[1], ZYDIS_REGISTER_NONE, w + ((x + 3) & 15), w + x,
                      1u << (d & 3), disps[d]);
            EMIT(e_lea(&e, bits, r, (int)x, -1, 1, disps[d]));
            check_mem(&op[1], ZYDIS_REGISTER_NONE, w + x, ZYDIS_REGISTER_NONE,
                      0, disps[d]);
          }
        }
      }
    }
    EMIT(e_test_r_r(&e, r));
    assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_TEST);
    assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
    assert_int_equal(op[1].reg.value, ZYDIS_REGISTER_RAX + r);
    EMIT(e_not(&e, r));
    assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_NOT);
    assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
    EMIT(e_cmp_r_i32(&e, r, r & 1 ? -0x1000 : 0xfff));
    assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_CMP);
    assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
    assert_int_equal(op[1].imm.value.s, r & 1 ? -0x1000 : 0xfff);
    EMIT(e_mov_r32_i(&e, r, 0x80000001u));
    assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_EAX + r);
    assert_int_equal(op[1].imm.value.u & 0xffffffffu, 0x80000001u);
    EMIT(e_mov_r_i(&e, r, 0x123456789abcull));
    assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
    assert_int_equal(op[1].imm.value.u, 0x123456789abcull);
  }
  EMIT(e_mov_ctx_i32(&e, 0x108, 0x80000001u));
  assert_int_equal(op[1].imm.value.u & 0xffffffffu, 0x80000001u);
  check_mem(&op[0], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP, ZYDIS_REGISTER_NONE,
            0, 0x108);
  EMIT(e_jmp_ctx(&e, 0xf0));
  assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_JMP);
  check_mem(&op[0], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP, ZYDIS_REGISTER_NONE,
            0, 0xf0);
  for (unsigned r = 0; r < 16; r++) {
    EMIT(e_jmp_r(&e, r));
    assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_JMP);
    assert_int_equal(op[0].type, ZYDIS_OPERAND_TYPE_REGISTER);
    assert_int_equal(op[0].reg.value, ZYDIS_REGISTER_RAX + r);
  }
  EMIT(e_call_ctx(&e, 0x12345));
  assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_CALL);
  check_mem(&op[0], ZYDIS_REGISTER_SS, ZYDIS_REGISTER_RSP, ZYDIS_REGISTER_NONE,
            0, 0x12345);
  /* rel8 branches (loop, jrcxz) reach a label 127 bytes on; 128 bytes on,
     e_finish refuses them. */
  for (int far = 0; far < 2; far++)
    for (int k = 0; k < 2; k++) {
      uint8_t br[160];
      e_init(&e, br, 0x1000, sizeof(br));
      int l = e_label(&e);
      if (k)
        e_loop(&e, l);
      else
        e_jrcxz(&e, l);
      e_nops(&e, 127u + (unsigned)far);
      e_bind(&e, l);
      assert_int_equal(e_finish(&e), !far);
      if (!far) {
        decode(br, 2, &di, op);
        assert_int_equal(di.mnemonic,
                         k ? ZYDIS_MNEMONIC_LOOP : ZYDIS_MNEMONIC_JRCXZ);
        assert_int_equal(di.length, 2);
        assert_int_equal(br[1], 127);
      }
    }
  /* A 64-bit constant plus a scaled index. */
  e_init(&e, buf, 0x1000, sizeof(buf));
  e_lea(&e, 64, 3, -1, 9, 4, 0x123456789ull);
  assert_true(e_finish(&e));
  ZydisDecoder d;
  ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  assert_true(ZYAN_SUCCESS(ZydisDecoderDecodeFull(&d, buf, e.pos, &di, op)));
  assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_MOV);
  assert_int_equal(op[1].imm.value.u, 0x123456789ull);
  assert_true(ZYAN_SUCCESS(
      ZydisDecoderDecodeFull(&d, buf + di.length, e.pos - di.length, &di, op)));
  check_mem(&op[1], ZYDIS_REGISTER_NONE, ZYDIS_REGISTER_RBX, ZYDIS_REGISTER_R9,
            4, 0);
  /* Alignment padding: NOPs only, up to the next multiple of 64 of the
     executable address, from every misalignment. */
  for (unsigned mis = 0; mis < 64; mis++) {
    uint8_t pad[128];
    e_init(&e, pad, 0x1000 + mis, sizeof(pad));
    e_align(&e, 64);
    assert_true(e_finish(&e));
    assert_int_equal((0x1000 + mis + e.pos) % 64, 0);
    for (size_t at = 0; at < e.pos; at += di.length) {
      assert_true(ZYAN_SUCCESS(
          ZydisDecoderDecodeFull(&d, pad + at, e.pos - at, &di, op)));
      assert_int_equal(di.mnemonic, ZYDIS_MNEMONIC_NOP);
    }
  }
}

int main(int argc, char **argv) {
  int rc = vmmt_select_engine(argc > 1 ? argc : 2,
                              argc > 1 ? argv : (char *[]){argv[0], "bt"});
  if (rc != 0)
    return rc;
  if (vmmt_engine != VMM_ENGINE_BT) {
    printf("SKIP: test_bt tests the BT engine only\n");
    return VMMT_SKIP;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_emitter),
      cmocka_unit_test(test_auto_engine),
      cmocka_unit_test(test_cache_size_config),
      cmocka_unit_test(test_bt_flags_config),
      cmocka_unit_test(test_count_exact),
      cmocka_unit_test(test_count_unavailable),
      cmocka_unit_test(test_insn_limit),
      cmocka_unit_test(test_rep_huge_limit),
      cmocka_unit_test(test_kick_endless),
      cmocka_unit_test(test_kick_rep_huge),
      cmocka_unit_test(test_kick_self_loop),
      cmocka_unit_test(test_kick_warm_links),
      cmocka_unit_test(test_kick_region),
      cmocka_unit_test(test_region_smc),
      cmocka_unit_test(test_region_rip_wrap),
      cmocka_unit_test(test_region_cuts),
      cmocka_unit_test(test_xmm_lazy),
      cmocka_unit_test(test_flags_entry),
      cmocka_unit_test(test_flags_entry_mismatch),
      cmocka_unit_test(test_flags_entry_written),
      cmocka_unit_test(test_region_random),
      cmocka_unit_test(test_flags_entry_random),
      cmocka_unit_test(test_decode_reuse),
      cmocka_unit_test(test_precise_fault),
      cmocka_unit_test(test_exception_exits),
      cmocka_unit_test(test_sw_breakpoint),
      cmocka_unit_test(test_singlestep),
      cmocka_unit_test(test_hw_breakpoint),
      cmocka_unit_test(test_guest_trap_flag),
      cmocka_unit_test(test_smc_host_write),
      cmocka_unit_test(test_smc_discard),
      cmocka_unit_test(test_smc_same_unit),
      cmocka_unit_test(test_smc_other_vcpu),
      cmocka_unit_test(test_smc_other_vcpu_race),
      cmocka_unit_test(test_mmio_rmw),
      cmocka_unit_test(test_dirty_log),
      cmocka_unit_test(test_dirty_log_race),
      cmocka_unit_test(test_wild_access),
      cmocka_unit_test(test_tables_outside_ram),
      cmocka_unit_test(test_addr16_wraps),
      cmocka_unit_test(test_cross_page_access),
      cmocka_unit_test(test_bit_offset_confined),
      cmocka_unit_test(test_sync_completes_read),
      cmocka_unit_test(test_adaptive_retranslation),
      cmocka_unit_test(test_fpu_virtual_controls),
      cmocka_unit_test(test_fpu_across_callouts),
      cmocka_unit_test(test_invlpg_remap),
      cmocka_unit_test(test_cpuid),
      cmocka_unit_test(test_small_cache),
      cmocka_unit_test(test_two_engines),
      cmocka_unit_test(test_high_stack),
  };
  return vmmt_run_group(tests);
}
