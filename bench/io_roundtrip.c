/*
 * Port-I/O exit round trip: libvmm (KVM engine, registered port handler)
 * against a raw KVM_RUN loop on the same guest code, in the same process,
 * interleaved so both see the same machine load. Prints both times per
 * exit and their ratio.
 *
 * The guest runs in 64-bit user mode (CPL 3), which executes natively even
 * under a software nested hypervisor, so what is measured is the exit path
 * and not the emulation of guest instructions:
 *     1: out 0x80, al; dec ecx; jnz 1b; out 0x81, al
 *
 *   bench_io_roundtrip [exits-per-round] [rounds]
 */
#include <fcntl.h>
#include <libvmm/vmm.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (4u << 20)
#define TABLES 0x100000
#define CODE 0x10000

static const uint8_t guest[] = {
    0xe6, 0x80,       /* 1: out 0x80, al */
    0xff, 0xc9,       /* dec ecx */
    0x75, 0xfa,       /* jnz 1b */
    0xe6, 0x81,       /* out 0x81, al: done */
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* ---------------------------------------------------------------------- */
/* The reference: raw ioctls, nothing but what the exit loop needs.       */

struct raw {
  int kvm, vm, vcpu;
  struct kvm_run *run;
  uint8_t *mem;
};

static void raw_setup(struct raw *r) {
  r->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (r->kvm < 0)
    die("/dev/kvm");
  r->vm = ioctl(r->kvm, KVM_CREATE_VM, 0);
  if (r->vm < 0 || ioctl(r->vm, KVM_SET_TSS_ADDR, 0xfffbd000) < 0)
    die("KVM_CREATE_VM");
  r->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (r->mem == MAP_FAILED)
    die("mmap");
  struct kvm_userspace_memory_region region = {
      .slot = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)r->mem};
  if (ioctl(r->vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
    die("KVM_SET_USER_MEMORY_REGION");
  r->vcpu = ioctl(r->vm, KVM_CREATE_VCPU, 0);
  int size = ioctl(r->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  r->run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED,
                r->vcpu, 0);
  if (r->vcpu < 0 || r->run == MAP_FAILED)
    die("KVM_CREATE_VCPU");
  struct {
    struct kvm_cpuid2 c;
    struct kvm_cpuid_entry2 e[256];
  } cpuid = {.c.nent = 256};
  if (ioctl(r->kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0 ||
      ioctl(r->vcpu, KVM_SET_CPUID2, &cpuid) < 0)
    die("cpuid");

  /* Identity map of the first 1 GiB with user pages, and a TSS whose I/O
     bitmap allows every port (some nested hypervisors check it even at
     IOPL 3). */
  uint64_t *pml4 = (uint64_t *)(r->mem + TABLES);
  uint64_t *pdpt = (uint64_t *)(r->mem + TABLES + 0x1000);
  uint64_t *pd = (uint64_t *)(r->mem + TABLES + 0x2000);
  pml4[0] = (TABLES + 0x1000) | 7;
  pdpt[0] = (TABLES + 0x2000) | 7;
  for (uint64_t i = 0; i < 512; i++)
    pd[i] = (i << 21) | 0x87;
  uint8_t *tss = r->mem + TABLES + 0x3000;
  uint16_t iomap = 0x68;
  memcpy(tss + 0x66, &iomap, 2);
  tss[0x68 + 0x2000] = 0xff;

  struct kvm_sregs s;
  if (ioctl(r->vcpu, KVM_GET_SREGS, &s) < 0)
    die("KVM_GET_SREGS");
  struct kvm_segment cs = {.limit = 0xffffffff, .selector = 0x33, .type = 11,
                           .present = 1, .dpl = 3, .s = 1, .l = 1, .g = 1};
  struct kvm_segment ds = {.limit = 0xffffffff, .selector = 0x2b, .type = 3,
                           .present = 1, .dpl = 3, .s = 1, .db = 1, .g = 1};
  s.cs = cs;
  s.ds = s.es = s.fs = s.gs = s.ss = ds;
  s.tr = (struct kvm_segment){.base = TABLES + 0x3000, .limit = 0x68 + 0x2000,
                              .selector = 0x38, .type = 11, .present = 1};
  s.cr0 = 0x80010033;
  s.cr3 = TABLES;
  s.cr4 = 0x620;
  s.efer = 0x500;
  if (ioctl(r->vcpu, KVM_SET_SREGS, &s) < 0)
    die("KVM_SET_SREGS");
  memcpy(r->mem + CODE, guest, sizeof(guest));
}

static double raw_round(struct raw *r, unsigned n) {
  struct kvm_regs regs = {.rip = CODE, .rcx = n, .rflags = 0x3002};
  if (ioctl(r->vcpu, KVM_SET_REGS, &regs) < 0)
    die("KVM_SET_REGS");
  unsigned seen = 0;
  double t0 = now();
  for (;;) {
    if (ioctl(r->vcpu, KVM_RUN, 0) < 0)
      die("KVM_RUN");
    if (r->run->exit_reason != KVM_EXIT_IO) {
      fprintf(stderr, "raw: unexpected exit %u\n", r->run->exit_reason);
      exit(1);
    }
    if (r->run->io.port == 0x81)
      break;
    seen++;
  }
  double t = now() - t0;
  if (seen != n) {
    fprintf(stderr, "raw: %u exits, expected %u\n", seen, n);
    exit(1);
  }
  return t / n;
}

/* ---------------------------------------------------------------------- */
/* libvmm: the same guest, exits served by a registered handler.          */

struct lib {
  vmm_vm *vm;
  vmm_vcpu *vcpu;
  unsigned seen;
};

static int port80(vmm_vcpu *vcpu, uint64_t port, void *data, uint32_t len,
                  bool is_write, void *opaque) {
  (void)vcpu, (void)port, (void)data, (void)len, (void)is_write;
  ((struct lib *)opaque)->seen++;
  return 0;
}

static void lib_check(int err, const char *what) {
  if (err < 0) {
    fprintf(stderr, "libvmm: %s: %s\n", what, vmm_strerror(err));
    exit(1);
  }
}

static void lib_setup(struct lib *l) {
  struct vmm_vm_config cfg;
  vmm_vm_config_init(&cfg);
  cfg.engine = VMM_ENGINE_KVM;
  lib_check(vmm_vm_create(&cfg, &l->vm), "create");
  lib_check(vmm_mem_slot_add(l->vm, 0, MEM_SIZE, NULL, 0, NULL), "slot");
  lib_check(vmm_mem_write(l->vm, CODE, guest, sizeof(guest)), "write");
  lib_check(vmm_io_register(l->vm, VMM_IO_PORT, 0x80, 1, port80, l), "io");
  lib_check(vmm_vcpu_create(l->vm, 0, &l->vcpu), "vcpu");
  struct vmm_mode_setup ms = {.mode = VMM_MODE_LONG64, .cpl = 3,
                              .tables = TABLES, .identity_size = 1ull << 30};
  lib_check(vmm_vcpu_set_mode(l->vcpu, &ms), "mode");
}

static double lib_round(struct lib *l, unsigned n) {
  struct vmm_regs regs;
  lib_check(vmm_vcpu_get_regs(l->vcpu, &regs), "get_regs");
  regs.rip = CODE;
  regs.rcx = n;
  lib_check(vmm_vcpu_set_regs(l->vcpu, &regs), "set_regs");
  l->seen = 0;
  struct vmm_exit *e;
  double t0 = now();
  lib_check(vmm_vcpu_run(l->vcpu, &e), "run");
  double t = now() - t0;
  if (e->reason != VMM_EXIT_IO || e->io.port != 0x81 || l->seen != n) {
    fprintf(stderr, "libvmm: exit %d port %#x after %u exits\n", e->reason,
            e->io.port, l->seen);
    exit(1);
  }
  return t / n;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 20000;
  unsigned rounds = argc > 2 ? (unsigned)atoi(argv[2]) : 7;
  if (n == 0 || rounds == 0 || rounds > 100) {
    fprintf(stderr, "usage: %s [exits-per-round] [rounds<=100]\n", argv[0]);
    return 2;
  }
  if (!vmm_engine_available(VMM_ENGINE_KVM)) {
    fprintf(stderr, "KVM is not available here\n");
    return 77;
  }
  struct raw raw;
  struct lib lib;
  raw_setup(&raw);
  lib_setup(&lib);
  raw_round(&raw, n / 10 + 1); /* warm up both */
  lib_round(&lib, n / 10 + 1);

  double traw[100], tlib[100], ratio[100];
  for (unsigned i = 0; i < rounds; i++) {
    /* Alternate the order so drift in machine load hits both alike. */
    if (i % 2) {
      traw[i] = raw_round(&raw, n);
      tlib[i] = lib_round(&lib, n);
    } else {
      tlib[i] = lib_round(&lib, n);
      traw[i] = raw_round(&raw, n);
    }
    ratio[i] = tlib[i] / traw[i];
  }
  qsort(traw, rounds, sizeof(double), cmp_double);
  qsort(tlib, rounds, sizeof(double), cmp_double);
  qsort(ratio, rounds, sizeof(double), cmp_double);
  printf("port-I/O exit round trip, %u exits x %u rounds (medians)\n", n,
         rounds);
  printf("  raw KVM_RUN loop : %8.3f us/exit\n", traw[rounds / 2] * 1e6);
  printf("  libvmm (KVM)     : %8.3f us/exit\n", tlib[rounds / 2] * 1e6);
  printf("  ratio lib/raw    : %8.4f  (per-round ratios: min %.4f, max %.4f)\n",
         ratio[rounds / 2], ratio[0], ratio[rounds - 1]);
  vmm_vm_destroy(lib.vm);
  return 0;
}
