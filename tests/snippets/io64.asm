; Port I/O and MMIO snippet for test_io (64-bit CPL 3, loaded at 0x10000).
; Each entry ends with a write to port 0xeb, which no test handles, so the
; run returns an I/O exit there.
;
;   0x000 entry_sizes     out 0x10 (byte 0x11), out 0x12 (word 0x2233),
;                         out 0x14 (dword 0x44556677); then in al,0x10 ->
;                         bl, in ax,0x12 -> cx, in eax,0x14 -> edx.
;   0x080 entry_mmio      stores of 1, 2, 4, 8 bytes at 0xd0000000 + 0, 2,
;                         4, 8; loads of the same into rbx, rcx, rdx, rsi.
;   0x100 entry_string    rep outsb of the 5 bytes at DATA to port 0x10,
;                         then rep insw of 3 words from port 0x12 to
;                         0x20000.
;   0x180 entry_in        in al,0x20 -> bl; in ax,0x22 -> cx; in eax,0x24
;                         -> edx; 8-byte load from 0xd0001000 -> rsi.
;   0x200 entry_straddle  out dx=0x10f, ax=0xbeef (a word across the end of
;                         a range 0x100-0x10f).
;   0x280 entry_three     out 0x10 with al = 1, 2, 3 in turn.
;   0x300 entry_loop      three times: rax = -1, in al,0x10; in ax,dx=0x12;
;                         in eax,dx=0x14 (rax after each stored at 0x20000
;                         + 24 * i, + 8, + 16); out 0x16 with al = 3 - i;
;                         out dx=0x30, ax = 3 - i.
;   0x400 DATA            "hello"
;   0x500 entry_x87       x87 and MMX state across in al,0x30 (whose
;                         handler computes with long double), results at
;                         0x20000 (see test_handler_fpu in test_io.c):
;                         0x20000  1 + pi (53-bit precision) as a double,
;                         0x20010  pi, 0x20020  1 + 2^-63 (both as tword),
;                         0x20030  1 + 2^-60 with 53-bit precision (tword),
;                         0x20040  FSW, 0x20042  FCW, 0x20044  MXCSR,
;                         0x20060  an MMX register, 0x20070  2.0 (double),
;                         0x20078  FSW, 0x20080-0x20088 MXCSRs;
;                         FXSAVE images at 0x20100 (3.0
;                         left in R7, stack empty, after a clean restore)
;                         and 0x20300 (5.0 the same, with no restore);
;                         at the end 3.0 on the stack.
;   0x700 entry_hammer    forever: in al,0x40; in al,0x42; inc rbx (rbx
;                         counts the rounds; the test stops the vCPU).
bits 64
%define ORG 0x10000
org ORG

entry_sizes:
    mov al, 0x11
    out 0x10, al
    mov ax, 0x2233
    out 0x12, ax
    mov eax, 0x44556677
    out 0x14, eax
    in al, 0x10
    movzx ebx, al
    in ax, 0x12
    movzx ecx, ax
    in eax, 0x14
    mov edx, eax
    out 0xeb, al

times 0x80 - ($ - $$) db 0xcc
entry_mmio:
    mov edi, 0xd0000000
    mov byte [rdi], 0x5a
    mov word [rdi+2], 0x1234
    mov dword [rdi+4], 0x89abcdef
    mov rax, 0x0102030405060708
    mov [rdi+8], rax
    movzx ebx, byte [rdi]
    movzx ecx, word [rdi+2]
    mov edx, [rdi+4]
    mov rsi, [rdi+8]
    out 0xeb, al

times 0x100 - ($ - $$) db 0xcc
entry_string:
    cld
    lea rsi, [rel data]
    mov ecx, 5
    mov dx, 0x10
    rep outsb
    mov edi, 0x20000
    mov ecx, 3
    mov dx, 0x12
    rep insw
    out 0xeb, al

