/*
 * Glue between C and translated code (see docs/bt.md, "Execution model").
 *
 * While translated code runs, the host RSP is the vCPU's own stack, 16-byte
 * aligned, at the value in ctx->host_rsp (R), the address of the vCPU's
 * struct bt_ctx: [R + off] is its field at off. The guest GPRs other than
 * RSP are in the host GPRs of the same number, the guest arithmetic flags
 * and DF are in RFLAGS, and the guest FPU/SSE state is in the FPU.
 */
#include "layout.h"

/*
 * The context is reached as [rsp + k + off]: R, the top of the vCPU's
 * stack that translated code runs at (ctx->host_rsp, vmm__bt_enter), is
 * the context's address, and k is R minus the current RSP (8 in the gate,
 * below its return address). No segment base is involved: the library
 * never reads or writes the thread's GS or FS base.
 * Addressing through a base register lets the processor rename memory
 * (docs/bt.md); an absolute address made every store and reload of a
 * context field wait about five cycles for store forwarding. Code that
 * runs at another RSP (vmm__bt_fpu_sync, called from C) and the entry,
 * before it is at R, use the context pointer instead.
 */
#define G(off) (off)(%rsp)
#define G8(off) (off + 8)(%rsp)
#define C(off) (off)(%rdi)

.macro SAVE_GPRS k
  movq %rax, (BT_OFF_GPR + 0x00 + \k)(%rsp)
  movq %rcx, (BT_OFF_GPR + 0x08 + \k)(%rsp)
  movq %rdx, (BT_OFF_GPR + 0x10 + \k)(%rsp)
  movq %rbx, (BT_OFF_GPR + 0x18 + \k)(%rsp)
  movq %rbp, (BT_OFF_GPR + 0x28 + \k)(%rsp)
  movq %rsi, (BT_OFF_GPR + 0x30 + \k)(%rsp)
  movq %rdi, (BT_OFF_GPR + 0x38 + \k)(%rsp)
  movq %r8, (BT_OFF_GPR + 0x40 + \k)(%rsp)
  movq %r9, (BT_OFF_GPR + 0x48 + \k)(%rsp)
  movq %r10, (BT_OFF_GPR + 0x50 + \k)(%rsp)
  movq %r11, (BT_OFF_GPR + 0x58 + \k)(%rsp)
  movq %r12, (BT_OFF_GPR + 0x60 + \k)(%rsp)
  movq %r13, (BT_OFF_GPR + 0x68 + \k)(%rsp)
  movq %r14, (BT_OFF_GPR + 0x70 + \k)(%rsp)
  movq %r15, (BT_OFF_GPR + 0x78 + \k)(%rsp)
.endm

/*
 * Load the guest's arithmetic flags and DF from the context (the only
 * guest bits the host RFLAGS holds: BT_HOST_FLAGS): DF with cld/std, OF from
 * an addition that overflows exactly when it is set, the rest with sahf.
 * popfq did the same in 16 cycles, a quarter of the gate's return; this
 * takes 4. M is the addressing macro (C or G). Clobbers rax and rcx
 * (before LOAD_GPRS).
 */
#define FLAGS_LOAD(M)                                                          \
  movq M(BT_OFF_FLAGS), %rax;                                                  \
  cld;                                                                         \
  testl $0x400, %eax;                                                          \
  jz 7f;                                                                       \
  std;                                                                         \
  7: movl %eax, %ecx;                                                          \
  andl $0x800, %ecx;                                                           \
  shll $20, %ecx;                                                              \
  addl %ecx, %ecx;                                                             \
  movb %al, %ah;                                                               \
  sahf

