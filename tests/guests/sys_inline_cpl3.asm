; syscall and sysretq round trips, 40 of them, so that BT runs them as it
; translates them inline (linked, with the jump cache kept across the
; privilege change), and the MSRs they depend on changed under them.
; Before each syscall the user code sets CF, ZF, PF and DF (IF is set);
; FMASK masks CF, DF and IF. The handler sums the flags it runs with
; (r12), R11 (r13) and checks RCX, CS and SS; it flips CF and ZF in R11,
; and the user code sums the flags sysretq gave it (r9). During the call
; with eax = 20 the handler moves LSTAR to a second handler (counting in
; r14 instead of r10) and FMASK to one that leaves CF alone. Then the
; user asks (eax = -1) for EFER.SCE to be cleared, which the handler does
; before it returns with iretq to the start of the same TU, translated
; while SCE was set: its syscall now raises #UD, whose handler records the vector and the
; faulting RIP and ends the run.
; mode: long64-cpl3
; kernel-stack: 0x70000
; idt: 0x11000 0x6f
; reg: rflags=0x202
; msr: 0xc0000080=0xd01 0xc0000081=0x0023001000000000 0xc0000082=0x10400 0xc0000084=0x40701
; expect: r9=0xf0f0 r10=21 r12=0xb49 r13=0xfb18 r14=19 r15=0
; expect-mem: 0x30000 06 00 00 00 00 00 00 00 40 00 01 00 00 00 00 00
; kvm-host-limit: shutdown "this host's KVM (PVM) raises #GP on sysretq back to CPL 3 (the syscall entry works; raw-ioctl repro in tests/kvm_host_probe.c)"
bits 64
%define ORG 0x10000
org ORG
user:
    xor r9d, r9d
    xor r10d, r10d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    mov r15d, 40
.loop:
    mov eax, r15d
    xor edx, edx                   ; ZF, PF
    stc
    std
    syscall
.back:
    pushfq
    pop rsi
    add r9, rsi
    cld
    mov si, cs
    cmp si, 0x33
    jne bad_user
    mov si, ss
    cmp si, 0x2b
    jne bad_user
    dec r15d
    jnz .loop
.last:                             ; a TU: translated while SCE is set
    mov eax, -1
.ud:
    syscall                        ; EFER.SCE off; run again: #UD
bad_user:
    mov al, 0xee
    out 0xe9, al
    out 0xeb, al

times 0x400 - ($ - $$) db 0xcc
hsys:                              ; LSTAR at first: counts in r10
    pushfq
    pop rdx
    add r12, rdx
    add r13, r11
    call check
    inc r10
    cmp eax, 20
    jne .ret
    mov ecx, 0xc0000082
    mov eax, hsys2
    xor edx, edx
    wrmsr
    mov ecx, 0xc0000084
    mov eax, 0x40700
    wrmsr
    mov ecx, user.back
.ret:
    xor r11, 0x41
    o64 sysret

hsys2:                             ; LSTAR from the 20th call on
    pushfq
    pop rdx
    add r12, rdx
    cmp eax, -1
    je .off
    add r13, r11
    call check
    inc r14
    xor r11, 0x41
    o64 sysret
.off:
    mov ecx, 0xc0000080
    rdmsr
    and eax, ~1
    wrmsr
    mov rsi, rsp
    push 0x2b
    push rsi
    push r11
    push 0x33
    push user.last                 ; the same fragment again
    iretq

; RCX is the return RIP, CS and SS the kernel's.
check:
    cmp rcx, user.back
    jne bad
    mov si, cs
    cmp si, 0x10
    jne bad
    mov si, ss
    cmp si, 0x18
    jne bad
    ret
bad:
    mov al, 0xbb
    out 0xe9, al
    hlt

hud:
    mov qword [0x30000], 6
    mov rax, [rsp]
    mov [0x30008], rax
    out 0xeb, al

%include "gate64.inc"

times 0x1000 - ($ - $$) db 0
idt:
%assign v 0
%rep 7
%if v == 6
    gate64 hud
%else
    dq 0, 0
%endif
%assign v v + 1
%endrep
