/*
 * A small assembler for translated code: Zydis encoder requests for
 * ordinary instructions, hand-made patchable jumps, labels with rel32/rel8
 * fixups. Registers are host GPR numbers (R_AX..R_15) unless a Zydis
 * register is asked for.
 */
#ifndef LIBVMM_BT_EMIT_H
#define LIBVMM_BT_EMIT_H

#include "bt.h"

#define E_MAX_LABELS 128
#define E_MAX_FIXUPS 256

struct e_fixup {
  uint32_t pos; /* offset of the displacement field */
  uint8_t size; /* 1 or 4 */
  uint8_t label;
};

struct emit {
  uint8_t *buf;  /* writable view at the fragment's start */
  uint64_t base; /* executable address of buf[0] */
  size_t pos, cap;
  bool fail;
  int32_t labels[E_MAX_LABELS];
  unsigned nlabels;
  struct e_fixup fixups[E_MAX_FIXUPS];
  unsigned nfixups;
};

void e_init(struct emit *e, uint8_t *buf, uint64_t base, size_t cap);
/* Resolve fixups; false if something did not fit or encode. */
bool e_finish(struct emit *e);
static inline uint64_t e_here(const struct emit *e) {
  return e->base + e->pos;
}

int e_label(struct emit *e);
void e_bind(struct emit *e, int label);
uint64_t e_label_addr(const struct emit *e, int label);

void e_bytes(struct emit *e, const void *p, size_t n);
void e_req(struct emit *e, ZydisEncoderRequest *r);
/* Pad with NOPs until (pos + skew) is a multiple of 4. */
void e_align4(struct emit *e, unsigned skew);
/* Pad with NOPs until the executable address is a multiple of n (a power
   of two). */
void e_align(struct emit *e, unsigned n);
/* pad bytes of NOPs (as few instructions as possible). */
void e_nops(struct emit *e, unsigned pad);

static inline ZydisRegister zr64(unsigned r) {
  return ZYDIS_REGISTER_RAX + r;
}
static inline ZydisRegister zr32(unsigned r) {
  return ZYDIS_REGISTER_EAX + r;
}
static inline ZydisRegister zr16(unsigned r) {
  return ZYDIS_REGISTER_AX + r;
}

/* Common forms. ctx:[off] stands for [rsp + off], a context field:
   translated code runs with RSP at the context (glue.S), and a base
   register lets the processor rename memory, so a store to a field and a
   load from it cost no store-forwarding delay (an absolute address costs
   about five cycles on Zen 3). */
void e_mov_r_ctx(struct emit *e, unsigned r, int32_t off); /* mov r, ctx:[off] */
void e_mov_ctx_r(struct emit *e, int32_t off, unsigned r); /* mov ctx:[off], r */
void e_mov_r_ctxidx(struct emit *e, unsigned r, int32_t off, unsigned idx);
void e_mov_ctx_i32(struct emit *e, int32_t off,
                  uint32_t imm); /* mov dword ctx:[off], imm */
/* mov qword ctx:[off + idx * 8], r */
void e_mov_ctxidx_r(struct emit *e, int32_t off, unsigned idx, unsigned r);
/* mov dword ctx:[off + idx * 4], imm32 */
void e_mov_ctxidx4_i32(struct emit *e, int32_t off, unsigned idx,
                      uint32_t imm);
void e_mov_r_r(struct emit *e, unsigned dst, unsigned src, unsigned bits);
void e_mov_r_i(struct emit *e, unsigned r, uint64_t imm); /* mov r64, imm */
void e_mov_r32_i(struct emit *e, unsigned r,
                 uint32_t imm); /* mov r32, imm (zero-extends) */
/* lea dst, [base + index*scale + disp] with an operand size of bits;
   base/index may be -1. */
void e_lea(struct emit *e, unsigned bits, unsigned dst, int base, int index,
           unsigned scale, int64_t disp);
void e_rorx(struct emit *e, unsigned dst, unsigned src, unsigned imm);
void e_shrx(struct emit *e, unsigned dst, unsigned src, unsigned cnt);
void e_shlx(struct emit *e, unsigned dst, unsigned src, unsigned cnt);
/* pext dst, src, qword ctx:[off] */
void e_pext_ctx(struct emit *e, unsigned dst, unsigned src, int32_t off);
void e_movzx8(struct emit *e, unsigned dst,
              unsigned src); /* movzx r32, r8(low) */
void e_movzx16(struct emit *e, unsigned dst, unsigned src); /* movzx r32, r16 */
void e_test_r_r(struct emit *e, unsigned r); /* test r64, r64 (flags!) */
void e_not(struct emit *e, unsigned r); /* not r64 */
void e_cmp_r_i32(struct emit *e, unsigned r, int32_t imm); /* (flags!) */
void e_jrcxz(struct emit *e, int label);
/* loop rel8: rcx -= 1, jump if rcx != 0 (flags untouched). */
void e_loop(struct emit *e, int label);
void e_jmp(struct emit *e, int label);        /* jmp rel32 to a label */
void e_jmp_abs(struct emit *e, uint64_t tgt); /* jmp rel32 to an address */
void e_jmp_ctx(struct emit *e, int32_t off);   /* jmp qword ctx:[off] */
void e_jmp_r(struct emit *e, unsigned r);      /* jmp r64 */
void e_call_ctx(struct emit *e, int32_t off);  /* call qword ctx:[off] */
/* Patchable jumps: return the offset (from buf) of the aligned rel32. */
uint32_t e_jmp_patchable(struct emit *e);
uint32_t e_jcc_patchable(struct emit *e, unsigned cc);
/* jcc to a label (rel32). */
void e_jcc(struct emit *e, unsigned cc, int label);
void e_set_rel32(uint8_t *field, uint64_t field_addr, uint64_t target);

/* Forms that write flags, for code that saved the guest's (syscall and
   sysret, translate.c). base is any register (R_SP: a context field). */
void e_pushfq(struct emit *e);
void e_popfq(struct emit *e);
void e_pop_r(struct emit *e, unsigned r); /* pop r64 */
/* op r, [base + off]: op 0x0b or, 0x23 and, 0x3b cmp; op [base + off], r:
   0x09 or. 64-bit with w. */
void e_op_r_mem(struct emit *e, uint8_t op, bool w, unsigned r, unsigned base,
                int32_t off);
/* op [base + off], imm32 and op r, imm32: op 0x81 with ext 1 (or), 4 (and),
   7 (cmp), or op 0xf7 with ext 0 (test). 64-bit with w (sign-extended). */
void e_op_mem_i32(struct emit *e, uint8_t op, unsigned ext, bool w,
                  unsigned base, int32_t off, uint32_t imm);
void e_op_r_i32(struct emit *e, uint8_t op, unsigned ext, bool w, unsigned r,
                uint32_t imm);
void e_op_r_r(struct emit *e, uint8_t op, bool w, unsigned reg, unsigned rm);
/* shl (ext 4), shr (5), sar (7) r64, imm8. */
void e_shift_i(struct emit *e, unsigned ext, unsigned r, uint8_t imm);

#endif
