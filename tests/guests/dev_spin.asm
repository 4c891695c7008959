; Spinner for test_loop.c (not a guest_runner program).
; 64-bit, CPL 3 (runs natively under KVM). Counts in rbx until the host
; writes a non-zero value at 0x30000, then writes the byte at 0x30008 to
; the exit port. With the flag never set it spins until stopped.
bits 64
org 0x10000
    xor ebx, ebx
.wait:
    inc rbx
    pause
    cmp qword [0x30000], 0
    je .wait
    mov al, [0x30008]
    out 0xf4, al
.fallthrough:
    out 0xeb, al
    jmp .fallthrough