.macro LOAD_GPRS
  movq G(BT_OFF_GPR + 0x00), %rax
  movq G(BT_OFF_GPR + 0x08), %rcx
  movq G(BT_OFF_GPR + 0x10), %rdx
  movq G(BT_OFF_GPR + 0x18), %rbx
  movq G(BT_OFF_GPR + 0x28), %rbp
  movq G(BT_OFF_GPR + 0x30), %rsi
  movq G(BT_OFF_GPR + 0x38), %rdi
  movq G(BT_OFF_GPR + 0x40), %r8
  movq G(BT_OFF_GPR + 0x48), %r9
  movq G(BT_OFF_GPR + 0x50), %r10
  movq G(BT_OFF_GPR + 0x58), %r11
  movq G(BT_OFF_GPR + 0x60), %r12
  movq G(BT_OFF_GPR + 0x68), %r13
  movq G(BT_OFF_GPR + 0x70), %r14
  movq G(BT_OFF_GPR + 0x78), %r15
.endm

/*
 * Unwind information for code at RSP = R - k (the gate, and the entry once
 * at R): its frame is vmm__bt_enter's, whose caller's RSP is in the
 * context (ctx->caller_rsp, below the six registers the entry pushed and
 * the return address): CFA = *(R + BT_OFF_CALLER_RSP) + 56, the registers
 * at CFA - 16 (rbp) down to CFA - 56 (r15). Translated code has none, but
 * a debugger's or profiler's backtrace from a handler goes through the
 * gate on into run() and the caller. The expression is DW_OP_breg7 (rsp)
 * with a two-byte SLEB128 offset, DW_OP_deref, DW_OP_plus_uconst 56.
 */
.if BT_OFF_CALLER_RSP < 64 || BT_OFF_CALLER_RSP + 16 > 8191
.error "CALLER_CFA encodes R + BT_OFF_CALLER_RSP as a two-byte SLEB128"
.endif
.macro CALLER_CFA k
  .cfi_escape 0x0f, 0x06, 0x77, ((BT_OFF_CALLER_RSP + \k) & 0x7f) | 0x80, (BT_OFF_CALLER_RSP + \k) >> 7, 0x06, 0x23, 0x38
  .cfi_offset %rbp, -16
  .cfi_offset %rbx, -24
  .cfi_offset %r12, -32
  .cfi_offset %r13, -40
  .cfi_offset %r14, -48
  .cfi_offset %r15, -56
.endm

/*
 * XMM0-15 and MXCSR to or from the FXSAVE image; M is the addressing macro
 * (G, G16 or C). XMM_STORE_REGS and XMM_LOAD_REGS leave MXCSR alone.
 */
#define XMM_STORE(M)                                                           \
  stmxcsr M(BT_OFF_FPU + 24);                                                  \
  XMM_STORE_REGS(M)

#define XMM_STORE_REGS(M)                                                      \
  movups %xmm0, M(BT_OFF_FPU + 160 + 0);                                       \
  movups %xmm1, M(BT_OFF_FPU + 160 + 16);                                      \
  movups %xmm2, M(BT_OFF_FPU + 160 + 32);                                      \
  movups %xmm3, M(BT_OFF_FPU + 160 + 48);                                      \
  movups %xmm4, M(BT_OFF_FPU + 160 + 64);                                      \
  movups %xmm5, M(BT_OFF_FPU + 160 + 80);                                      \
  movups %xmm6, M(BT_OFF_FPU + 160 + 96);                                      \
  movups %xmm7, M(BT_OFF_FPU + 160 + 112);                                     \
  movups %xmm8, M(BT_OFF_FPU + 160 + 128);                                     \
  movups %xmm9, M(BT_OFF_FPU + 160 + 144);                                     \
  movups %xmm10, M(BT_OFF_FPU + 160 + 160);                                    \
  movups %xmm11, M(BT_OFF_FPU + 160 + 176);                                    \
  movups %xmm12, M(BT_OFF_FPU + 160 + 192);                                    \
  movups %xmm13, M(BT_OFF_FPU + 160 + 208);                                    \
  movups %xmm14, M(BT_OFF_FPU + 160 + 224);                                    \
  movups %xmm15, M(BT_OFF_FPU + 160 + 240)

#define XMM_LOAD(M)                                                            \
  ldmxcsr M(BT_OFF_FPU + 24);                                                  \
  XMM_LOAD_REGS(M)

