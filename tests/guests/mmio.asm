; MMIO of every size to the scratch device, reads returning what was written.
; mode: long64
; expect: rax=0x1122334455667788 rbx=0xaabbccdd rcx=0xeeff rdx=0x99
; expect-mmio: 8
bits 64
org 0x10000
    mov rdi, 0xd0000000
    mov rax, 0x1122334455667788
    mov [rdi], rax
    mov dword [rdi+8], 0xaabbccdd
    mov word [rdi+12], 0xeeff
    mov byte [rdi+14], 0x99
    xor eax, eax
    mov rax, [rdi]
    mov ebx, [rdi+8]
    movzx ecx, word [rdi+12]
    movzx edx, byte [rdi+14]
    hlt
