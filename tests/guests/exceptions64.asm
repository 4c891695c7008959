; Exceptions through a guest IDT (64-bit, CPL 0): #DE, #UD, #PF on a read
; and on a write (error code and CR2), #GP for a non-canonical address and
; for a bad segment selector (error code = selector). Each handler records
; vector, error code, CR2 and the faulting RIP minus the expected one (0),
; then resumes at the next test. Records: 32 bytes each at 0x30000.
; mode: long64
; expect: r15=6
; expect-mem: 0x30000 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
; expect-mem: 0x30020 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
; expect-mem: 0x30040 0e 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00
; expect-mem: 0x30060 0e 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 08 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00
; expect-mem: 0x30080 0d 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 08 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00
; expect-mem: 0x300a0 0d 00 00 00 00 00 00 00 50 00 00 00 00 00 00 00 08 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00
bits 64
%define ORG 0x10000
org ORG

%macro expect_fault 2              ; run from %1; %2 must fault
    lea rax, [rel %2]
    mov [rel expected_rip], rax
    lea rax, [rel %%next]
    mov [rel resume], rax
    jmp %1
%%next:
%endmacro

start:
    lidt [rel idtr]
    xor r15d, r15d                 ; records written
    mov rbx, 0x100000000           ; beyond the 4 GiB identity map

    expect_fault f_de, f_de.div
    expect_fault f_ud, f_ud
    expect_fault f_pf_read, f_pf_read
    expect_fault f_pf_write, f_pf_write
    expect_fault f_gp_canonical, f_gp_canonical.load
    expect_fault f_gp_selector, f_gp_selector.load
    hlt

f_de:
    xor edx, edx
    xor ecx, ecx
    mov eax, 1
.div:
    div ecx
f_ud:
    ud2
f_pf_read:
    mov rax, [rbx]
f_pf_write:
    mov byte [rbx + 8], 1
f_gp_canonical:
    mov rcx, 0x8000000000000000
.load:
    mov rax, [rcx]
f_gp_selector:
    mov ax, 0x53                   ; index 10: beyond the GDT limit
.load:
    mov ds, ax

; Exceptions without an error code push a zero one, so one common path
; sees [rsp] = vector, [rsp+8] = error code, [rsp+16] = RIP.
h_de:
    push 0
    push 0
    jmp record
h_ud:
    push 0
    push 6
    jmp record
h_gp:
    push 13
    jmp record
h_pf:
    push 14
    jmp record
h_bad:
    mov al, 0xff
    out 0xe9, al
    hlt

record:
    mov rdi, r15
    shl rdi, 5
    add rdi, 0x30000
    mov rax, [rsp]
    mov [rdi], rax                 ; vector
    mov rax, [rsp + 8]
    mov [rdi + 8], rax             ; error code
    mov rax, cr2
    mov [rdi + 16], rax            ; CR2
    mov rax, [rsp + 16]
    sub rax, [rel expected_rip]    ; 0: RIP is the faulting instruction
    mov [rdi + 24], rax
    inc r15
    mov rax, [rel resume]
    mov [rsp + 16], rax
    add rsp, 16
    iretq

align 8
expected_rip: dq 0
resume: dq 0

%include "gate64.inc"

align 16
idt:
%assign v 0
%rep 32
%if v == 0
    gate64 h_de
%elif v == 6
    gate64 h_ud
%elif v == 13
    gate64 h_gp
%elif v == 14
    gate64 h_pf
%else
    gate64 h_bad
%endif
%assign v v + 1
%endrep
idtr:
    dw 32 * 16 - 1
    dq idt