#define XMM_LOAD_REGS(M)                                                       \
  movups M(BT_OFF_FPU + 160 + 0), %xmm0;                                       \
  movups M(BT_OFF_FPU + 160 + 16), %xmm1;                                      \
  movups M(BT_OFF_FPU + 160 + 32), %xmm2;                                      \
  movups M(BT_OFF_FPU + 160 + 48), %xmm3;                                      \
  movups M(BT_OFF_FPU + 160 + 64), %xmm4;                                      \
  movups M(BT_OFF_FPU + 160 + 80), %xmm5;                                      \
  movups M(BT_OFF_FPU + 160 + 96), %xmm6;                                      \
  movups M(BT_OFF_FPU + 160 + 112), %xmm7;                                     \
  movups M(BT_OFF_FPU + 160 + 128), %xmm8;                                     \
  movups M(BT_OFF_FPU + 160 + 144), %xmm9;                                     \
  movups M(BT_OFF_FPU + 160 + 160), %xmm10;                                    \
  movups M(BT_OFF_FPU + 160 + 176), %xmm11;                                    \
  movups M(BT_OFF_FPU + 160 + 192), %xmm12;                                    \
  movups M(BT_OFF_FPU + 160 + 208), %xmm13;                                    \
  movups M(BT_OFF_FPU + 160 + 224), %xmm14;                                    \
  movups M(BT_OFF_FPU + 160 + 240), %xmm15



/*
 * MXCSR during a callout. The guest's control bits only change through C
 * (ldmxcsr and fxrstor are emulated; the guest's exception masks are
 * virtual, the host runs it with all masked), only its status bits change
 * natively. When its control bits are the host's, the gate leaves MXCSR
 * alone (stmxcsr and two ldmxcsr were about 20 cycles of every callout)
 * and sets mx_live: the register holds the guest's MXCSR and the image's
 * status bits are stale. Everything that reads or writes the image's
 * MXCSR, or runs code that may do floating-point arithmetic (a host
 * handler), settles first (MX_SETTLE: the image takes the register, and
 * the gate's return loads it back, dropping status bits that code set);
 * the engine's own C code in a callout does no floating-point
 * arithmetic. Leaving for the dispatcher settles and loads the host's.
 *
 * The register's status bits can only have moved if the guest ran SSE
 * code since MXCSR was last loaded from the image: vmm__bt_enter clears
 * mx_dirty as it loads MXCSR, and translated code sets it before the
 * first SSE instruction of a TU (translate.c). Until then the image is
 * exact and settling skips the stmxcsr (14 cycles on Zen, most of what a
 * handled `in` spent on MXCSR; the gate's return still loads it). A
 * dirty flag is only ever cleared on entry, so a TU that sets it once
 * covers every later SSE instruction until translated code is left.
 * Clobbers flags.
 */
#define MX_SETTLE(M)                                                           \
  cmpb $0, M(BT_OFF_MX_LIVE);                                                  \
  je 8f;                                                                       \
  cmpl $0, M(BT_OFF_MX_DIRTY);                                                 \
  je 9f;                                                                       \
  stmxcsr M(BT_OFF_FPU + 24);                                                  \
  9: movb $0, M(BT_OFF_MX_LIVE);                                               \
  8:

