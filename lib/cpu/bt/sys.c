/*
 * System architecture for the BT engine: segment loads and descriptor
 * checks, exception and interrupt delivery (real-mode IVT, 32-bit and
 * 64-bit IDT gates, privilege and stack switches through the TSS, IST,
 * double and triple faults), far transfers, IRET, control registers and
 * MSRs. Everything here runs in C on the context's guest state with the
 * state precise (docs/bt.md, "Exceptions, interrupts, precise state").
 */
#include <string.h>
#include <x86intrin.h>

#include "bt.h"

#define SEL_TI 4u
#define SEL_RPL 3u

uint64_t bt_cs_base(const struct bt_vcpu *b) {
  return b->ctx.segbase[S_CS];
}

static bool lma(const struct bt_vcpu *b) {
  return (b->efer & X86_EFER_LMA) != 0;
}
static bool code64(const struct bt_vcpu *b) {
  return (b->key & BT_K_CODE_MASK) == BT_K_CODE64;
}
static bool pmode(const struct bt_vcpu *b) {
  return (b->cr0 & X86_CR0_PE) != 0;
}

unsigned bt_addr_bits(const struct bt_vcpu *b) {
  switch (b->key & BT_K_CODE_MASK) {
  case BT_K_CODE64: return 64;
  case BT_K_CODE32: return 32;
  default: return 16;
  }
}

/* ------------------------------------------------------------------------ */
/* Descriptors                                                              */

static void desc_to_seg(uint64_t d, uint16_t sel, struct vmm_segment *s) {
  memset(s, 0, sizeof(*s));
  s->selector = sel;
  s->base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
  uint32_t limit = (uint32_t)((d & 0xffff) | (((d >> 48) & 0xf) << 16));
  s->g = (d >> 55) & 1;
  s->limit = s->g ? (limit << 12) | 0xfff : limit;
  s->type = (d >> 40) & 0xf;
  s->s = (d >> 44) & 1;
  s->dpl = (d >> 45) & 3;
  s->present = (d >> 47) & 1;
  s->avl = (d >> 52) & 1;
  s->l = (d >> 53) & 1;
  s->db = (d >> 54) & 1;
}

/*
 * Read the descriptor for sel (8 bytes, or 16 for system descriptors in
 * long mode when wide). Returns 0, 1 if sel is beyond the table's limit,
 * or BT_FAULT (a page fault was raised reading the table).
 */
static int read_desc(struct bt_vcpu *b, uint16_t sel, uint64_t d[2], bool wide,
                     uint64_t *addr) {
  uint64_t base;
  uint32_t limit;
  if (sel & SEL_TI) {
    if (b->ldt.unusable || !b->ldt.present)
      return 1;
    base = b->ldt.base;
    limit = b->ldt.limit;
  } else {
    base = b->gdt.base;
    limit = b->gdt.limit;
  }
  uint32_t off = sel & ~7u;
  if (off + (wide ? 15u : 7u) > limit)
    return 1;
  *addr = base + off;
  if (!lma(b))
    *addr = (uint32_t)*addr;
  int err = bt_read(b, *addr, d, wide ? 16 : 8, true);
  return err < 0 ? err : 0;
}

/* Set the accessed bit in a descriptor in memory, as the processor does. */
static int set_accessed(struct bt_vcpu *b, uint64_t addr, uint64_t d) {
  if (d & (1ull << 40))
    return 0;
  uint8_t byte = (uint8_t)((d >> 40) | 1);
  return bt_write(b, addr + 5, &byte, 1, true);
}

void bt_seg_changed(struct bt_vcpu *b) {
  bt_update_mode(b);
}

