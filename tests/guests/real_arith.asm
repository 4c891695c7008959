; Real mode: mul/div, flags, stack, segment override, memory.
; mode: real
; expect: rax=0x5 rdx=0x1 rbx=0xc8 rcx=0xf00d rsi=0x45
; expect-mem: 0x2000 0d f0 45 00
bits 16
org 0x1000
    mov ax, 20
    mov bx, 10
    mul bx                 ; ax = 200
    mov bx, ax             ; bx = 200 (0xc8)
    mov ax, 16
    xor dx, dx
    mov cx, 3
    div cx                 ; ax = 5, dx = 1
    push ax
    push dx
    mov cx, 0xf00d
    mov [0x2000], cx
    mov al, 5
    cmp al, 5              ; ZF, PF set; CF, AF, SF, OF clear (all defined)
    stc
    pushf
    pop si
    and si, 0x08d5         ; CF|PF|AF|ZF|SF|OF: 0x45
    mov [0x2002], si
    pop dx
    pop ax
    hlt
