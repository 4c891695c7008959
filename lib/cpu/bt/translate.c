/*
 * The translator: decodes a translation unit (TU) in the guest's mode and
 * compiles it into a fragment of 64-bit host code in the translation cache.
 * Each instruction is translated IDENT (re-encoded as is), with its memory
 * operand redirected through the soft TLB, as an inline stack or branch
 * sequence, or as a callout into C. See docs/bt.md, "Translation units and
 * fragments".
 */
#include <limits.h>
#include <string.h>

#include "emit.h"

#define TU_MAX 12
/* The most instructions a loop region spans (see find_region). */
#define REGION_MAX 64
#define FRAG_MAX_BYTES (64u << 10)

/* How an instruction is translated. */
enum xclass {
  X_IDENT, /* native, registers only */
  X_MEM,   /* native with a memory operand */
  X_LEA,
  X_NOP,  /* nothing to emit */
  X_PUSH, /* flat modes: push reg/imm */
  X_POP,  /* flat modes: pop reg */
  X_LEAVE,
  X_CALL,  /* call rel */
  X_CALLI, /* call reg/mem */
  X_JMP,   /* jmp rel */
  X_JMPI,  /* jmp reg/mem */
  X_JCC,
  X_RET,
  X_EMUL,     /* C, then continue */
  X_EMUL_END, /* C, then leave the fragment */
  X_SYSCALL,  /* 64-bit syscall from CPL 3, inline (emit_syscall) */
  X_SYSRET,   /* 64-bit sysretq from CPL 0, inline (emit_sysret) */
  X_UD,
  X_NM,
};

struct xi {
  ZydisDecodedInstruction di;
  ZydisDecodedOperand op[ZYDIS_MAX_OPERAND_COUNT];
  uint8_t bytes[15];
  uint64_t rip, next;
  uint64_t gpa; /* of the first byte */
  enum xclass cls;
  int memop;
  uint32_t used; /* host GPRs the instruction names */
  bool high8;
  bool rsp;   /* names RSP/ESP/SP as a data register */
  bool page2; /* crosses into the next page */
  uint64_t gpa2;
};

/* What planning a TU's lookups (plan_tu) needs to know of an instruction:
   small, so find_region can summarize a whole loop region to choose
   where its TUs end. */
struct xsum {
  uint32_t used; /* registers named */
  uint32_t wr;   /* registers written */
  uint32_t addr; /* XS_CAND: the memory operand's address registers */
  uint32_t keep; /* registers rebuild_flags reads (0: not rebuildable) */
  uint8_t f;
};
enum {
  XS_CAND = 1,   /* an inline lookup plan_tu may move or give flags to */
  XS_PLAIN = 2,  /* plain_insn */
  XS_W6 = 4,     /* writes_flags6 */
  XS_FLAGS = 8,  /* may change one of the six flags */
  XS_QUIET = 16, /* translated inline, no callout that could leave */
  XS_END = 32,   /* ends a TU (a jcc or jmp, in a loop region) */
  XS_BRANCH = 64, /* a direct jcc or jmp */
};

/* rebuild_of's index of the instruction whose flags a TU's flags entry
   takes (struct tx, px). */
#define P_IDX TU_MAX

struct tx {
  struct bt_vcpu *b;
  struct emit e;
  struct bt_frag *f;
  struct xi x[TU_MAX + 1]; /* the last: find_region's look-ahead */
  unsigned n;
  bool flat;
  bool code64;
  unsigned sbytes; /* default stack operation size (flat modes) */
  /* Descriptor address fixups, resolved after the labels. */
  struct {
    struct bt_desc *d;
    int retry, after, bounce;
  } dfix[TU_MAX * 6];
  unsigned ndfix;
  /* Links: patch site (offset in the fragment), stub label, target,
     registers the stub gives back first, loop-head label (self loops). */
  struct {
    uint32_t patch;
    int stub;
    uint64_t target;
    uint32_t key; /* the target's mode */
    uint16_t restore, kset;
    int head;
    bool warm;
    uint64_t fbytes; /* region links: the flags' instruction (xbytes) */
    uint8_t flen;
  } lk[4];
  unsigned nlk;
  struct bt_desc dummy; /* sink when the descriptor arena is full */
  /* Host registers the glue borrowed: they hold junk, the guest value is
     in ctx->spill[r]. Restored lazily, before an instruction that names
     the register, and before every exit from the fragment. */
  uint16_t borrowed;
  /* While a lookup runs, rcx's guest value waits in this borrowed
     register (jrcxz needs rcx): a register move, where a spill slot would
     put a store-to-load delay into loops counting in rcx. -1 if none. */
  int park;
  /* Host GPRs named by the current instruction or a later one of the TU:
     scratch registers are picked outside this set where possible, so a
     register borrowed once stays borrowed until the TU ends. */
  uint32_t later;
  /* Self loops (see emit_body): every register the glue ever borrowed, and
     the ones the loop keeps borrowed around its back edge (the loop head
     label `head` is past their borrowing). */
  uint16_t ever;
  uint16_t keep;
  int head;
  /* Warm entries (see emit_body): whether fragments of this mode have
     them, whether this one keeps STD_KEPT borrowed from its entry, and the
     offsets of its entry and warm entry from its first byte. */
  bool warm;
  bool keep_std;
  uint32_t entry, warm_at;
  /* Loop region (see find_region): the RIPs of its instructions, and the
     registers its fragments keep borrowed across the links between them
     (0: the TU is in none), borrowed from kwarm_at on. */
  uint64_t rg_rip[REGION_MAX];
  struct xsum rg_sum[REGION_MAX]; /* rg_s from S on, then from T */
  unsigned rg_n, rg_s;
  unsigned rg_lo, rg_hi; /* its bytes' extent in the TU's first page */
  uint16_t rkeep;
  uint32_t kwarm_at;
  /* The part of the region's partition that ends where the TU starts, as
     rg_sum indexes from rg_pp, rg_pn long (0: the TU starts inside one). */
  unsigned rg_pp, rg_pn;
  /* Flags entries (see flags_producers): px is the instruction whose
     flags a link from the loop brings to the TU's first instruction
     (plen bytes, pbytes; 0: none), which the first fm instructions'
     lookups make again (rebuild_f: plan_tu's choice with px before the
     TU), in a second copy of them at label fent (its offset kflags_at in
     a region's fragment; a self loop's back edge goes there). xbytes and
     xplen: the instruction whose flags the TU leaves at its end, for its
     links. */
  struct xi px;
  uint64_t pbytes, xbytes;
  uint8_t plen, xplen;
  unsigned fm;
  int8_t rebuild_f[TU_MAX];
  int fent;
  uint32_t kflags_at;
  /* Hoisted lookups (see plan_tu): hoist_for[k] is the memory
     instruction whose lookup runs right before instruction k, or -1;
     hoisted[i] says instruction i's lookup ran there, leaving its host
     address in hs1[i] ([hs1[i] + hs2[i] - hbias[i]] where the lookup
     went through the TLB: hs2[i] >= 0). */
  int8_t hoist_for[TU_MAX];
  bool hoisted[TU_MAX];
  /* Lookups in the flags form in place (see plan_tu): rebuild_of[i] is
     the instruction whose flags instruction i's lookup gives back, or -1. */
  int8_t rebuild_of[TU_MAX];
  uint8_t hs1[TU_MAX], hbias[TU_MAX];
  int8_t hs2[TU_MAX];
  int hafter[TU_MAX];
  /* Fall-through hits (see near_lookup): nlook numbers the lookups of an
     emission; far has a bit for each one an earlier emission found out of
     rel8 range of its miss; nb lists this emission's `loop` branches (rel8
     field offset, label, lookup number) and, with target >= 0, the
     trampoline after the body that label names (jmp target). */
  unsigned nlook;
  uint64_t far;
  struct near_br {
    uint32_t pos;
    int label, target;
    unsigned ord;
  } nb[TU_MAX * 6];
  unsigned nnb;
  /* Lookup slots (see emit_lookup_with): the fills after the body (flags:
     for the flags form, whose address register holds the offset in the
     old slot's page at the fill), and the slots this emission took, from
     the vCPU's next one on. */
  struct slot_fill {
    unsigned a, tt, rc, size, bias;
    bool write, flags;
    int label, hit, miss;
    int32_t off;
  } sf[TU_MAX * 8]; /* a flags entry's prefix twice */
  unsigned nsf, nslot;
  /* The bias of the addend the last lookup left (BT_TLB_BIAS, or its
     slot's: slot_bias), which the access subtracts. */
  unsigned abias;
};

/* The scratch registers most lookups borrow (pick's order; rcx for
   jrcxz). Every fragment has a warm entry, reached with these borrowed
   (their guest values in their slots): an exit that has them borrowed
   goes there and leaves them, where it would give them back and the next
   fragment would borrow them again. A fragment that borrows scratch
   registers and names none of these keeps them (keep_std): its entry
   borrows them and falls into its warm entry. Any other fragment's warm
   entry gives them back and falls into its entry. */
#define STD_KEPT ((uint16_t)((1u << R_CX) | (1u << R_10) | (1u << R_11)))

/* The linear address of rip in the TU's code segment (wrapping at 4 GiB
   outside 64-bit code). */
static uint64_t lin_of(const struct tx *t, uint64_t rip) {
  uint64_t pc = t->b->ctx.segbase[S_CS] + rip;
  return t->code64 ? pc : (uint32_t)pc;
}

/* ------------------------------------------------------------------------ */
/* Register helpers                                                         */

static int gpr_of(ZydisRegister r, bool *high8) {
  *high8 = false;
  if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_BL)
    return r - ZYDIS_REGISTER_AL;
  if (r >= ZYDIS_REGISTER_AH && r <= ZYDIS_REGISTER_BH) {
    *high8 = true;
    return r - ZYDIS_REGISTER_AH;
  }
  if (r >= ZYDIS_REGISTER_SPL && r <= ZYDIS_REGISTER_R15B)
    return 4 + (r - ZYDIS_REGISTER_SPL);
  if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W)
    return r - ZYDIS_REGISTER_AX;
  if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D)
    return r - ZYDIS_REGISTER_EAX;
  if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15)
    return r - ZYDIS_REGISTER_RAX;
  return -1;
}

/* The same-width register of host GPR n that stands in for register r. */
static ZydisRegister same_width(ZydisRegister r, unsigned n) {
  if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W)
    return zr16(n);
  if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D)
    return zr32(n);
  if (r == ZYDIS_REGISTER_SPL)
    return n < 4 ? ZYDIS_REGISTER_AL + n : ZYDIS_REGISTER_SPL + (n - 4);
  return zr64(n);
}

static void scan_regs(struct xi *x) {
  x->used = 0;
  x->high8 = false;
  x->rsp = false;
  for (int i = 0; i < x->di.operand_count; i++) {
    const ZydisDecodedOperand *o = &x->op[i];
    bool h;
    if (o->type == ZYDIS_OPERAND_TYPE_REGISTER) {
      int g = gpr_of(o->reg.value, &h);
      if (g >= 0) {
        x->used |= 1u << g;
        x->high8 |= h;
        if (g == R_SP && o->visibility != ZYDIS_OPERAND_VISIBILITY_HIDDEN)
          x->rsp = true;
      }
    } else if (o->type == ZYDIS_OPERAND_TYPE_MEMORY) {
      int g = gpr_of(o->mem.base, &h);
      if (g >= 0)
        x->used |= 1u << g;
      g = gpr_of(o->mem.index, &h);
      if (g >= 0)
        x->used |= 1u << g;
    }
  }
}

/* The scratch registers in the order pick prefers them (loop regions
   choose theirs in the same order, after rcx). */
static const uint8_t pick_order[] = {R_11, R_10, R_9,  R_8,  R_15, R_14, R_13,
                                     R_12, R_DI, R_SI, R_BP, R_BX, R_DX, R_AX};

/* Pick a scratch register not named by the instruction (avoid); rcx is
   reserved for jrcxz. Preferred, in order: one the glue already borrowed
   that no later instruction of the TU names (free), one no later
   instruction names (a store now, a load when the TU ends), one already
   borrowed (given back before the instruction naming it, borrowed again
   after), any. legacy: no REX allowed (the instruction uses AH..BH). */
