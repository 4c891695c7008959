/*
 * Glue between C and translated code (see docs/bt.md, "Execution model").
 *
 * While translated code runs, GS points at the vCPU's struct bt_ctx, the
 * guest GPRs other than RSP are in the host GPRs of the same number, the
 * guest arithmetic flags and DF are in RFLAGS, and the guest FPU/SSE state
 * is in the FPU. The host RSP is the thread's stack, 16-byte aligned, at
 * the value saved in ctx->host_rsp.
 */
#include "layout.h"

#define G(off) %gs:(off)

.macro SAVE_GPRS
  movq %rax, G(BT_OFF_GPR + 0x00)
  movq %rcx, G(BT_OFF_GPR + 0x08)
  movq %rdx, G(BT_OFF_GPR + 0x10)
  movq %rbx, G(BT_OFF_GPR + 0x18)
  movq %rbp, G(BT_OFF_GPR + 0x28)
  movq %rsi, G(BT_OFF_GPR + 0x30)
  movq %rdi, G(BT_OFF_GPR + 0x38)
  movq %r8, G(BT_OFF_GPR + 0x40)
  movq %r9, G(BT_OFF_GPR + 0x48)
  movq %r10, G(BT_OFF_GPR + 0x50)
  movq %r11, G(BT_OFF_GPR + 0x58)
  movq %r12, G(BT_OFF_GPR + 0x60)
  movq %r13, G(BT_OFF_GPR + 0x68)
  movq %r14, G(BT_OFF_GPR + 0x70)
  movq %r15, G(BT_OFF_GPR + 0x78)
