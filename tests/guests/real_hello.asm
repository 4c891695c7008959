; Real mode: string output with rep outsb and a byte loop, 16-bit arithmetic.
; mode: real
; expect-out: "Hello from real mode\nABC"
; expect: rax=0x43 rcx=0 rbx=0x1234 rdx=0xe9
bits 16
org 0x1000
start:
    cld
    mov si, msg
    mov cx, msg_len
    mov dx, 0xe9
    rep outsb
    mov al, 'A'
    mov cx, 3
.loop:
    out dx, al
    inc al
    loop .loop
    dec al
    mov bx, 0x1200
    add bx, 0x34
    hlt
msg: db "Hello from real mode", 10
msg_len equ $ - msg