static int pick(uint32_t *avoid, bool legacy, uint16_t borrowed,
                uint32_t later) {
  static const uint8_t order_legacy[] = {R_DI, R_SI, R_BP, R_BX, R_DX, R_AX};
  const uint8_t *o = legacy ? order_legacy : pick_order;
  size_t n = legacy ? sizeof(order_legacy) : sizeof(pick_order);
  for (int pass = 0; pass < 4; pass++)
    for (size_t i = 0; i < n; i++) {
      uint32_t bit = 1u << o[i];
      bool ok = !(*avoid & bit);
      if (pass == 0)
        ok = ok && (borrowed & bit) && !(later & bit);
      else if (pass == 1)
        ok = ok && !(later & bit);
      else if (pass == 2)
        ok = ok && (borrowed & bit);
      if (ok) {
        *avoid |= bit;
        return o[i];
      }
    }
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Classification                                                           */

/* Extensions the guest may run natively: what the engine reports and the
   host has (an instruction the host lacks would raise SIGILL here). */
static bool isa_native(const struct bt_vm *m,
                       const ZydisDecodedInstruction *di) {
  switch (di->meta.isa_ext) {
  case ZYDIS_ISA_EXT_BASE:
  case ZYDIS_ISA_EXT_X87:
  case ZYDIS_ISA_EXT_MMX:
  case ZYDIS_ISA_EXT_SSE:
  case ZYDIS_ISA_EXT_SSE2:
  case ZYDIS_ISA_EXT_LONGMODE:
  case ZYDIS_ISA_EXT_PAUSE: return true;
  case ZYDIS_ISA_EXT_SSE3: return m->host & BT_H_SSE3;
  case ZYDIS_ISA_EXT_SSSE3: return m->host & BT_H_SSSE3;
  case ZYDIS_ISA_EXT_SSE4: return (m->host & BT_H_SSE4) == BT_H_SSE4;
  case ZYDIS_ISA_EXT_LZCNT: return m->host & BT_H_LZCNT;
  case ZYDIS_ISA_EXT_BMI1: return m->host & BT_H_BMI1;
  case ZYDIS_ISA_EXT_BMI2: return m->host & BT_H_BMI2;
  case ZYDIS_ISA_EXT_ADOX_ADCX: return m->host & BT_H_ADX;
  case ZYDIS_ISA_EXT_MOVBE: return m->host & BT_H_MOVBE;
  case ZYDIS_ISA_EXT_AES: return m->host & BT_H_AES;
  case ZYDIS_ISA_EXT_PCLMULQDQ: return m->host & BT_H_PCLMUL;
  default: return false;
  }
}

static bool cat_native(ZydisInstructionCategory c) {
  switch (c) {
  case ZYDIS_CATEGORY_BINARY:
  case ZYDIS_CATEGORY_LOGICAL:
  case ZYDIS_CATEGORY_SHIFT:
  case ZYDIS_CATEGORY_ROTATE:
  case ZYDIS_CATEGORY_BITBYTE:
  case ZYDIS_CATEGORY_CMOV:
  case ZYDIS_CATEGORY_SETCC:
  case ZYDIS_CATEGORY_DATAXFER:
  case ZYDIS_CATEGORY_CONVERT:
  case ZYDIS_CATEGORY_SEMAPHORE:
  case ZYDIS_CATEGORY_SSE:
  case ZYDIS_CATEGORY_MMX:
  case ZYDIS_CATEGORY_X87_ALU:
  case ZYDIS_CATEGORY_FCMOV:
  case ZYDIS_CATEGORY_LOGICAL_FP:
  case ZYDIS_CATEGORY_STTNI:
  case ZYDIS_CATEGORY_AES:
  case ZYDIS_CATEGORY_PCLMULQDQ:
  case ZYDIS_CATEGORY_BMI1:
  case ZYDIS_CATEGORY_BMI2:
  case ZYDIS_CATEGORY_LZCNT:
  case ZYDIS_CATEGORY_ADOX_ADCX:
  case ZYDIS_CATEGORY_FLAGOP:
  case ZYDIS_CATEGORY_BROADCAST: return true;
  default: return false;
  }
}

/* Instructions C handles even where inline paths exist. */
static int special(const struct xi *x) {
  switch (x->di.mnemonic) {
  /* System and sensitive. */
  case ZYDIS_MNEMONIC_HLT:
  case ZYDIS_MNEMONIC_STI:
  case ZYDIS_MNEMONIC_POPF:
  case ZYDIS_MNEMONIC_POPFD:
  case ZYDIS_MNEMONIC_POPFQ:
  case ZYDIS_MNEMONIC_IRET:
  case ZYDIS_MNEMONIC_IRETD:
  case ZYDIS_MNEMONIC_IRETQ:
  case ZYDIS_MNEMONIC_INT:
  case ZYDIS_MNEMONIC_INT3:
  case ZYDIS_MNEMONIC_INTO:
  case ZYDIS_MNEMONIC_INT1:
  case ZYDIS_MNEMONIC_SYSCALL:
  case ZYDIS_MNEMONIC_SYSRET:
  case ZYDIS_MNEMONIC_SYSENTER:
  case ZYDIS_MNEMONIC_SYSEXIT:
  case ZYDIS_MNEMONIC_INSB:
  case ZYDIS_MNEMONIC_INSW:
  case ZYDIS_MNEMONIC_INSD:
  case ZYDIS_MNEMONIC_OUTSB:
  case ZYDIS_MNEMONIC_OUTSW:
  case ZYDIS_MNEMONIC_OUTSD:
  case ZYDIS_MNEMONIC_MOVSB:
  case ZYDIS_MNEMONIC_MOVSW:
  case ZYDIS_MNEMONIC_MOVSQ:
  case ZYDIS_MNEMONIC_STOSB:
  case ZYDIS_MNEMONIC_STOSW:
  case ZYDIS_MNEMONIC_STOSD:
  case ZYDIS_MNEMONIC_STOSQ:
  case ZYDIS_MNEMONIC_LODSB:
  case ZYDIS_MNEMONIC_LODSW:
  case ZYDIS_MNEMONIC_LODSD:
  case ZYDIS_MNEMONIC_LODSQ:
  case ZYDIS_MNEMONIC_CMPSB:
  case ZYDIS_MNEMONIC_CMPSW:
  case ZYDIS_MNEMONIC_CMPSQ:
  case ZYDIS_MNEMONIC_SCASB:
  case ZYDIS_MNEMONIC_SCASW:
  case ZYDIS_MNEMONIC_SCASD:
  case ZYDIS_MNEMONIC_SCASQ:
  case ZYDIS_MNEMONIC_LGDT:
  case ZYDIS_MNEMONIC_LIDT:
  case ZYDIS_MNEMONIC_LLDT:
  case ZYDIS_MNEMONIC_LTR:
  case ZYDIS_MNEMONIC_CLTS:
  case ZYDIS_MNEMONIC_LMSW:
  case ZYDIS_MNEMONIC_SWAPGS:
  case ZYDIS_MNEMONIC_WRMSR:
  case ZYDIS_MNEMONIC_LDS:
  case ZYDIS_MNEMONIC_LES:
  case ZYDIS_MNEMONIC_LFS:
  case ZYDIS_MNEMONIC_LGS:
  case ZYDIS_MNEMONIC_LSS:
  case ZYDIS_MNEMONIC_LOOP:
  case ZYDIS_MNEMONIC_LOOPE:
  case ZYDIS_MNEMONIC_LOOPNE:
  case ZYDIS_MNEMONIC_JCXZ:
  case ZYDIS_MNEMONIC_JECXZ:
  case ZYDIS_MNEMONIC_JRCXZ:
  case ZYDIS_MNEMONIC_FXRSTOR:
  case ZYDIS_MNEMONIC_FXRSTOR64: return X_EMUL_END;
  /* Served in the callout when a handler takes the port (do_in_out);
     an exit leaves anyway. */
  case ZYDIS_MNEMONIC_IN:
  case ZYDIS_MNEMONIC_OUT:
  case ZYDIS_MNEMONIC_CLI:
  case ZYDIS_MNEMONIC_PUSHF:
  case ZYDIS_MNEMONIC_PUSHFD:
  case ZYDIS_MNEMONIC_PUSHFQ:
  case ZYDIS_MNEMONIC_CPUID:
  case ZYDIS_MNEMONIC_RDTSC:
  case ZYDIS_MNEMONIC_RDTSCP:
  case ZYDIS_MNEMONIC_RDMSR:
  case ZYDIS_MNEMONIC_RDPMC:
  case ZYDIS_MNEMONIC_XGETBV:
  case ZYDIS_MNEMONIC_SGDT:
  case ZYDIS_MNEMONIC_SIDT:
  case ZYDIS_MNEMONIC_SLDT:
  case ZYDIS_MNEMONIC_STR:
  case ZYDIS_MNEMONIC_SMSW:
  case ZYDIS_MNEMONIC_LAR:
  case ZYDIS_MNEMONIC_LSL:
  case ZYDIS_MNEMONIC_VERR:
  case ZYDIS_MNEMONIC_VERW:
  case ZYDIS_MNEMONIC_ARPL:
  case ZYDIS_MNEMONIC_INVD:
  case ZYDIS_MNEMONIC_WBINVD:
  case ZYDIS_MNEMONIC_DIV:
  case ZYDIS_MNEMONIC_IDIV:
  case ZYDIS_MNEMONIC_DAA:
  case ZYDIS_MNEMONIC_DAS:
  case ZYDIS_MNEMONIC_AAA:
  case ZYDIS_MNEMONIC_AAS:
  case ZYDIS_MNEMONIC_AAM:
  case ZYDIS_MNEMONIC_AAD:
  case ZYDIS_MNEMONIC_SALC:
  case ZYDIS_MNEMONIC_XLAT:
  case ZYDIS_MNEMONIC_BOUND:
  case ZYDIS_MNEMONIC_PUSHA:
  case ZYDIS_MNEMONIC_PUSHAD:
  case ZYDIS_MNEMONIC_POPA:
  case ZYDIS_MNEMONIC_POPAD:
  case ZYDIS_MNEMONIC_ENTER:
  /* invlpg changes no mode; code it unmaps is dropped by the lookups. */
  case ZYDIS_MNEMONIC_INVLPG:
  case ZYDIS_MNEMONIC_FNINIT:
  case ZYDIS_MNEMONIC_FLDCW:
  case ZYDIS_MNEMONIC_FNSTCW:
  case ZYDIS_MNEMONIC_LDMXCSR:
  case ZYDIS_MNEMONIC_STMXCSR:
  case ZYDIS_MNEMONIC_FXSAVE:
  case ZYDIS_MNEMONIC_FXSAVE64:
  case ZYDIS_MNEMONIC_FNSTENV:
  case ZYDIS_MNEMONIC_FLDENV:
  case ZYDIS_MNEMONIC_FNSAVE:
  case ZYDIS_MNEMONIC_FRSTOR: return X_EMUL;
  case ZYDIS_MNEMONIC_MOVSD:
  case ZYDIS_MNEMONIC_CMPSD:
    /* String forms have no visible operands; SSE2 forms are native. */
    return x->di.operand_count_visible == 0 ? X_EMUL_END : -1;
  case ZYDIS_MNEMONIC_UD0:
  case ZYDIS_MNEMONIC_UD1:
  case ZYDIS_MNEMONIC_UD2: return X_UD;
  case ZYDIS_MNEMONIC_NOP:
  case ZYDIS_MNEMONIC_PREFETCH:
  case ZYDIS_MNEMONIC_PREFETCHNTA:
  case ZYDIS_MNEMONIC_PREFETCHT0:
  case ZYDIS_MNEMONIC_PREFETCHT1:
  case ZYDIS_MNEMONIC_PREFETCHT2:
  case ZYDIS_MNEMONIC_PREFETCHW:
  case ZYDIS_MNEMONIC_CLFLUSH:
  case ZYDIS_MNEMONIC_CLFLUSHOPT:
  case ZYDIS_MNEMONIC_CLWB:
  case ZYDIS_MNEMONIC_ENDBR32:
  case ZYDIS_MNEMONIC_ENDBR64: return X_NOP;
  /* Ordering still matters between vCPU threads sharing guest RAM. */
  case ZYDIS_MNEMONIC_LFENCE:
  case ZYDIS_MNEMONIC_SFENCE:
  case ZYDIS_MNEMONIC_MFENCE:
  case ZYDIS_MNEMONIC_PAUSE: return X_IDENT;
  default: return -1;
  }
}

static bool names_sreg_or_sys(const struct xi *x) {
  for (int i = 0; i < x->di.operand_count; i++) {
    if (x->op[i].type != ZYDIS_OPERAND_TYPE_REGISTER)
      continue;
    switch (ZydisRegisterGetClass(x->op[i].reg.value)) {
    case ZYDIS_REGCLASS_SEGMENT:
    case ZYDIS_REGCLASS_CONTROL:
    case ZYDIS_REGCLASS_DEBUG:
    case ZYDIS_REGCLASS_TEST:
    case ZYDIS_REGCLASS_TABLE: return true;
    default: break;
    }
  }
  return false;
}

static bool has_hidden_stack(const struct xi *x) {
  for (int i = 0; i < x->di.operand_count; i++) {
    const ZydisDecodedOperand *o = &x->op[i];
    if (o->visibility != ZYDIS_OPERAND_VISIBILITY_HIDDEN)
      continue;
    bool h;
    if (o->type == ZYDIS_OPERAND_TYPE_REGISTER &&
        gpr_of(o->reg.value, &h) == R_SP)
      return true;
    if (o->type == ZYDIS_OPERAND_TYPE_MEMORY)
      return true;
  }
  return false;
}

/* SSE-family instructions that work with CR4.OSFXSR clear (SDM vol. 3,
   CR4.OSFXSR): early kernel code prefetches before it enables SSE. */
static bool fxsr_exempt(ZydisMnemonic m) {
  switch (m) {
  case ZYDIS_MNEMONIC_PAUSE:
  case ZYDIS_MNEMONIC_PREFETCHNTA:
  case ZYDIS_MNEMONIC_PREFETCHT0:
  case ZYDIS_MNEMONIC_PREFETCHT1:
  case ZYDIS_MNEMONIC_PREFETCHT2:
  case ZYDIS_MNEMONIC_SFENCE:
  case ZYDIS_MNEMONIC_LFENCE:
  case ZYDIS_MNEMONIC_MFENCE:
  case ZYDIS_MNEMONIC_MOVNTI:
  case ZYDIS_MNEMONIC_CLFLUSH:
  case ZYDIS_MNEMONIC_CRC32:
  case ZYDIS_MNEMONIC_POPCNT: return true;
  default: return false;
  }
}

/* Reads or writes the x87/MMX state, which must then be in the FPU
   (glue.S, ctx->x87). MMX instructions of the SSE extensions count. */
static bool uses_x87(const struct xi *x) {
  const ZydisDecodedInstruction *di = &x->di;
  if (di->meta.isa_ext == ZYDIS_ISA_EXT_X87 ||
      di->meta.isa_ext == ZYDIS_ISA_EXT_MMX ||
      di->meta.category == ZYDIS_CATEGORY_X87_ALU ||
      di->meta.category == ZYDIS_CATEGORY_FCMOV ||
      di->meta.category == ZYDIS_CATEGORY_MMX)
    return true;
  for (int i = 0; i < di->operand_count; i++) {
    if (x->op[i].type != ZYDIS_OPERAND_TYPE_REGISTER)
      continue;
    ZydisRegister r = x->op[i].reg.value;
    ZydisRegisterClass c = ZydisRegisterGetClass(r);
    if (c == ZYDIS_REGCLASS_X87 || c == ZYDIS_REGCLASS_MMX ||
        r == ZYDIS_REGISTER_X87CONTROL || r == ZYDIS_REGISTER_X87STATUS ||
        r == ZYDIS_REGISTER_X87TAG)
      return true;
  }
  return false;
}

/* May change MXCSR's status bits when it runs natively: any instruction
   of the SSE extensions that can (floating-point arithmetic, comparisons,
   conversions; the integer ones are included, which costs a store). */
static bool uses_mxcsr(const struct xi *x) {
  ZydisISAExt ext = x->di.meta.isa_ext;
  return ext == ZYDIS_ISA_EXT_SSE || ext == ZYDIS_ISA_EXT_SSE2 ||
         ext == ZYDIS_ISA_EXT_SSE3 || ext == ZYDIS_ISA_EXT_SSE4;
}

/* Whether x names an XMM register (hidden operands included: xmm0 of
   blendvps, pcmpistrm): the vCPU's XMM registers then live in the host's
   while translated code runs (ctx.xmm_on, glue.S). */
static bool names_xmm(const struct xi *x) {
  for (unsigned k = 0; k < x->di.operand_count; k++) {
    const ZydisDecodedOperand *o = &x->op[k];
    if (o->type != ZYDIS_OPERAND_TYPE_REGISTER)
      continue;
    ZydisRegisterClass c = ZydisRegisterGetClass(o->reg.value);
    if (c == ZYDIS_REGCLASS_XMM || c == ZYDIS_REGCLASS_YMM ||
        c == ZYDIS_REGCLASS_ZMM)
      return true;
  }
  return false;
}

/*
 * syscall and sysretq between 64-bit user code and a 64-bit kernel are
 * translated inline (emit_syscall, emit_sysret): in fragments that count
 * nothing, step nothing and check no alignment, while nothing debugs the
 * vCPU, with EFER.SCE set. They hold STAR, LSTAR and FMASK as constants;
 * the dispatcher drops every translation when those change (sys_stale in
 * engine.c), so all of a vCPU's inline ones hold the same values.
 */
static bool sys_inline(const struct tx *t, const struct xi *x) {
  const struct bt_vcpu *b = t->b;
  uint32_t k = b->key;
  bool ret = x->di.mnemonic == ZYDIS_MNEMONIC_SYSRET;
  if (x->di.mnemonic != ZYDIS_MNEMONIC_SYSCALL && !ret)
    return false;
  if ((k & BT_K_CODE_MASK) != BT_K_CODE64 || !(k & BT_K_LMA) ||
      (k & (BT_K_COUNT | BT_K_SINGLE | BT_K_AC)) || b->dbg_on ||
      !(b->efer & X86_EFER_SCE))
    return false;
  if ((k & BT_K_CPL_MASK) != (ret ? 0 : BT_K_CPL_MASK))
    return false;
  if (ret && x->di.operand_width != 64)
    return false;
  return !b->sys_inline || (b->star == b->sys_star &&
                            b->lstar == b->sys_lstar &&
                            b->sfmask == b->sys_sfmask);
}

static enum xclass classify(struct tx *t, struct xi *x) {
  const ZydisDecodedInstruction *di = &x->di;
  struct bt_vcpu *b = t->b;
  if (di->encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY &&
      !(di->encoding == ZYDIS_INSTRUCTION_ENCODING_VEX &&
        (di->meta.isa_ext == ZYDIS_ISA_EXT_BMI1 ||
         di->meta.isa_ext == ZYDIS_ISA_EXT_BMI2)))
    return X_UD;
  /* x87/SSE availability (CR0.EM/TS, CR4.OSFXSR). */
  bool x87 = di->meta.isa_ext == ZYDIS_ISA_EXT_X87 ||
             di->mnemonic == ZYDIS_MNEMONIC_FWAIT;
  bool simd = di->meta.isa_ext == ZYDIS_ISA_EXT_MMX ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_SSE ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_SSE2 ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_SSE3 ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_SSSE3 ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_SSE4 ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_AES ||
              di->meta.isa_ext == ZYDIS_ISA_EXT_PCLMULQDQ;
  bool mmx = di->meta.isa_ext == ZYDIS_ISA_EXT_MMX;
  if (di->mnemonic == ZYDIS_MNEMONIC_FWAIT) {
    if ((b->key & BT_K_TS) && (b->key & BT_K_MP))
      return X_NM;
    return X_NOP;
  }
  if (x87 || simd) {
    bool sse = simd && !mmx && !fxsr_exempt(di->mnemonic);
    if (b->key & BT_K_EM)
      return sse ? X_UD : X_NM;
    if (b->key & BT_K_TS)
      return X_NM;
    if (sse && !(b->key & BT_K_OSFXSR))
      return X_UD;
  }
  if (sys_inline(t, x))
    return di->mnemonic == ZYDIS_MNEMONIC_SYSCALL ? X_SYSCALL : X_SYSRET;
  int s = special(x);
  if (s >= 0)
    return (enum xclass)s;
  /* Anything else outside the implemented extensions is #UD (C knows a
     few system instructions of other extensions, e.g. STAC/CLAC). */
  if (!isa_native(b->vm, di))
    return X_EMUL;
  ZydisMnemonic m = di->mnemonic;
  ZydisInstructionCategory cat = di->meta.category;
  bool flat = t->flat;

  switch (m) {
  case ZYDIS_MNEMONIC_JMP:
  case ZYDIS_MNEMONIC_CALL:
  case ZYDIS_MNEMONIC_RET: {
    if (di->meta.branch_type == ZYDIS_BRANCH_TYPE_FAR)
      return X_EMUL_END;
    bool rel = x->op[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE &&
               x->op[0].imm.is_relative;
    if (m == ZYDIS_MNEMONIC_JMP && rel)
      return X_JMP;
    if (!flat)
      return X_EMUL_END;
    /* Operand size must be the stack size for the inline forms. */
    if (m != ZYDIS_MNEMONIC_JMP && di->operand_width / 8 != t->sbytes)
      return X_EMUL_END;
    if (m == ZYDIS_MNEMONIC_JMP)
      return x->rsp ? X_EMUL_END : X_JMPI;
    if (m == ZYDIS_MNEMONIC_CALL)
      return rel ? X_CALL : (x->rsp ? X_EMUL_END : X_CALLI);
    return X_RET;
  }
  case ZYDIS_MNEMONIC_PUSH:
  case ZYDIS_MNEMONIC_POP: {
    const ZydisDecodedOperand *o = &x->op[0];
    if (!flat || o->type == ZYDIS_OPERAND_TYPE_MEMORY || x->rsp ||
        (o->type == ZYDIS_OPERAND_TYPE_REGISTER &&
         ZydisRegisterGetClass(o->reg.value) == ZYDIS_REGCLASS_SEGMENT))
      return X_EMUL;
    if (di->operand_width / 8 != t->sbytes && di->operand_width != 16)
      return X_EMUL;
    return m == ZYDIS_MNEMONIC_PUSH ? X_PUSH : X_POP;
  }
  case ZYDIS_MNEMONIC_LEAVE:
    return flat && di->operand_width / 8 == t->sbytes ? X_LEAVE : X_EMUL;
  case ZYDIS_MNEMONIC_LEA: return X_LEA;
  case ZYDIS_MNEMONIC_BT:
  case ZYDIS_MNEMONIC_BTS:
  case ZYDIS_MNEMONIC_BTR:
  case ZYDIS_MNEMONIC_BTC:
    /* A register bit offset reaches beyond the operand (see interp.c). */
    if (x->op[0].type == ZYDIS_OPERAND_TYPE_MEMORY &&
        x->op[1].type == ZYDIS_OPERAND_TYPE_REGISTER)
      return X_EMUL;
    break;
  default: break;
  }
  if (di->meta.category == ZYDIS_CATEGORY_COND_BR)
    return X_JCC;
  /* A CR8 write changes no mode; one that may unmask an interrupt leaves
     the fragment (callout_emul). */
  if (m == ZYDIS_MNEMONIC_MOV && x->op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
      x->op[0].reg.value == ZYDIS_REGISTER_CR8)
    return X_EMUL;
  if (names_sreg_or_sys(x))
    return (m == ZYDIS_MNEMONIC_MOV &&
            x->op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
            ZydisRegisterGetClass(x->op[0].reg.value) != ZYDIS_REGCLASS_GPR8 &&
            ZydisRegisterGetClass(x->op[0].reg.value) != ZYDIS_REGCLASS_GPR16 &&
            ZydisRegisterGetClass(x->op[0].reg.value) != ZYDIS_REGCLASS_GPR32 &&
            ZydisRegisterGetClass(x->op[0].reg.value) != ZYDIS_REGCLASS_GPR64)
               ? X_EMUL_END
               : X_EMUL;
  if (!cat_native(cat) || has_hidden_stack(x))
    return X_EMUL;
  return x->memop >= 0 ? X_MEM : X_IDENT;
}

/* ------------------------------------------------------------------------ */
/* Emission helpers                                                         */

#define SLOT(r) (BT_OFF_SPILL + 8 * (int32_t)(r))

/* Take register r for the glue (saving its guest value once). */
static void borrow(struct tx *t, unsigned r) {
  if (!(t->borrowed & (1u << r))) {
    e_mov_ctx_r(&t->e, SLOT(r), r);
    t->borrowed |= (uint16_t)(1u << r);
    t->ever |= (uint16_t)(1u << r);
  }
}

/* Put the guest values of the borrowed registers in mask back. */
static void give_back(struct tx *t, uint32_t mask) {
  mask &= t->borrowed;
  for (unsigned r = 0; r < 16; r++)
    if (mask & (1u << r))
      e_mov_r_ctx(&t->e, r, SLOT(r));
  t->borrowed &= (uint16_t)~mask;
}

/* Emit the restores of every borrowed register without forgetting them
   (for one of several paths leaving from the same point). */
static void restore_all(struct tx *t) {
  for (unsigned r = 0; r < 16; r++)
    if (t->borrowed & (1u << r))
      e_mov_r_ctx(&t->e, r, SLOT(r));
}

static int32_t seg_off(int s) {
  return BT_OFF_SEGBASE + 8 * s;
}

static int sreg_of(ZydisRegister r) {
  switch (r) {
  case ZYDIS_REGISTER_ES: return S_ES;
  case ZYDIS_REGISTER_CS: return S_CS;
  case ZYDIS_REGISTER_SS: return S_SS;
  case ZYDIS_REGISTER_DS: return S_DS;
  case ZYDIS_REGISTER_FS: return S_FS;
  case ZYDIS_REGISTER_GS: return S_GS;
  default: return S_DS;
  }
}

static struct bt_desc *new_desc(struct tx *t, unsigned i, enum bt_desc_kind k,
                                uint32_t *index) {
  struct bt_desc *d = bt_desc_alloc(t->b, index);
  if (d == NULL) {
    t->e.fail = true;
    return &t->dummy; /* discarded: the translation fails and is retried */
  }
  struct xi *x = &t->x[i];
  d->kind = (uint8_t)k;
  d->len = x->di.length;
  d->idx = (uint8_t)i;
  d->n = (uint8_t)t->n;
  d->rip = x->rip;
  memcpy(d->bytes, x->bytes, x->di.length);
  d->frag = t->f;
  d->park = 0xff;
  return d;
}

static void add_dfix(struct tx *t, struct bt_desc *d, int retry, int after,
                     int bounce) {
  if (t->ndfix == VMM__ARRAY_SIZE(t->dfix)) {
    t->e.fail = true;
    return;
  }
  t->dfix[t->ndfix].d = d;
  t->dfix[t->ndfix].retry = retry;
  t->dfix[t->ndfix].after = after;
  t->dfix[t->ndfix].bounce = bounce;
  t->ndfix++;
}

static void callout(struct tx *t, uint32_t index) {
  e_mov_ctx_i32(&t->e, BT_OFF_ARG, index);
  e_call_ctx(&t->e, BT_OFF_GATE);
}

/* Emit the instruction with its memory operand as [s1 + sx] (sx: -1 for
   none) and RSP operands as the scratch register srsp (loaded from and
   stored to the context). */
static void emit_core(struct tx *t, struct xi *x, int s1, int sx, int srsp) {
  struct emit *e = &t->e;
  ZydisEncoderRequest r;
  if (ZYAN_FAILED(ZydisEncoderDecodedInstructionToEncoderRequest(
          &x->di, x->op, x->di.operand_count_visible, &r))) {
    e->fail = true;
    return;
  }
  r.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_NONE;
  r.prefixes &= ~(ZydisInstructionAttributes)(ZYDIS_ATTRIB_HAS_SEGMENT_CS |
                                              ZYDIS_ATTRIB_HAS_SEGMENT_SS |
                                              ZYDIS_ATTRIB_HAS_SEGMENT_DS |
                                              ZYDIS_ATTRIB_HAS_SEGMENT_ES |
                                              ZYDIS_ATTRIB_HAS_SEGMENT_FS |
                                              ZYDIS_ATTRIB_HAS_SEGMENT_GS |
                                              ZYDIS_ATTRIB_HAS_BND |
                                              ZYDIS_ATTRIB_HAS_NOTRACK);
  bool rsp_read = false, rsp_write = false;
  for (unsigned i = 0; i < r.operand_count; i++) {
    ZydisEncoderOperand *o = &r.operands[i];
    if (o->type == ZYDIS_OPERAND_TYPE_MEMORY && s1 >= 0) {
      o->mem.base = zr64((unsigned)s1);
      o->mem.index = sx >= 0 ? zr64((unsigned)sx) : ZYDIS_REGISTER_NONE;
      o->mem.scale = sx >= 0 ? 1 : 0;
      o->mem.displacement = sx >= 0 ? -(int64_t)t->abias : 0;
    } else if (o->type == ZYDIS_OPERAND_TYPE_REGISTER) {
      bool h;
      if (gpr_of(o->reg.value, &h) == R_SP && !h) {
        o->reg.value = same_width(o->reg.value, (unsigned)srsp);
        rsp_read = true;
        if (x->op[i].actions &
            (ZYDIS_OPERAND_ACTION_WRITE | ZYDIS_OPERAND_ACTION_CONDWRITE))
          rsp_write = true;
      }
    }
  }
  if (rsp_read) {
    borrow(t, (unsigned)srsp);
    e_mov_r_ctx(e, (unsigned)srsp, BT_OFF_GPR + 8 * R_SP);
  }
  e_req(e, &r);
  if (rsp_read && rsp_write)
    e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)srsp);
}

