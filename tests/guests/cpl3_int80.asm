; CPL 3 -> CPL 0 -> CPL 3 by software interrupt: int 0x80 through a DPL 3
; interrupt gate, the TSS switching to the kernel stack, back with iretq.
; The handler records its RSP (the kernel stack minus the 5-word frame),
; its CS, and the user CS and RSP from the frame. The IDT is loaded by the
; host (lidt is privileged).
; mode: long64-cpl3
; kernel-stack: 0x70000
; idt: 0x11000 0x80f
; expect: rax=0x33 rbx=0x2b rsp=0x80000 r12=0x77
; expect-mem: 0x30000 d8 ff 06 00 00 00 00 00 10 00 00 00 00 00 00 00 33 00 00 00 00 00 00 00 00 00 08 00 00 00 00 00
; kvm-host-limit: shutdown "this host's KVM (PVM) does not deliver a software interrupt raised by natively run CPL 3 code through the guest IDT: the guest shuts down at the int (raw-ioctl repro in tests/kvm_host_probe.c)"
bits 64
%define ORG 0x10000
org ORG
user:
    mov r12d, 0x77
    int 0x80
    mov ax, cs
    movzx eax, ax
    mov bx, ss
    movzx ebx, bx
    out 0xeb, al

; int 0x80 at CPL 0: record RSP (kernel stack minus the 5-word frame), CS,
; the user CS and RSP from the frame.
times 0x100 - ($ - $$) db 0xcc
h80:
    mov [0x30000], rsp
    mov qword [0x30008], 0
    mov [0x30008], cs
    mov rax, [rsp + 8]
    mov [0x30010], rax
    mov rax, [rsp + 24]
    mov [0x30018], rax
    iretq

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 0x81
%if v == 0x80
    gate64 h80, 0xee               ; DPL 3: reachable with int from CPL 3
%else
    dq 0, 0
%endif
%assign v v + 1
%endrep
