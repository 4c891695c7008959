; 32-bit protected mode: calls, stack frames, rep movsd, bit ops, imul.
; mode: prot32
; expect: rax=0x37 rbx=0x2a rcx=0 rdx=0x13 rsi=0x10 rdi=0x3c
; expect-mem: 0x20000 01 00 00 00 02 00 00 00 03 00 00 00 04 00 00 00
bits 32
org 0x10000
    mov esp, 0x80000
    push 10
    push 45
    call add2              ; eax = 55
    add esp, 8
    mov ebx, 6
    imul ebx, ebx, 7       ; 42
    mov esi, src
    mov edi, 0x20000
    mov ecx, 4
    cld
    rep movsd
    mov edx, 0x80000
    bsf esi, edx           ; 19 -> esi = 0x13
    xchg esi, edx          ; edx = 0x13, esi = 0x80000
    shr esi, 15            ; 0x10
    mov edi, 8
    lea edi, [edi*4+edi+20]; 60 = 0x3c
    hlt
add2:
    push ebp
    mov ebp, esp
    mov eax, [ebp+8]
    add eax, [ebp+12]
    pop ebp
    ret
src: dd 1, 2, 3, 4