/* Effective address of operand o into register dst (flat modes): base and
   index from the bound registers (RSP from the context), RIP-relative as a
   constant, FS/GS base added from the context. tmp may be clobbered. */
static void emit_ea(struct tx *t, struct xi *x, const ZydisDecodedOperand *o,
                    unsigned dst, unsigned tmp) {
  struct emit *e = &t->e;
  unsigned abits = x->di.address_width;
  int64_t disp = o->mem.disp.has_displacement ? o->mem.disp.value : 0;
  bool h;
  int base = gpr_of(o->mem.base, &h);
  int index = gpr_of(o->mem.index, &h);
  unsigned scale = o->mem.scale ? o->mem.scale : 1;
  if (o->mem.base == ZYDIS_REGISTER_RIP || o->mem.base == ZYDIS_REGISTER_EIP) {
    uint64_t a = x->next + (uint64_t)disp;
    if (abits == 32)
      a = (uint32_t)a;
    if (index >= 0)
      e_lea(e, abits == 32 ? 32 : 64, dst, index, -1, 1, (int64_t)a);
    else
      e_mov_r_i(e, dst, a);
  } else {
    if (base == R_SP) {
      e_mov_r_ctx(e, dst, BT_OFF_GPR + 8 * R_SP);
      base = (int)dst;
    }
    e_lea(e, abits == 32 ? 32 : 64, dst, base, index, scale, disp);
    /* 16-bit addressing (a 67 prefix in 32-bit code) wraps at 64 KiB. */
    if (abits == 16)
      e_movzx16(e, dst, dst);
  }
  int s = sreg_of(o->mem.segment);
  if (s == S_FS || s == S_GS) {
    e_mov_r_ctx(e, tmp, seg_off(s));
    e_lea(e, t->code64 ? 64 : 32, dst, (int)dst, (int)tmp, 1, 0);
  }
}

/* rcx for a lookup (jrcxz needs it). When neither this instruction nor a
   later one of the TU names rcx, it is borrowed like any scratch register
   (returns -1); otherwise its guest value waits in a picked register
   during each lookup (a register move, where a slot would put a
   store-to-load delay into loops counting in rcx). */
static int rcx_mode(struct tx *t, uint32_t *avoid) {
  if ((t->borrowed & (1u << R_CX)) || !(t->later & (1u << R_CX))) {
    borrow(t, R_CX);
    return -1;
  }
  int park = pick(avoid, false, t->borrowed, t->later);
  if (park >= 0)
    borrow(t, (unsigned)park);
  return park < 0 ? -2 : park;
}

static bool fast_pext(const struct tx *t) {
  return t->b->tlb_size == BT_TLB_SIZE;
}

/* Whether the next lookup's hit falls through, its miss branching away with
   `loop` (rcx - 1 is zero on a hit): where loop is one fast instruction
   (AMD), taken branches being what limits code this dense in branches
   (a taken jrcxz per lookup cost a cycle more than a fall-through in a
   microbenchmark on Zen 4). loop only reaches 127 bytes, so its target is
   a trampoline right after the body, or a miss block after the TU's last
   jump; an emission that leaves one out of range is done again with that
   lookup in the jrcxz form (translate_once). Numbers the lookup. */
static bool near_lookup(struct tx *t) {
  unsigned ord = t->nlook++;
  return t->b->vm->fast_loop && ord < 64 && !((t->far >> ord) & 1);
}

/* `loop` for the lookup near_lookup just numbered: to target itself, or
   with tramp to a trampoline jumping there. */
static void near_branch(struct tx *t, int target, bool tramp) {
  struct emit *e = &t->e;
  if (t->nnb == sizeof(t->nb) / sizeof(t->nb[0])) {
    e->fail = true;
    return;
  }
  int l = tramp ? e_label(e) : target;
  t->nb[t->nnb++] = (struct near_br){.pos = (uint32_t)e->pos + 1,
                                        .label = l,
                                        .target = tramp ? target : -1,
                                        .ord = t->nlook - 1};
  e_loop(e, l);
}

/* The trampolines of near_branch, after the body. */
static void near_trampolines(struct tx *t) {
  for (unsigned k = 0; k < t->nnb; k++)
    if (t->nb[k].target >= 0) {
      e_bind(&t->e, t->nb[k].label);
      e_jmp(&t->e, t->nb[k].target);
    }
}

/* Whether every `loop` of the emission reaches its target; marks the ones
   that do not as far. */
static bool near_fits(struct tx *t) {
  bool ok = true;
  for (unsigned k = 0; k < t->nnb; k++) {
    int64_t rel = (int64_t)t->e.labels[t->nb[k].label] -
                  ((int64_t)t->nb[k].pos + 1);
    if (rel < -128 || rel > 127) {
      t->far |= 1ull << t->nb[k].ord;
      ok = false;
    }
  }
  return ok;
}

/* The context offsets of the TLB's tags (read or write) and addends for
   this fragment's privilege. */
static int32_t tlb_tags(const struct tx *t, bool write) {
  return (write ? BT_OFF_TLB_W : BT_OFF_TLB_R) +
         (int32_t)(t->b->tlb_set * 8 * BT_TLB_SIZE);
}

static int32_t tlb_adds(const struct tx *t) {
  return BT_OFF_TLB_ADD + (int32_t)(t->b->tlb_set * 8 * BT_TLB_SIZE);
}

/* dst = the TLB index of the linear address in a (flag-free): pext, or
   on hosts whose pext is microcoded rorx and movzx (a 256-entry TLB). */
static void emit_tlb_index(struct tx *t, unsigned dst, unsigned a) {
  if (fast_pext(t)) {
    e_pext_ctx(&t->e, dst, a, BT_OFF_TLB_MASK);
  } else {
    e_rorx(&t->e, dst, a, 12);
    e_movzx8(&t->e, dst, dst);
  }
}

/* Lookup slots come in classes by access size (1, 2, 4, 8, 16 bytes,
   other), each with its own slots, whose addends carry the class's bias:
   12 - log2(size) for the powers of two (the shift that tests the first
   byte's alignment, emit_lookup_with), 12 for the rest. A slot is never
   read with another class's bias. */
static unsigned slot_class(unsigned size) {
  switch (size) {
  case 1: return 0;
  case 2: return 1;
  case 4: return 2;
  case 8: return 3;
  case 16: return 4;
  default: return BT_SLOT_CLASSES - 1;
  }
}

static unsigned slot_bias(unsigned cls) {
  return cls < BT_SLOT_CLASSES - 1 ? BT_TLB_BIAS - cls : BT_TLB_BIAS;
}

/* The lookup of the linear address in register a. On a hit the host
   address is [a + tt - t->abias] (tt holds an addend; returns tt) and rcx
   is back if it was parked (t->park); a keeps the guest address. A miss
   goes to `miss` with a holding the linear address and rcx's guest value
   in t->park, or in its slot when borrowed.
   Without an alignment check, through the site's lookup slot (a copy of
   the TLB entry it hit last; a miss there goes to its fill, emit_slot_fill,
   and only from there to `miss`). Flag-free: rcx = last byte - tag, then
   first byte - tag, is a hit when both are below 4096; `shrx` by the
   addend's low bits (12) leaves zero then, and jrcxz tests it. Where
   near_lookup allows, they are offset by a page: a hit leaves 1, and
   `loop` falls through. With chk >= 0, the flags form (only where the
   guest's flags are dead and no fault can see them, or are made again
   after it: see plan_tu), rcx neither parked nor borrowed: `add a, tag`,
   `cmp` with 4096 - size, `ja`, `add a, host`, so a holds the host
   address on a hit (returns -1; tt and chk are the fill's scratch
   registers). With an alignment check, through the TLB, whose hit test
   (pext, or rotate and shift) covers the low address bits too; the flags
   form tests with `test` there. */
static int emit_lookup_with(struct tx *t, unsigned a, unsigned tt,
                            unsigned size, bool write, bool align16,
                            int miss, int chk) {
  struct emit *e = &t->e;
  unsigned rc = chk >= 0 ? (unsigned)chk : R_CX;
  if (t->park >= 0)
    e_mov_r_r(e, (unsigned)t->park, R_CX, 64);
  unsigned set = t->b->tlb_set;
  if (size == 0)
    size = 1;
  /* An aligned access never crosses a page: the lookup then checks the
     first byte's page and the low bits. */
  unsigned align = align16 ? 4 : 0;
  if ((t->b->key & BT_K_AC) && (size == 2 || size == 4 || size == 8))
    align = size == 2 ? 1 : size == 4 ? 2 : 3;
  if ((t->b->key & BT_K_AC) && size == 16 && t->b->vm->ac16)
    align = 4;
  if (!align) {
    /* The site's own slot: a copy of the TLB entry it hit last. */
    if (t->nsf == sizeof(t->sf) / sizeof(t->sf[0])) {
      e->fail = true;
      return (int)tt;
    }
    unsigned cls = slot_class(size), bias = slot_bias(cls);
    unsigned n = (t->b->slot_next + t->nslot++) % BT_SLOTS;
    int32_t off =
        BT_OFF_SLOT +
        (int32_t)((((set * 2 + (write ? 1u : 0u)) * BT_SLOT_CLASSES + cls) *
                       BT_SLOTS +
                   n) *
                  sizeof(struct bt_slot));
    bool near = chk < 0 && near_lookup(t);
    int fill = e_label(e), hit = e_label(e);
    t->sf[t->nsf++] = (struct slot_fill){.a = a,
                                         .tt = tt,
                                         .rc = rc,
                                         .size = size,
                                         .bias = bias,
                                         .write = write,
                                         .flags = chk >= 0,
                                         .label = fill,
                                         .hit = hit,
                                         .miss = miss,
                                         .off = off};
    if (chk >= 0) {
      /* In a alone: the first byte's offset in the slot's page, at most
         4096 - size (the whole access is in the page), then the host
         address. The fill comes back to the add (emit_slot_fill). */
      e_bind(e, hit);
      e_op_r_mem(e, 0x03 /* add */, true, a, R_SP, off);
      e_cmp_r_i32(e, a, 4096 - (int32_t)size);
      e_jcc(e, 7 /* a */, fill);
      e_op_r_mem(e, 0x03 /* add */, true, a, R_SP, off + 16);
      return -1;
    }
    e_mov_r_ctx(e, tt, off + 8);
    e_mov_r_ctx(e, rc, off);
    if (cls < BT_SLOT_CLASSES - 1) {
      /* A power-of-two size: the first byte's offset F in the page and
         aligned to the size, so the access cannot leave the page. rorx
         puts F >> 12 in bits 51..0 and F's low 12 bits above them; shlx
         by the addend's low bits (12 - log2 size) drops the offset's
         bits above the alignment: zero on a hit. A slot, unlike a TLB
         entry, is not chosen by the first byte's page, so the first
         byte must be tested (slot_below_ram64); an unaligned access
         misses here and goes through the fill, which decides exactly. */
      e_lea(e, 64, rc, (int)a, (int)rc, 1, 0);
      e_rorx(e, rc, rc, 12);
      e_shlx(e, rc, rc, tt);
      if (near) {
        e_lea(e, 64, rc, (int)rc, -1, 1, 1);
        near_branch(t, fill, true);
      } else {
        e_jrcxz(e, hit);
        e_jmp(e, fill);
      }
    } else {
      /* Other sizes: the last byte's offset, then the first one's, each
         below 4096 (shrx by 12). */
      for (unsigned k = 0; k < 2; k++) {
        if (k)
          e_mov_r_ctx(e, rc, off);
        e_lea(e, 64, rc, (int)a, (int)rc, 1,
              (k ? 0 : (int64_t)size - 1) + (near ? 4096 : 0));
        e_shrx(e, rc, rc, tt);
        if (near) {
          near_branch(t, fill, true);
        } else {
          int ok = e_label(e);
          e_jrcxz(e, ok);
          e_jmp(e, fill);
          e_bind(e, ok);
        }
      }
    }
    e_bind(e, hit);
    t->abias = bias;
    if (t->park >= 0)
      e_mov_r_r(e, R_CX, (unsigned)t->park, 64);
    return (int)tt;
  }
  t->abias = BT_TLB_BIAS;
  /* With an alignment check, through the TLB: pext keeps the page bits
     and the low bits the alignment needs (zero on a hit). */
  bool fast = fast_pext(t);
  emit_tlb_index(t, tt, a);
  e_mov_r_ctxidx(e, rc, tlb_tags(t, write), tt);
  e_lea(e, 64, rc, (int)a, (int)rc, 1, 0);
  if (fast) {
    e_pext_ctx(e, rc, rc, BT_OFF_HIT_MASK + 8 * (int32_t)align);
  } else {
    /* A microcoded pext (older AMD) costs more than the shift count in
       tt and the index computed again. */
    e_rorx(e, rc, rc, (uint8_t)align);
    e_mov_r32_i(e, tt, 12 - align);
    e_shrx(e, rc, rc, tt);
  }
  if (chk >= 0) {
    e_test_r_r(e, rc);
    e_jcc(e, 5 /* ne */, miss);
  } else {
    int hit = e_label(e);
    e_jrcxz(e, hit);
    e_jmp(e, miss);
    e_bind(e, hit);
  }
  if (!fast)
    emit_tlb_index(t, tt, a);
  e_mov_r_ctxidx(e, tt, tlb_adds(t), tt);
  if (t->park >= 0)
    e_mov_r_r(e, R_CX, (unsigned)t->park, 64);
  return (int)tt;
}

static void emit_lookup(struct tx *t, unsigned a, unsigned tt, unsigned size,
                        bool write, bool align16, int miss) {
  emit_lookup_with(t, a, tt, size, write, align16, miss, -1);
}

/* Out-of-line code emitted after the fragment body. */
struct ool {
  enum { OOL_MEM, OOL_EMUL, OOL_HOIST } kind;
  unsigned i;
  unsigned k; /* OOL_HOIST: the first instruction after the lookup */
  int s2;
  int label; /* where the inline code jumps on a miss */
  int after;
  int retry;
  int s1, srsp;
  uint16_t borrowed; /* at the jump to `label` */
  int park;          /* rcx's register there */
  bool rebuild;      /* OOL_MEM: the flags of instruction rbj, again first */
  unsigned rbj;      /* (P_IDX: the flags entry's px) */
};

/* ------------------------------------------------------------------------ */
/* Instruction translations                                                 */

static void emit_emul(struct tx *t, unsigned i, bool end) {
  give_back(t, 0xffff);
  uint32_t idx;
  struct bt_desc *d = new_desc(t, i, BT_D_EMUL, &idx);
  d->ends_tu = end;
  callout(t, idx);
  int after = e_label(&t->e);
  e_bind(&t->e, after);
  add_dfix(t, d, -1, after, -1);
}

static void emit_raise(struct tx *t, unsigned i, unsigned vec) {
  give_back(t, 0xffff);
  uint32_t idx;
  struct bt_desc *d = new_desc(t, i, BT_D_RAISE, &idx);
  d->arg = vec;
  d->ends_tu = true;
  callout(t, idx);
}

