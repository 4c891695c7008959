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

void e_bind(struct emit *e, int label) { e->labels[label] = (int32_t)e->pos; }

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
  e->fixups[e->nfixups++] =
      (struct e_fixup){.pos = (uint32_t)e->pos, .size = size, .label = (uint8_t)label};
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

static void req_init(ZydisEncoderRequest *r, ZydisMnemonic m, unsigned nops) {
  memset(r, 0, sizeof(*r));
  r->mnemonic = m;
  r->operand_count = (ZyanU8)nops;
}

static void op_reg(ZydisEncoderOperand *o, ZydisRegister reg) {
  o->type = ZYDIS_OPERAND_TYPE_REGISTER;
  o->reg.value = reg;
}

static void op_imm(ZydisEncoderOperand *o, uint64_t v) {
  o->type = ZYDIS_OPERAND_TYPE_IMMEDIATE;
  o->imm.u = v;
}

static void op_gs(ZydisEncoderRequest *r, ZydisEncoderOperand *o, int32_t off,
                  int idx, unsigned size) {
  o->type = ZYDIS_OPERAND_TYPE_MEMORY;
  o->mem.base = ZYDIS_REGISTER_NONE;
  o->mem.index = idx >= 0 ? zr64((unsigned)idx) : ZYDIS_REGISTER_NONE;
  o->mem.scale = idx >= 0 ? 8 : 0;
  o->mem.displacement = off;
  o->mem.size = (ZyanU16)size;
  r->prefixes |= ZYDIS_ATTRIB_HAS_SEGMENT_GS;
}

void e_mov_r_gs(struct emit *e, unsigned r, int32_t off) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_reg(&q.operands[0], zr64(r));
  op_gs(&q, &q.operands[1], off, -1, 8);
  e_req(e, &q);
}

void e_mov_gs_r(struct emit *e, int32_t off, unsigned r) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_gs(&q, &q.operands[0], off, -1, 8);
  op_reg(&q.operands[1], zr64(r));
  e_req(e, &q);
}

void e_mov_r_gsidx(struct emit *e, unsigned r, int32_t off, unsigned idx) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_reg(&q.operands[0], zr64(r));
  op_gs(&q, &q.operands[1], off, (int)idx, 8);
  e_req(e, &q);
}

void e_mov_gs_i32(struct emit *e, int32_t off, uint32_t imm) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_gs(&q, &q.operands[0], off, -1, 4);
  op_imm(&q.operands[1], (uint64_t)(int64_t)(int32_t)imm);
  e_req(e, &q);
}

void e_mov_r_r(struct emit *e, unsigned dst, unsigned src, unsigned bits) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_reg(&q.operands[0], bits == 64 ? zr64(dst) : bits == 32 ? zr32(dst) : zr16(dst));
  op_reg(&q.operands[1], bits == 64 ? zr64(src) : bits == 32 ? zr32(src) : zr16(src));
  e_req(e, &q);
}

void e_mov_r_i(struct emit *e, unsigned r, uint64_t imm) {
  if (imm <= 0xffffffffull) {
    e_mov_r32_i(e, r, (uint32_t)imm);
    return;
  }
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_reg(&q.operands[0], zr64(r));
  op_imm(&q.operands[1], imm);
  e_req(e, &q);
}

void e_mov_r32_i(struct emit *e, unsigned r, uint32_t imm) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOV, 2);
  op_reg(&q.operands[0], zr32(r));
  /* Zydis takes immediates of narrower operands sign-extended. */
  op_imm(&q.operands[1], (uint64_t)(int64_t)(int32_t)imm);
  e_req(e, &q);
}

