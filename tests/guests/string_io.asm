; String port I/O in 32-bit mode: rep insb from the input port, rep outsb
; of what was read, and single in/out.
; mode: prot32
; input: 0x48 0x69 0x21 0x0a 0x7f
; expect-out: "Hi!\n"
; expect: rax=0x7f rcx=0 rdi=0x20004 rsi=0x20004
; expect-mem: 0x20000 48 69 21 0a
bits 32
org 0x10000
    cld
    mov dx, 0xea
    mov edi, 0x20000
    mov ecx, 4
    rep insb
    mov dx, 0xe9
    mov esi, 0x20000
    mov ecx, 4
    rep outsb
    mov dx, 0xea
    in al, dx
    hlt