/* Whether the memory operand of x is looked up inline (flat segments, no
   80-bit operand under alignment checks, not retranslated as a callout). */
static bool mem_inline(const struct tx *t, const struct xi *x) {
  const ZydisDecodedOperand *o = &x->op[x->memop];
  int seg = sreg_of(o->mem.segment);
  bool fs_gs_32 = !t->code64 && (seg == S_FS || seg == S_GS);
  uint64_t pc = lin_of(t, x->rip);
  /* An 80-bit x87 operand needs 8-byte alignment under alignment checks
     but may cross a page: the callout checks it (rare enough). */
  bool ac10 = (t->b->key & BT_K_AC) && o->size == 80;
  return t->flat && !fs_gs_32 && !ac10 && !bt_adaptive(t->b, pc);
}

static uint32_t rebuild_regs(const struct xi *x);
static void rebuild_flags(struct tx *t, struct xi *x);

/* The instruction rebuild_of names. */
static struct xi *rebuild_src(struct tx *t, int rb) {
  return rb == P_IDX ? &t->px : &t->x[rb];
}
static bool writes_flags6(const struct xi *x);

/* Memory instruction: inline lookup in flat modes, callouts otherwise. */
static void emit_mem(struct tx *t, unsigned i, struct ool *oo, unsigned *noo) {
  struct emit *e = &t->e;
  struct xi *x = &t->x[i];
  const ZydisDecodedOperand *o = &x->op[x->memop];
  if (t->hoisted[i]) {
    /* The lookup ran before an earlier instruction (emit_hoist). */
    t->abias = t->hbias[i];
    emit_core(t, x, t->hs1[i], t->hs2[i], -1);
    e_bind(e, t->hafter[i]);
    return;
  }
  /* The flags form in place (plan_tu): the registers the flags are made
     again from hold their guest values. */
  int rb = mem_inline(t, x) ? t->rebuild_of[i] : -1;
  uint32_t keep = rb >= 0 ? rebuild_regs(rebuild_src(t, rb)) : 0;
  uint32_t avoid;
  int s1, s2, srsp;
  for (;;) {
    avoid = x->used | keep | (1u << R_SP) | (1u << R_CX);
    s1 = pick(&avoid, x->high8, t->borrowed, t->later);
    srsp = x->rsp ? pick(&avoid, x->high8, t->borrowed, t->later) : -1;
    /* [s1 + s2] replaces the operand: no REX next to AH..BH either. */
    s2 = pick(&avoid, x->high8, t->borrowed, t->later);
    if ((s1 >= 0 && s2 >= 0 && (!x->rsp || srsp >= 0)) || !keep)
      break;
    /* Next to AH..BH only six registers can be scratch: with those
       flags are made again from taken too, the rcx form instead. */
    rb = -1;
    keep = 0;
  }
  if (s1 < 0 || s2 < 0 || (x->rsp && srsp < 0)) {
    e->fail = true;
    return;
  }
  give_back(t, keep);
  if (mem_inline(t, x)) {
    int retry = e_label(e), after = e_label(e), miss = e_label(e);
    e_bind(e, retry);
    borrow(t, (unsigned)s1);
    borrow(t, (unsigned)s2);
    int chk = rb >= 0 ? pick(&avoid, false, t->borrowed, t->later) : -1;
    if (chk >= 0) {
      borrow(t, (unsigned)chk);
    } else if (rb >= 0) {
      /* The rcx form; the flag writer's registers may park rcx. */
      rb = -1;
      avoid &= ~(keep & ~x->used);
    }
    int park = rb >= 0 ? -1 : rcx_mode(t, &avoid);
    if (park == -2) {
      e->fail = true;
      return;
    }
    emit_ea(t, x, o, (unsigned)s1, (unsigned)s2);
    bool w = o->actions &
             (ZYDIS_OPERAND_ACTION_WRITE | ZYDIS_OPERAND_ACTION_CONDWRITE);
    t->park = park;
    int ix = emit_lookup_with(t, (unsigned)s1, (unsigned)s2, o->size / 8, w,
                              bt_needs_align16(&x->di, o), miss, chk);
    struct ool *q = &oo[(*noo)++];
    *q = (struct ool){.kind = OOL_MEM,
                      .i = i,
                      .label = miss,
                      .after = after,
                      .retry = retry,
                      .s1 = s1,
                      .srsp = srsp,
                      .borrowed = t->borrowed,
                      .park = park,
                      .rebuild = rb >= 0,
                      .rbj = rb >= 0 ? (unsigned)rb : 0};
    t->park = -1;
    if (rb >= 0 && !writes_flags6(x))
      rebuild_flags(t, rebuild_src(t, rb));
    emit_core(t, x, s1, ix, srsp);
    e_bind(e, after);
    return;
  }
  /* No inline lookup: C finds the host address (RAM or bounce). */
  uint32_t mi, pi;
  struct bt_desc *md = new_desc(t, i, BT_D_MEM, &mi);
  struct bt_desc *pd = new_desc(t, i, BT_D_MEMPOST, &pi);
  md->s1 = pd->s1 = (uint8_t)s1;
  int bounce = e_label(e), after = e_label(e);
  borrow(t, (unsigned)s1);
  md->spill = t->borrowed;
  callout(t, mi);
  e_bind(e, bounce);
  give_back(t, x->used);
  emit_core(t, x, s1, -1, srsp);
  pd->spill = t->borrowed;
  callout(t, pi);
  e_bind(e, after);
  add_dfix(t, md, -1, after, bounce);
  add_dfix(t, pd, -1, after, bounce);
}

static void emit_ool_hoist(struct tx *t, const struct ool *q);

static void emit_ool(struct tx *t, struct ool *q) {
  struct emit *e = &t->e;
  struct xi *x = &t->x[q->i];
  if (q->kind == OOL_HOIST) {
    emit_ool_hoist(t, q);
    return;
  }
  e_bind(e, q->label);
  /* The glue's register state where the inline code jumped here: C takes
     rcx from its park register and the borrowed ones from their slots.
     Afterwards every register holds its guest value, which the borrowed
     state allows (a borrowed register may hold anything). */
  t->borrowed = q->borrowed;
  t->park = -1;
  if (q->rebuild)
    rebuild_flags(t, rebuild_src(t, (int)q->rbj));
  if (q->kind == OOL_MEM) {
    uint32_t mi, pi;
    struct bt_desc *md = new_desc(t, q->i, BT_D_MEM, &mi);
    struct bt_desc *pd = new_desc(t, q->i, BT_D_MEMPOST, &pi);
    md->s1 = pd->s1 = (uint8_t)q->s1;
    md->spill = t->borrowed;
    md->park = (uint8_t)q->park;
    callout(t, mi);
    int bounce = e_label(e);
    e_bind(e, bounce);
    /* Registers the instruction names are its own from here on: MEMPOST
       must not put older values back into ones it wrote. */
    give_back(t, x->used);
    emit_core(t, x, q->s1, -1, q->srsp);
    pd->spill = t->borrowed;
    callout(t, pi);
    add_dfix(t, md, q->retry, q->after, bounce);
    add_dfix(t, pd, q->retry, q->after, bounce);
    return;
  }
  /* The whole instruction in C (stack and branch sequences that missed). */
  uint32_t ei;
  struct bt_desc *d = new_desc(t, q->i, BT_D_EMUL, &ei);
  d->spill = t->borrowed;
  d->park = (uint8_t)q->park;
  bool end = x->cls == X_RET || x->cls == X_JMPI || x->cls == X_CALLI ||
             x->cls == X_CALL;
  d->ends_tu = end;
  callout(t, ei);
  add_dfix(t, d, -1, q->after, -1);
}

/* mov between a register and [base + index - t->abias] (index: an addend
   the last lookup left, or -1 for [base]). */
static void mov_mem_reg(struct tx *t, bool store, unsigned base, int index,
                        unsigned reg, unsigned bytes) {
  ZydisEncoderRequest q;
  memset(&q, 0, sizeof(q));
  q.mnemonic = ZYDIS_MNEMONIC_MOV;
  q.operand_count = 2;
  ZydisEncoderOperand *m = &q.operands[store ? 0 : 1];
  ZydisEncoderOperand *r = &q.operands[store ? 1 : 0];
  m->type = ZYDIS_OPERAND_TYPE_MEMORY;
  m->mem.base = zr64(base);
  m->mem.index = index >= 0 ? zr64((unsigned)index) : ZYDIS_REGISTER_NONE;
  m->mem.scale = index >= 0 ? 1 : 0;
  m->mem.displacement = index >= 0 ? -(int64_t)t->abias : 0;
  m->mem.size = (ZyanU16)bytes;
  r->type = ZYDIS_OPERAND_TYPE_REGISTER;
  r->reg.value = bytes == 8   ? zr64(reg)
                 : bytes == 4 ? zr32(reg)
                              : zr16(reg);
  e_req(&t->e, &q);
}

static void mov_mem_imm(struct tx *t, unsigned base, int index,
                        unsigned bytes, uint64_t imm) {
  ZydisEncoderRequest q;
  memset(&q, 0, sizeof(q));
  q.mnemonic = ZYDIS_MNEMONIC_MOV;
  q.operand_count = 2;
  q.operands[0].type = ZYDIS_OPERAND_TYPE_MEMORY;
  q.operands[0].mem.base = zr64(base);
  q.operands[0].mem.index =
      index >= 0 ? zr64((unsigned)index) : ZYDIS_REGISTER_NONE;
  q.operands[0].mem.scale = index >= 0 ? 1 : 0;
  q.operands[0].mem.displacement = index >= 0 ? -(int64_t)t->abias : 0;
  q.operands[0].mem.size = (ZyanU16)bytes;
  q.operands[1].type = ZYDIS_OPERAND_TYPE_IMMEDIATE;
  /* Zydis takes immediates of narrower operands sign-extended. */
  q.operands[1].imm.s = bytes == 1   ? (int8_t)imm
                        : bytes == 2 ? (int16_t)imm
                        : bytes == 4 ? (int32_t)imm
                                     : (int64_t)imm;
  e_req(&t->e, &q);
}

/* Whether a constant stored with `bytes` bytes fits an immediate. */
static bool const_fits(unsigned bytes, uint64_t v) {
  return bytes != 8 || (int64_t)v == (int64_t)(int32_t)v;
}

/* Store a constant to [base + index - t->abias] (size bytes), through
   tmp if it does not fit an immediate. */
static void store_const(struct tx *t, unsigned base, int index, unsigned bytes,
                        uint64_t v, int tmp) {
  if (!const_fits(bytes, v)) {
    if (tmp < 0) {
      t->e.fail = true;
      return;
    }
    e_mov_r_i(&t->e, (unsigned)tmp, v);
    mov_mem_reg(t, true, base, index, (unsigned)tmp, 8);
  } else {
    mov_mem_imm(t, base, index, bytes,
                v & (bytes == 8 ? ~0ull : (1ull << (bytes * 8)) - 1));
  }
}

static void ool_emul(struct tx *t, unsigned i, int miss, int after, int park,
                     struct ool *oo, unsigned *noo) {
  struct ool *q = &oo[(*noo)++];
  *q = (struct ool){.kind = OOL_EMUL,
                    .i = i,
                    .label = miss,
                    .after = after,
                    .borrowed = t->borrowed,
                    .park = park};
}

/* A jump-cache miss: leave for the dispatcher with RIP = a. */
static void jc_miss(struct tx *t, unsigned a, int park) {
  struct emit *e = &t->e;
  e_mov_ctx_r(e, BT_OFF_RIP, a);
  if (park >= 0)
    e_mov_r_r(e, R_CX, (unsigned)park, 64);
  restore_all(t);
  e_jmp_ctx(e, BT_OFF_EXIT_JC);
}

/* Jump to the guest RIP in register a through the jump cache (flat
   modes) to a fragment of mode `key`, with rcx parked in t->park or
   borrowed. a and t1 are borrowed; every borrowed register gets its guest
   value back on both paths. */
static void emit_indirect(struct tx *t, unsigned a, unsigned t1,
                          uint32_t key) {
  struct emit *e = &t->e;
  int park = t->park;
  if (park >= 0)
    e_mov_r_r(e, (unsigned)park, R_CX, 64);
  if (fast_pext(t)) {
    e_pext_ctx(e, t1, a, BT_OFF_JC_MASK);
  } else {
    e_mov_r32_i(e, t1, 64 - BT_JC_BITS);
    e_shlx(e, t1, a, t1);
    e_rorx(e, t1, t1, 64 - BT_JC_BITS);
  }
  e_mov_r_ctxidx(e, R_CX, BT_OFF_JC_NPC, t1);
  bool near = near_lookup(t);
  e_lea(e, 64, R_CX, (int)a, R_CX, 1,
        (int64_t)bt_jc_disp(key) + (near ? 1 : 0));
  int miss = e_label(e);
  if (near) {
    near_branch(t, miss, false);
  } else {
    int hit = e_label(e);
    e_jrcxz(e, hit);
    jc_miss(t, a, park);
    e_bind(e, hit);
  }
  /* Into the warm entry when STD_KEPT is borrowed here (emit_body). */
  bool warm = t->warm && park < 0 && (t->borrowed & STD_KEPT) == STD_KEPT;
  e_mov_r_ctxidx(e, t1, warm ? BT_OFF_JC_WARM : BT_OFF_JC_HOST, t1);
  uint16_t keep = warm ? STD_KEPT : 0;
  /* The target stays in t1 when t1 stays borrowed; else in the context. */
  bool via_reg = (keep & (1u << t1)) != 0;
  if (!via_reg)
    e_mov_ctx_r(e, BT_OFF_JMP, t1);
  if (park >= 0)
    e_mov_r_r(e, R_CX, (unsigned)park, 64);
  for (unsigned r = 0; r < 16; r++)
    if ((t->borrowed & ~keep) & (1u << r))
      e_mov_r_ctx(e, r, SLOT(r));
  if (via_reg)
    e_jmp_r(e, t1);
  else
    e_jmp_ctx(e, BT_OFF_JMP);
  if (near) {
    e_bind(e, miss);
    jc_miss(t, a, park);
  }
  t->borrowed = 0;
  t->park = -1;
}

/* Stack operations and indirect branches (flat modes): the access through
   the soft TLB, then RSP in the context, updated after the access so that
   a fault leaves it unchanged. */
static void emit_stack(struct tx *t, unsigned i, struct ool *oo,
                       unsigned *noo) {
  struct emit *e = &t->e;
  struct xi *x = &t->x[i];
  unsigned sz = t->sbytes;
  uint32_t avoid = x->used | (1u << R_SP) | (1u << R_CX);
  /* An indirect branch to a 64-bit register other than rsp and rcx (which
     the lookups use) jumps through that register: s1 is not needed. */
  int direct = -1;
  if ((x->cls == X_CALLI || x->cls == X_JMPI) &&
      x->op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
      x->di.operand_width == 64) {
    bool h;
    int r = gpr_of(x->op[0].reg.value, &h);
    if (r >= 0 && r != R_SP && r != R_CX)
      direct = r;
  }
  int s1 = direct >= 0 ? direct : pick(&avoid, false, t->borrowed, t->later);
  int s2 = pick(&avoid, false, t->borrowed, t->later);
  /* A return address that does not fit an immediate goes through s3. */
  bool big = (x->cls == X_CALL || x->cls == X_CALLI) &&
             !const_fits(sz, x->next);
  int s3 = big ? pick(&avoid, false, t->borrowed, t->later) : -1;
  int s4 = x->cls == X_CALLI ? pick(&avoid, false, t->borrowed, t->later) : -1;
  if (s1 < 0 || s2 < 0 || (big && s3 < 0) || (x->cls == X_CALLI && s4 < 0)) {
    e->fail = true;
    return;
  }
  int miss = e_label(e), after = e_label(e);
  unsigned abits = t->code64 ? 64 : 32;
  if (direct < 0)
    borrow(t, (unsigned)s1);
  borrow(t, (unsigned)s2);
  if (s3 >= 0)
    borrow(t, (unsigned)s3);
  if (s4 >= 0)
    borrow(t, (unsigned)s4);
  int park = rcx_mode(t, &avoid);
  if (park == -2) {
    e->fail = true;
    return;
  }
  t->park = park;
  switch (x->cls) {
  case X_PUSH: {
    unsigned osz = x->di.operand_width / 8;
    /* s1 keeps the new RSP: no reload. */
    e_mov_r_ctx(e, (unsigned)s1, BT_OFF_GPR + 8 * R_SP);
    e_lea(e, abits, (unsigned)s1, s1, -1, 1, -(int64_t)osz);
    emit_lookup(t, (unsigned)s1, (unsigned)s2, osz, true, false, miss);
    give_back(t, x->used & ~(1u << R_SP));
    const ZydisDecodedOperand *o = &x->op[0];
    if (o->type == ZYDIS_OPERAND_TYPE_IMMEDIATE) {
      /* At most an imm32, sign-extended: always fits. */
      uint64_t v = o->imm.is_signed ? (uint64_t)o->imm.value.s : o->imm.value.u;
      store_const(t, (unsigned)s1, s2, osz, v, -1);
    } else {
      bool h;
      unsigned r = (unsigned)gpr_of(o->reg.value, &h);
      mov_mem_reg(t, true, (unsigned)s1, s2, r, osz);
    }
    e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)s1);
    break;
  }
  case X_POP: {
    unsigned osz = x->di.operand_width / 8;
    e_mov_r_ctx(e, (unsigned)s1, BT_OFF_GPR + 8 * R_SP);
    emit_lookup(t, (unsigned)s1, (unsigned)s2, osz, false, false, miss);
    give_back(t, x->used & ~(1u << R_SP));
    bool h;
    unsigned r = (unsigned)gpr_of(x->op[0].reg.value, &h);
    mov_mem_reg(t, false, (unsigned)s1, s2, r, osz);
    e_lea(e, abits, (unsigned)s1, s1, -1, 1, (int64_t)osz);
    e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)s1);
    break;
  }
  case X_LEAVE: {
    /* rsp = rbp; pop rbp: the load cannot fault once the lookup hit. */
    e_mov_r_r(e, (unsigned)s1, R_BP, abits);
    emit_lookup(t, (unsigned)s1, (unsigned)s2, sz, false, false, miss);
    give_back(t, x->used & ~(1u << R_SP));
    mov_mem_reg(t, false, (unsigned)s1, s2, R_BP, sz);
    e_lea(e, abits, (unsigned)s1, s1, -1, 1, (int64_t)sz);
    e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)s1);
    break;
  }
  case X_CALL: {
    e_mov_r_ctx(e, (unsigned)s1, BT_OFF_GPR + 8 * R_SP);
    e_lea(e, abits, (unsigned)s1, s1, -1, 1, -(int64_t)sz);
    emit_lookup(t, (unsigned)s1, (unsigned)s2, sz, true, false, miss);
    store_const(t, (unsigned)s1, s2, sz, x->next, s3);
    e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)s1);
    break;
  }
  case X_RET:
  case X_JMPI:
  case X_CALLI: {
    /* Target into s1. */
    const ZydisDecodedOperand *o = &x->op[0];
    unsigned osz = x->di.operand_width / 8;
    if (x->cls == X_RET) {
      e_mov_r_ctx(e, (unsigned)s1, BT_OFF_GPR + 8 * R_SP);
      emit_lookup(t, (unsigned)s1, (unsigned)s2, sz, false, false, miss);
      int64_t imm = x->di.operand_count_visible
                        ? (int64_t)(x->op[0].imm.value.u & 0xffff)
                        : 0;
      /* The target replaces the addend; the new RSP from the old one. */
      mov_mem_reg(t, false, (unsigned)s1, s2, (unsigned)s2, sz == 8 ? 8 : 4);
      e_lea(e, abits, (unsigned)s1, s1, -1, 1, (int64_t)sz + imm);
      e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)s1);
      ool_emul(t, i, miss, after, park, oo, noo);
      emit_indirect(t, (unsigned)s2, (unsigned)s1, t->b->key);
      e_bind(e, after); /* never reached: the EMUL callout leaves */
      return;
    }
    if (direct >= 0) {
      /* The target stays in its register. */
    } else if (o->type == ZYDIS_OPERAND_TYPE_REGISTER) {
      bool h;
      unsigned r = (unsigned)gpr_of(o->reg.value, &h);
      if (osz == 8)
        e_mov_r_r(e, (unsigned)s1, r, 64);
      else if (osz == 4)
        e_mov_r_r(e, (unsigned)s1, r, 32);
      else
        e_movzx16(e, (unsigned)s1, r);
    } else {
      emit_ea(t, x, o, (unsigned)s1, (unsigned)s2);
      emit_lookup(t, (unsigned)s1, (unsigned)s2, osz, false, false, miss);
      mov_mem_reg(t, false, (unsigned)s1, s2, (unsigned)s1, osz == 8 ? 8 : 4);
      if (osz == 2)
        e_movzx16(e, (unsigned)s1, (unsigned)s1);
    }
    if (x->cls == X_CALLI) {
      e_mov_r_ctx(e, (unsigned)s4, BT_OFF_GPR + 8 * R_SP);
      e_lea(e, abits, (unsigned)s4, s4, -1, 1, -(int64_t)sz);
      emit_lookup(t, (unsigned)s4, (unsigned)s2, sz, true, false, miss);
      store_const(t, (unsigned)s4, s2, sz, x->next, s3);
      e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, (unsigned)s4);
    }
    ool_emul(t, i, miss, after, park, oo, noo);
    emit_indirect(t, (unsigned)s1, (unsigned)s2, t->b->key);
    e_bind(e, after); /* never reached: the EMUL callout leaves */
    return;
  }
  default: break;
  }
  t->park = -1;
  e_bind(e, after);
  ool_emul(t, i, miss, after, park, oo, noo);
}

