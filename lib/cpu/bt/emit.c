/*
 * The translated-code assembler (emit.h).
 */
#include <string.h>

#include "emit.h"

void e_init(struct emit *e, uint8_t *buf, uint64_t base, size_t cap) {
  memset(e, 0, sizeof(*e));
  e->buf = buf;
  e->base = base;
  e->cap = cap;
}

int e_label(struct emit *e) {
  if (e->nlabels == E_MAX_LABELS) {
    e->fail = true;
    return 0;
  }
  e->labels[e->nlabels] = -1;
  return (int)e->nlabels++;
}

void e_bind(struct emit *e, int label) {
  e->labels[label] = (int32_t)e->pos;
}

uint64_t e_label_addr(const struct emit *e, int label) {
  return e->base + (uint64_t)e->labels[label];
}

void e_bytes(struct emit *e, const void *p, size_t n) {
  if (e->fail || e->pos + n > e->cap) {
    e->fail = true;
    return;
  }
  memcpy(e->buf + e->pos, p, n);
  e->pos += n;
}

void e_req(struct emit *e, ZydisEncoderRequest *r) {
  uint8_t tmp[ZYDIS_MAX_INSTRUCTION_LENGTH];
  ZyanUSize n = sizeof(tmp);
  r->machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
  if (ZYAN_FAILED(ZydisEncoderEncodeInstruction(r, tmp, &n))) {
    e->fail = true;
    return;
  }
  e_bytes(e, tmp, n);
}

static void add_fixup(struct emit *e, uint8_t size, int label) {
  if (e->nfixups == E_MAX_FIXUPS) {
    e->fail = true;
    return;
  }
  e->fixups[e->nfixups++] = (struct e_fixup){
      .pos = (uint32_t)e->pos, .size = size, .label = (uint8_t)label};
}

void e_set_rel32(uint8_t *field, uint64_t field_addr, uint64_t target) {
  int32_t rel = (int32_t)(target - (field_addr + 4));
  /* The field is 4-byte aligned where it may be patched while another
     thread executes it, so one store replaces it atomically. */
  __atomic_store_n((int32_t *)(void *)field, rel, __ATOMIC_RELEASE);
}

bool e_finish(struct emit *e) {
  if (e->fail)
    return false;
  for (unsigned i = 0; i < e->nfixups; i++) {
    const struct e_fixup *f = &e->fixups[i];
    if (e->labels[f->label] < 0)
      return false;
    int64_t rel = (int64_t)e->labels[f->label] - (int64_t)(f->pos + f->size);
    if (f->size == 1) {
      if (rel < -128 || rel > 127)
        return false;
      e->buf[f->pos] = (uint8_t)(int8_t)rel;
    } else {
      int32_t r32 = (int32_t)rel;
      memcpy(e->buf + f->pos, &r32, 4);
    }
  }
  return true;
}

void e_align4(struct emit *e, unsigned skew) {
  static const uint8_t nops[4][3] = {
      {0}, {0x90}, {0x66, 0x90}, {0x0f, 0x1f, 0x00}};
  unsigned pad = (4 - (unsigned)((e->pos + skew) & 3)) & 3;
  if (pad)
    e_bytes(e, nops[pad], pad);
}

