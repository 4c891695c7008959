; AMD's NB_CFG MSR (0xc001001f), which Linux reads and writes on AMD
; processors (the engines report the host's vendor): it reads as 0 and a
; write is dropped, without #GP, as KVM answers it. Regression: BT raised
; #GP, and Debian's kernel warned "unchecked MSR access error" twice.
; mode: long64
; expect: rax=0 rdx=0 r15=2
bits 64
%define ORG 0x10000
org ORG
    lidt [rel idtr]
    xor r15d, r15d
    mov ecx, 0xc001001f
    mov eax, 0
    mov edx, 0x4000                 ; bit 46: extended config space
    wrmsr
    inc r15
    mov eax, -1
    mov edx, -1
    rdmsr
    inc r15
    hlt
h_bad:
    mov al, 0xff
    out 0xe9, al
    hlt

%include "gate64.inc"

align 16
idt:
%rep 32
    gate64 h_bad
%endrep
idtr:
    dw 32 * 16 - 1
    dq idt