static void emit_lea(struct tx *t, unsigned i) {
  struct emit *e = &t->e;
  struct xi *x = &t->x[i];
  const ZydisDecodedOperand *o = &x->op[1];
  bool h;
  int dst = gpr_of(x->op[0].reg.value, &h);
  unsigned osz = x->op[0].size;
  bool base_rsp = gpr_of(o->mem.base, &h) == R_SP;
  bool rip =
      o->mem.base == ZYDIS_REGISTER_RIP || o->mem.base == ZYDIS_REGISTER_EIP;
  if (x->di.address_width != 16 && !base_rsp && !rip && dst != R_SP) {
    emit_core(t, x, -1, -1, -1);
    /* emit_core replaced the AGEN operand only if typed as memory; an
       AGEN lea goes through unchanged. */
    return;
  }
  /* Compute into a scratch, then move with the destination's size. */
  uint32_t avoid = x->used | (1u << R_SP) | (1u << R_CX);
  int s = pick(&avoid, false, t->borrowed, t->later);
  borrow(t, (unsigned)s);
  uint64_t disp =
      o->mem.disp.has_displacement ? (uint64_t)o->mem.disp.value : 0;
  int base = gpr_of(o->mem.base, &h), index = gpr_of(o->mem.index, &h);
  unsigned scale = o->mem.scale ? o->mem.scale : 1;
  if (rip) {
    e_mov_r_i(e, (unsigned)s, x->next + disp);
    if (index >= 0)
      e_lea(e, 64, (unsigned)s, s, index, scale, 0);
  } else {
    if (base == R_SP) {
      e_mov_r_ctx(e, (unsigned)s, BT_OFF_GPR + 8 * R_SP);
      base = s;
    }
    e_lea(e, x->di.address_width == 64 ? 64 : 32, (unsigned)s, base, index,
          scale, (int64_t)disp);
  }
  if (x->di.address_width == 16)
    e_movzx16(e, (unsigned)s, (unsigned)s);
  if (dst == R_SP) {
    /* lea rsp/esp/sp, [...]: the result is the new stack pointer. */
    unsigned s2 = (unsigned)pick(&avoid, false, t->borrowed, t->later);
    borrow(t, s2);
    e_mov_r_ctx(e, s2, BT_OFF_GPR + 8 * R_SP);
    e_mov_r_r(e, s2, (unsigned)s, osz == 64 ? 64 : osz == 32 ? 32 : 16);
    e_mov_ctx_r(e, BT_OFF_GPR + 8 * R_SP, s2);
  } else {
    e_mov_r_r(e, (unsigned)dst, (unsigned)s,
              osz == 64   ? 64
              : osz == 32 ? 32
                          : 16);
  }
}

static unsigned jcc_cc(ZydisMnemonic m) {
  switch (m) {
  case ZYDIS_MNEMONIC_JO: return 0x0;
  case ZYDIS_MNEMONIC_JNO: return 0x1;
  case ZYDIS_MNEMONIC_JB: return 0x2;
  case ZYDIS_MNEMONIC_JNB: return 0x3;
  case ZYDIS_MNEMONIC_JZ: return 0x4;
  case ZYDIS_MNEMONIC_JNZ: return 0x5;
  case ZYDIS_MNEMONIC_JBE: return 0x6;
  case ZYDIS_MNEMONIC_JNBE: return 0x7;
  case ZYDIS_MNEMONIC_JS: return 0x8;
  case ZYDIS_MNEMONIC_JNS: return 0x9;
  case ZYDIS_MNEMONIC_JP: return 0xa;
  case ZYDIS_MNEMONIC_JNP: return 0xb;
  case ZYDIS_MNEMONIC_JL: return 0xc;
  case ZYDIS_MNEMONIC_JNL: return 0xd;
  case ZYDIS_MNEMONIC_JLE: return 0xe;
  default: return 0xf; /* JNLE */
  }
}

static uint64_t branch_target(const struct tx *t, const struct xi *x) {
  uint64_t target = x->next + x->op[0].imm.value.u;
  unsigned ow = x->di.operand_width;
  if (!t->code64) {
    if (ow == 16)
      target &= 0xffff;
    else
      target &= 0xffffffff;
  }
  return target;
}

static void add_link(struct tx *t, uint32_t patch, uint64_t target) {
  if (t->nlk == VMM__ARRAY_SIZE(t->lk)) {
    t->e.fail = true;
    return;
  }
  t->lk[t->nlk].patch = patch;
  t->lk[t->nlk].stub = e_label(&t->e);
  t->lk[t->nlk].target = target;
  t->lk[t->nlk].restore = 0;
  t->lk[t->nlk].kset = 0;
  t->lk[t->nlk].head = -1;
  t->lk[t->nlk].warm = false;
  t->lk[t->nlk].flen = 0;
  t->lk[t->nlk].key = t->b->key;
  t->nlk++;
}

static bool in_region(const struct tx *t, uint64_t rip) {
  for (unsigned k = 0; k < t->rg_n; k++)
    if (t->rg_rip[k] == rip)
      return true;
  return false;
}

/* A direct exit leaving exactly `keep` borrowed: the other registers get
   their guest values back and the ones of `keep` not borrowed here are
   borrowed; the link's stub gives `keep` back before it leaves. Returns
   the link's index, or -1 (no room: the emission fails). */
static int keep_link(struct tx *t, bool jcc, unsigned cc, uint64_t target,
                     uint16_t keep) {
  give_back(t, (uint32_t)(0xffff & ~keep));
  for (unsigned r = 0; r < 16; r++)
    if (keep & (1u << r))
      borrow(t, r);
  uint32_t patch =
      jcc ? e_jcc_patchable(&t->e, cc) : e_jmp_patchable(&t->e);
  add_link(t, patch, target);
  if (t->nlk == 0 || t->lk[t->nlk - 1].patch != patch)
    return -1;
  t->lk[t->nlk - 1].restore = keep;
  return (int)t->nlk - 1;
}

/* A direct exit to an instruction of the TU's loop region leaves the
   region's set borrowed, for the target's kept entry (the target, being
   in the same region, keeps the same set; tc.c links only a fragment
   that does). */
static void region_link(struct tx *t, bool jcc, unsigned cc, uint64_t target) {
  int k = keep_link(t, jcc, cc, target, t->rkeep);
  if (k >= 0) {
    t->lk[k].kset = t->rkeep;
    t->lk[k].fbytes = t->xbytes;
    t->lk[k].flen = t->xplen;
  }
}

/* Registers go back before a direct exit: all of them (the target's cold
   entry), or all but STD_KEPT when they are borrowed here (its warm entry;
   the stub gives them back if the link is not patched). */
static void exit_link(struct tx *t, bool jcc, unsigned cc, uint64_t target) {
  if (t->rkeep && in_region(t, target)) {
    region_link(t, jcc, cc, target);
    return;
  }
  bool warm = t->warm && (t->borrowed & STD_KEPT) == STD_KEPT;
  give_back(t, warm ? (uint32_t)(0xffff & ~STD_KEPT) : 0xffff);
  uint32_t patch =
      jcc ? e_jcc_patchable(&t->e, cc) : e_jmp_patchable(&t->e);
  add_link(t, patch, target);
  if (warm && t->nlk > 0 && t->lk[t->nlk - 1].patch == patch) {
    t->lk[t->nlk - 1].restore = STD_KEPT;
    t->lk[t->nlk - 1].warm = true;
  }
}

/* The back edge of a self loop (a jcc or jmp to the TU's first
   instruction) leaves the registers kept around it (t->keep) borrowed,
   as at the loop head, where the link goes. */
static void self_link(struct tx *t, bool jcc, unsigned cc, uint64_t target) {
  int k = keep_link(t, jcc, cc, target, t->keep);
  if (k >= 0)
    t->lk[k].head = t->fm ? t->fent : t->head;
}

/* ------------------------------------------------------------------------ */
/* syscall and sysret (see sys_inline)                                      */

#define VOFF(f) ((int32_t)offsetof(struct bt_vcpu, f))
#define CC_NE 5u

/* Store the mode a syscall or sysret enters: privilege, key, TLB set and
   the flat CS and SS they load (as bt_update_mode would leave them: in
   64-bit code nothing else it derives changes). */
static void store_mode(struct tx *t, unsigned cpl, uint32_t key,
                       uint16_t cs_sel, uint16_t ss_sel) {
  struct emit *e = &t->e;
  struct vmm_segment s[2];
  memset(s, 0, sizeof(s));
  bt_flat_seg(&s[0], cs_sel, true, true, cpl);
  bt_flat_seg(&s[1], ss_sel, false, false, cpl);
  _Static_assert(sizeof(s[0]) % 4 == 0, "segments store as dwords");
  const int32_t off[2] = {VOFF(seg[S_CS]), VOFF(seg[S_SS])};
  for (unsigned k = 0; k < 2; k++)
    for (unsigned w = 0; w < sizeof(s[k]); w += 4) {
      uint32_t v;
      memcpy(&v, (const uint8_t *)&s[k] + w, 4);
      e_mov_ctx_i32(e, off[k] + (int32_t)w, v);
    }
  e_mov_ctx_i32(e, VOFF(cpl), cpl);
  e_mov_ctx_i32(e, VOFF(key), key);
  e_mov_ctx_i32(e, VOFF(tlb_set), cpl == 3);
}

static void sys_record(struct bt_vcpu *b) {
  b->sys_inline = true;
  b->sys_star = b->star;
  b->sys_lstar = b->lstar;
  b->sys_sfmask = b->sfmask;
}

/*
 * syscall: RCX = the next RIP, R11 = RFLAGS, RFLAGS &= ~FMASK, CPL 0 with
 * STAR's flat CS and SS, on to LSTAR through a link to the kernel mode's
 * fragment. Nothing can fault. The host flags word (the guest's arithmetic
 * flags and DF) is read with pushfq and left at [R - 8] (in the red zone,
 * which signal delivery skips) for popfq to load it back masked.
 */
static void emit_syscall(struct tx *t, unsigned i) {
  struct emit *e = &t->e;
  struct bt_vcpu *b = t->b;
  uint32_t mask = (uint32_t)b->sfmask;
  uint16_t sel = (uint16_t)(b->star >> 32);
  uint32_t k0 = b->key & ~BT_K_CPL_MASK;
  sys_record(b);
  give_back(t, 0xffff);
  e_pushfq(e);
  e_pop_r(e, R_11);
  e_op_r_i32(e, 0x81, 4, false, R_11, BT_HOST_FLAGS);
  e_op_r_mem(e, 0x0b, true, R_11, R_SP, VOFF(vflags));
  e_op_r_i32(e, 0x81, 1, false, R_11, X86_RFLAGS_FIXED);
  e_op_mem_i32(e, 0x81, 4, true, R_SP, VOFF(vflags), ~mask);
  e_op_mem_i32(e, 0x81, 4, true, R_SP, -8, ~(mask & BT_HOST_FLAGS));
  e_lea(e, 64, R_SP, R_SP, -1, 1, -8);
  e_popfq(e);
  e_mov_r_i(e, R_CX, t->x[i].next);
  store_mode(t, 0, k0, sel & ~3u, (uint16_t)((sel + 8) & ~3u));
  /* A plain link: the kernel's fragment is no part of a loop region of
     this TU's (it may share its RIPs) nor has warm registers to expect. */
  add_link(t, e_jmp_patchable(e), b->lstar);
  if (!e->fail)
    t->lk[t->nlk - 1].key = k0;
}

/*
 * sysretq: RIP = RCX, RFLAGS = R11 (less RF and VM), CPL 3 with STAR's
 * flat CS and SS, on through the jump cache to the user mode's fragment.
 * C does it instead (the callout after the body, with the flags and RAX
 * as they were) where it raises #GP (RCX not canonical), where the user
 * mode would be another (R11 sets TF or AC), and where setting IF would
 * open the window to a pending interrupt. The flags are free to clobber
 * on the fast path, which loads all of them from R11.
 */
static void emit_sysret(struct tx *t, unsigned i) {
  struct emit *e = &t->e;
  struct bt_vcpu *b = t->b;
  uint16_t sel = (uint16_t)(b->star >> 48);
  uint32_t k3 = b->key | BT_K_CPL_MASK;
  sys_record(b);
  give_back(t, 0xffff);
  int slow = e_label(e);
  e_pushfq(e);
  e_lea(e, 64, R_SP, R_SP, -1, 1, 8);
  borrow(t, R_AX);
  e_mov_r_ctx(e, R_AX, VOFF(vcpu));
  e_op_mem_i32(e, 0x81, 7, false, R_AX, (int32_t)offsetof(vmm_vcpu, pending_irq),
               0);
  e_jcc(e, CC_NE, slow);
  e_op_mem_i32(e, 0xf7, 0, false, R_AX, (int32_t)offsetof(vmm_vcpu, irq_bits),
               VMM__IRQ_LAPIC | VMM__IRQ_EXTINT);
  e_jcc(e, CC_NE, slow);
  e_op_r_i32(e, 0xf7, 0, false, R_11, X86_RFLAGS_TF | X86_RFLAGS_AC);
  e_jcc(e, CC_NE, slow);
  e_mov_r_r(e, R_AX, R_CX, 64);
  e_shift_i(e, 4, R_AX, 16);
  e_shift_i(e, 7, R_AX, 16);
  e_op_r_r(e, 0x39, true, R_CX, R_AX);
  e_jcc(e, CC_NE, slow);
  /* Committed: the virtual flags, then the host's into the saved word. */
  const uint32_t kept = 0x3c7fd7; /* RFLAGS bits sysret takes from R11 */
  e_mov_r_r(e, R_AX, R_11, 32);
  e_op_r_i32(e, 0x81, 4, false, R_AX,
             kept & ~(uint32_t)(BT_HOST_FLAGS | X86_RFLAGS_FIXED));
  e_mov_ctx_r(e, VOFF(vflags), R_AX);
  e_mov_r_r(e, R_AX, R_11, 32);
  e_op_r_i32(e, 0x81, 4, false, R_AX, BT_HOST_FLAGS);
  e_op_mem_i32(e, 0x81, 4, true, R_SP, -8, ~(uint32_t)BT_HOST_FLAGS);
  e_op_r_mem(e, 0x09, true, R_AX, R_SP, -8);
  store_mode(t, 3, k3, (uint16_t)((sel + 16) | 3), (uint16_t)((sel + 8) | 3));
  e_lea(e, 64, R_SP, R_SP, -1, 1, -8);
  e_popfq(e);
  e_mov_r_r(e, R_AX, R_CX, 64);
  borrow(t, R_DX);
  borrow(t, R_CX);
  t->park = -1;
  emit_indirect(t, R_AX, R_DX, k3);
  /* The slow path: RAX and the flags word back, the instruction in C. */
  e_bind(e, slow);
  e_mov_r_ctx(e, R_AX, SLOT(R_AX));
  e_lea(e, 64, R_SP, R_SP, -1, 1, -8);
  e_popfq(e);
  t->borrowed = 0;
  emit_emul(t, i, true);
}

/* ------------------------------------------------------------------------ */
/* Decoding a TU                                                            */

static bool ends_tu(enum xclass c) {
  return c == X_JMP || c == X_JCC || c == X_JMPI || c == X_CALL ||
         c == X_CALLI || c == X_RET || c == X_EMUL_END || c == X_SYSCALL ||
         c == X_SYSRET || c == X_UD || c == X_NM;
}

/* The RIP after an instruction of len bytes at rip (wrapping as IP or EIP
   do outside 64-bit code). */
static uint64_t insn_next(const struct tx *t, uint64_t rip, unsigned len) {
  uint64_t next = rip + len;
  if (t->code64)
    return next;
  return (t->b->key & BT_K_CODE_MASK) == BT_K_CODE16 ? next & 0xffff
                                                      : (uint32_t)next;
}

/*
 * Fetch and decode the instruction at rip. Faults are raised only for the
 * TU's first instruction; later ones just end the TU (return 1).
 * Returns 0, 1 (stop before it), or BT_FAULT/BT_EXIT for the first.
 */
