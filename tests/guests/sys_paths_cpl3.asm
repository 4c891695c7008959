; The cases BT's inline sysretq leaves to C, and code that kernel and user
; both run (the jump cache's tags name the privilege: one's entry never
; serves the other).
; 1. An interrupt made pending while the kernel runs with IF clear (port
;    0xec) is taken as sysretq sets IF, before the user's next instruction
;    (three times: the later ones find the user's fragment in the jump
;    cache, where the inline path would otherwise go straight on).
; 2. R11 with TF: the user code runs one instruction, then #DB.
; 3. A function F (a load through RDI) called indirectly by the kernel
;    and by the user code, six times each, on a page mapped for the
;    supervisor only: the kernel's loads succeed, each of the user's
;    raises #PF with U set in the error code.
; 4. RCX not canonical: sysretq raises #GP at CPL 0, which ends the run
;    (a #GP anywhere else halts: KVM's on PVM, see kvm-host-limit).
; mode: long64-cpl3
; kernel-stack: 0x70000
; idt: 0x11000 0x40f
; reg: rflags=0x202
; msr: 0xc0000080=0xd01 0xc0000081=0x0023001000000000 0xc0000082=0x10400 0xc0000084=0x40700
; inject-on-port: 0x40
; expect: r10=0x6d38 r12=6 r13=3
; expect-mem: 0x30000 2c 00 01 00 00 00 00 00 05 00 00 00 00 00 00 00 00 00 00 00 80 00 00 00 00 00 00 00 00 00 00 00 32 04 01 00 00 00 00 00 10 00 00 00 00 00 00 00
; kvm-host-limit: hlt "this host's KVM (PVM) raises #GP on sysretq back to CPL 3 (the syscall entry works; raw-ioctl repro in tests/kvm_host_probe.c)"
bits 64
%define ORG 0x10000
%define VA 0x8000000000
%include "supervisor_va.inc"
org ORG
user:
    xor r10d, r10d
    xor r12d, r12d
    xor r13d, r13d
    mov r15d, 3
.irq:
    xor r8d, r8d
    mov eax, 1
    syscall
.irq_ret:
    mov r8d, 1                     ; the interrupt comes first
    dec r15d
    jnz .irq
    mov eax, 2
    syscall
    nop                            ; TF: #DB after this one
.db_rip:
    mov r15d, 6
.pf:
    mov eax, 4
    syscall
    mov rdi, VA
    mov rbx, f
    call rbx                       ; #PF, the load skipped
    dec r15d
    jnz .pf
    mov eax, 3
    syscall
    mov al, 0xee
    out 0xe9, al
    out 0xeb, al

f:
    mov rax, [rdi]                 ; 3 bytes (h14 skips them)
    ret

times 0x400 - ($ - $$) db 0xcc
hsys:
    cmp eax, 1
    je .irq
    cmp eax, 2
    je .tf
    cmp eax, 3
    je .gp
    cmp eax, 4
    je .pt
    jmp bad
.irq:
    out 0xec, al                   ; vector 0x40 pending, IF clear
    o64 sysret
.tf:
    or r11, 0x100
    o64 sysret
.gp:
    mov rcx, 0x0000800000000000
.gp_rip:
    o64 sysret
.pt:
    cmp byte [0x30040], 0
    jne .call
    mov byte [0x30040], 1
    map_supervisor_va 0x50000
    mov qword [0x50000], 0x1234
.call:
    mov rdi, VA
    mov rbx, f
    call rbx
    add r10, rax
    o64 sysret

h40:
    cmp qword [rsp], user.irq_ret
    jne bad
    test r8d, r8d
    jnz bad
    inc r13
    iretq

h1:
    mov rax, [rsp]
    mov [0x30000], rax
    and qword [rsp + 16], ~0x100
    iretq

h14:
    mov rax, [rsp]
    mov [0x30008], rax
    mov rax, cr2
    mov [0x30010], rax
    inc r12
    add qword [rsp + 8], 3
    add rsp, 8
    iretq

h13:
    cmp qword [rsp + 8], hsys.gp_rip
    jne .other
    mov rax, [rsp]
    mov [0x30018], rax
    mov rax, [rsp + 8]
    mov [0x30020], rax
    mov rax, [rsp + 16]
    mov [0x30028], rax
    out 0xeb, al
.other:                            ; a #GP elsewhere halts (see above)
    hlt

bad:
    mov al, 0xbb
    out 0xe9, al
    hlt

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 0x41
%if v == 1
    gate64 h1
%elif v == 13
    gate64 h13
%elif v == 14
    gate64 h14
%elif v == 0x40
    gate64 h40
%else
    dq 0, 0
%endif
%assign v v + 1
%endrep
