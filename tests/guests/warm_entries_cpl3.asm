; 64-bit user mode: translated code entered past its borrowing of rcx, r10
; and r11 (warm entries, docs/bt.md "Warm entries"). Blocks that access
; memory and name none of those keep them borrowed from their entry and
; leave them borrowed into the next block: a direct jump into a block that
; names them (its warm entry gives them back), an indirect call into a
; function that keeps them, its return through the jump cache into a block
; that names rcx, and the loop's back edge. 1000 iterations, so the blocks
; run chained; every register must keep its guest value.
; mode: long64-cpl3
; expect: rax=1000 rcx=0x1111 rdx=0 rsi=1000 rbp=0x2dd5278 r10=0xaaaa r11=0xbbbb r12=2000 r13=0x42aa68
bits 64
org 0x10000
    mov rcx, 0x1111
    mov r10, 0xaaaa
    mov r11, 0xbbbb
    mov rdi, 0x30000
    xor eax, eax
    mov [rdi], rax
    mov [rdi + 8], rax
    mov [rdi + 16], rax
    mov [rdi + 24], rax
    mov edx, 1000
    lea rbx, [rel fn]
again:
    add qword [rdi], 1          ; names none of rcx r10 r11: keeps them
    jmp next                    ; and leaves them borrowed
next:
    add r10, 1                  ; names r10 and r11: its warm entry gives
    add [rdi + 8], r11          ; them back
    sub r10, 1
    call rbx                    ; indirect, through the jump cache
    add [rdi + 16], rcx         ; the return lands in a block naming rcx
    dec edx
    jnz again
    mov rsi, [rdi]              ; 1000
    mov rbp, [rdi + 8]          ; 1000 * 0xbbbb
    mov r13, [rdi + 16]         ; 1000 * 0x1111
    mov r12, [rdi + 24]         ; 1000 * 2
    mov eax, esi
    out 0xeb, al

fn:
    add qword [rdi + 24], 2     ; keeps rcx r10 r11 from its entry
    ret