static int fetch_insn(struct tx *t, unsigned i, uint64_t rip) {
  struct bt_vcpu *b = t->b;
  struct xi *x = &t->x[i];
  uint64_t pc = lin_of(t, rip);
  /* CS limit (protected and real mode, not 64-bit). */
  uint64_t limit_room = 15;
  if (!t->code64) {
    const struct vmm_segment *cs = &b->seg[S_CS];
    if (rip > cs->limit) {
      if (i > 0)
        return 1;
      return bt_raise(b, X86_EXC_GP, true, 0);
    }
    if (cs->limit - rip + 1 < limit_room)
      limit_room = cs->limit - rip + 1;
  }
  unsigned first = 4096 - (unsigned)(pc & 0xfff);
  if (first > limit_room)
    first = (unsigned)limit_room;
  uint64_t save_rip = b->ctx.rip;
  b->ctx.rip = rip;
  if (i > 0) {
    /* Do not raise for instructions after the first. */
    struct vmm__paging pg;
    bt_paging(b, &pg);
    struct vmm_translation tr;
    unsigned acc = VMM_ACCESS_EXEC | VMM_ACCESS_SET_AD |
                   (b->cpl == 3 ? VMM_ACCESS_USER : 0);
    if (vmm__mmu_walk(&b->vcpu->vm->mem, &pg, pc, acc, &tr) < 0) {
      b->ctx.rip = save_rip;
      return 1;
    }
  }
  unsigned got;
  uint64_t p0 = 0, p1 = ~0ull;
  int err = bt_fetch(b, pc, x->bytes, first, &p0, NULL, &got);
  if (err < 0 || got == 0) {
    /* A fault raised for the first instruction was delivered: RIP is the
       handler's now. */
    if (err != BT_FAULT || i > 0)
      b->ctx.rip = save_rip;
    if (i > 0)
      return 1;
    if (err == BT_EXIT || (err == 0 && got == 0)) {
      bt_internal_error(b, VMM_INTERNAL_EMULATION,
                        "executing outside RAM at 0x%llx",
                        (unsigned long long)pc);
      return BT_EXIT;
    }
    return err;
  }
  x->gpa = p0;
  x->page2 = false;
  ZydisDecoder dec;
  ZydisDecoderInit(&dec, b->zmode, b->zstack);
  ZyanStatus st = ZydisDecoderDecodeFull(&dec, x->bytes, got, &x->di, x->op);
  if (ZYAN_FAILED(st) && st == ZYDIS_STATUS_NO_MORE_DATA && got < limit_room &&
      got == first) {
    /* Continues on the next page. */
    uint64_t pc2 = pc + got;
    if (!t->code64)
      pc2 = (uint32_t)pc2;
    unsigned more = (unsigned)(limit_room - got);
    if (more > 15 - got)
      more = 15 - got;
    unsigned got2;
    uint64_t q0;
    if (i > 0) {
      struct vmm__paging pg;
      bt_paging(b, &pg);
      struct vmm_translation tr;
      unsigned acc = VMM_ACCESS_EXEC | VMM_ACCESS_SET_AD |
                     (b->cpl == 3 ? VMM_ACCESS_USER : 0);
      if (vmm__mmu_walk(&b->vcpu->vm->mem, &pg, pc2, acc, &tr) < 0) {
        b->ctx.rip = save_rip;
        return 1;
      }
    }
    err = bt_fetch(b, pc2, x->bytes + got, more, &q0, NULL, &got2);
    if (err < 0 || got2 == 0) {
      if (err != BT_FAULT || i > 0)
        b->ctx.rip = save_rip;
      if (i > 0)
        return 1;
      if (err == 0 || err == BT_EXIT) {
        bt_internal_error(b, VMM_INTERNAL_EMULATION,
                          "executing outside RAM at 0x%llx",
                          (unsigned long long)pc2);
        return BT_EXIT;
      }
      return err;
    }
    got += got2;
    p1 = q0;
    x->page2 = true;
    x->gpa2 = q0;
    st = ZydisDecoderDecodeFull(&dec, x->bytes, got, &x->di, x->op);
  }
  VMM__UNUSED(p1);
  b->ctx.rip = save_rip;
  if (ZYAN_FAILED(st)) {
    /* Not an instruction (or longer than the limit allows). */
    memset(&x->di, 0, sizeof(x->di));
    x->di.length = 1;
    x->di.mnemonic = ZYDIS_MNEMONIC_INVALID;
    x->cls = X_UD;
    if (!t->code64 && st == ZYDIS_STATUS_NO_MORE_DATA && got == limit_room)
      x->cls = X_UD; /* #GP for crossing the CS limit is not distinguished */
  }
  x->rip = rip;
  x->next = insn_next(t, rip, x->di.length);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Loop regions                                                             */

/* A loop whose body spans several TUs runs as several fragments, and each
   of them that looks memory up would borrow its scratch registers at its
   entry and give them back at its exit: three stores and three loads per
   fragment and iteration. The fragments of one loop therefore agree on a
   set of registers that no instruction of the loop names and keep them
   borrowed across the links between them (docs/bt.md, "Loop regions").

   The region of a TU starting at S is found by decoding on from S: the
   first backward jcc or jmp, B, whose target T is at or before S closes
   it, and the instructions from T up to B are the region, provided they
   are all in S's page, at most REGION_MAX, decoded linearly from T with
   S on an instruction boundary, and every other control transfer among
   them is a forward jcc. Then every TU starting at an instruction of the
   region finds the same T and B, so the same set: the choice is a pure
   function of the code bytes. Nothing depends on it for correctness (the
   borrowing is tracked per TU, and tc.c links two fragments this way
   only when their sets match), so bytes that change later cost only the
   links. The look-ahead decodes only within S's page, from the host's
   copy of it that the TU's first instruction was fetched from. */

/* Whether an instruction at rip may be part of a region in the 4 KiB
   page `page` (a linear page number): it starts at least 15 bytes before
   the page's end, so decoding it reads nothing beyond the page. The same
   test for the TU's own instructions and the look-ahead's, so that every
   TU of a region finds it. Not where CS base + RIP passes 4 GiB (32-bit
   code whose CS base is not page aligned): the linear address wraps
   there, so a page can hold RIPs 0xfffff800.. and 0.., which find_region,
   comparing RIPs, would order unlike the code; the TUs on either side of
   the wrap then found different regions (test_region_rip_wrap). */
static bool region_page(const struct tx *t, uint64_t rip, uint64_t page) {
  uint64_t pc = t->b->ctx.segbase[S_CS] + rip;
  if (!t->code64 && (pc >> 32 || rip + 14 > t->b->seg[S_CS].limit))
    return false;
  return pc >> 12 == page && (pc & 0xfff) <= 4096 - 15;
}

/* Decode the instruction at rip into the look-ahead slot, from the
   host's copy of the page (host: its first byte; gpa: its guest-physical
   address), which the TU's first instruction was fetched from: no page
   walk per instruction (a walk and a fetch each made the look-ahead 3%
   of a Debian boot). region_page keeps all 15 bytes in the page and, in
   16- and 32-bit code, in the CS limit, so the decode sees what
   fetch_insn would. */
static struct xi *look_ahead(struct tx *t, uint64_t rip, uint64_t page,
                             const uint8_t *host, uint64_t gpa) {
  if (!region_page(t, rip, page))
    return NULL;
  struct xi *x = &t->x[TU_MAX];
  unsigned off = (unsigned)(lin_of(t, rip) & 0xfff);
  memcpy(x->bytes, host + off, 15);
  ZydisDecoder dec;
  ZydisDecoderInit(&dec, t->b->zmode, t->b->zstack);
  if (ZYAN_FAILED(
          ZydisDecoderDecodeFull(&dec, x->bytes, 15, &x->di, x->op)) ||
      x->di.mnemonic == ZYDIS_MNEMONIC_INVALID)
    return NULL;
  x->gpa = gpa + off;
  x->page2 = false;
  x->rip = rip;
  x->next = insn_next(t, rip, x->di.length);
  x->memop = bt_find_memop(&x->di, x->op);
  scan_regs(x);
  x->cls = classify(t, x);
  return x;
}

/* What an instruction of a region candidate does to the search: 0 go on,
   1 it closes the region (a backward branch to *target <= s), -1 no
   region. */
static int region_step(struct tx *t, const struct xi *x, uint64_t s,
                       uint64_t *target) {
  if (x->cls == X_JCC || x->cls == X_JMP) {
    uint64_t to = branch_target(t, x);
    if (to <= s) {
      *target = to;
      return 1;
    }
    /* A forward jcc may leave the loop; anything else ends the body. */
    return x->cls == X_JCC && to > x->rip ? 0 : -1;
  }
  return ends_tu(x->cls) ? -1 : 0;
}

/* The region find_region is building. */
struct region_scan {
  unsigned n, jccs;
  uint32_t named;
  unsigned lo, hi; /* its bytes' extent in its page */
};

static struct xsum summarize(const struct tx *t, const struct xi *x);

static void region_add(struct tx *t, struct region_scan *r,
                       const struct xi *x) {
  t->rg_sum[r->n] = summarize(t, x);
  t->rg_rip[r->n++] = x->rip;
  r->named |= x->used;
  r->jccs += x->cls == X_JCC;
  unsigned off = (unsigned)(lin_of(t, x->rip) & 0xfff);
  if (off < r->lo)
    r->lo = off;
  if (off + x->di.length > r->hi)
    r->hi = off + x->di.length;
}

static void find_region(struct tx *t) {
  t->rkeep = 0;
  t->rg_n = 0;
  if (t->n == 0)
    return;
  uint64_t s = t->x[0].rip;
  uint64_t page = lin_of(t, s) >> 12;
  /* Hardware breakpoints end TUs wherever they are: TUs of one loop
     would not see the same self loops (below). */
  if (t->b->dbg_on && (t->b->dbg.flags & VMM_DEBUG_HW_BREAKPOINTS))
    return;
  /* The page's bytes, for the look-ahead (it holds the TU's first
     instruction, so it is RAM). */
  uint64_t gpa = t->x[0].gpa & ~0xfffull;
  const uint8_t *host = bt_ram_readable(t->b, gpa, 4096);
  if (host == NULL)
    return;
  struct region_scan r = {.lo = 4096};
  uint64_t target = 0;
  int st = 0;
  /* From S on: the TU's instructions, then the look-ahead. */
  const struct xi *x = NULL;
  for (unsigned i = 0; i < t->n && st == 0; i++) {
    x = &t->x[i];
    if (!region_page(t, x->rip, page) || x->page2 ||
        x->di.mnemonic == ZYDIS_MNEMONIC_INVALID)
      return;
    region_add(t, &r, x);
    st = region_step(t, x, s, &target);
  }
  while (st == 0 && r.n < REGION_MAX) {
    x = look_ahead(t, x->next, page, host, gpa);
    if (x == NULL)
      return;
    region_add(t, &r, x);
    st = region_step(t, x, s, &target);
  }
  if (st != 1)
    return;
  t->rg_s = r.n;
  /* From T up to S (already listed from S on): forward jccs only. */
  uint64_t rip = target;
  while (rip < s) {
    if (r.n == REGION_MAX)
      return;
    x = look_ahead(t, rip, page, host, gpa);
    if (x == NULL ||
        (x->cls == X_JCC ? branch_target(t, x) <= x->rip : ends_tu(x->cls)))
      return;
    region_add(t, &r, x);
    rip = x->next;
  }
  if (rip != s)
    return;
  /* A loop that fits one TU with no jcc but its back edge is a self loop
     for the TU starting at T (which keeps its own registers): no region,
     for the TUs that start inside it either. */
  if (r.n <= TU_MAX && r.jccs <= 1)
    return;
  /* rcx first (then lookups need not park it), then pick()'s order. */
  unsigned got = 0;
  for (size_t i = 0; i <= sizeof(pick_order) && got < 4; i++) {
    unsigned reg = i == 0 ? R_CX : pick_order[i - 1];
    if (!(r.named & (1u << reg))) {
      t->rkeep |= (uint16_t)(1u << reg);
      got++;
    }
  }
  t->rg_n = t->rkeep ? r.n : 0;
  t->rg_lo = r.lo;
  t->rg_hi = r.hi;
}

/* ------------------------------------------------------------------------ */
/* Hoisted lookups                                                          */

#define FLAGS6                                                                 \
  (ZYDIS_CPUFLAG_CF | ZYDIS_CPUFLAG_PF | ZYDIS_CPUFLAG_AF | ZYDIS_CPUFLAG_ZF | \
   ZYDIS_CPUFLAG_SF | ZYDIS_CPUFLAG_OF)

/* Whether x certainly writes all six arithmetic flags and reads none, so
   the guest's flags are dead right before it. A short list of operations
   whose flags do not depend on a count (a shift or rotate by 0 leaves
   them alone, which Zydis's table cannot say), checked against that
   table. AF after and/or/xor/test is "undefined": processors write it (0);
   were it left alone, the lookup's own `test` would leave it alone too. */
static bool writes_flags6(const struct xi *x) {
  switch (x->di.mnemonic) {
  case ZYDIS_MNEMONIC_ADD:
  case ZYDIS_MNEMONIC_SUB:
  case ZYDIS_MNEMONIC_CMP:
  case ZYDIS_MNEMONIC_NEG:
  case ZYDIS_MNEMONIC_AND:
  case ZYDIS_MNEMONIC_OR:
  case ZYDIS_MNEMONIC_XOR:
  case ZYDIS_MNEMONIC_TEST: break;
  default: return false;
  }
  const ZydisAccessedFlags *fl = x->di.cpu_flags;
  return fl != NULL && !(fl->tested & FLAGS6) &&
         ((fl->modified | fl->set_0 | fl->set_1 | fl->undefined) & FLAGS6) ==
             FLAGS6;
}

/* Runs natively without scratch registers, callouts or faults (IDENT,
   nop, a lea emit_lea passes through): may sit between a hoisted lookup
   and its access, and be copied into its miss path. */
static bool plain_insn(const struct xi *x) {
  if (x->cls == X_NOP)
    return true;
  if (x->used & (1u << R_SP))
    return false;
  if (x->cls == X_IDENT)
    return !uses_x87(x);
  if (x->cls == X_LEA) {
    ZydisRegister base = x->op[1].mem.base;
    return x->di.address_width != 16 && base != ZYDIS_REGISTER_RIP &&
           base != ZYDIS_REGISTER_EIP;
  }
  return false;
}

/* The registers the flags x writes can be had again from, while they
   hold what they held after x (rebuild_flags), or 0. and, or and xor
   leave flags that are a function of their result alone (CF and OF
   clear; AF "undefined": processors clear it, after `test` too); cmp and
   test leave nothing but flags, and can run again. */
static uint32_t rebuild_regs(const struct xi *x) {
  if (x->cls != X_IDENT || !plain_insn(x) || !writes_flags6(x))
    return 0;
  bool h;
  switch (x->di.mnemonic) {
  case ZYDIS_MNEMONIC_AND:
  case ZYDIS_MNEMONIC_OR:
  case ZYDIS_MNEMONIC_XOR: {
    if (x->op[0].type != ZYDIS_OPERAND_TYPE_REGISTER)
      return 0;
    int g = gpr_of(x->op[0].reg.value, &h);
    return g < 0 ? 0 : 1u << g;
  }
  case ZYDIS_MNEMONIC_CMP:
  case ZYDIS_MNEMONIC_TEST: return x->used;
  default: return 0;
  }
}

/* The flags instruction x wrote, again (rebuild_regs says from what):
   `test r, r` of its destination, or x itself. */
static void rebuild_flags(struct tx *t, struct xi *x) {
  if (x->di.mnemonic == ZYDIS_MNEMONIC_CMP ||
      x->di.mnemonic == ZYDIS_MNEMONIC_TEST) {
    emit_core(t, x, -1, -1, -1);
    return;
  }
  ZydisEncoderRequest r;
  memset(&r, 0, sizeof(r));
  r.mnemonic = ZYDIS_MNEMONIC_TEST;
  r.machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
  r.operand_count = 2;
  for (unsigned k = 0; k < 2; k++) {
    r.operands[k].type = ZYDIS_OPERAND_TYPE_REGISTER;
    r.operands[k].reg.value = x->op[0].reg.value;
  }
  e_req(&t->e, &r);
}

static struct xsum summarize(const struct tx *t, const struct xi *x) {
  struct xsum s = {.used = x->used};
  for (int k = 0; k < x->di.operand_count; k++) {
    const ZydisDecodedOperand *o = &x->op[k];
    bool h;
    int g = o->type == ZYDIS_OPERAND_TYPE_REGISTER ? gpr_of(o->reg.value, &h)
                                                   : -1;
    if (g >= 0 && (o->actions & (ZYDIS_OPERAND_ACTION_WRITE |
                                 ZYDIS_OPERAND_ACTION_CONDWRITE)))
      s.wr |= 1u << g;
  }
  if (x->cls == X_MEM && !x->rsp && !uses_x87(x) && mem_inline(t, x)) {
    const ZydisDecodedOperand *o = &x->op[x->memop];
    bool h;
    int g = gpr_of(o->mem.base, &h);
    if (g >= 0)
      s.addr |= 1u << g;
    g = gpr_of(o->mem.index, &h);
    if (g >= 0)
      s.addr |= 1u << g;
    s.f |= XS_CAND;
  }
  if (plain_insn(x))
    s.f |= XS_PLAIN;
  if (writes_flags6(x))
    s.f |= XS_W6;
  const ZydisAccessedFlags *fl = x->di.cpu_flags;
  if (x->cls != X_NOP && x->cls != X_LEA &&
      (fl == NULL ||
       ((fl->modified | fl->set_0 | fl->set_1 | fl->undefined) & FLAGS6)))
    s.f |= XS_FLAGS;
  if (x->cls == X_IDENT || x->cls == X_LEA || x->cls == X_NOP ||
      x->cls == X_MEM)
    s.f |= XS_QUIET;
  if (ends_tu(x->cls))
    s.f |= XS_END;
  if (x->cls == X_JCC || x->cls == X_JMP)
    s.f |= XS_BRANCH;
  s.keep = rebuild_regs(x);
  return s;
}

/*
 * Flag liveness for the soft-TLB lookup (docs/bt.md, "The memory path").
 * The flags before an access are visible to a fault's handler even when
 * no later instruction reads them, so a lookup that clobbers them cannot
 * simply sit right before its access. Two ways make the flags form (`cmp`,
 * `ja`, no rcx) sound:
 *
 * Hoisting: the lookup sits right before an earlier instruction k that
 * writes all six flags without reading them, when nothing from k up to
 * the access can fault or call out and nothing there changes the access's
 * address registers: the flags are dead there, and k rewrites them before
 * anything can see them. A miss runs k and the instructions up to the
 * access again from the miss path, then the usual miss callout, which
 * sees k's flags. One hoisted lookup per stretch.
 *
 * Rebuilding: where the last instruction j before the access to change a
 * flag left flags that can be had again (rebuild_regs) from registers
 * nothing between j and the access writes, and only instructions
 * translated inline lie between, the lookup sits in place and the flags
 * are made again after it: on the miss path before the miss callout, and
 * on the hit path before the access unless the access itself writes all
 * six without reading any.
 *
 * For the n instructions s (a TU, or a candidate TU of a loop region):
 * hoist_for[k] = i, rebuild_of[i] = j. Returns how many inline lookups
 * are left in the rcx form.
 */
static unsigned plan_tu(const struct xsum *s, unsigned n, int8_t *hoist_for,
                        int8_t *rebuild_of) {
  for (unsigned i = 0; i < n; i++)
    hoist_for[i] = rebuild_of[i] = -1;
  unsigned left = 0, free_from = 0;
  for (unsigned i = 0; i < n; i++) {
    if (!(s[i].f & XS_CAND))
      continue;
    bool done = false;
    for (unsigned k = i; k-- > free_from;) {
      if (!(s[k].f & XS_PLAIN) || (s[k].used & s[i].addr))
        break;
      if (s[k].f & XS_W6) {
        hoist_for[k] = (int8_t)i;
        free_from = i + 1;
        done = true;
        break;
      }
    }
    uint32_t written = 0;
    for (unsigned j = i; !done && j-- > 0;) {
      if (!(s[j].f & XS_QUIET))
        break;
      if (s[j].f & XS_FLAGS) {
        if (s[j].keep && (s[j].f & XS_W6) && !(written & s[j].keep)) {
          rebuild_of[i] = (int8_t)j;
          done = true;
        }
        break;
      }
      written |= s[j].wr;
    }
    left += !done;
  }
  return left;
}

/* What a TU costs in region_cut's choice: one more TU (a link to follow,
   a lookup that cannot be hoisted across its start) against a lookup
   left in the rcx form (four to five more instructions than the flags
   form, rcx parked around it where the loop names it). */
#define CUT_TU 4
#define CUT_LOOKUP 3

/*
 * How many instructions the TU starting at S, in a loop region, takes.
 * The region's TUs are the parts of one partition of it, from T: a TU
 * ends at the first cut after its start, so the loop's TUs come out the
 * same whichever is translated first, as a function of the region's
 * bytes. The cuts are chosen by dynamic programming over the region for
 * the least cost (CUT_TU per TU, CUT_LOOKUP per lookup plan_tu leaves in
 * the rcx form; the longer TU on a tie): up to TU_MAX instructions, and
 * a jcc or jmp ends one. Cutting only by the count put SHA-256's message
 * schedule's second load at the start of a TU, where nothing could be
 * hoisted above it, and its back edge alone in a third TU.
 */
static unsigned region_cut(struct tx *t) {
  unsigned n = t->rg_n, ns = t->rg_s, m = n - ns;
  struct xsum lin[REGION_MAX];
  for (unsigned k = 0; k < n; k++)
    lin[k] = t->rg_sum[(k + ns) % n];
  unsigned cost[REGION_MAX + 1], next[REGION_MAX];
  int8_t h[TU_MAX], rb[TU_MAX];
  cost[n] = 0;
  for (unsigned p = n; p-- > 0;) {
    cost[p] = UINT_MAX;
    next[p] = p + 1;
    for (unsigned q = p + 1; q <= n && q - p <= TU_MAX; q++) {
      unsigned c =
          CUT_TU + CUT_LOOKUP * plan_tu(lin + p, q - p, h, rb) + cost[q];
      if (c <= cost[p]) {
        cost[p] = c;
        next[p] = q;
      }
      if (lin[q - 1].f & XS_END)
        break;
    }
  }
  /* The part before S's (the last one when S is the loop head), where S
     starts a part. */
  unsigned c = 0, p = 0;
  while (c < m) {
    p = c;
    c = next[c];
  }
  if (m == 0)
    while (c < n) {
      p = c;
      c = next[c];
    }
  t->rg_pn = c == (m ? m : n) ? c - p : 0;
  t->rg_pp = (p + ns) % n;
  c = 0;
  while (c <= m)
    c = next[c];
  return c - m;
}

/* The instruction whose flags s[0..n) leaves at its end (a jcc or jmp
   ending it reads them), made again from registers nothing after it
   writes, with only instructions translated inline after it: its index,
   or -1. */
static int exit_producer(const struct xsum *s, unsigned n) {
  uint32_t written = 0;
  for (unsigned j = n; j-- > 0;) {
    if (j == n - 1 && (s[j].f & XS_BRANCH)) {
      written |= s[j].wr;
      continue;
    }
    if (!(s[j].f & XS_QUIET))
      return -1;
    if (s[j].f & XS_FLAGS)
      return s[j].keep && (s[j].f & XS_W6) && !(written & s[j].keep) ? (int)j
                                                                      : -1;
    written |= s[j].wr;
  }
  return -1;
}

/* An instruction's bytes as a link or fragment names a flags producer
   (up to 8; 0: none). */
static uint8_t pack_insn(const struct xi *x, uint64_t *bytes) {
  *bytes = 0;
  if (x->di.length > sizeof(*bytes))
    return 0;
  memcpy(bytes, x->bytes, x->di.length);
  return x->di.length;
}

static struct xi *look_ahead(struct tx *t, uint64_t rip, uint64_t page,
                             const uint8_t *host, uint64_t gpa);

/*
 * Flags entries (docs/bt.md, "Flags at a loop head"). A lookup before any
 * flag writer of its TU cannot clobber the flags (plan_tu: nothing to
 * hoist it across or make them again from), so it takes the rcx form,
 * and the first loads of a loop body usually sit there. But the link
 * that closes a loop usually brings the flags of one `cmp` (or `test`,
 * `and`...) whose registers nothing changed since: a fragment entered
 * from such a link can make them again as plan_tu's rebuilds do. Its
 * first instructions up to the last such lookup are emitted twice: for
 * the other entries, and at a flags entry that only links naming the
 * same instruction bytes (in the same mode) reach. A self loop's back
 * edge goes there; in a loop region, links whose TU ends with the flags
 * of the instruction the part of the partition before this TU ends with
 * (tc.c compares the bytes).
 *
 * Here: the TU's own exit producer (xbytes) and the assumed one (px).
 */
static void flags_producers(struct tx *t, const struct xsum *sum, bool self) {
  t->plen = t->xplen = 0;
  if ((!self && !t->rkeep) || t->n == 0)
    return;
  int j = exit_producer(sum, t->n);
  if (j >= 0)
    t->xplen = pack_insn(&t->x[j], &t->xbytes);
  if (self) {
    if (t->xplen) {
      t->px = t->x[j];
      t->pbytes = t->xbytes;
      t->plen = t->xplen;
    }
    return;
  }
  unsigned n = t->rg_n;
  struct xsum s[TU_MAX];
  for (unsigned k = 0; k < t->rg_pn; k++)
    s[k] = t->rg_sum[(t->rg_pp + k) % n];
  j = t->rg_pn ? exit_producer(s, t->rg_pn) : -1;
  if (j < 0)
    return;
  uint64_t gpa = t->x[0].gpa & ~0xfffull;
  const uint8_t *host = bt_ram_readable(t->b, gpa, 4096);
  if (host == NULL)
    return;
  const struct xi *x =
      look_ahead(t, t->rg_rip[(t->rg_pp + (unsigned)j) % n],
                 lin_of(t, t->x[0].rip) >> 12, host, gpa);
  if (x == NULL)
    return;
  t->px = *x;
  t->plen = pack_insn(&t->px, &t->pbytes);
}

/* Once per translation, after the TU's last cut: the flags producers
   (flags_producers), then plan_tu for the TU, and for its flags entry:
   with px first (nothing is hoisted across it), where it gives a lookup
   px's flags the prefix runs to the last of them (fm; 0 without a flags
   entry). The plans agree after that lookup, and no hoist may reach into
   the prefix from beyond it (each copy emits its own). */
static void plan_lookups(struct tx *t, bool self) {
  struct xsum s[TU_MAX + 1];
  for (unsigned i = 0; i < t->n; i++)
    s[i + 1] = summarize(t, &t->x[i]);
  flags_producers(t, s + 1, self);
  plan_tu(s + 1, t->n, t->hoist_for, t->rebuild_of);
  t->fm = 0;
  if (!t->plen)
    return;
  s[0] = summarize(t, &t->px);
  s[0].f &= (uint8_t)~(XS_PLAIN | XS_CAND);
  int8_t h[TU_MAX + 1], rb[TU_MAX + 1];
  plan_tu(s, t->n + 1, h, rb);
  unsigned fm = 0;
  for (unsigned i = 0; i < t->n; i++) {
    if ((h[i + 1] < 0 ? -1 : h[i + 1] - 1) != t->hoist_for[i])
      return;
    t->rebuild_f[i] = rb[i + 1] == 0  ? P_IDX
                      : rb[i + 1] < 0 ? -1
                                      : (int8_t)(rb[i + 1] - 1);
    if (rb[i + 1] == 0)
      fm = i + 1;
  }
  for (unsigned k = 0; k < fm; k++)
    if (t->hoist_for[k] >= (int)fm)
      return;
  t->fm = fm;
}

/* The lookup of instruction i's operand, before instruction k (plan_tu).
   Its registers stay borrowed (no instruction up to i names them) and
   hold the host address for emit_mem (hs1, hs2). */
static void emit_hoist(struct tx *t, unsigned k, unsigned i, struct ool *oo,
                       unsigned *noo) {
  struct emit *e = &t->e;
  struct xi *x = &t->x[i];
  const ZydisDecodedOperand *o = &x->op[x->memop];
  uint32_t avoid = (1u << R_SP) | (1u << R_CX);
  for (unsigned j = k; j <= i; j++)
    avoid |= t->x[j].used;
  give_back(t, x->used);
  int s1 = pick(&avoid, x->high8, t->borrowed, t->later);
  int s2 = pick(&avoid, x->high8, t->borrowed, t->later);
  /* rcx when it is free anyway (as rcx_mode would borrow it): a third
     register would be one more to borrow (warm entries keep rcx). */
  bool rcx_free =
      (t->borrowed & (1u << R_CX)) || !(t->later & (1u << R_CX));
  int chk = rcx_free ? R_CX : pick(&avoid, false, t->borrowed, t->later);
  if (s1 < 0 || s2 < 0 || chk < 0)
    return; /* too many registers named: emit_mem looks it up itself */
  borrow(t, (unsigned)s1);
  borrow(t, (unsigned)s2);
  borrow(t, (unsigned)chk);
  int miss = e_label(e), after = e_label(e), retry = e_label(e);
  emit_ea(t, x, o, (unsigned)s1, (unsigned)s2);
  bool w = o->actions &
           (ZYDIS_OPERAND_ACTION_WRITE | ZYDIS_OPERAND_ACTION_CONDWRITE);
  int ix = emit_lookup_with(t, (unsigned)s1, (unsigned)s2, o->size / 8, w,
                            bt_needs_align16(&x->di, o), miss, chk);
  oo[(*noo)++] = (struct ool){.kind = OOL_HOIST,
                              .i = i,
                              .k = k,
                              .label = miss,
                              .after = after,
                              .retry = retry,
                              .s1 = s1,
                              .s2 = s2,
                              .srsp = -1,
                              .borrowed = t->borrowed,
                              .park = -1};
  t->hoisted[i] = true;
  t->hs1[i] = (uint8_t)s1;
  t->hs2[i] = (int8_t)ix;
  t->hbias[i] = (uint8_t)t->abias;
  t->hafter[i] = after;
}

/* A hoisted lookup missed, with the guest's flags clobbered but dead:
   instructions k..i-1 run here (k writes the flags anew), then the miss
   callout of i as without hoisting. When it fills the TLB it resumes at
   `retry`, where the entry for i's address is known to be there. */
static void emit_ool_hoist(struct tx *t, const struct ool *q) {
  struct emit *e = &t->e;
  struct xi *x = &t->x[q->i];
  const ZydisDecodedOperand *o = &x->op[x->memop];
  e_bind(e, q->label);
  t->borrowed = q->borrowed;
  t->park = -1;
  for (unsigned j = q->k; j < q->i; j++) {
    struct xi *y = &t->x[j];
    give_back(t, y->used);
    if (y->cls == X_LEA)
      emit_lea(t, j);
    else if (y->cls == X_IDENT)
      emit_core(t, y, -1, -1, -1);
  }
  uint32_t mi, pi;
  struct bt_desc *md = new_desc(t, q->i, BT_D_MEM, &mi);
  struct bt_desc *pd = new_desc(t, q->i, BT_D_MEMPOST, &pi);
  md->s1 = pd->s1 = (uint8_t)q->s1;
  md->spill = t->borrowed;
  callout(t, mi);
  int bounce = e_label(e);
  e_bind(e, bounce);
  emit_core(t, x, q->s1, -1, -1);
  pd->spill = t->borrowed;
  callout(t, pi);
  e_bind(e, q->retry);
  emit_ea(t, x, o, (unsigned)q->s1, (unsigned)q->s2);
  emit_tlb_index(t, (unsigned)q->s2, (unsigned)q->s1);
  e_mov_r_ctxidx(e, (unsigned)q->s2, tlb_adds(t), (unsigned)q->s2);
  t->abias = BT_TLB_BIAS;
  emit_core(t, x, q->s1, q->s2, -1);
  e_jmp(e, q->after);
  add_dfix(t, md, q->retry, q->after, bounce);
  add_dfix(t, pd, q->retry, q->after, bounce);
}

/* ------------------------------------------------------------------------ */
/* The TU                                                                   */

/* A slot missed: the TLB lookup (to the ordinary miss path if that
   misses too), then the entry into the slot, and back to the hit. The
   registers are as at the slot's branch: a holds the address, rc and tt
   are scratch. Flag-free unless the lookup was hoisted. */
static void emit_slot_fill(struct tx *t, const struct slot_fill *q) {
  struct emit *e = &t->e;
  int32_t adds = tlb_adds(t);
  e_bind(e, q->label);
  if (q->flags) /* the flags form left the offset in the old slot's page */
    e_op_r_mem(e, 0x2b /* sub */, true, q->a, R_SP, q->off);
  emit_tlb_index(t, q->tt, q->a);
  /* Count the fill under the page's TLB index and note the slot in that
     index's list (mem.c, slots_flush_index); before the lookup, while
     the index is at hand: a fill that then misses is noted for nothing. */
  e_mov_r_ctxidx(e, q->rc, BT_OFF_SLOT_CNT, q->tt);
  e_lea(e, 64, q->rc, (int)q->rc, -1, 1, 1);
  e_mov_ctxidx_r(e, BT_OFF_SLOT_CNT, q->tt, q->rc);
  e_pext_ctx(e, q->rc, q->rc, BT_OFF_SLOT_POS);
  e_lea(e, 64, q->rc, (int)q->rc, (int)q->tt, BT_SLOT_LIST, 0);
  e_mov_ctxidx4_i32(e, BT_OFF_SLOT_LIST, q->rc, (uint32_t)q->off);
  e_mov_r_ctxidx(e, q->rc, tlb_tags(t, q->write), q->tt);
  e_lea(e, 64, q->rc, (int)q->a, (int)q->rc, 1, (int64_t)q->size - 1);
  if (q->flags) {
    e_cmp_r_i32(e, q->rc, 0xfff);
    e_jcc(e, 7 /* a */, q->miss);
    e_mov_r_ctxidx(e, q->tt, adds, q->tt);
  } else {
    e_mov_r_ctxidx(e, q->tt, adds, q->tt);
    e_shrx(e, q->rc, q->rc, q->tt);
    int ok = e_label(e);
    e_jrcxz(e, ok);
    e_jmp(e, q->miss);
    e_bind(e, ok);
  }
  /* host = page of a + addend - 12, tag = -(page of a), flag-free: the
     addend's low bits are 12. */
  e_shrx(e, q->rc, q->a, q->tt);
  e_shlx(e, q->rc, q->rc, q->tt);
  e_lea(e, 64, q->rc, (int)q->rc, (int)q->tt, 1, -BT_TLB_BIAS);
  e_mov_ctx_r(e, q->off + 16, q->rc);
  e_shrx(e, q->rc, q->a, q->tt);
  e_shlx(e, q->rc, q->rc, q->tt);
  e_not(e, q->rc);
  e_lea(e, 64, q->rc, (int)q->rc, -1, 1, 1);
  e_mov_ctx_r(e, q->off, q->rc);
  if (q->bias != BT_TLB_BIAS) /* the class's bias (slot_bias) */
    e_lea(e, 64, q->tt, (int)q->tt, -1, 1,
          (int64_t)q->bias - BT_TLB_BIAS);
  e_mov_ctx_r(e, q->off + 8, q->tt);
  e_jmp(e, q->hit);
}

static void emit_budget_check(struct tx *t, unsigned fi) {
  struct emit *e = &t->e;
  int ok = e_label(e);
  borrow(t, R_CX);
  borrow(t, R_DX);
  e_mov_r_ctx(e, R_CX, BT_OFF_BUDGET);
  e_lea(e, 64, R_CX, R_CX, -1, 1, (int64_t)t->n);
  e_mov_ctx_r(e, BT_OFF_BUDGET, R_CX);
  e_lea(e, 64, R_CX, R_CX, -1, 1, -1);
  uint8_t not_rcx[3] = {0x48, 0xf7, 0xd1};
  e_bytes(e, not_rcx, 3);
  e_mov_r32_i(e, R_DX, 63);
  e_shrx(e, R_CX, R_CX, R_DX);
  e_jrcxz(e, ok);
  /* Exhausted: give the instructions back and leave. */
  e_mov_r_ctx(e, R_CX, BT_OFF_BUDGET);
  e_lea(e, 64, R_CX, R_CX, -1, 1, -(int64_t)t->n);
  e_mov_ctx_r(e, BT_OFF_BUDGET, R_CX);
  restore_all(t);
  e_mov_ctx_i32(e, BT_OFF_ARG, fi);
  e_jmp_ctx(e, BT_OFF_EXIT_BUDGET);
  e_bind(e, ok);
}

/* What emit_body's instructions share: the out-of-line paths, whether
   the last instruction falls through, whether the guest's x87 state is in
   the FPU, and the registers each instruction and the later ones name. */
struct body {
  struct ool oo[TU_MAX * 6]; /* up to three per instruction, prefix twice */
  unsigned noo;
  bool open_end;
  bool x87_here;
  uint32_t later[TU_MAX + 1];
};

static void emit_insn(struct tx *t, unsigned i, struct body *bd);

/* The fragment's code up to its exit stubs: the budget check, the
   instructions, the out-of-line paths. */
static void emit_body(struct tx *t, unsigned fi) {
  struct bt_vcpu *b = t->b;
  struct emit *e = &t->e;
  if (b->key & BT_K_COUNT)
    emit_budget_check(t, fi);
  t->entry = t->warm_at = 0;
  if (t->warm && t->keep_std) {
    for (unsigned r = 0; r < 16; r++)
      if (STD_KEPT & (1u << r))
        borrow(t, r);
    t->warm_at = (uint32_t)e->pos;
  } else if (t->warm) {
    /* The give-back ends where the entry starts, 32-byte aligned (the
       fragment's first byte is 64-byte aligned). */
    e_nops(e, 32 - 9 * 3);
    t->warm_at = (uint32_t)e->pos;
    for (unsigned r = 0; r < 16; r++)
      if (STD_KEPT & (1u << r))
        e_mov_r_ctx(e, r, SLOT(r));
    t->entry = (uint32_t)e->pos;
  }
  t->kwarm_at = 0;
  if (t->rkeep) {
    /* A loop region's fragment: links from the region come in below, with
       rkeep borrowed (the warm entry above, for everything else, gave
       STD_KEPT back). */
    for (unsigned r = 0; r < 16; r++)
      if (t->rkeep & (1u << r))
        borrow(t, r);
    e_align(e, 32);
    t->kwarm_at = (uint32_t)e->pos;
  }
  /* SSE code may move MXCSR's status bits, which settling a callout's
     MXCSR must then read back (glue.S, MX_SETTLE). Only entering
     translated code clears the flag: once, where every entry passes and
     a self loop's back edge does not, covers every path through the TU
     (the out-of-line ones included). */
  bool mx = false;
  for (unsigned i = 0; i < t->n && !mx; i++)
    mx = (t->x[i].cls == X_IDENT || t->x[i].cls == X_MEM) &&
         uses_mxcsr(&t->x[i]);
  if (mx)
    e_mov_ctx_i32(e, BT_OFF_MX_DIRTY, 1);
  if (t->keep) {
    for (unsigned r = 0; r < 16; r++)
      if (t->keep & (1u << r))
        borrow(t, r);
    e_align(e, 64);
    t->head = e_label(e);
    e_bind(e, t->head);
  }

  struct body bd = {.open_end = true};
  bd.later[t->n] = 0;
  for (unsigned i = t->n; i-- > 0;)
    bd.later[i] = bd.later[i + 1] | t->x[i].used;

  memset(t->hoisted, 0, sizeof(t->hoisted));
  t->nlook = t->nnb = 0;
  t->nsf = t->nslot = 0;
  unsigned i = 0;
  if (t->fm) {
    /* The flags entry (flags_producers): the prefix again, from the same
       registers borrowed, ending with the same ones as the first copy. */
    uint16_t from = t->borrowed;
    bool x87 = bd.x87_here;
    for (; i < t->fm && !e->fail; i++)
      emit_insn(t, i, &bd);
    uint16_t to = t->borrowed;
    int join = e_label(e);
    e_jmp(e, join);
    e_align(e, t->rkeep ? 32 : 64);
    t->fent = e_label(e);
    e_bind(e, t->fent);
    t->kflags_at = (uint32_t)e->pos;
    if (mx && t->rkeep)
      e_mov_ctx_i32(e, BT_OFF_MX_DIRTY, 1);
    t->borrowed = from;
    bd.x87_here = x87;
    memset(t->hoisted, 0, t->fm * sizeof(t->hoisted[0]));
    int8_t plain[TU_MAX];
    memcpy(plain, t->rebuild_of, sizeof(plain));
    memcpy(t->rebuild_of, t->rebuild_f, sizeof(plain));
    for (i = 0; i < t->fm && !e->fail; i++)
      emit_insn(t, i, &bd);
    memcpy(t->rebuild_of, plain, sizeof(plain));
    give_back(t, t->borrowed & ~to);
    for (unsigned r = 0; r < 16; r++)
      if (to & ~t->borrowed & (1u << r))
        borrow(t, r);
    e_bind(e, join);
  }
  for (; i < t->n && !e->fail; i++)
    emit_insn(t, i, &bd);
  if (bd.open_end && t->n > 0)
    exit_link(t, false, 0, t->x[t->n - 1].next);
  near_trampolines(t);
  for (unsigned k = 0; k < bd.noo; k++)
    emit_ool(t, &bd.oo[k]);
  for (unsigned k = 0; k < t->nsf; k++)
    emit_slot_fill(t, &t->sf[k]);
}

/* Instruction i of the body. */
static void emit_insn(struct tx *t, unsigned i, struct body *bd) {
  struct emit *e = &t->e;
  struct ool *oo = bd->oo;
  unsigned *noo = &bd->noo;
  struct xi *x = &t->x[i];
  if (bd->noo + 3 > VMM__ARRAY_SIZE(bd->oo)) {
    e->fail = true;
    return;
  }
  t->later = bd->later[i];
  /* Registers the instruction names get their guest values back. */
  give_back(t, x->used);
  if (t->hoist_for[i] >= 0)
    emit_hoist(t, i, (unsigned)t->hoist_for[i], oo, noo);
  /* Native x87/MMX code needs the guest's x87 state in the FPU: the hook
     loads it after a host handler, or notes that it changes (glue.S).
     Only a callout emulating an instruction may run a handler. Inside
     the body, so a self loop's back edge runs it again. */
  if ((x->cls == X_IDENT || x->cls == X_MEM) && !bd->x87_here && uses_x87(x)) {
    e_call_ctx(e, BT_OFF_X87);
    bd->x87_here = true;
  }
  if (x->cls == X_EMUL)
    bd->x87_here = false;

  switch (x->cls) {
  case X_IDENT:
    if (x->rsp) {
      uint32_t avoid = x->used | (1u << R_SP) | (1u << R_CX);
      int s = pick(&avoid, x->high8, t->borrowed, t->later);
      if (s < 0)
        e->fail = true;
      else
        emit_core(t, x, -1, -1, s);
    } else {
      emit_core(t, x, -1, -1, -1);
    }
    break;
  case X_MEM: emit_mem(t, i, oo, noo); break;
  case X_LEA: emit_lea(t, i); break;
  case X_NOP: break;
  case X_PUSH:
  case X_POP:
  case X_LEAVE: emit_stack(t, i, oo, noo); break;
  case X_CALL:
    emit_stack(t, i, oo, noo);
    exit_link(t, false, 0, branch_target(t, x));
    bd->open_end = false;
    break;
  case X_RET:
  case X_JMPI:
  case X_CALLI:
    emit_stack(t, i, oo, noo);
    bd->open_end = false;
    break;
  case X_JMP:
    if (t->head >= 0 && branch_target(t, x) == t->x[0].rip)
      self_link(t, false, 0, branch_target(t, x));
    else
      exit_link(t, false, 0, branch_target(t, x));
    bd->open_end = false;
    break;
  case X_JCC: {
    if (t->head >= 0 && branch_target(t, x) == t->x[0].rip)
      self_link(t, true, jcc_cc(x->di.mnemonic), branch_target(t, x));
    else
      exit_link(t, true, jcc_cc(x->di.mnemonic), branch_target(t, x));
    exit_link(t, false, 0, x->next);
    bd->open_end = false;
    break;
  }
  case X_EMUL: emit_emul(t, i, false); break;
  case X_EMUL_END:
    emit_emul(t, i, true);
    bd->open_end = false;
    break;
  case X_SYSCALL:
    emit_syscall(t, i);
    bd->open_end = false;
    break;
  case X_SYSRET:
    emit_sysret(t, i);
    bd->open_end = false;
    break;
  case X_UD:
    emit_raise(t, i, X86_EXC_UD);
    bd->open_end = false;
    break;
  case X_NM:
    emit_raise(t, i, X86_EXC_NM);
    bd->open_end = false;
    break;
  }
}

/* The exit stubs, one per link, after the out-of-line code. */
static void emit_stubs(struct tx *t, uint64_t pc) {
  struct bt_vcpu *b = t->b;
  struct bt_tc *tc = &b->tc;
  struct emit *e = &t->e;
  for (unsigned k = 0; k < t->nlk; k++) {
    struct bt_link *l = bt_link_alloc(b);
    if (l == NULL) {
      e->fail = true;
      break;
    }
    e_bind(e, t->lk[k].stub);
    for (unsigned r = 0; r < 16; r++)
      if (t->lk[k].restore & (1u << r))
        e_mov_r_ctx(e, r, SLOT(r));
    e_mov_ctx_i32(e, BT_OFF_ARG, (uint32_t)(l - tc->links));
    e_jmp_ctx(e, BT_OFF_EXIT_LINK);
    l->from = t->f;
    l->target_rip = t->lk[k].target;
    l->key = t->lk[k].key;
    uint64_t tpc = lin_of(t, l->target_rip);
    l->backward = tpc <= pc;
    /* A link into another privilege (syscall's) is unlinked with the
       TLB like a cross-page one: that the source page may run at CPL 3
       no longer implies the target may run at CPL 0 once SMEP is on. */
    l->cross_page = (tpc >> 12) != (pc >> 12) || l->key != b->key;
    l->patch = (uint32_t)tc->used + t->lk[k].patch;
    l->stub = (uint32_t)tc->used + (uint32_t)e->labels[t->lk[k].stub];
    l->warm = t->lk[k].warm;
    l->kset = t->lk[k].kset;
    l->fbytes = t->lk[k].fbytes;
    l->flen = t->lk[k].flen;
    l->head = t->lk[k].head >= 0
                  ? (uint32_t)tc->used + (uint32_t)e->labels[t->lk[k].head]
                  : 0;
  }
}

/* Forget an emission of the fragment (its descriptors and links too), to
   emit it again. */
static void restart_emission(struct tx *t, uint32_t ndescs, uint32_t nlinks,
                             size_t room) {
  struct bt_tc *tc = &t->b->tc;
  tc->ndescs = ndescs;
  tc->nlinks = nlinks;
  t->ndfix = 0;
  t->nlk = 0;
  t->borrowed = 0;
  t->park = -1;
  e_init(&t->e, tc->rw + tc->used, bt_tc_addr(tc, (uint32_t)tc->used), room);
}

static struct bt_frag *translate_once(struct bt_vcpu *b, uint64_t pc,
                                      int *retry) {
  struct tx *t = calloc(1, sizeof(*t));
  *retry = 0;
  if (t == NULL) {
    bt_internal_error(b, VMM_INTERNAL_UNKNOWN, "out of memory translating");
    return NULL;
  }
  t->b = b;
  t->code64 = (b->key & BT_K_CODE_MASK) == BT_K_CODE64;
  t->flat = (b->key & BT_K_FLAT) != 0;
  t->sbytes = t->code64 ? 8 : 4;
  unsigned max = (b->key & BT_K_SINGLE) ? 1 : TU_MAX;

  /* Decode. */
  uint64_t rip = b->ctx.rip;
  for (unsigned i = 0; i < max; i++) {
    struct xi *x = &t->x[i];
    int r = fetch_insn(t, i, rip);
    if (r < 0) {
      free(t);
      return NULL;
    }
    if (r > 0)
      break;
    t->n = i + 1;
    if (x->di.mnemonic != ZYDIS_MNEMONIC_INVALID) {
      x->memop = bt_find_memop(&x->di, x->op);
      scan_regs(x);
      x->cls = classify(t, x);
      /* The glue loads them at the next entry, or as the callout that
         may be running returns. */
      if (names_xmm(x))
        b->ctx.xmm_on = 1;
    }
    rip = x->next;
    if (ends_tu(x->cls))
      break;
    /* A hardware breakpoint on the next instruction ends the TU before it. */
    if (b->dbg_on && (b->dbg.flags & VMM_DEBUG_HW_BREAKPOINTS)) {
      uint64_t npc = b->ctx.segbase[S_CS] + x->next;
      bool bp = false;
      for (uint32_t k = 0; k < b->dbg.nr_breakpoints; k++)
        bp |= b->dbg.breakpoints[k] == npc;
      if (bp)
        break;
    }
  }

  struct bt_tc *tc = &b->tc;
  struct bt_frag *f = bt_frag_alloc(b);
  size_t room = tc->size - tc->used;
  if (f == NULL || room < 4096 || tc->nlinks + 8 > tc->max_links ||
      tc->ndescs + 3 * TU_MAX > tc->max_descs) {
    free(t);
    *retry = 1;
    return NULL;
  }
  t->f = f;
  t->park = -1;
  if (room > FRAG_MAX_BYTES)
    room = FRAG_MAX_BYTES;
  e_init(&t->e, tc->rw + tc->used, bt_tc_addr(tc, (uint32_t)tc->used), room);
  struct emit *e = &t->e;

  /* Mark the code bytes as translated (SMC detection). */
  for (unsigned i = 0; i < t->n; i++) {
    struct xi *x = &t->x[i];
    unsigned len = x->di.length;
    unsigned in1 = 4096 - (unsigned)(x->gpa & 0xfff);
    if (in1 > len)
      in1 = len;
    bt_code_mark(b, x->gpa, in1);
    if (x->page2 && len > in1)
      bt_code_mark(b, x->gpa2, len - in1);
  }
  /* A write that raced with the decode (see bt_code_recheck). */
  for (unsigned i = 0; i < t->n; i++) {
    struct xi *x = &t->x[i];
    unsigned len = x->di.length;
    unsigned in1 = 4096 - (unsigned)(x->gpa & 0xfff);
    if (in1 > len)
      in1 = len;
    bt_code_recheck(b, x->gpa, x->bytes, in1);
    if (x->page2 && len > in1)
      bt_code_recheck(b, x->gpa2, x->bytes + in1, len - in1);
  }

  /* A self loop keeps the scratch registers no instruction of it names
     borrowed around its back edge (a store and a load fewer per register
     and iteration): a first, dry emission finds them. Not in counting
     mode, whose budget check at the entry the back edge would skip. */
  bool self = false;
  if (!(b->key & (BT_K_COUNT | BT_K_SINGLE)) && t->n > 0) {
    struct xi *x = &t->x[t->n - 1];
    self = (x->cls == X_JCC || x->cls == X_JMP) &&
           branch_target(t, x) == t->x[0].rip;
  }
  t->head = -1;
  /* Not in counting mode (the budget check is the entry) nor
     single-instruction mode (each exit goes to the dispatcher anyway). */
  t->warm = !(b->key & (BT_K_COUNT | BT_K_SINGLE));
  t->rkeep = 0;
  t->rg_n = 0;
  if (t->warm && !self)
    find_region(t);
  if (t->rkeep) {
    unsigned cut = region_cut(t);
    if (cut < t->n)
      t->n = cut;
  }
  plan_lookups(t, self);
  uint32_t named = 0;
  for (unsigned i = 0; i < t->n; i++)
    named |= t->x[i].used;
  bool lookups = false;
  for (unsigned i = 0; i < t->n; i++)
    switch (t->x[i].cls) {
    case X_MEM:
    case X_PUSH:
    case X_POP:
    case X_LEAVE:
    case X_CALL:
    case X_CALLI:
    case X_RET:
    case X_JMPI: lookups = true; break;
    default: break;
    }
  if (t->rkeep) {
    /* The region is a function of its bytes, most of which no fragment
       covers (the look-ahead read them): a write to any of them must drop
       every fragment of the loop together (they all start in this page),
       as a write to translated bytes does, or the fragments translated
       after it find another set than the ones before, and the links
       between them are refused for as long as both live
       (test_region_smc). A write racing with this translation can still
       cost links, never registers (tc.c links matching sets only). */
    bt_code_mark(b, (t->x[0].gpa & ~0xfffull) + t->rg_lo,
                 t->rg_hi - t->rg_lo);
  }
  t->keep_std = t->warm && lookups && !(named & STD_KEPT) && !t->rkeep;
  if (self) {
    uint32_t ndescs = tc->ndescs;
    uint8_t *dry = malloc(room);
    if (dry != NULL) {
      e_init(e, dry, bt_tc_addr(tc, (uint32_t)tc->used), room);
      t->keep = 0;
      emit_body(t, (unsigned)(f - tc->frags));
      if (!e->fail)
        t->keep = (uint16_t)(t->ever & ~named);
      free(dry);
    }
    restart_emission(t, ndescs, tc->nlinks, room);
  }
  uint32_t ndescs = tc->ndescs, nlinks = tc->nlinks;
  for (unsigned pass = 0;; pass++) {
    emit_body(t, (unsigned)(f - tc->frags));
    emit_stubs(t, pc);
    /* A `loop` out of range: again, with that lookup in the jrcxz form
       (distances only shrink; the third time with none). */
    if (e->fail || near_fits(t))
      break;
    if (pass == 1)
      t->far = ~0ull;
    restart_emission(t, ndescs, nlinks, room);
  }
  if (!e_finish(e)) {
    free(t);
    *retry = 1;
    return NULL;
  }
  b->slot_next += t->nslot; /* the next TU's lookups take the next slots */
  /* Point every patchable jump at its stub. */
  for (unsigned k = 0; k < t->nlk; k++)
    e_set_rel32(e->buf + t->lk[k].patch, e->base + t->lk[k].patch,
                e_label_addr(e, t->lk[k].stub));
  for (unsigned k = 0; k < t->ndfix; k++) {
    struct bt_desc *d = t->dfix[k].d;
    d->retry = t->dfix[k].retry >= 0 ? e_label_addr(e, t->dfix[k].retry) : 0;
    d->after = t->dfix[k].after >= 0 ? e_label_addr(e, t->dfix[k].after) : 0;
    d->bounce = t->dfix[k].bounce >= 0 ? e_label_addr(e, t->dfix[k].bounce) : 0;
  }

  f->pc = pc;
  f->rip = b->ctx.rip;
  f->cs_base = b->ctx.segbase[S_CS];
  f->key = b->key;
  f->start = (uint32_t)tc->used;
  f->entry = f->start + t->entry;
  f->warm = f->start + t->warm_at;
  if (!t->warm)
    f->warm = f->entry;
  f->kset = t->rkeep;
  f->kwarm = t->rkeep ? f->start + t->kwarm_at : 0;
  f->flen = t->fm ? t->plen : 0;
  f->fbytes = t->pbytes;
  f->kflags = f->flen ? f->start + t->kflags_at : 0;
  f->size = (uint32_t)e->pos;
  f->ninsn = (uint16_t)t->n;
  f->phys[0] = t->x[0].gpa & ~0xfffull;
  f->phys[1] = ~0ull;
  f->lin[0] = pc & ~0xfffull;
  for (unsigned i = 0; i < t->n; i++) {
    struct xi *x = &t->x[i];
    uint64_t lastpc = lin_of(t, x->rip + x->di.length - 1);
    uint64_t pg = x->page2 ? (x->gpa2 & ~0xfffull) : (x->gpa & ~0xfffull);
    if (pg != f->phys[0]) {
      f->phys[1] = pg;
      f->lin[1] = lastpc & ~0xfffull;
    }
  }
  tc->used = (tc->used + e->pos + 63) & ~(size_t)63;
  bt_frag_insert(b, f);
  free(t);
  return f;
}

struct bt_frag *bt_translate_tu(struct bt_vcpu *b, uint64_t pc) {
  int retry;
  struct bt_frag *f = translate_once(b, pc, &retry);
  if (f == NULL && retry) {
    bt_tc_flush(b);
    f = translate_once(b, pc, &retry);
    if (f == NULL && retry)
      bt_internal_error(b, VMM_INTERNAL_UNKNOWN,
                        "cannot translate the code at 0x%llx",
                        (unsigned long long)pc);
  }
  return f;
}
