; An instruction whose bytes continue on a not-present page raises #PF for
; the fetch of its second part, with CR2 at that page and RIP on the
; instruction; the handler makes the page present and returns with iretq,
; and the instruction then runs (64-bit, CPL 0). A 10-byte mov rax, imm64
; is copied to 0x1ffffb, so its last five bytes are on 2-4 MiB, followed
; by jmp rbx back here; then the 2-4 MiB directory entry is made not
; present. Regression: BT put RIP back on the instruction after delivering
; that #PF (the fault is raised while the translator fetches the second
; page), so the handler never ran and the instruction was fetched again
; with the exception frame pushed (Debian's busybox, entered at CPL 3, then
; faulted at CPL 0 on SMEP and overflowed the kernel's entry stack).
; mode: long64
; mem: 0x400000
; expect: r15=1 rax=0x1122334455667788
; expect-mem: 0x30000 00 00 20 00 00 00 00 00 fb ff 1f 00 00 00 00 00
; expect-mem: 0x30010 00 00 00 00 00 00 00 00
bits 64
%define ORG 0x10000
org ORG
%include "identity_pd.inc"
%define AT 0x1ffffb

start:
    lidt [rel idtr]
    xor r15d, r15d
    ; mov rax, 0x1122334455667788 at AT, then jmp rbx at AT + 10.
    mov byte [AT], 0x48
    mov byte [AT + 1], 0xb8
    mov rax, 0x1122334455667788
    mov [AT + 2], rax
    mov word [AT + 10], 0xe3ff
    identity_pd
    mov [rel pd], rax
    and qword [rax + 8], -2         ; 2-4 MiB: not present
    invlpg [0x200000]
    xor eax, eax
    lea rbx, [rel back]
    mov rcx, AT
    jmp rcx
back:
    hlt

h_pf:
    mov rcx, cr2
    mov [0x30000], rcx
    mov rcx, [rsp + 8]              ; RIP, after the error code
    mov [0x30008], rcx
    mov rcx, [rsp]
    and ecx, 7                      ; not present, read, supervisor
    mov [0x30010], rcx
    inc r15
    mov rcx, [rel pd]
    or qword [rcx + 8], 1           ; present again
    add rsp, 8
    iretq
align 8
pd: dq 0

%define IDT_GATES 32
%define IDT_VECTOR 14
%define IDT_HANDLER h_pf
%include "idt64_one.inc"
