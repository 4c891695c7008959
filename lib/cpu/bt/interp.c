/*
 * C emulation of the guest instructions the BT engine does not run
 * natively: privileged and sensitive instructions, I/O, string
 * instructions, far transfers, stack operations where segments are not
 * flat, division (checked so the host never takes #DE), legacy
 * instructions invalid in 64-bit mode, and the FPU control instructions
 * whose guest-visible values are virtual. Operates on the context with
 * precise state; memory goes through mem.c. Results and flags of
 * arithmetic come from the host CPU where possible (inline asm), so they
 * match native execution.
 */
#include <string.h>

#include "bt.h"

/* The instruction being emulated; di and op point into the decode cache
   (bt_decode_ref), whose entry stays pinned meanwhile. */
struct insn {
  const ZydisDecodedInstruction *di;
  const ZydisDecodedOperand *op;
  uint64_t rip, next;
};

static bool code64(const struct bt_vcpu *b) {
  return (b->key & BT_K_CODE_MASK) == BT_K_CODE64;
}
static bool pmode(const struct bt_vcpu *b) {
  return (b->cr0 & X86_CR0_PE) != 0;
}
static unsigned iopl(const struct bt_vcpu *b) {
  return (b->vflags >> 12) & 3;
}
static uint64_t mask_of(unsigned bytes) {
  return bytes >= 8 ? ~0ull : (1ull << (bytes * 8)) - 1;
}

/* ------------------------------------------------------------------------ */
/* Registers                                                                */

static int sreg_index(ZydisRegister r) {
  switch (r) {
  case ZYDIS_REGISTER_ES: return S_ES;
  case ZYDIS_REGISTER_CS: return S_CS;
  case ZYDIS_REGISTER_SS: return S_SS;
  case ZYDIS_REGISTER_DS: return S_DS;
  case ZYDIS_REGISTER_FS: return S_FS;
  case ZYDIS_REGISTER_GS: return S_GS;
  default: return -1;
  }
}

uint64_t bt_reg_get(struct bt_vcpu *b, ZydisRegister r) {
  uint64_t *g = b->ctx.gpr;
  if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_BL)
    return g[r - ZYDIS_REGISTER_AL] & 0xff;
  if (r >= ZYDIS_REGISTER_AH && r <= ZYDIS_REGISTER_BH)
    return (g[r - ZYDIS_REGISTER_AH] >> 8) & 0xff;
  if (r >= ZYDIS_REGISTER_SPL && r <= ZYDIS_REGISTER_R15B)
    return g[4 + r - ZYDIS_REGISTER_SPL] & 0xff;
  if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W)
    return g[r - ZYDIS_REGISTER_AX] & 0xffff;
  if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D)
    return g[r - ZYDIS_REGISTER_EAX] & 0xffffffff;
  if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15)
    return g[r - ZYDIS_REGISTER_RAX];
  int s = sreg_index(r);
  if (s >= 0)
    return b->seg[s].selector;
  if (r == ZYDIS_REGISTER_FLAGS || r == ZYDIS_REGISTER_EFLAGS ||
      r == ZYDIS_REGISTER_RFLAGS)
    return bt_get_rflags(b);
  return 0;
}

void bt_reg_set(struct bt_vcpu *b, ZydisRegister r, uint64_t v) {
  uint64_t *g = b->ctx.gpr;
  if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_BL) {
    uint64_t *p = &g[r - ZYDIS_REGISTER_AL];
    *p = (*p & ~0xffull) | (v & 0xff);
  } else if (r >= ZYDIS_REGISTER_AH && r <= ZYDIS_REGISTER_BH) {
    uint64_t *p = &g[r - ZYDIS_REGISTER_AH];
    *p = (*p & ~0xff00ull) | ((v & 0xff) << 8);
  } else if (r >= ZYDIS_REGISTER_SPL && r <= ZYDIS_REGISTER_R15B) {
    uint64_t *p = &g[4 + r - ZYDIS_REGISTER_SPL];
    *p = (*p & ~0xffull) | (v & 0xff);
  } else if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W) {
    uint64_t *p = &g[r - ZYDIS_REGISTER_AX];
    *p = (*p & ~0xffffull) | (v & 0xffff);
  } else if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D) {
    g[r - ZYDIS_REGISTER_EAX] = (uint32_t)v;
  } else if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15) {
    g[r - ZYDIS_REGISTER_RAX] = v;
  }
}

/* Set a GPR by number with an operand size, as a write of that size does. */
static void gpr_set(struct bt_vcpu *b, unsigned n, unsigned bytes, uint64_t v) {
  uint64_t *p = &b->ctx.gpr[n];
  switch (bytes) {
  case 1: *p = (*p & ~0xffull) | (v & 0xff); break;
  case 2: *p = (*p & ~0xffffull) | (v & 0xffff); break;
  case 4: *p = (uint32_t)v; break;
  default: *p = v; break;
  }
}

/* ------------------------------------------------------------------------ */
/* Addresses                                                                */

static bool canonical(uint64_t v) {
  return (uint64_t)((int64_t)(v << 16) >> 16) == v;
}

/* Linear address of offset `ea` in segment `s` for an access of `size`
   bytes; raises #GP/#SS on a segment violation. */
static int seg_lin(struct bt_vcpu *b, int s, uint64_t ea, unsigned size,
                   bool write, uint64_t *lin) {
  unsigned vec = s == S_SS ? X86_EXC_SS : X86_EXC_GP;
  if (code64(b)) {
    uint64_t l = ea + ((s == S_FS || s == S_GS) ? b->seg[s].base : 0);
    if (!canonical(l))
      return bt_raise(b, vec, true, 0);
    *lin = l;
    return 0;
  }
  const struct vmm_segment *sg = &b->seg[s];
  if (pmode(b)) {
    if (sg->unusable || (sg->selector & ~3u) == 0 || !sg->present)
      return bt_raise(b, vec, true, 0);
    bool code = sg->type & 8;
    if (write && (code || !(sg->type & 2)))
      return bt_raise(b, vec, true, 0);
    if (!write && code && !(sg->type & 2))
      return bt_raise(b, vec, true, 0);
  }
  uint64_t last = ea + size - 1;
  bool down = !(sg->type & 8) && (sg->type & 4) && pmode(b);
  if (down) {
    uint64_t top = sg->db ? 0xffffffffull : 0xffffull;
    if (ea <= sg->limit || last > top)
      return bt_raise(b, vec, true, 0);
  } else if (last > sg->limit || last < ea) {
    return bt_raise(b, vec, true, 0);
  }
  *lin = (uint32_t)(sg->base + ea);
  return 0;
}

static uint64_t ea_of(struct bt_vcpu *b, const ZydisDecodedInstruction *di,
                      const ZydisDecodedOperand *o, uint64_t next) {
  uint64_t ea = 0;
  ZydisRegister base = o->mem.base;
  if (base == ZYDIS_REGISTER_RIP || base == ZYDIS_REGISTER_EIP)
    ea = next;
  else if (base != ZYDIS_REGISTER_NONE)
    ea = bt_reg_get(b, base);
  if (o->mem.index != ZYDIS_REGISTER_NONE)
    ea += bt_reg_get(b, o->mem.index) * (o->mem.scale ? o->mem.scale : 1);
  if (o->mem.disp.has_displacement)
    ea += (uint64_t)o->mem.disp.value;
  if (di->address_width == 16)
    ea &= 0xffff;
  else if (di->address_width == 32)
    ea &= 0xffffffff;
  return ea;
}

int bt_operand_lin(struct bt_vcpu *b, const ZydisDecodedInstruction *di,
                   const ZydisDecodedOperand *o, unsigned size, bool write,
                   uint64_t *lin) {
  uint64_t next = b->ctx.rip + di->length;
  uint64_t ea = ea_of(b, di, o, next);
  int s = sreg_index(o->mem.segment);
  if (s < 0)
    s = S_DS;
  return seg_lin(b, s, ea, size, write, lin);
}

/* Legacy SSE instructions whose 16-byte memory operand must be aligned. */
bool bt_needs_align16(const ZydisDecodedInstruction *di,
                      const ZydisDecodedOperand *o) {
  if (o->size != 128)
    return false;
  if (di->encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY)
    return false;
  switch (di->mnemonic) {
  case ZYDIS_MNEMONIC_MOVUPS:
  case ZYDIS_MNEMONIC_MOVUPD:
  case ZYDIS_MNEMONIC_MOVDQU:
  case ZYDIS_MNEMONIC_LDDQU:
  case ZYDIS_MNEMONIC_PCMPESTRI:
  case ZYDIS_MNEMONIC_PCMPESTRM:
  case ZYDIS_MNEMONIC_PCMPISTRI:
  case ZYDIS_MNEMONIC_PCMPISTRM: return false;
  case ZYDIS_MNEMONIC_CMPXCHG16B: return true;
  default: break;
  }
  switch (di->meta.isa_ext) {
  case ZYDIS_ISA_EXT_SSE:
  case ZYDIS_ISA_EXT_SSE2:
  case ZYDIS_ISA_EXT_SSE3:
  case ZYDIS_ISA_EXT_SSSE3:
  case ZYDIS_ISA_EXT_SSE4:
  case ZYDIS_ISA_EXT_AES:
  case ZYDIS_ISA_EXT_PCLMULQDQ: return true;
  default: return false;
  }
}

/*
 * Around inline assembly that computes flags with pushfq/popfq: step over
 * the red zone (the compiler may keep a leaf function's data in the 128
 * bytes below RSP, which a push would overwrite) and leave DF clear, as
 * the ABI requires of C code (popfq loads the guest's DF; with it set,
 * the next memset or memcpy would run backwards over other memory).
 */
#define HOSTF_IN "addq $-128, %%rsp\n\t"
#define HOSTF_OUT "\n\tsubq $-128, %%rsp\n\tcld"

/* ------------------------------------------------------------------------ */
/* Operands                                                                 */

static int op_lin(struct bt_vcpu *b, struct insn *in, int i, bool write,
                  uint64_t *lin) {
  const ZydisDecodedOperand *o = &in->op[i];
  uint64_t ea = ea_of(b, in->di, o, in->next);
  int s = sreg_index(o->mem.segment);
  return seg_lin(b, s < 0 ? S_DS : s, ea, o->size / 8, write, lin);
}

static int op_read(struct bt_vcpu *b, struct insn *in, int i, uint64_t *v) {
  const ZydisDecodedOperand *o = &in->op[i];
  unsigned bytes = o->size / 8;
  switch (o->type) {
  case ZYDIS_OPERAND_TYPE_REGISTER:
    *v = bt_reg_get(b, o->reg.value) & mask_of(bytes);
    return 0;
  case ZYDIS_OPERAND_TYPE_IMMEDIATE:
    *v = o->imm.value.u & mask_of(bytes);
    return 0;
  case ZYDIS_OPERAND_TYPE_MEMORY: {
    uint64_t lin;
    int err = op_lin(b, in, i, false, &lin);
    if (err < 0)
      return err;
    *v = 0;
    return bt_read(b, lin, v, bytes > 8 ? 8 : bytes, false);
  }
  default: return bt_raise(b, X86_EXC_UD, false, 0);
  }
}

static int op_write(struct bt_vcpu *b, struct insn *in, int i, uint64_t v) {
  const ZydisDecodedOperand *o = &in->op[i];
  unsigned bytes = o->size / 8;
  if (o->type == ZYDIS_OPERAND_TYPE_REGISTER) {
    bt_reg_set(b, o->reg.value, v);
    return 0;
  }
  uint64_t lin;
  int err = op_lin(b, in, i, true, &lin);
  if (err < 0)
    return err;
  return bt_write(b, lin, &v, bytes > 8 ? 8 : bytes, false);
}

/* ------------------------------------------------------------------------ */
/* Stack                                                                    */

static unsigned stack_bits(const struct bt_vcpu *b) {
  return code64(b) ? 64 : b->seg[S_SS].db ? 32 : 16;
}

static uint64_t sp_add(const struct bt_vcpu *b, uint64_t sp, int64_t d) {
  switch (stack_bits(b)) {
  case 16: return (sp & ~0xffffull) | ((sp + (uint64_t)d) & 0xffff);
  case 32: return (uint32_t)(sp + (uint64_t)d);
  default: return sp + (uint64_t)d;
  }
}

static uint64_t sp_off(const struct bt_vcpu *b, uint64_t sp) {
  switch (stack_bits(b)) {
  case 16: return sp & 0xffff;
  case 32: return (uint32_t)sp;
  default: return sp;
  }
}

/* Push at a given (unchanged) stack pointer; returns the new one. */
static int push_at(struct bt_vcpu *b, uint64_t *sp, uint64_t v, unsigned size) {
  uint64_t nsp = sp_add(b, *sp, -(int64_t)size);
  uint64_t lin;
  int err = seg_lin(b, S_SS, sp_off(b, nsp), size, true, &lin);
  if (err < 0)
    return err;
  if ((err = bt_write(b, lin, &v, size, false)) < 0)
    return err;
  *sp = nsp;
  return 0;
}

static int pop_at(struct bt_vcpu *b, uint64_t *sp, uint64_t *v, unsigned size) {
  uint64_t lin;
  int err = seg_lin(b, S_SS, sp_off(b, *sp), size, false, &lin);
  if (err < 0)
    return err;
  *v = 0;
  if ((err = bt_read(b, lin, v, size, false)) < 0)
    return err;
  *sp = sp_add(b, *sp, size);
  return 0;
}

static int push(struct bt_vcpu *b, uint64_t v, unsigned size) {
  uint64_t sp = b->ctx.gpr[R_SP];
  int err = push_at(b, &sp, v, size);
  if (err == 0)
    b->ctx.gpr[R_SP] = sp;
  return err;
}

/* ------------------------------------------------------------------------ */
/* Host-computed flags                                                      */

