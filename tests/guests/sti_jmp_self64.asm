; sti followed by a jump to itself (an idle loop) takes the interrupt that
; was waiting: the shadow of sti covers the jump once, not every time RIP
; comes back to it. The interrupt is injected with IF clear; the handler
; records that it ran and halts. Regression: BT kept the shadow while RIP
; equalled the shadowed instruction's, so the loop never took it.
; mode: long64
; inject-on-port: 32
; expect: r15=1
bits 64
%define ORG 0x10000
org ORG

start:
    lidt [rel idtr]
    xor r15d, r15d
    cli
    out 0xec, al                    ; vector 32, held back by IF=0
    sti
.idle:
    jmp .idle

h_irq:
    inc r15
    hlt
%include "idt64_irq32.inc"
