; 64-bit exception delivery through a TSS: a #GP whose IDT gate is not
; present raises #NP while delivering it, which makes a double fault; the
; #DF gate selects IST1, so its handler runs on the IST stack with the
; 64-bit frame (SS, RSP, RFLAGS, CS, RIP, error code 0) and halts.
; mode: long64
; expect: rbx=0x5ffd0 rcx=0 rdx=0x10 rsi=0x80000 rdi=1
bits 64
%define ORG 0x10000
org ORG
%define A(x) ((x) - $$ + ORG)
    lgdt [rel gdtr]
    mov ax, 0x20
    ltr ax
    lidt [rel idtr]
    mov rax, 0x8000000000000000
    mov rdi, 1
fault:
    mov rax, [rax]                  ; #GP -> #NP -> #DF on IST1
    hlt

hdf:
    mov rbx, rsp                    ; IST1 - 48
    mov rcx, [rsp]                  ; error code 0
    mov rdx, [rsp + 16]             ; CS = 0x10
    mov rsi, [rsp + 32]             ; the interrupted RSP
    hlt

align 8
gdt:
    dq 0
    dq 0x00cf9b000000ffff           ; 0x08 32-bit code (unused)
    dq 0x00af9b000000ffff           ; 0x10 64-bit code (accessed bit
                                    ; preset: whether delivery sets it
                                    ; differs between implementations)
    dq 0x00cf93000000ffff           ; 0x18 data
    dw 0x67, A(tss) & 0xffff        ; 0x20 64-bit TSS (16 bytes)
    db (A(tss) >> 16) & 0xff, 0x89, 0, A(tss) >> 24
    dd 0, 0
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dq gdt

%macro gate64 3                     ; handler, IST, present
    dw A(%1) & 0xffff, 0x10
    db %2, 0x0e | (%3 << 7)
    dw (A(%1) >> 16) & 0xffff
    dd 0, 0
%endmacro
align 16
idt:
%assign v 0
%rep 14
%if v == 8
    gate64 hdf, 1, 1
%else
    gate64 hdf, 0, 0                ; not present
%endif
%assign v v + 1
%endrep
idt_end:
idtr:
    dw idt_end - idt - 1
    dq idt

align 8
tss:
    dd 0
    dq 0x70000                      ; rsp0
    dq 0, 0, 0                      ; rsp1, rsp2, reserved
    dq 0x60000                      ; ist1
    times 6 dq 0
    dq 0
    dw 0, 104
