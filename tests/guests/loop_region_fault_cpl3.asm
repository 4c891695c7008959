; 64-bit user mode: a loop region (docs/bt.md "Loop regions") whose body
; faults in the middle of its fragments, so callouts deliver exceptions
; and iretq resumes inside the loop, at RIPs where new TUs start. Every
; 16th iteration divides by zero (#DE: the handler sets rbx to 3 and
; returns to the div), every 24th loads through a non-canonical rsi
; (#GP: the handler points rsi at the data and returns to the load).
; rcx and r8..r11 are named by no instruction of the loop: its fragments
; keep them borrowed across their links, and they must come back intact
; after every fault, as must every other register. The handlers count
; the faults at 0x30080 (62 #DE) and 0x30088 (41 #GP). RFLAGS starts with
; IOPL 0: this host's KVM puts IOPL 0 in the frame of a fault from CPL 3
; code started with IOPL 3, and compare checks the kernel stack.
; mode: long64-cpl3
; reg: rflags=0x202
; kernel-stack: 0x70000
; idt: 0x11000 0xdf
; expect: rbx=3 rcx=0x1111 rsi=0x30100 rdi=0x30000 rbp=0x7a314 r8=0x8888 r9=0x9999 r10=0xaaaa r11=0xbbbb r12=0 r13=0x13e5e51c r14=0x8000000000000000 r15=0x30100
; expect-mem: 0x30008 64 8a 02 00 00 00 00 00 e8 03 00 00 00 00 00 00
; expect-mem: 0x30018 11 11 00 00 00 00 00 00 88 88 00 00 00 00 00 00
; expect-mem: 0x30028 99 99 00 00 00 00 00 00 aa aa 00 00 00 00 00 00
; expect-mem: 0x30038 bb bb 00 00 00 00 00 00 1c e5 e5 13 00 00 00 00
; expect-mem: 0x30080 3e 00 00 00 00 00 00 00 29 00 00 00 00 00 00 00
; expect-mem: 0x30100 14 a3 07 00 00 00 00 00
bits 64
%define ORG 0x10000
org ORG
user:
    mov rcx, 0x1111
    mov r8, 0x8888
    mov r9, 0x9999
    mov r10, 0xaaaa
    mov r11, 0xbbbb
    mov rdi, 0x30000
    mov r15, 0x30100
    mov r14, 0x8000000000000000
    mov r12d, 1000
    xor r13d, r13d
.top:
    mov rax, r12
    and eax, 15
    mov ebx, 3
    cmovz ebx, eax              ; rbx = 0 every 16th iteration
    mov rax, r12
    add rax, [rdi]
    xor edx, edx
    div rbx                     ; #DE when rbx = 0
    add [rdi + 8], rax
    add [rdi + 16], rdx
    mov rax, r12
    mov esi, 24
    xor edx, edx
    div rsi                     ; 24 never 0: rdx = r12 % 24
    mov rsi, r15
    test edx, edx
    jnz .ok                     ; forward, inside the loop
    mov rsi, r14                ; every 24th: non-canonical
.ok:
    mov rbp, [rsi]              ; #GP through the non-canonical rsi
    add rbp, r12
    mov [rsi], rbp
    add r13, rbp
    dec r12d
    jnz .top
    mov [rdi + 24], rcx
    mov [rdi + 32], r8
    mov [rdi + 40], r9
    mov [rdi + 48], r10
    mov [rdi + 56], r11
    mov [rdi + 64], r13
    out 0xeb, al

; #DE: count it, rbx = 3, back to the div.
times 0x200 - ($ - $$) db 0xcc
h_de:
    add qword [0x30080], 1
    mov ebx, 3
    iretq

; #GP: count it, rsi = the data, back to the load (error code popped).
times 0x240 - ($ - $$) db 0xcc
h_gp:
    add qword [0x30088], 1
    mov rsi, r15
    add rsp, 8
    iretq

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 14
%if v == 0
    gate64 h_de, 0x8e
%elif v == 13
    gate64 h_gp, 0x8e
%else
    dq 0, 0
%endif
%assign v v + 1
%endrep