.endm

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
 * Callouts and exits to the dispatcher save only what C code touches:
 * XMM0-15 (compiled code and glibc's string functions use them) and MXCSR,
 * into their places in the FXSAVE image, then load the host MXCSR. The
 * library's C code uses no x87 or MMX, so the x87 state stays in the FPU;
 * the full fxsave/fninit/fxrstor was most of a callout's cost. C code that
 * needs the whole image (the FP-control emulation, and run() before it
 * returns to the caller) calls vmm__bt_fpu_sync(), which completes it and
 * sets ctx->fpu_full; entering translated code then restores everything
 * with fxrstor. Outside run() the image is always the whole state.
 */
.macro XMM_SAVE
  stmxcsr G(BT_OFF_FPU + 24)
  movups %xmm0, G(BT_OFF_FPU + 160 + 0)
  movups %xmm1, G(BT_OFF_FPU + 160 + 16)
  movups %xmm2, G(BT_OFF_FPU + 160 + 32)
  movups %xmm3, G(BT_OFF_FPU + 160 + 48)
  movups %xmm4, G(BT_OFF_FPU + 160 + 64)
  movups %xmm5, G(BT_OFF_FPU + 160 + 80)
  movups %xmm6, G(BT_OFF_FPU + 160 + 96)
  movups %xmm7, G(BT_OFF_FPU + 160 + 112)
  movups %xmm8, G(BT_OFF_FPU + 160 + 128)
  movups %xmm9, G(BT_OFF_FPU + 160 + 144)
  movups %xmm10, G(BT_OFF_FPU + 160 + 160)
  movups %xmm11, G(BT_OFF_FPU + 160 + 176)
  movups %xmm12, G(BT_OFF_FPU + 160 + 192)
  movups %xmm13, G(BT_OFF_FPU + 160 + 208)
  movups %xmm14, G(BT_OFF_FPU + 160 + 224)
  movups %xmm15, G(BT_OFF_FPU + 160 + 240)
  ldmxcsr G(BT_OFF_MXCSR_HOST)
.endm

.macro XMM_LOAD
  ldmxcsr G(BT_OFF_FPU + 24)
  movups G(BT_OFF_FPU + 160 + 0), %xmm0
  movups G(BT_OFF_FPU + 160 + 16), %xmm1
  movups G(BT_OFF_FPU + 160 + 32), %xmm2
  movups G(BT_OFF_FPU + 160 + 48), %xmm3
  movups G(BT_OFF_FPU + 160 + 64), %xmm4
  movups G(BT_OFF_FPU + 160 + 80), %xmm5
  movups G(BT_OFF_FPU + 160 + 96), %xmm6
  movups G(BT_OFF_FPU + 160 + 112), %xmm7
  movups G(BT_OFF_FPU + 160 + 128), %xmm8
  movups G(BT_OFF_FPU + 160 + 144), %xmm9
  movups G(BT_OFF_FPU + 160 + 160), %xmm10
  movups G(BT_OFF_FPU + 160 + 176), %xmm11
  movups G(BT_OFF_FPU + 160 + 192), %xmm12
  movups G(BT_OFF_FPU + 160 + 208), %xmm13
  movups G(BT_OFF_FPU + 160 + 224), %xmm14
  movups G(BT_OFF_FPU + 160 + 240), %xmm15
.endm

/*
 * void vmm__bt_fpu_sync(void): complete the FXSAVE image during a callout
 * and give C the ABI's FPU state. Idempotent.
 */
  .globl vmm__bt_fpu_sync
  .hidden vmm__bt_fpu_sync
  .type vmm__bt_fpu_sync, @function
vmm__bt_fpu_sync:
  cmpb $0, G(BT_OFF_FPU_FULL)
  jne 1f
  XMM_LOAD
  fxsave64 G(BT_OFF_FPU)
  fninit
  fldcw G(BT_OFF_FCW_HOST)
  ldmxcsr G(BT_OFF_MXCSR_HOST)
  movb $1, G(BT_OFF_FPU_FULL)
1:
  ret
  .size vmm__bt_fpu_sync, . - vmm__bt_fpu_sync

  .text

/*
 * int vmm__bt_enter(struct bt_ctx *ctx, uint64_t host_target)
 * GS base already points at ctx. Returns a BT_X_* reason.
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
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  movq %rsp, G(BT_OFF_HOST_RSP)
  movq %rsi, G(BT_OFF_CONT)
  stmxcsr G(BT_OFF_MXCSR_HOST)
  fnstcw G(BT_OFF_FCW_HOST)
  cmpb $0, G(BT_OFF_FPU_FULL)
  jne 1f
  XMM_LOAD
  jmp 2f
1:
  fxrstor64 G(BT_OFF_FPU)
2:
  pushq G(BT_OFF_FLAGS)
  popfq
  LOAD_GPRS
  jmp *G(BT_OFF_CONT)
  .cfi_endproc
  .size vmm__bt_enter, . - vmm__bt_enter

/* Common tail: guest state and FPU are in the context; eax = reason. */
bt_leave:
  movq G(BT_OFF_HOST_RSP), %rsp
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret

.macro EXIT_ENTRY name, reason
  .globl \name
  .hidden \name
  .type \name, @function
\name:
  pushfq
  popq G(BT_OFF_FLAGS)
  SAVE_GPRS
  cld
  XMM_SAVE
  movb $0, G(BT_OFF_FPU_FULL)
  movl $\reason, %eax
  jmp bt_leave
  .size \name, . - \name
.endm

/* Entered by jmp from translated code, guest state live. */
  EXIT_ENTRY vmm__bt_exit_link, BT_X_LINK
  EXIT_ENTRY vmm__bt_exit_jc, BT_X_JC
  EXIT_ENTRY vmm__bt_exit_budget, BT_X_BUDGET

/*
 * The callout gate, entered by "call *%gs:BT_OFF_GATE" with the descriptor
 * number in ctx->arg. vmm__bt_callout() returns 0 to resume translated code
 * at ctx->cont, or non-zero to leave for the dispatcher.
 */
  .globl vmm__bt_gate
  .hidden vmm__bt_gate
  .type vmm__bt_gate, @function
vmm__bt_gate:
  pushfq
  popq G(BT_OFF_FLAGS)
  SAVE_GPRS
  popq G(BT_OFF_RET)
  cld
  XMM_SAVE
  movb $0, G(BT_OFF_FPU_FULL)
  movq G(BT_OFF_SELF), %rdi
  call vmm__bt_callout
  testl %eax, %eax
  jnz 1f
  cmpb $0, G(BT_OFF_FPU_FULL)
  jne 2f
  XMM_LOAD
3:
  pushq G(BT_OFF_FLAGS)
  popfq
  LOAD_GPRS
  jmp *G(BT_OFF_CONT)
2:
  fxrstor64 G(BT_OFF_FPU)
  jmp 3b
1:
  movl $BT_X_CALLOUT, %eax
  jmp bt_leave
  .size vmm__bt_gate, . - vmm__bt_gate

  .section .note.GNU-stack, "", @progbits
