; Halting for test_platform.c. ebx = 0: the 8259A (IRQ 5 at vector 0x25,
; the only one unmasked) is set up, DATA+0 = 1, then sti; hlt. Only an
; interrupt it can take ends the halt; the handler counts in DATA+4 and
; sends an EOI; the guest then writes 5 on the exit port. ebx = 1: cli;
; hlt with DATA+0 = 1: an external interrupt must not end this halt, an
; NMI does (its handler writes 2 on the exit port).
bits 64
%include "plat.inc"
org ORG
    cli
    lidt [rel idtr]
    cmp ebx, 1
    je .nmi_wait
    pic_init 0xdf, 0xff
    mov dword [DATA], 1
    sti
    hlt
    cli
    mov al, 5
    out EXIT_PORT, al
    hlt
.nmi_wait:
    mov dword [DATA], 1
    hlt
    mov al, 0xdd                    ; woken by something else
    out EXIT_PORT, al
    hlt

irq5:
    push rax
    inc dword [DATA + 4]
    mov al, 0x20
    out 0x20, al
    pop rax
    iretq

nmi:
    mov al, 2
    out EXIT_PORT, al
    hlt

ext:                                ; the injected vector 0x30
    mov al, 0x30
    out EXIT_PORT, al
    hlt

bad_handler
idtr_def
align 16
idt:
%assign v 0
%rep 256
%if v == 0x25
    gate64 irq5
%elif v == 2
    gate64 nmi
%elif v == 0x30
    gate64 ext
%else
    gate64 bad
%endif
%assign v v + 1
%endrep
