; 64-bit user mode (CPL 3, runs natively under KVM here): a loop summing
; 1..1000000 and an SSE2 dot product, results also stored to memory.
; mode: long64-cpl3
; expect: rax=500000500000 rcx=0 rbx=0x46 rip=0x1003c
; expect-mem: 0x30000 20 29 5a 6a 74 00 00 00
bits 64
org 0x10000
    xor eax, eax
    mov ecx, 1000000
.loop:
    add rax, rcx
    dec rcx
    jnz .loop
    mov [0x30000], rax
    movdqa xmm0, [rel va]
    movdqa xmm1, [rel vb]
    pmulld xmm0, xmm1          ; SSE4.1
    phaddd xmm0, xmm0          ; SSSE3
    phaddd xmm0, xmm0
    movd ebx, xmm0             ; 1*5+2*6+3*7+4*8 = 70
    out 0xeb, al
align 16
va: dd 1, 2, 3, 4
vb: dd 5, 6, 7, 8
