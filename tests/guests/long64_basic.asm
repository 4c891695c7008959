; 64-bit long mode (CPL 0): 64-bit arithmetic, RIP-relative data,
; push/pop, call/ret, 128-bit multiply and divide, bswap, cmov, setcc.
; mode: long64
; expect: rax=0x0123456789abcdef rbx=0xefcdab8967452301 rcx=1 rdx=0x5 r8=0xfffffffffffffffe r9=7 r10=0x2 r11=0x100000000 r12=1 r15=0x1122
bits 64
org 0x10000
    mov rax, [rel value]
    mov rbx, rax
    bswap rbx
    push rax
    push rbx
    call fn
    pop rbx
    pop rax
    mov r8, -2
    mov r9, 7
    mov r10, 3
    mov r11, 0xffffffff
    inc r11
    cmp r9, r10
    setg cl
    movzx rcx, cl
    mov r12, 0
    cmovg r12, rcx
    ; 128-bit: (2^64 + 5) / 2^63 -> quotient 2, remainder 5
    mov r13, rax
    mov rdx, 1
    mov rax, 5
    mov r14, 0x8000000000000000
    div r14
    mov r10, rax
    mov rax, r13
    mov r15w, [rel half]
    movzx r15, r15w
    hlt
fn:
    mov rax, 0x55
    ret
value: dq 0x0123456789abcdef
half: dw 0x1122