/*
 * Where the guest's x87 state is (x87 registers, FCW, FSW, FTW, FOP and the
 * pointers; the MMX registers are the x87 registers): ctx->x87 points at
 * one of three stubs, and translated code calls *ctx->x87 before an x87 or
 * MMX instruction (before the first of a TU, and the first after a callout
 * that may run a host handler), so the stub is also the state's transition:
 *
 *   vmm__bt_x87_dirty  the FPU holds it and the image may be out of date;
 *   vmm__bt_x87_clean  the FPU holds it, the image holds the same, and it
 *                      is a state C code may run on as is (X87_ABI_CHECK):
 *                      the first x87 instruction makes it dirty;
 *   vmm__bt_x87_away   host code (a port-I/O handler) ran on the FPU: the
 *                      image alone holds it, and the first x87 instruction
 *                      loads it back.
 *
 * So a host handler called while the guest has not touched x87 since its
 * state was last loaded whole (a guest that never uses x87 or MMX, most
 * kernels) costs no x87 save, and no restore unless x87 code follows: the
 * full fxsave64/fninit/fxrstor64 was half of a handled `in`. The stubs
 * change no flags and no registers: translated code calls them anywhere
 * (at RSP = R - 8: the context is [rsp + 8 + off], + 16 after a push).
 * While fpu_full is set the stub is not used; entering translated code then
 * restores the whole image and X87_RESTORED picks dirty or clean.
 */
#define G16(off) (off + 16)(%rsp)
#define G24(off) (off + 24)(%rsp)

  .text
  .globl vmm__bt_x87_dirty
  .hidden vmm__bt_x87_dirty
  .type vmm__bt_x87_dirty, @function
vmm__bt_x87_dirty:
  ret
  .size vmm__bt_x87_dirty, . - vmm__bt_x87_dirty

  .globl vmm__bt_x87_clean
  .hidden vmm__bt_x87_clean
  .type vmm__bt_x87_clean, @function
vmm__bt_x87_clean:
  pushq %rax
  leaq vmm__bt_x87_dirty(%rip), %rax
  movq %rax, G16(BT_OFF_X87)
  popq %rax
  ret
  .size vmm__bt_x87_clean, . - vmm__bt_x87_clean

  .globl vmm__bt_x87_away
  .hidden vmm__bt_x87_away
  .type vmm__bt_x87_away, @function
vmm__bt_x87_away:
  pushq %rax
  pushq %rcx
  /* fxrstor64 loads MXCSR and XMM too: give it their live values (XMM's
     only where they live in the registers: jrcxz tests without flags). */
  stmxcsr G24(BT_OFF_FPU + 24)
  movzbl G24(BT_OFF_XMM_ON), %ecx
  jrcxz 1f /* rel8: a jump over the stores */
  jmp 2f
1:
  jmp 3f
2:
  XMM_STORE_REGS(G24)
3:
  fxrstor64 G24(BT_OFF_FPU)
  leaq vmm__bt_x87_dirty(%rip), %rax
  movq %rax, G24(BT_OFF_X87)
  popq %rcx
  popq %rax
  ret
  .size vmm__bt_x87_away, . - vmm__bt_x87_away

/*
 * Jump to bad unless the image's x87 part is a state C code may run on:
 * the host's control word (the image holds the one the host runs the
 * guest with), no exception flags or pending exception in the status word,
 * every register empty (the abridged tag word). M is the addressing macro
 * (C or G). Clobbers ecx and flags.
 */
#define X87_ABI_CHECK(M, bad)                                                  \
  movzwl M(BT_OFF_FPU), %ecx;                                                  \
  cmpw M(BT_OFF_FCW_HOST), %cx;                                                \
  jne bad;                                                                     \
  cmpb $0, M(BT_OFF_FPU + 2);                                                  \
  jne bad;                                                                     \
  cmpb $0, M(BT_OFF_FPU + 4);                                                  \
  jne bad

/* After fxrstor64 of the whole image. Clobbers rax, ecx and flags. */
#define X87_RESTORED(M)                                                        \
  leaq vmm__bt_x87_dirty(%rip), %rax;                                          \
  X87_ABI_CHECK(M, 8f);                                                        \
  leaq vmm__bt_x87_clean(%rip), %rax;                                          \
  8: movq %rax, M(BT_OFF_X87)

/*
 * void vmm__bt_fpu_sync(struct bt_ctx *ctx): complete the FXSAVE image
 * during a callout and give C an ABI FPU state (the FP-control emulation
 * works on the image; run() returns the FPU to its caller). Idempotent.
 */
  .globl vmm__bt_fpu_sync
  .hidden vmm__bt_fpu_sync
  .type vmm__bt_fpu_sync, @function
