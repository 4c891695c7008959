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
h_bad:
    mov al, 0xff
    out 0xe9, al
    hlt

%macro gate64 1
    dw ((%1 - $$) + ORG) & 0xffff
    dw 0x10
    db 0, 0x8e
    dw (((%1 - $$) + ORG) >> 16) & 0xffff
    dd 0, 0
%endmacro

align 16
idt:
%assign v 0
%rep 33
%if v == 32
    gate64 h_irq
%else
    gate64 h_bad
%endif
%assign v v + 1
%endrep
idtr:
    dw 33 * 16 - 1
    dq idt
