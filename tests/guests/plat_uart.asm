; The UART's IRQ 4 through the IOAPIC for test_platform.c: the 8259As are
; left masked (as a BIOS leaves them), the APIC is enabled, IOAPIC pin 4
; sends vector 0x34 (fixed, edge, physical, APIC 0), and the UART raises
; its receive interrupt (FIFO trigger 14, so a short burst comes as a
; character timeout). Halts until NBYTES arrived. The handler drains the
; FIFO and ends the interrupt at the APIC. Results:
;   DATA+0 dword bytes, DATA+4 dword interrupts, DATA+0x100 the bytes.
; Ends by writing the byte sum to the exit port.
bits 64
%include "plat.inc"
org ORG
COM equ 0x3f8
NBYTES equ 5
IOAPIC equ 0xfec00000
    cli
    lidt [rel idtr]
    mov r15d, LAPIC
    mov r14d, IOAPIC
    mov dword [r15 + 0xf0], 0x1ff   ; APIC on
    mov dword [r14], 0x19           ; pin 4, high dword: APIC ID 0
    mov dword [r14 + 0x10], 0
    mov dword [r14], 0x18           ; pin 4, low dword: vector 0x34
    mov dword [r14 + 0x10], 0x34
    mov dx, COM + 3                 ; 8N1
    mov al, 0x03
    out dx, al
    mov dx, COM + 2                 ; FIFO on, cleared, trigger 14
    mov al, 0xc7
    out dx, al
    mov dx, COM + 4                 ; DTR, RTS, OUT2
    mov al, 0x0b
    out dx, al
    mov dx, COM + 1                 ; IER: receive data (written last)
    mov al, 0x01
    out dx, al
.wait:
    cmp dword [DATA], NBYTES
    jae .done
    sti
    hlt
    cli
    jmp .wait
.done:
    xor eax, eax
    xor ecx, ecx
.sum:
    add al, [DATA + 0x100 + rcx]
    inc ecx
    cmp ecx, NBYTES
    jb .sum
    out EXIT_PORT, al
    hlt

isr:
    push rax
    push rcx
    push rdx
    inc dword [DATA + 4]
.drain:
    mov dx, COM + 5
    in al, dx
    test al, 1
    jz .eoi
    mov dx, COM
    in al, dx
    mov ecx, [DATA]
    mov [DATA + 0x100 + rcx], al
    inc dword [DATA]
    jmp .drain
.eoi:
    mov dword [r15 + 0xb0], 0
    pop rdx
    pop rcx
    pop rax
    iretq

bad_handler
idtr_def
align 16
idt:
%assign v 0
%rep 256
%if v == 0x34
    gate64 isr
%else
    gate64 bad
%endif
%assign v v + 1
%endrep
