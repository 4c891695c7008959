; A rep movsd that faults part-way through is resumed by the guest's #PF
; handler (64-bit, CPL 0): the guest makes the identity map's 2-4 MiB
; directory entry not present, copies four dwords across 2 MiB, and the
; handler (which records CR2, the string registers and the faulting RIP)
; makes it present again and returns with iretq. The two elements before
; the fault are not repeated and the copy completes. Regression: BT put
; RIP back on the instruction after delivering the #PF, so it faulted again
; with the frame pushed until the stack ran out (Debian's kernel copying
; its boot parameters hit this).
; mode: long64
; mem: 0x400000
; expect: r15=1
; expect-mem: 0x30000 00 00 20 00 00 00 00 00 02 00 00 00 00 00 00 00
; expect-mem: 0x30010 00 00 20 00 00 00 00 00 08 01 03 00 00 00 00 00
; expect-mem: 0x30020 00 00 00 00 00 00 00 00
; expect-mem: 0x30040 00 00 00 00 00 00 00 00 08 00 20 00 00 00 00 00
; expect-mem: 0x30050 10 01 03 00 00 00 00 00
; expect-mem: 0x30100 11 11 11 11 22 22 22 22 33 33 33 33 44 44 44 44
bits 64
%define ORG 0x10000
org ORG
%include "identity_pd.inc"

start:
    lidt [rel idtr]
    xor r15d, r15d
    mov dword [0x1ffff8], 0x11111111
    mov dword [0x1ffffc], 0x22222222
    mov dword [0x200000], 0x33333333
    mov dword [0x200004], 0x44444444
    identity_pd
    mov [rel pd], rax
    and qword [rax + 8], -2         ; 2-4 MiB: not present
    invlpg [0x200000]
    mov rsi, 0x1ffff8
    mov rdi, 0x30100
    mov ecx, 4
    cld
.movs:
    rep movsd
    mov [0x30040], rcx
    mov [0x30048], rsi
    mov [0x30050], rdi
    hlt

h_pf:
    mov rax, cr2
    mov [0x30000], rax
    mov [0x30008], rcx
    mov [0x30010], rsi
    mov [0x30018], rdi
    mov rax, [rsp + 8]              ; RIP, after the error code
    lea rdx, [rel start.movs]
    sub rax, rdx
    mov [0x30020], rax              ; 0: the rep movsd itself
    inc r15
    mov rax, [rel pd]
    or qword [rax + 8], 1           ; present again
    add rsp, 8
    iretq
align 8
pd: dq 0

%define IDT_GATES 32
%define IDT_VECTOR 14
%define IDT_HANDLER h_pf
%include "idt64_one.inc"