/* Load a data or stack segment register (mov/pop/lds...). */
int bt_load_seg(struct bt_vcpu *b, int sreg, uint16_t sel) {
  struct vmm_segment *s = &b->seg[sreg];
  if (!pmode(b)) {
    /* Real mode changes the selector and base only: the cached limit and
       attributes stay, as on hardware ("unreal mode" relies on it). */
    s->selector = sel;
    s->base = (uint64_t)sel << 4;
    s->present = 1;
    s->unusable = 0;
    bt_seg_changed(b);
    return 0;
  }
  unsigned rpl = sel & SEL_RPL;
  if ((sel & ~SEL_RPL) == 0) {
    if (sreg == S_SS && !(code64(b) && b->cpl != 3 && rpl == b->cpl))
      return bt_raise(b, X86_EXC_GP, true, 0);
    memset(s, 0, sizeof(*s));
    s->selector = sel;
    s->unusable = 1;
    if (sreg == S_SS)
      s->dpl = (uint8_t)b->cpl;
    bt_seg_changed(b);
    return 0;
  }
  uint64_t d[2], addr;
  int r = read_desc(b, sel, d, false, &addr);
  if (r < 0)
    return r;
  if (r > 0)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  struct vmm_segment n;
  desc_to_seg(d[0], sel, &n);
  bool code = n.type & 8;
  if (!n.s)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  if (sreg == S_SS) {
    if (rpl != b->cpl || n.dpl != b->cpl || code || !(n.type & 2))
      return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
    if (!n.present)
      return bt_raise(b, X86_EXC_SS, true, sel & ~3u);
  } else {
    if (code && !(n.type & 2))
      return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
    bool conforming = code && (n.type & 4);
    if (!conforming && (n.dpl < b->cpl || n.dpl < rpl))
      return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
    if (!n.present)
      return bt_raise(b, X86_EXC_NP, true, sel & ~3u);
  }
  if ((r = set_accessed(b, addr, d[0])) < 0)
    return r;
  n.type |= 1;
  *s = n;
  bt_seg_changed(b);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Stack helpers for delivery (explicit SS state)                           */

struct stk {
  uint64_t base;
  uint64_t sp;
  unsigned bits; /* 16, 32, 64 */
};

static int stk_push(struct bt_vcpu *b, struct stk *st, uint64_t v,
                    unsigned size, bool sys) {
  uint64_t sp = st->sp - size;
  if (st->bits == 16)
    sp = (st->sp & ~0xffffull) | ((st->sp - size) & 0xffff);
  else if (st->bits == 32)
    sp = (uint32_t)(st->sp - size);
  uint64_t off = st->bits == 16 ? (sp & 0xffff) : sp;
  uint64_t lin = st->base + off;
  if (st->bits != 64)
    lin = (uint32_t)lin;
  int err = bt_write(b, lin, &v, size, sys);
  if (err < 0)
    return err;
  st->sp = sp;
  return 0;
}

static int stk_pop(struct bt_vcpu *b, struct stk *st, uint64_t *v,
                   unsigned size) {
  uint64_t off = st->bits == 16   ? (st->sp & 0xffff)
                 : st->bits == 32 ? (uint32_t)st->sp
                                  : st->sp;
  uint64_t lin = st->base + off;
  if (st->bits != 64)
    lin = (uint32_t)lin;
  *v = 0;
  int err = bt_read(b, lin, v, size, false);
  if (err < 0)
    return err;
  if (st->bits == 16)
    st->sp = (st->sp & ~0xffffull) | ((st->sp + size) & 0xffff);
  else if (st->bits == 32)
    st->sp = (uint32_t)(st->sp + size);
  else
    st->sp += size;
  return 0;
}

static struct stk cur_stack(struct bt_vcpu *b) {
  struct stk st;
  st.base = code64(b) ? 0 : b->seg[S_SS].base;
  st.sp = b->ctx.gpr[R_SP];
  st.bits = code64(b) ? 64 : b->seg[S_SS].db ? 32 : 16;
  return st;
}

/* ------------------------------------------------------------------------ */
/* Exceptions and interrupts                                                */

/* A failed delivery step: the nested exception to raise. */
struct nested {
  int vec; /* -1: none */
  bool has_err;
  uint32_t err;
};

#define NEST(v, e) ((struct nested){.vec = (v), .has_err = true, .err = (e)})
#define NEST_NONE ((struct nested){.vec = -1})

static bool is_contributory(int v) {
  return v == X86_EXC_DE || v == X86_EXC_TS || v == X86_EXC_NP ||
         v == X86_EXC_SS || v == X86_EXC_GP;
}

/*
 * During delivery (b->delivering), memory accesses and checks do not
 * deliver their own faults: bt_raise records them in b->nest and
 * bt_deliver combines them with the event being delivered (double fault
 * rules). fault_nested() turns a failed access into that record.
 */
static struct nested fault_nested(struct bt_vcpu *b, int err) {
  if (err == BT_EXIT)
    return NEST(-2, 0);
  return (struct nested){
      .vec = b->nest_vec, .has_err = b->nest_has_err, .err = b->nest_err};
}

static void nest_record(struct bt_vcpu *b, int vec, bool has_err,
                        uint32_t err) {
  b->nest_vec = vec;
  b->nest_has_err = has_err;
  b->nest_err = err;
}

static uint32_t ext_bit(int type) {
  return (type == BT_EV_EXT || type == BT_EV_EXC || type == BT_EV_NMI) ? 1 : 0;
}

static struct nested deliver_real(struct bt_vcpu *b, unsigned vec,
                                  uint64_t ret_rip) {
  uint32_t ent;
  if (vec * 4 + 3 > b->idt.limit)
    return NEST(X86_EXC_GP, vec * 8 + 2);
  int err = bt_read(b, b->idt.base + vec * 4, &ent, 4, true);
  if (err < 0)
    return fault_nested(b, err);
  struct stk st = cur_stack(b);
  uint64_t fl = bt_get_rflags(b);
  if ((err = stk_push(b, &st, fl, 2, true)) < 0 ||
      (err = stk_push(b, &st, b->seg[S_CS].selector, 2, true)) < 0 ||
      (err = stk_push(b, &st, ret_rip, 2, true)) < 0)
    return fault_nested(b, err);
  b->ctx.gpr[R_SP] = st.sp;
  b->vflags &= ~(X86_RFLAGS_IF | X86_RFLAGS_TF | X86_RFLAGS_AC | X86_RFLAGS_RF);
  struct vmm_segment *cs = &b->seg[S_CS];
  cs->selector = (uint16_t)(ent >> 16);
  cs->base = (uint64_t)(ent >> 16) << 4;
  b->ctx.rip = ent & 0xffff;
  bt_update_mode(b);
  return NEST_NONE;
}

/* Load CS for an interrupt/far transfer target: returns the segment or a
   nested fault. */
static struct nested load_code_desc(struct bt_vcpu *b, uint16_t sel,
                                    uint32_t ext, struct vmm_segment *out,
                                    uint64_t *addr, uint64_t *raw) {
  if ((sel & ~3u) == 0)
    return NEST(X86_EXC_GP, ext);
  uint64_t d[2];
  int r = read_desc(b, sel, d, false, addr);
  if (r < 0)
    return fault_nested(b, r);
  if (r > 0)
    return NEST(X86_EXC_GP, (sel & ~3u) | ext);
  desc_to_seg(d[0], sel, out);
  *raw = d[0];
  if (!out->s || !(out->type & 8))
    return NEST(X86_EXC_GP, (sel & ~3u) | ext);
  if (!out->present)
    return NEST(X86_EXC_NP, (sel & ~3u) | ext);
  return NEST_NONE;
}

static struct nested deliver_prot(struct bt_vcpu *b, unsigned vec, int type,
                                  bool has_err, uint32_t errc,
                                  uint64_t ret_rip) {
  bool lm = lma(b);
  unsigned gsz = lm ? 16 : 8;
  uint32_t ext = ext_bit(type);
  uint32_t idt_err = vec * 8 + 2 + ext;
  if (vec * gsz + gsz - 1 > b->idt.limit)
    return NEST(X86_EXC_GP, idt_err);
  uint64_t g[2] = {0, 0};
  uint64_t gaddr = b->idt.base + vec * gsz;
  if (!lm)
    gaddr = (uint32_t)gaddr;
  int err = bt_read(b, gaddr, g, gsz, true);
  if (err < 0)
    return fault_nested(b, err);
  unsigned gtype = (g[0] >> 40) & 0x1f;
  unsigned gdpl = (g[0] >> 45) & 3;
  bool gp = (g[0] >> 47) & 1;
  bool trap, g32 = true;
  if (lm) {
    if (gtype != 0xe && gtype != 0xf)
      return NEST(X86_EXC_GP, idt_err);
    trap = gtype == 0xf;
  } else {
    switch (gtype) {
    case 0x6:
      trap = false;
      g32 = false;
      break;
    case 0x7:
      trap = true;
      g32 = false;
      break;
    case 0xe: trap = false; break;
    case 0xf: trap = true; break;
    default:
      /* Task gates (0x5) are not implemented: treated as invalid. */
      return NEST(X86_EXC_GP, idt_err);
    }
  }
  if ((type == BT_EV_SOFT || type == BT_EV_SOFTX) && gdpl < b->cpl)
    return NEST(X86_EXC_GP, vec * 8 + 2);
  if (!gp)
    return NEST(X86_EXC_NP, idt_err);
  uint16_t sel = (uint16_t)(g[0] >> 16);
  uint64_t off = (g[0] & 0xffff) | ((g[0] >> 32) & 0xffff0000ull);
  if (lm)
    off |= g[1] << 32;
  else if (!g32)
    off &= 0xffff;
  unsigned ist = lm ? (g[0] >> 32) & 7 : 0;

  struct vmm_segment cs;
  uint64_t csaddr, csraw;
  struct nested n = load_code_desc(b, sel, ext, &cs, &csaddr, &csraw);
  if (n.vec != -1)
    return n;
  if (cs.dpl > b->cpl)
    return NEST(X86_EXC_GP, (sel & ~3u) | ext);
  if (lm && (!cs.l || cs.db))
    return NEST(X86_EXC_GP, (sel & ~3u) | ext);
  bool conforming = cs.type & 4;
  unsigned new_cpl = conforming ? b->cpl : cs.dpl;

  uint64_t old_rflags = bt_get_rflags(b);
  uint64_t old_ss = b->seg[S_SS].selector, old_sp = b->ctx.gpr[R_SP];
  struct vmm_segment new_ss = b->seg[S_SS];
  struct stk st;
  bool switch_stack = new_cpl < b->cpl;

  if (lm) {
    if (switch_stack || ist) {
      uint64_t rsp;
      uint64_t toff = ist ? 36 + 8 * (ist - 1) : 4 + 8 * new_cpl;
      if (toff + 7 > b->tr.limit)
        return NEST(X86_EXC_TS, (b->tr.selector & ~3u) | ext);
      if ((err = bt_read(b, b->tr.base + toff, &rsp, 8, true)) < 0)
        return fault_nested(b, err);
      st.sp = rsp;
    } else {
      st.sp = b->ctx.gpr[R_SP];
    }
    st.sp &= ~15ull;
    st.base = 0;
    st.bits = 64;
    if (switch_stack) {
      memset(&new_ss, 0, sizeof(new_ss));
      new_ss.selector = (uint16_t)new_cpl;
      new_ss.unusable = 1;
      new_ss.dpl = (uint8_t)new_cpl;
    }
  } else if (switch_stack) {
    /* 32-bit TSS: esp at 4 + 8*cpl, ss at 8 + 8*cpl. */
    uint32_t toff = 4 + 8 * new_cpl;
    if (toff + 5 > b->tr.limit)
      return NEST(X86_EXC_TS, (b->tr.selector & ~3u) | ext);
    uint32_t esp;
    uint16_t ssel;
    if ((err = bt_read(b, (uint32_t)(b->tr.base + toff), &esp, 4, true)) < 0 ||
        (err = bt_read(b, (uint32_t)(b->tr.base + toff + 4), &ssel, 2, true)) <
            0)
      return fault_nested(b, err);
    if ((ssel & ~3u) == 0)
      return NEST(X86_EXC_TS, ext);
    uint64_t d[2], saddr;
    int r = read_desc(b, ssel, d, false, &saddr);
    if (r < 0)
      return fault_nested(b, r);
    if (r > 0)
      return NEST(X86_EXC_TS, (ssel & ~3u) | ext);
    desc_to_seg(d[0], ssel, &new_ss);
    if ((ssel & 3) != new_cpl || new_ss.dpl != new_cpl || !new_ss.s ||
        (new_ss.type & 8) || !(new_ss.type & 2))
      return NEST(X86_EXC_TS, (ssel & ~3u) | ext);
    if (!new_ss.present)
      return NEST(X86_EXC_SS, (ssel & ~3u) | ext);
    if ((err = set_accessed(b, saddr, d[0])) < 0)
      return fault_nested(b, err);
    new_ss.type |= 1;
    st.base = new_ss.base;
    st.sp = esp;
    st.bits = new_ss.db ? 32 : 16;
  } else {
    st = cur_stack(b);
  }

  unsigned ps = lm ? 8 : g32 ? 4 : 2;
  bool sys = true;
  if (lm || switch_stack) {
    if ((err = stk_push(b, &st, old_ss, ps, sys)) < 0 ||
        (err = stk_push(b, &st, old_sp, ps, sys)) < 0)
      return fault_nested(b, err);
  }
  if ((err = stk_push(b, &st, old_rflags, ps, sys)) < 0 ||
      (err = stk_push(b, &st, b->seg[S_CS].selector, ps, sys)) < 0 ||
      (err = stk_push(b, &st, ret_rip, ps, sys)) < 0)
    return fault_nested(b, err);
  if (has_err && (err = stk_push(b, &st, errc, ps, sys)) < 0)
    return fault_nested(b, err);
  if ((err = set_accessed(b, csaddr, csraw)) < 0)
    return fault_nested(b, err);

  /* Commit. */
  cs.type |= 1;
  cs.selector = (uint16_t)((sel & ~3u) | new_cpl);
  b->seg[S_CS] = cs;
  if (switch_stack) {
    b->seg[S_SS] = new_ss;
  }
  b->ctx.gpr[R_SP] = st.sp;
  b->cpl = new_cpl;
  b->ctx.rip = off;
  b->vflags &= ~(X86_RFLAGS_TF | X86_RFLAGS_NT | X86_RFLAGS_RF | X86_RFLAGS_VM);
  if (!trap)
    b->vflags &= ~X86_RFLAGS_IF;
  bt_update_mode(b);
  return NEST_NONE;
}

static struct nested deliver_once(struct bt_vcpu *b, unsigned vec, int type,
                                  bool has_err, uint32_t err,
                                  uint64_t ret_rip) {
  if (!pmode(b))
    return deliver_real(b, vec, ret_rip);
  return deliver_prot(b, vec, type, has_err, err, ret_rip);
}

static void shutdown(struct bt_vcpu *b) {
  memset(&b->vcpu->exit, 0, sizeof(b->vcpu->exit));
  b->vcpu->exit.reason = VMM_EXIT_SHUTDOWN;
  b->exit_ready = true;
}

static bool exit_instead(struct bt_vcpu *b, unsigned vec, bool has_err,
                         uint32_t err, uint64_t cr2) {
  if (vec >= 32 || !(b->exc_mask & (1u << vec)))
    return false;
  struct vmm_exit *e = &b->vcpu->exit;
  memset(e, 0, sizeof(*e));
  e->reason = VMM_EXIT_FAULT;
  e->fault.vector = (uint8_t)vec;
  e->fault.has_error_code = has_err;
  e->fault.error_code = err;
  e->fault.cr2 = cr2;
  b->exit_ready = true;
  return true;
}

int bt_deliver(struct bt_vcpu *b, unsigned vec, int type, bool has_err,
               uint32_t err, uint64_t ret_rip) {
  b->nevents++;
  int first = -1;
  if (type == BT_EV_EXC || type == BT_EV_SOFTX)
    first = (int)vec;
  /* Registers are restored if delivery fails part-way. */
  uint64_t save_sp = b->ctx.gpr[R_SP];
  for (int round = 0; round < 3; round++) {
    b->delivering++;
    nest_record(b, -1, false, 0);
    struct nested n = deliver_once(b, vec, type, has_err, err, ret_rip);
    b->delivering--;
    if (n.vec == -1) {
      b->halted = false;
      return type == BT_EV_EXC ? BT_FAULT : 0;
    }
    b->ctx.gpr[R_SP] = save_sp;
    if (n.vec == -2) /* delivery hit MMIO: cannot continue */
      return BT_EXIT;
    if (vec == X86_EXC_DF && type == BT_EV_EXC) {
      shutdown(b);
      return BT_FAULT;
    }
    bool df = false;
    if (first >= 0) {
      bool f_contrib = is_contributory(first),
           n_contrib = is_contributory(n.vec);
      if ((f_contrib && n_contrib) ||
          (first == X86_EXC_PF && (n_contrib || n.vec == X86_EXC_PF)))
        df = true;
    }
    if (exit_instead(b, df ? X86_EXC_DF : (unsigned)n.vec, true, df ? 0 : n.err,
                     b->cr2))
      return BT_FAULT;
    if (df) {
      vec = X86_EXC_DF;
      has_err = true;
      err = 0;
    } else {
      vec = (unsigned)n.vec;
      has_err = n.has_err;
      err = n.err;
    }
    first = (int)vec;
    type = BT_EV_EXC;
    ret_rip = b->ctx.rip;
  }
  shutdown(b);
  return BT_FAULT;
}

static bool has_error_code(unsigned vec) {
  return vec == X86_EXC_DF || vec == X86_EXC_TS || vec == X86_EXC_NP ||
         vec == X86_EXC_SS || vec == X86_EXC_GP || vec == X86_EXC_PF ||
         vec == X86_EXC_AC;
}

int bt_raise(struct bt_vcpu *b, unsigned vec, bool has_err, uint32_t err) {
  b->nevents++;
  if (!pmode(b))
    has_err = false;
  else if (!has_error_code(vec))
    has_err = false;
  if (b->delivering) {
    /* Inside a delivery: record, let bt_deliver combine. */
    nest_record(b, (int)vec, has_err, err);
    return BT_FAULT;
  }
  if (exit_instead(b, vec, has_err, err, vec == X86_EXC_PF ? b->cr2 : 0))
    return BT_FAULT;
  /* Faults push RFLAGS with RF set so the instruction can restart; KVM
     sets it in the register when it queues one, and so do we (it stays
     set if delivery ends in a triple fault). */
  if (vec != X86_EXC_DB && vec != X86_EXC_BP && vec != X86_EXC_OF &&
      vec != X86_EXC_DF && vec != X86_EXC_MC)
    b->vflags |= X86_RFLAGS_RF;
  bt_deliver(b, vec, BT_EV_EXC, has_err, err, b->ctx.rip);
  return BT_FAULT;
}

int bt_raise_pf(struct bt_vcpu *b, uint64_t lin, uint32_t err) {
  if (b->delivering) {
    b->cr2 = lin;
    nest_record(b, X86_EXC_PF, true, err);
    return BT_FAULT;
  }
  if (exit_instead(b, X86_EXC_PF, true, err, lin))
    return BT_FAULT;
  b->cr2 = lin;
  return bt_raise(b, X86_EXC_PF, true, err);
}

/* ------------------------------------------------------------------------ */
/* Far transfers                                                            */

int bt_far_transfer(struct bt_vcpu *b, uint16_t sel, uint64_t off, int kind,
                    unsigned osize, uint64_t next_rip) {
  struct stk st = cur_stack(b);
  if (!pmode(b)) {
    if (kind == BT_FAR_CALL) {
      int err;
      if ((err = stk_push(b, &st, b->seg[S_CS].selector, osize, false)) < 0 ||
          (err = stk_push(b, &st, next_rip, osize, false)) < 0)
        return err;
      b->ctx.gpr[R_SP] = st.sp;
    }
    struct vmm_segment *cs = &b->seg[S_CS];
    cs->selector = sel;
    cs->base = (uint64_t)sel << 4;
    b->ctx.rip = osize == 2 ? (off & 0xffff) : (uint32_t)off;
    bt_update_mode(b);
    return 0;
  }
  struct vmm_segment cs;
  uint64_t addr, raw;
  struct nested n = load_code_desc(b, sel, 0, &cs, &addr, &raw);
  if (n.vec == -2)
    return BT_EXIT;
  if (n.vec >= 0)
    return bt_raise(b, (unsigned)n.vec, true, n.err);
  unsigned rpl = sel & 3;
  bool conforming = cs.type & 4;
  if (conforming ? cs.dpl > b->cpl : (rpl > b->cpl || cs.dpl != b->cpl)) {
    /* Call gates and privilege changes through far jumps/calls are not
       implemented; such transfers fault as if the target were invalid. */
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  }
  if (lma(b) && cs.l && cs.db)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  uint64_t limit_off = off;
  if (!(lma(b) && cs.l) && limit_off > cs.limit)
    return bt_raise(b, X86_EXC_GP, true, 0);
  if (kind == BT_FAR_CALL) {
    int err;
    if ((err = stk_push(b, &st, b->seg[S_CS].selector, osize, false)) < 0 ||
        (err = stk_push(b, &st, next_rip, osize, false)) < 0)
      return err;
    b->ctx.gpr[R_SP] = st.sp;
  }
  int err = set_accessed(b, addr, raw);
  if (err < 0)
    return err;
  cs.type |= 1;
  cs.selector = (uint16_t)((sel & ~3u) | b->cpl);
  b->seg[S_CS] = cs;
  b->ctx.rip =
      (lma(b) && cs.l) ? off : (osize == 2 ? off & 0xffff : (uint32_t)off);
  bt_update_mode(b);
  return 0;
}

/* Return to an outer or the same privilege level (RETF / IRET tails). */
static int load_return_cs(struct bt_vcpu *b, uint16_t sel,
                          struct vmm_segment *cs, uint64_t *addr,
                          uint64_t *raw) {
  struct nested n = load_code_desc(b, sel, 0, cs, addr, raw);
  if (n.vec == -2)
    return BT_EXIT;
  if (n.vec >= 0)
    return bt_raise(b, (unsigned)n.vec, true, n.err);
  unsigned rpl = sel & 3;
  if (rpl < b->cpl)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  bool conforming = cs->type & 4;
  if (conforming ? cs->dpl > rpl : cs->dpl != rpl)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  return 0;
}

static int load_return_ss(struct bt_vcpu *b, uint16_t sel, unsigned rpl,
                          bool cs64, struct vmm_segment *ss) {
  if ((sel & ~3u) == 0) {
    if (!(cs64 && rpl != 3))
      return bt_raise(b, X86_EXC_GP, true, 0);
    memset(ss, 0, sizeof(*ss));
    ss->selector = sel;
    ss->unusable = 1;
    ss->dpl = (uint8_t)rpl;
    return 0;
  }
  uint64_t d[2], addr;
  int r = read_desc(b, sel, d, false, &addr);
  if (r < 0)
    return r;
  if (r > 0)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  desc_to_seg(d[0], sel, ss);
  if ((sel & 3) != rpl || ss->dpl != rpl || !ss->s || (ss->type & 8) ||
      !(ss->type & 2))
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  if (!ss->present)
    return bt_raise(b, X86_EXC_SS, true, sel & ~3u);
  if ((r = set_accessed(b, addr, d[0])) < 0)
    return r;
  ss->type |= 1;
  return 0;
}

/* After a return to an outer level, data segments the new CPL may not use
   become null. */
static void scrub_segs(struct bt_vcpu *b) {
  static const int segs[] = {S_ES, S_DS, S_FS, S_GS};
  for (int i = 0; i < 4; i++) {
    struct vmm_segment *s = &b->seg[segs[i]];
    bool code_conf = (s->type & 8) && (s->type & 4);
    if (!s->unusable && !code_conf && s->dpl < b->cpl) {
      memset(s, 0, sizeof(*s));
      s->unusable = 1;
    }
  }
}

int bt_far_ret(struct bt_vcpu *b, unsigned osize, uint16_t imm) {
  struct stk st = cur_stack(b);
  uint64_t ip, sel;
  int err;
  if ((err = stk_pop(b, &st, &ip, osize)) < 0 ||
      (err = stk_pop(b, &st, &sel, osize)) < 0)
    return err;
  if (!pmode(b)) {
    st.sp = st.bits == 16 ? ((st.sp & ~0xffffull) | ((st.sp + imm) & 0xffff))
                          : st.sp + imm;
    b->ctx.gpr[R_SP] = st.sp;
    struct vmm_segment *cs = &b->seg[S_CS];
    cs->selector = (uint16_t)sel;
    cs->base = (sel & 0xffff) << 4;
    b->ctx.rip = ip & (osize == 2 ? 0xffff : 0xffffffff);
    bt_update_mode(b);
    return 0;
  }
  struct vmm_segment cs;
  uint64_t addr, raw;
  if ((err = load_return_cs(b, (uint16_t)sel, &cs, &addr, &raw)) < 0)
    return err;
  unsigned rpl = sel & 3;
  bool cs64 = lma(b) && cs.l;
  st.sp += imm;
  if (st.bits == 32)
    st.sp = (uint32_t)st.sp;
  struct vmm_segment ss = b->seg[S_SS];
  uint64_t nsp = st.sp;
  if (rpl > b->cpl) {
    uint64_t ssel;
    if ((err = stk_pop(b, &st, &nsp, osize)) < 0 ||
        (err = stk_pop(b, &st, &ssel, osize)) < 0)
      return err;
    if ((err = load_return_ss(b, (uint16_t)ssel, rpl, cs64, &ss)) < 0)
      return err;
    nsp += imm;
  }
  if ((err = set_accessed(b, addr, raw)) < 0)
    return err;
  cs.type |= 1;
  b->seg[S_CS] = cs;
  b->seg[S_SS] = ss;
  b->ctx.gpr[R_SP] =
      ss.db || cs64 ? nsp : (b->ctx.gpr[R_SP] & ~0xffffull) | (nsp & 0xffff);
  b->ctx.rip = cs64 ? ip : (uint32_t)ip;
  bool outer = rpl > b->cpl;
  b->cpl = rpl;
  if (outer)
    scrub_segs(b);
  bt_update_mode(b);
  return 0;
}

/* RFLAGS bits IRET/POPF may change at this privilege. */
static uint64_t writable_flags(struct bt_vcpu *b, bool iret) {
  uint64_t m = BT_HOST_FLAGS | X86_RFLAGS_TF | X86_RFLAGS_NT | X86_RFLAGS_AC |
               X86_RFLAGS_ID | X86_RFLAGS_RF;
  unsigned iopl = (b->vflags >> 12) & 3;
  if (b->cpl == 0)
    m |= X86_RFLAGS_IOPL | X86_RFLAGS_VIF | X86_RFLAGS_VIP;
  if (b->cpl <= iopl)
    m |= X86_RFLAGS_IF;
  if (!iret)
    m &= ~(X86_RFLAGS_RF | X86_RFLAGS_VIF | X86_RFLAGS_VIP);
  return m;
}

void bt_write_flags(struct bt_vcpu *b, uint64_t v, uint64_t mask) {
  uint64_t f = bt_get_rflags(b);
  f = (f & ~mask) | (v & mask);
  /* TF and AC are part of the mode key. */
  uint64_t mode_flags = X86_RFLAGS_TF | X86_RFLAGS_AC;
  uint64_t old = b->vflags & mode_flags;
  bt_set_rflags(b, f);
  if ((b->vflags & mode_flags) != old)
    bt_update_mode(b);
}

uint64_t bt_popf_mask(struct bt_vcpu *b, unsigned osize) {
  uint64_t m = writable_flags(b, false);
  if (!pmode(b))
    m |= X86_RFLAGS_IOPL | X86_RFLAGS_IF;
  if (osize == 2)
    m &= 0xffff;
  return m;
}

int bt_iret(struct bt_vcpu *b, unsigned osize) {
  struct stk st = cur_stack(b);
  uint64_t ip, sel, fl;
  int err;
  if (pmode(b) && (b->vflags & X86_RFLAGS_NT) && !lma(b))
    return bt_raise(b, X86_EXC_GP, true, 0); /* task return: unsupported */
  if ((err = stk_pop(b, &st, &ip, osize)) < 0 ||
      (err = stk_pop(b, &st, &sel, osize)) < 0 ||
      (err = stk_pop(b, &st, &fl, osize)) < 0)
    return err;
  b->nmi_blocked = false;
  if (!pmode(b)) {
    b->ctx.gpr[R_SP] = st.sp;
    struct vmm_segment *cs = &b->seg[S_CS];
    cs->selector = (uint16_t)sel;
    cs->base = (sel & 0xffff) << 4;
    b->ctx.rip = osize == 2 ? ip & 0xffff : (uint32_t)ip;
    uint64_t mask = writable_flags(b, true) | X86_RFLAGS_IOPL | X86_RFLAGS_IF;
    if (osize == 2)
      mask &= 0xffff;
    bt_write_flags(b, fl, mask);
    bt_update_mode(b);
    return 0;
  }
  struct vmm_segment cs;
  uint64_t addr, raw;
  if ((err = load_return_cs(b, (uint16_t)sel, &cs, &addr, &raw)) < 0)
    return err;
  unsigned rpl = sel & 3;
  bool cs64 = lma(b) && cs.l;
  struct vmm_segment ss = b->seg[S_SS];
  uint64_t nsp = st.sp;
  if (rpl > b->cpl || code64(b)) {
    uint64_t ssel;
    if ((err = stk_pop(b, &st, &nsp, osize)) < 0 ||
        (err = stk_pop(b, &st, &ssel, osize)) < 0)
      return err;
    if (rpl > b->cpl || (ssel & ~3u) != 0 || !cs64) {
      if ((err = load_return_ss(b, (uint16_t)ssel, rpl, cs64, &ss)) < 0)
        return err;
    } else {
      memset(&ss, 0, sizeof(ss));
      ss.selector = (uint16_t)ssel;
      ss.unusable = 1;
      ss.dpl = (uint8_t)rpl;
    }
  }
  if ((err = set_accessed(b, addr, raw)) < 0)
    return err;
  uint64_t mask = writable_flags(b, true);
  if (osize == 2)
    mask &= 0xffff;
  cs.type |= 1;
  b->seg[S_CS] = cs;
  b->seg[S_SS] = ss;
  if (cs64 || ss.db)
    b->ctx.gpr[R_SP] = cs64 ? nsp : (uint32_t)nsp;
  else
    b->ctx.gpr[R_SP] = (b->ctx.gpr[R_SP] & ~0xffffull) | (nsp & 0xffff);
  b->ctx.rip = cs64 ? ip : (uint32_t)ip;
  bool outer = rpl > b->cpl;
  bt_write_flags(b, fl, mask);
  b->cpl = rpl;
  if (outer)
    scrub_segs(b);
  bt_update_mode(b);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Control registers and MSRs                                               */

static void paging_changed(struct bt_vcpu *b) {
  bt_tlb_flush(b);
  bt_unlink_cross_page(b);
}

int bt_set_cr(struct bt_vcpu *b, int cr, uint64_t v) {
  switch (cr) {
  case 0: {
    const uint64_t valid = X86_CR0_PE | X86_CR0_MP | X86_CR0_EM | X86_CR0_TS |
                           X86_CR0_ET | X86_CR0_NE | X86_CR0_WP | X86_CR0_AM |
                           X86_CR0_NW | X86_CR0_CD | X86_CR0_PG;
    if (!code64(b))
      v = (uint32_t)v;
    if (v & ~valid)
      return bt_raise(b, X86_EXC_GP, true, 0);
    v |= X86_CR0_ET;
    if ((v & X86_CR0_PG) && !(v & X86_CR0_PE))
      return bt_raise(b, X86_EXC_GP, true, 0);
    if ((v & X86_CR0_NW) && !(v & X86_CR0_CD))
      return bt_raise(b, X86_EXC_GP, true, 0);
    bool pg_on = (v & X86_CR0_PG) && !(b->cr0 & X86_CR0_PG);
    bool pg_off = !(v & X86_CR0_PG) && (b->cr0 & X86_CR0_PG);
    if (pg_on && (b->efer & X86_EFER_LME)) {
      if (!(b->cr4 & X86_CR4_PAE) || b->seg[S_CS].l)
        return bt_raise(b, X86_EXC_GP, true, 0);
      b->efer |= X86_EFER_LMA;
    }
    if (pg_off && lma(b)) {
      if (code64(b))
        return bt_raise(b, X86_EXC_GP, true, 0);
      b->efer &= ~X86_EFER_LMA;
    }
    uint64_t old = b->cr0;
    b->cr0 = v;
    if ((old ^ v) & (X86_CR0_PG | X86_CR0_WP | X86_CR0_PE))
      paging_changed(b);
    bt_update_mode(b);
    return 0;
  }
  case 2: b->cr2 = code64(b) ? v : (uint32_t)v; return 0;
  case 3:
    if (!code64(b))
      v = (uint32_t)v;
    if (v >> 40)
      return bt_raise(b, X86_EXC_GP, true, 0);
    b->cr3 = v;
    paging_changed(b);
    return 0;
  case 4: {
    const uint64_t valid =
        X86_CR4_VME | X86_CR4_PVI | X86_CR4_TSD | X86_CR4_DE | X86_CR4_PSE |
        X86_CR4_PAE | X86_CR4_MCE | X86_CR4_PGE | X86_CR4_PCE | X86_CR4_OSFXSR |
        X86_CR4_OSXMMEXCPT | X86_CR4_SMEP | X86_CR4_SMAP;
    if (v & ~valid)
      return bt_raise(b, X86_EXC_GP, true, 0);
    if (lma(b) && !(v & X86_CR4_PAE))
      return bt_raise(b, X86_EXC_GP, true, 0);
    uint64_t old = b->cr4;
    b->cr4 = v;
    if ((old ^ v) &
        (X86_CR4_PSE | X86_CR4_PAE | X86_CR4_PGE | X86_CR4_SMEP | X86_CR4_SMAP))
      paging_changed(b);
    bt_update_mode(b);
    return 0;
  }
  case 8:
    if (v & ~0xfull)
      return bt_raise(b, X86_EXC_GP, true, 0);
    /* A lower priority may unmask an interrupt: back to the dispatcher. */
    if (v < bt_get_cr8(b))
      b->tpr_lowered = true;
    b->cr8 = v;
    /* With the user-space platform CR8 is the local APIC's TPR. */
    if (b->vcpu->vm->irqchip_kind == VMM__IRQCHIP_USER)
      vmm__vcpu_set_tpr(b->vcpu, v);
    return 0;
  default: return bt_raise(b, X86_EXC_UD, false, 0);
  }
}

uint64_t bt_get_cr8(struct bt_vcpu *b) {
  if (b->vcpu->vm->irqchip_kind == VMM__IRQCHIP_USER)
    return vmm__vcpu_tpr(b->vcpu);
  return b->cr8;
}

int bt_rdmsr(struct bt_vcpu *b, uint32_t idx, uint64_t *v) {
  switch (idx) {
  case X86_MSR_TSC: *v = bt_tsc(b); return 0;
  case X86_MSR_APIC_BASE: *v = b->apic_base; return 0;
  case X86_MSR_SYSENTER_CS: *v = b->sysenter_cs; return 0;
  case X86_MSR_SYSENTER_ESP: *v = b->sysenter_esp; return 0;
  case X86_MSR_SYSENTER_EIP: *v = b->sysenter_eip; return 0;
  case X86_MSR_PAT: *v = b->pat; return 0;
  case X86_MSR_EFER: *v = b->efer; return 0;
  case X86_MSR_STAR: *v = b->star; return 0;
  case X86_MSR_LSTAR: *v = b->lstar; return 0;
  case X86_MSR_CSTAR: *v = b->cstar; return 0;
  case X86_MSR_FMASK: *v = b->sfmask; return 0;
  case X86_MSR_FS_BASE: *v = b->seg[S_FS].base; return 0;
  case X86_MSR_GS_BASE: *v = b->seg[S_GS].base; return 0;
  case X86_MSR_KERNEL_GS_BASE: *v = b->kgsbase; return 0;
  case X86_MSR_TSC_AUX: *v = b->tsc_aux; return 0;
  case 0x1a0: *v = b->misc_enable; return 0; /* IA32_MISC_ENABLE */
  /* AMD's NB_CFG: Linux reads it on AMD CPUs (the vendor is the host's)
     and sets the extended configuration-space enable; there is no
     northbridge. Reads as 0, writes are dropped, as on KVM. */
  case 0xc001001f: *v = 0; return 0;
  default: return -1;
  }
}

static bool canonical(uint64_t v) {
  return (uint64_t)((int64_t)(v << 16) >> 16) == v;
}

int bt_wrmsr(struct bt_vcpu *b, uint32_t idx, uint64_t v) {
  /* Inline syscall and sysret hold these (bt_vcpu.sys_inline): back to the
     dispatcher, which drops them if they changed. */
  if (b->sys_inline && (idx == X86_MSR_STAR || idx == X86_MSR_LSTAR ||
                        idx == X86_MSR_FMASK || idx == X86_MSR_EFER))
    atomic_store(&b->inval_pending, true);
  switch (idx) {
  case X86_MSR_TSC: b->tsc_offset += v - bt_tsc(b); return 0;
  case X86_MSR_APIC_BASE: b->apic_base = v; return 0;
  case X86_MSR_SYSENTER_CS: b->sysenter_cs = v & 0xffff; return 0;
  case X86_MSR_SYSENTER_ESP:
    if (!canonical(v))
      return -1;
    b->sysenter_esp = v;
    return 0;
  case X86_MSR_SYSENTER_EIP:
    if (!canonical(v))
      return -1;
    b->sysenter_eip = v;
    return 0;
  case X86_MSR_PAT: b->pat = v; return 0;
  case X86_MSR_EFER: {
    uint64_t valid = X86_EFER_SCE | X86_EFER_LME | X86_EFER_LMA | X86_EFER_NXE;
    if (v & ~valid)
      return -1;
    /* LMA is read-only; LME may not change while paging is on. */
    v = (v & ~X86_EFER_LMA) | (b->efer & X86_EFER_LMA);
    if ((b->cr0 & X86_CR0_PG) && ((v ^ b->efer) & X86_EFER_LME))
      return -1;
    uint64_t old = b->efer;
    b->efer = v;
    if ((old ^ v) & X86_EFER_NXE)
      paging_changed(b);
    bt_update_mode(b);
    return 0;
  }
  case X86_MSR_STAR: b->star = v; return 0;
  case X86_MSR_LSTAR:
    if (!canonical(v))
      return -1;
    b->lstar = v;
    return 0;
  case X86_MSR_CSTAR:
    if (!canonical(v))
      return -1;
    b->cstar = v;
    return 0;
  case X86_MSR_FMASK: b->sfmask = v & 0xffffffffull; return 0;
  case X86_MSR_FS_BASE:
    if (!canonical(v))
      return -1;
    b->seg[S_FS].base = v;
    bt_update_mode(b);
    return 0;
  case X86_MSR_GS_BASE:
    if (!canonical(v))
      return -1;
    b->seg[S_GS].base = v;
    bt_update_mode(b);
    return 0;
  case X86_MSR_KERNEL_GS_BASE:
    if (!canonical(v))
      return -1;
    b->kgsbase = v;
    return 0;
  case X86_MSR_TSC_AUX: b->tsc_aux = v & 0xffffffffull; return 0;
  case 0x1a0: b->misc_enable = v; return 0;
  case 0xc001001f: return 0; /* NB_CFG (see bt_rdmsr) */
  default: return -1;
  }
}

/* The guest TSC: host TSC plus offset, or in counting mode a function of
   the instruction count so reruns are identical (docs/bt.md). */
uint64_t bt_tsc(struct bt_vcpu *b) {
  if (b->counting) {
    uint64_t n = b->icount + (uint64_t)(b->ctx.budget - b->budget_start);
    return n * 4 + b->tsc_offset;
  }
  return __rdtsc() + b->tsc_offset;
}
