; External interrupts delivered through a guest IDT (64-bit, CPL 0): the
; guest halts with IF=1 three times; the host injects vector 0x40 at each
; halt; the handler counts. Interrupts masked by cli are not taken.
; mode: long64
; inject-on-hlt: 0x40 3
; expect: rax=3 rcx=0 rbx=3
bits 64
%define ORG 0x10000
org ORG
    lidt [rel idtr]
    xor ebx, ebx
    mov ecx, 3
.loop:
    sti
    hlt
    cli
    inc ebx                        ; one halt done
    mov eax, [rel counter]
    cmp eax, ebx                   ; exactly one interrupt per halt
    jne .bad
    dec ecx
    jnz .loop
    mov eax, [rel counter]
    hlt
.bad:
    mov al, 0xee
    out 0xe9, al
    hlt

h40:
    inc dword [rel counter]
    iretq
h_bad:
    mov al, 0xff
    out 0xe9, al
    hlt

align 4
counter: dd 0

%include "gate64.inc"

align 16
idt:
%assign v 0
%rep 0x41
%if v == 0x40
    gate64 h40
%else
    gate64 h_bad
%endif
%assign v v + 1
%endrep
idtr:
    dw 0x41 * 16 - 1
    dq idt