void e_nops(struct emit *e, unsigned pad) {
  static const uint8_t nop8[8] = {0x0f, 0x1f, 0x84, 0x00, 0, 0, 0, 0};
  static const uint8_t nops[8][8] = {{0},
                                     {0x90},
                                     {0x66, 0x90},
                                     {0x0f, 0x1f, 0x00},
                                     {0x0f, 0x1f, 0x40, 0x00},
                                     {0x0f, 0x1f, 0x44, 0x00, 0x00},
                                     {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
                                     {0x0f, 0x1f, 0x80, 0, 0, 0, 0}};
  for (; pad >= 8; pad -= 8)
    e_bytes(e, nop8, 8);
  if (pad)
    e_bytes(e, nops[pad], pad);
}

void e_align(struct emit *e, unsigned n) {
  e_nops(e, (unsigned)((n - (e_here(e) & (n - 1))) & (n - 1)));
}

/*
 * Hand encoders for the glue's fixed instruction forms: translating a unit
 * emits dozens of them, and building Zydis requests for each was most of
 * the translation time. test_bt cross-checks them against Zydis.
 */
static bool fits8(int64_t v) {
  return v >= -128 && v <= 127;
}
static bool fits32(int64_t v) {
  return v >= INT32_MIN && v <= INT32_MAX;
}

/* Append the ModRM (and SIB, displacement) for [base + index*scale + disp]
   with ModRM.reg = reg; base/index -1 for none (no base: absolute disp32).
   Returns the REX.X/B bits it needs. */
static uint8_t modrm_mem(uint8_t *o, unsigned *n, unsigned reg, int base,
                         int index, unsigned scale, int32_t disp) {
  uint8_t rex = 0;
  unsigned ss = scale == 8 ? 3 : scale == 4 ? 2 : scale == 2 ? 1 : 0;
  if (index >= 8)
    rex |= 2; /* X */
  if (base >= 8)
    rex |= 1; /* B */
  if (base < 0) {
    o[(*n)++] = (uint8_t)(0x04 | ((reg & 7) << 3));
    o[(*n)++] = (uint8_t)((ss << 6) |
                          ((index >= 0 ? (unsigned)index & 7 : 4) << 3) | 5);
    memcpy(o + *n, &disp, 4);
    *n += 4;
    return rex;
  }
  unsigned mod = (disp == 0 && (base & 7) != 5) ? 0 : fits8(disp) ? 1 : 2;
  bool sib = index >= 0 || (base & 7) == 4;
  o[(*n)++] = (uint8_t)((mod << 6) | ((reg & 7) << 3) |
                        (sib ? 4 : ((unsigned)base & 7)));
  if (sib)
    o[(*n)++] =
        (uint8_t)((ss << 6) | ((index >= 0 ? (unsigned)index & 7 : 4) << 3) |
                  ((unsigned)base & 7));
  if (mod == 1)
    o[(*n)++] = (uint8_t)(int8_t)disp;
  else if (mod == 2) {
    memcpy(o + *n, &disp, 4);
    *n += 4;
  }
  return rex;
}

/* prefix (0 = none), REX (W and R), opcode bytes, memory operand. */
static void mem_insn(struct emit *e, uint8_t prefix, bool w, unsigned reg,
                     const uint8_t *op, unsigned nop, int base, int index,
                     unsigned scale, int32_t disp, bool rex_always) {
  uint8_t b[16], m[8];
  unsigned n = 0, mn = 0;
  uint8_t rex = modrm_mem(m, &mn, reg, base, index, scale, disp);
  if (reg >= 8)
    rex |= 4;
  if (w)
    rex |= 8;
  if (prefix)
    b[n++] = prefix;
  if (rex || rex_always)
    b[n++] = (uint8_t)(0x40 | rex);
  memcpy(b + n, op, nop);
  n += nop;
  memcpy(b + n, m, mn);
  n += mn;
  e_bytes(e, b, n);
}

void e_mov_r_ctx(struct emit *e, unsigned r, int32_t off) {
  static const uint8_t op = 0x8b;
  mem_insn(e, 0, true, r, &op, 1, R_SP, -1, 1, off, false);
}

void e_mov_ctx_r(struct emit *e, int32_t off, unsigned r) {
  static const uint8_t op = 0x89;
  mem_insn(e, 0, true, r, &op, 1, R_SP, -1, 1, off, false);
}

void e_mov_r_ctxidx(struct emit *e, unsigned r, int32_t off, unsigned idx) {
  static const uint8_t op = 0x8b;
  mem_insn(e, 0, true, r, &op, 1, R_SP, (int)idx, 8, off, false);
}

void e_mov_ctxidx_r(struct emit *e, int32_t off, unsigned idx, unsigned r) {
  static const uint8_t op = 0x89;
  mem_insn(e, 0, true, r, &op, 1, R_SP, (int)idx, 8, off, false);
}

void e_mov_ctxidx4_i32(struct emit *e, int32_t off, unsigned idx,
                      uint32_t imm) {
  static const uint8_t op = 0xc7;
  mem_insn(e, 0, false, 0, &op, 1, R_SP, (int)idx, 4, off, false);
  e_bytes(e, &imm, 4);
}

void e_mov_ctx_i32(struct emit *e, int32_t off, uint32_t imm) {
  static const uint8_t op = 0xc7;
  mem_insn(e, 0, false, 0, &op, 1, R_SP, -1, 1, off, false);
  e_bytes(e, &imm, 4);
}

/* reg-reg forms: opcode /r with ModRM.reg = reg, ModRM.rm = rm. */
static void rr_insn(struct emit *e, uint8_t prefix, bool w, const uint8_t *op,
                    unsigned nop, unsigned reg, unsigned rm, bool rex_always) {
  uint8_t b[8];
  unsigned n = 0;
  uint8_t rex = (uint8_t)((w ? 8 : 0) | (reg >= 8 ? 4 : 0) | (rm >= 8 ? 1 : 0));
  if (prefix)
    b[n++] = prefix;
  if (rex || rex_always)
    b[n++] = (uint8_t)(0x40 | rex);
  memcpy(b + n, op, nop);
  n += nop;
  b[n++] = (uint8_t)(0xc0 | ((reg & 7) << 3) | (rm & 7));
  e_bytes(e, b, n);
}

void e_mov_r_r(struct emit *e, unsigned dst, unsigned src, unsigned bits) {
  static const uint8_t op = 0x89;
  rr_insn(e, bits == 16 ? 0x66 : 0, bits == 64, &op, 1, src, dst, false);
}

/* Flags: for lookups where the guest's flags are dead or made again
   afterwards (translate.c, plan_tu). */
void e_test_r_r(struct emit *e, unsigned r) {
  static const uint8_t op = 0x85;
  rr_insn(e, 0, true, &op, 1, r, r, false);
}

void e_not(struct emit *e, unsigned r) {
  uint8_t b[3] = {(uint8_t)(0x48 | (r >= 8 ? 1 : 0)), 0xf7,
                  (uint8_t)(0xd0 | (r & 7))};
  e_bytes(e, b, sizeof(b));
}

/* cmp r64, imm32 (sign-extended; flags!), for the same lookups. */
void e_cmp_r_i32(struct emit *e, unsigned r, int32_t imm) {
  e_op_r_i32(e, 0x81, 7, true, r, (uint32_t)imm);
}

void e_mov_r_i(struct emit *e, unsigned r, uint64_t imm) {
  if (imm <= 0xffffffffull) {
    e_mov_r32_i(e, r, (uint32_t)imm);
    return;
  }
  uint8_t b[10] = {(uint8_t)(0x48 | (r >= 8 ? 1 : 0)),
                   (uint8_t)(0xb8 | (r & 7))};
  memcpy(b + 2, &imm, 8);
  e_bytes(e, b, 10);
}

void e_mov_r32_i(struct emit *e, unsigned r, uint32_t imm) {
  uint8_t b[6];
  unsigned n = 0;
  if (r >= 8)
    b[n++] = 0x41;
  b[n++] = (uint8_t)(0xb8 | (r & 7));
  memcpy(b + n, &imm, 4);
  e_bytes(e, b, n + 4);
}

void e_lea(struct emit *e, unsigned bits, unsigned dst, int base, int index,
           unsigned scale, int64_t disp) {
  if (base < 0 && index < 0) {
    /* A bare displacement: materialize it as an immediate instead. */
    if (bits == 64)
      e_mov_r_i(e, dst, (uint64_t)disp);
    else
      e_mov_r32_i(e, dst, (uint32_t)disp);
    return;
  }
  if (bits == 32)
    disp = (int32_t)disp;
  if (!fits32(disp)) {
    /* A 64-bit constant: load it, then add the one register part. */
    int r = base >= 0 ? base : index;
    unsigned sc = base >= 0 ? 1 : (scale ? scale : 1);
    if ((base >= 0 && index >= 0) || r == (int)dst) {
      e->fail = true;
      return;
    }
    e_mov_r_i(e, dst, (uint64_t)disp);
    if (sc == 1 && r != R_SP) {
      base = (int)dst;
      index = r;
    } else if (sc == 1) {
      base = r;
      index = (int)dst;
    } else {
      base = (int)dst;
      index = r;
    }
    scale = sc;
    disp = 0;
  }
  static const uint8_t op = 0x8d;
  /* 32-bit results use 32-bit addressing (67) so the sum wraps at 2^32. */
  mem_insn(e, bits == 32 ? 0x67 : 0, bits == 64, dst, &op, 1, base, index,
           scale ? scale : 1, (int32_t)disp, false);
}

/* VEX-encoded BMI forms: map (2 = 0F38, 3 = 0F3A), pp, W1, LZ; the r/m
   operand is rm_reg, or the context field at ctx_disp when it is -1. */
static void vex_insn(struct emit *e, unsigned map, unsigned pp, unsigned vvvv,
                     uint8_t opcode, unsigned reg, int rm_reg,
                     int32_t ctx_disp) {
  uint8_t b[16];
  unsigned n = 0;
  uint8_t m[8];
  unsigned mn = 0;
  uint8_t x = 0;
  if (rm_reg >= 0) {
    m[mn++] = (uint8_t)(0xc0 | ((reg & 7) << 3) | ((unsigned)rm_reg & 7));
    if (rm_reg >= 8)
      x |= 1;
  } else {
    x = modrm_mem(m, &mn, reg, R_SP, -1, 1, ctx_disp);
  }
  b[n++] = 0xc4;
  b[n++] = (uint8_t)(((reg >= 8 ? 0 : 1) << 7) | (((x & 2) ? 0 : 1) << 6) |
                     (((x & 1) ? 0 : 1) << 5) | map);
  b[n++] = (uint8_t)(0x80 | ((~vvvv & 15) << 3) | pp);
  b[n++] = opcode;
  memcpy(b + n, m, mn);
  n += mn;
  e_bytes(e, b, n);
}

void e_rorx(struct emit *e, unsigned dst, unsigned src, unsigned imm) {
  vex_insn(e, 3, 3, 0, 0xf0, dst, (int)src, 0);
  uint8_t i8 = (uint8_t)imm;
  e_bytes(e, &i8, 1);
}

void e_shrx(struct emit *e, unsigned dst, unsigned src, unsigned cnt) {
  vex_insn(e, 2, 3, cnt, 0xf7, dst, (int)src, 0);
}

void e_shlx(struct emit *e, unsigned dst, unsigned src, unsigned cnt) {
  vex_insn(e, 2, 1, cnt, 0xf7, dst, (int)src, 0);
}

void e_pext_ctx(struct emit *e, unsigned dst, unsigned src, int32_t off) {
  vex_insn(e, 2, 2, src, 0xf5, dst, -1, off);
}

void e_movzx8(struct emit *e, unsigned dst, unsigned src) {
  /* SPL/BPL/SIL/DIL need a REX prefix, never AH..BH. */
  static const uint8_t op[2] = {0x0f, 0xb6};
  rr_insn(e, 0, false, op, 2, dst, src, src >= 4);
}

void e_movzx16(struct emit *e, unsigned dst, unsigned src) {
  static const uint8_t op[2] = {0x0f, 0xb7};
  rr_insn(e, 0, false, op, 2, dst, src, false);
}

static void rel8_branch(struct emit *e, uint8_t op, int label) {
  e_bytes(e, &op, 1);
  add_fixup(e, 1, label);
  uint8_t z = 0;
  e_bytes(e, &z, 1);
}

void e_jrcxz(struct emit *e, int label) {
  rel8_branch(e, 0xe3, label);
}

void e_loop(struct emit *e, int label) {
  rel8_branch(e, 0xe2, label);
}

void e_jmp(struct emit *e, int label) {
  uint8_t op = 0xe9;
  e_bytes(e, &op, 1);
  add_fixup(e, 4, label);
  uint32_t z = 0;
  e_bytes(e, &z, 4);
}

void e_jcc(struct emit *e, unsigned cc, int label) {
  uint8_t op[2] = {0x0f, (uint8_t)(0x80 | (cc & 15))};
  e_bytes(e, op, 2);
  add_fixup(e, 4, label);
  uint32_t z = 0;
  e_bytes(e, &z, 4);
}

void e_jmp_abs(struct emit *e, uint64_t tgt) {
  uint8_t op = 0xe9;
  e_bytes(e, &op, 1);
  int32_t rel = (int32_t)(tgt - (e_here(e) + 4));
  e_bytes(e, &rel, 4);
}

static void ctx_indirect(struct emit *e, unsigned modrm_reg, int32_t off) {
  /* ff /r, [rsp + off] (call: the address is taken before the push). */
  static const uint8_t op = 0xff;
  mem_insn(e, 0, false, modrm_reg, &op, 1, R_SP, -1, 1, off, false);
}

void e_jmp_r(struct emit *e, unsigned r) {
  uint8_t b[3];
  unsigned n = 0;
  if (r >= 8)
    b[n++] = 0x41;
  b[n++] = 0xff;
  b[n++] = (uint8_t)(0xe0 | (r & 7));
  e_bytes(e, b, n);
}

void e_jmp_ctx(struct emit *e, int32_t off) {
  ctx_indirect(e, 4, off);
}
void e_call_ctx(struct emit *e, int32_t off) {
  ctx_indirect(e, 2, off);
}

uint32_t e_jmp_patchable(struct emit *e) {
  e_align4(e, 1);
  uint8_t op = 0xe9;
  e_bytes(e, &op, 1);
  uint32_t at = (uint32_t)e->pos;
  uint32_t z = 0;
  e_bytes(e, &z, 4);
  return at;
}

uint32_t e_jcc_patchable(struct emit *e, unsigned cc) {
  e_align4(e, 2);
  uint8_t op[2] = {0x0f, (uint8_t)(0x80 | (cc & 15))};
  e_bytes(e, op, 2);
  uint32_t at = (uint32_t)e->pos;
  uint32_t z = 0;
  e_bytes(e, &z, 4);
  return at;
}

void e_pushfq(struct emit *e) {
  static const uint8_t op = 0x9c;
  e_bytes(e, &op, 1);
}

void e_popfq(struct emit *e) {
  static const uint8_t op = 0x9d;
  e_bytes(e, &op, 1);
}

void e_pop_r(struct emit *e, unsigned r) {
  uint8_t b[2] = {0x41, (uint8_t)(0x58 | (r & 7))};
  e_bytes(e, r >= 8 ? b : b + 1, r >= 8 ? 2 : 1);
}

void e_op_r_mem(struct emit *e, uint8_t op, bool w, unsigned r, unsigned base,
                int32_t off) {
  mem_insn(e, 0, w, r, &op, 1, (int)base, -1, 1, off, false);
}

void e_op_mem_i32(struct emit *e, uint8_t op, unsigned ext, bool w,
                  unsigned base, int32_t off, uint32_t imm) {
  mem_insn(e, 0, w, ext, &op, 1, (int)base, -1, 1, off, false);
  e_bytes(e, &imm, 4);
}

void e_op_r_i32(struct emit *e, uint8_t op, unsigned ext, bool w, unsigned r,
                uint32_t imm) {
  rr_insn(e, 0, w, &op, 1, ext, r, false);
  e_bytes(e, &imm, 4);
}

void e_op_r_r(struct emit *e, uint8_t op, bool w, unsigned reg, unsigned rm) {
  rr_insn(e, 0, w, &op, 1, reg, rm, false);
}

void e_shift_i(struct emit *e, unsigned ext, unsigned r, uint8_t imm) {
  static const uint8_t op = 0xc1;
  rr_insn(e, 0, true, &op, 1, ext, r, false);
  e_bytes(e, &imm, 1);
}
