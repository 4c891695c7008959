; Exit-port writer for test_dev_exit_port.c (not a guest_runner program).
; 64-bit, CPL 3. Writes rsi to port rdi with width rbx (1, 2 or 4 bytes).
; If the write did not end the run, port 0xeb is written so the host sees
; an unhandled I/O exit instead of a hang.
bits 64
org 0x10000
    mov edx, edi
    mov eax, esi
    cmp ebx, 1
    je .byte
    cmp ebx, 2
    je .word
    out dx, eax
    jmp .fallthrough
.byte:
    out dx, al
    jmp .fallthrough
.word:
    out dx, ax
.fallthrough:
    out 0xeb, al
    jmp .fallthrough
