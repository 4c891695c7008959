; Real mode: a software interrupt through the IVT and iret, a far call and
; retf into another segment, pushf/popf, les with a segment override,
; segment arithmetic (the same byte through two segment:offset pairs),
; and a loop with 16-bit addressing ([bx+si+disp]).
; mode: real
; expect: rax=0x2a rbx=0x1234 rcx=0 rdx=0x55 rsi=0x6 rdi=0x7 rbp=0x99
; expect-mem: 0x2000 2a 00 99 00
bits 16
org 0x1000
    xor ax, ax
    mov ds, ax
    mov word [0x21 * 4], handler    ; IVT entry 0x21 -> 0000:handler
    mov word [0x21 * 4 + 2], 0
    mov ax, 0x20
    int 0x21                        ; handler adds 10 -> 0x2a
    mov [0x2000], ax
    call 0x0100:far_fn - 0x1000     ; far call into segment 0x100 (linear 0x1000)
    mov [0x2002], bp
    cmp ax, 0x2a
    pushf
    pop dx
    and dx, 0xd5                    ; ZF and PF from the cmp: 0x44
    les bx, [cs:farptr]                ; bx = 0x1234, es = 0x0200
    mov si, 0
    mov byte [es:0x10], 0x55        ; linear 0x2010
    mov cx, 0x0201
    mov ds, cx
    mov dl, [0]                     ; linear 0x2010 again: 0x55
    xor cx, cx
    mov ds, cx
    mov di, 0
    mov cx, 3
.loop:
    add di, [bx + si + data - 0x1234]
    add si, 2
    loop .loop                      ; di = 1 + 2 + 4 = 7
    hlt

handler:
    add ax, 10
    iret

far_fn:
    mov bp, 0x99
    retf

align 2
farptr: dw 0x1234, 0x0200
data: dw 1, 2, 4, 8
