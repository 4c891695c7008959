; CMOS reader for test_dev_cmos.c (not a guest_runner program).
; 64-bit, CPL 3. The host puts a count and that many CMOS indices at
; 0x20000; the guest reads each (with the NMI-disable bit set on the index
; write, which the device must ignore) and stores the values from 0x30000.
; Ends by writing 0 to the exit port (status 1).
bits 64
org 0x10000
    movzx ecx, byte [0x20000]
    mov esi, 0x20001
    mov edi, 0x30000
.next:
    test ecx, ecx
    jz .done
    mov al, [rsi]
    or al, 0x80
    out 0x70, al
    in al, 0x71
    mov [rdi], al
    inc rsi
    inc rdi
    dec ecx
    jmp .next
.done:
    xor eax, eax
    out 0xf4, al
.fallthrough:
    out 0xeb, al
    jmp .fallthrough
