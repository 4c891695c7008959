; A syscall whose kernel entry (LSTAR) is in the same user page as the
; syscall: after the second call's handler turns CR4.SMEP on (from a
; supervisor-only page), the third syscall must fault fetching LSTAR at
; CPL 0 (#PF, error 0x11: present, instruction fetch; RIP = LSTAR). On BT
; the first calls linked the user's fragment to the kernel's, a link
; within one page but into another privilege, which the paging change
; must undo like a cross-page link.
; mode: long64-cpl3
; kernel-stack: 0x70000
; idt: 0x11000 0xef
; reg: rflags=0x202
; msr: 0xc0000080=0xd01 0xc0000081=0x0023001000000000 0xc0000082=0x10400 0xc0000084=0x40700
; expect: r10=2
; expect-mem: 0x30000 11 00 00 00 00 00 00 00 00 04 01 00 00 00 00 00
; kvm-host-limit: shutdown "this host's KVM (PVM) raises #GP on sysretq back to CPL 3 (the syscall entry works; raw-ioctl repro in tests/kvm_host_probe.c)"
bits 64
%define ORG 0x10000
%define VA 0x8000000000
%include "supervisor_va.inc"
org ORG
user:
    xor r10d, r10d
    mov r15d, 3
.loop:
    syscall
    dec r15d
    jnz .loop
    mov al, 0xee                   ; the third syscall ran without #PF
    out 0xe9, al
    out 0xeb, al

times 0x400 - ($ - $$) db 0xcc
hsys:                              ; LSTAR, in the user's page
    inc r10
    cmp r10, 2
    je .smep
    map_supervisor_va 0x12000      ; kpage at VA, supervisor only
    o64 sysret
.smep:
    mov rax, VA + (ksmep - kpage)
    jmp rax

times 0x1000 - ($ - $$) db 0
idt:                               ; #PF to h14, through VA
%assign v 0
%rep 15
%if v == 14
    dw h14 - kpage, 0x10
    db 0, 0x8e
    dw 0
    dd VA >> 32, 0
%else
    dq 0, 0
%endif
%assign v v + 1
%endrep

times 0x2000 - ($ - $$) db 0
kpage:                             ; at 0x12000, run through VA only
ksmep:
    mov rax, cr4
    or rax, 1 << 20                ; SMEP
    mov cr4, rax
    o64 sysret
h14:
    mov rax, [rsp]
    mov [0x30000], rax
    mov rax, [rsp + 8]
    mov [0x30008], rax
    out 0xeb, al