static uint64_t cmp_flags(uint64_t a, uint64_t c, unsigned size) {
  uint64_t f;
  switch (size) {
  case 1:
    __asm__(HOSTF_IN "cmpb %b2, %b1; pushfq; popq %0" HOSTF_OUT
            : "=r"(f)
            : "q"(a), "q"(c)
            : "cc");
    break;
  case 2:
    __asm__(HOSTF_IN "cmpw %w2, %w1; pushfq; popq %0" HOSTF_OUT
            : "=r"(f)
            : "r"(a), "r"(c)
            : "cc");
    break;
  case 4:
    __asm__(HOSTF_IN "cmpl %k2, %k1; pushfq; popq %0" HOSTF_OUT
            : "=r"(f)
            : "r"(a), "r"(c)
            : "cc");
    break;
  default:
    __asm__(HOSTF_IN "cmpq %2, %1; pushfq; popq %0" HOSTF_OUT
            : "=r"(f)
            : "r"(a), "r"(c)
            : "cc");
    break;
  }
  return f;
}

static void set_status(struct bt_vcpu *b, uint64_t f, uint64_t mask) {
  b->ctx.flags = (b->ctx.flags & ~mask) | (f & mask) | X86_RFLAGS_FIXED;
}

#define STATUS                                                                 \
  (X86_RFLAGS_CF | X86_RFLAGS_PF | X86_RFLAGS_AF | X86_RFLAGS_ZF |             \
   X86_RFLAGS_SF | X86_RFLAGS_OF)

static uint64_t szp_flags(uint8_t v) {
  uint64_t f;
  __asm__(HOSTF_IN "testb %b1, %b1; pushfq; popq %0" HOSTF_OUT
          : "=r"(f)
          : "q"(v)
          : "cc");
  return f & (X86_RFLAGS_SF | X86_RFLAGS_ZF | X86_RFLAGS_PF);
}

/* ------------------------------------------------------------------------ */
/* Port I/O                                                                 */

/* May the guest access `size` bytes at `port` (IOPL and TSS bitmap)? */
static int io_allowed(struct bt_vcpu *b, uint16_t port, unsigned size) {
  if (!pmode(b) || b->cpl <= iopl(b))
    return 0;
  /* The I/O permission bitmap of a 32/64-bit TSS. */
  if (b->tr.unusable ||
      (b->tr.type != X86_SEG_TSS_BUSY && b->tr.type != X86_SEG_TSS_AVAILABLE))
    return bt_raise(b, X86_EXC_GP, true, 0);
  if (b->tr.limit < 0x67)
    return bt_raise(b, X86_EXC_GP, true, 0);
  uint16_t iomap;
  int err = bt_read(b, b->tr.base + 0x66, &iomap, 2, true);
  if (err < 0)
    return err;
  uint32_t at = iomap + port / 8u;
  if (at + 1 > b->tr.limit)
    return bt_raise(b, X86_EXC_GP, true, 0);
  uint16_t bits;
  if ((err = bt_read(b, b->tr.base + at, &bits, 2, true)) < 0)
    return err;
  /* One permission bit per port: `size` bits, not bytes. */
  if ((bits >> (port & 7)) & ((1u << size) - 1))
    return bt_raise(b, X86_EXC_GP, true, 0);
  return 0;
}

static void io_exit(struct bt_vcpu *b, uint16_t port, unsigned size, bool write,
                    uint32_t count) {
  struct vmm_exit *e = &b->vcpu->exit;
  memset(e, 0, sizeof(*e));
  e->reason = VMM_EXIT_IO;
  e->io.port = port;
  e->io.size = (uint8_t)size;
  e->io.is_write = write;
  e->io.count = count;
  e->io.data = b->iobuf;
  b->exit_ready = true;
}

/* in/out at rip (next: the RIP after it) to a port, size bytes. */
static int pio(struct bt_vcpu *b, uint16_t port, unsigned size, bool is_in,
               uint64_t rip, uint64_t next) {
  int err = io_allowed(b, port, size);
  if (err < 0)
    return err;
  /* A port with a registered handler is served here, without an exit
     (QEMU serves port I/O inside its vCPU thread too): the exit and the
     run loop's dispatch were most of an `in`. The handler sees the state
     an exit shows: RIP on an `in` (pending, as after an exit), after an
     `out`; a handler's vmm_vcpu_set_regs abandons the `in`. */
  uint64_t v = b->ctx.gpr[R_AX];
  /* Single-stepping (the guest's TF, the host's), debugging: the exit,
     so a trap after the instruction comes after the handler's stop
     request as it does on KVM (difftest). */
  bool inline_ok =
      !(b->vflags & X86_RFLAGS_TF) && !b->dbg_on && !(b->key & BT_K_SINGLE);
  if (is_in) {
    b->pio.valid = true;
    b->pio.in = true;
    b->pio.string = false;
    b->pio.size = (uint8_t)size;
    b->pio.count = 1;
    b->pio.rip = rip;
    b->pio.next_rip = next;
  } else {
    memcpy(b->iobuf, &v, size);
    b->ctx.rip = next;
  }
  int rc = 1;
  if (inline_ok) {
    bt_host_call(b);
    rc = vmm__vcpu_pio_inline(b->vcpu, port, b->iobuf, size, !is_in);
  }
  if (rc == 0) {
    if (is_in && b->pio.valid) {
      b->pio.valid = false;
      /* Loads of the access's own width: a byte copy into a wider
         variable stalled store forwarding. */
      switch (size) {
      case 1: v = b->iobuf[0]; break;
      case 2: {
        uint16_t w;
        memcpy(&w, b->iobuf, 2);
        v = w;
        break;
      }
      default: {
        uint32_t w;
        memcpy(&w, b->iobuf, 4);
        v = w;
        break;
      }
      }
      gpr_set(b, R_AX, size, v);
      b->ctx.rip = next;
    }
    return BT_OK;
  }
  io_exit(b, port, size, !is_in, 1);
  return is_in ? BT_EXIT : BT_OK;
}

static int do_in_out(struct bt_vcpu *b, struct insn *in, bool is_in) {
  const ZydisDecodedOperand *po = &in->op[is_in ? 1 : 0];
  bool imm = po->type == ZYDIS_OPERAND_TYPE_IMMEDIATE;
  uint16_t port = imm ? (uint16_t)po->imm.value.u : (uint16_t)b->ctx.gpr[R_DX];
  unsigned size = in->op[is_in ? 0 : 1].size / 8;
  /* The callout keeps this form in its descriptor (callout_emul). */
  b->pio_arg = (imm ? port : BT_PIO_DX) | (is_in ? BT_PIO_IN : 0) |
               size << BT_PIO_SIZE_SHIFT;
  return pio(b, port, size, is_in, in->rip, in->next);
}

