; 64-bit user mode: the translated stack operations (push and pop of
; registers and immediates, 8- and 2-byte, a 2-byte push across a page
; boundary, ret imm16, a ret to a return address the callee rewrote), run
; 100 times so they execute as chained translated code; RSP must come back
; exact. A failed check leaves r14 nonzero.
; mode: long64-cpl3
; expect: rax=3 rbx=0x1122334455667788 rcx=0x12345678 rdx=0xfffffffffffffffe rsi=0x7788 rdi=0xa55a r14=0 r15=0 rsp=0x80000
; expect-mem: 0x6ffff 5a a5
bits 64
org 0x10000
    xor esi, esi
    xor edi, edi
    xor r14d, r14d
    mov r15, 100
loop:
    push -2
    push 0x12345678
    mov rax, 0x1122334455667788
    push rax
    pop rbx
    pop rcx
    pop rdx
    push word 0x7788
    pop si
    mov r13, rsp
    mov rsp, 0x70001            ; the 2-byte push writes 0x6ffff and 0x70000
    push word 0xa55a
    pop di
    mov rsp, r13
    push 1
    push 2
    call sum2                   ; rax = 3, ret 16 drops both arguments
    cmp rsp, 0x80000
    jne fail
    call redirect
    jmp fail                    ; the rewritten return address skips this
back:
    dec r15
    jnz loop
    out 0xeb, al

sum2:
    mov rax, [rsp + 8]
    add rax, [rsp + 16]
    ret 16

redirect:
    lea r12, [rel back]
    mov [rsp], r12
    ret

fail:
    mov r14, 0xbad
    out 0xeb, al
