; CPL 3 -> CPL 0 -> CPL 3 with syscall and sysretq: STAR/LSTAR/FMASK and
; EFER.SCE are set by the host (wrmsr is privileged). The handler records
; RCX (the return RIP), R11 (the user RFLAGS), its CS and its RSP (syscall
; does not switch stacks); the user code checks its selectors afterwards.
; mode: long64-cpl3
; reg: rflags=0x3202
; msr: 0xc0000080=0xd01 0xc0000081=0x0023001000000000 0xc0000082=0x10200 0xc0000084=0x47700
; expect: rax=0x33 rbx=0x2b rsp=0x80000 r13=0x88 rflags=0x3202
; expect-mem: 0x30020 08 00 01 00 00 00 00 00 02 32 00 00 00 00 00 00 10 00 00 00 00 00 00 00 00 00 08 00 00 00 00 00
; kvm-host-limit: shutdown "this host's KVM (PVM) raises #GP on sysretq back to CPL 3 (the syscall entry works; raw-ioctl repro in tests/kvm_host_probe.c)"
bits 64
org 0x10000
    mov r13d, 0x88
    syscall
    mov ax, cs
    movzx eax, ax
    mov bx, ss
    movzx ebx, bx
    out 0xeb, al

; syscall at CPL 0: RCX = return RIP, R11 = user RFLAGS, no stack switch;
; FMASK cleared IF.
times 0x200 - ($ - $$) db 0xcc
hsys:
    mov [0x30020], rcx
    mov [0x30028], r11
    mov qword [0x30030], 0
    mov [0x30030], cs
    mov [0x30038], rsp
    o64 sysret
