; An interrupt delivered when the dispatcher is about to chain a direct
; jump to its target must not chain it to the handler. The interrupt is
; injected with IF clear and taken after the instruction in the shadow of
; sti; that instruction ends in a link to the next one. Under an
; instruction limit the last instructions before it run one per
; translation (fewer than 12 left, BT_MAX_TU in engine.c: with a limit of
; 18 that holds from the 7th instruction, before the interrupt is taken),
; so the shadowed nop and the handler are translated alike and the link
; could be patched to the handler. Regression: BT did so, and
; the second time round the nop jumped into the handler without an
; interrupt (Debian's kernel ran its timer interrupt entry from arbitrary
; jumps: IF set in the handler, a garbage frame, BUG_ON in irq_work).
; KVM has no instruction limits.
; engines: bt
; mode: long64
; insn-limit: 18
; inject-on-port: 32
; expect: r15=1 rbx=0
bits 64
%define ORG 0x10000
org ORG

start:
    lidt [rel idtr]
    xor r15d, r15d
    mov ebx, 2
    cli
    out 0xec, al                    ; vector 32, held back by IF=0
again:
    sti
    nop                             ; first time round: the interrupt after it
    dec ebx
    jnz again
    hlt

h_irq:
    inc r15
    iretq
%include "idt64_irq32.inc"