vmm__bt_fpu_sync:
  MX_SETTLE(C)
  cmpb $0, C(BT_OFF_FPU_FULL)
  jne 9f
  /* Clean or away: the gate saved XMM and MXCSR, so the image is whole,
     and the FPU's x87 state is one C may run on. */
  leaq vmm__bt_x87_dirty(%rip), %rax
  cmpq %rax, C(BT_OFF_X87)
  jne 8f
  XMM_LOAD(C)
  fxsave64 C(BT_OFF_FPU)
  fninit
  fldcw C(BT_OFF_FCW_HOST)
  ldmxcsr C(BT_OFF_MXCSR_HOST)
8:
  movb $1, C(BT_OFF_FPU_FULL)
9:
  ret
  .size vmm__bt_fpu_sync, . - vmm__bt_fpu_sync

/*
 * void vmm__bt_fpu_host(struct bt_ctx *ctx): before host code (a port-I/O
 * handler) runs during a callout: make the image whole and the FPU's x87
 * state one C code may run on, leaving the guest's x87 state away.
 * Idempotent.
 */
  .globl vmm__bt_fpu_host
  .hidden vmm__bt_fpu_host
  .type vmm__bt_fpu_host, @function
vmm__bt_fpu_host:
  MX_SETTLE(C)
  cmpb $0, C(BT_OFF_FPU_FULL)
  jne 9f
  leaq vmm__bt_x87_dirty(%rip), %rax
  cmpq %rax, C(BT_OFF_X87)
  jne 8f
  XMM_LOAD(C)
  fxsave64 C(BT_OFF_FPU)
  ldmxcsr C(BT_OFF_MXCSR_HOST)
  X87_ABI_CHECK(C, 7f)
  jmp 8f
7:
  fninit
  fldcw C(BT_OFF_FCW_HOST)
8:
  leaq vmm__bt_x87_away(%rip), %rax
  movq %rax, C(BT_OFF_X87)
9:
  ret
  .size vmm__bt_fpu_host, . - vmm__bt_fpu_host

  .text

/*
 * int vmm__bt_enter(struct bt_ctx *ctx, uint64_t host_target)
 * Returns a BT_X_* reason. Translated code, the gate and the C code it
 * calls (callouts, device handlers) run on the vCPU's own stack, whose top
 * R (ctx->host_rsp) is the context's address, the stack just below it in
 * one mapping, so [R + offset] is the context's field whatever the
 * caller's stack.
 */
  .globl vmm__bt_enter
  .hidden vmm__bt_enter
  .type vmm__bt_enter, @function
vmm__bt_enter:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  pushq %r12
  .cfi_adjust_cfa_offset 8
  pushq %r13
  .cfi_adjust_cfa_offset 8
  pushq %r14
  .cfi_adjust_cfa_offset 8
  pushq %r15
  .cfi_adjust_cfa_offset 8
  movq %rsp, C(BT_OFF_CALLER_RSP)
  movq C(BT_OFF_HOST_RSP), %rsp
  CALLER_CFA 0
  movq %rsi, C(BT_OFF_CONT)
  stmxcsr C(BT_OFF_MXCSR_HOST)
  cmpb $0, C(BT_OFF_FPU_FULL)
  jne 1f
  ldmxcsr C(BT_OFF_FPU + 24)
  cmpb $0, C(BT_OFF_XMM_ON)
  je 2f
  XMM_LOAD_REGS(C)
  jmp 2f
1:
  /* Only while the FPU is the caller's: otherwise its control word may
     be the guest's (x87 state stays in the FPU across exits), and C code
     and handlers would get the guest's precision and rounding. */
  fnstcw C(BT_OFF_FCW_HOST)
  fxrstor64 C(BT_OFF_FPU)
  X87_RESTORED(C)
