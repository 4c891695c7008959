; fw_cfg reader for test_dev_fw_cfg.c (not a guest_runner program).
; 64-bit, CPL 3. As a QEMU test kernel would: select the signature, the
; command-line size and data (read with rep insb), the CPU count and the
; file directory. Results:
;   0x30000  4 bytes   signature
;   0x30010  4 bytes   command-line size
;   0x30020  2 bytes   number of CPUs
;   0x30030  4 bytes   directory count (big endian), then its first entry
;                      (64 bytes) at 0x30034
;   0x30100  ...       command line (size bytes)
; Ends by writing 0x21 to the exit port (status 0x43).
bits 64
org 0x10000
SEL equ 0x510
DATA equ 0x511
    cld
    mov ax, 0x0000
    mov edi, 0x30000
    mov ecx, 4
    call select_read
    mov ax, 0x0014
    mov edi, 0x30010
    mov ecx, 4
    call select_read
    mov ax, 0x0015
    mov edi, 0x30100
    mov ecx, [0x30010]
    call select_read
    mov ax, 0x0005
    mov edi, 0x30020
    mov ecx, 2
    call select_read
    mov ax, 0x0019
    mov edi, 0x30030
    mov ecx, 4 + 64
    call select_read
    mov al, 0x21
    out 0xf4, al
.fallthrough:
    out 0xeb, al
    jmp .fallthrough

; Select item ax, then read ecx bytes to [rdi] (string input).
select_read:
    mov dx, SEL
    out dx, ax
    mov dx, DATA
    rep insb
    ret