void e_lea(struct emit *e, unsigned bits, unsigned dst, int base, int index,
           unsigned scale, int64_t disp) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_LEA, 2);
  op_reg(&q.operands[0], bits == 64 ? zr64(dst) : bits == 32 ? zr32(dst) : zr16(dst));
  ZydisEncoderOperand *o = &q.operands[1];
  o->type = ZYDIS_OPERAND_TYPE_MEMORY;
  /* 32-bit results use 32-bit addressing so the sum wraps at 2^32. */
  o->mem.base = base >= 0 ? (bits == 32 ? zr32((unsigned)base) : zr64((unsigned)base))
                          : ZYDIS_REGISTER_NONE;
  o->mem.index = index >= 0
                     ? (bits == 32 ? zr32((unsigned)index) : zr64((unsigned)index))
                     : ZYDIS_REGISTER_NONE;
  o->mem.scale = index >= 0 ? (ZyanU8)(scale ? scale : 1) : 0;
  o->mem.displacement = bits == 32 ? (int64_t)(int32_t)disp : disp;
  o->mem.size = (ZyanU16)(bits / 8);
  if (base < 0 && index < 0) {
    /* A bare displacement: materialize it as an immediate instead. */
    if (bits == 64)
      e_mov_r_i(e, dst, (uint64_t)disp);
    else
      e_mov_r32_i(e, dst, (uint32_t)disp);
    return;
  }
  e_req(e, &q);
}

static void vex3(struct emit *e, ZydisMnemonic m, unsigned dst, unsigned src,
                 unsigned third, bool imm) {
  ZydisEncoderRequest q;
  req_init(&q, m, 3);
  op_reg(&q.operands[0], zr64(dst));
  op_reg(&q.operands[1], zr64(src));
  if (imm)
    op_imm(&q.operands[2], third);
  else
    op_reg(&q.operands[2], zr64(third));
  e_req(e, &q);
}

void e_rorx(struct emit *e, unsigned dst, unsigned src, unsigned imm) {
  vex3(e, ZYDIS_MNEMONIC_RORX, dst, src, imm, true);
}

void e_shrx(struct emit *e, unsigned dst, unsigned src, unsigned cnt) {
  vex3(e, ZYDIS_MNEMONIC_SHRX, dst, src, cnt, false);
}

void e_shlx(struct emit *e, unsigned dst, unsigned src, unsigned cnt) {
  vex3(e, ZYDIS_MNEMONIC_SHLX, dst, src, cnt, false);
}

void e_pext_gs(struct emit *e, unsigned dst, unsigned src, int32_t off) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_PEXT, 3);
  op_reg(&q.operands[0], zr64(dst));
  op_reg(&q.operands[1], zr64(src));
  op_gs(&q, &q.operands[2], off, -1, 8);
  e_req(e, &q);
}

void e_movzx8(struct emit *e, unsigned dst, unsigned src) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOVZX, 2);
  op_reg(&q.operands[0], zr32(dst));
  /* SPL/BPL/SIL/DIL with REX, never AH..BH. */
  op_reg(&q.operands[1], src < 4 ? ZYDIS_REGISTER_AL + src
                                 : ZYDIS_REGISTER_SPL + (src - 4));
  e_req(e, &q);
}

void e_movzx16(struct emit *e, unsigned dst, unsigned src) {
  ZydisEncoderRequest q;
  req_init(&q, ZYDIS_MNEMONIC_MOVZX, 2);
  op_reg(&q.operands[0], zr32(dst));
  op_reg(&q.operands[1], zr16(src));
  e_req(e, &q);
}

void e_jrcxz(struct emit *e, int label) {
  uint8_t op = 0xe3;
  e_bytes(e, &op, 1);
  add_fixup(e, 1, label);
  uint8_t z = 0;
  e_bytes(e, &z, 1);
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

static void gs_indirect(struct emit *e, unsigned modrm_reg, int32_t off) {
  /* ff /r with SIB absolute disp32 and a GS override. */
  uint8_t b[3] = {0x65, 0xff, (uint8_t)(0x04 | (modrm_reg << 3))};
  uint8_t sib = 0x25;
  e_bytes(e, b, 3);
  e_bytes(e, &sib, 1);
  e_bytes(e, &off, 4);
}

void e_jmp_gs(struct emit *e, int32_t off) { gs_indirect(e, 4, off); }
void e_call_gs(struct emit *e, int32_t off) { gs_indirect(e, 2, off); }

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