2:
  movl $0, C(BT_OFF_MX_DIRTY) /* MXCSR is the image's */
  FLAGS_LOAD(C)
  LOAD_GPRS
  jmp *G(BT_OFF_CONT)
  .cfi_endproc
  .size vmm__bt_enter, . - vmm__bt_enter

/* Common tail, at RSP = R: guest state and FPU are in the context; eax =
   reason. Back to the caller's stack. */
bt_leave:
  movq G(BT_OFF_CALLER_RSP), %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret

/* pop with an RSP-based destination addresses after the increment, push
   with an RSP-based source before the decrement: both at RSP = R below. */
.macro EXIT_ENTRY name, reason
  .globl \name
  .hidden \name
  .type \name, @function
\name:
  pushfq
  popq G(BT_OFF_FLAGS)
  SAVE_GPRS 0
  cld
  stmxcsr G(BT_OFF_FPU + 24)
  cmpb $0, G(BT_OFF_XMM_ON)
  je 1f
  XMM_STORE_REGS(G)
1:
  ldmxcsr G(BT_OFF_MXCSR_HOST)
  movb $0, G(BT_OFF_FPU_FULL)
  movl $\reason, %eax
  jmp bt_leave
  .size \name, . - \name
.endm

/* Entered by jmp from translated code, guest state live, RSP = R. */
  EXIT_ENTRY vmm__bt_exit_link, BT_X_LINK
  EXIT_ENTRY vmm__bt_exit_jc, BT_X_JC
  EXIT_ENTRY vmm__bt_exit_budget, BT_X_BUDGET

/*
 * The callout gate, entered by "call *BT_OFF_GATE(%rsp)" with the
 * descriptor number in ctx->arg (RSP = R - 8 here). vmm__bt_callout()
 * returns 0 to resume translated code at ctx->cont, or non-zero to leave
 * for the dispatcher.
 */
  .globl vmm__bt_gate
  .hidden vmm__bt_gate
  .type vmm__bt_gate, @function
vmm__bt_gate:
  .cfi_startproc
  CALLER_CFA 8
  pushfq
  CALLER_CFA 16
  popq G8(BT_OFF_FLAGS)
  CALLER_CFA 8
  SAVE_GPRS 8
  popq G(BT_OFF_RET)
  CALLER_CFA 0
  cld
  cmpb $0, G(BT_OFF_XMM_ON)
  je 6f
  XMM_STORE_REGS(G)
6:
  /* MXCSR stays when its control bits are the host's (see MX_SETTLE). */
  movl G(BT_OFF_FPU + 24), %eax
  xorl G(BT_OFF_MXCSR_HOST), %eax
  testl $~0x3f, %eax
  jnz 4f
  movb $1, G(BT_OFF_MX_LIVE)
  jmp 5f
4:
  stmxcsr G(BT_OFF_FPU + 24)
  ldmxcsr G(BT_OFF_MXCSR_HOST)
5:
  movb $0, G(BT_OFF_FPU_FULL)
  movq G(BT_OFF_SELF), %rdi
  call vmm__bt_callout
  testl %eax, %eax
  jnz 1f
  cmpb $0, G(BT_OFF_FPU_FULL)
  jne 2f
  cmpb $0, G(BT_OFF_XMM_ON)
  je 6f
  XMM_LOAD_REGS(G)
6:
  cmpb $0, G(BT_OFF_MX_LIVE)
  jne 3f
  ldmxcsr G(BT_OFF_FPU + 24)
3:
  movb $0, G(BT_OFF_MX_LIVE)
  FLAGS_LOAD(G)
  LOAD_GPRS
  jmp *G(BT_OFF_CONT)
2:
  fxrstor64 G(BT_OFF_FPU)
  X87_RESTORED(G)
  jmp 3b
1:
  MX_SETTLE(G)
  ldmxcsr G(BT_OFF_MXCSR_HOST)
  movl $BT_X_CALLOUT, %eax
  jmp bt_leave
  .cfi_endproc
  .size vmm__bt_gate, . - vmm__bt_gate

  .section .note.GNU-stack, "", @progbits
