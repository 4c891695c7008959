/*
 * difftest's generator. A sequence is a list of items drawn from weighted
 * groups: table-driven instruction forms (mnemonic + operand kinds,
 * encoded by Zydis's encoder) and small macros for the instructions whose
 * implicit operands need set-up (string instructions, divisions, bit tests
 * with register offsets on memory, the stack, branches, MXCSR loads).
 *
 * Rules kept so both engines see a well-defined program:
 *  - r15 holds the data base and r14 a small index; neither is ever
 *    written, so explicit memory operands ([r15 + r14*s + d], [rip + d],
 *    [d32], fs:/gs:[d32], [rsp + d]) land where the generator aimed them:
 *    the data pages (aligned, unaligned, crossing pages), the stack page,
 *    and for a few integer forms the MMIO page. RSP changes only through
 *    stack instructions, whose depth is tracked.
 *  - Every candidate instruction is encoded and decoded again; one that
 *    writes a reserved register, or reads a flag left undefined by an
 *    earlier instruction (Zydis's flag tables), is drawn again.
 *  - Control flow only goes forward, so every sequence ends.
 */
#include "gen.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* Random numbers                                                           */

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void dt_rng_seed(struct dt_rng *r, uint64_t a, uint64_t b) {
  uint64_t x = a * 0x2545f4914f6cdd1dull ^ (b + 0x632be59bd9b4e019ull);
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix(&x);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t dt_rng_next(struct dt_rng *r) {
  uint64_t *s = r->s;
  uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return res;
}

static unsigned rn(struct dt_rng *r, unsigned n) {
  return (unsigned)((dt_rng_next(r) >> 32) * n >> 32);
}
static bool chance(struct dt_rng *r, unsigned percent) {
  return rn(r, 100) < percent;
}

/* Integer values with the edges arithmetic bugs live at. */
static uint64_t rnd_int(struct dt_rng *r) {
  /* Value tables, laid out by hand. */
  /* clang-format off */
  static const uint64_t special[] = {
      0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
      0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
      0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull, ~1ull,
      0x8000000000000001ull, 0xffffffff80000000ull};
  /* clang-format on */
  unsigned k = rn(r, 100);
  if (k < 15)
    return special[rn(r, sizeof(special) / sizeof(special[0]))];
  if (k < 35)
    return (uint64_t)((int64_t)rn(r, 64) - 32);
  if (k < 45)
    return dt_rng_next(r) & 0xffffffff;
  return dt_rng_next(r);
}

/* 32- and 64-bit floating-point patterns: zeros, infinities, NaNs
   (quiet, signalling), denormals, extremes, ordinary numbers. */
static void rnd_lane(struct dt_rng *r, uint8_t *p, unsigned bytes) {
  /* clang-format off */
  static const uint32_t f32[] = {
      0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x7f800000,
      0xff800000, 0x7fc00000, 0xffc00000, 0x7fa00000, 0x00000001,
      0x807fffff, 0x00800000, 0x7f7fffff, 0x4f000000, 0xcf000000,
      0x3effffff, 0x4b000000, 0x5f000000};
  static const uint64_t f64[] = {
      0, 0x8000000000000000ull, 0x3ff0000000000000ull,
      0xbff0000000000000ull, 0x7ff0000000000000ull, 0xfff0000000000000ull,
      0x7ff8000000000000ull, 0x7ff4000000000000ull, 0x0000000000000001ull,
      0x000fffffffffffffull, 0x0010000000000000ull, 0x7fefffffffffffffull,
      0x41e0000000000000ull, 0xc1e0000000000000ull, 0x43e0000000000000ull,
      0x3fdfffffffffffffull, 0x4330000000000000ull};
  /* clang-format on */
  unsigned k = rn(r, 100);
  if (bytes == 4) {
    uint32_t v;
    if (k < 30)
      v = f32[rn(r, sizeof(f32) / sizeof(f32[0]))];
    else if (k < 60) /* a float of moderate magnitude */
      v = (uint32_t)((rn(r, 2) << 31) | ((100 + rn(r, 56)) << 23) |
                     (dt_rng_next(r) & 0x7fffff));
    else
      v = (uint32_t)rnd_int(r);
    memcpy(p, &v, 4);
  } else {
    uint64_t v;
    if (k < 30)
      v = f64[rn(r, sizeof(f64) / sizeof(f64[0]))];
    else if (k < 60)
      v = ((uint64_t)rn(r, 2) << 63) | ((uint64_t)(990 + rn(r, 70)) << 52) |
          (dt_rng_next(r) & 0xfffffffffffffull);
    else
      v = rnd_int(r);
    memcpy(p, &v, 8);
  }
}

/* An 80-bit extended value from a 64-bit integer (exact). */
static void f80_from_int(int64_t v, uint8_t *p) {
  uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  uint16_t se = v < 0 ? 0x8000 : 0;
  if (mag) {
    int lz = __builtin_clzll(mag);
    mag <<= lz;
    se |= (uint16_t)(0x3fff + 63 - lz);
  }
  memcpy(p, &mag, 8);
  memcpy(p + 8, &se, 2);
}

/* 80-bit extended patterns: zeros, infinities, NaNs (quiet, signalling,
   the indefinite), denormals, extremes, and the encodings the 80387 had
   and later processors reject as invalid operands (#IA): pseudo-NaNs,
   pseudo-infinities, unnormals (integer bit clear), and pseudo-denormals
   (integer bit set with a zero exponent, which are accepted). */
static void rnd_f80(struct dt_rng *r, uint8_t *p) {
  uint64_t m;
  uint16_t e, sign = (uint16_t)(rn(r, 2) << 15);
  const uint64_t J = 1ull << 63, Q = 1ull << 62;
  uint64_t low = dt_rng_next(r) & (Q - 1);
  switch (rn(r, 16)) {
  case 0: e = 0, m = 0; break;                                 /* zero */
  case 1: e = 0x7fff, m = J; break;                            /* infinity */
  case 2: e = 0x7fff, m = J | Q | (rn(r, 2) ? low : 0); break; /* QNaN */
  case 3: e = 0x7fff, m = J | (low ? low : 1); break;          /* SNaN */
  case 4: e = 0, m = low ? low : 1; break;                     /* denormal */
  case 5: e = 0, m = J | low; break; /* pseudo-denormal */
  case 6: e = (uint16_t)(1 + rn(r, 0x7ffe)), m = low; break; /* unnormal */
  case 7: e = 0x7fff, m = rn(r, 2) ? Q | low : low; break; /* pseudo-NaN/inf */
  case 8: e = rn(r, 2) ? 0x7ffe : 1, m = rn(r, 2) ? ~0ull : J; break;
  case 9: f80_from_int((int64_t)rnd_int(r), p); return;
  case 10: e = 0x3fff, m = J | (rn(r, 2) ? 0 : low); break; /* about 1 */
  case 11: e = (uint16_t)(0x3fff + 63 + rn(r, 3) - 1), m = J | low; break;
  default:
    e = (uint16_t)(0x3fff - 70 + rn(r, 140)), m = J | dt_rng_next(r);
    break;
  }
  e |= sign;
  memcpy(p, &m, 8);
  memcpy(p + 8, &e, 2);
}

static void rnd_fill(struct dt_rng *r, uint8_t *p, size_t n) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    switch (rn(r, 4)) {
    case 0:
      rnd_lane(r, p + i, 4);
      rnd_lane(r, p + i + 4, 4);
      break;
    case 1: rnd_lane(r, p + i, 8); break;
    default: {
      uint64_t v = rn(r, 3) ? dt_rng_next(r) : rnd_int(r);
      memcpy(p + i, &v, 8);
    }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Instruction forms                                                        */

enum group {
  G_ALU,
  G_SHIFT,
  G_MULDIV,
  G_BIT,
  G_CMOV,
  G_MOV,
  G_ATOMIC,
  G_STRING,
  G_STACK,
  G_FLAGS,
  G_BRANCH,
  G_BMI,
  G_SSE_MOV,
  G_SSE_FP,
  G_SSE_INT,
  G_SSE_CVT,
  G_SSE_SHUF,
  G_SSE41,
  G_SSE42,
  G_CRYPTO,
  G_MXCSR,
  G_SMC,
  G_SYS,
  G_X87,
  G_X87_CTL,
  G__COUNT
};

static const char *const group_names[G__COUNT] = {
    "alu",     "shift",    "muldiv",  "bit",    "cmov/setcc",
    "mov",     "atomic",   "string",  "stack",  "flags",
    "branch",  "bmi/adx",  "sse-mov", "sse-fp", "sse-int",
    "sse-cvt", "sse-shuf", "sse4.1",  "sse4.2", "aes/clmul",
    "mxcsr",   "smc",      "system",  "x87",    "x87-ctl"};

static const unsigned group_weight[G__COUNT] = {
    [G_ALU] = 13,     [G_SHIFT] = 6,  [G_MULDIV] = 5,  [G_BIT] = 5,
    [G_CMOV] = 5,     [G_MOV] = 8,    [G_ATOMIC] = 4,  [G_STRING] = 4,
    [G_STACK] = 5,    [G_FLAGS] = 2,  [G_BRANCH] = 5,  [G_BMI] = 4,
    [G_SSE_MOV] = 6,  [G_SSE_FP] = 7, [G_SSE_INT] = 7, [G_SSE_CVT] = 3,
    [G_SSE_SHUF] = 4, [G_SSE41] = 4,  [G_SSE42] = 2,   [G_CRYPTO] = 1,
    [G_MXCSR] = 1,    [G_SMC] = 2,    [G_SYS] = 2,     [G_X87] = 7,
    [G_X87_CTL] = 2};

int dt_group_find(const char *name, size_t len) {
  for (unsigned g = 0; g < G__COUNT; g++)
    if (strlen(group_names[g]) == len && !strncmp(group_names[g], name, len))
      return (int)g;
  return -1;
}

const char *dt_group_name(unsigned g) {
  return g < G__COUNT ? group_names[g] : "?";
}
unsigned dt_group_count(void) {
  return G__COUNT;
}

/* Operand kinds, with a size code: 0 = the form's operand size S. */
enum {
  K_NONE,
  K_G,
  K_GM,
  K_M,
  K_I,
  K_I8,
  K_X,
  K_XM,
  K_ONE,
  K_CL,
  K_MA,
  K_I64,
  K_ST0, /* x87 ST(0) */
  K_STI  /* x87 ST(i), any i */
};
enum { Z_S, Z_8, Z_16, Z_32, Z_64, Z_128 };
#define OP(k, z) ((uint8_t)((k) | ((z) << 4)))
#define G OP(K_G, Z_S)
#define G8 OP(K_G, Z_8)
#define G16 OP(K_G, Z_16)
#define G32 OP(K_G, Z_32)
#define G64 OP(K_G, Z_64)
#define GM OP(K_GM, Z_S)
#define GM8 OP(K_GM, Z_8)
#define GM16 OP(K_GM, Z_16)
#define GM32 OP(K_GM, Z_32)
#define GM64 OP(K_GM, Z_64)
#define M OP(K_M, Z_S)
#define M32 OP(K_M, Z_32)
#define M64 OP(K_M, Z_64)
#define M128 OP(K_M, Z_128)
#define I OP(K_I, Z_S)
#define I8 OP(K_I8, Z_S)
#define I64 OP(K_I64, Z_64)
#define X OP(K_X, Z_128)
#define XM OP(K_XM, Z_128)
#define ONE OP(K_ONE, Z_S)
#define CL OP(K_CL, Z_8)
#define MA OP(K_MA, Z_S)
#define ST0 OP(K_ST0, Z_S)
#define STI OP(K_STI, Z_S)

/* Operand sizes (bit mask) a form takes as S. */
#define S8 1u
#define S16 2u
#define S32 4u
#define S64 8u
#define SALL (S8 | S16 | S32 | S64)
#define SW (S16 | S32 | S64)
#define SD (S32 | S64)

/* Attributes. */
#define A_LOCK 1u      /* may take a lock prefix with a memory destination */
#define A_MMIO 2u      /* its memory operand may be MMIO */
#define A_UNALIGNED 4u /* a 16-byte memory operand need not be aligned */
#define A_SEG 8u       /* may take an FS/GS override */
#define A_NOBODY 16u   /* not inside a branched-over body */

struct form {
  ZydisMnemonic mn;
  uint8_t group, feat, sizes, msize; /* msize: memory bytes if not S */
  uint8_t attr;
  uint8_t op[4];
};

#define F(mn, grp, feat, sz, ms, at, ...)                                      \
  {                                                                            \
    ZYDIS_MNEMONIC_##mn, grp, DT_F_##feat, sz, ms, at, {                       \
      __VA_ARGS__                                                              \
    }                                                                          \
  }
#define ALU2(mn)                                                               \
  F(mn, G_ALU, BASE, SALL, 0, A_LOCK | A_MMIO | A_SEG, GM, G),                 \
      F(mn, G_ALU, BASE, SALL, 0, A_MMIO | A_SEG, G, GM),                      \
      F(mn, G_ALU, BASE, SALL, 0, A_LOCK | A_MMIO | A_SEG, GM, I)
#define SHIFT(mn)                                                              \
  F(mn, G_SHIFT, BASE, SALL, 0, A_SEG, GM, ONE),                               \
      F(mn, G_SHIFT, BASE, SALL, 0, A_SEG, GM, CL),                            \
      F(mn, G_SHIFT, BASE, SALL, 0, A_SEG, GM, I8)
#define CMOV(cc) F(CMOV##cc, G_CMOV, BASE, SW, 0, A_SEG, G, GM)
#define SETCC(cc) F(SET##cc, G_CMOV, BASE, S8, 0, A_SEG, GM)
#define FP2(mn, grp, feat) F(mn, grp, feat, 0, 16, 0, X, XM)
#define SS(mn) F(mn, G_SSE_FP, BASE, 0, 4, 0, X, XM)
#define SD_(mn) F(mn, G_SSE_FP, BASE, 0, 8, 0, X, XM)
#define PI(mn) F(mn, G_SSE_INT, BASE, 0, 16, 0, X, XM)
#define PI3(mn) F(mn, G_SSE_INT, SSSE3, 0, 16, 0, X, XM)
#define PI41(mn) F(mn, G_SSE41, SSE41, 0, 16, 0, X, XM)
#define PSH(mn)                                                                \
  F(mn, G_SSE_INT, BASE, 0, 16, 0, X, XM),                                     \
      F(mn, G_SSE_INT, BASE, 0, 0, 0, X, I8)
#define PMOVX(mn, ms) F(mn, G_SSE41, SSE41, 0, ms, 0, X, XM)
/* x87: a memory operand of ms bytes, or register forms. */
#define X87M(mn, ms) F(mn, G_X87, BASE, 0, ms, A_SEG, M)
#define X87R(mn, ...) F(mn, G_X87, BASE, 0, 0, 0, __VA_ARGS__)
#define X87ARITH(mn, mnp, mni)                                                 \
  X87M(mn, 4), X87M(mn, 8), X87R(mn, ST0, STI), X87R(mn, STI, ST0),            \
      X87R(mnp, STI, ST0), X87M(mni, 2), X87M(mni, 4)

/* The forms, a table laid out by hand. */
/* clang-format off */
static const struct form forms[] = {
    /* integer ALU */
    ALU2(ADD), ALU2(OR), ALU2(ADC), ALU2(SBB), ALU2(AND), ALU2(SUB),
    ALU2(XOR),
    F(CMP, G_ALU, BASE, SALL, 0, A_MMIO | A_SEG, GM, G),
    F(CMP, G_ALU, BASE, SALL, 0, A_MMIO | A_SEG, G, GM),
    F(CMP, G_ALU, BASE, SALL, 0, A_MMIO | A_SEG, GM, I),
    F(TEST, G_ALU, BASE, SALL, 0, A_MMIO | A_SEG, GM, G),
    F(TEST, G_ALU, BASE, SALL, 0, A_MMIO | A_SEG, GM, I),
    F(INC, G_ALU, BASE, SALL, 0, A_LOCK | A_MMIO | A_SEG, GM),
    F(DEC, G_ALU, BASE, SALL, 0, A_LOCK | A_MMIO | A_SEG, GM),
    F(NEG, G_ALU, BASE, SALL, 0, A_LOCK | A_MMIO | A_SEG, GM),
    F(NOT, G_ALU, BASE, SALL, 0, A_LOCK | A_MMIO | A_SEG, GM),
    F(CBW, G_ALU, BASE, 0, 0, 0, 0), F(CWDE, G_ALU, BASE, 0, 0, 0, 0),
    F(CDQE, G_ALU, BASE, 0, 0, 0, 0), F(CWD, G_ALU, BASE, 0, 0, 0, 0),
    F(CDQ, G_ALU, BASE, 0, 0, 0, 0), F(CQO, G_ALU, BASE, 0, 0, 0, 0),
    /* shifts and rotates */
    SHIFT(SHL), SHIFT(SHR), SHIFT(SAR), SHIFT(ROL), SHIFT(ROR), SHIFT(RCL),
    SHIFT(RCR),
    F(SHLD, G_SHIFT, BASE, SW, 0, A_SEG, GM, G, I8),
    F(SHLD, G_SHIFT, BASE, SW, 0, A_SEG, GM, G, CL),
    F(SHRD, G_SHIFT, BASE, SW, 0, A_SEG, GM, G, I8),
    F(SHRD, G_SHIFT, BASE, SW, 0, A_SEG, GM, G, CL),
    /* multiplication (divisions are a macro) */
    F(MUL, G_MULDIV, BASE, SALL, 0, A_SEG, GM),
    F(IMUL, G_MULDIV, BASE, SALL, 0, A_SEG, GM),
    F(IMUL, G_MULDIV, BASE, SW, 0, A_SEG, G, GM),
    F(IMUL, G_MULDIV, BASE, SW, 0, A_SEG, G, GM, I),
    /* bit operations */
    F(BT, G_BIT, BASE, SW, 0, A_SEG, G, G),
    F(BTS, G_BIT, BASE, SW, 0, A_SEG, G, G),
    F(BTR, G_BIT, BASE, SW, 0, A_SEG, G, G),
    F(BTC, G_BIT, BASE, SW, 0, A_SEG, G, G),
    F(BT, G_BIT, BASE, SW, 0, A_SEG, GM, I8),
    F(BTS, G_BIT, BASE, SW, 0, A_LOCK | A_SEG, GM, I8),
    F(BTR, G_BIT, BASE, SW, 0, A_LOCK | A_SEG, GM, I8),
    F(BTC, G_BIT, BASE, SW, 0, A_LOCK | A_SEG, GM, I8),
    F(BSF, G_BIT, BASE, SW, 0, A_SEG, G, GM),
    F(BSR, G_BIT, BASE, SW, 0, A_SEG, G, GM),
    F(BSWAP, G_BIT, BASE, SD, 0, 0, G),
    F(POPCNT, G_BIT, POPCNT, SW, 0, A_SEG, G, GM),
    F(LZCNT, G_BIT, LZCNT, SW, 0, A_SEG, G, GM),
    F(TZCNT, G_BIT, BMI1, SW, 0, A_SEG, G, GM),
    /* cmov / setcc */
    CMOV(B), CMOV(BE), CMOV(L), CMOV(LE), CMOV(NB), CMOV(NBE), CMOV(NL),
    CMOV(NLE), CMOV(NO), CMOV(NP), CMOV(NS), CMOV(NZ), CMOV(O), CMOV(P),
    CMOV(S), CMOV(Z),
    SETCC(B), SETCC(BE), SETCC(L), SETCC(LE), SETCC(NB), SETCC(NBE),
    SETCC(NL), SETCC(NLE), SETCC(NO), SETCC(NP), SETCC(NS), SETCC(NZ),
    SETCC(O), SETCC(P), SETCC(S), SETCC(Z),
    /* moves */
    F(MOV, G_MOV, BASE, SALL, 0, A_MMIO | A_SEG, GM, G),
    F(MOV, G_MOV, BASE, SALL, 0, A_MMIO | A_SEG, G, GM),
    F(MOV, G_MOV, BASE, SALL, 0, A_MMIO | A_SEG, GM, I),
    F(MOV, G_MOV, BASE, S64, 0, 0, G, I64),
    F(MOVZX, G_MOV, BASE, SW, 0, A_MMIO | A_SEG, G, GM8),
    F(MOVZX, G_MOV, BASE, SD, 0, A_MMIO | A_SEG, G, GM16),
    F(MOVSX, G_MOV, BASE, SW, 0, A_MMIO | A_SEG, G, GM8),
    F(MOVSX, G_MOV, BASE, SD, 0, A_MMIO | A_SEG, G, GM16),
    F(MOVSXD, G_MOV, BASE, S64, 0, A_SEG, G, GM32),
    F(LEA, G_MOV, BASE, SW, 0, 0, G, MA),
    F(MOVBE, G_MOV, MOVBE, SW, 0, A_SEG, G, M),
    F(MOVBE, G_MOV, MOVBE, SW, 0, A_SEG, M, G),
    F(MOVNTI, G_MOV, BASE, SD, 0, 0, M, G),
    F(NOP, G_MOV, BASE, SW, 0, 0, GM),
    F(NOP, G_MOV, BASE, 0, 0, 0, 0),
    /* exchanges and atomics */
    F(XCHG, G_ATOMIC, BASE, SALL, 0, A_SEG, GM, G),
    F(XADD, G_ATOMIC, BASE, SALL, 0, A_LOCK | A_SEG, GM, G),
    F(CMPXCHG, G_ATOMIC, BASE, SALL, 0, A_LOCK | A_SEG, GM, G),
    F(CMPXCHG8B, G_ATOMIC, BASE, 0, 0, A_LOCK | A_SEG, M64),
    F(CMPXCHG16B, G_ATOMIC, CX16, 0, 0, A_LOCK | A_SEG, M128),
    /* flags */
    F(CLC, G_FLAGS, BASE, 0, 0, 0, 0), F(STC, G_FLAGS, BASE, 0, 0, 0, 0),
    F(CMC, G_FLAGS, BASE, 0, 0, 0, 0),
    F(CLD, G_FLAGS, BASE, 0, 0, A_NOBODY, 0),
    F(STD, G_FLAGS, BASE, 0, 0, A_NOBODY, 0),
    F(LAHF, G_FLAGS, LAHF, 0, 0, 0, 0), F(SAHF, G_FLAGS, LAHF, 0, 0, 0, 0),
    /* BMI1, BMI2, ADX */
    F(ANDN, G_BMI, BMI1, SD, 0, A_SEG, G, G, GM),
    F(BEXTR, G_BMI, BMI1, SD, 0, A_SEG, G, GM, G),
    F(BLSI, G_BMI, BMI1, SD, 0, A_SEG, G, GM),
    F(BLSMSK, G_BMI, BMI1, SD, 0, A_SEG, G, GM),
    F(BLSR, G_BMI, BMI1, SD, 0, A_SEG, G, GM),
    F(BZHI, G_BMI, BMI2, SD, 0, A_SEG, G, GM, G),
    F(MULX, G_BMI, BMI2, SD, 0, A_SEG, G, G, GM),
    F(PDEP, G_BMI, BMI2, SD, 0, A_SEG, G, G, GM),
    F(PEXT, G_BMI, BMI2, SD, 0, A_SEG, G, G, GM),
    F(RORX, G_BMI, BMI2, SD, 0, A_SEG, G, GM, I8),
    F(SARX, G_BMI, BMI2, SD, 0, A_SEG, G, GM, G),
    F(SHLX, G_BMI, BMI2, SD, 0, A_SEG, G, GM, G),
    F(SHRX, G_BMI, BMI2, SD, 0, A_SEG, G, GM, G),
    F(ADCX, G_BMI, ADX, SD, 0, A_SEG, G, GM),
    F(ADOX, G_BMI, ADX, SD, 0, A_SEG, G, GM),
    /* SSE moves */
    F(MOVAPS, G_SSE_MOV, BASE, 0, 16, 0, X, XM),
    F(MOVAPS, G_SSE_MOV, BASE, 0, 16, 0, M128, X),
    F(MOVAPD, G_SSE_MOV, BASE, 0, 16, 0, X, XM),
    F(MOVDQA, G_SSE_MOV, BASE, 0, 16, 0, X, XM),
    F(MOVDQA, G_SSE_MOV, BASE, 0, 16, 0, M128, X),
    F(MOVUPS, G_SSE_MOV, BASE, 0, 16, A_UNALIGNED | A_SEG, X, XM),
    F(MOVUPS, G_SSE_MOV, BASE, 0, 16, A_UNALIGNED | A_SEG, M128, X),
    F(MOVUPD, G_SSE_MOV, BASE, 0, 16, A_UNALIGNED, X, XM),
    F(MOVDQU, G_SSE_MOV, BASE, 0, 16, A_UNALIGNED | A_SEG, X, XM),
    F(MOVDQU, G_SSE_MOV, BASE, 0, 16, A_UNALIGNED | A_SEG, M128, X),
    F(LDDQU, G_SSE_MOV, SSE3, 0, 16, A_UNALIGNED, X, M128),
    F(MOVSS, G_SSE_MOV, BASE, 0, 4, A_SEG, X, XM),
    F(MOVSS, G_SSE_MOV, BASE, 0, 4, A_SEG, M32, X),
    F(MOVSD, G_SSE_MOV, BASE, 0, 8, A_SEG, X, XM),
    F(MOVSD, G_SSE_MOV, BASE, 0, 8, A_SEG, M64, X),
    F(MOVD, G_SSE_MOV, BASE, 0, 0, A_SEG, X, GM32),
    F(MOVD, G_SSE_MOV, BASE, 0, 0, A_SEG, GM32, X),
    F(MOVQ, G_SSE_MOV, BASE, 0, 0, A_SEG, X, GM64),
    F(MOVQ, G_SSE_MOV, BASE, 0, 0, A_SEG, GM64, X),
    F(MOVQ, G_SSE_MOV, BASE, 0, 8, A_SEG, X, XM),
    F(MOVQ, G_SSE_MOV, BASE, 0, 8, A_SEG, M64, X),
    F(MOVHPS, G_SSE_MOV, BASE, 0, 8, 0, X, M64),
    F(MOVHPS, G_SSE_MOV, BASE, 0, 8, 0, M64, X),
    F(MOVLPS, G_SSE_MOV, BASE, 0, 8, 0, X, M64),
    F(MOVLPD, G_SSE_MOV, BASE, 0, 8, 0, M64, X),
    F(MOVHPD, G_SSE_MOV, BASE, 0, 8, 0, X, M64),
    F(MOVHLPS, G_SSE_MOV, BASE, 0, 0, 0, X, X),
    F(MOVLHPS, G_SSE_MOV, BASE, 0, 0, 0, X, X),
    F(MOVMSKPS, G_SSE_MOV, BASE, SD, 0, 0, G, X),
    F(MOVMSKPD, G_SSE_MOV, BASE, SD, 0, 0, G, X),
    F(PMOVMSKB, G_SSE_MOV, BASE, SD, 0, 0, G, X),
    F(MOVDDUP, G_SSE_MOV, SSE3, 0, 8, 0, X, XM),
    F(MOVSHDUP, G_SSE_MOV, SSE3, 0, 16, 0, X, XM),
    F(MOVSLDUP, G_SSE_MOV, SSE3, 0, 16, 0, X, XM),
    F(MOVNTDQ, G_SSE_MOV, BASE, 0, 16, 0, M128, X),
    F(MOVNTPS, G_SSE_MOV, BASE, 0, 16, 0, M128, X),
    F(MOVNTDQA, G_SSE_MOV, SSE41, 0, 16, 0, X, M128),
    /* SSE floating point */
    FP2(ADDPS, G_SSE_FP, BASE), FP2(ADDPD, G_SSE_FP, BASE),
    FP2(SUBPS, G_SSE_FP, BASE), FP2(SUBPD, G_SSE_FP, BASE),
    FP2(MULPS, G_SSE_FP, BASE), FP2(MULPD, G_SSE_FP, BASE),
    FP2(DIVPS, G_SSE_FP, BASE), FP2(DIVPD, G_SSE_FP, BASE),
    FP2(MINPS, G_SSE_FP, BASE), FP2(MINPD, G_SSE_FP, BASE),
    FP2(MAXPS, G_SSE_FP, BASE), FP2(MAXPD, G_SSE_FP, BASE),
    FP2(SQRTPS, G_SSE_FP, BASE), FP2(SQRTPD, G_SSE_FP, BASE),
    FP2(RCPPS, G_SSE_FP, BASE), FP2(RSQRTPS, G_SSE_FP, BASE),
    FP2(ANDPS, G_SSE_FP, BASE), FP2(ANDPD, G_SSE_FP, BASE),
    FP2(ANDNPS, G_SSE_FP, BASE), FP2(ANDNPD, G_SSE_FP, BASE),
    FP2(ORPS, G_SSE_FP, BASE), FP2(ORPD, G_SSE_FP, BASE),
    FP2(XORPS, G_SSE_FP, BASE), FP2(XORPD, G_SSE_FP, BASE),
    FP2(ADDSUBPS, G_SSE_FP, SSE3), FP2(ADDSUBPD, G_SSE_FP, SSE3),
    FP2(HADDPS, G_SSE_FP, SSE3), FP2(HADDPD, G_SSE_FP, SSE3),
    FP2(HSUBPS, G_SSE_FP, SSE3), FP2(HSUBPD, G_SSE_FP, SSE3),
    SS(ADDSS), SS(SUBSS), SS(MULSS), SS(DIVSS), SS(MINSS), SS(MAXSS),
    SS(SQRTSS), SS(RCPSS), SS(RSQRTSS),
    SD_(ADDSD), SD_(SUBSD), SD_(MULSD), SD_(DIVSD), SD_(MINSD), SD_(MAXSD),
    SD_(SQRTSD),
    F(CMPPS, G_SSE_FP, BASE, 0, 16, 0, X, XM, I8),
    F(CMPPD, G_SSE_FP, BASE, 0, 16, 0, X, XM, I8),
    F(CMPSS, G_SSE_FP, BASE, 0, 4, 0, X, XM, I8),
    F(CMPSD, G_SSE_FP, BASE, 0, 8, 0, X, XM, I8),
    F(COMISS, G_SSE_FP, BASE, 0, 4, 0, X, XM),
    F(UCOMISS, G_SSE_FP, BASE, 0, 4, 0, X, XM),
    F(COMISD, G_SSE_FP, BASE, 0, 8, 0, X, XM),
    F(UCOMISD, G_SSE_FP, BASE, 0, 8, 0, X, XM),
    /* conversions */
    F(CVTSI2SS, G_SSE_CVT, BASE, SD, 0, A_SEG, X, GM),
    F(CVTSI2SD, G_SSE_CVT, BASE, SD, 0, A_SEG, X, GM),
    F(CVTSS2SI, G_SSE_CVT, BASE, SD, 4, 0, G, XM),
    F(CVTTSS2SI, G_SSE_CVT, BASE, SD, 4, 0, G, XM),
    F(CVTSD2SI, G_SSE_CVT, BASE, SD, 8, 0, G, XM),
    F(CVTTSD2SI, G_SSE_CVT, BASE, SD, 8, 0, G, XM),
    F(CVTSS2SD, G_SSE_CVT, BASE, 0, 4, 0, X, XM),
    F(CVTSD2SS, G_SSE_CVT, BASE, 0, 8, 0, X, XM),
    F(CVTPS2PD, G_SSE_CVT, BASE, 0, 8, 0, X, XM),
    F(CVTDQ2PD, G_SSE_CVT, BASE, 0, 8, 0, X, XM),
    FP2(CVTPD2PS, G_SSE_CVT, BASE), FP2(CVTDQ2PS, G_SSE_CVT, BASE),
    FP2(CVTPS2DQ, G_SSE_CVT, BASE), FP2(CVTTPS2DQ, G_SSE_CVT, BASE),
    FP2(CVTPD2DQ, G_SSE_CVT, BASE), FP2(CVTTPD2DQ, G_SSE_CVT, BASE),
    /* packed integers */
    PI(PADDB), PI(PADDW), PI(PADDD), PI(PADDQ), PI(PSUBB), PI(PSUBW),
    PI(PSUBD), PI(PSUBQ), PI(PADDSB), PI(PADDSW), PI(PADDUSB), PI(PADDUSW),
    PI(PSUBSB), PI(PSUBSW), PI(PSUBUSB), PI(PSUBUSW), PI(PMULLW),
    PI(PMULHW), PI(PMULHUW), PI(PMULUDQ), PI(PMADDWD), PI(PSADBW),
    PI(PAVGB), PI(PAVGW), PI(PMINUB), PI(PMAXUB), PI(PMINSW), PI(PMAXSW),
    PI(PCMPEQB), PI(PCMPEQW), PI(PCMPEQD), PI(PCMPGTB), PI(PCMPGTW),
    PI(PCMPGTD), PI(PAND), PI(PANDN), PI(POR), PI(PXOR), PI(PACKSSWB),
    PI(PACKSSDW), PI(PACKUSWB),
    PSH(PSLLW), PSH(PSLLD), PSH(PSLLQ), PSH(PSRLW), PSH(PSRLD), PSH(PSRLQ),
    PSH(PSRAW), PSH(PSRAD),
    F(PSLLDQ, G_SSE_INT, BASE, 0, 0, 0, X, I8),
    F(PSRLDQ, G_SSE_INT, BASE, 0, 0, 0, X, I8),
    PI3(PABSB), PI3(PABSW), PI3(PABSD), PI3(PSIGNB), PI3(PSIGNW),
    PI3(PSIGND), PI3(PHADDW), PI3(PHADDD), PI3(PHADDSW), PI3(PHSUBW),
    PI3(PHSUBD), PI3(PHSUBSW), PI3(PMADDUBSW), PI3(PMULHRSW),
    /* shuffles and unpacks */
    F(SHUFPS, G_SSE_SHUF, BASE, 0, 16, 0, X, XM, I8),
    F(SHUFPD, G_SSE_SHUF, BASE, 0, 16, 0, X, XM, I8),
    F(PSHUFD, G_SSE_SHUF, BASE, 0, 16, 0, X, XM, I8),
    F(PSHUFHW, G_SSE_SHUF, BASE, 0, 16, 0, X, XM, I8),
    F(PSHUFLW, G_SSE_SHUF, BASE, 0, 16, 0, X, XM, I8),
    F(PSHUFB, G_SSE_SHUF, SSSE3, 0, 16, 0, X, XM),
    F(PALIGNR, G_SSE_SHUF, SSSE3, 0, 16, 0, X, XM, I8),
    FP2(UNPCKLPS, G_SSE_SHUF, BASE), FP2(UNPCKHPS, G_SSE_SHUF, BASE),
    FP2(UNPCKLPD, G_SSE_SHUF, BASE), FP2(UNPCKHPD, G_SSE_SHUF, BASE),
    FP2(PUNPCKLBW, G_SSE_SHUF, BASE), FP2(PUNPCKLWD, G_SSE_SHUF, BASE),
    FP2(PUNPCKLDQ, G_SSE_SHUF, BASE), FP2(PUNPCKLQDQ, G_SSE_SHUF, BASE),
    FP2(PUNPCKHBW, G_SSE_SHUF, BASE), FP2(PUNPCKHWD, G_SSE_SHUF, BASE),
    FP2(PUNPCKHDQ, G_SSE_SHUF, BASE), FP2(PUNPCKHQDQ, G_SSE_SHUF, BASE),
    F(PEXTRW, G_SSE_SHUF, BASE, 0, 0, 0, G32, X, I8),
    F(PINSRW, G_SSE_SHUF, BASE, 0, 2, A_SEG, X, GM32, I8),
    /* SSE4.1 */
    PI41(PMULLD), PI41(PMULDQ), PI41(PMINSB), PI41(PMINSD), PI41(PMINUW),
    PI41(PMINUD), PI41(PMAXSB), PI41(PMAXSD), PI41(PMAXUW), PI41(PMAXUD),
    PI41(PCMPEQQ), PI41(PACKUSDW), PI41(PTEST), PI41(PHMINPOSUW),
    PMOVX(PMOVZXBW, 8), PMOVX(PMOVZXBD, 4), PMOVX(PMOVZXBQ, 2),
    PMOVX(PMOVZXWD, 8), PMOVX(PMOVZXWQ, 4), PMOVX(PMOVZXDQ, 8),
    PMOVX(PMOVSXBW, 8), PMOVX(PMOVSXBD, 4), PMOVX(PMOVSXBQ, 2),
    PMOVX(PMOVSXWD, 8), PMOVX(PMOVSXWQ, 4), PMOVX(PMOVSXDQ, 8),
    F(PEXTRB, G_SSE41, SSE41, 0, 1, A_SEG, GM32, X, I8),
    F(PEXTRW, G_SSE41, SSE41, 0, 2, A_SEG, M, X, I8),
    F(PEXTRD, G_SSE41, SSE41, 0, 0, A_SEG, GM32, X, I8),
    F(PEXTRQ, G_SSE41, SSE41, 0, 0, A_SEG, GM64, X, I8),
    F(PINSRB, G_SSE41, SSE41, 0, 1, A_SEG, X, GM32, I8),
    F(PINSRD, G_SSE41, SSE41, 0, 0, A_SEG, X, GM32, I8),
    F(PINSRQ, G_SSE41, SSE41, 0, 0, A_SEG, X, GM64, I8),
    F(EXTRACTPS, G_SSE41, SSE41, 0, 0, A_SEG, GM32, X, I8),
    F(INSERTPS, G_SSE41, SSE41, 0, 4, 0, X, XM, I8),
    F(BLENDPS, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(BLENDPD, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(PBLENDW, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(BLENDVPS, G_SSE41, SSE41, 0, 16, 0, X, XM),
    F(BLENDVPD, G_SSE41, SSE41, 0, 16, 0, X, XM),
    F(PBLENDVB, G_SSE41, SSE41, 0, 16, 0, X, XM),
    F(ROUNDPS, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(ROUNDPD, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(ROUNDSS, G_SSE41, SSE41, 0, 4, 0, X, XM, I8),
    F(ROUNDSD, G_SSE41, SSE41, 0, 8, 0, X, XM, I8),
    F(DPPS, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(DPPD, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    F(MPSADBW, G_SSE41, SSE41, 0, 16, 0, X, XM, I8),
    /* SSE4.2 */
    F(PCMPGTQ, G_SSE42, SSE42, 0, 16, 0, X, XM),
    F(PCMPISTRI, G_SSE42, SSE42, 0, 16, A_UNALIGNED, X, XM, I8),
    F(PCMPISTRM, G_SSE42, SSE42, 0, 16, A_UNALIGNED, X, XM, I8),
    F(PCMPESTRI, G_SSE42, SSE42, 0, 16, A_UNALIGNED, X, XM, I8),
    F(PCMPESTRM, G_SSE42, SSE42, 0, 16, A_UNALIGNED, X, XM, I8),
    F(CRC32, G_SSE42, SSE42, S32, 0, A_SEG, G, GM8),
    F(CRC32, G_SSE42, SSE42, S32, 0, A_SEG, G, GM16),
    F(CRC32, G_SSE42, SSE42, SD, 0, A_SEG, G, GM),
    /* AES, carry-less multiplication */
    F(AESENC, G_CRYPTO, AES, 0, 16, 0, X, XM),
    F(AESENCLAST, G_CRYPTO, AES, 0, 16, 0, X, XM),
    F(AESDEC, G_CRYPTO, AES, 0, 16, 0, X, XM),
    F(AESDECLAST, G_CRYPTO, AES, 0, 16, 0, X, XM),
    F(AESIMC, G_CRYPTO, AES, 0, 16, 0, X, XM),
    F(AESKEYGENASSIST, G_CRYPTO, AES, 0, 16, 0, X, XM, I8),
    F(PCLMULQDQ, G_CRYPTO, PCLMUL, 0, 16, 0, X, XM, I8),
    /* MXCSR (loads are a macro) */
    F(STMXCSR, G_MXCSR, BASE, 0, 0, A_SEG, M32),
    /* x87 (control words, status word stores, environments and save
       areas are macros: gen_x87_ctl) */
    X87M(FLD, 4), X87M(FLD, 8), X87M(FLD, 10), X87R(FLD, STI),
    X87M(FILD, 2), X87M(FILD, 4), X87M(FILD, 8), X87M(FBLD, 10),
    X87R(FLD1, 0), X87R(FLDZ, 0), X87R(FLDPI, 0), X87R(FLDL2E, 0),
    X87R(FLDL2T, 0), X87R(FLDLG2, 0), X87R(FLDLN2, 0),
    X87M(FST, 4), X87M(FST, 8), X87R(FST, STI),
    X87M(FSTP, 4), X87M(FSTP, 8), X87M(FSTP, 10), X87R(FSTP, STI),
    X87M(FIST, 2), X87M(FIST, 4),
    X87M(FISTP, 2), X87M(FISTP, 4), X87M(FISTP, 8),
    X87M(FISTTP, 2), X87M(FISTTP, 4), X87M(FISTTP, 8), X87M(FBSTP, 10),
    X87R(FXCH, STI),
    X87ARITH(FADD, FADDP, FIADD), X87ARITH(FSUB, FSUBP, FISUB),
    X87ARITH(FSUBR, FSUBRP, FISUBR), X87ARITH(FMUL, FMULP, FIMUL),
    X87ARITH(FDIV, FDIVP, FIDIV), X87ARITH(FDIVR, FDIVRP, FIDIVR),
    X87M(FCOM, 4), X87M(FCOM, 8), X87R(FCOM, STI),
    X87M(FCOMP, 4), X87M(FCOMP, 8), X87R(FCOMP, STI), X87R(FCOMPP, 0),
    X87R(FUCOM, STI), X87R(FUCOMP, ST0, STI), X87R(FUCOMPP, 0),
    X87M(FICOM, 2), X87M(FICOM, 4), X87M(FICOMP, 2), X87M(FICOMP, 4),
    X87R(FCOMI, ST0, STI), X87R(FCOMIP, ST0, STI),
    X87R(FUCOMI, ST0, STI), X87R(FUCOMIP, ST0, STI),
    X87R(FTST, 0), X87R(FXAM, 0),
    X87R(FCHS, 0), X87R(FABS, 0), X87R(FSQRT, 0), X87R(FRNDINT, 0),
    X87R(FSCALE, 0), X87R(FXTRACT, 0), X87R(FPREM, 0), X87R(FPREM1, 0),
    X87R(F2XM1, 0), X87R(FYL2X, 0), X87R(FYL2XP1, 0), X87R(FPTAN, 0),
    X87R(FPATAN, 0), X87R(FSIN, 0), X87R(FCOS, 0), X87R(FSINCOS, 0),
    X87R(FCMOVB, ST0, STI), X87R(FCMOVBE, ST0, STI),
    X87R(FCMOVE, ST0, STI), X87R(FCMOVU, ST0, STI),
    X87R(FCMOVNB, ST0, STI), X87R(FCMOVNBE, ST0, STI),
    X87R(FCMOVNE, ST0, STI), X87R(FCMOVNU, ST0, STI),
    X87R(FFREE, STI), X87R(FDECSTP, 0), X87R(FINCSTP, 0), X87R(FNOP, 0),
    X87R(FWAIT, 0), X87R(EMMS, 0), X87R(FNINIT, 0), X87R(FNCLEX, 0),
    F(FNSTCW, G_X87_CTL, BASE, 0, 2, A_SEG, M),
};
/* clang-format on */
#define NFORMS (sizeof(forms) / sizeof(forms[0]))

/* ------------------------------------------------------------------------ */
/* Generation context                                                       */

/* Reserved: RSP (stack instructions only), R14 (index), R15 (base). */
#define REG_RSP 4
#define REG_R14 14
#define REG_R15 15

#define STACK_TOP (DT_STACK_PAGE + 0x800)
#define STACK_SLACK 0x600

struct gctx {
  const struct dt_gen_config *cfg;
  struct dt_rng rng;
  struct dt_seq *seq;
  uint32_t undef;  /* RFLAGS bits undefined right now */
  uint16_t fundef; /* x87 condition codes undefined right now */
  int df;          /* 0, 1, or -1 when unknown */
  uint64_t rsp;    /* current RSP (known: only tracked changes) */
  uint64_t pos;    /* approximate address of the next instruction */
  bool body;       /* generating the body of a branch */
  bool in_mmio;    /* the operand just made is MMIO */
};

static ZydisRegister gpr(unsigned idx, unsigned bytes) {
  static const ZydisRegister r8[16] = {
      ZYDIS_REGISTER_AL,   ZYDIS_REGISTER_CL,   ZYDIS_REGISTER_DL,
      ZYDIS_REGISTER_BL,   ZYDIS_REGISTER_SPL,  ZYDIS_REGISTER_BPL,
      ZYDIS_REGISTER_SIL,  ZYDIS_REGISTER_DIL,  ZYDIS_REGISTER_R8B,
      ZYDIS_REGISTER_R9B,  ZYDIS_REGISTER_R10B, ZYDIS_REGISTER_R11B,
      ZYDIS_REGISTER_R12B, ZYDIS_REGISTER_R13B, ZYDIS_REGISTER_R14B,
      ZYDIS_REGISTER_R15B};
  static const ZydisRegister r16[16] = {
      ZYDIS_REGISTER_AX,   ZYDIS_REGISTER_CX,   ZYDIS_REGISTER_DX,
      ZYDIS_REGISTER_BX,   ZYDIS_REGISTER_SP,   ZYDIS_REGISTER_BP,
      ZYDIS_REGISTER_SI,   ZYDIS_REGISTER_DI,   ZYDIS_REGISTER_R8W,
      ZYDIS_REGISTER_R9W,  ZYDIS_REGISTER_R10W, ZYDIS_REGISTER_R11W,
      ZYDIS_REGISTER_R12W, ZYDIS_REGISTER_R13W, ZYDIS_REGISTER_R14W,
      ZYDIS_REGISTER_R15W};
  static const ZydisRegister r32[16] = {
      ZYDIS_REGISTER_EAX,  ZYDIS_REGISTER_ECX,  ZYDIS_REGISTER_EDX,
      ZYDIS_REGISTER_EBX,  ZYDIS_REGISTER_ESP,  ZYDIS_REGISTER_EBP,
      ZYDIS_REGISTER_ESI,  ZYDIS_REGISTER_EDI,  ZYDIS_REGISTER_R8D,
      ZYDIS_REGISTER_R9D,  ZYDIS_REGISTER_R10D, ZYDIS_REGISTER_R11D,
      ZYDIS_REGISTER_R12D, ZYDIS_REGISTER_R13D, ZYDIS_REGISTER_R14D,
      ZYDIS_REGISTER_R15D};
  static const ZydisRegister r64[16] = {
      ZYDIS_REGISTER_RAX, ZYDIS_REGISTER_RCX, ZYDIS_REGISTER_RDX,
      ZYDIS_REGISTER_RBX, ZYDIS_REGISTER_RSP, ZYDIS_REGISTER_RBP,
      ZYDIS_REGISTER_RSI, ZYDIS_REGISTER_RDI, ZYDIS_REGISTER_R8,
      ZYDIS_REGISTER_R9,  ZYDIS_REGISTER_R10, ZYDIS_REGISTER_R11,
      ZYDIS_REGISTER_R12, ZYDIS_REGISTER_R13, ZYDIS_REGISTER_R14,
      ZYDIS_REGISTER_R15};
  switch (bytes) {
  case 1: return r8[idx & 15];
  case 2: return r16[idx & 15];
  case 4: return r32[idx & 15];
  default: return r64[idx & 15];
  }
}

/* A GPR of the given size; 8-bit ones include AH..BH now and then. */
static ZydisRegister rnd_gpr(struct gctx *g, unsigned bytes) {
  if (bytes == 1 && chance(&g->rng, 12))
    return (ZydisRegister)(ZYDIS_REGISTER_AH + rn(&g->rng, 4));
  return gpr(rn(&g->rng, 16), bytes);
}

/* A register free to be written: not RSP, R14 or R15. */
static unsigned rnd_free_reg(struct gctx *g) {
  static const unsigned ok[] = {0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  return ok[rn(&g->rng, sizeof(ok) / sizeof(ok[0]))];
}

/* An address for an access of size bytes (aligned to align if not 0). */
static uint64_t rnd_target(struct gctx *g, unsigned size, unsigned align) {
  struct dt_rng *r = &g->rng;
  uint64_t lo = DT_DATA, hi = DT_DATA + DT_DATA_SIZE; /* data pages */
  uint64_t t;
  unsigned k = rn(r, 100);
  uint64_t filler = g->seq->code - DT_CODE; /* int3 bytes before the code */
  if (k < 42) {
    t = lo + rn(r, (unsigned)(hi - lo - size));
    unsigned a = size >= 16 ? 16 : size;
    t &= ~(uint64_t)(a - 1);
  } else if (k < 64) {
    /* Across (or right at) a page boundary inside the data pages. */
    uint64_t b = DT_DATA + 0x1000 * (1 + rn(r, 4));
    if (chance(r, 70))
      t = b - 1 - rn(r, size > 1 ? size - 1 : 1);
    else
      t = b - size - 3 + rn(r, size + 7);
  } else if (k < 82) {
    t = lo + rn(r, (unsigned)(hi - lo - size));
  } else if (k < 89) {
    t = DT_STACK_PAGE + rn(r, 0x1000 - size);
  } else if (k < 94) {
    /* Across into a page that faults: not present below the data, the
       read-only page after the stack, the supervisor page after that. */
    static const uint64_t b[] = {DT_DATA, DT_RO_PAGE, DT_SUP_PAGE};
    t = b[rn(r, 3)] - 1 - rn(r, size > 1 ? size - 1 : 1);
  } else if (k < 97) {
    static const uint64_t p[] = {DT_NP_PAGE, DT_RO_PAGE, DT_SUP_PAGE};
    t = p[rn(r, 3)] + rn(r, 0x1000 - size);
  } else if (filler >= 64 && size <= 8) {
    /* A code page: BT keeps no write entries for it (SMC detection). */
    t = DT_CODE + rn(r, (unsigned)(filler - 16));
  } else {
    t = lo + rn(r, (unsigned)(hi - lo - size));
  }
  if (align && chance(r, 95))
    t &= ~(uint64_t)(align - 1);
  return t;
}

/* A memory operand of size bytes aimed at target. */
static ZydisEncoderOperand mem_at(struct gctx *g, ZydisEncoderRequest *req,
                                  uint64_t t, unsigned size, bool seg_ok) {
  struct dt_rng *r = &g->rng;
  const struct dt_state *st = &g->seq->init;
  ZydisEncoderOperand o;
  memset(&o, 0, sizeof(o));
  o.type = ZYDIS_OPERAND_TYPE_MEMORY;
  o.mem.size = (ZyanU16)size;
  uint64_t r15 = st->gpr[REG_R15], r14 = st->gpr[REG_R14];
  unsigned k = rn(r, 100);
  bool stack_known = g->rsp != 0;
  if (g->in_mmio) /* absolute or RIP-relative: reaches 1 GiB */
    k = chance(r, 50) ? 45 : 55;
  if (k < 30) {
    o.mem.base = ZYDIS_REGISTER_R15;
    o.mem.displacement = (int64_t)(t - r15);
  } else if (k < 45) {
    static const uint8_t sc[] = {1, 2, 4, 8};
    uint8_t s = sc[rn(r, 4)];
    o.mem.base = ZYDIS_REGISTER_R15;
    o.mem.index = ZYDIS_REGISTER_R14;
    o.mem.scale = s;
    o.mem.displacement = (int64_t)(t - r15 - r14 * s);
  } else if (k < 55) {
    o.mem.base = ZYDIS_REGISTER_RIP; /* absolute target: see assemble */
    o.mem.displacement = (int64_t)t;
  } else if (k < 65) {
    o.mem.displacement = (int64_t)t;
  } else if (k < 72) {
    o.mem.base = ZYDIS_REGISTER_R15D;
    o.mem.displacement = (int64_t)(t - r15);
  } else if (k < 80 && seg_ok) {
    bool fs = chance(r, 50);
    uint64_t base = fs ? st->fs_base : st->gs_base;
    req->prefixes |=
        fs ? ZYDIS_ATTRIB_HAS_SEGMENT_FS : ZYDIS_ATTRIB_HAS_SEGMENT_GS;
    if (chance(r, 50)) {
      o.mem.displacement = (int64_t)(t - base);
    } else {
      o.mem.base = ZYDIS_REGISTER_R14;
      o.mem.displacement = (int64_t)(t - base - r14);
    }
  } else if (k < 88 && stack_known && t >= DT_STACK_PAGE) {
    o.mem.base = ZYDIS_REGISTER_RSP;
    o.mem.displacement = (int64_t)(t - g->rsp);
  } else {
    o.mem.base = ZYDIS_REGISTER_R15;
    o.mem.displacement = (int64_t)(t - r15);
  }
  return o;
}

static ZydisEncoderOperand reg_op(ZydisRegister reg) {
  ZydisEncoderOperand o;
  memset(&o, 0, sizeof(o));
  o.type = ZYDIS_OPERAND_TYPE_REGISTER;
  o.reg.value = reg;
  return o;
}

static ZydisEncoderOperand imm_op(int64_t v) {
  ZydisEncoderOperand o;
  memset(&o, 0, sizeof(o));
  o.type = ZYDIS_OPERAND_TYPE_IMMEDIATE;
  o.imm.s = v;
  return o;
}

static unsigned zbytes(unsigned z, unsigned s) {
  switch (z) {
  case Z_8: return 1;
  case Z_16: return 2;
  case Z_32: return 4;
  case Z_64: return 8;
  case Z_128: return 16;
  default: return s;
  }
}

/* An address for LEA: any registers, any displacement. */
static ZydisEncoderOperand lea_op(struct gctx *g, unsigned size) {
  struct dt_rng *r = &g->rng;
  ZydisEncoderOperand o;
  memset(&o, 0, sizeof(o));
  o.type = ZYDIS_OPERAND_TYPE_MEMORY;
  o.mem.size = (ZyanU16)size; /* the encoder wants LEA's operand size */
  unsigned k = rn(r, 10);
  bool a32 = chance(r, 15);
  if (k < 8)
    o.mem.base = gpr(rn(r, 16), a32 ? 4 : 8);
  else if (k == 8)
    o.mem.base = ZYDIS_REGISTER_RIP;
  if (chance(r, 60)) {
    unsigned i;
    do
      i = rn(r, 16);
    while (i == REG_RSP);
    static const uint8_t sc[] = {1, 2, 4, 8};
    o.mem.index = gpr(i, a32 ? 4 : 8);
    o.mem.scale = sc[rn(r, 4)];
  }
  o.mem.displacement = chance(r, 50) ? (int64_t)(int8_t)rnd_int(r)
                                     : (int64_t)(int32_t)rnd_int(r);
  if (o.mem.base == ZYDIS_REGISTER_RIP) {
    /* Absolute target (see dt_assemble), near enough that moving the
       instruction (the minimizer does) keeps it in rel32 range. */
    o.mem.index = ZYDIS_REGISTER_NONE;
    o.mem.scale = 0;
    o.mem.displacement = (int64_t)g->pos + (o.mem.displacement >> 2);
  }
  return o;
}

static int64_t rnd_imm(struct gctx *g, unsigned bytes) {
  int64_t v = (int64_t)rnd_int(&g->rng);
  switch (bytes) {
  case 1: return (int8_t)v;
  case 2: return (int16_t)v;
  default: return (int32_t)v;
  }
}

static int64_t rnd_imm8(struct gctx *g, ZydisMnemonic mn) {
  struct dt_rng *r = &g->rng;
  /* Shift counts: mostly the interesting range. */
  if (mn == ZYDIS_MNEMONIC_SHL || mn == ZYDIS_MNEMONIC_SHR ||
      mn == ZYDIS_MNEMONIC_SAR || mn == ZYDIS_MNEMONIC_ROL ||
      mn == ZYDIS_MNEMONIC_ROR || mn == ZYDIS_MNEMONIC_RCL ||
      mn == ZYDIS_MNEMONIC_RCR || mn == ZYDIS_MNEMONIC_SHLD ||
      mn == ZYDIS_MNEMONIC_SHRD)
    return chance(r, 85) ? rn(r, 70) : rn(r, 256);
  if (mn == ZYDIS_MNEMONIC_CMPPS || mn == ZYDIS_MNEMONIC_CMPPD ||
      mn == ZYDIS_MNEMONIC_CMPSS || mn == ZYDIS_MNEMONIC_CMPSD)
    return rn(r, 8);
  return rn(r, 256);
}

/* ------------------------------------------------------------------------ */
/* Checking a candidate                                                     */

/* Conditional flag writers: a shift or rotate by a zero count, or a rep
   compare/scan with a zero count, leaves the flags alone. */
static bool flags_conditional(const ZydisDecodedInstruction *di) {
  switch (di->mnemonic) {
  case ZYDIS_MNEMONIC_SHL:
  case ZYDIS_MNEMONIC_SHR:
  case ZYDIS_MNEMONIC_SAR:
  case ZYDIS_MNEMONIC_ROL:
  case ZYDIS_MNEMONIC_ROR:
  case ZYDIS_MNEMONIC_RCL:
  case ZYDIS_MNEMONIC_RCR:
  case ZYDIS_MNEMONIC_SHLD:
  case ZYDIS_MNEMONIC_SHRD: return true;
  case ZYDIS_MNEMONIC_CMPSB:
  case ZYDIS_MNEMONIC_CMPSW:
  case ZYDIS_MNEMONIC_CMPSD:
  case ZYDIS_MNEMONIC_CMPSQ:
  case ZYDIS_MNEMONIC_SCASB:
  case ZYDIS_MNEMONIC_SCASW:
  case ZYDIS_MNEMONIC_SCASD:
  case ZYDIS_MNEMONIC_SCASQ:
    return (di->attributes &
            (ZYDIS_ATTRIB_HAS_REPE | ZYDIS_ATTRIB_HAS_REPNE)) != 0;
  default: return false;
  }
}

#define ARITH_FLAGS 0x8d5u /* CF PF AF ZF SF OF */

struct decoded {
  ZydisDecodedInstruction di;
  ZydisDecodedOperand op[ZYDIS_MAX_OPERAND_COUNT];
};

static bool decode(const uint8_t *b, size_t n, struct decoded *d) {
  ZydisDecoder dec;
  ZydisDecoderInit(&dec, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&dec, b, n, &d->di, d->op));
}

/* Flags update for one instruction: returns false if it reads an
   undefined flag. conditional: it may not execute (a branch body). */
static bool flags_step(const ZydisDecodedInstruction *di, uint32_t *undef,
                       bool conditional) {
  uint32_t tested = 0, written = 0, und = 0;
  if (di->cpu_flags) {
    tested = di->cpu_flags->tested;
    und = di->cpu_flags->undefined;
    written = di->cpu_flags->modified | di->cpu_flags->set_0 |
              di->cpu_flags->set_1 | und;
  }
  if (tested & *undef)
    return false;
  if (conditional || flags_conditional(di))
    *undef |= und;
  else
    *undef = (*undef & ~written) | und;
  *undef &= ARITH_FLAGS;
  return true;
}

/*
 * The x87 condition codes an instruction leaves undefined (SDM, each
 * instruction's "FPU Flags Affected"; Zydis's tables do not say which are
 * undefined): *written gets the codes it sets, defined or not, *und the
 * undefined ones. Returns true for the instructions that store the status
 * word (fnstsw, fnstenv, fnsave, fxsave), which must not see undefined
 * codes.
 */
#define C0 0x0100u
#define C1 0x0200u
#define C2 0x0400u
#define C3 0x4000u
static bool x87_cc(ZydisMnemonic m, uint16_t *written, uint16_t *und) {
  *written = DT_FSW_CC;
  *und = 0;
  switch (m) {
  /* C1 defined (stack fault direction, rounded up), C0 C2 C3 undefined */
  case ZYDIS_MNEMONIC_FLD:
  case ZYDIS_MNEMONIC_FILD:
  case ZYDIS_MNEMONIC_FBLD:
  case ZYDIS_MNEMONIC_FLD1:
  case ZYDIS_MNEMONIC_FLDZ:
  case ZYDIS_MNEMONIC_FLDPI:
  case ZYDIS_MNEMONIC_FLDL2E:
  case ZYDIS_MNEMONIC_FLDL2T:
  case ZYDIS_MNEMONIC_FLDLG2:
  case ZYDIS_MNEMONIC_FLDLN2:
  case ZYDIS_MNEMONIC_FST:
  case ZYDIS_MNEMONIC_FSTP:
  case ZYDIS_MNEMONIC_FIST:
  case ZYDIS_MNEMONIC_FISTP:
  case ZYDIS_MNEMONIC_FISTTP:
  case ZYDIS_MNEMONIC_FBSTP:
  case ZYDIS_MNEMONIC_FXCH:
  case ZYDIS_MNEMONIC_FADD:
  case ZYDIS_MNEMONIC_FADDP:
  case ZYDIS_MNEMONIC_FIADD:
  case ZYDIS_MNEMONIC_FSUB:
  case ZYDIS_MNEMONIC_FSUBP:
  case ZYDIS_MNEMONIC_FISUB:
  case ZYDIS_MNEMONIC_FSUBR:
  case ZYDIS_MNEMONIC_FSUBRP:
  case ZYDIS_MNEMONIC_FISUBR:
  case ZYDIS_MNEMONIC_FMUL:
  case ZYDIS_MNEMONIC_FMULP:
  case ZYDIS_MNEMONIC_FIMUL:
  case ZYDIS_MNEMONIC_FDIV:
  case ZYDIS_MNEMONIC_FDIVP:
  case ZYDIS_MNEMONIC_FIDIV:
  case ZYDIS_MNEMONIC_FDIVR:
  case ZYDIS_MNEMONIC_FDIVRP:
  case ZYDIS_MNEMONIC_FIDIVR:
  case ZYDIS_MNEMONIC_FCHS:
  case ZYDIS_MNEMONIC_FABS:
  case ZYDIS_MNEMONIC_FSQRT:
  case ZYDIS_MNEMONIC_FRNDINT:
  case ZYDIS_MNEMONIC_FSCALE:
  case ZYDIS_MNEMONIC_FXTRACT:
  case ZYDIS_MNEMONIC_F2XM1:
  case ZYDIS_MNEMONIC_FYL2X:
  case ZYDIS_MNEMONIC_FYL2XP1:
  case ZYDIS_MNEMONIC_FPATAN:
  case ZYDIS_MNEMONIC_FCMOVB:
  case ZYDIS_MNEMONIC_FCMOVBE:
  case ZYDIS_MNEMONIC_FCMOVE:
  case ZYDIS_MNEMONIC_FCMOVU:
  case ZYDIS_MNEMONIC_FCMOVNB:
  case ZYDIS_MNEMONIC_FCMOVNBE:
  case ZYDIS_MNEMONIC_FCMOVNE:
  case ZYDIS_MNEMONIC_FCMOVNU:
  case ZYDIS_MNEMONIC_FDECSTP:
  case ZYDIS_MNEMONIC_FINCSTP: *und = C0 | C2 | C3; return false;
  /* C1 and C2 (argument out of range) defined */
  case ZYDIS_MNEMONIC_FPTAN:
  case ZYDIS_MNEMONIC_FSIN:
  case ZYDIS_MNEMONIC_FCOS:
  case ZYDIS_MNEMONIC_FSINCOS: *und = C0 | C3; return false;
  /* all four defined (compared, classified, quotient bits; cleared or
     loaded) */
  case ZYDIS_MNEMONIC_FCOM:
  case ZYDIS_MNEMONIC_FCOMP:
  case ZYDIS_MNEMONIC_FCOMPP:
  case ZYDIS_MNEMONIC_FUCOM:
  case ZYDIS_MNEMONIC_FUCOMP:
  case ZYDIS_MNEMONIC_FUCOMPP:
  case ZYDIS_MNEMONIC_FICOM:
  case ZYDIS_MNEMONIC_FICOMP:
  case ZYDIS_MNEMONIC_FTST:
  case ZYDIS_MNEMONIC_FXAM:
  case ZYDIS_MNEMONIC_FPREM:
  case ZYDIS_MNEMONIC_FPREM1:
  case ZYDIS_MNEMONIC_FNINIT:
  case ZYDIS_MNEMONIC_FLDENV:
  case ZYDIS_MNEMONIC_FRSTOR:
  case ZYDIS_MNEMONIC_FXRSTOR:
  case ZYDIS_MNEMONIC_FXRSTOR64: return false;
  case ZYDIS_MNEMONIC_FNSAVE:
    return true; /* stores, then initializes */
  /* fcomi and friends: C1 cleared, C0 C2 C3 unchanged */
  case ZYDIS_MNEMONIC_FCOMI:
  case ZYDIS_MNEMONIC_FCOMIP:
  case ZYDIS_MNEMONIC_FUCOMI:
  case ZYDIS_MNEMONIC_FUCOMIP: *written = C1; return false;
  /* all four undefined */
  case ZYDIS_MNEMONIC_FFREE:
  case ZYDIS_MNEMONIC_FLDCW:
  case ZYDIS_MNEMONIC_FNSTCW:
  case ZYDIS_MNEMONIC_FNCLEX:
  case ZYDIS_MNEMONIC_FNOP: *und = DT_FSW_CC; return false;
  case ZYDIS_MNEMONIC_FNSTSW:
  case ZYDIS_MNEMONIC_FNSTENV: *und = DT_FSW_CC; return true;
  /* no change */
  case ZYDIS_MNEMONIC_FXSAVE:
  case ZYDIS_MNEMONIC_FXSAVE64: *written = 0; return true;
  default: *written = 0; return false; /* fwait, emms, non-x87 */
  }
}

/* The x87 step of one instruction: false if it stores undefined codes. */
static bool x87_step(const ZydisDecodedInstruction *di, uint16_t *fundef,
                     bool conditional) {
  uint16_t w, u;
  bool reads = x87_cc(di->mnemonic, &w, &u);
  if (reads && (*fundef & DT_FSW_CC))
    return false;
  if (conditional)
    *fundef |= u;
  else
    *fundef = (uint16_t)((*fundef & ~w) | u);
  return true;
}

static int reg_index(ZydisRegister r) {
  ZydisRegister big =
      ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, r);
  if (big >= ZYDIS_REGISTER_RAX && big <= ZYDIS_REGISTER_R15)
    return (int)(big - ZYDIS_REGISTER_RAX);
  return -1;
}

/* Registers and flags checks on a decoded candidate. */
static bool acceptable(struct gctx *g, const struct decoded *d, bool allow_rsp,
                       bool allow_rcx_rsi_rdi) {
  (void)allow_rcx_rsi_rdi;
  for (unsigned i = 0; i < d->di.operand_count; i++) {
    const ZydisDecodedOperand *o = &d->op[i];
    if (o->type != ZYDIS_OPERAND_TYPE_REGISTER ||
        !(o->actions & ZYDIS_OPERAND_ACTION_MASK_WRITE))
      continue;
    int idx = reg_index(o->reg.value);
    if (idx == REG_R14 || idx == REG_R15)
      return false;
    if (idx == REG_RSP && !allow_rsp)
      return false;
    if (o->reg.value >= ZYDIS_REGISTER_ES && o->reg.value <= ZYDIS_REGISTER_GS)
      return false;
  }
  uint32_t u = g->undef;
  uint16_t fu = g->fundef;
  if (!flags_step(&d->di, &u, g->body) || !x87_step(&d->di, &fu, g->body))
    return false;
  return true;
}

/* Encode req at the current position, check it, and append it. */
static bool encode_at(ZydisEncoderRequest *req, uint64_t addr, uint8_t *buf,
                      size_t *len) {
  ZydisEncoderRequest copy = *req;
  ZyanUSize n = 15;
  if (!ZYAN_SUCCESS(
          ZydisEncoderEncodeInstructionAbsolute(&copy, buf, &n, addr)))
    return false;
  *len = n;
  return true;
}

static void commit_flags(struct gctx *g, const struct decoded *d) {
  flags_step(&d->di, &g->undef, g->body);
  x87_step(&d->di, &g->fundef, g->body);
  if (d->di.cpu_flags) {
    uint32_t w = d->di.cpu_flags->modified | d->di.cpu_flags->set_0 |
                 d->di.cpu_flags->set_1;
    if (w & ZYDIS_CPUFLAG_DF) {
      if (g->body || (d->di.cpu_flags->modified & ZYDIS_CPUFLAG_DF))
        g->df = -1;
      else
        g->df = (d->di.cpu_flags->set_1 & ZYDIS_CPUFLAG_DF) ? 1 : 0;
    }
  }
}

static bool push_item(struct gctx *g, const struct dt_item *it) {
  struct dt_seq *s = g->seq;
  if (s->n >= g->cfg->max_len || s->n >= DT_MAX_ITEMS)
    return false;
  s->items[s->n++] = *it;
  return true;
}

/*
 * Check and append one instruction (after a legacy prefix byte if prefix
 * is not 0); false if it is not acceptable. A prefix may turn the bytes
 * into something else (66 changes the operand size, F2/F3 change SSE
 * instructions, F0 may make them invalid): what counts is what they
 * decode to, as long as the length stays the same.
 */
static bool add_insn_p(struct gctx *g, ZydisEncoderRequest *req, unsigned group,
                       bool allow_rsp, uint8_t prefix) {
  uint8_t buf[32];
  size_t n, p = prefix != 0;
  struct decoded d;
  /* Encoded where it ends up, so RIP-relative targets stay exact. */
  if (!encode_at(req, g->pos + p, buf + p, &n) || n + p > 15)
    return false;
  buf[0] = p ? prefix : buf[0];
  bool valid = decode(buf, n + p, &d);
  if (valid && (d.di.length != n + p || !acceptable(g, &d, allow_rsp, false)))
    return false;
  /* A prefix must not make it an instruction of an extension outside the
     generator's (F3 0F 2B is AMD's SSE4A movntss, for one). */
  if (valid && p && d.di.mnemonic != req->mnemonic &&
      d.di.meta.isa_ext != ZYDIS_ISA_EXT_SSE &&
      d.di.meta.isa_ext != ZYDIS_ISA_EXT_SSE2 &&
      d.di.meta.isa_ext != ZYDIS_ISA_EXT_BASE)
    return false;
  /* Invalid with a lock prefix: #UD by the architecture. Invalid with
     another prefix: "either #UD or a different instruction" (SDM, "NP"),
     so implementation-specific: not generated. */
  if (!valid && prefix != 0xf0)
    return false;
  struct dt_item it;
  memset(&it, 0, sizeof(it));
  it.kind = DT_ITEM_INSN;
  it.group = (uint8_t)group;
  it.prefix = prefix;
  it.req = *req;
  if (!push_item(g, &it))
    return false;
  if (valid) /* invalid: #UD, nothing after it runs */
    commit_flags(g, &d);
  g->pos += n + p;
  return true;
}

static bool add_insn(struct gctx *g, ZydisEncoderRequest *req, unsigned group,
                     bool allow_rsp) {
  return add_insn_p(g, req, group, allow_rsp, 0);
}

static void req_init(ZydisEncoderRequest *req, ZydisMnemonic mn) {
  memset(req, 0, sizeof(*req));
  req->machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
  req->mnemonic = mn;
}

/* ------------------------------------------------------------------------ */
/* Table forms                                                              */

static bool feature_ok(const struct gctx *g, unsigned f) {
  return f == DT_F_BASE || g->cfg->features[f];
}

/*
 * Put an edge value of the x87 operand's type into the initial memory at
 * t (when t is there): integers at their limits, packed BCD (now and then
 * with a digit that is not one), and floating-point patterns.
 */
static void plant_x87(struct gctx *g, ZydisMnemonic mn, uint64_t t,
                      unsigned size) {
  struct dt_rng *r = &g->rng;
  if (t < DT_MEM || t + size > DT_MEM + DT_MEM_SIZE)
    return;
  uint8_t *p = g->seq->init.mem + (t - DT_MEM);
  switch (mn) {
  case ZYDIS_MNEMONIC_FILD:
  case ZYDIS_MNEMONIC_FIADD:
  case ZYDIS_MNEMONIC_FISUB:
  case ZYDIS_MNEMONIC_FISUBR:
  case ZYDIS_MNEMONIC_FIMUL:
  case ZYDIS_MNEMONIC_FIDIV:
  case ZYDIS_MNEMONIC_FIDIVR:
  case ZYDIS_MNEMONIC_FICOM:
  case ZYDIS_MNEMONIC_FICOMP: {
    uint64_t v = rnd_int(r);
    if (chance(r, 30)) /* the size's own limits: 0x8000, 0x7fff.. */
      v = (1ull << (8 * size - 1)) - rn(r, 3);
    memcpy(p, &v, size);
    return;
  }
  case ZYDIS_MNEMONIC_FBLD: {
    /* 18 digits, two per byte, then the sign byte (bits 0-6 ignored). */
    for (unsigned i = 0; i < 9; i++) {
      unsigned lo = chance(r, 30) ? 9 : rn(r, 10),
               hi = chance(r, 30) ? 9 : rn(r, 10);
      p[i] = (uint8_t)(lo | hi << 4);
    }
    if (chance(r, 10)) /* not a BCD digit: the result is undefined */
      p[rn(r, 9)] |= 0xa0;
    p[9] = (uint8_t)(rn(r, 2) << 7 | (chance(r, 10) ? rn(r, 128) : 0));
    return;
  }
  default:
    if (size == 10)
      rnd_f80(r, p);
    else if (size == 4 || size == 8)
      rnd_lane(r, p, size);
    return;
  }
}

/* Build an encoder request from a form; false if it cannot be built. */
static bool build_form(struct gctx *g, const struct form *f,
                       ZydisEncoderRequest *req) {
  struct dt_rng *r = &g->rng;
  unsigned sizes[4], ns = 0;
  for (unsigned b = 0; b < 4; b++)
    if (f->sizes & (1u << b))
      sizes[ns++] = 1u << b;
  unsigned S = ns ? sizes[rn(r, ns)] : 0;
  req_init(req, f->mn);
  bool used_mem = false;
  g->in_mmio = false;
  bool mmio = g->cfg->mmio && (f->attr & A_MMIO) && !g->body && chance(r, 6);
  for (unsigned i = 0; i < 4 && f->op[i]; i++) {
    unsigned kind = f->op[i] & 15, z = f->op[i] >> 4;
    unsigned bytes = zbytes(z, S);
    ZydisEncoderOperand *o = &req->operands[i];
    bool want_mem = false;
    switch (kind) {
    case K_G: *o = reg_op(rnd_gpr(g, bytes)); break;
    case K_X:
      *o = reg_op((ZydisRegister)(ZYDIS_REGISTER_XMM0 + rn(r, 16)));
      break;
    case K_GM:
      if (!used_mem && chance(r, 45))
        want_mem = true;
      else
        *o = reg_op(rnd_gpr(g, bytes));
      break;
    case K_XM:
      if (!used_mem && chance(r, 45))
        want_mem = true;
      else
        *o = reg_op((ZydisRegister)(ZYDIS_REGISTER_XMM0 + rn(r, 16)));
      break;
    case K_M: want_mem = true; break;
    case K_I: *o = imm_op(rnd_imm(g, bytes > 4 ? 4 : bytes)); break;
    case K_I64: *o = imm_op((int64_t)rnd_int(r)); break;
    case K_I8: *o = imm_op(rnd_imm8(g, f->mn)); break;
    case K_ONE: *o = imm_op(1); break;
    case K_CL: *o = reg_op(ZYDIS_REGISTER_CL); break;
    case K_MA: *o = lea_op(g, bytes); break;
    case K_ST0: *o = reg_op(ZYDIS_REGISTER_ST0); break;
    case K_STI:
      *o = reg_op((ZydisRegister)(ZYDIS_REGISTER_ST0 + rn(r, 8)));
      break;
    default: return false;
    }
    if (want_mem) {
      unsigned msize = f->msize ? f->msize : bytes;
      if (kind == K_XM || kind == K_M)
        msize = f->msize ? f->msize : bytes;
      bool need_align = msize == 16 && (kind == K_XM || kind == K_M) &&
                        !(f->attr & A_UNALIGNED) &&
                        f->mn != ZYDIS_MNEMONIC_CMPXCHG16B;
      uint64_t t;
      if (mmio && msize <= 8) {
        g->in_mmio = true;
        t = DT_MMIO + (rn(r, 0x100) * 8 & ~(uint64_t)(msize - 1));
      } else {
        unsigned align = need_align ? 16 : 0;
        if (f->mn == ZYDIS_MNEMONIC_CMPXCHG16B && chance(r, 90))
          align = 16;
        t = rnd_target(g, msize, align);
      }
      if (f->group == G_X87 && chance(r, 60))
        plant_x87(g, f->mn, t, msize);
      *o = mem_at(g, req, t, msize, (f->attr & A_SEG) != 0 && !g->in_mmio);
      used_mem = true;
    }
    req->operand_count = (ZyanU8)(i + 1);
  }
  if (used_mem && (f->attr & A_LOCK) &&
      req->operands[0].type == ZYDIS_OPERAND_TYPE_MEMORY && !g->in_mmio &&
      chance(r, 30))
    req->prefixes |= ZYDIS_ATTRIB_HAS_LOCK;
  /* cmpxchg8b/16b and xchg with memory are fine without lock as well. */
  return true;
}

static bool gen_form(struct gctx *g, unsigned group) {
  /* Pick a form of the group whose feature both engines have. */
  unsigned cand[NFORMS], nc = 0;
  for (unsigned i = 0; i < NFORMS; i++)
    if (forms[i].group == group && feature_ok(g, forms[i].feat) &&
        !(g->body && (forms[i].attr & A_NOBODY)))
      cand[nc++] = i;
  if (nc == 0)
    return false;
  for (int tries = 0; tries < 20; tries++) {
    const struct form *f = &forms[cand[rn(&g->rng, nc)]];
    ZydisEncoderRequest req;
    if (!build_form(g, f, &req))
      continue;
    /* Now and then a prefix: ignored segment overrides, operand size,
       rep/repne, lock (often invalid: #UD). */
    static const uint8_t pfx[] = {0x2e, 0x3e, 0x26, 0x36,
                                  0x66, 0xf2, 0xf3, 0xf0};
    uint8_t p = chance(&g->rng, 4) ? pfx[rn(&g->rng, sizeof(pfx))] : 0;
    if (add_insn_p(g, &req, group, false, p))
      return true;
  }
  return false;
}

/* ------------------------------------------------------------------------ */
/* Macros                                                                   */

/* mov r, v: "mov r32, imm32" or "mov r64, simm32". */
static bool set_reg(struct gctx *g, unsigned reg, int64_t v, unsigned group) {
  ZydisEncoderRequest req;
  req_init(&req, ZYDIS_MNEMONIC_MOV);
  req.operand_count = 2;
  bool wide = v < 0 || v > 0xffffffffll;
  req.operands[0] = reg_op(gpr(reg, wide ? 8 : 4));
  req.operands[1] = imm_op(v);
  return add_insn(g, &req, group, false);
}

static bool lea_data(struct gctx *g, unsigned reg, uint64_t addr,
                     unsigned group) {
  ZydisEncoderRequest req;
  req_init(&req, ZYDIS_MNEMONIC_LEA);
  req.operand_count = 2;
  req.operands[0] = reg_op(gpr(reg, 8));
  req.operands[1] = reg_op(ZYDIS_REGISTER_NONE);
  req.operands[1].type = ZYDIS_OPERAND_TYPE_MEMORY;
  req.operands[1].mem.base = ZYDIS_REGISTER_R15;
  req.operands[1].mem.displacement =
      (int64_t)(addr - g->seq->init.gpr[REG_R15]);
  req.operands[1].mem.size = 8;
  return add_insn(g, &req, group, false);
}

/* A guarded (mostly) division. */
static bool gen_div(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  bool sgn = chance(r, 50);
  static const unsigned sz[] = {1, 2, 4, 8};
  unsigned S = sz[rn(r, 4)];
  if (chance(r, 90)) {
    ZydisEncoderRequest req;
    if (!sgn && S == 1) {
      req_init(&req, ZYDIS_MNEMONIC_MOVZX);
      req.operand_count = 2;
      req.operands[0] = reg_op(ZYDIS_REGISTER_EAX);
      req.operands[1] = reg_op(ZYDIS_REGISTER_AL);
    } else if (!sgn) {
      req_init(&req, ZYDIS_MNEMONIC_XOR);
      req.operand_count = 2;
      req.operands[0] = reg_op(ZYDIS_REGISTER_EDX);
      req.operands[1] = reg_op(ZYDIS_REGISTER_EDX);
    } else {
      static const ZydisMnemonic ext[] = {
          ZYDIS_MNEMONIC_CBW, ZYDIS_MNEMONIC_CWD, ZYDIS_MNEMONIC_CDQ,
          ZYDIS_MNEMONIC_CQO};
      req_init(&req, ext[S == 1 ? 0 : S == 2 ? 1 : S == 4 ? 2 : 3]);
    }
    if (!add_insn(g, &req, G_MULDIV, false))
      return false;
  }
  ZydisEncoderRequest req;
  req_init(&req, sgn ? ZYDIS_MNEMONIC_IDIV : ZYDIS_MNEMONIC_DIV);
  req.operand_count = 1;
  if (chance(r, 40)) {
    req.operands[0] = mem_at(g, &req, rnd_target(g, S, 0), S, true);
  } else {
    unsigned reg;
    do
      reg = rn(r, 16);
    while (reg == 0 || reg == 2); /* not the dividend */
    req.operands[0] = reg_op(gpr(reg, S));
  }
  return add_insn(g, &req, G_MULDIV, false);
}

/* A string instruction with its pointers and count set up. */
static bool gen_string(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  static const ZydisMnemonic mns[5][4] = {
      {ZYDIS_MNEMONIC_MOVSB, ZYDIS_MNEMONIC_MOVSW, ZYDIS_MNEMONIC_MOVSD,
       ZYDIS_MNEMONIC_MOVSQ},
      {ZYDIS_MNEMONIC_STOSB, ZYDIS_MNEMONIC_STOSW, ZYDIS_MNEMONIC_STOSD,
       ZYDIS_MNEMONIC_STOSQ},
      {ZYDIS_MNEMONIC_LODSB, ZYDIS_MNEMONIC_LODSW, ZYDIS_MNEMONIC_LODSD,
       ZYDIS_MNEMONIC_LODSQ},
      {ZYDIS_MNEMONIC_CMPSB, ZYDIS_MNEMONIC_CMPSW, ZYDIS_MNEMONIC_CMPSD,
       ZYDIS_MNEMONIC_CMPSQ},
      {ZYDIS_MNEMONIC_SCASB, ZYDIS_MNEMONIC_SCASW, ZYDIS_MNEMONIC_SCASD,
       ZYDIS_MNEMONIC_SCASQ}};
  unsigned op = rn(r, 5), w = rn(r, 4);
  /* Pointers far enough from the ends of the data and stack pages for
     40 elements of 8 bytes in either direction, often next to a page
     boundary, now and then next to a page that faults. */
  uint64_t lo = DT_DATA + 0x200, hi = DT_STACK_PAGE + 0x1000 - 0x200;
  for (int i = 0; i < 2; i++) {
    uint64_t a = chance(r, 40)
                     ? DT_DATA + 0x1000 * (1 + rn(r, 4)) - 24 + rn(r, 48)
                     : lo + rn(r, (unsigned)(hi - lo));
    /* Runs into the not-present, read-only or supervisor page. */
    if (chance(r, 8)) {
      static const uint64_t fp[] = {DT_DATA, DT_RO_PAGE, DT_SUP_PAGE};
      unsigned w = rn(r, 3);
      a = chance(r, 50) ? fp[w] + rn(r, 64) : fp[w] - 1 - rn(r, 64);
    }
    if ((op != 1 && op != 4 && i == 0) || (op != 2 && i == 1))
      if (!lea_data(g, i == 0 ? 6 : 7, a, G_STRING))
        return false;
  }
  bool rep = chance(r, 75);
  if (rep && !set_reg(g, 1, chance(r, 10) ? 0 : 1 + rn(r, 40), G_STRING))
    return false;
  ZydisEncoderRequest req;
  req_init(&req, mns[op][w]);
  if (rep) {
    if (op >= 3)
      req.prefixes =
          chance(r, 50) ? ZYDIS_ATTRIB_HAS_REPE : ZYDIS_ATTRIB_HAS_REPNE;
    else
      req.prefixes = ZYDIS_ATTRIB_HAS_REP;
  }
  if (chance(r, 15))
    req.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_32;
  return add_insn(g, &req, G_STRING, false);
}

/* bt/bts/btr/btc on memory with a register bit offset. */
static bool gen_bt_mem(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  static const ZydisMnemonic mns[] = {ZYDIS_MNEMONIC_BT, ZYDIS_MNEMONIC_BTS,
                                      ZYDIS_MNEMONIC_BTR, ZYDIS_MNEMONIC_BTC};
  static const unsigned sz[] = {2, 4, 8};
  unsigned reg = rnd_free_reg(g), S = sz[rn(r, 3)];
  int64_t off = (int64_t)rn(r, 4096) - 2048; /* bits: +-256 bytes */
  if (!set_reg(g, reg, off, G_BIT))
    return false;
  ZydisEncoderRequest req;
  unsigned m = rn(r, 4);
  req_init(&req, mns[m]);
  req.operand_count = 2;
  uint64_t t = DT_DATA + 0x400 + rn(r, DT_DATA_SIZE + 0x1000 - 0x800);
  req.operands[0] = mem_at(g, &req, t, S, true);
  req.operands[1] = reg_op(gpr(reg, S));
  if (m && chance(r, 30))
    req.prefixes |= ZYDIS_ATTRIB_HAS_LOCK;
  return add_insn(g, &req, G_BIT, false);
}

static bool gen_xlat(struct gctx *g) {
  if (!lea_data(g, 3, DT_DATA + 0x100 + rn(&g->rng, DT_DATA_SIZE - 0x200),
                G_MOV))
    return false;
  ZydisEncoderRequest req;
  req_init(&req, ZYDIS_MNEMONIC_XLAT);
  return add_insn(g, &req, G_MOV, false);
}

/* ldmxcsr from a value written just before (reserved bits now and then:
   #GP). Exception masks stay set: unmasked SIMD exceptions are a
   documented BT gap (docs/bt.md). */
static bool gen_ldmxcsr(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  uint32_t v = 0x1f80 | (rn(r, 4) << 13) | (rn(r, 2) << 15) | (rn(r, 2) << 6) |
               rn(r, 64);
  /* Reserved bits (#GP), but not bit 17: AMD's misaligned-SSE mode (MM,
     CPUID misalignsse), which the host (KVM runs natively) has and BT's
     CPU model has not (its MXCSR_MASK is 0xffff). */
  if (chance(r, 3)) {
    unsigned b = 16 + rn(r, 16);
    v |= 1u << (b == 17 ? 16 : b);
  }
  uint64_t t = rnd_target(g, 4, chance(&g->rng, 80) ? 4 : 0);
  ZydisEncoderRequest req;
  req_init(&req, ZYDIS_MNEMONIC_MOV);
  req.operand_count = 2;
  req.operands[0] = mem_at(g, &req, t, 4, false);
  req.operands[1] = imm_op((int32_t)v);
  if (!add_insn(g, &req, G_MXCSR, false))
    return false;
  req_init(&req, ZYDIS_MNEMONIC_LDMXCSR);
  req.operand_count = 1;
  req.operands[0] = mem_at(g, &req, t, 4, true);
  return add_insn(g, &req, G_MXCSR, false);
}

static bool add_raw(struct gctx *g, const uint8_t *b, size_t n,
                    int64_t rsp_delta) {
  struct dt_item it;
  memset(&it, 0, sizeof(it));
  it.kind = DT_ITEM_RAW;
  it.group = G_STACK;
  it.rawlen = (uint8_t)n;
  memcpy(it.raw, b, n);
  /* Flags: none of the idioms touches them. */
  if (!push_item(g, &it))
    return false;
  g->pos += n;
  g->rsp = (uint64_t)((int64_t)g->rsp + rsp_delta);
  return true;
}

static bool stack_room(const struct gctx *g, int64_t delta) {
  int64_t nrsp = (int64_t)g->rsp + delta;
  return nrsp >= (int64_t)(STACK_TOP - STACK_SLACK) &&
         nrsp <= (int64_t)(STACK_TOP + STACK_SLACK);
}

/* Pushes, pops, flags to and from the stack, calls and returns. */
static bool gen_stack(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  ZydisEncoderRequest req;
  unsigned k = rn(r, 100);
  if (k < 20 && stack_room(g, -8)) { /* push r64 / r16 */
    bool w16 = chance(r, 15);
    if (w16 && !stack_room(g, -2))
      return false;
    req_init(&req, ZYDIS_MNEMONIC_PUSH);
    req.operand_count = 1;
    req.operands[0] = reg_op(gpr(rn(r, 16), w16 ? 2 : 8));
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    g->rsp -= w16 ? 2 : 8;
    return true;
  }
  if (k < 38 && stack_room(g, 8)) { /* pop r64 / r16 */
    bool w16 = chance(r, 15);
    req_init(&req, ZYDIS_MNEMONIC_POP);
    req.operand_count = 1;
    req.operands[0] = reg_op(gpr(rnd_free_reg(g), w16 ? 2 : 8));
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    g->rsp += w16 ? 2 : 8;
    return true;
  }
  if (k < 46 && stack_room(g, -8)) { /* push imm / push mem */
    req_init(&req, ZYDIS_MNEMONIC_PUSH);
    req.operand_count = 1;
    if (chance(r, 50))
      req.operands[0] = imm_op(rnd_imm(g, chance(r, 50) ? 1 : 4));
    else
      req.operands[0] = mem_at(g, &req, rnd_target(g, 8, 0), 8, true);
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    g->rsp -= 8;
    return true;
  }
  if (k < 52 && stack_room(g, 8)) { /* pop mem */
    req_init(&req, ZYDIS_MNEMONIC_POP);
    req.operand_count = 1;
    uint64_t t = rnd_target(g, 8, 0);
    req.operands[0] = mem_at(g, &req, t, 8, true);
    /* [rsp + d] is computed after the pop increments RSP. */
    if (req.operands[0].mem.base == ZYDIS_REGISTER_RSP)
      req.operands[0].mem.displacement -= 8;
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    g->rsp += 8;
    return true;
  }
  if (k < 58 && stack_room(g, -8)) { /* pushfq */
    req_init(&req, ZYDIS_MNEMONIC_PUSHFQ);
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    g->rsp -= 8;
    return true;
  }
  if (k < 64 && stack_room(g, -8) && !g->body) { /* push imm; popfq */
    uint32_t v = (uint32_t)(rn(r, 1u << 12) & (ARITH_FLAGS | 0x400u)) | 0x202;
    /* AC: alignment checks (CR0.AM is set, as Linux does), to the end. */
    if (chance(r, 10))
      v |= 1u << 18;
    if (chance(r, 20))
      v |= 1u << 21; /* ID */
    if (chance(r, 5))
      v &= ~0x200u; /* IF: CPL 3 with IOPL 0 cannot change it */
    if (chance(r, 3))
      v |= 0x100; /* TF: #DB after the next instruction */
    if (chance(r, 10))
      v |= 0x3000; /* IOPL: CPL 3 cannot change it, popfq leaves it */
    req_init(&req, ZYDIS_MNEMONIC_PUSH);
    req.operand_count = 1;
    req.operands[0] = imm_op((int32_t)v);
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    req_init(&req, ZYDIS_MNEMONIC_POPFQ);
    if (!add_insn(g, &req, G_STACK, true))
      return false;
    g->df = (v >> 10) & 1;
    return true;
  }
  if (k < 72 && stack_room(g, -8)) { /* call next */
    static const uint8_t b[] = {0xe8, 0, 0, 0, 0};
    return add_raw(g, b, sizeof(b), -8);
  }
  if (k < 80 && stack_room(g, -16)) { /* call f; jmp over; f: ret */
    static const uint8_t b[] = {0xe8, 0x02, 0, 0, 0, 0xeb, 0x01, 0xc3};
    return add_raw(g, b, sizeof(b), 0);
  }
  if (k < 86 && stack_room(g, -16)) { /* push; call f; jmp over; f: ret 8 */
    uint8_t b[] = {
        0x6a, (uint8_t)rn(r, 256), 0xe8, 0x02, 0, 0, 0, 0xeb, 0x03, 0xc2, 0x08,
        0x00};
    return add_raw(g, b, sizeof(b), 0);
  }
  if (k < 89 && stack_room(g, -0x120)) {
    /* enter size, 0; leave (RBP ends up as it was) */
    uint16_t sz = (uint16_t)(chance(r, 50) ? rn(r, 0x100) : 8 * rn(r, 32));
    uint8_t b[] = {0xc8, (uint8_t)sz, (uint8_t)(sz >> 8), 0, 0xc9};
    return add_raw(g, b, sizeof(b), 0);
  }
  if (k < 93 && stack_room(g, -16)) {
    /* lea reg, [rip + 4 or 5]; call reg; jmp over; ret */
    unsigned reg = rnd_free_reg(g);
    uint8_t b[16];
    size_t n = 0;
    uint8_t rex = 0x48 | (reg >= 8 ? 4 : 0);
    b[n++] = rex;
    b[n++] = 0x8d;
    b[n++] = (uint8_t)(0x05 | ((reg & 7) << 3));
    unsigned call_len = reg >= 8 ? 3 : 2;
    uint32_t d = call_len + 2;
    memcpy(b + n, &d, 4);
    n += 4;
    if (reg >= 8)
      b[n++] = 0x41;
    b[n++] = 0xff;
    b[n++] = (uint8_t)(0xd0 | (reg & 7));
    b[n++] = 0xeb;
    b[n++] = 0x01;
    b[n++] = 0xc3;
    return add_raw(g, b, n, 0);
  }
  {
    /* lea reg, [rip + len(jmp reg) + 0]; jmp reg; ud2 skipped? no: the
       target is right after the jmp, so the ud2 is jumped over. */
    unsigned reg = rnd_free_reg(g);
    uint8_t b[16];
    size_t n = 0;
    b[n++] = (uint8_t)(0x48 | (reg >= 8 ? 4 : 0));
    b[n++] = 0x8d;
    b[n++] = (uint8_t)(0x05 | ((reg & 7) << 3));
    unsigned jmp_len = reg >= 8 ? 3 : 2;
    uint32_t d = jmp_len + 2;
    memcpy(b + n, &d, 4);
    n += 4;
    if (reg >= 8)
      b[n++] = 0x41;
    b[n++] = 0xff;
    b[n++] = (uint8_t)(0xe0 | (reg & 7));
    b[n++] = 0x0f;
    b[n++] = 0x0b;
    return add_raw(g, b, n, 0);
  }
}

/* Self-modifying code: stores into the next instruction (its immediate,
   or a one-byte instruction replaced by another), or into one just run. */
static bool gen_smc(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  uint8_t b[24];
  size_t n = 0;
  unsigned k = rn(r, 3);
  if (k == 0) {
    /* mov byte [rip + d], v; mov r32, imm32 (d reaches an imm byte) */
    unsigned reg = rnd_free_reg(g), op = reg >= 8 ? 2 : 1;
    int32_t d = (int32_t)(op + rn(r, 4));
    b[n++] = 0xc6;
    b[n++] = 0x05;
    memcpy(b + n, &d, 4);
    n += 4;
    b[n++] = (uint8_t)rn(r, 256);
    if (reg >= 8)
      b[n++] = 0x41;
    b[n++] = (uint8_t)(0xb8 + (reg & 7));
    uint32_t imm = (uint32_t)dt_rng_next(r);
    memcpy(b + n, &imm, 4);
    n += 4;
  } else if (k == 1) {
    /* mov byte [rip + 0], v; nop: the nop becomes v, which leaves the
       flags alone or defines CF (clc, stc) and touches no reserved
       register. */
    static const uint8_t ok[] = {0x90, 0xf8, 0xf9, 0x98, 0x99, 0x91,
                                 0x92, 0x93, 0x95, 0x96, 0x97};
    b[n++] = 0xc6;
    b[n++] = 0x05;
    memset(b + n, 0, 4);
    n += 4;
    b[n++] = ok[rn(r, sizeof(ok))];
    b[n++] = 0x90;
  } else {
    /* nop; mov byte [rip - 8], v: rewrites the nop already run */
    b[n++] = 0x90;
    b[n++] = 0xc6;
    b[n++] = 0x05;
    int32_t d = -8;
    memcpy(b + n, &d, 4);
    n += 4;
    b[n++] = (uint8_t)rn(r, 256);
  }
  if (!add_raw(g, b, n, 0))
    return false;
  g->seq->items[g->seq->n - 1].group = G_SMC;
  return true;
}

/*
 * System and odd instructions at CPL 3: the ones that fault (privileged,
 * invalid in 64-bit mode, int n without a gate, cli/sti with IOPL 0),
 * port I/O through the TSS bitmap, descriptor-table reads, fences and
 * cache hints, data segment loads. Not generated, because PVM runs them
 * natively on host state: lar/lsl/verr/verw (the host's GDT), reads of
 * DS/ES/FS/GS selectors (what user code last loaded, whatever
 * KVM_SET_SREGS said), xgetbv (the host's CR4.OSXSAVE); docs/difftest.md.
 */
static bool gen_sys(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  static const struct {
    uint8_t len, b[4];
  } plain[] = {
      {1, {0xcc}},             /* int3 */
      {2, {0xcd, 0x80}},       /* int 0x80: no gate, #GP */
      {2, {0xcd, 0x03}},       /* int 3 */
      {2, {0xcd, 0x0d}},       /* int 13: DPL 0 gate, #GP */
      {2, {0x0f, 0x0b}},       /* ud2 */
      {1, {0xf4}},             /* hlt */
      {1, {0xfa}},             /* cli */
      {1, {0xfb}},             /* sti */
      {1, {0xce}},             /* into: invalid in 64-bit mode */
      {2, {0xe4, 0x80}},       /* in al, 0x80 */
      {2, {0xe6, 0x70}},       /* out 0x70, al */
      {3, {0x0f, 0x20, 0xc0}}, /* mov rax, cr0 */
      {3, {0x0f, 0x22, 0xd8}}, /* mov cr3, rax */
      {2, {0x0f, 0x32}},       /* rdmsr */
      {2, {0x0f, 0x30}},       /* wrmsr */
      {2, {0x0f, 0x05}},       /* syscall: to the LSTAR stub */
      {2, {0x0f, 0x07}},       /* sysret: #GP at CPL 3 */
      {2, {0x0f, 0x06}},       /* clts */
      {2, {0x0f, 0x08}},       /* invd */
      {2, {0x0f, 0x09}},       /* wbinvd */
      {2, {0xf3, 0x90}},       /* pause */
      {3, {0x0f, 0xae, 0xe8}}, /* lfence */
      {3, {0x0f, 0xae, 0xf0}}, /* mfence */
      {3, {0x0f, 0xae, 0xf8}}, /* sfence */
      {3, {0x0f, 0x01, 0xe0}}, /* smsw eax */
      {3, {0x0f, 0x00, 0xc8}}, /* str eax */
      {3, {0x0f, 0x00, 0xc0}}, /* sldt eax */
      {2, {0x8c, 0xc8}},       /* mov eax, cs */
      {2, {0x8c, 0xd0}},       /* mov eax, ss */
      {1, {0x06}},             /* push es: invalid in 64-bit mode */
      {1, {0x1f}},             /* pop ds: invalid */
      {1, {0x27}},             /* daa: invalid */
      {1, {0x60}},             /* pusha: invalid */
      {1, {0xd6}},             /* salc: invalid */
  };
  unsigned k = rn(r, 100);
  if (k < 8) {
    /* Port I/O through dx: in al/ax/eax, dx and out dx, al/ax/eax, on
       ports up to the end of the I/O space (the TSS bitmap decides). */
    unsigned port = chance(r, 30) ? 0xffff - rn(r, 16) : rn(r, 0x10000);
    /* Not the ports that end a run (the end marker, the stubs). */
    if (port >= DT_END_PORT && port <= DT_SYSCALL_PORT)
      port += 0x100;
    if (!set_reg(g, 2, port, G_SYS))
      return false;
    static const uint8_t io[][2] = {{0xec, 0}, {0x66, 0xed}, {0xed, 0},
                                    {0xee, 0}, {0x66, 0xef}, {0xef, 0}};
    unsigned i = rn(r, 6);
    if (!add_raw(g, io[i], io[i][1] ? 2 : 1, 0))
      return false;
    g->seq->items[g->seq->n - 1].group = G_SYS;
    return true;
  }
  if (k < 10) {
    static const uint8_t b[] = {0x0f, 0x33}; /* rdpmc: #GP without CR4.PCE */
    if (!add_raw(g, b, 2, 0))
      return false;
    g->seq->items[g->seq->n - 1].group = G_SYS;
    return true;
  }
  if (k < 55) {
    unsigned i = rn(r, sizeof(plain) / sizeof(plain[0]));
    if (!add_raw(g, plain[i].b, plain[i].len, 0))
      return false;
    g->seq->items[g->seq->n - 1].group = G_SYS;
    /* What it does to the flags does not matter: most end the run, and
       the rest (in, out, cli, sti, fences, reads of selectors) leave the
       arithmetic flags alone. */
    return true;
  }
  if (k < 80) {
    /* mov ax, sel; mov ds/es/ss, ax: loads that check the descriptor
       (FS and GS would reset the bases the generator's addresses use). */
    static const uint16_t sel[] = {0,    0x2b,     0x2b, 0x18,
                                   0x33, 0x2b | 4, 0x3b, 0x48};
    uint16_t sv = sel[rn(r, sizeof(sel) / sizeof(sel[0]))];
    static const uint8_t seg[] = {0xd8, 0xc0, 0xd0}; /* ds, es, ss */
    uint8_t b[6] = {0x66, 0xb8,         (uint8_t)sv, (uint8_t)(sv >> 8),
                    0x8e, seg[rn(r, 3)]};
    if (!add_raw(g, b, 6, 0))
      return false;
    g->seq->items[g->seq->n - 1].group = G_SYS;
    return true;
  }
  /* Memory forms: sgdt, sidt, clflush, prefetch, lgdt, lidt, invlpg. */
  static const ZydisMnemonic mm[] = {
      ZYDIS_MNEMONIC_SGDT,        ZYDIS_MNEMONIC_SIDT,
      ZYDIS_MNEMONIC_CLFLUSH,     ZYDIS_MNEMONIC_PREFETCHT0,
      ZYDIS_MNEMONIC_PREFETCHNTA, ZYDIS_MNEMONIC_LGDT,
      ZYDIS_MNEMONIC_LIDT,        ZYDIS_MNEMONIC_INVLPG};
  ZydisMnemonic mn = mm[rn(r, sizeof(mm) / sizeof(mm[0]))];
  unsigned size = mn == ZYDIS_MNEMONIC_SGDT || mn == ZYDIS_MNEMONIC_SIDT ||
                          mn == ZYDIS_MNEMONIC_LGDT || mn == ZYDIS_MNEMONIC_LIDT
                      ? 10
                      : 1;
  ZydisEncoderRequest req;
  req_init(&req, mn);
  req.operand_count = 1;
  /* PVM emulates sgdt and sidt (UMIP on the host) and its emulator
     writes the first page of a store that faults on the second: keep
     them in the data pages. */
  uint64_t t =
      size == 10 ? DT_DATA + rn(r, DT_DATA_SIZE - 16) : rnd_target(g, size, 0);
  req.operands[0] = mem_at(g, &req, t, size, true);
  return add_insn(g, &req, G_SYS, false);
}

/* mov size bytes of v to t (a store of the generator's set-up). */
static bool store_imm(struct gctx *g, uint64_t t, unsigned size, uint32_t v,
                      unsigned group) {
  ZydisEncoderRequest req;
  req_init(&req, ZYDIS_MNEMONIC_MOV);
  req.operand_count = 2;
  req.operands[0] = mem_at(g, &req, t, size, false);
  req.operands[1] = imm_op(size == 1   ? (int8_t)v
                           : size == 2 ? (int16_t)v
                                       : (int32_t)v);
  return add_insn(g, &req, group, false);
}

static bool add_x87(struct gctx *g, ZydisMnemonic mn, uint64_t t,
                    unsigned size) {
  ZydisEncoderRequest req;
  req_init(&req, mn);
  if (size) {
    req.operand_count = 1;
    req.operands[0] = mem_at(g, &req, t, size, true);
  }
  if (!add_insn(g, &req, G_X87_CTL, false))
    return false;
  struct dt_seq *s = g->seq;
  bool env = mn == ZYDIS_MNEMONIC_FNSTENV || mn == ZYDIS_MNEMONIC_FNSAVE;
  bool fx = mn == ZYDIS_MNEMONIC_FXSAVE || mn == ZYDIS_MNEMONIC_FXSAVE64;
  if ((env || fx) && s->nskip < DT_MAX_ITEMS) {
    s->skip[s->nskip].addr = t + (env ? 12 : 28);
    s->skip[s->nskip++].len = env ? 16 : 4;
  }
  return true;
}

/* A control word with every exception masked (unmasked exceptions are not
   generated, docs/difftest.md), any precision and rounding, and the
   reserved bits (6, 12 the old infinity control, 13-15) now and then. */
static uint16_t rnd_fcw(struct dt_rng *r) {
  uint16_t v = (uint16_t)(0x3f | rn(r, 4) << 8 | rn(r, 4) << 10);
  if (chance(r, 80))
    v |= 0x40;
  if (chance(r, 15))
    v |= (uint16_t)(rn(r, 16) << 12);
  return v;
}

/* A status word without a pending exception (ES and B clear). */
static uint16_t rnd_fsw(struct dt_rng *r) {
  return (uint16_t)(dt_rng_next(r) & 0x7f7f);
}

/* The status-word stores see defined condition codes: fxam defines all
   four first when needed. */
static bool x87_define_cc(struct gctx *g) {
  return !(g->fundef & DT_FSW_CC) || add_x87(g, ZYDIS_MNEMONIC_FXAM, 0, 0);
}

/*
 * Environment and state images: fnstenv/fldenv (28 bytes), fnsave/frstor
 * (108), fxsave/fxrstor and their 64-bit forms (512, 16-byte aligned;
 * PVM completes some misaligned ones, docs/testing.md): a store, now and
 * then x87 work and changes to the image's control word, status word,
 * tag word, MXCSR or registers, and a load of the image.
 */
static bool gen_x87_image(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  static const ZydisMnemonic stm[] = {
      ZYDIS_MNEMONIC_FNSTENV, ZYDIS_MNEMONIC_FNSAVE, ZYDIS_MNEMONIC_FXSAVE,
      ZYDIS_MNEMONIC_FXSAVE64};
  static const ZydisMnemonic ldm[] = {
      ZYDIS_MNEMONIC_FLDENV, ZYDIS_MNEMONIC_FRSTOR, ZYDIS_MNEMONIC_FXRSTOR,
      ZYDIS_MNEMONIC_FXRSTOR64};
  static const unsigned sizes[] = {28, 108, 512, 512};
  unsigned k = rn(r, 4), size = sizes[k];
  bool fx = k >= 2;
  uint64_t t = chance(r, 85) ? DT_DATA + rn(r, (unsigned)(DT_DATA_SIZE - size))
                             : rnd_target(g, size, 0);
  t &= fx ? ~15ull : chance(r, 90) ? ~3ull : ~0ull;
  if (!x87_define_cc(g) || !add_x87(g, stm[k], t, size))
    return false;
  /* Fields the engines may fill differently (docs/difftest.md) get a
     common value before anything can read them: the x87 pointers of an
     fnstenv/fnsave image, an fxsave image's MXCSR_MASK. */
  if (!fx) {
    for (unsigned o = 12; o < 28; o += 4)
      if (!store_imm(g, t + o, 4, 0, G_X87_CTL))
        return false;
  } else if (!store_imm(g, t + 28, 4, 0xffff, G_X87_CTL)) {
    return false;
  }
  if (chance(r, 30))
    for (unsigned n = 1 + rn(r, 2); n; n--)
      gen_form(g, G_X87); /* failures leave nothing behind */
  if (chance(r, 50)) {
    for (unsigned n = 1 + rn(r, 3); n; n--) {
      unsigned w = 1 + rn(r, 4);
      bool ok;
      if (w == 1)
        ok = store_imm(g, t + (fx ? 2 : 4), 2, rnd_fsw(r), G_X87_CTL);
      else if (w == 2)
        ok = fx ? store_imm(g, t + 4, 1, rn(r, 256), G_X87_CTL)
                : store_imm(g, t + 8, 2, rn(r, 0x10000), G_X87_CTL);
      else if (w == 3 && fx) {
        /* No reserved bits: PVM's emulation of the #GP that fxrstor
           raises for them loads an empty state and goes on (seen on this
           host; docs/testing.md). ldmxcsr covers the check. */
        uint32_t mx = 0x1f80 | rn(r, 4) << 13 | rn(r, 2) << 15 | rn(r, 2) << 6 |
                      rn(r, 64);
        ok = store_imm(g, t + 24, 4, mx, G_X87_CTL);
      } else {
        uint64_t lo = fx ? 32 : 28, n = fx ? 128 : k == 1 ? 80 : 0;
        if (n == 0)
          continue;
        ok = store_imm(g, t + lo + rn(r, (unsigned)n - 3), 4,
                       (uint32_t)dt_rng_next(r), G_X87_CTL);
      }
      if (!ok)
        return false;
    }
  }
  /* The image's control word is one with every exception masked, what
     ever else wrote the area (an x87 store above, say). */
  if (chance(r, 85) && (!store_imm(g, t, 2, rnd_fcw(r), G_X87_CTL) ||
                        !add_x87(g, ldm[k], t, size)))
    return false;
  return true;
}

/* Control and status words, environments, save areas. */
static bool gen_x87_ctl(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  unsigned k = rn(r, 100);
  if (k < 30) { /* fldcw from a value stored just before */
    uint64_t t = rnd_target(g, 2, chance(r, 80) ? 2 : 0);
    if (!store_imm(g, t, 2, rnd_fcw(r), G_X87_CTL) ||
        !add_x87(g, ZYDIS_MNEMONIC_FLDCW, t, 2))
      return false;
    return !chance(r, 30) ||
           add_x87(g, ZYDIS_MNEMONIC_FNSTCW, rnd_target(g, 2, 0), 2);
  }
  if (k < 55) { /* fnstsw ax or m16 */
    if (!x87_define_cc(g))
      return false;
    if (chance(r, 50))
      return add_x87(g, ZYDIS_MNEMONIC_FNSTSW, rnd_target(g, 2, 0), 2);
    ZydisEncoderRequest req;
    req_init(&req, ZYDIS_MNEMONIC_FNSTSW);
    req.operand_count = 1;
    req.operands[0] = reg_op(ZYDIS_REGISTER_AX);
    return add_insn(g, &req, G_X87_CTL, false);
  }
  if (k < 65)
    return gen_form(g, G_X87_CTL);
  return gen_x87_image(g);
}

/* A short or near forward branch over one instruction. */
static bool gen_branch(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  static const ZydisMnemonic jcc[] = {
      ZYDIS_MNEMONIC_JB,    ZYDIS_MNEMONIC_JBE,    ZYDIS_MNEMONIC_JL,
      ZYDIS_MNEMONIC_JLE,   ZYDIS_MNEMONIC_JNB,    ZYDIS_MNEMONIC_JNBE,
      ZYDIS_MNEMONIC_JNL,   ZYDIS_MNEMONIC_JNLE,   ZYDIS_MNEMONIC_JNO,
      ZYDIS_MNEMONIC_JNP,   ZYDIS_MNEMONIC_JNS,    ZYDIS_MNEMONIC_JNZ,
      ZYDIS_MNEMONIC_JO,    ZYDIS_MNEMONIC_JP,     ZYDIS_MNEMONIC_JS,
      ZYDIS_MNEMONIC_JZ,    ZYDIS_MNEMONIC_JMP,    ZYDIS_MNEMONIC_LOOP,
      ZYDIS_MNEMONIC_LOOPE, ZYDIS_MNEMONIC_LOOPNE, ZYDIS_MNEMONIC_JRCXZ};
  ZydisMnemonic mn = jcc[rn(r, sizeof(jcc) / sizeof(jcc[0]))];
  bool near = mn <= ZYDIS_MNEMONIC_JZ && mn != ZYDIS_MNEMONIC_LOOP &&
              mn != ZYDIS_MNEMONIC_LOOPE && mn != ZYDIS_MNEMONIC_LOOPNE &&
              mn != ZYDIS_MNEMONIC_JRCXZ && chance(r, 30);
  ZydisEncoderRequest br;
  req_init(&br, mn);
  br.operand_count = 1;
  br.operands[0] = imm_op(0);
  br.branch_type = near ? ZYDIS_BRANCH_TYPE_NEAR : ZYDIS_BRANCH_TYPE_SHORT;
  if (mn == ZYDIS_MNEMONIC_JRCXZ && chance(r, 30))
    br.mnemonic = ZYDIS_MNEMONIC_JECXZ;
  /* Check the branch alone (flags it tests, rcx it writes). */
  uint8_t buf[16];
  ZyanUSize n = 15;
  struct decoded d;
  ZydisEncoderRequest copy = br;
  if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&copy, buf, &n)) ||
      !decode(buf, n, &d) || !acceptable(g, &d, false, false))
    return false;
  flags_step(&d.di, &g->undef, g->body);
  /* The body: any table form of a plain group, flagged conditional. */
  static const unsigned body_groups[] = {
      G_ALU,    G_SHIFT,   G_MOV,     G_BIT,   G_CMOV,
      G_SSE_FP, G_SSE_INT, G_SSE_MOV, G_FLAGS, G_ATOMIC};
  struct dt_seq *s = g->seq;
  size_t before = s->n;
  uint64_t pos0 = g->pos;
  g->pos += n;
  g->body = true;
  bool ok = false;
  for (int t = 0; t < 4 && !ok; t++)
    ok = gen_form(
        g, body_groups[rn(r, sizeof(body_groups) / sizeof(body_groups[0]))]);
  g->body = false;
  if (!ok || s->n != before + 1) {
    s->n = before;
    g->pos = pos0;
    return false;
  }
  struct dt_item *it = &s->items[before];
  it->body = it->req;
  it->req = br;
  it->kind = DT_ITEM_SKIP;
  it->group = G_BRANCH;
  return true;
}

/* A counted loop: mov ecx, n; body; dec ecx; jnz body. The body is one
   table instruction that neither reads flags nor writes rcx or rsp. */
static bool gen_loop(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  static const unsigned body_groups[] = {
      G_ALU,     G_SHIFT,   G_MOV,      G_BIT, G_SSE_FP,
      G_SSE_INT, G_SSE_MOV, G_SSE_SHUF, G_BMI, G_ATOMIC};
  struct dt_seq *s = g->seq;
  size_t before = s->n;
  uint64_t pos0 = g->pos;
  uint32_t u0 = g->undef;
  g->pos += 5;
  bool ok = false;
  for (int t = 0; t < 6 && !ok; t++) {
    s->n = before;
    g->undef = u0;
    if (!gen_form(
            g,
            body_groups[rn(r, sizeof(body_groups) / sizeof(body_groups[0]))]) ||
        s->n != before + 1)
      continue;
    uint8_t buf[32];
    size_t n;
    struct decoded d;
    const struct dt_item *it = &s->items[before];
    if (it->prefix ||
        !encode_at((ZydisEncoderRequest *)&it->req, g->pos, buf, &n) ||
        !decode(buf, n, &d) || (d.di.cpu_flags && d.di.cpu_flags->tested))
      continue;
    ok = true;
    for (unsigned i = 0; i < d.di.operand_count; i++)
      if (d.op[i].type == ZYDIS_OPERAND_TYPE_REGISTER &&
          (d.op[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE) &&
          reg_index(d.op[i].reg.value) == 1)
        ok = false;
  }
  if (!ok) {
    s->n = before;
    g->pos = pos0;
    g->undef = u0;
    return false;
  }
  struct dt_item *it = &s->items[before];
  it->body = it->req;
  it->kind = DT_ITEM_LOOP;
  it->group = G_BRANCH;
  it->rawlen = (uint8_t)(1 + rn(r, 20)); /* iterations */
  /* dec ecx defines every flag but CF, which the body may leave
     undefined: what the body's flags step said stays for CF. */
  g->undef &= ZYDIS_CPUFLAG_CF;
  g->pos = pos0 + 5 + 2 + 2 + 15;
  return true;
}

static bool gen_group(struct gctx *g, unsigned grp) {
  struct dt_rng *r = &g->rng;
  switch (grp) {
  case G_MULDIV:
    if (chance(r, 50))
      return gen_div(g);
    break;
  case G_STRING: return gen_string(g);
  case G_STACK: return gen_stack(g);
  case G_BRANCH:
    if (chance(r, 30))
      return gen_loop(g);
    return gen_branch(g);
  case G_BIT:
    if (chance(r, 25))
      return gen_bt_mem(g);
    break;
  case G_MOV:
    if (chance(r, 5))
      return gen_xlat(g);
    if (chance(r, 8))
      return set_reg(g, rnd_free_reg(g), (int64_t)rnd_int(r) >> rn(r, 64),
                     G_MOV);
    break;
  case G_MXCSR:
    if (chance(r, 60))
      return gen_ldmxcsr(g);
    break;
  case G_SMC: return gen_smc(g);
  case G_SYS: return gen_sys(g);
  case G_X87_CTL: return gen_x87_ctl(g);
  }
  return gen_form(g, grp);
}

/* ------------------------------------------------------------------------ */
/* Initial state and the sequence                                           */

static void gen_state(struct gctx *g) {
  struct dt_rng *r = &g->rng;
  struct dt_state *st = &g->seq->init;
  for (int i = 0; i < 16; i++)
    st->gpr[i] = rnd_int(r);
  st->gpr[REG_RSP] = STACK_TOP;
  st->gpr[REG_R15] = DT_DATA + 0x800 + rn(r, 0x3000);
  st->gpr[REG_R14] = rn(r, 64);
  uint64_t fl = 0x202 | (dt_rng_next(r) & ARITH_FLAGS);
  if (chance(r, 20))
    fl |= 0x400; /* DF */
  /* IOPL stays 0: ports go by the TSS I/O bitmap (which grants every
     one), cli and sti fault. PVM does not virtualize IOPL for user code
     (pushfq there shows 0 whatever the vCPU was given), so IOPL 3 could
     not be compared; docs/difftest.md. */
  st->rflags = fl;
  st->fs_base = chance(r, 20) ? 0 : DT_DATA - 0x10000 + rn(r, 0x10000);
  st->gs_base = chance(r, 20) ? 0 : DT_DATA - 0x10000 + rn(r, 0x10000);
  for (int i = 0; i < 16; i++)
    rnd_fill(r, st->xmm[i], 16);
  st->mxcsr = 0x1f80 | (rn(r, 4) << 13);
  if (chance(r, 20))
    st->mxcsr |= 1u << 15; /* FTZ */
  if (chance(r, 20))
    st->mxcsr |= 1u << 6; /* DAZ */
  if (chance(r, 30))
    st->mxcsr |= rn(r, 64); /* sticky flags already set */
  rnd_fill(r, st->mem, sizeof(st->mem));
  /* x87: every exception masked (unmasked ones are not generated,
     docs/difftest.md), any precision (the reserved 01 included) and
     rounding; a random stack top, condition codes and sticky flags, no
     exception pending (ES and B clear); registers valid or empty. */
  st->fcw = (uint16_t)(0x7f | rn(r, 4) << 8 | rn(r, 4) << 10);
  st->fsw = (uint16_t)(rn(r, 8) << 11 | rn(r, 8) << 8 | rn(r, 2) << 14);
  if (chance(r, 30))
    st->fsw |= (uint16_t)rn(r, 128); /* sticky flags, SF */
  unsigned k = rn(r, 4);
  st->ftw = k == 0 ? 0 : k == 1 ? 0xff : (uint8_t)rn(r, 256);
  for (int i = 0; i < 8; i++)
    rnd_f80(r, st->st[i]);
}

void dt_generate(const struct dt_gen_config *cfg, uint64_t seed, uint64_t index,
                 struct dt_seq *seq) {
  struct gctx g;
  memset(&g, 0, sizeof(g));
  memset(seq, 0, sizeof(*seq));
  g.cfg = cfg;
  g.seq = seq;
  dt_rng_seed(&g.rng, seed, index);
  seq->seed = seed;
  seq->index = index;
  /* Start anywhere in the first code page: long sequences cross into the
     second one (instructions straddling the boundary included). */
  seq->code = DT_CODE + (chance(&g.rng, 25) ? 0xf00 - rn(&g.rng, 0x100)
                                            : rn(&g.rng, 0xf00));
  gen_state(&g);
  g.df = (seq->init.rflags >> 10) & 1;
  g.rsp = STACK_TOP;
  g.pos = seq->code;
  unsigned weight[G__COUNT], total = 0;
  for (unsigned i = 0; i < G__COUNT; i++) {
    weight[i] = !cfg->groups || (cfg->groups >> i & 1) ? group_weight[i] : 0;
    total += weight[i];
  }
  if (total == 0)
    return;
  unsigned len = 1 + rn(&g.rng, cfg->max_len);
  for (unsigned guard = 0; seq->n < len && guard < len * 8; guard++) {
    unsigned w = rn(&g.rng, total), grp = 0;
    while (w >= weight[grp]) {
      w -= weight[grp];
      grp++;
    }
    /* Failed attempts leave nothing behind (no item, no flags change). */
    size_t n0 = seq->n;
    uint32_t u0 = g.undef;
    uint16_t fu0 = g.fundef;
    int df0 = g.df;
    uint64_t rsp0 = g.rsp, pos0 = g.pos;
    if (!gen_group(&g, grp)) {
      seq->n = n0;
      g.undef = u0;
      g.fundef = fu0;
      g.df = df0;
      g.rsp = rsp0;
      g.pos = pos0;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Assembly                                                                 */

static bool note_insn(struct dt_code *c, uint64_t addr, uint32_t undef) {
  if (c->ninsn >= sizeof(c->insn_addr) / sizeof(c->insn_addr[0]))
    return false;
  c->insn_addr[c->ninsn] = addr;
  c->undef_before[c->ninsn] = undef;
  c->fundef_before[c->ninsn] = c->fundef;
  c->ninsn++;
  return true;
}

/* Encode one request (after prefix, if not 0) at addr into c, stepping
   the flags. */
static bool emit(struct dt_code *c, const ZydisEncoderRequest *req,
                 uint64_t base, uint32_t *undef, bool conditional,
                 bool relative, uint8_t prefix) {
  uint64_t addr = base + c->len;
  size_t p = prefix != 0;
  ZydisEncoderRequest copy = *req;
  if (c->len + 16 > sizeof(c->bytes))
    return false;
  uint8_t *at = c->bytes + c->len;
  ZyanUSize n = 15;
  ZyanStatus s = relative ? ZydisEncoderEncodeInstruction(&copy, at + p, &n)
                          : ZydisEncoderEncodeInstructionAbsolute(&copy, at + p,
                                                                  &n, addr + p);
  if (!ZYAN_SUCCESS(s) || n + p > 15 || !note_insn(c, addr, *undef))
    return false;
  if (p)
    at[0] = prefix;
  struct decoded d;
  if (decode(at, n + p, &d)) {
    if (d.di.length != n + p || !flags_step(&d.di, undef, conditional) ||
        !x87_step(&d.di, &c->fundef, conditional))
      return false;
  } else if (prefix != 0xf0) {
    return false;
  }
  c->len += n + p;
  return true;
}

bool dt_assemble(const struct dt_seq *seq, struct dt_code *c) {
  memset(c, 0, sizeof(*c));
  uint32_t undef = 0;
  uint64_t base = seq->code;
  for (size_t i = 0; i < seq->n; i++) {
    const struct dt_item *it = &seq->items[i];
    switch (it->kind) {
    case DT_ITEM_INSN:
      if (!emit(c, &it->req, base, &undef, false, false, it->prefix))
        return false;
      break;
    case DT_ITEM_RAW:
      if (c->len + it->rawlen > sizeof(c->bytes) ||
          !note_insn(c, base + c->len, undef))
        return false;
      /* The idioms' own instructions (call, ret, jmp) leave the flags. */
      memcpy(c->bytes + c->len, it->raw, it->rawlen);
      c->len += it->rawlen;
      break;
    case DT_ITEM_LOOP: {
      /* mov ecx, n */
      if (c->len + 5 > sizeof(c->bytes) || !note_insn(c, base + c->len, undef))
        return false;
      uint8_t *p = c->bytes + c->len;
      p[0] = 0xb9;
      uint32_t iters = it->rawlen;
      memcpy(p + 1, &iters, 4);
      c->len += 5;
      size_t top = c->len;
      if (!emit(c, &it->body, base, &undef, false, false, 0))
        return false;
      /* dec ecx; jnz top */
      if (c->len + 4 > sizeof(c->bytes) || !note_insn(c, base + c->len, undef))
        return false;
      p = c->bytes + c->len;
      p[0] = 0xff;
      p[1] = 0xc9;
      c->len += 2;
      undef &= ZYDIS_CPUFLAG_CF;
      if (!note_insn(c, base + c->len, undef))
        return false;
      int64_t rel = (int64_t)top - (int64_t)(c->len + 2);
      if (rel < -128)
        return false;
      c->bytes[c->len] = 0x75;
      c->bytes[c->len + 1] = (uint8_t)(int8_t)rel;
      c->len += 2;
      break;
    }
    case DT_ITEM_SKIP: {
      /* Encode the body once to learn its length, then the branch. */
      struct dt_code tmp;
      memset(&tmp, 0, sizeof(tmp));
      uint32_t u2 = 0;
      ZydisEncoderRequest br = it->req;
      /* The branch's length does not depend on its target (short or
         near is fixed in the request). */
      uint8_t scratch[16];
      ZyanUSize blen = sizeof(scratch);
      ZydisEncoderRequest probe = br;
      probe.operands[0].imm.s = 0;
      if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&probe, scratch, &blen)))
        return false;
      if (!emit(&tmp, &it->body, base + c->len + blen, &u2, true, false,
                it->prefix))
        return false;
      br.operands[0].imm.s = (int64_t)tmp.len;
      size_t at = c->len;
      if (!emit(c, &br, base, &undef, false, true, 0) || c->len - at != blen)
        return false;
      if (!emit(c, &it->body, base, &undef, true, false, it->prefix))
        return false;
      break;
    }
    }
  }
  /* The end marker: out 0x3f, al. */
  if (!note_insn(c, base + c->len, undef) || c->len + 2 > sizeof(c->bytes))
    return false;
  c->bytes[c->len++] = 0xe6;
  c->bytes[c->len++] = DT_END_PORT;
  return true;
}

uint32_t dt_undef_at(const struct dt_code *c, uint64_t rip) {
  for (size_t i = 0; i < c->ninsn; i++)
    if (c->insn_addr[i] == rip)
      return c->undef_before[i];
  return ARITH_FLAGS;
}

uint16_t dt_fundef_at(const struct dt_code *c, uint64_t rip) {
  for (size_t i = 0; i < c->ninsn; i++)
    if (c->insn_addr[i] == rip)
      return c->fundef_before[i];
  return DT_FSW_CC;
}
