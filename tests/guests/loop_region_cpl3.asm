; 64-bit user mode: loops whose bodies span several TUs, which BT runs as
; loop regions (docs/bt.md "Loop regions"): their fragments keep registers
; no instruction of the loop names borrowed across the links between them.
; Loop A (three TUs, rcx and r8..r11 unnamed: they are kept) is entered in
; its middle from outside, has a forward jcc inside the loop and a forward
; jcc leaving it early (taken: r12 passes 450000 before the count ends);
; loop B (20 instructions: two TUs, counted with dec/jnz) names every
; register but r15, the set of one it keeps. Every register must keep its
; guest value throughout.
; mode: long64-cpl3
; expect: rax=0x6da49 rbx=0x1ef1e rcx=0 rdx=0x5 rsi=0x5 rdi=0x30000 rbp=0x5 r8=0x5 r9=0x6 r10=0x7 r11=0x8 r12=0x9 r13=0xa r14=0xb r15=0xf0f0
; expect-mem: 0x30000 49 da 06 00 00 00 00 00 eb a9 7f 02 00 00 00 00
; expect-mem: 0x30010 a9 06 00 00 00 00 00 00 d9 3d 58 01 00 00 00 00
; expect-mem: 0x30020 68 63 57 01 00 00 00 00 3e 01 00 00 00 00 00 00
; expect-mem: 0x30030 31 de 06 00 00 00 00 00 55 01 00 00 00 00 00 00
; expect-mem: 0x30040 3f 01 00 00 00 00 00 00 11 11 00 00 00 00 00 00
; expect-mem: 0x30050 88 88 00 00 00 00 00 00 99 99 00 00 00 00 00 00
; expect-mem: 0x30060 aa aa 00 00 00 00 00 00 bb bb 00 00 00 00 00 00
; expect-mem: 0x30070 42 e9 01 00 00 00 00 00 1e ef 01 00 00 00 00 00
bits 64
org 0x10000
    mov rcx, 0x1111
    mov r8, 0x8888
    mov r9, 0x9999
    mov r10, 0xaaaa
    mov r11, 0xbbbb
    mov rdi, 0x30000
    xor eax, eax
    mov ecx, 16
.zero:
    mov [rdi + rcx * 8 - 8], rax
    dec ecx
    jnz .zero
    mov rcx, 0x1111
    mov edx, 1000
    xor r12d, r12d
    xor r13d, r13d
    xor ebx, ebx
    jmp .mid                    ; into the middle of loop A
.top:
    mov rax, [rdi]
    add rax, rdx
    mov [rdi], rax              ; [0] += rdx
    mov rbx, rdx
    and ebx, 1
    lea rsi, [rbx + rbx * 2]
    add r13, rbx                ; odd counts
    mov rbp, [rdi + 8]
    add rbp, rsi
    mov [rdi + 8], rbp          ; [8] += 3 for odd rdx
    test ebx, ebx
    jz .mid                     ; forward, inside the loop
    add qword [rdi + 16], 5     ; odd rdx only
    mov r14, rdx
.mid:
    add r12, rdx
    mov rax, r12
    shr rax, 3
    xor rax, rbx
    add [rdi + 24], rax
    cmp r12, 450000
    ja .out                     ; forward, leaving the loop
    mov rsi, [rdi + 24]
    add rsi, r13
    mov [rdi + 32], rsi
    dec edx
    jnz .top
.out:
    mov [rdi + 40], rdx         ; where loop A left
    mov [rdi + 48], r12
    mov [rdi + 56], r13
    mov [rdi + 64], r14
    mov [rdi + 72], rcx         ; kept through loop A
    mov [rdi + 80], r8
    mov [rdi + 88], r9
    mov [rdi + 96], r10
    mov [rdi + 104], r11
    mov r15, 0xf0f0
    mov ecx, 500
.b:                             ; loop B
    mov rax, [rdi + 112]
    add rax, rcx
    mov [rdi + 112], rax
    lea rdx, [rcx + 4]
    lea rsi, [rcx + 4]
    lea rbp, [rcx + 4]
    lea rbx, [rcx + 3]
    lea r8, [rcx + 4]
    lea r9, [rcx + 5]
    lea r10, [rcx + 6]
    lea r11, [rcx + 7]
    lea r12, [rcx + 8]
    lea r13, [rcx + 9]
    lea r14, [rcx + 10]
    add rbx, [rdi + 120]
    mov [rdi + 120], rbx
    add rax, rdx
    xor rax, r14
    add [rdi + 8], rax
    dec ecx                     ; not `loop`: emulated, it ends the TU and
    jnz .b                      ; the loop would be no region at all
    mov eax, [rdi]
    out 0xeb, al