times 0x180 - ($ - $$) db 0xcc
entry_in:
    in al, 0x20
    movzx ebx, al
    in ax, 0x22
    movzx ecx, ax
    in eax, 0x24
    mov edx, eax
    mov edi, 0xd0001000
    mov rsi, [rdi]
    out 0xeb, al

times 0x200 - ($ - $$) db 0xcc
entry_straddle:
    mov dx, 0x10f
    mov ax, 0xbeef
    out dx, ax
    out 0xeb, al

times 0x280 - ($ - $$) db 0xcc
entry_three:
    mov al, 1
    out 0x10, al
    mov al, 2
    out 0x10, al
    mov al, 3
    out 0x10, al
    out 0xeb, al

times 0x300 - ($ - $$) db 0xcc
entry_loop:
    mov edi, 0x20000
    mov ecx, 3
.next:
    mov rax, -1
    in al, 0x10
    mov [rdi], rax
    mov dx, 0x12
    in ax, dx
    mov [rdi + 8], rax
    mov dx, 0x14
    in eax, dx
    mov [rdi + 16], rax
    add rdi, 24
    mov eax, ecx
    out 0x16, al
    mov dx, 0x30
    out dx, ax
    dec ecx
    jnz .next
    out 0xeb, al

times 0x400 - ($ - $$) db 0xcc
data: db "hello"

times 0x500 - ($ - $$) db 0xcc
entry_x87:
    ; Values on the stack, a non-default control word and MXCSR.
    fninit
    fldcw [rel cw53]
    ldmxcsr [rel mx_rz]
    fld tword [rel x63]
    fldpi
    fld1
    in al, 0x30
    fadd st0, st1
    fstp qword [0x20000]
    fstp tword [0x20010]
    fstp tword [0x20020]
    fld1
    fadd qword [rel tiny]
    fstp tword [0x20030]
    fnstsw [0x20040]
    fnstcw [0x20042]
    stmxcsr [0x20044]
    ; MMX state across a handler.
    fninit
    movq mm1, [rel mmx]
    in al, 0x30
    movq [0x20060], mm1
    emms
    ; An empty stack with a value left in R7, restored whole (fnstcw is
    ; emulated on BT), then a handler, then FXSAVE.
    fninit
    fld qword [rel three]
    fstp st0
    fnstcw [0x20048]
    in al, 0x30
    fxsave [0x20100]
    ; The same without the restore in between.
    fld qword [rel five]
    fstp st0
    in al, 0x30
    fxsave [0x20300]
    ; x87 code right after a handler: no flag of the handler's leaks.
    in al, 0x30
    fld1
    fld1
    faddp
    fstp qword [0x20070]
    fnstsw [0x20078]
    ; MXCSR with the host's control bits (BT leaves it in place around
    ; callouts): the handler's inexact SSE division does not reach the
    ; guest's status bits, and the guest's own PE survives a handler.
    ldmxcsr [rel mx_def]
    in al, 0x30
    stmxcsr [0x20080]
    movsd xmm0, [rel three]
    divsd xmm0, [rel five]
    in al, 0x30
    stmxcsr [0x20084]
    ; SSE code before a handler and again between two (one TU): a status
    ; bit set after the first handler survives the second.
    ldmxcsr [rel mx_def]
    movsd xmm0, [rel three]
    divsd xmm0, [rel five]
    in al, 0x30
    divsd xmm0, [rel zero]
    in al, 0x30
    stmxcsr [0x20088]
    ; The run ends right after a handler: 3.0 on the stack.
    fld qword [rel three]
    in al, 0x30
    out 0xeb, al

align 16
x63: dq 0x8000000000000001
     dw 0x3fff
align 8
tiny: dq 0x3c30000000000000     ; 2^-60
three: dq 3.0
five: dq 5.0
zero: dq 0.0
mmx: dq 0x1122334455667788
cw53: dw 0x027f
align 4
mx_rz: dd 0x7f80
mx_def: dd 0x1f80

times 0x700 - ($ - $$) db 0xcc
entry_hammer:
    xor ebx, ebx
.again:
    in al, 0x40
    in al, 0x42
    inc rbx
    jmp .again
