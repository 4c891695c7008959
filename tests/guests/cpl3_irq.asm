; CPL 3 -> CPL 0 -> CPL 3 by external interrupt: the user code (IF=1) asks
; the host for vector 0x40 (port 0xec); the interrupt arrives at CPL 3, the
; TSS switches to the kernel stack, the handler records its RSP and CS and
; the user CS, RFLAGS and RSP from the frame, and iretq returns to CPL 3.
; IOPL is 0 and the TSS I/O bitmap grants the ports: this host's KVM (PVM)
; pushes RFLAGS without IOPL when it delivers an interrupt to CPL 3 code
; (tests/kvm_host_probe.c), so a guest relying on IOPL 3 would lose it.
; mode: long64-cpl3
; kernel-stack: 0x70000
; idt: 0x11000 0x40f
; reg: rflags=0x202
; inject-on-port: 0x40
; expect: rax=0x33 rbx=0x2b rsp=0x80000 r12=1 rflags=0x202
; expect-mem: 0x30000 d8 ff 06 00 00 00 00 00 10 00 00 00 00 00 00 00 33 00 00 00 00 00 00 00 46 02 00 00 00 00 00 00 00 00 08 00 00 00 00 00
bits 64
%define ORG 0x10000
org ORG
user:
    xor r12d, r12d
    out 0xec, al                   ; the interrupt is taken after this
.wait:
    cmp byte [0x30028], 0          ; set by the handler
    je .wait
    mov r12d, 1
    mov ax, cs
    movzx eax, ax
    mov bx, ss
    movzx ebx, bx
    out 0xeb, al

times 0x100 - ($ - $$) db 0xcc
h40:
    mov [0x30000], rsp
    mov qword [0x30008], 0
    mov [0x30008], cs
    mov rax, [rsp + 8]             ; user CS
    mov [0x30010], rax
    mov rax, [rsp + 16]            ; user RFLAGS
    mov [0x30018], rax
    mov rax, [rsp + 24]            ; user RSP
    mov [0x30020], rax
    mov byte [0x30028], 1
    iretq

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 0x41
%if v == 0x40
    gate64 h40
%else
    dq 0, 0
%endif
%assign v v + 1
%endrep
