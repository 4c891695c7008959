; Compiler-style integer code at CPL 3 (native under KVM here, compared):
; recursion through call/ret and the stack, a jump table, a sort in memory,
; 64-bit multiply and signed divide, bit scans and counts, shifts through
; CL and double shifts, byte registers AH..BH with memory operands, locked
; read-modify-write, RSP-relative frames with 16-bit pushes and leave, bit
; tests with register offsets, and a 128-bit add with adc.
; mode: long64-cpl3
; expect: rax=610 rbx=0x6c r8=0x1cf r9=-5 r10=3 r11=0x3c0 r12=0x1e r13=0x17 r14=0x11 r15=0x5
; expect-mem: 0x30000 01 02 03 05 08 0d 15 22
; expect-mem: 0x30020 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00
; expect-mem: 0x30040 34 12 00 00 2a 00 00 00
bits 64
org 0x10000
start:
    mov rsp, 0x80000
    ; fib(15) = 610 by recursion
    mov edi, 15
    call fib
    push rax                        ; keep it (rax is reused)
    ; jump table: sum of case values for i = 0..7 (cases 3, 5, 7, 9 cycled)
    xor ebx, ebx
    xor ecx, ecx
.jt:
    mov eax, ecx
    and eax, 3
    lea rdx, [rel table]
    jmp [rdx + rax * 8]
.case0: add ebx, 3
    jmp .next
.case1: add ebx, 5
    jmp .next
.case2: add ebx, 7
    jmp .next
.case3: add ebx, 9
.next:
    inc ecx
    cmp ecx, 8
    jb .jt                          ; ebx = 2 * (3 + 5 + 7 + 9) = 48
    ; insertion sort of 8 bytes at 0x30000
    mov rsi, 0x30000
    mov rax, 0x0205220d01150803     ; 03 08 15 01 0d 22 05 02
    mov [rsi], rax
    mov ecx, 1
.outer:
    movzx eax, byte [rsi + rcx]
    mov edx, ecx
.inner:
    test edx, edx
    jz .place
    movzx r8d, byte [rsi + rdx - 1]
    cmp r8d, eax
    jbe .place
    mov [rsi + rdx], r8b
    dec edx
    jmp .inner
.place:
    mov [rsi + rdx], al
    inc ecx
    cmp ecx, 8
    jb .outer
    ; multiply and signed divide: (123 * 77) = 9471; -9471 / 2000 = -4 r -1471
    mov rax, 123
    mov r9, 77
    imul rax, r9
    neg rax
    cqo
    mov r9, 2000
    idiv r9
    mov r9, rax                     ; -4
    dec r9                          ; -5
    ; bit scans: bsf/bsr/popcnt/lzcnt/tzcnt of 0x00f0 -> 4, 7, 4, 56, 4
    mov eax, 0xf0
    bsf r10d, eax                   ; 4
    bsr ecx, eax                    ; 7
    popcnt edx, eax                 ; 4
    lzcnt r11, rax                  ; 56
    tzcnt r12d, eax                 ; 4
    add r10d, ecx                   ; 11
    add r10d, edx                   ; 15
    sub r10d, r12d                  ; 11
    sub r10, 8                      ; 3
    ; shifts: (1 << 6) via cl, shld/shrd, rotate through carry
    mov cl, 6
    mov eax, 1
    shl eax, cl                     ; 0x40
    mov edx, 0xf0000000
    shld eax, edx, 4                ; 0x40f
    shrd edx, eax, 8                ; edx = 0x0ff00000
    shr edx, 20                     ; 0xff
    add r11d, edx                   ; 56 + 255 = 311 = 0x137
    stc
    rcl eax, 1                      ; 0x81f
    shr eax, 2                      ; 0x207
    xor eax, 0x78                   ; 0x27f
    sub r11d, eax                   ; 311 - 639 = -328
    neg r11d                        ; 328 = 0x148
    add r11d, 0x278                 ; 0x3c0
    ; byte registers with memory operands
    mov rsi, 0x30010
    mov dword [rsi], 0x0a0b0c0d
    mov ah, [rsi + 1]               ; 0x0c
    mov bh, [rsi + 2]               ; 0x0b
    add ah, bh                      ; 0x17
    mov [rsi + 4], ah
    movzx r13d, byte [rsi + 4]      ; 0x17
    mov bh, 0
    ; locked read-modify-write
    mov qword [0x30020], 0
    mov rdx, 1
    lock xadd [0x30028], rdx        ; [0x30028] = 1, rdx = 0
    mov rax, 0
    mov rcx, 0x11
    lock cmpxchg [0x30020], rcx     ; equal: store 0x11
    mov r14, [0x30020]              ; 0x11
    mov qword [0x30020], 0
    ; frame with RSP-relative addressing and 16-bit pushes
    push rbp
    mov rbp, rsp
    sub rsp, 32
    and rsp, -16
    mov dword [rsp + 8], 5
    push word 0x1234
    pop ax
    mov [0x30040], ax
    mov r15d, [rsp + 8]             ; 5
    leave
    mov dword [0x30044], 42
    ; bit test with a register offset: bit 67 of 0x30048 = bit 3 of 0x30050
    mov qword [0x30048], 0
    mov qword [0x30050], 0
    mov eax, 67
    bts [0x30048], rax
    mov r12, [0x30050]              ; 8
    add r12, 22                     ; 0x1e
    mov qword [0x30050], 0
    ; 128-bit add: (2^64 - 1) + 1 with adc
    mov rax, -1
    mov rdx, 0
    add rax, 1
    adc rdx, 0                      ; rdx = 1
    pop rax                         ; 610
    lea rbx, [rbx + rdx * 8 + 52]   ; 48 + 8 + 52 = 108 = 0x6c
    mov r8, 0x1cf
    out 0xeb, al

fib:                                ; rax = fib(rdi), fib(1) = fib(2) = 1
    cmp rdi, 2
    jbe .one
    push rdi
    dec rdi
    call fib
    pop rdi
    push rax
    sub rdi, 2
    call fib
    pop rdx
    add rax, rdx
    ret
.one:
    mov eax, 1
    ret

align 8
table: dq start.case0, start.case1, start.case2, start.case3

