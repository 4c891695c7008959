/*
 * difftest's sequence generator: random 64-bit user-mode instruction
 * sequences, encoded with Zydis from a table of instruction forms, with
 * the random initial state they run from. docs/difftest.md describes the
 * guest layout and the rules the generator keeps (reserved registers,
 * addresses, undefined flags).
 */
#ifndef DIFFTEST_GEN_H
#define DIFFTEST_GEN_H

#include <Zydis/Zydis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- guest layout (guest-physical = linear, identity mapped) ---------- */
#define DT_RAM_SIZE 0x200000ull
#define DT_IDT 0x1000ull    /* 256 64-bit gates */
#define DT_STUBS 0x2000ull  /* exception stubs, 8 bytes per vector */
#define DT_KSTACK 0x8000ull /* TSS.RSP0: exception frames end here */
#define DT_FRAME_LO (DT_KSTACK - 0x100) /* compared: the frames */
#define DT_CODE 0x10000ull /* code pages: sequences start in the first */
#define DT_CODE_SIZE 0x2000ull
/* Memory set from the initial image and compared after every run: */
#define DT_MEM 0x1f000ull
#define DT_MEM_SIZE 0x8000ull
#define DT_NP_PAGE 0x1f000ull /* not present */
#define DT_DATA 0x20000ull    /* four data pages */
#define DT_DATA_SIZE 0x4000ull
#define DT_STACK_PAGE 0x24000ull /* RSP starts in the middle */
#define DT_RO_PAGE 0x25000ull    /* user, read-only */
#define DT_SUP_PAGE 0x26000ull   /* supervisor only */
#define DT_PT 0x30000ull         /* the 4 KiB page table of the first 2 MiB */
#define DT_TABLES 0x100000ull    /* vmm_vcpu_set_mode() tables */
#define DT_MMIO 0x40000000ull    /* one page of MMIO, outside every slot */
#define DT_END_PORT 0x3f         /* "out 0x3f, al" ends a sequence */
#define DT_FAULT_PORT 0x40       /* the stub of vector v writes 0x40 + v */
#define DT_SYSCALL_PORT 0x60     /* the SYSCALL entry (LSTAR) writes this */
#define DT_SYSCALL_STUB (DT_STUBS + 32 * 8)

/* Instruction set extensions the generator may use (CPUID of both). */
enum dt_feature {
  DT_F_BASE = 0,
  DT_F_SSE3,
  DT_F_SSSE3,
  DT_F_SSE41,
  DT_F_SSE42,
  DT_F_POPCNT,
  DT_F_LZCNT,
  DT_F_BMI1,
  DT_F_BMI2,
  DT_F_ADX,
  DT_F_MOVBE,
  DT_F_AES,
  DT_F_PCLMUL,
  DT_F_CX16,
  DT_F_LAHF,
  DT_F__COUNT
};

/* One unit of a sequence, dropped or kept as a whole by the minimizer. */
enum dt_item_kind {
  DT_ITEM_INSN, /* one instruction */
  DT_ITEM_SKIP, /* a short forward branch over one instruction (body) */
  DT_ITEM_RAW,  /* position-independent bytes (call/ret idioms) */
  DT_ITEM_LOOP, /* mov ecx, n; body; dec ecx; jnz body (rawlen: n) */
};

struct dt_item {
  uint8_t kind;
  uint8_t group;  /* enum in gen.c, for statistics */
  uint8_t prefix; /* INSN: a legacy prefix put in front, or 0 */
  uint8_t rawlen;
  uint8_t raw[64];
  ZydisEncoderRequest req;  /* INSN: the instruction; SKIP: the branch */
  ZydisEncoderRequest body; /* SKIP: the instruction branched over;
                               LOOP: the loop body */
};

#define DT_MAX_ITEMS 48

/* The initial state of one sequence (both engines start from it). */
struct dt_state {
  uint64_t gpr[16]; /* rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15 */
  uint64_t rflags;
  uint64_t fs_base, gs_base;
  uint8_t xmm[16][16];
  uint32_t mxcsr;
  /* x87: control and status words (every exception masked, no exception
     pending), the abridged tag word and ST0-ST7 (80 bits each) */
  uint16_t fcw, fsw;
  uint8_t ftw;
  uint8_t st[8][10];
  uint8_t mem[DT_MEM_SIZE]; /* DT_MEM .. DT_MEM + DT_MEM_SIZE */
};

struct dt_seq {
  uint64_t seed, index;
  uint64_t code; /* address of the first instruction */
  size_t n;
  struct dt_item items[DT_MAX_ITEMS];
  struct dt_state init;
  /* Fields of the x87 images the sequence may store that are not
     compared (docs/difftest.md): the pointers (FIP, FCS, FOP, FDP, FDS)
     of fnstenv/fnsave images, the MXCSR_MASK of fxsave images. */
  size_t nskip;
  struct {
    uint64_t addr, len;
  } skip[DT_MAX_ITEMS];
};

/* Encoded sequence, ready to be written at seq->code. */
struct dt_code {
  uint8_t bytes[DT_MAX_ITEMS * 32 + 16];
  size_t len;
  /* Start address and RFLAGS bits left undefined before each
     instruction (the instruction at insn_addr[i] is preceded by flags
     whose undefined bits are undef_before[i]); the end marker is last. */
  size_t ninsn;
  uint64_t insn_addr[DT_MAX_ITEMS * 2 + 1];
  uint32_t undef_before[DT_MAX_ITEMS * 2 + 1];
  /* The same for the x87 condition codes (DT_FSW_C0..C3). */
  uint16_t fundef_before[DT_MAX_ITEMS * 2 + 1];
  uint16_t fundef; /* while assembling */
};

/* x87 condition codes in the status word. */
#define DT_FSW_CC 0x4700u

struct dt_gen_config {
  bool features[DT_F__COUNT];
  unsigned max_len; /* items per sequence, 1..DT_MAX_ITEMS */
  bool mmio;        /* MMIO operands in some integer instructions */
  uint32_t groups;  /* generator groups to draw from (bit per group), 0: all */
};

/* Generate sequence number index of the run seeded with seed. */
void dt_generate(const struct dt_gen_config *cfg, uint64_t seed, uint64_t index,
                 struct dt_seq *seq);

/*
 * Encode seq (possibly with items removed by the minimizer) and compute
 * the undefined-flags bookkeeping. Returns false if an item no longer
 * encodes (never for generated sequences).
 */
bool dt_assemble(const struct dt_seq *seq, struct dt_code *code);

/* Undefined RFLAGS bits in effect at address rip (a fault's RIP, or the
   end marker). Returns all arithmetic flags for an unknown address. */
uint32_t dt_undef_at(const struct dt_code *code, uint64_t rip);
/* Undefined x87 condition codes (FSW bits) in effect at rip; all four for
   an unknown address. */
uint16_t dt_fundef_at(const struct dt_code *code, uint64_t rip);

/* Name of a generator group, for statistics. */
const char *dt_group_name(unsigned group);
unsigned dt_group_count(void);
/* The group of that name, or -1. */
int dt_group_find(const char *name, size_t len);

/* Deterministic 64-bit generator (splitmix64 seeding a xoshiro256**). */
struct dt_rng {
  uint64_t s[4];
};
void dt_rng_seed(struct dt_rng *r, uint64_t a, uint64_t b);
uint64_t dt_rng_next(struct dt_rng *r);

#endif
