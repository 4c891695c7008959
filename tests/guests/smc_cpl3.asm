; Self-modifying code at CPL 3 in long mode (native under KVM here, so the
; engines are compared on it): a loop patches the immediate of an add
; further on in the same basic block on every iteration; code is generated
; into a buffer, called, rewritten and called again; an instruction
; rewrites the instruction right after it.
; mode: long64-cpl3
; expect: rbx=55 r12=6 rdx=0x42
; expect-mem: 0x20000 b8 03 00 00 00 c3
bits 64
org 0x10000
    ; ebx = 10 + 9 + ... + 1, each addend patched into the add
    xor ebx, ebx
    mov ecx, 10
.l1:
    mov [rel .imm + 2], cl
.imm:
    add ebx, strict byte 0
    dec ecx
    jnz .l1
    ; generate "mov eax, n; ret" at 0x20000 for n = 1, 2, 3 and call it
    xor r12d, r12d
    mov r13d, 1
    mov r14, 0x20000
.l2:
    mov byte [r14], 0xb8
    mov [r14 + 1], r13d
    mov byte [r14 + 5], 0xc3
    call r14
    add r12d, eax
    inc r13d
    cmp r13d, 4
    jne .l2
    ; the next instruction is rewritten just before it runs
    lea rdi, [rel .next]
    mov byte [rdi + 1], 0x42
.next:
    mov dl, 0x11
    movzx edx, dl
    out 0xeb, al
