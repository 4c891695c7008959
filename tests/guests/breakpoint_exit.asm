; With #BP selected as an exception exit, int3 returns to the host with
; the vector and RIP at the int3 instruction.
; mode: long64-cpl3
; exception-exits: 0x8
; expect-exit: fault:3
; expect: rax=0x77 rip=0x10005
; kvm-host-limit: shutdown "this host's KVM (PVM) does not intercept #BP with KVM_GUESTDBG_USE_SW_BP; the guest takes the #BP itself"
bits 64
org 0x10000
    mov eax, 0x77
    int3
    mov eax, 0x88
    out 0xeb, al
