; PIC + PIT periodic interrupts for test_platform.c: counts ticks of the
; 8254's counter 0 (mode 2, count in esi) through the 8259A (IRQ 0 at
; vector 0x20, the only one unmasked) until edi ticks arrived, halting in
; between. Results: DATA+0 dword ticks, DATA+4 dword spurious IRQ 7s, DATA+8
; qword the TSC just before the write that starts the count, DATA+0x100 qword
; per tick (the first MAX_TICKS) the TSC at its handler's entry: the host
; measures the rate from these, which excludes the start-up of the timer.
; Ends with 0 on the exit port.
bits 64
%include "plat.inc"
org ORG
    cli
    pic_init 0xfe, 0xff
    lidt [rel idtr]
    mov al, 0x34            ; counter 0, LSB then MSB, mode 2, binary
    out 0x43, al
    mov ebx, esi
    mov eax, esi
    out 0x40, al
    rdtsc                   ; the count starts inside the next write's exit
    mov [DATA + 8], eax
    mov [DATA + 12], edx
    mov al, bh
    out 0x40, al
.wait:
    sti
    hlt
    cli
    cmp [DATA], edi
    jb .wait
    xor eax, eax
    out EXIT_PORT, al
    hlt

tick:
    push rax
    push rcx
    push rdx
    record_tick
    inc dword [DATA]
    mov al, 0x20            ; non-specific EOI
    out 0x20, al
    pop rdx
    pop rcx
    pop rax
    iretq

spurious:                   ; IRQ 7 with nothing in service: no EOI
    inc dword [DATA + 4]
    iretq

bad_handler
idtr_def
align 16
idt:
%assign v 0
%rep 256
%if v == 0x20
    gate64 tick
%elif v == 0x27
    gate64 spurious
%else
    gate64 bad
%endif
%assign v v + 1
%endrep