int bt_pio(struct bt_vcpu *b, uint32_t arg, uint64_t rip, uint64_t next) {
  b->ctx.rip = rip;
  uint16_t port =
      (arg & BT_PIO_DX) ? (uint16_t)b->ctx.gpr[R_DX] : (uint16_t)arg;
  bt_mmio_begin(b); /* io_allowed may read the TSS */
  int rc =
      pio(b, port, arg >> BT_PIO_SIZE_SHIFT, (arg & BT_PIO_IN) != 0, rip, next);
  if (rc == BT_OK)
    bt_mmio_retire(b);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* String instructions                                                      */

#define STR_CHUNK (1u << 20) /* elements per callout, so kicks stay prompt */

static uint64_t areg_get(struct bt_vcpu *b, unsigned n, unsigned abits) {
  uint64_t v = b->ctx.gpr[n];
  return abits == 16 ? v & 0xffff : abits == 32 ? (uint32_t)v : v;
}

static void areg_set(struct bt_vcpu *b, unsigned n, unsigned abits,
                     uint64_t v) {
  gpr_set(b, n, abits / 8, v);
}

/* Iterations the instruction limit still allows this instruction (the TU
   charged one for it already). */
static uint64_t budget_iters(struct bt_vcpu *b) {
  if (!b->counting || !b->limit)
    return UINT64_MAX;
  int64_t left = 1 - b->ctx.budget;
  return left > 0 ? (uint64_t)left : 1;
}

static void charge_iters(struct bt_vcpu *b, uint64_t k) {
  /* One was charged by the TU; a rep that ran k iterations retires k. */
  if (b->counting && k > 1)
    b->ctx.budget += (int64_t)(k - 1);
  if (b->counting && k == 0)
    b->ctx.budget -= 1;
}

/*
 * The host pointer to `n` elements at segment offset `off` walking in the
 * direction of `fwd`, shrinking *n to what stays in one page and does not
 * wrap the offset register. Only where segments add nothing to check
 * (64-bit mode, flat 32-bit) and for RAM the access may use directly;
 * anything else (faults included) returns NULL for the element-by-element
 * path, which raises faults at the exact element.
 */
static uint8_t *chunk_ptr(struct bt_vcpu *b, int seg, uint64_t off,
                          unsigned size, bool fwd, bool write, unsigned abits,
                          uint64_t *n) {
  uint64_t lin;
  if (code64(b))
    lin = off + ((seg == S_FS || seg == S_GS) ? b->seg[seg].base : 0);
  else if ((b->key & BT_K_FLAT) && seg != S_FS && seg != S_GS)
    lin = off;
  else
    return NULL;
  uint64_t po = lin & 0xfff;
  if (po + size > 4096)
    return NULL;
  uint64_t room = fwd ? (4096 - po) / size : po / size + 1;
  if (abits < 64) {
    uint64_t span = 1ull << abits;
    uint64_t wrap = fwd ? (span - off) / size : off / size + 1;
    if (wrap < room)
      room = wrap;
  }
  if (room < *n)
    *n = room;
  if (*n == 0)
    return NULL;
  struct vmm__paging pg;
  bt_paging(b, &pg);
  unsigned acc = VMM_ACCESS_SET_AD | (write ? VMM_ACCESS_WRITE : 0) |
                 (b->cpl == 3 ? VMM_ACCESS_USER : 0);
  struct vmm_translation t;
  if (vmm__mmu_walk(&b->vcpu->vm->mem, &pg, lin, acc, &t) < 0)
    return NULL;
  if (b->cpl != 3 && (b->cr4 & X86_CR4_SMAP) && t.user &&
      !(b->vflags & X86_RFLAGS_AC))
    return NULL;
  uint64_t first = fwd ? t.gpa : t.gpa - (*n - 1) * size;
  uint8_t *p = write ? bt_ram_writable(b, first, (unsigned)(*n * size))
                     : bt_ram_readable(b, first, (unsigned)(*n * size));
  if (p == NULL)
    return NULL;
  if (write)
    bt_ram_written(b, first, (unsigned)(*n * size));
  return fwd ? p : p + (*n - 1) * size;
}

/* A run of rep string elements on host memory; returns how many ran (0:
   use the element-by-element path). Sets *stop when repe/repne ended. */
static uint64_t string_chunk(struct bt_vcpu *b, ZydisMnemonic m, unsigned size,
                             int64_t step, unsigned abits, int src_seg,
                             bool uses_si, bool uses_di, bool cond, bool repne,
                             uint64_t max, bool *stop) {
  bool fwd = step > 0;
  bool is_stos = m == ZYDIS_MNEMONIC_STOSB || m == ZYDIS_MNEMONIC_STOSW ||
                 m == ZYDIS_MNEMONIC_STOSD || m == ZYDIS_MNEMONIC_STOSQ;
  bool is_movs = m == ZYDIS_MNEMONIC_MOVSB || m == ZYDIS_MNEMONIC_MOVSW ||
                 m == ZYDIS_MNEMONIC_MOVSD || m == ZYDIS_MNEMONIC_MOVSQ;
  uint64_t n = max;
  uint8_t *src = NULL, *dst = NULL;
  if (b->key & BT_K_AC)
    return 0; /* alignment checks: element by element (bt_read/bt_write) */
  if (uses_si && !(src = chunk_ptr(b, src_seg, areg_get(b, R_SI, abits), size,
                                   fwd, false, abits, &n)))
    return 0;
  if (uses_di && !(dst = chunk_ptr(b, S_ES, areg_get(b, R_DI, abits), size, fwd,
                                   is_stos || is_movs, abits, &n)))
    return 0;
  /* Element i is at base + i * step. */
  uint64_t k = 0;
  if (is_movs) {
    bool overlap = dst < src + n * size && src < dst + n * size;
    if (!overlap && fwd) {
      memcpy(dst, src, n * size);
    } else if (!overlap) {
      memcpy(dst - (n - 1) * size, src - (n - 1) * size, n * size);
    } else {
      for (uint64_t i = 0; i < n; i++)
        memmove(dst + (int64_t)i * step, src + (int64_t)i * step, size);
    }
    k = n;
  } else if (is_stos) {
    uint64_t v = b->ctx.gpr[R_AX];
    if (size == 1) {
      memset(fwd ? dst : dst - (n - 1), (int)(v & 0xff), n);
    } else {
      for (uint64_t i = 0; i < n; i++)
        memcpy(dst + (int64_t)i * step, &v, size);
    }
    k = n;
  } else if (!cond) { /* lods */
    uint64_t v = 0;
    memcpy(&v, src + (int64_t)(n - 1) * step, size);
    gpr_set(b, R_AX, size, v);
    k = n;
  } else { /* cmps, scas */
    uint64_t f = 0;
    for (k = 0; k < n;) {
      uint64_t a = 0, c = 0;
      if (uses_si)
        memcpy(&a, src + (int64_t)k * step, size);
      else
        a = b->ctx.gpr[R_AX] & mask_of(size);
      memcpy(&c, dst + (int64_t)k * step, size);
      f = cmp_flags(a, c, size);
      k++;
      bool zf = f & X86_RFLAGS_ZF;
      if (repne ? zf : !zf) {
        *stop = true;
        break;
      }
    }
    set_status(b, f, STATUS);
  }
  if (uses_si)
    areg_set(b, R_SI, abits,
             areg_get(b, R_SI, abits) + (uint64_t)(step * (int64_t)k));
  if (uses_di)
    areg_set(b, R_DI, abits,
             areg_get(b, R_DI, abits) + (uint64_t)(step * (int64_t)k));
  return k;
}

static int do_string(struct bt_vcpu *b, struct insn *in) {
  ZydisMnemonic m = in->di->mnemonic;
  unsigned abits = in->di->address_width;
  bool rep =
      in->di->attributes &
      (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE | ZYDIS_ATTRIB_HAS_REPNE);
  bool repne = in->di->attributes & ZYDIS_ATTRIB_HAS_REPNE;
  bool cond = m == ZYDIS_MNEMONIC_CMPSB || m == ZYDIS_MNEMONIC_CMPSW ||
              m == ZYDIS_MNEMONIC_CMPSD || m == ZYDIS_MNEMONIC_CMPSQ ||
              m == ZYDIS_MNEMONIC_SCASB || m == ZYDIS_MNEMONIC_SCASW ||
              m == ZYDIS_MNEMONIC_SCASD || m == ZYDIS_MNEMONIC_SCASQ;
  unsigned size = in->di->operand_width / 8;
  /* Zydis reports byte forms with operand_width 8. */
  switch (m) {
  case ZYDIS_MNEMONIC_MOVSB:
  case ZYDIS_MNEMONIC_STOSB:
  case ZYDIS_MNEMONIC_LODSB:
  case ZYDIS_MNEMONIC_CMPSB:
  case ZYDIS_MNEMONIC_SCASB:
  case ZYDIS_MNEMONIC_INSB:
  case ZYDIS_MNEMONIC_OUTSB: size = 1; break;
  case ZYDIS_MNEMONIC_MOVSW:
  case ZYDIS_MNEMONIC_STOSW:
  case ZYDIS_MNEMONIC_LODSW:
  case ZYDIS_MNEMONIC_CMPSW:
  case ZYDIS_MNEMONIC_SCASW:
  case ZYDIS_MNEMONIC_INSW:
  case ZYDIS_MNEMONIC_OUTSW: size = 2; break;
  case ZYDIS_MNEMONIC_MOVSD:
  case ZYDIS_MNEMONIC_STOSD:
  case ZYDIS_MNEMONIC_LODSD:
  case ZYDIS_MNEMONIC_CMPSD:
  case ZYDIS_MNEMONIC_SCASD:
  case ZYDIS_MNEMONIC_INSD:
  case ZYDIS_MNEMONIC_OUTSD: size = 4; break;
  default: size = 8; break;
  }
  int64_t step =
      (b->ctx.flags & X86_RFLAGS_DF) ? -(int64_t)size : (int64_t)size;
  int src_seg = S_DS;
  for (int i = 0; i < in->di->operand_count; i++)
    if (in->op[i].type == ZYDIS_OPERAND_TYPE_MEMORY &&
        in->op[i].mem.base != ZYDIS_REGISTER_NONE &&
        (in->op[i].mem.base == ZYDIS_REGISTER_RSI ||
         in->op[i].mem.base == ZYDIS_REGISTER_ESI ||
         in->op[i].mem.base == ZYDIS_REGISTER_SI)) {
      int s = sreg_index(in->op[i].mem.segment);
      if (s >= 0)
        src_seg = s;
    }
  bool uses_si = m == ZYDIS_MNEMONIC_MOVSB || m == ZYDIS_MNEMONIC_MOVSW ||
                 m == ZYDIS_MNEMONIC_MOVSD || m == ZYDIS_MNEMONIC_MOVSQ ||
                 m == ZYDIS_MNEMONIC_LODSB || m == ZYDIS_MNEMONIC_LODSW ||
                 m == ZYDIS_MNEMONIC_LODSD || m == ZYDIS_MNEMONIC_LODSQ ||
                 m == ZYDIS_MNEMONIC_CMPSB || m == ZYDIS_MNEMONIC_CMPSW ||
                 m == ZYDIS_MNEMONIC_CMPSD || m == ZYDIS_MNEMONIC_CMPSQ ||
                 m == ZYDIS_MNEMONIC_OUTSB || m == ZYDIS_MNEMONIC_OUTSW ||
                 m == ZYDIS_MNEMONIC_OUTSD;
  bool uses_di = !(m == ZYDIS_MNEMONIC_LODSB || m == ZYDIS_MNEMONIC_LODSW ||
                   m == ZYDIS_MNEMONIC_LODSD || m == ZYDIS_MNEMONIC_LODSQ ||
                   m == ZYDIS_MNEMONIC_OUTSB || m == ZYDIS_MNEMONIC_OUTSW ||
                   m == ZYDIS_MNEMONIC_OUTSD);
  bool is_ins = m == ZYDIS_MNEMONIC_INSB || m == ZYDIS_MNEMONIC_INSW ||
                m == ZYDIS_MNEMONIC_INSD;
  bool is_outs = m == ZYDIS_MNEMONIC_OUTSB || m == ZYDIS_MNEMONIC_OUTSW ||
                 m == ZYDIS_MNEMONIC_OUTSD;

  uint64_t count = rep ? areg_get(b, R_CX, abits) : 1;
  if (count == 0) {
    b->ctx.rip = in->next;
    return BT_OK;
  }
  if (is_ins || is_outs) {
    uint16_t port = (uint16_t)b->ctx.gpr[R_DX];
    int err = io_allowed(b, port, size);
    if (err < 0)
      return err;
    /* One exit moves up to a buffer and never crosses a page. */
    uint64_t off = areg_get(b, is_ins ? R_DI : R_SI, abits);
    uint64_t lin;
    if ((err = seg_lin(b, is_ins ? S_ES : src_seg, off, size, is_ins, &lin)) <
        0)
      return err;
    uint64_t room =
        step > 0 ? (4096 - (lin & 0xfff)) / size : ((lin & 0xfff) / size) + 1;
    uint64_t n = count;
    if (n > room)
      n = room ? room : 1;
    if (n > BT_IOBUF / size)
      n = BT_IOBUF / size;
    uint64_t bi = budget_iters(b);
    if (n > bi)
      n = bi;
    /* Translate the first element now so a fault comes before the I/O. */
    uint64_t gpa;
    if (bt_ac_fault(b, lin, size))
      return bt_raise(b, X86_EXC_AC, true, 0);
    if ((err = bt_translate(b, lin, is_ins ? BT_W : BT_R, false, &gpa)) < 0)
      return err;
    if (is_outs) {
      for (uint64_t k = 0; k < n; k++) {
        uint64_t l;
        if ((err =
                 seg_lin(b, src_seg,
                         areg_get(b, R_SI, abits) + (uint64_t)step * (int64_t)k,
                         size, false, &l)) < 0 ||
            (err = bt_read(b, l, b->iobuf + k * size, size, false)) < 0)
          return err;
      }
      areg_set(b, R_SI, abits, off + (uint64_t)(step * (int64_t)n));
      if (rep)
        areg_set(b, R_CX, abits, count - n);
      b->ctx.rip = (rep && count - n) ? in->rip : in->next;
      charge_iters(b, n);
      io_exit(b, port, size, true, (uint32_t)n);
      return BT_OK;
    }
    io_exit(b, port, size, false, (uint32_t)n);
    memset(b->iobuf, 0, n * size);
    b->pio.valid = true;
    b->pio.in = true;
    b->pio.string = true;
    b->pio.size = (uint8_t)size;
    b->pio.count = (uint32_t)n;
    b->pio.rip = in->rip;
    b->pio.next_rip = in->next;
    b->pio.len = in->di->length;
    return BT_EXIT;
  }

  uint64_t limit = budget_iters(b);
  uint64_t done = 0;
  int err = 0;
  while (count > 0 && done < STR_CHUNK && done < limit) {
    if (rep) {
      uint64_t max = count;
      if (max > STR_CHUNK - done)
        max = STR_CHUNK - done;
      if (max > limit - done)
        max = limit - done;
      bool stop = false;
      uint64_t k = string_chunk(b, m, size, step, abits, src_seg, uses_si,
                                uses_di, cond, repne, max, &stop);
      if (k > 0) {
        count -= k;
        done += k;
        areg_set(b, R_CX, abits, count);
        bt_mmio_retire(b);
        if (stop)
          count = 0;
        if (atomic_load(&b->kicked))
          break;
        continue;
      }
    }
    uint64_t si = areg_get(b, R_SI, abits), di = areg_get(b, R_DI, abits);
    uint64_t a = 0, c = 0;
    if (uses_si) {
      uint64_t lin;
      if ((err = seg_lin(b, src_seg, si, size, false, &lin)) < 0 ||
          (err = bt_read(b, lin, &a, size, false)) < 0)
        break;
    }
    switch (m) {
    case ZYDIS_MNEMONIC_MOVSB:
    case ZYDIS_MNEMONIC_MOVSW:
    case ZYDIS_MNEMONIC_MOVSD:
    case ZYDIS_MNEMONIC_MOVSQ:
    case ZYDIS_MNEMONIC_STOSB:
    case ZYDIS_MNEMONIC_STOSW:
    case ZYDIS_MNEMONIC_STOSD:
    case ZYDIS_MNEMONIC_STOSQ: {
      uint64_t v = uses_si ? a : b->ctx.gpr[R_AX];
      uint64_t lin;
      if ((err = seg_lin(b, S_ES, di, size, true, &lin)) < 0 ||
          (err = bt_write(b, lin, &v, size, false)) < 0)
        break;
      break;
    }
    case ZYDIS_MNEMONIC_LODSB:
    case ZYDIS_MNEMONIC_LODSW:
    case ZYDIS_MNEMONIC_LODSD:
    case ZYDIS_MNEMONIC_LODSQ: gpr_set(b, R_AX, size, a); break;
    default: { /* cmps, scas */
      uint64_t lin;
      if ((err = seg_lin(b, S_ES, di, size, false, &lin)) < 0 ||
          (err = bt_read(b, lin, &c, size, false)) < 0)
        break;
      uint64_t lhs = uses_si ? a : b->ctx.gpr[R_AX] & mask_of(size);
      set_status(b, cmp_flags(lhs, c, size), STATUS);
      break;
    }
    }
    if (err < 0)
      break;
    if (uses_si)
      areg_set(b, R_SI, abits, si + (uint64_t)step);
    if (uses_di)
      areg_set(b, R_DI, abits, di + (uint64_t)step);
    bt_mmio_retire(b); /* each iteration reads afresh */
    count--;
    done++;
    if (rep)
      areg_set(b, R_CX, abits, count);
    if (b->exit_ready) /* an MMIO write: one element per exit */
      break;
    if (cond && rep) {
      bool zf = b->ctx.flags & X86_RFLAGS_ZF;
      if (repne ? zf : !zf) {
        count = 0;
        break;
      }
    }
    if ((done & 1023) == 0 && atomic_load(&b->kicked))
      break;
  }
  if (err < 0) {
    /* Faulted at element `done`: earlier ones retired (the callout takes
       back the one the TU charged). */
    if (b->counting)
      b->ctx.budget += (int64_t)done;
    /* An exit (MMIO) redoes the instruction; a delivered exception has
       already put the handler's address in RIP (regression: the fault was
       re-executed with the frame pushed, until the stack ran out). */
    if (err == BT_EXIT)
      b->ctx.rip = in->rip;
    return err;
  }
  charge_iters(b, done);
  b->ctx.rip = (rep && count) ? in->rip : in->next;
  return BT_OK;
}

/* Complete an IN or INS left half-done by an exit (engine run()). */
int bt_complete_pio(struct bt_vcpu *b) {
  struct bt_mmio *m = &b->mmio;
  if (m->waiting) {
    m->waiting = false;
    if (m->n > 0)
      memcpy(m->log[m->n - 1].data, b->vcpu->exit.mmio.data,
             sizeof(m->log[0].data));
  }
  if (!b->pio.valid)
    return 0;
  b->pio.valid = false;
  if (!b->pio.string) {
    uint64_t v = 0;
    memcpy(&v, b->iobuf, b->pio.size);
    gpr_set(b, R_AX, b->pio.size, v);
    b->ctx.rip = b->pio.next_rip;
    if (b->counting)
      b->ctx.budget += 1;
    return 0;
  }
  /* INS: store the elements, then advance rDI/rCX. */
  b->ctx.rip = b->pio.rip;
  ZydisDecodedInstruction di;
  ZydisDecodedOperand op[ZYDIS_MAX_OPERAND_COUNT];
  uint8_t bytes[15];
  /* Not next_rip - rip: an instruction may wrap around the top of a
     16- or 32-bit code segment (that difference took 4073 bytes into
     these 15, found by fuzz_bt_code). */
  unsigned len = b->pio.len;
  uint64_t pc = bt_cs_base(b) + b->pio.rip;
  if (bt_read(b, code64(b) ? pc : (uint32_t)pc, bytes, len, false) < 0 ||
      bt_decode(b, bytes, len, &di, op) < 0)
    return 0; /* the exception (if any) was delivered */
  unsigned abits = di.address_width, size = b->pio.size;
  bool rep = di.attributes & ZYDIS_ATTRIB_HAS_REP;
  int64_t step =
      (b->ctx.flags & X86_RFLAGS_DF) ? -(int64_t)size : (int64_t)size;
  uint64_t n = b->pio.count;
  for (uint64_t k = 0; k < n; k++) {
    uint64_t lin, d = areg_get(b, R_DI, abits);
    if (seg_lin(b, S_ES, d, size, true, &lin) < 0 ||
        bt_write(b, lin, b->iobuf + k * size, size, false) < 0)
      return 0;
    areg_set(b, R_DI, abits, d + (uint64_t)step);
    if (rep)
      areg_set(b, R_CX, abits, areg_get(b, R_CX, abits) - 1);
    if (b->counting)
      b->ctx.budget += 1;
  }
  b->ctx.rip = (rep && areg_get(b, R_CX, abits)) ? b->pio.rip : b->pio.next_rip;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Division                                                                 */

static int do_div(struct bt_vcpu *b, struct insn *in, bool sign) {
  unsigned size = in->op[0].size / 8;
  uint64_t src;
  int err = op_read(b, in, 0, &src);
  if (err < 0)
    return err;
  uint64_t *g = b->ctx.gpr;
  uint64_t fl = b->ctx.flags;
  if (src == 0)
    return bt_raise(b, X86_EXC_DE, false, 0);
  switch (size) {
  case 1: {
    uint16_t ax = (uint16_t)g[R_AX];
    if (sign) {
      int q = (int16_t)ax / (int8_t)src;
      if (q < -128 || q > 127)
        return bt_raise(b, X86_EXC_DE, false, 0);
    } else if (ax / (uint8_t)src > 0xff) {
      return bt_raise(b, X86_EXC_DE, false, 0);
    }
    uint64_t rax = g[R_AX];
    uint8_t s8 = (uint8_t)src;
    if (sign)
      __asm__(HOSTF_IN "pushq %1; popfq; idivb %2; pushfq; popq %1" HOSTF_OUT
              : "+a"(rax), "+r"(fl)
              : "q"(s8)
              : "cc");
    else
      __asm__(HOSTF_IN "pushq %1; popfq; divb %2; pushfq; popq %1" HOSTF_OUT
              : "+a"(rax), "+r"(fl)
              : "q"(s8)
              : "cc");
    g[R_AX] = (g[R_AX] & ~0xffffull) | (rax & 0xffff);
    break;
  }
  case 2: {
    uint32_t n = (uint32_t)((g[R_DX] & 0xffff) << 16 | (g[R_AX] & 0xffff));
    if (sign) {
      int64_t q = (int64_t)(int32_t)n / (int16_t)src;
      if (q < -32768 || q > 32767)
        return bt_raise(b, X86_EXC_DE, false, 0);
    } else if (n / (uint16_t)src > 0xffff) {
      return bt_raise(b, X86_EXC_DE, false, 0);
    }
    uint64_t rax = g[R_AX], rdx = g[R_DX];
    uint16_t s16 = (uint16_t)src;
    if (sign)
      __asm__(HOSTF_IN "pushq %2; popfq; idivw %3; pushfq; popq %2" HOSTF_OUT
              : "+a"(rax), "+d"(rdx), "+r"(fl)
              : "r"(s16)
              : "cc");
    else
      __asm__(HOSTF_IN "pushq %2; popfq; divw %3; pushfq; popq %2" HOSTF_OUT
              : "+a"(rax), "+d"(rdx), "+r"(fl)
              : "r"(s16)
              : "cc");
    g[R_AX] = (g[R_AX] & ~0xffffull) | (rax & 0xffff);
    g[R_DX] = (g[R_DX] & ~0xffffull) | (rdx & 0xffff);
    break;
  }
  case 4: {
    uint64_t n = (g[R_DX] & 0xffffffff) << 32 | (g[R_AX] & 0xffffffff);
    if (sign) {
      if ((int32_t)src == -1 && n == 0xffffffff80000000ull)
        return bt_raise(b, X86_EXC_DE, false, 0);
      __int128 q = (__int128)(int64_t)n / (int32_t)src;
      if (q < INT32_MIN || q > INT32_MAX)
        return bt_raise(b, X86_EXC_DE, false, 0);
    } else if (n / (uint32_t)src > 0xffffffffull) {
      return bt_raise(b, X86_EXC_DE, false, 0);
    }
    uint64_t rax = g[R_AX], rdx = g[R_DX];
    uint32_t s32 = (uint32_t)src;
    if (sign)
      __asm__(HOSTF_IN "pushq %2; popfq; idivl %3; pushfq; popq %2" HOSTF_OUT
              : "+a"(rax), "+d"(rdx), "+r"(fl)
              : "r"(s32)
              : "cc");
    else
      __asm__(HOSTF_IN "pushq %2; popfq; divl %3; pushfq; popq %2" HOSTF_OUT
              : "+a"(rax), "+d"(rdx), "+r"(fl)
              : "r"(s32)
              : "cc");
    g[R_AX] = (uint32_t)rax;
    g[R_DX] = (uint32_t)rdx;
    break;
  }
  default: {
    unsigned __int128 n = (unsigned __int128)g[R_DX] << 64 | g[R_AX];
    if (sign) {
      __int128 sn = (__int128)n;
      if ((int64_t)src == -1 && sn == -(__int128)((unsigned __int128)1 << 63))
        return bt_raise(b, X86_EXC_DE, false, 0);
      __int128 q = sn / (int64_t)src;
      if (q < INT64_MIN || q > INT64_MAX)
        return bt_raise(b, X86_EXC_DE, false, 0);
    } else if (n / src > UINT64_MAX) {
      return bt_raise(b, X86_EXC_DE, false, 0);
    }
    uint64_t rax = g[R_AX], rdx = g[R_DX];
    if (sign)
      __asm__(HOSTF_IN "pushq %2; popfq; idivq %3; pushfq; popq %2" HOSTF_OUT
              : "+a"(rax), "+d"(rdx), "+r"(fl)
              : "r"(src)
              : "cc");
    else
      __asm__(HOSTF_IN "pushq %2; popfq; divq %3; pushfq; popq %2" HOSTF_OUT
              : "+a"(rax), "+d"(rdx), "+r"(fl)
              : "r"(src)
              : "cc");
    g[R_AX] = rax;
    g[R_DX] = rdx;
    break;
  }
  }
  set_status(b, fl, STATUS);
  b->ctx.rip = in->next;
  return BT_OK;
}

/* ------------------------------------------------------------------------ */
/* Descriptor-table instructions                                            */

static int do_lgdt_lidt(struct bt_vcpu *b, struct insn *in, bool idt) {
  if (b->cpl != 0)
    return bt_raise(b, X86_EXC_GP, true, 0);
  uint64_t lin;
  int err = op_lin(b, in, 0, false, &lin);
  if (err < 0)
    return err;
  uint16_t limit;
  uint64_t base = 0;
  unsigned bsize = code64(b) ? 8 : 4;
  if ((err = bt_read(b, lin, &limit, 2, false)) < 0 ||
      (err = bt_read(b, lin + 2, &base, bsize, false)) < 0)
    return err;
  if (!code64(b) && in->di->operand_width == 16)
    base &= 0xffffff;
  struct vmm_dtable *t = idt ? &b->idt : &b->gdt;
  t->base = base;
  t->limit = limit;
  b->ctx.rip = in->next;
  return BT_OK;
}

static int do_sgdt_sidt(struct bt_vcpu *b, struct insn *in, bool idt) {
  uint64_t lin;
  int err = op_lin(b, in, 0, true, &lin);
  if (err < 0)
    return err;
  struct vmm_dtable *t = idt ? &b->idt : &b->gdt;
  uint8_t buf[10];
  memcpy(buf, &t->limit, 2);
  memcpy(buf + 2, &t->base, 8);
  if ((err = bt_write(b, lin, buf, code64(b) ? 10 : 6, false)) < 0)
    return err;
  b->ctx.rip = in->next;
  return BT_OK;
}

/* LLDT / LTR: load a system descriptor from the GDT. */
static int do_lldt_ltr(struct bt_vcpu *b, struct insn *in, bool tr) {
  if (!pmode(b))
    return bt_raise(b, X86_EXC_UD, false, 0);
  if (b->cpl != 0)
    return bt_raise(b, X86_EXC_GP, true, 0);
  uint64_t v;
  int err = op_read(b, in, 0, &v);
  if (err < 0)
    return err;
  uint16_t sel = (uint16_t)v;
  if ((sel & ~3u) == 0) {
    if (tr)
      return bt_raise(b, X86_EXC_GP, true, 0);
    memset(&b->ldt, 0, sizeof(b->ldt));
    b->ldt.unusable = 1;
    b->ldt.selector = sel;
    b->ctx.rip = in->next;
    return BT_OK;
  }
  if (sel & 4)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  unsigned dsize = (b->efer & X86_EFER_LMA) ? 16 : 8;
  if ((sel & ~7u) + dsize - 1 > b->gdt.limit)
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  uint64_t addr = b->gdt.base + (sel & ~7u);
  uint64_t d[2] = {0, 0};
  if ((err = bt_read(b, addr, d, dsize, true)) < 0)
    return err;
  unsigned type = (d[0] >> 40) & 0xf;
  bool s = (d[0] >> 44) & 1, p = (d[0] >> 47) & 1;
  if (s ||
      (tr ? (type != X86_SEG_TSS_AVAILABLE && type != 1) : type != X86_SEG_LDT))
    return bt_raise(b, X86_EXC_GP, true, sel & ~3u);
  if (!p)
    return bt_raise(b, X86_EXC_NP, true, sel & ~3u);
  struct vmm_segment seg = {0};
  seg.selector = sel;
  seg.base = ((d[0] >> 16) & 0xffffff) | (((d[0] >> 56) & 0xff) << 24);
  if (dsize == 16)
    seg.base |= (d[1] & 0xffffffffull) << 32;
  uint32_t limit = (uint32_t)((d[0] & 0xffff) | (((d[0] >> 48) & 0xf) << 16));
  seg.g = (d[0] >> 55) & 1;
  seg.limit = seg.g ? (limit << 12) | 0xfff : limit;
  seg.type = (uint8_t)type;
  seg.present = 1;
  seg.dpl = (d[0] >> 45) & 3;
  if (tr) {
    /* Mark the TSS busy in the GDT. */
    uint8_t acc = (uint8_t)((d[0] >> 40) | 2);
    if ((err = bt_write(b, addr + 5, &acc, 1, true)) < 0)
      return err;
    seg.type |= 2;
    b->tr = seg;
  } else {
    b->ldt = seg;
  }
  b->ctx.rip = in->next;
  return BT_OK;
}

/* LAR / LSL / VERR / VERW. */
static int do_desc_query(struct bt_vcpu *b, struct insn *in) {
  ZydisMnemonic m = in->di->mnemonic;
  if (!pmode(b))
    return bt_raise(b, X86_EXC_UD, false, 0);
  int src = (m == ZYDIS_MNEMONIC_VERR || m == ZYDIS_MNEMONIC_VERW) ? 0 : 1;
  uint64_t v;
  int err = op_read(b, in, src, &v);
  if (err < 0)
    return err;
  uint16_t sel = (uint16_t)v;
  bool ok = false;
  uint64_t d = 0;
  if ((sel & ~3u) != 0) {
    uint64_t base = (sel & 4) ? b->ldt.base : b->gdt.base;
    uint32_t limit = (sel & 4) ? b->ldt.limit : b->gdt.limit;
    if (!((sel & 4) && b->ldt.unusable) && (sel & ~7u) + 7 <= limit) {
      if ((err = bt_read(b, base + (sel & ~7u), &d, 8, true)) < 0)
        return err;
      unsigned dpl = (d >> 45) & 3, type = (d >> 40) & 0xf;
      bool s = (d >> 44) & 1;
      bool conf = s && (type & 0xc) == 0xc;
      bool priv = conf || (dpl >= b->cpl && dpl >= (sel & 3u));
      switch (m) {
      case ZYDIS_MNEMONIC_VERR:
        ok = s && priv && (!(type & 8) || (type & 2));
        break;
      case ZYDIS_MNEMONIC_VERW:
        ok = s && priv && !(type & 8) && (type & 2);
        break;
      case ZYDIS_MNEMONIC_LSL:
        ok = priv && (s || type == 1 || type == 2 || type == 3 || type == 9 ||
                      type == 0xb);
        break;
      default: /* LAR */
        ok = priv &&
             (s || (type != 0 && type != 8 && type != 0xa && type != 0xd &&
                    type != 0xe && type != 0xf &&
                    !(code64(b) && (type == 4 || type == 6 || type == 7))));
        break;
      }
    }
  }
  uint64_t f = b->ctx.flags & ~X86_RFLAGS_ZF;
  if (ok)
    f |= X86_RFLAGS_ZF;
  b->ctx.flags = f;
  if (ok && m == ZYDIS_MNEMONIC_LAR)
    op_write(b, in, 0, d >> 32 & 0x00f0ff00);
  if (ok && m == ZYDIS_MNEMONIC_LSL) {
    uint32_t limit = (uint32_t)((d & 0xffff) | (((d >> 48) & 0xf) << 16));
    if ((d >> 55) & 1)
      limit = (limit << 12) | 0xfff;
    op_write(b, in, 0, limit);
  }
  b->ctx.rip = in->next;
  return BT_OK;
}

/* ------------------------------------------------------------------------ */
/* FPU control                                                              */

static void fpu_host_load(struct bt_vcpu *b) {
  __asm__ volatile("fxrstor64 %0" ::"m"(*(const uint8_t(*)[512])b->ctx.fpu));
}
static void fpu_host_save(struct bt_vcpu *b) {
  __asm__ volatile("fxsave64 %0" : "=m"(*(uint8_t(*)[512])b->ctx.fpu));
}
/* Back to the state the callout gate gave C code. */
static void fpu_host_reset(struct bt_vcpu *b) {
  __asm__ volatile("fninit; fldcw %0; ldmxcsr %1" ::"m"(b->ctx.fcw_host),
                   "m"(b->ctx.mxcsr_host));
}

static int do_fpu_ctl(struct bt_vcpu *b, struct insn *in) {
  ZydisMnemonic m = in->di->mnemonic;
  vmm__bt_fpu_sync(&b->ctx); /* the gate saved only XMM and MXCSR */
  if (b->cr0 & (X86_CR0_EM | X86_CR0_TS)) {
    bool sse = m == ZYDIS_MNEMONIC_LDMXCSR || m == ZYDIS_MNEMONIC_STMXCSR ||
               m == ZYDIS_MNEMONIC_FXSAVE || m == ZYDIS_MNEMONIC_FXSAVE64 ||
               m == ZYDIS_MNEMONIC_FXRSTOR || m == ZYDIS_MNEMONIC_FXRSTOR64;
    if ((b->cr0 & X86_CR0_EM) && sse)
      return bt_raise(b, X86_EXC_UD, false, 0);
    if (b->cr0 & X86_CR0_TS)
      return bt_raise(b, X86_EXC_NM, false, 0);
    if (b->cr0 & X86_CR0_EM)
      return bt_raise(b, X86_EXC_NM, false, 0);
  }
  uint64_t lin = 0;
  int err;
  int mi = -1;
  for (int i = 0; i < in->di->operand_count_visible; i++)
    if (in->op[i].type == ZYDIS_OPERAND_TYPE_MEMORY)
      mi = i;
  bool store = m == ZYDIS_MNEMONIC_FNSTCW || m == ZYDIS_MNEMONIC_FNSTENV ||
               m == ZYDIS_MNEMONIC_FNSAVE || m == ZYDIS_MNEMONIC_FXSAVE ||
               m == ZYDIS_MNEMONIC_FXSAVE64 || m == ZYDIS_MNEMONIC_STMXCSR;
  if (mi >= 0 && (err = op_lin(b, in, mi, store, &lin)) < 0)
    return err;
  /* Alignment checks of the save areas (bt_read/bt_write check only 2-,
     4- and 8-byte accesses): the x87 environment and state at 4 bytes
     (2 with a 16-bit operand size), as the SDM's #AC table says; FXSAVE
     and FXRSTOR are implementation-dependent (#AC or #GP when not
     16-byte aligned): AMD hosts raise #AC below 4-byte alignment. */
  if (mi >= 0 && (b->key & BT_K_AC)) {
    unsigned align = 0;
    switch (m) {
    case ZYDIS_MNEMONIC_FNSTENV:
    case ZYDIS_MNEMONIC_FLDENV:
    case ZYDIS_MNEMONIC_FNSAVE:
    case ZYDIS_MNEMONIC_FRSTOR:
      align = in->di->operand_width == 16 ? 2 : 4;
      break;
    case ZYDIS_MNEMONIC_FXSAVE:
    case ZYDIS_MNEMONIC_FXSAVE64:
    case ZYDIS_MNEMONIC_FXRSTOR:
    case ZYDIS_MNEMONIC_FXRSTOR64: align = b->vm->ac16 ? 4 : 0; break;
    default: break;
    }
    if (align && (lin & (align - 1)))
      return bt_raise(b, X86_EXC_AC, true, 0);
  }
  switch (m) {
  case ZYDIS_MNEMONIC_FNINIT:
    /* On the host FPU: the registers keep their contents (fxsave and
       fnsave show them), and with TOP back at 0 the image, in stack
       order, rotates. */
    fpu_host_load(b);
    __asm__ volatile("fninit");
    fpu_host_save(b);
    fpu_host_reset(b);
    bt_fpu_set_controls(b, 0x37f, bt_guest_mxcsr(b));
    break;
  case ZYDIS_MNEMONIC_FLDCW: {
    uint16_t v;
    if ((err = bt_read(b, lin, &v, 2, false)) < 0)
      return err;
    bt_fpu_set_controls(b, v, bt_guest_mxcsr(b));
    break;
  }
  case ZYDIS_MNEMONIC_FNSTCW:
    if ((err = bt_write(b, lin, &b->fcw, 2, false)) < 0)
      return err;
    break;
  case ZYDIS_MNEMONIC_LDMXCSR: {
    uint32_t v;
    if ((err = bt_read(b, lin, &v, 4, false)) < 0)
      return err;
    if (v & 0xffff0000u)
      return bt_raise(b, X86_EXC_GP, true, 0);
    uint16_t fcw = b->fcw;
    bt_fpu_set_controls(b, fcw, v);
    break;
  }
  case ZYDIS_MNEMONIC_STMXCSR: {
    uint32_t v = bt_guest_mxcsr(b);
    if ((err = bt_write(b, lin, &v, 4, false)) < 0)
      return err;
    break;
  }
  case ZYDIS_MNEMONIC_FXSAVE:
  case ZYDIS_MNEMONIC_FXSAVE64: {
    if (lin & 15)
      return bt_raise(b, X86_EXC_GP, true, 0);
    uint8_t a[512];
    memcpy(a, b->ctx.fpu, 512);
    memcpy(a, &b->fcw, 2);
    uint32_t mx = bt_guest_mxcsr(b), mxmask = 0xffff;
    memcpy(a + 24, &mx, 4);
    /* BT's model: no misaligned-SSE mode (the host's image may say it). */
    memcpy(a + 28, &mxmask, 4);
    /* The processor writes the header, ST0-7 and the XMM registers the
       mode has (8 outside 64-bit code); the rest of the 512 bytes is the
       program's (software-available bytes 464-511 included) and keeps
       what it held. */
    bool code64 = (b->key & BT_K_CODE_MASK) == BT_K_CODE64;
    unsigned n = code64 ? 416 : 288;
    /* The access is all 512 bytes, though: a page that faults under the
       unwritten tail faults the instruction (the host names the last
       byte, which is checked first here for that reason). */
    uint64_t last = lin + 511, gpa;
    if ((err = bt_translate(b, code64 ? last : (uint32_t)last, BT_W, false,
                            &gpa)) < 0 ||
        (err = bt_write(b, lin, a, n, false)) < 0)
      return err;
    break;
  }
  case ZYDIS_MNEMONIC_FXRSTOR:
  case ZYDIS_MNEMONIC_FXRSTOR64: {
    if (lin & 15)
      return bt_raise(b, X86_EXC_GP, true, 0);
    uint8_t a[512];
    if ((err = bt_read(b, lin, a, 512, false)) < 0)
      return err;
    uint16_t fcw;
    uint32_t mx;
    memcpy(&fcw, a, 2);
    memcpy(&mx, a + 24, 4);
    if (mx & 0xffff0000u)
      return bt_raise(b, X86_EXC_GP, true, 0);
    uint32_t mxmask = 0xffff;
    memcpy(a + 28, &mxmask, 4);
    /* Outside 64-bit code XMM8-15 are not loaded (nor stored). */
    if ((b->key & BT_K_CODE_MASK) != BT_K_CODE64)
      memcpy(a + 288, b->ctx.fpu + 288, 128);
    memcpy(b->ctx.fpu, a, 512);
    bt_fpu_set_controls(b, fcw, mx);
    break;
  }
  case ZYDIS_MNEMONIC_FNSTENV:
  case ZYDIS_MNEMONIC_FNSAVE: {
    /* Let the host produce the image from the guest state, then put the
       guest-visible control word in it (32-bit protected-mode format). */
    uint8_t img[108] __attribute__((aligned(16)));
    uint8_t after[512] __attribute__((aligned(16)));
    unsigned n = m == ZYDIS_MNEMONIC_FNSAVE ? 108 : 28;
    uint16_t gfcw = b->fcw;
    fpu_host_load(b);
    if (m == ZYDIS_MNEMONIC_FNSAVE) {
      /* FNSAVE reinitializes the x87 unit, as fninit above; the state
         changes only once the image is written (a #PF leaves it). */
      __asm__ volatile("fnsave %0" : "=m"(img));
      __asm__ volatile("fxsave64 %0" : "=m"(after));
    } else {
      __asm__ volatile("fnstenv %0" : "=m"(img));
    }
    fpu_host_reset(b);
    memcpy(img, &gfcw, 2);
    if ((err = bt_write(b, lin, img, n, false)) < 0)
      return err;
    if (m == ZYDIS_MNEMONIC_FNSAVE) {
      memcpy(b->ctx.fpu, after, 160); /* x87 part; XMM and MXCSR stay */
      bt_fpu_set_controls(b, 0x37f, bt_guest_mxcsr(b));
    }
    break;
  }
  case ZYDIS_MNEMONIC_FLDENV:
  case ZYDIS_MNEMONIC_FRSTOR: {
    uint8_t img[108] __attribute__((aligned(16)));
    unsigned n = m == ZYDIS_MNEMONIC_FRSTOR ? 108 : 28;
    if ((err = bt_read(b, lin, img, n, false)) < 0)
      return err;
    uint16_t fcw;
    memcpy(&fcw, img, 2);
    uint16_t hfcw = (uint16_t)(fcw | 0x3f);
    memcpy(img, &hfcw, 2);
    fpu_host_load(b);
    if (m == ZYDIS_MNEMONIC_FRSTOR)
      __asm__ volatile("frstor %0" ::"m"(img));
    else
      __asm__ volatile("fldenv %0" ::"m"(img));
    fpu_host_save(b);
    fpu_host_reset(b);
    bt_fpu_set_controls(b, fcw, bt_guest_mxcsr(b));
    break;
  }
  default: return bt_raise(b, X86_EXC_UD, false, 0);
  }
  b->ctx.rip = in->next;
  return BT_OK;
}

/* ------------------------------------------------------------------------ */
/* System calls                                                             */

void bt_flat_seg(struct vmm_segment *s, uint16_t sel, bool code, bool l,
                 unsigned dpl) {
  /* Field by field: gcc zeroed the struct first with rep stos, whose
     start-up was a fifth of a sysret's emulation. */
  s->base = 0;
  s->limit = 0xffffffff;
  s->selector = sel;
  s->type = code ? X86_SEG_CODE_RX_ACCESSED : X86_SEG_DATA_RW_ACCESSED;
  s->present = 1;
  s->dpl = (uint8_t)dpl;
  s->db = !l;
  s->s = 1;
  s->l = l;
  s->g = 1;
  s->avl = 0;
  s->unusable = 0;
  s->padding = 0;
}

static int do_syscall(struct bt_vcpu *b, struct insn *in) {
  if (!(b->efer & X86_EFER_SCE) || !pmode(b))
    return bt_raise(b, X86_EXC_UD, false, 0);
  uint16_t sel = (uint16_t)(b->star >> 32);
  bool lm = b->efer & X86_EFER_LMA;
  uint64_t fl = bt_get_rflags(b);
  if (lm) {
    b->ctx.gpr[R_CX] = in->next;
    b->ctx.gpr[R_11] = fl & ~X86_RFLAGS_RF;
    b->ctx.rip = code64(b) ? b->lstar : b->cstar;
    bt_set_rflags(b, fl & ~(b->sfmask | X86_RFLAGS_RF));
    bt_flat_seg(&b->seg[S_CS], sel & ~3u, true, true, 0);
  } else {
    b->ctx.gpr[R_CX] = (uint32_t)in->next;
    b->ctx.rip = (uint32_t)b->star;
    bt_set_rflags(b, fl & ~(X86_RFLAGS_VM | X86_RFLAGS_IF | X86_RFLAGS_RF));
    bt_flat_seg(&b->seg[S_CS], sel & ~3u, true, false, 0);
  }
  bt_flat_seg(&b->seg[S_SS], (uint16_t)((sel + 8) & ~3u), false, false, 0);
  b->cpl = 0;
  bt_update_mode(b);
  return BT_OK;
}

static int do_sysret(struct bt_vcpu *b, struct insn *in) {
  if (!(b->efer & X86_EFER_SCE) || !pmode(b))
    return bt_raise(b, X86_EXC_UD, false, 0);
  if (b->cpl != 0)
    return bt_raise(b, X86_EXC_GP, true, 0);
  uint16_t sel = (uint16_t)(b->star >> 48);
  bool lm = b->efer & X86_EFER_LMA;
  bool to64 = in->di->operand_width == 64;
  if (lm) {
    if (to64 && !canonical(b->ctx.gpr[R_CX]))
      return bt_raise(b, X86_EXC_GP, true, 0);
    if (to64) {
      bt_flat_seg(&b->seg[S_CS], (uint16_t)((sel + 16) | 3), true, true, 3);
      b->ctx.rip = b->ctx.gpr[R_CX];
    } else {
      bt_flat_seg(&b->seg[S_CS], (uint16_t)(sel | 3), true, false, 3);
      b->ctx.rip = (uint32_t)b->ctx.gpr[R_CX];
    }
    bt_set_rflags(b, (b->ctx.gpr[R_11] & 0x3c7fd7) | X86_RFLAGS_FIXED);
  } else {
    bt_flat_seg(&b->seg[S_CS], (uint16_t)(sel | 3), true, false, 3);
    b->ctx.rip = (uint32_t)b->ctx.gpr[R_CX];
    b->vflags |= X86_RFLAGS_IF;
  }
  /* SS gets the selector; its cached attributes are fixed. */
  bt_flat_seg(&b->seg[S_SS], (uint16_t)((sel + 8) | 3), false, false, 3);
  b->cpl = 3;
  bt_update_mode(b);
  return BT_OK;
}

static int do_sysenter(struct bt_vcpu *b, struct insn *in) {
  VMM__UNUSED(in);
  if (!pmode(b) || (b->sysenter_cs & ~3ull) == 0)
    return bt_raise(b, X86_EXC_GP, true, 0);
  bool lm = b->efer & X86_EFER_LMA;
  uint16_t sel = (uint16_t)(b->sysenter_cs & ~3ull);
  b->vflags &= ~(X86_RFLAGS_VM | X86_RFLAGS_IF | X86_RFLAGS_RF);
  bt_flat_seg(&b->seg[S_CS], sel, true, lm, 0);
  bt_flat_seg(&b->seg[S_SS], (uint16_t)(sel + 8), false, false, 0);
  b->cpl = 0;
  b->ctx.rip = lm ? b->sysenter_eip : (uint32_t)b->sysenter_eip;
  b->ctx.gpr[R_SP] = lm ? b->sysenter_esp : (uint32_t)b->sysenter_esp;
  bt_update_mode(b);
  return BT_OK;
}

static int do_sysexit(struct bt_vcpu *b, struct insn *in) {
  if (!pmode(b) || b->cpl != 0 || (b->sysenter_cs & ~3ull) == 0)
    return bt_raise(b, X86_EXC_GP, true, 0);
  bool to64 = in->di->operand_width == 64;
  uint16_t base = (uint16_t)(b->sysenter_cs & ~3ull);
  if (to64) {
    bt_flat_seg(&b->seg[S_CS], (uint16_t)((base + 32) | 3), true, true, 3);
    bt_flat_seg(&b->seg[S_SS], (uint16_t)((base + 40) | 3), false, false, 3);
    b->ctx.rip = b->ctx.gpr[R_DX];
    b->ctx.gpr[R_SP] = b->ctx.gpr[R_CX];
  } else {
    bt_flat_seg(&b->seg[S_CS], (uint16_t)((base + 16) | 3), true, false, 3);
    bt_flat_seg(&b->seg[S_SS], (uint16_t)((base + 24) | 3), false, false, 3);
    b->ctx.rip = (uint32_t)b->ctx.gpr[R_DX];
    b->ctx.gpr[R_SP] = (uint32_t)b->ctx.gpr[R_CX];
  }
  b->cpl = 3;
  bt_update_mode(b);
  return BT_OK;
}

/* ------------------------------------------------------------------------ */
/* Bit tests on memory with a register bit offset                           */

/*
 * BT/BTS/BTR/BTC m, r address memory at ea + (offset >> log2(bits)) *
 * bytes, anywhere within +-2^63 bits: run natively they would reach past
 * the checked operand, so C finds the element, then runs the host
 * instruction on it (atomically with lock) with the offset reduced.
 */
static int do_bitmem(struct bt_vcpu *b, struct insn *in) {
  unsigned bits = in->op[0].size;
  unsigned bytes = bits / 8;
  uint64_t off;
  int err = op_read(b, in, 1, &off);
  if (err < 0)
    return err;
  int64_t soff = bits == 16   ? (int16_t)off
                 : bits == 32 ? (int32_t)off
                              : (int64_t)off;
  int64_t elem = soff >> (bits == 16 ? 4 : bits == 32 ? 5 : 6);
  uint64_t bit = (uint64_t)soff & (bits - 1);
  const ZydisDecodedOperand *o = &in->op[0];
  uint64_t ea =
      ea_of(b, in->di, o, in->next) + (uint64_t)(elem * (int64_t)bytes);
  if (in->di->address_width == 16)
    ea &= 0xffff;
  else if (in->di->address_width == 32)
    ea &= 0xffffffff;
  int s = sreg_index(o->mem.segment);
  bool write = in->di->mnemonic != ZYDIS_MNEMONIC_BT;
  uint64_t lin;
  if ((err = seg_lin(b, s < 0 ? S_DS : s, ea, bytes, write, &lin)) < 0)
    return err;
  uint64_t v = 0;
  if ((err = bt_read(b, lin, &v, bytes, false)) < 0)
    return err;
  /* Atomic on RAM within one page; otherwise read-modify-write. */
  uint64_t gpa;
  uint8_t *p = NULL;
  if (write && (lin & 0xfff) + bytes <= 4096 &&
      bt_translate(b, lin, BT_W, false, &gpa) == 0)
    p = bt_ram_writable(b, gpa, bytes);
  uint64_t fl = b->ctx.flags;
  uint64_t nv = v;
  uint64_t cf;
#define BITOP(insn)                                                            \
  do {                                                                         \
    if (p != NULL && bytes == 8)                                               \
      __asm__ volatile(HOSTF_IN "pushq %2; popfq; lock " insn                  \
                                "q %3, %1; pushfq; popq %0" HOSTF_OUT          \
                       : "=r"(fl), "+m"(*(uint64_t *)p)                        \
                       : "0"(fl), "r"(bit)                                     \
                       : "cc", "memory");                                      \
    else if (p != NULL && bytes == 4)                                          \
      __asm__ volatile(HOSTF_IN "pushq %2; popfq; lock " insn                  \
                                "l %k3, %1; pushfq; popq %0" HOSTF_OUT         \
                       : "=r"(fl), "+m"(*(uint32_t *)p)                        \
                       : "0"(fl), "r"(bit)                                     \
                       : "cc", "memory");                                      \
    else if (p != NULL)                                                        \
      __asm__ volatile(HOSTF_IN "pushq %2; popfq; lock " insn                  \
                                "w %w3, %1; pushfq; popq %0" HOSTF_OUT         \
                       : "=r"(fl), "+m"(*(uint16_t *)p)                        \
                       : "0"(fl), "r"(bit)                                     \
                       : "cc", "memory");                                      \
    else                                                                       \
      __asm__ volatile(HOSTF_IN "pushq %2; popfq; " insn                       \
                                "q %3, %1; pushfq; popq %0" HOSTF_OUT          \
                       : "=r"(fl), "+r"(nv)                                    \
                       : "0"(fl), "r"(bit)                                     \
                       : "cc");                                                \
  } while (0)
  switch (in->di->mnemonic) {
  case ZYDIS_MNEMONIC_BTS: BITOP("bts"); break;
  case ZYDIS_MNEMONIC_BTR: BITOP("btr"); break;
  case ZYDIS_MNEMONIC_BTC: BITOP("btc"); break;
  default:
    p = NULL;
    __asm__(HOSTF_IN "pushq %1; popfq; btq %2, %3; pushfq; popq %0" HOSTF_OUT
            : "=r"(fl)
            : "0"(fl), "r"(bit), "r"(v)
            : "cc");
    break;
  }
#undef BITOP
  cf = fl;
  set_status(b, cf, STATUS);
  if (write && p == NULL && (err = bt_write(b, lin, &nv, bytes, false)) < 0)
    return err;
  if (p != NULL)
    bt_ram_written(b, gpa, bytes);
  b->ctx.rip = in->next;
  return BT_OK;
}

/* ------------------------------------------------------------------------ */
/* BCD and other legacy arithmetic (invalid in 64-bit mode)                 */

static int do_bcd(struct bt_vcpu *b, struct insn *in) {
  uint64_t *ax = &b->ctx.gpr[R_AX];
  uint8_t al = (uint8_t)*ax, ah = (uint8_t)(*ax >> 8);
  bool cf = b->ctx.flags & X86_RFLAGS_CF, af = b->ctx.flags & X86_RFLAGS_AF;
  uint64_t f = b->ctx.flags & ~STATUS;
  switch (in->di->mnemonic) {
  case ZYDIS_MNEMONIC_DAA:
  case ZYDIS_MNEMONIC_DAS: {
    bool das = in->di->mnemonic == ZYDIS_MNEMONIC_DAS;
    uint8_t old = al;
    bool ncf = false, naf = false;
    if ((al & 0xf) > 9 || af) {
      ncf = cf || (das ? al < 6 : al > 0xf9);
      al = (uint8_t)(das ? al - 6 : al + 6);
      naf = true;
    }
    if (old > 0x99 || cf) {
      al = (uint8_t)(das ? al - 0x60 : al + 0x60);
      ncf = true;
    }
    f |= szp_flags(al) | (ncf ? X86_RFLAGS_CF : 0) | (naf ? X86_RFLAGS_AF : 0);
    *ax = (*ax & ~0xffull) | al;
    break;
  }
  case ZYDIS_MNEMONIC_AAA:
  case ZYDIS_MNEMONIC_AAS: {
    bool aas = in->di->mnemonic == ZYDIS_MNEMONIC_AAS;
    uint16_t v = (uint16_t)*ax;
    if ((al & 0xf) > 9 || af) {
      v = aas ? (uint16_t)(v - 6) : (uint16_t)(v + 0x106);
      if (aas)
        v = (uint16_t)(v - 0x100);
      f |= X86_RFLAGS_AF | X86_RFLAGS_CF;
    }
    v &= 0xff0f;
    f |= szp_flags((uint8_t)v);
    *ax = (*ax & ~0xffffull) | v;
    break;
  }
  case ZYDIS_MNEMONIC_AAM: {
    uint8_t base = (uint8_t)in->op[0].imm.value.u;
    if (base == 0)
      return bt_raise(b, X86_EXC_DE, false, 0);
    ah = al / base;
    al = al % base;
    f |= szp_flags(al);
    *ax = (*ax & ~0xffffull) | (uint64_t)ah << 8 | al;
    break;
  }
  case ZYDIS_MNEMONIC_AAD: {
    uint8_t base = (uint8_t)in->op[0].imm.value.u;
    al = (uint8_t)(al + ah * base);
    f |= szp_flags(al);
    *ax = (*ax & ~0xffffull) | al;
    break;
  }
  case ZYDIS_MNEMONIC_SALC:
    *ax = (*ax & ~0xffull) | (cf ? 0xff : 0);
    f = b->ctx.flags;
    break;
  default: return bt_raise(b, X86_EXC_UD, false, 0);
  }
  b->ctx.flags = f | X86_RFLAGS_FIXED;
  b->ctx.rip = in->next;
  return BT_OK;
}

/* ------------------------------------------------------------------------ */
/* CPUID                                                                    */

void bt_cpuid(struct bt_vcpu *b, uint32_t fn, uint32_t idx, uint32_t out[4]) {
  vmm_vcpu *v = b->vcpu;
  const struct vmm_cpuid_entry *e =
      vmm__cpuid_find(v->cpuid, v->ncpuid, fn, idx);
  if (e == NULL) {
    /* Beyond the table: Intel returns the highest basic leaf; keep simple
       and consistent: zeros. */
    out[0] = out[1] = out[2] = out[3] = 0;
    return;
  }
  out[0] = e->eax;
  out[1] = e->ebx;
  out[2] = e->ecx;
  out[3] = e->edx;
  if (fn == 1) {
    /* OSXSAVE and APIC follow live state. */
    out[2] &= ~(1u << 27);
  }
}

/* ------------------------------------------------------------------------ */
/* The emulator                                                             */

static int osize_bytes(const struct insn *in) {
  return in->di->operand_width / 8;
}

/* The target of a near branch, truncated to the operand size; #GP if it
   is beyond CS's limit or not canonical (before anything is pushed). */
static int near_target(struct bt_vcpu *b, struct insn *in, uint64_t *target) {
  unsigned ow = in->di->operand_width;
  if (ow == 16)
    *target &= 0xffff;
  else if (ow == 32)
    *target &= 0xffffffff;
  if (!code64(b) && pmode(b) && *target > b->seg[S_CS].limit)
    return bt_raise(b, X86_EXC_GP, true, 0);
  if (code64(b) && !canonical(*target))
    return bt_raise(b, X86_EXC_GP, true, 0);
  return BT_OK;
}

static int near_branch(struct bt_vcpu *b, struct insn *in, uint64_t target) {
  int err = near_target(b, in, &target);
  if (err < 0)
    return err;
  b->ctx.rip = target;
  return BT_OK;
}

static int rel_target(struct insn *in, uint64_t *t) {
  for (int i = 0; i < in->di->operand_count_visible; i++)
    if (in->op[i].type == ZYDIS_OPERAND_TYPE_IMMEDIATE &&
        in->op[i].imm.is_relative) {
      *t = in->next + in->op[i].imm.value.u;
      return 0;
    }
  return -1;
}

static int emulate(struct bt_vcpu *b, struct insn *in) {
  ZydisMnemonic m = in->di->mnemonic;
  uint64_t *g = b->ctx.gpr;
  uint64_t v = 0;
  int err;
  unsigned os = (unsigned)osize_bytes(in);

  switch (m) {
  case ZYDIS_MNEMONIC_NOP:
  case ZYDIS_MNEMONIC_PAUSE: break;

  case ZYDIS_MNEMONIC_HLT:
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    b->ctx.rip = in->next;
    b->halted = true;
    return BT_OK;

  case ZYDIS_MNEMONIC_CLI:
  case ZYDIS_MNEMONIC_STI:
    if (pmode(b) && b->cpl > iopl(b))
      return bt_raise(b, X86_EXC_GP, true, 0);
    if (m == ZYDIS_MNEMONIC_CLI) {
      b->vflags &= ~X86_RFLAGS_IF;
    } else if (!(b->vflags & X86_RFLAGS_IF)) {
      b->vflags |= X86_RFLAGS_IF;
      b->shadow = true;
      b->shadow_rip = in->next;
    }
    break;

  case ZYDIS_MNEMONIC_PUSHF:
  case ZYDIS_MNEMONIC_PUSHFD:
  case ZYDIS_MNEMONIC_PUSHFQ:
    v = bt_get_rflags(b) & ~(X86_RFLAGS_VM | X86_RFLAGS_RF);
    if ((err = push(b, v, os)) < 0)
      return err;
    break;

  case ZYDIS_MNEMONIC_POPF:
  case ZYDIS_MNEMONIC_POPFD:
  case ZYDIS_MNEMONIC_POPFQ: {
    uint64_t sp = g[R_SP];
    if ((err = pop_at(b, &sp, &v, os)) < 0)
      return err;
    g[R_SP] = sp;
    bool if_was = b->vflags & X86_RFLAGS_IF;
    bt_write_flags(b, v, bt_popf_mask(b, os));
    VMM__UNUSED(if_was);
    break;
  }

  case ZYDIS_MNEMONIC_IN: return do_in_out(b, in, true);
  case ZYDIS_MNEMONIC_OUT: return do_in_out(b, in, false);

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
  case ZYDIS_MNEMONIC_INSB:
  case ZYDIS_MNEMONIC_INSW:
  case ZYDIS_MNEMONIC_INSD:
  case ZYDIS_MNEMONIC_OUTSB:
  case ZYDIS_MNEMONIC_OUTSW:
  case ZYDIS_MNEMONIC_OUTSD: return do_string(b, in);
  case ZYDIS_MNEMONIC_MOVSD:
  case ZYDIS_MNEMONIC_CMPSD:
    /* The SSE2 forms share these mnemonics; they have explicit operands. */
    if (in->di->operand_count_visible == 0)
      return do_string(b, in);
    return bt_raise(b, X86_EXC_UD, false, 0);

  case ZYDIS_MNEMONIC_INT:
    if ((err = bt_deliver(b, (unsigned)in->op[0].imm.value.u, BT_EV_SOFT, false,
                          0, in->next)) < 0)
      return err;
    return BT_OK;
  case ZYDIS_MNEMONIC_INT3:
    if (b->dbg_on && (b->dbg.flags & VMM_DEBUG_SW_BREAKPOINTS)) {
      struct vmm_exit *e = &b->vcpu->exit;
      memset(e, 0, sizeof(*e));
      e->reason = VMM_EXIT_DEBUG;
      e->debug.vector = X86_EXC_BP;
      e->debug.rip = in->rip;
      e->debug.dr7 = b->dr[7];
      e->debug.dr6 = b->dr[6];
      b->exit_ready = true;
      return BT_EXIT;
    }
    if (b->exc_mask & (1u << X86_EXC_BP)) {
      /* RIP stays at the int3, as KVM reports it. */
      bt_raise(b, X86_EXC_BP, false, 0);
      return BT_EXIT;
    }
    if ((err = bt_deliver(b, X86_EXC_BP, BT_EV_SOFTX, false, 0, in->next)) < 0)
      return err;
    return BT_OK;
  case ZYDIS_MNEMONIC_INTO:
    if (!(b->ctx.flags & X86_RFLAGS_OF))
      break;
    if ((err = bt_deliver(b, X86_EXC_OF, BT_EV_SOFTX, false, 0, in->next)) < 0)
      return err;
    return BT_OK;
  case ZYDIS_MNEMONIC_INT1:
    if ((err = bt_deliver(b, X86_EXC_DB, BT_EV_EXC, false, 0, in->next)) < 0)
      return err;
    return BT_OK;
  case ZYDIS_MNEMONIC_IRET:
  case ZYDIS_MNEMONIC_IRETD:
  case ZYDIS_MNEMONIC_IRETQ: return bt_iret(b, os);

  case ZYDIS_MNEMONIC_CPUID: {
    uint32_t r[4];
    bt_cpuid(b, (uint32_t)g[R_AX], (uint32_t)g[R_CX], r);
    g[R_AX] = r[0];
    g[R_BX] = r[1];
    g[R_CX] = r[2];
    g[R_DX] = r[3];
    break;
  }
  case ZYDIS_MNEMONIC_RDTSC:
  case ZYDIS_MNEMONIC_RDTSCP: {
    if ((b->cr4 & X86_CR4_TSD) && b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    uint64_t t = bt_tsc(b);
    g[R_AX] = (uint32_t)t;
    g[R_DX] = t >> 32;
    if (m == ZYDIS_MNEMONIC_RDTSCP)
      g[R_CX] = (uint32_t)b->tsc_aux;
    break;
  }
  case ZYDIS_MNEMONIC_RDPMC:
    /* #GP(0) at CPL > 0 with CR4.PCE clear, and for a counter that does
       not exist, which is every counter: CPUID reports no PMU. */
    return bt_raise(b, X86_EXC_GP, true, 0);
  case ZYDIS_MNEMONIC_RDMSR:
  case ZYDIS_MNEMONIC_WRMSR:
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    if (m == ZYDIS_MNEMONIC_WRMSR)
      v = (g[R_DX] << 32) | (uint32_t)g[R_AX];
    /* The interrupt platform's MSRs first (IA32_TSC_DEADLINE). */
    int pr = vmm__vcpu_msr(b->vcpu, (uint32_t)g[R_CX], &v,
                           m == ZYDIS_MNEMONIC_WRMSR);
    if (pr < 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    if (pr == VMM_IO_DECLINED) {
      if (m == ZYDIS_MNEMONIC_RDMSR ? bt_rdmsr(b, (uint32_t)g[R_CX], &v) < 0
                                    : bt_wrmsr(b, (uint32_t)g[R_CX], v) < 0)
        return bt_raise(b, X86_EXC_GP, true, 0);
    }
    if (m == ZYDIS_MNEMONIC_RDMSR) {
      g[R_AX] = (uint32_t)v;
      g[R_DX] = v >> 32;
    }
    break;
  case ZYDIS_MNEMONIC_XGETBV:
    if (!(b->cr4 & X86_CR4_OSXSAVE))
      return bt_raise(b, X86_EXC_UD, false, 0);
    if ((uint32_t)g[R_CX] != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    g[R_AX] = (uint32_t)b->xcr0;
    g[R_DX] = b->xcr0 >> 32;
    break;

  case ZYDIS_MNEMONIC_MOV: {
    /* Control, debug and segment registers. */
    ZydisRegisterClass c0 = in->op[0].type == ZYDIS_OPERAND_TYPE_REGISTER
                                ? ZydisRegisterGetClass(in->op[0].reg.value)
                                : ZYDIS_REGCLASS_INVALID;
    ZydisRegisterClass c1 = in->op[1].type == ZYDIS_OPERAND_TYPE_REGISTER
                                ? ZydisRegisterGetClass(in->op[1].reg.value)
                                : ZYDIS_REGCLASS_INVALID;
    if (c0 == ZYDIS_REGCLASS_CONTROL || c1 == ZYDIS_REGCLASS_CONTROL ||
        c0 == ZYDIS_REGCLASS_DEBUG || c1 == ZYDIS_REGCLASS_DEBUG) {
      if (b->cpl != 0)
        return bt_raise(b, X86_EXC_GP, true, 0);
      bool to = c0 == ZYDIS_REGCLASS_CONTROL || c0 == ZYDIS_REGCLASS_DEBUG;
      ZydisRegister sr = to ? in->op[0].reg.value : in->op[1].reg.value;
      ZydisRegister gr = to ? in->op[1].reg.value : in->op[0].reg.value;
      bool ctl = ZydisRegisterGetClass(sr) == ZYDIS_REGCLASS_CONTROL;
      int n =
          ctl ? (int)(sr - ZYDIS_REGISTER_CR0) : (int)(sr - ZYDIS_REGISTER_DR0);
      if (to) {
        v = bt_reg_get(b, gr);
        if (ctl) {
          if ((err = bt_set_cr(b, n, v)) < 0)
            return err;
        } else if (n < 8) {
          b->dr[n] = v;
        }
      } else {
        if (ctl) {
          switch (n) {
          case 0: v = b->cr0; break;
          case 2: v = b->cr2; break;
          case 3: v = b->cr3; break;
          case 4: v = b->cr4; break;
          case 8: v = bt_get_cr8(b); break;
          default: return bt_raise(b, X86_EXC_UD, false, 0);
          }
        } else {
          v = n < 8 ? b->dr[n] : 0;
        }
        bt_reg_set(b, gr, code64(b) ? v : (uint32_t)v);
      }
      break;
    }
    if (c0 == ZYDIS_REGCLASS_SEGMENT) {
      int s = sreg_index(in->op[0].reg.value);
      if (s == S_CS)
        return bt_raise(b, X86_EXC_UD, false, 0);
      if ((err = op_read(b, in, 1, &v)) < 0)
        return err;
      if ((err = bt_load_seg(b, s, (uint16_t)v)) < 0)
        return err;
      if (s == S_SS) {
        b->shadow = true;
        b->shadow_rip = in->next;
      }
      break;
    }
    if (c1 == ZYDIS_REGCLASS_SEGMENT) {
      v = bt_reg_get(b, in->op[1].reg.value);
      if (in->op[0].type == ZYDIS_OPERAND_TYPE_REGISTER && in->op[0].size >= 32)
        bt_reg_set(b, in->op[0].reg.value, v); /* zero-extended */
      else if ((err = op_write(b, in, 0, v)) < 0)
        return err;
      break;
    }
    /* Plain moves land here only in modes without inline memory paths. */
    if ((err = op_read(b, in, 1, &v)) < 0 || (err = op_write(b, in, 0, v)) < 0)
      return err;
    break;
  }
  case ZYDIS_MNEMONIC_CLTS:
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    b->cr0 &= ~X86_CR0_TS;
    bt_update_mode(b);
    break;
  case ZYDIS_MNEMONIC_LMSW:
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    if ((err = op_read(b, in, 0, &v)) < 0)
      return err;
    v = (b->cr0 & ~0xeull) | (v & 0xf) | (b->cr0 & X86_CR0_PE);
    if ((err = bt_set_cr(b, 0, v)) < 0)
      return err;
    break;
  case ZYDIS_MNEMONIC_SMSW:
    v = b->cr0;
    if (in->op[0].type == ZYDIS_OPERAND_TYPE_MEMORY)
      v &= 0xffff;
    if ((err = op_write(b, in, 0, v)) < 0)
      return err;
    break;
  case ZYDIS_MNEMONIC_LGDT: return do_lgdt_lidt(b, in, false);
  case ZYDIS_MNEMONIC_LIDT: return do_lgdt_lidt(b, in, true);
  case ZYDIS_MNEMONIC_SGDT: return do_sgdt_sidt(b, in, false);
  case ZYDIS_MNEMONIC_SIDT: return do_sgdt_sidt(b, in, true);
  case ZYDIS_MNEMONIC_LLDT: return do_lldt_ltr(b, in, false);
  case ZYDIS_MNEMONIC_LTR: return do_lldt_ltr(b, in, true);
  case ZYDIS_MNEMONIC_SLDT:
  case ZYDIS_MNEMONIC_STR:
    if (!pmode(b))
      return bt_raise(b, X86_EXC_UD, false, 0);
    v = m == ZYDIS_MNEMONIC_STR ? b->tr.selector : b->ldt.selector;
    if ((err = op_write(b, in, 0, v)) < 0)
      return err;
    break;
  case ZYDIS_MNEMONIC_LAR:
  case ZYDIS_MNEMONIC_LSL:
  case ZYDIS_MNEMONIC_VERR:
  case ZYDIS_MNEMONIC_VERW: return do_desc_query(b, in);
  case ZYDIS_MNEMONIC_ARPL: {
    uint64_t dst, src;
    if ((err = op_read(b, in, 0, &dst)) < 0 ||
        (err = op_read(b, in, 1, &src)) < 0)
      return err;
    if ((dst & 3) < (src & 3)) {
      if ((err = op_write(b, in, 0, (dst & ~3ull) | (src & 3))) < 0)
        return err;
      b->ctx.flags |= X86_RFLAGS_ZF;
    } else {
      b->ctx.flags &= ~X86_RFLAGS_ZF;
    }
    break;
  }
  case ZYDIS_MNEMONIC_INVLPG: {
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    /* No segment checks and no fault: the processor's invlpg has none. */
    const ZydisDecodedOperand *o = &in->op[0];
    int s = sreg_index(o->mem.segment);
    uint64_t lin = ea_of(b, in->di, o, in->next);
    if (code64(b))
      lin += (s == S_FS || s == S_GS) ? b->seg[s].base : 0;
    else
      lin = (uint32_t)(lin + b->seg[s < 0 ? S_DS : s].base);
    bt_tlb_flush_page(b, lin);
    /* Code: the largest page the paging mode allows around lin. */
    uint64_t region = 4096;
    if (b->cr4 & X86_CR4_PAE)
      region = (b->efer & X86_EFER_LMA) && b->gbpages ? 1ull << 30 : 2ull << 20;
    else if (b->cr4 & X86_CR4_PSE)
      region = 4ull << 20;
    bt_unlink_region(b, lin, region);
    break;
  }
  case ZYDIS_MNEMONIC_INVD:
  case ZYDIS_MNEMONIC_WBINVD:
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    break;
  case ZYDIS_MNEMONIC_STAC:
  case ZYDIS_MNEMONIC_CLAC:
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_UD, false, 0);
    if (m == ZYDIS_MNEMONIC_STAC)
      b->vflags |= X86_RFLAGS_AC;
    else
      b->vflags &= ~X86_RFLAGS_AC;
    break;
  case ZYDIS_MNEMONIC_SWAPGS:
    if (!code64(b))
      return bt_raise(b, X86_EXC_UD, false, 0);
    if (b->cpl != 0)
      return bt_raise(b, X86_EXC_GP, true, 0);
    v = b->seg[S_GS].base;
    b->seg[S_GS].base = b->kgsbase;
    b->kgsbase = v;
    bt_update_mode(b);
    break;
  case ZYDIS_MNEMONIC_SYSCALL: return do_syscall(b, in);
  case ZYDIS_MNEMONIC_SYSRET: return do_sysret(b, in);
  case ZYDIS_MNEMONIC_SYSENTER: return do_sysenter(b, in);
  case ZYDIS_MNEMONIC_SYSEXIT: return do_sysexit(b, in);

  case ZYDIS_MNEMONIC_DIV: return do_div(b, in, false);
  case ZYDIS_MNEMONIC_IDIV: return do_div(b, in, true);

  case ZYDIS_MNEMONIC_DAA:
  case ZYDIS_MNEMONIC_DAS:
  case ZYDIS_MNEMONIC_AAA:
  case ZYDIS_MNEMONIC_AAS:
  case ZYDIS_MNEMONIC_AAM:
  case ZYDIS_MNEMONIC_AAD:
  case ZYDIS_MNEMONIC_SALC: return do_bcd(b, in);

  case ZYDIS_MNEMONIC_BT:
  case ZYDIS_MNEMONIC_BTS:
  case ZYDIS_MNEMONIC_BTR:
  case ZYDIS_MNEMONIC_BTC:
    if (in->op[0].type == ZYDIS_OPERAND_TYPE_MEMORY &&
        in->op[1].type == ZYDIS_OPERAND_TYPE_REGISTER)
      return do_bitmem(b, in);
    return bt_raise(b, X86_EXC_UD, false, 0);

  case ZYDIS_MNEMONIC_XLAT: {
    unsigned abits = in->di->address_width;
    uint64_t ea = areg_get(b, R_BX, abits) + (g[R_AX] & 0xff);
    ea &= abits == 16 ? 0xffff : abits == 32 ? 0xffffffff : ~0ull;
    int s = S_DS;
    for (int i = 0; i < in->di->operand_count; i++)
      if (in->op[i].type == ZYDIS_OPERAND_TYPE_MEMORY &&
          sreg_index(in->op[i].mem.segment) >= 0)
        s = sreg_index(in->op[i].mem.segment);
    uint64_t lin;
    uint8_t byte;
    if ((err = seg_lin(b, s, ea, 1, false, &lin)) < 0 ||
        (err = bt_read(b, lin, &byte, 1, false)) < 0)
      return err;
    g[R_AX] = (g[R_AX] & ~0xffull) | byte;
    break;
  }
  case ZYDIS_MNEMONIC_BOUND: {
    uint64_t idx, lin;
    if ((err = op_read(b, in, 0, &idx)) < 0 ||
        (err = op_lin(b, in, 1, false, &lin)) < 0)
      return err;
    unsigned sz = os;
    int64_t lo = 0, hi = 0;
    uint32_t tmp[2] = {0, 0};
    if ((err = bt_read(b, lin, tmp, sz * 2, false)) < 0)
      return err;
    if (sz == 2) {
      lo = (int16_t)(tmp[0] & 0xffff);
      hi = (int16_t)(tmp[0] >> 16);
      idx = (uint64_t)(int64_t)(int16_t)idx;
    } else {
      lo = (int32_t)tmp[0];
      hi = (int32_t)tmp[1];
      idx = (uint64_t)(int64_t)(int32_t)idx;
    }
    if ((int64_t)idx < lo || (int64_t)idx > hi)
      return bt_raise(b, X86_EXC_BR, false, 0);
    break;
  }

  /* Segment-register stack operations and far pointers. */
  case ZYDIS_MNEMONIC_PUSH:
    if ((err = op_read(b, in, 0, &v)) < 0)
      return err;
    if (in->op[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE &&
        in->op[0].imm.is_signed)
      v = (uint64_t)in->op[0].imm.value.s;
    if (in->op[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
        (in->op[0].reg.value == ZYDIS_REGISTER_SP ||
         in->op[0].reg.value == ZYDIS_REGISTER_ESP ||
         in->op[0].reg.value == ZYDIS_REGISTER_RSP))
      v = g[R_SP];
    if ((err = push(b, v & mask_of(os), os)) < 0)
      return err;
    break;
  case ZYDIS_MNEMONIC_POP: {
    uint64_t sp = g[R_SP];
    if ((err = pop_at(b, &sp, &v, os)) < 0)
      return err;
    const ZydisDecodedOperand *o = &in->op[0];
    if (o->type == ZYDIS_OPERAND_TYPE_REGISTER &&
        ZydisRegisterGetClass(o->reg.value) == ZYDIS_REGCLASS_SEGMENT) {
      /* A fault is delivered at once, with the frame holding the RSP
         the instruction started with: RSP moves only after the load. */
      int s = sreg_index(o->reg.value);
      if ((err = bt_load_seg(b, s, (uint16_t)v)) < 0)
        return err;
      g[R_SP] = sp;
      if (s == S_SS) {
        b->shadow = true;
        b->shadow_rip = in->next;
      }
      break;
    }
    if (o->type == ZYDIS_OPERAND_TYPE_MEMORY) {
      /* The address is computed with the incremented stack pointer, but
         a fault (delivered at once) must see the original one. */
      uint64_t old = g[R_SP], lin;
      g[R_SP] = sp;
      uint64_t ea = ea_of(b, in->di, o, in->next);
      g[R_SP] = old;
      int s = sreg_index(o->mem.segment);
      if ((err = seg_lin(b, s < 0 ? S_DS : s, ea, os, true, &lin)) < 0 ||
          (err = bt_write(b, lin, &v, os, false)) < 0)
        return err;
      g[R_SP] = sp;
      break;
    }
    g[R_SP] = sp;
    bt_reg_set(b, o->reg.value, v);
    break;
  }
  case ZYDIS_MNEMONIC_PUSHA:
  case ZYDIS_MNEMONIC_PUSHAD: {
    uint64_t sp = g[R_SP];
    static const uint8_t order[8] = {R_AX, R_CX, R_DX, R_BX,
                                     R_SP, R_BP, R_SI, R_DI};
    for (int i = 0; i < 8; i++)
      if ((err = push_at(b, &sp, g[order[i]] & mask_of(os), os)) < 0)
        return err;
    g[R_SP] = sp;
    break;
  }
  case ZYDIS_MNEMONIC_POPA:
  case ZYDIS_MNEMONIC_POPAD: {
    uint64_t sp = g[R_SP], vals[8];
    for (int i = 7; i >= 0; i--)
      if ((err = pop_at(b, &sp, &vals[i], os)) < 0)
        return err;
    static const uint8_t order[8] = {R_AX, R_CX, R_DX, R_BX,
                                     R_SP, R_BP, R_SI, R_DI};
    for (int i = 0; i < 8; i++)
      if (order[i] != R_SP)
        gpr_set(b, order[i], os, vals[i]);
    g[R_SP] = sp;
    break;
  }
  case ZYDIS_MNEMONIC_ENTER: {
    unsigned size = (unsigned)in->op[0].imm.value.u & 0xffff;
    unsigned level = (unsigned)in->op[1].imm.value.u & 31;
    uint64_t sp = g[R_SP];
    if ((err = push_at(b, &sp, g[R_BP] & mask_of(os), os)) < 0)
      return err;
    uint64_t frame = sp;
    uint64_t bp = g[R_BP];
    for (unsigned i = 1; i < level; i++) {
      bp = sp_add(b, bp, -(int64_t)os);
      uint64_t lin, t = 0;
      if ((err = seg_lin(b, S_SS, sp_off(b, bp), os, false, &lin)) < 0 ||
          (err = bt_read(b, lin, &t, os, false)) < 0 ||
          (err = push_at(b, &sp, t, os)) < 0)
        return err;
    }
    if (level > 0 && (err = push_at(b, &sp, frame, os)) < 0)
      return err;
    sp = sp_add(b, sp, -(int64_t)size);
    /* The SDM's #PF condition: "a write using the final value of the
       stack pointer would cause a page fault". The hosts probe it,
       alignment check included, before anything is committed. */
    uint64_t lin, gpa;
    if ((err = seg_lin(b, S_SS, sp_off(b, sp), os, true, &lin)) < 0)
      return err;
    if (bt_ac_fault(b, lin, os))
      return bt_raise(b, X86_EXC_AC, true, 0);
    if ((err = bt_translate(b, lin, BT_W, false, &gpa)) < 0)
      return err;
    gpr_set(b, R_BP, stack_bits(b) == 16 ? 2 : os, frame);
    g[R_SP] = sp;
    break;
  }
  case ZYDIS_MNEMONIC_LEAVE: {
    uint64_t sp = stack_bits(b) == 16
                      ? (g[R_SP] & ~0xffffull) | (g[R_BP] & 0xffff)
                  : stack_bits(b) == 32 ? (uint32_t)g[R_BP]
                                        : g[R_BP];
    if ((err = pop_at(b, &sp, &v, os)) < 0)
      return err;
    g[R_SP] = sp;
    gpr_set(b, R_BP, os, v);
    break;
  }
  case ZYDIS_MNEMONIC_LDS:
  case ZYDIS_MNEMONIC_LES:
  case ZYDIS_MNEMONIC_LFS:
  case ZYDIS_MNEMONIC_LGS:
  case ZYDIS_MNEMONIC_LSS: {
    uint64_t lin, off = 0;
    uint16_t sel;
    if ((err = op_lin(b, in, 1, false, &lin)) < 0 ||
        (err = bt_read(b, lin, &off, os, false)) < 0 ||
        (err = bt_read(b, lin + os, &sel, 2, false)) < 0)
      return err;
    int s = m == ZYDIS_MNEMONIC_LDS   ? S_DS
            : m == ZYDIS_MNEMONIC_LES ? S_ES
            : m == ZYDIS_MNEMONIC_LFS ? S_FS
            : m == ZYDIS_MNEMONIC_LGS ? S_GS
                                      : S_SS;
    if ((err = bt_load_seg(b, s, sel)) < 0)
      return err;
    bt_reg_set(b, in->op[0].reg.value, off);
    break;
  }

  /* Control transfers C handles: far ones, and near ones where segments
     need checks. */
  case ZYDIS_MNEMONIC_JMP:
  case ZYDIS_MNEMONIC_CALL: {
    bool call = m == ZYDIS_MNEMONIC_CALL;
    const ZydisDecodedOperand *o = &in->op[0];
    if (o->type == ZYDIS_OPERAND_TYPE_POINTER) {
      return bt_far_transfer(b, o->ptr.segment, o->ptr.offset,
                             call ? BT_FAR_CALL : BT_FAR_JMP, os, in->next);
    }
    if (in->di->meta.branch_type == ZYDIS_BRANCH_TYPE_FAR) {
      uint64_t lin, off = 0;
      uint16_t sel;
      if ((err = op_lin(b, in, 0, false, &lin)) < 0 ||
          (err = bt_read(b, lin, &off, os, false)) < 0 ||
          (err = bt_read(b, lin + os, &sel, 2, false)) < 0)
        return err;
      return bt_far_transfer(b, sel, off, call ? BT_FAR_CALL : BT_FAR_JMP, os,
                             in->next);
    }
    uint64_t target;
    if (o->type == ZYDIS_OPERAND_TYPE_IMMEDIATE) {
      if (rel_target(in, &target) < 0)
        return bt_raise(b, X86_EXC_UD, false, 0);
    } else if ((err = op_read(b, in, 0, &target)) < 0) {
      return err;
    }
    if (call) {
      /* The target is checked before the push; a fault is delivered at
         once and its frame holds the original RSP. */
      uint64_t sp = g[R_SP];
      if ((err = near_target(b, in, &target)) < 0 ||
          (err = push_at(b, &sp, in->next, os)) < 0)
        return err;
      g[R_SP] = sp;
      b->ctx.rip = target;
      return BT_OK;
    }
    return near_branch(b, in, target);
  }
  case ZYDIS_MNEMONIC_RET: {
    uint64_t sp = g[R_SP];
    if (in->di->meta.branch_type == ZYDIS_BRANCH_TYPE_FAR)
      return bt_far_ret(
          b, os,
          in->di->operand_count_visible ? (uint16_t)in->op[0].imm.value.u : 0);
    if ((err = pop_at(b, &sp, &v, os)) < 0)
      return err;
    if (in->di->operand_count_visible)
      sp = sp_add(b, sp, (int64_t)(in->op[0].imm.value.u & 0xffff));
    if ((err = near_branch(b, in, v)) < 0)
      return err; /* delivered: RSP is the handler's now */
    g[R_SP] = sp;
    return err;
  }
  case ZYDIS_MNEMONIC_LOOP:
  case ZYDIS_MNEMONIC_LOOPE:
  case ZYDIS_MNEMONIC_LOOPNE:
  case ZYDIS_MNEMONIC_JCXZ:
  case ZYDIS_MNEMONIC_JECXZ:
  case ZYDIS_MNEMONIC_JRCXZ: {
    unsigned abits = in->di->address_width;
    uint64_t target;
    if (rel_target(in, &target) < 0)
      return bt_raise(b, X86_EXC_UD, false, 0);
    bool take;
    if (m == ZYDIS_MNEMONIC_JCXZ || m == ZYDIS_MNEMONIC_JECXZ ||
        m == ZYDIS_MNEMONIC_JRCXZ) {
      take = areg_get(b, R_CX, abits) == 0;
    } else {
      uint64_t c = areg_get(b, R_CX, abits) - 1;
      areg_set(b, R_CX, abits, c);
      c &= abits == 16 ? 0xffff : abits == 32 ? 0xffffffff : ~0ull;
      bool zf = b->ctx.flags & X86_RFLAGS_ZF;
      take = c != 0 && (m == ZYDIS_MNEMONIC_LOOP ||
                        (m == ZYDIS_MNEMONIC_LOOPE ? zf : !zf));
    }
    if (take)
      return near_branch(b, in, target);
    break;
  }

  case ZYDIS_MNEMONIC_FNINIT:
  case ZYDIS_MNEMONIC_FLDCW:
  case ZYDIS_MNEMONIC_FNSTCW:
  case ZYDIS_MNEMONIC_LDMXCSR:
  case ZYDIS_MNEMONIC_STMXCSR:
  case ZYDIS_MNEMONIC_FXSAVE:
  case ZYDIS_MNEMONIC_FXSAVE64:
  case ZYDIS_MNEMONIC_FXRSTOR:
  case ZYDIS_MNEMONIC_FXRSTOR64:
  case ZYDIS_MNEMONIC_FNSTENV:
  case ZYDIS_MNEMONIC_FLDENV:
  case ZYDIS_MNEMONIC_FNSAVE:
  case ZYDIS_MNEMONIC_FRSTOR: return do_fpu_ctl(b, in);

  default: return bt_raise(b, X86_EXC_UD, false, 0);
  }
  b->ctx.rip = in->next;
  return BT_OK;
}

/* Emulate a callout's instruction (d->bytes at d->rip). */
int bt_emulate(struct bt_vcpu *b, struct bt_desc *d) {
  struct insn in;
  uint64_t rip = d->rip;
  b->ctx.rip = rip;
  int pin = b->dcache_pin;
  if (bt_decode_desc(b, d, &in.di, &in.op) < 0) {
    b->dcache_pin = pin;
    return bt_raise(b, X86_EXC_UD, false, 0);
  }
  in.rip = rip;
  in.next = rip + in.di->length;
  unsigned cbits = bt_addr_bits(b);
  if (cbits == 32)
    in.next = (uint32_t)in.next;
  else if (cbits == 16)
    in.next &= 0xffff;
  bt_mmio_begin(b);
  int rc = emulate(b, &in);
  if (rc == BT_OK)
    bt_mmio_retire(b);
  b->dcache_pin = pin;
  return rc;
}
